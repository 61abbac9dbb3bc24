/* lib/kit/sync.c - clock, deadlines, parking, the lock (with its rank
 * check in test builds), fork counter.
 *
 * Parking: a waiter spins on its word for a short while (a hand-off that
 * lands within a few microseconds costs no syscall), then sleeps on a
 * futex with an absolute CLOCK_MONOTONIC deadline (FUTEX_WAIT_BITSET). Off
 * Linux, a process-wide array of condvars hashed by address stands in. */
#define _GNU_SOURCE /* syscall(), FUTEX_*, sched_getaffinity */
#include "sync.h"

#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static struct timespec
to_timespec(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

uint64_t
pk__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int
pk__deadline(int timeout_ms, uint64_t *deadline_ns)
{
    if (timeout_ms == PK_WAIT_FOREVER) {
        *deadline_ns = UINT64_MAX;
        return 0;
    }
    if (timeout_ms < 0)
        return PK_EINVAL;
    *deadline_ns = pk__now_ns() + (uint64_t)timeout_ms * 1000000u;
    return 0;
}

int
pk__option_ns(int ms, int def_ms, uint64_t *out_ns)
{
    if (ms == 0)
        ms = def_ms;
    if (ms == PK_NEVER) {
        *out_ns = UINT64_MAX;
        return 0;
    }
    if (ms == PK_ALWAYS) {
        *out_ns = 0;
        return 0;
    }
    if (ms < 0)
        return PK_EINVAL;
    *out_ns = (uint64_t)ms * 1000000u;
    return 0;
}

/* Spins long enough to catch a hand-off that is already under way on the
 * other core, short enough not to matter when nothing comes. */
#define PK__SPINS 200

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __linux__
static void
futex_wait_val(_Atomic uint32_t *w, uint32_t val, uint64_t deadline_ns)
{
    struct timespec ts;
    struct timespec *tp = NULL;

    if (deadline_ns != UINT64_MAX) {
        ts = to_timespec(deadline_ns);
        tp = &ts;
    }
    /* Absolute CLOCK_MONOTONIC deadline: immune to early wakes. */
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
            val, tp, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void
futex_wake_n(_Atomic uint32_t *w, int n)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n,
            NULL, NULL, 0);
}
#else
/* Off Linux: condvars hashed by the word's address. The array is
 * process-wide and immutable after its one-time initialisation. */
#define PK__PARK_BUCKETS 64
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
} buckets[PK__PARK_BUCKETS];
static pthread_once_t buckets_once = PTHREAD_ONCE_INIT;

/* The emulation's own pthread calls; failing is a bug: abort. */
static void
check_rc(const char *what, int rc)
{
    if (rc) {
        fprintf(stderr, "poolkit: %s failed: %d\n", what, rc);
        abort();
    }
}

static void
buckets_init(void)
{
    pthread_condattr_t a;

    check_rc("pthread_condattr_init", pthread_condattr_init(&a));
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    for (int i = 0; i < PK__PARK_BUCKETS; i++) {
        check_rc("pthread_mutex_init", pthread_mutex_init(&buckets[i].m, NULL));
        check_rc("pthread_cond_init", pthread_cond_init(&buckets[i].c, &a));
    }
    pthread_condattr_destroy(&a);
}

static unsigned
bucket_of(void *p)
{
    return (unsigned)(((uintptr_t)p >> 4) % PK__PARK_BUCKETS);
}

static void
futex_wait_val(_Atomic uint32_t *w, uint32_t val, uint64_t deadline_ns)
{
    unsigned b;
    pthread_once(&buckets_once, buckets_init);
    b = bucket_of((void *)w);
    check_rc("pthread_mutex_lock", pthread_mutex_lock(&buckets[b].m));
    if (atomic_load_explicit(w, memory_order_acquire) == val) {
        if (deadline_ns == UINT64_MAX) {
            pthread_cond_wait(&buckets[b].c, &buckets[b].m);
        } else {
            struct timespec ts = to_timespec(deadline_ns);
            pthread_cond_timedwait(&buckets[b].c, &buckets[b].m, &ts);
        }
    }
    check_rc("pthread_mutex_unlock", pthread_mutex_unlock(&buckets[b].m));
}

static void
futex_wake_n(_Atomic uint32_t *w, int n)
{
    (void)n;
    unsigned b;
    pthread_once(&buckets_once, buckets_init);
    b = bucket_of((void *)w);
    check_rc("pthread_mutex_lock", pthread_mutex_lock(&buckets[b].m));
    pthread_cond_broadcast(&buckets[b].c);
    check_rc("pthread_mutex_unlock", pthread_mutex_unlock(&buckets[b].m));
}
#endif

static void
futex_wait(_Atomic uint32_t *w, uint64_t deadline_ns)
{
    futex_wait_val(w, PK__PARK_SLEEPING, deadline_ns);
}

static void
futex_wake(_Atomic uint32_t *w)
{
    futex_wake_n(w, 1);
}

/* ---- the pool lock ---------------------------------------------------- */

/* Spins this many times while the lock is held before sleeping: enough
 * for a holder on the other core to finish a pool operation. */
#define PK__LOCK_SPINS 20

void
pk__lock_slow(pk__lock *l)
{
    uint32_t z;

    for (int i = 0; i < PK__LOCK_SPINS; i++) {
        cpu_relax();
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0) {
            z = 0;
            if (atomic_compare_exchange_weak_explicit(
                    &l->v, &z, 1, memory_order_acquire,
                    memory_order_relaxed))
                return;
        }
    }
    /* Mark it contended; whoever releases a contended lock wakes one. */
    while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
        futex_wait_val(&l->v, 2, UINT64_MAX);
}

