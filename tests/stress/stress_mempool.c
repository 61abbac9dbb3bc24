/* tests/stress/stress_mempool.c - many threads allocating and freeing from
 * one pk_mempool, also across threads.
 *
 * Eight threads draw operations from a seeded PRNG (PK_SEED replays the
 * per-thread sequences; the seed is printed): alloc (timeout 0, a few ms,
 * now and then forever when the thread holds nothing), free one of its
 * own, hand one to another thread through a shared mailbox (an atomic
 * exchange: what was in the slot becomes this thread's), trim, a stats
 * snapshot, now and then a thread that exits and is replaced (its cache
 * goes back at exit). Each object carries a stamp written over all its
 * bytes at alloc and checked at free: two owners of one object, or a
 * write by the pool into a lent object, breaks the stamp. The operation
 * count is 4*10^5 scaled by PK_STRESS_SCALE, per case:
 *
 *   plain    no budget, caches on
 *   budget   two 4 KiB slabs (84 objects), demand above it: allocs wait
 *            and time out; the slabs mapped never exceed the budget
 *   trim     min_idle 1, a 5 ms idle timeout with its maintenance
 *            thread, trims from every thread racing allocs
 *   faults   the k-th allocation of the process fails now and then (slab
 *            descriptors, caches, the core's slots: pk__alloc_fail_at,
 *            from the main thread), and the ctor fails once in 3000
 *            objects (about one new slab in five):
 *            allocs return PK_ENOMEM or PK_ECREATE and nothing leaks
 *   handoff  two producer threads allocate, each through a ring to a
 *            consumer thread that frees (caches of 8: batches of 4 go
 *            from the consumers' full caches to the producers' empty
 *            ones through the pool's batch stack), once without a budget
 *            and once at one of 3 slabs; every object lent must hold
 *            the ctor's zeros or the stamp it was freed with (the pool
 *            never writes a free object), and its stamp is checked at
 *            the free
 *
 * At the end of a case every object is freed and the threads joined;
 * then allocated == freed, live == 0, every slab is empty, and after
 * destroy the ctor and dtor counts match. Threads never call cmocka
 * (STYLE.md section 5): violations are counted and the main thread
 * asserts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poolkit/mempool.h>

#include "alloc.h"
#include "prng.h"
#include "test_util.h"
#include "violations.h"

#define N_THREADS 8
#define HOLD 24        /* objects a thread holds at most */
#define MAILBOX 64
#define OBJ 96         /* bytes: not a power of two */

enum { C_PLAIN, C_BUDGET, C_TRIM, C_FAULTS };

struct run {
    pk_mempool *mp;
    int kind;
    uint64_t seed;
    long ops;                  /* per thread */
    _Atomic(uint64_t *) mailbox[MAILBOX];
    atomic_long stamps;
    atomic_long ctors, dtors;
    atomic_ulong draw;
    atomic_long allocs_ok, frees_ok, timeouts, failures;
    atomic_int stop_faults;
};

struct worker {
    struct run *r;
    int id;
    pk_prng rng;
    uint64_t *held[HOLD];
    int n;
    long done;
};

static int
s_ctor(void *user, void *obj)
{
    struct run *r = user;
    unsigned long d;

    if (r->kind == C_FAULTS) {
        d = atomic_fetch_add(&r->draw, 1);
        if (pk_prng_hash(r->seed ^ d) % 3000 == 0) /* ~1 slab in 5 */
            return PK_ENOMEM;
    }
    memset(obj, 0, OBJ);
    atomic_fetch_add(&r->ctors, 1);
    return 0;
}

static void
s_dtor(void *user, void *obj)
{
    (void)obj;
    atomic_fetch_add(&((struct run *)user)->dtors, 1);
}

static void
stamp(struct run *r, uint64_t *o)
{
    uint64_t s = (uint64_t)atomic_fetch_add(&r->stamps, 1) + 1;

    for (size_t i = 0; i < OBJ / 8; i++)
        o[i] = s;
}

static void
check_stamp(uint64_t *o)
{
    for (size_t i = 1; i < OBJ / 8; i++)
        if (o[i] != o[0]) {
            violation("object %p: word %zu is %llx, word 0 is %llx", (void *)o,
                      i, (unsigned long long)o[i], (unsigned long long)o[0]);
            return;
        }
    if (o[0] == 0)
        violation("object %p: lent without its stamp", (void *)o);
}

