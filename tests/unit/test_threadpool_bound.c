/* tests/unit/test_threadpool_bound.c - a worker at its nesting bound:
 * the batch it popped but may not run any more, given back, and what a
 * cancelling shutdown does to it.
 *
 * Tasks never call cmocka: they record what they saw in atomics and the
 * main thread asserts (STYLE.md section 5). Waits poll with a generous
 * limit (a liveness bound, never a speed claim). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include <stdatomic.h>
#include <stdint.h>

#include "test_util.h"
#include "tp_tasks.h"

/* The chain's innermost task runs this many tasks deep on its worker:
 * PK__TP_NEST (tp_int.h), where a waiting worker stops helping with
 * anything but next slots and gives its batch back. */
#define BOUND 16
/* Queued behind the chain's root: the worker pops the root and 15 of
 * them as one batch (the queue is long: 4 tasks per thread and more). */
#define N_QUEUED 79

static pk_threadpool *the_pool;
static pk_future *outside;        /* completed by the test */
static atomic_int deep_arrived, deep_go, task_bad;

/* Submits its child (arg - 1) and waits for it; the innermost (arg 0)
 * says it arrived, waits for the test's go, then waits on `outside`. */
static int
chain_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    uintptr_t d = (uintptr_t)arg;
    pk_future *child;

    (void)self;
    (void)out;
    (void)err;
    if (d == 0) {
        atomic_store(&deep_arrived, 1);
        for (int i = 0; i < 10000 && !atomic_load(&deep_go); i++)
            sleep_ms(1);
        if (pk_future_wait(outside, PK_WAIT_FOREVER) != 0)
            atomic_fetch_add(&task_bad, 1);
        return 0;
    }
    if (pk_threadpool_submit(the_pool, chain_task, (void *)(d - 1),
                             &child) != 0) {
        atomic_fetch_add(&task_bad, 1);
        return PK_ETASK;
    }
    if (pk_future_wait(child, PK_WAIT_FOREVER) != 0)
        atomic_fetch_add(&task_bad, 1);
    pk_future_release(child);
    return 0;
}

static int
setup(void **state)
{
    (void)state;
    tp_gate_reset();
    atomic_store(&deep_arrived, 0);
    atomic_store(&deep_go, 0);
    atomic_store(&task_bad, 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    atomic_store(&deep_go, 1);
    tp_gate_set(1);
    for (int i = 0; i < 2000 && atomic_load(&tp_gate_inside) > 0; i++)
        sleep_ms(1);
    return 0;
}

/* A worker holds a batch it has not run when a CANCEL shutdown sweeps the
 * queue; then its task reaches the nesting bound and it gives the batch
 * back: those tasks are cancelled (futures CANCELLED, counted cancelled),
 * not run (review: pushed back after the sweep, they ran). */
static void
test_batch_given_back_after_cancel_is_cancelled(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_future *gated, *root, *q[N_QUEUED];
    pk_threadpool_stats st;

    (void)state;
    assert_int_equal(pk_future_create(&outside, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    /* The one worker waits at the gate while the queue fills. */
    assert_int_equal(pk_threadpool_submit(the_pool, tp_gated_task, NULL,
                                          &gated), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    assert_int_equal(pk_threadpool_submit(the_pool, chain_task,
                                          (void *)(uintptr_t)(BOUND - 1),
                                          &root), 0);
    for (int i = 0; i < N_QUEUED; i++)
        assert_int_equal(pk_threadpool_submit(the_pool, tp_count_task, NULL,
                                              &q[i]), 0);
    tp_gate_set(1);
    for (int i = 0; i < 10000 && !atomic_load(&deep_arrived); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&deep_arrived), 1);

    /* The sweep cancels what is queued; the batch is the worker's. */
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_CANCEL, 0),
                     PK_ETIMEDOUT);
    atomic_store(&deep_go, 1);
    for (int i = 0; i < N_QUEUED; i++) {
        assert_int_equal(pk_future_wait(q[i], 10000), 0);
        assert_int_equal(pk_future_state_get(q[i]), PK_FUTURE_CANCELLED);
        pk_future_release(q[i]);
    }
    assert_int_equal(pk_future_complete(outside, NULL), 0);
    assert_int_equal(pk_future_wait(root, 10000), 0);
    assert_int_equal(pk_future_state_get(root), PK_FUTURE_DONE);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_CANCEL,
                                            10000), 0);
    assert_int_equal(atomic_load(&tp_counter), 0);
    assert_int_equal(atomic_load(&task_bad), 0);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.cancelled, N_QUEUED);
    assert_int_equal(st.completed, 1 + BOUND); /* the gated task, the chain */
    assert_int_equal(st.submitted, 1 + BOUND + N_QUEUED);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    pk_future_release(gated);
    pk_future_release(root);
    pk_future_release(outside);
    pk_threadpool_destroy(the_pool);
}

static atomic_int hold_in, hold_go;

/* Holds its worker until hold_go. */
static int
hold_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    atomic_store(&hold_in, 1);
    while (!atomic_load(&hold_go))
        sleep_ms(1);
    return 0;
}

/* The same without the bound: the worker pops a gated task and 15
 * counted ones as one batch and runs the first when a CANCEL shutdown
 * sweeps the queue; the rest of its batch is cancelled too, not run
 * (they ran, review of session 3). */
static void
test_running_batch_after_cancel_is_cancelled(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_task gated = { .fn = tp_gated_task };
    pk_threadpool_stats st;

    (void)state;
    atomic_store(&hold_in, 0);
    atomic_store(&hold_go, 0);
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    /* hold_task keeps the worker while the rest queue up behind it; then
     * it pops the gated task (the gate is closed) with 15 counted ones. */
    assert_int_equal(pk_threadpool_submit(the_pool, hold_task, NULL, NULL),
                     0);
    for (int i = 0; i < 10000 && !atomic_load(&hold_in); i++)
        sleep_ms(1);
    assert_int_equal(pk_threadpool_submit_opts(the_pool, &gated, NULL, NULL),
                     0);
    for (int i = 0; i < N_QUEUED; i++)
        assert_int_equal(pk_threadpool_submit(the_pool, tp_count_task, NULL,
                                              NULL), 0);
    atomic_store(&hold_go, 1);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_CANCEL, 0),
                     PK_ETIMEDOUT); /* the gated task runs */
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_CANCEL,
                                            10000), 0);
    assert_int_equal(atomic_load(&tp_counter), 0); /* none of them ran */
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.cancelled, N_QUEUED);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.queued, 0);
    pk_threadpool_destroy(the_pool);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_batch_given_back_after_cancel_is_cancelled),
        T(test_running_batch_after_cancel_is_cancelled),
    };
    return cmocka_run_group_tests_name("threadpool_bound", tests, NULL,
                                       NULL);
}
