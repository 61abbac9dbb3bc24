/* examples/support/throwaway_pg.c - start and remove a throwaway
 * PostgreSQL cluster through tests/support/pg_server.sh (see the header).
 *
 * Every command runs through posix_spawnp, never fork() followed by our
 * own code: the demo calls this after it has run thread pools, and a
 * child of a threaded process may only call async-signal-safe functions.
 *
 * The guard is a `bash -c` script in a process group of its own that
 * runs `pg_server.sh start`, writes its exit status on its stdout (a pipe
 * we read), then reads its stdin, another pipe: that read returns at end
 * of file, which comes when the write end closes, and the only write end
 * is ours (close-on-exec, so no other child inherits a copy that would
 * keep the pipe open). Then it runs `pg_server.sh clean` and removes the
 * directory. Since one process starts and cleans, in that order, a demo
 * stopped while the cluster starts leaves nothing behind either: the
 * clean waits for the start to end. */
#include "throwaway_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The guard's script ($1: pg_server.sh, $2: the directory): ignore the
 * terminal's signals (and SIGPIPE: we may be gone when it reports),
 * start the cluster in $2/pg, report, wait for the end of stdin, stop the
 * cluster and remove the directory. */
static const char guard_sh[] =
    "trap '' INT HUP QUIT PIPE; "
    "bash \"$1\" start \"$2/pg\" </dev/null >/dev/null "
    "2>>\"$2/script.err\"; "
    "echo $? 2>/dev/null; exec >/dev/null; read -r _; "
    "bash \"$1\" clean \"$2/pg\" </dev/null >/dev/null; rm -rf \"$2\"";

static char script[PATH_MAX];

/* Sets script to the path of pg_server.sh; returns 0 or -1. A relative
 * path is fine: nothing here changes the working directory. */
static int
find_script(void)
{
    const char *env = getenv("PK_PG_SERVER");
    const char *up[] = { "/../..", "/../../.." }; /* build/MODE[/examples] */
    char exe[PATH_MAX - 64], *slash;
    ssize_t n;

    if (env && *env) {
        snprintf(script, sizeof script, "%s", env);
        return access(script, R_OK);
    }
    snprintf(script, sizeof script, "tests/support/pg_server.sh");
    if (access(script, R_OK) == 0)
        return 0;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    for (size_t i = 0; i < sizeof up / sizeof up[0]; i++) {
        snprintf(script, sizeof script, "%s%s/tests/support/pg_server.sh",
                 exe, up[i]);
        if (access(script, R_OK) == 0)
            return 0;
    }
    return -1;
}

/* Spawns argv with stdin from in_fd (-1: /dev/null), stdout to out_fd
 * (-1: /dev/null) and stderr appended to err_path (NULL: ours), in a
 * process group of its own when own_group. Returns 0 (*pid set) or an
 * errno value. */
static int
spawn(char *const argv[], int in_fd, int out_fd, const char *err_path,
      int own_group, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t dfl;
    short flags = POSIX_SPAWN_SETSIGDEF;
    int e;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* The demo ignores SIGPIPE; the scripts should not inherit that. */
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    if (own_group) {
        flags |= POSIX_SPAWN_SETPGROUP;
        posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawnattr_setflags(&attr, flags);
    if (in_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (err_path)
        posix_spawn_file_actions_addopen(&fa, 2, err_path,
                                         O_WRONLY | O_CREAT | O_APPEND, 0644);
    e = posix_spawnp(pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return e;
}

/* Waits for our child pid; returns its exit status, or 128 + signal. */
static int
reap(pid_t pid)
{
    int st;

    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return 127;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs `bash pg_server.sh CMD DIR`, stderr into err_path. Returns its exit
 * status (127: it could not run). */
static int
run_script(const char *cmd, const char *dir, const char *err_path)
{
    char *argv[] = { "bash", script, (char *)cmd, (char *)dir, NULL };
    pid_t pid;

    if (spawn(argv, -1, -1, err_path, 0, &pid) != 0)
        return 127;
    return reap(pid);
}

/* Copies pg_server.sh's first message line from path (without its
 * "pg_server: " prefix) into buf; "" when there is none. */
static void
script_message(const char *path, char *buf, size_t n)
{
    static const char pre[] = "pg_server: ";
    char line[512];
    FILE *f = fopen(path, "r");

    buf[0] = '\0';
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, pre, sizeof pre - 1) == 0) {
            snprintf(buf, n, "%s", line + sizeof pre - 1);
            break;
        }
        if (!buf[0])
            snprintf(buf, n, "%s", line); /* else the first line */
    }
    fclose(f);
}

/* A pipe whose two ends close on exec; returns 0 or an errno value. */
static int
cloexec_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return errno;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
}

/* Reads the guard's report, pg_server.sh start's exit status, from fd.
 * Returns it, or -1 when the guard ended without one. */
static int
read_status(int fd)
{
    char buf[16];
    size_t len = 0;

    while (len < sizeof buf - 1) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return len > 0 && buf[0] >= '0' && buf[0] <= '9' ? atoi(buf) : -1;
}

/* Starts the guard, which starts the cluster. Returns pg_server.sh
 * start's exit status (0: running), -1 if the guard gave none, or
 * -2 - errno if the guard could not start. */
