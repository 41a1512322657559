DROP TRIGGER safe_history_batch_delete ON safe_queue_batches;
DROP TRIGGER safe_history_batch_update ON safe_queue_batches;
DROP TRIGGER safe_history_batch_insert ON safe_queue_batches;
DROP FUNCTION safe_history_batch();
CREATE OR REPLACE FUNCTION safe_history_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM safe_history WHERE job_id = OLD.id AND entity = 'job';
    ELSE
        INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt,
            worker, at, reason)
        SELECT 'job', NEW.id, OLD.state, NEW.state, NEW.fence, NEW.attempts,
            COALESCE(NEW.owner, OLD.owner), NEW.updated_at,
            CASE WHEN NEW.errors IS DISTINCT FROM OLD.errors
                THEN (CAST(NEW.errors AS jsonb) -> -1 ->> 'kind') || ': '
                    || (CAST(NEW.errors AS jsonb) -> -1 ->> 'message') END
        FROM safe_history_settings WHERE id = 1 AND enabled = 1;
    END IF;
    RETURN NULL;
END $$;
DROP INDEX safe_queue_jobs_batch;
ALTER TABLE safe_queue_jobs DROP COLUMN result;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_member;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_id;
DROP TABLE safe_queue_deps;
DROP TABLE safe_queue_batches;
