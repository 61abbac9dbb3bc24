/* pools/thread/worker.c - worker threads: running tasks, the workers'
 * loop, stand-ins on caller threads, and waking (starting workers, and
 * retrying when that fails). Helping while waiting on a future of the
 * same pool is in wait.c. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <linux/membarrier.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc.h"
#include "tp_int.h"

_Thread_local struct tp_worker *pk__tp_self;

/* Drops a task that was not started in time. */
static void
expire(struct pk_threadpool *tp, struct tp_task *t)
{
    atomic_fetch_add_explicit(&tp->st_expired, 1, memory_order_relaxed);
    if (t->fut) {
        pk_future_fail(t->fut, PK_ETIMEDOUT, 0,
                       "not started within %u ms", t->start_within_ms);
    } else if (tp->event) {
        pk_error e;
        pk_event ev = { PK_EVENT_FUTURE_UNREAD, NULL, NULL, 0, 0, &e };
        pk_error_set(&e, PK_ETIMEDOUT, 0, "not started within %u ms",
                     t->start_within_ms);
        tp->event(tp->event_user, &ev);
    }
}

/* What the watchdog sees of a worker's running task (tp_worker's cur_*
 * fields). */
struct watched {
    uint64_t start, limit_ns;
    pk_future *fut;
    bool flagged, slow, stuck;
};

/* Shows `now` to the watchdog as w's running task; *was gets what it
 * showed before: a task run nested while its outer task waits (wait.c)
 * hides the outer one only until it returns (restore). */
static void
show(struct pk_threadpool *tp, struct tp_worker *w, const struct watched *now,
     struct watched *was)
{
    pk__lock_acquire(&tp->glock);
    if (was)
        *was = (struct watched){ w->cur_start, w->cur_limit_ns, w->cur_fut,
                                 w->cur_flagged, w->cur_slow, w->cur_stuck };
    w->cur_start = now->start;
    w->cur_limit_ns = now->limit_ns;
    w->cur_fut = now->fut;
    w->cur_flagged = now->flagged;
    w->cur_slow = now->slow;
    w->cur_stuck = now->stuck;
    pk__lock_release(&tp->glock);
}

/* Shows the task t, started at `start`, saving what was shown in *was. */
static void
publish(struct pk_threadpool *tp, struct tp_worker *w, uint64_t start,
        const struct tp_task *t, struct watched *was)
{
    struct watched now = { start, (uint64_t)t->run_limit_ms * 1000000u,
                           t->fut, false, false, false };

    show(tp, w, &now, was);
}

/* Helping stops at twice PK__TP_NEST, but caller-runs submits from a
 * task nest without bound: those past the stack's end are not recorded
 * (*d = -1), so cycle checks cannot see them. */
static void
push_stack(struct tp_worker *w, pk_future *f, int *d)
{
    *d = atomic_load_explicit(&w->depth, memory_order_relaxed);
    if (*d >= (int)(sizeof w->stack / sizeof w->stack[0])) {
        *d = -1;
        return;
    }
    /* Release, not seq_cst: a cycle check only needs to see the entry
     * whole, and two locked stores per task cost more than the rest of
     * the bookkeeping. */
    atomic_store_explicit(&w->stack[*d], f, memory_order_release);
    atomic_store_explicit(&w->depth, *d + 1, memory_order_release);
}

static void
pop_stack(struct tp_worker *w, int d)
{
    if (d < 0)
        return;
    atomic_store_explicit(&w->depth, d, memory_order_release);
    atomic_store_explicit(&w->stack[d], NULL, memory_order_release);
}

static void
count(struct tally *n, int rc)
{
    if (rc == 0)
        n->completed++;
    else if (rc == PK_ECANCELED)
        n->cancelled++;
    else
        n->failed++;
}

