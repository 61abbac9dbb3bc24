/* pools/memory/debug.c - the debug mode (PK_MEMPOOL_DEBUG): the registry
 * of the pool's slabs, each object's state and allocation site,
 * poisoning, and the reports.
 *
 * The invariant that makes every bad free found and none harmful: a free
 * touches nothing of a slab before the registry says the slab is this
 * pool's and mapped. The registry is a hash set of the slabs mapped (made
 * by the core's create hook, not yet unmade by its destroy hook), keyed
 * by the slab's address, under mp->lock; the destroy hook takes the slab
 * out under the lock before it unmaps, so a free that found the slab
 * under the lock reads a mapped slab and a live descriptor. A pointer
 * whose slab is not there is foreign (malloc's, another pool's, a slab
 * unmapped since); one that is there but not at an object's start points
 * into the header or into an object; an object whose state is not
 * ALLOCATED is freed twice. Each is reported (the event hook, or a stderr
 * line) and free returns PK_EINVAL, changing nothing.
 *
 * Object states (one byte each, in the slab's descriptor, relaxed
 * atomics): FRESH (never handed out), ALLOCATED, FREED. Free flips
 * ALLOCATED to FREED under the lock; alloc sets ALLOCATED without it (the
 * object is the thread's: it came out of its cache), with the site. A
 * freed object is filled with PK_MEMPOOL_POISON (unless the pool has a
 * ctor: a constructed object's bytes are its state), poisoned for
 * AddressSanitizer and handed to Valgrind as freed; alloc undoes that and
 * reports a poison byte that changed (written after free). The objects
 * keep going through the per-thread caches, so alloc takes no lock and
 * free one. */
#include <stdio.h>
#include <string.h>

#include "mp_int.h"

#if defined(__SANITIZE_ADDRESS__)
#define MP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MP_ASAN 1
#endif
#endif
#ifdef MP_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define MP_VALGRIND 1
#endif
#endif
#ifndef MP_VALGRIND
#define VALGRIND_CREATE_MEMPOOL(pool, rz, zeroed) ((void)0)
#define VALGRIND_DESTROY_MEMPOOL(pool) ((void)0)
#define VALGRIND_MEMPOOL_ALLOC(pool, p, n) ((void)0)
#define VALGRIND_MEMPOOL_FREE(pool, p) ((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)0)
#endif

enum { FRESH = 0, ALLOCATED = 1, FREED = 2 };

/* ---- the registry (under mp->lock) -------------------------------------- */

static size_t
home(const struct pk_mempool *mp, uintptr_t base, size_t cap)
{
    uint64_t h = (uint64_t)(base >> mp->slab_shift) * 0x9e3779b97f4a7c15ull;

    return (size_t)(h >> 32) & (cap - 1);
}

static struct mp_slab *
reg_find_locked(const struct pk_mempool *mp, uintptr_t base)
{
    size_t cap = mp->reg_cap;

    if (!cap)
        return NULL;
    for (size_t i = home(mp, base, cap);; i = (i + 1) & (cap - 1)) {
        struct mp_slab *s = mp->reg[i];
        if (!s || (uintptr_t)s->base == base)
            return s;
    }
}

static void
reg_put(struct mp_slab **t, size_t cap, const struct pk_mempool *mp,
        struct mp_slab *s)
{
    size_t i = home(mp, (uintptr_t)s->base, cap);

    while (t[i])
        i = (i + 1) & (cap - 1);
    t[i] = s;
}

/* Doubles the table (at least 16 slots). The old one goes at once: its
 * readers hold the lock too. */
static int
reg_grow_locked(struct pk_mempool *mp)
{
    size_t cap = mp->reg_cap ? mp->reg_cap * 2 : 16;
    struct mp_slab **t = pk__calloc(cap, sizeof *t);

    if (!t)
        return PK_ENOMEM;
    for (size_t i = 0; i < mp->reg_cap; i++)
        if (mp->reg[i])
            reg_put(t, cap, mp, mp->reg[i]);
    pk__free(mp->reg);
    mp->reg = t;
    mp->reg_cap = cap;
    return 0;
}

/* Linear probing's deletion: the entries after the hole that may not
 * stay behind it move into it (no tombstones). */
