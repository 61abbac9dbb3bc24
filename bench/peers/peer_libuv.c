/* peer_libuv.c - libuv's uv_queue_work thread pool as a peer (issue #4).
 *
 * libuv has one process-wide pool sized by UV_THREADPOOL_SIZE when it is
 * first used, so main() sets it to 2 before any uv call. Each request also
 * costs an after_work_cb on the loop thread (the submitting thread): "all
 * done" is uv_run() returning, which it does once every after_work_cb has
 * run. That callback is libuv's completion notice, so the future case
 * would only repeat ff; it is skipped. The pool is created lazily inside
 * the first uv_queue_work, so ff's clock covers it as for the others. */
#include "peer_common.h"
#include <uv.h>

static void noop(uv_work_t *r) { (void)r; }
static void after(uv_work_t *r, int status) { (void)r; (void)status; }

static void ff(long n)
{
    /* uv_work_t is caller-owned and must live until after_work_cb; one
     * array for all n is the cheapest way a caller can provide that. */
    uv_work_t *reqs = calloc((size_t)n, sizeof *reqs);
    if (!reqs)
        abort();
    uv_loop_t *loop = uv_default_loop();
    for (long i = 0; i < n; i++)
        if (uv_queue_work(loop, &reqs[i], noop, after) != 0)
            abort();
    uv_run(loop, UV_RUN_DEFAULT);
    free(reqs);
}

/* Round trip: queue one request, run the loop until its after_work_cb. */
static uv_work_t rt_req;
static void rt_open(void) {}
static void rt_one(void)
{
    uv_queue_work(uv_default_loop(), &rt_req, noop, after);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}
static void rt_close(void) { uv_loop_close(uv_default_loop()); }

int main(int argc, char **argv)
{
    setenv("UV_THREADPOOL_SIZE", "2", 1);
    static const struct peer_ops ops = {
        ff, NULL, "no-futures", rt_open, rt_one, rt_close,
    };
    return peer_main(argc, argv, &ops);
}
