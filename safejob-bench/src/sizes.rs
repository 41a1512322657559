//! The sizes of the tables a system used, read from its fresh database when its run ends and
//! printed as one `queue_tables` line: what each system keeps (or deletes) after the same
//! workload, so a reader can see the retention the figures were measured under.
//!
//! Rows are exact (`count(*)`); bytes are the server's own measure: `pg_total_relation_size`
//! (table, indexes and TOAST) on PostgreSQL, `data_length + index_length` from
//! `information_schema.tables` on MariaDB (InnoDB's estimates), the pages of the table and its
//! indexes in the `dbstat` table on SQLite.

use serde_json::{Value, json};

use crate::{
    figure::line,
    scratch::{Kind, Scratch},
};

/// Why the sizes could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// The fresh database could not be opened.
    #[error("opening {0} to measure its tables")]
    Connect(String, #[source] diesel::ConnectionError),
    /// A catalog or count query failed.
    #[error("measuring the tables of {0}")]
    Query(String, #[source] diesel::result::Error),
    /// The backend's cargo feature is not compiled in.
    #[cfg_attr(
        all(feature = "postgres", feature = "mysql", feature = "sqlite"),
        allow(dead_code, reason = "built only when a backend's feature is off")
    )]
    #[error("{0} is not compiled in")]
    NotCompiled(&'static str),
}

/// One table's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    /// `schema.table` on PostgreSQL, else the table's name.
    pub table: String,
    /// Rows, counted.
    pub rows: u64,
    /// Bytes on disk, as the server measures them.
    pub bytes: Option<u64>,
    /// PostgreSQL's dead tuples (`pg_stat_user_tables.n_dead_tup`, published with a delay).
    pub dead_tuples: Option<u64>,
}

/// The `queue_tables` line: `{"bench":"queue_tables","system":…,"backend":…,"database":…,
/// "retention":…,"tables":[{"table":…,"rows":…,"bytes":…,"dead_tuples":…},…],"total_rows":…,
/// "total_bytes":…,"load1":…}`.
pub fn tables_line(
    system: &str,
    backend: &str,
    database: &str,
    retention: &str,
    tables: &[TableSize],
    load1: Option<f64>,
) -> String {
    let list: Vec<Value> = tables
        .iter()
        .map(|t| {
            json!({"table": t.table, "rows": t.rows, "bytes": t.bytes, "dead_tuples": t.dead_tuples})
        })
        .collect();
    let total_bytes: Option<u64> = tables.iter().map(|t| t.bytes).sum();
    line(&[
        ("bench", json!("queue_tables")),
        ("system", json!(system)),
        ("backend", json!(backend)),
        ("database", json!(database)),
        ("retention", json!(retention)),
        ("tables", Value::Array(list)),
        (
            "total_rows",
            json!(tables.iter().map(|t| t.rows).sum::<u64>()),
        ),
        ("total_bytes", json!(total_bytes)),
        ("load1", json!(load1)),
    ])
}

/// `name` as a quoted identifier (`"` doubled inside).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(diesel::QueryableByName)]
#[allow(dead_code)]
struct Named {
    #[diesel(sql_type = diesel::sql_types::Text)]
    schema: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    bytes: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    dead: Option<i64>,
}

