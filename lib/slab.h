/* lib/slab.h - the core's slab arena: fixed-size blocks, aligned to their
 * size, carved from 2 MiB regions the kernel may back with huge pages.
 *
 * For objects made by the million and spread over threads (a future per
 * task): a caller carves its objects out of a slab itself, and gives the
 * slab back once the last of them is freed. The arena only hands slabs
 * out and takes them back, once per slab, under one process-wide lock.
 *
 * Why not malloc: a burst of a million live futures spends most of its
 * time in the kernel, faulting and zeroing fresh pages; one huge-page
 * fault serves 512 small-page ones, and a slab given back is reused (no
 * fault at all) by the next burst, on any thread. An empty region goes
 * back to the kernel, but for two kept for the next burst. Idle threads
 * may map the next region ahead of need (pk__slab_prefault).
 *
 * Process-wide state (documented in DESIGN.md's list): the lock and the
 * region lists. pthread_atfork keeps them consistent in a child. */
#ifndef PK_LIB_SLAB_H
#define PK_LIB_SLAB_H

#include <stddef.h>

/* A slab's size and alignment. */
#define PK__SLAB_SIZE 4096u

/* A slab of PK__SLAB_SIZE bytes aligned to PK__SLAB_SIZE, contents
 * undefined (zero when fresh from the kernel, old data when reused), or
 * NULL when the kernel refuses memory. Thread-safe. Test builds count it
 * as a pk__alloc (failure injection, pk__alloc_live). */
void *pk__slab_get(void);

/* Gives back a slab from pk__slab_get (NULL: nothing). Thread-safe, from
 * any thread. */
void pk__slab_put(void *slab);

/* When the arena runs low (less than half a region spare), maps the next
 * region and faults its pages in, so that the thread carving slabs does
 * not stop for the kernel's zeroing. For a thread with nothing else to do
 * (an idle worker): costs one relaxed load when nothing is wanted.
 * Thread-safe. */
void pk__slab_prefault(void);

/* Slabs handed out and not given back (tests: nothing kept at the end). */
long pk__slab_live(void);

#endif /* PK_LIB_SLAB_H */
