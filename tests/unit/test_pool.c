/* tests/unit/test_pool.c - pk_pool: arguments, lending and waiting, create
 * failures and backoff, idle order, release kinds, generations and
 * eviction, pause and resize, maintenance policies driven by a manual
 * clock, events, stats, lease info, close and destroy.
 *
 * Time policies run on a ph_clock (options.clock) with
 * PK_POOL_MANUAL_MAINTENANCE and pk_pool_maintain(), so nothing sleeps to
 * make a resource expire. Helper threads never assert: they record into
 * ph_acquirer / ph_ctx and the test thread asserts after joining them.
 * Every test makes its own pool; teardown checks that every resource was
 * destroyed (or freed by the test) and that poolkit leaked no memory. */
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

/* Generous: only reached when the pool is broken. */
#define LONG_MS 5000

static ph_ctx ctx;
static ph_clock clk;
static ph_fixture fx = { &ctx, 1, &clk, 0 };

/* ---- arguments ---------------------------------------------------------- */

static void
test_options_init_rejects_null_and_spells_out_defaults(void **state)
{
    pk_pool_options o;

    (void)state;
    assert_int_equal(pk_pool_options_init(NULL), PK_EINVAL);
    memset(&o, 0x5a, sizeof o);
    assert_int_equal(pk_pool_options_init(&o), 0);
    assert_null(o.create);
    assert_int_equal(o.max_size, 8);
    assert_int_equal(o.max_creating, 2);
    assert_int_equal(o.acquire_timeout_ms, 30000);
    assert_int_equal(o.idle_timeout_ms, PK_NEVER);
    assert_int_equal(o.check_after_ms, 1000);
    assert_int_equal(o.order, PK_POOL_LIFO);
    assert_int_equal(o.flags, 0);
}

static void
test_create_rejects_invalid_options(void **state)
{
    pk_pool_options o;
    pk_pool *p = (pk_pool *)&o; /* must be overwritten with NULL */

    (void)state;
    ph_options(&o, &ctx, NULL);
    assert_int_equal(pk_pool_create(NULL, &o), PK_EINVAL);
    assert_int_equal(pk_pool_create(&p, NULL), PK_EINVAL);
    assert_null(p);

#define REJECTS(field, value)                                               \
    do {                                                                    \
        ph_options(&o, &ctx, NULL);                                         \
        o.field = value;                                                    \
        p = (pk_pool *)&o;                                                  \
        assert_int_equal(pk_pool_create(&p, &o), PK_EINVAL);                \
        assert_null(p);                                                     \
    } while (0)

    REJECTS(create, NULL);
    REJECTS(min_idle, 9);              /* above the default max_size 8 */
    REJECTS(min_size, 9);
    REJECTS(order, 2);
    REJECTS(order, -1);
    REJECTS(flags, 1u << 7);
    REJECTS(idle_timeout_ms, -5);
    REJECTS(acquire_timeout_ms, -3);
    REJECTS(max_lifetime_ms, -7);
    REJECTS(check_after_ms, -100);
    REJECTS(check_interval_ms, -3);
    REJECTS(held_too_long_ms, -3);
    REJECTS(maintain_interval_ms, -5);
    REJECTS(maintain_interval_ms, PK_NEVER);
    REJECTS(backoff_initial_ms, -4);
    REJECTS(max_backoff_ms, -4);
    REJECTS(lifetime_jitter_ms, -1);
#undef REJECTS
    /* min_size above an explicit max_size; jitter longer than the life. */
    ph_options(&o, &ctx, NULL);
    o.max_size = 2;
    o.min_size = 3;
    assert_int_equal(pk_pool_create(&p, &o), PK_EINVAL);
    ph_options(&o, &ctx, NULL);
    o.max_lifetime_ms = 100;
    o.lifetime_jitter_ms = 200;
    assert_int_equal(pk_pool_create(&p, &o), PK_EINVAL);
    assert_null(p);
    /* Nothing was created on the way. */
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
}

static void
test_acquire_rejects_invalid_arguments(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire(NULL, &l, 10, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_acquire(p, NULL, 10, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_acquire(p, &l, -5, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_acquire(p, &l, -2, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_acquire_at(p, &l, INT32_MIN, NULL, "x", 1),
                     PK_EINVAL);
    /* None of them lent or created anything. */
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    assert_int_equal(ph_stats(p).acquires, 0);
    pk_pool_destroy(p);
}

static void
test_release_rejects_null_and_bad_status_and_changes_nothing(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l, copy;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    ph_take(p, &l);
    copy = l;
    assert_int_equal(pk_pool_release(NULL, &l, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, NULL, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, &l, 3), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, &l, -1), PK_EINVAL);
    /* The lease is untouched and still held. */
    assert_memory_equal(&l, &copy, sizeof l);
    st = ph_stats(p);
    assert_int_equal(st.lent, 1);
    assert_int_equal(st.idle, 0);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 0);
    ph_give(p, &l);
    assert_null(l.resource); /* cleared on success */
    pk_pool_destroy(p);
}

static void
test_release_twice_is_einval_and_changes_nothing(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l, stale, again;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    ph_take(p, &l);
    stale = l;
    ph_give(p, &l);
    /* The cleared lease, and a stale copy while the resource is idle. */
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_BROKEN),
                     PK_EINVAL);
    st = ph_stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.lent, 0);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 0);
    /* The same resource lent again: the stale copy must not release the
     * new holder's lease. */
    ph_take(p, &again);
    assert_ptr_equal(again.resource, stale.resource);
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_DETACH),
                     PK_EINVAL);
    st = ph_stats(p);
    assert_int_equal(st.lent, 1);
    assert_int_equal(st.detached, 0);
    ph_give(p, &again);
    pk_pool_destroy(p);
}

static void
test_release_to_another_pool_is_einval(void **state)
{
    pk_pool_options o;
    pk_pool *p1, *p2;
    pk_lease l1, l2;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p1 = ph_new_pool(&o);
    p2 = ph_new_pool(&o);
    ph_take(p1, &l1);
    ph_take(p2, &l2);
    assert_int_equal(pk_pool_release(p1, &l2, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_pool_release(p2, &l1, PK_RELEASE_BROKEN), PK_EINVAL);
    assert_int_equal(ph_stats(p1).lent, 1);
    assert_int_equal(ph_stats(p2).lent, 1);
    assert_int_equal(ph_stats(p2).idle, 0);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 0);
    ph_give(p1, &l1);
    ph_give(p2, &l2);
    pk_pool_destroy(p1);
    pk_pool_destroy(p2);
}

static void
test_lease_info_rejects_null_and_leases_not_held(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l, stale, empty;
    pk_lease_info info;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    ph_take(p, &l);
    assert_int_equal(pk_lease_info_get(NULL, &info), PK_EINVAL);
    assert_int_equal(pk_lease_info_get(&l, NULL), PK_EINVAL);
    memset(&empty, 0, sizeof empty);
    assert_int_equal(pk_lease_info_get(&empty, &info), PK_EINVAL);
    stale = l;
    ph_give(p, &l);
    assert_int_equal(pk_lease_info_get(&l, &info), PK_EINVAL);
    assert_int_equal(pk_lease_info_get(&stale, &info), PK_EINVAL);
    pk_pool_destroy(p);
}

static void
test_resize_rejects_invalid_sizes(void **state)
{
    pk_pool_options o;
    pk_pool *p;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_resize(NULL, 0, 0, 4), PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, 5, 0, 4), PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, 0, 5, 4), PK_EINVAL);
    assert_int_equal(ph_stats(p).max_size, 8); /* unchanged */
    assert_int_equal(pk_pool_resize(p, 1, 1, 4), 0);
    assert_int_equal(ph_stats(p).max_size, 4);
    pk_pool_destroy(p);
}

