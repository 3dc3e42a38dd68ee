/*
 * test_ingest_mapping.c — mapping_row_event (CSV rows straight into typed
 * events) against the JSON path it replaces: the mapping_row of before
 * (kept below as the reference, building a Segment document per row)
 * followed by segment_parse_event. Random mappings and rows, compared
 * field by field, plus bad-input cases.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "ingest/event.h"
#include "ingest/mapping.h"
#include "util/util.h"

/* ------------------------------------------------------------ reference */
/*
 * The JSON mapping_row as it was before typed events (one json_t per
 * value), changed only where the typed path deliberately differs
 * (mapping.h): invalid UTF-8 in a cell that becomes a string is rejected
 * where jansson refused it; numbers that are not finite (or an int product
 * beyond int64) are bad values; bad-value texts name the column as
 * `column "Name"` or `column 4`.
 */

static int ref_col_ok(const map_col_t *c, size_t n)
{
    return c->pos >= 0 && (size_t)c->pos < n;
}

static const csv_field_t *ref_cell(const map_col_t *c, const csv_field_t *f, size_t n)
{
    static const csv_field_t empty = {"", 0, 0};
    return ref_col_ok(c, n) ? &f[c->pos] : &empty;
}

/* csv_field_t.plain's truth: printable ASCII only. Rows given to the
 * typed path say so (or 0, "not known") as the CSV reader would. */
static int true_plain(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
            return 0;
    return 1;
}

static void ref_trimmed(const csv_field_t *f, const char **s, size_t *len)
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

static int ref_parse_number(const char *s, size_t len, double *out)
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

static int ref_parse_int(const char *s, size_t len, long long *out)
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
        double d;
        if (ref_parse_number(s, len, &d) || d != floor(d) || fabs(d) > 9.0e15)
            return -1;
        *out = (long long)d;
        return 0;
    }
    if (*end != '\0' || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static double ref_round_to(double v, int r)
{
    if (r < 0)
        return v;
    double p = pow(10, r);
    return round(v * p) / p;
}

static cp_status ref_bad_value(cp_error_t *err, uint64_t line, const map_field_t *d,
                               const map_col_t *col, const csv_field_t *c, const char *expects)
{
    char cb[80];
    if (col->name)
        snprintf(cb, sizeof cb, "\"%.64s\"", col->name);
    else
        snprintf(cb, sizeof cb, "%d", col->pos + 1);
    return CP_ERR(err, CP_ETYPE, "line %llu: column %s (%s): \"%.64s\" is not %s",
                  (unsigned long long)line, cb, d->name ? d->name : "value", c->p, expects);
}

static cp_status ref_bad_utf8(cp_error_t *err, uint64_t line, const map_col_t *c)
{
    return CP_ERR(err, CP_EINVAL, "line %llu: column %d: invalid UTF-8", (unsigned long long)line,
                  c->pos + 1);
}

static cp_status ref_field_value(const map_field_t *d, const csv_field_t *f, size_t n,
                                 uint64_t line, json_t **out, cp_error_t *err)
{
    *out = NULL;
    if (d->product) {
        const csv_field_t *a = ref_cell(&d->col, f, n), *b = ref_cell(&d->col2, f, n);
        double x, y;
        if (a->len == 0 || b->len == 0)
            return CP_OK;
        if (ref_parse_number(a->p, a->len, &x))
            return ref_bad_value(err, line, d, &d->col, a, "a number");
        if (ref_parse_number(b->p, b->len, &y))
            return ref_bad_value(err, line, d, &d->col2, b, "a number");
        double v = ref_round_to(x * y, d->round);
        if (d->type == MV_INT ? !(v > -9.2e18 && v < 9.2e18) : !isfinite(v))
            return ref_bad_value(err, line, d, &d->col, a, "a factor of a product in range");
        *out = d->type == MV_INT ? json_integer((json_int_t)llround(v)) : json_real(v);
        return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    const csv_field_t *c = ref_cell(&d->col, f, n);
    const char *s;
    size_t len;
    ref_trimmed(c, &s, &len);
    if (len == 0)
        return CP_OK;
    if (memchr(c->p, '\0', c->len))
        return CP_ERR(err, CP_EINVAL, "line %llu: column %d contains a NUL byte",
                      (unsigned long long)line, d->col.pos + 1);
    switch (d->type) {
    case MV_STRING: {
        if (d->xform == MX_INTEGER) {
            long long v;
            if (ref_parse_int(s, len, &v))
                return ref_bad_value(err, line, d, &d->col, c, "an integer");
            char buf[32];
            int k = snprintf(buf, sizeof buf, "%lld", v);
            *out = json_stringn(buf, (size_t)k);
        } else if (!utf8_valid(c->p, c->len)) {
            return ref_bad_utf8(err, line, &d->col);
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
            *out = json_stringn(c->p, c->len);
        }
        break;
    }
    case MV_INT: {
        long long v;
        if (ref_parse_int(s, len, &v))
            return ref_bad_value(err, line, d, &d->col, c, "an integer");
        *out = json_integer(v);
        break;
    }
    case MV_NUMBER: {
        double v;
        if (ref_parse_number(s, len, &v))
            return ref_bad_value(err, line, d, &d->col, c, "a number");
        v = ref_round_to(v, d->round);
        if (!isfinite(v))
            return ref_bad_value(err, line, d, &d->col, c, "a number in range once rounded");
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
            return ref_bad_value(err, line, d, &d->col, c, "a bool (true/false, yes/no, 1/0)");
        *out = json_boolean(t);
        break;
    }
    case MV_TIMESTAMP: {
        int64_t secs;
        int bad = 0;
        if (d->tsfmt == TF_ISO) {
            bad = time_parse(s, len, &secs) != 0;
        } else if (d->tsfmt == TF_STRF) {
            bad = mapping_strftime_parse(d->strf, s, len, &secs) != 0;
        } else {
            long long v;
            bad = ref_parse_int(s, len, &v) != 0;
            secs = d->tsfmt == TF_EPOCH_MS ? v / 1000 : v;
        }
        if (bad)
            return ref_bad_value(err, line, d, &d->col, c,
                                 d->tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                     : "a timestamp");
        char iso[40];
        time_format(secs, iso, sizeof iso);
        *out = json_string(iso);
        break;
    }
    }
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}

static cp_status ref_mapping_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                                 const char *msgid_prefix, json_t **out, map_result *res,
                                 cp_error_t *err)
{
    *out = NULL;
    *res = MAP_EVENT;
    cp_status rc = CP_OK;
    for (size_t i = 0; i < m->nskip; i++) {
        const char *s;
        size_t len;
        ref_trimmed(ref_cell(&m->skip[i], f, n), &s, &len);
        if (len == 0) {
            *res = MAP_SKIP;
            return CP_OK;
        }
    }
    json_t *ev = json_object(), *traits = json_object(), *v = NULL;
    int nid = 0;
    for (size_t i = 0; i < m->nids; i++) {
        if ((rc = ref_field_value(&m->ids[i], f, n, line, &v, err)))
            goto out;
        if (v == NULL)
            continue;
        const char *t = m->ids[i].name;
        const char *key = !strcmp(t, "user_id")        ? "userId"
                          : !strcmp(t, "anonymous_id") ? "anonymousId"
                                                       : NULL;
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
        if ((rc = ref_field_value(&m->traits[i], f, n, line, &v, err)))
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
            nc = ref_cell(&m->event_col, f, n);
            if (nc->len == 0) {
                rc = CP_ERR(err, CP_EINVAL, "line %llu: the event name column is empty",
                            (unsigned long long)line);
                goto out;
            }
        }
        for (size_t i = 0; i < m->nwhen; i++) {
            const csv_field_t *c = ref_cell(&m->when[i].col, f, n);
            size_t pl = strlen(m->when[i].prefix);
            if (c->len >= pl && memcmp(c->p, m->when[i].prefix, pl) == 0) {
                name = m->when[i].name;
                nc = NULL;
                break;
            }
        }
        if (nc && !utf8_valid(nc->p, nc->len)) {
            rc = ref_bad_utf8(err, line, &m->event_col);
            goto out;
        }
        json_object_set_new(ev, "event", nc ? json_stringn(nc->p, nc->len) : json_string(name));
        if (m->has_ts) {
            if ((rc = ref_field_value(&m->ts, f, n, line, &v, err)))
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
        json_object_set_new(ev, "properties", props);
        for (size_t i = 0; i < m->nprops; i++) {
            if ((rc = ref_field_value(&m->props[i], f, n, line, &v, err)))
                goto out;
            if (v)
                json_object_set_new(props, m->props[i].name, v);
            v = NULL;
        }
        if (json_object_size(traits))
            json_object_set_new(ev, "context", json_pack("{s:O}", "traits", traits));
    }
    const csv_field_t *mc = m->has_msgid ? ref_cell(&m->msgid_col, f, n) : NULL;
    if (mc != NULL && mc->len > 0) { /* empty: absent, as in Segment */
        const csv_field_t *c = mc;
        if (!utf8_valid(c->p, c->len)) {
            rc = ref_bad_utf8(err, line, &m->msgid_col);
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

/* ------------------------------------------------------------ comparing */

/* The typed values as a JSON object (names are NUL-terminated copies). */
static json_t *typed_object(const ev_prop_t *p, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(strlen(p[i].name), p[i].nlen);
        assert_int_not_equal(p[i].kind, PV_NONE);
        if (p[i].kind == PV_STR)
            assert_int_equal(p[i].s[p[i].slen], '\0');
        assert_int_equal(json_object_set_new(o, p[i].name, pv_to_json(&p[i])), 0);
    }
    return o;
}

/* Same keys in the same order with equal values (json_equal: 6 != 6.0). */
static void same_object(const json_t *want, const ev_prop_t *p, size_t n, const char *what)
{
    if (want == NULL || json_object_size(want) == 0) {
        if (n != 0)
            fail_msg("%s: %zu typed values where the JSON has none", what, n);
        return;
    }
    json_t *got = typed_object(p, n);
    if (!json_equal(want, got)) {
        char *a = json_dumps(want, JSON_COMPACT), *b = json_dumps(got, JSON_COMPACT);
        fail_msg("%s differ:\n json  %s\n typed %s", what, a, b);
    }
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)want, k, v)
    {
        assert_true(i < n);
        assert_string_equal(k, p[i].name);
        i++;
    }
    assert_int_equal(i, n);
    json_decref(got);
}

static void same_event(const ingest_event_t *a, const ingest_event_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->nids, b->nids);
    for (size_t i = 0; i < a->nids; i++) {
        assert_string_equal(a->ids[i].type, b->ids[i].type);
        assert_int_equal(a->ids[i].len, b->ids[i].len);
        assert_memory_equal(a->ids[i].value, b->ids[i].value, a->ids[i].len);
        assert_int_equal(b->ids[i].value[b->ids[i].len], '\0');
        assert_string_equal(a->ids[i].field, b->ids[i].field);
    }
    assert_int_equal(a->message_id_len, b->message_id_len);
    assert_memory_equal(a->message_id, b->message_id, a->message_id_len);
    assert_int_equal(a->message_id_derived, b->message_id_derived);
    assert_true(a->message_hash == b->message_hash);
    assert_int_equal(a->no_dedup, b->no_dedup);
    assert_int_equal(a->event_len, b->event_len);
    if (a->event)
        assert_memory_equal(a->event, b->event, a->event_len);
    else
        assert_null(b->event);
    assert_null(b->name);
    assert_null(b->group_id);
    assert_null(b->previous_id);
    assert_true(a->ts == b->ts);
    assert_true(a->received_at == b->received_at);
    assert_null(b->properties);
    assert_null(b->traits);
    assert_null(b->ctx_traits);
    assert_null(b->raw);
    same_object(a->properties, b->tprops, b->ntprops, "properties");
    same_object(a->type == ING_IDENTIFY ? a->traits : a->ctx_traits, b->ttraits, b->nttraits,
                "traits");
}

