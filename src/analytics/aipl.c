/*
 * aipl.c — AIPL stages (docs/analytics.md "AIPL").
 *
 * Rules map events to the four stages of Alibaba's consumer journey:
 *   awareness  exposed or viewed      (any of its events in the window)
 *   interest   clicked, favourited, carted
 *   purchase   bought
 *   loyalty    bought at least `repeat_purchases` times in the window, or
 *              holds `or_attribute` (a bool attribute, e.g. is_member) —
 *              with filters, holds it and bought the filtered brand or
 *              category at least once in the window
 * optionally restricted to one brand or category by property filters
 * applied to every event ("filters": {"brand": "x"}: the properties must
 * be indexed). Each stage is a crowd expression of did() predicates over
 * the window [as_of - window_days + 1, as_of], so the stage sets are
 * exactly what the same expressions give in a crowd, and the report shows
 * them. A user's current stage is the highest one reached (loyalty >
 * purchase > interest > awareness) and is kept as exclusive tags
 * aipl/<rules>/<stage>, written in one engine transaction: a user holds at
 * most one of them, and users who reach no stage hold none.
 *
 * Events the index has never seen are left out of the expressions (and
 * listed in the report as "unknown_events"): rules are written before
 * every event type has arrived.
 */
#include <stdlib.h>
#include <string.h>

#include "analytics/value.h"

#define AIPL_MAX_EVENTS 16
#define AIPL_MAX_FILTERS VAL_MAX_FILTERS
#define AIPL_EXPR_MAX 16384

static const char *const stage_names[4] = {"awareness", "interest", "purchase", "loyalty"};
/* Display names of the stage tags, as the AIPL model is named in Chinese. */
static const char *const stage_display[4] = {"认知", "兴趣", "购买", "忠诚"};

/* Appends s as a JSON string literal (the expression language reads JSON
 * escapes). */
static cp_status quote(buf_t *b, const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps_checked(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (q == NULL)
        return CP_ENOMEM;
    cp_status rc = buf_append(b, q, strlen(q));
    free(q);
    return rc;
}

static int ident_ok(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

cp_status val_filters_parse(cp_db_t *db, const json_t *f, const char *what, beh_prop_t *props,
                            char (*store)[64], size_t *n, cp_error_t *err)
{
    *n = 0;
    if (f == NULL || json_is_null(f))
        return CP_OK;
    if (!json_is_object(f) || json_object_size(f) > AIPL_MAX_FILTERS)
        return CP_ERR(err, CP_EINVAL, "%s: \"filters\" must be an object of at most %d properties",
                      what, AIPL_MAX_FILTERS);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)f, k, v)
    {
        int indexed = 0;
        for (size_t i = 0; i < db->cfg.nindexed && !indexed; i++)
            indexed = !strcmp(db->cfg.indexed[i], k);
        if (!ident_ok(k) || strlen(k) > BEH_NAME_MAX)
            return CP_ERR(err, CP_EINVAL, "%s: filter property \"%.64s\" is not a property name",
                          what, k);
        if (!indexed)
            return CP_ERR(err, CP_EINVAL,
                          "%s: property \"%.64s\" is not indexed, so events cannot be filtered on "
                          "it: add it to the intake configuration's indexed_properties",
                          what, k);
        const char *s;
        size_t len;
        if (json_is_string(v)) {
            s = json_string_value(v);
            len = json_string_length(v);
        } else if (json_is_integer(v)) {
            len = (size_t)snprintf(store[*n], 64, "%lld", (long long)json_integer_value(v));
            s = store[*n];
        } else if (json_is_boolean(v)) {
            s = json_is_true(v) ? "true" : "false";
            len = strlen(s);
        } else {
            return CP_ERR(err, CP_EINVAL,
                          "%s: filter \"%.64s\" must be a string, an integer or a boolean", what,
                          k);
        }
        if (len == 0 || len > BEH_NAME_MAX)
            return CP_ERR(err, CP_EINVAL, "%s: filter \"%.64s\" has an empty or too long value",
                          what, k);
        props[*n] = (beh_prop_t){k, strlen(k), s, len};
        (*n)++;
    }
    return CP_OK;
}

