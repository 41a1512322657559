-- The action log (safejob_core::action): actions published now and dispatched later into jobs.
-- idem_digest is the SHA-256 of an optional idempotency key: unique, so publishing the same key
-- again inserts nothing (publish_token tells the publisher whether its own insert won). A claim
-- is a lease (claim_token, claim_expires_at by the database clock) taken with FOR UPDATE SKIP
-- LOCKED; every mark is fenced by the token and state = 'pending'. rules is a JSON array of rule
-- texts, checked again at dispatch. job_id / message_id name what the action became.
CREATE TABLE safe_actions (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    action_type      VARCHAR(255) NOT NULL,
    payload          LONGTEXT     NOT NULL,
    eligible_at      DATETIME(6)  NOT NULL,
    idem_digest      BINARY(32)   NULL,
    rules            LONGTEXT     NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    claim_token      VARCHAR(255) NULL,
    claim_expires_at DATETIME(6)  NULL,
    attempts         BIGINT       NOT NULL DEFAULT 0,
    max_attempts     BIGINT       NOT NULL,
    last_error       LONGTEXT     NULL,
    processed_at     DATETIME(6)  NULL,
    job_id           BIGINT       NULL,
    message_id       VARCHAR(255) NULL,
    publish_token    VARCHAR(64)  NULL,
    created_at       DATETIME(6)  NOT NULL,
    updated_at       DATETIME(6)  NOT NULL,
    UNIQUE KEY safe_actions_idem (idem_digest),
    KEY safe_actions_due (state, eligible_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
