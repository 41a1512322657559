DROP INDEX safe_jobs_retain_until;
ALTER TABLE safe_jobs DROP COLUMN retain_until;
