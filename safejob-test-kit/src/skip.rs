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

/// The environment variable that turns a missing or unreachable backend into a test failure
/// when it is `1` (CI sets it, so a suite can never pass by skipping).
pub const REQUIRE_BACKENDS: &str = "SAFEJOB_REQUIRE_BACKENDS";

/// Whether [`REQUIRE_BACKENDS`] is `1`.
pub fn backends_required() -> bool {
    std::env::var(REQUIRE_BACKENDS).is_ok_and(|v| v == "1")
}

/// A backend cannot be tested because of `reason`: panics when [`backends_required`], otherwise
/// prints `skipped: <reason>` (see [`report_skip`]) and the caller returns without testing.
pub fn skip_unless_required(reason: impl Display) {
    if backends_required() {
        panic!("{REQUIRE_BACKENDS}=1 but {reason}");
    }
    report_skip(reason);
}

/// The non-empty URL in the environment variable `var`, or `None` after
/// [`skip_unless_required`] said it is not set.
///
/// ```no_run
/// let Some(url) = safejob_test_kit::backend_url("SAFEJOB_TEST_NO_SUCH_URL") else {
///     return; // "skipped: SAFEJOB_TEST_NO_SUCH_URL is not set" (a panic if backends are required)
/// };
/// # let _ = url;
/// ```
pub fn backend_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip_unless_required(format_args!("{var} is not set"));
            None
        }
    }
}
