/* lib/pool/pool_group.c - several keyed pools drawing on one budget.
 *
 * The budget is an atomic count (`used` of `max_total`), taken by a
 * member's create and given back when the resource is retired or
 * detached. Waiters that need a create while the budget is spent queue in
 * the group in arrival order, across keys; a unit given back goes to the
 * head of that queue (granted), never back to the free budget while
 * someone waits, and newcomers cannot take a unit while the queue is not
 * empty. To make a unit, a queued waiter's arrival retires the
 * longest-idle resource of another member.
 *
 * Locks: the group lock ranks after the pool lock (lib/kit/sync.h): a pool
 * may call in with its lock held, and the group drops its lock before it
 * locks a member to take an idle resource from it. A grant
 * wakes a waiter through its parking word: the grant sets `granted`, then
 * the word, both seq_cst; the waiter clears the word, then reads
 * `granted` before it parks (see acquire_wait), so no grant is lost. A
 * member is not destroyed while the group is looking at it (`busy`).
 *
 * The bottom of the pool's files: it calls none of the others. The steal
 * retires a member's resource through the function its caller passes
 * (pk__pool_retire_oldest_idle, pool_slot.c). */
#include "pool_int.h"

#include "../kit/alloc.h"

struct pk_pool_group {
    pk__lock lock;                 /* PK__RANK_GROUP */
    pk__cv idle_cond;              /* busy reached 0 */
    size_t max_total;
    _Atomic size_t used;           /* units taken */
    _Atomic size_t queued;         /* waiters in the queue */
    struct pk_pool *members;
    struct pk__dlist queue;        /* of pk__waiter.glink, arrival order */
    size_t busy;                   /* steals in progress */
    uint64_t steal_round;          /* numbers steals (pool.steal_skip) */
    unsigned fork_epoch;           /* immutable */
};

int
pk_pool_group_create(pk_pool_group **out, size_t max_total)
{
    struct pk_pool_group *g;

    if (!out || max_total == 0)
        return PK_EINVAL;
    *out = NULL;
    g = pk__calloc(1, sizeof *g);
    if (!g)
        return PK_ENOMEM;
    pk__lock_init(&g->lock, PK__RANK_GROUP);
    g->max_total = max_total;
    g->fork_epoch = pk__fork_epoch();
    *out = g;
    return 0;
}

static bool
group_forked(const struct pk_pool_group *g)
{
    return g->fork_epoch != pk__fork_epoch_fast();
}

int
pk_pool_group_usage(pk_pool_group *g, size_t *used, size_t *max_total)
{
    if (!g || !used || !max_total)
        return PK_EINVAL;
    if (group_forked(g))
        return PK_EFORKED;
    *used = atomic_load(&g->used);
    *max_total = g->max_total;
    return 0;
}

void
pk_pool_group_destroy(pk_pool_group *g)
{
    if (!g)
        return;
    if (group_forked(g)) {
        /* In a child: the lock may be held by a parent's thread that does
         * not exist here. Memory only. */
        pk__free(g);
        return;
    }
    pk__free(g);
}

bool
pk__group_try_take(struct pk_pool_group *g)
{
    size_t u = atomic_load(&g->used);

    if (atomic_load(&g->queued) > 0)
        return false; /* no barging past queued waiters */
    while (u < g->max_total) {
        if (atomic_compare_exchange_weak(&g->used, &u, u + 1))
            return true;
    }
    return false;
}

bool
pk__group_take_or_queue(struct pk_pool_group *g, struct pk_pool *p,
                        struct pk__waiter *w)
{
    size_t u;

    pk__lock_acquire(&g->lock);
    /* Under the group lock, a unit given back (pk__group_put) either went
     * to the budget before this look, and is taken here, or finds w queued
     * after it and is granted to w. With pk__group_try_take followed by a
     * later pk__group_wait, a unit given back between the two went to the
     * budget while w parked with nobody to grant it one, until its
     * deadline (test_pool_group: lost wakeup). Queueing here, under the
     * caller's pool lock, also puts w in the group queue in the order it
     * became a visible waiter of its pool. */
    if (!g->queue.head) {
        u = atomic_load(&g->used);
        while (u < g->max_total) {
            if (atomic_compare_exchange_weak(&g->used, &u, u + 1)) {
                pk__lock_release(&g->lock);
                return true;
            }
        }
    }
    if (!w->gqueued && !atomic_load(&w->granted)) {
        w->gpool = p;
        pk__dlist_push_tail(&g->queue, &w->glink);
        w->gqueued = true;
        atomic_fetch_add(&g->queued, 1);
    }
    pk__lock_release(&g->lock);
    return false;
}

