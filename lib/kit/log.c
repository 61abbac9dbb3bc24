/* lib/kit/log.c - pk__log_failure: one line on stderr for a failure with
 * no event hook to hear it, so that no failure is silent by default.
 *
 * The rate limit is a window of one second of CLOCK_MONOTONIC, kept in
 * three atomics (process-wide state, listed in the README): the window's
 * second, the lines written in it and the lines dropped since the last
 * summary. The first caller to see a new second moves the window (a CAS:
 * one winner), resets the count and writes the summary of what was
 * dropped. Racing callers may let a line or two more through at a window's
 * edge; the limit is there to keep a failure storm from flooding stderr,
 * not to be exact. No lock: a caller may hold its own.
 *
 * POOLKIT_LOG=off (the only value it looks at) is read once, under
 * pthread_once, the first time anything is logged.
 *
 * Signals (DESIGN.md): write(2) on a pipe whose reader has gone raises
 * SIGPIPE, whose default action kills the process. The write is done
 * with SIGPIPE blocked on this thread (pthread_sigmask), and a SIGPIPE
 * that was not pending before and is after is the write's own: it is
 * consumed with sigtimedwait (zero timeout) before the mask is restored,
 * so the host never sees it. A SIGPIPE already pending stays pending. */
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync.h"

/* Longest line: prefix, what, name and message, all cut to fit; far
 * below PIPE_BUF (4096 on Linux, 512 by POSIX), so a write to a pipe is
 * atomic and never partial. */
#define LINE_MAX_BYTES 480

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static _Atomic int log_off;            /* POOLKIT_LOG=off; set once */
static _Atomic uint64_t log_window;    /* second of the window, +1 (0: none) */
static _Atomic unsigned log_used;      /* lines written in the window */
static _Atomic unsigned long log_dropped; /* since the last summary */

static void
read_env(void)
{
    const char *v = getenv("POOLKIT_LOG");

    /* Relaxed: pthread_once orders it for every caller after the once. */
    atomic_store_explicit(&log_off, v != NULL && strcmp(v, "off") == 0,
                          memory_order_relaxed);
}

/* One write of the whole line, or nothing. SIGPIPE blocked around it and
 * consumed if the write raised it. Returns 0 if written, -1 if dropped. */
static int
write_line(const char *line, size_t len)
{
    struct pollfd pfd = { STDERR_FILENO, POLLOUT, 0 };
    sigset_t pipe_set, old, pending;
    struct timespec zero = { 0, 0 };
    int was_pending, rc = -1;
    ssize_t n;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0)
        return -1;
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    if (poll(&pfd, 1, 0) == 1 && !(pfd.revents & POLLNVAL)) {
        do
            n = write(STDERR_FILENO, line, len);
        while (n < 0 && errno == EINTR);
        rc = n == (ssize_t)len ? 0 : -1;
        if (n < 0 && errno == EPIPE && !was_pending) {
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 &&
                   errno == EINTR)
                ;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void PK_PRINTF(1, 2)
write_fmt(const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)(sizeof line - 2);
    line[n] = '\n';
    if (write_line(line, (size_t)n + 1) != 0)
        atomic_fetch_add_explicit(&log_dropped, 1, memory_order_relaxed);
}

/* Moves the window to this second if it is not there yet; the caller
 * that moves it writes the summary of the lines dropped meanwhile. All
 * relaxed: counters of a limiter, nothing is published through them. */
static void
roll_window(void)
{
    uint64_t sec = pk__now_ns() / 1000000000u + 1;
    uint64_t w = atomic_load_explicit(&log_window, memory_order_relaxed);
    unsigned long d;

    if (w == sec || !atomic_compare_exchange_strong_explicit(
                        &log_window, &w, sec, memory_order_relaxed,
                        memory_order_relaxed))
        return;
    atomic_store_explicit(&log_used, 0, memory_order_relaxed);
    d = atomic_exchange_explicit(&log_dropped, 0, memory_order_relaxed);
    if (d)
        write_fmt("poolkit: %lu more failure line%s dropped (at most %d a "
                  "second; an event hook hears every failure)",
                  d, d == 1 ? "" : "s", PK__LOG_PER_SECOND);
}

void
pk__log_failure(const char *what, const pk_error *err)
{
    pthread_once(&log_once, read_env);
    if (atomic_load_explicit(&log_off, memory_order_relaxed))
        return;
    roll_window();
    if (atomic_fetch_add_explicit(&log_used, 1, memory_order_relaxed) >=
        PK__LOG_PER_SECOND) {
        atomic_fetch_add_explicit(&log_dropped, 1, memory_order_relaxed);
        return;
    }
    if (!what)
        what = "a failure";
    if (!err) {
        write_fmt("poolkit: %.300s", what);
        return;
    }
    /* err->msg is bounded by its size even if a caller forgot the NUL. */
    if (err->msg[0])
        write_fmt("poolkit: %.200s: %s: %.*s", what, pk_err_name(err->code),
                  (int)strnlen(err->msg, sizeof err->msg), err->msg);
    else
        write_fmt("poolkit: %.200s: %s: %s", what, pk_err_name(err->code),
                  pk_strerror(err->code));
}

#ifdef PK_TESTING
unsigned long
pk__log_reset(void)
{
    pthread_once(&log_once, read_env);
    read_env();
    atomic_store(&log_window, 0);
    atomic_store(&log_used, 0);
    return atomic_exchange(&log_dropped, 0);
}
#endif
