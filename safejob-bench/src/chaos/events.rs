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

/// The runner's messages (`settle` in `safejob-core`'s pipeline) when it meets a finalize whose
/// outcome is unknown, and how each ends, with the event each one writes. Every detection ends
/// in exactly one of the five, unless the worker dies first.
const AMBIGUITY_MESSAGES: [(&str, &str); 6] = [
    ("finalize outcome unknown; resolving", DETECTED),
    ("ambiguous finalize resolved: committed", COMMITTED),
    ("ambiguous finalize resolved: not committed", NOT_COMMITTED),
    (
        "ambiguous finalize resolved: stale under another fence",
        SETTLED_STALE,
    ),
    (
        "ambiguous finalize unresolved: the resolving release failed",
        RELEASE_FAILED,
    ),
    (
        "ambiguous finalize unresolved: the resolving read failed",
        READ_FAILED,
    ),
];

/// Event: a finalize's outcome was unknown and the runner started resolving it.
pub const DETECTED: &str = "ambiguous_detected";
/// Event: resolved; the finalize had committed under this attempt's fence.
pub const COMMITTED: &str = "ambiguous_committed";
/// Event: resolved; the finalize had not committed (the fenced release applied).
pub const NOT_COMMITTED: &str = "ambiguous_not_committed";
/// Event: resolved; the row had moved on under another fence (taken over, or finished by
/// another attempt): not ours.
pub const SETTLED_STALE: &str = "ambiguous_settled_stale";
/// Event: not resolved; the resolving release failed (the store error is returned).
pub const RELEASE_FAILED: &str = "ambiguous_release_failed";
/// Event: not resolved; the release was stale and the re-read failed.
pub const READ_FAILED: &str = "ambiguous_read_failed";
/// The events that end a detection.
pub const ENDINGS: [&str; 5] = [
    COMMITTED,
    NOT_COMMITTED,
    SETTLED_STALE,
    RELEASE_FAILED,
    READ_FAILED,
];

/// Writes the ambiguity events ([`DETECTED`] and each ending) when the runner logs them.
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
        if let Some((_, name)) = AMBIGUITY_MESSAGES
            .iter()
            .find(|(text, _)| *text == message.0)
        {
            self.0.line(name);
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
    /// Per worker process (its event file's stem, `w<slot>.<incarnation>`): detections with no
    /// ending in its file, which only a process that died while resolving may leave.
    pub unended: BTreeMap<String, u64>,
}

impl Events {
    /// Reads every `*.events` file in `dir`.
    pub fn read_dir(dir: &Path) -> std::io::Result<Self> {
        let mut events = Self::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "events") {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                events.add(&stem, &std::fs::read_to_string(&path)?);
            }
        }
        Ok(events)
    }

    /// Adds the events of `worker`'s file.
    pub fn add(&mut self, worker: &str, text: &str) {
        let (mut detected, mut ended) = (0u64, 0u64);
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let Some(name) = parts.next() else { continue };
            *self.counts.entry(name.to_owned()).or_default() += 1;
            if name == DETECTED {
                detected += 1;
            } else if ENDINGS.contains(&name) {
                ended += 1;
            }
            if name == "succeeded"
                && let Some(k) = parts.next().and_then(|k| k.parse().ok())
            {
                *self.wins.entry(k).or_default() += 1;
            }
        }
        // One worker process runs one job at a time: a detection it leaves without an ending is
        // its last event, cut short by its death. (More endings than detections cannot be
        // explained either; `Ambiguity::reconcile` sees them as a sum that does not add up.)
        if detected > ended {
            *self.unended.entry(worker.to_owned()).or_default() += detected - ended;
        }
    }

    /// How many `name` events.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// The ambiguous commits of a run, split by how each ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ambiguity {
    /// Finalizes whose outcome the runner did not know ([`DETECTED`]).
    pub detected: u64,
    /// Resolved as committed under the worker's fence.
    pub committed: u64,
    /// Resolved as not committed.
    pub not_committed: u64,
    /// Settled as stale: the row had moved on under another fence.
    pub settled_stale: u64,
    /// The worker was killed (by the nemesis, or at the hard time limit) while resolving.
    pub worker_killed: u64,
    /// The resolving release failed.
    pub release_failed: u64,
    /// The resolving re-read failed.
    pub read_failed: u64,
}

