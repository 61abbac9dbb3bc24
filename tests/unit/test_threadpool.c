/* tests/unit/test_threadpool.c - the thread pool: results, both kinds of
 * task, full-queue policies, shutdown, bad input, and many submitters. */
#define _GNU_SOURCE /* glob-free /proc reading helpers use POSIX only */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include "test_util.h"
#include "tp_tasks.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
setup(void **state)
{
    (void)state;
    tp_gate_reset();
    return 0;
}

static void
test_submit_returns_results_through_futures(void **state)
{
    pk_threadpool *tp;
    pk_future *f[100];
    pk_threadpool_options o = { .max_threads = 2 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (uintptr_t i = 0; i < 100; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_square, (void *)i, &f[i]),
                         0);
    assert_int_equal(pk_future_wait_all(f, 100, 10000), 0);
    for (uintptr_t i = 0; i < 100; i++) {
        pk_result r;
        assert_int_equal(pk_future_result(f[i], &r), 0);
        assert_int_equal((uintptr_t)r.value, i * i);
        pk_future_release(f[i]);
    }
    pk_threadpool_destroy(tp);
}

static int
named_sum(const void *data, size_t len, pk_future *self, pk_result *out,
          pk_error *err)
{
    const unsigned char *b = data;
    uintptr_t s = 0;

    (void)self;
    (void)err;
    for (size_t i = 0; i < len; i++)
        s += b[i];
    out->value = (void *)s;
    return 0;
}

static void
test_named_task_runs_on_a_copy_of_its_bytes(void **state)
{
    pk_registry *reg;
    pk_threadpool *tp;
    pk_future *f;
    pk_result r;
    unsigned char bytes[4] = { 1, 2, 3, 4 };
    pk_task t = { .name = "sum", .data = bytes, .len = sizeof bytes };

    (void)state;
    assert_int_equal(pk_registry_create(&reg), 0);
    assert_int_equal(pk_registry_register(reg, "sum", named_sum), 0);
    pk_threadpool_options o = { .max_threads = 2, .registry = reg };
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    tp_gate_set(0);
    assert_int_equal(pk_threadpool_submit_task(tp, &t, &f), 0);
    memset(bytes, 0, sizeof bytes); /* the pool copied them */
    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, &r), 0);
    assert_int_equal((uintptr_t)r.value, 10);
    pk_future_release(f);
    pk_threadpool_destroy(tp);
    pk_registry_destroy(reg);
}

static _Atomic int unread_events;

static void
on_event(void *user, const pk_event *ev)
{
    (void)user;
    if (ev->kind == PK_EVENT_FUTURE_UNREAD)
        atomic_fetch_add(&unread_events, 1);
}

static void
test_fire_and_forget_failure_reaches_event_hook(void **state)
{
    pk_threadpool *tp;
    pk_threadpool_options o = { .max_threads = 1, .event = on_event };

    (void)state;
    atomic_store(&unread_events, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&unread_events), 1);
    pk_threadpool_destroy(tp);
}

static void
test_failed_task_reports_its_error(void **state)
{
    pk_threadpool *tp;
    pk_future *f;
    pk_error e;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, &f), 0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, NULL), PK_ETASK);
    assert_int_equal(pk_future_error(f, &e), 0);
    assert_string_equal(e.msg, "task says no");
    pk_future_release(f);
    pk_threadpool_destroy(tp);
}

/* A pool of one worker and a queue of 2: the worker blocks on the gate,
 * two tasks fill the queue, the next meets the full policy. */
static pk_threadpool *
full_pool(int policy, int timeout_ms)
{
    pk_threadpool *tp;
    pk_threadpool_options o = { .max_threads = 1, .queue_size = 2,
                                .full_policy = policy,
                                .submit_timeout_ms = timeout_ms };

    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    assert_int_equal(atomic_load(&tp_gate_arrived), 1);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL), 0);
    return tp;
}

static void
release_full_pool(pk_threadpool *tp)
{
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
}

