/* poolkit/threadpool.h - a thread pool on the resource-pool core.
 *
 * The workers are pk_pool resources: spawning, keep-alive retirement and
 * resizing go through the core (min_threads and max_threads are its
 * min_size and max_size). The bounded task queue is this module's own hot
 * path. A pool is a pk_executor too (pk_threadpool_executor), so map and
 * the other executor algorithms run on it.
 *
 * Threads: every function is safe from any thread unless it says
 * otherwise. Tasks run on worker threads named "pk-worker". When no
 * worker exists and none can be started (the process is at its thread
 * limit, or out of memory), a task is not stranded: a submit that finds
 * no worker alive runs the queue on the submitting thread before it
 * returns (after waiting briefly for the worker being started), and so
 * does pk_threadpool_shutdown with DRAIN; a task of the pool that waits
 * on another helps run it. Starting a worker is retried after 1 ms,
 * backing off to 100 ms, while tasks are queued (on the pool's watchdog
 * thread, started for that). Tasks never run on the core pool's helper
 * thread. So a submit to a pool with no worker alive (min_threads 0 and
 * every worker retired after idle_timeout, or a pool just made) waits
 * for one thread start, tens of microseconds, as Java's execute() does;
 * keep min_threads above 0 where a submit must never wait for that. */
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
    PK_FULL_CALLER_RUNS = 2, /* run the task on the submitting thread;
                                in a capped lane it takes one of the
                                lane's places as a worker would (none
                                if the caller is a task of that lane
                                already), and while the lane is at its
                                cap it waits, up to submit_timeout_ms
                                (then PK_ETIMEDOUT), for a place (then
                                runs it) or room in the queue (then
                                queues it): the cap holds for tasks run
                                on callers too */
    PK_FULL_REJECT = 3   /* PK_EFULL at once */
};

/* Lanes: named sub-queues, each with its own cap on the workers running
 * its tasks at once and a priority, so that slow work in one lane (DNS
 * lookups, disk IO) cannot occupy every worker and starve quick work in
 * another. Lane 0 is the default lane: no cap, priority 0, the pool's
 * queue_size. A free worker takes the next task from the lane of highest
 * priority that has tasks queued and room under its cap (ties: the lane
 * listed first); within a lane, tasks start in submission order. When a
 * lane's queue is long (at least 4 tasks per thread for each one taken),
 * a worker takes up to 16 of its tasks at once and starts them in turn:
 * those go ahead of a task that comes meanwhile to a lane of higher
 * priority, and start even if the lane's cap was lowered meanwhile. */
#define PK_LANES_MAX 16
#define PK_LANE_NAME_MAX 32 /* with the terminating NUL */

typedef struct pk_lane_options {
    const char *name;     /* required, unique, shorter than
                             PK_LANE_NAME_MAX; copied */
    size_t max_threads;   /* workers running its tasks at once, at most;
                             0 = no cap but the pool's */
    int priority;         /* higher is taken first; the default lane's is 0 */
    size_t queue_size;    /* its queued tasks, at most (rounded up to a
                             power of two); 0 = the pool's */
} pk_lane_options;

/* min_threads and max_threads, at most (PK_EINVAL above): far beyond
 * what a process can run, and small enough that the pool's arithmetic on
 * thread counts never wraps. */
#define PK_THREADPOOL_THREADS_MAX ((size_t)1 << 20)

/* Zero in any field means its default. */
typedef struct pk_threadpool_options {
    size_t min_threads;   /* kept even when idle; default 0 */
    size_t max_threads;   /* default: the CPUs this process may use;
                             at most PK_THREADPOOL_THREADS_MAX */
    size_t queue_size;    /* queued tasks at most, rounded up to a power
                             of two (100 holds 128); default 65536, at
                             most 2^30. Its ring is made and touched at
                             create, 64 bytes a task (4 MiB by default),
                             and each lane without its own size has one
                             as large */
    int full_policy;      /* enum pk_full_policy */
    int submit_timeout_ms; /* PK_FULL_BLOCK's limit, and CALLER_RUNS's in
                              a capped lane; default PK_WAIT_FOREVER
                              (0 = default; PK_NEVER is not allowed) */
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
    const pk_lane_options *lanes; /* lanes 1..n_lanes, in this order;
                                     borrowed for the call */
    size_t n_lanes;               /* at most PK_LANES_MAX - 1 */
} pk_threadpool_options;

