#!/usr/bin/env bash
# Queued routes under load (docs/benchmarks.md, "Queued routes"): the same POST forwarded at
# once (bench/queue-direct.yaml), stored in the embedded queue (bench/queue-embedded.yaml),
# in Redis (bench/queue-redis.yaml), in NATS JetStream (bench/queue-nats.yaml) and on
# RabbitMQ with its state in Redis (bench/queue-rabbitmq.yaml). The gateway runs pinned to
# CPU 1 with one worker; the backend (nginx), Redis, NATS, RabbitMQ and the load client
# (examples/queue_load.rs) share CPU 0.
# For each: accepts per second and p50/p99 latency with CONNECTIONS keep-alive clients as fast
# as they go, then p50/p99 at half that rate (fixed-rate load, latency counted from each
# request's due time), and the gateway's CPU microseconds per job, accept and delivery
# included: its CPU from the start of the load until the queue is empty again, over the jobs.
# The `accept-only` rows run the same queue with its deliveries held (the upstream, a socat
# on 127.0.0.1:9112, takes connections and never answers, so the dispatchers wait on their
# first jobs): they measure the accept alone, and their CPU column is the accept's.
# Usage: [GATEWAY_BIN=path] [LOAD_BIN=path] [ROWS="name …"] bench/queue.sh [DURATION_S=5] [CONNECTIONS=50]
#   GATEWAY_BIN, LOAD_BIN  the release gateway and load client to use as they are (default:
#   built here with `cargo build --release`)
#   ROWS  the rows to run, by name (default: all): direct embedded embedded-accept-only redis
#   redis-accept-only nats rabbitmq
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}; C=${2:-50}
export PATH=$PATH:/usr/sbin
RMQ=/usr/lib/rabbitmq/bin
for t in nginx redis-server nats-server $RMQ/rabbitmq-server taskset curl socat; do
  command -v $t >/dev/null || { echo "$t is required (apt-get install nginx redis-server nats-server rabbitmq-server util-linux curl socat)" >&2; exit 1; }
done
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --quiet
  cargo build --release --quiet --example queue_load
fi
GW=${GATEWAY_BIN:-target/release/ferrogate}
LOAD=${LOAD_BIN:-target/release/examples/queue_load}
# Ports: backend 9111, held upstream 9112, gateway 9210 (admin 9291), Redis 6391, apart from
# the other benchmarks' so that none gets another's load; each must be free.
for port in 9111 9112 9210 9291 6391 4290 5690; do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { echo "127.0.0.1:$port is in use" >&2; exit 1; }
done
ROWS=${ROWS:-direct embedded embedded-accept-only redis redis-accept-only nats rabbitmq}
wanted() { [[ " $ROWS " == *" $1 "* ]]; }
W=$(mktemp -d -t queue-bench.XXXXXX); mkdir -p $W/logs
cat > $W/backend.conf <<NG
worker_processes 1; daemon off; master_process off; pid $W/backend.pid; error_log $W/logs/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9111; location / { default_type application/json; return 200 '{"ok":true}'; } } }
NG
taskset -c 0 nginx -c $W/backend.conf -p $W & BE=$!
taskset -c 0 redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no > $W/logs/redis.log 2>&1 & RS=$!
NS= MQ=
wanted nats && { taskset -c 0 nats-server -js -a 127.0.0.1 -p 4290 -sd $W/nats > $W/logs/nats.log 2>&1 & NS=$!; }
# RabbitMQ unprivileged, its node, data and Erlang port map in the work directory.
echo '[].' > $W/enabled_plugins; : > $W/rabbitmq.conf
wanted rabbitmq && { HOME=$W RABBITMQ_NODENAME=bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5690 \
  RABBITMQ_DIST_PORT=25690 ERL_EPMD_PORT=4391 RABBITMQ_MNESIA_BASE=$W/mnesia RABBITMQ_LOG_BASE=$W/logs \
  RABBITMQ_CONFIG_FILE=$W/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$W/enabled_plugins \
  setsid taskset -c 0 $RMQ/rabbitmq-server > $W/logs/rabbitmq.out 2>&1 & MQ=$!; disown $MQ; }
