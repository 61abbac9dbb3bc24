/* bench/bench_threadpool.c - poolkit's thread pool, driven exactly like the
 * peer drivers in bench/peers/ (issue #4), so bench/run.sh can interleave
 * it with them and read every program the same way.
 *
 *   bench_threadpool ff <n>         tasks_per_s=<float>
 *   bench_threadpool future <n>     tasks_per_s=<float>
 *   bench_threadpool future_floor <n>  tasks_per_s=<float>
 *   bench_threadpool many <n>       tasks_per_s=<float>
 *   bench_threadpool roundtrip <n>  p50_ns=<int> p99_ns=<int>
 *   bench_threadpool close <n>      p50_ns=<int> p99_ns=<int> max_ns=<int>
 *                                   unverified=<int>
 *   bench_threadpool idle <s>       cpu_pct=<float> seconds=<int> ticks=<int>
 *                                   hz=<int> workers=<int>
 *   bench_threadpool memory <n>     rss_kb_first=<int> rss_kb_max=<int>
 *                                   rss_growth_kb=<int>
 *   bench_threadpool map_ordered <n>    tasks_per_s=<float>
 *   bench_threadpool map_unordered <n>  tasks_per_s=<float>
 *   bench_threadpool map_memory <n>     vmhwm_kb=<int> n=<int> read_ahead=<int>
 *
 * One line on stdout; a bad command line exits 2. The pool is made with
 * the default options except max_threads = 2 (the peers' 2 workers; the
 * submitting thread is the third). As in the C peers, the clock starts
 * before the pool is created:
 *   ff         one pk_threadpool_submit per no-op task, no future; stops
 *              when pk_threadpool_shutdown(DRAIN) returns (all ran, as
 *              GLib's g_thread_pool_free(p, FALSE, TRUE)). destroy is not
 *              timed.
 *   future     the same with a pk_future per task, all kept; then each is
 *              waited for and released, in submit order (as Java's get()
 *              loop); stops after the last release. Shutdown is not timed.
 *   future_floor  future's floor: the same submits, each task given a
 *              bare 64-byte line of fresh huge-page memory that it sets
 *              done with one store, read back in submit order (no future;
 *              see run_future_floor). Stops after the last line is seen.
 *   many       pk_threadpool_submit_many in batches of MANY_BATCH tasks,
 *              no futures. A batch is all or nothing: when the bounded
 *              queue (default 65536) cannot take a whole batch, the
 *              submitter queues the batch's first task with the ordinary
 *              blocking submit (it sleeps until a worker frees a slot) and
 *              goes on with the rest. Stops as ff.
 *   roundtrip  an idle pool; PEER_RT_WARMUP untimed round trips, then n
 *              timed ones: submit one task with a future, wait for it,
 *              release it. Nearest-rank percentiles, as peer_common.h.
 *   close      CLOSE_WARMUP untimed closes, then n timed ones, each of a
 *              fresh pool: one task that spins (holding a worker) until
 *              this thread is asleep in pk_threadpool_shutdown(DRAIN),
 *              then returns at t0; t1 is shutdown's return; the sample is
 *              t1 - t0, the time a close takes to notice its last task.
 *              unverified: closes whose task gave up seeing this thread
 *              asleep (CLOSE_VERIFY_NS) and let go anyway; their sample
 *              may time a late shutdown call rather than the pool's wake.
 *   idle       warm the pool (both workers spawned: a burst of tasks and
 *              some round trips), then sleep s seconds and report the
 *              process's CPU time over that sleep (utime + stime from
 *              /proc/self/stat, every thread of the process) as a percent
 *              of one CPU.
 *   memory     an endless input cut at n: ff's loop, reading VmRSS from
 *              /proc/self/status every n/20 tasks once MEM_SETTLE tasks
 *              (4x the default queue; n/4 if n is smaller) went in, so the
 *              bounded queue has filled and its ring is all touched;
 *              growth is the largest reading minus the first.
 *   map_ordered, map_unordered
 *              n tiny fn tasks (each returns its own index as the result,
 *              nothing allocated) read lazily by a pk_map over the pool's
 *              executor (pk_threadpool_executor), default map options
 *              (automatic chunking, default window) except the order;
 *              the consumer takes every result with pk_map_next and checks
 *              it (ordered: index i is the i-th delivered). Stops when
 *              pk_map_next says 1 (all delivered); map, executor view and
 *              pool teardown are not timed.
 *   map_memory an endless input (the next function never says "no more")
 *              through an ordered map as above; after n results were
 *              delivered it reads VmHWM (peak RSS) from /proc/self/status,
 *              then destroys the map. bench/run.sh compares n = 10^6 with
 *              n = 10^7, each in its own process.
 *
 * Usage: bench_threadpool ff|future|future_floor|many|roundtrip|close <n>
 *        bench_threadpool idle|memory <n>
 *        bench_threadpool map_ordered|map_unordered|map_memory <n>
 *        bench_threadpool --help */
