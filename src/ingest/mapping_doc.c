/* mapping_doc.c — column mapping documents (mapping.h): the built-in
 * presets, parsing and checking a mapping's JSON, reading the dictionary
 * files it names, and binding its columns to a file's header. Rows are
 * mapping_row.c's, typed events mapping_event.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/mapping.h"
#include "model/taxonomy.h"
#include "util/text.h"
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

/* 1 if a name has no control bytes (rule_text's test of event names),
 * known once per mapping for its constant names. */
static int name_printable(const char *s)
{
    return !text_has_control(s, strlen(s));
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
            const json_t *pv;
            json_object_foreach((json_t *)x, k, pv)
            {
                const char *path = json_string_value(pv);
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
    json_t *j = json_loadb_checked(text, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the mapping");
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
    json_error_t je;
    json_t *j = json_loadb_checked(text, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the mapping");
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
        json_t *d = json_loadf_checked(fp, (size_t)size, JSON_REJECT_DUPLICATES, &je);
        fclose(fp);
        if (d == NULL && json_is_oom(&je)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory reading %s", path);
            goto out;
        }
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
        if ((*out = json_dumps_checked(j, JSON_COMPACT)) == NULL) {
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
