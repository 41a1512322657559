//! A fresh database for each system of one `queue` run, dropped at the end.
//!
//! `--url` names a server and a database that already exists there (for SQLite: a file path).
//! That database is only the admin connection's and the prefix of the names: each system gets
//! `<database>_<system>_<8 hex digits>` on the same server (a file `<stem>_<system>_<hex>.db`
//! beside the SQLite path), created empty, migrated by the system itself, measured, and dropped
//! when the run ends unless `--keep`. So no run measures what an earlier one left behind (the
//! finished rows and dead tuples of issue #18), and the server's per-database counters
//! (`pg_stat_database`) count one system's statements and nobody else's.

#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql")),
    allow(
        dead_code,
        reason = "parts of the server backends left out of this build"
    )
)]

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    path::{Path, PathBuf},
};

/// Why a fresh database could not be made or dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScratchError {
    /// The URL does not parse, or names no database.
    #[error("--url {url}: {reason}")]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The base name would not make a plain SQL identifier.
    #[error(
        "the database (or file stem) {name:?} prefixes the bench's fresh databases and must be \
         ASCII lowercase letters, digits and underscores"
    )]
    BadBaseName {
        /// The name found in the URL.
        name: String,
    },
    /// The backend's cargo feature is not compiled in.
    #[cfg_attr(
        all(feature = "postgres", feature = "mysql", feature = "sqlite"),
        allow(dead_code, reason = "built only when a backend's feature is off")
    )]
    #[error("{backend} is not compiled in: build safejob-bench with --features {backend}")]
    NotCompiled {
        /// `postgres` or `mysql`.
        backend: &'static str,
    },
    /// A statement of the admin connection failed.
    #[error("{what} on {server}")]
    Admin {
        /// What was being done.
        what: String,
        /// The admin URL, without its password.
        server: String,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// The admin connection could not be opened.
    #[error("connecting to {server}")]
    Connect {
        /// The admin URL, without its password.
        server: String,
        /// The driver's error.
        #[source]
        source: diesel::ConnectionError,
    },
    /// A SQLite file could not be removed.
    #[error("removing {path}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The kind of server a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`.
    Mysql,
    /// `sqlite://path`.
    Sqlite,
}

impl Kind {
    /// The kind of `url`, by its scheme.
    pub fn of(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::Mysql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }
}

/// Random hex digits, different at every call (`std`'s randomly keyed hasher).
pub fn random_hex(digits: usize) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let hex = format!("{:016x}", h.finish());
    hex[..digits.min(16)].to_owned()
}

/// A fresh database (or SQLite file) of one system, dropped with this value unless kept.
#[derive(Debug)]
pub struct Scratch {
    kind: Kind,
    /// The admin connection's URL (the `--url` as given).
    admin: String,
    /// The database's name, or the SQLite file's path.
    name: String,
    /// The URL a system connects to.
    url: String,
    keep: bool,
    dropped: bool,
}

impl Scratch {
    /// Creates `<base>_<system>_<hex>` on the server of `base_url` (a name for SQLite: the file
    /// is created by whoever opens it first). `system` is one of the bench's own names.
    pub fn create(base_url: &str, system: &str, keep: bool) -> Result<Self, ScratchError> {
        let (kind, name, url) = fresh_name(base_url, system, &random_hex(8))?;
        let scratch = Self {
            kind,
            admin: base_url.to_owned(),
            name,
            url,
            keep,
            dropped: false,
        };
        match kind {
            Kind::Sqlite => {}
            Kind::Postgres | Kind::Mysql => {
                scratch.admin_execute(&format!("CREATE DATABASE {}", scratch.quoted()))?;
            }
        }
        Ok(scratch)
    }

    /// The URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (the file's path for SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin connection's URL: the `--url` given.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    /// The backend.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Drops the database now (unless kept), reporting a failure instead of printing it.
    pub fn finish(mut self) -> Result<(), ScratchError> {
        self.dropped = true;
        if self.keep {
            eprintln!("safejob-bench: kept {}", self.name);
            return Ok(());
        }
        self.drop_database()
    }

