#!/usr/bin/env bash
# The figures of docs/BENCHMARKS.md: every backend × threads × effects mode, guard and baseline
# in the same process, `repeats` times, each configuration right after a measurement of the
# database's ceiling at the same concurrency (ceilings.sh, `ceiling_secs` seconds), so both see the
# same disk and load. Appends the JSON lines to target/bench/matrix.jsonl and
# target/bench/ceilings.jsonl; `summary.py` takes the medians.
#
# Usage: safejob-bench/scripts/matrix.sh [repeats] [jobs_per_thread] [ceiling_secs]
#        (defaults 3, 1500 and 10)
# Env: BACKENDS (default "sqlite postgres mysql"), THREADS (default "1 4"), EFFECTS (default
# "after-commit transactional none"), and the URLs below.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-3}"
per_thread="${2:-1500}"
ceiling_secs="${3:-10}"
SQLITE_URL="${SQLITE_URL:-sqlite://target/bench/guard.db}"
PG_URL="${PG_URL:-postgres://root@127.0.0.1:5432/test}"
MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
mkdir -p target/bench
cargo build --release -p safejob-bench --bin safejob-bench --all-features
bin=target/release/safejob-bench
out=target/bench/matrix.jsonl
for rep in $(seq "$repeats"); do
  for backend in ${BACKENDS:-sqlite postgres mysql}; do
    case "$backend" in
      sqlite) url="$SQLITE_URL"; ceiling=sqlite ;;
      postgres) url="$PG_URL"; ceiling=postgres ;;
      mysql) url="$MYSQL_URL"; ceiling=mariadb ;;
    esac
    for threads in ${THREADS:-1 4}; do
      BACKENDS=$ceiling CLIENTS=$threads bash safejob-bench/scripts/ceilings.sh 1 "$ceiling_secs" \
        | tee -a target/bench/ceilings.jsonl
      for effects in ${EFFECTS:-after-commit transactional none}; do
        jobs=$(( per_thread * threads ))
        at=$(date -u +%H:%M:%S)
        # A failed run is recorded (its error is on stderr, in the log) and the matrix goes on.
        { $bin guard --url "$url" --jobs "$jobs" --threads "$threads" --effects "$effects" \
            --baseline --rounds 4 ||
            echo "{\"bench\":\"failed\",\"backend\":\"$backend\",\"effects\":\"$effects\",\"threads\":$threads}"; } |
          sed "s/^{/{\"rep\":$rep,\"at\":\"$at\",/" | tee -a "$out"
      done
    done
  done
done
