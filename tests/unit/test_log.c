/* tests/unit/test_log.c - no failure is silent by default: with no event
 * hook, a failed future released unread and a fire-and-forget task's
 * failure (the inline executor, the thread pool: failed, or never ran)
 * write one line to stderr (lib/kit/log.c); a hook replaces the line;
 * POOLKIT_LOG=off silences it; the lines are rate-limited, with a summary
 * of what was dropped; a closed stderr pipe raises no SIGPIPE. A pool
 * closed or destroyed with a lease out writes a line for each, with its
 * acquire site.
 *
 * stderr is captured by pointing fd 2 at a temporary file for the length
 * of a test step. Every test resets the logger (pk__log_reset) first. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/executor.h>
#include <poolkit/future.h>
#include <poolkit/pool.h>
#include <poolkit/threadpool.h>

#include "future_helpers.h"
#include "log.h"
#include "pool_helpers.h"
#include "sync.h"
#include "test_util.h"
#include "tp_tasks.h"

/* ---- capturing stderr -------------------------------------------------- */

static FILE *cap_file;
static int cap_saved = -1;
static char cap_buf[8192];

static void
capture_start(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    assert_non_null(cap_file);
    cap_saved = dup(STDERR_FILENO);
    assert_true(cap_saved >= 0);
    assert_true(dup2(fileno(cap_file), STDERR_FILENO) >= 0);
}

/* Puts stderr back; returns what was written meanwhile. */
static const char *
capture_end(void)
{
    size_t n;

    fflush(stderr);
    dup2(cap_saved, STDERR_FILENO);
    close(cap_saved);
    cap_saved = -1;
    rewind(cap_file);
    n = fread(cap_buf, 1, sizeof cap_buf - 1, cap_file);
    cap_buf[n] = '\0';
    fclose(cap_file);
    cap_file = NULL;
    return cap_buf;
}

static int
count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void
assert_contains(const char *s, const char *want)
{
    if (!strstr(s, want))
        fail_msg("stderr \"%s\" lacks \"%s\"", s, want);
}

static int
setup(void **state)
{
    unsetenv("POOLKIT_LOG");
    pk__log_reset();
    return fh_setup(state);
}

static int
teardown(void **state)
{
    unsetenv("POOLKIT_LOG");
    pk__log_reset();
    return fh_teardown(state);
}

/* ---- the logger -------------------------------------------------------- */

static void
test_log_writes_one_line_with_name_and_message(void **state)
{
    pk_error e;
    const char *out;

    (void)state;
    pk_error_set(&e, PK_ECONNECT, 111, "connect to 10.0.0.1:5432 refused");
    capture_start();
    pk__log_failure("a lease was still out at close, acquired at app.c:12",
                    &e);
    pk_error_clear(&e); /* an empty message: the code's text stands in */
    e.code = PK_ETASK;
    pk__log_failure("something else", &e);
    pk__log_failure("no detail at all", NULL);
    out = capture_end();
    assert_int_equal(count_lines(out), 3);
    assert_contains(out, "poolkit: a lease was still out at close, acquired "
                         "at app.c:12: PK_ECONNECT: connect to "
                         "10.0.0.1:5432 refused\n");
    assert_contains(out, "poolkit: something else: PK_ETASK: the task "
                         "failed\n");
    assert_contains(out, "poolkit: no detail at all\n");
}

static void
test_log_is_rate_limited_and_says_how_many_were_dropped(void **state)
{
    pk_error e;
    const char *out;
    uint64_t sec;

    (void)state;
    pk_error_set(&e, PK_ETASK, 0, "storm");
    /* Start early in a second, so the burst stays in one window. */
    while (pk__now_ns() % 1000000000u > 300000000u)
        sleep_ms(5);
    sec = pk__now_ns() / 1000000000u;
    capture_start();
    for (int i = 0; i < PK__LOG_PER_SECOND + 15; i++)
        pk__log_failure("burst", &e);
    out = capture_end();
    assert_int_equal(count_lines(out), PK__LOG_PER_SECOND);

    /* The next second's first line comes after the summary. */
    while (pk__now_ns() / 1000000000u == sec)
        sleep_ms(5);
    capture_start();
    pk__log_failure("after", &e);
    out = capture_end();
    assert_int_equal(count_lines(out), 2);
    assert_contains(out, "poolkit: 15 more failure lines dropped");
    assert_true(strstr(out, "dropped") < strstr(out, "poolkit: after"));
}

