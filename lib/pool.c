/* lib/pool.c - the resource pool: creating it, lending and taking back.
 *
 * One mutex guards the population. The hot path is short: an acquire that
 * finds an idle resource and no queue takes it in one lock section, and a
 * release with no waiter puts it back in one. Everything that can block
 * or call user code (create, check, reset, destroy) runs with the lock
 * dropped; the slot's state says who owns it meanwhile (see pool_int.h).
 *
 * Waiters queue in arrival order. A release hands its resource straight to
 * the head waiter (state stays LENT, the waiter's parking word goes to
 * W_HANDED), so a newcomer can never barge past a waiter: with a queue,
 * the fast path is closed to newcomers. A waiter that sees that creates are
 * wanted and allowed runs one itself and delivers the result to the head of
 * the queue, which is usually itself.
 *
 * Invariant: when the pool is not paused, idle resources and waiters never
 * coexist once the lock is dropped; whoever makes a resource idle calls
 * pk__pool_serve_waiters_locked. */
#include "pool_int.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

/* ---- small helpers ---------------------------------------------------- */

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

static void
emit_simple(struct pk_pool *p, pk_event_kind kind, void *res,
            const pk_error *err)
{
    struct pk__ev e = { kind, res, NULL, 0, 0, err };
    pk__pool_emit(p, &e);
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

void
pk__pool_unlock_slow(struct pk_pool *p)
{
    struct pk_pool_ticket *list = p->notify_head;
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
        pk__ticket_notify_list(list);
}

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

void
pk__pool_waiter_enqueue(struct pk_pool *p, struct pk__waiter *w, bool front)
{
    w->queued = true;
    if (front) {
        w->prev = NULL;
        w->next = p->wait_head;
        if (p->wait_head)
            p->wait_head->prev = w;
        else
            p->wait_tail = w;
        p->wait_head = w;
    } else {
        w->next = NULL;
        w->prev = p->wait_tail;
        if (p->wait_tail)
            p->wait_tail->next = w;
        else
            p->wait_head = w;
        p->wait_tail = w;
    }
    p->waiters++;
    if (w->ticket)
        p->async_waiters++;
}

void
pk__pool_waiter_dequeue(struct pk_pool *p, struct pk__waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    p->waiters--;
    if (w->ticket)
        p->async_waiters--;
}

/* ---- idle list -------------------------------------------------------- */

/* For the group's choice of a victim (pool_group.c). */
static void
update_idle_hints(struct pk_pool *p)
{
    atomic_store_explicit(&p->idle_hint, p->idle, memory_order_relaxed);
    atomic_store_explicit(&p->oldest_idle_hint,
                          p->idle_tail ? p->idle_tail->idle_since_ns
                                       : UINT64_MAX,
                          memory_order_relaxed);
}

/* The idle list keeps the most recently idled resource at the head: LIFO
 * pops the head (warm), FIFO pops the tail (rotation), and the tail is
 * always the longest idle (what trimming and groups retire first). */
void
pk__pool_idle_push_locked(struct pk_pool *p, struct pk__slot *s)
{
    s->state = PK__S_IDLE;
    s->prev = NULL;
    s->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = s;
    else
        p->idle_tail = s;
    p->idle_head = s;
    p->idle++;
    if (p->group)
        update_idle_hints(p);
}

void
pk__pool_idle_remove_locked(struct pk_pool *p, struct pk__slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->idle_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        p->idle_tail = s->prev;
    s->prev = s->next = NULL;
    p->idle--;
    if (p->group)
        update_idle_hints(p);
}

static struct pk__slot *
idle_pop(struct pk_pool *p)
{
    struct pk__slot *s = p->order == PK_POOL_FIFO ? p->idle_tail
                                                  : p->idle_head;
    if (s)
        pk__pool_idle_remove_locked(p, s);
    return s;
}

void
pk__pool_update_hot_locked(struct pk_pool *p)
{
    p->hot = !p->needs_clock && !p->reset && !p->max_uses && !p->group &&
             !p->paused && !p->closed && p->min_idle == 0;
}

/* ---- slots ------------------------------------------------------------ */

static struct pk__slot *
slot_get(struct pk_pool *p)
{
    struct pk__slot *s = p->free_slots;

    if (s) {
        p->free_slots = s->next;
        s->next = NULL;
        return s;
    }
    s = pk__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->all_next = p->all_slots;
    p->all_slots = s;
    return s;
}

static void
slot_put(struct pk_pool *p, struct pk__slot *s)
{
    s->state = PK__S_FREE;
    s->res = NULL;
    s->ticket++; /* any lease still naming this slot is now stale */
    s->prev = NULL;
    s->next = p->free_slots;
    p->free_slots = s;
}

/* Lends s to the holder of a lease being filled now. */
static void
slot_lend(struct pk_pool *p, struct pk__slot *s, uint64_t now,
          const char *file, int line)
{
    s->state = PK__S_LENT;
    s->ticket++;
    s->uses++;
    s->idle_ns = now > s->idle_since_ns ? now - s->idle_since_ns : 0;
    s->lent_ns = now;
    s->held_reported = false;
    s->file = file;
    s->line = line;
    p->lent++;
    p->st_acquires++;
}

static bool
slot_needs_check(const struct pk_pool *p, const struct pk__slot *s,
                 uint64_t now)
{
    if (s->generation < p->generation)
        return true;
    if (!p->check || p->check_after_ns == UINT64_MAX)
        return false;
    return now - s->idle_since_ns >= p->check_after_ns;
}

static bool
slot_expired(const struct pk_pool *p, const struct pk__slot *s, uint64_t now)
{
    if (s->generation < p->evict_gen)
        return true;
    if (p->max_uses && s->uses >= p->max_uses)
        return true;
    return p->max_lifetime_ns != UINT64_MAX && now >= s->expires_ns;
}

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
    emit_simple(p, PK_EVENT_DESTROYED, res, NULL);
    pk__lock_acquire(&p->lock);
    slot_put(p, s);
    p->retiring--;
    p->st_destroyed++;
    pk__pool_wake_retry_locked(p);
    free_now = pk__pool_may_free_locked(p);
    pk__pool_unlock(p);
    if (free_now)
        pk__pool_free(p);
    return free_now;
}

