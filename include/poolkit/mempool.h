/* poolkit/mempool.h - the memory pools: pk_mempool, objects of one size,
 * and pk_arena, bump allocation freed all at once.
 *
 * Which to pick: pk_pool (pool.h) for any resource that has hooks and
 * health (connections, handles); pk_mempool for plain memory objects of
 * one size, allocated and freed from any thread, kept constructed across
 * reuse; pk_arena for per-request scratch memory of any size, freed in
 * one reset.
 *
 * pk_mempool in short. Objects live in slabs: one mapping (mmap) of
 * slab_size bytes, aligned to its size, holds objects_per_slab objects.
 * A slab is the resource of a pk_pool core: the core decides when one is
 * mapped and when an empty one is unmapped (min_idle empty slabs stay
 * warm; idle_timeout_ms unmaps the rest), and its events report slabs
 * (PK_EVENT_CREATED, _DESTROYED, _CREATE_FAILED, ev.resource identifying
 * the slab). Each thread keeps a small cache of objects per pool, so the
 * common pk_mempool_alloc and pk_mempool_free take no lock; a full cache
 * gives half of its objects back to their slabs, an empty one takes a
 * batch, under the pool's own lock (never the core's). In a pool without
 * a budget the half goes instead, with one atomic operation, onto a
 * stack of batches that another thread's empty cache takes whole (up to
 * 16 batches a pool), so a thread that frees what another allocates
 * rarely takes the lock; a thread keeps the batches it took and did not
 * need yet until it needs them, trims or exits. A thread's caches go
 * back when the thread exits. An object may be freed on any thread.
 *
 * Memory: nothing of an object is written by the pool while it is free
 * (the free lists are bitmaps beside the slab, and the caches arrays of
 * pointers), so a constructed object stays constructed: ctor runs on
 * every object when its slab is mapped, dtor when the slab is unmapped
 * (the Linux kernel's kmem_cache). Pages are touched only when an object
 * on them is first used (or constructed, or with PK_MEMPOOL_PREFAULT).
 *
 * After fork(): in the child, pk_mempool_free accepts an object inherited
 * from the parent and forgets it (no hook runs, the memory is not reused),
 * pk_mempool_destroy unmaps what the child inherited (no dtor runs), and
 * every other call on an inherited pool returns PK_EFORKED. A child that
 * wants objects makes a pool of its own.
 *
 * ABI: besides the options and the stats, the structs of the inline fast
 * path (struct pk_mempool_tcache, struct pk_mempool_slab_tag and struct
 * pk_arena_bump, at the end of this header) are compiled into programs:
 * their layout is part of the ABI, and a change to it bumps the soname's
 * major. Define PK_MEMPOOL_NO_INLINE before including this header to call
 * the library for everything (nothing of those structs is then compiled
 * into the program). The inline path reads an initial-exec thread-local
 * that libpoolkit.so exports (8 bytes of static TLS: dlopen of the
 * library works within the C library's reserve for that). */
#ifndef POOLKIT_MEMPOOL_H
#define POOLKIT_MEMPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_mempool pk_mempool; /* opaque */

/* ---- options ---------------------------------------------------------- */

/* Limits, all checked at create (PK_EINVAL beyond them). */
#define PK_MEMPOOL_OBJECT_MAX ((size_t)1 << 20) /* object_size, 1 MiB */
#define PK_MEMPOOL_SLAB_MAX ((size_t)1 << 26)   /* slab_size, 64 MiB */
#define PK_MEMPOOL_CACHE_MAX 1024               /* cache_size, objects */

