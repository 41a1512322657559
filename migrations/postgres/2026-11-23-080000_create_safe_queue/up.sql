-- The durable queue: one row per queued job, next to the guard's safe_jobs rows (a guarded job's
-- guard_digest names its safe_jobs row). state is plain text read through the closed QueueState
-- enum. A job is claimable when it waits (pending, scheduled, retrying) and run_at has passed on
-- the database clock. Every write by a worker is fenced by (state = 'running', fence). errors is
-- a JSON array of the last 20 errors, oldest first; payload, metadata and progress are JSON text.
CREATE TABLE safe_queue_jobs (
    id                BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              TEXT        NOT NULL,
    queue             TEXT        NOT NULL,
    payload           TEXT        NOT NULL,
    metadata          TEXT        NOT NULL,
    priority          BIGINT      NOT NULL,
    state             TEXT        NOT NULL,
    run_at            TIMESTAMPTZ NOT NULL,
    attempts          BIGINT      NOT NULL,
    max_attempts      BIGINT      NOT NULL,
    fence             BIGINT      NOT NULL,
    owner             TEXT,
    lease_expires_at  TIMESTAMPTZ,
    attempted_at      TIMESTAMPTZ,
    idempotent        BIGINT      NOT NULL,
    unique_key        BYTEA       CHECK (octet_length(unique_key) = 32),
    guard_digest      BYTEA       CHECK (octet_length(guard_digest) = 32),
    guard_fingerprint BYTEA       CHECK (octet_length(guard_fingerprint) = 32),
    progress          TEXT,
    errors            TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ
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
    id             TEXT        PRIMARY KEY,
    queues         TEXT        NOT NULL,
    concurrency    BIGINT      NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL
);
