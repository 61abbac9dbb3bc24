/* lib/pool/pool_create.c - making things: resources (one create at a time
 * under the pool's limits, with backoff and retries after failures) and
 * the pool itself (options, create, destroy, and destroy in a forked
 * child).
 *
 * A create reserves its slot under the lock (state CREATING, counted in
 * alive and creating), runs the hook with the lock dropped, and delivers
 * the result to the head of the queue or the idle list. A failure starts
 * or lengthens the backoff (exponential, jittered, capped) and is
 * remembered. The pool's one retry loop: while creates fail, whoever
 * waits for one (a blocking acquirer itself, the helper thread or
 * pk_pool_maintain for tickets and the floor) tries again when the
 * backoff ends, and the result goes to the longest waiter. A waiter whose
 * deadline comes before that attempt fails at once with the last error,
 * replayed and saying so. The backoff's cap is short while anyone waits
 * (a pool is back soon after its server is) and long while nobody does. */
#include "pool_int.h"

#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"

/* ---- resources -------------------------------------------------------- */

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

size_t
pk__pool_creates_wanted_locked(struct pk_pool *p)
{
    size_t want = p->waiters;
    size_t have = p->creating;
    size_t alive_free = p->alive - p->lent; /* idle, creating, checking */

    if (alive_free < p->min_idle)
        want += p->min_idle - alive_free;
    if (p->alive < p->min_size && p->min_size - p->alive > want)
        want = p->min_size - p->alive;
    return want > have ? want - have : 0;
}

/* The backoff after the last failed create: backoff_initial doubled per
 * failure in a row, capped, then jittered to between half and all of it
 * (fail_rand, drawn at the failure), so pools that failed together do not
 * retry together. Computed when asked, as the cap depends on whether
 * anyone waits now. */
static uint64_t
backoff_ns(const struct pk_pool *p)
{
    uint64_t cap = p->waiters ? p->max_backoff_waiting_ns : p->max_backoff_ns;
    unsigned shift = p->fail_streak > 30 ? 30 : p->fail_streak - 1;
    uint64_t d = p->backoff_initial_ns << shift;

    if (d > cap || d >> shift != p->backoff_initial_ns)
        d = cap;
    return d / 2 + (d ? p->fail_rand % (d / 2 + 1) : 0);
}

uint64_t
pk__pool_next_attempt_locked(const struct pk_pool *p)
{
    return p->fail_streak ? p->fail_ns + backoff_ns(p) : 0;
}

uint64_t
pk__pool_retry_at_mono_locked(const struct pk_pool *p)
{
    uint64_t next, now;

    if (!p->fail_streak)
        return UINT64_MAX;
    next = pk__pool_next_attempt_locked(p);
    now = pk__pool_now(p);
    return next > now ? pk__now_ns() + (next - now) : UINT64_MAX;
}

bool
pk__pool_can_create_locked(struct pk_pool *p, uint64_t now)
{
    if (p->closed || p->paused)
        return false;
    /* A resource being retired still exists until its destroy hook
     * returns: count it, so max_size caps what exists (connections open
     * to a server, say), as the group's budget does (stress_pool). */
    if (p->alive + p->retiring >= p->max_size ||
        p->creating >= p->max_creating)
        return false;
    return p->fail_streak == 0 || now >= pk__pool_next_attempt_locked(p);
}

bool
pk__pool_gives_up_locked(const struct pk_pool *p, uint64_t deadline)
{
    /* Only a waiter for a create: none is running (its outcome may serve
     * the waiter), and the pool has room (else it waits for a release). */
    if (p->fail_streak == 0 || p->creating || p->paused ||
        p->alive >= p->max_size)
        return false;
    return deadline < pk__pool_retry_at_mono_locked(p);
}

/* "850 ms" or "1.2 s". */
static void
duration(char *buf, size_t n, uint64_t ns)
{
    if (ns < 1000000000u)
        snprintf(buf, n, "%u ms", (unsigned)(ns / 1000000u));
    else
        snprintf(buf, n, "%.1f s", (double)ns / 1e9);
}

void
pk__pool_replay_error_locked(const struct pk_pool *p, pk_error *err)
{
    uint64_t now = pk__pool_now(p), next = pk__pool_next_attempt_locked(p);
    char ago[32], in[32];

    duration(ago, sizeof ago, now > p->fail_ns ? now - p->fail_ns : 0);
    duration(in, sizeof in, next > now ? next - now : 0);
    pk_error_set(err, p->last_err.code, p->last_err.sys,
                 "last create failed %s ago: %s; next attempt in %s", ago,
                 p->last_err.msg, in);
}

