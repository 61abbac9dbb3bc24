/* tests/unit/test_pool_cache.c - pk_pool's release cache (pool_cache.c):
 * a release parks its slot (one CAS on its ticket word, a hint in the
 * thread's stripe) and the thread's next acquire takes it back without
 * the lock. These tests pin the edges: a
 * release into the cache while a waiter arrives hands it to the waiter;
 * close, evict_all, resize, pause and stats see parked slots; a slot
 * parked across a generation bump is never lent; a release that parks
 * while the pool is destroyed touches nothing freed; many threads never
 * share a resource.
 *
 * The pools here have no check or reset hook and no clock policy, so
 * they take the hot path. parked() looks inside the pool (pool_int.h) to
 * count the parked slots; it runs only while no other thread uses the
 * pool. Helper threads record, the test thread asserts after joining. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include <poolkit/pool.h>

#include "pool_helpers.h"
#include "pool_int.h"
#include "prng.h"

#define LONG_MS 5000

static ph_ctx ctx;
static ph_clock clk; /* unused: these pools read no clock */
static ph_fixture fx = { &ctx, 1, &clk, 0 };

/* ---- helpers -------------------------------------------------------- */

static pk_pool *
hot_pool(size_t max_size)
{
    pk_pool_options o;

    ph_options(&o, &ctx, NULL);
    o.max_size = max_size;
    return ph_new_pool(&o);
}

/* Slots parked in the cache. Only while no other thread uses the pool. */
static int
parked(pk_pool *p)
{
    int n = 0;

    for (struct pk__slot *s = p->all_slots; s; s = s->all_next)
        if (atomic_load(&s->ticket) & PK__T_PARKED)
            n++;
    return n;
}

/* A thread that acquires and releases once, so a slot is parked when it
 * ends. */
struct once_arg {
    pk_pool *p;
    int rc;
};

static void *
once_main(void *v)
{
    struct once_arg *a = v;
    pk_lease l;

    a->rc = pk_pool_acquire(a->p, &l, LONG_MS, NULL);
    if (a->rc == 0)
        a->rc = pk_pool_release(a->p, &l, PK_RELEASE_OK);
    return NULL;
}

/* Parks slots from n threads (fewer, if a thread takes back the slot the
 * previous one parked). Returns how many are parked. */
static int
park_from_threads(pk_pool *p, int n)
{
    pthread_t th[8];
    struct once_arg a[8];

    for (int i = 0; i < n; i++) {
        a[i] = (struct once_arg){ p, -1 };
        assert_int_equal(pthread_create(&th[i], NULL, once_main, &a[i]), 0);
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(a[i].rc, 0);
    }
    return parked(p);
}

/* ---- parking and taking back ----------------------------------------- */

static void
test_release_parks_and_next_acquire_takes_it_back(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *first;
    pk_pool_stats st;

    (void)state;
    p = hot_pool(4);
    first = ph_take(p, &l); /* waited for its create */
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    assert_int_equal(pk_pool_stats_reset_wait(p), 0);
    for (int i = 0; i < 10; i++) {
        assert_ptr_equal(ph_take(p, &l), first);
        assert_int_equal(parked(p), 0);
        ph_give(p, &l);
    }
    /* Stats count the parked slot as idle, and every lend. */
    st = ph_stats(p);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.acquires, 11);
    assert_int_equal(st.wait_p99_ns, 0); /* cache lends do not wait */
    /* The lease is gone with the release, cached or not. */
    assert_int_equal(pk_pool_release(p, &l, PK_RELEASE_OK), PK_EINVAL);
    pk_pool_destroy(p);
}

static void
test_stale_lease_of_a_parked_slot_is_einval(void **state)
{
    pk_pool *p;
    pk_lease l, stale;
    pk_lease_info info;

    (void)state;
    p = hot_pool(2);
    ph_take(p, &l);
    stale = l;
    ph_give(p, &l); /* parked */
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_OK), PK_EINVAL);
    assert_int_equal(pk_lease_info_get(&stale, &info), PK_EINVAL);
    ph_take(p, &l); /* the same slot, lent again from the cache */
    assert_int_equal(pk_pool_release(p, &stale, PK_RELEASE_BROKEN),
                     PK_EINVAL);
    assert_int_equal(pk_lease_info_get(&l, &info), 0);
    assert_int_equal(info.uses, 2);
    ph_give(p, &l);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 0);
    pk_pool_destroy(p);
}

