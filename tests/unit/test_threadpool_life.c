/* tests/unit/test_threadpool_life.c - the thread pool's life cycle: fork()
 * while it runs, keep-alive retirement, spawning a worker for each task
 * while below max, the worker hooks, resizing while tasks run, every
 * allocation failing in turn, failures nobody reads, and the default size.
 *
 * Worker threads and tasks never call cmocka: they record what they saw
 * in atomics and the main thread asserts (STYLE.md section 5). Waits for
 * something to happen poll with a generous limit (a liveness bound, never
 * a speed claim). Fork children run under alarm() and report through
 * their exit status. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/threadpool.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"

#include "test_util.h"
#include "tp_tasks.h"

/* ---- tasks ------------------------------------------------------------- */

/* What a test that found a task not started prints: enough to tell a
 * lost wake (a worker idle, the task queued) from a slow start. */
static void
print_pool(pk_threadpool *tp)
{
    pk_threadpool_stats st;

    if (pk_threadpool_stats_get(tp, &st) == 0)
        printf("  pool: threads %zu queued %zu running %zu submitted %llu "
               "completed %llu\n",
               st.threads, st.queued, st.running,
               (unsigned long long)st.submitted,
               (unsigned long long)st.completed);
}

static size_t
threads_of(pk_threadpool *tp)
{
    pk_threadpool_stats st;

    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    return st.threads;
}

/* Polls stats.threads until it is at most `want`, for up to limit_ms. */
static size_t
wait_threads_at_most(pk_threadpool *tp, size_t want, int limit_ms)
{
    size_t n = threads_of(tp);

    for (int i = 0; i < limit_ms / 10 && n > want; i++) {
        sleep_ms(10);
        n = threads_of(tp);
    }
    return n;
}

static int
setup(void **state)
{
    (void)state;
    tp_gate_reset();
    return 0;
}

/* ---- fork -------------------------------------------------------------- */

struct churn {
    pk_threadpool *tp;
    atomic_int stop;
    atomic_ulong ops;
    atomic_int bad;              /* an unexpected code, or 0 */
};

static void *
churn_main(void *arg)
{
    struct churn *c = arg;

    while (!atomic_load(&c->stop)) {
        pk_future *f = NULL;
        bool with_future = atomic_load(&c->ops) % 2;
        int rc = pk_threadpool_submit(c->tp, tp_count_task, NULL,
                                      with_future ? &f : NULL);
        if (rc)
            atomic_store(&c->bad, rc);
        if (f) {
            rc = pk_future_wait(f, 1);
            if (rc && rc != PK_ETIMEDOUT)
                atomic_store(&c->bad, rc);
            pk_future_release(f);
        }
        atomic_fetch_add(&c->ops, 1);
    }
    return NULL;
}

/* In the child: every call on the inherited pool returns PK_EFORKED at
 * once. Returns 0 or the number of the first failed check. */
static int
child_checks(pk_threadpool *tp)
{
    pk_task t = { .fn = tp_count_task };
    pk_task many[2] = { { .fn = tp_count_task }, { .fn = tp_count_task } };
    pk_threadpool_stats st;
    pk_executor *ex = NULL;
    pk_future *f = NULL;

    if (pk_threadpool_submit(tp, tp_count_task, NULL, NULL) != PK_EFORKED)
        return 1;
    if (pk_threadpool_submit(tp, tp_count_task, NULL, &f) != PK_EFORKED)
        return 2;
    if (pk_threadpool_submit_task(tp, &t, NULL) != PK_EFORKED)
        return 3;
    if (pk_threadpool_submit_many(tp, many, 2, NULL) != PK_EFORKED)
        return 4;
    if (pk_threadpool_resize(tp, 0, 3) != PK_EFORKED)
        return 5;
    if (pk_threadpool_stats_get(tp, &st) != PK_EFORKED)
        return 6;
    if (pk_threadpool_executor(tp, &ex) != PK_EFORKED)
        return 7;
    if (pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER) !=
        PK_EFORKED)
        return 8;
    if (pk_threadpool_shutdown(tp, PK_SHUTDOWN_CANCEL, 100) != PK_EFORKED)
        return 9;
    return 0;
}

/* In the child (plain builds): destroying the inherited pool returns
 * (it only frees memory) and a new pool runs tasks. */
