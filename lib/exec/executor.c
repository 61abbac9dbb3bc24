/* lib/exec/executor.c - the pk_executor wrapper, pk_task_run and the inline
 * executor.
 *
 * The wrapper validates every call once, so implementations receive only
 * well-formed tasks (exactly one of fn and name; a name of 1..127 bytes;
 * data present when len is not 0; known flags). It adds one promise the
 * implementations need not keep themselves: submit_many is all or nothing
 * even when an implementation has no submit_many of its own. The fallback
 * submits one by one and, if a submit fails, cancels the futures it already
 * got and drops them. A cancelled pending task never runs, so the promise
 * holds for any executor that queues work; an executor that may *start* a
 * task before submit returns (the inline one, for example) must provide
 * submit_many itself, since a started task cannot be taken back.
 *
 * pk_task_run is the one place that turns a task's return into a future's
 * outcome, so every executor reports results, failures and cancellations
 * the same way. A failure that no future can carry (a fire-and-forget
 * task) is "a failure nobody can read": it goes to the event hook as
 * PK_EVENT_FUTURE_UNREAD, the same kind an unread failed future raises,
 * or, without a hook, to stderr as one rate-limited line (kit/log.h). */
#include <poolkit/executor.h>

#include <assert.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"
#include "../kit/log.h"
#include "../kit/sync.h"
#include "executor_int.h"

#define TASK_NAME_MAX 127
#define EXEC_MAGIC 0x70654578u
#define CHECK(ex) assert((ex)->magic == EXEC_MAGIC)

struct pk_executor {
    uint32_t magic;      /* EXEC_MAGIC while alive; checked in debug */
    pk_executor_ops ops; /* copied at create; immutable */
    void *impl;
};

/* Returns 1 if task names exactly one thing to run, well formed. */
static int
task_valid(const pk_task *task)
{
    size_t len;

    if (!task || (task->fn != NULL) == (task->name != NULL))
        return 0;
    if (task->flags & ~(unsigned)(PK_TASK_SHARED | PK_TASK_CHUNK))
        return 0;
    if (task->fn)
        return (task->flags & PK_TASK_CHUNK) == 0;
    len = strnlen(task->name, TASK_NAME_MAX + 1);
    return len >= 1 && len <= TASK_NAME_MAX && (task->data || !task->len);
}

static int
bad_timeout(int timeout_ms)
{
    return timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER;
}

/* ---- the wrapper ------------------------------------------------------- */

int
pk_executor_create(pk_executor **out, const pk_executor_ops *ops, void *impl)
{
    pk_executor *ex;

    if (!out || !ops || !ops->submit || !ops->capacity || !ops->shutdown)
        return PK_EINVAL;
    ex = pk__alloc(sizeof *ex);
    if (!ex)
        return PK_ENOMEM;
    ex->magic = EXEC_MAGIC;
    ex->ops = *ops;
    ex->impl = impl;
    *out = ex;
    return 0;
}

int
pk_executor_submit(pk_executor *ex, const pk_task *task, pk_future **fut)
{
    if (!ex || !task_valid(task))
        return PK_EINVAL;
    CHECK(ex);
    return ex->ops.submit(ex->impl, task, fut);
}

/* Undoes a partial submit_many: cancels (so queued tasks never run) and
 * drops the futures of tasks 0..n-1. */
static void
unsubmit(pk_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fs[i])
            pk_future_cancel(fs[i]);
        pk_future_release(fs[i]);
        fs[i] = NULL;
    }
}

/* submit_many for implementations without one. It always asks for
 * futures, even when the caller did not, because a future is what lets it
 * take a queued task back. */
static int
submit_loop(pk_executor *ex, const pk_task *tasks, size_t n,
            pk_future **futs)
{
    pk_future **fs = futs;
    size_t i;
    int rc = 0;

    if (!fs) {
        fs = pk__calloc(n, sizeof *fs);
        if (!fs)
            return PK_ENOMEM;
    }
    for (i = 0; i < n && rc == 0; i++) {
        fs[i] = NULL;
        rc = ex->ops.submit(ex->impl, &tasks[i], &fs[i]);
    }
    if (rc)
        unsubmit(fs, i);
    else if (!futs)
        for (i = 0; i < n; i++)
            pk_future_release(fs[i]);
    if (fs != futs)
        pk__free(fs);
    return rc;
}

int
pk_executor_submit_many(pk_executor *ex, const pk_task *tasks, size_t n,
                        pk_future **futs)
{
    if (!ex || !tasks || n == 0)
        return PK_EINVAL;
    CHECK(ex);
    for (size_t i = 0; i < n; i++)
        if (!task_valid(&tasks[i]))
            return PK_EINVAL;
    if (ex->ops.submit_many)
        return ex->ops.submit_many(ex->impl, tasks, n, futs);
    return submit_loop(ex, tasks, n, futs);
}

