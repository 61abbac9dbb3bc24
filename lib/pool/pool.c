/* lib/pool/pool.c - the pool handle's public calls: options, create and
 * destroy (also in a forked child), acquire, release, lease info, stats.
 *
 * Owns the handle's life: its options, p->ops, the magic and the fork
 * epoch checked at every entry, and destroy (the memory is freed by
 * whoever sees pk__pool_may_free_locked, pool_slot.c).
 *
 * The top of the pool: it calls down into the other files, and none calls
 * back up (README, "Source layout"). Bottom up: pool_group.c (a group's
 * budget), pool_lock.c (the lock's deferred wakes, the wait queue, the
 * background thread's handle, events), pool_slot.c (slots, hand-off,
 * retiring), pool_lease.c (one lend: take, check, take back),
 * pool_create.c (creates and the backoff), pool_wait.c (a blocking
 * acquire's wait), pool_async.c (tickets), pool_maint.c (maintenance,
 * sizing, close). The three calls a lower file must make up go through
 * p->ops, set here at create. */
#include "pool_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"

static const struct pk__pool_ops ops = {
    .bg_main = pk__pool_bg_main,
    .ticket_ready_locked = pk__ticket_ready_locked,
    .notify = pk__ticket_notify_list,
};

/* ---- create ----------------------------------------------------------- */

