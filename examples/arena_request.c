/* examples/arena_request.c - one arena per request, freed at once, as web
 * servers do (nginx's and Apache's request pools).
 *
 *   arena_request [REQUESTS]    default 20000
 *
 * Each request parses a raw HTTP request into many small allocations of
 * varied sizes: the request line's parts, the query's keys and values,
 * each header's name (and a lower-case copy) and value, the cookies. It
 * "opens" the file it serves (a fake descriptor) and a compression state
 * (a malloc'd thing from some library), both closed by cleanups
 * registered on the arena; renders its response headers in a child arena
 * (a sub-task's scratch: one string per line, then joined into the
 * parent); and one request in 64 uploads an 80 KiB body, larger than a
 * block, which gets a block of its own. At the end, pk_arena_reset frees
 * all of it at once, destroys the child and runs the cleanups, but keeps
 * the first block for the next request.
 *
 * The same code runs with malloc: every allocation malloc'd and freed
 * one by one at the end of the request, the cleanups' work done by hand.
 * The two ways alternate for three rounds; the median round is shown,
 * as CPU time per request and per allocation, with the arena's stats in
 * the middle of a request and at the end.
 *
 * Exit status: 0 when both ways produced the same responses and every
 * descriptor and compression state was closed, 1 otherwise. */
#include <poolkit/mempool.h>

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 3
#define TEXTS 64            /* distinct raw requests, used in turn */
#define BODY_SIZE (80 << 10) /* the upload of one request in TEXTS */
#define MAX_ALLOCS 512      /* per request, for the malloc way */
#define CHILD_BLOCK 1024    /* the child arena's block size */

/* ---- where a request's memory comes from --------------------------------- */

/* The arena, or (arena NULL) malloc with every pointer remembered so the
 * end of the request can free it. */
struct mem {
    pk_arena *arena;
    void *ptrs[MAX_ALLOCS];
    size_t n;
    unsigned long allocs;   /* allocations made, both ways */
    size_t smallest, largest; /* their sizes */
};

static void *
mem_alloc(struct mem *m, size_t size)
{
    void *p = NULL;

    m->allocs++;
    if (size < m->smallest)
        m->smallest = size;
    if (size > m->largest)
        m->largest = size;
    if (m->arena) {
        if (pk_arena_alloc(m->arena, size, 0, &p) != 0)
            return NULL;
        return p;
    }
    if (m->n == MAX_ALLOCS)
        return NULL;
    p = malloc(size);
    if (p)
        m->ptrs[m->n++] = p;
    return p;
}

static char *
mem_strndup(struct mem *m, const char *s, size_t n)
{
    char *d = mem_alloc(m, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void
mem_free_all(struct mem *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->ptrs[i]);
    m->n = 0;
}

/* ---- what the cleanups close --------------------------------------------- */

struct server {
    int next_fd;
    long fds_open;        /* fake descriptors not closed yet */
    long states_open;     /* compression states not freed yet */
    char trace[128];      /* the first request's cleanups, in order */
    int tracing;
};

struct fake_file {
    struct server *srv;
    int fd;
};

static void
close_file(void *arg)
{
    struct fake_file *f = arg;
    f->srv->fds_open--;
    if (f->srv->tracing) {
        size_t n = strlen(f->srv->trace);
        snprintf(f->srv->trace + n, sizeof f->srv->trace - n,
                 "%sclose fd %d", n ? ", then " : "", f->fd);
    }
}

/* A library's state, malloc'd by the library and freed by its own call. */
struct gzip_state {
    struct server *srv;
    unsigned char window[256];
};

static void
free_gzip(void *arg)
{
    struct gzip_state *g = arg;
    g->srv->states_open--;
    if (g->srv->tracing) {
        size_t n = strlen(g->srv->trace);
        snprintf(g->srv->trace + n, sizeof g->srv->trace - n,
                 "%sfree the gzip state", n ? ", then " : "");
    }
    free(g);
}

/* ---- the request ---------------------------------------------------------- */

struct kv {
    const char *key, *value;
    struct kv *next;
};

struct header {
    const char *name, *lower, *value;
    struct header *next;
};

struct request {
    const char *method, *path, *version;
    struct kv *query, *cookies;
    struct header *headers;
    size_t nheaders;
    char *body;
    struct fake_file *file;
    struct gzip_state *gzip;
    char *response;
};

/* Splits s[0..n) on sep into keys and values split on '=', pushed on
 * *list. Returns 0, or -1 without memory. */
static int
parse_pairs(struct mem *m, const char *s, size_t n, const char *sep,
            struct kv **list)
{
    size_t seplen = strlen(sep);

    while (n > 0) {
        const char *end = s, *eq;
        struct kv *kv;
        while (end < s + n && strncmp(end, sep, seplen) != 0)
            end++;
        eq = memchr(s, '=', (size_t)(end - s));
        kv = mem_alloc(m, sizeof *kv);
        if (!kv)
            return -1;
        kv->key = mem_strndup(m, s, (size_t)((eq ? eq : end) - s));
        kv->value = eq ? mem_strndup(m, eq + 1, (size_t)(end - eq - 1))
                       : mem_strndup(m, "", 0);
        if (!kv->key || !kv->value)
            return -1;
        kv->next = *list;
        *list = kv;
        if (end == s + n)
            break;
        n -= (size_t)(end - s) + seplen;
        s = end + seplen;
    }
    return 0;
}

static int
parse_request_line(struct mem *m, struct request *q, const char *s,
                   size_t n)
{
    const char *sp1 = memchr(s, ' ', n), *sp2, *qm;

    if (!sp1)
        return -1;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(s + n - sp1 - 1));
    if (!sp2)
        return -1;
    qm = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    q->method = mem_strndup(m, s, (size_t)(sp1 - s));
    q->path = mem_strndup(m, sp1 + 1, (size_t)((qm ? qm : sp2) - sp1 - 1));
    q->version = mem_strndup(m, sp2 + 1, (size_t)(s + n - sp2 - 1));
    if (!q->method || !q->path || !q->version)
        return -1;
    return qm ? parse_pairs(m, qm + 1, (size_t)(sp2 - qm - 1), "&",
                            &q->query)
              : 0;
}