int
pk_executor_capacity(pk_executor *ex, size_t *out)
{
    if (!ex || !out)
        return PK_EINVAL;
    CHECK(ex);
    return ex->ops.capacity(ex->impl, out);
}

int
pk_executor_shutdown(pk_executor *ex, int how, int timeout_ms)
{
    if (!ex || how < PK_SHUTDOWN_DRAIN || how > PK_SHUTDOWN_KILL ||
        bad_timeout(timeout_ms))
        return PK_EINVAL;
    CHECK(ex);
    return ex->ops.shutdown(ex->impl, how, timeout_ms);
}

void
pk_executor_destroy(pk_executor *ex)
{
    if (!ex)
        return;
    CHECK(ex);
    if (ex->ops.destroy)
        ex->ops.destroy(ex->impl);
    ex->magic = 0;
    pk__free(ex);
}

/* ---- running one task -------------------------------------------------- */

/* A failure nobody can read: tell the event hook, or without one stderr
 * (kit/log.h: one rate-limited line). */
void
pk__task_report_unread(pk_event_fn event, void *event_user,
                       const pk_error *err, const char *what)
{
    pk_event ev;

    if (!event) {
        pk__log_failure(what, err);
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.kind = PK_EVENT_FUTURE_UNREAD;
    ev.error = err;
    event(event_user, &ev);
}

/* Settles a failure: fails fut if there is one (it may have finished
 * already, e.g. cancelled; then there is nothing left to tell), else
 * reports it. Returns err->code. */
static int
settle_failure(pk_future *fut, pk_event_fn event, void *event_user,
               const pk_error *err)
{
    if (fut)
        pk_future_fail(fut, err->code, err->sys, "%s", err->msg);
    else
        pk__task_report_unread(event, event_user, err,
                               "a fire-and-forget task failed");
    return err->code;
}

/* A task that cannot start (bad task, unknown name) still settles its
 * future, so nobody waits forever for it. */
static int PK_PRINTF(4, 5)
refuse(pk_future *fut, pk_event_fn event, void *event_user, const char *fmt,
       ...)
{
    pk_error err;
    va_list ap;

    err.code = PK_EINVAL;
    err.sys = 0;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    return settle_failure(fut, event, event_user, &err);
}

static void
free_result(pk_result *res)
{
    if (res->free_fn && res->value)
        res->free_fn(res->value);
}

/* Calls the task and settles fut (or the event hook) with what it did. */
static int
call(const pk_task *task, pk_named_fn named, pk_future *fut,
     pk_event_fn event, void *event_user)
{
    pk_result out;
    pk_error err;
    int rc;

    memset(&out, 0, sizeof out);
    pk_error_clear(&err);
    if (named && (task->flags & PK_TASK_CHUNK))
        rc = pk__chunk_run(named, task->data, task->len, fut, SIZE_MAX,
                           &out, &err);
    else if (named)
        rc = named(task->data, task->len, fut, &out, &err);
    else
        rc = task->fn(task->arg, fut, &out, &err);
    if (rc == 0) {
        /* Nobody to hand it to (no future, or one finished by someone
         * else, such as the task itself): the result is freed here. */
        if (!fut || pk_future_complete(fut, &out) != 0)
            free_result(&out);
        return 0;
    }
    if (rc > 0) {
        /* A bug in the task; keep the value it returned as sys. */
        pk_error_set(&err, PK_ETASK, rc,
                     "task returned %d: tasks return 0 or a negative code",
                     rc);
    }
    err.code = rc > 0 ? PK_ETASK : rc;
    if (!err.msg[0])
        snprintf(err.msg, sizeof err.msg, "%s", pk_strerror(err.code));
    return settle_failure(fut, event, event_user, &err);
}

/* pk_task_run, claiming fut (setting it running) only if `claim`. */
static int
run(const pk_task *task, const pk_registry *reg, pk_future *fut,
    pk_event_fn event, void *event_user, bool claim)
{
    pk_named_fn named = NULL;
    int rc;

    if (!task_valid(task))
        return refuse(fut, event, event_user,
                      "invalid task: set exactly one of fn and name");
    if (task->name &&
        (!reg || pk_registry_lookup(reg, task->name, &named) != 0))
        return refuse(fut, event, event_user, "unknown task name '%s'",
                      task->name);
    if (fut && claim) {
        rc = pk_future_set_running(fut);
        if (rc)
            return rc; /* PK_ECANCELED: cancelled first; do not run */
    }
    return call(task, named, fut, event, event_user);
}

int
pk_task_run(const pk_task *task, const pk_registry *reg, pk_future *fut,
            pk_event_fn event, void *event_user)
{
    return run(task, reg, fut, event, event_user, true);
}

int
pk__task_run_claimed(const pk_task *task, const pk_registry *reg,
                     pk_future *fut, pk_event_fn event, void *event_user)
{
    return run(task, reg, fut, event, event_user, false);
}

/* ---- the inline executor ----------------------------------------------- */

struct inline_exec {
    pk_registry *reg;      /* borrowed; immutable */
    pk_event_fn event;     /* immutable */
    void *event_user;
    pk__lock lock;         /* closed, active; PK__RANK_INLINE */
    pk__cv idle;           /* active reached 0 after close */
    int closed;
    size_t active;         /* submits running tasks right now */
};

static int
inline_enter(struct inline_exec *ie)
{
    int rc = 0;

    pk__lock_acquire(&ie->lock);
    if (ie->closed)
        rc = PK_ESHUTDOWN;
    else
        ie->active++;
    pk__lock_release(&ie->lock);
    return rc;
}

static void
inline_leave(struct inline_exec *ie)
{
    pk__lock_acquire(&ie->lock);
    if (--ie->active == 0 && ie->closed)
        pk__cv_broadcast(&ie->idle);
    pk__lock_release(&ie->lock);
}

/* Makes futures 0..n-1 (all of them or none). */
static int
make_futures(struct inline_exec *ie, pk_future **futs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = pk_future_create(&futs[i], ie->event, ie->event_user);

        if (rc) {
            for (size_t j = 0; j < i; j++) {
                pk_future_release(futs[j]);
                futs[j] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

/* The task runs before this returns, so its data is only borrowed: no
 * copy is needed, with or without PK_TASK_SHARED. */
static int
inline_submit_many(void *impl, const pk_task *tasks, size_t n,
                   pk_future **futs)
{
    struct inline_exec *ie = impl;
    int rc = inline_enter(ie);

    if (rc)
        return rc;
    if (futs) {
        /* Every allocation happens before the first task runs: that is
         * what makes a failure here all or nothing. */
        rc = make_futures(ie, futs, n);
        if (rc) {
            inline_leave(ie);
            return rc;
        }
    }
    for (size_t i = 0; i < n; i++)
        pk_task_run(&tasks[i], ie->reg, futs ? futs[i] : NULL, ie->event,
                    ie->event_user);
    inline_leave(ie);
    return 0;
}

static int
inline_submit(void *impl, const pk_task *task, pk_future **fut)
{
    return inline_submit_many(impl, task, 1, fut);
}

static int
inline_capacity(void *impl, size_t *out)
{
    struct inline_exec *ie = impl;
    int rc = 0;

    pk__lock_acquire(&ie->lock);
    if (ie->closed)
        rc = PK_ESHUTDOWN;
    else
        *out = SIZE_MAX; /* never blocks: the submitter does the work */
    pk__lock_release(&ie->lock);
    return rc;
}

/* Every `how` is the same here: nothing is ever queued, and a task that
 * runs on a submitter's thread cannot be stopped. Waits for submits in
 * progress on other threads. A task that calls this on its own executor
 * with a timeout never sees its own submit end: it gets PK_ETIMEDOUT. */
static int
inline_shutdown(void *impl, int how, int timeout_ms)
{
    struct inline_exec *ie = impl;
    uint64_t deadline;
    int rc = pk__deadline(timeout_ms, &deadline);

    (void)how;
    if (rc)
        return rc;
    pk__lock_acquire(&ie->lock);
    ie->closed = 1;
    while (ie->active > 0 && rc == 0) {
        if (timeout_ms != 0)
            pk__cv_wait_until(&ie->idle, &ie->lock, deadline);
        if (timeout_ms == 0 || pk__now_ns() >= deadline)
            rc = ie->active > 0 ? PK_ETIMEDOUT : 0;
    }
    pk__lock_release(&ie->lock);
    return rc;
}

static void
inline_destroy(void *impl)
{
    struct inline_exec *ie = impl;

    pk__free(ie);
}

static const pk_executor_ops inline_ops = {
    .submit = inline_submit,
    .submit_many = inline_submit_many,
    .capacity = inline_capacity,
    .shutdown = inline_shutdown,
    .destroy = inline_destroy,
};

int
pk_inline_executor_create(pk_executor **out, pk_registry *reg,
                          pk_event_fn event, void *event_user)
{
    struct inline_exec *ie;
    int rc;

    if (!out)
        return PK_EINVAL;
    ie = pk__calloc(1, sizeof *ie);
    if (!ie)
        return PK_ENOMEM;
    ie->reg = reg;
    ie->event = event;
    ie->event_user = event_user;
    pk__lock_init(&ie->lock, PK__RANK_INLINE);
    rc = pk_executor_create(out, &inline_ops, ie);
    if (rc)
        inline_destroy(ie);
    return rc;
}
