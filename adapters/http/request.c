/* adapters/http/request.c - one request by one deadline, with retries of
 * idempotent requests and same-origin redirects: the job that
 * pk_http_exec runs on this thread and pk_http_batch runs many of
 * (include/poolkit/http.h).
 *
 * Each attempt borrows a handle for the URL's origin (job_start), sets
 * the request on it, runs it through the handle's own multi handle, and
 * gives the handle back (job_finish): BROKEN after a connection-level
 * failure, so a retry goes out on another connection (and the origin's
 * older idle ones are checked). A redirect is followed by hand, so that
 * each hop borrows from its own origin's pool and a hop to another origin
 * is refused unless allowed. */
#include "http_int.h"

#include <stdlib.h>
#include <string.h>

/* RFC 9110, 9.2.2. */
static int
idempotent(const char *method)
{
    static const char *const safe[] = { "GET", "HEAD", "OPTIONS", "TRACE",
                                        "PUT", "DELETE" };
    for (size_t i = 0; i < sizeof safe / sizeof *safe; i++)
        if (strcmp(method, safe[i]) == 0)
            return 1;
    return 0;
}

/* ---- the job's pieces -------------------------------------------------------------- */

/* The request's method, headers and body on the borrowed handle. */
static int
set_request(CURL *e, const struct pk__http_job *j, int fresh, int left_ms,
            long transfer_ms)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    (rc = rc != CURLE_OK ? rc : curl_easy_setopt(e, opt, val))
    if (strcmp(j->method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L);
    else if (strcmp(j->method, "GET") != 0)
        SET(CURLOPT_CUSTOMREQUEST, j->method);
    if (j->body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
        SET(CURLOPT_POSTFIELDS, j->body);
    }
    if (j->headers)
        SET(CURLOPT_HTTPHEADER, j->headers);
    if (fresh)
        SET(CURLOPT_FRESH_CONNECT, 1L);
    if (left_ms != PK_WAIT_FOREVER && left_ms < transfer_ms)
        SET(CURLOPT_TIMEOUT_MS, (long)left_ms);
#undef SET
    return rc == CURLE_OK ? 0 : -1;
}

static struct curl_slist *
header_list(const pk_http_request *rq, int *failed)
{
    struct curl_slist *list = NULL;
    *failed = 0;
    for (const char *const *h = rq->headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(list, *h);
        if (!l) {
            curl_slist_free_all(list);
            *failed = 1;
            return NULL;
        }
        list = l;
    }
    return list;
}

/* Fills out from the capture (moving its buffers). */
static void
take_capture(pk_http_response *out, struct pk__http_capture *c)
{
    free(out->body);
    free(out->headers);
    out->body = c->body;
    out->body_len = c->body_len;
    out->headers = c->headers;
    out->headers_len = c->headers_len;
    c->body = c->headers = NULL;
}

/* The job's code for a failed transfer; libcurl's message is read from
 * the handle before it goes back. *retry: an idempotent request may go
 * again. */
static int
failure(const struct pk__http_capture *cap, CURLcode rc,
        const struct pk__http_handle *h, const char *url, int *retry,
        pk_error *err)
{
    *retry = 0;
    if (cap->too_big)
        return pk_error_set(err, PK_ETOOBIG, (int)rc, "%s: the response body "
                            "is larger than max_response (%zu bytes)", url,
                            cap->max_body);
    if (cap->stopped)
        return pk_error_set(err, PK_ECANCELED, (int)rc, "%s: stopped by "
                            "on_data", url);
    if (cap->no_memory)
        return pk_error_set(err, PK_ENOMEM, (int)rc, "%s: out of memory for "
                            "the response", url);
    /* Not once part of a body went to on_data: it would see the body
     * again from the start. */
    *retry = pk__http_code_retryable(rc) && cap->streamed == 0;
    return pk__http_set_error(err, rc, h, url);
}

/* A redirect to follow: the next URL (owned), or NULL. */
static char *
redirect_of(CURL *e, long status)
{
    char *loc = NULL;
    if (status < 300 || status > 399 ||
        curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc)
        return NULL;
    return strdup(loc);
}

static int
same_origin(const char *url, const char *next)
{
    int tls;
    char *a = pk__http_origin_key(url, &tls, NULL);
    char *b = pk__http_origin_key(next, &tls, NULL);
    int same = a && b && strcmp(a, b) == 0;
    free(a);
    free(b);
    return same;
}

/* ---- the job ------------------------------------------------------------------------ */

int
pk__http_job_init(struct pk__http_job *j, const pk_http_request *rq,
                  pk_http_response *out)
{
    memset(j, 0, sizeof *j);
    memset(out, 0, sizeof *out);
    j->rq = rq;
    j->out = out;
    j->method = rq->method ? rq->method : rq->body ? "POST" : "GET";
    j->body = rq->body;
    j->body_len = rq->body_len;
    int failed;
    j->headers = header_list(rq, &failed);
    j->url = strdup(rq->url);
    if (failed || !j->url) {
        pk__http_job_free(j);
        return PK_ENOMEM;
    }
    return 0;
}

void
pk__http_job_free(struct pk__http_job *j)
{
    curl_slist_free_all(j->headers);
    free(j->url);
    j->headers = NULL;
    j->url = NULL;
}

