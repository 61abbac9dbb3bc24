/* pools/process/queue.c - the tasks waiting for a worker, and the pool's
 * state, under pp->lock.
 *
 * A job is queued by a submit (which waits for room up to its deadline)
 * and taken by the supervisor when it has a worker for it; taking it
 * counts it busy in the same step, so a shutdown waiting for the end
 * never sees a job that is neither queued nor running. A shutdown sets
 * `how` (only ever up: DRAIN, CANCEL, KILL) and, from CANCEL on, takes
 * the queued jobs out and cancels their futures after the lock is
 * released (their callbacks run on the caller's thread). */
#include "pp_int.h"

void
pk__pp_job_free(struct pp_job *j)
{
    if (!j)
        return;
    pk_future_release(j->fut);
    pk__free(j->name);
    if (!j->shared)
        pk__free(j->data);
    pk__free(j);
}

int
pk__pp_queue_push(struct pk_procpool *pp, struct pp_job *list, size_t n,
                  uint64_t deadline, bool wait)
{
    struct pp_job *last = list;
    int rc = 0;

    if (n > pp->queue_size)
        return PK_EFULL;
    while (last->next)
        last = last->next;
    pk__lock_acquire(&pp->lock);
    for (;;) {
        if (pp->how != PK__PP_OPEN) {
            rc = PK_ESHUTDOWN;
            break;
        }
        if (pp->nqueued + n <= pp->queue_size)
            break;
        if (!wait) {
            rc = PK_EAGAIN;
            break;
        }
        if (pk__now_ns() >= deadline) {
            rc = PK_ETIMEDOUT;
            break;
        }
        pk__cv_wait_until(&pp->room, &pp->lock, deadline);
    }
    if (rc == 0) {
        if (pp->tail)
            pp->tail->next = list;
        else
            pp->head = list;
        pp->tail = last;
        pp->nqueued += n;
    }
    pk__lock_release(&pp->lock);
    return rc;
}

struct pp_job *
pk__pp_queue_pop(struct pk_procpool *pp)
{
    struct pp_job *j;

    pk__lock_acquire(&pp->lock);
    j = pp->head;
    if (j) {
        pp->head = j->next;
        if (!pp->head)
            pp->tail = NULL;
        pp->nqueued--;
        pp->nbusy++;
        pk__cv_broadcast(&pp->room);
    }
    pk__lock_release(&pp->lock);
    return j;
}

struct pp_job *
pk__pp_queue_take_all(struct pk_procpool *pp)
{
    struct pp_job *list;

    pk__lock_acquire(&pp->lock);
    list = pp->head;
    pp->head = pp->tail = NULL;
    pp->nbusy += pp->nqueued;
    pp->nqueued = 0;
    pk__cv_broadcast(&pp->room);
    pk__lock_release(&pp->lock);
    return list;
}

void
pk__pp_queue_unpop(struct pk_procpool *pp, struct pp_job *j)
{
    bool cancel;

    pk__lock_acquire(&pp->lock);
    cancel = pp->how >= PK_SHUTDOWN_CANCEL;
    pp->nbusy--;
    if (cancel) {
        if (pp->nbusy == 0 && pp->nqueued == 0)
            pk__cv_broadcast(&pp->quiet);
    } else {
        j->next = pp->head;
        pp->head = j;
        if (!pp->tail)
            pp->tail = j;
        pp->nqueued++;
    }
    pk__lock_release(&pp->lock);
    if (cancel) {
        pk_future_cancel(j->fut);
        pk_future_fail(j->fut, PK_ECANCELED, 0, "pk_procpool: task '%s' "
                       "cancelled by a shutdown", j->name);
        pk__pp_job_free(j);
        atomic_fetch_add_explicit(&pp->cancelled, 1, memory_order_relaxed);
    }
}

void
pk__pp_queue_done(struct pk_procpool *pp)
{
    pk__lock_acquire(&pp->lock);
    pp->nbusy--;
    if (pp->nbusy == 0 && pp->nqueued == 0)
        pk__cv_broadcast(&pp->quiet);
    pk__lock_release(&pp->lock);
}

bool
pk__pp_queue_any(struct pk_procpool *pp)
{
    bool any;

    pk__lock_acquire(&pp->lock);
    any = pp->head != NULL;
    pk__lock_release(&pp->lock);
    return any;
}

int
pk__pp_queue_how(struct pk_procpool *pp)
{
    int how;

    pk__lock_acquire(&pp->lock);
    how = pp->how;
    pk__lock_release(&pp->lock);
    return how;
}

int
pk__pp_queue_shutdown(struct pk_procpool *pp, int how)
{
    struct pp_job *list = NULL;
    uint64_t n = 0;

    if (how != PK_SHUTDOWN_DRAIN && how != PK_SHUTDOWN_CANCEL &&
        how != PK_SHUTDOWN_KILL)
        return PK_EINVAL;
    pk__lock_acquire(&pp->lock);
    if (pp->how == PK__PP_OPEN || how > pp->how)
        pp->how = how;
    if (pp->how >= PK_SHUTDOWN_CANCEL) {
        list = pp->head;
        pp->head = pp->tail = NULL;
        pp->nqueued = 0;
        if (pp->nbusy == 0)
            pk__cv_broadcast(&pp->quiet);
    }
    pk__cv_broadcast(&pp->room); /* submits waiting: PK_ESHUTDOWN */
    pk__lock_release(&pp->lock);
    while (list) {
        struct pp_job *j = list;
        list = j->next;
        pk_future_cancel(j->fut);
        pk__pp_job_free(j);
        n++;
    }
    atomic_fetch_add_explicit(&pp->cancelled, n, memory_order_relaxed);
    return 0;
}

int
pk__pp_queue_wait_quiet(struct pk_procpool *pp, uint64_t deadline)
{
    int rc = 0;

    pk__lock_acquire(&pp->lock);
    while (pp->nqueued || pp->nbusy) {
        if (pk__now_ns() >= deadline) {
            rc = PK_ETIMEDOUT;
            break;
        }
        pk__cv_wait_until(&pp->quiet, &pp->lock, deadline);
    }
    pk__lock_release(&pp->lock);
    return rc;
}
