/*
 * test_query_parser.c — the crowd expression language: text parser, errors,
 * canonical printer, JSON form, limits and round trips over random trees.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "query/ast.h"
#include "util/util.h"

/* ------------------------------------------------------------ helpers */

static expr_t *parse_ok(const char *text)
{
    expr_t *e = NULL;
    cp_error_t err;
    cp_status st = expr_parse(text, strlen(text), &e, &err);
    if (st != CP_OK) {
        print_error("parse of <%s> failed: %s\n", text, err.message);
        fail();
    }
    assert_non_null(e);
    assert_non_null(expr_root(e));
    return e;
}

/* Parses `in`, checks the canonical text, and that the canonical text is a
 * fixed point of parse+print and parses to an equal tree. */
static void check_print(const char *in, const char *want)
{
    expr_t *e = parse_ok(in);
    char *got = expr_to_text(expr_root(e));
    assert_non_null(got);
    if (strcmp(got, want) != 0) {
        print_error("input <%s>\n  want <%s>\n  got  <%s>\n", in, want, got);
        fail();
    }
    expr_t *e2 = parse_ok(got);
    assert_true(expr_equal(expr_root(e), expr_root(e2)));
    char *again = expr_to_text(expr_root(e2));
    assert_string_equal(again, got);
    free(again);
    free(got);
    expr_free(e2);
    expr_free(e);
}

static void check_err_n(const char *in, size_t len, cp_status code, int line, int col,
                        const char *frag)
{
    expr_t *e = (expr_t *)0x1;
    cp_error_t err;
    memset(&err, 0x5a, sizeof err);
    cp_status st = expr_parse(in, len, &e, &err);
    if (st != code || err.code != code || (line && (err.line != line || err.column != col)) ||
        strstr(err.message, frag) == NULL) {
        print_error("input <%.*s>\n  want %d at %d:%d with <%s>\n  got  %d at %d:%d: <%s>\n",
                    (int)(len > 200 ? 200 : len), in, code, line, col, frag, st, err.line,
                    err.column, err.message);
        fail();
    }
    assert_null(e);
    if (line) { /* the message starts with the position */
        char pre[32];
        snprintf(pre, sizeof pre, "%d:%d: ", line, col);
        assert_int_equal(strncmp(err.message, pre, strlen(pre)), 0);
    }
}

static void check_err(const char *in, cp_status code, int line, int col, const char *frag)
{
    check_err_n(in, strlen(in), code, line, col, frag);
}

static json_t *load_json(const char *s)
{
    json_error_t jerr;
    json_t *j = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (j == NULL) {
        print_error("bad test JSON <%s>: %s\n", s, jerr.text);
        fail();
    }
    return j;
}

/* ---------------------------------------------------- valid, canonical */

static void test_canonical(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"all", "ALL"},
        {"  ALL  ", "ALL"},
        {"did(purchase)", "did(purchase)"},
        {"DID ( purchase ) >= 1", "did(purchase) >= 1"},
        {"did(purchase, stock_code = '85123A', between 2011-01-01 and \"2011-06-30\") >= 3",
         "did(purchase, stock_code = \"85123A\", BETWEEN 2011-01-01 AND 2011-06-30) >= 3"},
        {"did(\"Order Completed\", category = \"x\", brand = 'y', last 30d)=0",
         "did(\"Order Completed\", category = \"x\", brand = \"y\", last 30d) = 0"},
        {"did('purchase', n = -5, gift = true, LAST 4 W) <> 2",
         "did(purchase, n = -5, gift = TRUE, last 28d) != 2"},
        {"did(x, last = 1, last 1d)", "did(x, last = 1, last 1d)"},
        {"did(all_time, between '0001-01-01' and 9999-12-31)",
         "did(all_time, BETWEEN 0001-01-01 AND 9999-12-31)"},
        {"did(\"and\") < 7 AND NOT did(b, last 90d) <= 0",
         "did(\"and\") < 7 AND NOT did(b, last 90d) <= 0"},
        {"did = 2 AND did(x) > 0", "did = 2 AND did(x) > 0"},
        {"group:acme", "group:acme"},
        {"GROUP:\"Acme Inc\" or group:acme.com/eu", "group:\"Acme Inc\" OR group:acme.com/eu"},
        {"group.plan = 'enterprise'", "group.plan = \"enterprise\""},
        {"group.plan <> \"free\" AND NOT group.seats == 3",
         "group.plan != \"free\" AND NOT group.seats = 3"},
        {"Group.plan in ('a',\"b\")", "group.plan IN (\"a\", \"b\")"},
        {"group = 1 AND group.x = TRUE", "group = 1 AND group.x = TRUE"},
        {"group:兴趣", "group:兴趣"},
        {"did(login, last 30d) DAYS>=10", "did(login, last 30d) days >= 10"},
        {"did(x) days = 0 AND days = 1", "did(x) days = 0 AND days = 1"},
        {"did(purchase, last 90d) SUM ( amount )>=500",
         "did(purchase, last 90d) sum(amount) >= 500"},
        {"did(refund) sum(amount) < -3.5 AND sum = 1",
         "did(refund) sum(amount) < -3.5 AND sum = 1"},
        {"has ( age )", "has(age)"},
        {"age is not null", "has(age)"},
        {"age IS NULL AND has = 1", "age IS NULL AND has = 1"},
        {"city not in ('a', \"b\")", "city NOT IN (\"a\", \"b\")"},
        {"NOT city NOT IN (1)", "NOT city NOT IN (1)"},
        {"email_domain starts with 'gmail'", "email_domain STARTS WITH \"gmail\""},
        {"last_seen within last 30d", "last_seen WITHIN LAST 30d"},
        {"last_seen Within Last 2 w", "last_seen WITHIN LAST 14d"},
        {"last_seen older than 90d OR last WITHIN LAST 1d",
         "last_seen OLDER THAN 90d OR last WITHIN LAST 1d"},
        {"tag:interest/finance/consulting", "tag:interest/finance/consulting"},
        {"TAG:a.b-c_d/9", "tag:a.b-c_d/9"},
        {"tag:\"with space\"", "tag:\"with space\""},
        {"tag:'single'", "tag:single"},
        {"crowd:existing_customers", "crowd:existing_customers"},
        {"crowd:\"a/b\"", "crowd:\"a/b\""},
        {"Crowd:x-1", "crowd:x-1"},
        {"age>=25", "age >= 25"},
        {"age == 25", "age = 25"},
        {"age <> 25", "age != 25"},
        {"age != 25", "age != 25"},
        {"age<25", "age < 25"},
        {"age <= 25", "age <= 25"},
        {"age > -25", "age > -25"},
        {"score = 25.0", "score = 25.0"},
        {"score = 2.5e3", "score = 2500.0"},
        {"score = 1E2", "score = 100.0"},
        {"score = 1e-7", "score = 1e-07"},
        {"score = 0.1", "score = 0.1"},
        {"score = -0.0", "score = -0.0"},
        {"score = 1e300", "score = 1e+300"},
        {"flag = true", "flag = TRUE"},
        {"flag = False", "flag = FALSE"},
        {"gender = 'female'", "gender = \"female\""},
        {"s = \"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"", "s = \"a\\\"b\\\\c/d\\n\\t\\r\\b\\f\""},
        {"s = 'it\\'s'", "s = \"it's\""},
        {"s = \"\\u00e9\\u4e2d\"", "s = \"é中\""},
        {"s = \"\\ud83d\\ude00\"", "s = \"😀\""},
        {"s = \"\\u0001\\u007f\"", "s = \"\\u0001\\u007F\""},
        {"s = \"\\u0000\"", "s = \"\\u0000\""},
        {"s = \"\"", "s = \"\""},
        {"age between 25 and 40", "age BETWEEN 25 AND 40"},
        {"d BETWEEN \"2024-01-01\" AND \"2024-12-31T23:59:59Z\"",
         "d BETWEEN \"2024-01-01\" AND \"2024-12-31T23:59:59Z\""},
        {"gender in ('f','m')", "gender IN (\"f\", \"m\")"},
        {"x IN (1)", "x IN (1)"},
        {"x IN (1, 2.5, \"s\", true)", "x IN (1, 2.5, \"s\", TRUE)"},
        {"near(23.02, 113.12, 10km)", "near(23.02, 113.12, 10km)"},
        {"near(23.02,113.12,10 km)", "near(23.02, 113.12, 10km)"},
        {"NEAR(-90, 180, 0.5 M)", "near(-90, 180, 0.5m)"},
        {"near(loc, 23.02, 113.12, 1500m)", "near(loc, 23.02, 113.12, 1500m)"},
        {"near(1e1, -1.5e1, 1e3m)", "near(10, -15, 1000m)"},
        {"a=1 and b=2", "a = 1 AND b = 2"},
        {"a=1 or b=2", "a = 1 OR b = 2"},
        {"not a=1", "NOT a = 1"},
        {"NOT NOT a=1", "NOT NOT a = 1"},
        {"a=1 AND b=2 OR c=3", "a = 1 AND b = 2 OR c = 3"},
        {"a=1 OR b=2 AND c=3", "a = 1 OR b = 2 AND c = 3"},
        {"(a=1 OR b=2) AND c=3", "(a = 1 OR b = 2) AND c = 3"},
        {"a=1 AND (b=2 OR c=3)", "a = 1 AND (b = 2 OR c = 3)"},
        {"NOT (a=1 AND b=2)", "NOT (a = 1 AND b = 2)"},
        {"NOT (a=1 OR b=2)", "NOT (a = 1 OR b = 2)"},
        {"(NOT a=1) AND b=2", "NOT a = 1 AND b = 2"},
        {"((((a=1))))", "a = 1"},
        {"(a=1 AND b=2) AND (c=3 AND d=4)", "a = 1 AND b = 2 AND c = 3 AND d = 4"},
        {"a=1 OR (b=2 OR (c=3 OR d=4))", "a = 1 OR b = 2 OR c = 3 OR d = 4"},
        {"(a=1 AND b=2) OR (c=3 AND d=4)", "a = 1 AND b = 2 OR c = 3 AND d = 4"},
        {"tag:a\nAND\r\n\tage BETWEEN 1 AND 2", "tag:a AND age BETWEEN 1 AND 2"},
        {"tag:兴趣/金融/理财", "tag:兴趣/金融/理财"},
        {"tag:\"兴趣 金融\"", "tag:\"兴趣 金融\""},
        {"tag:\"a\\nb\"", "tag:\"a\\nb\""},
        {"_x9 = 1", "_x9 = 1"},
        /* words that are not keywords may be attribute names */
        {"near = 1 AND did = 2 AND tag = 3 AND crowd IN (4) AND within = 5",
         "near = 1 AND did = 2 AND tag = 3 AND crowd IN (4) AND within = 5"},
        {"near(near, 1, 2, 3km)", "near(near, 1, 2, 3km)"},
        {"x = 9223372036854775807", "x = 9223372036854775807"},
        {"x = -9223372036854775808", "x = -9223372036854775808"},
        {"x = 007", "x = 7"},
        {"tag:interest/finance/consulting\n  AND age BETWEEN 25 AND 40\n  AND gender = "
         "\"female\"\n  AND near(23.02, 113.12, 10km)\n  AND NOT crowd:existing_customers",
         "tag:interest/finance/consulting AND age BETWEEN 25 AND 40 AND gender = \"female\" AND "
         "near(23.02, 113.12, 10km) AND NOT crowd:existing_customers"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++)
        check_print(cases[i][0], cases[i][1]);
}

