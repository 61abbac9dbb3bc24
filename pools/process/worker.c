/* pools/process/worker.c - one worker process: the core's resource.
 *
 * create makes a socket pair and forks, or spawns a fresh copy of the
 * program (PK_PROCPOOL_SPAWN: its main() calls pk_procpool_worker_main,
 * here too, which reads its descriptors from the environment and says
 * hello; create waits for that). Either way the worker then serves
 * tasks until its socket closes or its parent is gone, and ends with
 * _exit (never exit: the parent's atexit handlers and stdio buffers are
 * not a fork's). It reads a task whole, calls the function the header
 * names (a fork: the parent looked it up, so the child takes no lock of
 * ours that another thread may have held at the fork) or the name's in
 * its registry (a spawned copy), and writes the reply whole.
 *
 * The pool's end: a pidfd per worker, whose POLLIN is its death even
 * while another process holds a copy of the worker's end of the socket
 * (a child the task started, another pool's fork); signals and waits go
 * through it, so a pid taken over after someone else reaped the worker
 * is never hit (without pidfds: by pid, never waitpid(-1)). check looks
 * at the pidfd and the socket (an idle worker never writes); destroy
 * shuts the socket down (shutdown(2) reaches the worker even though its
 * siblings may hold copies of this end), waits a moment for the exit and
 * kills a worker that does not go; forget (a child of the pool's process
 * after fork) only closes descriptors. */
#define _GNU_SOURCE /* __fpurge's header, MSG_NOSIGNAL */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pp_int.h"

/* How often an idle worker looks whether its parent is still there. */
#define PARENT_CHECK_MS 1000
/* How long a worker may take to be ready: a fork's worker_init, a
 * spawned copy's main() up to pk_procpool_worker_main. */
#define START_MS 30000

/* ---- the child -------------------------------------------------------------- */

/* What a worker's loop needs: from the pool it was forked from, or from
 * the environment it was spawned with. */
struct serve {
    int fd;
    pid_t parent;
    size_t max_result;
    bool want_rss;          /* report the growth of the resident size */
    uint64_t rss0;          /* the resident size when it started */
    const pk_registry *reg; /* spawned: tasks by name; forked: NULL */
    char *shared;           /* the shared region here, or NULL */
    size_t shared_size;
};

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

/* This process's resident bytes now (/proc/self/statm), or 0. Not the
 * peak (getrusage's ru_maxrss): a fork starts with its parent's, a
 * spawned copy inherits it across exec, and a task that used memory and
 * gave it back has not leaked. */
