/* lib/pool/pool_lock.c - the pool lock and whom it wakes: the work an
 * unlock does once the lock is dropped, the queue of waiters, the
 * background thread's start, kick and stop, and the events.
 *
 * Owns: p->kick/n_kick (parked waiters to kick), p->notify_head (tickets
 * to announce), the drained cv of close, p->wait_queue with its counts, and
 * the bg_* fields. Invariant: whatever is pushed on the deferred lists
 * under the lock is kicked or announced by the unlock of the same lock
 * section (pk__pool_unlock), after the lock is dropped, so no futex call
 * and no user callback runs under it. The bottom of the pool: it calls
 * nothing in lib/pool but p->ops->notify and p->ops->bg_main. */
#include "pool_int.h"

#include "../kit/alloc.h" /* pk__thread_create */

/* ---- the lock's deferred work ----------------------------------------- */

void
pk__pool_unlock_slow(struct pk_pool *p)
{
    struct pk_pool_ticket *list = p->notify_head;
    /* Read under the lock: once it is dropped, p may be freed. */
    void (*notify)(struct pk_pool_ticket *) = p->ops->notify;
    pk__parker *kick[sizeof p->kick / sizeof p->kick[0]];
    unsigned n = p->n_kick;

    p->notify_head = NULL;
    for (unsigned i = 0; i < n; i++)
        kick[i] = p->kick[i];
    p->n_kick = 0;
    /* close() waits for the last lease, create, check and destroy. */
    if (p->close_waiters && p->lent == 0 && p->retiring == 0 &&
        p->creating == 0 && p->checking == 0)
        pk__cv_broadcast(&p->drained);
    pk__lock_release(&p->lock);
    for (unsigned i = 0; i < n; i++)
        pk__park_kick(kick[i]);
    if (list)
        notify(list);
}

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

/* ---- the queue -------------------------------------------------------- */

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

/* ---- the background thread -------------------------------------------- */

int
pk__pool_bg_start_locked(struct pk_pool *p)
{
    int rc;

    if (p->bg_running || p->closed)
        return 0;
    p->bg_stop = false;
    rc = pk__thread_create(&p->bg, p->ops->bg_main, p);
    if (rc)
        return PK_ECREATE; /* no helper thread (errno rc) */
    p->bg_running = true;
    return 0;
}

void
pk__pool_bg_kick_locked(struct pk_pool *p)
{
    if (p->bg_running) {
        p->bg_kick = true;
        pk__cv_broadcast(&p->bg_cond);
    } else if (!(p->flags & PK_POOL_MANUAL_MAINTENANCE)) {
        /* Started on demand (async tickets); a failure leaves the work
         * to pk_pool_maintain and to deadlines checked by callers. */
        if (pk__pool_bg_start_locked(p) == 0)
            p->bg_kick = true;
    }
}

void
pk__pool_bg_stop(struct pk_pool *p)
{
    bool join;

    pk__lock_acquire(&p->lock);
    join = p->bg_running;
    p->bg_stop = true;
    p->bg_running = false;
    pk__cv_broadcast(&p->bg_cond);
    pk__pool_unlock(p);
    if (join)
        pthread_join(p->bg, NULL);
}

/* ---- events ----------------------------------------------------------- */

void
pk__pool_emit(struct pk_pool *p, const struct pk__ev *e)
{
    pk_event ev;

    if (!p->event)
        return;
    ev.kind = e->kind;
    ev.resource = e->res;
    ev.file = e->file;
    ev.line = e->line;
    ev.duration_ns = e->duration_ns;
    ev.error = e->err;
    p->event(p->event_user, &ev);
}

void
pk__pool_emit_simple(struct pk_pool *p, pk_event_kind kind, void *res,
                     const pk_error *err)
{
    struct pk__ev e = { kind, res, NULL, 0, 0, err };
    pk__pool_emit(p, &e);
}
