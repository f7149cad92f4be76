//! `medic test` speed: one test that simulates a whole day of 1 s checks
//! (86,400 observations of each symptom, an outage in the middle, a
//! restart, verification, resolution) against the shipped Redis rules.
//! Issue 7 asks for "well under a second".

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("day.yaml");
    std::fs::write(
        &test,
        format!(
            "rule_files: [{rules}]\n\
             tests:\n\
             \x20 - name: one day, one outage at noon\n\
             \x20   mode: enforce\n\
             \x20   interval: 1s\n\
             \x20   checks:\n\
             \x20     redis_down: ok x43200 fail x30 ok x43170\n\
             \x20   actions:\n\
             \x20     restart-redis: ok\n\
             \x20   expect:\n\
             \x20     - at: 12h10s\n\
             \x20       incidents:\n\
             \x20         - scenario: redis-cache-failure\n\
             \x20           state: remediating\n\
             \x20     - at: 24h\n\
             \x20       incidents:\n\
             \x20         - scenario: redis-cache-failure\n\
             \x20           state: resolved\n",
            rules = root.join("rules/redis-cache-failure.yaml").display()
        ),
    )
    .unwrap();
    let config = root.join("medic.yaml");
    // The test must pass, or the figure means nothing.
    let report = medic::ruletest::run_file(&test, &config);
    assert!(
        report.errors.is_empty() && report.failed.is_empty() && report.passed == 1,
        "{report:?}"
    );
    let mut g = c.benchmark_group("ruletest");
    g.sample_size(10);
    g.bench_function("one_simulated_day_1s_checks", |b| {
        b.iter(|| medic::ruletest::run_file(&test, &config))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
