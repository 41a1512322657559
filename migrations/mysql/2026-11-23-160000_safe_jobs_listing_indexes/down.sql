ALTER TABLE safe_jobs DROP INDEX safe_jobs_state, ADD INDEX safe_jobs_state_expiry (state, lease_expires_at);
