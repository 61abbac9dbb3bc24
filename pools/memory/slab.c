/* pools/memory/slab.c - one slab: a mapping of slab_size bytes aligned to
 * its size, holding nobjs objects of stride bytes from offset `first`,
 * and a descriptor beside it with a bitmap of the objects that are back
 * in the slab.
 *
 * The mapping starts with a small header (struct mp_slab_head) so that a
 * freed pointer finds its slab by rounding down; everything else the pool
 * knows about a slab is in the descriptor, so a free object is never
 * written to and a constructed one stays constructed. A slab is made and
 * unmade by the core, through the three hooks here: create maps and runs
 * ctor on every object, destroy runs dtor on every object and unmaps,
 * forget (a child after fork) only unmaps. Take and put work on the
 * bitmap under the pool's lock (depot.c calls them). In debug mode a slab
 * is in debug.c's registry from just after its mapping to just before its
 * unmapping. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mp_int.h"

/* A mapping of size bytes aligned to size (a power of two): map twice as
 * much and unmap what lies outside the aligned part. NULL with errno. */
static char *
map_aligned(size_t size)
{
    char *p = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uintptr_t a;
    size_t head;

    if (p == MAP_FAILED)
        return NULL;
    a = ((uintptr_t)p + size - 1) & ~(uintptr_t)(size - 1);
    head = (size_t)(a - (uintptr_t)p);
    if (head)
        munmap(p, head);
    if (size - head)
        munmap((char *)a + size, size - head);
    return (char *)a;
}

static void *
object(const struct pk_mempool *mp, const struct mp_slab *s, size_t i)
{
    return s->base + mp->first + i * mp->stride;
}

/* Touches every page, so no object faults on first use. */
static void
prefault(char *base, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    for (size_t off = 0; off < size; off += page)
        ((volatile char *)base)[off] = 0;
}

/* Runs ctor on every object; on a failure, dtor on those before it.
 * Returns 0 or the failure, in err. */
static int
construct(struct pk_mempool *mp, struct mp_slab *s, pk_error *err)
{
    for (size_t i = 0; i < mp->nobjs; i++) {
        int rc = mp->ctor(mp->user, object(mp, s, i));
        if (rc == 0)
            continue;
        if (mp->dtor)
            while (i-- > 0)
                mp->dtor(mp->user, object(mp, s, i));
        return pk_error_set(err, rc > 0 ? PK_ECREATE : rc, rc > 0 ? rc : 0,
                            "pk_mempool: the ctor failed (%d) on object "
                            "%zu of a new slab", rc, i);
    }
    return 0;
}

int
pk__mp_slab_create(void *user, void **res, pk_error *err)
{
    struct pk_mempool *mp = user;
    struct mp_slab_head *h;
    struct mp_slab *s;
    int rc;

    s = pk__calloc(1, sizeof *s + mp->nwords * sizeof s->bits[0]);
    if (!s)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_mempool: no memory "
                            "for a slab's descriptor");
    s->base = map_aligned(mp->slab_size);
    if (!s->base) {
        int e = errno;
        pk__free(s);
        return pk_error_set(err, PK_ENOMEM, e, "pk_mempool: mmap of a "
                            "%zu-byte slab failed (errno %d)", mp->slab_size,
                            e);
    }
    h = (struct mp_slab_head *)s->base;
    h->tag.key = pk__mp_key(mp);
    h->tag.pool = mp;
    h->slab = s;
    s->mp = mp;
    if (mp->debug && pk__mp_dbg_slab_made(mp, s) != 0) {
        munmap(s->base, mp->slab_size);
        pk__free(s);
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_mempool: no memory "
                            "for a slab's debug records");
    }
    if (mp->flags & PK_MEMPOOL_PREFAULT)
        prefault(s->base, mp->slab_size);
    if (mp->ctor) {
        rc = construct(mp, s, err);
        if (rc) {
            if (mp->debug)
                pk__mp_dbg_slab_unmade(mp, s);
            munmap(s->base, mp->slab_size);
            pk__free(s);
            return rc;
        }
    }
    s->nwords = mp->nwords;
    for (size_t i = 0; i < mp->nobjs; i++)
        s->bits[i / 64] |= (uint64_t)1 << (i % 64);
    s->nfree = mp->nobjs;
    pk__lock_acquire(&mp->lock);
    s->aprev = NULL;
    s->anext = mp->all;
    if (mp->all)
        mp->all->aprev = s;
    mp->all = s;
    pk__lock_release(&mp->lock);
    atomic_fetch_add_explicit(&mp->slabs_mapped, 1, memory_order_relaxed);
    *res = s;
    return 0;
}

