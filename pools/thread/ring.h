/* pools/thread/ring.h - the thread pool's task queue: a bounded
 * multi-producer multi-consumer ring (Dmitry Vyukov's design). Each cell
 * carries a sequence number that says whose turn it is: a producer may
 * fill cell i when seq == pos, a consumer may empty it when
 * seq == pos + 1. Producers and consumers meet only on the cells and on
 * their own counter (tail, head), each on a cache line of its own. The
 * cell's seq is released after the task is written and acquired before
 * it is read, so the task needs no other synchronisation.
 *
 * Closing sets the top bit of the tail: a producer's claim is a CAS on
 * the tail, so every claim either came before the close (and is counted
 * in the tail shutdown reads) or fails. That makes the close a fence
 * against submits at no cost to them. Positions are 64 bits wide on
 * every platform, so the bit is never reached. */
#ifndef PK_POOLS_THREAD_RING_H
#define PK_POOLS_THREAD_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <poolkit/executor.h>

#include "alloc.h"

#define TP_RING_CLOSED (UINT64_C(1) << 63)

/* A queued task: 56 bytes on LP64, so that a cell is one cache line of
 * its own (a submitter filling one cell and a worker emptying the one
 * before share no line). The pk_task is packed: a task runs either
 * fn(arg) or the named function on (data, len), never both (the submit
 * checks that exactly one of fn and name is set), so those share fields
 * and a bit says which (tp_task_set / tp_task_get). */
#define TP_T_NAMED 1u /* fn.name and a.data; otherwise fn.fn and a.arg */
#define TP_T_COPY 2u  /* a.copy is our copy of the data, freed after */

struct tp_task {
    union {
        pk_task_fn fn;
        const char *name;
    } fn;
    union {
        void *arg;
        const void *data;
        void *copy;
    } a;
    size_t len;         /* named tasks */
    pk_future *fut;     /* the queue's reference, or NULL */
    uint64_t enq_ns;    /* when queued, for sampled or limited tasks; 0 */
    uint32_t start_within_ms, run_limit_ms;
    unsigned flags;     /* the pk_task's, as given */
    uint16_t lane;      /* threadpool.h's lanes */
    uint16_t bits;      /* TP_T_* */
};

struct tp_cell {
    _Atomic uint64_t seq;
    struct tp_task t;
};

_Static_assert(sizeof(void *) != 8 || sizeof(struct tp_cell) == 64,
               "a ring cell is one line");

/* Fills t's task fields from task (the rest is the caller's). */
static inline void
tp_task_set(struct tp_task *t, const pk_task *task)
{
    if (task->name) {
        t->fn.name = task->name;
        t->a.data = task->data;
        t->len = task->len;
        t->bits = TP_T_NAMED;
    } else {
        t->fn.fn = task->fn;
        t->a.arg = task->arg;
        t->len = 0;
        t->bits = 0;
    }
    t->flags = task->flags;
}

/* The pk_task to run (what tp_task_set took, less the fields the kind
 * of task does not use). */
static inline void
tp_task_get(const struct tp_task *t, pk_task *out)
{
    if (t->bits & TP_T_NAMED) {
        out->fn = NULL;
        out->arg = NULL;
        out->name = t->fn.name;
        out->data = t->a.data;
        out->len = t->len;
    } else {
        out->fn = t->fn.fn;
        out->arg = t->a.arg;
        out->name = NULL;
        out->data = NULL;
        out->len = 0;
    }
    out->flags = t->flags;
}

/* Our copy of a named task's data, or NULL: freed once it ran. */
static inline void *
tp_task_copy(const struct tp_task *t)
{
    return (t->bits & TP_T_COPY) ? t->a.copy : NULL;
}

struct tp_ring {
    struct tp_cell *cells;       /* line-aligned, in raw */
    void *raw;
    uint64_t mask;               /* capacity - 1, a power of two minus 1 */
    char pad0[64];
    _Atomic uint64_t tail;       /* next cell to fill | TP_RING_CLOSED */
    char pad1[64];
    _Atomic uint64_t head;       /* next cell to empty */
    char pad2[64];
};

/* Capacity is cap rounded up to a power of two (at least 2). */
static inline int
tp_ring_init(struct tp_ring *r, size_t cap)
{
    size_t n = 2;

    while (n < cap)
        n <<= 1;
    r->raw = pk__calloc(n + 1, sizeof *r->cells);
    if (!r->raw)
        return PK_ENOMEM;
    r->cells = (struct tp_cell *)(((uintptr_t)r->raw + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < n; i++)
        atomic_init(&r->cells[i].seq, i);
    r->mask = n - 1;
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    return 0;
}

static inline void
tp_ring_fini(struct tp_ring *r)
{
    pk__free(r->raw);
    r->raw = NULL;
    r->cells = NULL;
}

static inline size_t
tp_ring_capacity(const struct tp_ring *r)
{
    return (size_t)r->mask + 1;
}

/* Claims n consecutive cells at the tail, all or none, and returns the
 * first in *first. Returns 0, PK_EAGAIN (full: the tail is a lap ahead
 * of the head) or PK_ESHUTDOWN (closed, unless closed_ok: a task given
 * back by a worker was pushed before the close, and must stay runnable
 * by others while that worker waits). A cell can also look taken
 * while the ring has room: the popper of the previous lap claimed it
 * (head moved) but was preempted before handing it back. Calling that
 * "full" would fail a try-submit, or a give-back, that fits; the popper
 * is about to finish, so wait for it instead. Release on success: a
 * reader of the tail (stats, shutdown) sees what the claimer did before. */
static inline int
tp_ring_claim(struct tp_ring *r, size_t n, uint64_t *first, bool closed_ok)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    unsigned spins = 0;

    for (;;) {
        uint64_t closed = tail & TP_RING_CLOSED;
        uint64_t pos = tail & ~TP_RING_CLOSED, seq = pos;
        size_t i;
        if (closed && !closed_ok)
            return PK_ESHUTDOWN;
        for (i = 0; i < n; i++) {
            seq = atomic_load_explicit(&r->cells[(pos + i) & r->mask].seq,
                                       memory_order_acquire);
            if (seq != pos + i)
                break;
        }
        if (i == n) {
            if (atomic_compare_exchange_weak_explicit(
                    &r->tail, &tail, (pos + n) | closed,
                    memory_order_release, memory_order_relaxed)) {
                *first = pos;
                return 0;
            }
            continue;
        }
        if ((int64_t)(seq - (pos + i)) < 0) {
            uint64_t head = atomic_load_explicit(&r->head,
                                                 memory_order_relaxed);
            if ((int64_t)(head + r->mask + 1 - (pos + n)) < 0)
                return PK_EAGAIN;
            if (++spins > 64)
                sched_yield(); /* the popper of this cell is off the CPU */
        }
        tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    }
}

