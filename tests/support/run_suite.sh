#!/usr/bin/env bash
# tests/support/run_suite.sh BUILDDIR LABEL - run every test binary of one
# build mode and say how it went.
#
# Test binaries are discovered, not listed: every executable file named
# test_* or stress_* directly in BUILDDIR/tests/ (the Makefile builds one per
# tests/unit/test_*.c, tests/stress/stress_*.c and, when its adapter builds,
# tests/integration/test_*.c). Unit tests run first,
# then stress tests, each alone, so a crash or a hang is pinned to a binary.
#
# For each binary it prints `== NAME: PASS (1.2s)` (or FAIL, with the reason)
# followed by the cmocka summary lines; a failing binary also gets the tail
# of its output. The whole output of each binary is kept in
# BUILDDIR/tests/NAME.log. Exit status: 0 only if every binary passed.
#
# Environment:
#   PK_TEST_TIMEOUT_BASE  seconds per binary (default 300)
#   PK_TEST_TIMEOUT_MULT  multiplies it, for slow machines or builds (default 1)
#   PK_TEST_WRAPPER       command put in front of each binary (valgrind, setarch)
#   PK_STRESS_SCALE, PK_SEED, *SAN_OPTIONS  passed through to the tests
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BUILDDIR LABEL" >&2
    exit 2
fi
dir=$1/tests
label=$2
base=${PK_TEST_TIMEOUT_BASE:-300}
mult=${PK_TEST_TIMEOUT_MULT:-1}
limit=$(awk -v b="$base" -v m="$mult" 'BEGIN { printf "%d", b * m + 0.5 }')
wrapper=${PK_TEST_WRAPPER:-}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

bins=()
for pattern in 'test_*' 'stress_*'; do
    for f in "$dir"/$pattern; do
        case $f in *.log | *.o | *.d) continue ;; esac
        [ -f "$f" ] && [ -x "$f" ] && bins+=("$f")
    done
done

echo "== suite $label: ${#bins[@]} binaries in $dir" \
     "(timeout ${limit}s each, PK_STRESS_SCALE=${PK_STRESS_SCALE:-1}${wrapper:+, via $wrapper})"
if [ ${#bins[@]} -eq 0 ]; then
    echo "== suite $label: no test binaries found (is anything in tests/unit or tests/stress?)"
    exit 1
fi

suite_start=$(now)
failed=()
for bin in "${bins[@]}"; do
    name=$(basename "$bin")
    log=$dir/$name.log
    start=$(now)
    # --kill-after: a test that ignores SIGTERM still ends. $wrapper is
    # unquoted on purpose: it is a command with its own arguments.
    # shellcheck disable=SC2086
    timeout --kill-after=10 "$limit" $wrapper "$bin" >"$log" 2>&1 </dev/null
    rc=$?
    took=$(since "$start")
    if [ $rc -eq 0 ]; then
        echo "== $name: PASS (${took}s)"
    else
        case $rc in
        124) why="timed out after ${limit}s" ;;
        137) why="SIGKILL: ignored the timeout's SIGTERM, or out of memory" ;;
        *) if [ $rc -gt 128 ]; then why="killed by signal $((rc - 128))"
           else why="exit status $rc"; fi ;;
        esac
        echo "== $name: FAIL (${took}s, $why)"
        failed+=("$name")
    fi
    # cmocka's summary lines, failed test names, and any line about a skip
    # or a seed (stress tests print the seed that PK_SEED replays).
    grep -E '^\[ *(=+|PASSED|FAILED|SKIPPED|ERROR) *\]|[Ss]kip|PK_SEED|seed' "$log" |
        grep -Ev '^\[ *(RUN|OK) *\]' | sed 's/^/   /'
    if [ $rc -ne 0 ]; then
        echo "   --- last lines of $log:"
        tail -n 40 "$log" | sed 's/^/   | /'
    fi
done

total=$(since "$suite_start")
if [ ${#failed[@]} -eq 0 ]; then
    echo "== suite $label: all ${#bins[@]} passed in ${total}s"
    exit 0
fi
echo "== suite $label: ${#failed[@]} of ${#bins[@]} FAILED in ${total}s: ${failed[*]}"
exit 1
