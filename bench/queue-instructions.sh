#!/usr/bin/env bash
# User-space instructions per queued job, counted by callgrind (docs/benchmarks.md, "Queued
# routes"): the repeatable figure behind bench/queue.sh's CPU column. The gateway runs
# bench/queue-embedded.yaml (or CONFIG) under valgrind; examples/queue_load.rs sends the POST
# at a fixed RATE for SECONDS, after a warm-up, with the counters zeroed in between.
#   MODE=accept   the upstream accepts connections and never answers: the dispatchers take
#                 their `concurrency` jobs and wait, so the count is the accept path alone
#                 (the 202, the job written and synced)
#   MODE=both     the upstream is nginx answering at once: the count runs until the queue
#                 is empty again, so it is accept + delivery (claim, forward, result, end)
# Prints `jobs=N instructions=I per_job=P`, and with CG_OUT=FILE keeps the callgrind output
# (callgrind_annotate --inclusive=yes FILE shows where the instructions go).
# Ports: gateway 127.0.0.1:9400 (admin 9490), nginx 9401, the silent upstream 9402.
# Usage: [GATEWAY_BIN=target/profiling/ferrogate] [LOAD_BIN=target/profiling/examples/queue_load]
#        [MODE=accept|both] [CONFIG=bench/queue-embedded.yaml] bench/queue-instructions.sh [RATE=200] [SECONDS=5]
# Needs valgrind, nginx, socat and curl (apt-get install valgrind nginx socat curl).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-200}; SECONDS_=${2:-5}
BIN=${GATEWAY_BIN:-target/profiling/ferrogate}
LOAD=${LOAD_BIN:-target/profiling/examples/queue_load}
CONFIG=${CONFIG:-bench/queue-embedded.yaml}
MODE=${MODE:-both}
[ -x "$BIN" ] || cargo build --profile profiling --quiet --bin ferrogate
[ -x "$LOAD" ] || cargo build --profile profiling --quiet --example queue_load
export PATH=$PATH:/usr/sbin
for t in valgrind callgrind_control nginx socat curl; do
  command -v $t >/dev/null || { echo "$t is required (apt-get install valgrind nginx socat curl)" >&2; exit 1; }
done
for port in 9400 9401 9402 9490; do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { echo "127.0.0.1:$port is in use" >&2; exit 1; }
done
W=$(mktemp -d -t queue-instructions.XXXXXX); mkdir -p $W/logs
cat > $W/backend.conf <<NG
worker_processes 1; daemon off; master_process off; pid $W/backend.pid; error_log $W/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9401; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NG
upstream=9401
[ "$MODE" = accept ] && upstream=9402
sed -e "s#QUEUE_DIR#$W/queue#; s/127.0.0.1:9111/127.0.0.1:$upstream/; s/127.0.0.1:9210/127.0.0.1:9400/; s/127.0.0.1:9291/127.0.0.1:9490/" \
  "$CONFIG" > $W/gateway.yaml
nginx -c $W/backend.conf -p $W & BE=$!
setsid socat TCP-LISTEN:9402,bind=127.0.0.1,reuseaddr,fork SYSTEM:'sleep 3600' 2>/dev/null & SILENT=$!
valgrind --tool=callgrind --callgrind-out-file=$W/cg.out "$BIN" run -c $W/gateway.yaml > $W/logs/gw.log 2>&1 & GW=$!
cleanup() { kill $GW $BE 2>/dev/null || true; kill -- -$SILENT 2>/dev/null || true; wait $GW $BE $SILENT 2>/dev/null || true; rm -rf $W; }
trap cleanup EXIT
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/9400) 2>/dev/null && break; sleep 0.1; done
depth() { curl -s http://127.0.0.1:9490/queues | grep -o '"depth":[0-9]*' | head -1 | cut -d: -f2; }
drain() { for _ in $(seq 600); do [ "$(depth)" = "0" ] && break; sleep 0.2; done; }
$LOAD 127.0.0.1:9400 /jobs/warm 10 2 "$RATE" > /dev/null
[ "$MODE" = accept ] || drain
callgrind_control -z $GW > /dev/null
out=$($LOAD 127.0.0.1:9400 /jobs/report 10 "$SECONDS_" "$RATE")
[ "$MODE" = accept ] || drain
callgrind_control -d $GW > /dev/null
jobs=$(echo "$out" | sed 's/.*accepted=\([0-9]*\).*/\1/')
dump=$(ls $W/cg.out.* | sort -t. -k3 -n | tail -1)
ir=$(awk '/^summary:/{print $2}' $dump)
[ -n "${CG_OUT:-}" ] && cp $dump "$CG_OUT"
echo "mode=$MODE $out"
echo "jobs=$jobs instructions=$ir per_job=$((ir / (jobs > 0 ? jobs : 1)))"