    fn quoted(&self) -> String {
        // The name was checked to be [a-z0-9_] only (fresh_name), so quoting cannot be escaped.
        match self.kind {
            Kind::Mysql => format!("`{}`", self.name),
            Kind::Postgres | Kind::Sqlite => format!("\"{}\"", self.name),
        }
    }

    fn drop_database(&self) -> Result<(), ScratchError> {
        match self.kind {
            Kind::Sqlite => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = PathBuf::from(format!("{}{suffix}", self.name));
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(ScratchError::Remove { path, source }),
                    }
                }
                Ok(())
            }
            // FORCE: fang's worker threads cannot be stopped and keep their connections open.
            Kind::Postgres => self.admin_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.quoted()
            )),
            Kind::Mysql => {
                self.admin_execute(&format!("DROP DATABASE IF EXISTS {}", self.quoted()))
            }
        }
    }

    fn admin_execute(&self, sql: &str) -> Result<(), ScratchError> {
        let server = redacted(&self.admin);
        let fail = |source| ScratchError::Admin {
            what: sql.to_owned(),
            server: server.clone(),
            source,
        };
        match self.kind {
            Kind::Sqlite => Ok(()),
            Kind::Postgres => {
                #[cfg(feature = "postgres")]
                {
                    use diesel::{Connection, RunQueryDsl};
                    let mut conn =
                        diesel::PgConnection::establish(&self.admin).map_err(|source| {
                            ScratchError::Connect {
                                server: server.clone(),
                                source,
                            }
                        })?;
                    diesel::sql_query(sql).execute(&mut conn).map_err(fail)?;
                    Ok(())
                }
                #[cfg(not(feature = "postgres"))]
                {
                    let _ = fail;
                    Err(ScratchError::NotCompiled {
                        backend: "postgres",
                    })
                }
            }
            Kind::Mysql => {
                #[cfg(feature = "mysql")]
                {
                    use diesel::{Connection, RunQueryDsl};
                    let mut conn =
                        diesel::MysqlConnection::establish(&self.admin).map_err(|source| {
                            ScratchError::Connect {
                                server: server.clone(),
                                source,
                            }
                        })?;
                    diesel::sql_query(sql).execute(&mut conn).map_err(fail)?;
                    Ok(())
                }
                #[cfg(not(feature = "mysql"))]
                {
                    let _ = fail;
                    Err(ScratchError::NotCompiled { backend: "mysql" })
                }
            }
        }
    }
}

