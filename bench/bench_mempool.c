/* bench/bench_mempool.c - poolkit's memory pools (issue #14), driven like
 * the mempool peer drivers in bench/peers/ (peer_mempool_malloc.c for the
 * mallocs, peer_mempool_talloc.c, peer_mempool_apr.c) so bench/run.sh can
 * interleave it with them and read every program the same way: one case
 * per run, one line of key=value pairs on stdout. The cases and their
 * loops are bench/peers/peer_mempool_common.h's (`bench_mempool --help`),
 * the same code that times the peers; an object is one pk_mempool_alloc
 * of a pool of 64-byte objects, default options otherwise (no budget,
 * min_idle 0, no idle timeout, the default per-thread cache), freed with
 * pk_mempool_free; the arena is pk_arena (default 64 KiB blocks), reset
 * with pk_arena_reset; the trim case's give-back call is pk_mempool_trim.
 *
 * poolkit's own cases and extra keys:
 *
 *   trim      also reads the pool's own mappings with mincore(2): the
 *             distinct slabs the objects were in (each object's address
 *             rounded down to slab_size: a slab is one mapping aligned to
 *             its size), and before and after the trim how many of them
 *             are still mapped (pool_mapped_*) and how many of their bytes
 *             are resident (pool_resident_kb_*); slabs_trim (the pool's
 *             own count after the trim), stat_resident_kb_trim (the
 *             pool's own figure, pk_mempool_stats.bytes_resident_trim) and
 *             floor_kb (min_idle slabs, which trim keeps: 0 here).
 *   stats <n> <every>
 *             the cost of reading the stats: lifo (alloc, write, free) on
 *             this thread, in 2 x MB_CHUNKS alternating chunks of n /
 *             MB_CHUNKS pairs: plain, and with one pk_mempool_stats_get
 *             after every `every` pairs. ns_plain, ns_stats: the median
 *             chunk of each, CPU ns per pair; stats_get_ns: one
 *             pk_mempool_stats_get alone (10^4 timed). The counters the
 *             stats sum are kept on every alloc and free whether anyone
 *             reads them or not (they cannot be switched off), so their
 *             cost is inside every poolkit figure.
 *   debug <n> the same alternating chunks, release pool against a pool
 *             made with the debug flag (PK_MEMPOOL_DEBUG): ns_release,
 *             ns_debug. Built only when <poolkit/mempool.h> defines
 *             PK_MEMPOOL_DEBUG as a macro; otherwise it prints skip=. */
#define MB_IMPL "poolkit"
#define MB_PER_OBJECT 1
#define MB_THREADS 1
#define MB_ARENA 1
#define MB_TRIM 1
#define MB_TRIM_CALL "pk_mempool_trim"
#define MB_TRIM_REPORT 1
#define MB_EXTRA 1
#define MB_EXTRA_CASES "stats,debug"
#include "peers/peer_mempool_common.h" /* first: it sets _GNU_SOURCE */

#include <poolkit/mempool.h>

/* Timed pk_mempool_stats_get calls for stats_get_ns. */
#define STATS_GET_N 10000

static pk_mempool *g_mp;
static pk_arena *g_arena;

static int
make_pool(pk_mempool **out, unsigned flags)
{
    pk_mempool_options o = { .object_size = MB_OBJ, .flags = flags };
    int rc = pk_mempool_create(out, &o);

    if (rc != 0)
        fprintf(stderr, "pk_mempool_create: %s\n", pk_strerror(rc));
    return rc;
}

static int
mb_init(void)
{
    return make_pool(&g_mp, 0) == 0 ? 0 : -1;
}

static inline void *
mb_alloc(void)
{
    void *p;
    return pk_mempool_alloc(g_mp, &p, 0) == 0 ? p : NULL;
}

static inline void
mb_free(void *p)
{
    (void)pk_mempool_free(g_mp, p);
}

static int
mb_arena_begin(long k)
{
    (void)k;
    return pk_arena_create(&g_arena, NULL, 0) == 0 ? 0 : -1;
}

static inline void *
mb_arena_alloc(void)
{
    void *p;
    return pk_arena_alloc(g_arena, MB_OBJ, 0, &p) == 0 ? p : NULL;
}

static inline void
mb_arena_reset(void)
{
    (void)pk_arena_reset(g_arena);
}

static void
mb_trim(void)
{
    if (pk_mempool_trim(g_mp) != 0)
        mb_die("pk_mempool_trim failed");
}

/* ---- trim: the pool's own mappings --------------------------------------- */

static int
cmp_uptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* The distinct slabs of the trim case's objects, sorted, written over
 * the start of its (dead) pointer array at "free" and read again at
 * "trim": no memory is mapped between the two, so no unmapped slab's
 * address can be taken by a mapping of the bench's own. */
static size_t g_nslabs;

