/* lib/exec/map_int.h - a map's data, shared by its files. A call goes
 * down this list and never back up:
 *
 *   map.c       the consumer: reading input, submitting units, delivering
 *               results, create and destroy (map.c's top comment says
 *               which thread touches what)
 *   map_unit.c  one unit: made and freed for the consumer, run on a
 *               worker, marked done by its future's callback
 *
 * map_array.c (pk_map_array) uses only the public calls. Not installed. */
#ifndef PK_LIB_EXEC_MAP_INT_H
#define PK_LIB_EXEC_MAP_INT_H

#include <poolkit/executor.h>

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../kit/dlist.h"
#include "../kit/sync.h"

#define MAP_MAGIC 0x70614d70u
#define CHECK(m) assert((m)->magic == MAP_MAGIC)

/* item.code before the item ran: the unit's future says what happened. */
#define NOT_RUN 1

struct item {
    pk_task task;   /* as read; consumer */
    pk_result res;  /* runner writes, consumer moves out */
    pk_error *err;  /* runner: a failure's detail, or NULL */
    int code;       /* runner: 0 or the item's code; NOT_RUN before */
    int skip;       /* an invalid task: code preset, never run */
};

struct unit {
    struct pk_map *m;
    struct pk__dnode link;    /* live units in input order; consumer */
    struct unit *done_next;   /* m->done_head list; m->lock */
    pk_future *fut;           /* our reference; NULL until submitted */
    size_t first;             /* index of items[0] */
    size_t n, cap;            /* items placed, items allocated */
    size_t pos;               /* next item to deliver; consumer */
    int named;                /* named tasks: one, submitted as it is,
                                 or (packable) several of one name,
                                 packed into one PK_TASK_CHUNK task */
    int packable;             /* named, and may take more of its name */
    int packed;               /* submitted as a chunk of n > 1 calls */
    int unpacked;             /* the chunk's outcomes are in items */
    int done;                 /* m->lock: its future finished */
    /* RUN_*: whether runner is on its items. A task may finish its own
     * future (pk_task_run allows it), and a fn unit's future is every
     * item's `self`: finished early, the unit is done only when runner
     * stops writing its items. */
    _Atomic int run;
    struct item items[];
};

enum { RUN_NOT = 0, RUN_ON = 1, RUN_DONE_EARLY = 2 }; /* unit.run */

struct pk_map {
    uint32_t magic;
    pk_executor *ex;
    pk_map_next_fn next;
    void *user;
    pk_map_progress_fn progress;
    void *progress_user;
    void (*release)(void *user, pk_task *task);
    size_t window;
    size_t chunk;       /* fixed chunk, or 0 for automatic */
    size_t chunk_cap;   /* automatic chunk's ceiling */
    size_t total_hint;
    int unordered;
    uint64_t deadline;  /* CLOCK_MONOTONIC ns; UINT64_MAX = none */

    /* The consumer's. */
    size_t nread;       /* items taken from next */
    size_t nplaced;     /* items put into units (the next index) */
    size_t ndelivered;  /* items handed out (or dropped after an end) */
    int input_end;      /* next said 1 or failed, or reading stopped */
    int defer_code;     /* a map error reported once the rest is out */
    char defer_msg[PK_ERROR_MSG_SIZE];
    int fatal;          /* the map ended with this code (sticky) */
    struct pk__dlist units;   /* live units (submitted), input order */
    struct unit *cur;   /* being delivered */
    struct unit *held;  /* made, submit said EAGAIN/EFULL: retried */
    pk_task la;         /* an item read but not placed yet */
    int has_la;
    size_t rep_done, rep_total; /* last progress reported */
    int reported;

    pk__lock lock;             /* PK__RANK_MAP */
    pk__cv cond;               /* seq moved */
    struct unit *done_head;    /* m->lock; unordered only */
    struct unit *done_tail;    /* m->lock */
    size_t pending;            /* m->lock: submitted, callback not run */
    size_t items_done;         /* m->lock: items whose unit finished */
    uint64_t seq;              /* m->lock: completions so far */
    _Atomic uint64_t est_ns;   /* time per item; relaxed: a hint only */
};

/* A unit for up to cap items, the next of them numbered m->nplaced.
 * Returns NULL without memory. */
struct unit *pk__map_unit_new(struct pk_map *m, size_t cap);
/* Frees a unit the consumer owns (done, or never submitted): results not
 * delivered, error details, the future, and tells release about each
 * item. */
void pk__map_unit_free(struct pk_map *m, struct unit *u);
/* The executor task of a fn unit (arg: the unit). */
int pk__map_runner(void *arg, pk_future *self, pk_result *out,
                   pk_error *err);
/* The unit's future's completion callback (arg: the unit): marks it done
 * for the consumer, under m->lock, and wakes it. */
void pk__map_on_done(void *arg, pk_future *f);

#endif /* PK_LIB_EXEC_MAP_INT_H */