static void
do_free(struct worker *w, uint64_t *o)
{
    int rc;

    check_stamp(o);
    o[0] = 0; /* a second owner would see it */
    rc = pk_mempool_free(w->r->mp, o);
    if (rc != 0)
        violation("free: %s", pk_err_name(rc));
    else
        atomic_fetch_add(&w->r->frees_ok, 1);
}

static void
do_alloc(struct worker *w)
{
    struct run *r = w->r;
    uint64_t *o;
    int t = (int)pk_prng_below(&w->rng, 4);
    int timeout = t == 0 ? 0 : t == 1 && w->n == 0 ? PK_WAIT_FOREVER : 2;
    int rc;

    /* Not forever: with faults a mapping that keeps failing is retried
     * forever, and at the budget every object may sit in the mailbox. */
    if ((r->kind == C_FAULTS || r->kind == C_BUDGET) &&
        timeout == PK_WAIT_FOREVER)
        timeout = 2;
    rc = pk_mempool_alloc(r->mp, (void **)&o, timeout);
    if (rc == 0) {
        if ((uintptr_t)o % 16)
            violation("object %p is not 16-aligned", (void *)o);
        stamp(r, o);
        w->held[w->n++] = o;
        atomic_fetch_add(&r->allocs_ok, 1);
    } else if (rc == PK_EAGAIN || rc == PK_ETIMEDOUT) {
        if (r->kind != C_BUDGET && r->kind != C_FAULTS)
            violation("alloc: %s with no budget", pk_err_name(rc));
        atomic_fetch_add(&r->timeouts, 1);
    } else if ((rc == PK_ENOMEM || rc == PK_ECREATE) && r->kind == C_FAULTS) {
        atomic_fetch_add(&r->failures, 1);
    } else {
        violation("alloc: %s", pk_err_name(rc));
    }
}

/* Swaps one of ours with what is in a mailbox slot. */
static void
do_swap(struct worker *w)
{
    struct run *r = w->r;
    size_t slot = pk_prng_below(&w->rng, MAILBOX);
    uint64_t *mine = NULL, *got;
    int i = -1;

    if (w->n) {
        i = (int)pk_prng_below(&w->rng, (uint64_t)w->n);
        mine = w->held[i];
        check_stamp(mine);
    }
    got = atomic_exchange(&r->mailbox[slot], mine);
    if (i >= 0)
        w->held[i] = w->held[--w->n];
    if (got) {
        check_stamp(got);
        if (w->n < HOLD)
            w->held[w->n++] = got;
        else
            do_free(w, got);
    }
}

static void
do_stats(struct run *r)
{
    pk_mempool_stats st;

    if (pk_mempool_stats_get(r->mp, &st) != 0) {
        violation("stats failed");
        return;
    }
    if (r->kind == C_BUDGET && st.bytes_mapped > st.max_bytes)
        violation("%llu bytes mapped over a budget of %zu",
                  (unsigned long long)st.bytes_mapped, st.max_bytes);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct run *r = w->r;

    while (w->done < r->ops) {
        unsigned op = (unsigned)pk_prng_below(&w->rng, 1000) / 10;
        w->done++;
        if (op == 99 && pk_prng_chance(&w->rng, 100))
            break; /* this thread exits; main starts another */
        if (op < 45) {
            if (w->n < HOLD)
                do_alloc(w);
        } else if (op < 85) {
            if (w->n) {
                int i = (int)pk_prng_below(&w->rng, (uint64_t)w->n);
                uint64_t *o = w->held[i];
                w->held[i] = w->held[--w->n];
                do_free(w, o);
            }
        } else if (op < 95) {
            do_swap(w);
        } else if (op < 97 || (r->kind == C_TRIM && op < 99)) {
            if (pk_mempool_trim(r->mp) != 0)
                violation("trim failed");
        } else {
            do_stats(r);
        }
    }
    while (w->n)
        do_free(w, w->held[--w->n]);
    return NULL;
}

