//! The test kit's `LeaseStore` conformance suite, one `#[test]` per case, on every backend.

mod common;

#[cfg(feature = "sqlite")]
mod sqlite {
    safejob_test_kit::lease_store_conformance!(|| crate::common::sqlite("conformance"));
}

#[cfg(feature = "postgres")]
mod postgres {
    // `None` (skipped) when SAFEJOB_TEST_POSTGRES_URL is not set, a failure when it is required.
    safejob_test_kit::lease_store_conformance!(optional || crate::common::postgres("conformance"));
}

#[cfg(feature = "mysql")]
mod mysql {
    safejob_test_kit::lease_store_conformance!(optional || crate::common::mysql("conformance"));
}