stop_rabbitmq() { # the broker's process group, then its port mapper once no node is left
  [ -n "$MQ" ] || return 0
  kill -9 -$MQ 2>/dev/null || true
  for _ in $(seq 10); do
    ERL_EPMD_PORT=4391 /usr/lib/erlang/bin/epmd -kill >/dev/null 2>&1 || true; sleep 0.3
    ERL_EPMD_PORT=4391 /usr/lib/erlang/bin/epmd -names >/dev/null 2>&1 || break
  done
}
taskset -c 0 setsid socat TCP-LISTEN:9112,bind=127.0.0.1,reuseaddr,fork SYSTEM:'sleep 3600' 2>/dev/null & HELD=$!
P=
trap 'kill $BE $RS $NS $P 2>/dev/null || true; kill -- -$HELD 2>/dev/null || true; stop_rabbitmq; wait 2>/dev/null || true; rm -rf $W' EXIT
sleep 0.5

depth() { curl -s http://127.0.0.1:9291/queues | grep -o '"depth":[0-9]*' | head -1 | cut -d: -f2; }
run() { # name config [held] -> one line of figures
  wanted "$1" || return 0
  local name=$1 cfg=$W/$1.yaml held=${3:-}
  sed "s#QUEUE_DIR#$W/queue-$1#" "$2" > $cfg
  # Deliveries held: the queue only grows, so there is no waiting for it to empty.
  [ -n "$held" ] && sed -i 's/127.0.0.1:9111/127.0.0.1:9112/' $cfg
  drain() { [ -n "$held" ] && return; for _ in $(seq 600); do [ "$(depth)" = "0" ] || [ -z "$(depth)" ] && break; sleep 0.1; done; }
  redis-cli -p 6391 flushall >/dev/null 2>&1 || true
  taskset -c 1 $GW run -c $cfg > $W/logs/$name.log 2>&1 & P=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/9210) 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 $LOAD 127.0.0.1:9210 /jobs/warm $C 1 > /dev/null
  drain
  local t0 t1 jobs full half rps
  t0=$(awk '{print $14+$15}' /proc/$P/stat)
  full=$(taskset -c 0 $LOAD 127.0.0.1:9210 /jobs/report $C $D)
  drain
  t1=$(awk '{print $14+$15}' /proc/$P/stat)
  jobs=$(echo "$full" | sed 's/.*accepted=\([0-9]*\).*/\1/')
  rps=$(echo "$full" | sed 's/.*rps=\([0-9]*\).*/\1/')
  half=$(taskset -c 0 $LOAD 127.0.0.1:9210 /jobs/report $C $D $((rps / 2)))
  kill -TERM $P; wait $P 2>/dev/null || true; P=
  awk -v n=$name -v f="$full" -v h="$half" -v t=$((t1-t0)) -v j=$jobs -v hz=$(getconf CLK_TCK) 'BEGIN{
    split(f, a, " "); split(h, b, " ");
    for (i in a) { split(a[i], kv, "="); F[kv[1]]=kv[2] } for (i in b) { split(b[i], kv, "="); H[kv[1]]=kv[2] }
    printf "%-20s accepted/s=%-7s p50=%-6s p99=%-6s ms | at half rate (%s/s): p50=%-6s p99=%-6s ms | cpu_us_per_job=%.1f | non-2xx=%s errors=%s\n",
      n, F["rps"], F["p50_ms"], F["p99_ms"], H["rps"], H["p50_ms"], H["p99_ms"], t/hz*1e6/(j>0?j:1), F["other"]+H["other"], F["errors"]+H["errors"] }'
}
run direct bench/queue-direct.yaml
run embedded bench/queue-embedded.yaml
run embedded-accept-only bench/queue-embedded.yaml held
run redis bench/queue-redis.yaml
run redis-accept-only bench/queue-redis.yaml held
run nats bench/queue-nats.yaml
wanted rabbitmq && for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/5690) 2>/dev/null && break; sleep 0.1; done
run rabbitmq bench/queue-rabbitmq.yaml