/* The sizes have one bound, PK_POOL_SIZE_MAX, at create and in resize
 * (SIZE_MAX is refused, not "no limit"); max_size 0 means the default 8
 * in both. */
static void
test_sizes_are_bounded_and_zero_is_the_default_in_resize(void **state)
{
    pk_pool_options o;
    pk_pool *p;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 4;
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_resize(p, 0, 0, SIZE_MAX), PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, 0, 0, PK_POOL_SIZE_MAX + 1),
                     PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, PK_POOL_SIZE_MAX + 1, 0, SIZE_MAX),
                     PK_EINVAL);
    assert_int_equal(ph_stats(p).max_size, 4); /* unchanged */
    assert_int_equal(pk_pool_resize(p, 0, 0, PK_POOL_SIZE_MAX), 0);
    assert_int_equal(ph_stats(p).max_size, PK_POOL_SIZE_MAX);
    /* 0: the default, as at create; a floor above it is refused. */
    assert_int_equal(pk_pool_resize(p, 0, 0, 0), 0);
    assert_int_equal(ph_stats(p).max_size, 8);
    assert_int_equal(pk_pool_resize(p, 9, 0, 0), PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, 0, 9, 0), PK_EINVAL);
    assert_int_equal(pk_pool_resize(p, 8, 8, 0), 0);
    assert_int_equal(ph_stats(p).max_size, 8);
    pk_pool_destroy(p);

    o.max_size = SIZE_MAX;
    assert_int_equal(pk_pool_create(&p, &o), PK_EINVAL);
    o.max_size = PK_POOL_SIZE_MAX;
    p = ph_new_pool(&o);
    assert_int_equal(ph_stats(p).max_size, PK_POOL_SIZE_MAX);
    pk_pool_destroy(p);
}

static void
test_calls_on_null_pool_return_einval(void **state)
{
    pk_pool_stats st;
    pk_pool_group *g = (pk_pool_group *)&st;
    size_t used, max;

    (void)state;
    assert_int_equal(pk_pool_maintain(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_pause(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_resume(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_evict_all(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_close(NULL, 0), PK_EINVAL);
    assert_int_equal(pk_pool_stats_get(NULL, &st), PK_EINVAL);
    assert_int_equal(pk_pool_stats_reset_wait(NULL), PK_EINVAL);
    assert_int_equal(pk_pool_group_create(NULL, 4), PK_EINVAL);
    assert_int_equal(pk_pool_group_create(&g, 0), PK_EINVAL);
    assert_int_equal(pk_pool_group_usage(NULL, &used, &max), PK_EINVAL);
    pk_pool_destroy(NULL);
    pk_pool_group_destroy(NULL);
}

static void
test_calls_with_bad_arguments_on_live_pool_return_einval(void **state)
{
    pk_pool_options o;
    pk_pool *p;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_stats_get(p, NULL), PK_EINVAL);
    assert_int_equal(pk_pool_close(p, -5), PK_EINVAL);
    /* A rejected close did not close: the pool still lends. */
    {
        pk_lease l;
        ph_take(p, &l);
        ph_give(p, &l);
    }
    pk_pool_destroy(p);
}

static void
test_calls_after_close_return_eshutdown(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_close(p, 0), 0);
    assert_int_equal(pk_pool_acquire(p, &l, 10, NULL), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_maintain(p), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_resize(p, 0, 0, 4), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_pause(p), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_resume(p), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_evict_all(p), PK_ESHUTDOWN);
    assert_int_equal(pk_pool_close(p, 0), 0); /* again: allowed */
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    pk_pool_destroy(p);
}

/* ---- lending and waiting ------------------------------------------------ */

static void
test_create_prefills_min_size(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.min_size = 2;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    st = ph_stats(p);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.created, 2);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
}

static void
test_create_succeeds_when_prefill_fails(void **state)
{
    pk_pool_options o;
    pk_pool *p;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.min_size = 2;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    ph_fail_creates(&ctx, 1, PK_ECONNECT, 111, "refused");
    p = ph_new_pool(&o);
    assert_int_equal(ph_stats(p).size, 0);
    assert_int_equal(ph_stats(p).create_failures, 1);
    /* Maintenance retries once the backoff has passed. */
    ph_clock_advance_ms(&clk, 1000);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, 2);
    pk_pool_destroy(p);
}

/* Polls until the pool's size is n (true) or timeout_ms passes. */
static bool
wait_size(pk_pool *p, size_t n, int timeout_ms)
{
    uint64_t end = ph_now_ns() + (uint64_t)timeout_ms * PH_MS;

    while (ph_stats(p).size != n) {
        if (ph_now_ns() >= end)
            return false;
        ph_sleep_ms(5);
    }
    return true;
}

/* min_size alone starts maintenance (pool.h: a failed prefill is retried),
 * and the floor is restored after a BROKEN release. Before, no policy but
 * min_size started no thread, and the pool stayed below its floor. */
static void
test_min_size_alone_is_kept_by_maintenance(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.min_size = 2;
    o.max_size = 4;
    o.maintain_interval_ms = 20;
    ph_fail_creates(&ctx, 1, PK_ECONNECT, 111, "refused");
    p = ph_new_pool(&o);
    assert_true(wait_size(p, 2, LONG_MS));
    ph_take(p, &l);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_BROKEN), 0);
    assert_true(wait_size(p, 2, LONG_MS));
    assert_int_equal(atomic_load(&ctx.created), 3);
    pk_pool_destroy(p);
}

static void
test_acquire_times_out_when_exhausted(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c;
    uint64_t t0, waited;
    pk_pool_stats st;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 2;
    p = ph_new_pool(&o);
    ph_take(p, &a);
    ph_take(p, &b);
    t0 = ph_now_ns();
    assert_int_equal(pk_pool_acquire(p, &c, 60, NULL), PK_ETIMEDOUT);
    waited = ph_now_ns() - t0;
    assert_true(waited >= 60 * PH_MS);
    /* No create while alive >= max_size. */
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    st = ph_stats(p);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.size, 2);
    assert_true(ph_find_event(&ctx, PK_EVENT_TIMEOUT, &ev));
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_TIMEOUT), 1);
    ph_give(p, &a);
    ph_give(p, &b);
    pk_pool_destroy(p);
}

static void
test_zero_timeout_acquire_on_empty_pool_returns_eagain(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_EAGAIN);
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    /* With an idle one it is served at once. */
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_zero_timeout_acquire_never_waits_for_a_create(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    ph_acquirer a;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 2;
    p = ph_new_pool(&o);
    /* Another thread's create is stuck behind the gate. */
    ph_create_gate(&ctx, true);
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_create, 1, LONG_MS));
    /* A create run here would block on the gate (and count a timeout). */
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_EAGAIN);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    ph_create_gate(&ctx, false);
    ph_acquirer_join(&a);
    assert_int_equal(a.rc, 0);
    ph_give(p, &a.lease);
    pk_pool_destroy(p);
}

/* ---- pk_pool_acquire_or_create ---------------------------------------- */

/* Where a 0 ms acquire answers PK_EAGAIN on a cold pool, or_create makes
 * a resource on this thread and lends it. With the pool full it answers
 * PK_EAGAIN at once: it does not wait for the release another thread
 * makes a moment later, counts no waiter and no timeout. Idle ones are
 * taken first. */
