/*
 * tiers.c — member tiers (会员等级) on a points attribute, kept as a
 * database setting (STORE_META "analytics/tiers", the canonical JSON), with
 * counts per tier and the upgrade nudge: members within N points of the
 * next tier, as an expression that can be saved as a crowd.
 *
 * Tier i holds the members with min_i <= points < min_{i+1} (the last
 * tier has no upper end); members with points below the first minimum are
 * "below". A nudge toward tier t covers points in
 * [max(min_t - N, min_{t-1}), min_t - 1]: within N points, and not already
 * in a lower target's range (the ranges never overlap, so the total count
 * is their sum).
 */
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

#define TIERS_MAX 32
#define TIER_NAME_MAX 64

typedef struct tiers {
    const schema_attr_t *attr;
    const bsi_t *bsi;
    size_t n;
    char name[TIERS_MAX][TIER_NAME_MAX + 1];
    int64_t min[TIERS_MAX];
} tiers_t;

/* Tier names: [a-z0-9_-] and letters of any script (白银, 黄金), the rule
 * of tag slugs. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TIER_NAME_MAX || !utf8_valid(s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        size_t w = tax_word_char(s + i, n - i);
        if (w > 0) {
            i += w - 1;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Validates a configuration against the schema (read lock held). */
static cp_status tiers_parse(cp_db_t *db, const json_t *j, tiers_t *t, cp_error_t *err)
{
    static const char *const fields[] = {"attribute", "tiers", NULL};
    static const char *const tfields[] = {"name", "min", NULL};
    memset(t, 0, sizeof *t);
    cp_status rc = ana_check_fields(j, "tiers", fields, err);
    if (rc)
        return rc;
    const json_t *a = json_object_get(j, "attribute"), *arr = json_object_get(j, "tiers");
    if (!json_is_string(a))
        return CP_ERR(err, CP_EINVAL,
                      "tiers: field \"attribute\" (the points attribute) is required");
    const char *an = json_string_value(a);
    t->attr = schema_find(&db->sch, an, strlen(an));
    if (t->attr == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "tiers: unknown attribute \"%.64s\"", an);
    if (t->attr->type != CP_ATTR_INT)
        return CP_ERR(err, CP_ETYPE, "tiers: attribute \"%s\" is %s; points must be an int", an,
                      cp_attr_type_name(t->attr->type));
    const idx_attr_t *ia = index_attr(db->ix, t->attr->id);
    t->bsi = ia ? ia->bsi : NULL;
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > TIERS_MAX)
        return CP_ERR(err, CP_EINVAL, "tiers: field \"tiers\" must be an array of 1 to %d tiers",
                      TIERS_MAX);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *e = json_array_get(arr, i);
        char what[32];
        snprintf(what, sizeof what, "tiers[%zu]", i);
        if (!json_is_object(e))
            return CP_ERR(err, CP_EINVAL, "%s: expected {\"name\": ..., \"min\": ...}", what);
        if ((rc = ana_check_fields(e, what, tfields, err)))
            return rc;
        const json_t *nm = json_object_get(e, "name"), *mn = json_object_get(e, "min");
        if (!json_is_string(nm) || !name_ok(json_string_value(nm)))
            return CP_ERR(err, CP_EINVAL,
                          "%s: \"name\" must be 1 to %d bytes of [a-z0-9_-] or letters of any "
                          "script",
                          what, TIER_NAME_MAX);
        if (!json_is_integer(mn))
            return CP_ERR(err, CP_EINVAL, "%s: \"min\" must be an integer", what);
        int64_t m = json_integer_value(mn);
        if (m <= INT64_MIN / 2 || m >= INT64_MAX / 2)
            return CP_ERR(err, CP_EINVAL, "%s: \"min\" is out of range", what);
        if (i > 0 && m <= t->min[i - 1])
            return CP_ERR(err, CP_EINVAL,
                          "%s: \"min\" %lld must be greater than the previous tier's %lld", what,
                          (long long)m, (long long)t->min[i - 1]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(t->name[k], json_string_value(nm)) == 0)
                return CP_ERR(err, CP_EINVAL, "%s: name \"%s\" is used twice", what, t->name[k]);
        snprintf(t->name[i], sizeof t->name[i], "%s", json_string_value(nm));
        t->min[i] = m;
        t->n = i + 1;
    }
    return CP_OK;
}

/* Users whose points lie in [lo, hi]. */
static cp_status range_count(const tiers_t *t, int64_t lo, int64_t hi, uint64_t *out)
{
    *out = 0;
    if (t->bsi == NULL || lo > hi)
        return CP_OK;
    roaring_bitmap_t *bm = bsi_range(t->bsi, lo, hi);
    if (bm == NULL)
        return CP_ENOMEM;
    *out = roaring_bitmap_get_cardinality(bm);
    roaring_bitmap_free(bm);
    return CP_OK;
}

