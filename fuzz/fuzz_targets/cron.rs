//! Cron parsing: any text is a trigger or a typed error; a trigger's next run times from a
//! fixed instant are strictly increasing (or it never fires, a typed error too).
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use safejob_core::schedule::Trigger;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(trigger) = Trigger::cron("fuzz", text, "Europe/Berlin") else {
        return;
    };
    let mut t = Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap();
    for _ in 0..3 {
        match trigger.next_after("fuzz", t, false) {
            Ok(Some(next)) => {
                assert!(next > t, "{text:?}: {next} after {t}");
                t = next;
            }
            _ => break,
        }
    }
});
