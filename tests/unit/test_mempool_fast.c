/* tests/unit/test_mempool_fast.c - the object pool's inline fast path
 * (mempool.h): the macros and the functions mix freely; the inline free
 * checks a pointer as the function does (every byte offset of a slab, for
 * strides that are and are not powers of two); a pool made at the address
 * of a destroyed one is never served from a dead cache of another thread;
 * an inline free goes to an alloc waiting at the budget; the per-thread
 * counts reach the stats; pools with hooks or zeroing take the slow path.
 * (The fork rule is in test_mempool.c: its child's first alloc is an
 * inline one, from a cache the parent filled.)
 *
 * Worker threads never call cmocka: they record what they saw and the
 * main thread asserts after joining them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poolkit/mempool.h>

#include "alloc.h"
#include "mempool_helpers.h"
#include "test_util.h"

/* ---- macros and functions ------------------------------------------------ */

static void
test_inline_and_out_of_line_calls_mix(void **state)
{
    int (*alloc_fn)(pk_mempool *, void **, int) = pk_mempool_alloc;
    int (*free_fn)(pk_mempool *, void *) = pk_mempool_free;
    pk_mempool *mp;
    pk_mempool_stats st;
    void *p[300];

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 40 });
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 300; i++) {
            switch (i % 3) {
            case 0:
                assert_int_equal(pk_mempool_alloc(mp, &p[i], 0), 0);
                break;
            case 1:
                assert_int_equal(alloc_fn(mp, &p[i], 0), 0);
                break;
            default:
                assert_int_equal(pk_mempool_alloc_at(mp, &p[i], 0,
                                                     __FILE__, __LINE__),
                                 0);
            }
            memset(p[i], i & 0xff, 40);
        }
        for (int i = 0; i < 300; i++)
            for (int j = 0; j < 40; j++)
                assert_int_equal(((unsigned char *)p[i])[j], i & 0xff);
        for (int i = 0; i < 300; i++)
            assert_int_equal(i % 2 ? pk_mempool_free(mp, p[i])
                                   : free_fn(mp, p[i]),
                             0);
    }
    st = mh_stats(mp);
    assert_int_equal(st.allocated, 900);
    assert_int_equal(st.freed, 900);
    assert_int_equal(st.live, 0);
    pk_mempool_destroy(mp);
}

/* ---- the inline free's check --------------------------------------------- */

static int
cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a;
    uintptr_t y = (uintptr_t) * (void *const *)b;

    return x < y ? -1 : x > y;
}

/* Every byte of a one-slab pool that is not an object's start is refused
 * by free, with the cache empty (so the inline path checks first), and
 * every object's start is taken. */
static void
every_offset_case(size_t size, size_t align)
{
    pk_mempool *mp;
    pk_mempool_stats st;
    void **objs, *extra;
    char *base;
    size_t n, k = 0;

    mp = mh_make(&(pk_mempool_options){ .object_size = size, .align = align,
                                     .slab_size = 4096, .max_bytes = 4096,
                                     .cache_size = 8 });
    st = mh_stats(mp);
    n = st.objects_per_slab;
    objs = calloc(n, sizeof *objs);
    assert_non_null(objs);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &extra, 0), PK_EAGAIN);
    qsort(objs, n, sizeof *objs, cmp_ptr);
    base = (char *)((uintptr_t)objs[0] & ~(uintptr_t)4095);
    for (size_t off = 0; off < 4096; off++) {
        if (k < n && base + off == (char *)objs[k]) {
            k++;
            continue;
        }
        if (pk_mempool_free(mp, base + off) != PK_EINVAL)
            fail_msg("size %zu align %zu: free of slab offset %zu taken",
                     size, align, off);
    }
    assert_int_equal(k, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
    st = mh_stats(mp);
    assert_int_equal(st.live, 0);
    assert_int_equal(st.double_frees, 0);
    free(objs);
    pk_mempool_destroy(mp);
}

