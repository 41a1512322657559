//! Saying that a test was skipped, where the person running `cargo test` sees it.

use std::{fmt::Display, io::Write};

/// Prints `skipped: <reason>` on the process's standard error.
///
/// The test harness captures `println!` and `eprintln!` of passing tests, so a skip reported that
/// way is invisible in a plain `cargo test`. This writes to the stderr handle directly, which the
/// harness does not capture: a suite skipped for want of a database says so in the run's output.
///
/// ```
/// if std::env::var("SAFEJOB_TEST_POSTGRES_URL").is_err() {
///     safejob_test_kit::report_skip("SAFEJOB_TEST_POSTGRES_URL not set");
/// }
/// ```
pub fn report_skip(reason: impl Display) {
    let mut stderr = std::io::stderr().lock();
    // A failed write to stderr has nowhere better to be reported.
    let _ = writeln!(stderr, "skipped: {reason}");
}
