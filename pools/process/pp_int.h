/* pools/process/pp_int.h - the process pool's internals, shared by its
 * files. Bottom up, each file calling only the ones above it:
 *
 *   wire.c      the frames between the pool and a worker: a task (the
 *               function, its name, its bytes) and a reply (the code,
 *               sys, a message, the result bytes), over a stream socket
 *   worker.c    one worker process: fork, the child's loop, the
 *               liveness check, stop and reap (the core's hooks)
 *   queue.c     the tasks waiting for a worker, the shutdown state and
 *               the counts, under the pool's lock
 *   super.c     the supervisor thread: tasks to idle workers, replies to
 *               futures, time limits, deaths, the core's maintenance
 *   procpool.c  the public calls
 *
 * Lock: one per pool (pp->lock, PK__RANK_PROCPOOL), a leaf: the core is
 * called with it released, no hook or future callback runs under it. */
#ifndef PK_POOLS_PROCESS_PP_INT_H
#define PK_POOLS_PROCESS_PP_INT_H

#include <poolkit/pool.h>
#include <poolkit/procpool.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "executor_int.h" /* lib/kit: locks, clock, fork counter, alloc */

#define PK__PP_MAGIC 0x70726f63u /* "proc" */

/* A spawned worker's environment variable: its descriptors and limits,
 * which pk_procpool_worker_main reads. */
#define PK__PP_WORKER_ENV "PK_PROCPOOL_WORKER"

/* ---- frames (wire.c) ------------------------------------------------------ */

#define PK__PP_TASK_MAGIC 0x706b7461u  /* "pkta" */
#define PK__PP_REPLY_MAGIC 0x706b7270u /* "pkrp" */
#define PK__PP_HELLO_MAGIC 0x706b6869u /* "pkhi" */

/* A task: this header, then name_len bytes of name (no NUL), then len
 * bytes of data, unless shared is not 0: then the data are the len bytes
 * at offset shared - 1 of the shared region, which the worker maps too.
 * fn is the task's function in this program, which a forked worker has
 * at the same address; 0 for a spawned one, which looks the name up. */
struct pp_task_head {
    uint32_t magic;
    uint32_t name_len;
    uint64_t fn;
    uint64_t len;
    uint64_t shared;
    uint32_t chunk;       /* the data are a chunk of calls (PK_TASK_CHUNK) */
    uint32_t pad;
};

/* A spawned worker's first words, once it serves: the pool waits for
 * them before it lends the worker. */
struct pp_hello {
    uint32_t magic;
    int32_t pid;
};

/* A reply: this header, then msg_len bytes of message (no NUL), then len
 * bytes of result (code 0 only). */
struct pp_reply_head {
    uint32_t magic;
    int32_t code;
    int32_t sys;
    uint32_t msg_len;
    uint64_t len;
    uint64_t rss;         /* how much the worker's resident size grew
                             since it started, when the pool has
                             max_rss_growth; else 0 */
};

/* Writes or reads exactly n bytes (EINTR retried; writes never raise
 * SIGPIPE). Returns 0, or -errno; a read returns -EPIPE at end of file. */
int pk__pp_write_all(int fd, const void *p, size_t n);
int pk__pp_read_all(int fd, void *p, size_t n);

/* Sends a task: its header, name and bytes; with shared (the offset in
 * the shared region + 1) not 0, no bytes. fn NULL: by name. chunk: the
 * bytes are a chunk of calls. Returns 0 or -errno. */
int pk__pp_send_task(int fd, pk_named_fn fn, const char *name,
                     const void *data, size_t len, uint64_t shared,
                     bool chunk);

/* Sends a reply. Returns 0 or -errno. */
int pk__pp_send_reply(int fd, int code, int sys, const char *msg,
                      const void *data, size_t len, uint64_t rss);

/* A reply read back (the pool's side): the message (NUL-terminated,
 * truncated to fit) and the result bytes (pk__alloc'd, NULL if none). */
