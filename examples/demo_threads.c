/* examples/demo_threads.c - poolkit-demo's thread pool rows.
 *
 *   thread      a thread created and joined per task, vs the same task
 *               submitted to a pk_threadpool and its future waited on
 *               (the process row, demo_procpool.c, does the same with
 *               processes)
 *   io-scaling  64 IO-bound tasks (each waits 2 ms for a server's reply on
 *               a socketpair) on a pool of 1 thread vs a pool of 16: the
 *               ratio is the speed-up threads give to IO-bound work
 *
 * The tiny task is demo_tiny_work (demo_rows.h), checked by the caller. */
#include <poolkit/threadpool.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "demo_rows.h"

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the tiny task ------------------------------------------------------ */


struct tiny {
    unsigned in, out;
};

static void *
tiny_thread_main(void *arg)
{
    struct tiny *t = arg;
    t->out = demo_tiny_work(t->in);
    return NULL;
}

static int
tiny_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct tiny *t = arg;
    (void)self;
    (void)out;
    (void)err;
    t->out = demo_tiny_work(t->in);
    return 0;
}

struct tiny_row {
    pk_threadpool *tp;
    struct demo_result *out;
    unsigned seq;
};

/* The pooled way for the thread row: submit, wait, check. */
static int
tiny_pooled(void *arg)
{
    struct tiny_row *r = arg;
    struct tiny t = { r->seq++, 0 };
    pk_future *f;
    int rc = pk_threadpool_submit(r->tp, tiny_task, &t, &f);

    if (rc) {
        demo_note(r->out, "pk_threadpool_submit: %s", pk_strerror(rc));
        return -1;
    }
    rc = pk_future_wait(f, 10000);
    if (rc == 0)
        rc = pk_future_result(f, NULL);
    pk_future_release(f);
    if (rc) {
        demo_note(r->out, "pooled task: %s", pk_strerror(rc));
        return -1;
    }
    if (t.out != demo_tiny_work(t.in)) {
        demo_note(r->out, "pooled task: wrong result");
        return -1;
    }
    return 0;
}

/* One worker that never retires: the pool a task reuses. */
static int
tiny_pool(struct tiny_row *r, struct demo_result *out)
{
    pk_threadpool_options o = { .min_threads = 1, .max_threads = 1,
                                .keep_alive_ms = PK_NEVER };
    int rc = pk_threadpool_create(&r->tp, &o);

    if (rc)
        demo_note(out, "pk_threadpool_create: %s", pk_strerror(rc));
    return rc;
}

/* ---- row: thread -------------------------------------------------------- */

static int
thread_per_use(void *arg)
{
    struct tiny_row *r = arg;
    struct tiny t = { r->seq++, 0 };
    pthread_t th;
    int e = pthread_create(&th, NULL, tiny_thread_main, &t);

    if (e) {
        demo_note(r->out, "pthread_create: %s", strerror(e));
        return -1;
    }
    e = pthread_join(th, NULL);
    if (e || t.out != demo_tiny_work(t.in)) {
        demo_note(r->out, "pthread_join: %s", e ? strerror(e) : "bad result");
        return -1;
    }
    return 0;
}

/* Measures per_use against the same tiny task on a pooled thread. */
static int
tiny_row_run(struct demo_ctx *ctx, struct demo_result *out,
             demo_op_fn per_use)
{
    struct tiny_row r = { NULL, out, 1 };
    struct demo_pair pair = { per_use, tiny_pooled, &r };
    int rc;

    if (tiny_pool(&r, out))
        return -1;
    rc = demo_measure(ctx, &pair, out);
    pk_threadpool_destroy(r.tp);
    return rc;
}

int
demo_row_thread(struct demo_ctx *ctx, struct demo_result *out)
{
    return tiny_row_run(ctx, out, thread_per_use);
}

/* ---- row: io-scaling ---------------------------------------------------- */

