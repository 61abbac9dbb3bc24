/* tests/stress/stress_threadpool.c - sixteen threads, random operations,
 * one thread pool at a time.
 *
 * Sixteen threads draw operations from a seeded PRNG (PK_SEED replays the
 * per-thread sequences; the seed is printed): submit fire-and-forget,
 * submit with a future, submit_many, a task that submits children to the
 * same pool and waits on them (depth <= 3), cancel, wait with a 0-2 ms
 * timeout, wait_any / wait_all, dropping a future unread, resize (1..4
 * threads; now and then the next thread starts fail),
 * a stats snapshot, and, in three epochs of four, one thread's
 * shutdown DRAIN or CANCEL with a short timeout near its end while the
 * others keep submitting. One task in ten fails; some tasks honour a cancel request. The operation count is 10^6
 * scaled by PK_STRESS_SCALE, split over epochs: each epoch has a fresh
 * pool, and when its operations are done the main thread shuts it down
 * (DRAIN) and checks:
 *   - every task ran at most once; a task whose cancel returned 0 never
 *     ran; a fire-and-forget task ran unless a CANCEL shutdown happened;
 *   - every future reached a terminal state exactly once (on_complete
 *     counts), and its state matches what the task did;
 *   - stats: submitted = accepted tasks = completed + failed + cancelled,
 *     completed / failed match what the tasks returned, rejected matches
 *     the refused submits, queued = running = 0;
 *   - PK_EVENT_FUTURE_UNREAD fired once per failure nobody read (a
 *     fire-and-forget task that failed, or that a CANCEL shutdown
 *     dropped).
 * At the end pk__alloc_live() is back where it started.
 *
 * Threads and tasks never call cmocka: they count violations (keeping the
 * first message), and the main thread asserts. A watchdog thread aborts,
 * printing the seed, after 60 s (times PK_TEST_TIMEOUT_MULT) without
 * progress. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poolkit/threadpool.h>

#include "alloc.h"
#include "prng.h"
#include "violations.h"

#define N_THREADS 16
#define BASE_OPS 1000000.0
#define MAX_HELD 8
#define MAX_MANY 8
#define MAX_DEPTH 3

static atomic_ulong progress; /* anything that moved: ops, task runs */

/* ---- task records ----------------------------------------------------- */

/* One per submitted task; malloc'd (not pk__alloc), freed per epoch. */
struct rec {
    struct rec *next;          /* the owner's list */
    struct epoch *ep;
    unsigned depth;            /* > 0: submits children */
    bool fail;                 /* returns PK_ETASK */
    bool coop;                 /* returns PK_ECANCELED if asked */
    bool has_future;
    bool accepted;             /* submit returned 0 */
    bool cancel_ok;            /* pk_future_cancel returned 0 */
    atomic_bool unread;        /* its future was released unread */
    atomic_int runs;
    atomic_int ret;            /* what the task returned */
    atomic_int completions;    /* on_complete calls */
    atomic_int final_state;
    uint64_t salt;
};

struct epoch {
    pk_threadpool *tp;
    atomic_int cancel_shutdown; /* a CANCEL shutdown happened */
    atomic_ulong rejected;      /* tasks refused by submit */
    atomic_ulong unread_events;
    atomic_ulong child_recs;    /* records made by tasks */
    pthread_mutex_t child_lock; /* the list of records made by tasks */
    struct rec *children;
};

static struct rec *
rec_new(struct epoch *ep, unsigned depth, uint64_t salt)
{
    struct rec *r = calloc(1, sizeof *r);

    if (!r) {
        fprintf(stderr, "stress_threadpool: out of memory\n");
        abort();
    }
    r->ep = ep;
    r->depth = depth;
    r->salt = salt;
    r->fail = pk_prng_hash(salt) % 10 == 0;
    r->coop = pk_prng_hash(salt ^ 0x55) % 4 == 0;
    return r;
}

static void
on_done(void *arg, pk_future *f)
{
    struct rec *r = arg;

    atomic_store(&r->final_state, (int)pk_future_state_get(f));
    atomic_fetch_add(&r->completions, 1);
}

static void
on_event(void *user, const pk_event *ev)
{
    struct epoch *ep = user;

    if (ev->kind == PK_EVENT_FUTURE_UNREAD)
        atomic_fetch_add(&ep->unread_events, 1);
}

