/* examples/mempool_objects.c - constructed objects reused across requests:
 * a pk_mempool with a constructor, a destructor and an on-alloc hook.
 *
 *   mempool_objects [THREADS [REQUESTS]]    default 4 threads, 20000 each
 *
 * A server hands each request a "request context": a 4 KiB buffer that
 * must start zeroed, a mutex, and a CRC-32 table built at setup (standing
 * in for any setup work: compiling a pattern, sizing tables). Making one
 * costs about half a microsecond on a 2020s x86 core, ten times what a
 * request does with it. Made per request (malloc, construct, use, destruct,
 * free), that cost is paid every time; from a pk_mempool, the constructor
 * runs once per object when its slab is mapped, the destructor when the
 * slab is unmapped, and a request only pays for on_alloc, which resets
 * the few fields a request changes (the buffer's used bytes are cleared
 * by the request that wrote them, so the buffer stays zeroed).
 *
 * THREADS threads each serve REQUESTS requests one way, then the other;
 * the two ways alternate for three rounds and the median round is shown.
 * It prints how many constructions served how many requests, the CPU
 * time per request both ways, and the pool's stats.
 *
 * Exit status: 0 when every response was right and every constructed
 * object was destructed, 1 otherwise. */
#include <poolkit/mempool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define ROUNDS 3

/* ---- the request context ------------------------------------------------ */

struct req_ctx {
    pthread_mutex_t lock;  /* made by the constructor, not per request */
    uint32_t crc[256];     /* the setup work: a CRC-32 table */
    unsigned long request; /* reset by on_alloc */
    size_t len;            /* bytes of buf in use; reset by on_alloc */
    char buf[4096];        /* all zero between requests */
};

/* What the hooks count; the pool's user pointer. */
struct counts {
    atomic_ulong constructed;
    atomic_ulong destructed;
};

static void
crc_table(uint32_t t[256])
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
}

/* The constructor: what making a context costs. */
static int
ctx_construct(void *user, void *obj)
{
    struct counts *n = user;
    struct req_ctx *c = obj;

    memset(c->buf, 0, sizeof c->buf);
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        return PK_ECREATE;
    crc_table(c->crc);
    c->request = 0;
    c->len = 0;
    atomic_fetch_add_explicit(&n->constructed, 1, memory_order_relaxed);
    return 0;
}

static void
ctx_destruct(void *user, void *obj)
{
    struct counts *n = user;
    struct req_ctx *c = obj;

    pthread_mutex_destroy(&c->lock);
    atomic_fetch_add_explicit(&n->destructed, 1, memory_order_relaxed);
}

/* on_alloc: a context handed to a request starts with no state of the
 * request before it. */
static void
ctx_reset(void *user, void *obj)
{
    struct req_ctx *c = obj;

    (void)user;
    c->request = 0;
    c->len = 0;
}

