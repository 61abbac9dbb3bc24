#!/bin/sh
# bench/peers/setup.sh [threadpool|pg|http|mempool|all] - installs the
# Debian packages the peer drivers need: the thread pools' (issue #4), the
# PostgreSQL pools' (issue #12: libzdb, PgBouncer, psycopg_pool), the HTTP
# pools' (issue #13: libcurl's headers, nginx for the server, Python
# requests), the memory pools' (issue #14: jemalloc, gperftools' tcmalloc,
# mimalloc, talloc, APR), or all of them (the default).
# Only runs apt-get when something is missing, so a second call is cheap
# and a machine without network but with the packages still passes. As
# root it installs; otherwise it prints the apt-get line and exits 1.
set -eu
set_=${1:-all}
TP_PKGS="libglib2.0-dev libuv1-dev libapr1-dev libaprutil1-dev golang-go pkg-config"
PG_PKGS="libzdb-dev pgbouncer python3-psycopg-pool libpq-dev pkg-config"
HTTP_PKGS="libcurl4-openssl-dev nginx openssl ca-certificates python3-requests pkg-config"
MP_PKGS="libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev libtalloc-dev libapr1-dev pkg-config"
case $set_ in
    threadpool) PKGS=$TP_PKGS ;;
    pg) PKGS=$PG_PKGS ;;
    http) PKGS=$HTTP_PKGS ;;
    mempool) PKGS=$MP_PKGS ;;
    all) PKGS="$TP_PKGS $PG_PKGS $HTTP_PKGS $MP_PKGS" ;;
    *) echo "usage: $0 [threadpool|pg|http|mempool|all]" >&2; exit 2 ;;
esac
missing=""
for p in $PKGS; do
    case " $missing " in *" $p "*) continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && { echo "peers ($set_): all packages present"; exit 0; }
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
    echo "peers ($set_): missing:$missing; as root run: apt-get update && $cmd" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
$cmd
