/* lib/exec/map.c - map, as_completed and chunking, written once on
 * pk_executor.
 *
 * A map reads input items through the caller's next function, packs them
 * into "units" and submits each unit as one executor task. A unit is
 * either one named task, submitted as it is (so it can cross a process),
 * or, with an explicit chunk, up to `chunk` named tasks of one name
 * packed into one PK_TASK_CHUNK task (chunk.c: its result packs each
 * call's outcome, unpacked into the items at the first delivery), or up
 * to `chunk` fn tasks run in turn by `runner`, which stores each item's
 * result or error in the unit. The unit's future gets a completion
 * callback (on_done) that marks the unit done under m->lock, counts its
 * items as finished and wakes the consumer: nothing polls. This file is
 * the consumer; map_unit.c is the unit (map_int.h), map_array.c
 * pk_map_array.
 *
 * The window. `nread - ndelivered` (items read and not yet handed to the
 * consumer) never exceeds `window`: that is the reorder buffer in ordered
 * mode and the bound on memory in both modes, however long the input. A
 * fn unit is started only when a whole chunk fits, so an explicit chunk
 * size is kept exactly (only the input's end or a named item cuts a unit
 * short).
 *
 * Delivery. Ordered: the oldest live unit (oldest(m); units are made in
 * input order) is delivered once it is done. Unordered: units are
 * delivered in the order their callbacks ran (m->done_head). The unit
 * being delivered is m->cur; it is freed after its last item.
 *
 * Automatic chunking. runner times each unit and stores the time per item
 * in m->est_ns; the next unit gets enough items for about CHUNK_TARGET_NS
 * of work, between 1 and chunk_cap. The first units, made before any
 * timing exists, carry one item each.
 *
 * Which thread touches what. Everything outside the "m->lock" fields
 * belongs to the consumer (the thread in pk_map_create, pk_map_next or
 * pk_map_destroy: one at a time). A unit's items are written by the
 * consumer before submit (the executor's queue publishes them to the
 * worker), by runner while it runs, and read by the consumer only after it
 * saw u->done under m->lock, which on_done set after the future finished:
 * the future's release/acquire and the lock order those accesses. No user
 * code (next, progress, release, the tasks) runs with m->lock held, and
 * m->lock is a leaf: its holder calls nothing in poolkit.
 *
 * End of life. pk_map_destroy cancels every live unit's future and waits
 * until m->pending (units whose callback has not run) is 0; after that no
 * thread can reach the map, so it is freed. on_done touches neither the
 * unit nor the map after it unlocks m->lock. */
#include <poolkit/executor.h>

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"
#include "../kit/dlist.h"
#include "../kit/sync.h"
#include "executor_int.h"
#include "map_int.h"

#define DEFAULT_WINDOW 1024
#define CHUNK_MAX 1024
/* Automatic chunking aims at this much work per executor task: enough
 * that the executor's per-task cost (a few microseconds) stays small. */
#define CHUNK_TARGET_NS 100000u
#define TASK_NAME_MAX 127

/* ---- live units: the consumer ----------------------------------------- */

static void
link_unit(struct pk_map *m, struct unit *u)
{
    pk__dlist_push_tail(&m->units, &u->link);
}

static void
unlink_unit(struct pk_map *m, struct unit *u)
{
    pk__dlist_remove(&m->units, &u->link);
}

/* The oldest live unit, or NULL. Consumer only. */
static struct unit *
oldest(const struct pk_map *m)
{
    return m->units.head ? PK__CONTAINER(m->units.head, struct unit, link)
                         : NULL;
}

/* ---- reading and submitting: the consumer ------------------------------ */

static void
defer_error(struct pk_map *m, int code, const char *what)
{
    m->input_end = 1;
    if (m->defer_code)
        return;
    m->defer_code = code;
    snprintf(m->defer_msg, sizeof m->defer_msg, "map stopped: %s: %s", what,
             pk_strerror(code));
}

/* Items for the next fn unit. */
static size_t
chunk_size(struct pk_map *m)
{
    uint64_t est, k;

    if (m->chunk)
        return m->chunk;
    est = atomic_load_explicit(&m->est_ns, memory_order_relaxed);
    if (est == 0)
        return 1; /* nothing timed yet */
    k = (CHUNK_TARGET_NS + est - 1) / est;
    return k < m->chunk_cap ? (size_t)k : m->chunk_cap;
}

static int
is_named(const pk_task *t)
{
    return t->name != NULL && t->fn == NULL;
}

/* Whether named item t may share an executor task with others of its
 * name: only when a chunk was asked for (a named item crosses processes:
 * automatic timing cannot see its cost), and not for bytes in a shared
 * region (those travel as a pointer, alone). */
