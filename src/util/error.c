/* error.c — cp_status texts and the error record helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

const char *cp_strerror(cp_status st)
{
    switch (st) {
    case CP_OK:
        return "ok";
    case CP_ENOMEM:
        return "out of memory";
    case CP_EINVAL:
        return "invalid input";
    case CP_ENOTFOUND:
        return "not found";
    case CP_EEXIST:
        return "already exists";
    case CP_ESYNTAX:
        return "syntax error";
    case CP_ETYPE:
        return "wrong type";
    case CP_ELOCKED:
        return "data directory locked by another process";
    case CP_EVERSION:
        return "incompatible data directory format";
    case CP_EIO:
        return "I/O error";
    case CP_ELIMIT:
        return "limit exceeded";
    case CP_ECYCLE:
        return "reference cycle";
    case CP_ECONFLICT:
        return "conflict";
    case CP_EAUTH:
        return "authentication required";
    case CP_EPERM:
        return "permission denied";
    case CP_EREADONLY:
        return "read-only";
    case CP_EINTERNAL:
        return "internal error";
    case CP_ENOSPC:
        return "storage full";
    case CP_ECORRUPT:
        return "damaged data";
    }
    return "unknown status";
}

void cp_free(void *p)
{
    free(p);
}

static void error_fill(cp_error_t *err, cp_status code, const char *file, const char *func,
                       int line, const char *fmt, va_list ap)
{
    err->code = code;
    err->src_file = file;
    err->src_func = func;
    err->src_line = line;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

cp_status error_set(cp_error_t *err, cp_status code, const char *file, const char *func, int line,
                    const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    error_fill(err, code, file, func, line, fmt, ap);
    va_end(ap);
    err->line = 0;
    err->column = 0;
    return code;
}

cp_status error_set_at(cp_error_t *err, cp_status code, int eline, int ecol, const char *file,
                       const char *func, int line, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    error_fill(err, code, file, func, line, fmt, ap);
    va_end(ap);
    err->line = eline;
    err->column = ecol;
    return code;
}

void error_prefix(cp_error_t *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char pre[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    size_t n = strlen(pre);
    if (n >= sizeof err->message)
        n = sizeof err->message - 1;
    memcpy(err->message, pre, n);
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof err->message - 1 - n)
        rest = sizeof err->message - 1 - n;
    memcpy(err->message + n, old, rest);
    err->message[n + rest] = '\0';
}

void error_clear(cp_error_t *err)
{
    if (err != NULL)
        memset(err, 0, sizeof *err);
}
