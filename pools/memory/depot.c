/* pools/memory/depot.c - the slabs a pool holds from its core, and the
 * budget.
 *
 * The core lends slabs; the depot holds each one it borrowed (the `held`
 * list) until every object of it is back, then releases it to the core,
 * where it is idle: the core keeps min_idle of those warm and unmaps the
 * others after idle_timeout (or at a trim). `partial` lists the held
 * slabs with objects in them to hand out. Everything here is under
 * mp->lock, which is dropped around every call into the core (whose
 * create hook runs ctor).
 *
 * The budget is the core's max_size in slabs. The depot never asks the
 * core for a slab the core could not give at once: it reserves one
 * (npending) only while held + pending slabs are under max_slabs, so the
 * core then has an idle slab or room to map one. At the budget an alloc
 * waits on mp->cv for objects to come back (depot_put broadcasts while
 * anyone waits, and frees skip their cache then: cache.c).
 *
 * Counts: `out` is the objects out of their slabs (in use, in a
 * thread's cache or in a batch on the stack), exact under the lock;
 * `peak` its maximum.
 *
 * The batch stack (xfull) is the depot's front without the lock: a
 * thread whose cache is full pushes the older half as a batch (the
 * pointers, copied into a node: the objects are not written), a thread
 * whose cache is empty takes the stack before it comes here, so objects
 * freed on one thread and allocated on another skip the lock and the
 * slabs. Only push (CAS) and take-all (exchange) touch a stack, so no
 * ABA; the taker keeps the batches it does not need yet (cache.c: its
 * hoard). The stack holds at most PK__MP_XFER_MAX batches (about: a
 * node's depth is read racily); beyond, a full cache gives its half to
 * the slabs. An alloc that would map a slab or wait at the budget, and
 * trim, drain the stack into the slabs first, and a push that sees a
 * waiter drains it at once. Nodes are recycled through xspare and freed
 * only at destroy. */
#include "mp_int.h"

/* ---- lists ------------------------------------------------------------ */

static void
held_link(struct pk_mempool *mp, struct mp_slab *s)
{
    s->prev = NULL;
    s->next = mp->held;
    if (mp->held)
        mp->held->prev = s;
    mp->held = s;
    mp->nheld++;
}

static void
held_unlink(struct pk_mempool *mp, struct mp_slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        mp->held = s->next;
    if (s->next)
        s->next->prev = s->prev;
    mp->nheld--;
}

static void
partial_push(struct pk_mempool *mp, struct mp_slab *s)
{
    s->pprev = NULL;
    s->pnext = mp->partial;
    if (mp->partial)
        mp->partial->pprev = s;
    mp->partial = s;
    s->on_partial = true;
}

static void
partial_unlink(struct pk_mempool *mp, struct mp_slab *s)
{
    if (s->pprev)
        s->pprev->pnext = s->pnext;
    else
        mp->partial = s->pnext;
    if (s->pnext)
        s->pnext->pprev = s->pprev;
    s->on_partial = false;
}

/* ---- get ---------------------------------------------------------------- */

/* Takes up to want objects from the slabs with room. */
static size_t
take_locked(struct pk_mempool *mp, void **out, size_t want)
{
    size_t n = 0;

    while (n < want && mp->partial) {
        struct mp_slab *s = mp->partial;
        n += pk__mp_slab_take(s, out + n, want - n);
        if (s->nfree == 0)
            partial_unlink(mp, s);
    }
    mp->out += n;
    if (mp->out > mp->peak)
        mp->peak = mp->out;
    return n;
}

/* The core's timeout for a slab the depot reserved: it has room or an
 * idle one, so it does not wait for a release; the timeout bounds only
 * its retries while mapping fails. (A 0 ms alloc asks the core with
 * pk_pool_acquire_or_create: it still maps.) */
