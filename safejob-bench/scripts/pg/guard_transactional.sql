-- Transactional mode: acquire, then BEGIN; finalize with effects 'done'; (the hook); COMMIT: 2 commits.
\set k random(1, 9000000000000000000)
INSERT INTO bench_safe_jobs (digest, fingerprint, state, fence, attempts, owner, lease_expires_at, effects, created_at, updated_at) VALUES (sha256(convert_to('pgbench-' || :k, 'UTF8')), NULL, 'running', 1, 1, 'pgbench', (now() + CAST(30000000 AS float8) * interval '1 microsecond'), 'none', now(), now()) ON CONFLICT (digest) DO NOTHING RETURNING fence, attempts, CAST(extract(epoch FROM lease_expires_at) * 1000000 AS int8) AS expires_us;
BEGIN;
UPDATE bench_safe_jobs SET state = 'succeeded', result = NULL, effects = 'done', lease_expires_at = (now() + CAST(30000000 AS float8) * interval '1 microsecond'), updated_at = now(), finalized_at = now() WHERE digest = sha256(convert_to('pgbench-' || :k, 'UTF8')) AND fence = 1 AND state = 'running';
COMMIT;
