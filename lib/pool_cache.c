/* lib/pool_cache.c - the release cache: lending without the pool's lock.
 *
 * With one lock, two threads that acquire and release in a loop spend
 * their time moving the lock's cache line between their cores. So a pool
 * that may take its hot path (p->hot: no policy reads the clock, no reset
 * hook, no use limit, no group) and lends in LIFO order lets a release
 * park its slot instead of taking the lock, and the same thread's next
 * acquire take it back: one CAS each, on the slot's own ticket word, which
 * no other thread touches while each thread keeps to its slots.
 *
 * Parking is a state of the ticket word (pool_int.h): a release turns
 * "lent under lease t" into "next counter, PARKED" with one CAS, which ends
 * the lease (a second release of it fails) and offers the slot; an
 * acquire turns "PARKED" into the next lease with one CAS. A parked slot
 * stays LENT and counted in p->lent: the cache is one more borrower.
 * Whoever moves it out of PARKED owns it. To find its slot again, a
 * thread leaves a hint in its stripe (one pointer per cache line, a power
 * of two >= 2 x CPUs of them, chosen by a thread-local index).
 *
 * The gate. Parking must stop whenever someone needs the true population:
 * a waiter (arrival-order hand-off: no resource may sit parked while
 * someone waits for one), close, pause, a shrink below the population.
 * The gate is in the same word as the parking: a release may park only a
 * slot whose NOPARK flag is clear, checked by its CAS. Closing sets NOPARK
 * on every slot that has it clear and takes those that were parked, one
 * CAS each; a release racing it either parked first (the close takes the
 * slot) or fails its CAS and goes through the lock. So there is no window
 * where a slot gets parked after the close looked, and no fence is needed.
 * And a release that parked is done: it never reads the pool again, so a
 * racing close + destroy that takes its slot may free the pool at once.
 * Which slots have NOPARK clear is decided under the lock only, when a
 * slot is lent there (while the cache is open), and kept in p->cset, at
 * most cset.cap of them: closing touches those alone, not the whole
 * population.
 *
 * Order: a thread gets back the slot it released last (the warmest, which
 * is what LIFO is for). When its stripe's hint is still parked, a release
 * goes under the lock and parks the new slot in its place, moving the
 * older one to the idle list, so a thread's own releases still come back
 * most recent first. Across threads the order is per thread first. FIFO
 * pools have no cache.
 *
 * Generations: a slot parks only if it is of the current generation, and
 * the acquirer checks again (a bump may come while it is parked); a stale
 * one goes back through the locked release, which retires or idles it.
 *
 * Stats: lends from the cache are counted on the slot (cache_lends, only
 * its owner writes it) and summed by pk_pool_stats_get, which first
 * flushes, so idle and lent are exact. */
#include "pool_cache.h"

#include <assert.h>
#include <stdint.h>
#include <unistd.h>

#include "alloc.h"

_Thread_local unsigned pk__cache_home PK__TLS;
_Thread_local struct pk__slot *pk__cache_last PK__TLS;

#define PK__CACHE_MAX_STRIPES 64u
#define PK__HOME_SET 0x80000000u

/* Spreads threads over stripes from the address of their own thread-local
 * storage (distinct per live thread) through a Fibonacci hash: no global
 * counter to bump. Collisions are moved apart by pk__cache_park_locked. */
unsigned
pk__cache_home_init(void)
{
    uint64_t a = (uint64_t)(uintptr_t)&pk__cache_home;
    uint64_t h = (a >> 6) * UINT64_C(0x9e3779b97f4a7c15);

    pk__cache_home = (unsigned)(h >> 40) | PK__HOME_SET;
    return pk__cache_home;
}

static bool
could_be_hot(const struct pk_pool *p)
{
    /* The parts of p->hot that never change after create. */
    return !p->needs_clock && !p->reset && !p->max_uses && !p->group &&
           p->order == PK_POOL_LIFO;
}

