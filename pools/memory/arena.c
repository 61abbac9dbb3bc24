/* pools/memory/arena.c - pk_arena: bump allocation from blocks, freed all
 * at once.
 *
 * An arena is a list of blocks (pk__alloc), the first one made at create
 * and kept across resets. Allocation bumps `ptr` towards `end` in the
 * current block; when it does not fit, a new block of block_size becomes
 * current, or, for an allocation larger than a block's room, a block of
 * its own is linked behind the current one (so the current block keeps
 * its room). Cleanups are records allocated in the arena itself, a
 * stack; children are a list of arenas with their own memory. One owner
 * thread at a time, no lock (mempool.h). Independent of the object pool:
 * this file calls nothing of the folder.
 *
 * The bump itself is also inline in mempool.h (pk_arena_alloc_fast): the
 * struct pk_arena_bump at the start of the arena is ABI, and the function
 * here is what the inline path calls when the allocation does not fit
 * the current block (a new block, a large one) or its arguments are
 * wrong. */
#include <stdint.h>
#include <string.h>

#include <poolkit/mempool.h>

#include "executor_int.h" /* the allocation seam (lib/kit/alloc.h) */

#define ARENA_DEFAULT_BLOCK ((size_t)64 << 10)
#define ALIGN_MAX 4096

struct block {
    struct block *next;
    size_t size;            /* bytes of this block, header included */
    int large;              /* made for one allocation */
};

struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *arg;
};

struct pk_arena {
    /* First: the inline bump path's view (mempool.h, ABI): the room left
     * in the current block (ptr, a multiple of 16, and end),
     * PK_ARENA_MAGIC while alive. */
    struct pk_arena_bump b;
    char *start;            /* the current block's room: used is
                               used_before + (b.ptr - start) */
    size_t used_before;     /* taken of earlier blocks since the reset */
    size_t block_size;
    struct block *first;    /* kept at reset */
    struct block *blocks;   /* all but the first, newest first */
    struct cleanup *cleanups;
    struct pk_arena *parent;
    struct pk_arena *children;      /* this arena's children */
    struct pk_arena *next, *prev;   /* in the parent's list */
    size_t nblocks, nlarge, nchildren, reserved;
    uint64_t resets;
};

/* A block's header, rounded up to 16 (malloc's alignment). */
#define HDR ((sizeof(struct block) + 15) & ~(size_t)15)

static char *
room_of(struct block *b)
{
    return (char *)b + HDR;
}

static struct block *
block_new(size_t size, int large)
{
    struct block *b = pk__alloc(size);

    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->large = large;
    return b;
}

/* The current block becomes b's room. */
static void
set_current(struct pk_arena *a, struct block *b, size_t size)
{
    a->start = room_of(b);
    a->b.ptr = a->start;
    a->b.end = (char *)b + size;
}

/* ---- create ------------------------------------------------------------- */

int
pk_arena_create(pk_arena **out, pk_arena *parent, size_t block_size)
{
    struct pk_arena *a;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (parent && parent->b.magic != PK_ARENA_MAGIC)
        return PK_EINVAL;
    if (block_size == 0)
        block_size = ARENA_DEFAULT_BLOCK;
    if (block_size < PK_ARENA_BLOCK_MIN || block_size > PK_ARENA_BLOCK_MAX)
        return PK_EINVAL;
    a = pk__calloc(1, sizeof *a);
    if (!a)
        return PK_ENOMEM;
    a->first = block_new(block_size, 0);
    if (!a->first) {
        pk__free(a);
        return PK_ENOMEM;
    }
    a->b.magic = PK_ARENA_MAGIC;
    a->block_size = block_size;
    set_current(a, a->first, block_size);
    a->nblocks = 1;
    a->reserved = block_size;
    a->parent = parent;
    if (parent) {
        a->next = parent->children;
        if (parent->children)
            parent->children->prev = a;
        parent->children = a;
        parent->nchildren++;
    }
    *out = a;
    return 0;
}

/* ---- alloc -------------------------------------------------------------- */

/* What an allocation of size bytes takes: a multiple of 16, so that
 * ptr stays one (size is at most PK_ARENA_BLOCK_MAX: no overflow). */
static size_t
take_of(size_t size)
{
    return (size + 15) & ~(size_t)15;
}

