#!/bin/sh
# How fast the postgres check's held session notices a dead primary: a
# SIGKILLed postmaster (median and p95 from the kill to a failing outcome)
# and a SIGSTOPped one (peer_timeout 1s), over MEDIC_TRIALS (default 10)
# trials each, on private PostgreSQL servers (tests/common/pg.rs).
# Figures: docs/performance.md.
set -eu
cd "$(dirname "$0")/.."
MEDIC_TRIALS="${MEDIC_TRIALS:-10}" exec cargo test --test pg_held -- --ignored detection_trials --nocapture
