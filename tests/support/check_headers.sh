#!/usr/bin/env bash
# tests/support/check_headers.sh - every public header compiles alone.
#
# Each include/poolkit/*.h is included twice (the include guard must hold)
# into an otherwise empty file and compiled as C11 with gcc and with clang,
# and as C++ with g++ when it is installed (the extern "C" guards). Only
# -Iinclude and plain -std=c11, with no feature macros: that is how a user's
# program sees them.
set -euo pipefail
cd "$(dirname "$0")/../.."

cxx=$(command -v g++ || true)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail=0
n=0
for h in include/poolkit/*.h; do
    name=$(basename "$h")
    printf '#include <poolkit/%s>\n#include <poolkit/%s>\nint main(void) { return 0; }\n' \
        "$name" "$name" >"$tmp/t.c"
    cp "$tmp/t.c" "$tmp/t.cc"
    for cc in gcc clang ${cxx:+g++}; do
        case $cc in
        g++) src=$tmp/t.cc std=-std=c++11 ;;
        *)   src=$tmp/t.c  std=-std=c11 ;;
        esac
        if ! "$cc" $std -Iinclude -Wall -Wextra -Werror -fsyntax-only "$src" \
                >"$tmp/out" 2>&1; then
            echo "check_headers: $name does not compile alone with $cc $std:"
            sed 's/^/   /' "$tmp/out"
            fail=1
        fi
        n=$((n + 1))
    done
done
if [ $fail -ne 0 ]; then
    echo "check_headers: FAILED"
    exit 1
fi
echo "== check_headers: PASS ($n compiles: each header alone, C11 gcc/clang${cxx:+, C++11 g++})"