static int
child_destroy_and_new_pool(pk_threadpool *tp)
{
    pk_threadpool_options o = { .max_threads = 2 };
    pk_threadpool *q;
    pk_future *f;

    pk_threadpool_destroy(tp);
    if (pk_threadpool_create(&q, &o) != 0)
        return 20;
    if (pk_threadpool_submit(q, tp_fail_task, NULL, &f) != 0)
        return 21;
    if (pk_future_wait(f, 3000) != 0)
        return 22;
    if (pk_future_result(f, NULL) != PK_ETASK)
        return 23;
    pk_future_release(f);
    if (pk_threadpool_shutdown(q, PK_SHUTDOWN_DRAIN, 3000) != 0)
        return 24;
    pk_threadpool_destroy(q);
    return 0;
}

static void
fork_and_check(pk_threadpool *tp, bool destroy)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int rc;
        alarm(5);
        rc = child_checks(tp);
        if (rc == 0 && destroy)
            rc = child_destroy_and_new_pool(tp);
        _exit(rc);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (hung: alarm)" : "");
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status))
        fail_msg("child check %d failed", WEXITSTATUS(status));
}

/* A task that forks and returns in the child: the child's copy of the
 * worker must not go on with the parent's queue (those tasks would run
 * twice); the child ends with status 0. The queued task writes its pid
 * to a pipe: only the parent's may show up. */
static int fork_pipe[2];

static int
writes_pid(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pid_t me = getpid();

    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    return write(fork_pipe[1], &me, sizeof me) == sizeof me ? 0 : PK_ETASK;
}

static int
forks_and_returns(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pid_t pid, *child = arg;

    (void)self;
    (void)out;
    (void)err;
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        alarm(5);
        return 0; /* the child returns from the task */
    }
    *child = pid;
    return pid > 0 ? 0 : PK_ETASK;
}

static void
test_child_returning_from_a_forking_task_runs_no_queued_task(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_threadpool *tp;
    pk_future *forker;
    pid_t child = 0, seen[4];
    int status;
    ssize_t got;

    (void)state;
    if (SANITIZED) {
        printf("  skip: a child forked from a task of a threaded parent "
               "(sanitizer build: the child may hang in the sanitizer's "
               "allocator)\n");
        return;
    }
    assert_int_equal(pipe(fork_pipe), 0);
    tp_gate_reset();
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    /* The only worker: gated, so the two tasks below queue behind it. */
    assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    assert_int_equal(pk_threadpool_submit(tp, forks_and_returns, &child,
                                          &forker), 0);
    assert_int_equal(pk_threadpool_submit(tp, writes_pid, NULL, NULL), 0);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait(forker, 10000), 0);
    assert_int_equal(pk_future_result(forker, NULL), 0);
    pk_future_release(forker);
    assert_true(child > 0);
    assert_int_equal(waitpid(child, &status, 0), child);
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d%s", WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? " (hung: alarm)" : "");
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
    close(fork_pipe[1]);
    got = read(fork_pipe[0], seen, sizeof seen);
    close(fork_pipe[0]);
    assert_int_equal(got, (ssize_t)sizeof(pid_t)); /* one task ran once */
    assert_int_equal(seen[0], getpid());
}

/* Threads submit and tasks run (some blocked on the gate, some queued
 * behind them) in the parent while it forks. */