static void
test_one_thread_gets_its_releases_back_most_recent_first(void **state)
{
    pk_pool *p;
    pk_lease l[3], x, y, z;

    (void)state;
    p = hot_pool(4);
    for (int i = 0; i < 3; i++)
        ph_take(p, &l[i]);
    for (int i = 0; i < 3; i++) /* released 1, 2, 3: 3 parked */
        ph_give(p, &l[i]);
    assert_int_equal(parked(p), 1);
    assert_int_equal(ph_id(ph_take(p, &x)), 3);
    assert_int_equal(ph_id(ph_take(p, &y)), 2);
    assert_int_equal(ph_id(ph_take(p, &z)), 1);
    ph_give(p, &x);
    ph_give(p, &y);
    ph_give(p, &z);
    pk_pool_destroy(p);
}

static void
test_fifo_and_policy_pools_have_no_cache(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.order = PK_POOL_FIFO;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(parked(p), 0);
    pk_pool_destroy(p);

    ph_options(&o, &ctx, NULL);
    o.reset = ph_reset;
    p = ph_new_pool(&o);
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(parked(p), 0);
    assert_int_equal(atomic_load(&ctx.reset_calls), 1);
    pk_pool_destroy(p);
}

/* Two threads release copies of one lease at once (a watchdog detaching
 * a stuck worker while the worker gives its lease back does this):
 * exactly one wins, the other gets PK_EINVAL, and the slot is parked or
 * detached once. */
struct dup_arg {
    pk_pool *p;
    pk_lease l;
    int status;
    _Atomic int *go;
    int rc;
};

static void *
dup_main(void *v)
{
    struct dup_arg *a = v;

    while (!atomic_load(a->go))
        ;
    a->rc = pk_pool_release(a->p, &a->l, a->status);
    return NULL;
}

static void
test_two_releases_of_one_lease_exactly_one_wins(void **state)
{
    int n = (int)(400 * pk_test_scale()) + 20;
    pk_pool *p;

    (void)state;
    p = hot_pool(2);
    for (int i = 0; i < n; i++) {
        struct dup_arg a[2];
        pthread_t th[2];
        _Atomic int go = 0;
        pk_lease l;
        pk_pool_stats st;

        ph_take(p, &l);
        for (int k = 0; k < 2; k++) {
            a[k] = (struct dup_arg){ p, l, PK_RELEASE_OK, &go, -1 };
            if (k == 1 && i % 2)
                a[k].status = PK_RELEASE_DETACH;
            assert_int_equal(pthread_create(&th[k], NULL, dup_main, &a[k]),
                             0);
        }
        atomic_store(&go, 1);
        for (int k = 0; k < 2; k++)
            assert_int_equal(pthread_join(th[k], NULL), 0);
        assert_true((a[0].rc == 0) != (a[1].rc == 0));
        assert_int_equal(a[0].rc + a[1].rc, PK_EINVAL);
        if (a[1].rc == 0 && a[1].status == PK_RELEASE_DETACH)
            ph_item_free(&ctx, l.resource);
        st = ph_stats(p);
        assert_int_equal(st.lent, 0);
        assert_int_equal(st.idle, st.size);
    }
    pk_pool_destroy(p);
}

/* ---- waiters ---------------------------------------------------------- */

static void
test_parked_slot_goes_to_a_thread_that_arrives_later(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *res;
    ph_acquirer a;

    (void)state;
    p = hot_pool(1);
    res = ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    /* Its stripe has no hint: the pool must find the parked one, not time
     * out (max_size 1: no create either). */
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    ph_acquirer_join(&a);
    assert_int_equal(a.rc, 0);
    assert_ptr_equal(a.resource, res);
    ph_give(p, &a.lease);
    pk_pool_destroy(p);
}

static void
test_zero_timeout_acquire_finds_a_slot_parked_by_another_thread(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *res;

    (void)state;
    p = hot_pool(1);
    assert_int_equal(park_from_threads(p, 1), 1);
    res = NULL;
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), 0);
    res = l.resource;
    assert_non_null(res);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_release_while_a_waiter_waits_hands_it_over(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *res;
    ph_acquirer a;

    (void)state;
    p = hot_pool(1);
    res = ph_take(p, &l);
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    ph_give(p, &l); /* the cache is closed while someone waits */
    ph_acquirer_join(&a);
    assert_int_equal(a.rc, 0);
    assert_ptr_equal(a.resource, res);
    assert_true(a.waited_ns > 0);
    ph_give(p, &a.lease);
    assert_int_equal(parked(p), 1); /* open again once nobody waits */
    pk_pool_destroy(p);
}

