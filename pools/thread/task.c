/* pools/thread/task.c - one task record of the thread pool: made at
 * submit (a future if asked, a copy of a named task's bytes), run by a
 * worker (or by its caller under CALLER_RUNS), or cancelled; and the
 * counts a worker keeps of what it settled, published in batches.
 *
 * A failure nobody can read (a fire-and-forget task that failed or never
 * ran) reaches the event hook, or stderr without one (lib/kit/log.h):
 * pk_task_run reports a task's own failure, this file the ones that never
 * ran (expired, cancelled by shutdown). */
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

/* A task with a future submitted by a task of the pool keeps its record
 * in the future's allocation too (executor_int.h), so a worker waiting
 * on the future can run the task itself if it has not started
 * (pk__tp_task_inline): a parent waiting on its children runs them on
 * its own stack. That copy owns the task's copied bytes, freed with the
 * future; the queue's copy then owns nothing but its reference to the
 * future. A future submitted from outside the pool stays plain (64
 * bytes, not 144: half again as many tasks a second when a caller keeps
 * a million of them); a task waiting on one helps with queued tasks
 * instead (worker.c). */
struct tp_job {
    struct pk__future_ext hdr;
    struct tp_task t;
    _Atomic bool inlined; /* claimed by a waiting worker */
};

/* Whether a waiting worker claimed t's future (so the popper skips it,
 * and its outcome is counted where it ran). */
static bool
was_inlined(const struct tp_task *t)
{
    struct tp_job *job = (struct tp_job *)pk__future_ext(t->fut);

    return atomic_load(&job->inlined);
}

static void
job_fini(struct pk__future_ext *x)
{
    struct tp_job *job = (struct tp_job *)x;

    if (job->t.copied)
        pk__free((void *)job->t.a.data);
}

static int
make_future(struct pk_threadpool *tp, struct tp_task *t, pk_future **fut)
{
    struct pk__future_ext *x;
    struct tp_job *job;
    int rc;

    if (!tp_self_in(tp)) {
        rc = pk__future_create_refs(&t->fut, tp->event, tp->event_user, 2);
    } else {
        rc = pk__future_create_ext(&t->fut, tp->event, tp->event_user, 2,
                                   sizeof *job, &x);
        if (rc == 0) {
            job = (struct tp_job *)x;
            job->hdr.fini = job_fini;
            job->hdr.owner = tp;
            job->t = *t;
            job->t.fut = NULL; /* the future is its container */
            t->copied = 0;
        }
    }
    if (rc == 0)
        *fut = t->fut; /* the caller's reference */
    return rc;
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
        int rc = make_future(tp, out, fut);
        if (rc) {
            pk__tp_task_unmake(out, NULL);
            return rc;
        }
    }
    return 0;
}

/* Frees what a queue record holds: its reference to the future, or the
 * copy of the bytes. */
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

/* A task that never ran: its future says why, or (fire and forget:
 * nobody else would) the event hook or stderr hears it, as pk_task_run
 * reports a fire-and-forget failure. */
static void
never_ran(struct pk_threadpool *tp, pk_future *fut, int code,
          const char *why)
{
    pk_error e;

    if (fut) {
        pk_future_fail(fut, code, 0, "%s", why);
        return;
    }
    pk_error_set(&e, code, 0, "%s", why);
    pk__task_report_unread(tp->event, tp->event_user, &e,
                           "a fire-and-forget task never ran");
}

/* Shows the task t at w's depth d to the watchdog (timer.c), or clears
 * the depth (t NULL). Only while the pool watches: the lock is a cost
 * the plain path does not pay. */