static uint64_t
rss_now(void)
{
    unsigned long size, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* How much the resident size grew since the worker started. */
static uint64_t
rss_growth(const struct serve *sv)
{
    uint64_t now = rss_now();

    return now > sv->rss0 ? now - sv->rss0 : 0;
}

/* The task's function and bytes: the header's function (a fork has this
 * program's addresses) or the name's in the registry (a spawned copy),
 * the bytes read or in the shared region. A failure is a reply. */
static int
find_task(const struct serve *sv, const struct pp_task_head *h,
          const char *name, void *data, pk_named_fn *fn,
          const void **in, pk_error *err)
{
    uint64_t off = h->shared - 1;

    *fn = (pk_named_fn)(uintptr_t)h->fn;
    if (!*fn && (!sv->reg || pk_registry_lookup(sv->reg, name, fn) != 0))
        return pk_error_set(err, PK_EINVAL, 0, "no task '%s' in the "
                            "worker's registry", name);
    *in = data;
    if (!h->shared)
        return 0;
    if (!sv->shared || off > sv->shared_size ||
        h->len > sv->shared_size - off)
        return pk_error_set(err, PK_EINVAL, 0, "task '%s': its bytes are "
                            "not in the shared region", name);
    *in = sv->shared + off;
    return 0;
}

/* Runs one task and writes its reply. Returns 0 or -errno (the socket). */
static int
run_task(const struct serve *sv, const struct pp_task_head *h)
{
    char name[128];
    void *data;
    const void *in = NULL;
    pk_named_fn fn;
    pk_result res = { 0 };
    pk_error err = { 0 };
    int rc = read_task_body(sv->fd, h, name, sizeof name, &data);

    if (rc == -ENOMEM)
        return pk__pp_send_reply(sv->fd, PK_ENOMEM, ENOMEM,
                                 "no memory in the worker for the task's "
                                 "bytes", NULL, 0, 0);
    if (rc)
        return rc;
    rc = find_task(sv, h, name, data, &fn, &in, &err);
    if (rc == 0 && h->chunk) /* max_result per call; the lot to DATA_MAX */
        rc = pk__chunk_run(fn, in, (size_t)h->len, NULL, sv->max_result,
                           &res, &err);
    else if (rc == 0)
        rc = fn(in, (size_t)h->len, NULL, &res, &err);
    free(data);
    if (rc > 0)
        rc = PK_ETASK;
    if (rc == 0 && res.len > (h->chunk ? PK_PROCPOOL_DATA_MAX
                                       : sv->max_result)) {
        snprintf(err.msg, sizeof err.msg,
                 "task '%s' returned %zu bytes, over max_result (%zu)", name,
                 res.len, sv->max_result);
        rc = PK_ETOOBIG;
    }
    rc = pk__pp_send_reply(sv->fd, rc, err.sys, err.msg[0] ? err.msg : NULL,
                           res.value, res.value ? res.len : 0,
                           sv->want_rss ? rss_growth(sv) : 0);
    if (res.value && res.free_fn)
        res.free_fn(res.value);
    /* What the task printed shows now, not when the worker ends. */
    fflush(stdout);
    fflush(stderr);
    return rc;
}

/* Serves tasks until the socket closes or the parent is gone. */
static _Noreturn void
serve(struct serve *sv)
{
    struct pollfd p = { .fd = sv->fd, .events = POLLIN };

    if (sv->want_rss)
        sv->rss0 = rss_now();
    for (;;) {
        struct pp_task_head h;
        int n = poll(&p, 1, PARENT_CHECK_MS);

        if (n == 0 && getppid() != sv->parent)
            _exit(0);
        if (n <= 0)
            continue;
        if (pk__pp_read_all(sv->fd, &h, sizeof h) != 0 ||
            h.magic != PK__PP_TASK_MAGIC || run_task(sv, &h) != 0)
            _exit(0);
    }
}

/* Ready: the pool lends a worker only once it said so, so a task's bytes
 * are written only to a worker that reads them. */
static void
say_hello(int fd)
{
    struct pp_hello hello = { PK__PP_HELLO_MAGIC, (int32_t)getpid() };

    if (pk__pp_write_all(fd, &hello, sizeof hello) != 0)
        _exit(0); /* the pool gave up on it */
}

static _Noreturn void
child_main(struct pk_procpool *pp, int fd)
{
    struct serve sv = { .fd = fd, .parent = pp->parent,
                        .max_result = pp->max_result,
                        .want_rss = pp->max_rss_growth != 0,
                        .shared = pp->shared,
                        .shared_size = pp->shared_size };
    sigset_t none;

    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    /* The parent's unwritten output is the parent's to write. */
    __fpurge(stdout);
    __fpurge(stderr);
    if (pp->worker_init)
        pp->worker_init(pp->user);
    say_hello(fd);
    serve(&sv);
}

/* ---- a spawned worker's start -------------------------------------------- */


static _Noreturn void
bad_start(const char *why)
{
    fprintf(stderr, "poolkit: pk_procpool_worker_main: %s\n", why);
    _exit(2);
}

int
pk_procpool_worker_main(const pk_registry *reg)
{
    const char *v = getenv(PK__PP_WORKER_ENV);
    struct serve sv = { 0 };
    int shm = -1, rss = 0;
    long parent = 0;

    if (!v)
        return 0; /* not a worker: the program goes on */
    if (sscanf(v, "%d:%zu:%d:%d:%zu:%ld", &sv.fd, &sv.max_result, &rss,
               &shm, &sv.shared_size, &parent) != 6 || sv.fd < 0)
        bad_start("a malformed " PK__PP_WORKER_ENV " in the environment");
    unsetenv(PK__PP_WORKER_ENV); /* its own children are no workers */
    /* Nothing a task starts may hold the socket: the pool's end would
     * not see this worker's end (the pidfd sees its death anyway). */
    fcntl(sv.fd, F_SETFD, FD_CLOEXEC);
    if (!reg)
        bad_start("NULL registry");
    sv.reg = reg;
    sv.want_rss = rss != 0;
    sv.parent = (pid_t)parent;
    if (shm >= 0) {
        void *p = mmap(NULL, sv.shared_size, PROT_READ | PROT_WRITE,
                       MAP_SHARED, shm, 0);
        if (p == MAP_FAILED)
            bad_start("cannot map the shared region");
        sv.shared = p;
        close(shm);
    }
    say_hello(sv.fd);
    serve(&sv);
}

/* ---- the pool's side ------------------------------------------------------- */

/* This program's arguments (/proc/self/cmdline), for a spawned copy: it
 * runs main() as this process did, up to pk_procpool_worker_main. A list
 * of pointers into one allocation; NULL without memory or /proc. */
static char **
own_argv(void)
{
    char *buf = NULL, **argv;
    size_t len = 0, cap = 0, n = 0;
    FILE *f = fopen("/proc/self/cmdline", "r");

    if (!f)
        return NULL;
    for (;;) {
        if (len == cap) {
            char *b = realloc(buf, cap = cap ? 2 * cap : 4096);
            if (!b)
                break;
            buf = b;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        if (k == 0)
            break;
        len += k;
    }
    fclose(f);
    if (!buf || len == 0 || len == cap || buf[len - 1] != '\0') {
        free(buf);
        return NULL;
    }
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\0';
    argv = malloc((n + 1) * sizeof *argv + len);
    if (argv) {
        char *copy = (char *)(argv + n + 1);
        memcpy(copy, buf, len);
        for (size_t i = 0, k = 0; i < len; i += strlen(copy + i) + 1)
            argv[k++] = copy + i;
        argv[n] = NULL;
    }
    free(buf);
    return argv;
}

/* environ, without a PK__PP_WORKER_ENV, plus ours (one allocation). */
static char **
worker_env(struct pk_procpool *pp, int fd)
{
    extern char **environ;
    size_t n = 0, k = 0;
    char **env, *ours;

    while (environ && environ[n]) /* clearenv() leaves it NULL */
        n++;
    env = malloc((n + 2) * sizeof *env + 160);
    if (!env)
        return NULL;
    ours = (char *)(env + n + 2);
    snprintf(ours, 160, PK__PP_WORKER_ENV "=%d:%zu:%d:%d:%zu:%ld", fd,
             pp->max_result, pp->max_rss_growth != 0, pp->shared_fd,
             pp->shared_size, (long)pp->parent);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], PK__PP_WORKER_ENV "=", sizeof PK__PP_WORKER_ENV))
            env[k++] = environ[i];
    env[k++] = ours;
    env[k] = NULL;
    return env;
}