enum pk_mempool_flags {
    /* pk_mempool_alloc returns the object zeroed (a memset of
     * object_size bytes on every alloc). Not with a ctor, whose work it
     * would undo. */
    PK_MEMPOOL_ZERO = 1u << 0,
    /* Touch every page of a slab when it is mapped (its objects then cost
     * no page fault on first use). */
    PK_MEMPOOL_PREFAULT = 1u << 1,
    /* Never start the core's maintenance thread: the embedder calls
     * pk_mempool_maintain() (PK_POOL_MANUAL_MAINTENANCE). */
    PK_MEMPOOL_MANUAL_MAINTENANCE = 1u << 2,
    /* The debug mode, for tests and for hunting a bug in a release
     * build (one build serves both). Every pk_mempool_free is checked
     * against a registry of the pool's slabs before anything of the slab
     * is read, so a pointer from elsewhere (malloc's, another pool's, an
     * unmapped slab's), a pointer into an object or a slab's header, and
     * an object freed twice are all found: each is reported (the event
     * hook: PK_EVENT_MISUSE, ev.resource the pointer, ev.file and
     * ev.line the object's alloc site when it has one, ev.error PK_EINVAL
     * and a message; with no hook, a stderr line) and the free returns
     * PK_EINVAL, changing nothing. A freed object is filled with
     * PK_MEMPOOL_POISON (not with a ctor: a constructed object keeps its
     * bytes), poisoned for AddressSanitizer when the library is built
     * with it (a use after free is then reported at the faulting access)
     * and handed back to Valgrind as freed when <valgrind/memcheck.h> was
     * there at build time (VALGRIND_MEMPOOL_ALLOC/FREE); an alloc that
     * finds a poison byte changed reports the write after free
     * (PK_EVENT_MISUSE, PK_ECHECK) and hands the object out.
     * Each object's alloc site (the pk_mempool_alloc macro's __FILE__ and
     * __LINE__) is kept, and destroy reports the objects still out by
     * site (one PK_EVENT_LEASE_OUT_AT_CLOSE per site, ev.file and
     * ev.line, up to 64 sites and one for the rest). Costs: no inline
     * path, a lock per free, 16 bytes per object beside the slab. In a
     * child after fork() the checks are off (the lock may be held by a
     * thread the child does not have). */
    PK_MEMPOOL_DEBUG = 1u << 3
};
/* A macro too, so code can test for the debug mode with #ifdef. */
#define PK_MEMPOOL_DEBUG PK_MEMPOOL_DEBUG

/* The byte a freed object is filled with in debug mode (as the Linux
 * kernel's slab poison). */
#define PK_MEMPOOL_POISON 0x6b

/* Zero in any field means its documented default; (pk_mempool_options){
 * .object_size = 64 } is complete. Read by pk_mempool_create only. */
typedef struct pk_mempool_options {
    size_t object_size; /* required: 1 to PK_MEMPOOL_OBJECT_MAX bytes */
    /* Objects start at a multiple of align: a power of two up to the
     * page size. Default: 16, or for objects smaller than 16 bytes the
     * smallest power of two that holds one. */
    size_t align;
    /* Bytes per slab: a power of two from the page size up to
     * PK_MEMPOOL_SLAB_MAX that holds at least one object. Default: the
     * smallest one of at least 64 KiB that holds 8 objects. */
    size_t slab_size;
    /* The budget: the most bytes of slabs mapped at once, at least one
     * slab. At the budget, pk_mempool_alloc waits for an object to come
     * back. 0 = no budget. */
    size_t max_bytes;
    /* Empty slabs kept mapped, warm, on top of those in use (the core's
     * min_idle): pk_mempool_trim and the idle timeout stop there, and the
     * core maps them ahead of need. At most the budget's slab count.
     * Default 0. */
    size_t min_idle;
    /* An empty slab above min_idle that stays empty this long is
     * unmapped by the core's maintenance (a thread, unless
     * PK_MEMPOOL_MANUAL_MAINTENANCE). 0 or PK_NEVER: never (empty slabs
     * stay until pk_mempool_trim or destroy). */
    int idle_timeout_ms;
    /* Objects each thread may keep in its cache of this pool: 0 = the
     * default (32 KiB worth, between 1 and 256 objects), PK_NEVER = no
     * cache (every call takes the pool's lock), else 1 to
     * PK_MEMPOOL_CACHE_MAX. */
    int cache_size;
    unsigned flags; /* enum pk_mempool_flags */

    /* Run on each object when its slab is mapped; 0 = constructed. A
     * failure unmaps the slab (dtor runs on the objects constructed
     * before) and the alloc that needed it fails with this code (a
     * positive one becomes PK_ECREATE). Optional. */
    int (*ctor)(void *user, void *obj);
    /* Run on each object when its slab is unmapped: every object of the
     * slab, since every one is constructed. Optional. */
    void (*dtor)(void *user, void *obj);
    /* Run by pk_mempool_alloc on the object it returns, and by
     * pk_mempool_free on the object it takes (activate / passivate).
     * Optional. */
    void (*on_alloc)(void *user, void *obj);
    void (*on_free)(void *user, void *obj);
    void *user; /* passed to the four hooks; borrowed */

    /* The core's events about slabs (pool.h), and a leak at destroy
     * (PK_EVENT_LEASE_OUT_AT_CLOSE, ev.error's message saying how many
     * objects were out). Optional. */
    pk_event_fn event;
    void *event_user;
} pk_mempool_options;

