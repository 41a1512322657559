//! Keys from arbitrary text, and from arbitrary parts (the input split at 0xFF bytes): a key or
//! a typed error, never a panic; a key from parts decodes back to its parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safejob_core::IdempotencyKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = IdempotencyKey::new(text) {
            assert_eq!(key.as_str(), text);
        }
    }
    let parts: Vec<String> = data
        .split(|b| *b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if let Ok(key) = IdempotencyKey::from_parts(&parts) {
        // Undo the escaping: the parts come back exactly (from_parts is injective).
        let mut back = vec![String::new()];
        let mut chars = key.as_str().chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => back.last_mut().unwrap().extend(chars.next()),
                ':' => back.push(String::new()),
                c => back.last_mut().unwrap().push(c),
            }
        }
        assert_eq!(back, parts);
    }
});
