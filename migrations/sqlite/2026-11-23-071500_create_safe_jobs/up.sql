-- One row per idempotency key, identified by the key's SHA-256 (32 raw bytes: half the index of
-- hex text, and bytewise order equals KeyDigest order, so listings page identically everywhere).
-- state and effects are plain text read through a closed enum; an unknown value is reported as a
-- corrupt row, never rewritten. Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.SSS' from SQLite's
-- own clock (millisecond precision, which is SQLite's): fixed width, so text order is time order.
CREATE TABLE safe_jobs (
    digest           BLOB    NOT NULL PRIMARY KEY CHECK (length(digest) = 32),
    fingerprint      BLOB             CHECK (fingerprint IS NULL OR length(fingerprint) = 32),
    state            TEXT    NOT NULL,
    fence            INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    owner            TEXT,
    lease_expires_at TEXT,
    result           TEXT,
    failure          TEXT,
    last_error       TEXT,
    effects          TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    finalized_at     TEXT
) WITHOUT ROWID;

-- Operators: rows by state, and running rows whose lease expired.
CREATE INDEX safe_jobs_state_expiry ON safe_jobs (state, lease_expires_at);
-- Operators: succeeded rows whose effects are in doubt (marked, or pending past their window).
CREATE INDEX safe_jobs_effects_expiry ON safe_jobs (lease_expires_at)
    WHERE effects IN ('pending', 'in_doubt');
