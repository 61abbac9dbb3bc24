/* tests/support/tp_tasks.h - tasks the thread pool tests share: a result,
 * a failure, a counter, and a gate that tasks block on until the test
 * opens it, counting how many arrived, are inside, were inside at most,
 * and are done. */
#ifndef PK_TEST_TP_TASKS_H
#define PK_TEST_TP_TASKS_H

#include <stdatomic.h>

#include <poolkit/future.h>

extern atomic_int tp_counter;
extern atomic_int tp_gate_arrived; /* reached the gate, ever */
extern atomic_int tp_gate_inside;  /* inside a gated task now */
extern atomic_int tp_gate_most;    /* the most inside at once */
extern atomic_int tp_gate_done;    /* gated tasks that returned */

/* out->value = arg * arg. */
int tp_square(void *arg, pk_future *self, pk_result *out, pk_error *err);
/* Fails with PK_ETASK, sys 7, "task says no". */
int tp_fail_task(void *arg, pk_future *self, pk_result *out, pk_error *err);
/* Adds one to tp_counter. */
int tp_count_task(void *arg, pk_future *self, pk_result *out, pk_error *err);
/* Sleeps (uintptr_t)arg ms, then adds one to tp_counter. */
int tp_sleep_task(void *arg, pk_future *self, pk_result *out, pk_error *err);
/* Blocks until the gate is open. */
int tp_gated_task(void *arg, pk_future *self, pk_result *out, pk_error *err);

void tp_gate_set(int open);
/* Closes the gate and zeroes tp_counter and the gate's counts. */
void tp_gate_reset(void);
/* Polls (1 ms steps, 10 s at most) until *v >= want; returns *v. */
int tp_wait_at_least(atomic_int *v, int want);

#endif /* PK_TEST_TP_TASKS_H */
