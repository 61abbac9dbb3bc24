#!/usr/bin/env bash
# tests/support/check_install.sh - an installed poolkit works the way the
# README says: `make install` into a scratch DESTDIR, then build a small
# program with `pkg-config --cflags --libs poolkit`, once against the shared
# library and once against the static one, and run both. Also checks the
# soname, the symlinks and that `make uninstall` removes every file.
set -euo pipefail
cd "$(dirname "$0")/../.."

make=${MAKE:-make}
cc=${CC:-gcc}
prefix=/usr/local
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
libdir=$dest$prefix/lib

fail() { echo "check_install: $*"; exit 1; }

$make install DESTDIR="$dest" PREFIX="$prefix" >/dev/null
major=$(awk '$2 == "PK_VERSION_MAJOR" { print $3 }' include/poolkit/version.h)
version=$(awk '$2 == "PK_VERSION_STRING" { gsub(/"/, "", $3); print $3 }' include/poolkit/version.h)

# Files and symlinks.
for f in include/poolkit/*.h; do
    [ -f "$dest$prefix/$f" ] || fail "$f was not installed"
done
[ -f "$libdir/libpoolkit.a" ] || fail "libpoolkit.a was not installed"
[ -f "$libdir/libpoolkit.so.$version" ] || fail "libpoolkit.so.$version was not installed"
[ "$(readlink "$libdir/libpoolkit.so.$major")" = "libpoolkit.so.$version" ] ||
    fail "libpoolkit.so.$major should link to libpoolkit.so.$version"
[ "$(readlink "$libdir/libpoolkit.so")" = "libpoolkit.so.$major" ] ||
    fail "libpoolkit.so should link to libpoolkit.so.$major"
soname=$(readelf -d "$libdir/libpoolkit.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libpoolkit.so.$major" ] || fail "soname is '$soname', want libpoolkit.so.$major"

# pkg-config, pointed at the staged tree only.
unset PKG_CONFIG_PATH
export PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
[ "$(pkg-config --modversion poolkit)" = "$version" ] || fail "poolkit.pc has the wrong version"
cflags=$(pkg-config --cflags poolkit)
libs=$(pkg-config --libs poolkit)

cat >"$dest/app.c" <<'C'
#include <poolkit/poolkit.h>
#include <stdio.h>
#include <string.h>

int
main(void)
{
    const char *e = pk_strerror(PK_ETIMEDOUT);

    if (strcmp(pk_version(), PK_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", PK_VERSION_STRING,
                pk_version());
        return 1;
    }
    if (e == NULL || strcmp(e, pk_strerror(12345)) == 0 || strlen(e) == 0) {
        fprintf(stderr, "pk_strerror(PK_ETIMEDOUT) is not a message\n");
        return 1;
    }
    printf("poolkit %s linked and ran (pk_strerror works: %zu bytes for "
           "PK_ETIMEDOUT)\n", pk_version(), strlen(e));
    return 0;
}
C

# Shared: the program must need libpoolkit.so.MAJOR and run with it.
# shellcheck disable=SC2086
$cc -std=c11 -Wall -Wextra -Werror -o "$dest/app-shared" "$dest/app.c" $cflags $libs
readelf -d "$dest/app-shared" | grep -q "NEEDED.*\[libpoolkit.so.$major\]" ||
    fail "the shared build does not need libpoolkit.so.$major"
out=$(LD_LIBRARY_PATH=$libdir "$dest/app-shared") || fail "the shared build failed to run"
echo "   shared: $out"

# Static: the archive, plus what Libs.private says it needs.
# shellcheck disable=SC2086,SC2046
$cc -std=c11 -Wall -Wextra -Werror -o "$dest/app-static" "$dest/app.c" $cflags \
    $(pkg-config --libs-only-L poolkit) -Wl,-Bstatic -lpoolkit -Wl,-Bdynamic \
    $(pkg-config --static --libs-only-other poolkit)
if readelf -d "$dest/app-static" | grep -q 'NEEDED.*libpoolkit'; then
    fail "the static build still needs libpoolkit.so"
fi
out=$(env -u LD_LIBRARY_PATH "$dest/app-static") || fail "the static build failed to run"
echo "   static: $out"

# The pg adapter, when this machine builds it: poolkit-pg.pc says
# Requires: poolkit and Requires.private: libpq, so the system's libpq.pc
# must be found too: the staged .pc files are read with --define-prefix
# (their prefix is where they lie) instead of a sysroot, which would move
# libpq's paths as well.
if [ -f "$libdir/pkgconfig/poolkit-pg.pc" ]; then
    pgpc() { env -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_SYSROOT_DIR \
        PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --define-prefix "$@"; }
    grep -qx 'Requires: poolkit' "$libdir/pkgconfig/poolkit-pg.pc" ||
        fail "poolkit-pg.pc lacks Requires: poolkit"
    grep -qx 'Requires.private: libpq' "$libdir/pkgconfig/poolkit-pg.pc" ||
        fail "poolkit-pg.pc lacks Requires.private: libpq"
    cat >"$dest/pgapp.c" <<'C'
#include <poolkit/pg.h>
#include <stdio.h>

int
main(void)
{
    pk_pg_pool *pool = NULL;
    pk_error err;
    int rc = pk_pg_pool_create(&pool, &(pk_pg_options){ .conninfo = "host='x" },
                               &err);
    if (rc != PK_EINVAL || pool != NULL) {
        fprintf(stderr, "a malformed conninfo gave %d\n", rc);
        return 1;
    }
    printf("poolkit-pg linked and ran (%s)\n", err.msg);
    return 0;
}
C
    # shellcheck disable=SC2046
    $cc -std=c11 -Wall -Wextra -Werror -o "$dest/pgapp" "$dest/pgapp.c" \
        $(pgpc --cflags poolkit-pg) $(pgpc --libs poolkit-pg) ||
        fail "could not build a program with pkg-config poolkit-pg"
    readelf -d "$dest/pgapp" | grep -q "NEEDED.*\[libpoolkit-pg.so.$major\]" ||
        fail "the pg program does not need libpoolkit-pg.so.$major"
    out=$(LD_LIBRARY_PATH=$libdir "$dest/pgapp") || fail "the pg program failed to run"
    echo "   pg:     $out"
fi

# The HTTP adapter likewise (Requires.private: libcurl openssl).
if [ -f "$libdir/pkgconfig/poolkit-http.pc" ]; then
    httppc() { env -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_SYSROOT_DIR \
        PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --define-prefix "$@"; }
    grep -qx 'Requires.private: libcurl openssl' "$libdir/pkgconfig/poolkit-http.pc" ||
        fail "poolkit-http.pc lacks Requires.private: libcurl openssl"
    cat >"$dest/httpapp.c" <<'C'
#include <poolkit/http.h>
#include <stdio.h>

int
main(void)
{
    pk_http_pool *pool = NULL;
    pk_http_response r;
    pk_error err;
    if (pk_http_pool_create(&pool, NULL, &err) != 0)
        return 1;
    int rc = pk_http_exec(pool, &(pk_http_request){ .url = "gopher://x/" },
                          &r, &err);
    pk_http_pool_destroy(pool);
    if (rc != PK_EINVAL) {
        fprintf(stderr, "an unsupported scheme gave %d\n", rc);
        return 1;
    }
    printf("poolkit-http linked and ran (%s)\n", err.msg);
    return 0;
}
C
    # shellcheck disable=SC2046
    $cc -std=c11 -Wall -Wextra -Werror -o "$dest/httpapp" "$dest/httpapp.c" \
        $(httppc --cflags poolkit-http) $(httppc --libs poolkit-http) ||
        fail "could not build a program with pkg-config poolkit-http"
    readelf -d "$dest/httpapp" | grep -q "NEEDED.*\[libpoolkit-http.so.$major\]" ||
        fail "the http program does not need libpoolkit-http.so.$major"
    out=$(LD_LIBRARY_PATH=$libdir "$dest/httpapp") || fail "the http program failed to run"
    echo "   http:   $out"
fi

# Uninstall leaves no file behind (directories may stay).
$make uninstall DESTDIR="$dest" PREFIX="$prefix" >/dev/null
left=$(find "$dest$prefix" \( -type f -o -type l \) | sed "s|^$dest||")
[ -z "$left" ] || fail "make uninstall left: $left"

echo "== check_install: PASS (install, pkg-config, shared + static link, soname, symlinks, uninstall)"
