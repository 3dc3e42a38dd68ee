/*
 * common.c — what the analytics reports share: request parsing, the sets
 * a request names (crowds and expressions), the minimum-count setting,
 * BSI minimum/maximum, and the settings API of crowdpack.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

cp_status ana_parse_request(const char *json, size_t len, json_t **out, cp_error_t *err)
{
    *out = NULL;
    if (json == NULL || len == 0) {
        *out = json_object();
        return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (len > ANA_REQUEST_MAX)
        return CP_ERR(err, CP_ELIMIT, "request is %zu bytes, longer than the limit of %u", len,
                      ANA_REQUEST_MAX);
    json_error_t je;
    json_t *j = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the request");
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "request: invalid JSON at line %d, column %d: %s", je.line,
                      je.column, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return CP_ERR(err, CP_EINVAL, "request: expected a JSON object");
    }
    *out = j;
    return CP_OK;
}

cp_status ana_check_fields(const json_t *obj, const char *what, const char *const *allowed,
                           cp_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        (void)v;
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], k) == 0;
        if (!ok) {
            buf_t b;
            buf_init(&b, 1024);
            for (size_t i = 0; allowed[i]; i++)
                buf_printf(&b, "%s\"%s\"", i ? ", " : "", allowed[i]);
            cp_status rc = CP_ERR(err, CP_EINVAL, "%s: unknown field \"%.64s\" (known: %s)", what,
                                  k, b.data ? buf_cstr(&b) : "");
            buf_free(&b);
            return rc;
        }
    }
    return CP_OK;
}

cp_status ana_get_uint(const json_t *obj, const char *field, uint64_t max, uint64_t *out,
                       cp_error_t *err)
{
    json_t *v = json_object_get(obj, field);
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return CP_ERR(err, CP_EINVAL, "field \"%s\": expected an integer from 0 to %llu", field,
                      (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return CP_OK;
}

/* ------------------------------------------------------------- sets */

static cp_status crowd_bitmap(cp_db_t *db, const char *name, const char *what,
                              roaring_bitmap_t **out, cp_error_t *err)
{
    const crowd_rec_t *c = crowd_set_find(&db->crowds, name);
    const roaring_bitmap_t *bm = c ? index_crowd(db->ix, c->id) : NULL;
    if (bm == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "%s: unknown crowd \"%.128s\"", what, name);
    /* Static crowds are snapshots: keep only users still alive. */
    *out = roaring_bitmap_and(bm, db->ix->universe);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}

cp_status ana_set_eval_locked(cp_db_t *db, const json_t *spec, const char *what,
                              roaring_bitmap_t **out, json_t **label, cp_error_t *err)
{
    return ana_set_eval_locked_as_of(db, spec, what, 0, out, label, err);
}

