/* tests/stress/stress_pool.c - many threads, random operations, one pool
 * (and a pool group) whose hooks fail on purpose.
 *
 * Sixteen threads draw operations from a seeded PRNG (PK_SEED replays the
 * per-thread sequences; the seed is printed): acquire with a 1 ms timeout,
 * try-acquire (timeout 0), an occasional acquire that waits forever (only
 * when the thread holds nothing, so hold-and-wait cannot deadlock), the
 * async ticket, release OK / BROKEN / DETACH, resize, pause-resume,
 * evict-all, a maintenance pass and a stats snapshot. create fails 5% of
 * the time, check (run on every borrow: check_after PK_ALWAYS) 5%, reset
 * 2%. The operation count is 10^6 scaled by PK_STRESS_SCALE.
 *
 * One case drops the check and reset hooks, so the pool takes its plain
 * path (one lock section per acquire and per release, no hook), racing
 * waiters, pause, resize, evict_all, stats and close.
 *
 * Threads never call cmocka: they count violations in atomics (and keep
 * the first message), and the main thread asserts after joining them
 * (STYLE.md section 5). A watchdog in the main thread reports a thread
 * that stops making progress (a waiter left behind) and aborts.
 *
 * How "no create starts while the population is at max_size" is checked
 * soundly. Each pool's test context keeps `alive`: +1 when the create hook
 * starts, -1 when a create fails (at the hook's end), when the destroy
 * hook ends, and just before a thread releases a lease with DETACH. So
 * `alive` never counts a resource the pool no longer counts, and it counts
 * every resource that exists (made and not yet fully destroyed). The hook
 * compares it, itself included, with `bound`, a max_size that was in
 * force at the create's reservation: a grow stores the new bound before
 * pk_pool_resize; a shrink stores it only after a stats snapshot showed no
 * create in flight (every create reserved under the old, larger max had
 * finished), and until then the old bound stays. A shrink below the
 * current population is allowed to leave alive > max; no new create may
 * start until it is back below.
 *
 * The group case checks the budget the same way: every member's create
 * hook adds to one group-wide count and compares it with max_total. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poolkit/pool.h>

#include "alloc.h"
#include "prng.h"
#include "violations.h"

#define N_THREADS 16
#define MAX_HELD 2
#define BASE_OPS 1000000.0
#define N_MEMBERS 3

/* ---- resources and hooks --------------------------------------------- */

struct res {
    struct res *all_next;      /* every resource ever made (registry) */
    struct ctx *ctx;
    atomic_int holder;         /* 1 while a test thread holds its lease */
    atomic_int in_hook;        /* a check/reset/destroy hook is running */
    atomic_int destroys;       /* destroy hook calls */
    atomic_int detached;       /* released with DETACH */
    atomic_int lent_once;      /* a test thread held it before */
    atomic_ulong seen_evict;   /* ctx.evict_start while last held */
};

struct group_ctx {
    atomic_long alive;         /* across members, counted like ctx.alive */
    size_t max_total;
};

/* One per pool. */
struct ctx {
    int idx;
    uint64_t seed;
    atomic_ulong draw;         /* hook randomness: hash(seed, draw++) */
    unsigned create_fail_pm, check_fail_pm, reset_fail_pm; /* per mille */
    atomic_long alive;         /* see the file comment */
    atomic_ulong bound;        /* the max_size the create hook holds to */
    struct group_ctx *group;
    _Atomic(struct res *) all;
    atomic_ulong created, create_fails, destroyed, detached;
    atomic_ulong checks, check_fails, resets, reset_fails, user_frees;
    /* evict_all calls (serialised by the admin lock): started, returned */
    atomic_ulong evict_start, evict_end;
};

static bool
hook_fails(struct ctx *c, unsigned per_mille)
{
    uint64_t n = atomic_fetch_add_explicit(&c->draw, 1, memory_order_relaxed);
    return pk_prng_hash(c->seed ^ (n * 0x9e3779b97f4a7c15ull)) % 1000 <
           per_mille;
}

