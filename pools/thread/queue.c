/* pools/thread/queue.c - the task queue: reservations, the count of
 * finished tasks, and the workers' next slots. */
#include "tp_int.h"

/* ---- the queue -------------------------------------------------------- */

bool
pk__tp_queue_nonempty(struct pk_threadpool *tp)
{
    return tp_ring_count(&tp->q) > 0;
}

/* Reserves n cells; false if they are not free now. */
bool
pk__tp_reserve(struct pk_threadpool *tp, size_t n)
{
    size_t u = atomic_load_explicit(&tp->used, memory_order_relaxed);

    do {
        if (tp->cap - u < n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &tp->used, &u, u + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Gives cells back after a pop; wakes submitters blocked on a full queue
 * (best effort: they also wake every millisecond, see wait_for_room). */
void
pk__tp_unreserve(struct pk_threadpool *tp, size_t n)
{
    atomic_fetch_sub_explicit(&tp->used, n, memory_order_relaxed);
    if (atomic_load(&tp->not_full.waiters))
        pk__cv_broadcast(&tp->not_full);
}

/* Counts n tasks as finished; the one that catches up with every push
 * wakes shutdown. */
size_t
pk__tp_all_pushed(struct pk_threadpool *tp)
{
    return tp_ring_pushed(&tp->q) + atomic_load(&tp->next_pushed);
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

/* An idle worker takes another's next task (that worker is busy). */
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

/* Outcome counts of a batch, added to the shared counters once. */
