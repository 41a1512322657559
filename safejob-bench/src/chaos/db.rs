//! The run's own corner of the database, and the few statements the harness writes itself.
//!
//! Every run gets its own namespace — a fresh PostgreSQL schema (put on each connection's
//! `search_path`), a fresh MySQL/MariaDB database, or the SQLite file it was given — so runs and
//! tests never see each other's rows. Besides `safe_jobs` (created by the store's migrations) it
//! holds three tables:
//!
//! * `torture_dispatch` — the K×D dispatches, the queue the workers claim from;
//! * `torture_perform` — one row per `perform` call;
//! * `torture_effect` — one row per run of `on_succeeded_once` (no unique key on purpose: a
//!   doubled effect must show up as two rows, not as a constraint error).

use std::net::{SocketAddr, ToSocketAddrs};

use safejob_diesel::{BackendKind, ConnectionRef, DieselStore, DieselStoreBuilder};

/// Runs `$body` with `$c` bound to the concrete diesel connection inside a [`ConnectionRef`].
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite($c) => $body,
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres($c) => $body,
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql($c) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(diesel::result::Error::QueryBuilderError(
                "backend not compiled into safejob-chaos".into(),
            )),
        }
    };
}

/// A harness statement failed.
pub type DbResult<T> = Result<T, String>;

/// One row of two integers: every harness query selects two `BIGINT` columns `a` and `b`.
#[derive(diesel::QueryableByName, Debug, Clone, Copy)]
pub struct Pair {
    /// The first column.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub a: i64,
    /// The second column.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub b: i64,
}