static void
test_acquire_or_create_makes_one_on_a_cold_pool(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, l;
    pk_error err;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 2;
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_EAGAIN);
    assert_int_equal(pk_pool_acquire_or_create(p, &a, &err), 0);
    assert_non_null(a.resource);
    assert_int_equal(ph_id(a.resource), 1);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(pk_pool_acquire_or_create(p, &b, NULL), 0);
    assert_int_equal(ph_id(b.resource), 2);
    st = ph_stats(p);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.lent, 2);

    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, &err), PK_EAGAIN);
    assert_int_equal(err.code, PK_EAGAIN);
    assert_non_null(strstr(err.msg, "does not wait for a release; 2 of 2 "
                                    "lent"));
    assert_null(l.resource);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    st = ph_stats(p);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_TIMEOUT), 0);

    ph_give(p, &a);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, NULL), 0);
    assert_int_equal(ph_id(l.resource), 1);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    ph_give(p, &l);
    ph_give(p, &b);
    pk_pool_destroy(p);
}

/* A release on its way is not waited for: the call that would have
 * needed it answers PK_EAGAIN before it comes (a waiting call would get
 * the resource, the release thread sleeps 200 ms first). */
struct slow_release {
    pk_pool *p;
    pk_lease l;
    pthread_t t;
};

static void *
slow_release_main(void *arg)
{
    struct slow_release *r = arg;
    ph_sleep_ms(200);
    pk_pool_release(r->p, &r->l, PK_RELEASE_OK);
    return NULL;
}

static void
test_acquire_or_create_never_waits_for_a_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    struct slow_release r;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    r.p = p;
    ph_take(p, &r.l);
    assert_int_equal(pthread_create(&r.t, NULL, slow_release_main, &r), 0);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, NULL), PK_EAGAIN);
    assert_int_equal(pthread_join(r.t, NULL), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).idle, 1);
    pk_pool_destroy(p);
}

/* With room and another caller's create under way, or_create runs one
 * of its own beside it and keeps what it makes; with max_creating taken
 * it waits for that create to end, then makes its own: both callers are
 * served by one create each. */
static void
test_acquire_or_create_makes_its_own_beside_another_create(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer a, z;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 4;
    p = ph_new_pool(&o);
    ph_create_gate(&ctx, true);
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_create, 1, LONG_MS));
    assert_int_equal(ph_acquirer_start(&z, p, PH_OR_CREATE, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_create, 2, LONG_MS));
    ph_create_gate(&ctx, false);
    ph_acquirer_join(&z);
    ph_acquirer_join(&a);
    assert_int_equal(z.rc, 0);
    assert_int_equal(a.rc, 0);
    assert_true(z.resource != a.resource);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    ph_give(p, &z.lease);
    ph_give(p, &a.lease);
    pk_pool_destroy(p);
}

static void
test_acquire_or_create_waits_for_a_create_place(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer a, z;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 4;
    o.max_creating = 1;
    p = ph_new_pool(&o);
    ph_create_gate(&ctx, true);
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_create, 1, LONG_MS));
    assert_int_equal(ph_acquirer_start(&z, p, PH_OR_CREATE, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 2, LONG_MS));
    ph_sleep_ms(20);
    assert_int_equal(atomic_load(&z.done), 0);   /* waits, not PK_EAGAIN */
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    ph_create_gate(&ctx, false);
    ph_acquirer_join(&a);
    ph_acquirer_join(&z);
    assert_int_equal(a.rc, 0);
    assert_int_equal(z.rc, 0);
    assert_true(z.resource != a.resource);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    assert_int_equal(atomic_load(&ctx.max_in_create), 1);
    ph_give(p, &z.lease);
    ph_give(p, &a.lease);
    pk_pool_destroy(p);
}

/* Arguments, a closed pool, and a resource that fails its check (retired,
 * and no create in its place in this call). */
static void
test_acquire_or_create_refuses_and_fails_a_check_once(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;
    ph_item *it;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.check = ph_check;
    o.check_after_ms = PK_ALWAYS;
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire_or_create(NULL, &l, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "pk_pool_acquire_or_create"));
    assert_int_equal(pk_pool_acquire_or_create(p, NULL, NULL), PK_EINVAL);

    it = ph_take(p, &l);
    atomic_store(&it->bad, 1);
    ph_give(p, &l);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, &err), PK_EAGAIN);
    assert_non_null(strstr(err.msg, "failed its check"));
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    assert_int_equal(ph_stats(p).size, 0);

    assert_int_equal(pk_pool_close(p, 0), 0);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, NULL), PK_ESHUTDOWN);
    pk_pool_destroy(p);
}

static void
test_waiters_are_served_in_arrival_order(void **state)
{
    enum { N = 4 };
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    ph_acquirer w[N];
    _Atomic int seq = 0;
    void *res;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    /* Each waiter starts only once the previous one visibly waits. */
    for (int i = 0; i < N; i++) {
        assert_int_equal(ph_acquirer_start(&w[i], p, LONG_MS, true, &seq), 0);
        assert_true(ph_wait_waiters(p, (size_t)i + 1, LONG_MS));
    }
    ph_give(p, &l);
    for (int i = 0; i < N; i++)
        ph_acquirer_join(&w[i]);
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].order, i);
        assert_ptr_equal(w[i].resource, res);
    }
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    pk_pool_destroy(p);
}

static void
test_create_error_detail_reaches_acquirer(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.backoff_initial_ms = 1000; /* next attempt in 50-100 ms: too late */
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, 1, PK_ECONNECT, 28,
                    "password authentication failed for user \"bob\"");
    pk_error_clear(&err);
    /* Its own create failed: the error as the hook gave it. */
    assert_int_equal(pk_pool_acquire(p, &l, 20, &err), PK_ECONNECT);
    assert_int_equal(err.code, PK_ECONNECT);
    assert_int_equal(err.sys, 28);
    assert_string_equal(err.msg,
                        "password authentication failed for user \"bob\"");
    assert_int_equal(ph_stats(p).create_failures, 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_CREATE_FAILED, &ev));
    assert_int_equal(ev.err_code, PK_ECONNECT);
    assert_non_null(strstr(ev.msg, "password authentication failed"));
    pk_pool_destroy(p);
}

static int
create_positive(void *user, void **res, pk_error *err)
{
    (void)user;
    (void)res;
    (void)err;
    return 1;
}

static void
test_create_failure_without_detail_still_explains(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.create = create_positive; /* positive: poolkit calls it PK_ECREATE */
    o.backoff_initial_ms = 1000;
    p = ph_new_pool(&o);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire(p, &l, 20, &err), PK_ECREATE);
    assert_int_equal(err.code, PK_ECREATE);
    assert_true(err.msg[0] != '\0');
    pk_pool_destroy(p);
}

static void
test_max_creating_limits_concurrent_creates(void **state)
{
    enum { N = 6 };
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer w[N];

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 8;
    o.max_creating = 2;
    p = ph_new_pool(&o);
    ph_create_gate(&ctx, true);
    for (int i = 0; i < N; i++)
        assert_int_equal(ph_acquirer_start(&w[i], p, LONG_MS, false, NULL),
                         0);
    assert_true(ph_wait_waiters(p, N, LONG_MS));
    assert_true(ph_wait_atomic(&ctx.in_create, 2, LONG_MS));
    ph_sleep_ms(20); /* room for a third create, were one allowed */
    assert_int_equal(atomic_load(&ctx.max_in_create), 2);
    assert_int_equal(ph_stats(p).creating, 2);
    ph_create_gate(&ctx, false);
    ph_acquirers_join_served(p, w, N);
    assert_int_equal(atomic_load(&ctx.max_in_create), 2);
    assert_int_equal(atomic_load(&ctx.created), N);
    pk_pool_destroy(p);
}

/* ---- idle order and release kinds --------------------------------------- */

