/*
 * srv.h — the server's internal contract (server.h is the public one).
 *
 * The HTTP layer is split so that everything but the libmicrohttpd glue can
 * be unit-tested without sockets:
 *
 *   server.c    MHD daemon, body accumulation and limits, signals, port file
 *   router.c    route table, path matching, percent-decoding, auth, dispatch
 *   reply.c     responses, error bodies, cp_status -> HTTP status mapping
 *   body.c      request body checks: content type, JSON depth pre-scan, parse
 *   auth.c      Authorization header parsing (Bearer, Basic)
 *   listen.c    "HOST:PORT" parsing and loopback checks
 *   metrics.c   Prometheus counters and histograms
 *   export.c    pull-based streaming of crowd members (NDJSON, CSV)
 *   h_*.c       handlers, one file per resource
 *
 * A request lives in one srv_req_t whose arena holds every decoded string;
 * a handler fills one srv_resp_t. Neither knows about MHD.
 */
#ifndef CP_SRV_H
#define CP_SRV_H

#include <jansson.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "crowdpack.h"
#include "server/server.h"
#include "util/util.h"

/* ------------------------------------------------------------- limits */

#define SRV_DEFAULT_MAX_BODY (16u * 1024u * 1024u)
#define SRV_MAX_JSON_DEPTH 64
#define SRV_MAX_URL_LEN 8192
#define SRV_MAX_SAMPLE 100000
#define SRV_REQ_ARENA_MAX (1u << 20) /* decoded path/query strings */

/* ------------------------------------------------------------ requests */

typedef enum srv_method {
    SRV_GET = 1,
    SRV_POST = 2,
    SRV_PUT = 4,
    SRV_PATCH = 8,
    SRV_DELETE = 16,
    SRV_OTHER = 32,
} srv_method;

/* "GET" -> SRV_GET; HEAD is served as GET (MHD drops the body). */
srv_method srv_method_parse(const char *s);
const char *srv_method_name(srv_method m);

/* Returns the raw (still percent-encoded, '+' already a space) value of a
 * query argument or header, or NULL. Borrowed for the request. */
typedef const char *(*srv_lookup_fn)(void *ud, const char *key);

#define SRV_MAX_PARAMS 4

typedef struct srv_req {
    srv_method method;
    const char *path;          /* raw path without the query, e.g. "/v1/users/a%2Fb" */
    const char *content_type;  /* header or NULL */
    const char *authorization; /* header or NULL */
    const char *host;          /* Host header or NULL */
    const char *method_name;   /* as received, for messages; may be NULL */
    const char *body;          /* NUL-terminated; "" when none */
    size_t body_len;
    srv_lookup_fn query; /* may be NULL: no query arguments */
    void *query_ud;
    int client_loopback;          /* the peer is 127.0.0.0/8 or ::1 */
    const char *origin;           /* Origin header or NULL */
    const char *content_encoding; /* Content-Encoding header or NULL */
    char *inflated;               /* owned: the decoded body when it came compressed */

    /* Filled by the router. */
    int route;                          /* index into srv_routes, -1 unmatched */
    const char *params[SRV_MAX_PARAMS]; /* decoded path parameters (arena) */
    int nparams;
    cp_role role;  /* role granted to the caller */
    arena_t arena; /* per-request scratch; freed by srv_req_free */
} srv_req_t;

void srv_req_init(srv_req_t *req);
void srv_req_free(srv_req_t *req);

/*
 * Decoded value of query argument `key` into *out (arena) or NULL when
 * absent. CP_EINVAL on a bad %-escape or an embedded NUL.
 */
cp_status srv_query(srv_req_t *req, const char *key, const char **out, cp_error_t *err);

/* ----------------------------------------------------------- responses */

/* Pull-based body producer (export.c): fills buf with at most max bytes;
 * returns bytes written, 0 never, -1 at the end, -2 on error. */