static void
show(struct pk_threadpool *tp, struct tp_worker *w, int d, uint64_t start,
     const struct tp_task *t, pk_future *fut)
{
    pk__lock_acquire(&tp->lock);
    w->watch[d] = (struct tp_watch){
        start, t ? (uint64_t)t->run_limit_ms * 1000000u : 0, fut, false,
        false
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

/* Runs t, whose future (if any) fut is claimed (running) already. */
static void
run_claimed(struct pk_threadpool *tp, struct tp_worker *w,
            const struct tp_task *t, pk_future *fut, struct tp_tally *n)
{
    bool watch = w && w->nest < PK__TP_STACK &&
                 atomic_load_explicit(&tp->watching, memory_order_relaxed);
    uint64_t t0 = (t->enq_ns || watch) ? pk__now_ns() : 0;
    pk_task task;
    int rc;

    if (t->enq_ns) {
        pk__hist_add(&tp->wait_hist, t0 - t->enq_ns);
        if (t->start_within_ms &&
            t0 - t->enq_ns > (uint64_t)t->start_within_ms * 1000000u) {
            char why[64];
            snprintf(why, sizeof why, "not started within %u ms",
                     t->start_within_ms);
            never_ran(tp, fut, PK_ETIMEDOUT, why);
            n->expired++;
            n->failed++; /* its future failed: expired is part of failed */
            return;
        }
    }
    if (w) {
        if (w->nest < PK__TP_STACK)
            w->stack[w->nest] = fut;
        if (watch)
            show(tp, w, w->nest, t0, t, fut);
        w->nest++;
    }
    unpack(t, &task);
    if (fut)
        rc = pk__task_run_claimed(&task, tp->registry, fut, tp->event,
                                  tp->event_user);
    else
        rc = pk_task_run(&task, tp->registry, NULL, tp->event,
                         tp->event_user);
    if (w) {
        w->nest--;
        if (watch)
            show(tp, w, w->nest, 0, NULL, NULL);
        if (w->nest < PK__TP_STACK)
            w->stack[w->nest] = NULL;
    }
    if (t->enq_ns)
        pk__hist_add(&tp->run_hist, pk__now_ns() - t0);
    count(n, rc);
}

void
pk__tp_task_run(struct pk_threadpool *tp, struct tp_worker *w,
                struct tp_task *t, struct tp_tally *n)
{
    int rc = t->fut ? pk_future_set_running(t->fut) : 0;

    if (rc == 0)
        run_claimed(tp, w, t, t->fut, n);
    else if (rc == PK_ECANCELED)
        n->cancelled++;
    else if (!pk__future_ext(t->fut) || !was_inlined(t))
        n->failed++; /* settled by someone else before it ran */
    /* Counted once it returned, never before: a task of this worker's
     * that waits publishes the tally of the tasks it runs meanwhile, and
     * a shutdown must not see it finished then. (An inlined task runs
     * inside the task that waited for it, which is not finished yet.) */
    n->finished++;
    free_record(t);
}

bool
pk__tp_task_inline(struct pk_threadpool *tp, struct tp_worker *w,
                   pk_future *f, struct tp_tally *n)
{
    struct pk__future_ext *x = pk__future_ext(f);
    struct tp_job *job = (struct tp_job *)x;

    if (!x || x->owner != tp ||
        pk_future_state_get(f) != PK_FUTURE_PENDING ||
        atomic_load_explicit(&tp->cancelling, memory_order_relaxed))
        return false;
    /* Before the claim: a popper that loses it must see why. */
    atomic_store(&job->inlined, true);
    if (pk_future_set_running(f) != 0)
        return false;
    run_claimed(tp, w, &job->t, f, n);
    return true;
}

void
pk__tp_task_cancel(struct pk_threadpool *tp, struct tp_task *t,
                   struct tp_tally *n)
{
    if (!t->fut) {
        never_ran(tp, NULL, PK_ECANCELED, "cancelled by shutdown");
        n->cancelled++;
    } else if (pk__future_ext(t->fut) && was_inlined(t)) {
        /* A waiting worker claimed it: it runs (or ran) there, uncut. */
    } else if (pk_future_cancel(t->fut) == 0 ||
               pk_future_state_get(t->fut) == PK_FUTURE_CANCELLED) {
        n->cancelled++;
    } else {
        n->failed++; /* settled by someone else before it ran */
    }
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
