/* naive_threadpool.c - the thread pool most people write first, as a peer.
 *
 * One mutex, one condvar, a linked FIFO, one malloc'd node and one lock
 * round per task, a signal per submit. It is here to show what poolkit
 * gains over the obvious design, so nothing in it is tuned: no batching,
 * no node reuse, no spinning. Waiting for "all done" is the drain-and-join
 * shutdown such pools usually offer (as GLib's g_thread_pool_free does). */
#include "peer_common.h"
#include <pthread.h>

struct node { void (*fn)(void *); void *arg; struct node *next; };

struct npool {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* "queue not empty, or stopping" */
    struct node *head, *tail;
    int stop;
    pthread_t th[2];
};

static void *worker(void *p)
{
    struct npool *np = p;
    for (;;) {
        pthread_mutex_lock(&np->mu);
        while (!np->head && !np->stop)
            pthread_cond_wait(&np->cv, &np->mu);
        struct node *t = np->head;
        if (!t) {               /* stopping and drained */
            pthread_mutex_unlock(&np->mu);
            return NULL;
        }
        np->head = t->next;
        if (!np->head)
            np->tail = NULL;
        pthread_mutex_unlock(&np->mu);
        t->fn(t->arg);
        free(t);
    }
}

static void np_open(struct npool *np)
{
    pthread_mutex_init(&np->mu, NULL);
    pthread_cond_init(&np->cv, NULL);
    np->head = np->tail = NULL;
    np->stop = 0;
    for (int i = 0; i < 2; i++)
        if (pthread_create(&np->th[i], NULL, worker, np) != 0)
            abort();
}

static void np_submit(struct npool *np, void (*fn)(void *), void *arg)
{
    struct node *t = malloc(sizeof *t);
    if (!t)
        abort();
    t->fn = fn, t->arg = arg, t->next = NULL;
    pthread_mutex_lock(&np->mu);
    if (np->tail)
        np->tail->next = t;
    else
        np->head = t;
    np->tail = t;
    pthread_cond_signal(&np->cv);
    pthread_mutex_unlock(&np->mu);
}

/* Runs everything queued, then joins the workers. */
static void np_close(struct npool *np)
{
    pthread_mutex_lock(&np->mu);
    np->stop = 1;
    pthread_cond_broadcast(&np->cv);
    pthread_mutex_unlock(&np->mu);
    for (int i = 0; i < 2; i++)
        pthread_join(np->th[i], NULL);
    pthread_cond_destroy(&np->cv);
    pthread_mutex_destroy(&np->mu);
}

/* ---- driver ---- */
static struct npool pool;
static void noop(void *a) { (void)a; }
static void post(void *a) { (void)a; peer_rt_post(); }

static void ff(long n)
{
    np_open(&pool);
    for (long i = 0; i < n; i++)
        np_submit(&pool, noop, NULL);
    np_close(&pool);
}

static void rt_open(void) { np_open(&pool); }
static void rt_one(void) { np_submit(&pool, post, NULL); peer_rt_wait(); }
static void rt_close(void) { np_close(&pool); }

int main(int argc, char **argv)
{
    static const struct peer_ops ops = {
        ff, NULL, "no-futures", rt_open, rt_one, rt_close,
    };
    return peer_main(argc, argv, &ops);
}
