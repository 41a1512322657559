DROP TRIGGER safe_history_batch_delete;
DROP TRIGGER safe_history_batch_update;
DROP TRIGGER safe_history_batch_insert;
DROP TRIGGER safe_history_job_update;
CREATE TRIGGER safe_history_job_update AFTER UPDATE ON safe_queue_jobs FOR EACH ROW
BEGIN
    IF (NOT (OLD.state <=> NEW.state) OR NOT (OLD.fence <=> NEW.fence))
        AND (SELECT enabled FROM safe_history_settings WHERE id = 1) = 1 THEN
        INSERT INTO safe_history (entity, job_id, from_state, to_state, fence, attempt,
            worker, at, reason)
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
ALTER TABLE safe_queue_jobs DROP KEY safe_queue_jobs_batch, DROP COLUMN result, DROP COLUMN batch_member,
    DROP COLUMN batch_id;
DROP TABLE safe_queue_deps;
DROP TABLE safe_queue_batches;