static void
test_fork_while_running_child_gets_eforked(void **state)
{
    enum { CHURN = 2, QUEUED = 200 };
    pk_threadpool_options o = { .max_threads = 2 };
    pk_threadpool *tp;
    pk_future *gated[2], *queued[QUEUED];
    struct churn c;
    pthread_t th[CHURN];
    bool destroy = !SANITIZED;
    long live0 = pk__alloc_live();

    (void)state;
    if (!destroy)
        printf("  skip: destroy and a new pool in a child forked from a "
               "threaded parent (sanitizer build: the child may hang in "
               "the sanitizer's allocator); the child checks PK_EFORKED "
               "only\n");
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    /* Both workers block on the gate; the queued tasks wait behind. */
    for (int i = 0; i < 2; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL,
                                              &gated[i]), 0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 2), 2);
    for (int i = 0; i < QUEUED; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL,
                                              &queued[i]), 0);
    c.tp = tp;
    atomic_init(&c.stop, 0);
    atomic_init(&c.ops, 0);
    atomic_init(&c.bad, 0);
    for (int i = 0; i < CHURN; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn_main, &c), 0);
    for (int round = 0; round < 5; round++) {
        unsigned long before = atomic_load(&c.ops);
        while (atomic_load(&c.ops) < before + 20)
            sched_yield();
        if (round == 2)
            tp_gate_set(1); /* later forks happen while tasks run */
        fork_and_check(tp, destroy);
    }
    atomic_store(&c.stop, 1);
    for (int i = 0; i < CHURN; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&c.bad), 0);
    /* The parent's pool and its work were untouched by the children. */
    assert_int_equal(pk_future_wait_all(gated, 2, 10000), 0);
    assert_int_equal(pk_future_wait_all(queued, QUEUED, 10000), 0);
    for (int i = 0; i < QUEUED; i++) {
        assert_int_equal(pk_future_result(queued[i], NULL), 0);
        pk_future_release(queued[i]);
    }
    pk_future_release(gated[0]);
    pk_future_release(gated[1]);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_stats st;
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.submitted, st.completed);
    assert_int_equal(st.failed + st.cancelled, 0);
    assert_int_equal((uint64_t)atomic_load(&tp_counter), st.completed - 2);
    pk_threadpool_destroy(tp);
    assert_int_equal(settled_live(live0), live0);
}

/* ---- keep-alive -------------------------------------------------------- */

static void
keep_alive_case(size_t min_threads)
{
    pk_threadpool_options o = { .min_threads = min_threads,
                                .max_threads = 3, .keep_alive_ms = 50 };
    pk_threadpool *tp;
    pk_future *f[3];

    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &f[i]),
                         0);
    /* The burst makes three workers (wait until they all run). */
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 3), 3);
    assert_int_equal(threads_of(tp), 3);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait_all(f, 3, 10000), 0);
    for (int i = 0; i < 3; i++)
        pk_future_release(f[i]);
    /* The core's maintenance (every second) retires idle ones above
     * min_threads once they were idle 50 ms. */
    assert_int_equal(wait_threads_at_most(tp, min_threads, 5000),
                     min_threads);
    /* And it keeps min_threads: two more periods change nothing. */
    sleep_ms(2200);
    assert_int_equal(threads_of(tp), min_threads);
    /* The pool still runs work afterwards. */
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&tp_counter), 1);
    pk_threadpool_destroy(tp);
}

static void
test_keep_alive_retires_idle_workers_down_to_zero(void **state)
{
    (void)state;
    keep_alive_case(0);
}

static void
test_keep_alive_keeps_min_threads(void **state)
{
    (void)state;
    keep_alive_case(1);
}

/* ---- spawning ---------------------------------------------------------- */

/* Below max with no idle worker, each task gets a worker of its own: the
 * four gated tasks all run before the gate opens (else one waits in the
 * queue behind a blocked worker). */
static void
test_each_task_gets_a_new_worker_while_below_max(void **state)
{
    pk_threadpool_options o = { .max_threads = 4 };
    pk_threadpool *tp;
    int seen;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    seen = tp_wait_at_least(&tp_gate_arrived, 4);
    if (seen != 4) {
        printf("  only %d of 4 gated tasks started\n", seen);
        print_pool(tp);
    }
    assert_int_equal(seen, 4);
    assert_int_equal(threads_of(tp), 4);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
}

/* The same from submit_many: one call queues four gated tasks. */
static void
test_submit_many_starts_a_worker_per_task_while_below_max(void **state)
{
    pk_threadpool_options o = { .max_threads = 4 };
    pk_task t[4];
    pk_threadpool *tp;
    int seen;

    (void)state;
    for (int i = 0; i < 4; i++)
        t[i] = (pk_task){ .fn = tp_gated_task };
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit_many(tp, t, 4, NULL), 0);
    seen = tp_wait_at_least(&tp_gate_arrived, 4);
    if (seen != 4) {
        printf("  only %d of 4 gated tasks started\n", seen);
        print_pool(tp);
    }
    assert_int_equal(seen, 4);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
}

/* ---- worker hooks ------------------------------------------------------ */