/* Appends one did(...) >= k predicate. */
static cp_status did_text(buf_t *b, const char *event, const beh_prop_t *f, size_t nf, int32_t d0,
                          int32_t d1, uint64_t k)
{
    char b0[16], b1[16];
    cp_status rc = buf_printf(b, "did(");
    if (rc || (rc = quote(b, event)))
        return rc;
    for (size_t i = 0; i < nf; i++) {
        char v[BEH_NAME_MAX + 1];
        snprintf(v, sizeof v, "%.*s", (int)f[i].vlen, f[i].value);
        if ((rc = buf_printf(b, ", %.*s = ", (int)f[i].nlen, f[i].name)) || (rc = quote(b, v)))
            return rc;
    }
    return buf_printf(b, ", between %s and %s) >= %llu", val_day_format(d0, b0),
                      val_day_format(d1, b1), (unsigned long long)k);
}

typedef struct aipl_rules {
    const char *name;
    const char *events[4][AIPL_MAX_EVENTS]; /* loyalty: repeat events */
    size_t nevents[4];
    uint64_t repeat;
    const char *member_attr;
    beh_prop_t filters[AIPL_MAX_FILTERS];
    char fstore[AIPL_MAX_FILTERS][64];
    size_t nfilters;
    int32_t window_days, as_of;
    int as_of_from_data; /* no as_of given: the data's last day */
    int store;
} aipl_rules_t;

static cp_status events_list(const json_t *a, const char *what, const char **out, size_t *n,
                             cp_error_t *err)
{
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > AIPL_MAX_EVENTS)
        return CP_ERR(err, CP_EINVAL, "aipl: %s must be a list of 1 to %d event names", what,
                      AIPL_MAX_EVENTS);
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0 ||
            json_string_length(e) > BEH_NAME_MAX)
            return CP_ERR(err, CP_EINVAL, "aipl: %s[%zu] must be an event name", what, i);
        out[i] = json_string_value(e);
    }
    *n = json_array_size(a);
    return CP_OK;
}

