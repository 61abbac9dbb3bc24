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
 * When a worker cannot be started (the process is at its thread limit,
 * or out of memory), the tasks still run, never on the core's helper
 * thread (it makes the workers, and must stay free to): a submit that
 * finds no worker alive waits for the one being started and, if none
 * comes, runs the queue as a stand-in worker before it returns; so does
 * a draining shutdown; a worker or stand-in waiting on a future of the
 * pool helps run it. The watchdog retries the start after a backoff
 * (1 ms doubling to 100 ms) while tasks are queued (worker.c).
 *
 * The queue is a lock-free bounded ring (ring.h) per lane. A push claims
 * all its cells at once or none (the ring is full when its tail is a lap
 * ahead of its head), so submit_many is all or nothing. A worker takes
 * one task at a time (a batch when the queue is long), runs it, and
 * counts it in `finished`; everything pushed has run when finished
 * equals the rings' tails, which is what shutdown waits for (woken by
 * the worker that gets there, never by polling). Shutdown closes each
 * ring by setting a bit in its tail: a push is a CAS on the tail, so it
 * either came before the close (and is counted in the tail shutdown
 * reads) or is refused, and a submit pays no fence for it. Submits into
 * next slots, which bypass the rings, count themselves in `submitting`,
 * which shutdown waits to drain. A submit writes no counter either: the
 * tails count submitted tasks (pk__tp_lane_submitted).
 *
 * A worker runs tasks until the queue is empty, spins briefly, then gives
 * its lease back and parks. No wake is lost: a submitter pushes, then
 * reads `active`; a worker leaving decrements `active`, re-reads the
 * queue, and after releasing itself looks once more and wakes a worker if
 * work arrived. One of the two sees the other: the worker's side is a
 * membarrier (a barrier on every thread of the process, the submitter's
 * included), so the submitter, whose fence would stall on the cell it
 * just wrote, needs none (pk__tp_wake_after_push); without membarrier
 * both sides fence (seq_cst).
 *
 * Lifetime: the pool struct is reference counted by its handle and by
 * each worker thread, so a worker finishing late never touches freed
 * memory. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <string.h>

#include "alloc.h"
#include "tp_int.h"

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
    if (o->min_threads > PK_THREADPOOL_THREADS_MAX ||
        o->max_threads > PK_THREADPOOL_THREADS_MAX)
        return PK_EINVAL;
    if (o->queue_size > PK__TP_QUEUE_MAX)
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
    po.create = pk__tp_worker_create;
    po.destroy = pk__tp_worker_destroy;
    po.user = tp;
    po.min_size = o->min_threads;
    po.max_size = tp->max_threads;
    po.max_creating = 1;
    po.idle_timeout_ms = o->keep_alive_ms ? o->keep_alive_ms : 60000;
    /* A thread that cannot start (EAGAIN at the process's limit) is soon
     * retried: a try is cheap, and meanwhile a worker may be blocked
     * waiting for one (compensation), or submitters run the queue. */
    po.backoff_initial_ms = 1;
    po.max_backoff_ms = 100;
    po.flags = PK_POOL_NO_GENERATION_BUMP;
    po.event = o->event;
    po.event_user = o->event_user;
    return pk_pool_create(&tp->workers, &po);
}

static void
free_pool(struct pk_threadpool *tp)
{
    pk__tp_lanes_fini(tp);
    pk__free(tp);
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
    rc = pk__tp_lanes_init(tp, opts);
    if (rc) {
        pk__free(tp);
        return rc;
    }
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
        free_pool(tp);
        return PK_EINVAL;
    }
    tp->min_threads = opts->min_threads;
    atomic_init(&tp->asym, pk__tp_asym_init());
    tp->slow_ns = limit_ns(opts->slow_task_ms);
    tp->stuck_ns = limit_ns(opts->stuck_after_ms);
    rc = start_workers(tp, opts);
    if (rc) {
        free_pool(tp);
        return rc;
    }
    if (tp->slow_ns != UINT64_MAX || tp->stuck_ns != UINT64_MAX) {
        atomic_store(&tp->watch, true);
        pk__lock_acquire(&tp->glock);
        rc = pk__tp_wd_start_locked(tp);
        pk__lock_release(&tp->glock);
        if (rc) {
            pk_pool_destroy(tp->workers);
            free_pool(tp);
            return rc;
        }
    }
    tp->magic = PK__TP_MAGIC;
    *out = tp;
    return 0;
}

