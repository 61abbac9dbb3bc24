/* pools/memory/cache.c - each thread's caches of objects, the pool's hot
 * path.
 *
 * A thread keeps, per pool it uses, an array of up to cache_cap free
 * objects (struct mp_cache). alloc pops one and free pushes one with no
 * lock and no atomic read-modify-write: the cache is the thread's own.
 * An empty cache takes a batch (half its size) from the depot, a full
 * one gives the older half back; a free while an alloc waits at the
 * budget goes straight to the depot, which wakes the waiter. Without
 * the lock first, when the pool has xfer_cap (no budget, not in debug
 * mode): the
 * older half goes onto the pool's batch stack (depot.c) if it has room,
 * and an empty cache refills from its hoard, else takes the whole stack
 * (one batch into the cache, the rest its hoard), before the depot. The
 * nodes a refill empties go back to the pool PK__MP_SPARES at a time;
 * a full cache takes them from there (all at once) or makes one.
 *
 * Finding the cache: the thread's caches are a list (tls_head) with the
 * last one used in pk_mempool_tls_cache, so a thread that uses one pool
 * finds it in one compare. A cache is made on the thread's first call on
 * a pool (pk__alloc; without memory the thread goes to the depot every
 * time).
 *
 * The inline path (mempool.h) is this file's alloc and free with the
 * cache neither empty nor full, compiled into the caller: it reads
 * pk_mempool_tls_cache (initial-exec TLS, exported) and the cache's pub
 * part, which is ABI. It serves a pool's allocs only while the cache's
 * pub.fast names it, and its frees while pub.fast_free does: set when
 * the cache is made, for a plain pool (no hooks, no zeroing; fast_free
 * also no budget, whose frees must see a waiter), set to NOT_SERVED by
 * destroy before it takes the cache over, so a pool made later at the
 * same address is never served from a dead cache. In a child after
 * fork() the forking thread's pk_mempool_tls_cache is reset by a
 * pthread_atfork child handler, so the child's first call on an
 * inherited pool takes the slow path, which answers PK_EFORKED (alloc)
 * or forgets the object (free).
 *
 * Process-wide state (README): one pthread key and one pthread_atfork
 * child handler, made once (pthread_once): the key's destructor gives a
 * thread's caches back when the thread exits; the handler clears the
 * forking thread's pk_mempool_tls_cache in the child. And the two
 * thread-locals above.
 *
 * Who frees a cache. The owner thread, always, but only once nobody
 * else can touch it. Each cache is also on its pool's list (under
 * mp->lock) and has a state:
 *   LIVE      the owner uses it
 *   FLUSHING  the owner is exiting and gives it back: it puts the objects
 *             into the depot, then unlinks it from the pool under the
 *             lock and broadcasts mp->cv (the pool stays alive meanwhile:
 *             destroy waits for this)
 *   DEAD      destroy took it over: the pool is gone, the objects with
 *             it; the owner frees the cache when it next looks at its
 *             list or exits, without touching the pool
 * LIVE -> FLUSHING (owner) and LIVE -> DEAD (destroy) are one CAS each,
 * so exactly one wins. destroy unlinks a cache before its CAS and links
 * it back if the CAS fails, all under the lock, so the owner never frees
 * a cache destroy still touches, and a flushing owner finds its cache
 * linked. */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "mp_int.h"

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
/* Set once in key_init (release); read by threads that may not have run
 * the pthread_once themselves (acquire: then key is made). */
static _Atomic bool key_ok;

static _Thread_local struct mp_cache *tls_head;

/* What pub.fast holds when the cache serves no pool inline: an address
 * that is no pool's (never NULL, so a NULL pool never matches). */
static const char not_served_byte;
#define NOT_SERVED ((const struct pk_mempool *)&not_served_byte)

/* pk_mempool_tls_cache before the thread's first cache, and after: a
 * cache that serves nothing (the inline path needs no NULL test). */
static struct pk_mempool_tcache no_cache = { .fast = NOT_SERVED,
                                             .fast_free = NOT_SERVED };

