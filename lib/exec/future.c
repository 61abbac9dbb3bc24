/* lib/exec/future.c - pk_future: one type for every asynchronous result.
 *
 * The state lives in one atomic word, f->word: the low three bits are the
 * state, bit 3 (W_LISTEN) says that a waiter or a callback was registered
 * and the finisher must take the lock. States (pthread_once style):
 *
 *   0 PENDING    made by pk_future_create; the task has not started.
 *   1 RUNNING    pk_future_set_running won against pk_future_cancel.
 *   5 SETTLING   a completer won (complete or fail) and is writing the
 *                result or error. Nobody else may write them; readers see
 *                "not finished" (pk_future_state_get reports RUNNING).
 *   2 DONE       terminal: result readable.
 *   3 FAILED     terminal: code, sys, msg readable.
 *   4 CANCELLED  terminal: cancelled while pending, or a task that saw the
 *                cancel flag failed with PK_ECANCELED.
 *
 * Transitions, each one compare-and-swap on f->word, so the first caller
 * wins and every other gets an error code (nothing is overwritten):
 *
 *   PENDING           -> RUNNING            pk_future_set_running
 *   PENDING           -> CANCELLED          pk_future_cancel
 *   PENDING | RUNNING -> SETTLING           pk_future_complete, _fail
 *   SETTLING          -> DONE | FAILED | CANCELLED   the same caller, after
 *                                           writing the outcome (release)
 *   PENDING | RUNNING -> DONE               pk_future_complete with an
 *                                           empty result (nothing to
 *                                           write: it is zero from create)
 *
 * A terminal state is never left. The outcome fields are written only by
 * the thread that moved the word to SETTLING, before the release CAS that
 * publishes the terminal state; readers read them only after an acquire
 * load saw that terminal state.
 *
 * Waking is cheap when nobody listens: the finisher takes f->lock only if
 * W_LISTEN was set in the word it replaced. A listener sets W_LISTEN with a
 * CAS that fails once the state is terminal, and links itself while
 * holding f->lock; so either the finisher sees the bit and then (through
 * the lock) the listener's node, or the listener sees the terminal state
 * and acts on it itself. Nothing is missed and nothing is polled.
 *
 * Waiters and callbacks are listeners on one list, f->listeners: a ring
 * (doubly linked, circular, the head the oldest node) under f->lock, so a
 * node is appended and unlinked in O(1) with one pointer in the future.
 *
 * Who wakes whom. A future has one waker: its finisher, the thread that
 * moves it to a terminal state (complete, fail, a cancel of a pending
 * one). Under f->lock it unlinks each waiter's node and wakes the parker
 * the node names (pk__park_wake, PK__FUTURE_WAKE); then, without the
 * lock, it runs the callbacks. A waiter is anyone who linked a node with
 * pk__future_listen (executor_int.h) and parks on its parker: its own in
 * pk_future_wait (park_on: only f wakes it), one parker under a node per
 * future in wait_any (park_on_all: the first to finish wakes it), or an
 * executor worker's own (its pool wakes it too, for new work; the worker
 * looks at both after each wake). The finisher wakes nobody else, and a
 * pool's wakes are the pool's. A waiter calls pk__future_unlisten before
 * its node or parker goes: it takes f->lock even if the finisher already
 * unlinked the node, and that round trip is what makes the drop safe (the
 * finisher touches nodes and parkers only under the lock).
 *
 * Callbacks run in registration order, on the finishing thread, with no
 * lock held. While the finisher runs them (F_DRAINING), a callback
 * registered by another thread is appended instead of run at once, so the
 * order holds even against a racing registration.
 *
 * Futures come from the allocator (alloc.h), one pk__alloc each, so
 * fault injection sees every one. An executor keeps a future per task,
 * often a million at once, so the future stays one cache line's worth on
 * LP64 (64 bytes): fields earn their place. */
#include <poolkit/future.h>

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"
#include "../kit/log.h"
#include "../kit/sync.h"
#include "executor_int.h"

#define ST_MASK 7u
#define ST_SETTLING 5u
#define W_LISTEN 8u
#define BIT(s) (1u << (s))

/* f->flags: flag bits low, set by RMWs that touch nothing else; above
 * them a tag written once at create, before the future is published, and
 * kept by those RMWs, that catches a pointer that is not a live future
 * (cleared when it is freed; SQLite's magic, in 16 bits). */