/* ------------------------------------------------------- tree shapes */

static void test_precedence_and_flattening(void **state)
{
    (void)state;
    expr_t *e = parse_ok("a=1 OR b=2 AND NOT c=3 OR d=4");
    expr_node_t *r = expr_root(e);
    assert_int_equal(r->kind, EXPR_OR);
    assert_int_equal(r->nargs, 3);
    assert_int_equal(r->args[0]->kind, EXPR_CMP);
    assert_string_equal(r->args[0]->name, "a");
    assert_int_equal(r->args[1]->kind, EXPR_AND);
    assert_int_equal(r->args[1]->nargs, 2);
    assert_int_equal(r->args[1]->args[1]->kind, EXPR_NOT);
    assert_int_equal(r->args[1]->args[1]->nargs, 1);
    assert_string_equal(r->args[1]->args[1]->args[0]->name, "c");
    assert_string_equal(r->args[2]->name, "d");
    expr_free(e);

    /* NOT binds tighter than AND */
    e = parse_ok("NOT a=1 AND b=2");
    r = expr_root(e);
    assert_int_equal(r->kind, EXPR_AND);
    assert_int_equal(r->args[0]->kind, EXPR_NOT);
    expr_free(e);

    /* flattening across parentheses on both sides, but not across kinds */
    e = parse_ok("(a=1 AND (b=2 AND c=3)) AND ((d=4) AND (e=5 OR f=6))");
    r = expr_root(e);
    assert_int_equal(r->kind, EXPR_AND);
    assert_int_equal(r->nargs, 5);
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(r->args[i]->name, names[i]);
    assert_int_equal(r->args[4]->kind, EXPR_OR);
    assert_int_equal(r->args[4]->nargs, 2);
    expr_free(e);

    /* BETWEEN's AND belongs to BETWEEN */
    e = parse_ok("x BETWEEN 1 AND 2 AND y BETWEEN 3 AND 4");
    r = expr_root(e);
    assert_int_equal(r->kind, EXPR_AND);
    assert_int_equal(r->nargs, 2);
    assert_int_equal(r->args[0]->kind, EXPR_BETWEEN);
    assert_int_equal(r->args[1]->values[1].i, 4);
    expr_free(e);

    /* a long flat chain is one node and no deep recursion */
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(buf_printf(&b, "%sx%d = %d", i ? " OR " : "", i, i), CP_OK);
    e = parse_ok(buf_cstr(&b));
    assert_int_equal(expr_root(e)->kind, EXPR_OR);
    assert_int_equal(expr_root(e)->nargs, 3000);
    assert_int_equal(expr_root(e)->args[2999]->values[0].i, 2999);
    char *t = expr_to_text(expr_root(e));
    assert_string_equal(t, buf_cstr(&b));
    free(t);
    expr_free(e);
    buf_free(&b);
}

static void test_values_and_positions(void **state)
{
    (void)state;
    expr_t *e = parse_ok("x IN (-12, 3.25, 'a\\u00e9\\ud83d\\ude00', true, FALSE, \"\\u0000z\")");
    expr_node_t *n = expr_root(e);
    assert_int_equal(n->kind, EXPR_IN);
    assert_int_equal(n->nvalues, 6);
    assert_int_equal(n->values[0].kind, VAL_INT);
    assert_int_equal(n->values[0].i, -12);
    assert_int_equal(n->values[1].kind, VAL_REAL);
    assert_true(n->values[1].r == 3.25);
    assert_int_equal(n->values[2].kind, VAL_STRING);
    assert_int_equal(n->values[2].slen, 1 + 2 + 4);
    assert_memory_equal(n->values[2].s, "a\xC3\xA9\xF0\x9F\x98\x80", 7);
    assert_int_equal(n->values[3].kind, VAL_BOOL);
    assert_int_equal(n->values[3].i, 1);
    assert_int_equal(n->values[4].kind, VAL_BOOL);
    assert_int_equal(n->values[4].i, 0);
    assert_int_equal(n->values[5].slen, 2);
    assert_memory_equal(n->values[5].s, "\0z", 3);
    expr_free(e);

    e = parse_ok("near(loc, 23.02, 113.12, 10km) OR near(-1, 2, 250 m)");
    n = expr_root(e)->args[0];
    assert_int_equal(n->kind, EXPR_NEAR);
    assert_string_equal(n->name, "loc");
    assert_true(n->near.lat == 23.02 && n->near.lon == 113.12 && n->near.radius == 10);
    assert_int_equal(n->near.unit, UNIT_KM);
    assert_true(expr_near_radius_m(n) == 10000.0);
    n = expr_root(e)->args[1];
    assert_null(n->name);
    assert_int_equal(n->near.unit, UNIT_M);
    assert_true(expr_near_radius_m(n) == 250.0);
    expr_free(e);

    /* node positions (line, column in code points) for the planner's errors */
    e = parse_ok("tag:兴趣 AND\n  (NOT age >= 1 OR crowd:c)");
    n = expr_root(e);
    assert_int_equal(n->args[0]->line, 1);
    assert_int_equal(n->args[0]->column, 1);
    expr_node_t *o = n->args[1];
    assert_int_equal(o->kind, EXPR_OR);
    assert_int_equal(o->args[0]->line, 2);
    assert_int_equal(o->args[0]->column, 4); /* NOT */
    assert_int_equal(o->args[0]->args[0]->column, 8);
    assert_int_equal(o->args[1]->column, 20);
    expr_free(e);
}

