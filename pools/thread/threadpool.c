/* pools/thread/threadpool.c - the thread pool: the core's pk_pool owns the
 * workers, this file owns the task queue.
 *
 * Workers are pk_pool resources. An idle worker is an idle resource,
 * parked on its own parking word; an active worker holds its own lease.
 * To wake one, a submitter acquires an idle worker from the core (0
 * timeout: never waits), stores the lease in the worker and wakes it.
 * When none is idle and the core is below max, an async ticket makes the
 * core spawn one on its helper thread; the ticket's callback hands it the
 * lease. Keep-alive retirement is the core's idle_timeout; its destroy
 * hook stops and joins the parked thread.
 *
 * The queue is a lock-free bounded ring (ring.h). `used` reserves its
 * cells, so a push that got a reservation never fails and submit_many is
 * all or nothing. A worker takes up to half the queue at a time, runs it,
 * and counts it in `finished`; everything pushed has run when finished
 * equals the ring's tail, which is what shutdown waits for (woken by the
 * worker that gets there, never by polling). `submitting` fences submits
 * against shutdown: a submitter counts itself in before it reads
 * `closed`, shutdown sets `closed` before it waits for `submitting` to
 * drain (seq_cst both), so no task slips in after shutdown looked.
 *
 * A worker runs tasks until the queue is empty, spins briefly, then gives
 * its lease back and parks. No wake is lost: a submitter pushes, then
 * reads `active`; a worker leaving decrements `active`, re-reads the
 * queue, and after releasing itself looks once more and wakes a worker if
 * work arrived (both sides use seq_cst, so one of them sees the other).
 *
 * Lifetime: the pool struct is reference counted by its handle and by
 * each worker thread, so a worker finishing late never touches freed
 * memory. */
#define _GNU_SOURCE /* pthread_setname_np, sched_getaffinity */
#include <poolkit/threadpool.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "alloc.h"
#include "future_int.h"
#include "hist.h"
#include "ring.h"
#include "sync.h"

#define PK__TP_MAGIC 0x74706f6fu
/* Rounds a worker spins on an empty queue before it parks. */
#define PK__TP_SPINS 200
/* Tasks a worker takes from the queue at once, at most. */
#define PK__TP_BATCH 16
/* Tasks a waiting worker runs nested on its stack, at most. */
#define PK__TP_NEST 16

struct tp_worker {
    struct pk_threadpool *tp;
    pthread_t thread;
    pk__parker park;    /* 1 = lease given, 2 = stop */
    pk_lease lease;     /* written by the waker before the wake */
    _Atomic bool self_exit; /* destroyed from its own thread: detach */
    /* Tasks popped but not yet run: the worker's own, so a task of the
     * batch that waits on another of it runs that one itself. */
    struct tp_task batch[PK__TP_BATCH];
    size_t batch_next, batch_n;
    size_t batch_ran;        /* of the batch, run here (not given back) */
    /* For deadlock detection (read by other workers, hence atomic): the
     * futures of the tasks on this worker's stack, innermost last, and
     * the future it waits on. */
    _Atomic(pk_future *) stack[2 * PK__TP_NEST + 2];
    _Atomic int depth;
    int nest;                        /* tasks on this thread's stack, with
                                        or without a future (owner only) */
    _Atomic(pk_future *) waiting_on;
    struct tp_worker *next_all;      /* tp->all_workers, under glock */
    /* The running task, for the watchdog (under glock, set only while
     * the watchdog runs or the task has a run limit). */
    uint64_t cur_start;              /* 0: nothing watched */
    uint64_t cur_limit_ns;
    pk_future *cur_fut;
    bool cur_flagged, cur_slow;
    _Atomic bool detached;           /* given up as stuck */
    /* The "next" slot (Go's runnext): a task with a future submitted by
     * the task running here goes here, so that when that task waits on
     * it, it runs at once on this stack instead of behind the whole
     * queue. 0 empty, 1 full, 2 being taken (by the owner, or by an idle
     * worker stealing it). */
    _Atomic int next_state;
    struct tp_task next;
    struct pk__wait_helper helper;
};

struct pk_threadpool {
    unsigned magic;
    unsigned fork_epoch;
    _Atomic int refs;
    pk_pool *workers;
    pk_registry *registry;
    pk_event_fn event;
    void *event_user;
    void (*worker_init)(void *);
    void (*worker_exit)(void *);
    void *user;
    int full_policy;
    int submit_timeout_ms;
    _Atomic size_t max_threads; /* read unlocked by wake_one */
    size_t min_threads;        /* under rlock */
    size_t comp;               /* compensating workers allowed, rlock */
    _Atomic size_t ncomp;      /* the same, for wake_one's unlocked read */
    pk__lock rlock;            /* serialises sizing of the core pool */

    /* The queue, its counters, and the waits on them. */
    struct tp_ring q;
    size_t cap;                /* tp_ring_capacity(&q) */
    char pad0[64];
    _Atomic size_t used;       /* cells reserved by submitters, not yet
                                  given back by a worker's pop */
    _Atomic size_t submitting; /* submits between their check of closed
                                  and their push */
    _Atomic bool closed;
    char padf[64];
    _Atomic size_t finished;   /* tasks run or cancelled after a pop */
    _Atomic size_t next_pushed; /* tasks that went to a "next" slot */
    pk__hist wait_hist, run_hist;   /* sampled */
    _Atomic uint64_t st_expired, st_detached;
    /* The watchdog: slow tasks, stuck workers, run limits. */
    uint64_t slow_ns, stuck_ns;    /* UINT64_MAX: off */
    _Atomic bool watch;            /* workers publish their running task */
    bool wd_running, wd_stop;      /* under glock */
    pthread_t wd;
    pk__cv wd_cv;
    pk__cv not_full;           /* a worker freed cells */
    pk__cv idle;               /* finished caught up with the pushes */
    pk__lock qlock;            /* only for `exited` */
    pk__lock glock;            /* the list of workers, for cycle checks */
    struct tp_worker *all_workers;
    _Atomic size_t threads;    /* worker threads not yet exited */
    pk__cv exited;             /* threads went down */

    char pad1[64];
    _Atomic size_t active;     /* workers holding their lease */
    _Atomic size_t spinning;   /* awake workers looking for work */
    _Atomic size_t alive;      /* workers spawned and not yet stopped */
    _Atomic bool growing;      /* an async ticket is out */

    /* Stats, relaxed atomics: submitters write the first line, workers
     * the second (once per batch). */
    char pad2[64];
    _Atomic uint64_t st_submitted;
    _Atomic uint64_t st_rejected;
    char pad3[64];
    _Atomic uint64_t st_completed;
    _Atomic uint64_t st_failed, st_cancelled;
};

static void tp_unref(struct pk_threadpool *tp);
static void wake_one(struct pk_threadpool *tp);
static void maybe_wake(struct pk_threadpool *tp);

