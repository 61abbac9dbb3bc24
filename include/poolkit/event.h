/* poolkit/event.h - what a pool or a future tells its event hook.
 *
 * Every poolkit object that reports events (a pool, a future, the
 * thread pool) takes a pk_event_fn and a user pointer in its options or
 * at create; the kinds are one list for all of them. Which kinds each
 * object raises is listed at the top of its header (pool.h,
 * threadpool.h, future.h); pk_event_name names a kind for a log. */
#ifndef POOLKIT_EVENT_H
#define POOLKIT_EVENT_H

#include <stdint.h>

#include <poolkit/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What an event hook is told. Later modules append kinds. */
typedef enum pk_event_kind {
    PK_EVENT_CREATED = 1,       /* a resource was made */
    PK_EVENT_DESTROYED,         /* a resource was retired */
    PK_EVENT_CHECK_FAILED,      /* check or reset said unhealthy */
    PK_EVENT_CREATE_FAILED,     /* create failed (error holds why) */
    PK_EVENT_TIMEOUT,           /* an acquire timed out */
    PK_EVENT_HELD_TOO_LONG,     /* a lease is out longer than held_too_long */
    PK_EVENT_DETACHED,          /* a resource was released with DETACH */
    PK_EVENT_FUTURE_UNREAD,     /* a failed future was released unread */
    PK_EVENT_WORKER_DIED,       /* a worker thread or process died */
    PK_EVENT_SLOW_TASK,         /* a task ran longer than its threshold */
    PK_EVENT_LEASE_OUT_AT_CLOSE, /* a lease was still out when the pool
                                    closed (file, line: its acquire site) */
    PK_EVENT_MISUSE             /* a debug check caught the caller's bug: a
                                   double free, a foreign pointer, a write
                                   after free (error says which) */
} pk_event_kind;

typedef struct pk_event {
    pk_event_kind kind;
    void *resource;         /* the resource concerned, or NULL */
    const char *file;       /* acquire site of the lease, or NULL */
    int line;
    uint64_t duration_ns;   /* held / waited / ran, where it applies */
    const pk_error *error;  /* detail for failures, or NULL */
} pk_event;

/* Returns the kind's name: the enum's name after PK_EVENT_, in lower
 * case ("created", "destroyed", "check_failed", "create_failed",
 * "timeout", "held_too_long", "detached", "future_unread",
 * "worker_died", "slow_task", "lease_out_at_close", "misuse"); "unknown" for any
 * other value.
 * Owner: returns a static string, never NULL. Threads: safe. */
PK_API const char *pk_event_name(int kind);

/* An event hook. Runs on the thread that caused the event or on the
 * maintenance thread, with no poolkit lock held; it must not block and
 * must not call back into the pool that raised it. ev is borrowed for the
 * call only. */
typedef void (*pk_event_fn)(void *user, const pk_event *ev);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_EVENT_H */
