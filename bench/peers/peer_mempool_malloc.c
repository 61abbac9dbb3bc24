/* peer_mempool_malloc.c - a malloc, driven like bench_mempool
 * (bench/bench_mempool.c) for the mempool bench of issue #14. build.sh
 * compiles this file once per allocator, each its own program, because an
 * allocator that replaces malloc must own its process:
 *
 *   peer_mempool_glibc             (nothing defined) glibc's ptmalloc
 *   peer_mempool_jemalloc          -DMB_JEMALLOC, -ljemalloc
 *   peer_mempool_tcmalloc          -DMB_TCMALLOC, -ltcmalloc (gperftools'
 *                                  full library)
 *   peer_mempool_tcmalloc_minimal  -DMB_TCMALLOC -DMB_TCMALLOC_MINIMAL,
 *                                  -ltcmalloc_minimal
 *   peer_mempool_mimalloc          -DMB_MIMALLOC, -lmimalloc
 *
 * Linking the library is what replaces malloc (its malloc comes before
 * libc's in the search order); `<driver> cases` prints malloc_from=, the
 * library that provides malloc, and bench/run.sh checks it. An object is
 * malloc(64), freed with free. Each allocator's own give-back call is the
 * trim case's: malloc_trim(0), mallctl("arena.<all>.purge"),
 * MallocExtension_ReleaseFreeMemory(), mi_collect(true).
 * The loops, clocks and cases are peer_mempool_common.h's. */
#if defined(MB_JEMALLOC)
#define MB_IMPL "jemalloc"
#define MB_TRIM_CALL "mallctl_arena_all_purge"
#elif defined(MB_TCMALLOC_MINIMAL)
#define MB_IMPL "tcmalloc_minimal"
#define MB_TRIM_CALL "MallocExtension_ReleaseFreeMemory"
#elif defined(MB_TCMALLOC)
#define MB_IMPL "tcmalloc"
#define MB_TRIM_CALL "MallocExtension_ReleaseFreeMemory"
#elif defined(MB_MIMALLOC)
#define MB_IMPL "mimalloc"
#define MB_TRIM_CALL "mi_collect_force"
#else
#define MB_IMPL "glibc"
#define MB_TRIM_CALL "malloc_trim_0"
#endif
#define MB_PER_OBJECT 1
#define MB_THREADS 1
#define MB_TRIM 1
#include "peer_mempool_common.h"

#if defined(MB_JEMALLOC)
/* jemalloc's control call (Debian's build has no symbol prefix);
 * declared here rather than through <jemalloc/jemalloc.h>, whose
 * declarations of malloc and friends would only repeat stdlib.h's. */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
            size_t newlen);
#elif defined(MB_TCMALLOC)
#include <gperftools/malloc_extension_c.h>
#elif defined(MB_MIMALLOC)
#include <mimalloc.h>
#else
#include <malloc.h>
#endif

static int
mb_init(void)
{
    return 0;
}

static inline void *
mb_alloc(void)
{
    return malloc(MB_OBJ);
}

static inline void
mb_free(void *p)
{
    free(p);
}

static void
mb_trim(void)
{
#if defined(MB_JEMALLOC)
    /* MALLCTL_ARENAS_ALL is 4096: every arena. */
    if (mallctl("arena.4096.purge", NULL, NULL, NULL, 0) != 0)
        mb_die("mallctl arena.4096.purge failed");
#elif defined(MB_TCMALLOC)
    MallocExtension_ReleaseFreeMemory();
#elif defined(MB_MIMALLOC)
    mi_collect(true);
#else
    malloc_trim(0);
#endif
}

int
main(int argc, char **argv)
{
    return mb_main(argc, argv);
}
