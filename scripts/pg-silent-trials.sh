#!/bin/sh
# How fast a silent PostgreSQL primary is failed over, next to a killed
# one: MEDIC_TRIALS (default 10) trials per fault, each on a fresh
# primary (in its own network namespace) and streaming replica, under a
# fresh medic running the shipped rules/database-failure.yaml unchanged.
# Faults (MEDIC_FAULTS, default kill,stop,drop): SIGKILL of the
# postmaster; SIGSTOP of the postmaster and all its processes; iptables
# DROP of every packet into its namespace. Prints per fault the median and
# p95 from the fault to the incident in the store and to the promoted
# replica's first accepted INSERT. Needs root (ip netns, iptables).
# MEDIC_DB_RULE=PATH runs another copy of the rule (to compare timings).
# Figures: docs/performance.md.
set -eu
cd "$(dirname "$0")/.."
MEDIC_TRIALS="${MEDIC_TRIALS:-10}" exec nice cargo test --test pg_silent_failover -- --ignored silent_trials --nocapture --test-threads 1