static int
parse_header(struct mem *m, struct request *q, const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n), *v;
    struct header *h;
    char *lower;

    if (!colon)
        return -1;
    v = colon + 1;
    while (v < s + n && *v == ' ')
        v++;
    h = mem_alloc(m, sizeof *h);
    if (!h)
        return -1;
    h->name = mem_strndup(m, s, (size_t)(colon - s));
    h->value = mem_strndup(m, v, (size_t)(s + n - v));
    lower = mem_strndup(m, s, (size_t)(colon - s));
    if (!h->name || !h->value || !lower)
        return -1;
    for (char *c = lower; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    h->lower = lower;
    h->next = q->headers;
    q->headers = h;
    q->nheaders++;
    if (strcmp(lower, "cookie") == 0)
        return parse_pairs(m, h->value, strlen(h->value), "; ",
                           &q->cookies);
    return 0;
}

/* Parses text (lines ending in \r\n, an empty one last). */
static int
parse(struct mem *m, struct request *q, const char *text)
{
    const char *s = text;
    int first = 1;

    for (;;) {
        const char *eol = strstr(s, "\r\n");
        if (!eol)
            return -1;
        if (eol == s)
            return 0;
        if (first ? parse_request_line(m, q, s, (size_t)(eol - s))
                  : parse_header(m, q, s, (size_t)(eol - s)))
            return -1;
        first = 0;
        s = eol + 2;
    }
}

