/* bench/bench_procpool.c - poolkit's process pool against Python's
 * concurrent.futures.ProcessPoolExecutor (bench/peers/peer_procpool.py,
 * run with /usr/bin/python3 between poolkit's own runs), in interleaved
 * rounds.
 *
 * Cases (each prints `procpool.<case> key=value ...`; ratio = Python's
 * time / poolkit's, above 1 poolkit ahead; medians over the rounds):
 *   roundtrip  one tiny task at a time on one worker: submit, wait; wall
 *              us per task (poolkit: pk_procpool_submit + pk_future_get)
 *   many       20000 tiny tasks submitted at once to 2 workers, then all
 *              waited for: wall us per task
 *   map        pk_map over the pool's executor, 100000 tiny items, one
 *              task each, against executor.map with chunksize 100
 *              (Python's answer to many small tasks); and map_chunked:
 *              the same map with pk_map's chunk option 100 (a
 *              PK_TASK_CHUNK task carries 100 items, each with its own
 *              outcome, as chunksize does)
 *   big        one task given 64 MiB: poolkit copying the bytes over the
 *              socket, poolkit with the bytes in its shared region
 *              (PK_TASK_SHARED: only the pointer travels), and Python
 *              pickling them; wall ms per task
 * Wall time, not CPU: the work is in other processes. Workers are forked
 * and warmed before the clock runs, on both sides. The tiny task returns
 * its 4-byte argument plus one, on both sides, so the figures are the
 * pools' and not the languages'; a chunk returns one result per item,
 * as executor.map does.
 *
 * Usage: bench_procpool [--rounds N] [--case NAME[,NAME...]] */
#define _GNU_SOURCE
#include <poolkit/procpool.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"
#define PEER "bench/peers/peer_procpool.py"
#define ROUNDTRIPS 2000
#define MANY 20000
#define MAP_N 100000
#define CHUNK 100
#define BIG_MIB 64
#define MAX_ROUNDS 64

static int rounds = 5;

static void
die(const char *what, int rc)
{
    fprintf(stderr, "bench_procpool: %s: %s\n", what, pk_strerror(rc));
    exit(1);
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(const double *v, int n)
{
    double s[MAX_ROUNDS];

    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return s[n / 2];
}

/* ---- the tasks ----------------------------------------------------------- */

static uint32_t
work(uint32_t x)
{
    return x + 1;
}

static int
ret_u32(uint32_t v, pk_result *out)
{
    uint32_t *p = malloc(sizeof *p);

    if (!p)
        return PK_ENOMEM;
    *p = v;
    out->value = p;
    out->len = sizeof *p;
    out->free_fn = free;
    return 0;
}

static int
t_work(const void *data, size_t len, pk_future *self, pk_result *out,
       pk_error *err)
{
    uint32_t x = 0;

    (void)self;
    (void)err;
    if (len == sizeof x)
        memcpy(&x, data, sizeof x);
    return ret_u32(work(x), out);
}

static int
t_length(const void *data, size_t len, pk_future *self, pk_result *out,
         pk_error *err)
{
    const volatile unsigned char *p = data;
    uint32_t touch = 0;

    (void)self;
    (void)err;
    for (size_t i = 0; i < len; i += 4096)
        touch += p[i]; /* the task looks at its input */
    return ret_u32((uint32_t)len + (touch & 0), out);
}

static pk_registry *reg;

static pk_procpool *
make_pool(size_t workers, size_t shared)
{
    pk_procpool *pp;
    pk_future *f[8];
    int rc = pk_procpool_create(
        &pp, &(pk_procpool_options){ .registry = reg,
                                     .min_workers = workers,
                                     .max_workers = workers,
                                     .queue_size = MANY,
                                     .max_result = 1 << 20,
                                     .shared_size = shared });

    if (rc)
        die("pk_procpool_create", rc);
    for (int i = 0; i < 8; i++) { /* warm: forked, first task run */
        uint32_t x = (uint32_t)i;
        if ((rc = pk_procpool_submit(pp, "work", &x, sizeof x, &f[i])) != 0)
            die("submit", rc);
    }
    for (int i = 0; i < 8; i++) {
        if ((rc = pk_future_get(f[i], 10000, NULL, NULL)) != 0)
            die("warm-up task", rc);
        pk_future_release(f[i]);
    }
    return pp;
}

static void
get(pk_future *f)
{
    int rc = pk_future_get(f, 60000, NULL, NULL);

    if (rc)
        die("task", rc);
    pk_future_release(f);
}

/* ---- poolkit's side ------------------------------------------------------- */

static double
pk_roundtrip(void)
{
    pk_procpool *pp = make_pool(1, 0);
    double chunk[5];

    for (int c = 0; c < 5; c++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < ROUNDTRIPS / 5; i++) {
            uint32_t x = (uint32_t)i;
            pk_future *f;
            int rc = pk_procpool_submit(pp, "work", &x, sizeof x, &f);
            if (rc)
                die("submit", rc);
            get(f);
        }
        chunk[c] = (double)(now_ns() - t0) / (ROUNDTRIPS / 5) / 1e3;
    }
    pk_procpool_destroy(pp);
    return median(chunk, 5);
}

