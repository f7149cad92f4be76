//! A scenario rule file, loaded and validated against the shipped
//! medic.yaml (so references to its targets and escalation policies
//! resolve): any text is a scenario or diagnostics, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use medic::config::{Config, load::load_str as load_config};
use medic::rules::load::load_str;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    load_config("medic.yaml", include_str!("../../medic.yaml"))
        .expect("the shipped medic.yaml loads")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(d) = load_str("fuzz.yaml", text, &CONFIG) {
        // Every problem is a diagnostic that names its place.
        let _ = d.to_string();
    }
});
