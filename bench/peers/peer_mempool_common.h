/* peer_mempool_common.h - the timing loops shared by bench/bench_mempool.c
 * (poolkit) and the C peer drivers of the mempool bench (issue #14):
 * peer_mempool_malloc.c (glibc, jemalloc, tcmalloc, tcmalloc_minimal,
 * mimalloc: one source, one program per allocator, since an allocator
 * that replaces malloc must own its process), peer_mempool_talloc.c and
 * peer_mempool_apr.c. Every allocator is timed by this code, so no loop,
 * clock or median can differ between them.
 *
 *   <driver> cases                  cases=<list> malloc_from=<library>
 *   <driver> lifo <n>               ns= wall_ns= n=
 *   <driver> batch <n> <reps>       ns= cold_ns= bytes_per_obj= base_kb=
 *                                   full_kb= free_kb= n= reps=
 *   <driver> mt2 <n>                ns= ns_1t= mops_1t= mops_2t= n=
 *   <driver> xthread <n> [pin|nopin]
 *                                   ns= prod_ns= cons_ns= wall_ns=
 *                                   pinned= n=
 *   <driver> xthread_ring <n> [pin|nopin]
 *                                   the same with no allocator (the ring
 *                                   alone)
 *   <driver> arena <cycles> <k>     ns= n= k=
 *   <driver> trim <n>               base_kb= full_kb= free_kb= trim_kb=
 *                                   free_retained_kb= trim_retained_kb=
 *                                   trim_ms= trim_call= n=
 *   ...and the driver's own cases (MB_EXTRA_CASES).
 *
 * One line on stdout. A case the driver lacks prints `skip=<why>` and
 * exits 0; a bad command line exits 2, a failure 1 (why on stderr).
 * Every object is MB_OBJ (64) bytes and is written once (one 8-byte
 * store) between its alloc and its free; the pointer is passed through an
 * empty asm so no compiler can drop an alloc+free pair.
 *
 * Figures are CPU time (the machine is shared: wall time swings far
 * more), in ns per operation:
 *   lifo      alloc, write, free at once, on one thread (a thread of its
 *             own, started after MB_WARM untimed pairs): n pairs in
 *             MB_CHUNKS chunks, each timed with CLOCK_THREAD_CPUTIME_ID;
 *             ns = the median chunk's ns per pair.
 *   batch     n allocs (each written), then n frees in the same order.
 *             The first batch is cold and untimed for speed: around its
 *             allocs /proc/self/statm gives the resident growth
 *             (bytes_per_obj; base/full/free_kb: resident before, after
 *             the allocs, after the frees) and cold_ns its CPU per pair
 *             (first touch included). Then `reps` warm batches, each timed
 *             (thread CPU); ns = the median batch's ns per alloc+free.
 *   mt2       lifo on one thread (ns_1t), then on two threads at once
 *             (ns: per pair, each thread's own median chunk, averaged
 *             over the two). mops_*: pairs per wall microsecond, all
 *             threads.
 *   xthread   a producer thread allocates and writes n objects and passes
 *             each through a single-producer single-consumer ring of
 *             MB_RING slots to a consumer thread that frees it, each
 *             object as it comes; each side publishes its index every
 *             MB_BATCH objects. A side that finds the ring full or empty
 *             spins briefly, then naps (MB_NAP_NS). With `pin` (the
 *             default) the producer and the consumer are bound to the
 *             first two CPUs the process may use (pinned=1), so every
 *             object crosses between cores: unbound, the scheduler now
 *             and then runs both on one core, where a handed-over object
 *             never leaves the cache and the figure drops 2-4x, and
 *             rounds stop being comparable. ns =
 *             process CPU (both threads, spinning included) per object;
 *             prod_ns, cons_ns each thread's share. An untimed run of
 *             n/10 first. xthread_ring: the same ring and threads with no
 *             allocator (objects cycle through a static buffer): the
 *             queue's own cost, which every xthread figure includes.
 *   arena     cycles x (k allocs of 64 bytes, each written, then one
 *             reset), after one untimed cycle; MB_CHUNKS chunks timed
 *             with thread CPU; ns = median chunk's ns per allocation (the
 *             reset amortised).
 *   trim      resident (statm) before, after n allocs (written), after
 *             freeing them all, and after the allocator's explicit
 *             give-back call (trim_call; glibc malloc_trim(0), ...),
 *             which trim_ms times (wall). *_retained_kb = resident minus
 *             the one before the allocs.
 *
 * Use: define the MB_* feature macros below (0 or 1), include this
 * header, define the hooks it declares for the features on, and call
 * mb_main(argc, argv) from main. Header-only (static functions) because
 * build.sh compiles each peer from one file; needs pthreads. */
