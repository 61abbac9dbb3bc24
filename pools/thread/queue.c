/* pools/thread/queue.c - the task queue: lanes and their caps, pushes
 * and pops, the count of finished tasks, and the workers' next slots. */
#include <string.h>

#include "alloc.h"
#include "tp_int.h"

/* ---- lanes ------------------------------------------------------------ */

static int
check_lanes(const pk_threadpool_options *o)
{
    if (o->n_lanes && !o->lanes)
        return PK_EINVAL;
    if (o->n_lanes > PK_LANES_MAX - 1)
        return PK_EINVAL;
    for (size_t i = 0; i < o->n_lanes; i++) {
        const char *name = o->lanes[i].name;
        if (!name || !*name || strlen(name) >= PK_LANE_NAME_MAX ||
            o->lanes[i].queue_size > PK__TP_QUEUE_MAX)
            return PK_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->lanes[j].name, name) == 0)
                return PK_EINVAL;
    }
    return 0;
}

static int
lane_init(struct tp_lane *l, size_t queue_size, size_t max_workers,
          int priority, const char *name)
{
    int rc = tp_ring_init(&l->q, queue_size);

    if (rc)
        return rc;
    l->cap = tp_ring_capacity(&l->q);
    l->priority = priority;
    if (name)
        strcpy(l->name, name); /* length checked by check_lanes */
    atomic_init(&l->st_extra, 0);
    atomic_init(&l->st_seen, 0);
    atomic_init(&l->running, 0);
    atomic_init(&l->max_workers, max_workers);
    return 0;
}

/* Highest priority first; among equals, the lane listed first (the
 * default lane before the others). */
static void
sort_lanes(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++) {
        int k = (int)i;
        size_t j = i;
        for (; j > 0 && tp->lanes[tp->order[j - 1]].priority <
                            tp->lanes[k].priority;
             j--)
            tp->order[j] = tp->order[j - 1];
        tp->order[j] = k;
    }
}

/* Makes the default lane and o->lanes. Returns 0, PK_EINVAL, PK_ENOMEM. */
int
pk__tp_lanes_init(struct pk_threadpool *tp, const pk_threadpool_options *o)
{
    size_t qs = o->queue_size ? o->queue_size : 65536;
    int rc = check_lanes(o);

    if (rc)
        return rc;
    tp->lanes = pk__calloc(o->n_lanes + 1, sizeof *tp->lanes);
    if (!tp->lanes)
        return PK_ENOMEM;
    rc = lane_init(&tp->lanes[0], qs, 0, 0, NULL);
    tp->nlanes = rc ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < o->n_lanes; i++) {
        const pk_lane_options *lo = &o->lanes[i];
        rc = lane_init(&tp->lanes[i + 1],
                       lo->queue_size ? lo->queue_size : qs, lo->max_threads,
                       lo->priority, lo->name);
        if (rc == 0)
            tp->nlanes++;
    }
    if (rc) {
        pk__tp_lanes_fini(tp);
        return rc;
    }
    sort_lanes(tp);
    return 0;
}

void
pk__tp_lanes_fini(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++)
        tp_ring_fini(&tp->lanes[i].q);
    pk__free(tp->lanes);
    tp->lanes = NULL;
    tp->nlanes = 0;
}

static bool
has_room(struct tp_lane *l)
{
    size_t max = atomic_load_explicit(&l->max_workers, memory_order_relaxed);

    return !max ||
           atomic_load_explicit(&l->running, memory_order_relaxed) < max;
}