/* Whether fd is readable (or hung up) within ms: the core's wait, and a
 * poll() of its own for ms 0 (pk_wait_fd does not look at fd once its
 * deadline has passed). */
static bool
readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n;

    if (ms > 0)
        return pk_wait_fd(fd, POLLIN, pk_deadline_after(ms)) == 1;
    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == 1;
}

/* Waits up to START_MS for a worker's hello: end of file
 * (it exited: the pool holds no copy of its end) ends the wait at once.
 * 0 or -1. */
static int
await_hello(int fd, pid_t pid)
{
    struct pp_hello h;

    if (!readable(fd, START_MS))
        return 1; /* the time passed */
    if (pk__pp_read_all(fd, &h, sizeof h) != 0)
        return -1;
    return h.magic == PK__PP_HELLO_MAGIC && h.pid == (int32_t)pid ? 0 : -1;
}

/* The real path of this program: the worker's name in ps and top (the
 * path /proc/self/exe would make it "exe"). */
static void
own_path(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);

    if (n <= 0 || (size_t)n >= size - 1)
        snprintf(buf, size, "/proc/self/exe");
    else
        buf[n] = '\0';
}

/* A pidfd for pid (Linux 5.3): its death is POLLIN on it, and a signal
 * or a wait through it cannot reach a process that took the pid over.
 * -1 where the kernel has none. */
