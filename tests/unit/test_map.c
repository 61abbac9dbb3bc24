/* tests/unit/test_map.c - pk_map on the executor interface: input order
 * and completion order, lazy input through the window, flat memory with a
 * long input, explicit and automatic chunking (counted through a wrapping
 * executor), progress, failing items, the whole-map timeout, destroy in
 * the middle, input and executor errors, bad arguments, allocation
 * failures, and pk_map_array.
 *
 * Tasks run on worker threads and only record (atomics); every assertion
 * is on the test's thread. The next, progress and release hooks run on the
 * thread calling pk_map_create / pk_map_next / pk_map_destroy, which is
 * the test's thread, so they may keep plain counters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poolkit/executor.h>
#include <poolkit/threadpool.h>

#include "alloc.h"
#include "future_helpers.h"
#include "prng.h"

/* ---- setup and teardown ------------------------------------------------- */

static long live_at_start;

static int
setup(void **state)
{
    (void)state;
    live_at_start = pk__alloc_live();
    return 0;
}

/* Nothing poolkit allocated may outlive a test. A worker may still be
 * dropping its reference to the last future (and the callback node) just
 * after the pool let go of it, so give stragglers a moment first. */
static int
teardown(void **state)
{
    (void)state;
    pk__alloc_fail_at(0);
    for (int i = 0; i < 2000 && pk__alloc_live() != live_at_start; i++)
        fh_sleep_ms(1);
    assert_int_equal(pk__alloc_live(), live_at_start);
    return 0;
}

/* ---- executors ---------------------------------------------------------- */

static pk_threadpool *tp;

static pk_executor *
make_pool(size_t threads)
{
    pk_threadpool_options o = { .max_threads = threads };
    pk_executor *ex = NULL;

    assert_int_equal(pk_threadpool_create(&tp, &o), 0);
    assert_int_equal(pk_threadpool_executor(tp, &ex), 0);
    return ex;
}

static void
drop_pool(pk_executor *ex)
{
    pk_executor_destroy(ex);
    pk_threadpool_destroy(tp);
    tp = NULL;
}

static pk_executor *
make_inline(void)
{
    pk_executor *ex = NULL;

    assert_int_equal(pk_inline_executor_create(&ex, NULL, NULL, NULL), 0);
    return ex;
}

/* A wrapping executor that counts submits and forwards to inner. */
static atomic_size_t submits;

static int
cnt_submit(void *impl, const pk_task *t, pk_future **fut)
{
    atomic_fetch_add(&submits, 1);
    return pk_executor_submit(impl, t, fut);
}

static int
cnt_capacity(void *impl, size_t *out)
{
    return pk_executor_capacity(impl, out);
}

static int
cnt_shutdown(void *impl, int how, int timeout_ms)
{
    return pk_executor_shutdown(impl, how, timeout_ms);
}

static pk_executor *
make_counting(pk_executor *inner)
{
    static const pk_executor_ops ops = {
        .submit = cnt_submit,
        .capacity = cnt_capacity,
        .shutdown = cnt_shutdown,
    };
    pk_executor *ex = NULL;

    atomic_store(&submits, 0);
    assert_int_equal(pk_executor_create(&ex, &ops, inner), 0);
    return ex;
}

/* ---- tasks -------------------------------------------------------------- */

/* arg is the item number i; the result is i * 3 + 1 (never NULL). Some
 * items sleep, so completion order differs from input order. */
static int
triple(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    uintptr_t i = (uintptr_t)arg;

    (void)self;
    (void)err;
    if (i % 7 == 0)
        fh_sleep_us((long)(pk_prng_hash(i) % 200));
    out->value = (void *)(i * 3 + 1);
    return 0;
}

/* Fails every item with i % 10 == 3, with a message naming it. */
static int
some_fail(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    uintptr_t i = (uintptr_t)arg;

    if (i % 10 == 3)
        return pk_error_set(err, PK_ETASK, (int)i, "item %lu says no",
                            (unsigned long)i);
    return triple(arg, self, out, err);
}

static atomic_int gate_open;
static atomic_int gate_waiting;

/* Item 0 waits for the gate (or for cancellation); the rest are quick. */
static int
gated(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    if ((uintptr_t)arg == 0) {
        atomic_fetch_add(&gate_waiting, 1);
        while (!atomic_load(&gate_open)) {
            if (pk_future_cancel_requested(self))
                return PK_ECANCELED;
            fh_sleep_us(500);
        }
    }
    return triple(arg, self, out, err);
}

static atomic_int made;

