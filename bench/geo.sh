#!/usr/bin/env bash
# What a location costs per request: callgrind instructions per request (bench/instructions.sh)
# of the plain route (bench/peers.yaml) and of the same route with a location condition and a
# location field on the upstream request (bench/peers-geo.yaml), one after the other with the
# same binary.
# Usage: [GATEWAY_BIN=target/profiling/ferrogate] bench/geo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
plain=$(CONFIG=bench/peers.yaml bash bench/instructions.sh | sed -n 's/.*per_request=//p')
geo=$(CONFIG=bench/peers-geo.yaml bash bench/instructions.sh | sed -n 's/.*per_request=//p')
echo "plain=$plain geo=$geo extra=$((geo - plain)) ($(awk -v p=$plain -v g=$geo 'BEGIN{printf "%.2f", (g-p)*100/p}')%)"