/* -------------------------------------------------------------- errors */

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        cp_status code;
        int line, col;
        const char *frag;
    } cases[] = {
        {"", CP_ESYNTAX, 1, 1, "empty expression"},
        {"group.plan > 1", CP_ESYNTAX, 1, 12, "expected '=', '!=' or IN after group.plan"},
        {"group.9x = 1", CP_ESYNTAX, 1, 7, "expected a trait name after 'group.'"},
        {"group:", CP_ESYNTAX, 1, 7, "expected a group id after 'group:'"},
        {"  \n  ", CP_ESYNTAX, 2, 3, "empty expression"},
        {"age = )", CP_ESYNTAX, 1, 7, "expected a value after '=', found ')'"},
        {"age >= 25 AND x = )", CP_ESYNTAX, 1, 19, "expected a value after '=', found ')'"},
        {"(a = 1\n  ", CP_ESYNTAX, 2, 3,
         "unexpected end of expression, expected ')' to close '(' at 1:1"},
        {"x = 1 AND\n (y = 2 OR (z = 3)", CP_ESYNTAX, 2, 19,
         "unexpected end of expression, expected ')' to close '(' at 2:2"},
        {"(a = 1 b = 2)", CP_ESYNTAX, 1, 8,
         "unknown keyword 'b', expected AND, OR or ')' to close '(' at 1:1"},
        {"(a = 1 'x')", CP_ESYNTAX, 1, 8,
         "expected AND, OR or ')' to close '(' at 1:1, found string 'x'"},
        {"age >= 25 ANDD x = 1", CP_ESYNTAX, 1, 11, "unknown keyword 'ANDD'"},
        {"age >= 25 ANDD x = 1", CP_ESYNTAX, 1, 11, "(did you mean AND?)"},
        {"a = 1 adn b = 2", CP_ESYNTAX, 1, 7, "did you mean AND?"},
        {"a = 1 ro b = 2", CP_ESYNTAX, 1, 7, "did you mean OR?"},
        {"age BETWEN 1 AND 2", CP_ESYNTAX, 1, 5, "did you mean BETWEEN?"},
        {"age BETWEEN 1 ADN 2", CP_ESYNTAX, 1, 15, "expected AND between the bounds of BETWEEN"},
        {"age BETWEEN 1 OR 2", CP_ESYNTAX, 1, 15,
         "expected AND between the bounds of BETWEEN, found 'OR'"},
        {"age BETWEEN 1", CP_ESYNTAX, 1, 14, "unexpected end of expression, expected AND"},
        {"age", CP_ESYNTAX, 1, 4,
         "unexpected end of expression, expected a comparison operator, BETWEEN, IN, NOT IN, IS "
         "NULL, STARTS WITH, WITHIN LAST or OLDER THAN after 'age'"},
        {"age 25", CP_ESYNTAX, 1, 5,
         "expected a comparison operator, BETWEEN, IN, NOT IN, IS NULL, STARTS WITH, WITHIN LAST "
         "or OLDER THAN after 'age', found '25'"},
        {"age NOT = 1", CP_ESYNTAX, 1, 5, "NOT age"},
        {"age IS 1", CP_ESYNTAX, 1, 8, "expected NULL after IS / IS NOT, found '1'"},
        {"age IS NOT", CP_ESYNTAX, 1, 11, "expected NULL after IS / IS NOT"},
        {"city STARTS \"a\"", CP_ESYNTAX, 1, 13, "expected WITH after STARTS"},
        {"city STARTS WITH 1", CP_ESYNTAX, 1, 18, "expected a quoted prefix"},
        {"t WITHIN 30d", CP_ESYNTAX, 1, 10, "expected LAST after WITHIN"},
        {"t WITHIN LAST 0d", CP_EINVAL, 1, 15, "WITHIN LAST N needs a whole number of days"},
        {"t OLDER THAN 30h", CP_ESYNTAX, 1, 16, "expected a unit 'd' (days) or 'w' (weeks)"},
        {"t OLDER THAN 6000w", CP_ELIMIT, 1, 14, "longer than 36600 days"},
        {"has(age", CP_ESYNTAX, 1, 8, "')' to close has( at 1:1"},
        {"has(1)", CP_ESYNTAX, 1, 5, "expected an attribute name"},
        {"did(x) days", CP_ESYNTAX, 1, 8, "expected AND, OR or end of expression"},
        {"did(x) sum(amount)", CP_ESYNTAX, 1, 19, "expected a comparison operator after sum"},
        {"did(x) sum(amount) > \"5\"", CP_ESYNTAX, 1, 22, "expected a number to compare"},
        {"did(x) sum(1) > 5", CP_ESYNTAX, 1, 12, "expected a property name in sum()"},
        {"age NOT IN 1", CP_ESYNTAX, 1, 12, "expected '('"},
        {"a = 1 AND", CP_ESYNTAX, 1, 10,
         "unexpected end of expression, expected an expression after 'AND'"},
        {"NOT", CP_ESYNTAX, 1, 4, "expected an expression after 'NOT'"},
        {"()", CP_ESYNTAX, 1, 2, "expected an expression after '(', found ')'"},
        {"AND a = 1", CP_ESYNTAX, 1, 1, "expected an expression"},
        {"a = 1 OR OR b = 1", CP_ESYNTAX, 1, 10, "expected an expression after 'OR', found 'OR'"},
        {"a = 1)", CP_ESYNTAX, 1, 6, "unexpected ')' without a matching '('"},
        {"a = 1 ,", CP_ESYNTAX, 1, 7, "expected AND, OR or end of expression, found ','"},
        {"tag:a tag:b", CP_ESYNTAX, 1, 7, "expected AND, OR or end of expression, found 'tag:b'"},
        {"gender = female", CP_ESYNTAX, 1, 10, "found 'female' (strings are quoted: \"female\")"},
        {"gender = AND", CP_ESYNTAX, 1, 10, "expected a value after '=', found 'AND'"},
        {"gender =", CP_ESYNTAX, 1, 9, "unexpected end of expression, expected a value after '='"},
        {"x IN 1", CP_ESYNTAX, 1, 6, "expected '(' after 'IN', found '1'"},
        {"x IN ()", CP_ESYNTAX, 1, 7, "expected a value after '(', found ')'"},
        {"x IN (1,)", CP_ESYNTAX, 1, 9, "expected a value after ',', found ')'"},
        {"x IN (1 2)", CP_ESYNTAX, 1, 9,
         "expected ',' or ')' to close the IN list opened at 1:6, found '2'"},
        {"x IN (1", CP_ESYNTAX, 1, 8, "unexpected end of expression, expected ',' or ')'"},
        {"x = 99999999999999999999", CP_EINVAL, 1, 5, "out of range"},
        {"x = 9223372036854775808", CP_EINVAL, 1, 5, "out of range"},
        {"x = -9223372036854775809", CP_EINVAL, 1, 5, "out of range"},
        {"x = 1e999", CP_EINVAL, 1, 5, "number '1e999' out of range"},
        {"x = 1.", CP_ESYNTAX, 1, 7, "expected a digit after '.'"},
        {"x = 1.e5", CP_ESYNTAX, 1, 7, "expected a digit after '.'"},
        {"x = .5", CP_ESYNTAX, 1, 5, "unexpected character '.'"},
        {"x = +5", CP_ESYNTAX, 1, 5, "unexpected character '+'"},
        {"x = 1e", CP_ESYNTAX, 1, 5, "invalid number '1e'"},
        {"x = 0x10", CP_ESYNTAX, 1, 5, "invalid number '0x10'"},
        {"x = 25abc AND y = 1", CP_ESYNTAX, 1, 5, "invalid number '25abc'"},
        {"x IN (1, 2.5e3kg)", CP_ESYNTAX, 1, 10, "invalid number '2.5e3kg'"},
        {"near(1x, 2, 3km)", CP_ESYNTAX, 1, 6, "invalid number '1x'"},
        {"x ! 1", CP_ESYNTAX, 1, 3, "unexpected character '!' (did you mean '!='?)"},
        {"x = \"abc", CP_ESYNTAX, 1, 5, "unterminated string"},
        {"x = 'abc\"", CP_ESYNTAX, 1, 5, "unterminated string"},
        {"x = \"ab\\\"", CP_ESYNTAX, 1, 5, "unterminated string"},
        {"x = \"a\\qb\"", CP_ESYNTAX, 1, 7, "invalid escape '\\q' in string"},
        {"x = \"a\\u12G4\"", CP_ESYNTAX, 1, 7, "invalid \\u escape"},
        {"x = \"a\\u12\"", CP_ESYNTAX, 1, 7, "invalid \\u escape"},
        {"x = \"\\ud83d\"", CP_ESYNTAX, 1, 6, "unpaired surrogate \\uD83D"},
        {"x = \"\\ud83dx\"", CP_ESYNTAX, 1, 6, "unpaired surrogate"},
        {"x = \"\\ud83d\\u0041\"", CP_ESYNTAX, 1, 6, "unpaired surrogate"},
        {"x = \"\\ude00\"", CP_ESYNTAX, 1, 6, "unpaired surrogate \\uDE00"},
        {"x = \"a\nb\"", CP_ESYNTAX, 1, 7, "control character U+000A in string (write \\n)"},
        {"x = \"a\tb\"", CP_ESYNTAX, 1, 7, "control character U+0009"},
        {"x = \"é\\x\"", CP_ESYNTAX, 1, 7, "invalid escape '\\x'"}, /* columns in code points */
        {"tag:兴趣 AND x = )", CP_ESYNTAX, 1, 16, "expected a value after '='"},
        {"tag:", CP_ESYNTAX, 1, 5, "expected a tag path after 'tag:', found end of expression"},
        {"tag: a", CP_ESYNTAX, 1, 5, "expected a tag path after 'tag:', found U+0020"},
        {"tag:(a)", CP_ESYNTAX, 1, 5, "expected a tag path after 'tag:', found '('"},
        {"tag:\"\"", CP_ESYNTAX, 1, 5, "empty tag path"},
        {"tag:\"a\\u0000\"", CP_ESYNTAX, 1, 5, "tag path contains \\u0000"},
        {"crowd:", CP_ESYNTAX, 1, 7, "expected a crowd name after 'crowd:'"},
        {"crowd:a/b", CP_ESYNTAX, 1, 8, "unexpected character '/'"},
        {"crowd:''", CP_ESYNTAX, 1, 7, "empty crowd name"},
        {"foo:bar", CP_ESYNTAX, 1, 1, "unknown prefix 'foo:', expected tag:, crowd: or group:"},
        {"interest/finance", CP_ESYNTAX, 1, 9, "(tag paths are written tag:PATH)"},
        {"x = 1 ，y = 2", CP_ESYNTAX, 1, 7, "unexpected character '，' (U+FF0C)"},
        {"x = 1\x01", CP_ESYNTAX, 1, 6, "unexpected character U+0001"},
        {"did()", CP_ESYNTAX, 1, 5, "expected an event name (a word or a quoted string)"},
        {"did(and)", CP_ESYNTAX, 1, 5, "expected an event name"},
        {"did(\"\")", CP_EINVAL, 1, 5, "an event name must be non-empty"},
        {"did(x", CP_ESYNTAX, 1, 6, "expected ',' or ')' to close did( at 1:4"},
        {"did(x, last 30d, a = 1)", CP_ESYNTAX, 1, 16, "')' (the window comes last)"},
        {"did(x, last 30)", CP_ESYNTAX, 1, 15, "expected a unit 'd' (days) or 'w' (weeks)"},
        {"did(x, last 30h)", CP_ESYNTAX, 1, 15, "found 'h'"},
        {"did(x, last 0d)", CP_EINVAL, 1, 13, "N >= 1"},
        {"did(x, last 1.5d)", CP_EINVAL, 1, 13, "whole number of days"},
        {"did(x, last 36601d)", CP_ELIMIT, 1, 13, "longer than 36600 days"},
        {"did(x, last 5229w)", CP_ELIMIT, 1, 13, "longer than 36600 days"},
        {"did(x, between 2011-01-01)", CP_ESYNTAX, 1, 26, "AND between the dates of BETWEEN"},
        {"did(x, between 2011-1-01 and 2011-02-01)", CP_ESYNTAX, 1, 16,
         "expected a date YYYY-MM-DD as the start of the window"},
        {"did(x, between 2011-02-30 and 2011-03-01)", CP_EINVAL, 1, 16,
         "invalid date '2011-02-30'"},
        {"did(x, between 2011-01-01 and '2011-01-01T10:00')", CP_EINVAL, 1, 31,
         "expected a date YYYY-MM-DD as the end of the window"},
        {"did(x, between 2011-01-01x and 2011-01-02)", CP_ESYNTAX, 1, 16, "expected a date"},
        {"did(x, between 2011-06-30 and 2011-01-01)", CP_EINVAL, 1, 16,
         "the window starts after it ends"},
        {"did(x, a > 1)", CP_ESYNTAX, 1, 10, "did() filters compare with '=' only"},
        {"did(x, a)", CP_ESYNTAX, 1, 9, "expected '=' after the property 'a'"},
        {"did(x, a = 1.5)", CP_EINVAL, 1, 12, "strings, integers or booleans, not 1.5"},
        {"did(x, a = 1, a = 2)", CP_EINVAL, 1, 15, "property \"a\" is filtered twice"},
        {"did(x, 5)", CP_ESYNTAX, 1, 8, "expected a property filter (name = value)"},
        {"did(x) >= -1", CP_EINVAL, 1, 11, "a did() count is a whole number >= 0"},
        {"did(x) >= 2.5", CP_EINVAL, 1, 11, "whole number"},
        {"did(x) >= y", CP_ESYNTAX, 1, 11, "expected a count (a whole number >= 0)"},
        {"did(x) >= 3d", CP_EINVAL, 1, 11, "whole number"},
        {"did(x, a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9)", CP_ELIMIT, 1, 40,
         "more than 8 property filters"},
        {"within(shops)", CP_ESYNTAX, 1, 1, "within() is not supported yet"},
        {"near(23.02, 113.12, 10)", CP_ESYNTAX, 1, 23,
         "expected a unit 'm' or 'km' after '10', found ')'"},
        {"near(23.02, 113.12, 10mi)", CP_ESYNTAX, 1, 23,
         "expected a unit 'm' or 'km' after '10', found 'mi'"},
        {"near(23.02, 113.12)", CP_ESYNTAX, 1, 19, "expected ',' after the longitude in near()"},
        {"near(23.02 113.12, 1km)", CP_ESYNTAX, 1, 12,
         "expected ',' after the latitude in near(), found '113.12'"},
        {"near(loc 1, 2, 1km)", CP_ESYNTAX, 1, 10,
         "expected ',' after the attribute name in near()"},
        {"near(\"x\", 1, 2, 1km)", CP_ESYNTAX, 1, 6, "expected a latitude"},
        {"near(1, 2, 3km", CP_ESYNTAX, 1, 15,
         "unexpected end of expression, expected ')' to close near( at 1:5"},
        {"near(1, 2, 3km 4)", CP_ESYNTAX, 1, 16, "expected ')' to close near( at 1:5, found '4'"},
        {"near(90.5, 0, 1km)", CP_EINVAL, 1, 6, "latitude '90.5' out of range [-90, 90]"},
        {"near(-91, 0, 1km)", CP_EINVAL, 1, 6, "latitude '-91' out of range"},
        {"near(0, 180.0001, 1km)", CP_EINVAL, 1, 9,
         "longitude '180.0001' out of range [-180, 180]"},
        {"near(0, 0, 0km)", CP_EINVAL, 1, 12, "radius '0' must be a finite number greater than 0"},
        {"near(0, 0, -1km)", CP_EINVAL, 1, 12, "greater than 0"},
        {"near(0, 0, 1e999km)", CP_EINVAL, 1, 12, "finite"},
        {"near(0, 0, 1e-400km)", CP_EINVAL, 1, 12, "greater than 0"},
        {"all = 1", CP_ESYNTAX, 1, 5, "expected AND, OR or end of expression, found '='"},
        {"in = 1", CP_ESYNTAX, 1, 1, "expected an expression, found 'in'"},
        {"true", CP_ESYNTAX, 1, 1, "expected an expression, found 'true'"},
        {"x = \"\xff\"", CP_ESYNTAX, 1, 6, "invalid UTF-8 (byte 0xFF)"},
        {"é\n é\xc3", CP_ESYNTAX, 2, 3, "invalid UTF-8 (byte 0xC3)"},
        {"x = \"\xed\xa0\x80\"", CP_ESYNTAX, 1, 6, "invalid UTF-8"}, /* encoded surrogate */
        {"x = \"\xc0\xaf\"", CP_ESYNTAX, 1, 6, "invalid UTF-8"},     /* overlong */
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++)
        check_err(cases[i].in, cases[i].code, cases[i].line, cases[i].col, cases[i].frag);

    /* a NUL byte inside the text (length-delimited input) */
    check_err_n("a = 1\0", 6, CP_ESYNTAX, 1, 6, "unexpected character U+0000");
    /* NULL text */
    expr_t *e;
    cp_error_t err;
    assert_int_equal(expr_parse(NULL, 3, &e, &err), CP_EINVAL);
    assert_int_equal(expr_parse(NULL, 0, &e, &err), CP_ESYNTAX);
    /* a NULL error record is fine */
    assert_int_equal(expr_parse("a =", 3, &e, NULL), CP_ESYNTAX);
    assert_null(e);
}

