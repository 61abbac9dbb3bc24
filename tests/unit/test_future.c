/* tests/unit/test_future.c - pk_future: arguments, the state machine,
 * exactly-once completion under races, waits, callbacks, the unread-
 * failure report, result ownership and allocation failures.
 *
 * Worker threads never assert: they record what they saw into arrays and
 * atomics, and the test thread asserts after pthread_join (cmocka's
 * assertions longjmp into the runner). Built with -DPK_TESTING -Ilib for
 * the allocation counters; every test checks that it leaked nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poolkit/future.h>

#include "alloc.h"

#define RACE_ROUNDS 2000
#define RACE_THREADS 4

static long live_at_start;

static int
setup(void **state)
{
    (void)state;
    live_at_start = pk__alloc_live();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    pk__alloc_fail_at(0);
    assert_int_equal(pk__alloc_live(), live_at_start);
    return 0;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* ---- helpers: counted results and an event recorder ---------------------- */

static atomic_int frees;

static void
count_free(void *value)
{
    atomic_fetch_add(&frees, 1);
    free(value);
}

static pk_result
counted_result(int v)
{
    pk_result r;
    int *p = malloc(sizeof *p);

    *p = v;
    r.value = p;
    r.len = sizeof *p;
    r.free_fn = count_free;
    return r;
}

struct recorder {
    atomic_int calls;
    int kind;
    int code;
    int sys;
    char msg[PK_ERROR_MSG_SIZE];
};

static void
record_event(void *user, const pk_event *ev)
{
    struct recorder *r = user;

    /* Written before the count goes up; read after join or on this
     * thread, so plain fields are enough. */
    r->kind = ev->kind;
    if (ev->error) {
        r->code = ev->error->code;
        r->sys = ev->error->sys;
        memcpy(r->msg, ev->error->msg, sizeof r->msg);
    }
    atomic_fetch_add(&r->calls, 1);
}

/* ---- arguments --------------------------------------------------------- */

