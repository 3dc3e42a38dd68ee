/* mapping.c — column mapping documents (mapping.h), the built-in presets
 * and the conversion of one CSV row into a Segment-shaped event. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/mapping.h"
#include "model/taxonomy.h"
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

/* 1 if a name has no control bytes (the test segment.c makes of event
 * names), known once per mapping for its constant names. */
static int name_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

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
    for (size_t i = 0; i < m->ntags; i++) {
        free(m->tags[i].col.name);
        json_decref(m->tags[i].dict);
    }
    free(m->tags);
    free(m->names);
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

/*
 * Output keys: rows become objects (traits, properties) where a later
 * field of the same name replaces an earlier one. Giving each distinct
 * name a small number here lets a row do that with an array lookup.
 * Identifiers other than the userId / anonymousId ones land in the traits
 * object under their type, so ids and traits share one numbering.
 */
static cp_status assign_keys(mapping_t *m, cp_error_t *err)
{
    size_t nt = m->nids + m->ntraits, k = 0;
    for (size_t i = 0; i < nt; i++) {
        map_field_t *f = i < m->nids ? &m->ids[i] : &m->traits[i - m->nids];
        f->nlen = strlen(f->name);
        f->builtin_ident = ingest_trait_is_ident(NULL, f->name);
        f->id_kind = i >= m->nids                       ? 0
                     : !strcmp(f->name, "user_id")      ? 1
                     : !strcmp(f->name, "anonymous_id") ? 2
                                                        : 0;
        f->key = -1;
        for (size_t j = 0; j < i && f->key < 0; j++) {
            const map_field_t *g = j < m->nids ? &m->ids[j] : &m->traits[j - m->nids];
            if (!strcmp(g->name, f->name))
                f->key = g->key;
        }
        if (f->key < 0)
            f->key = (int)k++;
    }
    m->ntkeys = k;
    k = 0;
    for (size_t i = 0; i < m->nprops; i++) {
        map_field_t *f = &m->props[i];
        f->nlen = strlen(f->name);
        f->key = -1;
        for (size_t j = 0; j < i && f->key < 0; j++)
            if (!strcmp(m->props[j].name, f->name))
                f->key = m->props[j].key;
        if (f->key < 0)
            f->key = (int)k++;
    }
    m->npkeys = k;
    m->uniq_keys = m->ntkeys == nt && m->npkeys == m->nprops;
    /* mapping_row_event's cheap bound of an event's compact JSON: row_bound
     * with every value at its widest non-string size (a number's 32, or a
     * string's 2 quotes, plus 6 bytes per string byte counted per row) */
    size_t b = 256 + 2 * (16 + 34) + 12 + 16;
    for (size_t i = 0; i < nt; i++) {
        const map_field_t *f = i < m->nids ? &m->ids[i] : &m->traits[i - m->nids];
        b += 4 + 6 * f->nlen + 34;
    }
    for (size_t i = 0; i < m->nprops; i++)
        b += 4 + 6 * m->props[i].nlen + 34;
    m->bound_fixed = b;
    /* the names, for one copy per event */
    size_t total = 0;
    for (size_t i = 0; i < nt + m->nprops; i++) {
        map_field_t *f = i < m->nids ? &m->ids[i]
                         : i < nt    ? &m->traits[i - m->nids]
                                     : &m->props[i - nt];
        f->name_off = total;
        total += f->nlen + 1;
    }
    if ((m->names = malloc(total ? total : 1)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    m->names_len = total;
    for (size_t i = 0; i < nt + m->nprops; i++) {
        const map_field_t *f = i < m->nids ? &m->ids[i]
                               : i < nt    ? &m->traits[i - m->nids]
                                           : &m->props[i - nt];
        memcpy(m->names + f->name_off, f->name, f->nlen + 1);
    }
    return CP_OK;
}

/* "tags": [{"column", "separator", "dictionary", "unknown"}]. Dictionary
 * values must be valid tag paths; whether they exist is the engine's
 * question (unknown ones are counted there, not fatal). */
static cp_status parse_tags(const json_t *v, mapping_t *m, cp_error_t *err)
{
    if (!json_is_array(v) || json_array_size(v) > MAPPING_MAX_COLS)
        return CP_ERR(err, CP_EINVAL,
                      "mapping: \"tags\" must be an array of "
                      "{\"column\", \"separator\", \"dictionary\"} objects");
    if ((m->tags = calloc(json_array_size(v) + 1, sizeof *m->tags)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t)
    {
        map_tags_t *d = &m->tags[m->ntags++];
        d->sep = ',';
        char where[32];
        snprintf(where, sizeof where, "tags[%zu]", i);
        if (!json_is_object(t))
            return CP_ERR(err, CP_EINVAL, "mapping: %s must be an object with a \"column\"", where);
        const char *k;
        const json_t *x;
        json_object_foreach((json_t *)t, k, x)
        {
            if (strcmp(k, "column") && strcmp(k, "separator") && strcmp(k, "dictionary") &&
                strcmp(k, "unknown")) {
                if (!strcmp(k, "dictionary_file"))
                    return CP_ERR(err, CP_EINVAL,
                                  "mapping: %s.dictionary_file must be read by the caller "
                                  "(mapping_resolve_files; `crowdpack import --mapping` does)",
                                  where);
                return CP_ERR(err, CP_EINVAL,
                              "mapping: %s: unknown field \"%.64s\" (expected column, "
                              "separator, dictionary, dictionary_file, unknown)",
                              where, k);
            }
        }
        cp_status rc = parse_col(json_object_get(t, "column"), where, &d->col, err);
        if (rc)
            return rc;
        x = json_object_get(t, "separator");
        if (x) {
            /* The delimiter too: "10006,10024" is one quoted CSV cell. */
            if (!json_is_string(x) || json_string_length(x) != 1)
                return CP_ERR(err, CP_EINVAL, "mapping: %s.separator must be one character", where);
            d->sep = json_string_value(x)[0];
        }
        x = json_object_get(t, "unknown");
        if (x && !(json_is_string(x) && !strcmp(json_string_value(x), "skip")))
            return CP_ERR(err, CP_EINVAL,
                          "mapping: %s.unknown must be \"skip\" (unknown ids are counted, "
                          "not fatal)",
                          where);
        x = json_object_get(t, "dictionary");
        if (x) {
            if (!json_is_object(x))
                return CP_ERR(err, CP_EINVAL,
                              "mapping: %s.dictionary must be an object of id -> tag path", where);
            json_object_foreach((json_t *)x, k, t)
            {
                const char *path = json_string_value(t);
                cp_error_t e2;
                if (path == NULL || strlen(k) > MAPPING_TAG_MAX ||
                    tax_validate_path(path, strlen(path), &e2))
                    return CP_ERR(err, CP_EINVAL,
                                  "mapping: %s.dictionary[\"%.64s\"] must be a tag path "
                                  "(such as \"interest/finance\")",
                                  where, k);
            }
            d->dict = json_incref((json_t *)x);
        }
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
        return CP_ERR(err, CP_EINVAL, "mapping: malformed JSON at line %d, column %d: %s", je.line,
                      je.column, je.text);
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
    static const char *const known[] = {"name",          "delimiter",   "header",
                                        "skip_if_empty", "identifiers", "traits",
                                        "event",         "attributes",  "indexed_properties",
                                        "description",   "tags"};
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
            m->event_name_len = strlen(m->event_name);
            m->event_name_print = name_printable(m->event_name);
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
                if ((rc = parse_col(json_object_get(x, "column"), "event.name_when", &d->col, err)))
                    goto out;
                d->prefix = strdup(p);
                d->name = strdup(nm);
                if (!d->prefix || !d->name) {
                    rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                    goto out;
                }
                d->prefix_len = strlen(p);
                d->name_len = strlen(nm);
                d->name_print = name_printable(nm);
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
    if ((rc = assign_keys(m, err)))
        goto out;
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
    v = json_object_get(j, "tags");
    if (v && (rc = parse_tags(v, m, err)))
        goto out;
    *out = m;
    m = NULL;
out:
    mapping_free(m);
    json_decref(j);
    return rc;
}

cp_status mapping_resolve_files(const char *text, size_t len, const char *dir, char **out,
                                size_t *outlen, cp_error_t *err)
{
    *out = NULL;
    *outlen = 0;
    cp_status rc = CP_OK;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *tags = json_object_get(j, "tags");
    int changed = 0;
    char *path = NULL;
    if (!json_is_array(tags))
        goto out; /* nothing to resolve; mapping_parse judges the rest */
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        const json_t *f = json_object_get(t, "dictionary_file");
        if (f == NULL)
            continue;
        const char *fn = json_string_value(f);
        if (fn == NULL || *fn == '\0') {
            rc =
                CP_ERR(err, CP_EINVAL, "mapping: tags[%zu].dictionary_file must be a file name", i);
            goto out;
        }
        if (json_object_get(t, "dictionary")) {
            rc = CP_ERR(err, CP_EINVAL,
                        "mapping: tags[%zu] has both \"dictionary\" and \"dictionary_file\"", i);
            goto out;
        }
        free(path);
        path = NULL;
        if (fn[0] == '/' ? (path = strdup(fn)) == NULL
                         : asprintf(&path, "%s/%s", dir && *dir ? dir : ".", fn) < 0) {
            path = NULL;
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        FILE *fp = fopen(path, "rb");
        if (fp == NULL) {
            rc = CP_ERR(err, CP_EIO, "mapping: tags[%zu].dictionary_file: cannot open %s: %s", i,
                        path, strerror(errno));
            goto out;
        }
        long size = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
        rewind(fp);
        if (size < 0 || (unsigned long)size > MAPPING_DICT_FILE_MAX) {
            fclose(fp);
            rc = CP_ERR(err, CP_ELIMIT,
                        "mapping: tags[%zu].dictionary_file %s is larger than %u bytes", i, path,
                        MAPPING_DICT_FILE_MAX);
            goto out;
        }
        json_error_t je;
        json_t *d = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
        fclose(fp);
        if (!json_is_object(d)) {
            rc = d ? CP_ERR(err, CP_EINVAL,
                            "mapping: tags[%zu].dictionary_file %s must hold a JSON object of "
                            "id -> tag path",
                            i, path)
                   : CP_ERR(err, CP_EINVAL,
                            "mapping: tags[%zu].dictionary_file %s: malformed JSON at line %d, "
                            "column %d: %s",
                            i, path, je.line, je.column, je.text);
            json_decref(d);
            goto out;
        }
        if (json_object_set_new(t, "dictionary", d) || json_object_del(t, "dictionary_file")) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        changed = 1;
    }
    if (changed) {
        if ((*out = json_dumps(j, JSON_COMPACT)) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        *outlen = strlen(*out);
    }
out:
    free(path);
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------- bind */

static cp_status bind_col(map_col_t *c, const csv_field_t *h, size_t n, int header, cp_error_t *err)
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
    for (size_t i = 0; rc == CP_OK && i < m->ntags; i++)
        rc = bind_col(&m->tags[i].col, hdr, n, h, err);
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
        case 'Y':
            Y = v;
            break;
        case 'y':
            Y = v < 70 ? 2000 + v : 1900 + v;
            break;
        case 'm':
            M = v;
            break;
        case 'd':
            D = v;
            break;
        case 'H':
            h = v;
            break;
        case 'M':
            mi = v;
            break;
        case 'S':
            se = v;
            break;
        default:
            return -1;
        }
    }
    if (p != len || Y < 0)
        return -1;
    char iso[40];
    int n = snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02dZ", Y, M, D, h, mi, se);
    return time_parse(iso, (size_t)n, secs);
}

static int col_ok(const map_col_t *c, size_t n)
{
    return c->pos >= 0 && (size_t)c->pos < n;
}

static const csv_field_t *cell(const map_col_t *c, const csv_field_t *f, size_t n)
{
    static const csv_field_t empty = {"", 0, 1};
    return col_ok(c, n) ? &f[c->pos] : &empty;
}

/* isspace of the C locale: ' ', \t \n \v \f \r (bits 9..13). */
static inline int is_space(unsigned char c)
{
    return c <= ' ' && ((1ull << c) & 0x100003e00ull);
}

/* The cell without surrounding white space. Most cells have none: their
 * first and last bytes say so without a loop. */
static inline void trimmed(const csv_field_t *f, const char **s, size_t *len)
{
    const char *p = f->p;
    size_t l = f->len;
    if (l && !is_space((unsigned char)p[0]) && !is_space((unsigned char)p[l - 1])) {
        *s = p;
        *len = l;
        return;
    }
    while (l && is_space((unsigned char)*p)) {
        p++;
        l--;
    }
    while (l && is_space((unsigned char)p[l - 1]))
        l--;
    *s = p;
    *len = l;
}

/* Word-at-a-time scans (8 bytes; the last word overlaps the one before
 * it instead of a byte loop). */
#define W_ONES 0x0101010101010101ull
#define W_HIGHS 0x8080808080808080ull
#define W_LOW7 0x7f7f7f7f7f7f7f7full

static inline uint64_t load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The high bit of every zero byte of w, exactly (no borrow crosses bytes:
 * (b & 7f) + 7f sets b's high bit iff its low 7 bits are not all zero). */
static inline uint64_t zero_bytes(uint64_t w)
{
    return ~(((w & W_LOW7) + W_LOW7) | w | W_LOW7);
}

/* Non-zero if some byte of w is NUL or >= 0x80. */
static inline uint64_t w_nul_or_high(uint64_t w)
{
    return (w & W_HIGHS) | zero_bytes(w);
}

/* Non-zero if some byte of w is a control byte (< 0x20 or 0x7f). Exact as a
 * yes/no: (b - 0x20) & ~b & 0x80 flags every byte below 0x20, and with none
 * there is no borrow to flag another; bytes >= 0x80 have ~b's bit clear. */
static inline uint64_t w_control(uint64_t w)
{
    return (((w - W_ONES * 0x20) & ~w) | zero_bytes(w ^ (W_ONES * 0x7f))) & W_HIGHS;
}

/* 1 if s[0..len) is ASCII without NUL bytes: text that needs neither the
 * NUL nor the UTF-8 check (the slow path decides the others). */
static int plain_ascii(const char *s, size_t len)
{
    if (len < 8) {
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] - 1u >= 0x7fu)
                return 0;
        return 1;
    }
    uint64_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8)
        bad |= w_nul_or_high(load8(s + i));
    return (bad | w_nul_or_high(load8(s + len - 8))) == 0;
}

/* 1 if s[0..n) has no control bytes (segment.c's test for ids, names,
 * messageIds). */
static int printable(const char *s, size_t n)
{
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return 0;
        return 1;
    }
    uint64_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        bad |= w_control(load8(s + i));
    return (bad | w_control(load8(s + n - 8))) == 0;
}

