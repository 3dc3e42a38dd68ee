/*
 * parser.c — the text form of crowd expressions (DESIGN.md §5,
 * docs/expressions.md) to the tree of ast.h.
 *
 *   expr    := or
 *   or      := and { OR and }
 *   and     := unary { AND unary }
 *   unary   := NOT unary | primary
 *   primary := '(' expr ')' | ALL | tag:PATH | crowd:NAME | near | did | has | cmp
 *            | group:ID | group.TRAIT ( ('=' | '!=') value | IN '(' value {',' value} ')' )
 *   did     := did '(' EVENT { ',' name '=' value } [ ',' window ] ')' [ [days] op COUNT ]
 *   has     := has '(' ident ')'
 *   cmp     := ident ( op value | BETWEEN value AND value | IN list | NOT IN list
 *                    | IS [NOT] NULL | STARTS WITH string | WITHIN LAST N (d|w)
 *                    | OLDER THAN N (d|w) )
 *   window  := last N (d|w) | BETWEEN date AND date      (date: YYYY-MM-DD, bare or quoted)
 *
 * Recursive descent whose recursion is bounded: every '(' and NOT counts
 * one nesting level and the parser refuses to go past CP_EXPR_MAX_DEPTH
 * before recursing, so the C stack never holds more than a few hundred
 * frames whatever the input. The tree depth (after flattening) is capped at
 * the same limit so that every tree the parser builds also passes
 * expr_from_json and prints back to text within the limit.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "query/expr_int.h"

typedef struct parser {
    lexer_t lx;
    expr_t *e;
    cp_error_t *err;
    int nest;   /* open '(' plus active NOTs */
    tok_t prev; /* the last consumed token, for "after 'AND'" */
} parser_t;

#define TOK (&p->lx.tok)

static cp_status advance(parser_t *p)
{
    p->prev = p->lx.tok;
    return lexer_next(&p->lx, p->err);
}

/* 1 if t is the word `kw` (any case). */
static int is_kw(const parser_t *p, const tok_t *t, const char *kw)
{
    return t->kind == TOK_WORD && strlen(kw) == t->len &&
           strncasecmp(p->lx.src + t->off, kw, t->len) == 0;
}

static int is_keyword_tok(const parser_t *p, const tok_t *t)
{
    return t->kind == TOK_WORD && expr__is_keyword(p->lx.src + t->off, t->len);
}

