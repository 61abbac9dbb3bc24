/* tests/unit/test_executor.c - the registry, the pk_executor wrapper,
 * pk_task_run and the inline executor; and, through a "manual" executor
 * written here (a queue drained by one worker thread, with a gate the
 * test opens), futures finished on another thread: timeouts, wait-any,
 * wait-all, callbacks, cancellation races and unread-failure reports, for
 * fn tasks and for named tasks alike.
 *
 * Worker threads never assert: they record, and the test thread asserts
 * after joining (cmocka's assertions longjmp into the runner). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <poolkit/executor.h>

#include "alloc.h"
#include "future_helpers.h"

/* ---- the tasks: one body, reachable as fn or by name ------------------- */

enum action { ACT_OK, ACT_FAIL, ACT_POSITIVE, ACT_UNTIL_CANCEL, ACT_BLOCK };

struct op {
    int action;
    int index;  /* slot in ran[] */
};

#define SLOTS 512
static atomic_int ran[SLOTS];
static atomic_int block_started;
static atomic_int block_release;

static void
reset_counters(void)
{
    for (int i = 0; i < SLOTS; i++)
        atomic_store(&ran[i], 0);
    atomic_store(&fh_frees, 0);
    atomic_store(&block_started, 0);
    atomic_store(&block_release, 0);
}

static int
run_op(const struct op *op, pk_future *self, pk_result *out, pk_error *err)
{
    atomic_fetch_add(&ran[op->index], 1);
    switch (op->action) {
    case ACT_OK:
        *out = fh_counted_result(op->index);
        return 0;
    case ACT_FAIL:
        return pk_error_set(err, PK_ETASK, 42, "op %d failed", op->index);
    case ACT_POSITIVE:
        return 5;
    case ACT_UNTIL_CANCEL:
        while (self && !pk_future_cancel_requested(self))
            fh_sleep_us(100);
        return PK_ECANCELED;
    default: /* ACT_BLOCK */
        atomic_store(&block_started, 1);
        while (!atomic_load(&block_release))
            fh_sleep_us(100);
        return 0;
    }
}

static int
fn_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    return run_op(arg, self, out, err);
}

static int
named_task(const void *data, size_t len, pk_future *self, pk_result *out,
           pk_error *err)
{
    struct op op;

    if (len != sizeof op)
        return PK_EINVAL;
    memcpy(&op, data, sizeof op);
    return run_op(&op, self, out, err);
}

enum kind { KIND_FN, KIND_NAMED };

/* A task for op: fn + arg, or "op" + the op's bytes. op must outlive the
 * submit (and, for fn tasks, the run). */
static pk_task
make_task(enum kind kind, struct op *op)
{
    pk_task t;

    memset(&t, 0, sizeof t);
    if (kind == KIND_FN) {
        t.fn = fn_task;
        t.arg = op;
    } else {
        t.name = "op";
        t.data = op;
        t.len = sizeof *op;
    }
    return t;
}

static pk_registry *
make_registry(void)
{
    pk_registry *reg = NULL;

    assert_int_equal(pk_registry_create(&reg), 0);
    assert_int_equal(pk_registry_register(reg, "op", named_task), 0);
    return reg;
}

/* ---- the manual executor ------------------------------------------------- */

#define MQ_CAP 256

struct mjob {
    pk_task task;
    pk_future *f;   /* the executor's own reference, or NULL */
    void *copy;     /* named-task bytes copied at submit */
};

struct manual {
    pthread_mutex_t lock;     /* everything below but the immutables */
    pthread_cond_t cond;
    struct mjob q[MQ_CAP];
    size_t head;
    size_t count;
    size_t cap;               /* immutable */
    int closed;
    int gate_open;            /* the worker runs jobs only when open */
    int joined;
    pthread_t worker;         /* immutable after create */
    pk_registry *reg;         /* immutable */
    pk_event_fn event;        /* immutable */
    void *event_user;
};

static void *
manual_worker(void *arg)
{
    struct manual *m = arg;
    struct mjob j;

    for (;;) {
        pthread_mutex_lock(&m->lock);
        while (!(m->count && m->gate_open) && !(m->closed && !m->count))
            pthread_cond_wait(&m->cond, &m->lock);
        if (!m->count) {
            pthread_mutex_unlock(&m->lock);
            return NULL;
        }
        j = m->q[m->head];
        m->head = (m->head + 1) % MQ_CAP;
        m->count--;
        pthread_mutex_unlock(&m->lock);
        pk_task_run(&j.task, m->reg, j.f, m->event, m->event_user);
        pk_future_release(j.f);
        free(j.copy);
    }
}