/* The last cache used (mempool.h: the inline path reads it). */
PK_API __thread struct pk_mempool_tcache *pk_mempool_tls_cache
    __attribute__((tls_model("initial-exec"))) = &no_cache;

static struct mp_cache *
last(void)
{
    struct pk_mempool_tcache *t = pk_mempool_tls_cache;

    return t == &no_cache ? NULL
                          : (struct mp_cache *)((char *)t -
                                                offsetof(struct mp_cache,
                                                         pub));
}

static void
set_last(struct mp_cache *c)
{
    pk_mempool_tls_cache = c ? &c->pub : &no_cache;
}

/* ---- counts ------------------------------------------------------------ */

/* The owner writes pub.n, pub.allocs, moved_in and moved_out with
 * relaxed stores (stats read them); its own plain reads are no race. */
static void
set_n(struct mp_cache *c, uint32_t n)
{
    __atomic_store_n(&c->pub.n, n, __ATOMIC_RELAXED);
}

static void
add(uint64_t *count, uint64_t k)
{
    __atomic_store_n(count, *count + k, __ATOMIC_RELAXED);
}

/* The frees made through c: the inline path counts only allocs, and
 * every object that came into the cache (a free, a refill) is still in
 * it, was allocated or moved out. A snapshot while the owner works is
 * close, not exact. */
static uint64_t
frees_of(const struct mp_cache *c)
{
    /* The owner's stores land one by one: a snapshot may see moved_in
     * before n, say. Never below 0. */
    uint64_t plus = __atomic_load_n(&c->pub.n, __ATOMIC_RELAXED) +
                    __atomic_load_n(&c->pub.allocs, __ATOMIC_RELAXED) +
                    __atomic_load_n(&c->moved_out, __ATOMIC_RELAXED);
    uint64_t minus = __atomic_load_n(&c->moved_in, __ATOMIC_RELAXED);

    return plus > minus ? plus - minus : 0;
}

/* ---- the pool's list (under mp->lock) --------------------------------- */

static void
pool_link_locked(struct pk_mempool *mp, struct mp_cache *c)
{
    c->pprev = NULL;
    c->pnext = mp->caches;
    if (mp->caches)
        mp->caches->pprev = c;
    mp->caches = c;
}

static void
pool_unlink_locked(struct pk_mempool *mp, struct mp_cache *c)
{
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        mp->caches = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
}

/* ---- thread exit ---------------------------------------------------------- */

/* Gives c back to its pool (if the pool still has it) and frees it. */
static void
give_back(struct mp_cache *c)
{
    struct pk_mempool *mp = c->mp;
    int st = PK__MPC_LIVE;

    /* A cache from before a fork belongs to the parent's pool: forget it.
     * acq_rel: pairs with destroy's CAS (one of the two wins). */
    if (c->epoch == pk__fork_epoch_fast() &&
        atomic_compare_exchange_strong_explicit(
            &c->state, &st, PK__MPC_FLUSHING, memory_order_acq_rel,
            memory_order_acquire)) {
        uint64_t frees = frees_of(c);

        if (c->pub.n)
            pk__mp_depot_put(mp, c->pub.objs, c->pub.n);
        pk__mp_xfer_drain_list(mp, c->hoard);
        c->hoard = NULL;
        /* Before the unlink: destroy frees the pool's nodes after. */
        pk__mp_xfer_spare_put(mp, c->spares);
        c->spares = NULL;
        c->nspares = 0;
        pk__lock_acquire(&mp->lock);
        pool_unlink_locked(mp, c);
        atomic_fetch_add_explicit(&mp->gone_allocs, c->pub.allocs,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&mp->gone_frees, frees,
                                  memory_order_relaxed);
        pk__cv_broadcast(&mp->cv); /* destroy may wait for this */
        pk__lock_release(&mp->lock);
    }
    pk__mp_xfer_free_list(c->spares);
    pk__mp_xfer_free_list(c->hoard);
    pk__free(c);
}

