/* tests/unit/test_hist.c - the public histogram (poolkit/hist.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/hist.h>

#include "../../lib/kit/alloc.h"

static void
test_quantiles_land_in_the_right_bucket(void **state)
{
    (void)state;
    pk_hist *h = NULL;
    assert_int_equal(pk_hist_create(&h), 0);
    assert_int_equal(pk_hist_quantile(h, 0.5), 0);
    for (uint64_t v = 1; v <= 1000; v++)
        pk_hist_add(h, v);
    uint64_t p50 = pk_hist_quantile(h, 0.50), p99 = pk_hist_quantile(h, 0.99);
    /* Upper bounds of buckets about 19% wide. */
    assert_true(p50 >= 500 && p50 <= 500 * 1.25);
    assert_true(p99 >= 990 && p99 <= 990 * 1.25);
    assert_int_equal(pk_hist_max(h), 1000);
    pk_hist_add(h, UINT64_MAX); /* past the last bucket: counted there */
    assert_int_equal(pk_hist_max(h), UINT64_MAX);
    assert_true(pk_hist_quantile(h, 1.0) > 1000);
    pk_hist_destroy(h);
}

static void
test_null_and_no_memory(void **state)
{
    (void)state;
    pk_hist *h = NULL;
    assert_int_equal(pk_hist_create(NULL), PK_EINVAL);
    pk_hist_add(NULL, 5);
    assert_int_equal(pk_hist_quantile(NULL, 0.5), 0);
    assert_int_equal(pk_hist_max(NULL), 0);
    pk_hist_destroy(NULL);
    pk__alloc_fail_at(1);
    assert_int_equal(pk_hist_create(&h), PK_ENOMEM);
    pk__alloc_fail_at(0);
    assert_null(h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_land_in_the_right_bucket),
        cmocka_unit_test(test_null_and_no_memory),
    };
    return cmocka_run_group_tests_name("hist", tests, NULL, NULL);
}
