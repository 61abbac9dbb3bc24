/* pools/thread/threadpool.c - the thread pool's public calls: create,
 * submit, resize, shutdown, stats and the executor view.
 *
 * The queue is a lock-free bounded ring (ring.h). A push claims all its
 * cells at once or none, so submit_many is all or nothing, and then makes
 * sure a worker will look (tp_after_push; worker.c states the protocol).
 * Workers count what they settle in `finished`, in batches; everything
 * pushed has run when `finished` equals the ring's tail plus the tasks
 * run on their callers. Shutdown closes the ring (a bit in its tail: a
 * push either came before and is counted, or is refused) and waits for
 * that on tp->done, woken by the worker whose count catches up. */
#include <string.h>

#include "tp_int.h"

/* ---- create / destroy ------------------------------------------------- */

/* min_threads and max_threads go to the core's pk_pool_create and
 * pk_pool_resize as sizes. */
_Static_assert(PK_THREADPOOL_THREADS_MAX <= PK_POOL_SIZE_MAX,
               "thread counts fit the core's bound");

static bool
bad_ms(int ms)
{
    return ms < 0 && ms != PK_NEVER;
}

static int
bad(pk_error *err, const char *why)
{
    return pk_error_set(err, PK_EINVAL, 0, "pk_threadpool_options: %s", why);
}

int
pk_threadpool_options_check(const pk_threadpool_options *o, pk_error *err)
{
    if (!o)
        return bad(err, "NULL options");
    if (o->full_policy < PK_FULL_BLOCK || o->full_policy > PK_FULL_REJECT)
        return bad(err, "full_policy is not an enum pk_full_policy value");
    if (o->submit_timeout_ms < 0 && o->submit_timeout_ms != PK_WAIT_FOREVER)
        return bad(err, "submit_timeout_ms is negative but not "
                        "PK_WAIT_FOREVER");
    if (bad_ms(o->keep_alive_ms))
        return bad(err, "keep_alive_ms is negative but not PK_NEVER");
    if (bad_ms(o->slow_task_ms))
        return bad(err, "slow_task_ms is negative but not PK_NEVER");
    if (bad_ms(o->stuck_after_ms))
        return bad(err, "stuck_after_ms is negative but not PK_NEVER");
    if (o->min_threads > PK_THREADPOOL_THREADS_MAX ||
        o->max_threads > PK_THREADPOOL_THREADS_MAX)
        return bad(err, "min_threads or max_threads is above "
                        "PK_THREADPOOL_THREADS_MAX");
    if (o->min_threads > (o->max_threads ? o->max_threads : pk__cpu_count()))
        return bad(err, o->max_threads ? "min_threads is above max_threads"
                                       : "min_threads is above max_threads' "
                                         "default (the CPUs this process "
                                         "may use)");
    if (o->queue_size > PK__TP_QUEUE_MAX)
        return bad(err, "queue_size is above 2^30");
    pk_error_clear(err);
    return 0;
}

static uint64_t
limit_ns(int ms)
{
    return ms > 0 ? (uint64_t)ms * 1000000u : UINT64_MAX;
}

/* How often the timer runs the core's maintenance: often enough that an
 * idle worker retires within a quarter of keep_alive past it, at most
 * once a second, at least once every 10 ms. */
static uint64_t
maint_period(int keep_alive_ms)
{
    uint64_t ns = keep_alive_ms > 0 ? (uint64_t)keep_alive_ms * 250000u
                                    : 1000000000u;

    if (ns > 1000000000u)
        ns = 1000000000u;
    return ns < 10000000u ? 10000000u : ns;
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
    po.max_size = atomic_load(&tp->max_threads);
    po.max_creating = 1;
    po.idle_timeout_ms = o->keep_alive_ms ? o->keep_alive_ms : 60000;
    /* A thread that cannot start (EAGAIN at the process's limit) is soon
     * retried: a try is cheap. */
    po.backoff_initial_ms = 1;
    po.max_backoff_ms = 100;
    po.flags = PK_POOL_NO_GENERATION_BUMP | PK_POOL_MANUAL_MAINTENANCE;
    po.event = o->event;
    po.event_user = o->event_user;
    return pk_pool_create(&tp->workers, &po);
}

