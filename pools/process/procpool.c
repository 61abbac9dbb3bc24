/* pools/process/procpool.c - the process pool's public calls: options,
 * create, submit, shutdown, destroy, stats, the executor.
 *
 * A submit checks and copies the task (its function looked up in the
 * registry here, in the parent), makes its future (the pool keeps one
 * reference, the caller gets another), queues it (queue.c) and wakes the
 * supervisor (super.c) if it sleeps. Workers are the core's resources
 * (worker.c's hooks); the supervisor borrows one per task. */
#define _GNU_SOURCE /* memfd_create */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pp_int.h"

#define DEFAULT_QUEUE 1024
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_MAX_RESULT ((size_t)64 << 20)

/* ---- options ---------------------------------------------------------------- */

static int
bad(pk_error *err, const char *why)
{
    return pk_error_set(err, PK_EINVAL, 0, "pk_procpool_options: %s", why);
}

/* An option time: 0, PK_NEVER, PK_ALWAYS where allowed, or positive. */
static bool
bad_ms(int ms, bool always_ok)
{
    return ms < 0 && ms != PK_NEVER && !(always_ok && ms == PK_ALWAYS);
}

int
pk_procpool_options_check(const pk_procpool_options *o, pk_error *err)
{
    size_t max;

    if (!o)
        return bad(err, "NULL");
    max = o->max_workers ? o->max_workers : pk__cpu_count();
    if (!o->registry)
        return bad(err, "registry is required (the named tasks workers "
                        "run)");
    if (o->max_workers > PK_PROCPOOL_WORKERS_MAX)
        return bad(err, "max_workers is above PK_PROCPOOL_WORKERS_MAX");
    if (o->min_workers > max)
        return bad(err, "min_workers is above max_workers (or its default, "
                        "the CPUs this process may use)");
    if (o->queue_size > PK_PROCPOOL_QUEUE_MAX)
        return bad(err, "queue_size is above PK_PROCPOOL_QUEUE_MAX");
    if (o->max_result > PK_PROCPOOL_DATA_MAX)
        return bad(err, "max_result is above PK_PROCPOOL_DATA_MAX");
    if (o->shared_size > PK_PROCPOOL_DATA_MAX)
        return bad(err, "shared_size is above PK_PROCPOOL_DATA_MAX");
    if (bad_ms(o->submit_timeout_ms, true))
        return bad(err, "submit_timeout_ms is negative but not PK_NEVER or "
                        "PK_ALWAYS");
    if (bad_ms(o->task_timeout_ms, false))
        return bad(err, "task_timeout_ms is negative but not PK_NEVER");
    if (bad_ms(o->idle_timeout_ms, false))
        return bad(err, "idle_timeout_ms is negative but not PK_NEVER");
    if (o->flags & ~(unsigned)PK_PROCPOOL_SPAWN)
        return bad(err, "flags has bits no pk_procpool_flags has");
    if ((o->flags & PK_PROCPOOL_SPAWN) && o->worker_init)
        return bad(err, "worker_init cannot reach a spawned worker: do the "
                        "work in main() before pk_procpool_worker_main");
    pk_error_clear(err);
    return 0;
}

static void
configure(struct pk_procpool *pp, const pk_procpool_options *o)
{
    pp->fork_epoch = pk__fork_epoch();
    pp->registry = o->registry;
    pp->max_workers = o->max_workers ? o->max_workers : pk__cpu_count();
    pp->queue_size = o->queue_size ? o->queue_size : DEFAULT_QUEUE;
    pp->max_result = o->max_result ? o->max_result : DEFAULT_MAX_RESULT;
    pp->max_rss_growth = o->max_rss_growth;
    pp->task_timeout_ns = o->task_timeout_ms > 0
                              ? (uint64_t)o->task_timeout_ms * 1000000u
                              : UINT64_MAX;
    pp->submit_timeout_ms = o->submit_timeout_ms == PK_ALWAYS ? 0
                            : o->submit_timeout_ms > 0 ? o->submit_timeout_ms
                                                       : PK_WAIT_FOREVER;
    pp->worker_init = o->worker_init;
    pp->user = o->user;
    pp->event = o->event;
    pp->event_user = o->event_user;
    pp->parent = getpid();
    pp->spawn = (o->flags & PK_PROCPOOL_SPAWN) != 0;
    pp->shared_fd = -1;
    pp->how = PK__PP_OPEN;
    pk__lock_init(&pp->lock, PK__RANK_PROCPOOL);
}

