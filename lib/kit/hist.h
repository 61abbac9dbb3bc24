/* lib/kit/hist.h - a log-bucketed histogram of nanosecond durations, cheap
 * enough for hot paths: one relaxed atomic add per sample. Buckets are
 * powers of two split into 4 sub-buckets (about 19% resolution), from
 * 0 ns up to about 2^40 ns (18 minutes); longer values land in the last. */
#ifndef PK_LIB_HIST_H
#define PK_LIB_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define PK__HIST_SUB 4
#define PK__HIST_BUCKETS (41 * PK__HIST_SUB)

typedef struct pk__hist {
    _Atomic uint64_t count[PK__HIST_BUCKETS]; /* relaxed: statistics */
    _Atomic uint64_t max;                     /* relaxed */
} pk__hist;

void pk__hist_add(pk__hist *h, uint64_t ns);
/* The value at quantile q (0..1), as the upper bound of its bucket;
 * 0 when empty. `zeros` more samples of value 0 are counted as if they had
 * been added (hot paths count their no-wait cases elsewhere, for free). */
uint64_t pk__hist_quantile(const pk__hist *h, double q, uint64_t zeros);
uint64_t pk__hist_max(const pk__hist *h);
void pk__hist_clear(pk__hist *h);

#endif /* PK_LIB_HIST_H */