/* ---- the queue -------------------------------------------------------- */

static bool
queue_nonempty(struct pk_threadpool *tp)
{
    return tp_ring_count(&tp->q) > 0;
}

/* Reserves n cells; false if they are not free now. */
static bool
reserve(struct pk_threadpool *tp, size_t n)
{
    size_t u = atomic_load_explicit(&tp->used, memory_order_relaxed);

    do {
        if (tp->cap - u < n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &tp->used, &u, u + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Gives cells back after a pop; wakes submitters blocked on a full queue
 * (best effort: they also wake every millisecond, see wait_for_room). */
static void
unreserve(struct pk_threadpool *tp, size_t n)
{
    atomic_fetch_sub_explicit(&tp->used, n, memory_order_relaxed);
    if (atomic_load(&tp->not_full.waiters))
        pk__cv_broadcast(&tp->not_full);
}

/* Counts n tasks as finished; the one that catches up with every push
 * wakes shutdown. */
static size_t
all_pushed(struct pk_threadpool *tp)
{
    return tp_ring_pushed(&tp->q) + atomic_load(&tp->next_pushed);
}

static void
finish(struct pk_threadpool *tp, size_t n)
{
    size_t f = atomic_fetch_add(&tp->finished, n) + n;

    if (f == all_pushed(tp))
        pk__cv_broadcast(&tp->idle);
}

static bool
all_finished(struct pk_threadpool *tp)
{
    return atomic_load(&tp->finished) == all_pushed(tp);
}

/* ---- the next slots --------------------------------------------------- */

/* Puts t in w's next slot if it is empty. The count goes up before the
 * task is visible, so finished never overtakes the pushes. */
static bool
put_next(struct pk_threadpool *tp, struct tp_worker *w,
         const struct tp_task *t)
{
    /* acquire: a thief's copy out of the slot is done before we refill */
    if (atomic_load_explicit(&w->next_state, memory_order_acquire) != 0)
        return false;
    w->next = *t;
    atomic_fetch_add(&tp->next_pushed, 1);
    atomic_store_explicit(&w->next_state, 1, memory_order_release);
    return true;
}

/* Takes the task in w's next slot (any thread). */
static bool
take_next(struct tp_worker *w, struct tp_task *out)
{
    int full = 1;

    if (atomic_load_explicit(&w->next_state, memory_order_relaxed) != 1 ||
        !atomic_compare_exchange_strong_explicit(
            &w->next_state, &full, 2, memory_order_acquire,
            memory_order_relaxed))
        return false;
    *out = w->next;
    atomic_store_explicit(&w->next_state, 0, memory_order_release);
    return true;
}

/* An idle worker takes another's next task (that worker is busy). */
static bool
steal_next(struct pk_threadpool *tp, struct tp_worker *self,
           struct tp_task *out)
{
    bool got = false;

    pk__lock_acquire(&tp->glock);
    for (struct tp_worker *r = tp->all_workers; r && !got; r = r->next_all)
        if (r != self)
            got = take_next(r, out);
    pk__lock_release(&tp->glock);
    return got;
}

/* Outcome counts of a batch, added to the shared counters once. */
struct tally {
    uint64_t completed, cancelled, failed;
};

/* The worker running on this thread, if any (thread-local, set by
 * worker_main): tasks it runs are pushed on its stack for cycle checks. */
static _Thread_local struct tp_worker *tls_worker;

/* Drops a task that was not started in time. */
static void
expire(struct pk_threadpool *tp, struct tp_task *t)
{
    atomic_fetch_add_explicit(&tp->st_expired, 1, memory_order_relaxed);
    if (t->fut) {
        pk_future_fail(t->fut, PK_ETIMEDOUT, 0,
                       "not started within %u ms", t->start_within_ms);
    } else if (tp->event) {
        pk_error e;
        pk_event ev = { PK_EVENT_FUTURE_UNREAD, NULL, NULL, 0, 0, &e };
        pk_error_set(&e, PK_ETIMEDOUT, 0, "not started within %u ms",
                     t->start_within_ms);
        tp->event(tp->event_user, &ev);
    }
}

/* Shows the running task to the watchdog (or hides it: start 0). */
static void
publish(struct pk_threadpool *tp, struct tp_worker *w, uint64_t start,
        const struct tp_task *t)
{
    pk__lock_acquire(&tp->glock);
    w->cur_start = start;
    w->cur_fut = start ? t->fut : NULL;
    w->cur_limit_ns = start ? (uint64_t)t->run_limit_ms * 1000000u : 0;
    w->cur_flagged = false;
    w->cur_slow = false;
    pk__lock_release(&tp->glock);
}

/* Helping stops at twice PK__TP_NEST, but caller-runs submits from a
 * task nest without bound: those past the stack's end are not recorded
 * (*d = -1), so cycle checks cannot see them. */
static void
push_stack(struct tp_worker *w, pk_future *f, int *d)
{
    *d = atomic_load_explicit(&w->depth, memory_order_relaxed);
    if (*d >= (int)(sizeof w->stack / sizeof w->stack[0])) {
        *d = -1;
        return;
    }
    atomic_store(&w->stack[*d], f);
    atomic_store(&w->depth, *d + 1);
}

static void
pop_stack(struct tp_worker *w, int d)
{
    if (d < 0)
        return;
    atomic_store(&w->depth, d);
    atomic_store(&w->stack[d], NULL);
}

static void
count(struct tally *n, int rc)
{
    if (rc == 0)
        n->completed++;
    else if (rc == PK_ECANCELED)
        n->cancelled++;
    else
        n->failed++;
}

static void
run_task(struct pk_threadpool *tp, struct tp_task *t, struct tally *n)
{
    struct tp_worker *w = tls_worker;
    bool watch = w && (t->run_limit_ms || atomic_load_explicit(
                                              &tp->watch,
                                              memory_order_relaxed));
    uint64_t t0 = (t->enq_ns || watch) ? pk__now_ns() : 0;
    int d = 0, rc;

    if (t->enq_ns) {
        pk__hist_add(&tp->wait_hist, t0 - t->enq_ns);
        if (t->start_within_ms &&
            t0 - t->enq_ns > (uint64_t)t->start_within_ms * 1000000u) {
            expire(tp, t);
            n->failed++; /* its future failed: expired is part of failed */
            goto out;
        }
    }
    if (watch)
        publish(tp, w, t0, t);
    if (w) {
        w->nest++;
        if (t->fut)
            push_stack(w, t->fut, &d);
    }
    rc = pk_task_run(&t->task, tp->registry, t->fut, tp->event,
                     tp->event_user);
    if (w) {
        w->nest--;
        if (t->fut)
            pop_stack(w, d);
    }
    if (watch)
        publish(tp, w, 0, t);
    if (t->enq_ns)
        pk__hist_add(&tp->run_hist, pk__now_ns() - t0);
    count(n, rc);
out:
    pk_future_release(t->fut);
    pk__free(t->copy);
}

static void
tally_add(struct pk_threadpool *tp, const struct tally *n)
{
    if (n->completed)
        atomic_fetch_add_explicit(&tp->st_completed, n->completed,
                                  memory_order_relaxed);
    if (n->cancelled)
        atomic_fetch_add_explicit(&tp->st_cancelled, n->cancelled,
                                  memory_order_relaxed);
    if (n->failed)
        atomic_fetch_add_explicit(&tp->st_failed, n->failed,
                                  memory_order_relaxed);
}

/* ---- workers ---------------------------------------------------------- */

/* Takes tasks into the worker's batch: one, unless the queue is long (at
 * least 4 tasks per thread), then up to PK__TP_BATCH. A private batch
 * hides its tasks from idle workers, new workers and resizes behind a
 * task that blocks; with a short queue that would cost parallelism, with
 * a long one there is work for everybody anyway, and batches save the
 * counters' cache-line traffic. Returns how many. */
static size_t
pop_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    size_t m = atomic_load_explicit(&tp->max_threads, memory_order_relaxed);
    size_t k = tp_ring_count(&tp->q) / (4 * (m ? m : 1)), n = 0;

    if (k > PK__TP_BATCH)
        k = PK__TP_BATCH;
    if (k == 0)
        k = 1;
    while (n < k && tp_ring_pop(&tp->q, &w->batch[n]))
        n++;
    if (n)
        unreserve(tp, n);
    w->batch_next = 0;
    w->batch_n = n;
    return n;
}

static void
run_one(struct pk_threadpool *tp, struct tp_task *t)
{
    struct tally n = { 0, 0, 0 };

    run_task(tp, t, &n);
    tally_add(tp, &n);
    finish(tp, 1);
}

/* Runs the rest of the worker's batch (a nested wait may run some). */
static void
run_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tally n = { 0, 0, 0 };

    w->batch_ran = 0;
    while (w->batch_next < w->batch_n) {
        struct tp_task t = w->batch[w->batch_next++];
        w->batch_ran++;
        run_task(tp, &t, &n);
    }
    tally_add(tp, &n);
    finish(tp, w->batch_ran);
}

/* Gives the unrun part of the batch back to the queue (where room is):
 * a worker that may not help any more must not sit on tasks that others
 * could run, its own awaited ones among them. */
static void
give_back_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    size_t n = 0;

    while (w->batch_next < w->batch_n && reserve(tp, 1)) {
        tp_ring_push(&tp->q, &w->batch[w->batch_n - 1]);
        w->batch_n--;
        n++;
    }
    /* Each was counted once when first pushed: the push just made counts
     * it again, so count it finished once here (after the push, so that
     * finished never overtakes the pushes). */
    if (n) {
        finish(tp, n);
        maybe_wake(tp);
    }
}