static cp_status parse_rules(cp_db_t *db, const json_t *req, aipl_rules_t *r, cp_error_t *err)
{
    static const char *const fields[] = {"name",    "stages", "window_days", "as_of",
                                         "filters", "store",  NULL};
    static const char *const sfields[] = {"awareness", "interest", "purchase", "loyalty", NULL};
    static const char *const lfields[] = {"repeat_purchases", "or_attribute", "events", NULL};
    cp_status rc = ana_check_fields(req, "aipl", fields, err);
    if (rc)
        return rc;
    const json_t *v = json_object_get(req, "name");
    r->name = "default";
    if (v) {
        if (!json_is_string(v) ||
            tax_validate_path(json_string_value(v), json_string_length(v), NULL) ||
            strchr(json_string_value(v), '/') || json_string_length(v) > 64)
            return CP_ERR(err, CP_EINVAL,
                          "aipl: \"name\" must be one tag path segment such as \"brand_x\"");
        r->name = json_string_value(v);
    }
    const json_t *st = json_object_get(req, "stages");
    if (!json_is_object(st) || (rc = ana_check_fields(st, "aipl: stages", sfields, err)))
        return rc ? rc
                  : CP_ERR(err, CP_EINVAL,
                           "aipl: \"stages\" must be {\"awareness\": [events], \"interest\": "
                           "[...], \"purchase\": [...], \"loyalty\": {...}}");
    char what[64];
    for (int s = 0; s < 3; s++) {
        const json_t *a = json_object_get(st, stage_names[s]);
        snprintf(what, sizeof what, "stages.%s", stage_names[s]);
        if (a && (rc = events_list(a, what, r->events[s], &r->nevents[s], err)))
            return rc;
    }
    const json_t *lo = json_object_get(st, "loyalty");
    r->repeat = 2;
    if (lo) {
        if (!json_is_object(lo) ||
            (rc = ana_check_fields(lo, "aipl: stages.loyalty", lfields, err)))
            return rc ? rc
                      : CP_ERR(err, CP_EINVAL,
                               "aipl: stages.loyalty must be {\"repeat_purchases\": N, "
                               "\"or_attribute\": NAME}");
        const json_t *rp = json_object_get(lo, "repeat_purchases");
        if (rp && (!json_is_integer(rp) || json_integer_value(rp) < 1 ||
                   json_integer_value(rp) > 1000000))
            return CP_ERR(err, CP_EINVAL, "aipl: repeat_purchases must be 1 to 1000000");
        if (rp)
            r->repeat = (uint64_t)json_integer_value(rp);
        const json_t *ev = json_object_get(lo, "events");
        if (ev &&
            (rc = events_list(ev, "stages.loyalty.events", r->events[3], &r->nevents[3], err)))
            return rc;
        const json_t *oa = json_object_get(lo, "or_attribute");
        if (oa && !json_is_null(oa)) {
            const schema_attr_t *a =
                json_is_string(oa)
                    ? schema_find(&db->sch, json_string_value(oa), json_string_length(oa))
                    : NULL;
            if (a == NULL)
                return CP_ERR(err, CP_ENOTFOUND, "aipl: or_attribute: unknown attribute \"%.64s\"",
                              json_is_string(oa) ? json_string_value(oa) : "");
            if (a->type != CP_ATTR_BOOL)
                return CP_ERR(err, CP_EINVAL, "aipl: or_attribute \"%s\" must be a bool attribute",
                              a->name);
            r->member_attr = a->name;
        }
    }
    if (r->nevents[3] == 0) { /* repeat purchases of the purchase stage's events */
        memcpy(r->events[3], r->events[2], sizeof r->events[2]);
        r->nevents[3] = r->nevents[2];
    }
    if (r->nevents[0] + r->nevents[1] + r->nevents[2] == 0)
        return CP_ERR(err, CP_EINVAL, "aipl: the stages name no events");
    r->window_days = 90;
    v = json_object_get(req, "window_days");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 36600)
            return CP_ERR(err, CP_EINVAL, "aipl: \"window_days\" must be 1 to 36600");
        r->window_days = (int32_t)json_integer_value(v);
    }
    /* Without as_of: the data's own last day for a historical import. */
    r->as_of = val_default_day(db, &r->as_of_from_data);
    v = json_object_get(req, "as_of");
    if (v && !json_is_null(v)) {
        r->as_of_from_data = 0;
        if (!json_is_string(v) || val_day_parse(json_string_value(v), &r->as_of))
            return CP_ERR(err, CP_EINVAL, "aipl: \"as_of\" must be a date such as \"2024-06-30\"");
    }
    r->store = 1;
    v = json_object_get(req, "store");
    if (v) {
        if (!json_is_boolean(v))
            return CP_ERR(err, CP_EINVAL, "aipl: \"store\" must be true or false");
        r->store = json_is_true(v);
    }
    return val_filters_parse(db, json_object_get(req, "filters"), "aipl", r->filters, r->fstore,
                             &r->nfilters, err);
}