/* IO_TASKS connections to a server thread that answers each one-byte
 * request IO_DELAY_NS after it arrives. A task sends its request and
 * blocks in read() until the answer comes: IO-bound, almost no CPU. */
#define IO_TASKS 64
#define IO_THREADS 16
#define IO_DELAY_NS 2000000u

struct io_server {
    int cfd[IO_TASKS];      /* client ends, one per task */
    int sfd[IO_TASKS];      /* server ends */
    uint64_t due[IO_TASKS]; /* 0: waiting for a request; else answer then */
    int stop[2];            /* a pipe: closing stop[1] stops the server */
    pthread_t thread;
    int failed;             /* errno of a server failure, or 0 */
};

static void *
io_server_main(void *arg)
{
    struct io_server *s = arg;
    char c;

    for (;;) {
        uint64_t now = now_ns(), next = UINT64_MAX;
        struct timespec ts, *tsp = NULL;
        fd_set rd;
        int maxfd = s->stop[0];

        FD_ZERO(&rd);
        FD_SET(s->stop[0], &rd);
        for (int i = 0; i < IO_TASKS; i++) {
            if (s->due[i] == 0) {
                FD_SET(s->sfd[i], &rd);
                if (s->sfd[i] > maxfd)
                    maxfd = s->sfd[i];
            } else if (s->due[i] < next) {
                next = s->due[i];
            }
        }
        if (next != UINT64_MAX) {
            uint64_t d = next > now ? next - now : 0;
            ts.tv_sec = (time_t)(d / 1000000000u);
            ts.tv_nsec = (long)(d % 1000000000u);
            tsp = &ts;
        }
        /* pselect: a nanosecond timeout, where poll rounds to 1 ms. */
        if (pselect(maxfd + 1, &rd, NULL, NULL, tsp, NULL) < 0) {
            if (errno == EINTR)
                continue;
            s->failed = errno;
            break;
        }
        if (FD_ISSET(s->stop[0], &rd))
            break;
        now = now_ns();
        for (int i = 0; i < IO_TASKS; i++) {
            if (s->due[i] && s->due[i] <= now) {
                c = 'R';
                if (write(s->sfd[i], &c, 1) != 1) {
                    s->failed = errno ? errno : EIO;
                    return NULL;
                }
                s->due[i] = 0;
            } else if (s->due[i] == 0 && FD_ISSET(s->sfd[i], &rd)) {
                if (read(s->sfd[i], &c, 1) != 1) {
                    s->failed = errno ? errno : EPIPE;
                    return NULL;
                }
                s->due[i] = now + IO_DELAY_NS;
            }
        }
    }
    return NULL;
}

static void
io_server_close(struct io_server *s, int n)
{
    for (int i = 0; i < n; i++) {
        close(s->cfd[i]);
        close(s->sfd[i]);
    }
}

/* Returns 0, or an errno value. */
static int
io_server_start(struct io_server *s)
{
    int e, i;

    memset(s, 0, sizeof *s);
    for (i = 0; i < IO_TASKS; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            e = errno;
            io_server_close(s, i);
            return e;
        }
        s->cfd[i] = sv[0];
        s->sfd[i] = sv[1];
        if (sv[1] >= FD_SETSIZE) {
            io_server_close(s, i + 1);
            return EMFILE;
        }
    }
    if (pipe(s->stop) != 0) {
        e = errno;
        io_server_close(s, IO_TASKS);
        return e;
    }
    e = pthread_create(&s->thread, NULL, io_server_main, s);
    if (e) {
        close(s->stop[0]);
        close(s->stop[1]);
        io_server_close(s, IO_TASKS);
    }
    return e;
}

static void
io_server_stop(struct io_server *s)
{
    close(s->stop[1]);
    pthread_join(s->thread, NULL);
    close(s->stop[0]);
    io_server_close(s, IO_TASKS);
}

