-- The durable queue: one row per queued job, next to the guard's safe_jobs rows (a guarded job's
-- guard_digest names its safe_jobs row). state is plain text with a binary collation, read
-- through the closed QueueState enum. A job is claimable when it waits (pending, scheduled,
-- retrying) and run_at has passed on the database clock. Every write by a worker is fenced by
-- (state = 'running', fence). errors is a JSON array of the last 20 errors, oldest first;
-- payload, metadata and progress are JSON text. Timestamps are DATETIME(6) written from
-- UTC_TIMESTAMP(6), as in safe_jobs. Claims use FOR UPDATE SKIP LOCKED (MariaDB >= 10.6,
-- MySQL >= 8.0).
CREATE TABLE safe_queue_jobs (
    id                BIGINT       NOT NULL AUTO_INCREMENT,
    kind              VARCHAR(255) NOT NULL,
    queue             VARCHAR(255) NOT NULL,
    payload           LONGTEXT     NOT NULL,
    metadata          LONGTEXT     NOT NULL,
    priority          BIGINT       NOT NULL,
    state             VARCHAR(16)  NOT NULL,
    run_at            DATETIME(6)  NOT NULL,
    attempts          BIGINT       NOT NULL,
    max_attempts      BIGINT       NOT NULL,
    fence             BIGINT       NOT NULL,
    owner             VARCHAR(255) NULL,
    lease_expires_at  DATETIME(6)  NULL,
    attempted_at      DATETIME(6)  NULL,
    idempotent        BIGINT       NOT NULL,
    unique_key        BINARY(32)   NULL,
    guard_digest      BINARY(32)   NULL,
    guard_fingerprint BINARY(32)   NULL,
    progress          LONGTEXT     NULL,
    errors            LONGTEXT     NOT NULL,
    created_at        DATETIME(6)  NOT NULL,
    updated_at        DATETIME(6)  NOT NULL,
    finished_at       DATETIME(6)  NULL,
    -- No RETURNING here: a batch insert tags its rows with a fresh token and reads them back by it.
    enqueue_token     VARCHAR(64)  NULL,
    -- No partial indexes here: the unique key of a live job, NULL once the job is finished, so
    -- the unique index below holds only live jobs' keys.
    live_unique_key   BINARY(32) AS (CASE WHEN state IN ('succeeded', 'dead', 'cancelled')
                          THEN NULL ELSE unique_key END) STORED,
    -- 1 while the job waits, else NULL: with `waiting = 1` a claim walks the index below in
    -- claim order and locks only the rows it takes (a filesort would lock every due row).
    waiting           TINYINT AS (CASE WHEN state IN ('pending', 'scheduled', 'retrying')
                          THEN 1 ELSE NULL END) STORED,
    PRIMARY KEY (id),
    UNIQUE KEY safe_queue_jobs_unique (live_unique_key),
    -- Claims: waiting jobs in claim order.
    KEY safe_queue_jobs_due (waiting, priority, run_at, id),
    -- The reaper: running jobs by lease expiry.
    KEY safe_queue_jobs_leases (state, lease_expires_at),
    -- Pruning: finished jobs by age.
    KEY safe_queue_jobs_finished (finished_at),
    KEY safe_queue_jobs_token (enqueue_token)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Live workers and their last heartbeat (database clock); queues is a JSON array of names.
CREATE TABLE safe_queue_workers (
    id             VARCHAR(255) NOT NULL,
    queues         LONGTEXT     NOT NULL,
    concurrency    BIGINT       NOT NULL,
    last_heartbeat DATETIME(6)  NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
