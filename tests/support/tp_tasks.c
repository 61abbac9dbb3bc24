/* tests/support/tp_tasks.c - see tp_tasks.h. */
#include "tp_tasks.h"

#include <pthread.h>
#include <stdint.h>

#include "test_util.h"

atomic_int tp_counter;
atomic_int tp_gate_arrived, tp_gate_inside, tp_gate_most, tp_gate_done;

static pthread_mutex_t gate_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_c = PTHREAD_COND_INITIALIZER;
static int gate_open;

int
tp_square(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)err;
    out->value = (void *)((uintptr_t)arg * (uintptr_t)arg);
    return 0;
}

int
tp_fail_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    return pk_error_set(err, PK_ETASK, 7, "task says no");
}

int
tp_count_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    atomic_fetch_add(&tp_counter, 1);
    return 0;
}

int
tp_sleep_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)self;
    (void)out;
    (void)err;
    sleep_ms((long)(uintptr_t)arg);
    atomic_fetch_add(&tp_counter, 1);
    return 0;
}

static void
note_most(int now)
{
    int m = atomic_load(&tp_gate_most);

    while (now > m && !atomic_compare_exchange_weak(&tp_gate_most, &m, now))
        ;
}

int
tp_gated_task(void *arg, pk_future *self, pk_result *out, pk_error *err)
{
    (void)arg;
    (void)self;
    (void)out;
    (void)err;
    note_most(atomic_fetch_add(&tp_gate_inside, 1) + 1);
    pthread_mutex_lock(&gate_m);
    atomic_fetch_add(&tp_gate_arrived, 1);
    while (!gate_open)
        pthread_cond_wait(&gate_c, &gate_m);
    pthread_mutex_unlock(&gate_m);
    atomic_fetch_sub(&tp_gate_inside, 1);
    atomic_fetch_add(&tp_gate_done, 1);
    return 0;
}

void
tp_gate_set(int open)
{
    pthread_mutex_lock(&gate_m);
    gate_open = open;
    pthread_cond_broadcast(&gate_c);
    pthread_mutex_unlock(&gate_m);
}

void
tp_gate_reset(void)
{
    tp_gate_set(0);
    atomic_store(&tp_counter, 0);
    atomic_store(&tp_gate_arrived, 0);
    atomic_store(&tp_gate_inside, 0);
    atomic_store(&tp_gate_most, 0);
    atomic_store(&tp_gate_done, 0);
}

int
tp_wait_at_least(atomic_int *v, int want)
{
    for (int i = 0; i < 10000 && atomic_load(v) < want; i++)
        sleep_ms(1);
    return atomic_load(v);
}
