-- The audit ledger (safejob_core::history): one row per state transition of a job
-- (safe_queue_jobs), a guard key (safe_jobs) or a schedule (safe_queue_schedules), appended by
-- the row triggers below in the same transaction as the transition, so the history cannot
-- disagree with the state, whichever code path (claim, completion, reaper, operator, guard,
-- schedule fire; present or future) writes the row. A transition is a row's insert, or an update
-- that changes its state or fence (a schedule: its revision). `at` is the row's own updated_at,
-- the store clock the statement wrote. Deleting a row (prune, purge) deletes its history.
-- entity is 'job', 'key', 'batch' (reserved for workflows: batch_id is their column) or
-- 'schedule'. An INSERT ... ON DUPLICATE KEY UPDATE that finds its row fires no insert trigger.
CREATE TABLE safe_history (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    entity      VARCHAR(16)  NOT NULL,
    job_id      BIGINT       NULL,
    key_digest  BINARY(32)   NULL,
    batch_id    BIGINT       NULL,
    schedule    VARCHAR(200) NULL,
    from_state  VARCHAR(32)  NULL,
    to_state    VARCHAR(32)  NOT NULL,
    fence       BIGINT       NULL,
    attempt     BIGINT       NULL,
    worker      TEXT         NULL,
    at          DATETIME(6)  NOT NULL,
    reason      MEDIUMTEXT   NULL,
    PRIMARY KEY (id),
    -- Readers and deletes: one entity's entries in order.
    KEY safe_history_job (job_id, id),
    KEY safe_history_key (key_digest, id),
    KEY safe_history_batch (batch_id, id),
    KEY safe_history_schedule (schedule, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row: whether the triggers record (1, the default) or not (0). Database-wide.
CREATE TABLE safe_history_settings (
    id      SMALLINT NOT NULL,
    enabled SMALLINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;
INSERT INTO safe_history_settings (id, enabled) VALUES (1, 1);

CREATE TRIGGER safe_history_job_insert AFTER INSERT ON safe_queue_jobs FOR EACH ROW
BEGIN
    IF (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker, at)
        VALUES ('job', NEW.id, NULL, NEW.state, NEW.fence, NEW.attempts, NEW.owner,
            NEW.updated_at);
    END IF;
END;

CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs FOR EACH ROW
BEGIN
    IF (NOT (OLD.state <=> NEW.state) OR NOT (OLD.fence <=> NEW.fence))
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker,
            at, reason)
        VALUES ('job', NEW.id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE WHEN NOT (NEW.errors <=> OLD.errors) THEN CONCAT(
                JSON_UNQUOTE(JSON_EXTRACT(NEW.errors,
                    CONCAT('$[', JSON_LENGTH(NEW.errors) - 1, '].kind'))),
                ': ',
                JSON_UNQUOTE(JSON_EXTRACT(NEW.errors,
                    CONCAT('$[', JSON_LENGTH(NEW.errors) - 1, '].message')))) END);
    END IF;
END;

CREATE TRIGGER safe_history_job_delete AFTER DELETE ON safe_queue_jobs FOR EACH ROW
    DELETE FROM safe_history WHERE job_id = OLD.id AND entity = 'job';

CREATE TRIGGER safe_history_key_insert AFTER INSERT ON safe_jobs FOR EACH ROW
BEGIN
    IF (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt,
            worker, at)
        VALUES ('key', NEW.digest, NULL, NEW.state, NEW.fence, NEW.attempts, NEW.owner,
            NEW.updated_at);
    END IF;
END;

CREATE TRIGGER safe_history_key_update AFTER UPDATE ON safe_jobs FOR EACH ROW
BEGIN
    IF (NOT (OLD.state <=> NEW.state) OR NOT (OLD.fence <=> NEW.fence))
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt,
            worker, at, reason)
        VALUES ('key', NEW.digest, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE NEW.state
                WHEN 'released' THEN NEW.last_error
                WHEN 'failed' THEN CONCAT(
                    JSON_UNQUOTE(JSON_EXTRACT(NEW.failure, '$.code')), ': ',
                    JSON_UNQUOTE(JSON_EXTRACT(NEW.failure, '$.message'))) END);
    END IF;
END;

CREATE TRIGGER safe_history_key_delete AFTER DELETE ON safe_jobs FOR EACH ROW
    DELETE FROM safe_history WHERE key_digest = OLD.digest AND entity = 'key';

CREATE TRIGGER safe_history_schedule_insert AFTER INSERT ON safe_queue_schedules FOR EACH ROW
BEGIN
    IF (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, schedule, from_state, to_state, fence, at)
        VALUES ('schedule', NEW.name, NULL,
            CASE WHEN NEW.paused <> 0 THEN 'paused' WHEN NEW.next_run_at IS NULL THEN 'done'
                ELSE 'active' END,
            NEW.revision, NEW.updated_at);
    END IF;
END;

CREATE TRIGGER safe_history_schedule_update AFTER UPDATE ON safe_queue_schedules FOR EACH ROW
BEGIN
    IF NOT (OLD.revision <=> NEW.revision)
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, schedule, from_state, to_state, fence, at, reason)
        VALUES ('schedule', NEW.name,
            CASE WHEN OLD.paused <> 0 THEN 'paused' WHEN OLD.next_run_at IS NULL THEN 'done'
                ELSE 'active' END,
            CASE WHEN NEW.paused <> 0 THEN 'paused' WHEN NEW.next_run_at IS NULL THEN 'done'
                ELSE 'active' END,
            NEW.revision, NEW.updated_at,
            CASE WHEN NOT (NEW.last_tick <=> OLD.last_tick) THEN 'tick' END);
    END IF;
END;

CREATE TRIGGER safe_history_schedule_delete AFTER DELETE ON safe_queue_schedules FOR EACH ROW
    DELETE FROM safe_history WHERE schedule = OLD.name AND entity = 'schedule';