static int
core_timeout(int timeout_ms, uint64_t deadline)
{
    uint64_t now, left;

    if (timeout_ms < 0)
        return timeout_ms;
    now = pk__now_ns();
    left = deadline > now ? (deadline - now) / 1000000u : 0;
    return left == 0 ? 1 : left > (uint64_t)timeout_ms ? timeout_ms
                                                       : (int)left;
}

/* Borrows a slab from the core (lock dropped) and adds it, lock held on
 * return. Returns 0 or the core's error. */
static int
add_slab(struct pk_mempool *mp, int timeout_ms, uint64_t deadline)
{
    pk_lease l;
    struct mp_slab *s;
    int rc;

    mp->npending++;
    pk__lock_release(&mp->lock);
    rc = timeout_ms == 0
             ? pk_pool_acquire_or_create(mp->core, &l, NULL)
             : pk_pool_acquire(mp->core, &l, core_timeout(timeout_ms, deadline),
                               NULL);
    pk__lock_acquire(&mp->lock);
    mp->npending--;
    if (rc) {
        /* A reservation came free: a waiter may map one itself. */
        if (pk__mp_waiters(mp))
            pk__cv_broadcast(&mp->cv);
        /* The core times out (or, at 0 ms, answers PK_EAGAIN) only if it
         * could not map (a retired slab still unmapping, say): at the
         * budget, then. */
        return rc;
    }
    s = l.resource;
    s->lease = l;
    held_link(mp, s);
    if (s->nfree)
        partial_push(mp, s);
    return 0;
}

int
pk__mp_depot_get(struct pk_mempool *mp, void **out, size_t want,
                 int timeout_ms)
{
    uint64_t deadline = UINT64_MAX;
    bool waited = false;
    size_t n;
    int rc;

    pk__lock_acquire(&mp->lock);
    for (;;) {
        n = take_locked(mp, out, want);
        if (n)
            break;
        if (atomic_load_explicit(&mp->xfull, memory_order_relaxed)) {
            /* Free objects in batches: into the slabs, then take. */
            pk__lock_release(&mp->lock);
            pk__mp_xfer_drain(mp);
            pk__lock_acquire(&mp->lock);
            continue;
        }
        if (mp->nheld + mp->npending < mp->max_slabs) {
            rc = add_slab(mp, timeout_ms, deadline);
            if (rc)
                goto fail;
            continue;
        }
        if (timeout_ms == 0) {
            rc = PK_EAGAIN;
            goto fail;
        }
        if (!waited) {
            waited = true;
            mp->waits++;
            pk__deadline(timeout_ms, &deadline);
        }
        if (pk__now_ns() >= deadline) {
            rc = PK_ETIMEDOUT;
            goto fail;
        }
        __atomic_fetch_add(&mp->waiters, 1, __ATOMIC_RELAXED);
        pk__cv_wait_until(&mp->cv, &mp->lock, deadline);
        __atomic_fetch_sub(&mp->waiters, 1, __ATOMIC_RELAXED);
    }
    pk__lock_release(&mp->lock);
    return (int)n;
fail:
    if (rc == PK_EAGAIN || rc == PK_ETIMEDOUT)
        mp->timeouts++;
    pk__lock_release(&mp->lock);
    return rc;
}

/* ---- put ---------------------------------------------------------------- */

/* Gives empty slabs (linked through next) back to the core. */
static void
release_all(struct pk_mempool *mp, struct mp_slab *list, int status)
{
    while (list) {
        struct mp_slab *s = list;
        /* A copy: the release may unmap the slab and free s. */
        pk_lease l = s->lease;
        list = s->next;
        pk_pool_release(mp->core, &l, status);
    }
}

/* The objects of word w of s in mask (count of them) back into s; an
 * empty slab onto *empty. Returns the double frees found. Lock held. */
static size_t
put_word(struct pk_mempool *mp, struct mp_slab *s, size_t w, uint64_t mask,
         size_t count, struct mp_slab **empty)
{
    size_t doubles = pk__mp_slab_put_word(s, w, mask, count);
    size_t put = count - doubles;

    if (put == 0)
        return doubles; /* nothing changed: s may be on *empty already */
    mp->out -= put;
    if (s->nfree == mp->nobjs) {
        /* Empty: back to the core, which keeps or unmaps it. */
        if (s->on_partial)
            partial_unlink(mp, s);
        held_unlink(mp, s);
        s->next = *empty;
        *empty = s;
    } else if (!s->on_partial) {
        partial_push(mp, s);
    }
    return doubles;
}

