#!/usr/bin/env bash
# User-space instructions per request on the plain proxy route, counted by callgrind: the
# repeatable figure (the same build gives the same count within ~1%, whatever else the
# machine is doing). The gateway runs bench/peers.yaml under valgrind in front of a backend
# nginx answering 1 KiB; wrk warms up for 2 s with 10 connections, the counters are zeroed,
# wrk runs 4 s more, and the count is divided by the requests wrk completed.
# The backend listens on 127.0.0.1:9301 and the gateway on 9300 (admin 9390), the ports of
# CONFIG rewritten, so this can run beside bench/peers.sh.
# CG_OUT=FILE keeps the callgrind output (for callgrind_annotate).
# The default binary is the `profiling` build: the release build's code with line tables, so
# callgrind_annotate shows source lines (the release binary counts the same instructions but
# only names functions).
# Usage: [GATEWAY_BIN=target/profiling/ferrogate] [CONFIG=bench/peers.yaml] bench/instructions.sh
# Needs valgrind, nginx and wrk (apt-get install valgrind nginx wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GATEWAY_BIN:-target/profiling/ferrogate}
CONFIG=${CONFIG:-bench/peers.yaml}
[ -x "$BIN" ] || cargo build --profile profiling --quiet --bin ferrogate
export PATH=$PATH:/usr/sbin
for t in valgrind callgrind_control nginx wrk; do
  command -v $t >/dev/null || { echo "$t is required (apt-get install valgrind nginx wrk)" >&2; exit 1; }
done
W=$(mktemp -d -t instructions.XXXXXX); mkdir -p $W/logs
. bench/proxies.sh
bench_backend_conf $W 9301
sed -e 's/127.0.0.1:9101/127.0.0.1:9301/; s/127.0.0.1:9200/127.0.0.1:9300/; s/127.0.0.1:9290/127.0.0.1:9390/' "$CONFIG" > $W/gateway.yaml
nginx -c $W/backend.conf -p $W & BE=$!
valgrind --tool=callgrind --callgrind-out-file=$W/cg.out "$BIN" run -c $W/gateway.yaml > $W/logs/gw.log 2>&1 & GW=$!
cleanup() { kill $GW $BE 2>/dev/null; wait $GW $BE 2>/dev/null; rm -rf $W; }
trap cleanup EXIT
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/9300) 2>/dev/null && break; sleep 0.1; done
wrk -t1 -c10 -d2s http://127.0.0.1:9300/ > /dev/null
callgrind_control -z $GW > /dev/null
wrk -t1 -c10 -d4s http://127.0.0.1:9300/ > $W/wrk.txt
# The gateway ends on SIGTERM; its dump at exit holds what ran since the zeroing (the
# measured window and the shutdown, a few thousand instructions).
kill -TERM $GW; wait $GW 2>/dev/null || true
total=$(awk '/requests in/{print $1}' $W/wrk.txt)
ir=$(awk '/^summary:/{print $2}' $W/cg.out)
[ -n "${CG_OUT:-}" ] && cp $W/cg.out "$CG_OUT"
echo "requests=$total instructions=$ir per_request=$((ir / total))"
