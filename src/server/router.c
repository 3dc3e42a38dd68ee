/* router.c — the route table, path matching, percent-decoding, auth, dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/*
 * One row per method and pattern. "{name}" matches one non-empty path
 * segment, "{name...}" the non-empty rest of the path (tag paths contain
 * slashes). Rows are tried in order; a literal row must come before a
 * parameter row that would also match it with the same method. The pattern
 * doubles as the "route" label in /metrics, so it must stay low-cardinality.
 */
const srv_route_t srv_routes[] = {
    {SRV_GET, "/healthz", srv_h_healthz, 0},
    {SRV_GET, "/readyz", srv_h_readyz, 0},
    {SRV_GET, "/metrics", srv_h_metrics, 0},

    {SRV_GET, "/v1/tags", srv_h_tags_list, CP_ROLE_READ},
    {SRV_POST, "/v1/tags", srv_h_tags_create, CP_ROLE_WRITE},
    {SRV_GET, "/v1/tags/{path...}", srv_h_tag_get, CP_ROLE_READ},
    {SRV_PATCH, "/v1/tags/{path...}", srv_h_tag_patch, CP_ROLE_WRITE},
    {SRV_DELETE, "/v1/tags/{path...}", srv_h_tag_delete, CP_ROLE_WRITE},
    {SRV_POST, "/v1/taxonomy", srv_h_taxonomy_load, CP_ROLE_WRITE},

    {SRV_GET, "/v1/attributes", srv_h_attrs_list, CP_ROLE_READ},
    {SRV_POST, "/v1/attributes", srv_h_attrs_create, CP_ROLE_WRITE},
    {SRV_GET, "/v1/attributes/{name}/values", srv_h_attr_values, CP_ROLE_READ},
    {SRV_PUT, "/v1/attributes/{name}/aliases", srv_h_attr_aliases_put, CP_ROLE_WRITE},

    /* Segment-compatible intake and OneID (h_events.c). */
    {SRV_POST, "/v1/identify", srv_h_ev_identify, CP_ROLE_WRITE},
    {SRV_POST, "/v1/track", srv_h_ev_track, CP_ROLE_WRITE},
    {SRV_POST, "/v1/page", srv_h_ev_page, CP_ROLE_WRITE},
    {SRV_POST, "/v1/screen", srv_h_ev_screen, CP_ROLE_WRITE},
    {SRV_POST, "/v1/group", srv_h_ev_group, CP_ROLE_WRITE},
    {SRV_POST, "/v1/alias", srv_h_ev_alias, CP_ROLE_WRITE},
    {SRV_POST, "/v1/batch", srv_h_ev_batch, CP_ROLE_WRITE},
    {SRV_POST, "/v1/import", srv_h_ev_batch, CP_ROLE_WRITE}, /* Segment's alias of /v1/batch */
    {SRV_GET, "/v1/properties", srv_h_properties, CP_ROLE_READ},
    {SRV_GET, "/v1/events", srv_h_events_list, CP_ROLE_READ},
    {SRV_GET, "/v1/intake/config", srv_h_intake_config_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/intake/config", srv_h_intake_config_put, CP_ROLE_ADMIN},
    {SRV_POST, "/v1/count", srv_h_count_as_of, CP_ROLE_READ},
    {SRV_POST, "/v1/eval", srv_h_eval, CP_ROLE_READ},
    {SRV_GET, "/v1/stats", srv_h_stats, CP_ROLE_READ},
    {SRV_GET, "/v1/users/{type}/{value}", srv_h_whois, CP_ROLE_READ},
    {SRV_DELETE, "/v1/users/{type}/{value}", srv_h_user_delete_ident, CP_ROLE_WRITE},
    {SRV_POST, "/v1/users/{type}/{value}/unmerge", srv_h_unmerge, CP_ROLE_WRITE},

    {SRV_POST, "/v1/users", srv_h_users_load, CP_ROLE_WRITE},
    {SRV_GET, "/v1/users/{id}", srv_h_user_get, CP_ROLE_READ},
    {SRV_DELETE, "/v1/users/{id}", srv_h_user_delete, CP_ROLE_WRITE},
    {SRV_POST, "/v1/users/{id}/tags/remove", srv_h_user_tags_remove, CP_ROLE_WRITE},
    {SRV_DELETE, "/v1/users/{id}/tags/{path...}", srv_h_user_tag_delete, CP_ROLE_WRITE},

    /* Estimates and parses only read, so a read key may POST them. */
    {SRV_POST, "/v1/crowds/estimate", srv_h_crowds_estimate, CP_ROLE_READ},
    {SRV_GET, "/v1/crowds", srv_h_crowds_list, CP_ROLE_READ},
    {SRV_POST, "/v1/crowds", srv_h_crowds_create, CP_ROLE_WRITE},
    {SRV_GET, "/v1/crowds/{name}", srv_h_crowd_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/crowds/{name}", srv_h_crowd_update, CP_ROLE_WRITE},
    {SRV_PATCH, "/v1/crowds/{name}", srv_h_crowd_update, CP_ROLE_WRITE},
    {SRV_DELETE, "/v1/crowds/{name}", srv_h_crowd_delete, CP_ROLE_WRITE},
    {SRV_POST, "/v1/crowds/{name}/refresh", srv_h_crowd_refresh, CP_ROLE_WRITE},
    {SRV_GET, "/v1/crowds/{name}/history", srv_h_crowd_history, CP_ROLE_READ},
    {SRV_PUT, "/v1/crowds/{name}/schedule", srv_h_crowd_schedule, CP_ROLE_WRITE},
    {SRV_GET, "/v1/crowds/{name}/sample", srv_h_crowd_sample, CP_ROLE_READ},
    {SRV_GET, "/v1/crowds/{name}/export", srv_h_crowd_export, CP_ROLE_READ},
    {SRV_POST, "/v1/expressions/parse", srv_h_expr_parse, CP_ROLE_READ},

    /* Campaigns (h_campaigns.c, docs/activation.md). */
    {SRV_GET, "/v1/campaigns", srv_h_campaigns_list, CP_ROLE_READ},
    {SRV_GET, "/v1/campaigns/{id}", srv_h_campaign_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/campaigns/{id}", srv_h_campaign_put, CP_ROLE_WRITE},
    {SRV_DELETE, "/v1/campaigns/{id}", srv_h_campaign_delete, CP_ROLE_WRITE},
    {SRV_GET, "/v1/campaigns/{id}/history", srv_h_campaign_history, CP_ROLE_READ},
    {SRV_GET, "/v1/campaigns/{id}/delivery", srv_h_campaign_delivery, CP_ROLE_READ},
    {SRV_GET, "/v1/contact-cap", srv_h_contact_cap_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/contact-cap", srv_h_contact_cap_put, CP_ROLE_WRITE},

    /* Analytics reports only read (clusters check "root" themselves). */
    {SRV_POST, "/v1/insight", srv_h_insight, CP_ROLE_READ},
    {SRV_POST, "/v1/overlap", srv_h_overlap, CP_ROLE_READ},
    {SRV_POST, "/v1/clusters", srv_h_clusters, CP_ROLE_READ},
    {SRV_GET, "/v1/tiers", srv_h_tiers_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/tiers", srv_h_tiers_put, CP_ROLE_WRITE},
    {SRV_POST, "/v1/tiers/nudge", srv_h_tiers_nudge, CP_ROLE_READ},
    {SRV_GET, "/v1/analytics/settings", srv_h_analytics_settings_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/analytics/settings", srv_h_analytics_settings_put, CP_ROLE_ADMIN},
    /* Value models and journeys (h_value.c): runs that store check the role. */
    {SRV_GET, "/v1/measures", srv_h_measures_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/measures", srv_h_measures_put, CP_ROLE_ADMIN},
    {SRV_POST, "/v1/rfm", srv_h_rfm, CP_ROLE_READ},
    {SRV_GET, "/v1/rfm/schedule", srv_h_rfm_schedule_get, CP_ROLE_READ},
    {SRV_PUT, "/v1/rfm/schedule", srv_h_rfm_schedule_put, CP_ROLE_WRITE},
    {SRV_POST, "/v1/aipl", srv_h_aipl, CP_ROLE_READ},
    {SRV_POST, "/v1/funnels", srv_h_funnels, CP_ROLE_READ},

    {SRV_GET, "/v1/keys", srv_h_keys_list, CP_ROLE_ADMIN},
    {SRV_POST, "/v1/keys", srv_h_keys_create, CP_ROLE_ADMIN},
    {SRV_DELETE, "/v1/keys/{id}", srv_h_key_delete, CP_ROLE_ADMIN},

    /* OpenRTB (h_rtb.c): bid requests need a write key, or a loopback
     * client when no key is configured; notices carry a MACed token and
     * come from browsers and exchanges without a key. */
    {SRV_POST, "/openrtb2/bid", srv_h_rtb_bid, CP_ROLE_WRITE},
    {SRV_GET, "/openrtb2/win", srv_h_rtb_win, 0},
    {SRV_GET, "/openrtb2/bill", srv_h_rtb_bill, 0},
    {SRV_GET, "/openrtb2/loss", srv_h_rtb_loss, 0},
    {SRV_GET, "/openrtb2/imp", srv_h_rtb_imp, 0},
    {SRV_GET, "/openrtb2/click", srv_h_rtb_click, 0},
    /* The floor of `crowdpack bench --rtb`: the same requests through the
     * same HTTP stack and auth, answered 204 without the bidder. */
    {SRV_POST, "/openrtb2/nobid", srv_h_rtb_nobid, CP_ROLE_WRITE},
};
const size_t srv_nroutes = CP_ARRAY_LEN(srv_routes);

/* ------------------------------------------------------------ requests */

srv_method srv_method_parse(const char *s)
{
    if (s == NULL)
        return SRV_OTHER;
    if (strcmp(s, "GET") == 0 || strcmp(s, "HEAD") == 0)
        return SRV_GET;
    if (strcmp(s, "POST") == 0)
        return SRV_POST;
    if (strcmp(s, "PUT") == 0)
        return SRV_PUT;
    if (strcmp(s, "PATCH") == 0)
        return SRV_PATCH;
    if (strcmp(s, "DELETE") == 0)
        return SRV_DELETE;
    return SRV_OTHER;
}

const char *srv_method_name(srv_method m)
{
    switch (m) {
    case SRV_GET:
        return "GET";
    case SRV_POST:
        return "POST";
    case SRV_PUT:
        return "PUT";
    case SRV_PATCH:
        return "PATCH";
    case SRV_DELETE:
        return "DELETE";
    case SRV_OTHER:
        break;
    }
    return "OTHER";
}

void srv_req_init(srv_req_t *req)
{
    memset(req, 0, sizeof *req);
    req->route = -1;
    req->body = "";
    arena_init(&req->arena, SRV_REQ_ARENA_MAX);
}

void srv_req_free(srv_req_t *req)
{
    arena_free(&req->arena);
    free(req->inflated);
    req->inflated = NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

cp_status srv_pct_decode(arena_t *a, const char *s, size_t n, const char **out, cp_error_t *err)
{
    *out = NULL;
    char *d = arena_alloc(a, n + 1);
    if (d == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory decoding the URL");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[o++] = s[i];
            continue;
        }
        int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return CP_ERR(err, CP_EINVAL, "URL: bad percent-escape at \"%.*s\"",
                          (int)(n - i < 3 ? n - i : 3), s + i);
        char c = (char)(hi * 16 + lo);
        if (c == '\0')
            return CP_ERR(err, CP_EINVAL, "URL: %%00 (a NUL byte) is not allowed");
        d[o++] = c;
        i += 2;
    }
    d[o] = '\0';
    if (!utf8_valid(d, o))
        return CP_ERR(err, CP_EINVAL, "URL: \"%.*s\" does not decode to valid UTF-8",
                      (int)(n > 200 ? 200 : n), s);
    *out = d;
    return CP_OK;
}

cp_status srv_query(srv_req_t *req, const char *key, const char **out, cp_error_t *err)
{
    *out = NULL;
    if (req->query == NULL)
        return CP_OK;
    const char *raw = req->query(req->query_ud, key);
    if (raw == NULL)
        return CP_OK;
    cp_status st = srv_pct_decode(&req->arena, raw, strlen(raw), out, err);
    if (st != CP_OK)
        error_prefix(err, "query argument \"%s\": ", key);
    return st;
}

/* ------------------------------------------------------------- routing */

/*
 * Matches `path` (raw, no query, at most one trailing slash stripped by the
 * caller) against `pat`. On a match the decoded parameters go into req.
 * Returns 1 match, 0 no match, -1 bad escape (err set).
 */
static int match_one(srv_req_t *req, const char *pat, const char *path, size_t plen,
                     cp_error_t *err)
{
    const char *p = pat;
    const char *s = path;
    const char *end = path + plen;
    int np = 0;
    const char *raw[SRV_MAX_PARAMS];
    size_t rawlen[SRV_MAX_PARAMS];
    while (*p != '\0') {
        if (*p != '{') {
            if (s >= end || *s != *p)
                return 0;
            p++;
            s++;
            continue;
        }
        const char *close = strchr(p, '}');
        if (close == NULL || np >= SRV_MAX_PARAMS)
            return 0;
        int rest = close - p >= 4 && strncmp(close - 3, "...", 3) == 0;
        const char *seg_end = rest ? end : memchr(s, '/', (size_t)(end - s));
        if (seg_end == NULL)
            seg_end = end;
        if (seg_end == s)
            return 0; /* empty parameter */
        raw[np] = s;
        rawlen[np] = (size_t)(seg_end - s);
        np++;
        s = seg_end;
        p = close + 1;
    }
    if (s != end)
        return 0;
    for (int i = 0; i < np; i++) {
        if (srv_pct_decode(&req->arena, raw[i], rawlen[i], &req->params[i], err) != CP_OK)
            return -1;
    }
    req->nparams = np;
    return 1;
}

int srv_route_match(srv_req_t *req, int *status, const char **allow)
{
    static const struct {
        unsigned mask;
        const char *text;
    } allows[] = {
        /* Allow headers for every combination the table uses. */
        {SRV_GET, "GET, HEAD"},
        {SRV_POST, "POST"},
        {SRV_GET | SRV_POST, "GET, HEAD, POST"},
        {SRV_GET | SRV_PATCH | SRV_DELETE, "GET, HEAD, PATCH, DELETE"},
        {SRV_GET | SRV_DELETE, "GET, HEAD, DELETE"},
        {SRV_DELETE, "DELETE"},
        {SRV_GET | SRV_PUT | SRV_PATCH | SRV_DELETE, "GET, HEAD, PUT, PATCH, DELETE"},
        {SRV_POST | SRV_DELETE, "POST, DELETE"},
        {SRV_GET | SRV_PUT, "GET, HEAD, PUT"},
    };
    *status = 404;
    *allow = NULL;
    size_t plen = strlen(req->path);
    if (plen > 1 && req->path[plen - 1] == '/')
        plen--;
    unsigned other = 0;
    cp_error_t err = {0};
    for (size_t i = 0; i < srv_nroutes; i++) {
        const srv_route_t *rt = &srv_routes[i];
        /* Only decode parameters for the right method; others just count
         * toward 405. */
        req->nparams = 0;
        int m = match_one(req, rt->pattern, req->path, plen, &err);
        if (m < 0) {
            *status = 400;
            return -1;
        }
        if (m == 0)
            continue;
        if (rt->method == req->method)
            return (int)i;
        other |= rt->method;
    }
    req->nparams = 0;
    if (other != 0) {
        *status = 405;
        *allow = "GET, HEAD, POST, PUT, PATCH, DELETE";
        for (size_t i = 0; i < CP_ARRAY_LEN(allows); i++) {
            if (allows[i].mask == other)
                *allow = allows[i].text;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ dispatch */

static int needs_auth(const char *path)
{
    /* The bid route spends budget: it takes a key like /v1 (its notices
     * are open, their tokens are MACed: h_rtb.c). */
    return strncmp(path, "/v1/", 4) == 0 || strcmp(path, "/v1") == 0 ||
           strcmp(path, "/openrtb2/bid") == 0 || strcmp(path, "/openrtb2/nobid") == 0;
}

/* Grants req->role or replies 401. Returns 1 when the request may go on. */
static int authenticate(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    uint64_t nkeys = 0;
    cp_error_t err = {0};
    cp_status st = cp_key_count(srv->db, &nkeys, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return 0;
    }
    if (nkeys == 0) {
        /* No keys: the open mode meant for a laptop. server_run only
         * listens on loopback then, but a key revoked while running could
         * leave a public socket open, so check the peer too. */
        /* The Host check stops DNS rebinding: a web page whose name
         * resolves to 127.0.0.1 would otherwise drive this API from the
         * user's browser. Clients without a Host header (HTTP/1.0) pass. */
        if (req->client_loopback && (req->host == NULL || srv_host_is_loopback(req->host))) {
            req->role = CP_ROLE_ADMIN;
            return 1;
        }
        if (req->client_loopback) {
            srv_reply_error(resp, 401, "unauthorized", NULL,
                            "no API key is configured and the Host header \"%.100s\" is not a "
                            "loopback name; use http://127.0.0.1 or http://localhost, or create "
                            "a key with `crowdpack keys create --data DIR --role admin`",
                            req->host);
            return 0;
        }
        srv_reply_error(resp, 401, "unauthorized", NULL,
                        "no API key is configured, so only loopback clients are served; create "
                        "one with `crowdpack keys create --data DIR --role admin`");
        return 0;
    }
    char key[512];
    if (srv_auth_key(req->authorization, key, sizeof key) != CP_OK) {
        srv_reply_error(resp, 401, "unauthorized", NULL,
                        req->authorization == NULL
                            ? "missing API key: send \"Authorization: Bearer KEY\""
                            : "malformed Authorization header: expected \"Bearer KEY\" or "
                              "HTTP Basic with the key as user name");
        return 0;
    }
    cp_role role = 0;
    st = cp_key_check(srv->db, key, &role, &err);
    if (st != CP_OK) {
        if (st == CP_EAUTH || st == CP_ENOTFOUND)
            srv_reply_error(resp, 401, "unauthorized", NULL, "unknown or revoked API key");
        else
            srv_reply_cp(resp, st, &err, 0);
        return 0;
    }
    req->role = role;
    return 1;
}

static const char *role_name(int r)
{
    const char *n = r >= CP_ROLE_READ && r <= CP_ROLE_ADMIN ? cp_role_name((cp_role)r) : NULL;
    return n != NULL ? n : "none";
}

int srv_dispatch_head(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    req->route = -1;
    if (strlen(req->path) > SRV_MAX_URL_LEN) {
        srv_reply_error(resp, 414, "url_too_long", NULL, "URL: longer than %d bytes",
                        SRV_MAX_URL_LEN);
        return 0;
    }
    int allowed_origin = srv_origin_allowed(srv, req->origin);
    if (allowed_origin)
        resp->cors_origin = req->origin; /* echoed on every answer, errors too */
    if (req->method_name != NULL && strcmp(req->method_name, "OPTIONS") == 0 &&
        req->origin != NULL) {
        /* A CORS preflight carries no credentials: answer it before auth,
         * and only for the origins the operator listed. */
        if (!allowed_origin) {
            srv_reply_error(resp, 403, "forbidden_origin",
                            json_pack("{s:s}", "origin", req->origin),
                            "origin \"%.200s\" is not allowed; list it with `crowdpack serve "
                            "--allow-origin ORIGIN`",
                            req->origin);
            return 0;
        }
        srv_reply_text(resp, 204, NULL, NULL);
        resp->cors_preflight = 1;
        return 0;
    }
    if (needs_auth(req->path) && !authenticate(srv, req, resp))
        return 0;
    int status;
    const char *allow;
    int idx = srv_route_match(req, &status, &allow);
    if (idx < 0) {
        if (status == 405) {
            srv_reply_error(resp, 405, "method_not_allowed", NULL,
                            "%s %s: method not allowed here (allowed: %s)",
                            req->method_name != NULL ? req->method_name
                                                     : srv_method_name(req->method),
                            req->path, allow);
            resp->allow = allow;
        } else if (status == 400) {
            srv_reply_error(resp, 400, "invalid", NULL,
                            "URL %s: bad percent-escape in a path "
                            "segment",
                            req->path);
        } else {
            srv_reply_error(resp, 404, "route_not_found", NULL, "no such endpoint: %s %s",
                            req->method_name != NULL ? req->method_name
                                                     : srv_method_name(req->method),
                            req->path);
        }
        return 0;
    }
    req->route = idx;
    const srv_route_t *rt = &srv_routes[idx];
    if (rt->role != 0 && (int)req->role < rt->role) {
        srv_reply_error(resp, 403, "forbidden", NULL,
                        "%s %s needs a key with role \"%s\"; this key has role \"%s\"",
                        srv_method_name(req->method), rt->pattern, role_name(rt->role),
                        role_name((int)req->role));
        return 0;
    }
    return srv_cross_site_check(srv, req, resp);
}

void srv_dispatch(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    if (!srv_dispatch_head(srv, req, resp))
        return;
    if (srv_body_decode(req, resp, srv->max_body != 0 ? srv->max_body : SRV_DEFAULT_MAX_BODY) !=
        CP_OK)
        return;
    srv_routes[req->route].handler(srv, req, resp);
}