void
pk__tp_unref(struct pk_threadpool *tp)
{
    if (atomic_fetch_sub(&tp->refs, 1) != 1)
        return;
    free_pool(tp);
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
        free_pool(tp);
        return;
    }
    pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, PK_WAIT_FOREVER);
    pk__tp_wd_stop(tp);
    pk_pool_destroy(tp->workers);
    pk__lock_acquire(&tp->qlock);
    while (atomic_load(&tp->threads) > 0)
        pk__cv_wait_until(&tp->exited, &tp->qlock, UINT64_MAX);
    pk__lock_release(&tp->qlock);
    tp->magic = 0;
    pk__tp_unref(tp);
}

/* ---- submit ----------------------------------------------------------- */

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
/* Some tasks are timed (queue wait, run time): reading the clock for
 * every task would cost more than the rest of a no-op's trip. One in
 * eight of a thread's first 4096 submits, so a pool that runs few tasks
 * still gets percentiles, then one in 64 (the clock was a fifth of a
 * submit_many task's cost at one in eight). The counter is per thread,
 * so submitters share nothing for it. */
static _Thread_local unsigned tls_sample;

static int
prepare(const pk_task *task, pk_future **fut, struct tp_task *out,
        struct pk_threadpool *tp)
{
    /* Field by field: a memset of the record compiles to rep stos, whose
     * start-up cost was a tenth of a no-op task's submit. */
    tp_task_set(out, task);
    out->fut = NULL;
    out->enq_ns = 0;
    out->start_within_ms = 0;
    out->run_limit_ms = 0;
    out->lane = 0;
    unsigned k = ++tls_sample;
    if ((k & (k < 4096 ? 7u : 63u)) == 0)
        out->enq_ns = pk__now_ns();
    if (task->name && task->len && !(task->flags & PK_TASK_SHARED)) {
        void *copy = pk__alloc(task->len);
        if (!copy)
            return PK_ENOMEM;
        memcpy(copy, task->data, task->len);
        out->a.copy = copy;
        out->bits |= TP_T_COPY;
    }
    if (fut) {
        int rc = pk__future_create_refs(&out->fut, tp->event,
                                        tp->event_user, 2);
        if (rc) {
            pk__free(tp_task_copy(out));
            return rc;
        }
        *fut = out->fut; /* the caller's reference */
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
    pk__free(tp_task_copy(t));
}

/* Waits for room, then pushes (PK_FULL_BLOCK). A worker's pop wakes us;
 * the wake is best effort (the pop does not order itself against our
 * registration), so the wait is also cut into 1 ms slices. A task of
 * this pool that submits here is on a worker, and only workers make
 * room: if every worker waited here, none would. So a worker runs
 * queued tasks meanwhile (each pop makes room), and past its nesting
 * bounds waits stepped aside, with one more worker allowed. */
static int
wait_for_room(struct pk_threadpool *tp, struct tp_lane *l,
              const struct tp_task *t, size_t n)
{
    struct tp_worker *w = pk__tp_self && pk__tp_self->tp == tp ? pk__tp_self
                                                                : NULL;
    struct pk__tp_aside a = { 0, false };
    bool aside = false;
    uint64_t deadline;
    int rc;

    if (pk__deadline(tp->submit_timeout_ms, &deadline))
        return PK_EINVAL;
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->not_full);
        rc = atomic_load(&tp->closed) ? PK_ESHUTDOWN : pk__tp_push(l, t, n);
        if (rc != PK_EAGAIN) {
            pk__cv_cancel(&tp->not_full);
            break;
        }
        if (w && !aside && pk__tp_help_once(tp, w)) {
            pk__cv_cancel(&tp->not_full);
            if (pk__now_ns() < deadline)
                continue;
            rc = PK_ETIMEDOUT;
            break;
        }
        if (w && !aside) { /* once for the whole wait, not per slice */
            a = pk__tp_step_aside(tp, w);
            aside = true;
        }
        if (pk__cv_wait_slice(&tp->not_full, seq, deadline, 1000000u)) {
            rc = PK_ETIMEDOUT;
            break;
        }
    }
    if (aside)
        pk__tp_step_back(tp, a);
    return rc;
}

/* Pushes n tasks, all or none, or applies the full policy. Returns 0
 * (pushed), 1 (run on the caller: CALLER_RUNS), or an error. */
static int
push(struct pk_threadpool *tp, struct tp_lane *l, const struct tp_task *t,
     size_t n, int policy)
{
    int rc = pk__tp_push(l, t, n);

    if (rc != PK_EAGAIN)
        return rc; /* pushed, or closed */
    switch (policy) {
    case PK_FULL_BLOCK:
        return wait_for_room(tp, l, t, n);
    case PK_FULL_TRY:
        return PK_EAGAIN;
    case PK_FULL_CALLER_RUNS:
        return 1;
    default:
        return PK_EFULL;
    }
}

