/* tests/support/pool_helpers.h - shared helpers for the resource-pool tests
 * (test_pool.c, test_pool_async.c, test_pool_group.c).
 *
 *   ph_clock  a manual test clock for options.clock: time moves only when
 *             the test advances it, so expiry, backoff and check_after are
 *             driven without sleeping.
 *   ph_ctx    a scripted resource context: its hooks (ph_create,
 *             ph_destroy, ph_check, ph_reset, ph_event_hook, ph_user_free)
 *             count every call, keep the number of live resources, record
 *             events, and can be told to fail creates, to block creates or
 *             checks on a gate, or (per resource) to fail check or reset.
 *
 * Hooks run on pool threads, so they never assert: everything is
 * recorded (atomics, or arrays under ctx->lock) and the test thread
 * asserts on it. Only the "test-thread helpers" at the end assert
 * (cmocka); call them from the test thread alone. */
#ifndef PK_TESTS_POOL_HELPERS_H
#define PK_TESTS_POOL_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <poolkit/pool.h>

#define PH_MS 1000000ull /* nanoseconds in a millisecond */

/* ---- manual clock ---------------------------------------------------- */

typedef struct ph_clock {
    _Atomic uint64_t ns;
} ph_clock;

/* Starts at 1 s (not 0, so "time 0" is never special). */
void ph_clock_init(ph_clock *c);
/* For options.clock; clock_user is the ph_clock. */
uint64_t ph_clock_read(void *clock_user);
void ph_clock_advance_ms(ph_clock *c, uint64_t ms);

/* ---- scripted resources ---------------------------------------------- */

/* What ph_create makes. The test may set bad (check fails) or dirty
 * (reset fails) on a leased item. */
typedef struct ph_item {
    int id;                 /* 1, 2, 3... in creation order, per ctx */
    int tag;                /* ctx->tag at creation (tells pools apart) */
    _Atomic int bad;
    _Atomic int dirty;
} ph_item;

#define PH_MAX_EVENTS 256
#define PH_MAX_RECORD 256

typedef struct ph_event {
    pk_event_kind kind;
    void *resource;
    const char *file;
    int line;
    uint64_t duration_ns;
    int err_code;           /* ev->error->code, or 0 */
    char msg[PK_ERROR_MSG_SIZE];
} ph_event;

typedef struct ph_ctx {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int tag;

    /* Counters. */
    _Atomic int next_id;
    _Atomic int create_calls;   /* every call of ph_create */
    _Atomic int created;        /* calls that succeeded */
    _Atomic int destroy_calls;
    _Atomic int check_calls;
    _Atomic int reset_calls;
    _Atomic int live;           /* created minus destroyed or freed */
    _Atomic int in_create, max_in_create;
    _Atomic int in_check;
    _Atomic int user_free_calls;
    _Atomic int destroys_at_user_free; /* destroy_calls seen by user_free */

    /* Under lock. */
    bool create_gate_closed;    /* creates wait until it opens */
    bool check_gate_closed;     /* checks wait until it opens */
    int gate_timeouts;          /* a gate wait gave up (5 s): a test bug */
    int fail_creates;           /* fail this many creates; -1: all */
    int fail_code, fail_sys;
    char fail_msg[128];
    pthread_t create_thread[PH_MAX_RECORD];
    int n_create_thread;
    void *destroyed[PH_MAX_RECORD]; /* in order */
    int n_destroyed;
    void *checked[PH_MAX_RECORD];
    int n_checked;
    ph_event events[PH_MAX_EVENTS];
    int n_events;
} ph_ctx;

void ph_ctx_init(ph_ctx *c);
void ph_ctx_fini(ph_ctx *c);

/* pk_pool_options_init, then every ph_ hook with user = event_user = c,
 * and the manual clock if clk is not NULL. */
void ph_options(pk_pool_options *o, ph_ctx *c, ph_clock *clk);

int ph_create(void *user, void **res, pk_error *err);
void ph_destroy(void *user, void *res);
int ph_check(void *user, void *res, pk_error *err);
int ph_reset(void *user, void *res);
void ph_event_hook(void *user, const pk_event *ev);
void ph_user_free(void *user);