static int task_fn(void *arg, pk_future *self, pk_result *out,
                   pk_error *err);

/* Submits r with a future (if with_future), registering on_done. */
static int
submit_rec(pk_threadpool *tp, struct rec *r, bool with_future,
           pk_future **f)
{
    int rc;
    pk_task t = { .fn = task_fn, .arg = r };
    r->has_future = with_future;
    rc = pk_threadpool_submit_task(tp, &t, with_future ? f : NULL);
    if (rc == 0) {
        r->accepted = true;
        if (with_future && pk_future_on_complete(*f, on_done, r) != 0)
            violation("on_complete failed");
    } else {
        if (rc != PK_ESHUTDOWN && rc != PK_ETIMEDOUT && rc != PK_EAGAIN &&
            rc != PK_EFULL)
            violation("submit returned %s", pk_err_name(rc));
        if (with_future && *f)
            violation("a refused submit left a future");
        atomic_fetch_add(&r->ep->rejected, 1);
    }
    return rc;
}

static void
add_child_rec(struct epoch *ep, struct rec *c)
{
    pthread_mutex_lock(&ep->child_lock);
    c->next = ep->children;
    ep->children = c;
    pthread_mutex_unlock(&ep->child_lock);
}

static int
task_fn(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct rec *r = arg;
    int ret = 0;

    if (atomic_fetch_add(&r->runs, 1) != 0)
        violation("a task ran twice");
    if (r->has_future != (self != NULL))
        violation("a task ran with%s a future it was submitted with%s",
                  self ? "" : "out", r->has_future ? "" : "out");
    atomic_fetch_add_explicit(&progress, 1, memory_order_relaxed);
    if (r->depth > 0) {
        /* Children on the same pool, waited on (help or park). */
        unsigned n = 1 + (unsigned)(r->salt % 2);
        pk_future *cf[2] = { NULL, NULL };
        struct rec *cr[2] = { NULL, NULL };
        for (unsigned i = 0; i < n; i++) {
            cr[i] = rec_new(r->ep, r->depth - 1, pk_prng_hash(r->salt + i));
            add_child_rec(r->ep, cr[i]);
            submit_rec(r->ep->tp, cr[i], true, &cf[i]);
        }
        for (unsigned i = 0; i < n; i++) {
            if (!cf[i])
                continue;
            int rc = pk_future_wait(cf[i], PK_WAIT_FOREVER);
            if (rc && rc != PK_EDEADLK)
                violation("a nested wait returned %s", pk_err_name(rc));
            if (rc == PK_EDEADLK)
                violation("a nested wait without a cycle got PK_EDEADLK");
            if (rc == 0 && pk_future_state_get(cf[i]) < PK_FUTURE_DONE)
                violation("a waited child is not finished");
            (void)pk_future_result(cf[i], NULL); /* read */
            pk_future_release(cf[i]);
        }
    } else if (r->salt % 64 == 0) {
        sched_yield();
    }
    if (r->coop && self && pk_future_cancel_requested(self))
        ret = PK_ECANCELED;
    else if (r->fail)
        ret = pk_error_set(err, PK_ETASK, 0, "injected task failure");
    else
        out->value = (void *)(uintptr_t)r->salt;
    atomic_store(&r->ret, ret);
    return ret;
}

/* ---- the threads -------------------------------------------------------- */

struct held {
    pk_future *f;
    struct rec *r;
};

struct worker {
    pthread_t tid;
    int idx;
    struct epoch *ep;
    pk_prng rng;
    unsigned long ops;
    struct held held[MAX_HELD];
    int n_held;
    struct rec *recs;          /* every record this thread made */
    pk_threadpool_stats last;  /* for monotonicity */
    atomic_ulong done_ops;
    atomic_int last_op;
    unsigned long counts[16];
    unsigned long shutdown_at;  /* op index of this thread's shutdown, or
                                   ULONG_MAX */
};

enum { OP_FF, OP_FUT, OP_MANY, OP_NESTED, OP_CANCEL, OP_WAIT, OP_WAIT_ANY,
       OP_WAIT_ALL, OP_DROP, OP_RESIZE, OP_STATS, OP_SHUTDOWN, OP_N };

