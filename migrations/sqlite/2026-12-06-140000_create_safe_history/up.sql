-- The audit ledger (safejob_core::history): one row per state transition of a job
-- (safe_queue_jobs), a guard key (safe_jobs) or a schedule (safe_queue_schedules), appended by
-- the triggers below in the same transaction as the transition, so the history cannot disagree
-- with the state, whichever code path (claim, completion, reaper, operator, guard, schedule
-- fire; present or future) writes the row. A transition is a row's insert, or an update that
-- changes its state or fence (a schedule: its revision). `at` is the row's own updated_at, the
-- store clock the statement wrote. Deleting a row (prune, purge) deletes its history.
-- entity is 'job', 'key', 'batch' (reserved for workflows: batch_id is their column) or
-- 'schedule'. Timestamps are fixed-width UTC text like the other tables'.
CREATE TABLE safe_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    entity      TEXT    NOT NULL,
    job_id      INTEGER,
    key_digest  BLOB    CHECK (key_digest IS NULL OR length(key_digest) = 32),
    batch_id    INTEGER,
    schedule    TEXT,
    from_state  TEXT,
    to_state    TEXT    NOT NULL,
    fence       INTEGER,
    attempt     INTEGER,
    worker      TEXT,
    at          TEXT    NOT NULL,
    reason      TEXT
);
-- Readers and deletes: one entity's entries in order.
CREATE INDEX safe_history_job ON safe_history (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX safe_history_key ON safe_history (key_digest, id) WHERE key_digest IS NOT NULL;
CREATE INDEX safe_history_batch ON safe_history (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX safe_history_schedule ON safe_history (schedule, id) WHERE schedule IS NOT NULL;

-- One row: whether the triggers record (1, the default) or not (0). Database-wide.
CREATE TABLE safe_history_settings (
    id      INTEGER  PRIMARY KEY CHECK (id = 1),
    enabled SMALLINT NOT NULL
);
INSERT INTO safe_history_settings (id, enabled) VALUES (1, 1);

CREATE TRIGGER safe_history_job_insert AFTER INSERT ON safe_queue_jobs
WHEN (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker, at)
    VALUES ('job', NEW.id, NULL, NEW.state, NEW.fence, NEW.attempts, NEW.owner, NEW.updated_at);
END;

CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs
WHEN (OLD.state IS NOT NEW.state OR OLD.fence IS NOT NEW.fence)
    AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker, at,
        reason)
    VALUES ('job', NEW.id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
        COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
        CASE WHEN NEW.errors IS NOT OLD.errors
            THEN json_extract(NEW.errors, '$[#-1].kind') || ': '
                || json_extract(NEW.errors, '$[#-1].message') END);
END;

CREATE TRIGGER safe_history_job_delete AFTER DELETE ON safe_queue_jobs
BEGIN
    DELETE FROM safe_history WHERE job_id = OLD.id AND entity = 'job';
END;

CREATE TRIGGER safe_history_key_insert AFTER INSERT ON safe_jobs
WHEN (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt, worker, at)
    VALUES ('key', NEW.digest, NULL, NEW.state, NEW.fence, NEW.attempts, NEW.owner,
        NEW.updated_at);
END;

CREATE TRIGGER safe_history_key_update AFTER UPDATE ON safe_jobs
WHEN (OLD.state IS NOT NEW.state OR OLD.fence IS NOT NEW.fence)
    AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt, worker,
        at, reason)
    VALUES ('key', NEW.digest, OLD.state, NEW.state, NEW.fence, NEW.attempts,
        COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
        CASE NEW.state
            WHEN 'released' THEN NEW.last_error
            WHEN 'failed' THEN json_extract(NEW.failure, '$.code') || ': '
                || json_extract(NEW.failure, '$.message') END);
END;

CREATE TRIGGER safe_history_key_delete AFTER DELETE ON safe_jobs
BEGIN
    DELETE FROM safe_history WHERE key_digest = OLD.digest AND entity = 'key';
END;

CREATE TRIGGER safe_history_schedule_insert AFTER INSERT ON safe_queue_schedules
WHEN (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, schedule, from_state, to_state, fence, at)
    VALUES ('schedule', NEW.name, NULL,
        CASE WHEN NEW.paused <> 0 THEN 'paused' WHEN NEW.next_run_at IS NULL THEN 'done'
            ELSE 'active' END,
        NEW.revision, NEW.updated_at);
END;

CREATE TRIGGER safe_history_schedule_update AFTER UPDATE ON safe_queue_schedules
WHEN OLD.revision IS NOT NEW.revision
    AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1
BEGIN
    INSERT INTO safe_history (entity, schedule, from_state, to_state, fence, at, reason)
    VALUES ('schedule', NEW.name,
        CASE WHEN OLD.paused <> 0 THEN 'paused' WHEN OLD.next_run_at IS NULL THEN 'done'
            ELSE 'active' END,
        CASE WHEN NEW.paused <> 0 THEN 'paused' WHEN NEW.next_run_at IS NULL THEN 'done'
            ELSE 'active' END,
        NEW.revision, NEW.updated_at,
        CASE WHEN NEW.last_tick IS NOT OLD.last_tick THEN 'tick' END);
END;

CREATE TRIGGER safe_history_schedule_delete AFTER DELETE ON safe_queue_schedules
BEGIN
    DELETE FROM safe_history WHERE schedule = OLD.name AND entity = 'schedule';
END;
