#!/usr/bin/env bash
# bench/run.sh - runs the bench programs of a build and keeps their figures.
#
#   bench/run.sh DIR            every DIR/bench_* program
#   BENCH=core bench/run.sh DIR only bench_core (a comma list works too;
#                               BENCH=core.pair_1t runs one case of it)
#   ROUNDS=n                    rounds per case (default 5)
#   RECOVERY_SCALE=x            bench_core's recovery case: outages of 1, 5
#                               and 12 s times x (default 0.25)
#
# Each program prints `<module>.<case> key=value ...` lines on stdout
# (progress goes to stderr). They are shown and also written to
# bench/last.txt (next to this script), with one `#` header line saying
# when, where and how they were taken. `make bench` calls this script.
#
# bench_threadpool, bench_pg, bench_http and bench_mempool are the
# exception: drivers shaped like the peer drivers in bench/peers/ (one
# case, one line), so this script sets the peers up, builds them into
# DIR/peers, starts the servers (PostgreSQL, nginx) and runs the
# interleaved rounds itself (tp_bench, pg_bench, http_bench, mp_bench
# below; bench/README.md lists their lines and knobs).
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

# ---- threadpool: poolkit's thread pool against other pools (issue #4) -----
#
# bench_threadpool is not a --rounds program: like the peer drivers in
# bench/peers/ it runs one case once (`<case> <n>`, one line out), so the
# rounds are run here. Per case, every round runs poolkit and every peer
# one after the other, the order rotated by one each round; a ratio is
# computed per round and the line gives the median of those ratios, as
# bench_core does. Cases: ff future many roundtrip futex close_latency
# (or close; poolkit alone) idle_cpu memory map_ordered_vs_unordered
# map_memory (`map` picks both map cases; BENCH=threadpool.ff,
# threadpool.roundtrip picks some).
# PEERS=glib,naive keeps only the named peers. Sizes (override for a quick
# look):
TP_N=${TP_N:-1000000}         # tasks per throughput run: poolkit, C, Go, Java
TP_PY_N=${TP_PY_N:-100000}    # the same for Python (~50x slower per task)
TP_RT_N=${TP_RT_N:-10000}     # timed round trips per run, every pool
TP_CLOSE_N=${TP_CLOSE_N:-300} # timed closes per run (close_latency)
TP_MEM_N=${TP_MEM_N:-4000000} # tasks of the memory case's endless input
TP_MAP_N=${TP_MAP_N:-1000000} # tiny tasks per map run (ordered, unordered)
TP_MAP_MEM_N1=${TP_MAP_MEM_N1:-1000000}   # map_memory: the short run's inputs
TP_MAP_MEM_N2=${TP_MAP_MEM_N2:-10000000}  # map_memory: the long run's inputs
TP_TIMEOUT=${TP_TIMEOUT:-300} # seconds one run may take before it fails

tp_line() { printf '%s\n' "$1" | tee -a "$tmp"; }
tp_key() { printf '%s' "$1" | tr -c 'A-Za-z0-9_\n' _; }

# Goal ratios (poolkit's throughput over the peer's; 1.00 means "ahead
# of") for CASE (ff or future) against PEER: issue #10's, after the
# thread pool was slimmed (3x GLib and libuv for ff, 2x libuv for a
# future per task), and issue #4's for Python.
tp_goal() {
    case $1/$2 in
        ff/glib | ff/libuv | future/glib) echo 3.0 ;;
        future/libuv) echo 2.0 ;;
        */python-tpe | */python_tpe) echo 100 ;;
        *) echo 1.0 ;;
    esac
}

# tp_run LABEL RUNCASE ROUND IMPL N CMD...: runs `CMD RUNCASE N` once and
# appends `LABEL ROUND IMPL n=N case=RUNCASE key=value...` to the data
# file, or `LABEL ROUND IMPL FAIL <reason>`. A peer without futures
# (future prints skip=) is measured with ff instead, marked case=ff.
tp_run() {
    local label=$1 rc=$2 r=$3 impl=$4 n=$5 line
    shift 5
    if line=$(timeout "$TP_TIMEOUT" "$@" "$rc" "$n" </dev/null \
            2>"$tpwork/err" | tail -n 1) && [ -n "$line" ]; then
        if [ "$rc" = future ] && [ "${line#skip=}" != "$line" ]; then
            tp_run "$label" ff "$r" "$impl" "$n" "$@"
            return
        fi
        echo "$label $r $impl n=$n case=$rc $line" >>"$tpwork/data"
    else
        echo "$label $r $impl FAIL exit or timeout (${TP_TIMEOUT}s): $(head -n 1 "$tpwork/err" | tr -d '\r')" >>"$tpwork/data"
    fi
}

# tp_pair NAME LABEL PEER KEY_POOLKIT KEY_PEER BETTER FIG_POOLKIT FIG_PEER
#         FMT GOAL [SELF]: one line comparing poolkit with PEER over the
# rounds of LABEL. BETTER: high (ratio = poolkit/peer) or low
# (peer/poolkit). GOAL empty: no goal keys. SELF (default poolkit) is the
# impl name of the first side in the data file, for lines that compare
# two poolkit variants (the map case: ordered against unordered).
tp_pair() {
    awk -v NAME="$1" -v L="$2" -v B="$3" -v KA="$4" -v KB="$5" \
        -v BETTER="$6" -v FA="$7" -v FB="$8" -v FMT="$9" -v GOAL="${10}" \
        -v R="$rounds" -v PK="$(tp_key "$3")" -v A="${11:-poolkit}" '
    function sortv(v, k,   i, j, t) {
        for (i = 2; i <= k; i++) {
            t = v[i]
            for (j = i - 1; j >= 1 && v[j] > t; j--)
                v[j + 1] = v[j]
            v[j + 1] = t
        }
    }
    function med(v, k) {
        sortv(v, k)
        return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
    }
    # Ratios with two decimals, or three significant digits below 0.1
    # (a pg wait ratio can be 0.001: "0.00" would say nothing).
    function fr(x) { return sprintf(x >= 0.1 ? "%.2f" : "%.3g", x) }
    function fig(name, v, k,   m) {
        m = med(v, k)
        return sprintf("%s_med=" FMT " %s_min=" FMT " %s_max=" FMT,
                       name, m, name, v[1], name, v[k])
    }
    $1 == L && ($3 == A || $3 == B) {
        impl = $3; r = $2
        if ($4 == "FAIL") { fail[impl] = substr($0, index($0, "FAIL") + 5); next }
        if (index($0, " skip=")) { skip[impl] = substr($0, index($0, " skip=") + 6); next }
        for (i = 4; i <= NF; i++)
            if ((eq = index($i, "=")) > 0)
                kv[impl, r, substr($i, 1, eq - 1)] = substr($i, eq + 1)
    }
    END {
        if (A in fail) { print NAME " skip=" A " failed: " fail[A]; exit }
        if (B in fail) { print NAME " skip=" B " failed: " fail[B]; exit }
        if (B in skip) { print NAME " skip=" B ": " skip[B]; exit }
        k = 0
        for (r = 1; r <= R; r++) {
            if (!((A, r, KA) in kv) || !((B, r, KB) in kv))
                continue
            a = kv[A, r, KA] + 0; b = kv[B, r, KB] + 0
            if (a <= 0 || b <= 0)
                continue
            k++; va[k] = a; vb[k] = b
            vr[k] = BETTER == "high" ? a / b : b / a
            na = kv[A, r, "n"]; nb = kv[B, r, "n"]
            ca = kv[A, r, "case"]; cb = kv[B, r, "case"]
        }
        if (k == 0) { print NAME " skip=no figures"; exit }
        line = NAME " " fig(FA, va, k) " " fig(FB, vb, k) " "
        rm = med(vr, k)
        line = line "ratio=" fr(rm) " ratio_min=" fr(vr[1]) " ratio_max=" fr(vr[k])
        if (GOAL != "")
            line = line sprintf(" goal_ratio=%.2f goal=%s", GOAL, rm >= GOAL + 0 ? "met" : "missed")
        line = line " rounds=" k
        if (na != "" || nb != "")   # the pg contend runs have no n
            line = line (na == nb ? " n=" na : " " A "_n=" na " " PK "_n=" nb)
        if (cb != ca && A == "poolkit") # a peer measured with another case
            line = line " " PK "_case=" cb
        print line
    }' "$tpwork/data"
}

# tp_stat LABEL IMPL KEY FIG FMT: `FIG_med=.. FIG_min=.. FIG_max=..` over
# the rounds of LABEL, or nothing if there are no figures.
tp_stat() {
    awk -v L="$1" -v I="$2" -v K="$3" -v F="$4" -v FMT="$5" '
    $1 == L && $3 == I {
        for (i = 4; i <= NF; i++)
            if ($i ~ ("^" K "=")) v[++k] = substr($i, length(K) + 2) + 0
    }
    END {
        if (!k) exit
        for (i = 2; i <= k; i++) {
            t = v[i]
            for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]
            v[j + 1] = t
        }
        m = k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        printf "%s_med=" FMT " %s_min=" FMT " %s_max=" FMT "\n", F, m, F, v[1], F, v[k]
    }' "$tpwork/data"
}

