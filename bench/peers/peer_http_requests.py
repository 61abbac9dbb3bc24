"""peer_http_requests.py - Python requests (Debian python3-requests, on
urllib3), driven like bench_http (bench/bench_http.c) for the http bench of
issue #13. Run by /usr/bin/python3 (Debian's python3-* packages).

    peer_http_requests.py get|session <url> <threads> <warm_ms> <ms> [ca_file]
        rps= ns_per_req= requests= fair= min_thread= max_thread=
        cpu_ns_per_req= connections= threads= mode=

    get      requests.get(url) per request: a new Session each time, so a
             new connection (and a new TLS context, CA file loaded again)
             per request.
    session  one requests.Session per thread, made before the clock
             starts: urllib3 keeps its connection alive.

verify=ca_file when given (else requests' default). Each response must be
200 with the body "hello\\n". The loop is peer_http_common.h's (the C
harness) written again in Python: threads start together, each runs
warm_ms untimed (at least one request), then times whole requests until
<ms> more have passed; cpu_ns_per_req: the threads' CPU time
(time.thread_time_ns) in their timed parts per request. connections: new connections, the whole run (get:
one per request; session: urllib3's num_connections of the session's
pools).
"""
import sys
import threading
import time

import requests

BODY = b"hello\n"


def usage():
    sys.stderr.write("usage: peer_http_requests.py get|session <url> <threads> "
                     "<warm_ms> <ms> [ca_file]\n")
    sys.exit(2)


def num(s, least):
    try:
        v = int(s)
    except ValueError:
        usage()
    if v < least:
        usage()
    return v


def session_connections(s):
    n = 0
    for a in s.adapters.values():
        pm = a.poolmanager
        for key in list(pm.pools.keys()):
            p = pm.pools.get(key)
            if p is not None:
                n += p.num_connections
    return n


def main(argv):
    if len(argv) not in (6, 7) or argv[1] not in ("get", "session"):
        usage()
    mode, url = argv[1], argv[2]
    threads, warm_ms, ms = num(argv[3], 1), num(argv[4], 0), num(argv[5], 1)
    verify = argv[6] if len(argv) == 7 else True
    go = threading.Barrier(threads)
    res = [None] * threads
    errors = []

    def run(i):
        s = requests.Session() if mode == "session" else None
        get = s.get if s else requests.get
        conns = 0
        go.wait()
        try:
            def one():
                r = get(url, verify=verify)
                if r.status_code != 200 or r.content != BODY:
                    raise RuntimeError("unexpected response: status %d, %d body bytes"
                                       % (r.status_code, len(r.content)))
            start = time.monotonic_ns()
            warm_end = start + warm_ms * 1000000
            n_warm = 0
            while True:
                one()
                n_warm += 1
                if time.monotonic_ns() >= warm_end:
                    break
            c0 = time.thread_time_ns()
            t0 = time.monotonic_ns()
            end = t0 + ms * 1000000
            count = 0
            while True:
                one()
                count += 1
                t1 = time.monotonic_ns()
                if t1 >= end:
                    break
            cpu = time.thread_time_ns() - c0
            conns = session_connections(s) if s else n_warm + count
            res[i] = (count, t0, t1, conns, cpu)
        except Exception as e:  # reported, the run fails
            errors.append("peer_http_requests: %s" % e)
        finally:
            if s:
                s.close()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors or any(r is None for r in res):
        sys.stderr.write((errors[0] if errors else "peer_http_requests: a thread failed") + "\n")
        sys.exit(1)
    rps = sum(r[0] * 1e9 / (r[2] - r[1]) for r in res)
    counts = [r[0] for r in res]
    least, most = min(counts), max(counts)
    print("rps=%.1f ns_per_req=%.0f requests=%d fair=%.3f min_thread=%d "
          "max_thread=%d cpu_ns_per_req=%.0f connections=%d threads=%d mode=%s" % (
              rps, 1e9 / rps, sum(counts), least / most if most else 0.0, least,
              most, sum(r[4] for r in res) / sum(counts), sum(r[3] for r in res),
              threads, mode))


if __name__ == "__main__":
    main(sys.argv)
