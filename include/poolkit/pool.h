/* poolkit/pool.h - the resource pool that every poolkit pool builds on.
 *
 * A pk_pool owns a population of resources that the caller's hooks make
 * (create), unmake (destroy), test (check) and clean (reset). It lends
 * them through leases, decides when to make more and when to retire them,
 * and serves waiters in arrival order by handing a released resource
 * straight to the longest waiter.
 *
 * Threads: a pk_pool handle is safe to use from any number of threads at
 * once, unless a function says otherwise. A leased resource belongs to the
 * thread holding its lease until it is released.
 *
 * Hooks: no hook ever runs with a poolkit lock held. create and check run
 * on the thread that needs them (an acquirer, the maintenance thread, the
 * helper thread of pk_pool_acquire_async, or the thread in
 * pk_pool_maintain); destroy runs on whichever thread retires the resource;
 * reset runs on the releasing thread. Event hooks must not block.
 *
 * Events (pk_pool_options.event; pk_event_name names them):
 *   PK_EVENT_CREATED        a create succeeded (ev.resource)
 *   PK_EVENT_CREATE_FAILED  a create failed (ev.error: why)
 *   PK_EVENT_DESTROYED      a resource was retired (ev.resource)
 *   PK_EVENT_CHECK_FAILED   check or reset said unhealthy (ev.error)
 *   PK_EVENT_TIMEOUT        an acquire or an async ticket timed out
 *   PK_EVENT_HELD_TOO_LONG  a lease is out longer than held_too_long_ms
 *                           (ev.file, ev.line: its acquire site)
 *   PK_EVENT_DETACHED       a resource was released with DETACH
 *   PK_EVENT_LEASE_OUT_AT_CLOSE  a lease was still out when pk_pool_close
 *                           stopped waiting, or at pk_pool_destroy
 *                           (ev.file, ev.line: its acquire site;
 *                           ev.duration_ns: how long it has been out, 0
 *                           if the pool reads no clock; ev.resource
 *                           identifies it only: its holder may release
 *                           it meanwhile). Without a hook, one stderr
 *                           line instead (see pk_pool_close). */
#ifndef POOLKIT_POOL_H
#define POOLKIT_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <poolkit/error.h>
#include <poolkit/event.h> /* pk_event, pk_event_fn */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_pool pk_pool;             /* opaque */
typedef struct pk_pool_group pk_pool_group; /* opaque */
typedef struct pk_pool_ticket pk_pool_ticket; /* opaque */
struct pk__slot;

/* ---- options ---------------------------------------------------------- */

enum pk_pool_order {
    PK_POOL_LIFO = 0, /* reuse the warmest idle resource first (default):
                         the one released last */
    PK_POOL_FIFO = 1  /* rotate through idle resources */
};

enum pk_pool_flags {
    /* Never start a maintenance thread; the embedder calls
     * pk_pool_maintain() from its own loop. */
    PK_POOL_MANUAL_MAINTENANCE = 1u << 0,
    /* A broken release or a failed check says nothing about the other
     * resources: do not bump the generation (worker threads, say). */
    PK_POOL_NO_GENERATION_BUMP = 1u << 1,
    /* Leases out at close are expected (a pool module's own threads hold
     * them, as the thread pool's busy workers do): pk_pool_close and
     * pk_pool_destroy do not report them (PK_EVENT_LEASE_OUT_AT_CLOSE). */
    PK_POOL_QUIET_CLOSE = 1u << 2
};

/* min_size, min_idle, max_size and max_creating, at most (PK_EINVAL
 * above, in the options and in pk_pool_resize): far beyond any real pool,
 * and small enough that the pool's arithmetic on counts never wraps. The
 * same as PK_THREADPOOL_THREADS_MAX, so a thread pool's counts always
 * fit. */
#define PK_POOL_SIZE_MAX ((size_t)1 << 20)

/* Zero in any field means its documented default; (pk_pool_options){
 * .create = f } is complete. Options are read by pk_pool_create only;
 * strings and the struct itself are not kept. */
