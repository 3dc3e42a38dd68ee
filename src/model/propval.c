/*
 * propval.c — typed property values (propval.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "model/propval.h"
#include "util/util.h"

size_t pv_text(const ev_prop_t *p, char *buf, const char **s)
{
    switch (p->kind) {
    case PV_STR:
        *s = p->s;
        return p->slen;
    case PV_INT:
        *s = buf;
        return (size_t)snprintf(buf, PV_TEXT_MAX, "%" PRId64, p->i);
    case PV_REAL:
        fmt_double(p->d, buf, PV_TEXT_MAX);
        *s = buf;
        return strlen(buf);
    case PV_BOOL:
        *s = p->i ? "true" : "false";
        return p->i ? 4 : 5;
    case PV_NONE:
        break;
    }
    *s = NULL;
    return 0;
}

void pv_from_json(const char *name, size_t nlen, const json_t *v, ev_prop_t *out)
{
    memset(out, 0, sizeof *out);
    out->name = name;
    out->nlen = nlen;
    if (json_is_string(v)) {
        out->kind = PV_STR;
        out->s = json_string_value(v);
        out->slen = json_string_length(v);
    } else if (json_is_integer(v)) {
        out->kind = PV_INT;
        out->i = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        out->kind = PV_REAL;
        out->d = json_real_value(v);
    } else if (json_is_boolean(v)) {
        out->kind = PV_BOOL;
        out->i = json_is_true(v);
    }
}

json_t *pv_to_json(const ev_prop_t *p)
{
    switch (p->kind) {
    case PV_STR:
        return json_stringn(p->s, p->slen);
    case PV_INT:
        return json_integer((json_int_t)p->i);
    case PV_REAL:
        return json_real(p->d);
    case PV_BOOL:
        return json_boolean(p->i);
    case PV_NONE:
        break;
    }
    return NULL;
}

const ev_prop_t *pv_find(const ev_prop_t *props, size_t n, const char *name, size_t nlen)
{
    for (size_t i = 0; i < n; i++)
        if (props[i].nlen == nlen && memcmp(props[i].name, name, nlen) == 0)
            return &props[i];
    return NULL;
}
