#!/usr/bin/env bash
# What the dashboard's live stream (GET /stats/live) costs: the gateway's CPU time, and the
# admin thread's (where the one producer runs) on-CPU time and wake-ups from
# /proc/PID/task/TID/schedstat, over DURATION seconds in four phases:
#   idle, 0 subscribers     nothing may run: the admin thread should not wake at all
#   idle, N subscribers     the producer's cost alone (one event a second to each)
#   traffic, 0 subscribers  RATE requests a second over 10 routes (tools: curl)
#   traffic, N subscribers  the same with N subscribers: the difference is the stream's cost
# Usage: [SUBSCRIBERS=20] [DURATION=10] [RATE=200] [GATEWAY_BIN=path] bench/dashboard.sh
#   GATEWAY_BIN  default target/release/ferrogate, built with `cargo build --release` first
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS=${SUBSCRIBERS:-20}; DURATION=${DURATION:-10}; RATE=${RATE:-200}
if [ -z "${GATEWAY_BIN:-}" ]; then cargo build --release --quiet; GATEWAY_BIN=target/release/ferrogate; fi
command -v curl >/dev/null && command -v python3 >/dev/null || { echo "curl and python3 are required" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); LISTEN=$(free_port); ADMIN=$(free_port)
python3 -m http.server "$BACKEND" --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 & pids+=($!)
{
  echo "workers: 1"
  echo "listeners: [{address: \"127.0.0.1:$LISTEN\"}]"
  echo "admin: {address: \"127.0.0.1:$ADMIN\"}"
  echo "history: {}"
  echo "upstreams: {app: {targets: [{address: \"127.0.0.1:$BACKEND\"}]}}"
  echo "routes:"
  for i in 0 1 2 3 4 5 6 7 8 9; do
    echo "  - {name: r$i, match: {path: {prefix: /r$i}}, upstream: app, strip_prefix: /r$i}"
  done
} > "$dir/gateway.yaml"
"$GATEWAY_BIN" run -c "$dir/gateway.yaml" 2>"$dir/log" & GW=$!; pids+=($GW)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done
ADMIN_TID=$(grep -l '^ferrogate-admin$' /proc/$GW/task/*/comm | head -1 | cut -d/ -f5)
[ -n "$ADMIN_TID" ] || { echo "no ferrogate-admin thread in $GW" >&2; cat "$dir/log" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$GW/stat"; }
sched() { cat "/proc/$GW/task/$ADMIN_TID/schedstat"; }
HZ=$(getconf CLK_TCK)
measure() { # LABEL
  local t0 s0 t1 s1; t0=$(ticks); s0=$(sched); sleep "$DURATION"; t1=$(ticks); s1=$(sched)
  read -r ns0 _ runs0 <<<"$s0"; read -r ns1 _ runs1 <<<"$s1"
  awk -v l="$1" -v t=$((t1 - t0)) -v hz="$HZ" -v d="$DURATION" -v ns=$((ns1 - ns0)) -v r=$((runs1 - runs0)) \
    'BEGIN { printf "%-28s gateway %6.2f%% of a core   admin thread %7.3f%% of a core, %5d wake-ups\n", l, 100*t/hz/d, 100*ns/1e9/d, r }'
}
subscribe() { for _ in $(seq "$SUBSCRIBERS"); do curl -sN "http://127.0.0.1:$ADMIN/stats/live" >/dev/null & pids+=($!); done; sleep 2; }
unsubscribe() { for _ in $(seq "$SUBSCRIBERS"); do kill "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; done; sleep 2; }
traffic() { # RATE requests a second, round the routes, keep-alive
  python3 - "$LISTEN" "$RATE" <<'PY' & pids+=($!)
import http.client, sys, time
port, rate = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port); i = 0; start = time.time()
while True:
    c.request("GET", f"/r{i % 10}/"); c.getresponse().read(); i += 1
    delay = start + i / rate - time.time()
    if delay > 0: time.sleep(delay)
PY
  sleep 2
}
echo "$GATEWAY_BIN, $SUBSCRIBERS subscribers, $DURATION s per phase, $(nproc) cores"
measure "idle, 0 subscribers"
subscribe; measure "idle, $SUBSCRIBERS subscribers"; unsubscribe
measure "idle, after they left"
traffic; measure "$RATE req/s, 0 subscribers"
subscribe; measure "$RATE req/s, $SUBSCRIBERS subscribers"