#define _GNU_SOURCE /* MADV_HUGEPAGE, MAP_ANONYMOUS: run_future_floor */
#include <poolkit/threadpool.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* The same warm-up as bench/peers/peer_common.h. */
#define PEER_RT_WARMUP 200
/* Tasks per pk_threadpool_submit_many call in the many case. */
#define MANY_BATCH 256
/* Tasks the memory case submits before its first reading. */
#define MEM_SETTLE 262144L
/* The close case: how long the task holds its worker after main went to
 * shut down (shutdown is asleep long before), how much longer it waits to
 * see main asleep, untimed closes first, and shutdown's own timeout (far
 * above a close; a hang fails the run instead of hitting run.sh's). */
#define CLOSE_HOLD_NS 1000000
#define CLOSE_VERIFY_NS 100000000
#define CLOSE_WARMUP 10
#define CLOSE_TIMEOUT_MS 10000

static _Noreturn void
die(const char *what, int rc)
{
    fprintf(stderr, "bench_threadpool: %s failed: %d (%s)\n", what, rc,
            rc < 0 ? pk_strerror(rc) : strerror(rc));
    exit(1);
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
noop(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    return 0;
}

static pk_threadpool *
make_pool(void)
{
    pk_threadpool_options o;
    pk_threadpool *tp;
    int rc;

    memset(&o, 0, sizeof o);
    o.max_threads = 2;
    rc = pk_threadpool_create(&tp, &o);
    if (rc)
        die("pk_threadpool_create", rc);
    return tp;
}

static void
drain_pool(pk_threadpool *tp)
{
    int rc = pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    if (rc)
        die("pk_threadpool_shutdown", rc);
}

static void
submit_one(pk_threadpool *tp, pk_future **fut)
{
    int rc = pk_threadpool_submit(tp, noop, NULL, fut);
    if (rc)
        die("pk_threadpool_submit", rc);
}

/* ---- throughput cases: return the time taken, pool creation included -- */

static int64_t
run_ff(long n)
{
    int64_t t0 = now_ns();
    pk_threadpool *tp = make_pool();
    for (long i = 0; i < n; i++)
        submit_one(tp, NULL);
    drain_pool(tp);
    int64_t t1 = now_ns();
    pk_threadpool_destroy(tp);
    return t1 - t0;
}

static int64_t
run_future(long n)
{
    pk_future **fs = malloc((size_t)n * sizeof *fs);
    if (!fs)
        die("malloc", ENOMEM);
    int64_t t0 = now_ns();
    pk_threadpool *tp = make_pool();
    for (long i = 0; i < n; i++)
        submit_one(tp, &fs[i]);
    for (long i = 0; i < n; i++) {
        int rc = pk_future_wait(fs[i], PK_WAIT_FOREVER);
        if (rc)
            die("pk_future_wait", rc);
        pk_future_release(fs[i]);
    }
    int64_t t1 = now_ns();
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    free(fs);
    return t1 - t0;
}

/* The floor under `future`: what any future per task costs here, at
 * the least, through this pool's queue. Each task gets a bare 64-byte
 * line of fresh memory (huge pages) that the
 * submitter writes and the task sets done with one release store; the
 * final loop reads each back in submit order. No refcount, no state
 * machine, no allocator, no waking: a real future does all of that on
 * top. bench/run.sh prints it beside `future`, so a goal for futures can
 * be judged against what memory and cache lines alone allow. */
struct floor_line {
    _Atomic int done;
    char pad[60];
};

static int
floor_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)out;
    (void)err;
    atomic_store_explicit(&((struct floor_line *)arg)->done, 1,
                          memory_order_release);
    return 0;
}

