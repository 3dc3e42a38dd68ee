/*
 * ast.h — the crowd expression tree (DESIGN.md §5), shared by the text
 * parser, the JSON form, the printer and the planner.
 *
 * Text and JSON are two spellings of this one tree; both round-trip
 * exactly: parse(print(t)) == t and from_json(to_json(t)) == t.
 *
 * Memory: every node and string of a tree lives in one arena owned by the
 * expr_t; expr_free() releases it all.
 */
#ifndef CP_QUERY_AST_H
#define CP_QUERY_AST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

typedef enum expr_kind {
    EXPR_ALL = 1,   /* all */
    EXPR_AND,       /* args[0..nargs) */
    EXPR_OR,        /* args[0..nargs) */
    EXPR_NOT,       /* args[0] */
    EXPR_TAG,       /* tag:PATH            -> name */
    EXPR_CROWD,     /* crowd:NAME          -> name */
    EXPR_CMP,       /* attr OP value       -> name, op, values[0] */
    EXPR_BETWEEN,   /* attr BETWEEN a AND b -> name, values[0], values[1] (inclusive) */
    EXPR_IN,        /* attr IN (v, ...)    -> name, values[0..nvalues) */
    EXPR_NEAR,      /* near(lat, lon, R unit) -> near */
    EXPR_DID,       /* did(EVENT, filters, window) [op COUNT] -> name (the event),
                     * did.props[i] = values[i] (nvalues filters), did.window,
                     * op + did.count (op 0: no comparison, "at least once"),
                     * or did.measure's days / sum(did.sum_prop) op did.sum_value */
    EXPR_GROUP,     /* group:ID            -> name (members of the Segment group ID) */
    EXPR_GROUP_CMP, /* group.TRAIT = v / != v -> name (the trait), op (OP_EQ, OP_NE), values[0] */
    EXPR_GROUP_IN,  /* group.TRAIT IN (v, ...) -> name, values[0..nvalues) */
    EXPR_HAS,       /* has(attr) = attr IS NOT NULL -> name: users having a value */
    EXPR_NULL,      /* attr IS NULL        -> name: live users without a value */
    EXPR_NOT_IN,    /* attr NOT IN (v, ...) -> name, values[0..nvalues): having a value,
                     * none of these (like `!=`, users without a value do not match) */
    EXPR_PREFIX,    /* attr STARTS WITH "s" -> name, values[0] (a string): a value of the
                     * attribute's dictionary that begins with s (bytes, case kept) */
    EXPR_WITHIN,    /* attr WITHIN LAST N d -> name, rel_days: a timestamp in the N UTC
                     * days up to and including the as-of day */
    EXPR_OLDER,     /* attr OLDER THAN N d  -> name, rel_days: a timestamp before the
                     * first day of `WITHIN LAST N d` */
} expr_kind;

/* What a did() compares (did.measure): the number of events, the
 * number of distinct UTC days with at least one, or the sum of a numeric
 * property (did.sum_prop) compared with did.sum_value. */
typedef enum expr_did_measure {
    DID_MEASURE_COUNT = 0,
    DID_MEASURE_DAYS,
    DID_MEASURE_SUM,
} expr_did_measure;

/* did() windows: all time, the last N days up to the as-of day, or
 * BETWEEN two UTC days (both inclusive). */
typedef enum expr_did_window { DID_ALL_TIME = 0, DID_LAST, DID_BETWEEN } expr_did_window;

#define EXPR_DID_MAX_FILTERS 8  /* property filters the language accepts in one did() */
#define EXPR_DID_MAX_DAYS 36600 /* longest `last N` window (about 100 years) */
#define EXPR_DID_NAME_MAX 255   /* bytes of an event or property name */

typedef enum expr_op { OP_EQ = 1, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } expr_op;

typedef enum expr_value_kind {
    VAL_INT = 1, /* integer literal */
    VAL_REAL,    /* number with a fraction or exponent */
    VAL_STRING,  /* "..." (also used for timestamps: "2024-01-01") */
    VAL_BOOL,    /* true / false */
} expr_value_kind;

