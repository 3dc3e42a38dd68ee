/*
 * ast_json.c — the JSON form of the expression tree (docs/expressions.md).
 *
 * One object per node whose key names its kind:
 *   {"all": true}  {"and": [n, n, ...]}  {"or": [...]}  {"not": n}
 *   {"tag": "path"}  {"crowd": "name"}
 *   {"attr": "age", "op": ">=", "value": 25}
 *   {"attr": "age", "between": [25, 40]}
 *   {"attr": "gender", "in": ["female", "male"]}
 *   {"near": {"lat": 23.02, "lon": 113.12, "radius": 10, "unit": "km", "attr": "loc"}}
 *   {"group": "acme"}
 *   {"group_trait": "plan", "op": "=" | "!=", "value": "enterprise"}
 *   {"group_trait": "plan", "in": ["enterprise", "pro"]}
 *   {"did": {"event": "purchase", "where": {"stock_code": "85123A"},
 *            "last_days": 90 | "between": ["2011-01-01", "2011-06-30"],
 *            "op": ">=", "count": 3, "measure": "days"}}
 *                                  (where, window, op + count and measure optional)
 *   {"has": "age"}  {"attr": "age", "is_null": true}
 *   {"attr": "city", "not_in": ["x", "y"]}  {"attr": "city", "starts_with": "shen"}
 *   {"attr": "last_seen", "within_last_days": 30}
 *   {"attr": "last_seen", "older_than_days": 90}
 *
 * The decoder is strict (unknown keys, wrong types and missing keys are
 * errors naming the JSON path) and builds exactly the tree the text parser
 * builds: AND inside AND and OR inside OR are flattened, the same names are
 * accepted (an attribute must be an identifier that is not a keyword) and the
 * same depth limit applies, so every decoded tree prints to text that parses
 * back to it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/expr_int.h"

/* ------------------------------------------------------------- encoding */

static json_t *value_to_json(const expr_value_t *v)
{
    switch (v->kind) {
    case VAL_INT:
        return json_integer((json_int_t)v->i);
    case VAL_REAL:
        return json_real(v->r);
    case VAL_STRING:
        return json_stringn(v->s ? v->s : "", v->slen);
    case VAL_BOOL:
        return json_boolean(v->i);
    }
    return NULL;
}

