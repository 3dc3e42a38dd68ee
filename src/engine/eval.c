/*
 * eval.c — evaluating expressions over the index: the planner's resolver
 * (tags, crowds, attributes, values, did(), groups), the name checks that
 * turn a silent empty set into an error with suggestions, parsing with the
 * public limits, and as-of days.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "engine/engine_int.h"

/* -------------------------------------------------------------- resolver */

static cp_status r_tag(void *ctx, const char *path, const roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    uint32_t id = 0;
    /* A slug path, else a display path naming exactly one tag (an
     * ambiguous one was reported by db_check_names). */
    if (db_tag_resolve(db, path, &id, NULL) != CP_OK)
        id = 0;
    const idx_tag_t *t = id ? index_tag(db->ix, id) : NULL;
    if (t == NULL)
        return CP_ENOTFOUND;
    *out = t->eff;
    return CP_OK;
}

void crowds_mark_used(const crowd_rec_t *c, int64_t now_ms)
{
    /* under a read lock other readers may mark at once: a relaxed store of
     * a time is all it takes (any of the racing times will do) */
    __atomic_store_n(&((crowd_rec_t *)c)->last_used, now_ms, __ATOMIC_RELAXED);
}

static cp_status r_crowd(void *ctx, const char *name, const roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    const crowd_rec_t *c = crowd_set_find(&db->crowds, name);
    const roaring_bitmap_t *bm = c ? index_crowd(db->ix, c->id) : NULL;
    if (bm == NULL)
        return CP_ENOTFOUND;
    crowds_mark_used(c, time_now_ms()); /* expiry: evaluated counts as used */
    *out = bm;
    return CP_OK;
}

static cp_status r_attr(void *ctx, const char *name, plan_attr_t *out)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = NULL;
    if (name == NULL) {
        /* near() without an attribute: the first geo attribute defined. */
        for (uint32_t i = 1; i <= db->sch.n && a == NULL; i++) {
            const schema_attr_t *x = schema_get(&db->sch, i);
            if (x && x->type == CP_ATTR_GEO)
                a = x;
        }
    } else {
        a = schema_find(&db->sch, name, strlen(name));
    }
    const idx_attr_t *ia = a ? index_attr(db->ix, a->id) : NULL;
    if (ia == NULL)
        return CP_ENOTFOUND;
    memset(out, 0, sizeof *out);
    out->type = a->type;
    out->handle = (int32_t)a->id;
    out->exists = index_attr_exists(db->ix, a->id);
    out->bsi = ia->bsi;
    out->geo = ia->geo;
    return CP_OK;
}

static const roaring_bitmap_t *r_value(void *ctx, int32_t handle, const char *v, size_t len)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = schema_get(&db->sch, (uint32_t)handle);
    if (a == NULL)
        return NULL;
    uint32_t vid = schema_value_find(a, v, len);
    return vid ? index_value_bitmap(db->ix, a->id, vid) : NULL;
}

/* STARTS WITH: a scan of the attribute's value dictionary (a memcmp per
 * value: ~16M values of the largest STRING dictionary take tens of ms). */
static cp_status r_prefix(void *ctx, int32_t handle, const char *prefix, size_t len,
                          roaring_bitmap_t *out)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = schema_get(&db->sch, (uint32_t)handle);
    if (a == NULL)
        return CP_OK;
    for (uint32_t vid = 1; vid <= a->nvalues; vid++) {
        if (a->value_lens[vid] < len || memcmp(a->values[vid], prefix, len) != 0)
            continue;
        const roaring_bitmap_t *bm = index_value_bitmap(db->ix, a->id, vid);
        if (bm != NULL)
            roaring_bitmap_or_inplace(out, bm);
    }
    return CP_OK;
}

static cp_status r_did(void *ctx, const char *event, const beh_prop_t *filters, size_t n,
                       const beh_t **beh, uint32_t *series, size_t *bad)
{
    cp_db_t *db = ctx;
    for (size_t i = 0; i < n; i++) {
        int ok = 0;
        for (size_t k = 0; k < db->cfg.nindexed && !ok; k++)
            ok = strlen(db->cfg.indexed[k]) == filters[i].nlen &&
                 memcmp(db->cfg.indexed[k], filters[i].name, filters[i].nlen) == 0;
        if (!ok) {
            *bad = i;
            return CP_EINVAL;
        }
    }
    *beh = db->beh;
    return beh_resolve(db->beh, event, strlen(event), filters, n, series);
}

