/* tests/unit/test_pool_recovery.c - the core's retry loop for failed
 * creates: while an acquirer or a ticket waits for a create, the pool
 * tries again when its backoff ends and hands the result to the longest
 * waiter; a caller whose deadline reaches past the next attempt waits for
 * it, one whose deadline ends first fails at once with the last create's
 * error replayed (and saying so); the backoff's cap is short while anyone
 * waits; max_creating still holds; the stats show the backoff.
 *
 * "The server is back" is ph_fail_creates(&ctx, 0, ...). Tests that must
 * control the backoff exactly run on the manual clock (the pool turns its
 * policy time into sleeps, so a waiter looks again now and then and sees
 * the time the test set); the others use real time with short backoffs
 * and assert what happened, never how fast. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <poolkit/pool.h>

#include "pool_helpers.h"

/* Generous: only reached when the pool is broken. */
#define LONG_MS 5000

static ph_ctx ctx;
static ph_clock clk;
static ph_fixture fx = { &ctx, 1, &clk, 0 };

/* Asserts that err holds the replay of a create that failed with code,
 * sys and msg. */
static void
assert_replayed(const pk_error *err, int code, int sys, const char *msg)
{
    char want[PK_ERROR_MSG_SIZE];

    assert_int_equal(err->code, code);
    assert_int_equal(err->sys, sys);
    assert_true(strncmp(err->msg, "last create failed ", 19) == 0);
    snprintf(want, sizeof want, " ago: %s; next attempt in ", msg);
    assert_non_null(strstr(err->msg, want));
}

/* A pool whose creates fail ("connection refused") until the test says
 * the server is back, with short backoffs: attempts come every few ms. */
static pk_pool *
flaky_pool(size_t max_creating)
{
    pk_pool_options o;

    ph_options(&o, &ctx, NULL);
    o.max_creating = max_creating;
    o.backoff_initial_ms = 1;
    o.max_backoff_waiting_ms = 5;
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "connection refused");
    return ph_new_pool(&o);
}

/* Waits until the hook has been called n times; false after LONG_MS. */
static bool
wait_creates(int n)
{
    return ph_wait_atomic(&ctx.create_calls, n, LONG_MS);
}

/* ---- blocking acquirers --------------------------------------------- */

/* The outage of issue 11: a caller who gives the pool a long deadline
 * gets a resource once the server is back, without a retry loop of its
 * own; the pool retried while it waited. */
static void
test_long_deadline_gets_a_resource_once_creates_succeed_again(void **state)
{
    pk_pool *p = flaky_pool(2);
    ph_acquirer w;

    (void)state;
    assert_int_equal(ph_acquirer_start(&w, p, PK_WAIT_FOREVER, false, NULL),
                     0);
    assert_true(wait_creates(3)); /* the first try and two retries */
    assert_false(atomic_load(&w.done));
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    assert_non_null(w.resource);
    assert_true(atomic_load(&ctx.create_calls) >= 4);
    assert_int_equal(atomic_load(&ctx.created), 1);
    /* The failures are counted, and a success ends the backoff. */
    pk_pool_stats st = ph_stats(p);
    assert_true(st.create_failures >= 3);
    assert_int_equal(st.last_create_error, 0);
    assert_true(st.next_attempt_in_ns == UINT64_MAX);
    ph_give(p, &w.lease);
    pk_pool_destroy(p);
}

/* A short deadline fails at once with the last error replayed, and says
 * when the next attempt comes; once the backoff has passed, the next
 * acquirer makes the attempt itself. The stats show the backoff. */
static void
test_short_deadline_fails_fast_with_the_replayed_error(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.backoff_initial_ms = 100; /* streak 1: [50,100] ms */
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "db down");

    /* Its own create failed, and the next attempt is past 20 ms. */
    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire(p, &l, 20, &err), PK_ECONNECT);
    assert_string_equal(err.msg, "db down");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    st = ph_stats(p);
    assert_int_equal(st.last_create_error, PK_ECONNECT);
    assert_int_equal(st.last_create_age_ns, 0);
    assert_true(st.next_attempt_in_ns >= 50 * PH_MS);
    assert_true(st.next_attempt_in_ns <= 100 * PH_MS);

    /* In the backoff: no create, the last error replayed. */
    ph_clock_advance_ms(&clk, 30);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire(p, &l, 10, &err), PK_ECONNECT);
    assert_replayed(&err, PK_ECONNECT, 111, "db down");
    assert_true(strncmp(err.msg, "last create failed 30 ms ago", 28) == 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).last_create_age_ns, 30 * PH_MS);

    /* Past the backoff: this caller makes the attempt, which fails. */
    ph_clock_advance_ms(&clk, 70);
    assert_int_equal(ph_stats(p).next_attempt_in_ns, 0);
    assert_int_equal(pk_pool_acquire(p, &l, 10, &err), PK_ECONNECT);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);

    /* The server is back; past the backoff the attempt works. */
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_clock_advance_ms(&clk, 200);
    assert_int_equal(pk_pool_acquire(p, &l, 10, &err), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 3);
    st = ph_stats(p);
    assert_int_equal(st.create_failures, 2);
    assert_int_equal(st.last_create_error, 0);
    assert_true(st.last_create_age_ns == UINT64_MAX);
    assert_int_equal(ph_count_events(&ctx, PK_EVENT_CREATE_FAILED), 2);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* pk_pool_acquire_or_create runs the create itself and gets that
 * create's own error at once (never PK_ETIMEDOUT); in the backoff it makes
 * none and gets the last error replayed; once the backoff has passed and
 * the server is back, it makes the resource. */
