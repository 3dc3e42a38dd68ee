/*
 * insight.c — cp_insight_json: share and TGI of a crowd against a
 * baseline for every tag and every attribute value or bucket.
 *
 * The cells (tags, dictionary values, int/timestamp buckets) are listed
 * first under the read lock, then counted in one chunk-wise pass
 * (ana_count_cells), then ranked and rendered. Bucket boundaries:
 *  - given per attribute: "buckets": {"age": [18, 25, 30]} are lower
 *    bounds (timestamps also as ISO 8601 text): <18, 18-24, 25-29, 30+;
 *  - "year" for a timestamp: one bucket per calendar year (UTC), widened
 *    to several years per bucket past ANA_YEAR_BUCKETS years;
 *  - defaults: attributes named "age" (or ending "_age") get 0-17, 18-24,
 *    25-29, 30-34, 35-39, 40-49, 50-59, 60+; timestamps by year; other
 *    ints by powers of ten (…, -99..-10, -9..-1, 0, 1-9, 10-99, …)
 *    between the smallest and largest value present.
 * Buckets nobody falls in (crowd or baseline) are left out.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

#define ANA_YEAR_BUCKETS 60

enum { CELL_TAG = 1, CELL_VALUE = 2, CELL_RANGE = 3 };

typedef struct meta {
    int kind;
    uint32_t tag;              /* CELL_TAG */
    const schema_attr_t *attr; /* CELL_VALUE, CELL_RANGE */
    uint32_t vid;              /* CELL_VALUE */
    int has_lo, has_hi;        /* CELL_RANGE: open ends */
    char label[112];           /* CELL_RANGE */
} meta_t;

typedef struct cells {
    ana_cell_t *c;
    meta_t *m;
    size_t n, cap;
} cells_t;

static void cells_free(cells_t *cs)
{
    free(cs->c);
    free(cs->m);
    memset(cs, 0, sizeof *cs);
}

static cp_status cells_push(cells_t *cs, ana_cell_t c, meta_t m, cp_error_t *err)
{
    if (cs->n >= ANA_MAX_CELLS)
        return CP_ERR(err, CP_ELIMIT,
                      "insight: more than %u cells; narrow \"tags\" or \"attributes\"",
                      ANA_MAX_CELLS);
    if (cs->n == cs->cap) {
        size_t nc = cs->cap ? cs->cap * 2 : 256;
        ana_cell_t *c2 = realloc(cs->c, nc * sizeof *c2);
        if (c2)
            cs->c = c2;
        meta_t *m2 = c2 ? realloc(cs->m, nc * sizeof *m2) : NULL;
        if (!c2 || !m2)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        cs->m = m2;
        cs->cap = nc;
    }
    cs->c[cs->n] = c;
    cs->m[cs->n] = m;
    cs->n++;
    return CP_OK;
}

/* ------------------------------------------------------------ tags */

static cp_status add_subtree(cp_db_t *db, uint32_t root, uint8_t *seen, cells_t *cs,
                             cp_error_t *err)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    if (tax_subtree(&db->tax, root, &ids, &n))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = CP_OK;
    for (size_t i = 0; i < n && rc == CP_OK; i++) {
        uint32_t id = ids[i];
        const idx_tag_t *t = index_tag(db->ix, id);
        if (t == NULL || t->eff == NULL || seen[id])
            continue;
        seen[id] = 1;
        ana_cell_t c = {.bm = t->eff};
        meta_t m = {.kind = CELL_TAG, .tag = id};
        rc = cells_push(cs, c, m, err);
    }
    free(ids);
    return rc;
}

