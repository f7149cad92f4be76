#!/bin/sh
# The peer harness (tests/peers.rs): medic beside Monit (and the peers
# added there) on private ports, alternating trials with kills at
# stratified random phases of the check cycle; prints min, median, p95,
# max for each side and the ratio medic / peer. Not in the test command
# (it takes minutes). Release build; MEDIC_PEERS_RUNS trials (default 10),
# MEDIC_PEERS_SEED repeats a run's phases. Needs monit (apt-get install
# monit). Figures: README.md and docs/performance.md.
set -eu
cd "$(dirname "$0")/.."
command -v monit >/dev/null 2>&1 || {
  echo "installing: monit"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends monit
}
exec cargo test --release --test peers -- --ignored --nocapture --test-threads=1 "$@"