/* The key's destructor: runs at thread exit with the thread's list. */
static void
thread_exit(void *head)
{
    struct mp_cache *c = head;

    tls_head = NULL;
    set_last(NULL);
    while (c) {
        struct mp_cache *next = c->next;
        give_back(c);
        c = next;
    }
}

/* In the child after fork(), on the forking thread (the child's only
 * one): the inline path must not serve the parent's pools. */
static void
forked_child(void)
{
    set_last(NULL);
}

static void
key_init(void)
{
    bool ok = pthread_key_create(&key, thread_exit) == 0;

    if (ok && pthread_atfork(NULL, NULL, forked_child) != 0) {
        pthread_key_delete(key); /* no caches rather than unsafe ones */
        ok = false;
    }
    atomic_store_explicit(&key_ok, ok, memory_order_release);
}

static bool
have_key(void)
{
    return atomic_load_explicit(&key_ok, memory_order_acquire);
}

/* ---- finding a thread's cache -------------------------------------------- */

static bool
usable(const struct mp_cache *c, const struct pk_mempool *mp)
{
    return c->mp == mp && c->epoch == mp->fork_epoch &&
           atomic_load_explicit(&c->state, memory_order_acquire) ==
               PK__MPC_LIVE;
}

/* Frees this thread's caches that destroy took over (or that a fork
 * left to the parent). */
static void
reap(void)
{
    struct mp_cache **pp = &tls_head;
    unsigned epoch = pk__fork_epoch_fast();

    while (*pp) {
        struct mp_cache *c = *pp;
        if (c->epoch != epoch ||
            atomic_load_explicit(&c->state, memory_order_acquire) ==
                PK__MPC_DEAD) {
            *pp = c->next;
            if (last() == c)
                set_last(NULL);
            pk__mp_xfer_free_list(c->spares);
            pk__mp_xfer_free_list(c->hoard);
            pk__free(c);
        } else {
            pp = &c->next;
        }
    }
}

/* The inline path's copy of the pool's geometry (mempool.h). */
static void
init_pub(struct mp_cache *c, struct pk_mempool *mp)
{
    c->pub.fast = mp->plain ? mp : NOT_SERVED;
    c->pub.fast_free = mp->plain && !mp->max_bytes ? mp : NOT_SERVED;
    c->pub.n = 0;
    c->pub.cap = mp->cache_cap;
    c->pub.mask = mp->slab_mask;
    c->pub.key = pk__mp_key(mp);
    c->pub.first = mp->first;
    c->pub.nobjs = mp->nobjs;
    c->pub.inv = mp->stride_inv;
    c->pub.shift = mp->stride_rot;
}

static struct mp_cache *
make(struct pk_mempool *mp)
{
    struct mp_cache *c;

    pthread_once(&key_once, key_init);
    if (!have_key())
        return NULL;
    c = pk__alloc(sizeof *c + mp->cache_cap * sizeof c->pub.objs[0]);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    init_pub(c, mp);
    c->mp = mp;
    c->epoch = mp->fork_epoch;
    atomic_init(&c->state, PK__MPC_LIVE);
    c->next = tls_head;
    if (pthread_setspecific(key, c) != 0) {
        pk__free(c);
        return NULL;
    }
    tls_head = c;
    pk__lock_acquire(&mp->lock);
    pool_link_locked(mp, c);
    pk__lock_release(&mp->lock);
    return c;
}

/* This thread's cache of mp, made if it has none; NULL if mp has no
 * caches or no memory for one. create 0: only look. */
static struct mp_cache *
cache_of(struct pk_mempool *mp, bool create)
{
    struct mp_cache *c = last();

    if (c && usable(c, mp))
        return c;
    if (!mp->cache_cap)
        return NULL;
    reap();
    for (c = tls_head; c; c = c->next)
        if (usable(c, mp))
            break;
    if (!c && create)
        c = make(mp);
    /* The key holds the list's head, for thread_exit. */
    if (have_key() && pthread_getspecific(key) != tls_head)
        pthread_setspecific(key, tls_head); /* can't fail: set before */
    if (c)
        set_last(c);
    return c;
}

