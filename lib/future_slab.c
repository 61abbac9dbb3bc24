/* lib/future_slab.c - where futures live (future_slab.h).
 *
 * An executor makes a future per task, often millions a second, on the
 * submitting thread, and the last release may come on any thread. A
 * malloc per future cost a third of a no-op task's trip (the arena lock,
 * twice, per call, and a 16-byte header). So a thread carves its futures
 * out of a slab of SLAB_N slots of one line each (64 bytes, the future
 * rounded up to a line; a slab header line first, so every slot is
 * line-aligned). The slabs come from the core's slab arena (slab.h): with
 * a million futures alive, first touches of fresh memory (the kernel
 * zeroing pages) are what such a burst pays most for, then lines moving
 * between cores; the arena's huge pages fault once per 2 MiB and its
 * slabs are reused by the next burst, and the future is kept to one line
 * (the slot's memory, not its alignment, is what costs: 128-byte slots
 * were 10% slower than 96-byte ones). A future finds its slab from its
 * slot's index, kept in f->flags: no pointer back (a one-slot slab's
 * future is at index 0). The slab counts in `live` the slots not yet
 * freed, the ones still to be carved included; the release that frees a
 * future takes one off (acq_rel: the last one sees every user's writes)
 * and the one that reaches zero gives the slab back. A slot is not reused
 * before its whole slab is freed: a long-lived future holds on to its
 * slab (4 KB, 63 slots) at most. The thread keeps its slab in a
 * thread-local; when it exits, a pthread key's destructor gives the
 * uncarved slots back (takes them off `live`). Without the key (it could
 * not be made), every slab has one slot: a pk__alloc per future.
 *
 * Test builds (PK_TESTING) use one-slot slabs, one pk__alloc each, unless
 * a test asks for more (pk__future_slab_set: arena slabs, which count as
 * allocations there too), so that allocation-failure tests see every
 * future and nothing stays allocated at quiescence (pk__alloc_live); the
 * tests that ask for more give the slots back themselves
 * (pk__future_slab_drop). */

#include "future_slab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "alloc.h"
#include "future_int.h"

#define LINE PK__FSLOT_SIZE
#define SLOT_SIZE PK__FSLOT_SIZE
#define SLAB_N PK__FSLAB_SLOTS

struct fslab {
    _Atomic uint32_t live; /* slots not freed yet, uncarved ones included */
    uint32_t n;            /* slots */
    void *raw;             /* what pk__alloc returned; NULL: an arena slab */
};

/* The calling thread's slab with slots left to carve (NULL: none), and
 * the next slot. Owner only. initial-exec: one load off the thread
 * pointer (as pool_cache.h). */
#define F_TLS __attribute__((tls_model("initial-exec")))
static _Thread_local struct fslab *tls_slab F_TLS;
static _Thread_local uint32_t tls_next F_TLS;
static _Thread_local int tls_keyed F_TLS; /* the key is set on this thread */

static pthread_key_t slab_key;
static pthread_once_t slab_once = PTHREAD_ONCE_INIT;
static int slab_key_ok; /* written once under slab_once */

#ifdef PK_TESTING
static _Atomic unsigned slab_test_n = 1;
#endif

static void
slab_unref(struct fslab *s, uint32_t k)
{
    if (atomic_fetch_sub_explicit(&s->live, k, memory_order_acq_rel) != k)
        return;
    if (s->raw)
        pk__free(s->raw);
    else
        pk__slab_put(s);
}

/* Gives back the uncarved slots of this thread's slab. */
static void
slab_drop(void)
{
    struct fslab *s = tls_slab;

    tls_slab = NULL;
    if (s)
        slab_unref(s, s->n - tls_next);
}

static void
slab_thread_exit(void *unused)
{
    (void)unused;
    tls_keyed = 0; /* a later destructor that makes a future sets it again */
    slab_drop();
}

static void
slab_key_init(void)
{
    slab_key_ok = pthread_key_create(&slab_key, slab_thread_exit) == 0;
}

static uint32_t
slab_size(void)
{
    pthread_once(&slab_once, slab_key_init);
    if (!slab_key_ok)
        return 1;
#ifdef PK_TESTING
    uint32_t n = atomic_load_explicit(&slab_test_n, memory_order_relaxed);

    return n < SLAB_N ? n : SLAB_N;
#else
    return SLAB_N;
#endif
}

static inline void *
slab_slot(struct fslab *s, uint32_t i)
{
    return (char *)s + LINE + (size_t)i * SLOT_SIZE;
}

/* The slab of the future in slot i (f->flags): slab_slot backwards. */
static inline struct fslab *
slot_slab(void *p, uint32_t i)
{
    return (struct fslab *)((char *)p - LINE - (size_t)i * SLOT_SIZE);
}

/* A new slab; its first slot (index 0) is the caller's. NULL if out of
 * memory. */
static void *
slab_new(void)
{
    uint32_t n = slab_size();
    void *raw = NULL;
    struct fslab *s;

    if (n > 1) {
        s = pk__slab_get(); /* aligned to its size: lines too */
        if (!s)
            return NULL;
    } else {
        raw = pk__alloc(2 * LINE + SLOT_SIZE);
        if (!raw)
            return NULL;
        s = (struct fslab *)(((uintptr_t)raw + LINE - 1) &
                             ~(uintptr_t)(LINE - 1));
    }
    atomic_init(&s->live, n);
    s->n = n;
    s->raw = raw;
    if (n > 1) {
        if (!tls_keyed) {
            /* Any non-NULL value: the destructor reads the thread-locals. */
            if (pthread_setspecific(slab_key, s) != 0) {
                slab_unref(s, n - 1); /* keep the first slot only */
                return slab_slot(s, 0);
            }
            tls_keyed = 1;
        }
        tls_slab = s;
        tls_next = 1;
    }
    return slab_slot(s, 0);
}

void *
pk__fslot_alloc(uint32_t *slot)
{
    struct fslab *s = tls_slab;
    void *f;

    *slot = 0;
    if (!s)
        return slab_new();
    *slot = tls_next;
    f = slab_slot(s, tls_next);
    if (++tls_next == s->n)
        tls_slab = NULL; /* all carved: the frees own it now */
    else if (tls_next + 2 < s->n)
        /* Two futures on: its line is fresh memory, not in the cache;
         * ask for it now rather than stall on it then (5% on a burst). */
        __builtin_prefetch(slab_slot(s, tls_next + 2), 1);
    return f;
}

void
pk__fslot_free(void *p, uint32_t slot)
{
    slab_unref(slot_slab(p, slot), 1);
}

#ifdef PK_TESTING
unsigned
pk__future_slab_set(unsigned n)
{
    slab_drop();
    return atomic_exchange(&slab_test_n, n ? n : 1);
}

void
pk__future_slab_drop(void)
{
    slab_drop();
}
#endif