/* Records "L:C: message" for token position (line, col). */
static cp_status perr(parser_t *p, cp_status code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static cp_status perr(parser_t *p, cp_status code, int line, int col, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return CP_ERR_AT(p->err, code, line, col, "%d:%d: %s", line, col, msg);
}

static cp_status nomem(parser_t *p)
{
    return CP_ERR(p->err, CP_ENOMEM, "out of memory");
}

static void describe(const parser_t *p, const tok_t *t, char *buf, size_t cap)
{
    lexer_describe(&p->lx, t, buf, cap);
}

/* Optimal string alignment distance (edits incl. transpositions), ASCII
 * case-insensitive; for "did you mean" hints on short words only. */
static int osa_distance(const char *a, size_t la, const char *b, size_t lb)
{
    enum { MAXW = 16 };
    if (la > MAXW || lb > MAXW)
        return 99;
    int d[MAXW + 1][MAXW + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ca = a[i - 1] | 0x20, cb = b[j - 1] | 0x20;
            int cost = ca != cb;
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && ca == (b[j - 2] | 0x20) && (a[i - 2] | 0x20) == cb &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

/*
 * The error for a place where one of a few keywords (or punctuation) was
 * expected. `cands` (NULL-terminated) are the keywords valid here, used to
 * suggest a fix for a misspelt word such as 'ANDD'.
 */
static cp_status err_expected_kw(parser_t *p, const char *expected, const char *const *cands)
{
    const tok_t *t = TOK;
    char found[96];
    if (t->kind == TOK_EOF)
        return perr(p, CP_ESYNTAX, t->line, t->column, "unexpected end of expression, expected %s",
                    expected);
    describe(p, t, found, sizeof found);
    if (cands != NULL && t->kind == TOK_WORD && !is_keyword_tok(p, t)) {
        const char *best = NULL;
        for (size_t i = 0; cands && cands[i]; i++) {
            size_t kl = strlen(cands[i]);
            int d = osa_distance(p->lx.src + t->off, t->len, cands[i], kl);
            if (d <= (kl <= 3 ? 1 : 2)) {
                best = cands[i];
                break;
            }
        }
        if (best)
            return perr(p, CP_ESYNTAX, t->line, t->column,
                        "unknown keyword %s, expected %s (did you mean %s?)", found, expected,
                        best);
        return perr(p, CP_ESYNTAX, t->line, t->column, "unknown keyword %s, expected %s", found,
                    expected);
    }
    return perr(p, CP_ESYNTAX, t->line, t->column, "expected %s, found %s", expected, found);
}

/* The error for a place where something (not a keyword) was expected:
 * "expected X after 'Y', found Z". */
static cp_status err_expected(parser_t *p, const char *expected)
{
    const tok_t *t = TOK;
    char found[96], after[104] = "";
    if (p->prev.kind != 0) { /* 0: nothing consumed yet */
        memcpy(after, " after ", 7);
        describe(p, &p->prev, after + 7, sizeof after - 7);
    }
    if (t->kind == TOK_EOF)
        return perr(p, CP_ESYNTAX, t->line, t->column,
                    "unexpected end of expression, expected %s%s", expected, after);
    describe(p, t, found, sizeof found);
    return perr(p, CP_ESYNTAX, t->line, t->column, "expected %s%s, found %s", expected, after,
                found);
}

static cp_status check_nest(parser_t *p, const tok_t *at)
{
    if (p->nest >= CP_EXPR_MAX_DEPTH)
        return perr(p, CP_ELIMIT, at->line, at->column, "expression nested deeper than %d levels",
                    CP_EXPR_MAX_DEPTH);
    p->nest++;
    return CP_OK;
}

static cp_status check_depth(parser_t *p, const expr_node_t *n, int depth)
{
    if (depth > CP_EXPR_MAX_DEPTH)
        return perr(p, CP_ELIMIT, n->line, n->column, "expression nested deeper than %d levels",
                    CP_EXPR_MAX_DEPTH);
    return CP_OK;
}

/* ------------------------------------------------------------- values */

/* "25abc", "0x10": a number with letters stuck to it. */
static cp_status err_glued(parser_t *p, const tok_t *t)
{
    size_t n = t->len + t->glued;
    return perr(p, CP_ESYNTAX, t->line, t->column, "invalid number '%.*s'", (int)(n > 40 ? 40 : n),
                p->lx.src + t->off);
}

static cp_status parse_value(parser_t *p, expr_value_t *v)
{
    const tok_t *t = TOK;
    char found[96];
    memset(v, 0, sizeof *v);
    if ((t->kind == TOK_INT || t->kind == TOK_REAL) && t->glued)
        return err_glued(p, t);
    switch (t->kind) {
    case TOK_INT:
        if (t->overflow) {
            describe(p, t, found, sizeof found);
            return perr(p, CP_EINVAL, t->line, t->column,
                        "integer %s out of range (-9223372036854775808..9223372036854775807)",
                        found);
        }
        v->kind = VAL_INT;
        v->i = t->i;
        break;
    case TOK_REAL:
        if (!isfinite(t->r)) {
            describe(p, t, found, sizeof found);
            return perr(p, CP_EINVAL, t->line, t->column, "number %s out of range", found);
        }
        v->kind = VAL_REAL;
        v->r = t->r;
        break;
    case TOK_STRING:
        v->kind = VAL_STRING;
        v->s = t->s;
        v->slen = t->slen;
        break;
    case TOK_WORD:
        if (is_kw(p, t, "true") || is_kw(p, t, "false")) {
            v->kind = VAL_BOOL;
            v->i = is_kw(p, t, "true");
            break;
        }
        if (!is_keyword_tok(p, t)) {
            char after[96];
            describe(p, &p->prev, after, sizeof after);
            describe(p, t, found, sizeof found);
            return perr(p, CP_ESYNTAX, t->line, t->column,
                        "expected a value after %s, found %s (strings are quoted: \"%.*s\")", after,
                        found, (int)(t->len > 32 ? 32 : t->len), p->lx.src + t->off);
        }
        return err_expected(p, "a value");
    default:
        return err_expected(p, "a value");
    }
    return advance(p);
}

/* Appends to an arena array of values, doubling. */
static cp_status push_value(parser_t *p, expr_value_t **vals, size_t *n, size_t *cap,
                            const expr_value_t *v)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        expr_value_t *nv = arena_alloc(&p->e->arena, nc * sizeof *nv);
        if (nv == NULL)
            return nomem(p);
        if (*n)
            memcpy(nv, *vals, *n * sizeof *nv);
        *vals = nv;
        *cap = nc;
    }
    (*vals)[(*n)++] = *v;
    return CP_OK;
}

static cp_status parse_ndays(parser_t *p, const char *what, int32_t *days);

/* '(' value {',' value} ')' into n->values; TOK is the '(' expected. */
static cp_status parse_in_list(parser_t *p, expr_node_t *n)
{
    cp_status st;
    if (TOK->kind != TOK_LPAREN)
        return err_expected(p, "'('");
    tok_t open = *TOK;
    size_t cap = 0;
    if ((st = advance(p)) != CP_OK)
        return st;
    for (;;) {
        expr_value_t v;
        if ((st = parse_value(p, &v)) != CP_OK ||
            (st = push_value(p, &n->values, &n->nvalues, &cap, &v)) != CP_OK)
            return st;
        if (TOK->kind == TOK_COMMA) {
            if ((st = advance(p)) != CP_OK)
                return st;
            continue;
        }
        if (TOK->kind == TOK_RPAREN)
            break;
        char what[96];
        snprintf(what, sizeof what, "',' or ')' to close the IN list opened at %d:%d", open.line,
                 open.column);
        return err_expected_kw(p, what, NULL);
    }
    return advance(p);
}

/* The word `kw` (any case) at TOK, consumed; else the error "expected
 * `what`". */
static cp_status expect_word(parser_t *p, const char *kw, const char *what)
{
    if (!is_kw(p, TOK, kw)) {
        const char *const c[] = {kw, NULL};
        return err_expected_kw(p, what, c);
    }
    return advance(p);
}

/*
 * The predicates written after an attribute name other than an operator:
 *   IS [NOT] NULL | NOT IN (...) | STARTS WITH "s" | WITHIN LAST N d | OLDER THAN N d
 * None of these words is reserved (an attribute may be called `last`): they
 * are recognised only here. TOK is the first word; returns 0 in *matched
 * when it is none of them.
 */
static cp_status parse_cmp_words(parser_t *p, expr_node_t *n, int *matched)
{
    cp_status st;
    *matched = 1;
    if (is_kw(p, TOK, "is")) {
        if ((st = advance(p)) != CP_OK)
            return st;
        n->kind = EXPR_NULL;
        if (is_kw(p, TOK, "not")) {
            n->kind = EXPR_HAS;
            if ((st = advance(p)) != CP_OK)
                return st;
        }
        return expect_word(p, "null", "NULL after IS / IS NOT");
    }
    if (is_kw(p, TOK, "not")) {
        size_t off = lexer_skip_blank(&p->lx, TOK->off + TOK->len);
        if (!(off + 2 <= p->lx.len && strncasecmp(p->lx.src + off, "in", 2) == 0 &&
              (off + 2 == p->lx.len || !expr__name_char((unsigned char)p->lx.src[off + 2])))) {
            *matched = 0;
            return CP_OK;
        }
        n->kind = EXPR_NOT_IN;
        if ((st = advance(p)) != CP_OK || (st = advance(p)) != CP_OK) /* NOT, IN */
            return st;
        return parse_in_list(p, n);
    }
    if (is_kw(p, TOK, "starts")) {
        n->kind = EXPR_PREFIX;
        if ((st = advance(p)) != CP_OK ||
            (st = expect_word(p, "with", "WITH after STARTS")) != CP_OK)
            return st;
        if (TOK->kind != TOK_STRING)
            return err_expected(p, "a quoted prefix (STARTS WITH \"gmail\")");
        n->values = arena_alloc(&p->e->arena, sizeof *n->values);
        if (n->values == NULL)
            return nomem(p);
        n->nvalues = 1;
        return parse_value(p, &n->values[0]);
    }
    if (is_kw(p, TOK, "within") || is_kw(p, TOK, "older")) {
        int within = is_kw(p, TOK, "within");
        n->kind = within ? EXPR_WITHIN : EXPR_OLDER;
        if ((st = advance(p)) != CP_OK ||
            (st = expect_word(p, within ? "last" : "than",
                              within ? "LAST after WITHIN" : "THAN after OLDER")) != CP_OK)
            return st;
        return parse_ndays(p, within ? "WITHIN LAST N" : "OLDER THAN N", &n->rel_days);
    }
    *matched = 0;
    return CP_OK;
}

/* ident ( op value | BETWEEN value AND value | IN '(' value {',' value} ')'
 *       | IS [NOT] NULL | NOT IN (...) | STARTS WITH s | WITHIN LAST N d | OLDER THAN N d ) */
static cp_status parse_cmp(parser_t *p, expr_node_t **out)
{
    tok_t id = *TOK;
    cp_status st;
    int matched = 0;
    expr_node_t *n = expr__node(p->e, EXPR_CMP, id.line, id.column);
    if (n == NULL)
        return nomem(p);
    n->name = arena_strndup(&p->e->arena, p->lx.src + id.off, id.len);
    if (n->name == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind == TOK_OP) {
        n->op = TOK->op;
        n->values = arena_alloc(&p->e->arena, sizeof *n->values);
        if (n->values == NULL)
            return nomem(p);
        n->nvalues = 1;
        if ((st = advance(p)) != CP_OK || (st = parse_value(p, &n->values[0])) != CP_OK)
            return st;
    } else if (is_kw(p, TOK, "between")) {
        n->kind = EXPR_BETWEEN;
        n->values = arena_alloc(&p->e->arena, 2 * sizeof *n->values);
        if (n->values == NULL)
            return nomem(p);
        n->nvalues = 2;
        if ((st = advance(p)) != CP_OK || (st = parse_value(p, &n->values[0])) != CP_OK)
            return st;
        if (!is_kw(p, TOK, "and")) {
            static const char *const c[] = {"AND", NULL};
            return err_expected_kw(p, "AND between the bounds of BETWEEN", c);
        }
        if ((st = advance(p)) != CP_OK || (st = parse_value(p, &n->values[1])) != CP_OK)
            return st;
    } else if (is_kw(p, TOK, "in")) {
        n->kind = EXPR_IN;
        if ((st = advance(p)) != CP_OK || (st = parse_in_list(p, n)) != CP_OK)
            return st;
    } else if ((st = parse_cmp_words(p, n, &matched)) != CP_OK) {
        return st;
    } else if (!matched) {
        static const char *const c[] = {"BETWEEN", "IN", "IS", "STARTS", "WITHIN", "OLDER", NULL};
        char name[96], what[200];
        describe(p, &id, name, sizeof name);
        snprintf(what, sizeof what,
                 "a comparison operator, BETWEEN, IN, NOT IN, IS NULL, STARTS WITH, WITHIN LAST "
                 "or OLDER THAN after %s",
                 name);
        if (is_kw(p, TOK, "not"))
            return perr(p, CP_ESYNTAX, TOK->line, TOK->column,
                        "expected %s, found 'NOT' (negate the whole comparison: NOT %.*s ...)",
                        what, (int)(id.len > 32 ? 32 : id.len), p->lx.src + id.off);
        return err_expected_kw(p, what, c);
    }
    *out = n;
    return CP_OK;
}

/* A number inside near(): any numeric literal, as a double. */
static cp_status near_number(parser_t *p, const char *what, int unit_ok, double *out)
{
    if (TOK->kind != TOK_INT && TOK->kind != TOK_REAL)
        return err_expected(p, what);
    if (TOK->glued && !unit_ok)
        return err_glued(p, TOK);
    *out = TOK->r;
    return CP_OK;
}

static cp_status near_range(parser_t *p, const tok_t *t, const char *what, double v, double lim)
{
    if (!(v >= -lim && v <= lim)) {
        char found[96];
        lexer_describe(&p->lx, t, found, sizeof found);
        return perr(p, CP_EINVAL, t->line, t->column, "%s %s out of range [%g, %g]", what, found,
                    -lim, lim);
    }
    return CP_OK;
}

static cp_status expect_comma(parser_t *p, const char *after_what)
{
    if (TOK->kind != TOK_COMMA) {
        char what[64];
        snprintf(what, sizeof what, "',' after the %s in near()", after_what);
        return err_expected_kw(p, what, NULL);
    }
    return advance(p);
}

/* near '(' [ident ','] lat ',' lon ',' radius unit ')'; TOK is the word near. */
static cp_status parse_near(parser_t *p, expr_node_t **out)
{
    tok_t kw = *TOK, t;
    cp_status st;
    expr_node_t *n = expr__node(p->e, EXPR_NEAR, kw.line, kw.column);
    if (n == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK) /* now '(' (checked by the caller) */
        return st;
    tok_t open = *TOK;
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind == TOK_WORD && !is_keyword_tok(p, TOK)) {
        n->name = arena_strndup(&p->e->arena, p->lx.src + TOK->off, TOK->len);
        if (n->name == NULL)
            return nomem(p);
        if ((st = advance(p)) != CP_OK || (st = expect_comma(p, "attribute name")) != CP_OK)
            return st;
    }
    t = *TOK;
    if ((st = near_number(p, "a latitude (a number or an attribute name)", 0, &n->near.lat)) !=
            CP_OK ||
        (st = near_range(p, &t, "latitude", n->near.lat, 90)) != CP_OK ||
        (st = advance(p)) != CP_OK || (st = expect_comma(p, "latitude")) != CP_OK)
        return st;
    t = *TOK;
    if ((st = near_number(p, "a longitude (a number)", 0, &n->near.lon)) != CP_OK ||
        (st = near_range(p, &t, "longitude", n->near.lon, 180)) != CP_OK ||
        (st = advance(p)) != CP_OK || (st = expect_comma(p, "longitude")) != CP_OK)
        return st;
    t = *TOK;
    if ((st = near_number(p, "a radius (a number followed by m or km)", 1, &n->near.radius)) !=
        CP_OK)
        return st;
    if (!(n->near.radius > 0) || !isfinite(n->near.radius)) {
        char found[96];
        describe(p, &t, found, sizeof found);
        return perr(p, CP_EINVAL, t.line, t.column,
                    "radius %s must be a finite number greater than 0", found);
    }
    if ((st = advance(p)) != CP_OK)
        return st;
    if (is_kw(p, TOK, "km"))
        n->near.unit = UNIT_KM;
    else if (is_kw(p, TOK, "m"))
        n->near.unit = UNIT_M;
    else
        return err_expected(p, "a unit 'm' or 'km'");
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind != TOK_RPAREN) {
        char what[64];
        snprintf(what, sizeof what, "')' to close near( at %d:%d", open.line, open.column);
        return err_expected_kw(p, what, NULL);
    }
    if ((st = advance(p)) != CP_OK)
        return st;
    *out = n;
    return CP_OK;
}

