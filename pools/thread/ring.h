/* pools/thread/ring.h - the thread pool's task queue: a bounded
 * multi-producer multi-consumer ring (Dmitry Vyukov's design). Each cell
 * carries a sequence number that says whose turn it is: a producer may
 * fill cell i when seq == pos, a consumer may empty it when
 * seq == pos + 1. Producers and consumers meet only on the cells and on
 * their own counter (tail, head), each on a cache line of its own. The
 * cell's seq is released after the task is written and acquired before
 * it is read, so the task needs no other synchronisation.
 *
 * The claims on tail and head are seq_cst read-modify-writes: the wake
 * protocols of threadpool.c (a push against a worker going idle, a pop
 * against a submitter waiting for room) pair them with seq_cst loads of
 * the other side's counter.
 *
 * Closing sets the top bit of the tail: a producer's claim is a CAS on
 * the tail, so every claim either came before the close (and is counted
 * in the tail that shutdown reads) or fails. Positions are 64 bits wide
 * on every platform, so the bit is never reached. */
#ifndef PK_POOLS_THREAD_RING_H
#define PK_POOLS_THREAD_RING_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <poolkit/executor.h>

#include "executor_int.h"

#define TP_RING_CLOSED (UINT64_C(1) << 63)

/* A queued task: 56 bytes on LP64, so that a cell is one cache line (a
 * submitter filling one cell and a worker emptying the one before share
 * no line). A task runs either fn(arg) or the named function on
 * (data, len), never both, so those share fields and `named` says which. */
struct tp_task {
    union {
        pk_task_fn fn;
        const char *name;
    } f;
    union {
        void *arg;
        const void *data;
    } a;
    size_t len;
    pk_future *fut;     /* the queue's reference, or NULL */
    uint64_t enq_ns;    /* when queued, for sampled or limited tasks; 0 */
    uint32_t start_within_ms, run_limit_ms;
    uint16_t flags;     /* the pk_task's */
    uint8_t named;
    uint8_t copied;     /* a.data is our copy, freed after the run */
};

struct tp_cell {
    _Atomic uint64_t seq;
    struct tp_task t;
};

_Static_assert(sizeof(void *) != 8 || sizeof(struct tp_cell) == 64,
               "a ring cell is one line");

struct tp_ring {
    struct tp_cell *cells;       /* line-aligned, in raw */
    void *raw;
    uint64_t mask;               /* capacity - 1 */
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
}

static inline size_t
tp_ring_capacity(const struct tp_ring *r)
{
    return (size_t)r->mask + 1;
}

/* Cells ever claimed by producers: with a count of finished tasks, says
 * when everything pushed has run. */
static inline uint64_t
tp_ring_pushed(struct tp_ring *r)
{
    return atomic_load(&r->tail) & ~TP_RING_CLOSED;
}

/* Tasks claimed and not yet popped (a claimed cell that its producer is
 * still filling counts). seq_cst: see the top. */
static inline size_t
tp_ring_count(struct tp_ring *r)
{
    uint64_t t = tp_ring_pushed(r), h = atomic_load(&r->head);

    return t > h ? (size_t)(t - h) : 0;
}

/* Claims n consecutive cells at the tail, all or none; *first gets the
 * first. Returns 0, PK_EAGAIN (full: the tail is a lap ahead of the head)
 * or PK_ESHUTDOWN (closed). A cell can also look taken while the ring has
 * room: the popper of the previous lap moved the head but has not handed
 * the cell back yet. That is not "full"; the popper is about to finish,
 * so wait for it. */
static inline int
tp_ring_claim(struct tp_ring *r, size_t n, uint64_t *first)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    unsigned spins = 0;

    for (;;) {
        uint64_t pos = tail, seq = pos;
        size_t i;
        if (tail & TP_RING_CLOSED)
            return PK_ESHUTDOWN;
        for (i = 0; i < n; i++) {
            seq = atomic_load_explicit(&r->cells[(pos + i) & r->mask].seq,
                                       memory_order_acquire);
            if (seq != pos + i)
                break;
        }
        if (i == n) {
            if (atomic_compare_exchange_weak(&r->tail, &tail, pos + n)) {
                *first = pos;
                return 0;
            }
            continue;
        }
        if ((int64_t)(seq - (pos + i)) < 0) {
            uint64_t head = atomic_load(&r->head);
            if ((int64_t)(head + r->mask + 1 - (pos + n)) < 0)
                return PK_EAGAIN;
            if (++spins > 64)
                sched_yield(); /* the popper of this cell is off the CPU */
        }
        tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    }
}

/* Pushes n tasks, all or none. Returns as tp_ring_claim. */
static inline int
tp_ring_push(struct tp_ring *r, const struct tp_task *t, size_t n)
{
    uint64_t pos;
    int rc = tp_ring_claim(r, n, &pos);

    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct tp_cell *c = &r->cells[(pos + i) & r->mask];
        c->t = t[i];
        atomic_store_explicit(&c->seq, pos + i + 1, memory_order_release);
    }
    return 0;
}

/* Refuses every later claim. Claims made before are counted in the tail
 * and filled soon: their claimers cannot fail. */
static inline void
tp_ring_close(struct tp_ring *r)
{
    atomic_fetch_or(&r->tail, TP_RING_CLOSED);
}

/* Takes the task at the head. Returns false if there is none ready (a
 * claimed cell still being filled reads as none: tp_ring_count tells). */
static inline bool
tp_ring_pop(struct tp_ring *r, struct tp_task *out)
{
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);

    for (;;) {
        struct tp_cell *c = &r->cells[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - (pos + 1));
        if (dif == 0) {
            if (atomic_compare_exchange_weak(&r->head, &pos, pos + 1)) {
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

#endif /* PK_POOLS_THREAD_RING_H */
