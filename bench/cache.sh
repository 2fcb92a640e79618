#!/usr/bin/env bash
# Cache hits side by side: nginx `proxy_cache` and the gateway's cache in front of the same
# backend (one nginx worker answering 1 KiB with Cache-Control: max-age=3600). Both caches are
# warmed, then the same wrk load hits each; every proxy runs one worker pinned to CPU 1, wrk
# and the backend share CPU 0. Prints requests/s, p99 and the proxy's CPU microseconds per
# request (from /proc/PID/stat, the figure to compare on a shared machine), the backend
# requests each proxy made (1 means every measured request was a hit), and the ratio.
# Usage: bench/cache.sh [DURATION_S=8] [CONNECTIONS=50]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-8}; C=${2:-50}
export PATH=$PATH:/usr/sbin
for t in nginx wrk taskset; do command -v $t >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk util-linux >/dev/null; break; }; done
cargo build --release --quiet
W=$(mktemp -d -t cache-bench.XXXXXX); mkdir -p $W/logs $W/nginx-cache
BODY=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > $W/backend.conf <<NG
worker_processes 1; daemon off; master_process off; pid $W/backend.pid; error_log $W/logs/backend.err;
events { worker_connections 4096; }
http { access_log $W/logs/backend.log; keepalive_requests 1000000;
  server { listen 127.0.0.1:9101; location / { default_type text/plain;
    add_header Cache-Control "max-age=3600"; return 200 "$BODY"; } } }
NG
cat > $W/nginx.conf <<NG
worker_processes 1; daemon off; master_process off; pid $W/nginx.pid; error_log $W/logs/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $W/nginx-cache keys_zone=c:10m max_size=256m;
  upstream be { server 127.0.0.1:9101; keepalive 128; }
  server { listen 127.0.0.1:9201; location / { proxy_pass http://be; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_cache c; proxy_cache_lock on; } } }
NG
cat > $W/gateway.yaml <<YML
workers: 1
listeners:
  - address: 127.0.0.1:9200
admin:
  address: 127.0.0.1:9290
metrics:
  enabled: true
access_log:
  enabled: false
upstreams:
  backend:
    targets: [{address: 127.0.0.1:9101}]
routes:
  - name: all
    upstream: backend
    cache: {}
YML
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
backend_hits() { wc -l < $W/logs/backend.log; }
declare -A US
measure() { # name port pid
  local name=$1 port=$2 pid=$3
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  local before; before=$(backend_hits)
  taskset -c 0 wrk -t1 -c$C -d2s http://127.0.0.1:$port/ >/dev/null 2>&1
  local t0; t0=$(cpu_ticks $pid)
  taskset -c 0 wrk -t1 -c$C -d${D}s --latency http://127.0.0.1:$port/ > $W/$name.wrk 2>&1
  local t1; t1=$(cpu_ticks $pid)
  local n; n=$(awk '/requests in/{print $1}' $W/$name.wrk)
  local rps; rps=$(awk '/Requests\/sec/{print $2}' $W/$name.wrk)
  local p99; p99=$(awk '$1=="99%"{print $2}' $W/$name.wrk)
  local hz; hz=$(getconf CLK_TCK)
  US[$name]=$(awk -v t=$((t1 - t0)) -v hz=$hz -v n=$n 'BEGIN{printf "%.1f", t*1e6/hz/n}')
  printf "%-10s %10s req/s  p99 %8s  cpu %6s us/req  backend requests %s\n" \
    "$name" "$rps" "$p99" "${US[$name]}" "$(( $(backend_hits) - before ))"
}
taskset -c 0 nginx -c $W/backend.conf -p $W > /dev/null 2>&1 & BE=$!
trap 'kill $BE ${NG:-} ${GW:-} 2>/dev/null || true; rm -rf $W' EXIT
sleep 0.3
taskset -c 1 nginx -c $W/nginx.conf -p $W > /dev/null 2>&1 & NG=$!
measure nginx 9201 $NG
kill $NG; wait $NG 2>/dev/null || true
taskset -c 1 target/release/ferrogate run -c $W/gateway.yaml > $W/logs/gateway.log 2>&1 & GW=$!
measure ferrogate 9200 $GW
awk -v g=${US[ferrogate]} -v n=${US[nginx]} 'BEGIN{printf "ferrogate/nginx CPU per cache hit: %.2f\n", g/n}'