typedef struct pk_pool_options {
    /* Hooks. create is required; the others are optional. */
    int (*create)(void *user, void **res, pk_error *err);
    void (*destroy)(void *user, void *res);
    int (*check)(void *user, void *res, pk_error *err); /* 0 = healthy */
    int (*reset)(void *user, void *res);                /* 0 = clean */
    /* After fork(), in the child: close res's descriptors without speaking
     * any protocol. Must be async-signal-safe. Without it, an inherited
     * resource is left untouched by pk_pool_destroy in the child. */
    void (*forget_in_child)(void *user, void *res);
    /* Called once, after the last destroy hook has run (which may be after
     * pk_pool_destroy returns, when a lease comes back late). */
    void (*user_free)(void *user);
    void *user;                 /* passed to every hook; borrowed */

    pk_event_fn event;          /* optional */
    void *event_user;

    /* Policy time: returns nanoseconds on a monotonic scale. Default
     * CLOCK_MONOTONIC. Tests pass their own to drive expiry. */
    uint64_t (*clock)(void *clock_user);
    void *clock_user;

    /* Sizes, each at most PK_POOL_SIZE_MAX. The first three may change
     * later with pk_pool_resize(), where 0 means the same. */
    size_t min_size;     /* population floor, never trimmed below; default 0 */
    size_t min_idle;     /* idle kept on top of those lent; default 0 */
    size_t max_size;     /* default (0) 8 */
    size_t max_creating; /* creates running at once; default (0) 2 */

    /* Times in ms (0 = default, PK_NEVER = off, PK_ALWAYS = zero). */
    int acquire_timeout_ms; /* deadline of pk_pool_acquire_async when it is
                               given 0 (default 30000) */
    int idle_timeout_ms;    /* retire idle above min_size/min_idle; off */
    int max_lifetime_ms;    /* retire older than this (minus jitter); off */
    int lifetime_jitter_ms; /* up to this much earlier; default 1/40 of
                               max_lifetime */
    int check_after_ms;     /* check before lending one idle this long;
                               default 1000 (PK_ALWAYS: every borrow) */
    int check_interval_ms;  /* maintenance checks idle ones this often;
                               off */
    int held_too_long_ms;   /* report leases out this long; off */
    int maintain_interval_ms; /* maintenance thread period; default 1000 */
    /* After a failed create, the next waits backoff_initial_ms, doubling
     * per failure in a row up to a cap, jittered to between half and all
     * of it. The core retries on its own: see pk_pool_acquire. */
    int backoff_initial_ms; /* first wait after a failed create; default 10 */
    int max_backoff_ms;     /* the cap while nobody waits; default 10000 */

    unsigned long max_uses; /* retire after this many leases; 0 = no limit */
    int order;              /* enum pk_pool_order */
    unsigned flags;         /* enum pk_pool_flags */

    /* Member of this group (see pk_pool_group_create), or NULL. */
    pk_pool_group *group;

    /* The backoff's cap while an acquirer or a ticket waits (default 100;
     * PK_NEVER: max_backoff_ms applies then too; never above
     * max_backoff_ms): a pool is back within about this long after its
     * server is. max_creating is what spares the server a storm. */
    int max_backoff_waiting_ms;
} pk_pool_options;

/* Fills opts with every default spelled out (hooks NULL).
 * Returns: 0, PK_EINVAL. Owner: opts borrowed. Threads: safe. */
PK_API int pk_pool_options_init(pk_pool_options *opts);

/* Checks options as pk_pool_create does, and says what is wrong: err
 * (may be NULL) names the field and the rule it breaks ("pk_pool_options:
 * min_idle (9) is above max_size (8)"); on success err is cleared. The
 * rules: create is set; order and flags are enum values; the four sizes
 * are at most PK_POOL_SIZE_MAX; min_size and min_idle are at most
 * max_size (8 when 0); every time is 0, positive,
 * PK_NEVER or PK_ALWAYS, but maintain_interval_ms is 0 or positive and
 * lifetime_jitter_ms is 0 or positive and at most max_lifetime_ms.
 * Returns: 0, PK_EINVAL. Owner: borrows both. Threads: safe. */
PK_API int pk_pool_options_check(const pk_pool_options *opts, pk_error *err);