/* A malloc'd result counted by fh_count_free; sleeps a little. */
static int
malloced(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    fh_sleep_us(50);
    *out = fh_counted_result((int)(uintptr_t)arg);
    atomic_fetch_add(&made, 1);
    return 0;
}

static int
tiny(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    out->value = (void *)((uintptr_t)arg * 3 + 1);
    return 0;
}

/* ---- input -------------------------------------------------------------- */

struct input {
    size_t n;          /* items; SIZE_MAX = endless */
    size_t i;          /* next to hand out */
    size_t delivered;  /* the consumer counts what it got */
    size_t max_lead;   /* largest i - delivered seen at a read */
    size_t released;   /* release hook calls */
    size_t fail_at;    /* return fail_code at this item (SIZE_MAX: never) */
    int fail_code;
    pk_task_fn fn;
    const char *name;  /* if set, every 5th item is this named task */
};

static void
input_init(struct input *in, size_t n, pk_task_fn fn)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    in->fn = fn;
    in->fail_at = SIZE_MAX;
}

static uintptr_t named_args[1 << 16];

static int
next_item(void *user, pk_task *t)
{
    struct input *in = user;

    if (in->i == in->fail_at)
        return in->fail_code;
    if (in->i == in->n)
        return 1;
    if (in->name && in->i % 5 == 4) {
        named_args[in->i % (1 << 16)] = in->i;
        t->name = in->name;
        t->data = &named_args[in->i % (1 << 16)];
        t->len = sizeof(uintptr_t);
    } else {
        t->fn = in->fn;
        t->arg = (void *)in->i;
    }
    in->i++;
    if (in->i - in->delivered > in->max_lead)
        in->max_lead = in->i - in->delivered;
    return 0;
}

static void
release_item(void *user, pk_task *t)
{
    struct input *in = user;

    (void)t;
    in->released++;
}

/* Reads every result; checks (after the loop) that ordered maps deliver
 * 0..n-1 in order and that each item comes exactly once with its value. */
static void
drain_check(pk_map *m, struct input *in, size_t n, int ordered)
{
    unsigned char *seen = calloc(n ? n : 1, 1);
    size_t count = 0, bad_order = 0, bad_value = 0, twice = 0, idx;
    pk_result r;
    int rc;

    assert_non_null(seen);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) == 0) {
        in->delivered++;
        if (idx >= n || seen[idx]++) {
            twice++;
            continue;
        }
        if (ordered && idx != count)
            bad_order++;
        if ((uintptr_t)r.value != idx * 3 + 1)
            bad_value++;
        count++;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(count, n);
    assert_int_equal(twice, 0);
    assert_int_equal(bad_order, 0);
    assert_int_equal(bad_value, 0);
    assert_int_equal(pk_map_next(m, &r, &idx, NULL), 1); /* repeats */
    free(seen);
}

/* ---- order -------------------------------------------------------------- */

static void
run_ordered(pk_executor *ex, size_t n, size_t window, size_t chunk)
{
    pk_map_options o = { .window = window, .chunk = chunk };
    struct input in;
    pk_map *m = NULL;

    input_init(&in, n, triple);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, n, 1);
    pk_map_destroy(m);
}

static void
test_ordered_results_follow_input_on_thread_pool(void **state)
{
    pk_executor *ex = make_pool(4);

    (void)state;
    run_ordered(ex, 3000, 0, 0);  /* defaults, automatic chunks */
    run_ordered(ex, 3000, 64, 1); /* no chunking, small window */
    run_ordered(ex, 3000, 64, 7); /* chunks that do not divide n */
    run_ordered(ex, 0, 0, 0);     /* empty input */
    drop_pool(ex);
}

static void
test_ordered_results_follow_input_on_inline_executor(void **state)
{
    pk_executor *ex = make_inline();

    (void)state;
    run_ordered(ex, 2000, 0, 0);
    run_ordered(ex, 2000, 16, 1);
    run_ordered(ex, 2000, 16, 5);
    pk_executor_destroy(ex);
}

static void
test_unordered_stream_yields_each_result_once(void **state)
{
    pk_executor *ex = make_pool(4);
    pk_map_options o = { .window = 128, .chunk = 1 };
    struct input in;
    pk_map *m = NULL;

    (void)state;
    input_init(&in, 3000, triple);
    assert_int_equal(pk_as_completed_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, 3000, 0);
    pk_map_destroy(m);

    input_init(&in, 3000, triple); /* and chunked */
    o.chunk = 0;
    o.order = PK_MAP_UNORDERED;
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, 3000, 0);
    pk_map_destroy(m);
    drop_pool(ex);
}