static void
test_acquire_or_create_returns_its_create_error(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;
    pk_pool_stats st;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.backoff_initial_ms = 100; /* streak 1: [50,100] ms */
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "db down");

    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, &err), PK_ECONNECT);
    assert_int_equal(err.code, PK_ECONNECT);
    assert_int_equal(err.sys, 111);
    assert_string_equal(err.msg, "db down");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    st = ph_stats(p);
    assert_int_equal(st.waiters, 0);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.create_failures, 1);

    ph_clock_advance_ms(&clk, 30);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, &err), PK_ECONNECT);
    assert_replayed(&err, PK_ECONNECT, 111, "db down");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).waiters, 0);

    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_clock_advance_ms(&clk, 200);
    assert_int_equal(pk_pool_acquire_or_create(p, &l, &err), 0);
    assert_non_null(l.resource);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    assert_int_equal(ph_stats(p).last_create_error, 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* The cap of the backoff is max_backoff_waiting_ms while anyone waits,
 * max_backoff_ms while nobody does. */
static void
test_short_cap_applies_only_while_someone_waits(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_pool_stats st;
    ph_acquirer w;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.backoff_initial_ms = 1000;
    o.max_backoff_ms = 8000;
    o.max_backoff_waiting_ms = 100;
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "db down");
    /* Three failures in a row, each once the backoff has passed. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pk_pool_acquire(p, &l, 1, NULL), PK_ECONNECT);
        ph_clock_advance_ms(&clk, 8000);
    }
    assert_int_equal(atomic_load(&ctx.create_calls), 3);
    assert_int_equal(ph_stats(p).next_attempt_in_ns, 0);

    /* The fourth: 8 s uncapped, jittered to [4, 8] s while nobody
     * waits. */
    assert_int_equal(pk_pool_acquire(p, &l, 1, NULL), PK_ECONNECT);
    st = ph_stats(p);
    assert_int_equal(st.waiters, 0);
    assert_true(st.next_attempt_in_ns >= 4000 * PH_MS);
    assert_true(st.next_attempt_in_ns <= 8000 * PH_MS);

    /* Someone waits: the short cap. */
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    st = ph_stats(p);
    assert_true(st.next_attempt_in_ns >= 50 * PH_MS);
    assert_true(st.next_attempt_in_ns <= 100 * PH_MS);
    /* The server is back and the short backoff passes: the waiter, not
     * the 4-8 s of the long cap, decides when the attempt comes. */
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_clock_advance_ms(&clk, 100);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 5);
    ph_give(p, &w.lease);
    pk_pool_destroy(p);
}

/* Retries keep max_creating: many waiters, creates failing for a while,
 * never more than max_creating creates at once. */
static void
test_retries_keep_max_creating(void **state)
{
    enum { N = 6 };
    pk_pool *p = flaky_pool(2);
    ph_acquirer w[N];

    (void)state;
    /* The first creates block on the gate, so all waiters are there when
     * the retries start. */
    ph_create_gate(&ctx, true);
    for (int i = 0; i < N; i++)
        assert_int_equal(ph_acquirer_start(&w[i], p, PK_WAIT_FOREVER, false,
                                           NULL),
                         0);
    assert_true(ph_wait_waiters(p, N, LONG_MS));
    assert_true(ph_wait_atomic(&ctx.in_create, 2, LONG_MS));
    ph_create_gate(&ctx, false);
    assert_true(wait_creates(30));
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_acquirers_join_served(p, w, N);
    assert_int_equal(atomic_load(&ctx.max_in_create), 2);
    assert_int_equal(atomic_load(&ctx.created), N);
    pk_pool_destroy(p);
}

/* ---- tickets ---------------------------------------------------------- */

/* The helper thread retries for a pending ticket, which the success
 * serves. */