#ifndef PEER_MEMPOOL_COMMON_H
#define PEER_MEMPOOL_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, RTLD_DEFAULT, mincore, MAP_ANONYMOUS */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- what the driver offers ---------------------------------------------- */

#ifndef MB_IMPL
#error "define MB_IMPL (the allocator's name) before including peer_mempool_common.h"
#endif
/* mb_alloc / mb_free: one object at a time (lifo, batch, trim). */
#ifndef MB_PER_OBJECT
#define MB_PER_OBJECT 0
#endif
/* mb_alloc and mb_free from any thread, and a free on another thread
 * than the alloc (mt2, xthread). */
#ifndef MB_THREADS
#define MB_THREADS 0
#endif
/* mb_arena_begin / mb_arena_alloc / mb_arena_reset (arena). */
#ifndef MB_ARENA
#define MB_ARENA 0
#endif
/* mb_trim and MB_TRIM_CALL, its name (trim). */
#ifndef MB_TRIM
#define MB_TRIM 0
#endif
#if !MB_TRIM && !defined(MB_TRIM_CALL)
#define MB_TRIM_CALL "none"
#endif
/* mb_trim_report: extra keys on the trim line. */
#ifndef MB_TRIM_REPORT
#define MB_TRIM_REPORT 0
#endif
/* mb_extra: the driver's own cases, listed in MB_EXTRA_CASES ("a,b"). */
#ifndef MB_EXTRA
#define MB_EXTRA 0
#endif
#ifndef MB_EXTRA_CASES
#define MB_EXTRA_CASES ""
#endif

/* Called once before any case: 0, or -1 (the run fails). */
static int mb_init(void);
#if MB_PER_OBJECT
/* One MB_OBJ-byte object, or NULL (the run fails). */
static inline void *mb_alloc(void);
static inline void mb_free(void *p);
#endif
#if MB_ARENA
/* Makes the arena the next calls use, for cycles of k allocations. */
static int mb_arena_begin(long k);
static inline void *mb_arena_alloc(void);
static inline void mb_arena_reset(void);
#endif
#if MB_TRIM
/* Gives free memory back to the system, as the allocator's users would. */
static void mb_trim(void);
#endif
#if MB_TRIM_REPORT
/* Writes " key=value..." into out (size bytes). when: "free" (all objects
 * freed, before the trim) or "trim" (after it); objs: the n pointers the
 * case allocated, all freed by now (the report may overwrite them: the
 * array is the case's own mapping, outside every allocator). Runs after
 * the resident sizes of that step were read, and must not keep memory. */
static void mb_trim_report(const char *when, void **objs, long n,
                           char *out, size_t size);
#endif
#if MB_EXTRA
/* Runs a case of MB_EXTRA_CASES: the exit code, or -1 if it is not one. */
static int mb_extra(int argc, char **argv);
#endif

/* ---- sizes ----------------------------------------------------------------- */

#define MB_OBJ 64
/* Timed chunks of a one-thread loop; the figure is their median. */
#define MB_CHUNKS 10
/* Untimed alloc+free pairs before a lifo loop (a slab or a thread cache
 * made, the allocator's first page touched). */
#define MB_WARM 100000
/* Slots of the xthread ring (a power of two). */
#define MB_RING 4096
/* A thread that finds the ring full (or empty) spins this many times,
 * then naps MB_NAP_NS and looks again: so the two sides alternate in
 * bursts of up to a ring of objects rather than both spinning, which
 * would count as CPU time and depend on whether a second CPU happens to
 * be free on a shared machine. */
#define MB_SPINS 64
#define MB_NAP_NS 20000
/* Each side publishes its ring index every MB_BATCH objects (and before
 * it waits), not every object: on two cores, an index and a slot line
 * moving between them per object cost more than most allocators (about
 * 40 ns a side here), and would drown the figures in the queue's cost. */