static void
test_full_queue_policies(void **state)
{
    pk_threadpool *tp;
    pk_threadpool_stats st;
    struct timespec t0, t1;

    (void)state;
    tp = full_pool(PK_FULL_TRY, 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL),
                     PK_EAGAIN);
    release_full_pool(tp);
    assert_int_equal(atomic_load(&tp_counter), 2);

    atomic_store(&tp_counter, 0);
    tp_gate_set(0);
    atomic_store(&tp_gate_arrived, 0);
    tp = full_pool(PK_FULL_REJECT, 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL),
                     PK_EFULL);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.rejected, 1);
    release_full_pool(tp);

    atomic_store(&tp_counter, 0);
    tp_gate_set(0);
    atomic_store(&tp_gate_arrived, 0);
    tp = full_pool(PK_FULL_CALLER_RUNS, 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL), 0);
    assert_int_equal(atomic_load(&tp_counter), 1); /* ran here, at once */
    release_full_pool(tp);

    tp_gate_set(0);
    atomic_store(&tp_gate_arrived, 0);
    tp = full_pool(PK_FULL_BLOCK, 50);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL),
                     PK_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true((t1.tv_sec - t0.tv_sec) * 1000000000L +
                    (t1.tv_nsec - t0.tv_nsec) >= 50000000L);
    release_full_pool(tp);
}

static void
test_shutdown_cancel_cancels_queued_and_waits_for_running(void **state)
{
    pk_threadpool *tp;
    pk_future *running, *queued;
    pk_threadpool_options o = { .max_threads = 1 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &running), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, &queued), 0);
    /* The running task outlives the deadline: PK_ETIMEDOUT, pool valid. */
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, 20),
                     PK_ETIMEDOUT);
    assert_int_equal(pk_future_state_get(queued), PK_FUTURE_CANCELLED);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL),
                     PK_ESHUTDOWN);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, 10000),
                     0);
    assert_int_equal(pk_future_state_get(running), PK_FUTURE_DONE);
    assert_int_equal(atomic_load(&tp_counter), 0);
    pk_future_release(running);
    pk_future_release(queued);
    pk_threadpool_destroy(tp);
}

static void
test_shutdown_drain_runs_everything_queued(void **state)
{
    pk_threadpool *tp;
    pk_threadpool_stats st;
    pk_task tasks[500];

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    for (int i = 0; i < 500; i++)
        tasks[i] = (pk_task){ .fn = tp_count_task };
    assert_int_equal(pk_threadpool_submit_many(tp, tasks, 500, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&tp_counter), 500);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.submitted, 500);
    assert_int_equal(st.completed, 500);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    pk_threadpool_destroy(tp);
}

static void
test_submit_many_is_all_or_nothing(void **state)
{
    pk_threadpool *tp;
    pk_task tasks[3] = { { .fn = tp_count_task }, { .fn = tp_count_task },
                         { .fn = tp_count_task } };
    pk_future *f[3];
    pk_threadpool_options o = { .max_threads = 1, .queue_size = 2,
                                .full_policy = PK_FULL_REJECT };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    assert_int_equal(pk_threadpool_submit_many(tp, tasks, 3, f), PK_EFULL);
    for (int i = 0; i < 3; i++)
        assert_null(f[i]);
    /* More than the queue holds never fits: at once, even if it blocks. */
    o.full_policy = PK_FULL_BLOCK;
    pk_threadpool *blocking;
    assert_int_equal(pk_threadpool_create(&blocking, &o), 0);
    assert_int_equal(pk_threadpool_submit_many(blocking, tasks, 3, f),
                     PK_EFULL);
    assert_null(f[0]);
    pk_threadpool_destroy(blocking);
    assert_int_equal(pk_threadpool_submit_many(tp, tasks, 2, f), 0);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait_all(f, 2, 10000), 0);
    assert_int_equal(atomic_load(&tp_counter), 2);
    pk_future_release(f[0]);
    pk_future_release(f[1]);
    pk_threadpool_destroy(tp);
}

static void
test_worker_threads_are_named(void **state)
{
    pk_threadpool *tp;
    pk_future *f;
    DIR *d;
    struct dirent *e;
    int named = 0;
    pk_threadpool_options o = { .max_threads = 1 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &f), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    d = opendir("/proc/self/task");
    assert_non_null(d);
    while ((e = readdir(d))) {
        char path[300], comm[64] = "";
        FILE *fp;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        fp = fopen(path, "r");
        if (!fp)
            continue;
        if (fgets(comm, sizeof comm, fp) && strncmp(comm, "pk-worker", 9) == 0)
            named++;
        fclose(fp);
    }
    closedir(d);
    assert_true(named >= 1);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    pk_future_release(f);
    pk_threadpool_destroy(tp);
}