/* A formatted string in m's memory. */
static char *
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
mem_printf(struct mem *m, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    s = mem_alloc(m, (size_t)n + 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* The sub-task: one string per response header line in sub (a child
 * arena, or the request's own malloc list), joined into the response in
 * m. */
static int
render(struct mem *m, struct mem *sub, struct request *q)
{
    enum { LINES = 8 };
    char *line[LINES];
    size_t len[LINES], total = 0;
    unsigned long nq = 0, nc = 0;
    char *out;

    for (struct kv *kv = q->query; kv; kv = kv->next)
        nq++;
    for (struct kv *kv = q->cookies; kv; kv = kv->next)
        nc++;
    line[0] = mem_printf(sub, "%s 200 OK\r\n", q->version);
    line[1] = mem_printf(sub, "Server: arena_request\r\n");
    line[2] = mem_printf(sub, "X-Path: %s\r\n", q->path);
    line[3] = mem_printf(sub, "X-Headers: %zu\r\n", q->nheaders);
    line[4] = mem_printf(sub, "X-Query: %lu\r\n", nq);
    line[5] = mem_printf(sub, "X-Cookies: %lu\r\n", nc);
    line[6] = mem_printf(sub, "X-Fd: %d\r\n", q->file->fd);
    line[7] = mem_printf(sub, "\r\n");
    for (int i = 0; i < LINES; i++) {
        if (!line[i])
            return -1;
        len[i] = strlen(line[i]);
        total += len[i];
    }
    out = mem_alloc(m, total + 1);
    if (!out)
        return -1;
    q->response = out;
    for (int i = 0; i < LINES; i++) {
        memcpy(out, line[i], len[i]);
        out += len[i];
    }
    *out = '\0';
    return 0;
}

/* Opens the fake file and the gzip state; with an arena, registers
 * their cleanups on it. */
static int
open_things(struct server *srv, struct mem *m, struct request *q)
{
    q->file = mem_alloc(m, sizeof *q->file);
    if (!q->file)
        return -1;
    q->file->srv = srv;
    q->file->fd = srv->next_fd++;
    srv->fds_open++;
    if (m->arena && pk_arena_cleanup_add(m->arena, close_file, q->file)) {
        close_file(q->file);
        return -1;
    }
    q->gzip = malloc(sizeof *q->gzip);
    if (!q->gzip)
        return -1;
    q->gzip->srv = srv;
    memset(q->gzip->window, 0, sizeof q->gzip->window);
    srv->states_open++;
    if (m->arena && pk_arena_cleanup_add(m->arena, free_gzip, q->gzip)) {
        free_gzip(q->gzip);
        return -1;
    }
    return 0;
}

static uint64_t
fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3u;
    return h;
}

/* Serves one request into *q with memory from m (the arena's or
 * malloc), and sub (a child arena, or m again) for the sub-task. Adds
 * the response's hash to *digest. Frees nothing: the end of the request
 * does, all at once. */
static int
handle(struct server *srv, struct mem *m, struct mem *sub, const char *text,
       int upload, struct request *q, uint64_t *digest)
{
    memset(q, 0, sizeof *q);
    if (parse(m, q, text) != 0 || open_things(srv, m, q) != 0)
        return -1;
    if (upload) {
        q->body = mem_alloc(m, BODY_SIZE); /* larger than a block */
        if (!q->body)
            return -1;
        memset(q->body, 'x', BODY_SIZE);
    }
    if (render(m, sub, q) != 0)
        return -1;
    *digest = fnv1a(*digest, q->response);
    return 0;
}

/* ---- the raw requests ------------------------------------------------------ */

static char texts[TEXTS][1024];

static void
make_texts(void)
{
    static const char *const method[] = { "GET", "GET", "POST", "PUT" };
    static const char *const extra[] = {
        "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n",
        "Accept-Language: en-GB,en;q=0.7,fr;q=0.3\r\n",
        "Referer: https://www.example.com/search?q=pooling+in+c\r\n",
        "Cache-Control: no-cache\r\n",
        "Authorization: Bearer 4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a99\r\n",
        "X-Forwarded-For: 203.0.113.7, 198.51.100.23\r\n",
    };
    for (int i = 0; i < TEXTS; i++) {
        char *p = texts[i];
        size_t left = sizeof texts[i];
        int n = snprintf(p, left,
                         "%s /shop/items/%d?id=%d&lang=en&page=%d%s "
                         "HTTP/1.1\r\nHost: shop.example.com\r\n"
                         "User-Agent: Mozilla/5.0 (X11; Linux x86_64) "
                         "arena_request/%d\r\nAccept-Encoding: gzip\r\n"
                         "Cookie: session=%08x; theme=dark; seen=%d\r\n",
                         method[i % 4], i * 37, i, i % 5,
                         i % 3 ? "&sort=price&dir=asc" : "", i,
                         0x9e3779b9u * (unsigned)(i + 1), i % 7);
        p += n;
        left -= (size_t)n;
        for (int k = 0; k < i % 7; k++) {
            n = snprintf(p, left, "%s", extra[(i + k) % 6]);
            p += n;
            left -= (size_t)n;
        }
        snprintf(p, left, "\r\n");
    }
}

/* ---- the two ways ----------------------------------------------------------- */

struct run {
    double cpu_per_request; /* ns */
    unsigned long allocs;
    size_t smallest, largest;
    uint64_t digest;
    int failed;
};

static double
cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void
print_arena(const char *when, pk_arena *a)
{
    pk_arena_stats st;

    if (pk_arena_stats_get(a, &st) != 0)
        return;
    printf("  %-34s used %6zu B, reserved %6zu B, blocks %zu (large %zu), "
           "children %zu, resets %llu\n",
           when, st.used, st.reserved, st.blocks, st.large, st.children,
           (unsigned long long)st.resets);
}

/* The end of a request with malloc: what the arena's reset does, by
 * hand. */
static void
end_malloc(struct mem *m, struct request *q)
{
    if (q->gzip)
        free_gzip(q->gzip);
    if (q->file)
        close_file(q->file);
    mem_free_all(m);
}

/* requests requests, each in the arena (reset after it), or with malloc
 * (arena NULL). show: print the arena's stats in the first upload. */
static struct run
run_requests(struct server *srv, pk_arena *arena, long requests, int show)
{
    static struct mem m, sub; /* MAX_ALLOCS pointers: off the stack */
    struct run res = { .digest = 0xcbf29ce484222325u };
    struct request q;
    double t0 = cpu_ns();

    srv->next_fd = 3; /* the same descriptors, so the same responses */
    m.arena = arena;
    m.n = m.allocs = sub.n = sub.allocs = 0;
    m.smallest = sub.smallest = SIZE_MAX;
    m.largest = sub.largest = 0;
    for (long r = 0; r < requests && !res.failed; r++) {
        int upload = r % TEXTS == TEXTS - 1;

        srv->tracing = show && r == 0;
        if (!arena) {
            res.failed = handle(srv, &m, &m, texts[r % TEXTS], upload, &q,
                                &res.digest);
            end_malloc(&m, &q);
            continue;
        }
        /* The sub-task's child arena: freed by the parent's reset. */
        if (pk_arena_create(&sub.arena, arena, CHILD_BLOCK) != 0) {
            res.failed = 1;
            break;
        }
        res.failed = handle(srv, &m, &sub, texts[r % TEXTS], upload, &q,
                            &res.digest);
        if (show && upload) {
            print_arena("in an upload, before its reset:", arena);
            show = 0;
        }
        pk_arena_reset(arena); /* the child, the cleanups, the memory */
    }
    res.cpu_per_request = (cpu_ns() - t0) / (double)requests;
    res.allocs = m.allocs + sub.allocs;
    res.smallest = m.smallest < sub.smallest ? m.smallest : sub.smallest;
    res.largest = m.largest > sub.largest ? m.largest : sub.largest;
    return res;
}

static int
cmp_run(const void *a, const void *b)
{
    double x = ((const struct run *)a)->cpu_per_request;
    double y = ((const struct run *)b)->cpu_per_request;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    long requests = argc > 1 ? atol(argv[1]) : 20000;
    struct server srv = { .next_fd = 3 };
    struct run ra[ROUNDS], rm[ROUNDS];
    pk_arena *arena;
    int rc, failed = 0;

    if (requests < TEXTS) {
        fprintf(stderr, "usage: arena_request [REQUESTS (at least %d)]\n",
                TEXTS);
        return 2;
    }
    make_texts();
    rc = pk_arena_create(&arena, NULL, 0); /* 64 KiB blocks */
    if (rc != 0) {
        fprintf(stderr, "pk_arena_create: %s\n", pk_strerror(rc));
        return 1;
    }
    printf("the request arena (64 KiB blocks; a child of %d-byte blocks "
           "per request):\n", CHILD_BLOCK);
    print_arena("new:", arena);
    for (int i = 0; i < ROUNDS; i++) {
        ra[i] = run_requests(&srv, arena, requests, i == 0);
        if (i == 0)
            printf("  the first request's reset ran: %s\n", srv.trace);
        rm[i] = run_requests(&srv, NULL, requests, 0);
        failed |= ra[i].failed | rm[i].failed;
        if (ra[i].digest != rm[i].digest) {
            fprintf(stderr, "round %d: the two ways answered differently\n",
                    i + 1);
            failed = 1;
        }
    }
    print_arena("after the last request's reset:", arena);
    printf("  descriptors still open: %ld, gzip states not freed: %ld\n\n",
           srv.fds_open, srv.states_open);
    failed |= srv.fds_open != 0 || srv.states_open != 0;

    qsort(ra, ROUNDS, sizeof ra[0], cmp_run);
    qsort(rm, ROUNDS, sizeof rm[0], cmp_run);
    struct run *a = &ra[ROUNDS / 2], *m = &rm[ROUNDS / 2];
    printf("%ld requests each way per round, %.1f allocations a request "
           "(%zu to %zu bytes: one request in %d uploads a body)\n",
           requests, (double)a->allocs / (double)requests, a->smallest,
           a->largest, TEXTS);
    printf("CPU per request, malloc + free each: %6.0f ns\n",
           m->cpu_per_request);
    printf("CPU per request, arena + reset:      %6.0f ns\n",
           a->cpu_per_request);
    printf("the arena saves %.0f ns a request (%.1f ns an allocation), "
           "%.2fx faster\n(median of %d rounds; parsing and rendering, the "
           "same both ways, included)\n",
           m->cpu_per_request - a->cpu_per_request,
           (m->cpu_per_request - a->cpu_per_request) * (double)requests /
               (double)a->allocs,
           m->cpu_per_request / a->cpu_per_request, ROUNDS);

    pk_arena_destroy(arena);
    if (failed)
        fprintf(stderr, "arena_request: FAILED\n");
    return failed ? 1 : 0;
}