/* ----------------------------------------------------------------- did() */

/* Whether the next non-blank byte after the current token starts a
 * comparison operator (so `last = 3` is a filter on a property named last). */
static int followed_by_op(const parser_t *p)
{
    size_t off = lexer_skip_blank(&p->lx, TOK->off + TOK->len);
    if (off >= p->lx.len)
        return 0;
    char c = p->lx.src[off];
    return c == '=' || c == '!' || c == '<' || c == '>';
}

/* A did() date: bare YYYY-MM-DD or the same quoted. */
static cp_status parse_day(parser_t *p, const char *what, int32_t *day)
{
    int found = 0;
    cp_status st;
    tok_t t = *TOK;
    if (TOK->kind == TOK_STRING) {
        if (expr__parse_day(TOK->s, TOK->slen, day) != 0) {
            char found_s[96];
            describe(p, TOK, found_s, sizeof found_s);
            return perr(p, CP_EINVAL, TOK->line, TOK->column,
                        "expected a date YYYY-MM-DD as the %s, found %s", what, found_s);
        }
        return advance(p);
    }
    if ((st = lexer_take_date(&p->lx, &found, day, p->err)) != CP_OK)
        return st;
    if (!found) {
        char e[80];
        snprintf(e, sizeof e, "a date YYYY-MM-DD as the %s", what);
        return err_expected(p, e);
    }
    t.len = 10;
    p->prev = t;
    return CP_OK;
}