#define MB_BATCH 64

/* ---- helpers ------------------------------------------------------------- */

static _Noreturn void
mb_die(const char *what)
{
    fprintf(stderr, "%s: %s\n", MB_IMPL, what);
    exit(1);
}

static inline int64_t
mb_clock(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define mb_thread_cpu() mb_clock(CLOCK_THREAD_CPUTIME_ID)
#define mb_process_cpu() mb_clock(CLOCK_PROCESS_CPUTIME_ID)
#define mb_wall() mb_clock(CLOCK_MONOTONIC)

/* The one write to each object, and the pointer made visible to "the
 * outside" so the alloc+free pair cannot be optimised away. */
static inline void
mb_touch(void *p, uint64_t v)
{
    *(volatile uint64_t *)p = v;
    __asm__ __volatile__("" : : "r"(p) : "memory");
}

static inline void
mb_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int
mb_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double
mb_median(double *v, int k)
{
    qsort(v, (size_t)k, sizeof *v, mb_cmp_double);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

/* Memory outside every allocator under test (the pointer arrays), made
 * resident before any measurement. */
static void *
mb_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        mb_die("mmap failed");
    memset(p, 0, bytes);
    return p;
}

/* Resident kB from /proc/self/statm, read without stdio (no malloc). */
static inline long
mb_resident_kb(void)
{
    char buf[128];
    long size = 0, res = 0;
    ssize_t got;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        mb_die("cannot open /proc/self/statm");
    got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        mb_die("cannot read /proc/self/statm");
    buf[got] = '\0';
    if (sscanf(buf, "%ld %ld", &size, &res) != 2)
        mb_die("cannot parse /proc/self/statm");
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static long
mb_arg(const char *s, long min)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "%s: bad number '%s' (at least %ld)\n", MB_IMPL, s,
                min);
        exit(2);
    }
    return v;
}

/* The shared object that provides malloc in this process. */
static inline const char *
mb_malloc_from(void)
{
    Dl_info info;
    void *f = dlsym(RTLD_DEFAULT, "malloc");
    const char *slash;

    if (!f || !dladdr(f, &info) || !info.dli_fname || !*info.dli_fname)
        return "unknown";
    slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

/* ---- lifo and mt2 -------------------------------------------------------- */

#if MB_PER_OBJECT
static inline void
mb_lifo_loop(long n)
{
    for (long i = 0; i < n; i++) {
        void *p = mb_alloc();
        if (!p)
            mb_die("alloc failed");
        mb_touch(p, (uint64_t)i);
        mb_free(p);
    }
}

struct mb_lifo_thread {
    pthread_barrier_t *go;
    long n;
    double ns; /* the median chunk's CPU ns per pair */
};

static void *
mb_lifo_main(void *arg)
{
    struct mb_lifo_thread *t = arg;
    double v[MB_CHUNKS];
    long per = t->n / MB_CHUNKS;

    mb_lifo_loop(MB_WARM);
    pthread_barrier_wait(t->go);
    for (int c = 0; c < MB_CHUNKS; c++) {
        int64_t t0 = mb_thread_cpu();
        mb_lifo_loop(per);
        v[c] = (double)(mb_thread_cpu() - t0) / (double)per;
    }
    t->ns = mb_median(v, MB_CHUNKS);
    return NULL;
}

/* lifo on `threads` threads started together, n pairs each: the mean of
 * the threads' per-pair figures; *mops = all pairs per wall microsecond. */
static double
mb_lifo_threads(int threads, long n, double *mops)
{
    struct mb_lifo_thread t[2];
    pthread_t tid[2];
    pthread_barrier_t go;
    int64_t w0, w1;
    double sum = 0;

    if (threads < 1 || threads > 2)
        mb_die("1 or 2 threads");
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        t[i] = (struct mb_lifo_thread){ .go = &go, .n = n };
        if (pthread_create(&tid[i], NULL, mb_lifo_main, &t[i]) != 0)
            mb_die("pthread_create failed");
    }
    pthread_barrier_wait(&go);
    w0 = mb_wall();
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    w1 = mb_wall();
    pthread_barrier_destroy(&go);
    for (int i = 0; i < threads; i++)
        sum += t[i].ns;
    if (mops)
        *mops = (double)threads * (double)(n / MB_CHUNKS * MB_CHUNKS) /
                ((double)(w1 - w0) / 1000.0);
    return sum / threads;
}

