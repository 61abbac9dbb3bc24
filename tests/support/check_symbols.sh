#!/usr/bin/env bash
# tests/support/check_symbols.sh LIB.so - the shared library exports its API
# and nothing else.
#
# Every defined dynamic symbol must start with pk_, none with pk__ (the
# prefix of internals shared between files, which -fvisibility=hidden keeps
# inside), and each must be declared in some include/poolkit/*.h: what is
# not in a public header is not API, so it must not be exported either.
set -euo pipefail
cd "$(dirname "$0")/../.."

lib=${1:?usage: $0 path/to/libpoolkit.so.X.Y.Z}
[ -f "$lib" ] || { echo "check_symbols: $lib not found (run make first)"; exit 1; }

# nm -D --defined-only: "ADDRESS TYPE NAME"; absolute symbols (type A,
# linker bookkeeping on old binutils) are not code or data of ours.
syms=$(nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sed 's/@.*//' | sort -u)

fail=0
n=0
for s in $syms; do
    n=$((n + 1))
    case $s in
    pk__*) echo "check_symbols: $s is internal (pk__) but exported"; fail=1; continue ;;
    pk_*) ;;
    *) echo "check_symbols: $s is exported without the pk_ prefix"; fail=1; continue ;;
    esac
    if ! grep -Eq "(^|[^A-Za-z0-9_])$s([^A-Za-z0-9_]|\$)" include/poolkit/*.h; then
        echo "check_symbols: $s is exported but not declared in include/poolkit/*.h"
        fail=1
    fi
done
if [ $fail -ne 0 ]; then
    echo "check_symbols: FAILED ($lib)"
    exit 1
fi
echo "== check_symbols: PASS ($n exported symbols in $(basename "$lib"), all pk_ and declared)"