static void
test_log_off_in_the_environment_silences_it(void **state)
{
    pk_future *f;
    const char *out;

    (void)state;
    setenv("POOLKIT_LOG", "off", 1);
    pk__log_reset(); /* read again: the library reads it once */
    capture_start();
    pk__log_failure("hidden", NULL);
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, "hidden too"), 0);
    pk_future_release(f);
    out = capture_end();
    assert_string_equal(out, "");

    setenv("POOLKIT_LOG", "on", 1); /* anything else logs */
    pk__log_reset();
    capture_start();
    pk__log_failure("shown", NULL);
    out = capture_end();
    assert_string_equal(out, "poolkit: shown\n");
}

/* In a child whose stderr is a pipe nobody reads: a SIGPIPE would kill
 * it (default action), or stay pending where the thread blocks it. */
static int
log_to_closed_pipe(void)
{
    sigset_t set, pending;
    int p[2];

    if (pipe(p) != 0 || dup2(p[1], STDERR_FILENO) < 0)
        return 2;
    close(p[0]);
    close(p[1]);
    signal(SIGPIPE, SIG_DFL);
    pk__log_reset();
    pk__log_failure("into a closed pipe", NULL); /* unblocked: lethal */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pk__log_failure("into a closed pipe, blocked", NULL);
    sigpending(&pending);
    return sigismember(&pending, SIGPIPE) ? 3 : 0;
}

static void
test_log_to_a_closed_pipe_raises_no_sigpipe(void **state)
{
    pid_t pid;
    int st;

    (void)state;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(log_to_closed_pipe());
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        fail_msg("the child died of signal %d", WTERMSIG(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- futures ------------------------------------------------------------ */

static void
test_unread_failed_future_without_hook_writes_a_line(void **state)
{
    pk_future *f;
    const char *out;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 5, "disk %d full", 3), 0);
    capture_start();
    pk_future_release(f);
    out = capture_end();
    assert_string_equal(out, "poolkit: a failed future was released "
                             "unread: PK_ETASK: disk 3 full\n");
}

static void
test_read_or_done_future_writes_nothing(void **state)
{
    pk_future *f, *g, *h;
    pk_error e;
    const char *out;

    (void)state;
    assert_int_equal(pk_future_create(&f, NULL, NULL), 0);
    assert_int_equal(pk_future_create(&g, NULL, NULL), 0);
    assert_int_equal(pk_future_create(&h, NULL, NULL), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, "read"), 0);
    assert_int_equal(pk_future_error(f, &e), 0);
    assert_int_equal(pk_future_complete(g, NULL), 0);
    assert_int_equal(pk_future_cancel(h), 0);
    capture_start();
    pk_future_release(f);
    pk_future_release(g);
    pk_future_release(h);
    out = capture_end();
    assert_string_equal(out, "");
}

static void
test_a_hook_replaces_the_line(void **state)
{
    fh_recorder rec;
    pk_future *f;
    const char *out;

    (void)state;
    memset(&rec, 0, sizeof rec);
    assert_int_equal(pk_future_create(&f, fh_record_event, &rec), 0);
    assert_int_equal(pk_future_fail(f, PK_ETASK, 0, "to the hook"), 0);
    capture_start();
    pk_future_release(f);
    out = capture_end();
    assert_string_equal(out, "");
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(rec.kind, PK_EVENT_FUTURE_UNREAD);
    assert_string_equal(rec.msg, "to the hook");
}

/* ---- fire-and-forget tasks ---------------------------------------------- */

static void
test_inline_fire_and_forget_failure_writes_a_line(void **state)
{
    pk_executor *ex;
    pk_task t = { .fn = tp_fail_task };
    const char *out;

    (void)state;
    assert_int_equal(pk_inline_executor_create(&ex, NULL, NULL, NULL), 0);
    capture_start();
    assert_int_equal(pk_executor_submit(ex, &t, NULL), 0);
    out = capture_end();
    pk_executor_destroy(ex);
    assert_string_equal(out, "poolkit: a fire-and-forget task failed: "
                             "PK_ETASK: task says no\n");
}

