/* lib/kit/alloc.h - every poolkit allocation (and thread) goes through these,
 * so a test build (-DPK_TESTING) can fail the k-th one and prove that each
 * caller cleans up and returns PK_ENOMEM (or copes without the thread). */
#ifndef PK_LIB_ALLOC_H
#define PK_LIB_ALLOC_H

#include <pthread.h>
#include <stddef.h>

#include <poolkit/error.h>

void *pk__alloc(size_t size);
void *pk__calloc(size_t n, size_t size);
void pk__free(void *p);
/* A copy of s (pk__alloc'd), or NULL without memory. */
char *pk__strdup(const char *s);

/* Every thread poolkit starts goes through here too, so a test build can
 * make thread creation fail as a process at its limit sees it. Returns 0
 * or an errno value, as pthread_create. */
int pk__thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

#ifdef PK_TESTING
/* Test-only, never in an installed library: fail the k-th allocation from
 * now (1 = the next one); 0 turns injection off. Returns how many
 * allocations ran since the last call. Not thread-safe by design: the
 * allocation-failure tests are single-threaded. */
unsigned long pk__alloc_fail_at(unsigned long k);
/* Number of allocations not yet freed (every pk__alloc minus pk__free). */
long pk__alloc_live(void);
/* Test-only: the next n thread creations fail with EAGAIN (0 turns it
 * off). Returns how many were still to fail. Thread-safe: stress tests
 * call it while the pools run. */
unsigned long pk__thread_fail_next(unsigned long n);
#endif

#endif /* PK_LIB_ALLOC_H */
