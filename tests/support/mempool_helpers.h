/* tests/support/mempool_helpers.h - what the memory pool's unit tests
 * share: a fixture that checks every allocation of the library was given
 * back, and short forms of create and stats that assert success. */
#ifndef PK_TEST_MEMPOOL_HELPERS_H
#define PK_TEST_MEMPOOL_HELPERS_H

#include <poolkit/mempool.h>

/* cmocka setup/teardown: POOLKIT_LOG=off, and at teardown the library's
 * live allocations back to what they were at setup (threads joined). */
int mh_setup(void **state);
int mh_teardown(void **state);
/* The live allocations at the last mh_setup. */
long mh_live0(void);

pk_mempool *mh_make(const pk_mempool_options *o);
pk_mempool_stats mh_stats(pk_mempool *mp);

#endif /* PK_TEST_MEMPOOL_HELPERS_H */