/* ---- alloc and free ------------------------------------------------------- */

/* Brings node b's lines to this core ahead of its use (it was last
 * written on another). */
static inline void
prefetch_node(const struct pk_mempool *mp, const struct mp_batch *b,
              int write)
{
    const char *p = (const char *)b;
    const char *end = (const char *)&b->objs[mp->xfer_cap];

    for (; p < end; p += 64) {
        if (write)
            __builtin_prefetch(p, 1);
        else
            __builtin_prefetch(p, 0);
    }
}

/* The cache's first k objects (k == mp->xfer_cap) onto the batch stack,
 * in a node of the cache's spares, of the pool's, or new. Returns
 * whether they went. */
static bool
hand_back(struct pk_mempool *mp, struct mp_cache *c, uint32_t k)
{
    struct mp_batch *b = c->spares;

    if (!pk__mp_xfer_room(mp))
        return false; /* no copy to make for nothing */
    if (b) {
        c->spares = b->next;
        if (c->nspares)
            c->nspares--;
    } else if ((b = pk__mp_xfer_spare_take(mp)) != NULL) {
        c->spares = b->next; /* not counted: nspares counts the ones
                                this thread's allocs emptied */
    } else {
        b = pk__alloc(sizeof *b + mp->xfer_cap * sizeof b->objs[0]);
        if (!b)
            return false;
        atomic_init(&b->depth, 0);
    }
    if (c->spares)
        prefetch_node(mp, c->spares, 1); /* the next one, likely warm by
                                            then */
    memcpy(b->objs, c->pub.objs, k * sizeof b->objs[0]);
    b->n = k;
    if (pk__mp_xfer_push(mp, b))
        return true;
    b->n = 0;
    b->next = c->spares;
    c->spares = b;
    c->nspares++;
    return false;
}

int
pk__mp_cache_alloc(struct pk_mempool *mp, void **out, int timeout_ms)
{
    struct mp_cache *c = cache_of(mp, true);
    int n;

    if (!c) {
        n = pk__mp_depot_get(mp, out, 1, timeout_ms);
        if (n < 0)
            return n;
        atomic_fetch_add_explicit(&mp->gone_allocs, 1, memory_order_relaxed);
        return 0;
    }
    if (c->pub.n == 0 && mp->xfer_cap) {
        /* A batch another thread's cache handed back. */
        struct mp_batch *b = c->hoard;
        if (!b)
            b = pk__mp_xfer_pop(mp);
        if (b) {
            c->hoard = b->next; /* the rest of the stack, if popped */
            if (c->hoard)
                prefetch_node(mp, c->hoard, 0);
            memcpy(c->pub.objs, b->objs, b->n * sizeof b->objs[0]);
            set_n(c, b->n);
            add(&c->moved_in, b->n);
            b->n = 0;
            b->next = c->spares;
            c->spares = b;
            /* Empty nodes back to the pool a few at a time: a thread
             * that frees more than it allocates needs them. */
            if (++c->nspares >= PK__MP_SPARES) {
                pk__mp_xfer_spare_put(mp, c->spares);
                c->spares = NULL;
                c->nspares = 0;
            }
        }
    }
    if (c->pub.n == 0) {
        size_t want = c->pub.cap > 1 ? c->pub.cap / 2 : 1;
        if (pk__mp_waiters(mp))
            want = 1; /* others wait at the budget: take no more */
        n = pk__mp_depot_get(mp, c->pub.objs, want, timeout_ms);
        if (n < 0)
            return n;
        set_n(c, (uint32_t)n);
        add(&c->moved_in, (uint64_t)n);
    }
    *out = c->pub.objs[c->pub.n - 1];
    set_n(c, c->pub.n - 1);
    add(&c->pub.allocs, 1);
    return 0;
}

