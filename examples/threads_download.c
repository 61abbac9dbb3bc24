/* examples/threads_download.c - IO-bound work on a thread pool: "download
 * these links" one after the other, then on 8 pooled threads.
 *
 *   threads_download [THREADS]     (THREADS: 1..256, default 8)
 *
 * Nothing leaves the machine. Each "download" connects (a socketpair) to a
 * small server thread in this process, sends "GET url", and reads the
 * response until the server closes. The server is one event loop: it
 * answers each request after 40-69 ms (the URL decides), like a remote
 * site would, so a download spends nearly all its time blocked in read().
 * That is the case threads are for: while one thread waits, the others
 * wait too, in parallel, and the total time drops by about the number of
 * threads.
 *
 * This one is the stand-in: it runs anywhere, with no network, no server
 * and no libcurl, and shows only the thread pool. The real thing is
 * examples/http_download.c: HTTP downloads through pk_http_exec on a
 * pk_http_pool shared by the pool's tasks, against a throwaway nginx or
 * the URLs you give it, with the connections each run opened and reused
 * (built when the http adapter is).
 *
 * Exit status: 0 when every download succeeded both ways, 1 if one
 * failed (each failure is printed), 2 on a usage error. */
#include <poolkit/threadpool.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const urls[] = {
    "https://example.org/",
    "https://example.org/about",
    "https://example.com/index.html",
    "https://docs.example.net/guide/intro",
    "https://docs.example.net/guide/threads",
    "https://docs.example.net/guide/processes",
    "https://news.example.com/today",
    "https://news.example.com/archive/2024",
    "https://shop.example.org/cart",
    "https://shop.example.org/item/1042",
    "https://api.example.com/v1/status",
    "https://api.example.com/v1/users?page=2",
    "https://cdn.example.net/img/logo.png",
    "https://cdn.example.net/js/app.js",
    "https://blog.example.org/posts/pooling",
    "https://blog.example.org/posts/futures",
    "https://wiki.example.com/Thread_pool",
    "https://wiki.example.com/Process_(computing)",
    "https://mirror.example.net/pub/README",
    "https://status.example.org/",
};
#define N_URLS (sizeof urls / sizeof urls[0])

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* FNV-1a: the server derives each page's delay and size from its URL, so
 * every run serves the same pages at the same speed. */
static uint32_t
hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int
write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- the server: one thread, one event loop ----------------------------- */

#define MAX_CONNS 64
#define REQ_MAX 512

struct conn {
    int fd;          /* -1: free slot */
    size_t got;      /* request bytes read so far */
    uint64_t due;    /* 0: still reading the request; else when to answer */
    char req[REQ_MAX];
};

struct server {
    int ctl[2];      /* clients hand the server end of a socketpair over
                        ctl[1]; closing ctl[1] stops the server */
    pthread_t thread;
    struct conn conns[MAX_CONNS];
};

