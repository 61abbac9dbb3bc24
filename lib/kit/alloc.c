/* lib/kit/alloc.c - the one allocation path, and the one way threads start.
 * In a PK_TESTING build a counter fails the k-th allocation (curl's
 * torture mode, SQLite's malloc tests), another the next n threads.
 * The counters are test-only globals, compiled out of real builds. */
#include "alloc.h"

#include <string.h>

#include <errno.h>
#include <stdlib.h>

#ifdef PK_TESTING
#include <stdatomic.h>
static atomic_ulong alloc_calls;  /* allocations since the last reset */
static atomic_ulong fail_at;      /* 0 = off */
static atomic_long live;          /* outstanding allocations */

unsigned long
pk__alloc_fail_at(unsigned long k)
{
    unsigned long n = atomic_exchange(&alloc_calls, 0);
    atomic_store(&fail_at, k);
    return n;
}

long
pk__alloc_live(void)
{
    return atomic_load(&live);
}

static int
should_fail(void)
{
    unsigned long n = atomic_fetch_add(&alloc_calls, 1) + 1;
    unsigned long k = atomic_load(&fail_at);
    return k != 0 && n == k;
}
#define PK__COUNT(p) \
    do { if (p) atomic_fetch_add(&live, 1); } while (0)

static atomic_ulong thread_fails; /* thread creations still to fail */

unsigned long
pk__thread_fail_next(unsigned long n)
{
    return atomic_exchange(&thread_fails, n);
}

static int
thread_should_fail(void)
{
    unsigned long n = atomic_load(&thread_fails);

    while (n && !atomic_compare_exchange_weak(&thread_fails, &n, n - 1))
        ;
    return n != 0;
}
#else
#define thread_should_fail() 0
#define should_fail() 0
#define PK__COUNT(p) ((void)0)
#endif

void *
pk__alloc(size_t size)
{
    void *p;

    if (should_fail())
        return NULL;
    p = malloc(size ? size : 1);
    PK__COUNT(p);
    return p;
}

void *
pk__calloc(size_t n, size_t size)
{
    void *p;

    if (should_fail())
        return NULL;
    p = calloc(n ? n : 1, size ? size : 1);
    PK__COUNT(p);
    return p;
}

void
pk__free(void *p)
{
#ifdef PK_TESTING
    if (p)
        atomic_fetch_sub(&live, 1);
#endif
    free(p);
}

char *
pk__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = pk__alloc(n);

    if (c)
        memcpy(c, s, n);
    return c;
}

int
pk__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    if (thread_should_fail())
        return EAGAIN;
    return pthread_create(t, NULL, fn, arg);
}
