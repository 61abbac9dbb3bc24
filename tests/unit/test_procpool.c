/* tests/unit/test_procpool.c - pk_procpool: named tasks on worker
 * processes, results back in order, task errors, workers that crash,
 * exit, hang past their time limit or die idle (each replaced, the pool
 * going on), recycling after max_tasks_per_worker, worker_init, big
 * payloads, max_result, the three shutdowns and a shutdown that times
 * out, a full queue, the executor with pk_map, fork, bad input, and many
 * threads submitting random tasks with every outcome checked. */
#define _GNU_SOURCE /* kill, getpid */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poolkit/executor.h>
#include <poolkit/pool.h>
#include <poolkit/procpool.h>

#include "test_util.h"

/* ---- the tasks ------------------------------------------------------------ */

static int
ret_u64(uint64_t v, pk_result *out)
{
    uint64_t *p = malloc(sizeof *p);

    if (!p)
        return PK_ENOMEM;
    *p = v;
    out->value = p;
    out->len = sizeof *p;
    out->free_fn = free;
    return 0;
}

static uint64_t
arg_u64(const void *data, size_t len)
{
    uint64_t v = 0;

    if (len == sizeof v)
        memcpy(&v, data, sizeof v);
    return v;
}

static int
t_square(const void *data, size_t len, pk_future *self, pk_result *out,
         pk_error *err)
{
    uint64_t v = arg_u64(data, len);

    (void)self;
    (void)err;
    return ret_u64(v * v, out);
}

/* A square, but item 40 crashes its worker. */
static int
t_square_or_crash(const void *data, size_t len, pk_future *self,
                  pk_result *out, pk_error *err)
{
    if (arg_u64(data, len) == 40)
        kill(getpid(), SIGKILL);
    return t_square(data, len, self, out, err);
}

static int
t_fail(const void *data, size_t len, pk_future *self, pk_result *out,
       pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)out;
    return pk_error_set(err, PK_ECHECK, 42, "no good: %d", 7);
}

static int
t_crash(const void *data, size_t len, pk_future *self, pk_result *out,
        pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)out;
    (void)err;
    kill(getpid(), SIGKILL);
    return 0;
}

static int
t_exit3(const void *data, size_t len, pk_future *self, pk_result *out,
        pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)out;
    (void)err;
    _exit(3);
}

static int
t_sleep(const void *data, size_t len, pk_future *self, pk_result *out,
        pk_error *err)
{
    (void)self;
    (void)err;
    sleep_ms((long)arg_u64(data, len));
    return ret_u64(1, out);
}

static int
t_pid(const void *data, size_t len, pk_future *self, pk_result *out,
      pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)err;
    return ret_u64((uint64_t)getpid(), out);
}

static int
t_echo(const void *data, size_t len, pk_future *self, pk_result *out,
       pk_error *err)
{
    void *p = malloc(len ? len : 1);

    (void)self;
    (void)err;
    if (!p)
        return PK_ENOMEM;
    memcpy(p, data, len);
    out->value = p;
    out->len = len;
    out->free_fn = free;
    return 0;
}

static int
t_big(const void *data, size_t len, pk_future *self, pk_result *out,
      pk_error *err)
{
    size_t n = (size_t)arg_u64(data, len);
    void *p = calloc(1, n ? n : 1);

    (void)self;
    (void)err;
    if (!p)
        return PK_ENOMEM;
    out->value = p;
    out->len = n;
    out->free_fn = free;
    return 0;
}

/* In the shared region: the task sums bytes[0..n) into out, in place. */
struct shared_job {
    uint64_t n, out;
    unsigned char bytes[];
};

static int
t_shared_sum(const void *data, size_t len, pk_future *self, pk_result *out,
             pk_error *err)
{
    struct shared_job *j = (struct shared_job *)data; /* the region's */
    uint64_t sum = 0;

    (void)self;
    if (len < sizeof *j || j->n > len - sizeof *j)
        return pk_error_set(err, PK_EINVAL, 0, "bad shared job");
    for (uint64_t i = 0; i < j->n; i++)
        sum += j->bytes[i];
    j->out = sum;
    return ret_u64(sum, out);
}

/* Touches MiB megabytes and keeps them (a leak, on purpose), or with
 * MiB's top bit set gives them back (no leak). */
static volatile char *g_leaked[64];

static int
t_hog(const void *data, size_t len, pk_future *self, pk_result *out,
      pk_error *err)
{
    uint64_t a = arg_u64(data, len);
    size_t n = (size_t)(a & 0xffff) << 20;
    volatile char *p = malloc(n);

    (void)self;
    (void)err;
    if (!p)
        return PK_ENOMEM;
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1; /* volatile: the compiler keeps every page's store */
    if (a >> 63) {
        free((void *)p);
    } else {
        for (int i = 0; i < 64; i++)
            if (!g_leaked[i]) {
                g_leaked[i] = p;
                break;
            }
    }
    return ret_u64((uint64_t)getpid(), out);
}

/* Forks a child that holds the worker's socket for 3 s, then dies: only
 * the worker's pidfd can say so at once. */
static int
t_die_leaving_child(const void *data, size_t len, pk_future *self,
                    pk_result *out, pk_error *err)
{
    pid_t pid = fork();

    (void)data;
    (void)len;
    (void)self;
    (void)out;
    (void)err;
    if (pid == 0) {
        sleep_ms(3000);
        _exit(0);
    }
    kill(getpid(), SIGKILL);
    return 0;
}

/* The pid main() ran in: a spawned worker ran it itself, a fork has its
 * parent's. */
static pid_t g_main_pid;

/* 1 if main() ran in this process. */
static int
t_ran_main(const void *data, size_t len, pk_future *self, pk_result *out,
           pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)err;
    return ret_u64(g_main_pid == getpid(), out);
}

