#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# when it is missing, then runs formatting, lints, every test and the shipped
# rules' validation. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests start privately on ephemeral ports.
declare -A pkg_for=(
  [redis-server]=redis-server
  [systemd-analyze]=systemd
  [kubectl]=kubernetes-client
  [prometheus]=prometheus
  [prometheus-redis-exporter]=prometheus-redis-exporter
  # The status page is tested in headless Chromium over WebDriver.
  [chromium]=chromium
  [chromedriver]=chromium-driver
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
# PostgreSQL's server binaries live outside PATH (/usr/lib/postgresql/N/bin).
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages: moto_server stands in for Route 53 in the DNS failover tests
# and for S3 in the backup tests.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server]"
  python3 -m pip install --quiet 'moto[server]' ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --bins
./target/debug/medic check --config medic.yaml rules/
./target/debug/medic test --config medic.yaml rules/tests/
cargo test --all-targets