# tp_rounds LABEL RUNCASE_POOLKIT NAMES...: ROUNDS rotated rounds of
# poolkit and the named peers. Peers run RUNCASE_POOLKIT too, except that
# the many case compares with the peers' ff (one submit call per task).
tp_rounds() {
    local label=$1 pkcase=$2 r i k nm n pcase
    shift 2
    local impls=(poolkit "$@")
    for ((r = 1; r <= rounds; r++)); do
        echo "threadpool: $label round $r/$rounds" >&2
        k=${#impls[@]}
        for ((i = 0; i < k; i++)); do
            nm=${impls[(i + r - 1) % k]}
            if [ "$nm" = floor ]; then
                # bench_threadpool's future_floor: a bare line per task.
                tp_run "$label" future_floor "$r" floor "$TP_N" "$tp_prog"
            elif [ "$nm" = poolkit ]; then
                n=$TP_N
                [ "$label" = roundtrip ] && n=$TP_RT_N
                [ "$label" = close ] && n=$TP_CLOSE_N
                tp_run "$label" "$pkcase" "$r" poolkit "$n" "$tp_prog"
            else
                n=$TP_N pcase=$pkcase
                case $nm in python*) n=$TP_PY_N ;; esac
                [ "$label" = roundtrip ] && n=$TP_RT_N
                [ "$label" = many ] && pcase=ff
                # The prefix is a word list (list.sh prints no quoting).
                # shellcheck disable=SC2086
                tp_run "$label" "$pcase" "$r" "$nm" "$n" ${tp_cmd[$nm]}
            fi
        done
    done
}