/* Makes a pool. Resources are created lazily, except that min_size and
 * min_idle are filled on the creating thread before return (a failed
 * create there is not an error: maintenance retries it). A min_size or
 * min_idle starts the maintenance thread (unless
 * PK_POOL_MANUAL_MAINTENANCE), which keeps the pool at its floor.
 * pk_pool_options_check says why it returns PK_EINVAL.
 * Returns: 0, PK_EINVAL (see pk_pool_options_check), PK_ENOMEM,
 * PK_EFORKED, PK_ECREATE (the maintenance thread a policy needs could not
 * be started).
 * Owner: *out returned owned (pk_pool_destroy); opts borrowed.
 * Threads: safe. */
PK_API int pk_pool_create(pk_pool **out, const pk_pool_options *opts);

/* ---- leases ----------------------------------------------------------- */

/* A lease: caller storage filled by acquire. `resource` is the caller's
 * until release; the fields ending in _ are the pool's. */
typedef struct pk_lease {
    void *resource;
    pk_pool *pool_;
    struct pk__slot *slot_;
    uint64_t ticket_;
} pk_lease;

/* Facts about a leased resource. */
typedef struct pk_lease_info {
    uint64_t age_ns;        /* since it was created */
    uint64_t idle_ns;       /* how long it sat idle before this lease; 0
                               unless a policy reads the clock (a check
                               hook with check_after, idle_timeout,
                               max_lifetime, check_interval,
                               held_too_long, or a group): a lend
                               reads no clock otherwise */
    unsigned long uses;     /* leases so far, this one included */
    uint64_t generation;    /* the pool generation it was created in, or
                               last passed a check in */
    const char *file;       /* acquire site (static string) */
    int line;
} pk_lease_info;

enum pk_release_status {
    PK_RELEASE_OK = 0,     /* healthy: reset, then back to idle */
    PK_RELEASE_BROKEN = 1, /* destroy it; may bump the generation */
    PK_RELEASE_DETACH = 2  /* forget it: no destroy, the caller owns it */
};

/* Lends a resource, waiting up to timeout_ms (0: no wait; a 0-timeout call
 * takes an idle resource or returns PK_EAGAIN: it never creates, see
 * pk_pool_acquire_or_create; PK_WAIT_FOREVER).
 * Waiters are served in arrival order. Use the pk_pool_acquire macro, which
 * records the acquire site for leak reports.
 * Failed creates: the pool retries them itself, after a backoff (see the
 * options), while anyone waits for one, and hands what the retry makes to
 * the longest waiter; this thread may run the retry itself. A call whose
 * deadline reaches past the next attempt waits for it (and the ones after,
 * within its deadline); one whose deadline ends first fails at once with
 * the last create's code, sys and message, replayed and saying so ("last
 * create failed 1.2 s ago: <message>; next attempt in 800 ms"), or with
 * its own create's error if it just ran the one that failed.
 * Returns: 0, PK_EINVAL, PK_EAGAIN, PK_ETIMEDOUT, PK_ESHUTDOWN,
 * PK_EFORKED, PK_ENOMEM, or a failed create's code (err gets its detail,
 * as above). Every failure fills err (when not NULL): the code, and a
 * message that names the situation ("timed out after 2000 ms waiting; 8
 * of 8 lent"); success leaves it alone.
 * Owner: lease and err borrowed (err may be NULL); file must be a static
 * string. Threads: safe; create and check may run on this thread.
 * Timeout: a create or check hook that this thread runs is not
 * interrupted by timeout_ms: the call returns when the hook does, which
 * may be after the deadline (a create hook that takes 2 s makes a 100 ms
 * acquire on an empty pool last 2 s). Bound the hooks themselves (a
 * connect timeout), or use pk_pool_acquire_async, whose creates run on
 * the helper thread, so the caller can give up on its own timer
 * (pk_pool_ticket_free). */
PK_API int pk_pool_acquire_at(pk_pool *pool, pk_lease *lease, int timeout_ms,
                              pk_error *err, const char *file, int line);
#define pk_pool_acquire(pool, lease, timeout_ms, err) \
    pk_pool_acquire_at((pool), (lease), (timeout_ms), (err), __FILE__, __LINE__)