static void
test_inline_free_checks_every_offset(void **state)
{
    (void)state;
    every_offset_case(16, 0);   /* stride 16: a power of two */
    every_offset_case(8, 8);    /* 8 */
    every_offset_case(24, 8);   /* 24 = 3 << 3 */
    every_offset_case(48, 0);   /* 48 = 3 << 4 */
    every_offset_case(80, 0);   /* 80 = 5 << 4 */
    every_offset_case(100, 4);  /* 100 = 25 << 2 */
    every_offset_case(7, 1);    /* 7, odd */
    every_offset_case(1000, 8); /* 1000 = 125 << 3 */
    every_offset_case(2048, 0); /* one object per 4 KiB slab */
}

/* ---- a pool at a destroyed pool's address -------------------------------- */

struct reuse {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step;         /* 1: warm A; 2: main made B; 3: done */
    pk_mempool *a, *b;
    int rc_a, rc_b, rc_free, rc_free_fn;
    void *obj;
};

static void
wait_step(struct reuse *r, int step)
{
    pthread_mutex_lock(&r->mu);
    while (r->step < step)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static void
set_step(struct reuse *r, int step)
{
    pthread_mutex_lock(&r->mu);
    r->step = step;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void *
reuse_thread(void *arg)
{
    struct reuse *r = arg;
    void *p;

    /* Leaves this thread's cache of A full of A's objects, and A's
     * cache its last used. */
    r->rc_a = pk_mempool_alloc(r->a, &p, PK_WAIT_FOREVER);
    if (r->rc_a == 0)
        r->rc_a = pk_mempool_free(r->a, p);
    set_step(r, 1);
    wait_step(r, 2);
    r->rc_b = pk_mempool_alloc(r->b, &r->obj, PK_WAIT_FOREVER);
    if (r->rc_b == 0) {
        /* An object of B: the function's check (its slab's tag) says so,
         * and it is writable (A's slabs are unmapped). */
        memset(r->obj, 0x5a, 64);
        r->rc_free_fn = (pk_mempool_free)(r->b, r->obj);
        r->rc_free = pk_mempool_alloc(r->b, &p, PK_WAIT_FOREVER);
        if (r->rc_free == 0)
            r->rc_free = pk_mempool_free(r->b, p);
    }
    set_step(r, 3);
    return NULL;
}

static void
test_a_pool_made_where_one_was_destroyed_is_served_right(void **state)
{
    struct reuse r = { .mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER };
    pk_mempool_options o = { .object_size = 64 };
    pk_mempool_stats st;
    pthread_t t;
    int same = 0;

    (void)state;
    r.a = mh_make(&o);
    assert_int_equal(pthread_create(&t, NULL, reuse_thread, &r), 0);
    wait_step(&r, 1);
    pk_mempool_destroy(r.a);
    /* malloc hands the handle's memory out again, most likely at once. */
    for (int i = 0; i < 8 && !same; i++) {
        r.b = mh_make(&o);
        same = r.b == r.a;
        if (!same)
            pk_mempool_destroy(r.b);
    }
    if (!same) {
        r.b = mh_make(&o);
        print_message("note: no pool was made at the destroyed one's "
                      "address; the case ran with a new address\n");
    }
    set_step(&r, 2);
    pthread_join(t, NULL);
    assert_int_equal(r.rc_a, 0);
    assert_int_equal(r.rc_b, 0);
    assert_int_equal(r.rc_free_fn, 0);
    assert_int_equal(r.rc_free, 0);
    /* Two allocs and two frees, all of B (the thread's exit gave its
     * cache back). */
    st = mh_stats(r.b);
    assert_int_equal(st.allocated, 2);
    assert_int_equal(st.freed, 2);
    assert_int_equal(st.live, 0);
    pk_mempool_destroy(r.b);
}

/* ---- the budget: an inline free wakes a waiter ------------------------------ */

struct waiter {
    pk_mempool *mp;
    int rc;
    void *p;
};

static void *
wait_alloc(void *arg)
{
    struct waiter *w = arg;

    w->rc = pk_mempool_alloc(w->mp, &w->p, 10000);
    return NULL;
}

static void
test_inline_free_goes_to_a_waiting_alloc(void **state)
{
    pk_mempool *mp;
    pk_mempool_stats st;
    struct waiter w = { 0 };
    void **objs, *p;
    size_t n;
    pthread_t t;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64, .slab_size = 4096,
                                     .max_bytes = 4096, .cache_size = 8 });
    n = mh_stats(mp).objects_per_slab;
    objs = calloc(n, sizeof *objs);
    assert_non_null(objs);
    /* Every object out: this thread's cache is empty, with room. */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), PK_EAGAIN);
    w.mp = mp;
    assert_int_equal(pthread_create(&t, NULL, wait_alloc, &w), 0);
    do {
        sleep_ms(1);
        st = mh_stats(mp);
    } while (st.waits == 0);
    /* The other thread waits at the budget: this free, which the inline
     * path could keep in the cache, goes to the slab and wakes it. */
    assert_int_equal(pk_mempool_free(mp, objs[0]), 0);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    assert_ptr_equal(w.p, objs[0]);
    assert_int_equal(pk_mempool_free(mp, w.p), 0);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), 0);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(mh_stats(mp).live, 0);
    free(objs);
    pk_mempool_destroy(mp);
}