#define F_CANCEL 1u   /* cancellation was asked for */
#define F_READ 2u     /* a failure was read (result, take_result, error) */
#define F_TAKEN 4u    /* the result was moved out by take_result */
#define F_DRAINING 8u /* f->lock: a finisher is running callbacks */
#define F_EXT 16u     /* an executor's record follows (create_ext) */
#define F_TAG_SHIFT 16
#define F_TAG 0x7066u /* "pf" */

#define CHECK(f) assert(load_flags(f) >> F_TAG_SHIFT == F_TAG)

/* A completion callback (allocated by pk_future_on_complete): a node
 * with no parker on the same ring as the waiters' nodes. */
struct callback {
    struct pk__future_node node; /* first: the ring links nodes */
    pk_future_fn fn;
    void *arg;
};

struct pk_future {
    _Atomic uint32_t word;      /* state | W_LISTEN; RMW acq_rel, see top */
    _Atomic uint32_t flags;     /* F_*; acq_rel, read by the last release */
    _Atomic uint32_t refs;      /* decrement acq_rel: the last one sees all */
    pk__lock lock;              /* listeners and F_DRAINING */
    pk_event_fn event;          /* immutable after create */
    void *event_user;
    struct pk__future_node *listeners; /* f->lock: the ring's oldest */

    /* The outcome: written by the SETTLING owner, published by release.
     * The message is allocated by a failure (NULL: none, or no memory;
     * readers then use pk_strerror(code)): an executor keeps a future per
     * task, often a million at once, and most never fail, so the future
     * stays small (its size is most of a task's memory). A result and a
     * failure never meet (the terminal state says which is there), so
     * they share their bytes; both are zero from create (a future
     * cancelled while pending reads sys 0 and no message). */
    union {
        pk_result result;       /* DONE */
        struct {                /* FAILED, CANCELLED */
            int code;
            int sys;
            char *msg;
        };
    };
};

/* 16 + 16 + 8 + 24 bytes on LP64 (one line's worth), 40 on ILP32; a
 * test build's lock carries its rank too (sync.h). */
#ifdef PK__LOCK_CHECKED
_Static_assert(sizeof(struct pk_future) <= 72, "pk_future stays small");
#else
_Static_assert(sizeof(struct pk_future) <= 64, "pk_future stays small");
#endif

static inline uint32_t
load_flags(const pk_future *f)
{
    /* Relaxed: for the fields set at create (the caller got f through
     * something that ordered it after create); flag readers that need
     * ordering load with acquire themselves. */
    return atomic_load_explicit(&((pk_future *)f)->flags,
                                memory_order_relaxed);
}

static inline uint32_t
load_word(const pk_future *f)
{
    /* Acquire: pairs with the release CAS that published the state, so the
     * outcome fields are visible once a terminal state is seen. */
    return atomic_load_explicit(&((pk_future *)f)->word,
                                memory_order_acquire);
}

static inline int
is_terminal(uint32_t w)
{
    uint32_t s = w & ST_MASK;

    return s == PK_FUTURE_DONE || s == PK_FUTURE_FAILED ||
           s == PK_FUTURE_CANCELLED;
}

/* Replaces the state by `to` if it is one of the `from` set (BIT()s),
 * keeping W_LISTEN. Returns 1 if this call made the move; *old gets the
 * word it replaced or, on failure, the word it found. */
static int
move(pk_future *f, unsigned from, uint32_t to, uint32_t *old)
{
    uint32_t w = load_word(f);

    do {
        if (!(from & BIT(w & ST_MASK))) {
            *old = w;
            return 0;
        }
    } while (!atomic_compare_exchange_weak_explicit(
        &f->word, &w, (w & ~ST_MASK) | to, memory_order_acq_rel,
        memory_order_acquire));
    *old = w;
    return 1;
}

/* Sets W_LISTEN unless the future has finished. f->lock held, so a
 * finisher that sees the bit cannot look at the lists before the caller
 * has linked its node. Returns 1 if set (link now), 0 if finished. */
static int
listen_locked(pk_future *f)
{
    uint32_t w = load_word(f);

    while (!is_terminal(w)) {
        if (atomic_compare_exchange_weak_explicit(
                &f->word, &w, w | W_LISTEN, memory_order_acq_rel,
                memory_order_acquire))
            return 1;
    }
    return 0;
}

/* ---- waking ------------------------------------------------------------ */

