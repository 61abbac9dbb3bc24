/* tests/unit/test_exec_errors.c - every failure of a lib/exec call that
 * takes a pk_error fills it (error.h): pk_future_error and pk_map_next,
 * one test per failure path, each with a pk_error the caller pre-filled
 * with garbage, which must not come back. (pk_future_get's paths are in
 * test_future_wait.c; the pool core's in test_pool_errors.c.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <poolkit/executor.h>
#include <poolkit/future.h>

#include "future_helpers.h"

/* ---- pk_future_error ----------------------------------------------------- */

static void
test_future_error_of_null_fills_err(void **state)
{
    pk_error err;

    (void)state;
    fh_garbage(&err);
    assert_int_equal(pk_future_error(NULL, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "the future is NULL");
}

static void
test_future_error_of_an_unfinished_future_fills_err(void **state)
{
    pk_future *f;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_error(f, &err), PK_EAGAIN);
    fh_assert_filled(&err, PK_EAGAIN, 0, "has not finished");
    assert_int_equal(pk_future_set_running(f), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_error(f, &err), PK_EAGAIN);
    fh_assert_filled(&err, PK_EAGAIN, 0, "has not finished");
    assert_int_equal(pk_future_complete(f, NULL), 0);
    pk_future_release(f);
}

static void
test_future_error_of_a_done_future_fills_err(void **state)
{
    pk_future *f;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_error(f, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "succeeded: it has no error");
    pk_future_release(f);
}

static void
test_future_error_of_failed_and_cancelled_futures(void **state)
{
    pk_future *f;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ECONNECT, 111, "refused"), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_error(f, &err), 0);
    fh_assert_filled(&err, PK_ECONNECT, 111, "refused");
    pk_future_release(f);

    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_error(f, &err), 0);
    fh_assert_filled(&err, PK_ECANCELED, 0, "canceled");
    pk_future_release(f);
}

/* ---- pk_map_next --------------------------------------------------------- */

/* Tasks: 0 succeeds; 1 fails with a message and sys; 2 fails with a bare
 * code; 3 returns a positive number (a bug: PK_ETASK). */
static int
task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    switch ((uintptr_t)arg) {
    case 1:
        return pk_error_set(err, PK_ECONNECT, 111, "item one refused");
    case 2:
        return PK_EFULL;
    case 3:
        return 5;
    default:
        out->value = arg;
        return 0;
    }
}

struct input {
    pk_task tasks[8];
    size_t n, i;
    int fail_at; /* next returns PK_ENOMEM here (-1: never) */
};

static int
next(void *user, pk_task *t)
{
    struct input *in = user;

    if ((int)in->i == in->fail_at)
        return PK_ENOMEM;
    if (in->i == in->n)
        return 1;
    *t = in->tasks[in->i++];
    return 0;
}

static void
input_fns(struct input *in, size_t n)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    in->fail_at = -1;
    for (size_t i = 0; i < n; i++) {
        in->tasks[i].fn = task;
        in->tasks[i].arg = (void *)(uintptr_t)i;
    }
}

static pk_executor *
make_inline(pk_registry *reg)
{
    pk_executor *ex = NULL;

    assert_int_equal(pk_inline_executor_create(&ex, reg, NULL, NULL), 0);
    return ex;
}

/* Next outcome of m, with a garbage err; asserts rc and index. */
static void
next_is(pk_map *m, int rc, size_t index, pk_error *err)
{
    size_t idx = 77;

    fh_garbage(err);
    assert_int_equal(pk_map_next(m, NULL, &idx, err), rc);
    assert_int_equal(idx, index);
}

