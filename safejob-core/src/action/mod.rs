//! The action log: record an action durably now (a welcome e-mail in five minutes, a report
//! tonight), dispatch it later into a job, exactly once, however many dispatchers run.
//!
//! * [`Publisher`] — `quick(type, eligible_at, payload, idempotency)` or a builder with `delay`,
//!   `idempotency` (publishing the same key again inserts nothing and answers the existing
//!   action), stored [`Rule`]s checked again at dispatch, and publish-time `when` / `skip_if`
//!   predicates; bad input is an [`ActionError`] and writes nothing.
//! * [`Processor`]s convert actions by type into a [`Dispatch`]: a job in safejob's queue (in the
//!   same transaction as the action's mark: exactly once) or an outbox message (SQL stores: at
//!   least once under a stable id).
//! * [`Dispatcher`] — claims due actions atomically under a fenced claim token and dispatches
//!   them, once per call ([`Dispatcher::dispatch`]) or on a thread ([`Dispatcher::start`]); an
//!   unknown type, a failing rule or a processor error is recorded on the action and retried or
//!   parked, never lost.
//! * [`ActionStore`] — the storage port: `MemoryQueue` here, `DieselQueue` on SQLite,
//!   PostgreSQL and MySQL/MariaDB (`safe_actions`), which also publishes inside the caller's
//!   own transaction (`publish_in`).
//!
//! Semantics and the table: `docs/actions.md`.

mod dispatch;
mod memory;
mod publish;
mod rule;
mod store;

pub use dispatch::{
    Dispatch, DispatchReport, Dispatcher, DispatcherBuilder, Processor, ProcessorError, RuleFailure,
};
pub use publish::{ActionBuilder, ActionError, Built, DEFAULT_ACTION_ATTEMPTS, Publisher};
pub use rule::{Rule, RuleError};
pub use store::{
    ActionClaim, ActionFilter, ActionId, ActionLease, ActionOutcome, ActionRecord, ActionState,
    ActionStore, NewAction, Published, RetryAction, message_digest,
};
