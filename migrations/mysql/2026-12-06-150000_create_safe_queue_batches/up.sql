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

-- The audit ledger (2026-12-06-140000) learns batches: a job's update entry carries its
-- batch_id (the trigger is recreated with it), and the batch's own moves are entries of entity
-- 'batch' (running at dispatch, then its end), deleted with the batch's row.
DROP TRIGGER safe_history_job_update;
CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs FOR EACH ROW
BEGIN
    IF (NOT (OLD.state <=> NEW.state) OR NOT (OLD.fence <=> NEW.fence))
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, job_id, batch_id, from_state, to_state, fence, attempt,
            worker, at, reason)
        VALUES ('job', NEW.id, NEW.batch_id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE WHEN NOT (NEW.errors <=> OLD.errors) THEN CONCAT(
                JSON_UNQUOTE(JSON_EXTRACT(NEW.errors,
                    CONCAT('$[', JSON_LENGTH(NEW.errors) - 1, '].kind'))),
                ': ',
                JSON_UNQUOTE(JSON_EXTRACT(NEW.errors,
                    CONCAT('$[', JSON_LENGTH(NEW.errors) - 1, '].message')))) END);
    END IF;
END;

CREATE TRIGGER safe_history_batch_insert AFTER INSERT ON safe_queue_batches FOR EACH ROW
BEGIN
    IF (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, batch_id, from_state, to_state, at)
        VALUES ('batch', NEW.id, NULL, NEW.state, NEW.updated_at);
    END IF;
END;

CREATE TRIGGER safe_history_batch_update AFTER UPDATE ON safe_queue_batches FOR EACH ROW
BEGIN
    IF NOT (OLD.state <=> NEW.state)
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, batch_id, from_state, to_state, at)
        VALUES ('batch', NEW.id, OLD.state, NEW.state, NEW.updated_at);
    END IF;
END;

CREATE TRIGGER safe_history_batch_delete AFTER DELETE ON safe_queue_batches FOR EACH ROW
    DELETE FROM safe_history WHERE batch_id = OLD.id AND entity = 'batch';
