/* lib/exec/registry.c - pk_registry: task names to pk_named_fn.
 *
 * A small chained hash table under one lock (PK__RANK_REGISTRY).
 * Registration is rare (start-up); a lookup, once per named task, holds
 * the lock for one short chain walk. Names are copied into the entry itself (one
 * allocation per name) and never removed: an entry lives until
 * pk_registry_destroy, which is why a looked-up fn stays valid without a
 * reference count. */
#include <poolkit/executor.h>

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../kit/alloc.h"
#include "../kit/sync.h"

#define REG_BUCKETS 64     /* power of two */
#define REG_NAME_MAX 127   /* bytes, without the NUL */

struct entry {
    struct entry *next;
    pk_named_fn fn;
    char name[];           /* NUL-terminated copy */
};

#define REG_MAGIC 0x70675265u
#define CHECK(r) assert((r)->magic == REG_MAGIC)

struct pk_registry {
    uint32_t magic;                     /* REG_MAGIC while alive */
    pk__lock lock;                      /* the buckets */
    struct entry *buckets[REG_BUCKETS];
};

/* FNV-1a: short names, no adversary (names come from the program). */
static unsigned
hash_name(const char *name)
{
    uint32_t h = 2166136261u;

    for (; *name; name++) {
        h ^= (unsigned char)*name;
        h *= 16777619u;
    }
    return h & (REG_BUCKETS - 1);
}

/* Returns the name's length, or 0 if it is not 1..REG_NAME_MAX bytes. */
static size_t
name_len(const char *name)
{
    size_t n = strnlen(name, REG_NAME_MAX + 1);

    return n > REG_NAME_MAX ? 0 : n;
}

int
pk_registry_create(pk_registry **out)
{
    pk_registry *reg;

    if (!out)
        return PK_EINVAL;
    reg = pk__calloc(1, sizeof *reg);
    if (!reg)
        return PK_ENOMEM;
    pk__lock_init(&reg->lock, PK__RANK_REGISTRY);
    reg->magic = REG_MAGIC;
    *out = reg;
    return 0;
}

/* reg->lock held. */
static struct entry *
find(const pk_registry *reg, const char *name)
{
    struct entry *e = reg->buckets[hash_name(name)];

    while (e && strcmp(e->name, name) != 0)
        e = e->next;
    return e;
}

int
pk_registry_register(pk_registry *reg, const char *name, pk_named_fn fn)
{
    struct entry *e;
    size_t len;
    unsigned b;

    if (!reg || !name || !fn)
        return PK_EINVAL;
    CHECK(reg);
    len = name_len(name);
    if (len == 0)
        return PK_EINVAL;
    /* Allocate before locking: no allocator call under the lock. */
    e = pk__alloc(sizeof *e + len + 1);
    if (!e)
        return PK_ENOMEM;
    e->fn = fn;
    memcpy(e->name, name, len + 1);
    b = hash_name(name);
    pk__lock_acquire(&reg->lock);
    if (find(reg, name)) {
        pk__lock_release(&reg->lock);
        pk__free(e);
        return PK_EINVAL;
    }
    e->next = reg->buckets[b];
    reg->buckets[b] = e;
    pk__lock_release(&reg->lock);
    return 0;
}

int
pk_registry_lookup(const pk_registry *reg, const char *name, pk_named_fn *fn)
{
    pk_registry *r = (pk_registry *)reg; /* the lock is not part of the
                                            registry's logical value */
    struct entry *e;

    if (!reg || !name || !fn || name_len(name) == 0)
        return PK_EINVAL;
    CHECK(reg);
    pk__lock_acquire(&r->lock);
    e = find(reg, name);
    if (e)
        *fn = e->fn;
    pk__lock_release(&r->lock);
    return e ? 0 : PK_EINVAL;
}

void
pk_registry_destroy(pk_registry *reg)
{
    struct entry *e;
    struct entry *next;

    if (!reg)
        return;
    CHECK(reg);
    for (unsigned b = 0; b < REG_BUCKETS; b++) {
        for (e = reg->buckets[b]; e; e = next) {
            next = e->next;
            pk__free(e);
        }
    }
    reg->magic = 0;
    pk__free(reg);
}
