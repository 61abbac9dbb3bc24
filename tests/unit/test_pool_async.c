/* tests/unit/test_pool_async.c - the non-blocking acquire for event loops:
 * tickets that are ready at once or later (callback and eventfd), creates
 * that run off the caller's thread (the helper thread, or inside
 * pk_pool_maintain with PK_POOL_MANUAL_MAINTENANCE), deadlines, withdrawal,
 * close, create errors, and arrival order shared with blocking waiters.
 *
 * Callbacks run on pool threads: they only record (atomics), and the test
 * thread asserts. Readiness is awaited with poll() on the ticket's fd. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poolkit/pool.h>

#include "pool_helpers.h"
#include "prng.h"

#define LONG_MS 5000

static ph_ctx ctx;
static ph_clock clk;
static ph_fixture fx = { &ctx, 1, &clk, 0 };

/* What a ticket callback saw. */
struct cb_rec {
    _Atomic int calls;
    _Atomic int order;          /* fetch_add(seq) at the call, if seq */
    _Atomic int *seq;
    pthread_t thread;
    pk_pool_ticket *ticket;
};

static void
record_cb(void *arg, pk_pool_ticket *t)
{
    struct cb_rec *r = arg;

    r->thread = pthread_self();
    r->ticket = t;
    if (r->seq)
        atomic_store(&r->order, atomic_fetch_add(r->seq, 1));
    atomic_fetch_add(&r->calls, 1); /* last: the test waits on it */
}

/* pk_pool_acquire_async with record_cb recording into cb; asserts that
 * the ticket is not ready at once. */
static pk_pool_ticket *
acquire_pending(pk_pool *p, struct cb_rec *cb)
{
    pk_pool_ticket *t = NULL;
    int ready = -1;

    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, record_cb, cb,
                                           &ready), 0);
    assert_int_equal(ready, 0);
    return t;
}

/* ---- arguments ---------------------------------------------------------- */

static void
test_async_functions_reject_invalid_arguments(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t = NULL;
    pk_lease l;
    int ready = -1;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire_async(NULL, &t, 10, NULL, NULL, &ready),
                     PK_EINVAL);
    assert_int_equal(pk_pool_acquire_async(p, NULL, 10, NULL, NULL, &ready),
                     PK_EINVAL);
    assert_int_equal(pk_pool_acquire_async(p, &t, -5, NULL, NULL, &ready),
                     PK_EINVAL);
    assert_null(t);
    assert_int_equal(ph_stats(p).waiters, 0);
    assert_int_equal(pk_pool_ticket_fd(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_ticket_take(NULL, &l, NULL), PK_EINVAL);
    pk_pool_ticket_free(NULL);
    /* A real ticket with no lease to fill: rejected, and it stays. */
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(pk_pool_acquire_async(p, &t, 10, NULL, NULL, &ready), 0);
    assert_int_equal(ready, 1);
    assert_int_equal(pk_pool_ticket_take(t, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_async_acquire_on_closed_pool_returns_eshutdown(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t = NULL;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_close(p, 0), 0);
    assert_int_equal(pk_pool_acquire_async(p, &t, 10, NULL, NULL, NULL),
                     PK_ESHUTDOWN);
    pk_pool_destroy(p);
}

/* ---- readiness ---------------------------------------------------------- */

static void
test_async_acquire_is_ready_at_once_when_idle(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    pk_lease_info info;
    struct cb_rec cb;
    void *res;
    int ready = 0, line;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    ph_give(p, &l);
    line = __LINE__; assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, record_cb, &cb, &ready), 0);
    assert_int_equal(ready, 1);
    assert_true(pk_pool_ticket_fd(t) >= 0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), 0));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_ptr_equal(l.resource, res);
    assert_int_equal(atomic_load(&cb.calls), 0); /* ready at once: no cb */
    assert_int_equal(pk_lease_info_get(&l, &info), 0);
    assert_string_equal(info.file, __FILE__);
    assert_int_equal(info.line, line);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

struct releaser {
    pk_pool *p;
    pk_lease l;
    pthread_t t;
    int rc;
};

static void *
releaser_main(void *arg)
{
    struct releaser *r = arg;
    r->rc = pk_pool_release(r->p, &r->l, PK_RELEASE_OK);
    return NULL;
}

