/* adapters/http/batch.c - pk_http_batch_run: many requests at once from
 * the calling thread (include/poolkit/http.h).
 *
 * The design that reuses the pool's connections. libcurl keeps a
 * connection in the cache of the multi handle that ran the transfer (for
 * curl_easy_perform, a private one inside the easy handle), so adding a
 * pooled easy handle to one big multi handle for the batch would leave
 * its connection behind and open another. Instead every pooled handle has
 * a multi handle of its own, with a cache of one (handle.c), and every
 * transfer the adapter runs goes through it: pk_http_exec drives it with
 * curl_multi_perform and curl_multi_poll; the batch drives many of them
 * at once with the socket API (each multi's socket and timer callbacks
 * fill this file's table), so one poll() here serves them all and each
 * transfer finds its handle's connection.
 *
 * Scheduling. Requests start in order, up to max_parallel, each borrowing
 * a handle without waiting; one that finds its origin at its cap waits
 * until a transfer of the batch ends (or, with none running, blocks for a
 * handle within the batch's deadline). A retry or redirect goes back to
 * the front of the queue. */
#include "http_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARALLEL_DEFAULT 8
#define SOCKS_PER_RUN 4    /* happy eyeballs may try two at once */
#define RETRY_ACQUIRE_MS 10 /* a request held back by a cap looks again */

enum { PENDING = 0, RUNNING, DONE };

/* A running transfer: its sockets and timer, as its multi handle's
 * callbacks last said. */
struct run {
    struct pk__http_job *job;
    struct pk__http_handle *h;
    size_t index;
    int nfds;
    int fd[SOCKS_PER_RUN];
    short events[SOCKS_PER_RUN];
    uint64_t timer_at;  /* PK_NO_DEADLINE: none */
    int alive;          /* transfers still running in its multi (0 or 1) */
};

struct batch {
    pk_http_pool *pool;
    const pk_http_batch *b;
    struct pk__http_job *jobs;
    unsigned char *state;
    uint64_t *deadline;     /* per job, from its first start */
    struct run *runs;       /* max_parallel */
    size_t nruns, max, next, completed;
    size_t *requeued;       /* indices to start before `next` */
    size_t nrequeued;
    uint64_t batch_deadline;
    int first_rc;
    pk_error first_err;
    const char *file;
    int line;
};

/* ---- libcurl's callbacks for one multi handle ---------------------------------------- */

static int
on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct run *r = userp;
    (void)e;
    (void)socketp;
    int i = 0;
    while (i < r->nfds && r->fd[i] != s)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < r->nfds) {
            r->nfds--;
            r->fd[i] = r->fd[r->nfds];
            r->events[i] = r->events[r->nfds];
        }
        return 0;
    }
    if (i == r->nfds) {
        if (r->nfds == SOCKS_PER_RUN)
            return -1; /* libcurl then fails the transfer */
        r->nfds++;
        r->fd[i] = s;
    }
    r->events[i] = (short)((what & CURL_POLL_IN ? POLLIN : 0) |
                           (what & CURL_POLL_OUT ? POLLOUT : 0));
    return 0;
}

static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
    struct run *r = userp;
    (void)m;
    r->timer_at = timeout_ms < 0 ? PK_NO_DEADLINE
                                 : pk_clock_ns() +
                                       (uint64_t)timeout_ms * 1000000u;
    return 0;
}

static void
act(struct run *r, curl_socket_t fd, int mask)
{
    int running = 0;
    if (curl_multi_socket_action(r->h->multi, fd, mask, &running) ==
        CURLM_OK)
        r->alive = running;
    else
        r->alive = 0; /* its result says why */
}

/* ---- starting and ending requests ------------------------------------------------------ */

static void
end_job(struct batch *bt, size_t i)
{
    struct pk__http_job *j = &bt->jobs[i];
    const pk_http_batch *b = bt->b;
    bt->state[i] = DONE;
    bt->completed++;
    if (b->codes)
        b->codes[i] = j->rc;
    if (j->rc && !bt->first_rc) {
        bt->first_rc = j->rc;
        bt->first_err = j->err;
    }
    if (b->on_done)
        b->on_done(b->user, i, bt->completed, b->n, j->rc, j->out,
                   j->rc ? &j->err : NULL);
    pk__http_job_free(j);
}

/* The next request to start, or SIZE_MAX. */
static size_t
peek_next(const struct batch *bt)
{
    if (bt->nrequeued)
        return bt->requeued[bt->nrequeued - 1];
    return bt->next < bt->b->n ? bt->next : SIZE_MAX;
}

