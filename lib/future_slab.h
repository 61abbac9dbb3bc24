/* lib/future_slab.h - where futures live: one-line slots carved from
 * per-thread slabs of the core's slab arena (future_slab.c says why).
 * For future.c only. */
#ifndef PK_LIB_FUTURE_SLAB_H
#define PK_LIB_FUTURE_SLAB_H

#include <stdint.h>

#include "slab.h"

/* A slot's size and alignment: one cache line. */
#define PK__FSLOT_SIZE 64u
/* Slots in a slab, at most: an arena slab after its header line, but for
 * the last line (a slab's free slots and two flags fit in 64 bits:
 * future_slab.c). */
#define PK__FSLAB_SLOTS ((PK__SLAB_SIZE - PK__FSLOT_SIZE) / PK__FSLOT_SIZE - 1)

/* A slot of PK__FSLOT_SIZE bytes aligned to it, contents undefined, from
 * the calling thread's slab; *slot gets its index in that slab, which
 * pk__fslot_free needs back. NULL if out of memory. Thread-safe. */
void *pk__fslot_alloc(uint32_t *slot);

/* Frees a slot of pk__fslot_alloc, given its index. From any thread; the
 * caller's writes to it are released to whoever reuses the slot or frees
 * its slab. */
void pk__fslot_free(void *p, uint32_t slot);

#endif /* PK_LIB_FUTURE_SLAB_H */