/* Writes the response to c's request and closes the connection. */
static void
serve(struct conn *c)
{
    char head[128], body[2048];
    const char *url;
    uint32_t h;
    size_t len, left;
    int n;

    c->req[c->got] = '\0';
    c->req[strcspn(c->req, "\r\n")] = '\0';
    if (strncmp(c->req, "GET ", 4) != 0) {
        n = snprintf(head, sizeof head, "HTTP/1.0 400 Bad Request\r\n\r\n");
        write_all(c->fd, head, (size_t)n);
        goto done;
    }
    url = c->req + 4;
    h = hash(url);
    len = 2000 + h % 60000; /* 2 to 62 KB */
    n = snprintf(head, sizeof head,
                 "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
    if (write_all(c->fd, head, (size_t)n) != 0)
        goto done;
    memset(body, 'x', sizeof body);
    for (left = len; left > 0;) {
        size_t k = left < sizeof body ? left : sizeof body;
        if (write_all(c->fd, body, k) != 0)
            break;
        left -= k;
    }
done:
    close(c->fd);
    c->fd = -1;
}

static void *
server_main(void *arg)
{
    struct server *s = arg;
    struct pollfd pfd[MAX_CONNS + 1];
    int slot[MAX_CONNS + 1];

    for (;;) {
        uint64_t now = now_ns(), next = UINT64_MAX;
        nfds_t n = 1;
        int timeout;

        pfd[0] = (struct pollfd){ .fd = s->ctl[0], .events = POLLIN };
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &s->conns[i];
            if (c->fd < 0)
                continue;
            if (c->due == 0) {
                pfd[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
                slot[n++] = i;
            } else if (c->due < next) {
                next = c->due;
            }
        }
        timeout = next == UINT64_MAX ? -1
                  : next <= now      ? 0
                                     : (int)((next - now + 999999) / 1000000);
        if (poll(pfd, n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            perror("threads_download: server: poll");
            break;
        }
        now = now_ns();
        for (int i = 0; i < MAX_CONNS; i++)
            if (s->conns[i].fd >= 0 && s->conns[i].due && s->conns[i].due <= now)
                serve(&s->conns[i]);
        for (nfds_t k = 1; k < n; k++) {
            struct conn *c = &s->conns[slot[k]];
            ssize_t r;
            if (!pfd[k].revents)
                continue;
            r = read(c->fd, c->req + c->got, REQ_MAX - 1 - c->got);
            if (r <= 0) { /* the client went away */
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->got += (size_t)r;
            if (memchr(c->req, '\n', c->got) || c->got == REQ_MAX - 1) {
                c->req[c->got] = '\0';
                c->due = now + (40 + hash(c->req) % 30) * 1000000ull;
            }
        }
        if (pfd[0].revents) {
            int fd;
            ssize_t r = read(s->ctl[0], &fd, sizeof fd);
            if (r == 0)
                break; /* ctl[1] closed: stop */
            if (r == (ssize_t)sizeof fd) {
                int i = 0;
                while (i < MAX_CONNS && s->conns[i].fd >= 0)
                    i++;
                if (i == MAX_CONNS) {
                    close(fd); /* busy: the client sees the connection drop */
                } else {
                    s->conns[i].fd = fd;
                    s->conns[i].got = 0;
                    s->conns[i].due = 0;
                }
            }
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (s->conns[i].fd >= 0)
            close(s->conns[i].fd);
    return NULL;
}

/* Returns 0, or an errno value. */
static int
server_start(struct server *s)
{
    int e;

    for (int i = 0; i < MAX_CONNS; i++)
        s->conns[i].fd = -1;
    if (pipe(s->ctl) != 0)
        return errno;
    e = pthread_create(&s->thread, NULL, server_main, s);
    if (e) {
        close(s->ctl[0]);
        close(s->ctl[1]);
    }
    return e;
}

static void
server_stop(struct server *s)
{
    close(s->ctl[1]);
    pthread_join(s->thread, NULL);
    close(s->ctl[0]);
}

/* ---- the client: one download ------------------------------------------- */

struct download {
    const char *url;
    int status;      /* HTTP status */
    size_t bytes;    /* body bytes received */
    double ms;       /* how long it took */
};

/* "Connects": makes a socketpair and hands one end to the server. */
static int
connect_server(struct server *s, int *fd, pk_error *err)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return pk_error_set(err, PK_ECONNECT, errno, "socketpair: %s",
                            strerror(errno));
    /* A write of an int to a pipe is atomic: clients never interleave. */
    if (write(s->ctl[1], &sv[1], sizeof sv[1]) != (ssize_t)sizeof sv[1]) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return pk_error_set(err, PK_ECONNECT, e, "server gone: %s",
                            strerror(e));
    }
    *fd = sv[0]; /* sv[1] is the server's now */
    return 0;
}

/* Fetches url: returns 0 with d filled, or a PK_E* code with err filled. */
static int
download(struct server *s, const char *url, struct download *d,
         pk_error *err)
{
    char buf[8192], req[REQ_MAX];
    size_t head = 0, got = 0, want = 0;
    uint64_t t0 = now_ns();
    int fd = -1, rc, n, saw_head = 0;

    d->url = url;
    rc = connect_server(s, &fd, err);
    if (rc)
        return rc;
    n = snprintf(req, sizeof req, "GET %s\r\n", url);
    if (n < 0 || (size_t)n >= sizeof req) {
        close(fd);
        return pk_error_set(err, PK_EINVAL, 0, "%s: URL too long", url);
    }
    if (write_all(fd, req, (size_t)n) != 0) {
        int e = errno;
        close(fd);
        return pk_error_set(err, PK_ECONNECT, e, "%s: send: %s", url,
                            strerror(e));
    }
    /* Read until the server closes; parse the head from the first bytes. */
    for (;;) {
        ssize_t r = read(fd, buf + head, sizeof buf - 1 - head);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return pk_error_set(err, PK_ECONNECT, e, "%s: receive: %s", url,
                                strerror(e));
        }
        if (r == 0)
            break;
        if (saw_head) {
            got += (size_t)r;
            continue;
        }
        head += (size_t)r;
        buf[head] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end && head < sizeof buf - 1)
            continue;
        if (!end || sscanf(buf, "HTTP/1.0 %d", &d->status) != 1)
            break; /* not a response we understand: reported below */
        const char *cl = strstr(buf, "Content-Length: ");
        want = cl ? strtoul(cl + 16, NULL, 10) : 0;
        got = head - (size_t)(end + 4 - buf);
        saw_head = 1;
        head = 0; /* the body is counted, not kept */
    }
    close(fd);
    if (!saw_head)
        return pk_error_set(err, PK_ECONNECT, 0,
                            "%s: connection closed without a response",
                            url);
    if (d->status == 200 && got != want)
        return pk_error_set(err, PK_ECONNECT, 0,
                            "%s: short body (%zu of %zu bytes)", url, got,
                            want);
    d->bytes = got;
    d->ms = (double)(now_ns() - t0) / 1e6;
    return 0;
}

/* ---- the pool's task ---------------------------------------------------- */

struct job {
    struct server *server;
    const char *url;
};

/* A pk_task_fn: the result is a malloc'd struct download. */
static int
download_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    struct job *j = arg;
    struct download *d = malloc(sizeof *d);
    int rc;

    (void)self;
    if (!d)
        return pk_error_set(err, PK_ENOMEM, 0, NULL);
    rc = download(j->server, j->url, d, err);
    if (rc) {
        free(d);
        return rc;
    }
    out->value = d;
    out->len = sizeof *d;
    out->free_fn = free;
    return 0;
}

