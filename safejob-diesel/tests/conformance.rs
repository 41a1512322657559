//! The test kit's `LeaseStore` conformance suite, one `#[test]` per case, on every backend, and
//! the group-commit crash case (a store-specific fault: `GroupCrashHarness`).

mod common;

#[cfg(feature = "sqlite")]
mod sqlite {
    safejob_test_kit::lease_store_conformance!(|| crate::common::sqlite("conformance"));

    #[test]
    fn crash_between_group_commit_and_answers() {
        let db = crate::common::sqlite_with("group-crash", |b| b.group_commit(true));
        safejob_test_kit::conformance::crash_between_group_commit_and_answers(&db);
    }

    /// The whole suite with group commit off (SQLite's default is on): every primitive alone.
    mod group_commit_off {
        safejob_test_kit::lease_store_conformance!(|| crate::common::sqlite_with(
            "conformance-nogroup",
            |b| b.group_commit(false)
        ));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    // `None` (skipped) when SAFEJOB_TEST_POSTGRES_URL is not set, a failure when it is required.
    safejob_test_kit::lease_store_conformance!(optional || crate::common::postgres("conformance"));

    #[test]
    fn crash_between_group_commit_and_answers() {
        let Some(db) = crate::common::postgres_with("group-crash", |b| b.group_commit(true)) else {
            return;
        };
        safejob_test_kit::conformance::crash_between_group_commit_and_answers(&db);
    }

    /// The whole suite with group commit on.
    mod group_commit {
        safejob_test_kit::lease_store_conformance!(
            optional || crate::common::postgres_with("conformance-group", |b| b.group_commit(true))
        );
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    safejob_test_kit::lease_store_conformance!(optional || crate::common::mysql("conformance"));

    #[test]
    fn crash_between_group_commit_and_answers() {
        let Some(db) = crate::common::mysql_with("group-crash", |b| b.group_commit(true)) else {
            return;
        };
        safejob_test_kit::conformance::crash_between_group_commit_and_answers(&db);
    }

    /// The whole suite with group commit on.
    mod group_commit {
        safejob_test_kit::lease_store_conformance!(
            optional || crate::common::mysql_with("conformance-group", |b| b.group_commit(true))
        );
    }
}
