/* tests/unit/test_threadpool_standin.c - the thread pool when workers
 * cannot be started: callers stand in (a submit that finds no worker, a
 * draining shutdown), never the core's helper thread; a failed start is
 * retried while tasks wait.
 *
 * Tasks never call cmocka: they record the thread they ran on and what
 * went wrong in atomics, and the main thread asserts (STYLE.md section
 * 5). Waits poll with a generous limit (a liveness bound, never a speed
 * claim). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"

#include "test_util.h"
#include "tp_tasks.h"

/* Past 2 * PK__TP_NEST (32), where a worker stops helping: a stand-in
 * must go on (a chain of 40 hung at 32 once). */
#define CHAIN_DEPTH 40
#define N_PLAIN 40
#define N_FAN 3

static pthread_t main_thread;
static pk_threadpool *the_pool;
static atomic_int ran_here, ran_elsewhere, task_bad;

static void
note_thread(void)
{
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&ran_here, 1);
    else
        atomic_fetch_add(&ran_elsewhere, 1);
}

/* out->value = arg + 1. */
static int
plain_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    note_thread();
    out->value = (void *)((uintptr_t)arg + 1);
    return 0;
}

/* Submits its child (arg - 1) and waits for it: out->value = the depth
 * of the chain below it, counted by the children themselves. */
static int
chain_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    uintptr_t d = (uintptr_t)arg;
    pk_future *child;
    pk_result r;

    (void)self;
    (void)err;
    note_thread();
    if (d == 0) {
        out->value = 0;
        return 0;
    }
    if (pk_threadpool_submit(the_pool, chain_task, (void *)(d - 1),
                             &child) != 0) {
        atomic_fetch_add(&task_bad, 1);
        return PK_ETASK;
    }
    if (pk_future_wait(child, PK_WAIT_FOREVER) != 0 ||
        pk_future_result(child, &r) != 0) {
        atomic_fetch_add(&task_bad, 1);
        pk_future_release(child);
        return PK_ETASK;
    }
    out->value = (void *)((uintptr_t)r.value + 1);
    pk_future_release(child);
    return 0;
}

/* Submits N_FAN plain children at once and waits for all of them:
 * out->value = the sum of their results. */
static int
fan_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_future *kids[N_FAN];
    uintptr_t sum = 0;

    (void)arg;
    (void)self;
    (void)err;
    note_thread();
    for (int i = 0; i < N_FAN; i++) {
        if (pk_threadpool_submit(the_pool, plain_task, (void *)(uintptr_t)i,
                                 &kids[i]) != 0) {
            atomic_fetch_add(&task_bad, 1);
            for (int k = 0; k < i; k++)
                pk_future_release(kids[k]);
            return PK_ETASK;
        }
    }
    if (pk_future_wait_all(kids, N_FAN, PK_WAIT_FOREVER) != 0)
        atomic_fetch_add(&task_bad, 1);
    for (int i = 0; i < N_FAN; i++) {
        pk_result r;
        if (pk_future_result(kids[i], &r) == 0)
            sum += (uintptr_t)r.value;
        else
            atomic_fetch_add(&task_bad, 1);
        pk_future_release(kids[i]);
    }
    out->value = (void *)sum;
    return 0;
}

static uintptr_t
value_of(pk_future *f)
{
    pk_result r;

    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, &r), 0);
    return (uintptr_t)r.value;
}

static int
setup(void **state)
{
    (void)state;
    tp_gate_reset();
    main_thread = pthread_self();
    atomic_store(&ran_here, 0);
    atomic_store(&ran_elsewhere, 0);
    atomic_store(&task_bad, 0);
    return 0;
}

/* A failed test leaves its gated tasks blocked, and thread creation
 * failing: undo both. */
static int
teardown(void **state)
{
    (void)state;
    pk__thread_fail_next(0);
    tp_gate_set(1);
    for (int i = 0; i < 2000 && atomic_load(&tp_gate_inside) > 0; i++)
        sleep_ms(1);
    return 0;
}

/* ---- creation fails for ever ------------------------------------------- */

/* No worker can ever start: every task, a chain of CHAIN_DEPTH tasks each
 * waiting on its child and a parent waiting on several children among
 * them, runs on the submitting thread before its submit returns (so no
 * task ever ran on the core's helper thread, nor anywhere else), with
 * the right results. */
static void
test_creation_failing_for_ever_runs_every_task_on_the_caller(void **state)
{
    long live0 = settled_live(0);
    pk_threadpool_options o = { .max_threads = 4 };
    pk_future *plain[N_PLAIN], *chain, *fan;
    pk_threadpool_stats st;
    int total;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    pk__thread_fail_next(1000000000);
    for (int i = 0; i < N_PLAIN / 2; i++)
        assert_int_equal(pk_threadpool_submit(the_pool, plain_task,
                                              (void *)(uintptr_t)i,
                                              &plain[i]), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, chain_task,
                                          (void *)(uintptr_t)CHAIN_DEPTH,
                                          &chain), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, fan_task, NULL, &fan),
                     0);
    for (int i = N_PLAIN / 2; i < N_PLAIN; i++)
        assert_int_equal(pk_threadpool_submit(the_pool, plain_task,
                                              (void *)(uintptr_t)i,
                                              &plain[i]), 0);
    /* Done before the submits returned: nothing waits here. */
    assert_int_equal(pk_future_wait(chain, 0), 0);
    assert_int_equal(value_of(chain), CHAIN_DEPTH);
    assert_int_equal(value_of(fan), 1 + 2 + 3);
    for (int i = 0; i < N_PLAIN; i++) {
        assert_int_equal(value_of(plain[i]), (uintptr_t)i + 1);
        pk_future_release(plain[i]);
    }
    pk_future_release(chain);
    pk_future_release(fan);

    total = N_PLAIN + (CHAIN_DEPTH + 1) + (1 + N_FAN);
    assert_int_equal(atomic_load(&task_bad), 0);
    assert_int_equal(atomic_load(&ran_elsewhere), 0);
    assert_int_equal(atomic_load(&ran_here), total);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.threads, 0);
    assert_int_equal(st.completed, (uint64_t)total);
    assert_int_equal(st.submitted, (uint64_t)total);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            10000), 0);
    pk__thread_fail_next(0);
    pk_threadpool_destroy(the_pool);
    assert_int_equal(settled_live(live0), live0);
}

