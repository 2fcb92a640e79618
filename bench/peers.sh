#!/usr/bin/env bash
# Side-by-side reverse-proxy benchmark on loopback: the gateway beside nginx and HAProxy.
# The same backend (one nginx worker answering 1 KiB) and the same client load for every
# proxy: direct (no proxy, plain HTTP/1.1: the backend's limit), nginx, HAProxy, and the
# gateway when GATEWAY_CMD is set. Each proxy gets one worker pinned to CPU 1; the client and
# the backend share CPU 0. Prints per proxy: requests/s, p50/p99 latency, the proxy's CPU
# microseconds per request (user + system from /proc/PID/stat: the figure to compare on a
# shared machine), peak RSS (VmHWM), non-2xx count; then the gateway's CPU-per-request ratios
# to nginx and HAProxy from this same run. The proxies' configs (bench/proxies.sh) are
# equivalent in each mode: upstream keep-alive, TLS 1.3 with the same ECDSA P-256 cert.
#
# Usage: [MODE=plain|tls|tls-new|tls-resume|h2c|h2] bench/peers.sh [DURATION_S=8] [CONNECTIONS=50]
#   GATEWAY_CMD='target/release/ferrogate run -c bench/peers.yaml' GATEWAY_PORT=9200 bench/peers.sh
# The gateway must listen on 127.0.0.1:$GATEWAY_PORT (default 9200) and proxy every path to
# 127.0.0.1:9101 over HTTP/1.1 with one worker (bench/peers.yaml for plain,
# bench/peers-h2c.yaml for h2c, bench/peers-tls.yaml for the TLS modes; bench/run.sh picks
# the right one). Modes (the
# client side of each proxy; the backend side is always plain HTTP/1.1 with keep-alive):
#   plain       HTTP/1.1 with keep-alive, load from wrk (the default);
#   tls         HTTP/1.1 over TLS 1.3 with keep-alive, load from wrk (a handshake per
#               connection, then only records);
#   tls-new     HTTP/1.0 over TLS 1.3, a new connection and a full handshake for every
#               request, load from ab (ApacheBench). ab starts each connection from a fresh
#               SSL object and offers no session, so every handshake is a full one
#               (certificate, ECDSA signature, X25519). wrk and h2load are not used here:
#               when a server closes the connection they resume the previous TLS session
#               (checked with nginx's $ssl_session_reused), which skips the certificate and
#               signature. ab reports latency in whole milliseconds;
#   tls-resume  as tls-new but from wrk with `Connection: close` (bench/close.lua): a new
#               connection per request with a resumed TLS 1.3 session (PSK with X25519);
#   h2c         HTTP/2 with prior knowledge, load from h2load with CONNECTIONS connections and
#               STREAMS (default 10) concurrent streams each;
#   h2          HTTP/2 over TLS 1.3 chosen by ALPN, load from h2load as for h2c.
# h2load reports no percentiles: the p50 and p99 columns show its mean and max request time.
# The TLS certificate is made in $TLS_DIR (default target/bench-tls: cert.pem, key.pem).
# Installs nginx, haproxy, wrk, h2load and ab with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/proxies.sh
D=${1:-8}; C=${2:-50}; MODE=${MODE:-plain}; STREAMS=${STREAMS:-10}
case $MODE in plain|tls|tls-new|tls-resume|h2c|h2) ;; *) echo "MODE must be plain, tls, tls-new, tls-resume, h2c or h2" >&2; exit 2;; esac
bench_tools
TLS_DIR=${TLS_DIR:-target/bench-tls}
case $MODE in plain|h2c) SCHEME=http;; *) SCHEME=https; bench_tls_cert "$TLS_DIR";; esac
W=$(mktemp -d -t peers-bench.XXXXXX)
BE=; P=
cleanup() { [ -z "$P" ] || kill $P 2>/dev/null || true; [ -z "$BE" ] || kill $BE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
bench_configs "$W" "$MODE"

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
wait_port() { for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
tls_line() { # port: what a TLS 1.3 client offering h2 and http/1.1 gets
  openssl s_client -connect 127.0.0.1:$1 -tls1_3 -alpn h2,http/1.1 </dev/null 2>/dev/null \
    | awk '/^New,/{sub(",","",$2); v=$2"/"$5} /Server Temp Key/{sub(",","",$4); k=$4} /^ALPN protocol/{a=$3}
      END{printf "%s/%s, offered h2+http/1.1: %s", v, k, a}'
}
# The client for one proxy, its output to the file $3 (parse() reads it).
load() { # mode port out seconds
  local mode=$1 port=$2 out=$3 secs=$4
  case $mode in
    plain|tls) taskset -c 0 wrk -t1 -c$C -d${secs}s --latency $SCHEME://127.0.0.1:$port/ > $out 2>&1;;
    tls-resume) taskset -c 0 wrk -t1 -c$C -d${secs}s --latency -s bench/close.lua https://127.0.0.1:$port/ > $out 2>&1;;
    direct) taskset -c 0 wrk -t1 -c$C -d${secs}s --latency http://127.0.0.1:$port/ > $out 2>&1;;
    tls-new) taskset -c 0 ab -q -s 10 -t $secs -n 100000000 -c $C https://127.0.0.1:$port/ > $out 2>&1 || true;;
    h2c|h2) taskset -c 0 h2load -c$C -m$STREAMS -D $secs $SCHEME://127.0.0.1:$port/ > $out 2>&1;;
  esac
}
parse() { # mode out -> "total rps p50 p99 non2xx"
  case $1 in
    plain|tls|tls-resume|direct) awk '
      /requests in/{n=$1} /Requests\/sec/{r=$2} / 50%/{p50=$2} / 99%/{p99=$2} /Non-2xx/{x=$4}
      END{printf "%s %s %s %s %s", n+0, r?r:"NA", p50?p50:"NA", p99?p99:"NA", x+0}' $2;;
    tls-new) awk '
      /^Complete requests:/{n=$3} /^Requests per second:/{r=$4} /^  50%/{p50=$2"ms"} /^  99%/{p99=$2"ms"}
      /^Non-2xx responses:/{x=$3} /^Failed requests:/{f=$3}
      END{printf "%s %s %s %s %s", n+0, r?r:"NA", p50?p50:"NA", p99?p99:"NA", x+f}' $2;;
    h2c|h2) awk '
      /^finished in/{r=$4} /^requests:/{n=$8} /^time for request:/{mean=$6; max=$5}
      /^status codes:/{gsub(",",""); x=$5+$7+$9}
      END{printf "%s %s mean:%s max:%s %s", n+0, r?r:"NA", mean, max, x+0}' $2;;
  esac
}
declare -A CPU
run_one() { # name port pid
  local name=$1 port=$2 pid=$3 mode=$MODE
  wait_port $port
  [ $name = direct ] && mode=direct
  local extra=""
  [ $mode = direct ] || [ $SCHEME = http ] || extra=" tls=$(tls_line $port)"
  load $mode $port $W/$name.out 2
  local t0 t1; t0=$(cpu_ticks $pid)
  load $mode $port $W/$name.out $D
  t1=$(cpu_ticks $pid)
  local n rps p50 p99 non2xx; read -r n rps p50 p99 non2xx <<< "$(parse $mode $W/$name.out)"
  local us; us=$(awk -v t=$((t1-t0)) -v n=$n -v hz=$(getconf CLK_TCK) 'BEGIN{ if(n>0) printf "%.1f", t/hz*1e6/n; else print "NA"}')
  local rss; rss=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  CPU[$name]=$us
  printf "%-8s rps=%-10s p50=%-12s p99=%-12s cpu_us_per_req=%-6s rss_kb=%-7s non2xx=%s%s\n" \
    $name "${rps:-NA}" "${p50:-NA}" "${p99:-NA}" $us "${rss:-NA}" "${non2xx:-0}" "$extra"
  [ "$n" -gt 0 ] || { echo "  no requests completed; client output:" >&2; sed 's/^/  /' $W/$name.out >&2; }
}
stop() { kill -TERM $1 2>/dev/null || true; wait $1 2>/dev/null || true; }

