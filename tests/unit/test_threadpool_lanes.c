/* tests/unit/test_threadpool_lanes.c - lanes: a slow lane with a cap
 * cannot starve quick work, priorities order the start of queued tasks,
 * nested tasks in a full lane run on their parent's worker, caps change
 * while the pool runs, lane executors and submit_many, caller-runs
 * keeps a lane's cap, stats, and bad input. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include "test_util.h"
#include "tp_tasks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static int
reset(void **state)
{
    (void)state;
    tp_gate_reset();
    return 0;
}

static uintptr_t
result_of(pk_future *f)
{
    pk_result r = { 0 };

    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_int_equal(pk_future_result(f, &r), 0);
    return (uintptr_t)r.value;
}

/* ---- a slow lane cannot take every worker ------------------------------ */

/* libuv's trap: slow DNS lookups fill its 4 threads and quick file work
 * waits behind them. Here 20 blocked tasks in a lane capped at 2 leave
 * the other workers to the default lane. */
static void
test_slow_lane_cannot_starve_quick_work(void **state)
{
    pk_lane_options io = { .name = "io", .max_threads = 2 };
    pk_threadpool_options o = { .max_threads = 4, .lanes = &io,
                                .n_lanes = 1 };
    pk_task_options in_io = { 0 };
    pk_task gated = { .fn = tp_gated_task };
    pk_threadpool *tp;
    pk_future *quick;
    pk_lane_stats ls;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_lane(tp, "io", &in_io.lane), 0);
    assert_int_equal(in_io.lane, 1);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pk_threadpool_submit_opts(tp, &gated, &in_io, NULL),
                         0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 2), 2);
    assert_int_equal(pk_threadpool_submit(tp, tp_square, (void *)7, &quick), 0);
    assert_int_equal(result_of(quick), 49);
    pk_future_release(quick);
    /* The quick task finished while the lane still held its 18. */
    assert_int_equal(atomic_load(&tp_gate_done), 0);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, in_io.lane, &ls), 0);
    assert_int_equal(ls.running, 2);
    assert_int_equal(ls.queued, 18);
    assert_int_equal(ls.max_threads, 2);
    assert_int_equal(ls.submitted, 20);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&tp_gate_done), 20);
    assert_int_equal(atomic_load(&tp_gate_most), 2);
    pk_threadpool_destroy(tp);
}

/* ---- priorities --------------------------------------------------------- */

static _Atomic int order_next;
static int order[15];

static int
record_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)out;
    (void)err;
    order[atomic_fetch_add(&order_next, 1)] = (int)(uintptr_t)arg;
    return 0;
}

/* One worker, blocked; then five tasks each in a low, the default and a
 * high lane (submitted low first). Opened, it runs high, default, low. */
static void
test_higher_priority_lane_starts_first(void **state)
{
    pk_lane_options lanes[] = { { .name = "low", .priority = -1 },
                                { .name = "high", .priority = 10 } };
    pk_threadpool_options o = { .max_threads = 1, .lanes = lanes,
                                .n_lanes = 2 };
    pk_task gated = { .fn = tp_gated_task };
    pk_threadpool *tp;
    int by_lane[3] = { 0, 1, 2 }; /* default, low, high */
    int submit_order[3] = { 1, 0, 2 };

    (void)state;
    atomic_store(&order_next, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit_task(tp, &gated, NULL), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 1), 1);
    for (int k = 0; k < 3; k++) {
        pk_task_options to = { .lane = by_lane[submit_order[k]] };
        pk_task t = { .fn = record_task,
                      .arg = (void *)(uintptr_t)to.lane };
        for (int i = 0; i < 5; i++)
            assert_int_equal(pk_threadpool_submit_opts(tp, &t, &to, NULL), 0);
    }
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&order_next), 15);
    for (int i = 0; i < 15; i++) {
        int want = i < 5 ? 2 : i < 10 ? 0 : 1; /* high, default, low */
        if (order[i] != want)
            fail_msg("task %d started from lane %d, wanted lane %d", i,
                     order[i], want);
    }
    pk_threadpool_destroy(tp);
}

