/* lib/exec/chunk.c - a chunk of named calls (PK_TASK_CHUNK): pk_map packs
 * several items of one named task into one executor task, so a process
 * pool pays one round trip for many tiny items (Python's chunksize).
 *
 * The bytes are the same in every process of one program (a fork, or a
 * spawned copy): native byte order, no padding, read with memcpy.
 *
 *   calls     u32 magic CALLS, u32 n; n times: u64 len, len bytes
 *   outcomes  u32 magic OUTCOMES, u32 n; n times: i32 code, i32 sys,
 *             u32 msg_len, u64 len, msg_len bytes of message, len bytes
 *             of result (code 0 only)
 *
 * The executor runs the calls in turn (pk__chunk_run) and returns the
 * outcomes as the chunk's result; the map reads them back per item
 * (pk__chunk_next). A cancel asked for between calls cancels the calls
 * not run yet (each its PK_ECANCELED outcome); those that ran keep
 * theirs. A call gets no future (self NULL): the chunk's is not its to
 * finish. */
#include <poolkit/executor.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../kit/alloc.h"
#include "executor_int.h"

#define CALLS 0x706b6363u    /* "pkcc" */
#define OUTCOMES 0x706b636fu /* "pkco" */
#define HEAD (2 * sizeof(uint32_t))
#define OUT_REC (3 * sizeof(int32_t) + sizeof(uint64_t))

/* ---- calls: packed by the map -------------------------------------------- */

size_t
pk__chunk_calls_size(size_t n, size_t bytes)
{
    return HEAD + n * sizeof(uint64_t) + bytes;
}

char *
pk__chunk_calls_begin(void *buf, uint32_t n)
{
    uint32_t h[2] = { CALLS, n };

    memcpy(buf, h, HEAD);
    return (char *)buf + HEAD;
}

char *
pk__chunk_calls_add(char *p, const void *data, size_t len)
{
    uint64_t l = len;

    memcpy(p, &l, sizeof l);
    p += sizeof l;
    if (len)
        memcpy(p, data, len);
    return p + len;
}

/* ---- running: on the executor's side ----------------------------------------- */

/* A growing buffer of outcomes (pk__alloc'd). */
struct out_buf {
    char *p;
    size_t len, cap;
};

