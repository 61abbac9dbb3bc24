/* pools/thread/lanes.c - the public calls on lanes (find one, change its
 * cap, its stats) and the executor views of the pool or of one lane. The
 * lanes themselves (rings, caps, places) are queue.c's. */
#include <string.h>

#include "alloc.h"
#include "tp_int.h"

/* ---- lanes ------------------------------------------------------------ */

int
pk_threadpool_lane(pk_threadpool *tp, const char *name, int *lane)
{
    int rc = pk__tp_validate(tp);

    if (rc == 0 && (!name || !lane))
        rc = PK_EINVAL;
    if (rc)
        return rc;
    for (size_t i = 1; i < tp->nlanes; i++) {
        if (strcmp(tp->lanes[i].name, name) == 0) {
            *lane = (int)i;
            return 0;
        }
    }
    return PK_ENOENT;
}

static int
check_lane(struct pk_threadpool *tp, int lane)
{
    int rc = pk__tp_validate(tp);

    if (rc == 0 && (lane < 0 || (size_t)lane >= tp->nlanes))
        rc = PK_EINVAL;
    return rc;
}

/* A higher cap lets queued tasks start now: a worker for each (a push
 * wakes one per task; here nothing else would). */
static void
wake_for_cap(struct pk_threadpool *tp, struct tp_lane *l, size_t old,
             size_t cap)
{
    size_t more = cap == 0 ? SIZE_MAX : cap > old ? cap - old : 0;
    size_t queued = tp_ring_count(&l->q);

    if (old == 0)
        return; /* it had no cap: nothing waited for one */
    for (size_t i = 0; i < more && i < queued; i++) {
        if (atomic_load(&tp->active) >= atomic_load(&tp->max_threads))
            break;
        pk__tp_wake_one(tp);
    }
}

int
pk_threadpool_lane_set_cap(pk_threadpool *tp, int lane, size_t max_threads)
{
    int rc = check_lane(tp, lane);

    if (rc == 0 && lane == 0 && max_threads)
        rc = PK_EINVAL; /* the default lane has no cap */
    if (rc == 0 && atomic_load(&tp->closed))
        rc = PK_ESHUTDOWN;
    if (rc)
        return rc;
    wake_for_cap(tp, &tp->lanes[lane],
                 atomic_exchange(&tp->lanes[lane].max_workers, max_threads),
                 max_threads);
    return 0;
}

int
pk_threadpool_lane_stats_get(pk_threadpool *tp, int lane, pk_lane_stats *out)
{
    int rc = check_lane(tp, lane);
    struct tp_lane *l;

    if (rc == 0 && !out)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    l = &tp->lanes[lane];
    out->queued = tp_ring_count(&l->q);
    out->running = atomic_load(&l->running);
    out->max_threads = atomic_load(&l->max_workers);
    out->submitted = pk__tp_lane_submitted(l);
    return 0;
}

/* ---- the executor view ------------------------------------------------ */

/* What an executor view refers to: the pool, and the lane its tasks
 * queue in. */
struct tp_view {
    struct pk_threadpool *tp;
    pk_task_options opts;
};

static int
ex_submit(void *impl, const pk_task *task, pk_future **fut)
{
    struct tp_view *v = impl;

    return pk_threadpool_submit_opts(v->tp, task, &v->opts, fut);
}

static int
ex_submit_many(void *impl, const pk_task *tasks, size_t n, pk_future **futs)
{
    struct tp_view *v = impl;

    return pk_threadpool_submit_many_opts(v->tp, tasks, n, &v->opts, futs);
}

static int
ex_capacity(void *impl, size_t *out)
{
    struct tp_view *v = impl;
    struct tp_lane *l = &v->tp->lanes[v->opts.lane];
    size_t u = tp_ring_count(&l->q);
    int rc = pk__tp_validate(v->tp);

    if (rc)
        return rc;
    if (atomic_load(&v->tp->closed))
        return PK_ESHUTDOWN;
    *out = l->cap > u ? l->cap - u : 0;
    return 0;
}

static int
ex_shutdown(void *impl, int how, int timeout_ms)
{
    struct tp_view *v = impl;

    return pk_threadpool_shutdown(v->tp, how, timeout_ms);
}

static void
ex_destroy(void *impl)
{
    pk__free(impl);
}

int
pk_threadpool_lane_executor(pk_threadpool *tp, int lane, pk_executor **out)
{
    static const pk_executor_ops ops = {
        ex_submit, ex_submit_many, ex_capacity, ex_shutdown, ex_destroy
    };
    struct tp_view *v;
    int rc = check_lane(tp, lane);

    if (rc == 0 && !out)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    v = pk__calloc(1, sizeof *v);
    if (!v)
        return PK_ENOMEM;
    v->tp = tp;
    v->opts.lane = lane;
    rc = pk_executor_create(out, &ops, v);
    if (rc)
        pk__free(v);
    return rc;
}

int
pk_threadpool_executor(pk_threadpool *tp, pk_executor **out)
{
    return pk_threadpool_lane_executor(tp, 0, out);
}
