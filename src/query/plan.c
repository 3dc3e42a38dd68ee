/*
 * plan.c — the planner: expression tree (ast.h) -> plan tree (plan_int.h).
 *
 * Names are resolved through the resolver, values are checked against the
 * attribute's type, and each predicate is lowered to plan nodes; the node
 * constructors (plan_node.c) apply the structural rules as they build, so
 * the tree comes out in the shape the chunked evaluator runs fastest:
 *
 *  - nested ANDs and ORs are flattened;
 *  - an AND keeps positive terms (sorted by estimated size, smallest first,
 *    so a chunk is abandoned as early as possible) and negative terms that
 *    are subtracted from the running result (ANDNOT) — a NOT under an AND
 *    never becomes a universe complement; NOT (a OR b) under an AND becomes
 *    two negative terms;
 *  - a NOT anywhere else is "universe ANDNOT x";
 *  - comparisons on integers and timestamps are inclusive [lo, hi] ranges
 *    on the bit-sliced index, IN lists on one attribute are coalesced into
 *    as few ranges as possible, `!=` is "exists ANDNOT value" (users
 *    without a value never match a comparison; `NOT a = v` does include
 *    them);
 *  - empty sets and `all` are folded away (x AND empty = empty, x OR all =
 *    all, NOT all = empty, ...).
 *
 * The root is an AND that includes the universe, so results never contain
 * users outside it even if an index bitmap still holds a deleted user.
 *
 * Timestamps: a literal is one instant. "2024-01-01" is midnight UTC at
 * the start of that day, so `t <= "2024-01-01"` does NOT include the rest
 * of January 1st; write `t < "2024-01-02"` for "up to the end of the day".
 * Integer literals on a timestamp attribute are seconds since the epoch.
 *
 * Estimates are upper bounds: bitmap leaves are exact, ranges are bounded
 * by the users having a value, an AND by its smallest positive term, an OR
 * by the sum, a complement by the universe; did() by the users in its
 * window's days (the universe when users who never did it match).

 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/measure.h"
#include "query/plan_node.h"

/* Guard against trees deeper than any parser produces (JSON and text are
 * limited to CP_EXPR_MAX_DEPTH); keeps the recursion and the evaluator's
 * buffer stack bounded even for hand-built trees. */
#define PLAN_MAX_DEPTH (4 * CP_EXPR_MAX_DEPTH)

/* ------------------------------------------------------------ messages */

static const char *op_text(expr_op op)
{
    switch (op) {
    case OP_EQ:
        return "=";
    case OP_NE:
        return "!=";
    case OP_LT:
        return "<";
    case OP_LE:
        return "<=";
    case OP_GT:
        return ">";
    case OP_GE:
        return ">=";
    }
    return "?";
}

static const char *node_op_text(const expr_node_t *n)
{
    switch (n->kind) {
    case EXPR_BETWEEN:
        return "BETWEEN";
    case EXPR_IN:
        return "IN";
    case EXPR_NOT_IN:
        return "NOT IN";
    case EXPR_PREFIX:
        return "STARTS WITH";
    case EXPR_WITHIN:
        return "WITHIN LAST";
    case EXPR_OLDER:
        return "OLDER THAN";
    default:
        return op_text(n->op);
    }
}

static const char *type_text(cp_attr_type t)
{
    switch (t) {
    case CP_ATTR_INT:
        return "int";
    case CP_ATTR_ENUM:
        return "enum";
    case CP_ATTR_STRING:
        return "string";
    case CP_ATTR_BOOL:
        return "bool";
    case CP_ATTR_TIMESTAMP:
        return "timestamp";
    case CP_ATTR_GEO:
        return "geo";
    }
    return "unknown";
}

/* A literal as the user wrote it, for messages (strings quoted, cut at 64
 * bytes). */
static void value_text(const expr_value_t *v, char *buf, size_t cap)
{
    switch (v->kind) {
    case VAL_INT:
        snprintf(buf, cap, "%lld", (long long)v->i);
        return;
    case VAL_REAL:
        fmt_double(v->r, buf, cap);
        return;
    case VAL_BOOL:
        snprintf(buf, cap, "%s", v->i ? "true" : "false");
        return;
    case VAL_STRING: {
        size_t len = v->s ? v->slen : 0;
        snprintf(buf, cap, "\"%.*s%s\"", (int)(len > 64 ? 64 : len), v->s ? v->s : "",
                 len > 64 ? "..." : "");
        return;
    }
    }
    snprintf(buf, cap, "(unknown value)");
}

static cp_status type_error(builder_t *b, const expr_node_t *n, const plan_attr_t *a,
                            const expr_value_t *v, const char *expected)
{
    char vt[96];
    value_text(v, vt, sizeof vt);
    return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                     "attribute \"%s\" is %s, got %s in '%s' (expected %s)", n->name,
                     type_text(a->type), vt, node_op_text(n), expected);
}

/* --------------------------------------------------------- predicates */

