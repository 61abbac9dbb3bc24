/* tests/unit/test_mempool.c - the object pool: geometry and options, alloc
 * and free, hooks (ctor/dtor kept across reuse, on_alloc/on_free, a
 * failing ctor), zeroing, the budget (EAGAIN, ETIMEDOUT, a free on
 * another thread ending a wait), trim and the idle timeout (the slab's
 * pages really unmapped: mincore), thread-exit flush and cross-thread
 * free, destroy with objects out (the leak event), double free, fork,
 * every allocation failing in turn, and bad input to every call.
 *
 * Worker threads never call cmocka: they record what they saw and the
 * main thread asserts after joining them. */
#define _DEFAULT_SOURCE /* mincore */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/mempool.h>

#include "alloc.h"
#include "mempool_helpers.h"
#include "test_util.h"

/* 1 if the page holding p is mapped in this process. */
static int
mapped(const void *p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char v;
    void *a = (void *)((uintptr_t)p & ~(uintptr_t)(page - 1));

    if (mincore(a, page, &v) == 0)
        return 1;
    assert_int_equal(errno, ENOMEM);
    return 0;
}

/* ---- options -------------------------------------------------------------- */

static void
test_options_rejects_each_bad_field(void **state)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    pk_mempool_options o;
    pk_mempool *mp = (pk_mempool *)1;
    pk_error err;
    int (*ctor)(void *, void *) = (int (*)(void *, void *))1;
    struct {
        pk_mempool_options o;
        const char *field;
    } bad[] = {
        { { .object_size = 0 }, "object_size" },
        { { .object_size = PK_MEMPOOL_OBJECT_MAX + 1 }, "object_size" },
        { { .object_size = 8, .align = 3 }, "align" },
        { { .object_size = 8, .align = page * 2 }, "align" },
        { { .object_size = 8, .slab_size = page + 1 }, "slab_size" },
        { { .object_size = 8, .slab_size = page / 2 }, "slab_size" },
        { { .object_size = 8, .slab_size = PK_MEMPOOL_SLAB_MAX * 2 },
          "slab_size" },
        { { .object_size = page, .slab_size = page }, "slab_size" },
        { { .object_size = 64, .max_bytes = 1000 }, "max_bytes" },
        { { .object_size = 64, .max_bytes = 1 << 16, .min_idle = 2 },
          "min_idle" },
        { { .object_size = 64, .cache_size = -2 }, "cache_size" },
        { { .object_size = 64, .cache_size = PK_MEMPOOL_CACHE_MAX + 1 },
          "cache_size" },
        { { .object_size = 64, .flags = 1u << 9 }, "flags" },
        { { .object_size = 64, .flags = PK_MEMPOOL_ZERO, .ctor = ctor },
          "PK_MEMPOOL_ZERO" },
        { { .object_size = 64, .idle_timeout_ms = -5 }, "idle_timeout_ms" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pk_mempool_options_check(&bad[i].o, &err),
                         PK_EINVAL);
        if (!strstr(err.msg, bad[i].field))
            fail_msg("case %zu: \"%s\" does not name %s", i, err.msg,
                     bad[i].field);
        assert_int_equal(pk_mempool_create(&mp, &bad[i].o), PK_EINVAL);
        assert_null(mp);
        mp = (pk_mempool *)1;
    }
    assert_int_equal(pk_mempool_options_check(NULL, &err), PK_EINVAL);
    assert_int_equal(pk_mempool_options_check(NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_create(&mp, NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_create(NULL, &bad[0].o), PK_EINVAL);
    assert_int_equal(pk_mempool_options_init(NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_options_init(&o), 0);
    assert_int_equal(o.idle_timeout_ms, PK_NEVER);
    assert_int_equal(pk_mempool_options_check(&o, NULL), PK_EINVAL);
    o.object_size = 64;
    assert_int_equal(pk_mempool_options_check(&o, &err), 0);
    assert_int_equal(err.code, 0);
}

static void
test_geometry_follows_the_options(void **state)
{
    pk_mempool *mp;
    pk_mempool_stats st;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64 });
    st = mh_stats(mp);
    assert_int_equal(st.object_size, 64);
    assert_int_equal(st.stride, 64);
    assert_int_equal(st.slab_size, 65536);
    assert_true(st.objects_per_slab >= 1000 && st.objects_per_slab < 1024);
    assert_int_equal(st.cache_size, 256);
    assert_int_equal(st.slabs, 0); /* nothing mapped before the first alloc */
    pk_mempool_destroy(mp);

    mp = mh_make(&(pk_mempool_options){ .object_size = 3 });
    st = mh_stats(mp);
    assert_int_equal(st.stride, 4);
    pk_mempool_destroy(mp);

    mp = mh_make(&(pk_mempool_options){ .object_size = PK_MEMPOOL_OBJECT_MAX,
                                     .cache_size = PK_NEVER });
    st = mh_stats(mp);
    assert_true(st.objects_per_slab >= 8);
    assert_int_equal(st.cache_size, 0);
    pk_mempool_destroy(mp);
}