/* Fills opts with every default spelled out (object_size 0: set it).
 * Returns: 0, PK_EINVAL. Owner: borrows opts. Threads: safe. */
PK_API int pk_mempool_options_init(pk_mempool_options *opts);

/* Checks options as pk_mempool_create does; err (may be NULL) names the
 * field and the rule it breaks, and is cleared on success.
 * Returns: 0, PK_EINVAL. Owner: borrows both. Threads: safe. */
PK_API int pk_mempool_options_check(const pk_mempool_options *opts,
                                    pk_error *err);

/* ---- the pool --------------------------------------------------------- */

/* Makes a pool. min_idle slabs are mapped before it returns (a failure
 * there is retried by maintenance, not returned).
 * Returns: 0, PK_EINVAL (see pk_mempool_options_check), PK_ENOMEM,
 * PK_EFORKED, PK_ECREATE (the maintenance thread could not start).
 * Owner: *out returned owned (pk_mempool_destroy); opts borrowed.
 * Threads: safe; ctor runs on this thread for the min_idle slabs. */
PK_API int pk_mempool_create(pk_mempool **out,
                             const pk_mempool_options *opts);

/* Hands out one object in *out, from this thread's cache when it has one
 * (no lock), else from a slab with room, else from a slab the core maps
 * (ctor runs then, on this thread). At the budget it waits up to
 * timeout_ms for an object to come back to a slab (a free while anyone
 * waits goes straight back, a cache flush, a thread exit); 0 does not
 * wait. While mapping fails it retries within timeout_ms (the core's
 * backoff) and then returns the mapping's error.
 * Returns: 0; PK_EINVAL (NULL, bad timeout); PK_EAGAIN (timeout 0, at the
 * budget); PK_ETIMEDOUT (at the budget until the deadline); PK_ENOMEM
 * (the system refused the memory); PK_EFORKED; a failing ctor's code.
 * Owner: *out returned owned (pk_mempool_free, or pk_mempool_destroy);
 * *out is NULL on failure.
 * Threads: safe; ctor and on_alloc run on this thread, no lock held.
 *
 * pk_mempool_alloc is a macro: it takes an object from this thread's
 * cache inline (a few loads and stores, no call) when the pool is plain
 * (no on_alloc, no on_free, no PK_MEMPOOL_ZERO) and the cache has one,
 * and otherwise calls pk_mempool_alloc_at with the caller's __FILE__ and
 * __LINE__ (the site a debug-mode leak report names). The function
 * pk_mempool_alloc exists too, for a function pointer or another
 * language: (pk_mempool_alloc)(mp, out, timeout_ms). file must be a
 * static string (it is kept, not copied); NULL and 0 mean no site. */
