//! The action log conformance suite (`safejob_test_kit::action_conformance`) on SQLite,
//! PostgreSQL and MySQL/MariaDB, each case on a database of its own, the clock moved through the
//! queue's test offset (no sleeps); and what only the SQL stores do: publishing inside the
//! caller's transaction, and dispatching into the outbox under a stable message id.

mod common;

use common::QueueDb;
use safejob_test_kit::action_conformance;

/// Runs every case on a fresh database from `make` (`None`: the backend is not configured here,
/// and not required; the factory said why).
fn run(make: impl Fn() -> Option<QueueDb>) {
    for (name, case) in action_conformance::CASES {
        let Some(db) = make() else { return };
        eprintln!("action conformance: {name}");
        case(&db);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn action_conformance_on_sqlite() {
    run(|| Some(QueueDb::new(common::sqlite("actions"))));
}

#[cfg(feature = "postgres")]
#[test]
fn action_conformance_on_postgres() {
    run(|| common::postgres("actions").map(QueueDb::new));
}

#[cfg(feature = "mysql")]
#[test]
fn action_conformance_on_mysql() {
    run(|| common::mysql("actions").map(QueueDb::new));
}

mod sql_only {
    use std::sync::Arc;

    use safejob_core::{
        action::{
            ActionBuilder, ActionFilter, ActionRecord, ActionState, ActionStore, Built, Dispatch,
            Dispatcher, Processor, ProcessorError, Published, message_digest,
        },
        queue::RunAt,
    };
    use serde_json::json;

    use super::common::{self, QueueDb, TestDb, transaction};

    /// Publishing inside the caller's transaction: rolled back, no action; committed, the
    /// action; the same idempotency key published again in a later transaction answers the
    /// existing action and leaves that transaction usable (PostgreSQL would abort it on a
    /// unique violation: the insert must not raise one).
    fn publish_in_commits_with_the_caller(db: TestDb) {
        let q = QueueDb::new(db);
        let built = ActionBuilder::detached("email.welcome")
            .payload_value(json!({"user": 1}))
            .idempotency("welcome/1")
            .build()
            .expect("valid");
        let Built::Action(action) = built else {
            panic!("not skipped")
        };
        let rolled_back = q.db.store.with_connection(|conn| {
            transaction(conn, |conn| {
                q.queue
                    .publish_in(conn, &action)
                    .map_err(|e| e.to_string())?;
                Err::<(), String>("roll back".into())
            })
        });
        assert_eq!(rolled_back.expect("conn"), Err("roll back".to_owned()));
        let none = q
            .queue
            .list_actions(&ActionFilter::default(), 10)
            .expect("list");
        assert!(
            none.is_empty(),
            "a rolled back publish leaves nothing: {none:?}"
        );
        let first =
            q.db.store
                .with_connection(|conn| {
                    transaction(conn, |conn| {
                        q.queue.publish_in(conn, &action).map_err(|e| e.to_string())
                    })
                })
                .expect("conn")
                .expect("committed");
        assert!(matches!(first, Published::Inserted(_)), "{first:?}");
        // Again, followed by another statement in the same transaction.
        let (again, after) =
            q.db.store
                .with_connection(|conn| {
                    transaction(conn, |conn| {
                        let again = q
                            .queue
                            .publish_in(&mut *conn, &action)
                            .map_err(|e| e.to_string())?;
                        let mut other = action.clone();
                        other.idempotency = None;
                        let after = q
                            .queue
                            .publish_in(conn, &other)
                            .map_err(|e| e.to_string())?;
                        Ok((again, after))
                    })
                })
                .expect("conn")
                .expect("the transaction survived the duplicate");
        assert_eq!(again, Published::Existing(first.id().expect("id")));
        assert!(matches!(after, Published::Inserted(_)));
        assert_eq!(
            q.queue
                .list_actions(&ActionFilter::default(), 10)
                .expect("list")
                .len(),
            2
        );
    }

    struct ToOutbox;

    impl Processor for ToOutbox {
        fn supports(&self, t: &str) -> bool {
            t == "report.ready"
        }
        fn to_job(&self, action: &ActionRecord) -> Result<Dispatch, ProcessorError> {
            Ok(Dispatch::Message {
                topic: "reports".into(),
                payload: json!({"report": action.payload["report"]}),
            })
        }
    }

    /// An action dispatched to the outbox: one `safe_outbox` row, in the same transaction as the
    /// mark, named `<digest of the idempotency key>-0`; the action names it.
    fn dispatch_into_the_outbox(db: TestDb) {
        let q = QueueDb::new(db);
        let publisher = safejob_core::action::Publisher::new(q.queue.clone());
        let id = publisher
            .quick(
                "report.ready",
                RunAt::Now,
                json!({"report": 9}),
                Some("report/9"),
            )
            .expect("publish")
            .id()
            .expect("id");
        let dispatcher = Dispatcher::builder(q.queue.clone())
            .processor(ToOutbox)
            .build();
        let report = dispatcher.dispatch(10).expect("dispatch");
        assert_eq!(report.published, 1, "{report:?}");
        let action = q.queue.get_action(id).expect("get").expect("action");
        let want = format!("{}-0", message_digest(&action).to_hex());
        assert_eq!(action.state, ActionState::Processed);
        assert_eq!(action.message_id.as_deref(), Some(want.as_str()));
        assert_eq!(
            q.db.count_rows(
                "safe_outbox",
                &format!("message_id = '{want}' AND topic = 'reports'")
            ),
            1,
            "one outbox row under the stable id"
        );
        assert_eq!(dispatcher.dispatch(10).expect("again").claimed, 0);
        let _: Arc<dyn ActionStore> = q.queue.clone();
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn publish_in_and_outbox_on_sqlite() {
        publish_in_commits_with_the_caller(common::sqlite("act_in"));
        dispatch_into_the_outbox(common::sqlite("act_outbox"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn publish_in_and_outbox_on_postgres() {
        if let Some(db) = common::postgres("act_in") {
            publish_in_commits_with_the_caller(db);
        }
        if let Some(db) = common::postgres("act_outbox") {
            dispatch_into_the_outbox(db);
        }
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn publish_in_and_outbox_on_mysql() {
        if let Some(db) = common::mysql("act_in") {
            publish_in_commits_with_the_caller(db);
        }
        if let Some(db) = common::mysql("act_outbox") {
            dispatch_into_the_outbox(db);
        }
    }
}