static struct rec *
my_rec(struct worker *w, unsigned depth)
{
    struct rec *r = rec_new(w->ep, depth, pk_prng_next(&w->rng));

    r->next = w->recs;
    w->recs = r;
    return r;
}

static void
hold(struct worker *w, pk_future *f, struct rec *r)
{
    w->held[w->n_held].f = f;
    w->held[w->n_held].r = r;
    w->n_held++;
}

/* Checks a finished held future against its record, then lets it go
 * (read, or unread). */
static void
let_go(struct worker *w, int i, bool read)
{
    struct held h = w->held[i];
    pk_future_state s = pk_future_state_get(h.f);

    w->held[i] = w->held[--w->n_held];
    if (read && s >= PK_FUTURE_DONE) {
        int rc = pk_future_result(h.f, NULL);
        if (s == PK_FUTURE_DONE && rc != 0)
            violation("done future: result %s", pk_err_name(rc));
        if (s == PK_FUTURE_FAILED && rc != PK_ETASK)
            violation("failed future: result %s", pk_err_name(rc));
        if (s == PK_FUTURE_CANCELLED && rc != PK_ECANCELED)
            violation("cancelled future: result %s", pk_err_name(rc));
    } else {
        atomic_store(&h.r->unread, true);
    }
    pk_future_release(h.f);
}

static void
do_submit_one(struct worker *w, bool with_future, unsigned depth)
{
    struct rec *r = my_rec(w, depth);
    pk_future *f = NULL;

    if (with_future && w->n_held == MAX_HELD)
        let_go(w, 0, pk_prng_chance(&w->rng, 700));
    if (submit_rec(w->ep->tp, r, with_future, &f) == 0 && with_future)
        hold(w, f, r);
}

static void
do_many(struct worker *w)
{
    size_t n = 1 + (size_t)pk_prng_below(&w->rng, MAX_MANY);
    bool futs = pk_prng_chance(&w->rng, 500);
    pk_task t[MAX_MANY];
    pk_future *f[MAX_MANY];
    struct rec *r[MAX_MANY];
    int rc;

    while (futs && w->n_held + (int)n > MAX_HELD)
        let_go(w, 0, true);
    for (size_t i = 0; i < n; i++) {
        r[i] = my_rec(w, 0);
        r[i]->has_future = futs;
        t[i] = (pk_task){ .fn = task_fn, .arg = r[i] };
        f[i] = (pk_future *)&f; /* must be cleared on failure */
    }
    rc = pk_threadpool_submit_many(w->ep->tp, t, n, futs ? f : NULL);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            r[i]->accepted = true;
            if (futs) {
                if (pk_future_on_complete(f[i], on_done, r[i]) != 0)
                    violation("on_complete failed");
                hold(w, f[i], r[i]);
            }
        }
        return;
    }
    if (rc != PK_ESHUTDOWN && rc != PK_ETIMEDOUT && rc != PK_EAGAIN &&
        rc != PK_EFULL)
        violation("submit_many returned %s", pk_err_name(rc));
    for (size_t i = 0; futs && i < n; i++)
        if (f[i])
            violation("a refused submit_many left a future");
    atomic_fetch_add(&w->ep->rejected, n);
}

static void
do_wait(struct worker *w)
{
    int i = (int)pk_prng_below(&w->rng, (uint64_t)w->n_held);
    int t = (int)pk_prng_below(&w->rng, 3);
    int rc = pk_future_wait(w->held[i].f, t);

    if (rc == 0) {
        if (pk_future_state_get(w->held[i].f) < PK_FUTURE_DONE)
            violation("wait returned 0 on an unfinished future");
        let_go(w, i, true);
    } else if (rc != PK_ETIMEDOUT && rc != PK_EAGAIN) {
        violation("wait returned %s", pk_err_name(rc));
    }
}