static void
run_case(int kind, const char *name)
{
    static struct run r;
    struct worker w[N_THREADS];
    pthread_t t[N_THREADS];
    uint64_t seed = pk_test_seed(name);
    long total = (long)(4e5 * pk_test_scale());
    long live0 = pk__alloc_live();
    pk_mempool_stats st;
    pk_mempool_options o = {
        .object_size = OBJ, .slab_size = 4096, /* 42 objects: churn */
        .ctor = s_ctor, .dtor = s_dtor, .user = &r };
    long restarts = 0;

    violations_reset();
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.seed = seed;
    r.ops = total / N_THREADS;
    if (kind == C_BUDGET) {
        /* 2 slabs of 42 objects; 8 threads may hold 192, the mailbox 64 */
        o.max_bytes = 2 * 4096;
        o.cache_size = 8;
    }
    if (kind == C_TRIM) {
        o.min_idle = 1;
        o.idle_timeout_ms = 5;
    }
    assert_int_equal(pk_mempool_create(&r.mp, &o), 0);
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){ .r = &r, .id = i };
        pk_prng_seed(&w[i].rng, seed + (uint64_t)i);
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    /* Join; a thread that left early is replaced by one that carries on
     * its count, until every thread did its share. */
    for (bool busy = true; busy;) {
        busy = false;
        for (int i = 0; i < N_THREADS; i++) {
            if (!t[i])
                continue;
            if (kind == C_FAULTS)
                pk__alloc_fail_at(1 + pk_prng_below(&w[0].rng, 30));
            pthread_join(t[i], NULL);
            t[i] = 0;
            if (w[i].done < r.ops) {
                restarts++;
                assert_int_equal(
                    pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
                busy = true;
            }
        }
    }
    pk__alloc_fail_at(0);
    for (int i = 0; i < MAILBOX; i++) {
        uint64_t *o2 = atomic_exchange(&r.mailbox[i], NULL);
        if (o2) {
            check_stamp(o2);
            if (pk_mempool_free(r.mp, o2) == 0)
                atomic_fetch_add(&r.frees_ok, 1);
        }
    }
    assert_int_equal(pk_mempool_trim(r.mp), 0);
    assert_int_equal(pk_mempool_stats_get(r.mp, &st), 0);
    printf("%s: %ld allocs, %ld timeouts, %ld failures, %ld thread "
           "restarts; %llu slabs mapped, %llu unmapped, %llu waits, "
           "peak %llu\n", name, atomic_load(&r.allocs_ok),
           atomic_load(&r.timeouts), atomic_load(&r.failures), restarts,
           (unsigned long long)st.slabs_mapped,
           (unsigned long long)st.slabs_unmapped,
           (unsigned long long)st.waits, (unsigned long long)st.peak);
    assert_int_equal(violations_report(seed), 0);
    assert_int_equal(st.allocated, atomic_load(&r.allocs_ok));
    assert_int_equal(st.freed, atomic_load(&r.frees_ok));
    assert_int_equal(st.allocated, st.freed);
    assert_int_equal(st.live, 0);
    assert_int_equal(st.double_frees, 0);
    assert_int_equal(st.slabs, st.slabs_empty);
    assert_true(st.slabs <= (kind == C_TRIM ? 1u : 0u));
    if (kind == C_BUDGET)
        assert_true(atomic_load(&r.timeouts) > 0);
    pk_mempool_destroy(r.mp);
    assert_int_equal(atomic_load(&r.ctors), atomic_load(&r.dtors));
    assert_int_equal(settled_live(live0), live0);
}

/* ---- handoff ----------------------------------------------------------- */

#define RING 128

struct pair {
    struct run *r;
    long n;                        /* objects to hand over */
    _Atomic(uint64_t *) ring[RING];
    atomic_long head, tail;        /* produced, consumed */
    long timeouts;
};

/* A lent object: the ctor's zeros, or all of it the stamp it had. */
static void
check_lent(uint64_t *o)
{
    for (size_t i = 1; i < OBJ / 8; i++)
        if (o[i] != o[0]) {
            violation("object %p lent written: word %zu is %llx, word 0 "
                      "%llx", (void *)o, i, (unsigned long long)o[i],
                      (unsigned long long)o[0]);
            return;
        }
}

