/* peer_mempool_talloc.c - Samba's talloc (Debian libtalloc-dev), driven
 * like bench_mempool (bench/bench_mempool.c) for the mempool bench of
 * issue #14. build.sh compiles it twice:
 *
 *   peer_mempool_talloc       objects are talloc_size(ctx, 64) children of
 *                             one context made at start, each freed with
 *                             talloc_free (lifo, batch, trim); the arena
 *                             is a context from talloc_new(NULL), its
 *                             children freed at once by
 *                             talloc_free_children (it stays, as an arena
 *                             does across resets)
 *   peer_mempool_talloc_pool  -DMB_TALLOC_POOL: arena only; the context is
 *                             a talloc_pool(NULL, k * 256) block, which
 *                             the k children fill (about 160 bytes each:
 *                             the chunk header and the object) and which
 *                             talloc_free_children empties for reuse
 *
 * talloc runs on glibc's malloc. A context tree belongs to one thread at
 * a time, so there is no mt2 or xthread case (skip=). No trim call of its
 * own: the trim case's memory is what glibc's free leaves resident.
 * The loops, clocks and cases are peer_mempool_common.h's. */
#ifdef MB_TALLOC_POOL
#define MB_IMPL "talloc_pool"
#define MB_PER_OBJECT 0
#else
#define MB_IMPL "talloc"
#define MB_PER_OBJECT 1
#endif
#define MB_ARENA 1
#include "peer_mempool_common.h"

#include <talloc.h>

/* Bytes of a talloc_pool per child it must hold (object and header). */
#define POOL_PER_CHILD 256

static void *g_ctx;   /* the objects' parent */
static void *g_arena; /* the arena's context */

static int
mb_init(void)
{
    g_ctx = talloc_new(NULL);
    return g_ctx ? 0 : -1;
}

#if MB_PER_OBJECT
static inline void *
mb_alloc(void)
{
    return talloc_size(g_ctx, MB_OBJ);
}

static inline void
mb_free(void *p)
{
    talloc_free(p);
}
#endif

static int
mb_arena_begin(long k)
{
#ifdef MB_TALLOC_POOL
    g_arena = talloc_pool(NULL, (size_t)k * POOL_PER_CHILD);
#else
    (void)k;
    g_arena = talloc_new(NULL);
#endif
    return g_arena ? 0 : -1;
}

static inline void *
mb_arena_alloc(void)
{
    return talloc_size(g_arena, MB_OBJ);
}

static inline void
mb_arena_reset(void)
{
    talloc_free_children(g_arena);
}

int
main(int argc, char **argv)
{
    int rc = mb_main(argc, argv);

    talloc_free(g_arena);
    talloc_free(g_ctx);
    return rc;
}
