/* pools/thread/tp_int.h - the thread pool's data, shared by its files.
 * A call goes down this list and never back up:
 *
 *   threadpool.c  the public calls: create, submit, resize, shutdown,
 *                 stats, the executor view
 *   timer.c       the pool's one background thread: starts workers,
 *                 retires idle ones (pk_pool_maintain), watches slow and
 *                 stuck tasks and run limits
 *   worker.c      the worker threads: their loop, going idle, helping
 *                 while a task waits
 *   task.c        one task record: made at submit, run or cancelled
 *
 * The small wake helpers at the end of this header are the protocol
 * every file keeps; worker.c's top comment states it. Not installed. */
#ifndef PK_POOLS_THREAD_TP_INT_H
#define PK_POOLS_THREAD_TP_INT_H

#include <poolkit/threadpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "executor_int.h"
#include "ring.h"

#define PK__TP_MAGIC 0x74706f6fu
/* The largest queue_size: its ring is made at once. */
#define PK__TP_QUEUE_MAX ((size_t)1 << 30)
/* A worker publishes its counts at least this often (tasks). */
#define PK__TP_FLUSH 64
/* Tasks on one worker's stack: the one it took, and those it runs
 * nested while that one waits. */
#define PK__TP_STACK (PK_THREADPOOL_NEST_MAX + 1)
/* The watchdog's period while run limits are watched. */
#define PK__TP_WATCH_NS 5000000u

/* Park values of tp_worker.park. */
enum { TP_GIVEN = 1, TP_STOP = 2 };

/* Outcome counts, kept by a worker and published in one go. */
struct tp_tally {
    uint64_t completed, failed, cancelled, expired;
    uint64_t finished; /* tasks taken from the queue and settled */
};

/* What the watchdog sees of one task on a worker's stack (tp->lock). */
struct tp_watch {
    uint64_t start;      /* 0: no task at this depth */
    uint64_t limit_ns;   /* run limit, 0 none */
    pk_future *fut;
    bool flagged, slow;
};

struct tp_worker {
    struct pk_threadpool *tp;
    pthread_t thread;
    pk__parker park;        /* idle: TP_GIVEN or TP_STOP */
    pk_lease lease;         /* written by the giver before the wake */
    /* Owner only. */
    bool self_exit;         /* retired on its own release: exit, free self */
    int nest;               /* tasks on this thread's stack */
    pk_future *stack[PK__TP_STACK]; /* their futures (PK_EDEADLK check) */
    struct tp_tally tally;  /* not yet published */
    struct pk__wait_helper helper;
    /* Waiting inside a task: woken by the future, or by a push while
     * `helping` (tp->lock) says a queued task could run here. */
    pk__parker wait_park;
    bool helping;           /* tp->lock */
    /* tp->lock. */
    bool detached;          /* given up as stuck */
    struct tp_watch watch[PK__TP_STACK];
    struct pk__dnode node;  /* in tp->all */
};

struct pk_threadpool {
    unsigned magic;
    unsigned fork_epoch;
    pk_pool *workers;
    struct tp_ring q;
    /* Immutable after create. */
    pk_registry *registry;
    pk_event_fn event;
    void *event_user;
    void (*worker_init)(void *);
    void (*worker_exit)(void *);
    void *user;
    int full_policy;
    int submit_timeout_ms;
    uint64_t slow_ns, stuck_ns;   /* UINT64_MAX: off */
    uint64_t maint_ns;            /* how often idle workers are retired */

    /* Read by every submit; written when workers come, go or idle. */
    char pad0[64];
    _Atomic size_t idle;       /* workers that gave their lease back, or
                                  are about to: worker.c */
    _Atomic size_t helpers;    /* workers waiting in a task, able to help */
    _Atomic size_t threads;    /* worker threads started, not yet exited
                                  nor given up as stuck */
    _Atomic size_t detached_alive; /* given up, not yet exited */
    _Atomic size_t max_threads;
    _Atomic bool grow;         /* a submit asked the timer for a worker */
    _Atomic bool closed;
    _Atomic bool cancelling;   /* a CANCEL shutdown swept the queue */
    _Atomic bool watching;     /* workers show their tasks to the timer */
    _Atomic size_t room_at;    /* a BLOCK submit waits for the queue to
                                  hold this many or fewer; SIZE_MAX: none */

    /* Written by workers, in batches. */
    char pad1[64];
    _Atomic uint64_t finished; /* tasks settled after a pop */
    _Atomic uint64_t ran_here; /* tasks run by their caller (CALLER_RUNS),
                                  counted as pushed and finished */
    _Atomic uint64_t st_completed, st_failed, st_cancelled, st_expired;
    _Atomic uint64_t st_rejected, st_detached;
    pk__hist wait_hist, run_hist;   /* sampled */
    char pad2[64];

    pk__lock lock;             /* all, helping, watch, detached */
    struct pk__dlist all;      /* live workers (tp_worker.node) */
    pk__cv done;               /* `finished` caught up: shutdown waits */
    pk__cv room;               /* the queue is down to room_at: BLOCK
                                  submits wait (tp_after_pop) */
    pk__cv exited;             /* a worker thread exited: destroy waits */
    /* The timer thread (timer.c). */
    pthread_t timer;
    bool timer_started;
    _Atomic bool timer_quit;
    pk__cv timer_cv;
};

/* The worker running on this thread, and the fork epoch it was set in (a
 * child forked from a task must not take it for its own). */