/* Lends an idle resource, or makes one, but never waits for a release:
 * the acquire of a caller that must not block on other callers yet may
 * pay for a create (a cold pool gets a resource, where a 0 ms
 * pk_pool_acquire answers PK_EAGAIN). With nothing idle and room under
 * max_size it runs a create on this thread (under max_creating and a
 * group's budget, for which another member's idle resource may be
 * retired, as for any acquire) and lends what that create made; while
 * max_creating creates are under way it waits for one to end (which may
 * also bring it a resource). With the pool full, paused, or a group's
 * budget spent with nothing to retire, it returns PK_EAGAIN at once.
 * While creates fail: its own create's error, or, before the next attempt
 * is due, the last one replayed (as pk_pool_acquire says). If what it
 * got fails its check it is retired and this returns PK_EAGAIN (no
 * second try). Use the pk_pool_acquire_or_create macro (it records the
 * acquire site).
 * Returns: 0, PK_EAGAIN, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED, PK_ENOMEM,
 * or a failed create's code; every failure fills err (when not NULL).
 * Owner: lease and err borrowed (err may be NULL); file must be a static
 * string. Threads: safe; create and check may run on this thread.
 * Timeout: none of its own: it takes as long as the creates it runs or
 * waits for (the create hooks bound that). */
PK_API int pk_pool_acquire_or_create_at(pk_pool *pool, pk_lease *lease,
                                        pk_error *err, const char *file,
                                        int line);
#define pk_pool_acquire_or_create(pool, lease, err) \
    pk_pool_acquire_or_create_at((pool), (lease), (err), __FILE__, __LINE__)

/* Gives a lease back. status is a pk_release_status. OK runs the reset
 * hook, then hands the resource to the longest waiter or makes it idle;
 * BROKEN destroys it and, when there is a check hook, bumps the
 * generation (every idle resource made before is checked before it is
 * lent again; PK_POOL_NO_GENERATION_BUMP turns this off); DETACH forgets it (the caller now owns the resource) and a
 * replacement may be created. A resource that reached max_uses or
 * max_lifetime, or that reset calls unclean, is retired here.
 * Returns: 0; PK_EINVAL (NULL, a lease already released, a lease of
 * another pool, a bad status: nothing changes); PK_EFORKED.
 * Owner: takes the lease (cleared on success). Threads: safe; reset and
 * destroy run on this thread. Valid after pk_pool_close and
 * pk_pool_destroy: the resource is then destroyed. In a child after
 * fork(), an inherited lease's release returns PK_EFORKED until the child
 * calls pk_pool_destroy on the pool; after that it is valid: it forgets
 * the resource (forget_in_child, not for DETACH; no destroy hook) and
 * returns 0. */
PK_API int pk_pool_release(pk_pool *pool, pk_lease *lease, int status);

/* Reads the facts of a held lease into *info.
 * Returns: 0, PK_EINVAL (NULL or a lease not held), PK_EFORKED.
 * Owner: borrows both. Threads: the lease holder. */
PK_API int pk_lease_info_get(const pk_lease *lease, pk_lease_info *info);

/* ---- the non-blocking acquire, for event loops ------------------------- */

/* Called at most once, when the ticket is ready (a lease is waiting to be
 * taken, or the request failed). Runs on the releasing thread, the helper
 * thread, or the thread in pk_pool_maintain, with no poolkit lock held; it
 * must not block. It never starts after pk_pool_ticket_take or
 * pk_pool_ticket_free has returned on the ticket: if the owner takes or
 * frees the ticket first, the callback is skipped, and a take or free
 * called while the callback runs on another thread waits for it to
 * return. The callback may take or free the ticket itself; a ticket's
 * result is handed out once (a second take returns PK_EINVAL). Choose one
 * consumer: the callback, or the owner outside it. */
typedef void (*pk_ticket_fn)(void *arg, pk_pool_ticket *ticket);