PK_API int pk_mempool_alloc_at(pk_mempool *mp, void **out, int timeout_ms,
                               const char *file, int line);
PK_API int (pk_mempool_alloc)(pk_mempool *mp, void **out, int timeout_ms);

/* Takes an object back (on_free runs first). Any thread may free any
 * object of the pool. It checks that obj is the start of an object of
 * this pool by reading its slab's header (a pointer from elsewhere may
 * be read out of bounds there: pass only pointers of some pk_mempool);
 * an object freed twice is found when it reaches its slab, reported (a
 * stderr line) and dropped.
 * With PK_MEMPOOL_DEBUG every bad pointer and every double free is
 * found before anything is read, reported and refused (PK_EINVAL).
 * Returns: 0, PK_EINVAL (NULL, or obj is not an object of mp: nothing
 * happens; debug mode: also an object freed twice). In a child after
 * fork(): 0 for an inherited object, which is forgotten.
 * Owner: takes obj. Threads: safe; on_free runs on this thread.
 *
 * pk_mempool_free is a macro too: for a plain pool it puts obj into this
 * thread's cache inline, after the same check of obj (the slab's header
 * and obj's offset in it), and otherwise calls the function
 * (pk_mempool_free)(mp, obj). */
PK_API int (pk_mempool_free)(pk_mempool *mp, void *obj);

/* Gives memory back now: this thread's cache goes back to the slabs, and
 * empty slabs are unmapped (dtor runs on their objects) down to
 * min_idle. Other threads' caches come back when those threads next
 * fill or empty them, or exit.
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe; dtor runs on this
 * thread. */
PK_API int pk_mempool_trim(pk_mempool *mp);

/* One maintenance pass of the core (pk_pool_maintain): unmaps slabs idle
 * past idle_timeout_ms, maps slabs up to min_idle. For
 * PK_MEMPOOL_MANUAL_MAINTENANCE.
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe; ctor and dtor run on
 * this thread. */
PK_API int pk_mempool_maintain(pk_mempool *mp);

typedef struct pk_mempool_stats {
    uint64_t allocated;    /* successful pk_mempool_alloc calls */
    uint64_t freed;        /* successful pk_mempool_free calls */
    uint64_t live;         /* allocated - freed: objects in use */
    uint64_t peak;         /* the most objects out of their slabs at
                              once: in use or in a thread's cache */
    uint64_t slabs;        /* slabs mapped (in use and empty) */
    uint64_t slabs_empty;  /* of which empty, kept by the core */
    uint64_t bytes_mapped; /* slabs * slab_size */
    uint64_t slabs_mapped;   /* slabs ever mapped */
    uint64_t slabs_unmapped; /* slabs ever unmapped */
    uint64_t waits;        /* allocs that waited at the budget */
    uint64_t timeouts;     /* of which gave up (PK_ETIMEDOUT, PK_EAGAIN) */
    uint64_t double_frees; /* objects freed twice, found and dropped (in
                              debug mode: found and refused) */
    /* The geometry the options gave. */
    size_t object_size;
    size_t stride;         /* bytes from one object to the next */
    size_t slab_size;
    size_t objects_per_slab;
    size_t max_bytes;      /* the budget, 0 = none */
    size_t cache_size;     /* per thread, 0 = no cache */
    uint64_t bad_frees;    /* debug mode: frees of pointers that were no
                              object of the pool, found and refused */
    /* Bytes of the pool's slabs resident in memory (mincore(2): pages
     * touched and not swapped out) when the last pk_mempool_trim ended;
     * 0 before the first. */
    uint64_t bytes_resident_trim;
} pk_mempool_stats;