static void
idle_order(int order, int expect_first, int expect_second)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l[3], x, y;

    ph_options(&o, &ctx, NULL);
    o.order = order;
    p = ph_new_pool(&o);
    for (int i = 0; i < 3; i++)
        ph_take(p, &l[i]);
    for (int i = 0; i < 3; i++) /* released 1, 2, 3 */
        ph_give(p, &l[i]);
    ph_take(p, &x);
    ph_take(p, &y);
    assert_int_equal(ph_id(x.resource), expect_first);
    assert_int_equal(ph_id(y.resource), expect_second);
    ph_give(p, &x);
    ph_give(p, &y);
    pk_pool_destroy(p);
}

static void
test_lifo_order_reuses_the_most_recently_released(void **state)
{
    (void)state;
    idle_order(PK_POOL_LIFO, 3, 2);
}

static void
test_fifo_order_reuses_the_longest_idle(void **state)
{
    (void)state;
    idle_order(PK_POOL_FIFO, 1, 2);
}

static void
test_detach_forgets_resource_and_allows_replacement(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l, stale, r;
    void *mine;
    pk_pool_stats st;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    mine = ph_take(p, &l);
    stale = l;
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_DETACH), 0);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 0);
    st = ph_stats(p);
    assert_int_equal(st.detached, 1);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.lent, 0);
    assert_true(ph_find_event(&ctx, PK_EVENT_DETACHED, &ev));
    assert_ptr_equal(ev.resource, mine);
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_OK), PK_EINVAL);
    /* max_size 1 and the slot is free again: a replacement is made. */
    ph_take(p, &r);
    assert_ptr_not_equal(r.resource, mine);
    assert_int_equal(atomic_load(&ctx.created), 2);
    ph_give(p, &r);
    pk_pool_destroy(p);
    /* The pool never destroyed the detached one: it is still ours. */
    assert_int_equal(ph_destroyed_count(&ctx, mine), 0);
    assert_int_equal(atomic_load(&ctx.live), 1);
    ph_item_free(&ctx, mine);
}

static void
test_broken_release_destroys_resource(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    void *res;
    pk_pool_stats st;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_BROKEN), 0);
    assert_int_equal(ph_destroyed_count(&ctx, res), 1);
    st = ph_stats(p);
    assert_int_equal(st.destroyed, 1);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.idle, 0);
    assert_true(ph_find_event(&ctx, PK_EVENT_DESTROYED, &ev));
    assert_ptr_equal(ev.resource, res);
    pk_pool_destroy(p);
}

/* ---- generations and eviction ------------------------------------------- */

static void
test_broken_release_bumps_generation_and_checks_idle(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c, x, y;
    uint64_t gen0;

    (void)state;
    ph_options(&o, &ctx, &clk); /* the clock never moves: check_after is
                                   not what triggers the checks */
    o.check = ph_check;
    p = ph_new_pool(&o);
    ph_take(p, &a);
    ph_take(p, &b);
    ph_take(p, &c);
    ph_give(p, &a);
    ph_give(p, &b);
    gen0 = ph_stats(p).generation;
    assert_int_equal(pk_pool_release(p, &c, PK_RELEASE_BROKEN), 0);
    assert_true(ph_stats(p).generation > gen0);
    assert_int_equal(atomic_load(&ctx.check_calls), 0);
    ph_take(p, &x);
    ph_take(p, &y);
    assert_int_equal(atomic_load(&ctx.check_calls), 2);
    assert_int_equal(ph_checked_count(&ctx, x.resource), 1);
    assert_int_equal(ph_checked_count(&ctx, y.resource), 1);
    ph_give(p, &x);
    ph_give(p, &y);
    pk_pool_destroy(p);
}

static void
test_resource_checked_after_bump_is_not_checked_again(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    p = ph_new_pool(&o);
    ph_take(p, &a);
    ph_take(p, &b);
    ph_give(p, &a);
    assert_int_equal(pk_pool_release(p, &b, PK_RELEASE_BROKEN), 0);
    ph_take(p, &a); /* older generation: checked */
    assert_int_equal(atomic_load(&ctx.check_calls), 1);
    ph_give(p, &a);
    ph_take(p, &a); /* healthy in this generation: not checked again */
    assert_int_equal(atomic_load(&ctx.check_calls), 1);
    ph_give(p, &a);
    pk_pool_destroy(p);
}

static void
test_no_generation_bump_flag_skips_checks(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b;
    uint64_t gen0;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.flags = PK_POOL_NO_GENERATION_BUMP;
    p = ph_new_pool(&o);
    ph_take(p, &a);
    ph_take(p, &b);
    ph_give(p, &a);
    gen0 = ph_stats(p).generation;
    assert_int_equal(pk_pool_release(p, &b, PK_RELEASE_BROKEN), 0);
    assert_int_equal(ph_stats(p).generation, gen0);
    ph_take(p, &a);
    assert_int_equal(atomic_load(&ctx.check_calls), 0);
    ph_give(p, &a);
    pk_pool_destroy(p);
}

static void
test_evict_all_retires_idle_now_and_lent_on_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c, n;
    void *old[3];
    uint64_t gen0;
    /* Compared by id: a freed item's address may be reused. */

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    old[0] = ph_take(p, &a);
    old[1] = ph_take(p, &b);
    old[2] = ph_take(p, &c);
    ph_give(p, &a);
    ph_give(p, &b);
    gen0 = ph_stats(p).generation;
    assert_int_equal(pk_pool_evict_all(p), 0);
    assert_true(ph_stats(p).generation > gen0);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
    assert_int_equal(ph_stats(p).idle, 0);
    assert_int_equal(ph_stats(p).lent, 1);
    ph_give(p, &c); /* made before the evict: retired on its way back */
    assert_int_equal(ph_destroyed_count(&ctx, old[2]), 1);
    assert_int_equal(ph_stats(p).size, 0);
    ph_take(p, &n);
    assert_int_equal(ph_id(n.resource), 4); /* a new one */
    ph_give(p, &n);
    pk_pool_destroy(p);
}

/* pk_pool_trim retires idle resources, the longest idle first, down to
 * keep; lent ones stay; bad input and a closed pool are refused. */