static void
test_map_next_of_null_fills_err(void **state)
{
    pk_error err;

    (void)state;
    fh_garbage(&err);
    assert_int_equal(pk_map_next(NULL, NULL, NULL, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "the map is NULL");
}

static void
test_map_next_fills_err_for_each_failing_item(void **state)
{
    pk_executor *ex = make_inline(NULL);
    struct input in;
    pk_error err;
    pk_map *m;

    (void)state;
    input_fns(&in, 5);
    in.tasks[4].fn = NULL; /* neither fn nor name: invalid */
    assert_int_equal(pk_map_create(&m, ex, next, &in,
                                   &(pk_map_options){ .chunk = 2 }), 0);
    next_is(m, 0, 0, &err);
    assert_int_equal(err.code, 12345); /* left alone on success */
    next_is(m, PK_ECONNECT, 1, &err);
    fh_assert_filled(&err, PK_ECONNECT, 111, "item one refused");
    next_is(m, PK_EFULL, 2, &err);
    fh_assert_filled(&err, PK_EFULL, 0, pk_strerror(PK_EFULL));
    next_is(m, PK_ETASK, 3, &err);
    fh_assert_filled(&err, PK_ETASK, 5, "task returned 5");
    next_is(m, PK_EINVAL, 4, &err);
    fh_assert_filled(&err, PK_EINVAL, 0, "invalid task");
    fh_garbage(&err);
    assert_int_equal(pk_map_next(m, NULL, NULL, &err), 1);
    assert_int_equal(err.code, 12345); /* the end is no failure */
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

static int
named_fail(const void *data, size_t len, pk_future *self, pk_result *out,
           pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)out;
    return pk_error_set(err, PK_EADAPTER, 42, "named one broke");
}

static void
test_map_next_fills_err_for_a_failing_named_item(void **state)
{
    pk_registry *reg;
    pk_executor *ex;
    struct input in;
    pk_error err;
    pk_map *m;

    (void)state;
    assert_int_equal(pk_registry_create(&reg), 0);
    assert_int_equal(pk_registry_register(reg, "breaks", named_fail), 0);
    ex = make_inline(reg);
    input_fns(&in, 1);
    in.tasks[0].fn = NULL;
    in.tasks[0].name = "breaks";
    assert_int_equal(pk_map_create(&m, ex, next, &in, NULL), 0);
    next_is(m, PK_EADAPTER, 0, &err);
    fh_assert_filled(&err, PK_EADAPTER, 42, "named one broke");
    pk_map_destroy(m);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_map_next_fills_err_when_the_input_fails(void **state)
{
    pk_executor *ex = make_inline(NULL);
    struct input in;
    pk_error err;
    pk_map *m;

    (void)state;
    input_fns(&in, 3);
    in.fail_at = 1;
    assert_int_equal(pk_map_create(&m, ex, next, &in, NULL), 0);
    next_is(m, 0, 0, &err);
    next_is(m, PK_ENOMEM, PK_MAP_NO_INDEX, &err);
    fh_assert_filled(&err, PK_ENOMEM, 0, "the input's next function failed");
    next_is(m, PK_ENOMEM, PK_MAP_NO_INDEX, &err); /* sticky, filled again */
    fh_assert_filled(&err, PK_ENOMEM, 0, "the input's next function failed");
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

static void
test_map_next_fills_err_when_the_executor_refuses(void **state)
{
    pk_executor *ex = make_inline(NULL);
    struct input in;
    pk_error err;
    pk_map *m;

    (void)state;
    input_fns(&in, 2);
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 0), 0);
    assert_int_equal(pk_map_create(&m, ex, next, &in, NULL), 0);
    next_is(m, PK_ESHUTDOWN, PK_MAP_NO_INDEX, &err);
    fh_assert_filled(&err, PK_ESHUTDOWN, 0, "the executor refused a task");
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

/* A task that sleeps 30 ms: with a 1 ms timeout on the inline executor
 * (which runs it inside submit) the map is past its deadline after the
 * first one. */
static int
slow(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    fh_sleep_ms(30);
    return 0;
}

static void
test_map_next_fills_err_when_the_map_times_out(void **state)
{
    pk_executor *ex = make_inline(NULL);
    struct input in;
    pk_error err;
    pk_map *m;
    int rc;
    size_t idx;

    (void)state;
    input_fns(&in, 4);
    for (size_t i = 0; i < 4; i++)
        in.tasks[i].fn = slow;
    assert_int_equal(pk_map_create(&m, ex, next, &in,
                                   &(pk_map_options){ .timeout_ms = 1,
                                                      .chunk = 1 }), 0);
    do {
        fh_garbage(&err);
        rc = pk_map_next(m, NULL, &idx, &err);
    } while (rc == 0);
    assert_int_equal(rc, PK_ETIMEDOUT);
    assert_int_equal(idx, PK_MAP_NO_INDEX);
    fh_assert_filled(&err, PK_ETIMEDOUT, 0, "its timeout passed");
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_future_error_of_null_fills_err),
        T(test_future_error_of_an_unfinished_future_fills_err),
        T(test_future_error_of_a_done_future_fills_err),
        T(test_future_error_of_failed_and_cancelled_futures),
        T(test_map_next_of_null_fills_err),
        T(test_map_next_fills_err_for_each_failing_item),
        T(test_map_next_fills_err_for_a_failing_named_item),
        T(test_map_next_fills_err_when_the_input_fails),
        T(test_map_next_fills_err_when_the_executor_refuses),
        T(test_map_next_fills_err_when_the_map_times_out),
    };

    return cmocka_run_group_tests_name("exec_errors", tests, NULL, NULL);
}
