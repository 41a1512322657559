//! The commands over the queue's flows: schedules, batches and the action log.

use std::sync::Arc;

use safejob_core::{
    action::{ActionFilter, ActionId, ActionState, ActionStore, RetryAction},
    queue::{JobId, OpResult, QueueStore},
    schedule::{ScheduleStore, Scheduler},
    workflow::{BatchId, BatchState},
};
use serde_json::{Value, json};

use super::Ops;
use crate::{ActionsCommand, BatchesCommand, CliError, SchedulesCommand, out::table};

impl Ops {
    fn scheduler(&self) -> Result<Scheduler, CliError> {
        Ok(Scheduler::builder(self.queue.clone() as Arc<dyn ScheduleStore>).build()?)
    }

    pub(super) fn schedules(&self, command: SchedulesCommand) -> Result<(), CliError> {
        let s = self.scheduler()?;
        let changed = |what: &str, name: &str, done: bool, not: &str| -> Result<(), CliError> {
            if done {
                self.out.emit(&json!({"name": name, "result": what}), || {
                    println!("{name}: {what}")
                });
                Ok(())
            } else {
                Err(CliError::Refused(format!("{name}: {not}")))
            }
        };
        match command {
            SchedulesCommand::List { next } => {
                let list = s.list(next)?;
                let value = Value::Array(
                    list.iter()
                        .map(|i| {
                            json!({"name": i.row.name, "trigger": i.row.trigger,
                            "expression": i.row.expression, "time_zone": i.row.time_zone,
                            "kind": i.row.kind, "paused": i.row.paused, "missed": i.row.missed,
                            "last_tick": i.row.last_tick, "next_runs": i.next_runs})
                        })
                        .collect(),
                );
                self.out.emit(&value, || {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|i| {
                            vec![
                                i.row.name.clone(),
                                format!("{} {}", i.row.trigger, i.row.expression),
                                i.row.time_zone.clone(),
                                if i.row.paused { "paused" } else { "active" }.to_owned(),
                                i.next_runs
                                    .iter()
                                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ]
                        })
                        .collect();
                    table(&["name", "when", "zone", "state", "next runs (UTC)"], &rows);
                });
                Ok(())
            }
            SchedulesCommand::Pause { name } => {
                changed("paused", &name, s.pause(&name)?, "already paused")
            }
            SchedulesCommand::Resume { name } => {
                changed("resumed", &name, s.resume(&name)?, "not paused")
            }
            SchedulesCommand::Trigger { name } => changed(
                "due now: the next scheduler tick enqueues it",
                &name,
                s.due_now(&name)?,
                "paused (resume it first) or a one-off that already ran",
            ),
        }
    }

    pub(super) fn batches(&self, command: BatchesCommand) -> Result<(), CliError> {
        match command {
            BatchesCommand::List { state, limit } => {
                let state = state
                    .as_deref()
                    .map(|s| {
                        s.parse::<BatchState>()
                            .map_err(|_| CliError::BadInput(format!("unknown batch state {s:?}")))
                    })
                    .transpose()?;
                let list = self.queue.list_batches(state, limit)?;
                let value = serde_json::to_value(&list).unwrap_or(Value::Null);
                self.out.emit(&value, || {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|b| {
                            let c = b.counts;
                            vec![
                                b.id.to_string(),
                                b.name.clone(),
                                b.policy.as_text(),
                                b.state.as_str().to_owned(),
                                format!(
                                    "{}/{} ok, {} failed, {} cancelled, {} blocked",
                                    c.succeeded, c.total, c.failed, c.cancelled, c.blocked
                                ),
                            ]
                        })
                        .collect();
                    table(&["id", "name", "policy", "state", "members"], &rows);
                });
                Ok(())
            }
            BatchesCommand::Show { id } => {
                let info = self
                    .queue
                    .batch(BatchId(id))?
                    .ok_or_else(|| CliError::NotFound(format!("batch {id}")))?;
                let members = self.queue.batch_members(BatchId(id))?;
                let names: std::collections::BTreeMap<JobId, &str> =
                    members.iter().map(|m| (m.job, m.name.as_str())).collect();
                let mut value = serde_json::to_value(&info).unwrap_or(Value::Null);
                value["members"] = Value::Array(
                    members
                        .iter()
                        .map(|m| json!({"name": m.name, "job": m.job.0, "state": m.state.as_str(),
                            "depends_on": m.depends_on.iter().map(|d| names.get(d).copied().unwrap_or("?")).collect::<Vec<_>>(),
                            "result": m.result}))
                        .collect(),
                );
                self.out.emit(&value, || {
                    println!(
                        "batch {} {:?} ({}): {}",
                        info.id,
                        info.name,
                        info.policy.as_text(),
                        info.state
                    );
                    let rows: Vec<Vec<String>> = members
                        .iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                m.job.to_string(),
                                m.state.as_str().to_owned(),
                                m.depends_on
                                    .iter()
                                    .map(|d| names.get(d).copied().unwrap_or("?"))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect();
                    table(&["member", "job", "state", "after"], &rows);
                });
                Ok(())
            }
            BatchesCommand::Cancel { id } => match self.queue.cancel_batch(BatchId(id))? {
                OpResult::Applied => {
                    self.out.emit(&json!({"batch": id, "result": "cancelling"}), || {
                        println!("batch {id}: members not running cancelled; it ends when the running ones do")
                    });
                    Ok(())
                }
                OpResult::NotFound => Err(CliError::NotFound(format!("batch {id}"))),
                other => self.op("cancel batch", id, other),
            },
        }
    }

    pub(super) fn actions(&self, command: ActionsCommand) -> Result<(), CliError> {
        match command {
            ActionsCommand::List {
                state,
                action_type,
                limit,
            } => {
                let state = state
                    .as_deref()
                    .map(|s| {
                        s.parse::<ActionState>()
                            .map_err(|_| CliError::BadInput(format!("unknown action state {s:?}")))
                    })
                    .transpose()?;
                let list = self
                    .queue
                    .list_actions(&ActionFilter { state, action_type }, limit)?;
                let value = Value::Array(
                    list.iter()
                        .map(|a| json!({"id": a.id.0, "type": a.action_type, "state": a.state.as_str(),
                            "eligible_at": a.eligible_at, "attempts": a.attempts, "job": a.job.map(|j| j.0),
                            "message_id": a.message_id, "last_error": a.last_error}))
                        .collect(),
                );
                self.out.emit(&value, || {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|a| {
                            vec![
                                a.id.to_string(),
                                a.action_type.clone(),
                                a.state.as_str().to_owned(),
                                a.eligible_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                                a.attempts.to_string(),
                                a.job.map(|j| j.to_string()).unwrap_or_default(),
                                a.last_error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "id",
                            "type",
                            "state",
                            "eligible",
                            "attempts",
                            "job",
                            "last error",
                        ],
                        &rows,
                    );
                });
                Ok(())
            }
            ActionsCommand::Retry { id } => match self.queue.retry_action(ActionId(id))? {
                RetryAction::Applied => {
                    self.out
                        .emit(&json!({"action": id, "result": "applied"}), || {
                            println!("action {id}: pending again")
                        });
                    Ok(())
                }
                RetryAction::NotFound => Err(CliError::NotFound(format!("action {id}"))),
                RetryAction::WrongState(s) => Err(CliError::Refused(format!(
                    "action {id} is {s}; only parked actions are retried"
                ))),
            },
        }
    }
}