/* Runs until the test sets the 32-bit flag its bytes point at, in the
 * pool's shared region: a task that is surely still running. */
static int
t_block(const void *data, size_t len, pk_future *self, pk_result *out,
        pk_error *err)
{
    const uint32_t *flag = data;

    (void)len;
    (void)self;
    (void)err;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE))
        sleep_ms(1);
    return ret_u64(1, out);
}

/* Set by worker_init in each worker. */
static uint64_t g_inited;

static void
init_worker(void *user)
{
    g_inited = (uint64_t)(uintptr_t)user;
}

static void
slow_init(void *user)
{
    (void)user;
    sleep_ms(1500);
}

static int
t_inited(const void *data, size_t len, pk_future *self, pk_result *out,
         pk_error *err)
{
    (void)data;
    (void)len;
    (void)self;
    (void)err;
    return ret_u64(g_inited, out);
}

/* ---- fixture -------------------------------------------------------------- */

static pk_registry *g_reg;
static _Atomic int g_died_events;

static void
on_event(void *user, const pk_event *ev)
{
    (void)user;
    if (ev->kind == PK_EVENT_WORKER_DIED)
        g_died_events++;
}

static void
register_all(pk_registry *reg)
{
    pk_registry_register(reg, "square", t_square);
    pk_registry_register(reg, "fail", t_fail);
    pk_registry_register(reg, "square_or_crash", t_square_or_crash);
    pk_registry_register(reg, "crash", t_crash);
    pk_registry_register(reg, "exit3", t_exit3);
    pk_registry_register(reg, "sleep", t_sleep);
    pk_registry_register(reg, "pid", t_pid);
    pk_registry_register(reg, "echo", t_echo);
    pk_registry_register(reg, "big", t_big);
    pk_registry_register(reg, "inited", t_inited);
    pk_registry_register(reg, "shared_sum", t_shared_sum);
    pk_registry_register(reg, "hog", t_hog);
    pk_registry_register(reg, "die_leaving_child", t_die_leaving_child);
    pk_registry_register(reg, "ran_main", t_ran_main);
    pk_registry_register(reg, "block", t_block);
}

static int
setup(void **state)
{
    (void)state;
    g_died_events = 0;
    if (pk_registry_create(&g_reg) != 0)
        return -1;
    register_all(g_reg);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    pk_registry_destroy(g_reg);
    g_reg = NULL;
    return 0;
}

static pk_procpool *
make(pk_procpool_options o)
{
    pk_procpool *pp = NULL;

    o.registry = g_reg;
    if (!o.event)
        o.event = on_event;
    assert_int_equal(pk_procpool_create(&pp, &o), 0);
    return pp;
}

static pk_future *
submit_u64(pk_procpool *pp, const char *name, uint64_t v)
{
    pk_future *f = NULL;

    assert_int_equal(pk_procpool_submit(pp, name, &v, sizeof v, &f), 0);
    assert_non_null(f);
    return f;
}

/* The u64 result of f (which must succeed within 10 s); releases f. */
static uint64_t
get_u64(pk_future *f)
{
    pk_result r;
    pk_error e;
    uint64_t v;
    int rc = pk_future_get(f, 10000, &r, &e);

    if (rc != 0)
        fail_msg("task failed: %s (%s)", pk_err_name(rc), e.msg);
    assert_int_equal(r.len, sizeof v);
    memcpy(&v, r.value, sizeof v);
    pk_future_release(f);
    return v;
}

/* The code f fails with (within 10 s), its error in *e; releases f. */
static int
get_error(pk_future *f, pk_error *e)
{
    int rc = pk_future_get(f, 10000, NULL, e);

    pk_future_release(f);
    return rc;
}

static pk_procpool_stats
stats(pk_procpool *pp)
{
    pk_procpool_stats st;

    assert_int_equal(pk_procpool_stats_get(pp, &st), 0);
    return st;
}

/* A "block" task on pp (made with a shared region), its flag cleared:
 * it runs until unblock(pp). */
static pk_future *
submit_block(pk_procpool *pp)
{
    pk_future *f = NULL;
    void *base;
    size_t size;

    assert_int_equal(pk_procpool_shared(pp, &base, &size), 0);
    assert_non_null(base);
    __atomic_store_n((uint32_t *)base, 0, __ATOMIC_RELEASE);
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "block",
                                                .data = base,
                                                .len = sizeof(uint32_t),
                                                .flags = PK_TASK_SHARED },
                                &f),
        0);
    return f;
}

static void
unblock(pk_procpool *pp)
{
    void *base;
    size_t size;

    assert_int_equal(pk_procpool_shared(pp, &base, &size), 0);
    __atomic_store_n((uint32_t *)base, 1, __ATOMIC_RELEASE);
}

/* Waits (up to 10 s) until n tasks are on workers. */
static void
wait_busy(pk_procpool *pp, size_t n)
{
    for (int i = 0; i < 10000 && stats(pp).busy < n; i++)
        sleep_ms(1);
    assert_true(stats(pp).busy >= n);
}