/* Takes one of l's places (max of them); false if all are taken. */
static bool
take_place(struct tp_lane *l, size_t max)
{
    size_t r = atomic_load_explicit(&l->running, memory_order_relaxed);

    do {
        if (r >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &l->running, &r, r + 1, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Enters lane L to run its tasks on w: takes a place if the lane has a
 * cap and w is not inside it already. False if the lane is full. w NULL
 * is a caller running a task of L itself (caller-runs): it takes a
 * place too, with no worker to record it on (nothing nests on it). */
bool
pk__tp_lane_enter(struct pk_threadpool *tp, struct tp_worker *w, int lane,
                  bool *counted)
{
    struct tp_lane *l = &tp->lanes[lane];
    size_t max;

    *counted = false;
    if (w && w->in_lane[lane] > 0) {
        w->in_lane[lane]++;
        *counted = true;
        return true;
    }
    max = atomic_load_explicit(&l->max_workers, memory_order_relaxed);
    if (!max)
        return true;
    if (!take_place(l, max))
        return false;
    if (w)
        w->in_lane[lane] = 1;
    *counted = true;
    return true;
}

/* Leaves what pk__tp_lane_enter entered. A place given back lets a
 * queued task of the lane start: make sure a worker comes for it. */
void
pk__tp_lane_leave(struct pk_threadpool *tp, struct tp_worker *w, int lane,
                  bool counted)
{
    struct tp_lane *l = &tp->lanes[lane];

    if (!counted || (w && --w->in_lane[lane] > 0))
        return;
    atomic_fetch_sub_explicit(&l->running, 1, memory_order_relaxed);
    /* Pairs with the fence in pk__tp_maybe_wake: either a submitter
     * whose push met the lane full sees the place free, or we see its
     * push. */
    atomic_thread_fence(memory_order_seq_cst);
    if (tp_ring_count(&l->q) > 0)
        pk__tp_maybe_wake(tp);
}

/* A worker about to block gives back the places it holds (it runs
 * nothing while blocked), as the pool's max is compensated for it: with
 * its nesting bound reached it may not run the child it waits on, and
 * nobody else could while it held the lane's last place. Returns the
 * lanes it stepped out of, one bit each, for pk__tp_lanes_step_in: a
 * place taken while out (caller-runs) is not one to take back. */
uint32_t
pk__tp_lanes_step_out(struct pk_threadpool *tp, struct tp_worker *w)
{
    uint32_t out = 0;

    for (size_t i = 1; i < tp->nlanes; i++) {
        if (w->in_lane[i] == 0)
            continue;
        atomic_fetch_sub_explicit(&tp->lanes[i].running, 1,
                                  memory_order_relaxed);
        out |= (uint32_t)1 << i;
    }
    return out;
}

/* Takes back the places of pk__tp_lanes_step_out's lanes, above the cap
 * if others filled it meanwhile (as a compensated pool goes above max
 * for a while). */
void
pk__tp_lanes_step_in(struct pk_threadpool *tp, uint32_t lanes)
{
    for (size_t i = 1; i < tp->nlanes; i++)
        if (lanes & ((uint32_t)1 << i))
            atomic_fetch_add_explicit(&tp->lanes[i].running, 1,
                                      memory_order_relaxed);
}

/* ---- the queue -------------------------------------------------------- */

/* True if some lane has a task queued and room to start it. A claimed
 * cell counts before its submitter has filled it: the wake decisions
 * this serves must not leave that task to the submitter's own look,
 * which may come before the room (a lane's place) was made. */
bool
pk__tp_work_ready(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++)
        if (tp_ring_count(&tp->lanes[i].q) > 0 && has_room(&tp->lanes[i]))
            return true;
    return atomic_load(&tp->next_full) > 0;
}

/* pk__tp_work_ready for a spinning worker: looks at the cells at the
 * heads, not at the tails that submitters write on every push. A task
 * claimed but not yet filled is missed here; the worker's last look
 * before it parks is pk__tp_work_ready. */
bool
pk__tp_work_seen(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++)
        if (tp_ring_ready(&tp->lanes[i].q) && has_room(&tp->lanes[i]))
            return true;
    return atomic_load_explicit(&tp->next_full, memory_order_relaxed) > 0;
}

size_t
pk__tp_queued(struct pk_threadpool *tp)
{
    size_t n = 0;

    for (size_t i = 0; i < tp->nlanes; i++)
        n += tp_ring_count(&tp->lanes[i].q);
    return n;
}

/* Pushes n tasks of lane l, all or none. Returns 0, PK_EAGAIN (they do
 * not fit now) or PK_ESHUTDOWN (closed). */
int
pk__tp_push(struct tp_lane *l, const struct tp_task *t, size_t n)
{
    return tp_ring_push(&l->q, t, n, false);
}

/* Gives back a task a worker popped (closed or not: it was submitted
 * before). Returns 0 or PK_EAGAIN (full). */
int
pk__tp_push_back(struct tp_lane *l, const struct tp_task *t)
{
    return tp_ring_push(&l->q, t, 1, true);
}

/* Closes every lane's ring to pushes (shutdown). */
void
pk__tp_close_lanes(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++)
        tp_ring_close(&tp->lanes[i].q);
}

/* Once the rings are closed: takes a task pushed before, waiting for a
 * submitter that claimed its cell but has not filled it yet, so that
 * none escapes a cancelling shutdown. False when all lanes are empty. */