static cp_status add_tags(cp_db_t *db, const json_t *spec, cells_t *cs, cp_error_t *err)
{
    if (spec != NULL && json_is_false(spec))
        return CP_OK;
    uint8_t *seen = calloc((size_t)db->tax.cap + 1, 1);
    if (seen == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = CP_OK;
    if (spec == NULL || json_is_true(spec) || json_is_null(spec)) {
        rc = add_subtree(db, 0, seen, cs, err);
    } else if (json_is_string(spec) || json_is_array(spec)) {
        size_t n = json_is_string(spec) ? 1 : json_array_size(spec);
        for (size_t i = 0; i < n && rc == CP_OK; i++) {
            const json_t *r = json_is_string(spec) ? spec : json_array_get(spec, i);
            if (!json_is_string(r)) {
                rc = CP_ERR(err, CP_EINVAL, "insight: \"tags\"[%zu] must be a tag path", i);
                break;
            }
            const char *p = json_string_value(r);
            uint32_t id = tax_find(&db->tax, p, strlen(p));
            if (id == 0) {
                rc = CP_ERR(err, CP_ENOTFOUND, "insight: \"tags\": unknown tag \"%.200s\"", p);
                break;
            }
            rc = add_subtree(db, id, seen, cs, err);
        }
    } else {
        rc = CP_ERR(err, CP_EINVAL,
                    "insight: \"tags\" must be true, false, a tag path or an array of paths");
    }
    free(seen);
    return rc;
}

/* ------------------------------------------------------- attributes */

typedef struct bounds {
    int64_t lo[ANA_MAX_BUCKETS + 1]; /* ascending lower bounds */
    size_t n;
    int years; /* timestamp year buckets: label as years */
    int step;  /* years per bucket */
} bounds_t;

/* Seconds of 1 January of `year` (proleptic Gregorian, UTC). */
static int64_t year_start(int64_t year)
{
    /* days from civil (Howard Hinnant's algorithm), month = 1, day = 1 */
    int64_t y = year - 1;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (1 + 9) + 2) / 5; /* March-based day of 1 January */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (era * 146097 + doe - 719468) * 86400;
}

static int64_t year_of(int64_t secs)
{
    int64_t y = 1970 + secs / (365 * 86400 + 21000);
    while (year_start(y) > secs)
        y--;
    while (year_start(y + 1) <= secs)
        y++;
    return y;
}

static cp_status bounds_given(const schema_attr_t *a, const json_t *spec, bounds_t *b,
                              cp_error_t *err)
{
    size_t n = json_array_size(spec);
    if (n == 0 || n > ANA_MAX_BUCKETS)
        return CP_ERR(err, CP_EINVAL,
                      "insight: \"buckets\".%s: give 1 to %u lower bounds in ascending order",
                      a->name, ANA_MAX_BUCKETS);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(spec, i);
        int64_t x;
        if (json_is_integer(v)) {
            x = json_integer_value(v);
        } else if (json_is_string(v) && a->type == CP_ATTR_TIMESTAMP &&
                   time_parse(json_string_value(v), strlen(json_string_value(v)), &x) == 0) {
        } else {
            return CP_ERR(err, CP_EINVAL, "insight: \"buckets\".%s[%zu]: expected %s", a->name, i,
                          a->type == CP_ATTR_TIMESTAMP ? "an integer or an ISO 8601 timestamp"
                                                       : "an integer");
        }
        if (i > 0 && x <= b->lo[i - 1])
            return CP_ERR(err, CP_EINVAL,
                          "insight: \"buckets\".%s[%zu]: bounds must be strictly ascending",
                          a->name, i);
        b->lo[i] = x;
    }
    b->n = n;
    return CP_OK;
}

static void bounds_years(int64_t min, int64_t max, bounds_t *b)
{
    int64_t y0 = year_of(min), y1 = year_of(max);
    int64_t span = y1 - y0 + 1, step = 1;
    if (span > ANA_YEAR_BUCKETS)
        step = (span + ANA_YEAR_BUCKETS - 1) / ANA_YEAR_BUCKETS;
    b->n = 0;
    for (int64_t y = y0; y <= y1 && b->n < ANA_MAX_BUCKETS; y += step)
        b->lo[b->n++] = year_start(y);
    b->years = 1;
    b->step = (int)step;
}

static void bounds_pow10(int64_t min, int64_t max, bounds_t *b)
{
    b->n = 0;
    if (min < 0) {
        /* -(10^j - 1) for j from the magnitude of min down to 1 */
        int j = 1;
        int64_t p = 10;
        while (j < 18 && -(p - 1) > min) {
            j++;
            p *= 10;
        }
        for (; j >= 1; j--, p /= 10)
            b->lo[b->n++] = -(p - 1);
    }
    b->lo[b->n++] = 0;
    int64_t p = 1;
    while (b->n < ANA_MAX_BUCKETS) {
        b->lo[b->n++] = p;
        if (p > max || p > INT64_MAX / 10)
            break;
        p *= 10;
    }
}

static int is_age(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, "age") == 0 || (n > 4 && strcmp(name + n - 4, "_age") == 0);
}

