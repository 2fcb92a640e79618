#!/usr/bin/env bash
# Builds the release binary and runs it beside nginx and HAProxy on the same backend with
# the shared side-by-side method (peers.sh), once with the access log off (peers.yaml) and
# once with it on (peers-log.yaml). Usage: bench/run.sh [DURATION_S] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/bench/peers.sh}
[ -f "$PEERS" ] || { echo "peers.sh not found at $PEERS (set PEERS=...)" >&2; exit 1; }
cargo build --release --quiet
for cfg in bench/peers.yaml bench/peers-log.yaml; do
  echo "== $cfg"
  GATEWAY_CMD="$PWD/target/release/ferrogate run -c $PWD/$cfg" GATEWAY_PORT=9200 \
    bash "$PEERS" "${1:-8}" "${2:-50}"
done