static void
test_null_arguments_return_einval(void **state)
{
    pk_future *f = NULL;
    pk_result res;
    pk_error err;
    size_t idx;

    (void)state;
    assert_int_equal(pk_future_create(NULL, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_future_set_running(NULL), PK_EINVAL);
    assert_int_equal(pk_future_complete(NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_future_fail(NULL, PK_ETASK, 0, NULL), PK_EINVAL);
    assert_null(pk_future_ref(NULL));
    pk_future_release(NULL);
    assert_int_equal(pk_future_cancel(NULL), PK_EINVAL);
    assert_int_equal(pk_future_cancel_requested(NULL), 0);
    assert_int_equal(pk_future_state_get(NULL), PK_FUTURE_PENDING);
    assert_int_equal(pk_future_wait(NULL, 0), PK_EINVAL);
    assert_int_equal(pk_future_wait_all(NULL, 1, 0), PK_EINVAL);
    assert_int_equal(pk_future_wait_any(NULL, 1, 0, &idx), PK_EINVAL);
    assert_int_equal(pk_future_result(NULL, &res), PK_EINVAL);
    assert_int_equal(pk_future_take_result(NULL, &res), PK_EINVAL);
    assert_int_equal(pk_future_error(NULL, &err), PK_EINVAL);
    assert_int_equal(pk_future_on_complete(NULL, NULL, NULL), PK_EINVAL);

    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_take_result(f, NULL), PK_EINVAL);
    assert_int_equal(pk_future_error(f, NULL), PK_EINVAL);
    assert_int_equal(pk_future_on_complete(f, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_future_wait_any(&f, 1, 0, NULL), PK_EINVAL);
    pk_future_release(f);
}

static void
test_invalid_values_return_einval(void **state)
{
    pk_future *fs[2] = { NULL, NULL };
    size_t idx;

    (void)state;
    assert_int_equal(pk_future_create(&fs[0], NULL, NULL), 0);
    assert_int_equal(pk_future_fail(fs[0], 0, 0, NULL), PK_EINVAL);
    assert_int_equal(pk_future_fail(fs[0], 5, 0, NULL), PK_EINVAL);
    assert_int_equal(pk_future_wait(fs[0], -2), PK_EINVAL);
    assert_int_equal(pk_future_wait(fs[0], -1000), PK_EINVAL);
    assert_int_equal(pk_future_wait_all(fs, 0, 0), PK_EINVAL);
    assert_int_equal(pk_future_wait_any(fs, 0, 0, &idx), PK_EINVAL);
    /* fs[1] is NULL: an element of the array */
    assert_int_equal(pk_future_wait_all(fs, 2, 0), PK_EINVAL);
    assert_int_equal(pk_future_wait_any(fs, 2, 0, &idx), PK_EINVAL);
    assert_int_equal(pk_future_wait_all(fs, 1, -5), PK_EINVAL);
    assert_int_equal(pk_future_wait_any(fs, 1, -5, &idx), PK_EINVAL);
    /* still pending: the bad calls changed nothing */
    assert_int_equal(pk_future_state_get(fs[0]), PK_FUTURE_PENDING);
    pk_future_release(fs[0]);
}

/* ---- the state machine ------------------------------------------------- */

static void
test_new_future_is_pending_and_unfinished(void **state)
{
    pk_future *f;
    pk_result res;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_PENDING);
    assert_int_equal(pk_future_cancel_requested(f), 0);
    assert_int_equal(pk_future_result(f, &res), PK_EAGAIN);
    assert_int_equal(pk_future_take_result(f, &res), PK_EAGAIN);
    assert_int_equal(pk_future_error(f, &err), PK_EAGAIN);
    assert_int_equal(pk_future_wait(f, 0), PK_EAGAIN);
    pk_future_release(f);
}

static void
test_set_running_only_from_pending(void **state)
{
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_set_running(f), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_RUNNING);
    assert_int_equal(pk_future_set_running(f), PK_EINVAL);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    assert_int_equal(pk_future_set_running(f), PK_EINVAL);
    pk_future_release(f);
}

static void
test_complete_from_running_gives_result(void **state)
{
    pk_future *f;
    pk_result in = { (void *)"hello", 5, NULL };
    pk_result out;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_set_running(f), 0);
    assert_int_equal(pk_future_complete(f, &in), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_DONE);
    assert_int_equal(pk_future_wait(f, 0), 0);
    assert_int_equal(pk_future_result(f, &out), 0);
    assert_ptr_equal(out.value, in.value);
    assert_int_equal(out.len, 5);
    assert_int_equal(pk_future_result(f, NULL), 0);
    pk_future_release(f);
}

static void
test_complete_with_null_result_is_empty(void **state)
{
    pk_future *f;
    pk_result out = { (void *)1, 1, NULL };
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    assert_int_equal(pk_future_result(f, &out), 0);
    assert_null(out.value);
    assert_int_equal(out.len, 0);
    assert_int_equal(pk_future_error(f, &err), PK_EINVAL);
    pk_future_release(f);
}

static void
test_second_terminal_move_is_refused(void **state)
{
    pk_future *f;
    pk_result a = { (void *)"a", 1, NULL };
    pk_result b = { (void *)"b", 1, NULL };
    pk_result out;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_complete(f, &a), 0);
    assert_int_equal(pk_future_complete(f, &b), PK_EINVAL);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, NULL), PK_EINVAL);
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_DONE);
    assert_int_equal(pk_future_result(f, &out), 0);
    assert_ptr_equal(out.value, a.value);
    pk_future_release(f);
}

