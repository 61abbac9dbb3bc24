/* lib/pool/pool_maint.c - keeping the population in shape: maintenance
 * passes, the background thread's body, resize, pause/resume, evict-all,
 * close.
 *
 * A maintenance pass collects work under the lock (slots to retire, slots
 * to check, leases held too long), then runs every hook with the lock
 * dropped, then tops the pool up one create at a time. The background
 * thread runs a pass every maintain_interval, or sooner when kicked (an
 * acquire took the last idle resource below min_idle, an async ticket
 * needs a create or has a deadline).
 *
 * Owns the sizes and switches the public calls here change (min_size,
 * min_idle, max_size, paused, closed, evict_gen). Invariant: no hook runs
 * with the lock held; a pass takes at most PK__MAINT_BATCH slots of each
 * kind, the rest wait for the next pass. Close reports the leases still
 * out the same way: collected under the lock, reported after it. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "pool_int.h"

#include <stdio.h>

#include "../kit/alloc.h"
#include "../kit/log.h"

/* How many slots one pass handles in each list; the rest wait for the
 * next pass. Keeps the pass's stack bounded. */
#define PK__MAINT_BATCH 64

struct maint_work {
    struct pk__slot *retire[PK__MAINT_BATCH];
    size_t n_retire;
    struct pk__slot *check[PK__MAINT_BATCH];
    size_t n_check;
    struct pk__ev held[PK__MAINT_BATCH];
    size_t n_held;
};

static bool
idle_surplus(const struct pk_pool *p)
{
    return p->alive > p->min_size && p->idle > p->min_idle;
}

static bool
idle_expired(const struct pk_pool *p, const struct pk__slot *s, uint64_t now)
{
    if (s->generation < p->evict_gen || p->alive > p->max_size)
        return true;
    if (p->max_lifetime_ns != UINT64_MAX && now >= s->expires_ns)
        return true;
    return p->idle_timeout_ns != UINT64_MAX && idle_surplus(p) &&
           now - s->idle_since_ns >= p->idle_timeout_ns;
}

static bool
idle_check_due(const struct pk_pool *p, const struct pk__slot *s,
               uint64_t now)
{
    if (!p->check)
        return false;
    if (s->generation < p->generation)
        return true;
    return p->check_interval_ns != UINT64_MAX &&
           now - s->checked_ns >= p->check_interval_ns;
}

/* Walks idle slots from the longest idle (the tail). */
static void
collect_idle_locked(struct pk_pool *p, struct maint_work *mw, uint64_t now)
{
    for (struct pk__dnode *n = p->idle_list.tail, *prev; n; n = prev) {
        struct pk__slot *s = pk__slot_of(n);
        prev = n->prev; /* taking s off the list clears n->prev */
        if (mw->n_retire < PK__MAINT_BATCH && idle_expired(p, s, now)) {
            pk__pool_unlink_retire_locked(p, s);
            mw->retire[mw->n_retire++] = s;
        } else if (mw->n_check < PK__MAINT_BATCH &&
                   idle_check_due(p, s, now)) {
            pk__pool_idle_remove_locked(p, s);
            s->state = PK__S_CHECKING;
            p->checking++;
            mw->check[mw->n_check++] = s;
        }
    }
}

static void
collect_held_locked(struct pk_pool *p, struct maint_work *mw, uint64_t now)
{
    if (p->held_ns == UINT64_MAX)
        return;
    for (struct pk__slot *s = p->all_slots; s; s = s->all_next) {
        if (mw->n_held == PK__MAINT_BATCH)
            break;
        if (s->state != PK__S_LENT || s->held_reported ||
            now - s->lent_ns < p->held_ns)
            continue;
        s->held_reported = true;
        mw->held[mw->n_held++] = (struct pk__ev){
            PK_EVENT_HELD_TOO_LONG, s->res, s->file, s->line,
            now - s->lent_ns, NULL
        };
    }
}

