/* examples/support/throwaway.c - start and remove a throwaway server
 * through one of tests/support/'s scripts (see the header).
 *
 * Every command runs through posix_spawnp, never fork() followed by our
 * own code: the demo calls this after it has run thread pools, and a
 * child of a threaded process may only call async-signal-safe functions.
 *
 * The guard is a `bash -c` script in a process group of its own that
 * runs `SCRIPT start DIR`, writes its exit status on its stdout (a pipe
 * we read), then reads its stdin, another pipe: that read returns at end
 * of file, which comes when the write end closes, and the only write end
 * is ours (close-on-exec, so no other child inherits a copy that would
 * keep the pipe open). Then it runs `SCRIPT clean DIR` and removes the
 * directory. Since one process starts and cleans, in that order, a
 * program stopped while the server starts leaves nothing behind either:
 * the clean waits for the start to end. */
#include "throwaway.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The guard's script ($1: the server script, $2: the top directory, $3:
 * the server's directory in it): ignore the terminal's signals (and
 * SIGPIPE: we may be gone when it reports), start the server, report,
 * wait for the end of stdin, stop the server and remove the directory. */
static const char guard_sh[] =
    "trap '' INT HUP QUIT PIPE; "
    "bash \"$1\" start \"$3\" </dev/null >/dev/null "
    "2>>\"$2/script.err\"; "
    "echo $? 2>/dev/null; exec >/dev/null; read -r _; "
    "bash \"$1\" clean \"$3\" </dev/null >/dev/null; rm -rf \"$2\"";

/* Sets t->script to the path of k's script; returns 0 or -1. A relative
 * path is fine: nothing here changes the working directory. */
static int
find_script(struct throwaway *t, const struct throwaway_kind *k)
{
    const char *env = getenv(k->env);
    const char *up[] = { "/../..", "/../../.." }; /* build/MODE[/examples] */
    char exe[PATH_MAX - 64], *slash;
    ssize_t n;

    if (env && *env) {
        snprintf(t->script, sizeof t->script, "%s", env);
        return access(t->script, R_OK);
    }
    snprintf(t->script, sizeof t->script, "tests/support/%s", k->script);
    if (access(t->script, R_OK) == 0)
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
        snprintf(t->script, sizeof t->script, "%.*s%s/tests/support/%s",
                 PATH_MAX - 100, exe, up[i], k->script);
        if (access(t->script, R_OK) == 0)
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

/* Runs `bash SCRIPT CMD DIR`, stderr into t->err. Returns its exit status
 * (127: it could not run). */
static int
run_script(const struct throwaway *t, const char *cmd, const char *dir)
{
    char *argv[] = { "bash", (char *)t->script, (char *)cmd, (char *)dir,
                     NULL };
    pid_t pid;

    if (spawn(argv, -1, -1, t->err, 0, &pid) != 0)
        return 127;
    return reap(pid);
}

void
throwaway_message(const struct throwaway *t, char *buf, size_t n)
{
    size_t pre = strlen(t->prefix);
    char line[512];
    FILE *f = fopen(t->err, "r");

    buf[0] = '\0';
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, t->prefix, pre) == 0) {
            snprintf(buf, n, "%s", line + pre);
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

/* Reads the guard's report, the script's start exit status, from fd.
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

/* Starts the guard, which starts the server. Returns the script's start
 * exit status (0: running), -1 if the guard gave none, or -2 - errno if
 * the guard could not start. */
static int
guard_start(struct throwaway *t, const struct throwaway_kind *k)
{
    char name[48];
    char *argv[] = { "bash", "-c", (char *)guard_sh, name, t->script,
                     t->top, t->dir, NULL };
    int in[2], out[2], e, st;

    snprintf(name, sizeof name, "throwaway-%s-guard", k->name);
    e = cloexec_pipe(in);
    if (e)
        return -2 - e;
    e = cloexec_pipe(out);
    if (e) {
        close(in[0]);
        close(in[1]);
        return -2 - e;
    }
    e = spawn(argv, in[0], out[1], NULL, 1, &t->guard);
    close(in[0]);
    close(out[1]);
    if (e) {
        close(in[1]);
        close(out[0]);
        t->guard = 0;
        return -2 - e;
    }
    t->guard_fd = in[1];
    st = read_status(out[0]);
    close(out[0]);
    return st;
}

void
throwaway_stop(struct throwaway *t)
{
    if (t->guard_fd >= 0) {
        close(t->guard_fd); /* the guard's read returns: it cleans up */
        t->guard_fd = -1;
    }
    if (t->guard > 0) {
        reap(t->guard);
        t->guard = 0;
    }
}

int
throwaway_start(struct throwaway *t, const struct throwaway_kind *k,
                char *msg, size_t n)
{
    int rc;

    memset(t, 0, sizeof *t);
    t->guard_fd = -1;
    msg[0] = '\0';
    snprintf(t->prefix, sizeof t->prefix, "%.*s: ",
             (int)strcspn(k->script, "."), k->script);
    if (find_script(t, k) != 0) {
        snprintf(msg, n, "tests/support/%s not found (run from poolkit's "
                 "source tree, or set %s)", k->script, k->env);
        return THROWAWAY_ABSENT;
    }
    snprintf(t->top, sizeof t->top, "/tmp/poolkit-%s.XXXXXX", k->name);
    if (!mkdtemp(t->top)) {
        snprintf(msg, n, "mkdtemp: %s", strerror(errno));
        return THROWAWAY_FAILED;
    }
    snprintf(t->dir, sizeof t->dir, "%s/%s", t->top, k->name);
    snprintf(t->err, sizeof t->err, "%s/script.err", t->top);
    rc = run_script(t, "probe", "-");
    if (rc != 0) {
        throwaway_message(t, msg, n);
        unlink(t->err);
        rmdir(t->top);
        return rc == 3 ? THROWAWAY_ABSENT : THROWAWAY_FAILED;
    }
    if (k->open_top)
        chmod(t->top, 0711);
    rc = guard_start(t, k);
    if (rc <= -2) {
        snprintf(msg, n, "starting the guard: %s", strerror(-2 - rc));
        unlink(t->err);
        rmdir(t->top);
        return THROWAWAY_FAILED;
    }
    if (rc != 0) {
        throwaway_message(t, msg, n);
        if (!msg[0])
            snprintf(msg, n, "%s start failed (exit %d)", k->script, rc);
        throwaway_stop(t);
        return rc == 3 ? THROWAWAY_ABSENT : THROWAWAY_FAILED;
    }
    return THROWAWAY_OK;
}