static void
test_trim_retires_the_coldest_idle_down_to_keep(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l[5];
    void *res[5];
    size_t n = 99;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 8;
    p = ph_new_pool(&o);
    for (int i = 0; i < 5; i++)
        res[i] = ph_take(p, &l[i]);
    for (int i = 0; i < 4; i++)
        ph_give(p, &l[i]); /* idle, coldest first: 0 1 2 3 */
    assert_int_equal(pk_pool_trim(p, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ph_stats(p).idle, 2);
    assert_int_equal(ph_stats(p).lent, 1);
    assert_int_equal(ph_destroyed_count(&ctx, res[0]), 1);
    assert_int_equal(ph_destroyed_count(&ctx, res[1]), 1);
    assert_int_equal(ph_destroyed_count(&ctx, res[2]), 0);
    assert_int_equal(ph_destroyed_count(&ctx, res[3]), 0);
    assert_int_equal(pk_pool_trim(p, 5, NULL), 0); /* nothing to do */
    assert_int_equal(ph_stats(p).idle, 2);
    assert_int_equal(pk_pool_trim(p, 0, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ph_stats(p).size, 1); /* the lent one */
    ph_give(p, &l[4]);
    assert_int_equal(pk_pool_trim(NULL, 0, &n), PK_EINVAL);
    assert_int_equal(n, 0);
    assert_int_equal(pk_pool_close(p, 1000), 0);
    assert_int_equal(pk_pool_trim(p, 0, NULL), PK_ESHUTDOWN);
    pk_pool_destroy(p);
}

struct maintainer {
    pk_pool *p;
    pthread_t t;
    int rc;
};

static void *
maintainer_main(void *arg)
{
    struct maintainer *m = arg;
    m->rc = pk_pool_maintain(m->p);
    return NULL;
}

/* A pool with one idle resource due for its check, and a maintenance pass
 * on m's thread that is inside that check, held by the closed check gate.
 * Returns the resource; *pp is the pool. */
static void *
start_blocked_maintenance_check(pk_pool **pp, struct maintainer *m)
{
    pk_pool_options o;
    pk_lease a;
    void *old;

    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_interval_ms = 1000;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    *pp = ph_new_pool(&o);
    old = ph_take(*pp, &a);
    ph_give(*pp, &a);
    ph_clock_advance_ms(&clk, 1000);
    /* Maintenance checks the idle resource; the check blocks. */
    ph_check_gate(&ctx, true);
    m->p = *pp;
    assert_int_equal(pthread_create(&m->t, NULL, maintainer_main, m), 0);
    assert_true(ph_wait_atomic(&ctx.in_check, 1, LONG_MS));
    return old;
}

/* Opens the check gate and joins the maintenance pass, which succeeded. */
static void
finish_blocked_maintenance_check(struct maintainer *m)
{
    ph_check_gate(&ctx, false);
    pthread_join(m->t, NULL);
    assert_int_equal(m->rc, 0);
}

static void
test_evict_all_retires_resource_being_checked(void **state)
{
    pk_pool *p;
    pk_lease n;
    void *old;
    struct maintainer m;

    (void)state;
    old = start_blocked_maintenance_check(&p, &m);
    assert_int_equal(pk_pool_evict_all(p), 0);
    finish_blocked_maintenance_check(&m);
    /* It passed its check, but it was made before the evict. */
    assert_int_equal(ph_destroyed_count(&ctx, old), 1);
    ph_take(p, &n);
    assert_int_equal(ph_id(n.resource), 2); /* a new one */
    ph_give(p, &n);
    pk_pool_destroy(p);
}

static void
test_close_during_maintenance_check_destroys_resource(void **state)
{
    pk_pool *p;
    void *old;
    struct maintainer m;

    (void)state;
    old = start_blocked_maintenance_check(&p, &m);
    /* The check is still running: close cannot finish at once. */
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    finish_blocked_maintenance_check(&m);
    /* Healthy, but the pool is closed: destroyed, not made idle. */
    assert_int_equal(ph_destroyed_count(&ctx, old), 1);
    assert_int_equal(ph_stats(p).idle, 0);
    assert_int_equal(pk_pool_close(p, 0), 0);
    pk_pool_destroy(p);
}

/* ---- pause and resize --------------------------------------------------- */

static void
test_pause_holds_acquirers_until_resume(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    void *res;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(pk_pool_pause(p), 0);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_EAGAIN);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    ph_sleep_ms(20);
    assert_int_equal(atomic_load(&w.done), 0);
    assert_int_equal(ph_stats(p).idle, 1);
    assert_int_equal(pk_pool_resume(p), 0);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    assert_ptr_equal(w.resource, res);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    ph_give(p, &w.lease);
    pk_pool_destroy(p);
}

static void
test_pause_holds_creates_until_resume(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_pause(p), 0);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    ph_sleep_ms(20);
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    assert_int_equal(pk_pool_resume(p), 0);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    ph_give(p, &w.lease);
    pk_pool_destroy(p);
}

static void
test_resize_grow_lets_waiter_create(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    assert_int_equal(pk_pool_resize(p, 0, 0, 2), 0);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    assert_ptr_not_equal(w.resource, l.resource);
    assert_int_equal(ph_stats(p).size, 2);
    ph_give(p, &w.lease);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_resize_shrink_retires_idle_now_and_lent_on_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l[4];
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    for (int i = 0; i < 4; i++)
        ph_take(p, &l[i]);
    ph_give(p, &l[0]);
    ph_give(p, &l[1]);
    assert_int_equal(pk_pool_resize(p, 0, 0, 1), 0);
    st = ph_stats(p);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.max_size, 1);
    ph_give(p, &l[2]); /* above max_size: retired */
    assert_int_equal(atomic_load(&ctx.destroy_calls), 3);
    ph_give(p, &l[3]); /* within max_size: kept */
    st = ph_stats(p);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 3);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.idle, 1);
    pk_pool_destroy(p);
}

static void
test_maintain_tops_up_to_min_size_and_min_idle(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 4;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    assert_int_equal(ph_stats(p).size, 0);
    assert_int_equal(pk_pool_resize(p, 2, 0, 4), 0);
    assert_int_equal(pk_pool_maintain(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.idle, 2);
    assert_int_equal(pk_pool_resize(p, 2, 3, 4), 0);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).idle, 3);
    ph_take(p, &l);
    assert_int_equal(pk_pool_maintain(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.idle, 3);
    assert_int_equal(st.lent, 1);
    assert_int_equal(st.size, 4);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* ---- maintenance policies on the manual clock ---------------------------- */

static void
test_idle_timeout_retires_surplus_down_to_min_size(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l[3];

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.idle_timeout_ms = 1000;
    o.min_size = 1;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    for (int i = 0; i < 3; i++)
        ph_take(p, &l[i]);
    for (int i = 0; i < 3; i++)
        ph_give(p, &l[i]);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, 3);
    ph_clock_advance_ms(&clk, 999);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, 3);
    ph_clock_advance_ms(&clk, 1);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, 1); /* the min_size floor stays */
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
    ph_clock_advance_ms(&clk, 100000);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, 1);
    assert_int_equal(atomic_load(&ctx.create_calls), 3);
    pk_pool_destroy(p);
}

static void
test_min_idle_kept_on_top_of_lent(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.min_idle = 2;
    o.idle_timeout_ms = 1000;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    assert_int_equal(ph_stats(p).idle, 2);
    ph_take(p, &l);
    assert_int_equal(pk_pool_maintain(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.lent, 1);
    /* The idle timeout does not cut into min_idle. */
    ph_clock_advance_ms(&clk, 5000);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).idle, 2);
    /* One came back: now there is one idle too many. */
    ph_give(p, &l);
    assert_int_equal(ph_stats(p).idle, 3);
    ph_clock_advance_ms(&clk, 1000);
    assert_int_equal(pk_pool_maintain(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.size, 2);
    pk_pool_destroy(p);
}

static void
test_lifetime_jitter_spreads_expiry_within_window(void **state)
{
    enum { N = 32, STEP_MS = 50 };
    pk_pool_options o;
    pk_pool *p;
    pk_lease l[N];
    size_t prev, size;
    int steps_with_expiry = 0;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.max_size = N;
    o.max_lifetime_ms = 1000;
    o.lifetime_jitter_ms = 500; /* expiry in [500, 1000] ms after birth */
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    for (int i = 0; i < N; i++) /* all born at the same fake time */
        ph_take(p, &l[i]);
    for (int i = 0; i < N; i++)
        ph_give(p, &l[i]);
    ph_clock_advance_ms(&clk, 499);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_stats(p).size, N);
    prev = N;
    ph_clock_advance_ms(&clk, 1);
    /* Ten steps of 50 ms from 500 to 950 ms, then 1000 ms. */
    for (int t = 500; t <= 1000; t += STEP_MS) {
        assert_int_equal(pk_pool_maintain(p), 0);
        size = ph_stats(p).size;
        if (size < prev)
            steps_with_expiry++;
        prev = size;
        if (t < 1000)
            ph_clock_advance_ms(&clk, STEP_MS);
    }
    assert_int_equal(prev, 0); /* all gone by max_lifetime */
    /* 32 uniform expiries landing in one of 11 steps: odds ~ 11^-31. */
    assert_true(steps_with_expiry >= 2);
    pk_pool_destroy(p);
}