/* One row both ways: same decision, same text, same event. Returns the
 * status (for counting). */
static cp_status compare_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                             const segment_opts_t *o, const char *ctx)
{
    cp_error_t e1 = {0}, e2 = {0}, e3 = {0};
    json_t *doc = NULL;
    map_result r1 = MAP_EVENT, r2 = MAP_EVENT, r3 = MAP_EVENT;
    ingest_batch_t b1, b2;
    ingest_batch_init(&b1);
    ingest_batch_init(&b2);
    cp_status rc1 = ref_mapping_row(m, f, n, line, "imp:t", &doc, &r1, &e1);
    /* mapping_row (now made from the typed row) gives the same document */
    json_t *doc2 = NULL;
    cp_status rc3 = mapping_row(m, f, n, line, "imp:t", &doc2, &r3, &e3);
    if (rc1 != rc3 || strcmp(e1.message, e3.message))
        fail_msg("%s: mapping_row %d \"%s\" vs reference %d \"%s\"", ctx, rc3, e3.message, rc1,
                 e1.message);
    if (rc1 == CP_OK) {
        assert_int_equal(r1, r3);
        if (r1 == MAP_EVENT) {
            char *a = json_dumps(doc, JSON_COMPACT), *b = json_dumps(doc2, JSON_COMPACT);
            if (strcmp(a, b)) /* same keys in the same order */
                fail_msg("%s: documents differ\n ref %s\n new %s", ctx, a, b);
            free(a);
            free(b);
        }
    }
    json_decref(doc2);
    if (rc1 == CP_OK && r1 == MAP_EVENT) {
        rc1 = segment_parse_event(doc, ING_NONE, NULL, -1, o, &b1, &e1);
        if (rc1)
            error_prefix(&e1, "line %llu: ", (unsigned long long)line);
    }
    /* a batch that already holds an event: the new one is appended */
    ingest_batch_t *bb = &b2;
    if (line % 2) {
        map_result rr;
        const csv_field_t one[] = {{"u1", 2, 0}};
        mapping_t *m0 = NULL;
        const char *md = "{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}]}";
        assert_int_equal(mapping_parse(md, strlen(md), &m0, NULL), CP_OK);
        assert_int_equal(mapping_bind(m0, NULL, 0, NULL), CP_OK);
        segment_opts_t o0 = {.received_at_ms = 1000};
        assert_int_equal(mapping_row_event(m0, one, 1, 1, NULL, &o0, bb, &rr, NULL), CP_OK);
        mapping_free(m0);
    }
    size_t n0 = bb->n, arena0 = bb->arena.total;
    cp_status rc2 = mapping_row_event(m, f, n, line, "imp:t", o, bb, &r2, &e2);
    if (rc1 != rc2 || (rc1 && strcmp(e1.message, e2.message)))
        fail_msg("%s: typed %d \"%s\" vs JSON %d \"%s\"", ctx, rc2, e2.message, rc1, e1.message);
    if (rc2 || r2 == MAP_SKIP) {
        assert_int_equal(bb->n, n0);
        assert_int_equal(bb->arena.total, arena0);
        if (rc2 == CP_OK)
            assert_int_equal(r1, MAP_SKIP);
    } else {
        assert_int_equal(r1, MAP_EVENT);
        assert_int_equal(bb->n, n0 + 1);
        assert_int_equal(b1.n, 1);
        same_event(&b1.events[0], &bb->events[n0]);
    }
    ingest_batch_free(&b1);
    ingest_batch_free(&b2);
    json_decref(doc);
    return rc2;
}