/*
 * N d | N w at TOK: a whole number of days 1..EXPR_DID_MAX_DAYS (weeks are
 * 7N days). `what` names the construct in messages ("the window 'last N'").
 */
static cp_status parse_ndays(parser_t *p, const char *what, int32_t *days)
{
    cp_status st;
    tok_t num = *TOK;
    if (num.kind != TOK_INT || num.overflow || num.i < 1) {
        if (num.kind == TOK_INT || num.kind == TOK_REAL) {
            char found[96];
            describe(p, &num, found, sizeof found);
            return perr(p, CP_EINVAL, num.line, num.column,
                        "%s needs a whole number of days N >= 1, found %s", what, found);
        }
        return err_expected(p, "a number of days (last 30d)");
    }
    if ((st = advance(p)) != CP_OK)
        return st;
    int64_t mult;
    if (is_kw(p, TOK, "d"))
        mult = 1;
    else if (is_kw(p, TOK, "w"))
        mult = 7;
    else
        return err_expected(p, "a unit 'd' (days) or 'w' (weeks)");
    if (num.i > EXPR_DID_MAX_DAYS / mult)
        return perr(p, CP_ELIMIT, num.line, num.column, "%s: %lld%s is longer than %d days", what,
                    (long long)num.i, mult == 1 ? "d" : "w", EXPR_DID_MAX_DAYS);
    *days = (int32_t)(num.i * mult);
    return advance(p);
}