/* Asks for a resource without blocking. If one is idle the ticket is ready
 * at once (*ready = 1 and the callback is not called). Otherwise the
 * request joins the waiters in arrival order; any create it needs runs on
 * a helper thread (or inside pk_pool_maintain() with
 * PK_POOL_MANUAL_MAINTENANCE), never on the caller. While creates fail,
 * the ticket waits for the retries as a blocking acquire does (see
 * pk_pool_acquire): one whose deadline ends before the next attempt fails
 * as soon as that is known, without waiting for its deadline: with the
 * error of the create the helper made for it (for the oldest waiting
 * ticket) as is, if that create failed last, else with the last create's
 * error replayed (at once: *ready = 1 when that is already so in this
 * call). When it is served, times out (timeout_ms; 0 =
 * acquire_timeout_ms) or fails, cb runs (if given) and the ticket's
 * eventfd, if pk_pool_ticket_fd made one, becomes readable.
 * Returns: 0, PK_EINVAL, PK_ENOMEM, PK_ESHUTDOWN, PK_EFORKED, PK_ECREATE
 * (it must wait, and the helper thread could not be started).
 * Owner: *out returned owned (pk_pool_ticket_take or pk_pool_ticket_free).
 * Threads: safe. */
PK_API int pk_pool_acquire_async_at(pk_pool *pool, pk_pool_ticket **out,
                                    int timeout_ms, pk_ticket_fn cb,
                                    void *arg, int *ready, const char *file,
                                    int line);
#define pk_pool_acquire_async(pool, out, timeout_ms, cb, arg, ready)        \
    pk_pool_acquire_async_at((pool), (out), (timeout_ms), (cb), (arg),      \
                             (ready), __FILE__, __LINE__)

/* The ticket's eventfd: readable once the ticket is ready. Made on the
 * first call (a ticket used through its callback or by polling take costs
 * no descriptor); later calls return the same one. Do not close it or
 * read it: pk_pool_ticket_take and _free close it.
 * Returns: the descriptor, PK_EINVAL, PK_ENOMEM, or -errno of eventfd()
 * (-EMFILE: the process is out of descriptors). Threads: safe. */
PK_API int pk_pool_ticket_fd(pk_pool_ticket *ticket);

/* Takes the result of a ticket and frees the ticket. If the ticket's
 * callback is running on another thread, waits for it to return; once
 * this returns, the callback will not run.
 * Returns: 0 (lease filled), PK_EAGAIN (not ready yet: the ticket stays),
 * PK_EINVAL (NULL, or the result was taken already: by the callback
 * while this call waited for it, say), PK_EFORKED (in a child after
 * fork()), or the request's error (PK_ETIMEDOUT, PK_ESHUTDOWN, a create
 * error replayed, as pk_pool_acquire says). Every failure fills err (when
 * not NULL) with the code and a message.
 * Owner: takes the ticket unless PK_EAGAIN, PK_EINVAL or PK_EFORKED.
 * Threads: one at a time per ticket (its own callback may call it). */
PK_API int pk_pool_ticket_take(pk_pool_ticket *ticket, pk_lease *lease,
                               pk_error *err);

/* Withdraws a ticket and frees it; a lease it already holds goes back to
 * the pool. If the ticket's callback is running on another thread, waits
 * for it to return; once this returns, the callback will not run (its arg
 * may be freed). In a child after fork() it frees only the child's copy of
 * the ticket. NULL is a no-op.
 * Threads: one at a time per ticket (its own callback may call it). */
PK_API void pk_pool_ticket_free(pk_pool_ticket *ticket);

/* ---- running the pool ------------------------------------------------- */

/* Runs one maintenance pass now: retires expired and surplus idle
 * resources, checks idle ones due for a check, reports leases held too
 * long, tops up to min_size and min_idle, and serves pending async
 * tickets, the create retries they wait for included. Hooks run on this
 * thread. With PK_POOL_MANUAL_MAINTENANCE, call it again by the time
 * pk_pool_stats says the next create attempt is due (next_attempt_in_ns),
 * as well as every maintain_interval.
 * Returns: 0, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED. Threads: safe. */
PK_API int pk_pool_maintain(pk_pool *pool);