# tp_bench PROG WANT: the threadpool lines. WANT: ALL or a comma list of
# cases.
tp_bench() {
    tp_prog=$1
    local want=$2 c p k goal peers=() floor=() name cmd line
    declare -gA tp_cmd=()
    : >"$tpwork/data"
    tp_want() { [ "$want" = ALL ] || [[ ",$want," == *",$1,"* ]]; }

    if tp_want ff || tp_want future || tp_want many || tp_want roundtrip ||
            tp_want futex; then
        echo "threadpool: peer set-up (bench/peers/setup.sh)" >&2
        if ! sh "$here/peers/setup.sh" threadpool >&2; then
            echo "bench/run.sh: peer set-up failed or not allowed; peers that cannot build are skipped" >&2
        fi
        echo "threadpool: building peers into $dir/peers" >&2
        while IFS= read -r line; do
            case $line in
                'SKIP '*:*)
                    name=${line#SKIP }; name=${name%%:*}
                    tp_line "threadpool.peer_$(tp_key "$name") skip=${line#*: }" ;;
                *) [ -n "$line" ] && echo "$line" >&2 ;;
            esac
        done < <(sh "$here/peers/build.sh" "$dir/peers" 2>&1)
        while read -r name cmd; do
            [ -n "$name" ] || continue
            if [ -n "${PEERS:-}" ] && [[ ",$PEERS," != *",$name,"* ]]; then
                continue
            fi
            tp_cmd[$name]=$cmd
            peers+=("$name")
        done < <(sh "$here/peers/list.sh" "$dir/peers")
        echo "threadpool: peers: ${peers[*]:-none}; n=$TP_N (python $TP_PY_N), roundtrip n=$TP_RT_N" >&2
    fi

    for c in ff future; do
        tp_want "$c" || continue
        floor=()
        [ "$c" = future ] && floor=(floor)
        tp_rounds "$c" "$c" "${floor[@]}" "${peers[@]}"
        for p in "${peers[@]}"; do
            k=$(tp_key "$p")
            tp_pair "threadpool.${c}_vs_$k" "$c" "$p" tasks_per_s tasks_per_s \
                high poolkit_tps "${k}_tps" '%.0f' "$(tp_goal "$c" "$p")" |
                tee -a "$tmp"
        done
    done
    # The future case's floor (bench_threadpool.c, run_future_floor): what
    # a bare 64-byte line per task allows, against the real future and
    # against libuv, the peer whose goal the future case misses. No goal.
    if tp_want future; then
        tp_pair threadpool.future_vs_floor future floor tasks_per_s \
            tasks_per_s high poolkit_tps floor_tps '%.0f' '' | tee -a "$tmp"
        if [ -n "${tp_cmd[libuv]:-}" ]; then
            tp_pair threadpool.future_floor_vs_libuv future libuv \
                tasks_per_s tasks_per_s high floor_tps libuv_tps '%.0f' '' \
                floor | tee -a "$tmp"
        fi
    fi

    if tp_want many; then
        if [ -n "${tp_cmd[glib]:-}" ]; then
            tp_rounds many many glib
            tp_pair threadpool.many_vs_glib many glib tasks_per_s tasks_per_s \
                high poolkit_tps glib_tps '%.0f' 12 | tee -a "$tmp"
        else
            tp_line "threadpool.many_vs_glib skip=glib peer not built"
        fi
    fi

    if tp_want roundtrip; then
        tp_rounds roundtrip roundtrip "${peers[@]}"
        for p in "${peers[@]}"; do
            k=$(tp_key "$p")
            if [ "$p" = glib ]; then
                # Issue #4: p50 <= 0.25x GLib's p50; p99 <= GLib's p50.
                tp_pair threadpool.roundtrip_p50_vs_glib roundtrip glib \
                    p50_ns p50_ns low poolkit_p50_ns glib_p50_ns '%.0f' 4 |
                    tee -a "$tmp"
                tp_pair threadpool.roundtrip_p99_vs_glib_p50 roundtrip glib \
                    p99_ns p50_ns low poolkit_p99_ns glib_p50_ns '%.0f' 1 |
                    tee -a "$tmp"
            else
                # No goal in the issue: shown for reading only.
                tp_pair "threadpool.roundtrip_p50_vs_$k" roundtrip "$p" \
                    p50_ns p50_ns low poolkit_p50_ns "${k}_p50_ns" '%.0f' '' |
                    tee -a "$tmp"
                tp_pair "threadpool.roundtrip_p99_vs_$k" roundtrip "$p" \
                    p99_ns p99_ns low poolkit_p99_ns "${k}_p99_ns" '%.0f' '' |
                    tee -a "$tmp"
            fi
        done
    fi

    # Futex calls of a whole `ff` run (every thread; pool creation and
    # drain included), GLib's alongside for reference.
    if tp_want futex; then
        tp_futex
    fi

    if tp_want close || tp_want close_latency; then
        tp_close
    fi

    if tp_want idle_cpu; then
        local secs=10
        [ "$rounds" -lt 5 ] && secs=3
        echo "threadpool: idle_cpu (${secs}s)" >&2
        if line=$("$tp_prog" idle "$secs" 2>"$tpwork/err"); then
            local pct=${line#cpu_pct=}
            pct=${pct%% *}
            goal=$(awk -v p="$pct" 'BEGIN { print (p <= 1.0 ? "met" : "missed") }')
            tp_line "threadpool.idle_cpu poolkit_pct=$pct goal_pct=1.0 goal=$goal ${line#cpu_pct=* }"
        else
            tp_line "threadpool.idle_cpu skip=bench_threadpool idle failed: $(head -n 1 "$tpwork/err")"
        fi
    fi

    if tp_want memory; then
        echo "threadpool: memory (n=$TP_MEM_N)" >&2
        if line=$("$tp_prog" memory "$TP_MEM_N" 2>"$tpwork/err"); then
            local growth=${line##*rss_growth_kb=}
            goal=$([ "$growth" -le 1024 ] && echo met || echo missed)
            tp_line "threadpool.memory $line n=$TP_MEM_N goal_growth_kb=1024 goal=$goal"
        else
            tp_line "threadpool.memory skip=bench_threadpool memory failed: $(head -n 1 "$tpwork/err")"
        fi
    fi

    # Issue #4: an ordered map over 10^6 tiny tasks within 10% of the
    # unordered stream's throughput. Both are poolkit (bench_threadpool
    # map_ordered / map_unordered), run back to back in each round, the
    # order swapped every round; ratio = ordered / unordered per round.
    if tp_want map || tp_want map_ordered_vs_unordered; then
        tp_map_rounds
        tp_pair threadpool.map_ordered_vs_unordered map unordered \
            tasks_per_s tasks_per_s high ordered_tps unordered_tps '%.0f' \
            0.90 ordered | tee -a "$tmp"
    fi

    # Issue #4: memory flat on an endless input: peak RSS (VmHWM) after
    # 10^7 inputs within 1 MiB of that after 10^6, each its own process.
    if tp_want map || tp_want map_memory; then
        tp_map_memory
    fi
    return 0
}

# ROUNDS rounds of bench_threadpool map_ordered and map_unordered (impl
# names ordered and unordered in the data file, label map), which one goes
# first alternating by round.
tp_map_rounds() {
    local r impl impls
    echo "threadpool: map n=$TP_MAP_N" >&2
    for ((r = 1; r <= rounds; r++)); do
        echo "threadpool: map round $r/$rounds" >&2
        if ((r % 2)); then impls=(ordered unordered); else impls=(unordered ordered); fi
        for impl in "${impls[@]}"; do
            tp_run map "map_$impl" "$r" "$impl" "$TP_MAP_N" "$tp_prog"
        done
    done
}

# bench_threadpool map_memory at TP_MAP_MEM_N1 and TP_MAP_MEM_N2 inputs
# (10^6 and 10^7 unless overridden): VmHWM of each, growth = long - short.
tp_map_memory() {
    local n line hwm=() growth goal t0 t1 secs=""
    for n in "$TP_MAP_MEM_N1" "$TP_MAP_MEM_N2"; do
        echo "threadpool: map_memory n=$n" >&2
        t0=$(date +%s.%N)
        if ! line=$(timeout "$TP_TIMEOUT" "$tp_prog" map_memory "$n" \
                </dev/null 2>"$tpwork/err"); then
            tp_line "threadpool.map_memory skip=bench_threadpool map_memory $n failed: $(head -n 1 "$tpwork/err")"
            return
        fi
        t1=$(date +%s.%N)
        line=${line#vmhwm_kb=}
        hwm+=("${line%% *}")
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    done
    growth=$((hwm[1] - hwm[0]))
    goal=$([ "$growth" -le 1024 ] && echo met || echo missed)
    # seconds_long: the long run's wall time (the brief: under ~20 s).
    tp_line "threadpool.map_memory hwm_$(tp_exp "$TP_MAP_MEM_N1")_kb=${hwm[0]} hwm_$(tp_exp "$TP_MAP_MEM_N2")_kb=${hwm[1]} growth_kb=$growth goal_kb=1024 goal=$goal seconds_long=$secs"
}

# tp_exp N: 1e6 for 1000000, 1e7 for 10000000; N itself otherwise.
tp_exp() {
    case $1 in
        1[0-9]*) local z=${1#1}; [ -z "${z//0/}" ] && { echo "1e${#z}"; return; } ;;
    esac
    echo "$1"
}

# Issue: "close is woken by the last task's completion, never by a
# polling sleep ... p99 <= 1 ms". ROUNDS runs of bench_threadpool close
# (TP_CLOSE_N closes each, a fresh pool per close); each run gives a p50
# and a p99 of (shutdown returns) - (its last task returns), and the line
# takes their medians over the runs. No peer: poolkit alone, as idle_cpu.
# unverified: closes, over all runs, whose task let go without having seen
# shutdown asleep (bench_threadpool.c says why that matters).
tp_close() {
    local p99 goal k fail unver s50 s99
    echo "threadpool: close n=$TP_CLOSE_N" >&2
    tp_rounds close close
    fail=$(awk '$1 == "close" && $4 == "FAIL" { print substr($0, index($0, "FAIL") + 5); exit }' "$tpwork/data")
    k=$(awk '$1 == "close" && / p99_ns=/ { k++ } END { print k + 0 }' "$tpwork/data")
    if [ -n "$fail" ] || [ "$k" -eq 0 ]; then
        tp_line "threadpool.close_latency skip=bench_threadpool close failed: ${fail:-no figures}"
        return
    fi
    s50=$(tp_stat close poolkit p50_ns poolkit_p50_ns '%.0f')
    s99=$(tp_stat close poolkit p99_ns poolkit_p99_ns '%.0f')
    p99=${s99#poolkit_p99_ns_med=}
    p99=${p99%% *}
    goal=$([ "$p99" -le 1000000 ] && echo met || echo missed)
    unver=$(awk '$1 == "close" { for (i = 4; i <= NF; i++) if ($i ~ /^unverified=/) u += substr($i, 12) } END { print u + 0 }' "$tpwork/data")
    tp_line "threadpool.close_latency $s50 $s99 goal_p99_ns=1000000 goal=$goal rounds=$k n=$TP_CLOSE_N unverified=$unver"
}

# perf stat -e syscalls:sys_enter_futex around bench_threadpool ff (and
# peer_glib ff), ROUNDS times, interleaved.
tp_futex() {
    local r calls impl cmd reason="" med
    if ! command -v perf >/dev/null 2>&1; then
        tp_line "threadpool.futex skip=no perf on PATH (Debian: linux-perf); the pool keeps no count of its wakes"
        return
    fi
    for ((r = 1; r <= rounds; r++)); do
        echo "threadpool: futex round $r/$rounds" >&2
        for impl in poolkit glib; do
            if [ "$impl" = poolkit ]; then
                cmd=$tp_prog
            elif [ -n "${tp_cmd[glib]:-}" ]; then
                cmd=${tp_cmd[glib]}
            else
                continue
            fi
            # shellcheck disable=SC2086
            if ! timeout "$TP_TIMEOUT" perf stat -e syscalls:sys_enter_futex -x, \
                    -o "$tpwork/perf" -- $cmd ff "$TP_N" >/dev/null 2>"$tpwork/err" </dev/null; then
                [ "$impl" = poolkit ] &&
                    reason="perf stat failed: $(cat "$tpwork/perf" "$tpwork/err" 2>/dev/null | grep -v '^#' | grep . | head -n 1)"
                continue
            fi
            calls=$(awk -F, '$3 == "syscalls:sys_enter_futex" { print $1 }' "$tpwork/perf")
            case $calls in
                '' | *[!0-9]*)
                    [ "$impl" = poolkit ] &&
                        reason="perf stat could not count syscalls:sys_enter_futex (${calls:-no output}; perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null))"
                    continue ;;
            esac
            echo "futex $r $impl n=$TP_N calls=$calls" >>"$tpwork/data"
        done
        [ -n "$reason" ] && break
    done
    if [ -n "$reason" ]; then
        tp_line "threadpool.futex skip=$reason"
        return
    fi
    med=$(tp_stat futex poolkit calls poolkit_calls '%.0f')
    local pm=${med#poolkit_calls_med=}
    pm=${pm%% *}
    goal=$([ "$pm" -le 10000 ] && echo met || echo missed)
    tp_line "threadpool.futex $med $(tp_stat futex glib calls glib_calls '%.0f') goal_calls=10000 goal=$goal rounds=$rounds n=$TP_N"
}

# ---- pg: poolkit's PostgreSQL pool against other pools (issue #12) ---------
#
# bench_pg is a driver like bench_threadpool: one case, one run, one line
# (`bench_pg --help`; bench/bench_pg.c says what each case times). This
# part starts a throwaway PostgreSQL (tests/support/pg_server.sh, in a
# temporary directory, removed at the end, also on failure) or uses
# PK_PG_CONNINFO, sets up and builds the peers (libzdb, psycopg_pool; and
# PgBouncer, started with bench/peers/pg_bouncer.sh), and runs interleaved
# rounds as tp_rounds does. Cases: select1 (pooled SELECT 1 against
# connect per query: unix socket, TCP, TLS), overhead (acquire + release),
# contend (16 threads on 4 connections), recovery (after a server restart).
# PG_PEERS=libzdb,pgbouncer,psycopg keeps only the named peers. Sizes
# (override for a quick look):
PG_SELECT1_N=${PG_SELECT1_N:-5000}        # pooled SELECT 1 per run
PG_CONNECT_N=${PG_CONNECT_N:-200}         # connect + SELECT 1 + close per run
PG_OVERHEAD_N=${PG_OVERHEAD_N:-500000}    # acquire+release pairs per thread (C pools)
PG_CHECK_N=${PG_CHECK_N:-50000}           # the same with the forced check
PG_FULL_N=${PG_FULL_N:-5000}              # the same with the full reset (a round trip each)
PG_PY_N=${PG_PY_N:-20000}                 # the same for psycopg_pool
PG_CONTEND_THREADS=${PG_CONTEND_THREADS:-16}
PG_CONTEND_POOL=${PG_CONTEND_POOL:-4}
PG_CONTEND_MS=${PG_CONTEND_MS:-1000}      # counted time per contended run (+200 ms warm-up)
PG_ZDB_RETRY_US=${PG_ZDB_RETRY_US:-100}   # libzdb's retry sleep at its cap
PG_RECOVERY_EXEC_MS=${PG_RECOVERY_EXEC_MS:-100}  # pk_pg_exec timeout in the recovery loop
PG_TIMEOUT=${PG_TIMEOUT:-120}             # seconds one run may take before it fails

pg_tmp=
pg_server_dir=
pg_bouncer_dir=

# Stops what the pg part started; from the EXIT trap too.
pg_cleanup() {
    if [ -n "$pg_bouncer_dir" ]; then
        bash "$here/peers/pg_bouncer.sh" stop "$pg_bouncer_dir" >/dev/null 2>&1 || true
        pg_bouncer_dir=
    fi
    if [ -n "$pg_server_dir" ]; then
        bash "$here/../tests/support/pg_server.sh" clean "$pg_server_dir" >/dev/null 2>&1 || true
        pg_server_dir=
    fi
    if [ -n "$pg_tmp" ]; then
        rm -rf "$pg_tmp"
        pg_tmp=
    fi
}

# pg_run LABEL ROUND IMPL CMD...: runs CMD once and appends `LABEL ROUND
# IMPL key=value...` (its last stdout line) to the data file, or `LABEL
# ROUND IMPL FAIL <reason>` (the last line of its stderr).
pg_run() {
    local label=$1 r=$2 impl=$3 line
    shift 3
    if line=$(timeout "$PG_TIMEOUT" "$@" </dev/null 2>"$tpwork/err" |
            tail -n 1) && [ -n "$line" ]; then
        echo "$label $r $impl $line" >>"$tpwork/data"
    else
        echo "$label $r $impl FAIL exit or timeout (${PG_TIMEOUT}s): $(grep . "$tpwork/err" | tail -n 1 | tr -d '\r')" >>"$tpwork/data"
    fi
}

# pg_one LABEL ROUND IMPL: one run of IMPL for LABEL.
pg_one() {
    local label=$1 r=$2 impl=$3 ci t
    case $label in
    select1_*)
        ci=${pg_ci[${label#select1_}]}
        local pre=()
        [ "$label" = select1_tls ] && pre=(env PGSSLMODE=require)
        [ "$label" = select1_tcp ] && pre=("${pg_plain[@]}")
        case $impl in
        poolkit) pg_run "$label" "$r" poolkit "${pre[@]}" "$pg_prog" select1 "$ci" "$PG_SELECT1_N" ;;
        connect) pg_run "$label" "$r" connect "${pre[@]}" "$pg_prog" connect "$ci" "$PG_CONNECT_N" ;;
        esac ;;
    overhead_*t)
        t=${label#overhead_}
        t=${t%t}
        ci=${pg_ci[local]}
        case $impl in
        poolkit) pg_run "$label" "$r" poolkit "$pg_prog" overhead "$ci" "$t" "$PG_OVERHEAD_N" rollback ;;
        nowait) pg_run "$label" "$r" nowait "$pg_prog" overhead "$ci" "$t" "$PG_OVERHEAD_N" nowait ;;
        full) pg_run "$label" "$r" full "$pg_prog" overhead "$ci" "$t" "$PG_FULL_N" full ;;
        check) pg_run "$label" "$r" check "$pg_prog" overhead "$ci" "$t" "$PG_CHECK_N" check ;;
        psycopg)
            # shellcheck disable=SC2086
            pg_run "$label" "$r" psycopg ${pg_cmd[psycopg]} overhead "$ci" "$t" "$PG_PY_N" ;;
        *)
            # shellcheck disable=SC2086
            pg_run "$label" "$r" "$impl" ${pg_cmd[$impl]} overhead "$ci" "$t" "$PG_OVERHEAD_N" ;;
        esac ;;
    contend)
        ci=${pg_ci[local]}
        t=$PG_CONTEND_THREADS
        local p=$PG_CONTEND_POOL ms=$PG_CONTEND_MS
        case $impl in
        poolkit) pg_run contend "$r" poolkit "$pg_prog" contend "$ci" "$t" "$p" "$ms" acquire ;;
        exec) pg_run contend "$r" "$impl" "$pg_prog" contend "$ci" "$t" "$p" "$ms" "$impl" ;;
        pgbouncer) pg_run contend "$r" pgbouncer "$pg_prog" contend "$pg_bouncer_ci" "$t" "$p" "$ms" perconn ;;
        libzdb)
            # shellcheck disable=SC2086
            pg_run contend "$r" libzdb ${pg_cmd[libzdb]} contend "$ci" "$t" "$p" "$ms" "$PG_ZDB_RETRY_US" ;;
        *)
            # shellcheck disable=SC2086
            pg_run contend "$r" "$impl" ${pg_cmd[$impl]} contend "$ci" "$t" "$p" "$ms" ;;
        esac ;;
    recovery)
        pg_run recovery "$r" poolkit "${pg_plain[@]}" "$pg_prog" recovery "${pg_ci[tcp]}" \
            "$PG_RECOVERY_EXEC_MS" bash "$here/../tests/support/pg_server.sh" \
            restart "$pg_server_dir" ;;
    esac
}

