//! The fault proxy against a local echo server, and a real ambiguous commit through PostgreSQL
//! (when `SAFEJOB_TEST_POSTGRES_URL` is set; `SAFEJOB_REQUIRE_BACKENDS=1` makes a missing
//! database a failure).

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use safejob_test_kit::proxy::FaultProxy;

/// An echo server that also keeps every byte it received, across connections.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Echo {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let sink = sink.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        sink.lock().expect("sink").extend_from_slice(&buf[..n]);
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, received }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().expect("received").clone()
    }
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.local_addr()).expect("connect to the proxy");
    // A safety net against a hung test, not a timed assertion.
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

fn echo_round(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("write");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("read the echo");
    got
}

/// What the client reads until the connection ends (EOF or reset).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the connection was not closed")
            }
            Err(_) => return got,
        }
    }
}

#[test]
fn forwards_both_ways_on_many_connections() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    assert!(proxy.local_addr().ip().is_loopback());
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"hello"), b"hello");
    assert_eq!(echo_round(&mut b, b"world"), b"world");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut a2 = a.try_clone().expect("clone");
        let big = big.clone();
        thread::spawn(move || a2.write_all(&big).expect("write big"))
    };
    let mut got = vec![0u8; big.len()];
    a.read_exact(&mut got).expect("read big");
    writer.join().expect("writer");
    assert_eq!(got, big);
    let stats = proxy.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.cuts + stats.ambiguous_cuts + stats.refused, 0);
}

#[test]
fn cut_all_closes_every_open_connection() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"1"), b"1");
    assert_eq!(echo_round(&mut b, b"2"), b"2");
    assert_eq!(proxy.cut_all(), 2);
    assert!(read_until_closed(&mut a).is_empty());
    assert!(read_until_closed(&mut b).is_empty());
    assert_eq!(proxy.stats().cuts, 2);
    assert_eq!(proxy.open_connections(), 0);
    // New connections still work.
    let mut c = connect(&proxy);
    assert_eq!(echo_round(&mut c, b"again"), b"again");
}

#[test]
fn a_matching_packet_reaches_the_server_but_its_reply_never_reaches_the_client() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut a = connect(&proxy);
    let mut other = connect(&proxy);
    proxy.cut_after_match(b"COMMIT".to_vec());
    assert!(proxy.is_armed());
    // Traffic without the pattern passes untouched.
    assert_eq!(echo_round(&mut a, b"BEGIN; UPDATE"), b"BEGIN; UPDATE");
    assert_eq!(echo_round(&mut other, b"SELECT 1"), b"SELECT 1");
    // The pattern split across two writes still matches.
    a.write_all(b"xxCOM").expect("write");
    a.flush().expect("flush");
    let first = {
        let mut buf = [0u8; 5];
        a.read_exact(&mut buf).expect("echo of the first half");
        buf
    };
    assert_eq!(&first, b"xxCOM");
    a.write_all(b"MIT;").expect("write");
    assert!(
        read_until_closed(&mut a).is_empty(),
        "the reply to the matching packet must not be forwarded"
    );
    let received = echo.received();
    assert!(
        received.windows(7).any(|w| w == b"COMMIT;"),
        "the matching packet must reach the server"
    );
    assert_eq!(proxy.stats().ambiguous_cuts, 1);
    assert!(!proxy.is_armed(), "the cut is one-shot");
    // The other connection and later matches are untouched.
    assert_eq!(echo_round(&mut other, b"COMMIT"), b"COMMIT");
    assert_eq!(proxy.stats().ambiguous_cuts, 1);
}

#[test]
fn disarm_cancels_a_pending_cut() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    proxy.cut_after_match(b"COMMIT".to_vec());
    assert!(proxy.disarm());
    assert!(!proxy.disarm());
    let mut a = connect(&proxy);
    assert_eq!(echo_round(&mut a, b"COMMIT"), b"COMMIT");
    assert_eq!(proxy.stats().ambiguous_cuts, 0);
}

