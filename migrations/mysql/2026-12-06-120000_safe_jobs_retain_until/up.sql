-- Retention of terminal guard rows. retain_until is written with the terminal state (succeeded or
-- failed) by the finalize itself, from UTC_TIMESTAMP(6) plus the run's retention; NULL means the
-- row is kept forever: every row that existed before this migration, every row finalized without
-- a retention (the default), and every row that is not terminal. Pruning deletes rows whose
-- retain_until has passed and whose outcome is settled (failed, or succeeded with effects done).
-- MySQL has no partial indexes: every row is in the index, NULLs first, and pruning reads only
-- the range up to now.
ALTER TABLE safe_jobs ADD COLUMN retain_until DATETIME(6) NULL,
    ADD INDEX safe_jobs_retain_until (retain_until);
