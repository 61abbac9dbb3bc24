/* pools/thread/timer.c - the pool's one background thread ("pk-timer").
 *
 * It does three things, each when due, and sleeps otherwise:
 *   - starts a worker when a submit asked for one (tp->grow): it acquires
 *     one from the core, which makes it, and hands it its lease. A start
 *     that fails is the core's to retry, with its backoff; each failure
 *     reaches the event hook (PK_EVENT_CREATE_FAILED) from the core;
 *   - runs the core's maintenance (the worker pool is MANUAL_MAINTENANCE):
 *     retiring workers idle past keep_alive_ms, restoring min_threads;
 *   - watches running tasks while the pool watches (slow_task_ms,
 *     stuck_after_ms, or a task with a run limit came): every 5 ms it
 *     raises the cancel flag of tasks past their run limit, reports slow
 *     tasks once, and gives up workers stuck in one task (the core's
 *     check hook cannot see them: a busy worker holds its own lease).
 * Its hooks (create, destroy, events) run on it with no lock held. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <string.h>

#include "tp_int.h"

/* How long one try for a worker may wait for the core (its retry of a
 * failed start included: the core's backoff is short while we wait). */
#define GROW_WAIT_MS 100
/* When the core gave no time for its next attempt. */
#define GROW_RETRY_NS 10000000u
/* What one watch pass acts on at most; the rest waits for the next. */
#define WATCH_BATCH 32

struct found {
    pk_future *limited[WATCH_BATCH]; /* past their run limit (a ref each) */
    size_t n_limited;
    uint64_t slow_ns[WATCH_BATCH];
    size_t n_slow;
    pk_lease stuck[WATCH_BATCH];
    uint64_t stuck_ns[WATCH_BATCH];
    size_t n_stuck;
};

static void
event(struct pk_threadpool *tp, int kind, uint64_t held_ns)
{
    pk_event ev = { kind, NULL, NULL, 0, held_ns, NULL };

    if (tp->event)
        tp->event(tp->event_user, &ev);
}

/* Looks at one task on a worker's stack (depth d). tp->lock held. */
static void
look(struct pk_threadpool *tp, struct tp_worker *w, int d, uint64_t now,
     struct found *f)
{
    struct tp_watch *x = &w->watch[d];
    uint64_t ran = now - x->start;

    if (x->limit_ns && !x->flagged && ran > x->limit_ns && x->fut &&
        f->n_limited < WATCH_BATCH) {
        x->flagged = true;
        f->limited[f->n_limited++] = pk_future_ref(x->fut);
    }
    if (d != 0)
        return; /* slow and stuck: the worker's outermost task */
    if (!x->slow && ran > tp->slow_ns && f->n_slow < WATCH_BATCH) {
        x->slow = true;
        f->slow_ns[f->n_slow++] = ran;
    }
    if (!w->detached && ran > tp->stuck_ns && f->n_stuck < WATCH_BATCH) {
        w->detached = true;
        f->stuck_ns[f->n_stuck] = ran;
        f->stuck[f->n_stuck++] = w->lease;
    }
}

/* Acts on what look() found, with no lock held. A stuck worker is
 * released DETACH (the core forgets it and may make a replacement); the
 * thread exits by itself once its task returns (worker.c). */
static void
act(struct pk_threadpool *tp, struct found *f)
{
    for (size_t i = 0; i < f->n_limited; i++) {
        pk_future_cancel(f->limited[i]); /* running: raises the flag */
        pk_future_release(f->limited[i]);
    }
    for (size_t i = 0; i < f->n_slow; i++)
        event(tp, PK_EVENT_SLOW_TASK, f->slow_ns[i]);
    for (size_t i = 0; i < f->n_stuck; i++) {
        event(tp, PK_EVENT_HELD_TOO_LONG, f->stuck_ns[i]);
        atomic_fetch_add(&tp->detached_alive, 1);
        atomic_fetch_sub(&tp->threads, 1);
        atomic_fetch_add_explicit(&tp->st_detached, 1, memory_order_relaxed);
        pk_pool_release(tp->workers, &f->stuck[i], PK_RELEASE_DETACH);
    }
    if (f->n_stuck && tp_ring_count(&tp->q) > 0)
        atomic_store(&tp->grow, true); /* a replacement, next round */
}

