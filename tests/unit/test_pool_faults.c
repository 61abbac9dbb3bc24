/* tests/unit/test_pool_faults.c - the pool when things go wrong: every
 * allocation failing in turn, close while threads wait and hold leases,
 * destroy racing the last release, and fork() while the pool is in use.
 *
 * Allocation failures follow curl's torture mode: for k = 1, 2, ... the
 * k-th allocation of a scenario fails (pk__alloc_fail_at, a -DPK_TESTING
 * build); every call must return 0 or PK_ENOMEM, nothing may crash, and
 * after cleanup pk__alloc_live() is back where it was. The loop ends at
 * the first k the scenario never reaches. Scenarios are single-threaded
 * (PK_POOL_MANUAL_MAINTENANCE: async creates run in pk_pool_maintain on
 * this thread) so the k-th allocation is the same one in every run.
 *
 * Worker threads never call cmocka: they record what they saw and the
 * main thread asserts after joining them. Fork children run under alarm()
 * and report through their exit status and a pipe. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poolkit/future.h>
#include <poolkit/pool.h>

#include "alloc.h"

#include "test_util.h"


/* ---- a resource that counts what happened to it ----------------------- */

#define MAX_RES 4096

struct fres {
    atomic_int destroys;
    atomic_int forgets;
};

struct fctx {
    struct fres res[MAX_RES];
    atomic_int n_created;
    atomic_int n_destroyed;
    atomic_int n_user_free;
    atomic_int n_events;
    atomic_int fail_creates;     /* create fails while non-zero */
    atomic_int fail_checks;      /* check fails while non-zero */
    atomic_int ticket_cbs;       /* ticket callbacks run */
    pid_t parent;                /* hooks report to `pipe_w` outside it */
    int pipe_w;
    /* Event-hook rendezvous (destroy races). */
    atomic_int block_kind;       /* event kind to block in, 0 = none */
    atomic_int in_event;
    atomic_int event_go;
    atomic_int user_free_during_event;
};

static int
f_create(void *user, void **out, pk_error *err)
{
    struct fctx *c = user;
    int i;

    if (atomic_load(&c->fail_creates))
        return pk_error_set(err, PK_ECONNECT, 0, "create fails");
    i = atomic_fetch_add(&c->n_created, 1);
    if (i >= MAX_RES)
        return pk_error_set(err, PK_ENOMEM, 0, "test: out of slots");
    *out = &c->res[i];
    return 0;
}

static void
child_report(struct fctx *c, char what)
{
    /* write() is async-signal-safe; the parent reads the pipe. */
    if (c->pipe_w >= 0 && getpid() != c->parent) {
        ssize_t n = write(c->pipe_w, &what, 1);
        (void)n;
    }
}

static void
f_destroy(void *user, void *res)
{
    struct fctx *c = user;
    struct fres *r = res;

    child_report(c, 'D');
    atomic_fetch_add(&r->destroys, 1);
    atomic_fetch_add(&c->n_destroyed, 1);
}

static void
f_forget(void *user, void *res)
{
    struct fctx *c = user;
    struct fres *r = res;

    child_report(c, 'F');
    atomic_fetch_add(&r->forgets, 1);
}

static void
f_user_free(void *user)
{
    struct fctx *c = user;

    child_report(c, 'U');
    atomic_fetch_add(&c->n_user_free, 1);
}

static int
f_check(void *user, void *res, pk_error *err)
{
    struct fctx *c = user;

    (void)res;
    if (atomic_load(&c->fail_checks))
        return pk_error_set(err, PK_ECHECK, 0, "check fails");
    return 0;
}

/* Blocks in the event named by block_kind until the main thread says go
 * (at most 5 s), and notes whether user_free ran meanwhile: an event hook
 * must not outlive its pool. */
static void
f_event(void *user, const pk_event *ev)
{
    struct fctx *c = user;

    atomic_fetch_add(&c->n_events, 1);
    if (atomic_load(&c->block_kind) != (int)ev->kind)
        return;
    atomic_store(&c->block_kind, 0);
    atomic_store(&c->in_event, 1);
    for (int i = 0; i < 5000 && !atomic_load(&c->event_go); i++)
        sleep_ms(1);
    if (atomic_load(&c->n_user_free))
        atomic_store(&c->user_free_during_event, 1);
    atomic_store(&c->in_event, 0);
}

static struct fctx *
fctx_new(void)
{
    struct fctx *c = calloc(1, sizeof *c);

    assert_non_null(c);
    c->parent = getpid();
    c->pipe_w = -1;
    return c;
}

static pk_pool_options
f_options(struct fctx *c, size_t max_size)
{
    pk_pool_options o = {
        .create = f_create,
        .destroy = f_destroy,
        .check = f_check,
        .forget_in_child = f_forget,
        .user_free = f_user_free,
        .user = c,
        .event = f_event,
        .event_user = c,
        .max_size = max_size,
        .backoff_initial_ms = 1,
        .max_backoff_ms = 1,
    };
    return o;
}

