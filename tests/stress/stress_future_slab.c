/* tests/stress/stress_future_slab.c - future slots (lib/future_slab.c)
 * under threads that come and go: raw slots and whole futures made, kept
 * for random times, freed on this thread or handed to another through a
 * shared queue, left behind at thread exit, with the slab size changed
 * now and then (pk__future_slab_set) so that a slab given back is carved
 * again at another size. Invariants: no slot is handed out twice (each
 * carries a stamp checked when it is freed), every future reads back its
 * own result, and at the end nothing is left in the arena or allocated.
 *
 * Written from a review's stress program, which found a free reading its
 * slab's header after another free had given the slab back (TSan: a race;
 * ASan: use-after-poison; or the slab given back twice).
 *
 * Waves of THREADS threads, each about OPS/THREADS operations, scaled by
 * PK_STRESS_SCALE; the seed is printed and PK_SEED replays each thread's
 * choices. Worker threads only count; the test thread asserts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <poolkit/future.h>

#include "alloc.h"
#include "future_int.h"
#include "future_slab.h"
#include "prng.h"
#include "slab.h"

#define WAVES 20
#define THREADS 6
/* Operations at scale 1, over all waves: at the sanitizers' 0.1, enough
 * for TSan to catch the race above (2 runs in 2; not at a tenth of it). */
#define OPS 24000000.0
#define QCAP 4096
#define HOLD 96

struct item {
    void *p;
    uint32_t slot;
    uint64_t id;
    int raw; /* a raw slot (1) or a future (0) */
};

/* What a raw slot carries while it is handed out. */
struct stamp {
    _Atomic uint32_t inuse;
    uint64_t id, not_id;
    char fill[40];
};
_Static_assert(sizeof(struct stamp) <= PK__FSLOT_SIZE, "fits a slot");

#define IN_USE 0x5a5a5a5au

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static struct item queue[QCAP];
static unsigned queued;
static atomic_long bad, made, freed;
static atomic_ullong next_id = 1;
static uint64_t seed;
static long ops_per_thread;

static int
make_raw(struct item *it)
{
    struct stamp *b = pk__fslot_alloc(&it->slot);

    if (!b)
        return -1;
    if (atomic_exchange_explicit(&b->inuse, IN_USE, memory_order_relaxed) ==
        IN_USE)
        atomic_fetch_add(&bad, 1); /* handed out while in use */
    b->id = it->id;
    b->not_id = ~it->id;
    memset(b->fill, (int)(it->id & 0xff), sizeof b->fill);
    it->p = b;
    it->raw = 1;
    return 0;
}

static int
make_future(struct item *it)
{
    pk_result res = { NULL, (size_t)it->id, NULL };
    pk_future *f;

    if (pk_future_create(&f, NULL, NULL) != 0)
        return -1;
    if (pk_future_set_running(f) != 0 || pk_future_complete(f, &res) != 0)
        atomic_fetch_add(&bad, 1);
    it->p = f;
    it->raw = 0;
    return 0;
}

static int
make_item(struct item *it, pk_prng *r)
{
    it->id = atomic_fetch_add(&next_id, 1);
    if ((pk_prng_next(r) & 1 ? make_raw(it) : make_future(it)) != 0)
        return -1;
    atomic_fetch_add(&made, 1);
    return 0;
}

static void
drop_raw(struct item *it)
{
    struct stamp *b = it->p;

    if (b->id != it->id || b->not_id != ~it->id ||
        b->fill[7] != (char)(it->id & 0xff))
        atomic_fetch_add(&bad, 1); /* someone else wrote our slot */
    if (atomic_exchange_explicit(&b->inuse, 0, memory_order_relaxed) !=
        IN_USE)
        atomic_fetch_add(&bad, 1);
    pk__fslot_free(b, it->slot);
}