/* Runs queued tasks until the queue stays empty through a short spin. */
static void
drain(struct pk_threadpool *tp, struct tp_worker *w)
{
    int idle_rounds = 0;

    for (;;) {
        struct tp_task t;
        if (atomic_load_explicit(&w->detached, memory_order_relaxed))
            return; /* given up as stuck: the pool has a replacement */
        if (take_next(w, &t)) {
            run_one(tp, &t);
            idle_rounds = 0;
            continue;
        }
        if (pop_batch(tp, w)) {
            run_batch(tp, w);
            idle_rounds = 0;
            continue;
        }
        if (steal_next(tp, w, &t)) {
            run_one(tp, &t);
            idle_rounds = 0;
            continue;
        }
        /* Wait for more, briefly: pause first (work often follows at
         * once), then yield, so that a submitter sharing this core runs
         * instead of us spinning against it. */
        atomic_fetch_add(&tp->spinning, 1);
        atomic_thread_fence(memory_order_seq_cst);
        while (!queue_nonempty(tp)) {
            if (++idle_rounds > PK__TP_SPINS) {
                atomic_fetch_sub(&tp->spinning, 1);
                return;
            }
            if (idle_rounds < 64) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            } else {
                sched_yield();
            }
        }
        atomic_fetch_sub(&tp->spinning, 1);
    }
}

/* ---- waiting inside a task: help instead of blocking ------------------ */

/* The worker whose stack holds f, or NULL. glock held. */
static struct tp_worker *
runner_of(struct pk_threadpool *tp, pk_future *f)
{
    for (struct tp_worker *r = tp->all_workers; r; r = r->next_all) {
        int d = atomic_load(&r->depth);
        for (int i = 0; i < d; i++)
            if (atomic_load(&r->stack[i]) == f)
                return r;
    }
    return NULL;
}

/* Follows "f runs on R, R waits on g, g runs on ..." back to w: a cycle
 * means f can never finish while w waits. Every future on the chain is
 * unfinished, or the chain is already unwinding. */
static bool
cycle_once(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    bool cycle = false;

    pk__lock_acquire(&tp->glock);
    for (int hops = 0; f && hops < 64; hops++) {
        struct tp_worker *r;
        if (pk__future_done(f))
            break;
        r = runner_of(tp, f);
        if (!r)
            break;
        if (r == w) {
            cycle = true;
            break;
        }
        f = atomic_load(&r->waiting_on);
    }
    pk__lock_release(&tp->glock);
    return cycle;
}

static bool
is_cycle(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    /* The chain is read while others move; a real cycle is stable (all
     * its workers are blocked), so seeing it twice rules out a race. */
    if (!cycle_once(tp, w, f))
        return false;
    sched_yield();
    return cycle_once(tp, w, f);
}

/* Runs one task from the worker's own batch or from the queue, nested on
 * this stack. Returns false if there was none. */
static bool
help_one(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tally n = { 0, 0, 0 };
    struct tp_task t;

    if (take_next(w, &t)) {
        run_one(tp, &t);
        return true;
    }
    if (w->batch_next < w->batch_n) {
        t = w->batch[w->batch_next++];
        w->batch_ran++;
        run_task(tp, &t, &n); /* finished with the batch, in run_batch */
        tally_add(tp, &n);
        return true;
    }
    if (tp_ring_pop(&tp->q, &t)) {
        unreserve(tp, 1);
        run_task(tp, &t, &n);
        tally_add(tp, &n);
        finish(tp, 1);
        return true;
    }
    /* Another worker's next slot: that worker may be parked waiting too,
     * and nothing else would run it (stress_threadpool). */
    if (steal_next(tp, w, &t)) {
        run_one(tp, &t);
        return true;
    }
    return false;
}

/* True if some worker's next slot holds a task (spinning workers steal
 * them; a parked one does not). */
