/* poolkit/threadpool.h - a thread pool on the resource-pool core.
 *
 * The workers are pk_pool resources: starting, keep-alive retirement and
 * resizing go through the core (min_threads and max_threads are its
 * min_size and max_size). The bounded task queue is this module's own hot
 * path. A pool is a pk_executor too (pk_threadpool_executor), so map and
 * the other executor algorithms run on it.
 *
 * Threads: every function is safe from any thread unless it says
 * otherwise. Tasks run on worker threads named "pk-worker", never on the
 * submitting thread (but with PK_FULL_CALLER_RUNS and a full queue). A
 * worker is started when a task is queued, none is idle and the pool is
 * below max_threads; the pool's one background thread ("pk-timer") starts
 * it, retires workers idle longer than keep_alive_ms, and watches slow
 * and stuck tasks and run limits. When no worker can be started (the
 * process is at its thread limit, or out of memory), tasks wait in the
 * queue: each failed start reaches the event hook as
 * PK_EVENT_CREATE_FAILED, the core retries with its backoff, and a
 * shutdown whose deadline passes cancels what never ran.
 *
 * Waiting inside a task: a task that waits on a future (pk_future_wait,
 * _wait_all, _wait_any, pk_map) or for room in its own full queue
 * (PK_FULL_BLOCK) runs queued tasks of its pool meanwhile, on its own
 * stack, up to PK_THREADPOOL_NEST_MAX tasks deep; past that bound it
 * parks until the future finishes. So a parent waiting on its children
 * never deadlocks a pool, however small, unless every worker is parked at
 * the bound while work is queued (children of children 16 levels down on
 * every worker at once): keep waits shallow, or the pool larger. A task
 * that waits on its own future, or on the future of a task it is nested
 * in, gets PK_EDEADLK.
 *
 * Events (pk_threadpool_options.event; pk_event_name names them):
 *   PK_EVENT_CREATED        a worker started
 *   PK_EVENT_CREATE_FAILED  a worker could not start (ev.error: why)
 *   PK_EVENT_DESTROYED      a worker retired (keep-alive, resize, close)
 *   PK_EVENT_FUTURE_UNREAD  a fire-and-forget task failed or never ran,
 *                           or a task's failed future was released
 *                           unread (ev.error); without a hook, a line on
 *                           stderr instead (future.h)
 *   PK_EVENT_SLOW_TASK      a task ran longer than slow_task_ms
 *   PK_EVENT_HELD_TOO_LONG  a task ran longer than stuck_after_ms: its
 *                           worker is given up
 *   PK_EVENT_DETACHED       that worker was detached from the pool */
#ifndef POOLKIT_THREADPOOL_H
#define POOLKIT_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/executor.h>
#include <poolkit/future.h>
#include <poolkit/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_threadpool pk_threadpool; /* opaque */

/* What submit does when the queue is full. */
enum pk_full_policy {
    PK_FULL_BLOCK = 0,   /* wait up to submit_timeout_ms, then PK_ETIMEDOUT */
    PK_FULL_TRY = 1,     /* PK_EAGAIN at once */
    PK_FULL_CALLER_RUNS = 2, /* run the task on the submitting thread */
    PK_FULL_REJECT = 3   /* PK_EFULL at once */
};

/* min_threads and max_threads, at most (PK_EINVAL above): far beyond
 * what a process can run, and small enough that the pool's arithmetic on
 * thread counts never wraps. */
#define PK_THREADPOOL_THREADS_MAX ((size_t)1 << 20)

/* Tasks a worker runs nested on its own stack while a task of it waits
 * (see the top of this header). */
#define PK_THREADPOOL_NEST_MAX 16

