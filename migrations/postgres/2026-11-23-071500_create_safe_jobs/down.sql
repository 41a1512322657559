DROP TABLE safe_jobs;