/* ---- lazy input and flat memory ----------------------------------------- */

static void
test_input_is_read_at_most_a_window_ahead(void **state)
{
    pk_executor *ex = make_pool(4);
    const size_t windows[] = { 1, 16, 100 };
    struct input in;
    pk_map *m = NULL;

    (void)state;
    for (int order = 0; order < 2; order++) {
        for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
            pk_map_options o = { .window = windows[w], .order = order };

            input_init(&in, 2000, triple);
            assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
            drain_check(m, &in, 2000, order == PK_MAP_ORDERED);
            pk_map_destroy(m);
            assert_true(in.max_lead <= windows[w]);
            /* It does read ahead (whole chunks only, so maybe not all
             * the way). */
            assert_true(in.max_lead * 2 >= windows[w]);
        }
    }
    drop_pool(ex);
}

static void
test_memory_stays_flat_with_a_long_input(void **state)
{
    pk_executor *ex = make_pool(4);
    size_t n = (size_t)(200000 * pk_test_scale());
    pk_map_options o = { .window = 32, .chunk = 1 };
    long base = pk__alloc_live(), max_first = 0, max_rest = 0;
    struct input in;
    pk_map *m = NULL;
    size_t idx;
    pk_result r;
    int rc;

    (void)state;
    if (n < 20000)
        n = 20000;
    input_init(&in, n, tiny);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) == 0) {
        long live = pk__alloc_live() - base;

        if (in.delivered < n / 10)
            max_first = live > max_first ? live : max_first;
        else
            max_rest = live > max_rest ? live : max_rest;
        in.delivered++;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(in.delivered, n);
    pk_map_destroy(m);
    /* Per item in flight: a unit, a future, a callback node. Nothing
     * grows with n: the last 90% of the run peaks no higher than the
     * bound the first 10% already obeyed. */
    assert_true(max_rest <= 4 * 32 + 16);
    assert_true(max_first <= 4 * 32 + 16);
    drop_pool(ex);
}

/* ---- chunking ----------------------------------------------------------- */

static void
test_explicit_chunk_packs_items_per_executor_task(void **state)
{
    pk_executor *pool = make_pool(4);
    pk_executor *ex = make_counting(pool);
    pk_map_options o = { .chunk = 100 };
    struct input in;
    pk_map *m = NULL;

    (void)state;
    input_init(&in, 10000, triple);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, 10000, 1);
    pk_map_destroy(m);
    assert_int_equal(atomic_load(&submits), 10000 / 100);

    atomic_store(&submits, 0); /* chunk 1: one task per item */
    o.chunk = 1;
    input_init(&in, 500, triple);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, 500, 1);
    pk_map_destroy(m);
    assert_int_equal(atomic_load(&submits), 500);
    pk_executor_destroy(ex);
    drop_pool(pool);
}

static void
test_automatic_chunking_cuts_tasks_for_tiny_items(void **state)
{
    pk_executor *pool = make_pool(4);
    pk_executor *in_ex = make_inline();
    pk_executor *execs[] = { pool, in_ex };
    struct input in;
    pk_map *m = NULL;

    (void)state;
    for (int e = 0; e < 2; e++) {
        pk_executor *ex = make_counting(execs[e]);

        input_init(&in, 20000, tiny);
        assert_int_equal(pk_map_create(&m, ex, next_item, &in, NULL), 0);
        drain_check(m, &in, 20000, 1);
        pk_map_destroy(m);
        print_message("automatic chunking: %zu tasks for 20000 items\n",
                      (size_t)atomic_load(&submits));
        assert_true(atomic_load(&submits) < 20000 / 4);
        pk_executor_destroy(ex);
    }
    pk_executor_destroy(in_ex);
    drop_pool(pool);
}

/* Slow items are not packed: each already carries enough work. */
static int
slow(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    fh_sleep_us(300);
    return tiny(arg, self, out, err);
}

static void
test_automatic_chunking_leaves_slow_items_alone(void **state)
{
    pk_executor *pool = make_pool(4);
    pk_executor *ex = make_counting(pool);
    struct input in;
    pk_map *m = NULL;

    (void)state;
    input_init(&in, 200, slow);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, NULL), 0);
    drain_check(m, &in, 200, 1);
    pk_map_destroy(m);
    assert_int_equal(atomic_load(&submits), 200);
    pk_executor_destroy(ex);
    drop_pool(pool);
}

/* ---- named tasks -------------------------------------------------------- */

