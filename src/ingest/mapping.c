/* mapping.c — column mapping documents (mapping.h), the built-in presets
 * and the conversion of one CSV row into a Segment-shaped event. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/mapping.h"
#include "util/util.h"

/* ---------------------------------------------------------------- presets */

/* UCI Online Retail (docs/intake.md): one user per CustomerID, a purchase
 * (or, for invoices starting with C, a refund) per invoice line. */
static const char online_retail_json[] =
    "{\n"
    "  \"name\": \"online-retail\",\n"
    "  \"delimiter\": \",\",\n"
    "  \"header\": true,\n"
    "  \"skip_if_empty\": [\"CustomerID\"],\n"
    "  \"identifiers\": [{\"column\": \"CustomerID\", \"type\": \"user_id\", \"transform\": "
    "\"integer\"}],\n"
    "  \"traits\": [{\"column\": \"Country\", \"name\": \"country\", \"type\": \"string\"}],\n"
    "  \"event\": {\n"
    "    \"name\": \"purchase\",\n"
    "    \"name_when\": [{\"column\": \"InvoiceNo\", \"prefix\": \"C\", \"name\": \"refund\"}],\n"
    "    \"timestamp\": {\"column\": \"InvoiceDate\", \"format\": \"auto\"},\n"
    "    \"properties\": [\n"
    "      {\"column\": \"InvoiceNo\", \"name\": \"invoice\"},\n"
    "      {\"column\": \"StockCode\", \"name\": \"stock_code\"},\n"
    "      {\"column\": \"Description\", \"name\": \"description\"},\n"
    "      {\"column\": \"Quantity\", \"name\": \"quantity\", \"type\": \"int\"},\n"
    "      {\"column\": \"UnitPrice\", \"name\": \"unit_price\", \"type\": \"number\"},\n"
    "      {\"name\": \"amount\", \"type\": \"number\", \"product\": [\"Quantity\", "
    "\"UnitPrice\"], \"round\": 2}\n"
    "    ]\n"
    "  },\n"
    "  \"attributes\": [{\"name\": \"country\", \"type\": \"string\"}],\n"
    "  \"indexed_properties\": [\"stock_code\"]\n"
    "}\n";

const char *mapping_preset_json(const char *name)
{
    if (name && strcmp(name, "online-retail") == 0)
        return online_retail_json;
    return NULL;
}

cp_status mapping_preset(const char *name, mapping_t **out, cp_error_t *err)
{
    const char *j = mapping_preset_json(name);
    *out = NULL;
    if (j == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "unknown preset \"%.64s\" (known: online-retail)",
                      name ? name : "(null)");
    return mapping_parse(j, strlen(j), out, err);
}

/* ---------------------------------------------------------------- parse */

static void field_free(map_field_t *f)
{
    free(f->name);
    free(f->col.name);
    free(f->col2.name);
    free(f->strf);
}

void mapping_free(mapping_t *m)
{
    if (m == NULL)
        return;
    free(m->name);
    for (size_t i = 0; i < m->nskip; i++)
        free(m->skip[i].name);
    free(m->skip);
    for (size_t i = 0; i < m->nids; i++)
        field_free(&m->ids[i]);
    free(m->ids);
    for (size_t i = 0; i < m->ntraits; i++)
        field_free(&m->traits[i]);
    free(m->traits);
    free(m->event_name);
    free(m->event_col.name);
    for (size_t i = 0; i < m->nwhen; i++) {
        free(m->when[i].col.name);
        free(m->when[i].prefix);
        free(m->when[i].name);
    }
    free(m->when);
    field_free(&m->ts);
    free(m->msgid_col.name);
    for (size_t i = 0; i < m->nprops; i++)
        field_free(&m->props[i]);
    free(m->props);
    json_decref(m->attributes);
    json_decref(m->indexed);
    free(m);
}

static cp_status parse_col(const json_t *v, const char *where, map_col_t *c, cp_error_t *err)
{
    c->name = NULL;
    c->pos = -1;
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return CP_ERR(err, CP_EINVAL, "mapping: %s: empty column name", where);
        c->name = strdup(json_string_value(v));
        return c->name ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0 &&
        json_integer_value(v) < MAPPING_MAX_COLS) {
        c->pos = (int)json_integer_value(v);
        return CP_OK;
    }
    return CP_ERR(err, CP_EINVAL,
                  "mapping: %s: \"column\" must be a header name or a position 0..%d", where,
                  MAPPING_MAX_COLS - 1);
}

