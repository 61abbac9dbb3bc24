/* examples/threads_map.c - map over a thread pool: results in input order,
 * with one timeout for the whole map.
 *
 *   threads_map
 *
 * map_ordered() below submits every item at once, then hands the results
 * back in the order of the input, whatever order they finish in: it waits
 * for item 0, then item 1, and so on. One overall timeout bounds the whole
 * map: each wait gets what is left of it. When the time is up (or an item
 * fails) it stops there and cancels the rest: queued items never run, and
 * running ones see pk_future_cancel_requested() and stop early. That is
 * what Python's Executor.map(fn, items, timeout=...) does.
 *
 * It shows two runs: one that completes (items finish out of order but
 * are yielded in order), and one with a slow item that makes the map time
 * out.
 *
 * TODO: switch to poolkit's own map (pk_map, being written in lib/) when
 * it lands; map_ordered() is the same algorithm written by hand on
 * threadpool.h and future.h.
 *
 * Exit status: 0 when both runs behave as described, 1 otherwise. */
#include <poolkit/threadpool.h>

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

/* ---- the map ------------------------------------------------------------ */

/* Called for each result, in input order. */
typedef void (*map_each_fn)(void *user, size_t index, const pk_result *res);

struct map_report {
    size_t yielded;        /* results handed to each() */
    size_t never_ran;      /* cancelled while still queued */
    size_t stopped;        /* running when cancelled: asked to stop */
    size_t discarded;      /* finished after the stop: result dropped */
    pk_error err;          /* the failing item's error, if one failed */
};

/* Runs fn(args[i]) for i < n on tp and calls each() with the results in
 * input order. timeout_ms bounds the whole map (PK_WAIT_FOREVER: none).
 * Returns: 0 (all n yielded), PK_ETIMEDOUT (time ran out waiting for item
 * rep->yielded), the error of the first failing item in input order
 * (rep->err says more), or a submit error. Either way no task is left
 * queued, and running ones have been asked to stop. */
static int
map_ordered(pk_threadpool *tp, pk_task_fn fn, void *const *args, size_t n,
            int timeout_ms, map_each_fn each, void *user,
            struct map_report *rep)
{
    pk_future **futs = calloc(n ? n : 1, sizeof *futs);
    uint64_t deadline = 0;
    size_t submitted = 0, i = 0;
    int rc = 0;

    memset(rep, 0, sizeof *rep);
    if (!futs)
        return PK_ENOMEM;
    for (; submitted < n; submitted++) {
        rc = pk_threadpool_submit(tp, fn, args[submitted], &futs[submitted]);
        if (rc) {
            pk_error_set(&rep->err, rc, 0, "submitting item %zu: %s",
                         submitted, pk_strerror(rc));
            break;
        }
    }
    if (timeout_ms != PK_WAIT_FOREVER)
        deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (; rc == 0 && i < submitted; i++) {
        int left = PK_WAIT_FOREVER;
        pk_result res;

        if (timeout_ms != PK_WAIT_FOREVER) {
            uint64_t now = now_ns();
            /* Round up, so a wait never ends just before the deadline. */
            left = now >= deadline
                       ? 0
                       : (int)((deadline - now + 999999) / 1000000);
        }
        rc = pk_future_wait(futs[i], left);
        if (rc == PK_EAGAIN) /* timeout 0 and not finished */
            rc = PK_ETIMEDOUT;
        if (rc)
            break;
        rc = pk_future_result(futs[i], &res);
        if (rc) { /* the item failed (or was cancelled by someone else) */
            pk_future_error(futs[i], &rep->err);
            break;
        }
        each(user, i, &res);
        rep->yielded++;
    }
    /* Stop: cancel item i (unless it is the one that failed) and the rest.
     * pk_future_cancel returns 0 if the task had not started (it never
     * will), PK_EAGAIN if it is running (its cancel flag is raised). */
    for (size_t j = rc == PK_ETIMEDOUT ? i : i + 1; j < submitted; j++) {
        pk_future_state st = pk_future_state_get(futs[j]);
        if (st == PK_FUTURE_DONE || st == PK_FUTURE_FAILED)
            rep->discarded++;
        else if (pk_future_cancel(futs[j]) == 0)
            rep->never_ran++;
        else
            rep->stopped++;
    }
    for (size_t j = 0; j < submitted; j++) {
        pk_error ignored;
        /* A late failure after the stop is part of the outcome the map
         * already returned: mark it read so it is not reported again. */
        if (j > i)
            pk_future_error(futs[j], &ignored);
        pk_future_release(futs[j]);
    }
    free(futs);
    return rc;
}

