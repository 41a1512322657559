#!/usr/bin/env bash
# Where a guarded job's time goes: statements, round trips, commits and log bytes per job, for
# the guard (both effects modes) and the baseline, on each backend. Not a timing: counts.
#
#   client side (all backends): strace -f -c of the bench process: sendto/recvfrom (PostgreSQL,
#     MariaDB round trips), fdatasync/fsync and pwrite64 (SQLite commits and WAL frames);
#   PostgreSQL: pg_stat_database.xact_commit and pg_stat_wal (records, full-page images, bytes);
#   MariaDB: SHOW GLOBAL STATUS (statements executed, commits, redo log bytes and writes).
#
# Server counters are global: run it when no one else is using the databases, or read the
# figures as upper bounds. Usage: safejob-bench/scripts/profile.sh [jobs]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs="${1:-1000}"
PG_URL="${PG_URL:-postgres://root@127.0.0.1:5432/test}"
MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
SQLITE_URL="${SQLITE_URL:-sqlite://target/bench/profile.db}"
bin=target/release/safejob-bench
mkdir -p target/bench

pg_counters() {
  psql -Atq "$PG_URL" -c "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
}
my_counters() {
  mysql -h127.0.0.1 -uroot -N -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_execute','Com_insert','Com_update','Com_select','Com_begin','Com_commit','Handler_commit','Innodb_os_log_written','Innodb_log_writes','Innodb_os_log_fsyncs','Questions')" | awk '{printf "%s=%s ", $1, $2}'
}

per_job() { # before after -> per-job deltas of "a|b|c" lists
  python3 - "$1" "$2" "$jobs" <<'EOF'
import sys
b, a, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if "=" in b:
    bd = dict(kv.split("=") for kv in b.split()); ad = dict(kv.split("=") for kv in a.split())
    print("  server per job: " + ", ".join(f"{k} {(int(ad[k]) - int(bd[k])) / n:.2f}" for k in sorted(bd)))
else:
    names = ["xact_commit", "wal_records", "wal_fpi", "wal_bytes"]
    bv = [int(x) for x in b.split("|")]; av = [int(x) for x in a.split("|")]
    print("  server per job: " + ", ".join(f"{k} {(y - x) / n:.2f}" for k, x, y in zip(names, bv, av)))
EOF
}

one() { # label url counters-fn args...
  local label="$1" url="$2" counters="$3"; shift 3
  local before after
  before=$($counters)
  strace -f -c -o target/bench/strace.txt -e trace=sendto,recvfrom,write,read,fdatasync,fsync,pwrite64 \
    "$bin" guard --url "$url" --jobs "$jobs" --threads 1 --warmup 0 "$@" >/dev/null
  after=$($counters)
  echo "$label"
  # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
  awk -v n="$jobs" '$NF ~ /^(sendto|recvfrom|write|read|fdatasync|fsync|pwrite64)$/ {
      printf "  %s %.2f/job", $NF, $4 / n } END { print "" }' target/bench/strace.txt
  [ "$counters" = true ] || per_job "$before" "$after"
}

for backend in ${BACKENDS:-sqlite postgres mysql}; do
  case "$backend" in
    sqlite) url="$SQLITE_URL"; counters=true ;;
    postgres) url="$PG_URL"; counters=pg_counters ;;
    mysql) url="$MYSQL_URL"; counters=my_counters ;;
  esac
  one "$backend guard after-commit" "$url" "$counters" --effects after-commit
  one "$backend guard transactional" "$url" "$counters" --effects transactional
  one "$backend baseline" "$url" "$counters" --baseline-only
done