/* -------------------------------------------------------------- limits */

static char *repeat(const char *pre, int n, const char *mid, const char *post, int m)
{
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(buf_printf(&b, "%s", pre), CP_OK);
    assert_int_equal(buf_printf(&b, "%s", mid), CP_OK);
    for (int i = 0; i < m; i++)
        assert_int_equal(buf_printf(&b, "%s", post), CP_OK);
    buf_cstr(&b);
    return b.data;
}

static void test_limits(void **state)
{
    (void)state;
    /* 64 parentheses: fine (they leave no trace); 65: too deep, at the 65th '(' */
    char *s = repeat("(", 64, "a = 1", ")", 64);
    expr_t *e = parse_ok(s);
    assert_int_equal(expr_root(e)->kind, EXPR_CMP);
    expr_free(e);
    free(s);
    s = repeat("(", 65, "a = 1", ")", 65);
    check_err(s, CP_ELIMIT, 1, 65, "nested deeper than 64 levels");
    free(s);
    /* a million '(' fails fast at the limit, without recursing */
    s = repeat("(", 60000, "", "", 0);
    check_err(s, CP_ELIMIT, 1, 65, "nested deeper than 64");
    free(s);
    s = repeat("NOT ", 16000, "", "", 0);
    check_err(s, CP_ELIMIT, 1, 257, "nested deeper than 64");
    free(s);

    /* tree depth: 63 NOTs over a leaf is 64 levels; 64 NOTs is 65 */
    s = repeat("NOT ", 63, "a = 1", "", 0);
    e = parse_ok(s);
    char *t = expr_to_text(expr_root(e));
    assert_string_equal(t, s);
    free(t);
    /* and the JSON form of the deepest tree reads back */
    json_t *j = expr_to_json(expr_root(e));
    expr_t *e2;
    cp_error_t err;
    assert_int_equal(expr_from_json(j, &e2, &err), CP_OK);
    assert_true(expr_equal(expr_root(e), expr_root(e2)));
    expr_free(e2);
    json_decref(j);
    expr_free(e);
    free(s);
    s = repeat("NOT ", 64, "a = 1", "", 0);
    check_err(s, CP_ELIMIT, 0, 0, "nested deeper than 64 levels");
    free(s);

    /* alternating AND / OR nesting: each parenthesis adds two tree levels */
    s = repeat("a = 1 OR b = 1 AND (", 31, "c = 1", ")", 31); /* depth 2*31+... */
    cp_status st = expr_parse(s, strlen(s), &e, &err);
    assert_int_equal(st, CP_OK); /* 31 * 2 + 1 = 63 levels */
    expr_free(e);
    free(s);
    s = repeat("a = 1 OR b = 1 AND (", 32, "c = 1", ")", 32);
    check_err(s, CP_ELIMIT, 0, 0, "nested deeper than 64 levels");
    free(s);

    /* length: CP_EXPR_MAX_LEN bytes parse, one more is CP_ELIMIT */
    char *big = malloc(CP_EXPR_MAX_LEN + 2);
    memset(big, ' ', CP_EXPR_MAX_LEN + 1);
    memcpy(big, "all", 3);
    e = NULL;
    assert_int_equal(expr_parse(big, CP_EXPR_MAX_LEN, &e, &err), CP_OK);
    expr_free(e);
    assert_int_equal(expr_parse(big, CP_EXPR_MAX_LEN + 1, &e, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "limit"));
    free(big);

    /* JSON nesting past the limit, even where flattening would shrink it */
    j = json_pack("{s:b}", "all", 1);
    for (int i = 0; i < 70; i++)
        j = json_pack("{s:[o,{s:s}]}", "and", j, "tag", "x");
    assert_int_equal(expr_from_json(j, &e, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "nested deeper than 64 levels"));
    assert_non_null(strstr(err.message, "and[0].and[0]"));
    json_decref(j);
}

/* --------------------------------------------------------------- JSON */

static void check_json(const char *json, const char *want_text)
{
    json_t *j = load_json(json);
    expr_t *e = NULL;
    cp_error_t err;
    if (expr_from_json(j, &e, &err) != CP_OK) {
        print_error("from_json <%s>: %s\n", json, err.message);
        fail();
    }
    char *t = expr_to_text(expr_root(e));
    if (strcmp(t, want_text) != 0) {
        print_error("json <%s>\n  want <%s>\n  got  <%s>\n", json, want_text, t);
        fail();
    }
    expr_t *e2 = parse_ok(t);
    assert_true(expr_equal(expr_root(e), expr_root(e2)));
    free(t);
    expr_free(e2);
    expr_free(e);
    json_decref(j);
}

static void check_json_err(const char *json, cp_status code, const char *frag)
{
    json_t *j = load_json(json);
    expr_t *e = (expr_t *)0x1;
    cp_error_t err;
    cp_status st = expr_from_json(j, &e, &err);
    if (st != code || strstr(err.message, frag) == NULL || err.line != 0) {
        print_error("json <%s>\n  want %d <%s>\n  got  %d <%s>\n", json, code, frag, st,
                    err.message);
        fail();
    }
    assert_null(e);
    json_decref(j);
}

static void test_json(void **state)
{
    (void)state;
    check_json("{\"all\": true}", "ALL");
    check_json("{\"and\": [{\"tag\": \"a/b\"}, {\"not\": {\"crowd\": \"c d\"}}]}",
               "tag:a/b AND NOT crowd:\"c d\"");
    check_json("{\"and\": [{\"and\": [{\"tag\": \"a\"}, {\"tag\": \"b\"}]}, {\"or\": [{\"tag\": "
               "\"c\"}, {\"or\": [{\"tag\": \"d\"}, {\"tag\": \"e\"}]}]}]}",
               "tag:a AND tag:b AND (tag:c OR tag:d OR tag:e)");
    check_json("{\"attr\": \"age\", \"op\": \">=\", \"value\": 25}", "age >= 25");
    check_json("{\"attr\": \"age\", \"op\": \"==\", \"value\": 25.0}", "age = 25.0");
    check_json("{\"attr\": \"age\", \"op\": \"<>\", \"value\": -1.5e-9}", "age != -1.5e-09");
    check_json("{\"attr\": \"age\", \"between\": [25, 40]}", "age BETWEEN 25 AND 40");
    check_json("{\"attr\": \"gender\", \"in\": [\"female\", \"male\"]}",
               "gender IN (\"female\", \"male\")");
    check_json("{\"attr\": \"vip\", \"op\": \"=\", \"value\": true}", "vip = TRUE");
    check_json("{\"attr\": \"s\", \"op\": \"=\", \"value\": \"a\\u0000\\\"\\n\\u001f\"}",
               "s = \"a\\u0000\\\"\\n\\u001F\"");
    check_json("{\"near\": {\"lat\": 23.02, \"lon\": 113.12, \"radius\": 10, \"unit\": \"km\"}}",
               "near(23.02, 113.12, 10km)");
    check_json("{\"near\": {\"attr\": \"loc\", \"lat\": -90, \"lon\": 180, \"radius\": 0.5, "
               "\"unit\": \"m\"}}",
               "near(loc, -90, 180, 0.5m)");
    check_json("{\"tag\": \"兴趣/金融\"}", "tag:兴趣/金融");
    check_json("{\"crowd\": \"all\"}", "crowd:all");
    check_json("{\"did\": {\"event\": \"purchase\", \"where\": {\"stock_code\": \"85123A\"}, "
               "\"between\": [\"2011-01-01\",\"2011-06-30\"], \"op\": \">=\", \"count\": 3}}",
               "did(purchase, stock_code = \"85123A\", BETWEEN 2011-01-01 AND 2011-06-30) >= 3");
    check_json("{\"did\": {\"event\": \"x\", \"where\": {}}}", "did(x)");
    check_json("{\"group\": \"Acme Inc\"}", "group:\"Acme Inc\"");
    check_json("{\"group_trait\": \"plan\", \"op\": \"=\", \"value\": \"enterprise\"}",
               "group.plan = \"enterprise\"");
    check_json("{\"group_trait\": \"seats\", \"in\": [1, 2.5]}", "group.seats IN (1, 2.5)");
    check_json("{\"did\": {\"event\": \"Order Completed\", \"last_days\": 90}}",
               "did(\"Order Completed\", last 90d)");
    check_json("{\"did\": {\"event\": \"p\", \"where\": {\"b\": 2, \"a\": false}, \"op\": \"<>\", "
               "\"count\": 0}}",
               "did(p, b = 2, a = FALSE) != 0");

    /* the JSON form of did(), exactly */
    {
        expr_t *d = parse_ok("did(purchase, stock_code = \"85123A\", n = 3, last 2w) < 4 OR "
                             "did(v, between 1969-12-31 and '1970-01-01')");
        json_t *jd = expr_to_json(expr_root(d));
        char *dd = json_dumps(jd, JSON_COMPACT);
        assert_string_equal(dd,
                            "{\"or\":[{\"did\":{\"event\":\"purchase\",\"where\":{"
                            "\"stock_code\":\"85123A\",\"n\":3},\"last_days\":14,\"op\":\"<\","
                            "\"count\":4}},{\"did\":{\"event\":\"v\",\"between\":[\"1969-12-31\","
                            "\"1970-01-01\"]}}]}");
        const expr_node_t *n0 = expr_root(d)->args[1];
        assert_int_equal(n0->did.from, -1);
        assert_int_equal(n0->did.to, 0);
        free(dd);
        json_decref(jd);
        expr_free(d);
    }

    /* the JSON form of a parsed tree, exactly */
    expr_t *e = parse_ok("tag:a AND age BETWEEN 25 AND 40 OR NOT x IN (1, 2.5, \"s\", TRUE) OR "
                         "near(loc, 1, 2, 3km)");
    json_t *j = expr_to_json(expr_root(e));
    char *dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(
        dump,
        "{\"or\":[{\"and\":[{\"tag\":\"a\"},{\"attr\":\"age\",\"between\":[25,40]}]},"
        "{\"not\":{\"attr\":\"x\",\"in\":[1,2.5,\"s\",true]}},"
        "{\"near\":{\"attr\":\"loc\",\"lat\":1.0,\"lon\":2.0,\"radius\":3.0,\"unit\":\"km\"}}]}");
    free(dump);
    json_decref(j);
    expr_free(e);
}

