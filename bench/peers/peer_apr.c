/* peer_apr.c - APR-util's apr_thread_pool as a peer (issue #4).
 *
 * init = max = 2 threads. APR has no "wait for all tasks" call (its
 * destroy drops queued tasks, and its tasks_run counter is bumped before a
 * task runs, not after), so each task adds 1 to a counter of our own and
 * the submitter, once done submitting, polls it with 20 us naps (a busy
 * poll would steal one of the 2 CPUs from the workers). APR has no
 * per-task handle, hence no future case. */
#include "peer_common.h"
#include <apr_general.h>
#include <apr_thread_pool.h>
#include <stdatomic.h>

static atomic_long done;
static apr_pool_t *mem;

static void *APR_THREAD_FUNC noop(apr_thread_t *t, void *a)
{
    (void)t; (void)a;
    atomic_fetch_add_explicit(&done, 1, memory_order_release);
    return NULL;
}
static void *APR_THREAD_FUNC post(apr_thread_t *t, void *a)
{
    (void)t; (void)a;
    peer_rt_post();
    return NULL;
}

static apr_thread_pool_t *new_pool(void)
{
    apr_thread_pool_t *tp;
    if (apr_thread_pool_create(&tp, 2, 2, mem) != APR_SUCCESS)
        abort();
    return tp;
}

static void push(apr_thread_pool_t *tp, apr_thread_start_t fn)
{
    if (apr_thread_pool_push(tp, fn, NULL, APR_THREAD_TASK_PRIORITY_NORMAL,
                             NULL) != APR_SUCCESS)
        abort();
}

static void ff(long n)
{
    apr_thread_pool_t *tp = new_pool();
    for (long i = 0; i < n; i++)
        push(tp, noop);
    struct timespec nap = {0, 20000};
    while (atomic_load_explicit(&done, memory_order_acquire) < n)
        nanosleep(&nap, NULL);
    /* Not timed by design: the clock stops in peer_main, but this runs
     * first; apr_thread_pool_destroy sleeps in 20 ms steps while threads
     * exit, so leave it to process exit instead. */
    (void)tp;
}

static apr_thread_pool_t *rt_tp;
static void rt_open(void) { rt_tp = new_pool(); }
static void rt_one(void) { push(rt_tp, post); peer_rt_wait(); }
static void rt_close(void) { apr_thread_pool_destroy(rt_tp); }

int main(int argc, char **argv)
{
    apr_initialize();
    apr_pool_create(&mem, NULL);
    static const struct peer_ops ops = {
        ff, NULL, "no-futures", rt_open, rt_one, rt_close,
    };
    return peer_main(argc, argv, &ops);
}
