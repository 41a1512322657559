//! Every listing reaches its index and pages in digest order with nothing to sort, and pruning
//! walks the retention index, on a migrated database holding 10,000 rows (mostly succeeded, as in
//! production), read from the database's own query plan of the statement the store runs.
//!
//! SQLite runs always. PostgreSQL and MySQL/MariaDB read `SAFEJOB_TEST_POSTGRES_URL` /
//! `SAFEJOB_TEST_MYSQL_URL`, print a skip line without them, and fail without them when
//! `SAFEJOB_REQUIRE_BACKENDS=1`. Each runs in its own schema / database, dropped afterwards
//! (`testing::TestDb`).

use diesel::{QueryableByName, RunQueryDsl, sql_types::Text};

use super::sql::Listing;
use crate::{ConnectionRef, DieselStore, backend::Dialect, testing::TestDb};

/// The listing statements' binds, as literals: a state other than succeeded, the cursor (a
/// digest), the limit.
const STATE: &str = "'failed'";
const LIMIT: &str = "10";

/// 10,000 rows: 1 % failed, 0.4 % running (half of them expired), 0.3 % with effects in doubt,
/// the rest succeeded with effects done. A third of the rows have a retention: 1 % of all rows
/// past it, the rest a day ahead. Digests are distinct and spread over the key space.
fn fill_sql(store: &DieselStore) -> String {
    let now = Dialect::of(store.backend()).now(0);
    let tomorrow = match store.backend() {
        crate::BackendKind::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 day')",
        crate::BackendKind::Postgres => "(now() + interval '1 day')",
        crate::BackendKind::Mysql => "(UTC_TIMESTAMP(6) + INTERVAL 1 DAY)",
    };
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let digest = match store.backend() {
        crate::BackendKind::Sqlite => "randomblob(32)",
        crate::BackendKind::Postgres => "sha256(CAST(CAST(n.i AS text) AS bytea))",
        crate::BackendKind::Mysql => "UNHEX(SHA2(n.i, 256))",
    };
    format!(
        "INSERT INTO safe_jobs (digest, state, fence, attempts, lease_expires_at, effects, \
         created_at, updated_at, retain_until) \
         SELECT {digest}, \
           CASE WHEN n.i % 100 = 0 THEN 'failed' WHEN n.i % 250 = 1 THEN 'running' \
                ELSE 'succeeded' END, \
           1, 1, CASE WHEN n.i % 250 = 1 AND n.i % 500 <> 1 THEN {now} ELSE NULL END, \
           CASE WHEN n.i % 300 = 2 THEN 'in_doubt' ELSE 'done' END, {now}, {now}, \
           CASE WHEN n.i % 100 = 3 THEN {now} WHEN n.i % 3 = 0 THEN {tomorrow} ELSE NULL END \
         FROM (SELECT a.d * 1000 + b.d * 100 + c.d * 10 + e.d AS i \
               FROM {digits} a, {digits} b, {digits} c, {digits} e) n"
    )
}

/// The statement of `listing` (with a cursor or not), and its binds as literals.
fn statement(store: &DieselStore, listing: Listing, cursor: bool) -> (String, Vec<String>) {
    let sql = store.ctx().sql.list[listing as usize][usize::from(cursor)].clone();
    let mut binds = Vec::new();
    if listing == Listing::OtherState {
        binds.push(STATE.to_owned());
    }
    if cursor {
        binds.push(match store.backend() {
            crate::BackendKind::Postgres => format!("decode('{}', 'hex')", "00".repeat(32)),
            _ => format!("X'{}'", "00".repeat(32)),
        });
    }
    binds.push(LIMIT.to_owned());
    assert_eq!(sql.matches('?').count(), binds.len(), "{listing:?}: {sql}");
    (sql, binds)
}

/// `sql` with its `n`-th `?` (from 1) replaced by `bind(n)`.
fn substitute(sql: &str, bind: impl Fn(usize) -> String) -> String {
    let mut parts = sql.split('?');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for (n, part) in parts.enumerate() {
        out.push_str(&bind(n + 1));
        out.push_str(part);
    }
    out
}