/* Fills cell pos (claimed by tp_ring_claim) and hands it to poppers. */
static inline void
tp_ring_fill(struct tp_ring *r, uint64_t pos, const struct tp_task *t)
{
    struct tp_cell *c = &r->cells[pos & r->mask];

    c->t = *t;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
}

/* Pushes n tasks, all or none. Returns 0, PK_EAGAIN or PK_ESHUTDOWN
 * (tp_ring_claim). */
static inline int
tp_ring_push(struct tp_ring *r, const struct tp_task *t, size_t n,
             bool closed_ok)
{
    uint64_t pos;
    int rc = tp_ring_claim(r, n, &pos, closed_ok);

    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        tp_ring_fill(r, pos + i, &t[i]);
    return 0;
}

/* Refuses every later claim. Claims made before are counted in the tail
 * (tp_ring_pushed) and are filled soon: their claimers cannot fail. */
static inline void
tp_ring_close(struct tp_ring *r)
{
    atomic_fetch_or(&r->tail, TP_RING_CLOSED);
}

/* Returns false if the ring is empty. */
static inline bool
tp_ring_pop(struct tp_ring *r, struct tp_task *out)
{
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);

    for (;;) {
        struct tp_cell *c = &r->cells[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(
                    &r->head, &pos, pos + 1, memory_order_relaxed,
                    memory_order_relaxed)) {
                *out = c->t;
                atomic_store_explicit(&c->seq, pos + r->mask + 1,
                                      memory_order_release);
                return true;
            }
        } else if (dif < 0) {
            return false;
        } else {
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
        }
    }
}

/* Pops up to max tasks at once, one CAS on the head for all of them (the
 * head is the line consumers contend for): the filled cells from the
 * head on, stopping at the first that is not. Returns how many. */
static inline size_t
tp_ring_pop_n(struct tp_ring *r, struct tp_task *out, size_t max)
{
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);

    for (;;) {
        size_t n = 0;
        while (n < max &&
               atomic_load_explicit(&r->cells[(pos + n) & r->mask].seq,
                                    memory_order_acquire) == pos + n + 1)
            n++;
        if (n == 0) {
            uint64_t seq = atomic_load_explicit(
                &r->cells[pos & r->mask].seq, memory_order_acquire);
            if ((int64_t)(seq - (pos + 1)) < 0)
                return 0; /* empty (or its head not filled yet) */
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(
                &r->head, &pos, pos + n, memory_order_relaxed,
                memory_order_relaxed)) {
            for (size_t i = 0; i < n; i++) {
                struct tp_cell *c = &r->cells[(pos + i) & r->mask];
                out[i] = c->t;
                atomic_store_explicit(&c->seq, pos + i + r->mask + 1,
                                      memory_order_release);
            }
            return n;
        }
    }
}

/* Cells ever claimed by producers: with a count of finished tasks, says
 * when everything pushed has run. seq_cst, see threadpool.c. */
static inline uint64_t
tp_ring_pushed(struct tp_ring *r)
{
    return atomic_load(&r->tail) & ~TP_RING_CLOSED;
}

/* Tasks in the ring now (a snapshot). */
static inline size_t
tp_ring_count(struct tp_ring *r)
{
    uint64_t t = tp_ring_pushed(r), h = atomic_load(&r->head);

    return t > h ? (size_t)(t - h) : 0;
}

/* True if cell pos holds the task pushed at pos (a snapshot, no
 * ordering: for estimates only). */
static inline bool
tp_ring_filled(struct tp_ring *r, uint64_t pos)
{
    return atomic_load_explicit(&r->cells[pos & r->mask].seq,
                                memory_order_relaxed) == pos + 1;
}

/* True if the cell at the head holds a task. Pollers use this rather
 * than tp_ring_count: it reads the head's cell, which a submitter writes
 * once per task anyway, and not the tail, which it writes on every push
 * and would then have to fetch back from the poller's cache. */
static inline bool
tp_ring_ready(struct tp_ring *r)
{
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t seq = atomic_load_explicit(&r->cells[pos & r->mask].seq,
                                        memory_order_acquire);
    int64_t dif = (int64_t)(seq - (pos + 1));

    if (dif == 0)
        return true;
    if (dif < 0)
        return false;
    return tp_ring_count(r) > 0; /* popped since we read the head */
}

/* True while cells claimed before now remain to be popped: a claimed
 * cell that its producer has not filled yet counts (tp_ring_pop does not
 * see it until then). */
static inline bool
tp_ring_unpopped(struct tp_ring *r)
{
    return tp_ring_count(r) > 0;
}

#endif /* PK_POOLS_THREAD_RING_H */
