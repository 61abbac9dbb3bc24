/* pools/thread/worker.c - the worker threads: their loop, going idle,
 * and helping while a task waits.
 *
 * A worker is a pk_pool resource. An idle worker is an idle resource of
 * the core, parked on its own word; a working one holds its own lease.
 * Whoever hands an idle worker its lease wakes it (tp_give).
 *
 * The wake protocol. Invariant: while a task is queued, some worker will
 * look at the queue, or the pool has asked its timer for a worker (none
 * idle, below max_threads), or none can ever run it (every worker busy
 * at max_threads: the first to finish looks). Two sides keep it:
 *
 *   a submit:  push (seq_cst CAS on the tail)      then load `idle`
 *   a worker:  `idle`++ (seq_cst), release lease   then load the tail
 *
 * In the single order of seq_cst operations one of the two loads comes
 * after the other side's write. If the submit sees `idle` > 0 it takes an
 * idle worker from the core (0 timeout) and wakes it; should the core
 * have none (the worker counted itself before its release), the release
 * comes after that failed acquire under the core's lock, so the worker's
 * load comes after the push and it sees the task. A worker that sees a
 * task after going idle wakes an idle worker (perhaps itself). A worker
 * that was woken runs tasks until the queue stays empty through a short
 * spin, then goes idle again; so a worker never parks while it could
 * have seen a task, and every push after it counted itself idle wakes
 * one. Nothing is polled: there is no periodic look.
 *
 * Workers made idle in the core by anyone but themselves (the core's
 * maintenance topping up min_threads, a resize) are counted `idle` in
 * their create hook, before the core holds them, and idle workers the
 * core retires stay counted until their destroy hook runs: a submit in
 * either window may find none to take. So whoever runs that maintenance
 * or resize looks at the queue afterwards and wakes or asks for a worker
 * (timer.c, threadpool.c).
 *
 * A task that waits (pk_future_wait and friends, through the wait helper
 * installed on each worker thread) runs queued tasks on this stack up to
 * PK_THREADPOOL_NEST_MAX deep. With none to run it parks on wait_park,
 * linked on the futures it waits for; while it could still run a nested
 * task it also counts itself in `helpers` (seq_cst, then it loads the
 * tail), and a submit that sees `helpers` > 0 after its push wakes it:
 * the same pairing as above. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "tp_int.h"

_Thread_local struct tp_worker *pk__tp_self;
_Thread_local unsigned pk__tp_self_epoch;

/* Rounds a worker looks at an empty queue before it goes idle: the first
 * ones pause, the later ones yield (a submitter may share the CPU). */
#define SPINS 200
#define PAUSES 64
/* wait_any keeps this many future nodes on its stack, allocating above. */
#define NODES_ON_STACK 8

static void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static bool
detached(struct tp_worker *w)
{
    bool d;

    if (!atomic_load_explicit(&w->tp->watching, memory_order_relaxed))
        return false;
    pk__lock_acquire(&w->tp->lock);
    d = w->detached;
    pk__lock_release(&w->tp->lock);
    return d;
}

/* Runs a task taken from the queue on w's stack, or cancels it if a
 * CANCEL shutdown began (it swept the queue: this one was queued in all
 * but place). */
static void
run_one(struct pk_threadpool *tp, struct tp_worker *w, struct tp_task *t)
{
    if (atomic_load_explicit(&tp->cancelling, memory_order_relaxed))
        pk__tp_task_cancel(tp, t, &w->tally);
    else
        pk__tp_task_run(tp, w, t, &w->tally);
    if (w->tally.finished >= PK__TP_FLUSH)
        pk__tp_tally_publish(tp, &w->tally);
}

static bool
take(struct pk_threadpool *tp, struct tp_task *t)
{
    if (!tp_ring_pop(&tp->q, t))
        return false;
    tp_after_pop(tp);
    return true;
}

/* A task that called fork() returned on the child's copy of its worker:
 * the pool's other threads do not exist there, and its queue is the
 * parent's (running it would run those tasks twice). The thread ends,
 * and with it the child (it is the child's only thread) with status 0. */
static void
forked_out(void)
{
    pthread_exit(NULL);
}

/* Runs queued tasks until the queue stays empty through a short spin (or
 * w was given up as stuck). The spin looks at the head cell only (a
 * failed pop): the tail is the line every push writes, and polling it
 * would pull it away from the submitter each time. Before it gives up it
 * reads the tail once, for a cell claimed but not filled yet. */