static void
print_download(const struct download *d)
{
    printf("  %d %6zu bytes %5.1f ms  %s\n", d->status, d->bytes, d->ms,
           d->url);
}

/* ---- main --------------------------------------------------------------- */

/* Returns the number of failed downloads; *secs gets the wall time. */
static size_t
run_sequential(struct server *srv, double *secs)
{
    size_t failed = 0;
    uint64_t t0 = now_ns();

    for (size_t i = 0; i < N_URLS; i++) {
        struct download d;
        pk_error err;
        int rc = download(srv, urls[i], &d, &err);
        if (rc) {
            fprintf(stderr, "  FAILED %s (%s)\n", err.msg, pk_err_name(rc));
            failed++;
        } else {
            print_download(&d);
        }
    }
    *secs = (double)(now_ns() - t0) / 1e9;
    return failed;
}

/* Returns the number of failed downloads, or -1 if the pool could not run
 * at all (said why on stderr); *secs gets the wall time. */
static long
run_pooled(struct server *srv, size_t threads, double *secs)
{
    pk_threadpool_options o = { .min_threads = threads,
                                .max_threads = threads };
    pk_threadpool *tp;
    pk_future *futs[N_URLS];
    struct job jobs[N_URLS];
    size_t submitted = 0;
    long failed = 0;
    uint64_t t0;
    int rc;

    rc = pk_threadpool_create(&tp, &o);
    if (rc) {
        fprintf(stderr, "threads_download: pk_threadpool_create: %s\n",
                pk_strerror(rc));
        return -1;
    }
    t0 = now_ns();
    for (; submitted < N_URLS; submitted++) {
        jobs[submitted] = (struct job){ srv, urls[submitted] };
        rc = pk_threadpool_submit(tp, download_task, &jobs[submitted],
                                  &futs[submitted]);
        if (rc) {
            fprintf(stderr, "threads_download: pk_threadpool_submit: %s\n",
                    pk_strerror(rc));
            failed = -1;
            break;
        }
    }
    /* Every download is bounded by the server, so this is a safety net. */
    if (submitted > 0) {
        rc = pk_future_wait_all(futs, submitted, 30000);
        if (rc) {
            fprintf(stderr, "threads_download: pk_future_wait_all: %s\n",
                    pk_strerror(rc));
            failed = -1;
        }
    }
    *secs = (double)(now_ns() - t0) / 1e9;
    /* Results in input order, whatever order they finished in. */
    for (size_t i = 0; i < submitted; i++) {
        pk_result res;
        pk_error err;
        rc = pk_future_result(futs[i], &res);
        if (rc == 0) {
            print_download(res.value);
        } else if (rc != PK_EAGAIN) {
            if (pk_future_error(futs[i], &err) == 0)
                fprintf(stderr, "  FAILED %s (%s)\n", err.msg,
                        pk_err_name(err.code));
            if (failed >= 0)
                failed++;
        }
        pk_future_release(futs[i]);
    }
    /* Cancels anything still queued and joins the workers. */
    pk_threadpool_destroy(tp);
    return failed;
}