cp_status ana_set_eval_locked_as_of(cp_db_t *db, const json_t *spec, const char *what,
                                    int32_t default_day, roaring_bitmap_t **out, json_t **label,
                                    cp_error_t *err)
{
    *out = NULL;
    *label = NULL;
    cp_status rc = CP_OK;
    expr_t *e = NULL;
    char *text = NULL;
    const char *name = NULL;
    int32_t as_of_day = default_day;
    if (json_is_string(spec)) {
        name = json_string_value(spec);
    } else if (json_is_object(spec)) {
        static const char *const fields[] = {"crowd", "expression", "tree", "as_of", NULL};
        if ((rc = ana_check_fields(spec, what, fields, err)))
            return rc;
        json_t *c = json_object_get(spec, "crowd"), *x = json_object_get(spec, "expression"),
               *t = json_object_get(spec, "tree");
        if ((c != NULL) + (x != NULL) + (t != NULL) != 1)
            return CP_ERR(err, CP_EINVAL,
                          "%s: give exactly one of \"crowd\", \"expression\" or \"tree\"", what);
        const json_t *ao = json_object_get(spec, "as_of");
        if (ao != NULL && (c != NULL || !json_is_string(ao)))
            return CP_ERR(err, CP_EINVAL,
                          "%s: \"as_of\" is a date string and goes with an expression or tree",
                          what);
        if (ao != NULL && (rc = db_as_of_day(json_string_value(ao), &as_of_day, err))) {
            error_prefix(err, "%s: ", what);
            return rc;
        }
        if (c) {
            if (!json_is_string(c))
                return CP_ERR(err, CP_EINVAL, "%s: \"crowd\" must be a string", what);
            name = json_string_value(c);
        } else if (x) {
            if (!json_is_string(x))
                return CP_ERR(err, CP_EINVAL, "%s: \"expression\" must be a string", what);
            rc = db_parse_text(json_string_value(x), &e, err);
        } else {
            rc = expr_from_json(t, &e, err);
        }
        if (rc) {
            error_prefix(err, "%s: ", what);
            return rc;
        }
    } else {
        return CP_ERR(err, CP_EINVAL,
                      "%s: expected a crowd name or an object {\"crowd\"|\"expression\"|\"tree\"}",
                      what);
    }
    if (name) {
        if ((rc = crowd_bitmap(db, name, what, out, err)))
            return rc;
        *label = json_pack("{s:s}", "crowd", name);
    } else {
        roaring_bitmap_t *bm = NULL;
        rc = db_eval_tree_as_of(db, expr_root(e), as_of_day, &bm, err);
        if (rc) {
            error_prefix(err, "%s: ", what);
            goto out;
        }
        *out = bm;
        text = expr_to_text(expr_root(e));
        *label = json_pack("{s:s}", "expression", text ? text : "");
    }
    if (*label == NULL) {
        index_bm_free(*out);
        *out = NULL;
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    }
out:
    free(text);
    expr_free(e);
    return rc;
}

/* --------------------------------------------------------- settings */

cp_status ana_meta_get(cp_db_t *db, const char *key, char **out, cp_error_t *err)
{
    *out = NULL;
    store_txn_t *txn = NULL;
    cp_status rc = store_txn_begin(db->st, 0, &txn, err);
    if (rc)
        return rc;
    const void *v;
    size_t vl;
    rc = store_get(txn, STORE_META, key, strlen(key), &v, &vl, err);
    if (rc == CP_ENOTFOUND) {
        rc = CP_OK;
    } else if (rc == CP_OK) {
        *out = malloc(vl + 1);
        if (*out == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        } else {
            memcpy(*out, v, vl);
            (*out)[vl] = '\0';
        }
    }
    store_txn_abort(txn);
    return rc;
}

cp_status ana_min_count_locked(cp_db_t *db, uint64_t *out, cp_error_t *err)
{
    *out = ANA_DEFAULT_MIN_COUNT;
    store_txn_t *txn = NULL;
    cp_status rc = store_txn_begin(db->st, 0, &txn, err);
    if (rc)
        return rc;
    uint64_t v;
    rc = store_meta_get_u64(txn, ANA_META_MIN_COUNT, &v, err);
    if (rc == CP_OK)
        *out = v;
    else if (rc == CP_ENOTFOUND)
        rc = CP_OK;
    store_txn_abort(txn);
    return rc;
}

cp_status ana_min_count_request(cp_db_t *db, const json_t *req, uint64_t *out, cp_error_t *err)
{
    cp_status rc = ana_min_count_locked(db, out, err);
    uint64_t want = 0;
    if (rc == CP_OK && (rc = ana_get_uint(req, "min_count", ANA_MAX_MIN_COUNT, &want, err)) == 0 &&
        want > *out)
        *out = want;
    return rc;
}

cp_status cp_analytics_settings_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    uint64_t mc;
    rc = ana_min_count_locked(db, &mc, err);
    db_read_end(db);
    if (rc)
        return rc;
    return db_json_out(json_pack("{s:I}", "min_count", (json_int_t)mc), out, err);
}