/// Runs a statement; the rows it affected.
pub fn exec(store: &DieselStore, sql: &str) -> DbResult<usize> {
    store
        .with_connection(
            |conn| on_conn!(conn, c => diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c)),
        )
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Runs a query selecting two `BIGINT` columns named `a` and `b`.
pub fn pairs(store: &DieselStore, sql: &str) -> DbResult<Vec<Pair>> {
    store
        .with_connection(|conn| {
            on_conn!(conn, c => diesel::RunQueryDsl::load::<Pair>(diesel::sql_query(sql), *c))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The run's namespace on the database.
#[derive(Debug)]
pub struct Namespace {
    /// Which backend.
    pub kind: BackendKind,
    /// The URL that reaches the namespace directly (MySQL: the run's own database).
    pub url: String,
    /// PostgreSQL: the run's schema, set as `search_path` on every connection.
    pub schema: Option<String>,
    /// What to drop at the end (PostgreSQL schema, MySQL database), through a fresh
    /// connection to `admin_url` (the run may have restarted the server since).
    owned: Option<String>,
    admin_url: String,
}

/// A store builder on `url` whose connections use `schema` when given.
pub fn builder(url: &str, schema: Option<&str>) -> DieselStoreBuilder {
    let set = schema.map(|s| format!("SET search_path TO {s}"));
    DieselStore::builder(url).on_connect(move |conn| match &set {
        Some(set) => conn.batch_execute(set),
        None => Ok(()),
    })
}

impl Namespace {
    /// Creates the namespace `name` (letters, digits and `_` only) on the database at `url`.
    /// SQLite uses the file itself, which must not hold a `safe_jobs` table yet.
    pub fn create(url: &str, name: &str) -> DbResult<Self> {
        let admin = DieselStore::connect(url).map_err(|e| e.to_string())?;
        let kind = admin.backend();
        match kind {
            BackendKind::Postgres => {
                exec(&admin, &format!("CREATE SCHEMA {name}"))?;
                Ok(Self {
                    kind,
                    url: url.to_owned(),
                    schema: Some(name.to_owned()),
                    owned: Some(name.to_owned()),
                    admin_url: url.to_owned(),
                })
            }
            BackendKind::Mysql => {
                exec(&admin, &format!("CREATE DATABASE {name}"))?;
                let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
                parsed.set_path(&format!("/{name}"));
                Ok(Self {
                    kind,
                    url: parsed.to_string(),
                    schema: None,
                    owned: Some(name.to_owned()),
                    admin_url: url.to_owned(),
                })
            }
            _ => {
                if pairs(&admin, "SELECT 1 AS a, 1 AS b FROM safe_jobs LIMIT 1").is_ok() {
                    return Err(format!(
                        "{} already holds a safe_jobs table: give safejob-chaos a new SQLite file",
                        admin.target()
                    ));
                }
                Ok(Self {
                    kind,
                    url: url.to_owned(),
                    schema: None,
                    owned: None,
                    admin_url: url.to_owned(),
                })
            }
        }
    }

    /// A store builder on `url` (the namespace's, or the proxy's way to it).
    pub fn builder(&self, url: &str) -> DieselStoreBuilder {
        builder(url, self.schema.as_deref())
    }

    /// Creates the harness tables and fills the dispatch table with `dispatches` (key numbers,
    /// in dispatch order).
    pub fn setup(&self, store: &DieselStore, dispatches: &[u64]) -> DbResult<()> {
        store.migrate().map_err(|e| e.to_string())?;
        for ddl in [
            "CREATE TABLE torture_dispatch (id BIGINT NOT NULL PRIMARY KEY, \
             key_no BIGINT NOT NULL, taken_by VARCHAR(64) NULL)",
            "CREATE TABLE torture_perform (key_no BIGINT NOT NULL, fence BIGINT NOT NULL, \
             worker VARCHAR(64) NOT NULL)",
            "CREATE TABLE torture_effect (key_no BIGINT NOT NULL, fence BIGINT NOT NULL, \
             worker VARCHAR(64) NOT NULL)",
        ] {
            exec(store, ddl)?;
        }
        for (chunk_no, chunk) in dispatches.chunks(500).enumerate() {
            let values: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, key)| format!("({}, {key}, NULL)", chunk_no * 500 + i))
                .collect();
            exec(
                store,
                &format!(
                    "INSERT INTO torture_dispatch (id, key_no, taken_by) VALUES {}",
                    values.join(", ")
                ),
            )?;
        }
        Ok(())
    }

    /// Drops the schema or database the run created (SQLite: nothing; the file stays).
    pub fn drop_all(&self) -> DbResult<()> {
        let Some(name) = &self.owned else {
            return Ok(());
        };
        let sql = match self.kind {
            BackendKind::Postgres => format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        let mut last = String::new();
        for _ in 0..3 {
            match DieselStore::connect(&self.admin_url)
                .map_err(|e| e.to_string())
                .and_then(|admin| exec(&admin, &sql))
            {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Err(last)
    }
}

/// The database's address, which must be on the loopback interface: the fault proxy forwards
/// only there.
pub fn loopback_target(url: &str) -> DbResult<SocketAddr> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "postgres" | "postgresql" => 5432,
        _ => 3306,
    });
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| "--proxy needs a database on 127.0.0.1 or localhost".to_owned())
}

/// `url` rewritten to go through the proxy at `proxy`, in clear text so the proxy can match what
/// is sent (libpq and libmysqlclient prefer TLS when the server offers it).
pub fn via_proxy(url: &str, kind: BackendKind, proxy: SocketAddr) -> DbResult<String> {
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    parsed
        .set_host(Some(&proxy.ip().to_string()))
        .map_err(|e| e.to_string())?;
    parsed
        .set_port(Some(proxy.port()))
        .map_err(|()| "cannot set the port".to_owned())?;
    let (name, value) = match kind {
        BackendKind::Postgres => ("sslmode", "disable"),
        _ => ("ssl_mode", "disabled"),
    };
    parsed.query_pairs_mut().append_pair(name, value);
    Ok(parsed.to_string())
}

/// A key number as the harness tables store it.
pub fn key_no(k: u64) -> i64 {
    i64::try_from(k).unwrap_or(i64::MAX)
}

pub(crate) use on_conn;
