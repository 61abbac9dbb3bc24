/* lib/slab.c - the slab arena (slab.h).
 *
 * A region is REGION_SIZE bytes aligned to its size, so a slab finds its
 * region by masking its address. The region's first slab holds its
 * header; the others are handed out, first from the region's list of
 * slabs given back (a slab's first word links it), then by carving the
 * ones never used. Regions with a slab to give are on one list: a fresh
 * region goes to its head, one that was full and gets a slab back to its
 * tail, and slabs are taken from the head, so the regions filled first
 * stay full and the emptier ones drain. An empty region is unmapped,
 * unless fewer than KEEP_EMPTY are: a pool that makes and frees a burst
 * again and again would otherwise map and zero it each time. */
#define _GNU_SOURCE /* MADV_HUGEPAGE, MAP_ANONYMOUS */
#include "slab.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#include "alloc.h"
#include "dlist.h"
#include "sync.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_ASAN 1
#endif
#endif
#ifdef SLAB_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define REGION_SIZE ((size_t)2 << 20)
#define REGION_SLABS ((unsigned)(REGION_SIZE / PK__SLAB_SIZE))
/* Below this many spare slabs an idle thread maps the next region, once
 * the process uses more than one region: a program that makes a few
 * futures should not pay for two. */
#define LOW_WATER REGION_SLABS
#define PAGE 4096u
/* Empty regions kept mapped. Two, not one: with the slabs in use at a
 * region's edge, a get that empties the kept region's spare asks for a
 * new one and the put that follows empties a region again; keeping one
 * unmapped and mapped a region on every such pair. */
#define KEEP_EMPTY 2u
_Static_assert((PK__SLAB_SIZE & (PK__SLAB_SIZE - 1)) == 0, "power of two");

struct region {
    struct pk__dnode link;      /* on `avail`, while `listed` */
    void *given_back;           /* slabs given back, linked by first word */
    unsigned carved;            /* slabs carved so far, the header's too */
    unsigned used;              /* slabs handed out and not given back */
    bool listed;
};
_Static_assert(sizeof(struct region) <= PK__SLAB_SIZE, "header fits");

/* The arena: process-wide, under `lock` (slab.h says why). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pk__dlist avail;
static unsigned empty_regions; /* listed with used == 0 */
static unsigned regions;       /* mapped */
static size_t spare;           /* slabs the listed regions can give */
static long live;
/* Set when `spare` ran low: pk__slab_prefault maps the next region. */
static atomic_bool want_region;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A fork while another thread holds the lock would leave the child's
 * copy locked for ever; holding it across fork() keeps the lists whole. */
static void atfork_prepare(void) { pk__mutex_lock(&lock); }
static void atfork_release(void) { pk__mutex_unlock(&lock); }

