#!/usr/bin/env bash
# bench/peers/pg_bouncer.sh start|stop WORKDIR [SERVER_CONNINFO POOL_SIZE]
# - a throwaway PgBouncer for the pg bench (issue #12).
#
#   start WORKDIR SERVER_CONNINFO POOL_SIZE
#       writes WORKDIR/pgbouncer.ini (transaction pooling, POOL_SIZE server
#       connections to SERVER_CONNINFO, auth_type any, listening on
#       127.0.0.1 and a unix socket in WORKDIR on a free port), starts
#       PgBouncer as a daemon and prints the conninfo clients use (the
#       unix socket). WORKDIR must not exist yet; its parent must be
#       reachable by the postgres user when run as root.
#   stop WORKDIR
#       stops it (SIGINT: PgBouncer's immediate shutdown) and waits for it.
#
# PgBouncer refuses to run as root: as root it runs as the postgres user
# (runuser), which then owns WORKDIR. Exit 3, with the reason on stderr,
# when PgBouncer cannot be had (not installed, no postgres user).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start WORKDIR SERVER_CONNINFO POOL_SIZE | stop WORKDIR" >&2
    exit 2
fi

bin=$(command -v pgbouncer 2>/dev/null || true)
[ -n "$bin" ] || [ ! -x /usr/sbin/pgbouncer ] || bin=/usr/sbin/pgbouncer
if [ "$(id -u)" -eq 0 ]; then
    as_owner() { runuser -u postgres -- "$@"; }
    owner=postgres
else
    as_owner() { "$@"; }
    owner=$(id -un)
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

do_stop() {
    local pid
    [ -f "$dir/pgbouncer.pid" ] || return 0
    pid=$(cat "$dir/pgbouncer.pid")
    [ -n "$pid" ] || return 0
    kill -INT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}

do_start() {
    local server=${3:?SERVER_CONNINFO} size=${4:?POOL_SIZE} port
    if [ -z "$bin" ]; then
        echo "pgbouncer not installed (Debian: pgbouncer; bench/peers/setup.sh pg)" >&2
        exit 3
    fi
    if [ "$owner" = postgres ] && ! id postgres >/dev/null 2>&1; then
        echo "running as root and there is no postgres user to run PgBouncer as" >&2
        exit 3
    fi
    mkdir "$dir"
    : >"$dir/userlist.txt"
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 30000))
        port_busy "$port" && continue
        cat >"$dir/pgbouncer.ini" <<EOF
[databases]
bench = $server

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = any
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $size
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = $size
max_client_conn = 200
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
        chown -R "$owner" "$dir"
        rm -f "$dir/pgbouncer.pid"
        if as_owner "$bin" -d -q "$dir/pgbouncer.ini" 2>"$dir/start.err"; then
            for _ in $(seq 1 100); do
                if [ -S "$dir/.s.PGSQL.$port" ] && [ -s "$dir/pgbouncer.pid" ]; then
                    echo "host=$dir port=$port dbname=bench user=bench"
                    return 0
                fi
                sleep 0.05
            done
            do_stop
        fi
    done
    echo "pgbouncer did not start: $(cat "$dir/start.err" "$dir/pgbouncer.log" 2>/dev/null | tail -n 2 | tr '\n' ' ')" >&2
    exit 1
}

case $cmd in
start) do_start "$@" ;;
stop) do_stop ;;
*) echo "usage: $0 start WORKDIR SERVER_CONNINFO POOL_SIZE | stop WORKDIR" >&2; exit 2 ;;
esac