static void
test_threadpool_fire_and_forget_failure_writes_a_line(void **state)
{
    pk_threadpool *tp;
    const char *out;

    (void)state;
    assert_int_equal(pk_threadpool_create(&tp, &(pk_threadpool_options){
                         .max_threads = 1 }), 0);
    capture_start();
    assert_int_equal(pk_threadpool_submit(tp, tp_fail_task, NULL, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    out = capture_end();
    pk_threadpool_destroy(tp);
    assert_string_equal(out, "poolkit: a fire-and-forget task failed: "
                             "PK_ETASK: task says no\n");
}

static void
test_threadpool_fire_and_forget_that_never_ran_writes_a_line(void **state)
{
    pk_task slow = { .fn = tp_sleep_task, .arg = (void *)(uintptr_t)50 };
    pk_task late = { .fn = tp_count_task };
    pk_task_options lim = { .start_within_ms = 1 };
    pk_threadpool *tp;
    const char *out;

    (void)state;
    tp_gate_reset();
    assert_int_equal(pk_threadpool_create(&tp, &(pk_threadpool_options){
                         .max_threads = 1 }), 0);
    capture_start();
    assert_int_equal(pk_threadpool_submit_task(tp, &slow, NULL), 0);
    assert_int_equal(pk_threadpool_submit_opts(tp, &late, &lim, NULL), 0);
    assert_int_equal(pk_threadpool_shutdown(tp, PK_SHUTDOWN_DRAIN, 10000), 0);
    out = capture_end();
    pk_threadpool_destroy(tp);
    assert_int_equal(atomic_load(&tp_counter), 1); /* only the slow one */
    assert_string_equal(out, "poolkit: a fire-and-forget task never ran: "
                             "PK_ETIMEDOUT: not started within 1 ms\n");
}

/* ---- the pool: a lease still out at close ------------------------------ */

/* With no hook, pk_pool_destroy (and pk_pool_close) with a lease out
 * writes one line for each, with its acquire site and, when the pool
 * reads a clock, how long it has been out; each lease once. */
static void
test_pool_lease_out_at_close_without_hook_writes_a_line(void **state)
{
    ph_ctx c;
    ph_clock clk;
    pk_pool_options o;
    pk_pool *p, *q;
    pk_lease a, b, d;
    const char *out;

    (void)state;
    ph_ctx_init(&c);
    ph_clock_init(&clk);
    ph_options(&o, &c, &clk);
    o.event = NULL;
    o.check = ph_check; /* check_after reads the clock */
    assert_int_equal(pk_pool_create(&p, &o), 0);
    o.check = NULL; /* this one reads no clock: no duration */
    assert_int_equal(pk_pool_create(&q, &o), 0);
    assert_int_equal(pk_pool_acquire_at(p, &a, 1000, NULL, "app.c", 12), 0);
    assert_int_equal(pk_pool_acquire_at(p, &b, 1000, NULL, "app.c", 13), 0);
    assert_int_equal(pk_pool_acquire_at(q, &d, 1000, NULL, "app.c", 34), 0);
    ph_clock_advance_ms(&clk, 1500);
    assert_int_equal(pk_pool_release(p, &b, PK_RELEASE_OK), 0);

    capture_start();
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    pk_pool_destroy(p); /* already reported: no second line */
    pk_pool_destroy(q);
    out = capture_end();
    assert_int_equal(count_lines(out), 2);
    assert_contains(out, "poolkit: a lease was still out at close, "
                         "acquired at app.c:12, out for 1500 ms\n");
    assert_contains(out, "poolkit: a lease was still out at close, "
                         "acquired at app.c:34\n");

    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);
    assert_int_equal(pk_pool_release(q, &d, PK_RELEASE_OK), 0);
    assert_int_equal(atomic_load(&c.live), 0);
    ph_ctx_fini(&c);
}

/* POOLKIT_LOG=off silences that line too. */
static void
test_pool_lease_out_at_close_log_off_writes_nothing(void **state)
{
    ph_ctx c;
    pk_pool_options o;
    pk_pool *p;
    pk_lease a;
    const char *out;

    (void)state;
    setenv("POOLKIT_LOG", "off", 1);
    pk__log_reset();
    ph_ctx_init(&c);
    ph_options(&o, &c, NULL);
    o.event = NULL;
    assert_int_equal(pk_pool_create(&p, &o), 0);
    assert_int_equal(pk_pool_acquire_at(p, &a, 1000, NULL, "app.c", 12), 0);
    capture_start();
    pk_pool_destroy(p);
    out = capture_end();
    assert_string_equal(out, "");
    assert_int_equal(pk_pool_release(p, &a, PK_RELEASE_OK), 0);
    ph_ctx_fini(&c);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_log_writes_one_line_with_name_and_message),
        T(test_log_is_rate_limited_and_says_how_many_were_dropped),
        T(test_log_off_in_the_environment_silences_it),
        T(test_log_to_a_closed_pipe_raises_no_sigpipe),
        T(test_unread_failed_future_without_hook_writes_a_line),
        T(test_read_or_done_future_writes_nothing),
        T(test_a_hook_replaces_the_line),
        T(test_inline_fire_and_forget_failure_writes_a_line),
        T(test_threadpool_fire_and_forget_failure_writes_a_line),
        T(test_threadpool_fire_and_forget_that_never_ran_writes_a_line),
        T(test_pool_lease_out_at_close_without_hook_writes_a_line),
        T(test_pool_lease_out_at_close_log_off_writes_nothing),
    };

    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