static void
test_fail_records_code_sys_and_message(void **state)
{
    pk_future *f;
    pk_error err;
    pk_result res;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_set_running(f), 0);
    assert_int_equal(pk_future_fail(f, PK_EWORKER, 9, "killed by %s", "9"),
                     0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_FAILED);
    assert_int_equal(pk_future_result(f, &res), PK_EWORKER);
    assert_int_equal(pk_future_take_result(f, &res), PK_EWORKER);
    assert_int_equal(pk_future_error(f, &err), 0);
    assert_int_equal(err.code, PK_EWORKER);
    assert_int_equal(err.sys, 9);
    assert_string_equal(err.msg, "killed by 9");
    pk_future_release(f);
}

static void
test_fail_without_format_uses_strerror(void **state)
{
    pk_future *f;
    pk_error err;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, NULL), 0);
    assert_int_equal(pk_future_error(f, &err), 0);
    assert_string_equal(err.msg, pk_strerror(PK_ETASK));
    pk_future_release(f);
}

static void
test_cancel_pending_cancels_at_once(void **state)
{
    pk_future *f;
    pk_error err;
    pk_result res;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    assert_int_equal(pk_future_cancel_requested(f), 1);
    assert_int_equal(pk_future_set_running(f), PK_ECANCELED);
    assert_int_equal(pk_future_complete(f, NULL), PK_EINVAL);
    assert_int_equal(pk_future_wait(f, 0), 0);
    assert_int_equal(pk_future_result(f, &res), PK_ECANCELED);
    assert_int_equal(pk_future_error(f, &err), 0);
    assert_int_equal(err.code, PK_ECANCELED);
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN);
    pk_future_release(f);
}

static void
test_cancel_running_raises_flag_only(void **state)
{
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_set_running(f), 0);
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN);
    assert_int_equal(pk_future_cancel_requested(f), 1);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_RUNNING);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_DONE);
    pk_future_release(f);
}

static void
test_failing_with_ecanceled_after_cancel_ends_cancelled(void **state)
{
    struct recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    assert_int_equal(pk_future_set_running(f), 0);
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN);
    assert_int_equal(pk_future_fail(f, PK_ECANCELED, 0, "stopped"), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    pk_future_release(f);
    assert_int_equal(atomic_load(&rec.calls), 0);
}

static void
test_failing_with_ecanceled_unasked_is_a_failure(void **state)
{
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ECANCELED, 0, NULL), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_FAILED);
    assert_int_equal(pk_future_result(f, NULL), PK_ECANCELED);
    pk_future_release(f);
}

/* ---- results and references -------------------------------------------- */

static void
test_result_is_freed_at_last_release(void **state)
{
    pk_future *f;

    (void)state;
    atomic_store(&frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    pk_result r = counted_result(7);
    assert_int_equal(pk_future_complete(f, &r), 0);
    assert_ptr_equal(pk_future_ref(f), f);
    pk_future_release(f);
    assert_int_equal(atomic_load(&frees), 0);
    pk_future_release(f);
    assert_int_equal(atomic_load(&frees), 1);
}

static void
test_take_result_moves_ownership_once(void **state)
{
    pk_future *f;
    pk_result out;
    pk_result again;

    (void)state;
    atomic_store(&frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    pk_result r = counted_result(42);
    assert_int_equal(pk_future_complete(f, &r), 0);
    assert_int_equal(pk_future_take_result(f, &out), 0);
    assert_int_equal(*(int *)out.value, 42);
    assert_int_equal(pk_future_take_result(f, &again), PK_EINVAL);
    assert_int_equal(pk_future_result(f, &again), PK_EINVAL);
    pk_future_release(f);
    assert_int_equal(atomic_load(&frees), 0);
    out.free_fn(out.value);
    assert_int_equal(atomic_load(&frees), 1);
}

static void
test_refused_complete_leaves_result_with_caller(void **state)
{
    pk_future *f;

    (void)state;
    atomic_store(&frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    pk_result r = counted_result(1);
    assert_int_equal(pk_future_complete(f, &r), PK_EINVAL);
    pk_future_release(f);
    assert_int_equal(atomic_load(&frees), 0);
    r.free_fn(r.value);
}

/* ---- the unread-failure report ----------------------------------------- */

static void
test_unread_failure_is_reported_once(void **state)
{
    struct recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    pk_future_ref(f);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 3, "boom %d", 1), 0);
    pk_future_release(f);
    assert_int_equal(atomic_load(&rec.calls), 0); /* not the last ref */
    pk_future_release(f);
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(rec.kind, PK_EVENT_FUTURE_UNREAD);
    assert_int_equal(rec.code, PK_ETASK);
    assert_int_equal(rec.sys, 3);
    assert_string_equal(rec.msg, "boom 1");
}

enum read_how { READ_RESULT, READ_TAKE, READ_ERROR };

static void
check_read_failure_not_reported(enum read_how how)
{
    struct recorder rec = { 0 };
    pk_future *f;
    pk_result res;
    pk_error err;

    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, NULL), 0);
    if (how == READ_RESULT)
        assert_int_equal(pk_future_result(f, NULL), PK_ETASK);
    else if (how == READ_TAKE)
        assert_int_equal(pk_future_take_result(f, &res), PK_ETASK);
    else
        assert_int_equal(pk_future_error(f, &err), 0);
    pk_future_release(f);
    assert_int_equal(atomic_load(&rec.calls), 0);
}