/* Waits (up to 10 s) until pid has ended (a zombie: the pool reaps it). */
static void
wait_zombie(pid_t pid)
{
    char path[64], buf[256];

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 10000; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        char *end;

        if (f)
            fclose(f);
        buf[n] = '\0';
        end = strrchr(buf, ')');
        if (!f || (end && end[1] == ' ' && end[2] == 'Z'))
            return;
        sleep_ms(1);
    }
    fail_msg("worker %d did not end", (int)pid);
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_tasks_run_on_workers_and_results_come_back(void **state)
{
    enum { N = 200 };
    pk_future *f[N];
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 2 });
    pk_procpool_stats st;

    (void)state;
    for (uint64_t i = 0; i < N; i++)
        f[i] = submit_u64(pp, "square", i);
    for (uint64_t i = 0; i < N; i++)
        assert_int_equal(get_u64(f[i]), i * i);
    /* The work ran in other processes, forks (main() did not run). */
    assert_int_not_equal(get_u64(submit_u64(pp, "pid", 0)),
                         (uint64_t)getpid());
    assert_int_equal(get_u64(submit_u64(pp, "ran_main", 0)), 0);
    st = stats(pp);
    assert_int_equal(st.submitted, N + 2);
    assert_int_equal(st.completed, N + 2);
    assert_int_equal(st.failed + st.died + st.timed_out + st.cancelled, 0);
    assert_true(st.workers_started >= 1 && st.workers_started <= 2);
    assert_true(st.workers <= 2);
    pk_procpool_destroy(pp);
}

static void
test_a_task_error_reaches_its_future(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    pk_error e;

    (void)state;
    assert_int_equal(get_error(submit_u64(pp, "fail", 0), &e), PK_ECHECK);
    assert_int_equal(e.code, PK_ECHECK);
    assert_int_equal(e.sys, 42);
    assert_string_equal(e.msg, "no good: 7");
    /* The worker is fine: it runs the next task. */
    assert_int_equal(get_u64(submit_u64(pp, "square", 9)), 81);
    assert_int_equal(stats(pp).failed, 1);
    assert_int_equal(stats(pp).workers_started, 1);
    pk_procpool_destroy(pp);
}

static void
test_a_worker_that_dies_fails_its_task_and_is_replaced(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    pk_procpool_stats st;
    pk_error e;

    (void)state;
    assert_int_equal(get_error(submit_u64(pp, "crash", 0), &e), PK_EWORKER);
    assert_int_equal(e.sys, SIGKILL);
    assert_non_null(strstr(e.msg, "killed by signal 9"));
    assert_non_null(strstr(e.msg, "'crash'"));
    assert_int_equal(get_error(submit_u64(pp, "exit3", 0), &e), PK_EWORKER);
    assert_int_equal(e.sys, 3);
    assert_non_null(strstr(e.msg, "exited with status 3"));
    /* A new worker runs what comes next. */
    assert_int_equal(get_u64(submit_u64(pp, "square", 5)), 25);
    st = stats(pp);
    assert_int_equal(st.died, 2);
    assert_int_equal(st.workers_started, 3);
    assert_int_equal(g_died_events, 2);
    pk_procpool_destroy(pp);
}

static void
test_a_task_past_its_time_limit_is_killed(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .task_timeout_ms = 200 });
    pk_error e;

    (void)state;
    assert_int_equal(get_error(submit_u64(pp, "sleep", 60000), &e),
                     PK_ETIMEDOUT);
    assert_non_null(strstr(e.msg, "task_timeout_ms"));
    assert_int_equal(get_u64(submit_u64(pp, "sleep", 1)), 1);
    assert_int_equal(stats(pp).timed_out, 1);
    assert_int_equal(stats(pp).workers_started, 2);
    pk_procpool_destroy(pp);
}

static void
test_a_worker_killed_while_idle_is_not_given_work(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    pid_t pid;

    (void)state;
    pid = (pid_t)get_u64(submit_u64(pp, "pid", 0));
    assert_int_equal(kill(pid, SIGKILL), 0);
    wait_zombie(pid);
    assert_int_equal(get_u64(submit_u64(pp, "square", 3)), 9);
    assert_int_equal(stats(pp).died, 0); /* no task was lost */
    assert_int_equal(stats(pp).workers_started, 2);
    pk_procpool_destroy(pp);
}

static void
test_an_idle_worker_that_dies_is_replaced_on_its_own(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .min_workers = 1,
                                                  .max_workers = 1 });
    pid_t pid = (pid_t)get_u64(submit_u64(pp, "pid", 0));

    (void)state;
    assert_int_equal(kill(pid, SIGKILL), 0);
    /* The supervisor's maintenance checks idle workers every second. */
    for (int i = 0; i < 5000 && stats(pp).workers_started < 2; i++)
        sleep_ms(1);
    assert_int_equal(stats(pp).workers_retired, 1);
    assert_int_equal(stats(pp).workers_started, 2);
    assert_int_equal(stats(pp).workers, 1);
    assert_int_not_equal(get_u64(submit_u64(pp, "pid", 0)), (uint64_t)pid);
    pk_procpool_destroy(pp);
}

static void
test_workers_are_replaced_after_max_tasks(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .max_workers = 1, .max_tasks_per_worker = 3 });
    uint64_t pids[9];
    size_t distinct = 0;

    (void)state;
    for (int i = 0; i < 9; i++)
        pids[i] = get_u64(submit_u64(pp, "pid", 0));
    for (int i = 0; i < 9; i++)
        distinct += i == 0 || pids[i] != pids[i - 1];
    assert_int_equal(distinct, 3);
    assert_int_equal(pids[0], pids[2]);
    assert_int_not_equal(pids[2], pids[3]);
    pk_procpool_destroy(pp);
}

static void
test_a_worker_that_leaks_past_max_rss_growth_is_replaced(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .max_workers = 1, .max_rss_growth = 64 << 20 });
    uint64_t pid;

    (void)state;
    /* Memory used and given back is no growth, however big. */
    pid = get_u64(submit_u64(pp, "hog", (1ull << 63) | 256));
    assert_int_equal(get_u64(submit_u64(pp, "hog", 8)), pid); /* 8 kept */
    assert_int_equal(get_u64(submit_u64(pp, "hog", 8)), pid); /* 16 */
    assert_int_equal(get_u64(submit_u64(pp, "hog", 128)), pid); /* ran */
    assert_int_not_equal(get_u64(submit_u64(pp, "pid", 0)), pid);
    assert_int_equal(stats(pp).over_rss, 1);
    assert_int_equal(stats(pp).workers_started, 2);
    pk_procpool_destroy(pp);
}

