/* pools/memory/mempool.c - the object pool's public calls: options and
 * geometry, create and destroy (also in a forked child), alloc, free,
 * trim, maintain, stats.
 *
 * The top of the module (mp_int.h lists the files): it checks every
 * argument and the fork epoch, runs the per-object hooks (zeroing,
 * on_alloc, on_free) and leaves the rest to cache.c, which leaves slabs
 * to depot.c. The handle's memory is freed by the core's user_free hook,
 * after its last slab hook has run. */
#include <string.h>
#include <unistd.h>

#include "mp_int.h"

/* The core's sizes are counts of slabs. */
_Static_assert(PK_MEMPOOL_CACHE_MAX <= UINT32_MAX, "cache_cap is 32 bits");

/* ---- options and geometry --------------------------------------------- */

struct geom {
    size_t align, stride, slab_size, first, nobjs, max_slabs;
    uint32_t cache_cap;
};

static bool
pow2(size_t x)
{
    return x && (x & (x - 1)) == 0;
}

static size_t
round_up(size_t x, size_t a)
{
    return (x + a - 1) & ~(a - 1);
}

static int
bad(pk_error *err, const char *why)
{
    return pk_error_set(err, PK_EINVAL, 0, "pk_mempool_options: %s", why);
}

static size_t
default_align(size_t size)
{
    size_t a = 1;

    while (a < size && a < 16)
        a *= 2;
    return a;
}

/* Slab size and objects per slab. */
static int
slab_geometry(const pk_mempool_options *o, struct geom *g, pk_error *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t s = o->slab_size;

    if (s) {
        if (!pow2(s) || s < page || s > PK_MEMPOOL_SLAB_MAX)
            return bad(err, "slab_size is not a power of two from the page "
                            "size to PK_MEMPOOL_SLAB_MAX");
        if (s < g->first + g->stride)
            return bad(err, "slab_size holds no object");
    } else {
        s = (size_t)64 << 10;
        if (s < page)
            s = page;
        while ((s - g->first) / g->stride < 8)
            s *= 2; /* at most 16 MiB for a 1 MiB object */
    }
    g->slab_size = s;
    g->nobjs = (s - g->first) / g->stride;
    return 0;
}

static int
budget_and_cache(const pk_mempool_options *o, struct geom *g, pk_error *err)
{
    g->max_slabs = PK_POOL_SIZE_MAX;
    if (o->max_bytes) {
        if (o->max_bytes < g->slab_size)
            return bad(err, "max_bytes is below one slab (see slab_size)");
        if (o->max_bytes / g->slab_size < PK_POOL_SIZE_MAX)
            g->max_slabs = o->max_bytes / g->slab_size;
    }
    if (o->min_idle > g->max_slabs)
        return bad(err, "min_idle is above the slabs max_bytes allows");
    if (o->cache_size == PK_NEVER) {
        g->cache_cap = 0;
    } else if (o->cache_size == 0) {
        size_t n = ((size_t)32 << 10) / g->stride;
        g->cache_cap = (uint32_t)(n < 1 ? 1 : n > 256 ? 256 : n);
    } else if (o->cache_size > 0 && o->cache_size <= PK_MEMPOOL_CACHE_MAX) {
        g->cache_cap = (uint32_t)o->cache_size;
    } else {
        return bad(err, "cache_size is not 0, PK_NEVER or 1 to "
                        "PK_MEMPOOL_CACHE_MAX");
    }
    return 0;
}

