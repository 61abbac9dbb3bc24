/* examples/tcp_pool.c - a pk_pool of TCP connections: the first real
 * resource most programs pool.
 *
 *   tcp_pool [THREADS [ROUND_TRIPS]]   (default 8 threads, 2000 each)
 *
 * An echo server runs on 127.0.0.1 in this process. THREADS threads each
 * make ROUND_TRIPS round trips (send 32 bytes, read them back): first
 * connecting for every request, then borrowing a connection from a pool.
 * The pool's hooks: create connects, check peeks at the socket
 * (recv(MSG_PEEK | MSG_DONTWAIT): 0 means the server closed it, so the
 * connection is dead), destroy closes it.
 *
 * Half way through the pooled run the server goes away for a second and
 * comes back on the same port. Borrowed connections then fail: the
 * caller releases them BROKEN, which makes the pool check every idle
 * connection before lending it again (the generation bump), so the dead
 * ones are dropped, not handed out one by one. While the server is down,
 * creates fail; the pool retries on its own, and an acquire whose
 * deadline reaches the next retry waits for it. The program prints how
 * many round trips failed and how soon after the server's return the
 * pool served again.
 *
 * Exit status: 0 if both runs completed and the pool recovered, 1
 * otherwise, 2 on a usage error. */
#include <poolkit/poolkit.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN 32
#define MAX_CONNS 256

static void
sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the echo server: one thread, poll() over its connections --------- */

struct server {
    int lfd;                  /* listening socket, -1 while down */
    int conns[MAX_CONNS];
    int n;
    int stop_fd[2];           /* a byte here: close everything and return */
    pthread_t thread;
    uint16_t port;
};

static int
listen_on(uint16_t port, uint16_t *bound)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons(port) };
    socklen_t len = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static void
echo_once(struct server *s, int i)
{
    char buf[4096];
    ssize_t r = recv(s->conns[i], buf, sizeof buf, 0);

    if (r <= 0 || send(s->conns[i], buf, (size_t)r, MSG_NOSIGNAL) != r) {
        close(s->conns[i]);
        s->conns[i] = s->conns[--s->n];
    }
}

