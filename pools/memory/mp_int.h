/* pools/memory/mp_int.h - the object pool's internals, shared by its
 * files. Bottom up, each file calling only the ones above it:
 *
 *   debug.c    the debug mode (PK_MEMPOOL_DEBUG): the registry of the
 *              pool's slabs, each object's state and site, poisoning,
 *              the reports of bad frees and of leaks at destroy
 *   slab.c     one slab: its mapping, its free bitmap, ctor and dtor
 *              (the core's create, destroy and forget_in_child hooks)
 *   depot.c    the slabs the pool holds from the core: which have room,
 *              the budget and the allocs waiting at it, empty slabs back
 *              to the core, trim, the leak count at destroy
 *   cache.c    the per-thread caches: the lock-free path, batches to and
 *              from the depot, the thread-exit flush (a pthread key)
 *   mempool.c  the public calls
 *
 * Lock: one per pool (mp->lock), a leaf: nothing is taken under it, the
 * core's lock least of all (the core is called with it dropped). No hook
 * runs under it. */
#ifndef PK_POOLS_MEMORY_MP_INT_H
#define PK_POOLS_MEMORY_MP_INT_H

#include <poolkit/mempool.h>
#include <poolkit/pool.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "executor_int.h" /* lib/kit: locks, fork counter, alloc seam, log */

#define PK__MP_MAGIC 0x6d656d70u            /* "memp" */

/* A cache line (x86-64, most arm64): the unit of false sharing. */
#define PK__CACHE_LINE 64

/* ---- debug mode (debug.c) ------------------------------------------------ */

struct mp_slab;

/* The slab's per-object records, and the slab into the registry (the
 * core's create hook, after the mapping). Returns 0 or PK_ENOMEM. Lock not
 * held. */
int pk__mp_dbg_slab_made(struct pk_mempool *mp, struct mp_slab *s);

/* The slab out of the registry, its poison lifted, its records freed (the
 * core's destroy hook, before dtor and unmap). Lock not held. */
void pk__mp_dbg_slab_unmade(struct pk_mempool *mp, struct mp_slab *s);

/* In a child after fork(), before the unmap: the poison lifted, nothing
 * else (async-signal-safe). */
void pk__mp_dbg_slab_forget(struct pk_mempool *mp, struct mp_slab *s);

/* Whether obj may be freed: an allocated object of a slab of mp, then
 * marked freed; otherwise reported, and PK_EINVAL. Lock not held. */
int pk__mp_dbg_free_check(struct pk_mempool *mp, void *obj);

/* A freed object's poisoning (bytes, ASan, Valgrind). */
void pk__mp_dbg_poison(struct pk_mempool *mp, void *obj);

/* An object handed out: unpoisoned, marked allocated at file:line, and
 * reported if written after its free. */
void pk__mp_dbg_alloc(struct pk_mempool *mp, void *obj, const char *file,
                      int line);

/* The pool's start and end in debug mode (Valgrind's mempool; the
 * registry's memory, freed with the handle). */
void pk__mp_dbg_create(struct pk_mempool *mp);
void pk__mp_dbg_free_handle(struct pk_mempool *mp);

/* At destroy, caches taken over: reports the objects still allocated by
 * site. Returns how many. */
uint64_t pk__mp_dbg_leaks(struct pk_mempool *mp);

/* ---- a slab (slab.c) ---------------------------------------------------- */

/* The first bytes of every mapping: how a freed pointer finds its slab
 * (the mapping is aligned to its size, so the header is the pointer
 * rounded down to slab_size). Written once when the slab is mapped. The
 * tag (magic, pool) is ABI: the inline free reads it (mempool.h). */
struct mp_slab_head {
    struct pk_mempool_slab_tag tag; /* PK_MEMPOOL_SLAB_MAGIC, the pool */
    struct mp_slab *slab;           /* its descriptor */
};

/* Debug mode: one object's state (debug.c: FRESH, ALLOCATED, FREED) and
 * the site of its last alloc; relaxed __atomic builtins. */
struct mp_obj_dbg {
    const char *file;
    int line;
    unsigned char state;
};

/* A slab's descriptor, kept beside the mapping (pk__alloc) so that free
 * objects are never written to. The lists and the bitmap are depot.c's,
 * under mp->lock, while the depot holds the slab; base and nfree are
 * read-only while the slab sits idle in the core. */