static atomic_int n_init, n_exit, hook_bad;
static _Thread_local int tls_inited, tls_exited;

static void
on_worker_init(void *user)
{
    if (user != &n_init || tls_inited++ || tls_exited)
        atomic_fetch_add(&hook_bad, 1);
    atomic_fetch_add(&n_init, 1);
}

static void
on_worker_exit(void *user)
{
    if (user != &n_init || tls_inited != 1 || tls_exited++)
        atomic_fetch_add(&hook_bad, 1);
    atomic_fetch_add(&n_exit, 1);
}

/* A task checks that it runs on a thread whose init hook ran. */
static int
hooked_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    if (tls_inited != 1 || tls_exited)
        atomic_fetch_add(&hook_bad, 1);
    return tp_gated_task(arg, self, out, err);
}

static void
test_worker_hooks_run_once_per_worker(void **state)
{
    pk_threadpool_options o = { .max_threads = 3, .keep_alive_ms = 50,
                                .worker_init = on_worker_init,
                                .worker_exit = on_worker_exit,
                                .user = &n_init };
    pk_threadpool *tp;

    (void)state;
    atomic_store(&n_init, 0);
    atomic_store(&n_exit, 0);
    atomic_store(&hook_bad, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int round = 0; round < 2; round++) {
        atomic_store(&tp_gate_arrived, 0);
        tp_gate_set(0);
        for (int i = 0; i < 3; i++)
            assert_int_equal(pk_threadpool_submit(tp, hooked_task, NULL,
                                                  NULL), 0);
        assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 3), 3);
        tp_gate_set(1);
        /* Let keep-alive retire them, so round 2 starts new workers. */
        assert_int_equal(wait_threads_at_most(tp, 0, 5000), 0);
        /* A retired worker leaves the count before its thread runs the
         * exit hook and ends. */
        for (int i = 0; i < 5000 && atomic_load(&n_exit) !=
                                        atomic_load(&n_init); i++)
            sleep_ms(1);
        assert_int_equal(atomic_load(&n_exit), atomic_load(&n_init));
    }
    assert_true(atomic_load(&n_init) >= 6);
    pk_threadpool_destroy(tp);
    assert_int_equal(atomic_load(&n_exit), atomic_load(&n_init));
    assert_int_equal(atomic_load(&hook_bad), 0);
}

/* ---- resize ------------------------------------------------------------ */

static void
test_resize_while_running_grows_and_shrinks(void **state)
{
    pk_threadpool_options o = { .max_threads = 1 };
    pk_threadpool *tp;
    pk_future *f[3];
    int seen;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &f[i]),
                         0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    sleep_ms(50);
    assert_int_equal(atomic_load(&tp_gate_arrived), 1); /* max 1 holds */
    assert_int_equal(pk_threadpool_resize(tp, 0, 3), 0);
    seen = tp_wait_at_least(&tp_gate_arrived, 3);
    if (seen != 3)
        printf("  after growing to 3: only %d of 3 gated tasks started "
               "(threads %zu)\n", seen, threads_of(tp));
    assert_int_equal(seen, 3);
    assert_int_equal(atomic_load(&tp_gate_most), 3);
    /* Shrink while all three run: they finish, then go. */
    assert_int_equal(pk_threadpool_resize(tp, 0, 1), 0);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait_all(f, 3, 10000), 0);
    for (int i = 0; i < 3; i++)
        pk_future_release(f[i]);
    assert_true(wait_threads_at_most(tp, 1, 5000) <= 1);
    /* One at a time again. */
    atomic_store(&tp_gate_arrived, 0);
    atomic_store(&tp_gate_most, 0);
    tp_gate_set(0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, &f[i]),
                         0);
    assert_int_equal(tp_wait_at_least(&tp_gate_arrived, 1), 1);
    sleep_ms(50);
    assert_int_equal(atomic_load(&tp_gate_arrived), 1);
    tp_gate_set(1);
    assert_int_equal(pk_future_wait_all(f, 3, 10000), 0);
    assert_int_equal(atomic_load(&tp_gate_most), 1);
    for (int i = 0; i < 3; i++)
        pk_future_release(f[i]);
    pk_threadpool_destroy(tp);
}

/* ---- allocation failures ----------------------------------------------- */