/* Now and then a hook yields the CPU, so that other threads run while
 * it is in progress: the windows between a hook and the pool's next lock
 * section get traffic. */
static void
hook_dawdle(struct ctx *c)
{
    if (hook_fails(c, 50))
        sched_yield();
}

static void
uncount(struct ctx *c)
{
    atomic_fetch_sub(&c->alive, 1);
    if (c->group)
        atomic_fetch_sub(&c->group->alive, 1);
}

static int
h_create(void *user, void **out, pk_error *err)
{
    struct ctx *c = user;
    long a = atomic_fetch_add(&c->alive, 1) + 1;
    unsigned long m = atomic_load(&c->bound);
    struct res *r;

    if (a > (long)m)
        violation("pool %d: a create started with %ld alive (itself "
                  "included) and max_size %lu", c->idx, a, m);
    if (c->group) {
        long g = atomic_fetch_add(&c->group->alive, 1) + 1;
        if (g > (long)c->group->max_total)
            violation("group: a create started with %ld alive across "
                      "members and max_total %zu", g, c->group->max_total);
    }
    hook_dawdle(c);
    if (hook_fails(c, c->create_fail_pm)) {
        atomic_fetch_add(&c->create_fails, 1);
        uncount(c);
        return pk_error_set(err, PK_ECONNECT, 111, "injected create failure");
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        uncount(c);
        return pk_error_set(err, PK_ENOMEM, 0, "test calloc");
    }
    r->ctx = c;
    r->all_next = atomic_load(&c->all);
    while (!atomic_compare_exchange_weak(&c->all, &r->all_next, r))
        ;
    atomic_fetch_add(&c->created, 1);
    *out = r;
    return 0;
}

/* No two hooks on one resource at once, none while a thread holds it,
 * none after it was destroyed or detached. */
static void
hook_enter(struct res *r, const char *hook)
{
    if (atomic_exchange(&r->in_hook, 1))
        violation("%s ran while another hook ran on the same resource",
                  hook);
    if (atomic_load(&r->holder))
        violation("%s ran on a resource a thread holds", hook);
    if (atomic_load(&r->destroys) || atomic_load(&r->detached))
        violation("%s ran on a destroyed or detached resource", hook);
}

static void
hook_leave(struct res *r)
{
    atomic_store(&r->in_hook, 0);
}

static void
h_destroy(void *user, void *res)
{
    struct ctx *c = user;
    struct res *r = res;

    if (r->ctx != c)
        violation("destroy of pool %d got a resource of pool %d", c->idx,
                  r->ctx->idx);
    hook_enter(r, "destroy");
    hook_dawdle(c);
    atomic_fetch_add(&r->destroys, 1);
    atomic_fetch_add(&c->destroyed, 1);
    hook_leave(r);
    uncount(c); /* last: the resource existed until now */
}

static int
h_check(void *user, void *res, pk_error *err)
{
    struct ctx *c = user;
    struct res *r = res;
    int rc = 0;

    hook_enter(r, "check");
    hook_dawdle(c);
    atomic_fetch_add(&c->checks, 1);
    if (hook_fails(c, c->check_fail_pm)) {
        atomic_fetch_add(&c->check_fails, 1);
        rc = pk_error_set(err, PK_ECHECK, 0, "injected check failure");
    }
    hook_leave(r);
    return rc;
}

static int
h_reset(void *user, void *res)
{
    struct ctx *c = user;
    struct res *r = res;
    int rc = 0;

    hook_enter(r, "reset");
    atomic_fetch_add(&c->resets, 1);
    if (hook_fails(c, c->reset_fail_pm)) {
        atomic_fetch_add(&c->reset_fails, 1);
        rc = -1;
    }
    hook_leave(r);
    return rc;
}

static void
h_user_free(void *user)
{
    struct ctx *c = user;
    atomic_fetch_add(&c->user_frees, 1);
}

