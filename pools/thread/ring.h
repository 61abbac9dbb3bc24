/* pools/thread/ring.h - the thread pool's task queue: a bounded
 * multi-producer multi-consumer ring (Dmitry Vyukov's design). Each cell
 * carries a sequence number that says whose turn it is: a producer may
 * fill cell i when seq == pos, a consumer may empty it when
 * seq == pos + 1. Producers and consumers meet only on the cells and on
 * their own counter (tail, head), each on a cache line of its own. The
 * cell's seq is released after the task is written and acquired before
 * it is read, so the task needs no other synchronisation. */
#ifndef PK_POOLS_THREAD_RING_H
#define PK_POOLS_THREAD_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <poolkit/executor.h>

#include "alloc.h"

struct tp_task {
    pk_task task;
    pk_future *fut;     /* the queue's reference, or NULL */
    void *copy;         /* copied name-task bytes, freed after the run */
    uint64_t enq_ns;    /* when queued, for sampled or limited tasks; 0 */
    uint32_t start_within_ms, run_limit_ms;
    int lane;           /* threadpool.h's lanes */
};

struct tp_cell {
    _Atomic size_t seq;
    struct tp_task t;
};

struct tp_ring {
    struct tp_cell *cells;
    size_t mask;                 /* capacity - 1, a power of two minus 1 */
    char pad0[64];
    _Atomic size_t tail;         /* next cell to fill */
    char pad1[64];
    _Atomic size_t head;         /* next cell to empty */
    char pad2[64];
};

/* Capacity is cap rounded up to a power of two (at least 2). */
static inline int
tp_ring_init(struct tp_ring *r, size_t cap)
{
    size_t n = 2;

    while (n < cap)
        n <<= 1;
    r->cells = pk__calloc(n, sizeof *r->cells);
    if (!r->cells)
        return PK_ENOMEM;
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
    pk__free(r->cells);
    r->cells = NULL;
}

static inline size_t
tp_ring_capacity(const struct tp_ring *r)
{
    return r->mask + 1;
}

/* Pushes into a cell the caller has reserved (threadpool.c: `used`
 * never exceeds the capacity), so it cannot fail. The cell at the tail
 * may still be held by a popper of the previous lap that has claimed it
 * but not yet handed it back (it was preempted between the two steps),
 * while pops of later cells already freed the reservation count: then
 * wait for that popper instead of calling the ring full. */
static inline void
tp_ring_push(struct tp_ring *r, const struct tp_task *t)
{
    size_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    unsigned spins = 0;

    for (;;) {
        struct tp_cell *c = &r->cells[pos & r->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(
                    &r->tail, &pos, pos + 1, memory_order_relaxed,
                    memory_order_relaxed)) {
                c->t = *t;
                atomic_store_explicit(&c->seq, pos + 1,
                                      memory_order_release);
                return;
            }
            continue;
        }
        if (dif < 0 && ++spins > 64)
            sched_yield(); /* the popper of this cell is off the CPU */
        pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    }
}

/* Returns false if the ring is empty. */
static inline bool
tp_ring_pop(struct tp_ring *r, struct tp_task *out)
{
    size_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);

    for (;;) {
        struct tp_cell *c = &r->cells[pos & r->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
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

/* Tasks in the ring now (a snapshot). */
static inline size_t
tp_ring_count(struct tp_ring *r)
{
    size_t t = atomic_load(&r->tail), h = atomic_load(&r->head);
    return t > h ? t - h : 0;
}

/* Cells ever claimed by producers: with a count of finished tasks, says
 * when everything pushed has run. seq_cst, see threadpool.c. */
static inline size_t
tp_ring_pushed(struct tp_ring *r)
{
    return atomic_load(&r->tail);
}

#endif /* PK_POOLS_THREAD_RING_H */
