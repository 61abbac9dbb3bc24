/* lib/pool/pool_lease.c - one lease of a slot: taking an idle one, the
 * check before it is used, and taking it back at release.
 *
 * Owns the slot's ticket (pool_int.h), which names one lend: bumped at each
 * lend and at each release, so a release checks under the lock that its
 * lease is the current one, and a second release of a copy fails. Every
 * hook (check, reset, destroy) runs with the lock dropped, the slot's
 * state saying who owns it meanwhile. With no reset hook, no time policy
 * and nobody waiting, a lend and a release are one lock section each, and
 * neither reads the clock unless a policy needs it (pk_pool.needs_clock). */
#include "pool_int.h"

/* ---- lending ---------------------------------------------------------- */

/* Takes an idle resource if the fast path is open: no queue, not paused.
 * Returns the slot lent to the caller, or NULL. */
struct pk__slot *
pk__pool_take_idle_locked(struct pk_pool *p, const char *file, int line,
                          bool *needs_check)
{
    struct pk__slot *s;
    uint64_t now;

    if (p->wait_queue.head || p->paused || !p->idle_list.head)
        return NULL;
    s = pk__pool_idle_pop_locked(p);
    now = p->needs_clock ? pk__pool_now(p) : 0;
    *needs_check = pk__pool_slot_needs_check(p, s, now);
    pk__pool_slot_lend(p, s, now, file, line);
    if (p->idle < p->min_idle && p->bg_running)
        pk__pool_bg_kick_locked(p);
    return s;
}

/* Retires a lent slot made before pk_pool_evict_all, which promised it
 * would not be lent again: no check, no failure counted. Returns
 * PK_ECHECK, so the acquirer tries again. */
static int
retire_evicted(struct pk_pool *p, struct pk__slot *s)
{
    pk__lock_acquire(&p->lock);
    pk__pool_unlink_retire_locked(p, s);
    pk__pool_unlock(p);
    pk__pool_finish_retire(p, s);
    return PK_ECHECK;
}

/* Runs the check hook on a lent slot outside the lock. Returns 0 if
 * healthy; otherwise retires it (bumping the generation) and returns the
 * check's code. */
int
pk__pool_check_lent(struct pk_pool *p, struct pk__slot *s)
{
    pk_error e;
    int rc = 0;
    bool evicted;

    pk__lock_acquire(&p->lock);
    evicted = s->generation < p->evict_gen;
    pk__pool_unlock(p);
    if (evicted)
        return retire_evicted(p, s);
    pk_error_clear(&e);
    if (p->check)
        rc = p->check(p->user, s->res, &e);
    else
        rc = PK_ECHECK; /* evicted while lent, without a check hook */
    if (rc == 0) {
        /* Healthy in this generation, as run_check records it
         * (test_pool: checked after a bump): without this a resource of
         * an older generation was checked again on every lend. One
         * evicted during the check is retired, not lent. */
        pk__lock_acquire(&p->lock);
        evicted = s->generation < p->evict_gen;
        if (!evicted)
            s->generation = p->generation;
        pk__pool_unlock(p);
        return evicted ? retire_evicted(p, s) : 0;
    }
    if (rc > 0)
        rc = PK_ECHECK;
    pk__lock_acquire(&p->lock);
    if (p->check)
        p->st_check_failures++;
    if (p->check && !(p->flags & PK_POOL_NO_GENERATION_BUMP) &&
        s->generation == p->generation)
        p->generation++;
    pk__pool_unlink_retire_locked(p, s);
    pk__pool_unlock(p);
    if (p->check)
        pk__pool_emit_simple(p, PK_EVENT_CHECK_FAILED, s->res, &e);
    pk__pool_finish_retire(p, s);
    return rc;
}

/* ---- taking back ------------------------------------------------------ */

static bool
slot_expired(const struct pk_pool *p, const struct pk__slot *s, uint64_t now)
{
    if (s->generation < p->evict_gen)
        return true;
    if (p->max_uses && s->uses >= p->max_uses)
        return true;
    return p->max_lifetime_ns != UINT64_MAX && now >= s->expires_ns;
}