/* ---- stats ------------------------------------------------------------------ */

struct spin {
    pk_mempool *mp;
    int n, bad;
};

static void *
spin(void *arg)
{
    struct spin *s = arg;
    void *p[4];

    for (int i = 0; i < s->n; i++) {
        for (int j = 0; j < 4; j++)
            if (pk_mempool_alloc(s->mp, &p[j], PK_WAIT_FOREVER) != 0)
                s->bad++;
        for (int j = 0; j < 4; j++)
            if (pk_mempool_free(s->mp, p[j]) != 0)
                s->bad++;
    }
    return NULL;
}

static void
test_inline_calls_count_in_the_stats(void **state)
{
    pk_mempool *mp;
    pk_mempool_stats st;
    struct spin s[2];
    pthread_t t[2];

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 32 });
    for (int i = 0; i < 2; i++) {
        s[i] = (struct spin){ .mp = mp, .n = 10000 };
        assert_int_equal(pthread_create(&t[i], NULL, spin, &s[i]), 0);
    }
    spin(&(struct spin){ .mp = mp, .n = 10000 });
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].bad, 0);
    }
    st = mh_stats(mp);
    assert_int_equal(st.allocated, 3 * 40000);
    assert_int_equal(st.freed, 3 * 40000);
    assert_int_equal(st.live, 0);
    pk_mempool_destroy(mp);
}

/* ---- pools the inline path does not serve --------------------------------- */

static atomic_int n_alloc, n_free;

static void
on_alloc(void *user, void *obj)
{
    (void)user;
    (void)obj;
    atomic_fetch_add(&n_alloc, 1);
}

static void
on_free(void *user, void *obj)
{
    (void)user;
    (void)obj;
    atomic_fetch_add(&n_free, 1);
}

static void
test_hooks_and_zeroing_take_the_slow_path(void **state)
{
    pk_mempool *mp;
    unsigned char *p;

    (void)state;
    atomic_store(&n_alloc, 0);
    atomic_store(&n_free, 0);
    mp = mh_make(&(pk_mempool_options){ .object_size = 32,
                                     .on_alloc = on_alloc });
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
        assert_int_equal(pk_mempool_free(mp, p), 0);
    }
    pk_mempool_destroy(mp);
    mp = mh_make(&(pk_mempool_options){ .object_size = 32,
                                     .on_free = on_free });
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
        assert_int_equal(pk_mempool_free(mp, p), 0);
    }
    pk_mempool_destroy(mp);
    assert_int_equal(atomic_load(&n_alloc), 100);
    assert_int_equal(atomic_load(&n_free), 100);

    mp = mh_make(&(pk_mempool_options){ .object_size = 32,
                                     .flags = PK_MEMPOOL_ZERO });
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
        for (int j = 0; j < 32; j++)
            assert_int_equal(p[j], 0);
        memset(p, 0xff, 32);
        assert_int_equal(pk_mempool_free(mp, p), 0);
    }
    pk_mempool_destroy(mp);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, mh_setup, mh_teardown)
        T(test_inline_and_out_of_line_calls_mix),
        T(test_inline_free_checks_every_offset),
        T(test_a_pool_made_where_one_was_destroyed_is_served_right),
        T(test_inline_free_goes_to_a_waiting_alloc),
        T(test_inline_calls_count_in_the_stats),
        T(test_hooks_and_zeroing_take_the_slow_path),
#undef T
    };
    return cmocka_run_group_tests_name("mempool_fast", tests, NULL, NULL);
}
