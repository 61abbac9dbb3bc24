/* tests/support/pool_helpers.c - see pool_helpers.h. */
#include "pool_helpers.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

/* A gate wait gives up after this long, so a test bug (or a pool that
 * calls a hook where it must not) fails instead of hanging. */
#define PH_GATE_LIMIT_MS 5000

/* ---- clock ------------------------------------------------------------ */

void
ph_clock_init(ph_clock *c)
{
    atomic_init(&c->ns, 1000 * PH_MS);
}

uint64_t
ph_clock_read(void *clock_user)
{
    ph_clock *c = clock_user;
    return atomic_load(&c->ns);
}

void
ph_clock_advance_ms(ph_clock *c, uint64_t ms)
{
    atomic_fetch_add(&c->ns, ms * PH_MS);
}

/* ---- time ------------------------------------------------------------- */

uint64_t
ph_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
ph_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool
ph_wait_waiters(pk_pool *p, size_t n, int timeout_ms)
{
    uint64_t end = ph_now_ns() + (uint64_t)timeout_ms * PH_MS;
    pk_pool_stats st;

    for (;;) {
        if (pk_pool_stats_get(p, &st) == 0 && st.waiters == n)
            return true;
        if (ph_now_ns() >= end)
            return false;
        ph_sleep_ms(1);
    }
}

bool
ph_wait_atomic(_Atomic int *v, int n, int timeout_ms)
{
    uint64_t end = ph_now_ns() + (uint64_t)timeout_ms * PH_MS;

    for (;;) {
        if (atomic_load(v) >= n)
            return true;
        if (ph_now_ns() >= end)
            return false;
        ph_sleep_ms(1);
    }
}

bool
ph_wait_events(ph_ctx *c, pk_event_kind kind, int n, int timeout_ms)
{
    uint64_t end = ph_now_ns() + (uint64_t)timeout_ms * PH_MS;

    for (;;) {
        if (ph_count_events(c, kind) >= n)
            return true;
        if (ph_now_ns() >= end)
            return false;
        ph_sleep_ms(1);
    }
}

bool
ph_fd_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = { fd, POLLIN, 0 };
    int rc;

    do
        rc = poll(&pfd, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    return rc == 1 && (pfd.revents & POLLIN);
}

/* ---- ctx -------------------------------------------------------------- */

void
ph_ctx_init(ph_ctx *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
}

void
ph_ctx_fini(ph_ctx *c)
{
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
}

void
ph_options(pk_pool_options *o, ph_ctx *c, ph_clock *clk)
{
    pk_pool_options_init(o);
    o->create = ph_create;
    o->destroy = ph_destroy;
    o->user = c;
    o->event = ph_event_hook;
    o->event_user = c;
    if (clk) {
        o->clock = ph_clock_read;
        o->clock_user = clk;
    }
}

/* Waits (lock held) while *closed, up to PH_GATE_LIMIT_MS. */
static void
gate_wait_locked(ph_ctx *c, const bool *closed)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += PH_GATE_LIMIT_MS / 1000;
    while (*closed) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT) {
            if (*closed)
                c->gate_timeouts++;
            break;
        }
    }
}

static void
note_max(_Atomic int *max, int v)
{
    int m = atomic_load(max);
    while (v > m && !atomic_compare_exchange_weak(max, &m, v)) {
    }
}

int
ph_create(void *user, void **res, pk_error *err)
{
    ph_ctx *c = user;
    ph_item *it;
    int fail = 0;

    atomic_fetch_add(&c->create_calls, 1);
    note_max(&c->max_in_create, atomic_fetch_add(&c->in_create, 1) + 1);
    pthread_mutex_lock(&c->lock);
    if (c->n_create_thread < PH_MAX_RECORD)
        c->create_thread[c->n_create_thread++] = pthread_self();
    gate_wait_locked(c, &c->create_gate_closed);
    if (c->fail_creates != 0) {
        if (c->fail_creates > 0)
            c->fail_creates--;
        fail = c->fail_code;
        if (c->fail_msg[0])
            pk_error_set(err, c->fail_code, c->fail_sys, "%s", c->fail_msg);
    }
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_sub(&c->in_create, 1);
    if (fail)
        return fail;
    it = calloc(1, sizeof *it);
    if (!it)
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "test item");
    it->id = atomic_fetch_add(&c->next_id, 1) + 1;
    it->tag = c->tag;
    atomic_fetch_add(&c->created, 1);
    atomic_fetch_add(&c->live, 1);
    *res = it;
    return 0;
}

