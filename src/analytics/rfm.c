/*
 * rfm.c — the RFM value model (docs/analytics.md "RFM").
 *
 * Inputs are three event measures (index/measure.h), by default those the
 * intake keeps for every purchase and refund:
 *   recency   "last_purchase" (last)      R = days from its UTC date to the
 *                                          reference date
 *   frequency "invoices"      (distinct)  F = distinct purchase invoices
 *   monetary  "net_amount"    (sum)       M = net amount in cents (refunds
 *                                          are negative amounts)
 * Customers are the users with a recency value (at least one purchase).
 * Scores: score(v) = 1 + floor(5 k / N) with k the customers strictly
 * worse than v (larger R, smaller F or M) among N customers, computed
 * from sorted copies by binary search, in exact integer arithmetic. A
 * dimension is high when its score exceeds the mean score (score * N >
 * sum of scores, no floating point). Eight exclusive segments become tags
 * ROOT/<segment> (default root "rfm") and the values and scores the int
 * attributes rfm_r, rfm_f, rfm_m, rfm_r_score, rfm_f_score, rfm_m_score,
 * all written in one engine write transaction; users who stopped being
 * customers lose their attributes and tags.
 *
 * The schedule (meta "analytics/rfm_schedule") lets a server recompute
 * every N hours with a stored request (cp_rfm_tick, called by the
 * server's scheduler thread).
 */
#include <stdlib.h>
#include <string.h>

#include "analytics/value.h"

#define RFM_META_SCHEDULE "analytics/rfm_schedule"
#define RFM_META_LAST "analytics/rfm_last_run"
#define RFM_MAX_DETAIL 1000000u

static const char *const seg_names[8] = {
    "important_value", "important_develop", "important_keep", "important_retain",
    "general_value",   "general_develop",   "general_keep",   "general_retain",
};
/* Display names: the eight classes as Chinese marketers name them
 * (重要价值客户 ... 一般挽留客户), index for index with seg_names. */
static const char *const seg_display[8] = {
    "重要价值客户", "重要发展客户", "重要保持客户", "重要挽留客户",
    "一般价值客户", "一般发展客户", "一般保持客户", "一般挽留客户",
};
static const char *const seg_desc[8] = {
    "RFM: recent, frequent, high value", "RFM: recent, infrequent, high value",
    "RFM: lapsed, frequent, high value", "RFM: lapsed, infrequent, high value",
    "RFM: recent, frequent, low value",  "RFM: recent, infrequent, low value",
    "RFM: lapsed, frequent, low value",  "RFM: lapsed, infrequent, low value",
};
static const char *const attr_names[6] = {"rfm_r",       "rfm_f",       "rfm_m",
                                          "rfm_r_score", "rfm_f_score", "rfm_m_score"};

