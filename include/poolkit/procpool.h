/* poolkit/procpool.h - a process pool on the resource-pool core: worker
 * processes that run named tasks, for CPU-bound work that threads of one
 * process cannot spread (or that must not take the process down when it
 * crashes).
 *
 * The workers are pk_pool resources: forking, idle retirement above
 * min_workers, replacement after max_tasks_per_worker, a liveness check
 * before each task, all go through the core (min_workers and max_workers
 * are its min_size and max_size). The queue of tasks and the path to the
 * workers are this module's own: a task is a name registered in the
 * pool's pk_registry and argument bytes, sent to an idle worker over a
 * socket; the worker runs the task and sends its result bytes back. A
 * pool is a pk_executor too (pk_procpool_executor), so pk_map and the
 * other executor algorithms run on it.
 *
 * How a worker is made: fork(), from the thread that needs one (the
 * pool's supervisor thread, or the creating thread for min_workers), with
 * no exec: a worker is a copy of this process at that moment and runs
 * the registry's functions from this program. The task's function is
 * looked up in the parent at submit (an unknown name fails the submit,
 * not the task), so a worker takes no lock of this library. The worker
 * starts with no signal blocked, discards the parent's unwritten stdout
 * and stderr buffers (so nothing is printed twice), runs worker_init, and
 * flushes stdout and stderr after each task. As with any fork of a
 * process that has threads, a lock another thread held at the fork stays
 * held in the worker: a task must not need one. Only min_workers are
 * forked at create: every later worker (more load, a replacement after a
 * death, max_tasks_per_worker) is forked from the pool's own thread,
 * with whatever threads the process has by then. A program with threads
 * that hold locks tasks need wants PK_PROCPOOL_SPAWN. A worker exits
 * when its socket closes or its parent is gone (it looks every second).
 * Tasks must not call exit() (the parent's atexit handlers would run in
 * the worker): return an error code instead.
 *
 * Or spawned (PK_PROCPOOL_SPAWN), for a program whose threads may hold
 * locks a task needs: a worker is then a fresh copy of this program
 * (posix_spawn of /proc/self/exe, with this process's arguments and
 * environment), whose main() must call pk_procpool_worker_main with a
 * registry of the same tasks, early: in a worker that call serves tasks
 * (looked up by name) and never returns; in the program it returns at
 * once. What main() does before the call runs again in every worker
 * (Python's "spawn" start method re-runs the main module the same way).
 * Costs a process start per worker (about a millisecond here, plus what
 * main() does first), nothing per task.
 *
 * Either way a worker is lent only once it says it is ready (after
 * worker_init, or from pk_procpool_worker_main): one not ready within
 * 30 s is killed and its start counts as failed. Workers are started on
 * the core pool's own helper thread (min_workers on the creating thread,
 * at create), never on the supervisor, so a slow start holds up no
 * other worker's replies.
 *
 * What a task sees: pk_named_fn(data, len, self, out, err) with self NULL
 * (a worker has no future). A running task cannot look at a cancel
 * flag, so pk_future_cancel on its future kills its worker (within
 * about 50 ms; the future ends cancelled, the worker is replaced), as do
 * its time limit and a shutdown that kills. Its code, err's sys and message and
 * out's bytes travel back: a failure fails the future with them, a
 * success completes it with a copy of the bytes (pk_result.value, freed
 * by the future). A worker that dies running a task (a crash, a signal, an
 * exit) fails the task's future with PK_EWORKER (sys: the signal number,
 * or the exit status; the message says which and names the task) and is
 * replaced; the pool goes on. When no worker can be started at all
 * (three starts in a row fail with none alive: fork refused, a spawned
 * copy that exits first), the queued tasks fail with the start's error
 * (PK_ECREATE and why) instead of waiting for ever.
 *
 * Threads: every function is safe from any thread unless it says
 * otherwise. Each pool has one background thread, "pk-procpool": it
 * sends queued tasks to idle workers, reads results, completes futures
 * (their callbacks run there), enforces task_timeout_ms and runs the
 * core's maintenance.
 *
 * Data: a task's bytes are copied at submit and written to the worker's
 * socket; its result comes back the same way (two copies each way, and a
 * socket's bandwidth: a few GB/s here). Large inputs need not be copied
 * at all: a pool made with shared_size has a shared region
 * (pk_procpool_shared) that every worker maps (a forked one at the same
 * address, a spawned one where it can: store offsets in it, not
 * pointers); a task submitted with PK_TASK_SHARED and data inside the
 * region sends only the offset and the length, and the task reads the
 * caller's bytes in place (and may write its output there too).
 *
 * Known limits of this increment. The supervisor writes a task's bytes
 * to its (ready, reading) worker itself: a task of many megabytes holds
 * the other workers' replies for the time it takes (milliseconds). A
 * worker whose parent died goes on with the task it runs, and exits once
 * idle.
 *
 * Signals: the pool installs no handler, writes with MSG_NOSIGNAL, and
 * reaps only its own workers, by pidfd (by pid where the kernel has
 * none; a SIGCHLD handler that calls waitpid(-1) steals their status:
 * the message then says "unknown").
 *
 * After fork(): every call on a pool inherited from the parent returns
 * PK_EFORKED, in a worker too; pk_procpool_destroy in the child closes
 * the child's copies of the workers' sockets and frees memory, without
 * touching the parent's workers.
 *
 * Events (pk_procpool_options.event):
 *   PK_EVENT_CREATED        a worker was forked or spawned
 *   PK_EVENT_CREATE_FAILED  fork() or the spawn failed (ev.error: why)
 *   PK_EVENT_CHECK_FAILED   an idle worker was found dead (it is replaced)
 *   PK_EVENT_DESTROYED      a worker was retired
 *   PK_EVENT_WORKER_DIED    a worker died running a task (ev.error: how)
 *   PK_EVENT_FUTURE_UNREAD  a fire-and-forget task failed, or a failed
 *                           future was released unread (future.h) */
