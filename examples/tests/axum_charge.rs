//! The axum example's routes, sent requests in-process (`tower::ServiceExt::oneshot`, no
//! socket), on a fresh SQLite database: a charge answers its stored result to every duplicate
//! and posts one ledger row; queued payouts run once per key in a worker pool started and
//! stopped from async code.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use safejob_diesel::DieselStore;
use safejob_examples::charges_api::{
    App, IDEMPOTENCY_KEY, REPLAYED, charge_ledger, create_tables, payout_ledger, payout_workers,
    router,
};
use safejob_tokio::AsyncWorkerPool;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{task::JoinSet, time::timeout};
use tower::ServiceExt;

const TIMEOUT: Duration = Duration::from_secs(30);

fn service() -> (Router, Arc<DieselStore>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("axum.db").display());
    let store = Arc::new(DieselStore::connect(&url).expect("SQLite opens"));
    store.migrate().expect("migrations run");
    create_tables(&store).expect("the example's tables");
    let app = App::new(store.clone()).expect("the app state");
    (router(app), store, dir)
}

/// What a request answered.
struct Answer {
    status: StatusCode,
    replayed: bool,
    retry_after: Option<String>,
    body: Value,
}

async fn send(router: &Router, method: &str, uri: &str, key: Option<&str>, body: Value) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(IDEMPOTENCY_KEY, key);
    }
    let request = request
        .body(Body::from(body.to_string()))
        .expect("a request");
    let response = timeout(TIMEOUT, router.clone().oneshot(request))
        .await
        .expect("the service answers")
        .expect("an infallible router");
    let status = response.status();
    let replayed = response.headers().get(REPLAYED).is_some();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        replayed,
        retry_after,
        body,
    }
}

// Catches: a replay answered differently from the first answer (checked by answering
// `AlreadySucceeded` with 200 instead of 201: this test and the racing one fail).
#[tokio::test(flavor = "current_thread")]
async fn a_duplicate_charge_answers_the_stored_result_and_posts_one_row() {
    let (router, store, _dir) = service();
    let charge = json!({ "wallet": "alice", "cents": 1999 });

    let first = send(
        &router,
        "POST",
        "/charges",
        Some("order-42"),
        charge.clone(),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(!first.replayed);
    assert_eq!(first.body["wallet"], "alice");
    assert_eq!(first.body["cents"], 1999);
    assert!(
        first.body["charge"]
            .as_str()
            .is_some_and(|id| id.starts_with("ch_") && !id.contains("order-42")),
        "the charge id is derived from the key's digest, not the raw key: {}",
        first.body
    );

    let again = send(&router, "POST", "/charges", Some("order-42"), charge).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed, "a duplicate is marked replayed");
    assert_eq!(
        again.body, first.body,
        "the duplicate answers the stored result"
    );
    assert_eq!(charge_ledger(store).await.expect("the ledger"), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicates_charge_once() {
    let (router, store, _dir) = service();
    let mut requests = JoinSet::new();
    for _ in 0..8 {
        let router = router.clone();
        requests.spawn(async move {
            send(
                &router,
                "POST",
                "/charges",
                Some("order-race"),
                json!({ "wallet": "bob", "cents": 500 }),
            )
            .await
        });
    }
    let answers = requests.join_all().await;
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "one request at least charged");
    assert!(
        created.iter().all(|a| a.body == created[0].body),
        "every answer is the one stored result"
    );
    for busy in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
        assert!(busy.retry_after.is_some(), "a busy key says when to retry");
    }
    assert_eq!(created.iter().filter(|a| !a.replayed).count(), 1);
    assert_eq!(charge_ledger(store).await.expect("the ledger"), (1, 1));
}

// Catches: a charge without a fingerprint (checked by making `Charge::fingerprint` return
// `Ok(None)`: the other amount is answered 201 with the first charge's result, not 422).
#[tokio::test(flavor = "current_thread")]
async fn bad_requests_are_refused_and_charge_nothing() {
    let (router, store, _dir) = service();
    let charge = json!({ "wallet": "carol", "cents": 700 });
    let missing = send(&router, "POST", "/charges", None, charge.clone()).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["error"], "missing Idempotency-Key header");

    let first = send(&router, "POST", "/charges", Some("order-7"), charge).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other_amount = json!({ "wallet": "carol", "cents": 9999 });
    let conflict = send(&router, "POST", "/charges", Some("order-7"), other_amount).await;
    assert_eq!(conflict.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        conflict.body["error"],
        "this Idempotency-Key was already used with another request body"
    );
    assert_eq!(charge_ledger(store).await.expect("the ledger"), (1, 1));
}

#[tokio::test(flavor = "current_thread")]
async fn queued_payouts_run_once_per_key_in_a_pool_beside_the_service() {
    let (router, store, _dir) = service();
    let mut jobs = Vec::new();
    for key in ["payout-1", "payout-1", "payout-2"] {
        let answer = send(
            &router,
            "POST",
            "/payouts",
            Some(key),
            json!({ "cents": 250 }),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        jobs.push(answer.body["job"].as_i64().expect("a job id"));
    }
    // The second payout-1 is deduplicated at enqueue: the live job's id, marked duplicate.
    assert_eq!(
        jobs[0], jobs[1],
        "a guarded enqueue of a live key is deduplicated"
    );
    assert_ne!(jobs[0], jobs[2]);

    let pool = AsyncWorkerPool::start(payout_workers(store.clone()))
        .await
        .expect("the pool starts");
    pool.waker().wake();
    // Wait for every job (two: the duplicate enqueue inserted none).
    timeout(TIMEOUT, async {
        loop {
            let mut succeeded = Vec::new();
            for job in &jobs {
                let state = send(&router, "GET", &format!("/jobs/{job}"), None, Value::Null).await;
                assert_eq!(state.status, StatusCode::OK, "{}", state.body);
                succeeded.push(state.body["state"] == "succeeded");
            }
            if succeeded.iter().all(|s| *s) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every payout job succeeds");
    let report = pool
        .shutdown(Duration::from_secs(10))
        .await
        .expect("the pool stops");
    assert_eq!(report.released_running, 0);
    assert_eq!(
        payout_ledger(store).await.expect("the ledger"),
        (2, 2),
        "two keys, two payouts, however often enqueued"
    );
}