static int
start_core(struct pk_procpool *pp, const pk_procpool_options *o)
{
    pk_pool_options po;

    pk_pool_options_init(&po);
    po.create = pk__pp_worker_create;
    po.destroy = pk__pp_worker_destroy;
    po.check = pk__pp_worker_check;
    po.forget_in_child = pk__pp_worker_forget;
    po.user = pp;
    po.min_size = o->min_workers;
    po.max_size = pp->max_workers;
    po.idle_timeout_ms = o->idle_timeout_ms ? o->idle_timeout_ms
                                            : DEFAULT_IDLE_MS;
    po.check_after_ms = PK_ALWAYS; /* a poll(): a dead idle worker is
                                      found before it gets a task */
    po.check_interval_ms = 1000;   /* and within a second anyway (the
                                      core's maintenance), so
                                      min_workers comes back */
    po.max_uses = o->max_tasks_per_worker;
    /* The core's own threads: its maintenance (idle checks, retirement,
     * the min_workers floor) and its helper, which makes the workers the
     * supervisor's tickets wait for: forks and spawns never hold the
     * supervisor. */
    po.flags = PK_POOL_NO_GENERATION_BUMP |
               PK_POOL_QUIET_CLOSE;
    po.event = o->event;
    po.event_user = o->event_user;
    return pk_pool_create(&pp->core, &po);
}

/* The shared region: a memfd, mapped here before any worker is forked
 * (a fork has it at the same address), and mapped by a spawned worker
 * from the descriptor it inherits. */
static int
map_shared(struct pk_procpool *pp, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p;
    int fd;

    if (size == 0)
        return 0;
    size = (size + page - 1) / page * page;
    fd = memfd_create("pk-procpool-shared", MFD_CLOEXEC);
    if (fd < 0)
        return PK_ENOMEM;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return PK_ENOMEM;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return PK_ENOMEM;
    }
    pp->shared = p;
    pp->shared_size = size;
    pp->shared_fd = fd;
    return 0;
}

static void
unmap_shared(struct pk_procpool *pp)
{
    if (pp->shared)
        munmap(pp->shared, pp->shared_size);
    if (pp->shared_fd >= 0)
        close(pp->shared_fd);
    pp->shared = NULL;
    pp->shared_fd = -1;
}

/* ---- create, destroy -------------------------------------------------------- */

int
pk_procpool_create(pk_procpool **out, const pk_procpool_options *opts)
{
    struct pk_procpool *pp;
    int rc;

    if (!out)
        return PK_EINVAL;
    *out = NULL;
    if (getenv(PK__PP_WORKER_ENV)) {
        /* A spawned worker whose main() makes a pool before it calls
         * pk_procpool_worker_main would spawn the next one, and so on. */
        fprintf(stderr, "poolkit: pk_procpool_create in a spawned worker "
                        "before pk_procpool_worker_main: call that first "
                        "in main()\n");
        _exit(2);
    }
    rc = pk_procpool_options_check(opts, NULL);
    if (rc)
        return rc;
    pp = pk__calloc(1, sizeof *pp);
    if (!pp)
        return PK_ENOMEM;
    configure(pp, opts);
    rc = map_shared(pp, opts->shared_size);
    if (rc == 0) {
        rc = start_core(pp, opts); /* forks min_workers */
        if (rc == 0) {
            rc = pk__pp_super_start(pp);
            if (rc)
                pk_pool_destroy(pp->core);
        }
    }
    if (rc) {
        unmap_shared(pp);
        pk__free(pp);
        return rc;
    }
    pp->magic = PK__PP_MAGIC;
    *out = pp;
    return 0;
}

static int
validate(const struct pk_procpool *pp)
{
    if (!pp || pp->magic != PK__PP_MAGIC)
        return PK_EINVAL;
    if (pp->fork_epoch != pk__fork_epoch_fast())
        return PK_EFORKED;
    return 0;
}

/* In a child after fork(): the parent's workers are not ours; the core
 * closes the child's copies of their sockets. No lock, no future. */
static void
forget_in_child(struct pk_procpool *pp)
{
    struct pp_job *j = pp->head;

    pk__pp_super_forget(pp);
    pk_pool_destroy(pp->core);
    while (j) {
        struct pp_job *next = j->next;
        pk__free(j->name);
        if (!j->shared)
            pk__free(j->data);
        pk__free(j);
        j = next;
    }
    unmap_shared(pp);
    pp->magic = 0;
    pk__free(pp);
}