/* ---- serving waiters -------------------------------------------------- */

/* Hands s (already counted as lent) to waiter w, which leaves the queue. */
static void
hand_to(struct pk_pool *p, struct pk__waiter *w, struct pk__slot *s,
        uint64_t now)
{
    bool check = slot_needs_check(p, s, now);

    pk__pool_waiter_dequeue(p, w);
    p->lent--; /* slot_lend counts it again */
    slot_lend(p, s, now, w->file, w->line);
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

    if (p->paused || !p->wait_head || !p->idle_head)
        return;
    now = p->needs_clock ? pk__pool_now(p) : 0;
    while (p->wait_head && p->idle_head) {
        struct pk__slot *s = idle_pop(p);
        p->lent++;
        hand_to(p, p->wait_head, s, now);
    }
}

void
pk__pool_wake_retry_locked(struct pk_pool *p)
{
    bool async = false;

    for (struct pk__waiter *w = p->wait_head; w; w = w->next) {
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
static void
deliver_locked(struct pk_pool *p, struct pk__slot *s, uint64_t now)
{
    s->idle_since_ns = now;
    if (p->wait_head && !p->paused) {
        p->lent++;
        hand_to(p, p->wait_head, s, now);
        return;
    }
    pk__pool_idle_push_locked(p, s);
}

/* ---- create ----------------------------------------------------------- */

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
    return p->fail_streak == 0 || now >= p->backoff_until_ns;
}

static uint64_t
backoff_ns(struct pk_pool *p)
{
    unsigned shift = p->fail_streak > 30 ? 30 : p->fail_streak - 1;
    uint64_t d = p->backoff_initial_ns << shift;

    if (d > p->max_backoff_ns || d >> shift != p->backoff_initial_ns)
        d = p->max_backoff_ns;
    /* Jitter: between half and all of d, so pools that failed together
     * do not retry together. */
    return d / 2 + (d ? xorshift(&p->rng) % (d / 2 + 1) : 0);
}

static void
record_create_failure(struct pk_pool *p, int rc, const pk_error *e,
                      uint64_t now)
{
    p->st_create_failures++;
    p->fail_streak++;
    p->backoff_until_ns = now + backoff_ns(p);
    p->last_err = *e;
    p->last_err.code = rc;
    if (!p->last_err.msg[0])
        pk_error_set(&p->last_err, rc, e->sys, "create failed: %s",
                     pk_strerror(rc));
}

/* Runs one create with the lock held on entry and on return (it is dropped
 * around the hook). The group budget, if any, was taken by the caller's
 * reservation. On success the resource is delivered to the queue head;
 * on failure self (if given) leaves the queue with the error. Returns 0 or
 * the create's code. */
int
pk__pool_create_one(struct pk_pool *p, struct pk__waiter *self,
                    pk_error *err)
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
    s = slot_get(p);
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
        emit_simple(p, PK_EVENT_CREATED, res, NULL);

    pk__lock_acquire(&p->lock);
    p->creating--;
    if (rc < 0) {
        p->alive--;
        slot_put(p, s);
        record_create_failure(p, rc, &e, now);
        if (self && self->queued) {
            pk__pool_waiter_dequeue(p, self);
            self->err = rc; /* tells an async caller it was this create */
            if (err)
                *err = p->last_err;
        }
        /* Others that wanted a create re-evaluate: they fail fast now. */
        pk__pool_wake_retry_locked(p);
        e = p->last_err;
        pk__pool_unlock(p);
        if (p->group)
            pk__group_put(p->group);
        emit_simple(p, PK_EVENT_CREATE_FAILED, NULL, &e);
        pk__lock_acquire(&p->lock);
        return rc;
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
    deliver_locked(p, s, now);
    /* A create slot is free again (test_pool: max_creating): waiters that
     * parked because max_creating creates were running are woken to make
     * the next one; nothing else would wake them before their deadline. */
    if (pk__pool_creates_wanted_locked(p) > 0)
        pk__pool_wake_retry_locked(p);
    return 0;
}

/* ---- create / destroy the pool ---------------------------------------- */

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
           p->min_idle > 0;
}

