//! Exposition parsing on the largest shared fixture (node_exporter's full
//! `/metrics`, 377 kB, 3,027 samples): MB/s; samples/s follow from the
//! time per iteration. `prometheus-parse` is measured alongside for the
//! comparison in docs/design.md. Fixtures: `MEDIC_FIXTURES` (default
//! `/work/shared/fixtures`).

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medic::check::exposition::{self, Selector};

fn fixture() -> String {
    let dir = std::env::var_os("MEDIC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"));
    std::fs::read_to_string(dir.join("exposition/node_exporter/e2e-output.txt")).unwrap()
}

fn bench(c: &mut Criterion) {
    let text = fixture();
    let n = exposition::samples(&text).count();
    let mut g = c.benchmark_group(format!("exposition/node_exporter ({n} samples)"));
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("medic: parse every sample", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for s in exposition::samples(std::hint::black_box(&text)) {
                sum += s.unwrap().value;
            }
            sum
        })
    });
    let sel = Selector::parse(r#"node_cpu_seconds_total{mode=~"idle|iowait"}"#).unwrap();
    g.bench_function("medic: parse and match a selector", |b| {
        b.iter(|| {
            exposition::samples(std::hint::black_box(&text))
                .filter(|s| sel.matches(s.as_ref().unwrap()))
                .count()
        })
    });
    g.bench_function("prometheus-parse", |b| {
        b.iter(|| {
            let lines = std::hint::black_box(&text)
                .lines()
                .map(|l| Ok(l.to_string()));
            prometheus_parse::Scrape::parse(lines)
                .unwrap()
                .samples
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
