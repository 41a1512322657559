#!/usr/bin/env bash
# The guard's own SQL (and proposed variants) at PostgreSQL's ceiling: pgbench -M prepared with
# each script in this folder against a copy of the safe_jobs schema (bench_safe_jobs), so the cost
# of the statements, commits, table and indexes is measured without any Rust in the way.
# Usage: safejob-bench/scripts/pg/variants.sh [repeats] [seconds]   (defaults 3 and 15)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repeats="${1:-3}"; seconds="${2:-15}"
PG_URL="${PG_URL:-postgres://root@127.0.0.1:5432/test}"
psql -q "$PG_URL" -c "CREATE TABLE IF NOT EXISTS bench_safe_jobs (LIKE safe_jobs INCLUDING ALL)" >/dev/null
for rep in $(seq "$repeats"); do
  for c in ${CLIENTS:-1 4}; do
    for script in "$here"/*.sql; do
      l=$(cut -d' ' -f1 /proc/loadavg)
      tps=$(pgbench -n -M prepared -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$seconds" -f "$script" "$PG_URL" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
      printf '{"rep":%s,"script":"%s","clients":%s,"jobs_per_s":%s,"load1":%s}\n' "$rep" "$(basename "$script" .sql)" "$c" "$tps" "$l"
    done
  done
done