static void
test_bad_input_returns_einval(void **state)
{
    pk_threadpool *tp;
    pk_threadpool_stats st;
    pk_executor *ex;
    pk_task bad = { 0 };
    pk_threadpool_options o = { .min_threads = 3, .max_threads = 2 };

    (void)state;
    assert_int_equal(pk_threadpool_create(NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o = (pk_threadpool_options){ .full_policy = 9 };
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o = (pk_threadpool_options){ .keep_alive_ms = -5 };
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    /* "No limit" as SIZE_MAX: counts that would wrap are refused. */
    o = (pk_threadpool_options){ .max_threads = SIZE_MAX };
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o = (pk_threadpool_options){ .max_threads = PK_THREADPOOL_THREADS_MAX + 1 };
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o = (pk_threadpool_options){ .min_threads = PK_THREADPOOL_THREADS_MAX + 1 };
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    assert_int_equal(pk_threadpool_submit(NULL, tp_count_task, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_threadpool_stats_get(NULL, &st), PK_EINVAL);
    assert_int_equal(pk_threadpool_shutdown(NULL, 0, 0), PK_EINVAL);
    assert_int_equal(pk_threadpool_executor(NULL, &ex), PK_EINVAL);
    pk_threadpool_destroy(NULL);
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    assert_int_equal(pk_threadpool_submit(tp, NULL, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_submit_task(tp, &bad, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_submit_many(tp, NULL, 3, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_resize(tp, 3, 2), PK_EINVAL);
    assert_int_equal(pk_threadpool_resize(tp, 0, SIZE_MAX), PK_EINVAL);
    assert_int_equal(
        pk_threadpool_resize(tp, 0, PK_THREADPOOL_THREADS_MAX + 1), PK_EINVAL);
    /* The bound itself fits the core's (PK_POOL_SIZE_MAX). */
    assert_int_equal(pk_threadpool_resize(tp, 0, PK_THREADPOOL_THREADS_MAX),
                     0);
    assert_int_equal(pk_threadpool_resize(tp, 0, 2), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, 7, 0), PK_EINVAL);
    assert_int_equal(pk_threadpool_shutdown(tp, 0, -5), PK_EINVAL);
    assert_int_equal(pk_threadpool_stats_get(tp, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 1000), 0);
    assert_int_equal(pk_threadpool_resize(tp, 1, 2), PK_ESHUTDOWN);
    pk_threadpool_destroy(tp);
}

/* Each rule of the options names its field; a good struct clears err. */
static void
test_options_check_names_the_field(void **state)
{
    static const struct {
        pk_threadpool_options o;
        const char *field;
    } cases[] = {
        { { .min_threads = 3, .max_threads = 2 }, "min_threads" },
        { { .full_policy = 9 }, "full_policy" },
        { { .submit_timeout_ms = -7 }, "submit_timeout_ms" },
        { { .keep_alive_ms = -5 }, "keep_alive_ms" },
        { { .slow_task_ms = -5 }, "slow_task_ms" },
        { { .stuck_after_ms = -5 }, "stuck_after_ms" },
        { { .max_threads = PK_THREADPOOL_THREADS_MAX + 1 }, "max_threads" },
        { { .queue_size = ((size_t)1 << 30) + 1 }, "queue_size" },
    };
    pk_threadpool_options good = { .max_threads = 2 };
    pk_error err;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0x5a, sizeof err);
        assert_int_equal(pk_threadpool_options_check(&cases[i].o, &err),
                         PK_EINVAL);
        assert_int_equal(err.code, PK_EINVAL);
        assert_non_null(strstr(err.msg, cases[i].field));
    }
    assert_int_equal(pk_threadpool_options_check(NULL, &err), PK_EINVAL);
    assert_int_equal(pk_threadpool_options_check(&cases[0].o, NULL),
                     PK_EINVAL);
    memset(&err, 0x5a, sizeof err);
    assert_int_equal(pk_threadpool_options_check(&good, &err), 0);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");
}

static void
test_executor_view_runs_tasks(void **state)
{
    pk_threadpool *tp;
    pk_executor *ex;
    pk_future *f;
    pk_result r;
    pk_task t = { .fn = tp_square, .arg = (void *)9 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    assert_int_equal(pk_threadpool_executor(tp, &ex), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, &r), 0);
    assert_int_equal((uintptr_t)r.value, 81);
    pk_future_release(f);
    pk_executor_destroy(ex);
    pk_threadpool_destroy(tp);
}

/* Many submitters, resizes and waits at once: nothing lost, counts add
 * up. Workers record nothing; the main thread checks after joining. */
struct sub_arg {
    pk_threadpool *tp;
    int n;
    _Atomic int *errors;
};

static void *
submitter(void *p)
{
    struct sub_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        pk_future *f = NULL;
        int rc = pk_threadpool_submit(a->tp, tp_count_task, NULL,
                                      (i % 3) ? NULL : &f);
        if (rc)
            atomic_fetch_add(a->errors, 1);
        if (f) {
            if (pk_future_wait(f, 30000) != 0)
                atomic_fetch_add(a->errors, 1);
            pk_future_release(f);
        }
        if (i % 1000 == 0)
            pk_threadpool_resize(a->tp, 0, 1 + (size_t)(i / 1000) % 3);
    }
    return NULL;
}

static void
test_many_submitters_lose_nothing(void **state)
{
    pk_threadpool *tp;
    pthread_t th[4];
    struct sub_arg a[4];
    _Atomic int errors = 0;
    const char *sc = getenv("PK_STRESS_SCALE");
    double scale = sc ? atof(sc) : 1.0;
    int n = (int)(50000 * (scale > 0 ? scale : 1.0));
    pk_threadpool_stats st;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (struct sub_arg){ tp, n, &errors };
        pthread_create(&th[i], NULL, submitter, &a[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 60000), 0);
    assert_int_equal(atomic_load(&errors), 0);
    assert_int_equal(atomic_load(&tp_counter), 4 * n);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.submitted, (uint64_t)4 * n);
    assert_int_equal(st.completed, (uint64_t)4 * n);
    pk_threadpool_destroy(tp);
}

/* ---- waiting on tasks of the same pool --------------------------------- */

struct rec_arg {
    pk_threadpool *tp;
    int depth;
};

static struct rec_arg rec_args[8][PK_THREADPOOL_NEST_MAX + 1];

/* Each task submits a child one level deeper and waits for it: the
 * waiting worker runs the child (and whatever is queued before it) on
 * its own stack, up to PK_THREADPOOL_NEST_MAX deep. */
static int
recursive_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct rec_arg *a = arg;
    pk_future *child;
    pk_result r;
    int rc;

    (void)self;
    if (a->depth == 0) {
        out->value = (void *)(uintptr_t)1;
        return 0;
    }
    rc = pk_threadpool_submit(a->tp, recursive_task, a + 1, &child);
    if (rc)
        return rc;
    rc = pk_future_wait(child, 30000);
    if (rc == 0)
        rc = pk_future_result(child, &r);
    pk_future_release(child);
    if (rc)
        return pk_error_set(err, rc, 0, "child failed: %s", pk_err_name(rc));
    out->value = (void *)((uintptr_t)r.value + 1);
    return 0;
}