/* Resolves a name through one of the resolver's callbacks, mapping
 * CP_ENOTFOUND to "unknown <what> \"name\"" at the node's position. */
static cp_status resolve_set(builder_t *b, const expr_node_t *n, const char *what,
                             cp_status (*fn)(void *, const char *, const roaring_bitmap_t **),
                             pnode_t **out)
{
    const roaring_bitmap_t *bm = NULL;
    if (n->name == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "%s without a name", what);
    cp_status st = fn ? fn(b->r->ctx, n->name, &bm) : CP_ENOTFOUND;
    if (st == CP_ENOTFOUND)
        return CP_ERR_AT(b->err, st, n->line, n->column, "unknown %s \"%s\"", what, n->name);
    if (st != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "%s \"%s\": %s", what, n->name,
                         cp_strerror(st));
    return plan__mk_bitmap(b, bm, out);
}

static cp_status resolve_attr(builder_t *b, const expr_node_t *n, const char *name, plan_attr_t *a)
{
    memset(a, 0, sizeof *a);
    cp_status st = b->r->attr ? b->r->attr(b->r->ctx, name, a) : CP_ENOTFOUND;
    if (st == CP_ENOTFOUND && name == NULL)
        return CP_ERR_AT(b->err, st, n->line, n->column,
                         "near() without an attribute name needs a default geo attribute, and "
                         "none is defined");
    if (st == CP_ENOTFOUND)
        return CP_ERR_AT(b->err, st, n->line, n->column, "unknown attribute \"%s\"", name);
    if (st != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "attribute \"%s\": %s",
                         name ? name : "(default geo)", cp_strerror(st));
    return CP_OK;
}

/* An INT or TIMESTAMP literal as int64. */
static cp_status int_value(builder_t *b, const expr_node_t *n, const plan_attr_t *a,
                           const expr_value_t *v, int64_t *out)
{
    if (v->kind == VAL_INT) {
        *out = v->i;
        return CP_OK;
    }
    if (a->type == CP_ATTR_TIMESTAMP && v->kind == VAL_STRING) {
        if (v->s != NULL && time_parse(v->s, v->slen, out) == 0)
            return CP_OK;
        return type_error(b, n, a, v,
                          "an ISO 8601 UTC time such as \"2024-01-01\" or "
                          "\"2024-01-01T10:20:30Z\", or seconds since the epoch");
    }
    return type_error(b, n, a, v,
                      a->type == CP_ATTR_INT ? "an integer"
                                             : "a time such as \"2024-01-01\" or epoch seconds");
}

static const roaring_bitmap_t *exists_of(const plan_attr_t *a)
{
    if (a->exists != NULL)
        return a->exists;
    return a->bsi ? a->bsi->exists : NULL;
}

static cp_status plan_numeric(builder_t *b, const expr_node_t *n, const plan_attr_t *a,
                              pnode_t **out)
{
    int64_t v, w;
    cp_status st;
    if (n->kind == EXPR_BETWEEN) {
        if ((st = int_value(b, n, a, &n->values[0], &v)) != CP_OK ||
            (st = int_value(b, n, a, &n->values[1], &w)) != CP_OK)
            return st;
        return plan__mk_range(b, a->bsi, v, w, out); /* v > w: empty, as in SQL */
    }
    if (n->kind == EXPR_IN) {
        nvec_t kids = {0};
        for (size_t i = 0; i < n->nvalues; i++) {
            pnode_t *k = NULL;
            if ((st = int_value(b, n, a, &n->values[i], &v)) != CP_OK ||
                (st = plan__mk_range(b, a->bsi, v, v, &k)) != CP_OK)
                goto in_out;
            if (plan__nvec_push(&kids, k) != CP_OK) {
                st = plan__oom(b);
                goto in_out;
            }
        }
        st = plan__mk_or(b, &kids, out);
    in_out:
        plan__nvec_free(&kids);
        return st;
    }
    if ((st = int_value(b, n, a, &n->values[0], &v)) != CP_OK)
        return st;
    switch (n->op) {
    case OP_EQ:
        return plan__mk_range(b, a->bsi, v, v, out);
    case OP_LE:
        return plan__mk_range(b, a->bsi, INT64_MIN, v, out);
    case OP_GE:
        return plan__mk_range(b, a->bsi, v, INT64_MAX, out);
    case OP_LT:
        if (v == INT64_MIN)
            return plan__mk_empty(b, out);
        return plan__mk_range(b, a->bsi, INT64_MIN, v - 1, out);
    case OP_GT:
        if (v == INT64_MAX)
            return plan__mk_empty(b, out);
        return plan__mk_range(b, a->bsi, v + 1, INT64_MAX, out);
    case OP_NE: {
        pnode_t *ex = NULL, *eq = NULL;
        if ((st = plan__mk_bitmap(b, exists_of(a), &ex)) != CP_OK ||
            (st = plan__mk_range(b, a->bsi, v, v, &eq)) != CP_OK)
            return st;
        return plan__mk_andnot(b, ex, eq, out);
    }
    }
    return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "unknown operator %d", (int)n->op);
}

