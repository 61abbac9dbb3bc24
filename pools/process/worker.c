/* pools/process/worker.c - one worker process: the core's resource.
 *
 * create makes a socket pair and forks. The child keeps its end, runs
 * worker_init and then serves tasks until its socket closes or its
 * parent is gone, and ends with _exit (never exit: the parent's atexit
 * handlers and stdio buffers are not the worker's). It reads a task
 * whole, calls the function the header names (the parent looked it up in
 * the registry: the child takes no lock of ours, one another thread of
 * the parent may have held at the fork), and writes the reply whole.
 *
 * The pool's end: check polls the socket (an idle worker never writes,
 * so anything readable, or a hang-up, means it died or broke); destroy
 * shuts the socket down (shutdown(2) reaches the worker even though its
 * siblings, forked later, hold copies of this end), waits a moment for
 * the exit and kills a worker that does not go; forget (a child of the
 * pool's process after fork) only closes this end. Workers are reaped by
 * pid, never with waitpid(-1). */
#define _GNU_SOURCE /* __fpurge's header, MSG_NOSIGNAL */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pp_int.h"

/* How often an idle worker looks whether its parent is still there. */
#define PARENT_CHECK_MS 1000

/* ---- the child -------------------------------------------------------------- */

/* Reads a task's name and bytes after its header (malloc: the child's
 * own memory, not the pool's counted allocations). 0 or -errno. */
static int
read_task_body(int fd, const struct pp_task_head *h, char *name,
               size_t name_size, void **data)
{
    size_t keep = h->name_len < name_size ? h->name_len : name_size - 1;
    int rc = pk__pp_read_all(fd, name, keep);
    char skip[64];

    name[rc == 0 ? keep : 0] = '\0';
    for (size_t n = h->name_len - keep; rc == 0 && n > 0;) {
        size_t k = n < sizeof skip ? n : sizeof skip;
        rc = pk__pp_read_all(fd, skip, k);
        n -= k;
    }
    *data = NULL;
    if (rc || h->len == 0 || h->shared)
        return rc;
    *data = malloc((size_t)h->len);
    if (!*data)
        return -ENOMEM;
    return pk__pp_read_all(fd, *data, (size_t)h->len);
}

/* The peak resident bytes of this process (one syscall). */
static uint64_t
peak_rss(void)
{
    struct rusage ru;

    return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024
                                             : 0;
}

/* Runs one task and writes its reply. Returns 0 or -errno (the socket). */
static int
run_task(int fd, const struct pp_task_head *h, size_t max_result,
         bool want_rss)
{
    pk_named_fn fn = (pk_named_fn)(uintptr_t)h->fn;
    char name[128];
    void *data;
    pk_result res = { 0 };
    pk_error err = { 0 };
    int rc = read_task_body(fd, h, name, sizeof name, &data);

    if (rc == -ENOMEM)
        return pk__pp_send_reply(fd, PK_ENOMEM, ENOMEM,
                                 "no memory in the worker for the task's "
                                 "bytes", NULL, 0, 0);
    if (rc)
        return rc;
    rc = fn(h->shared ? (const void *)(uintptr_t)h->shared : data,
            (size_t)h->len, NULL, &res, &err);
    free(data);
    if (rc > 0)
        rc = PK_ETASK;
    if (rc == 0 && res.len > max_result) {
        snprintf(err.msg, sizeof err.msg,
                 "task '%s' returned %zu bytes, over max_result (%zu)", name,
                 res.len, max_result);
        rc = PK_ETOOBIG;
    }
    rc = pk__pp_send_reply(fd, rc, err.sys, err.msg[0] ? err.msg : NULL,
                           res.value, res.value ? res.len : 0,
                           want_rss ? peak_rss() : 0);
    if (res.value && res.free_fn)
        res.free_fn(res.value);
    /* What the task printed shows now, not when the worker ends. */
    fflush(stdout);
    fflush(stderr);
    return rc;
}