static bool
must_retire_locked(struct pk_pool *p, struct pk__slot *s, uint64_t now)
{
    if (p->closed || slot_expired(p, s, now) || p->alive > p->max_size)
        return true;
    /* A group member gives a spare resource back to the shared budget
     * when another key is waiting for one and nobody here is. */
    return p->group && !p->wait_queue.head && pk__group_has_waiters(p->group);
}

static int
release_detach(struct pk_pool *p, struct pk__slot *s)
{
    void *res = s->res;
    bool free_now;

    /* The budget unit and the event go first, while the slot still counts
     * as lent: once it stops counting, a racing pk_pool_destroy may free
     * the pool, so nothing here may touch p after the last unlock
     * (test_pool_faults). The lease is already stale (ticket bumped). */
    pk__pool_unlock(p);
    if (p->group)
        pk__group_put(p->group);
    pk__pool_emit_simple(p, PK_EVENT_DETACHED, res, NULL);
    pk__lock_acquire(&p->lock);
    p->lent--;
    p->alive--;
    p->st_detached++;
    pk__pool_slot_put(p, s);
    pk__pool_wake_retry_locked(p);
    free_now = pk__pool_may_free_locked(p);
    pk__pool_unlock(p);
    if (free_now)
        pk__pool_free(p);
    return 0;
}

static int
release_retire(struct pk_pool *p, struct pk__slot *s, bool bump)
{
    if (bump && p->check && !(p->flags & PK_POOL_NO_GENERATION_BUMP) &&
        s->generation == p->generation)
        p->generation++;
    pk__pool_unlink_retire_locked(p, s);
    pk__pool_unlock(p);
    pk__pool_finish_retire(p, s);
    return 0;
}

/* Runs the reset hook with the lock dropped. The lease is already stale
 * (ticket bumped), so a second release of it fails meanwhile. Returns
 * with the lock held; false if reset called the resource unclean. */
static bool
run_reset(struct pk_pool *p, struct pk__slot *s)
{
    int rc;

    pk__pool_unlock(p);
    rc = p->reset(p->user, s->res);
    if (rc != 0) {
        pk_error e;
        pk_error_set(&e, PK_ECHECK, rc, "reset failed");
        pk__pool_emit_simple(p, PK_EVENT_CHECK_FAILED, s->res, &e);
    }
    pk__lock_acquire(&p->lock);
    if (rc != 0)
        p->st_check_failures++;
    return rc == 0;
}

/* Takes a slot back, entered with the lock held and the lease validated
 * and made stale; drops the lock. With no reset hook, no time policy and
 * nobody waiting it is one step: the slot goes to the idle list. */
static int
release_locked(struct pk_pool *p, struct pk__slot *s, int status)
{
    uint64_t now;

    if (status == PK_RELEASE_DETACH)
        return release_detach(p, s);
    if (status == PK_RELEASE_OK && p->reset && !p->closed &&
        !run_reset(p, s))
        status = PK_RELEASE_BROKEN;
    now = p->needs_clock ? pk__pool_now(p) : 0;
    if (status == PK_RELEASE_BROKEN || must_retire_locked(p, s, now))
        return release_retire(p, s, status == PK_RELEASE_BROKEN);
    p->lent--;
    pk__pool_deliver_locked(p, s, now);
    pk__pool_unlock(p);
    return 0;
}

int
pk__pool_release_lease(struct pk_pool *p, pk_lease *l, int status)
{
    struct pk__slot *s = l->slot_;

    pk__lock_acquire(&p->lock);
    /* A ticket names one lend of the slot, so a matching one means the
     * slot is LENT to this lease; else it was released already (through
     * a copy of the lease, say). */
    if (s->ticket != l->ticket_) {
        pk__pool_unlock(p);
        return PK_EINVAL;
    }
    s->ticket++;
    l->resource = NULL;
    l->pool_ = NULL;
    l->slot_ = NULL;
    return release_locked(p, s, status);
}
