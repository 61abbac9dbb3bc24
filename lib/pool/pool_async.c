/* lib/pool/pool_async.c - the non-blocking acquire for event loops.
 *
 * A ticket is a waiter that lives on the heap instead of a caller's
 * stack. It joins the same arrival-order queue as blocking acquirers, so
 * fairness is the same for both. The caller never runs a hook: creates,
 * checks and deadline expiry for tickets run on the pool's background
 * thread (started on demand) or inside pk_pool_maintain(). Owns the
 * tickets and p->check_head (tickets handed a slot that must be checked
 * first, on the helper thread).
 *
 * Ticket states (t->state, atomic so take() can poll without the lock):
 *   PENDING  queued, or handed a slot that is being checked
 *   READY    w.slot set (a lease waits) or w.err set (the request failed)
 *   TAKEN    the owner took or freed it (terminal): a CAS READY -> TAKEN
 *            claims the result, so it is handed out once
 * Readiness is announced after the pool lock is dropped (pk__pool_unlock
 * walks p->notify_head): the callback runs, then the eventfd is written.
 * A reference held by the notify list keeps the ticket alive until then.
 *
 * The callback (t->cb_state) is claimed by a CAS too:
 *   CB_NONE -> CB_RUNNING (the notifier, which then calls it) -> CB_DONE
 *   CB_NONE -> CB_CANCELLED (take or free, before they return)
 * So a callback never starts after take or free has returned (its arg may
 * be gone by then, and it could take the ticket again: a second lease of
 * a slot already released). A take or free that finds it running on
 * another thread waits for it to return; one called from the callback
 * itself (cb_thread) does not. */
#include "pool_int.h"

#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../kit/alloc.h"

enum { T_PENDING = 0, T_READY = 1, T_TAKEN = 2 };
enum { CB_NONE = 0, CB_RUNNING, CB_DONE, CB_CANCELLED };

struct pk_pool_ticket {
    struct pk__waiter w;
    struct pk_pool *pool;
    _Atomic int state;
    _Atomic int refs;
    _Atomic int efd;         /* -1 until pk_pool_ticket_fd asks for one */
    pk_ticket_fn cb;
    void *arg;
    _Atomic int cb_state;    /* CB_*, see above */
    pthread_t cb_thread;     /* written before CB_RUNNING (release) */
    uint64_t deadline;       /* CLOCK_MONOTONIC */
    uint64_t t0;             /* when it was made: its wait goes to the
                                pool's wait_hist, as a blocking acquire's */
    pk_error err;
    struct pk_pool_ticket *notify_next;
    bool abandoned;          /* under the pool lock: freed while checked */
};

static void
close_fd(struct pk_pool_ticket *t)
{
    int fd = atomic_load_explicit(&t->efd, memory_order_relaxed);

    if (fd >= 0)
        close(fd);
}

/* Announces readiness on the eventfd if the owner asked for one. */
static void
signal_fd(struct pk_pool_ticket *t)
{
    int fd = atomic_load(&t->efd);
    uint64_t one = 1;

    /* An eventfd write fails only on counter overflow, which a write or
     * two per ticket cannot cause. */
    if (fd >= 0 && write(fd, &one, sizeof one) < 0)
        return;
}

static void
ticket_unref(struct pk_pool_ticket *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        close_fd(t);
        pk__free(t);
    }
}

static void
push_notify(struct pk_pool *p, struct pk_pool_ticket *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    t->notify_next = p->notify_head;
    p->notify_head = t;
}

