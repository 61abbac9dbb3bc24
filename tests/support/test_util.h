/* tests/support/test_util.h - small things several tests need. */
#ifndef PK_TEST_UTIL_H
#define PK_TEST_UTIL_H

#include <errno.h>
#include <time.h>

/* A child forked from a threaded parent can hang in the sanitizer's
 * allocator, so under ASan/TSan such a child only checks PK_EFORKED. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* Sleeps ms milliseconds, through signals. */
static inline void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

#ifdef PK_TESTING
#include "alloc.h"

/* pk__alloc_live once it reaches want, or after 2 s: a worker retired on
 * its own thread (or a detached one) may free itself, and drop the last
 * reference to its pool, just after pk_threadpool_destroy returned. */
static inline long
settled_live(long want)
{
    long n = pk__alloc_live();

    for (int i = 0; i < 2000 && n != want; i++) {
        sleep_ms(1);
        n = pk__alloc_live();
    }
    return n;
}
#endif

#endif /* PK_TEST_UTIL_H */
