#!/usr/bin/env bash
# A high-availability PostgreSQL 15 on this machine, managed by pg_auto_failover (Debian package
# postgresql-15-auto-failover): a monitor and two data nodes, each with its own port and data
# directory under $PGAF_DIR, run as the `postgres` system user (pg_autoctl refuses root).
#
#   scripts/pgaf-cluster.sh up              create (first time) or start the cluster; idempotent
#   scripts/pgaf-cluster.sh down            stop everything and delete $PGAF_DIR; idempotent
#   scripts/pgaf-cluster.sh status          the monitor's view (pg_autoctl show state)
#   scripts/pgaf-cluster.sh primary         the port of the current primary (empty if none)
#   scripts/pgaf-cluster.sh healthy         exit 0 when one node is primary and the other secondary
#   scripts/pgaf-cluster.sh replication sync|async
#                                           sync: replication-quorum true on both nodes, so the
#                                           primary runs synchronous_standby_names = ANY 1 (standby)
#                                           async: replication-quorum false, no synchronous standby
#   scripts/pgaf-cluster.sh crash PORT [LAG_MS]
#                                           SIGKILL the node on PORT: its pg_autoctl keeper and
#                                           every postgres process of it (a host crash); with
#                                           LAG_MS, first freeze its WAL sender for that long
#                                           (a standby that is behind)
#   scripts/pgaf-cluster.sh start PORT      start that node's keeper again (it rejoins as secondary)
#   scripts/pgaf-cluster.sh failover        crash the primary, wait for the promotion, restart the
#                                           old primary and wait until it is secondary again
#
# Workers connect with a multi-host URL; libpq picks the node that accepts writes:
#   postgres://root@127.0.0.1:5441,127.0.0.1:5442/test?target_session_attrs=read-write
#
# The monitor's health checks are tuned so that a crashed primary is replaced in a few seconds
# instead of the defaults' 20-30 s (see docs/operations.md, "Failover").
set -euo pipefail

PGAF_DIR=${PGAF_DIR:-/tmp/safejob-pgaf}
MONITOR_PORT=${PGAF_MONITOR_PORT:-5440}
NODE_PORTS=(${PGAF_NODE1_PORT:-5441} ${PGAF_NODE2_PORT:-5442})
PGBIN=${PGAF_PGBIN:-/usr/lib/postgresql/15/bin}
MONITOR_URL="postgres://autoctl_node@127.0.0.1:${MONITOR_PORT}/pg_auto_failover?sslmode=disable"

# Every pg_autoctl file (data, configuration, state, pid files) lives under $PGAF_DIR.
as_pg() {
  runuser -u postgres -- env HOME="$PGAF_DIR" XDG_CONFIG_HOME="$PGAF_DIR/config" \
    XDG_DATA_HOME="$PGAF_DIR/state" XDG_RUNTIME_DIR="$PGAF_DIR/run" PATH="$PGBIN:$PATH" \
    PG_CONFIG="$PGBIN/pg_config" "$@"
}

monitor_sql() {
  psql -X -q -At -h 127.0.0.1 -p "$MONITOR_PORT" -U autoctl_node -d pg_auto_failover -c "$1"
}

node_dir() { echo "$PGAF_DIR/node$1"; }

port_of() { # node number of a port
  local i
  for i in 0 1; do
    if [ "${NODE_PORTS[$i]}" = "$1" ]; then echo $((i + 1)); return; fi
  done
  echo "unknown node port $1" >&2
  exit 2
}

# Starts `pg_autoctl <args>` for a directory in a session of its own (its process group id is
# recorded in $name.pgid), so `crash` can kill the keeper and its postgres together.
start_keeper() {
  local name=$1
  shift
  local pidfile="$PGAF_DIR/$name.pgid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  # setsid first: runuser and pg_autoctl under it are a session of their own, out of the
  # caller's process group (a caller killed with its group does not take the cluster along).
  setsid runuser -u postgres -- env HOME="$PGAF_DIR" XDG_CONFIG_HOME="$PGAF_DIR/config" \
    XDG_DATA_HOME="$PGAF_DIR/state" XDG_RUNTIME_DIR="$PGAF_DIR/run" PATH="$PGBIN:$PATH" \
    "$@" >>"$PGAF_DIR/$name.log" 2>&1 </dev/null &
  local pid=$!
  local sid
  for _ in $(seq 1 50); do
    sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
    if [ -n "$sid" ] && [ "$sid" != "$$" ] && [ "$sid" = "$(ps -o pgid= -p "$pid" | tr -d ' ')" ]; then
      echo "$sid" >"$pidfile"
      return 0
    fi
    sleep 0.1
  done
  echo "pg_autoctl for $name did not start (pid $pid); see $PGAF_DIR/$name.log" >&2
  exit 1
}

