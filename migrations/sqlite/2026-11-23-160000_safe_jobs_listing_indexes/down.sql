DROP INDEX safe_jobs_state;
DROP INDEX safe_jobs_effects_open;
CREATE INDEX safe_jobs_state_expiry ON safe_jobs (state, lease_expires_at);
CREATE INDEX safe_jobs_effects_expiry ON safe_jobs (lease_expires_at)
    WHERE effects IN ('pending', 'in_doubt');