static int
out_reserve(struct out_buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 256;
    char *p;

    if (b->len + more <= b->cap)
        return 0;
    while (cap < b->len + more)
        cap *= 2;
    p = pk__alloc(cap);
    if (!p)
        return PK_ENOMEM;
    if (b->len)
        memcpy(p, b->p, b->len);
    pk__free(b->p);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
out_add(struct out_buf *b, int code, const pk_error *e, const pk_result *r)
{
    int32_t c = code, sys = e->sys;
    uint32_t msg_len = code ? (uint32_t)strnlen(e->msg, sizeof e->msg) : 0;
    uint64_t len = code == 0 && r->value ? r->len : 0;
    char *p;

    if (out_reserve(b, OUT_REC + msg_len + len))
        return PK_ENOMEM;
    p = b->p + b->len;
    memcpy(p, &c, sizeof c);
    memcpy(p + 4, &sys, sizeof sys);
    memcpy(p + 8, &msg_len, sizeof msg_len);
    memcpy(p + 12, &len, sizeof len);
    memcpy(p + OUT_REC, e->msg, msg_len);
    if (len)
        memcpy(p + OUT_REC + msg_len, r->value, (size_t)len);
    b->len += OUT_REC + msg_len + (size_t)len;
    return 0;
}

/* Runs one call into b. The call gets no future of its own (self NULL):
 * the chunk's is not its to finish. A result over max_each bytes is that
 * call's PK_ETOOBIG. */
static int
run_call(pk_named_fn fn, const void *data, size_t len, size_t max_each,
         struct out_buf *b)
{
    pk_result r;
    pk_error e;
    int rc;

    memset(&r, 0, sizeof r);
    pk_error_clear(&e);
    rc = fn(data, len, NULL, &r, &e);
    if (rc > 0)
        rc = pk_error_set(&e, PK_ETASK, rc, "task returned %d: tasks "
                          "return 0 or a negative code", rc);
    if (rc == 0 && r.value && r.len > max_each)
        rc = pk_error_set(&e, PK_ETOOBIG, 0, "the result (%zu bytes) is "
                          "over the limit (%zu)", r.len, max_each);
    if (rc && !e.msg[0])
        snprintf(e.msg, sizeof e.msg, "%s", pk_strerror(rc));
    rc = out_add(b, rc, &e, &r);
    if (r.value && r.free_fn)
        r.free_fn(r.value);
    return rc;
}

int
pk__chunk_run(pk_named_fn fn, const void *data, size_t len, pk_future *self,
              size_t max_each, pk_result *out, pk_error *err)
{
    const char *p = data, *end = p + len;
    struct out_buf b = { NULL, 0, 0 };
    pk_error cancelled;
    uint32_t h[2];
    int rc = 0;

    if (len < HEAD)
        return pk_error_set(err, PK_EINVAL, 0, "not a chunk of calls");
    memcpy(h, p, HEAD);
    p += HEAD;
    if (h[0] != CALLS)
        return pk_error_set(err, PK_EINVAL, 0, "not a chunk of calls");
    rc = out_reserve(&b, HEAD);
    if (rc)
        return rc;
    b.len = HEAD;
    pk_error_set(&cancelled, PK_ECANCELED, 0, "cancelled before it ran");
    for (uint32_t i = 0; rc == 0 && i < h[1]; i++) {
        uint64_t l = 0;

        if ((size_t)(end - p) >= sizeof l)
            memcpy(&l, p, sizeof l);
        if ((size_t)(end - p) < sizeof l ||
            l > (size_t)(end - p) - sizeof l) {
            rc = pk_error_set(err, PK_EINVAL, 0, "a chunk cut short");
            break;
        }
        /* Once a cancel is asked for, the calls not run yet are
         * cancelled; those that ran keep their outcomes. */
        if (pk_future_cancel_requested(self))
            rc = out_add(&b, PK_ECANCELED, &cancelled, &(pk_result){ 0 });
        else
            rc = run_call(fn, p + sizeof l, (size_t)l, max_each, &b);
        p += sizeof l + (size_t)l;
    }
    if (rc) {
        pk__free(b.p);
        return rc;
    }
    h[0] = OUTCOMES;
    memcpy(b.p, h, HEAD);
    out->value = b.p;
    out->len = b.len;
    out->free_fn = pk__free;
    return 0;
}

/* ---- outcomes: read back by the map ------------------------------------------- */

int
pk__chunk_begin(struct pk__chunk_reader *rd, const void *data, size_t len,
                uint32_t n)
{
    uint32_t h[2];

    if (!data || len < HEAD)
        return PK_EINVAL;
    memcpy(h, data, HEAD);
    if (h[0] != OUTCOMES || h[1] != n)
        return PK_EINVAL;
    rd->p = (const char *)data + HEAD;
    rd->end = (const char *)data + len;
    return 0;
}

int
pk__chunk_next(struct pk__chunk_reader *rd, int *code, pk_error *e,
               pk_result *res)
{
    int32_t c, sys;
    uint32_t msg_len;
    uint64_t len;

    memset(res, 0, sizeof *res);
    if ((size_t)(rd->end - rd->p) < OUT_REC)
        return PK_EINVAL;
    memcpy(&c, rd->p, 4);
    memcpy(&sys, rd->p + 4, 4);
    memcpy(&msg_len, rd->p + 8, 4);
    memcpy(&len, rd->p + 12, 8);
    rd->p += OUT_REC;
    if (msg_len > (size_t)(rd->end - rd->p) ||
        len > (size_t)(rd->end - rd->p) - msg_len || c > 0)
        return PK_EINVAL;
    pk_error_clear(e);
    e->code = c;
    e->sys = sys;
    memcpy(e->msg, rd->p, msg_len < sizeof e->msg ? msg_len
                                                  : sizeof e->msg - 1);
    e->msg[msg_len < sizeof e->msg ? msg_len : sizeof e->msg - 1] = '\0';
    rd->p += msg_len;
    *code = c;
    if (c == 0 && len) {
        res->value = pk__alloc((size_t)len);
        if (!res->value)
            return PK_ENOMEM;
        memcpy(res->value, rd->p, (size_t)len);
        res->len = (size_t)len;
        res->free_fn = pk__free;
    }
    rd->p += len;
    return 0;
}