static json_t *values_to_json(const expr_node_t *n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n->nvalues; i++)
        if (json_array_append_new(a, value_to_json(&n->values[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* Sets o[k] = v (stolen); on failure frees o and returns NULL. */
static json_t *with(json_t *o, const char *k, json_t *v)
{
    if (o == NULL) {
        json_decref(v);
        return NULL;
    }
    if (v == NULL || json_object_set_new(o, k, v) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *expr_to_json(const expr_node_t *n)
{
    if (n == NULL)
        return NULL;
    switch (n->kind) {
    case EXPR_ALL:
        return with(json_object(), "all", json_true());
    case EXPR_AND:
    case EXPR_OR: {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n->nargs; i++)
            if (json_array_append_new(a, expr_to_json(n->args[i])) != 0) {
                json_decref(a);
                a = NULL;
            }
        return with(json_object(), n->kind == EXPR_AND ? "and" : "or", a);
    }
    case EXPR_NOT:
        return with(json_object(), "not", n->nargs == 1 ? expr_to_json(n->args[0]) : NULL);
    case EXPR_TAG:
        return with(json_object(), "tag", json_string(n->name));
    case EXPR_CROWD:
        return with(json_object(), "crowd", json_string(n->name));
    case EXPR_CMP: {
        json_t *o = with(json_object(), "attr", json_string(n->name));
        o = with(o, "op", json_string(expr__op_text(n->op)));
        return with(o, "value", n->nvalues == 1 ? value_to_json(&n->values[0]) : NULL);
    }
    case EXPR_BETWEEN:
    case EXPR_IN:
    case EXPR_NOT_IN: {
        json_t *o = with(json_object(), "attr", json_string(n->name));
        return with(o,
                    n->kind == EXPR_IN       ? "in"
                    : n->kind == EXPR_NOT_IN ? "not_in"
                                             : "between",
                    values_to_json(n));
    }
    case EXPR_HAS:
        return with(json_object(), "has", json_string(n->name));
    case EXPR_NULL:
        return with(with(json_object(), "attr", json_string(n->name)), "is_null", json_true());
    case EXPR_PREFIX:
        return with(with(json_object(), "attr", json_string(n->name)), "starts_with",
                    n->nvalues == 1 ? value_to_json(&n->values[0]) : NULL);
    case EXPR_WITHIN:
    case EXPR_OLDER:
        return with(with(json_object(), "attr", json_string(n->name)),
                    n->kind == EXPR_WITHIN ? "within_last_days" : "older_than_days",
                    json_integer(n->rel_days));
    case EXPR_NEAR: {
        json_t *in = json_object();
        if (n->name)
            in = with(in, "attr", json_string(n->name));
        in = with(in, "lat", json_real(n->near.lat));
        in = with(in, "lon", json_real(n->near.lon));
        in = with(in, "radius", json_real(n->near.radius));
        in = with(in, "unit", json_string(n->near.unit == UNIT_KM ? "km" : "m"));
        return with(json_object(), "near", in);
    }
    case EXPR_DID: {
        json_t *in = with(json_object(), "event", json_string(n->name));
        if (n->nvalues > 0) {
            json_t *w = json_object();
            for (size_t i = 0; w && i < n->nvalues; i++)
                w = with(w, n->did.props[i], value_to_json(&n->values[i]));
            in = with(in, "where", w);
        }
        if (n->did.window == DID_LAST) {
            in = with(in, "last_days", json_integer(n->did.last_days));
        } else if (n->did.window == DID_BETWEEN) {
            char a[40], b[40];
            time_format((int64_t)n->did.from * 86400, a, sizeof a);
            time_format((int64_t)n->did.to * 86400, b, sizeof b);
            in = with(in, "between", json_pack("[s#,s#]", a, (int)10, b, (int)10));
        }
        if (n->op != 0 && n->did.measure == DID_MEASURE_SUM) {
            in = with(in, "measure", json_string("sum"));
            in = with(in, "property", json_string(n->did.sum_prop));
            in = with(in, "op", json_string(expr__op_text(n->op)));
            in = with(in, "value", value_to_json(&n->did.sum_value));
        } else if (n->op != 0) {
            in = with(in, "op", json_string(expr__op_text(n->op)));
            in = with(in, "count", json_integer((json_int_t)n->did.count));
        }
        if (n->did.measure == DID_MEASURE_DAYS)
            in = with(in, "measure", json_string("days"));
        return with(json_object(), "did", in);
    }
    case EXPR_GROUP:
        return with(json_object(), "group", json_string(n->name));
    case EXPR_GROUP_CMP: {
        json_t *o = with(json_object(), "group_trait", json_string(n->name));
        o = with(o, "op", json_string(expr__op_text(n->op)));
        return with(o, "value", n->nvalues == 1 ? value_to_json(&n->values[0]) : NULL);
    }
    case EXPR_GROUP_IN: {
        json_t *o = with(json_object(), "group_trait", json_string(n->name));
        return with(o, "in", values_to_json(n));
    }
    }
    return NULL;
}

/* ------------------------------------------------------------- decoding */

typedef struct jctx {
    expr_t *e;
    cp_error_t *err;
    char path[1536]; /* "and[1].not.between" — the JSON path of the value at hand */
    size_t plen;
} jctx_t;

static cp_status jerr(jctx_t *c, cp_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cp_status jerr(jctx_t *c, cp_status code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->plen == 0)
        return CP_ERR(c->err, code, "%s", msg);
    return CP_ERR(c->err, code, "%s: %s", c->path, msg);
}

static cp_status jnomem(jctx_t *c)
{
    return CP_ERR(c->err, CP_ENOMEM, "out of memory");
}

/* Path pushes return the old length to restore. The buffer holds 64 levels
 * of the longest step comfortably; past it the path is cut, not overrun. */
static size_t push_key(jctx_t *c, const char *key)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "%s%s", c->plen ? "." : "", key);
    if (n > 0)
        c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : sizeof c->path - c->plen - 1;
    return old;
}

static size_t push_index(jctx_t *c, size_t i)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "[%zu]", i);
    if (n > 0)
        c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : sizeof c->path - c->plen - 1;
    return old;
}

static void pop(jctx_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static cp_status jvalue(jctx_t *c, const json_t *j, expr_value_t *v)
{
    memset(v, 0, sizeof *v);
    switch (json_typeof(j)) {
    case JSON_INTEGER:
        v->kind = VAL_INT;
        v->i = (int64_t)json_integer_value(j);
        return CP_OK;
    case JSON_REAL:
        v->kind = VAL_REAL;
        v->r = json_real_value(j);
        if (!isfinite(v->r))
            return jerr(c, CP_EINVAL, "number out of range");
        return CP_OK;
    case JSON_STRING:
        v->kind = VAL_STRING;
        v->slen = json_string_length(j);
        /* jansson validates what it parses, not what json_stringn_nocheck built */
        if (!utf8_valid(json_string_value(j), v->slen))
            return jerr(c, CP_EINVAL, "invalid UTF-8 in string");
        v->s = arena_strndup(&c->e->arena, json_string_value(j), v->slen);
        return v->s ? CP_OK : jnomem(c);
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind = VAL_BOOL;
        v->i = json_is_true(j);
        return CP_OK;
    default:
        return jerr(c, CP_EINVAL, "expected a number, string or boolean, found %s",
                    json_type_name(j));
    }
}

/* Values of j[key] (an array of min..max values) into n->values. */
static cp_status jvalues(jctx_t *c, const json_t *o, const char *key, size_t min, size_t max,
                         const char *expected, expr_node_t *n)
{
    cp_status st = CP_OK;
    const json_t *a = json_object_get(o, key);
    size_t old = push_key(c, key);
    size_t len = json_is_array(a) ? json_array_size(a) : 0;
    if (!json_is_array(a) || len < min || len > max) {
        st = jerr(c, CP_EINVAL, "expected %s", expected);
        goto out;
    }
    n->values = arena_alloc(&c->e->arena, len * sizeof *n->values);
    if (n->values == NULL) {
        st = jnomem(c);
        goto out;
    }
    n->nvalues = len;
    for (size_t i = 0; i < len && st == CP_OK; i++) {
        size_t o2 = push_index(c, i);
        st = jvalue(c, json_array_get(a, i), &n->values[i]);
        pop(c, o2);
    }
out:
    if (st == CP_OK)
        pop(c, old);
    return st;
}

/* A required string member; NULs (possible with JSON_ALLOW_NUL) refused. */
static cp_status jname(jctx_t *c, const json_t *o, const char *key, const char *what,
                       const char **out)
{
    const json_t *s = json_object_get(o, key);
    size_t old = push_key(c, key);
    if (!json_is_string(s))
        return jerr(c, CP_EINVAL, "expected %s, found %s", what, s ? json_type_name(s) : "nothing");
    size_t len = json_string_length(s);
    const char *v = json_string_value(s);
    if (len == 0)
        return jerr(c, CP_EINVAL, "expected %s, found an empty string", what);
    if (strlen(v) != len)
        return jerr(c, CP_EINVAL, "%s contains \\u0000", what);
    if (!utf8_valid(v, len))
        return jerr(c, CP_EINVAL, "%s is not valid UTF-8", what);
    if (strcmp(key, "attr") == 0 && !expr__is_ident(v, len))
        return jerr(c, CP_EINVAL,
                    "'%.64s' is not a valid attribute name (letters, digits and '_', not "
                    "starting with a digit, not a keyword)",
                    v);
    *out = arena_strndup(&c->e->arena, v, len);
    if (*out == NULL)
        return jnomem(c);
    pop(c, old);
    return CP_OK;
}

/* Every key of o must be in `allowed` (NULL-terminated). */
static cp_status jkeys(jctx_t *c, const json_t *o, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (allowed[i] == NULL)
            return jerr(c, CP_EINVAL, "unknown key '%.64s'", key);
    }
    return CP_OK;
}

static cp_status jnumber(jctx_t *c, const json_t *o, const char *key, double lim, double *out)
{
    const json_t *v = json_object_get(o, key);
    size_t old = push_key(c, key);
    if (v == NULL)
        return jerr(c, CP_EINVAL, "missing (expected a number)");
    if (!json_is_number(v))
        return jerr(c, CP_EINVAL, "expected a number, found %s", json_type_name(v));
    double d = json_number_value(v);
    if (lim > 0 && !(d >= -lim && d <= lim))
        return jerr(c, CP_EINVAL, "%g out of range [%g, %g]", d, -lim, lim);
    if (lim == 0 && !(d > 0 && isfinite(d)))
        return jerr(c, CP_EINVAL, "%g must be a finite number greater than 0", d);
    *out = d;
    pop(c, old);
    return CP_OK;
}

static cp_status jnear(jctx_t *c, const json_t *j, expr_node_t *n)
{
    static const char *const keys[] = {"lat", "lon", "radius", "unit", "attr", NULL};
    cp_status st;
    size_t old = push_key(c, "near");
    if (!json_is_object(j))
        return jerr(c, CP_EINVAL, "expected an object {\"lat\", \"lon\", \"radius\", \"unit\"}");
    if ((st = jkeys(c, j, keys)) != CP_OK)
        return st;
    if (json_object_get(j, "attr") && (st = jname(c, j, "attr", "an attribute name", &n->name)))
        return st;
    if ((st = jnumber(c, j, "lat", 90, &n->near.lat)) != CP_OK ||
        (st = jnumber(c, j, "lon", 180, &n->near.lon)) != CP_OK ||
        (st = jnumber(c, j, "radius", 0, &n->near.radius)) != CP_OK)
        return st;
    const json_t *u = json_object_get(j, "unit");
    const char *us = json_string_value(u);
    if (us != NULL && strcmp(us, "km") == 0 && json_string_length(u) == 2)
        n->near.unit = UNIT_KM;
    else if (us != NULL && strcmp(us, "m") == 0 && json_string_length(u) == 1)
        n->near.unit = UNIT_M;
    else {
        push_key(c, "unit");
        return jerr(c, CP_EINVAL, "expected \"m\" or \"km\"");
    }
    pop(c, old);
    return CP_OK;
}

/* j["op"] as an operator. */
static cp_status jop(jctx_t *c, const json_t *j, expr_op *out)
{
    static const struct {
        const char *s;
        expr_op op;
    } ops[] = {{"=", OP_EQ}, {"==", OP_EQ}, {"!=", OP_NE}, {"<>", OP_NE},
               {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT},  {">=", OP_GE}};
    const json_t *o = json_object_get(j, "op");
    const char *s = json_string_value(o);
    size_t old = push_key(c, "op");
    size_t i = 0;
    while (s && i < CP_ARRAY_LEN(ops) &&
           !(strcmp(ops[i].s, s) == 0 && strlen(s) == json_string_length(o)))
        i++;
    if (s == NULL || i == CP_ARRAY_LEN(ops))
        return jerr(c, CP_EINVAL, "expected one of \"=\", \"!=\", \"<\", \"<=\", \">\", \">=\"");
    pop(c, old);
    *out = ops[i].op;
    return CP_OK;
}

/* A "YYYY-MM-DD" string as days. */
static cp_status jday(jctx_t *c, const json_t *v, int32_t *day)
{
    if (!json_is_string(v) ||
        expr__parse_day(json_string_value(v), json_string_length(v), day) != 0)
        return jerr(c, CP_EINVAL, "expected a date \"YYYY-MM-DD\"");
    return CP_OK;
}

/* did with "measure": "sum": "property", "op" and "value" (a number). */
static cp_status jdid_sum(jctx_t *c, const json_t *j, expr_node_t *n, size_t old)
{
    cp_status st;
    if (json_object_get(j, "count"))
        return jerr(c, CP_EINVAL, "a sum is compared with \"value\", not \"count\"");
    const json_t *pr = json_object_get(j, "property"), *v = json_object_get(j, "value");
    size_t o2 = push_key(c, "property");
    if (!json_is_string(pr) || !expr__is_ident(json_string_value(pr), json_string_length(pr)) ||
        json_string_length(pr) > EXPR_DID_NAME_MAX)
        return jerr(c, CP_EINVAL, "expected a property name (letters, digits and '_')");
    pop(c, o2);
    if ((n->did.sum_prop =
             arena_strndup(&c->e->arena, json_string_value(pr), json_string_length(pr))) == NULL)
        return jnomem(c);
    if ((st = jop(c, j, &n->op)) != CP_OK)
        return st;
    o2 = push_key(c, "value");
    if (!json_is_number(v))
        return jerr(c, CP_EINVAL, "expected a number");
    if ((st = jvalue(c, v, &n->did.sum_value)) != CP_OK)
        return st;
    pop(c, o2);
    n->did.measure = DID_MEASURE_SUM;
    pop(c, old);
    return CP_OK;
}

static cp_status jdid(jctx_t *c, const json_t *j, expr_node_t *n)
{
    static const char *const keys[] = {"event", "where",   "last_days", "between", "op",
                                       "count", "measure", "property",  "value",   NULL};
    cp_status st;
    size_t old = push_key(c, "did");
    if (!json_is_object(j))
        return jerr(c, CP_EINVAL, "expected an object {\"event\", ...}");
    if ((st = jkeys(c, j, keys)) != CP_OK ||
        (st = jname(c, j, "event", "an event name", &n->name)) != CP_OK)
        return st;
    if (strlen(n->name) > EXPR_DID_NAME_MAX) {
        push_key(c, "event");
        return jerr(c, CP_ELIMIT, "event name longer than %d bytes", EXPR_DID_NAME_MAX);
    }
    const json_t *w = json_object_get(j, "where");
    if (w != NULL) {
        size_t o2 = push_key(c, "where");
        size_t nf = json_is_object(w) ? json_object_size(w) : 0;
        if (!json_is_object(w))
            return jerr(c, CP_EINVAL, "expected an object {\"property\": value, ...}");
        if (nf > EXPR_DID_MAX_FILTERS)
            return jerr(c, CP_ELIMIT, "more than %d property filters", EXPR_DID_MAX_FILTERS);
        if (nf > 0) {
            n->did.props = arena_alloc(&c->e->arena, nf * sizeof *n->did.props);
            n->values = arena_alloc(&c->e->arena, nf * sizeof *n->values);
            if (n->did.props == NULL || n->values == NULL)
                return jnomem(c);
        }
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)w, key, v)
        {
            size_t klen = strlen(key);
            if (!expr__is_ident(key, klen) || klen > EXPR_DID_NAME_MAX)
                return jerr(c, CP_EINVAL,
                            "'%.64s' is not a valid property name (letters, digits and '_', "
                            "not starting with a digit, not a keyword)",
                            key);
            size_t o3 = push_key(c, key);
            expr_value_t *val = &n->values[n->nvalues];
            if ((st = jvalue(c, v, val)) != CP_OK)
                return st;
            if (val->kind == VAL_REAL)
                return jerr(c, CP_EINVAL, "expected a string, integer or boolean");
            if (val->kind == VAL_STRING && val->slen > EXPR_DID_NAME_MAX)
                return jerr(c, CP_ELIMIT, "value longer than %d bytes", EXPR_DID_NAME_MAX);
            pop(c, o3);
            if ((n->did.props[n->nvalues] = arena_strndup(&c->e->arena, key, klen)) == NULL)
                return jnomem(c);
            n->nvalues++;
        }
        pop(c, o2);
    }
    const json_t *last = json_object_get(j, "last_days"), *btw = json_object_get(j, "between");
    if (last != NULL && btw != NULL)
        return jerr(c, CP_EINVAL, "use only one of \"last_days\" and \"between\"");
    if (last != NULL) {
        size_t o2 = push_key(c, "last_days");
        if (!json_is_integer(last) || json_integer_value(last) < 1 ||
            json_integer_value(last) > EXPR_DID_MAX_DAYS)
            return jerr(c, CP_EINVAL, "expected a whole number of days from 1 to %d",
                        EXPR_DID_MAX_DAYS);
        n->did.window = DID_LAST;
        n->did.last_days = (int32_t)json_integer_value(last);
        pop(c, o2);
    }
    if (btw != NULL) {
        size_t o2 = push_key(c, "between");
        if (!json_is_array(btw) || json_array_size(btw) != 2)
            return jerr(c, CP_EINVAL, "expected an array of 2 dates [\"YYYY-MM-DD\", ...]");
        for (size_t i = 0; i < 2; i++) {
            size_t o3 = push_index(c, i);
            if ((st = jday(c, json_array_get(btw, i), i ? &n->did.to : &n->did.from)) != CP_OK)
                return st;
            pop(c, o3);
        }
        if (n->did.from > n->did.to)
            return jerr(c, CP_EINVAL, "the window starts after it ends");
        n->did.window = DID_BETWEEN;
        pop(c, o2);
    }
    const json_t *op = json_object_get(j, "op"), *count = json_object_get(j, "count");
    const json_t *m = json_object_get(j, "measure");
    if (json_is_string(m) && strcmp(json_string_value(m), "sum") == 0 && json_string_length(m) == 3)
        return jdid_sum(c, j, n, old);
    if (json_object_get(j, "property") || json_object_get(j, "value"))
        return jerr(c, CP_EINVAL, "\"property\" and \"value\" go with \"measure\": \"sum\"");
    if ((op == NULL) != (count == NULL))
        return jerr(c, CP_EINVAL, "\"op\" and \"count\" go together");
    if (op != NULL) {
        if ((st = jop(c, j, &n->op)) != CP_OK)
            return st;
        size_t o2 = push_key(c, "count");
        if (!json_is_integer(count) || json_integer_value(count) < 0)
            return jerr(c, CP_EINVAL, "expected a whole number >= 0");
        n->did.count = (int64_t)json_integer_value(count);
        pop(c, o2);
    }
    if (m != NULL) {
        size_t o2 = push_key(c, "measure");
        const char *ms = json_string_value(m);
        if (ms != NULL && strcmp(ms, "days") == 0 && json_string_length(m) == 4)
            n->did.measure = DID_MEASURE_DAYS;
        else if (ms == NULL || strcmp(ms, "count") != 0 || json_string_length(m) != 5)
            return jerr(c, CP_EINVAL, "expected \"count\", \"days\" or \"sum\"");
        if (n->did.measure == DID_MEASURE_DAYS && op == NULL)
            return jerr(c, CP_EINVAL, "\"days\" needs \"op\" and \"count\"");
        pop(c, o2);
    }
    pop(c, old);
    return CP_OK;
}

