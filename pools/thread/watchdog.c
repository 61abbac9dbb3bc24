/* pools/thread/watchdog.c - slow tasks, stuck workers and run limits,
 * and the timer that retries starting workers after a failed start.
 *
 * The thread starts on demand: at create when slow or stuck tasks are
 * watched, at the first task with a run limit, at the first failed start
 * of a worker while tasks are queued. With nothing to watch it sleeps
 * until a retry is due. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "alloc.h"
#include "tp_int.h"

/* ---- the watchdog ----------------------------------------------------- */

#define PK__WD_BATCH 32

struct wd_work {
    pk_event ev[PK__WD_BATCH];
    size_t n_ev;
    struct tp_worker *stuck[PK__WD_BATCH];
    pk_lease lease[PK__WD_BATCH];
    /* Past their run limit: cancelled after glock is dropped (a future
     * still PENDING runs its callbacks in the cancel), each referenced. */
    pk_future *over[PK__WD_BATCH];
    size_t n_over;
    size_t n_stuck;
};

/* Looks at one running task. glock held. */
static void
watch_one(struct pk_threadpool *tp, struct tp_worker *w, uint64_t now,
          struct wd_work *wk)
{
    uint64_t ran = now - w->cur_start;

    if (w->cur_limit_ns && ran >= w->cur_limit_ns && !w->cur_flagged &&
        wk->n_over < PK__WD_BATCH) {
        w->cur_flagged = true;
        if (w->cur_fut) /* the worker holds it until it unpublishes */
            wk->over[wk->n_over++] = pk_future_ref(w->cur_fut);
    }
    /* A stand-in (run_queued_here) lives on its thread's stack and holds
     * no lease: it is reported without itself and never detached. */
    void *res = w->stand_in ? NULL : w;

    if (ran >= tp->slow_ns && !w->cur_slow && wk->n_ev < PK__WD_BATCH) {
        w->cur_slow = true;
        wk->ev[wk->n_ev++] = (pk_event){ PK_EVENT_SLOW_TASK, res, NULL, 0,
                                         ran, NULL };
    }
    if (ran >= tp->stuck_ns && w->stand_in && !w->cur_stuck &&
        wk->n_ev < PK__WD_BATCH) {
        w->cur_stuck = true;
        wk->ev[wk->n_ev++] = (pk_event){ PK_EVENT_HELD_TOO_LONG, NULL, NULL,
                                         0, ran, NULL };
    }
    if (ran >= tp->stuck_ns && !w->stand_in && !atomic_load(&w->detached) &&
        wk->n_stuck < PK__WD_BATCH && wk->n_ev < PK__WD_BATCH) {
        atomic_store(&w->detached, true);
        wk->stuck[wk->n_stuck] = w;
        wk->lease[wk->n_stuck++] = w->lease;
        wk->ev[wk->n_ev++] = (pk_event){ PK_EVENT_HELD_TOO_LONG, w, NULL,
                                         0, ran, NULL };
    }
}

/* Gives up stuck workers: the core forgets them (DETACH), which makes
 * room for a replacement, woken at once if work waits. */
static void
give_up(struct pk_threadpool *tp, struct wd_work *wk)
{
    for (size_t i = 0; i < wk->n_stuck; i++) {
        if (pk_pool_release(tp->workers, &wk->lease[i], PK_RELEASE_DETACH))
            continue; /* not a lease any more: nothing was detached */
        atomic_fetch_sub(&tp->alive, 1);
        atomic_fetch_sub(&tp->serving, 1);
        atomic_fetch_add_explicit(&tp->st_detached, 1, memory_order_relaxed);
    }
    if (wk->n_stuck && pk__tp_work_ready(tp))
        pk__tp_wake_one(tp);
}

/* How often tasks with run limits are looked at: 5 ms. */
#define WD_LIMIT_PERIOD 5000000u

/* How often to look at running tasks; UINT64_MAX: none to look at.
 * glock held. */
static uint64_t
wd_period(struct pk_threadpool *tp)
{
    uint64_t p = tp->slow_ns < tp->stuck_ns ? tp->slow_ns : tp->stuck_ns;

    if (p == UINT64_MAX)
        return tp->wd_limits ? WD_LIMIT_PERIOD : UINT64_MAX;
    p /= 4;
    if (p < 1000000u)
        p = 1000000u;
    if (p > 100000000u)
        p = 100000000u;
    /* A run limit is checked as often whatever the slow and stuck times
     * (a 50 ms limit seen at 100 ms is a limit of 100). */
    return tp->wd_limits && p > WD_LIMIT_PERIOD ? WD_LIMIT_PERIOD : p;
}

