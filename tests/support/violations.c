/* tests/support/violations.c - see violations.h. */
#include "violations.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static atomic_ulong count;
static atomic_flag first_taken = ATOMIC_FLAG_INIT;
static char first_msg[256];

void
violation(const char *fmt, ...)
{
    atomic_fetch_add(&count, 1);
    if (!atomic_flag_test_and_set(&first_taken)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_msg, sizeof first_msg, fmt, ap);
        va_end(ap);
    }
}

void
violations_reset(void)
{
    atomic_store(&count, 0);
    atomic_flag_clear(&first_taken);
    first_msg[0] = '\0';
}

unsigned long
violations_report(uint64_t seed)
{
    unsigned long n = atomic_load(&count);

    if (n)
        fprintf(stderr, "%lu violations (seed %llu, replay with "
                "PK_SEED=%llu); first: %s\n", n, (unsigned long long)seed,
                (unsigned long long)seed, first_msg);
    return n;
}
