/* pools/thread/task.c - one task record of the thread pool: made at
 * submit (a future if asked, a copy of a named task's bytes), run by a
 * worker (or by its caller under CALLER_RUNS), or cancelled; and the
 * counts a worker keeps of what it settled, published in batches.
 *
 * A failure nobody can read (a fire-and-forget task that failed or never
 * ran) reaches the event hook: pk_task_run reports a task's own failure,
 * this file the ones that never ran (expired, cancelled by shutdown). */
#include <stdio.h>
#include <string.h>

#include "tp_int.h"

/* Some tasks are timed (queue wait, run time): reading the clock for
 * every task would cost more than the rest of a no-op's trip. One in
 * eight of a thread's first 4096 submits, so a pool that runs few tasks
 * still gets percentiles, then one in 64. The counter is per thread, so
 * submitters share nothing for it (README, thread-locals). */
static _Thread_local unsigned tls_sample;

static uint64_t
sample_clock(void)
{
    unsigned k = ++tls_sample;

    return (k & (k < 4096 ? 7u : 63u)) == 0 ? pk__now_ns() : 0;
}

int
pk__tp_task_make(struct pk_threadpool *tp, const pk_task *task,
                 const pk_task_options *o, struct tp_task *out,
                 pk_future **fut)
{
    /* Field by field: a memset of the record compiles to rep stos, whose
     * start-up cost was a tenth of a no-op task's submit. */
    out->named = task->name != NULL;
    out->copied = 0;
    out->flags = (uint16_t)task->flags;
    out->len = task->len;
    if (task->name) {
        out->f.name = task->name;
        out->a.data = task->data;
    } else {
        out->f.fn = task->fn;
        out->a.arg = task->arg;
    }
    out->fut = NULL;
    out->start_within_ms = o ? (uint32_t)o->start_within_ms : 0;
    out->run_limit_ms = o ? (uint32_t)o->run_limit_ms : 0;
    out->enq_ns = out->start_within_ms || out->run_limit_ms ? pk__now_ns()
                                                            : sample_clock();
    if (task->name && task->len && !(task->flags & PK_TASK_SHARED)) {
        void *copy = pk__alloc(task->len);
        if (!copy)
            return PK_ENOMEM;
        memcpy(copy, task->data, task->len);
        out->a.data = copy;
        out->copied = 1;
    }
    if (fut) {
        int rc = pk__future_create_refs(&out->fut, tp->event,
                                        tp->event_user, 2);
        if (rc) {
            pk__tp_task_unmake(out, NULL);
            return rc;
        }
        *fut = out->fut; /* the caller's reference */
    }
    return 0;
}

/* Frees what a record holds (a copy of the bytes, the queue's reference
 * to its future). */
static void
free_record(struct tp_task *t)
{
    pk_future_release(t->fut);
    t->fut = NULL;
    if (t->copied)
        pk__free((void *)t->a.data);
    t->copied = 0;
}

void
pk__tp_task_unmake(struct tp_task *t, pk_future **fut)
{
    if (fut && *fut) {
        pk_future_release(*fut);
        *fut = NULL;
    }
    free_record(t);
}

static void
unpack(const struct tp_task *t, pk_task *out)
{
    memset(out, 0, sizeof *out);
    if (t->named) {
        out->name = t->f.name;
        out->data = t->a.data;
        out->len = t->len;
    } else {
        out->fn = t->f.fn;
        out->arg = t->a.arg;
    }
    out->flags = t->flags;
}

/* A task that never ran: its future says why, or the event hook hears it
 * (fire and forget: nobody else would). */
static void
never_ran(struct pk_threadpool *tp, struct tp_task *t, int code,
          const char *why)
{
    if (t->fut) {
        if (code == PK_ECANCELED)
            pk_future_cancel(t->fut);
        else
            pk_future_fail(t->fut, code, 0, "%s", why);
    } else if (tp->event && code != PK_ECANCELED) {
        pk_error e;
        pk_event ev = { PK_EVENT_FUTURE_UNREAD, NULL, NULL, 0, 0, &e };
        pk_error_set(&e, code, 0, "%s", why);
        tp->event(tp->event_user, &ev);
    }
}

