/* examples/support/throwaway_pg.c - a throwaway PostgreSQL cluster
 * through tests/support/pg_server.sh (see the header): throwaway.c starts
 * it with its guard; this file reads what pg_server.sh left in its
 * directory (the port, whether TLS is on). */
#include "throwaway_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct throwaway_kind pg_kind = {
    .script = "pg_server.sh", .env = "PK_PG_SERVER", .name = "pg",
    .open_top = 1, /* as root the server runs as `postgres`, which must
                      reach TOP/pg */
};

void
throwaway_pg_stop(struct throwaway_pg *pg)
{
    throwaway_stop(&pg->t);
}

/* Reads the port pg_server.sh wrote; returns it, or 0. */
static int
read_port(const struct throwaway_pg *pg)
{
    char path[sizeof pg->t.dir + 8];
    int port = 0;
    FILE *f;

    snprintf(path, sizeof path, "%s/port", pg->t.dir);
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
    char tls[sizeof pg->t.dir + 8];
    int rc;

    memset(pg, 0, sizeof *pg);
    rc = throwaway_start(&pg->t, &pg_kind, msg, n);
    if (rc != THROWAWAY_OK)
        return rc;
    pg->port = read_port(pg);
    if (pg->port <= 0) {
        throwaway_message(&pg->t, msg, n);
        if (!msg[0])
            snprintf(msg, n, "pg_server.sh start wrote no port");
        throwaway_pg_stop(pg);
        return THROWAWAY_PG_FAILED;
    }
    snprintf(tls, sizeof tls, "%s/tls", pg->t.dir);
    pg->tls = access(tls, F_OK) == 0;
    if (!pg->tls)
        throwaway_message(&pg->t, pg->no_tls, sizeof pg->no_tls);
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
             "application_name=%s", pg->t.dir, pg->port, prog);
    printf("server: a throwaway cluster, unix socket in %s\n", pg->t.dir);
    return 0;
}
