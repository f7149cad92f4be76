//! The Slack interaction route's input: the signature check over the
//! request (timestamp, signature and body as sent), then the form body with
//! its JSON `payload`. Any bytes are refused with a reason or parsed, never
//! a panic. The first line is `TIMESTAMP SIGNATURE`, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic::server::slack::{parse, sign, verify};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const NOW: i64 = 1_772_323_200;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let head = String::from_utf8_lossy(head);
    let (ts, sig) = head.split_once(' ').unwrap_or((&head, ""));
    let _ = verify(SECRET, Some(ts), Some(sig), body, NOW);
    // A correctly signed request gets as far as the body parser.
    let good = sign(SECRET, &NOW.to_string(), body);
    assert!(verify(SECRET, Some(&NOW.to_string()), Some(&good), body, NOW).is_ok());
    let _ = parse(body);
});
