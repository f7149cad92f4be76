//! The Alertmanager webhook body (`POST /api/v1/alerts/alertmanager`):
//! any bytes are a parsed delivery or an error, never a panic.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use medic::server::alertmanager::parse;

fuzz_target!(|body: &[u8]| {
    let now: DateTime<Utc> = DateTime::from_timestamp(1_772_323_200, 0).unwrap();
    if let Ok(alerts) = parse(body, now) {
        for a in &alerts {
            // The fingerprint is the alert's identity: a function of its labels.
            assert_eq!(a.fingerprint, medic::observe::fingerprint(&a.labels));
        }
    }
});
