/* tests/unit/test_pool_errors.c - every failure of a pool call that takes
 * a pk_error fills it (error.h: "fill it on failure"):
 * pk_pool_options_check (each rule names its field), pk_pool_acquire and
 * pk_pool_ticket_take, one test per failure path, each with a pk_error
 * the caller pre-filled with garbage, which must not come back.
 * The code is the call's code, and the message names the situation.
 * (Create failures: test_pool_recovery; fork: also test_pool_faults.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/pool.h>

#include "alloc.h"
#include "pool_helpers.h"

/* Generous: only reached when the pool is broken. */
#define LONG_MS 5000

static ph_ctx ctx;
static ph_clock clk;
static ph_fixture fx = { &ctx, 1, &clk, 0 };

/* What a careless caller leaves in its pk_error. */
static void
garbage(pk_error *err)
{
    memset(err, 'x', sizeof *err);
    err->code = 12345;
    err->sys = 6789;
    err->msg[sizeof err->msg - 1] = '\0';
}

/* Asserts err holds code, sys 0 and a message containing want. */
static void
assert_filled(const pk_error *err, int code, const char *want)
{
    assert_int_equal(err->code, code);
    assert_int_equal(err->sys, code == PK_ENOMEM ? ENOMEM : 0);
    if (!strstr(err->msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, want);
}

/* A pool of max_size resources, every one of them lent into held. */
static pk_pool *
full_pool(size_t max_size, pk_lease *held)
{
    pk_pool_options o;
    pk_pool *p;

    ph_options(&o, &ctx, NULL);
    o.max_size = max_size;
    p = ph_new_pool(&o);
    for (size_t i = 0; i < max_size; i++)
        ph_take(p, &held[i]);
    return p;
}

static void
give_all(pk_pool *p, pk_lease *held, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ph_give(p, &held[i]);
}

/* ---- pk_pool_options_check ---------------------------------------------- */

static int
dummy_create(void *user, void **res, pk_error *err)
{
    (void)user;
    (void)err;
    *res = NULL;
    return 0;
}

/* Each rule of the options names its field (and the value that breaks
 * it); a good struct clears err; pk_pool_create refuses the same. */
static void
test_options_check_names_the_field(void **state)
{
#define C(...) { .create = dummy_create, __VA_ARGS__ }
    static const struct {
        pk_pool_options o;
        const char *want;
    } cases[] = {
        { { .create = NULL }, "create is NULL" },
        { C(.order = 2), "order (2)" },
        { C(.flags = 1u << 7), "flags (0x80)" },
        { C(.min_size = 9), "min_size (9) is above max_size (8, the "
                            "default)" },
        { C(.min_idle = 9, .max_size = 8),
          "pk_pool_options: min_idle (9) is above max_size (8)" },
        { C(.min_size = 3, .max_size = 2), "min_size (3) is above "
                                           "max_size (2)" },
        { C(.acquire_timeout_ms = -3), "acquire_timeout_ms (-3)" },
        { C(.idle_timeout_ms = -5), "idle_timeout_ms (-5)" },
        { C(.max_lifetime_ms = -7), "max_lifetime_ms (-7)" },
        { C(.check_after_ms = -100), "check_after_ms (-100)" },
        { C(.check_interval_ms = -3), "check_interval_ms (-3)" },
        { C(.held_too_long_ms = -3), "held_too_long_ms (-3)" },
        { C(.maintain_interval_ms = -5), "maintain_interval_ms (-5)" },
        { C(.maintain_interval_ms = PK_NEVER), "maintain_interval_ms (-1)" },
        { C(.backoff_initial_ms = -4), "backoff_initial_ms (-4)" },
        { C(.max_backoff_ms = -4), "max_backoff_ms (-4)" },
        { C(.max_backoff_waiting_ms = -9), "max_backoff_waiting_ms (-9)" },
        { C(.lifetime_jitter_ms = -1), "lifetime_jitter_ms (-1)" },
        { C(.max_lifetime_ms = 100, .lifetime_jitter_ms = 200),
          "lifetime_jitter_ms (200) is above max_lifetime_ms (100)" },
        /* The sizes' bound: SIZE_MAX is no "no limit". */
        { C(.max_size = SIZE_MAX), "max_size (18446744073709551615) is "
                                   "above PK_POOL_SIZE_MAX (1048576)" },
        { C(.max_size = PK_POOL_SIZE_MAX + 1), "max_size (1048577)" },
        { C(.min_size = PK_POOL_SIZE_MAX + 1, .max_size = SIZE_MAX),
          "max_size" },
        { C(.min_size = PK_POOL_SIZE_MAX + 1), "min_size (1048577) is "
                                               "above PK_POOL_SIZE_MAX" },
        { C(.min_idle = PK_POOL_SIZE_MAX + 1), "min_idle (1048577) is "
                                               "above PK_POOL_SIZE_MAX" },
        { C(.max_creating = PK_POOL_SIZE_MAX + 1),
          "max_creating (1048577) is above PK_POOL_SIZE_MAX" },
    };
#undef C
    pk_pool_options good;
    pk_error err;
    pk_pool *p;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        garbage(&err);
        assert_int_equal(pk_pool_options_check(&cases[i].o, &err),
                         PK_EINVAL);
        assert_filled(&err, PK_EINVAL, cases[i].want);
        assert_non_null(strstr(err.msg, "pk_pool_options: "));
        p = (pk_pool *)&err;
        assert_int_equal(pk_pool_create(&p, &cases[i].o), PK_EINVAL);
        assert_null(p);
    }
    garbage(&err);
    assert_int_equal(pk_pool_options_check(NULL, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "NULL options");
    assert_int_equal(pk_pool_options_check(&cases[0].o, NULL), PK_EINVAL);
    /* Good: defaults spelled out, and the bare zero struct with a hook;
     * PK_NEVER and PK_ALWAYS are fine where the policy can be off. */
    ph_options(&good, &ctx, NULL);
    good.check_after_ms = PK_ALWAYS;
    good.max_lifetime_ms = PK_NEVER;
    good.min_size = good.min_idle = good.max_size;
    garbage(&err);
    assert_int_equal(pk_pool_options_check(&good, &err), 0);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");
    memset(&good, 0, sizeof good);
    good.create = dummy_create;
    assert_int_equal(pk_pool_options_check(&good, NULL), 0);
    /* The bound itself is allowed, for every size. */
    good.min_size = good.min_idle = good.max_size = good.max_creating =
        PK_POOL_SIZE_MAX;
    assert_int_equal(pk_pool_options_check(&good, NULL), 0);
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
}

/* ---- pk_pool_acquire ---------------------------------------------------- */

static void
test_acquire_einval_fills_err(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    garbage(&err);
    assert_int_equal(pk_pool_acquire(NULL, &l, 0, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "the pool is NULL");
    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, NULL, 0, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "the lease is NULL");
    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, &l, -5, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "timeout -5 ms");
    pk_pool_destroy(p);
}