static int
mb_case_lifo(long n)
{
    double mops, ns = mb_lifo_threads(1, n, &mops);
    printf("ns=%.3f wall_ns=%.3f n=%ld\n", ns, 1000.0 / mops, n);
    return 0;
}

/* ---- batch ---------------------------------------------------------------- */

static inline void
mb_batch_once(void **objs, long n)
{
    for (long i = 0; i < n; i++) {
        void *p = mb_alloc();
        if (!p)
            mb_die("alloc failed");
        mb_touch(p, (uint64_t)i);
        objs[i] = p;
    }
    for (long i = 0; i < n; i++)
        mb_free(objs[i]);
}

static int
mb_case_batch(long n, long reps)
{
    void **objs = mb_map((size_t)n * sizeof *objs);
    double *v = mb_map((size_t)reps * sizeof *v);
    long base, full, freed;
    int64_t t0, t1;

    /* Cold: the resident growth around the allocs, untimed for speed. */
    base = mb_resident_kb();
    t0 = mb_thread_cpu();
    for (long i = 0; i < n; i++) {
        void *p = mb_alloc();
        if (!p)
            mb_die("alloc failed");
        mb_touch(p, (uint64_t)i);
        objs[i] = p;
    }
    full = mb_resident_kb();
    for (long i = 0; i < n; i++)
        mb_free(objs[i]);
    t1 = mb_thread_cpu();
    freed = mb_resident_kb();

    for (long r = 0; r < reps; r++) {
        int64_t c0 = mb_thread_cpu();
        mb_batch_once(objs, n);
        v[r] = (double)(mb_thread_cpu() - c0) / (double)n;
    }
    printf("ns=%.3f cold_ns=%.3f bytes_per_obj=%.2f base_kb=%ld full_kb=%ld "
           "free_kb=%ld n=%ld reps=%ld\n",
           mb_median(v, (int)reps), (double)(t1 - t0) / (double)n,
           (double)(full - base) * 1024.0 / (double)n, base, full, freed, n,
           reps);
    return 0;
}

/* ---- trim ------------------------------------------------------------------ */

static int
mb_case_trim(long n)
{
    void **objs = mb_map((size_t)n * sizeof *objs);
    long base, full, freed, trimmed;
    int64_t w0 = 0, w1 = 0;
    char rep_free[256] = "", rep_trim[256] = "";

    base = mb_resident_kb();
    for (long i = 0; i < n; i++) {
        void *p = mb_alloc();
        if (!p)
            mb_die("alloc failed");
        mb_touch(p, (uint64_t)i);
        objs[i] = p;
    }
    full = mb_resident_kb();
    for (long i = 0; i < n; i++)
        mb_free(objs[i]);
    freed = mb_resident_kb();
#if MB_TRIM_REPORT
    mb_trim_report("free", objs, n, rep_free, sizeof rep_free);
#endif
#if MB_TRIM
    w0 = mb_wall();
    mb_trim();
    w1 = mb_wall();
#endif
    trimmed = mb_resident_kb();
#if MB_TRIM_REPORT
    mb_trim_report("trim", objs, n, rep_trim, sizeof rep_trim);
#endif
    printf("base_kb=%ld full_kb=%ld free_kb=%ld trim_kb=%ld "
           "free_retained_kb=%ld trim_retained_kb=%ld trim_ms=%.3f "
           "trim_call=%s n=%ld%s%s\n",
           base, full, freed, trimmed, freed - base, trimmed - base,
           (double)(w1 - w0) / 1e6, MB_TRIM_CALL, n, rep_free, rep_trim);
    return 0;
}
#endif /* MB_PER_OBJECT */

#if MB_PER_OBJECT && MB_THREADS
static int
mb_case_mt2(long n)
{
    double m1, m2, ns1 = mb_lifo_threads(1, n, &m1);
    double ns2 = mb_lifo_threads(2, n, &m2);
    printf("ns=%.3f ns_1t=%.3f mops_1t=%.1f mops_2t=%.1f n=%ld threads=2\n",
           ns2, ns1, m1, m2, n);
    return 0;
}
#endif

