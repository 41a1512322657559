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