static int
chunkable(const struct pk_map *m, const pk_task *t)
{
    return m->chunk > 1 && !(t->flags & PK_TASK_SHARED);
}

/* Mirrors the executor's check, so a bad item fails alone instead of
 * ending the map at submit. */
static int
task_valid(const pk_task *t)
{
    size_t len;

    if ((t->fn != NULL) == (t->name != NULL))
        return 0;
    if (t->flags & ~(unsigned)PK_TASK_SHARED)
        return 0;
    if (t->fn)
        return 1;
    len = strnlen(t->name, TASK_NAME_MAX + 1);
    return len >= 1 && len <= TASK_NAME_MAX && (t->data || !t->len);
}

/* Takes the next item: the one held back, or a new one from next.
 * Returns 0 (*t filled) or 1 (no more input: ended, failed or stopped). */
static int
take_item(struct pk_map *m, pk_task *t)
{
    int rc;

    if (m->has_la) {
        *t = m->la;
        m->has_la = 0;
        return 0;
    }
    if (m->input_end)
        return 1;
    memset(t, 0, sizeof *t);
    rc = m->next(m->user, t);
    if (rc > 0) {
        m->input_end = 1;
        return 1;
    }
    if (rc < 0) {
        defer_error(m, rc, "the input's next function failed");
        return 1;
    }
    m->nread++;
    return 0;
}

static void
place(struct pk_map *m, struct unit *u, const pk_task *t)
{
    struct item *it = &u->items[u->n++];

    memset(it, 0, sizeof *it);
    it->task = *t;
    it->code = NOT_RUN;
    if (!task_valid(t)) {
        it->skip = 1;
        it->code = PK_EINVAL;
    }
    m->nplaced++;
}

/* Room for k more items in the window, counting the held-back one as
 * already read. */
static int
room_for(struct pk_map *m, size_t k)
{
    size_t used = m->nread - m->ndelivered;

    return used <= m->window && m->window - used + (size_t)m->has_la >= k;
}

/* Makes the next unit from the input. Returns 0 with *out (NULL when
 * there is no room or no input), or PK_ENOMEM (the item stays held). */
static int
build(struct pk_map *m, struct unit **out)
{
    size_t k = chunk_size(m);
    struct unit *u = NULL;
    pk_task t;

    *out = NULL;
    if (!room_for(m, k) && !(m->has_la && is_named(&m->la) &&
                             !chunkable(m, &m->la)))
        return 0;
    while (!u || u->n < u->cap) {
        int named;

        if (take_item(m, &t))
            break;
        named = is_named(&t) && task_valid(&t);
        if (u && (named != u->named ||
                  (named && !(u->packable && chunkable(m, &t) &&
                              !strcmp(t.name, u->items[0].task.name))))) {
            m->la = t; /* another kind of unit: the next one */
            m->has_la = 1;
            break;
        }
        if (!u) {
            int alone = named && !chunkable(m, &t);

            u = pk__map_unit_new(m, alone ? 1 : k);
            if (!u) {
                m->la = t;
                m->has_la = 1;
                return PK_ENOMEM;
            }
            u->named = named;
            u->packable = named && !alone;
        }
        place(m, u, &t);
    }
    *out = u;
    return 0;
}

/* The calls of a named unit of several items, packed (pk__alloc'd: the
 * executor copies them at submit). */
static void *
pack(const struct unit *u, size_t *len)
{
    size_t bytes = 0;
    char *buf, *p;

    for (size_t i = 0; i < u->n; i++)
        bytes += u->items[i].task.len;
    *len = pk__chunk_calls_size(u->n, bytes);
    buf = pk__alloc(*len);
    if (!buf)
        return NULL;
    p = pk__chunk_calls_begin(buf, (uint32_t)u->n);
    for (size_t i = 0; i < u->n; i++)
        p = pk__chunk_calls_add(p, u->items[i].task.data,
                                u->items[i].task.len);
    return buf;
}

/* Submits u and hooks its completion. Returns 0 or submit's code (then
 * nothing changed hands). */