/* 1 if group g's trait `trait` matches (plan.h: r_group's contract). */
static int group_matches(const group_rec_t *g, const char *trait, int negate,
                         const char *const *values, const size_t *lens, size_t n, int *has)
{
    const json_t *v = json_object_get(g->traits, trait);
    char buf[64];
    const char *s;
    size_t len;
    *has = v != NULL && !json_is_null(v);
    if (!*has || !group_trait_text(v, buf, sizeof buf, &s, &len))
        return 0;
    int eq = 0;
    for (size_t i = 0; i < n && !eq; i++)
        eq = lens[i] == len && memcmp(values[i], s, len) == 0;
    return negate ? !eq : eq;
}

/* Read lock held: the members of a group, or of the groups a trait
 * selects, as a new bitmap (a scan of the groups: there are few next to
 * users). */
static cp_status r_group(void *ctx, const char *name, const char *trait, int negate,
                         const char *const *values, const size_t *lens, size_t n,
                         roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    *out = NULL;
    if (trait == NULL) {
        const group_rec_t *g = group_find(&db->groups, name, strlen(name));
        if (g == NULL)
            return CP_ENOTFOUND;
        *out = roaring_bitmap_copy(g->members);
        return *out ? CP_OK : CP_ENOMEM;
    }
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL)
        return CP_ENOMEM;
    int any = 0;
    for (size_t i = 0; i < db->groups.n; i++) {
        const group_rec_t *g = &db->groups.items[i];
        int has;
        if (group_matches(g, trait, negate, values, lens, n, &has))
            roaring_bitmap_or_inplace(bm, g->members);
        any |= has;
    }
    if (!any) {
        roaring_bitmap_free(bm);
        return CP_ENOTFOUND;
    }
    *out = bm;
    return CP_OK;
}

/* ---------------------------------------------------- names and values */

#define SUGGEST_MAX_CP 64        /* longer texts are not compared */
#define SUGGEST_MAX_SCAN 200000u /* dictionary entries compared per value */

/* Code points of s (ASCII lower-cased) into cp[]; -1 when longer than
 * SUGGEST_MAX_CP or not UTF-8. Chinese compares character by character,
 * not byte by byte, so 深圳 and 深圳市 are one edit apart. */
static int code_points(const char *s, size_t len, uint32_t *cp)
{
    int n = 0;
    for (size_t i = 0; i < len; n++) {
        if (n == SUGGEST_MAX_CP)
            return -1;
        unsigned char c = (unsigned char)s[i];
        uint32_t u;
        size_t w = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (i + w > len)
            return -1;
        u = w == 1 ? c : w == 2 ? c & 0x1f : w == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; k < w; k++)
            u = u << 6 | ((unsigned char)s[i + k] & 0x3f);
        cp[n] = u >= 'A' && u <= 'Z' ? u + 32 : u;
        i += w;
    }
    return n;
}

