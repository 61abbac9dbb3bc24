/* tests/unit/test_future_slab.c - the reuse of future slots
 * (lib/future_slab.c): a long-lived future pins its slot, not its slab;
 * slots freed on other threads go back to the threads that make futures,
 * never to two live futures at once; a thread that releases futures made
 * elsewhere holds their slab while it frees into it and lets go of it;
 * nothing stays allocated at the end.
 * The older slab tests (one slab's life) are in test_future.c.
 *
 * Worker threads never assert: they count what they saw, and the test
 * thread asserts after pthread_join. Built with -DPK_TESTING -Ilib. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <poolkit/future.h>

#include "alloc.h"
#include "future_helpers.h"
#include "future_int.h"
#include "future_slab.h"
#include "prng.h"
#include "slab.h"
#include "sync.h"

/* ---- one thread: freed slots are reused -------------------------------- */

#define PIN_ROUNDS 50
#define PIN_N (PK__FSLAB_SLOTS * PIN_ROUNDS)

static pk_future *pin_fs[PIN_N];

/* One future in 62 kept: the next burst reuses the other slots of the
 * kept futures' slabs instead of a slab per kept future. */
static void
test_kept_future_pins_its_slot_not_its_slab(void **state)
{
    long slabs0 = pk__slab_live();
    long after_first;

    (void)state;
    pk__future_slab_set(PK__FSLAB_SLOTS);
    for (unsigned i = 0; i < PIN_N; i++)
        assert_int_equal(pk_future_create(&pin_fs[i], NULL, NULL), 0);
    for (unsigned i = 0; i < PIN_N; i++)
        if (i % PK__FSLAB_SLOTS != 0)
            pk_future_release(pin_fs[i]);
    after_first = pk__slab_live();
    assert_in_range(after_first - slabs0, PIN_ROUNDS, PIN_ROUNDS + 1);
    /* The second burst, the kept futures still alive. */
    for (unsigned i = 0; i < PIN_N; i++)
        if (i % PK__FSLAB_SLOTS != 0)
            assert_int_equal(pk_future_create(&pin_fs[i], NULL, NULL), 0);
    /* 49 slabs' worth of free slots were there: a few new slabs at most,
     * not 50. */
    assert_in_range(pk__slab_live() - after_first, 0, 3);
    for (unsigned i = 0; i < PIN_N; i++)
        if (i % PK__FSLAB_SLOTS != 0)
            pk_future_release(pin_fs[i]);
    for (unsigned i = 0; i < PIN_N; i += PK__FSLAB_SLOTS) {
        assert_int_equal(pk_future_state_get(pin_fs[i]), PK_FUTURE_PENDING);
        pk_future_release(pin_fs[i]);
    }
    pk__future_slab_drop();
    assert_int_equal(pk__slab_live(), slabs0);
    pk__future_slab_set(1);
}

static void *
release_one(void *arg)
{
    pk_future_release(arg);
    return NULL;
}

/* A slot freed by the thread that carves its slab is handed out again at
 * once; one freed on another thread comes back once the carving thread
 * has used up the free slots it holds. */
static void
test_owner_reuses_freed_slots(void **state)
{
    pk_future *f, *g, *h, *k, *x[5];
    uintptr_t f_at, k_at;
    pthread_t th;
    long live = pk__alloc_live();

    (void)state;
    pk__future_slab_set(8);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_create(&g, NULL, NULL), 0);
    assert_int_equal(pk_future_create(&k, NULL, NULL), 0);
    f_at = (uintptr_t)f;
    k_at = (uintptr_t)k;
    pk_future_release(f);
    assert_int_equal(pk_future_create(&h, NULL, NULL), 0);
    assert_int_equal((uintptr_t)h, f_at); /* freed here: reused at once */
    assert_int_equal(pk_future_state_get(h), PK_FUTURE_PENDING);
    assert_int_equal(pthread_create(&th, NULL, release_one, k), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 5; i++) { /* the rest of the slab first */
        assert_int_equal(pk_future_create(&x[i], NULL, NULL), 0);
        assert_int_not_equal((uintptr_t)x[i], k_at);
    }
    assert_int_equal(pk_future_create(&k, NULL, NULL), 0);
    assert_int_equal((uintptr_t)k, k_at); /* freed elsewhere: now */
    assert_int_equal(pk_future_state_get(k), PK_FUTURE_PENDING);
    assert_int_equal(pk__alloc_live(), live + 1);
    for (int i = 0; i < 5; i++)
        pk_future_release(x[i]);
    pk_future_release(h);
    pk_future_release(k);
    pk__future_slab_drop();
    assert_int_equal(pk__alloc_live(), live + 1); /* g holds it */
    pk_future_release(g);
    assert_int_equal(pk__alloc_live(), live);
    pk__future_slab_set(1);
}

/* Futures made on one thread, released on others: a releasing thread
 * holds each full slab it frees into first (its next frees there cost no
 * atomic) and lets go of it when every slot is free or it moves on. */