/* When to look next: after a period, or when a retry is due. glock
 * held. */
static uint64_t
wd_next(struct pk_threadpool *tp, uint64_t now)
{
    uint64_t p = wd_period(tp);
    uint64_t until = p == UINT64_MAX ? UINT64_MAX : now + p;
    uint64_t r = atomic_load(&tp->retry_at);

    if (atomic_load(&tp->retry_armed) && r < until)
        until = r;
    return until;
}

/* True if the retry armed by pk__tp_wd_arm_retry is due; disarms it.
 * glock held. */
static bool
retry_due(struct pk_threadpool *tp, uint64_t now)
{
    if (!atomic_load(&tp->retry_armed) || now < atomic_load(&tp->retry_at))
        return false;
    atomic_store(&tp->retry_armed, false);
    return true;
}

static void *
wd_main(void *arg)
{
    struct pk_threadpool *tp = arg;
    struct wd_work wk;

    pthread_setname_np(pthread_self(), "pk-watchdog");
    pk__lock_acquire(&tp->glock);
    while (!tp->wd_quit) {
        uint64_t now = pk__now_ns();
        bool retry = retry_due(tp, now);
        wk.n_ev = wk.n_stuck = wk.n_over = 0;
        for (struct tp_worker *w = tp->all_workers; w; w = w->next_all)
            if (w->cur_start)
                watch_one(tp, w, now, &wk);
        pk__lock_release(&tp->glock);
        for (size_t i = 0; i < wk.n_over; i++) {
            pk_future_cancel(wk.over[i]); /* running: raises its flag */
            pk_future_release(wk.over[i]);
        }
        give_up(tp, &wk);
        for (size_t i = 0; tp->event && i < wk.n_ev; i++)
            tp->event(tp->event_user, &wk.ev[i]);
        /* Only while tasks wait: a failed try re-arms it (growth_failed),
         * and so does a submit that meets the backoff. */
        if (retry && pk__tp_work_ready(tp))
            pk__tp_wake_one(tp);
        pk__lock_acquire(&tp->glock);
        if (!tp->wd_quit)
            pk__cv_wait_until(&tp->wd_cv, &tp->glock,
                              wd_next(tp, pk__now_ns()));
    }
    pk__lock_release(&tp->glock);
    return NULL;
}

/* Starts the watchdog once; never after pk__tp_wd_stop (a ticket's
 * callback may arm a retry while the pool is being destroyed). glock
 * held. */
int
pk__tp_wd_start_locked(struct pk_threadpool *tp)
{
    int rc;

    if (tp->wd_quit)
        return PK_ESHUTDOWN;
    if (tp->wd_running)
        return 0;
    rc = pk__thread_create(&tp->wd, wd_main, tp);
    if (rc)
        return PK_ECREATE; /* no watchdog thread (errno rc) */
    tp->wd_running = true;
    return 0;
}

void
pk__tp_wd_stop(struct pk_threadpool *tp)
{
    bool join;

    pk__lock_acquire(&tp->glock);
    join = tp->wd_running;
    tp->wd_quit = true;
    tp->wd_running = false;
    pk__lock_release(&tp->glock);
    pk__cv_broadcast(&tp->wd_cv);
    if (join)
        pthread_join(tp->wd, NULL);
}

/* Has the watchdog try to start a worker once tp->retry_at has passed
 * (worker.c, growth_failed), starting it if need be. If it cannot start
 * (often the very failure being retried), the first wake after the
 * backoff tries the worker start itself (may_try_growth). */
void
pk__tp_wd_arm_retry(struct pk_threadpool *tp)
{
    pk__lock_acquire(&tp->glock);
    atomic_store(&tp->retry_armed, true);
    /* Armed even if the watchdog cannot start: else every wake during
     * the backoff would try to start it, a thread start under glock at
     * the thread limit. */
    (void)pk__tp_wd_start_locked(tp);
    pk__lock_release(&tp->glock);
    pk__cv_broadcast(&tp->wd_cv);
}