/* The geometry depot_put reads per object, in locals (the compiler
 * cannot keep mp's fields in registers across put_word). */
struct geometry {
    uintptr_t mask;
    uint64_t first, inv;
    unsigned rot;
};

/* The index of obj, an object of the pool (checked when it was freed):
 * the exact division by stride as one multiply (mempool.c:
 * stride_inverse). */
static inline size_t
index_of(const struct geometry *g, const void *obj)
{
    uint64_t q = (uint64_t)(((uintptr_t)obj & ~g->mask) - g->first) * g->inv;

    return (size_t)((q >> g->rot) | (q << ((64 - g->rot) & 63)));
}

void
pk__mp_depot_put(struct pk_mempool *mp, void *const *objs, size_t n)
{
    const struct geometry g = { mp->slab_mask, mp->first, mp->stride_inv,
                                mp->stride_rot };
    struct mp_slab *empty = NULL;
    const struct mp_slab_head *cur = NULL;
    size_t doubles = 0, cw = 0, count = 0;
    uint64_t mask = 0;

    /* A batch is mostly runs of objects of one bitmap word of one slab
     * (they were taken that way): each run is one read and one write of
     * the word. The same object twice in a run is a double free too. */
    pk__lock_acquire(&mp->lock);
    for (size_t i = 0; i < n; i++) {
        const struct mp_slab_head *h =
            (const struct mp_slab_head *)((uintptr_t)objs[i] & g.mask);
        size_t idx = index_of(&g, objs[i]);
        uint64_t bit = (uint64_t)1 << (idx % 64);

        if (h == cur && idx / 64 == cw) {
            if (mask & bit)
                doubles++;
            else
                count++;
            mask |= bit;
            continue;
        }
        if (cur)
            doubles += put_word(mp, cur->slab, cw, mask, count, &empty);
        cur = h;
        cw = idx / 64;
        mask = bit;
        count = 1;
    }
    if (cur)
        doubles += put_word(mp, cur->slab, cw, mask, count, &empty);
    mp->double_frees += doubles;
    if (pk__mp_waiters(mp))
        pk__cv_broadcast(&mp->cv);
    pk__lock_release(&mp->lock);
    release_all(mp, empty, PK_RELEASE_OK);
    if (doubles)
        pk__log_failure("pk_mempool_free: an object was freed twice "
                        "(found when it reached its slab; dropped)", NULL);
}

/* ---- trim, close, stats ----------------------------------------------- */

void
pk__mp_depot_trim(struct pk_mempool *mp)
{
    if (mp->xfer_cap)
        pk__mp_xfer_drain(mp);
    /* The coldest empty slabs go: the warm ones stay for the next
     * allocs. */
    (void)pk_pool_trim(mp->core, mp->min_idle, NULL);
}

uint64_t
pk__mp_depot_close(struct pk_mempool *mp)
{
    struct mp_slab *list;
    uint64_t out;

    pk__lock_acquire(&mp->lock);
    list = mp->held;
    out = mp->out;
    mp->held = NULL;
    mp->partial = NULL;
    mp->nheld = 0;
    mp->out = 0;
    pk__lock_release(&mp->lock);
    release_all(mp, list, PK_RELEASE_BROKEN); /* next is the held link */
    return out;
}

void
pk__mp_depot_forget_in_child(struct pk_mempool *mp)
{
    /* The core was destroyed in this child first: each release forgets
     * its slab (pk__mp_slab_forget), the last one frees the core. */
    release_all(mp, mp->held, PK_RELEASE_OK);
    mp->held = NULL;
}