/* ---- the work ----------------------------------------------------------- */

struct item {
    int value;       /* the input */
    int ms;          /* how long the "work" takes */
    uint64_t t0;     /* when the run started */
    double ready_ms; /* when it finished, from t0 */
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
        if (pk_future_cancel_requested(self))
            return PK_ECANCELED;
        uint64_t step = end - now < 5000000u ? end - now : 5000000u;
        struct timespec ts = { 0, (long)step };
        nanosleep(&ts, NULL);
    }
    sq = malloc(sizeof *sq);
    if (!sq)
        return PK_ENOMEM;
    *sq = (long)it->value * it->value;
    it->ready_ms = (double)(now_ns() - it->t0) / 1e6;
    out->value = sq;
    out->len = sizeof *sq;
    out->free_fn = free;
    return 0;
}

struct printer {
    struct item *items;
    uint64_t t0;
};

static void
print_result(void *user, size_t i, const pk_result *res)
{
    struct printer *p = user;
    printf("  item %zu: %2d\xc2\xb2 = %4ld   ready at %5.1f ms, yielded at "
           "%5.1f ms\n",
           i, p->items[i].value, *(const long *)res->value,
           p->items[i].ready_ms, (double)(now_ns() - p->t0) / 1e6);
}

#define N_ITEMS 10
#define THREADS 4

/* Maps square_slowly over items that take ms[i] each, with timeout_ms.
 * Returns map_ordered's code; *rep gets its report. */
static int
run(pk_threadpool *tp, const int *ms, int timeout_ms, struct map_report *rep)
{
    struct item items[N_ITEMS];
    void *args[N_ITEMS];
    struct printer p = { items, now_ns() };
    uint64_t end;
    int rc;

    for (int i = 0; i < N_ITEMS; i++) {
        items[i] = (struct item){ .value = i + 1, .ms = ms[i], .t0 = p.t0 };
        args[i] = &items[i];
    }
    rc = map_ordered(tp, square_slowly, args, N_ITEMS, timeout_ms,
                     print_result, &p, rep);
    end = now_ns();
    if (rc == 0) {
        printf("  all %zu results in input order after %.1f ms\n",
               rep->yielded, (double)(end - p.t0) / 1e6);
    } else if (rc == PK_ETIMEDOUT) {
        printf("  timed out after %.1f ms waiting for item %zu "
               "(%s)\n", (double)(end - p.t0) / 1e6, rep->yielded,
               pk_err_name(rc));
        printf("  the rest: %zu cancelled before running, %zu asked to "
               "stop while running,\n  %zu finished but dropped\n",
               rep->never_ran, rep->stopped, rep->discarded);
    } else {
        printf("  failed at item %zu: %s (%s)\n", rep->yielded,
               rep->err.msg, pk_err_name(rc));
    }
    return rc;
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
    struct map_report rep;
    pk_threadpool *tp;
    uint64_t t0;
    int rc, ok = 1;

    rc = pk_threadpool_create(&tp, &o);
    if (rc) {
        fprintf(stderr, "threads_map: pk_threadpool_create: %s\n",
                pk_strerror(rc));
        return 1;
    }

    printf("map of %d items on %d threads, timeout 2000 ms:\n", N_ITEMS,
           THREADS);
    rc = run(tp, fast, 2000, &rep);
    ok &= rc == 0 && rep.yielded == N_ITEMS;

    printf("\nthe same map with item 5 taking 5 s, timeout 500 ms:\n");
    rc = run(tp, slow, 500, &rep);
    ok &= rc == PK_ETIMEDOUT && rep.yielded == 5;

    /* The slow item sees its cancel flag within 5 ms, so this is quick. */
    t0 = now_ns();
    pk_threadpool_destroy(tp);
    printf("  pool destroyed %.1f ms later (the slow item stopped "
           "early)\n", (double)(now_ns() - t0) / 1e6);
    if (!ok) {
        fprintf(stderr, "threads_map: a run did not end as expected\n");
        return 1;
    }
    return 0;
}