int
pk__cache_init(struct pk_pool *p)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = 4;
    size_t stripes;
    uintptr_t a;

    atomic_init(&p->cache.gen, p->generation);
    if (!could_be_hot(p))
        return 0;
    while (n < PK__CACHE_MAX_STRIPES && (long)n < 2 * ncpu)
        n <<= 1;
    /* One line more than needed, to align the first stripe; the set
     * after the stripes. */
    stripes = (n + 1) * sizeof(struct pk__stripe);
    p->cset.cap = 2 * n;
    p->cache.mem = pk__alloc(stripes +
                             p->cset.cap * sizeof(struct pk__slot *));
    if (!p->cache.mem)
        return PK_ENOMEM;
    a = ((uintptr_t)p->cache.mem + PK__CACHE_LINE - 1) &
        ~(uintptr_t)(PK__CACHE_LINE - 1);
    p->cache.stripe = (struct pk__stripe *)a;
    p->cset.set = (struct pk__slot **)((char *)p->cache.mem + stripes);
    p->cset.n = 0;
    p->cache.mask = n - 1;
    for (unsigned i = 0; i < n; i++)
        atomic_init(&p->cache.stripe[i].hint, NULL);
    p->cset.open = false;
    return 0;
}

void
pk__cache_fini(struct pk_pool *p)
{
    pk__free(p->cache.mem);
    p->cache.mem = NULL;
    p->cache.stripe = NULL;
}

/* ---- the set of slots a release may park ------------------------------- */

static void
set_remove(struct pk_pool *p, struct pk__slot *s)
{
    struct pk__cache_set *c = &p->cset;
    struct pk__slot *last = c->set[--c->n];

    c->set[s->in_set - 1] = last;
    last->in_set = s->in_set;
    s->in_set = 0;
}

/* Sets NOPARK on s's word (racing a release's CAS, hence the loop).
 * Returns true if s was parked: the caller owns it now. */
static bool
set_nopark(struct pk__slot *s)
{
    uint64_t w = atomic_load_explicit(&s->ticket, memory_order_relaxed);
    uint64_t n;

    do {
        n = (w | PK__T_NOPARK) & ~(uint64_t)PK__T_PARKED;
    } while (!atomic_compare_exchange_weak_explicit(
        &s->ticket, &w, n, memory_order_acquire, memory_order_relaxed));
    /* Acquire pairs with the parking CAS: the slot's fields are seen. */
    return w & PK__T_PARKED;
}

/* Takes s if it is parked, leaving it out of reach of releases (NOPARK):
 * true if the caller owns it now. */
static bool
take_parked(struct pk__slot *s)
{
    uint64_t w = atomic_load_explicit(&s->ticket, memory_order_relaxed);

    while ((w & PK__T_FLAGS) == PK__T_PARKED) {
        /* Acquire pairs with the parking CAS: the slot's fields. */
        if (atomic_compare_exchange_weak_explicit(
                &s->ticket, &w, pk__ticket_lease(w) | PK__T_NOPARK,
                memory_order_acquire, memory_order_relaxed))
            return true;
    }
    return false; /* lent (taken back by a thread meanwhile) */
}

/* Takes a parked s out of the cache's hands into the idle list. */
static void
unpark_locked(struct pk_pool *p, struct pk__slot *s)
{
    p->lent--;
    pk__pool_idle_push_locked(p, s);
}

uint64_t
pk__cache_lend_locked(struct pk_pool *p, struct pk__slot *s)
{
    struct pk__cache_set *c = &p->cset;
    uint64_t t = pk__ticket_lease(atomic_load_explicit(
                     &s->ticket, memory_order_relaxed)) + PK__T_STEP;
    uint64_t flags = PK__T_NOPARK;

    /* Slots reach the idle list or a waiter only after leaving the set. */
    assert(!s->in_set);
    if (c->open && c->n < c->cap && s->generation == p->generation) {
        c->set[c->n++] = s;
        s->in_set = c->n;
        flags = 0;
    }
    /* A store: nobody else may change the word of a slot being lent (a
     * stale lease's CAS expects another value). */
    atomic_store_explicit(&s->ticket, t | flags, memory_order_relaxed);
    return t;
}

