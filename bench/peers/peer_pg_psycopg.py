"""peer_pg_psycopg.py - psycopg_pool's ConnectionPool (Debian
python3-psycopg-pool), driven like bench_pg (bench/bench_pg.c) for the pg
bench of issue #12. Run by /usr/bin/python3 (Debian's python3-* packages).

    peer_pg_psycopg.py overhead <conninfo> <threads> <n>
        pair_ns= agg_ns= n= threads=
    peer_pg_psycopg.py contend <conninfo> <threads> <pool> <ms>
        qps= fair= queries= min_thread= max_thread= wait_p50_ns=
        wait_p99_ns= wait_max_ns= ...

The pool: ConnectionPool(conninfo, min_size=max_size=4 (overhead) or
<pool> (contend), kwargs={"autocommit": True}), waited for with wait()
before timing. Autocommit, so that `SELECT 1` is one round trip as in the
C pools: without it psycopg opens a transaction (BEGIN) and the
pool.connection() block commits at its end. Acquire + release is one
`with pool.connection():` block (getconn, and putconn, which checks the
connection's transaction state locally: no round trip); waiting at the cap
is the pool's own (its default timeout, 30 s; waiters served in arrival
order). The query: conn.execute("SELECT 1").fetchone().

The loops are peer_pg_common.h's (the C harness) written again in Python:
threads start together; contend runs 200 ms untimed, then <ms> counted,
each acquire timed around entering the block; percentiles are nearest
rank.
"""
import sys
import threading
import time

from psycopg_pool import ConnectionPool

WARM_MS = 200


def usage():
    sys.stderr.write("usage: peer_pg_psycopg.py overhead <conninfo> <threads> <n>\n"
                     "       peer_pg_psycopg.py contend <conninfo> <threads> <pool> <ms>\n")
    sys.exit(2)


def num(s):
    try:
        v = int(s)
    except ValueError:
        usage()
    if v <= 0:
        usage()
    return v


def make_pool(conninfo, size):
    pool = ConnectionPool(conninfo, min_size=size, max_size=size,
                          kwargs={"autocommit": True}, open=True)
    pool.wait(timeout=30.0)
    return pool


def overhead(conninfo, threads, n):
    pool = make_pool(conninfo, 4)
    go = threading.Barrier(threads)
    times = [None] * threads

    def run(i):
        go.wait()
        t0 = time.monotonic_ns()
        for _ in range(n):
            with pool.connection():
                pass
        times[i] = (t0, time.monotonic_ns())

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    pool.close()
    per_thread = sum((b - a) / n for a, b in times) / threads
    agg = (max(b for _, b in times) - min(a for a, _ in times)) / (n * threads)
    print("pair_ns=%.1f agg_ns=%.1f n=%d threads=%d" % (per_thread, agg, n, threads))


def pct(s, p):
    k = (len(s) * p + 99) // 100
    return s[k - 1 if k > 0 else 0]


def contend(conninfo, threads, size, ms):
    pool = make_pool(conninfo, size)
    go = threading.Barrier(threads + 1)
    phase = [0]  # 0 warm, 1 count, 2 stop
    counts = [0] * threads
    waits = [[] for _ in range(threads)]

    def run(i):
        go.wait()
        mine = waits[i]
        c = 0
        while True:
            ph = phase[0]
            if ph == 2:
                break
            a = time.monotonic_ns()
            with pool.connection() as conn:
                w = time.monotonic_ns() - a
                if conn.execute("SELECT 1").fetchone()[0] != 1:
                    raise RuntimeError("SELECT 1 returned no 1")
            if ph == 1:
                c += 1
                mine.append(w)
        counts[i] = c

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    go.wait()
    time.sleep(WARM_MS / 1000.0)
    t0 = time.monotonic_ns()
    phase[0] = 1
    time.sleep(ms / 1000.0)
    phase[0] = 2
    t1 = time.monotonic_ns()
    for t in ts:
        t.join()
    pool.close()
    total = sum(counts)
    least, most = min(counts), max(counts)
    allw = sorted(w for m in waits for w in m)
    line = "qps=%.1f fair=%.3f queries=%d min_thread=%d max_thread=%d" % (
        total * 1e9 / (t1 - t0), least / most if most else 0.0, total, least, most)
    if allw:
        line += " wait_p50_ns=%d wait_p99_ns=%d wait_max_ns=%d" % (
            pct(allw, 50), pct(allw, 99), allw[-1])
    print(line + " threads=%d pool=%d ms=%d" % (threads, size, ms))


def main(argv):
    if len(argv) == 5 and argv[1] == "overhead":
        overhead(argv[2], num(argv[3]), num(argv[4]))
    elif len(argv) == 6 and argv[1] == "contend":
        contend(argv[2], num(argv[3]), num(argv[4]), num(argv[5]))
    else:
        usage()


if __name__ == "__main__":
    main(sys.argv)