/* UTF-8 validity with an ASCII fast path (8 bytes at a time): the reader
 * has usually checked already, so this is mostly a scan for high bits. */
static int utf8_ok(const char *s, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull)
            return utf8_valid(s + i, len - i);
    }
    for (; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return utf8_valid(s + i, len - i);
    return 1;
}

static const double pow10_tab[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/*
 * Plain decimals ([+-]digits[.digits], at least one integer digit, at most
 * 15 digits) by Clinger's fast path: an exact integer divided by an exact
 * power of ten rounds correctly, so the result is strtod's. Returns 1 with
 * *out set, 0 for anything else (then strtod decides). Accepts only
 * digits, a sign and a dot: never a text with a NUL byte.
 */
static inline int number_fast(const char *s, size_t len, double *out)
{
    size_t i = 0;
    int neg = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    uint64_t mant = 0;
    size_t i0 = i;
    for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
        mant = mant * 10 + (uint64_t)(s[i] - '0');
    size_t intd = i - i0, frac = 0;
    if (i < len && s[i] == '.') {
        size_t f0 = ++i;
        for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
            mant = mant * 10 + (uint64_t)(s[i] - '0');
        frac = i - f0;
    }
    if (i != len || intd == 0 || intd + frac > 15)
        return 0;
    double v = (double)mant / pow10_tab[frac];
    *out = neg ? -v : v;
    return 1;
}

/* strtod over the whole text (number_fast first). */
static int parse_number(const char *s, size_t len, double *out)
{
    if (number_fast(s, len, out))
        return 0;
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

/*
 * Plain integers: [+-] then 1..18 digits, or 1..15 digits followed by a
 * dot and only zeros ("17850.0"). Returns 1 with *out (and, if `digits`
 * is not NULL, where the digits start and how many there are), 0 for
 * anything else (then parse_int decides). Never accepts a NUL byte.
 */
static inline int int_fast(const char *s, size_t len, long long *out, const char **digits,
                           size_t *ndigits)
{
    size_t i = 0;
    int neg = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    uint64_t v0 = 0;
    size_t i0 = i;
    for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
        v0 = v0 * 10 + (uint64_t)(s[i] - '0');
    size_t nd = i - i0;
    if (nd == 0 || nd > 18)
        return 0;
    if (i < len) {
        if (nd > 15 || s[i] != '.')
            return 0;
        for (size_t k = i + 1; k < len; k++)
            if (s[k] != '0')
                return 0;
    }
    *out = neg ? -(long long)v0 : (long long)v0;
    if (digits) {
        *digits = s + i0;
        *ndigits = nd;
    }
    return 1;
}

/* strtoll over the whole text; an integral decimal ("6.0", up to 9e15) is
 * an int too. Plain forms are parsed inline, the rest by the libc. */
static int parse_int(const char *s, size_t len, long long *out)
{
    if (int_fast(s, len, out, NULL, NULL))
        return 0;
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end == '.') {
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
    double p = pow10_tab[r]; /* r is 0..9 (mapping_parse) */
    return round(v * p) / p;
}

/* Decimal text of v into buf (>= 21 bytes); returns the length. Written
 * from the end, two digits at a time, once the length is known. */
static size_t fmt_i64(int64_t v, char *buf)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    static const uint64_t p10[] = {1ull,
                                   10ull,
                                   100ull,
                                   1000ull,
                                   10000ull,
                                   100000ull,
                                   1000000ull,
                                   10000000ull,
                                   100000000ull,
                                   1000000000ull,
                                   10000000000ull,
                                   100000000000ull,
                                   1000000000000ull,
                                   10000000000000ull,
                                   100000000000000ull,
                                   1000000000000000ull,
                                   10000000000000000ull,
                                   100000000000000000ull,
                                   1000000000000000000ull,
                                   10000000000000000000ull};
    size_t nd = 1;
    while (nd < 20 && u >= p10[nd])
        nd++;
    size_t k = v < 0;
    buf[0] = '-';
    size_t end = k + nd;
    buf[end] = '\0';
    char *q = buf + end;
    while (u >= 100) {
        unsigned x = (unsigned)(u % 100) * 2;
        u /= 100;
        *--q = pairs[x + 1];
        *--q = pairs[x];
    }
    if (u >= 10) {
        *--q = pairs[u * 2 + 1];
        *--q = pairs[u * 2];
    } else {
        *--q = (char)('0' + u);
    }
    return end;
}

/* "column "Quantity"" or "column 4": how errors name a column. */
static const char *col_text(const map_col_t *c, char *buf, size_t cap)
{
    if (c->name)
        snprintf(buf, cap, "\"%.64s\"", c->name);
    else
        snprintf(buf, cap, "%d", c->pos + 1);
    return buf;
}

static cp_status bad_value(cp_error_t *err, uint64_t line, const map_field_t *d,
                           const map_col_t *col, const csv_field_t *c, const char *expects)
{
    char cb[80];
    return CP_ERR(err, CP_ETYPE, "line %llu: column %s (%s): \"%.64s\" is not %s",
                  (unsigned long long)line, col_text(col, cb, sizeof cb),
                  d->name ? d->name : "value", c->p, expects);
}

static cp_status bad_utf8(cp_error_t *err, uint64_t line, const map_col_t *c)
{
    return CP_ERR(err, CP_EINVAL, "line %llu: column %d: invalid UTF-8", (unsigned long long)line,
                  c->pos + 1);
}

static cp_status nul_byte(cp_error_t *err, uint64_t line, const map_col_t *c)
{
    return CP_ERR(err, CP_EINVAL, "line %llu: column %d contains a NUL byte",
                  (unsigned long long)line, c->pos + 1);
}

/*
 * time_parse for the layout of most files, "YYYY-MM-DD HH:MM:SS" (or a
 * T between, or a final Z), without its general scanner: 1 with *secs
 * when s is exactly such a text and a valid time (the same checks and the
 * same value as time_parse), 0 for anything else, which time_parse
 * then decides. Only digits and separators pass: never a NUL byte.
 */
static int iso_fast(const char *s, size_t len, int64_t *secs)
{
    static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len != 19 && !(len == 20 && (s[19] == 'Z' || s[19] == 'z')))
        return 0;
    if (s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return 0;
    /* The digits, 8 bytes at a time: "YYYY-MM-", "DD HH:MM", "HH:MM:SS"
     * (the last overlaps the second). A byte is a digit iff its high
     * nibble is 3 and stays 3 when 6 is added (no carry leaves a byte). */
    const uint64_t m1 = 0x00ffff00ffffffffull, m2 = 0xffff00ffff00ffffull;
    const uint64_t zeros = 0x3030303030303030ull, nib = 0xf0f0f0f0f0f0f0f0ull;
    const uint64_t six = 0x0606060606060606ull;
    uint64_t w1 = load8(s) & m1, w2 = load8(s + 8) & m2, w3 = load8(s + 11) & m2;
    if ((w1 & nib) != (zeros & m1) || (((w1 + (six & m1)) & nib) != (zeros & m1)) ||
        (w2 & nib) != (zeros & m2) || (((w2 + (six & m2)) & nib) != (zeros & m2)) ||
        (w3 & nib) != (zeros & m2) || (((w3 + (six & m2)) & nib) != (zeros & m2)))
        return 0;
    w1 -= zeros & m1;
    w2 -= zeros & m2;
    w3 -= zeros & m2;
#define B(w, i) ((int)(((w) >> (8 * (i))) & 0xff))
    int y = B(w1, 0) * 1000 + B(w1, 1) * 100 + B(w1, 2) * 10 + B(w1, 3);
    int mo = B(w1, 5) * 10 + B(w1, 6), d = B(w2, 0) * 10 + B(w2, 1);
    int h = B(w2, 3) * 10 + B(w2, 4), mi = B(w2, 6) * 10 + B(w2, 7);
    int se = B(w3, 6) * 10 + B(w3, 7);
#undef B
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60)
        return 0;
    unsigned uy = (unsigned)y, py = uy - 1;
    int leap = (uy % 4 == 0 && uy % 100 != 0) || uy % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    /* days since 1970-01-01: whole years, their leap days (477 before
     * 1970), then the year's days so far */
    int64_t days = 365 * ((int64_t)y - 1970) + (int64_t)(py / 4 - py / 100 + py / 400) - 477 +
                   before[mo - 1] + (mo > 2 && leap) + d - 1;
    *secs = days * 86400 + h * 3600 + mi * 60 + se;
    return 1;
}