static void
test_async_ticket_becomes_ready_when_another_thread_releases(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    struct cb_rec cb;
    struct releaser r;
    void *res;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    r.p = p;
    res = ph_take(p, &r.l);
    t = acquire_pending(p, &cb);
    assert_int_equal(ph_stats(p).waiters, 1);
    assert_false(ph_fd_readable(pk_pool_ticket_fd(t), 0));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), PK_EAGAIN);
    struct timespec nap = { 0, 20 * 1000 * 1000 };
    nanosleep(&nap, NULL); /* the ticket waits at least this long */
    assert_int_equal(pthread_create(&r.t, NULL, releaser_main, &r), 0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    pthread_join(r.t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_ptr_equal(cb.ticket, t);
    assert_true(pthread_equal(cb.thread, r.t)); /* on the releasing thread */
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_ptr_equal(l.resource, res);
    /* The ticket's wait counts in the wait figures, as a blocking one. */
    assert_true(ph_stats(p).wait_max_ns >= 20 * 1000 * 1000);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_async_create_runs_on_helper_thread_not_caller(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    struct cb_rec cb;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    t = acquire_pending(p, &cb);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_false(pthread_equal(ph_create_thread(&ctx, 0), pthread_self()));
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_false(pthread_equal(cb.thread, pthread_self()));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_non_null(l.resource);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_async_create_runs_inside_maintain_when_manual(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    struct cb_rec cb;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    t = acquire_pending(p, &cb);
    /* No helper thread: nothing happens until the embedder's loop. */
    assert_false(ph_fd_readable(pk_pool_ticket_fd(t), 30));
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_true(pthread_equal(ph_create_thread(&ctx, 0), pthread_self()));
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), 0));
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_async_ticket_times_out_with_etimedout(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease held, l;
    struct cb_rec cb;
    uint64_t t0;
    pk_pool_stats st;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    t0 = ph_now_ns();
    assert_int_equal(pk_pool_acquire_async(p, &t, 50, record_cb, &cb, NULL),
                     0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_true(ph_now_ns() - t0 >= 50 * PH_MS);
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), PK_ETIMEDOUT);
    st = ph_stats(p);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.waiters, 0);
    /* The helper emits the event just after it readies the ticket. */
    assert_true(ph_wait_events(&ctx, PK_EVENT_TIMEOUT, 1, LONG_MS));
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_TIMEOUT), 1);
    ph_give(p, &held);
    assert_int_equal(ph_stats(p).idle, 1); /* not handed to the dead ticket */
    pk_pool_destroy(p);
}

static void
test_async_zero_timeout_means_acquire_timeout_option(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease held, l;
    uint64_t t0;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    o.acquire_timeout_ms = 40;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    t0 = ph_now_ns();
    assert_int_equal(pk_pool_acquire_async(p, &t, 0, NULL, NULL, NULL), 0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_true(ph_now_ns() - t0 >= 40 * PH_MS);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), PK_ETIMEDOUT);
    ph_give(p, &held);
    pk_pool_destroy(p);
}

static void
test_async_create_error_reaches_ticket(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    pk_error err;

    (void)state;
    ph_options(&o, &ctx, NULL);
    /* The next attempt 5-10 s after the first failure: past the ticket's
     * deadline, so the ticket fails once the helper's create has, with
     * that create's error as is: the create was made for it. */
    o.backoff_initial_ms = 10000;
    o.max_backoff_waiting_ms = PK_NEVER;
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "connection refused");
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL, NULL),
                     0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    pk_error_clear(&err);
    assert_int_equal(pk_pool_ticket_take(t, &l, &err), PK_ECONNECT);
    assert_int_equal(err.code, PK_ECONNECT);
    assert_int_equal(err.sys, 111);
    assert_string_equal(err.msg, "connection refused");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).timeouts, 0);
    pk_pool_destroy(p);
}

/* ---- withdrawal and close ----------------------------------------------- */