static void
drain(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tp_task t;
    int spins = 0;

    for (;;) {
        if (take(tp, &t)) {
            run_one(tp, w, &t);
            spins = 0;
            if (tp->fork_epoch != pk__fork_epoch_fast())
                forked_out(); /* the task forked, and returned in the child */
            if (detached(w))
                return;
        } else if (++spins < PAUSES) {
            cpu_relax();
        } else if (spins < SPINS && !atomic_load(&tp->closed)) {
            sched_yield();
        } else if (tp_ring_count(&tp->q) > 0) {
            spins = 0; /* a submitter is filling the head cell */
        } else {
            return;
        }
    }
}

#ifdef PK_TESTING
/* Test-only: a delay between counting a worker idle and giving its lease
 * back, to widen the window the wake protocol must cover. */
_Atomic unsigned pk__tp_idle_delay_us;
#include <time.h>
static void
test_delay(void)
{
    unsigned us = atomic_load(&pk__tp_idle_delay_us);

    if (us)
        nanosleep(&(struct timespec){ 0, (long)us * 1000 }, NULL);
}
#else
static void
test_delay(void)
{
}
#endif

/* Gives the worker's lease back (the top comment's worker side). Returns
 * false if the worker must exit: the core retired it on this thread. */
static bool
go_idle(struct pk_threadpool *tp, struct tp_worker *w)
{
    pk_lease l = w->lease;

    pk__tp_tally_publish(tp, &w->tally);
    atomic_fetch_add(&tp->idle, 1);
    test_delay();
    pk_pool_release(tp->workers, &l, PK_RELEASE_OK);
    if (tp_ring_count(&tp->q) > 0)
        tp_wake_worker(tp);
    return !w->self_exit;
}

/* ---- helping while a task waits ----------------------------------------- */

bool
pk__tp_help_once(struct pk_threadpool *tp, struct tp_worker *w)
{
    struct tp_task t;

    if (w->nest >= PK__TP_STACK || !take(tp, &t))
        return false;
    run_one(tp, w, &t);
    return true;
}

/* Runs one of the awaited tasks here if it has not started (it is then
 * done when this returns true). A parent waiting on its children runs
 * them on its own stack, so the stack grows as deep as the children nest
 * and no deeper. */
static bool
run_awaited(struct pk_threadpool *tp, struct tp_worker *w,
            pk_future *const *fs, size_t n)
{
    if (w->nest >= PK__TP_STACK)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (pk__tp_task_inline(tp, w, fs[i], &w->tally))
            return true;
    }
    return false;
}

/* A task waiting on f, when f is a task on this worker's stack (its own,
 * or one it is nested in), waits for itself. */
static bool
on_stack(const struct tp_worker *w, const pk_future *f)
{
    for (int i = 0; i < w->nest && i < PK__TP_STACK; i++)
        if (w->stack[i] == f)
            return true;
    return false;
}

static bool
any_done(pk_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pk__future_done(fs[i]))
            return true;
    return false;
}

static void
set_helping(struct pk_threadpool *tp, struct tp_worker *w, bool on)
{
    pk__lock_acquire(&tp->lock);
    w->helping = on;
    pk__lock_release(&tp->lock);
    if (on)
        atomic_fetch_add(&tp->helpers, 1);
    else
        atomic_fetch_sub(&tp->helpers, 1);
}

/* Parks until one of fs finishes, deadline passes, or (while w may still
 * run a nested task) a task is queued. Returns 0 or PK_ETIMEDOUT. */
static int
park(struct pk_threadpool *tp, struct tp_worker *w, pk_future *const *fs,
     size_t n, struct pk__future_node *nodes, uint64_t deadline)
{
    bool help = w->nest < PK__TP_STACK;
    size_t linked = 0;
    int rc = 0;

    atomic_store(&w->wait_park.word, 0);
    while (linked < n &&
           pk__future_listen(fs[linked], &nodes[linked], &w->wait_park) == 0)
        linked++;
    if (linked == n) {
        pk__tp_tally_publish(tp, &w->tally); /* what ran here meanwhile */
        if (help)
            set_helping(tp, w, true);
        if (!(help && tp_ring_count(&tp->q) > 0) &&
            pk__park(&w->wait_park, deadline) == 0)
            rc = PK_ETIMEDOUT;
        if (help)
            set_helping(tp, w, false);
    }
    while (linked > 0) {
        linked--;
        pk__future_unlisten(fs[linked], &nodes[linked]);
    }
    return rc;
}