/* The value bitmap of an ENUM/STRING/BOOL literal. */
static cp_status plan_value(builder_t *b, const expr_node_t *n, const plan_attr_t *a,
                            const expr_value_t *v, pnode_t **out)
{
    const char *s;
    size_t len;
    if (a->type == CP_ATTR_BOOL) {
        int t;
        if (v->kind == VAL_BOOL)
            t = v->i != 0;
        else if (v->kind == VAL_STRING && v->s && v->slen == 4 && strncasecmp(v->s, "true", 4) == 0)
            t = 1;
        else if (v->kind == VAL_STRING && v->s && v->slen == 5 &&
                 strncasecmp(v->s, "false", 5) == 0)
            t = 0;
        else
            return type_error(b, n, a, v, "true or false");
        s = t ? "true" : "false";
        len = t ? 4 : 5;
    } else {
        if (v->kind != VAL_STRING || v->s == NULL)
            return type_error(b, n, a, v, "a string");
        s = v->s;
        len = v->slen;
    }
    const roaring_bitmap_t *bm = b->r->value ? b->r->value(b->r->ctx, a->handle, s, len) : NULL;
    return plan__mk_bitmap(b, bm, out);
}

static cp_status plan_categorical(builder_t *b, const expr_node_t *n, const plan_attr_t *a,
                                  pnode_t **out)
{
    cp_status st;
    if (n->kind == EXPR_BETWEEN || (n->kind == EXPR_CMP && n->op != OP_EQ && n->op != OP_NE))
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "attribute \"%s\" is %s: operator %s is not supported (use =, != or "
                         "IN)",
                         n->name, type_text(a->type), node_op_text(n));
    if (n->kind == EXPR_IN) {
        nvec_t kids = {0};
        for (size_t i = 0; i < n->nvalues; i++) {
            pnode_t *k = NULL;
            if ((st = plan_value(b, n, a, &n->values[i], &k)) != CP_OK)
                goto in_out;
            if (plan__nvec_push(&kids, k) != CP_OK) {
                st = plan__oom(b);
                goto in_out;
            }
        }
        st = plan__mk_or(b, &kids, out);
    in_out:
        plan__nvec_free(&kids);
        return st;
    }
    pnode_t *eq = NULL;
    if ((st = plan_value(b, n, a, &n->values[0], &eq)) != CP_OK)
        return st;
    if (n->op == OP_EQ) {
        *out = eq;
        return CP_OK;
    }
    pnode_t *ex = NULL;
    if ((st = plan__mk_bitmap(b, exists_of(a), &ex)) != CP_OK)
        return st;
    return plan__mk_andnot(b, ex, eq, out);
}

static cp_status plan_compare(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    size_t need = n->kind == EXPR_CMP ? 1 : n->kind == EXPR_BETWEEN ? 2 : 1;
    if (n->name == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "comparison without an attribute");
    int list = n->kind == EXPR_IN || n->kind == EXPR_NOT_IN;
    if (n->nvalues < need || n->values == NULL || (!list && n->nvalues != need))
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "'%s' on attribute \"%s\" has %zu values", node_op_text(n), n->name,
                         n->nvalues);
    plan_attr_t a;
    cp_status st = resolve_attr(b, n, n->name, &a);
    if (st != CP_OK)
        return st;
    if (n->kind == EXPR_NOT_IN && a.type != CP_ATTR_GEO) {
        /* exists ANDNOT (the IN list), as `!=` is exists ANDNOT `=` */
        expr_node_t in = *n;
        pnode_t *ex = NULL, *any = NULL;
        in.kind = EXPR_IN;
        if ((st = plan__mk_bitmap(b, exists_of(&a), &ex)) != CP_OK)
            return st;
        st = a.type == CP_ATTR_INT || a.type == CP_ATTR_TIMESTAMP
                 ? plan_numeric(b, &in, &a, &any)
                 : plan_categorical(b, &in, &a, &any);
        if (st != CP_OK)
            return st;
        return plan__mk_andnot(b, ex, any, out);
    }
    switch (a.type) {
    case CP_ATTR_INT:
    case CP_ATTR_TIMESTAMP:
        return plan_numeric(b, n, &a, out);
    case CP_ATTR_ENUM:
    case CP_ATTR_STRING:
    case CP_ATTR_BOOL:
        return plan_categorical(b, n, &a, out);
    case CP_ATTR_GEO:
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "attribute \"%s\" is geo: operator %s is not supported (use near(lat, "
                         "lon, radius))",
                         n->name, node_op_text(n));
    }
    return CP_ERR_AT(b->err, CP_EINTERNAL, n->line, n->column,
                     "attribute \"%s\" has unknown type %d", n->name, (int)a.type);
}