static void
run_check(struct pk_pool *p, struct pk__slot *s, uint64_t now)
{
    pk_error e;
    int rc;

    pk_error_clear(&e);
    rc = p->check(p->user, s->res, &e);
    pk__lock_acquire(&p->lock);
    p->checking--;
    s->checked_ns = now;
    /* Healthy but evicted (evict_all or close ran during the check:
     * test_pool): retire it rather than make it idle in the new
     * generation, where it was lent again after evict_all and, after a
     * close, sat idle in the closed pool until pk_pool_destroy. */
    if (rc == 0 && s->generation < p->evict_gen) {
        p->checking++; /* unlink_retire counts it down */
        pk__pool_unlink_retire_locked(p, s);
        pk__pool_unlock(p);
        pk__pool_finish_retire(p, s);
        return;
    }
    if (rc == 0) {
        s->generation = p->generation;
        s->idle_since_ns = now;
        s->state = PK__S_IDLE; /* keeps its idle age: it was not used */
        pk__pool_idle_push_locked(p, s);
        pk__pool_serve_waiters_locked(p);
        pk__pool_unlock(p);
        return;
    }
    p->st_check_failures++;
    if (!(p->flags & PK_POOL_NO_GENERATION_BUMP) &&
        s->generation == p->generation)
        p->generation++;
    p->checking++; /* unlink_retire counts it down */
    pk__pool_unlink_retire_locked(p, s);
    pk__pool_unlock(p);
    {
        struct pk__ev ev = { PK_EVENT_CHECK_FAILED, s->res, NULL, 0, 0, &e };
        pk__pool_emit(p, &ev);
    }
    pk__pool_finish_retire(p, s);
}

/* The oldest async waiter: maintenance creates on its behalf, so that in
 * a group it queues for the budget (and may make another key give up an
 * idle resource) like a blocking acquirer, and so that a failure of that
 * create is its own (own_failure). */
static struct pk__waiter *
first_ticket_locked(struct pk_pool *p)
{
    struct pk__waiter *first = NULL;

    if (!p->async_waiters)
        return NULL;
    for (struct pk__dnode *n = p->wait_queue.head; n; n = n->next) {
        struct pk__waiter *w = pk__waiter_of(n);
        if (!w->ticket)
            continue;
        /* One that holds a group grant first: the unit is its, and a
         * create for another ticket would queue that one for a unit the
         * group has not got. */
        if (atomic_load(&w->granted))
            return w;
        if (!first)
            first = w;
    }
    return first;
}

/* Creates what the floor and the waiters want, as far as the limits and
 * the backoff allow: the retry loop's attempts for tickets and the floor
 * (blocking acquirers make their own). A failure ends the pass; the next
 * attempt comes when the backoff ends. */
static void
top_up(struct pk_pool *p)
{
    pk__lock_acquire(&p->lock);
    while (pk__pool_creates_wanted_locked(p) > 0 &&
           pk__pool_can_create_locked(p, pk__pool_now(p))) {
        struct pk__waiter *w = first_ticket_locked(p);
        int rc;

        /* The ticket may be served, expire or be freed by its owner while
         * the create runs with the lock dropped: pin it. */
        if (w)
            pk__ticket_pin(w->ticket);
        rc = pk__pool_create_one(p, w);
        if (w && rc == PK_EAGAIN) {
            bool granted;
            /* Queued for the budget. The steal retires another member's
             * idle resource, whose unit is granted to the head of the
             * group queue, often w, on this very thread: look at the
             * grant again and use it now. (Before, the grant's wake went
             * to bg_cond while nobody waited on it, and the ticket sat
             * until the next pass or its deadline.) Another grant later
             * wakes the background thread through bg_granted. */
            pk__pool_unlock(p);
            pk__group_steal(p->group, p, pk__pool_retire_oldest_idle);
            pk__lock_acquire(&p->lock);
            granted = atomic_load(&w->granted);
            pk__ticket_unpin(w->ticket);
            if (granted)
                continue;
            break;
        }
        if (w && rc == PK_ECREATE)
            w->own_failure = p->st_create_failures;
        if (w)
            pk__ticket_unpin(w->ticket);
        if (rc == 0)
            continue;
        break;
    }
    pk__pool_unlock(p);
}