/* Two threads pass one resource back and forth as fast as they can, each
 * release racing the other's arrival: a slot left parked while the
 * other waits would show as a timeout. */
struct pingpong {
    pk_pool *p;
    pthread_barrier_t *go;
    int n;
    int timeouts, errors;
    _Atomic int *holders;
};

static void *
pingpong_main(void *v)
{
    struct pingpong *a = v;
    pk_lease l;

    pthread_barrier_wait(a->go);
    for (int i = 0; i < a->n; i++) {
        int rc = pk_pool_acquire(a->p, &l, 2000, NULL);
        if (rc == PK_ETIMEDOUT) {
            a->timeouts++;
            continue;
        }
        if (rc) {
            a->errors++;
            continue;
        }
        if (atomic_fetch_add(a->holders, 1) != 0)
            a->errors++; /* lent twice */
        atomic_fetch_sub(a->holders, 1);
        if (pk_pool_release(a->p, &l, PK_RELEASE_OK))
            a->errors++;
    }
    return NULL;
}

static void
test_release_racing_a_waiter_never_strands_the_resource(void **state)
{
    enum { NT = 3 };
    pk_pool *p;
    pthread_t th[NT];
    struct pingpong a[NT];
    pthread_barrier_t go;
    _Atomic int holders = 0;
    int n = (int)(20000 * pk_test_scale()) + 100;
    pk_pool_stats st;

    (void)state;
    p = hot_pool(1);
    pthread_barrier_init(&go, NULL, NT);
    for (int i = 0; i < NT; i++) {
        a[i] = (struct pingpong){ p, &go, n, 0, 0, &holders };
        assert_int_equal(pthread_create(&th[i], NULL, pingpong_main, &a[i]),
                         0);
    }
    for (int i = 0; i < NT; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(a[i].timeouts, 0);
        assert_int_equal(a[i].errors, 0);
    }
    st = ph_stats(p);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.acquires, (uint64_t)NT * (uint64_t)n);
    pk_pool_destroy(p);
}

/* ---- the population's operations see parked slots --------------------- */

