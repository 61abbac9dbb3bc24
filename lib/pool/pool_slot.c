/* lib/pool/pool_slot.c - the population: slots and their states (the
 * diagram is in pool_int.h), the idle list, the hand-off of a slot to the
 * longest waiter, retiring, and freeing the pool's memory.
 *
 * Owns: p->all_slots, p->free_slots, p->idle_list and the counts alive,
 * idle, lent, creating, checking, retiring. Invariant: when the pool is
 * not paused, idle resources and waiters never coexist once the lock is
 * dropped; whoever makes a resource idle goes through
 * pk__pool_deliver_locked or pk__pool_serve_waiters_locked. */
#include "pool_int.h"

#include "../kit/alloc.h"

/* ---- slots ------------------------------------------------------------ */

/* For the group's choice of a victim (pool_group.c). */
void
pk__pool_idle_hints_locked(struct pk_pool *p)
{
    struct pk__slot *oldest = pk__slot_of(p->idle_list.tail);

    atomic_store_explicit(&p->idle_hint, p->idle, memory_order_relaxed);
    atomic_store_explicit(&p->oldest_idle_hint,
                          oldest ? oldest->idle_since_ns : UINT64_MAX,
                          memory_order_relaxed);
}

struct pk__slot *
pk__pool_slot_get(struct pk_pool *p)
{
    struct pk__slot *s = pk__slot_of(pk__dlist_pop_head(&p->free_slots));

    if (s)
        return s;
    s = pk__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->all_next = p->all_slots;
    p->all_slots = s;
    return s;
}

void
pk__pool_slot_put(struct pk_pool *p, struct pk__slot *s)
{
    s->state = PK__S_FREE;
    s->res = NULL;
    s->ticket++; /* any lease still naming this slot is now stale */
    pk__dlist_push_head(&p->free_slots, &s->link);
}

/* Lends s to the holder of a lease being filled now. */
void
pk__pool_slot_lend(struct pk_pool *p, struct pk__slot *s, uint64_t now,
                   const char *file, int line)
{
    s->state = PK__S_LENT;
    s->ticket++;
    s->uses++;
    if (p->needs_clock) { /* else these stay 0 (pk_pool.needs_clock) */
        s->idle_ns = now > s->idle_since_ns ? now - s->idle_since_ns : 0;
        s->lent_ns = now;
        s->held_reported = false;
    }
    s->file = file;
    s->line = line;
    p->lent++;
    p->st_acquires++;
}

bool
pk__pool_slot_needs_check(const struct pk_pool *p,
                          const struct pk__slot *s, uint64_t now)
{
    if (s->generation < p->generation)
        return true;
    if (!p->check || p->check_after_ns == UINT64_MAX)
        return false;
    return now - s->idle_since_ns >= p->check_after_ns;
}

/* ---- hand-off --------------------------------------------------------- */

/* Hands s (already counted as lent) to waiter w, which leaves the queue. */
static void
hand_to(struct pk_pool *p, struct pk__waiter *w, struct pk__slot *s,
        uint64_t now)
{
    bool check = pk__pool_slot_needs_check(p, s, now);

    pk__pool_waiter_dequeue(p, w);
    p->lent--; /* pk__pool_slot_lend counts it again */
    pk__pool_slot_lend(p, s, now, w->file, w->line);
    w->slot = s;
    w->needs_check = check;
    if (w->ticket)
        p->ops->ticket_ready_locked(p, w);
    else
        pk__pool_wake_waiter_locked(p, w, PK__W_HANDED);
}

void
pk__pool_serve_waiters_locked(struct pk_pool *p)
{
    uint64_t now;

    if (p->paused || !p->wait_queue.head || !p->idle_list.head)
        return;
    now = p->needs_clock ? pk__pool_now(p) : 0;
    while (p->wait_queue.head && p->idle_list.head) {
        struct pk__slot *s = pk__pool_idle_pop_locked(p);
        p->lent++;
        hand_to(p, pk__waiter_of(p->wait_queue.head), s, now);
    }
}

/* Gives a slot that stopped being lent (release OK, create, check passed)
 * to the longest waiter, or makes it idle. */