/* Every resource made was destroyed exactly once. */
static void
assert_each_destroyed_once(struct fctx *c)
{
    int n = atomic_load(&c->n_created);

    for (int i = 0; i < n; i++) {
        if (atomic_load(&c->res[i].destroys) != 1)
            fprintf(stderr, "resource %d destroyed %d times\n", i,
                    atomic_load(&c->res[i].destroys));
        assert_int_equal(atomic_load(&c->res[i].destroys), 1);
    }
    assert_int_equal(atomic_load(&c->n_destroyed), n);
}

/* ---- a. allocation failures ------------------------------------------ */

/* An allocating call either worked or said PK_ENOMEM. */
#define ASSERT_OK_OR_ENOMEM(rc)                                           \
    do {                                                                  \
        int rc_ = (rc);                                                   \
        if (rc_ != 0 && rc_ != PK_ENOMEM)                                 \
            fail_msg("%s returned %s", #rc, pk_err_name(rc_));            \
    } while (0)

/* Runs scenario with the k-th allocation failing, for k = 1, 2, ...,
 * until a run never reaches its k-th allocation. */
static void
alloc_loop(const char *name, void (*scenario)(void))
{
    unsigned long k;
    long live0 = pk__alloc_live();

    for (k = 1; k < 10000; k++) {
        unsigned long n;
        pk__alloc_fail_at(k);
        scenario();
        n = pk__alloc_fail_at(0);
        if (pk__alloc_live() != live0)
            fail_msg("%s: with allocation %lu failing, %ld allocations "
                     "leaked", name, k, pk__alloc_live() - live0);
        if (n < k)
            break; /* the k-th allocation never came: all covered */
    }
    printf("  %s: failed each of %lu allocations in turn\n", name, k - 1);
    assert_true(k > 1);
    assert_true(k < 10000);
}

/* Pool create (with a prefilled min_size), acquire through the create
 * path, the async ticket both ready at once and served by a maintenance
 * pass, maintenance itself, close and destroy. */
static void
scenario_pool(void)
{
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 3);
    pk_pool_ticket *t = NULL;
    pk_lease l1, l2, l3;
    bool h1, h2, h3 = false;
    pk_pool *p;
    int rc, ready = 0;

    o.min_size = 1;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    o.check_after_ms = PK_ALWAYS;
    rc = pk_pool_create(&p, &o);
    ASSERT_OK_OR_ENOMEM(rc);
    if (rc) {
        assert_int_equal(atomic_load(&c->n_user_free), 0);
        free(c);
        return;
    }
    rc = pk_pool_acquire(p, &l1, 1000, NULL);
    ASSERT_OK_OR_ENOMEM(rc);
    h1 = rc == 0;
    rc = pk_pool_acquire(p, &l2, 1000, NULL);
    ASSERT_OK_OR_ENOMEM(rc);
    h2 = rc == 0;
    if (h2)
        assert_int_equal(pk_pool_release(p, &l2, PK_RELEASE_OK), 0);

    /* An idle resource: the ticket is ready at once (after its check). */
    rc = pk_pool_acquire_async(p, &t, 1000, NULL, NULL, &ready);
    ASSERT_OK_OR_ENOMEM(rc);
    if (rc == 0) {
        ASSERT_OK_OR_ENOMEM(pk_pool_maintain(p)); /* runs the check */
        rc = pk_pool_ticket_take(t, &l3, NULL);
        if (rc == 0)
            h3 = true;
        else if (rc == PK_EAGAIN)
            pk_pool_ticket_free(t);
        else
            ASSERT_OK_OR_ENOMEM(rc);
    }
    /* Nothing idle: the ticket waits for a create in pk_pool_maintain. */
    rc = pk_pool_acquire_async(p, &t, 1000, NULL, NULL, &ready);
    ASSERT_OK_OR_ENOMEM(rc);
    if (rc == 0) {
        ASSERT_OK_OR_ENOMEM(pk_pool_maintain(p)); /* creates */
        ASSERT_OK_OR_ENOMEM(pk_pool_maintain(p)); /* checks */
        rc = pk_pool_ticket_take(t, &l2, NULL);
        if (rc == 0)
            assert_int_equal(pk_pool_release(p, &l2, PK_RELEASE_BROKEN), 0);
        else if (rc == PK_EAGAIN)
            pk_pool_ticket_free(t); /* its create met the failure */
        else
            ASSERT_OK_OR_ENOMEM(rc);
    }
    ASSERT_OK_OR_ENOMEM(pk_pool_evict_all(p));
    ASSERT_OK_OR_ENOMEM(pk_pool_maintain(p));
    if (h3)
        assert_int_equal(pk_pool_release(p, &l3, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_close(p, 0), h1 ? PK_ETIMEDOUT : 0);
    pk_pool_destroy(p);
    if (h1)
        assert_int_equal(pk_pool_release(p, &l1, PK_RELEASE_OK), 0);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    assert_each_destroyed_once(c);
    free(c);
}

static void
test_pool_alloc_failures_return_enomem_and_leak_nothing(void **state)
{
    (void)state;
    alloc_loop("pool", scenario_pool);
}

/* A group of two members sharing a budget of 2: acquires in one member
 * fill it; an acquire in the other makes the group retire the first's
 * idle resource and create in the second. */
static void
scenario_group(void)
{
    struct fctx *ca = fctx_new(), *cb = fctx_new();
    pk_pool_group *g;
    pk_pool *a = NULL, *b = NULL;
    pk_lease la1, la2, lb;
    bool ha1 = false, ha2 = false, hb = false;
    int rc;

    rc = pk_pool_group_create(&g, 2);
    ASSERT_OK_OR_ENOMEM(rc);
    if (rc)
        goto out_free;
    pk_pool_options oa = f_options(ca, 2), ob = f_options(cb, 2);
    oa.group = g;
    ob.group = g;
    oa.flags = ob.flags = PK_POOL_MANUAL_MAINTENANCE;
    rc = pk_pool_create(&a, &oa);
    ASSERT_OK_OR_ENOMEM(rc);
    if (rc == 0) {
        rc = pk_pool_create(&b, &ob);
        ASSERT_OK_OR_ENOMEM(rc);
    }
    if (a && b) {
        rc = pk_pool_acquire(a, &la1, 1000, NULL);
        ASSERT_OK_OR_ENOMEM(rc);
        ha1 = rc == 0;
        rc = pk_pool_acquire(a, &la2, 1000, NULL);
        ASSERT_OK_OR_ENOMEM(rc);
        ha2 = rc == 0;
        if (ha2)
            assert_int_equal(pk_pool_release(a, &la2, PK_RELEASE_OK), 0);
        rc = pk_pool_acquire(b, &lb, 1000, NULL);
        ASSERT_OK_OR_ENOMEM(rc);
        hb = rc == 0;
        if (hb)
            assert_int_equal(pk_pool_release(b, &lb, PK_RELEASE_DETACH), 0);
        if (ha1)
            assert_int_equal(pk_pool_release(a, &la1, PK_RELEASE_OK), 0);
    }
    if (b)
        assert_int_equal(pk_pool_close(b, 0), 0);
    if (a)
        assert_int_equal(pk_pool_close(a, 0), 0);
    pk_pool_destroy(b);
    pk_pool_destroy(a);
    {
        size_t used, max;
        assert_int_equal(pk_pool_group_usage(g, &used, &max), 0);
        assert_int_equal(used, 0);
    }
    pk_pool_group_destroy(g);
out_free:
    free(ca);
    free(cb);
}

static void
test_group_alloc_failures_return_enomem_and_leak_nothing(void **state)
{
    (void)state;
    alloc_loop("group", scenario_group);
}

static void
count_cb(void *arg, pk_future *f)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* pk_future_create and pk_future_on_complete, before and after the
 * future completes, and wait_any over more futures than fit on the
 * stack. */
static void
scenario_future(void)
{
    enum { N = 40 };
    pk_future *fs[N] = { 0 };
    atomic_int calls = 0;
    int want = 0, rc;
    size_t idx;
    bool all = true;

    for (int i = 0; i < N; i++) {
        rc = pk_future_create(&fs[i], NULL, NULL);
        ASSERT_OK_OR_ENOMEM(rc);
        if (rc)
            all = false;
    }
    if (fs[0]) {
        rc = pk_future_on_complete(fs[0], count_cb, &calls);
        ASSERT_OK_OR_ENOMEM(rc);
        want += rc == 0;
    }
    if (all) {
        rc = pk_future_wait_any(fs, N, 1, &idx);
        if (rc != PK_ETIMEDOUT && rc != PK_ENOMEM)
            fail_msg("wait_any returned %s", pk_err_name(rc));
    }
    if (fs[0]) {
        assert_int_equal(pk_future_complete(fs[0], NULL), 0);
        rc = pk_future_on_complete(fs[0], count_cb, &calls); /* runs now */
        ASSERT_OK_OR_ENOMEM(rc);
        want += rc == 0;
    }
    assert_int_equal(atomic_load(&calls), want);
    for (int i = 0; i < N; i++)
        pk_future_release(fs[i]);
}

static void
test_future_alloc_failures_return_enomem_and_leak_nothing(void **state)
{
    (void)state;
    alloc_loop("future", scenario_future);
}

static void
ticket_cb(void *arg, pk_pool_ticket *t)
{
    struct fctx *c = arg;
    (void)t;
    atomic_fetch_add(&c->ticket_cbs, 1);
}

/* A ticket handed an idle resource that must be checked first, then
 * freed by its owner before the check ran: the check still runs (on the
 * maintenance pass) and its callback never does. The check list used to
 * hold no reference, so the pass read the freed ticket (and, when the
 * check failed, called the callback of a freed ticket). */
static void
test_ticket_freed_while_its_check_is_pending(void **state)
{
    long live0 = pk__alloc_live();

    (void)state;
    for (int fail = 0; fail < 2; fail++) {
        struct fctx *c = fctx_new();
        pk_pool_options o = f_options(c, 2);
        pk_pool_ticket *t;
        pk_pool_stats st;
        pk_lease l;
        pk_pool *p;
        int ready = 1;

        o.flags = PK_POOL_MANUAL_MAINTENANCE;
        o.check_after_ms = PK_ALWAYS;
        assert_int_equal(pk_pool_create(&p, &o), 0);
        assert_int_equal(pk_pool_acquire(p, &l, 1000, NULL), 0);
        assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
        assert_int_equal(pk_pool_acquire_async(p, &t, 1000, ticket_cb, c,
                                               &ready), 0);
        assert_int_equal(ready, 0); /* its check waits for maintenance */
        pk_pool_ticket_free(t);
        atomic_store(&c->fail_checks, fail);
        assert_int_equal(pk_pool_maintain(p), 0);
        assert_int_equal(atomic_load(&c->ticket_cbs), 0);
        assert_int_equal(pk_pool_stats_get(p, &st), 0);
        assert_int_equal(st.lent, 0);
        assert_int_equal(st.idle, fail ? 0 : 1);
        assert_int_equal(pk_pool_close(p, 0), 0);
        assert_each_destroyed_once(c);
        pk_pool_destroy(p);
        free(c);
    }
    assert_int_equal(pk__alloc_live(), live0);
}

/* ---- b. close under load --------------------------------------------- */

struct waiter_arg {
    pk_pool *pool;
    int rc;
    atomic_int started;
};

static void *
waiter_main(void *arg)
{
    struct waiter_arg *w = arg;
    pk_lease l;

    atomic_store(&w->started, 1);
    w->rc = pk_pool_acquire(w->pool, &l, PK_WAIT_FOREVER, NULL);
    if (w->rc == 0)
        pk_pool_release(w->pool, &l, PK_RELEASE_OK);
    return NULL;
}

struct releaser_arg {
    pk_pool *pool;
    pk_lease *leases;
    int n;
    int delay_ms;
    int rc;                      /* first failing release, or 0 */
};

static void *
releaser_main(void *arg)
{
    struct releaser_arg *r = arg;

    r->rc = 0;
    if (r->delay_ms)
        sleep_ms(r->delay_ms);
    for (int i = 0; i < r->n; i++) {
        int rc = pk_pool_release(r->pool, &r->leases[i],
                                 i % 3 == 2 ? PK_RELEASE_BROKEN
                                            : PK_RELEASE_OK);
        if (rc && !r->rc)
            r->rc = rc;
        sched_yield();
    }
    return NULL;
}

static void
wait_for_waiters(pk_pool *p, size_t n)
{
    pk_pool_stats st;

    for (int i = 0; i < 5000; i++) {
        assert_int_equal(pk_pool_stats_get(p, &st), 0);
        if (st.waiters == n)
            return;
        sleep_ms(1);
    }
    fail_msg("%zu waiters never queued (%zu did)", n, st.waiters);
}

/* Four threads wait, the main thread holds every resource; close starts
 * while another thread gives the leases back. */
static void
close_under_load_once(int delay_ms)
{
    enum { MAX = 3, WAITERS = 4 };
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, MAX);
    struct waiter_arg ws[WAITERS];
    struct releaser_arg ra;
    pthread_t wt[WAITERS], rt;
    pk_lease leases[MAX], l;
    pk_pool_stats st;
    pk_pool *p;

    assert_int_equal(pk_pool_create(&p, &o), 0);
    for (int i = 0; i < MAX; i++)
        assert_int_equal(pk_pool_acquire(p, &leases[i], 1000, NULL), 0);
    for (int i = 0; i < WAITERS; i++) {
        ws[i].pool = p;
        ws[i].rc = 1;
        atomic_init(&ws[i].started, 0);
        assert_int_equal(pthread_create(&wt[i], NULL, waiter_main, &ws[i]),
                         0);
    }
    wait_for_waiters(p, WAITERS);
    ra = (struct releaser_arg){ p, leases, MAX, delay_ms, 0 };
    assert_int_equal(pthread_create(&rt, NULL, releaser_main, &ra), 0);
    assert_int_equal(pk_pool_close(p, 5000), 0);
    assert_int_equal(pthread_join(rt, NULL), 0);
    for (int i = 0; i < WAITERS; i++) {
        assert_int_equal(pthread_join(wt[i], NULL), 0);
        /* A waiter served before close began is fine too. */
        if (ws[i].rc != PK_ESHUTDOWN && ws[i].rc != 0)
            fail_msg("waiter %d got %s", i, pk_err_name(ws[i].rc));
    }
    assert_int_equal(ra.rc, 0);
    assert_int_equal(pk_pool_stats_get(p, &st), 0);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_ESHUTDOWN);
    assert_each_destroyed_once(c);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    free(c);
}