static void
ctx_init(struct ctx *c, int idx, uint64_t seed, size_t max_size,
         struct group_ctx *g)
{
    memset(c, 0, sizeof *c);
    c->idx = idx;
    c->seed = pk_prng_hash(seed ^ (0xc0ffeeull + (uint64_t)idx));
    c->create_fail_pm = 50;
    c->check_fail_pm = 50;
    c->reset_fail_pm = 20;
    atomic_store(&c->bound, max_size);
    c->group = g;
}

/* plain: no check or reset hook (the plain path's case).
 * backoff_ms: 1, or PK_ALWAYS for none. With a backoff, a failed create
 * is retried after up to 1 ms, and an acquirer whose 1 ms deadline ends
 * first fails with the replayed error, which at these speeds is most of
 * them; without, creates retry at once and hand-offs, checks and steals
 * get the traffic, and a maintenance thread runs every millisecond. Each
 * case runs one or the other. */
static pk_pool_options
stress_options(struct ctx *c, size_t max_size, pk_pool_group *group,
               int backoff_ms, bool plain)
{
    pk_pool_options o = {
        .create = h_create,
        .destroy = h_destroy,
        .check = h_check,
        .reset = h_reset,
        .user_free = h_user_free,
        .user = c,
        .max_size = max_size,
        .max_creating = 3,
        .check_after_ms = PK_ALWAYS,
        .backoff_initial_ms = backoff_ms,
        .max_backoff_ms = backoff_ms,
        .acquire_timeout_ms = 1,
        .group = group,
    };
    if (plain) {
        /* No hook or policy keeps the pool off its plain path. */
        o.check = NULL;
        o.reset = NULL;
    } else if (backoff_ms == PK_ALWAYS) {
        /* A maintenance thread that checks idle resources every
         * millisecond, racing lends, evicts and resizes. */
        o.check_interval_ms = 1;
        o.maintain_interval_ms = 1;
    }
    return o;
}

/* After close + destroy: every resource destroyed exactly once, or
 * detached and never destroyed; then frees the test's resource records. */
static void
check_and_free_registry(struct ctx *c)
{
    unsigned long n = 0, bad = 0;
    struct res *r = atomic_load(&c->all);

    while (r) {
        struct res *next = r->all_next;
        int d = atomic_load(&r->destroys);
        int want = atomic_load(&r->detached) ? 0 : 1;
        if (d != want) {
            if (!bad)
                fprintf(stderr, "pool %d: resource %p destroyed %d times "
                        "(detached %d)\n", c->idx, (void *)r, d,
                        atomic_load(&r->detached));
            bad++;
        }
        n++;
        free(r);
        r = next;
    }
    atomic_store(&c->all, NULL);
    assert_int_equal(bad, 0);
    assert_int_equal(n, atomic_load(&c->created));
}

/* ---- the workers ------------------------------------------------------ */

struct held {
    pk_lease lease;
    pk_pool *pool;
    struct ctx *ctx;
};

struct shared;

struct worker {
    pthread_t tid;
    int idx;
    struct shared *sh;
    pk_prng rng;
    struct held held[MAX_HELD];
    int n_held;
    unsigned long ops;
    atomic_ulong progress;     /* ops done, read by the watchdog */
    atomic_int last_op;        /* for the watchdog's report */
    /* Outcome counts (this thread only; read after join). */
    unsigned long acquired, released, errors[8];
};

struct shared {
    pk_pool *pools[N_MEMBERS];
    struct ctx *ctxs[N_MEMBERS];
    int n_pools;
    bool resizes;              /* the single-pool case resizes */
    pthread_mutex_t admin;     /* serialises resizes and the bounds */
    size_t pending_bound;      /* a shrink whose bound is not stored yet */
    struct group_ctx *group;
    pk_pool_group *pk_group;
    atomic_int done;
};

enum { OP_ACQ, OP_TRY, OP_FOREVER, OP_ASYNC, OP_RELEASE, OP_RESIZE,
       OP_PAUSE, OP_EVICT, OP_MAINTAIN, OP_STATS };