typedef struct expr_value {
    expr_value_kind kind;
    int64_t i;     /* VAL_INT, VAL_BOOL (0/1) */
    double r;      /* VAL_REAL */
    const char *s; /* VAL_STRING, UTF-8, NUL-terminated (arena) */
    size_t slen;
} expr_value_t;

typedef enum geo_unit { UNIT_M = 1, UNIT_KM } geo_unit;

typedef struct expr_node expr_node_t;
struct expr_node {
    expr_kind kind;
    int line, column;     /* 1-based position in the text form (0 if from JSON) */
    const char *name;     /* TAG path, CROWD name, attribute name */
    expr_op op;           /* EXPR_CMP; EXPR_DID (0 = no count comparison) */
    expr_value_t *values; /* EXPR_CMP (1), EXPR_BETWEEN (2), EXPR_IN (n), EXPR_DID (filters) */
    size_t nvalues;
    struct {
        double lat, lon;
        double radius; /* in `unit` as written */
        geo_unit unit;
    } near; /* EXPR_NEAR */
    struct {
        const char **props; /* filter property names [nvalues]; values[i] is props[i]'s */
        expr_did_window window;
        int32_t last_days;        /* DID_LAST: N (weeks are written back as 7N days) */
        int32_t from, to;         /* DID_BETWEEN: days since 1970-01-01 UTC, from <= to */
        int64_t count;            /* compared with `op` when op != 0; >= 0 */
        expr_did_measure measure; /* DID_MEASURE_DAYS and _SUM need op != 0 */
        const char *sum_prop;     /* DID_MEASURE_SUM: the property summed */
        expr_value_t sum_value;   /* DID_MEASURE_SUM: VAL_INT or VAL_REAL compared with */
    } did;                        /* EXPR_DID */
    expr_node_t **args;           /* EXPR_AND / EXPR_OR (>= 2), EXPR_NOT (1) */
    size_t nargs;
    int32_t rel_days; /* EXPR_WITHIN, EXPR_OLDER: N, 1..EXPR_DID_MAX_DAYS */
};

typedef struct expr expr_t; /* a tree and the arena that owns it */
expr_node_t *expr_root(const expr_t *e);
void expr_free(expr_t *e); /* NULL fine */

/*
 * Parses the text form. Limits: CP_EXPR_MAX_LEN bytes, CP_EXPR_MAX_DEPTH
 * nesting. Errors: CP_ESYNTAX / CP_ELIMIT with err->line, err->column and a
 * message saying what was expected ("1:14: expected a value after '=',
 * found ')'"). Keywords (AND OR NOT BETWEEN IN all true false) are
 * case-insensitive, and so are the words of IS [NOT] NULL, NOT IN, STARTS
 * WITH, WITHIN LAST, OLDER THAN and did()'s `days` (not reserved: they are
 * recognised only where they can appear). On success *out is owned by the caller.
 */
cp_status expr_parse(const char *text, size_t len, expr_t **out, cp_error_t *err);

/* Builds the tree from the JSON form (see docs/expressions.md). Same limits
 * and error conventions (positions are 0; the message names the JSON path,
 * e.g. "args[1].value: expected a number"). */
cp_status expr_from_json(const json_t *j, expr_t **out, cp_error_t *err);

/* The JSON form; caller owns the result (json_decref). NULL on ENOMEM. */
json_t *expr_to_json(const expr_node_t *n);

/* The canonical text form; caller frees with free(). NULL on ENOMEM.
 * Prints the minimal parentheses for the precedence NOT > AND > OR. */
char *expr_to_text(const expr_node_t *n);

/* Structural equality (used by round-trip tests). */
int expr_equal(const expr_node_t *a, const expr_node_t *b);

/* Radius in metres. */
double expr_near_radius_m(const expr_node_t *n);

#endif /* CP_QUERY_AST_H */