#ifndef POOLKIT_PROCPOOL_H
#define POOLKIT_PROCPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h>
#include <poolkit/executor.h>
#include <poolkit/future.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_procpool pk_procpool; /* opaque */

/* Bounds, checked at create (PK_EINVAL beyond them). */
#define PK_PROCPOOL_WORKERS_MAX ((size_t)4096)  /* max_workers */
#define PK_PROCPOOL_QUEUE_MAX ((size_t)1 << 20) /* queue_size */
#define PK_PROCPOOL_DATA_MAX ((size_t)1 << 30)  /* a task's bytes, and
                                                   max_result */

/* Zero in any field means its documented default. Read by
 * pk_procpool_create only. */
typedef struct pk_procpool_options {
    /* Required: the named tasks the workers may run. Borrowed: it must
     * outlive the pool, and what is registered when a worker is forked is
     * what that worker has (register everything before create). */
    pk_registry *registry;
    size_t min_workers;   /* forked at create and kept; default 0 */
    size_t max_workers;   /* default: the CPUs this process may use */
    size_t queue_size;    /* tasks queued before they reach a worker;
                             default 1024 */
    /* A submit to a full queue waits this long for room, then
     * PK_ETIMEDOUT. Default (0) and PK_NEVER: no limit; PK_ALWAYS: no
     * wait (PK_EAGAIN). */
    int submit_timeout_ms;
    /* A task running longer is stopped: its worker is killed (SIGKILL)
     * and replaced, its future fails with PK_ETIMEDOUT. Default (0) and
     * PK_NEVER: no limit. */
    int task_timeout_ms;
    /* A worker idle this long above min_workers exits. Default 60000;
     * PK_NEVER: never. */
    int idle_timeout_ms;
    /* A worker is replaced after this many tasks (a bound on what a leak
     * in a task costs); 0: never. */
    unsigned long max_tasks_per_worker;
    /* A worker whose resident size (read after each task) has grown by
     * more than this many bytes since it started is replaced after the
     * task (its result is delivered): a bound on a leak. A fork starts
     * as big as this process; memory a task used and gave back is no
     * growth. 0: no limit. */
    size_t max_rss_growth;
    /* Result bytes a task may send back; a larger result fails its future
     * with PK_ETOOBIG. Default 64 MiB, at most PK_PROCPOOL_DATA_MAX. */
    size_t max_result;
    /* Bytes of the shared region (pk_procpool_shared), rounded up to
     * pages, zeroed; 0 (default): none. At most PK_PROCPOOL_DATA_MAX. */
    size_t shared_size;
    /* Runs in each new worker process, before its first task. Optional;
     * not with PK_PROCPOOL_SPAWN (do that work in main() before
     * pk_procpool_worker_main). */
    void (*worker_init)(void *user);
    void *user;           /* passed to worker_init; borrowed */
    pk_event_fn event;    /* optional: see the top of this header */
    void *event_user;
    unsigned flags;       /* enum pk_procpool_flags */
} pk_procpool_options;