/* A lease came back from the pool: nobody else may hold it, and it was
 * not evicted. evicted_before is ctx.evict_end read before the acquire
 * began: if an evict_all started after a thread last held this resource
 * (seen_evict) and returned before this acquire began, the resource
 * existed at that evict and must never be lent again. */
static void
took(struct worker *w, pk_pool *pool, struct ctx *c, pk_lease *l,
     unsigned long evicted_before)
{
    struct res *r = l->resource;

    if (!r || r->ctx != c) {
        violation("acquire returned a resource of another pool or NULL");
        return;
    }
    if (atomic_exchange(&r->holder, 1))
        violation("pool %d lent one resource to two holders", c->idx);
    if (atomic_load(&r->destroys) || atomic_load(&r->detached))
        violation("pool %d lent a destroyed or detached resource", c->idx);
    if (atomic_load(&r->lent_once) &&
        evicted_before > atomic_load(&r->seen_evict))
        violation("pool %d lent a resource again after evict_all",
                  c->idx);
    atomic_store(&r->seen_evict, atomic_load(&c->evict_start));
    atomic_store(&r->lent_once, 1);
    if (w->n_held >= MAX_HELD) {
        violation("test bug: too many leases");
        return;
    }
    w->held[w->n_held].lease = *l;
    w->held[w->n_held].pool = pool;
    w->held[w->n_held].ctx = c;
    w->n_held++;
    w->acquired++;
}

static void
acquire_failed(struct worker *w, struct ctx *c, int rc, int timeout)
{
    switch (rc) {
    case PK_EAGAIN:
        w->errors[0]++;
        break;
    case PK_ETIMEDOUT:
        if (timeout == PK_WAIT_FOREVER || timeout == 0)
            violation("pool %d: a %s acquire returned PK_ETIMEDOUT", c->idx,
                      timeout ? "forever" : "try");
        w->errors[1]++;
        break;
    case PK_ECONNECT: /* the injected create failure, passed through */
        w->errors[2]++;
        break;
    default:
        violation("pool %d: acquire returned %s", c->idx, pk_err_name(rc));
    }
}

static void
do_acquire(struct worker *w, int pi, int timeout)
{
    struct shared *sh = w->sh;
    pk_lease l;
    pk_error e;
    unsigned long ev = atomic_load(&sh->ctxs[pi]->evict_end);
    int rc = pk_pool_acquire(sh->pools[pi], &l, timeout, &e);

    if (rc == 0)
        took(w, sh->pools[pi], sh->ctxs[pi], &l, ev);
    else
        acquire_failed(w, sh->ctxs[pi], rc, timeout);
}

/* The async path: a ticket with a 1 ms deadline, served by the pool's
 * helper thread. Either taken when ready, or withdrawn. */
static void
do_async(struct worker *w, int pi)
{
    struct shared *sh = w->sh;
    pk_pool_ticket *t;
    pk_lease l;
    pk_error e;
    int ready = 0, rc;
    unsigned long ev = atomic_load(&sh->ctxs[pi]->evict_end);

    rc = pk_pool_acquire_async(sh->pools[pi], &t, 1, NULL, NULL, &ready);
    if (rc) {
        violation("acquire_async returned %s", pk_err_name(rc));
        return;
    }
    if (!ready && pk_prng_chance(&w->rng, 200)) {
        pk_pool_ticket_free(t); /* withdraw at once */
        return;
    }
    if (!ready) {
        struct pollfd pfd = { pk_pool_ticket_fd(t), POLLIN, 0 };
        if (poll(&pfd, 1, 20) == 0) {
            pk_pool_ticket_free(t); /* late: withdraw */
            w->errors[3]++;
            return;
        }
    }
    rc = pk_pool_ticket_take(t, &l, &e);
    if (rc == 0)
        took(w, sh->pools[pi], sh->ctxs[pi], &l, ev);
    else if (rc == PK_EAGAIN)
        violation("a ticket whose fd was readable was not ready");
    else
        acquire_failed(w, sh->ctxs[pi], rc, 1);
}

