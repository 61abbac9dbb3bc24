/* lib/pool/pool_int.h - the pool's private structures, shared by the files
 * of the resource pool; the files and their order are listed at the top
 * of pool.c and in the declarations at the end of this header.
 *
 * Every field below `lock` is protected by it unless its comment says
 * otherwise. */
#ifndef PK_LIB_POOL_INT_H
#define PK_LIB_POOL_INT_H

#include <poolkit/pool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../kit/dlist.h"
#include "../kit/hist.h"
#include "../kit/sync.h"

#define PK__POOL_MAGIC 0x706f6f6cu /* "pool" */
/* max_size 0 means this, at create and in pk_pool_resize (pool.h). */
#define PK__POOL_DEFAULT_MAX_SIZE 8

/* Slot states. A slot struct outlives its resource: it goes back to the
 * pool's free list and is freed only with the pool, so a stale lease never
 * points at freed memory.
 *   FREE     -> CREATING (reserve_create)
 *   CREATING -> IDLE or LENT (deliver) | FREE (create failed)
 *   IDLE     -> LENT (acquire) | RETIRING (maintenance, evict, resize)
 *               | CHECKING (maintenance check)
 *   CHECKING -> IDLE | RETIRING
 *   LENT     -> IDLE | LENT (hand-off) | RETIRING | FREE (detach)
 *   RETIRING -> FREE (after the destroy hook) */
enum pk__slot_state {
    PK__S_FREE = 0,
    PK__S_CREATING,
    PK__S_IDLE,
    PK__S_LENT,
    PK__S_CHECKING,
    PK__S_RETIRING
};

struct pk__slot {
    struct pk__dnode link;        /* p->idle_list or p->free_slots */
    struct pk__slot *all_next;    /* every slot ever made (for scans) */
    void *res;
    int state;
    bool held_reported;
    bool out_reported;            /* still out at close: reported */
    /* Names one lease: bumped at each lend and each release (and when the
     * slot goes back to the free list), so a lease whose ticket no longer
     * matches is stale. */
    uint64_t ticket;
    uint64_t created_ns;          /* policy clock */
    uint64_t expires_ns;          /* lifetime end, jitter applied */
    uint64_t idle_since_ns;       /* policy clock, when it went idle */
    uint64_t checked_ns;          /* last check (maintenance) */
    uint64_t lent_ns;             /* policy clock, when lent */
    uint64_t idle_ns;             /* idle time before the current lease */
    unsigned long uses;
    uint64_t generation;
    const char *file;             /* acquire site of the current lease */
    int line;
};

/* Parking word values. */
enum { PK__W_HANDED = 1, PK__W_RETRY = 2, PK__W_FAIL = 3 };

struct pk__waiter {
    struct pk__dnode link;        /* p->wait_queue, while queued */
    pk__parker park;              /* set under the pool lock */
    struct pk__slot *slot;        /* handed slot (with W_HANDED) */
    int err;                      /* failure code (with W_FAIL) */
    bool needs_check;             /* set with slot */
    bool queued;
    /* pk_pool_acquire_or_create: what its own create makes is lent to it,
     * not to the head of the queue, and it parks only while a create is
     * under way (pool_wait.c). */
    bool keeps_own;
    const char *file;
    int line;
    int timeout_ms;               /* as asked for (for the messages) */
    struct pk_pool_ticket *ticket; /* async waiter, or NULL */
    /* A ticket: st_create_failures just after a create the helper made
     * for it failed (pool_maint.c). While no create failed since, that
     * error is its own, given as is rather than replayed (pool_async.c),
     * as a blocking acquirer gets the error of a create it ran. */
    uint64_t own_failure;
    /* Group budget request (pool_group.c); linked under the group lock. */
    struct pk__dnode glink;
    struct pk_pool *gpool;
    bool gqueued;                 /* under the group lock */
    _Atomic bool granted;         /* a budget unit waits for this waiter */
};

/* The slot or waiter owning a list node, NULL for NULL (an empty list's
 * head). The node comes first, so this costs nothing. */
_Static_assert(offsetof(struct pk__slot, link) == 0, "link first");
_Static_assert(offsetof(struct pk__waiter, link) == 0, "link first");

