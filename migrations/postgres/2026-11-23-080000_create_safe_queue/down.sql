DROP TABLE safe_queue_workers;
DROP TABLE safe_queue_jobs;