/* ------------------------------------------------------------ generators */

#define NCOLS 10

static uint64_t rnd;
static unsigned rn(unsigned k)
{
    return (unsigned)(rand_next(&rnd) % k);
}

/* Kinds of column text: a field mostly reads a column of its kind. */
enum { K_INT, K_NUM, K_TEXT, K_ISO, K_BOOL, K_EPOCH, K_EPOCH_MS, K_DMY, K_N };
static int col_kind[NCOLS];

static void add_col(buf_t *d, int header, int kind)
{
    int c = (int)rn(NCOLS);
    int match = rn(24) != 0;
    for (int tries = 0; match && tries < 100 && col_kind[c] != kind; tries++)
        c = (int)rn(NCOLS);
    if (header)
        buf_printf(d, "\"c%d\"", c);
    else
        buf_printf(d, "%d", c);
}

static void add_field(buf_t *d, int header, int ident, int prop)
{
    static const char *const idtypes[] = {"user_id", "user_id", "anonymous_id", "email",
                                          "phone",   "crm_id",  "member_id"};
    static const char *const names[] = {"country", "email", "vip",     "age", "score",
                                        "joined",  "phone", "user_id", "n"};
    static const char *const types[] = {"string", "int", "number", "bool", "timestamp"};
    static const char *const fmts[] = {"iso8601",           "epoch",    "epoch_ms",
                                       "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "auto"};
    static const int fmt_kind[] = {K_ISO, K_EPOCH, K_EPOCH_MS, K_ISO, K_DMY, K_ISO};
    static const int type_kind[] = {K_TEXT, K_INT, K_NUM, K_BOOL, K_ISO};
    static const char *const xf[] = {"integer", "trim", "lower"};
    buf_printf(d, "{");
    if (ident) {
        buf_printf(d, "\"type\":\"%s\"", idtypes[rn(CP_ARRAY_LEN(idtypes))]);
    } else {
        buf_printf(d, "\"name\":\"%s\"", names[rn(CP_ARRAY_LEN(names))]);
    }
    int t = ident ? 0 : (int)rn(5);
    if (prop && rn(5) == 0) {
        buf_printf(d, ",\"type\":\"%s\",\"product\":[", rn(3) ? "number" : "int");
        add_col(d, header, K_INT);
        buf_printf(d, ",");
        add_col(d, header, K_NUM);
        buf_printf(d, "]");
        if (rn(2))
            buf_printf(d, ",\"round\":%u", rn(4));
        buf_printf(d, "}");
        return;
    }
    int kind = type_kind[t], x = -1, fmt = -1;
    if (t == 4) {
        fmt = (int)rn(CP_ARRAY_LEN(fmts));
        kind = fmt_kind[fmt];
    }
    if (t == 0 && rn(2)) {
        x = (int)rn(3);
        if (x == 0)
            kind = K_INT;
    }
    if (!ident)
        buf_printf(d, ",\"type\":\"%s\"", types[t]);
    buf_printf(d, ",\"column\":");
    add_col(d, header, kind);
    if (fmt >= 0)
        buf_printf(d, ",\"format\":\"%s\"", fmts[fmt]);
    if (t == 2 && rn(2))
        buf_printf(d, ",\"round\":%u", rn(10));
    if (x >= 0)
        buf_printf(d, ",\"transform\":\"%s\"", xf[x]);
    buf_printf(d, "}");
}

static char *random_mapping(int header)
{
    buf_t d;
    buf_init(&d, 0);
    buf_printf(&d, "{\"header\":%s", header ? "true" : "false");
    if (rn(5) == 0) {
        buf_printf(&d, ",\"skip_if_empty\":[");
        add_col(&d, header, K_TEXT);
        buf_printf(&d, "]");
    }
    buf_printf(&d, ",\"identifiers\":[");
    for (unsigned i = 0, k = 1 + rn(3); i < k; i++) {
        buf_printf(&d, i ? "," : "");
        add_field(&d, header, 1, 0);
    }
    buf_printf(&d, "],\"traits\":[");
    for (unsigned i = 0, k = rn(5); i < k; i++) {
        buf_printf(&d, i ? "," : "");
        add_field(&d, header, 0, 0);
    }
    buf_printf(&d, "]");
    if (rn(4)) {
        buf_printf(&d, ",\"event\":{\"name\":");
        if (rn(3)) {
            buf_printf(&d, "\"%s\"", rn(2) ? "purchase" : "page view");
        } else {
            buf_printf(&d, "{\"column\":");
            add_col(&d, header, K_TEXT);
            buf_printf(&d, "}");
        }
        if (rn(2)) {
            buf_printf(&d, ",\"name_when\":[");
            for (unsigned i = 0, k = 1 + rn(2); i < k; i++) {
                buf_printf(&d, "%s{\"column\":", i ? "," : "");
                add_col(&d, header, K_TEXT);
                buf_printf(&d, ",\"prefix\":\"%s\",\"name\":\"%s\"", rn(2) ? "C" : "1",
                           rn(2) ? "refund" : "x");
                buf_printf(&d, "}");
            }
            buf_printf(&d, "]");
        }
        if (rn(5)) {
            static const char *const fmts[] = {"iso8601", "epoch", "epoch_ms", "%Y-%m-%d %H:%M:%S",
                                               "%d/%m/%Y"};
            static const int kinds[] = {K_ISO, K_EPOCH, K_EPOCH_MS, K_ISO, K_DMY};
            unsigned fi = rn(CP_ARRAY_LEN(fmts));
            buf_printf(&d, ",\"timestamp\":{\"column\":");
            add_col(&d, header, kinds[fi]);
            buf_printf(&d, ",\"format\":\"%s\"}", fmts[fi]);
        }
        if (rn(4) == 0) {
            buf_printf(&d, ",\"message_id\":{\"column\":");
            add_col(&d, header, K_TEXT);
            buf_printf(&d, "}");
        }
        buf_printf(&d, ",\"properties\":[");
        for (unsigned i = 0, k = rn(7); i < k; i++) {
            buf_printf(&d, i ? "," : "");
            add_field(&d, header, 0, 1);
        }
        buf_printf(&d, "]}");
    }
    buf_printf(&d, "}");
    return d.data;
}

/* Each column of a mapping mostly holds one kind of text, so that most
 * rows are valid; one cell in 24 comes from the whole pool. */
static void random_cell(buf_t *c, int col)
{
    static const char *const kinds[][6] = {
        {"17850", "-3", "6", "17850.0", "42", "0"},
        {"2.55", "0.1", "6.5", "-3", "1234.5678", "7"},
        {"abc", "A@B.COM ", "  x  ", "C536379", "\xc3\xa9t\xc3\xa9", "United Kingdom"},
        {"2010-12-01 08:26:00", "2011-01-02T03:04:05Z", "2011-01-02 03:04:05",
         "2011-12-09 12:50:00", "2011-06-30 00:00:00", "2011-06-30T23:59:59+08:00"},
        {"yes", "0", "TRUE", "no", "1", "false"},
        {"1291191960", "0", "1700000000", "-86400", "253402300799", "1e3"},
        {"1291191960123", "1700000000999", "-1", "999", "0", "12"},
        {"01/12/2010", "31/12/1999", "1/2/2003", "29/02/2012", "30/06/2011", "9/9/99"},
    };
    if (rn(24)) {
        const char *s = kinds[col_kind[col]][rn(6)];
        buf_append(c, s, strlen(s));
        return;
    }
    static const char *const pool[] = {"",
                                       "",
                                       "  ",
                                       "17850",
                                       "17850.0",
                                       "-3",
                                       "6",
                                       "6.5",
                                       "2.55",
                                       "0.1",
                                       "abc",
                                       "yes",
                                       "TRUE",
                                       "no",
                                       "0",
                                       "1",
                                       "1e400",
                                       "1e300",
                                       "-1e300",
                                       "9999999999999999999",
                                       "12345678901234567",
                                       "123456789012345.0",
                                       "+7",
                                       "0x1A",
                                       "2010-12-01 08:26:00",
                                       "2011-01-02T03:04:05Z",
                                       "2011-01-02T03:04:05.5+08:00",
                                       "0001-01-01T00:00:00+01:00",
                                       "1291191960",
                                       "1291191960123",
                                       "-62135596801",
                                       "253402300800",
                                       "99999999999999",
                                       "01/12/2010",
                                       "31/02/2011",
                                       "A@B.COM ",
                                       "  x  ",
                                       "C536379",
                                       "C",
                                       "1C",
                                       "bell\x07",
                                       "tab\tx",
                                       "\xc3\xa9t\xc3\xa9",
                                       "caf\xc3\x89",
                                       "Ab\xc3\x89Z",
                                       "x\x7f",
                                       "  12  ",
                                       " 6.0 ",
                                       "NaN",
                                       "inf",
                                       "-0",
                                       "1.",
                                       ".5",
                                       "5e-324"};
    unsigned k = rn(30);
    if (k == 0) {
        /* long values: identifier (256), event name (200) and event (32 KB) limits */
        static const size_t lens[] = {199, 200, 201, 255, 256, 257, 300, 5000, 33000};
        size_t len = lens[rn(CP_ARRAY_LEN(lens))];
        for (size_t i = 0; i < len; i++)
            buf_append(c, rn(50) ? "a" : (rn(2) ? "\"" : "\x01"), 1);
        return;
    }
    if (k == 1) {
        buf_append(c, "bad\xff", 4);
        return;
    }
    if (k == 2) {
        buf_append(c, "nu\0l", 4);
        return;
    }
    const char *s = pool[rn(CP_ARRAY_LEN(pool))];
    buf_append(c, s, strlen(s));
}

static void test_random_rows(void **state)
{
    (void)state;
    rnd = 0x5eed1234;
    static const char *const custom_ids[] = {"user_id", "email", "crm_id"};
    const char *hdr_names[NCOLS];
    char hdr_buf[NCOLS][8];
    csv_field_t hdr[NCOLS];
    for (int i = 0; i < NCOLS; i++) {
        snprintf(hdr_buf[i], sizeof hdr_buf[i], "c%d", i);
        hdr_names[i] = hdr_buf[i];
        hdr[i].p = hdr_names[i];
        hdr[i].len = strlen(hdr_names[i]);
    }
    size_t ok = 0, bad = 0, skipped_maps = 0;
    for (int mi = 0; mi < 600; mi++) {
        int header = (int)rn(2);
        for (int i = 0; i < NCOLS; i++)
            col_kind[i] = i < K_N ? i : (int)rn(K_N);
        for (int i = NCOLS - 1; i > 0; i--) {
            int j = (int)rn((unsigned)i + 1), t = col_kind[i];
            col_kind[i] = col_kind[j];
            col_kind[j] = t;
        }
        char *doc = random_mapping(header);
        mapping_t *m = NULL;
        cp_error_t err = {0};
        if (mapping_parse(doc, strlen(doc), &m, &err) != CP_OK) {
            skipped_maps++; /* e.g. a product typed as a string */
            free(doc);
            continue;
        }
        assert_int_equal(mapping_bind(m, header ? hdr : NULL, header ? NCOLS : 0, &err), CP_OK);

        for (int ri = 0; ri < 60; ri++) {
            buf_t cells[NCOLS];
            csv_field_t f[NCOLS];
            size_t n = rn(8) ? NCOLS : rn(NCOLS + 1); /* short rows too */
            for (size_t i = 0; i < NCOLS; i++) {
                buf_init(&cells[i], 0);
                random_cell(&cells[i], (int)i);
                f[i].p = buf_cstr(&cells[i]);
                f[i].len = cells[i].len;
                /* as the CSV reader says it, or "not known" */
                f[i].plain = (ri + (int)i) % 3 ? true_plain(f[i].p, f[i].len) : 0;
            }
            segment_opts_t o = {0};
            o.allow_other_ids = (int)rn(3) != 0;
            o.no_dedup = (int)rn(2);
            o.received_at_ms = rn(3) ? 1700000000123ll : 0;
            if (rn(4) == 0) {
                o.id_types.names = custom_ids;
                o.id_types.n = CP_ARRAY_LEN(custom_ids);
            }
            char ctx[160];
            snprintf(ctx, sizeof ctx, "mapping %d row %d", mi, ri);
            cp_status rc = compare_row(m, f, n, (uint64_t)(ri + 2), rn(5) ? &o : NULL, ctx);
            if (rc == CP_OK)
                ok++;
            else
                bad++;
            for (size_t i = 0; i < NCOLS; i++)
                buf_free(&cells[i]);
        }
        mapping_free(m);
        free(doc);
    }
    /* both outcomes, each error kind, in good numbers */
    print_message("random rows: %zu accepted, %zu rejected, %zu mappings refused\n", ok, bad,
                  skipped_maps);
    assert_true(ok > 8000);
    assert_true(bad > 8000);
}

/* ------------------------------------------------------------ fixed cases */

static mapping_t *parse_bound(const char *doc, const char *hdr)
{
    mapping_t *m = NULL;
    cp_error_t err = {0};
    if (mapping_parse(doc, strlen(doc), &m, &err))
        fail_msg("%s", err.message);
    csv_field_t h[16];
    size_t n = 0;
    char buf[256];
    if (hdr) {
        snprintf(buf, sizeof buf, "%s", hdr);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
            h[n++] = (csv_field_t){t, strlen(t), 0};
    }
    if (mapping_bind(m, hdr ? h : NULL, n, &err))
        fail_msg("%s", err.message);
    return m;
}

static size_t split(char *line, csv_field_t *f)
{
    size_t n = 0;
    for (char *p = line;; p++) {
        char *c = strchr(p, ',');
        f[n].p = p;
        f[n].len = c ? (size_t)(c - p) : strlen(p);
        f[n].plain = true_plain(f[n].p, f[n].len);
        n++;
        if (!c)
            break;
        *c = '\0';
        p = c;
    }
    return n;
}

/* An empty message id cell is an absent message id, as "messageId":"" is
 * in Segment: the row gets "<prefix>:<line>", the id of a mapping without
 * the column, and the JSON path agrees. A non-empty cell is used as is. */
static void test_empty_message_id_is_absent(void **state)
{
    (void)state;
    mapping_t *m = parse_bound("{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":"
                               "\"user_id\"}],\"event\":{\"name\":\"e\",\"timestamp\":{"
                               "\"column\":2},\"message_id\":{\"column\":1}}}",
                               NULL);
    const char *rows[] = {"u1,,2024-01-02T00:00:00Z", "u1,m-9,2024-01-02T00:00:00Z"};
    const char *want[] = {"import:5", "m-9"};
    for (size_t i = 0; i < 2; i++) {
        char line[128];
        snprintf(line, sizeof line, "%s", rows[i]);
        csv_field_t f[4];
        size_t n = split(line, f);
        ingest_batch_t b;
        ingest_batch_init(&b);
        segment_opts_t o = {.allow_other_ids = 1, .received_at_ms = 1700000000000};
        map_result res;
        cp_error_t err = {0};
        if (mapping_row_event(m, f, n, 5, NULL, &o, &b, &res, &err) != CP_OK)
            fail_msg("row \"%s\": %s", rows[i], err.message);
        assert_int_equal(res, MAP_EVENT);
        assert_int_equal(b.n, 1);
        assert_string_equal(b.events[0].message_id, want[i]);
        assert_int_equal(b.events[0].message_id_derived, 0);
        compare_row(m, f, n, 5, &o, "message id");
        ingest_batch_free(&b);
    }
    mapping_free(m);
}

static void test_online_retail_event(void **state)
{
    (void)state;
    mapping_t *m = NULL;
    assert_int_equal(mapping_preset("online-retail", &m, NULL), CP_OK);
    const csv_field_t hdr[] = {
        {"InvoiceNo", 9, 0},    {"StockCode", 9, 0}, {"Description", 11, 0}, {"Quantity", 8, 0},
        {"InvoiceDate", 11, 0}, {"UnitPrice", 9, 0}, {"CustomerID", 10, 0},  {"Country", 7, 0}};
    assert_int_equal(mapping_bind(m, hdr, 8, NULL), CP_OK);
    char line[] = "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-6,2010-12-01 08:26:00,2.55,"
                  "17850.0,United Kingdom";
    csv_field_t f[8];
    assert_int_equal(split(line, f), 8);
    ingest_batch_t b;
    ingest_batch_init(&b);
    segment_opts_t o = {.allow_other_ids = 1, .no_dedup = 1, .received_at_ms = 1700000000000};
    map_result res;
    cp_error_t err = {0};
    assert_int_equal(mapping_row_event(m, f, 8, 7, "import:abc", &o, &b, &res, &err), CP_OK);
    assert_int_equal(res, MAP_EVENT);
    /* the reader reuses its buffer: nothing may point into it */
    memset(line, 'X', sizeof line - 1);
    const ingest_event_t *e = &b.events[0];
    assert_int_equal(e->type, ING_TRACK);
    assert_string_equal(e->event, "refund");
    assert_int_equal(e->nids, 1);
    assert_string_equal(e->ids[0].type, "user_id");
    assert_string_equal(e->ids[0].value, "17850");
    assert_string_equal(e->message_id, "import:abc:7");
    assert_true(e->ts == 1291191960);
    assert_true(e->received_at == 1700000000);
    assert_true(e->no_dedup);
    assert_int_equal(e->ntprops, 6);
    const ev_prop_t *p = e->tprops;
    assert_string_equal(p[0].name, "invoice");
    assert_int_equal(p[0].kind, PV_STR);
    assert_string_equal(p[0].s, "C536379");
    assert_string_equal(p[2].s, "WHITE HANGING HEART T-LIGHT HOLDER");
    assert_int_equal(p[3].kind, PV_INT);
    assert_int_equal(p[3].i, -6);
    assert_int_equal(p[4].kind, PV_REAL);
    assert_true(p[4].d == 2.55);
    assert_string_equal(p[5].name, "amount");
    assert_int_equal(p[5].kind, PV_REAL);
    assert_true(p[5].d == -15.3);
    assert_int_equal(e->nttraits, 1);
    assert_string_equal(e->ttraits[0].name, "country");
    assert_string_equal(e->ttraits[0].s, "United Kingdom");
    ingest_batch_free(&b);
    mapping_free(m);
}

/* Bad rows: the reason names the line and the column; the batch stays as
 * it was. */
static void test_bad_rows(void **state)
{
    (void)state;
    static const struct {
        const char *mapping, *hdr, *row;
        cp_status code;
        const char *want;
    } cases[] = {
        {"{\"identifiers\":[{\"column\":\"id\",\"type\":\"user_id\"}],\"traits\":[{\"column\":"
         "\"age\",\"name\":\"age\",\"type\":\"int\"}]}",
         "id,age", "u1,old", CP_ETYPE, "line 5: column \"age\" (age): \"old\" is not an integer"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"},{\"column\":1,"
         "\"type\":\"email\"}]}",
         NULL, ",", CP_EINVAL, "line 5: no identifier (every identifier column is empty)"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"traits\":[{"
         "\"column\":1,\"name\":\"city\"}]}",
         NULL, "u1,\xe5\xb9", CP_EINVAL, "line 5: column 2: invalid UTF-8"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"event\":{"
         "\"name\":{\"column\":1},\"timestamp\":{\"column\":2}}}",
         NULL, "u1,\xff,2020-01-01", CP_EINVAL, "line 5: column 2: invalid UTF-8"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"event\":{"
         "\"name\":\"e\",\"timestamp\":{\"column\":1}}}",
         NULL, "u1,", CP_EINVAL, "line 5: the timestamp column is empty"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"event\":{"
         "\"name\":\"e\",\"timestamp\":{\"column\":1,\"format\":\"epoch\"}}}",
         NULL, "u1,-99999999999", CP_EINVAL,
         "line 5: \"timestamp\": \"-1199-02-15T14:13:21Z\" is not an ISO 8601"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"event\":{"
         "\"name\":\"e\"}}",
         NULL, "u1", CP_EINVAL, "line 5: missing \"timestamp\" (no receive time"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"email\"}],\"traits\":[{"
         "\"column\":1,\"name\":\"email\",\"type\":\"bool\"}]}",
         /* a value that is not text is a warning, not the row's fault: without it
          * the row has no identifier left */
         NULL, "a@b,yes", CP_EINVAL, "line 5: missing \"userId\" and \"anonymousId\""},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"crm_id\"}]}", NULL, "c1",
         CP_EINVAL, "line 5: missing \"userId\" and \"anonymousId\" (one is required)"},
        {"{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"event\":{"
         "\"name\":\"e\",\"properties\":[{\"name\":\"a\",\"type\":\"number\",\"product\":[1,2]}]}}",
         NULL, "u1,1e200,1e200", CP_ETYPE, "line 5: column 2 (a): \"1e200\" is not a factor"}};
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        mapping_t *m = parse_bound(cases[i].mapping, cases[i].hdr);
        char line[256];
        snprintf(line, sizeof line, "%s", cases[i].row);
        csv_field_t f[16];
        size_t n = split(line, f);
        ingest_batch_t b;
        ingest_batch_init(&b);
        map_result res;
        cp_error_t err = {0};
        segment_opts_t o = {.allow_other_ids = 1};
        cp_status rc = mapping_row_event(m, f, n, 5, NULL, &o, &b, &res, &err);
        if (rc != cases[i].code || strncmp(err.message, cases[i].want, strlen(cases[i].want)))
            fail_msg("case %zu: %d \"%s\", want %d \"%s\"", i, rc, err.message, cases[i].code,
                     cases[i].want);
        assert_int_equal(b.n, 0);
        assert_int_equal(b.arena.total, 0);
        /* and the JSON path decides alike */
        compare_row(m, f, n, 5, &o, "bad row");
        ingest_batch_free(&b);
        mapping_free(m);
    }
}

