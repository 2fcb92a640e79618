#!/usr/bin/env bash
# Runs the HTTP cache test suite of cache-tests.fyi (npm package http-cache-tests) through
# the gateway: the suite's origin server on 127.0.0.1:8000, the gateway on 127.0.0.1:8080
# caching everything in front of it, the suite's client against the gateway. Prints the
# pass rate of required tests (overall and by suite) and writes the raw results.
# ROUTE_CACHE is the route's `cache` block (default `{}`, every setting at its default).
# Usage: [VERSION=0.4.5] [GATEWAY_BIN=target/debug/ferrogate] [OUT=FILE] [ROUTE_CACHE=YAML] \
#   scripts/cache-tests.sh
# Needs node and npm; the package is installed into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-0.4.5}
BIN=${GATEWAY_BIN:-target/debug/ferrogate}
OUT=${OUT:-cache-tests-results.json}
ROUTE_CACHE=${ROUTE_CACHE:-"{}"}
[ -x "$BIN" ] || cargo build --quiet
W=$(mktemp -d -t cache-tests.XXXXXX)
cleanup() {
  [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null
  [ -f "$W/server.pid" ] && kill "$(cat "$W/server.pid")" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
(cd "$W" && npm install --silent --no-audit --no-fund --install-strategy=nested "http-cache-tests@$VERSION" >/dev/null)
SUITE=$W/node_modules/http-cache-tests
cat > "$W/gateway.yaml" <<YAML
workers: 1
listeners: [{address: 127.0.0.1:8080}]
upstreams:
  origin: {targets: [{address: 127.0.0.1:8000}]}
routes:
  - upstream: origin
    cache: $ROUTE_CACHE
YAML
# The suite reads its settings as npm would pass them from package.json.
export npm_package_config_protocol=http npm_package_config_port=8000 npm_package_config_id=
(cd "$SUITE" && npm_config_pidfile="$W/server.pid" node server/server.mjs > "$W/server.log" 2>&1 &)
"$BIN" run -c "$W/gateway.yaml" > "$W/gateway.log" 2>&1 & GW=$!
for port in 8000 8080; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
(cd "$SUITE" && npm_config_base=http://127.0.0.1:8080 node --no-warnings cli.mjs) > "$OUT"
cat > "$W/summary.mjs" <<'JS'
import fs from 'fs'
const suite = process.argv[2]
const { default: tests } = await import(`${suite}/tests/index.mjs`)
const { default: surrogate } = await import(`${suite}/tests/surrogate-control.mjs`)
tests.push(surrogate)
const results = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'))
const byId = {}
for (const s of tests) for (const t of s.tests) byId[t.id] = t
// A test whose dependency did not pass is not counted, as cache-tests.fyi shows it.
const passed = id => results[id] === true
const depsOk = t => (t.depends_on || []).every(d => passed(d) && depsOk(byId[d] || {}))
let total = 0, ok = 0
const failed = []
for (const s of tests) {
  let n = 0, p = 0
  for (const t of s.tests) {
    if (t.browser_only) continue
    if ((t.kind || 'required') !== 'required') continue
    if (!depsOk(t)) continue
    n++; if (passed(t.id)) p++; else failed.push(`${t.id}: ${JSON.stringify(results[t.id])}`)
  }
  total += n; ok += p
  if (n) console.log(`${s.id.padEnd(28)} ${String(p).padStart(3)}/${String(n).padEnd(3)} ${(100 * p / n).toFixed(1)}%`)
}
console.log(`${'required, all suites'.padEnd(28)} ${String(ok).padStart(3)}/${String(total).padEnd(3)} ${(100 * ok / total).toFixed(1)}%`)
if (failed.length) console.log('\nfailed required tests:\n' + failed.join('\n'))
JS
node "$W/summary.mjs" "$SUITE" "$(realpath "$OUT")"
