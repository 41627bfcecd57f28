#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks, on a loopback port, from Debian's
# `postgresql` package (installed with apt when missing and running as root).
#   scripts/pg.sh start    initdb (once) + start; prints DATABASE_URL=postgres://vault:vault@127.0.0.1:PORT/vault
#   scripts/pg.sh stop     fast shutdown (data kept)
#   scripts/pg.sh restart  stop + start (used by the fault tests)
#   scripts/pg.sh url      print the URL only
#   scripts/pg.sh newdb    create a fresh empty database, print its URL (one per test run)
# Settings: VAULT_PG_HOME (default <repo>/target/pg), VAULT_PG_PORT (default 55432).
set -euo pipefail
cd "$(dirname "$0")/.."
PGH="${VAULT_PG_HOME:-$PWD/target/pg}"
PORT="${VAULT_PG_PORT:-55432}"
URL="postgres://vault:vault@127.0.0.1:$PORT/vault"

bin_dir() {
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      [ -n "$(find /var/lib/apt/lists -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] || apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
      echo "pg.sh: PostgreSQL is not installed (Debian package postgresql) and we are not root" >&2
      exit 1
    fi
  fi
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
}

# initdb and postgres refuse to run as root.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start() {
  local BIN; BIN=$(bin_dir)
  mkdir -p "$PGH/sock"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGH"
  if [ ! -f "$PGH/data/PG_VERSION" ]; then
    echo postgres | as_pg tee "$PGH/pwfile" >/dev/null
    as_pg "$BIN/initdb" -D "$PGH/data" -U postgres --pwfile="$PGH/pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 >/dev/null
  fi
  if ! as_pg "$BIN/pg_ctl" -D "$PGH/data" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$PGH/data" -l "$PGH/server.log" -w -t 30 start \
      -o "-p $PORT -k $PGH/sock -c listen_addresses=127.0.0.1 -c max_connections=300" >/dev/null
  fi
  as_pg "$BIN/psql" -h "$PGH/sock" -p "$PORT" -U postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SELECT 'CREATE ROLE vault LOGIN CREATEDB PASSWORD ''vault''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname='vault')\gexec
SELECT 'CREATE DATABASE vault OWNER vault' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname='vault')\gexec
SQL
  echo "DATABASE_URL=$URL"
}

stop() {
  local BIN; BIN=$(bin_dir)
  if [ -f "$PGH/data/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$PGH/data" -m fast -w stop >/dev/null
  fi
}

newdb() {
  local BIN; BIN=$(bin_dir)
  local name="vault_$(date +%s%N | tail -c 10)_$$"
  as_pg "$BIN/psql" -h "$PGH/sock" -p "$PORT" -U postgres -qAt -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $name OWNER vault" >/dev/null
  echo "postgres://vault:vault@127.0.0.1:$PORT/$name"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  url) echo "$URL" ;;
  newdb) newdb ;;
  *) echo "usage: $0 start|stop|restart|url|newdb" >&2; exit 2 ;;
esac
