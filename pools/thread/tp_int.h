/* pools/thread/tp_int.h - the thread pool's parts, shared by its files:
 * queue.c (lanes, pushes and pops, next slots, cancelling), worker.c
 * (running tasks, the workers' loop, stand-ins, waking), wait.c (helping
 * while waiting, cycle checks), watchdog.c (slow and stuck tasks, run
 * limits, retried starts), threadpool.c (create, submit, resize,
 * shutdown, stats) and lanes.c (the public calls on lanes, executor
 * views). Not installed. */
#ifndef PK_POOLS_THREAD_TP_INT_H
#define PK_POOLS_THREAD_TP_INT_H

#include <poolkit/threadpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "future_int.h"
#include "hist.h"
#include "ring.h"
#include "sync.h"

#define PK__TP_MAGIC 0x74706f6fu
/* Rounds a worker spins on an empty queue before it parks. */
#define PK__TP_SPINS 200
/* Tasks a worker takes from the queue at once, at most. */
#define PK__TP_BATCH 16
/* Tasks a waiting worker (or stand-in) runs nested on its stack, at
 * most. */
#define PK__TP_NEST 16
/* How deep a stand-in worker runs next slots (wait.c): stack depth. */
#define PK__TP_STANDIN_NEST 256
/* After a failed start of a worker, the next try waits this long at
 * first, doubling up to PK__TP_RETRY_MAX_NS (the core's own backoff is
 * the same: threadpool.c, start_workers). */
#define PK__TP_RETRY_MIN_NS 1000000u
#define PK__TP_RETRY_MAX_NS 100000000u
/* How long a caller that finds no worker alive waits for the one being
 * started before it runs the queue itself (pk__tp_standin_if_starved). */
#define PK__TP_GROW_WAIT_NS 100000000u
/* The largest queue_size (pool or lane): its ring is made at once. */
#define PK__TP_QUEUE_MAX ((size_t)1 << 30)

/* A lane (threadpool.h): its own ring and cap. */
struct tp_lane {
    struct tp_ring q;
    size_t cap;                 /* tp_ring_capacity(&q) */
    int priority;
    char name[PK_LANE_NAME_MAX];
    char pad0[64];
    /* Submitted: the ring counts pushes in its tail; these count the
     * rest (pk__tp_lane_submitted), so a submit writes no counter. */
    _Atomic uint64_t st_extra;  /* next slots and caller-runs, less
                                   give-backs (pushed twice); modular */
    _Atomic uint64_t st_seen;   /* the most pk__tp_lane_submitted said */
    char pad1[64];
    /* The cap: workers inside the lane (holding one of its places) and
     * the most allowed, 0 for none. Without a cap nothing is counted. */
    _Atomic size_t running;
    _Atomic size_t max_workers;
    char pad2[64];
};

struct tp_worker {
    struct pk_threadpool *tp;
    pthread_t thread;
    pk__parker park;    /* 1 = lease given, 2 = stop */
    pk_lease lease;     /* written by the waker before the wake */
    _Atomic bool self_exit; /* destroyed from its own thread: detach */
    /* Tasks popped but not yet run: the worker's own, so a task of the
     * batch that waits on another of it runs that one itself. */
    struct tp_task batch[PK__TP_BATCH];
    size_t batch_next, batch_n;
    size_t batch_ran;        /* of the batch, run here (not given back) */
    int batch_lane;
    bool batch_counted;      /* the batch holds a place in its lane */
    /* Places held in capped lanes, by nesting depth (owner only): tasks
     * of a lane nested on a worker already inside it take no new place,
     * so a task waiting on a child in its own full lane runs it here. */
    int in_lane[PK_LANES_MAX];
    /* For deadlock detection (read by other workers, hence atomic): the
     * futures of the tasks on this worker's stack, innermost last, and
     * the future it waits on. */
    _Atomic(pk_future *) stack[2 * PK__TP_NEST + 2];
    _Atomic int depth;
    int nest;                        /* tasks on this thread's stack, with
                                        or without a future (owner only) */
    _Atomic(pk_future *) waiting_on;
    struct tp_worker *next_all;      /* tp->all_workers, under glock */
    /* The running task, for the watchdog (under glock, set only while
     * the watchdog runs or the task has a run limit). */
    uint64_t cur_start;              /* 0: nothing watched */
    uint64_t cur_limit_ns;
    pk_future *cur_fut;
    bool cur_flagged, cur_slow, cur_stuck;
    bool stand_in;                   /* a caller thread's (worker.c,
                                        run_queued_here), on its stack */
    _Atomic bool detached;           /* given up as stuck */
    /* The "next" slot (Go's runnext): a task with a future submitted by
     * the task running here goes here, so that when that task waits on
     * it, it runs at once on this stack instead of behind the whole
     * queue. 0 empty, 1 full, 2 being taken (by the owner, or by an idle
     * worker stealing it). */
    _Atomic int next_state;
    struct tp_task next;
    struct pk__wait_helper helper;
};

