/* lib/alloc.h - every poolkit allocation goes through these, so a test
 * build (-DPK_TESTING) can fail the k-th one and prove that each caller
 * cleans up and returns PK_ENOMEM. */
#ifndef PK_LIB_ALLOC_H
#define PK_LIB_ALLOC_H

#include <stddef.h>

#include <poolkit/error.h>

void *pk__alloc(size_t size);
void *pk__calloc(size_t n, size_t size);
void pk__free(void *p);

#ifdef PK_TESTING
/* Test-only, never in an installed library: fail the k-th allocation from
 * now (1 = the next one); 0 turns injection off. Returns how many
 * allocations ran since the last call. Not thread-safe by design: the
 * allocation-failure tests are single-threaded. */
unsigned long pk__alloc_fail_at(unsigned long k);
/* Number of allocations not yet freed (every pk__alloc minus pk__free). */
long pk__alloc_live(void);
#endif

#endif /* PK_LIB_ALLOC_H */
