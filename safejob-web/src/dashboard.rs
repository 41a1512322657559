//! The dashboard: server-rendered pages over the operations of `ops.rs`, and their POST forms (each
//! carrying the CSRF token, checked by [`csrf`](crate::csrf) before the handler runs).

use std::fmt::Write;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    api::{ApiPath, ApiQuery},
    dto::Done,
    error::ApiError,
    html::{self, button, escape, maybe_time, page, state as st, table, time, url_encode},
    ops::{self, run},
    samples,
    state::WebState,
};

/// Page query: filters, paging and a message to show.
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    after: Option<i64>,
    msg: Option<String>,
}

fn error_page(e: ApiError) -> Response {
    let status = e.status();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">\
         <title>{status}</title></head><body><h1>{status}</h1><p>{}</p><p><a href=\"/\">Overview</a></p></body></html>",
        escape(&e.to_string())
    );
    html::html(status, body)
}

async fn render(f: impl FnOnce() -> Result<Response, ApiError> + Send + 'static) -> Response {
    run(f).await.unwrap_or_else(error_page)
}

fn job_link(id: i64) -> String {
    format!("<a href=\"/ui/jobs/{id}\">{id}</a>")
}

/// `GET /`: counts, charts, kinds.
pub async fn overview(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let o = ops::overview(&s)?;
        let mut body = String::from("<div class=\"cards\">");
        for (state, n) in &o.stats.by_state {
            let _ = write!(
                body,
                "<div class=\"card\"><b>{n}</b><a href=\"/ui/jobs?state={0}\">{0}</a></div>",
                escape(state)
            );
        }
        body.push_str("</div>");
        let points = s.samples().points();
        let throughput = samples::throughput(&points);
        let latency = samples::latency(&points);
        body.push_str(&html::line_chart("Throughput", "jobs/min", &throughput));
        body.push_str(&html::line_chart("Mean latency", "s", &latency));
        let rows: Vec<Vec<String>> = o
            .definitions
            .iter()
            .map(|k| {
                vec![
                    format!(
                        "<a href=\"/ui/jobs?kind={}\">{}</a>",
                        url_encode(&k.kind),
                        escape(&k.kind)
                    ),
                    k.jobs.to_string(),
                    k.executions.to_string(),
                    format!("{:.1} %", k.success_rate * 100.0),
                    format!("{:.3}", k.mean_seconds),
                    format!("{:.3}", k.p95_seconds),
                    format!("{:.3}", k.p99_seconds),
                ]
            })
            .collect();
        body.push_str("<h2>Kinds</h2>");
        body.push_str(&table(
            &[
                "kind",
                "jobs",
                "executions",
                "success",
                "mean s",
                "p95 s",
                "p99 s",
            ],
            &rows,
        ));
        body.push_str("<h2>Newest jobs</h2>");
        body.push_str(&job_rows(&o.recent));
        Ok(page("/", "Overview", p.msg.as_deref(), &body))
    })
    .await
}

