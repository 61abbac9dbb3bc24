/* tests/unit/test_future.c - pk_future: arguments, the state machine,
 * exactly-once completion under races, the unread-failure report, result
 * ownership and allocation failures. Waits are in test_future_wait.c,
 * completion callbacks in test_future_callbacks.c.
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

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poolkit/future.h>

#include "alloc.h"
#include "executor_int.h"
#include "future_helpers.h"
#include "test_util.h"

#define RACE_ROUNDS 2000
#define RACE_THREADS 4

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
    fh_recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
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
    atomic_store(&fh_frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    pk_result r = fh_counted_result(7);
    assert_int_equal(pk_future_complete(f, &r), 0);
    assert_ptr_equal(pk_future_ref(f), f);
    pk_future_release(f);
    assert_int_equal(atomic_load(&fh_frees), 0);
    pk_future_release(f);
    assert_int_equal(atomic_load(&fh_frees), 1);
}

static void
test_take_result_moves_ownership_once(void **state)
{
    pk_future *f;
    pk_result out;
    pk_result again;

    (void)state;
    atomic_store(&fh_frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    pk_result r = fh_counted_result(42);
    assert_int_equal(pk_future_complete(f, &r), 0);
    assert_int_equal(pk_future_take_result(f, &out), 0);
    assert_int_equal(*(int *)out.value, 42);
    assert_int_equal(pk_future_take_result(f, &again), PK_EINVAL);
    assert_int_equal(pk_future_result(f, &again), PK_EINVAL);
    pk_future_release(f);
    assert_int_equal(atomic_load(&fh_frees), 0);
    out.free_fn(out.value);
    assert_int_equal(atomic_load(&fh_frees), 1);
}

static void
test_refused_complete_leaves_result_with_caller(void **state)
{
    pk_future *f;

    (void)state;
    atomic_store(&fh_frees, 0);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    pk_result r = fh_counted_result(1);
    assert_int_equal(pk_future_complete(f, &r), PK_EINVAL);
    pk_future_release(f);
    assert_int_equal(atomic_load(&fh_frees), 0);
    r.free_fn(r.value);
}

/* future.h: a future released twice aborts on an assertion. In a child
 * (no other thread is alive: safe under the sanitizers too); ASan stops
 * it at the freed memory first, with its own report and exit code. */
static void
test_second_release_aborts(void **state)
{
    pid_t pid;
    int status;

    (void)state;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pk_future *f;
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDERR_FILENO); /* the assertion's message */
        signal(SIGABRT, SIG_DFL);
        alarm(10);
        if (pk_future_create(&f, NULL, NULL) != 0)
            _exit(2);
        pk_future_release(f);
        pk_future_release(f);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!SANITIZED) {
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGABRT);
    } else {
        assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* ---- the unread-failure report ----------------------------------------- */

static void
test_unread_failure_is_reported_once(void **state)
{
    fh_recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
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
    fh_recorder rec = { 0 };
    pk_future *f;
    pk_result res;
    pk_error err;

    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
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
    fh_recorder rec = { 0 };
    pk_future *f;

    (void)state;
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
    assert_int_equal(pk_future_cancel(f), 0);
    pk_future_release(f);
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
    assert_int_equal(pk_future_complete(f, NULL), 0);
    pk_future_release(f);
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
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
            pk_result res = fh_counted_result(round);
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
    fh_make_futures(c.fs, 16);
    for (c.n = 2; c.n <= 16; c.n += 14)
        fail_each_allocation(op_wait_any, undo_nothing, &c);
    fh_release_futures(c.fs, 16);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

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
        T(test_second_release_aborts),
        T(test_unread_failure_is_reported_once),
        T(test_read_failure_is_not_reported),
        T(test_cancelled_or_done_is_not_reported),
        T(test_exactly_one_finisher_wins_each_race),
        T(test_cancel_races_set_running_with_one_outcome),
        T(test_create_fails_cleanly_without_memory),
        T(test_on_complete_fails_cleanly_without_memory),
        T(test_wait_any_fails_cleanly_without_memory),
    };

    return cmocka_run_group_tests_name("future", tests, NULL, NULL);
}