static void
record_create_failure(struct pk_pool *p, int rc, const pk_error *e,
                      uint64_t now)
{
    p->st_create_failures++;
    p->fail_streak++;
    p->fail_ns = now;
    p->fail_rand = xorshift(&p->rng);
    p->last_err = *e;
    p->last_err.code = rc;
    if (!p->last_err.msg[0])
        pk_error_set(&p->last_err, rc, e->sys, "create failed: %s",
                     pk_strerror(rc));
}

/* Runs one create with the lock held on entry and on return (it is dropped
 * around the hook). self is the waiter it is made for, if any (in a
 * group it queues for the budget). On success the resource is delivered
 * to the queue head; a failure is recorded (the backoff) and leaves every
 * waiter queued, to wait for the next attempt or give up. Returns 0,
 * PK_EAGAIN (the group's budget is spent), PK_ENOMEM (no slot), or
 * PK_ECREATE: the hook failed, and p->last_err says how. */
int
pk__pool_create_one(struct pk_pool *p, struct pk__waiter *self)
{
    struct pk__slot *s;
    pk_error e;
    void *res = NULL;
    int rc;
    uint64_t now;

    /* A waiter that finds the budget spent is queued in the group in the
     * same step (pk__group_take_or_queue: no lost unit, arrival order). */
    if (p->group && !(self && atomic_exchange(&self->granted, false)) &&
        !(self ? pk__group_take_or_queue(p->group, p, self)
               : pk__group_try_take(p->group)))
        return PK_EAGAIN; /* the budget is spent */
    s = pk__pool_slot_get(p);
    if (!s) {
        if (p->group)
            pk__group_put(p->group);
        return PK_ENOMEM;
    }
    s->state = PK__S_CREATING;
    p->alive++;
    p->creating++;
    pk__pool_unlock(p);

    pk_error_clear(&e);
    rc = p->create(p->user, &res, &e);
    if (rc > 0)
        rc = PK_ECREATE;
    now = pk__pool_now(p);
    if (rc == 0)
        pk__pool_emit_simple(p, PK_EVENT_CREATED, res, NULL);

    pk__lock_acquire(&p->lock);
    p->creating--;
    if (rc < 0) {
        p->alive--;
        pk__pool_slot_put(p, s);
        record_create_failure(p, rc, &e, now);
        /* Waiters look again: each waits for the next attempt, or gives
         * up if its deadline comes first. */
        pk__pool_wake_retry_locked(p);
        e = p->last_err;
        pk__pool_unlock(p);
        if (p->group)
            pk__group_put(p->group);
        pk__pool_emit_simple(p, PK_EVENT_CREATE_FAILED, NULL, &e);
        pk__lock_acquire(&p->lock);
        return PK_ECREATE;
    }
    p->fail_streak = 0;
    p->st_created++;
    s->res = res;
    if (p->closed) {
        /* Closed while it was being made: it is not lent again. */
        s->state = PK__S_RETIRING;
        p->alive--;
        p->retiring++;
        pk__pool_unlock(p);
        pk__pool_finish_retire(p, s);
        pk__lock_acquire(&p->lock);
        return 0;
    }
    s->uses = 0;
    s->generation = p->generation;
    s->created_ns = now;
    s->checked_ns = now;
    s->expires_ns = UINT64_MAX;
    if (p->max_lifetime_ns != UINT64_MAX) {
        uint64_t j = p->jitter_ns ? xorshift(&p->rng) % (p->jitter_ns + 1)
                                  : 0;
        s->expires_ns = now + p->max_lifetime_ns - j;
    }
    pk__pool_deliver_locked(p, s, now);
    /* A create slot is free again (test_pool: max_creating): waiters that
     * parked because max_creating creates were running are woken to make
     * the next one; nothing else would wake them before their deadline. */
    if (pk__pool_creates_wanted_locked(p) > 0)
        pk__pool_wake_retry_locked(p);
    return 0;
}

/* ---- the pool --------------------------------------------------------- */

int
pk_pool_options_init(pk_pool_options *o)
{
    if (!o)
        return PK_EINVAL;
    memset(o, 0, sizeof *o);
    o->max_size = 8;
    o->max_creating = 2;
    o->acquire_timeout_ms = 30000;
    o->idle_timeout_ms = PK_NEVER;
    o->max_lifetime_ms = PK_NEVER;
    o->check_after_ms = 1000;
    o->check_interval_ms = PK_NEVER;
    o->held_too_long_ms = PK_NEVER;
    o->maintain_interval_ms = 1000;
    o->backoff_initial_ms = 10;
    o->max_backoff_ms = 10000;
    o->max_backoff_waiting_ms = 100;
    return 0;
}