/* An event whose cells are under every bound but whose JSON is over 32 KB
 * (quotes escape to two bytes): the exact size decides, as it did. */
static void test_event_size_limit(void **state)
{
    (void)state;
    mapping_t *m = parse_bound("{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":"
                               "\"user_id\"}],\"event\":{\"name\":\"e\",\"properties\":[{"
                               "\"column\":1,\"name\":\"a\"},{\"column\":2,\"name\":\"b\"}]}}",
                               NULL);
    segment_opts_t o = {.received_at_ms = 1700000000000};
    for (size_t len = 16200; len < 16500; len += 7) {
        char *a = malloc(len + 1), *q = malloc(len + 1);
        memset(a, 'a', len);
        memset(q, '"', len);
        a[len] = q[len] = '\0';
        csv_field_t f[3] = {{"u", 1, 0}, {a, len, 0}, {q, len / 2, 0}};
        compare_row(m, f, 3, 9, &o, "size");
        f[2].p = a;
        compare_row(m, f, 3, 9, &o, "size");
        free(a);
        free(q);
    }
    mapping_free(m);
}

/* ------------------------------------------------------------ fast paths */

/*
 * The conversions' fast paths (plain digits, fixed-layout ISO times, ASCII
 * text, whole cells copied with the record) against the reference, on
 * cells just inside and just outside what each accepts, with the row's
 * fields in separate buffers and cut one after the other in one buffer as
 * csv_next returns them.
 */