static void
run_chains(size_t threads, int chains, int depth)
{
    pk_threadpool *tp;
    pk_future *f[8];
    pk_threadpool_options o = { .max_threads = threads };

    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < chains; i++) {
        for (int d = 0; d <= depth; d++)
            rec_args[i][d] = (struct rec_arg){ tp, depth - d };
        assert_int_equal(
            pk_threadpool_submit(tp, recursive_task, &rec_args[i][0], &f[i]),
            0);
    }
    assert_int_equal(pk_future_wait_all(f, (size_t)chains, 60000), 0);
    for (int i = 0; i < chains; i++) {
        pk_result r;
        assert_int_equal(pk_future_result(f[i], &r), 0);
        assert_int_equal((uintptr_t)r.value, (uintptr_t)depth + 1);
        pk_future_release(f[i]);
    }
    pk_threadpool_destroy(tp);
}

/* A waiting parent runs its child on its own stack: chains as deep as
 * the nesting bound on one worker, and eight chains of 11 on two workers
 * (helping with queued tasks in arrival order would pile the other
 * chains' tasks on each stack: 40 deep). */
static void
test_workers_waiting_on_children_run_them(void **state)
{
    (void)state;
    run_chains(1, 1, PK_THREADPOOL_NEST_MAX);
    run_chains(2, 8, 10);
    run_chains(1, 8, 10);
}