static void
do_release(struct worker *w, int which)
{
    struct held h = w->held[which];
    struct res *r = h.lease.resource;
    unsigned x = (unsigned)pk_prng_below(&w->rng, 100);
    int status = x < 85 ? PK_RELEASE_OK
                        : x < 95 ? PK_RELEASE_BROKEN : PK_RELEASE_DETACH;
    int rc;

    w->held[which] = w->held[--w->n_held];
    atomic_store(&r->holder, 0);
    if (status == PK_RELEASE_DETACH) {
        atomic_store(&r->detached, 1);
        uncount(h.ctx); /* before: the pool stops counting it inside */
    }
    rc = pk_pool_release(h.pool, &h.lease, status);
    if (rc)
        violation("release returned %s", pk_err_name(rc));
    else if (status == PK_RELEASE_DETACH)
        atomic_fetch_add(&h.ctx->detached, 1);
    w->released++;
}

/* Stores a shrink's bound once no create reserved before it is in
 * flight. Admin lock held. */
static void
settle_bound_locked(struct shared *sh)
{
    pk_pool_stats st;

    if (!sh->pending_bound)
        return;
    for (int i = 0; i < 200; i++) {
        if (pk_pool_stats_get(sh->pools[0], &st) == 0 && st.creating == 0) {
            atomic_store(&sh->ctxs[0]->bound, sh->pending_bound);
            sh->pending_bound = 0;
            return;
        }
        sched_yield();
    }
}

static void
do_resize(struct worker *w)
{
    struct shared *sh = w->sh;
    size_t max = 2 + (size_t)pk_prng_below(&w->rng, 11); /* 2..12 */
    size_t min_size = (size_t)pk_prng_below(&w->rng, 3);
    size_t min_idle = pk_prng_chance(&w->rng, 300) ? 1 : 0;
    int rc;

    pthread_mutex_lock(&sh->admin);
    settle_bound_locked(sh);
    if (max >= atomic_load(&sh->ctxs[0]->bound)) {
        /* A grow: the bound goes up before the pool may use it. */
        atomic_store(&sh->ctxs[0]->bound, max);
        sh->pending_bound = 0;
        rc = pk_pool_resize(sh->pools[0], min_size, min_idle, max);
    } else {
        rc = pk_pool_resize(sh->pools[0], min_size, min_idle, max);
        sh->pending_bound = max;
        settle_bound_locked(sh);
    }
    pthread_mutex_unlock(&sh->admin);
    if (rc)
        violation("resize returned %s", pk_err_name(rc));
}

static void
do_stats(struct worker *w, int pi)
{
    pk_pool_stats st;
    int rc = pk_pool_stats_get(w->sh->pools[pi], &st);

    if (rc) {
        violation("stats returned %s", pk_err_name(rc));
        return;
    }
    if (st.idle + st.lent + st.creating > st.size)
        violation("stats: idle %zu + lent %zu + creating %zu > size %zu",
                  st.idle, st.lent, st.creating, st.size);
    /* created counts finished creates; size includes those in flight and
     * excludes those being destroyed. */
    if (st.created + st.creating < st.destroyed + st.detached + st.size)
        violation("stats: created %llu + creating %zu < destroyed %llu + "
                  "detached %llu + size %zu", (unsigned long long)st.created,
                  st.creating, (unsigned long long)st.destroyed,
                  (unsigned long long)st.detached, st.size);
    if (w->sh->pk_group) {
        size_t used, max;
        pk_pool_group_usage(w->sh->pk_group, &used, &max);
        if (used > max)
            violation("group usage %zu above max_total %zu", used, max);
    }
}