wait_for() { # seconds, description, command...
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "timed out after ${limit}s waiting for: $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

primary_port() {
  monitor_sql "select nodeport from pgautofailover.node where reportedstate in ('primary','wait_primary','single') and goalstate = reportedstate order by nodeid limit 1" 2>/dev/null || true
}

healthy() {
  [ "$(monitor_sql "select count(*) filter (where reportedstate = 'primary' and goalstate = 'primary') || ':' || count(*) filter (where reportedstate = 'secondary' and goalstate = 'secondary') from pgautofailover.node" 2>/dev/null)" = "1:1" ]
}

writable() { # the node on port $1 accepts writes
  [ "$(psql -X -At -h 127.0.0.1 -p "$1" -U postgres -d test -c 'select not pg_is_in_recovery()' 2>/dev/null)" = t ]
}

up() {
  if ! [ -d "$PGAF_DIR" ]; then
    mkdir -p "$PGAF_DIR"/{config,state,run}
    chown -R postgres:postgres "$PGAF_DIR"
    chmod 700 "$PGAF_DIR"
  fi
  if ! [ -f "$PGAF_DIR/monitor/PG_VERSION" ]; then
    as_pg pg_autoctl create monitor --pgdata "$PGAF_DIR/monitor" --pgport "$MONITOR_PORT" \
      --hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$PGBIN/pg_ctl" >>"$PGAF_DIR/monitor.log" 2>&1
  fi
  start_keeper monitor pg_autoctl run --pgdata "$PGAF_DIR/monitor"
  wait_for 60 "the monitor" monitor_sql "select 1"
  # Failure detection in seconds, not the defaults' 20-30 s: health check every second with a
  # one-second timeout and one retry; a node is unhealthy after 2 s without a report; the old
  # primary is given 2 s to demote itself before the standby is promoted anyway.
  psql -X -q -h 127.0.0.1 -p "$MONITOR_PORT" -U postgres -d pg_auto_failover <<'SQL' >/dev/null
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 2000;
ALTER SYSTEM SET pgautofailover.startup_grace_period = 2000;
SELECT pg_reload_conf();
SQL
  local i
  for i in 1 2; do
    local dir port
    dir=$(node_dir $i)
    port=${NODE_PORTS[$((i - 1))]}
    if [ -f "$dir/PG_VERSION" ] && [ -f "$PGAF_DIR/node$i.created" ]; then
      start_keeper "node$i" pg_autoctl run --pgdata "$dir"
    else
      start_keeper "node$i" pg_autoctl create postgres --pgdata "$dir" --pgport "$port" \
        --hostname 127.0.0.1 --name "node$i" --dbname test --monitor "$MONITOR_URL" \
        --auth trust --no-ssl --pgctl "$PGBIN/pg_ctl" --run
      touch "$PGAF_DIR/node$i.created"
    fi
    # The second node clones the first: wait for the first to be primary before creating it.
    if [ $i = 1 ]; then
      wait_for 120 "node1 to accept writes" writable "$port"
      # pg_basebackup (cloning node1 into node2) waits for a spread checkpoint: about 90 s
      # with the default checkpoint_completion_target of 0.9, about 1 s with 0.
      psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d test \
        -c "ALTER SYSTEM SET checkpoint_completion_target = 0" -c "SELECT pg_reload_conf()" >/dev/null
    fi
  done
  wait_for 180 "one primary and one secondary" healthy
  local primary
  primary=$(primary_port)
  # The workers' role, created on the primary and replicated.
  psql -X -q -h 127.0.0.1 -p "$primary" -U postgres -d test -c \
    "do \$\$ begin if not exists (select from pg_roles where rolname = 'root') then create role root superuser login; end if; end \$\$" >/dev/null
  echo "pg_auto_failover cluster up: monitor $MONITOR_PORT, primary $primary"
  echo "url: postgres://root@127.0.0.1:${NODE_PORTS[0]},127.0.0.1:${NODE_PORTS[1]}/test?target_session_attrs=read-write"
}

down() {
  local name
  for name in node1 node2 monitor; do
    local pidfile="$PGAF_DIR/$name.pgid"
    if [ -f "$pidfile" ]; then
      kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  sleep 1
  for name in node1 node2 monitor; do
    local pidfile="$PGAF_DIR/$name.pgid"
    if [ -f "$pidfile" ]; then
      kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
    fi
    if [ -f "$PGAF_DIR/$name/postmaster.pid" ]; then
      kill -KILL "$(head -n1 "$PGAF_DIR/$name/postmaster.pid")" 2>/dev/null || true
    fi
  done
  rm -rf "$PGAF_DIR"
  echo "pg_auto_failover cluster down"
}

all_gone() { # none of these pids is alive (a zombie counts as gone: nothing may reap it here)
  local p state
  for p in "$@"; do
    state=$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null || true)
    if [ -n "$state" ] && [ "$state" != Z ]; then return 1; fi
  done
}