static int
named_triple(const void *data, size_t len, pk_future *self, pk_result *out,
             pk_error *err)
{
    uintptr_t i;

    if (len != sizeof i)
        return PK_EINVAL;
    memcpy(&i, data, sizeof i);
    return triple((void *)i, self, out, err);
}

static void
test_named_tasks_mix_with_chunked_fn_tasks(void **state)
{
    pk_threadpool_options to = { .max_threads = 4 };
    pk_registry *reg = NULL;
    pk_executor *pool = NULL, *ex;
    pk_map_options o = { .chunk = 3 };
    struct input in;
    pk_map *m = NULL;

    (void)state;
    assert_int_equal(pk_registry_create(&reg), 0);
    assert_int_equal(pk_registry_register(reg, "triple", named_triple), 0);
    to.registry = reg;
    assert_int_equal(pk_threadpool_create(&tp, &to), 0);
    assert_int_equal(pk_threadpool_executor(tp, &pool), 0);
    ex = make_counting(pool);
    input_init(&in, 1000, triple);
    in.name = "triple";
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    drain_check(m, &in, 1000, 1);
    pk_map_destroy(m);
    /* 200 named tasks alone; the 800 fn items in runs of 4 cut into
     * chunks of 3 and 1. */
    assert_int_equal(atomic_load(&submits), 200 + 200 * 2);
    pk_executor_destroy(ex);
    drop_pool(pool);
    pk_registry_destroy(reg);
}

/* Named items of one name with an explicit chunk go 8 to an executor
 * task (PK_TASK_CHUNK), each with its own outcome: bytes back, or a
 * failure with its code, sys and message. On the thread pool and on the
 * inline executor (both run chunks through pk_task_run). */
static int
named_bytes(const void *data, size_t len, pk_future *self, pk_result *out,
            pk_error *err)
{
    uintptr_t i, *v;

    if (self) /* a chunked call has no future to finish */
        return pk_error_set(err, PK_EINVAL, 0, "self is not NULL");
    if (len != sizeof i)
        return PK_EINVAL;
    memcpy(&i, data, sizeof i);
    if (i % 10 == 3)
        return pk_error_set(err, PK_ECHECK, (int)i, "item %zu fails",
                            (size_t)i);
    v = malloc(sizeof *v);
    if (!v)
        return PK_ENOMEM;
    *v = i * 3 + 1;
    out->value = v;
    out->len = sizeof *v;
    out->free_fn = free;
    return 0;
}

struct named_in {
    size_t i, n;
    uintptr_t args[1000];
};

static int
next_named(void *user, pk_task *t)
{
    struct named_in *in = user;

    if (in->i == in->n)
        return 1;
    in->args[in->i] = in->i;
    t->name = "bytes";
    t->data = &in->args[in->i];
    t->len = sizeof in->args[0];
    in->i++;
    return 0;
}

static void
map_named_chunks(pk_executor *inner)
{
    static struct named_in in;
    pk_executor *ex = make_counting(inner);
    pk_map_options o = { .chunk = 8 };
    pk_map *m = NULL;
    pk_result r;
    pk_error e;
    size_t idx, got = 0;
    int rc;

    in.i = 0;
    in.n = 1000;
    assert_int_equal(pk_map_create(&m, ex, next_named, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, &e)) != 1) {
        assert_int_equal(idx, got);
        if (idx % 10 == 3) {
            char want[64];
            snprintf(want, sizeof want, "item %zu fails", idx);
            assert_int_equal(rc, PK_ECHECK);
            assert_int_equal(e.sys, (int)idx);
            assert_string_equal(e.msg, want);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(r.len, sizeof(uintptr_t));
            assert_int_equal(*(uintptr_t *)r.value, idx * 3 + 1);
            r.free_fn(r.value);
        }
        got++;
    }
    assert_int_equal(got, 1000);
    assert_int_equal(atomic_load(&submits), 1000 / 8);
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

static void
test_named_items_of_one_name_go_in_chunks(void **state)
{
    pk_threadpool_options to = { .max_threads = 2 };
    pk_registry *reg = NULL;
    pk_executor *pool = NULL, *inl = NULL;

    (void)state;
    assert_int_equal(pk_registry_create(&reg), 0);
    assert_int_equal(pk_registry_register(reg, "bytes", named_bytes), 0);
    to.registry = reg;
    assert_int_equal(pk_threadpool_create(&tp, &to), 0);
    assert_int_equal(pk_threadpool_executor(tp, &pool), 0);
    map_named_chunks(pool);
    drop_pool(pool);
    assert_int_equal(pk_inline_executor_create(&inl, reg, NULL, NULL), 0);
    map_named_chunks(inl);
    pk_executor_destroy(inl);
    pk_registry_destroy(reg);
}

