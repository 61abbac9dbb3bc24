#!/usr/bin/env bash
# bench/run.sh - runs the bench programs of a build and keeps their figures.
#
#   bench/run.sh DIR            every DIR/bench_* program
#   BENCH=core bench/run.sh DIR only bench_core (a comma list works too;
#                               BENCH=core.pair_1t runs one case of it)
#   ROUNDS=n                    rounds per case (default 5)
#
# Each program prints `<module>.<case> key=value ...` lines on stdout
# (progress goes to stderr). They are shown and also written to
# bench/last.txt (next to this script), with one `#` header line saying
# when, where and how they were taken. `make bench` calls this script.
set -euo pipefail

dir=${1:-build/release/bench}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/last.txt

if [ ! -d "$dir" ]; then
    echo "bench/run.sh: no directory $dir (run \`make bench\`)" >&2
    exit 2
fi

# Fewer than 5 rounds gives no honest median/min/max; allowed only when
# asked for explicitly, as a quick look.
rounds=${ROUNDS:-5}
case $rounds in
    '' | *[!0-9]*) echo "bench/run.sh: ROUNDS must be a number" >&2; exit 2 ;;
esac
if [ "$rounds" -lt 1 ]; then
    echo "bench/run.sh: ROUNDS must be at least 1" >&2
    exit 2
fi
if [ "$rounds" -lt 5 ]; then
    echo "bench/run.sh: ROUNDS=$rounds: a quick look, not a measurement (use 5 or more)" >&2
fi

# BENCH entries: `module` or `module.case[,case...]` (as in the output).
declare -A want_cases=()
want_all=1
if [ -n "${BENCH:-}" ]; then
    want_all=0
    IFS=',' read -r -a items <<<"$BENCH"
    for item in "${items[@]}"; do
        [ -n "$item" ] || continue
        mod=${item%%.*}
        if [ "$item" = "$mod" ]; then
            want_cases[$mod]=ALL
        elif [ "${want_cases[$mod]:-}" != ALL ]; then
            want_cases[$mod]=${want_cases[$mod]:+${want_cases[$mod]},}${item#*.}
        fi
    done
fi

progs=()
for prog in "$dir"/bench_*; do
    [ -f "$prog" ] && [ -x "$prog" ] || continue
    mod=${prog##*/bench_}
    if [ "$want_all" = 1 ] || [ -n "${want_cases[$mod]:-}" ]; then
        progs+=("$prog")
    fi
done
if [ "${#progs[@]}" -eq 0 ]; then
    echo "bench/run.sh: no bench program in $dir matches BENCH='${BENCH:-}'" >&2
    exit 2
fi
if [ "$want_all" = 0 ]; then
    for mod in "${!want_cases[@]}"; do
        [ -x "$dir/bench_$mod" ] ||
            echo "bench/run.sh: no bench_$mod in $dir; skipped" >&2
    done
fi

tmp=$(mktemp "${TMPDIR:-/tmp}/pk-bench.XXXXXX")
trap 'rm -f "$tmp"' EXIT
header="# poolkit bench $(date -u +%Y-%m-%dT%H:%M:%SZ) host=$(uname -n) cpus=$(getconf _NPROCESSORS_ONLN) kernel=$(uname -r) rounds=$rounds load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null | tr ' ' ,)"
echo "$header" | tee "$tmp"

status=0
for prog in "${progs[@]}"; do
    mod=${prog##*/bench_}
    args=(--rounds "$rounds")
    if [ "$want_all" = 0 ] && [ "${want_cases[$mod]}" != ALL ]; then
        args+=(--case "${want_cases[$mod]}")
    fi
    # Only the measurement lines go to the file; a failing program is
    # reported and the others still run.
    if ! "$prog" "${args[@]}" | tee -a "$tmp"; then
        echo "bench/run.sh: $prog failed" >&2
        status=1
    fi
done
mv "$tmp" "$out"
trap - EXIT
echo "bench/run.sh: figures written to $out" >&2
exit $status
