-- Listings page through an index in digest order, with nothing to sort. The first indexes did
-- not: a listing by state read every row of that state and sorted it for each page, and the
-- in-doubt listing never used the effects index (its WHERE did not name the index's predicate).
DROP INDEX safe_jobs_state_expiry;
DROP INDEX safe_jobs_effects_expiry;
-- Operators: rows of a state other than succeeded (running, failed, released) in digest order,
-- and running rows whose lease expired. Succeeded rows, almost all of them, page through the
-- primary key, so a successful finalize removes the key's entry here instead of moving it.
-- A query reaches this index only by naming its predicate, `state <> 'succeeded'`, verbatim.
CREATE INDEX safe_jobs_state ON safe_jobs (state, digest) WHERE state <> 'succeeded';
-- Operators: rows whose effects are pending or in doubt, in digest order.
CREATE INDEX safe_jobs_effects_open ON safe_jobs (digest) WHERE effects IN ('pending', 'in_doubt');
