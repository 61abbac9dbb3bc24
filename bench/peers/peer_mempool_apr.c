/* peer_mempool_apr.c - APR's pools (Debian libapr1-dev), driven like
 * bench_mempool (bench/bench_mempool.c) for the arena case of the mempool
 * bench of issue #14: apr_palloc(pool, 64) k times, then
 * apr_pool_clear(pool), on one pool made at start with
 * apr_pool_create(&pool, NULL) (the default allocator, which keeps the
 * blocks a clear gives back: max_free unlimited). APR has no per-object
 * free, so it has the arena case only (skip= for the rest). It runs on
 * glibc's malloc. The loops, clocks and cases are peer_mempool_common.h's. */
#define MB_IMPL "apr"
#define MB_ARENA 1
#include "peer_mempool_common.h"

#include <apr_general.h>
#include <apr_pools.h>

static apr_pool_t *g_pool;

static int
mb_init(void)
{
    if (apr_initialize() != APR_SUCCESS)
        return -1;
    return apr_pool_create(&g_pool, NULL) == APR_SUCCESS ? 0 : -1;
}

static int
mb_arena_begin(long k)
{
    (void)k;
    return 0;
}

static inline void *
mb_arena_alloc(void)
{
    return apr_palloc(g_pool, MB_OBJ);
}

static inline void
mb_arena_reset(void)
{
    apr_pool_clear(g_pool);
}

int
main(int argc, char **argv)
{
    int rc = mb_main(argc, argv);

    if (g_pool) {
        apr_pool_destroy(g_pool);
        apr_terminate();
    }
    return rc;
}