void
ph_destroy(void *user, void *res)
{
    ph_ctx *c = user;

    pthread_mutex_lock(&c->lock);
    if (c->n_destroyed < PH_MAX_RECORD)
        c->destroyed[c->n_destroyed++] = res;
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add(&c->destroy_calls, 1);
    atomic_fetch_sub(&c->live, 1);
    free(res);
}

int
ph_check(void *user, void *res, pk_error *err)
{
    ph_ctx *c = user;
    ph_item *it = res;

    atomic_fetch_add(&c->check_calls, 1);
    atomic_fetch_add(&c->in_check, 1);
    pthread_mutex_lock(&c->lock);
    if (c->n_checked < PH_MAX_RECORD)
        c->checked[c->n_checked++] = res;
    gate_wait_locked(c, &c->check_gate_closed);
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_sub(&c->in_check, 1);
    if (atomic_load(&it->bad))
        return pk_error_set(err, PK_ECHECK, 0, "item %d is dead", it->id);
    return 0;
}

int
ph_reset(void *user, void *res)
{
    ph_ctx *c = user;
    ph_item *it = res;

    atomic_fetch_add(&c->reset_calls, 1);
    return atomic_load(&it->dirty) ? 1 : 0;
}

void
ph_event_hook(void *user, const pk_event *ev)
{
    ph_ctx *c = user;
    ph_event *e;

    pthread_mutex_lock(&c->lock);
    if (c->n_events < PH_MAX_EVENTS) {
        e = &c->events[c->n_events++];
        e->kind = ev->kind;
        e->resource = ev->resource;
        e->file = ev->file;
        e->line = ev->line;
        e->duration_ns = ev->duration_ns;
        e->err_code = ev->error ? ev->error->code : 0;
        if (ev->error)
            snprintf(e->msg, sizeof e->msg, "%s", ev->error->msg);
        else
            e->msg[0] = '\0';
    }
    pthread_mutex_unlock(&c->lock);
}

void
ph_user_free(void *user)
{
    ph_ctx *c = user;

    atomic_store(&c->destroys_at_user_free, atomic_load(&c->destroy_calls));
    atomic_fetch_add(&c->user_free_calls, 1);
}

void
ph_item_free(ph_ctx *c, void *res)
{
    atomic_fetch_sub(&c->live, 1);
    free(res);
}

int
ph_id(const void *res)
{
    return res ? ((const ph_item *)res)->id : 0;
}

void
ph_fail_creates(ph_ctx *c, int n, int code, int sys, const char *msg)
{
    pthread_mutex_lock(&c->lock);
    c->fail_creates = n;
    c->fail_code = code;
    c->fail_sys = sys;
    snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg ? msg : "");
    pthread_mutex_unlock(&c->lock);
}