static int
geometry(const pk_mempool_options *o, struct geom *g, pk_error *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int rc;

    if (!o)
        return bad(err, "NULL options");
    if (o->object_size == 0 || o->object_size > PK_MEMPOOL_OBJECT_MAX)
        return bad(err, "object_size is not 1 to PK_MEMPOOL_OBJECT_MAX");
    if (o->align && (!pow2(o->align) || o->align > page))
        return bad(err, "align is not a power of two up to the page size");
    if (o->flags & ~(unsigned)(PK_MEMPOOL_ZERO | PK_MEMPOOL_PREFAULT |
                               PK_MEMPOOL_MANUAL_MAINTENANCE |
                               PK_MEMPOOL_DEBUG))
        return bad(err, "flags has a bit that is no pk_mempool_flags");
    if ((o->flags & PK_MEMPOOL_ZERO) && o->ctor)
        return bad(err, "PK_MEMPOOL_ZERO would undo the ctor's work");
    if (o->idle_timeout_ms < 0 && o->idle_timeout_ms != PK_NEVER)
        return bad(err, "idle_timeout_ms is negative but not PK_NEVER");
    g->align = o->align ? o->align : default_align(o->object_size);
    g->stride = round_up(o->object_size, g->align);
    /* The header on a cache line of its own: every free reads it, and
     * an object sharing its line would be written by the thread that
     * holds it (two threads' frees slowed each other 2.4x). */
    g->first = round_up(sizeof(struct mp_slab_head),
                        g->align > PK__CACHE_LINE ? g->align
                                                  : PK__CACHE_LINE);
    rc = slab_geometry(o, g, err);
    if (rc == 0)
        rc = budget_and_cache(o, g, err);
    return rc;
}

int
pk_mempool_options_init(pk_mempool_options *o)
{
    if (!o)
        return PK_EINVAL;
    memset(o, 0, sizeof *o);
    o->idle_timeout_ms = PK_NEVER;
    return 0;
}

int
pk_mempool_options_check(const pk_mempool_options *o, pk_error *err)
{
    struct geom g;
    int rc = geometry(o, &g, err);

    if (rc == 0)
        pk_error_clear(err);
    return rc;
}

/* ---- create and destroy ----------------------------------------------- */

static void
free_handle(void *user)
{
    struct pk_mempool *mp = user;

    if (mp->debug)
        pk__mp_dbg_free_handle(mp);
    pk__free(mp);
}

/* For the inline free's index check (mempool.h): stride = odd << rot,
 * and inv * odd == 1 modulo 2^64 (Newton's iteration: each step doubles
 * the bits that are right, and odd * odd == 1 modulo 8 to start). Then
 * for x = obj - slab - first, rotr(x * inv, rot) is x / stride when
 * stride divides x, and more than 2^64 / stride when it does not (Hacker's
 * Delight, 10-17), so one compare with nobjs checks both. */
static void
stride_inverse(size_t stride, uint64_t *inv, unsigned *rot)
{
    unsigned k = (unsigned)__builtin_ctzll(stride);
    uint64_t odd = (uint64_t)stride >> k, x = odd;

    for (int i = 0; i < 5; i++)
        x *= 2 - odd * x;
    *inv = x;
    *rot = k;
}

static void
configure(struct pk_mempool *mp, const pk_mempool_options *o,
          const struct geom *g)
{
    mp->fork_epoch = pk__fork_epoch();
    mp->obj_size = o->object_size;
    mp->stride = g->stride;
    mp->slab_size = g->slab_size;
    mp->first = g->first;
    mp->nobjs = g->nobjs;
    mp->nwords = (g->nobjs + 63) / 64;
    mp->slab_mask = ~(uintptr_t)(g->slab_size - 1);
    mp->stride_shift = 0;
    if (pow2(g->stride))
        mp->stride_shift = (unsigned)__builtin_ctzll(g->stride);
    stride_inverse(g->stride, &mp->stride_inv, &mp->stride_rot);
    mp->max_slabs = g->max_slabs;
    mp->min_idle = o->min_idle;
    mp->max_bytes = o->max_bytes;
    mp->cache_cap = g->cache_cap;
    /* The batch stack (cache.c) only without a budget: a thread's hoard
     * is out of reach of a thread waiting at the budget, and could leave
     * it waiting while objects sit free. Not in debug mode either. */
    mp->xfer_cap = g->cache_cap >= 2 && !(o->flags & PK_MEMPOOL_DEBUG) &&
                           o->max_bytes == 0
                       ? g->cache_cap / 2
                       : 0;
    mp->flags = o->flags;
    mp->ctor = o->ctor;
    mp->dtor = o->dtor;
    mp->on_alloc = o->on_alloc;
    mp->on_free = o->on_free;
    mp->user = o->user;
    mp->event = o->event;
    mp->event_user = o->event_user;
    mp->debug = (o->flags & PK_MEMPOOL_DEBUG) != 0;
    mp->poison_bytes = mp->debug && !o->ctor;
    mp->plain = !(o->flags & PK_MEMPOOL_ZERO) && !o->on_alloc &&
                !o->on_free && !mp->debug;
    mp->slab_shift = (unsigned)__builtin_ctzll(g->slab_size);
    pk__lock_init(&mp->lock, PK__RANK_MEMPOOL); /* a leaf (mp_int.h) */
}