static void
mb_trim_report(const char *when, void **objs, long n, char *out,
               size_t size)
{
    static unsigned char vec[PK_MEMPOOL_SLAB_MAX / 4096];
    size_t page = (size_t)sysconf(_SC_PAGESIZE), k = 0, mapped = 0;
    size_t resident = 0, pages;
    uintptr_t *base = (uintptr_t *)objs, mask;
    pk_mempool_stats st;

    if (pk_mempool_stats_get(g_mp, &st) != 0)
        mb_die("pk_mempool_stats_get failed");
    pages = st.slab_size / page;
    if (pages > sizeof vec)
        mb_die("slab too large for the mincore vector");
    if (!strcmp(when, "free")) {
        /* Consecutive objects mostly share a slab: drop repeats as they
         * come (in place: entry k is written after entry i >= k was
         * read), then sort and drop the rest. */
        mask = ~(uintptr_t)(st.slab_size - 1);
        for (long i = 0; i < n; i++) {
            uintptr_t b = (uintptr_t)objs[i] & mask;
            if (!k || base[k - 1] != b)
                base[k++] = b;
        }
        qsort(base, k, sizeof *base, cmp_uptr);
        g_nslabs = 0;
        for (size_t i = 0; i < k; i++)
            if (!g_nslabs || base[g_nslabs - 1] != base[i])
                base[g_nslabs++] = base[i];
    }
    for (size_t i = 0; i < g_nslabs; i++) {
        if (mincore((void *)base[i], st.slab_size, vec) != 0) {
            if (errno == ENOMEM)
                continue; /* unmapped */
            mb_die("mincore failed");
        }
        mapped++;
        for (size_t j = 0; j < pages; j++)
            resident += vec[j] & 1;
    }
    if (!strcmp(when, "free"))
        snprintf(out, size,
                 " pool_slabs=%zu slab_kb=%zu pool_mapped_free=%zu "
                 "pool_resident_kb_free=%zu",
                 g_nslabs, st.slab_size / 1024, mapped,
                 resident * (page / 1024));
    else
        snprintf(out, size,
                 " pool_mapped_trim=%zu pool_resident_kb_trim=%zu "
                 "stat_resident_kb_trim=%llu slabs_trim=%llu floor_kb=%zu",
                 mapped, resident * (page / 1024),
                 (unsigned long long)(st.bytes_resident_trim / 1024),
                 (unsigned long long)st.slabs, (size_t)0);
}

/* ---- stats and debug: alternating chunks ------------------------------- */

static inline void
lifo_stats_loop(long n, long every, uint64_t *sink)
{
    pk_mempool_stats st;

    for (long done = 0; done < n; done += every) {
        mb_lifo_loop(every);
        if (pk_mempool_stats_get(g_mp, &st) != 0)
            mb_die("pk_mempool_stats_get failed");
        *sink += st.allocated;
    }
}

static int
case_stats(long n, long every)
{
    double plain[MB_CHUNKS], stats[MB_CHUNKS];
    long per = n / MB_CHUNKS / every * every;
    uint64_t sink = 0;
    pk_mempool_stats st;
    int64_t t0;

    if (per < every)
        per = every;
    mb_lifo_loop(MB_WARM);
    for (int c = 0; c < MB_CHUNKS; c++) {
        t0 = mb_thread_cpu();
        mb_lifo_loop(per);
        plain[c] = (double)(mb_thread_cpu() - t0) / (double)per;
        t0 = mb_thread_cpu();
        lifo_stats_loop(per, every, &sink);
        stats[c] = (double)(mb_thread_cpu() - t0) / (double)per;
    }
    t0 = mb_thread_cpu();
    for (int i = 0; i < STATS_GET_N; i++) {
        if (pk_mempool_stats_get(g_mp, &st) != 0)
            mb_die("pk_mempool_stats_get failed");
        sink += st.allocated;
    }
    printf("ns_plain=%.3f ns_stats=%.3f stats_get_ns=%.1f every=%ld n=%ld "
           "sink=%llu\n",
           mb_median(plain, MB_CHUNKS), mb_median(stats, MB_CHUNKS),
           (double)(mb_thread_cpu() - t0) / STATS_GET_N, every,
           per * MB_CHUNKS, (unsigned long long)(sink & 1));
    return 0;
}

static int
case_debug(long n)
{
#ifdef PK_MEMPOOL_DEBUG
    double rel[MB_CHUNKS], dbg[MB_CHUNKS];
    long per = n / MB_CHUNKS;
    pk_mempool *release = g_mp, *debug;
    int64_t t0;

    if (make_pool(&debug, PK_MEMPOOL_DEBUG) != 0)
        return 1;
    g_mp = debug;
    mb_lifo_loop(MB_WARM);
    g_mp = release;
    mb_lifo_loop(MB_WARM);
    for (int c = 0; c < MB_CHUNKS; c++) {
        g_mp = release;
        t0 = mb_thread_cpu();
        mb_lifo_loop(per);
        rel[c] = (double)(mb_thread_cpu() - t0) / (double)per;
        g_mp = debug;
        t0 = mb_thread_cpu();
        mb_lifo_loop(per);
        dbg[c] = (double)(mb_thread_cpu() - t0) / (double)per;
    }
    g_mp = release;
    pk_mempool_destroy(debug);
    printf("ns_release=%.3f ns_debug=%.3f n=%ld\n", mb_median(rel, MB_CHUNKS),
           mb_median(dbg, MB_CHUNKS), per * MB_CHUNKS);
#else
    (void)n;
    printf("skip=pk_mempool_options has no debug flag in this build "
           "(poolkit/mempool.h defines no PK_MEMPOOL_DEBUG macro)\n");
#endif
    return 0;
}

static int
mb_extra(int argc, char **argv)
{
    if (!strcmp(argv[1], "stats") && argc == 4)
        return case_stats(mb_arg(argv[2], MB_CHUNKS), mb_arg(argv[3], 1));
    if (!strcmp(argv[1], "debug") && argc == 3)
        return case_debug(mb_arg(argv[2], MB_CHUNKS));
    return -1;
}

int
main(int argc, char **argv)
{
    int rc = mb_main(argc, argv);

    pk_arena_destroy(g_arena);
    pk_mempool_destroy(g_mp);
    return rc;
}
