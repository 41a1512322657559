-- Workflows (safejob_core::workflow): one row per batch, its dependency edges, and on each job
-- the batch it belongs to (and its member id there) and the result it stored for its dependents. A batch's state is
-- running until every member ended; the transaction that ends its last member writes the final
-- state (succeeded, failed, cancelled) once, conditionally on 'running', and releases the
-- callback job (inserted 'blocked' with the batch). Member counts are not stored: they are
-- counted from the members' own states, so they can never disagree with them. Settling a batch
-- takes its row lock first (SELECT … FOR UPDATE; sessions run READ COMMITTED), so two members
-- ending at once see each other.
CREATE TABLE safe_queue_batches (
    id               BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name             TEXT        NOT NULL,
    policy           VARCHAR(32) NOT NULL,
    state            VARCHAR(16) NOT NULL,
    cancel_requested SMALLINT    NOT NULL DEFAULT 0,
    callback_job_id  BIGINT      NULL,
    created_at       DATETIME(6) NOT NULL,
    updated_at       DATETIME(6) NOT NULL,
    finished_at      DATETIME(6) NULL,
    KEY safe_queue_batches_state (state, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- job_id runs once depends_on succeeded (both members of batch_id).
CREATE TABLE safe_queue_deps (
    batch_id   BIGINT NOT NULL,
    job_id     BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    PRIMARY KEY (job_id, depends_on),
    KEY safe_queue_deps_batch (batch_id)
) ENGINE = InnoDB;

ALTER TABLE safe_queue_jobs ADD COLUMN batch_id BIGINT NULL, ADD COLUMN batch_member TEXT NULL,
    ADD COLUMN result LONGTEXT NULL,
    ADD KEY safe_queue_jobs_batch (batch_id);
