/* poolkit/future.h - one type for every asynchronous result.
 *
 * A future is pending, running, done, failed or cancelled. Consumers wait
 * on it (with a timeout; for one, any or all of several), read its result
 * or error, or attach completion callbacks. Producers (executors) move it
 * to running and then to one terminal state, exactly once.
 *
 * Ownership: reference counted. pk_future_create returns one reference;
 * an executor's submit returns one to the caller and keeps its own.
 * Drop a reference with pk_future_release. A failed future whose error
 * nobody read (pk_future_result, pk_future_error or pk_future_get) is
 * reported when its last reference goes, so no failure is silent: through
 * its event hook, with PK_EVENT_FUTURE_UNREAD, or without a hook as one
 * line on stderr ("poolkit: a failed future was released unread:
 * PK_ETASK: ..."; at most 10 such lines a second per process, then one
 * saying how many were dropped; POOLKIT_LOG=off in the environment turns
 * the lines off; never a SIGPIPE).
 *
 * Events (pk_future_create's event; pk_event_name names them):
 *   PK_EVENT_FUTURE_UNREAD  a failed future was released unread
 *                           (ev.error: its code, sys and message)
 *
 * Threads: every function is safe on the same future from any threads. */
#ifndef POOLKIT_FUTURE_H
#define POOLKIT_FUTURE_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_future pk_future; /* opaque */

typedef enum pk_future_state {
    PK_FUTURE_PENDING = 0,
    PK_FUTURE_RUNNING,
    PK_FUTURE_DONE,
    PK_FUTURE_FAILED,
    PK_FUTURE_CANCELLED
} pk_future_state;

/* A result: a pointer for in-process executors, or bytes (value, len) for
 * anything that crosses a process. free_fn, if set, is called on value
 * when the future is freed, unless the reader took the result with
 * pk_future_take_result. */
typedef struct pk_result {
    void *value;
    size_t len;
    void (*free_fn)(void *value);
} pk_result;

/* Runs once when the future reaches a terminal state, on the thread that
 * completed it (or on the caller of pk_future_on_complete if it already
 * had), with no poolkit lock held. f is borrowed for the call. */
typedef void (*pk_future_fn)(void *arg, pk_future *f);

/* ---- producer side ---------------------------------------------------- */

/* Makes a pending future. event (optional) hears PK_EVENT_FUTURE_UNREAD.
 * Returns: 0, PK_EINVAL, PK_ENOMEM.
 * Owner: *out returned owned, one reference (pk_future_release).
 * Threads: safe. */
PK_API int pk_future_create(pk_future **out, pk_event_fn event,
                            void *event_user);

/* Marks a pending future running. Returns: 0; PK_ECANCELED if it was
 * cancelled (do not run the task); PK_EINVAL if it is not pending.
 * Threads: safe. */
PK_API int pk_future_set_running(pk_future *f);

/* Completes a pending or running future with a result (NULL: an empty
 * one). Returns: 0; PK_EINVAL if it already finished (then the future
 * does not take res: the caller frees it).
 * Owner: takes res's value on success. Threads: safe; callbacks run on
 * this thread. */
PK_API int pk_future_complete(pk_future *f, const pk_result *res);

/* Fails a pending or running future with code (negative), sys (errno,
 * exit status, signal; 0 if none) and an optional printf-style message
 * (NULL: pk_strerror(code)). A task that stops because it was asked to
 * fails with PK_ECANCELED: if cancellation was requested, the future ends
 * CANCELLED rather than FAILED (nobody has to read it).
 * Returns: 0, PK_EINVAL (already finished, or code >= 0).
 * Threads: safe; callbacks run on this thread. */
PK_API int pk_future_fail(pk_future *f, int code, int sys, const char *fmt,
                          ...) PK_PRINTF(4, 5);

/* ---- consumer side ---------------------------------------------------- */

/* Adds a reference. Returns: f. Threads: safe. */
PK_API pk_future *pk_future_ref(pk_future *f);

/* Drops a reference; the last one frees the future (and its result,
 * unless taken: free_fn(value) if both are set) and reports a failure
 * nobody read to the event hook, on this thread (without a hook: one
 * rate-limited line on stderr, see the top of this header). Callbacks of a future that never finished are dropped
 * uncalled. NULL is a no-op. Releasing a reference you do not hold (a
 * future released twice) is a bug: it aborts on an assertion (builds
 * without NDEBUG, the default), unless the freed memory already holds
 * another future. Threads: safe. */
PK_API void pk_future_release(pk_future *f);

/* Asks for cancellation. A pending future becomes cancelled at once and
 * its task never runs. A running one gets its cancel flag raised, which
 * the task may read with pk_future_cancel_requested.
 * Returns: 0 (cancelled before it ran), PK_EAGAIN (already running or
 * finished: the flag is raised), PK_EINVAL. Threads: safe. */
PK_API int pk_future_cancel(pk_future *f);

/* Returns 1 if cancellation was asked for, else 0 (also for NULL).
 * Threads: safe; cheap enough to poll in a task's loop. */
