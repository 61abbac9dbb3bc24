/* bench/baseline_pool.c - a plain mutex + condvar pool, written the way
 * most people write one, as the yardstick for bench_core.c.
 *
 * One mutex guards a fixed array used as a stack (LIFO: the warmest
 * resource goes out first, like poolkit's default). acquire loops on
 * pthread_cond_wait while the stack is empty; release pushes and signals.
 * No spinning, no hand-off, no statistics: nothing extra, nothing clever. */
#include "baseline_pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct bl_pool {
    pthread_mutex_t lock;
    pthread_cond_t nonempty; /* signalled on every release */
    size_t cap;
    size_t top;              /* resources on the stack; guarded by lock */
    void **stack;            /* guarded by lock */
};

static void
check(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "baseline_pool: %s failed: %d\n", what, rc);
        abort();
    }
}

bl_pool *
bl_pool_create(void *const *res, size_t n)
{
    bl_pool *p;

    if (n == 0)
        return NULL;
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->stack = calloc(n, sizeof *p->stack);
    if (!p->stack) {
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        p->stack[i] = res[i];
    p->cap = n;
    p->top = n;
    check(pthread_mutex_init(&p->lock, NULL), "pthread_mutex_init");
    check(pthread_cond_init(&p->nonempty, NULL), "pthread_cond_init");
    return p;
}

void *
bl_pool_acquire(bl_pool *p)
{
    void *res;

    check(pthread_mutex_lock(&p->lock), "pthread_mutex_lock");
    while (p->top == 0)
        check(pthread_cond_wait(&p->nonempty, &p->lock), "pthread_cond_wait");
    res = p->stack[--p->top];
    check(pthread_mutex_unlock(&p->lock), "pthread_mutex_unlock");
    return res;
}

void
bl_pool_release(bl_pool *p, void *res)
{
    check(pthread_mutex_lock(&p->lock), "pthread_mutex_lock");
    p->stack[p->top++] = res;
    check(pthread_cond_signal(&p->nonempty), "pthread_cond_signal");
    check(pthread_mutex_unlock(&p->lock), "pthread_mutex_unlock");
}

void
bl_pool_destroy(bl_pool *p)
{
    if (!p)
        return;
    pthread_cond_destroy(&p->nonempty);
    pthread_mutex_destroy(&p->lock);
    free(p->stack);
    free(p);
}
