/* poolkit/error.h - error codes, error detail and the timeout constants that
 * every poolkit module shares.
 *
 * Functions that can fail return 0 or a negative PK_E* code. Codes that
 * mirror an errno equal -errno; poolkit's own codes sit in a block from
 * -3000 down. Codes are appended, never renumbered or removed. */
#ifndef POOLKIT_ERROR_H
#define POOLKIT_ERROR_H

#include <errno.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PK_API
#define PK_API __attribute__((visibility("default")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PK_PRINTF(f, a)
#endif

/* X(name, value, message): the one list that makes the enum,
 * pk_strerror() and pk_err_name(). Append only. */
#define PK_ERRNO_LIST(X)                                                    \
    X(EINVAL, -EINVAL, "invalid argument")                                  \
    X(ENOMEM, -ENOMEM, "out of memory")                                     \
    X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                   \
    X(EAGAIN, -EAGAIN, "would block: nothing available without waiting")   \
    X(ECANCELED, -ECANCELED, "canceled")                                    \
    X(EDEADLK, -EDEADLK, "deadlock: the wait could never end")             \
    X(ENOENT, -ENOENT, "not found: nothing has that name")

#define PK_OWN_LIST(X)                                                      \
    X(ESHUTDOWN, -3000, "closed: the pool or executor is shut down")        \
    X(EFULL, -3001, "full: a bounded queue rejected the item")              \
    X(ECREATE, -3002, "a resource could not be created")                    \
    X(ECHECK, -3003, "a resource failed its health check")                  \
    X(EWORKER, -3004, "a worker thread or process died")                    \
    X(ETASK, -3005, "the task failed")                                      \
    X(ECONNECT, -3006, "a connection could not be made")                    \
    X(EFORKED, -3007, "used in a child process after fork()")               \
    X(EADAPTER, -3008, "the underlying library (libpq, libcurl) failed")  \
    X(ETOOBIG, -3009, "too big: over the limit set for it")

#define PK_ERROR_LIST(X) PK_ERRNO_LIST(X) PK_OWN_LIST(X)

enum pk_errcode {
    PK_OK = 0,
#define PK__ERR_ENUM(name, value, msg) PK_##name = (value),
    PK_ERROR_LIST(PK__ERR_ENUM)
#undef PK__ERR_ENUM
};

/* Timeouts are int milliseconds.
 * In a call: 0 = do not block, PK_WAIT_FOREVER = no limit, any other
 * negative value = PK_EINVAL.
 * In an options struct: 0 = the documented default, PK_NEVER = the policy
 * is off, PK_ALWAYS = zero time (for example: check on every borrow). */
#define PK_WAIT_FOREVER (-1)
#define PK_NEVER (-1)
#define PK_ALWAYS (-2)

#define PK_ERROR_MSG_SIZE 256

/* Detail of a failure that reached outside the process. Caller-owned;
 * functions that take one fill it on failure and leave it alone on
 * success. sys is the system or library code: errno, PQstatus, CURLcode,
 * a child's exit status; 0 if none. */
typedef struct pk_error {
    int code;                     /* a PK_E* code */
    int sys;                      /* errno or the library's own code */
    char msg[PK_ERROR_MSG_SIZE];  /* NUL-terminated, never overflows */
} pk_error;

/* Returns a one-line English description of code ("unknown error" for a
 * code poolkit does not know). Owner: returns a static string, never NULL.
 * Threads: safe. */
PK_API const char *pk_strerror(int code);

/* Returns the code's symbolic name ("PK_ETIMEDOUT"; "PK_OK" for 0;
 * "PK_EUNKNOWN" for an unknown code). Owner: returns a static string,
 * never NULL. Threads: safe. */
PK_API const char *pk_err_name(int code);

/* Fills err (if not NULL) with code, sys and a printf-style message, which
 * is truncated to fit. Meant for create and check hooks. A NULL fmt leaves
 * pk_strerror(code) as the message.
 * Returns: code, so a hook can write `return pk_error_set(err, ...)`.
 * Owner: err borrowed. Threads: safe (err is the caller's). */
PK_API int pk_error_set(pk_error *err, int code, int sys, const char *fmt,
                        ...) PK_PRINTF(4, 5);

/* Resets err (if not NULL) to code 0, sys 0 and an empty message.
 * Threads: safe (err is the caller's). */
PK_API void pk_error_clear(pk_error *err);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_ERROR_H */