void
pk__tp_run_task(struct pk_threadpool *tp, struct tp_task *t, struct tally *n)
{
    struct tp_worker *w = pk__tp_self && pk__tp_self->tp == tp ? pk__tp_self
                                                                : NULL;
    bool watch = w && (t->run_limit_ms || atomic_load_explicit(
                                              &tp->watch,
                                              memory_order_relaxed));
    uint64_t t0 = (t->enq_ns || watch) ? pk__now_ns() : 0;
    struct watched outer;
    int d = 0, rc;
    pk_task task;

    if (t->enq_ns) {
        pk__hist_add(&tp->wait_hist, t0 - t->enq_ns);
        if (t->start_within_ms &&
            t0 - t->enq_ns > (uint64_t)t->start_within_ms * 1000000u) {
            expire(tp, t);
            n->failed++; /* its future failed: expired is part of failed */
            goto out;
        }
    }
    if (watch)
        publish(tp, w, t0, t, &outer);
    if (w) {
        w->nest++;
        if (t->fut)
            push_stack(w, t->fut, &d);
    }
    tp_task_get(t, &task);
    rc = pk_task_run(&task, tp->registry, t->fut, tp->event,
                     tp->event_user);
    if (w) {
        w->nest--;
        if (t->fut)
            pop_stack(w, d);
    }
    if (watch)
        show(tp, w, &outer, NULL); /* the outer task's, or nothing */
    if (t->enq_ns)
        pk__hist_add(&tp->run_hist, pk__now_ns() - t0);
    count(n, rc);
out:
    pk_future_release(t->fut);
    pk__free(tp_task_copy(t));
}

void
pk__tp_tally_add(struct pk_threadpool *tp, const struct tally *n)
{
    if (n->completed)
        atomic_fetch_add_explicit(&tp->st_completed, n->completed,
                                  memory_order_relaxed);
    if (n->cancelled)
        atomic_fetch_add_explicit(&tp->st_cancelled, n->cancelled,
                                  memory_order_relaxed);
    if (n->failed)
        atomic_fetch_add_explicit(&tp->st_failed, n->failed,
                                  memory_order_relaxed);
}

/* ---- workers ---------------------------------------------------------- */

/* Takes tasks into the worker's batch (pk__tp_pop says how many).
 * Returns how many. */
static size_t
pop_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    size_t n = pk__tp_pop(tp, w, w->batch, PK__TP_BATCH, &w->batch_lane,
                          &w->batch_counted);

    w->batch_next = 0;
    w->batch_n = n;
    return n;
}

/* Runs one task taken from a next slot or the queue, counted finished. */
void
pk__tp_run_one(struct pk_threadpool *tp, struct tp_task *t)
{
    struct tally n = { 0, 0, 0 };

    pk__tp_run_task(tp, t, &n);
    pk__tp_tally_add(tp, &n);
    pk__tp_finish(tp, 1);
}

/* Runs the rest of the worker's batch (a nested wait may run some). */
static void
run_batch(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tally n = { 0, 0, 0 };

    w->batch_ran = 0;
    while (w->batch_next < w->batch_n) {
        if (atomic_load_explicit(&tp->cancelling, memory_order_relaxed)) {
            /* A cancelling shutdown swept the queue: the rest of the
             * batch was queued in all but place, so it is cancelled too,
             * whatever this worker's depth (wait.c gives it back). */
            pk__tp_cancel_batch(tp, w);
            break;
        }
        struct tp_task t = w->batch[w->batch_next++];
        w->batch_ran++;
        pk__tp_run_task(tp, &t, &n);
    }
    pk__tp_tally_add(tp, &n);
    /* The lane's place first: finishing may wake a shutdown, which must
     * find the lane's counts settled (stats read then). */
    pk__tp_lane_leave(tp, w, w->batch_lane, w->batch_counted);
    pk__tp_finish(tp, w->batch_ran);
}