static void
do_wait_many(struct worker *w, bool all)
{
    pk_future *fs[MAX_HELD];
    size_t idx = 99;
    int rc;

    for (int i = 0; i < w->n_held; i++)
        fs[i] = w->held[i].f;
    if (all) {
        rc = pk_future_wait_all(fs, (size_t)w->n_held, 5);
        if (rc == 0) {
            for (int i = 0; i < w->n_held; i++)
                if (pk_future_state_get(fs[i]) < PK_FUTURE_DONE)
                    violation("wait_all returned 0 with one unfinished");
            while (w->n_held)
                let_go(w, w->n_held - 1, true);
        }
    } else {
        rc = pk_future_wait_any(fs, (size_t)w->n_held, 1, &idx);
        if (rc == 0) {
            if (idx >= (size_t)w->n_held ||
                pk_future_state_get(fs[idx]) < PK_FUTURE_DONE)
                violation("wait_any: index %zu not finished", idx);
            else
                let_go(w, (int)idx, true);
        }
    }
    if (rc && rc != PK_ETIMEDOUT && rc != PK_EAGAIN)
        violation("wait_%s returned %s", all ? "all" : "any",
                  pk_err_name(rc));
}

static void
do_cancel(struct worker *w)
{
    int i = (int)pk_prng_below(&w->rng, (uint64_t)w->n_held);
    int rc = pk_future_cancel(w->held[i].f);

    if (rc == 0) {
        w->held[i].r->cancel_ok = true;
        if (pk_future_state_get(w->held[i].f) != PK_FUTURE_CANCELLED)
            violation("cancel returned 0, state not cancelled");
    } else if (rc != PK_EAGAIN) {
        violation("cancel returned %s", pk_err_name(rc));
    }
}

static void
do_stats(struct worker *w)
{
    pk_threadpool_stats st;
    pk_threadpool_stats *p = &w->last;
    int rc = pk_threadpool_stats_get(w->ep->tp, &st);

    if (rc) {
        violation("stats returned %s", pk_err_name(rc));
        return;
    }
    /* max is 4; workers retired by a shrinking resize count until their
     * threads exit, so a few more may show for a moment: 16 catches
     * runaway spawning. */
    if (st.threads > 16)
        violation("stats: %zu threads, max is 4", st.threads);
    if (st.submitted < p->submitted || st.completed < p->completed ||
        st.failed < p->failed || st.cancelled < p->cancelled ||
        st.rejected < p->rejected)
        violation("stats: a counter went down");
    *p = st;
}

static void
do_shutdown(struct worker *w)
{
    bool cancel = pk_prng_chance(&w->rng, 500);
    int rc = pk_threadpool_shutdown(w->ep->tp,
                                    cancel ? PK_SHUTDOWN_CANCEL
                                           : PK_SHUTDOWN_DRAIN,
                                    (int)pk_prng_below(&w->rng, 3));

    if (cancel)
        atomic_store(&w->ep->cancel_shutdown, 1);
    if (rc && rc != PK_ETIMEDOUT)
        violation("shutdown returned %s", pk_err_name(rc));
}