static cp_status own_bitmap(builder_t *b, roaring_bitmap_t *bm)
{
    plan_t *p = b->p;
    if (p->nowned == p->owned_cap) {
        size_t cap = p->owned_cap ? p->owned_cap * 2 : 4;
        roaring_bitmap_t **v = realloc(p->owned, cap * sizeof *v);
        if (v == NULL)
            return CP_ENOMEM;
        p->owned = v;
        p->owned_cap = cap;
    }
    p->owned[p->nowned++] = bm;
    return CP_OK;
}

/* near(): evaluated once into a bitmap owned by the plan (geo cells do
 * not line up with chunks, and the exact distance check is per user). */
static cp_status plan_near(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    double lat = n->near.lat, lon = n->near.lon, radius = expr_near_radius_m(n);
    if (!(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180))
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "near(): (%g, %g) is not a latitude in [-90, 90] and a longitude in "
                         "[-180, 180]",
                         lat, lon);
    if (!(radius >= 0) || !isfinite(radius))
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "near(): the radius must be a non-negative distance, got %g m", radius);
    plan_attr_t a;
    cp_status st = resolve_attr(b, n, n->name, &a);
    if (st != CP_OK)
        return st;
    if (a.type != CP_ATTR_GEO)
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "near(): attribute \"%s\" is %s, not geo", n->name ? n->name : "",
                         type_text(a.type));
    if (a.geo == NULL)
        return plan__mk_empty(b, out);
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL)
        return plan__oom(b);
    if (own_bitmap(b, bm) != CP_OK) {
        roaring_bitmap_free(bm);
        return plan__oom(b);
    }
    if ((st = geo_index_near(a.geo, lat, lon, radius, bm)) != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "near(%g, %g, %g m): %s", lat, lon, radius,
                         cp_strerror(st));
    roaring_bitmap_run_optimize(bm);
    return plan__mk_bitmap(b, bm, out);
}

/* group:ID and group.TRAIT predicates: materialised by the resolver into
 * a bitmap the plan owns (groups are few next to users; their members are
 * not in the chunked index). */
static cp_status plan_group(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    const char *trait = n->kind == EXPR_GROUP ? NULL : n->name;
    const char *gid = n->kind == EXPR_GROUP ? n->name : NULL;
    size_t nv = trait ? n->nvalues : 0;
    const char **vals = NULL;
    size_t *lens = NULL;
    if (n->name == NULL || (trait && nv == 0))
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "group predicate without %s",
                         n->name == NULL ? "a name" : "a value");
    if (nv) {
        vals = arena_alloc(&b->p->arena, nv * sizeof *vals);
        lens = arena_alloc(&b->p->arena, nv * sizeof *lens);
        if (vals == NULL || lens == NULL)
            return plan__oom(b);
        for (size_t i = 0; i < nv; i++) {
            const expr_value_t *v = &n->values[i];
            char buf[64];
            if (v->kind == VAL_STRING) {
                vals[i] = v->s ? v->s : "";
                lens[i] = v->s ? v->slen : 0;
                continue;
            }
            if (v->kind == VAL_INT)
                snprintf(buf, sizeof buf, "%lld", (long long)v->i);
            else if (v->kind == VAL_REAL)
                fmt_double(v->r, buf, sizeof buf);
            else
                snprintf(buf, sizeof buf, "%s", v->i ? "true" : "false");
            lens[i] = strlen(buf);
            if ((vals[i] = arena_strndup(&b->p->arena, buf, lens[i])) == NULL)
                return plan__oom(b);
        }
    }
    roaring_bitmap_t *bm = NULL;
    int negate = n->kind == EXPR_GROUP_CMP && n->op == OP_NE;
    cp_status st = b->r->group ? b->r->group(b->r->ctx, gid, trait, negate, vals, lens, nv, &bm)
                               : CP_ENOTFOUND;
    if (st == CP_ENOTFOUND)
        return trait
                   ? CP_ERR_AT(b->err, st, n->line, n->column, "no group has a trait \"%s\"", trait)
                   : CP_ERR_AT(b->err, st, n->line, n->column, "unknown group \"%s\"", gid);
    if (st == CP_ENOMEM)
        return plan__oom(b);
    if (st != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "group predicate: %s", cp_strerror(st));
    if (own_bitmap(b, bm) != CP_OK) {
        roaring_bitmap_free(bm);
        return plan__oom(b);
    }
    return plan__mk_bitmap(b, bm, out);
}

/* The as-of day of the resolver: 0 or INT32_MIN mean today (UTC). */
static int32_t as_of_day(const plan_resolver_t *r)
{
    if (r->as_of_day != 0 && r->as_of_day != INT32_MIN)
        return r->as_of_day;
    return beh_day_of(time_now_ms() / 1000);
}

/* has(attr) and attr IS NULL: the attribute's users with a value, or the
 * live users without one. */
static cp_status plan_has(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    plan_attr_t a;
    pnode_t *ex = NULL;
    cp_status st;
    if (n->name == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "has() without an attribute");
    if ((st = resolve_attr(b, n, n->name, &a)) != CP_OK ||
        (st = plan__mk_bitmap(b, exists_of(&a), &ex)) != CP_OK)
        return st;
    if (n->kind == EXPR_HAS) {
        *out = ex;
        return CP_OK;
    }
    return plan__mk_not(b, ex, out);
}