static void *
producer_main(void *arg)
{
    struct pair *p = arg;

    for (long i = 0; i < p->n; i++) {
        void *v;
        int rc;

        while ((rc = pk_mempool_alloc(p->r->mp, &v, 2)) == PK_ETIMEDOUT)
            p->timeouts++;
        if (rc) {
            violation("handoff alloc: %d", rc);
            break;
        }
        check_lent(v);
        stamp(p->r, v);
        while (atomic_load(&p->head) - atomic_load(&p->tail) == RING)
            sched_yield();
        atomic_store(&p->ring[atomic_load(&p->head) % RING], v);
        atomic_fetch_add(&p->head, 1);
    }
    atomic_store(&p->head, -1 - atomic_load(&p->head)); /* done */
    return NULL;
}

static void *
consumer_main(void *arg)
{
    struct pair *p = arg;

    for (;;) {
        long h = atomic_load(&p->head), t = atomic_load(&p->tail);
        uint64_t *o;

        if (h < 0 && t == -1 - h)
            break;
        if (h == t || (h < 0 && t == -1 - h)) {
            sched_yield();
            continue;
        }
        if (h < 0)
            h = -1 - h;
        if (t >= h) {
            sched_yield();
            continue;
        }
        o = atomic_exchange(&p->ring[t % RING], NULL);
        check_stamp(o);
        if (pk_mempool_free(p->r->mp, o) != 0)
            violation("handoff free %p", (void *)o);
        atomic_fetch_add(&p->tail, 1);
    }
    return NULL;
}

static void
run_handoff(const char *name, size_t max_bytes)
{
    static struct run r;
    static struct pair pr[2];
    pthread_t t[4];
    uint64_t seed = pk_test_seed(name);
    long n = (long)(2e5 * pk_test_scale());
    long live0 = pk__alloc_live(), timeouts = 0;
    pk_mempool_stats st;
    pk_mempool_options o = {
        .object_size = OBJ, .slab_size = 4096, .cache_size = 8,
        .max_bytes = max_bytes, .ctor = s_ctor, .dtor = s_dtor, .user = &r };

    violations_reset();
    memset(&r, 0, sizeof r);
    memset(pr, 0, sizeof pr);
    r.kind = C_PLAIN;
    r.seed = seed;
    assert_int_equal(pk_mempool_create(&r.mp, &o), 0);
    for (int i = 0; i < 2; i++) {
        pr[i].r = &r;
        pr[i].n = n / 2;
        assert_int_equal(pthread_create(&t[2 * i], NULL, producer_main,
                                        &pr[i]), 0);
        assert_int_equal(pthread_create(&t[2 * i + 1], NULL, consumer_main,
                                        &pr[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    timeouts = pr[0].timeouts + pr[1].timeouts;
    assert_int_equal(pk_mempool_trim(r.mp), 0);
    assert_int_equal(pk_mempool_stats_get(r.mp, &st), 0);
    printf("%s: %ld objects handed over, %ld timeouts; %llu slabs mapped, "
           "peak %llu\n", name, n, timeouts,
           (unsigned long long)st.slabs_mapped, (unsigned long long)st.peak);
    assert_int_equal(violations_report(seed), 0);
    assert_int_equal(st.allocated, (uint64_t)(n / 2 * 2));
    assert_int_equal(st.freed, st.allocated);
    assert_int_equal(st.live, 0);
    assert_int_equal(st.double_frees, 0);
    assert_int_equal(st.slabs, st.slabs_empty);
    assert_int_equal(st.slabs, 0);
    if (max_bytes)
        assert_true(st.peak <= 3 * st.objects_per_slab);
    pk_mempool_destroy(r.mp);
    assert_int_equal(atomic_load(&r.ctors), atomic_load(&r.dtors));
    assert_int_equal(settled_live(live0), live0);
}

static void
test_handoff(void **state)
{
    (void)state;
    run_handoff("stress_mempool handoff", 0);
    run_handoff("stress_mempool handoff budget", 3 * 4096);
}

static void
test_plain(void **state)
{
    (void)state;
    run_case(C_PLAIN, "stress_mempool plain");
}

static void
test_budget(void **state)
{
    (void)state;
    run_case(C_BUDGET, "stress_mempool budget");
}

static void
test_trim(void **state)
{
    (void)state;
    run_case(C_TRIM, "stress_mempool trim");
}

static void
test_faults(void **state)
{
    (void)state;
    run_case(C_FAULTS, "stress_mempool faults");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_handoff),
    };
    setenv("POOLKIT_LOG", "off", 1);
    return cmocka_run_group_tests_name("stress_mempool", tests, NULL, NULL);
}