int
pk_pool_options_init(pk_pool_options *o)
{
    if (!o)
        return PK_EINVAL;
    memset(o, 0, sizeof *o);
    o->max_size = PK__POOL_DEFAULT_MAX_SIZE;
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
bad(pk_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fills err with "pk_pool_options: " and the rule broken; PK_EINVAL. */
static int
bad(pk_error *err, const char *fmt, ...)
{
    char why[PK_ERROR_MSG_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return pk_error_set(err, PK_EINVAL, 0, "pk_pool_options: %s", why);
}

/* A time option: 0 (default), positive, PK_NEVER or PK_ALWAYS. */
static int
check_ms(pk_error *err, const char *name, int ms)
{
    if (ms < 0 && ms != PK_NEVER && ms != PK_ALWAYS)
        return bad(err, "%s (%d) is negative but not PK_NEVER or "
                   "PK_ALWAYS", name, ms);
    return 0;
}

static int
check_times(const pk_pool_options *o, pk_error *err)
{
    static const size_t off[] = {
#define PK__MS(f) offsetof(pk_pool_options, f)
        PK__MS(acquire_timeout_ms), PK__MS(idle_timeout_ms),
        PK__MS(max_lifetime_ms), PK__MS(check_after_ms),
        PK__MS(check_interval_ms), PK__MS(held_too_long_ms),
        PK__MS(maintain_interval_ms), PK__MS(backoff_initial_ms),
        PK__MS(max_backoff_ms), PK__MS(max_backoff_waiting_ms),
#undef PK__MS
    };
    static const char *const name[] = {
        "acquire_timeout_ms", "idle_timeout_ms", "max_lifetime_ms",
        "check_after_ms", "check_interval_ms", "held_too_long_ms",
        "maintain_interval_ms", "backoff_initial_ms", "max_backoff_ms",
        "max_backoff_waiting_ms",
    };
    int life = o->max_lifetime_ms ? o->max_lifetime_ms : PK_NEVER;

    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        int ms;
        memcpy(&ms, (const char *)o + off[i], sizeof ms);
        if (check_ms(err, name[i], ms))
            return PK_EINVAL;
    }
    if (o->maintain_interval_ms == PK_NEVER ||
        o->maintain_interval_ms == PK_ALWAYS)
        return bad(err, "maintain_interval_ms (%d) must be a period: 0 "
                   "(default 1000) or positive", o->maintain_interval_ms);
    if (o->lifetime_jitter_ms < 0)
        return bad(err, "lifetime_jitter_ms (%d) is negative",
                   o->lifetime_jitter_ms);
    if (life != PK_NEVER && o->lifetime_jitter_ms >
                                (life == PK_ALWAYS ? 0 : life))
        return bad(err, "lifetime_jitter_ms (%d) is above max_lifetime_ms "
                   "(%d)", o->lifetime_jitter_ms, life == PK_ALWAYS ? 0
                                                                   : life);
    return 0;
}

int
pk_pool_options_check(const pk_pool_options *o, pk_error *err)
{
    size_t max = o && o->max_size ? o->max_size : PK__POOL_DEFAULT_MAX_SIZE;
    const char *dflt = o && o->max_size ? "" : ", the default";

    if (!o)
        return bad(err, "NULL options");
    if (!o->create)
        return bad(err, "create is NULL (the create hook is required)");
    if (o->order != PK_POOL_LIFO && o->order != PK_POOL_FIFO)
        return bad(err, "order (%d) is not PK_POOL_LIFO or PK_POOL_FIFO",
                   o->order);
    if (o->flags & ~(unsigned)(PK_POOL_MANUAL_MAINTENANCE |
                               PK_POOL_NO_GENERATION_BUMP |
                               PK_POOL_QUIET_CLOSE))
        return bad(err, "flags (0x%x) has bits that are not an enum "
                   "pk_pool_flags value", o->flags);
    if (o->max_size > PK_POOL_SIZE_MAX)
        return bad(err, "max_size (%zu) is above PK_POOL_SIZE_MAX (%zu)",
                   o->max_size, PK_POOL_SIZE_MAX);
    if (o->min_size > PK_POOL_SIZE_MAX)
        return bad(err, "min_size (%zu) is above PK_POOL_SIZE_MAX (%zu)",
                   o->min_size, PK_POOL_SIZE_MAX);
    if (o->min_idle > PK_POOL_SIZE_MAX)
        return bad(err, "min_idle (%zu) is above PK_POOL_SIZE_MAX (%zu)",
                   o->min_idle, PK_POOL_SIZE_MAX);
    if (o->max_creating > PK_POOL_SIZE_MAX)
        return bad(err, "max_creating (%zu) is above PK_POOL_SIZE_MAX "
                   "(%zu)", o->max_creating, PK_POOL_SIZE_MAX);
    if (o->min_size > max)
        return bad(err, "min_size (%zu) is above max_size (%zu%s)",
                   o->min_size, max, dflt);
    if (o->min_idle > max)
        return bad(err, "min_idle (%zu) is above max_size (%zu%s)",
                   o->min_idle, max, dflt);
    if (check_times(o, err))
        return PK_EINVAL;
    pk_error_clear(err);
    return 0;
}

/* Converts the times of options that passed pk_pool_options_check. */
static void
copy_times(struct pk_pool *p, const pk_pool_options *o)
{
    pk__option_ns(o->acquire_timeout_ms, 30000, &p->acquire_timeout_ns);
    pk__option_ns(o->idle_timeout_ms, PK_NEVER, &p->idle_timeout_ns);
    pk__option_ns(o->max_lifetime_ms, PK_NEVER, &p->max_lifetime_ns);
    pk__option_ns(o->check_after_ms, 1000, &p->check_after_ns);
    pk__option_ns(o->check_interval_ms, PK_NEVER, &p->check_interval_ns);
    pk__option_ns(o->held_too_long_ms, PK_NEVER, &p->held_ns);
    pk__option_ns(o->maintain_interval_ms, 1000, &p->interval_ns);
    pk__option_ns(o->backoff_initial_ms, 10, &p->backoff_initial_ns);
    pk__option_ns(o->max_backoff_ms, 10000, &p->max_backoff_ns);
    pk__option_ns(o->max_backoff_waiting_ms, 100,
                  &p->max_backoff_waiting_ns);
    if (p->max_lifetime_ns == UINT64_MAX)
        p->jitter_ns = 0;
    else if (o->lifetime_jitter_ms)
        p->jitter_ns = (uint64_t)o->lifetime_jitter_ms * 1000000u;
    else
        p->jitter_ns = p->max_lifetime_ns / 40;
    if (p->max_backoff_ns == UINT64_MAX)
        p->max_backoff_ns = 0;
    if (p->backoff_initial_ns == UINT64_MAX)
        p->backoff_initial_ns = 0;
    if (p->backoff_initial_ns > p->max_backoff_ns)
        p->backoff_initial_ns = p->max_backoff_ns;
    /* PK_NEVER: no short cap, the long one applies while anyone waits. */
    if (p->max_backoff_waiting_ns > p->max_backoff_ns)
        p->max_backoff_waiting_ns = p->max_backoff_ns;
}

/* Copies options that passed pk_pool_options_check. */
static void
copy_options(struct pk_pool *p, const pk_pool_options *o)
{
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
    p->max_size = o->max_size ? o->max_size : PK__POOL_DEFAULT_MAX_SIZE;
    p->max_creating = o->max_creating ? o->max_creating : 2;
    p->max_uses = o->max_uses;
    p->order = o->order;
    p->flags = o->flags;
    p->group = o->group;
    copy_times(p, o);
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
    rc = pk_pool_options_check(opts, NULL);
    if (rc)
        return rc;
    p = pk__calloc(1, sizeof *p);
    if (!p)
        return PK_ENOMEM;
    p->ops = &ops;
    pk__lock_init(&p->lock, PK__RANK_POOL);
    p->fork_epoch = pk__fork_epoch();
    copy_options(p, opts);
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

/* ---- destroy ---------------------------------------------------------- */

/* In a child after fork(): no thread joined, no protocol spoken. Idle
 * resources are forgotten now; a lent one when its lease comes back
 * (release_in_child), and the memory is freed with the last of
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
        pk__pool_free_memory(p);
        return;
    }
    atomic_store_explicit(&p->lock.v, 0, memory_order_relaxed);
    p->child_leases = out;
    /* Release: a release that sees it sees the fresh lock and the count. */
    atomic_store_explicit(&p->child_destroyed, true, memory_order_release);
}

/* pk_pool_release in a child after fork(): PK_EFORKED until the pool is
 * destroyed in the child; then forgets the resource (forget_in_child, not
 * for DETACH) and frees the pool with its last inherited lease. */
static int
release_in_child(struct pk_pool *p, pk_lease *l, int status)
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
        pk__pool_free_memory(p);
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

/* ---- acquire ---------------------------------------------------------- */

static void
fill_lease(struct pk_pool *p, pk_lease *l, struct pk__slot *s)
{
    l->resource = s->res;
    l->pool_ = p;
    l->slot_ = s;
    l->ticket_ = s->ticket;
}

/* who: the public call's name, for the messages. */
static int
acquire_args(pk_pool *p, pk_lease *lease, int timeout_ms, pk_error *err,
             const char *who)
{
    if (!p || !lease)
        return pk_error_set(err, PK_EINVAL, 0, "%s: %s is NULL", who,
                            p ? "the lease" : "the pool");
    if (p->magic != PK__POOL_MAGIC)
        return pk_error_set(err, PK_EINVAL, 0, "%s: not a live pool "
                            "(destroyed?)", who);
    if (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER)
        return pk_error_set(err, PK_EINVAL, 0, "%s: timeout %d ms (0, "
                            "positive or PK_WAIT_FOREVER)", who,
                            timeout_ms);
    if (pk__pool_forked(p))
        return pk_error_set(err, PK_EFORKED, 0, "%s: the pool was made "
                            "before fork(); a child makes pools of its "
                            "own", who);
    return 0;
}

/* The deadline is read from the clock only when a call has to wait: the
 * fast path never reads the clock. */
#define PK__DEADLINE_UNSET 1
/* acquire_once's timeout_ms for pk_pool_acquire_or_create: negative and
 * not PK_WAIT_FOREVER, so no caller's timeout can be it. */
#define PK__OR_CREATE (-2)

static uint64_t
deadline_of(int timeout_ms, uint64_t *deadline)
{
    if (*deadline == PK__DEADLINE_UNSET)
        pk__deadline(timeout_ms, deadline);
    return *deadline;
}

/* Waits in the queue for a slot, the lock held on entry and dropped on
 * return; with timeout_ms PK__OR_CREATE, as pk_pool_acquire_or_create
 * (keeps_own, no deadline). Returns 0 with *s (lent to the caller) and
 * *check set, or an error. */
static __attribute__((noinline)) int
wait_for_slot(struct pk_pool *p, int timeout_ms, uint64_t deadline,
              bool front, pk_error *err, const char *file, int line,
              struct pk__slot **s, bool *check)
{
    struct pk__waiter w;
    uint64_t t0 = pk__now_ns();
    int rc;

    memset(&w, 0, sizeof w);
    w.file = file;
    w.line = line;
    w.keeps_own = timeout_ms == PK__OR_CREATE;
    w.timeout_ms = w.keeps_own ? 0 : timeout_ms;
    pk__pool_waiter_enqueue(p, &w, front);
    rc = pk__pool_acquire_wait(p, &w, deadline, err);
    if (rc != PK__GOT_UNLOCKED)
        pk__pool_unlock(p);
    if (w.gpool)
        pk__group_leave_wait(p->group, &w);
    if (rc == PK_ETIMEDOUT)
        pk__pool_emit_simple(p, PK_EVENT_TIMEOUT, NULL, NULL);
    if (rc < 0)
        return rc;
    pk__hist_add(&p->wait_hist, pk__now_ns() - t0);
    *s = w.slot;
    *check = w.needs_check;
    return 0;
}

/* One try: an idle resource at once (one lock section, the plain path),
 * or a wait in the queue; with timeout_ms PK__OR_CREATE (never a
 * caller's: they are validated) the queue of pk_pool_acquire_or_create,
 * if the pool has room. Returns 0 (lease filled), 1 (what it got failed
 * its check and was retired: try again), or an error. */
static int
acquire_once(struct pk_pool *p, pk_lease *lease, int timeout_ms,
             uint64_t *deadline, pk_error *err, const char *file, int line,
             bool front)
{
    struct pk__slot *s;
    bool check = false;
    int rc;

    pk__lock_acquire(&p->lock);
    if (p->closed) {
        pk__pool_unlock(p);
        return pk_error_set(err, PK_ESHUTDOWN, 0, "the pool is closed");
    }
    s = pk__pool_take_idle_locked(p, file, line, &check);
    if (s) {
        p->st_nowait_acquires++;
        pk__pool_unlock(p);
    } else if (timeout_ms == 0) {
        pk__pool_explain_locked(p, err, PK_EAGAIN, 0);
        pk__pool_unlock(p);
        return PK_EAGAIN;
    } else if (timeout_ms == PK__OR_CREATE && !pk__pool_has_room_locked(p)) {
        pk__pool_explain_own_locked(p, err);
        pk__pool_unlock(p);
        return PK_EAGAIN;
    } else {
        rc = wait_for_slot(p, timeout_ms,
                           timeout_ms == PK__OR_CREATE
                               ? 0
                               : deadline_of(timeout_ms, deadline),
                           front, err, file, line, &s, &check);
        if (rc)
            return rc;
    }
    if (check && pk__pool_check_lent(p, s) != 0)
        return 1; /* it was retired: try again */
    fill_lease(p, lease, s);
    return 0;
}

int
pk_pool_acquire_at(pk_pool *p, pk_lease *lease, int timeout_ms,
                   pk_error *err, const char *file, int line)
{
    uint64_t deadline = PK__DEADLINE_UNSET;
    bool front = false;
    int rc;

    rc = acquire_args(p, lease, timeout_ms, err, "pk_pool_acquire");
    if (rc != 0)
        return rc;
    lease->resource = NULL;
    lease->pool_ = NULL;
    lease->slot_ = NULL;
    for (;;) {
        rc = acquire_once(p, lease, timeout_ms, &deadline, err, file, line,
                          front);
        if (rc != 1)
            return rc;
        /* A check failed and retired what we got: try again, first in
         * line, within the same deadline. */
        front = true;
        if (timeout_ms == 0)
            return pk_error_set(err, PK_EAGAIN, 0, "the idle resource "
                                "failed its check, and a 0 ms timeout "
                                "does not wait");
        if (pk__now_ns() >= deadline_of(timeout_ms, &deadline))
            return pk_error_set(err, PK_ETIMEDOUT, 0, "timed out after "
                                "%d ms waiting: what this call got failed "
                                "its check", timeout_ms);
    }
}

int
pk_pool_acquire_or_create_at(pk_pool *p, pk_lease *lease, pk_error *err,
                             const char *file, int line)
{
    uint64_t deadline = PK__DEADLINE_UNSET;
    int rc;

    rc = acquire_args(p, lease, 0, err, "pk_pool_acquire_or_create");
    if (rc != 0)
        return rc;
    lease->resource = NULL;
    lease->pool_ = NULL;
    lease->slot_ = NULL;
    rc = acquire_once(p, lease, PK__OR_CREATE, &deadline, err, file, line,
                      false);
    if (rc != 1)
        return rc;
    /* Not again: with a check that keeps failing (check_after PK_ALWAYS
     * checks even a new one), making another would have no end. */
    return pk_error_set(err, PK_EAGAIN, 0, "pk_pool_acquire_or_create: "
                        "what it got failed its check");
}

/* ---- release and lease info ------------------------------------------- */

int
pk_pool_release(pk_pool *p, pk_lease *l, int status)
{
    if (!p || !l || p->magic != PK__POOL_MAGIC || l->pool_ != p ||
        !l->slot_)
        return PK_EINVAL;
    if (status < PK_RELEASE_OK || status > PK_RELEASE_DETACH)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return release_in_child(p, l, status);
    return pk__pool_release_lease(p, l, status);
}

int
pk_lease_info_get(const pk_lease *l, pk_lease_info *info)
{
    struct pk_pool *p;
    struct pk__slot *s;
    uint64_t now;
    int rc = PK_EINVAL;

    if (!l || !info || !l->pool_ || !l->slot_ ||
        l->pool_->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__pool_forked(l->pool_))
        return PK_EFORKED;
    p = l->pool_;
    s = l->slot_;
    now = pk__pool_now(p);
    pk__lock_acquire(&p->lock);
    if (s->state == PK__S_LENT && s->ticket == l->ticket_) {
        info->age_ns = now > s->created_ns ? now - s->created_ns : 0;
        info->idle_ns = s->idle_ns;
        info->uses = s->uses;
        info->generation = s->generation;
        info->file = s->file;
        info->line = s->line;
        rc = 0;
    }
    pk__pool_unlock(p);
    return rc;
}

/* ---- stats ------------------------------------------------------------ */

static void
backoff_stats_locked(struct pk_pool *p, pk_pool_stats *o)
{
    uint64_t now, next;

    o->last_create_age_ns = UINT64_MAX;
    o->next_attempt_in_ns = UINT64_MAX;
    if (!p->fail_streak)
        return;
    now = pk__pool_now(p);
    next = pk__pool_next_attempt_locked(p);
    o->last_create_error = p->last_err.code;
    o->last_create_age_ns = now > p->fail_ns ? now - p->fail_ns : 0;
    o->next_attempt_in_ns = next > now ? next - now : 0;
}

int
pk_pool_stats_get(pk_pool *p, pk_pool_stats *o)
{
    uint64_t zeros;

    if (!p || !o || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    memset(o, 0, sizeof *o);
    pk__lock_acquire(&p->lock);
    o->size = p->alive;
    o->idle = p->idle;
    o->lent = p->lent;
    o->creating = p->creating;
    o->waiters = p->waiters;
    o->max_size = p->max_size;
    o->generation = p->generation;
    o->created = p->st_created;
    o->destroyed = p->st_destroyed;
    o->detached = p->st_detached;
    o->acquires = p->st_acquires;
    o->timeouts = p->st_timeouts;
    o->check_failures = p->st_check_failures;
    o->create_failures = p->st_create_failures;
    backoff_stats_locked(p, o);
    zeros = p->st_nowait_acquires - p->st_nowait_at_reset;
    pk__pool_unlock(p);
    o->wait_p50_ns = pk__hist_quantile(&p->wait_hist, 0.50, zeros);
    o->wait_p99_ns = pk__hist_quantile(&p->wait_hist, 0.99, zeros);
    o->wait_max_ns = pk__hist_max(&p->wait_hist);
    return 0;
}

int
pk_pool_stats_reset_wait(pk_pool *p)
{
    if (!p || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    pk__lock_acquire(&p->lock);
    p->st_nowait_at_reset = p->st_nowait_acquires;
    pk__hist_clear(&p->wait_hist);
    pk__pool_unlock(p);
    return 0;
}