/* On a pool of two, both lent: an acquire with timeout_ms fails with
 * code, and its err says want (the leases come from ph_take). */
static void
acquire_on_full_pool_fails(int timeout_ms, int code, const char *want)
{
    pk_lease held[2], l;
    pk_error err;
    pk_pool *p = full_pool(2, held);

    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, &l, timeout_ms, &err), code);
    assert_filled(&err, code, want);
    assert_non_null(strstr(err.msg, "2 of 2 lent, one acquired at "));
    assert_non_null(strstr(err.msg, "pool_helpers.c:"));
    give_all(p, held, 2);
    pk_pool_destroy(p);
}

static void
test_acquire_eagain_fills_err(void **state)
{
    (void)state;
    acquire_on_full_pool_fails(0, PK_EAGAIN, "nothing idle, and a 0 ms "
                               "timeout does not wait; ");
}

static void
test_acquire_etimedout_names_the_wait_and_the_pool(void **state)
{
    (void)state;
    acquire_on_full_pool_fails(20, PK_ETIMEDOUT, "timed out after 20 ms "
                               "waiting; ");
}

/* With a time policy the pool knows which lease is out longest, and the
 * message names its acquire site. */
static void
test_acquire_etimedout_names_the_oldest_lease(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease first, second, l;
    pk_error err;
    char want[128];
    int line;

    (void)state;
    ph_options(&o, &ctx, &clk);
    o.max_size = 2;
    o.idle_timeout_ms = 60000; /* a policy that reads the clock */
    o.flags = PK_POOL_MANUAL_MAINTENANCE;
    p = ph_new_pool(&o);
    line = __LINE__ + 1;
    assert_int_equal(pk_pool_acquire(p, &first, LONG_MS, NULL), 0);
    ph_clock_advance_ms(&clk, 1000);
    ph_take(p, &second);
    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, &l, 10, &err), PK_ETIMEDOUT);
    snprintf(want, sizeof want, "2 of 2 lent, the oldest acquired at %s:%d",
             __FILE__, line);
    assert_filled(&err, PK_ETIMEDOUT, want);
    ph_give(p, &second);
    ph_give(p, &first);
    pk_pool_destroy(p);
}

static void
test_acquire_eshutdown_fills_err(void **state)
{
    pk_lease held[1], l;
    pk_error err;
    pk_pool *p = full_pool(1, held);
    ph_acquirer w;

    (void)state;
    /* Closed while it waited. */
    assert_int_equal(ph_acquirer_start(&w, p, LONG_MS, false, NULL), 0);
    assert_true(ph_wait_waiters(p, 1, LONG_MS));
    assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    ph_acquirer_join(&w);
    assert_int_equal(w.rc, PK_ESHUTDOWN);
    assert_filled(&w.err, PK_ESHUTDOWN, "closed while this call waited");
    /* Closed before the call. */
    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, &l, LONG_MS, &err), PK_ESHUTDOWN);
    assert_filled(&err, PK_ESHUTDOWN, "the pool is closed");
    give_all(p, held, 1);
    pk_pool_destroy(p);
}

