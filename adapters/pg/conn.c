/* adapters/pg/conn.c - one connection: the record the core pools, waiting
 * on libpq by a deadline (pk_wait_fd, pool.h), error text and SQLSTATE
 * packing (pg_int.h).
 *
 * The statement cache maps statement text to a name prepared on this
 * connection. A statement is prepared on its second use, not its first,
 * so a program that builds one-off statements (values written into the
 * text) does not pay a Parse, a DEALLOCATE and an eviction per query: the
 * first use marks it SEEN and runs it unnamed. Slots are few (64 by
 * default), so a linear scan by hash is enough. */
#include "pg_int.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's MAKE_SQLSTATE: 6 bits a character, the first lowest. */
#define PGSIXBIT(ch) (((ch) - '0') & 0x3F)

/* ---- errors ----------------------------------------------------------------- */

int
pk__pg_set_error(pk_error *err, int code, int sys, const char *prefix,
                 const char *msg)
{
    char buf[PK_ERROR_MSG_SIZE];
    size_t n = 0;

    for (const char *s = msg ? msg : ""; *s && n + 3 < sizeof buf; s++) {
        if (*s != '\n') {
            buf[n++] = *s;
        } else if (s[1] != '\0') {
            buf[n++] = ';';
            buf[n++] = ' ';
        }
    }
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t' ||
                     buf[n - 1] == ';'))
        n--;
    buf[n] = '\0';
    return pk_error_set(err, code, sys, "%s%s", prefix, buf);
}

int
pk__pg_pack_sqlstate(const char *s)
{
    int v = 0;
    if (!s || strlen(s) != 5)
        return 0;
    for (int i = 0; i < 5; i++)
        v += PGSIXBIT(s[i]) << (6 * i);
    return v;
}

int
pk_pg_sqlstate(int sys, char out[6])
{
    if (!out)
        return PK_EINVAL;
    char buf[6];
    if ((unsigned)sys >> 30)
        return PK_EINVAL;
    for (int i = 0; i < 5; i++) {
        char ch = (char)(((sys >> (6 * i)) & 0x3F) + '0');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z')))
            return PK_EINVAL;
        buf[i] = ch;
    }
    buf[5] = '\0';
    memcpy(out, buf, sizeof buf);
    return 0;
}

/* ---- reading results and running the pool's own statements -------------- */

int
pk__pg_failed(const PGresult *r)
{
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    return s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE ||
           s == PGRES_NONFATAL_ERROR;
}

int
pk__pg_read(PGconn *c, uint64_t deadline, PGresult **keep)
{
    for (;;) {
        int f = PQflush(c);
        if (f < 0)
            return -1;
        while (f == 0 && !PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return 1;
            if (!keep) {
                PQclear(r);
                continue;
            }
            if (*keep && pk__pg_failed(*keep)) {
                PQclear(r); /* keep the first failure */
            } else {
                PQclear(*keep);
                *keep = r;
            }
            if (PQstatus(c) != CONNECTION_OK)
                return -1;
        }
        int w = pk_wait_fd(PQsocket(c), f == 1 ? (POLLIN | POLLOUT) : POLLIN,
                           deadline);
        if (w == 0)
            return 0;
        if (w < 0 || !PQconsumeInput(c))
            return -1;
    }
}

int
pk__pg_run(PGconn *c, const char *sql, uint64_t deadline, PGresult **last,
           pk_error *err)
{
    PGresult *r = NULL;
    int rc = 0;

    if (last)
        *last = NULL;
    if (!PQsendQuery(c, sql))
        return pk__pg_set_error(err, PK_EADAPTER, 0, "", PQerrorMessage(c));
    int done = pk__pg_read(c, deadline, &r);
    if (done == 0)
        rc = pk_error_set(err, PK_ETIMEDOUT, 0, "timed out");
    else if (r && pk__pg_failed(r))
        rc = pk__pg_set_error(
            err, PK_EADAPTER,
            pk__pg_pack_sqlstate(PQresultErrorField(r, PG_DIAG_SQLSTATE)), "",
            PQresultErrorMessage(r));
    else if (done < 0 || !r)
        rc = pk__pg_set_error(err, PK_EADAPTER, 0, "", PQerrorMessage(c));
    if (rc == 0 && last)
        *last = r;
    else
        PQclear(r);
    return rc;
}

/* ---- the record and its statement cache --------------------------------------- */