/* n lines in a fresh mapping of *len bytes at *map, aligned to a huge
 * page and advised to use them. */
static struct floor_line *
floor_lines(long n, void **map, size_t *len)
{
    size_t huge = (size_t)2 << 20;
    size_t need = (size_t)n * sizeof(struct floor_line);

    *len = need + huge;
    *map = mmap(NULL, *len, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (*map == MAP_FAILED)
        die("mmap", errno);
    char *a = (char *)(((uintptr_t)*map + huge - 1) & ~(uintptr_t)(huge - 1));
    (void)madvise(a, need, MADV_HUGEPAGE);
    return (struct floor_line *)(void *)a;
}

static int64_t
run_future_floor(long n)
{
    void *map;
    size_t len;
    int64_t t0 = now_ns();
    struct floor_line *lines = floor_lines(n, &map, &len);
    pk_threadpool *tp = make_pool();
    for (long i = 0; i < n; i++) {
        atomic_init(&lines[i].done, 0);
        int rc = pk_threadpool_submit(tp, floor_task, &lines[i], NULL);
        if (rc)
            die("pk_threadpool_submit", rc);
    }
    for (long i = 0; i < n; i++)
        while (!atomic_load_explicit(&lines[i].done, memory_order_acquire))
            sched_yield();
    int64_t t1 = now_ns();
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    munmap(map, len);
    return t1 - t0;
}

static int64_t
run_many(long n)
{
    pk_task batch[MANY_BATCH];
    memset(batch, 0, sizeof batch);
    for (int i = 0; i < MANY_BATCH; i++)
        batch[i].fn = noop;

    int64_t t0 = now_ns();
    pk_threadpool *tp = make_pool();
    long left = n;
    while (left > 0) {
        size_t k = left < MANY_BATCH ? (size_t)left : MANY_BATCH;
        int rc = pk_threadpool_submit_many(tp, batch, k, NULL);
        if (rc == 0) {
            left -= (long)k;
        } else if (rc == PK_EFULL || rc == PK_EAGAIN) {
            /* Queue full: wait for room the ordinary way (one blocking
             * submit), then carry on in batches. */
            submit_one(tp, NULL);
            left--;
        } else {
            die("pk_threadpool_submit_many", rc);
        }
    }
    drain_pool(tp);
    int64_t t1 = now_ns();
    pk_threadpool_destroy(tp);
    return t1 - t0;
}

/* ---- round trips -------------------------------------------------------- */

static void
roundtrip_one(pk_threadpool *tp)
{
    pk_future *f;
    submit_one(tp, &f);
    int rc = pk_future_wait(f, PK_WAIT_FOREVER);
    if (rc)
        die("pk_future_wait", rc);
    pk_future_release(f);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank, as peer_pct in bench/peers/peer_common.h. */
static int64_t
pct(const int64_t *s, long n, int p)
{
    long k = (n * p + 99) / 100;
    return s[k > 0 ? k - 1 : 0];
}

static void
run_roundtrip(long n)
{
    int64_t *s = malloc((size_t)n * sizeof *s);
    if (!s)
        die("malloc", ENOMEM);
    pk_threadpool *tp = make_pool();
    for (int i = 0; i < PEER_RT_WARMUP; i++)
        roundtrip_one(tp);
    for (long i = 0; i < n; i++) {
        int64_t t0 = now_ns();
        roundtrip_one(tp);
        s[i] = now_ns() - t0;
    }
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    qsort(s, (size_t)n, sizeof *s, cmp_i64);
    printf("p50_ns=%lld p99_ns=%lld\n", (long long)pct(s, n, 50),
           (long long)pct(s, n, 99));
    free(s);
}

/* ---- close latency ------------------------------------------------------ */

/* One close: the blocking task and the thread that shuts the pool down
 * meet through these. */
struct close_round {
    atomic_int started;     /* the task is running */
    _Atomic int64_t go;     /* when main went to shut down; 0: not yet */
    _Atomic int64_t t0;     /* when the task let go (its return) */
    atomic_int unverified;  /* 1: main was not seen asleep before t0, so
                               shutdown may not have been waiting */
};

/* Whether the main thread is asleep: state S in /proc, read by the task.
 * After `go` the only place main sleeps is shutdown's wait (the door's
 * sched_yield loop shows R), so S means shutdown is surely waiting and the
 * sample times a wake, not a late call. The main thread's tid is the pid.
 * -1: /proc cannot tell. */
static int
main_asleep(void)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)getpid());
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
        return -1;
    buf[len] = '\0';
    char *p = strrchr(buf, ')'); /* the name may hold spaces */
    return p && p[1] == ' ' ? p[2] == 'S' : -1;
}

