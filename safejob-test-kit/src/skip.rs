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

/// A backend could not be tested while [`REQUIRE_BACKENDS`] is `1`: the test must fail, not
/// pass by skipping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{REQUIRE_BACKENDS}=1 but {reason}")]
pub struct BackendRequired {
    /// Why the backend cannot be tested.
    pub reason: String,
}

/// A backend cannot be tested because of `reason`: [`BackendRequired`] when
/// [`backends_required`], otherwise prints `skipped: <reason>` (see [`report_skip`]) and returns
/// `Ok`, and the caller returns without testing. The non-panicking form of
/// [`skip_unless_required`], for helpers that return errors.
pub fn skip_or_require(reason: impl Display) -> Result<(), BackendRequired> {
    if backends_required() {
        return Err(BackendRequired {
            reason: reason.to_string(),
        });
    }
    report_skip(reason);
    Ok(())
}

/// A backend cannot be tested because of `reason`: panics when [`backends_required`], otherwise
/// prints `skipped: <reason>` (see [`report_skip`]) and the caller returns without testing.
pub fn skip_unless_required(reason: impl Display) {
    if let Err(required) = skip_or_require(reason) {
        panic!("{required}");
    }
}

/// The non-empty URL in the environment variable `var`; `Ok(None)` after [`skip_or_require`]
/// printed that it is not set, or [`BackendRequired`].
///
/// ```
/// // SAFEJOB_REQUIRE_BACKENDS=1 makes this an error instead of a skip.
/// match safejob_test_kit::skip::try_backend_url("SAFEJOB_TEST_NO_SUCH_URL") {
///     Ok(Some(url)) => { /* test on url */ }
///     Ok(None) => { /* printed "skipped: SAFEJOB_TEST_NO_SUCH_URL is not set" */ }
///     Err(required) => assert!(required.to_string().ends_with("is not set")),
/// }
/// ```
pub fn try_backend_url(var: &str) -> Result<Option<String>, BackendRequired> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        _ => skip_or_require(format_args!("{var} is not set")).map(|()| None),
    }
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
    try_backend_url(var).unwrap_or_else(|required| panic!("{required}"))
}