static int
pidfd_of(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0);

    if (fd >= 0)
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return fd >= 0 ? (int)fd : -1;
}

/* How long a reply may stall half-way before the worker counts as
 * broken (a worker writes its reply whole, so only a stopped or stuck
 * one stalls). */
#define IO_STALL_MS 10000

static void
set_stall_timeout(int fd)
{
    struct timeval tv = { IO_STALL_MS / 1000, 0 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Starts a fresh copy of this program with its end of the socket (child,
 * closed here whatever happens) and, with a shared region, the region's
 * memfd, both inherited under their own numbers (the file actions clear
 * close-on-exec), and waits for its hello. */
static int
spawn_worker(struct pk_procpool *pp, struct pp_worker *w, int child,
             pk_error *err)
{
    char **argv = own_argv(), **env = worker_env(pp, child), path[4096];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    int e;

    own_path(path, sizeof path);
    if (!argv || !env) {
        free(argv);
        free(env);
        close(child);
        return pk_error_set(err, PK_ECREATE, ENOMEM, "pk_procpool: no "
                            "memory (or no /proc) to spawn a worker");
    }
    sigemptyset(&none);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child, child);
    if (pp->shared_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, pp->shared_fd, pp->shared_fd);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    e = posix_spawn(&w->pid, path, &fa, &at, argv, env);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    free(env);
    close(child); /* now: a worker that exits is end of file at once */
    if (e)
        return pk_error_set(err, PK_ECREATE, e, "pk_procpool: posix_spawn "
                            "of %s failed (errno %d)", path, e);
    w->pidfd = pidfd_of(w->pid);
    return 0;
}

/* w on pp->starting (false: the pool is closing: no start). */
static bool
starting_add(struct pk_procpool *pp, struct pp_worker *w)
{
    bool ok;

    pk__lock_acquire(&pp->lock);
    ok = !pp->closing;
    if (ok) {
        w->snext = pp->starting;
        pp->starting = w;
    }
    pk__lock_release(&pp->lock);
    return ok;
}

static void
starting_remove(struct pk_procpool *pp, struct pp_worker *w)
{
    pk__lock_acquire(&pp->lock);
    for (struct pp_worker **p = &pp->starting; *p; p = &(*p)->snext)
        if (*p == w) {
            *p = w->snext;
            break;
        }
    pk__lock_release(&pp->lock);
}

void
pk__pp_worker_stop_starts(struct pk_procpool *pp)
{
    pk__lock_acquire(&pp->lock);
    pp->closing = true;
    for (struct pp_worker *w = pp->starting; w; w = w->snext)
        shutdown(w->fd, SHUT_RDWR); /* its hello wait sees end of file */
    pk__lock_release(&pp->lock);
}

/* Waits for w's hello; a worker that is not ready by then is killed. */
static int
await_start(struct pk_procpool *pp, struct pp_worker *w, pk_error *err)
{
    const char *hint = pp->spawn ? " (does main() call "
                                   "pk_procpool_worker_main first?)"
                                 : " (in worker_init?)";
    char how[96];
    int e = -1, sys;

    if (starting_add(pp, w)) {
        e = await_hello(w->fd, w->pid);
        starting_remove(pp, w);
    }

    if (e > 0) {
        pk__pp_worker_kill(w);
        return pk_error_set(err, PK_ECREATE, 0, "pk_procpool: worker %d was "
                            "not ready within %d ms%s", (int)w->pid,
                            START_MS, hint);
    }
    if (e < 0) {
        pk__pp_worker_reap(w, 100);
        pk__pp_worker_describe(w, how, sizeof how, &sys);
        return pk_error_set(err, PK_ECREATE, sys, "pk_procpool: worker %d "
                            "%s before it was ready%s", (int)w->pid, how,
                            hint);
    }
    return 0;
}

int
pk__pp_worker_create(void *user, void **res, pk_error *err)
{
    struct pk_procpool *pp = user;
    struct pp_worker *w = pk__calloc(1, sizeof *w);
    int sv[2], rc = 0;

    if (!w)
        return pk_error_set(err, PK_ENOMEM, ENOMEM,
                            "pk_procpool: no memory for a worker");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        int e = errno;
        pk__free(w);
        return pk_error_set(err, PK_ECREATE, e,
                            "pk_procpool: socketpair failed (errno %d)", e);
    }
    w->fd = sv[0];
    w->status = -1;
    w->pidfd = -1;
    if (pp->spawn) {
        rc = spawn_worker(pp, w, sv[1], err); /* closes sv[1] once
                                                 spawned */
    } else if ((w->pid = fork()) == 0) {
        close(sv[0]);
        child_main(pp, sv[1]);
    } else {
        int e = errno;
        close(sv[1]);
        if (w->pid < 0)
            rc = pk_error_set(err, PK_ECREATE, e,
                              "pk_procpool: fork failed (errno %d)", e);
        else
            w->pidfd = pidfd_of(w->pid);
    }
    if (rc == 0)
        rc = await_start(pp, w, err); /* a killed worker is reaped */
    if (rc) {
        close(sv[0]);
        if (w->pidfd >= 0)
            close(w->pidfd);
        pk__free(w);
        return rc;
    }
    /* A reply stalled half-way (a stopped worker) does not hold the
     * supervisor for ever: it is a broken worker after IO_STALL_MS. */
    set_stall_timeout(w->fd);
    atomic_fetch_add_explicit(&pp->workers_started, 1, memory_order_relaxed);
    *res = w;
    return 0;
}