/* The parenthesised pairs are one string each: "\x01" "08" keeps the digits
 * out of the hex escape; the parentheses tell clang the split is meant. */
static const char *const fp_times[] = {"2010-12-01 08:26:00",
                                       "2010-12-01T08:26:00",
                                       "2010-12-01t08:26:00",
                                       "2010-12-01 08:26:00Z",
                                       "2010-12-01 08:26:00z",
                                       "2012-02-29 23:59:59",
                                       "2011-02-29 00:00:00",
                                       "2000-02-29 12:00:00",
                                       "1900-02-29 12:00:00",
                                       "2011-04-31 10:00:00",
                                       "2011-13-01 10:00:00",
                                       "2011-00-10 10:00:00",
                                       "2011-01-00 10:00:00",
                                       "2011-01-01 24:00:00",
                                       "2011-01-01 23:60:00",
                                       "2011-01-01 23:59:60",
                                       "2011-01-01 23:59:61",
                                       "0000-01-01 00:00:00",
                                       "0001-01-01 00:00:00",
                                       "9999-12-31 23:59:59",
                                       "1969-12-31 23:59:59",
                                       "1970-01-01 00:00:00",
                                       "1600-03-01 00:00:00",
                                       "2010-12-01 08:26:0x",
                                       "2010-12-01 08:26",
                                       "2010-12-01 08:26:00.5",
                                       "2010-12-01 08:26:00+01:00",
                                       "2010-12-01",
                                       "2010/12/01 08:26:00",
                                       "2010-12-01_08:26:00",
                                       "2010-12-01 08-26-00",
                                       " 2010-12-01 08:26:00",
                                       "2010-12-01 08:26:00 ",
                                       "201a-12-01 08:26:00",
                                       "2010-1:-01 08:26:00",
                                       "2010-12-01 08:26:00ZZ",
                                       "2010-12-01 0/:26:00",
                                       "2010-12-01 08:26:00Y",
                                       ("2010-12-01\x01"
                                        "08:26:00")};
