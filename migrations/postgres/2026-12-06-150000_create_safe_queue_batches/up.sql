-- Workflows (safejob_core::workflow): one row per batch, its dependency edges, and on each job
-- the batch it belongs to (and its member id there) and the result it stored for its dependents. A batch's state is
-- running until every member ended; the transaction that ends its last member writes the final
-- state (succeeded, failed, cancelled) once, conditionally on 'running', and releases the
-- callback job (inserted 'blocked' with the batch). Member counts are not stored: they are
-- counted from the members' own states, so they can never disagree with them. Settling a batch
-- takes its row lock first (SELECT … FOR UPDATE), so two members ending at once see each other.
CREATE TABLE safe_queue_batches (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT        NOT NULL,
    policy           TEXT        NOT NULL,
    state            TEXT        NOT NULL,
    cancel_requested SMALLINT    NOT NULL DEFAULT 0,
    callback_job_id  BIGINT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX safe_queue_batches_state ON safe_queue_batches (state, id);

-- job_id runs once depends_on succeeded (both members of batch_id).
CREATE TABLE safe_queue_deps (
    batch_id   BIGINT NOT NULL,
    job_id     BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX safe_queue_deps_batch ON safe_queue_deps (batch_id);

ALTER TABLE safe_queue_jobs ADD COLUMN batch_id BIGINT;
ALTER TABLE safe_queue_jobs ADD COLUMN batch_member TEXT;
ALTER TABLE safe_queue_jobs ADD COLUMN result TEXT;
CREATE INDEX safe_queue_jobs_batch ON safe_queue_jobs (batch_id) WHERE batch_id IS NOT NULL;