static void
test_a_death_is_seen_while_a_child_holds_the_socket(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    time_t t0 = time(NULL);
    pk_error e;

    (void)state;
    assert_int_equal(get_error(submit_u64(pp, "die_leaving_child", 0), &e),
                     PK_EWORKER);
    assert_true(time(NULL) - t0 < 3); /* not when the child lets go */
    assert_int_equal(get_u64(submit_u64(pp, "square", 3)), 9);
    pk_procpool_destroy(pp);
}

/* A future callback (on the supervisor thread) that submits to a full
 * queue gets PK_EAGAIN at once: waiting there would wait for itself. */
static _Atomic int g_cb_rc = 1;

static void
submit_from_callback(void *arg, pk_future *f)
{
    uint64_t v = 5;

    (void)f;
    g_cb_rc = pk_procpool_submit(arg, "square", &v, sizeof v, NULL);
}

static void
test_a_callback_submit_to_a_full_queue_does_not_wait(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .queue_size = 1,
                                                  .shared_size = 4096 });
    pk_future *run = submit_block(pp), *queued;

    (void)state;
    g_cb_rc = 1;
    wait_busy(pp, 1);
    queued = submit_u64(pp, "square", 2); /* the queue is full now */
    assert_int_equal(pk_future_on_complete(run, submit_from_callback, pp),
                     0);
    unblock(pp);
    assert_int_equal(get_u64(run), 1);
    assert_int_equal(get_u64(queued), 4);
    assert_int_equal(g_cb_rc, PK_EAGAIN);
    assert_int_equal(get_u64(submit_u64(pp, "square", 3)), 9);
    pk_procpool_destroy(pp);
}

static void
test_worker_init_runs_in_each_worker(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .max_workers = 2, .min_workers = 2, .worker_init = init_worker,
        .user = (void *)(uintptr_t)77 });

    (void)state;
    assert_int_equal(stats(pp).workers, 2); /* forked at create */
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_u64(submit_u64(pp, "inited", 0)), 77);
    assert_int_equal(g_inited, 0); /* not in this process */
    pk_procpool_destroy(pp);
}

/* A worker being started (a slow worker_init) holds up no other
 * worker's reply: starts run on the core's helper thread, and a worker is
 * lent only once ready. */
static void
test_a_slow_start_holds_up_no_reply(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .min_workers = 1, .max_workers = 2, .worker_init = slow_init,
        .shared_size = 4096 });
    pk_future *run = submit_block(pp), *next;
    uint64_t t0;

    (void)state;
    wait_busy(pp, 1);
    next = submit_u64(pp, "square", 4); /* a second worker starts (1.5 s) */
    sleep_ms(100);
    t0 = (uint64_t)pk_clock_ns();
    unblock(pp);
    assert_int_equal(get_u64(run), 1);
    assert_true(pk_clock_ns() - t0 < 700000000u); /* not after the start */
    assert_int_equal(get_u64(next), 16);
    pk_procpool_destroy(pp);
}

static void
test_big_payloads_and_max_result(void **state)
{
    enum { BIG = 8 << 20 };
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .max_result = BIG });
    unsigned char *buf = malloc(BIG);
    pk_future *f;
    pk_result r;
    pk_error e;

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < BIG; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    assert_int_equal(pk_procpool_submit(pp, "echo", buf, BIG, &f), 0);
    assert_int_equal(pk_future_get(f, 10000, &r, NULL), 0);
    assert_int_equal(r.len, BIG);
    assert_memory_equal(r.value, buf, BIG);
    pk_future_release(f);
    /* One byte over: refused in the worker, which goes on. */
    assert_int_equal(get_error(submit_u64(pp, "big", BIG + 1), &e),
                     PK_ETOOBIG);
    assert_non_null(strstr(e.msg, "max_result"));
    assert_int_equal(get_u64(submit_u64(pp, "square", 4)), 16);
    assert_int_equal(stats(pp).workers_started, 1);
    free(buf);
    pk_procpool_destroy(pp);
}

static void
test_shared_region_hands_data_over_in_place(void **state)
{
    enum { N = 3 << 20 };
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 2,
                                                  .shared_size = 4 << 20 });
    struct shared_job *j;
    pk_future *f;
    void *base;
    size_t size;
    uint64_t want = 0;

    (void)state;
    assert_int_equal(pk_procpool_shared(pp, &base, &size), 0);
    assert_non_null(base);
    assert_true(size >= (size_t)4 << 20);
    j = base;
    j->n = N;
    for (size_t i = 0; i < N; i++) {
        j->bytes[i] = (unsigned char)(i * 7);
        want += j->bytes[i];
    }
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "shared_sum",
                                                .data = j,
                                                .len = sizeof *j + N,
                                                .flags = PK_TASK_SHARED },
                                &f),
        0);
    assert_int_equal(get_u64(f), want);
    assert_int_equal(j->out, want); /* written by the worker, in place */
    /* Outside the region, or reaching past its end: refused. */
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "shared_sum",
                                                .data = &want,
                                                .len = sizeof want,
                                                .flags = PK_TASK_SHARED },
                                NULL),
        PK_EINVAL);
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "shared_sum",
                                                .data = (char *)base + 8,
                                                .len = size,
                                                .flags = PK_TASK_SHARED },
                                NULL),
        PK_EINVAL);
    pk_procpool_destroy(pp);

    /* Without a region: none, and PK_TASK_SHARED is refused. */
    pp = make((pk_procpool_options){ .max_workers = 1 });
    assert_int_equal(pk_procpool_shared(pp, &base, &size), 0);
    assert_null(base);
    assert_int_equal(size, 0);
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "shared_sum",
                                                .data = &want,
                                                .len = sizeof want,
                                                .flags = PK_TASK_SHARED },
                                NULL),
        PK_EINVAL);
    pk_procpool_destroy(pp);
}