static const char *const fp_nums[] = {"6",
                                      "-6",
                                      "+6",
                                      "0",
                                      "-0",
                                      "+0",
                                      "007",
                                      "-007",
                                      "17850.0",
                                      "17850.",
                                      "17850.00",
                                      "-17850.0",
                                      "2.55",
                                      "-2.55",
                                      ".5",
                                      "5.",
                                      "1.5e3",
                                      "123456789012345",
                                      "1234567890123456",
                                      "123456789012345678",
                                      "1234567890123456789",
                                      "9999999999999999999",
                                      "999999999999999.0",
                                      "9999999999999999.0",
                                      "12345678901234.5",
                                      "0.000000000000001",
                                      "-",
                                      "+",
                                      ".",
                                      "-.",
                                      "1-",
                                      " 6",
                                      "6 ",
                                      " 6 ",
                                      "\t7\r",
                                      "0x1A",
                                      "1,5",
                                      "--1",
                                      "+-1",
                                      "1.2.3",
                                      "NaN",
                                      "inf",
                                      "-0.0",
                                      "6.0000000000000001",
                                      "00000000000000000006"};
static const char *const fp_text[] = {"",
                                      " ",
                                      "abc",
                                      "A",
                                      "ABCDEFG",
                                      "ABCDEFGH",
                                      "ABCDEFGHI",
                                      "United Kingdom",
                                      "  padded  ",
                                      "WHITE HANGING HEART T-LIGHT HOLDER",
                                      "\xc3\xa9t\xc3\xa9",
                                      "caf\xc3\xa9 au lait",
                                      "bad\xff",
                                      "\xe2\x82",
                                      "bell\x07",
                                      "tab\there",
                                      "del\x7f",
                                      "12345678\x01",
                                      ("\x01"
                                       "234567"),
                                      "Mixed Case TEXT"};

