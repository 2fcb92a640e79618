#!/usr/bin/env bash
# Resident memory per idle client connection: nginx, HAProxy and the gateway, one worker each,
# configured as in bench/peers.sh (bench/proxies.sh; the gateway from bench/peers.yaml or
# bench/peers-tls.yaml), in front of the same backend. For each mode, connection count and
# proxy, a fresh proxy is started (pinned to CPU 1) and bench/idle_conns.py (on CPU 0) opens
# COUNT connections from 127.0.0.2, 127.0.0.3, ...; each sends one request, reads the
# response and stays open and idle. Printed per run: the proxy's VmRSS before and with the
# connections open, KiB per connection, and VmRSS 5 s and 30 s after all were closed.
# Kernel socket memory is not in VmRSS (and is the same for every proxy).
#
# The only departures from the peers.sh configs are what many idle connections need: the
# connection limits (nginx worker_connections, HAProxy maxconn, file descriptors) and an idle
# keep-alive timeout of 600 s on all three (nginx keepalive_timeout, HAProxy timeout client
# and http-keep-alive, the gateway's limits.keepalive_timeout), so none closes a connection
# while the others are being opened.
#
# Usage: [MODES="plain tls h2c"] [COUNTS="10000 50000"] [PROXIES="nginx haproxy gateway"]
#        [GATEWAY_BIN=path] [WAITS=5,30] [H2_SERVER=native] bench/idle.sh
#   MODES    plain (HTTP/1.1), tls (HTTP/1.1 over TLS 1.3), h2c (prior-knowledge HTTP/2),
#            h2 (HTTP/2 over TLS 1.3 by ALPN)
#   WAITS    seconds after the close at which VmRSS is read again (two)
#   GATEWAY_BIN  default target/release/ferrogate, built with `cargo build --release` first;
#            a given binary is used as it is
# Raises `ulimit -n` for the proxies and the client (above the hard limit only where that
# is allowed: root with CAP_SYS_RESOURCE); counts that do not fit are skipped with a message.
# Takes about a minute per run (18 runs by default).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/proxies.sh
MODES=${MODES:-"plain tls h2c"}; COUNTS=${COUNTS:-"10000 50000"}
PROXIES=${PROXIES:-"nginx haproxy gateway"}; WAITS=${WAITS:-5,30}
# Every idle connection is a file descriptor in the client and in the proxy. Raising the hard
# limit needs CAP_SYS_RESOURCE; a count that does not fit under it (with 500 spare) is skipped.
max=0; for n in $COUNTS; do [ $n -gt $max ] && max=$n; done
ulimit -n $((max * 2 + 10000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FDS=$(ulimit -n); [ "$FDS" = unlimited ] && FDS=$((max * 2 + 10000))
fits=""; for n in $COUNTS; do
  if [ $((n + 500)) -le $FDS ]; then fits="$fits $n"; else
    echo "skipping $n connections: the open-file limit is $FDS (ulimit -Hn; raising it needs CAP_SYS_RESOURCE)" >&2; fi
done
COUNTS=$fits; [ -n "$COUNTS" ] || exit 1
max=0; for n in $COUNTS; do [ $n -gt $max ] && max=$n; done
if [[ " $PROXIES " == *" gateway "* ]]; then
  if [ -z "${GATEWAY_BIN:-}" ]; then cargo build --release --quiet; GATEWAY_BIN=target/release/ferrogate; fi
  [ -x "$GATEWAY_BIN" ] || { echo "no gateway binary at $GATEWAY_BIN" >&2; exit 1; }
fi
bench_tools
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
TLS_DIR=${TLS_DIR:-target/bench-tls}; bench_tls_cert "$TLS_DIR"; TLS_DIR=$(cd "$TLS_DIR" && pwd)
export TLS_DIR MAXCONN=$((max + 1000)) IDLE_TIMEOUT=600s

W=$(mktemp -d -t idle-bench.XXXXXX)
BE=; P=
cleanup() { [ -z "$P" ] || kill $P 2>/dev/null || true; [ -z "$BE" ] || kill $BE 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
stop() { kill -TERM $1 2>/dev/null || true; wait $1 2>/dev/null || true; }

gateway_config() { # mode -> path: the peers config with the idle timeout, cert paths absolute
  local src=bench/peers.yaml out=$W/gateway-$1.yaml
  case $1 in tls|h2) src=bench/peers-tls.yaml;; esac
  # H2_SERVER=native: the listener's HTTP/2 connections on the native server.
  local extra=""
  [ -n "${H2_SERVER:-}" ] && extra="\n    h2_server: $H2_SERVER"
  sed -e "s|^  - address: 127.0.0.1:9200$|&\n    limits: {keepalive_timeout: $IDLE_TIMEOUT}$extra|" \
      -e "s|\.\./target/bench-tls|$TLS_DIR|" $src > $out
  "$GATEWAY_BIN" check -c $out >/dev/null
  echo $out
}

RESULTS=$W/results
echo "| mode | connections | proxy | open | RSS before (KiB) | RSS open (KiB) | KiB per connection | RSS ${WAITS%,*} s after close | RSS ${WAITS#*,} s after close |" > $RESULTS
echo "|---|---|---|---|---|---|---|---|---|" >> $RESULTS
for mode in $MODES; do
  case $mode in plain|tls|h2c|h2) ;; *) echo "unknown mode $mode (plain, tls, h2c, h2)" >&2; exit 2;; esac
  bench_configs $W/$mode $mode
  bench_port_free 9101
  gw=""; [[ " $PROXIES " == *" gateway "* ]] && gw=$(gateway_config $mode)
  taskset -c 0 nginx -c $W/$mode/backend.conf -p $W/$mode & BE=$!
  wait_port 9101
  for n in $COUNTS; do
    for proxy in $PROXIES; do
      for port in 9200 9201 9202; do bench_port_free $port; done
      case $proxy in
        nginx) taskset -c 1 nginx -c $W/$mode/nginx.conf -p $W/$mode & P=$!; port=9201;;
        haproxy) taskset -c 1 haproxy -f $W/$mode/haproxy.cfg 2>$W/$mode/logs/haproxy.err & P=$!; port=9202;;
        gateway) taskset -c 1 "$GATEWAY_BIN" run -c $gw > $W/$mode/logs/gateway.log 2>&1 & P=$!; port=9200;;
        *) echo "unknown proxy $proxy" >&2; exit 2;;
      esac
      wait_port $port
      sleep 0.5
      echo "== $mode $n $proxy"
      taskset -c 0 python3 bench/idle_conns.py --mode $mode --port $port --pid $P --count $n --waits $WAITS \
        | tee $W/out || true
      stop $P; P=
      awk -v m=$mode -v n=$n -v p=$proxy '/^RESULT/{
          for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
          printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m, n, p, r["open"],
            r["before_kb"], r["open_kb"], r["per_conn_kib"], r["after5_kb"], r["after30_kb"] }' $W/out >> $RESULTS
    done
  done
  stop $BE; BE=
done
echo
cat $RESULTS
