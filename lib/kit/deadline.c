/* lib/kit/deadline.c - the public face of the clock and deadlines
 * (pool.h, "deadlines"): pk_clock_ns, pk_deadline_after,
 * pk_deadline_ms_left and pk_wait_fd, for modules and embedders that wait
 * on something of their own under a caller's timeout.
 *
 * They are the internal pk__now_ns and pk__deadline (sync.c) that every
 * poolkit wait uses, so a module's deadline and the core's are on one
 * scale, and PK_NO_DEADLINE is their UINT64_MAX. Milliseconds left are
 * rounded up: a poll() given them ends at or after the deadline, never
 * before, and the loop in pk_wait_fd looks at the deadline again. */
#include "sync.h"

#include <poolkit/pool.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>

_Static_assert(PK_NO_DEADLINE == UINT64_MAX,
               "pk__deadline's 'none' is the public PK_NO_DEADLINE");

uint64_t
pk_clock_ns(void)
{
    return pk__now_ns();
}

uint64_t
pk_deadline_after(int timeout_ms)
{
    uint64_t deadline;

    if (pk__deadline(timeout_ms, &deadline) != 0)
        return pk__now_ns(); /* a bad timeout: already passed (pool.h) */
    return deadline;
}

int
pk_deadline_ms_left(uint64_t deadline)
{
    uint64_t now, ms;

    if (deadline == PK_NO_DEADLINE)
        return PK_WAIT_FOREVER;
    now = pk__now_ns();
    if (now >= deadline)
        return 0;
    ms = (deadline - now + 999999u) / 1000000u;
    return ms > (uint64_t)INT_MAX ? INT_MAX : (int)ms;
}

int
pk_wait_fd(int fd, short events, uint64_t deadline)
{
    if (fd < 0 || events == 0)
        return PK_EINVAL;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
        int ms = pk_deadline_ms_left(deadline);
        int n;

        if (ms == 0)
            return 0;
        n = poll(&p, 1, ms); /* PK_WAIT_FOREVER is poll's -1 */
        if (n > 0)
            return (p.revents & POLLNVAL) ? PK_EINVAL : 1;
        if (n < 0 && errno != EINTR)
            return -errno; /* PK_ENOMEM is -ENOMEM, PK_EINVAL -EINVAL */
    }
}