/* ---- progress ----------------------------------------------------------- */

struct prog {
    size_t calls, last_done, last_total, backwards, over;
};

static void
on_progress(void *user, size_t done, size_t total)
{
    struct prog *p = user;

    if (p->calls && done < p->last_done)
        p->backwards++;
    if (total && done > total)
        p->over++;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
}

static void
test_progress_is_monotonic_and_reaches_total(void **state)
{
    pk_executor *ex = make_pool(4);
    struct prog p;
    struct input in;
    pk_map *m = NULL;

    (void)state;
    for (int hint = 0; hint < 2; hint++) {
        pk_map_options o = { .window = 64, .progress = on_progress,
                             .progress_user = &p,
                             .total_hint = hint ? 1500 : 0 };

        memset(&p, 0, sizeof p);
        input_init(&in, 1500, triple);
        assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
        drain_check(m, &in, 1500, 1);
        pk_map_destroy(m);
        assert_true(p.calls >= 2);
        assert_int_equal(p.backwards, 0);
        assert_int_equal(p.over, 0);
        assert_int_equal(p.last_done, 1500);
        assert_int_equal(p.last_total, 1500);
    }
    drop_pool(ex);
}

/* ---- failures ----------------------------------------------------------- */

static void
run_failing(pk_executor *ex, size_t chunk)
{
    pk_map_options o = { .chunk = chunk, .window = 50 };
    size_t n = 500, ok = 0, failed = 0, wrong = 0, idx, expect = 0;
    struct input in;
    pk_map *m = NULL;
    pk_error err;
    pk_result r;
    int rc;
    char want[64];

    input_init(&in, n, some_fail);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, &err)) != 1) {
        if (idx != expect++)
            wrong++;
        if (rc == 0) {
            ok++;
            continue;
        }
        snprintf(want, sizeof want, "item %lu says no", (unsigned long)idx);
        if (rc != PK_ETASK || idx % 10 != 3 || err.code != PK_ETASK ||
            err.sys != (int)idx || strcmp(err.msg, want) != 0)
            wrong++;
        failed++;
    }
    pk_map_destroy(m);
    assert_int_equal(wrong, 0);
    assert_int_equal(failed, n / 10);
    assert_int_equal(ok, n - n / 10);
}

static void
test_failing_item_reports_code_and_index_and_map_goes_on(void **state)
{
    pk_executor *ex = make_pool(4);
    pk_executor *in_ex = make_inline();

    (void)state;
    run_failing(ex, 1);
    run_failing(ex, 8);
    run_failing(in_ex, 0);
    pk_executor_destroy(in_ex);
    drop_pool(ex);
}

static int
next_with_bad_task(void *user, pk_task *t)
{
    struct input *in = user;

    if (in->i == in->n)
        return 1;
    if (in->i != 2) { /* item 2: neither fn nor name */
        t->fn = triple;
        t->arg = (void *)in->i;
    }
    in->i++;
    return 0;
}

static void
test_invalid_input_task_fails_alone(void **state)
{
    pk_executor *ex = make_pool(2);
    pk_map_options o = { .chunk = 4 };
    int codes[6];
    struct input in;
    pk_map *m = NULL;
    size_t idx;
    pk_result r;

    (void)state;
    input_init(&in, 6, triple);
    assert_int_equal(pk_map_create(&m, ex, next_with_bad_task, &in, &o), 0);
    for (int i = 0; i < 6; i++)
        codes[i] = pk_map_next(m, &r, &idx, NULL);
    assert_int_equal(pk_map_next(m, &r, &idx, NULL), 1);
    pk_map_destroy(m);
    for (int i = 0; i < 6; i++)
        assert_int_equal(codes[i], i == 2 ? PK_EINVAL : 0);
    drop_pool(ex);
}

static void
test_input_error_ends_map_after_items_read(void **state)
{
    pk_executor *ex = make_pool(4);
    pk_map_options o = { .window = 16, .chunk = 3 };
    size_t got = 0, idx = 0;
    struct input in;
    pk_map *m = NULL;
    pk_error err;
    pk_result r;
    int rc;

    (void)state;
    input_init(&in, 1000, triple);
    in.fail_at = 50;
    in.fail_code = PK_ECONNECT;
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, &err)) == 0) {
        in.delivered++;
        got++;
    }
    assert_int_equal(rc, PK_ECONNECT);
    assert_int_equal(idx, PK_MAP_NO_INDEX);
    assert_int_equal(err.code, PK_ECONNECT);
    assert_int_equal(got, 50);
    assert_int_equal(pk_map_next(m, &r, &idx, NULL), PK_ECONNECT);
    pk_map_destroy(m);
    drop_pool(ex);
}