static void
maintain_pass(struct pk_pool *p)
{
    struct maint_work *mw = pk__calloc(1, sizeof *mw);
    uint64_t now;

    if (mw) {
        pk__lock_acquire(&p->lock);
        now = pk__pool_now(p);
        collect_idle_locked(p, mw, now);
        collect_held_locked(p, mw, now);
        pk__pool_unlock(p);
        for (size_t i = 0; i < mw->n_retire; i++)
            pk__pool_finish_retire(p, mw->retire[i]);
        for (size_t i = 0; i < mw->n_check; i++)
            run_check(p, mw->check[i], now);
        for (size_t i = 0; i < mw->n_held; i++)
            pk__pool_emit(p, &mw->held[i]);
        pk__free(mw);
    }
    pk__pool_async_service(p);
    top_up(p);
    pk__pool_async_expire(p, pk__now_ns());
}

int
pk_pool_maintain(pk_pool *p)
{
    if (!p || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    pk__lock_acquire(&p->lock);
    if (p->closed) {
        pk__pool_unlock(p);
        return PK_ESHUTDOWN;
    }
    pk__pool_unlock(p);
    maintain_pass(p);
    return 0;
}

/* ---- the background thread ------------------------------------------- */

/* When the background thread must look again: the next pass, a ticket's
 * deadline, or the next create attempt while creates fail and one is
 * wanted. */
static uint64_t
bg_until_locked(struct pk_pool *p, uint64_t next_pass)
{
    uint64_t until = next_pass, d = pk__pool_async_next_deadline_locked(p);

    if (d < until)
        until = d;
    if (pk__pool_creates_wanted_locked(p) > 0) {
        d = pk__pool_retry_at_mono_locked(p);
        if (d < until)
            until = d;
    }
    return until;
}

/* The thread's body, started by pk__pool_bg_start_locked (pool_lock.c)
 * through p->ops. */
void *
pk__pool_bg_main(void *arg)
{
    struct pk_pool *p = arg;
    uint64_t next = pk__now_ns() + p->interval_ns;

    pthread_setname_np(pthread_self(), "pk-pool-maint");
    pk__lock_acquire(&p->lock);
    while (!p->bg_stop) {
        uint64_t until = bg_until_locked(p, next);
        /* Registered on the cv before bg_granted is read: a grant that
         * sets it after the read bumps the cv's sequence after our
         * prepare, so the wait returns at once (sync.h). */
        uint32_t seq = pk__cv_prepare(&p->bg_cond);
        if (!p->bg_kick && !atomic_load(&p->bg_granted)) {
            pk__pool_unlock(p);
            pk__cv_wait_prepared(&p->bg_cond, seq, until);
            pk__lock_acquire(&p->lock);
        } else {
            pk__cv_cancel(&p->bg_cond);
        }
        if (p->bg_stop)
            break;
        /* A group grant for a ticket wakes us without bg_kick. */
        bool granted = atomic_exchange(&p->bg_granted, false);
        bool kicked = p->bg_kick || granted || p->async_waiters ||
                      pk__pool_creates_wanted_locked(p) > 0;
        p->bg_kick = false;
        pk__pool_unlock(p);
        uint64_t mono = pk__now_ns();
        if (mono >= next) {
            maintain_pass(p);
            next = pk__now_ns() + p->interval_ns;
        } else if (kicked) {
            pk__pool_async_service(p);
            top_up(p);
            pk__pool_async_expire(p, mono);
        } else {
            pk__pool_async_expire(p, mono);
        }
        pk__lock_acquire(&p->lock);
    }
    pk__pool_unlock(p);
    return NULL;
}

/* ---- sizing, pause, evict --------------------------------------------- */

static int
enter(struct pk_pool *p)
{
    if (!p || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    pk__lock_acquire(&p->lock);
    if (p->closed) {
        pk__pool_unlock(p);
        return PK_ESHUTDOWN;
    }
    return 0;
}

/* Retires idle resources while the population is above max_size, or all
 * of those older than evict_gen. Takes the lock on entry as held and
 * returns with it dropped. */
static void
retire_idle_and_unlock(struct pk_pool *p)
{
    struct pk__slot *batch[PK__MAINT_BATCH];
    size_t n;

    for (;;) {
        struct pk__dnode *node = p->idle_list.tail, *prev;
        n = 0;
        for (; node && n < PK__MAINT_BATCH; node = prev) {
            struct pk__slot *s = pk__slot_of(node);
            prev = node->prev; /* retiring s clears node->prev */
            if (p->alive > p->max_size || s->generation < p->evict_gen) {
                pk__pool_unlink_retire_locked(p, s);
                batch[n++] = s;
            }
        }
        pk__pool_unlock(p);
        for (size_t i = 0; i < n; i++)
            pk__pool_finish_retire(p, batch[i]);
        if (n < PK__MAINT_BATCH)
            return;
        pk__lock_acquire(&p->lock);
    }
}

int
pk_pool_trim(pk_pool *p, size_t keep, size_t *retired)
{
    struct pk__slot *batch[PK__MAINT_BATCH];
    size_t total = 0, n;
    int rc = enter(p);

    if (retired)
        *retired = 0;
    if (rc)
        return rc;
    do {
        struct pk__dnode *node = p->idle_list.tail, *prev;

        for (n = 0; node && n < PK__MAINT_BATCH && p->idle > keep;
             node = prev) {
            prev = node->prev; /* retiring the slot clears node->prev */
            batch[n] = pk__slot_of(node);
            pk__pool_unlink_retire_locked(p, batch[n++]);
        }
        pk__pool_unlock(p);
        for (size_t i = 0; i < n; i++)
            pk__pool_finish_retire(p, batch[i]);
        total += n;
        if (n == PK__MAINT_BATCH)
            pk__lock_acquire(&p->lock);
    } while (n == PK__MAINT_BATCH);
    if (retired)
        *retired = total;
    return 0;
}

int
pk_pool_resize(pk_pool *p, size_t min_size, size_t min_idle, size_t max_size)
{
    int rc;

    if (max_size == 0)
        max_size = PK__POOL_DEFAULT_MAX_SIZE; /* as at create */
    if (max_size > PK_POOL_SIZE_MAX || min_size > max_size ||
        min_idle > max_size)
        return PK_EINVAL;
    rc = enter(p);
    if (rc)
        return rc;
    p->min_size = min_size;
    p->min_idle = min_idle;
    p->max_size = max_size;
    if ((min_idle > 0 || min_size > 0) &&
        !(p->flags & PK_POOL_MANUAL_MAINTENANCE))
        pk__pool_bg_kick_locked(p); /* starts it if need be */
    pk__pool_wake_retry_locked(p);
    retire_idle_and_unlock(p);
    return 0;
}

int
pk_pool_pause(pk_pool *p)
{
    int rc = enter(p);

    if (rc)
        return rc;
    p->paused = true;
    pk__pool_unlock(p);
    return 0;
}

int
pk_pool_resume(pk_pool *p)
{
    int rc = enter(p);

    if (rc)
        return rc;
    p->paused = false;
    pk__pool_serve_waiters_locked(p);
    pk__pool_wake_retry_locked(p);
    pk__pool_unlock(p);
    return 0;
}

int
pk_pool_evict_all(pk_pool *p)
{
    int rc = enter(p);

    if (rc)
        return rc;
    p->generation++;
    p->evict_gen = p->generation;
    pk__pool_wake_retry_locked(p);
    retire_idle_and_unlock(p);
    return 0;
}

/* ---- close ------------------------------------------------------------ */

static void
fail_waiters_locked(struct pk_pool *p)
{
    struct pk__dnode *n;

    while ((n = pk__dlist_pop_head(&p->wait_queue))) {
        struct pk__waiter *w = pk__waiter_of(n);
        w->queued = false;
        w->err = PK_ESHUTDOWN;
        p->waiters--;
        if (w->ticket) {
            p->async_waiters--;
            pk__ticket_ready_locked(p, w);
        } else {
            pk__pool_wake_waiter_locked(p, w, PK__W_RETRY);
        }
    }
}

/* A lease still out when close stops waiting for it. */
struct lease_out {
    void *res;
    const char *file;
    int line;
    uint64_t out_ns; /* UINT64_MAX: unknown (the pool reads no clock) */
};

/* Takes up to max leases out that were not reported yet. A closed pool
 * lends nothing again, so out_reported is never cleared. */
static size_t
collect_out_locked(struct pk_pool *p, struct lease_out *out, size_t max,
                   uint64_t now)
{
    size_t n = 0;

    for (struct pk__slot *s = p->all_slots; s && n < max; s = s->all_next) {
        if (s->state != PK__S_LENT || s->out_reported)
            continue;
        s->out_reported = true;
        out[n].res = s->res;
        out[n].file = s->file;
        out[n].line = s->line;
        out[n].out_ns = !p->needs_clock ? UINT64_MAX
                        : now > s->lent_ns ? now - s->lent_ns
                                           : 0;
        n++;
    }
    return n;
}

/* Through the event hook, or with none one stderr line. */
static void
report_out(struct pk_pool *p, const struct lease_out *o)
{
    const char *file = o->file ? o->file : "?";
    char what[256];

    if (p->event) {
        struct pk__ev ev = { PK_EVENT_LEASE_OUT_AT_CLOSE, o->res, o->file,
                             o->line, o->out_ns == UINT64_MAX ? 0
                                                              : o->out_ns,
                             NULL };
        pk__pool_emit(p, &ev);
        return;
    }
    if (o->out_ns == UINT64_MAX)
        snprintf(what, sizeof what, "a lease was still out at close, "
                 "acquired at %s:%d", file, o->line);
    else
        snprintf(what, sizeof what, "a lease was still out at close, "
                 "acquired at %s:%d, out for %llu ms", file, o->line,
                 (unsigned long long)(o->out_ns / 1000000u));
    pk__log_failure(what, NULL);
}

/* Reports each lease still out, once: collected under the lock, in
 * batches, reported with it dropped (the hook may take its time). */
static void
report_leases_out(struct pk_pool *p)
{
    struct lease_out batch[PK__MAINT_BATCH];
    uint64_t now = p->needs_clock ? pk__pool_now(p) : 0;
    size_t n;

    do {
        pk__lock_acquire(&p->lock);
        n = collect_out_locked(p, batch, PK__MAINT_BATCH, now);
        pk__pool_unlock(p);
        for (size_t i = 0; i < n; i++)
            report_out(p, &batch[i]);
    } while (n == PK__MAINT_BATCH);
}

int
pk_pool_close(pk_pool *p, int timeout_ms)
{
    uint64_t deadline;
    int rc = 0;

    if (!p || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__deadline(timeout_ms, &deadline))
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    pk__lock_acquire(&p->lock);
    p->closed = true;
    p->paused = false;
    fail_waiters_locked(p);
    p->generation++;
    p->evict_gen = p->generation; /* every idle one retires */
    retire_idle_and_unlock(p);
    pk__pool_async_service(p); /* tickets whose slot awaits its check */

    pk__lock_acquire(&p->lock);
    p->close_waiters++;
    while (p->lent || p->retiring || p->creating || p->checking) {
        if (timeout_ms == 0 || pk__now_ns() >= deadline) {
            rc = PK_ETIMEDOUT;
            break;
        }
        pk__cv_wait_until(&p->drained, &p->lock, deadline);
    }
    p->close_waiters--;
    pk__pool_unlock(p);
    if (rc == PK_ETIMEDOUT && !(p->flags & PK_POOL_QUIET_CLOSE))
        report_leases_out(p);
    return rc;
}