static map_vtype vtype_parse(const char *s)
{
    if (s == NULL || !strcmp(s, "string"))
        return MV_STRING;
    if (!strcmp(s, "int"))
        return MV_INT;
    if (!strcmp(s, "number"))
        return MV_NUMBER;
    if (!strcmp(s, "bool"))
        return MV_BOOL;
    if (!strcmp(s, "timestamp"))
        return MV_TIMESTAMP;
    return 0;
}

static cp_status parse_tsfmt(const json_t *f, map_field_t *d, const char *where, cp_error_t *err)
{
    const char *s = json_string_value(f);
    if (f && !json_is_string(f))
        return CP_ERR(err, CP_EINVAL, "mapping: %s: \"format\" must be a string", where);
    if (s == NULL || !strcmp(s, "iso8601") || !strcmp(s, "auto")) {
        d->tsfmt = TF_ISO;
    } else if (!strcmp(s, "epoch")) {
        d->tsfmt = TF_EPOCH;
    } else if (!strcmp(s, "epoch_ms")) {
        d->tsfmt = TF_EPOCH_MS;
    } else if (strchr(s, '%')) {
        d->tsfmt = TF_STRF;
        if ((d->strf = strdup(s)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    } else {
        return CP_ERR(err, CP_EINVAL,
                      "mapping: %s: unknown timestamp format \"%.64s\" (iso8601, epoch, "
                      "epoch_ms, or a %%Y-%%m-%%d style pattern)",
                      where, s);
    }
    return CP_OK;
}

/* One field object of identifiers/traits/properties. */
static cp_status parse_field(const json_t *o, const char *where, int need_name, int ident,
                             map_field_t *d, cp_error_t *err)
{
    memset(d, 0, sizeof *d);
    d->col.pos = d->col2.pos = -1;
    d->round = -1;
    if (!json_is_object(o))
        return CP_ERR(err, CP_EINVAL, "mapping: %s must be an object", where);
    const char *name = json_string_value(json_object_get(o, ident ? "type" : "name"));
    if (name == NULL && need_name)
        return CP_ERR(err, CP_EINVAL, "mapping: %s needs \"%s\"", where, ident ? "type" : "name");
    if (name && (d->name = strdup(name)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    const char *t = json_string_value(json_object_get(o, "type"));
    d->type = ident ? MV_STRING : vtype_parse(t);
    if (d->type == 0)
        return CP_ERR(err, CP_EINVAL,
                      "mapping: %s: unknown type \"%.32s\" (string, int, number, bool, timestamp)",
                      where, t);
    cp_status rc;
    const json_t *prod = json_object_get(o, "product");
    if (prod) {
        if (!json_is_array(prod) || json_array_size(prod) != 2)
            return CP_ERR(err, CP_EINVAL, "mapping: %s: \"product\" must be [column, column]",
                          where);
        if ((rc = parse_col(json_array_get(prod, 0), where, &d->col, err)) ||
            (rc = parse_col(json_array_get(prod, 1), where, &d->col2, err)))
            return rc;
        d->product = 1;
        if (d->type != MV_NUMBER && d->type != MV_INT)
            return CP_ERR(err, CP_EINVAL, "mapping: %s: a product is a number or an int", where);
    } else {
        const json_t *c = json_object_get(o, "column");
        if (c == NULL)
            return CP_ERR(err, CP_EINVAL, "mapping: %s needs \"column\" (or \"product\")", where);
        if ((rc = parse_col(c, where, &d->col, err)))
            return rc;
    }
    const json_t *r = json_object_get(o, "round");
    if (r) {
        if (!json_is_integer(r) || json_integer_value(r) < 0 || json_integer_value(r) > 9)
            return CP_ERR(err, CP_EINVAL, "mapping: %s: \"round\" must be 0..9", where);
        d->round = (int)json_integer_value(r);
    }
    const char *x = json_string_value(json_object_get(o, "transform"));
    if (x) {
        if (!strcmp(x, "integer"))
            d->xform = MX_INTEGER;
        else if (!strcmp(x, "trim"))
            d->xform = MX_TRIM;
        else if (!strcmp(x, "lower"))
            d->xform = MX_LOWER;
        else
            return CP_ERR(err, CP_EINVAL,
                          "mapping: %s: unknown transform \"%.32s\" (integer, trim, lower)", where,
                          x);
    }
    if (d->type == MV_TIMESTAMP)
        return parse_tsfmt(json_object_get(o, "format"), d, where, err);
    return CP_OK;
}

static cp_status parse_fields(const json_t *arr, const char *what, int need_name, int ident,
                              map_field_t **out, size_t *n, cp_error_t *err)
{
    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return CP_OK;
    if (!json_is_array(arr))
        return CP_ERR(err, CP_EINVAL, "mapping: \"%s\" must be an array", what);
    if (json_array_size(arr) > MAPPING_MAX_COLS)
        return CP_ERR(err, CP_ELIMIT, "mapping: more than %d %s", MAPPING_MAX_COLS, what);
    *out = calloc(json_array_size(arr) + 1, sizeof **out);
    if (*out == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        char where[64];
        snprintf(where, sizeof where, "%s[%zu]", what, i);
        cp_status rc = parse_field(v, where, need_name, ident, &(*out)[i], err);
        (*n)++;
        if (rc)
            return rc;
    }
    return CP_OK;
}

cp_status mapping_parse(const char *text, size_t len, mapping_t **out, cp_error_t *err)
{
    *out = NULL;
    json_error_t je;
    cp_status rc = CP_OK;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "mapping: malformed JSON at line %d, column %d: %s",
                      je.line, je.column, je.text);
    mapping_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        json_decref(j);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    m->event_col.pos = m->msgid_col.pos = -1;
    m->ts.col.pos = m->ts.col2.pos = -1;
    m->delim = ',';
    m->header = 1;
    if (!json_is_object(j)) {
        rc = CP_ERR(err, CP_EINVAL, "mapping: expected a JSON object");
        goto out;
    }
    static const char *const known[] = {"name",   "delimiter",  "header",
                                        "skip_if_empty", "identifiers", "traits",
                                        "event", "attributes", "indexed_properties",
                                        "description"};
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        int ok = 0;
        for (size_t i = 0; i < CP_ARRAY_LEN(known); i++)
            ok |= !strcmp(known[i], k);
        if (!ok) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: unknown field \"%.64s\"", k);
            goto out;
        }
    }
    const char *name = json_string_value(json_object_get(j, "name"));
    if ((m->name = strdup(name ? name : "custom")) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    v = json_object_get(j, "delimiter");
    if (v) {
        if (!json_is_string(v) || json_string_length(v) != 1 || json_string_value(v)[0] == '"' ||
            json_string_value(v)[0] == '\n') {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"delimiter\" must be one character");
            goto out;
        }
        m->delim = json_string_value(v)[0];
    }
    v = json_object_get(j, "header");
    if (v) {
        if (!json_is_boolean(v)) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"header\" must be true or false");
            goto out;
        }
        m->header = json_is_true(v);
    }
    v = json_object_get(j, "skip_if_empty");
    if (v) {
        if (!json_is_array(v) || json_array_size(v) > MAPPING_MAX_COLS) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"skip_if_empty\" must be an array of columns");
            goto out;
        }
        m->skip = calloc(json_array_size(v) + 1, sizeof *m->skip);
        if (m->skip == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            m->nskip++;
            if ((rc = parse_col(c, "skip_if_empty", &m->skip[i], err)))
                goto out;
        }
    }
    if ((rc = parse_fields(json_object_get(j, "identifiers"), "identifiers", 1, 1, &m->ids,
                           &m->nids, err)) ||
        (rc = parse_fields(json_object_get(j, "traits"), "traits", 1, 0, &m->traits, &m->ntraits,
                           err)))
        goto out;
    if (m->nids == 0) {
        rc = CP_ERR(err, CP_EINVAL, "mapping: \"identifiers\" must name at least one column");
        goto out;
    }
    const json_t *ev = json_object_get(j, "event");
    if (ev) {
        if (!json_is_object(ev)) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"event\" must be an object");
            goto out;
        }
        m->has_event = 1;
        const json_t *n = json_object_get(ev, "name");
        if (json_is_string(n) && json_string_length(n) > 0) {
            m->event_name = strdup(json_string_value(n));
            if (m->event_name == NULL) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
        } else if (json_is_object(n)) {
            if ((rc = parse_col(json_object_get(n, "column"), "event.name", &m->event_col, err)))
                goto out;
        } else {
            rc = CP_ERR(err, CP_EINVAL,
                        "mapping: \"event.name\" must be a name or {\"column\": ...}");
            goto out;
        }
        const json_t *w = json_object_get(ev, "name_when");
        if (w) {
            if (!json_is_array(w) || json_array_size(w) > 64) {
                rc = CP_ERR(err, CP_EINVAL, "mapping: \"event.name_when\" must be an array");
                goto out;
            }
            m->when = calloc(json_array_size(w) + 1, sizeof *m->when);
            if (m->when == NULL) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
            size_t i;
            json_t *x;
            json_array_foreach(w, i, x)
            {
                map_when_t *d = &m->when[m->nwhen++];
                const char *p = json_string_value(json_object_get(x, "prefix"));
                const char *nm = json_string_value(json_object_get(x, "name"));
                if (p == NULL || nm == NULL || *nm == '\0') {
                    rc = CP_ERR(err, CP_EINVAL,
                                "mapping: event.name_when[%zu] needs \"column\", \"prefix\" and "
                                "\"name\"",
                                i);
                    goto out;
                }
                if ((rc = parse_col(json_object_get(x, "column"), "event.name_when", &d->col,
                                    err)))
                    goto out;
                d->prefix = strdup(p);
                d->name = strdup(nm);
                if (!d->prefix || !d->name) {
                    rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                    goto out;
                }
            }
        }
        const json_t *ts = json_object_get(ev, "timestamp");
        if (ts) {
            if (!json_is_object(ts)) {
                rc = CP_ERR(err, CP_EINVAL, "mapping: \"event.timestamp\" must be an object");
                goto out;
            }
            m->has_ts = 1;
            m->ts.type = MV_TIMESTAMP;
            if ((rc = parse_col(json_object_get(ts, "column"), "event.timestamp", &m->ts.col,
                                err)) ||
                (rc = parse_tsfmt(json_object_get(ts, "format"), &m->ts, "event.timestamp", err)))
                goto out;
        }
        const json_t *mi = json_object_get(ev, "message_id");
        if (mi) {
            m->has_msgid = 1;
            if ((rc = parse_col(json_object_get(mi, "column"), "event.message_id", &m->msgid_col,
                                err)))
                goto out;
        }
        if ((rc = parse_fields(json_object_get(ev, "properties"), "event.properties", 1, 0,
                               &m->props, &m->nprops, err)))
            goto out;
    }
    v = json_object_get(j, "attributes");
    if (v) {
        if (!json_is_array(v)) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"attributes\" must be an array");
            goto out;
        }
        m->attributes = json_incref(v);
    }
    v = json_object_get(j, "indexed_properties");
    if (v) {
        size_t i;
        json_t *x;
        if (!json_is_array(v)) {
            rc = CP_ERR(err, CP_EINVAL, "mapping: \"indexed_properties\" must be an array");
            goto out;
        }
        json_array_foreach(v, i, x) if (!json_is_string(x))
        {
            rc = CP_ERR(err, CP_EINVAL, "mapping: indexed_properties[%zu] must be a name", i);
            goto out;
        }
        m->indexed = json_incref(v);
    }
    *out = m;
    m = NULL;