static cp_status add_ranges(cp_db_t *db, const schema_attr_t *a, const bsi_t *bsi,
                            const json_t *bspec, cells_t *cs, cp_error_t *err)
{
    static const int64_t age[] = {0, 18, 25, 30, 35, 40, 50, 60};
    bounds_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = CP_OK;
    int found;
    int64_t min, max;
    if ((rc = ana_bsi_minmax(bsi, NULL, &found, &min, &max))) {
        rc = CP_ERR(err, rc, "out of memory");
        goto out;
    }
    if (!found)
        goto out; /* nobody has a value: no cells */
    if (bspec && json_is_array(bspec)) {
        if ((rc = bounds_given(a, bspec, b, err)))
            goto out;
    } else if (bspec && json_is_string(bspec) && strcmp(json_string_value(bspec), "year") == 0 &&
               a->type == CP_ATTR_TIMESTAMP) {
        bounds_years(min, max, b);
    } else if (bspec && !(json_is_string(bspec) && strcmp(json_string_value(bspec), "auto") == 0)) {
        rc = CP_ERR(err, CP_EINVAL,
                    "insight: \"buckets\".%s: expected an array of lower bounds, \"auto\"%s",
                    a->name, a->type == CP_ATTR_TIMESTAMP ? " or \"year\"" : "");
        goto out;
    } else if (a->type == CP_ATTR_TIMESTAMP) {
        bounds_years(min, max, b);
    } else if (is_age(a->name)) {
        memcpy(b->lo, age, sizeof age);
        b->n = CP_ARRAY_LEN(age);
    } else {
        bounds_pow10(min, max, b);
    }
    /* Bucket i is [lo[i], lo[i+1] - 1]; one more below the first bound. */
    for (size_t i = 0; i <= b->n && rc == CP_OK; i++) {
        meta_t m = {.kind = CELL_RANGE, .attr = a};
        ana_cell_t c = {.bsi = bsi, .lo = INT64_MIN, .hi = INT64_MAX};
        if (i == 0) {
            if (min >= b->lo[0])
                continue;
            c.hi = b->lo[0] - 1;
            m.has_hi = 1;
        } else {
            c.lo = b->lo[i - 1];
            m.has_lo = 1;
            if (i < b->n) {
                c.hi = b->lo[i] - 1;
                m.has_hi = 1;
            }
        }
        char x[48], y[48];
        if (b->years && m.has_lo) {
            int64_t yr = year_of(c.lo);
            if (b->step == 1)
                snprintf(m.label, sizeof m.label, "%lld", (long long)yr);
            else
                snprintf(m.label, sizeof m.label, "%lld-%lld", (long long)yr,
                         (long long)(yr + b->step - 1));
        } else if (a->type == CP_ATTR_TIMESTAMP) {
            time_format(m.has_lo ? c.lo : c.hi + 1, x, sizeof x);
            if (!m.has_lo)
                snprintf(m.label, sizeof m.label, "<%s", x);
            else if (!m.has_hi)
                snprintf(m.label, sizeof m.label, ">=%s", x);
            else {
                time_format(c.hi + 1, y, sizeof y);
                snprintf(m.label, sizeof m.label, "%s..%s", x, y);
            }
        } else if (!m.has_lo) {
            snprintf(m.label, sizeof m.label, "<%lld", (long long)(c.hi + 1));
        } else if (!m.has_hi) {
            snprintf(m.label, sizeof m.label, "%lld+", (long long)c.lo);
        } else if (c.lo == c.hi) {
            snprintf(m.label, sizeof m.label, "%lld", (long long)c.lo);
        } else {
            snprintf(m.label, sizeof m.label, "%lld-%lld", (long long)c.lo, (long long)c.hi);
        }
        rc = cells_push(cs, c, m, err);
    }
out:
    free(b);
    return rc;
}