/* A pk_task_fn: one request and its answer on the task's connection. */
static int
io_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    int *fd = arg;
    char c = 'Q';

    (void)self;
    (void)out;
    if (write(*fd, &c, 1) != 1)
        return pk_error_set(err, PK_ECONNECT, errno, "send: %s",
                            strerror(errno));
    for (;;) {
        ssize_t r = read(*fd, &c, 1);
        if (r == 1 && c == 'R')
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return pk_error_set(err, PK_ECONNECT, r < 0 ? errno : 0,
                            "receive: %s",
                            r < 0 ? strerror(errno) : "bad answer");
    }
}

struct io_row {
    struct io_server srv;
    pk_threadpool *one, *many;
    struct demo_result *out;
};

/* One operation: all IO_TASKS tasks through pool tp, waited for. */
static int
io_wave(struct io_row *r, pk_threadpool *tp)
{
    pk_future *f[IO_TASKS];
    size_t n = 0;
    int rc = 0;

    for (; n < IO_TASKS; n++) {
        rc = pk_threadpool_submit(tp, io_task, &r->srv.cfd[n], &f[n]);
        if (rc) {
            demo_note(r->out, "pk_threadpool_submit: %s", pk_strerror(rc));
            break;
        }
    }
    if (n > 0) {
        /* Abandoning tasks still on our sockets would break the next
         * wave, so wait for them without limit: the server answers each
         * in 2 ms. */
        int w = pk_future_wait_all(f, n, PK_WAIT_FOREVER);
        if (w && !rc) {
            demo_note(r->out, "pk_future_wait_all: %s", pk_strerror(w));
            rc = w;
        }
    }
    for (size_t i = 0; i < n; i++) {
        int t = pk_future_result(f[i], NULL);
        if (t && !rc) {
            pk_error err;
            if (pk_future_error(f[i], &err) == 0)
                demo_note(r->out, "IO task: %s", err.msg);
            else
                demo_note(r->out, "IO task: %s", pk_strerror(t));
            rc = t;
        }
        pk_future_release(f[i]);
    }
    if (!rc && r->srv.failed) {
        demo_note(r->out, "server: %s", strerror(r->srv.failed));
        rc = -1;
    }
    return rc ? -1 : 0;
}

static int
io_one(void *arg)
{
    struct io_row *r = arg;
    return io_wave(r, r->one);
}

static int
io_many(void *arg)
{
    struct io_row *r = arg;
    return io_wave(r, r->many);
}

int
demo_row_io_scaling(struct demo_ctx *ctx, struct demo_result *out)
{
    static struct io_row r; /* fd arrays: keep them off the stack */
    pk_threadpool_options o1 = { .min_threads = 1, .max_threads = 1,
                                 .keep_alive_ms = PK_NEVER };
    pk_threadpool_options on = { .min_threads = IO_THREADS,
                                 .max_threads = IO_THREADS,
                                 .keep_alive_ms = PK_NEVER };
    struct demo_pair pair = { io_one, io_many, &r };
    int rc, e;

    r.one = r.many = NULL;
    r.out = out;
    e = io_server_start(&r.srv);
    if (e) {
        demo_note(out, "starting the IO server: %s", strerror(e));
        return -1;
    }
    rc = pk_threadpool_create(&r.one, &o1);
    if (rc == 0)
        rc = pk_threadpool_create(&r.many, &on);
    if (rc) {
        demo_note(out, "pk_threadpool_create: %s", pk_strerror(rc));
    } else {
        rc = demo_measure(ctx, &pair, out);
        /* One operation is a wave of IO_TASKS tasks: report per task. */
        out->per_use_ns /= IO_TASKS;
        out->pooled_ns /= IO_TASKS;
        out->ops *= IO_TASKS;
    }
    pk_threadpool_destroy(r.many);
    pk_threadpool_destroy(r.one);
    io_server_stop(&r.srv);
    return rc;
}
