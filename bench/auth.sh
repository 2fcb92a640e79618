#!/usr/bin/env bash
# Cost of authentication per request (bench/overhead.sh method): the plain route against an
# API-key route, then against an RS256 JWT route with a warm verified-token cache. The same
# credential header goes to the plain route, so only the checking differs.
# Usage: bench/auth.sh [DURATION_S] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(mktemp -d -t auth-bench.XXXXXX); trap 'rm -rf $T' EXIT
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $T/key.pem 2>/dev/null
openssl pkey -in $T/key.pem -pubout -out $T/pub.pem
head=$(printf '{"alg":"RS256","typ":"JWT","kid":"k1"}' | b64url)
body=$(printf '{"sub":"bench","iss":"bench","aud":"bench","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)
sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -sign $T/key.pem -binary | b64url)
TOKEN="$head.$body.$sig"
KEY=bench-api-key-0123456789
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
common="workers: 1
listeners: [{address: 127.0.0.1:9200}]
admin: {address: 127.0.0.1:9290}
metrics: {enabled: true}
access_log: {enabled: false}
upstreams:
  backend: {targets: [{address: 127.0.0.1:9101}]}"
cat > $T/apikey.yaml <<Y
$common
consumers:
  bench: {api_keys: ["$KEY_SHA"]}
auth:
  methods:
    keys: {api_key: {header: X-Api-Key}}
routes:
  - {name: all, upstream: backend, auth: {methods: [keys]}}
Y
cat > $T/jwt.yaml <<Y
$common
auth:
  methods:
    corp: {jwt: {keys: [{kid: k1, alg: RS256, pem_file: "$T/pub.pem"}], issuers: [bench], audiences: [bench]}}
routes:
  - {name: all, upstream: backend, auth: {methods: [corp]}}
Y
echo "== API key"
CONFIGS="peers $T/apikey.yaml" HEADER="x-api-key: $KEY" bench/overhead.sh "$@"
echo "== RS256 JWT, warm cache"
CONFIGS="peers $T/jwt.yaml" HEADER="authorization: Bearer $TOKEN" bench/overhead.sh "$@"