extern _Thread_local struct tp_worker *pk__tp_self;
extern _Thread_local unsigned pk__tp_self_epoch;

static inline struct tp_worker *
tp_self_in(struct pk_threadpool *tp)
{
    struct tp_worker *w = pk__tp_self;

    if (w && pk__tp_self_epoch == pk__fork_epoch_fast() && w->tp == tp)
        return w;
    return NULL;
}

/* Checks a handle at the entry of a public call: PK_EINVAL, PK_EFORKED
 * (a pool inherited through fork), or 0. */
static inline int
pk__tp_validate(struct pk_threadpool *tp)
{
    if (!tp || tp->magic != PK__TP_MAGIC)
        return PK_EINVAL;
    if (tp->fork_epoch != pk__fork_epoch_fast())
        return PK_EFORKED;
    return 0;
}

/* ---- waking: the protocol of worker.c's top comment ---------------------- */

/* Hands the lease of an idle worker to it and wakes it. */
static inline void
tp_give(struct pk_threadpool *tp, const pk_lease *l)
{
    struct tp_worker *w = l->resource;

    atomic_fetch_sub(&tp->idle, 1);
    w->lease = *l;
    pk__park_wake(&w->park, TP_GIVEN);
}

/* Asks the timer for one more worker, once until it answers. */
static inline void
tp_want_worker(struct pk_threadpool *tp)
{
    if (!atomic_load_explicit(&tp->grow, memory_order_relaxed) &&
        !atomic_exchange(&tp->grow, true))
        pk__cv_broadcast(&tp->timer_cv);
}

/* Makes sure a worker will look at the queue: wakes an idle one, or asks
 * for a new one while the pool is below max_threads. seq_cst loads: each
 * pairs with the seq_cst step of a worker going idle (worker.c). */
static inline void
tp_wake_worker(struct pk_threadpool *tp)
{
    pk_lease l;

    if (atomic_load(&tp->idle) > 0 &&
        pk_pool_acquire(tp->workers, &l, 0, NULL) == 0)
        tp_give(tp, &l);
    else if (atomic_load(&tp->threads) < atomic_load(&tp->max_threads))
        tp_want_worker(tp);
}

/* Wakes the workers waiting in a task that could help with new work. */
static inline void
tp_wake_helpers(struct pk_threadpool *tp)
{
    pk__lock_acquire(&tp->lock);
    for (struct pk__dnode *n = tp->all.head; n; n = n->next) {
        struct tp_worker *w = PK__CONTAINER(n, struct tp_worker, node);
        if (w->helping)
            pk__park_wake(&w->wait_park, 1);
    }
    pk__lock_release(&tp->lock);
}

/* After a push: the queue's tail moved with a seq_cst CAS (ring.h). */
static inline void
tp_after_push(struct pk_threadpool *tp)
{
    tp_wake_worker(tp);
    if (atomic_load(&tp->helpers) > 0)
        tp_wake_helpers(tp);
}

/* After a pop: the head moved with a seq_cst CAS. A BLOCK submit waiting
 * for room stored room_at (seq_cst) before it looked at the head, so one
 * of the two sees the other. Waking it at every pop would cost a futex
 * call per task while a producer outruns the workers: the first pop that
 * finds the queue down to room_at wakes it, once. */
static inline void
tp_after_pop(struct pk_threadpool *tp)
{
    size_t at = atomic_load(&tp->room_at);

    if (at != SIZE_MAX && tp_ring_count(&tp->q) <= at &&
        atomic_exchange(&tp->room_at, SIZE_MAX) != SIZE_MAX)
        pk__cv_broadcast(&tp->room);
}

/* task.c */
int pk__tp_task_make(struct pk_threadpool *tp, const pk_task *task,
                     const pk_task_options *o, struct tp_task *out,
                     pk_future **fut);
void pk__tp_task_unmake(struct tp_task *t, pk_future **fut);
void pk__tp_task_run(struct pk_threadpool *tp, struct tp_worker *w,
                     struct tp_task *t, struct tp_tally *n);
/* Runs the task of f on w's stack if f is a task of tp that has not
 * started (claiming it first); false if it is not. The queue's record of
 * it is skipped when popped. */
bool pk__tp_task_inline(struct pk_threadpool *tp, struct tp_worker *w,
                        pk_future *f, struct tp_tally *n);
void pk__tp_task_cancel(struct pk_threadpool *tp, struct tp_task *t,
                        struct tp_tally *n);
void pk__tp_tally_publish(struct pk_threadpool *tp, struct tp_tally *n);

/* worker.c */
int pk__tp_worker_create(void *user, void **res, pk_error *err);
void pk__tp_worker_destroy(void *user, void *res);
/* Runs one queued task on the calling worker's stack, within the nesting
 * bound; false if none ran. For waits of a task of tp. */
bool pk__tp_help_once(struct pk_threadpool *tp, struct tp_worker *w);

#ifdef PK_TESTING
/* Test-only: microseconds a worker going idle waits between counting
 * itself idle and giving its lease back (widens the protocol's window). */
extern _Atomic unsigned pk__tp_idle_delay_us;
#endif

/* timer.c */
int pk__tp_timer_start(struct pk_threadpool *tp);
void pk__tp_timer_stop(struct pk_threadpool *tp);
/* A task with a run limit came: the timer watches every 5 ms from now. */
void pk__tp_timer_watch(struct pk_threadpool *tp);

#endif /* PK_POOLS_THREAD_TP_INT_H */