static int
start_core(struct pk_mempool *mp, const pk_mempool_options *o)
{
    pk_pool_options po;
    int idle = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : PK_NEVER;

    pk_pool_options_init(&po);
    po.create = pk__mp_slab_create;
    po.destroy = pk__mp_slab_destroy;
    po.forget_in_child = pk__mp_slab_forget;
    po.user_free = free_handle;
    po.user = mp;
    po.event = o->event;
    po.event_user = o->event_user;
    po.max_size = mp->max_slabs;
    po.min_idle = mp->min_idle;
    po.idle_timeout_ms = idle;
    /* Often enough that an empty slab goes within a quarter of the idle
     * timeout past it; between 10 ms and 1 s. */
    if (idle > 0)
        po.maintain_interval_ms = idle / 4 < 10 ? 10
                                  : idle / 4 > 1000 ? 1000 : idle / 4;
    po.flags = PK_POOL_NO_GENERATION_BUMP | PK_POOL_QUIET_CLOSE;
    if (o->flags & PK_MEMPOOL_MANUAL_MAINTENANCE)
        po.flags |= PK_POOL_MANUAL_MAINTENANCE;
    return pk_pool_create(&mp->core, &po);
}

int
pk_mempool_create(pk_mempool **out, const pk_mempool_options *o)
{
    struct pk_mempool *mp;
    struct geom g;
    int rc;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    rc = geometry(o, &g, NULL);
    if (rc)
        return rc;
    mp = pk__calloc(1, sizeof *mp);
    if (!mp)
        return PK_ENOMEM;
    configure(mp, o, &g);
    if (mp->debug)
        pk__mp_dbg_create(mp);
    mp->magic = PK__MP_MAGIC;
    rc = start_core(mp, o);
    if (rc) {
        pk__free(mp);
        return rc;
    }
    *out = mp;
    return 0;
}

static void
report_leak(struct pk_mempool *mp, uint64_t n)
{
    pk_error e;

    pk_error_set(&e, PK_ESHUTDOWN, 0, "%llu objects still out (%llu bytes) "
                 "at pk_mempool_destroy", (unsigned long long)n,
                 (unsigned long long)(n * mp->obj_size));
    if (mp->event) {
        pk_event ev = { .kind = PK_EVENT_LEASE_OUT_AT_CLOSE, .error = &e };
        mp->event(mp->event_user, &ev);
    } else {
        pk__log_failure("pk_mempool_destroy", &e);
    }
}

/* In a child after fork(): unmap what the child inherited; no hook, no
 * lock (the parent's threads are not here; destroy is exclusive). */
static void
destroy_in_child(struct pk_mempool *mp)
{
    mp->magic = 0;
    pk_pool_destroy(mp->core);          /* forgets the empty slabs */
    pk__mp_depot_forget_in_child(mp);   /* and the held ones */
    pk__mp_xfer_close(mp);              /* the batch nodes */
    if (mp->debug)
        pk__mp_dbg_free_handle(mp);
    pk__free(mp);
}

void
pk_mempool_destroy(pk_mempool *mp)
{
    uint64_t cached, out;

    if (!mp || mp->magic != PK__MP_MAGIC)
        return;
    if (pk__mp_forked(mp)) {
        destroy_in_child(mp);
        return;
    }
    cached = pk__mp_cache_detach_all(mp);
    cached += pk__mp_xfer_close(mp); /* objects in batches are free */
    if (mp->debug)
        pk__mp_dbg_leaks(mp); /* by site, before the slabs go */
    out = pk__mp_depot_close(mp);
    if (out > cached)
        report_leak(mp, out - cached);
    mp->magic = 0;
    pk_pool_destroy(mp->core); /* unmaps the empty slabs, frees mp */
}