#[derive(diesel::QueryableByName)]
#[allow(dead_code)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The tables of `db` (every user table, whichever system made it), sorted by name.
#[allow(unused_imports)]
pub fn table_sizes(db: &Scratch) -> Result<Vec<TableSize>, SizeError> {
    use diesel::{Connection, RunQueryDsl};
    let name = db.name().to_owned();
    let q = |e| SizeError::Query(name.clone(), e);
    match db.kind() {
        Kind::Postgres => {
            #[cfg(feature = "postgres")]
            {
                let mut conn = diesel::PgConnection::establish(db.url())
                    .map_err(|e| SizeError::Connect(name.clone(), e))?;
                let tables: Vec<Named> = diesel::sql_query(
                    "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                     pg_total_relation_size(c.oid)::bigint AS bytes, \
                     s.n_dead_tup::bigint AS dead \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
                     WHERE c.relkind IN ('r', 'p') \
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2",
                )
                .load(&mut conn)
                .map_err(q)?;
                tables
                    .into_iter()
                    .map(|t| {
                        let sql = format!(
                            "SELECT count(*)::bigint AS n FROM {}.{}",
                            quote(&t.schema),
                            quote(&t.name)
                        );
                        let n: Vec<Count> = diesel::sql_query(sql).load(&mut conn).map_err(q)?;
                        Ok(TableSize {
                            table: format!("{}.{}", t.schema, t.name),
                            rows: n.first().map_or(0, |c| u(c.n)),
                            bytes: t.bytes.map(u),
                            dead_tuples: t.dead.map(u),
                        })
                    })
                    .collect()
            }
            #[cfg(not(feature = "postgres"))]
            Err(SizeError::NotCompiled("postgres"))
        }
        Kind::Mysql => {
            #[cfg(feature = "mysql")]
            {
                let mut conn = diesel::MysqlConnection::establish(db.url())
                    .map_err(|e| SizeError::Connect(name.clone(), e))?;
                let tables: Vec<Named> = diesel::sql_query(
                    "SELECT CAST(table_schema AS CHAR) AS `schema`, CAST(table_name AS CHAR) AS name, \
                     CAST(data_length + index_length AS SIGNED) AS bytes, NULL AS dead \
                     FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 2",
                )
                .load(&mut conn)
                .map_err(q)?;
                tables
                    .into_iter()
                    .map(|t| {
                        let sql = format!(
                            "SELECT CAST(count(*) AS SIGNED) AS n FROM `{}`",
                            t.name.replace('`', "``")
                        );
                        let n: Vec<Count> = diesel::sql_query(sql).load(&mut conn).map_err(q)?;
                        Ok(TableSize {
                            table: t.name,
                            rows: n.first().map_or(0, |c| u(c.n)),
                            bytes: t.bytes.map(u),
                            dead_tuples: None,
                        })
                    })
                    .collect()
            }
            #[cfg(not(feature = "mysql"))]
            Err(SizeError::NotCompiled("mysql"))
        }
        Kind::Sqlite => {
            #[cfg(feature = "sqlite")]
            {
                use diesel::sql_types::Text;
                let mut conn = diesel::SqliteConnection::establish(db.name())
                    .map_err(|e| SizeError::Connect(name.clone(), e))?;
                let tables: Vec<Named> = diesel::sql_query(
                    "SELECT 'main' AS schema, name, NULL AS bytes, NULL AS dead FROM sqlite_master \
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )
                .load(&mut conn)
                .map_err(q)?;
                tables
                    .into_iter()
                    .map(|t| {
                        let sql = format!("SELECT count(*) AS n FROM {}", quote(&t.name));
                        let n: Vec<Count> = diesel::sql_query(sql).load(&mut conn).map_err(q)?;
                        // dbstat is compiled into the bundled SQLite; without it, no bytes.
                        let bytes: Option<Vec<Count>> = diesel::sql_query(
                            "SELECT coalesce(sum(pgsize), 0) AS n FROM dbstat WHERE name = ?1 \
                             OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = ?1)",
                        )
                        .bind::<Text, _>(&t.name)
                        .load(&mut conn)
                        .ok();
                        Ok(TableSize {
                            table: t.name,
                            rows: n.first().map_or(0, |c| u(c.n)),
                            bytes: bytes.and_then(|b| b.first().map(|c| u(c.n))),
                            dead_tuples: None,
                        })
                    })
                    .collect()
            }
            #[cfg(not(feature = "sqlite"))]
            Err(SizeError::NotCompiled("sqlite"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a table whose size is unknown summed as 0 bytes into the total.
    #[test]
    fn the_tables_line_totals_rows_and_bytes() {
        let tables = [
            TableSize {
                table: "public.safe_queue_jobs".into(),
                rows: 10,
                bytes: Some(8_192),
                dead_tuples: Some(3),
            },
            TableSize {
                table: "public.safe_jobs".into(),
                rows: 5,
                bytes: Some(16_384),
                dead_tuples: None,
            },
        ];
        let v: Value = serde_json::from_str(&tables_line(
            "safejob", "postgres", "bench_x", "keep", &tables, None,
        ))
        .unwrap();
        assert_eq!(v["bench"], "queue_tables");
        assert_eq!(v["tables"][0]["rows"], 10);
        assert_eq!(v["tables"][0]["dead_tuples"], 3);
        assert_eq!(v["total_rows"], 15);
        assert_eq!(v["total_bytes"], 24_576);
        let unknown = [TableSize {
            bytes: None,
            ..tables[0].clone()
        }];
        let v: Value = serde_json::from_str(&tables_line(
            "safejob", "sqlite", "x.db", "keep", &unknown, None,
        ))
        .unwrap();
        assert_eq!(
            v["total_bytes"],
            Value::Null,
            "a missing size is not a zero"
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_tables_are_counted_and_sized() {
        use diesel::{Connection, connection::SimpleConnection};
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}", dir.path().join("s.db").display());
        let db = Scratch::create(&base, "safejob", false).unwrap();
        let mut conn = diesel::SqliteConnection::establish(db.name()).unwrap();
        conn.batch_execute(
            "CREATE TABLE a (x); CREATE INDEX a_x ON a (x); INSERT INTO a VALUES (1), (2); \
             CREATE TABLE b (y);",
        )
        .unwrap();
        let sizes = table_sizes(&db).unwrap();
        let seen: Vec<_> = sizes.iter().map(|t| (t.table.as_str(), t.rows)).collect();
        assert_eq!(seen, [("a", 2), ("b", 0)]);
        // Table a and its index: at least two pages.
        assert!(sizes[0].bytes.unwrap() >= 2 * 512, "{sizes:?}");
        drop(conn);
        db.finish().unwrap();
    }
}
