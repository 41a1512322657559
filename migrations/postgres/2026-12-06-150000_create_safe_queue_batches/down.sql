DROP INDEX safe_queue_jobs_batch;
ALTER TABLE safe_queue_jobs DROP COLUMN result;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_member;
ALTER TABLE safe_queue_jobs DROP COLUMN batch_id;
DROP TABLE safe_queue_deps;
DROP TABLE safe_queue_batches;