/* A whole number of days 1..EXPR_DID_MAX_DAYS at j[key]. */
static cp_status jdays(jctx_t *c, const json_t *j, const char *key, int32_t *out)
{
    const json_t *v = json_object_get(j, key);
    size_t old = push_key(c, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > EXPR_DID_MAX_DAYS)
        return jerr(c, CP_EINVAL, "expected a whole number of days from 1 to %d",
                    EXPR_DID_MAX_DAYS);
    *out = (int32_t)json_integer_value(v);
    pop(c, old);
    return CP_OK;
}

static cp_status jattr(jctx_t *c, const json_t *j, expr_node_t *n)
{
    static const char *const keys[] = {
        "attr",   "op",      "value",       "between",          "in",
        "not_in", "is_null", "starts_with", "within_last_days", "older_than_days",
        NULL};
    /* The keys that say what is tested, exactly one of which is present. */
    static const char *const tests[] = {"op",
                                        "between",
                                        "in",
                                        "not_in",
                                        "is_null",
                                        "starts_with",
                                        "within_last_days",
                                        "older_than_days"};
    cp_status st;
    if ((st = jkeys(c, j, keys)) != CP_OK ||
        (st = jname(c, j, "attr", "an attribute name", &n->name)) != CP_OK)
        return st;
    int has_value = json_object_get(j, "value") != NULL, ntests = 0;
    const char *test = NULL;
    for (size_t i = 0; i < CP_ARRAY_LEN(tests); i++)
        if (json_object_get(j, tests[i]) != NULL) {
            ntests++;
            test = tests[i];
        }
    int has_op = test != NULL && strcmp(test, "op") == 0;
    if (ntests != 1 || has_value != has_op) {
        if (ntests == 0 && has_value)
            return jerr(c, CP_EINVAL, "\"value\" needs an \"op\"");
        if (ntests == 0)
            return jerr(c, CP_EINVAL,
                        "\"attr\" needs \"op\" and \"value\", \"between\", \"in\", "
                        "\"not_in\", \"is_null\", \"starts_with\", \"within_last_days\" or "
                        "\"older_than_days\"");
        if (has_op && !has_value)
            return jerr(c, CP_EINVAL, "\"op\" needs a \"value\"");
        if (has_value)
            return jerr(c, CP_EINVAL, "\"value\" goes only with \"op\"");
        return jerr(c, CP_EINVAL,
                    "use only one of \"op\", \"between\", \"in\", \"not_in\", "
                    "\"is_null\", \"starts_with\", \"within_last_days\" and "
                    "\"older_than_days\"");
    }
    if (has_op) {
        if ((st = jop(c, j, &n->op)) != CP_OK)
            return st;
        n->kind = EXPR_CMP;
        size_t old;
        n->values = arena_alloc(&c->e->arena, sizeof *n->values);
        if (n->values == NULL)
            return jnomem(c);
        n->nvalues = 1;
        old = push_key(c, "value");
        if ((st = jvalue(c, json_object_get(j, "value"), &n->values[0])) != CP_OK)
            return st;
        pop(c, old);
        return CP_OK;
    }
    if (strcmp(test, "between") == 0) {
        n->kind = EXPR_BETWEEN;
        return jvalues(c, j, "between", 2, 2, "an array of 2 values", n);
    }
    if (strcmp(test, "in") == 0 || strcmp(test, "not_in") == 0) {
        n->kind = test[0] == 'i' ? EXPR_IN : EXPR_NOT_IN;
        return jvalues(c, j, test, 1, SIZE_MAX, "a non-empty array of values", n);
    }
    if (strcmp(test, "is_null") == 0) {
        n->kind = EXPR_NULL;
        if (!json_is_true(json_object_get(j, "is_null"))) {
            push_key(c, "is_null");
            return jerr(c, CP_EINVAL, "expected true (users with a value: {\"has\": \"%s\"})",
                        n->name);
        }
        return CP_OK;
    }
    if (strcmp(test, "starts_with") == 0) {
        n->kind = EXPR_PREFIX;
        n->values = arena_alloc(&c->e->arena, sizeof *n->values);
        if (n->values == NULL)
            return jnomem(c);
        n->nvalues = 1;
        size_t old = push_key(c, "starts_with");
        const json_t *v = json_object_get(j, "starts_with");
        if (!json_is_string(v))
            return jerr(c, CP_EINVAL, "expected a string, found %s", json_type_name(v));
        if ((st = jvalue(c, v, &n->values[0])) != CP_OK)
            return st;
        pop(c, old);
        return CP_OK;
    }
    n->kind = strcmp(test, "within_last_days") == 0 ? EXPR_WITHIN : EXPR_OLDER;
    return jdays(c, j, test, &n->rel_days);
}