void
ph_create_gate(ph_ctx *c, bool closed)
{
    pthread_mutex_lock(&c->lock);
    c->create_gate_closed = closed;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void
ph_check_gate(ph_ctx *c, bool closed)
{
    pthread_mutex_lock(&c->lock);
    c->check_gate_closed = closed;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

int
ph_count_events(ph_ctx *c, pk_event_kind kind)
{
    int n = 0;

    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n_events; i++)
        n += c->events[i].kind == kind;
    pthread_mutex_unlock(&c->lock);
    return n;
}

bool
ph_find_event(ph_ctx *c, pk_event_kind kind, ph_event *out)
{
    bool found = false;

    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n_events && !found; i++) {
        if (c->events[i].kind == kind) {
            *out = c->events[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static int
count_in(ph_ctx *c, void *const *arr, const int *n, const void *res)
{
    int k = 0;

    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < *n; i++)
        k += arr[i] == res;
    pthread_mutex_unlock(&c->lock);
    return k;
}

int
ph_destroyed_count(ph_ctx *c, const void *res)
{
    return count_in(c, c->destroyed, &c->n_destroyed, res);
}

int
ph_checked_count(ph_ctx *c, const void *res)
{
    return count_in(c, c->checked, &c->n_checked, res);
}

pthread_t
ph_create_thread(ph_ctx *c, int i)
{
    pthread_t t;

    pthread_mutex_lock(&c->lock);
    t = c->create_thread[i];
    pthread_mutex_unlock(&c->lock);
    return t;
}

/* ---- acquirer thread -------------------------------------------------- */

static void *
acquirer_main(void *arg)
{
    ph_acquirer *a = arg;
    uint64_t t0 = ph_now_ns();

    pk_error_clear(&a->err);
    a->rc = a->timeout_ms == PH_OR_CREATE
                ? pk_pool_acquire_or_create(a->pool, &a->lease, &a->err)
                : pk_pool_acquire(a->pool, &a->lease, a->timeout_ms,
                                  &a->err);
    a->waited_ns = ph_now_ns() - t0;
    a->order = -1;
    if (a->rc == 0) {
        a->resource = a->lease.resource;
        a->res_id = ((ph_item *)a->resource)->id;
        a->res_tag = ((ph_item *)a->resource)->tag;
        if (a->seq)
            a->order = atomic_fetch_add(a->seq, 1);
        if (a->release_at_once)
            a->rc = pk_pool_release(a->pool, &a->lease, PK_RELEASE_OK);
    }
    atomic_store(&a->done, 1);
    return NULL;
}

int
ph_acquirer_start(ph_acquirer *a, pk_pool *p, int timeout_ms,
                  bool release_at_once, _Atomic int *seq)
{
    memset(a, 0, sizeof *a);
    a->pool = p;
    a->timeout_ms = timeout_ms;
    a->release_at_once = release_at_once;
    a->seq = seq;
    a->rc = 1;
    return pthread_create(&a->thread, NULL, acquirer_main, a);
}

void
ph_acquirer_join(ph_acquirer *a)
{
    pthread_join(a->thread, NULL);
}

void
ph_acquirers_join_served(pk_pool *p, ph_acquirer *a, int n)
{
    for (int i = 0; i < n; i++)
        ph_acquirer_join(&a[i]);
    for (int i = 0; i < n; i++)
        assert_int_equal(a[i].rc, 0);
    for (int i = 0; i < n; i++)
        ph_give(p, &a[i].lease);
}

/* ---- test-thread helpers ---------------------------------------------- */

int
ph_setup(void **state)
{
    ph_fixture *fx = *state;

    for (int i = 0; i < fx->n; i++) {
        ph_ctx_init(&fx->ctx[i]);
        fx->ctx[i].tag = i;
    }
    ph_clock_init(fx->clk);
    fx->live_at_start = pk__alloc_live();
    return 0;
}

int
ph_teardown(void **state)
{
    ph_fixture *fx = *state;

    for (int i = 0; i < fx->n; i++) {
        assert_int_equal(atomic_load(&fx->ctx[i].live), 0);
        assert_int_equal(fx->ctx[i].gate_timeouts, 0);
    }
    assert_int_equal(pk__alloc_live(), fx->live_at_start);
    for (int i = 0; i < fx->n; i++)
        ph_ctx_fini(&fx->ctx[i]);
    return 0;
}

pk_pool *
ph_new_pool(const pk_pool_options *o)
{
    pk_pool *p = NULL;

    assert_int_equal(pk_pool_create(&p, o), 0);
    assert_non_null(p);
    return p;
}

pk_pool_stats
ph_stats(pk_pool *p)
{
    pk_pool_stats st;

    assert_int_equal(pk_pool_stats_get(p, &st), 0);
    return st;
}

void *
ph_take(pk_pool *p, pk_lease *l)
{
    assert_int_equal(pk_pool_acquire(p, l, PH_LONG_MS, NULL), 0);
    assert_non_null(l->resource);
    return l->resource;
}

void
ph_give(pk_pool *p, pk_lease *l)
{
    assert_int_equal(pk_pool_release(p, l, PK_RELEASE_OK), 0);
}
