-- The transactional outbox: one row per effect a job emitted inside its finalize transaction,
-- delivered by a relay at least once under the stable message id `<digest hex>-<seq>`.
-- A row is pending (delivered_at and dead_at NULL), delivered, or dead (retries exhausted or the
-- receiver rejected it). A relay claims a pending, due row by writing a fresh claim_token and
-- claimed_until; every later write by that relay is fenced by both. Timestamps come from the
-- database clock inside the statements. The payload is JSON text, stored as written.
CREATE TABLE safe_outbox (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest        BYTEA       NOT NULL CHECK (octet_length(digest) = 32),
    seq           BIGINT      NOT NULL CHECK (seq >= 0),
    message_id    TEXT        NOT NULL,
    topic         TEXT        NOT NULL,
    payload       TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    available_at  TIMESTAMPTZ NOT NULL,
    attempts      BIGINT      NOT NULL DEFAULT 0,
    delivered_at  TIMESTAMPTZ,
    dead_at       TIMESTAMPTZ,
    last_error    TEXT,
    claim_token   TEXT,
    claimed_until TIMESTAMPTZ,
    CONSTRAINT safe_outbox_digest_seq UNIQUE (digest, seq)
);

-- Relays: pending rows in the order they fall due.
CREATE INDEX safe_outbox_due ON safe_outbox (available_at, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- Operators: dead rows.
CREATE INDEX safe_outbox_dead ON safe_outbox (id) WHERE dead_at IS NOT NULL;
