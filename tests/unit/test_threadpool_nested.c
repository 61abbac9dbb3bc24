/* tests/unit/test_threadpool_nested.c - tasks that submit children and
 * wait for them: a child its parent waits for by other means than
 * pk_future_wait runs on an idle worker; pk_future_wait_any inside a
 * task runs a child as pk_future_wait does; the watchdog keeps watching a task
 * after a child ran nested on its stack; tasks that fill their own
 * pool's queue do not deadlock it; a task run by its caller
 * (CALLER_RUNS) is waited for by shutdown; and a pk_map inside a task
 * runs on the pool it is in.
 *
 * Tasks never call cmocka: they return what went wrong through their
 * futures, and the main thread asserts (STYLE.md section 5). Waits poll
 * with a generous limit (a liveness bound, never a speed claim). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "test_util.h"
#include "tp_tasks.h"

/* How long a task polls before it reports that nothing came: far above
 * anything the pool needs, so only a hang reaches it. */
#define LIVENESS_MS 10000

static pk_threadpool *the_pool;

/* Submits a child with a future, then waits for it by polling a flag,
 * which runs nothing: only another worker can run the child. */
static int
parent_polls(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_future *child;
    int rc;

    (void)arg;
    (void)self;
    (void)out;
    rc = pk_threadpool_submit(the_pool, tp_count_task, NULL, &child);
    if (rc)
        return pk_error_set(err, rc, 0, "submit: %s", pk_strerror(rc));
    for (int ms = 0; ms < LIVENESS_MS && !atomic_load(&tp_counter); ms++)
        sleep_ms(1);
    rc = atomic_load(&tp_counter) ? 0 : PK_ETIMEDOUT;
    pk_future_release(child);
    return rc;
}

static void
test_child_awaited_by_polling_runs_on_an_idle_worker(void **state)
{
    pk_threadpool_options o = { .min_threads = 2, .max_threads = 2 };
    pk_future *f;

    (void)state;
    tp_gate_reset();
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, parent_polls, NULL, &f),
                     0);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
    pk_threadpool_destroy(the_pool);
}

/* Submits n children and waits for any of them: with one worker, only
 * running one on the waiting task's stack can. */
static int
parent_waits_any(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    size_t n = (size_t)(uintptr_t)arg, k = 0, i = 0;
    pk_future *kids[3];
    int rc = 0;

    (void)self;
    for (; k < n && rc == 0; k++)
        rc = pk_threadpool_submit(the_pool, tp_count_task, NULL, &kids[k]);
    if (rc) {
        k--;
        pk_error_set(err, rc, 0, "submit: %s", pk_strerror(rc));
    } else {
        rc = pk_future_wait_any(kids, n, LIVENESS_MS, &i);
        if (rc)
            pk_error_set(err, rc, 0, "wait_any: %s", pk_strerror(rc));
        else if (pk_future_state_get(kids[i]) != PK_FUTURE_DONE)
            rc = pk_error_set(err, PK_ETASK, 0, "child %zu not done", i);
    }
    while (k > 0)
        pk_future_release(kids[--k]);
    out->value = (void *)(uintptr_t)i;
    return rc;
}

static void
run_wait_any(size_t n)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_future *f;

    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, parent_waits_any,
                                          (void *)(uintptr_t)n, &f),
                     0);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
    /* Every child ran: the unawaited ones too, by the drain. */
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            PK_WAIT_FOREVER),
                     0);
    assert_int_equal(atomic_load(&tp_counter), (int)n);
    pk_threadpool_destroy(the_pool);
}

static void
test_wait_any_in_a_task_helps(void **state)
{
    (void)state;
    tp_gate_reset();
    run_wait_any(1);
    tp_gate_reset();
    run_wait_any(3);
}

/* A task with a run limit runs a child nested (its wait helps), then
 * polls its cancel flag: the watchdog must still watch it. */
static int
limited_parent(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_future *child;
    int rc;

    (void)arg;
    (void)out;
    rc = pk_threadpool_submit(the_pool, tp_count_task, NULL, &child);
    if (rc == 0) {
        rc = pk_future_wait(child, LIVENESS_MS);
        pk_future_release(child);
    }
    if (rc)
        return pk_error_set(err, rc, 0, "child: %s", pk_strerror(rc));
    for (int ms = 0; ms < LIVENESS_MS; ms++) {
        if (pk_future_cancel_requested(self))
            return PK_ECANCELED;
        sleep_ms(1);
    }
    return pk_error_set(err, PK_ETIMEDOUT, 0, "never flagged");
}