/* align is 16 or more. */
static void *
bump(struct pk_arena *a, size_t size, size_t align)
{
    uintptr_t p = ((uintptr_t)a->b.ptr + align - 1) &
                  ~(uintptr_t)(align - 1);
    size_t take = take_of(size);

    if (p > (uintptr_t)a->b.end || take > (uintptr_t)a->b.end - p)
        return NULL;
    a->b.ptr = (char *)p + take;
    return (void *)p;
}

/* A block of its own for an allocation larger than a block's room,
 * linked behind the current one. */
static void *
alloc_large(struct pk_arena *a, size_t size, size_t align)
{
    size_t bytes = HDR + size + align;
    struct block *b = block_new(bytes, 1);
    uintptr_t p;

    if (!b)
        return NULL;
    b->next = a->blocks;
    a->blocks = b;
    a->nblocks++;
    a->nlarge++;
    a->reserved += bytes;
    a->used_before += take_of(size);
    p = ((uintptr_t)room_of(b) + align - 1) & ~(uintptr_t)(align - 1);
    return (void *)p;
}

/* A new current block. */
static int
grow(struct pk_arena *a)
{
    struct block *b = block_new(a->block_size, 0);

    if (!b)
        return PK_ENOMEM;
    b->next = a->blocks;
    a->blocks = b;
    a->nblocks++;
    a->reserved += a->block_size;
    a->used_before += (size_t)(a->b.ptr - a->start);
    set_current(a, b, a->block_size);
    return 0;
}

int
(pk_arena_alloc)(pk_arena *a, size_t size, size_t align, void **out)
{
    size_t room;
    void *p;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (!a || a->b.magic != PK_ARENA_MAGIC)
        return PK_EINVAL;
    if ((align & (align - 1)) || align > ALIGN_MAX ||
        size > PK_ARENA_BLOCK_MAX)
        return PK_EINVAL;
    if (align < 16)
        align = 16; /* 0 too */
    if (size == 0)
        size = 1;
    p = bump(a, size, align);
    if (p) {
        *out = p;
        return 0;
    }
    room = a->block_size - HDR;
    if (take_of(size) + align > room) {
        p = alloc_large(a, size, align);
        if (!p)
            return PK_ENOMEM;
        *out = p;
        return 0;
    }
    if (grow(a) != 0)
        return PK_ENOMEM;
    *out = bump(a, size, align); /* fits: take + align <= room */
    return 0;
}

int
pk_arena_cleanup_add(pk_arena *a, void (*fn)(void *), void *arg)
{
    struct cleanup *c;
    int rc;

    if (!a || !fn || a->b.magic != PK_ARENA_MAGIC)
        return PK_EINVAL;
    rc = pk_arena_alloc(a, sizeof *c, 0, (void **)&c);
    if (rc)
        return rc;
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

/* ---- reset and destroy ---------------------------------------------------- */

/* Children, then cleanups (they may use what the children held no
 * more, not the other way round: a child is the narrower scope). */
static void
release(struct pk_arena *a)
{
    while (a->children)
        pk_arena_destroy(a->children);
    while (a->cleanups) {
        struct cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
    }
    while (a->blocks) {
        struct block *b = a->blocks;
        a->blocks = b->next;
        pk__free(b);
    }
}

int
pk_arena_reset(pk_arena *a)
{
    if (!a || a->b.magic != PK_ARENA_MAGIC)
        return PK_EINVAL;
    release(a);
    set_current(a, a->first, a->block_size);
    a->used_before = 0;
    a->nblocks = 1;
    a->nlarge = 0;
    a->reserved = a->block_size;
    a->resets++;
    return 0;
}

int
pk_arena_stats_get(const pk_arena *a, pk_arena_stats *o)
{
    if (!a || !o || a->b.magic != PK_ARENA_MAGIC)
        return PK_EINVAL;
    memset(o, 0, sizeof *o);
    o->used = a->used_before + (size_t)(a->b.ptr - a->start);
    o->reserved = a->reserved;
    o->blocks = a->nblocks;
    o->large = a->nlarge;
    o->children = a->nchildren;
    o->resets = a->resets;
    return 0;
}

void
pk_arena_destroy(pk_arena *a)
{
    struct pk_arena *p;

    if (!a || a->b.magic != PK_ARENA_MAGIC)
        return;
    release(a);
    p = a->parent;
    if (p) {
        if (a->prev)
            a->prev->next = a->next;
        else
            p->children = a->next;
        if (a->next)
            a->next->prev = a->prev;
        p->nchildren--;
    }
    a->b.magic = 0;
    pk__free(a->first);
    pk__free(a);
}
