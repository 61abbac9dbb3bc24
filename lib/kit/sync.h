/* lib/kit/sync.h - poolkit's small concurrency kit: the one lock family
 * (pk__lock and pk__cv, futex-based) with its ranks, the monotonic clock,
 * deadlines, parking (spin briefly, then futex; a condvar off Linux) and
 * the process-wide fork counter. */
#ifndef PK_LIB_SYNC_H
#define PK_LIB_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <poolkit/error.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t pk__now_ns(void);

/* The CPUs this process may run on (its affinity mask), at least 1; 2 if
 * that cannot be read. The default size of the work pools. */
size_t pk__cpu_count(void);

/* Turns a call's timeout into an absolute CLOCK_MONOTONIC deadline:
 * UINT64_MAX for PK_WAIT_FOREVER. Returns PK_EINVAL for other negatives. */
int pk__deadline(int timeout_ms, uint64_t *deadline_ns);

/* Option times: 0 -> def, PK_NEVER -> UINT64_MAX (off), PK_ALWAYS -> 0,
 * positive -> ms. Returns PK_EINVAL for other negatives. */
int pk__option_ns(int ms, int def_ms, uint64_t *out_ns);

/* A parking word: 0 = waiting (spinning), PK__PARK_SLEEPING = waiting in
 * the kernel, anything else = woken with that value. The waker exchanges
 * the word for its value; only if the old value was SLEEPING does it need
 * a futex wake, which touches nothing but the word's address. That wake
 * may come after the waker dropped its lock, when the waiter may already
 * have returned and reused the memory: a stray futex wake on a dead
 * address is harmless, and every wait loops on its predicate. */
#define PK__PARK_SLEEPING 0xffffffffu

typedef struct pk__parker {
    _Atomic uint32_t word;
} pk__parker;

/* Spins briefly, then sleeps until the word holds a wake value or
 * deadline_ns passes. Returns the value (0 if the deadline passed). The
 * caller resets the word to 0 before parking again. */
uint32_t pk__park(pk__parker *p, uint64_t deadline_ns);
/* Stores v (non-zero, not SLEEPING). Returns true if the waiter sleeps in
 * the kernel and needs pk__park_kick. */
bool pk__park_set(pk__parker *p, uint32_t v);
/* Wakes a sleeping waiter; safe on memory the waiter no longer uses. */
void pk__park_kick(pk__parker *p);
/* pk__park_set, then pk__park_kick if needed. */
void pk__park_wake(pk__parker *p, uint32_t v);

/* ---- locks ---------------------------------------------------------------
 *
 * Lock ranks: every pk__lock in poolkit has one, given at pk__lock_init. A
 * thread holding locks may take only a lock of a later rank than the last
 * it took, so two locks of one rank are never held at once (never two
 * pools' locks, say). Test builds (PK_LOCK_CHECK, without NDEBUG) keep a
 * per-thread stack of held ranks and abort on a lock taken out of order
 * or never ranked; other builds keep nothing.
 *
 *   MAP         a pk_map's state (map.c, map_unit.c)
 *   INLINE      the inline executor's count of running tasks (executor.c)
 *   REGISTRY    a pk_registry's buckets (registry.c)
 *   POOL        pk_pool.lock
 *   GROUP       pk_pool_group.lock: a pool may give a unit back to its
 *               group with its own lock held, but the group reaches into
 *               another member pool only after dropping its own lock
 *   FUTURE      pk_future.lock: nothing is taken under it
 *   THREADPOOL  pk_threadpool.lock: nothing is taken under it (the core
 *               pool's lock least of all: pk_pool_acquire and
 *               pk_pool_release are never called with it held)
 *   MEMPOOL     pk_mempool.lock: nothing is taken under it either (the
 *               core's calls are made with it released)
 *   PROCPOOL    pk_procpool.lock: a leaf too (no core call, hook or
 *               future callback under it) */
enum pk__lock_rank {
    PK__RANK_NONE = 0, /* not initialised: the check aborts */
    PK__RANK_MAP,
    PK__RANK_INLINE,
    PK__RANK_REGISTRY,
    PK__RANK_POOL,
    PK__RANK_GROUP,
    PK__RANK_FUTURE,
    PK__RANK_THREADPOOL,
    PK__RANK_MEMPOOL,
    PK__RANK_PROCPOOL,
};