void
pk__mp_slab_destroy(void *user, void *res)
{
    struct pk_mempool *mp = user;
    struct mp_slab *s = res;

    if (mp->debug)
        pk__mp_dbg_slab_unmade(mp, s); /* first: no free finds it now */
    pk__lock_acquire(&mp->lock);
    if (s->aprev)
        s->aprev->anext = s->anext;
    else
        mp->all = s->anext;
    if (s->anext)
        s->anext->aprev = s->aprev;
    pk__lock_release(&mp->lock);
    if (mp->dtor)
        for (size_t i = 0; i < mp->nobjs; i++)
            mp->dtor(mp->user, object(mp, s, i));
    munmap(s->base, mp->slab_size);
    pk__free(s);
    atomic_fetch_add_explicit(&mp->slabs_unmapped, 1, memory_order_relaxed);
}

void
pk__mp_slab_forget(void *user, void *res)
{
    struct pk_mempool *mp = user;
    struct mp_slab *s = res;

    /* munmap only: async-signal-safe. The descriptor stays (the child's
     * copy of the parent's heap), and so does the registry (debug mode:
     * the child never takes the lock). */
    if (mp->debug)
        pk__mp_dbg_slab_forget(mp, s);
    munmap(s->base, mp->slab_size);
}

/* The bases of the slabs mapped now (pk__alloc'd, *n of them), taken
 * under the lock; NULL without memory. */
static char **
slab_bases(struct pk_mempool *mp, size_t *n)
{
    size_t cap = 0, k = 0;
    char **bases;

    pk__lock_acquire(&mp->lock);
    for (struct mp_slab *s = mp->all; s; s = s->anext)
        cap++;
    pk__lock_release(&mp->lock);
    bases = pk__alloc((cap + 16) * sizeof *bases); /* room for a few more */
    if (!bases)
        return NULL;
    pk__lock_acquire(&mp->lock);
    for (struct mp_slab *s = mp->all; s && k < cap + 16; s = s->anext)
        bases[k++] = s->base;
    pk__lock_release(&mp->lock);
    *n = k;
    return bases;
}

uint64_t
pk__mp_slab_resident(struct pk_mempool *mp)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), pages, n = 0, k;
    unsigned char *vec;
    char **bases;

    pages = mp->slab_size / page;
    vec = pk__alloc(pages);
    bases = vec ? slab_bases(mp, &k) : NULL;
    /* The syscalls without the lock (allocs would wait on it): a slab
     * unmapped meanwhile is ENOMEM to mincore, and counts nothing. */
    for (size_t s = 0; bases && s < k; s++) {
        if (mincore(bases[s], mp->slab_size, vec) != 0)
            continue;
        for (size_t i = 0; i < pages; i++)
            n += vec[i] & 1;
    }
    pk__free(bases);
    pk__free(vec);
    return (uint64_t)n * page;
}

size_t
pk__mp_slab_take(struct mp_slab *s, void **out, size_t want)
{
    const size_t stride = s->mp->stride;
    char *const start = s->base + s->mp->first;
    size_t k = 0, w = s->hint;

    /* Lowest address last: a cache pops from the end, so the objects go
     * out in address order, which the hardware prefetcher follows (a
     * batch handed out downwards cost half as much again). */
    if (want > s->nfree)
        want = s->nfree;
    out += want;
    while (w < s->nwords && k < want) {
        uint64_t bits = s->bits[w];
        char *word = start + w * 64 * stride;

        while (bits && k < want) {
            *--out = word + (size_t)__builtin_ctzll(bits) * stride;
            bits &= bits - 1;
            k++;
        }
        s->bits[w] = bits;
        if (bits)
            break; /* want reached: this word still has some */
        w++;
    }
    s->hint = w;
    s->nfree -= k;
    return k;
}

size_t
pk__mp_slab_put_word(struct mp_slab *s, size_t w, uint64_t mask,
                     size_t count)
{
    uint64_t dup = s->bits[w] & mask;
    size_t ndup = dup ? (size_t)__builtin_popcountll(dup) : 0;

    s->bits[w] |= mask;
    s->nfree += count - ndup;
    if (count > ndup && w < s->hint)
        s->hint = w;
    return ndup;
}