/* f->lock held. Appends n to the ring. */
static void
link_locked(pk_future *f, struct pk__future_node *n)
{
    struct pk__future_node *head = f->listeners;

    if (!head) {
        n->next = n->prev = n;
        f->listeners = n;
        return;
    }
    n->next = head;
    n->prev = head->prev;
    head->prev->next = n;
    head->prev = n;
}

/* f->lock held. Takes n, which is linked, off the ring. */
static void
unlink_locked(pk_future *f, struct pk__future_node *n)
{
    if (n->next == n) {
        f->listeners = NULL;
    } else {
        n->prev->next = n->next;
        n->next->prev = n->prev;
        if (f->listeners == n)
            f->listeners = n->next;
    }
    n->next = n->prev = NULL;
}

/* f->lock held (or the last reference gone). Detaches the ring, opened
 * into a NULL-terminated list. */
static struct pk__future_node *
detach_locked(pk_future *f)
{
    struct pk__future_node *n = f->listeners;

    f->listeners = NULL;
    if (n)
        n->prev->next = NULL;
    return n;
}

/* f->lock held. Empties the ring: wakes its waiters and returns its
 * callbacks, in order, NULL-terminated through node.next. Each waiter's
 * node is unlinked before its parker is woken, both under f->lock; the
 * waiter's pk__future_unlisten takes f->lock before the node and parker
 * may go, so touching them here is safe. F_DRAINING stays set while a
 * batch is out, so racing registrations queue behind it. */
static struct pk__future_node *
take_listeners_locked(pk_future *f)
{
    struct pk__future_node *n = detach_locked(f);
    struct pk__future_node *cbs = NULL;
    struct pk__future_node **tail = &cbs;
    struct pk__future_node *next;

    for (; n; n = next) {
        next = n->next;
        if (!n->parker) {
            *tail = n;
            tail = &n->next;
        } else {
            n->next = n->prev = NULL;
            pk__park_wake(n->parker, PK__FUTURE_WAKE);
        }
    }
    *tail = NULL;
    /* acq_rel like every RMW on flags; under f->lock, so no race on the
     * bit itself, and it is written only when it changes. */
    if (cbs)
        atomic_fetch_or_explicit(&f->flags, F_DRAINING, memory_order_acq_rel);
    else if (load_flags(f) & F_DRAINING)
        atomic_fetch_and_explicit(&f->flags, ~F_DRAINING,
                                  memory_order_acq_rel);
    return cbs;
}

static void
run_callbacks(pk_future *f, struct pk__future_node *n)
{
    struct pk__future_node *next;

    for (; n; n = next) {
        struct callback *cb = (struct callback *)n; /* its first member */
        next = n->next;
        cb->fn(cb->arg, f);
        pk__free(cb);
    }
}

/* Called by the thread that made the terminal move when W_LISTEN was set.
 * The caller holds a reference (every caller of the public API must), so
 * f outlives the callbacks even if one of them releases another ref.
 * After the first round the ring holds callbacks only: no waiter links
 * itself on a finished future. */
static void
notify(pk_future *f)
{
    struct pk__future_node *cb;

    pk__lock_acquire(&f->lock);
    cb = take_listeners_locked(f);
    pk__lock_release(&f->lock);
    while (cb) {
        run_callbacks(f, cb);
        pk__lock_acquire(&f->lock);
        cb = take_listeners_locked(f);
        pk__lock_release(&f->lock);
    }
}

/* SETTLING -> s, then wakes whoever registered. Cannot fail: only the
 * SETTLING owner calls it. */
static void
finish(pk_future *f, uint32_t s)
{
    uint32_t old;
    int moved = move(f, BIT(ST_SETTLING), s, &old);

    assert(moved);
    (void)moved;
    if (old & W_LISTEN)
        notify(f);
}

/* ---- producer side ----------------------------------------------------- */

/* The record of create_ext sits after the future, aligned as malloc
 * aligns. */
#define EXT_OFFSET ((sizeof(struct pk_future) + 15) & ~(size_t)15)

