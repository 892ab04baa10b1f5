#!/usr/bin/env bash
# A throwaway PostgreSQL server for the relay tests (spec/relay.md, "PostgreSQL storage").
#
#   eval "$(bash .ci/postgres.sh start)"   # prints export lines: E2EE_TEST_POSTGRES_URL, E2EE_PG_DIR
#   bash .ci/postgres.sh stop "$E2EE_PG_DIR"
#
# Installs the Debian package if no PostgreSQL is found, creates a cluster in a fresh temporary
# directory, listens on 127.0.0.1 on a free port only (no Unix socket outside the directory),
# trust authentication on loopback (no password exists to leak). PostgreSQL refuses to run as
# root, so as root the cluster belongs to (and runs as) the "postgres" system user.
set -euo pipefail

find_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin
    if ! bin="$(find_bin)"; then
        echo "postgres.sh: installing PostgreSQL from Debian packages" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        bin="$(find_bin)"
    fi
    local dir port
    dir="$(mktemp -d "${TMPDIR:-/tmp}/e2ee-pg.XXXXXX")"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres >&2
        chown postgres "$dir"
    fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -U e2ee -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "export E2EE_PG_DIR='$dir'"
    echo "export E2EE_TEST_POSTGRES_URL='postgresql://e2ee@127.0.0.1:$port/postgres'"
}

stop() {
    local dir="${1:-${E2EE_PG_DIR:-}}"
    [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
    local bin
    bin="$(find_bin)"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
