/* pools/process/wire.c - the frames between the pool and a worker.
 *
 * One stream socket per worker, both ends blocking. The pool writes a
 * task only to an idle worker, which reads it whole before it runs it,
 * and the worker writes its reply whole; so neither side waits on the
 * other for long (a worker that is not reading, stuck in worker_init or
 * before pk_procpool_worker_main, holds the pool's write of a task
 * larger than the socket's buffer: a known limit). Sends use
 * MSG_NOSIGNAL: a peer that is gone is EPIPE, never a SIGPIPE. Both ends
 * run the same program (a fork, or a copy of it), so the headers are
 * sent as they are in memory. */
#define _GNU_SOURCE /* MSG_NOSIGNAL */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pp_int.h"

int
pk__pp_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int
pk__pp_read_all(int fd, void *p, size_t n)
{
    char *c = p;

    while (n > 0) {
        ssize_t k = recv(fd, c, n, 0);
        if (k == 0)
            return -EPIPE;
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int
pk__pp_send_task(int fd, pk_named_fn fn, const char *name, const void *data,
                 size_t len, uint64_t shared, bool chunk)
{
    struct pp_task_head h = { .magic = PK__PP_TASK_MAGIC,
                              .name_len = (uint32_t)strlen(name),
                              .fn = (uint64_t)(uintptr_t)fn,
                              .len = len,
                              .shared = shared,
                              .chunk = chunk };
    int rc = pk__pp_write_all(fd, &h, sizeof h);

    if (rc == 0)
        rc = pk__pp_write_all(fd, name, h.name_len);
    if (rc == 0 && len && !shared)
        rc = pk__pp_write_all(fd, data, len);
    return rc;
}

int
pk__pp_send_reply(int fd, int code, int sys, const char *msg,
                  const void *data, size_t len, uint64_t rss)
{
    struct pp_reply_head h = { .magic = PK__PP_REPLY_MAGIC,
                               .code = code,
                               .sys = sys,
                               .msg_len = msg ? (uint32_t)strlen(msg) : 0,
                               .len = code == 0 ? len : 0,
                               .rss = rss };
    int rc = pk__pp_write_all(fd, &h, sizeof h);

    if (rc == 0 && h.msg_len)
        rc = pk__pp_write_all(fd, msg, h.msg_len);
    if (rc == 0 && h.len)
        rc = pk__pp_write_all(fd, data, h.len);
    return rc;
}

/* Reads n bytes and keeps the first size - 1 of them, NUL-terminated. */
static int
read_message(int fd, size_t n, char *buf, size_t size)
{
    size_t keep = n < size ? n : size - 1;
    char skip[256];
    int rc = pk__pp_read_all(fd, buf, keep);

    buf[rc == 0 ? keep : 0] = '\0';
    for (n -= keep; rc == 0 && n > 0;) {
        size_t k = n < sizeof skip ? n : sizeof skip;
        rc = pk__pp_read_all(fd, skip, k);
        n -= k;
    }
    return rc;
}

int
pk__pp_read_reply(int fd, size_t max, struct pp_reply *r)
{
    struct pp_reply_head h;
    int rc = pk__pp_read_all(fd, &h, sizeof h);

    memset(r, 0, sizeof *r);
    if (rc)
        return rc;
    if (h.magic != PK__PP_REPLY_MAGIC || h.len > max ||
        (h.code != 0 && h.len != 0) || h.code > 0)
        return -EPROTO;
    r->code = h.code;
    r->sys = h.sys;
    r->rss = h.rss;
    rc = read_message(fd, h.msg_len, r->msg, sizeof r->msg);
    if (rc || h.len == 0)
        return rc;
    r->data = pk__alloc((size_t)h.len);
    if (!r->data)
        return -ENOMEM;
    r->len = (size_t)h.len;
    rc = pk__pp_read_all(fd, r->data, r->len);
    if (rc) {
        pk__free(r->data);
        r->data = NULL;
        r->len = 0;
    }
    return rc;
}
