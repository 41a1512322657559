-- The action log (safejob_core::action): actions published now and dispatched later into jobs.
-- idem_digest is the SHA-256 of an optional idempotency key: unique, so publishing the same key
-- again inserts nothing. A claim is a lease (claim_token, claim_expires_at by the database
-- clock); every mark is fenced by the token and state = 'pending'. rules is a JSON array of rule
-- texts, checked again at dispatch. job_id / message_id name what the action became.
CREATE TABLE safe_actions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    action_type      TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    eligible_at      TEXT    NOT NULL,
    idem_digest      BLOB    UNIQUE CHECK (length(idem_digest) = 32),
    rules            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    claim_token      TEXT,
    claim_expires_at TEXT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    max_attempts     BIGINT  NOT NULL,
    last_error       TEXT,
    processed_at     TEXT,
    job_id           BIGINT,
    message_id       TEXT,
    publish_token    TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
-- Claims: pending actions by due time.
CREATE INDEX safe_actions_due ON safe_actions (eligible_at, id) WHERE state = 'pending';
CREATE INDEX safe_actions_state ON safe_actions (state, id);
