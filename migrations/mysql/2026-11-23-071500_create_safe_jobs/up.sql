-- One row per idempotency key, identified by the key's SHA-256 (32 raw bytes: half the index of
-- hex text, and bytewise order equals KeyDigest order, so listings page identically everywhere).
-- state and effects are plain text (never an ENUM column) with a binary collation, read through a
-- closed enum; an unknown value is reported as a corrupt row, never rewritten.
-- Timestamps are DATETIME(6) written from UTC_TIMESTAMP(6), so the session time zone never matters.
CREATE TABLE safe_jobs (
    digest           BINARY(32)  NOT NULL,
    fingerprint      BINARY(32)  NULL,
    state            VARCHAR(16) NOT NULL,
    fence            BIGINT      NOT NULL,
    attempts         BIGINT      NOT NULL,
    owner            TEXT        NULL,
    lease_expires_at DATETIME(6) NULL,
    result           LONGTEXT    NULL,
    failure          MEDIUMTEXT  NULL,
    last_error       MEDIUMTEXT  NULL,
    effects          VARCHAR(16) NOT NULL,
    created_at       DATETIME(6) NOT NULL,
    updated_at       DATETIME(6) NOT NULL,
    finalized_at     DATETIME(6) NULL,
    PRIMARY KEY (digest),
    -- Operators: rows by state, and running rows whose lease expired.
    KEY safe_jobs_state_expiry (state, lease_expires_at),
    -- Operators: succeeded rows whose effects are in doubt (MySQL has no partial indexes).
    KEY safe_jobs_effects_expiry (effects, lease_expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