enum pk_procpool_flags {
    /* Workers are spawned copies of this program, not forks of this
     * process (see the top of this header). */
    PK_PROCPOOL_SPAWN = 1u << 0
};

/* Checks options as pk_procpool_create does; err (may be NULL) names the
 * field and the rule it breaks.
 * Returns: 0, PK_EINVAL. Owner: borrows both. Threads: safe. */
PK_API int pk_procpool_options_check(const pk_procpool_options *opts,
                                     pk_error *err);

/* Makes a pool and starts min_workers workers (a failed start is retried
 * by the core, not returned). In a spawned worker whose main() did not
 * call pk_procpool_worker_main first, it writes why to stderr and exits
 * with status 2 (else each worker would spawn the next).
 * Returns: 0, PK_EINVAL (see pk_procpool_options_check), PK_ENOMEM
 * (also: the shared region could not be made), PK_ECREATE (the
 * supervisor thread or its wake-up channel could not be made).
 * Owner: *out returned owned (pk_procpool_destroy); opts borrowed.
 * Threads: safe. */
PK_API int pk_procpool_create(pk_procpool **out,
                              const pk_procpool_options *opts);

/* Queues the task registered as name, with a copy of len bytes at data
 * (data may be NULL when len is 0). fut (optional) gets the task's
 * future: one reference the caller releases. Without it, a failure
 * reaches the event hook (or a stderr line, future.h).
 * Returns: 0; PK_EINVAL (NULL pool or name, an unknown name, len over
 * PK_PROCPOOL_DATA_MAX); PK_EAGAIN (queue full, submit_timeout_ms
 * PK_ALWAYS); PK_ETIMEDOUT (full until submit_timeout_ms); PK_ESHUTDOWN;
 * PK_ENOMEM; PK_EFORKED. On failure *fut is NULL and nothing was queued.
 * Owner: borrows name and data. Threads: safe. */
PK_API int pk_procpool_submit(pk_procpool *pp, const char *name,
                              const void *data, size_t len,
                              pk_future **fut);

/* pk_procpool_submit for a pk_task: a named task (name, data, len). A
 * function task (fn) is PK_EINVAL: a pointer into this process means
 * nothing to a worker forked before it was made. With PK_TASK_SHARED,
 * [data, data + len) must lie in the pool's shared region (else
 * PK_EINVAL): nothing is copied, the task gets data itself, and the
 * caller keeps those bytes as they are until the future finishes.
 * Returns, owner, threads: as pk_procpool_submit. */
PK_API int pk_procpool_submit_task(pk_procpool *pp, const pk_task *task,
                                   pk_future **fut);