/* A timestamp cell (trimmed, non-empty) in the field's format. */
static int cell_time(const map_field_t *d, const char *s, size_t len, int64_t *secs)
{
    if (d->tsfmt == TF_ISO)
        return time_parse(s, len, secs);
    if (d->tsfmt == TF_STRF)
        return mapping_strftime_parse(d->strf, s, len, secs);
    long long v;
    if (parse_int(s, len, &v))
        return -1;
    *secs = d->tsfmt == TF_EPOCH_MS ? v / 1000 : v;
    return 0;
}

/*
 * The row, converted: what mapping_row used to put into a JSON document,
 * as typed values that point into the CSV fields (or small inline texts).
 * Both outputs (the typed event, the JSON document) are made from it.
 */
enum { G_COPY = 0, G_LOWER, G_TEXT };

typedef struct rval {
    const map_field_t *d; /* its name is the key */
    pv_kind kind;
    int gen;   /* PV_STR text: G_COPY s, G_LOWER s lower-cased, G_TEXT txt */
    int whole; /* G_COPY of a whole cell (s, slen are the field's p, len) */
    int print; /* PV_STR: the text is known to have no control bytes */
    const char *s;
    size_t slen;
    int64_t i;
    double x;
    char txt[40]; /* integer transform, timestamp text (time_format needs up to 39) */
} rval_t;