static void
test_close_destroys_parked_slots(void **state)
{
    pk_pool *p;
    pk_pool_stats st;
    int n;

    (void)state;
    p = hot_pool(8);
    n = park_from_threads(p, 4);
    assert_true(n >= 1);
    st = ph_stats(p); /* flushes: the parked ones are idle */
    assert_int_equal(st.idle, st.size);
    assert_int_equal(parked(p), 0);
    n = park_from_threads(p, 3);
    assert_true(n >= 1);
    assert_int_equal(pk_pool_close(p, 1000), 0);
    assert_int_equal(parked(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.lent, 0);
    assert_int_equal(atomic_load(&ctx.destroy_calls),
                     atomic_load(&ctx.created));
    pk_pool_destroy(p);
}

static void
test_destroy_with_parked_slots_and_a_lease_out(void **state)
{
    pk_pool *p;
    pk_lease held, l;

    (void)state;
    p = hot_pool(4);
    ph_take(p, &held);
    ph_take(p, &l);
    ph_give(p, &l); /* parked */
    assert_true(park_from_threads(p, 2) >= 1);
    pk_pool_destroy(p); /* frees nothing yet: a lease is out */
    assert_int_equal(atomic_load(&ctx.user_free_calls), 0);
    assert_int_equal(atomic_load(&ctx.live), 1);
    assert_int_equal(pk_pool_release(p, &held, PK_RELEASE_OK), 0);
    assert_int_equal(atomic_load(&ctx.user_free_calls), 0); /* no hook */
    assert_int_equal(atomic_load(&ctx.live), 0);
}

/* A release that parks its slot races pk_pool_destroy on another thread:
 * either close flushes the slot (and destroy frees the pool at once, so
 * the release must not touch the pool after parking: ASan), or the
 * release finds the cache closed and frees the pool itself. */
struct release_arg {
    pk_pool *p;
    pk_lease l;
    _Atomic int go;
    int rc;
};

static void *
release_main(void *v)
{
    struct release_arg *a = v;

    while (!atomic_load(&a->go))
        ;
    a->rc = pk_pool_release(a->p, &a->l, PK_RELEASE_OK);
    return NULL;
}

static void
test_release_racing_destroy_frees_the_pool_once(void **state)
{
    int n = (int)(300 * pk_test_scale()) + 20;

    (void)state;
    for (int i = 0; i < n; i++) {
        pk_pool_options o;
        struct release_arg a;
        pthread_t th;

        ph_options(&o, &ctx, NULL);
        o.user_free = ph_user_free;
        a.p = ph_new_pool(&o);
        atomic_init(&a.go, 0);
        a.rc = -1;
        ph_take(a.p, &a.l);
        assert_int_equal(pthread_create(&th, NULL, release_main, &a), 0);
        atomic_store(&a.go, 1);
        if (i & 1)
            sched_yield();
        pk_pool_destroy(a.p);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(a.rc, 0);
        assert_int_equal(atomic_load(&ctx.user_free_calls), i + 1);
        assert_int_equal(atomic_load(&ctx.live), 0);
    }
}

static void
test_evict_all_retires_parked_slots(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *old;
    int old_id;
    pk_pool_stats st;

    (void)state;
    p = hot_pool(4);
    old = ph_take(p, &l);
    old_id = ph_id(old);
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    assert_int_equal(pk_pool_evict_all(p), 0);
    assert_int_equal(ph_destroyed_count(&ctx, old), 1);
    st = ph_stats(p);
    assert_int_equal(st.size, 0);
    assert_int_not_equal(ph_id(ph_take(p, &l)), old_id);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

static void
test_slot_parked_across_an_eviction_is_never_lent(void **state)
{
    pk_pool *p;
    pk_lease l;
    void *old;
    int old_id;

    (void)state;
    p = hot_pool(4);
    old = ph_take(p, &l);
    old_id = ph_id(old);
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    /* What a release that parked just after evict_all flushed leaves:
     * a parked slot of the old generation. */
    pk__lock_acquire(&p->lock);
    pk__pool_gen_bump_locked(p);
    p->evict_gen = p->generation;
    pk__pool_unlock(p);
    assert_int_equal(ph_destroyed_count(&ctx, old), 0);
    assert_int_not_equal(ph_id(ph_take(p, &l)), old_id);
    assert_int_equal(ph_destroyed_count(&ctx, old), 1);
    assert_int_equal(atomic_load(&ctx.created), 2);
    ph_give(p, &l);
    assert_int_equal(ph_stats(p).size, 1);
    pk_pool_destroy(p);
}

static void
test_resize_below_population_retires_parked_slots(void **state)
{
    pk_pool *p;
    pk_lease l[3];
    pk_pool_stats st;

    (void)state;
    p = hot_pool(4);
    for (int i = 0; i < 3; i++)
        ph_take(p, &l[i]);
    for (int i = 0; i < 3; i++)
        ph_give(p, &l[i]);
    assert_int_equal(parked(p), 1);
    assert_int_equal(pk_pool_resize(p, 0, 0, 1), 0);
    st = ph_stats(p);
    assert_int_equal(st.size, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 2);
    /* min_idle turns the hot path, and so the cache, off; 0 back on. */
    assert_int_equal(pk_pool_resize(p, 0, 1, 2), 0);
    ph_take(p, &l[0]);
    ph_give(p, &l[0]);
    assert_int_equal(parked(p), 0);
    assert_int_equal(pk_pool_resize(p, 0, 0, 2), 0);
    ph_take(p, &l[0]);
    ph_give(p, &l[0]);
    assert_int_equal(parked(p), 1);
    pk_pool_destroy(p);
}

static void
test_pause_empties_the_cache_and_resume_reopens_it(void **state)
{
    pk_pool *p;
    pk_lease l;
    pk_pool_stats st;

    (void)state;
    p = hot_pool(2);
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    assert_int_equal(pk_pool_pause(p), 0);
    assert_int_equal(parked(p), 0);
    st = ph_stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(pk_pool_acquire(p, &l, 0, NULL), PK_EAGAIN);
    assert_int_equal(pk_pool_resume(p), 0);
    ph_take(p, &l);
    ph_give(p, &l);
    assert_int_equal(parked(p), 1);
    pk_pool_destroy(p);
}

/* ---- many threads ------------------------------------------------------ */

struct churn {
    pk_pool *p;
    pthread_barrier_t *go;
    _Atomic int *holder; /* per resource id */
    uint64_t seed;
    int n;
    int errors, acquired;
};

static void *
churn_main(void *v)
{
    struct churn *a = v;
    pk_prng rng;
    pk_lease l[2];
    int held = 0;

    pk_prng_seed(&rng, a->seed);
    pthread_barrier_wait(a->go);
    for (int i = 0; i < a->n; i++) {
        if (held < 2 && (held == 0 || pk_prng_chance(&rng, 500))) {
            /* Only a thread that holds nothing waits: hold-and-wait
             * with more threads than resources would deadlock. */
            int wait = held || pk_prng_chance(&rng, 300) ? 0 : LONG_MS;
            int rc = pk_pool_acquire(a->p, &l[held], wait, NULL);
            if (rc == PK_EAGAIN)
                continue;
            if (rc) {
                a->errors++;
                continue;
            }
            if (atomic_exchange(&a->holder[ph_id(l[held].resource)], 1))
                a->errors++; /* lent twice */
            a->acquired++;
            held++;
        } else {
            held--;
            atomic_store(&a->holder[ph_id(l[held].resource)], 0);
            if (pk_pool_release(a->p, &l[held], PK_RELEASE_OK))
                a->errors++;
        }
    }
    while (held-- > 0) {
        atomic_store(&a->holder[ph_id(l[held].resource)], 0);
        if (pk_pool_release(a->p, &l[held], PK_RELEASE_OK))
            a->errors++;
    }
    return NULL;
}

static void
test_many_threads_never_share_a_resource(void **state)
{
    enum { NT = 8, SIZE = 6 };
    static _Atomic int holder[64]; /* by ph_id: 1..SIZE, no retires */
    pk_pool *p;
    pthread_t th[NT];
    struct churn a[NT];
    pthread_barrier_t go;
    uint64_t seed = pk_test_seed("test_pool_cache churn");
    int n = (int)(20000 * pk_test_scale()) + 100;
    uint64_t acquired = 0;
    pk_pool_stats st;

    (void)state;
    memset(holder, 0, sizeof holder);
    p = hot_pool(SIZE);
    pthread_barrier_init(&go, NULL, NT);
    for (int i = 0; i < NT; i++) {
        a[i] = (struct churn){ p, &go, holder, seed + (uint64_t)i, n, 0, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &a[i]), 0);
    }
    for (int i = 0; i < NT; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(a[i].errors, 0);
        acquired += (uint64_t)a[i].acquired;
    }
    st = ph_stats(p);
    assert_true(st.size <= SIZE);
    assert_int_equal(st.idle, st.size);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.acquires, acquired);
    assert_int_equal(pk_pool_close(p, 1000), 0);
    pk_pool_destroy(p);
}