static int
copy_times(struct pk_pool *p, const pk_pool_options *o)
{
    int rc = 0;

    rc |= pk__option_ns(o->acquire_timeout_ms, 30000, &p->acquire_timeout_ns);
    rc |= pk__option_ns(o->idle_timeout_ms, PK_NEVER, &p->idle_timeout_ns);
    rc |= pk__option_ns(o->max_lifetime_ms, PK_NEVER, &p->max_lifetime_ns);
    rc |= pk__option_ns(o->check_after_ms, 1000, &p->check_after_ns);
    rc |= pk__option_ns(o->check_interval_ms, PK_NEVER,
                        &p->check_interval_ns);
    rc |= pk__option_ns(o->held_too_long_ms, PK_NEVER, &p->held_ns);
    rc |= pk__option_ns(o->maintain_interval_ms, 1000, &p->interval_ns);
    rc |= pk__option_ns(o->backoff_initial_ms, 10, &p->backoff_initial_ns);
    rc |= pk__option_ns(o->max_backoff_ms, 10000, &p->max_backoff_ns);
    rc |= pk__option_ns(o->max_backoff_waiting_ms, 100,
                        &p->max_backoff_waiting_ns);
    if (rc)
        return PK_EINVAL;
    if (o->lifetime_jitter_ms < 0)
        return PK_EINVAL;
    if (p->max_lifetime_ns == UINT64_MAX)
        p->jitter_ns = 0;
    else if (o->lifetime_jitter_ms)
        p->jitter_ns = (uint64_t)o->lifetime_jitter_ms * 1000000u;
    else
        p->jitter_ns = p->max_lifetime_ns / 40;
    if (p->jitter_ns > p->max_lifetime_ns)
        return PK_EINVAL;
    if (p->interval_ns == 0 || p->interval_ns == UINT64_MAX)
        return PK_EINVAL;
    if (p->max_backoff_ns == UINT64_MAX)
        p->max_backoff_ns = 0;
    if (p->backoff_initial_ns == UINT64_MAX)
        p->backoff_initial_ns = 0;
    if (p->backoff_initial_ns > p->max_backoff_ns)
        p->backoff_initial_ns = p->max_backoff_ns;
    /* PK_NEVER: no short cap, the long one applies while anyone waits. */
    if (p->max_backoff_waiting_ns > p->max_backoff_ns)
        p->max_backoff_waiting_ns = p->max_backoff_ns;
    return 0;
}

static int
copy_options(struct pk_pool *p, const pk_pool_options *o)
{
    if (!o->create)
        return PK_EINVAL;
    if (o->order != PK_POOL_LIFO && o->order != PK_POOL_FIFO)
        return PK_EINVAL;
    if (o->flags & ~(unsigned)(PK_POOL_MANUAL_MAINTENANCE |
                               PK_POOL_NO_GENERATION_BUMP))
        return PK_EINVAL;
    p->create = o->create;
    p->destroy = o->destroy;
    p->check = o->check;
    p->reset = o->reset;
    p->forget_in_child = o->forget_in_child;
    p->user_free = o->user_free;
    p->user = o->user;
    p->event = o->event;
    p->event_user = o->event_user;
    p->clock = o->clock;
    p->clock_user = o->clock_user;
    p->min_size = o->min_size;
    p->min_idle = o->min_idle;
    p->max_size = o->max_size ? o->max_size : 8;
    p->max_creating = o->max_creating ? o->max_creating : 2;
    p->max_uses = o->max_uses;
    p->order = o->order;
    p->flags = o->flags;
    p->group = o->group;
    if (p->min_size > p->max_size || p->min_idle > p->max_size)
        return PK_EINVAL;
    return copy_times(p, o);
}

static bool
has_background_policy(const struct pk_pool *p)
{
    return p->idle_timeout_ns != UINT64_MAX ||
           p->max_lifetime_ns != UINT64_MAX ||
           p->check_interval_ns != UINT64_MAX || p->held_ns != UINT64_MAX ||
           p->min_idle > 0 || p->min_size > 0; /* the floor is kept, a
                                                  failed create retried */
}

/* Fills min_size / min_idle on the creating thread. Failures are left to
 * maintenance: the pool is usable while its backend is down. */
static void
prefill(struct pk_pool *p)
{
    pk__lock_acquire(&p->lock);
    while (pk__pool_creates_wanted_locked(p) > 0 &&
           pk__pool_can_create_locked(p, pk__pool_now(p))) {
        if (pk__pool_create_one(p, NULL) != 0)
            break;
    }
    pk__pool_unlock(p);
}