struct pp_reply {
    int code, sys;
    char msg[PK_ERROR_MSG_SIZE];
    void *data;
    size_t len;
    uint64_t rss;
};

/* Reads a reply whose result is at most max bytes. Returns 0; -EPIPE
 * (end of file: the worker is gone), -EPROTO (not a reply, or a result
 * over max), -ENOMEM, or another -errno. */
int pk__pp_read_reply(int fd, size_t max, struct pp_reply *r);

/* ---- one worker (worker.c) ----------------------------------------------- */

/* A worker process as the pool sees it: the core's resource. */
struct pp_worker {
    pid_t pid;
    int fd;               /* the pool's end of the socket pair */
    struct pp_worker *snext; /* pp->starting, while its start is awaited */
    int pidfd;            /* readable once it ended; -1: no pidfd here */
    bool reaped;          /* waited for: status is its end */
    int status;           /* a waitpid status, or -1 if unknown */
};

/* The core's hooks (user: the pool). create forks a worker. */
int pk__pp_worker_create(void *user, void **res, pk_error *err);
void pk__pp_worker_destroy(void *user, void *res);
int pk__pp_worker_check(void *user, void *res, pk_error *err);
void pk__pp_worker_forget(void *user, void *res); /* async-signal-safe */

/* Kills w (SIGKILL) unless it has ended, and reaps it. */
void pk__pp_worker_kill(struct pp_worker *w);

/* At destroy: no worker starts any more, and the starts awaited now end
 * at once (their sockets are shut). Lock not held. */
void pk__pp_worker_stop_starts(struct pk_procpool *pp);

/* Whether w's socket has something to read now (a reply, or its end). */
bool pk__pp_worker_readable(const struct pp_worker *w);

/* Whether w has ended (its pidfd says so; without one, only once
 * reaped). */
bool pk__pp_worker_ended(const struct pp_worker *w);

/* Reaps w once it ended (it closed its socket): waits up to wait_ms for
 * it to exit, then kills it. */
void pk__pp_worker_reap(struct pp_worker *w, int wait_ms);

/* How w ended, for a message ("killed by signal 11 (Segmentation
 * fault)", "exited with status 3"); *sys the signal or status. */
void pk__pp_worker_describe(const struct pp_worker *w, char *buf,
                            size_t size, int *sys);

/* ---- the queue and the state (queue.c) ------------------------------------ */

/* A task on its way: queued, then running on a worker. */
struct pp_job {
    struct pp_job *next;
    pk_future *fut;       /* the pool's reference */
    pk_named_fn fn;
    char *name;           /* copied */
    void *data;           /* copied, len bytes; or in the shared region */
    size_t len;
    bool shared;          /* data is the caller's, in the shared region */
    bool chunk;           /* data is a chunk of calls (pk_map's) */
    unsigned tries;       /* sends to workers that died before reading */
};

/* The pool's state: open, or shut down by how (pk_shutdown_how). */
#define PK__PP_OPEN (-1)

struct pk_procpool {
    uint32_t magic;               /* PK__PP_MAGIC while alive */
    unsigned fork_epoch;

    /* Options: read-only after create. */
    pk_registry *registry;
    size_t max_workers, queue_size, max_result, max_rss_growth;
    uint64_t task_timeout_ns;     /* UINT64_MAX: none */
    int submit_timeout_ms;        /* PK_WAIT_FOREVER, 0 or positive */
    void (*worker_init)(void *);
    void *user;
    pk_event_fn event;
    void *event_user;
    pid_t parent;                 /* getpid() at create */
    bool spawn;                   /* PK_PROCPOOL_SPAWN */
    char *shared;                 /* the shared region, or NULL */
    size_t shared_size;
    int shared_fd;                /* its memfd (a spawned worker maps
                                     it), or -1 */
    pk_pool *core;                /* the workers */

    pk__lock lock;
    pk__cv room;                  /* submits waiting for room */
    pk__cv quiet;                 /* shutdowns waiting for the end */