static int
create(pk_future **out, pk_event_fn event, void *event_user, uint32_t refs,
       size_t ext)
{
    pk_future *f;

    if (!out || refs == 0)
        return PK_EINVAL;
    f = pk__alloc(ext ? EXT_OFFSET + ext : sizeof *f);
    if (!f)
        return PK_ENOMEM;
    atomic_init(&f->word, PK_FUTURE_PENDING);
    atomic_init(&f->flags, (F_TAG << F_TAG_SHIFT) | (ext ? F_EXT : 0));
    atomic_init(&f->refs, refs);
    pk__lock_init(&f->lock, PK__RANK_FUTURE);
    f->event = event;
    f->event_user = event_user;
    f->listeners = NULL;
    memset(&f->result, 0, sizeof f->result); /* and code, sys, msg */
    if (ext)
        memset((char *)f + EXT_OFFSET, 0, ext);
    *out = f;
    return 0;
}

int
pk__future_create_refs(pk_future **out, pk_event_fn event, void *event_user,
                       uint32_t refs)
{
    return create(out, event, event_user, refs, 0);
}

int
pk__future_create_ext(pk_future **out, pk_event_fn event, void *event_user,
                      uint32_t refs, size_t size, struct pk__future_ext **ext)
{
    int rc;

    if (!ext || size < sizeof **ext)
        return PK_EINVAL;
    rc = create(out, event, event_user, refs, size);
    if (rc == 0)
        *ext = pk__future_ext(*out);
    return rc;
}

struct pk__future_ext *
pk__future_ext(pk_future *f)
{
    if (!(atomic_load_explicit(&f->flags, memory_order_relaxed) & F_EXT))
        return NULL;
    return (struct pk__future_ext *)((char *)f + EXT_OFFSET);
}

int
pk_future_create(pk_future **out, pk_event_fn event, void *event_user)
{
    return pk__future_create_refs(out, event, event_user, 1);
}

int
pk_future_set_running(pk_future *f)
{
    uint32_t old;

    if (!f)
        return PK_EINVAL;
    CHECK(f);
    if (move(f, BIT(PK_FUTURE_PENDING), PK_FUTURE_RUNNING, &old))
        return 0;
    return (old & ST_MASK) == PK_FUTURE_CANCELLED ? PK_ECANCELED
                                                  : PK_EINVAL;
}

int
pk_future_complete(pk_future *f, const pk_result *res)
{
    uint32_t old;

    if (!f)
        return PK_EINVAL;
    CHECK(f);
    if (!res || (!res->value && !res->len && !res->free_fn)) {
        /* Nothing to write (the result is zero since create): straight
         * to DONE, one CAS instead of two. */
        if (!move(f, BIT(PK_FUTURE_PENDING) | BIT(PK_FUTURE_RUNNING),
                  PK_FUTURE_DONE, &old))
            return PK_EINVAL;
        if (old & W_LISTEN)
            notify(f);
        return 0;
    }
    if (!move(f, BIT(PK_FUTURE_PENDING) | BIT(PK_FUTURE_RUNNING),
              ST_SETTLING, &old))
        return PK_EINVAL;
    f->result = *res;
    finish(f, PK_FUTURE_DONE);
    return 0;
}

/* A copy of the formatted message, or NULL (no memory: readers fall
 * back on pk_strerror). */
static char *
format_msg(const char *fmt, va_list ap)
{
    char buf[PK_ERROR_MSG_SIZE];
    size_t n;
    char *m;

    vsnprintf(buf, sizeof buf, fmt, ap);
    n = strlen(buf) + 1;
    m = pk__alloc(n);
    if (m)
        memcpy(m, buf, n);
    return m;
}

/* Copies f's message (or the code's text) into a pk_error's buffer. */
static void
copy_msg(const pk_future *f, int code, char *dst)
{
    snprintf(dst, PK_ERROR_MSG_SIZE, "%s",
             f->msg && f->msg[0] ? f->msg : pk_strerror(code));
}

int
pk_future_fail(pk_future *f, int code, int sys, const char *fmt, ...)
{
    va_list ap;
    uint32_t old;
    uint32_t flags;

    if (!f || code >= 0)
        return PK_EINVAL;
    CHECK(f);
    if (!move(f, BIT(PK_FUTURE_PENDING) | BIT(PK_FUTURE_RUNNING),
              ST_SETTLING, &old))
        return PK_EINVAL;
    f->code = code;
    f->sys = sys;
    if (fmt) {
        va_start(ap, fmt);
        f->msg = format_msg(fmt, ap);
        va_end(ap);
    }
    /* A task that stopped because it was asked to ends cancelled: that is
     * what the canceller expects to see, and nobody has to read it. */
    flags = atomic_load_explicit(&f->flags, memory_order_acquire);
    if (code == PK_ECANCELED && (flags & F_CANCEL))
        finish(f, PK_FUTURE_CANCELLED);
    else
        finish(f, PK_FUTURE_FAILED);
    return 0;
}