typedef struct srv_stream srv_stream_t;
ssize_t srv_stream_read(srv_stream_t *s, char *buf, size_t max);
void srv_stream_free(srv_stream_t *s); /* NULL fine */

typedef struct srv_resp {
    int status;
    const char *content_type; /* static string */
    char *body;               /* owned; freed with body_free */
    size_t len;
    void (*body_free)(void *);
    srv_stream_t *stream;    /* owned; when set, body is unused */
    const char *allow;       /* Allow header for 405 (static) */
    const char *disposition; /* Content-Disposition (arena or static) */
    int www_authenticate;    /* add a WWW-Authenticate challenge (401) */
    const char *cors_origin; /* allow-listed Origin to echo in CORS headers (borrowed) */
    int cors_preflight;      /* add the preflight headers (OPTIONS) */
    const char *location;    /* Location header (3xx; arena or static) */
} srv_resp_t;

void srv_resp_init(srv_resp_t *r);
void srv_resp_free(srv_resp_t *r);

/* Takes ownership of `text` (freed with `fr`, e.g. cp_free). */
void srv_reply_text(srv_resp_t *r, int status, char *text, void (*fr)(void *));
/* Dumps `j` compactly and takes the reference (json_decref). */
void srv_reply_json(srv_resp_t *r, int status, json_t *j);

/* Error body {"error":{"code","message",...}}; `extra` (may be NULL) is an
 * object whose members are merged in (reference taken). */
void srv_reply_error(srv_resp_t *r, int status, const char *code, json_t *extra, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));

enum {
    /* ENOTFOUND refers to a name inside the request body (an expression,
     * a user record), not the URL's resource: answer 400, not 404. */
    SRV_ERR_BODY_REFS = 1u << 0,
};

/* HTTP status and slug for a cp_status (flags: SRV_ERR_*). */
int srv_status_http(cp_status st, unsigned flags);
const char *srv_status_slug(cp_status st, unsigned flags);
/* Replies with the error from the library, carrying line/column/record. */
void srv_reply_cp(srv_resp_t *r, cp_status st, const cp_error_t *err, unsigned flags);
/* Same with more members for the error object (reference taken; may be NULL). */
void srv_reply_cp_extra(srv_resp_t *r, cp_status st, const cp_error_t *err, unsigned flags,
                        json_t *extra);

/* -------------------------------------------------------------- bodies */

/*
 * Depth of JSON nesting in [s, s+len), counting brackets outside strings
 * (`per_line`: depth restarts at each newline, for NDJSON). Stops at the
 * first point where depth exceeds `max`: returns 1 and sets *offset to that
 * byte, else 0.
 */
int srv_json_too_deep(const char *s, size_t len, int max, int per_line, size_t *offset);
/* 1-based line and column of byte `offset` of s. */
void srv_text_position(const char *s, size_t offset, int *line, int *column);

/* 1 if the content type is JSON (application/json, text/json, anything+json).
 * An absent type is not JSON: browsers send bodies without a type, as
 * text/plain or as forms cross-origin without a CORS preflight, so only
 * JSON types are taken as a defence against cross-site requests. */
int srv_ctype_is_json(const char *ct);
/* 1 if the content type is NDJSON (application/x-ndjson, application/jsonl...). */
int srv_ctype_is_ndjson(const char *ct);

/*
 * Parses the request body as one JSON object: 415 for a non-JSON content
 * type, 400 for an empty body, too deep nesting, a syntax error (with
 * line/column) or a non-object. On failure the error reply is made and
 * *out is NULL. On success *out is a new reference.
 */
cp_status srv_body_object(srv_req_t *req, srv_resp_t *resp, json_t **out);

/*
 * Inflates [in, in+len) compressed with `encoding` ("gzip", "x-gzip",
 * "deflate" as zlib or raw deflate) into *out (malloc'd, NUL-terminated,
 * caller frees with free()). The bound `max` is applied while inflating: the
 * output never grows past max bytes, so a zip bomb costs at most max.
 * CP_ELIMIT when the inflated body is larger than max, CP_EINVAL for an
 * unknown encoding (message starts "unsupported") or corrupt / truncated
 * data (naming what and where), CP_ENOMEM.
 */