void
pk__ticket_ready_locked(struct pk_pool *p, struct pk__waiter *w)
{
    struct pk_pool_ticket *t = w->ticket;

    /* Out of the group's budget queue first: a grant now would be lost
     * (leave_wait gives an unused one back). Group lock is a leaf. */
    if (w->gpool && p->group)
        pk__group_leave_wait(p->group, w);
    if (w->slot && w->needs_check) {
        /* Checked on the helper thread, never on the event loop. The
         * check list holds a reference of its own: pk_pool_ticket_free
         * may drop the owner's while the ticket waits here (abandoned);
         * without it the helper read a freed ticket (stress_pool). */
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        t->notify_next = p->check_head;
        p->check_head = t;
        pk__pool_bg_kick_locked(p);
        return;
    }
    if (w->slot)
        pk__hist_add(&p->wait_hist, pk__now_ns() - t->t0);
    if (w->err == PK_ETIMEDOUT && !t->err.code)
        pk__pool_explain_locked(p, &t->err, PK_ETIMEDOUT, w->timeout_ms);
    else if (w->err == PK_ESHUTDOWN && !t->err.code)
        pk_error_set(&t->err, PK_ESHUTDOWN, 0, "the pool was closed while "
                     "the ticket waited");
    else if (w->err && !t->err.code)
        pk_error_set(&t->err, w->err, 0, NULL);
    /* The notify reference first: once READY is visible, the owner may
     * take or free the ticket without the lock, and its reference may be
     * the last (stress_pool: a double free when READY came first). */
    push_notify(p, t);
    /* seq_cst: pairs with pk_pool_ticket_fd making the eventfd late. */
    atomic_store(&t->state, T_READY);
}

/* Runs t's callback unless take or free claimed it first. */
static void
run_callback(struct pk_pool_ticket *t)
{
    int none = CB_NONE;

    t->cb_thread = pthread_self();
    /* Release: cb_thread reaches a take that sees RUNNING. */
    if (!atomic_compare_exchange_strong_explicit(&t->cb_state, &none,
                                                 CB_RUNNING,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire))
        return; /* taken or freed already: its owner is done with it */
    t->cb(t->arg, t);
    /* Release: what the callback wrote reaches a take waiting for it. */
    atomic_store_explicit(&t->cb_state, CB_DONE, memory_order_release);
}

void
pk__ticket_notify_list(struct pk_pool_ticket *t)
{
    while (t) {
        struct pk_pool_ticket *next = t->notify_next;
        if (t->cb)
            run_callback(t);
        signal_fd(t);
        ticket_unref(t);
        t = next;
    }
}

/* Makes sure t's callback will not start, and waits for one already
 * running on another thread (it must not block: pool.h). From inside the
 * callback itself there is nothing to wait for. */
