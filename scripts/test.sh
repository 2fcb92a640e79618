#!/usr/bin/env bash
# The project's whole check: formatting, lints (warnings are errors) and every test.
# This is the test command the README gives; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
