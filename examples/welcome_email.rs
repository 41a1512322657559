//! The action log on SQLite: welcome e-mails published at sign-up, dispatched five minutes later,
//! once per user, however many dispatchers run.
//!
//! Run it from the repository root: `cargo run --example welcome_email`. Nothing to install: the
//! database is a SQLite file under `target/`.
//!
//! 1. Five users sign up; each sign-up publishes an `email.welcome` action due in five minutes,
//!    with the idempotency key `welcome/<user>`. The sign-up handler is retried for two of them,
//!    so they publish twice: the second publish inserts nothing and answers the first action.
//!    One user is on a trial plan, and the action carries the rule `payload.plan != "trial"`,
//!    checked again when it is dispatched.
//! 2. A dispatcher runs at once: nothing is due yet.
//! 3. The queue's clock is moved five minutes forward (the test aid `advance_clock_for_tests`,
//!    standing in for waiting), and two dispatchers race over the due actions.
//! 4. A worker sends the e-mails: one per user, the trial user skipped with its rule recorded.
//! 5. The action rows are printed.

use std::{error::Error, path::PathBuf, sync::Arc, time::Duration};

use safejob_core::{
    action::{
        ActionFilter, ActionRecord, ActionStore, Dispatch, Dispatcher, Processor, ProcessorError,
        Published, Publisher,
    },
    queue::{
        EnqueueOptions, JobFilter, JobQuery, NewJob, QueueJob, QueueStore, Registry, WorkContext,
        WorkError, Worker,
    },
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The job an action becomes.
#[derive(Serialize, Deserialize)]
struct SendWelcome {
    user: u64,
    email: String,
}

impl QueueJob for SendWelcome {
    const KIND: &'static str = "email.send_welcome";
    type Error = std::convert::Infallible;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        println!(
            "  sending the welcome e-mail to user {} <{}>",
            self.user, self.email
        );
        Ok(())
    }
}

/// Turns `email.welcome` actions into `SendWelcome` jobs.
struct WelcomeEmails;

impl Processor for WelcomeEmails {
    fn supports(&self, action_type: &str) -> bool {
        action_type == "email.welcome"
    }

    fn to_job(&self, action: &ActionRecord) -> Result<Dispatch, ProcessorError> {
        let user = action.payload["user"]
            .as_u64()
            .ok_or_else(|| ProcessorError::Permanent("the payload has no user".into()))?;
        let email = action.payload["email"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let job = NewJob::of(&SendWelcome { user, email }, &EnqueueOptions::new())
            .map_err(|e| ProcessorError::Permanent(e.to_string()))?;
        Ok(Dispatch::Job(job))
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        path.display()
    ))?);
    store.migrate()?;
    let queue = Arc::new(DieselQueue::new(store));

    // 1. Sign-ups.
    let publisher = Publisher::new(queue.clone());
    for user in 1..=5u64 {
        let plan = if user == 4 { "trial" } else { "pro" };
        let publish = || {
            publisher
                .action("email.welcome")
                .delay(Duration::from_secs(5 * 60))
                .payload_value(
                    json!({"user": user, "email": format!("user{user}@example.com"), "plan": plan}),
                )
                .idempotency(&format!("welcome/{user}"))
                .rule(r#"payload.plan != "trial""#)
                .publish()
        };
        let first = publish()?;
        print!("user {user}: {first:?}");
        if user % 2 == 0 {
            // The sign-up handler was retried: the same key publishes nothing new.
            let again = publish()?;
            print!(", retried: {again:?}");
            if again != Published::Existing(first.id().ok_or("no id")?) {
                return Err("a retried publish inserted a second action".into());
            }
        }
        println!();
    }

    // 2. Nothing is due yet.
    let processor =
        || Dispatcher::builder(queue.clone() as Arc<dyn ActionStore>).processor(WelcomeEmails);
    let early = processor().id("early").build().dispatch(100)?;
    println!("dispatch at sign-up: {} claimed", early.claimed);

    // 3. Five minutes later, two dispatchers race.
    queue.advance_clock_for_tests(Duration::from_secs(5 * 60 + 1));
    let (a, b) = (
        Arc::new(processor().id("dispatcher-a").build()),
        Arc::new(processor().id("dispatcher-b").build()),
    );
    let reports = std::thread::scope(|s| {
        let ha = s.spawn(|| a.dispatch(2).and_then(|r1| Ok((r1, a.dispatch(100)?))));
        let hb = s.spawn(|| b.dispatch(2).and_then(|r1| Ok((r1, b.dispatch(100)?))));
        (ha.join(), hb.join())
    });
    let (Ok(ra), Ok(rb)) = reports else {
        return Err("a dispatcher panicked".into());
    };
    for (name, (r1, r2)) in [("a", ra?), ("b", rb?)] {
        println!(
            "dispatcher-{name}: enqueued {}, skipped by a rule {}",
            r1.enqueued + r2.enqueued,
            r1.skipped + r2.skipped
        );
    }

    // 4. The e-mails.
    let mut registry = Registry::new();
    registry.register::<SendWelcome>();
    let worker = Worker::builder(queue.clone(), registry).build()?;
    while !worker.run_once()?.is_empty() {}
    let jobs = queue.list(&JobQuery {
        filter: JobFilter::default().kind(SendWelcome::KIND),
        after: None,
        limit: 100,
    })?;
    let mut users: Vec<u64> = jobs
        .iter()
        .filter_map(|j| j.payload["user"].as_u64())
        .collect();
    users.sort_unstable();
    println!("e-mail jobs: {} for users {users:?}", jobs.len());
    if users != [1, 2, 3, 5] {
        return Err(format!("expected one e-mail each for users 1, 2, 3, 5: {users:?}").into());
    }

    // 5. The action log.
    println!(
        "{:<4} {:<14} {:<10} {:>8} {:>5}  last error",
        "id", "type", "state", "attempts", "job"
    );
    for a in queue.list_actions(&ActionFilter::default(), 100)? {
        println!(
            "{:<4} {:<14} {:<10} {:>8} {:>5}  {}",
            a.id.to_string(),
            a.action_type,
            a.state.as_str(),
            a.attempts,
            a.job.map_or("-".into(), |j| j.to_string()),
            a.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `<dir of this binary>/../safejob-welcome-email-example.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-welcome-email-example.db"))
}