#define ROW_LOCAL 24

typedef struct row {
    rval_t uid, anon; /* userId, anonymousId (PV_NONE when absent) */
    int uid_first;    /* userId came before anonymousId (JSON key order) */
    rval_t *tv;       /* traits object, in key order */
    size_t ntv;
    rval_t *pv; /* properties */
    size_t npv;
    int *tslot, *pslot; /* key -> index in tv / pv, -1 none */
    const char *ev;     /* track: event name */
    size_t evlen;
    int ev_printable; /* 1: ev is known to have no control bytes */
    int has_ts;
    int64_t ts;
    const char *msgid;
    size_t msgid_len;
    char msgbuf[160];
    int msgid_printable; /* 1: msgid is known to have no control bytes */
    void *heap;          /* storage of wide mappings */
    rval_t local[ROW_LOCAL];
    int slots[2 * ROW_LOCAL];
} row_t;

/* ASCII lower-case (the "lower" transform; tolower of the C locale). */
static int lw(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static const char *rv_str(const rval_t *v)
{
    return v->gen == G_TEXT ? v->txt : v->s;
}

static void row_free(row_t *r)
{
    free(r->heap);
}

static cp_status row_init(row_t *r, const mapping_t *m, cp_error_t *err)
{
    size_t nv = m->ntkeys + m->npkeys;
    r->heap = NULL;
    r->uid.kind = r->anon.kind = PV_NONE;
    r->uid_first = 0;
    r->ntv = r->npv = 0;
    r->ev = NULL;
    r->evlen = 0;
    r->ev_printable = 0;
    r->has_ts = 0;
    r->ts = 0;
    r->msgid = NULL;
    r->msgid_len = 0;
    r->msgid_printable = 0;
    if (nv <= ROW_LOCAL) {
        r->tv = r->local;
        r->tslot = r->slots;
    } else {
        /* Only mappings with more than ROW_LOCAL output keys get here. */
        r->heap = malloc(nv * (sizeof(rval_t) + sizeof(int)));
        if (r->heap == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        r->tv = r->heap;
        r->tslot = (int *)(r->tv + nv);
    }
    r->pv = r->tv + m->ntkeys;
    r->pslot = r->tslot + m->ntkeys;
    if (!m->uniq_keys) /* else values are appended and slots go unused */
        for (size_t i = 0; i < nv; i++)
            r->tslot[i] = -1;
    return CP_OK;
}

/* Sets key v->d->key of an object (a later field of the same name replaces
 * the value in place, as json_object_set does). */
static void row_set(rval_t *arr, size_t *n, int *slot, const rval_t *v)
{
    int k = v->d->key;
    if (slot[k] < 0)
        slot[k] = (int)(*n)++;
    arr[slot[k]] = *v;
}

/* The value of one field (v->kind PV_NONE for an empty cell). */
static inline __attribute__((always_inline)) cp_status field_value(const map_field_t *d,
                                                                   const csv_field_t *f, size_t n,
                                                                   uint64_t line, rval_t *v,
                                                                   cp_error_t *err)
{
    v->d = d;
    v->kind = PV_NONE;
    v->gen = G_COPY;
    v->whole = 0;
    v->print = 0;
    if (d->product) {
        const csv_field_t *a = cell(&d->col, f, n), *b = cell(&d->col2, f, n);
        double x, y;
        if (a->len == 0 || b->len == 0)
            return CP_OK;
        if (!number_fast(a->p, a->len, &x) && parse_number(a->p, a->len, &x))
            return bad_value(err, line, d, &d->col, a, "a number");
        if (!number_fast(b->p, b->len, &y) && parse_number(b->p, b->len, &y))
            return bad_value(err, line, d, &d->col2, b, "a number");
        double p = round_to(x * y, d->round);
        if (d->type == MV_INT) {
            /* beyond int64, llround has no answer */
            if (!(p > -9.2e18 && p < 9.2e18))
                return bad_value(err, line, d, &d->col, a, "a factor of a product in range");
            v->kind = PV_INT;
            v->i = llround(p);
        } else {
            if (!isfinite(p))
                return bad_value(err, line, d, &d->col, a, "a factor of a product in range");
            v->kind = PV_REAL;
            v->x = p;
        }
        return CP_OK;
    }
    const csv_field_t *c = cell(&d->col, f, n);
    const char *s;
    size_t len;
    trimmed(c, &s, &len);
    if (len == 0)
        return CP_OK;
    /*
     * A cell with a NUL byte is refused before any conversion. The fast
     * paths below accept only texts that cannot hold one (digits, plain
     * ASCII), so the NUL scan runs only where they decline.
     */
    switch (d->type) {
    case MV_STRING:
        if (d->xform == MX_INTEGER) {
            long long iv;
            const char *dg;
            size_t nd;
            if (int_fast(s, len, &iv, &dg, &nd)) {
                /* The decimal text of iv is its digits without leading
                 * zeros, signed if negative: point at them. */
                while (nd > 1 && *dg == '0') {
                    dg++;
                    nd--;
                }
                v->print = 1; /* digits and a sign */
                if (iv < 0) {
                    v->gen = G_TEXT;
                    v->txt[0] = '-';
                    memcpy(v->txt + 1, dg, nd);
                    v->txt[nd + 1] = '\0';
                    v->slen = nd + 1;
                } else {
                    v->s = dg;
                    v->slen = nd;
                }
            } else {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &d->col);
                if (parse_int(s, len, &iv))
                    return bad_value(err, line, d, &d->col, c, "an integer");
                v->gen = G_TEXT;
                v->slen = fmt_i64(iv, v->txt);
            }
        } else {
            /* a plain cell (csv.h) is ASCII without NUL bytes */
            v->print = c->plain;
            if (!c->plain && !plain_ascii(c->p, c->len)) {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &d->col);
                /* jansson takes only UTF-8; say so instead of losing the value */
                if (!utf8_valid(c->p, c->len))
                    return bad_utf8(err, line, &d->col);
            }
            if (d->xform == MX_LOWER) {
                v->gen = G_LOWER;
                v->s = s;
                v->slen = len;
            } else if (d->xform == MX_TRIM) {
                v->s = s;
                v->slen = len;
            } else {
                /* Untransformed text keeps its spaces (descriptions do). */
                v->s = c->p;
                v->slen = c->len;
                v->whole = 1;
            }
        }
        v->kind = PV_STR;
        break;
    case MV_INT: {
        long long iv;
        if (!int_fast(s, len, &iv, NULL, NULL)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (parse_int(s, len, &iv))
                return bad_value(err, line, d, &d->col, c, "an integer");
        }
        v->kind = PV_INT;
        v->i = iv;
        break;
    }
    case MV_NUMBER: {
        double x;
        if (!number_fast(s, len, &x)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (parse_number(s, len, &x))
                return bad_value(err, line, d, &d->col, c, "a number");
        }
        x = round_to(x, d->round);
        if (!isfinite(x))
            return bad_value(err, line, d, &d->col, c, "a number in range once rounded");
        v->kind = PV_REAL;
        v->x = x;
        break;
    }
    case MV_BOOL: {
        if (memchr(c->p, '\0', c->len))
            return nul_byte(err, line, &d->col);
        int t = len == 4 ? !strncasecmp(s, "true", 4) : len == 3 ? !strncasecmp(s, "yes", 3) : 0;
        int fl = len == 5 ? !strncasecmp(s, "false", 5) : len == 2 ? !strncasecmp(s, "no", 2) : 0;
        if (len == 1 && (*s == '1' || *s == '0')) {
            t = *s == '1';
            fl = !t;
        }
        if (!t && !fl)
            return bad_value(err, line, d, &d->col, c, "a bool (true/false, yes/no, 1/0)");
        v->kind = PV_BOOL;
        v->i = t;
        break;
    }
    case MV_TIMESTAMP: {
        int64_t secs;
        if (d->tsfmt != TF_ISO || !iso_fast(s, len, &secs)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (cell_time(d, s, len, &secs))
                return bad_value(err, line, d, &d->col, c,
                                 d->tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                     : "a timestamp");
        }
        time_format(secs, v->txt, sizeof v->txt);
        v->kind = PV_STR;
        v->gen = G_TEXT;
        v->slen = strlen(v->txt);
        break;
    }
    }
    return CP_OK;
}