/* The expression of one stage into b ("" when nothing can match). */
static cp_status stage_expr(cp_db_t *db, const aipl_rules_t *r, int s, buf_t *b, json_t *unknown)
{
    int32_t d0 = r->as_of - r->window_days + 1;
    size_t terms = 0;
    cp_status rc = CP_OK;
    for (size_t i = 0; i < r->nevents[s] && rc == CP_OK; i++) {
        uint32_t series;
        const char *e = r->events[s][i];
        if (beh_resolve(db->beh, e, strlen(e), NULL, 0, &series) == CP_ENOTFOUND) {
            size_t j;
            json_t *x;
            int seen = 0;
            json_array_foreach(unknown, j, x) seen |= !strcmp(json_string_value(x), e);
            if (!seen && json_array_append_new(unknown, json_string(e)))
                return CP_ENOMEM;
            continue;
        }
        if (terms++ && (rc = buf_printf(b, " OR ")))
            break;
        rc = did_text(b, e, r->filters, r->nfilters, d0, r->as_of, s == 3 ? r->repeat : 1);
    }
    if (rc != CP_OK || s != 3 || r->member_attr == NULL)
        return rc;
    if (r->nfilters == 0)
        return buf_printf(b, "%s%s = true", terms ? " OR " : "", r->member_attr);
    /* With filters the rules are about one brand or category: membership
     * alone says nothing about it, so a member is loyal only after buying
     * it in the window (one purchase instead of repeat_purchases). */
    size_t n = 0;
    for (size_t i = 0; i < r->nevents[3] && rc == CP_OK; i++) {
        uint32_t series;
        const char *e = r->events[3][i];
        if (beh_resolve(db->beh, e, strlen(e), NULL, 0, &series) == CP_ENOTFOUND)
            continue;
        if (n++)
            rc = buf_printf(b, " OR ");
        else
            rc = buf_printf(b, "%s(%s = true AND (", terms ? " OR " : "", r->member_attr);
        if (rc)
            break;
        rc = did_text(b, e, r->filters, r->nfilters, d0, r->as_of, 1);
    }
    if (rc == CP_OK && n)
        rc = buf_printf(b, "))");
    return rc;
}

