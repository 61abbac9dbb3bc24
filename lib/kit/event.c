/* lib/kit/event.c - pk_event_name: a static name for each pk_event_kind,
 * for logs and for hooks that print what they hear. */
#include <poolkit/event.h>

const char *
pk_event_name(int kind)
{
    switch (kind) {
    case PK_EVENT_CREATED:
        return "created";
    case PK_EVENT_DESTROYED:
        return "destroyed";
    case PK_EVENT_CHECK_FAILED:
        return "check_failed";
    case PK_EVENT_CREATE_FAILED:
        return "create_failed";
    case PK_EVENT_TIMEOUT:
        return "timeout";
    case PK_EVENT_HELD_TOO_LONG:
        return "held_too_long";
    case PK_EVENT_DETACHED:
        return "detached";
    case PK_EVENT_FUTURE_UNREAD:
        return "future_unread";
    case PK_EVENT_WORKER_DIED:
        return "worker_died";
    case PK_EVENT_SLOW_TASK:
        return "slow_task";
    case PK_EVENT_LEASE_OUT_AT_CLOSE:
        return "lease_out_at_close";
    case PK_EVENT_MISUSE:
        return "misuse";
    default:
        return "unknown";
    }
}