/* Makes a pool and starts min_threads workers.
 * Returns: 0, PK_EINVAL (min above max, a thread count above
 * PK_THREADPOOL_THREADS_MAX, a bad policy or time), PK_ENOMEM,
 * or the error of starting a thread.
 * Owner: *out returned owned (pk_threadpool_destroy); opts borrowed.
 * Threads: safe. */
PK_API int pk_threadpool_create(pk_threadpool **out,
                                const pk_threadpool_options *opts);

/* Queues fn(arg). fut (optional) gets a future the caller releases;
 * without it a failure reaches the event hook (fire and forget).
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
                            (pk_future_cancel_requested); 0 = no limit */
    int lane;            /* the lane it queues in; 0 = the default lane */
} pk_task_options;

/* Queues a task with limits or in a lane (opts may be NULL: none).
 * Returns and owner as pk_threadpool_submit; PK_EINVAL for a negative
 * limit or a lane that does not exist. Threads: safe. */
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

/* Finds a lane by name (the default lane has none: it is 0).
 * Returns: 0 (*lane set), PK_ENOENT, PK_EINVAL, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_threadpool_lane(pk_threadpool *tp, const char *name,
                              int *lane);

/* Changes a lane's cap while the pool runs (0 = no cap but the pool's).
 * Tasks already running are not stopped: a lower cap takes effect as they
 * finish. Returns: 0, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_threadpool_lane_set_cap(pk_threadpool *tp, int lane,
                                      size_t max_threads);

typedef struct pk_lane_stats {
    size_t queued;        /* its tasks waiting */
    size_t running;       /* its tasks' workers now (lanes with a cap) */
    size_t max_threads;   /* its cap; 0 = none */
    uint64_t submitted;   /* tasks accepted into it */
} pk_lane_stats;

/* Returns: 0, PK_EINVAL (no such lane), PK_EFORKED. Threads: safe. */
PK_API int pk_threadpool_lane_stats_get(pk_threadpool *tp, int lane,
                                        pk_lane_stats *out);

/* An executor view whose tasks queue in one lane (as
 * pk_threadpool_executor otherwise), e.g. to map IO-bound work on a lane.
 * Returns: 0, PK_EINVAL, PK_ENOMEM. Owner: *out returned owned.
 * Threads: safe. */
PK_API int pk_threadpool_lane_executor(pk_threadpool *tp, int lane,
                                       pk_executor **out);

/* Changes the thread counts while the pool runs.
 * Returns: 0, PK_EINVAL (max 0, min above max, or a count above
 * PK_THREADPOOL_THREADS_MAX), PK_ESHUTDOWN (after pk_threadpool_shutdown),
 * PK_EFORKED. Threads: safe. */
PK_API int pk_threadpool_resize(pk_threadpool *tp, size_t min_threads,
                                size_t max_threads);

/* Stops accepting tasks; how is a pk_shutdown_how. DRAIN runs what is
 * queued; CANCEL (and KILL: a thread cannot be killed) cancels what is
 * queued. Waits up to timeout_ms for running tasks.
 * Returns: 0, PK_ETIMEDOUT (tasks still running; the pool stays valid and
 * the call may be repeated), PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_threadpool_shutdown(pk_threadpool *tp, int how,
                                  int timeout_ms);

/* Cancels what is queued, waits for running tasks, stops the workers and
 * frees the pool. NULL is a no-op. In a child after fork() it only frees
 * memory. Owner: takes tp. Threads: exclusive. */
PK_API void pk_threadpool_destroy(pk_threadpool *tp);

/* An executor view of the pool, valid until pk_threadpool_destroy; its
 * pk_executor_destroy frees only the view.
 * Returns: 0, PK_EINVAL, PK_ENOMEM. Owner: *out returned owned.
 * Threads: safe. */
PK_API int pk_threadpool_executor(pk_threadpool *tp, pk_executor **out);

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
