/* lib/future_int.h - what executors need from futures beyond the public
 * API: a per-thread wait helper, so that a worker that waits on a future
 * can run queued work (the awaited task among it) instead of blocking the
 * pool it belongs to. */
#ifndef PK_LIB_FUTURE_INT_H
#define PK_LIB_FUTURE_INT_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/future.h>

struct pk__wait_helper {
    /* Waits until f finished or deadline (CLOCK_MONOTONIC, UINT64_MAX =
     * none) passes, helping meanwhile. Returns 0, PK_ETIMEDOUT,
     * PK_EDEADLK or PK_EFORKED (a worker's thread in a child after
     * fork()). */
    int (*fn)(void *ctx, pk_future *f, uint64_t deadline);
    /* The same for pk_future_wait_any: waits until one of fs[0..n-1]
     * finished or deadline passes. Returns 0, PK_ETIMEDOUT, PK_EDEADLK
     * (n 1), PK_EFORKED or PK_ENOMEM. */
    int (*any)(void *ctx, pk_future *const *fs, size_t n, uint64_t deadline);
    void *ctx;
};

/* Installs h (NULL removes) as this thread's wait helper: every blocking
 * pk_future_wait, pk_future_wait_all and pk_future_wait_any on this
 * thread goes through it.
 * Returns the previous one. Thread-local state, documented in future.c. */
const struct pk__wait_helper *
pk__future_set_wait_helper(const struct pk__wait_helper *h);

/* True if this thread has a wait helper (it is an executor's worker). */
int pk__future_helped(void);

/* pk_future_wait up to a deadline (CLOCK_MONOTONIC ns, UINT64_MAX =
 * none), through this thread's helper if it has one. Returns as
 * pk_future_wait. */
int pk__future_wait_deadline(pk_future *f, uint64_t deadline);

/* Waits without the helper (what a helper uses to park). Returns 0 or
 * PK_ETIMEDOUT. */
int pk__future_wait_until(pk_future *f, uint64_t deadline);

/* The same for any of fs[0..n-1]. Returns 0 (one finished), PK_ETIMEDOUT
 * or PK_ENOMEM (more than a few futures, and no memory for the nodes). */
int pk__future_wait_any_until(pk_future *const *fs, size_t n,
                              uint64_t deadline);

/* pk_future_create with `refs` references at once (an executor's own
 * and its caller's): one atomic increment less than a pk_future_ref. */
int pk__future_create_refs(pk_future **out, pk_event_fn event,
                           void *event_user, uint32_t refs);

/* Non-zero once f reached a terminal state. */
int pk__future_done(const pk_future *f);

#endif /* PK_LIB_FUTURE_INT_H */