static uint32_t
crc32_of(const uint32_t t[256], const char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--)
        c = t[(c ^ (unsigned char)*p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* A request's use of its context: writes the request into the buffer,
 * checksums it, clears the bytes it wrote. Returns 0 when the context
 * came clean and the answer is right. */
static int
serve(struct req_ctx *c, unsigned long request, uint32_t *sum)
{
    static const uint32_t crc_123456789 = 0xcbf43926u; /* the check value */
    int n;

    if (c->len != 0 || c->request != 0 || c->buf[0] != 0)
        return -1; /* state left over from another request */
    if (crc32_of(c->crc, "123456789", 9) != crc_123456789)
        return -1; /* the table was not built */
    pthread_mutex_lock(&c->lock);
    c->request = request;
    n = snprintf(c->buf, sizeof c->buf,
                 "GET /items/%lu HTTP/1.1\r\nHost: example\r\n\r\n", request);
    c->len = (size_t)n;
    *sum += crc32_of(c->crc, c->buf, c->len);
    memset(c->buf, 0, c->len); /* hand the buffer back zeroed */
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* ---- the two ways --------------------------------------------------------- */

/* Each on its own cache lines (the alignment), so that one thread's
 * writes do not slow its neighbour's. */
struct worker {
    _Alignas(64) pthread_t thread;
    pk_mempool *mp; /* NULL: a context made per request */
    /* The hooks' counts when this thread makes its own contexts: one per
     * thread, so that counting does not bounce a shared cache line. */
    struct counts made;
    unsigned long first, n; /* requests first .. first + n - 1 */
    uint32_t sum;           /* checksum of every response */
    int failed;
    double cpu_ns;          /* this thread's CPU time for its requests */
};

static double
thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double
wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One request with a context made for it and unmade after it. */
static int
request_made(struct worker *w, unsigned long r)
{
    struct req_ctx *c = malloc(sizeof *c);
    int bad;

    if (!c || ctx_construct(&w->made, c) != 0) {
        free(c);
        return -1;
    }
    bad = serve(c, r, &w->sum);
    ctx_destruct(&w->made, c);
    free(c);
    return bad;
}

/* One request with a context from the pool. */
static int
request_pooled(struct worker *w, unsigned long r)
{
    struct req_ctx *c;
    int bad, rc = pk_mempool_alloc(w->mp, (void **)&c, 1000);

    if (rc != 0) {
        fprintf(stderr, "pk_mempool_alloc: %s\n", pk_strerror(rc));
        return -1;
    }
    bad = serve(c, r, &w->sum);
    pk_mempool_free(w->mp, c);
    return bad;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    double t0 = thread_cpu_ns();

    for (unsigned long r = w->first; r < w->first + w->n && !w->failed; r++)
        w->failed = w->mp ? request_pooled(w, r) : request_made(w, r);
    w->cpu_ns = thread_cpu_ns() - t0;
    return NULL;
}

struct run {
    double cpu_per_request; /* ns, summed over threads */
    double wall_ms;
    uint32_t sum;
    int failed;
};

/* Serves threads * per_thread requests, with contexts from mp or (mp
 * NULL) made per request. */
static struct run
run_requests(pk_mempool *mp, struct counts *made, int threads,
             unsigned long per_thread)
{
    static struct worker w[MAX_THREADS];
    struct run res = { 0, 0, 0, 0 };
    double cpu = 0, t0 = wall_ns();
    int started = 0;

    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){ .mp = mp,
                                .first = 1 + (unsigned long)i * per_thread,
                                .n = per_thread };
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            res.failed = 1;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        cpu += w[i].cpu_ns;
        res.sum += w[i].sum;
        res.failed |= w[i].failed;
        if (made) {
            made->constructed += w[i].made.constructed;
            made->destructed += w[i].made.destructed;
        }
    }
    res.wall_ms = (wall_ns() - t0) / 1e6;
    res.cpu_per_request = cpu / ((double)threads * (double)per_thread);
    return res;
}

/* ---- main ------------------------------------------------------------------ */

static int
cmp_run(const void *a, const void *b)
{
    double x = ((const struct run *)a)->cpu_per_request;
    double y = ((const struct run *)b)->cpu_per_request;
    return (x > y) - (x < y);
}

static void
print_stats(pk_mempool *mp, const char *when)
{
    pk_mempool_stats st;

    if (pk_mempool_stats_get(mp, &st) != 0)
        return;
    printf("pool stats %s:\n"
           "  allocated %llu, freed %llu, live %llu, peak %llu\n"
           "  slabs %llu (%llu empty), %llu bytes mapped; slabs ever "
           "mapped %llu, unmapped %llu\n"
           "  object %zu bytes (stride %zu), %zu per %zu-byte slab, "
           "cache %zu per thread\n",
           when, (unsigned long long)st.allocated,
           (unsigned long long)st.freed, (unsigned long long)st.live,
           (unsigned long long)st.peak, (unsigned long long)st.slabs,
           (unsigned long long)st.slabs_empty,
           (unsigned long long)st.bytes_mapped,
           (unsigned long long)st.slabs_mapped,
           (unsigned long long)st.slabs_unmapped, st.object_size,
           st.stride, st.objects_per_slab, st.slab_size, st.cache_size);
}

int
main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long per_thread = argc > 2 ? atol(argv[2]) : 20000;
    struct counts pooled = { 0, 0 }, made = { 0, 0 };
    struct run rp[ROUNDS], rm[ROUNDS];
    unsigned long requests;
    pk_mempool *mp;
    int rc, failed = 0;

    if (threads < 1 || threads > MAX_THREADS || per_thread < 1) {
        fprintf(stderr, "usage: mempool_objects [THREADS (1-%d) "
                        "[REQUESTS per thread]]\n", MAX_THREADS);
        return 2;
    }
    rc = pk_mempool_create(&mp, &(pk_mempool_options){
        .object_size = sizeof(struct req_ctx),
        .ctor = ctx_construct, .dtor = ctx_destruct, /* per slab */
        .on_alloc = ctx_reset,                       /* per request */
        .user = &pooled });
    if (rc != 0) {
        fprintf(stderr, "pk_mempool_create: %s\n", pk_strerror(rc));
        return 1;
    }
    requests = (unsigned long)threads * (unsigned long)per_thread;
    printf("%d threads, %lu requests each way per round, %d rounds; a "
           "context is %zu bytes\n\n", threads, requests, ROUNDS,
           sizeof(struct req_ctx));

    /* Alternate the ways, so a busy moment of the machine does not land
     * on one of them only. */
    for (int i = 0; i < ROUNDS; i++) {
        rp[i] = run_requests(mp, NULL, threads, (unsigned long)per_thread);
        rm[i] = run_requests(NULL, &made, threads, (unsigned long)per_thread);
        failed |= rp[i].failed | rm[i].failed;
        if (rp[i].sum != rm[i].sum) {
            fprintf(stderr, "round %d: the two ways answered differently\n",
                    i + 1);
            failed = 1;
        }
    }
    qsort(rp, ROUNDS, sizeof rp[0], cmp_run);
    qsort(rm, ROUNDS, sizeof rm[0], cmp_run);

    printf("constructions: %lu for %lu pooled requests (a context made "
           "per request: %lu)\n",
           atomic_load(&pooled.constructed), requests * ROUNDS,
           atomic_load(&made.constructed));
    printf("CPU per request, made per request: %8.0f ns  (wall %.1f ms a "
           "round)\n", rm[ROUNDS / 2].cpu_per_request,
           rm[ROUNDS / 2].wall_ms);
    printf("CPU per request, from the pool:    %8.0f ns  (wall %.1f ms a "
           "round)\n", rp[ROUNDS / 2].cpu_per_request,
           rp[ROUNDS / 2].wall_ms);
    printf("the pool serves a request %.1fx faster (median of %d rounds)\n\n",
           rm[ROUNDS / 2].cpu_per_request / rp[ROUNDS / 2].cpu_per_request,
           ROUNDS);

    /* The workers have exited: their caches went back to the slabs. */
    print_stats(mp, "after the runs");
    pk_mempool_trim(mp);
    print_stats(mp, "after pk_mempool_trim");
    pk_mempool_destroy(mp);
    printf("\ndestructions: %lu of %lu constructed contexts\n",
           atomic_load(&pooled.destructed), atomic_load(&pooled.constructed));

    if (atomic_load(&pooled.destructed) != atomic_load(&pooled.constructed))
        failed = 1;
    if (failed)
        fprintf(stderr, "mempool_objects: FAILED\n");
    return failed ? 1 : 0;
}