/* Fills min_size / min_idle on the creating thread. Failures are left to
 * maintenance: the pool is usable while its backend is down. */
static void
prefill(struct pk_pool *p)
{
    pk__lock_acquire(&p->lock);
    while (pk__pool_creates_wanted_locked(p) > 0 &&
           pk__pool_can_create_locked(p, pk__pool_now(p))) {
        if (pk__pool_create_one(p, NULL, NULL) != 0)
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
    pk__pool_update_hot_locked(p);
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
void
pk__pool_free(struct pk_pool *p)
{
    struct pk__slot *s = p->all_slots;

    if (p->user_free)
        p->user_free(p->user);
    while (s) {
        struct pk__slot *n = s->all_next;
        pk__free(s);
        s = n;
    }
    p->magic = 0;
    pk__free(p);
}

/* In a child after fork(): no lock may be taken (its owner may not exist
 * here), no thread joined, no protocol spoken. Forget resources and free
 * memory. */
static void
destroy_in_child(struct pk_pool *p)
{
    for (struct pk__slot *s = p->all_slots; s; s = s->all_next) {
        /* Not FREE or CREATING (no resource yet), nor RETIRING: its
         * destroy hook was running in the parent at fork time, and the
         * descriptors may already be half closed. */
        if (p->forget_in_child && s->state != PK__S_FREE &&
            s->state != PK__S_CREATING && s->state != PK__S_RETIRING)
            p->forget_in_child(p->user, s->res);
    }
    for (struct pk__slot *s = p->all_slots; s;) {
        struct pk__slot *n = s->all_next;
        pk__free(s);
        s = n;
    }
    p->magic = 0;
    pk__free(p);
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

static bool
fail_fast_locked(struct pk_pool *p, uint64_t now)
{
    /* Creates are failing and in backoff, nothing is being made, and the
     * pool has room: waiting would only wait out the backoff. */
    return p->fail_streak > 0 && now < p->backoff_until_ns &&
           p->creating == 0 && p->alive < p->max_size && !p->paused;
}

/* One evaluation of a queued waiter. Returns 1 when w has a slot, a
 * negative code when it must give up, 0 to keep waiting. */
static int
waiter_step(struct pk_pool *p, struct pk__waiter *w, pk_error *err)
{
    uint64_t now;

    if (w->slot)
        return 1;
    if (p->closed) {
        pk__pool_waiter_dequeue(p, w);
        return PK_ESHUTDOWN;
    }
    now = pk__pool_now(p);
    if (pk__pool_creates_wanted_locked(p) > 0 &&
        pk__pool_can_create_locked(p, now)) {
        int rc = pk__pool_create_one(p, w, err);
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
        if (rc < 0 && rc != PK_EAGAIN && !w->queued)
            return rc;
        if (rc == PK_ENOMEM) {
            pk__pool_waiter_dequeue(p, w);
            return rc;
        }
        now = pk__pool_now(p);
    }
    if (fail_fast_locked(p, now)) {
        pk__pool_waiter_dequeue(p, w);
        if (err)
            *err = p->last_err;
        return p->last_err.code;
    }
    return 0;
}

/* How long a parked waiter sleeps: to its deadline, or to the end of the
 * create backoff if a create will then be wanted. */
static uint64_t
park_deadline(struct pk_pool *p, uint64_t deadline)
{
    uint64_t now, mono;

    if (p->fail_streak == 0 || p->clock)
        return deadline;
    now = pk__pool_now(p);
    if (p->backoff_until_ns <= now)
        return deadline;
    mono = pk__now_ns() + (p->backoff_until_ns - now);
    return mono < deadline ? mono : deadline;
}

/* acquire_wait's results besides error codes; GOT_LOCKED returns with the
 * lock held, GOT_UNLOCKED without. */
enum { PK__GOT_LOCKED = 1, PK__GOT_UNLOCKED = 2 };

static int
acquire_wait(struct pk_pool *p, struct pk__waiter *w, uint64_t deadline,
             pk_error *err)
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
        rc = waiter_step(p, w, err);
        if (rc)
            return rc;
        if (pk__now_ns() >= deadline) {
            pk__pool_waiter_dequeue(p, w);
            p->st_timeouts++;
            return PK_ETIMEDOUT;
        }
        if (!granted && atomic_load(&w->granted))
            continue; /* a grant came while we looked: use it */
        uint64_t until = park_deadline(p, deadline);
        pk__pool_unlock(p);
        uint32_t v = pk__park(&w->park, until);
        if (v == PK__W_HANDED)
            return PK__GOT_UNLOCKED; /* slot set before the word */
        pk__lock_acquire(&p->lock);
    }
}

/* Runs the check hook on a lent slot outside the lock. Returns 0 if
 * healthy; otherwise retires it (bumping the generation) and returns the
 * check's code. */
int
pk__pool_check_lent(struct pk_pool *p, struct pk__slot *s)
{
    pk_error e;
    int rc = 0;

    pk_error_clear(&e);
    if (p->check)
        rc = p->check(p->user, s->res, &e);
    else
        rc = PK_ECHECK; /* evicted while lent, without a check hook */
    if (rc == 0) {
        /* Healthy in this generation, as run_check records it
         * (test_pool: checked after a bump): without this a resource of
         * an older generation was checked again on every lend. One
         * evicted meanwhile keeps its old generation and retires on
         * release. */
        pk__lock_acquire(&p->lock);
        if (s->generation >= p->evict_gen)
            s->generation = p->generation;
        pk__pool_unlock(p);
        return 0;
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
        emit_simple(p, PK_EVENT_CHECK_FAILED, s->res, &e);
    pk__pool_finish_retire(p, s);
    return rc;
}

static int
acquire_args(pk_pool *p, pk_lease *lease, int timeout_ms)
{
    if (!p || !lease || p->magic != PK__POOL_MAGIC)
        return PK_EINVAL;
    if (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    return 0;
}

/* The deadline is read from the clock only when a call has to wait: the
 * fast path never reads the clock. */
#define PK__DEADLINE_UNSET 1

static uint64_t
deadline_of(int timeout_ms, uint64_t *deadline)
{
    if (*deadline == PK__DEADLINE_UNSET)
        pk__deadline(timeout_ms, deadline);
    return *deadline;
}

/* Takes an idle resource if the fast path is open: no queue, not paused.
 * Returns the slot lent to the caller, or NULL. */
struct pk__slot *
pk__pool_take_idle_locked(struct pk_pool *p, const char *file, int line,
                 bool *needs_check)
{
    struct pk__slot *s;
    uint64_t now;

    if (p->wait_head || p->paused || !p->idle_head)
        return NULL;
    s = idle_pop(p);
    now = p->needs_clock ? pk__pool_now(p) : 0;
    *needs_check = slot_needs_check(p, s, now);
    slot_lend(p, s, now, file, line);
    if (p->idle < p->min_idle && p->bg_running)
        pk__pool_bg_kick_locked(p);
    return s;
}

/* The fast path of acquire: an idle resource, no queue, no policy to
 * evaluate (p->hot) and nothing to check (current generation). */
static inline struct pk__slot *
hot_take_locked(struct pk_pool *p, const char *file, int line)
{
    struct pk__slot *s = p->order == PK_POOL_FIFO ? p->idle_tail
                                                  : p->idle_head;

    if (!p->hot || p->wait_head || !s || s->generation != p->generation)
        return NULL;
    pk__pool_idle_remove_locked(p, s);
    s->state = PK__S_LENT;
    s->ticket++;
    s->uses++;
    s->file = file;
    s->line = line;
    p->lent++;
    p->st_fast_acquires++;
    return s;
}

static int
acquire_once(struct pk_pool *p, pk_lease *lease, int timeout_ms,
             uint64_t *deadline, pk_error *err, const char *file, int line,
             bool front, bool locked)
{
    struct pk__waiter w;
    struct pk__slot *s;
    bool check = false;
    uint64_t t0;
    int rc;

    if (!locked)
        pk__lock_acquire(&p->lock);
    if (p->closed) {
        pk__pool_unlock(p);
        return PK_ESHUTDOWN;
    }
    s = pk__pool_take_idle_locked(p, file, line, &check);
    if (s) {
        p->st_nowait_acquires++;
        pk__pool_unlock(p);
    } else if (timeout_ms == 0) {
        pk__pool_unlock(p);
        return PK_EAGAIN;
    } else {
        t0 = pk__now_ns();
        memset(&w, 0, sizeof w);
        w.file = file;
        w.line = line;
        pk__pool_waiter_enqueue(p, &w, front);
        rc = acquire_wait(p, &w, deadline_of(timeout_ms, deadline), err);
        if (rc != PK__GOT_UNLOCKED)
            pk__pool_unlock(p);
        if (w.gpool)
            pk__group_leave_wait(p->group, &w);
        if (rc == PK_ETIMEDOUT)
            emit_simple(p, PK_EVENT_TIMEOUT, NULL, NULL);
        if (rc < 0)
            return rc;
        pk__hist_add(&p->wait_hist, pk__now_ns() - t0);
        s = w.slot;
        check = w.needs_check;
    }
    if (check && pk__pool_check_lent(p, s) != 0)
        return 1; /* it was retired: try again */
    fill_lease(p, lease, s);
    return 0;
}

/* Everything but the hot path, entered with the lock held. */
static __attribute__((noinline)) int
acquire_slow(struct pk_pool *p, pk_lease *lease, int timeout_ms,
             pk_error *err, const char *file, int line)
{
    uint64_t deadline = PK__DEADLINE_UNSET;
    bool front = false, locked = true;
    int rc;

    for (;;) {
        rc = acquire_once(p, lease, timeout_ms, &deadline, err, file, line,
                          front, locked);
        if (rc != 1)
            return rc;
        /* A check failed and retired what we got: try again, first in
         * line, within the same deadline. */
        front = true;
        locked = false;
        if (timeout_ms == 0)
            return PK_EAGAIN;
        if (pk__now_ns() >= deadline_of(timeout_ms, &deadline))
            return PK_ETIMEDOUT;
    }
}

int
pk_pool_acquire_at(pk_pool *p, pk_lease *lease, int timeout_ms,
                   pk_error *err, const char *file, int line)
{
    struct pk__slot *s;
    int rc;

    rc = acquire_args(p, lease, timeout_ms);
    if (__builtin_expect(rc != 0, 0))
        return rc;
    lease->resource = NULL;
    lease->pool_ = NULL;
    lease->slot_ = NULL;
    pk__lock_acquire(&p->lock);
    s = hot_take_locked(p, file, line);
    if (__builtin_expect(s == NULL, 0))
        return acquire_slow(p, lease, timeout_ms, err, file, line);
    pk__pool_unlock(p);
    fill_lease(p, lease, s);
    return 0;
}

/* ---- release ---------------------------------------------------------- */

static bool
must_retire_locked(struct pk_pool *p, struct pk__slot *s, uint64_t now)
{
    if (p->closed || slot_expired(p, s, now) || p->alive > p->max_size)
        return true;
    /* A group member gives a spare resource back to the shared budget
     * when another key is waiting for one and nobody here is. */
    return p->group && !p->wait_head && pk__group_has_waiters(p->group);
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
    emit_simple(p, PK_EVENT_DETACHED, res, NULL);
    pk__lock_acquire(&p->lock);
    p->lent--;
    p->alive--;
    p->st_detached++;
    slot_put(p, s);
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
        emit_simple(p, PK_EVENT_CHECK_FAILED, s->res, &e);
    }
    pk__lock_acquire(&p->lock);
    if (rc != 0)
        p->st_check_failures++;
    return rc == 0;
}

/* Everything but the hot path, entered with the lock held and the lease
 * validated and made stale. */
static __attribute__((noinline)) int
release_slow(struct pk_pool *p, struct pk__slot *s, int status)
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
    deliver_locked(p, s, now);
    pk__pool_unlock(p);
    return 0;
}

int
pk_pool_release(pk_pool *p, pk_lease *l, int status)
{
    struct pk__slot *s;

    if (!p || !l || p->magic != PK__POOL_MAGIC || l->pool_ != p ||
        !l->slot_)
        return PK_EINVAL;
    if (status < PK_RELEASE_OK || status > PK_RELEASE_DETACH)
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    s = l->slot_;
    pk__lock_acquire(&p->lock);
    if (s->state != PK__S_LENT || s->ticket != l->ticket_) {
        pk__pool_unlock(p);
        return PK_EINVAL;
    }
    s->ticket++;
    l->resource = NULL;
    l->pool_ = NULL;
    l->slot_ = NULL;
    if (__builtin_expect(status != PK_RELEASE_OK || !p->hot ||
                             p->wait_head || s->generation < p->evict_gen ||
                             p->alive > p->max_size,
                         0))
        return release_slow(p, s, status);
    /* Hot path: no reset, no clock, no limit, nobody waiting. */
    p->lent--;
    pk__pool_idle_push_locked(p, s);
    pk__pool_unlock(p);
    return 0;
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