static void
test_close_under_load_fails_waiters_and_destroys_each_once(void **state)
{
    long live0 = pk__alloc_live();

    (void)state;
    close_under_load_once(20); /* close waits for the releases */
    for (int i = 0; i < 30; i++)
        close_under_load_once(i % 3); /* releases race close */
    assert_int_equal(pk__alloc_live(), live0);
}

/* Four waiters must all get PK_ESHUTDOWN when nothing is released. */
static void
test_close_wakes_every_waiter_with_eshutdown(void **state)
{
    enum { WAITERS = 4 };
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 1);
    struct waiter_arg ws[WAITERS];
    pthread_t wt[WAITERS];
    pk_lease l;
    pk_pool *p;

    (void)state;
    assert_int_equal(pk_pool_create(&p, &o), 0);
    assert_int_equal(pk_pool_acquire(p, &l, 1000, NULL), 0);
    for (int i = 0; i < WAITERS; i++) {
        ws[i].pool = p;
        ws[i].rc = 1;
        assert_int_equal(pthread_create(&wt[i], NULL, waiter_main, &ws[i]),
                         0);
    }
    wait_for_waiters(p, WAITERS);
    assert_int_equal(pk_pool_close(p, 10), PK_ETIMEDOUT);
    for (int i = 0; i < WAITERS; i++) {
        assert_int_equal(pthread_join(wt[i], NULL), 0);
        assert_int_equal(ws[i].rc, PK_ESHUTDOWN);
    }
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_close(p, 0), 0);
    assert_each_destroyed_once(c);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    free(c);
}

