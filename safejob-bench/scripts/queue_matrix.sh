#!/usr/bin/env bash
# The queue benchmark matrix of docs/BENCHMARKS.md ("Queue"): our queue guarded and not on
# PostgreSQL beside River and fang, at 1 and 4 workers, then our queue alone on SQLite and MariaDB;
# each run REPS times (interleaved, so a burst of load hits every configuration alike). JSON lines
# go to OUT (one file per run); `queue_summary.py OUT/*.jsonl` prints the medians.
#
#   BIN=target/release/safejob-bench JOBS=2000 REPS=3 OUT=target/queue-bench \
#       safejob-bench/scripts/queue_matrix.sh
#
# EFFECTS (default none) is the guarded jobs' --effects: none (no-op jobs declare no effects, as
# the peers' no-op jobs have none), transactional or after-commit.
#
# Needs a release build with the peers (cargo build --release -p safejob-bench --all-features),
# PostgreSQL at PG and, unless MYSQL is empty, MariaDB/MySQL at MYSQL (root@127.0.0.1:3306).
# Every run starts from empty tables: the bench itself creates a fresh database per system and
# run, named after BASE (BASE_safejob_<random>, BASE_river_<random>, BASE_fang_<random>; SQLite
# files BASE_safejob_<random>.db in SQLITE_DIR) and drops it at the end. The script only makes
# sure the database BASE exists on both servers (the bench's admin connection uses it).
# RETENTION (default keep) is --retention: keep or delete, the same for every system.
set -euo pipefail
BIN=${BIN:-target/release/safejob-bench}
JOBS=${JOBS:-2000}
REPS=${REPS:-3}
WORKERS=${WORKERS:-"1 4"}
OUT=${OUT:-target/queue-bench}
EFFECTS=${EFFECTS:-none}
RETENTION=${RETENTION:-keep}
BASE=${BASE:-bench}
PG=${PG:-postgres://root@127.0.0.1:5432}
MYSQL=${MYSQL-mysql://root@127.0.0.1:3306}
SQLITE_DIR=${SQLITE_DIR:-$OUT/sqlite}
mkdir -p "$OUT" "$SQLITE_DIR"
psql "$PG/postgres" -qAtc "SELECT 1 FROM pg_database WHERE datname = '$BASE'" | grep -q 1 \
    || psql "$PG/postgres" -qc "CREATE DATABASE $BASE"
if [ -n "$MYSQL" ]; then
    hostport=${MYSQL#mysql://}
    hostport=${hostport#*@}
    mysql -h "${hostport%%:*}" -P "${hostport##*:}" -u root -e "CREATE DATABASE IF NOT EXISTS $BASE"
fi

for rep in $(seq 1 "$REPS"); do
    for t in $WORKERS; do
        echo "rep $rep, $t workers: postgres + peers" >&2
        "$BIN" queue --url "$PG/$BASE" --jobs "$JOBS" --workers "$t" --guarded \
            --effects "$EFFECTS" --retention "$RETENTION" --peer river --peer fang \
            > "$OUT/pg-w$t-r$rep.jsonl"
        echo "rep $rep, $t workers: sqlite" >&2
        "$BIN" queue --url "sqlite://$SQLITE_DIR/$BASE.db" --jobs "$JOBS" --workers "$t" \
            --guarded --effects "$EFFECTS" --retention "$RETENTION" > "$OUT/sqlite-w$t-r$rep.jsonl"
        if [ -n "$MYSQL" ]; then
            echo "rep $rep, $t workers: mysql" >&2
            "$BIN" queue --url "$MYSQL/$BASE" --jobs "$JOBS" --workers "$t" --guarded \
                --effects "$EFFECTS" --retention "$RETENTION" > "$OUT/mysql-w$t-r$rep.jsonl"
        fi
    done
done