cp_status cp_analytics_settings_set_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err)
{
    json_t *req = NULL;
    cp_status rc = ana_parse_request(json, len, &req, err);
    if (rc)
        return rc;
    static const char *const fields[] = {"min_count", NULL};
    uint64_t mc = UINT64_MAX;
    if ((rc = ana_check_fields(req, "settings", fields, err)) ||
        (rc = ana_get_uint(req, "min_count", ANA_MAX_MIN_COUNT, &mc, err)))
        goto out;
    if (mc == UINT64_MAX)
        goto out; /* nothing to change */
    store_txn_t *txn;
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    /* Only a setting changes: no memory is touched, a failure aborts. */
    if ((rc = store_meta_put_u64(txn, ANA_META_MIN_COUNT, mc, err))) {
        db_write_abort(db, txn);
        goto out;
    }
    rc = db_write_end(db, txn, err);
out:
    json_decref(req);
    return rc;
}

/* ------------------------------------------------------------ values */

cp_status ana_bsi_minmax(const bsi_t *b, const roaring_bitmap_t *among, int *found, int64_t *min,
                         int64_t *max)
{
    *found = 0;
    *min = *max = 0;
    cp_status rc = CP_OK;
    roaring_bitmap_t *ex =
        among ? roaring_bitmap_and(b->exists, among) : roaring_bitmap_copy(b->exists);
    roaring_bitmap_t *cand = NULL, *t = NULL;
    if (ex == NULL)
        return CP_ENOMEM;
    if (roaring_bitmap_is_empty(ex))
        goto out;
    *found = 1;
    int n = b->nslices;
    /* Offset binary (bsi.c): the top bit is !sign, then slices high to
     * low; the maximum keeps, bit by bit, the candidates with a 1. */
    for (int want_max = 1; want_max >= 0; want_max--) {
        index_bm_free(cand);
        cand = want_max ? roaring_bitmap_andnot(ex, b->sign) : roaring_bitmap_and(ex, b->sign);
        if (cand == NULL) {
            rc = CP_ENOMEM;
            goto out;
        }
        int negative = !want_max;
        if (roaring_bitmap_is_empty(cand)) {
            roaring_bitmap_free(cand);
            cand = roaring_bitmap_copy(ex);
            negative = want_max;
            if (cand == NULL) {
                rc = CP_ENOMEM;
                goto out;
            }
        }
        uint64_t u = 0;
        for (int i = n - 1; i >= 0; i--) {
            t = want_max ? roaring_bitmap_and(cand, b->slices[i])
                         : roaring_bitmap_andnot(cand, b->slices[i]);
            if (t == NULL) {
                rc = CP_ENOMEM;
                goto out;
            }
            int bit_one = want_max ? 1 : 0;
            if (!roaring_bitmap_is_empty(t)) {
                roaring_bitmap_free(cand);
                cand = t;
            } else {
                roaring_bitmap_free(t);
                bit_one = !bit_one;
            }
            t = NULL;
            if (bit_one)
                u |= UINT64_C(1) << i;
        }
        if (negative && n < 64)
            u |= ~UINT64_C(0) << n;
        if (want_max)
            *max = (int64_t)u;
        else
            *min = (int64_t)u;
    }
out:
    roaring_bitmap_free(ex);
    if (cand)
        roaring_bitmap_free(cand);
    return rc;
}

double ana_round(double v)
{
    if (v == 0 || !isfinite(v))
        return v;
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", v);
    return strtod(buf, NULL);
}

const char *ana_value_text(cp_attr_type t, int64_t v, char *buf, size_t cap)
{
    if (t == CP_ATTR_TIMESTAMP) {
        char ts[48];
        time_format(v, ts, sizeof ts);
        snprintf(buf, cap, "\"%s\"", ts);
    } else {
        snprintf(buf, cap, "%lld", (long long)v);
    }
    return buf;
}
