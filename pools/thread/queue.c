/* pools/thread/queue.c - the task queue: lanes and their caps,
 * reservations, the count of finished tasks, and the workers' next
 * slots. */
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
    atomic_init(&l->used, 0);
    atomic_init(&l->st_submitted, 0);
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

/* Enters lane L to run its tasks on w: takes a place if the lane has a
 * cap and w is not inside it already. False if the lane is full. Without
 * a worker (cancel_queued emptying the queue) caps do not apply. */
static bool
lane_enter(struct pk_threadpool *tp, struct tp_worker *w, int lane,
           bool *counted)
{
    struct tp_lane *l = &tp->lanes[lane];
    size_t max, r;

    *counted = false;
    if (!w)
        return true;
    if (w->in_lane[lane] > 0) {
        w->in_lane[lane]++;
        *counted = true;
        return true;
    }
    max = atomic_load_explicit(&l->max_workers, memory_order_relaxed);
    if (!max)
        return true;
    r = atomic_load_explicit(&l->running, memory_order_relaxed);
    do {
        if (r >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &l->running, &r, r + 1, memory_order_relaxed, memory_order_relaxed));
    w->in_lane[lane] = 1;
    *counted = true;
    return true;
}

/* Leaves what lane_enter entered. A place given back lets a queued task
 * of the lane start: make sure a worker comes for it. */
void
pk__tp_lane_leave(struct pk_threadpool *tp, struct tp_worker *w, int lane,
                  bool counted)
{
    struct tp_lane *l = &tp->lanes[lane];

    if (!counted || --w->in_lane[lane] > 0)
        return;
    /* seq_cst: pairs with the pusher's fence in pk__tp_maybe_wake, so
     * either it sees the place free or we see its task. */
    atomic_fetch_sub_explicit(&l->running, 1, memory_order_seq_cst);
    if (tp_ring_count(&l->q) > 0)
        pk__tp_maybe_wake(tp);
}

/* A worker about to block gives back the places it holds (it runs
 * nothing while blocked), as the pool's max is compensated for it: with
 * its nesting bound reached it may not run the child it waits on, and
 * nobody else could while it held the lane's last place. Returns whether
 * it held any. */
bool
pk__tp_lanes_step_out(struct pk_threadpool *tp, struct tp_worker *w)
{
    bool any = false;

    for (size_t i = 1; i < tp->nlanes; i++) {
        if (w->in_lane[i] == 0)
            continue;
        atomic_fetch_sub_explicit(&tp->lanes[i].running, 1,
                                  memory_order_relaxed);
        any = true;
    }
    return any;
}

/* Takes them back, above the cap if others filled it meanwhile (as a
 * compensated pool goes above max for a while). */
void
pk__tp_lanes_step_in(struct pk_threadpool *tp, struct tp_worker *w)
{
    for (size_t i = 1; i < tp->nlanes; i++)
        if (w->in_lane[i] > 0)
            atomic_fetch_add_explicit(&tp->lanes[i].running, 1,
                                      memory_order_relaxed);
}

/* ---- the queue -------------------------------------------------------- */

/* True if some lane has a task queued and room to start it. */
bool
pk__tp_work_ready(struct pk_threadpool *tp)
{
    for (size_t i = 0; i < tp->nlanes; i++)
        if (tp_ring_count(&tp->lanes[i].q) > 0 && has_room(&tp->lanes[i]))
            return true;
    return false;
}

size_t
pk__tp_queued(struct pk_threadpool *tp)
{
    size_t n = 0;

    for (size_t i = 0; i < tp->nlanes; i++)
        n += tp_ring_count(&tp->lanes[i].q);
    return n;
}

/* Reserves n cells of l; false if they are not free now. */
bool
pk__tp_reserve(struct tp_lane *l, size_t n)
{
    size_t u = atomic_load_explicit(&l->used, memory_order_relaxed);

    do {
        if (l->cap - u < n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &l->used, &u, u + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Gives cells back after a pop; wakes submitters blocked on a full queue
 * (best effort: they also wake every millisecond, see wait_for_room). */
void
pk__tp_unreserve(struct pk_threadpool *tp, struct tp_lane *l, size_t n)
{
    atomic_fetch_sub_explicit(&l->used, n, memory_order_relaxed);
    if (atomic_load(&tp->not_full.waiters))
        pk__cv_broadcast(&tp->not_full);
}

/* Pushes a task into the cell its submitter reserved in its lane. */
void
pk__tp_push(struct pk_threadpool *tp, const struct tp_task *t)
{
    tp_ring_push(&tp->lanes[t->lane].q, t);
}

/* How many to take from l at once: one, unless the lane's queue is long
 * (at least 4 tasks per thread), then up to max. A private batch hides
 * its tasks from idle workers, new workers and resizes behind a task
 * that blocks; with a short queue that would cost parallelism, with a
 * long one there is work for everybody anyway, and batches save the
 * counters' cache-line traffic. */
static size_t
batch_size(struct pk_threadpool *tp, struct tp_lane *l, size_t max)
{
    size_t m = atomic_load_explicit(&tp->max_threads, memory_order_relaxed);
    size_t k = max > 1 ? tp_ring_count(&l->q) / (4 * (m ? m : 1)) : 1;

    return k < 1 ? 1 : k > max ? max : k;
}

/* Takes up to max tasks for w (NULL: a thread that is not a worker) from
 * the lane of highest priority with tasks queued and room, and enters
 * that lane (pk__tp_lane_leave when they have run). Returns how many. */
size_t
pk__tp_pop(struct pk_threadpool *tp, struct tp_worker *w,
           struct tp_task *out, size_t max, int *lane, bool *counted)
{
    for (size_t i = 0; i < tp->nlanes; i++) {
        int L = tp->order[i];
        struct tp_lane *l = &tp->lanes[L];
        size_t k, n = 0;
        if (tp_ring_count(&l->q) == 0 || !lane_enter(tp, w, L, counted))
            continue;
        k = batch_size(tp, l, max);
        while (n < k && tp_ring_pop(&l->q, &out[n]))
            n++;
        if (n) {
            pk__tp_unreserve(tp, l, n);
            *lane = L;
            return n;
        }
        pk__tp_lane_leave(tp, w, L, *counted);
    }
    return 0;
}

/* Counts n tasks as finished; the one that catches up with every push
 * wakes shutdown. */
size_t
pk__tp_all_pushed(struct pk_threadpool *tp)
{
    size_t n = atomic_load(&tp->next_pushed);

    for (size_t i = 0; i < tp->nlanes; i++)
        n += tp_ring_pushed(&tp->lanes[i].q);
    return n;
}

void
pk__tp_finish(struct pk_threadpool *tp, size_t n)
{
    size_t f = atomic_fetch_add(&tp->finished, n) + n;

    if (f == pk__tp_all_pushed(tp))
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

