/* body.c — request bodies: content types, the JSON depth pre-scan, parsing. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

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

static void reply_malformed(srv_resp_t *resp, const json_error_t *jerr)
{
    srv_reply_error(resp, 400, "malformed_json",
                    json_pack("{s:i,s:i,s:i}", "line", jerr->line, "column", jerr->column,
                              "position", jerr->position),
                    "request body: line %d, column %d: malformed JSON: %s", jerr->line,
                    jerr->column, jerr->text);
}

int srv_reply_if_malformed(const srv_req_t *req, srv_resp_t *resp)
{
    json_error_t jerr;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (j != NULL) {
        json_decref(j);
        return 0;
    }
    reply_malformed(resp, &jerr);
    return 1;
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
        reply_malformed(resp, &jerr);
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

cp_status srv_field_str(json_t *obj, const char *field, srv_resp_t *resp, const char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_string(v)) {
        srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", field),
                        "request body: field \"%s\" must be a string, got %s", field, json_kind(v));
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

/* ------------------------------------------------------------ encodings */

/* Codings compare like media types: case-insensitive, blanks trimmed. */
static int encoding_is(const char *enc, const char *want)
{
    return ctype_is(enc, want);
}

/* A zlib stream starts with CMF/FLG where CM = 8 and the pair is a multiple
 * of 31 (RFC 1950); anything else under "deflate" is taken as raw deflate,
 * which some clients send under that name. */
static int looks_like_zlib(const unsigned char *p, size_t len)
{
    return len >= 2 && (p[0] & 0x0f) == 8 && (p[0] >> 4) <= 7 && ((p[0] << 8) | p[1]) % 31 == 0;
}

cp_status srv_inflate(const char *encoding, const char *in, size_t len, size_t max, char **out,
                      size_t *out_len, cp_error_t *err)
{
    *out = NULL;
    *out_len = 0;
    int gzip;
    if (encoding_is(encoding, "gzip") || encoding_is(encoding, "x-gzip"))
        gzip = 1;
    else if (encoding_is(encoding, "deflate"))
        gzip = 0;
    else
        return CP_ERR(err, CP_EINVAL,
                      "unsupported Content-Encoding \"%.60s\": send gzip, deflate or no "
                      "encoding",
                      encoding);
    const char *name = gzip ? "gzip" : "deflate";
    int wbits = gzip ? 15 + 16 : looks_like_zlib((const unsigned char *)in, len) ? 15 : -15;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, wbits) != Z_OK)
        return CP_ERR(err, CP_ENOMEM, "out of memory inflating the %s body", name);
    cp_status st = CP_OK;
    /* Grow geometrically, never past max + 1: one byte beyond the bound is
     * enough to know the body is too large, so a bomb is stopped after
     * producing at most max + 1 bytes whatever its ratio. */
    size_t cap = len < max / 4 ? len * 4 + 64 : max + 1;
    if (cap > max + 1)
        cap = max + 1;
    char *buf = malloc(cap + 1);
    size_t n = 0;
    if (buf == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory inflating the %s body", name);
        goto out;
    }
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
    for (;;) {
        if (n == cap) {
            if (cap == max + 1) {
                st = CP_ERR(err, CP_ELIMIT, "%s body: inflates to more than the limit of %zu bytes",
                            name, max);
                goto out;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (nb == NULL) {
                st = CP_ERR(err, CP_ENOMEM, "out of memory inflating the %s body", name);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        z.next_out = (Bytef *)buf + n;
        z.avail_out = (uInt)(cap - n);
        int rc = inflate(&z, Z_NO_FLUSH);
        n = cap - z.avail_out;
        if (rc == Z_STREAM_END) {
            /* gzip allows concatenated members (RFC 1952 2.2); zlib and raw
             * deflate streams end once. */
            if (gzip && z.avail_in >= 2 && z.next_in[0] == 0x1f && z.next_in[1] == 0x8b) {
                inflateReset(&z);
                continue;
            }
            if (z.avail_in != 0) {
                st = CP_ERR(err, CP_EINVAL,
                            "%s body: %u unexpected bytes after the end of the compressed data "
                            "(at byte %zu)",
                            name, z.avail_in, len - z.avail_in);
                goto out;
            }
            break;
        }
        if (rc == Z_OK)
            continue;
        if (rc == Z_BUF_ERROR && z.avail_out != 0) {
            /* No progress with room to write: the input ran out before the
             * stream's end marker. */
            st = CP_ERR(err, CP_EINVAL,
                        "%s body: truncated: the %zu compressed bytes end before the end of the "
                        "%s stream (%zu bytes inflated so far)",
                        name, len, name, n);
            goto out;
        }
        if (rc == Z_BUF_ERROR)
            continue; /* output full: grow and go on */
        if (rc == Z_MEM_ERROR) {
            st = CP_ERR(err, CP_ENOMEM, "out of memory inflating the %s body", name);
            goto out;
        }
        st = CP_ERR(err, CP_EINVAL, "%s body: corrupt compressed data at byte %zu: %s", name,
                    len - z.avail_in, z.msg != NULL ? z.msg : "invalid data");
        goto out;
    }
    if (n > max) {
        /* The stream ended exactly on the byte past the bound. */
        st = CP_ERR(err, CP_ELIMIT, "%s body: inflates to more than the limit of %zu bytes", name,
                    max);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    buf = NULL;
out:
    inflateEnd(&z);
    free(buf);
    return st;
}

cp_status srv_body_decode(srv_req_t *req, srv_resp_t *resp, size_t max)
{
    const char *enc = req->content_encoding;
    if (enc == NULL || req->body_len == 0)
        return CP_OK; /* nothing to decode (a body-less request with the header) */
    while (*enc == ' ' || *enc == '\t')
        enc++;
    if (*enc == '\0' || encoding_is(enc, "identity"))
        return CP_OK;
    char *out = NULL;
    size_t n = 0;
    cp_error_t err = {0};
    cp_status st = srv_inflate(enc, req->body, req->body_len, max, &out, &n, &err);
    if (st == CP_OK) {
        free(req->inflated);
        req->inflated = out;
        req->body = out;
        req->body_len = n;
        return CP_OK;
    }
    if (st == CP_ELIMIT)
        srv_reply_error(resp, 413, "too_large", json_pack("{s:I}", "limit", (json_int_t)max),
                        "request body: %s", err.message);
    else if (st == CP_EINVAL && strncmp(err.message, "unsupported", 11) == 0)
        srv_reply_error(resp, 415, "unsupported_media_type", NULL, "request body: %s", err.message);
    else if (st == CP_EINVAL)
        srv_reply_error(resp, 400, "malformed_compressed_body", NULL, "request body: %s",
                        err.message);
    else
        srv_reply_cp(resp, st, &err, 0);
    return st;
}
