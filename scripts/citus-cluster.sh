#!/usr/bin/env bash
# A local Citus cluster for the tests: build the extension from the vendored tarball (once, into
# the machine's PostgreSQL 15), then run a coordinator and two workers - three PostgreSQL 15
# instances of their own (own ports, own data folders), never the machine's main PostgreSQL.
#
#   scripts/citus-cluster.sh build          build + install Citus when PostgreSQL lacks it
#   scripts/citus-cluster.sh start [DIR]    create (once) and start the cluster in DIR
#   scripts/citus-cluster.sh stop [DIR]     stop it
#   scripts/citus-cluster.sh remove [DIR]   stop it and delete DIR
#   scripts/citus-cluster.sh url            the coordinator's DATABASE_URL
#   scripts/citus-cluster.sh add-worker [DIR]     join a third worker (port +3), empty
#   scripts/citus-cluster.sh remove-worker [DIR]  drain it, remove it from the cluster, delete it
#   scripts/citus-cluster.sh stop-node DIR NODE   stop one node (worker2...), for failure drills
#   scripts/citus-cluster.sh start-node DIR NODE  start it again
#
# DIR defaults to data/citus; ports CITUS_PORT (coordinator, default 9700) and the ones after it;
# CITUS_SHARD_COUNT shards per table (default 8) for a new cluster.
# Needs root for the build (Debian's build packages, `make install` into PostgreSQL's folders);
# the instances run as the `postgres` user, as PostgreSQL requires.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=13.2.2
TARBALL=${CITUS_TARBALL:-../shared/vendor/citus-$VERSION.tar.gz}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${CITUS_PORT:-9700}
SHARDS=${CITUS_SHARD_COUNT:-8}
PACKAGES=(postgresql-server-dev-15 libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev
  libssl-dev build-essential)
DATABASE=callhistory

log() { echo "citus-cluster.sh: $*" >&2; }

installed() { [ -f "$("$PG_BIN/pg_config" --sharedir)/extension/citus.control" ]; }

# shellcheck source=scripts/debian-packages.sh
source scripts/debian-packages.sh

