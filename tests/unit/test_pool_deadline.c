/* tests/unit/test_pool_deadline.c - the public clock and deadlines
 * (pool.h, "deadlines"): pk_clock_ns, pk_deadline_after,
 * pk_deadline_ms_left, pk_wait_fd. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poolkit/pool.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define MS 1000000u /* ns */

static void
test_clock_is_monotonic_and_moves(void **state)
{
    (void)state;
    uint64_t a = pk_clock_ns();
    uint64_t b = pk_clock_ns();
    assert_true(b >= a);
    sleep_ms(20);
    uint64_t c = pk_clock_ns();
    assert_true(c - a >= 20 * MS);
    /* On the scale of CLOCK_MONOTONIC, as every poolkit wait. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mono = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    assert_true(mono >= c && mono - c < 1000 * MS);
}

static void
test_deadline_after_forever_zero_and_positive(void **state)
{
    (void)state;
    assert_true(pk_deadline_after(PK_WAIT_FOREVER) == PK_NO_DEADLINE);

    uint64_t before = pk_clock_ns();
    uint64_t d0 = pk_deadline_after(0);
    uint64_t after = pk_clock_ns();
    assert_true(d0 >= before && d0 <= after);

    before = pk_clock_ns();
    uint64_t d = pk_deadline_after(1500);
    after = pk_clock_ns();
    assert_true(d >= before + 1500 * MS && d <= after + 1500 * MS);

    /* The largest timeout does not wrap. */
    before = pk_clock_ns();
    d = pk_deadline_after(INT_MAX);
    after = pk_clock_ns();
    assert_true(d >= before + (uint64_t)INT_MAX * MS &&
                d <= after + (uint64_t)INT_MAX * MS);
    assert_true(d != PK_NO_DEADLINE);
}

static void
test_deadline_after_bad_timeout_is_already_passed(void **state)
{
    (void)state;
    const int bad[] = { PK_ALWAYS, -3, -1000, INT_MIN };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t d = pk_deadline_after(bad[i]);
        assert_true(d != PK_NO_DEADLINE);
        assert_true(d <= pk_clock_ns());
        assert_int_equal(pk_deadline_ms_left(d), 0);
    }
}

static void
test_ms_left_rounds_up_and_saturates(void **state)
{
    (void)state;
    assert_int_equal(pk_deadline_ms_left(PK_NO_DEADLINE), PK_WAIT_FOREVER);
    assert_int_equal(pk_deadline_ms_left(0), 0);
    assert_int_equal(pk_deadline_ms_left(pk_clock_ns() - 1), 0);

    /* Less than a millisecond left is 1, not 0: a wait by it must not
     * end before the deadline. */
    uint64_t now = pk_clock_ns();
    int left = pk_deadline_ms_left(now + 200 * 1000u); /* 0.2 ms */
    assert_true(left == 1 || (left == 0 && pk_clock_ns() >= now + 200000u));

    left = pk_deadline_ms_left(pk_clock_ns() + 2000 * MS);
    assert_true(left >= 1999 && left <= 2000);
    left = pk_deadline_ms_left(pk_deadline_after(2000));
    assert_true(left >= 1999 && left <= 2000);

    /* Further than an int of milliseconds: INT_MAX, never negative. */
    assert_int_equal(pk_deadline_ms_left(PK_NO_DEADLINE - 1), INT_MAX);
    assert_int_equal(pk_deadline_ms_left(pk_clock_ns() +
                                         ((uint64_t)INT_MAX + 10) * MS),
                     INT_MAX);
}

static void
test_wait_fd_rejects_bad_arguments(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    uint64_t d = pk_deadline_after(1000);
    assert_int_equal(pk_wait_fd(-1, POLLIN, d), PK_EINVAL);
    assert_int_equal(pk_wait_fd(fds[0], 0, d), PK_EINVAL);
    /* A descriptor that is not open (POLLNVAL): not "ready". */
    int closed = fds[0];
    close(fds[0]);
    uint64_t t0 = pk_clock_ns();
    assert_int_equal(pk_wait_fd(closed, POLLIN, d), PK_EINVAL);
    assert_true(pk_clock_ns() - t0 < 500 * MS);
    close(fds[1]);
}