static void *
serve(void *arg)
{
    struct server *s = arg;
    struct pollfd p[MAX_CONNS + 2];

    for (;;) {
        p[0] = (struct pollfd){ .fd = s->stop_fd[0], .events = POLLIN };
        p[1] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
        for (int i = 0; i < s->n; i++)
            p[i + 2] = (struct pollfd){ .fd = s->conns[i], .events = POLLIN };
        if (poll(p, (nfds_t)s->n + 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        for (int i = s->n - 1; i >= 0; i--)
            if (p[i + 2].revents)
                echo_once(s, i);
        if (p[1].revents & POLLIN) {
            int c = accept(s->lfd, NULL, NULL);
            if (c >= 0 && s->n < MAX_CONNS)
                s->conns[s->n++] = c;
            else if (c >= 0)
                close(c);
        }
    }
    for (int i = 0; i < s->n; i++)
        close(s->conns[i]);
    s->n = 0;
    close(s->lfd);
    s->lfd = -1;
    return NULL;
}

/* Starts the server on port (0: any); returns 0 or -1. */
static int
server_start(struct server *s, uint16_t port)
{
    s->n = 0;
    s->lfd = listen_on(port, &s->port);
    if (s->lfd < 0 || pipe(s->stop_fd) != 0)
        return -1;
    return pthread_create(&s->thread, NULL, serve, s) == 0 ? 0 : -1;
}

/* Stops it: every connection and the listening socket close. */
static void
server_stop(struct server *s)
{
    char b = 1;

    if (write(s->stop_fd[1], &b, 1) != 1)
        perror("server_stop");
    pthread_join(s->thread, NULL);
    close(s->stop_fd[0]);
    close(s->stop_fd[1]);
}

/* ---- a connection ------------------------------------------------------ */

static uint16_t server_port;

static int
connect_to_server(pk_error *err)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons(server_port) };
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return pk_error_set(err, PK_ECONNECT, errno, "socket: %s",
                            strerror(errno));
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        return pk_error_set(err, PK_ECONNECT, e, "connect 127.0.0.1:%u: %s",
                            server_port, strerror(e));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request: MSG_LEN bytes out, the same back. 0 or -1. */
static int
round_trip(int fd)
{
    char out[MSG_LEN], in[MSG_LEN];
    size_t got = 0;

    memset(out, 'x', sizeof out);
    if (send(fd, out, sizeof out, MSG_NOSIGNAL) != (ssize_t)sizeof out)
        return -1;
    while (got < sizeof in) {
        ssize_t r = recv(fd, in + got, sizeof in - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return memcmp(in, out, sizeof in) == 0 ? 0 : -1;
}

/* ---- the pool's hooks -------------------------------------------------- */

static int
conn_create(void *user, void **res, pk_error *err)
{
    int fd = connect_to_server(err);

    (void)user;
    if (fd < 0)
        return fd; /* the PK_ECONNECT code, err filled */
    *res = (void *)(intptr_t)fd;
    return 0;
}

/* Healthy unless the peer closed it (EOF) or it has an error. Nothing is
 * unread between requests, so any readable byte means trouble too. */
static int
conn_check(void *user, void *res, pk_error *err)
{
    char b;
    ssize_t r = recv((int)(intptr_t)res, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    (void)user;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return pk_error_set(err, PK_ECHECK, r < 0 ? errno : 0, "%s",
                        r == 0 ? "closed by the server"
                               : r > 0 ? "unexpected bytes" : strerror(errno));
}

static void
conn_destroy(void *user, void *res)
{
    (void)user;
    close((int)(intptr_t)res);
}

/* ---- the clients --------------------------------------------------------- */

struct run {
    pk_pool *pool;           /* NULL: connect per request */
    int trips;
    atomic_int done, failed;
    atomic_int half;          /* set once half the trips are done */
    _Atomic uint64_t first_ok_after; /* ns: first success after `back` */
    _Atomic uint64_t back;    /* when the server came back, 0 before */
};

static void
note_success(struct run *r)
{
    uint64_t back = atomic_load(&r->back), zero = 0;

    if (back)
        atomic_compare_exchange_strong(&r->first_ok_after, &zero,
                                       now_ns() - back);
}

static int
pooled_trip(struct run *r)
{
    pk_lease l;
    pk_error err;
    int rc = pk_pool_acquire(r->pool, &l, 2000, &err);

    if (rc != 0) {
        static atomic_int shown;
        if (atomic_fetch_add(&shown, 1) < 3)
            printf("    acquire: %s\n", err.msg);
        return -1;
    }
    rc = round_trip((int)(intptr_t)l.resource);
    pk_pool_release(r->pool, &l, rc == 0 ? PK_RELEASE_OK : PK_RELEASE_BROKEN);
    return rc;
}

static int
fresh_trip(void)
{
    int fd = connect_to_server(NULL);
    int rc;

    if (fd < 0)
        return -1;
    rc = round_trip(fd);
    close(fd);
    return rc;
}

static void *
client(void *arg)
{
    struct run *r = arg;

    for (int i = 0; i < r->trips; i++) {
        if ((r->pool ? pooled_trip(r) : fresh_trip()) == 0)
            note_success(r);
        else
            atomic_fetch_add(&r->failed, 1);
        atomic_fetch_add(&r->done, 1);
    }
    return NULL;
}

/* Runs the clients; with outage, stops the server for a second once half
 * the round trips are done. Returns the wall time in ns, 0 on error. */
static uint64_t
run_clients(struct run *r, int threads, struct server *srv, bool outage)
{
    pthread_t th[256];
    uint64_t t0 = now_ns();
    int total = threads * r->trips, started = 0;

    for (; started < threads; started++)
        if (pthread_create(&th[started], NULL, client, r) != 0)
            break;
    if (outage) {
        while (atomic_load(&r->done) < total / 2)
            sleep_ms(1);
        server_stop(srv);
        printf("    server down at %d of %d round trips\n",
               atomic_load(&r->done), total);
        sleep_ms(1000);
        if (server_start(srv, srv->port) != 0) {
            fprintf(stderr, "could not restart the server on port %u\n",
                    srv->port);
            exit(1);
        }
        atomic_store(&r->back, now_ns());
        printf("    server back after 1 s\n");
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return started == threads ? now_ns() - t0 : 0;
}

static int
arg_in(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int
main(int argc, char **argv)
{
    int threads = 8, trips = 2000;
    struct server srv;
    struct run fresh = { 0 }, pooled = { 0 }, outage = { 0 };
    pk_pool_options o;
    uint64_t t_fresh, t_pooled, t_outage;
    int total;

    if (argc > 3 || (argc > 1 && arg_in(argv[1], 1, 256, &threads)) ||
        (argc > 2 && arg_in(argv[2], 2, 1000000, &trips))) {
        fprintf(stderr, "usage: %s [THREADS (1-256) [ROUND_TRIPS]]\n",
                argv[0]);
        return 2;
    }
    if (server_start(&srv, 0) != 0) {
        perror("echo server");
        return 1;
    }
    server_port = srv.port;
    total = threads * trips;
    printf("echo server on 127.0.0.1:%u; %d threads x %d round trips\n",
           srv.port, threads, trips);

    fresh.trips = trips;
    t_fresh = run_clients(&fresh, threads, &srv, false);
    printf("  connect per request: %.2f us per round trip, %d failed\n",
           t_fresh / 1e3 / total, atomic_load(&fresh.failed));

    pk_pool_options_init(&o);
    o.create = conn_create;
    o.check = conn_check;
    o.destroy = conn_destroy;
    o.max_size = (size_t)threads;
    o.check_after_ms = 100; /* a connection idle 100 ms is checked first */
    if (pk_pool_create(&pooled.pool, &o) != 0) {
        fprintf(stderr, "pk_pool_create failed\n");
        return 1;
    }
    pooled.trips = trips;
    t_pooled = run_clients(&pooled, threads, &srv, false);
    printf("  pooled:              %.2f us per round trip, %d failed "
           "(%.1fx faster)\n", t_pooled / 1e3 / total,
           atomic_load(&pooled.failed), (double)t_fresh / (double)t_pooled);

    outage.pool = pooled.pool;
    outage.trips = trips;
    printf("  pooled again, the server down for 1 s half way:\n");
    t_outage = run_clients(&outage, threads, &srv, true);
    uint64_t rec = atomic_load(&outage.first_ok_after);
    printf("    %d of %d round trips failed; ", atomic_load(&outage.failed),
           total);
    if (rec)
        printf("the pool served again %.1f ms after the server came back\n",
               rec / 1e6);
    else
        printf("the pool never served again\n");

    pk_pool_close(pooled.pool, 1000);
    pk_pool_destroy(pooled.pool);
    server_stop(&srv);
    return t_fresh && t_pooled && t_outage && rec &&
                   atomic_load(&fresh.failed) == 0 &&
                   atomic_load(&pooled.failed) == 0
               ? 0
               : 1;
}