/* ---- alloc and free ------------------------------------------------------- */

static void
test_objects_are_distinct_aligned_and_writable(void **state)
{
    enum { N = 3000 };
    static void *objs[N];
    size_t aligns[] = { 0, 8, 64, 4096 };

    (void)state;
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        pk_mempool *mp = mh_make(&(pk_mempool_options){
            .object_size = 40, .align = aligns[a] });
        size_t want = aligns[a] ? aligns[a] : 16;
        pk_mempool_stats st;

        for (int i = 0; i < N; i++) {
            assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
            assert_int_equal((uintptr_t)objs[i] % want, 0);
            memset(objs[i], i & 0xff, 40);
        }
        for (int i = 0; i < N; i++)
            for (int j = 0; j < 40; j++)
                assert_int_equal(((unsigned char *)objs[i])[j], i & 0xff);
        st = mh_stats(mp);
        assert_int_equal(st.allocated, N);
        assert_int_equal(st.live, N);
        assert_true(st.peak >= N);
        assert_true(st.slabs * st.objects_per_slab >= N);
        assert_int_equal(st.bytes_mapped, st.slabs * st.slab_size);
        for (int i = 0; i < N; i++)
            assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
        st = mh_stats(mp);
        assert_int_equal(st.freed, N);
        assert_int_equal(st.live, 0);
        pk_mempool_destroy(mp);
    }
}

static void
test_zero_flag_zeroes_a_reused_object(void **state)
{
    pk_mempool *mp;
    unsigned char *p, *q;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 100,
                                     .flags = PK_MEMPOOL_ZERO });
    assert_int_equal(pk_mempool_alloc(mp, (void **)&p, 0), 0);
    memset(p, 0xab, 100);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(pk_mempool_alloc(mp, (void **)&q, 0), 0);
    assert_ptr_equal(p, q); /* the cache is LIFO */
    for (int i = 0; i < 100; i++)
        assert_int_equal(q[i], 0);
    pk_mempool_free(mp, q);
    pk_mempool_destroy(mp);
}

/* ---- hooks -------------------------------------------------------------- */

struct obj {
    uint32_t magic; /* set by ctor */
    uint32_t uses;  /* kept across reuse */
    char pad[56];
};

struct hooks {
    atomic_int ctors, dtors, allocs, frees;
    int fail_at;    /* ctor fails on this call (1-based), 0 = never */
    int fail_code;
};

static int
h_ctor(void *user, void *obj)
{
    struct hooks *h = user;
    int n = atomic_fetch_add(&h->ctors, 1) + 1;

    if (h->fail_at && n == h->fail_at)
        return h->fail_code;
    ((struct obj *)obj)->magic = 0xc0ffee;
    ((struct obj *)obj)->uses = 0;
    return 0;
}

static void
h_dtor(void *user, void *obj)
{
    struct hooks *h = user;

    assert_int_equal(((struct obj *)obj)->magic, 0xc0ffee);
    atomic_fetch_add(&h->dtors, 1);
}

static void
h_alloc(void *user, void *obj)
{
    (void)obj;
    atomic_fetch_add(&((struct hooks *)user)->allocs, 1);
}

static void
h_free(void *user, void *obj)
{
    (void)obj;
    atomic_fetch_add(&((struct hooks *)user)->frees, 1);
}

