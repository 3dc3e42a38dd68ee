/*
 * fuzz_expr.c — libFuzzer target for the crowd expression language.
 *
 * The bytes are parsed as text; when that succeeds both round trips must
 * hold (parse(print(t)) == t with print a fixed point, and
 * from_json(to_json(t)) == t), else abort. The same bytes are also tried as
 * JSON through json_loadb + expr_from_json, with the same checks on
 * success. Corpus: tests/fuzz/expr/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/ast.h"

static void die(const char *what, const char *text)
{
    fprintf(stderr, "fuzz_expr: %s: <%s>\n", what, text ? text : "");
    abort();
}

static void check_tree(const expr_node_t *t)
{
    cp_error_t err;
    char *text = expr_to_text(t);
    if (text == NULL)
        die("expr_to_text failed", NULL);
    size_t len = strlen(text);
    /* The canonical text may be longer than the input (spaces, escapes);
     * past the length limit it cannot be read back, by design. */
    if (len <= CP_EXPR_MAX_LEN) {
        expr_t *e2 = NULL;
        if (expr_parse(text, len, &e2, &err) != CP_OK) {
            fprintf(stderr, "%s\n", err.message);
            die("canonical text does not parse", text);
        }
        if (!expr_equal(t, expr_root(e2)))
            die("text round trip changed the tree", text);
        char *text2 = expr_to_text(expr_root(e2));
        if (text2 == NULL || strcmp(text, text2) != 0)
            die("print(parse(print(t))) != print(t)", text);
        free(text2);
        expr_free(e2);
    }
    json_t *j = expr_to_json(t);
    if (j == NULL)
        die("expr_to_json failed", text);
    expr_t *e3 = NULL;
    if (expr_from_json(j, &e3, &err) != CP_OK) {
        fprintf(stderr, "%s\n", err.message);
        die("JSON form does not decode", text);
    }
    if (!expr_equal(t, expr_root(e3)))
        die("JSON round trip changed the tree", text);
    expr_free(e3);
    json_decref(j);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cp_error_t err;
    expr_t *e = NULL;
    if (expr_parse((const char *)data, size, &e, &err) == CP_OK) {
        check_tree(expr_root(e));
        expr_free(e);
    } else if (err.message[0] == '\0') {
        die("error without a message", NULL);
    }

    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (j != NULL) {
        if (expr_from_json(j, &e, &err) == CP_OK) {
            check_tree(expr_root(e));
            expr_free(e);
        } else if (err.message[0] == '\0') {
            die("JSON error without a message", NULL);
        }
        json_decref(j);
    }
    return 0;
}
