/* tests/support/future_helpers.h - shared helpers for the future and
 * executor tests (test_future.c, test_executor.c).
 *
 *   fh_setup / fh_teardown  cmocka setup and teardown: teardown clears
 *             any allocation fault left armed and asserts that the test
 *             leaked nothing poolkit allocated.
 *   fh_frees  counts fh_count_free calls (the free_fn of the results that
 *             fh_counted_result makes); a test resets it itself.
 *   fh_recorder / fh_record_event  an event hook that keeps the last
 *             event's kind and error and counts the calls.
 *   fh_garbage / fh_assert_filled  a pk_error pre-filled with garbage,
 *             and the check that a failing call filled it.
 *
 * fh_count_free and fh_record_event may run on worker threads; they only
 * record. Only fh_teardown, fh_make_futures and fh_assert_filled
 * assert. */
#ifndef PK_TESTS_FUTURE_HELPERS_H
#define PK_TESTS_FUTURE_HELPERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <poolkit/future.h>

int fh_setup(void **state);
int fh_teardown(void **state);

uint64_t fh_now_ms(void);
void fh_sleep_us(long us);
void fh_sleep_ms(int ms);

extern atomic_int fh_frees;
void fh_count_free(void *value);
/* A malloc'd int v, with fh_count_free as its free_fn. */
pk_result fh_counted_result(int v);

/* Creates n pending futures (asserts); releases them after reading each
 * (so no unread failure is reported). */
void fh_make_futures(pk_future **fs, size_t n);
void fh_release_futures(pk_future **fs, size_t n);

/* A thread body (arg: an fh_later) that finishes f after delay_ms: fails
 * it (PK_ETASK, "late") if fail, else completes it with no result. */
typedef struct fh_later {
    pk_future *f;
    int delay_ms;
    int fail;
} fh_later;

void *fh_finish_later(void *arg);

/* Fills err with what a careless caller leaves in it (code 12345, sys
 * 6789, a message of 'x'), so a test sees whether a call filled it. */
void fh_garbage(pk_error *err);
/* Asserts err holds code, sys and a message containing want. */
void fh_assert_filled(const pk_error *err, int code, int sys,
                      const char *want);

typedef struct fh_recorder {
    atomic_int calls;
    int kind;
    int code;
    int sys;
    char msg[PK_ERROR_MSG_SIZE];
} fh_recorder;

/* An event hook; user is an fh_recorder. */
void fh_record_event(void *user, const pk_event *ev);

#endif /* PK_TESTS_FUTURE_HELPERS_H */
