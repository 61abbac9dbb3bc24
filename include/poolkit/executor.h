/* poolkit/executor.h - the interface every work pool implements, and the
 * registry of named tasks.
 *
 * A task is either a function and a void * argument (in-process
 * executors), or a registered task name and argument bytes (anything that
 * crosses a process or a machine). Names are looked up in a pk_registry
 * handle passed in the executor's options: there is no hidden global.
 *
 * An executor is a pk_executor handle over an implementation's ops. Map,
 * completion streams and chunking are written on this interface once. */
#ifndef POOLKIT_EXECUTOR_H
#define POOLKIT_EXECUTOR_H

#include <stddef.h>

#include <poolkit/error.h>
#include <poolkit/future.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_executor pk_executor; /* opaque */
typedef struct pk_registry pk_registry; /* opaque */

/* An in-process task: returns 0 and fills *out, or returns a negative code
 * (the future fails with it; err, if filled, gives sys and the message).
 * On failure *out is ignored: the task frees anything it put there. A
 * positive return is a bug in the task and becomes PK_ETASK. The task may
 * poll pk_future_cancel_requested(self) when self is not NULL, and return
 * PK_ECANCELED when it sees it: the future then ends cancelled. */
typedef int (*pk_task_fn)(void *arg, pk_future *self, pk_result *out,
                          pk_error *err);

/* A named task: reads len bytes at data, same contract otherwise. */
typedef int (*pk_named_fn)(const void *data, size_t len, pk_future *self,
                           pk_result *out, pk_error *err);

enum pk_task_flags {
    /* data is a region shared with the executor (shared memory the caller
     * keeps alive until the future finishes): it is not copied. */
    PK_TASK_SHARED = 1u << 0
};

/* What to run: set fn (and arg), or name (and data, len). */
typedef struct pk_task {
    pk_task_fn fn;
    void *arg;
    const char *name;
    const void *data;
    size_t len;
    unsigned flags;   /* enum pk_task_flags */
} pk_task;

/* ---- the registry ----------------------------------------------------- */

/* Returns: 0, PK_EINVAL, PK_ENOMEM. Owner: *out returned owned
 * (pk_registry_destroy). Threads: safe. */
PK_API int pk_registry_create(pk_registry **out);

/* Registers fn under name (copied, 1..127 bytes).
 * Returns: 0, PK_EINVAL (bad name, NULL fn, name taken), PK_ENOMEM.
 * Threads: safe. */
PK_API int pk_registry_register(pk_registry *reg, const char *name,
                                pk_named_fn fn);

/* Finds name. Returns: 0 (*fn set), PK_EINVAL (NULL arguments, or no such
 * name). Threads: safe. */
PK_API int pk_registry_lookup(const pk_registry *reg, const char *name,
                              pk_named_fn *fn);

/* Frees the registry. No executor may still use it. NULL is a no-op.
 * Threads: exclusive. */
PK_API void pk_registry_destroy(pk_registry *reg);

/* ---- the executor interface ------------------------------------------- */

enum pk_shutdown_how {
    PK_SHUTDOWN_DRAIN = 0,  /* run what is queued, then stop */
    PK_SHUTDOWN_CANCEL = 1, /* cancel what is queued, let running finish */
    PK_SHUTDOWN_KILL = 2    /* also kill running work (process pools) */
};

/* The implementation's side. submit and submit_many take a validated
 * task; fut may be NULL (fire and forget: a failure still reaches the
 * executor's event hook). */
typedef struct pk_executor_ops {
    int (*submit)(void *impl, const pk_task *task, pk_future **fut);
    int (*submit_many)(void *impl, const pk_task *tasks, size_t n,
                       pk_future **futs); /* optional */
    int (*capacity)(void *impl, size_t *out);
    int (*shutdown)(void *impl, int how, int timeout_ms);
    void (*destroy)(void *impl); /* optional */
} pk_executor_ops;

