/* lib/kit/hist.c - see hist.h. Bucket b < 4 holds the value b; above that,
 * bucket 4*e + s holds values in [2^e + s*2^(e-2), 2^e + (s+1)*2^(e-2)). */
#include "hist.h"

#include <poolkit/hist.h>

#include "alloc.h"

static unsigned
bucket_of(uint64_t v)
{
    unsigned e, s, b;

    if (v < PK__HIST_SUB)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v);
    s = (unsigned)((v >> (e - 2)) & 3u);
    b = e * PK__HIST_SUB + s;
    return b < PK__HIST_BUCKETS ? b : PK__HIST_BUCKETS - 1;
}

static uint64_t
bucket_upper(unsigned b)
{
    unsigned e = b / PK__HIST_SUB, s = b % PK__HIST_SUB;

    if (b < PK__HIST_SUB)
        return b;
    return (1ull << e) + ((uint64_t)(s + 1) << (e - 2)) - 1;
}

void
pk__hist_add(pk__hist *h, uint64_t ns)
{
    uint64_t m;

    atomic_fetch_add_explicit(&h->count[bucket_of(ns)], 1,
                              memory_order_relaxed);
    m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (ns > m && !atomic_compare_exchange_weak_explicit(
                         &h->max, &m, ns, memory_order_relaxed,
                         memory_order_relaxed)) {
    }
}

uint64_t
pk__hist_quantile(const pk__hist *h, double q, uint64_t zeros)
{
    uint64_t total = 0, seen = 0, want;
    uint64_t c[PK__HIST_BUCKETS];

    for (unsigned b = 0; b < PK__HIST_BUCKETS; b++) {
        c[b] = atomic_load_explicit(&h->count[b], memory_order_relaxed);
        total += c[b];
    }
    c[0] += zeros;
    total += zeros;
    if (total == 0)
        return 0;
    want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    for (unsigned b = 0; b < PK__HIST_BUCKETS; b++) {
        seen += c[b];
        if (seen > want) {
            uint64_t m = pk__hist_max(h);
            uint64_t u = bucket_upper(b);
            return u < m ? u : m;
        }
    }
    return pk__hist_max(h);
}

uint64_t
pk__hist_max(const pk__hist *h)
{
    return atomic_load_explicit(&h->max, memory_order_relaxed);
}

void
pk__hist_clear(pk__hist *h)
{
    for (unsigned b = 0; b < PK__HIST_BUCKETS; b++)
        atomic_store_explicit(&h->count[b], 0, memory_order_relaxed);
    atomic_store_explicit(&h->max, 0, memory_order_relaxed);
}

/* ---- the public face (poolkit/hist.h) ------------------------------------ */

struct pk_hist {
    pk__hist h;
};

int
pk_hist_create(pk_hist **out)
{
    if (!out)
        return PK_EINVAL;
    pk_hist *h = pk__calloc(1, sizeof *h);
    if (!h)
        return PK_ENOMEM;
    *out = h;
    return 0;
}

void
pk_hist_add(pk_hist *h, uint64_t value)
{
    if (h)
        pk__hist_add(&h->h, value);
}

uint64_t
pk_hist_quantile(const pk_hist *h, double q)
{
    return h ? pk__hist_quantile(&h->h, q, 0) : 0;
}

uint64_t
pk_hist_max(const pk_hist *h)
{
    return h ? pk__hist_max(&h->h) : 0;
}

void
pk_hist_destroy(pk_hist *h)
{
    pk__free(h);
}