static int
pick_op(struct worker *w)
{
    unsigned x = (unsigned)pk_prng_below(&w->rng, 10000);

    if (x < 2500)
        return OP_FF;
    if (x < 4500)
        return OP_FUT;
    if (x < 5300)
        return OP_MANY;
    if (x < 5500)
        return OP_NESTED;
    if (w->n_held == 0)
        return x < 9990 ? OP_FF : OP_STATS;
    if (x < 6300)
        return OP_CANCEL;
    if (x < 8000)
        return OP_WAIT;
    if (x < 8400)
        return OP_WAIT_ANY;
    if (x < 8600)
        return OP_WAIT_ALL;
    if (x < 9000)
        return OP_DROP;
    if (x < 9050)
        return OP_RESIZE;
    return OP_STATS;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    for (unsigned long i = 0; i < w->ops; i++) {
        int op = i == w->shutdown_at ? OP_SHUTDOWN : pick_op(w);
        atomic_store_explicit(&w->last_op, op, memory_order_relaxed);
        w->counts[op]++;
        switch (op) {
        case OP_FF:
            do_submit_one(w, false, 0);
            break;
        case OP_FUT:
            do_submit_one(w, true, 0);
            break;
        case OP_MANY:
            do_many(w);
            break;
        case OP_NESTED:
            do_submit_one(w, true,
                          1 + (unsigned)pk_prng_below(&w->rng, MAX_DEPTH));
            break;
        case OP_CANCEL:
            do_cancel(w);
            break;
        case OP_WAIT:
            do_wait(w);
            break;
        case OP_WAIT_ANY:
            do_wait_many(w, false);
            break;
        case OP_WAIT_ALL:
            do_wait_many(w, true);
            break;
        case OP_DROP:
            let_go(w, (int)pk_prng_below(&w->rng, (uint64_t)w->n_held),
                   false);
            break;
        case OP_RESIZE: {
            size_t max = 1 + (size_t)pk_prng_below(&w->rng, 4);
            size_t min = (size_t)pk_prng_below(&w->rng, 2);
            int rc = pk_threadpool_resize(w->ep->tp, min, max);
            if (rc && rc != PK_ESHUTDOWN)
                violation("resize returned %s", pk_err_name(rc));
            /* now and then, the next thread starts fail (a process at
             * its limit): no task may be lost or stranded */
            if (pk_prng_chance(&w->rng, 100))
                pk__thread_fail_next(1 + pk_prng_below(&w->rng, 3));
            break;
        }
        case OP_STATS:
            do_stats(w);
            break;
        case OP_SHUTDOWN:
            do_shutdown(w);
            break;
        }
        atomic_store_explicit(&w->done_ops, i + 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&progress, 1, memory_order_relaxed);
    }
    /* Whatever is still held: half read after a wait, half dropped. */
    while (w->n_held) {
        int i = w->n_held - 1;
        bool read = pk_prng_chance(&w->rng, 500);
        if (read && pk_future_wait(w->held[i].f, PK_WAIT_FOREVER) != 0)
            violation("final wait failed");
        let_go(w, i, read);
    }
    atomic_store_explicit(&w->last_op, -1, memory_order_relaxed);
    return NULL;
}

/* ---- the watchdog -------------------------------------------------------- */

static struct worker ws[N_THREADS];
static uint64_t run_seed;
static atomic_int watchdog_stop;
static atomic_int phase; /* main thread: 1 workers, 2 shutdown, 3 checks */
static _Atomic(pk_threadpool *) current_tp;

static void *
watchdog_main(void *arg)
{
    const char *mult_env = getenv("PK_TEST_TIMEOUT_MULT");
    double mult = mult_env ? atof(mult_env) : 1.0;
    time_t limit = (time_t)(60 * (mult > 1.0 ? mult : 1.0));
    unsigned long prev = atomic_load(&progress);
    time_t last = time(NULL);

    (void)arg;
    while (!atomic_load(&watchdog_stop)) {
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        unsigned long now = atomic_load(&progress);
        if (now != prev) {
            prev = now;
            last = time(NULL);
            continue;
        }
        if (time(NULL) - last <= limit)
            continue;
        fprintf(stderr, "no progress for %lds (seed %llu, replay with "
                "PK_SEED=%llu): stuck in main phase %d\n", (long)limit,
                (unsigned long long)run_seed, (unsigned long long)run_seed,
                atomic_load(&phase));
        for (int i = 0; i < N_THREADS; i++)
            fprintf(stderr, "  thread %d: %lu/%lu ops, last op %d\n", i,
                    atomic_load(&ws[i].done_ops), ws[i].ops,
                    atomic_load(&ws[i].last_op));
        pk_threadpool *tp = atomic_load(&current_tp);
        pk_threadpool_stats st;
        if (tp && pk_threadpool_stats_get(tp, &st) == 0)
            fprintf(stderr, "  pool: threads %zu queued %zu running %zu "
                    "submitted %llu completed %llu failed %llu cancelled "
                    "%llu rejected %llu\n", st.threads, st.queued,
                    st.running, (unsigned long long)st.submitted,
                    (unsigned long long)st.completed,
                    (unsigned long long)st.failed,
                    (unsigned long long)st.cancelled,
                    (unsigned long long)st.rejected);
        abort();
    }
    return NULL;
}

/* ---- checks ---------------------------------------------------------------- */

struct totals {
    uint64_t accepted, completed, failed, cancelled, unread_failures;
    uint64_t recs, ran, nested;
};

