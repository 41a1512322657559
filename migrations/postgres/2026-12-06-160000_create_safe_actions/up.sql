-- The action log (safejob_core::action): actions published now and dispatched later into jobs.
-- idem_digest is the SHA-256 of an optional idempotency key: unique, so publishing the same key
-- again inserts nothing. A claim is a lease (claim_token, claim_expires_at by the database
-- clock) taken with FOR UPDATE SKIP LOCKED; every mark is fenced by the token and
-- state = 'pending'. rules is a JSON array of rule texts, checked again at dispatch. job_id /
-- message_id name what the action became.
CREATE TABLE safe_actions (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action_type      TEXT        NOT NULL,
    payload          TEXT        NOT NULL,
    eligible_at      TIMESTAMPTZ NOT NULL,
    idem_digest      BYTEA       UNIQUE CHECK (octet_length(idem_digest) = 32),
    rules            TEXT        NOT NULL,
    state            TEXT        NOT NULL,
    claim_token      TEXT,
    claim_expires_at TIMESTAMPTZ,
    attempts         BIGINT      NOT NULL DEFAULT 0,
    max_attempts     BIGINT      NOT NULL,
    last_error       TEXT,
    processed_at     TIMESTAMPTZ,
    job_id           BIGINT,
    message_id       TEXT,
    publish_token    TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX safe_actions_due ON safe_actions (eligible_at, id) WHERE state = 'pending';
CREATE INDEX safe_actions_state ON safe_actions (state, id);