static void test_json_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        cp_status code;
        const char *frag;
    } cases[] = {
        {"[]", CP_EINVAL, "expected an expression object, found an array"},
        {"null", CP_EINVAL, "found null"},
        {"{}", CP_EINVAL, "empty object"},
        {"{\"foo\": 1}", CP_EINVAL, "unknown key 'foo'"},
        {"{\"group_trait\": \"plan\", \"op\": \">\", \"value\": 1}", CP_EINVAL,
         "group traits compare with"},
        {"{\"group_trait\": \"in\", \"in\": [1]}", CP_EINVAL, "not a valid trait name"},
        {"{\"group_trait\": \"plan\"}", CP_EINVAL, "needs \"op\" and \"value\", or \"in\""},
        {"{\"all\": false}", CP_EINVAL, "all: expected true"},
        {"{\"all\": true, \"x\": 1}", CP_EINVAL, "unknown key 'x'"},
        {"{\"and\": [{\"tag\": \"a\"}]}", CP_EINVAL, "and: expected an array of at least 2"},
        {"{\"or\": {\"tag\": \"a\"}}", CP_EINVAL, "or: expected an array of at least 2"},
        {"{\"and\": [{\"tag\": \"a\"}, {\"attr\": \"age\", \"between\": [1]}]}", CP_EINVAL,
         "and[1].between: expected an array of 2 values"},
        {"{\"and\": [{\"tag\": \"a\"}, 3]}", CP_EINVAL,
         "and[1]: expected an expression object, found an integer"},
        {"{\"not\": {\"tag\": 1}}", CP_EINVAL, "not.tag: expected a tag path, found an integer"},
        {"{\"not\": [{\"tag\": \"a\"}]}", CP_EINVAL,
         "not: expected an expression object, found an array"},
        {"{\"tag\": \"\"}", CP_EINVAL, "tag: expected a tag path, found an empty string"},
        {"{\"tag\": \"a\\u0000b\"}", CP_EINVAL, "tag: a tag path contains \\u0000"},
        {"{\"tag\": \"a\", \"crowd\": \"b\"}", CP_EINVAL,
         "keys 'tag' and 'crowd' cannot be combined"},
        {"{\"and\": [{\"tag\": \"a\"}, {\"or\": [{\"tag\": \"b\"}, {\"crowd\": \"\"}]}]}",
         CP_EINVAL, "and[1].or[1].crowd: expected a crowd name, found an empty string"},
        {"{\"attr\": \"age\", \"op\": \">=\", \"value\": null}", CP_EINVAL,
         "value: expected a number, string or boolean, found null"},
        {"{\"attr\": \"age\", \"op\": \"=>\", \"value\": 1}", CP_EINVAL, "op: expected one of"},
        {"{\"attr\": \"age\", \"op\": 1, \"value\": 1}", CP_EINVAL, "op: expected one of"},
        {"{\"attr\": \"and\", \"op\": \"=\", \"value\": 1}", CP_EINVAL,
         "attr: 'and' is not a valid attribute name"},
        {"{\"attr\": \"9a\", \"op\": \"=\", \"value\": 1}", CP_EINVAL, "not a valid attribute"},
        {"{\"attr\": \"a-b\", \"op\": \"=\", \"value\": 1}", CP_EINVAL, "not a valid attribute"},
        {"{\"attr\": 5, \"op\": \"=\", \"value\": 1}", CP_EINVAL,
         "attr: expected an attribute name"},
        {"{\"attr\": \"age\", \"op\": \"=\", \"value\": 1, \"x\": 2}", CP_EINVAL,
         "unknown key 'x'"},
        {"{\"attr\": \"age\", \"op\": \"=\"}", CP_EINVAL, "\"op\" needs a \"value\""},
        {"{\"attr\": \"age\", \"value\": 1}", CP_EINVAL, "\"value\" needs an \"op\""},
        {"{\"attr\": \"age\"}", CP_EINVAL,
         "needs \"op\" and \"value\", \"between\", \"in\", \"not_in\""},
        {"{\"attr\": \"age\", \"between\": [1, 2], \"in\": [1]}", CP_EINVAL, "use only one of"},
        {"{\"attr\": \"age\", \"is_null\": false}", CP_EINVAL, "is_null: expected true"},
        {"{\"attr\": \"age\", \"is_null\": true, \"value\": 1}", CP_EINVAL,
         "\"value\" goes only with \"op\""},
        {"{\"attr\": \"city\", \"starts_with\": 1}", CP_EINVAL,
         "starts_with: expected a string, found an integer"},
        {"{\"attr\": \"t\", \"within_last_days\": 0}", CP_EINVAL,
         "within_last_days: expected a whole number of days from 1 to 36600"},
        {"{\"attr\": \"t\", \"older_than_days\": \"9\"}", CP_EINVAL,
         "older_than_days: expected a whole number of days"},
        {"{\"attr\": \"t\", \"not_in\": []}", CP_EINVAL, "not_in: expected a non-empty array"},
        {"{\"has\": \"and\"}", CP_EINVAL, "has: expected an attribute name"},
        {"{\"has\": 1}", CP_EINVAL, "has: expected an attribute name"},
        {"{\"has\": \"a\", \"attr\": \"b\"}", CP_EINVAL, "cannot be combined"},
        {"{\"did\": {\"event\": \"x\", \"measure\": \"days\"}}", CP_EINVAL,
         "did.measure: \"days\" needs \"op\" and \"count\""},
        {"{\"did\": {\"event\": \"x\", \"measure\": \"avg\"}}", CP_EINVAL,
         "did.measure: expected \"count\", \"days\" or \"sum\""},
        {"{\"did\": {\"event\": \"x\", \"measure\": \"sum\", \"property\": \"a\", \"op\": \">\", "
         "\"value\": \"5\"}}",
         CP_EINVAL, "did.value: expected a number"},
        {"{\"did\": {\"event\": \"x\", \"measure\": \"sum\", \"property\": \"a\", \"op\": \">\", "
         "\"count\": 5}}",
         CP_EINVAL, "not \"count\""},
        {"{\"did\": {\"event\": \"x\", \"property\": \"a\"}}", CP_EINVAL,
         "go with \"measure\": \"sum\""},
        {"{\"attr\": \"age\", \"between\": [1, 2, 3]}", CP_EINVAL,
         "between: expected an array of 2"},
        {"{\"attr\": \"age\", \"between\": [1, {}]}", CP_EINVAL, "between[1]: expected a number"},
        {"{\"attr\": \"x\", \"in\": []}", CP_EINVAL, "in: expected a non-empty array"},
        {"{\"attr\": \"x\", \"in\": [1, [2]]}", CP_EINVAL,
         "in[1]: expected a number, string or boolean, found an array"},
        {"{\"near\": {\"lat\": 91, \"lon\": 0, \"radius\": 1, \"unit\": \"km\"}}", CP_EINVAL,
         "near.lat: 91 out of range [-90, 90]"},
        {"{\"near\": {\"lat\": 1, \"lon\": -180.5, \"radius\": 1, \"unit\": \"km\"}}", CP_EINVAL,
         "near.lon: -180.5 out of range"},
        {"{\"near\": {\"lat\": 1, \"lon\": 0, \"radius\": 0, \"unit\": \"km\"}}", CP_EINVAL,
         "near.radius: 0 must be a finite number greater than 0"},
        {"{\"near\": {\"lat\": 1, \"lon\": 0, \"radius\": 1, \"unit\": \"mi\"}}", CP_EINVAL,
         "near.unit: expected \"m\" or \"km\""},
        {"{\"near\": {\"lat\": 1, \"lon\": 0, \"radius\": 1}}", CP_EINVAL, "near.unit"},
        {"{\"near\": {\"lat\": 1, \"radius\": 1, \"unit\": \"m\"}}", CP_EINVAL,
         "near.lon: missing"},
        {"{\"near\": {\"lat\": \"1\", \"lon\": 0, \"radius\": 1, \"unit\": \"m\"}}", CP_EINVAL,
         "near.lat: expected a number, found a string"},
        {"{\"near\": {\"lat\": 1, \"lon\": 0, \"radius\": 1, \"unit\": \"m\", \"x\": 0}}",
         CP_EINVAL, "near: unknown key 'x'"},
        {"{\"near\": {\"attr\": \"not\", \"lat\": 1, \"lon\": 0, \"radius\": 1, \"unit\": \"m\"}}",
         CP_EINVAL, "near.attr: 'not' is not a valid attribute name"},
        {"{\"near\": [1, 2, 3]}", CP_EINVAL, "near: expected an object"},
        {"{\"did\": \"x\"}", CP_EINVAL, "did: expected an object"},
        {"{\"did\": {}}", CP_EINVAL, "did.event: expected an event name, found nothing"},
        {"{\"did\": {\"event\": \"\"}}", CP_EINVAL, "did.event: expected an event name, found an"},
        {"{\"did\": {\"event\": \"x\", \"y\": 1}}", CP_EINVAL, "did: unknown key 'y'"},
        {"{\"did\": {\"event\": \"x\", \"where\": []}}", CP_EINVAL,
         "did.where: expected an object"},
        {"{\"did\": {\"event\": \"x\", \"where\": {\"a b\": 1}}}", CP_EINVAL,
         "did.where: 'a b' is not a valid property name"},
        {"{\"did\": {\"event\": \"x\", \"where\": {\"a\": 1.5}}}", CP_EINVAL,
         "did.where.a: expected a string, integer or boolean"},
        {"{\"did\": {\"event\": \"x\", \"where\": {\"a\": null}}}", CP_EINVAL,
         "did.where.a: expected a number, string or boolean"},
        {"{\"did\": {\"event\": \"x\", \"last_days\": 0}}", CP_EINVAL,
         "did.last_days: expected a whole number of days from 1 to 36600"},
        {"{\"did\": {\"event\": \"x\", \"last_days\": \"30d\"}}", CP_EINVAL, "did.last_days"},
        {"{\"did\": {\"event\": \"x\", \"last_days\": 3, \"between\": [\"2011-01-01\", "
         "\"2011-01-02\"]}}",
         CP_EINVAL, "use only one of \"last_days\" and \"between\""},
        {"{\"did\": {\"event\": \"x\", \"between\": [\"2011-01-01\"]}}", CP_EINVAL,
         "did.between: expected an array of 2 dates"},
        {"{\"did\": {\"event\": \"x\", \"between\": [\"2011-01-01\", \"2011-13-01\"]}}", CP_EINVAL,
         "did.between[1]: expected a date"},
        {"{\"did\": {\"event\": \"x\", \"between\": [\"2011-01-02\", \"2011-01-01\"]}}", CP_EINVAL,
         "did.between: the window starts after it ends"},
        {"{\"did\": {\"event\": \"x\", \"op\": \">=\"}}", CP_EINVAL,
         "\"op\" and \"count\" go together"},
        {"{\"did\": {\"event\": \"x\", \"op\": \"=>\", \"count\": 1}}", CP_EINVAL,
         "did.op: expected one of"},
        {"{\"did\": {\"event\": \"x\", \"op\": \">\", \"count\": -1}}", CP_EINVAL,
         "did.count: expected a whole number >= 0"},
        {"{\"did\": {\"event\": \"x\", \"op\": \">\", \"count\": 1.0}}", CP_EINVAL, "did.count"},
        {"{\"did\": {\"event\": \"x\"}, \"tag\": \"a\"}", CP_EINVAL,
         "keys 'tag' and 'did' cannot be combined"},
        {"{\"near\": {\"lat\": 1, \"lon\": 0, \"radius\": 1, \"unit\": \"m\"}, \"attr\": \"loc\"}",
         CP_EINVAL, "keys 'near' and 'attr' cannot be combined (put \"attr\" inside \"near\")"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++)
        check_json_err(cases[i].json, cases[i].code, cases[i].frag);

    expr_t *e;
    cp_error_t err;
    assert_int_equal(expr_from_json(NULL, &e, &err), CP_EINVAL);
    /* strings jansson did not check */
    json_t *j = json_pack("{s:o}", "tag", json_stringn_nocheck("a\xff", 2));
    assert_int_equal(expr_from_json(j, &e, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "tag: a tag path is not valid UTF-8"));
    json_decref(j);
    j = json_pack("{s:s,s:s,s:o}", "attr", "a", "op", "=", "value",
                  json_stringn_nocheck("\xed\xa0\x80", 3));
    assert_int_equal(expr_from_json(j, &e, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "value: invalid UTF-8 in string"));
    json_decref(j);
    assert_null(expr_to_json(NULL));
    assert_null(expr_to_text(NULL));
}