static void
check_rec(struct epoch *ep, struct rec *r, struct totals *t)
{
    int runs = atomic_load(&r->runs);
    int ret = atomic_load(&r->ret);
    int st = atomic_load(&r->final_state);
    int done = atomic_load(&r->completions);

    t->recs++;
    if (runs > 1)
        violation("a task ran %d times", runs);
    if (!r->accepted) {
        if (runs)
            violation("a refused task ran");
        return;
    }
    t->accepted++;
    if (runs) {
        t->ran++;
        if (ret == 0)
            t->completed++;
        else if (ret == PK_ECANCELED)
            t->cancelled++;
        else
            t->failed++;
    } else {
        t->cancelled++;
    }
    if (r->depth)
        t->nested++;
    if (r->cancel_ok && runs)
        violation("a task ran after its cancel returned 0");
    if (!r->has_future) {
        if (!runs && !atomic_load(&ep->cancel_shutdown))
            violation("a fire-and-forget task never ran (no CANCEL)");
        /* A failure nobody can read: its own, or never running (a
         * CANCEL shutdown reports what it dropped) */
        if ((runs && ret < 0) || !runs)
            t->unread_failures++;
        return;
    }
    if (done != 1)
        violation("a future completed %d times", done);
    switch (st) {
    case PK_FUTURE_DONE:
        if (!runs || ret != 0)
            violation("done future: runs %d ret %d", runs, ret);
        break;
    case PK_FUTURE_FAILED:
        if (!runs || ret != PK_ETASK)
            violation("failed future: runs %d ret %d", runs, ret);
        if (atomic_load(&r->unread))
            t->unread_failures++;
        break;
    case PK_FUTURE_CANCELLED:
        if (runs && ret != PK_ECANCELED)
            violation("cancelled future whose task returned %d", ret);
        if (!runs && !r->cancel_ok && !atomic_load(&ep->cancel_shutdown))
            violation("cancelled unrun without a cancel or a CANCEL");
        break;
    default:
        violation("a future ended in state %d", st);
    }
}

static void
free_list(struct rec *r, struct epoch *ep, struct totals *t)
{
    while (r) {
        struct rec *next = r->next;
        check_rec(ep, r, t);
        free(r);
        r = next;
    }
}

static unsigned long
total_ops(void)
{
    double n = BASE_OPS * pk_test_scale();
    return n < N_THREADS ? N_THREADS : (unsigned long)n;
}

