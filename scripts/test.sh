#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# when it is missing, then runs formatting, lints, every test and the shipped
# rules' validation. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz runs the fuzz targets (fuzz/) below. Its build (about 3
# minutes) runs beside the package installs; the fuzz build waits for it.
fuzz_install_log=$(mktemp)
fuzz_install_pid=
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing: cargo-fuzz (in the background)"
  cargo install --locked cargo-fuzz >"$fuzz_install_log" 2>&1 &
  fuzz_install_pid=$!
fi

# Debian packages the integration tests start privately on ephemeral ports.
declare -A pkg_for=(
  [redis-server]=redis-server
  [systemd-analyze]=systemd
  [kubectl]=kubernetes-client
  [prometheus]=prometheus
  [prometheus-redis-exporter]=prometheus-redis-exporter
  # A real Alertmanager delivers to the authenticated intake (tests/http_security.rs).
  [prometheus-alertmanager]=prometheus-alertmanager
  # The status page is tested in headless Chromium over WebDriver.
  [chromium]=chromium
  [chromedriver]=chromium-driver
  # `medic man` is rendered by groff with warnings on (tests/cli_artifacts.rs).
  [groff]=groff-base
  # The liveness tests make network namespaces and drop packets.
  [ip]=iproute2
  [iptables]=iptables
  # The email tests make a self-signed certificate for their SMTP server.
  [openssl]=openssl
  # The Docker tests run a private dockerd with images imported from busybox.
  [dockerd]=docker.io
  [busybox]=busybox-static
  # kubernetes.backup copies are read back by the real age CLI.
  [age]=age
  # npm installs Azurite below (the Azure Blob backup tests).
  [npm]=npm
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
  # One package that cannot be installed (a held or conflicting one, such
  # as npm beside a nodejs from elsewhere) fails the whole batch: then each
  # is installed alone, so the others still come, and what failed is named.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    for p in "${missing[@]}"; do
      apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
        echo "apt-get could not install $p: the tests that need it will say so"
    done
  fi
fi

# Python packages: moto_server stands in for Route 53 in the DNS failover tests
# and for S3 in the backup tests.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server]"
  python3 -m pip install --quiet 'moto[server]' ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi

# prometheus_client's OpenMetrics parser checks medic's /metrics
# (tests/observability.rs).
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  echo "installing: prometheus-client"
  python3 -m pip install --quiet prometheus-client ||
    python3 -m pip install --quiet --break-system-packages prometheus-client
fi

# aiosmtpd is the real SMTP server (STARTTLS, AUTH) the email notifier's
# tests send to (tests/email.rs).
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "installing: aiosmtpd"
  python3 -m pip install --quiet aiosmtpd ||
    python3 -m pip install --quiet --break-system-packages aiosmtpd
fi

# schemathesis runs generated requests against every route of medic's
# OpenAPI document (tests/openapi.rs).
if ! command -v st >/dev/null 2>&1; then
  echo "installing: schemathesis"
  python3 -m pip install --quiet schemathesis ||
    python3 -m pip install --quiet --break-system-packages schemathesis
fi

# npm packages: Azurite (Microsoft's Azure Storage emulator) is the Azure
# Blob place of the backup tests (tests/backup_places.rs); they find it in
# this cache (tests/common/azurite.rs).
azurite_dir="${XDG_CACHE_HOME:-$HOME/.cache}/medic-test/azurite"
if [[ ! -x $azurite_dir/node_modules/.bin/azurite-blob ]]; then
  echo "installing: azurite (npm, into $azurite_dir)"
  mkdir -p "$azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error azurite >/dev/null
fi


# The run. Every step runs even when an earlier one fails, and every test
# binary runs even when another fails, so one flake hides nothing; the last
# line counts every test of every binary (each of fmt, clippy, the build,
# `medic check`, the fuzz build and each fuzz target's run counts as one;
# `medic test` counts its rule tests), and the exit status is non-zero if
# anything failed.
set +e
passed=0 failed=0 skipped=0
failures=()

fail() {
  failed=$((failed + ${2:-1}))
  failures+=("$1")
  echo "FAILED: $1" >&2
}

# A step that is one check of its own.
step() {
  local name=$1
  shift
  echo "==> $name"
  if "$@"; then passed=$((passed + 1)); else fail "$name"; fi
}

# The number before WORD in LINE ("12 passed" -> 12), or 0.
count() { grep -oE "[0-9]+ $2" <<<"$1" | tail -1 | grep -oE '^[0-9]+' || echo 0; }

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
# Without the optional features (aws, kubernetes): medic still builds
# lint-clean, and refuses the shipped rules where they need one.
step "cargo clippy --no-default-features" cargo clippy --lib --bins --no-default-features -- -D warnings
step "cargo build --bins" cargo build --bins
step "medic check rules/" ./target/debug/medic check --config medic.yaml rules/
# The Docker variants of the shipped rules (rules/docker/, for Docker hosts).
step "medic check rules/docker/" ./target/debug/medic check --config medic.yaml rules/docker/

# `medic test DIR`: its rule tests, counted one by one.
rule_tests() {
  echo "==> medic test $1"
  local out rc last n
  out=$(./target/debug/medic test --config medic.yaml "$1" 2>&1)
  rc=$?
  echo "$out"
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' <<<"$out" | tail -1)
  if [[ -n $last ]]; then
    passed=$((passed + $(count "$last" passed)))
    n=$(count "$last" failed)
    ((n > 0)) && fail "medic test $1 ($n rule tests)" "$n"
    ((n == 0 && rc != 0)) && fail "medic test $1 (exit $rc)"
  else
    fail "medic test $1 (exit $rc, no count)"
  fi
}
rule_tests rules/tests/
rule_tests rules/docker/tests/

log=$(mktemp)
trap 'rm -f "$log" "$fuzz_build_log" "$nofeat_log" "$fuzz_install_log"' EXIT

# libtest's lines in $log ("test result: FAILED. 10 passed; 2 failed;
# 1 ignored; ..."), added up; $1 names the run, $2 is its exit status.
libtest_counts() {
  local line n=0
  while read -r line; do
    passed=$((passed + $(count "$line" passed)))
    skipped=$((skipped + $(count "$line" ignored)))
    n=$((n + $(count "$line" failed)))
  done < <(grep -E '^test result: ' "$log")
  ((n > 0)) && fail "$1: $n tests (see FAILED above)" "$n"
  ((n == 0 && $2 != 0)) && fail "$1 (exit $2: a binary did not build or crashed)"
}

# The fuzz build (cargo-fuzz, ASan, its own target dir fuzz/target) runs
# niced beside the test run: the tests spend most of their time waiting on
# the processes they start, and the build takes that idle core instead of
# a stretch of its own after them. Its output is printed, and its result counted, before the fuzz runs
# below. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets stable
# take them.
export RUSTC_BOOTSTRAP=1
FUZZ_SANITIZER=--sanitizer=address
fuzz_build_log=$(mktemp)
fuzz_build_pid=
# The featureless unit test (the shipped rules refused where they need a
# missing feature) builds in a target dir of its own, niced beside the
# test run too, so it neither waits on nor blocks the main target dir.
nofeat_log=$(mktemp)
nofeat_pid=
fuzz_build_start() {
  if [[ -n $fuzz_install_pid ]]; then
    wait "$fuzz_install_pid" || { cat "$fuzz_install_log"; fail "cargo install cargo-fuzz"; }
    fuzz_install_pid=
  fi
  nice -n 19 cargo fuzz build --dev "$FUZZ_SANITIZER" >"$fuzz_build_log" 2>&1 &
  fuzz_build_pid=$!
  CARGO_TARGET_DIR=target/no-default-features nice -n 19 \
    cargo test --no-default-features --lib features >"$nofeat_log" 2>&1 &
  nofeat_pid=$!
}

# The unit and integration tests. The benchmark targets (benches/, their
# own mains, not libtest) run below.
if command -v cargo-nextest >/dev/null 2>&1; then
  # One process per test, two at a time across all binaries; ignored tests
  # (benchmark harnesses) stay ignored and count as skipped.
  step "cargo nextest build" cargo nextest run --lib --bins --tests --no-run
  fuzz_build_start
  echo "==> cargo nextest run --lib --bins --tests --no-fail-fast"
  cargo nextest run --lib --bins --tests --no-fail-fast 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # "Summary [ 612.3s] 512 tests run: 510 passed, 2 failed, 9 skipped"
  sum=$(grep -E '^ *Summary \[' "$log" | tail -1)
  if [[ -n $sum ]]; then
    run=$(count "$sum" "tests? run")
    ok=$(count "$sum" passed)
    passed=$((passed + ok))
    skipped=$((skipped + $(count "$sum" skipped)))
    if ((run > ok)); then
      # Name them here too: the end of the output is what a CI log keeps.
      names=$(grep -E '^ +(FAIL|SIGSEGV|SIGABRT|SIGKILL|TIMEOUT|LEAK-FAIL) \[' "$log" |
        sed -E 's/^ +([A-Z-]+) \[[^]]*\] +(\([0-9]+\/[0-9]+\) +)?/\1 /' | sort -u | paste -sd ';' -)
      fail "cargo nextest: $((run - ok)) tests: ${names:-see FAIL above}" $((run - ok))
    fi
    ((run == ok && rc != 0)) && fail "cargo nextest (exit $rc)"
  else
    fail "cargo nextest (exit $rc: the tests did not build or run)"
  fi
else
  fuzz_build_start
  echo "==> cargo test --lib --bins --tests --no-fail-fast"
  cargo test --lib --bins --tests --no-fail-fast 2>&1 | tee "$log"
  libtest_counts "cargo test" "${PIPESTATUS[0]}"
fi

# Doctests (nextest does not run them).
echo "==> cargo test --doc"
cargo test --doc 2>&1 | tee "$log"
libtest_counts "cargo test --doc" "${PIPESTATUS[0]}"

# Each benchmark target once, in its quick test mode (as `cargo test
# --all-targets` runs them): one test per target.
echo "==> cargo test --bench '*' --no-fail-fast"
cargo test --bench '*' --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
ran=$(grep -cE '^ *Running benches/' "$log")
bad=$(grep -cE '^ *`--bench [^`]+`' "$log")
passed=$((passed + ran - bad))
((bad > 0)) && fail "benchmarks: $bad targets (see above)" "$bad"
((bad == 0 && rc != 0)) && fail "cargo test --bench (exit $rc)"

# Each fuzz target (fuzz/, libFuzzer through `cargo fuzz`) for
# $MEDIC_FUZZ_SECS (30 s) from its committed seeds, new inputs kept in a
# temp dir; all five at once (they share the two cores: the same 30 s of
# wall time, not 150), one step each, their output printed in turn. Inputs
# up to 64 KiB; a crash, an input that runs over 10 s (a hang), a single
# allocation over 256 MB or an RSS over 2 GB fails the step, and the input
# that did it is left in fuzz/artifacts/. The short runs use the
# unoptimised build (--dev: overflow checks and debug assertions on, and
# about a third of the release build's time, which keeps CI under 30
# minutes); the long runs (scripts/fuzz-long.sh) use the optimised one.
fuzz_secs=${MEDIC_FUZZ_SECS:-30}
fuzz_flags=(-max_len=65536 -timeout=10 -malloc_limit_mb=256 -rss_limit_mb=2048)
fuzz_targets=(alertmanager slack rules config exposition selector)
echo "==> cargo test --no-default-features --lib features (started beside the tests)"
wait "$nofeat_pid"
rc=$?
cat "$nofeat_log"
if ((rc == 0)); then passed=$((passed + 1)); else fail "cargo test --no-default-features --lib features (exit $rc)"; fi
echo "==> cargo fuzz build --dev (started beside the tests)"
wait "$fuzz_build_pid"
rc=$?
cat "$fuzz_build_log"
if ((rc == 0)); then passed=$((passed + 1)); else fail "cargo fuzz build --dev (exit $rc)"; fi
declare -A fuzz_pid fuzz_out fuzz_dir
for target in "${fuzz_targets[@]}"; do
  fuzz_dir[$target]=$(mktemp -d)
  fuzz_out[$target]=$(mktemp)
  cargo fuzz run --dev "$FUZZ_SANITIZER" "$target" "${fuzz_dir[$target]}" "fuzz/corpus/$target" -- \
    "${fuzz_flags[@]}" -max_total_time="$fuzz_secs" -print_final_stats=1 >"${fuzz_out[$target]}" 2>&1 &
  fuzz_pid[$target]=$!
done
for target in "${fuzz_targets[@]}"; do
  wait "${fuzz_pid[$target]}"
  rc=$?
  echo "==> cargo fuzz run $target (${fuzz_secs} s, beside the other targets)"
  cat "${fuzz_out[$target]}"
  rm -rf "${fuzz_dir[$target]}" "${fuzz_out[$target]}"
  if ((rc == 0)); then passed=$((passed + 1)); else fail "cargo fuzz run $target (exit $rc)"; fi
done

if ((${#failures[@]})); then
  echo
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