static void
test_read_failure_is_not_reported(void **state)
{
    (void)state;
    check_read_failure_not_reported(READ_RESULT);
    check_read_failure_not_reported(READ_TAKE);
    check_read_failure_not_reported(READ_ERROR);
}

static void
test_cancelled_or_done_is_not_reported(void **state)
{
    struct recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    pk_future_release(f);
    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    pk_future_release(f);
    assert_int_equal(pk_future_create(&f, record_event, &rec), 0);
    pk_future_release(f); /* never finished */
    assert_int_equal(atomic_load(&rec.calls), 0);
}

/* ---- exactly once under races ------------------------------------------ */

struct race {
    pthread_barrier_t start;
    pthread_barrier_t end;
    pk_future *f;                  /* set by main between barriers */
    int rc[RACE_THREADS];          /* this round's result per thread */
    int ran[RACE_THREADS];         /* set_running race: task body ran */
    int saw_flag[RACE_THREADS];
};

struct racer {
    struct race *race;
    int id;
};

/* Thread id % 3: 0 completes, 1 fails, 2 cancels. */
static void *
finisher(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->race;

    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(&r->start);
        if (me->id % 3 == 0) {
            pk_result res = counted_result(round);
            r->rc[me->id] = pk_future_complete(r->f, &res);
            if (r->rc[me->id] != 0)
                res.free_fn(res.value); /* refused: still ours */
        } else if (me->id % 3 == 1) {
            r->rc[me->id] = pk_future_fail(r->f, PK_ETASK, me->id, NULL);
        } else {
            r->rc[me->id] = pk_future_cancel(r->f);
        }
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

static int
winner_matches_state(struct race *r)
{
    static const pk_future_state by_role[3] = {
        PK_FUTURE_DONE, PK_FUTURE_FAILED, PK_FUTURE_CANCELLED
    };
    int winners = 0;
    int who = -1;

    for (int i = 0; i < RACE_THREADS; i++) {
        if (r->rc[i] == 0) {
            winners++;
            who = i;
        }
    }
    return winners == 1 && pk_future_state_get(r->f) == by_role[who % 3];
}

static void
run_race(struct race *r, void *(*body)(void *),
         int (*check)(struct race *))
{
    pthread_t th[RACE_THREADS];
    struct racer rs[RACE_THREADS];
    int bad = 0;

    pthread_barrier_init(&r->start, NULL, RACE_THREADS + 1);
    pthread_barrier_init(&r->end, NULL, RACE_THREADS + 1);
    for (int i = 0; i < RACE_THREADS; i++) {
        rs[i].race = r;
        rs[i].id = i;
        pthread_create(&th[i], NULL, body, &rs[i]);
    }
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pk_future_create(&r->f, NULL, NULL);
        pthread_barrier_wait(&r->start);
        pthread_barrier_wait(&r->end);
        bad += !check(r);
        pk_future_result(r->f, NULL); /* mark read */
        pk_future_release(r->f);
    }
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&r->start);
    pthread_barrier_destroy(&r->end);
    assert_int_equal(bad, 0);
}