/* One epoch: a fresh pool, the threads' share of ops, then the checks. */
static void
run_epoch(uint64_t seed, int e, unsigned long ops,
          const pk_threadpool_options *base)
{
    static struct epoch ep;
    pk_threadpool_options o = *base;
    pk_threadpool_stats st;
    struct totals t;

    memset(&ep, 0, sizeof ep);
    pthread_mutex_init(&ep.child_lock, NULL);
    o.event = on_event;
    o.event_user = &ep;
    assert_int_equal(pk_threadpool_create(&ep.tp, &o), 0);
    atomic_store(&current_tp, ep.tp);
    atomic_store(&phase, 1);
    for (int i = 0; i < N_THREADS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].idx = i;
        ws[i].ep = &ep;
        ws[i].ops = ops / N_THREADS;
        pk_prng_seed(&ws[i].rng, seed + (uint64_t)(e * N_THREADS + i));
        /* In three epochs of four, one thread shuts the pool down (DRAIN
         * or CANCEL, short timeout) in the last tenth of its operations,
         * while the others keep going. */
        ws[i].shutdown_at = ULONG_MAX;
        if (i == e % N_THREADS && e % 4 != 3)
            ws[i].shutdown_at = ws[i].ops - 1 -
                pk_prng_below(&ws[i].rng, ws[i].ops / 10 + 1);
        assert_int_equal(pthread_create(&ws[i].tid, NULL, worker_main,
                                        &ws[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(ws[i].tid, NULL), 0);
    pk__thread_fail_next(0);
    atomic_store(&phase, 2);
    assert_int_equal(pk_threadpool_shutdown(ep.tp, PK_SHUTDOWN_DRAIN,
                                            PK_WAIT_FOREVER), 0);
    atomic_store(&phase, 3);
    assert_int_equal(pk_threadpool_stats_get(ep.tp, &st), 0);

    memset(&t, 0, sizeof t);
    for (int i = 0; i < N_THREADS; i++)
        free_list(ws[i].recs, &ep, &t);
    free_list(ep.children, &ep, &t);
    printf("  epoch %d: %llu tasks (%llu nested), %llu accepted, ran %llu; "
           "stats: submitted %llu completed %llu failed %llu cancelled %llu "
           "rejected %llu; %s\n", e, (unsigned long long)t.recs,
           (unsigned long long)t.nested, (unsigned long long)t.accepted,
           (unsigned long long)t.ran, (unsigned long long)st.submitted,
           (unsigned long long)st.completed, (unsigned long long)st.failed,
           (unsigned long long)st.cancelled,
           (unsigned long long)st.rejected,
           atomic_load(&ep.cancel_shutdown) ? "CANCEL shutdown" : "drained");
    if (st.queued || st.running)
        violation("after DRAIN: queued %zu running %zu", st.queued,
                  st.running);
    if (st.submitted != st.completed + st.failed + st.cancelled)
        violation("submitted %llu != completed %llu + failed %llu + "
                  "cancelled %llu", (unsigned long long)st.submitted,
                  (unsigned long long)st.completed,
                  (unsigned long long)st.failed,
                  (unsigned long long)st.cancelled);
    if (st.submitted != t.accepted)
        violation("submitted %llu, tasks accepted %llu",
                  (unsigned long long)st.submitted,
                  (unsigned long long)t.accepted);
    if (st.completed != t.completed || st.failed != t.failed ||
        st.cancelled != t.cancelled)
        violation("stats completed/failed/cancelled %llu/%llu/%llu, tasks "
                  "%llu/%llu/%llu", (unsigned long long)st.completed,
                  (unsigned long long)st.failed,
                  (unsigned long long)st.cancelled,
                  (unsigned long long)t.completed,
                  (unsigned long long)t.failed,
                  (unsigned long long)t.cancelled);
    if (st.rejected != atomic_load(&ep.rejected))
        violation("stats rejected %llu, refused %lu",
                  (unsigned long long)st.rejected,
                  atomic_load(&ep.rejected));
    if (atomic_load(&ep.unread_events) != t.unread_failures)
        violation("%lu unread-failure events for %llu unread failures",
                  atomic_load(&ep.unread_events),
                  (unsigned long long)t.unread_failures);
    atomic_store(&current_tp, NULL);
    pk_threadpool_destroy(ep.tp);
    pthread_mutex_destroy(&ep.child_lock);
    assert_int_equal(violations_report(run_seed), 0);
}

static void
stress(const char *name, const pk_threadpool_options *o, double share)
{
    pthread_t wd;
    long live0 = pk__alloc_live();
    uint64_t seed = pk_test_seed(name);
    unsigned long ops = (unsigned long)((double)total_ops() * share);
    enum { EPOCHS = 4 };

    run_seed = seed;
    violations_reset();
    atomic_store(&watchdog_stop, 0);
    assert_int_equal(pthread_create(&wd, NULL, watchdog_main, NULL), 0);
    for (int e = 0; e < EPOCHS; e++)
        run_epoch(seed, e, ops / EPOCHS, o);
    atomic_store(&watchdog_stop, 1);
    assert_int_equal(pthread_join(wd, NULL), 0);
    /* A worker retired on its own release may drop the pool's last
     * reference just after destroy returned: give it a moment. */
    for (int i = 0; i < 2000 && pk__alloc_live() != live0; i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_int_equal(pk__alloc_live(), live0);
}

static void
test_stress_threadpool_block_policy_keeps_invariants(void **state)
{
    pk_threadpool_options o = { .max_threads = 4, .queue_size = 256,
                                .full_policy = PK_FULL_BLOCK,
                                .submit_timeout_ms = 2,
                                .keep_alive_ms = 20 };

    (void)state;
    stress("stress_threadpool block", &o, 0.6);
}

static void
test_stress_threadpool_caller_runs_keeps_invariants(void **state)
{
    pk_threadpool_options o = { .min_threads = 1, .max_threads = 3,
                                .queue_size = 64,
                                .full_policy = PK_FULL_CALLER_RUNS };

    (void)state;
    stress("stress_threadpool caller-runs", &o, 0.4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_threadpool_block_policy_keeps_invariants),
        cmocka_unit_test(test_stress_threadpool_caller_runs_keeps_invariants),
    };

    return cmocka_run_group_tests_name("stress_threadpool", tests, NULL,
                                       NULL);
}