/* Fills *out. The per-thread counts are summed as they are: a snapshot
 * taken while other threads allocate is close, not exact.
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_mempool_stats_get(pk_mempool *mp, pk_mempool_stats *out);

/* Frees the pool and all its memory, objects still out included (their
 * pointers dangle after it; dtor runs on them with the rest). Objects
 * still out are reported once (in debug mode, by alloc site first: see
 * PK_MEMPOOL_DEBUG): to the event hook as
 * PK_EVENT_LEASE_OUT_AT_CLOSE (ev.error's message: "3 objects still out
 * (192 bytes) at pk_mempool_destroy"), or with no hook as one stderr
 * line (POOLKIT_LOG=off silences it). Other threads' caches of the pool
 * are emptied; a thread exiting meanwhile is waited for. In a child
 * after fork(), it only unmaps (no hook runs). NULL is a no-op.
 * Owner: takes mp. Threads: exclusive (no other call on mp may be
 * running or start); dtor runs on this thread. */
PK_API void pk_mempool_destroy(pk_mempool *mp);

/* ---- the arena ---------------------------------------------------------- */

/* pk_arena: bump allocation of any size from blocks (malloc), freed all
 * at once. pk_arena_reset frees everything but keeps the first block, so
 * an arena reused per request does not give its memory back and fault it
 * in again every time; an allocation larger than a block gets a block of
 * its own. Cleanup callbacks run at reset and destroy, last added first
 * (APR's and nginx's pool cleanups). A child arena is destroyed with its
 * parent, and at the parent's reset (talloc, APR).
 *
 * Threads: an arena and its children are used by one thread at a time
 * (no lock): hand the tree to another thread with your own
 * synchronisation. After fork() the child has its own copy and may go on
 * using it. */
typedef struct pk_arena pk_arena; /* opaque */

#define PK_ARENA_BLOCK_MIN ((size_t)256)
#define PK_ARENA_BLOCK_MAX ((size_t)1 << 30)

/* Makes an arena whose blocks are block_size bytes (0: 64 KiB; else
 * PK_ARENA_BLOCK_MIN to PK_ARENA_BLOCK_MAX). The first block is
 * allocated now. With a parent, the arena is the parent's child: it is
 * destroyed when the parent is destroyed or reset, unless destroyed
 * first.
 * Returns: 0, PK_EINVAL, PK_ENOMEM.
 * Owner: *out returned owned (pk_arena_destroy, or the parent's destroy
 * or reset); parent borrowed. Threads: one at a time per tree (this
 * changes the parent). */
PK_API int pk_arena_create(pk_arena **out, pk_arena *parent,
                           size_t block_size);

/* Hands out size bytes (0 counts as 1) at a multiple of align (a power
 * of two up to 4096; 0, and anything below 16: 16, malloc's alignment)
 * in *out; not zeroed. Each allocation takes its size rounded up to a
 * multiple of 16 (as malloc's chunks do): the bump then needs no
 * alignment work.
 * Returns: 0, PK_EINVAL (NULL, bad align, size over PK_ARENA_BLOCK_MAX),
 * PK_ENOMEM. Owner: *out returned borrowed, until pk_arena_reset or
 * pk_arena_destroy of this arena or an ancestor; NULL on failure.
 * Threads: one at a time per tree.
 * pk_arena_alloc is a macro that bumps the pointer inline when the
 * allocation fits the current block, and calls the function
 * (pk_arena_alloc)(a, size, align, out) otherwise. */
PK_API int (pk_arena_alloc)(pk_arena *a, size_t size, size_t align,
                            void **out);

/* Registers fn(arg), to run at the next reset or at destroy, before the
 * memory goes; cleanups run last added first, after the children are
 * destroyed. The record is allocated in the arena.
 * Returns: 0, PK_EINVAL (a or fn NULL), PK_ENOMEM (fn not registered).
 * Owner: arg borrowed until fn runs. Threads: one at a time per tree;
 * fn runs on the thread that resets or destroys. */
PK_API int pk_arena_cleanup_add(pk_arena *a, void (*fn)(void *arg),
                                void *arg);

