/* lib/exec/future_wait.c - waiting on futures: pk_future_wait, _wait_all,
 * _wait_any, pk_future_get (a wait, then the outcome) and the thread's
 * wait helper.
 *
 * The waits are clients of future.c's listener pair, as an executor is
 * (executor_int.h): a wait links a node on each future it waits for
 * (pk__future_listen), parks on its parker until a finisher wakes it or
 * the deadline passes, then unlinks (pk__future_unlisten). pk_future_wait
 * parks on a parker of its own; wait_any on one parker shared by a node
 * per future, so the first future to finish wakes it. future.c's top
 * comment says who wakes whom.
 *
 * A thread that an executor made its worker has a wait helper instead
 * (set with pk__future_set_wait_helper): its blocking waits go through
 * the helper, which runs queued work meanwhile. The helper is kept with
 * the fork epoch it was installed in (sync.h): in a child after fork(),
 * the copy of a worker's thread (the one that forked, from a task) is no
 * worker any more, since its pool's threads and queue are the parent's,
 * so a helper from before the fork counts as none and the thread waits
 * as any other does, on futures of pools made in the child too. */
#include <poolkit/future.h>

#include <stdatomic.h>
#include <stdint.h>

#include "../kit/alloc.h"
#include "../kit/sync.h"
#include "executor_int.h"

/* wait_any keeps this many waiter nodes on its stack, allocating above. */
#define WAIT_ANY_STACK 8

static inline int
bad_timeout(int timeout_ms)
{
    return timeout_ms < 0 && timeout_ms != PK_WAIT_FOREVER;
}

/* The wait helper of this thread (executor_int.h), set by executors on
 * their worker threads only, and the fork epoch it was set in.
 * Thread-local, so not shared mutable state. */
static _Thread_local const struct pk__wait_helper *tls_helper;
static _Thread_local unsigned tls_helper_epoch;

/* This thread's helper, or NULL: none, or one installed before a fork()
 * (pk__fork_epoch ran when it was installed, so the fast read counts
 * every fork since). */
static const struct pk__wait_helper *
helper(void)
{
    if (tls_helper && tls_helper_epoch != pk__fork_epoch_fast())
        return NULL;
    return tls_helper;
}

const struct pk__wait_helper *
pk__future_set_wait_helper(const struct pk__wait_helper *h)
{
    const struct pk__wait_helper *old = helper();

    tls_helper = h;
    tls_helper_epoch = h ? pk__fork_epoch() : 0;
    return old;
}

/* Parks on a parker of its own, listening on f (only f's finisher wakes
 * it). */
static int
park_on(pk_future *f, uint64_t deadline)
{
    pk__parker p;
    struct pk__future_node n;

    atomic_init(&p.word, 0);
    if (pk__future_listen(f, &n, &p))
        return 0;
    pk__park(&p, deadline);
    pk__future_unlisten(f, &n);
    return pk__future_done(f) ? 0 : PK_ETIMEDOUT;
}

static int
wait_one(pk_future *f, uint64_t deadline)
{
    const struct pk__wait_helper *h = helper();

    if (h && !pk__future_done(f))
        return h->fn(h->ctx, f, deadline);
    return park_on(f, deadline);
}

int
pk__future_helped(void)
{
    return helper() != NULL;
}

int
pk__future_wait_deadline(pk_future *f, uint64_t deadline)
{
    return pk__future_done(f) ? 0 : wait_one(f, deadline);
}

int
pk_future_wait(pk_future *f, int timeout_ms)
{
    uint64_t deadline;
    int rc;

    if (!f || bad_timeout(timeout_ms))
        return PK_EINVAL;
    if (pk__future_done(f))
        return 0;
    if (timeout_ms == 0)
        return PK_EAGAIN;
    rc = pk__deadline(timeout_ms, &deadline);
    if (rc)
        return rc;
    return wait_one(f, deadline);
}

static int
check_array(pk_future *const *fs, size_t n, int timeout_ms)
{
    if (!fs || n == 0 || bad_timeout(timeout_ms))
        return PK_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return PK_EINVAL;
    return 0;
}

int
pk_future_wait_all(pk_future *const *fs, size_t n, int timeout_ms)
{
    uint64_t deadline;
    int rc = check_array(fs, n, timeout_ms);

    if (rc)
        return rc;
    if (timeout_ms == 0) {
        for (size_t i = 0; i < n; i++)
            if (!pk__future_done(fs[i]))
                return PK_EAGAIN;
        return 0;
    }
    rc = pk__deadline(timeout_ms, &deadline);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!pk__future_done(fs[i]))
            rc = wait_one(fs[i], deadline);
    return rc;
}