struct mp_slab {
    char *base;                 /* the mapping: slab_size bytes */
    struct pk_mempool *mp;
    pk_lease lease;             /* while the depot holds it */
    struct mp_slab *next, *prev;   /* depot: every slab held */
    struct mp_slab *pnext, *pprev; /* depot: slabs with room */
    struct mp_slab *anext, *aprev; /* slab.c: every slab mapped */
    bool on_partial;
    size_t nfree;               /* objects back in the slab (bit set) */
    size_t hint;                /* no set bit in words below this one */
    size_t nwords;
    struct mp_obj_dbg *dbg;     /* debug mode: nobjs of them, else NULL */
    uint64_t bits[];            /* bit i set: object i is in the slab */
};

/* The core's hooks. */
int pk__mp_slab_create(void *user, void **res, pk_error *err);
void pk__mp_slab_destroy(void *user, void *res);
void pk__mp_slab_forget(void *user, void *res); /* async-signal-safe */

/* Takes up to want objects out of s into out (bits cleared), the lowest
 * address last. Returns how many. mp->lock held. */
size_t pk__mp_slab_take(struct mp_slab *s, void **out, size_t want);

/* Bytes of the pool's slabs resident in memory now (mincore; 0 without
 * memory for the walk). Lock not held (taken inside to list the slabs,
 * not around the syscalls). */
uint64_t pk__mp_slab_resident(struct pk_mempool *mp);

/* Puts back the objects of word w of s whose bits are set in mask, count
 * of them (the depot gathers a batch's objects of one word into one
 * mask). Returns how many were in s already (double frees: those change
 * nothing). mp->lock held. */
size_t pk__mp_slab_put_word(struct mp_slab *s, size_t w, uint64_t mask,
                            size_t count);

/* ---- batches handed between threads (depot.c) ---------------------------- */

/* A batch of free objects a thread's full cache handed back, on the
 * pool's lock-free stack (mp->xfull) until a thread with an empty cache
 * takes it; or an empty node (on mp->xspare or a cache's spares). A node
 * lives until the pool is destroyed: one read from a stack's head may be
 * read again after another thread took it. */
struct mp_batch {
    struct mp_batch *next;
    _Atomic uint32_t depth;       /* batches from it to the stack's bottom,
                                     as it was pushed (a bound, racy) */
    uint32_t n;
    void *objs[];                 /* xfer_cap of them */
};

/* At most this many batches on the stack: a full cache gives its half to
 * the slabs beyond (a bound on what the stack, and a thread's hoard,
 * keep from the slabs). */
#define PK__MP_XFER_MAX 16u

/* A thread that takes batches gives their empty nodes back this many
 * at a time. */
#define PK__MP_SPARES 8u

/* ---- per-thread caches (cache.c) ---------------------------------------- */

enum { PK__MPC_LIVE = 0, PK__MPC_FLUSHING = 1, PK__MPC_DEAD = 2 };

/* One thread's cache of one pool. pub is what the inline path sees
 * (mempool.h: ABI). The owner thread alone
 * reads and writes pub's n and objs and the list link, without a lock;
 * pub.fast is also cleared by destroy, and pub.allocs and frees are read
 * by stats (both relaxed atomics). state says who else may touch it:
 * LIVE, the owner uses it; FLUSHING, the owner is giving it back at
 * thread exit (destroy waits for that); DEAD, the pool is gone (destroy
 * took it over) and the owner only frees it. */
struct mp_cache {
    struct mp_cache *next;        /* the owner's list */
    struct pk_mempool *mp;        /* never dereferenced unless LIVE */
    unsigned epoch;               /* the fork epoch it was made in */
    _Atomic int state;            /* acquire/release: see cache.c */
    struct mp_cache *pnext, *pprev; /* the pool's list, under mp->lock */
    struct mp_batch *spares;      /* the owner's empty nodes */
    uint32_t nspares;             /* how many */
    uint64_t moved_in, moved_out; /* objects into the cache other than
                                     by a free (refills), out of it other
                                     than by an alloc (to the depot or
                                     the stack): the stats' frees */
    struct mp_batch *hoard;       /* batches taken off the stack with the
                                     one the cache needed, for its next
                                     refills (given to the slabs at
                                     thread exit and trim, counted as
                                     cached at destroy) */
    /* Last: its objs[] (cache_cap of them) end the allocation. A struct
     * whose last member ends in a flexible array is a GNU C extension
     * (gcc and clang), as the inline path is. */
    struct pk_mempool_tcache pub;
};

/* ---- the pool ------------------------------------------------------------- */

struct pk_mempool {
    uint32_t magic;               /* PK__MP_MAGIC while alive */
    unsigned fork_epoch;

