-- Retention of terminal guard rows. retain_until is written with the terminal state (succeeded or
-- failed) by the finalize itself, from SQLite's clock plus the run's retention; NULL means the row
-- is kept forever: every row that existed before this migration, every row finalized without a
-- retention (the default), and every row that is not terminal. Pruning deletes rows whose
-- retain_until has passed and whose outcome is settled (failed, or succeeded with effects done).
-- Text in the same fixed-width UTC format as the other timestamps, so text order is time order.
ALTER TABLE safe_jobs ADD COLUMN retain_until TEXT;
-- Pruning: rows with a retention, oldest first. Rows kept forever (NULL) are not in it. A query
-- reaches this partial index by naming its predicate, `retain_until IS NOT NULL`.
CREATE INDEX safe_jobs_retain_until ON safe_jobs (retain_until) WHERE retain_until IS NOT NULL;
