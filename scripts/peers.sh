#!/usr/bin/env bash
# The peer harness (tests/peers.rs): medic beside the tools users run for
# the same job, on private ports, measured the same way; not in the test
# command (it takes about 15 minutes). Prints min, median, p95 and max for
# each side and the ratio medic / peer of the medians.
#
# 1. Redis SIGKILL -> answering PING again: medic against Monit (two
#    like-for-like pairs), alternating trials at stratified random phases
#    of the 1 s cycle (tests/peers.rs, redis_medic_against_monit).
# 2. PostgreSQL primary lost -> the replica accepts an INSERT: medic
#    (tests/pg_failover.rs failover_benchmark: the replica promoted through
#    every gate: tcp check every 500 ms, for: 1s, 3 unreachable checks and
#    1 s of silence, a fence command) against Patroni 3 with etcd after node
#    loss (Patroni and its PostgreSQL SIGKILLed at a random phase of
#    loop_wait; PATRONI_TIMING=aggressive, the lowest settings Patroni
#    accepts, or default), alternating one trial each (A B A B), a fresh
#    cluster per trial on both sides.
#
#   scripts/peers.sh                      # release build, 10 trials each
#   MEDIC_PEERS_RUNS=5 MEDIC_PEERS_PROFILE=debug scripts/peers.sh
#   MEDIC_PEERS_ONLY=postgres PATRONI_TIMING=default scripts/peers.sh
#
# Needs monit, patroni and etcd-server (installed here when missing).
# Figures: README.md and docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${MEDIC_PEERS_RUNS:-10}
only=${MEDIC_PEERS_ONLY:-all}
profile=()
[[ ${MEDIC_PEERS_PROFILE:-release} == release ]] && profile=(--release)
missing=()
for c in monit:monit patroni:patroni etcd:etcd-server; do
  command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo test "${profile[@]}" --test peers --test pg_failover --no-run
echo "peers harness: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), profile ${MEDIC_PEERS_PROFILE:-release}"

if [[ $only == all || $only == redis ]]; then
  MEDIC_PEERS_RUNS=$runs cargo test "${profile[@]}" --test peers redis_medic_against_monit \
    -- --ignored --nocapture --exact
fi

if [[ $only == all || $only == postgres ]]; then
  medic=() patroni=()
  for ((i = 1; i <= runs; i++)); do
    m=$(MEDIC_BENCH_RUNS=1 cargo test "${profile[@]}" --test pg_failover failover_benchmark \
      -- --ignored --nocapture --exact 2>&1 | sed -n 's/^run 1: \([0-9.]*\)s$/\1/p')
    p=$(MEDIC_PEERS_RUNS=1 cargo test "${profile[@]}" --test peers patroni_node_loss \
      -- --ignored --nocapture --exact 2>&1 | sed -n 's/^patroni trial.*: \([0-9.]*\) s$/\1/p')
    [[ -n $m && -n $p ]] || { echo "trial $i: a side did not report (medic '$m', Patroni '$p')"; exit 1; }
    echo "  trial $i: medic $m s, Patroni $p s"
    medic+=("$m") patroni+=("$p")
  done
  python3 - "${PATRONI_TIMING:-aggressive}" "${medic[*]}" "${patroni[*]}" <<'PY'
import math, sys
timing, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
def stats(v):
    v = sorted(v)
    return v[0], v[len(v) // 2], v[max(0, math.ceil(len(v) * 0.95) - 1)], v[-1]
print(f"PostgreSQL primary lost -> replica accepts an INSERT ({len(a)} trials each, alternating):")
for name, v in (("medic, pg_failover benchmark config", a), (f"Patroni 3 + etcd, {timing} timing", b)):
    print("  %s: min %.2f s, median %.2f s, p95 %.2f s, max %.2f s" % ((name,) + stats(v)))
print("  ratio medic / peer of the medians: %.3f" % (stats(a)[1] / stats(b)[1]))
PY
fi