static int
submit(struct pk_map *m, struct unit *u)
{
    void *packed = NULL;
    pk_task t;
    int rc;

    if (u->named && u->n > 1) {
        memset(&t, 0, sizeof t);
        t.name = u->items[0].task.name;
        t.flags = PK_TASK_CHUNK;
        t.data = packed = pack(u, &t.len);
        if (!packed)
            return PK_ENOMEM;
        u->packed = 1;
    } else if (u->named) {
        t = u->items[0].task;
    } else {
        memset(&t, 0, sizeof t);
        t.fn = pk__map_runner;
        t.arg = u;
    }
    rc = pk_executor_submit(m->ex, &t, &u->fut);
    pk__free(packed);
    if (rc)
        return rc;
    link_unit(m, u);
    pk__lock_acquire(&m->lock);
    m->pending++; /* before the callback can run */
    pk__lock_release(&m->lock);
    if (pk_future_on_complete(u->fut, pk__map_on_done, u) != 0) {
        /* No memory for the callback node: wait here instead, so the
         * unit still finishes through on_done. Slow, but correct. */
        pk_future_wait(u->fut, PK_WAIT_FOREVER);
        pk__map_on_done(u, u->fut);
    }
    return 0;
}

/* Forgets a unit that was never submitted, and every read-ahead item. */
static void
drop_unsubmitted(struct pk_map *m)
{
    if (m->held) {
        m->ndelivered += m->held->n;
        pk__map_unit_free(m, m->held);
        m->held = NULL;
    }
    if (m->has_la) {
        m->has_la = 0;
        m->ndelivered++;
        if (m->release)
            m->release(m->user, &m->la);
    }
}

/* With a timeout and work in flight, a submit that would block (the
 * executor full) is not made: it could outlast the timeout. The unit is
 * held for after the next completion, which is waited for with the
 * deadline. */
static bool
would_block(struct pk_map *m)
{
    size_t room;

    return m->deadline != UINT64_MAX && oldest(m) &&
           pk_executor_capacity(m->ex, &room) == 0 && room == 0;
}

/* Submits a unit; on EAGAIN/EFULL (or would_block) with work in flight it
 * is held and retried after the next completion. Returns 0 if the caller
 * may go on. */
static int
try_submit(struct pk_map *m, struct unit *u)
{
    int rc = would_block(m) ? PK_EAGAIN : submit(m, u);

    if (rc == 0)
        return 0;
    m->held = u;
    if ((rc == PK_EAGAIN || rc == PK_EFULL) && oldest(m))
        return -1; /* retry later */
    defer_error(m, rc, "the executor refused a task");
    drop_unsubmitted(m);
    return -1;
}

static void time_out(struct pk_map *m);

static bool
past_deadline(const struct pk_map *m)
{
    return m->deadline != UINT64_MAX && pk__now_ns() >= m->deadline;
}

/* Reads and submits until the window is full or the input ends, or the
 * timeout passed: an executor that runs tasks as they are submitted (the
 * inline one, caller-runs) or a submit that blocked must not carry the
 * map past it. */
static void
refill(struct pk_map *m)
{
    struct unit *u;
    int rc;

    if (m->fatal)
        return;
    if (past_deadline(m)) {
        time_out(m);
        return;
    }
    if (m->held) {
        u = m->held;
        m->held = NULL;
        if (try_submit(m, u))
            return;
    }
    for (;;) {
        rc = build(m, &u);
        if (rc) {
            defer_error(m, rc, "no memory for the next chunk");
            drop_unsubmitted(m);
            return;
        }
        if (!u || try_submit(m, u))
            return;
        if (past_deadline(m)) {
            time_out(m);
            return;
        }
    }
}

/* ---- delivering: the consumer ----------------------------------------- */

static void
report_progress(struct pk_map *m)
{
    size_t done, total;

    if (!m->progress)
        return;
    pk__lock_acquire(&m->lock);
    done = m->items_done;
    pk__lock_release(&m->lock);
    total = m->input_end && !m->defer_code ? m->nplaced : m->total_hint;
    if (m->reported && done == m->rep_done && total == m->rep_total)
        return;
    m->reported = 1;
    m->rep_done = done;
    m->rep_total = total;
    m->progress(m->progress_user, done, total);
}

/* The item's outcome when it never ran: what happened to the unit's
 * future (cancelled, or failed by the executor, e.g. a worker died). */
static int
not_run(struct unit *u, pk_error *err)
{
    pk_error e;

    if (pk_future_error(u->fut, &e) != 0 || e.code == 0)
        pk_error_set(&e, PK_ECANCELED, 0, NULL);
    if (err)
        *err = e;
    return e.code;
}

/* One outcome of a chunk into it; a failure's detail kept. */
static int
unpack_one(struct pk__chunk_reader *rd, struct item *it)
{
    pk_error e;
    int rc = pk__chunk_next(rd, &it->code, &e, &it->res);

    if (rc == 0 && it->code && (e.msg[0] || e.sys)) {
        it->err = pk__alloc(sizeof *it->err);
        if (it->err)
            *it->err = e;
    }
    return rc;
}

