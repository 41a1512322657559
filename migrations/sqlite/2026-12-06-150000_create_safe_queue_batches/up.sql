-- Workflows (safejob_core::workflow): one row per batch, its dependency edges, and on each job
-- the batch it belongs to (and its member id there) and the result it stored for its dependents. A batch's state is
-- running until every member ended; the transaction that ends its last member writes the final
-- state (succeeded, failed, cancelled) once, conditionally on 'running', and releases the
-- callback job (inserted 'blocked' with the batch). Member counts are not stored: they are
-- counted from the members' own states, so they can never disagree with them.
CREATE TABLE safe_queue_batches (
    id               INTEGER  PRIMARY KEY AUTOINCREMENT,
    name             TEXT     NOT NULL,
    policy           TEXT     NOT NULL,
    state            TEXT     NOT NULL,
    cancel_requested SMALLINT NOT NULL DEFAULT 0,
    callback_job_id  BIGINT,
    created_at       TEXT     NOT NULL,
    updated_at       TEXT     NOT NULL,
    finished_at      TEXT
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

-- The audit ledger (2026-12-06-140000) learns batches: a job's update entry carries its
-- batch_id (the trigger is recreated with it), and the batch's own moves are entries of entity
-- 'batch' (running at dispatch, then its end), deleted with the batch's row.
DROP TRIGGER safe_history_job_update;
CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs
WHEN (OLD.state IS NOT NEW.state OR OLD.fence IS NOT NEW.fence)
    AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, job_id, batch_id, from_state, to_state, fence, attempt,
        worker, at, reason)
    VALUES ('job', NEW.id, NEW.batch_id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
        COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
        CASE WHEN NEW.errors IS NOT OLD.errors
            THEN json_extract(NEW.errors, '$[#-1].kind') || ': '
                || json_extract(NEW.errors, '$[#-1].message') END);
END;

CREATE TRIGGER safe_history_batch_insert AFTER INSERT ON safe_queue_batches
WHEN (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, batch_id, from_state, to_state, at)
    VALUES ('batch', NEW.id, NULL, NEW.state, NEW.updated_at);
END;

CREATE TRIGGER safe_history_batch_update AFTER UPDATE ON safe_queue_batches
WHEN OLD.state IS NOT NEW.state
    AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, batch_id, from_state, to_state, at)
    VALUES ('batch', NEW.id, OLD.state, NEW.state, NEW.updated_at);
END;

CREATE TRIGGER safe_history_batch_delete AFTER DELETE ON safe_queue_batches
BEGIN
    DELETE FROM safe_history WHERE batch_id = OLD.id AND entity = 'batch';
END;
