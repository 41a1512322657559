ALTER TABLE safe_jobs DROP INDEX safe_jobs_retain_until, DROP COLUMN retain_until;