static int
pick_op(struct worker *w)
{
    unsigned x = (unsigned)pk_prng_below(&w->rng, 10000);

    if (w->n_held == MAX_HELD || (w->n_held && x < 4500))
        return OP_RELEASE;
    if (x < 4500)
        return OP_ACQ;
    if (x < 7500)
        return OP_TRY;
    if (x < 7600)
        return w->n_held ? OP_TRY : OP_FOREVER;
    if (x < 8200)
        return OP_ASYNC;
    if (x < 8240)
        return w->sh->resizes ? OP_RESIZE : OP_ACQ;
    if (x < 8260)
        return OP_PAUSE;
    if (x < 8270)
        return OP_EVICT;
    if (x < 8340)
        return OP_MAINTAIN;
    if (x < 8440)
        return OP_STATS;
    return OP_TRY;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;

    for (unsigned long i = 0; i < w->ops; i++) {
        int pi = (int)pk_prng_below(&w->rng, (uint64_t)sh->n_pools);
        int op = pick_op(w);
        atomic_store_explicit(&w->last_op, op, memory_order_relaxed);
        switch (op) {
        case OP_ACQ:
            do_acquire(w, pi, 1);
            break;
        case OP_TRY:
            do_acquire(w, pi, 0);
            break;
        case OP_FOREVER:
            do_acquire(w, pi, PK_WAIT_FOREVER);
            break;
        case OP_ASYNC:
            do_async(w, pi);
            break;
        case OP_RELEASE:
            do_release(w, (int)pk_prng_below(&w->rng, (uint64_t)w->n_held));
            break;
        case OP_RESIZE:
            do_resize(w);
            break;
        case OP_PAUSE:
            if (pk_pool_pause(sh->pools[pi]))
                violation("pause failed");
            sched_yield();
            if (pk_pool_resume(sh->pools[pi]))
                violation("resume failed");
            break;
        case OP_EVICT:
            pthread_mutex_lock(&sh->admin);
            atomic_fetch_add(&sh->ctxs[pi]->evict_start, 1);
            if (pk_pool_evict_all(sh->pools[pi]))
                violation("evict_all failed");
            atomic_fetch_add(&sh->ctxs[pi]->evict_end, 1);
            pthread_mutex_unlock(&sh->admin);
            break;
        case OP_MAINTAIN:
            if (pk_pool_maintain(sh->pools[pi]))
                violation("maintain failed");
            break;
        case OP_STATS:
            do_stats(w, pi);
            break;
        }
        atomic_store_explicit(&w->progress, i + 1, memory_order_relaxed);
    }
    while (w->n_held)
        do_release(w, w->n_held - 1);
    atomic_store_explicit(&w->last_op, -1, memory_order_relaxed);
    atomic_fetch_add(&sh->done, 1);
    return NULL;
}

static unsigned long
total_ops(void)
{
    double n = BASE_OPS * pk_test_scale();
    return n < N_THREADS ? N_THREADS : (unsigned long)n;
}

/* Runs the workers and waits for them; a thread that makes no progress
 * for a minute is a waiter left behind (or a deadlock): say which, with
 * the pools' stats, and abort so the seed can be replayed. */