void
pk__lock_wake(pk__lock *l)
{
    futex_wake_n(&l->v, 1);
}

#ifdef PK__LOCK_CHECKED
/* The ranks this thread holds, in the order taken (test builds only;
 * README, "Process-wide state"). Ranks strictly increase up the stack, so
 * its depth is at most the number of ranks. */
#define PK__HELD_MAX 16
static _Thread_local struct {
    const pk__lock *lock;
    uint32_t rank;
} held[PK__HELD_MAX];
static _Thread_local int n_held;

static void
rank_abort(const char *why, const pk__lock *l)
{
    fprintf(stderr, "poolkit: lock order: %s (lock %p, rank %u; held:",
            why, (const void *)l, (unsigned)l->rank);
    for (int i = 0; i < n_held; i++)
        fprintf(stderr, " %u", (unsigned)held[i].rank);
    fprintf(stderr, "; ranks in lib/kit/sync.h)\n");
    abort();
}

void
pk__lock_check_take(const pk__lock *l)
{
    if (l->rank == PK__RANK_NONE)
        rank_abort("taking a lock that pk__lock_init never ranked", l);
    if (n_held > 0 && l->rank <= held[n_held - 1].rank)
        rank_abort("taking a lock not ranked after the last one held", l);
    if (n_held == PK__HELD_MAX)
        rank_abort("too many locks held", l);
    held[n_held].lock = l;
    held[n_held].rank = l->rank;
    n_held++;
}

void
pk__lock_check_drop(const pk__lock *l)
{
    for (int i = n_held - 1; i >= 0; i--)
        if (held[i].lock == l) {
            for (; i < n_held - 1; i++)
                held[i] = held[i + 1];
            n_held--;
            return;
        }
    rank_abort("releasing a lock this thread does not hold", l);
}
#endif

/* No lost wake-up: a waiter counts itself and reads seq with the lock
 * held; the broadcaster changed the predicate under the same lock before
 * it bumps seq and reads `waiters` (all seq_cst). Either it sees the
 * waiter, or the waiter read the new seq and does not sleep. */
void
pk__cv_broadcast(pk__cv *c)
{
    atomic_fetch_add(&c->seq, 1);
    if (atomic_load(&c->waiters))
        futex_wake_n(&c->seq, INT_MAX);
}

void
pk__cv_wait_until(pk__cv *c, pk__lock *l, uint64_t deadline_ns)
{
    uint32_t seq;

    atomic_fetch_add(&c->waiters, 1);
    seq = atomic_load(&c->seq);
    pk__lock_release(l);
    futex_wait_val(&c->seq, seq, deadline_ns);
    pk__lock_acquire(l);
    atomic_fetch_sub(&c->waiters, 1);
}

uint32_t
pk__cv_prepare(pk__cv *c)
{
    atomic_fetch_add(&c->waiters, 1);
    return atomic_load(&c->seq);
}

void
pk__cv_cancel(pk__cv *c)
{
    atomic_fetch_sub(&c->waiters, 1);
}

void
pk__cv_wait_prepared(pk__cv *c, uint32_t seq, uint64_t deadline_ns)
{
    futex_wait_val(&c->seq, seq, deadline_ns);
    atomic_fetch_sub(&c->waiters, 1);
}

uint32_t
pk__park(pk__parker *p, uint64_t deadline_ns)
{
    uint32_t v;

    for (int i = 0; i < PK__SPINS; i++) {
        /* Acquire: pairs with the exchange in pk__park_set, so what the
         * waker wrote before waking is visible here. */
        v = atomic_load_explicit(&p->word, memory_order_acquire);
        if (v)
            return v;
        cpu_relax();
    }
    for (;;) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong_explicit(
                &p->word, &zero, PK__PARK_SLEEPING, memory_order_acq_rel,
                memory_order_acquire) ||
            zero == PK__PARK_SLEEPING) {
            if (deadline_ns != UINT64_MAX && pk__now_ns() >= deadline_ns)
                return 0;
            futex_wait(&p->word, deadline_ns);
            continue;
        }
        return zero; /* a wake value arrived */
    }
}

bool
pk__park_set(pk__parker *p, uint32_t v)
{
    /* Release: the waiter's acquire load sees everything written before. */
    return atomic_exchange_explicit(&p->word, v, memory_order_acq_rel) ==
           PK__PARK_SLEEPING;
}

void
pk__park_kick(pk__parker *p)
{
    futex_wake(&p->word);
}

void
pk__park_wake(pk__parker *p, uint32_t v)
{
    if (pk__park_set(p, v))
        pk__park_kick(p);
}

/* ---- fork ------------------------------------------------------------- */

/* The one documented global: how many fork()s this process is removed
 * from the process that created a pool. Relaxed: the child handler runs
 * single-threaded before the child's code, and the parent never changes
 * it. */
_Atomic unsigned pk__fork_epoch_var;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
on_fork_child(void)
{
    atomic_fetch_add_explicit(&pk__fork_epoch_var, 1, memory_order_relaxed);
}

static void
register_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned
pk__fork_epoch(void)
{
    pthread_once(&fork_once, register_atfork);
    return atomic_load_explicit(&pk__fork_epoch_var, memory_order_relaxed);
}

size_t
pk__cpu_count(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
    return 2;
}