void
pk_procpool_destroy(pk_procpool *pp)
{
    if (!pp || pp->magic != PK__PP_MAGIC)
        return;
    if (pp->fork_epoch != pk__fork_epoch_fast()) {
        forget_in_child(pp);
        return;
    }
    (void)pk_procpool_shutdown(pp, PK_SHUTDOWN_KILL, PK_WAIT_FOREVER);
    pk__pp_super_stop(pp);
    pk__pp_worker_stop_starts(pp); /* the core's helper may be in one */
    pk_pool_destroy(pp->core); /* retires the idle workers */
    unmap_shared(pp);
    pp->magic = 0;
    pk__free(pp);
}

/* ---- submit ----------------------------------------------------------------- */

/* Whether [data, data + len) lies in the shared region. */
static bool
in_shared(const struct pk_procpool *pp, const void *data, size_t len)
{
    uintptr_t p = (uintptr_t)data, b = (uintptr_t)pp->shared;

    return pp->shared && data && p >= b && p - b <= pp->shared_size &&
           len <= pp->shared_size - (p - b);
}

/* A job for name(data, len), its future made: the bytes copied, or with
 * shared, the caller's bytes in the shared region. */
static int
make_job(struct pk_procpool *pp, const char *name, const void *data,
         size_t len, bool shared, struct pp_job **out)
{
    struct pp_job *j;
    pk_named_fn fn;

    *out = NULL;
    if (!name || (len && !data) || len > PK_PROCPOOL_DATA_MAX ||
        (shared && !in_shared(pp, data, len)))
        return PK_EINVAL;
    if (pk_registry_lookup(pp->registry, name, &fn) != 0)
        return PK_EINVAL; /* no such task */
    j = pk__calloc(1, sizeof *j);
    if (!j)
        return PK_ENOMEM;
    j->fn = fn;
    j->len = len;
    j->shared = shared;
    j->name = pk__strdup(name);
    j->data = shared ? (void *)data : len ? pk__alloc(len) : NULL;
    if (!j->name || (len && !j->data) ||
        pk_future_create(&j->fut, pp->event, pp->event_user) != 0) {
        pk__pp_job_free(j);
        return PK_ENOMEM;
    }
    if (len && !shared)
        memcpy(j->data, data, len);
    *out = j;
    return 0;
}

static void
free_list(struct pp_job *j)
{
    while (j) {
        struct pp_job *next = j->next;
        pk__pp_job_free(j);
        j = next;
    }
}

static bool
on_supervisor(const struct pk_procpool *pp)
{
    return pp->thread_started && pthread_equal(pthread_self(), pp->thread);
}

/* Queues the n jobs of list, handing their futures to futs (optional). */
static int
queue_jobs(struct pk_procpool *pp, struct pp_job *list, size_t n,
           pk_future **futs)
{
    uint64_t deadline = UINT64_MAX;
    size_t i = 0;
    int rc;

    if (pp->submit_timeout_ms > 0)
        pk__deadline(pp->submit_timeout_ms, &deadline);
    /* The caller's references first: once queued, a job may end (and
     * drop the pool's reference) before this returns. */
    for (struct pp_job *j = list; futs && j; j = j->next)
        futs[i++] = pk_future_ref(j->fut);
    /* Never wait on the supervisor thread (a future's callback): only
     * it makes room. */
    rc = pk__pp_queue_push(pp, list, n, deadline,
                           pp->submit_timeout_ms != 0 && !on_supervisor(pp));
    if (rc) {
        for (i = 0; futs && i < n; i++) {
            pk_future_release(futs[i]);
            futs[i] = NULL;
        }
        free_list(list);
        return rc;
    }
    atomic_fetch_add_explicit(&pp->submitted, n, memory_order_relaxed);
    pk__pp_super_poke(pp);
    return 0;
}

int
pk_procpool_submit(pk_procpool *pp, const char *name, const void *data,
                   size_t len, pk_future **fut)
{
    struct pp_job *j;
    int rc = validate(pp);

    if (fut)
        *fut = NULL;
    if (rc)
        return rc;
    rc = make_job(pp, name, data, len, false, &j);
    if (rc)
        return rc;
    return queue_jobs(pp, j, 1, fut);
}

static int
check_task(const pk_task *t)
{
    if (!t || t->fn || !t->name ||
        (t->flags & ~(unsigned)(PK_TASK_SHARED | PK_TASK_CHUNK)))
        return PK_EINVAL;
    return 0;
}