/* Wraps an implementation. ops is copied.
 * Returns: 0, PK_EINVAL (missing submit, capacity or shutdown), PK_ENOMEM.
 * Owner: *out returned owned (pk_executor_destroy, which calls
 * ops->destroy(impl)). Threads: safe. */
PK_API int pk_executor_create(pk_executor **out, const pk_executor_ops *ops,
                              void *impl);

/* Submits one task. fut (optional) gets a reference the caller releases.
 * Returns: 0, PK_EINVAL (neither fn nor name, or both), PK_EFULL, PK_EAGAIN,
 * PK_ETIMEDOUT, PK_ESHUTDOWN, PK_ENOMEM, PK_EFORKED.
 * Owner: task borrowed (name-task data copied unless PK_TASK_SHARED).
 * Threads: safe. */
PK_API int pk_executor_submit(pk_executor *ex, const pk_task *task,
                              pk_future **fut);

/* Submits n tasks; futs (optional) is an array of n that gets one
 * reference each. All or nothing: on failure no task was queued and futs
 * holds no reference. For an implementation without submit_many, the
 * wrapper submits one by one and, if one fails, cancels and drops the
 * futures of those already queued: a queued task never runs, but one the
 * executor already started cannot be taken back, so an executor that may
 * start work before submit returns must implement submit_many.
 * Returns: as pk_executor_submit. Threads: safe. */
PK_API int pk_executor_submit_many(pk_executor *ex, const pk_task *tasks,
                                   size_t n, pk_future **futs);

/* How many more tasks it accepts without blocking.
 * Returns: 0, PK_EINVAL, PK_ESHUTDOWN. Threads: safe. */
PK_API int pk_executor_capacity(pk_executor *ex, size_t *out);

/* Stops accepting work; how is a pk_shutdown_how. Waits up to timeout_ms.
 * Returns: 0, PK_ETIMEDOUT (work still running; the executor stays
 * valid), PK_EINVAL. Threads: safe. */
PK_API int pk_executor_shutdown(pk_executor *ex, int how, int timeout_ms);

/* Frees the handle and the implementation. NULL is a no-op.
 * Threads: exclusive. */
PK_API void pk_executor_destroy(pk_executor *ex);

/* ---- the inline executor ---------------------------------------------- */

/* An executor that runs each task on the submitting thread, before submit
 * returns: the simplest correct executor, for tests and for code that
 * wants an executor without threads. Named tasks are looked up in reg
 * (borrowed; may be NULL if only fn tasks are used); their data is only
 * borrowed, since the task is done before submit returns. event (optional)
 * hears failures of fire-and-forget tasks and unread failed futures.
 * Capacity is SIZE_MAX. Shutdown (any `how`) refuses later submits and
 * waits for submits running on other threads (called from inside one of
 * its own tasks, it waits for that one too: give it a timeout).
 * Returns: 0, PK_EINVAL, PK_ENOMEM. Owner: *out returned owned
 * (pk_executor_destroy). Threads: safe. */
PK_API int pk_inline_executor_create(pk_executor **out, pk_registry *reg,
                                     pk_event_fn event, void *event_user);

/* Runs a task once, as an executor's worker would: looks up a named task in
 * reg, moves fut (if not NULL) to running, calls the task, and completes
 * or fails fut. An invalid task or an unknown name fails fut with
 * PK_EINVAL. Without fut, a result is freed and a failure goes to event
 * (optional) as PK_EVENT_FUTURE_UNREAD with the error: a failure nobody
 * can read.
 * Returns: 0 if the task ran and succeeded, else its code (PK_ECANCELED
 * if fut was cancelled first, PK_EINVAL if the name is unknown or fut was
 * not pending).
 * Owner: borrows all. Threads: safe; the task runs on this thread. */
PK_API int pk_task_run(const pk_task *task, const pk_registry *reg,
                       pk_future *fut, pk_event_fn event, void *event_user);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_EXECUTOR_H */
