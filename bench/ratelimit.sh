#!/usr/bin/env bash
# Cost of rate limiting per request: the same route without a policy (bench/peers.yaml), with
# a local sliding-window policy, and with the policy in Redis (strict and batched); see
# bench/overhead.sh for the method. Usage: bench/ratelimit.sh [DURATION_S] [ROUNDS]
cd "$(dirname "$0")/.."
CONFIGS=${CONFIGS:-"peers ratelimit-local ratelimit-redis ratelimit-batched"} exec bench/overhead.sh "$@"