static int
make_task_job(struct pk_procpool *pp, const pk_task *t, struct pp_job **out)
{
    int rc = check_task(t);

    *out = NULL;
    if (rc == 0)
        rc = make_job(pp, t->name, t->data, t->len,
                      (t->flags & PK_TASK_SHARED) != 0, out);
    if (rc == 0)
        (*out)->chunk = (t->flags & PK_TASK_CHUNK) != 0;
    return rc;
}

int
pk_procpool_submit_task(pk_procpool *pp, const pk_task *task,
                        pk_future **fut)
{
    struct pp_job *j;
    int rc = validate(pp);

    if (fut)
        *fut = NULL;
    if (rc == 0)
        rc = make_task_job(pp, task, &j);
    if (rc)
        return rc;
    return queue_jobs(pp, j, 1, fut);
}

/* All or nothing: every job made, then queued in one step. */
static int
submit_many(struct pk_procpool *pp, const pk_task *tasks, size_t n,
            pk_future **futs)
{
    struct pp_job *list = NULL, **tail = &list;
    int rc = validate(pp);

    for (size_t i = 0; futs && i < n; i++)
        futs[i] = NULL;
    if (rc == 0 && (!tasks || n == 0))
        rc = PK_EINVAL;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = make_task_job(pp, &tasks[i], tail);
        if (rc == 0)
            tail = &(*tail)->next;
    }
    if (rc) {
        free_list(list);
        return rc;
    }
    return queue_jobs(pp, list, n, futs);
}

/* ---- shutdown, stats -------------------------------------------------------- */

int
pk_procpool_shutdown(pk_procpool *pp, int how, int timeout_ms)
{
    uint64_t deadline;
    int rc = validate(pp);

    if (rc)
        return rc;
    rc = pk__deadline(timeout_ms, &deadline);
    if (rc == 0)
        rc = pk__pp_queue_shutdown(pp, how);
    if (rc)
        return rc;
    pk__pp_super_poke(pp);
    return pk__pp_queue_wait_quiet(pp, deadline);
}

int
pk_procpool_stats_get(pk_procpool *pp, pk_procpool_stats *o)
{
    pk_pool_stats cs;
    int rc = validate(pp);

    if (rc == 0 && !o)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    memset(o, 0, sizeof *o);
    if (pk_pool_stats_get(pp->core, &cs) == 0)
        o->workers = cs.size - cs.creating;
    pk__lock_acquire(&pp->lock);
    o->busy = pp->nbusy;
    o->queued = pp->nqueued;
    pk__lock_release(&pp->lock);
#define GET(f) o->f = atomic_load_explicit(&pp->f, memory_order_relaxed)
    GET(submitted);
    GET(completed);
    GET(failed);
    GET(died);
    GET(timed_out);
    GET(cancelled);
    GET(workers_started);
    GET(workers_retired);
    GET(over_rss);
#undef GET
    return 0;
}

int
pk_procpool_shared(pk_procpool *pp, void **base, size_t *size)
{
    int rc = validate(pp);

    if (rc == 0 && (!base || !size))
        rc = PK_EINVAL;
    if (rc)
        return rc;
    *base = pp->shared;
    *size = pp->shared_size;
    return 0;
}

/* ---- the executor ----------------------------------------------------------- */

static int
ex_submit(void *impl, const pk_task *task, pk_future **fut)
{
    return pk_procpool_submit_task(impl, task, fut);
}

static int
ex_submit_many(void *impl, const pk_task *tasks, size_t n, pk_future **futs)
{
    return submit_many(impl, tasks, n, futs);
}

static int
ex_capacity(void *impl, size_t *out)
{
    struct pk_procpool *pp = impl;
    int rc = validate(pp);

    if (rc)
        return rc;
    pk__lock_acquire(&pp->lock);
    if (pp->how != PK__PP_OPEN)
        rc = PK_ESHUTDOWN;
    else /* a job put back may take the queue past its size */
        *out = pp->nqueued < pp->queue_size ? pp->queue_size - pp->nqueued
                                            : 0;
    pk__lock_release(&pp->lock);
    return rc;
}

static int
ex_shutdown(void *impl, int how, int timeout_ms)
{
    return pk_procpool_shutdown(impl, how, timeout_ms);
}

int
pk_procpool_executor(pk_procpool *pp, pk_executor **out)
{
    static const pk_executor_ops ops = {
        ex_submit, ex_submit_many, ex_capacity, ex_shutdown, NULL
    };
    int rc = validate(pp);

    if (rc == 0 && !out)
        rc = PK_EINVAL;
    if (rc)
        return rc;
    return pk_executor_create(out, &ops, pp);
}