static void
configure(struct pk_threadpool *tp, const pk_threadpool_options *o)
{
    tp->fork_epoch = pk__fork_epoch();
    tp->registry = o->registry;
    tp->event = o->event;
    tp->event_user = o->event_user;
    tp->worker_init = o->worker_init;
    tp->worker_exit = o->worker_exit;
    tp->user = o->user;
    tp->full_policy = o->full_policy;
    tp->submit_timeout_ms = o->submit_timeout_ms ? o->submit_timeout_ms
                                                 : PK_WAIT_FOREVER;
    tp->slow_ns = limit_ns(o->slow_task_ms);
    tp->stuck_ns = limit_ns(o->stuck_after_ms);
    tp->maint_ns = maint_period(o->keep_alive_ms);
    atomic_init(&tp->room_at, SIZE_MAX);
    atomic_init(&tp->max_threads,
                o->max_threads ? o->max_threads : pk__cpu_count());
    atomic_init(&tp->watching, tp->slow_ns != UINT64_MAX ||
                                   tp->stuck_ns != UINT64_MAX);
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
    rc = pk_threadpool_options_check(opts, NULL);
    if (rc)
        return rc;
    tp = pk__calloc(1, sizeof *tp);
    if (!tp)
        return PK_ENOMEM;
    pk__lock_init(&tp->lock, PK__RANK_THREADPOOL);
    configure(tp, opts);
    rc = tp_ring_init(&tp->q, opts->queue_size ? opts->queue_size : 65536);
    if (rc) {
        pk__free(tp);
        return rc;
    }
    tp->magic = PK__TP_MAGIC;
    rc = start_workers(tp, opts);
    if (rc == 0) {
        rc = pk__tp_timer_start(tp);
        if (rc)
            pk_pool_destroy(tp->workers); /* joins the min_threads */
    }
    if (rc) {
        tp_ring_fini(&tp->q);
        pk__free(tp);
        return rc;
    }
    *out = tp;
    return 0;
}

static void
wait_threads_exited(struct pk_threadpool *tp)
{
    pk__lock_acquire(&tp->lock);
    while (atomic_load(&tp->threads) > 0 ||
           atomic_load(&tp->detached_alive) > 0)
        pk__cv_wait_until(&tp->exited, &tp->lock, UINT64_MAX);
    pk__lock_release(&tp->lock);
}

void
pk_threadpool_destroy(pk_threadpool *tp)
{
    if (!tp || tp->magic != PK__TP_MAGIC)
        return;
    if (tp_self_in(tp)) {
        /* From a task of the pool: it would wait for itself. */
        pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, 0);
        return;
    }
    if (tp->fork_epoch != pk__fork_epoch()) {
        /* In a child: the threads do not exist here; free memory only. */
        pk_pool_destroy(tp->workers);
    } else {
        pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, PK_WAIT_FOREVER);
        atomic_store(&tp->timer_quit, true);
        /* Stops idle workers, wakes the timer if it waits for one, and
         * waits for the others to give their leases back: after the
         * shutdown above they only finish their last look at the queue
         * (a stuck worker given up was released DETACH: not waited for).
         * So a lease still out here would be a real leak, reported. */
        pk_pool_close(tp->workers, PK_WAIT_FOREVER);
        pk__tp_timer_stop(tp);
        pk_pool_destroy(tp->workers);
        wait_threads_exited(tp);
    }
    tp->magic = 0;
    tp_ring_fini(&tp->q);
    pk__free(tp);
}

/* ---- submit ----------------------------------------------------------- */

static int
check_task(const pk_task *t)
{
    if (!t || (t->fn == NULL) == (t->name == NULL))
        return PK_EINVAL;
    if (t->name && t->len && !t->data)
        return PK_EINVAL;
    return 0;
}

static int
check_task_options(const pk_task_options *o)
{
    if (o && (o->start_within_ms < 0 || o->run_limit_ms < 0))
        return PK_EINVAL;
    return 0;
}

/* Waits for room, then pushes (PK_FULL_BLOCK). The pop that brings the
 * queue down to half full, or to room for n, wakes us (tp_after_pop). A
 * task of this pool waiting here runs queued tasks meanwhile, each pop
 * making room: if every worker only waited, none would. */