/* ------------------------------------------- random trees, round trips */

static uint64_t rng;

static uint64_t rnd(uint64_t n)
{
    return rand_next(&rng) % n;
}

/* A random string: ASCII letters, quotes, backslashes, control characters,
 * multi-byte UTF-8 and (when allow_nul) NUL. Never empty when !allow_empty. */
static json_t *rnd_string(int allow_nul, int allow_empty)
{
    static const char *const pieces[] = {"a",    "Z",  "0",  "_",  "-",    "/",    ".", " ",  "\"",
                                         "'",    "\\", "\n", "\t", "\x01", "\x7f", "é", "中", "😀",
                                         "兴趣", ",",  ")",  "(",  ":",    "AND",  "\0"};
    char buf[256];
    size_t len = 0;
    size_t n = rnd(8) + (allow_empty ? 0 : 1);
    for (size_t i = 0; i < n; i++) {
        size_t k = rnd(CP_ARRAY_LEN(pieces) - (allow_nul ? 0 : 1));
        size_t pl = k == CP_ARRAY_LEN(pieces) - 1 ? 1 : strlen(pieces[k]);
        memcpy(buf + len, pieces[k], pl);
        len += pl;
    }
    return json_stringn(buf, len);
}

/* Path-like or name-like strings usually, anything sometimes. */
static json_t *rnd_name(int path)
{
    static const char *const tags[] = {
        "interest/finance/consulting", "a", "a.b-c_d/9", "兴趣/金融", "x-1", "_", "9", "vip"};
    if (rnd(3) == 0)
        return rnd_string(0, 0);
    const char *s = tags[rnd(CP_ARRAY_LEN(tags))];
    if (!path && strchr(s, '/'))
        s = "segment_a";
    return json_string(s);
}

static const char *rnd_attr(void)
{
    static const char *const attrs[] = {"age",   "gender", "city",  "_x",     "a1",      "near",
                                        "did",   "tag",    "crowd", "within", "Score_2", "m",
                                        "km",    "is",     "null",  "has",    "starts",  "with",
                                        "older", "than",   "last",  "days",   "d"};
    return attrs[rnd(CP_ARRAY_LEN(attrs))];
}

static double rnd_real(void)
{
    switch (rnd(6)) {
    case 0:
        return (double)(int64_t)rnd(1000) - 500; /* integral reals: 25.0 */
    case 1:
        return rnd(2) ? -0.0 : 0.0;
    case 2:
        return (rand_double(&rng) - 0.5) * 1e6;
    case 3:
        return rnd(2) ? 1e300 : 5e-324;
    default: {
        double d;
        do {
            uint64_t bits = rand_next(&rng);
            memcpy(&d, &bits, sizeof d);
        } while (!isfinite(d));
        return d;
    }
    }
}

static json_t *rnd_value(void)
{
    switch (rnd(5)) {
    case 0: {
        static const int64_t edge[] = {0, 1, -1, INT64_MAX, INT64_MIN, 25, 40};
        return json_integer(rnd(2) ? edge[rnd(CP_ARRAY_LEN(edge))] : (int64_t)rand_next(&rng));
    }
    case 1:
        return json_real(rnd_real());
    case 2:
        return rnd_string(1, 1);
    case 3:
        return json_boolean(rnd(2));
    default:
        return json_integer((json_int_t)rnd(100));
    }
}

/* A random UTC day from 0001-01-01 to 9999-12-31, or near 2011 often. */
static int64_t rnd_day(void)
{
    if (rnd(2))
        return 14975 + (int64_t)rnd(700) - 200;
    return -719162 + (int64_t)rnd(719162 + 2932897);
}

static json_t *day_json(int64_t day)
{
    char t[40];
    time_format(day * 86400, t, sizeof t);
    return json_stringn(t, 10);
}

static json_t *rnd_did(void)
{
    static const char *const events[] = {"purchase", "Order Completed", "and", "did", "x_1",
                                         "last",     "between",         "页面"};
    static const char *const props[] = {"stock_code", "category", "last", "a1", "_", "did"};
    static const char *const ops[] = {"=", "!=", "<", "<=", ">", ">="};
    json_t *d = json_object();
    json_object_set_new(d, "event",
                        rnd(4) ? json_string(events[rnd(CP_ARRAY_LEN(events))]) : rnd_string(0, 0));
    size_t nf = rnd(4);
    if (nf > 0) { /* (an empty "where" is accepted too, but not canonical) */
        json_t *w = json_object();
        size_t start = rnd(CP_ARRAY_LEN(props));
        for (size_t i = 0; i < nf; i++) {
            json_t *v;
            switch (rnd(3)) {
            case 0: {
                static const int64_t edge[] = {0, -1, 7, INT64_MAX, INT64_MIN};
                v = json_integer(edge[rnd(CP_ARRAY_LEN(edge))]);
                break;
            }
            case 1:
                v = rnd_string(1, 1);
                break;
            default:
                v = json_boolean(rnd(2));
            }
            json_object_set_new(w, props[(start + i) % CP_ARRAY_LEN(props)], v);
        }
        json_object_set_new(d, "where", w);
    }
    switch (rnd(3)) {
    case 0:
        json_object_set_new(d, "last_days",
                            json_integer(rnd(3) ? 1 + (int64_t)rnd(120) : 1 + (int64_t)rnd(36600)));
        break;
    case 1: {
        int64_t a = rnd_day(), b = rnd(3) ? a + (int64_t)rnd(200) : a;
        if (b > 2932896)
            b = 2932896;
        json_object_set_new(d, "between", json_pack("[o,o]", day_json(a), day_json(b)));
        break;
    }
    default:
        break;
    }
    if (rnd(2)) {
        static const int64_t counts[] = {0, 1, 2, 3, 90, INT64_MAX};
        json_object_set_new(d, "op", json_string(ops[rnd(6)]));
        json_object_set_new(d, "count", json_integer(counts[rnd(CP_ARRAY_LEN(counts))]));
        if (rnd(3) == 0)
            json_object_set_new(d, "measure", json_string("days"));
    } else if (rnd(3) == 0) {
        json_object_set_new(d, "measure", json_string("sum"));
        json_object_set_new(d, "property", json_string(props[rnd(CP_ARRAY_LEN(props))]));
        json_object_set_new(d, "op", json_string(ops[rnd(6)]));
        json_object_set_new(
            d, "value", rnd(2) ? json_integer((json_int_t)rnd(1000) - 500) : json_real(rnd_real()));
    }
    return json_pack("{s:o}", "did", d);
}

/* group:ID and group.TRAIT = / != / IN leaves */
static json_t *rnd_group(void)
{
    switch (rnd(3)) {
    case 0:
        return json_pack("{s:o}", "group", rnd_name(1));
    case 1:
        return json_pack("{s:s,s:s,s:o}", "group_trait", rnd_attr(), "op",
                         rnd(2) ? "=" : "!=", "value", rnd_value());
    default: {
        json_t *a = json_array();
        size_t n = rnd(3) + 1;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, rnd_value());
        return json_pack("{s:s,s:o}", "group_trait", rnd_attr(), "in", a);
    }
    }
}

static json_t *rnd_leaf(void)
{
    static const char *const ops[] = {"=", "!=", "<", "<=", ">", ">="};
    if (rnd(10) == 0)
        return rnd_group();
    switch (rnd(14)) {
    case 7:
        return rnd_did();
    case 8: {
        json_t *a = json_array();
        size_t n = rnd(4) + 1;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, rnd_value());
        return json_pack("{s:s,s:o}", "attr", rnd_attr(), "not_in", a);
    }
    case 9:
        return json_pack("{s:s}", "has", rnd_attr());
    case 10:
        return json_pack("{s:s,s:b}", "attr", rnd_attr(), "is_null", 1);
    case 11:
        return json_pack("{s:s,s:o}", "attr", rnd_attr(), "starts_with", rnd_string(1, 1));
    case 12:
    case 13:
        return json_pack("{s:s,s:I}", "attr", rnd_attr(),
                         rnd(2) ? "within_last_days" : "older_than_days",
                         (json_int_t)(rnd(3) ? 1 + rnd(120) : 1 + rnd(36600)));
    case 0:
        return json_pack("{s:b}", "all", 1);
    case 1:
        return json_pack("{s:o}", "tag", rnd_name(1));
    case 2:
        return json_pack("{s:o}", "crowd", rnd_name(0));
    case 3:
        return json_pack("{s:s,s:s,s:o}", "attr", rnd_attr(), "op", ops[rnd(6)], "value",
                         rnd_value());
    case 4:
        return json_pack("{s:s,s:[o,o]}", "attr", rnd_attr(), "between", rnd_value(), rnd_value());
    case 5: {
        json_t *a = json_array();
        size_t n = rnd(4) + 1;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, rnd_value());
        return json_pack("{s:s,s:o}", "attr", rnd_attr(), "in", a);
    }
    default: {
        double lat = rnd(8) == 0 ? (rnd(2) ? 90.0 : -90.0) : (rand_double(&rng) - 0.5) * 180;
        double lon = rnd(8) == 0 ? (rnd(2) ? 180.0 : -180.0) : (rand_double(&rng) - 0.5) * 360;
        double radius = rnd(2) ? (double)(rnd(5000) + 1) : rand_double(&rng) * 100 + 1e-9;
        json_t *n = json_pack("{s:f,s:f,s:f,s:s}", "lat", lat, "lon", lon, "radius", radius, "unit",
                              rnd(2) ? "km" : "m");
        if (rnd(2))
            json_object_set_new(n, "attr", json_string(rnd_attr()));
        return json_pack("{s:o}", "near", n);
    }
    }
}

