/* pools/thread/wait.c - waiting inside a task: a worker (or stand-in)
 * that waits on a future of its own pool helps instead of blocking.
 *
 * It runs tasks nested on its stack (its next slot first, most often the
 * very child awaited, then its batch, then the queue) within the nesting
 * bounds (help_within_bounds). Past them it gives its batch back and
 * blocks in 10 ms slices, counted out of `active` and of its lanes, with
 * one more worker allowed meanwhile if work is queued (compensation),
 * looking again for work and for cycles after each slice. A cycle (the
 * future runs on a worker that waits, through a chain, on this one) is
 * PK_EDEADLK. */
#include <sched.h>

#include "tp_int.h"

/* Cancels the unrun part of the batch: a cancelling shutdown swept the
 * queue, and these were queued tasks in all but place. Each was counted
 * pushed once, so it is counted finished once. */
void
pk__tp_cancel_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    size_t n = 0;

    while (w->batch_next < w->batch_n) {
        pk__tp_cancel_one(tp, &w->batch[--w->batch_n]);
        n++;
    }
    if (n)
        pk__tp_finish(tp, n);
}

/* Gives the unrun part of the batch back to the queue (where room is):
 * a worker that may not help any more must not sit on tasks that others
 * could run, its own awaited ones among them. After a cancelling
 * shutdown they are cancelled instead: pushed back after its sweep, they
 * would run. */
static void
give_back_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tp_lane *l = &tp->lanes[w->batch_lane];
    size_t n = 0;

    if (atomic_load(&tp->cancelling)) {
        pk__tp_cancel_batch(tp, w);
        return;
    }
    while (w->batch_next < w->batch_n) {
        /* Off the count before the push: see pk__tp_lane_submitted. */
        atomic_fetch_sub(&l->st_extra, 1);
        if (pk__tp_push_back(l, &w->batch[w->batch_n - 1]) != 0) {
            atomic_fetch_add(&l->st_extra, 1);
            break;
        }
        w->batch_n--;
        n++;
    }
    /* Each was counted once when first pushed: the push just made counts
     * it again, so count it finished once here (after the push, so that
     * finished never overtakes the pushes). */
    if (n == 0)
        return;
    pk__tp_finish(tp, n);
    /* Pairs with the fence in pk_threadpool_shutdown: either its sweep
     * sees our push, or we see `cancelling` and sweep again. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&tp->cancelling))
        pk__tp_cancel_queued(tp);
    else
        pk__tp_maybe_wake(tp);
}

/* The worker whose stack holds f, or NULL. glock held. */
static struct tp_worker *
runner_of(struct pk_threadpool *tp, pk_future *f)
{
    for (struct tp_worker *r = tp->all_workers; r; r = r->next_all) {
        int d = atomic_load(&r->depth);
        for (int i = 0; i < d; i++)
            if (atomic_load(&r->stack[i]) == f)
                return r;
    }
    return NULL;
}

/* Follows "f runs on R, R waits on g, g runs on ..." back to w: a cycle
 * means f can never finish while w waits. Every future on the chain is
 * unfinished, or the chain is already unwinding. */
static bool
cycle_once(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    bool cycle = false;

    pk__lock_acquire(&tp->glock);
    for (int hops = 0; f && hops < 64; hops++) {
        struct tp_worker *r;
        if (pk__future_done(f))
            break;
        r = runner_of(tp, f);
        if (!r)
            break;
        if (r == w) {
            cycle = true;
            break;
        }
        f = atomic_load(&r->waiting_on);
    }
    pk__lock_release(&tp->glock);
    return cycle;
}

static bool
is_cycle(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    /* The chain is read while others move; a real cycle is stable (all
     * its workers are blocked), so seeing it twice rules out a race. */
    if (!cycle_once(tp, w, f))
        return false;
    sched_yield();
    return cycle_once(tp, w, f);
}

/* Runs one task from the worker's own batch or from the queue, nested on
 * this stack. Returns false if there was none. */
static bool
help_one(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tally n = { 0, 0, 0 };
    struct tp_task t;
    bool counted;
    int lane;

    if (pk__tp_take_next(w, &t)) {
        pk__tp_run_one(tp, &t);
        return true;
    }
    if (w->batch_next < w->batch_n &&
        atomic_load_explicit(&tp->cancelling, memory_order_relaxed)) {
        /* As run_batch: queued in all but place, so cancelled too. */
        pk__tp_cancel_batch(tp, w);
    }
    if (w->batch_next < w->batch_n) {
        t = w->batch[w->batch_next++];
        w->batch_ran++;
        pk__tp_run_task(tp, &t, &n); /* finished with the batch, in run_batch */
        pk__tp_tally_add(tp, &n);
        return true;
    }
    if (pk__tp_pop(tp, w, &t, 1, &lane, &counted)) {
        pk__tp_run_task(tp, &t, &n);
        pk__tp_tally_add(tp, &n);
        pk__tp_lane_leave(tp, w, lane, counted); /* before: see run_batch */
        pk__tp_finish(tp, 1);
        return true;
    }
    /* Another worker's next slot: that worker may be parked waiting too,
     * and nothing else would run it (stress_threadpool). */
    if (pk__tp_steal_next(tp, w, &t)) {
        pk__tp_run_one(tp, &t);
        return true;
    }
    return false;
}

/* A worker that must park while work is queued (it may not help: its
 * stack is full) lets one more worker exist meanwhile, as Java's
 * ForkJoinPool compensates a blocked worker: otherwise every worker could
 * wait on children that sit behind the tasks none of them may run. The
 * extra worker retires when it next goes idle above max. */