#if defined(PK_LOCK_CHECK) && !defined(NDEBUG)
#define PK__LOCK_CHECKED 1
#endif

/* The lock: a three-state futex mutex (0 free, 1 held, 2 held with
 * sleepers; Drepper, "Futexes Are Tricky"), inline on the hot path, with
 * a short spin before sleeping because its critical sections are tens of
 * nanoseconds. Acquire pairs with the release in pk__lock_release. A
 * failing lock is a bug, never an error to return (libuv's rule). */
typedef struct pk__lock {
    _Atomic uint32_t v;
#ifdef PK__LOCK_CHECKED
    uint32_t rank; /* enum pk__lock_rank */
#endif
} pk__lock;

void pk__lock_slow(pk__lock *l);
void pk__lock_wake(pk__lock *l);

#ifdef PK__LOCK_CHECKED
/* The rank check: abort unless l ranks after every lock this thread
 * holds; record it held / no longer held. */
void pk__lock_check_take(const pk__lock *l);
void pk__lock_check_drop(const pk__lock *l);
#else
#define pk__lock_check_take(l) ((void)(l))
#define pk__lock_check_drop(l) ((void)(l))
#endif

/* Makes l free, with its rank. Not while anyone may use l. */
static inline void
pk__lock_init(pk__lock *l, enum pk__lock_rank rank)
{
    atomic_init(&l->v, 0);
#ifdef PK__LOCK_CHECKED
    l->rank = (uint32_t)rank;
#else
    (void)rank;
#endif
}

/* While the process has one thread, nobody else can see the lock: glibc
 * says so in __libc_single_threaded (and its own mutexes skip their
 * atomics then). It only ever goes from true to false, on the thread that
 * calls pthread_create, so a lock taken the cheap way is released
 * correctly the atomic way if a hook started a thread meanwhile. */
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define PK__SINGLE_THREADED() (__libc_single_threaded != 0)
#endif
#endif
#ifndef PK__SINGLE_THREADED
#define PK__SINGLE_THREADED() 0
#endif

static inline void
pk__lock_acquire(pk__lock *l)
{
    uint32_t z = 0;

    pk__lock_check_take(l);
    if (PK__SINGLE_THREADED()) {
        atomic_store_explicit(&l->v, 1, memory_order_relaxed);
        return;
    }
    if (!atomic_compare_exchange_strong_explicit(
            &l->v, &z, 1, memory_order_acquire, memory_order_relaxed))
        pk__lock_slow(l);
}

static inline void
pk__lock_release(pk__lock *l)
{
    pk__lock_check_drop(l);
    if (PK__SINGLE_THREADED()) {
        atomic_store_explicit(&l->v, 0, memory_order_relaxed);
        return;
    }
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2)
        pk__lock_wake(l);
}

/* A condition variable for pk__lock: a sequence number futex. Waits may
 * wake spuriously; callers loop on their predicate. */
typedef struct pk__cv {
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters; /* a broadcast with none makes no syscall */
} pk__cv;

void pk__cv_broadcast(pk__cv *c);
/* Called with l held; returns with l held. deadline_ns CLOCK_MONOTONIC,
 * UINT64_MAX = none. */
void pk__cv_wait_until(pk__cv *c, pk__lock *l, uint64_t deadline_ns);

/* For predicates that change without the lock (lock-free counters): the
 * waiter registers first (returns the sequence to wait on), then tests
 * its predicate, then waits or cancels. A broadcaster changes the
 * predicate with a seq_cst operation before pk__cv_broadcast. All seq_cst:
 * either the broadcaster sees the waiter, or the waiter sees the change. */
uint32_t pk__cv_prepare(pk__cv *c);
void pk__cv_cancel(pk__cv *c);
void pk__cv_wait_prepared(pk__cv *c, uint32_t seq, uint64_t deadline_ns);

/* The process-wide fork counter: bumped by a pthread_atfork child
 * handler; a documented global (README, "Process-wide state").
 * pk__fork_epoch() also registers the handler on first use. */
unsigned pk__fork_epoch(void);
/* The counter itself, for the hot path once pk__fork_epoch() has run. */
extern _Atomic unsigned pk__fork_epoch_var;

static inline unsigned
pk__fork_epoch_fast(void)
{
    return atomic_load_explicit(&pk__fork_epoch_var, memory_order_relaxed);
}

#endif /* PK_LIB_SYNC_H */
