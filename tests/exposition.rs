//! The exposition parser on real exporters' output (shared fixtures), and
//! the measurement behind not using `prometheus-parse` (docs/design.md, "Why medic parses the
//! exposition format itself").

use std::path::PathBuf;

use medic::check::exposition::{self, Entry, Parser};

/// The shared fixtures (`MEDIC_FIXTURES`, default `/work/shared/fixtures`).
fn fixtures() -> PathBuf {
    std::env::var_os("MEDIC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"))
}

fn exposition_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["exposition/prometheus", "exposition/node_exporter"] {
        for e in std::fs::read_dir(fixtures().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    assert_eq!(files.len(), 4, "fixtures moved? {files:?}");
    files
}

/// Sample lines counted independently of any parser: every line that is
/// neither blank nor a comment.
fn sample_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count()
}

#[test]
fn every_fixture_parses_with_every_sample() {
    for f in exposition_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut samples = 0;
        let mut types = 0;
        for e in Parser::new(&text) {
            match e.unwrap_or_else(|e| panic!("{}: {e}", f.display())) {
                Entry::Sample(s) => {
                    samples += 1;
                    assert!(!s.name.is_empty());
                }
                Entry::Type { .. } => types += 1,
                Entry::Help { .. } => {}
            }
        }
        assert_eq!(samples, sample_lines(&text), "{}", f.display());
        let declared = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, declared, "{}", f.display());
    }
}

#[test]
fn fixture_values_and_labels_read_right() {
    let text = std::fs::read_to_string(fixtures().join("exposition/node_exporter/e2e-output.txt"))
        .unwrap();
    let s: Vec<_> = exposition::samples(&text).map(Result::unwrap).collect();
    let find = |name: &str, label: (&str, &str)| {
        s.iter()
            .find(|x| x.name == name && x.label(label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("{name} {label:?}"))
    };
    assert_eq!(
        find("node_buddyinfo_blocks", ("zone", "DMA32")).value,
        759.0
    );
    let text =
        std::fs::read_to_string(fixtures().join("exposition/prometheus/alltypes.237mfs.prom.txt"))
            .unwrap();
    let s: Vec<_> = exposition::samples(&text).map(Result::unwrap).collect();
    let inf = s
        .iter()
        .find(|x| {
            x.name == "go_gc_heap_allocs_by_size_bytes_bucket" && x.label("le") == Some("+Inf")
        })
        .unwrap();
    assert_eq!(inf.value, 4.4046288803e10);
    let text =
        std::fs::read_to_string(fixtures().join("exposition/prometheus/promtestdata.txt")).unwrap();
    assert!(
        exposition::samples(&text)
            .map(Result::unwrap)
            .any(|x| x.value.is_nan() && x.label("quantile").is_some()),
        "summaries with NaN quantiles"
    );
}

/// The tricky-but-valid exposition comparison in docs/design.md uses.
const TRICKY: &str = r#"# HELP tricky_total A help text with \\ and \n escapes.
# TYPE tricky_total counter
tricky_total{path="/a,b"} 1
tricky_total{query="x=1"} 2
tricky_total{brace="}"} 3
tricky_total{msg="say \"hi\""} 4
tricky_total{dir="C:\\temp"} 5
tricky_total{multi="line\nbreak"} 6
job:requests:rate5m{job="api"} 7
with_timestamp 8 1700000000000
nan_value NaN
inf_value +Inf
"#;

#[test]
fn tricky_input_keeps_every_sample_and_label() {
    let s: Vec<_> = exposition::samples(TRICKY).map(Result::unwrap).collect();
    assert_eq!(s.len(), 10);
    let want = [
        ("path", "/a,b"),
        ("query", "x=1"),
        ("brace", "}"),
        ("msg", "say \"hi\""),
        ("dir", "C:\\temp"),
        ("multi", "line\nbreak"),
    ];
    for (i, (k, v)) in want.iter().enumerate() {
        assert_eq!(s[i].label(k), Some(*v), "sample {}", i + 1);
        assert_eq!(s[i].value, (i + 1) as f64);
    }
    assert_eq!(s[6].name, "job:requests:rate5m");
    assert_eq!(s[7].timestamp_ms, Some(1_700_000_000_000));
    assert!(s[8].value.is_nan());
    assert_eq!(s[9].value, f64::INFINITY);
}

/// What `prometheus-parse` 0.2.5 makes of the same inputs. Run with
/// `cargo test --test exposition -- --ignored --nocapture`; it prints the
/// table in docs/design.md and asserts our parser's side of it.
#[test]
#[ignore]
fn compare_with_prometheus_parse() {
    let lines = |t: &str| {
        t.lines()
            .map(|l| Ok(l.to_string()))
            .collect::<Vec<std::io::Result<String>>>()
    };
    println!("| input | sample lines | medic | prometheus-parse (values kept) |");
    println!("| --- | --- | --- | --- |");
    let mut inputs: Vec<(String, String)> = exposition_files()
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&f).unwrap())
        })
        .collect();
    inputs.push(("tricky (README)".into(), TRICKY.into()));
    for (name, text) in &inputs {
        let ours = exposition::samples(text).map(Result::unwrap).count();
        assert_eq!(ours, sample_lines(text));
        let theirs = prometheus_parse::Scrape::parse(lines(text).into_iter()).unwrap();
        let kept: usize = theirs
            .samples
            .iter()
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => h.len(),
                prometheus_parse::Value::Summary(q) => q.len(),
                _ => 1,
            })
            .sum();
        println!(
            "| {name} | {} | {ours} | {kept} ({} sample objects) |",
            sample_lines(text),
            theirs.samples.len()
        );
    }
    let theirs = prometheus_parse::Scrape::parse(lines(TRICKY).into_iter()).unwrap();
    println!("\nprometheus-parse on the tricky input:");
    for s in &theirs.samples {
        let mut l: Vec<_> = s.labels.iter().collect();
        l.sort();
        println!("  {} {:?} {:?}", s.metric, l, s.value);
    }
}