static void
test_async_ticket_free_withdraws_pending_ticket(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease held;
    struct cb_rec cb;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, record_cb, &cb,
                                           NULL), 0);
    assert_int_equal(ph_stats(p).waiters, 1);
    pk_pool_ticket_free(t);
    assert_int_equal(ph_stats(p).waiters, 0);
    ph_give(p, &held);
    assert_int_equal(ph_stats(p).idle, 1);
    assert_int_equal(ph_stats(p).lent, 0);
    assert_int_equal(atomic_load(&cb.calls), 0);
    pk_pool_destroy(p);
}

static void
test_async_ticket_free_returns_a_ready_lease(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    int ready = 0;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    /* Ready at once, never taken. */
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL,
                                           &ready), 0);
    assert_int_equal(ready, 1);
    assert_int_equal(ph_stats(p).lent, 1);
    pk_pool_ticket_free(t);
    assert_int_equal(ph_stats(p).lent, 0);
    assert_int_equal(ph_stats(p).idle, 1);
    /* Served by a release later, never taken. */
    ph_take(p, &l);
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL,
                                           &ready), 0);
    assert_int_equal(ready, 0);
    ph_give(p, &l);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(ph_stats(p).lent, 1);
    pk_pool_ticket_free(t);
    assert_int_equal(ph_stats(p).lent, 0);
    assert_int_equal(ph_stats(p).idle, 1);
    assert_int_equal(atomic_load(&ctx.created), 1);
    pk_pool_destroy(p);
}

static void
test_async_close_gives_pending_tickets_eshutdown(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease held, l;
    struct cb_rec cb;

    (void)state;
    memset(&cb, 0, sizeof cb);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, record_cb, &cb,
                                           NULL), 0);
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), PK_ESHUTDOWN);
    ph_give(p, &held);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    pk_pool_destroy(p);
}

/* ---- fairness ----------------------------------------------------------- */

static void
test_async_and_blocking_waiters_share_arrival_order(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease held, l;
    ph_acquirer w1, w3;
    struct cb_rec cb;
    _Atomic int seq = 0;

    (void)state;
    memset(&cb, 0, sizeof cb);
    cb.seq = &seq;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    /* Blocking, async, blocking: each queued before the next arrives. */
    assert_int_equal(ph_acquirer_start(&w1, p, LONG_MS, true, &seq), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, record_cb, &cb,
                                           NULL), 0);
    assert_int_equal(ph_stats(p).waiters, 2);
    assert_int_equal(ph_acquirer_start(&w3, p, LONG_MS, true, &seq), 0);
    assert_true(ph_wait_waiters(p, 3, LONG_MS));
    ph_give(p, &held);
    ph_acquirer_join(&w1);
    assert_int_equal(w1.rc, 0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    ph_give(p, &l);
    ph_acquirer_join(&w3);
    assert_int_equal(w3.rc, 0);
    assert_int_equal(w1.order, 0);
    assert_int_equal(atomic_load(&cb.order), 1);
    assert_int_equal(w3.order, 2);
    pk_pool_destroy(p);
}

/* ---- the callback against take and free ---------------------------------- */

/* A callback that holds on until told (the test's stand-in for a callback
 * caught mid-way by a preemption), then tries to take its ticket. */
struct slow_cb {
    _Atomic int entered, go, left;
    _Atomic int take_rc;
    pk_lease lease;
};

static void
slow_take_cb(void *arg, pk_pool_ticket *t)
{
    struct slow_cb *c = arg;

    atomic_store(&c->entered, 1);
    for (int i = 0; i < 5000 && !atomic_load(&c->go); i++)
        ph_sleep_ms(1);
    atomic_store(&c->take_rc, pk_pool_ticket_take(t, &c->lease, NULL));
    atomic_store(&c->left, 1);
}

struct consumer {
    pk_pool_ticket *t;
    bool take;                  /* take, else free */
    struct slow_cb *cb;
    pk_lease lease;
    int rc;
    int cb_left_at_return;      /* the callback had returned by then */
    _Atomic int returned;
};

static void *
consumer_main(void *arg)
{
    struct consumer *c = arg;

    if (c->take) {
        c->rc = pk_pool_ticket_take(c->t, &c->lease, NULL);
    } else {
        pk_pool_ticket_free(c->t);
        c->rc = 0;
    }
    c->cb_left_at_return = atomic_load(&c->cb->left);
    atomic_store(&c->returned, 1);
    return NULL;
}