static double
pk_many(void)
{
    pk_procpool *pp = make_pool(2, 0);
    pk_future **f = malloc(MANY * sizeof *f);
    uint64_t t0;

    if (!f)
        die("malloc", PK_ENOMEM);
    t0 = now_ns();
    for (int i = 0; i < MANY; i++) {
        uint32_t x = (uint32_t)i;
        int rc = pk_procpool_submit(pp, "work", &x, sizeof x, &f[i]);
        if (rc)
            die("submit", rc);
    }
    for (int i = 0; i < MANY; i++)
        get(f[i]);
    t0 = now_ns() - t0;
    free(f);
    pk_procpool_destroy(pp);
    return (double)t0 / MANY / 1e3;
}

struct map_in {
    uint32_t next, n;
    uint32_t *args;
};

static int
map_next(void *user, pk_task *t)
{
    struct map_in *in = user;

    if (in->next >= in->n)
        return 1;
    t->name = "work";
    t->data = &in->args[in->next];
    t->len = sizeof *in->args;
    in->next++;
    return 0;
}

/* pk_map over the pool: MAP_N items, chunk of them in each task. */
static double
pk_map_items(size_t chunk)
{
    pk_procpool *pp = make_pool(2, 0);
    struct map_in in = { 0, MAP_N, malloc(MAP_N * sizeof(uint32_t)) };
    pk_map_options o = { .chunk = chunk };
    pk_executor *ex;
    pk_map *m;
    pk_result r;
    uint64_t t0;
    int rc;

    if (!in.args)
        die("malloc", PK_ENOMEM);
    for (uint32_t i = 0; i < MAP_N; i++)
        in.args[i] = i;
    if ((rc = pk_procpool_executor(pp, &ex)) != 0)
        die("pk_procpool_executor", rc);
    t0 = now_ns();
    if ((rc = pk_map_create(&m, ex, map_next, &in, &o)) != 0)
        die("pk_map_create", rc);
    while ((rc = pk_map_next(m, &r, NULL, NULL)) == 0)
        r.free_fn(r.value);
    if (rc != 1)
        die("pk_map_next", rc);
    t0 = now_ns() - t0;
    pk_map_destroy(m);
    pk_executor_destroy(ex);
    pk_procpool_destroy(pp);
    free(in.args);
    return (double)t0 / MAP_N / 1e3;
}

/* One task given BIG_MIB MiB, copied or in the shared region: ms. */
static double
pk_big(int shared)
{
    size_t n = (size_t)BIG_MIB << 20;
    pk_procpool *pp = make_pool(1, shared ? n : 0);
    void *data = NULL;
    size_t size;
    double runs[3];

    if (shared)
        pk_procpool_shared(pp, &data, &size);
    else
        data = calloc(1, n);
    if (!data)
        die("calloc", PK_ENOMEM);
    for (int i = 0; i < 3; i++) {
        pk_future *f;
        uint64_t t0 = now_ns();
        int rc = pk_procpool_submit_task(
            pp, &(pk_task){ .name = "length", .data = data, .len = n,
                            .flags = shared ? PK_TASK_SHARED : 0 },
            &f);
        if (rc)
            die("submit", rc);
        get(f);
        runs[i] = (double)(now_ns() - t0) / 1e6;
    }
    if (!shared)
        free(data);
    pk_procpool_destroy(pp);
    return median(runs, 3);
}

/* ---- Python's side ---------------------------------------------------- */

static int have_python;

