#!/usr/bin/env bash
# tests/support/pg_server.sh start|stop|restart|clean DIR - a throwaway
# PostgreSQL cluster for the integration tests.
#
#   start DIR    first time: initdb into DIR/data, then start the server;
#                later (after stop): start the same cluster on the same
#                port. Prints the TCP conninfo on stdout and writes
#                DIR/port. The server listens on 127.0.0.1:PORT (a free
#                port) and on a unix socket in DIR.
#   stop DIR     stops it (pg_ctl stop -m fast, or -m $PG_STOP_MODE:
#                immediate is a crash, recovered at the next start); the
#                cluster stays
#   restart DIR  stop, then start
#   clean DIR    stops it if it runs and removes DIR
#   probe -      exit 0 if PostgreSQL's server binaries are here, else
#                say why and exit 3
#
# Authentication: trust for everyone, except the role `pk_pw` (password
# `pk_secret`, scram-sha-256) over TCP and the socket, so a wrong password
# can be tested. The superuser is `postgres`.
#
# TLS: at initdb time a self-signed certificate is made with `openssl req
# -x509` (CN localhost, subjectAltName localhost and 127.0.0.1) into
# DIR/data/server.crt and server.key (owned by the cluster's owner, the key
# mode 0600), with `ssl = on`, so TCP clients may ask for sslmode=require
# (or verify-full with sslrootcert=DIR/server.crt, a copy of the
# certificate, and host=localhost or 127.0.0.1); clients that do not ask
# still connect without TLS. The file DIR/tls then exists. Without openssl
# the cluster serves no TLS and says so on stderr (not an error).
#
# initdb and postgres refuse to run as root: as root the cluster belongs to
# the `postgres` user (Debian's postgresql package makes it) and the
# commands run through runuser. Binaries are found under
# /usr/lib/postgresql/*/bin (the newest), or $PG_BIN, or on PATH.
# Exit 3 when PostgreSQL is not installed (the tests skip on that).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop|restart|clean|probe DIR" >&2
    exit 2
fi

find_bin() {
    if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then
        echo "$PG_BIN"
        return 0
    fi
    local best
    # sort -V: 9.6 before 15.
    best=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$best" ] && [ -x "$best/initdb" ]; then
        echo "$best"
        return 0
    fi
    command -v initdb >/dev/null 2>&1 || return 1
    dirname "$(command -v initdb)"
}

bin=$(find_bin) || { echo "pg_server: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 3; }

if [ "$cmd" = probe ]; then
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "pg_server: running as root but there is no postgres user" >&2
        exit 3
    fi
    echo "$bin"
    exit 0
fi

# as_owner CMD...: run CMD as the cluster's owner.
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "pg_server: running as root but there is no postgres user" >&2; exit 3; }
    owner=postgres
    as_owner() { runuser -u postgres -- "$@"; }
else
    owner=$(id -un)
    as_owner() { "$@"; }
fi

data=$dir/data
log=$dir/server.log

running() { [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

do_init() {
    mkdir -p "$dir"
    chown "$owner" "$dir"
    chmod 700 "$dir"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 \
        --no-sync >"$dir/initdb.log" 2>&1 ||
        { echo "pg_server: initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1; }
    # The password role first: pg_hba.conf is read top down.
    cat >"$data/pg_hba.conf" <<'EOF'
local all pk_pw scram-sha-256
host  all pk_pw 127.0.0.1/32 scram-sha-256
local all all trust
host  all all 127.0.0.1/32 trust
EOF
    chown "$owner" "$data/pg_hba.conf"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
password_encryption = 'scram-sha-256'
EOF
    make_tls
}

# make_tls: the self-signed certificate and `ssl = on`, or a message on
# stderr saying why the cluster has no TLS. Run once, at initdb time.
make_tls() {
    if ! command -v openssl >/dev/null 2>&1; then
        echo "pg_server: openssl not found: the cluster serves no TLS (apt-get install openssl)" >&2
        return 0
    fi
    # -nodes: an unencrypted key, which the server reads without asking.
    if ! openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
            -subj /CN=localhost \
            -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -keyout "$data/server.key" -out "$data/server.crt" \
            >"$dir/openssl.log" 2>&1; then
        echo "pg_server: openssl req failed: the cluster serves no TLS:" >&2
        cat "$dir/openssl.log" >&2
        rm -f "$data/server.key" "$data/server.crt"
        return 0
    fi
    chown "$owner" "$data/server.key" "$data/server.crt"
    chmod 600 "$data/server.key"
    cp "$data/server.crt" "$dir/server.crt"
    chmod 644 "$dir/server.crt"
    echo "ssl = on" >>"$data/postgresql.conf"
    touch "$dir/tls"
}

do_start() {
    local tries=0 port
    if [ ! -f "$data/PG_VERSION" ]; then
        do_init
        rm -f "$dir/port"
    fi
    if running; then
        port=$(cat "$dir/port")
    else
        for tries in 1 2 3 4 5 6 7 8 9 10; do
            if [ -f "$dir/port" ]; then
                port=$(cat "$dir/port")
            else
                port=$((20000 + RANDOM % 30000))
                port_busy "$port" && continue
            fi
            if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 30 \
                    -o "-p $port" start >/dev/null 2>&1; then
                echo "$port" >"$dir/port"
                break
            fi
            [ -f "$dir/port" ] && { echo "pg_server: could not start on port $port:" >&2; tail -n 20 "$log" >&2; exit 1; }
            port=
        done
        [ -n "${port:-}" ] || { echo "pg_server: no free port after $tries tries" >&2; tail -n 20 "$log" >&2; exit 1; }
        if [ ! -f "$dir/roles_made" ]; then
            as_owner "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres \
                -c "CREATE ROLE pk_pw LOGIN PASSWORD 'pk_secret'" >/dev/null
            touch "$dir/roles_made"
        fi
    fi
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

do_stop() {
    if running; then
        as_owner "$bin/pg_ctl" -D "$data" -w -t 30 -m "${PG_STOP_MODE:-fast}" stop >/dev/null
    fi
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
restart) do_stop; do_start ;;
clean)
    [ -d "$data" ] && do_stop
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|stop|restart|clean|probe DIR" >&2; exit 2 ;;
esac