/* The owner takes (or frees) a ticket whose callback is running on the
 * releasing thread: the call waits for the callback, whose own take gets
 * PK_EINVAL, so the result is handed out once. (Before: the owner's call
 * returned at once and the callback took a second lease of the slot.) */
static void
owner_races_running_callback(bool take)
{
    pk_pool_options o;
    pk_pool *p;
    struct slow_cb cb;
    struct consumer c;
    struct releaser r;
    pthread_t ct;
    int ready = -1;

    memset(&cb, 0, sizeof cb);
    memset(&c, 0, sizeof c);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    r.p = p;
    ph_take(p, &r.l);
    assert_int_equal(pk_pool_acquire_async(p, &c.t, LONG_MS, slow_take_cb,
                                           &cb, &ready), 0);
    assert_int_equal(ready, 0);
    assert_int_equal(pthread_create(&r.t, NULL, releaser_main, &r), 0);
    assert_true(ph_wait_atomic(&cb.entered, 1, LONG_MS));
    c.take = take;
    c.cb = &cb;
    assert_int_equal(pthread_create(&ct, NULL, consumer_main, &c), 0);
    ph_sleep_ms(50);
    assert_int_equal(atomic_load(&c.returned), 0); /* waits for the cb */
    atomic_store(&cb.go, 1);
    pthread_join(ct, NULL);
    pthread_join(r.t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(c.cb_left_at_return, 1);
    assert_int_equal(atomic_load(&cb.take_rc), PK_EINVAL);
    if (take) {
        assert_int_equal(c.rc, 0);
        ph_give(p, &c.lease);
    }
    assert_int_equal(ph_stats(p).lent, 0);
    assert_int_equal(ph_stats(p).idle, 1);
    pk_pool_destroy(p);
}

static void
test_async_take_waits_for_running_callback(void **state)
{
    (void)state;
    owner_races_running_callback(true);
}

static void
test_async_free_waits_for_running_callback(void **state)
{
    (void)state;
    owner_races_running_callback(false);
}

/* A callback may take its own ticket (no wait on itself). */
static void
take_in_cb(void *arg, pk_pool_ticket *t)
{
    struct slow_cb *c = arg;

    atomic_store(&c->take_rc, pk_pool_ticket_take(t, &c->lease, NULL));
    atomic_store(&c->left, 1);
}

static void
test_async_callback_may_take_its_ticket(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    struct slow_cb cb;
    struct releaser r;
    int ready = -1;

    (void)state;
    memset(&cb, 0, sizeof cb);
    atomic_store(&cb.take_rc, 1);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    r.p = p;
    ph_take(p, &r.l);
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, take_in_cb, &cb,
                                           &ready), 0);
    assert_int_equal(ready, 0);
    assert_int_equal(pthread_create(&r.t, NULL, releaser_main, &r), 0);
    pthread_join(r.t, NULL);
    assert_int_equal(atomic_load(&cb.left), 1);
    assert_int_equal(atomic_load(&cb.take_rc), 0);
    assert_int_equal(ph_stats(p).lent, 1);
    ph_give(p, &cb.lease);
    pk_pool_destroy(p);
}

/* Stress: the owner polls take, or frees, while another thread's releases
 * make the ticket ready; the callback records whether its request was
 * already done (taken or freed: a real program frees arg there). It must
 * never be: the callback runs before take or free returns, or not at all.
 * Requests are kept to the end so the old code counts instead of
 * crashing. */
struct sreq {
    _Atomic int done;
    _Atomic int calls;
};

static _Atomic long stress_late, stress_twice;
static _Atomic int stress_stop;

static void
stress_cb(void *arg, pk_pool_ticket *t)
{
    struct sreq *r = arg;

    (void)t;
    if (atomic_fetch_add(&r->calls, 1) > 0)
        atomic_fetch_add(&stress_twice, 1);
    if (atomic_load(&r->done))
        atomic_fetch_add(&stress_late, 1);
}

static void *
stress_releaser(void *arg)
{
    pk_pool *p = arg;

    while (!atomic_load(&stress_stop)) {
        pk_lease l;
        if (pk_pool_acquire(p, &l, 100, NULL) == 0) {
            for (volatile int i = 0; i < 50; i++) {
            }
            pk_pool_release(p, &l, PK_RELEASE_OK);
        }
    }
    return NULL;
}