/* destroy with leases out: the memory they point at lives on; releasing
 * them afterwards destroys the resources and then frees the pool (ASan
 * would see a use after free otherwise). */
static void
test_release_after_destroy_frees_pool_last(void **state)
{
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 4);
    pk_lease l[3];
    pk_pool *p;
    long live0 = pk__alloc_live();

    (void)state;
    assert_int_equal(pk_pool_create(&p, &o), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pk_pool_acquire(p, &l[i], 1000, NULL), 0);
    assert_int_equal(pk_pool_close(p, 1), PK_ETIMEDOUT);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&c->n_user_free), 0);
    assert_int_equal(pk_pool_release(p, &l[0], PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_release(p, &l[1], PK_RELEASE_DETACH), 0);
    assert_int_equal(atomic_load(&c->n_user_free), 0);
    assert_int_equal(pk_pool_release(p, &l[2], PK_RELEASE_BROKEN), 0);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    assert_int_equal(atomic_load(&c->res[0].destroys), 1);
    assert_int_equal(atomic_load(&c->res[1].destroys), 0); /* detached */
    assert_int_equal(atomic_load(&c->res[2].destroys), 1);
    assert_int_equal(pk__alloc_live(), live0);
    free(c);
}

struct release_arg {
    pk_pool *pool;
    pk_lease lease;
    int status;
    atomic_int go;
    int rc;
};

