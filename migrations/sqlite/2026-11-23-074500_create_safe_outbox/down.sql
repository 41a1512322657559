DROP TABLE safe_outbox;
