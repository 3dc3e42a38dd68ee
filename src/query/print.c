/*
 * print.c — the canonical text form of a tree.
 *
 * Canonical means: keywords in upper case (AND OR NOT BETWEEN IN ALL TRUE
 * FALSE, and IS NULL, STARTS WITH, WITHIN LAST, OLDER THAN), predicate
 * prefixes in lower case (tag: crowd: near( did( has( and did()'s days),
 * `attr IS NOT NULL` as has(attr), one space
 * around binary operators, parentheses only where precedence (NOT > AND >
 * OR) needs them, strings in double quotes, reals always with '.', 'e' or
 * 'E' so that they read back as reals. parse(print(t)) equals t for every
 * tree built by expr_parse or expr_from_json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/expr_int.h"

static cp_status put(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

/* "..." with JSON-style escapes; bytes >= 0x80 (valid UTF-8) stay as they are. */
static cp_status put_quoted(buf_t *b, const char *s, size_t n)
{
    cp_status st = buf_append(b, "\"", 1);
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\t':
            e = "\\t";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                snprintf(esc, sizeof esc, "\\u%04X", c);
                e = esc;
            }
        }
        if (e == NULL)
            continue;
        if ((st = buf_append(b, s + run, i - run)) == CP_OK)
            st = put(b, e);
        run = i + 1;
    }
    if (st == CP_OK)
        st = buf_append(b, s + run, n - run);
    if (st == CP_OK)
        st = buf_append(b, "\"", 1);
    return st;
}

static cp_status put_double(buf_t *b, double v, int force_real)
{
    char num[64];
    fmt_double(v, num, sizeof num);
    if (force_real && strpbrk(num, ".eEn") == NULL) /* 'n': inf/nan, never in a valid tree */
        strcat(num, ".0");
    return put(b, num);
}

static cp_status put_value(buf_t *b, const expr_value_t *v)
{
    switch (v->kind) {
    case VAL_INT:
        return buf_printf(b, "%lld", (long long)v->i);
    case VAL_REAL:
        return put_double(b, v->r, 1);
    case VAL_STRING:
        return put_quoted(b, v->s ? v->s : "", v->slen);
    case VAL_BOOL:
        return put(b, v->i ? "TRUE" : "FALSE");
    }
    return CP_EINVAL;
}

static cp_status put_node(buf_t *b, const expr_node_t *n);

/* A day as a bare ISO date (reads back as a date, not as arithmetic). */
static cp_status put_day(buf_t *b, int32_t day)
{
    char t[40];
    time_format((int64_t)day * 86400, t, sizeof t);
    return buf_append(b, t, 10);
}

/* did(EVENT, prop = value, ..., last Nd | BETWEEN d AND d) op COUNT */
static cp_status put_did(buf_t *b, const expr_node_t *n)
{
    cp_status st;
    if (n->name == NULL || (n->nvalues > 0 && (n->values == NULL || n->did.props == NULL)))
        return CP_EINVAL;
    size_t len = strlen(n->name);
    if ((st = put(b, "did(")) != CP_OK)
        return st;
    st = expr__is_ident(n->name, len) ? buf_append(b, n->name, len) : put_quoted(b, n->name, len);
    for (size_t i = 0; i < n->nvalues && st == CP_OK; i++) {
        if ((st = buf_printf(b, ", %s = ", n->did.props[i])) == CP_OK)
            st = put_value(b, &n->values[i]);
    }
    if (st != CP_OK)
        return st;
    switch (n->did.window) {
    case DID_ALL_TIME:
        break;
    case DID_LAST:
        st = buf_printf(b, ", last %dd", (int)n->did.last_days);
        break;
    case DID_BETWEEN:
        if ((st = put(b, ", BETWEEN ")) == CP_OK && (st = put_day(b, n->did.from)) == CP_OK &&
            (st = put(b, " AND ")) == CP_OK)
            st = put_day(b, n->did.to);
        break;
    default:
        return CP_EINVAL;
    }
    if (st == CP_OK)
        st = put(b, ")");
    if (st == CP_OK && n->op != 0 && n->did.measure == DID_MEASURE_SUM) {
        if (n->did.sum_prop == NULL)
            return CP_EINVAL;
        if ((st = buf_printf(b, " sum(%s) %s ", n->did.sum_prop, expr__op_text(n->op))) == CP_OK)
            st = put_value(b, &n->did.sum_value);
        return st;
    }
    if (st == CP_OK && n->op != 0)
        st = buf_printf(b, "%s %s %lld", n->did.measure == DID_MEASURE_DAYS ? " days" : "",
                        expr__op_text(n->op), (long long)n->did.count);
    return st;
}

/* A child of an AND / OR / NOT, in parentheses when it binds looser than
 * (or, unflattened, as loose as) its parent. */
static cp_status put_child(buf_t *b, const expr_node_t *parent, const expr_node_t *c)
{
    int paren = c->kind == EXPR_OR || (c->kind == EXPR_AND && parent->kind != EXPR_OR);
    cp_status st = CP_OK;
    if (paren)
        st = buf_append(b, "(", 1);
    if (st == CP_OK)
        st = put_node(b, c);
    if (st == CP_OK && paren)
        st = buf_append(b, ")", 1);
    return st;
}