/* One scenario: create, submit with a future, wait, destroy. The k-th
 * allocation fails (k = 0: none). Records what went wrong in *why
 * (0 = fine). Returns the allocations made. */
static unsigned long
alloc_scenario(unsigned long k, size_t min_threads, int *why)
{
    pk_threadpool_options o = { .min_threads = min_threads,
                                .max_threads = 2 };
    pk_threadpool *tp = NULL;
    pk_future *f = NULL;
    unsigned long made;
    int rc;

    *why = 0;
    pk__alloc_fail_at(k);
    rc = pk_threadpool_create(&tp, &o);
    if (rc == PK_ENOMEM || rc == PK_ECREATE) {
        made = pk__alloc_fail_at(0);
        if (tp)
            *why = 1; /* failed create left a pool */
        return made;
    }
    if (rc) {
        pk__alloc_fail_at(0);
        *why = 2;
        return 0;
    }
    rc = pk_threadpool_submit(tp, tp_count_task, NULL, &f);
    if (rc == 0) {
        /* Accepted: it must run, even if a worker could not be made on
         * the first try. */
        rc = pk_future_wait(f, 10000);
        if (rc)
            *why = 3;
        else if (pk_future_result(f, NULL) != 0)
            *why = 4;
        pk_future_release(f);
    } else if (rc != PK_ENOMEM) {
        *why = 5;
    } else if (f) {
        *why = 6; /* a failed submit left a future */
    }
    if (!*why && pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000) != 0)
        *why = 7;
    made = pk__alloc_fail_at(0);
    pk_threadpool_destroy(tp);
    return made;
}

static void
alloc_failure_loop(size_t min_threads)
{
    /* A worker retired on its own thread frees itself just after the
     * previous test's destroy returned: start from the settled count. */
    long live0 = settled_live(0);
    unsigned long k;
    int why;
    unsigned long total = alloc_scenario(0, min_threads, &why);

    assert_int_equal(why, 0);
    assert_int_equal(settled_live(live0), live0);
    assert_true(total > 0);
    for (k = 1; k < 1000; k++) {
        unsigned long made = alloc_scenario(k, min_threads, &why);
        if (why)
            fail_msg("min_threads %zu, allocation %lu failing: case %d",
                     min_threads, k, why);
        long live = settled_live(live0);
        if (live != live0)
            fail_msg("min_threads %zu, allocation %lu failing: %ld "
                     "allocations leaked", min_threads, k, live - live0);
        if (made < k)
            break; /* the scenario no longer reaches the k-th */
    }
    printf("  min_threads %zu: %lu allocations, each failed in turn\n",
           min_threads, k - 1);
    assert_true(k < 1000);
}

static void
test_alloc_failures_min0_return_enomem_and_leak_nothing(void **state)
{
    (void)state;
    alloc_failure_loop(0);
}

static void
test_alloc_failures_min1_return_enomem_and_leak_nothing(void **state)
{
    (void)state;
    alloc_failure_loop(1);
}

/* ---- thread creation fails --------------------------------------------- */

static void
wait_all_counted(pk_future **f, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(pk_future_wait(f[i], 10000), 0);
        assert_int_equal(pk_future_result(f[i], NULL), 0);
        pk_future_release(f[i]);
    }
}

/* A process at its thread limit: create fails cleanly when the pool's
 * timer thread cannot start; a pool whose workers cannot start keeps its
 * tasks queued (none is lost, none runs on the submitter) and runs them
 * once threads can start again. */
static void
test_thread_creation_failures_strand_no_task(void **state)
{
    long live0 = settled_live(0);
    pk_threadpool_options o = { .max_threads = 2 };
    pk_threadpool_stats st;
    pk_threadpool *tp;
    pk_future *f[20];

    (void)state;
    atomic_store(&tp_counter, 0);
    pk__thread_fail_next(1); /* the timer */
    assert_int_equal(pk_threadpool_create(&tp, &o), PK_ECREATE);
    pk__thread_fail_next(0);
    assert_int_equal(settled_live(live0), live0);

    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    pk__thread_fail_next(1000000);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, &f[i]),
                         0);
    sleep_ms(50);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.threads, 0);
    assert_int_equal(st.queued, 20);
    assert_int_equal(atomic_load(&tp_counter), 0);
    pk__thread_fail_next(0);
    wait_all_counted(f, 20);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_true(st.threads > 0);
    assert_int_equal(st.completed, 20);
    assert_int_equal(atomic_load(&tp_counter), 20);
    pk_threadpool_destroy(tp);
    assert_int_equal(settled_live(live0), live0);
}

