/* lib/pool/pool_wait.c - the pool's waiters: the arrival-order queue, the
 * hand-off of a resource to the longest waiter, and the loop a blocking
 * acquire waits in.
 *
 * Waiters queue in arrival order. A release hands its resource straight to
 * the head waiter (state stays LENT, the waiter's parking word goes to
 * W_HANDED), so a newcomer can never barge past a waiter: with a queue,
 * the fast path is closed to newcomers. A waiter that sees that creates
 * are wanted and allowed runs one itself and delivers the result to the
 * head of the queue, which is usually itself.
 *
 * Invariant: when the pool is not paused, idle resources and waiters never
 * coexist once the lock is dropped; whoever makes a resource idle calls
 * pk__pool_serve_waiters_locked (pk__pool_deliver_locked does). */
#include "pool_int.h"

#include <stdio.h>

/* ---- the queue -------------------------------------------------------- */

void
pk__pool_wake_waiter_locked(struct pk_pool *p, struct pk__waiter *w,
                            uint32_t v)
{
    if (!pk__park_set(&w->park, v))
        return; /* still spinning: it sees v without a syscall */
    if (p->n_kick < sizeof p->kick / sizeof p->kick[0])
        p->kick[p->n_kick++] = &w->park;
    else
        pk__park_kick(&w->park);
}

void
pk__pool_waiter_enqueue(struct pk_pool *p, struct pk__waiter *w, bool front)
{
    w->queued = true;
    if (front)
        pk__dlist_push_head(&p->wait_queue, &w->link);
    else
        pk__dlist_push_tail(&p->wait_queue, &w->link);
    p->waiters++;
    if (w->ticket)
        p->async_waiters++;
}

void
pk__pool_waiter_dequeue(struct pk_pool *p, struct pk__waiter *w)
{
    if (!w->queued)
        return;
    pk__dlist_remove(&p->wait_queue, &w->link);
    w->queued = false;
    p->waiters--;
    if (w->ticket)
        p->async_waiters--;
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
        pk__ticket_ready_locked(p, w);
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

void
pk__pool_wake_retry_locked(struct pk_pool *p)
{
    bool async = false;

    for (struct pk__dnode *n = p->wait_queue.head; n; n = n->next) {
        struct pk__waiter *w = pk__waiter_of(n);
        uint32_t v = atomic_load_explicit(&w->park.word,
                                          memory_order_relaxed);
        if (w->ticket)
            async = true;
        else if (v == 0 || v == PK__PARK_SLEEPING)
            pk__pool_wake_waiter_locked(p, w, PK__W_RETRY);
    }
    if (async)
        pk__pool_bg_kick_locked(p);
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

/* ---- the waiting acquire --------------------------------------------- */

/* The lease out longest (with a time policy; else any lease), or NULL. */
static const struct pk__slot *
oldest_lent(const struct pk_pool *p)
{
    const struct pk__slot *o = NULL;

    for (const struct pk__slot *s = p->all_slots; s; s = s->all_next)
        if (s->state == PK__S_LENT && s->file &&
            (!o || s->lent_ns < o->lent_ns))
            o = s;
    return o;
}

void
pk__pool_explain_locked(const struct pk_pool *p, pk_error *err, int code,
                        int timeout_ms)
{
    const struct pk__slot *o;
    char why[160] = "";

    if (!err)
        return;
    o = oldest_lent(p);
    if (p->paused)
        snprintf(why, sizeof why, ", the pool is paused");
    else if (p->creating)
        snprintf(why, sizeof why, ", %zu being created", p->creating);
    else if (o)
        snprintf(why, sizeof why, ", %s acquired at %s:%d",
                 p->needs_clock ? "the oldest" : "one", o->file, o->line);
    if (code == PK_EAGAIN)
        pk_error_set(err, code, 0,
                     "nothing idle, and a 0 ms timeout does not wait; "
                     "%zu of %zu lent%s",
                     p->lent, p->max_size, why);
    else
        pk_error_set(err, code, 0, "timed out after %d ms waiting; "
                     "%zu of %zu lent%s",
                     timeout_ms, p->lent, p->max_size, why);
}

/* One evaluation of a queued waiter. Returns 1 when w has a slot, a
 * negative code when it must give up, 0 to keep waiting. While creates
 * fail, w runs the next attempt itself when it is due, and gives up when
 * its deadline comes before that attempt: with its own create's error if
 * it just ran one, else with the last one replayed. */
static int
waiter_step(struct pk_pool *p, struct pk__waiter *w, uint64_t deadline,
            pk_error *err)
{
    int rc = 0;

    if (w->slot)
        return 1;
    if (!p->closed && pk__pool_creates_wanted_locked(p) > 0 &&
        pk__pool_can_create_locked(p, pk__pool_now(p))) {
        rc = pk__pool_create_one(p, w);
        if (w->slot)
            return 1;
        if (rc == PK_EAGAIN && p->group) {
            /* Queue for the group's budget; it may retire another key's
             * idle resource for us. No pool lock across group calls. */
            pk__pool_unlock(p);
            pk__group_steal(p->group, p);
            pk__lock_acquire(&p->lock);
            if (w->slot)
                return 1;
        }
    }
    if (p->closed) {
        pk__pool_waiter_dequeue(p, w);
        pk_error_set(err, PK_ESHUTDOWN, 0, "the pool was closed while "
                     "this call waited");
        return PK_ESHUTDOWN;
    }
    if (rc == PK_ENOMEM) {
        pk__pool_waiter_dequeue(p, w);
        pk_error_set(err, PK_ENOMEM, ENOMEM, "out of memory for a new "
                     "resource's slot");
        return rc;
    }
    if (!pk__pool_gives_up_locked(p, deadline))
        return 0;
    pk__pool_waiter_dequeue(p, w);
    if (rc == PK_ECREATE) {
        if (err)
            *err = p->last_err;
    } else {
        pk__pool_replay_error_locked(p, err);
    }
    return p->last_err.code;
}

int
pk__pool_acquire_wait(struct pk_pool *p, struct pk__waiter *w,
                      uint64_t deadline, pk_error *err)
{
    int rc;

    for (;;) {
        /* Cleared before the step, not after it (test_pool: max_creating):
         * the step drops the lock around a create or a group wait, and a
         * wake that comes meanwhile (close, a create slot freed, a
         * retire) must stay in the word so the park below returns at
         * once instead of sleeping to the deadline. seq_cst: pairs with
         * the group's grant (pool_group.c). */
        atomic_store(&w->park.word, 0);
        bool granted = atomic_load(&w->granted);
        rc = waiter_step(p, w, deadline, err);
        if (rc)
            return rc;
        if (pk__now_ns() >= deadline) {
            pk__pool_waiter_dequeue(p, w);
            p->st_timeouts++;
            pk__pool_explain_locked(p, err, PK_ETIMEDOUT, w->timeout_ms);
            return PK_ETIMEDOUT;
        }
        if (!granted && atomic_load(&w->granted))
            continue; /* a grant came while we looked: use it */
        /* To the deadline, or to the next create attempt while creates
         * fail: this thread makes it then, if it is still wanted. */
        uint64_t until = pk__pool_retry_at_mono_locked(p);
        if (deadline < until)
            until = deadline;
        pk__pool_unlock(p);
        uint32_t v = pk__park(&w->park, until);
        if (v == PK__W_HANDED)
            return PK__GOT_UNLOCKED; /* slot set before the word */
        pk__lock_acquire(&p->lock);
    }
}