cp_status srv_inflate(const char *encoding, const char *in, size_t len, size_t max, char **out,
                      size_t *out_len, cp_error_t *err);

/*
 * Replaces the request body by its decoding when it has a Content-Encoding
 * (identity is no encoding). On failure the reply is made: 413 too_large past
 * `max`, 415 for an unknown coding, 400 malformed_compressed_body. The
 * decoded body is owned by req (freed by srv_req_free).
 */
cp_status srv_body_decode(srv_req_t *req, srv_resp_t *resp, size_t max);

/*
 * For handlers that pass the raw body to the library: after the library
 * refused it, checks whether it is well-formed JSON at all; if not, replies
 * 400 malformed_json with line, column and byte position (as
 * srv_body_object does) and returns 1. Only on error paths: it parses.
 */
int srv_reply_if_malformed(const srv_req_t *req, srv_resp_t *resp);

/*
 * Reads an optional string member: absent or null -> *out = NULL, CP_OK;
 * wrong type -> 400 reply naming the field, CP_EINVAL. Borrowed from obj.
 */
cp_status srv_field_str(json_t *obj, const char *field, srv_resp_t *resp, const char **out);
/* Same but the member is required. */
cp_status srv_field_str_req(json_t *obj, const char *field, srv_resp_t *resp, const char **out);

/* ----------------------------------------------------------------- auth */

/*
 * Extracts the API key from an Authorization header value: "Bearer KEY" or
 * "Basic base64(KEY:)" (Segment SDKs send the write key as the user name).
 * Writes a NUL-terminated key into buf. CP_EAUTH when absent or malformed.
 */
cp_status srv_auth_key(const char *header, char *buf, size_t cap);
/* Standard base64 decode; returns decoded length or -1. */
ssize_t srv_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* --------------------------------------------------------------- listen */

typedef struct srv_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int family; /* AF_INET or AF_INET6 */
    uint16_t port;
    char host[128]; /* as written, without brackets */
} srv_addr_t;

/* Parses "HOST:PORT", "[V6]:PORT" (numeric hosts, or names resolved with
 * getaddrinfo). CP_EINVAL naming the problem. */
cp_status srv_listen_parse(const char *spec, srv_addr_t *out, cp_error_t *err);
int srv_sockaddr_is_loopback(const struct sockaddr *sa);
/* 1 if a Host header names the loopback: localhost, *.localhost, 127.x.y.z
 * or [::1], with or without a port. */
int srv_host_is_loopback(const char *host);

/* ------------------------------------------------------------- percent */

/* Decodes %XX escapes of [s, s+n) into the arena. CP_EINVAL for a bad
 * escape, an embedded NUL or invalid UTF-8. */
cp_status srv_pct_decode(arena_t *a, const char *s, size_t n, const char **out, cp_error_t *err);

/* --------------------------------------------------------------- routes */

typedef struct srv_ctx srv_ctx_t;
typedef void (*srv_handler_fn)(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp);

typedef struct srv_route {
    srv_method method;
    const char *pattern; /* "/v1/users/{id}", "{x...}" = the rest (slashes kept) */
    srv_handler_fn handler;
    int role; /* 0 = open (no auth), else cp_role needed */
} srv_route_t;

extern const srv_route_t srv_routes[];
extern const size_t srv_nroutes;

/*
 * Finds the route for method + raw path. Returns the route index and fills
 * req->params (decoded), or -1 with *status 404 (no pattern matches) or 405
 * (a pattern matches another method; *allow lists those methods), or 400
 * for a bad %-escape in a parameter.
 */
int srv_route_match(srv_req_t *req, int *status, const char **allow);

/* Answers one request: auth, routing, handler. Never fails: errors are
 * replies. */
