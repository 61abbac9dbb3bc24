/* tests/unit/test_threadpool_nostart.c - the thread pool when workers
 * cannot be started: tasks wait in the queue (never run on the caller),
 * each failed start reaches the event hook, the core retries, and a
 * shutdown whose deadline passes cancels what never ran. Also the wake
 * protocol with its window widened (pk__tp_idle_delay_us): a lost wake
 * shows as a task that never starts, caught by the test's own deadline.
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

#define CHAIN_DEPTH 8
#define N_PLAIN 40
#define N_FAN 3

/* pools/thread/worker.c, test builds only. */
extern _Atomic unsigned pk__tp_idle_delay_us;

static pthread_t main_thread;
static pk_threadpool *the_pool;
static atomic_int ran_here, ran_elsewhere, task_bad, create_failed;

static void
count_events(void *user, const pk_event *ev)
{
    (void)user;
    if (ev->kind == PK_EVENT_CREATE_FAILED)
        atomic_fetch_add(&create_failed, 1);
}

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
    atomic_store(&create_failed, 0);
    return 0;
}

/* A failed test leaves its gated tasks blocked, and thread creation
 * failing: undo both. */
static int
teardown(void **state)
{
    (void)state;
    pk__thread_fail_next(0);
    atomic_store(&pk__tp_idle_delay_us, 0);
    tp_gate_set(1);
    for (int i = 0; i < 2000 && atomic_load(&tp_gate_inside) > 0; i++)
        sleep_ms(1);
    return 0;
}

/* ---- creation fails ------------------------------------------------------ */

/* No worker can start: submits succeed, nothing runs (on the caller or
 * anywhere), each failed start is reported; once threads can start again
 * the queued tasks run, a chain of tasks waiting on their children and a
 * parent waiting on several among them. */
static void
test_tasks_wait_while_no_worker_can_start(void **state)
{
    long live0 = settled_live(0);
    pk_threadpool_options o = { .max_threads = 4, .event = count_events };
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
    assert_int_equal(tp_wait_at_least(&create_failed, 2) >= 2, 1);
    assert_int_equal(atomic_load(&ran_here), 0);
    assert_int_equal(atomic_load(&ran_elsewhere), 0);
    assert_int_equal(pk_future_wait(chain, 0), PK_EAGAIN);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.threads, 0);
    assert_int_equal(st.queued, N_PLAIN + 2);

    pk__thread_fail_next(0); /* the core's next retry succeeds */
    assert_int_equal(value_of(chain), CHAIN_DEPTH);
    assert_int_equal(value_of(fan), 1 + 2 + 3);
    for (int i = 0; i < N_PLAIN; i++) {
        assert_int_equal(value_of(plain[i]), (uintptr_t)i + 1);
        pk_future_release(plain[i]);
    }
    pk_future_release(chain);
    pk_future_release(fan);
    total = N_PLAIN + (CHAIN_DEPTH + 1) + (1 + N_FAN);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN,
                                            10000), 0);
    assert_int_equal(atomic_load(&task_bad), 0);
    assert_int_equal(atomic_load(&ran_here), 0);
    assert_int_equal(atomic_load(&ran_elsewhere), total);
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.completed, (uint64_t)total);
    assert_int_equal(st.submitted, (uint64_t)total);
    pk_threadpool_destroy(the_pool);
    assert_int_equal(settled_live(live0), live0);
}

/* No worker can start and a draining shutdown's deadline passes: what
 * never ran is cancelled (its future says so), and the call says the
 * deadline passed. */
static void
test_shutdown_deadline_cancels_what_never_ran(void **state)
{
    pk_threadpool_options o = { .max_threads = 2 };
    pk_future *f[4];
    pk_threadpool_stats st;

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    pk__thread_fail_next(1000000000);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pk_threadpool_submit(the_pool, plain_task, NULL,
                                              &f[i]), 0);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN, 50),
                     PK_ETIMEDOUT);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pk_future_state_get(f[i]), PK_FUTURE_CANCELLED);
        pk_future_release(f[i]);
    }
    assert_int_equal(pk_threadpool_stats_get(the_pool, &st), 0);
    assert_int_equal(st.cancelled, 4);
    assert_int_equal(st.queued, 0);
    assert_int_equal(pk_threadpool_shutdown(the_pool, PK_SHUTDOWN_DRAIN, 0),
                     0);
    assert_int_equal(atomic_load(&ran_here) + atomic_load(&ran_elsewhere), 0);
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
    pk_threadpool_options o = { .max_threads = 1, .event = count_events };
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
    assert_int_equal(atomic_load(&create_failed), 1);
    assert_int_equal(pk__thread_fail_next(0), 0); /* the one was used */
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(gated, 10000), 0);
    pk_future_release(gated);
    pk_future_release(queued);
    pk_threadpool_destroy(the_pool);
}

/* ---- the wake protocol, its window widened ------------------------------ */

/* Rounds of a few tasks submitted at once to a pool whose workers go idle
 * slowly (a delay between counting themselves idle and giving their
 * lease back): every task must start. A lost wake leaves one queued
 * beside parked workers; the test's deadline (10 s a round) catches it,
 * where the library has no periodic look to hide it. */
static void
test_no_task_is_left_queued_beside_idle_workers(void **state)
{
    pk_threadpool_options o = { .max_threads = 3, .min_threads = 3 };
    enum { ROUNDS = 300, MOST = 4 };
    pk_future *f[MOST];

    (void)state;
    assert_int_equal(pk_threadpool_create(&the_pool, &o), 0);
    atomic_store(&pk__tp_idle_delay_us, 200);
    for (int r = 0; r < ROUNDS; r++) {
        int n = 1 + r % MOST;
        for (int i = 0; i < n; i++)
            assert_int_equal(pk_threadpool_submit(the_pool, plain_task,
                                                  (void *)(uintptr_t)i,
                                                  &f[i]), 0);
        for (int i = 0; i < n; i++) {
            assert_int_equal(value_of(f[i]), (uintptr_t)i + 1);
            pk_future_release(f[i]);
        }
        if (r % 7 == 0)
            sleep_ms(1); /* let workers park between some rounds */
    }
    atomic_store(&pk__tp_idle_delay_us, 0);
    assert_int_equal(atomic_load(&ran_here), 0);
    pk_threadpool_destroy(the_pool);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_tasks_wait_while_no_worker_can_start),
        T(test_shutdown_deadline_cancels_what_never_ran),
        T(test_failed_start_is_retried_while_tasks_wait),
        T(test_no_task_is_left_queued_beside_idle_workers),
    };
    return cmocka_run_group_tests_name("threadpool_nostart", tests, NULL,
                                       NULL);
}