void
pk__mp_depot_stats(struct pk_mempool *mp, pk_mempool_stats *o)
{
    pk_pool_stats st;

    pk__lock_acquire(&mp->lock);
    o->peak = mp->peak;
    o->waits = mp->waits;
    o->timeouts = mp->timeouts;
    o->double_frees = mp->double_frees;
    o->bad_frees = mp->bad_frees; /* debug.c's */
    pk__lock_release(&mp->lock);
    if (pk_pool_stats_get(mp->core, &st) == 0) {
        o->slabs = st.size - st.creating;
        o->slabs_empty = st.idle;
    }
    o->bytes_mapped = o->slabs * mp->slab_size;
}

/* ---- the batch stack ---------------------------------------------------- */

bool
pk__mp_xfer_push(struct pk_mempool *mp, struct mp_batch *b)
{
    /* acquire, the failed CAS too: old's depth is read. */
    struct mp_batch *old = atomic_load_explicit(&mp->xfull,
                                                memory_order_acquire);

    do {
        uint32_t d = old ? atomic_load_explicit(&old->depth,
                                                memory_order_relaxed)
                         : 0;
        if (d >= PK__MP_XFER_MAX)
            return false;
        b->next = old;
        atomic_store_explicit(&b->depth, d + 1, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(
        &mp->xfull, &old, b, memory_order_release, memory_order_acquire));
    /* A waiter at the budget must see these objects in the slabs. */
    if (pk__mp_waiters(mp))
        pk__mp_xfer_drain(mp);
    return true;
}

/* The batches of list into the slabs, their nodes onto the spares. */
void
pk__mp_xfer_drain_list(struct pk_mempool *mp, struct mp_batch *list)
{
    if (!list)
        return;
    for (struct mp_batch *b = list; b; b = b->next) {
        pk__mp_depot_put(mp, b->objs, b->n);
        b->n = 0;
    }
    pk__mp_xfer_spare_put(mp, list);
}

struct mp_batch *
pk__mp_xfer_pop(struct pk_mempool *mp)
{
    struct mp_batch *top;

    if (!atomic_load_explicit(&mp->xfull, memory_order_relaxed))
        return NULL;
    top = atomic_exchange_explicit(&mp->xfull, NULL, memory_order_acquire);
    return top;
}

void
pk__mp_xfer_drain(struct pk_mempool *mp)
{
    if (atomic_load_explicit(&mp->xfull, memory_order_relaxed))
        pk__mp_xfer_drain_list(mp, atomic_exchange_explicit(&mp->xfull, NULL,
                                                memory_order_acquire));
}

void
pk__mp_xfer_spare_put(struct pk_mempool *mp, struct mp_batch *head)
{
    struct mp_batch *tail = head, *old;

    if (!head)
        return;
    while (tail->next)
        tail = tail->next;
    old = atomic_load_explicit(&mp->xspare, memory_order_relaxed);
    do
        tail->next = old;
    while (!atomic_compare_exchange_weak_explicit(
        &mp->xspare, &old, head, memory_order_release, memory_order_relaxed));
}

struct mp_batch *
pk__mp_xfer_spare_take(struct pk_mempool *mp)
{
    if (!atomic_load_explicit(&mp->xspare, memory_order_relaxed))
        return NULL;
    return atomic_exchange_explicit(&mp->xspare, NULL, memory_order_acquire);
}

void
pk__mp_xfer_free_list(struct mp_batch *b)
{
    while (b) {
        struct mp_batch *next = b->next;
        pk__free(b);
        b = next;
    }
}

uint64_t
pk__mp_xfer_close(struct pk_mempool *mp)
{
    struct mp_batch *b = atomic_exchange_explicit(&mp->xfull, NULL,
                                                  memory_order_acquire);
    uint64_t n = 0;

    for (struct mp_batch *x = b; x; x = x->next)
        n += x->n;
    pk__mp_xfer_free_list(b);
    pk__mp_xfer_free_list(atomic_exchange_explicit(
        &mp->xspare, NULL, memory_order_acquire));
    return n;
}
