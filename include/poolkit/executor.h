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
    PK_TASK_SHARED = 1u << 0,
    /* data is a chunk of several calls of the named task, packed by
     * pk_map (its `chunk` option over named items), and the task's result
     * is their outcomes, packed: every poolkit executor runs such a task
     * (pk_task_run does); an executor that runs named tasks its own way
     * must too, or refuse it with PK_EINVAL. The layout is pk_map's: not
     * for callers to build. */
    PK_TASK_CHUNK = 1u << 1
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
 * hears failures of fire-and-forget tasks and unread failed futures
 * (without it, each is one rate-limited line on stderr: future.h).
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
 * can read (with a NULL event, one rate-limited line on stderr instead:
 * "poolkit: a fire-and-forget task failed: PK_ETASK: ...", see future.h).
 * Returns: 0 if the task ran and succeeded, else its code (PK_ECANCELED
 * if fut was cancelled first, PK_EINVAL if the name is unknown or fut was
 * not pending).
 * Owner: borrows all. Threads: safe; the task runs on this thread. */
PK_API int pk_task_run(const pk_task *task, const pk_registry *reg,
                       pk_future *fut, pk_event_fn event, void *event_user);

/* ---- map: many tasks, results streamed back (lib/exec/map.c) ----------- */

/* A map reads tasks lazily from a pk_map_next_fn and streams their results
 * back, in input order (like Python's Executor.map) or in completion order
 * (as_completed). At most `window` items are read and not yet delivered,
 * so memory stays flat however long the input is. Many small fn tasks are
 * packed into one executor task ("chunking"): automatically, or with an
 * explicit chunk size. Works on any pk_executor.
 *
 * Items are numbered from 0 in the order the next function returns them.
 * Each item's outcome is delivered once, by pk_map_next: a result, or the
 * item's own error code (the map goes on). Errors of the map itself (its
 * timeout, the input failing, the executor refusing work) carry the index
 * PK_MAP_NO_INDEX and end the map. */

typedef struct pk_map pk_map; /* opaque */

/* The index pk_map_next reports for an error of the map, not of an item. */
#define PK_MAP_NO_INDEX ((size_t)-1)

/* Fills *task with the next input item (it comes zeroed).
 * Returns 0 (task filled), 1 (no more input), or a negative code (the map
 * stops reading and, after the items already read were delivered,
 * pk_map_next returns that code). Runs on the thread calling pk_map_create
 * or pk_map_next, with no poolkit lock held. What the task points at (arg,
 * name, data) must stay valid until `release` is called for it, or until
 * pk_map_destroy returns when there is no release hook. */
typedef int (*pk_map_next_fn)(void *user, pk_task *task);

/* Progress: done items (finished: succeeded, failed or cancelled) out of
 * total (total_hint until the input ends, then the exact count; 0 while
 * unknown). Runs on the thread calling pk_map_next, with no poolkit lock
 * held, when done or total changed since the last call: done never goes
 * down, and a map that delivered every item has reported (n, n). */
typedef void (*pk_map_progress_fn)(void *user, size_t done, size_t total);

enum pk_map_order {
    PK_MAP_ORDERED = 0,  /* results in input order (default) */
    PK_MAP_UNORDERED = 1 /* results as they complete (as_completed) */
};

/* Zero in any field means its default. */
typedef struct pk_map_options {
    size_t window;     /* items read and not yet delivered, at most;
                          default max(1024, 8 * chunk) */
    size_t chunk;      /* items per executor task: 0 = automatic (grow
                          while each task carries under ~100 us of work,
                          up to max(1, window / 8) and 1024), 1 = one
                          executor task per item, n = n items (at most
                          window). Automatic chunking is for fn tasks; a
                          named task goes alone unless chunk is n > 1:
                          then up to n consecutive named items of one
                          name (not PK_TASK_SHARED) go as one
                          PK_TASK_CHUNK task (Python's chunksize: one
                          round trip to a worker process for n items),
                          each item's outcome its own; such a call gets
                          self NULL, and a process pool's max_result
                          holds per item, its task_timeout_ms per
                          chunk. */
    int order;         /* enum pk_map_order */
    int timeout_ms;    /* for the whole map, from pk_map_create: once it
                          passed, a pk_map_next that would wait returns
                          PK_ETIMEDOUT and the map cancels the rest. It
                          is looked at between submits too, and a submit
                          that would block on a full executor waits for
                          the map's own tasks in flight instead, if any:
                          an executor that runs tasks inside submit (the
                          inline one, caller-runs) overruns it by one
                          executor task (one chunk) at most.
                          0 (default) or PK_NEVER = none; PK_ALWAYS = 0 ms */
    pk_map_progress_fn progress; /* optional */
    void *progress_user;
    size_t total_hint; /* the input's length if known, for progress */
    void (*release)(void *user, pk_task *task); /* optional: called once
                          per item read, with the next function's user,
                          when the map no longer needs the task (after its
                          outcome was delivered, or when it is dropped);
                          on the thread calling pk_map_next or
                          pk_map_destroy, no poolkit lock held */
} pk_map_options;