static cp_status add_attr(cp_db_t *db, const schema_attr_t *a, int explicit_, const json_t *buckets,
                          cells_t *cs, json_t *skipped, cp_error_t *err)
{
    const idx_attr_t *ia = index_attr(db->ix, a->id);
    if (ia == NULL)
        return CP_OK;
    const json_t *bspec = buckets ? json_object_get(buckets, a->name) : NULL;
    if (a->type == CP_ATTR_GEO) {
        if (explicit_)
            return CP_ERR(err, CP_EINVAL,
                          "insight: attribute \"%s\" is a geo point; insight covers tags, "
                          "enum/string/bool values and int/timestamp buckets",
                          a->name);
        return CP_OK;
    }
    if (a->type == CP_ATTR_INT || a->type == CP_ATTR_TIMESTAMP)
        return ia->bsi ? add_ranges(db, a, ia->bsi, bspec, cs, err) : CP_OK;
    if (bspec)
        return CP_ERR(err, CP_EINVAL,
                      "insight: \"buckets\".%s: only int and timestamp attributes have buckets",
                      a->name);
    if (a->type == CP_ATTR_STRING && a->nvalues > ANA_MAX_STRING_VALUES && !explicit_) {
        if (json_array_append_new(skipped, json_pack("{s:s,s:s}", "attribute", a->name, "reason",
                                                     "more than 1000 distinct values; name it in "
                                                     "\"attributes\" to include it")))
            return CP_ERR(err, CP_ENOMEM, "insight: out of memory building the report");
        return CP_OK;
    }
    for (uint32_t v = 1; v <= a->nvalues; v++) {
        const roaring_bitmap_t *bm = index_value_bitmap(db->ix, a->id, v);
        if (bm == NULL || roaring_bitmap_is_empty(bm))
            continue;
        ana_cell_t c = {.bm = bm};
        meta_t m = {.kind = CELL_VALUE, .attr = a, .vid = v};
        cp_status rc = cells_push(cs, c, m, err);
        if (rc)
            return rc;
    }
    return CP_OK;
}

static cp_status add_attrs(cp_db_t *db, const json_t *spec, const json_t *buckets, cells_t *cs,
                           json_t *skipped, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if (buckets && !json_is_object(buckets))
        return CP_ERR(err, CP_EINVAL, "insight: \"buckets\" must be an object by attribute name");
    if (buckets) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)buckets, k, v)
        {
            (void)v;
            if (!schema_find(&db->sch, k, strlen(k)))
                return CP_ERR(err, CP_ENOTFOUND,
                              "insight: \"buckets\": unknown attribute \"%.64s\"", k);
        }
    }
    if (spec != NULL && json_is_false(spec))
        return CP_OK;
    if (spec == NULL || json_is_true(spec) || json_is_null(spec)) {
        for (uint32_t i = 1; i <= db->sch.n && rc == CP_OK; i++) {
            const schema_attr_t *a = schema_get(&db->sch, i);
            if (a)
                rc = add_attr(db, a, 0, buckets, cs, skipped, err);
        }
        return rc;
    }
    if (!json_is_array(spec))
        return CP_ERR(err, CP_EINVAL,
                      "insight: \"attributes\" must be true, false or an array of names");
    for (size_t i = 0; i < json_array_size(spec) && rc == CP_OK; i++) {
        const json_t *n = json_array_get(spec, i);
        if (!json_is_string(n))
            return CP_ERR(err, CP_EINVAL, "insight: \"attributes\"[%zu] must be a name", i);
        const char *name = json_string_value(n);
        const schema_attr_t *a = schema_find(&db->sch, name, strlen(name));
        if (a == NULL)
            return CP_ERR(err, CP_ENOTFOUND, "insight: unknown attribute \"%.64s\"", name);
        rc = add_attr(db, a, 1, buckets, cs, skipped, err);
    }
    return rc;
}

/* --------------------------------------------------------- rendering */

/* The expression text selecting a cell's users (caller frees). */
static char *cell_expr(cp_db_t *db, const ana_cell_t *c, const meta_t *m)
{
    buf_t b;
    buf_init(&b, 1 << 16);
    char x[48], y[48];
    if (m->kind == CELL_TAG) {
        buf_printf(&b, "tag:%s", tax_get(&db->tax, m->tag)->path);
    } else if (m->kind == CELL_VALUE) {
        buf_printf(&b, "%s = ", m->attr->name);
        if (m->attr->type == CP_ATTR_BOOL)
            buf_append(&b, m->attr->values[m->vid], m->attr->value_lens[m->vid]);
        else
            json_buf_str(&b, m->attr->values[m->vid], m->attr->value_lens[m->vid]);
    } else {
        cp_attr_type t = m->attr->type;
        if (m->has_lo && m->has_hi)
            buf_printf(&b, "%s BETWEEN %s AND %s", m->attr->name,
                       ana_value_text(t, c->lo, x, sizeof x),
                       ana_value_text(t, c->hi, y, sizeof y));
        else if (m->has_lo)
            buf_printf(&b, "%s >= %s", m->attr->name, ana_value_text(t, c->lo, x, sizeof x));
        else
            buf_printf(&b, "%s <= %s", m->attr->name, ana_value_text(t, c->hi, x, sizeof x));
    }
    if (b.data == NULL)
        return NULL;
    buf_cstr(&b);
    return b.data;
}