/// The index a listing must reach on SQLite and PostgreSQL (`None`: the primary key).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn expected_index(listing: Listing) -> Option<&'static str> {
    match listing {
        Listing::All | Listing::Succeeded => None,
        Listing::OtherState | Listing::ExpiredLeases => Some("safe_jobs_state"),
        Listing::EffectsInDoubt => Some("safe_jobs_effects_open"),
    }
}

#[cfg(feature = "sqlite")]
#[derive(QueryableByName)]
struct Detail {
    #[diesel(sql_type = Text)]
    detail: String,
}

#[cfg(feature = "postgres")]
#[derive(QueryableByName)]
struct PgPlan {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[cfg(feature = "mysql")]
#[derive(QueryableByName)]
struct MysqlPlan {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>, column_name = "Extra")]
    extra: Option<String>,
}

/// The plans of the statements under test, as one text each.
struct Plans {
    /// Every listing, with and without a cursor.
    listings: Vec<(Listing, bool, String)>,
    /// The prune.
    prune: String,
}

/// The plans of every listing and of the prune, on the filled table.
fn plans(store: &DieselStore) -> Plans {
    let fill = fill_sql(store);
    let mut listings = Vec::new();
    let mut prune = String::new();
    store
        .with_connection(|conn| {
            match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => {
                    diesel::sql_query(&fill).execute(*c)?;
                    diesel::sql_query("ANALYZE").execute(*c)?;
                }
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => {
                    diesel::sql_query(&fill).execute(*c)?;
                    diesel::sql_query("ANALYZE safe_jobs").execute(*c)?;
                    // The store's statements are prepared; judge the plan PostgreSQL may cache.
                    diesel::sql_query("SET plan_cache_mode = force_generic_plan").execute(*c)?;
                }
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => {
                    diesel::sql_query(&fill).execute(*c)?;
                    diesel::sql_query("ANALYZE TABLE safe_jobs").execute(*c)?;
                }
                #[allow(unreachable_patterns)]
                _ => unreachable!("a backend that is not compiled in"),
            }
            for listing in Listing::ALL {
                for cursor in [false, true] {
                    let (sql, binds) = statement(store, listing, cursor);
                    listings.push((listing, cursor, explain(conn, &sql, &binds)?));
                }
            }
            let sql = store.ctx().sql.prune.clone();
            prune = explain(conn, &sql, &[LIMIT.to_owned()])?;
            Ok::<_, diesel::result::Error>(())
        })
        .expect("a pooled connection")
        .expect("the plans");
    Plans { listings, prune }
}

