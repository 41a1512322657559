//! The wallet examples' jobs, unchanged, on SQLite and (with the `postgres` feature and
//! `SAFEJOB_TEST_POSTGRES_URL`) on PostgreSQL: every charge applied once through the
//! backend-neutral `EffectsTx`, every receipt sent once after commit, on one runner; a second
//! run moves nothing.
//!
//! Catches (tried): the `Charge` job without its own `effects_mode` (under the runner's default,
//! after commit, `effects_tx` is `NotTransactional` and both runs fail).

use std::sync::Arc;

use safejob_diesel::DieselStore;
use safejob_examples::wallet;

/// Runs the example twice on `store` (migrated): the second run is all replays.
fn twice(store: Arc<DieselStore>) {
    wallet::run(store.clone()).expect("first run");
    wallet::run(store).expect("second run: replays only");
}

#[test]
fn the_wallet_jobs_run_on_sqlite() {
    let path = std::env::temp_dir().join(format!("safejob-wallet-test-{}.db", std::process::id()));
    let store = Arc::new(DieselStore::connect(&format!("sqlite://{}", path.display())).unwrap());
    store.migrate().unwrap();
    twice(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[cfg(feature = "postgres")]
#[test]
fn the_same_wallet_jobs_run_on_postgres() {
    let Some(url) = safejob_test_kit::backend_url("SAFEJOB_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = format!("sj_wallet_example_{}", std::process::id());
    let admin = DieselStore::connect(&url).unwrap();
    let ddl = |sql: String| {
        admin
            .with_connection(|c| c.batch_execute(&sql))
            .unwrap()
            .unwrap()
    };
    ddl(format!("CREATE SCHEMA {schema}"));
    let set = format!("SET search_path TO {schema}");
    let store = Arc::new(
        DieselStore::builder(&url)
            .on_connect(move |c| c.batch_execute(&set))
            .build()
            .unwrap(),
    );
    store.migrate().unwrap();
    twice(store);
    ddl(format!("DROP SCHEMA {schema} CASCADE"));
}
