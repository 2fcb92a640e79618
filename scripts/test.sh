#!/usr/bin/env bash
# The project's whole check: formatting, lints (warnings are errors), every test, and the
# Debian package installed and checked (scripts/test-deb.sh).
# This is the test command the README gives; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Redis, NATS and RabbitMQ tests start a real redis-server, nats-server and
# rabbitmq-server on free ports; install them when they are missing (COMMAND may be a path:
# the tests run the broker from /usr/lib/rabbitmq/bin, not through the root-only wrapper).
install_missing() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  echo "installing $2 for the queue and rate-limit tests" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
  command -v "$1" >/dev/null || { echo "$1 is required (apt-get install $2)" >&2; exit 1; }
}
install_missing redis-server redis-server
install_missing nats-server nats-server
install_missing /usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server
# The configuration-in-etcd tests start a real etcd member on free ports.
install_missing etcd etcd-server
# The alerting tests pass an alert through a real Alertmanager.
install_missing prometheus-alertmanager prometheus-alertmanager
# The native HTTP/2 server's tests use real HTTP/2 clients: h2load and curl.
install_missing h2load nghttp2-client
install_missing curl curl
# The DNS target tests start a real dnsmasq on a free loopback port; install it when missing.
if ! command -v dnsmasq >/dev/null && [ ! -x /usr/sbin/dnsmasq ]; then
  echo "installing dnsmasq-base for the DNS target tests" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null; }
  [ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null \
    || { echo "dnsmasq is required (apt-get install dnsmasq-base)" >&2; exit 1; }
fi
# The OpenID Connect tests run the npm package oidc-provider with node (installed by the
# test support into target/oidc-provider/ with npm); install node and npm when missing.
install_missing node nodejs
install_missing npm npm
# The dashboard's browser tests (tests/dashboard.rs) drive a headless Chromium through
# chromedriver; install both when missing.
install_missing chromium chromium
install_missing chromedriver chromium-driver
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
# The Debian package: built, installed with dpkg -i, checked and purged (scripts/test-deb.sh;
# installs cargo-deb and systemd-analyze when missing, skipped only where dpkg is missing).
bash scripts/test-deb.sh