static void
compensate(struct pk_threadpool *tp, int delta)
{
    pk__lock_acquire(&tp->rlock);
    tp->comp = delta > 0 ? tp->comp + 1 : tp->comp - 1;
    atomic_store(&tp->ncomp, tp->comp);
    pk__tp_apply_size_locked(tp);
    pk__lock_release(&tp->rlock);
    if (delta > 0)
        pk__tp_wake_one(tp);
}

/* Sets what w is blocked on. Under glock: a cycle check reads other
 * workers' waiting_on and looks into those futures, so one must stay
 * alive (its waiter holds it until this reset) while a check that saw it
 * runs. */
static void
set_waiting_on(struct pk_threadpool *tp, struct tp_worker *w, pk_future *f)
{
    pk__lock_acquire(&tp->glock);
    atomic_store(&w->waiting_on, f);
    pk__lock_release(&tp->glock);
}

/* Runs one task that may help f finish, within the nesting bounds:
 * below PK__TP_NEST tasks on this stack anything; below twice that only
 * next slots (most often the very child awaited). A stand-in runs next
 * slots to PK__TP_STANDIN_NEST: it stands in because no worker could
 * start, and parked it would wait for one that may never come (a chain
 * of tasks each waiting on its child, 40 deep, hung at 32). It runs on
 * a caller thread, never on the thread that makes workers, so past that
 * bound it parks until a worker starts (retried with backoff). */
static bool
help_within_bounds(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tp_task t;

    if (w->nest < PK__TP_NEST)
        return help_one(tp, w);
    if (w->nest < (w->stand_in ? PK__TP_STANDIN_NEST : 2 * PK__TP_NEST) &&
        (pk__tp_take_next(w, &t) || pk__tp_steal_next(tp, w, &t))) {
        pk__tp_run_one(tp, &t);
        return true;
    }
    return false;
}

/* Blocks on fs (until any finished) for up to 10 ms (re-looking for work
 * and cycles then: both can appear without touching them), counted out
 * of `active` and out of its lanes so that a submitter wakes or starts
 * another worker meanwhile. Cycles are looked for when one future is
 * awaited: waiting for any of several, a cycle through one of them is no
 * deadlock while another may finish. Returns PK_EDEADLK, PK_ETIMEDOUT,
 * PK_ENOMEM (wait_any's nodes) or 0. */
struct pk__tp_aside
pk__tp_step_aside(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct pk__tp_aside a;

    a.lanes = pk__tp_lanes_step_out(tp, w);
    a.comp = pk__tp_work_ready(tp); /* next slots too */
    atomic_fetch_sub(&tp->active, 1);
    if (a.comp)
        compensate(tp, 1); /* queued work, and we may not help */
    return a;
}

void
pk__tp_step_back(struct pk_threadpool *tp, struct pk__tp_aside a)
{
    if (a.comp)
        compensate(tp, -1);
    atomic_fetch_add(&tp->active, 1);
    pk__tp_lanes_step_in(tp, a.lanes);
}

static int
block_on(struct pk_threadpool *tp, struct tp_worker *w, pk_future *const *fs,
         size_t n, uint64_t deadline)
{
    struct pk__tp_aside a;
    uint64_t now, until;
    int rc;

    if (n == 1 && is_cycle(tp, w, fs[0]))
        return PK_EDEADLK;
    now = pk__now_ns();
    if (now >= deadline)
        return PK_ETIMEDOUT;
    until = now + 10000000u;
    until = until < deadline ? until : deadline;
    a = pk__tp_step_aside(tp, w);
    rc = n == 1 ? pk__future_wait_until(fs[0], until)
                : pk__future_wait_any_until(fs, n, until);
    pk__tp_step_back(tp, a);
    return rc == PK_ENOMEM ? rc : 0;
}

bool
pk__tp_help_once(struct pk_threadpool *tp, struct tp_worker *w)
{
    return help_within_bounds(tp, w);
}

static bool
any_done(pk_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pk__future_done(fs[i]))
            return true;
    return false;
}

/* The wait helper of a worker or stand-in thread (lib/future_int.h), for
 * pk_future_wait_any: the awaited task may be queued, or in this
 * worker's next slot, where only helping runs it. */
int
pk__tp_help_wait_any(void *ctx, pk_future *const *fs, size_t n,
                     uint64_t deadline)
{
    struct tp_worker *w = ctx;
    struct pk_threadpool *tp = w->tp;
    int rc = pk__tp_validate(tp);

    /* fork() from a task: this thread in the child is no worker, and the
     * queue it would help with is the parent's (its tasks would run
     * twice). */
    if (rc)
        return rc;
    while (rc == 0 && !any_done(fs, n)) {
        if (help_within_bounds(tp, w))
            continue;
        /* Past the bound our batch is others' to run: given back each
         * time round, as the ring may have been full before. */
        if (w->nest >= PK__TP_NEST)
            give_back_batch(tp, w);
        /* Shown to cycle checks only while blocked: while this worker
         * runs a helped task it is not stuck on f, and a chain followed
         * through it would find a cycle that is not there. Not shown
         * while waiting for any of several (see block_on). */
        if (n == 1)
            set_waiting_on(tp, w, fs[0]);
        rc = block_on(tp, w, fs, n, deadline);
        if (n == 1)
            set_waiting_on(tp, w, NULL);
    }
    return rc;
}

/* The wait helper for pk_future_wait and pk_future_wait_all. */
int
pk__tp_help_wait(void *ctx, pk_future *f, uint64_t deadline)
{
    return pk__tp_help_wait_any(ctx, &f, 1, deadline);
}
