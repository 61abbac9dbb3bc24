/* tests/unit/test_future_wait.c - pk_future waits: pk_future_wait,
 * pk_future_wait_all and pk_future_wait_any, timing out or woken by
 * another thread; pk_future_get (a wait and the outcome in one call, err
 * filled on every failure); the listener pair executors park with
 * (pk__future_listen/_unlisten, executor_int.h); waits in a child forked
 * from a thread pool's task.
 *
 * Worker threads never assert: they record what they saw, and the test
 * thread asserts after pthread_join (cmocka's assertions longjmp into the
 * runner). Every test checks that it leaked nothing (fh_teardown). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/future.h>
#include <poolkit/threadpool.h>

#include "executor_int.h"
#include "future_helpers.h"
#include "test_util.h"
#include "tp_tasks.h"

/* ---- waits --------------------------------------------------------------- */

static void
test_wait_times_out_no_earlier_than_timeout(void **state)
{
    pk_future *f;
    uint64_t t0;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    t0 = fh_now_ms();
    assert_int_equal(pk_future_wait(f, 50), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 50);
    pk_future_release(f);
}

static void
test_wait_returns_when_another_thread_completes(void **state)
{
    fh_later l = { NULL, 20, 0 };
    pthread_t th;

    (void)state;
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    pthread_create(&th, NULL, fh_finish_later, &l);
    assert_int_equal(pk_future_wait(l.f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_state_get(l.f), PK_FUTURE_DONE);
    pthread_join(th, NULL);
    pk_future_release(l.f);
}

struct waiter_arg {
    pk_future *f;
    int rc;
};

static void *
wait_forever(void *arg)
{
    struct waiter_arg *w = arg;

    w->rc = pk_future_wait(w->f, PK_WAIT_FOREVER);
    return NULL;
}

static void
test_completion_wakes_every_waiter(void **state)
{
    enum { N = 8 };
    struct waiter_arg w[N];
    pthread_t th[N];
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    for (int i = 0; i < N; i++) {
        w[i].f = f;
        w[i].rc = -1;
        pthread_create(&th[i], NULL, wait_forever, &w[i]);
    }
    fh_sleep_ms(20); /* most are parked by now; the rest find it done */
    assert_int_equal(pk_future_complete(f, NULL), 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(w[i].rc, 0);
    pk_future_release(f);
}

static void
test_wait_all_returns_after_all_finish_elsewhere(void **state)
{
    enum { N = 4 };
    pk_future *fs[N];
    fh_later l[N];
    pthread_t th[N];

    (void)state;
    fh_make_futures(fs, N);
    assert_int_equal(pk_future_wait_all(fs, N, 0), PK_EAGAIN);
    for (int i = 0; i < N; i++) {
        l[i].f = fs[i];
        l[i].delay_ms = 5 * (N - i);
        l[i].fail = i == 1;
        pthread_create(&th[i], NULL, fh_finish_later, &l[i]);
    }
    assert_int_equal(pk_future_wait_all(fs, N, PK_WAIT_FOREVER), 0);
    for (int i = 0; i < N; i++)
        assert_true(pk_future_wait(fs[i], 0) == 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(pk_future_wait_all(fs, N, 0), 0);
    fh_release_futures(fs, N);
}

static void
test_wait_all_times_out_while_one_is_pending(void **state)
{
    pk_future *fs[3];
    uint64_t t0;

    (void)state;
    fh_make_futures(fs, 3);
    pk_future_complete(fs[0], NULL);
    pk_future_complete(fs[2], NULL);
    t0 = fh_now_ms();
    assert_int_equal(pk_future_wait_all(fs, 3, 30), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 30);
    fh_release_futures(fs, 3);
}

static void
test_wait_any_returns_lowest_finished_index(void **state)
{
    pk_future *fs[4];
    size_t idx = 99;

    (void)state;
    fh_make_futures(fs, 4);
    assert_int_equal(pk_future_wait_any(fs, 4, 0, &idx), PK_EAGAIN);
    assert_int_equal(idx, 99);
    pk_future_complete(fs[3], NULL);
    pk_future_cancel(fs[1]);
    assert_int_equal(pk_future_wait_any(fs, 4, 0, &idx), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(pk_future_wait_any(fs, 4, PK_WAIT_FOREVER, &idx), 0);
    assert_int_equal(idx, 1);
    fh_release_futures(fs, 4);
}

static void
check_wait_any_wakes(size_t n)
{
    pk_future *fs[32];
    fh_later l;
    pthread_t th;
    size_t idx = 99;

    fh_make_futures(fs, n);
    l.f = fs[n - 2];
    l.delay_ms = 20;
    l.fail = 0;
    pthread_create(&th, NULL, fh_finish_later, &l);
    assert_int_equal(pk_future_wait_any(fs, n, PK_WAIT_FOREVER, &idx), 0);
    assert_int_equal(idx, n - 2);
    pthread_join(th, NULL);
    fh_release_futures(fs, n);
}

static void
test_wait_any_wakes_when_another_thread_finishes_one(void **state)
{
    (void)state;
    check_wait_any_wakes(3);  /* nodes on the stack */
    check_wait_any_wakes(32); /* nodes allocated */
}

static void
test_wait_any_times_out_no_earlier_than_timeout(void **state)
{
    pk_future *fs[12];
    size_t idx = 99;
    uint64_t t0;

    (void)state;
    fh_make_futures(fs, 12);
    t0 = fh_now_ms();
    assert_int_equal(pk_future_wait_any(fs, 12, 30, &idx), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 30);
    assert_int_equal(idx, 99);
    t0 = fh_now_ms();
    assert_int_equal(pk_future_wait_any(fs, 2, 30, &idx), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 30);
    fh_release_futures(fs, 12);
}

/* ---- listeners (executor_int.h) ------------------------------------------ */

static void
test_listen_on_a_finished_future_links_nothing(void **state)
{
    struct pk__future_node n;
    pk__parker p;
    pk_future *f;

    (void)state;
    atomic_init(&p.word, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    assert_int_equal(pk__future_listen(f, &n, &p), 1);
    pk__future_unlisten(f, &n); /* a no-op, and allowed */
    assert_int_equal(atomic_load(&p.word), 0);
    pk_future_release(f);
}

/* A worker's parker is woken by its pool too: the node stays linked
 * through such a wake, and the future's finisher still wakes it. */
static void
test_listener_parker_shared_with_another_waker(void **state)
{
    struct pk__future_node n;
    fh_later l = { NULL, 20, 0 };
    pthread_t th;
    pk__parker p;

    (void)state;
    atomic_init(&p.word, 0);
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    assert_int_equal(pk__future_listen(l.f, &n, &p), 0);
    pk__park_wake(&p, 7); /* "new work": not the future */
    assert_int_equal(pk__park(&p, UINT64_MAX), 7);
    assert_int_equal(atomic_exchange(&p.word, 0), 7);
    assert_false(pk__future_done(l.f));
    pthread_create(&th, NULL, fh_finish_later, &l);
    assert_int_equal(pk__park(&p, UINT64_MAX), PK__FUTURE_WAKE);
    assert_true(pk__future_done(l.f));
    pk__future_unlisten(l.f, &n);
    pthread_join(th, NULL);
    pk_future_release(l.f);
}

/* Unlistened before the future finishes: the finisher leaves the parker
 * alone, and other listeners still hear it. */
static void
test_unlisten_before_finish_is_not_woken(void **state)
{
    struct pk__future_node a, b;
    pk__parker pa, pb;
    pk_future *f;

    (void)state;
    atomic_init(&pa.word, 0);
    atomic_init(&pb.word, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk__future_listen(f, &a, &pa), 0);
    assert_int_equal(pk__future_listen(f, &b, &pb), 0);
    pk__future_unlisten(f, &a);
    assert_int_equal(pk_future_cancel(f), 0);
    assert_int_equal(atomic_load(&pa.word), 0);
    assert_int_equal(atomic_load(&pb.word), PK__FUTURE_WAKE);
    pk__future_unlisten(f, &a);
    pk__future_unlisten(f, &b);
    pk_future_release(f);
}

/* One parker under nodes on several futures (wait_any's way): the first
 * to finish wakes it. */
static void
test_one_parker_listens_on_several_futures(void **state)
{
    enum { N = 3 };
    struct pk__future_node n[N];
    pk_future *fs[N];
    fh_later l = { NULL, 20, 1 };
    pthread_t th;
    pk__parker p;

    (void)state;
    atomic_init(&p.word, 0);
    fh_make_futures(fs, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(pk__future_listen(fs[i], &n[i], &p), 0);
    l.f = fs[1];
    pthread_create(&th, NULL, fh_finish_later, &l);
    assert_int_equal(pk__park(&p, UINT64_MAX), PK__FUTURE_WAKE);
    assert_true(pk__future_done(fs[1]));
    assert_false(pk__future_done(fs[0]) || pk__future_done(fs[2]));
    for (int i = 0; i < N; i++)
        pk__future_unlisten(fs[i], &n[i]);
    pthread_join(th, NULL);
    fh_release_futures(fs, N);
}

/* ---- fork() from inside a task ------------------------------------------- */

/* In the child: a fresh pool's futures, waited on by this thread (the
 * parent's worker, in the middle of its task) through every wait. Returns
 * 0 or the number of the failed step. */
static int
child_uses_a_fresh_pool(void)
{
    pk_threadpool_options o = { .max_threads = 2 };
    pk_threadpool *tp;
    pk_future *f[2];
    size_t idx;

    if (pk_threadpool_create(&tp, &o) != 0)
        return 10;
    for (int i = 0; i < 2; i++)
        if (pk_threadpool_submit(tp, tp_square, (void *)(uintptr_t)3,
                                 &f[i]) != 0)
            return 11;
    if (pk_future_wait(f[0], 5000) != 0)
        return 12;
    if (pk_future_wait_any(&f[1], 1, 5000, &idx) != 0)
        return 13;
    if (pk_future_wait_all(f, 2, 5000) != 0)
        return 14;
    for (int i = 0; i < 2; i++) {
        pk_result r;
        if (pk_future_result(f[i], &r) != 0 || (uintptr_t)r.value != 9)
            return 15;
        pk_future_release(f[i]);
    }
    if (pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 5000) != 0)
        return 16;
    pk_threadpool_destroy(tp);
    return 0;
}

struct fork_seen {
    int forked;      /* fork() returned a pid */
    int status;      /* the child's, from waitpid */
};

/* Forks; the child checks that this thread's wait helper (the worker's)
 * is gone, then (plain builds) uses a fresh pool, and exits. */
static int
fork_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct fork_seen *s = arg;
    pid_t pid;

    (void)self;
    (void)out;
    if (!pk__future_helped())
        return pk_error_set(err, PK_ETASK, 0, "no wait helper in a task");
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm(10);
        if (pk__future_helped())
            _exit(1);
        _exit(SANITIZED ? 0 : child_uses_a_fresh_pool());
    }
    if (pid < 0)
        return pk_error_set(err, PK_ETASK, errno, "fork");
    s->forked = 1;
    if (waitpid(pid, &s->status, 0) != pid)
        return pk_error_set(err, PK_ETASK, errno, "waitpid");
    return 0;
}

/* A fork() from inside a task: the forking thread, in the child, waits on
 * a fresh pool's futures as any thread does (the wait helper it had as a
 * worker belonged to the parent's pool: PK_EFORKED, or freed memory). */
static void
test_child_forked_in_a_task_waits_on_a_fresh_pool(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    struct fork_seen s = { 0, 0 };
    long live0 = pk__alloc_live();
    pk_threadpool *tp;
    pk_future *f;

    (void)state;
    if (SANITIZED)
        printf("  skip: a new pool in a child forked from a threaded "
               "parent (sanitizer build: the child may hang in the "
               "sanitizer's allocator); the child checks only that its "
               "wait helper is gone\n");
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, fork_task, &s, &f), 0);
    assert_int_equal(pk_future_wait(f, 30000), 0);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
    assert_true(s.forked);
    if (WIFSIGNALED(s.status))
        fail_msg("child killed by signal %d%s", WTERMSIG(s.status),
                 WTERMSIG(s.status) == SIGALRM ? " (hung: alarm)" : "");
    assert_true(WIFEXITED(s.status));
    if (WEXITSTATUS(s.status))
        fail_msg("child step %d failed", WEXITSTATUS(s.status));
    /* The last worker may free the pool just after destroy returned. */
    assert_int_equal(settled_live(live0), live0);
}

/* ---- pk_future_get: wait, then the outcome, in one call ------------------- */

static void
test_get_waits_and_lends_the_result(void **state)
{
    fh_later l = { NULL, 20, 0 };
    pk_future *f;
    pk_result r;
    pk_error err;
    pthread_t th;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_complete(f, &(pk_result){ (void *)&l, 3,
                                                         NULL }), 0);
    fh_garbage(&err);
    memset(&r, 0, sizeof r);
    assert_int_equal(pk_future_get(f, 0, &r, &err), 0);
    assert_ptr_equal(r.value, &l);
    assert_int_equal(r.len, 3);
    assert_int_equal(err.code, 12345); /* left alone on success */
    assert_int_equal(pk_future_get(f, 0, NULL, NULL), 0);
    pk_future_release(f);

    /* Finished by another thread while get waits. */
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    pthread_create(&th, NULL, fh_finish_later, &l);
    assert_int_equal(pk_future_get(l.f, PK_WAIT_FOREVER, &r, &err), 0);
    pthread_join(th, NULL);
    assert_null(r.value);
    pk_future_release(l.f);
}