static int
guard_start(struct throwaway_pg *pg)
{
    char *argv[] = { "bash", "-c", (char *)guard_sh, "throwaway-pg-guard",
                     script, pg->top, NULL };
    int in[2], out[2], e, st;

    e = cloexec_pipe(in);
    if (e)
        return -2 - e;
    e = cloexec_pipe(out);
    if (e) {
        close(in[0]);
        close(in[1]);
        return -2 - e;
    }
    e = spawn(argv, in[0], out[1], NULL, 1, &pg->guard);
    close(in[0]);
    close(out[1]);
    if (e) {
        close(in[1]);
        close(out[0]);
        pg->guard = 0;
        return -2 - e;
    }
    pg->guard_fd = in[1];
    st = read_status(out[0]);
    close(out[0]);
    return st;
}

void
throwaway_pg_stop(struct throwaway_pg *pg)
{
    if (pg->guard_fd >= 0) {
        close(pg->guard_fd); /* the guard's read returns: it cleans up */
        pg->guard_fd = -1;
    }
    if (pg->guard > 0) {
        reap(pg->guard);
        pg->guard = 0;
    }
}

/* Reads the port pg_server.sh wrote; returns it, or 0. */
static int
read_port(const struct throwaway_pg *pg)
{
    char path[sizeof pg->dir + 8];
    int port = 0;
    FILE *f;

    snprintf(path, sizeof path, "%s/port", pg->dir);
    f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%d", &port) != 1)
            port = 0;
        fclose(f);
    }
    return port;
}

int
throwaway_pg_start(struct throwaway_pg *pg, char *msg, size_t n)
{
    char err_path[sizeof pg->top + 16], tls[sizeof pg->dir + 8];
    int rc;

    memset(pg, 0, sizeof *pg);
    pg->guard_fd = -1;
    if (find_script() != 0) {
        snprintf(msg, n, "tests/support/pg_server.sh not found (run from "
                 "poolkit's source tree, or set PK_PG_SERVER)");
        return THROWAWAY_PG_ABSENT;
    }
    snprintf(pg->top, sizeof pg->top, "/tmp/poolkit-pg.XXXXXX");
    if (!mkdtemp(pg->top)) {
        snprintf(msg, n, "mkdtemp: %s", strerror(errno));
        return THROWAWAY_PG_FAILED;
    }
    snprintf(pg->dir, sizeof pg->dir, "%s/pg", pg->top);
    snprintf(err_path, sizeof err_path, "%s/script.err", pg->top);
    rc = run_script("probe", "-", err_path);
    if (rc != 0) {
        script_message(err_path, msg, n);
        unlink(err_path);
        rmdir(pg->top);
        return rc == 3 ? THROWAWAY_PG_ABSENT : THROWAWAY_PG_FAILED;
    }
    /* As root the server runs as `postgres`, which must reach top/pg. */
    chmod(pg->top, 0711);
    rc = guard_start(pg);
    if (rc <= -2) {
        snprintf(msg, n, "starting the guard: %s", strerror(-2 - rc));
        unlink(err_path);
        rmdir(pg->top);
        return THROWAWAY_PG_FAILED;
    }
    pg->port = rc == 0 ? read_port(pg) : 0;
    if (pg->port <= 0) {
        script_message(err_path, msg, n);
        if (!msg[0])
            snprintf(msg, n, "pg_server.sh start failed (exit %d)", rc);
        throwaway_pg_stop(pg);
        return rc == 3 ? THROWAWAY_PG_ABSENT : THROWAWAY_PG_FAILED;
    }
    snprintf(tls, sizeof tls, "%s/tls", pg->dir);
    pg->tls = access(tls, F_OK) == 0;
    if (!pg->tls)
        script_message(err_path, pg->no_tls, sizeof pg->no_tls);
    return THROWAWAY_PG_OK;
}

int
throwaway_pg_conninfo(const char *prog, char *ci, size_t n,
                      struct throwaway_pg *pg, int *started)
{
    const char *env = getenv("PK_PG_CONNINFO");
    char why[256];
    int rc;

    *started = 0;
    if (env && *env) {
        snprintf(ci, n, "%s", env);
        printf("server: PK_PG_CONNINFO\n");
        return 0;
    }
    rc = throwaway_pg_start(pg, why, sizeof why);
    if (rc == THROWAWAY_PG_ABSENT) {
        fprintf(stderr,
                "%s: no PostgreSQL to run against: %s\n"
                "Point it at a server with a libpq conninfo, for example\n"
                "  PK_PG_CONNINFO='host=/var/run/postgresql dbname=postgres' "
                "%s\n"
                "or, with PostgreSQL's server installed, run it from "
                "poolkit's source tree:\nit then starts a throwaway server "
                "of its own.\n", prog, why, prog);
        return 2;
    }
    if (rc != THROWAWAY_PG_OK) {
        fprintf(stderr, "%s: starting a throwaway cluster: %s\n", prog, why);
        return 1;
    }
    *started = 1;
    snprintf(ci, n, "host=%s port=%d user=postgres dbname=postgres "
             "application_name=%s", pg->dir, pg->port, prog);
    printf("server: a throwaway cluster, unix socket in %s\n", pg->dir);
    return 0;
}