#[test]
fn refused_connections_are_closed_at_once_and_counted() {
    let echo = Echo::start();
    let proxy = FaultProxy::start(echo.addr).expect("proxy");
    let mut open = connect(&proxy);
    // One round trip first: the proxy has accepted it before the refusal starts.
    assert_eq!(echo_round(&mut open, b"first"), b"first");
    proxy.refuse_for(Duration::from_secs(600));
    let mut refused = connect(&proxy);
    // Whatever was written, nothing comes back: the proxy closed it.
    let _ = refused.write_all(b"hello");
    assert!(read_until_closed(&mut refused).is_empty());
    assert_eq!(proxy.stats().refused, 1);
    // Connections opened before keep working.
    assert_eq!(echo_round(&mut open, b"still"), b"still");
    // Lifting the refusal (a zero window) lets new connections through again.
    proxy.refuse_for(Duration::ZERO);
    let mut later = connect(&proxy);
    assert_eq!(echo_round(&mut later, b"back"), b"back");
    let _ = open.shutdown(Shutdown::Both);
}

#[test]
fn an_unreachable_target_closes_the_client_and_is_counted() {
    // A port that was just free: nothing listens on it.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = free.local_addr().expect("addr");
    drop(free);
    let proxy = FaultProxy::start(target).expect("proxy");
    let mut s = connect(&proxy);
    assert!(read_until_closed(&mut s).is_empty());
    // Counted before the client was closed.
    assert_eq!(proxy.stats().connect_failures, 1);
}

/// A guarded run whose finalize connection is cut after the finalize reached PostgreSQL and
/// before its reply came back: the runner's settle path must find the commit, run the effects
/// once, and a later duplicate must not run them again. Checked from the database.
mod ambiguous_commit_through_postgres {
    use std::sync::Arc;