/* Waits for work, briefly; false if none came (or the pool closed: no
 * submit can come then, a give-back wakes a worker itself, and a spin
 * would only delay the shutdown this worker may just have woken, on a
 * CPU it may share with it). The first spinner pauses (work often
 * follows at once), then yields. Another spinner yields from the start:
 * one is enough to see the next push (pk__tp_maybe_wake wakes nobody
 * while one spins), and a second would spin against a submitter that
 * shares its core. */
static bool
spin(struct pk_threadpool *tp, int *rounds)
{
    bool first, found = true;

    first = atomic_fetch_add(&tp->spinning, 1) == 0;
    atomic_thread_fence(memory_order_seq_cst);
    while (!pk__tp_work_seen(tp)) {
        if (++*rounds > PK__TP_SPINS || atomic_load(&tp->closed)) {
            found = false;
            break;
        }
        if (first && *rounds < 64) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
    atomic_fetch_sub(&tp->spinning, 1);
    return found;
}

/* A spinner that found work took one task (or batch); submits that saw
 * it spinning woke nobody, counting on it, so if more is queued it
 * passes the wake on (as Go's spinning M does) before it runs what it
 * took, which may block: several tasks pushed during one spin would
 * otherwise wait for a running task to end. The look is at the head
 * cells, which the next pop reads anyway. */
static void
pass_on(struct pk_threadpool *tp, bool spun)
{
    if (spun && pk__tp_work_seen(tp))
        pk__tp_maybe_wake(tp);
}

/* Runs one task or batch if there is one; false if there was none.
 * spun: the worker found it by spinning (pass_on). */
static bool
run_some(struct pk_threadpool *tp, struct tp_worker *w, bool spun)
{
    struct tp_task t;

    if (pk__tp_take_next(w, &t)) {
        pass_on(tp, spun);
        pk__tp_run_one(tp, &t);
        return true;
    }
    if (pop_batch(tp, w)) {
        pass_on(tp, spun);
        run_batch(tp, w);
        return true;
    }
    if (pk__tp_steal_next(tp, w, &t)) {
        pass_on(tp, spun);
        pk__tp_run_one(tp, &t);
        return true;
    }
    return false;
}

/* Runs queued tasks until the queue stays empty through a short spin. */
static void
drain(struct pk_threadpool *tp, struct tp_worker *w)
{
    int rounds = 0;
    bool spun = false;

    for (;;) {
        if (atomic_load_explicit(&w->detached, memory_order_relaxed))
            return; /* given up as stuck: the pool has a replacement */
        if (run_some(tp, w, spun)) {
            rounds = 0;
            spun = false;
        } else if (atomic_load(&tp->closed) || !spin(tp, &rounds)) {
            return;
        } else {
            spun = true;
        }
    }
}

/* Gives the worker's lease back; returns false if the worker must exit
 * (the pool retired it on this very thread). */
static bool
go_idle(struct tp_worker *w)
{
    struct pk_threadpool *tp = w->tp;
    pk_lease l = w->lease;

    pk_pool_release(tp->workers, &l, PK_RELEASE_OK);
    if (atomic_load(&w->self_exit))
        return false;
    /* Work that arrived while we left: make sure someone runs it. */
    if (pk__tp_work_ready(tp))
        pk__tp_wake_one(tp);
    return true;
}

/* Makes this thread run tp's tasks as w: w is its pool worker (tasks it
 * runs go on w's stack and next slot), its wait helper, and in the list
 * that cycle checks and next-slot steals read. Returns the helper it
 * replaced. */
static const struct pk__wait_helper *
enter_pool(struct pk_threadpool *tp, struct tp_worker *w)
{
    pk__tp_self = w;
    w->helper.fn = pk__tp_help_wait;
    w->helper.any = pk__tp_help_wait_any;
    w->helper.ctx = w;
    pk__lock_acquire(&tp->glock);
    w->next_all = tp->all_workers;
    tp->all_workers = w;
    pk__lock_release(&tp->glock);
    return pk__future_set_wait_helper(&w->helper);
}

static void
leave_pool(struct pk_threadpool *tp, struct tp_worker *w,
           struct tp_worker *outer, const struct pk__wait_helper *helper)
{
    pk__lock_acquire(&tp->glock);
    for (struct tp_worker **pp = &tp->all_workers; *pp;
         pp = &(*pp)->next_all) {
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    }
    pk__lock_release(&tp->glock);
    pk__future_set_wait_helper(helper);
    pk__tp_self = outer;
}

/* The fork epoch (+1) whose process registered for membarrier: a child
 * must register anew. Process-wide, written once per epoch, so a global
 * (like sync.c's epoch itself). */
static _Atomic unsigned mb_registered;

bool
pk__tp_asym_init(void)
{
    unsigned e = pk__fork_epoch() + 1;

    if (atomic_load(&mb_registered) == e)
        return true;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0, 0) != 0)
        return false;
    atomic_store(&mb_registered, e);
    return true;
}

