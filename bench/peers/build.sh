#!/bin/sh
# bench/peers/build.sh OUTDIR [threadpool|pg|http|mempool|all] - builds
# every peer driver of the set it can into OUTDIR: the thread pools' (the
# default, as bench/run.sh's threadpool part calls it), the PostgreSQL
# pools' (pg), the HTTP clients' (http), the allocators and memory pools
# (mempool), or all of them.
#
# A peer whose toolchain or library is missing is reported as
# `SKIP <peer>: <reason>` and the rest still build, so a bench run on a bare
# machine still measures poolkit against whatever is there (exit 0).
# bench/peers/setup.sh installs what is missing. Nothing is fetched and
# nothing is written outside OUTDIR (Go's caches included).
set -u
[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: $0 OUTDIR [threadpool|pg|http|mempool|all]" >&2; exit 2; }
set_=${2:-threadpool}
case $set_ in
    threadpool | pg | http | mempool | all) ;;
    *) echo "usage: $0 OUTDIR [threadpool|pg|http|mempool|all]" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1" || exit 1
out=$(cd "$1" && pwd)
CC=${CC:-gcc}
CFLAGS="-std=c11 -O2 -Wall -Wextra -Werror -pthread"

skip() { echo "SKIP $1: $2"; }

# cpeer NAME SOURCE [PKG-CONFIG MODULES...]
cpeer() {
    name=$1 file=$2
    shift 2
    rm -f "$out/peer_$name"     # never leave a stale binary for list.sh
    if [ $# -gt 0 ]; then
        if ! pkg-config --exists "$@" 2>/dev/null; then
            skip "$name" "pkg-config cannot find $* (run bench/peers/setup.sh)"
            return
        fi
        flags=$(pkg-config --cflags "$@") libs=$(pkg-config --libs "$@")
    else
        flags='' libs=''
    fi
    # $flags/$libs split on purpose: they are lists of options.
    # shellcheck disable=SC2086
    if ! err=$($CC $CFLAGS $flags -o "$out/peer_$name" "$src/$file" $libs 2>&1); then
        skip "$name" "$CC failed: $(echo "$err" | head -n 3 | tr '\n' ' ')"
    fi
}

# mpeer NAME SOURCE DEFINES LIB: the mempool driver peer_mempool_NAME
# from SOURCE compiled with DEFINES (a word list) and linked with LIB: a
# pkg-config module, or -lname for a library Debian ships without a .pc
# (mimalloc), or nothing (glibc's malloc).
mpeer() {
    name=$1 file=$2 defs=$3 lib=$4
    rm -f "$out/peer_mempool_$name"
    case $lib in
        '') flags='' libs='' ;;
        -l*) flags='' libs=$lib ;;
        *)
            if ! pkg-config --exists "$lib" 2>/dev/null; then
                skip "$name" "pkg-config cannot find $lib (run bench/peers/setup.sh mempool)"
                return
            fi
            flags=$(pkg-config --cflags "$lib") libs=$(pkg-config --libs "$lib") ;;
    esac
    # shellcheck disable=SC2086
    if ! err=$($CC $CFLAGS $defs $flags -o "$out/peer_mempool_$name" "$src/$file" $libs 2>&1); then
        skip "$name" "$CC failed (bench/peers/setup.sh mempool installs the library): $(echo "$err" | head -n 3 | tr '\n' ' ')"
    fi
}

# The allocators and memory pools (issue #14): one program per malloc
# (each replaces malloc in its own process), talloc twice (children of a
# context, and a talloc_pool), APR's pools.
if [ "$set_" = mempool ] || [ "$set_" = all ]; then
    mpeer glibc peer_mempool_malloc.c '' ''
    mpeer jemalloc peer_mempool_malloc.c -DMB_JEMALLOC jemalloc
    mpeer tcmalloc peer_mempool_malloc.c -DMB_TCMALLOC libtcmalloc
    mpeer tcmalloc_minimal peer_mempool_malloc.c \
        '-DMB_TCMALLOC -DMB_TCMALLOC_MINIMAL' libtcmalloc_minimal
    mpeer mimalloc peer_mempool_malloc.c -DMB_MIMALLOC -lmimalloc
    mpeer talloc peer_mempool_talloc.c '' talloc
    mpeer talloc_pool peer_mempool_talloc.c -DMB_TALLOC_POOL talloc
    mpeer apr peer_mempool_apr.c '' apr-1
fi
[ "$set_" = mempool ] && exit 0

# The HTTP clients (issue #13): plain libcurl (a new handle per request,
# or one kept per thread) and Python requests (no build).
if [ "$set_" = http ] || [ "$set_" = all ]; then
    cpeer http_curl peer_http_curl.c libcurl
    if ! /usr/bin/python3 -c 'import requests' 2>/dev/null; then
        skip http_requests "/usr/bin/python3 cannot import requests (Debian: python3-requests)"
    fi
fi
[ "$set_" = http ] && exit 0

# The PostgreSQL pools (issue #12). PgBouncer needs no build: run.sh
# starts it with pg_bouncer.sh, which says why when it cannot.
if [ "$set_" = pg ] || [ "$set_" = all ]; then
    cpeer pg_zdb peer_pg_zdb.c zdb libpq
    if ! /usr/bin/python3 -c 'import psycopg_pool' 2>/dev/null; then
        skip pg_psycopg "/usr/bin/python3 cannot import psycopg_pool (Debian: python3-psycopg-pool)"
    fi
fi
[ "$set_" = pg ] && exit 0

cpeer naive naive_threadpool.c
cpeer glib peer_glib.c glib-2.0
cpeer libuv peer_libuv.c libuv
cpeer apr peer_apr.c apr-1 apr-util-1

rm -rf "$out/java" "$out/peer_go"
if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
    skip java "no javac/java on PATH (Debian: openjdk-17-jdk-headless)"
elif ! err=$(javac -d "$out/java" "$src/PeerJava.java" 2>&1); then
    skip java "javac failed: $(echo "$err" | head -n 3 | tr '\n' ' ')"
fi

# Standard library only, so GOPROXY=off costs nothing and guarantees no
# network; GOENV=off keeps go from reading or writing ~/.config/go/env.
if ! command -v go >/dev/null 2>&1; then
    skip go "no go on PATH (Debian: golang-go)"
elif ! err=$(cd "$out" && GOCACHE="$out/go/cache" GOPATH="$out/go/path" \
        GOENV=off GOPROXY=off GOFLAGS='' GOTOOLCHAIN=local \
        go build -o "$out/peer_go" "$src/peer_go.go" 2>&1); then
    skip go "go build failed: $(echo "$err" | head -n 3 | tr '\n' ' ')"
fi

# Python needs no build; check here so the skip shows up with the others.
if ! /usr/bin/python3 -c 'import concurrent.futures' 2>/dev/null; then
    skip python "/usr/bin/python3 missing or without concurrent.futures"
fi
exit 0
