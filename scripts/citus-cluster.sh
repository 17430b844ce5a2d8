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
#
# DIR defaults to data/citus; ports CITUS_PORT (coordinator, default 9700) and the two after it.
# Needs root for the build (Debian's build packages, `make install` into PostgreSQL's folders);
# the instances run as the `postgres` user, as PostgreSQL requires.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=13.2.2
TARBALL=${CITUS_TARBALL:-../shared/vendor/citus-$VERSION.tar.gz}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${CITUS_PORT:-9700}
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
  trap 'rm -rf "$work"' RETURN
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

start() {
  local dir=$1 port=$PORT node
  installed || build
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  for node in $(node_dirs "$dir"); do
    if [ ! -f "$node/PG_VERSION" ]; then
      as_postgres "$PG_BIN/initdb" -D "$node" -U postgres --auth=trust -E UTF8 >/dev/null
      cat >>"$node/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$node'
shared_preload_libraries = 'citus'
max_connections = 200
autovacuum = off
fsync = off
EOF
    fi
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$node" status >/dev/null 2>&1; then
      as_postgres "$PG_BIN/pg_ctl" -D "$node" -l "$node/server.log" -w start >/dev/null
    fi
    port=$((port + 1))
  done
  # The database, with Citus on every node (workers first), then the workers joined.
  port=$PORT
  for node in $(node_dirs "$dir"); do
    psql_at "$port" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 \
      || psql_at "$port" postgres -qc "CREATE DATABASE $DATABASE"
    port=$((port + 1))
  done
  for port in $((PORT + 1)) $((PORT + 2)) $PORT; do
    psql_at "$port" "$DATABASE" -qc "CREATE EXTENSION IF NOT EXISTS citus"
  done
  psql_at "$PORT" "$DATABASE" -qc \
    "SELECT citus_set_coordinator_host('127.0.0.1', $PORT)" >/dev/null
  for port in $((PORT + 1)) $((PORT + 2)); do
    psql_at "$PORT" "$DATABASE" -tAc \
      "SELECT 1 FROM pg_dist_node WHERE nodeport = $port" | grep -q 1 \
      || psql_at "$PORT" "$DATABASE" -qc "SELECT citus_add_node('127.0.0.1', $port)" >/dev/null
  done
  log "cluster up: coordinator 127.0.0.1:$PORT, workers :$((PORT + 1)) :$((PORT + 2)); $(url)"
}

psql_at() {
  local port=$1 db=$2
  shift 2
  psql -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}

stop() {
  local dir=$1 node
  for node in $(node_dirs "$dir"); do
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
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