static bool
next_waiting(struct pk_threadpool *tp)
{
    bool any = false;

    pk__lock_acquire(&tp->glock);
    for (struct tp_worker *r = tp->all_workers; r && !any; r = r->next_all)
        any = atomic_load_explicit(&r->next_state,
                                   memory_order_relaxed) == 1;
    pk__lock_release(&tp->glock);
    return any;
}

/* Applies min/max (plus compensation) to the core pool. rlock held. */
static int
apply_size_locked(struct pk_threadpool *tp)
{
    size_t max = atomic_load(&tp->max_threads) + tp->comp;

    return pk_pool_resize(tp->workers, tp->min_threads, 0, max);
}

/* A worker that must park while work is queued (it may not help: its
 * stack is full) lets one more worker exist meanwhile, as Java's
 * ForkJoinPool compensates a blocked worker: otherwise every worker could
 * wait on children that sit behind the tasks none of them may run. The
 * extra worker retires when it next goes idle above max. */
static void
compensate(struct pk_threadpool *tp, int delta)
{
    pk__lock_acquire(&tp->rlock);
    tp->comp = delta > 0 ? tp->comp + 1 : tp->comp - 1;
    atomic_store(&tp->ncomp, tp->comp);
    apply_size_locked(tp);
    pk__lock_release(&tp->rlock);
    if (delta > 0)
        wake_one(tp);
}

/* Sets what w is blocked on. Under glock: a cycle check reads other
 * workers' waiting_on and looks into those futures, so one must stay
 * alive (its waiter holds it until this reset) while a check that saw it
 * runs. */
static void
set_waiting_on(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    pk__lock_acquire(&tp->glock);
    atomic_store(&w->waiting_on, f);
    pk__lock_release(&tp->glock);
}

/* Runs one task that may help f finish, within the nesting bounds:
 * below PK__TP_NEST tasks on this stack anything; below twice that only
 * next slots (most often the very child awaited). */
static bool
help_within_bounds(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tp_task t;

    if (w->nest < PK__TP_NEST)
        return help_one(tp, w);
    if (w->nest < 2 * PK__TP_NEST &&
        (take_next(w, &t) || steal_next(tp, w, &t))) {
        run_one(tp, &t);
        return true;
    }
    return false;
}

/* Blocks on f for up to 10 ms (re-looking for work and cycles then: both
 * can appear without touching f), counted out of `active` so that a
 * submitter wakes or starts another worker meanwhile. Returns
 * PK_EDEADLK, PK_ETIMEDOUT or 0. */
static int
block_on(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f,
         uint64_t deadline)
{
    uint64_t now, until;
    bool comp;

    if (is_cycle(tp, w, f))
        return PK_EDEADLK;
    now = pk__now_ns();
    if (now >= deadline)
        return PK_ETIMEDOUT;
    until = now + 10000000u;
    comp = queue_nonempty(tp) || next_waiting(tp);
    atomic_fetch_sub(&tp->active, 1);
    if (comp)
        compensate(tp, 1); /* queued work, and we may not help */
    (void)pk__future_wait_until(f, until < deadline ? until : deadline);
    if (comp)
        compensate(tp, -1);
    atomic_fetch_add(&tp->active, 1);
    return 0;
}

/* The wait helper of a worker thread (lib/future_int.h). */
static int
help_wait(void *ctx, pk_future *f, uint64_t deadline)
{
    struct tp_worker *w = ctx;
    struct pk_threadpool *tp = w->tp;
    int rc = 0;

    if (w->nest >= PK__TP_NEST)
        give_back_batch(tp, w);
    while (rc == 0 && !pk__future_done(f)) {
        if (help_within_bounds(tp, w))
            continue;
        /* Shown to cycle checks only while blocked: while this worker
         * runs a helped task it is not stuck on f, and a chain followed
         * through it would find a cycle that is not there. */
        set_waiting_on(tp, w, f);
        rc = block_on(tp, w, f, deadline);
        set_waiting_on(tp, w, NULL);
    }
    return rc;
}

/* Gives the worker's lease back; returns false if the worker must exit
 * (the pool retired it on this very thread). */
static bool
go_idle(struct tp_worker *w)
{
    struct pk_threadpool *tp = w->tp;
    pk_lease l = w->lease;

    pk_pool_release(tp->workers, &l, PK_RELEASE_OK);
    if (atomic_load(&w->self_exit))
        return false;
    /* Work that arrived while we left: make sure someone runs it. */
    if (queue_nonempty(tp))
        wake_one(tp);
    return true;
}

static void *
worker_main(void *arg)
{
    struct tp_worker *w = arg;
    struct pk_threadpool *tp = w->tp;

    pthread_setname_np(pthread_self(), "pk-worker");
    tls_worker = w;
    w->helper.fn = help_wait;
    w->helper.ctx = w;
    pk__future_set_wait_helper(&w->helper);
    pk__lock_acquire(&tp->glock);
    w->next_all = tp->all_workers;
    tp->all_workers = w;
    pk__lock_release(&tp->glock);
    if (tp->worker_init)
        tp->worker_init(tp->user);
    for (;;) {
        uint32_t v = pk__park(&w->park, UINT64_MAX);
        if (v == 2)
            break;
        atomic_store(&w->park.word, 0);
        for (;;) {
            drain(tp, w);
            if (atomic_load(&w->detached)) {
                struct tp_task t;
                while (take_next(w, &t)) /* ours: run before leaving */
                    run_one(tp, &t);
                atomic_fetch_sub(&tp->active, 1);
                goto out;
            }
            atomic_fetch_sub(&tp->active, 1);
            atomic_thread_fence(memory_order_seq_cst); /* see maybe_wake */
            if (!queue_nonempty(tp))
                break;
            atomic_fetch_add(&tp->active, 1);
        }
        if (!go_idle(w))
            break;
    }
out:
    if (tp->worker_exit)
        tp->worker_exit(tp->user);
    pk__lock_acquire(&tp->glock);
    for (struct tp_worker **pp = &tp->all_workers; *pp;
         pp = &(*pp)->next_all) {
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    }
    pk__lock_release(&tp->glock);
    pk__future_set_wait_helper(NULL);
    tls_worker = NULL;
    if (atomic_load(&w->self_exit) || atomic_load(&w->detached)) {
        /* Nobody joins us: the pool retired us on our own thread, or
         * forgot us as stuck. destroy waits on `threads` instead. */
        pthread_detach(pthread_self());
        pk__free(w);
    }
    /* pk_threadpool_destroy waits for this, so no hook runs after it. */
    pk__lock_acquire(&tp->qlock);
    atomic_fetch_sub(&tp->threads, 1);
    pk__lock_release(&tp->qlock);
    pk__cv_broadcast(&tp->exited);
    tp_unref(tp);
    return NULL;
}

