#!/usr/bin/env bash
# Time from a change through the admin API to the new route being served: on one instance
# (configuration versions in the instance) and across three instances sharing etcd (the
# write through the first instance; the time until it serves the route, and until all three
# do). Each write adds a route /rN; the time runs from sending the write until a request on
# /rN gets the backend's answer, polled without pause. Prints the median and the slowest of
# WRITES writes per case.
# Usage: bench/config-apply.sh [WRITES] [BINARY]   (etcd from Debian etcd-server, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES=${1:-20}
BIN=${2:-target/release/ferrogate}
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd is required (apt-get install etcd-server)" >&2; exit 1; }
T=$(mktemp -d -t config-apply.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; wait 2>/dev/null; rm -rf $T' EXIT
export FERROGATE_ADMIN_TOKEN=bench-token

etcd --name bench --data-dir $T/etcd --log-level error \
  --listen-client-urls http://127.0.0.1:9379 --advertise-client-urls http://127.0.0.1:9379 \
  --listen-peer-urls http://127.0.0.1:9380 --initial-advertise-peer-urls http://127.0.0.1:9380 \
  --initial-cluster bench=http://127.0.0.1:9380 >$T/etcd.log 2>&1 & PIDS+=($!)

# instance FILE LISTEN_PORT ADMIN_PORT [ETCD]
instance() {
  local etcd=""
  [ -n "${4:-}" ] && etcd="
  etcd: {endpoints: [http://127.0.0.1:9379], prefix: /bench/}"
  cat > $T/$1.yaml <<Y
workers: 1
listeners: [{address: 127.0.0.1:$2}]
access_log: {enabled: false}
admin:
  address: 127.0.0.1:$3
  tokens: [{name: bench, role: admin, token_env: FERROGATE_ADMIN_TOKEN}]$etcd
upstreams:
  backend: {targets: [{address: 127.0.0.1:9101}]}
Y
  RUST_LOG=warn "$BIN" run -c $T/$1.yaml >$T/$1.log 2>&1 & PIDS+=($!)
}

python3 - <<'PY' &
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; allow_reuse_address = True
S(("127.0.0.1", 9101), H).serve_forever()
PY
PIDS+=($!)

for _ in $(seq 100); do curl -sf -X POST http://127.0.0.1:9379/v3/kv/range -d '{"key":"AA=="}' >/dev/null && break; sleep 0.1; done
instance one 9201 9291
instance a 9211 9311 etcd
sleep 1   # the first instance seeds the key; the others read it
instance b 9212 9312 etcd
instance c 9213 9313 etcd
for p in 9291 9311 9312 9313; do
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$p/healthz && break; sleep 0.1; done
done

python3 - "$WRITES" <<'PY'
import http.client, json, statistics, sys, time
writes = int(sys.argv[1])
TOKEN = "bench-token"

def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, r.getheader("etag"), data

def add_route(admin, n):
    body = json.dumps({"name": f"r{n}", "match": {"path": {"prefix": f"/r{n}/"}}, "upstream": "backend"})
    status, _, data = request(admin, "POST", "/config/routes", body,
                              {"authorization": f"Bearer {TOKEN}", "if-match": "*"})
    assert status == 201, (status, data)

def served(port, n):
    status, _, data = request(port, "GET", f"/r{n}/x")
    return status == 200 and data == b"ok"

def run(name, admin, ports, first):
    to_first, to_all = [], []
    for n in range(first, first + writes):
        pending = set(ports)
        start = time.perf_counter()
        add_route(admin, n)
        while pending:
            for p in list(pending):
                if served(p, n):
                    pending.discard(p)
                    elapsed = (time.perf_counter() - start) * 1000
                    if p == ports[0]:
                        to_first.append(elapsed)
                    if not pending:
                        to_all.append(elapsed)
            if time.perf_counter() - start > 10:
                sys.exit(f"{name}: route r{n} not served on {sorted(pending)} after 10 s")
    fmt = lambda xs: f"median {statistics.median(xs):7.2f} ms  max {max(xs):7.2f} ms"
    print(f"{name:<28} writing instance: {fmt(to_first)}")
    if len(ports) > 1:
        print(f"{'':<28} all {len(ports)} instances:  {fmt(to_all)}")

print(f"{writes} writes per case, each adding a route, time from sending the write to serving it")
run("one instance (versions)", 9291, [9201], 0)
run("three instances (etcd)", 9311, [9211, 9212, 9213], 1000)
PY