/* The pool's only task: holds its worker until main has been in shutdown
 * for CLOSE_HOLD_NS and is seen asleep there, then lets go. It spins
 * rather than blocks, so t0 is the moment it returns, with no wake of its
 * own inside the timed span. */
static int
close_blocker(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct close_round *cr = arg;
    int64_t go;
    (void)self;
    (void)out;
    (void)err;

    atomic_store(&cr->started, 1);
    while ((go = atomic_load(&cr->go)) == 0)
        ;
    while (now_ns() < go + CLOSE_HOLD_NS)
        ;
    int64_t give_up = now_ns() + CLOSE_VERIFY_NS;
    int asleep;
    do
        asleep = main_asleep();
    while (asleep == 0 && now_ns() < give_up);
    /* Relaxed: published by the release store of t0 below. */
    if (asleep != 1)
        atomic_store_explicit(&cr->unverified, 1, memory_order_relaxed);
    /* Release: pairs with main's acquire load after shutdown returned. */
    atomic_store_explicit(&cr->t0, now_ns(), memory_order_release);
    return 0;
}

/* A fresh pool with one blocking task, drained by shutdown on this
 * thread: returns t1 - t0, the task's return to shutdown's. Creating,
 * and destroying after shutdown, are not timed. */
static int64_t
close_one(struct close_round *cr)
{
    atomic_init(&cr->started, 0);
    atomic_init(&cr->go, 0);
    atomic_init(&cr->t0, 0);
    atomic_init(&cr->unverified, 0);
    pk_threadpool *tp = make_pool();
    int rc = pk_threadpool_submit(tp, close_blocker, cr, NULL);
    if (rc)
        die("pk_threadpool_submit", rc);
    /* A worker holds the task before shutdown starts, as in a real close
     * of a busy pool (and the worker's spawn stays out of the figure). */
    while (!atomic_load(&cr->started))
        sched_yield();
    atomic_store(&cr->go, now_ns());
    rc = pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, CLOSE_TIMEOUT_MS);
    int64_t t1 = now_ns();
    if (rc)
        die("pk_threadpool_shutdown", rc);
    int64_t t0 = atomic_load_explicit(&cr->t0, memory_order_acquire);
    pk_threadpool_destroy(tp);
    if (t0 == 0) {
        fprintf(stderr, "bench_threadpool: close: shutdown returned before "
                "its last task did\n");
        exit(1);
    }
    return t1 - t0;
}

static void
run_close(long n)
{
    struct close_round cr;
    long unverified = 0;
    int64_t *s = malloc((size_t)n * sizeof *s);
    if (!s)
        die("malloc", ENOMEM);
    for (int i = 0; i < CLOSE_WARMUP; i++)
        close_one(&cr);
    for (long i = 0; i < n; i++) {
        s[i] = close_one(&cr);
        /* Relaxed: the task stored it before t0, which close_one
         * read with acquire. */
        unverified += atomic_load_explicit(&cr.unverified,
                                           memory_order_relaxed);
    }
    qsort(s, (size_t)n, sizeof *s, cmp_i64);
    printf("p50_ns=%lld p99_ns=%lld max_ns=%lld unverified=%ld\n",
           (long long)pct(s, n, 50), (long long)pct(s, n, 99),
           (long long)s[n - 1], unverified);
    free(s);
}

/* ---- idle CPU, memory ---------------------------------------------------- */

