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
 * future is at index 0).
 *
 * Freed slots are reused before their slab is empty, so that a long-lived
 * future pins its own line, not its slab (with one future in 62 kept, a
 * slab per kept future otherwise). The slab's header holds one word: bit
 * i set = slot i free, and two flags, at most one set, for whoever holds
 * the slab: OWNED, a thread carving from it (its tls_slab); ORPHAN, its
 * owner let go of it with no slot free, and the next free holds it. The
 * two flags cost the slab's last line (62 slots, not 63): with one flag,
 * the free that lists an orphan had to be found by a CAS loop before the
 * RMW, which cost the thread pool's future case 6%. The rules:
 *
 * - The owner takes every free bit at once (an exchange that keeps
 *   OWNED; acquire: the frees' writes come before the reuse) into its
 *   thread-local mask and carves from the mask with no atomics. When the
 *   mask is empty it takes the word's bits again; when there are none it
 *   lets go (a CAS from OWNED alone to ORPHAN, so no free is missed) and
 *   gets a slab: one from `partial` with ADOPT_MIN free slots or more if
 *   it finds one, else the arena's.
 * - A free into the slab its own thread carves puts the slot straight
 *   back in that thread's mask, with no atomic.
 * - Any other free sets its bit (an add, acq_rel) and acts on what the
 *   word was, so that no two threads act on one slab and none touches a
 *   slab another may have given back: nothing if a flag was set but for
 *   the free that finds ORPHAN alone, which holds the slab; with no flag
 *   (the slab is on `partial`), the free that makes it entirely free
 *   gives it back to the arena, unlinking it from `partial` first, under
 *   the lock.
 * - The thread that holds an orphan keeps it (tls_held, the ORPHAN flag
 *   left set), so that its next frees there only set a bit in a thread-
 *   local mask: a thread that waits for a million futures in turn and
 *   releases each frees into each slab 62 times running, and the add was
 *   a third of that loop. Other threads' frees still add their bits to
 *   the word and, seeing the flag, do nothing more. The holder lets go of
 *   it (slab_release, with its mask) when its frees and the word's bits
 *   make it entirely free, when it holds another, when it needs a slab
 *   to carve (it adopts its own, with no lock, if worth it) and at its
 *   exit: at most one slab per thread waits on a thread that stopped
 *   freeing, and its slots come back when the thread exits.
 * - So a slab with no flag is on `partial` (or on its way to the arena).
 *   It is taken off only under the lock: by a thread adopting it (a CAS
 *   that takes its bits and sets OWNED; one found entirely free is left
 *   to the free that made it so) or by that free. An adopter looks at
 *   ADOPT_SCAN slabs at most, oldest first, and moves the ones with too
 *   few free slots to the other end.
 * - A holder that lets go of a slab (the owner at thread exit or in the
 *   test hooks, with the free slots in its mask; the free that found it
 *   an orphan) gives it back if entirely free, leaves it an orphan if
 *   none is, else clears the flags and lists it (slab_release).
 *
 * Without the thread key (it could not be made), every slab has one
 * slot: a pk__alloc per future, freed with it (as are test builds' one-
 * slot slabs).
 *
 * Process-wide state: `partial` and its lock (pthread_atfork keeps them
 * consistent in a child; the lock is never held across a call into the
 * arena). Thread-local: tls_slab and tls_mask, tls_held and
 * tls_held_mask.
 *
 * Test builds (PK_TESTING) use one-slot slabs, one pk__alloc each, unless
 * a test asks for more (pk__future_slab_set: arena slabs, which count as
 * allocations there too), so that allocation-failure tests see every
 * future and nothing stays allocated at quiescence (pk__alloc_live); the
 * tests that ask for more give the slots back themselves
 * (pk__future_slab_drop). */

#include "future_slab.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "dlist.h"
#include "future_int.h"
#include "sync.h"

#define LINE PK__FSLOT_SIZE
#define SLOT_SIZE PK__FSLOT_SIZE
#define SLAB_N PK__FSLAB_SLOTS
#define OWNED ((uint64_t)1 << 63)
#define ORPHAN ((uint64_t)1 << 62)
#define FLAGS (OWNED | ORPHAN)
_Static_assert(SLAB_N <= 62, "a slab's free slots and two flags in 64 bits");

struct fslab {
    _Atomic uint64_t word;      /* free slots' bits | a flag: see the top */
    uint64_t all;               /* every slot's bit: the slab is all free */
    struct pk__dnode link;      /* on `partial`, while `listed`: plock */
    void *raw;                  /* what pk__alloc returned; NULL: arena's */
    uint32_t adopt_min;         /* free slots worth adopting it for */
    bool listed;                /* plock */
};
_Static_assert(sizeof(struct fslab) <= LINE, "the header is one line");

/* The calling thread's slab (NULL: none) and the free slots it took from
 * the slab's word. Owner only. initial-exec: one load off the thread
 * pointer (as pool_cache.h). */
#define F_TLS __attribute__((tls_model("initial-exec")))
static _Thread_local struct fslab *tls_slab F_TLS;
static _Thread_local uint64_t tls_mask F_TLS;
static _Thread_local int tls_keyed F_TLS; /* the key is set on this thread */
/* The orphan this thread holds for its frees (held_free) and the slots it
 * freed there since it took it, not yet in the slab's word. */
static _Thread_local struct fslab *tls_held F_TLS;
static _Thread_local uint64_t tls_held_mask F_TLS;

static pthread_key_t slab_key;
static pthread_once_t slab_once = PTHREAD_ONCE_INIT;
static int slab_key_ok; /* written once under slab_once */

/* Adopting a slab with fewer free slots than this (a quarter of the
 * slab, 16 of 62) is not worth the lock: the caller takes the arena's. */
#define ADOPT_MIN(n) (((n) + 3) / 4)
/* Slabs an adopter looks at, at most, before it takes the arena's. */
#define ADOPT_SCAN 4

/* Unowned slabs with a free slot, newest at the head: the process-wide
 * state named at the top. */
static pthread_mutex_t plock = PTHREAD_MUTEX_INITIALIZER;
static struct pk__dlist partial;
/* Slabs on `partial`, written under plock: read without it, a hint that
 * spares the lock when there is nothing to adopt (a burst of creates). */
static atomic_uint partial_n;

#ifdef PK_TESTING
static _Atomic unsigned slab_test_n = 1;
#endif

/* A fork while another thread holds plock would leave the child's copy
 * locked for ever; holding it across fork() keeps the list whole. */
static void atfork_prepare(void) { pk__mutex_lock(&plock); }
static void atfork_release(void) { pk__mutex_unlock(&plock); }

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

/* Under plock. */
static void
list_link(struct fslab *s)
{
    s->listed = true;
    atomic_store_explicit(&partial_n,
                          atomic_load_explicit(&partial_n,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    pk__dlist_push_head(&partial, &s->link);
}

/* Under plock. */
static void
list_unlink(struct fslab *s)
{
    s->listed = false;
    atomic_store_explicit(&partial_n,
                          atomic_load_explicit(&partial_n,
                                               memory_order_relaxed) - 1,
                          memory_order_relaxed);
    pk__dlist_remove(&partial, &s->link);
}

/* Lets go of s, held (OWNED by its owner, or ORPHAN by the free that
 * found it so), with `mask` free slots taken from its word: gives it back
 * if entirely free, leaves it an orphan if no slot is free, else clears
 * the flag and lists it, under plock, so that the free that makes it
 * entirely free finds it listed. Not listed while held. */
static void
slab_release(struct fslab *s, uint64_t mask)
{
    uint64_t w, avail;

    pk__mutex_lock(&plock);
    /* Acquire: given back, the frees' writes come first. */
    w = atomic_load_explicit(&s->word, memory_order_acquire);
    do {
        avail = (w & ~FLAGS) | mask;
        if (avail == s->all) {
            /* Held and all free: no one else can reach it. */
            pk__mutex_unlock(&plock);
            pk__slab_put(s); /* never a one-slot slab: not held */
            return;
        }
    } while (!atomic_compare_exchange_weak_explicit(
        &s->word, &w, avail ? avail : ORPHAN, memory_order_acq_rel,
        memory_order_acquire));
    if (avail)
        list_link(s);
    pk__mutex_unlock(&plock);
}

/* Lets go of one of this thread's slabs (*sp, with the free slots in
 * *mask), if it has one. */
static void
let_go(struct fslab **sp, uint64_t *mask)
{
    struct fslab *s = *sp;

    *sp = NULL;
    if (s)
        slab_release(s, *mask);
    *mask = 0;
}

/* Lets go of the orphan this thread holds, if any. */
static void
held_drop(void)
{
    let_go(&tls_held, &tls_held_mask);
}

/* Gives up this thread's slabs. */
static void
slab_drop(void)
{
    let_go(&tls_slab, &tls_mask);
    held_drop();
}

/* Sets the thread key that lets go of this thread's slabs at its exit;
 * false if it cannot be set. */
static bool
keyed(void)
{
    if (tls_keyed)
        return true;
    /* Any non-NULL value: the destructor reads the thread-locals. */
    if (pthread_setspecific(slab_key, &tls_keyed) != 0)
        return false;
    tls_keyed = 1;
    return true;
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
    /* On failure (ENOMEM) a fork while a thread holds plock leaves the
     * child's list locked; nothing else is at stake. */
    (void)pthread_atfork(atfork_prepare, atfork_release, atfork_release);
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

/* A slab from `partial`, owned by the caller, with its free slots in
 * *mask; NULL if none worth it among the oldest ADOPT_SCAN. */
static struct fslab *
slab_adopt(uint64_t *mask)
{
    struct fslab *s;
    uint64_t w;

    if (atomic_load_explicit(&partial_n, memory_order_relaxed) == 0)
        return NULL; /* a slab listed meanwhile waits for the next call */
    pk__mutex_lock(&plock);
    for (int k = 0; k < ADOPT_SCAN && partial.tail; k++) {
        s = PK__CONTAINER(partial.tail, struct fslab, link);
        w = atomic_load_explicit(&s->word, memory_order_relaxed);
        for (;;) {
            assert(!(w & FLAGS) && w != 0);
            if (w == s->all) {
                /* The free that made it so gives it back. */
                list_unlink(s);
                break;
            }
            if ((uint32_t)__builtin_popcountll(w) < s->adopt_min) {
                list_unlink(s); /* to the head: the next is older */
                list_link(s);
                break;
            }
            if (atomic_compare_exchange_weak_explicit(
                    &s->word, &w, OWNED, memory_order_acquire,
                    memory_order_relaxed)) {
                list_unlink(s);
                pk__mutex_unlock(&plock);
                *mask = w;
                return s;
            }
        }
    }
    pk__mutex_unlock(&plock);
    return NULL;
}

/* The orphan this thread holds, now owned by it, with its free slots in
 * *mask; NULL if it holds none worth adopting. No lock: held, no other
 * thread acts on it (frees only add their bits to its word). */
static struct fslab *
held_adopt(uint64_t *mask)
{
    struct fslab *s = tls_held;
    uint64_t w;

    if (!s || (uint32_t)__builtin_popcountll(
                  tls_held_mask | (atomic_load_explicit(&s->word,
                                                        memory_order_relaxed) &
                                   ~FLAGS)) < s->adopt_min)
        return NULL;
    /* Acquire: the other frees' writes come before the reuse. */
    w = atomic_exchange_explicit(&s->word, OWNED, memory_order_acquire);
    assert((w & FLAGS) == ORPHAN);
    *mask = (w & ~FLAGS) | tls_held_mask;
    tls_held = NULL;
    tls_held_mask = 0;
    return s;
}

/* The slow path of pk__fslot_alloc: this thread's slab has no free slot
 * in tls_mask. Not inlined: the fast path saves no registers. */
__attribute__((noinline)) static void *
slab_next(uint32_t *slot)
{
    struct fslab *s = tls_slab;
    uint32_t n;
    uint64_t w;
    void *raw = NULL;

    if (s) {
        w = OWNED;
        for (;;) {
            if (w != OWNED) {
                w = atomic_exchange_explicit(&s->word, OWNED,
                                             memory_order_acquire);
                if (w != OWNED) {
                    tls_mask = w & ~OWNED;
                    goto carve;
                }
            }
            /* Nothing free: an orphan (the next free lists it). */
            if (atomic_compare_exchange_weak_explicit(
                    &s->word, &w, ORPHAN, memory_order_release,
                    memory_order_relaxed))
                break;
        }
        tls_slab = NULL;
    }
    n = slab_size();
    if (n > 1 && !keyed())
        n = 1; /* no destructor to give a slab back: one of its own */
    if (n > 1 && (s = held_adopt(&tls_mask)) != NULL) {
        tls_slab = s;
        goto carve;
    }
    if (n > 1 && (s = slab_adopt(&tls_mask)) != NULL) {
        tls_slab = s;
        goto carve;
    }
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
    s->all = ((uint64_t)1 << n) - 1;
    s->adopt_min = ADOPT_MIN(n);
    s->raw = raw;
    s->listed = false;
    s->link.prev = s->link.next = NULL;
    *slot = 0;
    if (n == 1) {
        atomic_init(&s->word, 0);
        return slab_slot(s, 0);
    }
    atomic_init(&s->word, OWNED);
    tls_slab = s;
    tls_mask = s->all & ~(uint64_t)1;
    return slab_slot(s, 0);

carve:
    *slot = (uint32_t)__builtin_ctzll(tls_mask);
    tls_mask &= tls_mask - 1;
    return slab_slot(s, *slot);
}

void *
pk__fslot_alloc(uint32_t *slot)
{
    uint64_t m = tls_mask, ahead;
    uint32_t i;

    if (!m)
        return slab_next(slot);
    i = (uint32_t)__builtin_ctzll(m);
    m &= m - 1;
    tls_mask = m;
    *slot = i;
    ahead = m & (m - 1);
    ahead &= ahead - 1;
    if (ahead)
        /* Two futures on: its line may be fresh memory, not in the cache;
         * ask for it now rather than stall on it then (5% on a burst). */
        __builtin_prefetch(slab_slot(tls_slab,
                                     (uint32_t)__builtin_ctzll(ahead)), 1);
    return slab_slot(tls_slab, i);
}

/* Lets go of the held orphan s (slab_release gives it back) once every
 * slot of it is free. */
static void
held_check(struct fslab *s)
{
    /* Relaxed: slab_release reads the word again, with acquire. */
    uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);

    if (((w & ~FLAGS) | tls_held_mask) == s->all)
        held_drop();
}

/* A free into the orphan this thread holds: no atomic; the slab goes
 * back once every slot is free. */
static void
held_free(struct fslab *s, uint64_t bit)
{
    assert(!(tls_held_mask & bit)); /* freed twice */
    tls_held_mask |= bit;
    held_check(s);
}

/* This free found s an orphan (word ORPHAN with no free slot but its
 * own), so it holds s: it keeps it for its next frees, which then cost no
 * atomic (a thread that waits for a million futures in turn and releases
 * each frees into one slab up to 62 times running), and lets go of the
 * one it held before. */
static void
hold(struct fslab *s)
{
    held_drop();
    if (!keyed()) {
        slab_release(s, 0); /* no destructor to let go of it */
        return;
    }
    tls_held = s;
    tls_held_mask = 0;
    held_check(s); /* this free may have been its last */
}

void
pk__fslot_free(void *p, uint32_t slot)
{
    struct fslab *s = slot_slab(p, slot);
    uint64_t bit = (uint64_t)1 << slot;
    uint64_t w, all;

    if (s->raw) {
        pk__free(s->raw); /* one slot: nobody else knows it */
        return;
    }
    if (s == tls_slab) {
        /* Our own slab: the slot goes straight back to our carving. */
        assert(!(tls_mask & bit)); /* freed twice */
        tls_mask |= bit;
        return;
    }
    if (s == tls_held) {
        held_free(s, bit);
        return;
    }
    /* Read before the add, while this slot's future still pins the slab:
     * after it, another free may give the slab back (and the arena
     * unmap or re-carve it) before this thread looks again. */
    all = s->all;
    /* The slot's bit is clear while it is in use, so adding it sets it:
     * one xadd on x86, where a fetch_or that returns the old word is a
     * CAS loop. */
    w = atomic_fetch_add_explicit(&s->word, bit, memory_order_acq_rel);
    assert(!(w & bit)); /* freed twice */
    if (w & FLAGS) {
        if (w == ORPHAN) /* the first free of an orphan: now its holder */
            hold(s);
        return;
    }
    if ((w | bit) == all) {
        /* All free and listed: this free alone can see it so. */
        pk__mutex_lock(&plock);
        if (s->listed)
            list_unlink(s);
        pk__mutex_unlock(&plock);
        pk__slab_put(s);
    }
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