/* ---- the non-blocking acquire ----------------------------------------- */

static _Thread_local bool in_async_call;
static atomic_int cb_inside_call;
static atomic_bool lender_stop;

static void
note_cb(void *arg, pk_pool_ticket *t)
{
    (void)arg;
    (void)t;
    if (in_async_call)
        atomic_fetch_add(&cb_inside_call, 1);
}

static void *
lender_main(void *arg)
{
    pk_pool *p = arg;
    pk_lease l;

    while (!atomic_load(&lender_stop))
        if (pk_pool_acquire(p, &l, 1, NULL) == 0)
            ph_give(p, &l);
    return NULL;
}

/* A ticket queued just as another thread parks the only resource is
 * served by the queueing itself: it must come back ready (*ready = 1),
 * never with its callback run inside the call, before the caller has the
 * ticket (review: 1 in 60 calls did). */
static void
test_ticket_served_while_queueing_is_ready_without_callback(void **state)
{
    pk_pool *p = hot_pool(1);
    pthread_t th;

    (void)state;
    atomic_store(&cb_inside_call, 0);
    atomic_store(&lender_stop, false);
    assert_int_equal(pthread_create(&th, NULL, lender_main, p), 0);
    for (int i = 0; i < 20000; i++) {
        pk_pool_ticket *t;
        pk_lease l;
        int ready = 0, rc;
        in_async_call = true;
        rc = pk_pool_acquire_async(p, &t, LONG_MS, note_cb, NULL, &ready);
        in_async_call = false;
        assert_int_equal(rc, 0);
        while ((rc = pk_pool_ticket_take(t, &l, NULL)) == PK_EAGAIN)
            sched_yield();
        assert_int_equal(rc, 0);
        ph_give(p, &l);
    }
    atomic_store(&lender_stop, true);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(atomic_load(&cb_inside_call), 0);
    pk_pool_destroy(p);
}

