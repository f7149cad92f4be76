#!/bin/sh
# The fence-on-return race, MEDIC_TRIALS (default 10) times: a real medic
# watches a PostgreSQL cluster (primary + streaming replica); the primary
# is SIGKILLed, medic promotes the replica, the incident resolves; the old
# primary is started again and an INSERT is sent to it the moment it
# accepts connections. Prints "N of 10 writable" (0 is the goal: medic
# fenced it first). The members have data_dir (demoted on disk);
# MEDIC_TRIALS_DEMOTE=none leaves it out (fence on sight only).
# MEDIC_TRIALS_EVERY_MS (default 500) is the check's interval (`for:` and
# `unreachable_for:` are two of them); MEDIC_TRIALS_RELEASE=1 measures a
# release build.
# Figures: docs/performance.md.
set -eu
cd "$(dirname "$0")/.."
MEDIC_TRIALS="${MEDIC_TRIALS:-10}" MEDIC_TRIALS_DEMOTE="${MEDIC_TRIALS_DEMOTE:-data_dir}" exec cargo test ${MEDIC_TRIALS_RELEASE:+--release} --test pg_cluster_failover -- --ignored fence_trials --nocapture