static void
test_expired_lent_resource_is_retired_on_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    void *res;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.max_lifetime_ms = 1000;
    o.lifetime_jitter_ms = 1;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    ph_clock_advance_ms(&clk, 1000);
    ph_give(p, &l);
    assert_int_equal(ph_destroyed_count(&ctx, res), 1);
    assert_int_equal(ph_stats(p).size, 0);
    pk_pool_destroy(p);
}

static void
test_max_uses_retires_after_limit(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_lease_info info;
    void *first = NULL;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_uses = 3;
    p = ph_new_pool(&o);
    for (unsigned long i = 1; i <= 3; i++) {
        ph_take(p, &l);
        if (!first)
            first = l.resource;
        assert_ptr_equal(l.resource, first);
        assert_int_equal(pk_lease_info_get(&l, &info), 0);
        assert_int_equal(info.uses, i);
        ph_give(p, &l);
    }
    assert_int_equal(ph_destroyed_count(&ctx, first), 1);
    ph_take(p, &l);
    assert_int_equal(ph_id(l.resource), 2); /* a new one */
    assert_int_equal(pk_lease_info_get(&l, &info), 0);
    assert_int_equal(info.uses, 1);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_check_after_checks_only_long_idle(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_after_ms = 1000;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    ph_clock_advance_ms(&clk, 500);
    ph_take(p, &l); /* idle 500 ms: lent unchecked */
    ph_give(p, &l);
    ph_clock_advance_ms(&clk, 999);
    ph_take(p, &l); /* idle 999 ms */
    ph_give(p, &l);
    assert_int_equal(atomic_load(&ctx.check_calls), 0);
    ph_clock_advance_ms(&clk, 1000);
    ph_take(p, &l); /* idle 1000 ms: checked first */
    assert_int_equal(atomic_load(&ctx.check_calls), 1);
    assert_int_equal(ph_checked_count(&ctx, l.resource), 1);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_check_always_checks_every_borrow(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    int base;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_after_ms = PK_ALWAYS;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    base = atomic_load(&ctx.check_calls);
    for (int i = 0; i < 3; i++) {
        ph_take(p, &l);
        ph_give(p, &l);
    }
    assert_int_equal(atomic_load(&ctx.check_calls), base + 3);
    pk_pool_destroy(p);
}

static void
test_failed_check_retires_and_acquirer_gets_a_good_one(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, x;
    void *good, *dead;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_after_ms = 1000;
    p = ph_new_pool(&o);
    good = ph_take(p, &a);
    dead = ph_take(p, &b);
    ph_give(p, &a);
    ((ph_item *)dead)->bad = 1;
    ph_give(p, &b); /* LIFO: the dead one is offered first */
    ph_clock_advance_ms(&clk, 1000);
    assert_int_equal(pk_pool_acquire(p, &x, LONG_MS, NULL), 0);
    assert_ptr_equal(x.resource, good);
    assert_int_equal(ph_destroyed_count(&ctx, dead), 1);
    assert_int_equal(ph_stats(p).check_failures, 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_CHECK_FAILED, &ev));
    assert_ptr_equal(ev.resource, dead);
    assert_int_equal(ev.err_code, PK_ECHECK);
    assert_non_null(strstr(ev.msg, "is dead"));
    ph_give(p, &x);
    pk_pool_destroy(p);
}

static void
test_failed_check_of_every_idle_one_creates_a_fresh_one(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, x;
    void *old[2];

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_after_ms = 1000;
    o.max_size = 2;
    p = ph_new_pool(&o);
    old[0] = ph_take(p, &a);
    old[1] = ph_take(p, &b);
    ((ph_item *)old[0])->bad = 1;
    ((ph_item *)old[1])->bad = 1;
    ph_give(p, &a);
    ph_give(p, &b);
    ph_clock_advance_ms(&clk, 1000);
    assert_int_equal(pk_pool_acquire(p, &x, LONG_MS, NULL), 0);
    assert_int_equal(ph_id(x.resource), 3); /* a new one */
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
    assert_int_equal(ph_stats(p).check_failures, 2);
    ph_give(p, &x);
    pk_pool_destroy(p);
}

static void
test_held_too_long_reports_acquire_site(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    int line;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.held_too_long_ms = 1000;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    line = __LINE__; assert_int_equal(pk_pool_acquire(p, &l, LONG_MS, NULL), 0);
    ph_clock_advance_ms(&clk, 999);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_HELD_TOO_LONG), 0);
    ph_clock_advance_ms(&clk, 1);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_HELD_TOO_LONG), 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_HELD_TOO_LONG, &ev));
    assert_ptr_equal(ev.resource, l.resource);
    assert_non_null(ev.file);
    assert_string_equal(ev.file, __FILE__);
    assert_int_equal(ev.line, line);
    assert_true(ev.duration_ns >= 1000 * PH_MS);
    /* Reported once per lease. */
    ph_clock_advance_ms(&clk, 5000);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_HELD_TOO_LONG), 1);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_reset_failure_retires_resource(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    void *res;
    ph_event ev;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.reset = ph_reset;
    p = ph_new_pool(&o);
    res = ph_take(p, &l);
    ph_give(p, &l); /* clean: back to idle */
    assert_int_equal(atomic_load(&ctx.reset_calls), 1);
    assert_int_equal(ph_stats(p).idle, 1);
    ph_take(p, &l);
    assert_ptr_equal(l.resource, res);
    ((ph_item *)res)->dirty = 1;
    ph_give(p, &l);
    assert_int_equal(atomic_load(&ctx.reset_calls), 2);
    assert_int_equal(ph_destroyed_count(&ctx, res), 1);
    assert_int_equal(ph_stats(p).size, 0);
    assert_int_equal(ph_stats(p).check_failures, 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_CHECK_FAILED, &ev));
    assert_ptr_equal(ev.resource, res);
    pk_pool_destroy(p);
}

static void
test_event_hook_reports_each_kind(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c;
    ph_event ev;
    void *ra, *rb;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check;
    o.check_after_ms = PK_ALWAYS;
    o.max_size = 2;
    o.backoff_initial_ms = 1000; /* a failed create is not retried soon */
    p = ph_new_pool(&o);
    ra = ph_take(p, &a);
    assert_true(ph_find_event(&ctx, PK_EVENT_CREATED, &ev));
    assert_ptr_equal(ev.resource, ra);
    rb = ph_take(p, &b);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_CREATED), 2);
    assert_int_equal(pk_pool_acquire(p, &c, 10, NULL), PK_ETIMEDOUT);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_TIMEOUT), 1);
    ((ph_item *)rb)->bad = 1;
    ph_give(p, &b);
    ph_give(p, &a); /* LIFO: a is offered first and is fine */
    ph_take(p, &a);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_CHECK_FAILED), 0);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 0, "no route");
    /* b fails its check and is destroyed; its replacement fails. */
    assert_int_equal(pk_pool_acquire(p, &b, 20, NULL), PK_ECONNECT);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_CHECK_FAILED), 1);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_DESTROYED), 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_DESTROYED, &ev));
    assert_ptr_equal(ev.resource, rb);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_CREATE_FAILED), 1);
    assert_true(ph_find_event(&ctx, PK_EVENT_CREATE_FAILED, &ev));
    assert_int_equal(ev.err_code, PK_ECONNECT);
    assert_string_equal(ev.msg, "no route");
    ph_give(p, &a);
    pk_pool_destroy(p);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_DESTROYED), 2);
}