impl Ambiguity {
    /// The split of `events`; `killed` names the worker processes (event file stems) the run
    /// killed. A detection left without an ending by a process that was not killed is counted
    /// nowhere, so the sum no longer reconciles.
    pub fn of(events: &Events, killed: &std::collections::BTreeSet<String>) -> Self {
        Self {
            detected: events.count(DETECTED),
            committed: events.count(COMMITTED),
            not_committed: events.count(NOT_COMMITTED),
            settled_stale: events.count(SETTLED_STALE),
            worker_killed: events
                .unended
                .iter()
                .filter(|(worker, _)| killed.contains(*worker))
                .map(|(_, n)| n)
                .sum(),
            release_failed: events.count(RELEASE_FAILED),
            read_failed: events.count(READ_FAILED),
        }
    }

    /// `None` when every detection is accounted for exactly once (detected = committed + not
    /// committed + settled stale + worker killed + release failed + read failed); otherwise the
    /// violation to report.
    pub fn reconcile(&self) -> Option<String> {
        let accounted = self.committed
            + self.not_committed
            + self.settled_stale
            + self.worker_killed
            + self.release_failed
            + self.read_failed;
        (accounted != self.detected).then(|| {
            format!(
                "ambiguous commits do not reconcile: {} detected, {accounted} accounted for \
                 ({} committed, {} not committed, {} settled stale, {} worker killed, \
                 {} release failed, {} read failed)",
                self.detected,
                self.committed,
                self.not_committed,
                self.settled_stale,
                self.worker_killed,
                self.release_failed,
                self.read_failed
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn events(files: &[(&str, &str)]) -> Events {
        let mut events = Events::default();
        for (worker, text) in files {
            events.add(worker, text);
        }
        events
    }

    /// Every ending counted in its own counter, and a killed worker's cut-short detection
    /// counted as killed: the sum reconciles. Caught when checked: `add` not counting endings
    /// (`ended += 1` removed: the killed worker's file then leaves two detections unended).
    #[test]
    fn each_ending_has_its_counter_and_the_sum_reconciles() {
        let e = events(&[
            (
                "w0.0",
                "started\nambiguous_detected\nambiguous_committed\nambiguous_detected\nambiguous_not_committed\n",
            ),
            (
                "w1.0",
                "ambiguous_detected\nambiguous_settled_stale\nambiguous_detected\nambiguous_release_failed\n",
            ),
            (
                "w2.0",
                "ambiguous_detected\nambiguous_read_failed\nambiguous_detected\n",
            ),
        ]);
        let killed = BTreeSet::from(["w2.0".to_owned()]);
        let a = Ambiguity::of(&e, &killed);
        assert_eq!(
            a,
            Ambiguity {
                detected: 6,
                committed: 1,
                not_committed: 1,
                settled_stale: 1,
                worker_killed: 1,
                release_failed: 1,
                read_failed: 1,
            }
        );
        assert_eq!(a.reconcile(), None);
    }

    /// A detection left without an ending by a worker that was not killed is unexplained: the
    /// run must fail. Caught when checked: `Ambiguity::of` counting `worker_killed` over every
    /// unended file, killed or not (the sum then adds up).
    #[test]
    fn an_unended_detection_in_a_live_worker_does_not_reconcile() {
        let e = events(&[("w0.0", "ambiguous_detected\ndrained\n")]);
        let a = Ambiguity::of(&e, &BTreeSet::new());
        assert_eq!(a.worker_killed, 0);
        let violation = a.reconcile().expect("a violation");
        assert!(violation.contains("1 detected, 0 accounted"), "{violation}");
    }

    /// An ending with no detection does not add up either. Caught when checked: `reconcile`
    /// testing `accounted < detected` instead of `!=`.
    #[test]
    fn an_ending_without_a_detection_does_not_reconcile() {
        let e = events(&[("w0.0", "ambiguous_committed\n")]);
        assert!(Ambiguity::of(&e, &BTreeSet::new()).reconcile().is_some());
    }

    /// The layer maps each of the runner's messages to its own event, and every ending has a
    /// message. Caught when checked: two messages mapped to one event (the stale message mapped
    /// to `COMMITTED`). A message text changed in `safejob-core`'s `settle` and not here shows
    /// in a proxied run instead: its detections end without an event, and the sum does not
    /// reconcile.
    #[test]
    fn the_runners_messages_map_to_distinct_events() {
        let names: BTreeSet<&str> = AMBIGUITY_MESSAGES.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), AMBIGUITY_MESSAGES.len());
        assert!(ENDINGS.iter().all(|e| names.contains(e)) && names.contains(DETECTED));
    }
}