    /* queue.c's, under lock. */
    struct pp_job *head, *tail;
    size_t nqueued;
    size_t nbusy;                 /* jobs on workers (super.c sets it) */
    int how;                      /* PK__PP_OPEN or a pk_shutdown_how */
    /* worker.c's, under lock: workers whose hello is awaited (a destroy
     * ends those waits at once), and whether new ones may start. */
    struct pp_worker *starting;
    bool closing;

    /* super.c's. */
    pthread_t thread;
    bool thread_started;
    int wake_rd, wake_wr;         /* a pipe: a byte wakes the supervisor */
    _Atomic bool stop;            /* destroy: the supervisor returns */
    _Atomic bool asleep;          /* the supervisor is (about to be) in
                                     poll(): a submit writes a byte */
    struct pp_super *sup;         /* the supervisor's own: its busy
                                     table, poll()'s arrays */

    /* Counts (relaxed atomics). */
    _Atomic uint64_t submitted, completed, failed, died, timed_out,
        cancelled;
    _Atomic uint64_t workers_started, workers_retired, over_rss;
};

/* Queues the n jobs of list (linked through next, the last one's NULL)
 * at once, unless the pool is shut down or has no room for all n until
 * deadline (wait false: no waiting). Returns 0; PK_EFULL (n over
 * queue_size: never room); PK_ESHUTDOWN; PK_EAGAIN (full, wait false);
 * PK_ETIMEDOUT. Lock not held. */
int pk__pp_queue_push(struct pk_procpool *pp, struct pp_job *list, size_t n,
                      uint64_t deadline, bool wait);

/* The oldest job (nbusy + 1 in the same step), or NULL. Lock not held. */
struct pp_job *pk__pp_queue_pop(struct pk_procpool *pp);

/* Every queued job, as a list (counted busy, as pop does: each ends with
 * done). Lock not held. */
struct pp_job *pk__pp_queue_take_all(struct pk_procpool *pp);

/* j back at the head (it never reached a worker; nbusy - 1), or, once a
 * CANCEL or KILL shutdown emptied the queue, cancelled. */
void pk__pp_queue_unpop(struct pk_procpool *pp, struct pp_job *j);

/* A job left its worker (done, failed, killed): nbusy - 1, and a
 * shutdown waiting for the end hears it. Lock not held. */
void pk__pp_queue_done(struct pk_procpool *pp);

/* Whether jobs are queued; the shutdown state. Lock not held. */
bool pk__pp_queue_any(struct pk_procpool *pp);
int pk__pp_queue_how(struct pk_procpool *pp);

/* Shuts down: sets how (never to less), and for CANCEL or KILL takes
 * every queued job out and cancels it. Returns PK_EINVAL for a bad how.
 * Lock not held; futures are cancelled with it released. */
int pk__pp_queue_shutdown(struct pk_procpool *pp, int how);

/* Waits until nothing is queued or running, or deadline. Returns 0 or
 * PK_ETIMEDOUT. Lock not held. */
int pk__pp_queue_wait_quiet(struct pk_procpool *pp, uint64_t deadline);

/* A job's end: frees it (and drops the pool's reference to its future). */
void pk__pp_job_free(struct pp_job *j);

/* ---- the supervisor (super.c) ------------------------------------------- */

/* Starts the thread. Returns 0 or PK_ECREATE. */
int pk__pp_super_start(struct pk_procpool *pp);

/* Wakes it (a task queued, a shutdown). */
void pk__pp_super_poke(struct pk_procpool *pp);

/* Stops and joins it (nothing may be running: after a shutdown). */
void pk__pp_super_stop(struct pk_procpool *pp);

/* In a child after fork() (no supervisor there): closes the child's
 * copies of the wake pipe and of the busy workers' descriptors, frees
 * the supervisor's memory. */
void pk__pp_super_forget(struct pk_procpool *pp);

#endif /* PK_POOLS_PROCESS_PP_INT_H */
