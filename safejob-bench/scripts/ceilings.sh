#!/usr/bin/env bash
# The databases' own ceilings for the baseline's two statements per job (insert-or-ignore a key
# row, then `UPDATE … SET state = 'succeeded' WHERE job_key = ? AND state = 'running'`), each in
# autocommit, with no Rust, pool or diesel in the way. One JSON line per measurement:
#   {"ceiling":"postgres","clients":1,"jobs_per_s":…,"load1":…}
#
#   PostgreSQL: pgbench -M prepared, custom script pg_ceiling.sql, -c 1 and -c 4.
#   MariaDB:    mysqlslap, --concurrency 1 and 4. mysqlslap has no prepared statements; the text
#               protocol is still one round trip per statement, and the two statements share the
#               key through a session variable assigned inside the INSERT (no extra statement).
#   SQLite:     the sqlite3 CLI running a generated script of N insert/update pairs in autocommit,
#               WAL, synchronous=FULL, one connection. The CLI re-parses each statement (a few µs)
#               where the store reuses prepared ones; the fsync of each commit dominates.
#
# Usage: safejob-bench/scripts/ceilings.sh [repeats] [seconds]   (defaults 3 and 20)
# Env: BACKENDS (default "postgres mariadb sqlite"), CLIENTS (default "1 4"; SQLite runs only 1),
# PG_URL, MYSQL_HOST, MYSQL_DB, SQLITE_DIR override the defaults below.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repeats="${1:-3}"
seconds="${2:-20}"
PG_URL="${PG_URL:-postgres://root@127.0.0.1:5432/test}"
MYSQL_HOST="${MYSQL_HOST:-127.0.0.1}"
MYSQL_DB="${MYSQL_DB:-test}"
SQLITE_DIR="${SQLITE_DIR:-$here/../../target/bench}"
load1() { cut -d' ' -f1 /proc/loadavg; }
emit() { printf '{"ceiling":"%s","clients":%s,"jobs_per_s":%.1f,"load1":%s}\n' "$1" "$2" "$3" "$4"; }

postgres() {
  psql -q "$PG_URL" -c "CREATE TABLE IF NOT EXISTS bench_ceiling_jobs (job_key TEXT PRIMARY KEY, state TEXT NOT NULL)" \
    -c "TRUNCATE bench_ceiling_jobs" >/dev/null
  for c in ${CLIENTS:-1 4}; do
    for _ in $(seq "$repeats"); do
      local l; l=$(load1)
      local tps
      tps=$(pgbench -n -M prepared -c "$c" -j "$(( c < 2 ? c : 2 ))" -T "$seconds" \
        -f "$here/pg_ceiling.sql" "$PG_URL" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
      emit postgres "$c" "$tps" "$l"
    done
  done
}

mariadb() {
  mysql -h"$MYSQL_HOST" -uroot "$MYSQL_DB" -e "CREATE TABLE IF NOT EXISTS bench_ceiling_jobs \
    (job_key VARCHAR(255) NOT NULL PRIMARY KEY, state VARCHAR(16) NOT NULL) ENGINE = InnoDB; \
    TRUNCATE bench_ceiling_jobs"
  local q="INSERT IGNORE INTO bench_ceiling_jobs (job_key, state) VALUES (@k := UUID(), 'running');"
  q+="UPDATE bench_ceiling_jobs SET state = 'succeeded' WHERE job_key = @k AND state = 'running'"
  for c in ${CLIENTS:-1 4}; do
    # About `seconds` of work at ~1,000 jobs/s (1 client) or ~2,000 (4); jobs = statements / 2.
    local statements=$(( seconds * 2000 * (c == 1 ? 1 : 2) ))
    for _ in $(seq "$repeats"); do
      local l; l=$(load1)
      local secs
      secs=$(mysqlslap -h"$MYSQL_HOST" -uroot --create-schema="$MYSQL_DB" --delimiter=";" \
        --query="$q" --concurrency="$c" --number-of-queries="$statements" --iterations=1 \
        | sed -n 's/.*Average number of seconds to run all queries: \([0-9.]*\).*/\1/p')
      emit mariadb "$c" "$(echo "$statements / 2 / $secs" | bc -l)" "$l"
    done
  done
}

sqlite() {
  [[ " ${CLIENTS:-1} " == *" 1 "* ]] || return 0
  mkdir -p "$SQLITE_DIR"
  local db="$SQLITE_DIR/ceiling.db" script="$SQLITE_DIR/ceiling.sql"
  local jobs=$(( seconds * 1000 ))
  for _ in $(seq "$repeats"); do
    rm -f "$db" "$db-wal" "$db-shm"
    {
      echo "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
      echo "CREATE TABLE bench_ceiling_jobs (job_key TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL);"
      awk -v n="$jobs" 'BEGIN { for (i = 0; i < n; i++) {
        printf "INSERT INTO bench_ceiling_jobs (job_key, state) VALUES (%ccl-%d%c, %crunning%c) ON CONFLICT (job_key) DO NOTHING;\n", 39, i, 39, 39, 39;
        printf "UPDATE bench_ceiling_jobs SET state = %csucceeded%c WHERE job_key = %ccl-%d%c AND state = %crunning%c;\n", 39, 39, 39, i, 39, 39, 39 } }'
    } >"$script"
    local l; l=$(load1)
    local t0 t1
    t0=$(date +%s.%N)
    sqlite3 "$db" <"$script" >/dev/null
    t1=$(date +%s.%N)
    emit sqlite 1 "$(echo "$jobs / ($t1 - $t0)" | bc -l)" "$l"
  done
}

for backend in ${BACKENDS:-postgres mariadb sqlite}; do
  "$backend"
done