static void
test_get_of_a_failure_fills_err_and_marks_it_read(void **state)
{
    fh_later l = { NULL, 20, 1 };
    fh_recorder rec;
    pk_result r = { (void *)&rec, 1, NULL };
    pk_error err;
    pthread_t th;

    (void)state;
    memset(&rec, 0, sizeof rec);
    assert_int_equal(pk_future_create(&l.f, fh_record_event, &rec), 0);
    pthread_create(&th, NULL, fh_finish_later, &l);
    fh_garbage(&err);
    assert_int_equal(pk_future_get(l.f, 10000, &r, &err), PK_ETASK);
    pthread_join(th, NULL);
    fh_assert_filled(&err, PK_ETASK, 0, "late");
    assert_ptr_equal(r.value, &rec); /* untouched on failure */
    pk_future_release(l.f);
    assert_int_equal(atomic_load(&rec.calls), 0); /* read: not reported */

    /* A task's own PK_EINVAL is the task's, with its message and sys. */
    assert_int_equal(pk_future_create(&l.f, fh_record_event, &rec), 0);
    assert_int_equal(pk_future_fail(l.f, PK_EINVAL, 22, "bad input"), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_get(l.f, 0, NULL, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 22, "bad input");
    pk_future_release(l.f);

    /* Without err the failure is still read. */
    assert_int_equal(pk_future_create(&l.f, fh_record_event, &rec), 0);
    assert_int_equal(pk_future_fail(l.f, PK_ETASK, 0, NULL), 0);
    assert_int_equal(pk_future_get(l.f, 0, NULL, NULL), PK_ETASK);
    pk_future_release(l.f);
    assert_int_equal(atomic_load(&rec.calls), 0);
}

static void
test_get_of_a_cancelled_future_is_ecanceled(void **state)
{
    pk_future *f;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_get(f, 100, NULL, &err), PK_ECANCELED);
    fh_assert_filled(&err, PK_ECANCELED, 0, "canceled");
    pk_future_release(f);
}

