/* tests/support/future_helpers.c - see future_helpers.h. */
#include "future_helpers.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

static long fh_live_at_start;

int
fh_setup(void **state)
{
    (void)state;
    fh_live_at_start = pk__alloc_live();
    return 0;
}

int
fh_teardown(void **state)
{
    (void)state;
    pk__alloc_fail_at(0);
    assert_int_equal(pk__alloc_live(), fh_live_at_start);
    return 0;
}

uint64_t
fh_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
fh_sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

    nanosleep(&ts, NULL);
}

void
fh_sleep_ms(int ms)
{
    fh_sleep_us((long)ms * 1000);
}

atomic_int fh_frees;

void
fh_count_free(void *value)
{
    atomic_fetch_add(&fh_frees, 1);
    free(value);
}

pk_result
fh_counted_result(int v)
{
    pk_result r;
    int *p = malloc(sizeof *p);

    *p = v;
    r.value = p;
    r.len = sizeof *p;
    r.free_fn = fh_count_free;
    return r;
}

void
fh_make_futures(pk_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pk_future_create(&fs[i], NULL, NULL), 0);
}

void
fh_release_futures(pk_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pk_future_result(fs[i], NULL);
        pk_future_release(fs[i]);
    }
}

void *
fh_finish_later(void *arg)
{
    fh_later *l = arg;

    fh_sleep_ms(l->delay_ms);
    if (l->fail)
        pk_future_fail(l->f, PK_ETASK, 0, "late");
    else
        pk_future_complete(l->f, NULL);
    return NULL;
}

void
fh_record_event(void *user, const pk_event *ev)
{
    fh_recorder *r = user;

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

void
fh_garbage(pk_error *err)
{
    memset(err, 'x', sizeof *err);
    err->code = 12345;
    err->sys = 6789;
    err->msg[sizeof err->msg - 1] = '\0';
}

void
fh_assert_filled(const pk_error *err, int code, int sys, const char *want)
{
    assert_int_equal(err->code, code);
    assert_int_equal(err->sys, sys);
    if (!strstr(err->msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, want);
}
