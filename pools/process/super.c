/* pools/process/super.c - the supervisor: one thread per pool between the
 * queue and the workers.
 *
 * Its loop: send queued tasks to workers it borrows from the core (the
 * core forks one when none is idle and max_workers allows: the fork runs
 * here), then poll() the busy workers' sockets and the wake pipe until a
 * reply, a wake-up, the nearest time limit or the next maintenance. A
 * reply completes or fails its task's future and gives the worker back
 * to the core (which retires it after max_tasks_per_worker); end of file
 * or a broken frame means the worker died: it is reaped, the future fails
 * with PK_EWORKER saying how it ended, and the core replaces it. A task
 * past its time limit has its worker killed (PK_ETIMEDOUT); a KILL
 * shutdown kills every busy worker, and a cancel asked on a running
 * task's future kills its worker (looked at every CANCEL_POLL_MS while
 * tasks run): those futures end cancelled.
 *
 * The busy table (pp->sup) is this thread's alone. Futures complete
 * here, so their callbacks run on this thread, with no lock held.
 *
 * Waking: a submit writes a byte to the pipe only when the supervisor
 * said it is going to sleep (pp->asleep), which it says before it looks
 * at the queue a last time: either it sees the job, or the submit sees
 * the flag (both seq_cst, and the queue's lock orders the rest). */
#define _GNU_SOURCE /* pthread_setname_np, pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pp_int.h"

/* A job on a worker. */
struct pp_busy {
    pk_lease lease;
    struct pp_worker *w;   /* NULL: the slot is free */
    struct pp_job *job;
    uint64_t deadline;     /* its time limit, UINT64_MAX: none */
};

/* The thread's own memory: max_workers slots, and poll()'s arrays for
 * the wake pipe and two descriptors a worker (its socket, its pidfd). */
struct pp_super {
    struct pp_busy *busy;
    struct pollfd *pfd;          /* [0] the wake pipe, [1] the ticket */
    struct pp_busy **which;      /* which[i]: the slot of pfd[i], i > 1 */
    unsigned start_failures;     /* worker starts failed in a row */
    pk_pool_ticket *ticket;      /* a worker being made for a free slot */
    int ticket_fd;               /* its eventfd, or -1 */
};

/* How long the loop waits before trying again to get a worker when the
 * core had none to give (a fork failing: the core backs off). */
#define RETRY_MS 10
/* The longest the loop sleeps (a cancel, a stop look again). */
#define MAINT_MS 1000
/* A ticket's deadline: then it is asked again. It ends with the create's
 * error when creates keep failing (counted, start_failed), or with
 * PK_ETIMEDOUT while one is merely slow (a spawned copy's main(): not
 * counted; its worker goes idle and the next ticket gets it). */
#define TICKET_MS 1000
/* How long a worker whose socket closed may take to exit before it is
 * killed (it is dying: its status says why). */
#define REAP_MS 200
/* How often running tasks' futures are looked at for a cancel. */
#define CANCEL_POLL_MS 50

/* ---- ending a job ----------------------------------------------------------- */

static void
emit_died(struct pk_procpool *pp, struct pp_worker *w, const pk_error *e)
{
    pk_event ev = { .kind = PK_EVENT_WORKER_DIED, .resource = w,
                    .error = e };

    if (pp->event)
        pp->event(pp->event_user, &ev);
}

/* The slot's job left its worker: the worker back to the core (status:
 * OK, or BROKEN to retire it), the slot free. Returns the job, whose
 * future the caller settles before it calls done(): a shutdown that
 * waits for the pool to be quiet then finds every future settled. */
static struct pp_job *
vacate(struct pk_procpool *pp, struct pp_busy *b, int status)
{
    struct pp_job *j = b->job;
    pk_lease l = b->lease;

    b->job = NULL;
    b->w = NULL;
    pk_pool_release(pp->core, &l, status);
    return j;
}

static void
done(struct pk_procpool *pp, struct pp_job *j)
{
    pk__pp_job_free(j);
    pk__pp_queue_done(pp);
}

static void
fail(struct pk_procpool *pp, struct pp_job *j, const pk_error *e)
{
    pk_future_fail(j->fut, e->code, e->sys, "%s", e->msg);
    done(pp, j);
}