static void
test_cancelling_a_running_task_kills_its_worker(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    pk_future *f = submit_u64(pp, "sleep", 60000);
    time_t t0;

    (void)state;
    wait_busy(pp, 1);
    t0 = time(NULL);
    assert_int_equal(pk_future_cancel(f), PK_EAGAIN); /* running */
    assert_int_equal(pk_future_wait(f, 10000), 0);
    assert_true(time(NULL) - t0 < 5);
    assert_int_equal(pk_future_state_get(f), PK_FUTURE_CANCELLED);
    pk_future_release(f);
    assert_int_equal(get_u64(submit_u64(pp, "square", 6)), 36);
    assert_int_equal(stats(pp).cancelled, 1);
    assert_int_equal(stats(pp).workers_started, 2);
    pk_procpool_destroy(pp);
}

static void
test_shutdown_drain_runs_what_is_queued(void **state)
{
    enum { N = 10 };
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    pk_future *f[N];

    (void)state;
    for (int i = 0; i < N; i++)
        f[i] = submit_u64(pp, "sleep", 10);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_DRAIN, 10000), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pk_future_state_get(f[i]), PK_FUTURE_DONE);
        pk_future_release(f[i]);
    }
    assert_int_equal(pk_procpool_submit(pp, "square", NULL, 0, NULL),
                     PK_ESHUTDOWN);
    pk_procpool_destroy(pp);
}

static void
test_shutdown_cancel_and_kill(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .shared_size = 4096 });
    pk_future *run, *queued[5];
    uint64_t t0;

    (void)state;
    run = submit_block(pp);
    for (int i = 0; i < 5; i++)
        queued[i] = submit_u64(pp, "square", (uint64_t)i);
    wait_busy(pp, 1); /* run is on the worker */
    /* CANCEL: the queued ones end cancelled, the running one finishes. */
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_CANCEL, 0),
                     PK_ETIMEDOUT); /* run still runs */
    unblock(pp);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_CANCEL, 10000), 0);
    assert_int_equal(get_u64(run), 1);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pk_future_state_get(queued[i]),
                         PK_FUTURE_CANCELLED);
        pk_future_release(queued[i]);
    }
    assert_int_equal(stats(pp).cancelled, 5);
    pk_procpool_destroy(pp);

    /* KILL: the running task's worker is killed at once. */
    pp = make((pk_procpool_options){ .max_workers = 1 });
    run = submit_u64(pp, "sleep", 60000);
    wait_busy(pp, 1);
    t0 = (uint64_t)time(NULL);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_KILL, 10000), 0);
    assert_true((uint64_t)time(NULL) - t0 < 5);
    assert_int_equal(pk_future_state_get(run), PK_FUTURE_CANCELLED);
    pk_future_release(run);
    pk_procpool_destroy(pp);
}

static void
test_shutdown_that_times_out_leaves_the_pool_valid(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .shared_size = 4096 });
    pk_future *f = submit_block(pp);

    (void)state;
    wait_busy(pp, 1);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_DRAIN, 20),
                     PK_ETIMEDOUT);
    unblock(pp);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_DRAIN, 10000), 0);
    assert_int_equal(get_u64(f), 1);
    pk_procpool_destroy(pp);
}

static void
test_destroy_kills_what_is_running(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 2 });
    pk_future *a = submit_u64(pp, "sleep", 60000);
    pk_future *b = submit_u64(pp, "sleep", 60000);
    pk_future *c = submit_u64(pp, "square", 2);
    time_t t0;

    (void)state;
    wait_busy(pp, 2);
    t0 = time(NULL);
    pk_procpool_destroy(pp);
    assert_true(time(NULL) - t0 < 5);
    assert_int_equal(pk_future_state_get(a), PK_FUTURE_CANCELLED);
    assert_int_equal(pk_future_state_get(b), PK_FUTURE_CANCELLED);
    assert_int_equal(pk_future_state_get(c), PK_FUTURE_CANCELLED);
    pk_future_release(a);
    pk_future_release(b);
    pk_future_release(c);
}

static void
test_a_full_queue_refuses_or_waits(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .max_workers = 1, .queue_size = 2, .submit_timeout_ms = PK_ALWAYS,
        .shared_size = 4096 });
    pk_future *run, *q1, *q2;
    uint64_t v = 1;

    (void)state;
    run = submit_block(pp);
    wait_busy(pp, 1); /* off the queue, on the worker */
    q1 = submit_u64(pp, "square", 1);
    q2 = submit_u64(pp, "square", 2);
    assert_int_equal(pk_procpool_submit(pp, "square", &v, sizeof v, NULL),
                     PK_EAGAIN);
    unblock(pp);
    assert_int_equal(get_u64(run), 1);
    assert_int_equal(get_u64(q1), 1);
    assert_int_equal(get_u64(q2), 4);
    pk_procpool_destroy(pp);

    /* With a timeout: PK_ETIMEDOUT, then room once the worker is free. */
    pp = make((pk_procpool_options){ .max_workers = 1, .queue_size = 1,
                                     .submit_timeout_ms = 50,
                                     .shared_size = 4096 });
    run = submit_block(pp);
    wait_busy(pp, 1);
    q1 = submit_u64(pp, "square", 3);
    assert_int_equal(pk_procpool_submit(pp, "square", &v, sizeof v, NULL),
                     PK_ETIMEDOUT);
    unblock(pp);
    assert_int_equal(get_u64(run), 1);
    assert_int_equal(get_u64(q1), 9);
    pk_procpool_destroy(pp);
}