for port in 9101 9201 9202 ${GATEWAY_PORT:-9200}; do bench_port_free $port; done
echo "mode=$MODE duration=${D}s connections=$C$(case $MODE in h2c|h2) echo " streams=$STREAMS";; esac)"
taskset -c 0 nginx -c $W/backend.conf -p $W & BE=$!
run_one direct 9101 $BE
taskset -c 1 nginx -c $W/nginx.conf -p $W & P=$!; run_one nginx 9201 $P; stop $P; P=
taskset -c 1 haproxy -f $W/haproxy.cfg 2>$W/logs/haproxy.err & P=$!; run_one haproxy 9202 $P; stop $P; P=
if [ -n "${GATEWAY_CMD:-}" ]; then
  taskset -c 1 bash -c "exec $GATEWAY_CMD" > $W/logs/gateway.log 2>&1 & P=$!
  run_one gateway ${GATEWAY_PORT:-9200} $P; stop $P; P=
  awk -v g=${CPU[gateway]} -v n=${CPU[nginx]} -v h=${CPU[haproxy]} \
    'BEGIN{ if (g+0>0 && n+0>0 && h+0>0) printf "ratio    cpu_per_req gateway/nginx=%.2f gateway/haproxy=%.2f\n", g/n, g/h }'
fi