/* Stops taking tasks; how is a pk_shutdown_how (executor.h): DRAIN runs
 * what is queued, CANCEL cancels what is queued (its futures end
 * cancelled) and lets running tasks finish, KILL also kills the workers
 * running tasks (their futures fail with PK_ECANCELED). Waits up to
 * timeout_ms for the queue to empty and the running tasks to end. The
 * workers stay (idle) until pk_procpool_destroy. A later call may ask for
 * more (DRAIN, then KILL), never less.
 * Returns: 0; PK_ETIMEDOUT (tasks still queued or running: the pool
 * stays valid); PK_EINVAL (bad how or timeout); PK_EFORKED.
 * Threads: safe, but not from inside a task's future callback (it runs on
 * the supervisor thread, which the wait needs). */
PK_API int pk_procpool_shutdown(pk_procpool *pp, int how, int timeout_ms);

/* Ends the pool: as pk_procpool_shutdown(pp, PK_SHUTDOWN_KILL, forever)
 * unless a shutdown already emptied it, then stops the supervisor,
 * retires every worker (its socket is shut, it exits; one that does not
 * within a second is killed) and frees the pool. Futures of the pool
 * stay valid (they are reference counted). NULL is a no-op.
 * Owner: takes pp. Threads: exclusive (no other call on pp may be
 * running or start); not from a future callback of the pool. */
PK_API void pk_procpool_destroy(pk_procpool *pp);

/* Call early in main(), once the tasks are registered in reg (the same
 * names as the pool's registry): in a worker a PK_PROCPOOL_SPAWN pool
 * started, it serves tasks until the pool lets the worker go and then
 * ends the process (never returns); anywhere else it returns 0 at once.
 * A worker with a NULL reg, or a malformed start, writes why to stderr
 * and exits with status 2.
 * Returns: 0 (not a worker). Owner: borrows reg. Threads: call it before
 * starting threads. */
PK_API int pk_procpool_worker_main(const pk_registry *reg);

/* The shared region: *base and *size (both NULL / 0 without one). Every
 * worker maps it MAP_SHARED (a forked one at the same address, a spawned
 * one wherever it can: keep offsets in it, not pointers): what the
 * caller writes there a task reads, and the other way round (use the
 * region's memory for data and for results; synchronisation is the
 * future's: what a task wrote is there once its future finished).
 * Returns: 0, PK_EINVAL, PK_EFORKED. Owner: the region is the pool's,
 * unmapped by pk_procpool_destroy. Threads: safe. */
PK_API int pk_procpool_shared(pk_procpool *pp, void **base, size_t *size);

/* The pool as a pk_executor (named tasks only; capacity is the queue's
 * room). The executor borrows the pool: destroy it before the pool.
 * Returns: 0, PK_EINVAL, PK_ENOMEM, PK_EFORKED. Owner: *out returned owned
 * (pk_executor_destroy). Threads: safe. */
PK_API int pk_procpool_executor(pk_procpool *pp, pk_executor **out);

typedef struct pk_procpool_stats {
    size_t workers;          /* alive (idle and busy) */
    size_t busy;             /* running a task */
    size_t queued;           /* tasks waiting for a worker */
    uint64_t submitted;      /* tasks queued */
    uint64_t completed;      /* tasks that returned 0 */
    uint64_t failed;         /* tasks that returned an error code, or
                                failed because no worker could start */
    uint64_t died;           /* tasks whose worker died (PK_EWORKER) */
    uint64_t timed_out;      /* tasks stopped at task_timeout_ms */
    uint64_t cancelled;      /* tasks cancelled before they ran, or
                                killed by a shutdown */
    uint64_t workers_started; /* forks */
    uint64_t workers_retired; /* workers that ended (any reason) */
    uint64_t over_rss;       /* workers replaced for max_rss_growth */
} pk_procpool_stats;

/* Fills *out (a snapshot: counts move while tasks run).
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_procpool_stats_get(pk_procpool *pp, pk_procpool_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_PROCPOOL_H */