/* pk_map's input from an array of 4 tasks (user). */
static int
next_from_array(void *user, pk_task *t)
{
    static int i;
    pk_task *tasks = user;

    if (i == 4) {
        i = 0;
        return 1;
    }
    *t = tasks[i++];
    return 0;
}

/* pk_map over the pool's executor: squares of 0..N-1, in order. */
struct map_in {
    uint64_t next, n;
    const char *name;
    uint64_t args[64];
};

static int
map_next(void *user, pk_task *t)
{
    struct map_in *in = user;

    if (in->next == in->n)
        return 1;
    in->args[in->next] = in->next;
    t->name = in->name ? in->name : "square";
    t->data = &in->args[in->next];
    t->len = sizeof in->args[0];
    in->next++;
    return 0;
}

static void
test_the_executor_runs_a_map_in_order(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 2 });
    struct map_in in = { .n = 64 };
    pk_executor *ex;
    pk_map *m;
    pk_result r;
    size_t idx;
    uint64_t want = 0;
    int rc;

    (void)state;
    assert_int_equal(pk_procpool_executor(pp, &ex), 0);
    assert_int_equal(pk_map_create(&m, ex, map_next, &in, NULL), 0);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) == 0) {
        uint64_t v;
        assert_int_equal(idx, want);
        memcpy(&v, r.value, sizeof v);
        assert_int_equal(v, want * want);
        r.free_fn(r.value);
        want++;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(want, 64);
    pk_map_destroy(m);
    /* In chunks of 16 (one round trip each); item 40 kills its worker:
     * its chunk (32..47) fails with PK_EWORKER, the rest go on. */
    in = (struct map_in){ .n = 64, .name = "square_or_crash" };
    assert_int_equal(pk_map_create(&m, ex, map_next, &in,
                                   &(pk_map_options){ .chunk = 16 }),
                     0);
    for (want = 0; (rc = pk_map_next(m, &r, &idx, NULL)) != 1; want++) {
        assert_int_equal(idx, want);
        if (want >= 32 && want < 48) {
            assert_int_equal(rc, PK_EWORKER);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(*(uint64_t *)r.value, want * want);
        r.free_fn(r.value);
    }
    assert_int_equal(want, 64);
    pk_map_destroy(m);
    assert_int_equal(stats(pp).died, 1);
    /* A function task means nothing to a worker. */
    assert_int_equal(pk_executor_submit(ex, &(pk_task){ .fn = NULL,
                                                         .name = NULL },
                                        NULL),
                     PK_EINVAL);
    pk_executor_destroy(ex);
    pk_procpool_destroy(pp);
}

/* In a chunk, max_result applies to each item: the one over it fails
 * alone (PK_ETOOBIG), its neighbours deliver. */
static void
test_max_result_is_per_item_in_a_chunk(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1,
                                                  .max_result = 1024 });
    static const uint64_t sizes[4] = { 10, 2000, 10, 1024 };
    pk_task tasks[4];
    pk_executor *ex;
    pk_map *m;
    pk_result r;
    size_t idx;
    int rc, n = 0;

    (void)state;
    for (int i = 0; i < 4; i++)
        tasks[i] = (pk_task){ .name = "big", .data = &sizes[i],
                              .len = sizeof sizes[i] };
    assert_int_equal(pk_procpool_executor(pp, &ex), 0);
    assert_int_equal(pk_map_create(&m, ex, next_from_array, tasks,
                                   &(pk_map_options){ .chunk = 4 }),
                     0);
    while ((rc = pk_map_next(m, &r, &idx, NULL)) != 1) {
        assert_int_equal(idx, (size_t)n);
        if (n == 1) {
            assert_int_equal(rc, PK_ETOOBIG);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(r.len, sizes[n]);
            r.free_fn(r.value);
        }
        n++;
    }
    assert_int_equal(n, 4);
    assert_int_equal(stats(pp).submitted, 1); /* one chunk */
    pk_map_destroy(m);
    pk_executor_destroy(ex);
    pk_procpool_destroy(pp);
}