/* The other half of pk__tp_wake_after_push: a full barrier on every
 * running thread of the process, so a submitter's push is visible here
 * or our store is visible to its next look. Should membarrier ever fail,
 * submitters go back to fencing themselves; the pushes of the moment are
 * long visible by the time this worker takes its second look (go_idle). */
static void
heavy_fence(struct pk_threadpool *tp)
{
    if (atomic_load_explicit(&tp->asym, memory_order_relaxed) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    atomic_store(&tp->asym, false);
    atomic_thread_fence(memory_order_seq_cst);
}

/* Counts a retired worker out of `alive` once its worker_exit hook has
 * run, so that stats.threads reaching 0 means every hook has. A push
 * meanwhile saw it counted and may have started no other worker: look
 * again for one. */
static void
counted_out(struct pk_threadpool *tp)
{
    atomic_fetch_sub(&tp->alive, 1);
    if (pk__tp_work_ready(tp))
        pk__tp_wake_one(tp);
}

/* A retired worker is no longer counted serving (pk__tp_worker_destroy).
 * A submit that still saw it serving started no worker and did not stand
 * in: past the fence that its push pairs with, either we see that push
 * here, or it sees us gone and stands in itself. Retired on our own
 * release, we run it; retired by the core's helper thread, which waits
 * to join us and is the thread that starts workers, we must not block on
 * a task here: a new worker is asked for instead (the one gap left: if
 * that start fails and the watchdog cannot start to retry it, the task
 * waits for the next submit, wait in the pool, or DRAIN). */
static void
last_look(struct pk_threadpool *tp, struct tp_worker *w)
{
    heavy_fence(tp);
    if (!pk__tp_work_ready(tp))
        return;
    if (!atomic_load(&w->self_exit)) {
        pk__tp_wake_one(tp);
        return;
    }
    atomic_fetch_add(&tp->active, 1);
    drain(tp, w);
    atomic_fetch_sub(&tp->active, 1);
}

/* How often a parked idle worker looks at the queue. */
#define IDLE_LOOK_NS 100000000u

/* Parks an idle worker until it is given work (1) or told to exit (2),
 * looking at the queue every IDLE_LOOK_NS meanwhile: a task that waits
 * with a worker idle is started within that, not left for the next
 * submit. Every wake path is meant to make that impossible, but a lost
 * wake was seen twice on a loaded machine (test_threadpool_life: 3 of 4
 * tasks started after 10 s, 4 workers alive) and not found; this bounds
 * it. Ten looks a second cost an idle pool nothing measurable. */
static uint32_t
idle_park(struct pk_threadpool *tp, struct tp_worker *w)
{
    for (;;) {
        uint32_t v = pk__park(&w->park, pk__now_ns() + IDLE_LOOK_NS);
        uint32_t sleeping = PK__PARK_SLEEPING;

        if (v)
            return v;
        /* Timed out: the word says SLEEPING, unless a wake came since. */
        if (!atomic_compare_exchange_strong(&w->park.word, &sleeping, 0))
            return sleeping;
        if (pk__tp_work_ready(tp))
            pk__tp_wake_one(tp);
    }
}

static void *
worker_main(void *arg)
{
    struct tp_worker *w = arg;
    struct pk_threadpool *tp = w->tp;

    pthread_setname_np(pthread_self(), "pk-worker");
    /* The hooks run outside the pool: a wait in them must not run tasks
     * on a worker that is not counted active yet (or any more). */
    if (tp->worker_init)
        tp->worker_init(tp->user);
    (void)enter_pool(tp, w);
    for (;;) {
        uint32_t v = idle_park(tp, w);
        if (v == 2)
            break;
        atomic_store(&w->park.word, 0);
        for (;;) {
            drain(tp, w);
            if (atomic_load(&w->detached)) {
                struct tp_task t;
                while (pk__tp_take_next(w, &t)) /* ours: run before leaving */
                    pk__tp_run_one(tp, &t);
                atomic_fetch_sub(&tp->active, 1);
                goto out;
            }
            atomic_fetch_sub(&tp->active, 1);
            heavy_fence(tp); /* see pk__tp_wake_after_push */
            if (!pk__tp_work_ready(tp))
                break;
            atomic_fetch_add(&tp->active, 1);
        }
        if (!go_idle(w))
            break;
    }
    last_look(tp, w);
out:
    leave_pool(tp, w, NULL, NULL);
    if (tp->worker_exit)
        tp->worker_exit(tp->user);
    if (atomic_load(&w->self_exit))
        counted_out(tp);
    if (atomic_load(&w->self_exit) || atomic_load(&w->detached)) {
        /* Nobody joins us: the pool retired us on our own thread, or
         * forgot us as stuck. destroy waits on `threads` instead. */
        pthread_detach(pthread_self());
        pk__free(w);
    }
    /* pk_threadpool_destroy waits for this, so no hook runs after it. */
    pk__lock_acquire(&tp->qlock);
    atomic_fetch_sub(&tp->threads, 1);
    pk__lock_release(&tp->qlock);
    pk__cv_broadcast(&tp->exited);
    pk__tp_unref(tp);
    return NULL;
}

int
pk__tp_worker_create(void *user, void **res, pk_error *err)
{
    struct pk_threadpool *tp = user;
    struct tp_worker *w = pk__calloc(1, sizeof *w);
    int rc;

    if (!w)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "no memory for a worker");
    w->tp = tp;
    atomic_fetch_add(&tp->refs, 1);
    atomic_fetch_add(&tp->threads, 1);
    rc = pk__thread_create(&w->thread, worker_main, w);
    if (rc) {
        atomic_fetch_sub(&tp->threads, 1);
        atomic_fetch_sub(&tp->refs, 1);
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, rc, "pthread_create: %s",
                            strerror(rc));
    }
    atomic_fetch_add(&tp->alive, 1);
    atomic_fetch_add(&tp->serving, 1);
    *res = w;
    return 0;
}