crash() {
  local n
  n=$(port_of "$1")
  local lag_ms=${2:-0}
  local pm=0 procs=""
  if [ -f "$(node_dir "$n")/postmaster.pid" ]; then
    pm=$(head -n1 "$(node_dir "$n")/postmaster.pid")
    # The postmaster and its children, listed before anything dies: a child whose postmaster is
    # gone is no longer found by its parent id, and a stopped one would hold the shared memory.
    procs="$pm $(pgrep -P "$pm" | tr '\n' ' ' || true)"
  fi
  if [ "$lag_ms" -gt 0 ] && [ "$pm" != 0 ]; then
    # A standby that is behind: freeze the primary's WAL sender, let the primary go on
    # committing for lag_ms, then crash it. With a synchronous standby those commits wait and
    # are never acknowledged; with an asynchronous one they are acknowledged and lost with the
    # primary. (Freezing the standby's receiver instead would not do: what the sender already
    # wrote waits in the standby's socket buffer and survives the crash.)
    local senders
    senders=$(pgrep -P "$pm" -f walsender || true)
    [ -n "$senders" ] && kill -STOP $senders
    sleep "$(awk "BEGIN { print $lag_ms / 1000 }")"
  fi
  local pidfile="$PGAF_DIR/node$n.pgid"
  if [ -f "$pidfile" ]; then
    procs="$procs $(pgrep -g "$(cat "$pidfile")" | tr '\n' ' ' || true)"
    kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
  fi
  # shellcheck disable=SC2086
  [ -n "$procs" ] && kill -KILL $procs 2>/dev/null || true
  rm -f "$pidfile"
  # Gone, all of them (keeper included: a new one refuses to start while the old pid lives),
  # before anyone restarts the node.
  # shellcheck disable=SC2086
  [ -z "$procs" ] || wait_for 10 "the crashed node's processes to exit" all_gone $procs
}

start_node() {
  local n
  n=$(port_of "$1")
  start_keeper "node$n" pg_autoctl run --pgdata "$(node_dir "$n")"
}

failover() {
  wait_for 120 "a healthy cluster before the failover" healthy
  local old new
  old=$(primary_port)
  crash "$old"
  local t0=$SECONDS
  wait_for 60 "the promotion of the standby" sh -c \
    "p=\$($0 primary); [ -n \"\$p\" ] && [ \"\$p\" != $old ]"
  new=$(primary_port)
  echo "primary $old crashed; $new promoted in $((SECONDS - t0)) s"
  start_node "$old"
  wait_for 120 "the old primary to rejoin as secondary" healthy
  echo "$old rejoined as secondary after $((SECONDS - t0)) s"
}

replication() {
  local quorum
  case ${1:-} in
    sync) quorum=true ;;
    async) quorum=false ;;
    *) echo "usage: $0 replication sync|async" >&2; exit 2 ;;
  esac
  local i
  # `pg_autoctl set node` fails now and then on a busy monitor (a deadlock with the keepers'
  # own updates, a garbled group name in its get_nodes call): try again.
  for i in 1 2; do
    local try=1
    until as_pg pg_autoctl set node replication-quorum "$quorum" --pgdata "$(node_dir $i)" >/dev/null 2>"$PGAF_DIR/set.err"; do
      if [ $try -ge 10 ]; then cat "$PGAF_DIR/set.err" >&2; exit 1; fi
      try=$((try + 1))
      sleep 1
    done
  done
  wait_for 60 "the new replication settings to apply" healthy
  local primary
  primary=$(primary_port)
  echo "replication $1: synchronous_standby_names = '$(psql -X -At -h 127.0.0.1 -p "$primary" -U postgres -d test -c 'show synchronous_standby_names')'"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) as_pg pg_autoctl show state --pgdata "$PGAF_DIR/monitor" ;;
  primary) primary_port ;;
  healthy) healthy ;;
  replication) replication "${2:-}" ;;
  crash) crash "${2:?port}" "${3:-0}" ;;
  start) start_node "${2:?port}" ;;
  failover) failover ;;
  *)
    sed -n '2,25p' "$0"
    exit 2
    ;;
esac
