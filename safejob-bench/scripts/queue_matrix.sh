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
# Every run starts from empty tables, as the peers do (River re-creates its schema, fang empties
# its table): the script DROPS and re-creates the database bench_safejob on both servers before
# each run (and a fresh SQLite file). Finished rows left by earlier runs would otherwise slow our
# claims (see BENCHMARKS.md) and the comparison would not be like for like. The peers' databases
# bench_river and bench_fang are created by the bench if missing.
set -euo pipefail
BIN=${BIN:-target/release/safejob-bench}
JOBS=${JOBS:-2000}
REPS=${REPS:-3}
WORKERS=${WORKERS:-"1 4"}
OUT=${OUT:-target/queue-bench}
EFFECTS=${EFFECTS:-none}
PG=${PG:-postgres://root@127.0.0.1:5432}
MYSQL=${MYSQL-mysql://root@127.0.0.1:3306}
SQLITE_DIR=${SQLITE_DIR:-$OUT/sqlite}
mkdir -p "$OUT" "$SQLITE_DIR"
fresh_pg() {
    psql "$PG/test" -qc "DROP DATABASE IF EXISTS bench_safejob" -c "CREATE DATABASE bench_safejob"
}
fresh_mysql() {
    local hostport=${MYSQL#mysql://}
    hostport=${hostport#*@}
    mysql -h "${hostport%%:*}" -P "${hostport##*:}" -u root \
        -e "DROP DATABASE IF EXISTS bench_safejob; CREATE DATABASE bench_safejob"
}

for rep in $(seq 1 "$REPS"); do
    for t in $WORKERS; do
        echo "rep $rep, $t workers: postgres + peers" >&2
        fresh_pg
        "$BIN" queue --url "$PG/bench_safejob" --jobs "$JOBS" --workers "$t" --guarded \
            --effects "$EFFECTS" --peer river --peer fang > "$OUT/pg-w$t-r$rep.jsonl"
        echo "rep $rep, $t workers: sqlite" >&2
        rm -f "$SQLITE_DIR"/queue.db*
        "$BIN" queue --url "sqlite://$SQLITE_DIR/queue.db" --jobs "$JOBS" --workers "$t" \
            --guarded --effects "$EFFECTS" > "$OUT/sqlite-w$t-r$rep.jsonl"
        if [ -n "$MYSQL" ]; then
            echo "rep $rep, $t workers: mysql" >&2
            fresh_mysql
            "$BIN" queue --url "$MYSQL/bench_safejob" --jobs "$JOBS" --workers "$t" --guarded \
                --effects "$EFFECTS" > "$OUT/mysql-w$t-r$rep.jsonl"
        fi
    done
done