static inline struct pk__slot *
pk__slot_of(struct pk__dnode *n)
{
    return n ? PK__CONTAINER(n, struct pk__slot, link) : NULL;
}

static inline struct pk__waiter *
pk__waiter_of(struct pk__dnode *n)
{
    return n ? PK__CONTAINER(n, struct pk__waiter, link) : NULL;
}

/* The calls that go up the layers: a lower file calls them through
 * p->ops, set once at create (pool.c), so it needs no declaration of the
 * file above it. bg_main is pool_maint.c's, the other two pool_async.c's:
 * the background thread's body, a ticket handed a slot or an error, and
 * the announcement of ready tickets after an unlock. */
struct pk__pool_ops {
    void *(*bg_main)(void *pool);
    void (*ticket_ready_locked)(struct pk_pool *p, struct pk__waiter *w);
    void (*notify)(struct pk_pool_ticket *list);
};

struct pk_pool {
    unsigned magic;
    const struct pk__pool_ops *ops; /* immutable */
    unsigned fork_epoch;          /* immutable */
    pk__lock lock;

    /* Options, immutable after create except the sizes. */
    int (*create)(void *, void **, pk_error *);
    void (*destroy)(void *, void *);
    int (*check)(void *, void *, pk_error *);
    int (*reset)(void *, void *);
    void (*forget_in_child)(void *, void *);
    void (*user_free)(void *);
    void *user;
    pk_event_fn event;
    void *event_user;
    uint64_t (*clock)(void *);
    void *clock_user;
    bool needs_clock;             /* some policy reads the clock */
    size_t min_size, min_idle, max_size, max_creating;
    uint64_t acquire_timeout_ns, idle_timeout_ns, max_lifetime_ns,
        jitter_ns, check_after_ns, check_interval_ns, held_ns,
        interval_ns, backoff_initial_ns, max_backoff_ns,
        max_backoff_waiting_ns;
    unsigned long max_uses;
    int order;
    unsigned flags;
    struct pk_pool_group *group;
    struct pk_pool *group_next;   /* protected by the group's lock */
    uint64_t steal_skip;          /* group lock: the steal round in which
                                     this member had nothing to give */
    /* Hints for the group's choice of whom to take an idle resource from:
     * relaxed atomics written under this pool's lock, read without it. */
    _Atomic size_t idle_hint;
    _Atomic uint64_t oldest_idle_hint;

    /* Population. */
    struct pk__dlist idle_list;   /* head = most recently idle */
    struct pk__dlist free_slots;  /* a stack: pushed and popped at the head */
    struct pk__slot *all_slots;
    size_t alive;                 /* creating + idle + lent + checking */
    size_t idle;
    size_t lent;
    size_t creating;
    size_t checking;
    size_t retiring;              /* destroy hooks not yet finished */
    uint64_t generation;          /* bumped by failures */
    uint64_t evict_gen;           /* resources older than this retire */
    uint64_t rng;                 /* xorshift state for jitter */

    /* Waiters, in arrival order. */
    struct pk__dlist wait_queue;  /* of pk__waiter.link */
    size_t waiters;
    size_t async_waiters;

    /* Create failures: the backoff (pool_create.c). The next attempt is
     * not stored but computed (pk__pool_next_attempt_locked), since its
     * cap depends on whether anyone waits now. */
    unsigned fail_streak;         /* failed creates since the last success */
    uint64_t fail_ns;             /* policy clock, of the last failure */
    uint64_t fail_rand;           /* drawn at the failure: the jitter */
    pk_error last_err;

    bool paused, closed, destroyed;
    /* In a child after fork() (pool.c): destroyed there, with
     * child_leases inherited leases still out (under the lock, which the
     * child took over). */
    _Atomic bool child_destroyed;
    size_t child_leases;
    pk__cv drained;       /* close waits here for leases */
    size_t close_waiters;

    /* Tickets made ready under the lock, notified after it is dropped
     * (pk__pool_unlock). */
    struct pk_pool_ticket *notify_head;
    /* Parked waiters handed something under the lock, kicked after it is
     * dropped so the futex syscall is not made under the lock. */
    pk__parker *kick[8];
    unsigned n_kick;
    /* Tickets handed a slot that must be checked first, on the helper. */
    struct pk_pool_ticket *check_head;