int
pk_pool_create(pk_pool **out, const pk_pool_options *opts)
{
    pk_pool_options defaults;
    struct pk_pool *p;
    int rc;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (!opts) {
        pk_pool_options_init(&defaults);
        opts = &defaults; /* no create hook: rejected below */
    }
    p = pk__calloc(1, sizeof *p);
    if (!p)
        return PK_ENOMEM;
    pk__lock_init(&p->lock, PK__RANK_POOL);
    p->fork_epoch = pk__fork_epoch();
    rc = copy_options(p, opts);
    if (rc)
        goto fail;
    p->needs_clock = p->group ||
                     (p->check && p->check_after_ns != UINT64_MAX) ||
                     p->held_ns != UINT64_MAX ||
                     p->idle_timeout_ns != UINT64_MAX ||
                     p->max_lifetime_ns != UINT64_MAX ||
                     p->check_interval_ns != UINT64_MAX;
    p->rng = ((uint64_t)(uintptr_t)p ^ pk__now_ns()) | 1u;
    p->generation = 1;
    if (p->group) {
        rc = pk__group_join(p->group, p);
        if (rc)
            goto fail;
    }
    if (has_background_policy(p) &&
        !(p->flags & PK_POOL_MANUAL_MAINTENANCE)) {
        pk__lock_acquire(&p->lock);
        rc = pk__pool_bg_start_locked(p);
        pk__lock_release(&p->lock);
        if (rc)
            goto fail_group;
    }
    p->magic = PK__POOL_MAGIC;
    prefill(p);
    *out = p;
    return 0;
fail_group:
    if (p->group)
        pk__group_leave(p->group, p);
fail:
    pk__free(p);
    return rc;
}

/* Frees the handle's memory. The last lease, the last destroy hook and
 * pk_pool_destroy race to get here; only the one that sees
 * pk__pool_may_free_locked() true (under the lock) calls it. */
static void
free_memory(struct pk_pool *p)
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
    free_memory(p);
}

/* In a child after fork(): no thread joined, no protocol spoken. Idle
 * resources are forgotten now; a lent one when its lease comes back
 * (pk__pool_release_in_child), and the memory is freed with the last of
 * them. A lease whose holder did not survive the fork never comes back:
 * its resource stays as it is and the pool's memory stays too.
 *
 * The lock: its holder at fork time may not exist here, but destroy is
 * exclusive and every other call on an inherited pool returns PK_EFORKED
 * before it takes the lock, so the child takes the lock over, fresh, for
 * the leases that come back. */
static void
destroy_in_child(struct pk_pool *p)
{
    size_t out = 0;

    if (atomic_load_explicit(&p->child_destroyed, memory_order_relaxed))
        return;
    for (struct pk__slot *s = p->all_slots; s; s = s->all_next) {
        /* IDLE and CHECKING (its check ran on a parent thread) are
         * forgotten now, LENT ones when they come back. Not FREE or
         * CREATING (no resource yet), nor RETIRING: its destroy hook was
         * running in the parent at fork time, and the descriptors may
         * already be half closed. */
        if (s->state == PK__S_LENT)
            out++;
        else if (p->forget_in_child && (s->state == PK__S_IDLE ||
                                        s->state == PK__S_CHECKING))
            p->forget_in_child(p->user, s->res);
    }
    if (out == 0) {
        free_memory(p);
        return;
    }
    atomic_store_explicit(&p->lock.v, 0, memory_order_relaxed);
    p->child_leases = out;
    /* Release: a release that sees it sees the fresh lock and the count. */
    atomic_store_explicit(&p->child_destroyed, true, memory_order_release);
}

int
pk__pool_release_in_child(struct pk_pool *p, pk_lease *l, int status)
{
    struct pk__slot *s = l->slot_;
    void (*forget)(void *, void *);
    void *user, *res;
    bool free_now;

    if (!atomic_load_explicit(&p->child_destroyed, memory_order_acquire))
        return PK_EFORKED; /* the pool is still the parent's */
    pk__lock_acquire(&p->lock);
    if (s->state != PK__S_LENT || s->ticket != l->ticket_) {
        pk__lock_release(&p->lock);
        return PK_EINVAL;
    }
    /* Read under the lock: once the count reaches 0 on another thread,
     * p may be gone. DETACH: the caller owns the resource now. */
    forget = status == PK_RELEASE_DETACH ? NULL : p->forget_in_child;
    user = p->user;
    res = s->res;
    s->state = PK__S_FREE;
    s->ticket++;
    free_now = --p->child_leases == 0;
    pk__lock_release(&p->lock);
    l->resource = NULL;
    l->pool_ = NULL;
    l->slot_ = NULL;
    if (forget)
        forget(user, res);
    if (free_now)
        free_memory(p);
    return 0;
}

void
pk_pool_destroy(pk_pool *p)
{
    bool free_now;

    if (!p || p->magic != PK__POOL_MAGIC)
        return;
    if (pk__pool_forked(p)) {
        destroy_in_child(p);
        return;
    }
    pk_pool_close(p, 0);
    pk__pool_bg_stop(p);
    if (p->group)
        pk__group_leave(p->group, p);
    pk__lock_acquire(&p->lock);
    p->destroyed = true;
    free_now = pk__pool_may_free_locked(p);
    pk__pool_unlock(p);
    if (free_now)
        pk__pool_free(p);
}
