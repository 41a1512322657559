-- Schedules (safejob_core::schedule): one row per named schedule, declared in code and stored
-- here so that operators see them and every scheduler process agrees on the next run. A fire
-- updates the row conditionally on its revision and enqueues the tick's job in the same
-- transaction, so a tick enqueues once however many schedulers run. Timestamps are fixed-width
-- UTC text like the other tables'; next_run_at is NULL once a one-off run has fired.
CREATE TABLE safe_queue_schedules (
    name         TEXT     PRIMARY KEY NOT NULL,
    trigger_kind TEXT     NOT NULL,
    expression   TEXT     NOT NULL,
    time_zone    TEXT     NOT NULL,
    missed       TEXT     NOT NULL,
    kind         TEXT     NOT NULL,
    paused       SMALLINT NOT NULL DEFAULT 0,
    next_run_at  TEXT,
    last_tick    TEXT,
    revision     BIGINT   NOT NULL DEFAULT 0,
    updated_at   TEXT     NOT NULL
);
