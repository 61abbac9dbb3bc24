/* lib/kit/error.c - pk_strerror, pk_err_name and pk_error, made from the one
 * X-macro list in poolkit/error.h. */
#include <poolkit/error.h>
#include <poolkit/version.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *
pk_strerror(int code)
{
    switch (code) {
    case PK_OK:
        return "success";
#define PK__ERR_MSG(name, value, msg) \
    case PK_##name:                   \
        return msg;
        PK_ERROR_LIST(PK__ERR_MSG)
#undef PK__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *
pk_err_name(int code)
{
    switch (code) {
    case PK_OK:
        return "PK_OK";
#define PK__ERR_NAME(name, value, msg) \
    case PK_##name:                    \
        return "PK_" #name;
        PK_ERROR_LIST(PK__ERR_NAME)
#undef PK__ERR_NAME
    default:
        return "PK_EUNKNOWN";
    }
}

int
pk_error_set(pk_error *err, int code, int sys, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return code;
    err->code = code;
    err->sys = sys;
    if (!fmt) {
        snprintf(err->msg, sizeof err->msg, "%s", pk_strerror(code));
        return code;
    }
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void
pk_error_clear(pk_error *err)
{
    if (!err)
        return;
    err->code = 0;
    err->sys = 0;
    err->msg[0] = '\0';
}

const char *
pk_version(void)
{
    return PK_VERSION_STRING;
}

unsigned
pk_version_number(void)
{
    return PK_VERSION_HEX;
}