    /* The geometry and options: set at create, read-only after. */
    size_t obj_size, stride, slab_size, first, nobjs, nwords;
    uintptr_t slab_mask;          /* ~(slab_size - 1) */
    unsigned stride_shift;        /* log2(stride) when a power of two */
    uint64_t stride_inv;          /* the inline free's index check: the */
    unsigned stride_rot;          /* inverse of stride's odd part, and
                                     stride's power of two (mempool.h) */
    bool plain;                   /* no hooks, no zeroing, no debug:
                                     the inline path may serve it */
    bool debug;                   /* PK_MEMPOOL_DEBUG */
    bool poison_bytes;            /* debug and no ctor: fill freed
                                     objects with PK_MEMPOOL_POISON */
    unsigned slab_shift;          /* log2(slab_size) */
    size_t max_slabs, min_idle, max_bytes;
    uint32_t cache_cap;           /* 0: no caches */
    uint32_t xfer_cap;            /* objects per batch on xfull (half the
                                     cache), 0: no hand-back (debug mode,
                                     caches under 2) */
    unsigned flags;
    int (*ctor)(void *, void *);
    void (*dtor)(void *, void *);
    void (*on_alloc)(void *, void *);
    void (*on_free)(void *, void *);
    void *user;
    pk_event_fn event;
    void *event_user;
    pk_pool *core;                /* slabs */

    /* Allocs waiting at the budget. Written under lock; a free reads it
     * without (relaxed; the inline one too, through its cache's pointer)
     * and then takes the slow path, so the waiter sees the object come
     * back; a free that misses a new waiter leaves the object in its
     * cache (the waiter may time out: documented). A plain uint32_t for
     * the inline path (__atomic builtins), on a line of its own: every
     * free on every thread reads it, and the lock next to it would make
     * that read miss. */
    char pad0[64];
    uint32_t waiters;
    char pad1[64];

    /* depot.c's lock-free stacks, a line each: batches of free objects
     * (push one, take all: no ABA), and empty nodes (pushed and taken a
     * list at a time). */
    struct mp_batch *_Atomic xfull;
    char pad2[64];
    struct mp_batch *_Atomic xspare;
    char pad3[64];

    pk__lock lock;
    pk__cv cv;                    /* allocs at the budget; destroy
                                     waiting for a thread-exit flush */

    /* depot.c's, under lock. */
    struct mp_slab *held;         /* every slab the depot holds */
    struct mp_slab *partial;      /* those with room */
    size_t nheld, npending;       /* held; core acquires under way */
    uint64_t out, peak;           /* objects out of slabs, its peak */
    uint64_t waits, timeouts, double_frees;

    /* debug.c's, under lock: the registry (a hash set of every slab
     * mapped, linear probing, reg_cap a power of two or 0), and the frees
     * of pointers that were no object of the pool. */
    struct mp_slab **reg;
    size_t reg_cap, reg_n;
    uint64_t bad_frees;

    /* cache.c's: the caches of this pool (under lock), the counts of
     * caches gone and of calls made without a cache (atomic). */
    struct mp_cache *caches;
    _Atomic uint64_t gone_allocs, gone_frees;

    /* slab.c's: every slab mapped (under lock), the counts, and what
     * the last trim found resident (bytes). */
    struct mp_slab *all;
    _Atomic uint64_t slabs_mapped, slabs_unmapped;
    _Atomic uint64_t resident_after_trim;
};

/* The key in the tag of mp's slabs (mempool.h). */
static inline uint64_t
pk__mp_key(const struct pk_mempool *mp)
{
    return PK_MEMPOOL_SLAB_MAGIC ^ (uint64_t)(uintptr_t)mp;
}

/* The header of the slab obj would be in: read it only for a pointer
 * the caller says is of some pool. */
static inline const struct mp_slab_head *
pk__mp_head_of(const struct pk_mempool *mp, const void *obj)
{
    return (const struct mp_slab_head *)((uintptr_t)obj & mp->slab_mask);
}

/* obj's index in its slab, or (size_t)-1 if obj is not an object's
 * start in a slab of mp. */
static inline size_t
pk__mp_index(const struct pk_mempool *mp, const void *obj)
{
    const struct mp_slab_head *h = pk__mp_head_of(mp, obj);
    size_t off = (size_t)((uintptr_t)obj - (uintptr_t)h), i;

    if (h->tag.key != pk__mp_key(mp) || off < mp->first)
        return (size_t)-1;
    off -= mp->first;
    if (mp->stride_shift) {
        if (off & (mp->stride - 1))
            return (size_t)-1;
        i = off >> mp->stride_shift;
    } else {
        if (off % mp->stride)
            return (size_t)-1;
        i = off / mp->stride;
    }
    return i < mp->nobjs ? i : (size_t)-1;
}

