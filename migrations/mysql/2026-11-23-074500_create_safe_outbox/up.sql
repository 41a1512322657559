-- The transactional outbox: one row per effect a job emitted inside its finalize transaction,
-- delivered by a relay at least once under the stable message id `<digest hex>-<seq>`.
-- A row is pending (delivered_at and dead_at NULL), delivered, or dead (retries exhausted or the
-- receiver rejected it). A relay claims a pending, due row by writing a fresh claim_token and
-- claimed_until; every later write by that relay is fenced by both. Timestamps are DATETIME(6)
-- written from UTC_TIMESTAMP(6), as in safe_jobs. Claims use FOR UPDATE SKIP LOCKED
-- (MariaDB >= 10.6, MySQL >= 8.0).
CREATE TABLE safe_outbox (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    digest        BINARY(32)   NOT NULL,
    seq           BIGINT       NOT NULL,
    message_id    VARCHAR(96)  NOT NULL,
    topic         VARCHAR(255) NOT NULL,
    payload       LONGTEXT     NOT NULL,
    created_at    DATETIME(6)  NOT NULL,
    available_at  DATETIME(6)  NOT NULL,
    attempts      BIGINT       NOT NULL DEFAULT 0,
    delivered_at  DATETIME(6)  NULL,
    dead_at       DATETIME(6)  NULL,
    last_error    MEDIUMTEXT   NULL,
    claim_token   VARCHAR(64)  NULL,
    claimed_until DATETIME(6)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY safe_outbox_digest_seq (digest, seq),
    -- Relays: pending rows in the order they fall due (MySQL has no partial indexes).
    KEY safe_outbox_due (delivered_at, dead_at, available_at, id),
    -- Relays read their claim back by token (no UPDATE ... RETURNING here).
    KEY safe_outbox_claim (claim_token),
    -- Operators: dead rows.
    KEY safe_outbox_dead (dead_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
