#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests and benchmarks.
#
#   scripts/pg_cluster.sh start [DIR]   initdb in DIR (default: a new temp dir),
#                                       start it, create database `custos`, and
#                                       print its connection URL on stdout
#   scripts/pg_cluster.sh env DIR       print `export CUSTOS_TEST_STORE=<url>`
#   scripts/pg_cluster.sh url DIR       print the URL of a running cluster
#   scripts/pg_cluster.sh stop DIR      stop it and remove DIR
#
# The server runs as the `postgres` user (initdb refuses root), listens on a
# Unix socket inside DIR only (listen_addresses = '': no TCP at all), on a
# port no other cluster on this machine uses (the port names the socket file
# and keeps `pg_ctl` from meeting another cluster's lock). Local connections
# are trusted: only root and `postgres` can enter DIR (0700).
# Durability is switched off (fsync, synchronous_commit): a test cluster is
# thrown away, and the tests measure behaviour, not the disk.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

url_of() { echo "postgresql:///custos?host=$1&port=$(cat "$1/port")&user=$PG_USER"; }

free_port() {
  # A port no cluster's socket or lock file and no listening TCP socket uses.
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    if ! ls /tmp/.s.PGSQL."$p" /tmp/custos-pg-*/.s.PGSQL."$p" >/dev/null 2>&1 &&
       ! (ss -ltnH 2>/dev/null | awk '{print $4}' | grep -q ":$p\$"); then
      echo "$p"; return 0
    fi
  done
  echo "pg_cluster: no free port found" >&2; return 1
}

cmd=${1:-}
case "$cmd" in
  start)
    dir=${2:-$(mktemp -d /tmp/custos-pg-XXXXXX)}
    mkdir -p "$dir"
    chmod 0700 "$dir"
    [ "$(id -u)" -eq 0 ] && chown "$PG_USER": "$dir"
    port=$(free_port)
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --no-locale -E UTF8 --auth-local=trust \
      --auth-host=reject >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir'
unix_socket_permissions = 0700
port = $port
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
EOF
    echo "$port" >"$dir/port"
    # pg_ctl -w polls the server (bounded by -t) until it accepts connections.
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    as_pg "$PG_BIN/createdb" -h "$dir" -p "$port" -U "$PG_USER" custos
    url_of "$dir"
    ;;
  url)
    url_of "${2:?usage: pg_cluster.sh url DIR}"
    ;;
  env)
    echo "export CUSTOS_TEST_STORE='$(url_of "${2:?usage: pg_cluster.sh env DIR}")'"
    ;;
  stop)
    dir=${2:?usage: pg_cluster.sh stop DIR}
    [ -f "$dir/port" ] || { echo "pg_cluster: $dir is not a cluster made by this script" >&2; exit 2; }
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: pg_cluster.sh start [DIR] | url DIR | env DIR | stop DIR" >&2
    exit 2
    ;;
esac
