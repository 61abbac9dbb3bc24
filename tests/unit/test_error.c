/* tests/unit/test_error.c - error codes, messages and pk_error; event
 * names (pk_event_name).
 *
 * The X-macro list in poolkit/error.h is the contract: every code has a
 * message and a name, neither is ever NULL, unknown codes get a fixed
 * answer, and pk_error never overflows its buffer. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <poolkit/error.h>
#include <poolkit/event.h>
#include <poolkit/version.h>

struct code {
    int value;
    const char *name;
};

static const struct code codes[] = {
#define X(name, value, msg) { PK_##name, "PK_" #name },
    PK_ERROR_LIST(X)
#undef X
};
#define NCODES (sizeof codes / sizeof codes[0])

static void
test_every_code_has_a_message_and_its_own_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        const char *msg = pk_strerror(codes[i].value);

        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, pk_strerror(-123456));
        assert_string_equal(pk_err_name(codes[i].value), codes[i].name);
    }
}

static void
test_codes_are_distinct_and_negative(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(codes[i].value < 0);
        for (size_t j = i + 1; j < NCODES; j++)
            assert_int_not_equal(codes[i].value, codes[j].value);
    }
}

static void
test_errno_codes_mirror_errno_and_own_codes_sit_from_3000(void **state)
{
    (void)state;
    assert_int_equal(PK_EINVAL, -EINVAL);
    assert_int_equal(PK_ENOMEM, -ENOMEM);
    assert_int_equal(PK_ETIMEDOUT, -ETIMEDOUT);
    assert_int_equal(PK_EAGAIN, -EAGAIN);
    assert_int_equal(PK_ECANCELED, -ECANCELED);
    assert_int_equal(PK_EDEADLK, -EDEADLK);
    assert_int_equal(PK_ESHUTDOWN, -3000);
    assert_true(PK_EADAPTER <= -3000);
}

static void
test_unknown_codes_get_fixed_answers_never_null(void **state)
{
    static const int odd[] = { 1, -1 - 0x7fffffff, 0x7fffffff, -2999, -4095 };

    (void)state;
    assert_string_equal(pk_err_name(0), "PK_OK");
    assert_non_null(pk_strerror(0));
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        assert_string_equal(pk_strerror(odd[i]), "unknown error");
        assert_string_equal(pk_err_name(odd[i]), "PK_EUNKNOWN");
    }
}

static void
test_error_set_fills_and_returns_the_code(void **state)
{
    pk_error err;

    (void)state;
    pk_error_clear(&err);
    assert_int_equal(pk_error_set(&err, PK_ECONNECT, 111, "connect %s:%d",
                                  "127.0.0.1", 5432),
                     PK_ECONNECT);
    assert_int_equal(err.code, PK_ECONNECT);
    assert_int_equal(err.sys, 111);
    assert_string_equal(err.msg, "connect 127.0.0.1:5432");

    /* A NULL format leaves the code's own message. */
    assert_int_equal(pk_error_set(&err, PK_ETIMEDOUT, 0, NULL), PK_ETIMEDOUT);
    assert_string_equal(err.msg, pk_strerror(PK_ETIMEDOUT));

    pk_error_clear(&err);
    assert_int_equal(err.code, 0);
    assert_int_equal(err.sys, 0);
    assert_string_equal(err.msg, "");
}

static void
test_error_set_truncates_long_messages(void **state)
{
    char big[PK_ERROR_MSG_SIZE * 3];
    struct {
        pk_error err;
        unsigned char guard[16];
    } box;

    (void)state;
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(&box, 0xAB, sizeof box);
    pk_error_set(&box.err, PK_EADAPTER, 7, "%s", big);
    assert_int_equal(strlen(box.err.msg), PK_ERROR_MSG_SIZE - 1);
    for (size_t i = 0; i < sizeof box.guard; i++)
        assert_int_equal(box.guard[i], 0xAB);
}

static void
test_null_error_is_allowed(void **state)
{
    (void)state;
    assert_int_equal(pk_error_set(NULL, PK_EINVAL, 0, "ignored %d", 1),
                     PK_EINVAL);
    pk_error_clear(NULL);
}

static void
test_version_matches_the_header(void **state)
{
    (void)state;
    assert_string_equal(pk_version(), PK_VERSION_STRING);
    assert_int_equal(pk_version_number(), PK_VERSION_HEX);
}

static void
test_every_event_kind_has_its_own_name(void **state)
{
    static const struct {
        int kind;
        const char *name;
    } want[] = {
        { PK_EVENT_CREATED, "created" },
        { PK_EVENT_DESTROYED, "destroyed" },
        { PK_EVENT_CHECK_FAILED, "check_failed" },
        { PK_EVENT_CREATE_FAILED, "create_failed" },
        { PK_EVENT_TIMEOUT, "timeout" },
        { PK_EVENT_HELD_TOO_LONG, "held_too_long" },
        { PK_EVENT_DETACHED, "detached" },
        { PK_EVENT_FUTURE_UNREAD, "future_unread" },
        { PK_EVENT_WORKER_DIED, "worker_died" },
        { PK_EVENT_SLOW_TASK, "slow_task" },
        { PK_EVENT_LEASE_OUT_AT_CLOSE, "lease_out_at_close" },
        { PK_EVENT_MISUSE, "misuse" },
    };
    size_t n = sizeof want / sizeof want[0];

    (void)state;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(pk_event_name(want[i].kind), want[i].name);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(pk_event_name(want[i].kind),
                                    pk_event_name(want[j].kind));
    }
    /* The list is dense from 1: a kind appended later must be named. */
    assert_int_equal(PK_EVENT_MISUSE, (int)n);
}

static void
test_unknown_event_kinds_are_named_unknown(void **state)
{
    (void)state;
    assert_string_equal(pk_event_name(0), "unknown");
    assert_string_equal(pk_event_name(-1), "unknown");
    assert_string_equal(pk_event_name(PK_EVENT_MISUSE + 1),
                        "unknown");
    assert_string_equal(pk_event_name(1 << 30), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_a_message_and_its_own_name),
        cmocka_unit_test(test_codes_are_distinct_and_negative),
        cmocka_unit_test(
            test_errno_codes_mirror_errno_and_own_codes_sit_from_3000),
        cmocka_unit_test(test_unknown_codes_get_fixed_answers_never_null),
        cmocka_unit_test(test_error_set_fills_and_returns_the_code),
        cmocka_unit_test(test_error_set_truncates_long_messages),
        cmocka_unit_test(test_null_error_is_allowed),
        cmocka_unit_test(test_version_matches_the_header),
        cmocka_unit_test(test_every_event_kind_has_its_own_name),
        cmocka_unit_test(test_unknown_event_kinds_are_named_unknown),
    };

    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
