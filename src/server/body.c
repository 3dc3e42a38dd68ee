/* body.c — request bodies: content types, the JSON depth pre-scan, parsing. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "server/srv.h"

/*
 * jansson has no depth option (its compile-time limit is 2048 and recursion
 * happens before we could object), so nesting is bounded here, on the raw
 * bytes, before the parser sees them. Only brackets outside strings count;
 * a backslash inside a string skips the next byte. Unbalanced or otherwise
 * broken input is left for the parser to report.
 */
int srv_json_too_deep(const char *s, size_t len, int max, int per_line, size_t *offset)
{
    int depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\n' && per_line) {
            /* NDJSON: every line starts afresh (a raw newline cannot be
             * inside a valid string), so one broken line cannot push the
             * next ones over the limit. */
            depth = 0;
            in_str = 0;
            continue;
        }
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                if (offset != NULL)
                    *offset = i;
                return 1;
            }
        } else if (c == ']' || c == '}') {
            if (depth > 0)
                depth--;
        }
    }
    return 0;
}

void srv_text_position(const char *s, size_t offset, int *line, int *column)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < offset && s[i] != '\0'; i++) {
        if (s[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
            c++; /* columns count characters, not UTF-8 continuation bytes */
        }
    }
    *line = l;
    *column = c;
}

/* Compares the media type of a Content-Type value (before ';', trimmed,
 * case-insensitive) with `want`. */
static int ctype_is(const char *ct, const char *want)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(ct, want, n) == 0;
}

static int ctype_suffix_json(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n >= 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

int srv_ctype_is_json(const char *ct)
{
    if (ct == NULL)
        return 0;
    return ctype_is(ct, "application/json") || ctype_is(ct, "text/json") || ctype_suffix_json(ct);
}

int srv_ctype_is_ndjson(const char *ct)
{
    if (ct == NULL)
        return 0;
    return ctype_is(ct, "application/x-ndjson") || ctype_is(ct, "application/ndjson") ||
           ctype_is(ct, "application/jsonl") || ctype_is(ct, "application/x-jsonlines");
}

cp_status srv_body_object(srv_req_t *req, srv_resp_t *resp, json_t **out)
{
    *out = NULL;
    size_t i = 0;
    while (i < req->body_len && isspace((unsigned char)req->body[i]))
        i++;
    if (i == req->body_len) {
        srv_reply_error(resp, 400, "empty_body", NULL,
                        "request body: expected a JSON object, got an empty body");
        return CP_EINVAL;
    }
    if (!srv_ctype_is_json(req->content_type)) {
        srv_reply_error(resp, 415, "unsupported_media_type", NULL,
                        "request body: content type \"%s\" is not accepted here; send "
                        "application/json",
                        req->content_type != NULL ? req->content_type : "(none)");
        return CP_EINVAL;
    }
    size_t off = 0;
    if (srv_json_too_deep(req->body, req->body_len, SRV_MAX_JSON_DEPTH, 0, &off)) {
        int line, col;
        srv_text_position(req->body, off, &line, &col);
        srv_reply_error(resp, 400, "json_too_deep",
                        json_pack("{s:i,s:i}", "line", line, "column", col),
                        "request body: line %d, column %d: JSON nested deeper than %d levels", line,
                        col, SRV_MAX_JSON_DEPTH);
        return CP_ELIMIT;
    }
    json_error_t jerr;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        srv_reply_error(resp, 400, "malformed_json",
                        json_pack("{s:i,s:i}", "line", jerr.line, "column", jerr.column),
                        "request body: line %d, column %d: malformed JSON: %s", jerr.line,
                        jerr.column, jerr.text);
        return CP_EINVAL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        srv_reply_error(resp, 400, "invalid", NULL,
                        "request body: expected a JSON object at the top level");
        return CP_EINVAL;
    }
    *out = j;
    return CP_OK;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

cp_status srv_field_str(json_t *obj, const char *field, srv_resp_t *resp, const char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_string(v)) {
        srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", field),
                        "request body: field \"%s\" must be a string, got %s", field,
                        json_type_name(v));
        return CP_EINVAL;
    }
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v)) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", field),
                        "request body: field \"%s\" contains a NUL character", field);
        *out = NULL;
        return CP_EINVAL;
    }
    return CP_OK;
}

cp_status srv_field_str_req(json_t *obj, const char *field, srv_resp_t *resp, const char **out)
{
    cp_status st = srv_field_str(obj, field, resp, out);
    if (st != CP_OK)
        return st;
    if (*out == NULL) {
        srv_reply_error(resp, 400, "missing_field", json_pack("{s:s}", "field", field),
                        "request body: field \"%s\" is required", field);
        return CP_EINVAL;
    }
    return CP_OK;
}