static void
run_workers(struct shared *sh, uint64_t seed, unsigned long ops)
{
    static struct worker ws[N_THREADS];
    unsigned long prev_total = 0;
    time_t last_progress = time(NULL);
    const char *mult_env = getenv("PK_TEST_TIMEOUT_MULT");
    double mult = mult_env ? atof(mult_env) : 1.0;
    time_t limit = (time_t)(60 * (mult > 1.0 ? mult : 1.0));

    atomic_store(&sh->done, 0);
    for (int i = 0; i < N_THREADS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].idx = i;
        ws[i].sh = sh;
        ws[i].ops = ops / N_THREADS;
        pk_prng_seed(&ws[i].rng, seed + (uint64_t)i);
        assert_int_equal(pthread_create(&ws[i].tid, NULL, worker_main,
                                        &ws[i]), 0);
    }
    while (atomic_load(&sh->done) < N_THREADS) {
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        unsigned long total = 0;
        nanosleep(&ts, NULL);
        for (int i = 0; i < N_THREADS; i++)
            total += atomic_load_explicit(&ws[i].progress,
                                          memory_order_relaxed);
        if (total != prev_total) {
            prev_total = total;
            last_progress = time(NULL);
        } else if (time(NULL) - last_progress > limit) {
            fprintf(stderr, "no progress for %lds (seed %llu): stuck\n",
                    (long)limit, (unsigned long long)seed);
            for (int i = 0; i < N_THREADS; i++)
                fprintf(stderr, "  thread %d: %lu/%lu ops, last op %d\n", i,
                        atomic_load(&ws[i].progress), ws[i].ops,
                        atomic_load(&ws[i].last_op));
            for (int p = 0; p < sh->n_pools; p++) {
                pk_pool_stats st;
                pk_pool_stats_get(sh->pools[p], &st);
                fprintf(stderr, "  pool %d: size %zu idle %zu lent %zu "
                        "creating %zu waiters %zu max %zu\n", p, st.size,
                        st.idle, st.lent, st.creating, st.waiters,
                        st.max_size);
            }
            abort();
        }
    }
    unsigned long acq = 0, rel = 0, err[8] = { 0 };
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_join(ws[i].tid, NULL), 0);
        acq += ws[i].acquired;
        rel += ws[i].released;
        for (int k = 0; k < 8; k++)
            err[k] += ws[i].errors[k];
    }
    printf("  %lu ops: %lu acquired, %lu released; EAGAIN %lu, ETIMEDOUT "
           "%lu, create errors %lu, late tickets %lu\n", ops, acq, rel,
           err[0], err[1], err[2], err[3]);
    /* Every acquire ended in a release (threads release all they hold). */
    assert_int_equal(acq, rel);
}

static void
print_ctx(struct ctx *c)
{
    printf("  pool %d: created %lu (failed %lu), destroyed %lu, detached "
           "%lu, checks %lu (failed %lu), resets %lu (failed %lu)\n", c->idx,
           atomic_load(&c->created), atomic_load(&c->create_fails),
           atomic_load(&c->destroyed), atomic_load(&c->detached),
           atomic_load(&c->checks), atomic_load(&c->check_fails),
           atomic_load(&c->resets), atomic_load(&c->reset_fails));
}

/* After the workers: the pool's counts agree with the hooks', close
 * brings everything back, and nothing waits. */
static void
check_quiet_pool(pk_pool *pool, struct ctx *c)
{
    pk_pool_stats st;

    assert_int_equal(pk_pool_resume(pool), 0);
    /* A ticket withdrawn while its resource was being checked leaves
     * that resource lent until the helper (or a maintenance pass)
     * finishes the check: give it a moment. */
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(pk_pool_maintain(pool), 0);
        assert_int_equal(pk_pool_stats_get(pool, &st), 0);
        if (st.lent == 0 && st.waiters == 0)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(pk_pool_close(pool, 10000), 0);
    assert_int_equal(pk_pool_stats_get(pool, &st), 0);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.creating, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.created, atomic_load(&c->created));
    assert_int_equal(st.destroyed, atomic_load(&c->destroyed));
    assert_int_equal(st.detached, atomic_load(&c->detached));
    assert_int_equal(st.create_failures, atomic_load(&c->create_fails));
    /* created - destroyed - detached = alive, and alive is 0 now */
    assert_int_equal(atomic_load(&c->created) - atomic_load(&c->destroyed) -
                         atomic_load(&c->detached), 0);
    assert_int_equal(atomic_load(&c->alive), 0);
    print_ctx(c);
}

/* ---- the tests -------------------------------------------------------- */

