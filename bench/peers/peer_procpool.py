"""peer_procpool.py - Python's concurrent.futures.ProcessPoolExecutor as the
process pool's peer (bench/bench_procpool.c runs it between its own rounds).

    /usr/bin/python3 peer_procpool.py roundtrip N
    /usr/bin/python3 peer_procpool.py many N WORKERS
    /usr/bin/python3 peer_procpool.py map N WORKERS CHUNK
    /usr/bin/python3 peer_procpool.py big MIB

One line on stdout, key=value. Every case does the work bench_procpool's
poolkit side does, with the fork start method (as poolkit's workers are
forks), workers started and warmed before the clock runs:
  roundtrip  one tiny task at a time on one worker: submit, result();
             ns = wall ns per task (median of 5 chunks)
  many       N tiny tasks submitted at once, then all waited for;
             ns = wall ns per task
  map        executor.map over N tiny items with chunksize CHUNK;
             ns = wall ns per item
  big        one task that gets MIB MiB of bytes and returns their length
             (the bytes are pickled to the worker); ns = wall ns per task
The tiny task returns its argument plus one, as on the C side, so both
sides measure the pool and not the language (64 rounds of xorshift cost
10 us in CPython, tens of ns in C). Standard library only; run it with
Debian's /usr/bin/python3.
"""
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait

def work(x):
    return x + 1


def length(b):
    return len(b)


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def warm(ex, workers):
    wait([ex.submit(work, i) for i in range(workers * 4)])


def roundtrip(n):
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
        warm(ex, 1)
        per = max(n // 5, 1)
        chunks = []
        for c in range(5):
            t0 = time.perf_counter_ns()
            for i in range(per):
                ex.submit(work, i).result()
            chunks.append((time.perf_counter_ns() - t0) / per)
    return median(chunks)


def many(n, workers):
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
        warm(ex, workers)
        t0 = time.perf_counter_ns()
        wait([ex.submit(work, i) for i in range(n)])
        return (time.perf_counter_ns() - t0) / n


def mapped(n, workers, chunk):
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
        warm(ex, workers)
        t0 = time.perf_counter_ns()
        total = sum(ex.map(work, range(n), chunksize=chunk))
        return (time.perf_counter_ns() - t0) / n, total


def big(mib):
    data = bytes(mib << 20)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
        warm(ex, 1)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter_ns()
            if ex.submit(length, data).result() != len(data):
                raise SystemExit("big: wrong length")
            runs.append(time.perf_counter_ns() - t0)
    return median(runs)


def main(argv):
    case = argv[1] if len(argv) > 1 else ""
    if case == "roundtrip" and len(argv) == 3:
        print("ns=%.0f n=%d" % (roundtrip(int(argv[2])), int(argv[2])))
    elif case == "many" and len(argv) == 4:
        print("ns=%.0f n=%d" % (many(int(argv[2]), int(argv[3])),
                                int(argv[2])))
    elif case == "map" and len(argv) == 5:
        ns, _ = mapped(int(argv[2]), int(argv[3]), int(argv[4]))
        print("ns=%.0f n=%d chunk=%d" % (ns, int(argv[2]), int(argv[4])))
    elif case == "big" and len(argv) == 3:
        print("ns=%.0f mib=%d" % (big(int(argv[2])), int(argv[2])))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