static void
test_objects_stay_constructed_across_reuse(void **state)
{
    struct hooks h = { 0 };
    pk_mempool *mp;
    pk_mempool_stats st;
    struct obj *o;

    (void)state;
    mp = mh_make(&(pk_mempool_options){
        .object_size = sizeof(struct obj), .ctor = h_ctor, .dtor = h_dtor,
        .on_alloc = h_alloc, .on_free = h_free, .user = &h });
    st = mh_stats(mp);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(pk_mempool_alloc(mp, (void **)&o, 0), 0);
        assert_int_equal(o->magic, 0xc0ffee);
        o->uses++;
        assert_int_equal(pk_mempool_free(mp, o), 0);
    }
    assert_int_equal(o->uses, 1000); /* the same object, never reset */
    assert_int_equal(atomic_load(&h.ctors), (int)st.objects_per_slab);
    assert_int_equal(atomic_load(&h.allocs), 1000);
    assert_int_equal(atomic_load(&h.frees), 1000);
    assert_int_equal(atomic_load(&h.dtors), 0);
    pk_mempool_destroy(mp);
    assert_int_equal(atomic_load(&h.dtors), (int)st.objects_per_slab);
}

static void
test_a_failing_ctor_fails_the_alloc(void **state)
{
    int codes[] = { 7, PK_ENOMEM };
    int want[] = { PK_ECREATE, PK_ENOMEM };

    (void)state;
    for (int c = 0; c < 2; c++) {
        struct hooks h = { .fail_at = 3, .fail_code = codes[c] };
        pk_mempool *mp = mh_make(&(pk_mempool_options){
            .object_size = sizeof(struct obj), .ctor = h_ctor,
            .dtor = h_dtor, .user = &h });
        void *p = (void *)1;

        assert_int_equal(pk_mempool_alloc(mp, &p, 0), want[c]);
        assert_null(p);
        assert_int_equal(atomic_load(&h.dtors), 2); /* the two before */
        assert_int_equal(mh_stats(mp).slabs, 0);
        pk_mempool_destroy(mp);
    }
}

/* ---- the budget ------------------------------------------------------------ */

struct later {
    pk_mempool *mp;
    void *obj;
    int delay_ms;
    int rc;
};

static void *
free_later(void *arg)
{
    struct later *l = arg;

    sleep_ms(l->delay_ms);
    l->rc = pk_mempool_free(l->mp, l->obj);
    return NULL;
}

static void
budget_case(int cache_size)
{
    pk_mempool *mp;
    pk_mempool_stats st;
    void **objs;
    void *p;
    size_t n;
    pthread_t t;
    struct later l;

    mp = mh_make(&(pk_mempool_options){ .object_size = 64,
                                     .max_bytes = 65536,
                                     .cache_size = cache_size });
    st = mh_stats(mp);
    n = st.objects_per_slab;
    objs = calloc(n, sizeof *objs);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), PK_EAGAIN);
    assert_null(p);
    assert_int_equal(pk_mempool_alloc(mp, &p, 30), PK_ETIMEDOUT);
    st = mh_stats(mp);
    assert_int_equal(st.slabs, 1);
    assert_int_equal(st.waits, 1);
    assert_int_equal(st.timeouts, 2);
    assert_int_equal(st.max_bytes, 65536);

    /* A free on another thread ends the wait, cache or none. */
    l = (struct later){ .mp = mp, .obj = objs[n / 2], .delay_ms = 50 };
    assert_int_equal(pthread_create(&t, NULL, free_later, &l), 0);
    assert_int_equal(pk_mempool_alloc(mp, &p, 10000), 0);
    assert_ptr_equal(p, objs[n / 2]);
    pthread_join(t, NULL);
    assert_int_equal(l.rc, 0);
    for (size_t i = 0; i < n; i++)
        pk_mempool_free(mp, objs[i]);
    free(objs);
    pk_mempool_destroy(mp);
}

static void
test_budget_waits_then_times_out(void **state)
{
    (void)state;
    budget_case(PK_NEVER);
    budget_case(0);
}

/* ---- memory back to the system ------------------------------------------ */