struct pk_threadpool {
    unsigned magic;
    unsigned fork_epoch;
    _Atomic int refs;
    pk_pool *workers;
    pk_registry *registry;
    pk_event_fn event;
    void *event_user;
    void (*worker_init)(void *);
    void (*worker_exit)(void *);
    void *user;
    int full_policy;
    int submit_timeout_ms;
    _Atomic size_t max_threads; /* read unlocked by pk__tp_wake_one */
    size_t min_threads;        /* under rlock */
    size_t comp;               /* compensating workers allowed, rlock */
    _Atomic size_t ncomp;      /* the same, for pk__tp_wake_one's unlocked read */
    pk__lock rlock;            /* serialises sizing of the core pool */

    /* The lanes (0 the default), their order of priority, and the
     * counters and waits on them. */
    struct tp_lane *lanes;
    size_t nlanes;
    int order[PK_LANES_MAX];   /* lane indices, highest priority first */
    /* Read by every submit and every finish, written once: with the
     * fields above that only change on resizes, never with a counter. */
    _Atomic bool closed;
    _Atomic bool cancelling;   /* a CANCEL (or KILL) shutdown swept the
                                  queue, or is about to */
    /* Submitters skip their fence, workers make up for it with
     * membarrier (pk__tp_wake_after_push); false if it is unavailable. */
    _Atomic bool asym;
    char pad0[64];
    _Atomic size_t submitting; /* submits into next slots between their
                                  check of closed and their push (the
                                  rings fence themselves: ring.h) */
    char padf[64];
    _Atomic size_t finished;   /* tasks run or cancelled after a pop */
    _Atomic size_t next_pushed; /* tasks pushed outside the rings: into a
                                   "next" slot, or run by their caller
                                   (CALLER_RUNS) */
    /* Next slots holding a task now: work for idle workers too (they
     * steal it), or a child would wait for its parent to return or help,
     * and a parent that waits without helping (a flag, a condvar,
     * pk_future_wait_any elsewhere) would wait for ever. */
    _Atomic size_t next_full;
    pk__hist wait_hist, run_hist;   /* sampled */
    _Atomic uint64_t st_expired, st_detached;
    /* The watchdog: slow tasks, stuck workers, run limits. */
    uint64_t slow_ns, stuck_ns;    /* UINT64_MAX: off */
    _Atomic bool watch;            /* workers publish their running task */
    bool wd_running, wd_quit;    /* under glock */
    bool wd_limits;              /* tasks with run limits came (glock) */
    pthread_t wd;
    pk__cv wd_cv;
    pk__cv not_full;           /* a worker freed cells */
    pk__cv idle;               /* finished caught up with the pushes */
    pk__lock qlock;            /* only for `exited` */
    pk__lock glock;            /* the list of workers, for cycle checks */
    struct tp_worker *all_workers;
    _Atomic size_t threads;    /* worker threads not yet exited */
    pk__cv exited;             /* threads went down */

    char pad1[64];
    _Atomic size_t active;     /* workers holding their lease */
    _Atomic size_t alive;      /* workers spawned and not yet stopped */
    /* Workers that will still take tasks: alive, less those retired (a
     * retired worker stays alive while it exits and runs its exit hook)
     * or given up as stuck. Whether a caller must stand in is decided on
     * this, never on `alive`: a task pushed while the last worker retires
     * would otherwise wait for nobody. */
    _Atomic size_t serving;
    _Atomic bool growing;      /* an async ticket is out */
    /* Starting workers failed (thread limit, memory): the last try
     * failed, the next is not before retry_at (CLOCK_MONOTONIC ns),
     * retry_armed says the watchdog will make it, retry_ns is the
     * current backoff. Written when a try ends, and tries are one at a
     * time (`growing`). */
    _Atomic bool create_failed;
    _Atomic bool retry_armed;
    _Atomic uint64_t retry_at;
    _Atomic uint64_t retry_ns;
    pk__cv grown;              /* a try to start a worker ended */
    char pad1s[64];
    /* Apart: it changes whenever a worker finds the queue empty, while
     * the line above stays put under load (pk__tp_maybe_wake reads it). */
    _Atomic size_t spinning;   /* awake workers looking for work */

    /* Stats, relaxed atomics: submitters write the first line (and their
     * lane's st_submitted), workers the second (once per batch). */
    char pad2[64];
    _Atomic uint64_t st_rejected;
    char pad3[64];
    _Atomic uint64_t st_completed;
    _Atomic uint64_t st_failed, st_cancelled;
};

/* Outcome counts of a batch, added to the shared counters once. */
struct tally {
    uint64_t completed, cancelled, failed;
};

/* The worker running on this thread, if any (thread-local, set by
 * worker_main): tasks it runs are pushed on its stack for cycle checks. */
