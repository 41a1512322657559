//! Canonical JSON of any JSON text that parses: it parses back to the same value and is its own
//! canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safejob_core::fingerprint::canonical_json;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = canonical_json(&value);
    let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert_eq!(back, value);
    assert_eq!(canonical_json(&back), text);
});