/* ---- nested tasks in a full lane ---------------------------------------- */

static pk_threadpool *nest_tp;

/* Waits on a child in its own lane (capped at 1, so no other worker may
 * run it) and on one in the default lane. */
static int
parent_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_task_options same = { .lane = (int)(uintptr_t)arg };
    pk_task child = { .fn = tp_square, .arg = (void *)3 };
    pk_future *a, *b;
    int rc;

    (void)self;
    (void)err;
    rc = pk_threadpool_submit_opts(nest_tp, &child, &same, &a);
    if (rc)
        return rc;
    child.arg = (void *)4;
    rc = pk_threadpool_submit_task(nest_tp, &child, &b);
    if (rc) {
        pk_future_release(a);
        return rc;
    }
    out->value = (void *)(result_of(a) + result_of(b));
    pk_future_release(a);
    pk_future_release(b);
    return 0;
}

static void
test_child_in_a_full_lane_runs_on_its_parents_worker(void **state)
{
    pk_lane_options one = { .name = "one", .max_threads = 1 };
    pk_threadpool_options o = { .max_threads = 3, .lanes = &one,
                                .n_lanes = 1 };
    pk_task_options in_one = { .lane = 1 };
    pk_task parent = { .fn = parent_task, .arg = (void *)1 };
    pk_future *f[4];

    (void)state;
    assert_int_equal(pk_threadpool_create(&nest_tp, &o), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(
            pk_threadpool_submit_opts(nest_tp, &parent, &in_one, &f[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(result_of(f[i]), 9 + 16);
        pk_future_release(f[i]);
    }
    pk_threadpool_destroy(nest_tp);
}

/* ---- caps change while the pool runs ------------------------------------ */

static void
test_raising_a_cap_starts_queued_tasks(void **state)
{
    pk_lane_options slow = { .name = "slow", .max_threads = 1 };
    pk_threadpool_options o = { .max_threads = 4, .lanes = &slow,
                                .n_lanes = 1 };
    pk_task_options in_slow = { .lane = 1 };
    pk_task gated = { .fn = tp_gated_task };
    pk_threadpool *tp;
    pk_lane_stats ls;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(pk_threadpool_submit_opts(tp, &gated, &in_slow, NULL),
                         0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 1), 1);
    sleep_ms(20); /* time for a wrong second start to show */
    assert_int_equal(atomic_load(&tp_gate_inside), 1);
    assert_int_equal(pk_threadpool_lane_set_cap(tp, 1, 3), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 3), 3);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 1, &ls), 0);
    assert_int_equal(ls.running, 3);
    assert_int_equal(ls.max_threads, 3);
    /* No cap but the pool's: all four workers. */
    assert_int_equal(pk_threadpool_lane_set_cap(tp, 1, 0), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 4), 4);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&tp_gate_done), 6);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 1, &ls), 0);
    assert_int_equal(ls.running, 0);
    assert_int_equal(ls.queued, 0);
    pk_threadpool_destroy(tp);
}

/* ---- lane executors and submit_many ------------------------------------- */

static void
test_lane_executor_and_submit_many_queue_in_the_lane(void **state)
{
    pk_lane_options lanes[] = { { .name = "a" },
                                { .name = "b", .queue_size = 8 } };
    pk_threadpool_options o = { .max_threads = 2, .lanes = lanes,
                                .n_lanes = 2 };
    pk_task_options in_b = { .lane = 2 };
    pk_task sq = { .fn = tp_square, .arg = (void *)5 };
    pk_task many[8];
    pk_future *f, *fs[8];
    pk_executor *ex;
    pk_lane_stats ls;
    size_t room;
    pk_threadpool *tp;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_lane_executor(tp, 1, &ex), 0);
    assert_int_equal(pk_executor_submit(ex, &sq, &f), 0);
    assert_int_equal(result_of(f), 25);
    pk_future_release(f);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 1, &ls), 0);
    assert_int_equal(ls.submitted, 1);
    pk_executor_destroy(ex);
    /* Lane b's own queue holds 8: nine at once do not fit. */
    assert_int_equal(pk_threadpool_lane_executor(tp, 2, &ex), 0);
    assert_int_equal(pk_executor_capacity(ex, &room), 0);
    assert_int_equal(room, 8);
    pk_executor_destroy(ex);
    for (int i = 0; i < 8; i++)
        many[i] = (pk_task){ .fn = tp_square, .arg = (void *)(uintptr_t)i };
    assert_int_equal(
        pk_threadpool_submit_many_opts(tp, many, 8, &in_b, fs), 0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(result_of(fs[i]), (uintptr_t)(i * i));
        pk_future_release(fs[i]);
    }
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 2, &ls), 0);
    assert_int_equal(ls.submitted, 8);
    pk_threadpool_stats st;
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.submitted, 9);
    pk_threadpool_destroy(tp);
}

