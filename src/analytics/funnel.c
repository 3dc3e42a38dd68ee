/*
 * funnel.c — funnel reports (docs/analytics.md "Funnels").
 *
 * A funnel is an ordered list of steps (an event, optionally with up to
 * three filters on indexed properties) and a window of UTC days. A user
 * reaches step k when there are days d1 <= d2 <= ... <= dk in the window
 * with step j done on day dj: order is at DAY granularity, because the
 * behaviour index keeps who did what per day, not per second (steps done
 * on the same day count as in order whatever their times). Per step the
 * report gives the users who reached it and the conversion from the
 * previous step and from the first; optionally broken down by the values
 * of an attribute (enum/string/bool values, int buckets) or the children
 * of a tag, each group with its own counts (groups below the minimum
 * count show no number, as in insight).
 *
 * The computation sweeps the days once: reached[k] |= did(step k on day
 * d) & reached[k-1] (reached[k-1] already holding day d), so a user's
 * earliest possible completion of each step is found in one pass over
 * the cells of the window — bitmap operations only, no per-user state.
 *
 * With "store": true and a "name", the users who reached each step
 * become the tags funnel/<name>/step1..stepN (one write transaction), so
 * `tag:funnel/signup/step3` can be used in any crowd expression.
 */
#include <stdlib.h>
#include <string.h>

#include "analytics/value.h"

#define FUNNEL_MAX_STEPS 16
#define FUNNEL_MAX_GROUPS 256
#define FUNNEL_MAX_DAYS 36600

typedef struct step {
    const char *event;
    beh_prop_t f[VAL_MAX_FILTERS];
    char fs[VAL_MAX_FILTERS][64];
    size_t nf;
    uint32_t series;
    const json_t *filters;
} step_t;

typedef struct group {
    char *label;
    char *expr;
    roaring_bitmap_t *bm;
} group_t;

static json_t *conv(uint64_t num, uint64_t den)
{
    return den ? json_real(ana_round((double)num / (double)den)) : json_null();
}

/* Adds a group (label and expression copied). */
static cp_status group_add(group_t *g, size_t *n, const char *label, const char *expr,
                           cp_error_t *err)
{
    if (*n >= FUNNEL_MAX_GROUPS)
        return CP_ERR(err, CP_ELIMIT, "funnel: a breakdown has at most %d groups",
                      FUNNEL_MAX_GROUPS);
    g[*n].label = strdup(label);
    g[*n].expr = strdup(expr);
    g[*n].bm = NULL;
    (*n)++;
    if (!g[*n - 1].label || !g[*n - 1].expr)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    return CP_OK;
}

