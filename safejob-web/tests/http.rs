//! The HTTP surface end to end through the router (`oneshot`, a fake peer address), over a
//! seeded SQLite queue of its own: access, CSRF, errors, the API's answers, metrics, the OpenAPI
//! document and the dashboard's pages. Each test names the deliberate break it catches.

mod common;

use axum::{
    body::Body,
    http::{Method, StatusCode, header},
};
use common::{App, LOCAL, REMOTE, app, csrf_token, get, post, request, send};
use safejob_core::queue::{JobId, NewJob, QueueState, QueueStore, RunAt};
use safejob_web::{Access, ApiError, BearerToken};
use serde_json::Value;

fn state_of(app: &App, id: JobId) -> QueueState {
    app.queue.get(id).unwrap().unwrap().state
}

/// Break: `Access::check` answering `Ok` for `LoopbackOnly` whatever the peer.
#[tokio::test]
async fn a_non_loopback_client_is_refused_by_default() {
    let app = app(Access::default());
    let dead = app.seeded.dead;
    let remote = send(
        &app,
        request(
            Method::POST,
            &format!("/api/jobs/{}/retry", dead.0),
            Some(REMOTE),
        )
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(remote.status, StatusCode::FORBIDDEN);
    assert_eq!(remote.code(), "forbidden");
    assert_eq!(
        state_of(&app, dead),
        QueueState::Dead,
        "the refused action changed nothing"
    );
    for path in ["/jobs", "/metrics", "/", "/openapi.json"] {
        let r = send(
            &app,
            request(Method::GET, path, Some(REMOTE))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    // Loopback, IPv4 and IPv6, is served.
    assert_eq!(get(&app, "/jobs").await.status, StatusCode::OK);
    let mapped = send(
        &app,
        request(Method::GET, "/jobs", Some("[::ffff:127.0.0.1]:4000"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        mapped.status,
        StatusCode::OK,
        "an IPv4 client of a dual-stack listener"
    );
    let mapped_remote = send(
        &app,
        request(Method::GET, "/jobs", Some("[::ffff:203.0.113.9]:4000"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(mapped_remote.status, StatusCode::FORBIDDEN);
    let v6 = send(
        &app,
        request(Method::GET, "/jobs", Some("[::1]:4000"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(v6.status, StatusCode::OK);
}

/// Break: treating a missing `ConnectInfo` as loopback (a router mounted without it would be
/// open to everyone).
#[tokio::test]
async fn without_a_peer_address_the_default_refuses() {
    let app = app(Access::default());
    let r = send(
        &app,
        request(Method::GET, "/jobs", None)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ConnectInfo")
    );
}

/// Break: `BearerToken::matches` answering true, or the 401 losing its `WWW-Authenticate`.
#[tokio::test]
async fn a_bearer_token_opens_access_and_a_wrong_one_is_401() {
    let token = BearerToken::new("s3cret-token").unwrap();
    assert!(
        !format!("{token:?}").contains("s3cret"),
        "Debug never shows the token"
    );
    let app = app(Access::Bearer(token));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("Bearer"),
    ] {
        let mut b = request(Method::GET, "/jobs", Some(LOCAL));
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let r = send(&app, b.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(r.code(), "unauthorized");
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(!r.text.contains("s3cret"));
    }
    let dead = app.seeded.dead;
    let ok = send(
        &app,
        request(
            Method::POST,
            &format!("/api/jobs/{}/retry", dead.0),
            Some(REMOTE),
        )
        .header(header::AUTHORIZATION, "Bearer s3cret-token")
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(state_of(&app, dead), QueueState::Pending);
    assert_eq!(
        BearerToken::new("  ").unwrap_err(),
        safejob_web::AccessError::EmptyToken
    );
}

/// Break: `LoopbackOrBearer` letting a remote client in without the token.
#[tokio::test]
async fn loopback_or_bearer_asks_the_token_of_remote_clients_only() {
    let app = app(Access::LoopbackOrBearer(BearerToken::new("t0ken").unwrap()));
    assert_eq!(get(&app, "/jobs").await.status, StatusCode::OK);
    let r = send(
        &app,
        request(Method::GET, "/jobs", Some(REMOTE))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &app,
        request(Method::GET, "/jobs", Some(REMOTE))
            .header(header::AUTHORIZATION, "bearer t0ken")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Break: a custom rule not consulted (the gate falling back to loopback-only).
#[tokio::test]
async fn a_custom_rule_decides() {
    let app = app(Access::custom(|parts, _peer| {
        if parts.headers.get("x-operator").is_some() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("operators only".into()))
        }
    }));
    let r = send(
        &app,
        request(Method::GET, "/jobs", Some(REMOTE))
            .header("x-operator", "ada")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&app, "/jobs").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Break: skipping `csrf::check` (or its token comparison): a cross-site form could retry jobs.
#[tokio::test]
async fn a_dashboard_form_without_a_valid_csrf_token_is_403() {
    let app = app(Access::default());
    let dead = app.seeded.dead;
    let uri = format!("/ui/jobs/{}/retry", dead.0);
    let form = |body: &str, extra: &[(&str, &str)]| {
        let mut b = request(Method::POST, &uri, Some(LOCAL))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    };
    let token = csrf_token(&app).await;
    let wrong = "0".repeat(64);
    for (body, extra, why) in [
        (String::new(), vec![], "no token"),
        (format!("csrf_token={wrong}"), vec![], "a wrong token"),
        (
            format!("csrf_token={token}"),
            vec![("origin", "http://evil.example")],
            "a foreign Origin",
        ),
        (
            format!("csrf_token={token}"),
            vec![("sec-fetch-site", "cross-site")],
            "a cross-site fetch",
        ),
    ] {
        let r = send(&app, form(&body, &extra)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}");
        assert_eq!(r.code(), "csrf", "{why}");
        assert_eq!(
            state_of(&app, dead),
            QueueState::Dead,
            "{why} changed nothing"
        );
    }
    // A text/plain body (what a cross-site form can also send) is held to the same rule.
    let r = send(
        &app,
        request(Method::POST, &uri, Some(LOCAL))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("x=1"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The dashboard's own form: same origin, the token.
    let r = send(
        &app,
        form(
            &format!("csrf_token={token}"),
            &[
                ("origin", "http://127.0.0.1:8087"),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(state_of(&app, dead), QueueState::Pending);
    let location = r.headers[header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("/ui/jobs/{}?msg=", dead.0)),
        "{location}"
    );
}

/// Break: the Origin check skipped for JSON API posts (a no-cors cross-site fetch carries no
/// form body but does carry its Origin).
#[tokio::test]
async fn an_api_post_from_another_origin_is_403() {
    let app = app(Access::default());
    let dead = app.seeded.dead;
    let r = send(
        &app,
        request(
            Method::POST,
            &format!("/api/jobs/{}/retry", dead.0),
            Some(LOCAL),
        )
        .header("origin", "https://evil.example")
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "csrf");
    assert_eq!(state_of(&app, dead), QueueState::Dead);
}

/// Break: a handler answering 500 (or panicking) on bad input, or an error that is not JSON.
#[tokio::test]
async fn bad_input_is_a_4xx_json_error() {
    let app = app(Access::default());
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/api/jobs/abc", StatusCode::BAD_REQUEST, "bad_path"),
        (
            "/api/jobs/99999999999999999999999",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/api/jobs?state=exploded",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/api/jobs?limit=100000",
            StatusCode::BAD_REQUEST,
            "limit_too_large",
        ),
        ("/api/jobs?limit=0", StatusCode::BAD_REQUEST, "bad_query"),
        ("/api/jobs?limit=-3", StatusCode::BAD_REQUEST, "bad_query"),
        ("/api/jobs?after=x", StatusCode::BAD_REQUEST, "bad_query"),
        (
            "/api/jobs?queue=a%00b",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/api/dead?state=pending",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        ("/api/keys/nothex", StatusCode::BAD_REQUEST, "bad_path"),
        (
            "/api/keys?filter=maybe",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        ("/api/keys?after=zz", StatusCode::BAD_REQUEST, "bad_query"),
        (
            "/api/batches?state=sideways",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "/api/actions?state=lost",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        ("/api/jobs/424242", StatusCode::NOT_FOUND, "not_found"),
        ("/api/batches/77", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/keys/0000000000000000000000000000000000000000000000000000000000000000",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/no/such/route", StatusCode::NOT_FOUND, "no_route"),
    ];
    for (path, status, code) in cases {
        let r = get(&app, path).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text);
        assert_eq!(r.code(), *code, "{path}");
        assert!(r.json()["error"]["message"].is_string(), "{path}");
    }
    let r = send(
        &app,
        request(Method::DELETE, "/jobs", Some(LOCAL))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "method_not_allowed");
    let r = post(&app, "/api/jobs/purge?state=pending").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "bad_query")
    );
    let r = post(&app, "/api/schedules/nope/pause").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

/// Break: the overview's counts or its newest-first search (`ops::newest`) going wrong.
#[tokio::test]
async fn get_jobs_is_the_queue_at_a_glance() {
    let app = app(Access::default());
    let o = get(&app, "/jobs").await.json();
    assert_eq!(o["stats"]["by_state"]["dead"], 1);
    assert_eq!(o["stats"]["by_state"]["succeeded"], 1);
    assert_eq!(o["stats"]["by_queue"]["etl"], 4);
    assert_eq!(o["stats"]["depth_by_queue"]["default"], 2);
    let kinds: Vec<&str> = o["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["audit.write", "email.send", "etl.step", "payment.charge"]
    );
    let recent: Vec<i64> = o["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(recent, [8, 7, 6, 5, 4, 3, 2, 1], "every job, newest first");
    assert_eq!(o["workers"][0]["id"], "demo-worker");
    assert_eq!(o["workers"][0]["healthy"], true);
}

/// Break: paging that repeats or skips a job (`next_after` off by one).
#[tokio::test]
async fn job_listing_filters_and_pages() {
    let app = app(Access::default());
    let mut seen = Vec::new();
    let mut uri = "/api/jobs?limit=3".to_owned();
    loop {
        let page = get(&app, &uri).await.json();
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_i64().unwrap()),
        );
        match page["next_after"].as_i64() {
            Some(after) => uri = format!("/api/jobs?limit=3&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=8).collect::<Vec<_>>());
    let etl = get(&app, "/api/jobs?queue=etl&state=blocked").await.json();
    assert_eq!(etl["jobs"].as_array().unwrap().len(), 3);
    let dead = get(&app, "/api/dead").await.json();
    assert_eq!(dead["jobs"][0]["kind"], "payment.charge");
    assert_eq!(
        dead["jobs"][0]["last_error"],
        "card declined for 1999 cents"
    );
}

/// Break: `history()` not reading the ledger (the row's rebuild has no `pending→running`), or
/// the detail losing its fields.
#[tokio::test]
async fn job_detail_has_its_history() {
    let app = app(Access::default());
    let d = get(&app, &format!("/api/jobs/{}", app.seeded.dead.0))
        .await
        .json();
    assert_eq!(d["state"], "dead");
    assert_eq!(d["payload"]["cents"], 1999);
    let events: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    // From the audit ledger: every transition, the dead letter's reason on the last one.
    assert_eq!(events.first(), Some(&"enqueued→pending"), "{events:?}");
    assert!(events.contains(&"pending→running"), "{events:?}");
    assert_eq!(events.last(), Some(&"running→dead"), "{events:?}");
    let last = d["history"].as_array().unwrap().last().unwrap();
    assert!(
        last["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("fatal: card declined"),
        "{last}"
    );
}

/// Without a ledger (the switch off), the history is rebuilt from the job's row.
/// Break: `history()` dropping the recorded errors when the ledger has nothing.
#[tokio::test]
async fn without_ledger_entries_the_history_is_rebuilt_from_the_row() {
    use safejob_core::history::HistoryStore;
    let db = safejob_diesel::testing::TestDb::sqlite().expect("sqlite test db");
    let queue = std::sync::Arc::new(safejob_diesel::queue::DieselQueue::new(db.store().clone()));
    queue.set_ledger(false).expect("ledger off");
    let app = common::app_on_queue(db, queue, Access::default());
    let d = get(&app, &format!("/api/jobs/{}", app.seeded.dead.0))
        .await
        .json();
    let events: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"enqueued"), "{events:?}");
    assert!(events.contains(&"error:fatal"), "{events:?}");
    assert_eq!(events.last(), Some(&"finished:dead"), "{events:?}");
}

/// Break: an operator action answering 200 for a state that does not allow it.
#[tokio::test]
async fn actions_apply_once_and_refuse_the_wrong_state() {
    let app = app(Access::default());
    let dead = app.seeded.dead.0;
    assert_eq!(
        post(&app, &format!("/api/jobs/{dead}/retry")).await.status,
        StatusCode::OK
    );
    let again = post(&app, &format!("/api/jobs/{dead}/retry")).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    assert_eq!(
        post(&app, &format!("/api/jobs/{dead}/cancel")).await.status,
        StatusCode::OK
    );
    assert_eq!(state_of(&app, JobId(dead)), QueueState::Cancelled);
    let purged = post(&app, "/api/jobs/purge?state=cancelled").await.json();
    assert_eq!(purged["count"], 1);
    assert_eq!(
        get(&app, &format!("/api/jobs/{dead}")).await.status,
        StatusCode::NOT_FOUND
    );

    let batch = app.seeded.batch.0;
    let b = get(&app, &format!("/api/batches/{batch}")).await.json();
    assert_eq!(b["members"].as_array().unwrap().len(), 4);
    assert_eq!(b["members"][3]["depends_on"], serde_json::json!([6]));
    assert_eq!(
        post(&app, &format!("/api/batches/{batch}/cancel"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(&app, &format!("/api/batches/{batch}/cancel"))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        get(&app, "/api/batches?state=cancelled")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let actions = get(&app, "/api/actions").await.json();
    assert_eq!(actions[0]["action_type"], "email.welcome");
    let id = actions[0]["id"].as_i64().unwrap();
    let r = post(&app, &format!("/api/actions/{id}/retry")).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "a pending action is not retried"
    );
}

/// Break: `confirm_key` marking done a key that is not in doubt, or not marking it.
#[tokio::test]
async fn keys_in_doubt_are_listed_and_confirmed_once() {
    let app = app(Access::default());
    let page = get(&app, "/api/keys").await.json();
    let keys = page["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{page}");
    assert_eq!(keys[0]["effects"], "in_doubt");
    let digest = keys[0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        digest,
        safejob_core::KeyDigest::of("payout/demo-1").to_hex()
    );
    let r = post(&app, &format!("/api/keys/{digest}/confirm")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        get(&app, &format!("/api/keys/{digest}")).await.json()["effects"],
        "done"
    );
    assert!(
        get(&app, "/api/keys").await.json()["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = post(&app, &format!("/api/keys/{digest}/confirm")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        get(&app, "/api/keys?filter=succeeded").await.json()["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Break: pause / resume not reaching the store, or next runs not listed.
#[tokio::test]
async fn schedules_list_next_runs_and_pause() {
    let app = app(Access::default());
    let s = get(&app, "/api/schedules").await.json();
    assert_eq!(s[0]["name"], "hourly-audit");
    assert_eq!(s[0]["next_runs"].as_array().unwrap().len(), 5);
    assert_eq!(
        post(&app, "/api/schedules/hourly-audit/pause").await.status,
        StatusCode::OK
    );
    let s = get(&app, "/api/schedules").await.json();
    assert_eq!(s[0]["paused"], true);
    assert!(s[0]["next_runs"].as_array().unwrap().is_empty());
    assert_eq!(
        post(&app, "/api/schedules/hourly-audit/resume")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(get(&app, "/api/schedules").await.json()[0]["paused"], false);
}

/// Break: a metric family missing, or counts read from the wrong state.
#[tokio::test]
async fn metrics_are_prometheus_text_derived_from_the_store() {
    let app = app(Access::default());
    let r = get(&app, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for line in [
        "safejob_jobs{queue=\"payments\",kind=\"payment.charge\",state=\"dead\"} 1",
        "safejob_queue_depth{queue=\"default\"} 2",
        "safejob_kind_dead{kind=\"payment.charge\"} 1",
        "safejob_kind_succeeded{kind=\"audit.write\"} 1",
        "safejob_kind_executions{kind=\"audit.write\"} 1",
        "safejob_effects_in_doubt 1",
        "safejob_guard_expired_leases 0",
        "safejob_workers 1",
        "safejob_worker_in_flight{worker=\"demo-worker\"} 0",
    ] {
        assert!(
            r.text.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            r.text
        );
    }
    assert!(
        r.text
            .contains("safejob_kind_duration_seconds{kind=\"audit.write\",stat=\"p95\"}")
    );
    // Per queue: `default` has due emails, `audit` nothing due. Break: the per-queue map not
    // filled by the store (memory or SQL), or the family labelled by something else.
    assert!(
        r.text.lines().any(
            |l| l.starts_with("safejob_oldest_due_age_seconds{queue=\"default\"} ")
                && !l.ends_with(" 0.0")
        ),
        "{}",
        r.text
    );
    assert!(
        r.text
            .lines()
            .any(|l| l == "safejob_oldest_due_age_seconds{queue=\"audit\"} 0.0"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("safejob_oldest_due_age_all_queues_seconds ")
    );
    let overview = get(&app, "/jobs").await.json();
    let by_queue = &overview["stats"]["oldest_due_age_seconds_by_queue"];
    assert!(by_queue["default"].as_f64().is_some(), "{overview}");
    assert!(by_queue.get("audit").is_none(), "{overview}");
    assert_eq!(r.text.lines().last(), Some("# EOF"));
}

/// Break: a route left out of the generated document.
#[tokio::test]
async fn the_openapi_document_describes_every_api_route() {
    let app = app(Access::default());
    let doc: Value = get(&app, "/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/jobs", "get"),
        ("/api/jobs", "get"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}/retry", "post"),
        ("/api/jobs/{id}/cancel", "post"),
        ("/api/jobs/purge", "post"),
        ("/api/dead", "get"),
        ("/api/dead/retry", "post"),
        ("/api/keys", "get"),
        ("/api/keys/{digest}", "get"),
        ("/api/keys/{digest}/confirm", "post"),
        ("/api/schedules", "get"),
        ("/api/schedules/{name}/pause", "post"),
        ("/api/schedules/{name}/resume", "post"),
        ("/api/batches", "get"),
        ("/api/batches/{id}", "get"),
        ("/api/batches/{id}/cancel", "post"),
        ("/api/actions", "get"),
        ("/api/actions/{id}/retry", "post"),
        ("/api/workers", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

/// Break: a page writing stored text without `html::escape` (a job kind is operator-visible
/// text that anyone who can enqueue controls).
#[tokio::test]
async fn dashboard_pages_render_and_escape_stored_text() {
    let app = app(Access::default());
    app.queue
        .enqueue(&NewJob {
            kind: "<script>alert(1)</script>".into(),
            queue: "default".into(),
            payload: Value::Null,
            metadata: Value::Null,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: 1,
            idempotent: true,
            unique_key: None,
            guard: None,
        })
        .unwrap();
    for (path, title) in safejob_web::html::NAV {
        let r = get(&app, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.headers.contains_key(header::CONTENT_SECURITY_POLICY));
        assert!(r.text.contains(&format!("<h1>{title}</h1>")), "{path}");
        assert!(
            !r.text.contains("<script>"),
            "{path} wrote stored text unescaped"
        );
    }
    let jobs = get(&app, "/ui/jobs").await;
    assert!(jobs.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let batch = get(&app, &format!("/ui/batches/{}", app.seeded.batch.0)).await;
    assert!(batch.text.contains("<svg") && batch.text.contains("load_us"));
    assert_eq!(
        get(&app, "/ui/jobs/abc").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/ui/jobs/999").await.status,
        StatusCode::NOT_FOUND
    );
}

/// Break: `ops::newest` listing from one id too late (or too early) when there are more jobs
/// than it shows.
#[tokio::test]
async fn the_overview_shows_the_twenty_newest_jobs() {
    let app = app(Access::default());
    let client = safejob_core::queue::Queue::new(app.queue.clone());
    for i in 0..25 {
        client
            .enqueue(&common::seed::Email {
                to: format!("user{i}@example.com"),
            })
            .unwrap();
    }
    let o = get(&app, "/jobs").await.json();
    let recent: Vec<i64> = o["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(recent, (14..=33).rev().collect::<Vec<_>>());
}

/// Succeeds (in its own queue, apart from the seed's jobs).
#[derive(serde::Serialize, serde::Deserialize)]
struct Tally;

impl safejob_core::queue::QueueJob for Tally {
    const KIND: &'static str = "observed.tally";
    type Error = std::io::Error;
    fn work(
        &self,
        _: &mut safejob_core::queue::WorkContext<'_>,
    ) -> Result<(), safejob_core::queue::WorkError<std::io::Error>> {
        Ok(())
    }
    fn options() -> safejob_core::queue::KindOptions {
        safejob_core::queue::KindOptions::new().queue("observed")
    }
}

/// Fails fatally: dead on its first attempt.
#[derive(serde::Serialize, serde::Deserialize)]
struct Refuse;

impl safejob_core::queue::QueueJob for Refuse {
    const KIND: &'static str = "observed.refuse";
    type Error = std::io::Error;
    fn work(
        &self,
        _: &mut safejob_core::queue::WorkContext<'_>,
    ) -> Result<(), safejob_core::queue::WorkError<std::io::Error>> {
        Err(safejob_core::queue::WorkError::Fatal(
            std::io::Error::other("refused"),
        ))
    }
    fn options() -> safejob_core::queue::KindOptions {
        safejob_core::queue::KindOptions::new().queue("observed")
    }
}

/// A guarded job: its duplicate is replayed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Credit {
    id: u32,
}

impl safejob_core::SafeJob for Credit {
    type Error = std::io::Error;
    fn key(&self) -> Result<safejob_core::IdempotencyKey, safejob_core::KeyError> {
        safejob_core::IdempotencyKey::from_parts(["credit", &self.id.to_string()])
    }
    fn perform(
        &self,
        _: &mut safejob_core::PerformContext<'_>,
    ) -> Result<safejob_core::Outcome, std::io::Error> {
        Ok(safejob_core::Outcome::done())
    }
}

impl safejob_core::queue::GuardedJob for Credit {
    const KIND: &'static str = "observed.credit";
    fn options() -> safejob_core::queue::KindOptions {
        safejob_core::queue::KindOptions::new().queue("observed")
    }
}

/// A worker pool with the recorder as its observer: `/metrics` counts what it ran.
///
/// Break: `WorkerBuilder::observer` not stored (the pool keeps `NoObserver`), the `job_ended`
/// call in `Worker::execute` removed, the pipeline's `guard` call on the acquire answer removed
/// or mapping a replay to `granted`, `Recorder`'s `Observer` impl counting nothing, or its
/// families not registered by `/metrics`: a line below goes missing.
#[tokio::test]
async fn a_worker_pool_observed_by_the_recorder_shows_its_runs_on_metrics() {
    use std::{sync::Arc, time::Duration};

    use safejob_core::queue::{EnqueueOptions, Queue, Registry, Worker};

    let app = app(Access::default());
    let recorder = Arc::new(safejob_web::Recorder::new());
    let queue = Queue::new(app.queue.clone());
    let mut registry = Registry::new();
    registry
        .register::<Tally>()
        .register::<Refuse>()
        .register_guarded::<Credit>();
    let pool = Worker::builder(app.queue.clone(), registry)
        .queues(["observed"])
        .concurrency(1)
        .poll_interval(Duration::from_millis(10))
        .observer(recorder.clone())
        .start()
        .unwrap();
    queue.enqueue(&Tally).unwrap();
    queue.enqueue(&Tally).unwrap();
    queue.enqueue(&Refuse).unwrap();
    queue
        .enqueue_guarded(&Credit { id: 1 }, &EnqueueOptions::new())
        .unwrap();
    assert!(pool.wait_idle(Duration::from_secs(30)), "the pool is idle");
    // The duplicate, once the first copy succeeded: replayed, not run.
    queue
        .enqueue_guarded(&Credit { id: 1 }, &EnqueueOptions::new())
        .unwrap();
    assert!(pool.wait_idle(Duration::from_secs(30)), "the pool is idle");
    assert_eq!(pool.handled(), 5);
    pool.shutdown(Duration::from_secs(5));

    let state = safejob_web::WebState::from_store(app.queue.clone())
        .unwrap()
        .with_recorder(recorder);
    let text = get_text(state).await;
    for line in [
        "safejob_guard_outcomes_total{outcome=\"granted\"} 1",
        "safejob_guard_outcomes_total{outcome=\"replayed\"} 1",
        "safejob_executions_total{kind=\"observed.tally\",outcome=\"succeeded\"} 2",
        "safejob_executions_total{kind=\"observed.refuse\",outcome=\"dead\"} 1",
        "safejob_executions_total{kind=\"observed.credit\",outcome=\"succeeded\"} 2",
        "safejob_job_duration_seconds_count{kind=\"observed.tally\"} 2",
        "safejob_job_duration_seconds_count{kind=\"observed.refuse\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// `/metrics` of a router over `state`, from loopback.
async fn get_text(state: safejob_web::WebState) -> String {
    use tower::ServiceExt;

    let response = safejob_web::router(state)
        .oneshot(
            request(Method::GET, "/metrics", Some(LOCAL))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

struct Ping;

impl safejob_core::SafeJob for Ping {
    type Error = std::io::Error;
    fn key(&self) -> Result<safejob_core::IdempotencyKey, safejob_core::KeyError> {
        safejob_core::IdempotencyKey::new("ping/1")
    }
    fn perform(
        &self,
        _: &mut safejob_core::PerformContext<'_>,
    ) -> Result<safejob_core::Outcome, std::io::Error> {
        Ok(safejob_core::Outcome::done())
    }
}

/// A runner with the recorder as its observer.
///
/// Break: `RunnerBuilder::observer` not stored, or `Runner::run`'s `job_ended` call removed or
/// counting the replay as an execution: a count below is wrong.
#[tokio::test]
async fn a_runner_observed_by_the_recorder_counts_one_execution_and_one_replay() {
    use std::sync::Arc;

    let app = app(Access::default());
    let recorder = Arc::new(safejob_web::Recorder::new());
    let runner = safejob_core::Runner::builder(app.queue.store().clone())
        .observer(recorder.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        runner.run(&Ping).unwrap();
    }
    let state = safejob_web::WebState::from_store(app.queue.clone())
        .unwrap()
        .with_recorder(recorder);
    let text = get_text(state).await;
    for line in [
        "safejob_guard_outcomes_total{outcome=\"granted\"} 1",
        "safejob_guard_outcomes_total{outcome=\"replayed\"} 1",
        "safejob_executions_total{kind=\"Ping\",outcome=\"succeeded\"} 1",
        "safejob_job_duration_seconds_count{kind=\"Ping\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