static void
test_ticket_is_served_by_a_retry(void **state)
{
    pk_pool *p = flaky_pool(2);
    pk_pool_ticket *t;
    pk_lease l;
    int ready = -1;

    (void)state;
    assert_int_equal(pk_pool_acquire_async(p, &t, PK_WAIT_FOREVER, NULL,
                                           NULL, &ready),
                     0);
    assert_int_equal(ready, 0);
    assert_true(wait_creates(3));
    assert_false(ph_fd_readable(pk_pool_ticket_fd(t), 0));
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    assert_non_null(l.resource);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* With PK_POOL_MANUAL_MAINTENANCE the embedder's pk_pool_maintain makes
 * the attempts, at the time the stats name. */
static void
test_manual_maintenance_retries_for_a_ticket_when_due(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_pool_stats st;
    pk_lease l;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    o.backoff_initial_ms = 100;
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "connection refused");
    assert_int_equal(pk_pool_acquire_async(p, &t, PK_WAIT_FOREVER, NULL,
                                           NULL, NULL),
                     0);
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    assert_int_equal(pk_pool_maintain(p), 0); /* the first try */
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    st = ph_stats(p);
    assert_int_equal(st.waiters, 1);
    assert_int_equal(st.last_create_error, PK_ECONNECT);
    assert_true(st.next_attempt_in_ns > 0);
    /* Not due yet: maintenance makes no attempt. */
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    /* Due: it does, and the success serves the ticket. */
    ph_fail_creates(&ctx, 0, 0, 0, NULL);
    ph_clock_advance_ms(&clk, st.next_attempt_in_ns / PH_MS + 1);
    assert_int_equal(ph_stats(p).next_attempt_in_ns, 0);
    assert_int_equal(pk_pool_maintain(p), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 2);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    assert_int_equal(pk_pool_ticket_take(t, &l, NULL), 0);
    ph_give(p, &l);
    pk_pool_destroy(p);
}

/* A ticket whose deadline ends before the next attempt is ready at once
 * with the replayed error. */
static void
test_ticket_with_a_short_deadline_fails_at_once(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t;
    pk_lease l;
    pk_error err;
    int ready = -1;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.backoff_initial_ms = 1000; /* capped: [50, 100] ms while waiting */
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "connection refused");
    assert_int_equal(pk_pool_acquire(p, &l, 1, NULL), PK_ECONNECT);
    assert_int_equal(pk_pool_acquire_async(p, &t, 20, NULL, NULL, &ready),
                     0);
    assert_int_equal(ready, 1);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_ticket_take(t, &l, &err), PK_ECONNECT);
    assert_replayed(&err, PK_ECONNECT, 111, "connection refused");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).waiters, 0);
    pk_pool_destroy(p);
}

/* The create the helper thread made for a waiting ticket fails, and the
 * ticket's deadline ends before the next attempt: it is ready at once,
 * not at its deadline, with that create's own error as a blocking
 * acquirer that ran the create gets it (not replayed); a ticket behind it
 * gets the error replayed. */
static void
test_ticket_gets_the_error_of_the_create_made_for_it(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_pool_ticket *t1, *t2;
    pk_lease l;
    pk_error err;
    int ready = -1;

    (void)state;
    ph_options(&o, &ctx, NULL);
    o.backoff_initial_ms = 5000; /* the next attempt in 2.5 s or more */
    o.max_backoff_waiting_ms = PK_NEVER;
    p = ph_new_pool(&o);
    ph_fail_creates(&ctx, -1, PK_ECONNECT, 111, "db down");
    ph_create_gate(&ctx, true);
    assert_int_equal(pk_pool_acquire_async(p, &t1, 1000, NULL, NULL, &ready),
                     0);
    assert_int_equal(ready, 0);
    assert_true(wait_creates(1)); /* on the helper thread, for t1 */
    assert_int_equal(pk_pool_acquire_async(p, &t2, 1000, NULL, NULL, &ready),
                     0);
    assert_int_equal(ready, 0);
    ph_create_gate(&ctx, false);

    assert_true(ph_fd_readable(pk_pool_ticket_fd(t1), LONG_MS));
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t2), LONG_MS));
    /* Failed, not expired. */
    assert_int_equal(ph_stats(p).timeouts, 0);
    pk_error_clear(&err);
    assert_int_equal(pk_pool_ticket_take(t1, &l, &err), PK_ECONNECT);
    assert_int_equal(err.sys, 111);
    assert_string_equal(err.msg, "db down");
    pk_error_clear(&err);
    assert_int_equal(pk_pool_ticket_take(t2, &l, &err), PK_ECONNECT);
    assert_replayed(&err, PK_ECONNECT, 111, "db down");
    assert_int_equal(atomic_load(&ctx.create_calls), 1);
    assert_int_equal(ph_stats(p).waiters, 0);
    pk_pool_destroy(p);
}

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_long_deadline_gets_a_resource_once_creates_succeed_again),
        T(test_acquire_or_create_returns_its_create_error),
        T(test_short_deadline_fails_fast_with_the_replayed_error),
        T(test_short_cap_applies_only_while_someone_waits),
        T(test_retries_keep_max_creating),
        T(test_ticket_is_served_by_a_retry),
        T(test_manual_maintenance_retries_for_a_ticket_when_due),
        T(test_ticket_with_a_short_deadline_fails_at_once),
        T(test_ticket_gets_the_error_of_the_create_made_for_it),
    };
    return cmocka_run_group_tests_name("pool_recovery", tests, NULL, NULL);
}