# pg_rounds LABEL IMPLS...: ROUNDS rounds, the order rotated by one each
# round.
pg_rounds() {
    local label=$1 r i k
    shift
    local impls=("$@")
    k=${#impls[@]}
    for ((r = 1; r <= rounds; r++)); do
        echo "pg: $label round $r/$rounds (${impls[*]})" >&2
        for ((i = 0; i < k; i++)); do
            pg_one "$label" "$r" "${impls[(i + r - 1) % k]}"
        done
    done
}

# pg_fail LABEL IMPL: the failure reason of IMPL in LABEL, if any run failed.
pg_fail() {
    awk -v L="$1" -v I="$2" '$1 == L && $3 == I && $4 == "FAIL" { print substr($0, index($0, "FAIL") + 5); exit }' "$tpwork/data"
}

# pg_med LABEL IMPL KEY: the median of KEY over the rounds (for goals).
pg_med() {
    local s
    s=$(tp_stat "$1" "$2" "$3" x '%.6f')
    s=${s#x_med=}
    echo "${s%% *}"
}

# pg_alone NAME LABEL IMPL GOAL_PCT: a poolkit-only overhead line: pair_ns,
# the SELECT 1 beside it and the fraction; goal on the fraction if given.
pg_alone() {
    local name=$1 label=$2 impl=$3 goal=$4 fail med line
    fail=$(pg_fail "$label" "$impl")
    if [ -n "$fail" ]; then
        tp_line "$name skip=bench_pg failed: $fail"
        return
    fi
    line="$name $(tp_stat "$label" "$impl" pair_ns poolkit_pair_ns '%.1f') $(tp_stat "$label" "$impl" select1_ns select1_ns '%.0f') $(tp_stat "$label" "$impl" frac_pct frac_pct '%.3f')"
    if [ -n "$goal" ]; then
        med=$(pg_med "$label" "$impl" frac_pct)
        line="$line goal_pct=$goal goal=$(awk -v m="$med" -v g="$goal" 'BEGIN { print (m <= g ? "met" : "missed") }')"
    fi
    tp_line "$line rounds=$rounds n=$(awk -v L="$label" -v I="$impl" '$1 == L && $3 == I { for (i = 4; i <= NF; i++) if ($i ~ /^n=/) { print substr($i, 3); exit } }' "$tpwork/data")"
}

# pg_bench PROG WANT: the pg lines. WANT: ALL or a comma list of cases
# (select1, overhead, contend, recovery).
pg_bench() {
    pg_prog=$1
    local want=$2 line name cmd p k tr probe peers=() impls reason
    declare -gA pg_cmd=() pg_ci=()
    # Plain TCP on our own server: libpq's default sslmode (prefer) would
    # take TLS once the server offers it. A given PK_PG_CONNINFO keeps
    # whatever it and the environment say.
    pg_plain=()
    : >"$tpwork/data"
    pg_want() { [ "$want" = ALL ] || [[ ",$want," == *",$1,"* ]]; }
    pg_peer() { [ -z "${PG_PEERS:-}" ] || [[ ",$PG_PEERS," == *",$1,"* ]]; }

    # The server.
    if [ -n "${PK_PG_CONNINFO:-}" ]; then
        pg_ci[local]=$PK_PG_CONNINFO
        pg_ci[tcp]=$PK_PG_CONNINFO
        echo "pg: using PK_PG_CONNINFO" >&2
    else
        if ! reason=$(bash "$here/../tests/support/pg_server.sh" probe - 2>&1 >/dev/null); then
            tp_line "pg.server skip=${reason:-PostgreSQL server not found}"
            return 0
        fi
        pg_tmp=$(mktemp -d "${TMPDIR:-/tmp}/pk-bench-pg.XXXXXX")
        chmod 711 "$pg_tmp"    # the postgres user must reach its folders
        pg_server_dir=$pg_tmp/server
        echo "pg: starting a throwaway server in $pg_server_dir" >&2
        if ! pg_ci[tcp]=$(bash "$here/../tests/support/pg_server.sh" start "$pg_server_dir" 2>"$tpwork/err"); then
            tp_line "pg.server skip=pg_server.sh start failed: $(grep . "$tpwork/err" | tail -n 1)"
            pg_cleanup
            return 1
        fi
        pg_ci[local]="host=$pg_server_dir port=$(cat "$pg_server_dir/port") user=postgres dbname=postgres"
        pg_plain=(env PGSSLMODE=disable)
    fi
    if ! probe=$("$pg_prog" probe "${pg_ci[local]}" 2>&1) || [ "${probe#ok=1}" = "$probe" ]; then
        tp_line "pg.server skip=cannot connect: ${probe#skip=}"
        pg_cleanup
        return 1
    fi

    # Peers, for the cases that have them.
    if pg_want overhead || pg_want contend; then
        echo "pg: peer set-up (bench/peers/setup.sh pg)" >&2
        if ! sh "$here/peers/setup.sh" pg >&2; then
            echo "bench/run.sh: pg peer set-up failed or not allowed; peers that cannot build are skipped" >&2
        fi
        while IFS= read -r line; do
            case $line in
                'SKIP '*:*)
                    name=${line#SKIP }; name=${name%%:*}
                    case $name in pg_zdb) name=libzdb ;; pg_psycopg) name=psycopg ;; esac
                    pg_peer "$name" && tp_line "pg.peer_$name skip=${line#*: }" ;;
                *) [ -n "$line" ] && echo "$line" >&2 ;;
            esac
        done < <(sh "$here/peers/build.sh" "$dir/peers" pg 2>&1)
        while read -r name cmd; do
            [ -n "$name" ] || continue
            pg_peer "$name" || continue
            pg_cmd[$name]=$cmd
            peers+=("$name")
        done < <(sh "$here/peers/list.sh" "$dir/peers" pg)
        echo "pg: peers: ${peers[*]:-none}" >&2
    fi

    if pg_want select1; then
        if [ -n "${PK_PG_CONNINFO:-}" ]; then
            tr="conninfo"
            pg_ci[conninfo]=$PK_PG_CONNINFO
        else
            tr="unix tcp"
            pg_ci[unix]=${pg_ci[local]}
        fi
        # TLS when the server has it: try sslmode=require.
        probe=$(PGSSLMODE=require "$pg_prog" probe "${pg_ci[tcp]}" 2>&1 || true)
        if [ "${probe#ok=1}" != "$probe" ]; then
            tr="$tr tls"
            pg_ci[tls]=${pg_ci[tcp]}
        else
            tp_line "pg.select1_tls_vs_connect skip=no TLS: sslmode=require failed: ${probe#skip=}"
        fi
        for k in $tr; do
            pg_rounds "select1_$k" poolkit connect
            tp_pair "pg.select1_${k}_vs_connect" "select1_$k" connect ns_per_q \
                ns_per_q low poolkit_ns connect_ns '%.0f' '' | tee -a "$tmp"
            # The same runs: pk_pg_exec against PQexec on a held connection
            # (what the pool's path adds to a query; ratio below 1).
            tp_pair "pg.select1_${k}_exec_vs_held" "select1_$k" poolkit ns_per_q \
                held_ns low exec_ns held_ns '%.0f' '' | tee -a "$tmp"
        done
    fi

    if pg_want overhead; then
        for t in 1 2; do
            impls=(poolkit nowait)
            [ "$t" = 1 ] && impls+=(full check)
            pg_rounds "overhead_${t}t" "${impls[@]}" "${peers[@]}"
            pg_alone "pg.overhead_${t}t" "overhead_${t}t" poolkit 1.0
            for p in "${peers[@]}"; do
                tp_pair "pg.overhead_${t}t_vs_$p" "overhead_${t}t" "$p" pair_ns \
                    pair_ns low poolkit_pair_ns "${p}_pair_ns" '%.1f' '' | tee -a "$tmp"
            done
            pg_alone "pg.overhead_nowait_${t}t" "overhead_${t}t" nowait ''
        done
        pg_alone pg.overhead_full_1t overhead_1t full ''
        pg_alone pg.overhead_check_1t overhead_1t check ''
    fi

    if pg_want contend; then
        local c=contend$PG_CONTEND_THREADS cpeers=()
        pg_bouncer_ci=
        if pg_peer pgbouncer; then
            echo "pg: starting PgBouncer (bench/peers/pg_bouncer.sh)" >&2
            if pg_bouncer_ci=$(bash "$here/peers/pg_bouncer.sh" start "${pg_tmp:-$tpwork}/bouncer" \
                    "${pg_ci[local]}" "$PG_CONTEND_POOL" 2>"$tpwork/err"); then
                pg_bouncer_dir=${pg_tmp:-$tpwork}/bouncer
                cpeers=(pgbouncer)
            else
                tp_line "pg.peer_pgbouncer skip=$(grep . "$tpwork/err" | tail -n 1)"
            fi
        fi
        cpeers+=("${peers[@]}")
        pg_rounds contend poolkit exec "${cpeers[@]}"
        if [ -n "$pg_bouncer_dir" ]; then
            bash "$here/peers/pg_bouncer.sh" stop "$pg_bouncer_dir" >/dev/null 2>&1 || true
            pg_bouncer_dir=
        fi
        for p in "${cpeers[@]}"; do
            tp_pair "pg.${c}_vs_$p" contend "$p" qps qps high poolkit_qps \
                "${p}_qps" '%.0f' '' | tee -a "$tmp"
        done
        # Fairness: least / most queries per thread, every pool.
        if [ -n "$(pg_fail contend poolkit)" ]; then
            tp_line "pg.${c}_fair skip=bench_pg failed: $(pg_fail contend poolkit)"
        else
            line="pg.${c}_fair $(tp_stat contend poolkit fair poolkit_fair '%.3f')"
            for p in "${cpeers[@]}"; do
                [ -z "$(pg_fail contend "$p")" ] &&
                    line="$line $(tp_stat contend "$p" fair "${p}_fair" '%.3f')"
            done
            tp_line "$line goal_poolkit=0.80 goal=$(awk -v m="$(pg_med contend poolkit fair)" 'BEGIN { print (m >= 0.8 ? "met" : "missed") }') rounds=$rounds"
        fi
        for p in "${cpeers[@]}"; do
            [ "$p" = pgbouncer ] && continue   # no acquire to time
            tp_pair "pg.${c}_wait_max_vs_$p" contend "$p" wait_max_ns \
                wait_max_ns low poolkit_wait_max_ns "${p}_wait_max_ns" '%.0f' '' | tee -a "$tmp"
            tp_pair "pg.${c}_wait_p99_vs_$p" contend "$p" wait_p99_ns \
                wait_p99_ns low poolkit_wait_p99_ns "${p}_wait_p99_ns" '%.0f' '' | tee -a "$tmp"
        done
        # poolkit against itself: pk_pg_exec over pk_pg_acquire + PQexec
        # + pk_pg_release.
        tp_pair "pg.${c}_exec_vs_acquire" contend poolkit qps qps high \
            exec_qps acquire_qps '%.0f' '' exec | tee -a "$tmp"
    fi

    if pg_want recovery; then
        if [ -n "${PK_PG_CONNINFO:-}" ]; then
            tp_line "pg.recovery skip=PK_PG_CONNINFO is set: the bench restarts only a server it started"
        else
            pg_rounds recovery poolkit
            local fail med
            fail=$(pg_fail recovery poolkit)
            if [ -n "$fail" ]; then
                tp_line "pg.recovery skip=bench_pg recovery failed: $fail"
            else
                med=$(pg_med recovery poolkit recovery_ms)
                tp_line "pg.recovery $(tp_stat recovery poolkit recovery_ms poolkit_ms '%.1f') goal_ms=100 goal=$(awk -v m="$med" 'BEGIN { print (m <= 100 ? "met" : "missed") }') $(tp_stat recovery poolkit down_ms down_ms '%.0f') failures_after=$(awk '$1 == "recovery" { for (i = 4; i <= NF; i++) if ($i ~ /^failures_after=/) s += substr($i, 16) } END { print s + 0 }' "$tpwork/data") rounds=$rounds exec_timeout_ms=$PG_RECOVERY_EXEC_MS"
            fi
        fi
    fi
    pg_cleanup
    return 0
}

