/* poolkit/hist.h - a latency histogram, the one poolkit's own stats use:
 * log buckets (powers of two split in 4, about 19% resolution) from 0 up
 * to about 2^40, one relaxed atomic add per sample, so any number of
 * threads may add while others read. For the adapters' and users'
 * percentiles (connect time, transfer time) without a second copy. */
#ifndef POOLKIT_HIST_H
#define POOLKIT_HIST_H

#include <stdint.h>

#include <poolkit/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_hist pk_hist; /* opaque */

/* Makes an empty histogram. Returns: 0, PK_EINVAL (out NULL), PK_ENOMEM.
 * Owner: *out returned owned (pk_hist_destroy). Threads: safe. */
PK_API int pk_hist_create(pk_hist **out);

/* Counts one sample (any unit; larger than 2^40 counts in the last
 * bucket). NULL is a no-op. Threads: safe, lock-free. */
PK_API void pk_hist_add(pk_hist *h, uint64_t value);

/* The value at quantile q (0..1) as the upper bound of its bucket; 0 when
 * empty or for NULL. Threads: safe (a snapshot of relaxed counters). */
PK_API uint64_t pk_hist_quantile(const pk_hist *h, double q);

/* The largest sample so far (0 when empty or for NULL). Threads: safe. */
PK_API uint64_t pk_hist_max(const pk_hist *h);

/* Frees it. NULL is a no-op. Owner: takes h. Threads: exclusive. */
PK_API void pk_hist_destroy(pk_hist *h);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_HIST_H */