static void
cancel_callback(struct pk_pool_ticket *t)
{
    int st = CB_NONE;

    if (atomic_compare_exchange_strong_explicit(&t->cb_state, &st,
                                                CB_CANCELLED,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return;
    if (st != CB_RUNNING || pthread_equal(t->cb_thread, pthread_self()))
        return;
    while (atomic_load_explicit(&t->cb_state, memory_order_acquire) ==
           CB_RUNNING)
        sched_yield();
}

/* Claims a READY ticket's result for its owner: true once only. */
static bool
claim(struct pk_pool_ticket *t)
{
    int ready = T_READY;

    return atomic_compare_exchange_strong_explicit(
        &t->state, &ready, T_TAKEN, memory_order_acq_rel,
        memory_order_acquire);
}

static int
ticket_new(struct pk_pool_ticket **out, struct pk_pool *p, int timeout_ms,
           pk_ticket_fn cb, void *arg)
{
    struct pk_pool_ticket *t = pk__calloc(1, sizeof *t);
    uint64_t ns;

    if (!t)
        return PK_ENOMEM;
    atomic_init(&t->efd, -1);
    atomic_init(&t->refs, 1);
    atomic_init(&t->state, T_PENDING);
    atomic_init(&t->cb_state, CB_NONE);
    t->pool = p;
    t->cb = cb;
    t->arg = arg;
    t->w.ticket = t;
    ns = timeout_ms ? (uint64_t)timeout_ms * 1000000u : p->acquire_timeout_ns;
    t->t0 = pk__now_ns();
    t->deadline = ns == UINT64_MAX || timeout_ms == PK_WAIT_FOREVER
                      ? UINT64_MAX
                      : pk__now_ns() + ns;
    t->w.timeout_ms = t->deadline == UINT64_MAX ? PK_WAIT_FOREVER
                                                : (int)(ns / 1000000u);
    *out = t;
    return 0;
}

/* A ticket's creates, checks and deadline run on the helper thread:
 * without it (it could not be started) the ticket would wait for ever, so
 * the acquire fails now instead. Under manual maintenance the caller's
 * pk_pool_maintain does that work. */
static int
helper_running_locked(struct pk_pool *p)
{
    if (p->bg_running || (p->flags & PK_POOL_MANUAL_MAINTENANCE))
        return 0;
    return pk__pool_bg_start_locked(p);
}

/* A ticket ready within the call (its result set): the caller learns it
 * from *ready, and its callback is not called (pool.h). Drops the lock. */
static int
ready_at_once(struct pk_pool *p, struct pk_pool_ticket *t,
              pk_pool_ticket **out, int *ready)
{
    atomic_store(&t->state, T_READY); /* seq_cst: see signal_fd */
    pk__pool_unlock(p);
    signal_fd(t);
    if (ready)
        *ready = 1;
    *out = t;
    return 0;
}

/* A ticket that waits for a create while creates fail, whose deadline
 * comes before the next attempt, fails now (the blocking acquire's rule,
 * pool_wait.c): with the error of the create the helper made for it, as
 * is, if that was the last to fail, else with the last one replayed.
 * True if w left the queue so, its error set. The caller announces it. */
static bool
gives_up_locked(struct pk_pool *p, struct pk__waiter *w)
{
    if (!pk__pool_gives_up_locked(p, w->ticket->deadline))
        return false;
    pk__pool_waiter_dequeue(p, w);
    w->err = p->last_err.code;
    if (w->own_failure == p->st_create_failures)
        w->ticket->err = p->last_err;
    else
        pk__pool_replay_error_locked(p, &w->ticket->err);
    return true;
}

int
pk_pool_acquire_async_at(pk_pool *p, pk_pool_ticket **out, int timeout_ms,
                         pk_ticket_fn cb, void *arg, int *ready,
                         const char *file, int line)
{
    struct pk_pool_ticket *t = NULL;
    struct pk__slot *s;
    bool check = false;
    int rc;

    if (!p || !out || p->magic != PK__POOL_MAGIC ||
        (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER))
        return PK_EINVAL;
    if (pk__pool_forked(p))
        return PK_EFORKED;
    rc = ticket_new(&t, p, timeout_ms, cb, arg);
    if (rc)
        return rc;
    t->w.file = file;
    t->w.line = line;
    if (ready)
        *ready = 0;
    pk__lock_acquire(&p->lock);
    if (p->closed) {
        pk__pool_unlock(p);
        ticket_unref(t);
        return PK_ESHUTDOWN;
    }
    /* With a check hook, the resource taken below may need the helper
     * thread: make sure it is there first (failing is better than a
     * ticket nobody will ever serve). */
    rc = p->check ? helper_running_locked(p) : 0;
    s = rc ? NULL : pk__pool_take_idle_locked(p, file, line, &check);
    if (s && !check) {
        t->w.slot = s;
        return ready_at_once(p, t, out, ready);
    }
    if (!s && rc == 0)
        rc = helper_running_locked(p);
    if (rc) {
        pk__pool_unlock(p);
        ticket_unref(t);
        return rc;
    }
    if (s) {
        t->w.slot = s;
        t->w.needs_check = true;
        pk__ticket_ready_locked(p, &t->w);
    } else {
        pk__pool_waiter_enqueue(p, &t->w, false);
        if (gives_up_locked(p, &t->w))
            return ready_at_once(p, t, out, ready);
        pk__pool_bg_kick_locked(p);
    }
    pk__pool_unlock(p);
    *out = t;
    return 0;
}

/* Made on the first call, so a ticket that is only polled or called back
 * costs no descriptor. The ticket may turn ready meanwhile: the store of
 * the descriptor and the load of the state here, and the store of the
 * state and the load of the descriptor in signal_fd, are seq_cst, so one
 * side sees the other and the eventfd is written (perhaps twice:
 * readable either way). */
int
pk_pool_ticket_fd(pk_pool_ticket *t)
{
    int fd, none = -1;
    uint64_t one = 1;

    if (!t)
        return PK_EINVAL;
    fd = atomic_load(&t->efd);
    if (fd >= 0)
        return fd;
    fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return errno == ENOMEM ? PK_ENOMEM : -errno;
    if (!atomic_compare_exchange_strong(&t->efd, &none, fd)) {
        close(fd); /* another caller made it first */
        return none;
    }
    if (atomic_load(&t->state) != T_PENDING &&
        write(fd, &one, sizeof one) < 0) {
        /* cannot overflow: one write per side */
    }
    return fd;
}

/* Fills lease (or err) from a ticket the caller claimed. */
static int
result_of(struct pk_pool_ticket *t, pk_lease *lease, pk_error *err)
{
    memset(lease, 0, sizeof *lease);
    if (t->w.slot) {
        struct pk__slot *s = t->w.slot;
        lease->resource = s->res;
        lease->pool_ = t->pool;
        lease->slot_ = s;
        lease->ticket_ = s->ticket;
        return 0;
    }
    if (!t->err.code)
        pk_error_set(&t->err, t->w.err ? t->w.err : PK_ECREATE, 0, NULL);
    if (err)
        *err = t->err;
    return t->err.code;
}

int
pk_pool_ticket_take(pk_pool_ticket *t, pk_lease *lease, pk_error *err)
{
    int rc;

    if (!t || !lease)
        return pk_error_set(err, PK_EINVAL, 0, "pk_pool_ticket_take: %s "
                            "is NULL", t ? "the lease" : "the ticket");
    if (pk__pool_forked(t->pool))
        return pk_error_set(err, PK_EFORKED, 0, "pk_pool_ticket_take: the "
                            "ticket was made before fork()");
    rc = atomic_load_explicit(&t->state, memory_order_acquire);
    if (rc == T_PENDING)
        return pk_error_set(err, PK_EAGAIN, 0, "the ticket is not ready "
                            "yet (its callback or eventfd says when)");
    if (rc == T_TAKEN || !claim(t)) /* from its callback, say */
        return pk_error_set(err, PK_EINVAL, 0, "the ticket's result was "
                            "taken already");
    cancel_callback(t);
    rc = result_of(t, lease, err);
    ticket_unref(t);
    return rc;
}

/* In a child after fork(): the pool's lock and lists are the parent's;
 * only the child's copy of the ticket is let go. */
static void
free_in_child(struct pk_pool_ticket *t)
{
    close_fd(t);
    pk__free(t);
}

void
pk_pool_ticket_free(pk_pool_ticket *t)
{
    struct pk_pool *p;
    bool claimed;

    if (!t)
        return;
    p = t->pool;
    if (pk__pool_forked(p)) {
        free_in_child(t);
        return;
    }
    if (atomic_load_explicit(&t->state, memory_order_acquire) == T_PENDING) {
        /* Withdraw it: under the lock, it is queued, being checked, or
         * it just became ready. */
        pk__lock_acquire(&p->lock);
        if (t->w.queued) {
            pk__pool_waiter_dequeue(p, &t->w);
            if (t->w.gpool && p->group)
                pk__group_leave_wait(p->group, &t->w);
        }
        else if (atomic_load_explicit(&t->state, memory_order_relaxed) ==
                 T_PENDING)
            t->abandoned = true; /* being checked: the helper finishes */
        pk__pool_unlock(p);
    }
    /* Claimed before the callback is cancelled: a callback running now
     * that takes the ticket gets PK_EINVAL, not the lease we give back.
     * Then no callback may start once we return. */
    claimed = claim(t);
    cancel_callback(t);
    if (claimed && t->w.slot) {
        pk_lease l;
        result_of(t, &l, NULL);
        pk__pool_release_lease(l.pool_, &l, PK_RELEASE_OK);
    }
    ticket_unref(t);
}

void
pk__ticket_pin(struct pk_pool_ticket *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void
pk__ticket_unpin(struct pk_pool_ticket *t)
{
    ticket_unref(t);
}

/* Checks slots handed to tickets. Runs on the helper thread or in
 * pk_pool_maintain. */
void
pk__pool_async_service(struct pk_pool *p)
{
    pk__lock_acquire(&p->lock);
    while (p->check_head) {
        struct pk_pool_ticket *t = p->check_head;
        struct pk__slot *s = t->w.slot;
        p->check_head = t->notify_next;
        /* The check list's reference is ours now; dropped below. */
        pk__pool_unlock(p);
        int rc = pk__pool_check_lent(p, s);
        pk__lock_acquire(&p->lock);
        if (rc == 0 && (t->abandoned || p->closed)) {
            /* Nobody will take it, or the pool closed meanwhile: the
             * release puts it back, or retires it if closed. */
            pk_lease l = { s->res, p, s, s->ticket };
            t->w.slot = NULL;
            if (!t->abandoned) {
                t->w.err = PK_ESHUTDOWN;
                pk__ticket_ready_locked(p, &t->w);
            }
            pk__pool_unlock(p);
            pk__pool_release_lease(p, &l, PK_RELEASE_OK);
            pk__lock_acquire(&p->lock);
        } else if (rc == 0) {
            t->w.needs_check = false;
            pk__ticket_ready_locked(p, &t->w);
        } else {
            t->w.slot = NULL;
            t->w.needs_check = false;
            if (t->abandoned) {
                /* Freed by its owner: nobody to tell, and its callback
                 * must not run after pk_pool_ticket_free. */
            } else if (p->closed) {
                t->w.err = PK_ESHUTDOWN;
                pk__ticket_ready_locked(p, &t->w);
            } else {
                pk__pool_waiter_enqueue(p, &t->w, true);
            }
        }
        ticket_unref(t); /* the last one if the owner abandoned it */
    }
    pk__pool_unlock(p);
}

uint64_t
pk__pool_async_next_deadline_locked(struct pk_pool *p)
{
    uint64_t d = UINT64_MAX;

    if (!p->async_waiters)
        return d;
    for (struct pk__dnode *n = p->wait_queue.head; n; n = n->next) {
        struct pk__waiter *w = pk__waiter_of(n);
        if (w->ticket && w->ticket->deadline < d)
            d = w->ticket->deadline;
    }
    return d;
}

void
pk__pool_async_expire(struct pk_pool *p, uint64_t now)
{
    size_t expired = 0;

    pk__lock_acquire(&p->lock);
    for (struct pk__dnode *n = p->wait_queue.head, *next;
         n && p->async_waiters; n = next) {
        struct pk__waiter *w = pk__waiter_of(n);
        next = n->next; /* the dequeues below unlink n */
        if (!w->ticket)
            continue;
        if (gives_up_locked(p, w)) {
            pk__ticket_ready_locked(p, w);
        } else if (w->ticket->deadline <= now) {
            pk__pool_waiter_dequeue(p, w);
            w->err = PK_ETIMEDOUT;
            p->st_timeouts++;
            pk__ticket_ready_locked(p, w);
            expired++;
        }
    }
    pk__pool_unlock(p);
    for (size_t i = 0; i < expired; i++) {
        struct pk__ev ev = { PK_EVENT_TIMEOUT, NULL, NULL, 0, 0, NULL };
        pk__pool_emit(p, &ev);
    }
}