typedef struct ranked {
    size_t i;
    int shown; /* not suppressed */
    int has_tgi;
    double tgi;
    uint64_t members;
} ranked_t;

static int by_tgi_desc(const void *pa, const void *pb)
{
    const ranked_t *a = pa, *b = pb;
    if (a->shown != b->shown)
        return b->shown - a->shown;
    if (a->has_tgi != b->has_tgi)
        return b->has_tgi - a->has_tgi;
    if (a->tgi != b->tgi)
        return a->tgi < b->tgi ? 1 : -1;
    if (a->members != b->members)
        return a->members < b->members ? 1 : -1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int by_tgi_asc(const void *pa, const void *pb)
{
    const ranked_t *a = pa, *b = pb;
    if (a->tgi != b->tgi)
        return a->tgi < b->tgi ? -1 : 1;
    if (a->members != b->members)
        return a->members < b->members ? 1 : -1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int by_count_desc(const void *pa, const void *pb)
{
    const ranked_t *a = pa, *b = pb;
    if (a->shown != b->shown)
        return b->shown - a->shown;
    if (a->members != b->members)
        return a->members < b->members ? 1 : -1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static json_t *cell_json(cp_db_t *db, const cells_t *cs, size_t i, uint64_t csize, uint64_t bsize,
                         uint64_t min_count)
{
    const ana_cell_t *c = &cs->c[i];
    const meta_t *m = &cs->m[i];
    json_t *o = json_object();
    int bad = 0; /* a field could not be added: out of memory */
    if (o == NULL)
        return NULL;
    if (m->kind == CELL_TAG) {
        const tax_tag_t *g = tax_get(&db->tax, m->tag);
        bad |= json_object_set_new(o, "kind", json_string("tag"));
        bad |= json_object_set_new(o, "tag", json_string(g->path));
        bad |= json_object_set_new(o, "name", json_string(g->name));
    } else {
        bad |= json_object_set_new(o, "kind", json_string("attribute"));
        bad |= json_object_set_new(o, "attribute", json_string(m->attr->name));
        if (m->kind == CELL_VALUE) {
            bad |= json_object_set_new(
                o, "value", json_stringn(m->attr->values[m->vid], m->attr->value_lens[m->vid]));
        } else {
            bad |= json_object_set_new(o, "value", json_string(m->label));
            bad |= json_object_set_new(o, "min", m->has_lo ? json_integer(c->lo) : json_null());
            bad |= json_object_set_new(o, "max", m->has_hi ? json_integer(c->hi) : json_null());
        }
    }
    char *ex = cell_expr(db, c, m);
    bad |= json_object_set_new(o, "expression", ex ? json_string(ex) : json_null());
    free(ex);
    if (c->n_crowd < min_count || c->n_base < min_count) {
        bad |= json_object_set_new(o, "suppressed", json_true());
        goto done;
    }
    double cs_ = csize ? (double)c->n_crowd / (double)csize : NAN;
    double bs = bsize ? (double)c->n_base / (double)bsize : NAN;
    bad |= json_object_set_new(o, "members", json_integer((json_int_t)c->n_crowd));
    bad |= json_object_set_new(o, "crowd_share",
                               isfinite(cs_) ? json_real(ana_round(cs_)) : json_null());
    bad |= json_object_set_new(o, "baseline_members", json_integer((json_int_t)c->n_base));
    bad |= json_object_set_new(o, "baseline_share",
                               isfinite(bs) ? json_real(ana_round(bs)) : json_null());
    double tgi = cs_ / bs * 100.0;
    bad |= json_object_set_new(o, "tgi", isfinite(tgi) ? json_real(ana_round(tgi)) : json_null());
done:
    /* A cell missing a field is no cell: NULL makes the caller's append fail. */
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void rank_cells(const cells_t *cs, uint64_t csize, uint64_t bsize, uint64_t min_count,
                       ranked_t *r)
{
    for (size_t i = 0; i < cs->n; i++) {
        const ana_cell_t *c = &cs->c[i];
        r[i].i = i;
        r[i].members = c->n_crowd;
        r[i].shown = c->n_crowd >= min_count && c->n_base >= min_count;
        double tgi = csize && bsize && c->n_base ? ((double)c->n_crowd / (double)csize) /
                                                       ((double)c->n_base / (double)bsize) * 100.0
                                                 : NAN;
        r[i].has_tgi = r[i].shown && isfinite(tgi);
        r[i].tgi = r[i].has_tgi ? ana_round(tgi) : 0;
        if (!r[i].shown)
            r[i].members = 0;
    }
}

cp_status ana_top_tags_locked(cp_db_t *db, const roaring_bitmap_t *crowd,
                              const roaring_bitmap_t *base, uint64_t min_count, size_t top,
                              json_t **out, cp_error_t *err)
{
    *out = NULL;
    cells_t cs = {0};
    ranked_t *r = NULL;
    cp_status rc = add_tags(db, NULL, &cs, err);
    if (rc)
        goto out;
    rc = ana_count_cells(crowd, base, db->ix->universe, cs.c, cs.n,
                         ana_threads_for((uint32_t)bm_chunk_count(base)));
    if (rc) {
        rc = CP_ERR(err, rc, "out of memory counting tags");
        goto out;
    }
    uint64_t csize = roaring_bitmap_get_cardinality(crowd),
             bsize = roaring_bitmap_get_cardinality(base);
    r = calloc(cs.n ? cs.n : 1, sizeof *r);
    json_t *arr = json_array();
    if (r == NULL || arr == NULL) {
        json_decref(arr);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    rank_cells(&cs, csize, bsize, min_count, r);
    qsort(r, cs.n, sizeof *r, by_tgi_desc);
    int bad = 0; /* a cell could not be added: out of memory */
    for (size_t i = 0; i < cs.n && json_array_size(arr) < top; i++)
        if (r[i].has_tgi && r[i].tgi > 100)
            bad |= json_array_append_new(arr, cell_json(db, &cs, r[i].i, csize, bsize, min_count));
    if (bad) {
        json_decref(arr);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory building the top tags");
        goto out;
    }
    *out = arr;
out:
    free(r);
    cells_free(&cs);
    return rc;
}

cp_status cp_insight_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    static const char *const fields[] = {"crowd", "baseline", "tags",      "attributes", "buckets",
                                         "sort",  "top",      "min_count", NULL};
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    json_t *req = NULL, *clabel = NULL, *blabel = NULL, *skipped = NULL, *res = NULL;
    roaring_bitmap_t *crowd = NULL, *base = NULL;
    cells_t cs = {0};
    ranked_t *r = NULL;
    int locked = 0;
    int bad = 0; /* a report field could not be added: out of memory */
    uint64_t top = 10, min_count = 0;
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc)
        return rc;
    if ((rc = ana_check_fields(req, "insight", fields, err)) ||
        (rc = ana_get_uint(req, "top", 10000, &top, err)))
        goto out;
    const json_t *sortv = json_object_get(req, "sort");
    int by_count = 0;
    if (sortv && !json_is_null(sortv)) {
        const char *s = json_is_string(sortv) ? json_string_value(sortv) : "";
        if (strcmp(s, "count") == 0 || strcmp(s, "members") == 0)
            by_count = 1;
        else if (strcmp(s, "tgi") != 0) {
            rc = CP_ERR(err, CP_EINVAL, "insight: \"sort\" must be \"tgi\" or \"count\"");
            goto out;
        }
    }
    const json_t *cspec = json_object_get(req, "crowd");
    if (cspec == NULL) {
        rc = CP_ERR(err, CP_EINVAL,
                    "insight: field \"crowd\" is required (a crowd name or "
                    "{\"expression\": TEXT})");
        goto out;
    }
    if ((rc = db_read_begin(db, err)))
        goto out;
    locked = 1;
    if ((rc = ana_min_count_request(db, req, &min_count, err)) ||
        (rc = ana_set_eval_locked(db, cspec, "crowd", &crowd, &clabel, err)))
        goto out;
    const json_t *bspec = json_object_get(req, "baseline");
    if (bspec && !json_is_null(bspec) &&
        !(json_is_string(bspec) && strcmp(json_string_value(bspec), "all") == 0)) {
        if ((rc = ana_set_eval_locked(db, bspec, "baseline", &base, &blabel, err)))
            goto out;
    } else {
        blabel = json_pack("{s:s}", "expression", "all");
    }
    skipped = json_array();
    if (!skipped || !blabel) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = add_tags(db, json_object_get(req, "tags"), &cs, err)) ||
        (rc = add_attrs(db, json_object_get(req, "attributes"), json_object_get(req, "buckets"),
                        &cs, skipped, err)))
        goto out;
    const roaring_bitmap_t *bset = base ? base : db->ix->universe;
    rc = ana_count_cells(crowd, base, db->ix->universe, cs.c, cs.n,
                         ana_threads_for((uint32_t)bm_chunk_count(bset)));
    if (rc) {
        rc = CP_ERR(err, rc, "out of memory counting insight cells");
        goto out;
    }
    atomic_fetch_add(&db->queries, 1);
    uint64_t csize = roaring_bitmap_get_cardinality(crowd);
    uint64_t bsize = roaring_bitmap_get_cardinality(bset);
    /* Buckets nobody falls in are noise: drop them. */
    size_t w = 0;
    for (size_t i = 0; i < cs.n; i++) {
        if (cs.m[i].kind == CELL_RANGE && cs.c[i].n_crowd == 0 && cs.c[i].n_base == 0)
            continue;
        cs.c[w] = cs.c[i];
        cs.m[w] = cs.m[i];
        w++;
    }
    cs.n = w;
    r = calloc(cs.n ? cs.n : 1, sizeof *r);
    res = json_object();
    json_t *cells = json_array(), *over = json_array(), *under = json_array();
    if (!r || !res || !cells || !over || !under) {
        json_decref(cells);
        json_decref(over);
        json_decref(under);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    rank_cells(&cs, csize, bsize, min_count, r);
    size_t nsup = 0;
    for (size_t i = 0; i < cs.n; i++)
        nsup += !r[i].shown;
    qsort(r, cs.n, sizeof *r, by_tgi_desc);
    for (size_t i = 0; i < cs.n && json_array_size(over) < top; i++)
        if (r[i].has_tgi && r[i].tgi > 100)
            bad |= json_array_append_new(over, cell_json(db, &cs, r[i].i, csize, bsize, min_count));
    /* Under-indexed: the shown cells with a TGI below 100, lowest first. */
    size_t nt = 0;
    while (nt < cs.n && r[nt].has_tgi)
        nt++;
    qsort(r, nt, sizeof *r, by_tgi_asc);
    for (size_t i = 0; i < nt && json_array_size(under) < top; i++)
        if (r[i].tgi < 100)
            bad |=
                json_array_append_new(under, cell_json(db, &cs, r[i].i, csize, bsize, min_count));
    qsort(r, cs.n, sizeof *r, by_count ? by_count_desc : by_tgi_desc);
    for (size_t i = 0; i < cs.n; i++)
        bad |= json_array_append_new(cells, cell_json(db, &cs, r[i].i, csize, bsize, min_count));
    bad |= json_object_set_new(clabel, "size", json_integer((json_int_t)csize));
    bad |= json_object_set_new(blabel, "size", json_integer((json_int_t)bsize));
    bad |= json_object_set_new(res, "crowd", clabel);
    bad |= json_object_set_new(res, "baseline", blabel);
    clabel = blabel = NULL;
    bad |= json_object_set_new(res, "min_count", json_integer((json_int_t)min_count));
    bad |= json_object_set_new(res, "sort", json_string(by_count ? "count" : "tgi"));
    bad |= json_object_set_new(res, "cells_total", json_integer((json_int_t)cs.n));
    bad |= json_object_set_new(res, "suppressed", json_integer((json_int_t)nsup));
    bad |= json_object_set_new(res, "top_over", over);
    bad |= json_object_set_new(res, "top_under", under);
    bad |= json_object_set_new(res, "cells", cells);
    bad |= json_object_set_new(res, "skipped", skipped);
    skipped = NULL;
    db_read_end(db);
    locked = 0;
    bad |= json_object_set_new(res, "took_ms",
                               json_real(ana_round((double)(time_mono_ns() - t0) / 1e6)));
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "insight: out of memory building the report");
        goto out;
    }
    rc = db_json_out(res, out, err);
    res = NULL;
out:
    if (locked)
        db_read_end(db);
    free(r);
    cells_free(&cs);
    index_bm_free(crowd);
    index_bm_free(base);
    json_decref(clabel);
    json_decref(blabel);
    json_decref(skipped);
    json_decref(res);
    json_decref(req);
    return rc;
}