/* Runs t on this thread (PK_FULL_CALLER_RUNS), in its lane's place. */
/* Counted as pushed (outside the rings, as a next slot's task) before it
 * runs, and finished after, so that a shutdown waits for it as for any
 * running task and the stats count it running; unless the pool closed
 * first (the `submitting` handshake of close_door, as enqueue_next).
 * Returns 1 (ran) or PK_ESHUTDOWN. */
static int
run_here(struct pk_threadpool *tp, struct tp_lane *l, struct tp_worker *w,
         struct tp_task *t, bool counted)
{
    struct tally c = { 0, 0, 0 };
    bool open;

    atomic_fetch_add(&tp->submitting, 1);
    open = !atomic_load(&tp->closed);
    if (open)
        atomic_fetch_add(&tp->next_pushed, 1);
    atomic_fetch_sub(&tp->submitting, 1);
    if (open) {
        atomic_fetch_add(&l->st_extra, 1);
        pk__tp_run_task(tp, t, &c);
        pk__tp_tally_add(tp, &c);
    }
    pk__tp_lane_leave(tp, w, t->lane, counted); /* before: see run_batch */
    if (open)
        pk__tp_finish(tp, 1);
    return open ? 1 : PK_ESHUTDOWN;
}

/* caller_runs' wait while t's lane is at its cap: for a place (taken:
 * 1, *counted as pk__tp_lane_enter says) or room in the queue (t pushed:
 * 0), up to deadline, in 1 ms slices (a place given back wakes nobody
 * here). */
static int
wait_place_or_room(struct pk_threadpool *tp, struct tp_lane *l,
                   struct tp_worker *w, struct tp_task *t, uint64_t deadline,
                   bool *counted)
{
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->not_full);
        int rc = atomic_load(&tp->closed) ? PK_ESHUTDOWN
                                          : pk__tp_push(l, t, 1);
        if (rc != PK_EAGAIN || pk__tp_lane_enter(tp, w, t->lane, counted)) {
            pk__cv_cancel(&tp->not_full);
            return rc != PK_EAGAIN ? rc : 1;
        }
        if (pk__cv_wait_slice(&tp->not_full, seq, deadline, 1000000u))
            return PK_ETIMEDOUT;
    }
}

/* PK_FULL_CALLER_RUNS with the queue full: runs t here, holding a place
 * in its lane as a worker would (a task of a lane its caller's worker is
 * inside already takes none: the same nesting rule). While the lane is
 * at its cap, waits for a place or for room in the queue (then t is
 * queued after all), up to submit_timeout_ms. A worker waits as it
 * blocks on a future (wait.c, block_on): out of `active` and out of the
 * lanes it is inside, so that two tasks of two capped lanes, each
 * submitting to the other's, do not wait for each other's place. Returns
 * 1 (ran here), 0 (pushed), PK_ETIMEDOUT, PK_ESHUTDOWN or PK_EINVAL. */
static int
caller_runs(struct pk_threadpool *tp, struct tp_lane *l, struct tp_task *t)
{
    struct tp_worker *w = pk__tp_self && pk__tp_self->tp == tp ? pk__tp_self
                                                                : NULL;
    uint64_t deadline;
    uint32_t stepped_out = 0;
    bool counted;
    int rc;

    if (pk__tp_lane_enter(tp, w, t->lane, &counted))
        return run_here(tp, l, w, t, counted);
    if (pk__deadline(tp->submit_timeout_ms, &deadline))
        return PK_EINVAL;
    if (w) {
        stepped_out = pk__tp_lanes_step_out(tp, w);
        atomic_fetch_sub(&tp->active, 1);
    }
    rc = wait_place_or_room(tp, l, w, t, deadline, &counted);
    if (w) {
        atomic_fetch_add(&tp->active, 1);
        pk__tp_lanes_step_in(tp, stepped_out);
    }
    if (rc == 1)
        rc = run_here(tp, l, w, t, counted);
    return rc;
}

/* Pushes n prepared tasks of one lane, or refuses them all. No fence
 * against shutdown here: a ring refuses pushes once closed (ring.h), and
 * counts the ones before in its tail, which is also what counts them as
 * submitted (pk__tp_lane_submitted). */