static int
worker_create(void *user, void **res, pk_error *err)
{
    struct pk_threadpool *tp = user;
    struct tp_worker *w = pk__calloc(1, sizeof *w);
    int rc;

    if (!w)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "no memory for a worker");
    w->tp = tp;
    atomic_fetch_add(&tp->refs, 1);
    atomic_fetch_add(&tp->threads, 1);
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        atomic_fetch_sub(&tp->threads, 1);
        atomic_fetch_sub(&tp->refs, 1);
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, rc, "pthread_create: %s",
                            strerror(rc));
    }
    atomic_fetch_add(&tp->alive, 1);
    *res = w;
    return 0;
}

static void
worker_destroy(void *user, void *res)
{
    struct pk_threadpool *tp = user;
    struct tp_worker *w = res;

    atomic_fetch_sub(&tp->alive, 1);
    if (pthread_equal(w->thread, pthread_self())) {
        /* Retired on its own release (the pool closed or shrank while it
         * ran): it exits and frees itself. */
        atomic_store(&w->self_exit, true);
        return;
    }
    pk__park_wake(&w->park, 2);
    pthread_join(w->thread, NULL);
    pk__free(w);
}

/* ---- the watchdog ----------------------------------------------------- */

#define PK__WD_BATCH 32

struct wd_work {
    pk_event ev[PK__WD_BATCH];
    size_t n_ev;
    struct tp_worker *stuck[PK__WD_BATCH];
    pk_lease lease[PK__WD_BATCH];
    size_t n_stuck;
};

/* Looks at one running task. glock held. */
static void
watch_one(struct pk_threadpool *tp, struct tp_worker *w, uint64_t now,
          struct wd_work *wk)
{
    uint64_t ran = now - w->cur_start;

    if (w->cur_limit_ns && ran >= w->cur_limit_ns && !w->cur_flagged) {
        w->cur_flagged = true;
        if (w->cur_fut)
            pk_future_cancel(w->cur_fut); /* running: raises its flag */
    }
    if (ran >= tp->slow_ns && !w->cur_slow && wk->n_ev < PK__WD_BATCH) {
        w->cur_slow = true;
        wk->ev[wk->n_ev++] = (pk_event){ PK_EVENT_SLOW_TASK, w, NULL, 0,
                                         ran, NULL };
    }
    if (ran >= tp->stuck_ns && !atomic_load(&w->detached) &&
        wk->n_stuck < PK__WD_BATCH && wk->n_ev < PK__WD_BATCH) {
        atomic_store(&w->detached, true);
        wk->stuck[wk->n_stuck] = w;
        wk->lease[wk->n_stuck++] = w->lease;
        wk->ev[wk->n_ev++] = (pk_event){ PK_EVENT_HELD_TOO_LONG, w, NULL,
                                         0, ran, NULL };
    }
}

/* Gives up stuck workers: the core forgets them (DETACH), which makes
 * room for a replacement, woken at once if work waits. */
static void
give_up(struct pk_threadpool *tp, struct wd_work *wk)
{
    for (size_t i = 0; i < wk->n_stuck; i++) {
        pk_pool_release(tp->workers, &wk->lease[i], PK_RELEASE_DETACH);
        atomic_fetch_sub(&tp->alive, 1);
        atomic_fetch_add_explicit(&tp->st_detached, 1, memory_order_relaxed);
    }
    if (wk->n_stuck && queue_nonempty(tp))
        wake_one(tp);
}

static uint64_t
wd_period(struct pk_threadpool *tp)
{
    uint64_t p = tp->slow_ns < tp->stuck_ns ? tp->slow_ns : tp->stuck_ns;

    p = p == UINT64_MAX ? 5000000u : p / 4; /* run limits: 5 ms steps */
    if (p < 1000000u)
        p = 1000000u;
    return p > 100000000u ? 100000000u : p;
}

static void *
wd_main(void *arg)
{
    struct pk_threadpool *tp = arg;
    struct wd_work wk;
    uint64_t period = wd_period(tp);

    pthread_setname_np(pthread_self(), "pk-watchdog");
    pk__lock_acquire(&tp->glock);
    while (!tp->wd_stop) {
        uint64_t now = pk__now_ns();
        wk.n_ev = wk.n_stuck = 0;
        for (struct tp_worker *w = tp->all_workers; w; w = w->next_all)
            if (w->cur_start)
                watch_one(tp, w, now, &wk);
        pk__lock_release(&tp->glock);
        give_up(tp, &wk);
        for (size_t i = 0; tp->event && i < wk.n_ev; i++)
            tp->event(tp->event_user, &wk.ev[i]);
        pk__lock_acquire(&tp->glock);
        if (!tp->wd_stop)
            pk__cv_wait_until(&tp->wd_cv, &tp->glock, pk__now_ns() + period);
    }
    pk__lock_release(&tp->glock);
    return NULL;
}

/* Starts the watchdog once. glock held. */
static int
wd_start_locked(struct pk_threadpool *tp)
{
    int rc;

    if (tp->wd_running)
        return 0;
    rc = pthread_create(&tp->wd, NULL, wd_main, tp);
    if (rc)
        return -rc;
    tp->wd_running = true;
    return 0;
}

static void
wd_stop(struct pk_threadpool *tp)
{
    bool join;

    pk__lock_acquire(&tp->glock);
    join = tp->wd_running;
    tp->wd_stop = true;
    tp->wd_running = false;
    pk__lock_release(&tp->glock);
    pk__cv_broadcast(&tp->wd_cv);
    if (join)
        pthread_join(tp->wd, NULL);
}

/* ---- waking ----------------------------------------------------------- */

static void
give(struct pk_threadpool *tp, pk_lease *l)
{
    struct tp_worker *w = l->resource;

    w->lease = *l;
    atomic_fetch_add(&tp->active, 1);
    pk__park_wake(&w->park, 1);
}

/* When no worker exists and none can be started (thread creation or
 * memory failed), the thread that learned it runs what is queued, so a
 * task whose submit returned 0 is never stranded. */
static void
run_queued_here(struct pk_threadpool *tp)
{
    struct tp_task t;

    while (atomic_load(&tp->alive) == 0 && tp_ring_pop(&tp->q, &t)) {
        unreserve(tp, 1);
        run_one(tp, &t);
    }
}

static void
on_new_worker(void *arg, pk_pool_ticket *t)
{
    struct pk_threadpool *tp = arg;
    pk_lease l;
    int rc = pk_pool_ticket_take(t, &l, NULL);

    if (rc == 0)
        give(tp, &l);
    atomic_store(&tp->growing, false);
    if (rc != 0 && rc != PK_ESHUTDOWN) {
        run_queued_here(tp);
        return;
    }
    /* Pushes that came while this worker was being made found `growing`
     * set and did not start another: look again for them. */
    maybe_wake(tp);
}