static void
watch(struct pk_threadpool *tp, uint64_t now)
{
    struct found f;

    f.n_limited = f.n_slow = f.n_stuck = 0;
    pk__lock_acquire(&tp->lock);
    for (struct pk__dnode *n = tp->all.head; n; n = n->next) {
        struct tp_worker *w = PK__CONTAINER(n, struct tp_worker, node);
        for (int d = 0; d < PK__TP_STACK; d++)
            if (w->watch[d].start)
                look(tp, w, d, now, &f);
    }
    pk__lock_release(&tp->lock);
    act(tp, &f);
}

/* Starts one worker if work still waits for one. Returns UINT64_MAX, or
 * when to try again: the core could not make one (it told the event
 * hook why) and will not try before its backoff's next attempt. */
static uint64_t
grow(struct pk_threadpool *tp, uint64_t now)
{
    pk_pool_stats st;
    pk_lease l;
    int rc;

    if (tp_ring_count(&tp->q) == 0)
        return UINT64_MAX;
    if (atomic_load(&tp->idle) > 0) {
        tp_wake_worker(tp);
        return UINT64_MAX;
    }
    if (atomic_load(&tp->threads) >= atomic_load(&tp->max_threads))
        return UINT64_MAX;
    rc = pk_pool_acquire(tp->workers, &l, GROW_WAIT_MS, NULL);
    if (rc == PK_ESHUTDOWN)
        return UINT64_MAX;
    if (rc != 0) {
        if (pk_pool_stats_get(tp->workers, &st) != 0 ||
            st.next_attempt_in_ns == UINT64_MAX)
            return now + GROW_RETRY_NS;
        return now + (st.next_attempt_in_ns ? st.next_attempt_in_ns : 1);
    }
    tp_give(tp, &l);
    if (tp_ring_count(&tp->q) > 1 && atomic_load(&tp->idle) == 0)
        atomic_store(&tp->grow, true); /* more waits: the next round */
    return UINT64_MAX;
}

/* Maintenance may have made workers (min_threads) idle in the core: look
 * at the queue after it (worker.c's protocol). */
static void
maintain(struct pk_threadpool *tp)
{
    pk_pool_maintain(tp->workers);
    if (tp_ring_count(&tp->q) > 0)
        tp_wake_worker(tp);
}

static uint64_t
earliest(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void *
timer_main(void *arg)
{
    struct pk_threadpool *tp = arg;
    uint64_t now = pk__now_ns();
    uint64_t next_maint = now + tp->maint_ns, next_watch = now;
    uint64_t next_grow = UINT64_MAX; /* after a failed start */

    pthread_setname_np(pthread_self(), "pk-timer");
    for (;;) {
        uint32_t seq = pk__cv_prepare(&tp->timer_cv);
        bool watching = atomic_load(&tp->watching);
        if (atomic_load(&tp->timer_quit)) {
            pk__cv_cancel(&tp->timer_cv);
            break;
        }
        now = pk__now_ns();
        uint64_t next = earliest(next_maint, next_grow);
        if (watching)
            next = earliest(next, next_watch);
        if (!atomic_load(&tp->grow) && now < next) {
            pk__cv_wait_prepared(&tp->timer_cv, seq, next);
            continue;
        }
        pk__cv_cancel(&tp->timer_cv);
        if (atomic_exchange(&tp->grow, false) || now >= next_grow)
            next_grow = grow(tp, now);
        if (now >= next_maint) {
            maintain(tp);
            next_maint = now + tp->maint_ns;
        }
        if (watching && now >= next_watch) {
            watch(tp, now);
            next_watch = now + PK__TP_WATCH_NS;
        }
    }
    return NULL;
}

int
pk__tp_timer_start(struct pk_threadpool *tp)
{
    int rc = pk__thread_create(&tp->timer, timer_main, tp);

    if (rc)
        return PK_ECREATE;
    tp->timer_started = true;
    return 0;
}

void
pk__tp_timer_stop(struct pk_threadpool *tp)
{
    if (!tp->timer_started)
        return;
    atomic_store(&tp->timer_quit, true);
    pk__cv_broadcast(&tp->timer_cv);
    pthread_join(tp->timer, NULL);
    tp->timer_started = false;
}

void
pk__tp_timer_watch(struct pk_threadpool *tp)
{
    if (atomic_load(&tp->watching))
        return;
    atomic_store(&tp->watching, true);
    pk__cv_broadcast(&tp->timer_cv);
}