static int
enqueue(struct pk_threadpool *tp, struct tp_task *t, size_t n, int policy)
{
    struct tp_lane *l = &tp->lanes[t->lane];
    int rc = atomic_load(&tp->closed) ? PK_ESHUTDOWN
                                      : push(tp, l, t, n, policy);

    if (rc == 1)
        rc = caller_runs(tp, l, t); /* n is 1: submit_many never is */
    if (rc < 0) {
        atomic_fetch_add_explicit(&tp->st_rejected, n, memory_order_relaxed);
        return rc;
    }
    if (rc == 1)
        return 0;
    pk__tp_wake_after_push(tp, l);
    pk__tp_after_submit(tp); /* no worker: run it here if none comes */
    return 0;
}

/* A task with a future, submitted from a task of this pool: into the
 * submitting worker's next slot if it is free (see pk__tp_put_next).
 * Not for a lane with a cap: a next slot is taken without a place in the
 * lane. Returns PK_EAGAIN when it must take the queue. */
static int
enqueue_next(struct pk_threadpool *tp, struct tp_worker *w,
             struct tp_task *t)
{
    struct tp_lane *l = &tp->lanes[t->lane];
    int rc = PK_EAGAIN;

    if (atomic_load_explicit(&l->max_workers, memory_order_relaxed))
        return rc;
    atomic_fetch_add(&tp->submitting, 1);
    if (!atomic_load(&tp->closed) && pk__tp_put_next(tp, w, t))
        rc = 0;
    atomic_fetch_sub(&tp->submitting, 1);
    if (rc == 0) {
        atomic_fetch_add(&l->st_extra, 1);
        /* As after a push: an idle worker may take it (steal) while this
         * one runs on; the task waiting for it may not help. */
        pk__tp_maybe_wake(tp);
    }
    return rc;
}

static int
check_task_options(struct pk_threadpool *tp, const pk_task_options *o)
{
    if (o && (o->start_within_ms < 0 || o->run_limit_ms < 0 ||
              o->lane < 0 || (size_t)o->lane >= tp->nlanes))
        return PK_EINVAL;
    return 0;
}

/* Gives a prepared task its options; a run limit needs the watchdog. */
static int
apply_task_options(struct pk_threadpool *tp, const pk_task_options *o,
                   struct tp_task *t)
{
    int rc = 0;

    if (!o)
        return 0;
    t->lane = (uint16_t)o->lane;
    if (o->start_within_ms || o->run_limit_ms) {
        t->enq_ns = pk__now_ns();
        t->start_within_ms = (uint32_t)o->start_within_ms;
        t->run_limit_ms = (uint32_t)o->run_limit_ms;
    }
    if (o->run_limit_ms) {
        pk__lock_acquire(&tp->glock);
        tp->wd_limits = true;
        rc = pk__tp_wd_start_locked(tp);
        pk__lock_release(&tp->glock);
        pk__cv_broadcast(&tp->wd_cv); /* it may sleep with nothing to watch */
    }
    return rc;
}

static int
submit(pk_threadpool *tp, const pk_task *task, const pk_task_options *o,
       pk_future **fut)
{
    struct tp_task t;
    int rc = pk__tp_validate(tp);

    if (rc == 0)
        rc = task_ok(task);
    if (rc == 0)
        rc = check_task_options(tp, o);
    if (rc)
        return rc;
    if (fut)
        *fut = NULL;
    rc = prepare(task, fut, &t, tp);
    if (rc)
        return rc;
    rc = apply_task_options(tp, o, &t);
    if (rc) {
        unprepare(&t, fut);
        return rc;
    }
    if (fut && pk__tp_self && pk__tp_self->tp == tp &&
        enqueue_next(tp, pk__tp_self, &t) == 0)
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
    return pk_threadpool_submit_many_opts(tp, tasks, n, NULL, futs);
}