static void
test_bad_input(void **state)
{
    pk_procpool_options o = { .registry = g_reg };
    pk_procpool *pp;
    pk_future *f = (pk_future *)1;
    pk_procpool_stats st;
    pk_error e;
    uint64_t v = 1;

    (void)state;
    assert_int_equal(pk_procpool_options_check(NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_procpool_create(NULL, &o), PK_EINVAL);
    assert_int_equal(pk_procpool_create(&pp, NULL), PK_EINVAL);
    assert_null(pp);
#define BAD(field, value, why)                                                \
    do {                                                                      \
        pk_procpool_options b = o;                                            \
        b.field = value;                                                      \
        assert_int_equal(pk_procpool_options_check(&b, &e), PK_EINVAL);      \
        assert_non_null(strstr(e.msg, why));                                  \
        assert_int_equal(pk_procpool_create(&pp, &b), PK_EINVAL);            \
    } while (0)
    BAD(registry, NULL, "registry");
    BAD(max_workers, PK_PROCPOOL_WORKERS_MAX + 1, "max_workers");
    BAD(min_workers, 100000, "min_workers");
    BAD(queue_size, PK_PROCPOOL_QUEUE_MAX + 1, "queue_size");
    BAD(max_result, PK_PROCPOOL_DATA_MAX + 1, "max_result");
    BAD(shared_size, PK_PROCPOOL_DATA_MAX + 1, "shared_size");
    BAD(submit_timeout_ms, -5, "submit_timeout_ms");
    BAD(task_timeout_ms, PK_ALWAYS, "task_timeout_ms");
    BAD(idle_timeout_ms, -3, "idle_timeout_ms");
#undef BAD
    pp = make((pk_procpool_options){ .max_workers = 1 });
    assert_int_equal(pk_procpool_submit(NULL, "square", &v, sizeof v, &f),
                     PK_EINVAL);
    assert_null(f);
    assert_int_equal(pk_procpool_submit(pp, NULL, &v, sizeof v, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_submit(pp, "no such", &v, sizeof v, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_submit(pp, "square", NULL, 8, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_submit(pp, "square", &v,
                                        PK_PROCPOOL_DATA_MAX + 1, NULL),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_submit_task(pp, NULL, NULL), PK_EINVAL);
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "square",
                                                .flags = PK_TASK_SHARED },
                                NULL),
        PK_EINVAL);
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "square",
                                                .flags = 1u << 7 },
                                NULL),
        PK_EINVAL);
    assert_int_equal(pk_procpool_shared(pp, NULL, NULL), PK_EINVAL);
    assert_int_equal(pk_procpool_shutdown(pp, 7, 0), PK_EINVAL);
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_DRAIN, -7),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_shutdown(NULL, PK_SHUTDOWN_DRAIN, 0),
                     PK_EINVAL);
    assert_int_equal(pk_procpool_stats_get(pp, NULL), PK_EINVAL);
    assert_int_equal(pk_procpool_stats_get(NULL, &st), PK_EINVAL);
    assert_int_equal(pk_procpool_executor(pp, NULL), PK_EINVAL);
    assert_int_equal(stats(pp).submitted, 0);
    pk_procpool_destroy(pp);
    pk_procpool_destroy(NULL);
}

static void
test_a_child_after_fork_gets_pk_eforked(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 1 });
    uint64_t v = 2;
    pid_t pid;
    int st;

    (void)state;
    assert_int_equal(get_u64(submit_u64(pp, "square", 3)), 9);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = pk_procpool_submit(pp, "square", &v, sizeof v, NULL) ==
                 PK_EFORKED;
        if (!SANITIZED)
            pk_procpool_destroy(pp); /* the parent's worker goes on */
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The parent's worker was not touched. */
    assert_int_equal(get_u64(submit_u64(pp, "square", 4)), 16);
    assert_int_equal(stats(pp).workers_started, 1);
    pk_procpool_destroy(pp);
}

/* Threads submitting random tasks (squares, failures, now and then a
 * crash) to one pool; every outcome is the one its task asked for, and
 * the counts add up at the end. */
struct stress {
    pk_procpool *pp;
    unsigned seed;
    int bad;
    int ok, failed, died;
};

static void *
stress_main(void *arg)
{
    struct stress *s = arg;

    for (int i = 0; i < 60; i++) {
        unsigned r = (unsigned)rand_r(&s->seed) % 100;
        uint64_t v = (uint64_t)rand_r(&s->seed) % 1000;
        const char *name = r < 2 ? "crash" : r < 20 ? "fail" : "square";
        pk_future *f = NULL;
        pk_error e;
        pk_result res;
        int rc;

        if (pk_procpool_submit(s->pp, name, &v, sizeof v, &f) != 0) {
            s->bad++;
            continue;
        }
        rc = pk_future_get(f, 20000, &res, &e);
        if (r < 2) {
            s->bad += rc != PK_EWORKER;
            s->died++;
        } else if (r < 20) {
            s->bad += rc != PK_ECHECK || e.sys != 42;
            s->failed++;
        } else {
            uint64_t got = 0;
            if (rc == 0 && res.len == sizeof got)
                memcpy(&got, res.value, sizeof got);
            s->bad += rc != 0 || got != v * v;
            s->ok++;
        }
        pk_future_release(f);
    }
    return NULL;
}

static void
test_many_threads_random_tasks(void **state)
{
    enum { T = 4 };
    pk_procpool *pp = make((pk_procpool_options){ .max_workers = 3 });
    struct stress s[T];
    pthread_t th[T];
    pk_procpool_stats st;
    int ok = 0, failed = 0, died = 0;

    (void)state;
    for (int i = 0; i < T; i++) {
        s[i] = (struct stress){ .pp = pp, .seed = 1234u + (unsigned)i };
        assert_int_equal(pthread_create(&th[i], NULL, stress_main, &s[i]),
                         0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].bad, 0);
        ok += s[i].ok;
        failed += s[i].failed;
        died += s[i].died;
    }
    /* Quiet: every count has moved (a future settles just before its
     * worker's slot is counted free). */
    assert_int_equal(pk_procpool_shutdown(pp, PK_SHUTDOWN_DRAIN, 10000), 0);
    st = stats(pp);
    assert_int_equal(st.submitted, (uint64_t)(ok + failed + died));
    assert_int_equal(st.completed, (uint64_t)ok);
    assert_int_equal(st.failed, (uint64_t)failed);
    assert_int_equal(st.died, (uint64_t)died);
    assert_int_equal(st.busy + st.queued, 0);
    assert_true(st.workers <= 3);
    assert_int_equal(st.workers_started, st.workers + st.workers_retired);
    pk_procpool_destroy(pp);
}

