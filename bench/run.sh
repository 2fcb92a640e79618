#!/usr/bin/env bash
# Runs the gateway beside nginx and HAProxy on the same backend with the side-by-side method
# of bench/peers.sh, in each mode of MODES (default: plain tls h2c), with the gateway config
# for that mode: bench/peers.yaml for plain, bench/peers-h2c.yaml for h2c,
# bench/peers-tls.yaml for tls, tls-new, tls-resume and h2. Plain runs twice, with the access
# log off (peers.yaml) and on (peers-log.yaml; LOG=0 skips it); h2c runs twice, on hyper's
# HTTP/2 server (peers-h2c.yaml) and on the native one (peers-h2c-native.yaml; NATIVE=0
# skips it). Each config is validated with
# `ferrogate check` first. At the end, one line per mode: the gateway's CPU per request over
# nginx's and over HAProxy's in that mode's run.
# Usage: [MODES="plain tls tls-new h2c h2"] [GATEWAY_BIN=path] [PEERS=path] bench/run.sh [DURATION_S=8] [CONNECTIONS=50]
#   GATEWAY_BIN  the gateway binary (default target/release/ferrogate, built with
#                `cargo build --release` first; a given binary is used as it is)
#   PEERS        the side-by-side script (default bench/peers.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-bench/peers.sh}
[ -f "$PEERS" ] || { echo "peers.sh not found at $PEERS (set PEERS=...)" >&2; exit 1; }
MODES=${MODES:-plain tls h2c}
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  GATEWAY_BIN=target/release/ferrogate
fi
[ -x "$GATEWAY_BIN" ] || { echo "no gateway binary at $GATEWAY_BIN" >&2; exit 1; }
GATEWAY_BIN=$(cd "$(dirname "$GATEWAY_BIN")" && pwd)/$(basename "$GATEWAY_BIN")
. bench/proxies.sh
OUT=$(mktemp -d -t run-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
for mode in $MODES; do
  case $mode in
    plain) cfgs=bench/peers.yaml; [ "${LOG:-1}" = 0 ] || cfgs="$cfgs bench/peers-log.yaml";;
    h2c) cfgs=bench/peers-h2c.yaml; [ "${NATIVE:-1}" = 0 ] || cfgs="$cfgs bench/peers-h2c-native.yaml";;
    tls|tls-new|tls-resume|h2) cfgs=bench/peers-tls.yaml; bench_tls_cert target/bench-tls;;
    *) echo "unknown mode $mode (plain, tls, tls-new, tls-resume, h2c, h2)" >&2; exit 2;;
  esac
  for cfg in $cfgs; do
    "$GATEWAY_BIN" check -c "$cfg" >/dev/null
    echo "== $mode $cfg"
    MODE=$mode GATEWAY_CMD="$GATEWAY_BIN run -c $PWD/$cfg" GATEWAY_PORT=9200 \
      bash "$PEERS" "${1:-8}" "${2:-50}" | tee "$OUT/$mode.$(basename "$cfg" .yaml)"
  done
done
echo "== side by side (gateway CPU per request / peer's, this run)"
for f in "$OUT"/*; do
  awk -v name="$(basename "$f")" '
    $1 ~ /^(nginx|haproxy|gateway)$/ { for (i = 2; i <= NF; i++) if ($i ~ /^cpu_us_per_req=/) { sub(/.*=/, "", $i); us = us " " $1 "=" $i "us" } }
    /^ratio/ { r = $3 " " $4 }
    END { printf "%-22s%s   %s\n", name, us, r }' "$f"
done