struct pk__pg_conn *
pk__pg_conn_new(pk_pg_pool *pool, PGconn *c, int ncache)
{
    struct pk__pg_conn *pc = calloc(1, sizeof *pc);
    if (!pc)
        return NULL;
    if (ncache > 0) {
        pc->cache = calloc((size_t)ncache, sizeof *pc->cache);
        if (!pc->cache) {
            free(pc);
            return NULL;
        }
        pc->ncache = ncache;
    }
    pc->conn = c;
    pc->pool = pool;
    return pc;
}

void
pk__pg_conn_free(struct pk__pg_conn *pc)
{
    for (int i = 0; i < pc->ncache; i++)
        free(pc->cache[i].sql);
    free(pc->cache);
    free(pc->reset_sql);
    free(pc);
}

static uint64_t
hash_text(const char *s)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211u;
    }
    return h;
}

static void
slot_clear(struct pk__pg_stmt *s)
{
    free(s->sql);
    memset(s, 0, sizeof *s);
}

/* The slot to reuse: a free one, else the least recently used live one
 * (STALE ones wait for their DEALLOCATE). NULL if all are STALE. */
static struct pk__pg_stmt *
victim(struct pk__pg_conn *pc)
{
    struct pk__pg_stmt *best = NULL;
    for (int i = 0; i < pc->ncache; i++) {
        struct pk__pg_stmt *s = &pc->cache[i];
        if (s->state == PK__PG_STMT_FREE)
            return s;
        if (s->state != PK__PG_STMT_STALE && (!best || s->used < best->used))
            best = s;
    }
    return best;
}

struct pk__pg_stmt *
pk__pg_stmt_find(struct pk__pg_conn *pc, const char *sql)
{
    uint64_t h = hash_text(sql);
    for (int i = 0; i < pc->ncache; i++) {
        struct pk__pg_stmt *s = &pc->cache[i];
        if (s->state != PK__PG_STMT_FREE && s->hash == h &&
            strcmp(s->sql, sql) == 0)
            return s;
    }
    return NULL;
}

void
pk__pg_stmt_touch(struct pk__pg_conn *pc, struct pk__pg_stmt *s)
{
    s->uses++;
    s->used = ++pc->clock;
}

struct pk__pg_stmt *
pk__pg_stmt_add(struct pk__pg_conn *pc, const char *sql, int *evicted,
                unsigned *evicted_id)
{
    *evicted = 0;
    struct pk__pg_stmt *s = victim(pc);
    if (!s)
        return NULL;
    char *copy = strdup(sql);
    if (!copy)
        return NULL;
    if (s->state == PK__PG_STMT_READY) {
        *evicted = 1;
        *evicted_id = s->id;
    }
    slot_clear(s);
    s->state = PK__PG_STMT_SEEN;
    s->hash = hash_text(sql);
    s->sql = copy;
    pk__pg_stmt_touch(pc, s);
    return s;
}

void
pk__pg_stmt_forget_all(struct pk__pg_conn *pc)
{
    for (int i = 0; i < pc->ncache; i++)
        slot_clear(&pc->cache[i]);
    pc->nstale = 0;
}

void
pk__pg_stmt_mark_stale(struct pk__pg_conn *pc, struct pk__pg_stmt *s)
{
    if (s->state == PK__PG_STMT_READY) {
        s->state = PK__PG_STMT_STALE;
        pc->nstale++;
    }
}

int
pk__pg_stmt_has_stale(const struct pk__pg_conn *pc)
{
    return pc->nstale > 0;
}

char *
pk__pg_stmt_take_stale(struct pk__pg_conn *pc)
{
    size_t n = 0;
    for (int i = 0; i < pc->ncache; i++)
        n += pc->cache[i].state == PK__PG_STMT_STALE;
    if (n == 0)
        return NULL;
    /* "DEALLOCATE pk_s4294967295; " is 27 characters. */
    size_t cap = n * 32 + 1, len = 0;
    char *sql = malloc(cap);
    if (!sql)
        return NULL;
    sql[0] = '\0';
    for (int i = 0; i < pc->ncache; i++) {
        struct pk__pg_stmt *s = &pc->cache[i];
        if (s->state != PK__PG_STMT_STALE)
            continue;
        len += (size_t)snprintf(sql + len, cap - len,
                                "DEALLOCATE " PK__PG_STMT_PREFIX "%u; ",
                                s->id);
        slot_clear(s);
    }
    pc->nstale = 0;
    return sql;
}