void
pk__mp_cache_free(struct pk_mempool *mp, void *obj)
{
    struct mp_cache *c = cache_of(mp, true);

    if (!c || pk__mp_waiters(mp)) {
        pk__mp_depot_put(mp, &obj, 1);
        if (c)
            add(&c->moved_out, 1); /* in and out at once */
        else
            atomic_fetch_add_explicit(&mp->gone_frees, 1,
                                      memory_order_relaxed);
        return;
    }
    if (c->pub.n == c->pub.cap) {
        /* Full: the older half goes onto the batch stack, or back to the
         * slabs. */
        uint32_t k = c->pub.n > 1 ? c->pub.n / 2 : 1;
        if (!mp->xfer_cap || !hand_back(mp, c, k))
            pk__mp_depot_put(mp, c->pub.objs, k);
        memmove(c->pub.objs, c->pub.objs + k,
                (c->pub.n - k) * sizeof c->pub.objs[0]);
        set_n(c, c->pub.n - k);
        add(&c->moved_out, k);
    }
    c->pub.objs[c->pub.n] = obj;
    set_n(c, c->pub.n + 1);
}

void
pk__mp_cache_flush_mine(struct pk_mempool *mp)
{
    struct mp_cache *c = cache_of(mp, false);

    if (c && c->pub.n) {
        pk__mp_depot_put(mp, c->pub.objs, c->pub.n);
        add(&c->moved_out, c->pub.n);
        set_n(c, 0);
    }
    if (c && c->hoard) {
        pk__mp_xfer_drain_list(mp, c->hoard);
        c->hoard = NULL;
    }
}

/* ---- destroy and stats ---------------------------------------------------- */

uint64_t
pk__mp_cache_detach_all(struct pk_mempool *mp)
{
    uint64_t cached = 0;
    struct mp_cache *c;

    pk__lock_acquire(&mp->lock);
    while ((c = mp->caches) != NULL) {
        /* Read before the CAS: once DEAD, its owner may free it. The
         * owner is not in a call on mp (destroy is exclusive), so n is
         * settled. */
        uint64_t n = c->pub.n;
        uint64_t a = __atomic_load_n(&c->pub.allocs, __ATOMIC_RELAXED);
        uint64_t f = frees_of(c);
        int st = PK__MPC_LIVE;

        for (struct mp_batch *b = c->hoard; b; b = b->next)
            n += b->n;
        /* Before the CAS too: the inline path stops serving mp here. */
        __atomic_store_n(&c->pub.fast, NOT_SERVED, __ATOMIC_RELAXED);
        __atomic_store_n(&c->pub.fast_free, NOT_SERVED, __ATOMIC_RELAXED);
        pool_unlink_locked(mp, c);
        if (atomic_compare_exchange_strong_explicit(
                &c->state, &st, PK__MPC_DEAD, memory_order_acq_rel,
                memory_order_acquire)) {
            cached += n;
            atomic_fetch_add_explicit(&mp->gone_allocs, a,
                                      memory_order_relaxed);
            atomic_fetch_add_explicit(&mp->gone_frees, f,
                                      memory_order_relaxed);
            continue;
        }
        /* FLUSHING: its thread is exiting and unlinks it itself. */
        pool_link_locked(mp, c);
        pk__cv_wait_until(&mp->cv, &mp->lock, UINT64_MAX);
    }
    pk__lock_release(&mp->lock);
    reap(); /* this thread's own cache of mp, now DEAD */
    if (have_key() && pthread_getspecific(key) != tls_head)
        pthread_setspecific(key, tls_head);
    return cached;
}

void
pk__mp_cache_counts(struct pk_mempool *mp, uint64_t *allocs,
                    uint64_t *frees)
{
    uint64_t a = 0, f = 0;

    pk__lock_acquire(&mp->lock);
    for (struct mp_cache *c = mp->caches; c; c = c->pnext) {
        a += __atomic_load_n(&c->pub.allocs, __ATOMIC_RELAXED);
        f += frees_of(c);
    }
    /* Under the lock: a cache that goes moves its counts in one step. */
    a += atomic_load_explicit(&mp->gone_allocs, memory_order_relaxed);
    f += atomic_load_explicit(&mp->gone_frees, memory_order_relaxed);
    pk__lock_release(&mp->lock);
    *allocs = a;
    *frees = f;
}