/* last N d | last N w; TOK is the word last. */
static cp_status parse_last(parser_t *p, expr_node_t *n)
{
    cp_status st;
    if ((st = advance(p)) != CP_OK ||
        (st = parse_ndays(p, "the window 'last N'", &n->did.last_days)) != CP_OK)
        return st;
    n->did.window = DID_LAST;
    return CP_OK;
}

/* BETWEEN date AND date; TOK is the word between. */
static cp_status parse_window_between(parser_t *p, expr_node_t *n)
{
    cp_status st;
    tok_t first;
    if ((st = advance(p)) != CP_OK)
        return st;
    first = *TOK;
    if ((st = parse_day(p, "start of the window", &n->did.from)) != CP_OK)
        return st;
    if (!is_kw(p, TOK, "and")) {
        static const char *const c[] = {"AND", NULL};
        return err_expected_kw(p, "AND between the dates of BETWEEN", c);
    }
    if ((st = advance(p)) != CP_OK || (st = parse_day(p, "end of the window", &n->did.to)) != CP_OK)
        return st;
    if (n->did.from > n->did.to)
        return perr(p, CP_EINVAL, first.line, first.column,
                    "the window starts after it ends (BETWEEN takes the earlier date first)");
    n->did.window = DID_BETWEEN;
    return CP_OK;
}

static int followed_by_paren(const parser_t *p);

/* sum '(' ident ')' op number after did(...); TOK is the word sum. */
static cp_status parse_did_sum(parser_t *p, expr_node_t *n, expr_node_t **out)
{
    cp_status st;
    tok_t kw = *TOK;
    if ((st = advance(p)) != CP_OK || (st = advance(p)) != CP_OK) /* sum, '(' */
        return st;
    if (TOK->kind != TOK_WORD || is_keyword_tok(p, TOK))
        return err_expected(p, "a property name in sum()");
    if (TOK->len > EXPR_DID_NAME_MAX)
        return perr(p, CP_ELIMIT, TOK->line, TOK->column, "property name longer than %d bytes",
                    EXPR_DID_NAME_MAX);
    n->did.sum_prop = arena_strndup(&p->e->arena, p->lx.src + TOK->off, TOK->len);
    if (n->did.sum_prop == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind != TOK_RPAREN) {
        char what[64];
        snprintf(what, sizeof what, "')' to close sum( at %d:%d", kw.line, kw.column);
        return err_expected_kw(p, what, NULL);
    }
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind != TOK_OP)
        return err_expected(p, "a comparison operator after sum(...)");
    n->op = TOK->op;
    n->did.measure = DID_MEASURE_SUM;
    if ((st = advance(p)) != CP_OK)
        return st;
    tok_t vt = *TOK;
    if (vt.kind != TOK_INT && vt.kind != TOK_REAL)
        return err_expected(p, "a number to compare the sum with");
    if ((st = parse_value(p, &n->did.sum_value)) != CP_OK)
        return st;
    *out = n;
    return CP_OK;
}