    /* Background thread (maintenance and async creates). */
    pthread_t bg;
    bool bg_running, bg_stop, bg_kick;
    /* A group unit was granted to one of this pool's tickets: set by
     * pk__group_put without this pool's lock (seq_cst, then a broadcast
     * of bg_cond), tested by the background thread after it registers on
     * bg_cond and before it waits, so no grant is lost. */
    _Atomic bool bg_granted;
    pk__cv bg_cond;

    /* Stats (under lock) and the wait histogram (atomic). */
    uint64_t st_created, st_destroyed, st_detached, st_acquires,
        st_timeouts, st_check_failures, st_create_failures;
    /* Acquires that waited go to wait_hist; those that did not are
     * counted (under the lock: no atomic, no clock read) in
     * st_nowait_acquires. */
    uint64_t st_nowait_acquires, st_nowait_at_reset;
    pk__hist wait_hist;
};

/* Policy time. */
static inline uint64_t
pk__pool_now(const struct pk_pool *p)
{
    return p->clock ? p->clock(p->clock_user) : pk__now_ns();
}

static inline bool
pk__pool_forked(const struct pk_pool *p)
{
    return p->fork_epoch != pk__fork_epoch_fast();
}

/* Small event, emitted after the lock is dropped. */
struct pk__ev {
    pk_event_kind kind;
    void *res;
    const char *file;
    int line;
    uint64_t duration_ns;
    const pk_error *err;
};
void pk__pool_emit(struct pk_pool *p, const struct pk__ev *ev);

/* Drops the lock, then kicks waiters and notifies tickets made ready
 * while it was held: every unlock in the pool goes through here. */
void pk__pool_unlock_slow(struct pk_pool *p);

static inline void
pk__pool_unlock(struct pk_pool *p)
{
    if (p->n_kick || p->notify_head || p->close_waiters)
        pk__pool_unlock_slow(p);
    else
        pk__lock_release(&p->lock);
}

/* Internals shared by the parts of the pool. Functions named *_locked
 * run with p->lock held. */

/* The idle list keeps the most recently idled resource at the head: LIFO
 * pops the head (warm), FIFO pops the tail (rotation), and the tail is
 * always the longest idle (what trimming and groups retire first). Inline:
 * every plain acquire and release goes through one of them. */
void pk__pool_idle_hints_locked(struct pk_pool *p);

static inline void
pk__pool_idle_push_locked(struct pk_pool *p, struct pk__slot *s)
{
    s->state = PK__S_IDLE;
    pk__dlist_push_head(&p->idle_list, &s->link);
    p->idle++;
    if (p->group)
        pk__pool_idle_hints_locked(p);
}

static inline void
pk__pool_idle_remove_locked(struct pk_pool *p, struct pk__slot *s)
{
    pk__dlist_remove(&p->idle_list, &s->link);
    p->idle--;
    if (p->group)
        pk__pool_idle_hints_locked(p);
}

/* Takes the idle slot the pool's order lends next; NULL if none. */
static inline struct pk__slot *
pk__pool_idle_pop_locked(struct pk_pool *p)
{
    struct pk__slot *s = pk__slot_of(p->order == PK_POOL_FIFO
                                         ? p->idle_list.tail
                                         : p->idle_list.head);

    if (s)
        pk__pool_idle_remove_locked(p, s);
    return s;
}

/* The declarations below go file by file, bottom up: a file calls only
 * those above its own section (README, "Source layout"). */

/* pool_group.c: a group's budget (atomic, units taken by creates), its
 * queue of waiters across keys, its members. None of these may be called
 * with a pool lock held, except pk__group_take_or_queue. */
bool pk__group_try_take(struct pk_pool_group *g);
/* For a waiter's create: takes a unit, or queues w for one, in one group
 * lock section (so no unit given back meanwhile is lost). May be called
 * with p's lock held (the group lock is a leaf). */
bool pk__group_take_or_queue(struct pk_pool_group *g, struct pk_pool *p,
                             struct pk__waiter *w);
