#!/usr/bin/env bash
# tests/support/check_layout.sh BUILD_DIR - the source layout keeps its two
# rules (README, "Source layout"):
#
# 1. Includes. Each folder includes only what is meant for it:
#      lib/kit/           lib/kit/
#      lib/pool/          lib/pool/, lib/kit/
#      lib/exec/          lib/exec/, lib/kit/
#      pools/*, adapters/*  its own folder and lib/exec/executor_int.h
#    (and <poolkit/...>, the public headers, everywhere). A quoted include
#    is resolved as the compiler does: next to the file, then in the
#    folder's -I (lib/exec for a module).
# 2. No two files of a folder call each other. From `nm` of each object of
#    BUILD_DIR/obj (what a file defines: its T symbols; what it uses: its U
#    symbols) this builds each folder's file-level call graph and fails on
#    any cycle, direct (a.c uses b.c's function and b.c uses a.c's) or
#    through longer ones, printing the files of each cycle and the calls
#    between them. A call path reads downward, so split a file by the data
#    it owns until the cycle is gone.
set -euo pipefail
cd "$(dirname "$0")/../.."

bdir=${1:?usage: $0 BUILD_DIR (for example build/release)}
[ -d "$bdir/obj" ] || { echo "check_layout: $bdir/obj not found (run make first)"; exit 1; }

fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- 1. includes -----------------------------------------------------------

# allowed FOLDER: the folders (or single headers) FOLDER may include from.
allowed() {
    case $1 in
    lib/kit)             echo "lib/kit/" ;;
    lib/pool)            echo "lib/pool/ lib/kit/" ;;
    lib/exec)            echo "lib/exec/ lib/kit/" ;;
    pools/* | adapters/*) echo "$1/ lib/exec/executor_int.h" ;;
    *)                   echo "" ;;
    esac
}
# search_path FOLDER: where a quoted include is looked for after the
# including file's own folder (the Makefile's per-folder -I).
search_path() {
    case $1 in
    pools/* | adapters/*) echo "lib/exec" ;;
    *)                    echo "" ;;
    esac
}

nfiles=0
for f in lib/*/*.[ch] pools/*/*.[ch] adapters/*/*.[ch]; do
    [ -f "$f" ] || continue
    nfiles=$((nfiles + 1))
    dir=$(dirname "$f")
    ok=$(allowed "$dir")
    # "#include "x"" lines, with their line numbers
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
        sed 's/^\([0-9]*\):.*"\(.*\)".*/\1 \2/' >"$tmp/inc" || true
    while read -r line name; do
        found=
        for d in "$dir" $(search_path "$dir"); do
            if [ -f "$d/$name" ]; then
                found=$(realpath -m --relative-to=. "$d/$name")
                break
            fi
        done
        if [ -z "$found" ]; then
            echo "check_layout: $f:$line includes \"$name\", which is not in $dir/ nor on its include path"
            fail=1
            continue
        fi
        good=0
        for a in $ok; do
            case $a in
            */) case $found in "$a"*) good=1 ;; esac ;;
            *)  [ "$found" = "$a" ] && good=1 ;;
            esac
        done
        if [ $good -eq 0 ]; then
            echo "check_layout: $f:$line includes $found; $dir/ may include only: $ok"
            fail=1
        fi
    done <"$tmp/inc"
done

# ---- 2. no call cycles within a folder --------------------------------------

# Calls that close a cycle today and are still to be split away, one
# "FOLDER FILE -> FILE" a line: such a cycle is noted, any other fails.
known=tests/support/layout_known_cycles.txt
nknown=0
nfolders=0
for dir in lib/* pools/* adapters/*; do
    [ -d "$bdir/obj/$dir" ] || continue
    objs=$(ls "$bdir/obj/$dir"/*.o 2>/dev/null || true)
    [ -n "$objs" ] || continue
    nfolders=$((nfolders + 1))
    # "file type symbol" for each defined function and each use
    for o in $objs; do
        b=$(basename "$o" .o).c
        [ -f "$dir/$b" ] || continue # a stale object of a removed file
        nm -P "$o" | awk -v f="$b" '$2 == "T" || $2 == "U" { print f, $2, $1 }'
    done >"$tmp/syms"
    awk -v dir="$dir" -v known="$known" '
        BEGIN {
            while ((getline line < known) > 0) {
                if (line ~ /^#/ || split(line, kn, " ") != 4) continue
                if (kn[1] == dir && kn[3] == "->") ok[kn[2], kn[4]] = 1
            }
        }
        $2 == "T" { def[$3] = $1; files[$1] = 1; next }
        { use[++nu] = $1 SUBSEP $3 }
        END {
            # edges: a -> b when a uses a function b defines
            for (i = 1; i <= nu; i++) {
                split(use[i], p, SUBSEP)
                a = p[1]; s = p[2]
                if (!(s in def) || def[s] == a) continue
                b = def[s]
                r[a, b] = 1
                if ((a, b) in why) why[a, b] = why[a, b] ", " s
                else why[a, b] = s
            }
            n = 0
            for (f in files) name[++n] = f
            # transitive closure (a folder has a handful of files)
            for (k = 1; k <= n; k++)
                for (i = 1; i <= n; i++)
                    if ((name[i], name[k]) in r)
                        for (j = 1; j <= n; j++)
                            if ((name[k], name[j]) in r)
                                r[name[i], name[j]] = 1
            # each group of files that reach each other is one cycle; a
            # cycle is known if every call between its files is listed
            bad = 0
            for (i = 1; i <= n; i++) {
                if (name[i] in seen) continue
                grp = ""; cnt = 0
                for (j = 1; j <= n; j++)
                    if (i == j || ((name[i], name[j]) in r && (name[j], name[i]) in r)) {
                        seen[name[j]] = 1; grp = grp " " name[j]; mem[name[j]] = i; cnt++
                    }
                if (cnt < 2) continue
                out = ""; new = 0
                for (a = 1; a <= n; a++)
                    for (b = 1; b <= n; b++)
                        if (mem[name[a]] == i && mem[name[b]] == i &&
                            (name[a], name[b]) in why) {
                            isnew = !((name[a], name[b]) in ok)
                            new += isnew
                            out = out sprintf("   %s %s -> %s: %s\n", isnew ? "NEW  " : "known",
                                              name[a], name[b], why[name[a], name[b]])
                        }
                if (new) {
                    bad++
                    printf "check_layout: call cycle in %s/ among%s (%d calls between them not in %s):\n%s",
                           dir, grp, new, known, out
                } else {
                    nknown++
                    printf "check_layout: note: known call cycle in %s/ among%s, still to split (%s)\n",
                           dir, grp, known
                }
            }
            exit bad ? 1 : (nknown ? 2 : 0)
        }' "$tmp/syms" && rc=0 || rc=$?
    case $rc in
    0) ;;
    2) nknown=$((nknown + 1)) ;;
    *) fail=1 ;;
    esac
done

if [ $fail -ne 0 ]; then
    echo "check_layout: FAILED"
    exit 1
fi
echo "== check_layout: PASS ($nfiles files include only what their folder may; no new call cycle in $nfolders folders, $nknown known)"