# ---- http: poolkit's HTTP pool against plain libcurl and requests (#13) -----
#
# bench_http is a driver like bench_pg: one run, one line (`bench_http
# --help`; bench/bench_http.c says what each mode times). This part starts
# a throwaway nginx (tests/support/http_server.sh, in a temporary
# directory, stopped and removed at the end, also on failure), sets up and
# builds the peers (bench/peers/setup.sh http, build.sh DIR http: libcurl
# with a new handle per request or one kept per thread, Python requests
# with and without a Session), and runs interleaved rounds as pg_rounds
# does. Cases: small (a small GET over HTTP and HTTPS, one thread), threads
# (HTTP_THREADS threads share one pool, against a private handle each),
# tls_new (a new HTTPS connection through the pool against a new handle's
# first request, Debian's CA bundle). HTTP_PEERS=curl_new,curl_reuse,
# requests,requests_session keeps only the named peers. Sizes (override
# for a quick look):
HTTP_MS=${HTTP_MS:-500}              # timed part of a run, per thread
HTTP_WARM_MS=${HTTP_WARM_MS:-100}    # untimed part before it
HTTP_THREADS=${HTTP_THREADS:-8}      # the threads case
HTTP_CA_BUNDLE=${HTTP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}  # tls_new
HTTP_TIMEOUT=${HTTP_TIMEOUT:-60}     # seconds one run may take before it fails

http_tmp=

# Stops what the http part started; from the EXIT trap too.
http_cleanup() {
    if [ -n "$http_tmp" ]; then
        bash "$here/../tests/support/http_server.sh" clean "$http_tmp/server" >/dev/null 2>&1 || true
        rm -rf "$http_tmp"
        http_tmp=
    fi
}

# http_run LABEL ROUND IMPL CMD...: as pg_run, with HTTP_TIMEOUT.
http_run() {
    local label=$1 r=$2 impl=$3 line
    shift 3
    if line=$(timeout "$HTTP_TIMEOUT" "$@" </dev/null 2>"$tpwork/err" |
            tail -n 1) && [ -n "$line" ]; then
        echo "$label $r $impl $line" >>"$tpwork/data"
    else
        echo "$label $r $impl FAIL exit or timeout (${HTTP_TIMEOUT}s): $(grep . "$tpwork/err" | tail -n 1 | tr -d '\r')" >>"$tpwork/data"
    fi
}

# http_one LABEL ROUND IMPL URL THREADS [CA_FILE]: one run of IMPL.
# poolkit's own modes: poolkit (pk_http_exec GET), acquire (pk_http_acquire
# + curl_easy_perform + pk_http_release), post (pk_http_exec POST: a new
# connection each).
http_one() {
    local label=$1 r=$2 impl=$3 url=$4 t=$5
    shift 5
    case $impl in
    poolkit) http_run "$label" "$r" poolkit "$http_prog" exec "$url" "$t" "$HTTP_WARM_MS" "$HTTP_MS" "$@" ;;
    acquire | post) http_run "$label" "$r" "$impl" "$http_prog" "$impl" "$url" "$t" "$HTTP_WARM_MS" "$HTTP_MS" "$@" ;;
    *)
        # shellcheck disable=SC2086
        http_run "$label" "$r" "$impl" ${http_cmd[$impl]} "$url" "$t" "$HTTP_WARM_MS" "$HTTP_MS" "$@" ;;
    esac
}

# http_rounds LABEL URL THREADS CA_FILE IMPLS...: ROUNDS rounds, the order
# rotated by one each round (CA_FILE may be empty: none).
http_rounds() {
    local label=$1 url=$2 t=$3 ca=$4 r i k
    shift 4
    local impls=("$@") cargs=()
    [ -n "$ca" ] && cargs=("$ca")
    k=${#impls[@]}
    for ((r = 1; r <= rounds; r++)); do
        echo "http: $label round $r/$rounds (${impls[*]})" >&2
        for ((i = 0; i < k; i++)); do
            http_one "$label" "$r" "${impls[(i + r - 1) % k]}" "$url" "$t" "${cargs[@]}"
        done
    done
}

# http_sum LABEL IMPL KEY: KEY summed over the rounds.
http_sum() {
    awk -v L="$1" -v I="$2" -v K="$3" '$1 == L && $3 == I {
        for (i = 4; i <= NF; i++) if ($i ~ ("^" K "=")) s += substr($i, length(K) + 2)
    } END { print s + 0 }' "$tpwork/data"
}

# http_max LABEL IMPL KEY: the largest KEY over the rounds.
http_max() {
    awk -v L="$1" -v I="$2" -v K="$3" '$1 == L && $3 == I {
        for (i = 4; i <= NF; i++) if ($i ~ ("^" K "=")) { v = substr($i, length(K) + 2) + 0; if (v > m) m = v }
    } END { print m + 0 }' "$tpwork/data"
}

