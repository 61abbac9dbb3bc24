/* tests/unit/test_future_callbacks.c - pk_future completion callbacks: order,
 * callbacks on a finished future, the thread they run on, and registration
 * racing completion.
 *
 * Worker threads never assert: they record what they saw, and the test
 * thread asserts after pthread_join (cmocka's assertions longjmp into the
 * runner). Every test checks that it leaked nothing (fh_teardown). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <poolkit/future.h>

#include "future_helpers.h"

/* ---- callbacks ----------------------------------------------------------- */

#define CB_MAX 256

struct cb_log {
    atomic_int n;
    int order[CB_MAX];
    pthread_t thread[CB_MAX];
    pk_future_state state[CB_MAX];
};

struct cb_arg {
    struct cb_log *log;
    int id;
};

static void
log_callback(void *arg, pk_future *f)
{
    struct cb_arg *a = arg;
    int slot = atomic_fetch_add(&a->log->n, 1);

    if (slot < CB_MAX) {
        a->log->order[slot] = a->id;
        a->log->thread[slot] = pthread_self();
        a->log->state[slot] = pk_future_state_get(f);
    }
}

static void
test_callbacks_run_in_registration_order(void **state)
{
    static struct cb_log log;
    struct cb_arg args[5];
    pk_future *f;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    for (int i = 0; i < 5; i++) {
        args[i].log = &log;
        args[i].id = i;
        assert_int_equal(pk_future_on_complete(f, log_callback, &args[i]),
                         0);
    }
    assert_int_equal(atomic_load(&log.n), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, NULL), 0);
    assert_int_equal(atomic_load(&log.n), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log.order[i], i);
        assert_int_equal(log.state[i], PK_FUTURE_FAILED);
    }
    pk_future_error(f, &(pk_error){ 0 });
    pk_future_release(f);
}

static void
test_callback_on_finished_future_runs_at_once(void **state)
{
    static struct cb_log log;
    struct cb_arg arg = { &log, 7 };
    pk_future *f;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    assert_int_equal(pk_future_on_complete(f, log_callback, &arg), 0);
    assert_int_equal(atomic_load(&log.n), 1);
    assert_int_equal(log.order[0], 7);
    assert_true(pthread_equal(log.thread[0], pthread_self()));
    assert_int_equal(log.state[0], PK_FUTURE_CANCELLED);
    pk_future_release(f);
}

static void
test_callbacks_run_on_the_completing_thread(void **state)
{
    static struct cb_log log;
    struct cb_arg arg = { &log, 1 };
    fh_later l = { NULL, 1, 0 };
    pthread_t th;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    assert_int_equal(pk_future_on_complete(l.f, log_callback, &arg), 0);
    pthread_create(&th, NULL, fh_finish_later, &l);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&log.n), 1);
    assert_true(pthread_equal(log.thread[0], th));
    pk_future_release(l.f);
}

struct reg_race {
    pk_future *f;
    struct cb_log *log;
    struct cb_arg args[CB_MAX];
    int rc[CB_MAX];
};

static void *
register_many(void *arg)
{
    struct reg_race *r = arg;

    for (int i = 0; i < CB_MAX; i++)
        r->rc[i] = pk_future_on_complete(r->f, log_callback, &r->args[i]);
    return NULL;
}

static void *
complete_now(void *arg)
{
    pk_future_complete(arg, NULL);
    return NULL;
}

/* Registration races completion: every callback runs once, in order. */
static void
test_callbacks_racing_completion_run_once_in_order(void **state)
{
    static struct cb_log log;
    static struct reg_race r;
    pthread_t reg;
    pthread_t fin;
    int bad = 0;

    (void)state;
    for (int round = 0; round < 50; round++) {
        memset(&log, 0, sizeof log);
        r.log = &log;
        for (int i = 0; i < CB_MAX; i++) {
            r.args[i].log = &log;
            r.args[i].id = i;
        }
        pk_future_create(&r.f, NULL, NULL);
        pthread_create(&reg, NULL, register_many, &r);
        pthread_create(&fin, NULL, complete_now, r.f);
        pthread_join(reg, NULL);
        pthread_join(fin, NULL);
        bad += atomic_load(&log.n) != CB_MAX;
        for (int i = 0; i < CB_MAX; i++)
            bad += r.rc[i] != 0 || log.order[i] != i;
        pk_future_release(r.f);
    }
    assert_int_equal(bad, 0);
}

struct waiter_arg {
    pk_future *f;
    atomic_int started;
    int rc;
};

static void *
wait_forever(void *arg)
{
    struct waiter_arg *w = arg;

    atomic_store(&w->started, 1);
    w->rc = pk_future_wait(w->f, PK_WAIT_FOREVER);
    return NULL;
}

/* Waiters and callbacks share one list (future.c): waits that time out
 * take their nodes off from between callbacks, a waiter still on it is
 * woken, and the callbacks keep their order. */
static void
test_callbacks_keep_order_among_waiters(void **state)
{
    static struct cb_log log;
    struct cb_arg args[4];
    struct waiter_arg w = { 0 };
    pk_future *g;
    size_t index = 9;
    pthread_t th;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&w.f, NULL, NULL), 0);
    assert_int_equal(pk_future_create(&g, NULL, NULL), 0);
    for (int i = 0; i < 4; i++) {
        args[i].log = &log;
        args[i].id = i;
    }
    assert_int_equal(pk_future_wait(w.f, 1), PK_ETIMEDOUT); /* alone */
    assert_int_equal(pk_future_on_complete(w.f, log_callback, &args[0]), 0);
    assert_int_equal(pk_future_wait(w.f, 1), PK_ETIMEDOUT); /* the tail */
    assert_int_equal(pk_future_on_complete(w.f, log_callback, &args[1]), 0);
    assert_int_equal(pthread_create(&th, NULL, wait_forever, &w), 0);
    while (!atomic_load(&w.started))
        sched_yield();
    assert_int_equal(pk_future_on_complete(w.f, log_callback, &args[2]), 0);
    assert_int_equal(
        pk_future_wait_any((pk_future *[]){ g, w.f }, 2, 1, &index),
        PK_ETIMEDOUT);
    assert_int_equal(pk_future_on_complete(w.f, log_callback, &args[3]), 0);
    assert_int_equal(atomic_load(&log.n), 0);
    assert_int_equal(pk_future_complete(w.f, NULL), 0);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(atomic_load(&log.n), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(log.order[i], i);
    assert_int_equal(index, 9);
    pk_future_release(g);
    pk_future_release(w.f);
}

/* A future released unfinished drops its callbacks uncalled (and frees
 * them: fh_teardown checks), whatever waits came and went before. */
static void
test_unfinished_future_drops_its_callbacks(void **state)
{
    static struct cb_log log;
    struct cb_arg arg = { &log, 0 };
    pk_future *f;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pk_future_on_complete(f, log_callback, &arg), 0);
        assert_int_equal(pk_future_wait(f, 1), PK_ETIMEDOUT);
    }
    pk_future_release(f);
    assert_int_equal(atomic_load(&log.n), 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_callbacks_run_in_registration_order),
        T(test_callback_on_finished_future_runs_at_once),
        T(test_callbacks_run_on_the_completing_thread),
        T(test_callbacks_racing_completion_run_once_in_order),
        T(test_callbacks_keep_order_among_waiters),
        T(test_unfinished_future_drops_its_callbacks),
    };

    return cmocka_run_group_tests_name("future_callbacks", tests, NULL, NULL);
}
