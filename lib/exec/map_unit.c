/* lib/exec/map_unit.c - one unit of a map: up to `chunk` fn tasks (or one
 * named task) submitted as one executor task. The consumer (map.c) makes
 * and frees it; runner runs its items on a worker, timing them for
 * automatic chunking (m->est_ns); on_done, its future's callback, marks it
 * done under m->lock and wakes the consumer: nothing polls.
 *
 * A task may finish its own future (pk_task_run allows it), and a fn
 * unit's future is every item's `self`: finished early, the unit is done
 * only when runner stops writing its items (unit.run says who finishes
 * it). After unit_finished unlocks m->lock it touches neither the unit nor
 * the map: pk_map_destroy may free them. */
#include <poolkit/executor.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "../kit/alloc.h"
#include "../kit/sync.h"
#include "map_int.h"

/* ---- made and freed: the consumer ------------------------------------------------------------- */

struct unit *
pk__map_unit_new(struct pk_map *m, size_t cap)
{
    struct unit *u;

    if (cap > (SIZE_MAX - sizeof *u) / sizeof u->items[0])
        return NULL;
    u = pk__alloc(sizeof *u + cap * sizeof u->items[0]);
    if (!u)
        return NULL;
    memset(u, 0, sizeof *u);
    atomic_init(&u->run, RUN_NOT);
    u->m = m;
    u->cap = cap;
    u->first = m->nplaced;
    return u;
}

void
pk__map_unit_free(struct pk_map *m, struct unit *u)
{
    for (size_t i = 0; i < u->n; i++) {
        struct item *it = &u->items[i];

        if (it->res.value && it->res.free_fn)
            it->res.free_fn(it->res.value);
        pk__free(it->err);
        if (m->release)
            m->release(m->user, &it->task);
    }
    pk_future_release(u->fut);
    pk__free(u);
}

/* ---- running: on a worker thread --------------------------------------- */

static void
run_item(struct item *it, pk_future *self)
{
    pk_result out;
    pk_error e;
    int rc;

    memset(&out, 0, sizeof out);
    pk_error_clear(&e);
    rc = it->task.fn(it->task.arg, self, &out, &e);
    if (rc == 0) {
        it->res = out;
        it->code = 0;
        return;
    }
    if (rc > 0) /* a bug in the task, as pk_task_run reports it */
        rc = pk_error_set(&e, PK_ETASK, rc,
                          "task returned %d: tasks return 0 or a negative "
                          "code", rc);
    it->code = rc;
    if (e.msg[0] || e.sys) {
        /* Without memory the code alone still says what happened. */
        it->err = pk__alloc(sizeof *it->err);
        if (it->err) {
            *it->err = e;
            it->err->code = rc;
        }
    }
}

static void unit_finished(struct unit *u);

/* Runs a fn unit's items in turn, stopping between items once
 * cancellation was asked for (the rest stay NOT_RUN and are reported as
 * the future's outcome: cancelled). Returns that outcome. */
static int
run_items(struct unit *u, pk_future *self)
{
    uint64_t t0 = pk__now_ns();
    size_t ran = 0;

    for (size_t i = 0; i < u->n; i++) {
        if (u->items[i].skip)
            continue;
        if (pk_future_cancel_requested(self))
            return PK_ECANCELED;
        run_item(&u->items[i], self);
        ran++;
    }
    if (ran) {
        uint64_t per = (pk__now_ns() - t0) / ran;

        atomic_store_explicit(&u->m->est_ns, per ? per : 1,
                              memory_order_relaxed);
    }
    return 0;
}

/* The executor task of a fn unit. If an item finished the unit's future
 * (its `self`) meanwhile, on_done left the unit to us: finished only
 * now, after which u and m are not ours to touch. */
int
pk__map_runner(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct unit *u = arg;
    int rc;

    (void)out;
    (void)err;
    atomic_store(&u->run, RUN_ON);
    rc = run_items(u, self);
    if (atomic_exchange(&u->run, RUN_NOT) == RUN_DONE_EARLY)
        unit_finished(u);
    return rc;
}

/* The completion callback: on the finishing thread, no poolkit lock held.
 * While runner is on the items (an item finished its own `self`), the
 * unit is left to runner. */
void
pk__map_on_done(void *arg, pk_future *f)
{
    struct unit *u = arg;
    int on = RUN_ON;

    (void)f;
    if (atomic_compare_exchange_strong(&u->run, &on, RUN_DONE_EARLY))
        return;
    unit_finished(u);
}

/* Marks u done for the consumer. After the unlock it must not touch u or
 * m: destroy may free them. */
static void
unit_finished(struct unit *u)
{
    struct pk_map *m = u->m;

    pk__lock_acquire(&m->lock);
    u->done = 1;
    if (m->unordered) {
        u->done_next = NULL;
        if (m->done_tail)
            m->done_tail->done_next = u;
        else
            m->done_head = u;
        m->done_tail = u;
    }
    m->items_done += u->n;
    m->pending--;
    m->seq++;
    pk__cv_broadcast(&m->cond);
    pk__lock_release(&m->lock);
}
