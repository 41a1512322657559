//! Database URL parsing: any text is a URL or a typed error with a message, never a panic. A
//! pool of size 0 is refused after the URL parsed and before any connection is tried, so nothing
//! connects. (That no password shows is a property test in safejob-diesel's `backend/url.rs`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use safejob_diesel::{ConnectError, DieselStore};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match DieselStore::builder(&text).max_size(0).build() {
        Err(ConnectError::InvalidPool { .. }) => {} // the URL parsed
        Err(error) => assert!(!error.to_string().is_empty()),
        Ok(_) => panic!("a pool of size 0 was built"),
    }
});