extern _Thread_local struct tp_worker *pk__tp_self;

/* queue.c */
int pk__tp_lanes_init(struct pk_threadpool *tp,
                      const pk_threadpool_options *o);
void pk__tp_lanes_fini(struct pk_threadpool *tp);
bool pk__tp_work_ready(struct pk_threadpool *tp);
bool pk__tp_work_seen(struct pk_threadpool *tp);
size_t pk__tp_queued(struct pk_threadpool *tp);
int pk__tp_push(struct tp_lane *l, const struct tp_task *t, size_t n);
int pk__tp_push_back(struct tp_lane *l, const struct tp_task *t);
void pk__tp_close_lanes(struct pk_threadpool *tp);
bool pk__tp_pop_closed(struct pk_threadpool *tp, struct tp_task *out);
uint64_t pk__tp_lane_submitted(struct tp_lane *l);
size_t pk__tp_pop(struct pk_threadpool *tp, struct tp_worker *w,
                  struct tp_task *out, size_t max, int *lane, bool *counted);
bool pk__tp_lane_enter(struct pk_threadpool *tp, struct tp_worker *w,
                       int lane, bool *counted);
void pk__tp_lane_leave(struct pk_threadpool *tp, struct tp_worker *w,
                       int lane, bool counted);
_Static_assert(PK_LANES_MAX <= 32, "a lane mask fits 32 bits");
uint32_t pk__tp_lanes_step_out(struct pk_threadpool *tp, struct tp_worker *w);
void pk__tp_lanes_step_in(struct pk_threadpool *tp, uint32_t lanes);
size_t pk__tp_all_pushed(struct pk_threadpool *tp);
void pk__tp_finish(struct pk_threadpool *tp, size_t n);
bool pk__tp_all_finished(struct pk_threadpool *tp);
bool pk__tp_put_next(struct pk_threadpool *tp, struct tp_worker *w,
                     const struct tp_task *t);
bool pk__tp_take_next(struct tp_worker *w, struct tp_task *out);
bool pk__tp_steal_next(struct pk_threadpool *tp, struct tp_worker *self,
                       struct tp_task *out);
void pk__tp_cancel_one(struct pk_threadpool *tp, struct tp_task *t);
void pk__tp_cancel_queued(struct pk_threadpool *tp);

/* worker.c */
void pk__tp_run_task(struct pk_threadpool *tp, struct tp_task *t,
                     struct tally *n);
void pk__tp_tally_add(struct pk_threadpool *tp, const struct tally *n);
void pk__tp_run_one(struct pk_threadpool *tp, struct tp_task *t);
int pk__tp_worker_create(void *user, void **res, pk_error *err);
void pk__tp_worker_destroy(void *user, void *res);
void pk__tp_wake_one(struct pk_threadpool *tp);
void pk__tp_maybe_wake(struct pk_threadpool *tp);
void pk__tp_wake_after_push(struct pk_threadpool *tp, struct tp_lane *l);
bool pk__tp_asym_init(void);
void pk__tp_standin_if_starved(struct pk_threadpool *tp);

/* A submit's check whether it must stand in for the workers: one load of
 * a line that its wake check read already. */
static inline void
pk__tp_after_submit(struct pk_threadpool *tp)
{
    if (atomic_load_explicit(&tp->serving, memory_order_relaxed) == 0)
        pk__tp_standin_if_starved(tp);
}

/* wait.c */
int pk__tp_help_wait(void *ctx, pk_future *f, uint64_t deadline);
/* Runs one queued task on w's stack, within the nesting bounds that
 * helping keeps; false if none was run. */
bool pk__tp_help_once(struct pk_threadpool *tp, struct tp_worker *w);
/* A worker that must block (it may not help) steps out of its lanes and
 * `active`, with one more worker allowed meanwhile if work is queued
 * (compensation); pk__tp_step_back undoes it. */
struct pk__tp_aside {
    uint32_t lanes;
    bool comp;
};
struct pk__tp_aside pk__tp_step_aside(struct pk_threadpool *tp,
                                      struct tp_worker *w);
void pk__tp_step_back(struct pk_threadpool *tp, struct pk__tp_aside a);
int pk__tp_help_wait_any(void *ctx, pk_future *const *fs, size_t n,
                         uint64_t deadline);
/* Cancels the unrun part of w's batch, counted finished. */
void pk__tp_cancel_batch(struct pk_threadpool *tp, struct tp_worker *w);

/* watchdog.c */
int pk__tp_wd_start_locked(struct pk_threadpool *tp);
void pk__tp_wd_stop(struct pk_threadpool *tp);
void pk__tp_wd_arm_retry(struct pk_threadpool *tp);

/* threadpool.c */
void pk__tp_unref(struct pk_threadpool *tp);
int pk__tp_apply_size_locked(struct pk_threadpool *tp);

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

#endif /* PK_POOLS_THREAD_TP_INT_H */