static void
test_task_is_watched_after_a_nested_child(void **state)
{
    /* slow_task_ms turns the watchdog on for every task, the nested
     * child too: what it shows of the child must not stay in place of
     * the parent when the child returns. */
    pk_threadpool_options o = { .max_threads = 1, .slow_task_ms = 1000000 };
    pk_task t = { .fn = limited_parent };
    pk_task_options lim = { .run_limit_ms = 30 };
    pk_future *f;

    (void)state;
    tp_gate_reset();
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit_opts(the_pool, &t, &lim, &f), 0);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    assert_int_equal(atomic_load(&tp_counter), 1); /* the child ran */
    pk_future_release(f);
    pk_threadpool_destroy(the_pool);
}

/* Tasks that fill their own pool's queue (PK_FULL_BLOCK): only workers
 * make room, so a worker waiting for room must run queued tasks (or let
 * another worker start), or every worker waits for ever. */
#define KIDS 10

static int
parent_fills_queue(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    int rc = 0;

    (void)arg;
    (void)self;
    (void)out;
    for (int i = 0; i < KIDS && rc == 0; i++)
        rc = pk_threadpool_submit(the_pool, tp_count_task, NULL, NULL);
    return rc ? pk_error_set(err, rc, 0, "submit: %s", pk_strerror(rc)) : 0;
}

static void
test_block_policy_inside_a_task_does_not_deadlock(void **state)
{
    pk_threadpool_options o = { .max_threads = 2, .queue_size = 4,
                                .submit_timeout_ms = LIVENESS_MS };
    pk_future *f[2];

    (void)state;
    tp_gate_reset();
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            pk_threadpool_submit(the_pool, parent_fills_queue, NULL, &f[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pk_future_wait(f[i], PK_WAIT_FOREVER), 0);
        assert_int_equal(pk_future_result(f[i], NULL), 0);
        pk_future_release(f[i]);
    }
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            PK_WAIT_FOREVER),
                     0);
    assert_int_equal(atomic_load(&tp_counter), 2 * KIDS);
    pk_threadpool_destroy(the_pool);
}

/* A task run by its submitter (PK_FULL_CALLER_RUNS) is running work of
 * the pool: shutdown waits for it, and the stats count it. */
static atomic_int caller_task_in, caller_task_go;

static int
caller_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    atomic_store(&caller_task_in, 1);
    for (int ms = 0; ms < LIVENESS_MS && !atomic_load(&caller_task_go); ms++)
        sleep_ms(1);
    return 0;
}

static void *
submit_caller_task(void *arg)
{
    (void)arg;
    (void)pk_threadpool_submit(the_pool, caller_task, NULL, NULL);
    return NULL;
}

static void
test_shutdown_waits_for_a_caller_run_task(void **state)
{
    pk_threadpool_options o = { .max_threads = 1, .queue_size = 1,
                                .full_policy = PK_FULL_CALLER_RUNS };
    pk_threadpool_stats st;
    pthread_t th;

    (void)state;
    tp_gate_reset();
    atomic_store(&caller_task_in, 0);
    atomic_store(&caller_task_go, 0);
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, tp_gated_task, NULL, NULL),
                     0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    /* The worker is held: these fill the queue (of 2: rounded up to a
     * power of two)... */
    for (int i = 0; i < 2; i++)
        assert_int_equal(
            pk_threadpool_submit(the_pool, tp_count_task, NULL, NULL), 0);
    /* ...and this one runs on its submitting thread. */
    assert_int_equal(pthread_create(&th, NULL, submit_caller_task, NULL), 0);
    assert_int_equal(tp_wait_at_least(&caller_task_in, 1), 1);
    tp_gate_set(1);
    assert_int_equal(tp_wait_at_least(&tp_counter, 2), 2);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_true(st.running >= 1); /* the caller's (the worker may lag) */
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN, 50),
                     PK_ETIMEDOUT);
    atomic_store(&caller_task_go, 1);
    pthread_join(th, NULL);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            PK_WAIT_FOREVER),
                     0);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.submitted, 4);
    assert_int_equal(st.completed, 4);
    assert_int_equal(st.running, 0);
    pk_threadpool_destroy(the_pool);
}

/* A map inside a task, on the pool it runs on: with one worker, only a
 * wait that helps runs the map's units (they queue behind this task). */
#define MAP_N 40

static int
plus_one(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    out->value = (void *)((uintptr_t)arg + 1);
    return 0;
}