static void
wake_one(struct pk_threadpool *tp)
{
    pk_pool_ticket *t;
    pk_lease l;
    int ready = 0;

    if (pk_pool_acquire(tp->workers, &l, 0, NULL) == 0) {
        give(tp, &l);
        return;
    }
    if (atomic_load(&tp->alive) >=
            atomic_load(&tp->max_threads) + atomic_load(&tp->ncomp) ||
        atomic_exchange(&tp->growing, true))
        return;
    if (pk_pool_acquire_async(tp->workers, &t, PK_WAIT_FOREVER, on_new_worker,
                              tp, &ready) != 0) {
        atomic_store(&tp->growing, false);
        run_queued_here(tp); /* only if no worker exists at all */
        return;
    }
    if (ready)
        on_new_worker(tp, t);
}

/* Wakes a worker if fewer are active than tasks are queued. */
/* After a push: makes sure a worker will take the task. A spinning
 * worker will; otherwise, if not every worker is busy, an idle one is
 * woken or a new one started (before anything waits: a new worker
 * starts whenever the pool is below max and none is free). The fence
 * pairs with the one in drain(): either we see the spinner, or it sees
 * our push. */
static void
maybe_wake(struct pk_threadpool *tp)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&tp->spinning, memory_order_relaxed) > 0)
        return;
    if (atomic_load_explicit(&tp->active, memory_order_relaxed) >=
        atomic_load_explicit(&tp->max_threads, memory_order_relaxed))
        return; /* all busy: the next to finish takes it */
    if (queue_nonempty(tp))
        wake_one(tp);
}

/* ---- create / destroy ------------------------------------------------- */

static size_t
cpu_count(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
    return 2;
}

static int
check_options(const pk_threadpool_options *o)
{
    if (o->full_policy < PK_FULL_BLOCK || o->full_policy > PK_FULL_REJECT)
        return PK_EINVAL;
    if (o->submit_timeout_ms < 0 && o->submit_timeout_ms != PK_WAIT_FOREVER)
        return PK_EINVAL;
    if (o->keep_alive_ms < 0 && o->keep_alive_ms != PK_NEVER)
        return PK_EINVAL;
    if (o->max_threads && o->min_threads > o->max_threads)
        return PK_EINVAL;
    if ((o->slow_task_ms < 0 && o->slow_task_ms != PK_NEVER) ||
        (o->stuck_after_ms < 0 && o->stuck_after_ms != PK_NEVER))
        return PK_EINVAL;
    return 0;
}

static uint64_t
limit_ns(int ms)
{
    return ms > 0 ? (uint64_t)ms * 1000000u : UINT64_MAX;
}

static int
start_workers(struct pk_threadpool *tp, const pk_threadpool_options *o)
{
    pk_pool_options po;

    pk_pool_options_init(&po);
    po.create = worker_create;
    po.destroy = worker_destroy;
    po.user = tp;
    po.min_size = o->min_threads;
    po.max_size = tp->max_threads;
    po.max_creating = 1;
    po.idle_timeout_ms = o->keep_alive_ms ? o->keep_alive_ms : 60000;
    po.flags = PK_POOL_NO_GENERATION_BUMP;
    po.event = o->event;
    po.event_user = o->event_user;
    return pk_pool_create(&tp->workers, &po);
}

int
pk_threadpool_create(pk_threadpool **out, const pk_threadpool_options *opts)
{
    pk_threadpool_options defaults = { 0 };
    struct pk_threadpool *tp;
    int rc;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (!opts)
        opts = &defaults;
    rc = check_options(opts);
    if (rc)
        return rc;
    tp = pk__calloc(1, sizeof *tp);
    if (!tp)
        return PK_ENOMEM;
    rc = tp_ring_init(&tp->q, opts->queue_size ? opts->queue_size : 65536);
    if (rc) {
        pk__free(tp);
        return rc;
    }
    tp->cap = tp_ring_capacity(&tp->q);
    atomic_init(&tp->refs, 1);
    tp->fork_epoch = pk__fork_epoch();
    tp->registry = opts->registry;
    tp->event = opts->event;
    tp->event_user = opts->event_user;
    tp->worker_init = opts->worker_init;
    tp->worker_exit = opts->worker_exit;
    tp->user = opts->user;
    tp->full_policy = opts->full_policy;
    tp->submit_timeout_ms = opts->submit_timeout_ms ? opts->submit_timeout_ms
                                                    : PK_WAIT_FOREVER;
    tp->max_threads = opts->max_threads ? opts->max_threads : cpu_count();
    if (opts->min_threads > tp->max_threads) {
        tp_ring_fini(&tp->q);
        pk__free(tp);
        return PK_EINVAL;
    }
    tp->min_threads = opts->min_threads;
    tp->slow_ns = limit_ns(opts->slow_task_ms);
    tp->stuck_ns = limit_ns(opts->stuck_after_ms);
    rc = start_workers(tp, opts);
    if (rc) {
        tp_ring_fini(&tp->q);
        pk__free(tp);
        return rc;
    }
    if (tp->slow_ns != UINT64_MAX || tp->stuck_ns != UINT64_MAX) {
        atomic_store(&tp->watch, true);
        pk__lock_acquire(&tp->glock);
        rc = wd_start_locked(tp);
        pk__lock_release(&tp->glock);
        if (rc) {
            pk_pool_destroy(tp->workers);
            tp_ring_fini(&tp->q);
            pk__free(tp);
            return rc;
        }
    }
    tp->magic = PK__TP_MAGIC;
    *out = tp;
    return 0;
}

static void
tp_unref(struct pk_threadpool *tp)
{
    if (atomic_fetch_sub(&tp->refs, 1) != 1)
        return;
    tp_ring_fini(&tp->q);
    pk__free(tp);
}

void
pk_threadpool_destroy(pk_threadpool *tp)
{
    if (!tp || tp->magic != PK__TP_MAGIC)
        return;
    if (tp->fork_epoch != pk__fork_epoch()) {
        /* In a child: the workers do not exist here; free memory only. */
        pk_pool_destroy(tp->workers);
        tp->magic = 0;
        tp_ring_fini(&tp->q);
        pk__free(tp);
        return;
    }
    pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, PK_WAIT_FOREVER);
    wd_stop(tp);
    pk_pool_destroy(tp->workers);
    pk__lock_acquire(&tp->qlock);
    while (atomic_load(&tp->threads) > 0)
        pk__cv_wait_until(&tp->exited, &tp->qlock, UINT64_MAX);
    pk__lock_release(&tp->qlock);
    tp->magic = 0;
    tp_unref(tp);
}

/* ---- submit ----------------------------------------------------------- */

static int
validate(struct pk_threadpool *tp)
{
    if (!tp || tp->magic != PK__TP_MAGIC)
        return PK_EINVAL;
    if (tp->fork_epoch != pk__fork_epoch())
        return PK_EFORKED;
    return 0;
}

static int
task_ok(const pk_task *t)
{
    if (!t || (t->fn == NULL) == (t->name == NULL))
        return PK_EINVAL;
    if (t->name && t->len && !t->data)
        return PK_EINVAL;
    return 0;
}