static void
reg_del_locked(struct pk_mempool *mp, struct mp_slab *s)
{
    size_t cap = mp->reg_cap, mask = cap - 1, i, j;

    for (i = home(mp, (uintptr_t)s->base, cap); mp->reg[i] != s;
         i = (i + 1) & mask)
        ;
    mp->reg[i] = NULL;
    mp->reg_n--;
    for (j = (i + 1) & mask; mp->reg[j]; j = (j + 1) & mask) {
        size_t k = home(mp, (uintptr_t)mp->reg[j]->base, cap);
        /* The entry at j stays if its home is cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        mp->reg[i] = mp->reg[j];
        mp->reg[j] = NULL;
        i = j;
    }
}

/* ---- slabs ---------------------------------------------------------------- */

int
pk__mp_dbg_slab_made(struct pk_mempool *mp, struct mp_slab *s)
{
    int rc = 0;

    s->dbg = pk__calloc(mp->nobjs, sizeof s->dbg[0]);
    if (!s->dbg)
        return PK_ENOMEM;
    pk__lock_acquire(&mp->lock);
    if ((mp->reg_n + 1) * 2 > mp->reg_cap)
        rc = reg_grow_locked(mp);
    if (rc == 0) {
        reg_put(mp->reg, mp->reg_cap, mp, s);
        mp->reg_n++;
    }
    pk__lock_release(&mp->lock);
    if (rc) {
        pk__free(s->dbg);
        s->dbg = NULL;
    }
    return rc;
}

void
pk__mp_dbg_slab_unmade(struct pk_mempool *mp, struct mp_slab *s)
{
    pk__lock_acquire(&mp->lock);
    reg_del_locked(mp, s);
    pk__lock_release(&mp->lock);
    /* Nobody finds it now: the dtor may read the objects, and the
     * mapping may go, with no poison left behind. */
    ASAN_UNPOISON_MEMORY_REGION(s->base, mp->slab_size);
    pk__free(s->dbg);
    s->dbg = NULL;
}

void
pk__mp_dbg_slab_forget(struct pk_mempool *mp, struct mp_slab *s)
{
    (void)mp;
    (void)s;
    ASAN_UNPOISON_MEMORY_REGION(s->base, mp->slab_size);
}

/* ---- reports -------------------------------------------------------------- */

/* Tells the event hook, or writes the stderr line. No lock held. */
static void
report(struct pk_mempool *mp, pk_event_kind kind, void *obj,
       const char *file, int line, const pk_error *e, const char *what)
{
    if (mp->event) {
        pk_event ev = { .kind = kind, .resource = obj, .file = file,
                        .line = line, .error = e };
        mp->event(mp->event_user, &ev);
    } else {
        pk__log_failure(what, e);
    }
}

static const char *
site_file(const char *file)
{
    return file ? file : "?";
}

/* ---- free ------------------------------------------------------------------- */

enum verdict { OK, FOREIGN, HEADER, INSIDE, TWICE, NEVER };

struct finding {
    enum verdict v;
    size_t index, into;
    const char *file;
    int line;
};

/* Looks obj up and, if it is an allocated object of a slab of mp, marks
 * it FREED. Under the lock. */
static void
judge_locked(struct pk_mempool *mp, void *obj, struct finding *f)
{
    uintptr_t base = (uintptr_t)obj & mp->slab_mask;
    struct mp_slab *s = reg_find_locked(mp, base);
    size_t off = (size_t)((uintptr_t)obj - base);
    unsigned char st;

    uint64_t q;

    if (!s) {
        f->v = FOREIGN;
        return;
    }
    /* An object's start in one multiply, as the inline free does
     * (mempool.c: stride_inverse); the division only for the others. */
    q = (uint64_t)(off - mp->first) * mp->stride_inv;
    q = (q >> mp->stride_rot) | (q << ((64 - mp->stride_rot) & 63));
    if (q < mp->nobjs) {
        f->index = (size_t)q;
        f->into = 0;
    } else if (off < mp->first ||
               (off - mp->first) / mp->stride >= mp->nobjs) {
        f->v = HEADER; /* or past the last object */
        return;
    } else {
        f->index = (off - mp->first) / mp->stride;
        f->into = (off - mp->first) % mp->stride;
    }
    f->file = __atomic_load_n(&s->dbg[f->index].file, __ATOMIC_RELAXED);
    f->line = __atomic_load_n(&s->dbg[f->index].line, __ATOMIC_RELAXED);
    if (f->into) {
        f->v = INSIDE;
        return;
    }
    st = __atomic_load_n(&s->dbg[f->index].state, __ATOMIC_RELAXED);
    if (st != ALLOCATED) {
        f->v = st == FREED ? TWICE : NEVER;
        return;
    }
    __atomic_store_n(&s->dbg[f->index].state, FREED, __ATOMIC_RELAXED);
    f->v = OK;
}

int
pk__mp_dbg_free_check(struct pk_mempool *mp, void *obj)
{
    struct finding f = { .v = OK };
    pk_error e;

    pk__lock_acquire(&mp->lock);
    judge_locked(mp, obj, &f);
    if (f.v == TWICE)
        mp->double_frees++;
    else if (f.v != OK)
        mp->bad_frees++;
    pk__lock_release(&mp->lock);
    switch (f.v) {
    case OK:
        return 0;
    case FOREIGN:
        pk_error_set(&e, PK_EINVAL, 0, "%p is in no slab of this pool "
                     "(from malloc, another pool, or a slab unmapped "
                     "since); not freed", obj);
        break;
    case HEADER:
        pk_error_set(&e, PK_EINVAL, 0, "%p is in a slab of this pool but "
                     "at no object (the slab's header or tail); not "
                     "freed", obj);
        break;
    case INSIDE:
        pk_error_set(&e, PK_EINVAL, 0, "%p is %zu bytes into object %zu "
                     "of its slab (allocated at %s:%d), not at its start; "
                     "not freed", obj, f.into, f.index, site_file(f.file),
                     f.line);
        break;
    case TWICE:
        pk_error_set(&e, PK_EINVAL, 0, "double free of %p (allocated at "
                     "%s:%d, already freed); not freed again", obj,
                     site_file(f.file), f.line);
        break;
    case NEVER:
        pk_error_set(&e, PK_EINVAL, 0, "%p is an object of this pool that "
                     "was never allocated; not freed", obj);
        break;
    }
    report(mp, PK_EVENT_MISUSE, obj, f.file, f.line, &e,
           "pk_mempool_free (debug mode)");
    return PK_EINVAL;
}

void
pk__mp_dbg_poison(struct pk_mempool *mp, void *obj)
{
    if (mp->poison_bytes)
        memset(obj, PK_MEMPOOL_POISON, mp->obj_size);
    ASAN_POISON_MEMORY_REGION(obj, mp->obj_size);
    VALGRIND_MEMPOOL_FREE(mp, obj);
}

/* ---- alloc ------------------------------------------------------------------ */

/* The first byte of obj that is not the poison, or obj_size. */
static size_t
poison_broken(const struct pk_mempool *mp, const unsigned char *obj)
{
    /* memcmp against a block of poison: its loads are as wide as the
     * memset that wrote the poison at the free (8-byte loads from a
     * wider store stall their forwarding: the check cost twice as much). */
    static const unsigned char block[256] = {
#define P8 PK_MEMPOOL_POISON, PK_MEMPOOL_POISON, PK_MEMPOOL_POISON, \
           PK_MEMPOOL_POISON, PK_MEMPOOL_POISON, PK_MEMPOOL_POISON, \
           PK_MEMPOOL_POISON, PK_MEMPOOL_POISON
#define P64 P8, P8, P8, P8, P8, P8, P8, P8
        P64, P64, P64, P64
#undef P64
#undef P8
    };

    for (size_t i = 0; i < mp->obj_size; i += sizeof block) {
        size_t n = mp->obj_size - i < sizeof block ? mp->obj_size - i
                                                  : sizeof block;
        if (memcmp(obj + i, block, n) == 0)
            continue;
        for (size_t k = i; k < i + n; k++)
            if (obj[k] != PK_MEMPOOL_POISON)
                return k;
    }
    return mp->obj_size;
}

void
pk__mp_dbg_alloc(struct pk_mempool *mp, void *obj, const char *file,
                 int line)
{
    struct mp_slab *s = pk__mp_head_of(mp, obj)->slab;
    size_t i = pk__mp_index(mp, obj), bad;
    struct mp_obj_dbg *d = &s->dbg[i];
    unsigned char st = __atomic_load_n(&d->state, __ATOMIC_RELAXED);
    const char *was_file = __atomic_load_n(&d->file, __ATOMIC_RELAXED);
    int was_line = __atomic_load_n(&d->line, __ATOMIC_RELAXED);
    pk_error e;

    ASAN_UNPOISON_MEMORY_REGION(obj, mp->obj_size);
    VALGRIND_MEMPOOL_ALLOC(mp, obj, mp->obj_size);
    /* Its bytes are what they were: the poison, or a constructed state. */
    VALGRIND_MAKE_MEM_DEFINED(obj, mp->obj_size);
    __atomic_store_n(&d->file, file, __ATOMIC_RELAXED);
    __atomic_store_n(&d->line, line, __ATOMIC_RELAXED);
    __atomic_store_n(&d->state, ALLOCATED, __ATOMIC_RELAXED);
    if (st != FREED || !mp->poison_bytes)
        return;
    bad = poison_broken(mp, obj);
    if (bad == mp->obj_size)
        return;
    pk_error_set(&e, PK_ECHECK, 0, "object %p was written after it was "
                 "freed: byte %zu is 0x%02x, not the poison 0x%02x (it was "
                 "allocated at %s:%d before)", obj, bad,
                 ((unsigned char *)obj)[bad], PK_MEMPOOL_POISON,
                 site_file(was_file), was_line);
    report(mp, PK_EVENT_MISUSE, obj, was_file, was_line, &e,
           "pk_mempool_alloc (debug mode)");
}

/* ---- the pool --------------------------------------------------------------- */

void
pk__mp_dbg_create(struct pk_mempool *mp)
{
    VALGRIND_CREATE_MEMPOOL(mp, 0, 0);
}

void
pk__mp_dbg_free_handle(struct pk_mempool *mp)
{
    VALGRIND_DESTROY_MEMPOOL(mp);
    pk__free(mp->reg);
    mp->reg = NULL;
}

/* ---- leaks at destroy ------------------------------------------------------- */

#define SITES_MAX 64

struct site {
    const char *file;
    int line;
    uint64_t n;
};

static void
count_site(struct site *sites, size_t *nsites, uint64_t *other,
           const char *file, int line)
{
    for (size_t k = 0; k < *nsites; k++) {
        if (sites[k].line == line &&
            (sites[k].file == file ||
             (sites[k].file && file && strcmp(sites[k].file, file) == 0))) {
            sites[k].n++;
            return;
        }
    }
    if (*nsites == SITES_MAX) {
        (*other)++;
        return;
    }
    sites[(*nsites)++] = (struct site){ file, line, 1 };
}

uint64_t
pk__mp_dbg_leaks(struct pk_mempool *mp)
{
    struct site sites[SITES_MAX];
    size_t nsites = 0;
    uint64_t total = 0, other = 0;
    pk_error e;

    /* destroy is exclusive and the caches are taken over: nothing
     * changes under this walk. */
    pk__lock_acquire(&mp->lock);
    for (size_t r = 0; r < mp->reg_cap; r++) {
        struct mp_slab *s = mp->reg[r];
        for (size_t i = 0; s && i < mp->nobjs; i++) {
            if (__atomic_load_n(&s->dbg[i].state, __ATOMIC_RELAXED) !=
                ALLOCATED)
                continue;
            total++;
            count_site(sites, &nsites, &other,
                       __atomic_load_n(&s->dbg[i].file, __ATOMIC_RELAXED),
                       __atomic_load_n(&s->dbg[i].line, __ATOMIC_RELAXED));
        }
    }
    pk__lock_release(&mp->lock);
    for (size_t k = 0; k < nsites; k++) {
        pk_error_set(&e, PK_ESHUTDOWN, 0, "%llu of %llu objects still out "
                     "at pk_mempool_destroy were allocated at %s:%d",
                     (unsigned long long)sites[k].n,
                     (unsigned long long)total, site_file(sites[k].file),
                     sites[k].line);
        report(mp, PK_EVENT_LEASE_OUT_AT_CLOSE, NULL, sites[k].file,
               sites[k].line, &e, "pk_mempool_destroy (debug mode)");
    }
    if (other) {
        pk_error_set(&e, PK_ESHUTDOWN, 0, "%llu more objects still out at "
                     "pk_mempool_destroy, from other sites",
                     (unsigned long long)other);
        report(mp, PK_EVENT_LEASE_OUT_AT_CLOSE, NULL, NULL, 0, &e,
               "pk_mempool_destroy (debug mode)");
    }
    return total;
}