static json_t *count_json(uint64_t v, uint64_t min_count)
{
    return v < min_count ? json_null() : json_integer((json_int_t)v);
}

static char *range_expr(const tiers_t *t, int64_t lo, int64_t hi)
{
    char *s = NULL;
    int r = hi == INT64_MAX ? asprintf(&s, "%s >= %lld", t->attr->name, (long long)lo)
                            : asprintf(&s, "%s BETWEEN %lld AND %lld", t->attr->name, (long long)lo,
                                       (long long)hi);
    return r < 0 ? NULL : s;
}

/* The report of a configuration: the tiers with counts (read lock held). */
static cp_status tiers_report(cp_db_t *db, const tiers_t *t, json_t **out, cp_error_t *err)
{
    uint64_t mc;
    cp_status rc = ana_min_count_locked(db, &mc, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    int bad = 0; /* a field could not be added: out of memory */
    uint64_t with = t->bsi ? roaring_bitmap_get_cardinality(t->bsi->exists) : 0, below = 0;
    if ((rc = range_count(t, INT64_MIN, t->min[0] - 1, &below)))
        goto fail;
    for (size_t i = 0; i < t->n; i++) {
        int64_t hi = i + 1 < t->n ? t->min[i + 1] - 1 : INT64_MAX;
        uint64_t c;
        if ((rc = range_count(t, t->min[i], hi, &c)))
            goto fail;
        char *ex = range_expr(t, t->min[i], hi);
        json_t *o =
            json_pack("{s:s,s:I,s:o,s:o,s:s?}", "name", t->name[i], "min", (json_int_t)t->min[i],
                      "max", hi == INT64_MAX ? json_null() : json_integer(hi), "members",
                      count_json(c, mc), "expression", ex);
        free(ex);
        if (c < mc)
            bad |= json_object_set_new(o, "suppressed", json_true());
        bad |= json_array_append_new(arr, o);
    }
    if (bad) {
        json_decref(arr);
        return CP_ERR(err, CP_ENOMEM, "tiers: out of memory building the report");
    }
    *out = json_pack("{s:s,s:o,s:o,s:o,s:I}", "attribute", t->attr->name, "tiers", arr,
                     "members_with_points", count_json(with, mc), "below_first_tier",
                     count_json(below, mc), "min_count", (json_int_t)mc);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
fail:
    json_decref(arr);
    return CP_ERR(err, rc, "out of memory counting tiers");
}

/* Loads the stored configuration (read lock held); CP_ENOTFOUND if none. */
static cp_status tiers_load(cp_db_t *db, tiers_t *t, cp_error_t *err)
{
    char *text = NULL;
    cp_status rc = ana_meta_get(db, ANA_META_TIERS, &text, err);
    if (rc)
        return rc;
    if (text == NULL)
        return CP_ERR(err, CP_ENOTFOUND,
                      "no member tiers are configured; set them with PUT /v1/tiers or "
                      "`crowdpack tiers set`");
    json_error_t je;
    json_t *j = json_loads_checked(text, 0, &je);
    free(text);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading tier settings");
    if (j == NULL)
        return CP_ERR(err, CP_EIO, "stored tier settings are corrupt: %s", je.text);
    rc = tiers_parse(db, j, t, err);
    json_decref(j);
    return rc;
}

cp_status cp_tiers_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    tiers_t *t = malloc(sizeof *t);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    json_t *rep = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc == CP_OK) {
        if ((rc = tiers_load(db, t, err)) == CP_OK)
            rc = tiers_report(db, t, &rep, err);
        db_read_end(db);
    }
    free(t);
    if (rc)
        return rc;
    return db_json_out(rep, out, err);
}

cp_status cp_tiers_set_json(cp_db_t *db, const char *json, size_t len, char **out, cp_error_t *err)
{
    if (out)
        *out = NULL;
    json_t *req = NULL, *canon = NULL;
    char *text = NULL;
    tiers_t *t = malloc(sizeof *t);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = ana_parse_request(json, len, &req, err);
    if (rc)
        goto out;
    store_txn_t *txn;
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    /* Validation and the write under one lock: the schema cannot change
     * in between. Only a setting is written: failures abort cleanly. */
    if ((rc = tiers_parse(db, req, t, err))) {
        db_write_abort(db, txn);
        goto out;
    }
    canon = json_pack("{s:s,s:[]}", "attribute", t->attr->name, "tiers");
    int bad = 0; /* a tier could not be added: the setting would lose it */
    for (size_t i = 0; canon && i < t->n; i++)
        bad |= json_array_append_new(
            json_object_get(canon, "tiers"),
            json_pack("{s:s,s:I}", "name", t->name[i], "min", (json_int_t)t->min[i]));
    text = canon && !bad ? json_dumps_checked(canon, JSON_COMPACT) : NULL;
    if (text == NULL) {
        db_write_abort(db, txn);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = store_put(txn, STORE_META, ANA_META_TIERS, strlen(ANA_META_TIERS), text, strlen(text),
                        err))) {
        db_write_abort(db, txn);
        goto out;
    }
    if ((rc = db_write_end(db, txn, err)))
        goto out;
    if (out)
        rc = cp_tiers_json(db, out, err);