static void
test_trim_unmaps_empty_slabs_down_to_min_idle(void **state)
{
    enum { N = 20000 };
    static void *objs[N];
    pk_mempool *mp;
    pk_mempool_stats st;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64, .min_idle = 2 });
    st = mh_stats(mp);
    assert_int_equal(st.slabs, 2); /* the warm floor, mapped at create */
    assert_int_equal(st.bytes_resident_trim, 0); /* no trim yet */
    for (int i = 0; i < N; i++) {
        assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
        memset(objs[i], 1, 64);
    }
    st = mh_stats(mp);
    assert_true(st.slabs >= N / st.objects_per_slab + 1);
    /* A trim with every object in use keeps them, and their pages. */
    assert_int_equal(pk_mempool_trim(mp), 0);
    st = mh_stats(mp);
    assert_true(st.bytes_resident_trim >= (uint64_t)N * 64);
    assert_true(st.bytes_resident_trim <= st.bytes_mapped);
    for (int i = 0; i < N; i++)
        assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
    assert_int_equal(pk_mempool_trim(mp), 0);
    st = mh_stats(mp);
    assert_true(st.bytes_resident_trim > 0); /* the floor's headers */
    assert_true(st.bytes_resident_trim <= 2 * st.slab_size);
    assert_int_equal(st.slabs, 2);
    assert_int_equal(st.slabs_empty, 2);
    assert_int_equal(st.bytes_mapped, 2 * st.slab_size);
    assert_int_equal(st.slabs_mapped - st.slabs_unmapped, 2);
    /* The first and the last object's pages: one slab of the two kept
     * (LIFO: the warmest), the other unmapped. */
    assert_int_equal(mapped(objs[0]) + mapped(objs[N - 1]) <= 2, 1);
    assert_false(mapped(objs[N / 2]) && mapped(objs[N / 3]) &&
                 mapped(objs[N / 4]));
    pk_mempool_destroy(mp);
}

struct churn {
    pk_mempool *mp;
    int n;
    void **objs; /* NULL: free its own */
    int bad;
};

static void *
alloc_free_exit(void *arg)
{
    struct churn *c = arg;
    void *p[64];

    for (int i = 0; i < c->n; i++)
        if (pk_mempool_alloc(c->mp, &p[i], 0) != 0)
            c->bad++;
    for (int i = 0; i < c->n; i++)
        if (pk_mempool_free(c->mp, p[i]) != 0)
            c->bad++;
    return NULL; /* its cache goes back at exit */
}

static void
test_idle_timeout_unmaps_after_thread_exit(void **state)
{
    pk_mempool *mp;
    pk_mempool_stats st;
    pthread_t t;
    struct churn c;

    (void)state;
    mp = mh_make(&(pk_mempool_options){
        .object_size = 64, .idle_timeout_ms = 20,
        .flags = PK_MEMPOOL_MANUAL_MAINTENANCE });
    c = (struct churn){ .mp = mp, .n = 10 };
    assert_int_equal(pthread_create(&t, NULL, alloc_free_exit, &c), 0);
    pthread_join(t, NULL);
    assert_int_equal(c.bad, 0);
    st = mh_stats(mp);
    assert_int_equal(st.slabs, 1);
    assert_int_equal(st.slabs_empty, 1); /* the cache came back at exit */
    assert_int_equal(st.live, 0);
    assert_int_equal(st.allocated, 10);
    sleep_ms(40);
    assert_int_equal(pk_mempool_maintain(mp), 0);
    st = mh_stats(mp);
    assert_int_equal(st.slabs, 0);
    assert_int_equal(st.slabs_unmapped, 1);
    pk_mempool_destroy(mp);
}

static void *
free_all(void *arg)
{
    struct churn *c = arg;

    for (int i = 0; i < c->n; i++)
        if (pk_mempool_free(c->mp, c->objs[i]) != 0)
            c->bad++;
    return NULL;
}

static void
test_objects_freed_on_another_thread_drain_back(void **state)
{
    enum { N = 5000 };
    static void *objs[N];
    pk_mempool *mp;
    pk_mempool_stats st;
    pthread_t t;
    struct churn c;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 48 });
    for (int i = 0; i < N; i++)
        assert_int_equal(pk_mempool_alloc(mp, &objs[i], 0), 0);
    c = (struct churn){ .mp = mp, .n = N, .objs = objs };
    assert_int_equal(pthread_create(&t, NULL, free_all, &c), 0);
    pthread_join(t, NULL);
    assert_int_equal(c.bad, 0);
    st = mh_stats(mp);
    assert_int_equal(st.freed, N);
    assert_int_equal(st.live, 0);
    /* Every object is back in its slab: this thread's cache took a batch
     * of the last slab's objects; trim gives that back too. */
    assert_int_equal(pk_mempool_trim(mp), 0);
    st = mh_stats(mp);
    assert_int_equal(st.slabs, 0);
    pk_mempool_destroy(mp);
}

