-- Listings by state page through an index in digest order, with nothing to sort: InnoDB keeps
-- the primary key (digest) in every secondary index, so (state) orders each state's rows by
-- digest. The first index, (state, lease_expires_at), made a listing by state sort every row of
-- that state for each page. MySQL has no partial indexes, so unlike SQLite and PostgreSQL every
-- row stays in it. The effects index (effects, lease_expires_at) is kept: its listing sorts only
-- the rows whose effects are pending or in doubt.
ALTER TABLE safe_jobs DROP INDEX safe_jobs_state_expiry, ADD INDEX safe_jobs_state (state);