/* ---- caller-runs keeps the cap ------------------------------------------ */

static atomic_int x_ran, x_saw_inside;

/* Notes that it ran, and how many gated tasks (all of lane io) were
 * inside then. */
static int
io_x_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    atomic_store(&x_saw_inside, atomic_load(&tp_gate_inside));
    atomic_fetch_add(&x_ran, 1);
    return 0;
}

struct cr_submit {
    pk_threadpool *tp;
    int lane;
    int rc;
    pk_future *f;
    atomic_int done;
};

static void *
cr_submit_main(void *arg)
{
    struct cr_submit *c = arg;
    pk_task_options to = { .lane = c->lane };
    pk_task x = { .fn = io_x_task };

    c->rc = pk_threadpool_submit_opts(c->tp, &x, &to, &c->f);
    atomic_store(&c->done, 1);
    return NULL;
}

/* Lane io (cap 1, 4 queued at most) with its one place held by a blocked
 * task and its queue full: under PK_FULL_CALLER_RUNS the submitter
 * neither runs the task beside the blocked one (two in a lane capped at
 * 1) nor fails; it waits, then runs it in the lane's place or queues
 * it. Returns the pool, its lane in *lane. */
static pk_threadpool *
full_capped_lane(int submit_timeout_ms, int *lane)
{
    pk_lane_options io = { .name = "io", .max_threads = 1,
                           .queue_size = 4 };
    pk_threadpool_options o = { .max_threads = 4, .lanes = &io,
                                .n_lanes = 1,
                                .full_policy = PK_FULL_CALLER_RUNS,
                                .submit_timeout_ms = submit_timeout_ms };
    pk_task gated = { .fn = tp_gated_task };
    pk_task_options to;
    pk_threadpool *tp;
    pk_lane_stats ls;

    atomic_store(&x_ran, 0);
    atomic_store(&x_saw_inside, -1);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_lane(tp, "io", lane), 0);
    to = (pk_task_options){ .lane = *lane };
    assert_int_equal(pk_threadpool_submit_opts(tp, &gated, &to, NULL), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_inside, 1), 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pk_threadpool_submit_opts(tp, &gated, &to, NULL), 0);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, *lane, &ls), 0);
    assert_int_equal(ls.queued, 4);
    assert_int_equal(ls.running, 1);
    return tp;
}

static void
test_caller_runs_waits_for_a_place_in_a_capped_lane(void **state)
{
    struct cr_submit c = { 0 };
    pthread_t th;

    (void)state;
    c.tp = full_capped_lane(0, &c.lane);
    assert_int_equal(pthread_create(&th, NULL, cr_submit_main, &c), 0);
    sleep_ms(50);
    /* Not run beside the blocked task, and still waiting. */
    assert_int_equal(atomic_load(&x_ran), 0);
    assert_int_equal(atomic_load(&c.done), 0);
    tp_gate_set(1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.rc, 0);
    assert_int_equal(pk_future_wait(c.f, 10000), 0);
    assert_int_equal(atomic_load(&x_ran), 1);
    assert_int_equal(atomic_load(&x_saw_inside), 0); /* alone in io */
    pk_future_release(c.f);
    assert_int_equal(pk_threadpool_shutdown(c.tp, PK_SHUTDOWN_DRAIN, 10000),
                     0);
    assert_int_equal(atomic_load(&tp_gate_done), 5);
    assert_int_equal(atomic_load(&tp_gate_most), 1);
    pk_threadpool_destroy(c.tp);
}

