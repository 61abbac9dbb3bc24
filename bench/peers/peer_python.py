"""peer_python.py - Python's concurrent.futures.ThreadPoolExecutor(2) as a peer (issue #4).

    /usr/bin/python3 peer_python.py ff|future|roundtrip N

ff submits and drops each Future, and waits with the executor's own
drain (leaving the `with` block = shutdown(wait=True)); future keeps the
Futures and waits for them all. Standard library only. Run it with
Debian's /usr/bin/python3, so every machine measures the same build.
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait


def noop():
    pass


def throughput(n, futures):
    t0 = time.perf_counter_ns()
    with ThreadPoolExecutor(2) as ex:
        if futures:
            wait([ex.submit(noop) for _ in range(n)])
        else:
            for _ in range(n):
                ex.submit(noop)
    return n * 1e9 / (time.perf_counter_ns() - t0)


def pct(s, p):
    """Nearest-rank percentile, as in peer_common.h."""
    k = (len(s) * p + 99) // 100
    return s[max(k - 1, 0)]


def roundtrips(n):
    s = []
    clock = time.perf_counter_ns
    with ThreadPoolExecutor(2) as ex:
        for i in range(-200, n):  # 200 untimed, as in peer_common.h
            t0 = clock()
            ex.submit(noop).result()
            if i >= 0:
                s.append(clock() - t0)
    s.sort()
    return s


def main():
    try:
        case, n = sys.argv[1], int(sys.argv[2])
        assert len(sys.argv) == 3 and n > 0 and case in ("ff", "future", "roundtrip")
    except (IndexError, ValueError, AssertionError):
        sys.exit("usage: peer_python.py ff|future|roundtrip <n>")
    if case == "roundtrip":
        s = roundtrips(n)
        print(f"p50_ns={pct(s, 50)} p99_ns={pct(s, 99)}")
    else:
        print(f"tasks_per_s={throughput(n, case == 'future'):.1f}")


if __name__ == "__main__":
    main()