#define HOLD_SLABS 5
#define HOLD_N (PK__FSLAB_SLOTS * HOLD_SLABS)

static pk_future *hold_fs[HOLD_N];

struct release_range {
    size_t from, to, step;
};

static void *
release_range(void *arg)
{
    const struct release_range *r = arg;

    for (size_t i = r->from; i < r->to; i += r->step)
        pk_future_release(hold_fs[i]);
    return NULL; /* the key's destructor lets go of what it holds */
}

static void
make_full_slabs(void)
{
    for (unsigned i = 0; i < HOLD_N; i++)
        assert_int_equal(pk_future_create(&hold_fs[i], NULL, NULL), 0);
    pk__future_slab_drop(); /* the last one is full too: all orphans */
}

/* Two threads release alternate futures at once: in each slab one holds
 * it, the other's frees land in its word; every slab goes back. */
static void
test_slabs_released_elsewhere_go_back(void **state)
{
    struct release_range even = { 0, HOLD_N, 2 }, odd = { 1, HOLD_N, 2 };
    long slabs0 = pk__slab_live();
    pthread_t a, b;

    (void)state;
    pk__future_slab_set(PK__FSLAB_SLOTS);
    make_full_slabs();
    assert_int_equal(pk__slab_live() - slabs0, HOLD_SLABS);
    assert_int_equal(pthread_create(&a, NULL, release_range, &even), 0);
    assert_int_equal(pthread_create(&b, NULL, release_range, &odd), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_int_equal(pk__slab_live(), slabs0);
    pk__future_slab_set(1);
}

/* A slab its releasing thread still holds, half free, when the thread
 * exits is listed, and the next thread that needs a slab adopts it. */
static void
test_slab_held_at_exit_is_adopted(void **state)
{
    struct release_range half = { 0, PK__FSLAB_SLOTS / 2, 1 };
    long live = pk__alloc_live();
    pk_future *g;
    pthread_t th;

    (void)state;
    pk__future_slab_set(PK__FSLAB_SLOTS);
    for (unsigned i = 0; i < PK__FSLAB_SLOTS; i++)
        assert_int_equal(pk_future_create(&hold_fs[i], NULL, NULL), 0);
    pk__future_slab_drop(); /* one full slab: an orphan */
    assert_int_equal(pthread_create(&th, NULL, release_range, &half), 0);
    pthread_join(th, NULL);
    assert_int_equal(pk__alloc_live(), live + 1);
    assert_int_equal(pk_future_create(&g, NULL, NULL), 0);
    assert_int_equal(pk__alloc_live(), live + 1); /* the same slab */
    assert_int_equal((uintptr_t)g & ~(uintptr_t)(PK__SLAB_SIZE - 1),
                     (uintptr_t)hold_fs[0] & ~(uintptr_t)(PK__SLAB_SIZE - 1));
    pk_future_release(g);
    for (unsigned i = PK__FSLAB_SLOTS / 2; i < PK__FSLAB_SLOTS; i++)
        pk_future_release(hold_fs[i]);
    pk__future_slab_drop();
    assert_int_equal(pk__alloc_live(), live);
    pk__future_slab_set(1);
}

/* A slab let go with free slots (the thread's slab given up) is adopted
 * by the next thread that needs one. */
static void *
adopt_one(void *arg)
{
    pk_future **out = arg;

    if (pk_future_create(out, NULL, NULL) != 0)
        *out = NULL;
    return NULL; /* the key's destructor lets go of the slab */
}

static void
test_slab_given_up_is_adopted(void **state)
{
    pk_future *f, *g = NULL;
    pthread_t th;
    long live = pk__alloc_live();

    (void)state;
    pk__future_slab_set(PK__FSLAB_SLOTS);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    pk__future_slab_drop(); /* 62 free slots: listed */
    assert_int_equal(pk__alloc_live(), live + 1);
    assert_int_equal(pthread_create(&th, NULL, adopt_one, &g), 0);
    pthread_join(th, NULL);
    assert_non_null(g);
    assert_int_equal(pk__alloc_live(), live + 1); /* the same slab */
    assert_int_equal((uintptr_t)f & ~(uintptr_t)(PK__SLAB_SIZE - 1),
                     (uintptr_t)g & ~(uintptr_t)(PK__SLAB_SIZE - 1));
    pk_future_release(f);
    assert_int_equal(pk__alloc_live(), live + 1);
    pk_future_release(g);
    assert_int_equal(pk__alloc_live(), live);
    pk__future_slab_set(1);
}

/* ---- threads: makers, holders, random lifetimes ------------------------ */

/* Makers create futures, complete each with its own number (the result's
 * len) and pass them on through a queue; holders keep each for a random
 * while (in a small array of their own) and release it after checking
 * that it is still the future it was: a slot handed out twice would be
 * made pending again, with another number. Makers keep some futures
 * themselves too, so slabs are freed by several threads at once. */
#define MAKERS 2
#define HOLDERS 2
#define QCAP 256
#define HOLD 64
#define MAKER_KEEP 16

struct item {
    pk_future *f;
    size_t id;
};

static struct {
    pthread_mutex_t lock;
    struct item q[QCAP];
    unsigned head, tail; /* lock */
    atomic_int makers_left;
    atomic_long bad;
    long each;
} mt;

static int
check_item(const struct item *it)
{
    pk_result res;

    if (pk_future_state_get(it->f) != PK_FUTURE_DONE)
        return 1;
    if (pk_future_result(it->f, &res) != 0 || res.len != it->id ||
        res.value != NULL)
        return 1;
    return 0;
}

static void
put_back(struct item *it)
{
    if (check_item(it))
        atomic_fetch_add(&mt.bad, 1);
    pk_future_release(it->f);
    it->f = NULL;
}

static void *
maker(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    struct item keep[MAKER_KEEP] = {{0}};
    pk_prng r;

    pk_prng_seed(&r, pk_test_seed("maker") + me);
    for (long i = 0; i < mt.each; i++) {
        struct item it = {NULL, (size_t)(me * mt.each + i + 1)};
        pk_result res = {NULL, it.id, NULL};

        if (pk_future_create(&it.f, NULL, NULL) != 0) {
            atomic_fetch_add(&mt.bad, 1);
            continue;
        }
        if (pk_future_state_get(it.f) != PK_FUTURE_PENDING ||
            pk_future_complete(it.f, &res) != 0)
            atomic_fetch_add(&mt.bad, 1);
        if (pk_prng_chance(&r, 250)) { /* kept here for a while */
            struct item *k = &keep[pk_prng_below(&r, MAKER_KEEP)];

            if (k->f)
                put_back(k);
            *k = it;
            continue;
        }
        for (;;) {
            pk__mutex_lock(&mt.lock);
            if (mt.tail - mt.head < QCAP) {
                mt.q[mt.tail++ % QCAP] = it;
                pk__mutex_unlock(&mt.lock);
                break;
            }
            pk__mutex_unlock(&mt.lock);
            sched_yield();
        }
    }
    for (int k = 0; k < MAKER_KEEP; k++)
        if (keep[k].f)
            put_back(&keep[k]);
    atomic_fetch_sub(&mt.makers_left, 1);
    return NULL; /* the key's destructor lets go of the slab */
}

static void *
holder(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    struct item held[HOLD] = {{0}};
    pk_prng r;

    pk_prng_seed(&r, pk_test_seed("holder") + me);
    for (;;) {
        struct item it = {NULL, 0};
        int done;

        pk__mutex_lock(&mt.lock);
        if (mt.tail != mt.head)
            it = mt.q[mt.head++ % QCAP];
        pk__mutex_unlock(&mt.lock);
        if (!it.f) {
            done = atomic_load(&mt.makers_left) == 0;
            pk__mutex_lock(&mt.lock);
            done = done && mt.tail == mt.head;
            pk__mutex_unlock(&mt.lock);
            if (done)
                break;
            sched_yield();
            continue;
        }
        if (pk_prng_chance(&r, 500)) { /* released at once */
            put_back(&it);
            continue;
        }
        struct item *h = &held[pk_prng_below(&r, HOLD)];

        if (h->f)
            put_back(h);
        *h = it;
    }
    for (int k = 0; k < HOLD; k++)
        if (held[k].f)
            put_back(&held[k]);
    return NULL;
}

static void
test_threads_make_hold_and_release(void **state)
{
    pthread_t th[MAKERS + HOLDERS];
    long live = pk__alloc_live();

    (void)state;
    pk__future_slab_set(PK__FSLAB_SLOTS);
    pk__mutex_init(&mt.lock);
    mt.head = mt.tail = 0;
    atomic_store(&mt.bad, 0);
    atomic_store(&mt.makers_left, MAKERS);
    mt.each = (long)(200000 * pk_test_scale());
    if (mt.each < 5000)
        mt.each = 5000;
    for (unsigned i = 0; i < MAKERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, maker,
                                        (void *)(uintptr_t)i),
                         0);
    for (unsigned i = 0; i < HOLDERS; i++)
        assert_int_equal(pthread_create(&th[MAKERS + i], NULL, holder,
                                        (void *)(uintptr_t)i),
                         0);
    for (unsigned i = 0; i < MAKERS + HOLDERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&mt.bad), 0);
    pk__mutex_destroy(&mt.lock);
    pk__future_slab_set(1);
    assert_int_equal(pk__alloc_live(), live);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_kept_future_pins_its_slot_not_its_slab),
        T(test_owner_reuses_freed_slots),
        T(test_slabs_released_elsewhere_go_back),
        T(test_slab_held_at_exit_is_adopted),
        T(test_slab_given_up_is_adopted),
        T(test_threads_make_hold_and_release),
    };

    return cmocka_run_group_tests_name("future_slab", tests, NULL, NULL);
}