static void
stress_one_pool(const char *name, int backoff_ms, bool plain,
                double share)
{
    static struct ctx c;
    struct shared sh;
    pk_pool_options o;
    pk_pool *pool;
    long live0 = pk__alloc_live();
    uint64_t seed = pk_test_seed(name);
    unsigned long ops = (unsigned long)((double)total_ops() * share);

    violations_reset();
    ctx_init(&c, 0, seed, 6, NULL);
    o = stress_options(&c, 6, NULL, backoff_ms, plain);
    assert_int_equal(pk_pool_create(&pool, &o), 0);
    memset(&sh, 0, sizeof sh);
    sh.pools[0] = pool;
    sh.ctxs[0] = &c;
    sh.n_pools = 1;
    sh.resizes = true;
    pthread_mutex_init(&sh.admin, NULL);

    run_workers(&sh, seed, ops);
    check_quiet_pool(pool, &c);
    pk_pool_destroy(pool);
    pthread_mutex_destroy(&sh.admin);
    assert_int_equal(atomic_load(&c.user_frees), 1);
    check_and_free_registry(&c);
    assert_int_equal(violations_report(seed), 0);
    assert_int_equal(pk__alloc_live(), live0);
}

/* Operation shares of the four cases: 10^6 in all at scale 1. */
static void
test_stress_pool_keeps_invariants_with_create_backoff(void **state)
{
    (void)state;
    stress_one_pool("stress_pool backoff", 1, false, 0.3);
}

static void
test_stress_pool_keeps_invariants_without_backoff(void **state)
{
    (void)state;
    stress_one_pool("stress_pool no-backoff", PK_ALWAYS, false, 0.2);
}

static void
test_stress_plain_pool_keeps_invariants(void **state)
{
    (void)state;
    stress_one_pool("stress_pool plain", PK_ALWAYS, true, 0.2);
}

static void
test_stress_group_never_exceeds_budget(void **state)
{
    static struct ctx cs[N_MEMBERS];
    static struct group_ctx gc;
    static const size_t member_max[N_MEMBERS] = { 5, 4, 6 };
    struct shared sh;
    pk_pool_group *g;
    long live0 = pk__alloc_live();
    uint64_t seed = pk_test_seed("stress_pool group");
    unsigned long ops = (unsigned long)((double)total_ops() * 0.3);

    (void)state;
    violations_reset();
    memset(&gc, 0, sizeof gc);
    gc.max_total = 8;
    assert_int_equal(pk_pool_group_create(&g, gc.max_total), 0);
    memset(&sh, 0, sizeof sh);
    for (int i = 0; i < N_MEMBERS; i++) {
        pk_pool_options o;
        ctx_init(&cs[i], i, seed, member_max[i], &gc);
        o = stress_options(&cs[i], member_max[i], g, PK_ALWAYS, false);
        assert_int_equal(pk_pool_create(&sh.pools[i], &o), 0);
        sh.ctxs[i] = &cs[i];
    }
    sh.n_pools = N_MEMBERS;
    sh.group = &gc;
    sh.pk_group = g;
    pthread_mutex_init(&sh.admin, NULL);

    run_workers(&sh, seed, ops);
    for (int i = 0; i < N_MEMBERS; i++)
        check_quiet_pool(sh.pools[i], &cs[i]);
    {
        size_t used, max;
        assert_int_equal(pk_pool_group_usage(g, &used, &max), 0);
        assert_int_equal(used, 0);
    }
    for (int i = 0; i < N_MEMBERS; i++)
        pk_pool_destroy(sh.pools[i]);
    pk_pool_group_destroy(g);
    pthread_mutex_destroy(&sh.admin);
    for (int i = 0; i < N_MEMBERS; i++) {
        assert_int_equal(atomic_load(&cs[i].user_frees), 1);
        check_and_free_registry(&cs[i]);
    }
    assert_int_equal(atomic_load(&gc.alive), 0);
    assert_int_equal(violations_report(seed), 0);
    assert_int_equal(pk__alloc_live(), live0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_pool_keeps_invariants_with_create_backoff),
        cmocka_unit_test(test_stress_pool_keeps_invariants_without_backoff),
        cmocka_unit_test(test_stress_plain_pool_keeps_invariants),
        cmocka_unit_test(test_stress_group_never_exceeds_budget),
    };

    return cmocka_run_group_tests_name("stress_pool", tests, NULL, NULL);
}