void srv_dispatch(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp);
/*
 * The part of srv_dispatch that needs only the request line and headers
 * (URL, CORS preflight, auth, route, role, cross-site rules). Returns 1
 * when the request may go on (req->route set), else 0 with the reply made.
 * For a client that sent "Expect: 100-continue" the server runs it as soon
 * as the headers are in, so a request that will be refused is answered
 * without a "100 Continue" first and its body is never sent.
 */
int srv_dispatch_head(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp);
/*
 * For the Segment endpoints (h_events.c): 1 with a 413 reply when an
 * uncompressed body declared `declared` bytes long is over their 500 KB
 * request limit, so an "Expect: 100-continue" client is refused before it
 * sends the body; else 0.
 */
int srv_intake_declared_too_large(int route, size_t declared, srv_resp_t *resp);

/* -------------------------------------------------------------- metrics */

#define SRV_NBUCKETS 12
#define SRV_NBID_BUCKETS 14
typedef struct srv_metrics {
    size_t nroutes;                /* routes + 1 for "unmatched" */
    _Atomic uint64_t *count;       /* [nroutes][SRV_NSTATUS] */
    _Atomic uint64_t *bucket;      /* [nroutes][SRV_NBUCKETS] cumulative at render */
    _Atomic uint64_t *sum_us;      /* [nroutes] */
    _Atomic uint64_t *total;       /* [nroutes] */
    _Atomic uint64_t cut_deadline; /* connections cut: request deadline passed */
    _Atomic uint64_t cut_stall;    /* streamed responses cut: the reader stalled */
    /* crowdpack_bid_seconds: bid handling inside the server (h_rtb.c), with
     * buckets below a millisecond, which the per-route histogram lacks. */
    _Atomic uint64_t bid_bucket[SRV_NBID_BUCKETS];
    _Atomic uint64_t bid_sum_ns;
} srv_metrics_t;

cp_status srv_metrics_init(srv_metrics_t *m, size_t nroutes);
void srv_metrics_free(srv_metrics_t *m);
/* route = -1 for unmatched */
void srv_metrics_observe(srv_metrics_t *m, int route, int status, uint64_t ns);
/* One bid request handled in `ns` (crowdpack_bid_seconds). */
void srv_metrics_bid_observe(srv_metrics_t *m, uint64_t ns);
/* Renders Prometheus text (0.0.4) including db gauges. Caller frees *out with free(). */
cp_status srv_metrics_render(srv_metrics_t *m, cp_db_t *db, char **out, size_t *len);

/* -------------------------------------------------------------- context */

struct srv_ctx {
    cp_db_t *db;
    size_t max_body;
    srv_metrics_t metrics;
    const char *const *allow_origins; /* borrowed from the options */
    size_t nallow_origins;
    cp_activate_t *act; /* borrowed from the options; NULL: no bidder */
};

/* --------------------------------------------------------- cross-site */

/* 1 if `origin` is in the allow-list (scheme and host compared
 * case-insensitively, a trailing slash ignored). */
int srv_origin_allowed(const srv_ctx_t *srv, const char *origin);
/* Checks an --allow-origin value: "scheme://host[:port]", no path. */
cp_status srv_origin_parse_check(const char *origin, cp_error_t *err);
/*
 * The cross-site rules for state-changing methods (POST, PUT, PATCH,
 * DELETE): a foreign Origin is refused (403 forbidden_origin) unless
 * allow-listed; a request without a Bearer key must say Content-Type JSON
 * (or NDJSON) or carry a Content-Encoding (415 unsupported_media_type).
 * Returns 1 when the request may go on, else 0 with the reply made.
 */
int srv_cross_site_check(const srv_ctx_t *srv, const srv_req_t *req, srv_resp_t *resp);

/* -------------------------------------------------------------- exports */