static void
deliver(struct pk_procpool *pp, struct pp_busy *b, struct pp_reply *r)
{
    struct pp_job *j;
    bool over = pp->max_rss_growth && r->rss > pp->max_rss_growth;

    atomic_fetch_add_explicit(r->code == 0 ? &pp->completed : &pp->failed,
                              1, memory_order_relaxed);
    if (over)
        atomic_fetch_add_explicit(&pp->over_rss, 1, memory_order_relaxed);
    j = vacate(pp, b, over ? PK_RELEASE_BROKEN : PK_RELEASE_OK);
    if (r->code == 0) {
        pk_result res = { r->data, r->len, r->data ? pk__free : NULL };
        if (pk_future_complete(j->fut, &res) != 0)
            pk__free(r->data); /* cancelled meanwhile */
    } else {
        pk_future_fail(j->fut, r->code, r->sys, "%s",
                       r->msg[0] ? r->msg : pk_strerror(r->code));
    }
    done(pp, j);
}

/* The worker of b ended or broke while running its job. */
static void
lost(struct pk_procpool *pp, struct pp_busy *b, int rc)
{
    struct pp_worker *w = b->w;
    struct pp_job *j;
    pk_error e = { 0 };
    char how[96];
    int sys;

    if (rc == -EPIPE || rc == -ECONNRESET)
        pk__pp_worker_reap(w, REAP_MS);
    else
        pk__pp_worker_kill(w); /* a broken frame: it is no use now */
    pk__pp_worker_describe(w, how, sizeof how, &sys);
    if (rc == -ENOMEM) {
        pk_error_set(&e, PK_ENOMEM, ENOMEM, "pk_procpool: no memory for "
                     "the result of task '%s' (worker %d killed)",
                     b->job->name, (int)w->pid);
        atomic_fetch_add_explicit(&pp->failed, 1, memory_order_relaxed);
    } else {
        if (rc == -EPIPE || rc == -ECONNRESET)
            pk_error_set(&e, PK_EWORKER, sys, "pk_procpool: worker %d %s "
                         "running task '%s'", (int)w->pid, how,
                         b->job->name);
        else
            pk_error_set(&e, PK_EWORKER, -rc, "pk_procpool: worker %d sent "
                         "a broken reply to task '%s' (errno %d); killed",
                         (int)w->pid, b->job->name, -rc);
        atomic_fetch_add_explicit(&pp->died, 1, memory_order_relaxed);
        emit_died(pp, w, &e);
    }
    j = vacate(pp, b, PK_RELEASE_BROKEN); /* w is freed */
    fail(pp, j, &e);
}

static void
collect(struct pk_procpool *pp, struct pp_busy *b)
{
    struct pp_reply r;
    /* A chunk's outcomes: max_result each (the worker checks), the lot
     * up to PK_PROCPOOL_DATA_MAX. */
    int rc = pk__pp_read_reply(b->w->fd,
                               b->job->chunk ? PK_PROCPOOL_DATA_MAX
                                             : pp->max_result,
                               &r);

    if (rc == 0)
        deliver(pp, b, &r);
    else
        lost(pp, b, rc);
}

static void
time_out(struct pk_procpool *pp, struct pp_busy *b)
{
    pk_error e;

    pk__pp_worker_kill(b->w);
    pk_error_set(&e, PK_ETIMEDOUT, 0, "pk_procpool: task '%s' ran past "
                 "task_timeout_ms (%llu ms): worker %d killed",
                 b->job->name,
                 (unsigned long long)(pp->task_timeout_ns / 1000000u),
                 (int)b->w->pid);
    atomic_fetch_add_explicit(&pp->timed_out, 1, memory_order_relaxed);
    fail(pp, vacate(pp, b, PK_RELEASE_BROKEN), &e);
}

/* Stops b's task by killing its worker: a KILL shutdown, or a cancel
 * asked for on its future (a task in a worker cannot see the flag). */
static void
kill_busy(struct pk_procpool *pp, struct pp_busy *b, const char *why)
{
    struct pp_job *j;

    pk__pp_worker_kill(b->w);
    atomic_fetch_add_explicit(&pp->cancelled, 1, memory_order_relaxed);
    j = vacate(pp, b, PK_RELEASE_BROKEN);
    pk_future_cancel(j->fut); /* requested: it ends cancelled */
    pk_future_fail(j->fut, PK_ECANCELED, 0,
                   "pk_procpool: task '%s' %s: its worker was killed",
                   j->name, why);
    done(pp, j);
}

/* ---- starting jobs ------------------------------------------------------------ */