PK_API int pk_future_cancel_requested(const pk_future *f);

/* Returns the current state (PK_FUTURE_PENDING for NULL). A future whose
 * outcome is being written reads PK_FUTURE_RUNNING until it is published.
 * Threads: safe. */
PK_API pk_future_state pk_future_state_get(const pk_future *f);

/* Waits until the future finishes (done, failed or cancelled). Called in
 * a task of an executor's worker (the thread pool's), the wait runs the
 * awaited task itself if it is a task of that pool not started yet, and
 * otherwise runs queued work meanwhile, up to the executor's nesting
 * bound (PK_THREADPOOL_NEST_MAX); a task waiting on its own future, or on
 * that of a task it runs nested in, gets PK_EDEADLK at once. A cycle
 * through tasks on other workers is not looked for: it waits until its
 * timeout. In a child after fork() from
 * such a task, the thread is no worker: it waits as any thread does, so
 * it can wait on futures of pools made in the child (a future of the
 * parent's pools never finishes there).
 * Returns: 0, PK_ETIMEDOUT, PK_EAGAIN (timeout 0 and not finished),
 * PK_EDEADLK, PK_EINVAL. Threads: safe. */
PK_API int pk_future_wait(pk_future *f, int timeout_ms);

/* Waits until all n futures finish, helping as pk_future_wait does.
 * Returns: 0, PK_ETIMEDOUT, PK_EAGAIN, PK_EDEADLK, PK_EINVAL
 * (NULL array or element, n 0). Threads: safe. */
PK_API int pk_future_wait_all(pk_future *const *fs, size_t n,
                              int timeout_ms);

/* Waits until at least one of n futures finishes; *index gets the lowest
 * index of a finished one. In a worker's task it helps as pk_future_wait
 * does (running one of the awaited tasks if it can), but gives PK_EDEADLK
 * only when n is 1 (with several, another may still finish). Returns: 0, PK_ETIMEDOUT, PK_EAGAIN, PK_EDEADLK (n 1),
 * PK_EINVAL, PK_ENOMEM. Threads: safe. */
PK_API int pk_future_wait_any(pk_future *const *fs, size_t n, int timeout_ms,
                              size_t *index);

/* Reads the outcome without waiting. Marks a failure as read.
 * Returns: 0 (done; *res filled, if res is not NULL, and still owned by
 * the future), the task's code (failed), PK_ECANCELED, PK_EAGAIN (not
 * finished), PK_EINVAL (NULL f, or the result was taken).
 * Threads: safe. */
PK_API int pk_future_result(pk_future *f, pk_result *res);

/* Like pk_future_result, but moves the result out: the caller now owns
 * res->value and frees it with res->free_fn. Returns as pk_future_result;
 * PK_EINVAL if res is NULL or the result was already taken.
 * Threads: safe (exactly one of racing takers gets it). */
PK_API int pk_future_take_result(pk_future *f, pk_result *res);

/* Copies a failed future's detail into *err (code, sys, message) and
 * marks it read. Returns: 0 if failed or cancelled (err filled; code
 * PK_ECANCELED for a cancelled one), PK_EAGAIN if not finished,
 * PK_EINVAL otherwise (NULL argument; done: no error). On PK_EAGAIN and
 * PK_EINVAL err (if not NULL) is filled too, with that code and why
 * ("the future has not finished"): check the return before reading
 * err.code as the future's. Threads: safe. */
PK_API int pk_future_error(pk_future *f, pk_error *err);

/* Waits up to timeout_ms for the future to finish, then reads its
 * outcome: pk_future_wait, pk_future_result and pk_future_error in one
 * call (Python's f.result(timeout)). Marks a failure as read.
 * Returns: 0 (done; *res, if res is not NULL, filled and still owned by
 * the future, as pk_future_result), the task's code (failed),
 * PK_ECANCELED (cancelled), PK_ETIMEDOUT (not finished in time),
 * PK_EAGAIN (timeout 0 and not finished), PK_EDEADLK (as
 * pk_future_wait), PK_EINVAL (NULL f, a bad timeout, or the result was
 * taken with pk_future_take_result).
 * Owner: err (optional) is the caller's; it is filled on every failure:
 * as pk_future_error for a failed or cancelled future (code, sys, the
 * task's message), else with the code and a message saying why (left
 * alone on success). Threads: safe; waits as pk_future_wait does. */
PK_API int pk_future_get(pk_future *f, int timeout_ms, pk_result *res,
                         pk_error *err);

/* Registers a completion callback; runs it now, on this thread, if the
 * future already finished. Several may be registered; they run in order:
 * if the finishing thread is still running earlier callbacks, cb is queued
 * behind them and runs on that thread, before or after this returns.
 * Returns: 0, PK_EINVAL, PK_ENOMEM (also when already finished: nothing
 * ran). Threads: safe. */
PK_API int pk_future_on_complete(pk_future *f, pk_future_fn cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_FUTURE_H */
