/* lib/pool/pool_create.c - making resources: one create at a time under
 * the pool's limits (max_size, max_creating, a group's budget), and the
 * backoff after failures.
 *
 * Owns the backoff: fail_streak, fail_ns, fail_rand, last_err. A create
 * reserves its slot under the lock (state CREATING, counted in alive and
 * creating, so max_size and max_creating hold while the hook runs), runs
 * the hook with the lock dropped, and delivers the result to the head of
 * the queue or the idle list. A failure starts or lengthens the backoff
 * (exponential, jittered, capped) and is remembered. The pool's one retry
 * loop: while creates fail, whoever waits for one (a blocking acquirer
 * itself, the helper thread or pk_pool_maintain for tickets and the
 * floor) tries again when the backoff ends, and the result goes to the
 * longest waiter. A waiter whose deadline comes before that attempt fails
 * at once with the last error, replayed and saying so. The backoff's cap
 * is short while anyone waits (a pool is back soon after its server is)
 * and long while nobody does. */
#include "pool_int.h"

#include <stdio.h>

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
pk__pool_has_room_locked(const struct pk_pool *p)
{
    return !p->closed && !p->paused &&
           p->alive + p->retiring < p->max_size;
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
 * to the queue head, or to self if it keeps what it makes; a failure is
 * recorded (the backoff) and leaves every waiter queued, to wait for the
 * next attempt or give up. Returns 0,
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
    pk__pool_deliver_made_locked(p, s, now, self);
    /* A create slot is free again (test_pool: max_creating): waiters that
     * parked because max_creating creates were running are woken to make
     * the next one; nothing else would wake them before their deadline. */
    if (pk__pool_creates_wanted_locked(p) > 0)
        pk__pool_wake_retry_locked(p);
    return 0;
}