static void *
release_main(void *arg)
{
    struct release_arg *r = arg;

    while (!atomic_load(&r->go))
        sched_yield();
    r->rc = pk_pool_release(r->pool, &r->lease, r->status);
    return NULL;
}

/* The last release on one thread, pk_pool_destroy on another, many times
 * over: exactly one of them frees the pool, after every destroy hook. */
static void
test_destroy_racing_last_release_frees_once(void **state)
{
    long live0 = pk__alloc_live();

    (void)state;
    for (int i = 0; i < 300; i++) {
        struct fctx *c = fctx_new();
        pk_pool_options o = f_options(c, 2);
        struct release_arg ra[2];
        pthread_t t[2];
        pk_pool *p;

        assert_int_equal(pk_pool_create(&p, &o), 0);
        for (int k = 0; k < 2; k++) {
            ra[k].pool = p;
            ra[k].status = (i + k) % 3; /* OK, BROKEN, DETACH */
            atomic_init(&ra[k].go, 0);
            assert_int_equal(pk_pool_acquire(p, &ra[k].lease, 1000, NULL),
                             0);
            assert_int_equal(pthread_create(&t[k], NULL, release_main,
                                            &ra[k]), 0);
        }
        assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
        atomic_store(&ra[0].go, 1);
        atomic_store(&ra[1].go, 1);
        if (i & 1)
            sched_yield();
        pk_pool_destroy(p);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(pthread_join(t[k], NULL), 0);
            assert_int_equal(ra[k].rc, 0);
        }
        assert_int_equal(atomic_load(&c->n_user_free), 1);
        for (int k = 0; k < 2; k++)
            assert_int_equal(atomic_load(&c->res[k].destroys),
                             ra[k].status == PK_RELEASE_DETACH ? 0 : 1);
        free(c);
    }
    assert_int_equal(pk__alloc_live(), live0);
}

/* An event hook still running on a releasing thread keeps the pool
 * alive: pk_pool_destroy on another thread must not free it (and call
 * user_free) under the hook. The hook blocks until the main thread has
 * called destroy, then looks. */