/* The same wait ends at submit_timeout_ms: PK_ETIMEDOUT, counted
 * rejected, nothing run or queued. */
static void
test_caller_runs_in_a_full_capped_lane_times_out(void **state)
{
    pk_task x = { .fn = io_x_task };
    pk_threadpool_stats st;
    pk_task_options to;
    pk_threadpool *tp;
    pk_future *f = (pk_future *)&f;
    int lane;

    (void)state;
    tp = full_capped_lane(50, &lane);
    to = (pk_task_options){ .lane = lane };
    assert_int_equal(pk_threadpool_submit_opts(tp, &x, &to, &f),
                     PK_ETIMEDOUT);
    assert_null(f);
    assert_int_equal(atomic_load(&x_ran), 0);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.submitted, 5);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&x_ran), 0);
    pk_threadpool_destroy(tp);
}

/* ---- bad input ---------------------------------------------------------- */

static void
test_lane_bad_input_returns_einval(void **state)
{
    char long_name[PK_LANE_NAME_MAX + 1];
    pk_lane_options lanes[PK_LANES_MAX] = { { .name = "x" } };
    pk_threadpool_options o = { .max_threads = 1, .lanes = lanes,
                                .n_lanes = 1 };
    pk_task sq = { .fn = tp_square };
    pk_task_options bad = { .lane = 2 };
    pk_threadpool *tp;
    pk_executor *ex;
    pk_lane_stats ls;
    int lane = -7;

    (void)state;
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    for (int i = 0; i < PK_LANES_MAX; i++)
        lanes[i].name = "dup";
    o.n_lanes = 2; /* two named "dup" */
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o.n_lanes = PK_LANES_MAX; /* one more than there is room for */
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o.n_lanes = 1;
    lanes[0].name = "";
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    lanes[0].name = NULL;
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    lanes[0].name = long_name;
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o.lanes = NULL;
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_EINVAL);
    o.lanes = lanes;
    lanes[0].name = "x";
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);

    assert_int_equal(pk_threadpool_lane(tp, "nope", &lane), PK_ENOENT);
    assert_int_equal(lane, -7);
    assert_int_equal(pk_threadpool_lane(tp, NULL, &lane), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane(tp, "x", NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane(NULL, "x", &lane), PK_EINVAL);
    assert_int_equal(pk_threadpool_submit_opts(tp, &sq, &bad, NULL),
                     PK_EINVAL);
    bad.lane = -1;
    assert_int_equal(pk_threadpool_submit_opts(tp, &sq, &bad, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_threadpool_submit_many_opts(tp, &sq, 1, &bad, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_set_cap(tp, 0, 1), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_set_cap(tp, 2, 1), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_set_cap(NULL, 1, 1), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 2, &ls), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_stats_get(tp, 1, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_executor(tp, 2, &ex), PK_EINVAL);
    assert_int_equal(pk_threadpool_lane_executor(tp, 1, NULL), PK_EINVAL);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 1000), 0);
    assert_int_equal(pk_threadpool_lane_set_cap(tp, 1, 1), PK_ESHUTDOWN);
    pk_threadpool_destroy(tp);
}

/* ---- caller-runs across two capped lanes ------------------------------- */

static pk_threadpool *cross_tp;
static int lane_x, lane_y;
static atomic_int cross_started, cross_go, cross_rc[2];

/* A task of one lane submitting to the other once both are full. */
static int
cross_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    int i = (int)(uintptr_t)arg;
    pk_task_options to = { .lane = i ? lane_x : lane_y };
    pk_task t = { .fn = tp_count_task };

    (void)self;
    (void)out;
    (void)err;
    atomic_fetch_add(&cross_started, 1);
    while (!atomic_load(&cross_go))
        sleep_ms(1);
    atomic_store(&cross_rc[i], pk_threadpool_submit_opts(cross_tp, &t, &to,
                                                         NULL));
    return 0;
}