/* Shows the task t at w's depth d to the watchdog (timer.c), or clears
 * the depth (t NULL). Only while the pool watches: the lock is a cost
 * the plain path does not pay. */
static void
show(struct pk_threadpool *tp, struct tp_worker *w, int d, uint64_t start,
     const struct tp_task *t)
{
    pk__lock_acquire(&tp->lock);
    w->watch[d] = (struct tp_watch){
        start, t ? (uint64_t)t->run_limit_ms * 1000000u : 0,
        t ? t->fut : NULL, false, false
    };
    pk__lock_release(&tp->lock);
}

static void
count(struct tp_tally *n, int rc)
{
    if (rc == 0)
        n->completed++;
    else if (rc == PK_ECANCELED)
        n->cancelled++;
    else
        n->failed++;
}

void
pk__tp_task_run(struct pk_threadpool *tp, struct tp_worker *w,
                struct tp_task *t, struct tp_tally *n)
{
    bool watch = w && w->nest < PK__TP_STACK &&
                 atomic_load_explicit(&tp->watching, memory_order_relaxed);
    uint64_t t0 = (t->enq_ns || watch) ? pk__now_ns() : 0;
    pk_task task;
    int rc;

    n->finished++;
    if (t->enq_ns) {
        pk__hist_add(&tp->wait_hist, t0 - t->enq_ns);
        if (t->start_within_ms &&
            t0 - t->enq_ns > (uint64_t)t->start_within_ms * 1000000u) {
            char why[64];
            snprintf(why, sizeof why, "not started within %u ms",
                     t->start_within_ms);
            never_ran(tp, t, PK_ETIMEDOUT, why);
            n->expired++;
            n->failed++; /* its future failed: expired is part of failed */
            free_record(t);
            return;
        }
    }
    if (w) {
        if (w->nest < PK__TP_STACK)
            w->stack[w->nest] = t->fut;
        if (watch)
            show(tp, w, w->nest, t0, t);
        w->nest++;
    }
    unpack(t, &task);
    rc = pk_task_run(&task, tp->registry, t->fut, tp->event, tp->event_user);
    if (w) {
        w->nest--;
        if (watch)
            show(tp, w, w->nest, 0, NULL);
        if (w->nest < PK__TP_STACK)
            w->stack[w->nest] = NULL;
    }
    if (t->enq_ns)
        pk__hist_add(&tp->run_hist, pk__now_ns() - t0);
    count(n, rc);
    free_record(t);
}

void
pk__tp_task_cancel(struct pk_threadpool *tp, struct tp_task *t,
                   struct tp_tally *n)
{
    never_ran(tp, t, PK_ECANCELED, "cancelled by shutdown");
    n->cancelled++;
    n->finished++;
    free_record(t);
}

static void
add(_Atomic uint64_t *to, uint64_t *n)
{
    if (*n)
        atomic_fetch_add_explicit(to, *n, memory_order_relaxed);
    *n = 0;
}

/* The outcome counts first, `finished` last (seq_cst): a shutdown that
 * sees everything finished sees the counts too. A shutdown waits on
 * tp->done for `finished` to catch up: it closed the queue (seq_cst)
 * before it registered and read `finished`, so either it sees this add,
 * or this load of `closed` sees its close and wakes it. */
void
pk__tp_tally_publish(struct pk_threadpool *tp, struct tp_tally *n)
{
    add(&tp->st_completed, &n->completed);
    add(&tp->st_failed, &n->failed);
    add(&tp->st_cancelled, &n->cancelled);
    add(&tp->st_expired, &n->expired);
    if (n->finished == 0)
        return;
    atomic_fetch_add(&tp->finished, n->finished);
    n->finished = 0;
    if (atomic_load(&tp->closed))
        pk__cv_broadcast(&tp->done);
}