static void
pop_next(struct batch *bt)
{
    if (bt->nrequeued)
        bt->nrequeued--;
    else
        bt->next++;
}

static int
add_run(struct batch *bt, size_t i)
{
    struct pk__http_job *j = &bt->jobs[i];
    struct run *r = &bt->runs[bt->nruns];
    *r = (struct run){ .job = j, .h = j->lease.lease_.resource, .index = i,
                       .timer_at = PK_NO_DEADLINE, .alive = 1 };
    CURLM *m = r->h->multi;
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, r);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, r);
    if (curl_multi_add_handle(m, r->h->easy) != CURLM_OK)
        return -1;
    bt->nruns++;
    act(r, CURL_SOCKET_TIMEOUT, 0); /* let libcurl begin */
    return 0;
}

/* Starts what may start. */
static void
start_some(struct batch *bt)
{
    size_t i;
    while (bt->nruns < bt->max && (i = peek_next(bt)) != SIZE_MAX) {
        struct pk__http_job *j = &bt->jobs[i];
        if (bt->deadline[i] == 0)
            bt->deadline[i] = pk_deadline_after(
                pk__http_timeout_of(bt->pool, j->rq->timeout_ms));
        uint64_t until = bt->deadline[i] < bt->batch_deadline
                             ? bt->deadline[i]
                             : bt->batch_deadline;
        int left = pk_deadline_ms_left(until);
        /* Nothing of ours runs: only another thread can give a handle
         * back, so wait for it; else look again when ours end. */
        int rc = left == 0 ? pk_error_set(&j->err, PK_ETIMEDOUT, 0, "%s: "
                                          "timed out before it started",
                                          j->url)
                           : pk__http_job_start(bt->pool, j,
                                                bt->nruns ? 0 : left,
                                                bt->deadline[i], bt->file,
                                                bt->line);
        if (rc == PK_EAGAIN && bt->nruns)
            return;
        pop_next(bt);
        if (rc == 0 && add_run(bt, i) == 0) {
            bt->state[i] = RUNNING;
            continue;
        }
        if (rc == 0) { /* could not add it: give the handle back */
            pk__http_job_finish(bt->pool, j, CURLE_OUT_OF_MEMORY,
                                bt->deadline[i]);
            rc = PK_ENOMEM;
        }
        j->rc = rc;
        end_job(bt, i);
    }
}

static void
finish_run(struct batch *bt, size_t k)
{
    struct run *r = &bt->runs[k];
    CURLM *m = r->h->multi;
    size_t i = r->index;
    CURLcode code = pk__http_handle_done(r->h);
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, NULL);
    struct pk__http_job *j = r->job;
    bt->runs[k] = bt->runs[--bt->nruns];
    /* The moved run's callbacks point at its old place. */
    if (k < bt->nruns) {
        curl_multi_setopt(bt->runs[k].h->multi, CURLMOPT_SOCKETDATA,
                          &bt->runs[k]);
        curl_multi_setopt(bt->runs[k].h->multi, CURLMOPT_TIMERDATA,
                          &bt->runs[k]);
    }
    if (pk__http_job_finish(bt->pool, j, code, bt->deadline[i])) {
        end_job(bt, i);
    } else {
        bt->state[i] = PENDING;
        bt->requeued[bt->nrequeued++] = i;
    }
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int
poll_timeout(const struct batch *bt)
{
    uint64_t soonest = PK_NO_DEADLINE;
    for (size_t k = 0; k < bt->nruns; k++)
        if (bt->runs[k].timer_at < soonest)
            soonest = bt->runs[k].timer_at;
    int ms = soonest == PK_NO_DEADLINE ? 1000 : pk_deadline_ms_left(soonest);
    if (peek_next(bt) != SIZE_MAX && ms > RETRY_ACQUIRE_MS)
        ms = RETRY_ACQUIRE_MS;
    return ms > 1000 ? 1000 : ms;
}