static struct pp_busy *
free_slot(struct pk_procpool *pp)
{
    for (size_t i = 0; i < pp->max_workers; i++)
        if (!pp->sup->busy[i].w)
            return &pp->sup->busy[i];
    return NULL;
}

/* How many workers a job is sent to that die before they read it (one
 * out of memory loses the frame) before the job fails. */
#define SEND_TRIES 3

/* Marks j running, unless it was cancelled while queued: then it is ended
 * so (never sent) and false returned. */
static bool
claim(struct pk_procpool *pp, struct pp_job *j)
{
    int rc = pk_future_set_running(j->fut);

    /* Not pending (EINVAL): sent before to a worker that died unread. */
    if (rc == 0 || (rc == PK_EINVAL && !pk_future_cancel_requested(j->fut)))
        return true;
    atomic_fetch_add_explicit(&pp->cancelled, 1, memory_order_relaxed);
    pk_future_fail(j->fut, PK_ECANCELED, 0, "pk_procpool: task '%s' "
                   "cancelled before it ran", j->name);
    done(pp, j);
    return false;
}

/* j could not be sent (its worker died idle): back to the queue, or
 * failed after SEND_TRIES. */
static void
unsent(struct pk_procpool *pp, struct pp_job *j)
{
    pk_error e;

    if (++j->tries < SEND_TRIES) {
        pk__pp_queue_unpop(pp, j);
        return;
    }
    pk_error_set(&e, PK_EWORKER, 0, "pk_procpool: task '%s' was sent to %d "
                 "workers that each died before reading it", j->name,
                 SEND_TRIES);
    fail(pp, j, &e);
}

/* Worker starts that fail in a row, with no worker alive, before the
 * queued jobs fail with the last start's error: a pool that cannot start
 * any worker (a spawned copy that exits at once, fork refused) fails its
 * tasks rather than let them wait for ever. */
#define START_TRIES 3

static void
start_failed(struct pk_procpool *pp, const pk_error *e)
{
    pk_pool_stats st;
    struct pp_job *list;

    if (++pp->sup->start_failures < START_TRIES ||
        pk_pool_stats_get(pp->core, &st) != 0 || st.size > st.creating)
        return;
    pp->sup->start_failures = 0;
    list = pk__pp_queue_take_all(pp);
    while (list) {
        struct pp_job *j = list;
        list = j->next;
        atomic_fetch_add_explicit(&pp->failed, 1, memory_order_relaxed);
        fail(pp, j, e);
    }
}

/* A worker for a free slot: an idle one at once, else through a ticket,
 * whose create (a fork; a spawn and the wait for its hello) runs on the
 * core's helper thread, never here. Returns 0 (*l filled), PK_EAGAIN (a
 * worker is being made: the ticket's fd wakes the loop) or the start's
 * error (e filled). */
static int
get_worker(struct pk_procpool *pp, pk_lease *l, pk_error *e)
{
    struct pp_super *s = pp->sup;
    int ready, rc;

    if (!s->ticket) {
        if (pk_pool_acquire(pp->core, l, 0, NULL) == 0)
            return 0;
        rc = pk_pool_acquire_async(pp->core, &s->ticket, TICKET_MS, NULL,
                                   NULL, &ready);
        if (rc)
            return pk_error_set(e, rc, 0, "pk_procpool: no ticket for a "
                                "worker: %s", pk_strerror(rc));
        s->ticket_fd = -1;
    }
    rc = pk_pool_ticket_take(s->ticket, l, e);
    if (rc == PK_EAGAIN) {
        if (s->ticket_fd < 0)
            s->ticket_fd = pk_pool_ticket_fd(s->ticket); /* -1: polled */
        return PK_EAGAIN;
    }
    if (rc == PK_EINVAL || rc == PK_EFORKED)
        pk_pool_ticket_free(s->ticket); /* take kept it */
    s->ticket = NULL;
    s->ticket_fd = -1;
    return rc;
}

/* Sends queued jobs to workers while there are both. Returns false when
 * jobs wait and no worker is coming (try again soon): not while a
 * ticket's worker is being made (its fd wakes the loop). */