fn job_rows(jobs: &[crate::dto::JobSummary]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                job_link(j.id),
                escape(&j.kind),
                escape(&j.queue),
                st(&j.state),
                format!("{}/{}", j.attempts, j.max_attempts),
                time(&j.run_at),
                escape(j.last_error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    table(
        &[
            "id",
            "kind",
            "queue",
            "state",
            "attempts",
            "run at",
            "last error",
        ],
        &rows,
    )
}

/// `GET /ui/queues`: depth and counts per queue.
pub async fn queues(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let snapshot = ops::snapshot(&s)?;
        let stats = crate::dto::Stats::of(&snapshot);
        let rows: Vec<Vec<String>> = stats
            .by_queue
            .iter()
            .map(|(q, n)| {
                vec![
                    format!(
                        "<a href=\"/ui/jobs?queue={}\">{}</a>",
                        url_encode(q),
                        escape(q)
                    ),
                    n.to_string(),
                    stats
                        .depth_by_queue
                        .get(q)
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                    stats
                        .oldest_due_age_seconds_by_queue
                        .get(q)
                        .map_or_else(|| "none due".into(), |s| format!("{s:.1} s")),
                ]
            })
            .collect();
        let mut body = table(&["queue", "jobs", "waiting", "oldest due waiting"], &rows);
        let _ = write!(
            body,
            "<p>Oldest due job waiting, all queues: {}</p>",
            snapshot
                .oldest_due_age
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "none".into())
        );
        Ok(page("/ui/queues", "Queues", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/jobs`: the job list with filters.
pub async fn jobs(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let filter = ops::filter(p.state.clone(), p.queue.clone(), p.kind.clone())?;
        let page_ = ops::jobs(&s, filter, p.after, ops::DEFAULT_LIMIT)?;
        let v = |o: &Option<String>| escape(o.as_deref().unwrap_or(""));
        let mut body = format!(
            "<form method=\"get\" action=\"/ui/jobs\">state <input name=\"state\" value=\"{}\"> \
             queue <input name=\"queue\" value=\"{}\"> kind <input name=\"kind\" value=\"{}\"> \
             <button type=\"submit\">Filter</button></form>",
            v(&p.state),
            v(&p.queue),
            v(&p.kind)
        );
        body.push_str(&job_rows(&page_.jobs));
        if let Some(next) = page_.next_after {
            let q = |name: &str, o: &Option<String>| {
                o.as_deref()
                    .map(|x| format!("&{name}={}", url_encode(x)))
                    .unwrap_or_default()
            };
            let _ = write!(
                body,
                "<p><a href=\"/ui/jobs?after={next}{}{}{}\">next page</a></p>",
                q("state", &p.state),
                q("queue", &p.queue),
                q("kind", &p.kind)
            );
        }
        Ok(page("/ui/jobs", "Jobs", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/jobs/{id}`: one job with its history and actions.
pub async fn job(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Response {
    render(move || {
        let j = ops::job(&s, id)?;
        let token = s.csrf().token().to_owned();
        let sm = &j.summary;
        let mut body = table(
            &["field", "value"],
            &[
                vec!["kind".into(), escape(&sm.kind)],
                vec!["queue".into(), escape(&sm.queue)],
                vec!["state".into(), st(&sm.state)],
                vec![
                    "attempts".into(),
                    format!("{}/{}", sm.attempts, sm.max_attempts),
                ],
                vec!["run at".into(), time(&sm.run_at)],
                vec!["created".into(), time(&sm.created_at)],
                vec!["finished".into(), maybe_time(sm.finished_at.as_ref())],
                vec![
                    "batch".into(),
                    sm.batch
                        .map(|b| format!("<a href=\"/ui/batches/{b}\">{b}</a>"))
                        .unwrap_or_default(),
                ],
                vec![
                    "guard key".into(),
                    escape(j.guard_digest.as_deref().unwrap_or("")),
                ],
                vec![
                    "payload".into(),
                    format!("<code>{}</code>", escape(&j.payload.to_string())),
                ],
            ],
        );
        let _ = write!(
            body,
            "<p>{} {}</p>",
            button(&format!("/ui/jobs/{id}/retry"), "Retry", &token, "retry"),
            button(&format!("/ui/jobs/{id}/cancel"), "Cancel", &token, "cancel")
        );
        body.push_str("<h2>History</h2>");
        let rows: Vec<Vec<String>> = j
            .history
            .iter()
            .map(|h| {
                vec![
                    time(&h.at),
                    escape(&h.event),
                    h.attempt.map(|a| a.to_string()).unwrap_or_default(),
                    escape(h.message.as_deref().unwrap_or("")),
                ]
            })
            .collect();
        body.push_str(&table(&["at", "event", "attempt", "detail"], &rows));
        Ok(page(
            "/ui/jobs",
            &format!("Job {id}"),
            p.msg.as_deref(),
            &body,
        ))
    })
    .await
}

/// `GET /ui/dead`: dead letters with retry buttons.
pub async fn dead(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let filter = ops::filter(Some("dead".into()), p.queue.clone(), p.kind.clone())?;
        let page_ = ops::jobs(&s, filter, p.after, ops::DEFAULT_LIMIT)?;
        let token = s.csrf().token().to_owned();
        let rows: Vec<Vec<String>> = page_
            .jobs
            .iter()
            .map(|j| {
                vec![
                    job_link(j.id),
                    escape(&j.kind),
                    escape(&j.queue),
                    maybe_time(j.finished_at.as_ref()),
                    escape(j.last_error.as_deref().unwrap_or("")),
                    button(
                        &format!("/ui/jobs/{}/retry", j.id),
                        "Retry",
                        &token,
                        &format!("retry-{}", j.id),
                    ),
                ]
            })
            .collect();
        let body = table(&["id", "kind", "queue", "died", "last error", ""], &rows);
        Ok(page("/ui/dead", "Dead letters", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/keys`: keys whose effects are in doubt, with confirm buttons.
pub async fn keys(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let page_ = ops::keys(
            &s,
            safejob_core::store::ListFilter::EffectsInDoubt,
            None,
            ops::DEFAULT_LIMIT,
        )?;
        let token = s.csrf().token().to_owned();
        let rows: Vec<Vec<String>> = page_
            .keys
            .iter()
            .map(|k| {
                vec![
                    format!("<code>{}</code>", escape(&k.digest)),
                    st(&k.state),
                    escape(&k.effects),
                    escape(k.owner.as_deref().unwrap_or("")),
                    maybe_time(k.finalized_at.as_ref()),
                    escape(k.last_error.as_deref().unwrap_or("")),
                    button(
                        &format!("/ui/keys/{}/confirm", k.digest),
                        "Confirm done",
                        &token,
                        &format!("confirm-{}", k.digest),
                    ),
                ]
            })
            .collect();
        let body = format!(
            "<p>Effects that may or may not have happened. Check, then confirm the ones that did \
             (nothing is run); re-running effects is a deliberate call in code \
             (<code>recover_effects</code>).</p>{}",
            table(
                &[
                    "digest",
                    "state",
                    "effects",
                    "owner",
                    "finalized",
                    "last error",
                    ""
                ],
                &rows
            )
        );
        Ok(page("/ui/keys", "Keys in doubt", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/schedules`: schedules with their next runs.
pub async fn schedules(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let list = ops::schedules(&s)?;
        let token = s.csrf().token().to_owned();
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|sc| {
                let (path, label) = if sc.paused {
                    ("resume", "Resume")
                } else {
                    ("pause", "Pause")
                };
                vec![
                    escape(&sc.name),
                    format!(
                        "{} <code>{}</code> {}",
                        escape(&sc.trigger),
                        escape(&sc.expression),
                        escape(&sc.time_zone)
                    ),
                    escape(&sc.kind),
                    if sc.paused {
                        "paused".into()
                    } else {
                        "active".into()
                    },
                    sc.next_runs
                        .iter()
                        .map(time)
                        .collect::<Vec<_>>()
                        .join("<br>"),
                    maybe_time(sc.last_tick.as_ref()),
                    button(
                        &format!("/ui/schedules/{}/{path}", url_encode(&sc.name)),
                        label,
                        &token,
                        &format!("{path}-{}", sc.name),
                    ),
                ]
            })
            .collect();
        let body = table(
            &[
                "name",
                "trigger",
                "kind",
                "status",
                "next runs",
                "last tick",
                "",
            ],
            &rows,
        );
        Ok(page("/ui/schedules", "Schedules", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/batches`: batches, newest first.
pub async fn batches(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let list = ops::batches(&s, None, ops::DEFAULT_LIMIT)?;
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|b| {
                vec![
                    format!("<a href=\"/ui/batches/{0}\">{0}</a>", b.id),
                    escape(&b.name),
                    escape(&b.policy),
                    st(&b.state),
                    format!(
                        "{} total, {} blocked, {} active, {} ok, {} failed, {} cancelled",
                        b.total, b.blocked, b.active, b.succeeded, b.failed, b.cancelled
                    ),
                    time(&b.created_at),
                ]
            })
            .collect();
        let body = table(
            &["id", "name", "policy", "state", "members", "created"],
            &rows,
        );
        Ok(page("/ui/batches", "Batches", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/batches/{id}`: a batch drawn as its DAG, with its members' states.
pub async fn batch(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Response {
    render(move || {
        let d = ops::batch(&s, id)?;
        let token = s.csrf().token().to_owned();
        let nodes: Vec<(i64, String, String)> = d
            .members
            .iter()
            .map(|m| (m.job, m.name.clone(), m.state.clone()))
            .collect();
        let edges: Vec<(i64, i64)> = d
            .members
            .iter()
            .flat_map(|m| m.depends_on.iter().map(move |dep| (*dep, m.job)))
            .collect();
        let b = &d.batch;
        let mut body = format!(
            "<p>{} · policy {} · {}</p>{}",
            escape(&b.name),
            escape(&b.policy),
            st(&b.state),
            html::dag(&nodes, &edges)
        );
        if b.state == "running" {
            body.push_str(&button(
                &format!("/ui/batches/{id}/cancel"),
                "Cancel batch",
                &token,
                "cancel-batch",
            ));
        }
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    escape(&m.name),
                    job_link(m.job),
                    st(&m.state),
                    m.depends_on
                        .iter()
                        .map(|j| job_link(*j))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        body.push_str(&table(&["member", "job", "state", "depends on"], &rows));
        Ok(page(
            "/ui/batches",
            &format!("Batch {id}"),
            p.msg.as_deref(),
            &body,
        ))
    })
    .await
}

/// `GET /ui/actions`: the action log, with retry buttons for parked actions.
pub async fn actions(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let filter = ops::action_filter(p.state.clone(), None)?;
        let list = ops::actions(&s, filter, ops::MAX_LIMIT)?;
        let token = s.csrf().token().to_owned();
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|a| {
                vec![
                    a.id.to_string(),
                    escape(&a.action_type),
                    st(&a.state),
                    format!("{}/{}", a.attempts, a.max_attempts),
                    time(&a.eligible_at),
                    a.job.map(job_link).unwrap_or_default(),
                    escape(a.last_error.as_deref().unwrap_or("")),
                    if a.state == "parked" {
                        button(
                            &format!("/ui/actions/{}/retry", a.id),
                            "Retry",
                            &token,
                            &format!("retry-action-{}", a.id),
                        )
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        let body = table(
            &[
                "id",
                "type",
                "state",
                "attempts",
                "eligible",
                "job",
                "last error",
                "",
            ],
            &rows,
        );
        Ok(page("/ui/actions", "Actions", p.msg.as_deref(), &body))
    })
    .await
}

/// `GET /ui/workers`: workers with their health.
pub async fn workers(State(s): State<WebState>, ApiQuery(p): ApiQuery<PageParams>) -> Response {
    render(move || {
        let list = ops::workers(&s)?;
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|w| {
                vec![
                    escape(&w.id),
                    escape(&w.queues.join(", ")),
                    w.concurrency.to_string(),
                    time(&w.last_heartbeat),
                    format!("{:.0} s", w.heartbeat_age_seconds),
                    if w.healthy {
                        "<span class=\"s-succeeded\">healthy</span>".into()
                    } else {
                        "<span class=\"s-dead\">silent</span>".into()
                    },
                    w.in_flight
                        .iter()
                        .map(|j| job_link(*j))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        let body = table(
            &[
                "worker",
                "queues",
                "concurrency",
                "last heartbeat",
                "age",
                "health",
                "running",
            ],
            &rows,
        );
        Ok(page("/ui/workers", "Workers", p.msg.as_deref(), &body))
    })
    .await
}

/// After a form: back to `to` with the outcome as the page's message.
fn back(to: &str, outcome: Result<Done, ApiError>) -> Response {
    let msg = match outcome {
        Ok(done) => done.message,
        Err(e) if e.status() == StatusCode::NOT_FOUND || e.status() == StatusCode::CONFLICT => {
            e.to_string()
        }
        Err(e) => return error_page(e),
    };
    let location = format!("{to}?msg={}", url_encode(&msg));
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `POST /ui/jobs/{id}/retry`.
pub async fn retry_job(State(s): State<WebState>, ApiPath(id): ApiPath<i64>) -> Response {
    back(
        &format!("/ui/jobs/{id}"),
        run(move || ops::retry_job(&s, id)).await,
    )
}

/// `POST /ui/jobs/{id}/cancel`.
pub async fn cancel_job(State(s): State<WebState>, ApiPath(id): ApiPath<i64>) -> Response {
    back(
        &format!("/ui/jobs/{id}"),
        run(move || ops::cancel_job(&s, id)).await,
    )
}

/// `POST /ui/keys/{digest}/confirm`.
pub async fn confirm_key(State(s): State<WebState>, ApiPath(digest): ApiPath<String>) -> Response {
    let outcome = match ops::digest(&digest) {
        Ok(d) => run(move || ops::confirm_key(&s, d)).await,
        Err(e) => Err(e),
    };
    back("/ui/keys", outcome)
}

/// `POST /ui/schedules/{name}/pause`.
pub async fn pause_schedule(State(s): State<WebState>, ApiPath(name): ApiPath<String>) -> Response {
    back(
        "/ui/schedules",
        run(move || ops::pause_schedule(&s, &name, true)).await,
    )
}

/// `POST /ui/schedules/{name}/resume`.
pub async fn resume_schedule(
    State(s): State<WebState>,
    ApiPath(name): ApiPath<String>,
) -> Response {
    back(
        "/ui/schedules",
        run(move || ops::pause_schedule(&s, &name, false)).await,
    )
}

/// `POST /ui/batches/{id}/cancel`.
pub async fn cancel_batch(State(s): State<WebState>, ApiPath(id): ApiPath<i64>) -> Response {
    back(
        &format!("/ui/batches/{id}"),
        run(move || ops::cancel_batch(&s, id)).await,
    )
}

/// `POST /ui/actions/{id}/retry`.
pub async fn retry_action(State(s): State<WebState>, ApiPath(id): ApiPath<i64>) -> Response {
    back("/ui/actions", run(move || ops::retry_action(&s, id)).await)
}