/* One trait or property into its object: converted in place when the key
 * is new (the slot past the end is free), else over the earlier value.
 * With distinct names (uniq) every key is new: no slot to look at. */
static inline __attribute__((always_inline)) cp_status
row_field(const map_field_t *d, const csv_field_t *f, size_t n, uint64_t line, rval_t *arr,
          size_t *na, int *slot, int uniq, cp_error_t *err)
{
    if (uniq) {
        cp_status rc = field_value(d, f, n, line, &arr[*na], err);
        if (rc == CP_OK && arr[*na].kind != PV_NONE)
            (*na)++;
        return rc;
    }
    int k = slot[d->key];
    if (k < 0) {
        cp_status rc = field_value(d, f, n, line, &arr[*na], err);
        if (rc == CP_OK && arr[*na].kind != PV_NONE)
            slot[d->key] = (int)(*na)++;
        return rc;
    }
    rval_t v;
    cp_status rc = field_value(d, f, n, line, &v, err);
    if (rc == CP_OK && v.kind != PV_NONE)
        arr[k] = v;
    return rc;
}

/* The mapping half of a row: every conversion and check mapping_row makes. */
static cp_status row_build(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                           const char *msgid_prefix, row_t *r, map_result *res, cp_error_t *err)
{
    cp_status rc;
    *res = MAP_EVENT;
    for (size_t i = 0; i < m->nskip; i++) {
        const char *s;
        size_t len;
        trimmed(cell(&m->skip[i], f, n), &s, &len);
        if (len == 0) {
            *res = MAP_SKIP;
            return CP_OK;
        }
    }
    rval_t v;
    int nid = 0;
    const int uniq = m->uniq_keys;
    for (size_t i = 0; i < m->nids; i++) {
        const map_field_t *d = &m->ids[i];
        if ((rc = field_value(d, f, n, line, &v, err)))
            return rc;
        if (v.kind == PV_NONE)
            continue;
        if (d->id_kind == 1 && r->uid.kind == PV_NONE) {
            r->uid = v;
            r->uid_first = r->anon.kind == PV_NONE;
        } else if (d->id_kind == 2 && r->anon.kind == PV_NONE) {
            r->anon = v;
        } else if (m->uniq_keys) {
            r->tv[r->ntv++] = v;
        } else {
            row_set(r->tv, &r->ntv, r->tslot, &v);
        }
        nid++;
    }
    if (nid == 0)
        return CP_ERR(err, CP_EINVAL, "line %llu: no identifier (every identifier column is empty)",
                      (unsigned long long)line);
    for (size_t i = 0; i < m->ntraits; i++)
        if ((rc = row_field(&m->traits[i], f, n, line, r->tv, &r->ntv, r->tslot, uniq, err)))
            return rc;
    if (m->has_event) {
        const char *name = m->event_name;
        size_t namelen = m->event_name_len;
        int name_print = m->event_name_print;
        const csv_field_t *nc = NULL;
        if (name == NULL) {
            nc = cell(&m->event_col, f, n);
            if (nc->len == 0)
                return CP_ERR(err, CP_EINVAL, "line %llu: the event name column is empty",
                              (unsigned long long)line);
        }
        for (size_t i = 0; i < m->nwhen; i++) {
            const csv_field_t *c = cell(&m->when[i].col, f, n);
            size_t pl = m->when[i].prefix_len;
            if (c->len >= pl && memcmp(c->p, m->when[i].prefix, pl) == 0) {
                name = m->when[i].name;
                namelen = m->when[i].name_len;
                name_print = m->when[i].name_print;
                nc = NULL;
                break;
            }
        }
        if (nc) {
            if (!nc->plain && !utf8_ok(nc->p, nc->len))
                return bad_utf8(err, line, &m->event_col);
            r->ev = nc->p;
            r->evlen = nc->len;
            r->ev_printable = nc->plain;
        } else {
            r->ev = name;
            r->evlen = namelen;
            r->ev_printable = name_print;
        }
        if (m->has_ts) {
            const csv_field_t *c = cell(&m->ts.col, f, n);
            const char *s;
            size_t len;
            trimmed(c, &s, &len);
            if (len == 0)
                return CP_ERR(err, CP_EINVAL, "line %llu: the timestamp column is empty",
                              (unsigned long long)line);
            if (m->ts.tsfmt != TF_ISO || !iso_fast(s, len, &r->ts)) {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &m->ts.col);
                if (cell_time(&m->ts, s, len, &r->ts))
                    return bad_value(err, line, &m->ts, &m->ts.col, c,
                                     m->ts.tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                            : "a timestamp");
            }
            r->has_ts = 1;
        }
        for (size_t i = 0; i < m->nprops; i++)
            if ((rc = row_field(&m->props[i], f, n, line, r->pv, &r->npv, r->pslot, uniq, err)))
                return rc;
    }
    if (m->has_msgid) {
        const csv_field_t *c = cell(&m->msgid_col, f, n);
        if (c->len == 0)
            return CP_ERR(err, CP_EINVAL, "line %llu: the message id column is empty",
                          (unsigned long long)line);
        if (!c->plain && !utf8_ok(c->p, c->len))
            return bad_utf8(err, line, &m->msgid_col);
        r->msgid = c->p;
        r->msgid_len = c->len;
        r->msgid_printable = c->plain;
    } else {
        /* "<prefix>:<line>", the prefix cut to 120 bytes at a character */
        const char *p = msgid_prefix ? msgid_prefix : "import";
        /* the usual prefix, printable ASCII shorter than 120 bytes, in one
         * pass; any other the general way */
        size_t pl = 0;
        while (pl < 120 && (unsigned char)p[pl] - 0x20u < 0x5fu)
            pl++;
        if (pl < 120 && p[pl] == '\0') {
            r->msgid_printable = 1;
        } else {
            pl = strnlen(p, 120);
            if (pl == 120)
                while (pl && ((unsigned char)p[pl] & 0xC0) == 0x80)
                    pl--;
            if (!utf8_ok(p, pl))
                return CP_ERR(err, CP_EINVAL, "line %llu: the message id prefix is not UTF-8",
                              (unsigned long long)line);
            /* "<prefix>:<digits>": only the prefix can hold a control byte */
            r->msgid_printable = printable(p, pl);
        }
        memcpy(r->msgbuf, p, pl);
        r->msgbuf[pl] = ':';
        r->msgid_len = pl + 1 + fmt_i64((int64_t)line, r->msgbuf + pl + 1);
        r->msgid = r->msgbuf;
    }
    return CP_OK;
}

/* ---------------------------------------------------------------- JSON */