/* Levenshtein distance of two code point strings. */
static int edit_distance(const uint32_t *a, int na, const uint32_t *b, int nb)
{
    int row[SUGGEST_MAX_CP + 1];
    for (int j = 0; j <= nb; j++)
        row[j] = j;
    for (int i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

typedef struct suggest {
    const char *text[3];
    int dist[3];
    int n;
} suggest_t;

static void suggest_offer(suggest_t *sg, const uint32_t *v, int nv, const char *cand, size_t cl)
{
    uint32_t c[SUGGEST_MAX_CP];
    int nc = code_points(cand, cl, c);
    if (nc < 0)
        return;
    int longest = nv > nc ? nv : nc;
    /* The length difference bounds the distance from below: most of a
     * large dictionary is skipped without the quadratic comparison. */
    if (abs(nv - nc) > 1 + longest / 4)
        return;
    int d = edit_distance(v, nv, c, nc);
    if (d > 1 + longest / 4 || d >= longest)
        return;
    for (int i = 0; i < sg->n; i++)
        if (strcmp(sg->text[i], cand) == 0)
            return;
    int at = sg->n < 3 ? sg->n++ : 3;
    while (at > 0 && sg->dist[at - 1] > d) {
        if (at < 3) {
            sg->text[at] = sg->text[at - 1];
            sg->dist[at] = sg->dist[at - 1];
        }
        at--;
    }
    if (at < 3) {
        sg->text[at] = cand;
        sg->dist[at] = d;
    }
}

void db_value_suggest(const schema_attr_t *a, const char *v, size_t len, char *buf, size_t cap)
{
    suggest_t sg = {0};
    uint32_t cv[SUGGEST_MAX_CP];
    int nv = code_points(v, len, cv);
    buf[0] = '\0';
    if (nv <= 0)
        return;
    uint32_t scan = a->nvalues < SUGGEST_MAX_SCAN ? a->nvalues : SUGGEST_MAX_SCAN;
    for (uint32_t i = 1; i <= scan; i++)
        if (a->values[i] != NULL && schema_alias_find(a, a->values[i], a->value_lens[i]) == 0)
            suggest_offer(&sg, cv, nv, a->values[i], a->value_lens[i]);
    for (uint32_t i = 0; i < a->nalias && i < SUGGEST_MAX_SCAN; i++)
        suggest_offer(&sg, cv, nv, a->alias_text[i], strlen(a->alias_text[i]));
    if (sg.n == 0)
        return;
    size_t off = (size_t)snprintf(buf, cap, "; did you mean ");
    for (int i = 0; i < sg.n && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s\"%.60s\"",
                                i == 0          ? ""
                                : i == sg.n - 1 ? " or "
                                                : ", ",
                                sg.text[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "?");
}

/* The "never seen" check of one ENUM/STRING value in node n. */
static cp_status check_value(cp_db_t *db, const expr_node_t *n, const schema_attr_t *a,
                             const expr_value_t *v, cp_error_t *err)
{
    if (v->kind != VAL_STRING || v->s == NULL || schema_value_find(a, v->s, v->slen) != 0)
        return CP_OK; /* wrong types are the planner's to report */
    char hint[256];
    db_value_suggest(a, v->s, v->slen, hint, sizeof hint);
    return CP_ERR_AT(err, CP_ENOTFOUND, n->line, n->column,
                     "attribute \"%s\" has no value \"%.*s\"%s%s", a->name,
                     (int)(v->slen > 200 ? 200 : v->slen), v->s, hint,
                     hint[0] ? "" : " (crowdpack attrs show lists its values)");
}

cp_status db_check_names(cp_db_t *db, const expr_node_t *n, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if (n == NULL)
        return CP_OK;
    switch (n->kind) {
    case EXPR_AND:
    case EXPR_OR:
    case EXPR_NOT:
        for (size_t i = 0; i < n->nargs && rc == CP_OK; i++)
            rc = db_check_names(db, n->args[i], err);
        return rc;
    case EXPR_TAG: {
        uint32_t id = 0;
        if (n->name == NULL || tax_find(&db->tax, n->name, strlen(n->name)))
            return CP_OK;
        rc = db_tag_resolve(db, n->name, &id, err);
        if (rc == CP_ENOTFOUND)
            return CP_OK; /* the planner says "unknown tag" at the same place */
        if (rc && err) {
            err->line = n->line;
            err->column = n->column;
        }
        return rc;
    }
    case EXPR_CMP:
    case EXPR_IN: {
        /* `=` and IN: a value never seen is a typo or another spelling,
         * never an intended empty set. `!=` is left alone: "everyone with
         * a city but X" is meaningful even before X is seen. */
        if (n->name == NULL || (n->kind == EXPR_CMP && n->op != OP_EQ))
            return CP_OK;
        const schema_attr_t *a = schema_find(&db->sch, n->name, strlen(n->name));
        if (a == NULL || (a->type != CP_ATTR_ENUM && a->type != CP_ATTR_STRING))
            return CP_OK;
        for (size_t i = 0; i < n->nvalues && rc == CP_OK; i++)
            rc = check_value(db, n, a, &n->values[i], err);
        return rc;
    }
    default:
        return CP_OK;
    }
}

/* `!=` on a value the attribute never had matches everyone with a value:
 * maybe meant, maybe a typo, so it is a warning, not an error. */
static int warn_values(cp_db_t *db, const expr_node_t *n, json_t *arr)
{
    int bad = 0;
    if (n == NULL)
        return 0;
    for (size_t i = 0; i < n->nargs && !bad; i++)
        bad = warn_values(db, n->args[i], arr);
    if (bad || n->kind != EXPR_CMP || n->op != OP_NE || n->name == NULL)
        return bad;
    const schema_attr_t *a = schema_find(&db->sch, n->name, strlen(n->name));
    if (a == NULL || (a->type != CP_ATTR_ENUM && a->type != CP_ATTR_STRING))
        return 0;
    for (size_t i = 0; i < n->nvalues && !bad; i++) {
        const expr_value_t *v = &n->values[i];
        if (v->kind != VAL_STRING || v->s == NULL || schema_value_find(a, v->s, v->slen) != 0)
            continue;
        char hint[256], msg[700];
        db_value_suggest(a, v->s, v->slen, hint, sizeof hint);
        snprintf(
            msg, sizeof msg,
            "attribute \"%s\" has no value \"%.*s\"%s — `!=` on it matches every user with a %s",
            a->name, (int)(v->slen > 200 ? 200 : v->slen), v->s, hint, a->name);
        bad = json_array_append_new(arr,
                                    json_pack("{s:s,s:i,s:i,s:s}", "code", "unknown_value", "line",
                                              n->line, "column", n->column, "message", msg));
    }
    return bad;
}

cp_status cp_expr_warnings_json(cp_db_t *db, const char *expr, const char *json_tree, size_t len,
                                char **out, cp_error_t *err)
{
    if (out == NULL || (expr == NULL) == (json_tree == NULL))
        return CP_ERR(err, CP_EINVAL, "give out and exactly one of the text and the tree");
    *out = NULL;
    expr_t *e = NULL;
    cp_status rc = expr ? db_parse_text(expr, &e, err) : db_parse_json(json_tree, len, &e, err);
    if (rc)
        return rc;
    if ((rc = db_read_begin(db, err))) {
        expr_free(e);
        return rc;
    }
    json_t *arr = json_array();
    if (arr != NULL && warn_values(db, expr_root(e), arr)) {
        json_decref(arr);
        arr = NULL;
    }
    db_read_end(db);
    expr_free(e);
    return db_json_out(arr ? json_pack("{s:o}", "warnings", arr) : NULL, out, err);
}

static cp_status r_did_sum(void *ctx, const char *event, const char *prop, const beh_t **beh,
                           uint32_t *pos, uint32_t *neg, int *scale)
{
    cp_db_t *db = ctx;
    uint32_t bare;
    size_t elen = strlen(event), plen = strlen(prop);
    cp_status rc = beh_resolve(db->beh, event, elen, NULL, 0, &bare);
    if (rc)
        return rc;
    if (!meas_sum_scale(db->meas, event, elen, prop, plen, scale))
        return CP_EINVAL;
    uint32_t *ids[2] = {pos, neg};
    for (int k = 0; k < 2; k++) {
        uint8_t key[BEH_KEY_MAX];
        size_t klen;
        *ids[k] = BEH_NO_SERIES;
        if (beh_sum_series_key(event, elen, prop, plen, k, key, &klen) == CP_OK &&
            !beh_series_lookup(db->beh, key, klen, ids[k]))
            *ids[k] = BEH_NO_SERIES;
    }
    *beh = db->beh;
    return CP_OK;
}

void db_resolver(cp_db_t *db, plan_resolver_t *r)
{
    memset(r, 0, sizeof *r);
    r->ctx = db;
    r->universe = db->ix->universe;
    r->tag = r_tag;
    r->crowd = r_crowd;
    r->attr = r_attr;
    r->value = r_value;
    r->did = db->beh ? r_did : NULL;
    r->group = r_group;
    r->prefix = r_prefix;
    r->did_sum = db->beh && db->meas ? r_did_sum : NULL;
}

cp_status db_eval_tree(cp_db_t *db, const expr_node_t *root, roaring_bitmap_t **out,
                       cp_error_t *err)
{
    return db_eval_tree_as_of(db, root, 0, out, err);
}

cp_status db_eval_tree_as_of(cp_db_t *db, const expr_node_t *root, int32_t as_of_day,
                             roaring_bitmap_t **out, cp_error_t *err)
{
    *out = NULL;
    plan_resolver_t r;
    db_resolver(db, &r);
    r.as_of_day = as_of_day;
    plan_t *p = NULL;
    cp_status rc = plan_build(root, &r, &p, err);
    if (rc)
        return rc;
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL) {
        plan_free(p);
        return CP_ERR(err, CP_ENOMEM, "out of memory evaluating an expression");
    }
    rc = plan_eval(p, db->ev, bm);
    plan_free(p);
    if (rc) {
        index_bm_free(bm);
        return CP_ERR(err, rc, "evaluating an expression failed: %s", cp_strerror(rc));
    }
    atomic_fetch_add(&db->queries, 1);
    *out = bm;
    return CP_OK;
}

cp_status db_tag_resolve(cp_db_t *db, const char *path, uint32_t *id, cp_error_t *err)
{
    *id = tax_find(&db->tax, path, strlen(path));
    if (*id)
        return CP_OK;
    uint32_t ids[8];
    size_t n = 0;
    if (tax_find_display(&db->tax, path, strlen(path), ids, 8, &n))
        return CP_ERR(err, CP_ENOMEM, "out of memory resolving tag \"%.200s\"", path);
    if (n == 1) {
        *id = ids[0];
        return CP_OK;
    }
    if (n == 0)
        return CP_ERR(err, CP_ENOTFOUND, "tag \"%.200s\" not found", path);
    char list[320];
    size_t off = 0;
    for (size_t i = 0; i < n && i < 8 && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                         tax_get(&db->tax, ids[i])->path);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return CP_ERR(err, CP_EINVAL,
                  "tag \"%.200s\" is ambiguous: it is the display path of %zu tags (%s%s); "
                  "write the slug path",
                  path, n, list, n > 8 ? ", ..." : "");
}

cp_status db_parse_text(const char *expr, expr_t **out, cp_error_t *err)
{
    *out = NULL;
    if (expr == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    size_t len = strnlen(expr, CP_EXPR_MAX_LEN + 1);
    if (len > CP_EXPR_MAX_LEN)
        return CP_ERR(err, CP_ELIMIT, "expression longer than %d bytes", CP_EXPR_MAX_LEN);
    return expr_parse(expr, len, out, err);
}

cp_status db_parse_json(const char *json, size_t len, expr_t **out, cp_error_t *err)
{
    *out = NULL;
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    if (len > CP_EXPR_MAX_LEN * 8)
        return CP_ERR(err, CP_ELIMIT, "expression JSON longer than %d bytes", CP_EXPR_MAX_LEN * 8);
    json_error_t je;
    json_t *j = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the expression");
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "invalid JSON at line %d, column %d: %s", je.line, je.column,
                      je.text);
    cp_status rc = expr_from_json(j, out, err);
    json_decref(j);
    return rc;
}

cp_status db_as_of_day(const char *as_of, int32_t *day, cp_error_t *err)
{
    *day = 0;
    if (as_of == NULL || *as_of == '\0')
        return CP_OK;
    int64_t secs;
    size_t len = strnlen(as_of, 64);
    if (len >= 64 || time_parse(as_of, len, &secs) != 0)
        return CP_ERR(err, CP_EINVAL, "as_of \"%.64s\" is not a date such as 2011-06-30", as_of);
    *day = beh_day_of(secs);
    if (*day == 0)
        *day = INT32_MIN; /* 1970-01-01 itself; 0 would mean today */
    return CP_OK;
}