static size_t
lowest_finished(pk_future *const *fs, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (pk__future_done(fs[i]))
            break;
    return i;
}

/* Links one node per future on a shared parker and sleeps until any of
 * them wakes it. Returns 0 or PK_ENOMEM; the caller rescans the states. */
static int
park_on_all(pk_future *const *fs, size_t n, uint64_t deadline)
{
    struct pk__future_node stack_nodes[WAIT_ANY_STACK];
    struct pk__future_node *nodes = stack_nodes;
    pk__parker p;
    size_t linked;

    if (n > WAIT_ANY_STACK) {
        nodes = pk__calloc(n, sizeof *nodes);
        if (!nodes)
            return PK_ENOMEM;
    }
    atomic_init(&p.word, 0);
    for (linked = 0; linked < n; linked++)
        if (pk__future_listen(fs[linked], &nodes[linked], &p))
            break; /* that one finished: no need to sleep */
    if (linked == n)
        pk__park(&p, deadline);
    for (size_t i = 0; i < linked; i++)
        pk__future_unlisten(fs[i], &nodes[i]);
    if (nodes != stack_nodes)
        pk__free(nodes);
    return 0;
}

/* Waits, without the helper, until one of fs finished. Returns 0,
 * PK_ETIMEDOUT or PK_ENOMEM (more than a few futures, and no memory for
 * the nodes). */
static int
wait_any_until(pk_future *const *fs, size_t n, uint64_t deadline)
{
    int rc = 0;

    if (lowest_finished(fs, n) == n)
        rc = park_on_all(fs, n, deadline);
    if (rc == 0 && lowest_finished(fs, n) == n)
        rc = PK_ETIMEDOUT;
    return rc;
}

int
pk_future_wait_any(pk_future *const *fs, size_t n, int timeout_ms,
                   size_t *index)
{
    const struct pk__wait_helper *h = helper();
    uint64_t deadline;
    size_t i;
    int rc = check_array(fs, n, timeout_ms);

    if (rc)
        return rc;
    if (!index)
        return PK_EINVAL;
    i = lowest_finished(fs, n);
    if (i == n && timeout_ms == 0)
        return PK_EAGAIN;
    if (i == n) {
        rc = pk__deadline(timeout_ms, &deadline);
        if (rc == 0)
            rc = h && h->any ? h->any(h->ctx, fs, n, deadline)
                             : wait_any_until(fs, n, deadline);
        if (rc)
            return rc;
        i = lowest_finished(fs, n);
        if (i == n)
            return PK_ETIMEDOUT;
    }
    *index = i;
    return 0;
}

/* pk_future_get's err for a wait that did not end in a finished future. */
static int
wait_failed(pk_error *err, int rc, int timeout_ms)
{
    switch (rc) {
    case PK_ETIMEDOUT:
        return pk_error_set(err, rc, 0,
                            "the future did not finish within %d ms",
                            timeout_ms);
    case PK_EAGAIN:
        return pk_error_set(err, rc, 0,
                            "the future has not finished (timeout 0: "
                            "no wait)");
    case PK_EDEADLK:
        return pk_error_set(err, rc, 0,
                            "waiting would never end: the future is the "
                            "waiting task's own, or one it is nested in");
    case PK_EINVAL:
        return pk_error_set(err, rc, 0,
                            "timeout %d ms: use 0, a positive time or "
                            "PK_WAIT_FOREVER", timeout_ms);
    default:
        return pk_error_set(err, rc, 0, "waiting on the future failed: %s",
                            pk_strerror(rc));
    }
}

int
pk_future_get(pk_future *f, int timeout_ms, pk_result *res, pk_error *err)
{
    pk_error scratch;
    int rc;

    if (!f)
        return pk_error_set(err, PK_EINVAL, 0, "the future is NULL");
    rc = pk_future_wait(f, timeout_ms);
    if (rc)
        return wait_failed(err, rc, timeout_ms);
    /* Finished: the state is terminal and stays so. A failed task's code
     * may be PK_EINVAL too, so the state, not the code, says which. */
    if (pk_future_state_get(f) == PK_FUTURE_DONE) {
        rc = pk_future_result(f, res);
        if (rc)
            pk_error_set(err, rc, 0,
                         "the result was taken (pk_future_take_result)");
        return rc;
    }
    if (!err)
        err = &scratch;
    rc = pk_future_error(f, err); /* fills err, marks the failure read */
    return rc ? rc : err->code;
}