int
pk_threadpool_submit_many_opts(pk_threadpool *tp, const pk_task *tasks,
                               size_t n, const pk_task_options *opts,
                               pk_future **futs)
{
    struct tp_task *recs;
    size_t i;
    int rc = pk__tp_validate(tp);

    if (rc == 0 && (!tasks || n == 0 || n > SIZE_MAX / sizeof *recs))
        rc = PK_EINVAL;
    if (rc == 0)
        rc = check_task_options(tp, opts);
    for (i = 0; futs && rc == 0 && i < n; i++)
        futs[i] = NULL;
    if (rc == 0 && n > tp->lanes[opts ? opts->lane : 0].cap) {
        rc = PK_EFULL; /* can never fit: do not wait for room */
        atomic_fetch_add_explicit(&tp->st_rejected, n, memory_order_relaxed);
    }
    for (i = 0; rc == 0 && i < n; i++)
        rc = task_ok(&tasks[i]);
    if (rc)
        return rc;
    recs = pk__alloc(n * sizeof *recs);
    if (!recs)
        return PK_ENOMEM;
    for (i = 0; i < n; i++) {
        rc = prepare(&tasks[i], futs ? &futs[i] : NULL, &recs[i], tp);
        if (rc)
            break;
        rc = apply_task_options(tp, opts, &recs[i]);
        if (rc) {
            i++; /* prepared: undone below */
            break;
        }
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
        pk__tp_maybe_wake(tp);
    return 0;
}

/* ---- sizing, shutdown, stats ------------------------------------------ */

/* Applies min/max (plus compensation) to the core pool. rlock held. */
int
pk__tp_apply_size_locked(struct pk_threadpool *tp)
{
    size_t max = atomic_load(&tp->max_threads) + tp->comp;

    return pk_pool_resize(tp->workers, tp->min_threads, 0, max);
}

int
pk_threadpool_resize(pk_threadpool *tp, size_t min_threads,
                     size_t max_threads)
{
    int rc = pk__tp_validate(tp);

    if (rc)
        return rc;
    if (max_threads == 0 || min_threads > max_threads ||
        max_threads > PK_THREADPOOL_THREADS_MAX)
        return PK_EINVAL;
    if (atomic_load(&tp->closed))
        return PK_ESHUTDOWN;
    pk__lock_acquire(&tp->rlock);
    atomic_store(&tp->max_threads, max_threads);
    tp->min_threads = min_threads;
    rc = pk__tp_apply_size_locked(tp);
    pk__lock_release(&tp->rlock);
    if (rc == 0 && pk__tp_work_ready(tp))
        pk__tp_wake_one(tp);
    return rc;
}

/* Closes the door and waits for submits already past it. */
static void
close_door(struct pk_threadpool *tp)
{
    atomic_store(&tp->closed, true);
    pk__tp_close_lanes(tp);
    pk__cv_broadcast(&tp->not_full); /* blocked submitters see `closed` */
    while (atomic_load(&tp->submitting) > 0)
        sched_yield(); /* a blocked submit sees `closed` within 1 ms */
}

int
pk_threadpool_shutdown(pk_threadpool *tp, int how, int timeout_ms)
{
    uint64_t deadline;
    int rc = pk__tp_validate(tp);

    if (rc)
        return rc;
    if (how < PK_SHUTDOWN_DRAIN || how > PK_SHUTDOWN_KILL ||
        pk__deadline(timeout_ms, &deadline))
        return PK_EINVAL;
    close_door(tp);
    if (how != PK_SHUTDOWN_DRAIN) {
        /* Before the sweep: a worker giving back its batch after it
         * cancels what it gives back (wait.c, give_back_batch). */
        atomic_store(&tp->cancelling, true);
        atomic_thread_fence(memory_order_seq_cst);
        pk__tp_cancel_queued(tp);
    } else if (pk__tp_work_ready(tp)) {
        pk__tp_wake_one(tp);
    }
    /* Woken by the worker whose pk__tp_finish() catches up with the
     * pushes. A draining caller stands in while no worker is alive (it
     * may run past the deadline then: nobody else would run the queue),
     * looking again every 10 ms, as workers may go while it waits. */
    for (;;) {
        if (how == PK_SHUTDOWN_DRAIN &&
            atomic_load_explicit(&tp->serving, memory_order_relaxed) == 0)
            pk__tp_standin_if_starved(tp);
        uint32_t seq = pk__cv_prepare(&tp->idle);
        if (pk__tp_all_finished(tp)) {
            pk__cv_cancel(&tp->idle);
            return 0;
        }
        if (pk__cv_wait_slice(&tp->idle, seq, deadline, 10000000u))
            return PK_ETIMEDOUT;
    }
}

int
pk_threadpool_stats_get(pk_threadpool *tp, pk_threadpool_stats *o)
{
    int rc = pk__tp_validate(tp);

    if (rc == 0 && !o)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    memset(o, 0, sizeof *o);
    /* A snapshot of moving counters: popped and not yet finished. Finished
     * first: it never overtakes the pushes, which only grow, so pushed -
     * fin cannot wrap; queued, read last, may have taken new pushes. */
    size_t fin = atomic_load(&tp->finished);
    size_t pushed = pk__tp_all_pushed(tp);
    o->queued = pk__tp_queued(tp);
    o->running = pushed - fin > o->queued ? pushed - fin - o->queued : 0;
    o->threads = atomic_load(&tp->alive);
    for (size_t i = 0; i < tp->nlanes; i++)
        o->submitted += pk__tp_lane_submitted(&tp->lanes[i]);
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