/* did '(' EVENT {',' prop '=' value} [',' window] ')' [op COUNT]; TOK is did. */
static cp_status parse_did(parser_t *p, expr_node_t **out)
{
    tok_t kw = *TOK;
    cp_status st;
    const char *props[EXPR_DID_MAX_FILTERS];
    expr_value_t vals[EXPR_DID_MAX_FILTERS];
    size_t nf = 0;
    char found[96];
    expr_node_t *n = expr__node(p->e, EXPR_DID, kw.line, kw.column);
    if (n == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK) /* now '(' (checked by the caller) */
        return st;
    tok_t open = *TOK;
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind == TOK_WORD && !is_keyword_tok(p, TOK)) {
        n->name = arena_strndup(&p->e->arena, p->lx.src + TOK->off, TOK->len);
    } else if (TOK->kind == TOK_STRING) {
        if (TOK->slen == 0 || memchr(TOK->s, '\0', TOK->slen) != NULL)
            return perr(p, CP_EINVAL, TOK->line, TOK->column,
                        "an event name must be non-empty and without \\u0000");
        n->name = TOK->s;
    } else {
        return err_expected(p, "an event name (a word or a quoted string)");
    }
    if (n->name == NULL)
        return nomem(p);
    if (strlen(n->name) > EXPR_DID_NAME_MAX)
        return perr(p, CP_ELIMIT, TOK->line, TOK->column, "event name longer than %d bytes",
                    EXPR_DID_NAME_MAX);
    if ((st = advance(p)) != CP_OK)
        return st;
    while (TOK->kind == TOK_COMMA && n->did.window == DID_ALL_TIME) {
        if ((st = advance(p)) != CP_OK)
            return st;
        if (is_kw(p, TOK, "last") && !followed_by_op(p)) {
            if ((st = parse_last(p, n)) != CP_OK)
                return st;
            continue;
        }
        if (is_kw(p, TOK, "between")) {
            if ((st = parse_window_between(p, n)) != CP_OK)
                return st;
            continue;
        }
        if (TOK->kind != TOK_WORD || is_keyword_tok(p, TOK))
            return err_expected(p, "a property filter (name = value), 'last N d' or BETWEEN");
        tok_t name = *TOK;
        if (nf == EXPR_DID_MAX_FILTERS)
            return perr(p, CP_ELIMIT, name.line, name.column,
                        "more than %d property filters in did()", EXPR_DID_MAX_FILTERS);
        if (name.len > EXPR_DID_NAME_MAX)
            return perr(p, CP_ELIMIT, name.line, name.column, "property name longer than %d bytes",
                        EXPR_DID_NAME_MAX);
        for (size_t i = 0; i < nf; i++)
            if (strlen(props[i]) == name.len &&
                memcmp(props[i], p->lx.src + name.off, name.len) == 0)
                return perr(p, CP_EINVAL, name.line, name.column,
                            "property \"%s\" is filtered twice in did()", props[i]);
        if ((props[nf] = arena_strndup(&p->e->arena, p->lx.src + name.off, name.len)) == NULL)
            return nomem(p);
        if ((st = advance(p)) != CP_OK)
            return st;
        if (TOK->kind != TOK_OP || TOK->op != OP_EQ) {
            if (TOK->kind == TOK_OP)
                return perr(p, CP_ESYNTAX, TOK->line, TOK->column,
                            "did() filters compare with '=' only (%s = value)", props[nf]);
            describe(p, &name, found, sizeof found);
            char what[160];
            snprintf(what, sizeof what, "'=' after the property %s", found);
            return err_expected_kw(p, what, NULL);
        }
        if ((st = advance(p)) != CP_OK)
            return st;
        tok_t vt = *TOK;
        if ((st = parse_value(p, &vals[nf])) != CP_OK)
            return st;
        if (vals[nf].kind == VAL_REAL)
            return perr(p, CP_EINVAL, vt.line, vt.column,
                        "did() filter values are strings, integers or booleans, not %.*s",
                        (int)(vt.len > 32 ? 32 : vt.len), p->lx.src + vt.off);
        if (vals[nf].kind == VAL_STRING && vals[nf].slen > EXPR_DID_NAME_MAX)
            return perr(p, CP_ELIMIT, vt.line, vt.column, "did() filter value longer than %d bytes",
                        EXPR_DID_NAME_MAX);
        nf++;
    }
    if (TOK->kind != TOK_RPAREN) {
        char what[120];
        snprintf(what, sizeof what, "%s to close did( at %d:%d",
                 n->did.window != DID_ALL_TIME ? "')' (the window comes last)" : "',' or ')'",
                 open.line, open.column);
        return err_expected_kw(p, what, NULL);
    }
    if (nf > 0) {
        n->did.props = arena_alloc(&p->e->arena, nf * sizeof *n->did.props);
        n->values = arena_alloc(&p->e->arena, nf * sizeof *n->values);
        if (n->did.props == NULL || n->values == NULL)
            return nomem(p);
        memcpy(n->did.props, props, nf * sizeof *props);
        memcpy(n->values, vals, nf * sizeof *vals);
        n->nvalues = nf;
    }
    if ((st = advance(p)) != CP_OK)
        return st;
    if (is_kw(p, TOK, "days") && followed_by_op(p)) {
        n->did.measure = DID_MEASURE_DAYS;
        if ((st = advance(p)) != CP_OK)
            return st;
    } else if (is_kw(p, TOK, "sum") && followed_by_paren(p)) {
        return parse_did_sum(p, n, out);
    }
    if (TOK->kind == TOK_OP) {
        n->op = TOK->op;
        if ((st = advance(p)) != CP_OK)
            return st;
        const tok_t *t = TOK;
        if (t->kind != TOK_INT || t->glued || t->overflow || t->i < 0) {
            if (t->kind == TOK_INT || t->kind == TOK_REAL) {
                describe(p, t, found, sizeof found);
                return perr(p, CP_EINVAL, t->line, t->column,
                            "a did() count is a whole number >= 0, found %s", found);
            }
            return err_expected(p, "a count (a whole number >= 0)");
        }
        n->did.count = t->i;
        if ((st = advance(p)) != CP_OK)
            return st;
    }
    *out = n;
    return CP_OK;
}