/* ---- a draining shutdown stands in ------------------------------------- */

/* A task queued while a worker lived, which then went (given up as
 * stuck), with no replacement possible: a draining shutdown runs it on
 * the calling thread. */
static void
test_drain_runs_the_queue_when_no_worker_is_left(void **state)
{
    pk_threadpool_options o = { .max_threads = 1, .stuck_after_ms = 50 };
    pk_threadpool_stats st;
    pk_future *gated, *queued;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0); /* + watchdog */
    assert_int_equal(pk_threadpool_submit(the_pool, tp_gated_task, NULL,
                                          &gated), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    pk__thread_fail_next(1000000000);
    /* A worker is alive: queued, not run here. */
    assert_int_equal(pk_threadpool_submit(the_pool, plain_task,
                                          (void *)(uintptr_t)41, &queued),
                     0);
    assert_int_equal(pk_future_wait(queued, 0), PK_EAGAIN);
    /* The watchdog gives the worker up; no replacement can start. (A
     * snapshot reads the thread count first: wait for both.) */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
        if (st.detached == 1 && st.threads == 0)
            break;
        sleep_ms(10);
    }
    assert_int_equal(st.detached, 1);
    assert_int_equal(st.threads, 0);
    tp_gate_set(1); /* the detached worker finishes, and exits */
    assert_int_equal(pk_future_wait(gated, 10000), 0);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            10000), 0);
    assert_int_equal(value_of(queued), 42);
    assert_int_equal(atomic_load(&ran_here), 1);
    assert_int_equal(atomic_load(&ran_elsewhere), 0);
    pk_future_release(gated);
    pk_future_release(queued);
    pk__thread_fail_next(0);
    pk_threadpool_destroy(the_pool);
}

/* ---- retries ------------------------------------------------------------ */

/* The one worker is busy and starting a second fails once: the pool
 * tries again by itself (no further submit), and the second worker runs
 * the queued task while the first is still busy. */
static void
test_failed_start_is_retried_while_tasks_wait(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_threadpool_stats st;
    pk_future *gated, *queued;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, tp_gated_task, NULL,
                                          &gated), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    /* Room for a second worker only now, so that exactly one exists. */
    assert_int_equal(pk_threadpool_resize(the_pool, 0, 2), 0);
    pk__thread_fail_next(1);
    assert_int_equal(pk_threadpool_submit(the_pool, plain_task,
                                          (void *)(uintptr_t)6, &queued), 0);
    assert_int_equal(value_of(queued), 7);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.threads, 2);
    assert_int_equal(atomic_load(&tp_gate_done), 0); /* still busy */
    assert_int_equal(atomic_load(&ran_elsewhere), 1);
    assert_int_equal(pk__thread_fail_next(0), 0); /* the one was used */
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(gated, 10000), 0);
    pk_future_release(gated);
    pk_future_release(queued);
    pk_threadpool_destroy(the_pool);
}

/* ---- the last worker retiring ------------------------------------------ */

static atomic_int exit_hook_in;

static void
slow_exit_hook(void *user)
{
    (void)user;
    atomic_store(&exit_hook_in, 1);
    sleep_ms(300);
}

/* The only worker retires after its keep-alive and runs a slow exit hook,
 * still alive but serving no more, while threads cannot start: a submit
 * then starts nobody, and must run its task itself before it returns
 * (it used to be left queued for nobody, review of session 3). */
static void
test_submit_while_the_last_worker_retires_runs_the_task(void **state)
{
    pk_threadpool_options o = { .max_threads = 1, .keep_alive_ms = 20,
                                .worker_exit = slow_exit_hook };
    pk_future *f;

    (void)state;
    atomic_store(&exit_hook_in, 0);
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    assert_int_equal(pk_threadpool_submit(the_pool, plain_task, NULL, &f), 0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    pk_future_release(f);
    for (int i = 0; i < 10000 && !atomic_load(&exit_hook_in); i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&exit_hook_in), 1);
    pk__thread_fail_next(1000000);
    atomic_store(&ran_here, 0);
    assert_int_equal(pk_threadpool_submit(the_pool, plain_task, NULL, NULL),
                     0);
    assert_int_equal(atomic_load(&ran_here), 1); /* before submit returned */
    pk__thread_fail_next(0);
    pk_threadpool_destroy(the_pool);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_creation_failing_for_ever_runs_every_task_on_the_caller),
        T(test_drain_runs_the_queue_when_no_worker_is_left),
        T(test_failed_start_is_retried_while_tasks_wait),
        T(test_submit_while_the_last_worker_retires_runs_the_task),
    };
    return cmocka_run_group_tests_name("threadpool_standin", tests, NULL,
                                       NULL);
}