out:
    mapping_free(m);
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------- bind */

static cp_status bind_col(map_col_t *c, const csv_field_t *h, size_t n, int header,
                          cp_error_t *err)
{
    if (c->name == NULL)
        return CP_OK;
    if (!header)
        return CP_ERR(err, CP_EINVAL,
                      "mapping names column \"%.64s\" but the file has no header (use positions)",
                      c->name);
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].p, c->name) == 0) {
            c->pos = (int)i;
            return CP_OK;
        }
    return CP_ERR(err, CP_EINVAL, "the header has no column \"%.64s\"", c->name);
}

cp_status mapping_bind(mapping_t *m, const csv_field_t *hdr, size_t n, cp_error_t *err)
{
    cp_status rc = CP_OK;
    int h = hdr != NULL;
    for (size_t i = 0; rc == CP_OK && i < m->nskip; i++)
        rc = bind_col(&m->skip[i], hdr, n, h, err);
    map_field_t *lists[] = {m->ids, m->traits, m->props};
    size_t counts[] = {m->nids, m->ntraits, m->nprops};
    for (size_t l = 0; l < 3; l++)
        for (size_t i = 0; rc == CP_OK && i < counts[l]; i++) {
            rc = bind_col(&lists[l][i].col, hdr, n, h, err);
            if (rc == CP_OK && lists[l][i].product)
                rc = bind_col(&lists[l][i].col2, hdr, n, h, err);
        }
    for (size_t i = 0; rc == CP_OK && i < m->nwhen; i++)
        rc = bind_col(&m->when[i].col, hdr, n, h, err);
    if (rc == CP_OK)
        rc = bind_col(&m->event_col, hdr, n, h, err);
    if (rc == CP_OK && m->has_ts)
        rc = bind_col(&m->ts.col, hdr, n, h, err);
    if (rc == CP_OK && m->has_msgid)
        rc = bind_col(&m->msgid_col, hdr, n, h, err);
    if (rc == CP_OK)
        m->bound = 1;
    return rc;
}