/* A random JSON tree of at most `depth` levels; and/or nest their own kind
 * on purpose so the decoder has to flatten. */
static json_t *rnd_tree(int depth)
{
    if (depth <= 1 || rnd(3) == 0)
        return rnd_leaf();
    switch (rnd(3)) {
    case 0:
        return json_pack("{s:o}", "not", rnd_tree(depth - 1));
    default: {
        json_t *a = json_array();
        size_t n = rnd(3) + 2;
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, rnd_tree(depth - 1));
        return json_pack("{s:o}", rnd(2) ? "and" : "or", a);
    }
    }
}

/*
 * An evaluator over the raw JSON (unflattened, as generated) and one over
 * the tree: a leaf's truth is a hash of its canonical JSON dump. Agreement
 * for several seeds checks that flattening and the printer's parentheses
 * keep the meaning, independently of expr_equal.
 */
static int leaf_truth(const json_t *leaf, uint64_t seed)
{
    char *d = json_dumps(leaf, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_non_null(d);
    int v = (int)(hash64(d, strlen(d), seed) & 1);
    free(d);
    return v;
}

static int eval_json(const json_t *j, uint64_t seed)
{
    const json_t *v;
    if ((v = json_object_get(j, "and")) != NULL) {
        int r = 1;
        for (size_t i = 0; i < json_array_size(v); i++)
            r &= eval_json(json_array_get(v, i), seed);
        return r;
    }
    if ((v = json_object_get(j, "or")) != NULL) {
        int r = 0;
        for (size_t i = 0; i < json_array_size(v); i++)
            r |= eval_json(json_array_get(v, i), seed);
        return r;
    }
    if ((v = json_object_get(j, "not")) != NULL)
        return !eval_json(v, seed);
    return leaf_truth(j, seed);
}

static int eval_tree(const expr_node_t *n, uint64_t seed)
{
    int r;
    switch (n->kind) {
    case EXPR_AND:
        r = 1;
        for (size_t i = 0; i < n->nargs; i++)
            r &= eval_tree(n->args[i], seed);
        return r;
    case EXPR_OR:
        r = 0;
        for (size_t i = 0; i < n->nargs; i++)
            r |= eval_tree(n->args[i], seed);
        return r;
    case EXPR_NOT:
        return !eval_tree(n->args[0], seed);
    default: {
        json_t *j = expr_to_json(n);
        r = leaf_truth(j, seed);
        json_decref(j);
        return r;
    }
    }
}

/* No AND directly under AND, no OR under OR, >= 2 operands. */
static void check_flat(const expr_node_t *n)
{
    if (n->kind == EXPR_AND || n->kind == EXPR_OR) {
        assert_true(n->nargs >= 2);
        for (size_t i = 0; i < n->nargs; i++) {
            assert_int_not_equal(n->args[i]->kind, n->kind);
            check_flat(n->args[i]);
        }
    } else if (n->kind == EXPR_NOT) {
        assert_int_equal(n->nargs, 1);
        check_flat(n->args[0]);
    }
}

static void round_trip(const json_t *j)
{
    expr_t *t = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL;
    cp_error_t err;
    if (expr_from_json(j, &t, &err) != CP_OK) {
        char *d = json_dumps(j, JSON_COMPACT);
        print_error("from_json <%s>: %s\n", d, err.message);
        free(d);
        fail();
    }
    check_flat(expr_root(t));
    for (uint64_t seed = 1; seed <= 4; seed++)
        assert_int_equal(eval_json(j, seed), eval_tree(expr_root(t), seed));

    /* text: parse(print(t)) == t and print is a fixed point */
    char *text = expr_to_text(expr_root(t));
    assert_non_null(text);
    if (expr_parse(text, strlen(text), &t2, &err) != CP_OK) {
        print_error("re-parse of <%s>: %s\n", text, err.message);
        fail();
    }
    if (!expr_equal(expr_root(t), expr_root(t2))) {
        print_error("text round trip changed the tree: <%s>\n", text);
        fail();
    }
    char *text2 = expr_to_text(expr_root(t2));
    assert_string_equal(text, text2);

    /* JSON: from_json(to_json(t)) == t, also through serialised text */
    json_t *j2 = expr_to_json(expr_root(t));
    assert_non_null(j2);
    assert_int_equal(expr_from_json(j2, &t3, &err), CP_OK);
    assert_true(expr_equal(expr_root(t), expr_root(t3)));
    char *dump = json_dumps(j2, JSON_COMPACT);
    json_t *j3 = json_loads(dump, JSON_ALLOW_NUL, NULL);
    assert_non_null(j3);
    assert_int_equal(expr_from_json(j3, &t4, &err), CP_OK);
    assert_true(expr_equal(expr_root(t), expr_root(t4)));
    assert_true(expr_equal(expr_root(t2), expr_root(t4)));

    json_decref(j3);
    free(dump);
    json_decref(j2);
    free(text2);
    free(text);
    expr_free(t4);
    expr_free(t3);
    expr_free(t2);
    expr_free(t);
}

/*
 * A second, deliberately untidy printer: random keyword case, random
 * blanks and newlines, redundant parentheses, operator aliases, single
 * quotes, \u escapes (with surrogate pairs) for arbitrary characters,
 * %.17g reals. Whatever it writes must parse to the same tree.
 */
static void put(buf_t *b, const char *s)
{
    assert_int_equal(buf_append(b, s, strlen(s)), CP_OK);
}

static void noisy_ws(buf_t *b, int needed)
{
    static const char *const ws[] = {" ", "  ", "\n", "\t", " \r\n  "};
    if (needed || rnd(2))
        put(b, ws[rnd(CP_ARRAY_LEN(ws))]);
}

static void noisy_kw(buf_t *b, const char *kw)
{
    for (; *kw; kw++) {
        char c = *kw;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            c = rnd(2) ? (char)(c & ~0x20) : (char)(c | 0x20);
        assert_int_equal(buf_append(b, &c, 1), CP_OK);
    }
}

static void put_u(buf_t *b, uint32_t u)
{
    assert_int_equal(buf_printf(b, rnd(2) ? "\\u%04x" : "\\u%04X", (unsigned)u), CP_OK);
}

static void noisy_string(buf_t *b, const char *s, size_t n)
{
    char q = rnd(2) ? '"' : '\'';
    assert_int_equal(buf_append(b, &q, 1), CP_OK);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
        uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1Fu : k == 3 ? c & 0x0Fu : c & 0x07u;
        for (size_t m = 1; m < k; m++)
            cp = (cp << 6) | ((unsigned char)s[i + m] & 0x3Fu);
        if (c == (unsigned char)q || c == '\\' || ((c == '"' || c == '\'') && rnd(2))) {
            char esc[2] = {'\\', (char)c};
            assert_int_equal(buf_append(b, esc, 2), CP_OK);
        } else if (cp < 0x20 || rnd(4) == 0) {
            if (cp > 0xFFFF) {
                put_u(b, 0xD800 + ((cp - 0x10000) >> 10));
                put_u(b, 0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else {
                put_u(b, cp);
            }
        } else {
            assert_int_equal(buf_append(b, s + i, k), CP_OK);
        }
        i += k;
    }
    assert_int_equal(buf_append(b, &q, 1), CP_OK);
}

static void noisy_real(buf_t *b, double v, int force_real)
{
    char num[64];
    snprintf(num, sizeof num, "%.17g", v);
    if (force_real && strpbrk(num, ".e") == NULL)
        strcat(num, rnd(2) ? ".0" : "e0");
    put(b, num);
}

static void noisy_value(buf_t *b, const expr_value_t *v)
{
    switch (v->kind) {
    case VAL_INT:
        assert_int_equal(buf_printf(b, "%lld", (long long)v->i), CP_OK);
        break;
    case VAL_REAL:
        noisy_real(b, v->r, 1);
        break;
    case VAL_STRING:
        noisy_string(b, v->s, v->slen);
        break;
    case VAL_BOOL:
        noisy_kw(b, v->i ? "true" : "false");
        break;
    }
}

static int bare_ok(const char *s, int path)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || (path && (c == '.' || c == '/' || c >= 0x80));
        if (!ok)
            return 0;
    }
    return 1;
}

/* An identifier that is not a keyword (printable bare as a did() event). */
static int is_ident(const char *s, size_t len)
{
    static const char *const kws[] = {"and", "or", "not", "between", "in", "all", "true", "false"};
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    for (size_t i = 0; i < CP_ARRAY_LEN(kws); i++)
        if (strlen(kws[i]) == len && strncasecmp(kws[i], s, len) == 0)
            return 0;
    return 1;
}