/* Builds a queue record: a future (if asked) and a copy of the bytes. */
/* One task in eight is timed (queue wait, run time): reading the clock
 * for every task would cost more than the rest of a no-op's trip. The
 * counter is per thread, so submitters share nothing for it. */
static _Thread_local unsigned tls_sample;

static int
prepare(const pk_task *task, pk_future **fut, struct tp_task *out,
        struct pk_threadpool *tp)
{
    memset(out, 0, sizeof *out);
    out->task = *task;
    if ((++tls_sample & 7u) == 0)
        out->enq_ns = pk__now_ns();
    if (task->name && task->len && !(task->flags & PK_TASK_SHARED)) {
        out->copy = pk__alloc(task->len);
        if (!out->copy)
            return PK_ENOMEM;
        memcpy(out->copy, task->data, task->len);
        out->task.data = out->copy;
    }
    if (fut) {
        int rc = pk_future_create(&out->fut, tp->event, tp->event_user);
        if (rc) {
            pk__free(out->copy);
            return rc;
        }
        *fut = pk_future_ref(out->fut);
    }
    return 0;
}

static void
unprepare(struct tp_task *t, pk_future **fut)
{
    if (fut && *fut) {
        pk_future_release(*fut);
        *fut = NULL;
    }
    pk_future_release(t->fut);
    pk__free(t->copy);
}

/* Waits for a reservation (PK_FULL_BLOCK). A worker's pop wakes us; the
 * wake is best effort (the pop does not order itself against our
 * registration), so the wait is also cut into 1 ms slices. */
static int
wait_for_room(struct pk_threadpool *tp, size_t n)
{
    uint64_t deadline;

    if (pk__deadline(tp->submit_timeout_ms, &deadline))
        return PK_EINVAL;
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->not_full);
        if (atomic_load(&tp->closed)) {
            pk__cv_cancel(&tp->not_full);
            return PK_ESHUTDOWN;
        }
        if (reserve(tp, n)) {
            pk__cv_cancel(&tp->not_full);
            return 0;
        }
        uint64_t now = pk__now_ns();
        if (now >= deadline) {
            pk__cv_cancel(&tp->not_full);
            return PK_ETIMEDOUT;
        }
        uint64_t slice = now + 1000000u;
        pk__cv_wait_prepared(&tp->not_full, seq,
                             slice < deadline ? slice : deadline);
    }
}

/* Gets room for n tasks by the full policy. Returns 0 (reserved), 1 (run
 * on the caller: CALLER_RUNS), or an error. */
static int
make_room(struct pk_threadpool *tp, size_t n, int policy)
{
    if (reserve(tp, n))
        return 0;
    switch (policy) {
    case PK_FULL_BLOCK:
        return wait_for_room(tp, n);
    case PK_FULL_TRY:
        return PK_EAGAIN;
    case PK_FULL_CALLER_RUNS:
        return 1;
    default:
        return PK_EFULL;
    }
}

/* Pushes n prepared tasks, or refuses them all. */
static int
enqueue(struct pk_threadpool *tp, struct tp_task *t, size_t n, int policy)
{
    int rc;

    atomic_fetch_add(&tp->submitting, 1);
    if (atomic_load(&tp->closed))
        rc = PK_ESHUTDOWN;
    else
        rc = make_room(tp, n, policy);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            tp_ring_push(&tp->q, &t[i]); /* cannot fail: reserved */
    }
    atomic_fetch_sub(&tp->submitting, 1);
    if (rc < 0) {
        atomic_fetch_add_explicit(&tp->st_rejected, n, memory_order_relaxed);
        return rc;
    }
    atomic_fetch_add_explicit(&tp->st_submitted, n, memory_order_relaxed);
    if (rc == 1) {
        struct tally c = { 0, 0, 0 };
        run_task(tp, t, &c);
        tally_add(tp, &c);
        return 0;
    }
    maybe_wake(tp);
    return 0;
}

/* A task with a future, submitted from a task of this pool: into the
 * submitting worker's next slot if it is free (see put_next). Returns
 * PK_EAGAIN when it must take the queue. */
static int
enqueue_next(struct pk_threadpool *tp, struct tp_worker *w,
             struct tp_task *t)
{
    int rc = PK_EAGAIN;

    atomic_fetch_add(&tp->submitting, 1);
    if (!atomic_load(&tp->closed) && put_next(tp, w, t))
        rc = 0;
    atomic_fetch_sub(&tp->submitting, 1);
    if (rc == 0)
        atomic_fetch_add_explicit(&tp->st_submitted, 1,
                                  memory_order_relaxed);
    return rc;
}

static int
submit(pk_threadpool *tp, const pk_task *task, const pk_task_options *o,
       pk_future **fut)
{
    struct tp_task t;
    int rc = validate(tp);

    if (rc == 0)
        rc = task_ok(task);
    if (rc == 0 && o && (o->start_within_ms < 0 || o->run_limit_ms < 0))
        rc = PK_EINVAL;
    if (rc)
        return rc;
    if (fut)
        *fut = NULL;
    rc = prepare(task, fut, &t, tp);
    if (rc)
        return rc;
    if (o && (o->start_within_ms || o->run_limit_ms)) {
        t.enq_ns = pk__now_ns();
        t.start_within_ms = (uint32_t)o->start_within_ms;
        t.run_limit_ms = (uint32_t)o->run_limit_ms;
        if (o->run_limit_ms) {
            pk__lock_acquire(&tp->glock);
            rc = wd_start_locked(tp);
            pk__lock_release(&tp->glock);
            if (rc) {
                unprepare(&t, fut);
                return rc;
            }
        }
    }
    if (fut && tls_worker && tls_worker->tp == tp &&
        enqueue_next(tp, tls_worker, &t) == 0)
        return 0;
    rc = enqueue(tp, &t, 1, tp->full_policy);
    if (rc)
        unprepare(&t, fut);
    return rc;
}

int
pk_threadpool_submit_task(pk_threadpool *tp, const pk_task *task,
                          pk_future **fut)
{
    return submit(tp, task, NULL, fut);
}

int
pk_threadpool_submit_opts(pk_threadpool *tp, const pk_task *task,
                          const pk_task_options *opts, pk_future **fut)
{
    return submit(tp, task, opts, fut);
}

int
pk_threadpool_submit(pk_threadpool *tp, pk_task_fn fn, void *arg,
                     pk_future **fut)
{
    pk_task t = { .fn = fn, .arg = arg };

    return pk_threadpool_submit_task(tp, &t, fut);
}

