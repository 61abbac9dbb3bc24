/* lib/pool_cache.h - the release cache's lock-free paths, inlined into
 * pk_pool_acquire_at and pk_pool_release (pool.c). The design and its
 * invariants are at the top of pool_cache.c. */
#ifndef PK_LIB_POOL_CACHE_H
#define PK_LIB_POOL_CACHE_H

#include "pool_int.h"

/* The calling thread's stripe (low bits; the top bit says it was set),
 * and the slot it parked last: a hint pk__cache_park_locked uses to tell
 * its own previous release from another thread's on the same stripe.
 * Thread-local, not global: no thread's state is shared. initial-exec: one
 * load off the thread pointer, no __tls_get_addr call on the hot path. */
#define PK__TLS __attribute__((tls_model("initial-exec")))
extern _Thread_local unsigned pk__cache_home PK__TLS;
extern _Thread_local struct pk__slot *pk__cache_last PK__TLS;
unsigned pk__cache_home_init(void);

static inline struct pk__stripe *
pk__cache_stripe(struct pk_pool *p)
{
    unsigned h = pk__cache_home;

    if (__builtin_expect(h == 0, 0))
        h = pk__cache_home_init();
    return &p->cache.stripe[h & p->cache.mask];
}

static inline bool
pk__cache_gen_ok(struct pk_pool *p, const struct pk__slot *s)
{
    return s->generation ==
           atomic_load_explicit(&p->cache.gen, memory_order_relaxed);
}

/* Takes the slot parked last in the caller's stripe, if it is still
 * parked, and lends it: *lease_t is the new lease's ticket. NULL if there
 * is none. The caller owns it (LENT, counted in p->lent) and must check
 * its generation before handing it out. */
static inline struct pk__slot *
pk__cache_take(struct pk_pool *p, uint64_t *lease_t)
{
    struct pk__slot *s;
    uint64_t w, n;

    if (!p->cache.stripe)
        return NULL;
    /* The hint is only a hint: the CAS on the slot's own word decides.
     * Every slot stays allocated while the pool lives, so reading a stale
     * hint's word is safe. Acquire pairs with the hint's store: the slot's
     * making (on another thread) is seen before its word is read. */
    s = atomic_load_explicit(&pk__cache_stripe(p)->hint,
                             memory_order_acquire);
    if (!s)
        return NULL;
    w = atomic_load_explicit(&s->ticket, memory_order_relaxed);
    if ((w & PK__T_FLAGS) != PK__T_PARKED)
        return NULL;
    n = pk__ticket_lease(w) + PK__T_STEP;
    if (PK__SINGLE_THREADED()) {
        /* Nobody else can see the slot (sync.h, pk__lock_acquire). */
        atomic_store_explicit(&s->ticket, n, memory_order_relaxed);
    } else if (!atomic_compare_exchange_strong_explicit(
                   &s->ticket, &w, n, memory_order_acquire,
                   memory_order_relaxed)) {
        /* Acquire pairs with the parking CAS's release: the fields its
         * last holder wrote are seen. Failed: taken, flushed or closed
         * meanwhile. */
        return NULL;
    }
    *lease_t = n;
    return s;
}

/* Lends a slot taken from the cache. Only the owner writes these fields
 * (cache_lends with a load and a store: no RMW on the hot path). */
static inline void
pk__cache_lend(struct pk__slot *s, const char *file, int line)
{
    uint64_t n = atomic_load_explicit(&s->cache_lends, memory_order_relaxed);

    atomic_store_explicit(&s->cache_lends, n + 1, memory_order_relaxed);
    s->uses++;
    s->file = file;
    s->line = line;
}

/* Ends the lease t of s whose ticket word was *w (NOPARK clear, the
 * caller checked the generation) and parks s in the same CAS. Returns 1
 * if parked: from then on the slot belongs to the cache and a racing
 * close + destroy that flushed it may free the pool, so the caller must
 * not touch p or s again. 0: the caller's stripe holds another parked
 * slot; end the lease and park under the lock (LIFO). -1: the word
 * changed (*w reloaded); validate again. */
static inline int
pk__cache_park(struct pk_pool *p, struct pk__slot *s, uint64_t *w,
               uint64_t t)
{
    struct pk__stripe *st = pk__cache_stripe(p);
    struct pk__slot *h = atomic_load_explicit(&st->hint,
                                              memory_order_acquire);
    uint64_t n = (t + PK__T_STEP) | PK__T_PARKED;

    if (h != s) {
        if (h && (atomic_load_explicit(&h->ticket, memory_order_relaxed) &
                  PK__T_PARKED))
            return 0;
        /* Before the CAS: after it, p may be gone. A hint to a slot the
         * CAS then fails to park is harmless. Release: see the load. */
        atomic_store_explicit(&st->hint, s, memory_order_release);
    }
    if (PK__SINGLE_THREADED()) {
        atomic_store_explicit(&s->ticket, n, memory_order_relaxed);
    } else if (!atomic_compare_exchange_strong_explicit(
                   &s->ticket, w, n, memory_order_release,
                   memory_order_relaxed)) {
        /* Release: s's fields reach whoever takes it. Failed: a gate
         * flip (NOPARK) or a second release of the same lease came
         * first. */
        return -1;
    }
    pk__cache_last = s;
    return 1;
}

#endif /* PK_LIB_POOL_CACHE_H */