static json_t *rv_json(const rval_t *v)
{
    switch (v->kind) {
    case PV_STR:
        if (v->gen == G_LOWER) {
            char *low = malloc(v->slen + 1);
            if (low == NULL)
                return NULL;
            for (size_t i = 0; i < v->slen; i++)
                low[i] = (char)lw((unsigned char)v->s[i]);
            json_t *j = json_stringn(low, v->slen);
            free(low);
            return j;
        }
        return json_stringn(rv_str(v), v->slen);
    case PV_INT:
        return json_integer((json_int_t)v->i);
    case PV_REAL:
        return json_real(v->x);
    case PV_BOOL:
        return json_boolean(v->i);
    case PV_NONE:
        break;
    }
    return NULL;
}

static int obj_put(json_t *o, const char *k, json_t *v)
{
    return v == NULL || json_object_set_new(o, k, v) != 0;
}

/* The Segment-shaped document of a built row (NULL: no memory). */
static json_t *row_json(const mapping_t *m, const row_t *r)
{
    json_t *ev = json_object(), *traits = json_object(), *props = NULL;
    int bad = ev == NULL || traits == NULL;
    const rval_t *first = r->uid_first ? &r->uid : &r->anon;
    const rval_t *second = r->uid_first ? &r->anon : &r->uid;
    const char *k1 = r->uid_first ? "userId" : "anonymousId";
    const char *k2 = r->uid_first ? "anonymousId" : "userId";
    if (!bad && first->kind != PV_NONE)
        bad |= obj_put(ev, k1, rv_json(first));
    if (!bad && second->kind != PV_NONE)
        bad |= obj_put(ev, k2, rv_json(second));
    for (size_t i = 0; !bad && i < r->ntv; i++)
        bad |= obj_put(traits, r->tv[i].d->name, rv_json(&r->tv[i]));
    if (!bad && !m->has_event) {
        bad |= obj_put(ev, "type", json_string("identify"));
        bad |= !bad && json_object_set(ev, "traits", traits) != 0;
    } else if (!bad) {
        char iso[40];
        bad |= obj_put(ev, "type", json_string("track"));
        bad |= !bad && obj_put(ev, "event", json_stringn(r->ev, r->evlen));
        if (!bad && r->has_ts) {
            time_format(r->ts, iso, sizeof iso);
            bad |= obj_put(ev, "timestamp", json_string(iso));
        }
        props = json_object();
        bad |= !bad && obj_put(ev, "properties", json_incref(props));
        for (size_t i = 0; !bad && i < r->npv; i++)
            bad |= obj_put(props, r->pv[i].d->name, rv_json(&r->pv[i]));
        if (!bad && json_object_size(traits))
            bad |= obj_put(ev, "context", json_pack("{s:O}", "traits", traits));
    }
    if (!bad)
        bad |= obj_put(ev, "messageId", json_stringn(r->msgid, r->msgid_len));
    json_decref(traits);
    json_decref(props);
    if (bad) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

cp_status mapping_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                      const char *msgid_prefix, json_t **out, map_result *res, cp_error_t *err)
{
    *out = NULL;
    row_t r;
    cp_status rc = row_init(&r, m, err);
    if (rc)
        return rc;
    if ((rc = row_build(m, f, n, line, msgid_prefix, &r, res, err)) == CP_OK && *res == MAP_EVENT) {
        *out = row_json(m, &r);
        if (*out == NULL)
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    row_free(&r);
    return rc;
}

/* ---------------------------------------------------------------- typed */

/* The checks segment_parse_event makes, on a row (event.h). */

static cp_status seg_err(cp_error_t *err, cp_status code, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cp_status seg_err(cp_error_t *err, cp_status code, uint64_t line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return CP_ERR(err, code, "line %llu: %s", (unsigned long long)line, msg);
}

static int printable_lower(const rval_t *v)
{
    return printable(rv_str(v), v->slen); /* lower-casing keeps control bytes as they are */
}

/* An identifier before it is copied: text (maybe to lower-case). */
typedef struct idv {
    const char *s;
    size_t len;
    int lower;
} idv_t;

static int idv_eq(const char *a, int al, const char *b, int bl, size_t len)
{
    if (!al && !bl)
        return memcmp(a, b, len) == 0;
    for (size_t i = 0; i < len; i++) {
        int x = al ? lw((unsigned char)a[i]) : (unsigned char)a[i];
        int y = bl ? lw((unsigned char)b[i]) : (unsigned char)b[i];
        if (x != y)
            return 0;
    }
    return 1;
}

/* add_ident of segment.c: same type and value once; at most INGEST_MAX_IDS. */
static cp_status add_id(ingest_event_t *e, idv_t *vals, const char *type, size_t tlen,
                        const idv_t *v, const char *field, uint64_t line, cp_error_t *err)
{
    for (size_t i = 0; i < e->nids; i++)
        if (strcmp(e->ids[i].type, type) == 0 && vals[i].len == v->len &&
            idv_eq(vals[i].s, vals[i].lower, v->s, v->lower, v->len))
            return CP_OK;
    if (e->nids >= INGEST_MAX_IDS)
        return seg_err(err, CP_ELIMIT, line, "more than %d identifiers on one event",
                       INGEST_MAX_IDS);
    ingest_ident_t *d = (ingest_ident_t *)&e->ids[e->nids]; /* the row's buffer */
    if (tlen >= sizeof d->type)
        tlen = sizeof d->type - 1;
    memcpy(d->type, type, tlen);
    d->type[tlen] = '\0';
    d->len = v->len;
    d->field = field;
    vals[e->nids++] = *v;
    return CP_OK;
}

/* id_text of segment.c on a value already known to be present. */
static cp_status id_check(const rval_t *v, const char *field, char *ibuf, idv_t *out, uint64_t line,
                          cp_error_t *err)
{
    static const char *const kinds[] = {"null", "a string", "an integer", "a number", "a boolean"};
    if (v->kind == PV_INT) {
        out->len = fmt_i64(v->i, ibuf);
        out->s = ibuf;
        out->lower = 0;
        return CP_OK;
    }
    if (v->kind != PV_STR)
        return seg_err(err, CP_ETYPE, line, "\"%s\" must be a string, got %s", field,
                       kinds[v->kind]);
    out->s = rv_str(v);
    out->len = v->slen;
    out->lower = v->gen == G_LOWER;
    if (v->slen == 0)
        return seg_err(err, CP_EINVAL, line, "\"%s\" is empty", field);
    if (v->slen > INGEST_ID_MAX)
        return seg_err(err, CP_ELIMIT, line, "\"%s\" is longer than %zu bytes", field,
                       (size_t)INGEST_ID_MAX);
    if (!v->print && !printable_lower(v))
        return seg_err(err, CP_EINVAL, line, "\"%s\" contains control characters", field);
    return CP_OK;
}

/* Upper bound of the compact JSON text of a value / a key. */
static size_t rv_bound(const rval_t *v)
{
    switch (v->kind) {
    case PV_STR:
        return 2 + 6 * v->slen; /* every byte escaped as \u00XX at worst */
    case PV_INT:
        return 20;
    case PV_REAL:
        return 32; /* "%.17g" is at most 24 */
    default:
        return 5;
    }
}

static size_t row_bound(const row_t *r)
{
    size_t b = 256; /* braces, "type", "traits", "properties", "context", "timestamp" */
    b += 16 + rv_bound(&r->uid) + 16 + rv_bound(&r->anon);
    b += 12 + 6 * r->evlen + 16 + 6 * r->msgid_len;
    for (size_t i = 0; i < r->ntv; i++)
        b += 4 + 6 * r->tv[i].d->nlen + rv_bound(&r->tv[i]);
    for (size_t i = 0; i < r->npv; i++)
        b += 4 + 6 * r->pv[i].d->nlen + rv_bound(&r->pv[i]);
    return b;
}

/* An upper bound of row_bound: m->bound_fixed covers everything but the
 * strings' bytes (assign_keys); strs are those of the traits and
 * properties. */
static size_t quick_bound(const mapping_t *m, const row_t *r, size_t strs)
{
    /* strs counts a NUL per string: more than needed, still a bound */
    size_t sb = r->evlen + r->msgid_len + strs;
    if (r->uid.kind == PV_STR)
        sb += r->uid.slen;
    if (r->anon.kind == PV_STR)
        sb += r->anon.slen;
    return m->bound_fixed + 6 * sb;
}

static int trait_is_ident(const segment_opts_t *o, const map_field_t *d)
{
    if (o->id_types.names == NULL)
        return d->builtin_ident;
    return ingest_trait_is_ident(&o->id_types, d->name);
}

/* The earliest and latest times time_parse reads (0001-01-01 .. 9999-12-31):
 * an event time outside does not survive the JSON path's ISO text. */
#define TS_MIN (-62135596800ll)
#define TS_MAX (253402300799ll)

/* Copies n bytes (lower-cased if asked) into the arena block at *p. */
static const char *put(char **p, const char *s, size_t n, int lower)
{
    char *d = *p;
    if (lower)
        for (size_t i = 0; i < n; i++)
            d[i] = (char)lw((unsigned char)s[i]);
    else if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    *p = d + n + 1;
    return d;
}

/*
 * The record block: when the row's fields lie one after the other, each
 * NUL-terminated (as csv_next returns them), untransformed string values
 * are NUL-terminated texts inside it, and one copy of the block into the
 * arena replaces a copy per value. Used only when the values make up a
 * good part of it (a wide file mapped for two columns copies those).
 */
typedef struct block {
    uintptr_t lo;    /* first byte, 0 = no block */
    size_t len;      /* through the last field's NUL */
    const char *dst; /* its copy */
} block_t;

static void block_find(const csv_field_t *f, size_t n, block_t *bk)
{
    bk->lo = 0;
    bk->len = 0;
    bk->dst = NULL;
    if (n == 0 || f[0].p[f[0].len] != '\0')
        return;
    for (size_t i = 1; i < n; i++)
        if (f[i].p != f[i - 1].p + f[i - 1].len + 1 || f[i].p[f[i].len] != '\0')
            return;
    bk->lo = (uintptr_t)f[0].p;
    bk->len = (size_t)((uintptr_t)(f[n - 1].p + f[n - 1].len + 1) - bk->lo);
}

/* 1 if a value is a whole cell: with a block, a NUL-terminated text of it
 * (then the block's copy holds it). */
static inline int in_block(const block_t *bk, const rval_t *v)
{
    return bk->lo && v->kind == PV_STR && v->whole;
}

static inline void put_prop(char **p, const rval_t *v, const char *names, const block_t *bk,
                            ev_prop_t *out)
{
    out->name = names + v->d->name_off;
    out->nlen = v->d->nlen;
    out->kind = v->kind;
    out->s = NULL;
    out->slen = 0;
    out->i = 0;
    out->d = 0;
    switch (v->kind) {
    case PV_STR:
        if (bk->dst && in_block(bk, v))
            out->s = bk->dst + ((uintptr_t)v->s - bk->lo);
        else
            out->s = put(p, rv_str(v), v->slen, v->gen == G_LOWER);
        out->slen = v->slen;
        break;
    case PV_INT:
    case PV_BOOL:
        out->i = v->i;
        break;
    case PV_REAL:
        out->d = v->x;
        break;
    case PV_NONE:
        break;
    }
}

static cp_status batch_grow(ingest_batch_t *b)
{
    if (b->n < b->cap)
        return CP_OK;
    /* the policy of segment.c's batch_push */
    size_t nc = b->cap ? b->cap * 2 : 16;
    ingest_event_t *p = realloc(b->events, nc * sizeof *p);
    if (p == NULL)
        return CP_ENOMEM;
    b->events = p;
    b->cap = nc;
    return CP_OK;
}

/* A row's tags (mapping "tags"): paths found, and how many ids no
 * dictionary knows. `copy[i]` = 1 when paths[i] points into the cell (to
 * be copied into the arena), 0 when into the mapping's dictionary. */
typedef struct row_tags {
    const char *paths[MAPPING_MAX_TAGS];
    uint16_t lens[MAPPING_MAX_TAGS];
    uint8_t copy[MAPPING_MAX_TAGS];
    uint32_t n, unknown;
    size_t bytes; /* of the paths to copy, NULs included */
} row_tags_t;

/* Splits the row's tag cells. CP_ELIMIT past MAPPING_MAX_TAGS tags in a row. */
static cp_status row_tags(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                          row_tags_t *t, cp_error_t *err)
{
    t->n = t->unknown = 0;
    t->bytes = 0;
    for (size_t i = 0; i < m->ntags; i++) {
        const map_tags_t *d = &m->tags[i];
        const csv_field_t *c = cell(&d->col, f, n);
        const char *p = c->p, *end = c->p + c->len;
        while (p <= end) {
            const char *q = memchr(p, d->sep, (size_t)(end - p));
            if (q == NULL)
                q = end;
            csv_field_t piece = {.p = p, .len = (size_t)(q - p)};
            const char *s;
            size_t len;
            trimmed(&piece, &s, &len);
            p = q + 1;
            if (len == 0)
                continue; /* empty cells and ",," are fine */
            if (t->n + t->unknown >= MAPPING_MAX_TAGS)
                return seg_err(err, CP_ELIMIT, line, "column %s: more than %d tags in one row",
                               d->col.name ? d->col.name : "(by position)", MAPPING_MAX_TAGS);
            if (len > MAPPING_TAG_MAX || memchr(s, 0, len)) {
                t->unknown++;
                continue;
            }
            if (d->dict) {
                const char *path = json_string_value(json_object_getn(d->dict, s, len));
                if (path == NULL) {
                    t->unknown++;
                    continue;
                }
                t->paths[t->n] = path;
                t->lens[t->n] = (uint16_t)strlen(path);
                t->copy[t->n++] = 0;
            } else {
                t->paths[t->n] = s;
                t->lens[t->n] = (uint16_t)len;
                t->copy[t->n++] = 1;
                t->bytes += len + 1;
            }
        }
    }
    return CP_OK;
}

cp_status mapping_row_event(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                            const char *msgid_prefix, const segment_opts_t *o, ingest_batch_t *b,
                            map_result *res, cp_error_t *err)
{
    size_t warned0 = b->warned, nwarnings0 = b->nwarnings;
    static const segment_opts_t defaults = {0};
    if (o == NULL)
        o = &defaults;
    row_t r;
    row_tags_t *tg = NULL;
    cp_status rc = row_init(&r, m, err);
    if (rc)
        return rc;
    if ((rc = row_build(m, f, n, line, msgid_prefix, &r, res, err)) || *res == MAP_SKIP)
        goto out;

    /* The strings' bytes: for the size bound, and for the arena block
     * (the record block if it pays, the other strings one by one). */
    block_t bk;
    block_find(f, n, &bk);
    size_t strs = 0, inblk = 0;
    for (size_t i = 0; i < r.npv + r.ntv; i++) {
        const rval_t *v = i < r.npv ? &r.pv[i] : &r.tv[i - r.npv];
        if (v->kind != PV_STR)
            continue;
        if (in_block(&bk, v))
            inblk += v->slen + 1;
        else
            strs += v->slen + 1;
    }
    /* The checks of segment_parse_event, in its order. The exact size of
     * the event's JSON is needed only past a bound that rarely is. */
    if (quick_bound(m, &r, strs + inblk) > INGEST_EVENT_MAX && row_bound(&r) > INGEST_EVENT_MAX) {
        json_t *doc = row_json(m, &r);
        if (doc == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        size_t bytes = json_dumpb(doc, NULL, 0, JSON_COMPACT);
        json_decref(doc);
        if (bytes > INGEST_EVENT_MAX) {
            rc =
                seg_err(err, CP_ELIMIT, line, "event is %zu bytes; the limit is %u bytes per event",
                        bytes, INGEST_EVENT_MAX);
            goto out;
        }
    }
    if ((rc = batch_grow(b))) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    ingest_event_t *e = &b->events[b->n];
    memset(e, 0, offsetof(ingest_event_t, ids));
    ingest_ident_t idbuf[INGEST_MAX_IDS]; /* copied into the arena below */
    e->ids = idbuf;
    e->nids = 0;
    e->properties = e->traits = e->ctx_traits = e->group_traits = e->raw = NULL;
    e->index = (uint32_t)b->n;
    e->type = m->has_event ? ING_TRACK : ING_IDENTIFY;
    idv_t idv[INGEST_MAX_IDS];
    char ibuf[INGEST_MAX_IDS + 1][24]; /* integer ids' text, by candidate position */
    idv_t v;
    /* envelope_id of segment.c: an empty id is a placeholder, not there. */
    int has_uid = r.uid.kind != PV_NONE && !(r.uid.kind == PV_STR && r.uid.slen == 0);
    int has_anon = r.anon.kind != PV_NONE && !(r.anon.kind == PV_STR && r.anon.slen == 0);
    if (r.uid.kind == PV_STR && r.uid.slen == 0)
        ingest_batch_warn(b, e->index, "userId", INGEST_WARN_PLACEHOLDER);
    if (r.anon.kind == PV_STR && r.anon.slen == 0)
        ingest_batch_warn(b, e->index, "anonymousId", INGEST_WARN_PLACEHOLDER);
    if (has_uid && ((rc = id_check(&r.uid, "userId", ibuf[e->nids], &v, line, err)) ||
                    (rc = add_id(e, idv, "user_id", 7, &v, "userId", line, err))))
        goto out;
    if (has_anon && ((rc = id_check(&r.anon, "anonymousId", ibuf[e->nids], &v, line, err)) ||
                     (rc = add_id(e, idv, "anonymous_id", 12, &v, "anonymousId", line, err))))
        goto out;
    const char *tfield = m->has_event ? "context.traits" : "traits";
    for (size_t i = 0; i < r.ntv; i++) {
        const map_field_t *d = r.tv[i].d;
        if (!trait_is_ident(o, d))
            continue;
        char fname[80];
        snprintf(fname, sizeof fname, "%s.%s", tfield, d->name);
        if (r.tv[i].kind == PV_NONE)
            continue; /* null: not known (id_soft of segment.c) */
        if (id_check(&r.tv[i], fname, ibuf[e->nids], &v, line, NULL) != CP_OK) {
            /* A bad value is a warning, not the row's fault (id_soft). */
            int empty = r.tv[i].kind == PV_STR && r.tv[i].slen == 0;
            ingest_batch_warn(b, e->index, fname,
                              empty ? INGEST_WARN_PLACEHOLDER : INGEST_WARN_INVALID);
            continue;
        }
        if ((rc = add_id(e, idv, d->name, d->nlen, &v, tfield, line, err)))
            goto out;
    }
    if (!has_uid && !has_anon && !(o->allow_other_ids && e->nids > 0)) {
        rc = seg_err(err, CP_EINVAL, line,
                     "missing \"userId\" and \"anonymousId\" (one is required)");
        goto out;
    }
    if (m->has_event) {
        if (r.evlen > INGEST_NAME_MAX) {
            rc = seg_err(err, CP_ELIMIT, line, "\"event\" is longer than %zu bytes",
                         (size_t)INGEST_NAME_MAX);
            goto out;
        }
        if (!r.ev_printable && !printable(r.ev, r.evlen)) {
            rc = seg_err(err, CP_EINVAL, line, "\"event\" contains control characters");
            goto out;
        }
    }
    int64_t recv = o->received_at_ms > 0 ? o->received_at_ms / 1000 : 0;
    if (r.has_ts) {
        if (r.ts < TS_MIN || r.ts > TS_MAX) {
            char iso[40];
            time_format(r.ts, iso, sizeof iso);
            rc = seg_err(err, CP_EINVAL, line,
                         "\"timestamp\": \"%.64s\" is not an ISO 8601 timestamp (such as "
                         "\"2024-01-01T10:20:30.000Z\")",
                         iso);
            goto out;
        }
        /* No sentAt on a row: the time is used as it is. */
        e->ts = r.ts;
    } else if (recv == 0) {
        rc = seg_err(err, CP_EINVAL, line, "missing \"timestamp\" (no receive time to default to)");
        goto out;
    } else {
        e->ts = recv;
    }
    e->received_at = recv;
    if (r.msgid_len > INGEST_MSGID_MAX) {
        rc = seg_err(err, CP_ELIMIT, line, "\"messageId\" is longer than %zu bytes",
                     (size_t)INGEST_MSGID_MAX);
        goto out;
    }
    if (!r.msgid_printable && !printable(r.msgid, r.msgid_len)) {
        rc = seg_err(err, CP_EINVAL, line, "\"messageId\" contains control characters");
        goto out;
    }

    if (m->ntags) {
        if ((tg = malloc(sizeof *tg)) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = row_tags(m, f, n, line, tg, err)))
            goto out;
    }

    /* Valid: one arena block for the typed values and every string: the
     * record block if it pays, the other strings one by one. Names point
     * into m->names (mapping.h): a copy per event would only add to the
     * batch's memory. */
    if (bk.lo && bk.len > 128 && bk.len > 2 * inblk) {
        strs += inblk; /* copy those values one by one instead */
        bk.lo = 0;
    }
    size_t ntg = tg ? tg->n : 0;
    size_t bytes = (r.npv + r.ntv) * sizeof(ev_prop_t) + e->nids * sizeof(ingest_ident_t) +
                   ntg * sizeof(char *) + (tg ? tg->bytes : 0) + (bk.lo ? bk.len : 0) + strs +
                   r.evlen + 1 + r.msgid_len + 1;
    for (size_t i = 0; i < e->nids; i++)
        bytes += idv[i].len + 1;
    ev_prop_t *props = arena_alloc(&b->arena, bytes);
    if (props == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory (batch arena)");
        goto out;
    }
    ev_prop_t *traits = props + r.npv;
    ingest_ident_t *ids = (ingest_ident_t *)(traits + r.ntv); /* 8-byte aligned: 56-byte props */
    const char **tpaths = (const char **)(ids + e->nids);     /* 8-byte aligned, as ids */
    char *p = (char *)(tpaths + ntg);
    const char *names = m->names;
    if (bk.lo) {
        memcpy(p, (const char *)bk.lo, bk.len);
        bk.dst = p;
        p += bk.len;
    }
    for (size_t i = 0; i < r.npv; i++)
        put_prop(&p, &r.pv[i], names, &bk, &props[i]);
    for (size_t i = 0; i < r.ntv; i++)
        put_prop(&p, &r.tv[i], names, &bk, &traits[i]);
    for (size_t i = 0; i < e->nids; i++) {
        ids[i] = idbuf[i];
        ids[i].value = put(&p, idv[i].s, idv[i].len, idv[i].lower);
    }
    e->ids = e->nids ? ids : NULL;
    for (size_t i = 0; i < ntg; i++)
        tpaths[i] = tg->copy[i] ? put(&p, tg->paths[i], tg->lens[i], 0) : tg->paths[i];
    e->tags = ntg ? tpaths : NULL;
    e->ntags = (uint32_t)ntg;
    e->ntags_unknown = tg ? tg->unknown : 0;
    e->tprops = r.npv ? props : NULL;
    e->ntprops = r.npv;
    e->ttraits = r.ntv ? traits : NULL;
    e->nttraits = r.ntv;
    if (m->has_event) {
        e->event = put(&p, r.ev, r.evlen, 0);
        e->event_len = r.evlen;
    }
    e->message_id = put(&p, r.msgid, r.msgid_len, 0);
    e->message_id_len = r.msgid_len;
    e->message_id_derived = 0;
    e->message_hash = hash64(e->message_id, e->message_id_len, 0x6d736764);
    e->no_dedup = o->no_dedup;
    b->n++;
out:
    if (rc) {
        b->warned = warned0; /* the warnings of a rejected row go with it */
        b->nwarnings = nwarnings0;
    }
    free(tg);
    row_free(&r);
    return rc;
}
