//! The daemon config (`medic.yaml`), parsed and validated, with a few
//! `MEDIC_` environment overrides taken from the input: any text is a
//! config or diagnostics, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use medic::config::load::load_str_with_env;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Lines `#env MEDIC_NAME=value` (YAML comments) are overrides too.
    let env: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#env "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Err(d) = load_str_with_env("medic.yaml", text, env) {
        let _ = d.to_string();
    }
});