static void
test_exactly_one_finisher_wins_each_race(void **state)
{
    struct race r;

    (void)state;
    memset(&r, 0, sizeof r);
    run_race(&r, finisher, winner_matches_state);
}

/* Thread 0 cancels; the others act as the worker: set_running, then the
 * "task" (record that it ran and whether it saw the flag), then complete.
 * Only one worker may win set_running; the others see PK_EINVAL or
 * PK_ECANCELED. */
static void *
canceller_or_worker(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->race;

    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(&r->start);
        r->ran[me->id] = 0;
        r->saw_flag[me->id] = 0;
        if (me->id == 0) {
            r->rc[0] = pk_future_cancel(r->f);
        } else {
            r->rc[me->id] = pk_future_set_running(r->f);
            if (r->rc[me->id] == 0) {
                r->ran[me->id] = 1;
                r->saw_flag[me->id] = pk_future_cancel_requested(r->f);
                pk_future_complete(r->f, NULL);
            }
        }
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

static int
cancel_or_run_not_both(struct race *r)
{
    int ran = 0;
    int refused = 0;

    for (int i = 1; i < RACE_THREADS; i++) {
        ran += r->ran[i];
        refused += r->rc[i] == PK_ECANCELED;
    }
    if (r->rc[0] == 0) /* cancelled before running: nobody ran */
        return ran == 0 && refused == RACE_THREADS - 1 &&
               pk_future_state_get(r->f) == PK_FUTURE_CANCELLED;
    /* running won: exactly one ran, and the flag is up for it now */
    return r->rc[0] == PK_EAGAIN && ran == 1 &&
           pk_future_cancel_requested(r->f) == 1 &&
           pk_future_state_get(r->f) == PK_FUTURE_DONE;
}

static void
test_cancel_races_set_running_with_one_outcome(void **state)
{
    struct race r;

    (void)state;
    memset(&r, 0, sizeof r);
    run_race(&r, canceller_or_worker, cancel_or_run_not_both);
}

/* ---- waits --------------------------------------------------------------- */

struct later {
    pk_future *f;
    int delay_ms;
    int fail;
};

/* Finishes f after a delay, from another thread. */
static void *
finish_later(void *arg)
{
    struct later *l = arg;

    sleep_ms(l->delay_ms);
    if (l->fail)
        pk_future_fail(l->f, PK_ETASK, 0, "late");
    else
        pk_future_complete(l->f, NULL);
    return NULL;
}

static void
test_wait_times_out_no_earlier_than_timeout(void **state)
{
    pk_future *f;
    uint64_t t0;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    t0 = now_ms();
    assert_int_equal(pk_future_wait(f, 50), PK_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 50);
    pk_future_release(f);
}

static void
test_wait_returns_when_another_thread_completes(void **state)
{
    struct later l = { NULL, 20, 0 };
    pthread_t th;

    (void)state;
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    pthread_create(&th, NULL, finish_later, &l);
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
    sleep_ms(20); /* most are parked by now; the rest find it done */
    assert_int_equal(pk_future_complete(f, NULL), 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(w[i].rc, 0);
    pk_future_release(f);
}

static void
make_futures(pk_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_future_create(&fs[i], NULL, NULL), 0);
}

static void
release_futures(pk_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pk_future_result(fs[i], NULL);
        pk_future_release(fs[i]);
    }
}

