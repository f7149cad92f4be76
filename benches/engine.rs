//! Symptom updates per second on one core, with 10,000 symptoms: the
//! engine's hot path (state machine + publishing the view to verifiers).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medic::engine::Symptoms;
use medic::engine::symptom::Timing;
use medic::observe::Seen;
use tokio::time::Instant;

const SYMPTOMS: usize = 10_000;

fn bench(c: &mut Criterion) {
    let timing = Timing {
        for_: Duration::from_secs(3),
        clear_for: Duration::from_secs(5),
    };
    let start = Instant::now();
    let mut table = Symptoms::new(vec![timing; SYMPTOMS], start);
    // A realistic mix: mostly ok, some failing streaks, some unknown; the
    // pattern differs per symptom so every phase and transition occurs.
    let pattern = |slot: usize, round: u64| -> Seen {
        match (slot as u64 + round) % 16 {
            0..=9 => Seen::Ok,
            10..=14 => Seen::Failing,
            _ => Seen::Unknown,
        }
    };
    let mut round = 0u64;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(SYMPTOMS as u64));
    g.bench_function("symptom_updates_10k", |b| {
        b.iter(|| {
            round += 1;
            let now = start + Duration::from_secs(round);
            let mut transitions = 0usize;
            for slot in 0..SYMPTOMS {
                if table.observe(slot, pattern(slot, round), now).is_some() {
                    transitions += 1;
                }
            }
            black_box(transitions)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