/* Changes the sizes while the pool runs, with the options' meaning:
 * max_size 0 is the default, 8 (as at create); min_size and min_idle 0
 * are none. A smaller max_size retires idle resources at once and lent
 * ones as they come back.
 * Returns: 0, PK_EINVAL (a size above PK_POOL_SIZE_MAX, min_idle or
 * min_size above max_size: nothing changes), PK_ESHUTDOWN, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_pool_resize(pk_pool *pool, size_t min_size, size_t min_idle,
                          size_t max_size);

/* Pause: acquires wait (and async tickets stay pending) until resume;
 * releases still work. Returns: 0, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED.
 * Threads: safe. */
PK_API int pk_pool_pause(pk_pool *pool);
PK_API int pk_pool_resume(pk_pool *pool);

/* Bumps the generation: every idle resource is retired now, and every lent
 * one is retired when it comes back, so nothing made before the call is
 * lent again (after a database restart, say).
 * Returns: 0, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED. Threads: safe. */
PK_API int pk_pool_evict_all(pk_pool *pool);

/* Retires idle resources now, the longest idle first, until at most keep
 * are idle (the memory pool's trim: empty slabs back to the system).
 * min_size and min_idle are not looked at: maintenance makes up for them
 * later, as it does after any retirement. The destroy hooks run on this
 * thread. *retired (optional) gets how many went.
 * Returns: 0, PK_EINVAL, PK_ESHUTDOWN, PK_EFORKED. Threads: safe. */
PK_API int pk_pool_trim(pk_pool *pool, size_t keep, size_t *retired);

/* Stops lending: waiters and pending tickets get PK_ESHUTDOWN, idle
 * resources are destroyed, and the call waits up to timeout_ms for lent
 * ones to come back (each is destroyed on release). Each lease still out
 * when it stops waiting is reported once (not again by a later close or
 * destroy): PK_EVENT_LEASE_OUT_AT_CLOSE with its acquire site, or with no
 * event hook one rate-limited stderr line ("poolkit: a lease was still
 * out at close, acquired at app.c:12, out for 1500 ms"; the time only if
 * the pool reads a clock; POOLKIT_LOG=off silences it, future.h). Not with
 * PK_POOL_QUIET_CLOSE.
 * Returns: 0 (all back), PK_ETIMEDOUT (some still out; they are destroyed
 * when released), PK_EINVAL, PK_EFORKED. Calling it again is allowed.
 * Threads: safe; the event hook runs on this thread, no lock held. */
PK_API int pk_pool_close(pk_pool *pool, int timeout_ms);

/* Closes (without waiting, so each lease still out is reported as
 * pk_pool_close says) and frees the handle; memory a lease still points
 * at lives until that lease is released. In a child after fork(),
 * it calls only forget_in_child, on the idle resources; a lent one is
 * forgotten when its lease comes back (pk_pool_release), and the memory
 * is freed with the last one (a lease held by a thread that did not
 * survive the fork never comes back: its resource and the pool's memory
 * stay). NULL is a no-op.
 * Owner: takes pool. Threads: exclusive (no acquire may be running). */
PK_API void pk_pool_destroy(pk_pool *pool);

/* ---- stats ------------------------------------------------------------ */

typedef struct pk_pool_stats {
    size_t size;           /* alive resources, creating ones included */
    size_t idle;
    size_t lent;
    size_t creating;
    size_t waiters;
    size_t max_size;
    uint64_t generation;
    uint64_t created;
    uint64_t destroyed;
    uint64_t detached;
    uint64_t acquires;     /* successful acquires */
    uint64_t timeouts;
    uint64_t check_failures;
    uint64_t create_failures;
    uint64_t wait_p50_ns;  /* acquire wait; a call that did not wait is 0 */
    uint64_t wait_p99_ns;
    uint64_t wait_max_ns;
    /* The create backoff. While creates fail (none has succeeded since):
     * how long ago the last one failed (policy clock), and how long until
     * the next attempt may run (0: now; with the cap of this moment, short
     * if anyone waits). UINT64_MAX in both when creates do not fail. */
    uint64_t last_create_age_ns;
    uint64_t next_attempt_in_ns;
    int last_create_error; /* the last failed create's code, or 0 */
} pk_pool_stats;