static void
step(struct batch *bt, struct pollfd *pfd, size_t *owner)
{
    nfds_t n = 0;
    for (size_t k = 0; k < bt->nruns; k++)
        for (int f = 0; f < bt->runs[k].nfds; f++) {
            pfd[n] = (struct pollfd){ .fd = bt->runs[k].fd[f],
                                      .events = bt->runs[k].events[f] };
            owner[n++] = k;
        }
    /* A failed poll (EINTR; nothing else with these fds) just loops:
     * libcurl's timers still end every transfer. */
    int ready = poll(pfd, n, poll_timeout(bt));
    for (nfds_t p = 0; ready > 0 && p < n; p++) {
        if (!pfd[p].revents)
            continue;
        int mask = (pfd[p].revents & POLLIN ? CURL_CSELECT_IN : 0) |
                   (pfd[p].revents & POLLOUT ? CURL_CSELECT_OUT : 0) |
                   (pfd[p].revents & (POLLERR | POLLHUP) ? CURL_CSELECT_ERR
                                                         : 0);
        act(&bt->runs[owner[p]], pfd[p].fd, mask);
    }
    uint64_t now = pk_clock_ns();
    for (size_t k = 0; k < bt->nruns; k++)
        if (bt->runs[k].alive && bt->runs[k].timer_at <= now) {
            bt->runs[k].timer_at = PK_NO_DEADLINE;
            act(&bt->runs[k], CURL_SOCKET_TIMEOUT, 0);
        }
    for (size_t k = bt->nruns; k-- > 0;)
        if (!bt->runs[k].alive)
            finish_run(bt, k);
}

static int
bad_batch(pk_http_pool *pool, const pk_http_batch *b, pk_error *err)
{
    if (!pk__http_valid(pool) || !b ||
        (b->n && (!b->requests || !b->responses)) ||
        (b->timeout_ms < 0 && b->timeout_ms != PK_WAIT_FOREVER))
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_batch_run: %s",
                            !pk__http_valid(pool) ? "not a pk_http_pool"
                            : !b ? "NULL batch"
                            : b->timeout_ms < 0 ? "bad timeout"
                                                : "NULL requests or "
                                                  "responses");
    /* Every request is checked before any is sent, its URL too. */
    for (size_t i = 0; i < b->n; i++) {
        char who[64];
        int tls;
        snprintf(who, sizeof who, "pk_http_batch_run: request %zu", i);
        if (pk__http_bad_request(pool, &b->requests[i], err, who))
            return PK_EINVAL;
        pk_error e;
        char *key = pk__http_origin_key(b->requests[i].url, &tls, &e);
        if (!key)
            return pk_error_set(err, e.code, e.sys, "%s: %s", who, e.msg);
        free(key);
    }
    return 0;
}

static void
batch_free(struct batch *bt)
{
    free(bt->jobs);
    free(bt->state);
    free(bt->deadline);
    free(bt->runs);
    free(bt->requeued);
}

static int
batch_init(struct batch *bt, pk_http_pool *pool, const pk_http_batch *b)
{
    size_t n = b->n ? b->n : 1;
    memset(bt, 0, sizeof *bt);
    bt->pool = pool;
    bt->b = b;
    bt->max = b->max_parallel ? b->max_parallel : MAX_PARALLEL_DEFAULT;
    bt->jobs = calloc(n, sizeof *bt->jobs);
    bt->state = calloc(n, 1);
    bt->deadline = calloc(n, sizeof *bt->deadline);
    bt->runs = calloc(bt->max, sizeof *bt->runs);
    bt->requeued = calloc(n, sizeof *bt->requeued);
    bt->batch_deadline = b->timeout_ms ? pk_deadline_after(b->timeout_ms)
                                       : PK_NO_DEADLINE;
    if (!bt->jobs || !bt->state || !bt->deadline || !bt->runs ||
        !bt->requeued)
        return -1;
    for (size_t i = 0; i < b->n; i++)
        if (pk__http_job_init(&bt->jobs[i], &b->requests[i],
                              &b->responses[i]) != 0) {
            for (size_t k = 0; k < i; k++)
                pk__http_job_free(&bt->jobs[k]);
            return -1;
        }
    return 0;
}

int
pk_http_batch_run_at(pk_http_pool *pool, const pk_http_batch *b,
                     pk_error *err, const char *file, int line)
{
    int rc = bad_batch(pool, b, err);
    if (rc)
        return rc;
    struct batch bt = { 0 };
    size_t cap = (b->max_parallel ? b->max_parallel : MAX_PARALLEL_DEFAULT) *
                 SOCKS_PER_RUN;
    struct pollfd *pfd = calloc(cap, sizeof *pfd);
    size_t *owner = calloc(cap, sizeof *owner);
    if (!pfd || !owner || batch_init(&bt, pool, b) != 0) {
        free(pfd);
        free(owner);
        batch_free(&bt);
        return pk_error_set(err, PK_ENOMEM, ENOMEM, "pk_http_batch_run: out "
                            "of memory");
    }
    bt.file = file;
    bt.line = line;
    while (bt.completed < b->n) {
        start_some(&bt);
        if (bt.completed == b->n)
            break;
        step(&bt, pfd, owner);
    }
    rc = bt.first_rc;
    if (rc && err)
        *err = bt.first_err;
    free(pfd);
    free(owner);
    batch_free(&bt);
    return rc;
}