static void
test_wait_all_returns_after_all_finish_elsewhere(void **state)
{
    enum { N = 4 };
    pk_future *fs[N];
    struct later l[N];
    pthread_t th[N];

    (void)state;
    make_futures(fs, N);
    assert_int_equal(pk_future_wait_all(fs, N, 0), PK_EAGAIN);
    for (int i = 0; i < N; i++) {
        l[i].f = fs[i];
        l[i].delay_ms = 5 * (N - i);
        l[i].fail = i == 1;
        pthread_create(&th[i], NULL, finish_later, &l[i]);
    }
    assert_int_equal(pk_future_wait_all(fs, N, PK_WAIT_FOREVER), 0);
    for (int i = 0; i < N; i++)
        assert_true(pk_future_wait(fs[i], 0) == 0);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(pk_future_wait_all(fs, N, 0), 0);
    release_futures(fs, N);
}

static void
test_wait_all_times_out_while_one_is_pending(void **state)
{
    pk_future *fs[3];
    uint64_t t0;

    (void)state;
    make_futures(fs, 3);
    pk_future_complete(fs[0], NULL);
    pk_future_complete(fs[2], NULL);
    t0 = now_ms();
    assert_int_equal(pk_future_wait_all(fs, 3, 30), PK_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 30);
    release_futures(fs, 3);
}

