/* tests/integration/server_script.h - finding and running the scripts
 * that start throwaway servers for the integration tests
 * (tests/support/pg_server.sh, http_server.sh). Header-only (static
 * inline): tests/support/ is linked into every test, these only into the
 * integration tests. */
#ifndef PK_TEST_SERVER_SCRIPT_H
#define PK_TEST_SERVER_SCRIPT_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Fills out (PATH_MAX bytes) with tests/support/NAME: $ENV when set,
 * else under the working directory, else under the source tree the
 * binary was built in (it lives in build/MODE/tests/). Returns 0 when it
 * is readable. */
static inline int
script_find(char *out, const char *name, const char *env)
{
    const char *e = env ? getenv(env) : NULL;
    char exe[PATH_MAX - 64];

    if (e) {
        snprintf(out, PATH_MAX, "%s", e);
        return access(out, R_OK);
    }
    snprintf(out, PATH_MAX, "tests/support/%s", name);
    if (access(out, R_OK) == 0)
        return 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(out, PATH_MAX, "%s/../../../tests/support/%s", exe, name);
    return access(out, R_OK);
}

/* Runs `bash SCRIPT CMD DIR`, output discarded; returns its exit status
 * (128 if it did not exit). */
static inline int
script_run(const char *script, const char *cmd, const char *dir)
{
    char line[PATH_MAX * 2 + 64];
    snprintf(line, sizeof line, "bash '%s' %s '%s' >/dev/null", script, cmd,
             dir);
    int st = system(line);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#endif /* PK_TEST_SERVER_SCRIPT_H */