/* ---- ends ----------------------------------------------------------------- */

struct ev {
    int n;
    int kind;
    char msg[PK_ERROR_MSG_SIZE];
    int created, destroyed;
};

static void
on_event(void *user, const pk_event *e)
{
    struct ev *ev = user;

    if (e->kind == PK_EVENT_CREATED)
        ev->created++;
    else if (e->kind == PK_EVENT_DESTROYED)
        ev->destroyed++;
    if (e->kind != PK_EVENT_LEASE_OUT_AT_CLOSE)
        return;
    ev->n++;
    ev->kind = e->kind;
    snprintf(ev->msg, sizeof ev->msg, "%s", e->error ? e->error->msg : "");
}

static void
test_destroy_reports_objects_still_out(void **state)
{
    struct hooks h = { 0 };
    struct ev ev = { 0 };
    pk_mempool *mp;
    void *p[5];

    (void)state;
    mp = mh_make(&(pk_mempool_options){
        .object_size = sizeof(struct obj), .ctor = h_ctor, .dtor = h_dtor,
        .user = &h, .event = on_event, .event_user = &ev });
    for (int i = 0; i < 5; i++)
        assert_int_equal(pk_mempool_alloc(mp, &p[i], 0), 0);
    pk_mempool_free(mp, p[0]);
    pk_mempool_free(mp, p[1]); /* in this thread's cache: not a leak */
    pk_mempool_destroy(mp);
    assert_int_equal(ev.n, 1);
    assert_non_null(strstr(ev.msg, "3 objects still out (192 bytes)"));
    assert_int_equal(ev.created, 1);
    assert_int_equal(ev.destroyed, 1);
    assert_int_equal(atomic_load(&h.dtors), atomic_load(&h.ctors));

    /* Nothing out, nothing reported. */
    ev.n = 0;
    mp = mh_make(&(pk_mempool_options){ .object_size = 8, .event = on_event,
                                     .event_user = &ev });
    assert_int_equal(pk_mempool_alloc(mp, &p[0], 0), 0);
    pk_mempool_free(mp, p[0]);
    pk_mempool_destroy(mp);
    assert_int_equal(ev.n, 0);
    pk_mempool_destroy(NULL);
}

/* A full cache hands half of itself to the pool's batch stack; another
 * thread's empty cache takes it from there (no slab mapped for it), and
 * at destroy objects still on the stack are free, not leaked. */
static void *
take_four(void *arg)
{
    pk_mempool *mp = arg;
    void *q[4];

    for (int i = 0; i < 4; i++)
        if (pk_mempool_alloc(mp, &q[i], 0) != 0)
            return NULL;
    for (int i = 0; i < 4; i++)
        pk_mempool_free(mp, q[i]); /* into the slabs at thread exit */
    return mp;
}

static void
test_handed_back_batches_are_free_at_destroy(void **state)
{
    struct ev ev = { 0 };
    pk_mempool_stats st;
    pk_mempool *mp;
    pthread_t t;
    void *p[20], *res = NULL;

    (void)state;
    mp = mh_make(&(pk_mempool_options){
        .object_size = 64, .cache_size = 8, .event = on_event,
        .event_user = &ev });
    for (int i = 0; i < 20; i++)
        assert_int_equal(pk_mempool_alloc(mp, &p[i], 0), 0);
    for (int i = 1; i < 20; i++) /* the cache fills, batches go out */
        assert_int_equal(pk_mempool_free(mp, p[i]), 0);
    assert_int_equal(pthread_create(&t, NULL, take_four, mp), 0);
    assert_int_equal(pthread_join(t, &res), 0);
    assert_ptr_equal(res, mp);
    /* The thread took a batch off the stack (objects out of the slabs
     * already): it took none from the slabs. */
    assert_int_equal(pk_mempool_stats_get(mp, &st), 0);
    assert_int_equal(st.live, 1);
    assert_int_equal(st.peak, 20);
    /* Two batches on the stack at destroy. */
    for (int i = 1; i <= 12; i++)
        assert_int_equal(pk_mempool_alloc(mp, &p[i], 0), 0);
    for (int i = 1; i <= 12; i++)
        assert_int_equal(pk_mempool_free(mp, p[i]), 0);
    assert_int_equal(pk_mempool_stats_get(mp, &st), 0);
    assert_int_equal(st.live, 1);
    pk_mempool_destroy(mp);
    assert_int_equal(ev.n, 1);
    assert_non_null(strstr(ev.msg, "1 objects still out (64 bytes)"));
}

