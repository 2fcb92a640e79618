#!/usr/bin/env bash
# Cost of a route feature per request: the gateway with each config of CONFIGS in turn (the
# first is the baseline; names are bench/NAME.yaml, or paths), measured the way
# bench/peers.sh measures proxies (gateway pinned to CPU 1, backend nginx, Redis and
# wrk on CPU 0, 50 keep-alive connections, CPU microseconds per request from /proc/PID/stat),
# in alternating rounds within one run so the ratios share the machine's state. HEADER, when
# set, is sent with every request (to every config alike). Redis's own CPU is not counted.
# GATEWAY_BIN: a gateway binary to use as it is (default: built here with `cargo build --release`).
# Usage: CONFIGS="peers ratelimit-local" [HEADER="x-api-key: k"] [GATEWAY_BIN=path] bench/overhead.sh [DURATION_S] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}; ROUNDS=${2:-3}; C=50
GW=${GATEWAY_BIN:-target/release/ferrogate}
export PATH=$PATH:/usr/sbin
for t in nginx wrk redis-server taskset; do
  command -v $t >/dev/null || { echo "$t is required (apt-get install nginx wrk redis-server util-linux)" >&2; exit 1; }
done
[ -n "${GATEWAY_BIN:-}" ] || cargo build --release --quiet
W=$(mktemp -d -t ratelimit-bench.XXXXXX); mkdir -p $W/logs
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > $W/backend.conf <<NG
worker_processes 1; daemon off; master_process off; pid $W/backend.pid; error_log $W/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9101; location / { default_type text/plain; return 200 "$BODY"; } } }
NG
taskset -c 0 nginx -c $W/backend.conf -p $W & BE=$!
taskset -c 0 redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no > $W/logs/redis.log 2>&1 & RS=$!
trap 'kill $BE $RS 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT

measure() { # config -> prints cpu µs per request
  taskset -c 1 $GW run -c "$1" > $W/logs/gateway.log 2>&1 & local P=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/9200) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c$C -d2s "${H[@]}" http://127.0.0.1:9200/ >/dev/null 2>&1
  local t0; t0=$(awk '{print $14+$15}' /proc/$P/stat)
  taskset -c 0 wrk -t1 -c$C -d${D}s "${H[@]}" http://127.0.0.1:9200/ > $W/wrk.out 2>&1
  local t1; t1=$(awk '{print $14+$15}' /proc/$P/stat)
  kill -TERM $P; wait $P 2>/dev/null || true
  local n non2xx; n=$(awk '/requests in/{print $1}' $W/wrk.out); non2xx=$(awk '/Non-2xx/{print $4}' $W/wrk.out)
  [ -z "$non2xx" ] || echo "warning: $non2xx non-2xx responses with $1" >&2
  awk -v t=$((t1-t0)) -v n=${n:-0} -v hz=$(getconf CLK_TCK) 'BEGIN{ printf "%.1f", t/hz*1e6/n }'
}

H=(); [ -z "${HEADER:-}" ] || H=(-H "$HEADER")
path_of() { case $1 in */*) echo "$1";; *) echo "bench/$1.yaml";; esac; }
declare -A SUM
CONFIGS=(${CONFIGS:?set CONFIGS, the baseline first})
for r in $(seq $ROUNDS); do
  line="round $r:"
  for c in "${CONFIGS[@]}"; do
    v=$(measure "$(path_of $c)")
    SUM[$c]=$(awk -v a=${SUM[$c]:-0} -v b=$v 'BEGIN{print a+b}')
    line="$line $c=$v"
  done
  echo "$line"
done
base=$(awk -v s=${SUM[${CONFIGS[0]}]} -v r=$ROUNDS 'BEGIN{print s/r}')
for c in "${CONFIGS[@]}"; do
  awk -v s=${SUM[$c]} -v r=$ROUNDS -v b=$base -v c=$c \
    'BEGIN{ printf "%-18s cpu_us_per_req=%.1f ratio_to_baseline=%.3f\n", c, s/r, (s/r)/b }'
done
