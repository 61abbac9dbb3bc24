/* lib/kit/log.h - the last resort for a failure nobody can be told about:
 * one line on stderr, when the object that failed has no event hook.
 *
 * A hook replaces it: callers log only when they have no hook to call.
 * Used by lib/exec (a failed future released unread, a fire-and-forget
 * task that failed) and ready for the pool core (a lease still out at
 * close, with its acquire site in `what`). */
#ifndef PK_LIB_LOG_H
#define PK_LIB_LOG_H

#include <poolkit/error.h>

/* Lines written per second at most, per process; what is over is counted
 * and reported in one line when the next second's first line is written. */
#define PK__LOG_PER_SECOND 10

/* Writes "poolkit: WHAT: PK_NAME: MESSAGE\n" to stderr (err NULL: the
 * line is "poolkit: WHAT"), unless POOLKIT_LOG=off was in the environment
 * when poolkit first logged, or the line is over the rate limit. Never
 * raises SIGPIPE (the signal is blocked on this thread around the write
 * and a SIGPIPE the write raised is consumed), never blocks for long: if
 * stderr is not writable now (poll, 0 ms) the line is dropped and
 * counted, else it is one write(2) of less than PIPE_BUF bytes (a
 * terminal under flow control could still hold it up). Lock-free: may be
 * called with locks held, from any thread. Threads: safe. */
void pk__log_failure(const char *what, const pk_error *err);

#ifdef PK_TESTING
/* Test-only: forgets the rate limiter's counts and reads POOLKIT_LOG
 * again (outside the pthread_once), so each test starts afresh. Returns
 * how many lines were dropped since the last reset or summary. */
unsigned long pk__log_reset(void);
#endif

#endif /* PK_LIB_LOG_H */