/*
 * STARTS WITH over the value dictionary: the resolver ORs the bitmaps of
 * the matching values into one bitmap owned by the plan (a prefix may
 * match thousands of values; one leaf keeps the plan small).
 */
static cp_status plan_prefix(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    plan_attr_t a;
    cp_status st;
    if (n->name == NULL || n->nvalues != 1 || n->values == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "STARTS WITH without a prefix");
    if ((st = resolve_attr(b, n, n->name, &a)) != CP_OK)
        return st;
    const expr_value_t *v = &n->values[0];
    if (a.type != CP_ATTR_STRING && a.type != CP_ATTR_ENUM)
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "attribute \"%s\" is %s: STARTS WITH needs a string or enum attribute",
                         n->name, type_text(a.type));
    if (v->kind != VAL_STRING || v->s == NULL)
        return type_error(b, n, &a, v, "a string");
    if (b->r->prefix == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "STARTS WITH is not supported here");
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL)
        return plan__oom(b);
    if (own_bitmap(b, bm) != CP_OK) {
        roaring_bitmap_free(bm);
        return plan__oom(b);
    }
    if ((st = b->r->prefix(b->r->ctx, a.handle, v->s, v->slen, bm)) != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "%s STARTS WITH: %s", n->name,
                         cp_strerror(st));
    roaring_bitmap_run_optimize(bm);
    return plan__mk_bitmap(b, bm, out);
}

/*
 * WITHIN LAST N d / OLDER THAN N d on a timestamp: with D the as-of day,
 * WITHIN is [start of day D-N+1, end of day D] (the days of did()'s
 * `last N d`; later timestamps do not count, as events after the as-of
 * day do not), OLDER is everything before the start of day D-N+1.
 */
static cp_status plan_relative(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    plan_attr_t a;
    cp_status st;
    if (n->name == NULL)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "%s without an attribute",
                         node_op_text(n));
    if (n->rel_days < 1 || n->rel_days > EXPR_DID_MAX_DAYS)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "%s %d days: out of range",
                         node_op_text(n), (int)n->rel_days);
    if ((st = resolve_attr(b, n, n->name, &a)) != CP_OK)
        return st;
    if (a.type != CP_ATTR_TIMESTAMP)
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "attribute \"%s\" is %s: %s needs a timestamp attribute", n->name,
                         type_text(a.type), node_op_text(n));
    int64_t day = as_of_day(b->r);
    int64_t start = (day - n->rel_days + 1) * 86400, end = (day + 1) * 86400 - 1;
    if (n->kind == EXPR_WITHIN)
        return plan__mk_range(b, a.bsi, start, end, out);
    return plan__mk_range(b, a.bsi, INT64_MIN, start - 1, out);
}

/*
 * did(): resolves the series, turns the window into days [d0, d1] ending
 * at the as-of day at the latest, and leaves a PN_DID evaluated chunk by
 * chunk by beh_window_chunk. Sums are compared for every user, 0 for those
 * who never did it, so `= 0`, `< k`, `<= k` and `!= k` include them (the
 * root clips to the universe); with no data in the window the node folds
 * to all or nothing.
 */
/* Per-user sums of a did() sum() window, gathered by beh_window_foreach. */
typedef struct sum_acc {
    uint64_t *e; /* user << 32 | part index; parts in val */
    int64_t *val;
    size_t n, cap;
    int neg;
    int oom;
} sum_acc_t;

static void sum_add(void *ctx, uint32_t user, uint64_t count)
{
    sum_acc_t *a = ctx;
    if (a->oom)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        uint64_t *e = realloc(a->e, cap * sizeof *e);
        if (e == NULL) {
            a->oom = 1;
            return;
        }
        a->e = e;
        int64_t *v = realloc(a->val, cap * sizeof *v);
        if (v == NULL) {
            a->oom = 1;
            return;
        }
        a->val = v;
        a->cap = cap;
    }
    a->e[a->n] = (uint64_t)user << 32 | (uint32_t)a->n;
    a->val[a->n] = a->neg ? -(int64_t)count : (int64_t)count; /* count <= 2^32 */
    a->n++;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static int sum_cmp(expr_op op, int64_t s, int64_t t)
{
    switch (op) {
    case OP_EQ:
        return s == t;
    case OP_NE:
        return s != t;
    case OP_LT:
        return s < t;
    case OP_LE:
        return s <= t;
    case OP_GT:
        return s > t;
    case OP_GE:
        return s >= t;
    }
    return 0;
}

/*
 * did(EVENT, window) sum(prop) op V: the event's day sums of prop (kept
 * in fixed point by the behaviour index, index/measure.h) added per user
 * over the window and compared with V in the same fixed point, so the
 * comparison is exact. Evaluated once into a bitmap owned by the plan (the
 * values are signed and wide, which the chunk kernels' bit-sliced counts
 * are not); users without events in the window have the sum 0 and match
 * when 0 op V holds.
 */