/* ---------------------------------------------------------------- rows */

int mapping_strftime_parse(const char *fmt, const char *s, size_t len, int64_t *secs)
{
    static const char *const mon[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                      "jul", "aug", "sep", "oct", "nov", "dec"};
    int Y = -1, M = 1, D = 1, h = 0, mi = 0, se = 0;
    size_t p = 0;
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            if (p >= len || s[p] != *f)
                return -1;
            p++;
            continue;
        }
        f++;
        if (*f == '%') {
            if (p >= len || s[p] != '%')
                return -1;
            p++;
            continue;
        }
        if (*f == 'b') {
            if (p + 3 > len)
                return -1;
            int found = -1;
            for (int i = 0; i < 12; i++)
                if (strncasecmp(s + p, mon[i], 3) == 0)
                    found = i;
            if (found < 0)
                return -1;
            M = found + 1;
            p += 3;
            continue;
        }
        int maxd = *f == 'Y' ? 4 : 2, v = 0, nd = 0;
        while (p < len && nd < maxd && s[p] >= '0' && s[p] <= '9') {
            v = v * 10 + (s[p++] - '0');
            nd++;
        }
        if (nd == 0)
            return -1;
        switch (*f) {
        case 'Y': Y = v; break;
        case 'y': Y = v < 70 ? 2000 + v : 1900 + v; break;
        case 'm': M = v; break;
        case 'd': D = v; break;
        case 'H': h = v; break;
        case 'M': mi = v; break;
        case 'S': se = v; break;
        default: return -1;
        }
    }
    if (p != len || Y < 0)
        return -1;
    char iso[40];
    int n = snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02dZ", Y, M, D, h, mi, se);
    return cp_time_parse(iso, (size_t)n, secs);
}

