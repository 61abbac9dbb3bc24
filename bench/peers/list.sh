#!/bin/sh
# bench/peers/list.sh OUTDIR [threadpool|pg|http|mempool] - one line per
# peer of the set (default threadpool) that build.sh built:
#   <peer-name> <command prefix>
# A runner appends `<case> <n>` to the prefix (see peer_common.h for the
# CLI), for pg the case and its arguments (peer_pg_common.h), for http
# `<url> <threads> <warm_ms> <ms> [ca_file]` (peer_http_curl.c), for
# mempool the case and its arguments (peer_mempool_common.h). Paths are
# absolute, so the commands work from any directory.
set -u
[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: $0 OUTDIR [threadpool|pg|http|mempool]" >&2; exit 2; }
src=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$1" 2>/dev/null && pwd) || { echo "list.sh: no directory $1" >&2; exit 2; }

if [ "${2:-threadpool}" = mempool ]; then
    for p in glibc jemalloc tcmalloc tcmalloc_minimal mimalloc talloc talloc_pool apr; do
        [ -x "$out/peer_mempool_$p" ] && echo "$p $out/peer_mempool_$p"
    done
    exit 0
fi

if [ "${2:-threadpool}" = http ]; then
    if [ -x "$out/peer_http_curl" ]; then
        echo "curl_new $out/peer_http_curl new"
        echo "curl_reuse $out/peer_http_curl reuse"
    fi
    if /usr/bin/python3 -c 'import requests' 2>/dev/null; then
        echo "requests /usr/bin/python3 $src/peer_http_requests.py get"
        echo "requests_session /usr/bin/python3 $src/peer_http_requests.py session"
    fi
    exit 0
fi

if [ "${2:-threadpool}" = pg ]; then
    [ -x "$out/peer_pg_zdb" ] && echo "libzdb $out/peer_pg_zdb"
    if /usr/bin/python3 -c 'import psycopg_pool' 2>/dev/null; then
        echo "psycopg /usr/bin/python3 $src/peer_pg_psycopg.py"
    fi
    exit 0
fi

for p in naive glib libuv apr; do
    [ -x "$out/peer_$p" ] && echo "$p $out/peer_$p"
done
if [ -f "$out/java/PeerJava.class" ] && command -v java >/dev/null 2>&1; then
    echo "java-tpe java -cp $out/java PeerJava tpe"
    echo "java-fjp java -cp $out/java PeerJava fjp"
fi
if [ -x "$out/peer_go" ]; then
    echo "go-goroutine $out/peer_go goroutine"
    echo "go-chanpool $out/peer_go chanpool"
fi
if /usr/bin/python3 -c 'import concurrent.futures' 2>/dev/null; then
    echo "python-tpe /usr/bin/python3 $src/peer_python.py"
fi
exit 0