void
pk__tp_worker_destroy(void *user, void *res)
{
    struct pk_threadpool *tp = user;
    struct tp_worker *w = res;

    /* Before the worker learns it: its last look (worker_main) must come
     * after this. */
    atomic_fetch_sub(&tp->serving, 1);
    if (pthread_equal(w->thread, pthread_self())) {
        /* Retired on its own release (the pool closed or shrank while it
         * ran): it exits and frees itself. */
        atomic_store(&w->self_exit, true);
        return;
    }
    pk__park_wake(&w->park, 2);
    pthread_join(w->thread, NULL);
    pk__free(w);
    counted_out(tp);
}


/* ---- waking ----------------------------------------------------------- */

static void
give(struct pk_threadpool *tp, pk_lease *l)
{
    struct tp_worker *w = l->resource;

    w->lease = *l;
    atomic_fetch_add(&tp->active, 1);
    pk__park_wake(&w->park, 1);
}

/* When no worker exists and none can be started (thread creation or
 * memory failed), a caller thread runs what is queued, so a task whose
 * submit returned 0 is never stranded. It does so as a stand-in worker
 * of its own stack: a task that waits on a child then helps run it,
 * where blocking would leave nobody to. Never on the core's helper
 * thread: that thread makes the workers, and a stand-in there blocked
 * at its nesting bound would wait for a worker only it could make. */