void
pk__cache_forget_locked(struct pk_pool *p, struct pk__slot *s)
{
    if (!s->in_set)
        return;
    set_nopark(s);
    set_remove(p, s);
}

/* ---- the gate ---------------------------------------------------------- */

/* NOPARK on every slot of the set, which empties; the parked ones go to
 * the idle list. Waiters are served. */
static void
close_locked(struct pk_pool *p)
{
    struct pk__cache_set *c = &p->cset;
    size_t n = 0;

    for (unsigned i = 0; i < c->n; i++) {
        struct pk__slot *s = c->set[i];
        s->in_set = 0;
        if (set_nopark(s)) {
            unpark_locked(p, s);
            n++;
        }
    }
    c->n = 0;
    if (n)
        pk__pool_serve_waiters_locked(p);
}

void
pk__cache_close_set_locked(struct pk_pool *p)
{
    if (p->cache.stripe)
        close_locked(p);
}

void
pk__cache_update_locked(struct pk_pool *p)
{
    bool open;

    if (!p->cache.stripe)
        return;
    open = p->hot && !p->wait_queue.head && p->alive <= p->max_size;
    if (open == p->cset.open)
        return;
    p->cset.open = open;
    /* Opening changes no slot: those lent from now on may join the set. */
    if (!open)
        close_locked(p);
}

size_t
pk__cache_flush_locked(struct pk_pool *p)
{
    struct pk__cache_set *c = &p->cset;
    size_t n = 0;

    /* Backwards: set_remove moves the last entry into the hole. Lent
     * slots stay in the set, their lines untouched. */
    for (unsigned i = c->n; i-- > 0;) {
        struct pk__slot *s = c->set[i];
        if (take_parked(s)) {
            set_remove(p, s);
            unpark_locked(p, s);
            n++;
        }
    }
    if (n)
        pk__pool_serve_waiters_locked(p);
    return n;
}

/* ---- parking under the lock -------------------------------------------- */

/* Moves the slot parked in st (if any) to the idle list. Another thread's
 * slot there means two threads share the stripe: move on, so the two stop
 * taking each other's. */
static void
evict_hint_locked(struct pk_pool *p, struct pk__stripe *st, struct pk__slot *s)
{
    struct pk__slot *h = atomic_load_explicit(&st->hint,
                                              memory_order_acquire);

    if (!h || h == s || !h->in_set || !take_parked(h))
        return;
    if (h != pk__cache_last)
        pk__cache_home = (pk__cache_home + 1) | PK__HOME_SET;
    set_remove(p, h);
    unpark_locked(p, h);
}

bool
pk__cache_park_locked(struct pk_pool *p, struct pk__slot *s)
{
    struct pk__cache_set *c = &p->cset;
    struct pk__stripe *st;
    uint64_t w;

    if (!c->open || s->generation != p->generation)
        return false;
    if (!s->in_set) {
        if (c->n == c->cap)
            return false;
        c->set[c->n++] = s;
        s->in_set = c->n;
    }
    st = pk__cache_stripe(p);
    evict_hint_locked(p, st, s);
    /* s is ours (its lease ended) and the cache cannot close before we
     * unlock: a store parks it. Release: its fields reach the taker. */
    w = atomic_load_explicit(&s->ticket, memory_order_relaxed);
    atomic_store_explicit(&s->ticket, pk__ticket_lease(w) | PK__T_PARKED,
                          memory_order_release);
    atomic_store_explicit(&st->hint, s, memory_order_release);
    pk__cache_last = s;
    return true;
}

uint64_t
pk__cache_lends_locked(struct pk_pool *p)
{
    uint64_t n = 0;

    if (!p->cache.stripe)
        return 0;
    for (struct pk__slot *s = p->all_slots; s; s = s->all_next)
        n += atomic_load_explicit(&s->cache_lends, memory_order_relaxed);
    return n;
}