/* Opens a stream of the members of crowd `name` (a snapshot taken now). */
/* Adds {"warnings": [...]} of cp_expr_warnings_json to a count answer
 * (taken) when there are any; NULL on ENOMEM. */
json_t *srv_with_warnings(cp_db_t *db, const char *text, const char *tree, json_t *answer);

/* Plain text ids, one per line (beside cp_export_format's values). */
#define SRV_FORMAT_TEXT 100
/* A stream over `result` (taken: freed with the stream, also on error) in
 * format `fmt` (cp_export_format or SRV_FORMAT_TEXT), at most `limit` ids. */
cp_status srv_result_stream_open(cp_db_t *db, cp_result_t *result, int fmt, uint64_t limit,
                                 srv_stream_t **out, cp_error_t *err);
cp_status srv_export_open(cp_db_t *db, const char *name, cp_export_format fmt, srv_stream_t **out,
                          cp_error_t *err);
/* Appends s as a JSON string literal / a CSV field (quoted when needed). */
cp_status srv_json_quote(buf_t *b, const char *s);
cp_status srv_csv_field(buf_t *b, const char *s);

/* ------------------------------------------------------------- handlers */

void srv_h_healthz(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_stats(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_readyz(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_metrics(srv_ctx_t *, srv_req_t *, srv_resp_t *);

void srv_h_tags_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tags_create(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tag_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tag_patch(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tag_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_taxonomy_load(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_attrs_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_attrs_create(srv_ctx_t *, srv_req_t *, srv_resp_t *);

void srv_h_users_load(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_user_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_user_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_user_tags_remove(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_user_tag_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);

void srv_h_crowds_estimate(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowds_create(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowds_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_update(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_refresh(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_history(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_schedule(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_sample(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_crowd_export(srv_ctx_t *, srv_req_t *, srv_resp_t *);
/* h_campaigns.c: /v1/campaigns (docs/activation.md) */
void srv_h_campaigns_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_campaign_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_campaign_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_campaign_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_campaign_history(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_campaign_delivery(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_contact_cap_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_contact_cap_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_eval(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_expr_parse(srv_ctx_t *, srv_req_t *, srv_resp_t *);

/* h_analytics.c */
void srv_h_insight(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_overlap(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_clusters(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tiers_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tiers_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_tiers_nudge(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_analytics_settings_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_analytics_settings_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);

/* h_value.c */
void srv_h_measures_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_measures_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rfm(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rfm_schedule_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rfm_schedule_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_aipl(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_funnels(srv_ctx_t *, srv_req_t *, srv_resp_t *);

void srv_h_keys_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_keys_create(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_key_delete(srv_ctx_t *, srv_req_t *, srv_resp_t *);

/* h_events.c */
void srv_h_ev_identify(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_track(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_page(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_screen(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_group(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_alias(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_ev_batch(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_whois(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_unmerge(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_user_delete_ident(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_properties(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_events_list(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_intake_config_get(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_intake_config_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_count_as_of(srv_ctx_t *, srv_req_t *, srv_resp_t *);

/* h_tags.c (attribute values and aliases) */
void srv_h_attr_values(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_attr_aliases_put(srv_ctx_t *, srv_req_t *, srv_resp_t *);

/* Builds the expression text of a set operation over crowds:
 * union -> "crowd:a OR crowd:b", intersect -> AND, difference -> "crowd:a
 * AND NOT crowd:b AND NOT crowd:c". Names are checked against the crowd
 * name alphabet. Caller frees *out with free(). */
cp_status srv_setop_expr(const char *op, const char *const *names, size_t n, char **out,
                         cp_error_t *err);

/* h_rtb.c: the OpenRTB bidder and its notices (docs/activation.md) */
void srv_h_rtb_bid(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_win(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_bill(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_loss(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_imp(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_click(srv_ctx_t *, srv_req_t *, srv_resp_t *);
void srv_h_rtb_nobid(srv_ctx_t *, srv_req_t *, srv_resp_t *);

#endif /* CP_SRV_H */