    use diesel::{PgConnection, RunQueryDsl};
    use safejob_core::{
        EffectsContext, EffectsMode, IdempotencyKey, JobState, KeyError, LeaseStore, Outcome,
        PerformContext, Report, Runner, SafeJob,
    };
    use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt};
    use safejob_test_kit::proxy::FaultProxy;

    /// Bound into the finalize statement with the result: the bytes the proxy matches. The
    /// store prepares its statements once per connection, so after the first use only the
    /// statement's name and its parameters go over the wire, never `UPDATE safe_jobs` again.
    const MARKER: &str = "proxy-test-finalize-marker";

    struct Charge {
        id: u32,
        /// Where after-commit effects write (a connection that is not proxied).
        direct: Arc<DieselStore>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct JobError(String);

    fn effect_sql(id: u32, fence: u64) -> String {
        format!("INSERT INTO proxy_effects (id, fence) VALUES ({id}, {fence})")
    }

    impl SafeJob for Charge {
        type Error = JobError;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["proxy-test", &self.id.to_string()])
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, JobError> {
            Ok(Outcome::json(serde_json::json!({ "tag": MARKER })))
        }
        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), JobError> {
            let sql = effect_sql(self.id, ctx.fence());
            if ctx.is_transactional() {
                let conn = ctx
                    .diesel_connection::<PgConnection>()
                    .map_err(|e| JobError(e.to_string()))?;
                diesel::sql_query(sql).execute(conn).map(drop)
            } else {
                self.direct
                    .with_connection(|c| match c {
                        ConnectionRef::Postgres(c) => diesel::sql_query(&sql).execute(*c).map(drop),
                        #[allow(unreachable_patterns)]
                        _ => unreachable!("a PostgreSQL store"),
                    })
                    .map_err(|e| JobError(e.to_string()))?
            }
            .map_err(|e| JobError(e.to_string()))
        }
    }

    fn count(store: &DieselStore, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let rows: Vec<N> = store
            .with_connection(|c| match c {
                ConnectionRef::Postgres(c) => diesel::sql_query(sql).load(*c),
                #[allow(unreachable_patterns)]
                _ => unreachable!("a PostgreSQL store"),
            })
            .expect("connection")
            .expect("query");
        rows[0].n
    }

    struct Schema {
        admin: DieselStore,
        name: String,
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let _ = self.admin.with_connection(|c| {
                c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            });
        }
    }

    fn url() -> Option<String> {
        match std::env::var("SAFEJOB_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("SAFEJOB_REQUIRE_BACKENDS").is_ok_and(|v| v == "1") => {
                panic!("SAFEJOB_REQUIRE_BACKENDS=1 but SAFEJOB_TEST_POSTGRES_URL is not set")
            }
            _ => {
                println!("skipped: SAFEJOB_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    fn builder_on(url: &str, schema: &str) -> safejob_diesel::DieselStoreBuilder {
        let set = format!("SET search_path TO {schema}");
        DieselStore::builder(url).on_connect(move |c| c.batch_execute(&set))
    }

    fn run(mode: EffectsMode, pattern: &[u8]) {
        let Some(url) = url() else { return };
        let parsed = url::Url::parse(&url).expect("SAFEJOB_TEST_POSTGRES_URL is a URL");
        let host = parsed.host_str().expect("a host");
        let port = parsed.port().unwrap_or(5432);
        let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .expect("resolve")
            .find(|a| a.ip().is_loopback())
            .expect("the test database must be on the loopback interface");

        let name = format!(
            "sj_proxy_{}_{}",
            std::process::id(),
            if mode == EffectsMode::Transactional {
                "tx"
            } else {
                "ac"
            }
        );
        let schema = Schema {
            admin: DieselStore::connect(&url).expect("connect"),
            name: name.clone(),
        };
        schema
            .admin
            .with_connection(|c| {
                c.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
                ))
            })
            .expect("connection")
            .expect("create schema");
        let direct = Arc::new(builder_on(&url, &name).build().expect("direct store"));
        direct.migrate().expect("migrate");
        direct
            .with_connection(|c| {
                c.batch_execute(
                    "CREATE TABLE proxy_effects (id BIGINT NOT NULL, fence BIGINT NOT NULL)",
                )
            })
            .expect("connection")
            .expect("create proxy_effects");

        let proxy = FaultProxy::start(target).expect("proxy");
        let mut via = parsed.clone();
        via.set_host(Some("127.0.0.1")).expect("host");
        via.set_port(Some(proxy.local_addr().port())).expect("port");
        // In clear text, so the proxy can see what is sent (libpq prefers TLS when offered).
        via.query_pairs_mut().append_pair("sslmode", "disable");
        let proxied = Arc::new(
            builder_on(via.as_str(), &name)
                .build()
                .expect("store through the proxy"),
        );
        let runner = Runner::builder(proxied.clone())
            .effects(mode)
            .build()
            .expect("runner");

        // Warm up: one job end to end, so the finalize statement is already prepared on the
        // connection and only its parameters go over the wire next time.
        let warm = Charge {
            id: 1,
            direct: direct.clone(),
        };
        assert!(matches!(
            runner.run(&warm).expect("warm-up run"),
            Report::Succeeded { .. }
        ));

        proxy.cut_after_match(pattern.to_vec());
        let job = Charge {
            id: 2,
            direct: direct.clone(),
        };
        let report = runner
            .run(&job)
            .expect("the ambiguous finalize is resolved");
        assert!(
            matches!(report, Report::Succeeded { .. }),
            "the commit happened, so this run won: {report:?}"
        );
        assert_eq!(
            proxy.stats().ambiguous_cuts,
            1,
            "the finalize connection was cut after the statement reached the server"
        );
        let row = direct
            .get(job.key().expect("key").digest())
            .expect("get")
            .expect("row");
        assert_eq!(row.state, JobState::Succeeded);
        assert_eq!(row.fence, 1, "one attempt, no takeover");
        assert_eq!(
            count(
                &direct,
                "SELECT COUNT(*) AS n FROM proxy_effects WHERE id = 2"
            ),
            1
        );

        // A duplicate replays; the effects stay at one.
        assert!(matches!(
            runner.run(&job).expect("duplicate"),
            Report::AlreadySucceeded { .. }
        ));
        assert_eq!(
            count(
                &direct,
                "SELECT COUNT(*) AS n FROM proxy_effects WHERE id = 2"
            ),
            1
        );
        assert_eq!(
            count(
                &direct,
                "SELECT COUNT(*) AS n FROM safe_jobs WHERE state = 'succeeded' AND effects = 'done'"
            ),
            2
        );
    }

    #[test]
    fn after_commit_finalize_cut_after_the_update_was_sent() {
        run(EffectsMode::AfterCommit, MARKER.as_bytes());
    }

    #[test]
    fn transactional_finalize_cut_after_commit_was_sent() {
        run(EffectsMode::Transactional, b"COMMIT");
    }
}