void
pk__pool_deliver_locked(struct pk_pool *p, struct pk__slot *s,
                        uint64_t now)
{
    s->idle_since_ns = now;
    if (p->wait_queue.head && !p->paused) {
        p->lent++;
        hand_to(p, pk__waiter_of(p->wait_queue.head), s, now);
        return;
    }
    pk__pool_idle_push_locked(p, s);
}

void
pk__pool_deliver_made_locked(struct pk_pool *p, struct pk__slot *s,
                             uint64_t now, struct pk__waiter *self)
{
    if (!self || !self->keeps_own || !self->queued || self->slot ||
        p->paused) {
        pk__pool_deliver_locked(p, s, now);
        return;
    }
    /* Each waiter still takes one resource, so the count of creates the
     * queue needs holds; only the order changes (pool_wait.c). */
    s->idle_since_ns = now;
    p->lent++;
    hand_to(p, self, s, now);
}

/* ---- retiring --------------------------------------------------------- */

/* Removes s from the population; the caller destroys it with
 * pk__pool_finish_retire after dropping the lock. */
void
pk__pool_unlink_retire_locked(struct pk_pool *p, struct pk__slot *s)
{
    if (s->state == PK__S_IDLE)
        pk__pool_idle_remove_locked(p, s);
    else if (s->state == PK__S_LENT)
        p->lent--;
    else if (s->state == PK__S_CHECKING)
        p->checking--;
    s->state = PK__S_RETIRING;
    p->alive--;
    p->retiring++;
}

bool
pk__pool_may_free_locked(struct pk_pool *p)
{
    return p->destroyed && p->lent == 0 && p->retiring == 0 &&
           p->creating == 0 && p->checking == 0;
}

bool
pk__pool_finish_retire(struct pk_pool *p, struct pk__slot *s)
{
    void *res = s->res;
    bool free_now;

    if (p->destroy)
        p->destroy(p->user, res);
    if (p->group)
        pk__group_put(p->group);
    /* Emitted while the slot still counts as retiring, so the pool cannot
     * be freed (and user_free run) under the event hook, nor p read after
     * a racing pk_pool_destroy freed it (test_pool_faults). */
    pk__pool_emit_simple(p, PK_EVENT_DESTROYED, res, NULL);
    pk__lock_acquire(&p->lock);
    pk__pool_slot_put(p, s);
    p->retiring--;
    p->st_destroyed++;
    pk__pool_wake_retry_locked(p);
    free_now = pk__pool_may_free_locked(p);
    pk__pool_unlock(p);
    if (free_now)
        pk__pool_free(p);
    return free_now;
}

/* The group's steal (pk__group_steal): retires victim's longest-idle
 * resource; its unit goes to the head of the group queue through
 * pk__pool_finish_retire -> pk__group_put. Never below the victim's
 * min_size, the floor pool.h promises (before, a steal trimmed it, and the
 * member made it again at once: a ping-pong). Returns false if there was
 * nothing it may give. */
bool
pk__pool_retire_oldest_idle(struct pk_pool *victim)
{
    struct pk__slot *s;

    pk__lock_acquire(&victim->lock);
    s = pk__slot_of(victim->idle_list.tail);
    if (s && victim->alive <= victim->min_size)
        s = NULL;
    if (s)
        pk__pool_unlink_retire_locked(victim, s);
    pk__pool_unlock(victim);
    if (s)
        pk__pool_finish_retire(victim, s);
    return s != NULL;
}

/* Frees the handle's memory. The last lease, the last destroy hook and
 * pk_pool_destroy race to get here; only the one that sees
 * pk__pool_may_free_locked() true (under the lock) calls it. */
void
pk__pool_free_memory(struct pk_pool *p)
{
    for (struct pk__slot *s = p->all_slots; s;) {
        struct pk__slot *n = s->all_next;
        pk__free(s);
        s = n;
    }
    p->magic = 0;
    pk__free(p);
}

void
pk__pool_free(struct pk_pool *p)
{
    if (p->user_free)
        p->user_free(p->user);
    pk__pool_free_memory(p);
}