static void
test_double_free_is_found_at_the_slab(void **state)
{
    pk_mempool *mp;
    void *p, *q;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 32,
                                     .cache_size = PK_NEVER });
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &q, 0), 0);
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(pk_mempool_free(mp, p), 0); /* found and dropped */
    assert_int_equal(mh_stats(mp).double_frees, 1);
    assert_int_equal(pk_mempool_free(mp, q), 0);
    assert_int_equal(mh_stats(mp).slabs_empty, 1);
    pk_mempool_destroy(mp);
}

/* A cache's batch reaches the slabs a bitmap word at a time (depot.c):
 * a double free inside the batch, even after its slab went empty, is
 * found once and changes nothing. */
static void
test_double_free_in_a_batch_is_found_once(void **state)
{
    enum { N = 70 }; /* two bitmap words of one slab */
    pk_mempool *mp;
    pk_mempool_stats st;
    void *p[N];

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64,
                                     .cache_size = 1024 });
    for (int i = 0; i < N; i++)
        assert_int_equal(pk_mempool_alloc(mp, &p[i], 0), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(pk_mempool_free(mp, p[i]), 0);
    assert_int_equal(pk_mempool_free(mp, p[0]), 0); /* into the cache */
    assert_int_equal(pk_mempool_free(mp, p[1]), 0);
    assert_int_equal(pk_mempool_trim(mp), 0); /* the batch: N + 2 */
    st = mh_stats(mp);
    assert_int_equal(st.double_frees, 2);
    assert_int_equal(st.slabs, 0); /* went empty once, then unmapped */
    assert_int_equal(pk_mempool_alloc(mp, &p[0], 0), 0);
    assert_int_equal(pk_mempool_free(mp, p[0]), 0);
    pk_mempool_destroy(mp);
}

