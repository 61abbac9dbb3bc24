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

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <poolkit/pool.h>

#include "pool_helpers.h"

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
    assert_int_equal(pthread_create(&r.t, NULL, releaser_main, &r), 0);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    pthread_join(r.t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(atomic_load(&cb.calls), 1);
    assert_ptr_equal(cb.ticket, t);
    assert_true(pthread_equal(cb.thread, r.t)); /* on the releasing thread */
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_ptr_equal(l.resource, res);
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

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_async_functions_reject_invalid_arguments),
        T(test_async_acquire_on_closed_pool_returns_eshutdown),
        T(test_async_acquire_is_ready_at_once_when_idle),
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
    };
    (void)clk;
    return cmocka_run_group_tests_name("pool_async", tests, NULL, NULL);
}