static cp_status plan_did_sum(builder_t *b, const expr_node_t *n, int32_t d0, int32_t d1,
                              pnode_t **out)
{
    const beh_t *beh = NULL;
    uint32_t series[2];
    int scale = 0;
    sum_acc_t acc = {0};
    cp_status st;
    if (n->nvalues > 0)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "did(%s, ...) sum(%s): sums take no property filters (only a window)",
                         n->name, n->did.sum_prop ? n->did.sum_prop : "");
    if (n->did.sum_prop == NULL || n->op == 0)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "did(%s) sum() without a "
                         "property or a comparison",
                         n->name);
    st = b->r->did_sum ? b->r->did_sum(b->r->ctx, n->name, n->did.sum_prop, &beh, &series[0],
                                       &series[1], &scale)
                       : CP_ENOTFOUND;
    if (st == CP_ENOTFOUND)
        return CP_ERR_AT(b->err, st, n->line, n->column, "unknown event \"%s\"", n->name);
    if (st == CP_EINVAL)
        return CP_ERR_AT(b->err, st, n->line, n->column,
                         "did(%s) sum(%s): no sum measure of event \"%s\" sums \"%s\", so its "
                         "day sums are not kept: add one to the measures (crowdpack measures; "
                         "only events recorded after that are summed)",
                         n->name, n->did.sum_prop, n->name, n->did.sum_prop);
    if (st != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "did(%s) sum(%s): %s", n->name,
                         n->did.sum_prop, cp_strerror(st));
    int64_t t;
    ev_prop_t tv = {0};
    const expr_value_t *v = &n->did.sum_value;
    if (v->kind == VAL_INT) {
        tv.kind = PV_INT;
        tv.i = v->i;
    } else if (v->kind == VAL_REAL) {
        tv.kind = PV_REAL;
        tv.d = v->r;
    } else {
        return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                         "did(%s) sum(%s) is compared with a number", n->name, n->did.sum_prop);
    }
    if (meas_number_fixed(&tv, scale, &t) != 0)
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                         "did(%s) sum(%s): the number is out of range", n->name, n->did.sum_prop);
    roaring_bitmap_t *bm = roaring_bitmap_create(), *seen = roaring_bitmap_create();
    if (bm == NULL || seen == NULL || own_bitmap(b, bm) != CP_OK) {
        if (bm)
            roaring_bitmap_free(bm);
        if (seen)
            roaring_bitmap_free(seen);
        return plan__oom(b);
    }
    for (int k = 0; k < 2 && beh != NULL; k++) {
        beh_window_t w;
        beh_window_init(beh, series[k], d0, d1, &w);
        acc.neg = k;
        beh_window_foreach(&w, sum_add, &acc);
    }
    if (acc.oom) {
        st = plan__oom(b);
        goto out;
    }
    if (acc.n) /* acc.e is NULL while empty */
        qsort(acc.e, acc.n, sizeof *acc.e, cmp_u64);
    for (size_t i = 0; i < acc.n;) {
        uint32_t user = (uint32_t)(acc.e[i] >> 32);
        int64_t s = 0; /* |parts| <= 2^32 a day, 36,600 days: no overflow */
        for (; i < acc.n && (uint32_t)(acc.e[i] >> 32) == user; i++)
            s += acc.val[(uint32_t)acc.e[i]];
        roaring_bitmap_add(seen, user);
        if (sum_cmp(n->op, s, t))
            roaring_bitmap_add(bm, user);
    }
    if (sum_cmp(n->op, 0, t)) { /* everyone else has the sum 0 */
        roaring_bitmap_t *rest = roaring_bitmap_andnot(b->r->universe, seen);
        if (rest == NULL) {
            st = plan__oom(b);
            goto out;
        }
        roaring_bitmap_or_inplace(bm, rest);
        roaring_bitmap_free(rest);
    }
    roaring_bitmap_run_optimize(bm);
    st = plan__mk_bitmap(b, bm, out);
out:
    roaring_bitmap_free(seen);
    free(acc.e);
    free(acc.val);
    return st;
}

static cp_status plan_did_window(builder_t *b, const expr_node_t *n, const beh_t *beh,
                                 uint32_t series, pnode_t **out);