/* Frees an item the test owns (after a DETACH). */
void ph_item_free(ph_ctx *c, void *res);
int ph_id(const void *res);

/* Fail the next n creates (-1: every one until called again with 0) with
 * code, sys and message (NULL: the hook sets no message). */
void ph_fail_creates(ph_ctx *c, int n, int code, int sys, const char *msg);
void ph_create_gate(ph_ctx *c, bool closed);
void ph_check_gate(ph_ctx *c, bool closed);

int ph_count_events(ph_ctx *c, pk_event_kind kind);
/* Copies the first event of kind into *out; false if none. */
bool ph_find_event(ph_ctx *c, pk_event_kind kind, ph_event *out);
int ph_destroyed_count(ph_ctx *c, const void *res);
int ph_checked_count(ph_ctx *c, const void *res);
pthread_t ph_create_thread(ph_ctx *c, int i);

/* ---- waiting without assertions -------------------------------------- */

uint64_t ph_now_ns(void);
void ph_sleep_ms(int ms);
/* Polls until stats.waiters == n (true) or timeout_ms passes (false). */
bool ph_wait_waiters(pk_pool *p, size_t n, int timeout_ms);
/* Polls until *v >= n (true) or timeout_ms passes (false). */
bool ph_wait_atomic(_Atomic int *v, int n, int timeout_ms);
/* Polls until at least n events of kind were recorded (true) or
 * timeout_ms passes (false). Events from pool threads may be emitted
 * after the result they go with is visible. */
bool ph_wait_events(ph_ctx *c, pk_event_kind kind, int n, int timeout_ms);
/* Polls fd for POLLIN: true if readable within timeout_ms. */
bool ph_fd_readable(int fd, int timeout_ms);

/* ---- a blocking acquirer on its own thread --------------------------- */

typedef struct ph_acquirer {
    pk_pool *pool;
    int timeout_ms;
    bool release_at_once;       /* release OK right after recording */
    _Atomic int *seq;           /* if set: order = fetch_add(seq) on success */
    pthread_t thread;
    /* Results, read after ph_acquirer_join. */
    int rc;
    int order;
    void *resource;
    int res_id, res_tag;        /* of the ph_item, read while held */
    pk_lease lease;             /* held unless release_at_once */
    pk_error err;
    uint64_t waited_ns;
    _Atomic int done;
} ph_acquirer;

/* As ph_acquirer_start's timeout_ms: the thread calls
 * pk_pool_acquire_or_create instead. */
#define PH_OR_CREATE (-1000)
/* Starts a thread that acquires once; returns pthread_create's result. */
int ph_acquirer_start(ph_acquirer *a, pk_pool *p, int timeout_ms,
                      bool release_at_once, _Atomic int *seq);
void ph_acquirer_join(ph_acquirer *a);
/* Joins n acquirers, asserts that each got a resource and gives it back
 * (test thread only). */
void ph_acquirers_join_served(pk_pool *p, ph_acquirer *a, int n);

/* ---- test-thread helpers (these assert) ------------------------------ */

/* A cmocka fixture: the test file keeps its contexts and clock and passes
 * the fixture as the prestate, e.g.
 *   static ph_fixture fx = { ctx, NCTX, &clk, 0 };
 *   cmocka_unit_test_prestate_setup_teardown(f, ph_setup, ph_teardown, &fx)
 * ph_setup inits the n contexts (tagged 0..n-1) and the clock and notes
 * pk__alloc_live(); ph_teardown asserts that every context has no live
 * resource and no gate timeout, that poolkit leaked nothing, and finis
 * the contexts. */
typedef struct ph_fixture {
    ph_ctx *ctx;
    int n;
    ph_clock *clk;
    long live_at_start;
} ph_fixture;

int ph_setup(void **state);
int ph_teardown(void **state);

/* Each asserts that the call returned 0 (and, where there is one, that
 * the result is not NULL). ph_take waits up to PH_LONG_MS. */
#define PH_LONG_MS 5000
pk_pool *ph_new_pool(const pk_pool_options *o);
pk_pool_stats ph_stats(pk_pool *p);
void *ph_take(pk_pool *p, pk_lease *l);
void ph_give(pk_pool *p, pk_lease *l);

#endif /* PK_TESTS_POOL_HELPERS_H */