/* A chunk's outcomes into its items, once. A chunk that failed as a
 * whole (a worker died, a cancel) leaves them NOT_RUN: each reports the
 * chunk's error. */
static void
unpack(struct unit *u)
{
    struct pk__chunk_reader rd;
    pk_result r;
    size_t i = 0;
    int rc;

    u->unpacked = 1;
    if (pk_future_take_result(u->fut, &r) != 0)
        return;
    rc = pk__chunk_begin(&rd, r.value, r.len, (uint32_t)u->n);
    while (rc == 0 && i < u->n && (rc = unpack_one(&rd, &u->items[i])) == 0)
        i++;
    for (; i < u->n; i++) {
        u->items[i].code = rc;
        u->items[i].err = pk__alloc(sizeof *u->items[i].err);
        if (u->items[i].err)
            pk_error_set(u->items[i].err, rc, 0, "%s",
                         rc == PK_ENOMEM ? "pk_map: no memory for a "
                                           "chunk's outcome"
                                         : "pk_map: a chunk's outcomes "
                                           "were malformed or cut short");
    }
    if (r.value && r.free_fn)
        r.free_fn(r.value);
}

/* Hands out u's next item. */
static int
deliver(struct pk_map *m, pk_result *res, size_t *index, pk_error *err)
{
    struct unit *u = m->cur;
    struct item *it = &u->items[u->pos];
    pk_error scratch;
    pk_result r;
    int rc;

    memset(&r, 0, sizeof r);
    if (index)
        *index = u->first + u->pos;
    u->pos++;
    m->ndelivered++;
    if (u->packed && !u->unpacked)
        unpack(u);
    if (u->named && !u->packed) {
        rc = pk_future_take_result(u->fut, &r);
        if (rc) /* fills err, and marks the failure read */
            pk_future_error(u->fut, err ? err : &scratch);
    } else if (it->code == NOT_RUN) {
        rc = not_run(u, err);
    } else {
        rc = it->code;
        r = it->res;
        memset(&it->res, 0, sizeof it->res);
        if (rc && err && it->err)
            *err = *it->err;
        else if (rc && it->skip)
            pk_error_set(err, rc, 0,
                         "invalid task: set exactly one of fn and name "
                         "(a name of 1..%d bytes, data for len)",
                         TASK_NAME_MAX);
        else if (rc)
            pk_error_set(err, rc, 0, NULL);
    }
    if (rc == 0 && res)
        *res = r;
    else if (r.value && r.free_fn)
        r.free_fn(r.value);
    return rc;
}

enum { GOT_UNIT, NO_UNITS, WOKE, TIMED_OUT };

/* Under m->lock: the unit to deliver next, if it is done. */
static struct unit *
ready_locked(struct pk_map *m)
{
    struct unit *u;

    if (!m->unordered)
        return (u = oldest(m)) && u->done ? u : NULL;
    u = m->done_head;
    if (u) {
        m->done_head = u->done_next;
        if (!m->done_head)
            m->done_tail = NULL;
    }
    return u;
}

/* Makes the next done unit m->cur, or waits once for a completion. */
static int
next_unit(struct pk_map *m)
{
    struct unit *u;
    uint64_t seq;
    int rc = WOKE;

    if (!oldest(m))
        return NO_UNITS;
    pk__lock_acquire(&m->lock);
    u = ready_locked(m);
    seq = m->seq;
    if (!u && pk__future_helped()) {
        /* A map inside a task, on a worker of the pool it maps on: its
         * units may be queued behind this very task, and a condvar wait
         * would run none of them (with one worker, none would run).
         * A wait on the oldest unit's future helps; then on_done's
         * signal is near (it runs right after that future finishes). */
        pk_future *f = oldest(m)->fut;

        pk__lock_release(&m->lock);
        (void)pk__future_wait_deadline(f, m->deadline);
        pk__lock_acquire(&m->lock);
        u = ready_locked(m);
    }
    while (!u && m->seq == seq && rc == WOKE) {
        pk__cv_wait_until(&m->cond, &m->lock, m->deadline);
        if (m->seq == seq && pk__now_ns() >= m->deadline)
            rc = TIMED_OUT;
    }
    pk__lock_release(&m->lock);
    if (!u)
        return rc;
    unlink_unit(m, u);
    m->cur = u;
    return GOT_UNIT;
}

/* Cancels every live unit (pending ones finish now, through on_done on
 * this thread; running ones see the flag) and drops what was not
 * submitted. */
static void
cancel_all(struct pk_map *m)
{
    for (struct pk__dnode *n = m->units.head; n; n = n->next)
        pk_future_cancel(PK__CONTAINER(n, struct unit, link)->fut);
    drop_unsubmitted(m);
    m->input_end = 1;
}

