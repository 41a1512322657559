//! What workers report: one line per event, appended to a file per worker process and written
//! at once, so a worker killed a moment later has already told what it saw.
//!
//! Lines are `<event> [key_no] [fence]`. The ambiguous-commit resolutions come from the runner's
//! own log (`settle`), caught by a tracing layer.

use std::{
    collections::BTreeMap,
    fmt,
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{Layer, layer::Context};

/// A worker's event file.
#[derive(Clone)]
pub struct EventLog {
    file: Arc<Mutex<File>>,
}

impl EventLog {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Appends one line, in one write.
    pub fn line(&self, line: &str) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// The runner's messages when it resolves a finalize whose outcome was unknown.
const RESOLVED_COMMITTED: &str = "ambiguous finalize resolved: committed";
const RESOLVED_NOT_COMMITTED: &str = "ambiguous finalize resolved: not committed";
const UNKNOWN: &str = "finalize outcome unknown; resolving";

/// Writes `ambiguous_detected`, `ambiguous_committed` and `ambiguous_not_committed` events when
/// the runner logs them.
pub struct AmbiguityLayer(pub EventLog);

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for AmbiguityLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("safejob_core") {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        match message.0.as_str() {
            RESOLVED_COMMITTED => self.0.line("ambiguous_committed"),
            RESOLVED_NOT_COMMITTED => self.0.line("ambiguous_not_committed"),
            UNKNOWN => self.0.line("ambiguous_detected"),
            _ => {}
        }
    }
}

/// Every worker's events, summed.
#[derive(Debug, Default)]
pub struct Events {
    /// Events by name.
    pub counts: BTreeMap<String, u64>,
    /// `succeeded` reports per key number: how many runs believed they won that key.
    pub wins: BTreeMap<u64, u64>,
}

impl Events {
    /// Reads every `*.events` file in `dir`.
    pub fn read_dir(dir: &Path) -> std::io::Result<Self> {
        let mut events = Self::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "events") {
                events.add(&std::fs::read_to_string(&path)?);
            }
        }
        Ok(events)
    }

    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let Some(name) = parts.next() else { continue };
            *self.counts.entry(name.to_owned()).or_default() += 1;
            if name == "succeeded"
                && let Some(k) = parts.next().and_then(|k| k.parse().ok())
            {
                *self.wins.entry(k).or_default() += 1;
            }
        }
    }

    /// How many `name` events.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}