/* Fills *out with a consistent snapshot. Returns: 0, PK_EINVAL,
 * PK_EFORKED. Threads: safe. */
PK_API int pk_pool_stats_get(pk_pool *pool, pk_pool_stats *out);

/* Clears the acquire-wait histogram (counters keep counting).
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_pool_stats_reset_wait(pk_pool *pool);

/* ---- deadlines --------------------------------------------------------
 *
 * The clock and the deadline arithmetic behind every timeout_ms of
 * poolkit, for code that waits on something of its own (a socket, say)
 * under a caller's timeout: turn the timeout into a deadline once, then
 * give each step what is left of it, so a timeout covering several steps
 * is not restarted by each. A deadline is nanoseconds on pk_clock_ns()'s
 * scale; PK_NO_DEADLINE is none. */
#define PK_NO_DEADLINE UINT64_MAX

/* Now, in nanoseconds, on CLOCK_MONOTONIC (the clock every poolkit wait
 * uses). Cannot fail. Threads: safe. */
PK_API uint64_t pk_clock_ns(void);

/* The deadline timeout_ms from now: PK_NO_DEADLINE for PK_WAIT_FOREVER,
 * now for 0. Any other negative timeout is not a timeout (PK_EINVAL in
 * every call that takes one); here it gives now as well, a deadline
 * already passed, so a mistake ends a wait at once instead of never.
 * Returns: the deadline. Threads: safe. */
PK_API uint64_t pk_deadline_after(int timeout_ms);

/* Milliseconds left until deadline, rounded up, so a wait of that many ms
 * (poll, a timed wait) never ends before the deadline: PK_WAIT_FOREVER for
 * PK_NO_DEADLINE, 0 once the deadline has passed, at most INT_MAX.
 * Returns: the milliseconds (a timeout_ms to pass on). Threads: safe. */
PK_API int pk_deadline_ms_left(uint64_t deadline);

/* Waits until fd is ready for events (poll(2) bits: POLLIN, POLLOUT...)
 * or the deadline passes. The deadline is looked at first: once it has
 * passed this returns 0 without looking at fd, so a loop of waits and
 * reads ends by the deadline even while data keeps coming. A signal
 * (EINTR) does not end the wait. POLLERR and POLLHUP count as ready: the
 * next read or write says what happened.
 * Returns: 1 (ready), 0 (the deadline passed), PK_EINVAL (fd negative or
 * not open, events 0), PK_ENOMEM, or another -errno of poll().
 * Threads: safe. */
PK_API int pk_wait_fd(int fd, short events, uint64_t deadline);

/* ---- groups ----------------------------------------------------------- */

/* A group: keyed pools that draw on one budget of `max_total` resources.
 * Waiters that need a create while the budget is spent (blocking acquirers
 * and async tickets alike) are served in arrival order across keys: a
 * unit given back goes to the longest of them. When the budget is spent
 * and a waiter's pool has nothing idle, the group retires the longest-idle
 * resource of another member (never one that would take that member
 * below its min_size) and lets the waiter's pool create one. A
 * resource released to a key that has waiters of its own goes to them
 * first, as in any pool (retiring it to serve an earlier waiter of another
 * key would cost a destroy and a create at every alternation). Members
 * are ordinary pools made with options.group set.
 * Returns: 0, PK_EINVAL (max_total 0), PK_ENOMEM.
 * Owner: *out returned owned (pk_pool_group_destroy). Threads: safe. */
PK_API int pk_pool_group_create(pk_pool_group **out, size_t max_total);

/* Reads the budget in use (alive resources across members) and the cap.
 * Returns: 0, PK_EINVAL, PK_EFORKED. Threads: safe. */
PK_API int pk_pool_group_usage(pk_pool_group *group, size_t *used,
                               size_t *max_total);

/* Frees the group. Every member pool must have been destroyed first, and
 * every lease of a member released (a late release gives its unit back
 * to the group). In a child after fork() it frees memory only.
 * NULL is a no-op. Owner: takes group. Threads: exclusive. */
PK_API void pk_pool_group_destroy(pk_pool_group *group);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_POOL_H */
