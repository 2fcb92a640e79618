#!/usr/bin/env bash
# What a location costs per request: callgrind instructions per request (bench/instructions.sh)
# of the plain route (bench/peers.yaml), of the same route with a CIDR-table label condition
# and the label on the upstream request (bench/peers-geo.yaml), and with a country condition
# and the country on the upstream request from a MaxMind-format database
# (bench/peers-geo-mmdb.yaml, the database written by examples/geo_db.rs), one after the
# other with the same binary; then the gateway's CPU time per request for the three configs
# side by side (bench/overhead.sh, alternating rounds), the figure the 2 % goal is set in.
# Usage: [GATEWAY_BIN=target/profiling/ferrogate] bench/geo.sh [ROUNDS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-6}
W=$(mktemp -d -t geo-bench.XXXXXX)
trap 'rm -rf $W' EXIT
cargo run -q --example geo_db -- $W/city.mmdb
sed "s#GEO_DB#$W/city.mmdb#" bench/peers-geo-mmdb.yaml > $W/peers-geo-mmdb.yaml
count() { CONFIG=$1 bash bench/instructions.sh | sed -n 's/.*per_request=//p'; }
plain=$(count bench/peers.yaml)
label=$(count bench/peers-geo.yaml)
mmdb=$(count $W/peers-geo-mmdb.yaml)
for row in "label $label" "mmdb $mmdb"; do
  set -- $row
  echo "plain=$plain $1=$2 extra=$(($2 - plain)) ($(awk -v p=$plain -v g=$2 'BEGIN{printf "%.2f", (g-p)*100/p}')%)"
done
CONFIGS="peers peers-geo $W/peers-geo-mmdb.yaml" \
  GATEWAY_BIN=${GATEWAY_BIN:-target/profiling/ferrogate} bash bench/overhead.sh 5 $ROUNDS
