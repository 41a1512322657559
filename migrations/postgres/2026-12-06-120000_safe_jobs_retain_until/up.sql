-- Retention of terminal guard rows. retain_until is written with the terminal state (succeeded or
-- failed) by the finalize itself, from the database clock plus the run's retention; NULL means the
-- row is kept forever: every row that existed before this migration, every row finalized without
-- a retention (the default), and every row that is not terminal. Pruning deletes rows whose
-- retain_until has passed and whose outcome is settled (failed, or succeeded with effects done).
-- A nullable column without a default is added without rewriting the table.
ALTER TABLE safe_jobs ADD COLUMN retain_until TIMESTAMPTZ;
-- Pruning: rows with a retention, oldest first. Rows kept forever (NULL) are not in it. Building
-- it reads the whole table once (inside the migration's transaction, so writes to safe_jobs wait
-- for it; on a very large table, create it CONCURRENTLY by hand first, under this name).
CREATE INDEX IF NOT EXISTS safe_jobs_retain_until ON safe_jobs (retain_until)
    WHERE retain_until IS NOT NULL;