/* has '(' ident ')'; TOK is the word has. */
static cp_status parse_has(parser_t *p, expr_node_t **out)
{
    tok_t kw = *TOK;
    cp_status st;
    expr_node_t *n = expr__node(p->e, EXPR_HAS, kw.line, kw.column);
    if (n == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK || (st = advance(p)) != CP_OK) /* has, '(' */
        return st;
    if (TOK->kind != TOK_WORD || is_keyword_tok(p, TOK))
        return err_expected(p, "an attribute name");
    n->name = arena_strndup(&p->e->arena, p->lx.src + TOK->off, TOK->len);
    if (n->name == NULL)
        return nomem(p);
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind != TOK_RPAREN) {
        char what[64];
        snprintf(what, sizeof what, "')' to close has( at %d:%d", kw.line, kw.column);
        return err_expected_kw(p, what, NULL);
    }
    *out = n;
    return advance(p);
}

static cp_status parse_or(parser_t *p, expr_node_t **out, int *depth);
static cp_status parse_unary(parser_t *p, expr_node_t **out, int *depth);

/* group.TRAIT ( '=' value | '!=' value | IN '(' value {',' value} ')' ):
 * group traits compare by equality only (their values are whatever the
 * group events sent, not typed attributes). */
static cp_status parse_group_trait(parser_t *p, expr_node_t **out)
{
    tok_t id = *TOK;
    cp_status st;
    expr_node_t *n = expr__node(p->e, EXPR_GROUP_CMP, id.line, id.column);
    if (n == NULL)
        return nomem(p);
    n->name = id.s;
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind == TOK_OP && (TOK->op == OP_EQ || TOK->op == OP_NE)) {
        n->op = TOK->op;
        n->values = arena_alloc(&p->e->arena, sizeof *n->values);
        if (n->values == NULL)
            return nomem(p);
        n->nvalues = 1;
        if ((st = advance(p)) != CP_OK || (st = parse_value(p, &n->values[0])) != CP_OK)
            return st;
        *out = n;
        return CP_OK;
    }
    if (!is_kw(p, TOK, "in")) {
        static const char *const c[] = {"IN", NULL};
        char what[128];
        snprintf(what, sizeof what,
                 "'=', '!=' or IN after group.%s (group traits compare by "
                 "equality)",
                 id.s);
        return err_expected_kw(p, what, c);
    }
    n->kind = EXPR_GROUP_IN;
    if ((st = advance(p)) != CP_OK)
        return st;
    if (TOK->kind != TOK_LPAREN)
        return err_expected(p, "'('");
    tok_t open = *TOK;
    size_t cap = 0;
    if ((st = advance(p)) != CP_OK)
        return st;
    for (;;) {
        expr_value_t v;
        if ((st = parse_value(p, &v)) != CP_OK ||
            (st = push_value(p, &n->values, &n->nvalues, &cap, &v)) != CP_OK)
            return st;
        if (TOK->kind == TOK_COMMA) {
            if ((st = advance(p)) != CP_OK)
                return st;
            continue;
        }
        if (TOK->kind == TOK_RPAREN)
            break;
        char what[96];
        snprintf(what, sizeof what, "',' or ')' to close the IN list opened at %d:%d", open.line,
                 open.column);
        return err_expected_kw(p, what, NULL);
    }
    *out = n;
    return advance(p);
}

/* Whether the word at TOK is directly followed (blanks allowed) by '('. */
static int followed_by_paren(const parser_t *p)
{
    size_t off = lexer_skip_blank(&p->lx, TOK->off + TOK->len);
    return off < p->lx.len && p->lx.src[off] == '(';
}

static cp_status parse_primary(parser_t *p, expr_node_t **out, int *depth)
{
    cp_status st;
    tok_t t = *TOK;
    *depth = 1;
    switch (t.kind) {
    case TOK_LPAREN: {
        if ((st = check_nest(p, &t)) != CP_OK || (st = advance(p)) != CP_OK ||
            (st = parse_or(p, out, depth)) != CP_OK)
            return st;
        if (TOK->kind != TOK_RPAREN) {
            char what[64];
            if (TOK->kind == TOK_EOF)
                return perr(p, CP_ESYNTAX, TOK->line, TOK->column,
                            "unexpected end of expression, expected ')' to close '(' at %d:%d",
                            t.line, t.column);
            static const char *const c[] = {"AND", "OR", NULL};
            snprintf(what, sizeof what, "AND, OR or ')' to close '(' at %d:%d", t.line, t.column);
            return err_expected_kw(p, what, c);
        }
        p->nest--;
        return advance(p);
    }
    case TOK_TAG:
    case TOK_CROWD: {
        expr_node_t *n =
            expr__node(p->e, t.kind == TOK_TAG ? EXPR_TAG : EXPR_CROWD, t.line, t.column);
        if (n == NULL)
            return nomem(p);
        n->name = t.s;
        *out = n;
        return advance(p);
    }
    case TOK_GROUP: {
        expr_node_t *n = expr__node(p->e, EXPR_GROUP, t.line, t.column);
        if (n == NULL)
            return nomem(p);
        n->name = t.s;
        *out = n;
        return advance(p);
    }
    case TOK_GROUP_TRAIT:
        return parse_group_trait(p, out);
    case TOK_WORD:
        if (is_kw(p, &t, "all")) {
            if ((*out = expr__node(p->e, EXPR_ALL, t.line, t.column)) == NULL)
                return nomem(p);
            return advance(p);
        }
        if (is_keyword_tok(p, &t))
            break;
        if (followed_by_paren(p)) {
            if (is_kw(p, &t, "near"))
                return parse_near(p, out);
            if (is_kw(p, &t, "did"))
                return parse_did(p, out);
            if (is_kw(p, &t, "has"))
                return parse_has(p, out);
            if (is_kw(p, &t, "within"))
                return perr(p, CP_ESYNTAX, t.line, t.column, "%.*s() is not supported yet",
                            (int)t.len, p->lx.src + t.off);
        }
        return parse_cmp(p, out);
    default:
        break;
    }
    return err_expected(p, "an expression");
}