/* Returns a unit: to the longest budget waiter across keys, or to the
 * budget. */
void pk__group_put(struct pk_pool_group *g);
int pk__group_join(struct pk_pool_group *g, struct pk_pool *p);
void pk__group_leave(struct pk_pool_group *g, struct pk_pool *p);
bool pk__group_has_waiters(struct pk_pool_group *g);
/* Makes a unit for the head of the group queue (where
 * pk__group_take_or_queue put the waiter): calls retire_idle (that is
 * pk__pool_retire_oldest_idle) on other members, the longest idle first,
 * until one gives. Takes no waiter: a ticket may be gone by the time it
 * runs. */
void pk__group_steal(struct pk_pool_group *g, struct pk_pool *p,
                     bool (*retire_idle)(struct pk_pool *victim));
/* Takes w out of the group queue; gives back a unit granted but unused. */
void pk__group_leave_wait(struct pk_pool_group *g, struct pk__waiter *w);

/* pool_lock.c: the lock's deferred wakes, the wait queue, the background
 * thread's handle, events. */
/* Wakes w's parked thread with v: the word now, the futex after unlock. */
void pk__pool_wake_waiter_locked(struct pk_pool *p, struct pk__waiter *w,
                                 uint32_t v);
void pk__pool_waiter_enqueue(struct pk_pool *p, struct pk__waiter *w,
                             bool front);
void pk__pool_waiter_dequeue(struct pk_pool *p, struct pk__waiter *w);
/* Every waiter looks again (a create slot freed, a create failed, the
 * pool resized...): blocking ones are woken, tickets' thread kicked. */
void pk__pool_wake_retry_locked(struct pk_pool *p);
int pk__pool_bg_start_locked(struct pk_pool *p);
void pk__pool_bg_kick_locked(struct pk_pool *p);
void pk__pool_bg_stop(struct pk_pool *p);
void pk__pool_emit_simple(struct pk_pool *p, pk_event_kind kind, void *res,
                          const pk_error *err);

/* pool_slot.c: slots, the idle list, hand-off, retiring, freeing. */
/* A slot from the free list or a new one (NULL: out of memory), and back. */
struct pk__slot *pk__pool_slot_get(struct pk_pool *p);
void pk__pool_slot_put(struct pk_pool *p, struct pk__slot *s);
/* Lends s to the holder of a lease being filled now (counts it lent). */
void pk__pool_slot_lend(struct pk_pool *p, struct pk__slot *s, uint64_t now,
                        const char *file, int line);
bool pk__pool_slot_needs_check(const struct pk_pool *p,
                               const struct pk__slot *s, uint64_t now);
/* Gives a slot that stopped being lent (release OK, create, check passed)
 * to the longest waiter, or makes it idle. */
void pk__pool_deliver_locked(struct pk_pool *p, struct pk__slot *s,
                             uint64_t now);
/* A slot a create just made for self: lent to self if it keeps what it
 * makes (still queued and unserved, the pool not paused), else delivered
 * as above. */
void pk__pool_deliver_made_locked(struct pk_pool *p, struct pk__slot *s,
                                  uint64_t now, struct pk__waiter *self);
/* Hands idle slots to waiters (after a resume, a check passed). */
void pk__pool_serve_waiters_locked(struct pk_pool *p);
/* Removes s from the population; pk__pool_finish_retire, after the lock
 * is dropped, runs the destroy hook and frees the slot (it takes and
 * drops the lock) and returns true if the pool was freed. */
void pk__pool_unlink_retire_locked(struct pk_pool *p, struct pk__slot *s);
bool pk__pool_finish_retire(struct pk_pool *p, struct pk__slot *s);
bool pk__pool_retire_oldest_idle(struct pk_pool *victim);
bool pk__pool_may_free_locked(struct pk_pool *p);
/* Frees the pool: pk__pool_free calls user_free first; in a forked
 * child only the memory is freed. */
void pk__pool_free(struct pk_pool *p);
void pk__pool_free_memory(struct pk_pool *p);

