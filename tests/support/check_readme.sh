#!/usr/bin/env bash
# tests/support/check_readme.sh BUILD_DIR - every ```c block of README.md
# is a whole program: it compiles as written (C11, -Wall -Wextra -Werror,
# against include/ and BUILD_DIR/libpoolkit.a), runs, and exits 0 within
# 10 s. A snippet a reader copies must work as it stands.
set -euo pipefail
cd "$(dirname "$0")/../.."

bdir=${1:?usage: $0 BUILD_DIR (for example build/release)}
cc=${CC:-cc}
lib=$bdir/libpoolkit.a
[ -f "$lib" ] || { echo "check_readme: $lib not found (run make first)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Split the ```c blocks into tmp/snippet_N.c, each with its README line.
awk -v dir="$tmp" '
    /^```c[[:space:]]*$/ { n++; f = sprintf("%s/snippet_%d.c", dir, n);
                           printf "%d\n", NR > (dir "/line_" n); inside = 1; next }
    /^```/ && inside     { inside = 0; close(f); next }
    inside               { print > f }
' README.md

fail=0
count=0
for src in "$tmp"/snippet_*.c; do
    [ -f "$src" ] || continue
    count=$((count + 1))
    n=${src##*snippet_}
    n=${n%.c}
    at="README.md:$(cat "$tmp/line_$n")"
    if ! grep -q 'main(' "$src"; then
        echo "check_readme: $at: a C block without main(): make it a whole program"
        fail=1
        continue
    fi
    if ! $cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
        -Iinclude -o "$tmp/prog_$n" "$src" "$lib" -pthread 2>"$tmp/err_$n"; then
        echo "check_readme: $at does not compile as written:"
        sed 's/^/   /' "$tmp/err_$n"
        fail=1
        continue
    fi
    if ! timeout 10 "$tmp/prog_$n" >"$tmp/out_$n" 2>&1; then
        echo "check_readme: $at compiled but failed when run:"
        sed 's/^/   /' "$tmp/out_$n"
        fail=1
    fi
done
if [ "$fail" -ne 0 ]; then
    echo "== check_readme: FAILED"
    exit 1
fi
echo "== check_readme: PASS ($count C blocks of README.md compile without warnings and run)"