/* Starts a map: reads up to a window of tasks from next and submits them
 * to ex. o may be NULL (all defaults).
 * Returns: 0, PK_EINVAL (NULL out, ex or next; order or timeout out of
 * range), PK_ENOMEM. A failing first read or submit is not returned here:
 * pk_map_next reports it.
 * Owner: *out returned owned (pk_map_destroy); ex and user borrowed until
 * pk_map_destroy returns; o borrowed.
 * Threads: safe; next runs on this thread. */
PK_API int pk_map_create(pk_map **out, pk_executor *ex, pk_map_next_fn next,
                         void *user, const pk_map_options *o);

/* pk_map_create with order PK_MAP_UNORDERED: a stream of results in the
 * order the items complete. Returns, owner, threads: as pk_map_create. */
PK_API int pk_as_completed_create(pk_map **out, pk_executor *ex,
                                  pk_map_next_fn next, void *user,
                                  const pk_map_options *o);

/* Delivers the next item's outcome, waiting for it if needed (at most
 * until the map's timeout), reading more input as room frees up. *index
 * (optional) gets the item's number; *res (optional) its result; err
 * (optional) is filled on every failure (an item's: code, sys and the
 * task's message; the map's; or the call's own PK_EINVAL) and left alone
 * on 0 and 1.
 * Returns: 0 (*res filled), 1 (every item was delivered; repeats),
 * a negative code with *index < PK_MAP_NO_INDEX (that item failed with
 * this code, PK_ECANCELED if it was cancelled; the map goes on), or a
 * negative code with *index == PK_MAP_NO_INDEX (the map ended: PK_ETIMEDOUT
 * for its timeout, the next function's code, or the executor's submit
 * error such as PK_ESHUTDOWN; what was in flight is cancelled, and every
 * later call returns the same code), PK_EINVAL (NULL m).
 * Owner: the caller owns res->value and frees it with res->free_fn (if
 * set); with a NULL res the map frees it.
 * Threads: one at a time (one consumer); next, progress and release run
 * on this thread. */
PK_API int pk_map_next(pk_map *m, pk_result *res, size_t *index,
                       pk_error *err);

/* Stops the map: cancels what is queued, asks running tasks to stop
 * (pk_future_cancel_requested), waits for them to finish, frees results
 * never delivered (their free_fn), calls release for every item still
 * held and frees the map. NULL is a no-op.
 * Owner: takes m. Threads: exclusive. */
PK_API void pk_map_destroy(pk_map *m);

/* Runs fn over args[0..n-1] on ex and waits for all: results[i] gets item
 * i's value, or NULL if it failed; codes (optional, n entries) gets each
 * item's code (0 or negative); errs (optional, n entries) gets each
 * failed item's detail as pk_map_next gives it (code, sys, the task's
 * message; the map's error for items it never delivered) and is cleared
 * (code 0, empty message) for each item that succeeded. Every item runs
 * even if others fail.
 * Returns: 0 (all succeeded), the code of the first item (in input order)
 * that failed, a map error (PK_ETIMEDOUT, the executor's submit error:
 * the items not delivered get that code and NULL), PK_EINVAL (NULL ex, fn
 * or results; args NULL with n > 0), PK_ENOMEM.
 * o (optional) is used as in pk_map_create, except that release is
 * ignored and total_hint defaults to n.
 * Owner: args borrowed; the caller owns every non-NULL results[i] (free it
 * as fn's contract says; the result's free_fn is not kept); codes and
 * errs are the caller's (an error is PK_ERROR_MSG_SIZE + 8 bytes: pass
 * errs only if the messages are wanted). On PK_EINVAL and on a
 * pk_map_create failure (PK_ENOMEM) the arrays are left alone.
 * Threads: safe; progress runs on this thread. */
PK_API int pk_map_array(pk_executor *ex, pk_task_fn fn, void *const *args,
                        size_t n, void **results, int *codes,
                        pk_error *errs, const pk_map_options *o);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_EXECUTOR_H */