/* ---- stats and lease info ----------------------------------------------- */

static void
test_stats_count_population_and_outcomes(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c;
    pk_pool_stats st;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.reset = ph_reset;
    o.max_size = 2;
    o.backoff_initial_ms = 1000; /* a failed create is not retried soon */
    p = ph_new_pool(&o);
    ph_take(p, &a);
    ph_take(p, &b);
    st = ph_stats(p);
    assert_int_equal(st.size, 2);
    assert_int_equal(st.lent, 2);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.created, 2);
    assert_int_equal(st.acquires, 2);
    assert_int_equal(st.max_size, 2);
    assert_int_equal(pk_pool_acquire(p, &c, 5, NULL), PK_ETIMEDOUT);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    assert_int_equal(ph_stats(p).waiters, 1);
    ph_give(p, &a); /* handed to the waiter */
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    ((ph_item *)b.resource)->dirty = 1;
    ph_give(p, &b); /* reset fails: retired */
    st = ph_stats(p);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.lent, 1);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.destroyed, 1);
    assert_int_equal(st.check_failures, 1);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.acquires, 3);
    ph_fail_creates(&ctx, 1, PK_ECONNECT, 0, NULL);
    assert_int_equal(pk_pool_acquire(p, &c, 20, NULL), PK_ECONNECT);
    st = ph_stats(p);
    assert_int_equal(st.create_failures, 1);
    assert_int_equal(st.created, 2);
    assert_int_equal(st.acquires, 3);
    ph_give(p, &w.lease);
    st = ph_stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.lent, 0);
    pk_pool_destroy(p);
}

static void
test_wait_percentiles_reflect_waits(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_pool_stats st;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &l); /* made by a create: that acquire waited for it */
    ph_give(p, &l);
    assert_int_equal(pk_pool_stats_reset_wait(p), 0);
    for (int i = 0; i < 5; i++) { /* acquires that do not wait */
        ph_take(p, &l);
        ph_give(p, &l);
    }
    st = ph_stats(p);
    assert_int_equal(st.wait_p50_ns, 0);
    assert_int_equal(st.wait_p99_ns, 0);
    assert_int_equal(pk_pool_stats_reset_wait(p), 0);
    ph_take(p, &l);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, true, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    ph_sleep_ms(10);
    ph_give(p, &l);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    st = ph_stats(p);
    /* One fast acquire (ours) and one that waited at least 10 ms. */
    assert_true(st.wait_max_ns >= 10 * PH_MS);
    assert_true(st.wait_p99_ns >= 10 * PH_MS);
    assert_true(st.wait_p50_ns > 0);
    assert_true(st.wait_p50_ns <= st.wait_p99_ns);
    assert_int_equal(pk_pool_stats_reset_wait(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.wait_p50_ns, 0);
    assert_int_equal(st.wait_p99_ns, 0);
    assert_int_equal(st.wait_max_ns, 0);
    assert_int_equal(st.acquires, 8); /* counters keep counting */
    pk_pool_destroy(p);
}

static void
test_lease_info_reports_age_idle_uses_generation_site(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_lease_info info;
    int line;

    (void)state;
    ph_options(&o, &ctx, &clk);
    /* idle_ns is measured only when some policy reads the clock (the
     * pool skips the clock on its fast path otherwise: idle_ns reads 0,
     * reported to the lead); held_too_long is such a policy. */
    o.held_too_long_ms = 60000;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    line = __LINE__; assert_int_equal(pk_pool_acquire(p, &l, LONG_MS, NULL), 0);
    ph_clock_advance_ms(&clk, 250);
    assert_int_equal(pk_lease_info_get(&l, &info), 0);
    assert_int_equal(info.age_ns, 250 * PH_MS);
    assert_int_equal(info.uses, 1);
    assert_int_equal(info.generation, ph_stats(p).generation);
    assert_non_null(info.file);
    assert_string_equal(info.file, __FILE__);
    assert_int_equal(info.line, line);
    ph_give(p, &l);
    ph_clock_advance_ms(&clk, 100);
    line = __LINE__; assert_int_equal(pk_pool_acquire(p, &l, LONG_MS, NULL), 0);
    assert_int_equal(pk_lease_info_get(&l, &info), 0);
    assert_int_equal(info.age_ns, 350 * PH_MS);
    assert_int_equal(info.idle_ns, 100 * PH_MS);
    assert_int_equal(info.uses, 2);
    assert_int_equal(info.line, line);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* ---- close and destroy -------------------------------------------------- */

static void
test_close_with_lent_times_out_and_destroys_on_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b;
    void *ra, *rb;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    ra = ph_take(p, &a);
    rb = ph_take(p, &b);
    ph_give(p, &b);
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    assert_int_equal(ph_destroyed_count(&ctx, rb), 1); /* idle: at once */
    assert_int_equal(ph_destroyed_count(&ctx, ra), 0);
    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);
    assert_int_equal(ph_destroyed_count(&ctx, ra), 1);
    assert_int_equal(ph_stats(p).size, 0);
    assert_int_equal(pk_pool_close(p, 0), 0);
    pk_pool_destroy(p);
}

/* The LEASE_OUT_AT_CLOSE events recorded for the acquire site line. */
static int
count_out_at_close(int line, uint64_t *duration_ns, void **res)
{
    int n = 0;

    pthread_mutex_lock(&ctx.lock);
    for (int i = 0; i < ctx.n_events; i++) {
        const ph_event *e = &ctx.events[i];
        if (e->kind != PK_EVENT_LEASE_OUT_AT_CLOSE || e->line != line)
            continue;
        if (!e->file || strcmp(e->file, "app.c") != 0)
            continue;
        n++;
        *duration_ns = e->duration_ns;
        *res = e->resource;
    }
    pthread_mutex_unlock(&ctx.lock);
    return n;
}

/* A close that gives up on leases still out reports each one, once, to
 * the hook: its acquire site and how long it has been out. */
static void
test_close_reports_each_lease_out_to_the_hook(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b, c;
    uint64_t d = 0;
    void *res = NULL;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.check = ph_check; /* check_after reads the clock: durations known */
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire_at(p, &a, LONG_MS, NULL, "app.c", 12),
                     0);
    ph_clock_advance_ms(&clk, 500);
    assert_int_equal(pk_pool_acquire_at(p, &b, LONG_MS, NULL, "app.c", 34),
                     0);
    assert_int_equal(pk_pool_acquire_at(p, &c, LONG_MS, NULL, "app.c", 56),
                     0);
    ph_give(p, &c); /* back before the close: not reported */
    ph_clock_advance_ms(&clk, 1000);
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_LEASE_OUT_AT_CLOSE), 2);
    assert_int_equal(count_out_at_close(12, &d, &res), 1);
    assert_int_equal(d, 1500 * PH_MS);
    assert_ptr_equal(res, a.resource);
    assert_int_equal(count_out_at_close(34, &d, &res), 1);
    assert_int_equal(d, 1000 * PH_MS);
    assert_ptr_equal(res, b.resource);
    /* Once: a second close and the destroy say nothing more. */
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    pk_pool_destroy(p);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_LEASE_OUT_AT_CLOSE), 2);
    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_release(p, &b, PK_RELEASE_OK), 0);
}

/* destroy without a close reports too; a pool that reads no clock
 * reports duration 0; a close that saw every lease back reports none, nor
 * does a pool with PK_POOL_QUIET_CLOSE. */