/* mp->waiters, read and written with relaxed __atomic builtins. */
static inline uint32_t
pk__mp_waiters(const struct pk_mempool *mp)
{
    return __atomic_load_n(&mp->waiters, __ATOMIC_RELAXED);
}

static inline bool
pk__mp_forked(const struct pk_mempool *mp)
{
    return mp->fork_epoch != pk__fork_epoch_fast();
}

/* ---- the depot (depot.c) ------------------------------------------------ */

/* Takes between 1 and want objects out of the slabs into out, mapping a
 * slab through the core when none has room, waiting up to timeout_ms at
 * the budget. Returns how many (> 0) or PK_EAGAIN, PK_ETIMEDOUT,
 * PK_ENOMEM, a ctor's code. Lock not held. */
int pk__mp_depot_get(struct pk_mempool *mp, void **out, size_t want,
                     int timeout_ms);

/* Puts n objects back into their slabs; a slab that becomes empty goes
 * back to the core. Wakes allocs waiting at the budget. Lock not held. */
void pk__mp_depot_put(struct pk_mempool *mp, void *const *objs, size_t n);

/* Unmaps the core's empty slabs down to min_idle. Lock not held. */
void pk__mp_depot_trim(struct pk_mempool *mp);

/* At destroy: gives every held slab back to the core to be unmapped.
 * Returns the objects that were out of their slabs. Lock not held. */
uint64_t pk__mp_depot_close(struct pk_mempool *mp);

/* In a child after fork(): forgets (unmaps) every slab the depot held,
 * without the lock (the child's only thread). */
void pk__mp_depot_forget_in_child(struct pk_mempool *mp);

/* Fills the depot's part of *out. Lock not held. */
void pk__mp_depot_stats(struct pk_mempool *mp, pk_mempool_stats *out);

/* The batch stack (mp->xfer_cap != 0). Lock not held in any. */

/* Pushes b (b->n objects) unless the stack holds PK__MP_XFER_MAX
 * batches. Returns whether it did; then b is the stack's. */
bool pk__mp_xfer_push(struct pk_mempool *mp, struct mp_batch *b);

/* Whether the stack had room for a batch when looked at. */
static inline bool
pk__mp_xfer_room(struct pk_mempool *mp)
{
    /* acquire: top's depth was written before its push. */
    struct mp_batch *top = atomic_load_explicit(&mp->xfull,
                                                memory_order_acquire);

    return !top || atomic_load_explicit(&top->depth, memory_order_relaxed) <
                       PK__MP_XFER_MAX;
}

/* Takes every batch off the stack: a list through next, the newest
 * first, or NULL. Give each node back (pk__mp_xfer_spare_put) once its
 * objects are copied out. */
struct mp_batch *pk__mp_xfer_pop(struct pk_mempool *mp);

/* The batches of list (linked through next) into the slabs. */
void pk__mp_xfer_drain_list(struct pk_mempool *mp, struct mp_batch *list);

/* Every batch on the stack into the slabs (depot_put). */
void pk__mp_xfer_drain(struct pk_mempool *mp);

/* Empty nodes: a list of them (linked through next) onto the pool's
 * spares; all of the pool's spares taken (a list, or NULL). */
void pk__mp_xfer_spare_put(struct pk_mempool *mp, struct mp_batch *head);
struct mp_batch *pk__mp_xfer_spare_take(struct pk_mempool *mp);

/* At destroy (nobody pushes): frees every node. Returns the objects
 * that were in batches (free, not leaked). */
uint64_t pk__mp_xfer_close(struct pk_mempool *mp);

/* Frees a list of nodes (linked through next). */
void pk__mp_xfer_free_list(struct mp_batch *b);

/* ---- caches (cache.c) --------------------------------------------------- */

/* One object for this thread: from its cache, else a batch from the
 * depot. Returns 0 or the depot's error. */
int pk__mp_cache_alloc(struct pk_mempool *mp, void **out, int timeout_ms);

/* obj (checked) back into this thread's cache, or to the depot. */
void pk__mp_cache_free(struct pk_mempool *mp, void *obj);

/* Empties this thread's cache of mp into the depot. */
void pk__mp_cache_flush_mine(struct pk_mempool *mp);

/* At destroy: every cache of mp is taken over (DEAD); waits for a thread
 * that is flushing at exit. Returns the objects they held. Frees this
 * thread's dead caches. */
uint64_t pk__mp_cache_detach_all(struct pk_mempool *mp);

/* The counts of calls, summed over caches (lock taken inside). */
void pk__mp_cache_counts(struct pk_mempool *mp, uint64_t *allocs,
                         uint64_t *frees);

#endif /* PK_POOLS_MEMORY_MP_INT_H */