build() {
  if installed; then
    log "Citus is installed in PostgreSQL ($("$PG_BIN/pg_config" --sharedir)/extension)"
    return 0
  fi
  install_packages
  [ -f "$TARBALL" ] || { log "no Citus source at $TARBALL"; exit 1; }
  local work
  work=$(mktemp -d)
  # Removed when build returns; the trap removes itself, or it would fire again when the next
  # function returns, after `work` is gone (set -u: "work: unbound variable").
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  log "building Citus $VERSION in $work (about 1-2 minutes)"
  tar -xzf "$TARBALL" -C "$work"
  (
    cd "$work/citus-$VERSION"
    # PostgreSQL 15.20+ declares have_createdb_privilege(), which Citus 13.2.2 also defines
    # (static inline, for PostgreSQL < 16): rename Citus's copy in this copy of the source.
    # A #define before the definition renames it, and every use in Citus, which includes the header.
    sed -i '/^static inline bool$/{N;s/^static inline bool\nhave_createdb_privilege(void)$/#define have_createdb_privilege citus_have_createdb_privilege\n&/}' \
      src/include/pg_version_compat.h
    grep -q '^#define have_createdb_privilege citus_have_createdb_privilege' \
      src/include/pg_version_compat.h || { log "the PostgreSQL 15.20 patch did not apply"; exit 1; }
    PG_CONFIG="$PG_BIN/pg_config" ./configure --without-libcurl >configure.log 2>&1 \
      || { tail -30 configure.log; exit 1; }
    make -j"$(nproc)" with_llvm=no >make.log 2>&1 || { grep -m20 -B2 -A5 'error' make.log; exit 1; }
    make install with_llvm=no >install.log 2>&1 || { tail -30 install.log; exit 1; }
  )
  installed || { log "the build did not install citus.control"; exit 1; }
  log "Citus $VERSION installed"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

node_dirs() { echo "$1/coordinator" "$1/worker1" "$1/worker2"; }

# Create (once) and start one PostgreSQL instance with Citus preloaded, and its database.
start_node() {
  local node=$1 port=$2
  if [ ! -f "$node/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$node" -U postgres --auth=trust -E UTF8 >/dev/null
    # wal_level = logical: the shard rebalancer moves shards online with logical replication.
    # citus.shard_count: shards per distributed table (Citus's default is 32); 8 keep a small
    # cluster's moves and the tests' TRUNCATEs quick and still spread every table over workers.
    cat >>"$node/postgresql.conf" <<EOF
port = $port
citus.shard_count = $SHARDS
listen_addresses = '127.0.0.1'
unix_socket_directories = '$node'
shared_preload_libraries = 'citus'
max_connections = 200
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
autovacuum = off
fsync = off
EOF
  fi
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$node" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$node" -l "$node/server.log" -w start >/dev/null
  fi
  # PostgreSQL 15.20+ lets only listed libraries decode logical replication; Citus's shard split
  # (isolate_tenant_to_new_shard) decodes with its own.
  if psql_at "$port" postgres -tAc \
    "SELECT setting NOT LIKE '%citus%' FROM pg_settings WHERE name = 'output_plugin_libraries'" \
    | grep -q t; then
    psql_at "$port" postgres -qc \
      "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'citus'" \
      -c "SELECT pg_reload_conf()" >/dev/null
  fi
  psql_at "$port" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 \
    || psql_at "$port" postgres -qc "CREATE DATABASE $DATABASE"
}

start() {
  local dir=$1 port=$PORT node
  installed || build
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  for node in $(node_dirs "$dir"); do
    start_node "$node" "$port"
    port=$((port + 1))
  done
  # Citus on every node (workers first), then the workers joined.
  for port in $((PORT + 1)) $((PORT + 2)) $PORT; do
    psql_at "$port" "$DATABASE" -qc "CREATE EXTENSION IF NOT EXISTS citus"
  done
  psql_at "$PORT" "$DATABASE" -qc \
    "SELECT citus_set_coordinator_host('127.0.0.1', $PORT)" >/dev/null
  for port in $((PORT + 1)) $((PORT + 2)); do
    join "$port"
  done
  log "cluster up: coordinator 127.0.0.1:$PORT, workers :$((PORT + 1)) :$((PORT + 2)); $(url)"
}

join() {
  psql_at "$PORT" "$DATABASE" -tAc "SELECT 1 FROM pg_dist_node WHERE nodeport = $1" | grep -q 1 \
    || psql_at "$PORT" "$DATABASE" -qc "SELECT citus_add_node('127.0.0.1', $1)" >/dev/null
}

# A third worker (port +3), joined empty: `citus_rebalance_start()` then moves shards onto it.
add_worker() {
  local dir=$1 port=$((PORT + 3))
  start_node "$dir/worker3" "$port"
  psql_at "$port" "$DATABASE" -qc "CREATE EXTENSION IF NOT EXISTS citus"
  join "$port"
  log "worker :$port joined (no shards yet: rebalance to use it)"
}

# Move the third worker's shards back to the others, remove it from the cluster, delete it.
remove_worker() {
  local dir=$1 port=$((PORT + 3))
  if psql_at "$PORT" "$DATABASE" -tAc "SELECT 1 FROM pg_dist_node WHERE nodeport = $port" \
    | grep -q 1; then
    psql_at "$PORT" "$DATABASE" -qc "SELECT citus_drain_node('127.0.0.1', $port)" >/dev/null
    psql_at "$PORT" "$DATABASE" -qc "SELECT citus_remove_node('127.0.0.1', $port)" >/dev/null
  fi
  if [ -f "$dir/worker3/PG_VERSION" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/worker3" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir/worker3"
  fi
  log "worker :$port removed"
}

# Stop or start one node (coordinator, worker1, worker2, worker3) of the cluster.
node_ctl() {
  local action=$1 node=$2
  [ -f "$node/PG_VERSION" ] || { log "no node at $node"; exit 1; }
  if [ "$action" = stop ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$node" -m fast -w stop >/dev/null
  else
    as_postgres "$PG_BIN/pg_ctl" -D "$node" -l "$node/server.log" -w start >/dev/null
  fi
  log "$(basename "$node"): $action done"
}

psql_at() {
  local port=$1 db=$2
  shift 2
  psql -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}

stop() {
  local dir=$1 node
  for node in $(node_dirs "$dir") "$dir/worker3"; do
    [ -f "$node/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" -D "$node" -m fast stop >/dev/null 2>&1 || true
  done
  log "cluster in $dir stopped"
}

url() { echo "postgresql://postgres@127.0.0.1:$PORT/$DATABASE"; }

command=${1:-}
dir=$(realpath -m "${2:-data/citus}")
case "$command" in
  build) build ;;
  start) start "$dir" ;;
  stop) stop "$dir" ;;
  remove) stop "$dir"; rm -rf "$dir"; log "removed $dir" ;;
  url) url ;;
  add-worker) add_worker "$dir" ;;
  remove-worker) remove_worker "$dir" ;;
  stop-node) node_ctl stop "$dir/${3:?which node: coordinator, worker1, worker2}" ;;
  start-node) node_ctl start "$dir/${3:?which node: coordinator, worker1, worker2}" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
