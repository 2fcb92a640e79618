#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: target/debian/ferrogate_VERSION-1_ARCH.deb.
# The binary comes from the `profiling` profile (release code with line tables); cargo-deb
# strips it and moves its debug info into a separate ferrogate-dbgsym .ddeb, matched by
# build id (/usr/lib/debug/.build-id/). Shell completions and the manual page are generated
# from the built binary first.
# Usage: scripts/package-deb.sh [--profile NAME] [other cargo-deb options, e.g. --fast]
#   --profile dev   packages the debug build (fast; what scripts/test-deb.sh installs in CI)
# Needs cargo-deb (cargo install cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=profiling
if [ "${1:-}" = --profile ]; then PROFILE=$2; shift 2; fi
command -v cargo-deb >/dev/null || { echo "cargo-deb is required (cargo install cargo-deb)" >&2; exit 1; }
cargo build --quiet --profile "$PROFILE" --bin ferrogate
dir=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
bin=$dir/ferrogate
mkdir -p "$dir/generated"
"$bin" completions bash > "$dir/generated/ferrogate.bash"
"$bin" completions zsh > "$dir/generated/_ferrogate"
"$bin" completions fish > "$dir/generated/ferrogate.fish"
rm -rf "$dir/generated/man" && mkdir -p "$dir/generated/man"
"$bin" manpage --out-dir "$dir/generated/man"
gzip -9n "$dir"/generated/man/*.1
dbg=--dbgsym
[ "$PROFILE" = dev ] && dbg=--no-dbgsym
cargo deb --no-build --profile "$PROFILE" "$dbg" "$@"
