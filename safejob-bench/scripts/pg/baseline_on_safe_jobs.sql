-- The baseline's two statements on the safe_jobs schema (digest key, two secondary indexes):
-- what the table and its indexes cost, apart from the statement count.
\set k random(1, 9000000000000000000)
INSERT INTO bench_safe_jobs (digest, state, fence, attempts, effects, created_at, updated_at) VALUES (sha256(convert_to('pgbench-' || :k, 'UTF8')), 'running', 1, 1, 'none', now(), now()) ON CONFLICT (digest) DO NOTHING;
UPDATE bench_safe_jobs SET state = 'succeeded' WHERE digest = sha256(convert_to('pgbench-' || :k, 'UTF8')) AND state = 'running';