static void
test_wait_fd_ready_now_and_by_the_deadline(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);

    /* Nothing to read: the wait ends at the deadline, not before. */
    uint64_t t0 = pk_clock_ns();
    uint64_t d = pk_deadline_after(50);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, d), 0);
    assert_true(pk_clock_ns() >= d);
    assert_true(pk_clock_ns() - t0 < 2000 * MS);

    /* The write end is writable at once. */
    assert_int_equal(pk_wait_fd(fds[1], POLLOUT, pk_deadline_after(1000)),
                     1);
    assert_int_equal(write(fds[1], "x", 1), 1);
    t0 = pk_clock_ns();
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, PK_NO_DEADLINE), 1);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, pk_deadline_after(5000)), 1);
    assert_true(pk_clock_ns() - t0 < 1000 * MS);

    /* A passed deadline answers 0 without looking, even when ready. */
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, pk_deadline_after(0)), 0);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, 0), 0);

    /* A hang-up counts as ready: the read says what happened. */
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    close(fds[1]);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, pk_deadline_after(1000)), 1);
    assert_int_equal(read(fds[0], &c, 1), 0);
    close(fds[0]);
}

/* ---- a wait another thread ends, and one a signal must not end ---------- */

struct poke {
    int fd;
    int after_ms;
    pthread_t target;
    int signals; /* send SIGUSR1 to target this many times, else write */
};

static void *
poke_main(void *arg)
{
    struct poke *pk = arg;
    for (int i = 0; i < pk->signals; i++) {
        sleep_ms(pk->after_ms);
        pthread_kill(pk->target, SIGUSR1);
    }
    if (!pk->signals) {
        sleep_ms(pk->after_ms);
        if (write(pk->fd, "x", 1) != 1)
            return NULL;
    }
    return NULL;
}

static void
test_wait_fd_wakes_when_another_thread_writes(void **state)
{
    (void)state;
    int fds[2];
    pthread_t t;
    assert_int_equal(pipe(fds), 0);
    struct poke pk = { .fd = fds[1], .after_ms = 30 };
    uint64_t t0 = pk_clock_ns();
    assert_int_equal(pthread_create(&t, NULL, poke_main, &pk), 0);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, pk_deadline_after(10000)),
                     1);
    uint64_t took = pk_clock_ns() - t0;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(took >= 25 * MS && took < 5000 * MS);
    /* The same with no deadline at all. */
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(pthread_create(&t, NULL, poke_main, &pk), 0);
    assert_int_equal(pk_wait_fd(fds[0], POLLIN, PK_NO_DEADLINE), 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    close(fds[0]);
    close(fds[1]);
}

static atomic_int signals_seen;

static void
on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

static void
test_wait_fd_sleeps_through_signals(void **state)
{
    (void)state;
    int fds[2];
    pthread_t t;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: poll() fails with EINTR */
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    assert_int_equal(pipe(fds), 0);
    atomic_store(&signals_seen, 0);

    struct poke pk = { .after_ms = 20, .target = pthread_self(),
                       .signals = 3 };
    uint64_t d = pk_deadline_after(300);
    assert_int_equal(pthread_create(&t, NULL, poke_main, &pk), 0);
    int rc = pk_wait_fd(fds[0], POLLIN, d);
    uint64_t end = pk_clock_ns();
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    assert_int_equal(rc, 0);   /* not an error, not "ready" */
    assert_true(end >= d);     /* nor cut short */
    assert_int_equal(atomic_load(&signals_seen), 3);
    close(fds[0]);
    close(fds[1]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_is_monotonic_and_moves),
        cmocka_unit_test(test_deadline_after_forever_zero_and_positive),
        cmocka_unit_test(test_deadline_after_bad_timeout_is_already_passed),
        cmocka_unit_test(test_ms_left_rounds_up_and_saturates),
        cmocka_unit_test(test_wait_fd_rejects_bad_arguments),
        cmocka_unit_test(test_wait_fd_ready_now_and_by_the_deadline),
        cmocka_unit_test(test_wait_fd_wakes_when_another_thread_writes),
        cmocka_unit_test(test_wait_fd_sleeps_through_signals),
    };
    return cmocka_run_group_tests_name("pool_deadline", tests, NULL, NULL);
}