static cp_status plan_did(builder_t *b, const expr_node_t *n, pnode_t **out)
{
    beh_prop_t f[BEH_MAX_FILTERS];
    char num[BEH_MAX_FILTERS][24];
    const beh_t *beh = NULL;
    uint32_t series = BEH_NO_SERIES;
    size_t bad = SIZE_MAX;
    if (n->name == NULL || (n->nvalues > 0 && (n->values == NULL || n->did.props == NULL)))
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "did() without an event");
    if (n->nvalues > BEH_MAX_FILTERS)
        return CP_ERR_AT(b->err, CP_ELIMIT, n->line, n->column,
                         "did(%s, ...) filters on %zu properties; at most %d can be combined",
                         n->name, n->nvalues, BEH_MAX_FILTERS);
    for (size_t i = 0; i < n->nvalues; i++) {
        const expr_value_t *v = &n->values[i];
        f[i].name = n->did.props[i];
        f[i].nlen = f[i].name ? strlen(f[i].name) : 0;
        switch (v->kind) {
        case VAL_STRING:
            f[i].value = v->s ? v->s : "";
            f[i].vlen = v->s ? v->slen : 0;
            break;
        case VAL_INT:
            f[i].vlen = (size_t)snprintf(num[i], sizeof num[i], "%lld", (long long)v->i);
            f[i].value = num[i];
            break;
        case VAL_BOOL:
            f[i].value = v->i ? "true" : "false";
            f[i].vlen = v->i ? 4 : 5;
            break;
        default:
            return CP_ERR_AT(b->err, CP_ETYPE, n->line, n->column,
                             "did(%s): the filter on \"%s\" must be a string, integer or "
                             "boolean",
                             n->name, f[i].name ? f[i].name : "");
        }
    }
    cp_status st = b->r->did ? b->r->did(b->r->ctx, n->name, f, n->nvalues, &beh, &series, &bad)
                             : CP_ENOTFOUND;
    if (st == CP_ENOTFOUND)
        return CP_ERR_AT(b->err, st, n->line, n->column, "unknown event \"%s\"", n->name);
    if (st == CP_EINVAL && bad < n->nvalues)
        return CP_ERR_AT(b->err, st, n->line, n->column,
                         "property \"%s\" of event \"%s\" is not indexed, so did() cannot "
                         "filter on it: add it to the indexed event properties (only events "
                         "recorded after that are indexed)",
                         f[bad].name, n->name);
    if (st != CP_OK)
        return CP_ERR_AT(b->err, st, n->line, n->column, "did(%s): %s", n->name, cp_strerror(st));
    if (beh == NULL)
        series = BEH_NO_SERIES;
    return plan_did_window(b, n, beh, series, out);
}

/* The window of a did() as days [d0, d1] (ending at the as-of day at the
 * latest) and the node that compares it. */
static cp_status plan_did_window(builder_t *b, const expr_node_t *n, const beh_t *beh,
                                 uint32_t series, pnode_t **out)
{
    int64_t as_of = as_of_day(b->r), d0, d1 = as_of;
    switch (n->did.window) {
    case DID_ALL_TIME:
        d0 = INT32_MIN;
        break;
    case DID_LAST:
        if (n->did.last_days < 1)
            return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "did(%s): a window of %d days",
                             n->name, (int)n->did.last_days);
        d0 = as_of - n->did.last_days + 1;
        break;
    case DID_BETWEEN:
        d0 = n->did.from;
        if (n->did.to < d1)
            d1 = n->did.to;
        break;
    default:
        return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "did(%s): unknown window %d",
                         n->name, (int)n->did.window);
    }
    if (d0 < INT32_MIN)
        d0 = INT32_MIN;
    if (n->did.measure == DID_MEASURE_SUM)
        return plan_did_sum(b, n, (int32_t)d0, (int32_t)d1, out);

    beh_cmp cmp = BEH_GE;
    uint64_t k = 1;
    if (n->op != 0) {
        if (n->did.count < 0)
            return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "did(%s): a count of %lld",
                             n->name, (long long)n->did.count);
        static const beh_cmp map[] = {0, BEH_EQ, BEH_NE, BEH_LT, BEH_LE, BEH_GT, BEH_GE};
        if ((unsigned)n->op >= CP_ARRAY_LEN(map) || map[n->op] == 0)
            return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "unknown operator %d",
                             (int)n->op);
        cmp = map[n->op];
        k = (uint64_t)n->did.count;
    }
    pnode_t *x = plan__node_new(b, PN_DID);
    if (x == NULL)
        return plan__oom(b);
    beh_window_init(beh, series, (int32_t)d0, (int32_t)d1, &x->win);
    if (n->did.measure == DID_MEASURE_DAYS)
        beh_window_days(&x->win);
    int zero = beh_cmp_zero(cmp, k);
    if (x->win.ncells == 0 || (cmp == BEH_GE && k == 0) || (cmp == BEH_LT && k == 0))
        return zero ? plan__mk_all(b, out) : plan__mk_empty(b, out);
    x->cmp = cmp;
    x->k = k;
    x->est = beh_window_estimate(&x->win, cmp, k);
    if (x->est > b->ucard)
        x->est = b->ucard;
    size_t words = beh_window_scratch_words(&x->win);
    if (words > b->p->beh_words)
        b->p->beh_words = words;
    *out = x;
    return CP_OK;
}