bool
pk__tp_pop_closed(struct pk_threadpool *tp, struct tp_task *out)
{
    for (size_t i = 0; i < tp->nlanes; i++) {
        struct tp_ring *q = &tp->lanes[i].q;
        while (tp_ring_unpopped(q)) {
            if (tp_ring_pop(q, out))
                return true;
            sched_yield(); /* its submitter is filling it */
        }
    }
    return false;
}

/* Tasks accepted into l: the ring's pushes plus st_extra. A give-back
 * takes one off st_extra before it pushes, and the tail is read first,
 * so a reader can count one too few for a moment, never one too many;
 * st_seen keeps the figure from going down meanwhile, and at quiescence
 * it is exact. */
uint64_t
pk__tp_lane_submitted(struct tp_lane *l)
{
    uint64_t n = tp_ring_pushed(&l->q);
    uint64_t seen = atomic_load(&l->st_seen);

    n += atomic_load(&l->st_extra);
    while (n > seen &&
           !atomic_compare_exchange_weak(&l->st_seen, &seen, n))
        ;
    return n > seen ? n : seen;
}

/* Wakes submitters blocked on a full queue after a pop from l, once it
 * is half empty: a wake per pop would cost a futex call per task while a
 * fast submitter keeps the queue full, and the workers have half a queue
 * of work meanwhile. Best effort: they also wake every millisecond (see
 * wait_for_room). */
static void
wake_full_waiters(struct pk_threadpool *tp, struct tp_lane *l)
{
    if (atomic_load(&tp->not_full.waiters) &&
        tp_ring_count(&l->q) <= l->cap / 2)
        pk__cv_broadcast(&tp->not_full);
}

/* How many to take from l at once: one, unless the lane's queue is long
 * (at least 4 tasks per thread), then up to max. A private batch hides
 * its tasks from idle workers, new workers and resizes behind a task
 * that blocks; with a short queue that would cost parallelism, with a
 * long one there is work for everybody anyway, and batches save the
 * counters' cache-line traffic. The length is read off the cells, not
 * off the tail: k batches' worth are queued when the cell k steps past
 * the head is filled. The tail is the line each push writes; a worker
 * reading it at every pop cost the next push a cache miss (a fifth of
 * the throughput of tasks with futures). The cells looked at are ones a
 * worker reads anyway to pop them. Cells filled out of order (a claim
 * not yet filled) only make the batch smaller. */
static size_t
batch_size(struct pk_threadpool *tp, struct tp_lane *l, size_t max)
{
    size_t m = atomic_load_explicit(&tp->max_threads, memory_order_relaxed);
    size_t step = 4 * (m ? m : 1);
    uint64_t head;
    size_t k = 1;

    if (max > l->cap / step)
        max = l->cap / step;
    if (max <= 1)
        return 1;
    head = atomic_load_explicit(&l->q.head, memory_order_relaxed);
    if (tp_ring_filled(&l->q, head + max * step - 1))
        return max; /* a long queue: one look */
    while (k + 1 < max && tp_ring_filled(&l->q, head + (k + 1) * step - 1))
        k++;
    return k;
}

/* Takes up to max tasks for w (NULL: a thread that is not a worker) from
 * the lane of highest priority with tasks queued and room, and enters
 * that lane (pk__tp_lane_leave when they have run). Returns how many.
 * The batch is sized (which reads the tail) only when a second task
 * waits behind the first: a short queue, the common case when workers
 * keep up, costs no read of the line submitters write. */
size_t
pk__tp_pop(struct pk_threadpool *tp, struct tp_worker *w,
           struct tp_task *out, size_t max, int *lane, bool *counted)
{
    for (size_t i = 0; i < tp->nlanes; i++) {
        int L = tp->order[i];
        struct tp_lane *l = &tp->lanes[L];
        size_t n = 0;
        if (!tp_ring_ready(&l->q) || !pk__tp_lane_enter(tp, w, L, counted))
            continue;
        if (tp_ring_pop(&l->q, &out[0])) {
            size_t k = max > 1 && tp_ring_ready(&l->q)
                           ? batch_size(tp, l, max) : 1;
            n = 1 + (k > 1 ? tp_ring_pop_n(&l->q, &out[1], k - 1) : 0);
        }
        if (n) {
            wake_full_waiters(tp, l);
            *lane = L;
            return n;
        }
        pk__tp_lane_leave(tp, w, L, *counted);
    }
    return 0;
}