/* ---- alloc and free ------------------------------------------------------- */

static int
check(const struct pk_mempool *mp)
{
    if (!mp || mp->magic != PK__MP_MAGIC)
        return PK_EINVAL;
    return pk__mp_forked(mp) ? PK_EFORKED : 0;
}

int
pk_mempool_alloc_at(pk_mempool *mp, void **out, int timeout_ms,
                    const char *file, int line)
{
    int rc;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER)
        return PK_EINVAL;
    rc = check(mp);
    if (rc)
        return rc;
    rc = pk__mp_cache_alloc(mp, out, timeout_ms);
    if (rc) {
        *out = NULL;
        return rc;
    }
    if (mp->debug)
        pk__mp_dbg_alloc(mp, *out, file, line);
    if (mp->flags & PK_MEMPOOL_ZERO)
        memset(*out, 0, mp->obj_size);
    if (mp->on_alloc)
        mp->on_alloc(mp->user, *out);
    return 0;
}

int
(pk_mempool_alloc)(pk_mempool *mp, void **out, int timeout_ms)
{
    return pk_mempool_alloc_at(mp, out, timeout_ms, NULL, 0);
}

/* Debug mode: the registry says whether obj may be freed before
 * anything of its slab is read (debug.c); it is poisoned after on_free
 * has seen it. */
static int
free_debug(struct pk_mempool *mp, void *obj)
{
    int rc = pk__mp_dbg_free_check(mp, obj);

    if (rc)
        return rc;
    if (mp->on_free)
        mp->on_free(mp->user, obj);
    pk__mp_dbg_poison(mp, obj);
    pk__mp_cache_free(mp, obj);
    return 0;
}

int
(pk_mempool_free)(pk_mempool *mp, void *obj)
{
    if (!mp || !obj || mp->magic != PK__MP_MAGIC)
        return PK_EINVAL;
    if (mp->debug && !pk__mp_forked(mp))
        return free_debug(mp, obj);
    if (pk__mp_index(mp, obj) == (size_t)-1)
        return PK_EINVAL;
    if (pk__mp_forked(mp))
        return 0; /* an inherited object: forgotten */
    if (mp->on_free)
        mp->on_free(mp->user, obj);
    pk__mp_cache_free(mp, obj);
    return 0;
}

/* ---- trim, maintain, stats ---------------------------------------------- */

int
pk_mempool_trim(pk_mempool *mp)
{
    int rc = check(mp);

    if (rc)
        return rc;
    pk__mp_cache_flush_mine(mp);
    pk__mp_depot_trim(mp);
    atomic_store_explicit(&mp->resident_after_trim,
                          pk__mp_slab_resident(mp), memory_order_relaxed);
    return 0;
}

int
pk_mempool_maintain(pk_mempool *mp)
{
    int rc = check(mp);

    if (rc)
        return rc;
    rc = pk_pool_maintain(mp->core);
    return rc == PK_ESHUTDOWN ? 0 : rc;
}

int
pk_mempool_stats_get(pk_mempool *mp, pk_mempool_stats *o)
{
    int rc;

    if (!o)
        return PK_EINVAL;
    rc = check(mp);
    if (rc)
        return rc;
    memset(o, 0, sizeof *o);
    pk__mp_cache_counts(mp, &o->allocated, &o->freed);
    if (o->freed > o->allocated) /* a snapshot of moving counts */
        o->freed = o->allocated;
    o->live = o->allocated > o->freed ? o->allocated - o->freed : 0;
    pk__mp_depot_stats(mp, o);
    o->slabs_mapped = atomic_load_explicit(&mp->slabs_mapped,
                                           memory_order_relaxed);
    o->bytes_resident_trim = atomic_load_explicit(&mp->resident_after_trim,
                                                  memory_order_relaxed);
    o->slabs_unmapped = atomic_load_explicit(&mp->slabs_unmapped,
                                             memory_order_relaxed);
    o->object_size = mp->obj_size;
    o->stride = mp->stride;
    o->slab_size = mp->slab_size;
    o->objects_per_slab = mp->nobjs;
    o->max_bytes = mp->max_bytes;
    o->cache_size = mp->cache_cap;
    return 0;
}