static cp_status build(builder_t *b, const expr_node_t *n, int depth, pnode_t **out)
{
    cp_status st = CP_OK;
    if (n == NULL)
        return CP_ERR(b->err, CP_EINVAL, "missing expression node");
    if (depth > PLAN_MAX_DEPTH)
        return CP_ERR_AT(b->err, CP_ELIMIT, n->line, n->column,
                         "expression nested deeper than %d levels", PLAN_MAX_DEPTH);
    switch (n->kind) {
    case EXPR_ALL:
        return plan__mk_all(b, out);
    case EXPR_TAG:
        return resolve_set(b, n, "tag", b->r->tag, out);
    case EXPR_CROWD:
        return resolve_set(b, n, "crowd", b->r->crowd, out);
    case EXPR_CMP:
    case EXPR_BETWEEN:
    case EXPR_IN:
    case EXPR_NOT_IN:
        return plan_compare(b, n, out);
    case EXPR_HAS:
    case EXPR_NULL:
        return plan_has(b, n, out);
    case EXPR_PREFIX:
        return plan_prefix(b, n, out);
    case EXPR_WITHIN:
    case EXPR_OLDER:
        return plan_relative(b, n, out);
    case EXPR_NEAR:
        return plan_near(b, n, out);
    case EXPR_DID:
        return plan_did(b, n, out);
    case EXPR_GROUP:
    case EXPR_GROUP_CMP:
    case EXPR_GROUP_IN:
        return plan_group(b, n, out);
    case EXPR_NOT: {
        pnode_t *x = NULL;
        if (n->nargs != 1 || n->args == NULL)
            return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column,
                             "NOT takes one operand, got %zu", n->nargs);
        if ((st = build(b, n->args[0], depth + 1, &x)) != CP_OK)
            return st;
        return plan__mk_not(b, x, out);
    }
    case EXPR_AND:
    case EXPR_OR: {
        nvec_t pos = {0}, neg = {0};
        if (n->nargs == 0 || n->args == NULL)
            return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "%s without operands",
                             n->kind == EXPR_AND ? "AND" : "OR");
        for (size_t i = 0; i < n->nargs && st == CP_OK; i++) {
            const expr_node_t *c = n->args[i];
            int positive = 1;
            pnode_t *x = NULL;
            /* NOT under AND: a negative term, never a universe complement. */
            if (n->kind == EXPR_AND && c && c->kind == EXPR_NOT && c->nargs == 1 && c->args) {
                c = c->args[0];
                positive = 0;
            }
            if ((st = build(b, c, depth + 1, &x)) != CP_OK)
                break;
            if (n->kind == EXPR_OR)
                st = plan__nvec_push(&pos, x);
            else
                st = plan__and_add(&pos, &neg, x, positive);
            if (st == CP_ENOMEM)
                st = plan__oom(b);
        }
        if (st == CP_OK)
            st = n->kind == EXPR_AND ? plan__mk_and(b, &pos, &neg, out) : plan__mk_or(b, &pos, out);
        plan__nvec_free(&pos);
        plan__nvec_free(&neg);
        return st;
    }
    }
    return CP_ERR_AT(b->err, CP_EINVAL, n->line, n->column, "unknown expression kind %d",
                     (int)n->kind);
}

static void count_leaves(pnode_t *n, plan_t *p, int assign)
{
    if (plan__is_leaf(n)) {
        if (assign) {
            n->slot = p->nleaves;
            p->leaves[p->nleaves] = n->bm;
        }
        p->nleaves++;
        return;
    }
    for (uint32_t i = 0; i < n->nkids; i++)
        count_leaves(n->kids[i], p, assign);
}

cp_status plan_build(const expr_node_t *root, const plan_resolver_t *r, plan_t **out,
                     cp_error_t *err)
{
    cp_status st = CP_OK;
    plan_t *p = NULL;
    pnode_t *x = NULL;
    *out = NULL;
    if (r == NULL || r->universe == NULL)
        return CP_ERR(err, CP_EINVAL, "plan_build: no resolver or universe");
    if ((p = calloc(1, sizeof *p)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory while planning the expression");
    arena_init(&p->arena, 0);
    p->universe = r->universe;
    builder_t b = {
        .p = p, .r = r, .err = err, .ucard = roaring_bitmap_get_cardinality(r->universe)};
    if ((st = build(&b, root, 0, &x)) != CP_OK || (st = plan__make_root(&b, x, &p->root)) != CP_OK)
        goto out;
    if (p->root != NULL) {
        count_leaves(p->root, p, 0);
        p->leaves = arena_alloc(&p->arena, (size_t)p->nleaves * sizeof *p->leaves);
        if (p->leaves == NULL) {
            st = plan__oom(&b);
            goto out;
        }
        p->nleaves = 0;
        count_leaves(p->root, p, 1);
        p->height = p->root->height;
    }
    *out = p;
    p = NULL;
out:
    plan_free(p);
    return st;
}

void plan_free(plan_t *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nowned; i++)
        roaring_bitmap_free(p->owned[i]); /* never NULL */
    free(p->owned);
    arena_free(&p->arena);
    free(p);
}

uint64_t plan_estimate(const plan_t *p)
{
    return p && p->root ? p->root->est : 0;
}
