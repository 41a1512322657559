//! The peers we measure our queue against, on the same PostgreSQL server, each in a fresh
//! database of its own made for the run ([`crate::scratch`]) so that neither ever touches our
//! tables nor the other's, and neither meets an earlier run's rows:
//!
//! * [`river`] — River for Rust (`riverqueue` 0.5: tokio + sqlx), schema `river_bench` made by
//!   River's own migrations;
//! * [`fang`] — fang 0.11's blocking queue (diesel + r2d2) and worker pool, table `fang_tasks`
//!   from fang's own embedded migrations;
//! * [`apalis`] — apalis 1.0's PostgreSQL storage (`apalis-postgres`: tokio + sqlx), schema
//!   `apalis` made by apalis' own migrations. apalis keeps finished rows (`Done`) and has no
//!   deleting mode, so it runs with `--retention keep` only.
//!
//! Each step is counted by a [`crate::counters::Meter`] on the peer's database; the bench's own
//! "is it done yet" polls inside that database are counted and taken off.

pub mod apalis;
pub mod fang;
pub mod river;

use crate::{
    counters::{Counts, Mark, Meter},
    driver::BenchError,
};

/// Starts counting a step, if it is measured (`meter` is `None` during the warm-up).
pub(crate) fn begin(meter: &mut Option<&mut Meter>) -> Result<Option<Mark>, BenchError> {
    Ok(meter.as_mut().map(|m| m.begin()).transpose()?)
}

/// The counts since `mark` (nothing counted when the step is not measured).
pub(crate) fn end(
    meter: &mut Option<&mut Meter>,
    mark: Option<Mark>,
) -> Result<Counts, BenchError> {
    match (meter.as_mut(), mark) {
        (Some(m), Some(mark)) => Ok(m.end(mark)?),
        _ => Ok(Counts::default()),
    }
}