static int
task_maps(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_map_options o = { .timeout_ms = LIVENESS_MS, .chunk = 4 };
    void *args[MAP_N], *res[MAP_N];
    pk_executor *ex;
    int rc;

    (void)arg;
    (void)self;
    (void)out;
    for (uintptr_t i = 0; i < MAP_N; i++)
        args[i] = (void *)i;
    rc = pk_threadpool_executor(the_pool, &ex);
    if (rc == 0) {
        rc = pk_map_array(ex, plus_one, args, MAP_N, res, NULL, NULL, &o);
        pk_executor_destroy(ex);
    }
    for (uintptr_t i = 0; rc == 0 && i < MAP_N; i++)
        if ((uintptr_t)res[i] != i + 1)
            rc = PK_ETASK;
    return rc ? pk_error_set(err, rc, 0, "map: %s", pk_strerror(rc)) : 0;
}

static void
test_map_inside_a_task_of_its_pool_helps(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, task_maps, NULL, &f), 0);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
    pk_threadpool_destroy(the_pool);
}

/* ---- a waiting task is not finished ----------------------------------- */

static pk_future *gate_fut;
static atomic_int waiter_in, waiter_out;

/* Waits on gate_fut (completed by the test), helping meanwhile. */
static int
waits_on_gate(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    atomic_store(&waiter_in, 1);
    int rc = pk_future_wait(gate_fut, LIVENESS_MS);
    atomic_store(&waiter_out, 1);
    return rc ? pk_error_set(err, rc, 0, "gate: %s", pk_strerror(rc)) : 0;
}

/* A task that waits runs 100 queued tasks meanwhile (more than a worker
 * counts before it publishes): a draining shutdown must still wait for
 * the waiting task itself (a review found it counted finished when it
 * was taken, and published with the tasks run inside its wait). */
static void
test_waiting_task_keeps_shutdown_waiting(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_threadpool_stats st;
    pk_future *f;

    (void)state;
    tp_gate_reset();
    atomic_store(&waiter_in, 0);
    atomic_store(&waiter_out, 0);
    assert_int_equal(pk_future_create(&gate_fut, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, waits_on_gate, NULL, &f),
                     0);
    for (int i = 0; i < LIVENESS_MS && !atomic_load(&waiter_in); i++)
        sleep_ms(1);
    for (int i = 0; i < 100; i++)
        assert_int_equal(
            pk_threadpool_submit(the_pool, tp_count_task, NULL, NULL), 0);
    for (int i = 0; i < LIVENESS_MS && atomic_load(&tp_counter) < 100; i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&tp_counter), 100); /* run by the waiter */
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN, 50),
                     PK_ETIMEDOUT);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.running, 1);
    assert_int_equal(atomic_load(&waiter_out), 0);
    assert_int_equal(pk_future_complete(gate_fut, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            LIVENESS_MS), 0);
    assert_int_equal(atomic_load(&waiter_out), 1);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
    pk_future_release(gate_fut);
    pk_threadpool_destroy(the_pool);
}

/* ---- shutdown and destroy from a task of the pool ---------------------- */

static int
shuts_own_pool(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    out->value = (void *)(intptr_t)pk_threadpool_shutdown(
        the_pool, PK_SHUTDOWN_DRAIN, (int)(intptr_t)arg);
    pk_threadpool_destroy(the_pool); /* must not free it under us */
    return 0;
}

/* A task that shuts its own pool down would wait for itself: the pool
 * closes, the call says PK_EDEADLK at once whatever its timeout, and a
 * destroy from the task frees nothing (a review found both hanging). */
static void
test_shutdown_from_a_task_of_the_pool_does_not_hang(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_result r;
    pk_future *f;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, shuts_own_pool,
                                          (void *)(intptr_t)PK_WAIT_FOREVER,
                                          &f), 0);
    assert_int_equal(pk_future_wait(f, LIVENESS_MS), 0);
    assert_int_equal(pk_future_result(f, &r), 0);
    assert_int_equal((int)(intptr_t)r.value, PK_EDEADLK);
    pk_future_release(f);
    assert_int_equal(pk_threadpool_submit(the_pool, tp_count_task, NULL,
                                          NULL), PK_ESHUTDOWN);
    pk_threadpool_destroy(the_pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_awaited_by_polling_runs_on_an_idle_worker),
        cmocka_unit_test(test_wait_any_in_a_task_helps),
        cmocka_unit_test(test_task_is_watched_after_a_nested_child),
        cmocka_unit_test(test_block_policy_inside_a_task_does_not_deadlock),
        cmocka_unit_test(test_shutdown_waits_for_a_caller_run_task),
        cmocka_unit_test(test_map_inside_a_task_of_its_pool_helps),
        cmocka_unit_test(test_waiting_task_keeps_shutdown_waiting),
        cmocka_unit_test(test_shutdown_from_a_task_of_the_pool_does_not_hang),
    };

    return cmocka_run_group_tests_name("threadpool_nested", tests, NULL,
                                       NULL);
}