/* pool_lease.c: one lend of a slot. */
/* Lends an idle resource if the fast path is open (no queue, not paused);
 * *needs_check says the caller must run pk__pool_check_lent first. */
struct pk__slot *pk__pool_take_idle_locked(struct pk_pool *p,
                                           const char *file, int line,
                                           bool *needs_check);
/* Checks a lent slot with no lock held; on failure retires it and returns
 * the check's code. */
int pk__pool_check_lent(struct pk_pool *p, struct pk__slot *s);
/* pk_pool_release past its argument checks, in the process that made the
 * pool. */
int pk__pool_release_lease(struct pk_pool *p, pk_lease *l, int status);

/* pool_create.c: creates and the backoff. */
size_t pk__pool_creates_wanted_locked(struct pk_pool *p);
bool pk__pool_can_create_locked(struct pk_pool *p, uint64_t now);
/* Not closed, not paused, and room under max_size (resources still being
 * retired counted): what pk_pool_acquire_or_create needs to try. */
bool pk__pool_has_room_locked(const struct pk_pool *p);
int pk__pool_create_one(struct pk_pool *p, struct pk__waiter *self);
/* The backoff. While creates fail, the next attempt is due at this
 * policy time (0 when they do not fail). */
uint64_t pk__pool_next_attempt_locked(const struct pk_pool *p);
/* When that is on CLOCK_MONOTONIC, for a thread that sleeps until then;
 * UINT64_MAX if no attempt is pending or it is due already. */
uint64_t pk__pool_retry_at_mono_locked(const struct pk_pool *p);
/* True if a waiter for a create whose deadline (CLOCK_MONOTONIC) comes
 * before the next attempt should fail now (with the replayed error). */
bool pk__pool_gives_up_locked(const struct pk_pool *p, uint64_t deadline);
/* Fills err with the last create's error, replayed and saying so. */
void pk__pool_replay_error_locked(const struct pk_pool *p, pk_error *err);

/* pool_wait.c: a blocking acquire's wait. */
/* Fills err for a call that got no resource, PK_ETIMEDOUT or PK_EAGAIN,
 * with a message that names the situation ("timed out after 2000 ms
 * waiting; 8 of 8 lent, the oldest acquired at app.c:89"). */
void pk__pool_explain_locked(const struct pk_pool *p, pk_error *err,
                             int code, int timeout_ms);
/* The same for pk_pool_acquire_or_create's PK_EAGAIN. */
void pk__pool_explain_own_locked(const struct pk_pool *p, pk_error *err);
/* pk__pool_acquire_wait's results besides error codes: GOT_LOCKED returns
 * with the lock held, GOT_UNLOCKED without. */
enum { PK__GOT_LOCKED = 1, PK__GOT_UNLOCKED = 2 };
/* Waits in the queue (w enqueued, lock held) for a slot, a create of its
 * own, an error or the deadline. A waiter that keeps_own has no deadline
 * (pass 0): it waits only while a create is under way, and answers
 * PK_EAGAIN when nothing could reach it but a release. */
int pk__pool_acquire_wait(struct pk_pool *p, struct pk__waiter *w,
                          uint64_t deadline, pk_error *err);

/* pool_async.c: tickets. */
/* Marks an async waiter's ticket ready (w->slot or w->err set) and queues
 * it on p->notify_head (p->ops->ticket_ready_locked). */
void pk__ticket_ready_locked(struct pk_pool *p, struct pk__waiter *w);
/* Runs the callbacks and writes the eventfds (p->ops->notify). */
void pk__ticket_notify_list(struct pk_pool_ticket *t);
/* Holds a ticket's memory across a dropped lock. */
void pk__ticket_pin(struct pk_pool_ticket *t);
void pk__ticket_unpin(struct pk_pool_ticket *t);
void pk__pool_async_service(struct pk_pool *p);
void pk__pool_async_expire(struct pk_pool *p, uint64_t mono_now);
uint64_t pk__pool_async_next_deadline_locked(struct pk_pool *p);

/* pool_maint.c: maintenance, sizing, close. */
/* The background thread (p->ops->bg_main). */
void *pk__pool_bg_main(void *pool);

#endif /* PK_LIB_POOL_INT_H */
