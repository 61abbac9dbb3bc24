/* adapters/http/request.c - pk_http_exec: one request by one deadline,
 * with retries of idempotent requests and same-origin redirects
 * (include/poolkit/http.h).
 *
 * Each attempt borrows a handle for the URL's origin, sets the request on
 * it, runs curl_easy_perform on this thread and gives the handle back:
 * BROKEN after a connection-level failure, so the retry goes out on
 * another connection (and the origin's older idle ones are checked). A
 * redirect is followed by hand, so that each hop borrows from its own
 * origin's pool and a hop to another origin is refused unless allowed. */
#include "http_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static uint64_t
deadline_after(int ms)
{
    return ms == PK_WAIT_FOREVER ? PK__HTTP_NO_DEADLINE
                                 : pk__http_now_ns() + (uint64_t)ms * 1000000u;
}

/* Milliseconds left (at least 1 while any is), 0 past the deadline,
 * PK_WAIT_FOREVER without one. */
static int
ms_left(uint64_t deadline)
{
    if (deadline == PK__HTTP_NO_DEADLINE)
        return PK_WAIT_FOREVER;
    uint64_t now = pk__http_now_ns();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* The request's method, headers and body on the borrowed handle. */
static int
set_request(CURL *e, const char *method, const pk_http_request *rq,
            struct curl_slist *headers, int fresh, int timeout_ms,
            long transfer_ms)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val) \
    (rc = rc != CURLE_OK ? rc : curl_easy_setopt(e, opt, val))
    if (strcmp(method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        SET(CURLOPT_CUSTOMREQUEST, method);
    if (rq->body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        SET(CURLOPT_POSTFIELDS, rq->body);
    }
    if (headers)
        SET(CURLOPT_HTTPHEADER, headers);
    if (fresh)
        SET(CURLOPT_FRESH_CONNECT, 1L);
    if (timeout_ms != PK_WAIT_FOREVER && timeout_ms < transfer_ms)
        SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
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

/* The call's code for a failed transfer; libcurl's message is read from
 * the handle before it goes back. *retry: an idempotent request may go
 * again. */
static int
failure(const struct pk__http_capture *cap, CURLcode rc,
        const struct pk__http_handle *h, const char *url, int *retry,
        pk_error *err)
{
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
    *retry = pk__http_code_retryable(rc);
    return pk__http_set_error(err, rc, h, url);
}

/* A redirect this call follows: the next URL (owned), or NULL. */
static char *
redirect_of(CURL *e, long status)
{
    char *loc = NULL;
    if (status < 300 || status > 399 ||
        curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc)
        return NULL;
    return strdup(loc);
}

/* One attempt on one borrowed handle. Returns 0 (a response arrived;
 * *next: a redirect to follow, when follow) or a poolkit code with err
 * filled. */
static int
attempt_once(pk_http_pool *pool, const char *url, const char *method,
             const pk_http_request *rq, struct curl_slist *headers,
             uint64_t deadline, int follow, int is_retry,
             pk_http_response *out, int *retry, char **next, pk_error *err,
             const char *file, int line)
{
    pk_http_lease l;
    *retry = 0;
    int left = ms_left(deadline);
    if (left == 0)
        return pk_error_set(err, PK_ETIMEDOUT, 0, "%s: timed out", url);
    int rc = pk_http_acquire_at(pool, url, &l, left, err, file, line);
    if (rc)
        return rc;
    struct pk__http_handle *h = l.lease_.resource;
    int fresh = !idempotent(method) && !rq->allow_replay;
    struct pk__http_capture cap = {
        .max_body = rq->max_response ? rq->max_response : pool->max_response,
        .on_data = rq->on_data, .on_data_user = rq->on_data_user };
    if (set_request(h->easy, method, rq, headers, fresh, ms_left(deadline),
                    pool->conf.transfer_timeout_ms) != 0) {
        pk_http_release(pool, &l, CURLE_OK);
        return pk_error_set(err, PK_ENOMEM, 0, "%s: setting the request "
                            "failed", url);
    }
    if (fresh)
        atomic_fetch_add(&h->origin->n.fresh_for_replay, 1);
    if (is_retry)
        atomic_fetch_add(&h->origin->n.retries, 1);
    h->cap = &cap;
    uint64_t t0 = pk__http_now_ns();
    CURLcode code = curl_easy_perform(h->easy);
    pk__http_count_attempt(h, pk__http_now_ns() - t0);
    h->cap = NULL;
    long status = 0, connects = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &connects);
    out->status = status;
    out->reused = connects == 0;
    take_capture(out, &cap);
    if (code == CURLE_OK && follow)
        *next = redirect_of(h->easy, status);
    rc = code == CURLE_OK ? 0 : failure(&cap, code, h, url, retry, err);
    pk_http_release(pool, &l, code);
    return rc;
}

/* Whether a redirect from url to next may be followed here. */
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

static int
bad_request(pk_http_pool *pool, const pk_http_request *rq,
            pk_http_response *out)
{
    return !pk__http_valid(pool) || !rq || !out || !rq->url ||
           (rq->body_len && !rq->body) ||
           (rq->timeout_ms < 0 && rq->timeout_ms != PK_WAIT_FOREVER);
}

int
pk_http_exec_at(pk_http_pool *pool, const pk_http_request *rq,
                pk_http_response *out, pk_error *err, const char *file,
                int line)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (bad_request(pool, rq, out) || !file)
        return pk_error_set(err, PK_EINVAL, 0, "pk_http_exec: %s",
                            !pk__http_valid(pool) ? "not a pk_http_pool"
                            : !rq || !out || !file ? "NULL argument"
                            : !rq->url             ? "no URL"
                            : rq->timeout_ms < 0   ? "bad timeout"
                                                   : "body_len without body");
    pk_http_request r = *rq;
    if (!r.method)
        r.method = r.body ? "POST" : "GET";
    int timeout = r.timeout_ms ? r.timeout_ms
                               : pool->acquire_timeout_ms +
                                     (int)pool->conf.transfer_timeout_ms;
    uint64_t deadline = deadline_after(timeout);
    int failed;
    struct curl_slist *headers = header_list(&r, &failed);
    char *url = strdup(r.url);
    if (failed || !url) {
        curl_slist_free_all(headers);
        free(url);
        return pk_error_set(err, PK_ENOMEM, 0, "pk_http_exec: out of memory");
    }
    int rc, retries = 0, redirects = 0, retry = 0;
    for (;;) {
        char *next = NULL;
        out->attempts++;
        rc = attempt_once(pool, url, r.method, &r, headers, deadline,
                          redirects < pool->max_redirects, retry, out, &retry,
                          &next, err, file, line);
        if (rc && retry && idempotent(r.method) && retries < pool->retries &&
            ms_left(deadline) != 0) {
            retries++;
            continue;
        }
        if (rc || !next || (!pool->redirect_any_origin &&
                            !same_origin(url, next))) {
            free(next);
            break;
        }
        /* 303, and 301/302 after a POST as browsers do: GET, no body. */
        if (out->status == 303 ||
            ((out->status == 301 || out->status == 302) &&
             strcmp(r.method, "POST") == 0)) {
            r.method = "GET";
            r.body = NULL;
            r.body_len = 0;
        }
        free(url);
        url = next;
        redirects++;
    }
    curl_slist_free_all(headers);
    free(url);
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