static int mb_usage(void);

/* ---- xthread ----------------------------------------------------------------- */

struct mb_ring {
    _Alignas(64) _Atomic size_t head; /* written by the producer */
    _Alignas(64) _Atomic size_t tail; /* written by the consumer */
    _Alignas(64) void *slot[MB_RING];
};

struct mb_xt {
    struct mb_ring ring;
    pthread_barrier_t go;
    long n;
    int cpu[2]; /* the producer's and the consumer's CPU; -1: unpinned */
    int64_t prod_cpu, cons_cpu;
    char *buf; /* xthread_ring: the objects, 2 * MB_RING of them */
};

static inline void
mb_ring_wait(unsigned *spins)
{
    if (++*spins < MB_SPINS) {
        mb_pause();
    } else {
        struct timespec nap = { 0, MB_NAP_NS };
        *spins = 0;
        nanosleep(&nap, NULL);
    }
}

/* The producer and the consumer, with or without the allocator (a
 * constant argument: each thread function below gets its own copy). */
static inline __attribute__((always_inline)) void
mb_xt_produce(struct mb_xt *x, int alloc)
{
    size_t h = 0, published = 0, tail = 0;

    for (long i = 0; i < x->n; i++) {
        void *p;
        unsigned spins = 0;
#if MB_PER_OBJECT && MB_THREADS
        if (alloc) {
            if (!(p = mb_alloc()))
                mb_die("alloc failed");
        } else
#endif
        {
            (void)alloc;
            p = x->buf + (size_t)(i % (2 * MB_RING)) * MB_OBJ;
        }
        mb_touch(p, (uint64_t)i);
        if (h - tail == MB_RING) {
            /* Full as far as we know: publish what we have, then wait. */
            atomic_store_explicit(&x->ring.head, h, memory_order_release);
            published = h;
            while ((tail = atomic_load_explicit(&x->ring.tail,
                                                memory_order_acquire)) +
                       MB_RING ==
                   h)
                mb_ring_wait(&spins);
        }
        x->ring.slot[h % MB_RING] = p;
        if (++h - published == MB_BATCH) {
            atomic_store_explicit(&x->ring.head, h, memory_order_release);
            published = h;
        }
    }
    atomic_store_explicit(&x->ring.head, h, memory_order_release);
}

static inline __attribute__((always_inline)) void
mb_xt_consume(struct mb_xt *x, int alloc)
{
    size_t t = 0, published = 0, head = 0;

    for (long i = 0; i < x->n; i++) {
        void *p;
        unsigned spins = 0;
        if (t == head) {
            /* Empty as far as we know: publish what we took, then wait. */
            atomic_store_explicit(&x->ring.tail, t, memory_order_release);
            published = t;
            while ((head = atomic_load_explicit(&x->ring.head,
                                                memory_order_acquire)) == t)
                mb_ring_wait(&spins);
        }
        p = x->ring.slot[t % MB_RING];
        if (++t - published == MB_BATCH) {
            atomic_store_explicit(&x->ring.tail, t, memory_order_release);
            published = t;
        }
#if MB_PER_OBJECT && MB_THREADS
        if (alloc)
            mb_free(p);
        else
#endif
        {
            (void)alloc;
            __asm__ __volatile__("" : : "r"(p) : "memory");
        }
    }
    atomic_store_explicit(&x->ring.tail, t, memory_order_release);
}

/* Binds the calling thread to cpu (nothing for -1). */
static inline void
mb_pin(int cpu)
{
    cpu_set_t set;

    if (cpu < 0)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
        mb_die("pthread_setaffinity_np failed");
}

/* The first two CPUs this process may run on, in cpu[0] and cpu[1]; 0,
 * or -1 (both left -1) when it may run on fewer than two. */
static inline int
mb_two_cpus(int cpu[2])
{
    cpu_set_t set;
    int k = 0;

    cpu[0] = cpu[1] = -1;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
        if (CPU_ISSET(c, &set))
            cpu[k++] = c;
    if (k < 2) {
        cpu[0] = cpu[1] = -1;
        return -1;
    }
    return 0;
}