/* utime + stime of the whole process, in clock ticks. */
static long long
proc_cpu_ticks(void)
{
    char buf[4096];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        die("fopen /proc/self/stat", errno);
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    /* Fields after the command name, which may hold spaces: state is
     * field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        die("parse /proc/self/stat", EINVAL);
    return (long long)(ut + st);
}

static void
run_idle(long seconds)
{
    pk_threadpool *tp = make_pool();
    /* Spawn both workers (bursts until the pool has two, up to 50) and
     * let them settle into their idle state. */
    pk_threadpool_stats st = { 0 };
    for (int burst = 0; burst < 50; burst++) {
        for (int i = 0; i < 20000; i++)
            submit_one(tp, NULL);
        for (int i = 0; i < PEER_RT_WARMUP; i++)
            roundtrip_one(tp);
        if (pk_threadpool_stats_get(tp, &st) == 0 && st.threads >= 2)
            break;
    }
    if (st.threads < 2)
        fprintf(stderr, "bench_threadpool: idle: only %zu worker(s) up\n",
                st.threads);

    long hz = sysconf(_SC_CLK_TCK);
    long long c0 = proc_cpu_ticks();
    int64_t t0 = now_ns();
    struct timespec d = { seconds, 0 };
    while (nanosleep(&d, &d) != 0 && errno == EINTR)
        ;
    long long c1 = proc_cpu_ticks();
    int64_t t1 = now_ns();
    double cpu_s = (double)(c1 - c0) / (double)hz;
    double wall_s = (double)(t1 - t0) / 1e9;
    printf("cpu_pct=%.3f seconds=%ld ticks=%lld hz=%ld workers=%zu\n",
           100.0 * cpu_s / wall_s, seconds, c1 - c0, hz, st.threads);
    drain_pool(tp);
    pk_threadpool_destroy(tp);
}

static long
rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("fopen /proc/self/status", errno);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static void
run_memory(long n)
{
    long step = n / 20 > 0 ? n / 20 : 1, first = -1, max = -1;
    long settle = n / 4 < MEM_SETTLE ? n / 4 : MEM_SETTLE;
    pk_threadpool *tp = make_pool();
    for (long i = 1; i <= n; i++) {
        submit_one(tp, NULL);
        if (i >= settle && (i % step == 0 || i == n)) {
            long kb = rss_kb();
            if (first < 0)
                first = kb;
            if (kb > max)
                max = kb;
        }
    }
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    printf("rss_kb_first=%ld rss_kb_max=%ld rss_growth_kb=%ld\n", first, max,
           max - first);
}

/* ---- map ---------------------------------------------------------------- */

/* A tiny task: its result is its own index (no allocation). */
static int
tiny(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    out->value = arg;
    return 0;
}

/* The map's input: items 0, 1, ... up to limit (limit < 0: endless). */
struct map_input {
    long i, limit;
};

static int
map_input_next(void *user, pk_task *task)
{
    struct map_input *in = user;

    if (in->limit >= 0 && in->i >= in->limit)
        return 1;
    task->fn = tiny;
    task->arg = (void *)(uintptr_t)in->i++;
    return 0;
}

/* Takes one result from m; dies on anything but a delivered item. */
static size_t
map_take(pk_map *m, int ordered, long expect)
{
    pk_result r;
    pk_error e;
    size_t idx = 0;
    int rc;

    pk_error_clear(&e);
    rc = pk_map_next(m, &r, &idx, &e);
    if (rc != 0) {
        fprintf(stderr, "bench_threadpool: pk_map_next at item %ld: %s%s%s\n",
                expect, rc == 1 ? "ended early" : pk_strerror(rc),
                e.msg[0] ? ": " : "", e.msg);
        exit(1);
    }
    if ((uintptr_t)r.value != idx || (ordered && idx != (size_t)expect)) {
        fprintf(stderr, "bench_threadpool: map delivered index %zu (value "
                "%zu) as result %ld\n", idx, (size_t)(uintptr_t)r.value,
                expect);
        exit(1);
    }
    return idx;
}

static pk_executor *
make_executor(pk_threadpool *tp)
{
    pk_executor *ex;
    int rc = pk_threadpool_executor(tp, &ex);
    if (rc)
        die("pk_threadpool_executor", rc);
    return ex;
}

