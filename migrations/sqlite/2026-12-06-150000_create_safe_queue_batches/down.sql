DROP TRIGGER safe_history_batch_delete;
DROP TRIGGER safe_history_batch_update;
DROP TRIGGER safe_history_batch_insert;
DROP TRIGGER safe_history_job_update;
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
DROP INDEX safe_queue_jobs_batch;
ALTER TABLE safe_queue_jobs DROP COLUMN result;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_member;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_id;
DROP TABLE safe_queue_deps;
DROP TABLE safe_queue_batches;