static void
event_outlives_destroy_case(int status, pk_event_kind kind)
{
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 2);
    struct release_arg ra;
    pthread_t t;
    pk_pool *p;

    assert_int_equal(pk_pool_create(&p, &o), 0);
    ra.pool = p;
    ra.status = status;
    atomic_init(&ra.go, 1);
    assert_int_equal(pk_pool_acquire(p, &ra.lease, 1000, NULL), 0);
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    atomic_store(&c->block_kind, (int)kind);
    assert_int_equal(pthread_create(&t, NULL, release_main, &ra), 0);
    for (int i = 0; i < 5000 && !atomic_load(&c->in_event); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&c->in_event), 1);
    pk_pool_destroy(p); /* the hook still runs: the pool must stay */
    atomic_store(&c->event_go, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(ra.rc, 0);
    assert_int_equal(atomic_load(&c->user_free_during_event), 0);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    free(c);
}

static void
test_event_hook_never_outlives_pool(void **state)
{
    long live0 = pk__alloc_live();

    (void)state;
    event_outlives_destroy_case(PK_RELEASE_OK, PK_EVENT_DESTROYED);
    event_outlives_destroy_case(PK_RELEASE_DETACH, PK_EVENT_DETACHED);
    assert_int_equal(pk__alloc_live(), live0);
}

/* ---- c. fork ----------------------------------------------------------- */

struct churn_arg {
    pk_pool *pool;
    atomic_int stop;
    atomic_ulong ops;
    int bad;                     /* an unexpected code, or 0 */
};

static void *
churn_main(void *arg)
{
    struct churn_arg *a = arg;

    while (!atomic_load(&a->stop)) {
        pk_lease l;
        int rc = pk_pool_acquire(a->pool, &l, 1, NULL);
        if (rc == 0) {
            sched_yield();
            rc = pk_pool_release(a->pool, &l, PK_RELEASE_OK);
            if (rc)
                a->bad = rc;
        } else if (rc != PK_ETIMEDOUT && rc != PK_EAGAIN) {
            a->bad = rc;
        }
        atomic_fetch_add(&a->ops, 1);
    }
    return NULL;
}

/* In the child: every call on the inherited pool returns PK_EFORKED at
 * once. Returns 0, or the number of the first check that failed. Uses no
 * lock and, until it returns, allocates nothing. */
static int
child_checks(pk_pool *p, pk_lease *held)
{
    pk_pool_ticket *t;
    pk_pool_stats st;
    pk_lease_info info;
    pk_lease l;
    int ready;

    if (pk_pool_acquire(p, &l, 0, NULL) != PK_EFORKED)
        return 1;
    if (pk_pool_acquire(p, &l, 100, NULL) != PK_EFORKED)
        return 2;
    if (pk_pool_release(p, held, PK_RELEASE_OK) != PK_EFORKED)
        return 3;
    if (pk_pool_maintain(p) != PK_EFORKED)
        return 4;
    if (pk_pool_resize(p, 0, 0, 2) != PK_EFORKED)
        return 5;
    if (pk_pool_close(p, 0) != PK_EFORKED)
        return 6;
    if (pk_pool_stats_get(p, &st) != PK_EFORKED)
        return 7;
    if (pk_pool_pause(p) != PK_EFORKED || pk_pool_resume(p) != PK_EFORKED)
        return 8;
    if (pk_pool_evict_all(p) != PK_EFORKED)
        return 9;
    if (pk_pool_acquire_async(p, &t, 10, NULL, NULL, &ready) != PK_EFORKED)
        return 10;
    if (pk_pool_stats_reset_wait(p) != PK_EFORKED)
        return 11;
    if (pk_lease_info_get(held, &info) != PK_EFORKED)
        return 12;
    return 0;
}

/* In the child (plain builds): destroy calls only forget_in_child (the
 * pipe says which hooks ran); then the held lease's release is valid: it
 * forgets its resource, and frees the pool's memory if it was the last
 * lease out (all_back: no other thread held one at fork). A new pool
 * works. */
static int
child_destroy_and_new_pool(pk_pool *p, pk_lease *held, bool all_back)
{
    struct fctx c2;
    pk_pool_options o;
    pk_pool *q;
    pk_lease l;
    long live = pk__alloc_live();

    pk_pool_destroy(p);
    if (pk__alloc_live() != live)
        return 25; /* freed under a lease still out */
    if (pk_pool_release(p, held, PK_RELEASE_OK) != 0)
        return 26;
    if (held->pool_ || held->slot_)
        return 27;
    if (all_back && pk__alloc_live() >= live)
        return 28; /* the last lease is back: the memory goes */
    memset(&c2, 0, sizeof c2);
    c2.pipe_w = -1;
    o = f_options(&c2, 2);
    o.event = NULL;
    if (pk_pool_create(&q, &o) != 0)
        return 20;
    if (pk_pool_acquire(q, &l, 100, NULL) != 0)
        return 21;
    if (pk_pool_release(q, &l, PK_RELEASE_OK) != 0)
        return 22;
    if (pk_pool_close(q, 100) != 0)
        return 23;
    pk_pool_destroy(q);
    if (atomic_load(&c2.n_destroyed) != 1 || atomic_load(&c2.n_user_free) != 1)
        return 24;
    return 0;
}