static void
test_bad_input_to_every_call(void **state)
{
    static _Alignas(65536) char fake[2 * 65536];
    pk_mempool *mp, *other;
    pk_mempool_stats st;
    void *p, *q;
    char *base;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64 });
    other = mh_make(&(pk_mempool_options){ .object_size = 64 });
    assert_int_equal(pk_mempool_alloc(NULL, &p, 0), PK_EINVAL);
    assert_null(p);
    assert_int_equal(pk_mempool_alloc(mp, NULL, 0), PK_EINVAL);
    assert_int_equal(pk_mempool_alloc(mp, &p, -2), PK_EINVAL);
    assert_int_equal(pk_mempool_alloc(mp, &p, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_mempool_alloc(other, &q, 0), 0);

    assert_int_equal(pk_mempool_free(NULL, p), PK_EINVAL);
    assert_int_equal(pk_mempool_free(mp, NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_free(mp, q), PK_EINVAL);     /* other's */
    assert_int_equal(pk_mempool_free(mp, (char *)p + 1), PK_EINVAL);
    base = (char *)((uintptr_t)p & ~(uintptr_t)65535);
    assert_int_equal(pk_mempool_free(mp, base + 65536 - 32), PK_EINVAL);
    /* ^ past the slab's last object, still in the slab */
    assert_int_equal(pk_mempool_free(mp, fake + 100), PK_EINVAL);
    assert_int_equal(pk_mempool_free(mp, fake + 65536 + 64), PK_EINVAL);
    assert_int_equal(pk_mempool_free(mp, base), PK_EINVAL); /* header */

    assert_int_equal(pk_mempool_trim(NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_maintain(NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_stats_get(NULL, &st), PK_EINVAL);
    assert_int_equal(pk_mempool_stats_get(mp, NULL), PK_EINVAL);
    assert_int_equal(pk_mempool_maintain(mp), 0);

    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(pk_mempool_free(other, q), 0);
    pk_mempool_destroy(other);
    pk_mempool_destroy(mp);
}

/* ---- fork ----------------------------------------------------------------- */

static int
child(pk_mempool *mp, void *inherited)
{
    pk_mempool_stats st;
    void *p = (void *)1;

    if (pk_mempool_alloc(mp, &p, 0) != PK_EFORKED || p != NULL)
        return 1;
    if (pk_mempool_stats_get(mp, &st) != PK_EFORKED)
        return 2;
    if (pk_mempool_trim(mp) != PK_EFORKED ||
        pk_mempool_maintain(mp) != PK_EFORKED)
        return 3;
    if (pk_mempool_free(mp, (char *)inherited + 1) != PK_EINVAL)
        return 4;
    if (SANITIZED)
        return 0; /* test_util.h: no more in a sanitized child */
    if (pk_mempool_free(mp, inherited) != 0)
        return 5;
    pk_mempool_destroy(mp);
    /* A pool of its own works. */
    if (pk_mempool_create(&mp, &(pk_mempool_options){ .object_size = 16 }) ||
        pk_mempool_alloc(mp, &p, 0) || pk_mempool_free(mp, p))
        return 6;
    pk_mempool_destroy(mp);
    return 0;
}

static void
test_child_after_fork_frees_but_does_not_alloc(void **state)
{
    pk_mempool *mp;
    void *p, *q;
    pid_t pid;
    int status;

    (void)state;
    mp = mh_make(&(pk_mempool_options){ .object_size = 64, .min_idle = 1,
                                     .idle_timeout_ms = 1000 });
    assert_int_equal(pk_mempool_alloc(mp, &p, 0), 0);
    assert_int_equal(pk_mempool_alloc(mp, &q, 0), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(5);
        _exit(child(mp, p));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's pool is untouched. */
    assert_int_equal(pk_mempool_free(mp, p), 0);
    assert_int_equal(pk_mempool_free(mp, q), 0);
    assert_int_equal(mh_stats(mp).live, 0);
    pk_mempool_destroy(mp);
}

/* ---- allocation failures ---------------------------------------------------- */

/* Every allocation of a scenario fails in turn (curl's torture mode):
 * each call returns 0 or PK_ENOMEM, and nothing leaks. */
static void
test_every_allocation_failing_in_turn(void **state)
{
    unsigned long k;

    (void)state;
    for (k = 1; k < 1000; k++) {
        pk_mempool *mp = NULL;
        void *objs[200];
        int rc, n = 0;
        unsigned long ran;

        pk__alloc_fail_at(k);
        rc = pk_mempool_create(&mp, &(pk_mempool_options){
            .object_size = 64, .slab_size = 4096, .min_idle = 1,
            .flags = PK_MEMPOOL_MANUAL_MAINTENANCE });
        if (rc == 0) {
            for (int i = 0; i < 200; i++) {
                rc = pk_mempool_alloc(mp, &objs[n], 0);
                if (rc == 0)
                    n++;
                else if (rc != PK_ENOMEM)
                    fail_msg("k=%lu: alloc returned %s", k, pk_err_name(rc));
            }
            for (int i = 0; i < n; i++)
                assert_int_equal(pk_mempool_free(mp, objs[i]), 0);
            assert_int_equal(pk_mempool_trim(mp), 0);
            pk_mempool_destroy(mp);
        } else {
            assert_int_equal(rc, PK_ENOMEM);
        }
        ran = pk__alloc_fail_at(0);
        assert_int_equal(pk__alloc_live(), mh_live0());
        if (ran < k)
            break; /* the scenario no longer reaches the k-th */
    }
    assert_true(k > 5 && k < 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, mh_setup, mh_teardown)
        T(test_options_rejects_each_bad_field),
        T(test_geometry_follows_the_options),
        T(test_objects_are_distinct_aligned_and_writable),
        T(test_zero_flag_zeroes_a_reused_object),
        T(test_objects_stay_constructed_across_reuse),
        T(test_a_failing_ctor_fails_the_alloc),
        T(test_budget_waits_then_times_out),
        T(test_trim_unmaps_empty_slabs_down_to_min_idle),
        T(test_idle_timeout_unmaps_after_thread_exit),
        T(test_objects_freed_on_another_thread_drain_back),
        T(test_destroy_reports_objects_still_out),
        T(test_handed_back_batches_are_free_at_destroy),
        T(test_double_free_is_found_at_the_slab),
        T(test_double_free_in_a_batch_is_found_once),
        T(test_bad_input_to_every_call),
        T(test_child_after_fork_frees_but_does_not_alloc),
        T(test_every_allocation_failing_in_turn),
#undef T
    };
    return cmocka_run_group_tests_name("mempool", tests, NULL, NULL);
}
