/* tests/support/mempool_helpers.c - see mempool_helpers.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "mempool_helpers.h"

#include "alloc.h"
#include "test_util.h"

static long live0;

int
mh_setup(void **state)
{
    (void)state;
    setenv("POOLKIT_LOG", "off", 1);
    live0 = pk__alloc_live();
    return 0;
}

int
mh_teardown(void **state)
{
    (void)state;
    /* Every cache and slab descriptor is freed (threads joined). */
    assert_int_equal(settled_live(live0), live0);
    return 0;
}

long
mh_live0(void)
{
    return live0;
}

pk_mempool *
mh_make(const pk_mempool_options *o)
{
    pk_mempool *mp = NULL;

    assert_int_equal(pk_mempool_create(&mp, o), 0);
    assert_non_null(mp);
    return mp;
}

pk_mempool_stats
mh_stats(pk_mempool *mp)
{
    pk_mempool_stats st;

    assert_int_equal(pk_mempool_stats_get(mp, &st), 0);
    return st;
}