/* {"group_trait": ..., "op" + "value" | "in"}: a group trait compared by
 * equality (ast.h). */
static cp_status jgroup_trait(jctx_t *c, const json_t *j, expr_node_t *n)
{
    static const char *const keys[] = {"group_trait", "op", "value", "in", NULL};
    cp_status st;
    if ((st = jkeys(c, j, keys)) != CP_OK ||
        (st = jname(c, j, "group_trait", "a group trait name", &n->name)) != CP_OK)
        return st;
    if (!expr__is_ident(n->name, strlen(n->name))) {
        push_key(c, "group_trait");
        return jerr(c, CP_EINVAL,
                    "'%.64s' is not a valid trait name (letters, digits and '_', not starting "
                    "with a digit, not a keyword)",
                    n->name);
    }
    int has_op = json_object_get(j, "op") != NULL, has_value = json_object_get(j, "value") != NULL;
    int has_in = json_object_get(j, "in") != NULL;
    if (has_op + has_in != 1 || has_value != has_op)
        return jerr(c, CP_EINVAL, "\"group_trait\" needs \"op\" and \"value\", or \"in\"");
    if (has_in) {
        n->kind = EXPR_GROUP_IN;
        return jvalues(c, j, "in", 1, SIZE_MAX, "a non-empty array of values", n);
    }
    n->kind = EXPR_GROUP_CMP;
    if ((st = jop(c, j, &n->op)) != CP_OK)
        return st;
    if (n->op != OP_EQ && n->op != OP_NE) {
        push_key(c, "op");
        return jerr(c, CP_EINVAL, "group traits compare with \"=\" or \"!=\"");
    }
    if ((n->values = arena_alloc(&c->e->arena, sizeof *n->values)) == NULL)
        return jnomem(c);
    n->nvalues = 1;
    size_t old = push_key(c, "value");
    if ((st = jvalue(c, json_object_get(j, "value"), &n->values[0])) != CP_OK)
        return st;
    pop(c, old);
    return CP_OK;
}