/* ---- references -------------------------------------------------------- */

pk_future *
pk_future_ref(pk_future *f)
{
    if (!f)
        return NULL;
    CHECK(f);
    /* Relaxed: the caller already holds a reference, so the count cannot
     * reach zero concurrently; ordering comes from the decrement. */
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

/* Tells the event hook about a failure nobody read, or without a hook
 * stderr (kit/log.h: one rate-limited line). Runs on the thread that
 * dropped the last reference, with no lock held. */
static void
report_unread(pk_future *f)
{
    uint32_t flags = atomic_load_explicit(&f->flags, memory_order_acquire);
    pk_error err;
    pk_event ev;

    if ((load_word(f) & ST_MASK) != PK_FUTURE_FAILED || (flags & F_READ))
        return;
    err.code = f->code;
    err.sys = f->sys;
    copy_msg(f, f->code, err.msg);
    if (!f->event) {
        pk__log_failure("a failed future was released unread", &err);
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.kind = PK_EVENT_FUTURE_UNREAD;
    ev.error = &err;
    f->event(f->event_user, &ev);
}

static void
free_future(pk_future *f)
{
    struct pk__future_node *n;
    struct pk__future_node *next;
    uint32_t s = load_word(f) & ST_MASK;
    uint32_t flags = atomic_load_explicit(&f->flags, memory_order_acquire);

    if (s == PK_FUTURE_DONE && !(flags & F_TAKEN) && f->result.free_fn &&
        f->result.value)
        f->result.free_fn(f->result.value);
    /* Callbacks of a future that never finished are dropped uncalled. */
    for (n = detach_locked(f); n; n = next) {
        next = n->next;
        assert(!n->parker); /* a listener holds a reference */
        pk__free(n);        /* a struct callback, its first member */
    }
    if (s != PK_FUTURE_DONE)
        pk__free(f->msg);
    if (flags & F_EXT) {
        struct pk__future_ext *x = pk__future_ext(f);
        if (x->fini)
            x->fini(x);
    }
    /* The tag goes, so that CHECK catches a release of a future already
     * freed while its memory is not yet reused (a double release). */
    atomic_store_explicit(&f->flags, flags & ~(0xffffu << F_TAG_SHIFT),
                          memory_order_relaxed);
    pk__free(f);
}

void
pk_future_release(pk_future *f)
{
    if (!f)
        return;
    CHECK(f);
    /* acq_rel: release our writes to the last holder, and as the last
     * holder acquire everybody's (no fence: TSan does not model them).
     * A count of 1 seen first is ours alone: only a holder can add one,
     * and the other holders' decrements (release) are what we read
     * (acquire), so the last release skips its read-modify-write (a
     * locked instruction per future when a caller waits for a million
     * in turn). */
    if (atomic_load_explicit(&f->refs, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    report_unread(f);
    free_future(f);
}

/* ---- consumer side ----------------------------------------------------- */

int
pk_future_cancel(pk_future *f)
{
    uint32_t old;

    if (!f)
        return PK_EINVAL;
    CHECK(f);
    /* The flag goes up first, so a task that won the race into RUNNING
     * finds it raised. */
    atomic_fetch_or_explicit(&f->flags, F_CANCEL, memory_order_acq_rel);
    if (!move(f, BIT(PK_FUTURE_PENDING), PK_FUTURE_CANCELLED, &old))
        return PK_EAGAIN;
    if (old & W_LISTEN)
        notify(f);
    return 0;
}

int
pk_future_cancel_requested(const pk_future *f)
{
    uint32_t flags;

    if (!f)
        return 0;
    CHECK(f);
    /* Acquire: pairs with the acq_rel fetch_or in pk_future_cancel. */
    flags = atomic_load_explicit(&((pk_future *)f)->flags,
                                 memory_order_acquire);
    return (flags & F_CANCEL) != 0;
}

pk_future_state
pk_future_state_get(const pk_future *f)
{
    uint32_t s;

    if (!f)
        return PK_FUTURE_PENDING;
    CHECK(f);
    s = load_word(f) & ST_MASK;
    return s == ST_SETTLING ? PK_FUTURE_RUNNING : (pk_future_state)s;
}

int
pk__future_listen(pk_future *f, struct pk__future_node *n, pk__parker *p)
{
    int linked;

    CHECK(f);
    assert(p);
    n->next = n->prev = NULL;
    n->parker = p;
    pk__lock_acquire(&f->lock);
    linked = listen_locked(f);
    if (linked)
        link_locked(f, n);
    pk__lock_release(&f->lock);
    return !linked;
}

void
pk__future_unlisten(pk_future *f, struct pk__future_node *n)
{
    /* Always under the lock, even if n looks unlinked: the finisher
     * unlinks and wakes under it, so once we have held it the finisher
     * is done with n and its parker. */
    pk__lock_acquire(&f->lock);
    if (n->next)
        unlink_locked(f, n);
    pk__lock_release(&f->lock);
}

int
pk__future_done(const pk_future *f)
{
    CHECK(f);
    return is_terminal(load_word(f));
}

/* The outcome code of a finished future; marks a failure as read. */
static int
outcome(pk_future *f)
{
    switch (load_word(f) & ST_MASK) {
    case PK_FUTURE_DONE:
        return 0;
    case PK_FUTURE_FAILED:
        atomic_fetch_or_explicit(&f->flags, F_READ, memory_order_acq_rel);
        return f->code;
    case PK_FUTURE_CANCELLED:
        return PK_ECANCELED;
    default:
        return PK_EAGAIN;
    }
}

int
pk_future_result(pk_future *f, pk_result *res)
{
    uint32_t flags;
    int rc;

    if (!f)
        return PK_EINVAL;
    CHECK(f);
    rc = outcome(f);
    if (rc)
        return rc;
    flags = atomic_load_explicit(&f->flags, memory_order_acquire);
    if (flags & F_TAKEN)
        return PK_EINVAL; /* the future no longer owns a result to lend */
    if (res)
        *res = f->result;
    return 0;
}

int
pk_future_take_result(pk_future *f, pk_result *res)
{
    uint32_t flags;
    int rc;

    if (!f || !res)
        return PK_EINVAL;
    CHECK(f);
    rc = outcome(f);
    if (rc)
        return rc;
    /* fetch_or makes the move exactly-once between racing takers. */
    flags = atomic_fetch_or_explicit(&f->flags, F_TAKEN,
                                     memory_order_acq_rel);
    if (flags & F_TAKEN)
        return PK_EINVAL;
    *res = f->result;
    return 0;
}

int
pk_future_error(pk_future *f, pk_error *err)
{
    uint32_t s;

    if (!f || !err)
        return pk_error_set(err, PK_EINVAL, 0, "the future is NULL");
    CHECK(f);
    s = load_word(f) & ST_MASK;
    if (s == PK_FUTURE_DONE)
        return pk_error_set(err, PK_EINVAL, 0,
                            "the future succeeded: it has no error");
    if (s != PK_FUTURE_FAILED && s != PK_FUTURE_CANCELLED)
        return pk_error_set(err, PK_EAGAIN, 0,
                            "the future has not finished");
    if (s == PK_FUTURE_FAILED)
        atomic_fetch_or_explicit(&f->flags, F_READ, memory_order_acq_rel);
    err->code = s == PK_FUTURE_FAILED ? f->code : PK_ECANCELED;
    err->sys = f->sys;
    copy_msg(f, err->code, err->msg);
    return 0;
}

int
pk_future_on_complete(pk_future *f, pk_future_fn fn, void *arg)
{
    struct callback *cb;

    if (!f || !fn)
        return PK_EINVAL;
    CHECK(f);
    cb = pk__alloc(sizeof *cb);
    if (!cb)
        return PK_ENOMEM;
    cb->node.parker = NULL;
    cb->fn = fn;
    cb->arg = arg;
    pk__lock_acquire(&f->lock);
    /* Queue it if the future is unfinished, or if a finisher has earlier
     * callbacks still to run (queued, or running now): it runs this one
     * after them, which keeps the order against a racing completion. A
     * finished future's ring is non-empty only while its finisher has yet
     * to take it (the finisher saw W_LISTEN, so it will). */
    if (listen_locked(f) || (load_flags(f) & F_DRAINING) || f->listeners) {
        link_locked(f, &cb->node);
        pk__lock_release(&f->lock);
        return 0;
    }
    pk__lock_release(&f->lock);
    pk__free(cb);
    fn(arg, f);
    return 0;
}