static void fp_cell(buf_t *c, int col)
{
    const char *s;
    if (rn(200) == 0) {
        if (rn(2))
            buf_append(c,
                       "1\0"
                       "2",
                       3);
        else
            buf_append(c, "ab\0cdefghij", 12);
        return;
    }
    int good = rn(8) != 0; /* mostly from the valid heads of the lists */
    if (col == 2 || col == 8)
        s = fp_times[good ? rn(8) : rn(CP_ARRAY_LEN(fp_times))];
    else if (col == 0 || col == 3 || col == 4)
        s = rn(16) ? fp_nums[good ? rn(16) : rn(CP_ARRAY_LEN(fp_nums))]
                   : fp_text[rn(CP_ARRAY_LEN(fp_text))];
    else
        s = rn(16) ? fp_text[good ? 2 + rn(10) : rn(CP_ARRAY_LEN(fp_text))]
                   : fp_nums[rn(CP_ARRAY_LEN(fp_nums))];
    buf_append(c, s, strlen(s));
}

static void test_fast_paths(void **state)
{
    (void)state;
    rnd = 0xfa57;
    static const char *const docs[] = {
        "{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":\"user_id\",\"transform\":"
        "\"integer\"}],\"traits\":[{\"column\":1,\"name\":\"country\"}],\"event\":{\"name\":"
        "\"purchase\",\"name_when\":[{\"column\":5,\"prefix\":\"C\",\"name\":\"refund\"}],"
        "\"timestamp\":{\"column\":2,\"format\":\"auto\"},\"properties\":["
        "{\"column\":5,\"name\":\"invoice\"},{\"column\":6,\"name\":\"low\",\"transform\":"
        "\"lower\"},{\"column\":7,\"name\":\"tr\",\"transform\":\"trim\"},"
        "{\"column\":3,\"name\":\"quantity\",\"type\":\"int\"},"
        "{\"column\":4,\"name\":\"unit_price\",\"type\":\"number\"},"
        "{\"column\":8,\"name\":\"when\",\"type\":\"timestamp\"},"
        "{\"name\":\"amount\",\"type\":\"number\",\"product\":[3,4],\"round\":2},"
        "{\"name\":\"n\",\"type\":\"int\",\"product\":[3,4]},"
        "{\"column\":9,\"name\":\"code\",\"transform\":\"integer\"}]}}",
        /* identify rows: traits only */
        "{\"header\":false,\"identifiers\":[{\"column\":5,\"type\":\"user_id\"},{\"column\":"
        "0,\"type\":\"crm_id\",\"transform\":\"integer\"}],\"traits\":[{\"column\":1,\"name\":"
        "\"country\"},{\"column\":3,\"name\":\"age\",\"type\":\"int\"},{\"column\":2,\"name\":"
        "\"joined\",\"type\":\"timestamp\"},{\"column\":6,\"name\":\"country\"}]}",
    };
    size_t ok = 0, bad = 0;
    for (size_t di = 0; di < CP_ARRAY_LEN(docs); di++) {
        mapping_t *m = parse_bound(docs[di], NULL);
        for (int ri = 0; ri < 6000; ri++) {
            enum { NC = 10 };
            buf_t cells[NC];
            csv_field_t sep[NC], cut[NC];
            size_t n = rn(10) ? NC : rn(NC + 1);
            buf_t rec;
            buf_init(&rec, 0);
            size_t off[NC];
            for (size_t i = 0; i < NC; i++) {
                buf_init(&cells[i], 0);
                fp_cell(&cells[i], (int)i);
                sep[i].p = buf_cstr(&cells[i]);
                sep[i].len = cells[i].len;
                sep[i].plain = (ri + (int)i) % 3 ? true_plain(sep[i].p, sep[i].len) : 0;
                off[i] = rec.len;
                buf_append(&rec, cells[i].data ? cells[i].data : "", cells[i].len);
                buf_append(&rec, "\0", 1);
            }
            if (rn(8) == 0) /* a wide record: the block does not pay */
                for (int k = 0; k < 300; k++)
                    buf_append(&rec, "w", 1);
            for (size_t i = 0; i < NC; i++) {
                cut[i].p = rec.data + off[i];
                cut[i].len = sep[i].len;
                cut[i].plain = sep[i].plain;
            }
            segment_opts_t o = {.allow_other_ids = 1, .no_dedup = (int)rn(2)};
            o.received_at_ms = rn(2) ? 1700000000123ll : 0;
            char ctx[64];
            snprintf(ctx, sizeof ctx, "fast mapping %zu row %d", di, ri);
            cp_status rc = compare_row(m, sep, n, (uint64_t)ri + 2, &o, ctx);
            cp_status rc2 = compare_row(m, cut, n, (uint64_t)ri + 2, &o, ctx);
            assert_int_equal(rc, rc2);
            if (rc == CP_OK)
                ok++;
            else
                bad++;
            buf_free(&rec);
            for (size_t i = 0; i < NC; i++)
                buf_free(&cells[i]);
        }
        mapping_free(m);
    }
    print_message("fast paths: %zu accepted, %zu rejected\n", ok, bad);
    assert_true(ok > 500);
    assert_true(bad > 500);
}

/* Fields one after the other but not NUL-terminated between (a caller's
 * own splitting): values are copied one by one, each with its NUL. */
static void test_adjacent_fields_without_nul(void **state)
{
    (void)state;
    mapping_t *m = parse_bound("{\"header\":false,\"identifiers\":[{\"column\":0,\"type\":"
                               "\"user_id\"}],\"event\":{\"name\":\"e\",\"properties\":[{"
                               "\"column\":1,\"name\":\"a\"},{\"column\":2,\"name\":\"b\"}]}}",
                               NULL);
    char line[] = "u1,alpha,beta";
    csv_field_t f[3] = {{line, 2, 0}, {line + 3, 5, 0}, {line + 9, 4, 0}};
    ingest_batch_t b;
    ingest_batch_init(&b);
    segment_opts_t o = {.received_at_ms = 1700000000000};
    map_result res;
    assert_int_equal(mapping_row_event(m, f, 3, 2, NULL, &o, &b, &res, NULL), CP_OK);
    assert_int_equal(res, MAP_EVENT);
    memset(line, 'X', sizeof line - 1);
    assert_string_equal(b.events[0].ids[0].value, "u1");
    assert_string_equal(b.events[0].tprops[0].s, "alpha");
    assert_string_equal(b.events[0].tprops[1].s, "beta");
    assert_string_equal(b.events[0].tprops[1].name, "b");
    ingest_batch_free(&b);
    mapping_free(m);
}

/* "tags": parsing, splitting a cell into dictionary paths / literal paths,
 * unknown ids counted, the per-row bound, and clear errors for bad keys. */