static cp_status put_node(buf_t *b, const expr_node_t *n)
{
    cp_status st = CP_OK;
    switch (n->kind) {
    case EXPR_ALL:
        return put(b, "ALL");
    case EXPR_AND:
    case EXPR_OR:
        for (size_t i = 0; i < n->nargs && st == CP_OK; i++) {
            if (i > 0)
                st = put(b, n->kind == EXPR_AND ? " AND " : " OR ");
            if (st == CP_OK)
                st = put_child(b, n, n->args[i]);
        }
        return st;
    case EXPR_NOT:
        if (n->nargs != 1)
            return CP_EINVAL;
        if ((st = put(b, "NOT ")) != CP_OK)
            return st;
        return put_child(b, n, n->args[0]);
    case EXPR_TAG:
    case EXPR_CROWD: {
        size_t len = strlen(n->name);
        int bare = n->kind == EXPR_TAG ? expr__is_bare_path(n->name, len)
                                       : expr__is_bare_name(n->name, len);
        if ((st = put(b, n->kind == EXPR_TAG ? "tag:" : "crowd:")) != CP_OK)
            return st;
        return bare ? buf_append(b, n->name, len) : put_quoted(b, n->name, len);
    }
    case EXPR_CMP:
        if (n->nvalues != 1)
            return CP_EINVAL;
        if ((st = buf_printf(b, "%s %s ", n->name, expr__op_text(n->op))) != CP_OK)
            return st;
        return put_value(b, &n->values[0]);
    case EXPR_BETWEEN:
        if (n->nvalues != 2)
            return CP_EINVAL;
        if ((st = buf_printf(b, "%s BETWEEN ", n->name)) != CP_OK ||
            (st = put_value(b, &n->values[0])) != CP_OK || (st = put(b, " AND ")) != CP_OK)
            return st;
        return put_value(b, &n->values[1]);
    case EXPR_HAS:
        return buf_printf(b, "has(%s)", n->name);
    case EXPR_NULL:
        return buf_printf(b, "%s IS NULL", n->name);
    case EXPR_WITHIN:
    case EXPR_OLDER:
        return buf_printf(b, "%s %s %dd", n->name,
                          n->kind == EXPR_WITHIN ? "WITHIN LAST" : "OLDER THAN", (int)n->rel_days);
    case EXPR_PREFIX:
        if (n->nvalues != 1 || n->values[0].kind != VAL_STRING)
            return CP_EINVAL;
        if ((st = buf_printf(b, "%s STARTS WITH ", n->name)) != CP_OK)
            return st;
        return put_value(b, &n->values[0]);
    case EXPR_IN:
    case EXPR_NOT_IN:
        if ((st = buf_printf(b, "%s %sIN (", n->name, n->kind == EXPR_NOT_IN ? "NOT " : "")) !=
            CP_OK)
            return st;
        for (size_t i = 0; i < n->nvalues && st == CP_OK; i++) {
            if (i > 0)
                st = put(b, ", ");
            if (st == CP_OK)
                st = put_value(b, &n->values[i]);
        }
        return st == CP_OK ? put(b, ")") : st;
    case EXPR_NEAR:
        if ((st = put(b, "near(")) != CP_OK)
            return st;
        if (n->name && (st = buf_printf(b, "%s, ", n->name)) != CP_OK)
            return st;
        if ((st = put_double(b, n->near.lat, 0)) != CP_OK || (st = put(b, ", ")) != CP_OK ||
            (st = put_double(b, n->near.lon, 0)) != CP_OK || (st = put(b, ", ")) != CP_OK ||
            (st = put_double(b, n->near.radius, 0)) != CP_OK)
            return st;
        return put(b, n->near.unit == UNIT_KM ? "km)" : "m)");
    case EXPR_DID:
        return put_did(b, n);
    case EXPR_GROUP: {
        size_t len = strlen(n->name);
        if ((st = put(b, "group:")) != CP_OK)
            return st;
        return expr__is_bare_path(n->name, len) ? buf_append(b, n->name, len)
                                                : put_quoted(b, n->name, len);
    }
    case EXPR_GROUP_CMP:
        if (n->nvalues != 1 || (n->op != OP_EQ && n->op != OP_NE))
            return CP_EINVAL;
        if ((st = buf_printf(b, "group.%s %s ", n->name, expr__op_text(n->op))) != CP_OK)
            return st;
        return put_value(b, &n->values[0]);
    case EXPR_GROUP_IN:
        if ((st = buf_printf(b, "group.%s IN (", n->name)) != CP_OK)
            return st;
        for (size_t i = 0; i < n->nvalues && st == CP_OK; i++) {
            if (i > 0)
                st = put(b, ", ");
            if (st == CP_OK)
                st = put_value(b, &n->values[i]);
        }
        return st == CP_OK ? put(b, ")") : st;
    }
    return CP_EINVAL;
}

char *expr_to_text(const expr_node_t *n)
{
    buf_t b;
    buf_init(&b, 0);
    if (n == NULL || put_node(&b, n) != CP_OK || (buf_cstr(&b), b.data == NULL)) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}