static void
test_async_callback_never_runs_after_take_or_free_stress(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pthread_t th;
    long n = (long)(40000 * pk_test_scale());
    struct sreq *reqs;
    long pending = 0;

    (void)state;
    if (n < 2000)
        n = 2000;
    reqs = calloc((size_t)n, sizeof *reqs);
    assert_non_null(reqs);
    atomic_store(&stress_late, 0);
    atomic_store(&stress_twice, 0);
    atomic_store(&stress_stop, 0);
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    assert_int_equal(pthread_create(&th, NULL, stress_releaser, p), 0);
    for (long i = 0; i < n; i++) {
        pk_pool_ticket *t;
        int ready, rc;
        rc = pk_pool_acquire_async(p, &t, LONG_MS, stress_cb, &reqs[i],
                                   &ready);
        assert_int_equal(rc, 0);
        if (!ready)
            pending++;
        if (i % 2 == 0) {
            pk_pool_ticket_free(t);
        } else {
            pk_lease l;
            while ((rc = pk_pool_ticket_take(t, &l, NULL)) == PK_EAGAIN) {
            }
            assert_int_equal(rc, 0);
            assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), 0);
        }
        atomic_store(&reqs[i].done, 1);
    }
    atomic_store(&stress_stop, 1);
    pthread_join(th, NULL);
    assert_int_equal(pk_pool_close(p, LONG_MS), 0);
    pk_pool_destroy(p);
    printf("  %ld tickets, %ld pending at first\n", n, pending);
    assert_int_equal(atomic_load(&stress_late), 0);
    assert_int_equal(atomic_load(&stress_twice), 0);
    free(reqs);
}

/* Open descriptors of this process. */
static int
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* A ticket makes its eventfd only when asked (issue 10): a ticket that is
 * only taken costs no descriptor, one asked for after it turned ready
 * gets a readable one, asking twice gives the same, and take closes it. */
static void
test_async_ticket_makes_its_eventfd_only_when_asked(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l, held;
    int ready = 0, fd, before;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &held);
    before = open_fds();
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL,
                                           &ready), 0);
    assert_int_equal(ready, 0);
    assert_int_equal(open_fds(), before); /* none yet */
    ph_give(p, &held);                     /* the ticket is served */
    fd = pk_pool_ticket_fd(t);             /* asked for late */
    assert_true(fd >= 0);
    assert_int_equal(pk_pool_ticket_fd(t), fd);
    assert_int_equal(open_fds(), before + 1);
    assert_true(ph_fd_readable(fd, LONG_MS));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_int_equal(open_fds(), before); /* closed with the ticket */
    ph_give(p, &l);
    /* Never asked: no descriptor ever. */
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL,
                                           &ready), 0);
    assert_int_equal(ready, 1);
    assert_int_equal(open_fds(), before);
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_async_functions_reject_invalid_arguments),
        T(test_async_acquire_on_closed_pool_returns_eshutdown),
        T(test_async_acquire_is_ready_at_once_when_idle),
        T(test_async_ticket_makes_its_eventfd_only_when_asked),
        T(test_async_ticket_becomes_ready_when_another_thread_releases),
        T(test_async_create_runs_on_helper_thread_not_caller),
        T(test_async_create_runs_inside_maintain_when_manual),
        T(test_async_ticket_times_out_with_etimedout),
        T(test_async_zero_timeout_means_acquire_timeout_option),
        T(test_async_create_error_reaches_ticket),
        T(test_async_ticket_free_withdraws_pending_ticket),
        T(test_async_ticket_free_returns_a_ready_lease),
        T(test_async_close_gives_pending_tickets_eshutdown),
        T(test_async_and_blocking_waiters_share_arrival_order),
        T(test_async_take_waits_for_running_callback),
        T(test_async_free_waits_for_running_callback),
        T(test_async_callback_may_take_its_ticket),
        T(test_async_callback_never_runs_after_take_or_free_stress),
    };
    (void)clk;
    return cmocka_run_group_tests_name("pool_async", tests, NULL, NULL);
}
