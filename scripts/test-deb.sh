#!/usr/bin/env bash
# The Debian package, installed for real: builds it (scripts/package-deb.sh, debug profile:
# the layout and the scripts are what is tested, not the optimiser), installs it with
# dpkg -i, checks the user, directories, permissions and files it sets up, runs
# `ferrogate check` on the installed configuration as the service user, verifies the unit
# with systemd-analyze (verify, and a security exposure of at most 2.0), runs the installed
# binary as the service user and reloads it with the unit's own ExecReload command, then
# purges the package. Run as root (CI is); skipped only where dpkg is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dpkg >/dev/null; then
  echo "test-deb: skipped: dpkg is not available on this system (Debian/Ubuntu only)"
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
apt_install() {
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}
if ! command -v cargo-deb >/dev/null; then
  echo "test-deb: installing cargo-deb" >&2
  cargo install --quiet --locked cargo-deb --version 3.8.0
fi
if ! command -v systemd-analyze >/dev/null; then
  echo "test-deb: installing systemd (for systemd-analyze)" >&2
  apt_install systemd
fi
command -v systemd-analyze >/dev/null || { echo "test-deb: systemd-analyze is required" >&2; exit 1; }

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
pass=0
ok() { echo "test-deb: ok: $*"; pass=$((pass + 1)); }

scripts/package-deb.sh --profile dev --fast --quiet
deb=$(ls -t target/debian/ferrogate_*.deb | head -1)
# A package left by an interrupted run would turn this install into an upgrade.
if dpkg -s ferrogate >/dev/null 2>&1; then $SUDO dpkg --purge ferrogate >/dev/null; fi
W=$(mktemp -d -t test-deb.XXXXXX)
cleanup() {
  [ -n "${GW:-}" ] && kill "$GW" 2>/dev/null || true
  $SUDO dpkg --purge ferrogate >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
$SUDO dpkg -i "$deb" > "$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log" >&2; fail "dpkg -i $deb"; }
ok "dpkg -i $(basename "$deb")"

unit=/usr/lib/systemd/system/ferrogate.service
for f in /usr/bin/ferrogate /etc/ferrogate/ferrogate.yaml $unit \
  /usr/share/ferrogate/ferrogate.schema.json /usr/share/man/man1/ferrogate.1.gz \
  /usr/share/bash-completion/completions/ferrogate /usr/share/zsh/vendor-completions/_ferrogate \
  /usr/share/fish/vendor_completions.d/ferrogate.fish /usr/share/doc/ferrogate/install.md; do
  [ -s "$f" ] || fail "$f is missing"
done
ok "binary, configuration, unit, schema, manual page, completions and docs installed"
getent passwd ferrogate | grep -q ':/var/lib/ferrogate:/usr/sbin/nologin$' || fail "no ferrogate system user"
for d in /var/lib/ferrogate /var/log/ferrogate; do
  [ "$(stat -c '%U:%G %a' $d)" = "ferrogate:ferrogate 750" ] || fail "$d: $(stat -c '%U:%G %a' $d)"
done
[ "$(stat -c '%U:%G %a' /etc/ferrogate)" = "root:ferrogate 750" ] || fail "/etc/ferrogate: $(stat -c '%U:%G %a' /etc/ferrogate)"
[ "$(stat -c '%U:%G %a' /etc/ferrogate/ferrogate.yaml)" = "root:ferrogate 640" ] || fail "config: $(stat -c '%U:%G %a' /etc/ferrogate/ferrogate.yaml)"
ok "ferrogate user; /var/lib/ferrogate and /var/log/ferrogate ferrogate:ferrogate 750; configuration root:ferrogate 640"

as_service() { $SUDO setpriv --reuid=ferrogate --regid=ferrogate --init-groups -- "$@"; }
as_service /usr/bin/ferrogate check -c /etc/ferrogate/ferrogate.yaml || fail "ferrogate check on the installed configuration"
ok "ferrogate check -c /etc/ferrogate/ferrogate.yaml (as the ferrogate user)"
/usr/bin/ferrogate --version | grep -q '^commit: ' || fail "--version names no commit"
zcat /usr/share/man/man1/ferrogate.1.gz | grep -q '^\.TH ferrogate 1' || fail "the manual page is not roff"
ok "--version and the manual page"

# verify exits 0 on directives it ignores (a misspelt key, a bad value): any output fails.
systemd-analyze verify --man=no "$unit" > "$W/verify.log" 2>&1 || true
[ ! -s "$W/verify.log" ] || { cat "$W/verify.log" >&2; fail "systemd-analyze verify reported problems"; }
ok "systemd-analyze verify $unit"
# "OK" is an exposure from 1.0 to 4.9; the unit scores 1.4 (docs/install.md). A change that
# raises it past 2.0 must be deliberate: update this limit and the docs together.
systemd-analyze security --offline=true --no-pager --threshold=20 "$unit" > "$W/security.log" 2>&1 \
  || { tail -25 "$W/security.log" >&2; fail "systemd-analyze security: exposure above 2.0"; }
exposure=$(grep 'Overall exposure level' "$W/security.log")
ok "systemd-analyze security: ${exposure#→ }"

# The unit's ExecReload, run as written against the installed binary under the service user.
cat > "$W/gateway.yaml" <<'EOF'
workers: 1
listeners: [{address: 127.0.0.1:0}]
EOF
chmod 755 "$W"; chmod 644 "$W/gateway.yaml"
FERROGATE_LOG=info $SUDO setpriv --reuid=ferrogate --regid=ferrogate --init-groups -- \
  /usr/bin/ferrogate run -c "$W/gateway.yaml" > "$W/run.log" 2>&1 & GW=$!
wait_for() {
  for _ in $(seq 100); do grep -q "$1" "$W/run.log" && return 0; sleep 0.1; done
  cat "$W/run.log" >&2; fail "the gateway never logged \"$1\""
}
wait_for "listening on"
reload=$(sed -n 's/^ExecReload=//p' "$unit")
[ -n "$reload" ] || fail "the unit has no ExecReload"
# setpriv executes the gateway in its own process; under sudo it is sudo's child.
pid=$GW
[ -n "$SUDO" ] && pid=$(awk '{print $1}' "/proc/$GW/task/$GW/children")
$SUDO sh -c "${reload//\$MAINPID/$pid}"
wait_for "configuration reloaded"
$SUDO kill -TERM "$pid"; wait "$GW" || fail "the gateway did not exit 0 on SIGTERM"
GW=""
ok "ExecReload ($reload) reloads the running gateway; SIGTERM ends it with status 0"

$SUDO dpkg --purge ferrogate > "$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log" >&2; fail "dpkg --purge"; }
[ ! -e /usr/bin/ferrogate ] && [ ! -e /var/lib/ferrogate ] && [ ! -e /var/log/ferrogate ] \
  && [ ! -e /etc/ferrogate ] \
  || fail "purge left files behind"
ok "dpkg --purge removes the binary, the configuration and the data directory"
echo "test-deb: $pass passed, 0 failed"
