/* lib/exec/executor_int.h - the one internal header for an executor
 * implementation (pools/thread/ and any later pool that runs tasks): what
 * executors need from futures beyond the public API, and the part of
 * lib/kit/ they use. A module includes this and include/poolkit/, nothing
 * else of lib/ (the build gives modules -Ilib/exec only).
 *
 * From futures: listeners, so that a worker can park on its own parker
 * and be woken by a future finishing or by its pool, whichever comes
 * first; and a per-thread wait helper, so that a worker that waits on a
 * future can run queued work (the awaited task among it) instead of
 * blocking the pool it belongs to. From the kit: locks, parking, clock
 * and fork counter (sync.h), the allocation seam (alloc.h), the
 * histogram (hist.h) and the stderr line for a failure with no event hook
 * to hear it (log.h). */
#ifndef PK_LIB_EXEC_EXECUTOR_INT_H
#define PK_LIB_EXEC_EXECUTOR_INT_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/executor.h>
#include <poolkit/future.h>

#include "../kit/alloc.h"
#include "../kit/dlist.h"
#include "../kit/hist.h"
#include "../kit/log.h"
#include "../kit/sync.h"

/* A listener on a future: a waiter's node, linked on the future's list by
 * pk__future_listen. It lives wherever the waiter likes (its frame, its
 * worker struct); the layout is here only so that it can. The fields are
 * future.c's, under the future's lock. */
struct pk__future_node {
    struct pk__future_node *next; /* NULL: not linked */
    struct pk__future_node *prev;
    pk__parker *parker;           /* woken when the future finishes */
};

/* The value a finishing future wakes a listener's parker with. */
#define PK__FUTURE_WAKE 1u

/* Links n on f so that whoever moves f to a terminal state (complete,
 * fail, cancel of a pending one) wakes p with pk__park_wake(p,
 * PK__FUTURE_WAKE), under f's lock, once. Returns 0 (linked) or 1 (f
 * had already finished: n is not linked and p is not touched).
 *
 * p may be shared: by the nodes of several futures (wait any of them),
 * or with other wakers (a worker's own parker, woken by its pool for new
 * work). A later wake replaces an earlier one's value, so a parker's
 * value only says "look again": after pk__park returns, reset the word
 * to 0 with an exchange (acq_rel: a wake it erases is still seen), then
 * look at pk__future_done(f) and at your other reasons before parking
 * again. n stays linked across such wakes until f finishes or
 * pk__future_unlisten.
 *
 * Owner: the caller holds a reference to f, and keeps n and p alive,
 * until pk__future_unlisten(f, n) has returned. Threads: safe; a node is
 * on one future at a time. */
int pk__future_listen(pk_future *f, struct pk__future_node *n,
                      pk__parker *p);

/* Unlinks n from f if it is still linked (a no-op if f's finisher
 * unlinked it, or if pk__future_listen returned 1). After it returns,
 * nothing touches n or its parker on f's behalf: call it for every node
 * listen was given before the node or the parker goes away. */
void pk__future_unlisten(pk_future *f, struct pk__future_node *n);

struct pk__wait_helper {
    /* Waits until f finished or deadline (CLOCK_MONOTONIC, UINT64_MAX =
     * none) passes, helping meanwhile. Returns 0, PK_ETIMEDOUT or
     * PK_EDEADLK (any other code is passed on to the caller). */
    int (*fn)(void *ctx, pk_future *f, uint64_t deadline);
    /* The same for pk_future_wait_any: waits until one of fs[0..n-1]
     * finished or deadline passes. Returns 0, PK_ETIMEDOUT, PK_EDEADLK
     * (n 1) or PK_ENOMEM. */
    int (*any)(void *ctx, pk_future *const *fs, size_t n, uint64_t deadline);
    void *ctx;
};

/* Installs h (NULL removes) as this thread's wait helper: every blocking
 * pk_future_wait, pk_future_wait_all and pk_future_wait_any on this
 * thread goes through it, in this process only: in a child after fork()
 * a helper installed before the fork counts as none (the thread waits
 * without help, and neither h nor its ctx is touched), so a helper need
 * not check for a fork itself.
 * Returns the previous one (NULL if it came from before a fork).
 * Thread-local state, documented in future_wait.c and the README. */
