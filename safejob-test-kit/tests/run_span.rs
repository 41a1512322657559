//! Both paths of the one pipeline run inside a `safejob.run` span. A test binary of its own: a
//! scoped tracing subscriber must not race with other tests' threads registering callsites.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use safejob_core::{
    IdempotencyKey, KeyError, MemoryStore, Outcome, PerformContext, Runner, SafeJob,
    queue::{EnqueueOptions, GuardedJob, MemoryQueue, Queue, Ran, Registry, Worker},
};
use serde::{Deserialize, Serialize};
use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span,
};

#[derive(Serialize, Deserialize)]
struct Ping {
    id: String,
}

impl SafeJob for Ping {
    type Error = std::io::Error;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["ping", &self.id])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}

impl GuardedJob for Ping {
    const KIND: &'static str = "test.ping";
}

/// Records the name and `key` field of every span entered while it is the default.
#[derive(Clone, Default)]
struct Recorder {
    /// Every span opened, by id - 1: its name and key.
    opened: Arc<Mutex<Vec<(String, String)>>>,
    /// The spans entered, in order.
    entered: Arc<Mutex<Vec<(String, String)>>>,
}

struct Key(String);

impl Visit for Key {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "key" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        let mut key = Key(String::new());
        span.record(&mut key);
        let mut opened = self.opened.lock().unwrap();
        opened.push((span.metadata().name().to_owned(), key.0));
        span::Id::from_u64(opened.len() as u64)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, id: &span::Id) {
        let span = self.opened.lock().unwrap()[id.into_u64() as usize - 1].clone();
        self.entered.lock().unwrap().push(span);
    }
    fn exit(&self, _: &span::Id) {}
}

/// Both paths run inside one `safejob.run` span naming the key's digest: a queued guarded job's
/// run and the Runner's.
///
/// Catches: the span removed from `pipeline::run`, or created but not entered (tried:
/// `drop(span)` instead of `span.enter()`), or opened only by the Runner, as before.
#[test]
fn both_paths_run_in_a_safejob_run_span() {
    let store = Arc::new(MemoryQueue::new());
    let queue = Queue::new(store.clone());
    let mut registry = Registry::new();
    registry.register_guarded::<Ping>();
    let worker = Worker::builder(store, registry).build().unwrap();
    let queued = Ping {
        id: "queued".into(),
    };
    let direct = Ping {
        id: "direct".into(),
    };
    queue
        .enqueue_guarded(&queued, &EnqueueOptions::new())
        .unwrap();
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        assert_eq!(worker.run_once().unwrap()[0].ran, Ran::Succeeded);
        let runner = Runner::builder(Arc::new(MemoryStore::new()))
            .build()
            .unwrap();
        runner.run(&direct).unwrap();
    });
    let runs: Vec<String> = recorder
        .entered
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "safejob.run")
        .map(|(_, key)| key.clone())
        .collect();
    let digest = |job: &Ping| job.key().unwrap().digest().to_string();
    assert_eq!(runs, vec![digest(&queued), digest(&direct)]);
}