out:
    free(text);
    free(t);
    json_decref(canon);
    json_decref(req);
    return rc;
}

cp_status cp_tiers_nudge_json(cp_db_t *db, const char *request, size_t len, char **out,
                              cp_error_t *err)
{
    static const char *const fields[] = {"within", "tiers", "min_count", NULL};
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    json_t *req = NULL, *parts = NULL, *res = NULL;
    buf_t ex;
    buf_init(&ex, CP_EXPR_MAX_LEN);
    int locked = 0;
    int bad = 0; /* a part could not be added: out of memory */
    uint64_t within = 0, mc = 0, total = 0;
    tiers_t *t = malloc(sizeof *t);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc)
        goto out;
    if ((rc = ana_check_fields(req, "nudge", fields, err)) ||
        (rc = ana_get_uint(req, "within", (uint64_t)INT64_MAX / 4, &within, err)))
        goto out;
    if (within == 0) {
        rc = CP_ERR(err, CP_EINVAL, "nudge: field \"within\" (points, at least 1) is required");
        goto out;
    }
    const json_t *want = json_object_get(req, "tiers");
    if (want && !json_is_null(want) && !json_is_array(want)) {
        rc = CP_ERR(err, CP_EINVAL, "nudge: \"tiers\" must be an array of tier names");
        goto out;
    }
    if ((rc = db_read_begin(db, err)))
        goto out;
    locked = 1;
    if ((rc = tiers_load(db, t, err)) || (rc = ana_min_count_request(db, req, &mc, err)))
        goto out;
    uint8_t target[TIERS_MAX] = {0};
    if (want && json_is_array(want)) {
        for (size_t i = 0; i < json_array_size(want); i++) {
            const json_t *w = json_array_get(want, i);
            size_t k = 0;
            while (k < t->n &&
                   !(json_is_string(w) && strcmp(t->name[k], json_string_value(w)) == 0))
                k++;
            if (k == t->n) {
                rc = CP_ERR(err, CP_ENOTFOUND, "nudge: \"tiers\"[%zu]: no tier named \"%.64s\"", i,
                            json_is_string(w) ? json_string_value(w) : "?");
                goto out;
            }
            target[k] = 1;
        }
    } else {
        memset(target, 1, sizeof target);
    }
    parts = json_array();
    if (parts == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (!target[i])
            continue;
        int64_t hi = t->min[i] - 1;
        int64_t lo = t->min[i] - (int64_t)within;
        if (i > 0 && lo < t->min[i - 1])
            lo = t->min[i - 1];
        if (lo > hi)
            continue;
        uint64_t c;
        if ((rc = range_count(t, lo, hi, &c))) {
            rc = CP_ERR(err, rc, "out of memory");
            goto out;
        }
        total += c;
        char *e = range_expr(t, lo, hi);
        if (e == NULL || (ex.len && buf_append(&ex, " OR ", 4)) || buf_append(&ex, e, strlen(e))) {
            free(e);
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        json_t *o = json_pack("{s:s,s:s?,s:I,s:I,s:s,s:o}", "tier", t->name[i], "from",
                              i > 0 ? t->name[i - 1] : NULL, "min", (json_int_t)lo, "max",
                              (json_int_t)hi, "expression", e, "members", count_json(c, mc));
        free(e);
        if (c < mc)
            bad |= json_object_set_new(o, "suppressed", json_true());
        bad |= json_array_append_new(parts, o);
    }
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "tiers: out of memory building the nudge report");
        goto out;
    }
    res = json_pack("{s:s,s:I,s:s,s:o,s:o,s:I}", "attribute", t->attr->name, "within",
                    (json_int_t)within, "expression", ex.len ? buf_cstr(&ex) : "", "members",
                    count_json(total, mc), "parts", parts, "min_count", (json_int_t)mc);
    parts = NULL;
    if (res == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (total < mc && json_object_set_new(res, "suppressed", json_true())) {
        rc = CP_ERR(err, CP_ENOMEM, "tiers: out of memory building the nudge report");
        goto out;
    }
    db_read_end(db);
    locked = 0;
    rc = db_json_out(res, out, err);
    res = NULL;
out:
    if (locked)
        db_read_end(db);
    buf_free(&ex);
    free(t);
    json_decref(parts);
    json_decref(res);
    json_decref(req);
    return rc;
}
