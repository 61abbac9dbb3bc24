/* peer_glib.c - GLib GThreadPool as a peer (issue #4).
 *
 * Shared (non-exclusive) pool with max_threads = 2: the default way
 * GLib code makes a pool. "All done" is g_thread_pool_free(pool, FALSE,
 * TRUE), GLib's own drain-and-wait; GLib has no per-task handle, hence
 * no future case. */
#include "peer_common.h"
#include <glib.h>

static void noop(gpointer data, gpointer user) { (void)data; (void)user; }
static void post(gpointer data, gpointer user)
{
    (void)data; (void)user;
    peer_rt_post();
}

static GThreadPool *new_pool(GFunc fn)
{
    GError *err = NULL;
    GThreadPool *p = g_thread_pool_new(fn, NULL, 2, FALSE, &err);
    if (!p) {
        fprintf(stderr, "g_thread_pool_new: %s\n", err->message);
        exit(1);
    }
    return p;
}

/* GLib rejects NULL task data, so every push passes a dummy pointer. */
static int dummy;

static void ff(long n)
{
    GThreadPool *p = new_pool(noop);
    for (long i = 0; i < n; i++)
        g_thread_pool_push(p, &dummy, NULL);
    g_thread_pool_free(p, FALSE, TRUE);
}

static GThreadPool *rt_pool;
static void rt_open(void) { rt_pool = new_pool(post); }
static void rt_one(void)
{
    g_thread_pool_push(rt_pool, &dummy, NULL);
    peer_rt_wait();
}
static void rt_close(void) { g_thread_pool_free(rt_pool, FALSE, TRUE); }

int main(int argc, char **argv)
{
    static const struct peer_ops ops = {
        ff, NULL, "no-futures", rt_open, rt_one, rt_close,
    };
    return peer_main(argc, argv, &ops);
}
