/* examples/threads_map.c - map over a thread pool with pk_map: results in
 * input order, with one timeout for the whole map.
 *
 *   threads_map
 *
 * pk_map_create() reads the items through a next function and submits
 * them to the pool's executor (pk_threadpool_executor); pk_map_next()
 * hands the results back in the order of the input, whatever order they
 * finish in (order PK_MAP_ORDERED). The map's timeout_ms option bounds the
 * whole map, from pk_map_create(): once it has passed, a pk_map_next()
 * that would wait returns PK_ETIMEDOUT (with index PK_MAP_NO_INDEX: an
 * error of the map, not of an item) and the map cancels the rest: queued
 * items never run, and running ones see pk_future_cancel_requested() and
 * stop early. pk_map_destroy() waits for them. That is what Python's
 * Executor.map(fn, items, timeout=...) does.
 *
 * It shows two runs: one that completes (items finish out of order but
 * are yielded in order), and one with a slow item that makes the map time
 * out; the slow item notices the cancellation and stops.
 *
 * Exit status: 0 when both runs behave as described, 1 otherwise. */
#include <poolkit/threadpool.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

/* ---- the work ----------------------------------------------------------- */

/* What became of an item; written by the worker that ran it, read after
 * pk_map_destroy() (which waits for every running task). */
enum item_fate { NOT_STARTED, FINISHED, STOPPED };

struct item {
    int value;        /* the input */
    int ms;           /* how long the "work" takes */
    uint64_t t0;      /* when the run started */
    double ready_ms;  /* when it finished, from t0 */
    _Atomic int fate; /* enum item_fate */
};

/* A pk_task_fn: "works" for item->ms (sleeping in 5 ms slices, checking
 * for cancellation between them), then returns value squared. */
static int
square_slowly(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct item *it = arg;
    uint64_t end = now_ns() + (uint64_t)it->ms * 1000000u;
    long *sq;

    (void)err;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        if (pk_future_cancel_requested(self)) {
            it->ready_ms = ms_since(it->t0);
            atomic_store(&it->fate, STOPPED);
            return PK_ECANCELED;
        }
        uint64_t step = end - now < 5000000u ? end - now : 5000000u;
        struct timespec ts = { 0, (long)step };
        nanosleep(&ts, NULL);
    }
    sq = malloc(sizeof *sq);
    if (!sq)
        return PK_ENOMEM;
    *sq = (long)it->value * it->value;
    it->ready_ms = ms_since(it->t0);
    atomic_store(&it->fate, FINISHED);
    out->value = sq;
    out->len = sizeof *sq;
    out->free_fn = free;
    return 0;
}

#define N_ITEMS 10
#define THREADS 4

/* The map's input: the items, one by one. */
struct input {
    struct item *items;
    size_t i;
};

static int
next_item(void *user, pk_task *task)
{
    struct input *in = user;

    if (in->i == N_ITEMS)
        return 1; /* no more input */
    task->fn = square_slowly;
    task->arg = &in->items[in->i++];
    return 0;
}

struct outcome {
    int rc;             /* 0, or how the map ended */
    size_t yielded;     /* results handed out, in input order */
    size_t failed;      /* items that failed (none should) */
    size_t not_started, stopped, dropped; /* the rest, after the end */
};

/* Maps square_slowly over items that take ms[i] each, with timeout_ms for
 * the whole map, printing each result as pk_map_next() yields it. */