/// The database's plan of `sql` with `binds` (literals), followed by the statement.
fn explain(
    conn: &mut ConnectionRef<'_>,
    sql: &str,
    binds: &[String],
) -> diesel::QueryResult<String> {
    assert_eq!(sql.matches('?').count(), binds.len(), "{sql}");
    let literal = substitute(sql, |n| binds[n - 1].clone());
    let plan = match conn {
        #[cfg(feature = "sqlite")]
        ConnectionRef::Sqlite(c) => {
            let rows =
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {literal}")).load::<Detail>(*c)?;
            lines(rows, |r| r.detail)
        }
        #[cfg(feature = "postgres")]
        ConnectionRef::Postgres(c) => {
            let params = substitute(sql, |n| format!("${n}"));
            let values = binds.join(", ");
            diesel::sql_query("DEALLOCATE ALL").execute(*c)?;
            diesel::sql_query(format!("PREPARE planned AS {params}")).execute(*c)?;
            let rows = diesel::sql_query(format!("EXPLAIN EXECUTE planned({values})"))
                .load::<PgPlan>(*c)?;
            lines(rows, |r| r.line)
        }
        #[cfg(feature = "mysql")]
        ConnectionRef::Mysql(c) => {
            let rows = diesel::sql_query(format!("EXPLAIN {literal}")).load::<MysqlPlan>(*c)?;
            lines(rows, |r| {
                format!(
                    "key={} extra={}",
                    r.key.unwrap_or_default(),
                    r.extra.unwrap_or_default()
                )
            })
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("a backend that is not compiled in"),
    };
    Ok(format!("{plan}\n-- {literal}"))
}

/// A plan's rows, one line each.
fn lines<R>(rows: Vec<R>, line: impl Fn(R) -> String) -> String {
    rows.into_iter().map(line).collect::<Vec<_>>().join("\n")
}

/// The prune reads the rows past their retention through `safe_jobs_retain_until` (`index`, as
/// the plan names it), in order: nothing in `forbidden` (a sort, a scan of the table). Catches:
/// the prune ordered by another column (seen: a sort on each of the three backends).
fn assert_prune_plan(plan: &str, index: &str, forbidden: &[&str]) {
    assert!(plan.contains(index), "prune not through {index}:\n{plan}");
    for bad in forbidden {
        assert!(!plan.contains(bad), "prune plan has {bad}:\n{plan}");
    }
}

/// SQLite and PostgreSQL: the expected index (or the primary key), and no sort, except of the
/// few rows the in-doubt listing reads from its partial index (PostgreSQL's choice for them).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn assert_partial_index_plans(plans: &Plans, primary_key: &str, sort: &str) {
    for (listing, cursor, plan) in &plans.listings {
        let what = format!("{listing:?} (cursor: {cursor}):\n{plan}");
        if *listing != Listing::EffectsInDoubt {
            assert!(!plan.contains(sort), "sorts: {what}");
        }
        match expected_index(*listing) {
            Some(index) => assert!(plan.contains(index), "not through {index}: {what}"),
            None => {
                assert!(plan.contains(primary_key), "not in key order: {what}");
                assert!(!plan.contains("safe_jobs_state"), "{what}");
            }
        }
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_listings_and_prune_use_their_indexes_without_sorting() {
    let db = TestDb::sqlite_with("plans", |b| b).unwrap_or_else(|e| panic!("{e}"));
    let plans = plans(db.store());
    // A WITHOUT ROWID table is its primary key: a scan of it is in digest order.
    assert_partial_index_plans(&plans, "safe_jobs", "TEMP B-TREE");
    assert_prune_plan(
        &plans.prune,
        "USING INDEX safe_jobs_retain_until",
        &["TEMP B-TREE", "SCAN safe_jobs"],
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_listings_and_prune_use_their_indexes_without_sorting() {
    let Some(db) = TestDb::postgres_from_env_with("plans", |b| b).unwrap_or_else(|e| panic!("{e}"))
    else {
        return;
    };
    let plans = plans(db.store());
    assert_partial_index_plans(&plans, "safe_jobs_pkey", "Sort");
    assert_prune_plan(
        &plans.prune,
        "using safe_jobs_retain_until",
        &["Sort", "Seq Scan"],
    );
}

/// MySQL has no partial indexes: listings by state page through `safe_jobs_state` (state, then
/// the primary key) without a filesort; the in-doubt listing sorts only the in-doubt rows; the
/// prune reads the range of `safe_jobs_retain_until` up to now, in order.
#[cfg(feature = "mysql")]
#[test]
fn mysql_listings_by_state_and_prune_use_their_index_without_sorting() {
    let Some(db) = TestDb::mysql_from_env_with("plans", |b| b).unwrap_or_else(|e| panic!("{e}"))
    else {
        return;
    };
    let plans = plans(db.store());
    assert_prune_plan(&plans.prune, "key=safe_jobs_retain_until", &["filesort"]);
    for (listing, cursor, plan) in plans.listings {
        let what = format!("{listing:?} (cursor: {cursor}):\n{plan}");
        match listing {
            Listing::EffectsInDoubt => {
                assert!(plan.contains("key=safe_jobs_effects_expiry"), "{what}")
            }
            Listing::OtherState | Listing::ExpiredLeases => {
                assert!(plan.contains("key=safe_jobs_state"), "{what}");
                assert!(!plan.contains("filesort"), "sorts: {what}");
            }
            Listing::All | Listing::Succeeded => {
                assert!(!plan.contains("filesort"), "sorts: {what}")
            }
        }
    }
}