static int
wait_for_room(struct pk_threadpool *tp, const struct tp_task *t, size_t n)
{
    struct tp_worker *w = tp_self_in(tp);
    size_t cap = tp_ring_capacity(&tp->q);
    size_t at = cap - n < cap / 2 ? cap - n : cap / 2;
    uint64_t deadline;
    int rc;

    if (pk__deadline(tp->submit_timeout_ms, &deadline))
        return PK_EINVAL;
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->room);
        atomic_store(&tp->room_at, at);
        rc = tp_ring_push(&tp->q, t, n);
        if (rc != PK_EAGAIN || (w && pk__tp_help_once(tp, w)) ||
            pk__now_ns() >= deadline) {
            pk__cv_cancel(&tp->room);
            if (rc == PK_EAGAIN && pk__now_ns() >= deadline)
                return PK_ETIMEDOUT;
            if (rc != PK_EAGAIN)
                return rc;
            continue;
        }
        pk__cv_wait_prepared(&tp->room, seq, deadline);
    }
}

/* Runs t on its caller (CALLER_RUNS with the queue full), counted as
 * pushed before it runs and finished after, so a shutdown waits for it
 * as for any running task: `ran_here` and `closed` pair as a push and
 * the ring's closed bit do. */
static int
run_here(struct pk_threadpool *tp, struct tp_task *t)
{
    struct tp_tally n;

    atomic_fetch_add(&tp->ran_here, 1);
    if (atomic_load(&tp->closed)) {
        atomic_fetch_sub(&tp->ran_here, 1);
        pk__cv_broadcast(&tp->done);
        return PK_ESHUTDOWN;
    }
    memset(&n, 0, sizeof n);
    pk__tp_task_run(tp, tp_self_in(tp), t, &n);
    pk__tp_tally_publish(tp, &n);
    return 0;
}

/* Pushes n prepared tasks, all or none, or applies the full policy.
 * Returns 0 (queued or run here) or an error (nothing queued; a task
 * that ran here owns nothing any more). */
static int
enqueue(struct pk_threadpool *tp, struct tp_task *t, size_t n, int policy)
{
    bool ran = false;
    int rc = tp_ring_push(&tp->q, t, n);

    if (rc == PK_EAGAIN) {
        switch (policy) {
        case PK_FULL_BLOCK:
            rc = wait_for_room(tp, t, n);
            break;
        case PK_FULL_TRY:
            break;
        case PK_FULL_CALLER_RUNS:
            rc = run_here(tp, t); /* n is 1: submit_many never is */
            ran = rc == 0;
            break;
        default:
            rc = PK_EFULL;
        }
    }
    if (rc) {
        atomic_fetch_add_explicit(&tp->st_rejected, n, memory_order_relaxed);
        return rc;
    }
    if (!ran)
        tp_after_push(tp);
    return 0;
}

static int
submit(pk_threadpool *tp, const pk_task *task, const pk_task_options *o,
       pk_future **fut)
{
    struct tp_task t;
    int rc = pk__tp_validate(tp);

    if (rc == 0)
        rc = check_task(task);
    if (rc == 0)
        rc = check_task_options(o);
    if (rc)
        return rc;
    if (fut)
        *fut = NULL;
    rc = pk__tp_task_make(tp, task, o, &t, fut);
    if (rc)
        return rc;
    if (t.run_limit_ms)
        pk__tp_timer_watch(tp);
    rc = enqueue(tp, &t, 1, tp->full_policy);
    if (rc)
        pk__tp_task_unmake(&t, fut);
    return rc;
}