static void
test_get_of_an_unfinished_future_says_so(void **state)
{
    pk_future *f;
    pk_error err;
    uint64_t t0;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    fh_garbage(&err);
    t0 = fh_now_ms();
    assert_int_equal(pk_future_get(f, 30, NULL, &err), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 30);
    fh_assert_filled(&err, PK_ETIMEDOUT, 0, "did not finish within 30 ms");
    fh_garbage(&err);
    assert_int_equal(pk_future_get(f, 0, NULL, &err), PK_EAGAIN);
    fh_assert_filled(&err, PK_EAGAIN, 0, "has not finished");
    assert_int_equal(pk_future_get(f, 0, NULL, NULL), PK_EAGAIN);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_PENDING);
    pk_future_release(f);
}

static void
test_get_with_bad_arguments_fills_err(void **state)
{
    pk_future *f;
    pk_result r;
    pk_error err;

    (void)state;
    fh_garbage(&err);
    assert_int_equal(pk_future_get(NULL, 0, &r, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "the future is NULL");
    assert_int_equal(pk_future_get(NULL, 0, NULL, NULL), PK_EINVAL);

    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_get(f, -7, &r, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "timeout -7 ms");

    /* A result moved out is no longer the future's to lend. */
    r = fh_counted_result(1);
    assert_int_equal(pk_future_complete(f, &r), 0);
    assert_int_equal(pk_future_take_result(f, &r), 0);
    fh_garbage(&err);
    assert_int_equal(pk_future_get(f, 0, NULL, &err), PK_EINVAL);
    fh_assert_filled(&err, PK_EINVAL, 0, "the result was taken");
    r.free_fn(r.value);
    pk_future_release(f);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_wait_times_out_no_earlier_than_timeout),
        T(test_wait_returns_when_another_thread_completes),
        T(test_completion_wakes_every_waiter),
        T(test_wait_all_returns_after_all_finish_elsewhere),
        T(test_wait_all_times_out_while_one_is_pending),
        T(test_wait_any_returns_lowest_finished_index),
        T(test_wait_any_wakes_when_another_thread_finishes_one),
        T(test_wait_any_times_out_no_earlier_than_timeout),
        T(test_listen_on_a_finished_future_links_nothing),
        T(test_listener_parker_shared_with_another_waker),
        T(test_unlisten_before_finish_is_not_woken),
        T(test_one_parker_listens_on_several_futures),
        T(test_child_forked_in_a_task_waits_on_a_fresh_pool),
        T(test_get_waits_and_lends_the_result),
        T(test_get_of_a_failure_fills_err_and_marks_it_read),
        T(test_get_of_a_cancelled_future_is_ecanceled),
        T(test_get_of_an_unfinished_future_says_so),
        T(test_get_with_bad_arguments_fills_err),
    };

    return cmocka_run_group_tests_name("future_wait", tests, NULL, NULL);
}