cp_status cp_aipl_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    json_t *req = NULL, *res = NULL, *unknown = json_array(), *stages = json_array(),
           *exprs = json_object(), *warnings = json_array();
    aipl_rules_t r;
    memset(&r, 0, sizeof r);
    roaring_bitmap_t *reach[4] = {0}, *cur[4] = {0};
    store_txn_t *txn = NULL;
    int locked = 0, touched = 0;
    int bad = 0; /* a report field could not be added: out of memory */
    buf_t b;
    buf_init(&b, AIPL_EXPR_MAX);
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc)
        goto out;
    if (unknown == NULL || stages == NULL || exprs == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    /* The rules name attributes: validate them under the lock. */
    if (json_is_false(json_object_get(req, "store")))
        rc = db_read_begin(db, err);
    else
        rc = db_write_begin(db, &txn, err);
    if (rc)
        goto out;
    locked = 1;
    if ((rc = parse_rules(db, req, &r, err)))
        goto out;
    for (int s = 0; s < 4; s++) {
        buf_reset(&b);
        expr_t *e = NULL;
        if ((rc = stage_expr(db, &r, s, &b, unknown))) {
            if (rc == CP_ENOMEM)
                rc = CP_ERR(err, rc, "aipl: out of memory building the %s expression",
                            stage_names[s]);
            else
                rc = CP_ERR(err, rc, "aipl: the %s expression is too long", stage_names[s]);
            goto out;
        }
        const char *text = b.len ? buf_cstr(&b) : "";
        bad |= json_object_set_new(exprs, stage_names[s], json_string(text));
        if (b.len == 0) {
            if ((reach[s] = roaring_bitmap_create()) == NULL) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
            continue;
        }
        if ((rc = db_parse_text(text, &e, err)) ||
            (rc = db_eval_tree_as_of(db, expr_root(e), r.as_of, &reach[s], err))) {
            error_prefix(err, "aipl: %s: ", stage_names[s]);
            expr_free(e);
            goto out;
        }
        expr_free(e);
    }
    /* Exclusive current stage: the highest reached. */
    roaring_bitmap_t *higher = roaring_bitmap_create();
    if (higher == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (int s = 3; s >= 0; s--) {
        cur[s] = roaring_bitmap_andnot(reach[s], higher);
        if (cur[s] == NULL) {
            roaring_bitmap_free(higher);
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        roaring_bitmap_or_inplace(higher, reach[s]);
    }
    uint64_t staged = roaring_bitmap_get_cardinality(higher);
    roaring_bitmap_free(higher);
    char path[TAX_MAX_PATH + 1];
    for (int s = 0; s < 4; s++) {
        uint64_t n = roaring_bitmap_get_cardinality(cur[s]);
        snprintf(path, sizeof path, "aipl/%s/%s", r.name, stage_names[s]);
        bad |= json_array_append_new(
            stages, json_pack("{s:s,s:s,s:s,s:I,s:f,s:I}", "stage", stage_names[s], "name",
                              stage_display[s], "tag", path, "users", (json_int_t)n, "share",
                              staged ? ana_round((double)n / (double)staged) : 0.0, "reached",
                              (json_int_t)roaring_bitmap_get_cardinality(reach[s])));
        if (!r.store)
            continue;
        uint32_t id;
        static const char *const desc[4] = {
            "AIPL: aware (exposed or viewed), not yet interested",
            "AIPL: interested (clicked, favourited, carted), not yet a buyer",
            "AIPL: purchased, not yet loyal", "AIPL: loyal (repeat purchases or membership)"};
        if ((rc = db_ensure_tag(db, txn, path, stage_display[s], desc[s], &id, &touched, err)))
            goto out;
        touched = 1;
        if ((rc = val_tag_set_members(db, id, cur[s]))) {
            rc = CP_ERR(err, rc, "out of memory setting AIPL tags");
            goto out;
        }
    }
    char b0[16], b1[16];
    res = json_pack("{s:s,s:{s:s,s:s},s:I,s:O,s:O,s:O,s:b}", "name", r.name, "window", "from",
                    val_day_format(r.as_of - r.window_days + 1, b0), "to",
                    val_day_format(r.as_of, b1), "staged_users", (json_int_t)staged, "stages",
                    stages, "expressions", exprs, "unknown_events", unknown, "stored", r.store);
    /* Checked before the commit: a report that lost a field must not say
     * CP_OK, and the tags are stored only with a whole report. */
    if (bad || res == NULL || warnings == NULL ||
        val_window_warn(db, r.as_of - r.window_days + 1, r.as_of, warnings) != CP_OK ||
        (staged == 0 && json_array_size(warnings) == 0 &&
         json_array_append_new(warnings,
                               json_string("no user reached a stage in the window (check the "
                                           "stage events and filters)"))) ||
        json_object_set(res, "warnings", warnings) ||
        (r.as_of_from_data && json_object_set_new(res, "as_of_from_data", json_true()))) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (r.store) {
        locked = 0;
        if ((rc = db_write_end(db, txn, err)))
            goto out;
    }
out:
    if (locked) {
        if (txn == NULL)
            db_read_end(db);
        else if (touched)
            rc = db_write_fail(db, txn, rc, err);
        else if (rc)
            db_write_abort(db, txn);
        else
            rc = db_write_end(db, txn, err);
    }
    if (rc == CP_OK) {
        if (json_object_set_new(res, "elapsed_ms",
                                json_real(ana_round((double)(time_mono_ns() - t0) / 1e6))))
            rc = CP_ERR(err, CP_ENOMEM, "aipl: out of memory building the report");
        else
            rc = db_json_out(res, out, err);
        res = NULL;
    }
    for (int s = 0; s < 4; s++) {
        index_bm_free(reach[s]);
        index_bm_free(cur[s]);
    }
    buf_free(&b);
    json_decref(res);
    json_decref(req);
    json_decref(unknown);
    json_decref(warnings);
    json_decref(stages);
    json_decref(exprs);
    return rc;
}
