\set k random(1, 9000000000000000000)
INSERT INTO bench_ceiling_jobs (job_key, state) VALUES ('pgbench-' || :k, 'running') ON CONFLICT (job_key) DO NOTHING;
UPDATE bench_ceiling_jobs SET state = 'succeeded' WHERE job_key = 'pgbench-' || :k AND state = 'running';