const struct pk__wait_helper *
pk__future_set_wait_helper(const struct pk__wait_helper *h);

/* True if this thread has a wait helper (it is an executor's worker in
 * this process). */
int pk__future_helped(void);

/* pk_future_wait up to a deadline (CLOCK_MONOTONIC ns, UINT64_MAX =
 * none), through this thread's helper if it has one. Returns as
 * pk_future_wait. */
int pk__future_wait_deadline(pk_future *f, uint64_t deadline);

/* pk_future_create with `refs` references at once (an executor's own
 * and its caller's): one atomic increment less than a pk_future_ref. */
int pk__future_create_refs(pk_future **out, pk_event_fn event,
                           void *event_user, uint32_t refs);

/* ---- a future that carries its task ------------------------------------ */

/* An executor may keep a task's record in its future's allocation, so a
 * worker that waits on the future can find the task and, if it has not
 * started, claim it (pk_future_set_running) and run it itself (what
 * ForkJoinPool and .NET call inlining). The record begins with this
 * header; owner says which executor made it. */
struct pk__future_ext {
    void (*fini)(struct pk__future_ext *x); /* when the future is freed */
    const void *owner;
};

/* pk__future_create_refs with `size` bytes (at least the header) for the
 * executor after the future, returned zeroed in *ext. */
int pk__future_create_ext(pk_future **out, pk_event_fn event,
                          void *event_user, uint32_t refs, size_t size,
                          struct pk__future_ext **ext);

/* The record of a future made by pk__future_create_ext, or NULL. */
struct pk__future_ext *pk__future_ext(pk_future *f);

/* A failure nobody can read (a fire-and-forget task's): to event as
 * PK_EVENT_FUTURE_UNREAD, or without one a stderr line saying `what`
 * (lib/kit/log.h). The one place executors report such failures. */
void pk__task_report_unread(pk_event_fn event, void *event_user,
                            const pk_error *err, const char *what);

/* pk_task_run for a future its caller already set running (claimed). */
int pk__task_run_claimed(const pk_task *task, const pk_registry *reg,
                         pk_future *fut, pk_event_fn event,
                         void *event_user);

/* Non-zero once f reached a terminal state (acquire: its outcome is
 * visible then). Debug builds assert that f is a live future. */
int pk__future_done(const pk_future *f);


/* ---- chunks of named calls (chunk.c; PK_TASK_CHUNK) ------------------------------ */

/* The map's side: a buffer of pk__chunk_calls_size(n, total bytes of the
 * n calls) holds n calls: pk__chunk_calls_begin, then
 * pk__chunk_calls_add for each (both return where the next goes). */
size_t pk__chunk_calls_size(size_t n, size_t bytes);
char *pk__chunk_calls_begin(void *buf, uint32_t n);
char *pk__chunk_calls_add(char *p, const void *data, size_t len);

/* The executor's side: runs fn on each call of the chunk in data, in
 * turn (each with self NULL), and makes *out the packed outcomes
 * (pk__alloc'd, free_fn set). A call's failure is its outcome, not this
 * call's, and so is a result over max_each bytes (PK_ETOOBIG); once self
 * is asked to cancel, the calls not run yet are PK_ECANCELED outcomes.
 * Returns 0, PK_EINVAL (not a chunk: err says so), PK_ENOMEM. */
int pk__chunk_run(pk_named_fn fn, const void *data, size_t len,
                  pk_future *self, size_t max_each, pk_result *out,
                  pk_error *err);

/* The map's side again: reads the n outcomes of a chunk's result, one
 * per pk__chunk_next (*code; e filled for a failure; res a pk__alloc'd
 * copy of a success's bytes). Return 0, PK_EINVAL (malformed), or
 * PK_ENOMEM. */
struct pk__chunk_reader {
    const char *p, *end;
};
int pk__chunk_begin(struct pk__chunk_reader *rd, const void *data,
                    size_t len, uint32_t n);
int pk__chunk_next(struct pk__chunk_reader *rd, int *code, pk_error *e,
                   pk_result *res);

#endif /* PK_LIB_EXEC_EXECUTOR_INT_H */