/* Forks; the child runs the checks (and destroy, if asked: all_back says
 * held is the only lease out) under alarm(5). Returns what the pipe got:
 * counts of 'F', 'D' and 'U'. */
static void
fork_and_check(pk_pool *p, struct fctx *c, pk_lease *held, bool destroy,
               bool all_back, int counts[3])
{
    int fds[2];
    pid_t pid;
    int status;
    char buf[256];
    ssize_t n;

    assert_int_equal(pipe(fds), 0);
    c->pipe_w = fds[1];
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int rc;
        alarm(5);
        close(fds[0]);
        rc = child_checks(p, held);
        if (rc == 0 && destroy)
            rc = child_destroy_and_new_pool(p, held, all_back);
        _exit(rc);
    }
    close(fds[1]);
    c->pipe_w = -1;
    counts[0] = counts[1] = counts[2] = 0;
    while ((n = read(fds[0], buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++)
            counts[buf[i] == 'F' ? 0 : buf[i] == 'D' ? 1 : 2]++;
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (hung: alarm)" : "");
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status))
        fail_msg("child check %d failed", WEXITSTATUS(status));
}

/* Threads acquire and release in the parent while it forks. */
static void
test_fork_while_in_use_child_gets_eforked(void **state)
{
    enum { CHURN = 3 };
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 4);
    struct churn_arg ca;
    pthread_t t[CHURN];
    pk_lease held, l;
    pk_pool *p;
    int counts[3];
    bool destroy = !SANITIZED;

    (void)state;
    if (!destroy)
        printf("  skip: destroy in a child forked from a threaded parent "
               "(sanitizer build: the child may hang in the sanitizer's "
               "allocator); the child checks PK_EFORKED only\n");
    assert_int_equal(pk_pool_create(&p, &o), 0);
    assert_int_equal(pk_pool_acquire(p, &held, 1000, NULL), 0);
    ca.pool = p;
    atomic_init(&ca.stop, 0);
    atomic_init(&ca.ops, 0);
    ca.bad = 0;
    for (int i = 0; i < CHURN; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &ca), 0);
    for (int round = 0; round < 5; round++) {
        unsigned long before = atomic_load(&ca.ops);
        while (atomic_load(&ca.ops) < before + 50)
            sched_yield();
        fork_and_check(p, c, &held, destroy, false, counts);
        if (destroy) {
            /* The held lease at least, on its release after destroy;
             * never destroy or user_free. */
            assert_true(counts[0] >= 1);
            assert_true(counts[0] <= 4 + CHURN);
        }
        assert_int_equal(counts[1], 0);
        assert_int_equal(counts[2], 0);
    }
    atomic_store(&ca.stop, 1);
    for (int i = 0; i < CHURN; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(ca.bad, 0);
    /* The parent's pool keeps working. */
    assert_int_equal(pk_pool_acquire(p, &l, 1000, NULL), 0);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_BROKEN), 0);
    assert_int_equal(pk_pool_release(p, &held, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_close(p, 1000), 0);
    for (int i = 0; i < atomic_load(&c->n_created); i++)
        assert_int_equal(atomic_load(&c->res[i].forgets), 0);
    assert_each_destroyed_once(c);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&c->n_user_free), 1);
    free(c);
}

/* With no other thread alive at fork (safe under sanitizers too): the
 * child's destroy calls forget_in_child once per idle resource, and no
 * destroy hook nor user_free; the lent one is forgotten when its lease
 * comes back after the destroy, which frees the pool's memory (before,
 * that release read the freed pool: PK_EINVAL, or ASan's
 * heap-use-after-free). */
static void
test_destroy_in_child_calls_only_forget_in_child(void **state)
{
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 4);
    pk_lease l1, l2, l3;
    pk_pool *p;
    int counts[3];

    (void)state;
    assert_int_equal(pk_pool_create(&p, &o), 0);
    assert_int_equal(pk_pool_acquire(p, &l1, 1000, NULL), 0);
    assert_int_equal(pk_pool_acquire(p, &l2, 1000, NULL), 0);
    assert_int_equal(pk_pool_acquire(p, &l3, 1000, NULL), 0);
    assert_int_equal(pk_pool_release(p, &l3, PK_RELEASE_OK), 0); /* idle */
    assert_int_equal(pk_pool_release(p, &l2, PK_RELEASE_BROKEN), 0);
    fork_and_check(p, c, &l1, true, true, counts);
    assert_int_equal(counts[0], 2); /* one idle, then the lent one */
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 0);
    assert_int_equal(pk_pool_release(p, &l1, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_close(p, 0), 0);
    assert_each_destroyed_once(c);
    pk_pool_destroy(p);
    free(c);
}

/* In the child: a lease's info, a ticket and a group of the parent are
 * PK_EFORKED too (before, the child read lease facts under the parent's
 * lock, took a lease out of an inherited ticket, and read the group).
 * No thread is alive at fork: the pool has no check hook, so the ready
 * ticket started no helper. */