# http_bench PROG WANT: the http lines. WANT: ALL or a comma list of cases
# (small, small_http, small_https, threads, tls_new).
http_bench() {
    http_prog=$1
    local want=$2 line name cmd reason ports hport sport p t label goal
    local peers=() impls=() fail
    declare -gA http_cmd=()
    : >"$tpwork/data"
    http_want() { [ "$want" = ALL ] || [[ ",$want," == *",$1,"* ]]; }
    http_peer() { [ -z "${HTTP_PEERS:-}" ] || [[ ",$HTTP_PEERS," == *",$1,"* ]]; }
    http_has() { [ -n "${http_cmd[$1]:-}" ]; }

    # Peers first: setup.sh http also installs nginx.
    echo "http: peer set-up (bench/peers/setup.sh http)" >&2
    if ! sh "$here/peers/setup.sh" http >&2; then
        echo "bench/run.sh: http peer set-up failed or not allowed; peers that cannot build are skipped" >&2
    fi
    while IFS= read -r line; do
        case $line in
            'SKIP '*:*)
                name=${line#SKIP }; name=${name%%:*}
                case $name in http_curl) name=curl ;; http_requests) name=requests ;; esac
                tp_line "http.peer_$name skip=${line#*: }" ;;
            *) [ -n "$line" ] && echo "$line" >&2 ;;
        esac
    done < <(sh "$here/peers/build.sh" "$dir/peers" http 2>&1)
    while read -r name cmd; do
        [ -n "$name" ] || continue
        http_peer "$name" || continue
        http_cmd[$name]=$cmd
        peers+=("$name")
    done < <(sh "$here/peers/list.sh" "$dir/peers" http)
    echo "http: peers: ${peers[*]:-none}" >&2

    # The server.
    if ! reason=$(bash "$here/../tests/support/http_server.sh" probe - 2>&1 >/dev/null); then
        tp_line "http.server skip=${reason:-nginx not found}"
        return 0
    fi
    http_tmp=$(mktemp -d "${TMPDIR:-/tmp}/pk-bench-http.XXXXXX")
    echo "http: starting a throwaway nginx in $http_tmp/server" >&2
    if ! ports=$(bash "$here/../tests/support/http_server.sh" start "$http_tmp/server" 2>"$tpwork/err"); then
        tp_line "http.server skip=http_server.sh start failed: $(grep . "$tpwork/err" | tail -n 1)"
        http_cleanup
        return 1
    fi
    read -r hport sport <<<"$ports"
    declare -A url=([http]="http://127.0.0.1:$hport/" [https]="https://127.0.0.1:$sport/")
    declare -A cafile=([http]="" [https]="$http_tmp/server/cert.pem")

    # small: one thread, GET /, pooled against each peer.
    for p in http https; do
        http_want small || http_want "small_$p" || continue
        label=small_$p
        impls=(poolkit acquire)
        for t in curl_new curl_reuse requests requests_session; do
            http_has "$t" && impls+=("$t")
        done
        http_rounds "$label" "${url[$p]}" 1 "${cafile[$p]}" "${impls[@]}"
        for t in "${impls[@]:2}"; do
            goal=''
            [ "$t" = curl_reuse ] && goal=0.90
            tp_pair "http.${label}_vs_$t" "$label" "$t" rps rps high \
                poolkit_rps "${t}_rps" '%.0f' "$goal" | tee -a "$tmp"
        done
        # poolkit without pk_http_exec (acquire, perform, release) against
        # the handle kept by hand: what the pool itself costs.
        if http_has curl_reuse; then
            tp_pair "http.${label}_acquire_vs_curl_reuse" "$label" curl_reuse \
                rps rps high acquire_rps curl_reuse_rps '%.0f' '' acquire | tee -a "$tmp"
            # The same runs in client CPU time per request (the threads'
            # own clocks): a busy machine usually moves it less.
            tp_pair "http.${label}_cpu_vs_curl_reuse" "$label" curl_reuse \
                cpu_ns_per_req cpu_ns_per_req low poolkit_cpu_ns curl_reuse_cpu_ns \
                '%.0f' '' | tee -a "$tmp"
            tp_pair "http.${label}_acquire_cpu_vs_curl_reuse" "$label" curl_reuse \
                cpu_ns_per_req cpu_ns_per_req low acquire_cpu_ns curl_reuse_cpu_ns \
                '%.0f' '' acquire | tee -a "$tmp"
        fi
    done

    # threads: HTTP_THREADS threads share one pool (cap max(8, threads))
    # against as many private kept handles; connections over the whole run.
    if http_want threads; then
        if ! http_has curl_reuse; then
            tp_line "http.threads${HTTP_THREADS} skip=no libcurl peer (peer_http_curl not built)"
        else
            local cap=$((HTTP_THREADS > 8 ? HTTP_THREADS : 8)) conns
            for p in http https; do
                label=threads${HTTP_THREADS}_$p
                http_rounds "$label" "${url[$p]}" "$HTTP_THREADS" "${cafile[$p]}" poolkit curl_reuse
                line=$(tp_pair "http.${label}_vs_curl_reuse" "$label" curl_reuse rps rps \
                    high poolkit_rps curl_reuse_rps '%.0f' 0.90)
                if [ "${line#* skip=}" = "$line" ]; then
                    conns=$(http_max "$label" poolkit connections_new)
                    line="$line poolkit_connections_max=$conns curl_reuse_connections_max=$(http_max "$label" curl_reuse connections) cap=$cap conn_goal=$([ "$conns" -le "$cap" ] && echo met || echo missed) $(tp_stat "$label" poolkit fair poolkit_fair '%.3f') $(tp_stat "$label" curl_reuse fair curl_reuse_fair '%.3f')"
                fi
                tp_line "$line"
                tp_pair "http.${label}_cpu_vs_curl_reuse" "$label" curl_reuse \
                    cpu_ns_per_req cpu_ns_per_req low poolkit_cpu_ns curl_reuse_cpu_ns \
                    '%.0f' '' | tee -a "$tmp"
            done
        fi
    fi

    # tls_new: every request a new HTTPS connection, CA file = Debian's
    # bundle + the server's certificate. poolkit: pk_http_exec POST (a
    # fresh connection each; CA store parsed once, TLS session resumed);
    # curl_new: a new handle per request, a GET (its first request: the
    # bundle parsed, a full handshake). ns per request; ratio = curl_new's
    # time / poolkit's; goal 10 (poolkit <= 0.1x).
    if http_want tls_new; then
        if ! http_has curl_new; then
            tp_line "http.tls_new_vs_curl_new skip=no libcurl peer (peer_http_curl not built)"
        elif [ ! -r "$HTTP_CA_BUNDLE" ]; then
            tp_line "http.tls_new_vs_curl_new skip=no CA bundle $HTTP_CA_BUNDLE (Debian: ca-certificates)"
        else
            cat "$HTTP_CA_BUNDLE" "$http_tmp/server/cert.pem" >"$http_tmp/bundle.pem"
            http_rounds tls_new "${url[https]}" 1 "$http_tmp/bundle.pem" post curl_new
            line=$(tp_pair http.tls_new_vs_curl_new tls_new curl_new ns_per_req ns_per_req \
                low poolkit_ns curl_new_ns '%.0f' 10 post)
            if [ "${line#* skip=}" = "$line" ]; then
                line="$line ca_certs=$(grep -c 'BEGIN CERTIFICATE' "$http_tmp/bundle.pem") poolkit_tls_handshakes=$(http_sum tls_new post tls_handshakes) poolkit_tls_resumed=$(http_sum tls_new post tls_resumed) poolkit_ca_loads_max=$(http_max tls_new post ca_loads)"
            fi
            tp_line "$line"
        fi
    fi
    http_cleanup
    return 0
}

# ---- mempool: poolkit's memory pools against the mallocs, talloc, APR (#14) -
#
# bench_mempool is a driver like bench_pg: one case, one run, one line
# (`bench_mempool --help`; bench/peers/peer_mempool_common.h holds the
# loops every driver shares and says what each case times). This part
# sets up and builds the peers (bench/peers/setup.sh mempool, build.sh DIR
# mempool: one program per malloc, since a malloc that replaces glibc's
# must own its process; talloc, talloc_pool, APR), checks that each malloc
# program really runs on its malloc (`<driver> cases` prints
# malloc_from=), and runs interleaved rounds as tp_rounds does, each run a
# fresh process. Figures are CPU ns per operation. Cases: lifo, batch,
# mt2, xthread (with the ring alone, `ring`), arena, stats, debug, trim.
# MEMPOOL_PEERS=glibc,apr keeps only the named peers. Sizes (override for
# a quick look):
MEMPOOL_LIFO_N=${MEMPOOL_LIFO_N:-20000000}       # alloc+free pairs per lifo run
MEMPOOL_BATCH_N=${MEMPOOL_BATCH_N:-1000000}      # objects per batch
MEMPOOL_BATCH_REPS=${MEMPOOL_BATCH_REPS:-5}      # timed (warm) batches per run
MEMPOOL_MT2_N=${MEMPOOL_MT2_N:-10000000}         # pairs per thread, 1 then 2 threads
MEMPOOL_XTHREAD_N=${MEMPOOL_XTHREAD_N:-5000000}  # objects handed over per run
MEMPOOL_XTHREAD_PIN=${MEMPOOL_XTHREAD_PIN:-1}    # 1: producer, consumer on two CPUs
MEMPOOL_ARENA_CYCLES=${MEMPOOL_ARENA_CYCLES:-10000}  # alloc-then-reset cycles per run
MEMPOOL_ARENA_K=${MEMPOOL_ARENA_K:-1000}         # allocations per cycle
MEMPOOL_TRIM_N=${MEMPOOL_TRIM_N:-1000000}        # objects (64 MB) per trim run
MEMPOOL_STATS_N=${MEMPOOL_STATS_N:-20000000}     # pairs per stats run, each side
MEMPOOL_STATS_EVERY=${MEMPOOL_STATS_EVERY:-1000} # pairs between two stats reads
MEMPOOL_DEBUG_N=${MEMPOOL_DEBUG_N:-5000000}      # pairs per debug run, each side
MEMPOOL_TIMEOUT=${MEMPOOL_TIMEOUT:-120}          # seconds one run may take
# The mallocs: "the best malloc" of a round is the fastest of these.
MP_MALLOCS="glibc jemalloc tcmalloc tcmalloc_minimal mimalloc"