/* A release that read the generation before pk_pool_evict_all and parks
 * after it (held open by the test hook between its generation check and
 * its parking CAS): the evicted resource must never be lent again, even
 * through a flush to the idle list and a passing check. Before, the slot
 * parked in the old generation, stats' flush made it idle, and the next
 * acquire checked it (healthy) and lent it. */
static _Atomic int delay_in, delay_go;

static void
park_delay(void)
{
    atomic_store(&delay_in, 1);
    for (int i = 0; i < 5000 && !atomic_load(&delay_go); i++)
        ph_sleep_ms(1);
}

struct evict_holder {
    pk_pool *p;
    pk_lease l;
    int rc;
};

static void *
evict_holder_main(void *arg)
{
    struct evict_holder *h = arg;

    atomic_store(&pk__test_park_delay, park_delay);
    h->rc = pk_pool_release(h->p, &h->l, PK_RELEASE_OK);
    return NULL;
}

static void
test_release_racing_evict_all_never_lends_evicted(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    struct evict_holder h;
    pthread_t th;
    pk_lease l;
    void *old;
    int old_id;

    (void)state;
    atomic_store(&delay_in, 0);
    atomic_store(&delay_go, 0);
    ph_options(&o, &ctx, NULL);
    o.check = ph_check;
    o.check_after_ms = PK_NEVER; /* no clock: the hot path and the cache */
    o.max_size = 4;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    h.p = p;
    old = ph_take(p, &h.l);
    old_id = ph_id(old);
    assert_int_equal(pthread_create(&th, NULL, evict_holder_main, &h), 0);
    assert_true(ph_wait_atomic(&delay_in, 1, LONG_MS));
    atomic_store(&pk__test_park_delay, NULL);
    assert_int_equal(pk_pool_evict_all(p), 0);
    atomic_store(&delay_go, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(h.rc, 0);
    (void)ph_stats(p); /* flushes the cache to the idle list */
    ph_take(p, &l); /* a new one (the allocator may reuse the address) */
    assert_int_not_equal(ph_id(l.resource), old_id);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* pk_pool_evict_all while an acquirer's check runs on an evicted
 * resource: healthy, but made before the eviction, so it is retired and
 * the acquirer gets a new one (before, it was lent). */
static void
test_evict_all_during_acquire_check_retires_it(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    ph_acquirer a;
    pk_lease l;
    int old_id;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.check = ph_check;
    o.check_after_ms = PK_ALWAYS;
    o.max_size = 4;
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    old_id = ph_id(ph_take(p, &l));
    ph_give(p, &l);
    ph_check_gate(&ctx, true);
    assert_int_equal(ph_acquirer_start(&a, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_atomic(&ctx.in_check, 1, LONG_MS));
    assert_int_equal(pk_pool_evict_all(p), 0);
    ph_check_gate(&ctx, false);
    ph_acquirer_join(&a);
    assert_int_equal(a.rc, 0);
    assert_int_not_equal(a.res_id, old_id);
    assert_int_equal(atomic_load(&ctx.destroy_calls), 1);
    ph_give(p, &a.lease);
    pk_pool_destroy(p);
}

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_release_parks_and_next_acquire_takes_it_back),
        T(test_stale_lease_of_a_parked_slot_is_einval),
        T(test_two_releases_of_one_lease_exactly_one_wins),
        T(test_one_thread_gets_its_releases_back_most_recent_first),
        T(test_fifo_and_policy_pools_have_no_cache),
        T(test_parked_slot_goes_to_a_thread_that_arrives_later),
        T(test_zero_timeout_acquire_finds_a_slot_parked_by_another_thread),
        T(test_release_while_a_waiter_waits_hands_it_over),
        T(test_release_racing_a_waiter_never_strands_the_resource),
        T(test_close_destroys_parked_slots),
        T(test_destroy_with_parked_slots_and_a_lease_out),
        T(test_release_racing_destroy_frees_the_pool_once),
        T(test_evict_all_retires_parked_slots),
        T(test_slot_parked_across_an_eviction_is_never_lent),
        T(test_release_racing_evict_all_never_lends_evicted),
        T(test_evict_all_during_acquire_check_retires_it),
        T(test_resize_below_population_retires_parked_slots),
        T(test_pause_empties_the_cache_and_resume_reopens_it),
        T(test_many_threads_never_share_a_resource),
        T(test_ticket_served_while_queueing_is_ready_without_callback),
    };
    return cmocka_run_group_tests_name("pool_cache", tests, NULL, NULL);
}