static const char *const node_kinds[] = {"all",  "and",  "or",  "not",   "tag",         "crowd",
                                         "near", "attr", "did", "group", "group_trait", "has"};

/*
 * One node at nesting `depth` (the root is 1). The recursion is bounded by
 * CP_EXPR_MAX_DEPTH however deep the JSON is. *tree_depth receives the
 * depth of the built (flattened) subtree.
 */
static cp_status jnode(jctx_t *c, const json_t *j, int depth, expr_node_t **out, int *tree_depth)
{
    cp_status st;
    *tree_depth = 1;
    if (depth > CP_EXPR_MAX_DEPTH)
        return jerr(c, CP_ELIMIT, "expression nested deeper than %d levels", CP_EXPR_MAX_DEPTH);
    if (!json_is_object(j))
        return jerr(c, CP_EINVAL, "expected an expression object, found %s", json_type_name(j));
    const char *kind = NULL;
    for (size_t i = 0; i < CP_ARRAY_LEN(node_kinds); i++) {
        if (json_object_get(j, node_kinds[i]) == NULL)
            continue;
        if (kind != NULL)
            return jerr(c, CP_EINVAL, "keys '%s' and '%s' cannot be combined%s", kind,
                        node_kinds[i],
                        strcmp(node_kinds[i], "attr") == 0 && strcmp(kind, "near") == 0
                            ? " (put \"attr\" inside \"near\")"
                            : "");
        kind = node_kinds[i];
    }
    if (kind == NULL) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            return jerr(c, CP_EINVAL, "unknown key '%.64s'", key);
        }
        return jerr(c, CP_EINVAL,
                    "empty object, expected one of the keys all, and, or, not, tag, crowd, near, "
                    "attr, did, group, group_trait, has");
    }
    if (strcmp(kind, "attr") != 0 && strcmp(kind, "group_trait") != 0) {
        const char *const only[] = {kind, NULL};
        if ((st = jkeys(c, j, only)) != CP_OK)
            return st;
    }
    const json_t *v = json_object_get(j, kind);
    expr_node_t *n = expr__node(c->e, EXPR_ALL, 0, 0);
    if (n == NULL)
        return jnomem(c);
    *out = n;
    if (strcmp(kind, "all") == 0) {
        if (!json_is_true(v)) {
            push_key(c, "all");
            return jerr(c, CP_EINVAL, "expected true");
        }
        return CP_OK;
    }
    if (strcmp(kind, "and") == 0 || strcmp(kind, "or") == 0) {
        n->kind = kind[0] == 'a' ? EXPR_AND : EXPR_OR;
        size_t old = push_key(c, kind);
        if (!json_is_array(v) || json_array_size(v) < 2)
            return jerr(c, CP_EINVAL, "expected an array of at least 2 expressions");
        expr_list_t l;
        expr__list_init(&l, n->kind);
        for (size_t i = 0; i < json_array_size(v); i++) {
            size_t o2 = push_index(c, i);
            expr_node_t *child;
            int d;
            if ((st = jnode(c, json_array_get(v, i), depth + 1, &child, &d)) != CP_OK)
                return st;
            if (expr__list_add(c->e, &l, child, d) != CP_OK)
                return jnomem(c);
            pop(c, o2);
        }
        pop(c, old);
        n->args = l.items;
        n->nargs = l.n;
        *tree_depth = l.max_depth + 1;
        return CP_OK;
    }
    if (strcmp(kind, "not") == 0) {
        n->kind = EXPR_NOT;
        n->args = arena_alloc(&c->e->arena, sizeof *n->args);
        if (n->args == NULL)
            return jnomem(c);
        n->nargs = 1;
        size_t old = push_key(c, "not");
        int d;
        if ((st = jnode(c, v, depth + 1, &n->args[0], &d)) != CP_OK)
            return st;
        pop(c, old);
        *tree_depth = d + 1;
        return CP_OK;
    }
    if (strcmp(kind, "tag") == 0) {
        n->kind = EXPR_TAG;
        return jname(c, j, "tag", "a tag path", &n->name);
    }
    if (strcmp(kind, "crowd") == 0) {
        n->kind = EXPR_CROWD;
        return jname(c, j, "crowd", "a crowd name", &n->name);
    }
    if (strcmp(kind, "near") == 0) {
        n->kind = EXPR_NEAR;
        return jnear(c, v, n);
    }
    if (strcmp(kind, "did") == 0) {
        n->kind = EXPR_DID;
        return jdid(c, v, n);
    }
    if (strcmp(kind, "group") == 0) {
        n->kind = EXPR_GROUP;
        return jname(c, j, "group", "a group id", &n->name);
    }
    if (strcmp(kind, "group_trait") == 0)
        return jgroup_trait(c, j, n);
    if (strcmp(kind, "has") == 0) {
        n->kind = EXPR_HAS;
        /* the same name rule as "attr" (an identifier, not a keyword) */
        const char *name = json_string_value(v);
        size_t old = push_key(c, "has");
        if (name == NULL || !expr__is_ident(name, json_string_length(v)))
            return jerr(c, CP_EINVAL,
                        "expected an attribute name (letters, digits and '_', not starting "
                        "with a digit, not a keyword)");
        pop(c, old);
        return jname(c, j, "has", "an attribute name", &n->name);
    }
    return jattr(c, j, n);
}

cp_status expr_from_json(const json_t *j, expr_t **out, cp_error_t *err)
{
    cp_status st;
    jctx_t *c = NULL;
    expr_t *e = NULL;
    int depth;
    *out = NULL;
    error_clear(err);
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "no JSON expression");
    /* The path buffer is big; keep it off the stack of server threads. */
    if ((c = calloc(1, sizeof *c)) == NULL || (e = expr__new()) == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    c->e = e;
    c->err = err;
    st = jnode(c, j, 1, &e->root, &depth);
out:
    free(c);
    if (st != CP_OK) {
        expr_free(e);
        return st;
    }
    *out = e;
    return CP_OK;
}
