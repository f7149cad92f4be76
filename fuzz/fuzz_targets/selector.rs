//! The series selectors of `scrape` checks, parsed and matched: the first
//! line is a selector (its regular expressions compiled, which is most of
//! each execution's time), the rest an exposition whose samples it is
//! matched against. Any text is a selector or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic::check::exposition::{Selector, parse_value, samples};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sel, body) = text.split_once('\n').unwrap_or((text, ""));
    let sel = Selector::parse(sel).ok();
    for s in samples(body) {
        match s {
            Ok(s) => {
                if let Some(sel) = &sel {
                    let _ = sel.matches(&s);
                }
                let _ = s.label("job");
            }
            Err(e) => assert!(e.line >= 1, "an error names its line"),
        }
    }
    let _ = parse_value(body.lines().next().unwrap_or_default());
});