/* ---- failures nobody reads --------------------------------------------- */

static atomic_int unread_events, other_events;

static void
on_event(void *user, const pk_event *ev)
{
    if (user != &unread_events)
        atomic_fetch_add(&other_events, 1);
    else if (ev->kind == PK_EVENT_FUTURE_UNREAD)
        atomic_fetch_add(&unread_events, 1);
}

static void
test_fire_and_forget_failure_without_hook_is_harmless(void **state)
{
    pk_threadpool_options o = { .max_threads = 2 };
    pk_threadpool *tp;
    pk_future *f;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, NULL), 0);
    /* A failed future released unread, no hook either. */
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, &f), 0);
    assert_int_equal(pk_future_wait(f, 10000), 0);
    pk_future_release(f);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_stats st;
    assert_int_equal(pk_threadpool_stats_get(tp, &st), 0);
    assert_int_equal(st.failed, 51);
    pk_threadpool_destroy(tp);
}

static void
test_failed_future_released_unread_reaches_event_hook(void **state)
{
    pk_threadpool_options o = { .max_threads = 2, .event = on_event,
                                .event_user = &unread_events };
    pk_threadpool *tp;
    pk_future *unread, *read, *ok;

    (void)state;
    atomic_store(&unread_events, 0);
    atomic_store(&other_events, 0);
    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, &unread), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, &read), 0);
    assert_int_equal(pk_threadpool_submit(tp, tp_count_task, NULL, &ok), 0);
    assert_int_equal(pk_future_wait(unread, 10000), 0);
    assert_int_equal(pk_future_wait(read, 10000), 0);
    assert_int_equal(pk_future_wait(ok, 10000), 0);
    assert_int_equal(pk_future_result(read, NULL), PK_ETASK);
    pk_future_release(read);
    pk_future_release(ok);
    assert_int_equal(atomic_load(&unread_events), 0);
    /* The worker may still hold its reference (it lets go just after it
     * settles the future): the last release, ours or its, reports. */
    pk_future_release(unread);
    assert_int_equal(tp_wait_at_least(&unread_events, 1), 1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    pk_threadpool_destroy(tp);
    assert_int_equal(atomic_load(&unread_events), 1);
    assert_int_equal(atomic_load(&other_events), 0);
}

/* ---- the default size -------------------------------------------------- */

/* max_threads 0: as many workers as CPUs in the calling thread's
 * affinity mask. n + 2 gated tasks: exactly n run at once. */
static void
default_size_case(int cpus)
{
    pk_threadpool *tp;
    int n = cpus + 2;

    atomic_store(&tp_gate_arrived, 0);
    atomic_store(&tp_gate_most, 0);
    tp_gate_set(0);
    assert_int_equal(pk_threadpool_create(&tp, NULL), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(pk_threadpool_submit(tp, tp_gated_task, NULL, NULL), 0);
    int seen = tp_wait_at_least(&tp_gate_arrived, cpus);
    if (seen != cpus)
        printf("  %d CPUs: only %d gated tasks started (threads %zu)\n",
               cpus, seen, threads_of(tp));
    assert_int_equal(seen, cpus);
    sleep_ms(100);
    assert_int_equal(atomic_load(&tp_gate_arrived), cpus); /* no more */
    assert_int_equal(threads_of(tp), (size_t)cpus);
    tp_gate_set(1);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(atomic_load(&tp_gate_most), cpus);
    pk_threadpool_destroy(tp);
}

static void
test_default_size_is_the_cpus_this_process_may_use(void **state)
{
    cpu_set_t all, one;
    int cpus, first = -1;

    (void)state;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    cpus = CPU_COUNT(&all);
    assert_true(cpus >= 1);
    default_size_case(cpus);
    if (cpus < 2) {
        printf("  skip: the one-CPU mask case (only %d CPU allowed)\n",
               cpus);
        return;
    }
    /* A narrower mask on the creating thread: one CPU, one worker. */
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &all))
            first = i;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    default_size_case(1);
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
}

