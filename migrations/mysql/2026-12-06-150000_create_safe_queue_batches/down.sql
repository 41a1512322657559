ALTER TABLE safe_queue_jobs DROP KEY safe_queue_jobs_batch, DROP COLUMN result, DROP COLUMN batch_member,
    DROP COLUMN batch_id;
DROP TABLE safe_queue_deps;
DROP TABLE safe_queue_batches;
