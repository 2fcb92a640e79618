#!/usr/bin/env bash
# Added latency and CPU per streamed chunk of an `ai` route (docs/ai-gateway.md): a local
# streaming OpenAI-compatible provider (examples/ai_stream.rs) answers chat completions with
# CHUNKS events each; the client (the same example) sends REQUESTS streamed requests one
# after another, first straight to the provider, then through the gateway (an `ai` route,
# alias `fast` → `tiny`), in alternating rounds. Printed per round: time to the first event
# and to the end (p50, p99, µs), and the gateway's CPU (user + system, from /proc/PID/stat)
# per relayed event. The gateway is pinned to CPU 1, the provider and client to CPU 0.
# GATEWAY_BIN: a gateway binary to use as it is (default: target/release/ferrogate).
# Usage: bench/ai.sh [REQUESTS] [CHUNKS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}; CHUNKS=${2:-200}; ROUNDS=${3:-3}
GW=${GATEWAY_BIN:-target/release/ferrogate}
EX=target/release/examples/ai_stream
[ -x "$GW" ] && [ -x "$EX" ] || cargo build --release --quiet --bin ferrogate --example ai_stream
command -v taskset >/dev/null || { echo "taskset is required (util-linux)" >&2; exit 1; }
W=$(mktemp -d -t ai-bench.XXXXXX)
cat > $W/ai.yaml <<Y
workers: 1
listeners: [{address: 127.0.0.1:9210}]
admin: {address: 127.0.0.1:9291}
access_log: {enabled: false}
routes:
  - name: llm
    match: {path: {prefix: /v1/}}
    ai:
      providers: {local: {kind: openai, url: http://127.0.0.1:9103/v1}}
      models: {fast: {targets: [{provider: local, model: tiny}]}}
Y
taskset -c 0 $EX provider 9103 $CHUNKS & PV=$!
taskset -c 1 $GW run -c $W/ai.yaml > $W/gateway.log 2>&1 & GP=$!
trap 'kill $PV $GP 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
for port in 9103 9210; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
# Warm-up: connections, allocator.
taskset -c 0 $EX client http://127.0.0.1:9210/v1/chat/completions 50 > /dev/null
for r in $(seq $ROUNDS); do
  direct=$(taskset -c 0 $EX client http://127.0.0.1:9103/v1/chat/completions $N)
  t0=$(awk '{print $14+$15}' /proc/$GP/stat)
  via=$(taskset -c 0 $EX client http://127.0.0.1:9210/v1/chat/completions $N)
  t1=$(awk '{print $14+$15}' /proc/$GP/stat)
  events=$(sed 's/.*events=//' <<<"$via")
  hz=$(getconf CLK_TCK)
  cpu=$(awk -v d=$((t1 - t0)) -v e=$events -v hz=$hz 'BEGIN { printf "%.2f", d * 1000000 / hz / e }')
  echo "round $r direct:  $direct"
  echo "round $r gateway: $via cpu_us_per_event=$cpu"
done
