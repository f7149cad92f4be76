//! The Prometheus text exposition parser behind `scrape` checks: the whole
//! input is an exposition; every sample is matched against a few
//! selectors compiled once (selector parsing has its own target,
//! `selector`). Any text is samples or an error at a line, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medic::check::exposition::{Selector, parse_value, samples};

fn selectors() -> &'static [Selector] {
    static S: OnceLock<Vec<Selector>> = OnceLock::new();
    S.get_or_init(|| {
        [
            "up",
            r#"{job="node"}"#,
            r#"http_requests_total{method="post",code=~"5..",path!="/healthz",le!~"\\+Inf"}"#,
            r#"{__name__=~"node_.+",instance!=""}"#,
        ]
        .iter()
        .map(|s| Selector::parse(s).expect("a valid selector"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for s in samples(body) {
        match s {
            Ok(s) => {
                for sel in selectors() {
                    let _ = sel.matches(&s);
                }
                let _ = s.label("job");
            }
            Err(e) => assert!(e.line >= 1, "an error names its line"),
        }
    }
    let _ = parse_value(body.lines().next().unwrap_or_default());
});