static _Noreturn void
child_main(struct pk_procpool *pp, int fd)
{
    sigset_t none;
    struct pollfd p = { .fd = fd, .events = POLLIN };

    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    /* The parent's unwritten output is the parent's to write. */
    __fpurge(stdout);
    __fpurge(stderr);
    if (pp->worker_init)
        pp->worker_init(pp->user);
    for (;;) {
        struct pp_task_head h;
        int n = poll(&p, 1, PARENT_CHECK_MS);

        if (n == 0 && getppid() != pp->parent)
            _exit(0);
        if (n <= 0)
            continue;
        if (pk__pp_read_all(fd, &h, sizeof h) != 0 ||
            h.magic != PK__PP_TASK_MAGIC ||
            run_task(fd, &h, pp->max_result, pp->max_rss != 0) != 0)
            _exit(0);
    }
}

/* ---- the pool's side ------------------------------------------------------- */

int
pk__pp_worker_create(void *user, void **res, pk_error *err)
{
    struct pk_procpool *pp = user;
    struct pp_worker *w = pk__calloc(1, sizeof *w);
    int sv[2];

    if (!w)
        return pk_error_set(err, PK_ENOMEM, ENOMEM,
                            "pk_procpool: no memory for a worker");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        int e = errno;
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, e,
                            "pk_procpool: socketpair failed (errno %d)", e);
    }
    w->pid = fork();
    if (w->pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, e,
                            "pk_procpool: fork failed (errno %d)", e);
    }
    if (w->pid == 0) {
        close(sv[0]);
        child_main(pp, sv[1]);
    }
    close(sv[1]);
    w->fd = sv[0];
    w->status = -1;
    atomic_fetch_add_explicit(&pp->workers_started, 1, memory_order_relaxed);
    *res = w;
    return 0;
}

int
pk__pp_worker_check(void *user, void *res, pk_error *err)
{
    struct pp_worker *w = res;
    struct pollfd p = { .fd = w->fd, .events = POLLIN };

    (void)user;
    if (poll(&p, 1, 0) == 0)
        return 0;
    return pk_error_set(err, PK_ECHECK, 0,
                        "pk_procpool: worker %d is gone or broken",
                        (int)w->pid);
}

static void
nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* waitpid by pid, EINTR retried. Returns its result. */
static pid_t
wait_for(struct pp_worker *w, int flags)
{
    pid_t r;
    int st;

    do
        r = waitpid(w->pid, &st, flags);
    while (r < 0 && errno == EINTR);
    if (r == w->pid) {
        w->reaped = true;
        w->status = st;
    } else if (r < 0) {
        w->reaped = true; /* ECHILD: someone else reaped it */
        w->status = -1;
    }
    return r;
}

void
pk__pp_worker_reap(struct pp_worker *w, int wait_ms)
{
    for (int waited = 0; !w->reaped; waited++) {
        if (wait_for(w, WNOHANG) != 0)
            return;
        if (waited >= wait_ms) {
            kill(w->pid, SIGKILL);
            wait_for(w, 0);
            return;
        }
        nap_ms(1);
    }
}

void
pk__pp_worker_kill(struct pp_worker *w)
{
    if (w->reaped)
        return;
    kill(w->pid, SIGKILL);
    wait_for(w, 0);
}

void
pk__pp_worker_destroy(void *user, void *res)
{
    struct pk_procpool *pp = user;
    struct pp_worker *w = res;

    shutdown(w->fd, SHUT_RDWR); /* the worker reads end of file */
    close(w->fd);
    pk__pp_worker_reap(w, 1000);
    atomic_fetch_add_explicit(&pp->workers_retired, 1, memory_order_relaxed);
    pk__free(w);
}

void
pk__pp_worker_forget(void *user, void *res)
{
    struct pp_worker *w = res;

    (void)user;
    close(w->fd); /* no shutdown: the parent's worker must go on */
}

void
pk__pp_worker_describe(const struct pp_worker *w, char *buf, size_t size,
                       int *sys)
{
    *sys = 0;
    if (!w->reaped || w->status < 0) {
        snprintf(buf, size, "ended (status unknown)");
    } else if (WIFSIGNALED(w->status)) {
        const char *what;

        *sys = WTERMSIG(w->status);
        what = sigdescr_np(*sys); /* strsignal is not thread-safe */
        snprintf(buf, size, "killed by signal %d (%s)", *sys,
                 what ? what : "unknown");
    } else if (WIFEXITED(w->status)) {
        *sys = WEXITSTATUS(w->status);
        snprintf(buf, size, "exited with status %d", *sys);
    } else {
        snprintf(buf, size, "ended (status %#x)", (unsigned)w->status);
    }
}