static int
child_ticket_group_checks(pk_lease *held, pk_pool_ticket *t,
                          pk_pool_group *g)
{
    pk_lease_info info;
    pk_lease l;
    pk_error err;
    size_t used, max;

    if (pk_lease_info_get(held, &info) != PK_EFORKED)
        return 30;
    pk_error_clear(&err);
    if (pk_pool_ticket_take(t, &l, &err) != PK_EFORKED ||
        err.code != PK_EFORKED)
        return 31;
    if (pk_pool_group_usage(g, &used, &max) != PK_EFORKED)
        return 32;
    pk_pool_ticket_free(t);   /* the child's copy only */
    pk_pool_group_destroy(g); /* memory only */
    return 0;
}

static void
test_fork_child_gets_eforked_from_leases_tickets_groups(void **state)
{
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 2);
    pk_pool_group *g;
    pk_pool_ticket *t;
    pk_pool *p;
    pk_lease held, l;
    int ready = 0, status;
    pid_t pid;

    (void)state;
    assert_int_equal(pk_pool_group_create(&g, 2), 0);
    o.check = NULL;
    o.group = g;
    assert_int_equal(pk_pool_create(&p, &o), 0);
    assert_int_equal(pk_pool_acquire(p, &held, 1000, NULL), 0);
    assert_int_equal(pk_pool_acquire(p, &l, 1000, NULL), 0);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_acquire_async(p, &t, 1000, NULL, NULL, &ready),
                     0);
    assert_int_equal(ready, 1);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(5);
        _exit(child_ticket_group_checks(&held, t, g));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status))
        fail_msg("child check %d failed", WEXITSTATUS(status));
    /* The parent's ticket, lease and group are untouched. */
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_release(p, &held, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_close(p, 1000), 0);
    pk_pool_destroy(p);
    pk_pool_group_destroy(g);
    assert_each_destroyed_once(c);
    free(c);
}

/* ---- the helper thread cannot start ------------------------------------ */

/* A process at its thread limit: a pool that needs its helper thread
 * says so at create, and a non-blocking acquire that would wait for a
 * create on it fails at once instead of waiting for ever. */
static void
test_helper_thread_that_cannot_start_fails_cleanly(void **state)
{
    long live0 = pk__alloc_live();
    struct fctx *c = fctx_new();
    pk_pool_options o = f_options(c, 2);
    pk_pool_ticket *t;
    pk_pool *p;
    pk_lease l;
    int ready = 0;

    (void)state;
    o.idle_timeout_ms = 60000; /* a policy the helper thread runs */
    pk__thread_fail_next(1);
    assert_int_equal(pk_pool_create(&p, &o), PK_ECREATE);
    assert_int_equal(pk__thread_fail_next(0), 0);
    assert_int_equal(pk__alloc_live(), live0);

    o.idle_timeout_ms = 0; /* no helper until a ticket needs one */
    assert_int_equal(pk_pool_create(&p, &o), 0);
    pk__thread_fail_next(1);
    assert_int_equal(pk_pool_acquire_async(p, &t, 1000, NULL, NULL, &ready),
                     PK_ECREATE);
    assert_int_equal(pk__thread_fail_next(0), 0);
    /* Thread creation works again: so does the ticket. */
    assert_int_equal(pk_pool_acquire_async(p, &t, 5000, NULL, NULL, &ready),
                     0);
    int rc = PK_EAGAIN;
    for (int i = 0; i < 5000 && rc == PK_EAGAIN; i++) {
        rc = pk_pool_ticket_take(t, &l, NULL);
        if (rc == PK_EAGAIN)
            sleep_ms(1);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
    pk_pool_destroy(p);
    assert_each_destroyed_once(c);
    free(c);
    assert_int_equal(pk__alloc_live(), live0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_alloc_failures_return_enomem_and_leak_nothing),
        cmocka_unit_test(test_group_alloc_failures_return_enomem_and_leak_nothing),
        cmocka_unit_test(test_future_alloc_failures_return_enomem_and_leak_nothing),
        cmocka_unit_test(test_ticket_freed_while_its_check_is_pending),
        cmocka_unit_test(test_close_under_load_fails_waiters_and_destroys_each_once),
        cmocka_unit_test(test_close_wakes_every_waiter_with_eshutdown),
        cmocka_unit_test(test_release_after_destroy_frees_pool_last),
        cmocka_unit_test(test_destroy_racing_last_release_frees_once),
        cmocka_unit_test(test_event_hook_never_outlives_pool),
        cmocka_unit_test(test_fork_while_in_use_child_gets_eforked),
        cmocka_unit_test(test_destroy_in_child_calls_only_forget_in_child),
        cmocka_unit_test(test_fork_child_gets_eforked_from_leases_tickets_groups),
        cmocka_unit_test(test_helper_thread_that_cannot_start_fails_cleanly),
    };

    return cmocka_run_group_tests_name("pool_faults", tests, NULL, NULL);
}