/* Zero in any field means its default. */
typedef struct pk_threadpool_options {
    size_t min_threads;   /* kept even when idle; default 0 */
    size_t max_threads;   /* default: the CPUs this process may use;
                             at most PK_THREADPOOL_THREADS_MAX */
    size_t queue_size;    /* queued tasks at most, rounded up to a power
                             of two (100 holds 128); default 65536, at
                             most 2^30. Its ring is made and touched at
                             create, 64 bytes a task (4 MiB by default) */
    int full_policy;      /* enum pk_full_policy */
    int submit_timeout_ms; /* PK_FULL_BLOCK's limit; default (0) and
                              PK_WAIT_FOREVER: no limit */
    int keep_alive_ms;    /* an idle worker above min retires; default
                             60000; PK_NEVER = never */
    pk_registry *registry; /* for named tasks; borrowed, may be NULL */
    pk_event_fn event;    /* failures nobody can read, worker events */
    void *event_user;
    int slow_task_ms;     /* PK_EVENT_SLOW_TASK once for a task running
                             longer; 0 or PK_NEVER = off */
    int stuck_after_ms;   /* a worker running one task longer is given
                             up: PK_EVENT_HELD_TOO_LONG, then it is
                             detached from the pool, a replacement keeps
                             the pool at strength, and the thread exits
                             (and is waited for by destroy) once its task
                             returns; 0 or PK_NEVER = off */
    void (*worker_init)(void *user); /* on each new worker, first */
    void (*worker_exit)(void *user); /* on each worker, last */
    void *user;
} pk_threadpool_options;

/* Checks options as pk_threadpool_create does, and says what is wrong:
 * err (may be NULL) names the field and the rule it breaks.
 * Returns: 0, PK_EINVAL. Owner: borrows both. Threads: safe. */
PK_API int pk_threadpool_options_check(const pk_threadpool_options *opts,
                                       pk_error *err);

/* Makes a pool and starts min_threads workers (opts NULL: defaults).
 * pk_threadpool_options_check says why it returns PK_EINVAL.
 * A worker that cannot start is not an error here: the pool retries it
 * (the event hook hears each failure) while tasks wait.
 * Returns: 0, PK_EINVAL (see pk_threadpool_options_check), PK_ENOMEM,
 * PK_ECREATE (the pool's timer thread could not start).
 * Owner: *out returned owned (pk_threadpool_destroy); opts borrowed.
 * Threads: safe. */
PK_API int pk_threadpool_create(pk_threadpool **out,
                                const pk_threadpool_options *opts);

/* Queues fn(arg). fut (optional) gets a future the caller releases;
 * without it a failure (or a task that never ran) reaches the event
 * hook, or with no hook one rate-limited line on stderr (fire and
 * forget; future.h says how to turn the lines off).
 * Returns: 0, PK_EINVAL, PK_EAGAIN / PK_EFULL / PK_ETIMEDOUT (queue full,
 * by policy), PK_ESHUTDOWN, PK_ENOMEM, PK_EFORKED.
 * Owner: arg borrowed until the task ran. Threads: safe. */
PK_API int pk_threadpool_submit(pk_threadpool *tp, pk_task_fn fn, void *arg,
                                pk_future **fut);

/* Queues a task of either kind (function, or registered name + bytes:
 * copied unless PK_TASK_SHARED). Returns and owner as
 * pk_threadpool_submit. Threads: safe. */
PK_API int pk_threadpool_submit_task(pk_threadpool *tp, const pk_task *task,
                                     pk_future **fut);

/* Limits of one task. */
typedef struct pk_task_options {
    int start_within_ms; /* not started within this: dropped, and its
                            future fails with PK_ETIMEDOUT; 0 = no limit */
    int run_limit_ms;    /* running longer: its cancel flag is raised
                            (pk_future_cancel_requested); 0 = no limit.
                            The flag lives in the future: a task
                            submitted without one, or run on a caller
                            that is not a worker (CALLER_RUNS), or
                            nested deeper than PK_THREADPOOL_NEST_MAX,
                            is not watched */
} pk_task_options;

/* Queues a task with limits (opts may be NULL: none). start_within_ms is
 * judged when a worker takes the task; run_limit_ms is watched by the
 * pool's background thread, every 5 ms.
 * Returns and owner as pk_threadpool_submit; PK_EINVAL for a negative
 * limit. Threads: safe. */