/* A thread function running body(x, alloc) and keeping its CPU time in
 * x->field. */
#define MB_XT_THREAD(name, body, alloc, field, side)                        \
    static void *name(void *arg)                                          \
    {                                                                     \
        struct mb_xt *x = arg;                                            \
        int64_t c0;                                                       \
        mb_pin(x->cpu[side]);                                             \
        pthread_barrier_wait(&x->go);                                     \
        c0 = mb_thread_cpu();                                             \
        body(x, alloc);                                                   \
        x->field = mb_thread_cpu() - c0;                                  \
        return NULL;                                                      \
    }
#if MB_PER_OBJECT && MB_THREADS
MB_XT_THREAD(mb_xt_prod_alloc, mb_xt_produce, 1, prod_cpu, 0)
MB_XT_THREAD(mb_xt_cons_alloc, mb_xt_consume, 1, cons_cpu, 1)
#endif
MB_XT_THREAD(mb_xt_prod_ring, mb_xt_produce, 0, prod_cpu, 0)
MB_XT_THREAD(mb_xt_cons_ring, mb_xt_consume, 0, cons_cpu, 1)

/* One run of n objects; *cpu = process CPU over it. */
static void
mb_xt_run(struct mb_xt *x, long n, int alloc, int64_t *cpu, int64_t *wall)
{
    pthread_t p, c;
    int64_t c0, w0;
    void *(*prod)(void *) = mb_xt_prod_ring, *(*cons)(void *) = mb_xt_cons_ring;

#if MB_PER_OBJECT && MB_THREADS
    if (alloc) {
        prod = mb_xt_prod_alloc;
        cons = mb_xt_cons_alloc;
    }
#else
    (void)alloc;
#endif
    atomic_store(&x->ring.head, 0);
    atomic_store(&x->ring.tail, 0);
    x->n = n;
    pthread_barrier_init(&x->go, NULL, 3);
    if (pthread_create(&p, NULL, prod, x) != 0 ||
        pthread_create(&c, NULL, cons, x) != 0)
        mb_die("pthread_create failed");
    c0 = mb_process_cpu();
    w0 = mb_wall();
    pthread_barrier_wait(&x->go);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    *cpu = mb_process_cpu() - c0;
    *wall = mb_wall() - w0;
    pthread_barrier_destroy(&x->go);
}

static int
mb_case_xthread(long n, int alloc, int pin)
{
    struct mb_xt *x = mb_map(sizeof *x);
    int64_t cpu, wall;
    long warm = n / 10 > MB_WARM ? n / 10 : MB_WARM;

    x->buf = mb_map((size_t)2 * MB_RING * MB_OBJ);
    x->cpu[0] = x->cpu[1] = -1;
    if (pin)
        mb_two_cpus(x->cpu);
    mb_xt_run(x, warm, alloc, &cpu, &wall);
    mb_xt_run(x, n, alloc, &cpu, &wall);
    printf("ns=%.3f prod_ns=%.3f cons_ns=%.3f wall_ns=%.3f pinned=%d n=%ld\n",
           (double)cpu / (double)n, (double)x->prod_cpu / (double)n,
           (double)x->cons_cpu / (double)n, (double)wall / (double)n,
           x->cpu[0] >= 0, n);
    return 0;
}

/* xthread's optional last argument: pin (the default) or nopin. */
static int
mb_pin_arg(int argc, char **argv)
{
    if (argc == 3)
        return 1;
    if (argc == 4 && !strcmp(argv[3], "pin"))
        return 1;
    if (argc == 4 && !strcmp(argv[3], "nopin"))
        return 0;
    exit(mb_usage());
}

/* ---- arena ------------------------------------------------------------------ */

#if MB_ARENA
static inline void
mb_arena_cycles(long cycles, long k)
{
    for (long c = 0; c < cycles; c++) {
        for (long i = 0; i < k; i++) {
            void *p = mb_arena_alloc();
            if (!p)
                mb_die("arena alloc failed");
            mb_touch(p, (uint64_t)i);
        }
        mb_arena_reset();
    }
}