static void
drop_item(struct item *it)
{
    if (it->raw) {
        drop_raw(it);
    } else {
        pk_future *f = it->p;
        pk_result res;

        if (pk_future_state_get(f) != PK_FUTURE_DONE ||
            pk_future_result(f, &res) != 0 || res.len != it->id)
            atomic_fetch_add(&bad, 1);
        pk_future_release(f);
    }
    atomic_fetch_add(&freed, 1);
}

static void
to_queue_or_drop(struct item *it)
{
    pthread_mutex_lock(&qlock);
    if (queued < QCAP) {
        queue[queued++] = *it;
        pthread_mutex_unlock(&qlock);
        return;
    }
    pthread_mutex_unlock(&qlock);
    drop_item(it);
}

static void
drop_one_queued(pk_prng *r)
{
    struct item it;
    int got = 0;

    pthread_mutex_lock(&qlock);
    if (queued) {
        unsigned k = (unsigned)pk_prng_below(r, queued);
        it = queue[k];
        queue[k] = queue[--queued];
        got = 1;
    }
    pthread_mutex_unlock(&qlock);
    if (got)
        drop_item(&it);
}

static void
now_and_then(pk_prng *r)
{
    static const unsigned sizes[] = { 1, 2, 3, 5, 8, 16, 61, 62, 62, 62 };

    if (pk_prng_below(r, 64) == 0)
        pk__future_slab_drop();
    if (pk_prng_below(r, 256) == 0)
        pk__future_slab_set(sizes[pk_prng_below(r, 10)]);
}

static void *
worker(void *arg)
{
    pk_prng r;
    struct item hold[HOLD];
    int nh = 0;

    pk_prng_seed(&r, seed + (uintptr_t)arg);
    for (long i = 0; i < ops_per_thread; i++) {
        unsigned op = (unsigned)pk_prng_below(&r, 16);
        struct item it;

        if (op < 7) {
            if (make_item(&it, &r) != 0)
                continue;
            if (nh < HOLD && (pk_prng_next(&r) & 1))
                hold[nh++] = it;
            else
                to_queue_or_drop(&it);
        } else if (op < 11) {
            if (nh) {
                int k = (int)pk_prng_below(&r, (uint64_t)nh);
                it = hold[k];
                hold[k] = hold[--nh];
                drop_item(&it);
            }
        } else if (op < 15) {
            drop_one_queued(&r);
        } else {
            now_and_then(&r);
        }
    }
    /* Exit holding some: the queue takes half, the rest are freed; the
     * thread's slab goes through the key's destructor. */
    for (int k = 0; k < nh; k++) {
        if (pk_prng_next(&r) & 1)
            to_queue_or_drop(&hold[k]);
        else
            drop_item(&hold[k]);
    }
    return NULL;
}

static void
test_threads_make_keep_and_free_slots(void **state)
{
    long alloc0 = pk__alloc_live();
    long slabs0 = pk__slab_live();

    (void)state;
    seed = pk_test_seed("stress_future_slab");
    ops_per_thread = (long)(OPS * pk_test_scale() / (WAVES * THREADS));
    pk__future_slab_set(PK__FSLAB_SLOTS);
    for (int w = 0; w < WAVES; w++) {
        pthread_t th[THREADS];
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_create(&th[i], NULL, worker,
                                            (void *)(uintptr_t)(w * 100 +
                                                                i + 1)),
                             0);
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    while (queued) {
        struct item it = queue[--queued];
        drop_item(&it);
    }
    pk__future_slab_drop();
    pk__future_slab_set(1);
    assert_int_equal(atomic_load(&bad), 0);
    assert_int_equal(atomic_load(&made), atomic_load(&freed));
    assert_true(atomic_load(&made) > 0);
    assert_int_equal(pk__slab_live(), slabs0);
    assert_int_equal(pk__alloc_live(), alloc0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_make_keep_and_free_slots),
    };
    return cmocka_run_group_tests_name("stress_future_slab", tests, NULL,
                                       NULL);
}