static void
atfork_register(void)
{
    /* On failure (ENOMEM) a fork in the middle of a get or put may leave
     * the child's arena locked; nothing else is at stake. */
    (void)pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

static inline struct region *
region_of(void *slab)
{
    return (struct region *)((uintptr_t)slab & ~(uintptr_t)(REGION_SIZE - 1));
}

static void
link_at(struct region *r, bool head)
{
    r->listed = true;
    if (head)
        pk__dlist_push_head(&avail, &r->link);
    else
        pk__dlist_push_tail(&avail, &r->link);
}

static void
unlink_region(struct region *r)
{
    r->listed = false;
    pk__dlist_remove(&avail, &r->link);
}

/* A new region, header written, not listed; NULL if mmap fails. Mapped at
 * twice the size and trimmed, for the alignment. `huge` asks for huge
 * pages: not for a process's first region, whose few slabs in use should
 * cost a few small pages, not 2 MiB. With `fault`, every page is touched
 * now rather than by the thread that carves it. */
static struct region *
region_map(bool huge, bool fault)
{
    char *raw = mmap(NULL, 2 * REGION_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *base;
    size_t head;
    struct region *r;

    if (raw == MAP_FAILED)
        return NULL;
    base = (char *)(((uintptr_t)raw + REGION_SIZE - 1) &
                    ~(uintptr_t)(REGION_SIZE - 1));
    head = (size_t)(base - raw);
    if (head)
        munmap(raw, head);
    munmap(base + REGION_SIZE, REGION_SIZE - head);
#ifdef MADV_HUGEPAGE
    /* Advice only: without transparent huge pages it is small pages. */
    if (huge)
        (void)madvise(base, REGION_SIZE, MADV_HUGEPAGE);
#else
    (void)huge;
#endif
    if (fault)
        for (size_t off = 0; off < REGION_SIZE; off += PAGE)
            ((volatile char *)base)[off] = 0;
    r = (struct region *)base;
    r->link.prev = r->link.next = NULL;
    r->given_back = NULL;
    r->carved = 1;
    r->used = 0;
    r->listed = false;
    POISON(base + PK__SLAB_SIZE, REGION_SIZE - PK__SLAB_SIZE);
    return r;
}

/* Takes a slab from r, the head of `avail`. Under lock. */
static void *
take_from(struct region *r)
{
    void *s = r->given_back;

    if (s) {
        UNPOISON(s, PK__SLAB_SIZE);
        r->given_back = *(void **)s;
    } else {
        s = (char *)r + (size_t)r->carved++ * PK__SLAB_SIZE;
        UNPOISON(s, PK__SLAB_SIZE);
    }
    if (r->used++ == 0)
        empty_regions--;
    if (--spare < LOW_WATER && regions > 1 && empty_regions == 0 &&
        !atomic_load_explicit(&want_region, memory_order_relaxed))
        atomic_store_explicit(&want_region, true, memory_order_relaxed);
    if (!r->given_back && r->carved == REGION_SLABS)
        unlink_region(r);
    live++;
    return s;
}

void *
pk__slab_get(void)
{
    struct region *fresh = NULL;
    bool huge;
    void *s;

    pthread_once(&atfork_once, atfork_register);
#ifdef PK_TESTING
    if (pk__alloc_inject())
        return NULL;
    pk__alloc_track(1);
#endif
    for (;;) {
        pk__mutex_lock(&lock);
        if (fresh) {
            /* Mapped while unlocked: another thread may have listed a
             * region meanwhile too; both serve. */
            link_at(fresh, true);
            regions++;
            empty_regions++;
            spare += REGION_SLABS - 1;
        }
        if (avail.head) {
            s = take_from(PK__CONTAINER(avail.head, struct region, link));
            pk__mutex_unlock(&lock);
            return s;
        }
        huge = regions > 0;
        pk__mutex_unlock(&lock);
        /* No mmap under the lock: other threads' puts go on meanwhile. */
        fresh = region_map(huge, false);
        if (!fresh) {
#ifdef PK_TESTING
            pk__alloc_track(-1);
#endif
            return NULL;
        }
    }
}

void
pk__slab_put(void *slab)
{
    struct region *r, *drop = NULL;

    if (!slab)
        return;
#ifdef PK_TESTING
    pk__alloc_track(-1);
#endif
    r = region_of(slab);
    pk__mutex_lock(&lock);
    *(void **)slab = r->given_back;
    r->given_back = slab;
    POISON(slab, PK__SLAB_SIZE);
    if (!r->listed)
        link_at(r, false);
    live--;
    spare++;
    if (--r->used == 0) {
        if (empty_regions >= KEEP_EMPTY) {
            unlink_region(r);
            regions--;
            spare -= REGION_SLABS - 1;
            drop = r;
        } else {
            empty_regions++;
        }
    }
    pk__mutex_unlock(&lock);
    if (drop) {
        UNPOISON(drop, REGION_SIZE);
        munmap(drop, REGION_SIZE);
    }
}

void
pk__slab_prefault(void)
{
    struct region *r;

    if (!atomic_load_explicit(&want_region, memory_order_relaxed) ||
        !atomic_exchange_explicit(&want_region, false, memory_order_relaxed))
        return;
    r = region_map(true, true);
    if (!r)
        return; /* the carving thread maps one itself */
    pk__mutex_lock(&lock);
    link_at(r, false);
    regions++;
    empty_regions++;
    spare += REGION_SLABS - 1;
    pk__mutex_unlock(&lock);
}

long
pk__slab_live(void)
{
    long n;

    pk__mutex_lock(&lock);
    n = live;
    pk__mutex_unlock(&lock);
    return n;
}
