/* bench/baseline_pool.h - the pool most people write: a mutex, a condition
 * variable and a stack of resources. The core bench measures poolkit
 * against it; it is not part of poolkit.
 *
 * Resources are opaque pointers handed in at create time (the bench fills
 * the stack up front, so there is no create hook). acquire waits on the
 * condition while the stack is empty; release pushes and signals one
 * waiter. A releasing thread that immediately acquires again may take the
 * resource before the woken waiter runs ("barging"): that is the
 * behaviour of this design, and the wait-tail case measures it. */
#ifndef POOLKIT_BENCH_BASELINE_POOL_H
#define POOLKIT_BENCH_BASELINE_POOL_H

#include <stddef.h>

typedef struct bl_pool bl_pool;

/* Makes a pool lending the n pointers of res (copied; borrowed).
 * Returns: the pool, or NULL (n == 0 or out of memory). */
bl_pool *bl_pool_create(void *const *res, size_t n);

/* Waits until a resource is free and returns it. Threads: safe. */
void *bl_pool_acquire(bl_pool *p);

/* Gives res back and wakes one waiter. Threads: safe. */
void bl_pool_release(bl_pool *p, void *res);

/* Frees the pool; every resource must be back. NULL is a no-op. */
void bl_pool_destroy(bl_pool *p);

#endif /* POOLKIT_BENCH_BASELINE_POOL_H */