static pk_map *
make_map(pk_executor *ex, struct map_input *in, int order)
{
    pk_map_options o;
    pk_map *m;
    int rc;

    memset(&o, 0, sizeof o);
    o.order = order;
    rc = pk_map_create(&m, ex, map_input_next, in, &o);
    if (rc)
        die("pk_map_create", rc);
    return m;
}

static int64_t
run_map(long n, int order)
{
    struct map_input in = { 0, n };
    int ordered = order == PK_MAP_ORDERED;
    int64_t t0 = now_ns();
    pk_threadpool *tp = make_pool();
    pk_executor *ex = make_executor(tp);
    pk_map *m = make_map(ex, &in, order);
    for (long i = 0; i < n; i++)
        map_take(m, ordered, i);
    int rc = pk_map_next(m, NULL, NULL, NULL);
    if (rc != 1) {
        fprintf(stderr, "bench_threadpool: pk_map_next after %ld items: %d "
                "(want 1: all delivered)\n", n, rc);
        exit(1);
    }
    int64_t t1 = now_ns();
    pk_map_destroy(m);
    pk_executor_destroy(ex);
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    return t1 - t0;
}

static int64_t
run_map_ordered(long n)
{
    return run_map(n, PK_MAP_ORDERED);
}

static int64_t
run_map_unordered(long n)
{
    return run_map(n, PK_MAP_UNORDERED);
}

static long
status_kb(const char *key)
{
    char line[256];
    size_t klen = strlen(key);
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("fopen /proc/self/status", errno);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':' &&
            sscanf(line + klen + 1, "%ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static void
run_map_memory(long n)
{
    struct map_input in = { 0, -1 }; /* endless */
    pk_threadpool *tp = make_pool();
    pk_executor *ex = make_executor(tp);
    pk_map *m = make_map(ex, &in, PK_MAP_ORDERED);
    for (long i = 0; i < n; i++)
        map_take(m, 1, i);
    long hwm = status_kb("VmHWM");
    long read = in.i;
    pk_map_destroy(m);
    pk_executor_destroy(ex);
    drain_pool(tp);
    pk_threadpool_destroy(tp);
    /* read - n: items read ahead (in flight) when the reading was taken. */
    printf("vmhwm_kb=%ld n=%ld read_ahead=%ld\n", hwm, n, read - n);
}

static void
usage(FILE *to)
{
    fprintf(to,
            "usage: bench_threadpool ff|future|future_floor|many|roundtrip|"
            "close <n>\n"
            "       bench_threadpool idle <seconds>\n"
            "       bench_threadpool memory <n>\n"
            "       bench_threadpool map_ordered|map_unordered|map_memory <n>\n"
            "One line on stdout, as the peer drivers in bench/peers/. "
            "bench/run.sh runs\nthis program interleaved with the peers "
            "(make bench BENCH=threadpool).\n");
}

int
main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    char *end = NULL;
    long n = argc == 3 ? strtol(argv[2], &end, 10) : 0;
    if (argc != 3 || *end != '\0' || n <= 0) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    int64_t (*tput)(long) = !strcmp(c, "ff")       ? run_ff
                            : !strcmp(c, "future") ? run_future
                            : !strcmp(c, "future_floor") ? run_future_floor
                            : !strcmp(c, "many")   ? run_many
                            : !strcmp(c, "map_ordered") ? run_map_ordered
                            : !strcmp(c, "map_unordered") ? run_map_unordered
                                                   : NULL;
    if (tput) {
        int64_t ns = tput(n);
        printf("tasks_per_s=%.1f\n", (double)n * 1e9 / (double)ns);
    } else if (!strcmp(c, "roundtrip")) {
        run_roundtrip(n);
    } else if (!strcmp(c, "close")) {
        run_close(n);
    } else if (!strcmp(c, "idle")) {
        run_idle(n);
    } else if (!strcmp(c, "memory")) {
        run_memory(n);
    } else if (!strcmp(c, "map_memory")) {
        run_map_memory(n);
    } else {
        fprintf(stderr, "bench_threadpool: unknown case '%s'\n", c);
        usage(stderr);
        return 2;
    }
    return 0;
}
