#!/usr/bin/env bash
# The queue benchmark matrix of docs/BENCHMARKS.md ("Queue"): our queue guarded and not on
# PostgreSQL beside River and fang, at 1 and 4 workers, then our queue alone on SQLite and MariaDB;
# each run REPS times (interleaved, so a burst of load hits every configuration alike). JSON lines
# go to OUT (one file per run); `queue_summary.py OUT/*.jsonl` prints the medians.
#
#   BIN=target/release/safejob-bench JOBS=2000 REPS=3 OUT=target/queue-bench \
#       safejob-bench/scripts/queue_matrix.sh
#
# Needs a release build with the peers (cargo build --release -p safejob-bench --all-features),
# PostgreSQL at PG (databases bench_safejob, bench_river, bench_fang are created if missing) and,
# unless MYSQL is empty, MariaDB/MySQL at MYSQL with a database bench_safejob.
set -euo pipefail
BIN=${BIN:-target/release/safejob-bench}
JOBS=${JOBS:-2000}
REPS=${REPS:-3}
WORKERS=${WORKERS:-"1 4"}
OUT=${OUT:-target/queue-bench}
PG=${PG:-postgres://root@127.0.0.1:5432}
MYSQL=${MYSQL-mysql://root@127.0.0.1:3306/bench_safejob}
SQLITE_DIR=${SQLITE_DIR:-$OUT/sqlite}
mkdir -p "$OUT" "$SQLITE_DIR"
psql "$PG/test" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'bench_safejob'" | grep -q 1 ||
    psql "$PG/test" -qc "CREATE DATABASE bench_safejob"

for rep in $(seq 1 "$REPS"); do
    for t in $WORKERS; do
        echo "rep $rep, $t workers: postgres + peers" >&2
        "$BIN" queue --url "$PG/bench_safejob" --jobs "$JOBS" --workers "$t" --guarded \
            --peer river --peer fang > "$OUT/pg-w$t-r$rep.jsonl"
        echo "rep $rep, $t workers: sqlite" >&2
        rm -f "$SQLITE_DIR"/queue.db*
        "$BIN" queue --url "sqlite://$SQLITE_DIR/queue.db" --jobs "$JOBS" --workers "$t" \
            --guarded > "$OUT/sqlite-w$t-r$rep.jsonl"
        if [ -n "$MYSQL" ]; then
            echo "rep $rep, $t workers: mysql" >&2
            "$BIN" queue --url "$MYSQL" --jobs "$JOBS" --workers "$t" --guarded \
                > "$OUT/mysql-w$t-r$rep.jsonl"
        fi
    done
done