int
pk__http_job_start(pk_http_pool *pool, struct pk__http_job *j,
                   int acquire_ms, uint64_t deadline, const char *file,
                   int line)
{
    int rc = pk__http_acquire(pool, j->url, &j->lease, acquire_ms, 0,
                              &j->err, file, line);
    if (rc)
        return rc;
    struct pk__http_handle *h = j->lease.lease_.resource;
    /* The wait for the handle may have used all the time: libcurl would
     * read a timeout of 0 as none. */
    int left = pk_deadline_ms_left(deadline);
    if (left == 0) {
        pk_http_release(pool, &j->lease, CURLE_OK);
        return pk_error_set(&j->err, PK_ETIMEDOUT, 0, "%s: timed out "
                            "waiting for a connection", j->url);
    }
    int fresh = !idempotent(j->method) && !j->rq->allow_replay;
    j->cap = (struct pk__http_capture){
        .max_body = j->rq->max_response ? j->rq->max_response
                                        : pool->max_response,
        .on_data = j->rq->on_data,
        .on_data_user = j->rq->on_data_user };
    if (set_request(h->easy, j, fresh, left,
                    pool->conf.transfer_timeout_ms) != 0) {
        pk_http_release(pool, &j->lease, CURLE_OK);
        return pk_error_set(&j->err, PK_ENOMEM, 0, "%s: setting the request "
                            "failed", j->url);
    }
    if (fresh)
        atomic_fetch_add(&h->origin->n.fresh_for_replay, 1);
    if (j->retries_used > j->retries_counted) {
        atomic_fetch_add(&h->origin->n.retries, 1);
        j->retries_counted = j->retries_used;
    }
    h->cap = &j->cap;
    j->out->attempts++;
    j->t0 = pk_clock_ns();
    return 0;
}

/* Whether the job goes again (a retry or a redirect); sets url, method
 * and body for it. */
static int
again(pk_http_pool *pool, struct pk__http_job *j, int rc, int retry,
      char *next, uint64_t deadline)
{
    if (rc && retry && idempotent(j->method) &&
        j->retries_used < pool->retries && pk_deadline_ms_left(deadline) != 0) {
        j->retries_used++;
        return 1;
    }
    if (rc || !next ||
        (!pool->redirect_any_origin && !same_origin(j->url, next))) {
        free(next);
        return 0;
    }
    /* 303, and 301/302 after a POST as browsers do: GET, no body. */
    long st = j->out->status;
    if (st == 303 || ((st == 301 || st == 302) &&
                      strcmp(j->method, "POST") == 0)) {
        j->method = "GET";
        j->body = NULL;
        j->body_len = 0;
    }
    free(j->url);
    j->url = next;
    j->redirects++;
    return 1;
}

int
pk__http_job_finish(pk_http_pool *pool, struct pk__http_job *j,
                    CURLcode code, uint64_t deadline)
{
    struct pk__http_handle *h = j->lease.lease_.resource;
    pk__http_count_attempt(h, code, pk_clock_ns() - j->t0);
    h->cap = NULL;
    long status = 0, connects = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &connects);
    j->out->status = status;
    j->out->reused = connects == 0 && !pk__http_code_no_connection(code);
    take_capture(j->out, &j->cap);
    char *next = NULL;
    if (code == CURLE_OK && j->redirects < pool->max_redirects)
        next = redirect_of(h->easy, status);
    int retry = 0;
    int rc = code == CURLE_OK
                 ? 0
                 : failure(&j->cap, code, h, j->url, &retry, &j->err);
    pk_http_release(pool, &j->lease, code);
    if (again(pool, j, rc, retry, next, deadline))
        return 0;
    j->rc = rc;
    return 1;
}

/* ---- pk_http_exec ------------------------------------------------------------------- */

int
pk__http_bad_request(pk_http_pool *pool, const pk_http_request *rq,
                     pk_error *err, const char *who)
{
    if (pk__http_valid(pool) && rq && rq->url &&
        !(rq->body_len && !rq->body) &&
        !(rq->timeout_ms < 0 && rq->timeout_ms != PK_WAIT_FOREVER))
        return 0;
    return pk_error_set(err, PK_EINVAL, 0, "%s: %s", who,
                        !pk__http_valid(pool) ? "not a pk_http_pool"
                        : !rq                 ? "NULL request"
                        : !rq->url            ? "no URL"
                        : rq->timeout_ms < 0  ? "bad timeout"
                                              : "body_len without body");
}

int
pk__http_timeout_of(const pk_http_pool *pool, int timeout_ms)
{
    return timeout_ms ? timeout_ms
                      : pool->acquire_timeout_ms +
                            (int)pool->conf.transfer_timeout_ms;
}

int
pk_http_exec_at(pk_http_pool *pool, const pk_http_request *rq,
                pk_http_response *out, pk_error *err, const char *file,
                int line)
{
    if (out)
        memset(out, 0, sizeof *out);
    int rc = pk__http_bad_request(pool, rq, err, "pk_http_exec");
    if (rc || !out || !file)
        return rc ? rc : pk_error_set(err, PK_EINVAL, 0, "pk_http_exec: "
                                      "NULL argument");
    uint64_t deadline =
        pk_deadline_after(pk__http_timeout_of(pool, rq->timeout_ms));
    struct pk__http_job j;
    if (pk__http_job_init(&j, rq, out) != 0)
        return pk_error_set(err, PK_ENOMEM, 0, "pk_http_exec: out of memory");
    for (;;) {
        int left = pk_deadline_ms_left(deadline);
        rc = left == 0 ? pk_error_set(&j.err, PK_ETIMEDOUT, 0, "%s: timed "
                                      "out", j.url)
                       : pk__http_job_start(pool, &j, left, deadline, file,
                                            line);
        if (rc) {
            j.rc = rc;
            break;
        }
        struct pk__http_handle *h = j.lease.lease_.resource;
        if (pk__http_job_finish(pool, &j, pk__http_handle_run(h), deadline))
            break;
    }
    rc = j.rc;
    if (rc && err)
        *err = j.err;
    pk__http_job_free(&j);
    return rc;
}

void
pk_http_response_free(pk_http_response *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}