/* The map's timeout passed: it stops, and what is in flight is
 * cancelled. */
static void
time_out(struct pk_map *m)
{
    m->fatal = PK_ETIMEDOUT;
    snprintf(m->defer_msg, sizeof m->defer_msg,
             "map stopped: its timeout passed");
    cancel_all(m);
}

static int
fail_map(struct pk_map *m, size_t *index, pk_error *err)
{
    if (index)
        *index = PK_MAP_NO_INDEX;
    pk_error_set(err, m->fatal, 0, "%s", m->defer_msg);
    return m->fatal;
}

int
pk_map_next(pk_map *m, pk_result *res, size_t *index, pk_error *err)
{
    if (!m)
        return pk_error_set(err, PK_EINVAL, 0, "the map is NULL");
    CHECK(m);
    for (;;) {
        if (m->fatal)
            return fail_map(m, index, err);
        if (m->cur && m->cur->pos < m->cur->n)
            return deliver(m, res, index, err);
        if (m->cur) {
            pk__map_unit_free(m, m->cur);
            m->cur = NULL;
        }
        refill(m);
        report_progress(m);
        switch (next_unit(m)) {
        case NO_UNITS:
            if (m->defer_code) {
                m->fatal = m->defer_code;
                continue;
            }
            return 1;
        case TIMED_OUT:
            time_out(m);
            continue;
        default: /* GOT_UNIT, WOKE */
            continue;
        }
    }
}

/* ---- create and destroy ------------------------------------------------ */

static int
configure(struct pk_map *m, const pk_map_options *o)
{
    uint64_t ns;

    if (o->order != PK_MAP_ORDERED && o->order != PK_MAP_UNORDERED)
        return PK_EINVAL;
    if (pk__option_ns(o->timeout_ms, PK_NEVER, &ns))
        return PK_EINVAL;
    m->deadline = ns == UINT64_MAX ? UINT64_MAX : pk__now_ns() + ns;
    m->unordered = o->order == PK_MAP_UNORDERED;
    m->window = o->window;
    if (!m->window)
        m->window = o->chunk > DEFAULT_WINDOW / 8
                        ? (o->chunk > SIZE_MAX / 8 ? SIZE_MAX : o->chunk * 8)
                        : DEFAULT_WINDOW;
    m->chunk = o->chunk < m->window ? o->chunk : m->window;
    m->chunk_cap = m->window / 8 < CHUNK_MAX ? m->window / 8 : CHUNK_MAX;
    if (!m->chunk_cap)
        m->chunk_cap = 1;
    m->progress = o->progress;
    m->progress_user = o->progress_user;
    m->total_hint = o->total_hint;
    m->release = o->release;
    return 0;
}

int
pk_map_create(pk_map **out, pk_executor *ex, pk_map_next_fn next, void *user,
              const pk_map_options *o)
{
    static const pk_map_options defaults;
    struct pk_map *m;
    int rc;

    if (!out || !ex || !next)
        return PK_EINVAL;
    m = pk__calloc(1, sizeof *m);
    if (!m)
        return PK_ENOMEM;
    rc = configure(m, o ? o : &defaults);
    if (rc) {
        pk__free(m);
        return rc;
    }
    pk__lock_init(&m->lock, PK__RANK_MAP);
    m->magic = MAP_MAGIC;
    m->ex = ex;
    m->next = next;
    m->user = user;
    atomic_init(&m->est_ns, 0);
    refill(m); /* start the work now; failures wait for pk_map_next */
    *out = m;
    return 0;
}

int
pk_as_completed_create(pk_map **out, pk_executor *ex, pk_map_next_fn next,
                       void *user, const pk_map_options *o)
{
    pk_map_options uo;

    if (o)
        uo = *o;
    else
        memset(&uo, 0, sizeof uo);
    uo.order = PK_MAP_UNORDERED;
    return pk_map_create(out, ex, next, user, &uo);
}

void
pk_map_destroy(pk_map *m)
{
    struct unit *u;

    if (!m)
        return;
    CHECK(m);
    cancel_all(m);
    pk__lock_acquire(&m->lock);
    while (m->pending > 0)
        pk__cv_wait_until(&m->cond, &m->lock, UINT64_MAX);
    pk__lock_release(&m->lock);
    /* No callback can reach the map any more. */
    if (m->cur)
        pk__map_unit_free(m, m->cur);
    while ((u = oldest(m)) != NULL) {
        unlink_unit(m, u);
        pk__map_unit_free(m, u);
    }
    m->magic = 0;
    pk__free(m);
}