/* A waits on B's future and B on A's: a true cycle. */
struct cyc {
    pk_future *_Atomic other;
    _Atomic int started;
    int rc;
};

static struct cyc cyc_a, cyc_b;

static int
cycle_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct cyc *me = arg;
    pk_future *other;

    (void)self;
    (void)out;
    (void)err;
    atomic_fetch_add(&me->started, 1);
    while (!(other = atomic_load(&me->other)))
        sched_yield();
    me->rc = pk_future_wait(other, 10000);
    return me->rc == 0 ? 0 : me->rc;
}

static void
run_cycle(size_t threads)
{
    pk_threadpool *tp;
    pk_future *fa, *fb;
    pk_threadpool_options o = { .max_threads = threads };

    memset(&cyc_a, 0, sizeof cyc_a);
    memset(&cyc_b, 0, sizeof cyc_b);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, cycle_task, &cyc_a, &fa), 0);
    assert_int_equal(pk_threadpool_submit(tp, cycle_task, &cyc_b, &fb), 0);
    atomic_store(&cyc_a.other, fb);
    atomic_store(&cyc_b.other, fa);
    assert_int_equal(pk_future_wait(fa, 30000), 0);
    assert_int_equal(pk_future_wait(fb, 30000), 0);
    /* One of them saw the cycle; the other then saw its future fail. */
    assert_true(cyc_a.rc == PK_EDEADLK || cyc_b.rc == PK_EDEADLK);
    assert_int_not_equal(cyc_a.rc, PK_ETIMEDOUT);
    assert_int_not_equal(cyc_b.rc, PK_ETIMEDOUT);
    pk_future_release(fa);
    pk_future_release(fb);
    pk_threadpool_destroy(tp);
}

/* B runs nested on A's stack and waits on A, which cannot finish before
 * B returns. (A and B on two workers, each waiting on the other, is not
 * looked for: threadpool.h.) */
static void
test_true_cycle_gets_edeadlk(void **state)
{
    (void)state;
    run_cycle(1);
}

/* ---- per-task limits, slow and stuck tasks, timing stats ------------- */

static void
test_task_not_started_in_time_is_dropped(void **state)
{
    pk_threadpool *tp;
    pk_future *f;
    pk_threadpool_stats st;
    pk_task t = { .fn = tp_count_task };
    pk_task_options lim = { .start_within_ms = 20 };
    pk_threadpool_options o = { .max_threads = 1 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    assert_int_equal(pk_threadpool_submit_opts(tp, &t, &lim, &f), 0);
    sleep_ms(60);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, NULL), PK_ETIMEDOUT);
    assert_int_equal(atomic_load(&tp_counter), 0); /* it never ran */
    /* Counts are published when the worker finds the queue empty. */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
        if (st.expired == 1)
            break;
        sleep_ms(10);
    }
    assert_int_equal(st.expired, 1);
    pk_future_release(f);
    lim.start_within_ms = -1;
    assert_int_equal(pk_threadpool_submit_opts(tp, &t, &lim, NULL),
                     PK_EINVAL);
    pk_threadpool_destroy(tp);
}

static _Atomic int saw_flag;

static int
until_cancelled(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)out;
    (void)err;
    for (int i = 0; i < 10000; i++) { /* at most ~10 s */
        if (pk_future_cancel_requested(self)) {
            atomic_store(&saw_flag, 1);
            return PK_ECANCELED;
        }
        sleep_ms(1);
    }
    return 0;
}

static void
test_task_running_past_its_limit_is_flagged(void **state)
{
    pk_threadpool *tp;
    pk_future *f;
    pk_task t = { .fn = until_cancelled };
    pk_task_options lim = { .run_limit_ms = 30 };

    (void)state;
    atomic_store(&saw_flag, 0);
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    assert_int_equal(pk_threadpool_submit_opts(tp, &t, &lim, &f), 0);
    assert_int_equal(pk_future_wait(f, 20000), 0);
    assert_int_equal(atomic_load(&saw_flag), 1);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    pk_future_release(f);
    pk_threadpool_destroy(tp);
}