static void
test_acquire_enomem_fills_err(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    pk_lease l;
    pk_error err;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    /* The first allocation of an acquire on an empty pool is the slot of
     * the resource it creates. */
    pk__alloc_fail_at(1);
    garbage(&err);
    assert_int_equal(pk_pool_acquire(p, &l, LONG_MS, &err), PK_ENOMEM);
    pk__alloc_fail_at(0);
    assert_filled(&err, PK_ENOMEM, "out of memory");
    assert_int_equal(atomic_load(&ctx.create_calls), 0);
    pk_pool_destroy(p);
}

/* In a child after fork() (no other thread alive: safe under the
 * sanitizers too). Returns 0, or the number of the check that failed. */
static int
child_eforked(pk_pool *p)
{
    pk_lease l;
    pk_error err;

    garbage(&err);
    if (pk_pool_acquire(p, &l, 0, &err) != PK_EFORKED)
        return 1;
    if (err.code != PK_EFORKED || !strstr(err.msg, "before fork()"))
        return 2;
    return 0;
}

static void
test_acquire_eforked_fills_err(void **state)
{
    pk_pool_options o;
    pk_pool *p;
    int status;
    pid_t pid;

    (void)state;
    ph_options(&o, &ctx, NULL);
    p = ph_new_pool(&o);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(5);
        _exit(child_eforked(p));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status))
        fail_msg("child check %d failed", WEXITSTATUS(status));
    pk_pool_destroy(p);
}

/* ---- pk_pool_ticket_take ------------------------------------------------ */

static void
test_ticket_take_einval_and_eagain_fill_err(void **state)
{
    pk_lease held[1], l;
    pk_pool_ticket *t;
    pk_error err;
    pk_pool *p = full_pool(1, held);

    (void)state;
    garbage(&err);
    assert_int_equal(pk_pool_ticket_take(NULL, &l, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "the ticket is NULL");
    assert_int_equal(pk_pool_acquire_async(p, &t, LONG_MS, NULL, NULL, NULL),
                     0);
    garbage(&err);
    assert_int_equal(pk_pool_ticket_take(t, NULL, &err), PK_EINVAL);
    assert_filled(&err, PK_EINVAL, "the lease is NULL");
    garbage(&err);
    assert_int_equal(pk_pool_ticket_take(t, &l, &err), PK_EAGAIN);
    assert_filled(&err, PK_EAGAIN, "not ready yet");
    pk_pool_ticket_free(t);
    give_all(p, held, 1);
    pk_pool_destroy(p);
}

/* On a pool of one, lent: a ticket with timeout_ms (closed at once if
 * close) becomes ready with code, and its take's err says want. */
static void
ticket_on_full_pool_fails(int timeout_ms, bool close, int code,
                          const char *want)
{
    pk_lease held[1], l;
    pk_pool_ticket *t;
    pk_error err;
    pk_pool *p = full_pool(1, held);

    assert_int_equal(pk_pool_acquire_async(p, &t, timeout_ms, NULL, NULL,
                                           NULL),
                     0);
    if (close)
        assert_int_equal(pk_pool_close(p, 0), PK_ETIMEDOUT);
    assert_true(ph_fd_readable(pk_pool_ticket_fd(t), LONG_MS));
    garbage(&err);
    assert_int_equal(pk_pool_ticket_take(t, &l, &err), code);
    assert_filled(&err, code, want);
    give_all(p, held, 1);
    pk_pool_destroy(p);
}

static void
test_ticket_take_etimedout_names_the_wait_and_the_pool(void **state)
{
    (void)state;
    ticket_on_full_pool_fails(30, false, PK_ETIMEDOUT,
                              "timed out after 30 ms waiting; 1 of 1 lent");
}

static void
test_ticket_take_eshutdown_fills_err(void **state)
{
    (void)state;
    ticket_on_full_pool_fails(LONG_MS, true, PK_ESHUTDOWN,
                              "closed while the ticket waited");
}

#define T(f) \
    cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_options_check_names_the_field),
        T(test_acquire_einval_fills_err),
        T(test_acquire_eagain_fills_err),
        T(test_acquire_etimedout_names_the_wait_and_the_pool),
        T(test_acquire_etimedout_names_the_oldest_lease),
        T(test_acquire_eshutdown_fills_err),
        T(test_acquire_enomem_fills_err),
        T(test_acquire_eforked_fills_err),
        T(test_ticket_take_einval_and_eagain_fill_err),
        T(test_ticket_take_etimedout_names_the_wait_and_the_pool),
        T(test_ticket_take_eshutdown_fills_err),
    };
    return cmocka_run_group_tests_name("pool_errors", tests, NULL, NULL);
}
