-- Schedules (safejob_core::schedule): one row per named schedule, declared in code and stored
-- here so that operators see them and every scheduler process agrees on the next run. A fire
-- updates the row conditionally on its revision and enqueues the tick's job in the same
-- transaction, so a tick enqueues once however many schedulers run. Times are UTC DATETIME(6)
-- like the other tables'; next_run_at is NULL once a one-off run has fired. A name is at most
-- 200 bytes (safejob_core::schedule::MAX_NAME_LEN).
CREATE TABLE safe_queue_schedules (
    name         VARCHAR(200) NOT NULL PRIMARY KEY,
    trigger_kind VARCHAR(16)  NOT NULL,
    expression   TEXT         NOT NULL,
    time_zone    VARCHAR(64)  NOT NULL,
    missed       VARCHAR(16)  NOT NULL,
    kind         TEXT         NOT NULL,
    paused       SMALLINT     NOT NULL DEFAULT 0,
    next_run_at  DATETIME(6)  NULL,
    last_tick    DATETIME(6)  NULL,
    revision     BIGINT       NOT NULL DEFAULT 0,
    updated_at   DATETIME(6)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