# mp_args CASE: the arguments of a run of CASE.
mp_args() {
    case $1 in
        lifo) echo "$MEMPOOL_LIFO_N" ;;
        batch) echo "$MEMPOOL_BATCH_N $MEMPOOL_BATCH_REPS" ;;
        mt2) echo "$MEMPOOL_MT2_N" ;;
        xthread | xthread_ring)
            echo "$MEMPOOL_XTHREAD_N $([ "$MEMPOOL_XTHREAD_PIN" = 0 ] && echo nopin || echo pin)" ;;
        arena) echo "$MEMPOOL_ARENA_CYCLES $MEMPOOL_ARENA_K" ;;
        trim) echo "$MEMPOOL_TRIM_N" ;;
        stats) echo "$MEMPOOL_STATS_N $MEMPOOL_STATS_EVERY" ;;
        debug) echo "$MEMPOOL_DEBUG_N" ;;
    esac
}

# mp_rounds CASE IMPLS...: ROUNDS rounds of CASE, every impl once per
# round, the order rotated by one each round; `ring` is bench_mempool's
# xthread_ring. Rows `CASE ROUND IMPL key=value...` (or FAIL) in the data
# file.
mp_rounds() {
    local label=$1 r i k impl rc line
    shift
    local impls=("$@")
    k=${#impls[@]}
    for ((r = 1; r <= rounds; r++)); do
        echo "mempool: $label round $r/$rounds (${impls[*]})" >&2
        for ((i = 0; i < k; i++)); do
            impl=${impls[(i + r - 1) % k]}
            rc=$label
            [ "$impl" = ring ] && rc=xthread_ring
            # shellcheck disable=SC2046,SC2086
            if line=$(timeout "$MEMPOOL_TIMEOUT" ${mp_cmd[$impl]} "$rc" $(mp_args "$rc") \
                    </dev/null 2>"$tpwork/err" | tail -n 1) && [ -n "$line" ]; then
                echo "$label $r $impl $line" >>"$tpwork/data"
            else
                echo "$label $r $impl FAIL exit or timeout (${MEMPOOL_TIMEOUT}s): $(grep . "$tpwork/err" | tail -n 1 | tr -d '\r')" >>"$tpwork/data"
            fi
        done
    done
}

# mp_best NAME LABEL GOAL: poolkit against the best malloc of each round
# (the lowest ns among MP_MALLOCS that ran): ratio = best / poolkit per
# round, median, min, max; best= names the malloc with the lowest median.
mp_best() {
    awk -v NAME="$1" -v L="$2" -v GOAL="$3" -v R="$rounds" -v M="$MP_MALLOCS" '
    function sortv(v, k,   i, j, t) {
        for (i = 2; i <= k; i++) {
            t = v[i]
            for (j = i - 1; j >= 1 && v[j] > t; j--)
                v[j + 1] = v[j]
            v[j + 1] = t
        }
    }
    function med(v, k) {
        sortv(v, k)
        return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
    }
    function fr(x) { return sprintf(x >= 0.1 ? "%.2f" : "%.3g", x) }
    BEGIN { nm = split(M, ml, " ") }
    $1 == L && $4 != "FAIL" && !index($0, " skip=") {
        for (i = 4; i <= NF; i++)
            if (index($i, "ns=") == 1) v[$3, $2] = substr($i, 4) + 0
    }
    END {
        k = 0
        for (r = 1; r <= R; r++) {
            if (!(("poolkit", r) in v) || v["poolkit", r] <= 0) continue
            b = -1
            for (i = 1; i <= nm; i++)
                if (((ml[i], r) in v) && v[ml[i], r] > 0 && (b < 0 || v[ml[i], r] < b))
                    b = v[ml[i], r]
            if (b < 0) continue
            k++; va[k] = v["poolkit", r]; vb[k] = b; vr[k] = b / va[k]
        }
        if (!k) { print NAME " skip=no figures (no malloc peer ran)"; exit }
        bn = ""
        for (i = 1; i <= nm; i++) {
            c = 0
            for (r = 1; r <= R; r++)
                if ((ml[i], r) in v) w[++c] = v[ml[i], r]
            if (c) {
                m = med(w, c)
                if (bn == "" || m < bm) { bn = ml[i]; bm = m }
            }
            delete w
        }
        pm = med(va, k); bmed = med(vb, k); rm = med(vr, k)
        printf "%s best=%s poolkit_ns_med=%.2f poolkit_ns_min=%.2f poolkit_ns_max=%.2f best_ns_med=%.2f best_ns_min=%.2f best_ns_max=%.2f ratio=%s ratio_min=%s ratio_max=%s goal_ratio=%.2f goal=%s rounds=%d\n",
            NAME, bn, pm, va[1], va[k], bmed, vb[1], vb[k], fr(rm), fr(vr[1]), fr(vr[k]),
            GOAL, (rm >= GOAL + 0 ? "met" : "missed"), k
    }' "$tpwork/data"
}

# mp_med LABEL IMPL KEY: the median of KEY over the rounds ("" if none).
mp_med() {
    local s
    s=$(tp_stat "$1" "$2" "$3" x '%.3f')
    s=${s#x_med=}
    echo "${s%% *}"
}

# mp_bench PROG WANT: the mempool lines. WANT: ALL or a comma list of
# cases.
mp_bench() {
    local prog=$1 want=$2 line name cmd c p expect from impls peers=() mallocs=()
    declare -gA mp_cmd=() mp_cases=()
    : >"$tpwork/data"
    mp_want() { [ "$want" = ALL ] || [[ ",$want," == *",$1,"* ]]; }
    mp_can() { [[ ",${mp_cases[$1]:-}," == *",$2,"* ]]; }
    # The impls that run case $1: poolkit first, then the peers that can.
    mp_impls() {
        local q
        impls=(poolkit)
        for q in "${peers[@]}"; do
            mp_can "$q" "$1" && impls+=("$q")
        done
    }

    mp_cmd[poolkit]=$prog
    mp_cmd[ring]=$prog
    line=$("$prog" cases 2>/dev/null) || line=
    mp_cases[poolkit]=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^cases=/) print substr($i, 7) }' <<<"$line")
    if [ -z "${mp_cases[poolkit]}" ]; then
        tp_line "mempool.bench skip=$prog cases printed nothing"
        return 1
    fi

    echo "mempool: peer set-up (bench/peers/setup.sh mempool)" >&2
    if ! sh "$here/peers/setup.sh" mempool >&2; then
        echo "bench/run.sh: mempool peer set-up failed or not allowed; peers that cannot build are skipped" >&2
    fi
    while IFS= read -r line; do
        case $line in
            'SKIP '*:*)
                name=${line#SKIP }; name=${name%%:*}
                tp_line "mempool.peer_$name skip=${line#*: }" ;;
            *) [ -n "$line" ] && echo "$line" >&2 ;;
        esac
    done < <(sh "$here/peers/build.sh" "$dir/peers" mempool 2>&1)
    while read -r name cmd; do
        [ -n "$name" ] || continue
        if [ -n "${MEMPOOL_PEERS:-}" ] && [[ ",$MEMPOOL_PEERS," != *",$name,"* ]]; then
            continue
        fi
        # shellcheck disable=SC2086
        line=$($cmd cases 2>/dev/null) || line=
        from=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^malloc_from=/) print substr($i, 13) }' <<<"$line")
        case $name in
            glibc | talloc | talloc_pool | apr) expect=libc.so ;;
            tcmalloc) expect=libtcmalloc.so ;;
            *) expect=$name ;;
        esac
        if [[ "$from" != *"$expect"* ]]; then
            tp_line "mempool.peer_$name skip=malloc comes from ${from:-nowhere known} in $cmd, not $expect"
            continue
        fi
        mp_cmd[$name]=$cmd
        mp_cases[$name]=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^cases=/) print substr($i, 7) }' <<<"$line")
        peers+=("$name")
        [[ " $MP_MALLOCS " == *" $name "* ]] && mallocs+=("$name")
    done < <(sh "$here/peers/list.sh" "$dir/peers" mempool)
    echo "mempool: peers: ${peers[*]:-none} (mallocs: ${mallocs[*]:-none})" >&2

    # Goals are issue #14's: ratio = the other's ns / poolkit's, so 2.00
    # is "poolkit <= 0.5x".
    for c in lifo batch; do
        mp_want "$c" || continue
        mp_impls "$c"
        mp_rounds "$c" "${impls[@]}"
        for p in "${impls[@]:1}"; do
            tp_pair "mempool.${c}_vs_$p" "$c" "$p" ns ns low poolkit_ns \
                "${p}_ns" '%.2f' '' | tee -a "$tmp"
        done
        mp_best "mempool.${c}_vs_best" "$c" "$([ "$c" = lifo ] && echo 2.00 || echo 1.00)" | tee -a "$tmp"
        if [ "$c" = batch ]; then
            # Resident bytes per object, from the cold batch; and that
            # batch's CPU per pair (first touch of the memory included).
            line="mempool.batch_rss"
            for p in "${impls[@]}"; do
                line="$line $(tp_stat batch "$p" bytes_per_obj "${p}_bytes_per_obj" '%.1f')"
            done
            local bpo
            bpo=$(mp_med batch poolkit bytes_per_obj)
            tp_line "$line goal_bytes=65 goal=$(awk -v b="${bpo:-999}" 'BEGIN { print (b <= 65 ? "met" : "missed") }') n=$MEMPOOL_BATCH_N"
            line="mempool.batch_cold"
            for p in "${impls[@]}"; do
                line="$line $(tp_stat batch "$p" cold_ns "${p}_cold_ns" '%.2f')"
            done
            tp_line "$line n=$MEMPOOL_BATCH_N"
        fi
    done

    if mp_want mt2; then
        mp_impls mt2
        mp_rounds mt2 "${impls[@]}"
        # poolkit's two-thread figure against its own one-thread figure of
        # the same run: goal <= 1.1x (ratio >= 1/1.1).
        line=$(tp_pair mempool.mt2_vs_1t mt2 poolkit ns ns_1t low poolkit_2t_ns \
            poolkit_1t_ns '%.2f' 0.909)
        [ "${line#* skip=}" = "$line" ] &&
            line="$line $(tp_stat mt2 poolkit mops_1t poolkit_mops_1t '%.0f') $(tp_stat mt2 poolkit mops_2t poolkit_mops_2t '%.0f')"
        tp_line "$line"
        for p in "${impls[@]:1}"; do
            tp_pair "mempool.mt2_vs_$p" mt2 "$p" ns ns low poolkit_ns "${p}_ns" \
                '%.2f' '' | tee -a "$tmp"
        done
        for p in "${impls[@]:1}"; do
            tp_pair "mempool.mt2_${p}_vs_1t" mt2 "$p" ns ns_1t low "${p}_2t_ns" \
                "${p}_1t_ns" '%.2f' '' "$p" | tee -a "$tmp"
        done
    fi

    if mp_want xthread; then
        mp_impls xthread
        mp_rounds xthread "${impls[@]}" ring
        for p in "${impls[@]:1}"; do
            tp_pair "mempool.xthread_vs_$p" xthread "$p" ns ns low poolkit_ns \
                "${p}_ns" '%.2f' '' | tee -a "$tmp"
        done
        # Goal <= 0.6x the best malloc (ratio >= 1/0.6); ring_ns: the
        # queue alone, inside every figure.
        line=$(mp_best mempool.xthread_vs_best xthread 1.667)
        [ "${line#* skip=}" = "$line" ] &&
            line="$line $(tp_stat xthread ring ns ring_ns '%.2f') pinned=$(mp_med xthread poolkit pinned | cut -d. -f1)"
        tp_line "$line"
    fi

    if mp_want arena; then
        mp_impls arena
        mp_rounds arena "${impls[@]}"
        if [ "${#impls[@]}" -eq 1 ]; then
            tp_line "mempool.arena_vs_apr skip=no arena peer (APR, talloc) built"
        fi
        for p in "${impls[@]:1}"; do
            tp_pair "mempool.arena_vs_$p" arena "$p" ns ns low poolkit_ns \
                "${p}_ns" '%.2f' "$([ "$p" = apr ] && echo 2.00)" | tee -a "$tmp"
        done
    fi

    if mp_want stats; then
        mp_rounds stats poolkit
        # lifo with a pk_mempool_stats_get every MEMPOOL_STATS_EVERY
        # pairs against plain lifo, same run: goal <= 10% (ratio >= 1/1.1).
        line=$(tp_pair mempool.stats_cost stats poolkit ns_stats ns_plain low \
            poolkit_stats_ns poolkit_plain_ns '%.2f' 0.909)
        [ "${line#* skip=}" = "$line" ] &&
            line="$line $(tp_stat stats poolkit stats_get_ns stats_get_ns '%.0f') every=$MEMPOOL_STATS_EVERY"
        tp_line "$line"
    fi

    if mp_want debug; then
        mp_rounds debug poolkit
        # Debug pool against release pool, same run: goal <= 10x.
        tp_pair mempool.debug_cost debug poolkit ns_debug ns_release low \
            poolkit_debug_ns poolkit_release_ns '%.2f' 0.10 | tee -a "$tmp"
    fi

    if mp_want trim; then
        mp_impls trim
        mp_rounds trim "${impls[@]}"
        local fail ret floor
        fail=$(awk '$1 == "trim" && $3 == "poolkit" && $4 == "FAIL" { print substr($0, index($0, "FAIL") + 5); exit }' "$tpwork/data")
        if [ -n "$fail" ]; then
            tp_line "mempool.trim skip=bench_mempool trim failed: $fail"
        else
            # Resident kB above the size before the allocs, after
            # pk_mempool_trim: goal <= the floor (min_idle slabs) + 1 MB.
            ret=$(mp_med trim poolkit trim_retained_kb)
            floor=$(mp_med trim poolkit floor_kb)
            tp_line "mempool.trim $(tp_stat trim poolkit trim_retained_kb poolkit_trim_retained_kb '%.0f') $(tp_stat trim poolkit free_retained_kb poolkit_free_retained_kb '%.0f') $(tp_stat trim poolkit full_kb poolkit_full_kb '%.0f') $(tp_stat trim poolkit base_kb poolkit_base_kb '%.0f') floor_kb=${floor%.*} goal_kb=$(( ${floor%.*} + 1024 )) goal=$(awk -v r="${ret:-1e9}" -v f="${floor:-0}" 'BEGIN { print (r <= f + 1024 ? "met" : "missed") }') $(tp_stat trim poolkit trim_ms poolkit_trim_ms '%.2f') $(tp_stat trim poolkit pool_resident_kb_free pool_resident_kb_free '%.0f') $(tp_stat trim poolkit pool_resident_kb_trim pool_resident_kb_trim '%.0f') $(tp_stat trim poolkit stat_resident_kb_trim stat_resident_kb_trim '%.0f') $(tp_stat trim poolkit pool_mapped_trim pool_slabs_mapped_trim '%.0f') $(tp_stat trim poolkit pool_slabs pool_slabs '%.0f') n=$MEMPOOL_TRIM_N"
        fi
        for p in "${impls[@]:1}"; do
            fail=$(awk -v P="$p" '$1 == "trim" && $3 == P && $4 == "FAIL" { print substr($0, index($0, "FAIL") + 5); exit }' "$tpwork/data")
            if [ -n "$fail" ]; then
                tp_line "mempool.trim_vs_$p skip=$p failed: $fail"
                continue
            fi
            # No ratio: a retained size near 0 makes one meaningless.
            tp_line "mempool.trim_vs_$p $(tp_stat trim poolkit trim_retained_kb poolkit_trim_retained_kb '%.0f') $(tp_stat trim "$p" free_retained_kb "${p}_free_retained_kb" '%.0f') $(tp_stat trim "$p" trim_retained_kb "${p}_trim_retained_kb" '%.0f') $(tp_stat trim "$p" trim_ms "${p}_trim_ms" '%.2f') ${p}_trim_call=$(awk -v P="$p" '$1 == "trim" && $3 == P { for (i = 4; i <= NF; i++) if ($i ~ /^trim_call=/) { print substr($i, 11); exit } }' "$tpwork/data") n=$MEMPOOL_TRIM_N"
        done
    fi
    return 0
}

