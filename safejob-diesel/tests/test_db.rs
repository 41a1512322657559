//! `safejob_diesel::testing::TestDb`, the ready-made harness: each one is a database of its own,
//! removed when it is dropped. (What it answers without its environment variable is in
//! `tests/test_db_env.rs`.)

#[cfg(feature = "sqlite")]
#[test]
fn a_sqlite_test_db_is_a_migrated_file_removed_on_drop() {
    use safejob_diesel::testing::TestDb;

    let db = TestDb::sqlite().unwrap_or_else(|e| panic!("{e}"));
    let path = std::path::PathBuf::from(db.url().strip_prefix("sqlite://").expect("a file URL"));
    assert!(path.exists(), "{}", path.display());
    assert_eq!(
        db.query_i64("SELECT COUNT(*) AS n FROM safe_jobs").unwrap(),
        0
    );
    assert_eq!(db.schema(), None);
    drop(db);
    assert!(!path.exists(), "{} outlived its TestDb", path.display());
}

/// Two test databases on one server do not see each other's tables, and a dropped one is gone.
/// Catches: a shared schema or database (the second would see the first's table), and a drop
/// that leaves it behind.
#[cfg(feature = "postgres")]
#[test]
fn postgres_test_dbs_are_separate_schemas_dropped_on_drop() {
    use safejob_diesel::testing::TestDb;

    let Some(first) = TestDb::postgres_from_env().unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    let second = TestDb::postgres_from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the variable was set a moment ago");
    let schema = first.schema().expect("a schema").to_owned();
    assert_ne!(second.schema(), Some(schema.as_str()));
    first.execute("CREATE TABLE ledger (entry TEXT)").unwrap();
    let ledgers = "SELECT COUNT(*) AS n FROM information_schema.tables \
                   WHERE table_schema = current_schema() AND table_name = 'ledger'";
    assert_eq!(first.query_i64(ledgers).unwrap(), 1);
    assert_eq!(second.query_i64(ledgers).unwrap(), 0);
    drop(first);
    let left = format!(
        "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{schema}'"
    );
    assert_eq!(
        second.query_i64(&left).unwrap(),
        0,
        "{schema} outlived its TestDb"
    );
}

/// The same on MySQL/MariaDB, with a database per test.
#[cfg(feature = "mysql")]
#[test]
fn mysql_test_dbs_are_separate_databases_dropped_on_drop() {
    use safejob_diesel::testing::TestDb;

    let Some(first) = TestDb::mysql_from_env().unwrap_or_else(|e| panic!("{e}")) else {
        return;
    };
    let second = TestDb::mysql_from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the variable was set a moment ago");
    let database = first.url().rsplit('/').next().expect("a path").to_owned();
    assert!(!second.url().ends_with(&database));
    first.execute("CREATE TABLE ledger (entry TEXT)").unwrap();
    let ledgers = "SELECT COUNT(*) AS n FROM information_schema.tables \
                   WHERE table_schema = DATABASE() AND table_name = 'ledger'";
    assert_eq!(first.query_i64(ledgers).unwrap(), 1);
    assert_eq!(second.query_i64(ledgers).unwrap(), 0);
    drop(first);
    let left = format!(
        "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{database}'"
    );
    assert_eq!(
        second.query_i64(&left).unwrap(),
        0,
        "{database} outlived its TestDb"
    );
}