static cp_status parse_unary(parser_t *p, expr_node_t **out, int *depth)
{
    cp_status st;
    if (!is_kw(p, TOK, "not"))
        return parse_primary(p, out, depth);
    tok_t t = *TOK;
    expr_node_t *n = expr__node(p->e, EXPR_NOT, t.line, t.column);
    if (n == NULL)
        return nomem(p);
    n->args = arena_alloc(&p->e->arena, sizeof *n->args);
    if (n->args == NULL)
        return nomem(p);
    n->nargs = 1;
    if ((st = check_nest(p, &t)) != CP_OK || (st = advance(p)) != CP_OK ||
        (st = parse_unary(p, &n->args[0], depth)) != CP_OK)
        return st;
    p->nest--;
    ++*depth;
    *out = n;
    return check_depth(p, n, *depth);
}

/* One level of AND or OR: operands from `sub`, flattened. */
static cp_status parse_chain(parser_t *p, expr_kind kind, const char *kw,
                             cp_status (*sub)(parser_t *, expr_node_t **, int *), expr_node_t **out,
                             int *depth)
{
    cp_status st;
    expr_node_t *first;
    int d;
    if ((st = sub(p, &first, &d)) != CP_OK)
        return st;
    if (!is_kw(p, TOK, kw)) {
        *out = first;
        *depth = d;
        return CP_OK;
    }
    expr_list_t l;
    expr__list_init(&l, kind);
    if ((st = expr__list_add(p->e, &l, first, d)) != CP_OK)
        return nomem(p);
    while (is_kw(p, TOK, kw)) {
        expr_node_t *next;
        if ((st = advance(p)) != CP_OK || (st = sub(p, &next, &d)) != CP_OK)
            return st;
        if ((st = expr__list_add(p->e, &l, next, d)) != CP_OK)
            return nomem(p);
    }
    expr_node_t *n = expr__node(p->e, kind, first->line, first->column);
    if (n == NULL)
        return nomem(p);
    n->args = l.items;
    n->nargs = l.n;
    *depth = l.max_depth + 1;
    *out = n;
    return check_depth(p, n, *depth);
}

static cp_status parse_and(parser_t *p, expr_node_t **out, int *depth)
{
    return parse_chain(p, EXPR_AND, "and", parse_unary, out, depth);
}

static cp_status parse_or(parser_t *p, expr_node_t **out, int *depth)
{
    return parse_chain(p, EXPR_OR, "or", parse_and, out, depth);
}

/* Offset of the first byte that breaks UTF-8 (len if none). */
static size_t utf8_bad_offset(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = 1;
        while (n < 4 && i + n < len && ((unsigned char)s[i + n] & 0xC0) == 0x80)
            n++;
        /* The longest well-formed prefix decides; utf8_valid knows the rules. */
        size_t k = n;
        while (k > 0 && !utf8_valid(s + i, k))
            k--;
        if (k == 0)
            return i;
        i += k;
    }
    return len;
}

cp_status expr_parse(const char *text, size_t len, expr_t **out, cp_error_t *err)
{
    cp_status st = CP_OK;
    parser_t p;
    expr_t *e = NULL;
    *out = NULL;
    error_clear(err);
    if (text == NULL && len > 0)
        return CP_ERR(err, CP_EINVAL, "expression text is NULL");
    if (len > CP_EXPR_MAX_LEN)
        return CP_ERR(err, CP_ELIMIT, "expression is %zu bytes long, the limit is %d", len,
                      CP_EXPR_MAX_LEN);
    size_t bad = utf8_bad_offset(text, len);
    if (bad < len) {
        int line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (text[i] == '\n')
                line++, col = 1;
            else if (((unsigned char)text[i] & 0xC0) != 0x80)
                col++;
        }
        return CP_ERR_AT(err, CP_ESYNTAX, line, col, "%d:%d: invalid UTF-8 (byte 0x%02X)", line,
                         col, (unsigned char)text[bad]);
    }
    if ((e = expr__new()) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    memset(&p, 0, sizeof p);
    p.e = e;
    p.err = err;
    lexer_init(&p.lx, text ? text : "", len, &e->arena);
    if ((st = lexer_next(&p.lx, err)) != CP_OK)
        goto out;
    if (p.lx.tok.kind == TOK_EOF) {
        st = perr(&p, CP_ESYNTAX, p.lx.tok.line, p.lx.tok.column, "empty expression");
        goto out;
    }
    int depth;
    if ((st = parse_or(&p, &e->root, &depth)) != CP_OK)
        goto out;
    if (p.lx.tok.kind != TOK_EOF) {
        if (p.lx.tok.kind == TOK_RPAREN)
            st = perr(&p, CP_ESYNTAX, p.lx.tok.line, p.lx.tok.column,
                      "unexpected ')' without a matching '('");
        else {
            static const char *const c[] = {"AND", "OR", NULL};
            st = err_expected_kw(&p, "AND, OR or end of expression", c);
        }
        goto out;
    }
out:
    if (st != CP_OK) {
        expr_free(e);
        return st;
    }
    *out = e;
    return CP_OK;
}
