/* lib/pool/pool_wait.c - the loop a blocking acquire waits in, and the
 * message a caller that got nothing reads.
 *
 * Owns nothing but the waiter on the caller's stack. Waiters queue in
 * arrival order (pool_lock.c). A release hands its resource straight to
 * the head waiter (pool_slot.c: the state stays LENT, the waiter's parking
 * word goes to W_HANDED), so a newcomer can never barge past a waiter:
 * with a queue, the fast path is closed to newcomers. A waiter that sees
 * that creates are wanted and allowed runs one itself (pool_create.c) and
 * the result goes to the head of the queue, which is usually itself.
 * pk_pool_acquire_or_create's waiter (keeps_own) runs a create of its own
 * whenever one may start and keeps what it makes; it never waits for a
 * release: it parks only while a create is under way (whose end frees a
 * place under max_creating, or brings it a resource), and leaves with
 * PK_EAGAIN when nothing but a release could serve it.
 * Invariant: a waiter leaves this loop with a slot, or dequeued with an
 * error. */
#include "pool_int.h"

#include <stdio.h>

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

/* ", the pool is paused", ", 2 being created", ", the oldest acquired at
 * app.c:89", or nothing. */
static void
why_locked(const struct pk_pool *p, char *why, size_t n)
{
    const struct pk__slot *o = oldest_lent(p);

    why[0] = '\0';
    if (p->paused)
        snprintf(why, n, ", the pool is paused");
    else if (p->creating)
        snprintf(why, n, ", %zu being created", p->creating);
    else if (o)
        snprintf(why, n, ", %s acquired at %s:%d",
                 p->needs_clock ? "the oldest" : "one", o->file, o->line);
}

void
pk__pool_explain_locked(const struct pk_pool *p, pk_error *err, int code,
                        int timeout_ms)
{
    char why[160];

    if (!err)
        return;
    why_locked(p, why, sizeof why);
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

void
pk__pool_explain_own_locked(const struct pk_pool *p, pk_error *err)
{
    char why[160];

    if (!err)
        return;
    why_locked(p, why, sizeof why);
    pk_error_set(err, PK_EAGAIN, 0, "nothing idle and none to be made now, "
                 "and pk_pool_acquire_or_create does not wait for a "
                 "release; %zu of %zu lent%s", p->lent, p->max_size, why);
}

/* One evaluation of a queued waiter. Returns 1 when w has a slot, a
 * negative code when it must give up, 0 to keep waiting. While creates
 * fail, w runs the next attempt itself when it is due, and gives up when
 * its deadline comes before that attempt: with its own create's error if
 * it just ran one, else with the last one replayed. A waiter that
 * keeps_own makes its own whatever the queue needs, and gives up with
 * its create's error even while another create runs. */
static int
waiter_step(struct pk_pool *p, struct pk__waiter *w, uint64_t deadline,
            pk_error *err)
{
    int rc = 0;

    if (w->slot)
        return 1;
    if (!p->closed &&
        (w->keeps_own || pk__pool_creates_wanted_locked(p) > 0) &&
        pk__pool_can_create_locked(p, pk__pool_now(p))) {
        rc = pk__pool_create_one(p, w);
        if (w->slot)
            return 1;
        if (rc == PK_EAGAIN && p->group) {
            /* Queue for the group's budget; it may retire another key's
             * idle resource for us. No pool lock across group calls. */
            pk__pool_unlock(p);
            pk__group_steal(p->group, p, pk__pool_retire_oldest_idle);
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
    if (!(rc == PK_ECREATE && w->keeps_own) &&
        !pk__pool_gives_up_locked(p, deadline))
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

/* After a step that left w (keeps_own) without a slot: true if a create
 * under way may still serve it (its end frees a place under
 * max_creating, or hands it a resource); false if only a release could,
 * and w gives up (PK_EAGAIN, err filled, dequeued). */
static bool
own_may_wait(struct pk_pool *p, struct pk__waiter *w, pk_error *err)
{
    if (p->creating && pk__pool_has_room_locked(p))
        return true;
    pk__pool_waiter_dequeue(p, w);
    pk__pool_explain_own_locked(p, err);
    return false;
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
        if (w->keeps_own) {
            /* A group unit granted during the step (its steal retired
             * another key's idle resource for w) pays for a create now. */
            if (!granted && atomic_load(&w->granted))
                continue;
            if (!own_may_wait(p, w, err))
                return PK_EAGAIN;
            pk__pool_unlock(p);
            if (pk__park(&w->park, UINT64_MAX) == PK__W_HANDED)
                return PK__GOT_UNLOCKED; /* slot set before the word */
            pk__lock_acquire(&p->lock);
            continue;
        }
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