/* ---- futures made and released on every side --------------------------- */

#define FUT_SUBMITTERS 2
#define FUT_TASKS 3000

/* Submits a child (a future made on the worker thread) and waits for
 * it. */
static int
parent_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    pk_threadpool *tp = arg;
    pk_future *child;
    int rc;

    (void)self;
    (void)out;
    rc = pk_threadpool_submit(tp, tp_count_task, NULL, &child);
    if (rc)
        return pk_error_set(err, rc, 0, "child submit");
    rc = pk_future_wait(child, PK_WAIT_FOREVER);
    pk_future_release(child);
    return rc;
}

struct fut_sub {
    pk_threadpool *tp;
    atomic_int bad;
};

static void *
fut_submitter(void *arg)
{
    struct fut_sub *c = arg;
    static pk_future *fs[FUT_SUBMITTERS][FUT_TASKS];
    static atomic_int next;
    int me = atomic_fetch_add(&next, 1) % FUT_SUBMITTERS;

    for (int i = 0; i < FUT_TASKS; i++)
        if (pk_threadpool_submit(c->tp, i % 3 ? tp_count_task : parent_task,
                                 c->tp, &fs[me][i]) != 0) {
            atomic_store(&c->bad, 1);
            fs[me][i] = NULL;
        }
    /* Released here, on the thread that made them, or by the workers. */
    for (int i = 0; i < FUT_TASKS; i++) {
        if (fs[me][i] && pk_future_wait(fs[me][i], PK_WAIT_FOREVER) != 0)
            atomic_store(&c->bad, 1);
        pk_future_release(fs[me][i]);
    }
    return NULL;
}

/* Futures made by submitters and by workers (nested submits), released
 * on either side: once all is released and every thread that made
 * futures is gone, nothing stays allocated. */
static void
test_futures_leak_nothing_once_threads_exit(void **state)
{
    pthread_t th[FUT_SUBMITTERS];
    struct fut_sub c;
    pk_threadpool_options o;
    /* Settled: the previous test's pool may be freed by its last worker
     * thread just after pk_threadpool_destroy returned. */
    long live0 = settled_live(0);

    (void)state;
    memset(&o, 0, sizeof o);
    o.max_threads = 2;
    o.queue_size = 256;
    assert_int_equal(pk_threadpool_create(&c.tp, &o), 0);
    atomic_init(&c.bad, 0);
    for (int i = 0; i < FUT_SUBMITTERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, fut_submitter, &c),
                         0);
    for (int i = 0; i < FUT_SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&c.bad), 0);
    assert_int_equal(atomic_load(&tp_counter),
                     FUT_SUBMITTERS * FUT_TASKS); /* 1/3 parents */
    pk_threadpool_destroy(c.tp);
    assert_int_equal(settled_live(live0), live0);
}

/* A failed test leaves its gated tasks blocked: let them go, so that
 * they do not count in the next test's gate. */
static int
teardown(void **state)
{
    (void)state;
    tp_gate_set(1);
    for (int i = 0; i < 2000 && atomic_load(&tp_gate_inside) > 0; i++)
        sleep_ms(1);
    return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_fork_while_running_child_gets_eforked),
        T(test_child_returning_from_a_forking_task_runs_no_queued_task),
        T(test_keep_alive_retires_idle_workers_down_to_zero),
        T(test_keep_alive_keeps_min_threads),
        T(test_each_task_gets_a_new_worker_while_below_max),
        T(test_submit_many_starts_a_worker_per_task_while_below_max),
        T(test_worker_hooks_run_once_per_worker),
        T(test_resize_while_running_grows_and_shrinks),
        T(test_thread_creation_failures_strand_no_task),
        T(test_alloc_failures_min0_return_enomem_and_leak_nothing),
        T(test_alloc_failures_min1_return_enomem_and_leak_nothing),
        T(test_fire_and_forget_failure_without_hook_is_harmless),
        T(test_failed_future_released_unread_reaches_event_hook),
        T(test_default_size_is_the_cpus_this_process_may_use),
        T(test_futures_leak_nothing_once_threads_exit),
    };
    return cmocka_run_group_tests_name("threadpool_life", tests, NULL, NULL);
}