static int
manual_push(struct manual *m, struct mjob *j, pk_future **fut)
{
    int rc = 0;

    pthread_mutex_lock(&m->lock);
    if (m->closed)
        rc = PK_ESHUTDOWN;
    else if (m->count == m->cap)
        rc = PK_EFULL;
    if (rc == 0) {
        m->q[(m->head + m->count) % MQ_CAP] = *j;
        m->count++;
        if (fut)
            *fut = pk_future_ref(j->f);
        pthread_cond_signal(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int
manual_submit(void *impl, const pk_task *task, pk_future **fut)
{
    struct manual *m = impl;
    struct mjob j;
    int rc;

    memset(&j, 0, sizeof j);
    j.task = *task;
    if (task->name && task->len && !(task->flags & PK_TASK_SHARED)) {
        j.copy = malloc(task->len);
        memcpy(j.copy, task->data, task->len);
        j.task.data = j.copy;
    }
    if (fut) {
        rc = pk_future_create(&j.f, m->event, m->event_user);
        if (rc) {
            free(j.copy);
            return rc;
        }
    }
    rc = manual_push(m, &j, fut);
    if (rc) {
        pk_future_release(j.f);
        free(j.copy);
    }
    return rc;
}

static int
manual_capacity(void *impl, size_t *out)
{
    struct manual *m = impl;
    int rc = 0;

    pthread_mutex_lock(&m->lock);
    if (m->closed)
        rc = PK_ESHUTDOWN;
    else
        *out = m->cap - m->count;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* Test-grade: ignores the timeout and joins the worker. */
static int
manual_shutdown(void *impl, int how, int timeout_ms)
{
    struct manual *m = impl;
    int join;

    (void)timeout_ms;
    pthread_mutex_lock(&m->lock);
    m->closed = 1;
    m->gate_open = 1;
    if (how != PK_SHUTDOWN_DRAIN)
        for (size_t i = 0; i < m->count; i++)
            pk_future_cancel(m->q[(m->head + i) % MQ_CAP].f);
    join = !m->joined;
    m->joined = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (join)
        pthread_join(m->worker, NULL);
    return 0;
}

static void
manual_destroy(void *impl)
{
    struct manual *m = impl;

    manual_shutdown(m, PK_SHUTDOWN_CANCEL, PK_WAIT_FOREVER);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static void
manual_open(struct manual *m)
{
    pthread_mutex_lock(&m->lock);
    m->gate_open = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

/* No submit_many: the wrapper's fallback is under test. */
static const pk_executor_ops manual_ops = {
    .submit = manual_submit,
    .capacity = manual_capacity,
    .shutdown = manual_shutdown,
    .destroy = manual_destroy,
};

static struct manual *
manual_create(pk_executor **ex, size_t cap, pk_registry *reg,
              fh_recorder *rec)
{
    struct manual *m = calloc(1, sizeof *m);

    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->cap = cap;
    m->reg = reg;
    m->event = rec ? fh_record_event : NULL;
    m->event_user = rec;
    pthread_create(&m->worker, NULL, manual_worker, m);
    assert_int_equal(pk_executor_create(ex, &manual_ops, m), 0);
    return m;
}

/* ---- registry ------------------------------------------------------------ */

static void
test_registry_rejects_bad_arguments(void **state)
{
    char longname[129];
    pk_registry *reg = make_registry();
    pk_named_fn fn = NULL;

    (void)state;
    assert_int_equal(pk_registry_create(NULL), PK_EINVAL);
    assert_int_equal(pk_registry_register(NULL, "a", named_task), PK_EINVAL);
    assert_int_equal(pk_registry_register(reg, NULL, named_task), PK_EINVAL);
    assert_int_equal(pk_registry_register(reg, "a", NULL), PK_EINVAL);
    assert_int_equal(pk_registry_register(reg, "", named_task), PK_EINVAL);
    memset(longname, 'x', 128);
    longname[128] = '\0';
    assert_int_equal(pk_registry_register(reg, longname, named_task),
                     PK_EINVAL);
    longname[127] = '\0';
    assert_int_equal(pk_registry_register(reg, longname, named_task), 0);
    assert_int_equal(pk_registry_register(reg, "op", named_task), PK_EINVAL);
    assert_int_equal(pk_registry_lookup(NULL, "op", &fn), PK_EINVAL);
    assert_int_equal(pk_registry_lookup(reg, NULL, &fn), PK_EINVAL);
    assert_int_equal(pk_registry_lookup(reg, "op", NULL), PK_EINVAL);
    assert_int_equal(pk_registry_lookup(reg, "nope", &fn), PK_EINVAL);
    assert_int_equal(pk_registry_lookup(reg, longname, &fn), 0);
    assert_ptr_equal(fn, named_task);
    pk_registry_destroy(reg);
    pk_registry_destroy(NULL);
}

static void
test_registry_copies_names(void **state)
{
    char name[8] = "temp";
    pk_registry *reg = make_registry();
    pk_named_fn fn = NULL;

    (void)state;
    assert_int_equal(pk_registry_register(reg, name, named_task), 0);
    strcpy(name, "gone");
    assert_int_equal(pk_registry_lookup(reg, "temp", &fn), 0);
    assert_int_equal(pk_registry_lookup(reg, "gone", &fn), PK_EINVAL);
    pk_registry_destroy(reg);
}

struct reg_thread {
    pk_registry *reg;
    int id;
    int failures;
};

/* Even ids register 50 names each; odd ids look "op" up 5000 times. */
static void *
registry_worker(void *arg)
{
    struct reg_thread *t = arg;
    pk_named_fn fn;
    char name[32];

    for (int i = 0; i < (t->id % 2 ? 5000 : 50); i++) {
        if (t->id % 2 == 0) {
            snprintf(name, sizeof name, "t%d-%d", t->id, i);
            t->failures +=
                pk_registry_register(t->reg, name, named_task) != 0;
        } else {
            t->failures += pk_registry_lookup(t->reg, "op", &fn) != 0 ||
                           fn != named_task;
        }
    }
    return NULL;
}

static void
test_registry_is_safe_across_threads(void **state)
{
    enum { N = 6 };
    struct reg_thread t[N];
    pthread_t th[N];
    pk_registry *reg = make_registry();
    pk_named_fn fn;

    (void)state;
    for (int i = 0; i < N; i++) {
        t[i].reg = reg;
        t[i].id = i;
        t[i].failures = 0;
        pthread_create(&th[i], NULL, registry_worker, &t[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++)
        assert_int_equal(t[i].failures, 0);
    assert_int_equal(pk_registry_lookup(reg, "t4-49", &fn), 0);
    pk_registry_destroy(reg);
}

/* Fails the k-th allocation for k = 1.. until op needs fewer than k. */
static void
fail_each_allocation(int (*op)(void *), void (*undo)(void *), void *ctx)
{
    for (unsigned long k = 1;; k++) {
        long live = pk__alloc_live();
        unsigned long made;
        int rc;

        pk__alloc_fail_at(k);
        rc = op(ctx);
        made = pk__alloc_fail_at(0);
        if (made < k) {
            assert_int_equal(rc, 0);
            undo(ctx);
            return;
        }
        assert_int_equal(rc, PK_ENOMEM);
        assert_int_equal(pk__alloc_live(), live);
    }
}

static int
op_registry_create(void *ctx)
{
    return pk_registry_create(ctx);
}

static void
undo_registry_create(void *ctx)
{
    pk_registry_destroy(*(pk_registry **)ctx);
}

static int
op_register(void *ctx)
{
    return pk_registry_register(ctx, "fresh", named_task);
}

static void
undo_nothing(void *ctx)
{
    (void)ctx;
}

static int
op_inline_create(void *ctx)
{
    return pk_inline_executor_create(ctx, NULL, NULL, NULL);
}

static void
undo_inline_create(void *ctx)
{
    pk_executor_destroy(*(pk_executor **)ctx);
}

static void
test_creates_fail_cleanly_without_memory(void **state)
{
    pk_registry *reg = NULL;
    pk_executor *ex = NULL;

    (void)state;
    fail_each_allocation(op_registry_create, undo_registry_create, &reg);
    reg = make_registry();
    fail_each_allocation(op_register, undo_nothing, reg);
    pk_registry_destroy(reg);
    fail_each_allocation(op_inline_create, undo_inline_create, &ex);
}

/* ---- the wrapper and the inline executor --------------------------------- */

static void
test_executor_rejects_bad_arguments(void **state)
{
    pk_executor_ops ops = manual_ops;
    pk_executor *ex = NULL;
    struct op op = { ACT_OK, 0 };
    pk_task t = make_task(KIND_FN, &op);
    pk_task bad;
    size_t cap;

    (void)state;
    reset_counters();
    ops.capacity = NULL;
    assert_int_equal(pk_executor_create(&ex, &ops, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_create(&ex, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_create(NULL, &manual_ops, NULL), PK_EINVAL);
    assert_int_equal(pk_inline_executor_create(NULL, NULL, NULL, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_inline_executor_create(&ex, NULL, NULL, NULL), 0);
    assert_int_equal(pk_executor_submit(NULL, &t, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_submit(ex, NULL, NULL), PK_EINVAL);
    bad = t;
    bad.name = "op"; /* both */
    assert_int_equal(pk_executor_submit(ex, &bad, NULL), PK_EINVAL);
    bad.fn = NULL;
    bad.name = NULL; /* neither */
    assert_int_equal(pk_executor_submit(ex, &bad, NULL), PK_EINVAL);
    bad.name = "";
    assert_int_equal(pk_executor_submit(ex, &bad, NULL), PK_EINVAL);
    bad.name = "op";
    bad.len = 4; /* no data */
    assert_int_equal(pk_executor_submit(ex, &bad, NULL), PK_EINVAL);
    t.flags = 0x80;
    assert_int_equal(pk_executor_submit(ex, &t, NULL), PK_EINVAL);
    t.flags = 0;
    assert_int_equal(pk_executor_submit_many(ex, NULL, 1, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_submit_many(ex, &t, 0, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_submit_many(NULL, &t, 1, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_capacity(ex, NULL), PK_EINVAL);
    assert_int_equal(pk_executor_capacity(NULL, &cap), PK_EINVAL);
    assert_int_equal(pk_executor_shutdown(NULL, 0, 0), PK_EINVAL);
    assert_int_equal(pk_executor_shutdown(ex, 3, 0), PK_EINVAL);
    assert_int_equal(pk_executor_shutdown(ex, -1, 0), PK_EINVAL);
    assert_int_equal(pk_executor_shutdown(ex, 0, -2), PK_EINVAL);
    assert_int_equal(atomic_load(&ran[0]), 0); /* nothing ran */
    pk_executor_destroy(ex);
    pk_executor_destroy(NULL);
}

static void
check_inline_runs_task(enum kind kind)
{
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct op op = { ACT_OK, 3 };
    pk_task t = make_task(kind, &op);
    pk_future *f = NULL;
    pk_result res;

    reset_counters();
    assert_int_equal(pk_inline_executor_create(&ex, reg, NULL, NULL), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(atomic_load(&ran[3]), 1); /* before submit returned */
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_DONE);
    assert_int_equal(pk_future_result(f, &res), 0);
    assert_int_equal(*(int *)res.value, 3);
    pk_future_release(f);
    assert_int_equal(atomic_load(&fh_frees), 1);
    assert_int_equal(pk_executor_submit(ex, &t, NULL), 0); /* no future */
    assert_int_equal(atomic_load(&ran[3]), 2);
    assert_int_equal(atomic_load(&fh_frees), 2); /* nobody to read it */
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_inline_runs_fn_and_named_tasks(void **state)
{
    (void)state;
    check_inline_runs_task(KIND_FN);
    check_inline_runs_task(KIND_NAMED);
}

static void
check_inline_failure_detail(enum kind kind)
{
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct op op = { ACT_FAIL, 1 };
    pk_task t = make_task(kind, &op);
    pk_future *f;
    pk_error err;

    assert_int_equal(pk_inline_executor_create(&ex, reg, NULL, NULL), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(pk_future_result(f, NULL), PK_ETASK);
    assert_int_equal(pk_future_error(f, &err), 0);
    assert_int_equal(err.code, PK_ETASK);
    assert_int_equal(err.sys, 42);
    assert_string_equal(err.msg, "op 1 failed");
    pk_future_release(f);
    op.action = ACT_POSITIVE;
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(pk_future_result(f, NULL), PK_ETASK);
    pk_future_release(f);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_task_failure_reaches_future_with_detail(void **state)
{
    (void)state;
    check_inline_failure_detail(KIND_FN);
    check_inline_failure_detail(KIND_NAMED);
}

static void
test_unknown_name_fails_future_with_einval(void **state)
{
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct op op = { ACT_OK, 0 };
    pk_task t = make_task(KIND_NAMED, &op);
    pk_future *f;
    pk_error err;

    (void)state;
    reset_counters();
    t.name = "missing";
    assert_int_equal(pk_inline_executor_create(&ex, reg, NULL, NULL), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(pk_future_error(f, &err), 0);
    assert_int_equal(err.code, PK_EINVAL);
    assert_non_null(strstr(err.msg, "missing"));
    assert_int_equal(atomic_load(&ran[0]), 0);
    pk_future_release(f);
    pk_executor_destroy(ex);
    /* without a registry, no name is known */
    assert_int_equal(pk_task_run(&t, NULL, NULL, NULL, NULL), PK_EINVAL);
    pk_registry_destroy(reg);
}

static void
test_fire_and_forget_failure_reaches_event_hook(void **state)
{
    fh_recorder rec = { 0 };
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct op op = { ACT_FAIL, 2 };
    pk_task t = make_task(KIND_NAMED, &op);

    (void)state;
    assert_int_equal(pk_inline_executor_create(&ex, reg, fh_record_event,
                                               &rec), 0);
    assert_int_equal(pk_executor_submit(ex, &t, NULL), 0);
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(rec.kind, PK_EVENT_FUTURE_UNREAD);
    assert_int_equal(rec.code, PK_ETASK);
    assert_int_equal(rec.sys, 42);
    assert_string_equal(rec.msg, "op 2 failed");
    t.name = "missing";
    assert_int_equal(pk_executor_submit(ex, &t, NULL), 0);
    assert_int_equal(atomic_load(&rec.calls), 2);
    assert_int_equal(rec.code, PK_EINVAL);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_unread_failed_future_reaches_event_hook(void **state)
{
    fh_recorder rec = { 0 };
    pk_executor *ex;
    struct op op = { ACT_FAIL, 0 };
    pk_task t = make_task(KIND_FN, &op);
    pk_future *f;

    (void)state;
    assert_int_equal(pk_inline_executor_create(&ex, NULL, fh_record_event,
                                               &rec), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(atomic_load(&rec.calls), 0);
    pk_future_release(f);
    assert_int_equal(atomic_load(&rec.calls), 1);
    assert_int_equal(rec.code, PK_ETASK);
    pk_executor_destroy(ex);
}

static void
test_shutdown_makes_later_submits_fail(void **state)
{
    pk_executor *ex;
    struct op op = { ACT_OK, 0 };
    pk_task t = make_task(KIND_FN, &op);
    pk_future *f = NULL;
    size_t cap = 0;

    (void)state;
    reset_counters();
    assert_int_equal(pk_inline_executor_create(&ex, NULL, NULL, NULL), 0);
    assert_int_equal(pk_executor_capacity(ex, &cap), 0);
    assert_true(cap >= SIZE_MAX / 2);
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 0), 0);
    assert_int_equal(pk_executor_submit(ex, &t, &f), PK_ESHUTDOWN);
    assert_null(f);
    assert_int_equal(pk_executor_submit_many(ex, &t, 1, NULL), PK_ESHUTDOWN);
    assert_int_equal(pk_executor_capacity(ex, &cap), PK_ESHUTDOWN);
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_CANCEL, 0), 0);
    assert_int_equal(atomic_load(&ran[0]), 0);
    pk_executor_destroy(ex);
}

static void *
submit_blocking(void *arg)
{
    struct op op = { ACT_BLOCK, 0 };
    pk_task t = make_task(KIND_FN, &op);

    pk_executor_submit(arg, &t, NULL);
    return NULL;
}

static void
test_inline_shutdown_waits_for_running_submits(void **state)
{
    pk_executor *ex;
    pthread_t th;
    uint64_t t0;

    (void)state;
    reset_counters();
    assert_int_equal(pk_inline_executor_create(&ex, NULL, NULL, NULL), 0);
    pthread_create(&th, NULL, submit_blocking, ex);
    while (!atomic_load(&block_started))
        fh_sleep_us(100);
    t0 = fh_now_ms();
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 30),
                     PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 30);
    atomic_store(&block_release, 1);
    assert_int_equal(
        pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER), 0);
    pthread_join(th, NULL);
    pk_executor_destroy(ex);
}

struct many_ctx {
    pk_executor *ex;
    pk_task tasks[4];
    pk_future *futs[4];
};

static int
op_submit_many(void *ctx)
{
    struct many_ctx *c = ctx;

    return pk_executor_submit_many(c->ex, c->tasks, 4, c->futs);
}

static void
undo_submit_many(void *ctx)
{
    struct many_ctx *c = ctx;

    for (int i = 0; i < 4; i++)
        pk_future_release(c->futs[i]);
}

static void
test_inline_submit_many_is_all_or_nothing(void **state)
{
    struct op ops[4] = { { ACT_OK, 0 }, { ACT_OK, 1 }, { ACT_OK, 2 },
                         { ACT_OK, 3 } };
    pk_registry *reg = make_registry();
    struct many_ctx c;

    (void)state;
    reset_counters();
    assert_int_equal(pk_inline_executor_create(&c.ex, reg, NULL, NULL), 0);
    for (int i = 0; i < 4; i++)
        c.tasks[i] = make_task(i % 2 ? KIND_NAMED : KIND_FN, &ops[i]);
    /* Each failing allocation must leave every task unrun. */
    for (unsigned long k = 1; k <= 4; k++) {
        pk__alloc_fail_at(k);
        assert_int_equal(op_submit_many(&c), PK_ENOMEM);
        pk__alloc_fail_at(0);
        for (int i = 0; i < 4; i++)
            assert_int_equal(atomic_load(&ran[i]), 0);
    }
    fail_each_allocation(op_submit_many, undo_submit_many, &c);
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&ran[i]), 1);
    c.tasks[2].fn = NULL; /* invalid: neither fn nor name */
    assert_int_equal(op_submit_many(&c), PK_EINVAL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&ran[i]), 1);
    pk_executor_destroy(c.ex);
    pk_registry_destroy(reg);
}

/* ---- the manual executor: another thread finishes the futures ----------- */

static void
test_fallback_submit_many_takes_back_what_it_queued(void **state)
{
    struct op ops[3] = { { ACT_OK, 0 }, { ACT_OK, 1 }, { ACT_OK, 2 } };
    pk_task tasks[3];
    pk_future *futs[3] = { NULL, NULL, NULL };
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;

    (void)state;
    reset_counters();
    m = manual_create(&ex, 2, reg, NULL); /* room for two */
    for (int i = 0; i < 3; i++)
        tasks[i] = make_task(i == 1 ? KIND_NAMED : KIND_FN, &ops[i]);
    assert_int_equal(pk_executor_submit_many(ex, tasks, 3, futs), PK_EFULL);
    for (int i = 0; i < 3; i++)
        assert_null(futs[i]);
    assert_int_equal(pk_executor_submit_many(ex, tasks, 3, NULL), PK_EFULL);
    manual_open(m);
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 1000), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&ran[i]), 0);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_fallback_submit_many_runs_all_on_success(void **state)
{
    struct op ops[3] = { { ACT_OK, 0 }, { ACT_OK, 1 }, { ACT_OK, 2 } };
    pk_task tasks[3];
    pk_future *futs[3];
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;
    size_t idx;

    (void)state;
    reset_counters();
    m = manual_create(&ex, 8, reg, NULL);
    manual_open(m);
    for (int i = 0; i < 3; i++)
        tasks[i] = make_task(i == 1 ? KIND_NAMED : KIND_FN, &ops[i]);
    assert_int_equal(pk_executor_submit_many(ex, tasks, 3, futs), 0);
    assert_int_equal(pk_future_wait_all(futs, 3, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_wait_any(futs, 3, 0, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(pk_executor_submit_many(ex, tasks, 3, NULL), 0);
    assert_int_equal(pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, 1000), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&ran[i]), 2);
        pk_future_release(futs[i]);
    }
    assert_int_equal(atomic_load(&fh_frees), 6);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
check_manual_waits(enum kind kind)
{
    struct op ops[3] = { { ACT_OK, 0 }, { ACT_FAIL, 1 }, { ACT_OK, 2 } };
    pk_registry *reg = make_registry();
    pk_future *fs[3];
    pk_executor *ex;
    struct manual *m;
    size_t idx = 99;
    uint64_t t0;

    reset_counters();
    m = manual_create(&ex, 8, reg, NULL);
    for (int i = 0; i < 3; i++) {
        pk_task t = make_task(kind, &ops[i]);
        assert_int_equal(pk_executor_submit(ex, &t, &fs[i]), 0);
    }
    t0 = fh_now_ms();
    assert_int_equal(pk_future_wait(fs[0], 20), PK_ETIMEDOUT);
    assert_true(fh_now_ms() - t0 >= 20);
    assert_int_equal(pk_future_wait_any(fs, 3, 10, &idx), PK_ETIMEDOUT);
    assert_int_equal(pk_future_wait_all(fs, 3, 10), PK_ETIMEDOUT);
    manual_open(m); /* the worker runs them now, in order */
    assert_int_equal(pk_future_wait_any(fs, 3, PK_WAIT_FOREVER, &idx), 0);
    assert_true(idx < 3);
    assert_int_equal(pk_future_wait_all(fs, 3, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_result(fs[0], NULL), 0);
    assert_int_equal(pk_future_result(fs[1], NULL), PK_ETASK);
    assert_int_equal(pk_future_wait(fs[2], 0), 0);
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    for (int i = 0; i < 3; i++)
        pk_future_release(fs[i]);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_manual_waits_see_completion_from_the_worker(void **state)
{
    (void)state;
    check_manual_waits(KIND_FN);
    check_manual_waits(KIND_NAMED);
}

struct cb_seen {
    atomic_int calls;
    pthread_t thread;
    pk_future_state state;
};

static void
seen_callback(void *arg, pk_future *f)
{
    struct cb_seen *s = arg;

    s->thread = pthread_self();
    s->state = pk_future_state_get(f);
    atomic_fetch_add(&s->calls, 1);
}

static void
check_manual_callbacks(enum kind kind)
{
    struct op op = { ACT_OK, 0 };
    pk_task t = make_task(kind, &op);
    pk_registry *reg = make_registry();
    struct cb_seen seen = { 0 };
    struct cb_seen late = { 0 };
    pk_executor *ex;
    struct manual *m;
    pk_future *f;

    m = manual_create(&ex, 8, reg, NULL);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    assert_int_equal(pk_future_on_complete(f, seen_callback, &seen), 0);
    manual_open(m);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    assert_int_equal(atomic_load(&seen.calls), 1);
    assert_true(pthread_equal(seen.thread, m->worker));
    assert_int_equal(seen.state, PK_FUTURE_DONE);
    assert_int_equal(pk_future_on_complete(f, seen_callback, &late), 0);
    assert_int_equal(atomic_load(&late.calls), 1);
    assert_true(pthread_equal(late.thread, pthread_self()));
    pk_future_release(f);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_manual_callbacks_run_on_the_worker(void **state)
{
    (void)state;
    check_manual_callbacks(KIND_FN);
    check_manual_callbacks(KIND_NAMED);
}

/* Cancels each task right after submitting it while the worker races to
 * start it: a cancel that won (0) means the task never ran; one that lost
 * (PK_EAGAIN) means it ran exactly once. */
static void
check_cancel_race(enum kind kind)
{
    static struct op ops[SLOTS];
    static pk_future *fs[SLOTS];
    static int rc[SLOTS];
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;
    int bad = 0;

    reset_counters();
    m = manual_create(&ex, MQ_CAP, reg, NULL);
    manual_open(m);
    for (int i = 0; i < MQ_CAP; i++) {
        pk_task t;

        ops[i].action = ACT_OK;
        ops[i].index = i;
        t = make_task(kind, &ops[i]);
        assert_int_equal(pk_executor_submit(ex, &t, &fs[i]), 0);
        if (i % 4 == 1)
            fh_sleep_us(50); /* let the worker catch up sometimes */
        rc[i] = pk_future_cancel(fs[i]);
    }
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    for (int i = 0; i < MQ_CAP; i++) {
        int n = atomic_load(&ran[i]);
        pk_future_state s = pk_future_state_get(fs[i]);

        bad += rc[i] == 0 ? n != 0 || s != PK_FUTURE_CANCELLED
                          : rc[i] != PK_EAGAIN || n != 1 ||
                                s != PK_FUTURE_DONE;
        pk_future_release(fs[i]);
    }
    assert_int_equal(bad, 0);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_manual_cancel_races_the_worker_with_one_outcome(void **state)
{
    (void)state;
    check_cancel_race(KIND_FN);
    check_cancel_race(KIND_NAMED);
}

static void
check_cooperative_cancel(enum kind kind)
{
    fh_recorder rec = { 0 };
    struct op op = { ACT_UNTIL_CANCEL, 0 };
    pk_task t = make_task(kind, &op);
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;
    pk_future *f;

    reset_counters();
    m = manual_create(&ex, 8, reg, &rec);
    manual_open(m);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    while (!atomic_load(&ran[0]))
        fh_sleep_us(100); /* until it runs */
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    pk_future_release(f);
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    assert_int_equal(atomic_load(&rec.calls), 0);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_manual_running_task_stops_when_cancelled(void **state)
{
    (void)state;
    check_cooperative_cancel(KIND_FN);
    check_cooperative_cancel(KIND_NAMED);
}

static void
check_manual_unread(enum kind kind, int read_it)
{
    fh_recorder rec = { 0 };
    struct op op = { ACT_FAIL, 5 };
    pk_task t = make_task(kind, &op);
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;
    pk_future *f;

    m = manual_create(&ex, 8, reg, &rec);
    assert_int_equal(pk_executor_submit(ex, &t, &f), 0);
    manual_open(m);
    assert_int_equal(pk_future_wait(f, PK_WAIT_FOREVER), 0);
    if (read_it)
        assert_int_equal(pk_future_result(f, NULL), PK_ETASK);
    /* The worker may still hold its reference: the report comes from
     * whichever thread drops the last one. */
    pk_future_release(f);
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    assert_int_equal(atomic_load(&rec.calls), read_it ? 0 : 1);
    if (!read_it) {
        assert_int_equal(rec.kind, PK_EVENT_FUTURE_UNREAD);
        assert_int_equal(rec.code, PK_ETASK);
        assert_string_equal(rec.msg, "op 5 failed");
    }
    assert_int_equal(pk_executor_submit(ex, &t, NULL), PK_ESHUTDOWN);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

static void
test_manual_unread_failure_reported_once(void **state)
{
    (void)state;
    check_manual_unread(KIND_FN, 0);
    check_manual_unread(KIND_NAMED, 0);
    check_manual_unread(KIND_FN, 1);
    check_manual_unread(KIND_NAMED, 1);
}

static void
test_manual_fire_and_forget_failure_reaches_event(void **state)
{
    fh_recorder rec = { 0 };
    struct op ops[2] = { { ACT_FAIL, 0 }, { ACT_FAIL, 1 } };
    pk_registry *reg = make_registry();
    pk_executor *ex;
    struct manual *m;

    (void)state;
    m = manual_create(&ex, 8, reg, &rec);
    for (int i = 0; i < 2; i++) {
        pk_task t = make_task(i ? KIND_NAMED : KIND_FN, &ops[i]);
        assert_int_equal(pk_executor_submit(ex, &t, NULL), 0);
    }
    manual_open(m);
    pk_executor_shutdown(ex, PK_SHUTDOWN_DRAIN, PK_WAIT_FOREVER);
    assert_int_equal(atomic_load(&rec.calls), 2);
    assert_int_equal(rec.code, PK_ETASK);
    pk_executor_destroy(ex);
    pk_registry_destroy(reg);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fh_setup, fh_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_registry_rejects_bad_arguments),
        T(test_registry_copies_names),
        T(test_registry_is_safe_across_threads),
        T(test_creates_fail_cleanly_without_memory),
        T(test_executor_rejects_bad_arguments),
        T(test_inline_runs_fn_and_named_tasks),
        T(test_task_failure_reaches_future_with_detail),
        T(test_unknown_name_fails_future_with_einval),
        T(test_fire_and_forget_failure_reaches_event_hook),
        T(test_unread_failed_future_reaches_event_hook),
        T(test_shutdown_makes_later_submits_fail),
        T(test_inline_shutdown_waits_for_running_submits),
        T(test_inline_submit_many_is_all_or_nothing),
        T(test_fallback_submit_many_takes_back_what_it_queued),
        T(test_fallback_submit_many_runs_all_on_success),
        T(test_manual_waits_see_completion_from_the_worker),
        T(test_manual_callbacks_run_on_the_worker),
        T(test_manual_cancel_races_the_worker_with_one_outcome),
        T(test_manual_running_task_stops_when_cancelled),
        T(test_manual_unread_failure_reported_once),
        T(test_manual_fire_and_forget_failure_reaches_event),
    };

    return cmocka_run_group_tests_name("executor", tests, NULL, NULL);
}
