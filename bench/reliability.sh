#!/usr/bin/env bash
# Runs the reliability scenarios (docs/operations.md) against the release binary: real
# backends on 127.0.0.1, bounded in time (about a minute). Prints a table of scenario,
# requests, failures and result; exits non-zero if any scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ferrogate
exec cargo run --release --quiet --example reliability -- target/release/ferrogate