/* Frees all at once: destroys the children, runs the cleanups, frees
 * every block but the first and starts again at its beginning. O(blocks
 * + children + cleanups), not O(allocations).
 * Returns: 0, PK_EINVAL. Threads: one at a time per tree. */
PK_API int pk_arena_reset(pk_arena *a);

typedef struct pk_arena_stats {
    size_t used;        /* bytes of blocks taken since the last reset:
                           sizes rounded up to 16, alignment gaps,
                           cleanup records */
    size_t reserved;    /* bytes of blocks held (headers included) */
    size_t blocks;      /* blocks held, large ones included */
    size_t large;       /* of which blocks of one large allocation */
    size_t children;    /* child arenas alive */
    uint64_t resets;
} pk_arena_stats;

/* Fills *out for this arena alone (not its children).
 * Returns: 0, PK_EINVAL. Threads: one at a time per tree. */
PK_API int pk_arena_stats_get(const pk_arena *a, pk_arena_stats *out);

/* Destroys the children, runs the cleanups, frees the memory and, for a
 * child, leaves its parent. NULL is a no-op.
 * Owner: takes a. Threads: one at a time per tree. */
PK_API void pk_arena_destroy(pk_arena *a);

/* ---- the inline fast paths (ABI) ---------------------------------------
 *
 * What the macros pk_mempool_alloc, pk_mempool_free and pk_arena_alloc
 * compile into the caller. Not API: use the macros. The layout of these
 * structs is part of the ABI (a change bumps the soname's major); their
 * fields are the library's to write.
 *
 * pk_mempool: pk_mempool_tls_cache is this thread's last used cache of
 * some pool (initial-exec thread-local storage: one load off the thread
 * pointer), never NULL (a thread with no cache sees one that serves
 * nothing). `fast` is the pool it serves when that pool is plain, else
 * an address that is no pool's (never NULL); the library changes it so
 * when the pool is destroyed, and a child after fork() starts with a
 * pk_mempool_tls_cache that serves nothing, so the inline path never
 * serves a pool that is gone or inherited. Everything else in the
 * struct is written by the owner thread alone. The inline free checks
 * obj as the function does: obj rounded down to the slab size must be
 * the slab's tag, whose key is this pool's, and (obj - tag - first) must
 * be i * stride with i < nobjs (one multiply: inv is stride's odd part's
 * inverse modulo 2^64, rotated right by shift, the power of two in
 * stride). Only allocs are counted on the inline path: the stats work
 * out the frees from the cache's other counts. */

#define PK_MEMPOOL_SLAB_MAGIC 0x736c6162706b6d70ull

/* The first bytes of every slab. key is PK_MEMPOOL_SLAB_MAGIC ^ the
 * pool's address: one load and one compare say "a slab of this pool". */
struct pk_mempool_slab_tag {
    uint64_t key;
    const struct pk_mempool *pool;
};

struct pk_mempool_tcache {
    const struct pk_mempool *fast;  /* atomic (relaxed) */
    /* The pool whose frees it serves: fast, or no pool's address when
     * the pool has a budget (a free must see an alloc waiting at the
     * budget, so it takes the function). Atomic (relaxed). */
    const struct pk_mempool *fast_free;
    uint32_t n, cap;                /* n: owner stores, stats read */
    uint64_t key;                   /* the slab tag's key for the pool */
    uintptr_t mask;                 /* ~(slab_size - 1) */
    uint64_t first, nobjs, inv;
    unsigned shift;
    uint64_t allocs;                /* owner stores, stats read: relaxed */
    void *objs[];                   /* objs[0 .. n-1] are free objects
                                       (cap of them: in the struct, so
                                       no pointer is loaded) */
};

/* pk_arena: the first member of every arena: the room left in the
 * current block, ptr always a multiple of 16. */