bool
pk__group_has_waiters(struct pk_pool_group *g)
{
    return atomic_load(&g->queued) > 0;
}

static void
unqueue_locked(struct pk_pool_group *g, struct pk__waiter *w)
{
    pk__dlist_remove(&g->queue, &w->glink);
    w->gqueued = false;
    atomic_fetch_sub(&g->queued, 1);
}

void
pk__group_put(struct pk_pool_group *g)
{
    struct pk__waiter *w;

    pk__lock_acquire(&g->lock);
    if (!g->queue.head) {
        atomic_fetch_sub(&g->used, 1);
        pk__lock_release(&g->lock);
        return;
    }
    w = PK__CONTAINER(g->queue.head, struct pk__waiter, glink);
    unqueue_locked(g, w);
    /* The unit moves to w without passing through the budget. The word
     * is set under the group lock (w cannot leave the queue meanwhile);
     * the futex kick after it touches only the address. */
    atomic_store(&w->granted, true);
    if (w->ticket) {
        /* A ticket's creates run on its pool's background thread. Woken
         * under the group lock: the ticket leaves the queue (and its pool
         * closes) only under it. The cv needs no pool lock; the flag
         * keeps the wake for a thread not waiting yet (pk__pool_bg_main). */
        atomic_store(&w->gpool->bg_granted, true);
        pk__cv_broadcast(&w->gpool->bg_cond);
        pk__lock_release(&g->lock);
        return;
    }
    bool kick = pk__park_set(&w->park, PK__W_RETRY);
    pk__lock_release(&g->lock);
    if (kick)
        pk__park_kick(&w->park);
}

/* Picks the member (other than p, and other than those that refused
 * this round) whose longest-idle resource has been idle longest. Group
 * lock held. */
static struct pk_pool *
pick_victim_locked(struct pk_pool_group *g, struct pk_pool *p,
                   uint64_t round)
{
    struct pk_pool *best = NULL;
    uint64_t oldest = UINT64_MAX;

    for (struct pk_pool *m = g->members; m; m = m->group_next) {
        uint64_t t;
        if (m == p || m->steal_skip == round ||
            atomic_load_explicit(&m->idle_hint, memory_order_relaxed) == 0)
            continue;
        t = atomic_load_explicit(&m->oldest_idle_hint, memory_order_relaxed);
        if (t <= oldest) {
            oldest = t;
            best = m;
        }
    }
    return best;
}

void
pk__group_steal(struct pk_pool_group *g, struct pk_pool *p,
                bool (*retire_idle)(struct pk_pool *victim))
{
    struct pk_pool *victim;
    uint64_t round;
    bool done = false;

    pk__lock_acquire(&g->lock);
    round = ++g->steal_round;
    while (!done) {
        victim = pick_victim_locked(g, p, round);
        if (!victim)
            break;
        g->busy++;
        pk__lock_release(&g->lock);
        done = retire_idle(victim);
        pk__lock_acquire(&g->lock);
        /* Still a member's memory: its pk__group_leave waits for busy. */
        victim->steal_skip = round;
        if (--g->busy == 0)
            pk__cv_broadcast(&g->idle_cond);
    }
    pk__lock_release(&g->lock);
}

void
pk__group_leave_wait(struct pk_pool_group *g, struct pk__waiter *w)
{
    bool give_back;

    pk__lock_acquire(&g->lock);
    if (w->gqueued)
        unqueue_locked(g, w);
    give_back = atomic_exchange(&w->granted, false);
    pk__lock_release(&g->lock);
    if (give_back)
        pk__group_put(g);
}

int
pk__group_join(struct pk_pool_group *g, struct pk_pool *p)
{
    pk__lock_acquire(&g->lock);
    p->group_next = g->members;
    g->members = p;
    pk__lock_release(&g->lock);
    return 0;
}

void
pk__group_leave(struct pk_pool_group *g, struct pk_pool *p)
{
    pk__lock_acquire(&g->lock);
    for (struct pk_pool **pp = &g->members; *pp; pp = &(*pp)->group_next) {
        if (*pp == p) {
            *pp = p->group_next;
            break;
        }
    }
    while (g->busy)
        pk__cv_wait_until(&g->idle_cond, &g->lock, UINT64_MAX);
    pk__lock_release(&g->lock);
}