static void
test_executor_shut_down_ends_map(void **state)
{
    pk_executor *ex = make_pool(2);
    struct input in;
    pk_map *m = NULL;
    size_t idx = 0;
    pk_result r;

    (void)state;
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 1000), 0);
    input_init(&in, 10, triple);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, NULL), 0);
    assert_int_equal(pk_map_next(m, &r, &idx, NULL), PK_ESHUTDOWN);
    assert_int_equal(idx, PK_MAP_NO_INDEX);
    pk_map_destroy(m);
    drop_pool(ex);
}

/* ---- timeout and destroy ------------------------------------------------ */

static void
test_whole_map_timeout_returns_etimedout_not_early(void **state)
{
    pk_executor *ex = make_pool(2);
    pk_map_options o = { .timeout_ms = 150, .window = 8, .chunk = 1 };
    struct input in;
    pk_map *m = NULL;
    uint64_t t0, took;
    pk_error err;
    size_t idx = 0;
    pk_result r;
    int rc;

    (void)state;
    atomic_store(&gate_open, 0);
    atomic_store(&gate_waiting, 0);
    input_init(&in, 100, gated);
    t0 = fh_now_ms();
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    rc = pk_map_next(m, &r, &idx, &err); /* item 0 is behind the gate */
    took = fh_now_ms() - t0;
    assert_int_equal(rc, PK_ETIMEDOUT);
    assert_int_equal(idx, PK_MAP_NO_INDEX);
    assert_int_equal(err.code, PK_ETIMEDOUT);
    assert_true(took >= 150);
    assert_int_equal(pk_map_next(m, &r, &idx, NULL), PK_ETIMEDOUT);
    pk_map_destroy(m); /* the gated task sees the cancel flag */
    assert_int_equal(atomic_load(&gate_waiting), 1);
    drop_pool(ex);
}

/* Sleeps 20 ms, then as triple. */
static int
slow_triple(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    fh_sleep_ms(20);
    return triple(arg, self, out, err);
}

/* An executor that runs tasks inside submit (the inline one) must not
 * carry the map past its timeout: 50 items of 20 ms are a second's work,
 * the timeout a tenth of it. */
static void
test_timeout_holds_when_submit_runs_the_tasks(void **state)
{
    pk_executor *ex = make_inline();
    pk_map_options o = { .timeout_ms = 100, .window = 20, .chunk = 1 };
    struct input in;
    pk_map *m = NULL;
    size_t idx, got = 0;
    pk_result r;
    int rc;

    (void)state;
    input_init(&in, 50, slow_triple);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) == 0) {
        assert_int_equal((uintptr_t)r.value, idx * 3 + 1);
        got++;
    }
    assert_int_equal(rc, PK_ETIMEDOUT);
    assert_true(got < 50);
    pk_map_destroy(m);
    pk_executor_destroy(ex);
}

/* Item 0 of each chunk of 4 finishes the chunk's future (its `self`)
 * before the other three ran: each item still comes with its own result,
 * and the chunk is not freed under the items still running. */
static int
completes_self(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    uintptr_t i = (uintptr_t)arg;

    if (i % 4 == 0)
        (void)pk_future_complete(self, NULL);
    else
        fh_sleep_ms(1); /* the consumer is at this unit meanwhile */
    return triple(arg, self, out, err);
}

static void
test_task_finishing_its_own_future_keeps_its_chunk(void **state)
{
    pk_executor *ex = make_pool(1);
    pk_map_options o = { .window = 16, .chunk = 4 };
    struct input in;
    pk_map *m = NULL;
    size_t idx, got = 0;
    pk_result r;
    int rc;

    (void)state;
    input_init(&in, 64, completes_self);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) == 0) {
        assert_int_equal(idx, got);
        assert_int_equal((uintptr_t)r.value, idx * 3 + 1);
        got++;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(got, 64);
    pk_map_destroy(m);
    drop_pool(ex);
}

