#!/usr/bin/env bash
# User-space instructions per request on the plain proxy route, counted by callgrind: the
# repeatable figure (the same build gives the same count within ~1%, whatever else the
# machine is doing). The gateway runs bench/peers.yaml under valgrind in front of a backend
# nginx answering 1 KiB; wrk warms up for 2 s with 10 connections, the counters are zeroed,
# wrk runs 4 s more, and the count is divided by the requests wrk completed.
# MODE=h2c measures prior-knowledge HTTP/2 clients instead (the default CONFIG becomes
# bench/peers-h2c.yaml): h2load with 10 connections of 10 concurrent streams each, the same
# warm-up, zeroing and window.
# The backend listens on 127.0.0.1:9301 and the gateway on 9300 (admin 9390), the ports of
# CONFIG rewritten, so this can run beside bench/peers.sh; PORT_OFFSET=N adds N to all three
# (two measurements side by side).
# CG_OUT=FILE keeps the callgrind output (for callgrind_annotate).
# The default binary is the `profiling` build: the release build's code with line tables, so
# callgrind_annotate shows source lines (the release binary counts the same instructions but
# only names functions).
# Usage: [MODE=plain|h2c] [GATEWAY_BIN=target/profiling/ferrogate] [CONFIG=bench/peers.yaml] bench/instructions.sh
# Needs valgrind, nginx and wrk, and h2load for h2c (apt-get install valgrind nginx wrk
# nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GATEWAY_BIN:-target/profiling/ferrogate}
MODE=${MODE:-plain}
case $MODE in
  plain) CONFIG=${CONFIG:-bench/peers.yaml}; CLIENT=wrk;;
  h2c) CONFIG=${CONFIG:-bench/peers-h2c.yaml}; CLIENT=h2load;;
  *) echo "MODE must be plain or h2c" >&2; exit 2;;
esac
[ -x "$BIN" ] || cargo build --profile profiling --quiet --bin ferrogate
export PATH=$PATH:/usr/sbin
for t in valgrind callgrind_control nginx $CLIENT; do
  command -v $t >/dev/null || { echo "$t is required (apt-get install valgrind nginx wrk nghttp2-client)" >&2; exit 1; }
done
# The client for S seconds; prints the requests it completed.
load() {
  case $MODE in
    plain) wrk -t1 -c10 -d${1}s http://127.0.0.1:$GW_PORT/ | awk '/requests in/{print $1}';;
    h2c) h2load -c10 -m10 -D $1 http://127.0.0.1:$GW_PORT/ | awk '/^requests:/{print $8}';;
  esac
}
O=${PORT_OFFSET:-0}
BE_PORT=$((9301 + O)) GW_PORT=$((9300 + O)) ADMIN_PORT=$((9390 + O))
W=$(mktemp -d -t instructions.XXXXXX); mkdir -p $W/logs
. bench/proxies.sh
bench_backend_conf $W $BE_PORT
sed -e "s/127.0.0.1:9101/127.0.0.1:$BE_PORT/; s/127.0.0.1:9200/127.0.0.1:$GW_PORT/; s/127.0.0.1:9290/127.0.0.1:$ADMIN_PORT/" "$CONFIG" > $W/gateway.yaml
nginx -c $W/backend.conf -p $W & BE=$!
valgrind --tool=callgrind --callgrind-out-file=$W/cg.out "$BIN" run -c $W/gateway.yaml > $W/logs/gw.log 2>&1 & GW=$!
cleanup() { kill $GW $BE 2>/dev/null; wait $GW $BE 2>/dev/null; rm -rf $W; }
trap cleanup EXIT
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$GW_PORT) 2>/dev/null && break; sleep 0.1; done
load 2 > /dev/null
callgrind_control -z $GW > /dev/null
total=$(load 4)
# The gateway ends on SIGTERM; its dump at exit holds what ran since the zeroing (the
# measured window and the shutdown, a few thousand instructions).
kill -TERM $GW; wait $GW 2>/dev/null || true
ir=$(awk '/^summary:/{print $2}' $W/cg.out)
[ -n "${CG_OUT:-}" ] && cp $W/cg.out "$CG_OUT"
echo "requests=$total instructions=$ir per_request=$((ir / total))"
