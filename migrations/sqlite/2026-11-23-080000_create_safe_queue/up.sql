-- The durable queue: one row per queued job, next to the guard's safe_jobs rows (a guarded job's
-- guard_digest names its safe_jobs row). state is plain text read through the closed QueueState
-- enum. A job is claimable when it waits (pending, scheduled, retrying) and run_at has passed on
-- the database clock. Every write by a worker is fenced by (state = 'running', fence). errors is
-- a JSON array of the last 20 errors, oldest first; payload, metadata and progress are JSON text.
-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.SSS' from SQLite's own clock, as in safe_jobs.
-- AUTOINCREMENT: ids are never reused, so they keep increasing with insertion order.
CREATE TABLE safe_queue_jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL,
    queue             TEXT    NOT NULL,
    payload           TEXT    NOT NULL,
    metadata          TEXT    NOT NULL,
    priority          INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    run_at            TEXT    NOT NULL,
    attempts          INTEGER NOT NULL,
    max_attempts      INTEGER NOT NULL,
    fence             INTEGER NOT NULL,
    owner             TEXT,
    lease_expires_at  TEXT,
    attempted_at      TEXT,
    idempotent        INTEGER NOT NULL,
    unique_key        BLOB    CHECK (length(unique_key) = 32),
    guard_digest      BLOB    CHECK (length(guard_digest) = 32),
    guard_fingerprint BLOB    CHECK (length(guard_fingerprint) = 32),
    progress          TEXT,
    errors            TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    finished_at       TEXT
);

-- A unique key is held while its job is live: a second live job with it cannot exist.
CREATE UNIQUE INDEX safe_queue_jobs_unique ON safe_queue_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state NOT IN ('succeeded', 'dead', 'cancelled');
-- Claims: waiting jobs in claim order.
CREATE INDEX safe_queue_jobs_due ON safe_queue_jobs (priority, run_at, id)
    WHERE state IN ('pending', 'scheduled', 'retrying');
-- The reaper: running jobs by lease expiry.
CREATE INDEX safe_queue_jobs_leases ON safe_queue_jobs (lease_expires_at) WHERE state = 'running';
-- Pruning: finished jobs by age.
CREATE INDEX safe_queue_jobs_finished ON safe_queue_jobs (finished_at)
    WHERE finished_at IS NOT NULL;
-- Operators: listings by state.
CREATE INDEX safe_queue_jobs_state ON safe_queue_jobs (state, id);

-- Live workers and their last heartbeat (database clock); queues is a JSON array of names.
CREATE TABLE safe_queue_workers (
    id             TEXT    PRIMARY KEY,
    queues         TEXT    NOT NULL,
    concurrency    INTEGER NOT NULL,
    last_heartbeat TEXT    NOT NULL
);