static void
test_destroy_mid_map_cancels_and_frees(void **state)
{
    pk_executor *ex = make_pool(4);
    pk_map_options o = { .window = 64, .chunk = 2,
                         .release = release_item };
    struct input in;
    pk_map *m = NULL;
    size_t idx;
    pk_result r;

    (void)state;
    atomic_store(&fh_frees, 0);
    atomic_store(&made, 0);
    input_init(&in, SIZE_MAX, malloced); /* endless */
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &o), 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pk_map_next(m, &r, &idx, NULL), 0);
        assert_int_equal(idx, (size_t)i);
        assert_int_equal(*(int *)r.value, i);
        r.free_fn(r.value);
        in.delivered++;
    }
    pk_map_destroy(m);
    /* Every result made was freed (100 by us, the rest by destroy); every
     * item read was released once; teardown checks poolkit's memory. */
    assert_int_equal(atomic_load(&fh_frees), atomic_load(&made));
    assert_true(in.i > 100);
    assert_int_equal(in.released, in.i);
    drop_pool(ex);
}

/* ---- arguments, allocation failures, arrays ----------------------------- */

static void
test_bad_arguments_are_einval(void **state)
{
    pk_executor *ex = make_inline();
    struct input in;
    pk_map *m = NULL;
    void *args[1] = { NULL }, *res[1];
    pk_map_options bad_order = { .order = 7 };
    pk_map_options bad_time = { .timeout_ms = -7 };

    (void)state;
    input_init(&in, 1, triple);
    assert_int_equal(pk_map_create(NULL, ex, next_item, &in, NULL), PK_EINVAL);
    assert_int_equal(pk_map_create(&m, NULL, next_item, &in, NULL), PK_EINVAL);
    assert_int_equal(pk_map_create(&m, ex, NULL, &in, NULL), PK_EINVAL);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &bad_order),
                     PK_EINVAL);
    assert_int_equal(pk_map_create(&m, ex, next_item, &in, &bad_time),
                     PK_EINVAL);
    assert_int_equal(pk_as_completed_create(NULL, ex, next_item, &in, NULL),
                     PK_EINVAL);
    assert_null(m);
    assert_int_equal(in.i, 0); /* nothing was read */
    assert_int_equal(pk_map_next(NULL, NULL, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_map_array(NULL, tiny, args, 1, res, NULL, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_map_array(ex, NULL, args, 1, res, NULL, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_map_array(ex, tiny, NULL, 1, res, NULL, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_map_array(ex, tiny, args, 1, NULL, NULL, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_map_array(ex, tiny, NULL, 0, NULL, NULL, NULL, NULL), 0);
    pk_map_destroy(NULL);
    pk_executor_destroy(ex);
}

static void
test_map_array_fills_results_and_codes(void **state)
{
    pk_executor *ex = make_pool(4);
    enum { N = 1000 };
    static void *args[N], *res[N];
    static int codes[N];
    size_t wrong = 0;
    int rc;

    (void)state;
    for (uintptr_t i = 0; i < N; i++)
        args[i] = (void *)i;
    assert_int_equal(pk_map_array(ex, triple, args, N, res, NULL, NULL, NULL), 0);
    for (uintptr_t i = 0; i < N; i++)
        wrong += (uintptr_t)res[i] != i * 3 + 1;
    assert_int_equal(wrong, 0);

    rc = pk_map_array(ex, some_fail, args, N, res, codes, NULL,
                      &(pk_map_options){ .order = PK_MAP_UNORDERED });
    assert_int_equal(rc, PK_ETASK);
    for (uintptr_t i = 0; i < N; i++) {
        int bad = i % 10 == 3;

        wrong += codes[i] != (bad ? PK_ETASK : 0);
        wrong += bad ? res[i] != NULL : (uintptr_t)res[i] != i * 3 + 1;
    }
    assert_int_equal(wrong, 0);
    drop_pool(ex);
}

/* errs keeps each failed item's message (sys too), cleared for the
 * items that succeeded; a pre-filled array is overwritten everywhere. */
static void
test_map_array_keeps_each_items_message_in_errs(void **state)
{
    pk_executor *ex = make_pool(4);
    enum { N = 200 };
    static void *args[N], *res[N];
    static int codes[N];
    static pk_error errs[N];
    char want[64];
    size_t wrong = 0;

    (void)state;
    for (uintptr_t i = 0; i < N; i++)
        args[i] = (void *)i;
    memset(errs, 'x', sizeof errs);
    assert_int_equal(pk_map_array(ex, some_fail, args, N, res, NULL, errs,
                                  &(pk_map_options){ .chunk = 8 }),
                     PK_ETASK);
    for (uintptr_t i = 0; i < N; i++) {
        if (i % 10 == 3) {
            snprintf(want, sizeof want, "item %lu says no", (unsigned long)i);
            wrong += errs[i].code != PK_ETASK;
            wrong += errs[i].sys != (int)i;
            wrong += strcmp(errs[i].msg, want) != 0;
        } else {
            wrong += errs[i].code != 0 || errs[i].sys != 0 ||
                     errs[i].msg[0] != '\0';
        }
    }
    assert_int_equal(wrong, 0);

    /* With codes too, both say the same. */
    assert_int_equal(pk_map_array(ex, some_fail, args, N, res, codes, errs,
                                  NULL), PK_ETASK);
    for (size_t i = 0; i < N; i++)
        wrong += codes[i] != errs[i].code;
    assert_int_equal(wrong, 0);
    drop_pool(ex);
}

/* A map that times out gives the items it never delivered its error:
 * the timeout, in codes and in errs. */
static void
test_map_array_gives_undelivered_items_the_maps_error(void **state)
{
    pk_executor *ex = make_pool(2);
    enum { N = 20 };
    void *args[N], *res[N];
    int codes[N];
    pk_error errs[N];

    (void)state;
    atomic_store(&gate_open, 0);
    atomic_store(&gate_waiting, 0);
    for (uintptr_t i = 0; i < N; i++)
        args[i] = (void *)i;
    assert_int_equal(pk_map_array(ex, gated, args, N, res, codes, errs,
                                  &(pk_map_options){ .timeout_ms = 50,
                                                     .chunk = 1 }),
                     PK_ETIMEDOUT);
    /* Item 0 waits behind the gate: never delivered. */
    assert_int_equal(codes[0], PK_ETIMEDOUT);
    assert_int_equal(errs[0].code, PK_ETIMEDOUT);
    assert_non_null(strstr(errs[0].msg, "timeout"));
    assert_null(res[0]);
    drop_pool(ex);
}

/* Fails each allocation in turn: every run ends with 0 or PK_ENOMEM, and
 * the teardown finds nothing leaked. The inline executor keeps it on one
 * thread. */
static void
test_allocation_failures_leave_nothing_behind(void **state)
{
    pk_executor *ex = make_inline();
    enum { N = 40 };
    void *args[N], *res[N];
    int codes[N];
    pk_error errs[N];
    int rc = -1, odd = 0;
    unsigned long k;

    (void)state;
    for (uintptr_t i = 0; i < N; i++)
        args[i] = (void *)i;
    for (k = 1; k < 2000 && rc != 0; k++) {
        pk__alloc_fail_at(k);
        rc = pk_map_array(ex, some_fail, args, N, res, codes, errs,
                          &(pk_map_options){ .chunk = 4 });
        pk__alloc_fail_at(0);
        if (rc != 0 && rc != PK_ENOMEM && rc != PK_ETASK)
            odd++;
        if (rc == PK_ETASK)
            rc = 0; /* ran to the end: the failing items are the task's */
    }
    assert_int_equal(odd, 0);
    assert_int_equal(rc, 0);
    assert_true(k > 2);
    pk_executor_destroy(ex);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_ordered_results_follow_input_on_thread_pool),
        T(test_ordered_results_follow_input_on_inline_executor),
        T(test_unordered_stream_yields_each_result_once),
        T(test_input_is_read_at_most_a_window_ahead),
        T(test_memory_stays_flat_with_a_long_input),
        T(test_explicit_chunk_packs_items_per_executor_task),
        T(test_automatic_chunking_cuts_tasks_for_tiny_items),
        T(test_automatic_chunking_leaves_slow_items_alone),
        T(test_named_tasks_mix_with_chunked_fn_tasks),
        T(test_named_items_of_one_name_go_in_chunks),
        T(test_progress_is_monotonic_and_reaches_total),
        T(test_failing_item_reports_code_and_index_and_map_goes_on),
        T(test_invalid_input_task_fails_alone),
        T(test_input_error_ends_map_after_items_read),
        T(test_executor_shut_down_ends_map),
        T(test_whole_map_timeout_returns_etimedout_not_early),
        T(test_timeout_holds_when_submit_runs_the_tasks),
        T(test_task_finishing_its_own_future_keeps_its_chunk),
        T(test_destroy_mid_map_cancels_and_frees),
        T(test_bad_arguments_are_einval),
        T(test_map_array_fills_results_and_codes),
        T(test_map_array_keeps_each_items_message_in_errs),
        T(test_map_array_gives_undelivered_items_the_maps_error),
        T(test_allocation_failures_leave_nothing_behind),
#undef T
    };

    return cmocka_run_group_tests_name("map", tests, NULL, NULL);
}