int
pk_threadpool_submit(pk_threadpool *tp, pk_task_fn fn, void *arg,
                     pk_future **fut)
{
    pk_task t = { .fn = fn, .arg = arg };

    return submit(tp, &t, NULL, fut);
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
pk_threadpool_submit_many(pk_threadpool *tp, const pk_task *tasks, size_t n,
                          pk_future **futs)
{
    return pk_threadpool_submit_many_opts(tp, tasks, n, NULL, futs);
}

static int
check_many(struct pk_threadpool *tp, const pk_task *tasks, size_t n,
           const pk_task_options *opts)
{
    int rc = pk__tp_validate(tp);

    if (rc == 0 && (!tasks || n == 0 || n > SIZE_MAX / sizeof(struct tp_task)))
        rc = PK_EINVAL;
    if (rc == 0)
        rc = check_task_options(opts);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = check_task(&tasks[i]);
    if (rc == 0 && n > tp_ring_capacity(&tp->q)) {
        rc = PK_EFULL; /* can never fit: do not wait for room */
        atomic_fetch_add_explicit(&tp->st_rejected, n, memory_order_relaxed);
    }
    return rc;
}

int
pk_threadpool_submit_many_opts(pk_threadpool *tp, const pk_task *tasks,
                               size_t n, const pk_task_options *opts,
                               pk_future **futs)
{
    struct tp_task *recs;
    size_t made = 0;
    int rc = check_many(tp, tasks, n, opts);

    for (size_t i = 0; futs && rc != PK_EINVAL && i < n; i++)
        futs[i] = NULL;
    if (rc)
        return rc;
    recs = pk__alloc(n * sizeof *recs);
    if (!recs)
        return PK_ENOMEM;
    for (; made < n && rc == 0; made++)
        rc = pk__tp_task_make(tp, &tasks[made], opts, &recs[made],
                              futs ? &futs[made] : NULL);
    if (rc) {
        made--; /* the failed one undid itself */
    } else {
        if (opts && opts->run_limit_ms)
            pk__tp_timer_watch(tp);
        /* All or nothing: never run on the caller, never half queued. */
        int policy = tp->full_policy;
        if (policy == PK_FULL_CALLER_RUNS)
            policy = PK_FULL_REJECT;
        rc = enqueue(tp, recs, n, policy);
    }
    for (size_t k = 0; rc && k < made; k++)
        pk__tp_task_unmake(&recs[k], futs ? &futs[k] : NULL);
    pk__free(recs);
    return rc;
}

/* ---- sizing, shutdown, stats ------------------------------------------ */

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
    atomic_store(&tp->max_threads, max_threads);
    rc = pk_pool_resize(tp->workers, min_threads, 0, max_threads);
    /* The resize may have made workers idle in the core, or allowed more:
     * worker.c's protocol asks for a look at the queue. */
    if (rc == 0 && tp_ring_count(&tp->q) > 0)
        tp_wake_worker(tp);
    return rc;
}

static uint64_t
pushed(struct pk_threadpool *tp)
{
    return tp_ring_pushed(&tp->q) + atomic_load(&tp->ran_here);
}

static bool
all_finished(struct pk_threadpool *tp)
{
    return atomic_load(&tp->finished) >= pushed(tp);
}

/* Cancels what is queued (CANCEL, or a DRAIN nobody can run). */
static void
cancel_queued(struct pk_threadpool *tp)
{
    struct tp_tally n;
    struct tp_task t;

    memset(&n, 0, sizeof n);
    while (tp_ring_pop(&tp->q, &t))
        pk__tp_task_cancel(tp, &t, &n);
    pk__tp_tally_publish(tp, &n);
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
    atomic_store(&tp->closed, true);
    tp_ring_close(&tp->q);
    pk__cv_broadcast(&tp->room); /* blocked submitters see it closed */
    if (how != PK_SHUTDOWN_DRAIN) {
        atomic_store(&tp->cancelling, true); /* workers cancel what they pop */
        cancel_queued(tp);
    } else if (tp_ring_count(&tp->q) > 0) {
        tp_wake_worker(tp);
    }
    if (tp_self_in(tp))
        return PK_EDEADLK; /* a task of the pool would wait for itself */
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->done);
        if (all_finished(tp)) {
            pk__cv_cancel(&tp->done);
            return 0;
        }
        if (pk__now_ns() >= deadline) {
            pk__cv_cancel(&tp->done);
            if (atomic_load(&tp->threads) == 0)
                cancel_queued(tp); /* nobody could run them */
            return PK_ETIMEDOUT;
        }
        pk__cv_wait_prepared(&tp->done, seq, deadline);
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
    /* Finished first: it never overtakes the pushes, which only grow, so
     * in_flight cannot wrap; queued, read last, may include new pushes. */
    uint64_t fin = atomic_load(&tp->finished);
    uint64_t in = pushed(tp);
    uint64_t in_flight = in - fin;
    o->queued = tp_ring_count(&tp->q);
    o->running = in_flight > o->queued ? (size_t)(in_flight - o->queued) : 0;
    o->threads = atomic_load(&tp->threads);
    o->submitted = in;
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
    int rc = pk__tp_validate(tp);
    size_t used;

    if (rc)
        return rc;
    if (atomic_load(&tp->closed))
        return PK_ESHUTDOWN;
    used = tp_ring_count(&tp->q);
    *out = tp_ring_capacity(&tp->q) > used ? tp_ring_capacity(&tp->q) - used
                                           : 0;
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
    int rc = pk__tp_validate(tp);

    if (rc == 0 && !out)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    return pk_executor_create(out, &ops, tp);
}
