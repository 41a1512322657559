//! Construction errors: URLs, unreachable databases (without leaking passwords).

use safejob_diesel::{ConnectError, DieselStore};

#[test]
fn unsupported_and_malformed_urls_are_typed_errors() {
    match DieselStore::connect("oracle://scott:tiger@db/orcl") {
        Err(ConnectError::UnsupportedScheme { scheme }) => assert_eq!(scheme, "oracle"),
        other => panic!("expected UnsupportedScheme, got {other:?}"),
    }
    let err = DieselStore::connect("just-a-file.db").unwrap_err();
    assert!(matches!(err, ConnectError::MalformedUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("no scheme"), "{err}");
    let err = DieselStore::connect("sqlite://").unwrap_err();
    assert!(matches!(err, ConnectError::MalformedUrl { .. }), "{err:?}");
}

#[cfg(feature = "sqlite")]
#[test]
fn in_memory_sqlite_is_refused() {
    for url in [
        "sqlite::memory:",
        "sqlite://:memory:",
        "sqlite://file:x?mode=memory",
    ] {
        let err = DieselStore::connect(url).unwrap_err();
        assert!(
            matches!(err, ConnectError::InMemorySqlite),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains("use a file"), "{err}");
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn invalid_pool_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let err = DieselStore::builder(&url).max_size(0).build().unwrap_err();
    assert!(matches!(err, ConnectError::InvalidPool { .. }), "{err:?}");
    let err = DieselStore::builder(&url)
        .max_size(2)
        .min_idle(3)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConnectError::InvalidPool { .. }), "{err:?}");
}

#[cfg(feature = "sqlite")]
#[test]
fn an_unopenable_sqlite_file_names_its_path() {
    let err = DieselStore::connect("sqlite:///nonexistent-safejob-dir/sub/jobs.db").unwrap_err();
    match &err {
        ConnectError::Unreachable { target, .. } => {
            assert_eq!(target, "sqlite:///nonexistent-safejob-dir/sub/jobs.db")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_compiled_out_backend_names_its_feature() {
    let err = DieselStore::connect("postgres://app@localhost/jobs").unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::BackendNotCompiled {
                backend: "postgres",
                feature: "postgres"
            }
        ),
        "{err:?}"
    );
}

#[cfg(not(feature = "mysql"))]
#[test]
fn a_compiled_out_mysql_names_its_feature() {
    let err = DieselStore::connect("mariadb://app@localhost/jobs").unwrap_err();
    assert!(
        err.to_string()
            .contains("enable the `mysql` feature of safejob-diesel"),
        "{err}"
    );
}

/// Port 1 on the loopback refuses connections at once: unreachable, with the password nowhere in
/// the message, the source chain or `Debug`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn assert_unreachable_without_password(url: &str, shown_target: &str) {
    const PASSWORD: &str = "hunter2-Secret";
    let err = DieselStore::builder(url)
        .connection_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap_err();
    let mut texts = vec![err.to_string(), format!("{err:?}")];
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    match &err {
        ConnectError::Unreachable { target, .. } => assert_eq!(target, shown_target),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    for text in &texts {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
    assert!(texts[0].contains("127.0.0.1"), "{}", texts[0]);
}

#[cfg(feature = "postgres")]
#[test]
fn unreachable_postgres_names_the_host_never_the_password() {
    assert_unreachable_without_password(
        "postgres://alice:hunter2-Secret@127.0.0.1:1/ledger?connect_timeout=2",
        "postgres://alice@127.0.0.1:1/ledger",
    );
}

#[cfg(feature = "mysql")]
#[test]
fn unreachable_mysql_names_the_host_never_the_password() {
    assert_unreachable_without_password(
        "mysql://alice:hunter2-Secret@127.0.0.1:1/ledger",
        "mysql://alice@127.0.0.1:1/ledger",
    );
}

/// A wrong password against a live server is refused by the server; the message names the user
/// and host, never the password.
#[cfg(feature = "postgres")]
#[test]
fn a_refused_postgres_login_does_not_echo_the_password() {
    let Ok(base) = std::env::var("SAFEJOB_TEST_POSTGRES_URL") else {
        safejob_test_kit::report_skip("SAFEJOB_TEST_POSTGRES_URL not set");
        return;
    };
    let mut url = url::Url::parse(&base).expect("SAFEJOB_TEST_POSTGRES_URL is a URL");
    url.set_username("safejob_no_such_user").unwrap();
    url.set_password(Some("hunter2-Secret")).unwrap();
    let err = DieselStore::connect(url.as_str()).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2-Secret"), "{text}");
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
}