static void noisy_node(buf_t *b, const expr_node_t *n, int need_paren)
{
    static const char *const ops[][2] = {{"", ""},     {"=", "=="}, {"!=", "<>"}, {"<", "<"},
                                         {"<=", "<="}, {">", ">"},  {">=", ">="}};
    int paren = need_paren || rnd(5) == 0;
    if (paren) {
        put(b, "(");
        noisy_ws(b, 0);
    }
    switch (n->kind) {
    case EXPR_ALL:
        noisy_kw(b, "all");
        break;
    case EXPR_AND:
    case EXPR_OR:
        for (size_t i = 0; i < n->nargs; i++) {
            if (i > 0) {
                noisy_ws(b, 1);
                noisy_kw(b, n->kind == EXPR_AND ? "and" : "or");
                noisy_ws(b, 1);
            }
            noisy_node(b, n->args[i], n->kind == EXPR_AND && n->args[i]->kind == EXPR_OR);
        }
        break;
    case EXPR_NOT:
        noisy_kw(b, "not");
        noisy_ws(b, 1);
        noisy_node(b, n->args[0], n->args[0]->kind == EXPR_AND || n->args[0]->kind == EXPR_OR);
        break;
    case EXPR_TAG:
    case EXPR_CROWD:
        noisy_kw(b, n->kind == EXPR_TAG ? "tag:" : "crowd:");
        if (bare_ok(n->name, n->kind == EXPR_TAG) && rnd(3))
            put(b, n->name);
        else
            noisy_string(b, n->name, strlen(n->name));
        break;
    case EXPR_CMP:
        put(b, n->name);
        noisy_ws(b, 0);
        put(b, ops[n->op][rnd(2)]);
        noisy_ws(b, 0);
        noisy_value(b, &n->values[0]);
        break;
    case EXPR_BETWEEN:
        put(b, n->name);
        noisy_ws(b, 1);
        noisy_kw(b, "between");
        noisy_ws(b, 1);
        noisy_value(b, &n->values[0]);
        noisy_ws(b, 1);
        noisy_kw(b, "and");
        noisy_ws(b, 1);
        noisy_value(b, &n->values[1]);
        break;
    case EXPR_HAS:
        if (rnd(2)) {
            noisy_kw(b, "has");
            noisy_ws(b, 0);
            put(b, "(");
            noisy_ws(b, 0);
            put(b, n->name);
            noisy_ws(b, 0);
            put(b, ")");
            break;
        }
        /* fall through */
    case EXPR_NULL:
        put(b, n->name);
        noisy_ws(b, 1);
        noisy_kw(b, "is");
        noisy_ws(b, 1);
        if (n->kind == EXPR_HAS) {
            noisy_kw(b, "not");
            noisy_ws(b, 1);
        }
        noisy_kw(b, "null");
        break;
    case EXPR_PREFIX:
        put(b, n->name);
        noisy_ws(b, 1);
        noisy_kw(b, "starts");
        noisy_ws(b, 1);
        noisy_kw(b, "with");
        noisy_ws(b, 0);
        noisy_value(b, &n->values[0]);
        break;
    case EXPR_WITHIN:
    case EXPR_OLDER: {
        int weeks = n->rel_days % 7 == 0 && rnd(2);
        put(b, n->name);
        noisy_ws(b, 1);
        noisy_kw(b, n->kind == EXPR_WITHIN ? "within" : "older");
        noisy_ws(b, 1);
        noisy_kw(b, n->kind == EXPR_WITHIN ? "last" : "than");
        noisy_ws(b, 1);
        assert_int_equal(buf_printf(b, "%d", (int)(weeks ? n->rel_days / 7 : n->rel_days)), CP_OK);
        if (rnd(3) == 0)
            noisy_ws(b, 1);
        noisy_kw(b, weeks ? "w" : "d");
        break;
    }
    case EXPR_IN:
    case EXPR_NOT_IN:
        put(b, n->name);
        noisy_ws(b, 1);
        if (n->kind == EXPR_NOT_IN) {
            noisy_kw(b, "not");
            noisy_ws(b, 1);
        }
        noisy_kw(b, "in");
        noisy_ws(b, 0);
        put(b, "(");
        for (size_t i = 0; i < n->nvalues; i++) {
            if (i > 0)
                put(b, ",");
            noisy_ws(b, 0);
            noisy_value(b, &n->values[i]);
            noisy_ws(b, 0);
        }
        put(b, ")");
        break;
    case EXPR_NEAR:
        noisy_kw(b, "near");
        noisy_ws(b, 0);
        put(b, "(");
        if (n->name) {
            put(b, n->name);
            put(b, ",");
            noisy_ws(b, 0);
        }
        noisy_real(b, n->near.lat, 0);
        put(b, ",");
        noisy_ws(b, 0);
        noisy_real(b, n->near.lon, 0);
        put(b, ",");
        noisy_ws(b, 0);
        noisy_real(b, n->near.radius, 0);
        noisy_ws(b, 0);
        noisy_kw(b, n->near.unit == UNIT_KM ? "km" : "m");
        put(b, ")");
        break;
    case EXPR_GROUP:
        noisy_kw(b, "group:");
        if (bare_ok(n->name, 1) && rnd(3))
            put(b, n->name);
        else
            noisy_string(b, n->name, strlen(n->name));
        break;
    case EXPR_GROUP_CMP:
    case EXPR_GROUP_IN:
        noisy_kw(b, "group.");
        put(b, n->name);
        noisy_ws(b, n->kind == EXPR_GROUP_IN);
        if (n->kind == EXPR_GROUP_CMP) {
            put(b, ops[n->op][rnd(2)]);
            noisy_ws(b, 0);
            noisy_value(b, &n->values[0]);
            break;
        }
        noisy_kw(b, "in");
        noisy_ws(b, 0);
        put(b, "(");
        for (size_t i = 0; i < n->nvalues; i++) {
            if (i > 0)
                put(b, ",");
            noisy_ws(b, 0);
            noisy_value(b, &n->values[i]);
        }
        put(b, ")");
        break;
    case EXPR_DID: {
        size_t elen = strlen(n->name);
        noisy_kw(b, "did");
        noisy_ws(b, 0);
        put(b, "(");
        noisy_ws(b, 0);
        if (is_ident(n->name, elen) && rnd(3))
            put(b, n->name);
        else
            noisy_string(b, n->name, elen);
        for (size_t i = 0; i < n->nvalues; i++) {
            noisy_ws(b, 0);
            put(b, ",");
            noisy_ws(b, 0);
            put(b, n->did.props[i]);
            noisy_ws(b, 0);
            put(b, rnd(2) ? "=" : "==");
            noisy_ws(b, 0);
            noisy_value(b, &n->values[i]);
        }
        if (n->did.window != DID_ALL_TIME) {
            noisy_ws(b, 0);
            put(b, ",");
            noisy_ws(b, 0);
        }
        if (n->did.window == DID_LAST) {
            noisy_kw(b, "last");
            noisy_ws(b, 1);
            int weeks = n->did.last_days % 7 == 0 && rnd(2);
            assert_int_equal(
                buf_printf(b, "%d", (int)(weeks ? n->did.last_days / 7 : n->did.last_days)), CP_OK);
            if (rnd(3) == 0)
                noisy_ws(b, 1);
            noisy_kw(b, weeks ? "w" : "d");
        } else if (n->did.window == DID_BETWEEN) {
            char t[40];
            noisy_kw(b, "between");
            noisy_ws(b, 1);
            for (int k = 0; k < 2; k++) {
                if (k) {
                    noisy_ws(b, 1);
                    noisy_kw(b, "and");
                    noisy_ws(b, 1);
                }
                time_format((int64_t)(k ? n->did.to : n->did.from) * 86400, t, sizeof t);
                if (rnd(2))
                    noisy_string(b, t, 10);
                else
                    assert_int_equal(buf_append(b, t, 10), CP_OK);
            }
        }
        noisy_ws(b, 0);
        put(b, ")");
        if (n->op != 0 && n->did.measure == DID_MEASURE_SUM) {
            noisy_ws(b, 0);
            noisy_kw(b, "sum");
            noisy_ws(b, 0);
            put(b, "(");
            noisy_ws(b, 0);
            put(b, n->did.sum_prop);
            noisy_ws(b, 0);
            put(b, ")");
            noisy_ws(b, 0);
            put(b, ops[n->op][rnd(2)]);
            noisy_ws(b, 0);
            noisy_value(b, &n->did.sum_value);
        } else if (n->op != 0) {
            noisy_ws(b, 0);
            if (n->did.measure == DID_MEASURE_DAYS) {
                noisy_kw(b, "days");
                noisy_ws(b, 0);
            }
            put(b, ops[n->op][rnd(2)]);
            noisy_ws(b, 0);
            assert_int_equal(buf_printf(b, "%lld", (long long)n->did.count), CP_OK);
        }
        break;
    }
    }
    if (paren) {
        noisy_ws(b, 0);
        put(b, ")");
    }
}

static void noisy_round_trip(const json_t *j)
{
    expr_t *t = NULL, *t2 = NULL;
    cp_error_t err;
    assert_int_equal(expr_from_json(j, &t, &err), CP_OK);
    buf_t b;
    buf_init(&b, 0);
    noisy_ws(&b, 0);
    noisy_node(&b, expr_root(t), 0);
    noisy_ws(&b, 0);
    const char *text = buf_cstr(&b);
    if (expr_parse(text, b.len, &t2, &err) != CP_OK) {
        print_error("noisy text <%s>: %s\n", text, err.message);
        fail();
    }
    if (!expr_equal(expr_root(t), expr_root(t2))) {
        char *want = expr_to_text(expr_root(t)), *got = expr_to_text(expr_root(t2));
        print_error("noisy text <%s>\n  want <%s>\n  got  <%s>\n", text, want, got);
        fail();
    }
    buf_free(&b);
    expr_free(t2);
    expr_free(t);
}

static void test_round_trips(void **state)
{
    (void)state;
    rng = 0x5eed;
    for (int i = 0; i < 600; i++) {
        json_t *j = rnd_tree(1 + (int)rnd(7));
        assert_non_null(j);
        round_trip(j);
        for (int k = 0; k < 3; k++)
            noisy_round_trip(j);
        json_decref(j);
    }
    /* a few deep ones near the limit */
    for (int i = 0; i < 20; i++) {
        json_t *j = rnd_leaf();
        for (int d = 1; d < CP_EXPR_MAX_DEPTH; d++)
            j = rnd(2) ? json_pack("{s:o}", "not", j)
                       : json_pack("{s:[o,o]}", d % 2 ? "and" : "or", j, rnd_leaf());
        round_trip(j);
        json_decref(j);
    }
}

/* expr_equal tells trees apart on every field */
static void test_equal(void **state)
{
    (void)state;
    static const char *const distinct[] = {
        "a = 1",
        "a = 1.0",
        "a = \"1\"",
        "a = TRUE",
        "a = -0.0",
        "a = 0.0",
        "a != 1",
        "b = 1",
        "a IN (1)",
        "a IN (1, 2)",
        "a BETWEEN 1 AND 2",
        "tag:a",
        "crowd:a",
        "tag:a AND tag:b",
        "tag:a OR tag:b",
        "NOT tag:a",
        "ALL",
        "near(1, 2, 3km)",
        "near(1, 2, 3m)",
        "near(x, 1, 2, 3km)",
        "near(1, 2, 4km)",
        "a = \"1\\u0000\"",
        "tag:b AND tag:a",
        "did(a)",
        "did(b)",
        "did(a) days >= 1",
        "did(a) sum(x) >= 1",
        "did(a) sum(x) >= 1.0",
        "did(a) sum(y) >= 1",
        "did(a) sum(x) > 1",
        "has(a)",
        "has(b)",
        "a IS NULL",
        "a NOT IN (1)",
        "a NOT IN (1, 2)",
        "a STARTS WITH \"1\"",
        "a STARTS WITH \"\"",
        "a WITHIN LAST 1d",
        "a WITHIN LAST 2d",
        "a OLDER THAN 1d",
        "b OLDER THAN 1d",
        "did(a) >= 1",
        "did(a) > 1",
        "did(a) >= 2",
        "did(a, last 1d)",
        "did(a, last 2d)",
        "did(a, BETWEEN 2011-01-01 AND 2011-01-01)",
        "did(a, BETWEEN 2011-01-01 AND 2011-01-02)",
        "did(a, BETWEEN 2010-01-01 AND 2011-01-01)",
        "did(a, x = 1)",
        "did(a, x = \"1\")",
        "did(a, y = 1)",
        "did(a, x = 1, y = 1)",
        "did(a, y = 1, x = 1)",
        "did(a, x = TRUE)",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(distinct); i++) {
        expr_t *a = parse_ok(distinct[i]);
        for (size_t k = 0; k < CP_ARRAY_LEN(distinct); k++) {
            expr_t *b = parse_ok(distinct[k]);
            if (expr_equal(expr_root(a), expr_root(b)) != (i == k)) {
                print_error("expr_equal(<%s>, <%s>) wrong\n", distinct[i], distinct[k]);
                fail();
            }
            expr_free(b);
        }
        expr_free(a);
    }
    assert_true(expr_equal(NULL, NULL));
    expr_free(NULL);
    assert_null(expr_root(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_precedence_and_flattening),
        cmocka_unit_test(test_values_and_positions),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