typedef struct rfm_cust {
    uint32_t ord;
    int64_t v[3]; /* R days, F invoices, M cents */
    int score[3];
    int seg;
} rfm_cust_t;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Index of the first element >= v (lower) or > v (upper) in sorted s. */
static size_t bound(const int64_t *s, size_t n, int64_t v, int upper)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (upper ? s[mid] <= v : s[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Fixed point at `scale` decimals to cents (half away from zero). */
static int64_t to_cents(int64_t v, int scale)
{
    for (; scale < 2; scale++)
        v = v > INT64_MAX / 10 ? INT64_MAX : v < INT64_MIN / 10 ? INT64_MIN : v * 10;
    for (; scale > 2; scale--)
        v = v >= 0 ? (v + 5) / 10 : (v - 5) / 10;
    return v;
}

typedef struct rfm_req {
    const char *root;
    const char *meas[3]; /* recency, frequency, monetary */
    int store, detail;
    int has_as_of;
    int32_t as_of;
} rfm_req_t;

static cp_status parse_req(const json_t *req, rfm_req_t *r, cp_error_t *err)
{
    static const char *const fields[] = {"as_of", "store", "root", "detail", "measures", NULL};
    static const char *const mfields[] = {"recency", "frequency", "monetary", NULL};
    cp_status rc = ana_check_fields(req, "rfm", fields, err);
    if (rc)
        return rc;
    r->root = "rfm";
    r->meas[0] = "last_purchase";
    r->meas[1] = "invoices";
    r->meas[2] = "net_amount";
    r->store = 1;
    const json_t *v = json_object_get(req, "as_of");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || val_day_parse(json_string_value(v), &r->as_of))
            return CP_ERR(err, CP_EINVAL, "rfm: \"as_of\" must be a date such as \"2011-12-10\"");
        r->has_as_of = 1;
    }
    if ((v = json_object_get(req, "store")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return CP_ERR(err, CP_EINVAL, "rfm: \"store\" must be true or false");
        r->store = json_is_true(v);
    }
    if ((v = json_object_get(req, "detail")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return CP_ERR(err, CP_EINVAL, "rfm: \"detail\" must be true or false");
        r->detail = json_is_true(v);
    }
    if ((v = json_object_get(req, "root")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) + 20 > TAX_MAX_PATH ||
            tax_validate_path(json_string_value(v), json_string_length(v), err))
            return CP_ERR(err, CP_EINVAL, "rfm: \"root\" must be a tag path such as \"rfm\"");
        r->root = json_string_value(v);
    }
    if ((v = json_object_get(req, "measures")) && !json_is_null(v)) {
        if (!json_is_object(v) || (rc = ana_check_fields(v, "rfm: measures", mfields, err)))
            return rc ? rc
                      : CP_ERR(err, CP_EINVAL,
                               "rfm: \"measures\" must be {\"recency\":..., \"frequency\":..., "
                               "\"monetary\":...}");
        for (int i = 0; i < 3; i++) {
            const json_t *x = json_object_get(v, mfields[i]);
            if (x && !json_is_string(x))
                return CP_ERR(err, CP_EINVAL, "rfm: measures.%s must be a measure name",
                              mfields[i]);
            if (x)
                r->meas[i] = json_string_value(x);
        }
    }
    return CP_OK;
}

/* Reads the customers' R, F, M from the measures (lock held). */
static cp_status gather(cp_db_t *db, const rfm_req_t *r, int32_t *ref_day, rfm_cust_t **out,
                        size_t *n, cp_error_t *err)
{
    static const meas_kind want[3] = {MEAS_LAST, MEAS_DISTINCT, MEAS_SUM};
    static const char *const what[3] = {"recency", "frequency", "monetary"};
    int idx[3], scale = 2;
    *out = NULL;
    *n = 0;
    for (int i = 0; i < 3; i++) {
        meas_kind k;
        int sc;
        idx[i] = db->meas ? meas_find(db->meas, r->meas[i], &k, &sc) : -1;
        if (idx[i] < 0)
            return CP_ERR(err, CP_ENOTFOUND,
                          "rfm: no event measure \"%s\" for %s (see the measures configuration)",
                          r->meas[i], what[i]);
        if (k != want[i])
            return CP_ERR(err, CP_EINVAL, "rfm: measure \"%s\" is a %s; %s needs a %s measure",
                          r->meas[i], meas_kind_name(k), what[i], meas_kind_name(want[i]));
        if (i == 2)
            scale = sc;
    }
    const roaring_bitmap_t *users = meas_users(db->meas);
    uint64_t cap = roaring_bitmap_get_cardinality(users);
    rfm_cust_t *c = cap ? malloc((size_t)cap * sizeof *c) : NULL;
    if (cap && c == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    int32_t last_day = INT32_MIN;
    size_t k = 0;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(users, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        uint32_t o = it.current_value;
        meas_value_t v;
        if (!roaring_bitmap_contains(db->ix->universe, o) || !meas_get(db->meas, idx[0], o, &v))
            continue;
        c[k].ord = o;
        c[k].v[0] = beh_day_of(v.v); /* the date for now; R below */
        if (c[k].v[0] > last_day)
            last_day = (int32_t)c[k].v[0];
        c[k].v[1] = meas_get(db->meas, idx[1], o, &v) ? v.v : 0;
        c[k].v[2] = meas_get(db->meas, idx[2], o, &v) ? to_cents(v.v, scale) : 0;
        k++;
    }
    /* The reference date: given, or the day after the last event. */
    int32_t first, last;
    if (r->has_as_of) {
        *ref_day = r->as_of;
        if (k && last_day > r->as_of) {
            char b1[16], b2[16];
            free(c);
            return CP_ERR(err, CP_EINVAL,
                          "rfm: \"as_of\" %s is before the last purchase (%s); measures are "
                          "all-time, so the reference date must be on or after it",
                          val_day_format(r->as_of, b1), val_day_format(last_day, b2));
        }
    } else if (db->beh && beh_day_range(db->beh, &first, &last)) {
        *ref_day = (last > last_day ? last : last_day) + 1;
    } else {
        *ref_day = k ? last_day + 1 : (int32_t)(time_now_ms() / 86400000);
    }
    for (size_t i = 0; i < k; i++)
        c[i].v[0] = *ref_day - c[i].v[0];
    *out = c;
    *n = k;
    return CP_OK;
}

/* Scores and segments; mean[] gets each dimension's mean score. */
static cp_status score(rfm_cust_t *c, size_t n, double mean[3])
{
    mean[0] = mean[1] = mean[2] = 0;
    if (n == 0)
        return CP_OK;
    int64_t *s = malloc(n * sizeof *s);
    if (s == NULL)
        return CP_ENOMEM;
    uint64_t sum[3] = {0};
    for (int d = 0; d < 3; d++) {
        for (size_t i = 0; i < n; i++)
            s[i] = c[i].v[d];
        qsort(s, n, sizeof *s, cmp_i64);
        for (size_t i = 0; i < n; i++) {
            /* strictly worse: larger R (recency), smaller F and M */
            uint64_t worse = d == 0 ? n - bound(s, n, c[i].v[d], 1) : bound(s, n, c[i].v[d], 0);
            c[i].score[d] = 1 + (int)(5 * worse / n);
            sum[d] += (uint64_t)c[i].score[d];
        }
        mean[d] = n ? (double)sum[d] / (double)n : 0;
    }
    for (size_t i = 0; i < n; i++) {
        int high[3];
        for (int d = 0; d < 3; d++)
            high[d] = (uint64_t)c[i].score[d] * n > sum[d];
        c[i].seg = (!high[2]) * 4 + (!high[0]) * 2 + (!high[1]);
    }
    free(s);
    return CP_OK;
}

/* Writes tags and attributes (write lock, txn open). */
static cp_status store_rfm(cp_db_t *db, store_txn_t *txn, const rfm_req_t *r, const rfm_cust_t *c,
                           size_t n, int *touched, cp_error_t *err)
{
    cp_status rc = CP_OK;
    roaring_bitmap_t *seg[8] = {0}, *cust = roaring_bitmap_create();
    uint32_t tag[8], attr[6];
    char path[TAX_MAX_PATH + 1];
    if (cust == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    for (int s = 0; s < 8; s++) {
        snprintf(path, sizeof path, "%s/%s", r->root, seg_names[s]);
        if ((rc = db_ensure_tag(db, txn, path, seg_display[s], seg_desc[s], &tag[s], touched, err)))
            goto out;
        if ((seg[s] = roaring_bitmap_create()) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
    }
    for (int a = 0; a < 6; a++)
        if ((rc = val_ensure_int_attr(db, txn, attr_names[a], &attr[a], touched, err)))
            goto out;
    *touched = 1;
    for (size_t i = 0; i < n; i++) {
        roaring_bitmap_add(seg[c[i].seg], c[i].ord);
        roaring_bitmap_add(cust, c[i].ord);
        for (int d = 0; d < 3; d++)
            if ((rc = index_set_int(db->ix, attr[d], c[i].ord, c[i].v[d])) ||
                (rc = index_set_int(db->ix, attr[3 + d], c[i].ord, c[i].score[d]))) {
                rc = CP_ERR(err, rc, "out of memory setting RFM attributes");
                goto out;
            }
    }
    for (int s = 0; s < 8; s++)
        if ((rc = val_tag_set_members(db, tag[s], seg[s]))) {
            rc = CP_ERR(err, rc, "out of memory setting RFM tags");
            goto out;
        }
    /* Users who are no longer customers lose their RFM values. */
    for (int a = 0; a < 6; a++) {
        const idx_attr_t *ia = index_attr(db->ix, attr[a]);
        if (ia == NULL || ia->bsi == NULL)
            continue;
        roaring_bitmap_t *gone = roaring_bitmap_andnot(ia->bsi->exists, cust);
        if (gone == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        roaring_uint32_iterator_t it;
        roaring_init_iterator(gone, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            index_clear(db->ix, attr[a], it.current_value);
        roaring_bitmap_free(gone);
    }
out:
    for (int s = 0; s < 8; s++)
        index_bm_free(seg[s]);
    roaring_bitmap_free(cust);
    return rc;
}

static json_t *report(const rfm_req_t *r, int32_t ref_day, const rfm_cust_t *c, size_t n,
                      const double mean[3], store_txn_t *txn)
{
    char b[16];
    json_t *segs = json_array(), *dims = json_object();
    int bad = 0; /* a field could not be added: out of memory */
    uint64_t cnt[8] = {0};
    double sums[8][3] = {{0}};
    for (size_t i = 0; i < n; i++) {
        cnt[c[i].seg]++;
        for (int d = 0; d < 3; d++)
            sums[c[i].seg][d] += (double)c[i].v[d];
    }
    for (int s = 0; s < 8; s++) {
        char path[TAX_MAX_PATH + 1];
        snprintf(path, sizeof path, "%s/%s", r->root, seg_names[s]);
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:f}", "segment", seg_names[s], "name",
                              seg_display[s], "tag", path, "customers", (json_int_t)cnt[s], "share",
                              n ? ana_round((double)cnt[s] / (double)n) : 0.0);
        if (cnt[s])
            bad |= json_object_set_new(o, "mean",
                                       json_pack("{s:f,s:f,s:f}", "r",
                                                 ana_round(sums[s][0] / (double)cnt[s]), "f",
                                                 ana_round(sums[s][1] / (double)cnt[s]), "m_cents",
                                                 ana_round(sums[s][2] / (double)cnt[s])));
        bad |= json_array_append_new(segs, o);
    }
    /* Per dimension and score: the range of values it covers. */
    static const char *const dn[3] = {"r", "f", "m"};
    for (int d = 0; d < 3; d++) {
        int64_t lo[6], hi[6];
        uint64_t k[6] = {0};
        for (size_t i = 0; i < n; i++) {
            int sc = c[i].score[d];
            if (k[sc] == 0 || c[i].v[d] < lo[sc])
                lo[sc] = c[i].v[d];
            if (k[sc] == 0 || c[i].v[d] > hi[sc])
                hi[sc] = c[i].v[d];
            k[sc]++;
        }
        json_t *sc = json_array();
        for (int s = 1; s <= 5; s++)
            if (k[s])
                bad |= json_array_append_new(
                    sc, json_pack("{s:i,s:I,s:I,s:I}", "score", s, "customers", (json_int_t)k[s],
                                  "min", (json_int_t)lo[s], "max", (json_int_t)hi[s]));
        bad |= json_object_set_new(
            dims, dn[d], json_pack("{s:f,s:o}", "mean_score", ana_round(mean[d]), "scores", sc));
    }
    json_t *o = json_pack("{s:s,s:I,s:o,s:o,s:b,s:{s:s,s:s,s:s}}", "as_of",
                          val_day_format(ref_day, b), "customers", (json_int_t)n, "segments", segs,
                          "dimensions", dims, "stored", r->store, "measures", "recency", r->meas[0],
                          "frequency", r->meas[1], "monetary", r->meas[2]);
    if (o && r->detail) {
        json_t *rows = json_array();
        for (size_t i = 0; i < n && i < RFM_MAX_DETAIL; i++) {
            char id[USERS_MAX_ID + 8];
            bad |= json_array_append_new(
                rows,
                json_pack("{s:s,s:I,s:I,s:I,s:i,s:i,s:i,s:s}", "user",
                          val_user_id(txn, c[i].ord, id, sizeof id), "r", (json_int_t)c[i].v[0],
                          "f", (json_int_t)c[i].v[1], "m", (json_int_t)c[i].v[2], "r_score",
                          c[i].score[0], "f_score", c[i].score[1], "m_score", c[i].score[2],
                          "segment", seg_names[c[i].seg]));
        }
        bad |= json_object_set_new(o, "users", rows);
    }
    if (bad) {
        /* A report that lost a field is no report: the caller says CP_ENOMEM. */
        json_decref(o);
        return NULL;
    }
    return o;
}

cp_status cp_rfm_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    json_t *req = NULL, *res = NULL;
    rfm_req_t r = {0};
    rfm_cust_t *c = NULL;
    size_t n = 0;
    store_txn_t *txn = NULL;
    int touched = 0, locked = 0;
    int32_t ref_day = 0;
    double mean[3];
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc || (rc = parse_req(req, &r, err)))
        goto out;
    if (r.store) {
        if ((rc = db_write_begin(db, &txn, err)))
            goto out;
    } else {
        if ((rc = db_read_begin(db, err)))
            goto out;
        if ((rc = store_txn_begin(db->st, 0, &txn, err))) {
            db_read_end(db);
            goto out;
        }
    }
    locked = 1;
    if ((rc = gather(db, &r, &ref_day, &c, &n, err)) ||
        (rc = score(c, n, mean) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK))
        goto out;
    if (r.store && (rc = store_rfm(db, txn, &r, c, n, &touched, err)))
        goto out;
    if ((res = report(&r, ref_day, c, n, mean, txn)) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (r.store) {
        int64_t now = time_now_ms();
        if ((rc = store_meta_put_u64(txn, RFM_META_LAST, (uint64_t)now, err)))
            goto out;
        locked = 0;
        if ((rc = db_write_end(db, txn, err)))
            goto out;
    }
out:
    if (locked) {
        if (!r.store) {
            store_txn_abort(txn);
            db_read_end(db);
        } else if (touched) {
            rc = db_write_fail(db, txn, rc, err);
        } else {
            db_write_abort(db, txn);
        }
    }
    if (rc == CP_OK) {
        if (json_object_set_new(res, "elapsed_ms",
                                json_real(ana_round((double)(time_mono_ns() - t0) / 1e6))))
            rc = CP_ERR(err, CP_ENOMEM, "rfm: out of memory building the report");
        else
            rc = db_json_out(res, out, err);
        res = NULL;
    }
    json_decref(res);
    json_decref(req);
    free(c);
    return rc;
}

/* ------------------------------------------------------------- schedule */

cp_status cp_rfm_schedule_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    char *s = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    rc = ana_meta_get(db, RFM_META_SCHEDULE, &s, err);
    uint64_t last = 0;
    store_txn_t *txn = NULL;
    if (rc == CP_OK && (rc = store_txn_begin(db->st, 0, &txn, err)) == CP_OK) {
        if (store_meta_get_u64(txn, RFM_META_LAST, &last, NULL) != CP_OK)
            last = 0;
        store_txn_abort(txn);
    }
    db_read_end(db);
    if (rc)
        return rc;
    json_error_t je;
    json_t *j =
        s ? json_loads_checked(s, 0, &je) : json_pack("{s:i,s:{}}", "every_hours", 0, "request");
    int oom = s == NULL || json_is_oom(&je);
    free(s);
    if (j == NULL)
        return oom ? CP_ERR(err, CP_ENOMEM, "out of memory reading the RFM schedule")
                   : CP_ERR(err, CP_EIO, "corrupt RFM schedule setting");
    if (last) {
        char b[48];
        time_format((int64_t)(last / 1000), b, sizeof b);
        if (json_object_set_new(j, "last_run", json_string(b))) {
            json_decref(j);
            return CP_ERR(err, CP_ENOMEM, "rfm: out of memory building the schedule");
        }
    }
    return db_json_out(j, out, err);
}

cp_status cp_rfm_schedule_set_json(cp_db_t *db, const char *json, size_t len, char **out,
                                   cp_error_t *err)
{
    if (out)
        *out = NULL;
    json_t *req = NULL;
    cp_status rc = ana_parse_request(json, len, &req, err);
    if (rc)
        return rc;
    static const char *const fields[] = {"every_hours", "request", NULL};
    uint64_t hours = 0;
    rfm_req_t r = {0};
    json_t *rq = json_object_get(req, "request");
    if ((rc = ana_check_fields(req, "rfm schedule", fields, err)) ||
        (rc = ana_get_uint(req, "every_hours", 24 * 366, &hours, err)))
        goto out;
    if (rq && !json_is_object(rq)) {
        rc = CP_ERR(err, CP_EINVAL, "rfm schedule: \"request\" must be an RFM request object");
        goto out;
    }
    if (rq && (rc = parse_req(rq, &r, err)))
        goto out;
    if (rq && (json_object_get(rq, "as_of") || json_is_false(json_object_get(rq, "store")))) {
        rc = CP_ERR(err, CP_EINVAL,
                    "rfm schedule: a scheduled run stores its results for the day after the last "
                    "event: leave \"as_of\" and \"store\" out");
        goto out;
    }
    json_t *save = json_pack("{s:I,s:O}", "every_hours", (json_int_t)hours, "request",
                             rq ? rq : json_object());
    char *s = save ? json_dumps_checked(save, JSON_COMPACT) : NULL;
    json_decref(save);
    if (s == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    store_txn_t *txn;
    if ((rc = db_write_begin(db, &txn, err)) == CP_OK) {
        /* Only a setting changes: a failure aborts. */
        if ((rc = store_put(txn, STORE_META, RFM_META_SCHEDULE, strlen(RFM_META_SCHEDULE), s,
                            strlen(s), err)))
            db_write_abort(db, txn);
        else
            rc = db_write_end(db, txn, err);
    }
    free(s);
    if (rc == CP_OK && out)
        rc = cp_rfm_schedule_json(db, out, err);
out:
    json_decref(req);
    return rc;
}

cp_status cp_rfm_tick(cp_db_t *db, int64_t now_ms, int *ran, cp_error_t *err)
{
    *ran = 0;
    char *s = NULL;
    uint64_t last = 0;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    store_txn_t *txn = NULL;
    rc = ana_meta_get(db, RFM_META_SCHEDULE, &s, err);
    if (rc == CP_OK && (rc = store_txn_begin(db->st, 0, &txn, err)) == CP_OK) {
        if (store_meta_get_u64(txn, RFM_META_LAST, &last, NULL) != CP_OK)
            last = 0;
        store_txn_abort(txn);
    }
    db_read_end(db);
    if (rc || s == NULL) {
        free(s);
        return rc;
    }
    json_t *j = json_loads_checked(s, 0, NULL);
    free(s);
    json_int_t hours = json_integer_value(json_object_get(j, "every_hours"));
    if (j == NULL || hours <= 0 || (last && now_ms - (int64_t)last < hours * 3600000)) {
        json_decref(j);
        return CP_OK;
    }
    char *body = json_dumps_checked(json_object_get(j, "request"), JSON_COMPACT);
    json_decref(j);
    if (body == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    char *res = NULL;
    rc = cp_rfm_json(db, body, strlen(body), &res, err);
    free(body);
    cp_free(res);
    if (rc == CP_OK)
        *ran = 1;
    return rc;
}
