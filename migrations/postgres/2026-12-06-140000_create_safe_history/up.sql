-- The audit ledger (safejob_core::history): one row per state transition of a job
-- (safe_queue_jobs), a guard key (safe_jobs) or a schedule (safe_queue_schedules), appended by
-- the row triggers below in the same transaction as the transition, so the history cannot
-- disagree with the state, whichever code path (claim, completion, reaper, operator, guard,
-- schedule fire; present or future) writes the row. A transition is a row's insert, or an update
-- that changes its state or fence (a schedule: its revision); the triggers' WHEN clauses keep
-- every other update (renewals, progress) from calling a function at all. Job inserts are
-- recorded per statement (below), everything else per row. `at` is the row's own
-- updated_at, the store clock the statement wrote. Deleting a row (prune, purge) deletes its
-- history. entity is 'job', 'key', 'batch' (reserved for workflows: batch_id is their column) or
-- 'schedule'.
CREATE TABLE safe_history (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      TEXT        NOT NULL,
    job_id      BIGINT,
    key_digest  BYTEA       CHECK (octet_length(key_digest) = 32),
    batch_id    BIGINT,
    schedule    TEXT,
    from_state  TEXT,
    to_state    TEXT        NOT NULL,
    fence       BIGINT,
    attempt     BIGINT,
    worker      TEXT,
    at          TIMESTAMPTZ NOT NULL,
    reason      TEXT
);
-- Readers and deletes: one entity's entries in order.
CREATE INDEX safe_history_job ON safe_history (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX safe_history_key ON safe_history (key_digest, id) WHERE key_digest IS NOT NULL;
CREATE INDEX safe_history_batch ON safe_history (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX safe_history_schedule ON safe_history (schedule, id) WHERE schedule IS NOT NULL;

-- One row: whether the triggers record (1, the default) or not (0). Database-wide.
CREATE TABLE safe_history_settings (
    id      SMALLINT PRIMARY KEY CHECK (id = 1),
    enabled SMALLINT NOT NULL
);
INSERT INTO safe_history_settings (id, enabled) VALUES (1, 1);

CREATE FUNCTION safe_history_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM safe_history WHERE job_id = OLD.id AND entity = 'job';
    ELSE
        INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker,
            at, reason)
        SELECT 'job', NEW.id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE WHEN NEW.errors IS DISTINCT FROM OLD.errors
                THEN (CAST(NEW.errors AS jsonb) -> -1 ->> 'kind') || ': '
                    || (CAST(NEW.errors AS jsonb) -> -1 ->> 'message') END
        FROM safe_history_settings WHERE id = 1 AND enabled = 1;
    END IF;
    RETURN NULL;
END $$;

-- Enqueues insert jobs in batches of up to 2,000 rows: one statement-level trigger reads them
-- all from the transition table (one INSERT per batch instead of a function call per row, which
-- halved the batched enqueue's rate).
CREATE FUNCTION safe_history_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt, worker, at)
    SELECT 'job', n.id, NULL, n.state, n.fence, n.attempts, n.owner, n.updated_at
    FROM inserted_jobs AS n
    WHERE EXISTS (SELECT 1 FROM safe_history_settings WHERE id = 1 AND enabled = 1)
    ORDER BY n.id;
    RETURN NULL;
END $$;

CREATE TRIGGER safe_history_job_insert AFTER INSERT ON safe_queue_jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION safe_history_jobs_inserted();
CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.fence IS DISTINCT FROM NEW.fence)
    EXECUTE FUNCTION safe_history_job();
CREATE TRIGGER safe_history_job_delete AFTER DELETE ON safe_queue_jobs
    FOR EACH ROW EXECUTE FUNCTION safe_history_job();

CREATE FUNCTION safe_history_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM safe_history WHERE key_digest = OLD.digest AND entity = 'key';
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt,
            worker, at)
        SELECT 'key', NEW.digest, NULL, NEW.state, NEW.fence, NEW.attempts, NEW.owner,
            NEW.updated_at
        FROM safe_history_settings WHERE id = 1 AND enabled = 1;
    ELSE
        INSERT INTO safe_history (entity, key_digest, from_state, to_state, fence, attempt,
            worker, at, reason)
        SELECT 'key', NEW.digest, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE NEW.state
                WHEN 'released' THEN NEW.last_error
                WHEN 'failed' THEN (CAST(NEW.failure AS jsonb) ->> 'code') || ': '
                    || (CAST(NEW.failure AS jsonb) ->> 'message') END
        FROM safe_history_settings WHERE id = 1 AND enabled = 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER safe_history_key_insert AFTER INSERT ON safe_jobs
    FOR EACH ROW EXECUTE FUNCTION safe_history_key();
CREATE TRIGGER safe_history_key_update AFTER UPDATE ON safe_jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.fence IS DISTINCT FROM NEW.fence)
    EXECUTE FUNCTION safe_history_key();
CREATE TRIGGER safe_history_key_delete AFTER DELETE ON safe_jobs
    FOR EACH ROW EXECUTE FUNCTION safe_history_key();

CREATE FUNCTION safe_history_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM safe_history WHERE schedule = OLD.name AND entity = 'schedule';
    ELSE
        INSERT INTO safe_history (entity, schedule, from_state, to_state, fence, at, reason)
        SELECT 'schedule', NEW.name,
            CASE WHEN TG_OP = 'INSERT' THEN NULL
                WHEN OLD.paused <> 0 THEN 'paused' WHEN OLD.next_run_at IS NULL THEN 'done'
                ELSE 'active' END,
            CASE WHEN NEW.paused <> 0 THEN 'paused' WHEN NEW.next_run_at IS NULL THEN 'done'
                ELSE 'active' END,
            NEW.revision, NEW.updated_at,
            CASE WHEN TG_OP = 'UPDATE' AND NEW.last_tick IS DISTINCT FROM OLD.last_tick
                THEN 'tick' END
        FROM safe_history_settings WHERE id = 1 AND enabled = 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER safe_history_schedule_insert AFTER INSERT ON safe_queue_schedules
    FOR EACH ROW EXECUTE FUNCTION safe_history_schedule();
CREATE TRIGGER safe_history_schedule_update AFTER UPDATE ON safe_queue_schedules
    FOR EACH ROW WHEN (OLD.revision IS DISTINCT FROM NEW.revision)
    EXECUTE FUNCTION safe_history_schedule();
CREATE TRIGGER safe_history_schedule_delete AFTER DELETE ON safe_queue_schedules
    FOR EACH ROW EXECUTE FUNCTION safe_history_schedule();