static void
run(pk_executor *ex, const int *ms, int timeout_ms, struct outcome *oc)
{
    struct item items[N_ITEMS];
    struct input in = { items, 0 };
    uint64_t t0 = now_ns();
    pk_map_options o;
    pk_map *m;
    int rc;

    memset(oc, 0, sizeof *oc);
    for (int i = 0; i < N_ITEMS; i++) {
        items[i] = (struct item){ .value = i + 1, .ms = ms[i], .t0 = t0 };
        atomic_init(&items[i].fate, NOT_STARTED);
    }
    memset(&o, 0, sizeof o);
    o.order = PK_MAP_ORDERED;
    o.timeout_ms = timeout_ms;
    /* Each item is many ms of work: one executor task per item, so they
     * run side by side (automatic chunking would find the same). */
    o.chunk = 1;
    rc = pk_map_create(&m, ex, next_item, &in, &o);
    if (rc) {
        printf("  pk_map_create: %s\n", pk_strerror(rc));
        oc->rc = rc;
        return;
    }

    for (;;) {
        pk_result res;
        pk_error err;
        size_t i;

        pk_error_clear(&err);
        rc = pk_map_next(m, &res, &i, &err);
        if (rc == 1) { /* every item was delivered */
            rc = 0;
            printf("  all %zu results in input order after %.1f ms\n",
                   oc->yielded, ms_since(t0));
            break;
        }
        if (rc < 0 && i == PK_MAP_NO_INDEX) { /* the map itself ended */
            printf("  map ended after %.1f ms, waiting for item %zu: %s "
                   "(%s)\n", ms_since(t0), oc->yielded, err.msg,
                   pk_err_name(rc));
            break;
        }
        if (rc < 0) { /* this item failed; the map goes on */
            printf("  item %zu failed: %s (%s)\n", i,
                   err.msg[0] ? err.msg : pk_strerror(rc), pk_err_name(rc));
            oc->failed++;
            continue;
        }
        printf("  item %zu: %2d\xc2\xb2 = %4ld   ready at %5.1f ms, yielded at "
               "%5.1f ms\n",
               i, items[i].value, *(const long *)res.value,
               items[i].ready_ms, ms_since(t0));
        if (res.free_fn)
            res.free_fn(res.value);
        oc->yielded++;
    }
    oc->rc = rc;

    /* Cancels what is left (nothing, after a complete run) and waits for
     * running items: the slow one sees its cancel flag within 5 ms. */
    uint64_t d0 = now_ns();
    pk_map_destroy(m);
    double destroy_ms = ms_since(d0);

    for (size_t j = oc->yielded + oc->failed; j < N_ITEMS; j++) {
        switch (atomic_load(&items[j].fate)) {
        case NOT_STARTED: oc->not_started++; break;
        case STOPPED: oc->stopped++; break;
        default: oc->dropped++; break;
        }
    }
    if (rc != 0) {
        printf("  the rest: %zu cancelled before running, %zu stopped "
               "early when asked,\n  %zu finished but dropped\n",
               oc->not_started, oc->stopped, oc->dropped);
        for (size_t j = oc->yielded + oc->failed; j < N_ITEMS; j++)
            if (atomic_load(&items[j].fate) == STOPPED)
                printf("  item %zu (%d ms of work) stopped at %.1f ms\n", j,
                       items[j].ms, items[j].ready_ms);
        printf("  pk_map_destroy took %.1f ms (it waits for running "
               "items)\n", destroy_ms);
    }
}

int
main(void)
{
    /* Items finish out of order (item 0 is the slowest of the fast run). */
    static const int fast[N_ITEMS] = { 120, 20, 60, 30, 90, 10, 50, 40, 70,
                                       30 };
    static const int slow[N_ITEMS] = { 120, 20, 60, 30, 90, 5000, 50, 40,
                                       70, 30 };
    pk_threadpool_options o = { .min_threads = THREADS,
                                .max_threads = THREADS };
    struct outcome oc;
    pk_threadpool *tp;
    pk_executor *ex;
    uint64_t t0;
    int rc, ok = 1;

    rc = pk_threadpool_create(&tp, &o);
    if (rc == 0) {
        rc = pk_threadpool_executor(tp, &ex);
        if (rc)
            pk_threadpool_destroy(tp);
    }
    if (rc) {
        fprintf(stderr, "threads_map: making the pool: %s\n",
                pk_strerror(rc));
        return 1;
    }

    printf("ordered map of %d items on %d threads, timeout 2000 ms:\n",
           N_ITEMS, THREADS);
    run(ex, fast, 2000, &oc);
    ok &= oc.rc == 0 && oc.yielded == N_ITEMS && oc.failed == 0;

    printf("\nthe same map with item 5 taking 5 s, timeout 500 ms:\n");
    t0 = now_ns();
    run(ex, slow, 500, &oc);
    /* Items 0-4 are yielded, the map times out waiting for item 5, and
     * item 5 stops early when cancelled (well before its 5 s). */
    ok &= oc.rc == PK_ETIMEDOUT && oc.yielded == 5 && oc.failed == 0 &&
          oc.stopped == 1 && ms_since(t0) < 2000;

    pk_executor_destroy(ex); /* the view only */
    t0 = now_ns();
    pk_threadpool_destroy(tp);
    printf("\npool destroyed in %.1f ms\n", ms_since(t0));
    if (!ok) {
        fprintf(stderr, "threads_map: a run did not end as expected\n");
        return 1;
    }
    return 0;
}