static _Atomic int slow_events, stuck_events;

static void
on_watch_event(void *user, const pk_event *ev)
{
    (void)user;
    if (ev->kind == PK_EVENT_SLOW_TASK)
        atomic_fetch_add(&slow_events, 1);
    if (ev->kind == PK_EVENT_HELD_TOO_LONG)
        atomic_fetch_add(&stuck_events, 1);
}

static void
test_slow_task_raises_one_event(void **state)
{
    pk_threadpool *tp;
    pk_future *f;
    pk_threadpool_options o = { .max_threads = 1, .slow_task_ms = 20,
                                .event = on_watch_event };

    (void)state;
    atomic_store(&slow_events, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_sleep_task, (void *)150, &f),
                     0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    pk_future_release(f);
    assert_int_equal(pk_threadpool_submit(tp, tp_sleep_task, (void *)0, &f), 0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    pk_future_release(f);
    pk_threadpool_destroy(tp);
    assert_int_equal(atomic_load(&slow_events), 1);
}

static void
test_stuck_worker_is_replaced(void **state)
{
    pk_threadpool *tp;
    pk_future *stuck, *next;
    pk_threadpool_stats st;
    pk_threadpool_options o = { .max_threads = 1, .stuck_after_ms = 50,
                                .event = on_watch_event };

    (void)state;
    atomic_store(&stuck_events, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &stuck), 0);
    tp_wait_at_least(&tp_gate_arrived, 1);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, &next), 0);
    /* With one thread, only a replacement can run it while the first
     * is stuck on the gate. */
    assert_int_equal(pk_future_wait(next, 20000), 0);
    assert_int_equal(atomic_load(&tp_counter), 1);
    assert_int_equal(pk_future_state_get(stuck), PK_FUTURE_RUNNING);
    assert_int_equal(atomic_load(&stuck_events), 1);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.detached, 1);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(stuck, 10000), 0);
    assert_int_equal(pk_future_state_get(stuck), PK_FUTURE_DONE);
    pk_future_release(stuck);
    pk_future_release(next);
    pk_threadpool_destroy(tp); /* waits for the stuck thread to exit */
}

static void
test_stats_time_queue_wait_and_run(void **state)
{
    pk_threadpool *tp;
    pk_threadpool_stats st;
    pk_threadpool_options o = { .max_threads = 2 };

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(
            pk_threadpool_submit(tp, tp_sleep_task, (void *)1, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 20000),
                     0);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_true(st.run_p50_ns >= 1000000u); /* each slept 1 ms */
    assert_true(st.run_p99_ns >= st.run_p50_ns);
    assert_true(st.queue_wait_p99_ns >= st.queue_wait_p50_ns);
    assert_true(st.queue_wait_p99_ns > 0); /* 64 tasks, 2 threads */
    pk_threadpool_destroy(tp);
}

#define T(f) cmocka_unit_test_setup(f, setup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_submit_returns_results_through_futures),
        T(test_named_task_runs_on_a_copy_of_its_bytes),
        T(test_fire_and_forget_failure_reaches_event_hook),
        T(test_failed_task_reports_its_error),
        T(test_full_queue_policies),
        T(test_shutdown_cancel_cancels_queued_and_waits_for_running),
        T(test_shutdown_drain_runs_everything_queued),
        T(test_submit_many_is_all_or_nothing),
        T(test_worker_threads_are_named),
        T(test_bad_input_returns_einval),
        T(test_options_check_names_the_field),
        T(test_executor_view_runs_tasks),
        T(test_many_submitters_lose_nothing),
        T(test_workers_waiting_on_children_run_them),
        T(test_true_cycle_gets_edeadlk),
        T(test_task_not_started_in_time_is_dropped),
        T(test_task_running_past_its_limit_is_flagged),
        T(test_slow_task_raises_one_event),
        T(test_stuck_worker_is_replaced),
        T(test_stats_time_queue_wait_and_run),
    };
    return cmocka_run_group_tests_name("threadpool", tests, NULL, NULL);
}