int
main(int argc, char **argv)
{
    struct server *srv;
    size_t threads = 8, failed;
    double seq_s, pool_s;
    long pool_failed;
    int e;

    if (argc > 2 || (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
                                   strcmp(argv[1], "--help") == 0))) {
        fprintf(argc > 2 ? stderr : stdout,
                "usage: threads_download [THREADS]   (1..256, default 8)\n");
        return argc > 2 ? 2 : 0;
    }
    if (argc == 2) {
        char *end;
        unsigned long v = strtoul(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || v < 1 || v > 256) {
            fprintf(stderr, "threads_download: THREADS must be 1..256, "
                            "not '%s'\n", argv[1]);
            return 2;
        }
        threads = v;
    }
    /* A server that closes early must not kill us with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    srv = calloc(1, sizeof *srv);
    if (!srv) {
        fprintf(stderr, "threads_download: out of memory\n");
        return 1;
    }
    e = server_start(srv);
    if (e) {
        fprintf(stderr, "threads_download: starting the server: %s\n",
                strerror(e));
        free(srv);
        return 1;
    }

    printf("%zu downloads, one after the other:\n", N_URLS);
    failed = run_sequential(srv, &seq_s);

    printf("\nthe same %zu downloads on a pk_threadpool of %zu threads "
           "(results in input order):\n", N_URLS, threads);
    pool_failed = run_pooled(srv, threads, &pool_s);

    server_stop(srv);
    free(srv);

    printf("\n%-12s %6.3f s\n", "sequential:", seq_s);
    if (pool_failed >= 0) {
        char label[32];
        snprintf(label, sizeof label, "%zu thread%s:", threads,
                 threads == 1 ? "" : "s");
        printf("%-12s %6.3f s\n", label, pool_s);
        printf("%-12s %6.1f\xc3\x97 (the downloads wait on IO, so the "
               "threads overlap the waits)\n", "speed-up:", seq_s / pool_s);
    }
    if (failed || pool_failed) {
        fprintf(stderr, "threads_download: %zu sequential and %ld pooled "
                        "download(s) failed\n",
                failed, pool_failed < 0 ? (long)N_URLS : pool_failed);
        return 1;
    }
    return 0;
}