static bool
dispatch(struct pk_procpool *pp)
{
    int failures = 0;
    struct pp_busy *b;

    while ((b = free_slot(pp)) != NULL && pk__pp_queue_any(pp)) {
        pk_lease l;
        struct pp_job *j;
        struct pp_worker *w;
        pk_error e;
        int rc = get_worker(pp, &l, &e);

        if (rc == PK_EAGAIN)
            return pp->sup->ticket_fd >= 0;
        if (rc) {
            if (rc != PK_ETIMEDOUT)
                start_failed(pp, &e);
            return false;
        }
        pp->sup->start_failures = 0;
        j = pk__pp_queue_pop(pp);
        if (!j || !claim(pp, j)) {
            pk_pool_release(pp->core, &l, PK_RELEASE_OK);
            if (!j)
                break;
            continue;
        }
        w = l.resource;
        if (pk__pp_send_task(w->fd, pp->spawn ? NULL : j->fn, j->name,
                             j->data, j->len,
                             j->shared ? (uint64_t)((char *)j->data -
                                                    pp->shared) + 1
                                       : 0,
                             j->chunk) != 0) {
            /* The worker died idle: the job never ran. */
            pk_pool_release(pp->core, &l, PK_RELEASE_BROKEN);
            unsent(pp, j);
            if (++failures >= 3)
                return false;
            continue;
        }
        b->lease = l;
        b->w = w;
        b->job = j;
        b->deadline = pp->task_timeout_ns == UINT64_MAX
                          ? UINT64_MAX
                          : pk__now_ns() + pp->task_timeout_ns;
    }
    return true;
}

/* ---- the loop ---------------------------------------------------------------- */

static void
drain_wake(struct pk_procpool *pp)
{
    char buf[64];

    while (read(pp->wake_rd, buf, sizeof buf) > 0)
        ;
}

static size_t
nbusy_here(const struct pk_procpool *pp)
{
    size_t n = 0;

    for (size_t i = 0; i < pp->max_workers; i++)
        n += pp->sup->busy[i].w != NULL;
    return n;
}

/* Kills the busy workers (KILL) and those whose task was cancelled,
 * times out those past their limit, and returns when to look again: the
 * nearest limit, and while tasks run CANCEL_POLL_MS from now (a cancel
 * makes no wake-up). */
static uint64_t
enforce(struct pk_procpool *pp, bool kill_all)
{
    uint64_t now = pk__now_ns(), next = UINT64_MAX;

    for (size_t i = 0; i < pp->max_workers; i++) {
        struct pp_busy *b = &pp->sup->busy[i];
        if (!b->w)
            continue;
        if (kill_all) {
            kill_busy(pp, b, "stopped by a shutdown");
        } else if (pk_future_cancel_requested(b->job->fut)) {
            kill_busy(pp, b, "cancelled");
        } else if (b->deadline <= now) {
            /* The supervisor may have been busy (a fork, a callback): a
             * reply already there is on time. */
            if (pk__pp_worker_readable(b->w))
                collect(pp, b);
            else
                time_out(pp, b);
        } else {
            uint64_t look = now + (uint64_t)CANCEL_POLL_MS * 1000000u;
            if (b->deadline < next)
                next = b->deadline;
            if (look < next)
                next = look;
        }
    }
    return next;
}

static int
poll_timeout(uint64_t until)
{
    uint64_t now = pk__now_ns();

    if (until <= now)
        return 0;
    if (until - now >= (uint64_t)MAINT_MS * 1000000u)
        return MAINT_MS;
    return (int)((until - now + 999999u) / 1000000u);
}

/* Waits for replies, a wake-up or until; handles the replies. */
static void
wait_events(struct pk_procpool *pp, uint64_t until)
{
    struct pollfd *pfd = pp->sup->pfd;
    struct pp_busy **which = pp->sup->which;
    nfds_t n;
    int rc;

    pfd[0] = (struct pollfd){ .fd = pp->wake_rd, .events = POLLIN };
    pfd[1] = (struct pollfd){ .fd = pp->sup->ticket_fd, .events = POLLIN };
    n = 2;
    for (size_t i = 0; i < pp->max_workers; i++) {
        struct pp_busy *b = &pp->sup->busy[i];
        if (!b->w)
            continue;
        pfd[n] = (struct pollfd){ .fd = b->w->fd, .events = POLLIN };
        which[n++] = b;
        /* Its death, even while something else holds a copy of its
         * socket's end (a process it started, another pool's fork). */
        pfd[n] = (struct pollfd){ .fd = b->w->pidfd, .events = POLLIN };
        which[n++] = b; /* a negative fd is ignored by poll */
    }
    rc = poll(pfd, n, poll_timeout(until));
    atomic_store(&pp->asleep, false);
    if (rc <= 0)
        return;
    if (pfd[0].revents)
        drain_wake(pp);
    for (nfds_t i = 2; i < n; i += 2) {
        struct pp_busy *b = which[i];
        if (pfd[i].revents)
            collect(pp, b); /* a reply first, if it wrote one */
        else if (pfd[i + 1].revents)
            lost(pp, b, -EPIPE);
    }
}