static cp_status quote_into(char *buf, size_t cap, const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    char *q = j ? json_dumps_checked(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (q == NULL)
        return CP_ENOMEM;
    snprintf(buf, cap, "%s", q);
    free(q);
    return CP_OK;
}

/* The groups of a breakdown spec (lock held). *by describes it. */
static cp_status breakdown_groups(cp_db_t *db, const json_t *spec, group_t *g, size_t *n,
                                  json_t **by, cp_error_t *err)
{
    static const char *const fields[] = {"attribute", "buckets", "tag", NULL};
    cp_status rc = ana_check_fields(spec, "funnel: breakdown", fields, err);
    if (rc)
        return rc;
    const json_t *at = json_object_get(spec, "attribute"), *tg = json_object_get(spec, "tag");
    char expr[2 * SCHEMA_MAX_VALUE + 128], label[SCHEMA_MAX_VALUE + 64];
    if ((at != NULL) == (tg != NULL))
        return CP_ERR(err, CP_EINVAL,
                      "funnel: breakdown must be {\"attribute\": NAME[, \"buckets\": [...]]} or "
                      "{\"tag\": ROOT}");
    if (tg) {
        const char *root = json_string_value(tg);
        uint32_t id = root ? tax_find(&db->tax, root, strlen(root)) : 0;
        const tax_tag_t *t = id ? tax_get(&db->tax, id) : NULL;
        if (t == NULL)
            return CP_ERR(err, CP_ENOTFOUND, "funnel: breakdown: unknown tag \"%.128s\"",
                          root ? root : "");
        for (uint32_t i = 0; i < t->nchildren; i++) {
            const tax_tag_t *c = tax_get(&db->tax, t->children[i]);
            if (c == NULL)
                continue;
            snprintf(expr, sizeof expr, "tag:%s", c->path);
            if ((rc = group_add(g, n, c->path, expr, err)))
                return rc;
        }
        *by = json_pack("{s:s}", "tag", root);
        return CP_OK;
    }
    const char *name = json_string_value(at);
    const schema_attr_t *a = name ? schema_find(&db->sch, name, strlen(name)) : NULL;
    if (a == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "funnel: breakdown: unknown attribute \"%.64s\"",
                      name ? name : "");
    const json_t *bk = json_object_get(spec, "buckets");
    if (a->type == CP_ATTR_INT) {
        if (!json_is_array(bk) || json_array_size(bk) == 0 ||
            json_array_size(bk) > FUNNEL_MAX_GROUPS - 1)
            return CP_ERR(err, CP_EINVAL,
                          "funnel: breakdown by the int attribute \"%s\" needs \"buckets\": "
                          "[lower bounds, ascending]",
                          a->name);
        int64_t prev = 0;
        for (size_t i = 0; i < json_array_size(bk); i++) {
            const json_t *x = json_array_get(bk, i);
            if (!json_is_integer(x) || (i && json_integer_value(x) <= prev))
                return CP_ERR(err, CP_EINVAL,
                              "funnel: buckets[%zu] must be an integer above the previous one", i);
            int64_t lo = json_integer_value(x);
            if (i == 0) {
                snprintf(label, sizeof label, "<%lld", (long long)lo);
                snprintf(expr, sizeof expr, "%s < %lld", a->name, (long long)lo);
                if ((rc = group_add(g, n, label, expr, err)))
                    return rc;
            }
            const json_t *nx = json_array_get(bk, i + 1);
            if (json_is_integer(nx) && json_integer_value(nx) > lo) {
                long long hi = (long long)json_integer_value(nx) - 1;
                snprintf(label, sizeof label, "%lld-%lld", (long long)lo, hi);
                snprintf(expr, sizeof expr, "%s BETWEEN %lld AND %lld", a->name, (long long)lo, hi);
            } else {
                snprintf(label, sizeof label, "%lld+", (long long)lo);
                snprintf(expr, sizeof expr, "%s >= %lld", a->name, (long long)lo);
            }
            if ((rc = group_add(g, n, label, expr, err)))
                return rc;
            prev = lo;
        }
    } else if (a->type == CP_ATTR_ENUM || a->type == CP_ATTR_STRING || a->type == CP_ATTR_BOOL) {
        if (bk)
            return CP_ERR(err, CP_EINVAL, "funnel: \"buckets\" are for int attributes");
        for (uint32_t v = 1; v <= a->nvalues; v++) {
            if (a->values[v] == NULL)
                continue; /* removed with the last user holding it */
            char q[2 * SCHEMA_MAX_VALUE + 8];
            if (a->type == CP_ATTR_BOOL)
                snprintf(q, sizeof q, "%.*s", (int)a->value_lens[v], a->values[v]);
            else if (quote_into(q, sizeof q, a->values[v], a->value_lens[v]))
                return CP_ERR(err, CP_ENOMEM, "out of memory");
            snprintf(label, sizeof label, "%.*s", (int)a->value_lens[v], a->values[v]);
            snprintf(expr, sizeof expr, "%s = %s", a->name, q);
            if ((rc = group_add(g, n, label, expr, err)))
                return rc;
        }
    } else {
        return CP_ERR(err, CP_EINVAL,
                      "funnel: breakdown by \"%s\": only enum, string, bool and int attributes",
                      a->name);
    }
    *by = json_pack("{s:s}", "attribute", a->name);
    return CP_OK;
}

typedef struct freq {
    const char *name;
    step_t steps[FUNNEL_MAX_STEPS];
    size_t nsteps;
    int32_t d0, d1;
    int32_t ndays;   /* window_days when the end day is the default */
    int default_end; /* no "as_of" nor "from"/"to": the end day comes from the data */
    int store;
} freq_t;

static cp_status parse_steps(cp_db_t *db, const json_t *req, freq_t *f, cp_error_t *err)
{
    const json_t *st = json_object_get(req, "steps");
    if (!json_is_array(st) || json_array_size(st) == 0 || json_array_size(st) > FUNNEL_MAX_STEPS)
        return CP_ERR(err, CP_EINVAL, "funnel: \"steps\" must list 1 to %d steps",
                      FUNNEL_MAX_STEPS);
    size_t i;
    json_t *s;
    json_array_foreach(st, i, s)
    {
        step_t *p = &f->steps[i];
        char what[48];
        snprintf(what, sizeof what, "funnel: steps[%zu]", i);
        const json_t *ev = s;
        if (json_is_object(s)) {
            static const char *const fields[] = {"event", "filters", NULL};
            cp_status rc = ana_check_fields(s, what, fields, err);
            if (rc)
                return rc;
            ev = json_object_get(s, "event");
            p->filters = json_object_get(s, "filters");
            if ((rc = val_filters_parse(db, p->filters, what, p->f, p->fs, &p->nf, err)))
                return rc;
        }
        if (!json_is_string(ev) || json_string_length(ev) == 0 ||
            json_string_length(ev) > BEH_NAME_MAX)
            return CP_ERR(err, CP_EINVAL,
                          "%s: expected an event name or {\"event\": NAME, \"filters\": {...}}",
                          what);
        p->event = json_string_value(ev);
        cp_status rc = beh_resolve(db->beh, p->event, strlen(p->event), p->f, p->nf, &p->series);
        if (rc == CP_ENOTFOUND)
            return CP_ERR(err, CP_ENOTFOUND, "%s: unknown event \"%.64s\" (never recorded)", what,
                          p->event);
        if (rc)
            return CP_ERR(err, rc, "%s: %s", what, cp_strerror(rc));
        f->nsteps = i + 1;
    }
    return CP_OK;
}

static cp_status parse_window(const json_t *req, freq_t *f, cp_error_t *err)
{
    const json_t *fr = json_object_get(req, "from"), *to = json_object_get(req, "to"),
                 *wd = json_object_get(req, "window_days"), *ao = json_object_get(req, "as_of");
    if (fr || to) {
        if (wd || ao)
            return CP_ERR(err, CP_EINVAL,
                          "funnel: give \"from\" and \"to\", or \"window_days\" (and \"as_of\")");
        if (!json_is_string(fr) || !json_is_string(to) ||
            val_day_parse(json_string_value(fr), &f->d0) ||
            val_day_parse(json_string_value(to), &f->d1))
            return CP_ERR(err, CP_EINVAL, "funnel: \"from\" and \"to\" must be dates (YYYY-MM-DD)");
    } else {
        f->d1 = (int32_t)(time_now_ms() / 86400000);
        f->default_end = ao == NULL || json_is_null(ao);
        if (!f->default_end &&
            (!json_is_string(ao) || val_day_parse(json_string_value(ao), &f->d1)))
            return CP_ERR(err, CP_EINVAL, "funnel: \"as_of\" must be a date (YYYY-MM-DD)");
        json_int_t n = 30;
        if (wd) {
            if (!json_is_integer(wd) || json_integer_value(wd) < 1 ||
                json_integer_value(wd) > FUNNEL_MAX_DAYS)
                return CP_ERR(err, CP_EINVAL, "funnel: \"window_days\" must be 1 to %d",
                              FUNNEL_MAX_DAYS);
            n = json_integer_value(wd);
        }
        f->d0 = f->d1 - (int32_t)n + 1;
        f->ndays = (int32_t)n;
    }
    if (f->d1 < f->d0 || (int64_t)f->d1 - f->d0 >= FUNNEL_MAX_DAYS)
        return CP_ERR(err, CP_EINVAL,
                      "funnel: the window must run forward and span at most %d days",
                      FUNNEL_MAX_DAYS);
    return CP_OK;
}

/* The day sweep (lock held): reached[k] over `pop`. */
static cp_status sweep(cp_db_t *db, const freq_t *f, const roaring_bitmap_t *pop,
                       roaring_bitmap_t **reached)
{
    roaring_bitmap_t *day = roaring_bitmap_create();
    if (day == NULL)
        return CP_ENOMEM;
    cp_status rc = CP_OK;
    for (int32_t d = f->d0; d <= f->d1 && rc == CP_OK; d++) {
        for (size_t k = 0; k < f->nsteps; k++) {
            if (k && roaring_bitmap_is_empty(reached[k - 1]))
                break;
            beh_window_t w;
            beh_window_init(db->beh, f->steps[k].series, d, d, &w);
            if (w.ncells == 0)
                continue;
            roaring_bitmap_clear(day);
            if ((rc = beh_window_eval(&w, BEH_GE, 1, k ? reached[k - 1] : pop, day)))
                break;
            roaring_bitmap_or_inplace(reached[k], day);
        }
    }
    roaring_bitmap_free(day);
    return rc;
}

cp_status cp_funnel_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    static const char *const fields[] = {"name",        "steps",     "from",  "to",
                                         "window_days", "as_of",     "crowd", "breakdown",
                                         "store",       "min_count", NULL};
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    json_t *req = NULL, *res = NULL, *clabel = NULL, *by = NULL, *warnings = NULL;
    freq_t f;
    memset(&f, 0, sizeof f);
    roaring_bitmap_t *pop = NULL, *reached[FUNNEL_MAX_STEPS] = {0};
    group_t *groups = NULL;
    size_t ngroups = 0;
    store_txn_t *txn = NULL;
    int locked = 0, touched = 0;
    int bad = 0; /* a report field could not be added: out of memory */
    uint64_t min_count = 0;
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc || (rc = ana_check_fields(req, "funnel", fields, err)))
        goto out;
    const json_t *nm = json_object_get(req, "name"), *sv = json_object_get(req, "store");
    if (sv && !json_is_boolean(sv)) {
        rc = CP_ERR(err, CP_EINVAL, "funnel: \"store\" must be true or false");
        goto out;
    }
    f.store = json_is_true(sv);
    if (nm) {
        if (!json_is_string(nm) || json_string_length(nm) > 64 ||
            strchr(json_string_value(nm), '/') ||
            tax_validate_path(json_string_value(nm), json_string_length(nm), NULL)) {
            rc = CP_ERR(err, CP_EINVAL, "funnel: \"name\" must be one tag path segment");
            goto out;
        }
        f.name = json_string_value(nm);
    }
    if (f.store && f.name == NULL) {
        rc = CP_ERR(err, CP_EINVAL, "funnel: \"store\" needs a \"name\" (tags funnel/NAME/stepK)");
        goto out;
    }
    if ((rc = parse_window(req, &f, err)))
        goto out;
    rc = f.store ? db_write_begin(db, &txn, err) : db_read_begin(db, err);
    if (rc)
        goto out;
    locked = 1;
    int end_from_data = 0;
    if (f.default_end) { /* the data's own last day for a historical import */
        f.d1 = val_default_day(db, &end_from_data);
        f.d0 = f.d1 - f.ndays + 1;
    }
    if ((rc = parse_steps(db, req, &f, err)) ||
        (rc = ana_min_count_request(db, req, &min_count, err)))
        goto out;
    if ((warnings = json_array()) == NULL ||
        (rc = val_window_warn(db, f.d0, f.d1, warnings)) != CP_OK) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (json_array_size(warnings) == 0) { /* the data is there, but maybe not these steps */
        for (size_t k = 0; k < f.nsteps; k++) {
            beh_window_t w;
            beh_window_init(db->beh, f.steps[k].series, f.d0, f.d1, &w);
            if (w.ncells > 0)
                continue;
            char msg[300];
            snprintf(msg, sizeof msg, "step %zu (\"%.200s\"%s) has no events in the window", k + 1,
                     f.steps[k].event, f.steps[k].nf ? " with these filters" : "");
            if (json_array_append_new(warnings, json_string(msg))) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    const json_t *cw = json_object_get(req, "crowd");
    if (cw && !json_is_null(cw)) {
        if ((rc = ana_set_eval_locked_as_of(db, cw, "funnel: crowd", f.d1, &pop, &clabel, err)))
            goto out;
    } else if ((pop = roaring_bitmap_copy(db->ix->universe)) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < f.nsteps; k++)
        if ((reached[k] = roaring_bitmap_create()) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
    if ((rc = sweep(db, &f, pop, reached))) {
        rc = CP_ERR(err, rc, "out of memory");
        goto out;
    }
    const json_t *bd = json_object_get(req, "breakdown");
    if (bd && !json_is_null(bd)) {
        if (!json_is_object(bd)) {
            rc = CP_ERR(err, CP_EINVAL, "funnel: \"breakdown\" must be an object");
            goto out;
        }
        if ((groups = calloc(FUNNEL_MAX_GROUPS, sizeof *groups)) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = breakdown_groups(db, bd, groups, &ngroups, &by, err)))
            goto out;
        for (size_t g = 0; g < ngroups; g++) {
            expr_t *e = NULL;
            if ((rc = db_parse_text(groups[g].expr, &e, err)) ||
                (rc = db_eval_tree_as_of(db, expr_root(e), f.d1, &groups[g].bm, err))) {
                error_prefix(err, "funnel: breakdown group \"%.64s\": ", groups[g].label);
                expr_free(e);
                goto out;
            }
            expr_free(e);
        }
    }
    /* report */
    uint64_t npop = roaring_bitmap_get_cardinality(pop);
    json_t *steps = json_array();
    char path[TAX_MAX_PATH + 1];
    for (size_t k = 0; k < f.nsteps; k++) {
        uint64_t n = roaring_bitmap_get_cardinality(reached[k]);
        uint64_t prev = k ? roaring_bitmap_get_cardinality(reached[k - 1]) : npop;
        json_t *o =
            json_pack("{s:I,s:s,s:I,s:o,s:o}", "step", (json_int_t)(k + 1), "event",
                      f.steps[k].event, "users", (json_int_t)n, "conversion", conv(n, prev),
                      "conversion_from_first", conv(n, roaring_bitmap_get_cardinality(reached[0])));
        if (f.steps[k].filters)
            bad |= json_object_set(o, "filters", (json_t *)f.steps[k].filters);
        if (f.store) {
            uint32_t id;
            snprintf(path, sizeof path, "funnel/%s/step%zu", f.name, k + 1);
            bad |= json_object_set_new(o, "tag", json_string(path));
            if ((rc = db_ensure_tag(db, txn, path, NULL, "funnel step reached in order", &id,
                                    &touched, err)) == CP_OK) {
                touched = 1;
                if ((rc = val_tag_set_members(db, id, reached[k])))
                    rc = CP_ERR(err, rc, "out of memory setting funnel tags");
            }
            if (rc) {
                json_decref(o);
                json_decref(steps);
                goto out;
            }
        }
        bad |= json_array_append_new(steps, o);
    }
    char b0[16], b1[16];
    res = json_pack("{s:s?,s:{s:s,s:s},s:s,s:I,s:o,s:b}", "name", f.name, "window", "from",
                    val_day_format(f.d0, b0), "to", val_day_format(f.d1, b1), "order", "day",
                    "population", (json_int_t)npop, "steps", steps, "stored", f.store);
    if (res == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (clabel)
        bad |= json_object_set(res, "crowd", clabel);
    if (json_object_set(res, "warnings", warnings) ||
        (end_from_data && json_object_set_new(res, "as_of_from_data", json_true()))) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (groups) {
        json_t *ga = json_array();
        for (size_t g = 0; g < ngroups; g++) {
            json_t *gs = json_array();
            uint64_t size = roaring_bitmap_and_cardinality(pop, groups[g].bm), prev = size;
            uint64_t first = 0;
            for (size_t k = 0; k < f.nsteps; k++) {
                uint64_t n = roaring_bitmap_and_cardinality(reached[k], groups[g].bm);
                if (k == 0)
                    first = n;
                json_t *o;
                if (n > 0 && n < min_count)
                    o = json_pack("{s:I,s:b}", "step", (json_int_t)(k + 1), "suppressed", 1);
                else
                    o = json_pack("{s:I,s:I,s:o,s:o}", "step", (json_int_t)(k + 1), "users",
                                  (json_int_t)n, "conversion", conv(n, prev),
                                  "conversion_from_first", conv(n, first));
                bad |= json_array_append_new(gs, o);
                prev = n;
            }
            json_t *go = json_pack("{s:s,s:s,s:o}", "group", groups[g].label, "expression",
                                   groups[g].expr, "steps", gs);
            if (size > 0 && size < min_count)
                bad |= json_object_set_new(go, "suppressed", json_true());
            else
                bad |= json_object_set_new(go, "size", json_integer((json_int_t)size));
            bad |= json_array_append_new(ga, go);
        }
        bad |= json_object_set_new(
            res, "breakdown",
            json_pack("{s:O,s:o,s:I}", "by", by, "groups", ga, "min_count", (json_int_t)min_count));
    }
    /* Checked before the commit: the tags are stored only with a whole report. */
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "funnel: out of memory building the report");
        goto out;
    }
    if (f.store) {
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
        else
            db_write_abort(db, txn);
    }
    if (rc == CP_OK) {
        if (json_object_set_new(res, "elapsed_ms",
                                json_real(ana_round((double)(time_mono_ns() - t0) / 1e6))))
            rc = CP_ERR(err, CP_ENOMEM, "funnel: out of memory building the report");
        else
            rc = db_json_out(res, out, err);
        res = NULL;
    }
    for (size_t k = 0; k < FUNNEL_MAX_STEPS; k++)
        index_bm_free(reached[k]);
    for (size_t g = 0; groups && g < ngroups; g++) {
        free(groups[g].label);
        free(groups[g].expr);
        index_bm_free(groups[g].bm);
    }
    free(groups);
    index_bm_free(pop);
    json_decref(res);
    json_decref(req);
    json_decref(clabel);
    json_decref(by);
    json_decref(warnings);
    return rc;
}