static cp_status tag_row(const mapping_t *m, const char *row, ingest_batch_t *b, cp_error_t *err)
{
    static char line[8192];
    snprintf(line, sizeof line, "%s", row);
    csv_field_t f[16];
    size_t n = split(line, f);
    map_result res;
    segment_opts_t o = {.allow_other_ids = 1, .received_at_ms = 1700000000000};
    return mapping_row_event(m, f, n, 7, NULL, &o, b, &res, err);
}

static void test_tags(void **state)
{
    (void)state;
    mapping_t *m = parse_bound("{\"identifiers\":[{\"column\":\"id\",\"type\":\"user_id\"}],"
                               "\"tags\":[{\"column\":\"usertag\",\"separator\":\"|\","
                               "\"dictionary\":{\"10006\":\"interest/finance\","
                               "\"10024\":\"life/pets\"},\"unknown\":\"skip\"},"
                               "{\"column\":\"paths\",\"separator\":\";\"}]}",
                               "id,usertag,paths");
    assert_int_equal(m->ntags, 2);
    ingest_batch_t b;
    ingest_batch_init(&b);
    cp_error_t err = {0};
    /* spaces trimmed, empty pieces ignored, 99999 and a too-long id unknown */
    char big[400];
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char row[600];
    snprintf(row, sizeof row, "u1,10006| 10024 ||99999|%s|,兴趣/金融 ; a/b;", big);
    if (tag_row(m, row, &b, &err) != CP_OK)
        fail_msg("%s", err.message);
    assert_int_equal(b.n, 1);
    const ingest_event_t *e = &b.events[0];
    assert_int_equal(e->ntags, 4);
    assert_int_equal(e->ntags_unknown, 2);
    assert_string_equal(e->tags[0], "interest/finance");
    assert_string_equal(e->tags[1], "life/pets");
    assert_string_equal(e->tags[2], "兴趣/金融");
    assert_string_equal(e->tags[3], "a/b");
    /* empty cells: no tags, nothing unknown */
    assert_int_equal(tag_row(m, "u2,,", &b, &err), CP_OK);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.events[1].ntags, 0);
    assert_null(b.events[1].tags);
    assert_int_equal(b.events[1].ntags_unknown, 0);
    /* more than MAPPING_MAX_TAGS in a row: rejected, the batch unchanged */
    buf_t c;
    buf_init(&c, 0);
    buf_printf(&c, "u3,");
    for (int i = 0; i <= MAPPING_MAX_TAGS; i++)
        buf_printf(&c, "%s%d", i ? "|" : "", i);
    buf_printf(&c, ",");
    size_t total = b.arena.total;
    assert_int_equal(tag_row(m, buf_cstr(&c), &b, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "more than 256 tags"));
    assert_non_null(strstr(err.message, "usertag"));
    assert_int_equal(b.n, 2);
    assert_int_equal(b.arena.total, total);
    buf_free(&c);
    ingest_batch_free(&b);
    mapping_free(m);

    static const struct {
        const char *tags, *want;
    } bad[] = {
        {"{}", "\"tags\" must be an array"},
        {"[5]", "tags[0] must be an object"},
        {"[{\"column\":\"t\",\"dict\":{}}]", "tags[0]: unknown field \"dict\""},
        {"[{\"dictionary\":{}}]", "tags[0]: \"column\" must be"},
        {"[{\"column\":\"t\",\"separator\":\"ab\"}]", "tags[0].separator must be one character"},
        {"[{\"column\":\"t\",\"separator\":5}]", "tags[0].separator must be one character"},
        {"[{\"column\":\"t\",\"unknown\":\"fail\"}]", "tags[0].unknown must be \"skip\""},
        {"[{\"column\":\"t\",\"dictionary\":[]}]", "tags[0].dictionary must be an object"},
        {"[{\"column\":\"t\"},{\"column\":\"t\",\"dictionary\":{\"1\":5}}]",
         "tags[1].dictionary[\"1\"] must be a tag path"},
        {"[{\"column\":\"t\",\"dictionary\":{\"1\":\"Bad Path//\"}}]",
         "tags[0].dictionary[\"1\"] must be a tag path"},
        {"[{\"column\":\"t\",\"dictionary_file\":\"d.json\"}]",
         "tags[0].dictionary_file must be read"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "{\"identifiers\":[{\"column\":\"id\",\"type\":\"user_id\"}],\"tags\":%s}",
                 bad[i].tags);
        mapping_t *x = NULL;
        cp_error_t e2 = {0};
        if (mapping_parse(doc, strlen(doc), &x, &e2) != CP_EINVAL ||
            strstr(e2.message, bad[i].want) == NULL)
            fail_msg("case %zu: \"%s\", want \"%s\"", i, e2.message, bad[i].want);
        assert_null(x);
    }
}

/* dictionary_file: read relative to the mapping's directory into "dictionary". */
static void test_tags_dictionary_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/cp_tagsdict_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/dict.json", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"10006\": \"interest/finance\"}", fp);
    fclose(fp);
    const char *doc = "{\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}],\"header\":false,"
                      "\"tags\":[{\"column\":1,\"dictionary_file\":\"dict.json\"}]}";
    char *out = NULL;
    size_t len = 0;
    cp_error_t err = {0};
    assert_int_equal(mapping_resolve_files(doc, strlen(doc), dir, &out, &len, &err), CP_OK);
    assert_non_null(out);
    mapping_t *m = NULL;
    assert_int_equal(mapping_parse(out, len, &m, &err), CP_OK);
    assert_int_equal(m->ntags, 1);
    assert_string_equal(json_string_value(json_object_get(m->tags[0].dict, "10006")),
                        "interest/finance");
    mapping_free(m);
    free(out);
    /* nothing to resolve: NULL, the text is used as is */
    const char *plain = "{\"identifiers\":[{\"column\":0,\"type\":\"user_id\"}]}";
    assert_int_equal(mapping_resolve_files(plain, strlen(plain), dir, &out, &len, &err), CP_OK);
    assert_null(out);
    /* a missing file names the key and the path */
    const char *missing = "{\"tags\":[{\"column\":1,\"dictionary_file\":\"nope.json\"}]}";
    assert_int_equal(mapping_resolve_files(missing, strlen(missing), dir, &out, &len, &err),
                     CP_EIO);
    assert_non_null(strstr(err.message, "tags[0].dictionary_file"));
    assert_non_null(strstr(err.message, "nope.json"));
    /* not an object */
    fp = fopen(path, "w");
    fputs("[1,2]", fp);
    fclose(fp);
    const char *arr = "{\"tags\":[{\"column\":1,\"dictionary_file\":\"dict.json\"}]}";
    assert_int_equal(mapping_resolve_files(arr, strlen(arr), dir, &out, &len, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "must hold a JSON object"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_paths),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_tags_dictionary_file),
        cmocka_unit_test(test_adjacent_fields_without_nul),
        cmocka_unit_test(test_online_retail_event),
        cmocka_unit_test(test_empty_message_id_is_absent),
        cmocka_unit_test(test_bad_rows),
        cmocka_unit_test(test_event_size_limit),
        cmocka_unit_test(test_random_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
