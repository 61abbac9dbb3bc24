/* examples/support/throwaway_pg.h - a throwaway PostgreSQL cluster for the
 * examples and the demo, started and removed through
 * tests/support/pg_server.sh.
 *
 * throwaway_pg_start starts a cluster (a unix socket in its directory,
 * TCP on a free port of 127.0.0.1, trust auth, TLS when openssl is
 * installed) in a directory of its own, with a guard process that removes
 * it however the program ends (examples/support/throwaway.h).
 *
 * Uses no libpq, so it builds wherever the examples build. */
#ifndef POOLKIT_EXAMPLES_THROWAWAY_PG_H
#define POOLKIT_EXAMPLES_THROWAWAY_PG_H

#include <stddef.h>

#include "throwaway.h"

struct throwaway_pg {
    struct throwaway t; /* t.dir: pg_server.sh's DIR, the socket's
                           directory */
    int port;         /* the TCP port, also in the socket's name */
    int tls;          /* 1: the server accepts TLS (sslmode=require) */
    char no_tls[160]; /* tls 0: pg_server.sh's reason, if it gave one */
};

enum {
    THROWAWAY_PG_OK = THROWAWAY_OK,
    THROWAWAY_PG_FAILED = THROWAWAY_FAILED, /* msg says what failed */
    THROWAWAY_PG_ABSENT = THROWAWAY_ABSENT  /* PostgreSQL's server is not
                                               installed */
};

/* Starts a cluster. Returns THROWAWAY_PG_OK (pg filled: stop it with
 * throwaway_pg_stop), THROWAWAY_PG_ABSENT (the server binaries or
 * pg_server.sh are not here; nothing is left behind) or
 * THROWAWAY_PG_FAILED (nothing is left behind either); msg says why on
 * failure. pg_server.sh is found through $PK_PG_SERVER, then
 * tests/support/ under the working directory, then the source tree the
 * program was built in (build/MODE/..., found from /proc/self/exe). */
int throwaway_pg_start(struct throwaway_pg *pg, char *msg, size_t n);

/* Stops the cluster and removes its directory, waiting until that is
 * done. Safe to call twice. */
void throwaway_pg_stop(struct throwaway_pg *pg);

/* The conninfo an example runs against: PK_PG_CONNINFO when set, else a
 * throwaway cluster put in *pg (*started set to 1: stop it at the end),
 * its unix socket, user postgres, application_name prog. Returns 0, or
 * the exit status to end with (2: no server to run against, said on
 * stderr with how to give one; 1: the cluster would not start). */
int throwaway_pg_conninfo(const char *prog, char *ci, size_t n,
                          struct throwaway_pg *pg, int *started);

#endif /* POOLKIT_EXAMPLES_THROWAWAY_PG_H */