static void
run_queued_here(struct pk_threadpool *tp)
{
    struct tp_worker *outer = pk__tp_self;
    const struct pk__wait_helper *helper;
    struct tp_worker me;
    struct tp_task t;

    if ((outer && outer->tp == tp) || atomic_load(&tp->serving) != 0)
        return; /* a worker of tp runs the queue anyway */
    memset(&me, 0, sizeof me);
    me.tp = tp;
    me.stand_in = true;
    helper = enter_pool(tp, &me);
    atomic_fetch_add(&tp->active, 1);
    for (;;) {
        if (pk__tp_take_next(&me, &t))
            pk__tp_run_one(tp, &t); /* submitted by a task that ran here */
        else if (atomic_load(&tp->serving) == 0 && pop_batch(tp, &me))
            run_batch(tp, &me);
        else
            break;
    }
    atomic_fetch_sub(&tp->active, 1);
    leave_pool(tp, &me, outer, helper);
}

/* Waits (a bounded while) for the try to start a worker that is under
 * way, if any: whether one came decides if the caller must stand in. */
static void
wait_for_growth(struct pk_threadpool *tp)
{
    uint64_t until = pk__now_ns() + PK__TP_GROW_WAIT_NS;

    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->grown);
        if (!atomic_load(&tp->growing) || atomic_load(&tp->serving) != 0) {
            pk__cv_cancel(&tp->grown);
            return;
        }
        if (pk__cv_wait_slice(&tp->grown, seq, until, 1000000u))
            return;
    }
}

/* A caller (a submit that found no worker alive, a draining shutdown)
 * makes sure the queue is run: by the worker being started if it comes,
 * else here, before the caller returns. */
void
pk__tp_standin_if_starved(struct pk_threadpool *tp)
{
    if (pk__tp_self && pk__tp_self->tp == tp)
        return; /* a stand-in of tp (the caller's task ran on it) */
    wait_for_growth(tp);
    if (pk__tp_work_ready(tp))
        run_queued_here(tp);
}

/* A try to start a worker failed: no new try before a backoff (1 ms,
 * doubling to 100 ms) has passed, as the core would refuse it anyway;
 * the watchdog makes it then if work is still queued. Until then
 * submitters that find no worker run the queue themselves. */
static void
growth_failed(struct pk_threadpool *tp)
{
    uint64_t d = atomic_load(&tp->retry_ns);

    d = d == 0 ? PK__TP_RETRY_MIN_NS : d * 2;
    if (d > PK__TP_RETRY_MAX_NS)
        d = PK__TP_RETRY_MAX_NS;
    atomic_store(&tp->retry_ns, d);
    atomic_store(&tp->retry_at, pk__now_ns() + d);
    atomic_store(&tp->create_failed, true);
    if (pk__tp_work_ready(tp))
        pk__tp_wd_arm_retry(tp);
}

/* The end of a try to start a worker (rc: its outcome). Callers waiting
 * for it (wait_for_growth) look again. */
static void
growth_ended(struct pk_threadpool *tp, int rc)
{
    if (rc == 0 && atomic_load(&tp->create_failed)) {
        atomic_store(&tp->create_failed, false);
        atomic_store(&tp->retry_armed, false);
        atomic_store(&tp->retry_ns, 0);
    } else if (rc != 0 && rc != PK_ESHUTDOWN) {
        growth_failed(tp);
    }
    atomic_store(&tp->growing, false);
    pk__cv_broadcast(&tp->grown);
}