static int col_ok(const map_col_t *c, size_t n) { return c->pos >= 0 && (size_t)c->pos < n; }

static const csv_field_t *cell(const map_col_t *c, const csv_field_t *f, size_t n)
{
    static const csv_field_t empty = {"", 0};
    return col_ok(c, n) ? &f[c->pos] : &empty;
}

static void trimmed(const csv_field_t *f, const char **s, size_t *len)
{
    const char *p = f->p;
    size_t l = f->len;
    while (l && isspace((unsigned char)*p)) {
        p++;
        l--;
    }
    while (l && isspace((unsigned char)p[l - 1]))
        l--;
    *s = p;
    *len = l;
}

static int parse_number(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *s, size_t len, long long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end == '.') {
        /* "6.0": an integral decimal is an int */
        double d;
        if (parse_number(s, len, &d) || d != floor(d) || fabs(d) > 9.0e15)
            return -1;
        *out = (long long)d;
        return 0;
    }
    if (*end != '\0' || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static double round_to(double v, int r)
{
    if (r < 0)
        return v;
    double p = pow(10, r);
    return round(v * p) / p;
}

static cp_status bad_value(cp_error_t *err, uint64_t line, const map_field_t *d,
                           const csv_field_t *c, const char *expects)
{
    return CP_ERR(err, CP_ETYPE, "line %llu: column %s%s%d (%s): \"%.64s\" is not %s",
                  (unsigned long long)line, d->col.name ? "\"" : "",
                  d->col.name ? d->col.name : "", d->col.pos + 1, d->name ? d->name : "value",
                  c->p, expects);
}

/* The value of one field as JSON (NULL *out for an empty cell). */
static cp_status field_value(const map_field_t *d, const csv_field_t *f, size_t n, uint64_t line,
                             json_t **out, cp_error_t *err)
{
    *out = NULL;
    if (d->product) {
        const csv_field_t *a = cell(&d->col, f, n), *b = cell(&d->col2, f, n);
        double x, y;
        if (a->len == 0 || b->len == 0)
            return CP_OK;
        if (parse_number(a->p, a->len, &x))
            return bad_value(err, line, d, a, "a number");
        if (parse_number(b->p, b->len, &y))
            return CP_ERR(err, CP_ETYPE, "line %llu: column %d: \"%.64s\" is not a number",
                          (unsigned long long)line, d->col2.pos + 1, b->p);
        double v = round_to(x * y, d->round);
        *out = d->type == MV_INT ? json_integer((json_int_t)llround(v)) : json_real(v);
        return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    const csv_field_t *c = cell(&d->col, f, n);
    const char *s;
    size_t len;
    trimmed(c, &s, &len);
    if (len == 0)
        return CP_OK;
    if (memchr(c->p, '\0', c->len))
        return CP_ERR(err, CP_EINVAL, "line %llu: column %d contains a NUL byte",
                      (unsigned long long)line, d->col.pos + 1);
    switch (d->type) {
    case MV_STRING: {
        if (d->xform == MX_INTEGER) {
            long long v;
            if (parse_int(s, len, &v))
                return bad_value(err, line, d, c, "an integer");
            char buf[32];
            int k = snprintf(buf, sizeof buf, "%lld", v);
            *out = json_stringn(buf, (size_t)k);
        } else if (d->xform == MX_LOWER) {
            char *low = malloc(len + 1);
            if (low == NULL)
                return CP_ERR(err, CP_ENOMEM, "out of memory");
            for (size_t i = 0; i < len; i++)
                low[i] = (char)tolower((unsigned char)s[i]);
            *out = json_stringn(low, len);
            free(low);
        } else if (d->xform == MX_TRIM) {
            *out = json_stringn(s, len);
        } else {
            /* Untransformed text keeps its spaces (descriptions do). */
            *out = json_stringn(c->p, c->len);
        }
        break;
    }
    case MV_INT: {
        long long v;
        if (parse_int(s, len, &v))
            return bad_value(err, line, d, c, "an integer");
        *out = json_integer(v);
        break;
    }
    case MV_NUMBER: {
        double v;
        if (parse_number(s, len, &v))
            return bad_value(err, line, d, c, "a number");
        v = round_to(v, d->round);
        *out = json_real(v);
        break;
    }
    case MV_BOOL: {
        int t = len == 4 ? !strncasecmp(s, "true", 4) : len == 3 ? !strncasecmp(s, "yes", 3) : 0;
        int fl = len == 5 ? !strncasecmp(s, "false", 5) : len == 2 ? !strncasecmp(s, "no", 2) : 0;
        if (len == 1 && (*s == '1' || *s == '0')) {
            t = *s == '1';
            fl = !t;
        }
        if (!t && !fl)
            return bad_value(err, line, d, c, "a bool (true/false, yes/no, 1/0)");
        *out = json_boolean(t);
        break;
    }
    case MV_TIMESTAMP: {
        int64_t secs;
        int bad = 0;
        if (d->tsfmt == TF_ISO) {
            bad = cp_time_parse(s, len, &secs) != 0;
        } else if (d->tsfmt == TF_STRF) {
            bad = mapping_strftime_parse(d->strf, s, len, &secs) != 0;
        } else {
            long long v;
            bad = parse_int(s, len, &v) != 0;
            secs = d->tsfmt == TF_EPOCH_MS ? v / 1000 : v;
        }
        if (bad)
            return bad_value(err, line, d, c,
                             d->tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                 : "a timestamp");
        char iso[40];
        cp_time_format(secs, iso, sizeof iso);
        *out = json_string(iso);
        break;
    }
    }
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}

cp_status mapping_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                      const char *msgid_prefix, json_t **out, map_result *res, cp_error_t *err)
{
    *out = NULL;
    *res = MAP_EVENT;
    cp_status rc = CP_OK;
    for (size_t i = 0; i < m->nskip; i++) {
        const char *s;
        size_t len;
        trimmed(cell(&m->skip[i], f, n), &s, &len);
        if (len == 0) {
            *res = MAP_SKIP;
            return CP_OK;
        }
    }
    json_t *ev = json_object(), *traits = json_object(), *v = NULL;
    if (ev == NULL || traits == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    int nid = 0;
    for (size_t i = 0; i < m->nids; i++) {
        if ((rc = field_value(&m->ids[i], f, n, line, &v, err)))
            goto out;
        if (v == NULL)
            continue;
        const char *t = m->ids[i].name;
        const char *key = !strcmp(t, "user_id") ? "userId"
                          : !strcmp(t, "anonymous_id") ? "anonymousId" : NULL;
        if (key && json_object_get(ev, key) == NULL)
            json_object_set_new(ev, key, v);
        else
            json_object_set_new(traits, t, v);
        v = NULL;
        nid++;
    }
    if (nid == 0) {
        rc = CP_ERR(err, CP_EINVAL, "line %llu: no identifier (every identifier column is empty)",
                    (unsigned long long)line);
        goto out;
    }
    for (size_t i = 0; i < m->ntraits; i++) {
        if ((rc = field_value(&m->traits[i], f, n, line, &v, err)))
            goto out;
        if (v)
            json_object_set_new(traits, m->traits[i].name, v);
        v = NULL;
    }
    if (!m->has_event) {
        json_object_set_new(ev, "type", json_string("identify"));
        json_object_set(ev, "traits", traits);
    } else {
        json_object_set_new(ev, "type", json_string("track"));
        const char *name = m->event_name;
        const csv_field_t *nc = NULL;
        if (name == NULL) {
            nc = cell(&m->event_col, f, n);
            if (nc->len == 0) {
                rc = CP_ERR(err, CP_EINVAL, "line %llu: the event name column is empty",
                            (unsigned long long)line);
                goto out;
            }
        }
        for (size_t i = 0; i < m->nwhen; i++) {
            const csv_field_t *c = cell(&m->when[i].col, f, n);
            size_t pl = strlen(m->when[i].prefix);
            if (c->len >= pl && memcmp(c->p, m->when[i].prefix, pl) == 0) {
                name = m->when[i].name;
                nc = NULL;
                break;
            }
        }
        json_object_set_new(ev, "event", nc ? json_stringn(nc->p, nc->len) : json_string(name));
        if (m->has_ts) {
            if ((rc = field_value(&m->ts, f, n, line, &v, err)))
                goto out;
            if (v == NULL) {
                rc = CP_ERR(err, CP_EINVAL, "line %llu: the timestamp column is empty",
                            (unsigned long long)line);
                goto out;
            }
            json_object_set_new(ev, "timestamp", v);
            v = NULL;
        }
        json_t *props = json_object();
        if (props == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        json_object_set_new(ev, "properties", props);
        for (size_t i = 0; i < m->nprops; i++) {
            if ((rc = field_value(&m->props[i], f, n, line, &v, err)))
                goto out;
            if (v)
                json_object_set_new(props, m->props[i].name, v);
            v = NULL;
        }
        if (json_object_size(traits))
            json_object_set_new(ev, "context", json_pack("{s:O}", "traits", traits));
    }
    if (m->has_msgid) {
        const csv_field_t *c = cell(&m->msgid_col, f, n);
        if (c->len == 0) {
            rc = CP_ERR(err, CP_EINVAL, "line %llu: the message id column is empty",
                        (unsigned long long)line);
            goto out;
        }
        json_object_set_new(ev, "messageId", json_stringn(c->p, c->len));
    } else {
        char buf[160];
        snprintf(buf, sizeof buf, "%.120s:%llu", msgid_prefix ? msgid_prefix : "import",
                 (unsigned long long)line);
        json_object_set_new(ev, "messageId", json_string(buf));
    }
    *out = ev;
    ev = NULL;
out:
    json_decref(v);
    json_decref(ev);
    json_decref(traits);
    return rc;
}