int
pk_threadpool_submit_many(pk_threadpool *tp, const pk_task *tasks, size_t n,
                          pk_future **futs)
{
    struct tp_task *recs;
    size_t i;
    int rc = validate(tp);

    if (rc == 0 && (!tasks || n == 0))
        rc = PK_EINVAL;
    for (i = 0; rc == 0 && i < n; i++)
        rc = task_ok(&tasks[i]);
    if (rc)
        return rc;
    recs = pk__alloc(n * sizeof *recs);
    if (!recs)
        return PK_ENOMEM;
    for (i = 0; i < n; i++) {
        if (futs)
            futs[i] = NULL;
        rc = prepare(&tasks[i], futs ? &futs[i] : NULL, &recs[i], tp);
        if (rc)
            break;
    }
    if (rc == 0) {
        /* All or nothing: never run on the caller, never half queued. */
        int policy = tp->full_policy == PK_FULL_TRY ? PK_FULL_TRY
                                                    : PK_FULL_REJECT;
        if (tp->full_policy == PK_FULL_BLOCK)
            policy = PK_FULL_BLOCK;
        rc = enqueue(tp, recs, n, policy);
    }
    if (rc) {
        for (size_t k = 0; k < i; k++)
            unprepare(&recs[k], futs ? &futs[k] : NULL);
        pk__free(recs);
        return rc;
    }
    pk__free(recs);
    for (size_t k = 1; k < n && k < PK__TP_BATCH; k++)
        maybe_wake(tp);
    return 0;
}

/* ---- sizing, shutdown, stats ------------------------------------------ */

int
pk_threadpool_resize(pk_threadpool *tp, size_t min_threads,
                     size_t max_threads)
{
    int rc = validate(tp);

    if (rc)
        return rc;
    if (max_threads == 0 || min_threads > max_threads)
        return PK_EINVAL;
    pk__lock_acquire(&tp->rlock);
    atomic_store(&tp->max_threads, max_threads);
    tp->min_threads = min_threads;
    rc = apply_size_locked(tp);
    pk__lock_release(&tp->rlock);
    if (rc == 0 && queue_nonempty(tp))
        wake_one(tp);
    return rc;
}

static void
cancel_queued(struct pk_threadpool *tp)
{
    struct tp_task t;
    size_t n = 0;

    while (tp_ring_pop(&tp->q, &t)) {
        unreserve(tp, 1);
        if (t.fut)
            pk_future_cancel(t.fut);
        atomic_fetch_add_explicit(&tp->st_cancelled, 1, memory_order_relaxed);
        pk_future_release(t.fut);
        pk__free(t.copy);
        n++;
    }
    pk__lock_acquire(&tp->glock);
    for (struct tp_worker *r = tp->all_workers; r; r = r->next_all) {
        if (take_next(r, &t)) {
            if (t.fut)
                pk_future_cancel(t.fut);
            atomic_fetch_add_explicit(&tp->st_cancelled, 1,
                                      memory_order_relaxed);
            pk_future_release(t.fut);
            pk__free(t.copy);
            n++;
        }
    }
    pk__lock_release(&tp->glock);
    if (n)
        finish(tp, n);
}

/* Closes the door and waits for submits already past it. */
static void
close_door(struct pk_threadpool *tp)
{
    atomic_store(&tp->closed, true);
    pk__cv_broadcast(&tp->not_full); /* blocked submitters see `closed` */
    while (atomic_load(&tp->submitting) > 0)
        sched_yield(); /* a submit holds it for a push, never a wait */
}

int
pk_threadpool_shutdown(pk_threadpool *tp, int how, int timeout_ms)
{
    uint64_t deadline;
    int rc = validate(tp);

    if (rc)
        return rc;
    if (how < PK_SHUTDOWN_DRAIN || how > PK_SHUTDOWN_KILL ||
        pk__deadline(timeout_ms, &deadline))
        return PK_EINVAL;
    close_door(tp);
    if (how != PK_SHUTDOWN_DRAIN)
        cancel_queued(tp);
    else if (queue_nonempty(tp))
        wake_one(tp);
    /* Woken by the worker whose finish() catches up with the pushes. */
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->idle);
        if (all_finished(tp)) {
            pk__cv_cancel(&tp->idle);
            return 0;
        }
        if (pk__now_ns() >= deadline) {
            pk__cv_cancel(&tp->idle);
            return PK_ETIMEDOUT;
        }
        pk__cv_wait_prepared(&tp->idle, seq, deadline);
    }
}

int
pk_threadpool_stats_get(pk_threadpool *tp, pk_threadpool_stats *o)
{
    int rc = validate(tp);

    if (rc == 0 && !o)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    memset(o, 0, sizeof *o);
    size_t pushed = all_pushed(tp);
    size_t fin = atomic_load(&tp->finished);
    o->queued = tp_ring_count(&tp->q);
    /* A snapshot of moving counters: popped and not yet finished. */
    o->running = pushed - fin > o->queued ? pushed - fin - o->queued : 0;
    o->threads = atomic_load(&tp->alive);
    o->submitted = atomic_load(&tp->st_submitted);
    o->completed = atomic_load(&tp->st_completed);
    o->failed = atomic_load(&tp->st_failed);
    o->cancelled = atomic_load(&tp->st_cancelled);
    o->rejected = atomic_load(&tp->st_rejected);
    o->expired = atomic_load(&tp->st_expired);
    o->detached = atomic_load(&tp->st_detached);
    o->queue_wait_p50_ns = pk__hist_quantile(&tp->wait_hist, 0.50, 0);
    o->queue_wait_p99_ns = pk__hist_quantile(&tp->wait_hist, 0.99, 0);
    o->run_p50_ns = pk__hist_quantile(&tp->run_hist, 0.50, 0);
    o->run_p99_ns = pk__hist_quantile(&tp->run_hist, 0.99, 0);
    return 0;
}

/* ---- the executor view ------------------------------------------------ */

static int
ex_submit(void *impl, const pk_task *task, pk_future **fut)
{
    return pk_threadpool_submit_task(impl, task, fut);
}

static int
ex_submit_many(void *impl, const pk_task *tasks, size_t n, pk_future **futs)
{
    return pk_threadpool_submit_many(impl, tasks, n, futs);
}

static int
ex_capacity(void *impl, size_t *out)
{
    struct pk_threadpool *tp = impl;
    size_t u = atomic_load(&tp->used);

    if (atomic_load(&tp->closed))
        return PK_ESHUTDOWN;
    *out = tp->cap > u ? tp->cap - u : 0;
    return 0;
}

static int
ex_shutdown(void *impl, int how, int timeout_ms)
{
    return pk_threadpool_shutdown(impl, how, timeout_ms);
}

int
pk_threadpool_executor(pk_threadpool *tp, pk_executor **out)
{
    static const pk_executor_ops ops = {
        ex_submit, ex_submit_many, ex_capacity, ex_shutdown, NULL
    };
    int rc = validate(tp);

    if (rc == 0 && !out)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    return pk_executor_create(out, &ops, tp);
}