/* Runs the peer with args; returns its ns= figure, or -1. */
static double
python(const char *args)
{
    char cmd[512], line[512];
    FILE *p;
    double ns = -1;

    snprintf(cmd, sizeof cmd, "%s %s %s", PYTHON, PEER, args);
    p = popen(cmd, "r");
    if (!p)
        return -1;
    while (fgets(line, sizeof line, p))
        if (!strncmp(line, "ns=", 3))
            ns = atof(line + 3);
    if (pclose(p) != 0)
        return -1;
    return ns;
}

/* ---- cases -------------------------------------------------------------- */

/* Prints one comparison: poolkit's and Python's medians in unit, and
 * the median of the per-round ratios (Python / poolkit). */
static void
report(const char *name, const char *unit, const double *pk,
       const double *py)
{
    double ratio[MAX_ROUNDS];

    printf("procpool.%s poolkit_%s_med=%.2f", name, unit, median(pk, rounds));
    if (!have_python) {
        printf(" python=skip(no %s or %s) rounds=%d\n", PYTHON, PEER,
               rounds);
        return;
    }
    for (int r = 0; r < rounds; r++)
        ratio[r] = py[r] / pk[r];
    printf(" python_%s_med=%.2f ratio=%.2f rounds=%d\n", unit,
           median(py, rounds), median(ratio, rounds), rounds);
}

static void
progress(const char *c, int r)
{
    fprintf(stderr, "\rbench_procpool: %-10s round %d/%d ", c, r + 1, rounds);
}

static void
case_roundtrip(void)
{
    double pk[MAX_ROUNDS], py[MAX_ROUNDS];
    char a[64];

    snprintf(a, sizeof a, "roundtrip %d", ROUNDTRIPS);
    for (int r = 0; r < rounds; r++) {
        progress("roundtrip", r);
        pk[r] = pk_roundtrip();
        py[r] = have_python ? python(a) / 1e3 : 0;
    }
    fprintf(stderr, "\n");
    report("roundtrip", "us", pk, py);
}

static void
case_many(void)
{
    double pk[MAX_ROUNDS], py[MAX_ROUNDS];
    char a[64];

    snprintf(a, sizeof a, "many %d 2", MANY);
    for (int r = 0; r < rounds; r++) {
        progress("many", r);
        pk[r] = pk_many();
        py[r] = have_python ? python(a) / 1e3 : 0;
    }
    fprintf(stderr, "\n");
    report("many", "us", pk, py);
}

static void
case_map(void)
{
    double pk[MAX_ROUNDS], pkc[MAX_ROUNDS], py[MAX_ROUNDS];
    char a[64];

    snprintf(a, sizeof a, "map %d 2 %d", MAP_N, CHUNK);
    for (int r = 0; r < rounds; r++) {
        progress("map", r);
        pk[r] = pk_map_items(1);
        pkc[r] = pk_map_items(CHUNK);
        py[r] = have_python ? python(a) / 1e3 : 0;
    }
    fprintf(stderr, "\n");
    report("map", "us", pk, py);
    report("map_chunked", "us", pkc, py);
}

static void
case_big(void)
{
    double pk[MAX_ROUNDS], pks[MAX_ROUNDS], py[MAX_ROUNDS];
    char a[64];

    snprintf(a, sizeof a, "big %d", BIG_MIB);
    for (int r = 0; r < rounds; r++) {
        progress("big", r);
        pk[r] = pk_big(0);
        pks[r] = pk_big(1);
        py[r] = have_python ? python(a) / 1e6 : 0;
    }
    fprintf(stderr, "\n");
    report("big_copy", "ms", pk, py);
    report("big_shared", "ms", pks, py);
}

static const struct {
    const char *name;
    void (*run)(void);
} cases[] = {
    { "roundtrip", case_roundtrip },
    { "many", case_many },
    { "map", case_map },
    { "big", case_big },
};

static int
wanted(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *only = NULL;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--case") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_procpool [--rounds N] [--case "
                            "roundtrip,many,map,big]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = 5;
    have_python = access(PYTHON, X_OK) == 0 && access(PEER, R_OK) == 0;
    if ((rc = pk_registry_create(&reg)) != 0 ||
        (rc = pk_registry_register(reg, "work", t_work)) != 0 ||
        (rc = pk_registry_register(reg, "length", t_length)) != 0)
        die("registry", rc);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!only || wanted(only, cases[i].name))
            cases[i].run();
    pk_registry_destroy(reg);
    return 0;
}