tmp=$(mktemp "${TMPDIR:-/tmp}/pk-bench.XXXXXX")
tpwork=$(mktemp -d "${TMPDIR:-/tmp}/pk-bench-tp.XXXXXX")
trap 'pg_cleanup; http_cleanup; rm -f "$tmp"; rm -rf "$tpwork"' EXIT
# A signal ends the script through the EXIT trap (the pg server and nginx
# stop).
trap 'exit 130' INT
trap 'exit 143' TERM

header="# poolkit bench $(date -u +%Y-%m-%dT%H:%M:%SZ) host=$(uname -n) cpus=$(getconf _NPROCESSORS_ONLN) kernel=$(uname -r) rounds=$rounds load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null | tr ' ' ,)"
echo "$header" | tee "$tmp"

status=0
for prog in "${progs[@]}"; do
    mod=${prog##*/bench_}
    if [ "$mod" = pg ]; then
        # A driver too; starts its own server (pg_bench).
        if [ "$want_all" = 1 ]; then
            pg_bench "$prog" ALL || status=1
        else
            pg_bench "$prog" "${want_cases[$mod]}" || status=1
        fi
        continue
    fi
    if [ "$mod" = http ]; then
        # A driver too; starts its own nginx (http_bench).
        if [ "$want_all" = 1 ]; then
            http_bench "$prog" ALL || status=1
        else
            http_bench "$prog" "${want_cases[$mod]}" || status=1
        fi
        continue
    fi
    if [ "$mod" = mempool ]; then
        # A driver too, with peers of its own (mp_bench).
        if [ "$want_all" = 1 ]; then
            mp_bench "$prog" ALL || status=1
        else
            mp_bench "$prog" "${want_cases[$mod]}" || status=1
        fi
        continue
    fi
    if [ "$mod" = threadpool ]; then
        # Not a --rounds program: a driver like the peers'; see tp_bench.
        if [ "$want_all" = 1 ]; then
            tp_bench "$prog" ALL || status=1
        else
            tp_bench "$prog" "${want_cases[$mod]}" || status=1
        fi
        continue
    fi
    args=(--rounds "$rounds")
    if [ "$mod" = core ] && [ -n "${RECOVERY_SCALE:-}" ]; then
        args+=(--outage-scale "$RECOVERY_SCALE")
    fi
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
rm -rf "$tpwork"
trap - EXIT
echo "bench/run.sh: figures written to $out" >&2
exit $status