/* The callback of the async ticket: on the core's helper thread, or on
 * a thread that released the core's lock. It runs no task. */
static void
on_new_worker(void *arg, pk_pool_ticket *t)
{
    struct pk_threadpool *tp = arg;
    pk_lease l;
    int rc = pk_pool_ticket_take(t, &l, NULL);

    if (rc == 0)
        give(tp, &l);
    growth_ended(tp, rc);
    /* Pushes that came while this worker was being made found `growing`
     * set and did not start another: look again for them. Not after a
     * failure: the next try waits for its backoff. */
    if (rc == 0 || rc == PK_ESHUTDOWN)
        pk__tp_maybe_wake(tp);
}

/* False while the backoff after a failed start lasts: then the watchdog
 * is armed to try again when it ends. */
static bool
may_try_growth(struct pk_threadpool *tp)
{
    if (!atomic_load_explicit(&tp->create_failed, memory_order_relaxed) ||
        pk__now_ns() >= atomic_load(&tp->retry_at))
        return true;
    if (!atomic_exchange(&tp->retry_armed, true))
        pk__tp_wd_arm_retry(tp);
    return false;
}

void
pk__tp_wake_one(struct pk_threadpool *tp)
{
    pk_pool_ticket *t;
    pk_lease l;
    int ready = 0, rc;

    if (pk_pool_acquire(tp->workers, &l, 0, NULL) == 0) {
        give(tp, &l);
        return;
    }
    if (atomic_load(&tp->serving) >=
            atomic_load(&tp->max_threads) + atomic_load(&tp->ncomp) ||
        !may_try_growth(tp) || atomic_exchange(&tp->growing, true))
        return;
    rc = pk_pool_acquire_async(tp->workers, &t, PK_WAIT_FOREVER,
                               on_new_worker, tp, &ready);
    if (rc != 0) {
        growth_ended(tp, rc); /* callers find no worker: they stand in */
        return;
    }
    if (ready)
        on_new_worker(tp, t);
}

/* After a push: makes sure a worker will take the task. A spinning
 * worker will; otherwise, if not every worker is busy, an idle one is
 * woken or a new one started (before anything waits: a new worker
 * starts whenever the pool is below max and none is free). The caller
 * fenced: either we see a worker still counted, or its last look before
 * it parks (worker_main) sees our push. */
static void
wake_if_needed(struct pk_threadpool *tp)
{
    /* `active` first: under load every worker is active, and that line
     * stays put, while `spinning` changes each time a worker finds the
     * queue empty. */
    if (atomic_load_explicit(&tp->active, memory_order_relaxed) >=
        atomic_load_explicit(&tp->max_threads, memory_order_relaxed))
        return; /* all busy: the next to finish takes it */
    if (atomic_load_explicit(&tp->spinning, memory_order_relaxed) > 0)
        return;
    if (pk__tp_work_ready(tp))
        pk__tp_wake_one(tp);
}

void
pk__tp_maybe_wake(struct pk_threadpool *tp)
{
    atomic_thread_fence(memory_order_seq_cst);
    wake_if_needed(tp);
}

/* pk__tp_maybe_wake for a submit. Its fence would wait for the task's
 * cell to reach this core (the worker that emptied the cell last has
 * it): most of a submit's cost. With membarrier the worker side pays
 * instead, and only when it is about to park (heavy_fence); a spinner
 * needs nothing, since it polls until its last look before parking. A
 * capped lane keeps the fence: pk__tp_lane_leave pairs with it. */
void
pk__tp_wake_after_push(struct pk_threadpool *tp, struct tp_lane *l)
{
    if (atomic_load_explicit(&tp->asym, memory_order_relaxed) &&
        !atomic_load_explicit(&l->max_workers, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
    wake_if_needed(tp);
}