/* Lanes x and y, cap 1 each, full queues: a task of x submits to y while
 * a task of y submits to x. Each caller-runs submit waits for a place in
 * the other lane; waiting, a worker gives up its own lane's place (as
 * when it blocks on a future), so both get one and run their task. They
 * used to hold their places and wait for each other until the timeout
 * (for ever by default). */
static void
test_caller_runs_across_two_capped_lanes_does_not_deadlock(void **state)
{
    pk_lane_options lanes[2] = {
        { .name = "x", .max_threads = 1, .queue_size = 1 },
        { .name = "y", .max_threads = 1, .queue_size = 1 },
    };
    pk_threadpool_options o = { .max_threads = 4, .lanes = lanes,
                                .n_lanes = 2,
                                .full_policy = PK_FULL_CALLER_RUNS,
                                .submit_timeout_ms = 5000 };
    pk_task a = { .fn = cross_task, .arg = (void *)0 };
    pk_task b = { .fn = cross_task, .arg = (void *)1 };
    pk_task fill = { .fn = tp_count_task };
    pk_lane_stats sx, sy;
    pk_task_options ox = { 0 }, oy = { 0 };
    pk_future *fa, *fb;

    (void)state;
    atomic_store(&cross_started, 0);
    atomic_store(&cross_go, 0);
    atomic_store(&cross_rc[0], 1);
    atomic_store(&cross_rc[1], 1);
    assert_int_equal(pk_threadpool_create(&cross_tp, &o), 0);
    assert_int_equal(pk_threadpool_lane(cross_tp, "x", &lane_x), 0);
    assert_int_equal(pk_threadpool_lane(cross_tp, "y", &lane_y), 0);
    ox.lane = lane_x;
    oy.lane = lane_y;
    assert_int_equal(pk_threadpool_submit_opts(cross_tp, &a, &ox, &fa), 0);
    assert_int_equal(pk_threadpool_submit_opts(cross_tp, &b, &oy, &fb), 0);
    while (atomic_load(&cross_started) < 2)
        sleep_ms(1);
    /* Both lanes at their cap: nobody pops these. A ring of queue_size 1
     * holds 2 (rounded up to a power of two): both queues are full. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pk_threadpool_submit_opts(cross_tp, &fill, &ox,
                                                   NULL), 0);
        assert_int_equal(pk_threadpool_submit_opts(cross_tp, &fill, &oy,
                                                   NULL), 0);
    }
    assert_int_equal(pk_threadpool_lane_stats_get(cross_tp, lane_x, &sx), 0);
    assert_int_equal(pk_threadpool_lane_stats_get(cross_tp, lane_y, &sy), 0);
    assert_int_equal(sx.queued, 2);
    assert_int_equal(sy.queued, 2);
    atomic_store(&cross_go, 1);
    assert_int_equal(pk_future_wait(fa, 4000), 0); /* not the 5 s timeout */
    assert_int_equal(pk_future_wait(fb, 4000), 0);
    assert_int_equal(atomic_load(&cross_rc[0]), 0);
    assert_int_equal(atomic_load(&cross_rc[1]), 0);
    pk_future_release(fa);
    pk_future_release(fb);
    assert_int_equal(pk_threadpool_shutdown(cross_tp, PK_SHUTDOWN_DRAIN,
                                            10000), 0);
    pk_threadpool_destroy(cross_tp);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup(f, reset)
    const struct CMUnitTest tests[] = {
        T(test_slow_lane_cannot_starve_quick_work),
        T(test_higher_priority_lane_starts_first),
        T(test_child_in_a_full_lane_runs_on_its_parents_worker),
        T(test_raising_a_cap_starts_queued_tasks),
        T(test_lane_executor_and_submit_many_queue_in_the_lane),
        T(test_caller_runs_waits_for_a_place_in_a_capped_lane),
        T(test_caller_runs_in_a_full_capped_lane_times_out),
        T(test_caller_runs_across_two_capped_lanes_does_not_deadlock),
        T(test_lane_bad_input_returns_einval),
    };
#undef T
    return cmocka_run_group_tests_name("threadpool_lanes", tests, NULL, NULL);
}