static void
test_destroy_reports_lease_out_without_a_clock(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b;
    uint64_t d = 1;
    void *res = NULL;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    assert_int_equal(pk_pool_acquire_at(p, &a, LONG_MS, NULL, "app.c", 78),
                     0);
    pk_pool_destroy(p);
    assert_int_equal(count_out_at_close(78, &d, &res), 1);
    assert_int_equal(d, 0);
    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);

    p = ph_new_pool(&o);
    ph_take(p, &b);
    ph_give(p, &b);
    assert_int_equal(pk_pool_close(p, LONG_MS), 0);
    pk_pool_destroy(p);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_LEASE_OUT_AT_CLOSE), 1);

    /* PK_POOL_QUIET_CLOSE: leases out are expected, nothing reported. */
    o.flags = PK_POOL_QUIET_CLOSE;
    p = ph_new_pool(&o);
    ph_take(p, &b);
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    pk_pool_destroy(p);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_LEASE_OUT_AT_CLOSE), 1);
    assert_int_equal(pk_pool_release(p, &b, PK_RELEASE_OK), 0);
}

static void
test_close_wakes_waiters_with_eshutdown(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    ph_acquirer w[2];

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.max_size = 1;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ph_acquirer_start(&w[i], p, LONG_MS, false, NULL),
                         0);
        assert_true(ph_wait_waiters(p, (size_t)i + 1, LONG_MS));
    }
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    for (int i = 0; i < 2; i++) {
        ph_acquirer_join(&w[i]);
        assert_int_equal(w[i].rc, PK_ESHUTDOWN); /* not ETIMEDOUT */
    }
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_close_wakes_waiter_whose_create_was_running(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    ph_create_gate(&ctx, true);
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_create, 1, LONG_MS));
    /* The close's wake reaches the waiter while its create runs. */
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    ph_create_gate(&ctx, false);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, PK_ESHUTDOWN);
    /* Before its own deadline: the close woke it, its timeout did not. */
    assert_true(w.waited_ns < (uint64_t)LONG_MS * PH_MS);
    /* What the create made after the close was destroyed. */
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    pk_pool_destroy(p);
}

struct late_release {
    pk_pool *p;
    pk_lease l;
    pthread_t t;
    int rc;
};

static void *
late_release_main(void *arg)
{
    struct late_release *r = arg;
    ph_sleep_ms(50);
    r->rc = pk_pool_release(r->p, &r->l, PK_RELEASE_OK);
    return NULL;
}

static void
test_close_returns_zero_when_leases_come_back_in_time(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    struct late_release r;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    r.p = p;
    ph_take(p, &r.l);
    assert_int_equal(pthread_create(&r.t, NULL, late_release_main, &r), 0);
    assert_int_equal(pk_pool_close(p, LONG_MS), 0);
    /* close returned: the lease came back and was destroyed. */
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    pthread_join(r.t, NULL);
    assert_int_equal(r.rc, 0);
    pk_pool_destroy(p);
}

static void
test_destroy_with_lease_out_finishes_on_release(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease a, b;
    void *ra;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.user_free = ph_user_free;
    p = ph_new_pool(&o);
    ra = ph_take(p, &a);
    ph_take(p, &b);
    ph_give(p, &b);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    assert_int_equal(atomic_load(&ctx.user_free_calls), 0);
    /* The lease outlives the handle; its release finishes the pool. */
    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);
    assert_int_equal(ph_destroyed_count(&ctx, ra), 1);
    assert_int_equal(atomic_load(&ctx.user_free_calls), 1);
    assert_int_equal(atomic_load(&ctx.destroys_at_user_free), 2);
}

static void
test_destroy_runs_user_free_once_after_last_destroy(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.user_free = ph_user_free;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    pk_pool_destroy(p);
    assert_int_equal(atomic_load(&ctx.user_free_calls), 1);
    assert_int_equal(atomic_load(&ctx.destroys_at_user_free), 1);
}

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_options_init_rejects_null_and_spells_out_defaults),
        T(test_create_rejects_invalid_options),
        T(test_acquire_rejects_invalid_arguments),
        T(test_release_rejects_null_and_bad_status_and_changes_nothing),
        T(test_release_twice_is_einval_and_changes_nothing),
        T(test_release_to_another_pool_is_einval),
        T(test_lease_info_rejects_null_and_leases_not_held),
        T(test_resize_rejects_invalid_sizes),
        T(test_calls_on_null_pool_return_einval),
        T(test_calls_with_bad_arguments_on_live_pool_return_einval),
        T(test_calls_after_close_return_eshutdown),
        T(test_create_prefills_min_size),
        T(test_min_size_alone_is_kept_by_maintenance),
        T(test_create_succeeds_when_prefill_fails),
        T(test_acquire_times_out_when_exhausted),
        T(test_zero_timeout_acquire_on_empty_pool_returns_eagain),
        T(test_zero_timeout_acquire_never_waits_for_a_create),
        T(test_acquire_or_create_makes_one_on_a_cold_pool),
        T(test_acquire_or_create_never_waits_for_a_release),
        T(test_acquire_or_create_makes_its_own_beside_another_create),
        T(test_acquire_or_create_waits_for_a_create_place),
        T(test_acquire_or_create_refuses_and_fails_a_check_once),
        T(test_waiters_are_served_in_arrival_order),
        T(test_create_error_detail_reaches_acquirer),
        T(test_create_failure_without_detail_still_explains),
        T(test_max_creating_limits_concurrent_creates),
        T(test_lifo_order_reuses_the_most_recently_released),
        T(test_fifo_order_reuses_the_longest_idle),
        T(test_detach_forgets_resource_and_allows_replacement),
        T(test_broken_release_destroys_resource),
        T(test_broken_release_bumps_generation_and_checks_idle),
        T(test_resource_checked_after_bump_is_not_checked_again),
        T(test_no_generation_bump_flag_skips_checks),
        T(test_evict_all_retires_idle_now_and_lent_on_release),
        T(test_trim_retires_the_coldest_idle_down_to_keep),
        T(test_evict_all_retires_resource_being_checked),
        T(test_close_during_maintenance_check_destroys_resource),
        T(test_pause_holds_acquirers_until_resume),
        T(test_pause_holds_creates_until_resume),
        T(test_resize_grow_lets_waiter_create),
        T(test_resize_shrink_retires_idle_now_and_lent_on_release),
        T(test_maintain_tops_up_to_min_size_and_min_idle),
        T(test_idle_timeout_retires_surplus_down_to_min_size),
        T(test_min_idle_kept_on_top_of_lent),
        T(test_lifetime_jitter_spreads_expiry_within_window),
        T(test_expired_lent_resource_is_retired_on_release),
        T(test_max_uses_retires_after_limit),
        T(test_check_after_checks_only_long_idle),
        T(test_check_always_checks_every_borrow),
        T(test_failed_check_retires_and_acquirer_gets_a_good_one),
        T(test_failed_check_of_every_idle_one_creates_a_fresh_one),
        T(test_held_too_long_reports_acquire_site),
        T(test_reset_failure_retires_resource),
        T(test_event_hook_reports_each_kind),
        T(test_stats_count_population_and_outcomes),
        T(test_wait_percentiles_reflect_waits),
        T(test_lease_info_reports_age_idle_uses_generation_site),
        T(test_close_with_lent_times_out_and_destroys_on_release),
        T(test_sizes_are_bounded_and_zero_is_the_default_in_resize),
        T(test_close_reports_each_lease_out_to_the_hook),
        T(test_destroy_reports_lease_out_without_a_clock),
        T(test_close_wakes_waiters_with_eshutdown),
        T(test_close_wakes_waiter_whose_create_was_running),
        T(test_close_returns_zero_when_leases_come_back_in_time),
        T(test_destroy_with_lease_out_finishes_on_release),
        T(test_destroy_runs_user_free_once_after_last_destroy),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
