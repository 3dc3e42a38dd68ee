/*
 * ast.c — the expression tree: ownership, construction helpers shared by the
 * text parser and the JSON decoder, structural equality.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "query/expr_int.h"

expr_t *expr__new(void)
{
    expr_t *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    arena_init(&e->arena, 0);
    return e;
}

expr_node_t *expr_root(const expr_t *e)
{
    return e ? e->root : NULL;
}

void expr_free(expr_t *e)
{
    if (e == NULL)
        return;
    arena_free(&e->arena);
    free(e);
}

expr_node_t *expr__node(expr_t *e, expr_kind kind, int line, int column)
{
    expr_node_t *n = arena_alloc(&e->arena, sizeof *n);
    if (n == NULL)
        return NULL;
    n->kind = kind;
    n->line = line;
    n->column = column;
    return n;
}

void expr__list_init(expr_list_t *l, expr_kind kind)
{
    memset(l, 0, sizeof *l);
    l->kind = kind;
}

static cp_status list_push(expr_t *e, expr_list_t *l, expr_node_t *n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        expr_node_t **items = arena_alloc(&e->arena, cap * sizeof *items);
        if (items == NULL)
            return CP_ENOMEM;
        if (l->n)
            memcpy(items, l->items, l->n * sizeof *items);
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = n;
    return CP_OK;
}

cp_status expr__list_add(expr_t *e, expr_list_t *l, expr_node_t *n, int depth)
{
    if (n->kind == l->kind) {
        /* Splice: the operands of n sit one level higher now. */
        for (size_t i = 0; i < n->nargs; i++) {
            cp_status st = list_push(e, l, n->args[i]);
            if (st != CP_OK)
                return st;
        }
        depth--;
    } else {
        cp_status st = list_push(e, l, n);
        if (st != CP_OK)
            return st;
    }
    if (depth > l->max_depth)
        l->max_depth = depth;
    return CP_OK;
}

static const char *const keywords[] = {"AND", "OR", "NOT", "BETWEEN", "IN", "ALL", "TRUE", "FALSE"};

int expr__is_keyword(const char *s, size_t len)
{
    for (size_t i = 0; i < CP_ARRAY_LEN(keywords); i++)
        if (strlen(keywords[i]) == len && strncasecmp(keywords[i], s, len) == 0)
            return 1;
    return 0;
}

int expr__is_ident(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    unsigned char c = (unsigned char)s[0];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
        return 0;
    for (size_t i = 1; i < len; i++) {
        c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return !expr__is_keyword(s, len);
}

int expr__is_bare_path(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!expr__path_char((unsigned char)s[i]))
            return 0;
    return 1;
}

int expr__is_bare_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!expr__name_char((unsigned char)s[i]))
            return 0;
    return 1;
}

const char *expr__op_text(expr_op op)
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

double expr_near_radius_m(const expr_node_t *n)
{
    return n->near.unit == UNIT_KM ? n->near.radius * 1000.0 : n->near.radius;
}

/* Doubles are equal when their bits are: -0.0 and 0.0 print differently. */
static int same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static int same_name(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static int same_value(const expr_value_t *a, const expr_value_t *b)
{
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case VAL_INT:
    case VAL_BOOL:
        return a->i == b->i;
    case VAL_REAL:
        return same_double(a->r, b->r);
    case VAL_STRING:
        return a->slen == b->slen && (a->slen == 0 || memcmp(a->s, b->s, a->slen) == 0);
    }
    return 0;
}

/* Recursion is bounded by the depth of the trees, which the parser and the
 * JSON decoder cap at CP_EXPR_MAX_DEPTH. Positions are not compared. */
int expr_equal(const expr_node_t *a, const expr_node_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case EXPR_ALL:
        return 1;
    case EXPR_AND:
    case EXPR_OR:
    case EXPR_NOT:
        if (a->nargs != b->nargs)
            return 0;
        for (size_t i = 0; i < a->nargs; i++)
            if (!expr_equal(a->args[i], b->args[i]))
                return 0;
        return 1;
    case EXPR_TAG:
    case EXPR_CROWD:
    case EXPR_GROUP:
        return same_name(a->name, b->name);
    case EXPR_GROUP_CMP:
    case EXPR_GROUP_IN:
        if (!same_name(a->name, b->name) || a->nvalues != b->nvalues ||
            (a->kind == EXPR_GROUP_CMP && a->op != b->op))
            return 0;
        for (size_t i = 0; i < a->nvalues; i++)
            if (!same_value(&a->values[i], &b->values[i]))
                return 0;
        return 1;
    case EXPR_HAS:
    case EXPR_NULL:
        return same_name(a->name, b->name);
    case EXPR_WITHIN:
    case EXPR_OLDER:
        return same_name(a->name, b->name) && a->rel_days == b->rel_days;
    case EXPR_CMP:
    case EXPR_BETWEEN:
    case EXPR_IN:
    case EXPR_NOT_IN:
    case EXPR_PREFIX:
        if (!same_name(a->name, b->name) || a->nvalues != b->nvalues)
            return 0;
        if (a->kind == EXPR_CMP && a->op != b->op)
            return 0;
        for (size_t i = 0; i < a->nvalues; i++)
            if (!same_value(&a->values[i], &b->values[i]))
                return 0;
        return 1;
    case EXPR_NEAR:
        return same_name(a->name, b->name) && same_double(a->near.lat, b->near.lat) &&
               same_double(a->near.lon, b->near.lon) &&
               same_double(a->near.radius, b->near.radius) && a->near.unit == b->near.unit;
    case EXPR_DID:
        if (!same_name(a->name, b->name) || a->nvalues != b->nvalues || a->op != b->op ||
            a->did.window != b->did.window || (a->op != 0 && a->did.count != b->did.count) ||
            a->did.measure != b->did.measure)
            return 0;
        if (a->did.measure == DID_MEASURE_SUM &&
            (!same_name(a->did.sum_prop, b->did.sum_prop) ||
             !same_value(&a->did.sum_value, &b->did.sum_value)))
            return 0;
        if (a->did.window == DID_LAST && a->did.last_days != b->did.last_days)
            return 0;
        if (a->did.window == DID_BETWEEN && (a->did.from != b->did.from || a->did.to != b->did.to))
            return 0;
        for (size_t i = 0; i < a->nvalues; i++)
            if (!same_name(a->did.props[i], b->did.props[i]) ||
                !same_value(&a->values[i], &b->values[i]))
                return 0;
        return 1;
    }
    return 0;
}