/* Tasks ever pushed: into the lanes' rings, and outside them (next slots,
 * caller-runs). */
size_t
pk__tp_all_pushed(struct pk_threadpool *tp)
{
    size_t n = atomic_load(&tp->next_pushed);

    for (size_t i = 0; i < tp->nlanes; i++)
        n += (size_t)tp_ring_pushed(&tp->lanes[i].q);
    return n;
}

/* Counts n tasks as finished; the one that catches up with every push
 * wakes shutdown. Only shutdown waits for that, and it sets `closed`
 * before it first compares: if this reads `closed` false, our add came
 * before that store (seq_cst both), so shutdown's compare sees it. Until
 * then the pushes (the tails, which submitters write all the time) are
 * not read. */
void
pk__tp_finish(struct pk_threadpool *tp, size_t n)
{
    size_t f = atomic_fetch_add(&tp->finished, n) + n;

    if (atomic_load(&tp->closed) && f == pk__tp_all_pushed(tp))
        pk__cv_broadcast(&tp->idle);
}

bool
pk__tp_all_finished(struct pk_threadpool *tp)
{
    return atomic_load(&tp->finished) == pk__tp_all_pushed(tp);
}

/* ---- the next slots --------------------------------------------------- */

/* Puts t in w's next slot if it is empty. The count goes up before the
 * task is visible, so finished never overtakes the pushes. */
bool
pk__tp_put_next(struct pk_threadpool *tp, struct tp_worker *w,
                const struct tp_task *t)
{
    /* acquire: a thief's copy out of the slot is done before we refill */
    if (atomic_load_explicit(&w->next_state, memory_order_acquire) != 0)
        return false;
    w->next = *t;
    atomic_fetch_add(&tp->next_pushed, 1);
    /* Before the task is visible: a thief's decrement never comes first
     * (next_full would wrap). */
    atomic_fetch_add(&tp->next_full, 1);
    atomic_store_explicit(&w->next_state, 1, memory_order_release);
    return true;
}

/* Takes the task in w's next slot (any thread). */
bool
pk__tp_take_next(struct tp_worker *w, struct tp_task *out)
{
    int full = 1;

    if (atomic_load_explicit(&w->next_state, memory_order_relaxed) != 1 ||
        !atomic_compare_exchange_strong_explicit(
            &w->next_state, &full, 2, memory_order_acquire,
            memory_order_relaxed))
        return false;
    *out = w->next;
    atomic_store_explicit(&w->next_state, 0, memory_order_release);
    atomic_fetch_sub(&w->tp->next_full, 1);
    return true;
}

/* An idle worker takes another's next task (that worker is busy); with
 * self NULL, any worker's. */
bool
pk__tp_steal_next(struct pk_threadpool *tp, struct tp_worker *self,
                  struct tp_task *out)
{
    bool got = false;

    pk__lock_acquire(&tp->glock);
    for (struct tp_worker *r = tp->all_workers; r && !got; r = r->next_all)
        if (r != self)
            got = pk__tp_take_next(r, out);
    pk__lock_release(&tp->glock);
    return got;
}


/* ---- cancelling ------------------------------------------------------- */

/* Cancels a task that will not run: its future CANCELLED, counted as
 * cancelled (the caller counts it finished). */
void
pk__tp_cancel_one(struct pk_threadpool *tp, struct tp_task *t)
{
    if (t->fut)
        pk_future_cancel(t->fut);
    atomic_fetch_add_explicit(&tp->st_cancelled, 1, memory_order_relaxed);
    pk_future_release(t->fut);
    pk__free(tp_task_copy(t));
}

/* Cancels every queued task, once the rings are closed (a cancelling
 * shutdown, or a give-back after it). Callers may race: each task is
 * popped once. */
void
pk__tp_cancel_queued(struct pk_threadpool *tp)
{
    struct tp_task t;
    size_t n = 0;

    while (pk__tp_pop_closed(tp, &t)) {
        pk__tp_cancel_one(tp, &t);
        n++;
    }
    /* Next slots, one at a time: the cancel runs completion callbacks,
     * which must not run under glock (a callback may submit or wait). */
    while (pk__tp_steal_next(tp, NULL, &t)) {
        pk__tp_cancel_one(tp, &t);
        n++;
    }
    if (n)
        pk__tp_finish(tp, n);
}