static int
mb_case_arena(long cycles, long k)
{
    double v[MB_CHUNKS];
    long per = cycles / MB_CHUNKS;

    if (per < 1)
        per = 1;
    if (mb_arena_begin(k) != 0)
        mb_die("arena set-up failed");
    mb_arena_cycles(1, k);
    for (int c = 0; c < MB_CHUNKS; c++) {
        int64_t t0 = mb_thread_cpu();
        mb_arena_cycles(per, k);
        v[c] = (double)(mb_thread_cpu() - t0) / (double)(per * k);
    }
    printf("ns=%.3f n=%ld k=%ld\n", mb_median(v, MB_CHUNKS),
           per * MB_CHUNKS * k, k);
    return 0;
}
#endif

/* ---- main ------------------------------------------------------------------- */

/* The cases this driver runs, a comma list. */
static const char *
mb_cases(void)
{
    static char list[256];
    snprintf(list, sizeof list, "%s%s%sxthread_ring%s%s",
             MB_PER_OBJECT ? "lifo,batch,trim," : "",
             MB_PER_OBJECT && MB_THREADS ? "mt2,xthread," : "",
             MB_ARENA ? "arena," : "", *MB_EXTRA_CASES ? "," : "",
             MB_EXTRA_CASES);
    return list;
}

/* 1 if c is an item of the comma list l. */
static int
mb_in(const char *c, const char *l)
{
    const char *p = l;
    size_t len = strlen(c);

    while (len && (p = strstr(p, c))) {
        if ((p == l || p[-1] == ',') && (p[len] == ',' || p[len] == '\0'))
            return 1;
        p += len;
    }
    return 0;
}

static int
mb_usage(void)
{
    fprintf(stderr,
            "usage: <driver> cases | lifo N | batch N REPS | mt2 N | "
            "xthread N [pin|nopin] | xthread_ring N [pin|nopin] | "
            "arena CYCLES K | trim N%s%s\n"
            "(bench/peers/peer_mempool_common.h says what each times)\n",
            *MB_EXTRA_CASES ? " | " : "", MB_EXTRA_CASES);
    return 2;
}

static int
mb_main(int argc, char **argv)
{
    const char *c;

    if (argc < 2)
        return mb_usage();
    c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h")) {
        mb_usage();
        return 0;
    }
    if (!strcmp(c, "cases")) {
        printf("cases=%s malloc_from=%s\n", mb_cases(), mb_malloc_from());
        return 0;
    }
    if (!mb_in(c, mb_cases())) {
        if (mb_in(c, "lifo,batch,mt2,xthread,arena,trim")) {
            printf("skip=%s has no %s case\n", MB_IMPL, c);
            return 0;
        }
        return mb_usage();
    }
    if (!strcmp(c, "xthread_ring") && (argc == 3 || argc == 4))
        return mb_case_xthread(mb_arg(argv[2], 1), 0, mb_pin_arg(argc, argv));
    if (mb_init() != 0)
        mb_die("set-up failed");
#if MB_PER_OBJECT
    if (!strcmp(c, "lifo") && argc == 3)
        return mb_case_lifo(mb_arg(argv[2], MB_CHUNKS));
    if (!strcmp(c, "batch") && argc == 4)
        return mb_case_batch(mb_arg(argv[2], 1), mb_arg(argv[3], 1));
    if (!strcmp(c, "trim") && argc == 3)
        return mb_case_trim(mb_arg(argv[2], 1));
#endif
#if MB_PER_OBJECT && MB_THREADS
    if (!strcmp(c, "mt2") && argc == 3)
        return mb_case_mt2(mb_arg(argv[2], MB_CHUNKS));
    if (!strcmp(c, "xthread") && (argc == 3 || argc == 4))
        return mb_case_xthread(mb_arg(argv[2], 1), 1, mb_pin_arg(argc, argv));
#endif
#if MB_ARENA
    if (!strcmp(c, "arena") && argc == 4)
        return mb_case_arena(mb_arg(argv[2], 1), mb_arg(argv[3], 1));
#endif
#if MB_EXTRA
    {
        int rc = mb_extra(argc, argv);
        if (rc >= 0)
            return rc;
    }
#endif
    return mb_usage();
}

#endif /* PEER_MEMPOOL_COMMON_H */
