/*
 * cors.c — cross-site defences: the Origin allow-list, the content-type rule
 * for state-changing requests, and which requests get CORS headers.
 *
 * A web page can make the operator's browser send a "simple" request to any
 * address, loopback included, without asking first: GET, HEAD or POST with a
 * text/plain, form or multipart body and no custom headers. Everything else
 * (a JSON content type, a Content-Encoding, an Authorization header, PUT,
 * PATCH, DELETE) needs a CORS preflight, which we answer only for origins
 * the operator allow-listed. So a state-changing request is safe to run when
 *   - it carries no Origin, or an allow-listed one (browsers send Origin on
 *     every cross-origin POST and on every non-GET fetch), and
 *   - it has a Bearer key, or a JSON/NDJSON content type, or a
 *     Content-Encoding: none of these can be sent without a preflight.
 * Bodies without a type and body-less POSTs need the JSON type too: a form
 * can post an empty body. Basic auth is not an exemption because browsers
 * replay cached Basic credentials on cross-site requests.
 */
#include <string.h>
#include <strings.h>

#include "server/srv.h"

/* Length of an origin without one trailing slash. */
static size_t origin_len(const char *o)
{
    size_t n = strlen(o);
    if (n > 0 && o[n - 1] == '/')
        n--;
    return n;
}

int srv_origin_allowed(const srv_ctx_t *srv, const char *origin)
{
    if (origin == NULL || srv == NULL)
        return 0;
    size_t n = origin_len(origin);
    for (size_t i = 0; i < srv->nallow_origins; i++) {
        const char *a = srv->allow_origins[i];
        /* Scheme and host are case-insensitive (RFC 6454 4); ports are
         * digits, so one case-insensitive compare covers the whole. */
        if (origin_len(a) == n && strncasecmp(a, origin, n) == 0)
            return 1;
    }
    return 0;
}

cp_status srv_origin_parse_check(const char *origin, cp_error_t *err)
{
    const char *rest = NULL;
    if (strncasecmp(origin, "http://", 7) == 0)
        rest = origin + 7;
    else if (strncasecmp(origin, "https://", 8) == 0)
        rest = origin + 8;
    if (rest == NULL || *rest == '\0' || *rest == '/' || *rest == ':')
        return CP_ERR(err, CP_EINVAL,
                      "allowed origin \"%s\": expected scheme://host[:port], e.g. "
                      "https://dmp.example.com",
                      origin);
    size_t n = origin_len(rest);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c == '/' || c == '?' || c == '#' || c <= ' ' || c >= 0x7f || c == ',')
            return CP_ERR(err, CP_EINVAL,
                          "allowed origin \"%s\": an origin is scheme://host[:port] with no "
                          "path, query or spaces",
                          origin);
    }
    return CP_OK;
}

static int is_bearer(const char *auth)
{
    if (auth == NULL)
        return 0;
    while (*auth == ' ' || *auth == '\t')
        auth++;
    return strncasecmp(auth, "Bearer ", 7) == 0;
}

int srv_cross_site_check(const srv_ctx_t *srv, const srv_req_t *req, srv_resp_t *resp)
{
    if (req->method == SRV_GET)
        return 1;
    if (req->origin != NULL && !srv_origin_allowed(srv, req->origin)) {
        srv_reply_error(resp, 403, "forbidden_origin", json_pack("{s:s}", "origin", req->origin),
                        "%s %s from a web page at origin \"%.200s\" is refused: state-changing "
                        "requests from browsers are served only for origins the operator lists "
                        "with `crowdpack serve --allow-origin ORIGIN`",
                        req->method_name != NULL ? req->method_name : srv_method_name(req->method),
                        req->path, req->origin);
        return 0;
    }
    if (is_bearer(req->authorization))
        return 1;
    if (req->content_encoding != NULL && req->content_encoding[0] != '\0')
        return 1;
    if (srv_ctype_is_json(req->content_type) || srv_ctype_is_ndjson(req->content_type))
        return 1;
    srv_reply_error(resp, 415, "unsupported_media_type", NULL,
                    "%s %s: content type \"%.100s\" is not accepted for a request without an API "
                    "key; send \"Content-Type: application/json\" (also when there is no body) "
                    "or \"Authorization: Bearer KEY\"; browsers can send other types from any "
                    "web page, so they are refused to stop cross-site requests",
                    req->method_name != NULL ? req->method_name : srv_method_name(req->method),
                    req->path, req->content_type != NULL ? req->content_type : "(none)");
    return 0;
}