struct pk_arena_bump {
    char *ptr, *end;
    uint32_t magic;                 /* PK_ARENA_MAGIC while alive */
};
#define PK_ARENA_MAGIC 0x6172656eu

#if (defined(__GNUC__) || defined(__clang__)) && !defined(PK_MEMPOOL_NO_INLINE)

extern PK_API __thread struct pk_mempool_tcache *pk_mempool_tls_cache
    __attribute__((tls_model("initial-exec")));

static inline int
pk_mempool_alloc_fast(pk_mempool *mp, void **out, int timeout_ms,
                      const char *file, int line)
{
    struct pk_mempool_tcache *c = pk_mempool_tls_cache;

    /* & rather than &&: one branch (every field of c may be read). */
    if (__builtin_expect(out && timeout_ms >= PK_WAIT_FOREVER &&
                             ((__atomic_load_n(&c->fast, __ATOMIC_RELAXED) ==
                               mp) &
                              (c->n != 0)),
                         1)) {
        uint32_t n = c->n - 1;

        *out = c->objs[n];
        __atomic_store_n(&c->n, n, __ATOMIC_RELAXED);
        __atomic_store_n(&c->allocs, c->allocs + 1, __ATOMIC_RELAXED);
        return 0;
    }
    return pk_mempool_alloc_at(mp, out, timeout_ms, file, line);
}

static inline int
pk_mempool_free_fast(pk_mempool *mp, void *obj)
{
    struct pk_mempool_tcache *c = pk_mempool_tls_cache;

    /* Two branches: c's fields may be read at once, the slab's tag only
     * once c is known to serve mp (its mask then fits obj's slab). */
    if (__builtin_expect(((obj != NULL) &
                          (__atomic_load_n(&c->fast_free, __ATOMIC_RELAXED) ==
                           mp) &
                          (c->n < c->cap)),
                         1)) {
        const struct pk_mempool_slab_tag *t =
            (const struct pk_mempool_slab_tag *)((uintptr_t)obj & c->mask);
        uint64_t q = ((uint64_t)((uintptr_t)obj - (uintptr_t)t) - c->first) *
                     c->inv;

        q = (q >> c->shift) | (q << ((64 - c->shift) & 63));
        if (__builtin_expect((t->key == c->key) & (q < c->nobjs), 1)) {
            c->objs[c->n] = obj;
            __atomic_store_n(&c->n, c->n + 1, __ATOMIC_RELAXED);
            return 0;
        }
    }
    return (pk_mempool_free)(mp, obj);
}

static inline int
pk_arena_alloc_fast(pk_arena *a, size_t size, size_t align, void **out)
{
    struct pk_arena_bump *b = (struct pk_arena_bump *)a;
    size_t take = ((size ? size : 1) + 15) & ~(size_t)15;

    /* ptr is always a multiple of 16: alignments up to 16 need no work. */
    if (__builtin_expect(b && out && b->magic == PK_ARENA_MAGIC &&
                             size <= PK_ARENA_BLOCK_MAX && align <= 16 &&
                             (align & (align - 1)) == 0 &&
                             take <= (size_t)(b->end - b->ptr),
                         1)) {
        *out = b->ptr;
        b->ptr += take;
        return 0;
    }
    return (pk_arena_alloc)(a, size, align, out);
}

#define pk_mempool_alloc(mp, out, timeout_ms)                                 \
    pk_mempool_alloc_fast((mp), (out), (timeout_ms), __FILE__, __LINE__)
#define pk_mempool_free(mp, obj) pk_mempool_free_fast((mp), (obj))
#define pk_arena_alloc(a, size, align, out)                                   \
    pk_arena_alloc_fast((a), (size), (align), (out))

#else /* no inline path */

#define pk_mempool_alloc(mp, out, timeout_ms)                                 \
    pk_mempool_alloc_at((mp), (out), (timeout_ms), __FILE__, __LINE__)

#endif

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_MEMPOOL_H */