static int
help_wait_any(void *ctx, pk_future *const *fs, size_t n, uint64_t deadline)
{
    struct tp_worker *w = ctx;
    struct pk_threadpool *tp = w->tp;
    struct pk__future_node stack_nodes[NODES_ON_STACK], *nodes = stack_nodes;
    int rc = 0;

    if (n == 1 && on_stack(w, fs[0]))
        return PK_EDEADLK;
    if (n > NODES_ON_STACK) {
        nodes = pk__alloc(n * sizeof *nodes);
        if (!nodes)
            return PK_ENOMEM;
    }
    while (!any_done(fs, n)) {
        /* Checked between the tasks run here, which may be long. */
        if (deadline != UINT64_MAX && pk__now_ns() >= deadline) {
            rc = PK_ETIMEDOUT;
            break;
        }
        if (run_awaited(tp, w, fs, n) || pk__tp_help_once(tp, w))
            continue;
        if (park(tp, w, fs, n, nodes, deadline) != 0 && !any_done(fs, n)) {
            rc = PK_ETIMEDOUT;
            break;
        }
    }
    if (nodes != stack_nodes)
        pk__free(nodes);
    return rc;
}

static int
help_wait(void *ctx, pk_future *f, uint64_t deadline)
{
    return help_wait_any(ctx, &f, 1, deadline);
}

/* ---- the thread ------------------------------------------------------- */

static void
enter_pool(struct pk_threadpool *tp, struct tp_worker *w)
{
    pk__tp_self = w;
    pk__tp_self_epoch = pk__fork_epoch_fast();
    w->helper.fn = help_wait;
    w->helper.any = help_wait_any;
    w->helper.ctx = w;
    pk__future_set_wait_helper(&w->helper);
    pk__lock_acquire(&tp->lock);
    pk__dlist_push_head(&tp->all, &w->node);
    pk__lock_release(&tp->lock);
}

static void
leave_pool(struct pk_threadpool *tp, struct tp_worker *w)
{
    pk__lock_acquire(&tp->lock);
    pk__dlist_remove(&tp->all, &w->node);
    pk__lock_release(&tp->lock);
    pk__future_set_wait_helper(NULL);
    pk__tp_self = NULL;
}

/* The last the thread does. A worker retired on its own thread, or given
 * up as stuck, has nobody to join it: it frees itself. Its count goes
 * down under tp->lock, which destroy takes before it frees the pool, so
 * this is the pool's last use by the thread (the lock's own futex wake
 * may touch its address after: harmless, sync.h). */
static void
exit_thread(struct pk_threadpool *tp, struct tp_worker *w, bool given_up)
{
    if (w->self_exit || given_up) {
        pthread_detach(pthread_self());
        pk__free(w);
    }
    pk__lock_acquire(&tp->lock);
    if (given_up)
        atomic_fetch_sub(&tp->detached_alive, 1);
    else
        atomic_fetch_sub(&tp->threads, 1);
    pk__cv_broadcast(&tp->exited);
    pk__lock_release(&tp->lock);
}

static void *
worker_main(void *arg)
{
    struct tp_worker *w = arg;
    struct pk_threadpool *tp = w->tp;
    bool given_up = false;

    pthread_setname_np(pthread_self(), "pk-worker");
    /* The hooks run outside the pool: a wait in them runs no task. */
    if (tp->worker_init)
        tp->worker_init(tp->user);
    enter_pool(tp, w);
    for (;;) {
        uint32_t v = pk__park(&w->park, UINT64_MAX);
        atomic_store(&w->park.word, 0);
        if (v == TP_STOP)
            break;
        drain(tp, w);
        if (detached(w)) {
            pk__tp_tally_publish(tp, &w->tally);
            given_up = true;
            break;
        }
        if (!go_idle(tp, w))
            break;
    }
    leave_pool(tp, w);
    if (tp->worker_exit)
        tp->worker_exit(tp->user);
    exit_thread(tp, w, given_up);
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
    atomic_fetch_add(&tp->threads, 1);
    atomic_fetch_add(&tp->idle, 1); /* until someone gives it its lease */
    rc = pk__thread_create(&w->thread, worker_main, w);
    if (rc) {
        atomic_fetch_sub(&tp->idle, 1);
        atomic_fetch_sub(&tp->threads, 1);
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, rc, "pthread_create: %s",
                            strerror(rc));
    }
    *res = w;
    return 0;
}

void
pk__tp_worker_destroy(void *user, void *res)
{
    struct pk_threadpool *tp = user;
    struct tp_worker *w = res;

    atomic_fetch_sub(&tp->idle, 1);
    if (pthread_equal(w->thread, pthread_self())) {
        w->self_exit = true; /* retired on its own release: go_idle */
        return;
    }
    pk__park_wake(&w->park, TP_STOP);
    pthread_join(w->thread, NULL);
    pk__free(w);
}
