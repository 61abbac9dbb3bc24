#!/usr/bin/env bash
# scripts/setup.sh WHAT - make sure this machine has what `make WHAT` needs.
#
#   check     compilers (gcc, clang with its sanitizer runtimes), cmocka,
#             pkg-config, binutils (nm, readelf), libpq-dev (the pg adapter
#             builds against it) and postgresql (the integration tests start
#             a throwaway server), libcurl4-openssl-dev and libssl-dev (the
#             http adapter: libcurl with OpenSSL, whose CA store it shares)
#             and nginx (a throwaway HTTP server): everything `make check`
#             uses
#   demo      a C compiler and make; pkg-config, libpq-dev and postgresql
#             for the demo's pg rows, libcurl4-openssl-dev, libssl-dev,
#             nginx and openssl for its http rows (both start a throwaway
#             server; built without libpq or libcurl, those rows say
#             skipped and the rest runs)
#   valgrind  what check needs, plus valgrind
#
# On Debian/Ubuntu it asks dpkg what is missing. As root it installs the
# missing packages (apt-get update once, only when something is missing);
# otherwise it prints the exact apt-get line to run and exits 1. On other
# systems it checks the commands and says what it could not find.
#
# openssl makes the throwaway servers' certificates: http_server.sh needs
# it (nginx does not depend on it), pg_server.sh serves no TLS without it
# (on Debian postgresql pulls it in anyway: postgresql -> postgresql-15 ->
# postgresql-common -> ssl-cert -> openssl, all Depends).
set -euo pipefail

what=${1:-check}
case $what in
check)    pkgs="build-essential gcc make clang libclang-rt-dev libcmocka-dev pkg-config binutils coreutils libpq-dev postgresql libcurl4-openssl-dev libssl-dev nginx openssl" ;;
demo)     pkgs="build-essential gcc make pkg-config libpq-dev postgresql libcurl4-openssl-dev libssl-dev nginx openssl" ;;
valgrind) pkgs="build-essential gcc make libcmocka-dev pkg-config valgrind" ;;
*) echo "usage: $0 check|demo|valgrind" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    # Not Debian: we cannot name packages, but we can say what is missing.
    missing=
    for c in cc make; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
    if [ "$what" != demo ]; then
        for c in clang pkg-config nm readelf timeout; do
            command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
        done
        pkg-config --exists cmocka 2>/dev/null || missing="$missing cmocka(dev)"
        pkg-config --exists libpq 2>/dev/null || missing="$missing libpq(dev)"
        pkg-config --exists libcurl openssl 2>/dev/null || missing="$missing libcurl+openssl(dev)"
        command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
        bash "$(dirname "$0")/../tests/support/pg_server.sh" probe - >/dev/null 2>&1 ||
            missing="$missing postgresql(server)"
    fi
    [ "$what" = valgrind ] && { command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"; }
    if [ -n "$missing" ]; then
        echo "setup: not a Debian system; please install:$missing" >&2
        exit 1
    fi
    exit 0
fi

missing=
for p in $pkgs; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "setup ($what): all needed packages are installed"
    exit 0
fi

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "setup ($what): missing packages:$missing" >&2
    echo "run as root:  apt-get update && $cmd" >&2
    exit 1
fi
echo "setup ($what): installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
