#!/usr/bin/env bash
# What tracing and the traffic history cost per request: callgrind instructions per request
# (bench/instructions.sh) of the plain route (bench/peers.yaml), of the same route traced at
# 1% and at 100% (bench/peers-trace-1.yaml, bench/peers-trace-100.yaml; every thread
# counted, the exporter's included) and traced at 1% with the history on
# (bench/peers-observed.yaml), then the gateway's CPU time per request of the plain route,
# 1% and 1% with history side by side (bench/overhead.sh, alternating rounds), the figure
# the 3% goal is set in.
# Usage: [GATEWAY_BIN=target/profiling/ferrogate] bench/trace.sh [ROUNDS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-6}
count() { CONFIG=$1 bash bench/instructions.sh | sed -n 's/.*per_request=//p'; }
plain=$(count bench/peers.yaml)
for c in peers-trace-1 peers-trace-100 peers-observed; do
  n=$(count bench/$c.yaml)
  echo "plain=$plain $c=$n extra=$((n - plain)) ($(awk -v p=$plain -v g=$n 'BEGIN{printf "%.2f", (g-p)*100/p}')%)"
done
CONFIGS="peers peers-trace-1 peers-observed" \
  GATEWAY_BIN=${GATEWAY_BIN:-target/profiling/ferrogate} bash bench/overhead.sh 5 $ROUNDS
