//! The surface on PostgreSQL and MySQL/MariaDB (SQLite is tests/http.rs's): the overview, a
//! dead-letter retry, keys in doubt, schedules, batches and metrics over the same seed, each in
//! a schema / database of its own (`TestDb`). Skipped, and said so, without the backend's URL
//! unless `SAFEJOB_REQUIRE_BACKENDS=1`.

mod common;

use axum::http::StatusCode;
use common::{App, app_on, get, post};
use safejob_diesel::testing::TestDb;
use safejob_web::Access;

async fn exercise(app: App) {
    let o = get(&app, "/jobs").await.json();
    assert_eq!(o["stats"]["by_state"]["dead"], 1, "{o}");
    assert_eq!(o["recent"].as_array().unwrap().len(), 8);
    let dead = app.seeded.dead.0;
    assert_eq!(
        post(&app, &format!("/api/jobs/{dead}/retry")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, &format!("/api/jobs/{dead}")).await.json()["state"],
        "pending"
    );
    let keys = get(&app, "/api/keys").await.json();
    let digest = keys["keys"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&app, &format!("/api/keys/{digest}/confirm"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/api/schedules").await.json()[0]["next_runs"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let batch = get(&app, &format!("/api/batches/{}", app.seeded.batch.0))
        .await
        .json();
    assert_eq!(batch["members"].as_array().unwrap().len(), 4);
    let metrics = get(&app, "/metrics").await.text;
    assert!(
        metrics.lines().any(|l| l == "safejob_effects_in_doubt 0"),
        "{metrics}"
    );
    for (path, _) in safejob_web::html::NAV {
        assert_eq!(get(&app, path).await.status, StatusCode::OK, "{path}");
    }
}

/// Break: the same as tests/http.rs's (the retry, the digest confirm, the newest-first search,
/// the key metrics), here on PostgreSQL: e.g. `ops::confirm_key` not finishing the effects
/// fails it on every backend.
#[tokio::test]
async fn on_postgres() {
    match TestDb::postgres_from_env().expect("postgres test db") {
        Some(db) => exercise(app_on(db, Access::default())).await,
        None => eprintln!("skipped: SAFEJOB_TEST_POSTGRES_URL is not set"),
    }
}

/// Break: as [`on_postgres`], on MySQL/MariaDB.
#[tokio::test]
async fn on_mysql() {
    match TestDb::mysql_from_env().expect("mysql test db") {
        Some(db) => exercise(app_on(db, Access::default())).await,
        None => eprintln!("skipped: SAFEJOB_TEST_MYSQL_URL is not set"),
    }
}
