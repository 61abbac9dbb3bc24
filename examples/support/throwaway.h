/* examples/support/throwaway.h - a throwaway server for the examples and
 * the demo, started and removed through one of tests/support/'s scripts
 * (pg_server.sh, http_server.sh), with a guard process that removes it
 * however the program ends. throwaway_pg.h and throwaway_http.h are the
 * two users; each adds what its server tells a client (ports, a CA).
 *
 * throwaway_start makes a directory with mkdtemp, has the script check
 * that the server's binaries are here (`SCRIPT probe -`), and starts a
 * guard process beside it that runs `SCRIPT start TOP/NAME`. throwaway_stop
 * makes the guard run `SCRIPT clean TOP/NAME` and remove the directory.
 * If the program ends without calling it (Ctrl-C, a crash, exit()), the
 * guard does the same: it waits in its own process group, so the
 * terminal's Ctrl-C does not reach it, for the end of a pipe whose other
 * end only this program holds, and cleans up when the pipe closes.
 *
 * Uses no libpq or libcurl, so it builds wherever the examples build. */
#ifndef POOLKIT_EXAMPLES_THROWAWAY_H
#define POOLKIT_EXAMPLES_THROWAWAY_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

/* Which server: the script and where things go. */
struct throwaway_kind {
    const char *script; /* its file name in tests/support/: "pg_server.sh" */
    const char *env;    /* an environment variable naming the script's
                           path instead: "PK_PG_SERVER" */
    const char *name;   /* short: the directory /tmp/poolkit-NAME.XXXXXX
                           and the script's DIR in it, TOP/NAME */
    int open_top;       /* 1: TOP is made mode 0711, for a server that
                           runs as another user (postgres, as root) */
};

struct throwaway {
    char top[64];         /* the mkdtemp directory */
    char dir[80];         /* TOP/NAME: the script's DIR */
    char err[80];         /* TOP/script.err: the script's stderr */
    char script[PATH_MAX]; /* the script's path */
    char prefix[32];      /* "pg_server: ": how its messages start */
    pid_t guard;          /* the guard process; 0 when none runs */
    int guard_fd;         /* the write end of its pipe; -1 when closed */
};

enum {
    THROWAWAY_OK = 0,
    THROWAWAY_FAILED = 1, /* msg says what failed */
    THROWAWAY_ABSENT = 3  /* the server or the script is not here */
};

/* Starts a server of kind k. Returns THROWAWAY_OK (t filled; the script
 * ran `start` and exited 0: stop it with throwaway_stop), THROWAWAY_ABSENT
 * (the server's binaries or the script are not here; nothing is left
 * behind) or THROWAWAY_FAILED (nothing is left behind either); msg says
 * why on failure. The script is found through k->env, then tests/support/
 * under the working directory, then the source tree the program was built
 * in (build/MODE/..., found from /proc/self/exe). */
int throwaway_start(struct throwaway *t, const struct throwaway_kind *k,
                    char *msg, size_t n);

/* Stops the server and removes its directory, waiting until that is done.
 * Safe to call twice. */
void throwaway_stop(struct throwaway *t);

/* Copies the script's first message line from its stderr (without its
 * "NAME_server: " prefix; else the first line) into buf; "" when there is
 * none. */
void throwaway_message(const struct throwaway *t, char *buf, size_t n);

#endif /* POOLKIT_EXAMPLES_THROWAWAY_H */
