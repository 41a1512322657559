-- One row per idempotency key, identified by the key's SHA-256 (32 raw bytes: half the index of
-- hex text, and bytewise order equals KeyDigest order, so listings page identically everywhere).
-- state and effects are plain text (never a PostgreSQL enum: adding a state needs no type change)
-- read through a closed enum; an unknown value is reported as a corrupt row, never rewritten.
-- Timestamps come from the database clock inside the statements.
CREATE TABLE safe_jobs (
    digest           BYTEA       NOT NULL PRIMARY KEY CHECK (octet_length(digest) = 32),
    fingerprint      BYTEA                CHECK (octet_length(fingerprint) = 32),
    state            TEXT        NOT NULL,
    fence            BIGINT      NOT NULL,
    attempts         BIGINT      NOT NULL,
    owner            TEXT,
    lease_expires_at TIMESTAMPTZ,
    result           TEXT,
    failure          TEXT,
    last_error       TEXT,
    effects          TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finalized_at     TIMESTAMPTZ
);

-- Operators: rows by state, and running rows whose lease expired.
CREATE INDEX safe_jobs_state_expiry ON safe_jobs (state, lease_expires_at);
-- Operators: succeeded rows whose effects are in doubt (marked, or pending past their window).
CREATE INDEX safe_jobs_effects_expiry ON safe_jobs (lease_expires_at)
    WHERE effects IN ('pending', 'in_doubt');