impl Drop for Scratch {
    /// Drops the database of a run that ended early (an error), unless kept; a failure is printed,
    /// as a destructor cannot return it.
    fn drop(&mut self) {
        if !self.dropped && !self.keep {
            self.dropped = true;
            if let Err(e) = self.drop_database() {
                eprintln!("safejob-bench: could not drop {}: {e}", self.name);
            }
        }
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.into()
        }
        _ => url.to_owned(),
    }
}

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The kind, name and URL of system `system`'s fresh database `<base>_<system>_<suffix>` for
/// `base_url`.
pub fn fresh_name(
    base_url: &str,
    system: &str,
    suffix: &str,
) -> Result<(Kind, String, String), ScratchError> {
    let bad = |reason| ScratchError::BadUrl {
        url: redacted(base_url),
        reason,
    };
    let kind =
        Kind::of(base_url).ok_or_else(|| bad("expected postgres://, mysql:// or sqlite://"))?;
    match kind {
        Kind::Sqlite => {
            let rest = base_url.split_once(':').map_or("", |(_, r)| r);
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = Path::new(path.split_once('?').map_or(path, |(p, _)| p));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| bad("no file name"))?;
            if !plain(stem) {
                return Err(ScratchError::BadBaseName {
                    name: stem.to_owned(),
                });
            }
            let file = path.with_file_name(format!("{stem}_{system}_{suffix}.db"));
            let file = file.to_string_lossy().into_owned();
            let url = format!("sqlite://{file}");
            Ok((kind, file, url))
        }
        Kind::Postgres | Kind::Mysql => {
            let mut parsed = url::Url::parse(base_url).map_err(|_| bad("not a URL"))?;
            let base = parsed.path().trim_start_matches('/').to_owned();
            if base.is_empty() {
                return Err(bad("names no database (…/bench_mine)"));
            }
            if !plain(&base) {
                return Err(ScratchError::BadBaseName { name: base });
            }
            let name = format!("{base}_{system}_{suffix}");
            parsed.set_path(&format!("/{name}"));
            Ok((kind, name, parsed.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_sit_beside_the_base_on_the_same_server() {
        let (kind, name, url) =
            fresh_name("postgres://root@127.0.0.1:5432/bench_me", "river", "0a1b").unwrap();
        assert_eq!(kind, Kind::Postgres);
        assert_eq!(name, "bench_me_river_0a1b");
        assert_eq!(url, "postgres://root@127.0.0.1:5432/bench_me_river_0a1b");
        let (_, _, url) = fresh_name(
            "postgresql://u:p@127.0.0.1/bench?sslmode=disable",
            "fang",
            "ff",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgresql://u:p@127.0.0.1/bench_fang_ff?sslmode=disable"
        );
        let (kind, name, url) =
            fresh_name("mysql://root@127.0.0.1:3306/bench", "safejob", "12").unwrap();
        assert_eq!(kind, Kind::Mysql);
        assert_eq!(name, "bench_safejob_12");
        assert_eq!(url, "mysql://root@127.0.0.1:3306/bench_safejob_12");
        let (kind, name, url) = fresh_name("sqlite://target/q.db", "safejob", "ab").unwrap();
        assert_eq!(kind, Kind::Sqlite);
        assert_eq!(name, "target/q_safejob_ab.db");
        assert_eq!(url, "sqlite://target/q_safejob_ab.db");
    }

    // Catches: a name spliced into CREATE/DROP DATABASE without the identifier check.
    #[test]
    fn names_that_are_not_plain_identifiers_are_refused() {
        for url in [
            "postgres://root@127.0.0.1/Bench",
            "postgres://root@127.0.0.1/a%22b",
            "mysql://root@127.0.0.1/a-b",
            "sqlite://target/a b.db",
        ] {
            assert!(
                matches!(
                    fresh_name(url, "safejob", "00"),
                    Err(ScratchError::BadBaseName { .. })
                ),
                "{url}"
            );
        }
        assert!(matches!(
            fresh_name("postgres://root@127.0.0.1", "safejob", "00"),
            Err(ScratchError::BadUrl { .. })
        ));
        assert!(matches!(
            fresh_name("redis://127.0.0.1", "safejob", "00"),
            Err(ScratchError::BadUrl { .. })
        ));
    }

    #[test]
    fn passwords_never_reach_messages() {
        let e = fresh_name("postgres://u:secret@127.0.0.1/Bad", "x", "0").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        let e = fresh_name("postgres://u:secret@127.0.0.1", "x", "0").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    // Catches: a SQLite run that leaves its -wal file behind, and `--keep` ignored on drop.
    #[test]
    fn a_fresh_sqlite_file_is_removed_with_its_wal_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}", dir.path().join("q.db").display());
        let s = Scratch::create(&base, "safejob", false).unwrap();
        let name = s.name().to_owned();
        std::fs::write(&name, b"x").unwrap();
        std::fs::write(format!("{name}-wal"), b"x").unwrap();
        s.finish().unwrap();
        assert!(!Path::new(&name).exists());
        assert!(!Path::new(&format!("{name}-wal")).exists());
        let kept = Scratch::create(&base, "safejob", true).unwrap();
        let name = kept.name().to_owned();
        std::fs::write(&name, b"x").unwrap();
        drop(kept);
        assert!(Path::new(&name).exists(), "--keep leaves the file");
    }

    #[test]
    fn random_suffixes_differ() {
        assert_ne!(random_hex(8), random_hex(8));
        assert_eq!(random_hex(8).len(), 8);
    }
}
