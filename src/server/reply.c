/* reply.c — responses, error bodies and the cp_status -> HTTP mapping. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

void srv_resp_init(srv_resp_t *r)
{
    memset(r, 0, sizeof *r);
    r->status = 500;
    r->content_type = "application/json";
}

void srv_resp_free(srv_resp_t *r)
{
    if (r->body != NULL && r->body_free != NULL)
        r->body_free(r->body);
    srv_stream_free(r->stream);
    r->body = NULL;
    r->stream = NULL;
    r->len = 0;
}

static void resp_clear_body(srv_resp_t *r)
{
    if (r->body != NULL && r->body_free != NULL)
        r->body_free(r->body);
    r->body = NULL;
    r->len = 0;
}

void srv_reply_text(srv_resp_t *r, int status, char *text, void (*fr)(void *))
{
    resp_clear_body(r);
    r->status = status;
    r->content_type = "application/json";
    r->body = text;
    r->len = text != NULL ? strlen(text) : 0;
    r->body_free = fr;
}

/* The fallback when even the error body cannot be built: a static text,
 * so that out-of-memory still answers something well-formed. */
static void reply_oom(srv_resp_t *r)
{
    static char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server "
                        "ran out of memory building the response\"}}";
    resp_clear_body(r);
    r->status = 500;
    r->content_type = "application/json";
    r->body = oom;
    r->len = sizeof oom - 1;
    r->body_free = NULL;
}

void srv_reply_json(srv_resp_t *r, int status, json_t *j)
{
    char *text = NULL;
    if (j != NULL)
        /* UTF-8 as is (Chinese names readable in any client), and reals
         * with 15 significant digits: 0.201672, not 0.20167199999999999. */
        text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (text == NULL) {
        reply_oom(r);
        return;
    }
    srv_reply_text(r, status, text, free);
}

static void reply_error_v(srv_resp_t *r, int status, const char *code, json_t *extra,
                          const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* Library messages are UTF-8 but may quote user bytes; jansson refuses
     * invalid UTF-8, so fall back to a generic sentence rather than lose
     * the whole error. */
    json_t *inner = json_object();
    json_t *m = json_string(msg);
    if (m == NULL)
        m = json_string("(message not valid UTF-8)");
    /* Every step checked: an error body that lost its code, message or
     * position would mislead; the static out-of-memory body does not. */
    int bad = inner == NULL || m == NULL || json_object_set_new(inner, "code", json_string(code)) ||
              json_object_set(inner, "message", m) ||
              (extra != NULL && json_object_update(inner, extra));
    json_decref(m);
    json_decref(extra);
    if (bad) {
        json_decref(inner);
        reply_oom(r);
        return;
    }
    json_t *outer = json_pack("{s:o}", "error", inner);
    srv_reply_json(r, status, outer);
}

void srv_reply_error(srv_resp_t *r, int status, const char *code, json_t *extra, const char *fmt,
                     ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, extra, fmt, ap);
    va_end(ap);
    if (status == 401)
        r->www_authenticate = 1;
}

int srv_status_http(cp_status st, unsigned flags)
{
    switch (st) {
    case CP_OK:
        return 200;
    case CP_ENOMEM:
        return 500;
    case CP_EINVAL:
        return 400;
    case CP_ENOTFOUND:
        return (flags & SRV_ERR_BODY_REFS) ? 400 : 404;
    case CP_EEXIST:
        return 409;
    case CP_ESYNTAX:
        return 400;
    case CP_ETYPE:
        return 400;
    case CP_ELOCKED:
        return 503;
    case CP_EVERSION:
        return 503;
    case CP_EIO:
        return 503;
    case CP_ELIMIT:
        return 413;
    case CP_ECYCLE:
        return 409;
    case CP_ECONFLICT:
        return 409;
    case CP_EAUTH:
        return 401;
    case CP_EPERM:
        return 403;
    case CP_EREADONLY:
        return 503;
    case CP_EINTERNAL:
        return 500;
    case CP_ENOSPC:
        return 507;
    case CP_ECORRUPT:
        return 500;
    }
    return 500;
}

const char *srv_status_slug(cp_status st, unsigned flags)
{
    switch (st) {
    case CP_OK:
        return "ok";
    case CP_ENOMEM:
        return "out_of_memory";
    case CP_EINVAL:
        return "invalid";
    case CP_ENOTFOUND:
        return (flags & SRV_ERR_BODY_REFS) ? "unknown_reference" : "not_found";
    case CP_EEXIST:
        return "exists";
    case CP_ESYNTAX:
        return "syntax_error";
    case CP_ETYPE:
        return "wrong_type";
    case CP_ELOCKED:
        return "locked";
    case CP_EVERSION:
        return "incompatible_version";
    case CP_EIO:
        return "storage_error";
    case CP_ELIMIT:
        return "too_large";
    case CP_ECYCLE:
        return "cycle";
    case CP_ECONFLICT:
        return "conflict";
    case CP_EAUTH:
        return "unauthorized";
    case CP_EPERM:
        return "forbidden";
    case CP_EREADONLY:
        return "read_only";
    case CP_EINTERNAL:
        return "internal";
    case CP_ENOSPC:
        return "storage_full";
    case CP_ECORRUPT:
        return "data_damaged";
    }
    return "internal";
}

void srv_reply_cp(srv_resp_t *r, cp_status st, const cp_error_t *err, unsigned flags)
{
    srv_reply_cp_extra(r, st, err, flags, NULL);
}

void srv_reply_cp_extra(srv_resp_t *r, cp_status st, const cp_error_t *err, unsigned flags,
                        json_t *extra)
{
    if (extra == NULL && (extra = json_object()) == NULL) {
        reply_oom(r);
        return;
    }
    const char *msg = cp_strerror(st);
    int bad = 0; /* a field of the error body could not be added */
    char posmsg[600];
    if (err != NULL && err->code == st && err->message[0] != '\0') {
        msg = err->message;
        /* Every expression error should read "L:C: what" like the parser's
         * syntax errors, also when the library left the position to the
         * fields (unknown names). */
        int l, c;
        if (err->line > 0 && sscanf(msg, "%d:%d:", &l, &c) != 2) {
            snprintf(posmsg, sizeof posmsg, "%d:%d: %s", err->line, err->column, msg);
            msg = posmsg;
        }
        if (err->line > 0) {
            bad |= json_object_set_new(extra, "line", json_integer(err->line));
            bad |= json_object_set_new(extra, "column", json_integer(err->column));
        }
        if (err->record > 0)
            bad |= json_object_set_new(extra, "record", json_integer((json_int_t)err->record));
    }
    if (bad) {
        json_decref(extra);
        reply_oom(r);
        return;
    }
    srv_reply_error(r, srv_status_http(st, flags), srv_status_slug(st, flags), extra, "%s", msg);
}