static void
test_wait_any_returns_lowest_finished_index(void **state)
{
    pk_future *fs[4];
    size_t idx = 99;

    (void)state;
    make_futures(fs, 4);
    assert_int_equal(pk_future_wait_any(fs, 4, 0, &idx), PK_EAGAIN);
    assert_int_equal(idx, 99);
    pk_future_complete(fs[3], NULL);
    pk_future_cancel(fs[1]);
    assert_int_equal(pk_future_wait_any(fs, 4, 0, &idx), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(pk_future_wait_any(fs, 4, PK_WAIT_FOREVER, &idx), 0);
    assert_int_equal(idx, 1);
    release_futures(fs, 4);
}

static void
check_wait_any_wakes(size_t n)
{
    pk_future *fs[32];
    struct later l;
    pthread_t th;
    size_t idx = 99;

    make_futures(fs, n);
    l.f = fs[n - 2];
    l.delay_ms = 20;
    l.fail = 0;
    pthread_create(&th, NULL, finish_later, &l);
    assert_int_equal(pk_future_wait_any(fs, n, PK_WAIT_FOREVER, &idx), 0);
    assert_int_equal(idx, n - 2);
    pthread_join(th, NULL);
    release_futures(fs, n);
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
    make_futures(fs, 12);
    t0 = now_ms();
    assert_int_equal(pk_future_wait_any(fs, 12, 30, &idx), PK_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 30);
    assert_int_equal(idx, 99);
    t0 = now_ms();
    assert_int_equal(pk_future_wait_any(fs, 2, 30, &idx), PK_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 30);
    release_futures(fs, 12);
}

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
    struct later l = { NULL, 1, 0 };
    pthread_t th;

    (void)state;
    memset(&log, 0, sizeof log);
    assert_int_equal(pk_future_create(&l.f, NULL, NULL), 0);
    assert_int_equal(pk_future_on_complete(l.f, log_callback, &arg), 0);
    pthread_create(&th, NULL, finish_later, &l);
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

/* ---- allocation failures ------------------------------------------------- */

/* Runs op with the k-th allocation failing, for k = 1, 2, ... until op
 * makes fewer than k allocations. Each failing run must return PK_ENOMEM
 * and leave the live count where it was. */
static void
fail_each_allocation(int (*op)(void *), void (*undo)(void *), void *ctx)
{
    for (unsigned long k = 1;; k++) {
        long live = pk__alloc_live();
        int rc;
        unsigned long made;

        pk__alloc_fail_at(k);
        rc = op(ctx);
        made = pk__alloc_fail_at(0);
        if (made < k) {
            assert_int_not_equal(rc, PK_ENOMEM);
            undo(ctx);
            break;
        }
        assert_int_equal(rc, PK_ENOMEM);
        assert_int_equal(pk__alloc_live(), live);
    }
}

static int
op_create(void *ctx)
{
    return pk_future_create(ctx, NULL, NULL);
}

static void
undo_create(void *ctx)
{
    pk_future_release(*(pk_future **)ctx);
}

static void
test_create_fails_cleanly_without_memory(void **state)
{
    pk_future *f = NULL;

    (void)state;
    fail_each_allocation(op_create, undo_create, &f);
}

static void
noop_callback(void *arg, pk_future *f)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static atomic_int noop_calls;

static int
op_on_complete(void *ctx)
{
    return pk_future_on_complete(ctx, noop_callback, &noop_calls);
}

static void
undo_nothing(void *ctx)
{
    (void)ctx;
}

static void
test_on_complete_fails_cleanly_without_memory(void **state)
{
    pk_future *f;

    (void)state;
    atomic_store(&noop_calls, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    fail_each_allocation(op_on_complete, undo_nothing, f); /* pending */
    assert_int_equal(pk_future_complete(f, NULL), 0);
    assert_int_equal(atomic_load(&noop_calls), 1); /* failed ones absent */
    fail_each_allocation(op_on_complete, undo_nothing, f); /* finished */
    assert_int_equal(atomic_load(&noop_calls), 2);
    pk_future_release(f);
}

struct any_ctx {
    pk_future *fs[16];
    size_t n;
};

static int
op_wait_any(void *ctx)
{
    struct any_ctx *c = ctx;
    size_t idx;

    return pk_future_wait_any(c->fs, c->n, 1, &idx);
}

static void
test_wait_any_fails_cleanly_without_memory(void **state)
{
    struct any_ctx c;

    (void)state;
    make_futures(c.fs, 16);
    for (c.n = 2; c.n <= 16; c.n += 14)
        fail_each_allocation(op_wait_any, undo_nothing, &c);
    release_futures(c.fs, 16);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_null_arguments_return_einval),
        T(test_invalid_values_return_einval),
        T(test_new_future_is_pending_and_unfinished),
        T(test_set_running_only_from_pending),
        T(test_complete_from_running_gives_result),
        T(test_complete_with_null_result_is_empty),
        T(test_second_terminal_move_is_refused),
        T(test_fail_records_code_sys_and_message),
        T(test_fail_without_format_uses_strerror),
        T(test_cancel_pending_cancels_at_once),
        T(test_cancel_running_raises_flag_only),
        T(test_failing_with_ecanceled_after_cancel_ends_cancelled),
        T(test_failing_with_ecanceled_unasked_is_a_failure),
        T(test_result_is_freed_at_last_release),
        T(test_take_result_moves_ownership_once),
        T(test_refused_complete_leaves_result_with_caller),
        T(test_unread_failure_is_reported_once),
        T(test_read_failure_is_not_reported),
        T(test_cancelled_or_done_is_not_reported),
        T(test_exactly_one_finisher_wins_each_race),
        T(test_cancel_races_set_running_with_one_outcome),
        T(test_wait_times_out_no_earlier_than_timeout),
        T(test_wait_returns_when_another_thread_completes),
        T(test_completion_wakes_every_waiter),
        T(test_wait_all_returns_after_all_finish_elsewhere),
        T(test_wait_all_times_out_while_one_is_pending),
        T(test_wait_any_returns_lowest_finished_index),
        T(test_wait_any_wakes_when_another_thread_finishes_one),
        T(test_wait_any_times_out_no_earlier_than_timeout),
        T(test_callbacks_run_in_registration_order),
        T(test_callback_on_finished_future_runs_at_once),
        T(test_callbacks_run_on_the_completing_thread),
        T(test_callbacks_racing_completion_run_once_in_order),
        T(test_create_fails_cleanly_without_memory),
        T(test_on_complete_fails_cleanly_without_memory),
        T(test_wait_any_fails_cleanly_without_memory),
    };

    return cmocka_run_group_tests_name("future", tests, NULL, NULL);
}