static void
test_spawned_workers_are_fresh_copies_of_the_program(void **state)
{
    pk_procpool *pp = make((pk_procpool_options){
        .max_workers = 2, .flags = PK_PROCPOOL_SPAWN,
        .shared_size = 1 << 20 });
    struct shared_job *j;
    pk_future *f;
    pk_error e;
    void *base;
    size_t size;

    (void)state;
    for (uint64_t i = 0; i < 50; i++)
        assert_int_equal(get_u64(submit_u64(pp, "square", i)), i * i);
    assert_int_not_equal(get_u64(submit_u64(pp, "pid", 0)),
                         (uint64_t)getpid());
    /* main() ran again in the worker, but no worker_init. */
    assert_int_equal(get_u64(submit_u64(pp, "inited", 0)), 0);
    /* The shared region, mapped by the worker at an address of its own. */
    assert_int_equal(pk_procpool_shared(pp, &base, &size), 0);
    j = base;
    j->n = 1000;
    for (int i = 0; i < 1000; i++)
        j->bytes[i] = 3;
    assert_int_equal(
        pk_procpool_submit_task(pp, &(pk_task){ .name = "shared_sum",
                                                .data = j,
                                                .len = sizeof *j + 1000,
                                                .flags = PK_TASK_SHARED },
                                &f),
        0);
    assert_int_equal(get_u64(f), 3000);
    assert_int_equal(j->out, 3000);
    /* Not a fork: main() ran in the worker itself. */
    assert_int_equal(get_u64(submit_u64(pp, "ran_main", 0)), 1);
    /* Deaths as with forks. */
    assert_int_equal(get_error(submit_u64(pp, "crash", 0), &e), PK_EWORKER);
    assert_int_equal(e.sys, SIGKILL);
    assert_int_equal(get_error(submit_u64(pp, "die_leaving_child", 0), &e),
                     PK_EWORKER);
    assert_int_equal(get_u64(submit_u64(pp, "square", 7)), 49);
    pk_procpool_destroy(pp);
    /* And a time limit. */
    pp = make((pk_procpool_options){ .max_workers = 1,
                                     .flags = PK_PROCPOOL_SPAWN,
                                     .task_timeout_ms = 300 });
    assert_int_equal(get_error(submit_u64(pp, "sleep", 60000), &e),
                     PK_ETIMEDOUT);
    assert_int_equal(get_u64(submit_u64(pp, "square", 8)), 64);
    pk_procpool_destroy(pp);
    /* worker_init cannot reach a spawned worker. */
    assert_int_equal(
        pk_procpool_options_check(
            &(pk_procpool_options){ .registry = g_reg,
                                    .flags = PK_PROCPOOL_SPAWN,
                                    .worker_init = init_worker },
            NULL),
        PK_EINVAL);
    assert_int_equal(pk_procpool_options_check(
                         &(pk_procpool_options){ .registry = g_reg,
                                                 .flags = 1u << 9 },
                         NULL),
                     PK_EINVAL);
}

/* Spawned workers that exit before they serve: the pool fails its
 * queued tasks with the start's error instead of retrying for ever. */
static void
test_tasks_fail_when_no_worker_can_start(void **state)
{
    pk_procpool *pp;
    pk_error e;
    time_t t0 = time(NULL);

    (void)state;
    assert_int_equal(setenv("PK_TEST_WORKER_EXITS", "1", 1), 0);
    pp = make((pk_procpool_options){ .max_workers = 1,
                                     .flags = PK_PROCPOOL_SPAWN });
    assert_int_equal(get_error(submit_u64(pp, "square", 2), &e),
                     PK_ECREATE);
    assert_true(time(NULL) - t0 < 8);
    assert_non_null(strstr(e.msg, "exited with status 3 before it was ready"));
    assert_int_equal(stats(pp).workers, 0);
    unsetenv("PK_TEST_WORKER_EXITS");
    pk_procpool_destroy(pp);
}

int
main(void)
{
    pk_registry *spawned;

    g_main_pid = getpid();
    /* A spawned worker of the test below that must fail to start. */
    if (getenv("PK_TEST_WORKER_EXITS") && getenv("PK_PROCPOOL_WORKER"))
        _exit(3);
    /* A worker of a PK_PROCPOOL_SPAWN pool is this program run again:
     * it serves tasks here and never reaches the tests. */
    if (pk_registry_create(&spawned) != 0)
        return 1;
    register_all(spawned);
    pk_procpool_worker_main(spawned);
    pk_registry_destroy(spawned);

    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_tasks_run_on_workers_and_results_come_back),
        T(test_a_task_error_reaches_its_future),
        T(test_a_worker_that_dies_fails_its_task_and_is_replaced),
        T(test_a_task_past_its_time_limit_is_killed),
        T(test_a_worker_killed_while_idle_is_not_given_work),
        T(test_an_idle_worker_that_dies_is_replaced_on_its_own),
        T(test_workers_are_replaced_after_max_tasks),
        T(test_a_worker_that_leaks_past_max_rss_growth_is_replaced),
        T(test_a_death_is_seen_while_a_child_holds_the_socket),
        T(test_a_callback_submit_to_a_full_queue_does_not_wait),
        T(test_worker_init_runs_in_each_worker),
        T(test_a_slow_start_holds_up_no_reply),
        T(test_big_payloads_and_max_result),
        T(test_shared_region_hands_data_over_in_place),
        T(test_cancelling_a_running_task_kills_its_worker),
        T(test_shutdown_drain_runs_what_is_queued),
        T(test_shutdown_cancel_and_kill),
        T(test_shutdown_that_times_out_leaves_the_pool_valid),
        T(test_destroy_kills_what_is_running),
        T(test_a_full_queue_refuses_or_waits),
        T(test_the_executor_runs_a_map_in_order),
        T(test_max_result_is_per_item_in_a_chunk),
        T(test_bad_input),
        T(test_a_child_after_fork_gets_pk_eforked),
        T(test_many_threads_random_tasks),
        T(test_spawned_workers_are_fresh_copies_of_the_program),
        T(test_tasks_fail_when_no_worker_can_start),
#undef T
    };
    return cmocka_run_group_tests_name("procpool", tests, NULL, NULL);
}