static void *
super_main(void *arg)
{
    struct pk_procpool *pp = arg;

    pthread_setname_np(pthread_self(), "pk-procpool");
    for (;;) {
        int how = pk__pp_queue_how(pp);
        bool got = true, stopping = atomic_load(&pp->stop);
        uint64_t until, now;

        if (how != PK_SHUTDOWN_KILL && !stopping)
            got = dispatch(pp);
        until = enforce(pp, how == PK_SHUTDOWN_KILL);
        if (stopping && nbusy_here(pp) == 0)
            break;
        now = pk__now_ns();
        if (!got && now + (uint64_t)RETRY_MS * 1000000u < until)
            until = now + (uint64_t)RETRY_MS * 1000000u;
        /* Say so, then look at the queue and the state a last time (see
         * the top). */
        atomic_store(&pp->asleep, true);
        if (pk__pp_queue_how(pp) != how ||
            (got && !stopping && !pp->sup->ticket && free_slot(pp) &&
             pk__pp_queue_any(pp))) {
            atomic_store(&pp->asleep, false);
            continue;
        }
        wait_events(pp, until);
    }
    pk_pool_ticket_free(pp->sup->ticket); /* a worker made late goes idle */
    pp->sup->ticket = NULL;
    return NULL;
}

/* ---- start, wake, stop ------------------------------------------------------- */

static void
super_free(struct pp_super *s)
{
    if (!s)
        return;
    pk__free(s->busy);
    pk__free(s->pfd);
    pk__free(s->which);
    pk__free(s);
}

static struct pp_super *
super_alloc(size_t n)
{
    struct pp_super *s = pk__calloc(1, sizeof *s);

    if (!s)
        return NULL;
    s->busy = pk__calloc(n, sizeof *s->busy);
    s->pfd = pk__calloc(2 * n + 2, sizeof *s->pfd);
    s->which = pk__calloc(2 * n + 2, sizeof *s->which);
    s->ticket_fd = -1;
    if (!s->busy || !s->pfd || !s->which) {
        super_free(s);
        return NULL;
    }
    return s;
}

int
pk__pp_super_start(struct pk_procpool *pp)
{
    int fds[2], rc;
    sigset_t all, old;

    pp->sup = super_alloc(pp->max_workers);
    if (!pp->sup)
        return PK_ENOMEM;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        super_free(pp->sup);
        pp->sup = NULL;
        return PK_ECREATE;
    }
    pp->wake_rd = fds[0];
    pp->wake_wr = fds[1];
    /* The thread blocks every signal: the process's handlers run on its
     * own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pk__thread_create(&pp->thread, super_main, pp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(fds[0]);
        close(fds[1]);
        super_free(pp->sup);
        pp->sup = NULL;
        return PK_ECREATE;
    }
    pp->thread_started = true;
    return 0;
}

void
pk__pp_super_poke(struct pk_procpool *pp)
{
    if (atomic_load(&pp->asleep)) {
        char c = 1;
        ssize_t k = write(pp->wake_wr, &c, 1); /* full: it wakes anyway */
        (void)k;
    }
}

void
pk__pp_super_forget(struct pk_procpool *pp)
{
    if (!pp->sup)
        return;
    pk_pool_ticket_free(pp->sup->ticket); /* the child's copy only */
    for (size_t i = 0; i < pp->max_workers; i++) {
        struct pp_worker *w = pp->sup->busy[i].w;
        if (!w)
            continue;
        close(w->fd);
        if (w->pidfd >= 0)
            close(w->pidfd);
    }
    close(pp->wake_rd);
    close(pp->wake_wr);
    super_free(pp->sup);
    pp->sup = NULL;
}

void
pk__pp_super_stop(struct pk_procpool *pp)
{
    if (!pp->thread_started)
        return;
    atomic_store(&pp->stop, true);
    {
        char c = 1;
        ssize_t k = write(pp->wake_wr, &c, 1);
        (void)k;
    }
    pthread_join(pp->thread, NULL);
    pp->thread_started = false;
    close(pp->wake_rd);
    close(pp->wake_wr);
    super_free(pp->sup);
    pp->sup = NULL;
}