PK_API int pk_threadpool_submit_opts(pk_threadpool *tp, const pk_task *task,
                                     const pk_task_options *opts,
                                     pk_future **fut);

/* Queues n tasks in one call; all or nothing. If they do not all fit
 * now: PK_FULL_BLOCK waits for room for all n (up to submit_timeout_ms,
 * then PK_ETIMEDOUT), PK_FULL_TRY returns PK_EAGAIN, and CALLER_RUNS and
 * REJECT return PK_EFULL (none runs on the caller). PK_EFULL at once if
 * n is more than the queue holds. futs (optional) is an array of n, all
 * NULL after a failure. Returns as pk_threadpool_submit. Threads: safe. */
PK_API int pk_threadpool_submit_many(pk_threadpool *tp, const pk_task *tasks,
                                     size_t n, pk_future **futs);

/* Queues n tasks in one call with the same options (opts may be NULL),
 * all or nothing as pk_threadpool_submit_many. Threads: safe. */
PK_API int pk_threadpool_submit_many_opts(pk_threadpool *tp,
                                          const pk_task *tasks, size_t n,
                                          const pk_task_options *opts,
                                          pk_future **futs);

/* Changes the thread counts while the pool runs.
 * Returns: 0, PK_EINVAL (max 0, min above max, or a count above
 * PK_THREADPOOL_THREADS_MAX), PK_ESHUTDOWN (after pk_threadpool_shutdown),
 * PK_EFORKED. Threads: safe. */
PK_API int pk_threadpool_resize(pk_threadpool *tp, size_t min_threads,
                                size_t max_threads);

/* Stops accepting tasks; how is a pk_shutdown_how. DRAIN runs what is
 * queued; CANCEL (and KILL: a thread cannot be killed) cancels what is
 * queued. Waits up to timeout_ms for queued and running tasks. If the
 * deadline passes while no worker is alive (none could be started),
 * what is still queued is cancelled, since nothing would run it.
 * Called from a task of the pool, it closes the pool (and cancels what
 * is queued, as asked) but does not wait: the task would wait for itself.
 * Returns: 0, PK_ETIMEDOUT (the deadline passed first: tasks may still
 * run; the pool stays valid and the call may be repeated), PK_EDEADLK
 * (called from a task of the pool), PK_EINVAL, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_threadpool_shutdown(pk_threadpool *tp, int how,
                                  int timeout_ms);

/* Cancels what is queued, waits for running tasks, stops the workers and
 * frees the pool. NULL is a no-op. In a child after fork() it only frees
 * memory. Called from a task of the pool it would wait for itself: it
 * only shuts the pool down (CANCEL) and frees nothing; destroy it from
 * outside. Owner: takes tp. Threads: exclusive. */
PK_API void pk_threadpool_destroy(pk_threadpool *tp);

/* An executor view of the pool, valid until pk_threadpool_destroy; its
 * pk_executor_destroy frees only the view.
 * Returns: 0, PK_EINVAL, PK_ENOMEM. Owner: *out returned owned.
 * Threads: safe. */
PK_API int pk_threadpool_executor(pk_threadpool *tp, pk_executor **out);

/* Counts of finished tasks are published by each worker when it finds
 * the queue empty, and at least every 64 tasks: exact once
 * pk_threadpool_shutdown returned 0, a little behind while tasks run. */
typedef struct pk_threadpool_stats {
    size_t threads;       /* alive workers */
    size_t queued;        /* tasks waiting */
    size_t running;       /* tasks running now */
    uint64_t submitted, completed, failed, cancelled, rejected;
    uint64_t expired;     /* dropped: not started within start_within_ms */
    uint64_t detached;    /* stuck workers given up */
    /* Queue wait and run time, from a sample (one task in eight of each
     * submitting thread's first 4096, then one in 64, and every task
     * with limits): the clock is not read for the others. */
    uint64_t queue_wait_p50_ns, queue_wait_p99_ns;
    uint64_t run_p50_ns, run_p99_ns;
} pk_threadpool_stats;

/* Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_threadpool_stats_get(pk_threadpool *tp,
                                   pk_threadpool_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_THREADPOOL_H */