int
pk__pp_worker_check(void *user, void *res, pk_error *err)
{
    struct pp_worker *w = res;

    (void)user;
    if (!pk__pp_worker_ended(w) && !readable(w->fd, 0))
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

/* Reaps w if it ended (flags 0: waits for it): through its pidfd when it
 * has one (no pid reused since can be hit), else by pid. w->status gets
 * a waitpid status, or -1 when someone else reaped it (ECHILD). Returns
 * whether it is reaped. */
static bool
wait_for(struct pp_worker *w, int flags)
{
    siginfo_t si;
    pid_t r;
    int st, rc;

    if (w->pidfd >= 0) {
        memset(&si, 0, sizeof si);
        do
            rc = waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | flags);
        while (rc < 0 && errno == EINTR);
        if (rc == 0 && si.si_pid == 0)
            return false; /* WNOHANG: still running */
        w->reaped = true;
        w->status = rc < 0 ? -1
                    : si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8
                                               : si.si_status & 0x7f;
        return true;
    }
    do
        r = waitpid(w->pid, &st, flags);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    w->reaped = true;
    w->status = r == w->pid ? st : -1; /* ECHILD: reaped by someone else */
    return true;
}

/* SIGKILL to w, through its pidfd when it has one. */
static void
kill_worker(const struct pp_worker *w)
{
    if (w->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
    else
        kill(w->pid, SIGKILL);
}

bool
pk__pp_worker_readable(const struct pp_worker *w)
{
    return readable(w->fd, 0);
}

bool
pk__pp_worker_ended(const struct pp_worker *w)
{
    return w->reaped || (w->pidfd >= 0 && readable(w->pidfd, 0));
}

void
pk__pp_worker_reap(struct pp_worker *w, int wait_ms)
{
    for (int waited = 0; !w->reaped; waited++) {
        if (wait_for(w, WNOHANG))
            return;
        if (waited >= wait_ms) {
            kill_worker(w);
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
    kill_worker(w);
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
    if (w->pidfd >= 0)
        close(w->pidfd);
    atomic_fetch_add_explicit(&pp->workers_retired, 1, memory_order_relaxed);
    pk__free(w);
}

void
pk__pp_worker_forget(void *user, void *res)
{
    struct pp_worker *w = res;

    (void)user;
    close(w->fd); /* no shutdown: the parent's worker must go on */
    if (w->pidfd >= 0)
        close(w->pidfd);
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
