/*
 * client.c — the CLI's --server mode: HTTP calls to a running
 * `crowdpack serve` with libcurl. Answers are bounded in size (except
 * streamed exports), errors in the API's {"error":{"code","message"}}
 * shape become a cp_status with the server's message.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"

#define CLIENT_MAX_ANSWER (256u << 20) /* JSON answers; exports stream */

struct cli_client {
    CURL *h;
    char *base;              /* without a trailing slash */
    struct curl_slist *auth; /* "Authorization: Bearer KEY" or NULL */
};

cp_status client_open(const char *url, const char *key, cli_client_t **out, cp_error_t *err)
{
    cli_client_t *c = NULL;
    cp_status st = CP_OK;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        st = CP_ERR(err, CP_EINVAL, "--server: expected an http:// or https:// URL, got \"%s\"",
                    url);
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        st = CP_ERR(err, CP_EINTERNAL, "libcurl failed to initialise");
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (!c || !(c->base = strdup(url)) || !(c->h = curl_easy_init())) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    size_t n = strlen(c->base);
    while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = 0;
    if (key && *key) {
        char hdr[1024];
        if (strlen(key) > 900) {
            st = CP_ERR(err, CP_ELIMIT, "--key: longer than 900 characters");
            goto out;
        }
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", key);
        c->auth = curl_slist_append(NULL, hdr);
        if (!c->auth) {
            st = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
    }
    *out = c;
    c = NULL;
out:
    client_close(c);
    return st;
}

void client_close(cli_client_t *c)
{
    if (!c)
        return;
    if (c->h)
        curl_easy_cleanup(c->h);
    curl_slist_free_all(c->auth);
    free(c->base);
    free(c);
}

char *client_escape(const char *s)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    char *e = curl_easy_escape(h, s, 0);
    char *r = e ? strdup(e) : NULL;
    curl_free(e);
    curl_easy_cleanup(h);
    return r;
}

/* ------------------------------------------------------------ plumbing */

typedef struct sink {
    buf_t body;        /* the answer when not streaming, or an error body */
    cp_write_fn write; /* streaming target for 2xx answers */
    void *ud;
    CURL *h;
    int stopped; /* the streaming target refused more */
} sink_t;

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    sink_t *s = ud;
    size_t n = sz * nm;
    long code = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
    if (s->write && code >= 200 && code < 300) {
        if (s->write(s->ud, p, n) != 0) {
            s->stopped = 1;
            return 0;
        }
        return n;
    }
    if (buf_append(&s->body, p, n) != CP_OK)
        return 0;
    return n;
}

static cp_status code_from_name(const char *s)
{
    /* The server's slugs (src/server/reply.c) and a few plain spellings. */
    static const struct {
        const char *name;
        cp_status st;
    } names[] = {
        {"out_of_memory", CP_ENOMEM},
        {"nomem", CP_ENOMEM},
        {"invalid", CP_EINVAL},
        {"bad_request", CP_EINVAL},
        {"missing_field", CP_EINVAL},
        {"unsupported_media_type", CP_EINVAL},
        {"not_found", CP_ENOTFOUND},
        {"unknown_reference", CP_ENOTFOUND},
        {"exists", CP_EEXIST},
        {"syntax_error", CP_ESYNTAX},
        {"syntax", CP_ESYNTAX},
        {"wrong_type", CP_ETYPE},
        {"type", CP_ETYPE},
        {"locked", CP_ELOCKED},
        {"incompatible_version", CP_EVERSION},
        {"version", CP_EVERSION},
        {"storage_error", CP_EIO},
        {"io", CP_EIO},
        {"too_large", CP_ELIMIT},
        {"limit", CP_ELIMIT},
        {"json_too_deep", CP_ELIMIT},
        {"expression_too_long", CP_ELIMIT},
        {"cycle", CP_ECYCLE},
        {"conflict", CP_ECONFLICT},
        {"unauthorized", CP_EAUTH},
        {"auth", CP_EAUTH},
        {"forbidden", CP_EPERM},
        {"perm", CP_EPERM},
        {"read_only", CP_EREADONLY},
        {"readonly", CP_EREADONLY},
        {"internal", CP_EINTERNAL},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(names); i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].st;
    /* Accept the enum spellings too ("ENOTFOUND", "CP_ENOTFOUND"). */
    if (strncasecmp(s, "CP_", 3) == 0)
        s += 3;
    if (s[0] == 'E' || s[0] == 'e')
        for (size_t i = 0; i < CP_ARRAY_LEN(names); i++)
            if (strcasecmp(s + 1, names[i].name) == 0)
                return names[i].st;
    return CP_EINTERNAL;
}

static cp_status code_from_http(long http)
{
    switch (http) {
    case 400:
        return CP_EINVAL;
    case 401:
        return CP_EAUTH;
    case 403:
        return CP_EPERM;
    case 404:
        return CP_ENOTFOUND;
    case 409:
        return CP_ECONFLICT;
    case 413:
        return CP_ELIMIT;
    case 423:
        return CP_ELOCKED;
    case 503:
        return CP_EIO;
    default:
        return http >= 500 ? CP_EINTERNAL : CP_EINVAL;
    }
}

/* Turns a non-2xx answer into an error with the server's words. */
static cp_status answer_error(long http, const char *body, size_t len, const char *method,
                              const char *path, cp_error_t *err)
{
    cp_status st = code_from_http(http);
    json_error_t je;
    json_t *j = json_loadb(body, len, 0, &je);
    json_t *e = j ? json_object_get(j, "error") : NULL;
    const char *msg = NULL;
    int line = 0, col = 0;
    uint64_t record = 0;
    if (json_is_object(e)) {
        json_t *code = json_object_get(e, "code");
        if (json_is_string(code)) {
            cp_status named = code_from_name(json_string_value(code));
            if (named != CP_EINTERNAL || http >= 500)
                st = named;
        } else if (json_is_integer(code) && json_integer_value(code) > 0 &&
                   json_integer_value(code) <= CP_EINTERNAL) {
            st = (cp_status)json_integer_value(code);
        }
        msg = json_string_value(json_object_get(e, "message"));
        line = (int)json_integer_value(json_object_get(e, "line"));
        col = (int)json_integer_value(json_object_get(e, "column"));
        record = (uint64_t)json_integer_value(json_object_get(e, "record"));
    } else if (json_is_string(e)) {
        msg = json_string_value(e);
    }
    if (msg)
        CP_ERR_AT(err, st, line, col, "%s", msg);
    else
        CP_ERR(err, st, "server answered HTTP %ld to %s %s%s%.*s", http, method, path,
               len ? ": " : "", (int)(len > 200 ? 200 : len), body);
    if (err)
        err->record = record;
    json_decref(j);
    return st;
}

static cp_status perform(cli_client_t *c, const char *method, const char *path,
                         struct curl_slist *hdrs, sink_t *s, const char *body, size_t len,
                         cp_error_t *err)
{
    CURL *h = c->h;
    cp_status st = CP_OK;
    char *url = NULL;
    size_t ulen = strlen(c->base) + strlen(path) + 1;
    url = malloc(ulen);
    if (!url)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    snprintf(url, ulen, "%s%s", c->base, path);

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "crowdpack-cli/" CP_VERSION_STRING);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    s->h = h;
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    else if (strcmp(method, "POST") == 0 && !body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }

    CURLcode rc = curl_easy_perform(h);
    long http = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    if (rc != CURLE_OK) {
        if (s->stopped)
            st = CP_ERR(err, CP_EIO, "output closed");
        else if (rc == CURLE_WRITE_ERROR && s->body.len >= CLIENT_MAX_ANSWER)
            st = CP_ERR(err, CP_ELIMIT, "answer of %s %s is larger than %u bytes", method, path,
                        CLIENT_MAX_ANSWER);
        else
            st = CP_ERR(err, CP_EIO, "%s %s: %s", method, url, curl_easy_strerror(rc));
        goto out;
    }
    if (http < 200 || http >= 300)
        st = answer_error(http, s->body.data ? s->body.data : "", s->body.len, method, path, err);
out:
    free(url);
    return st;
}

static struct curl_slist *headers(cli_client_t *c, const char *ctype, int *oom)
{
    struct curl_slist *h = NULL, *t;
    *oom = 0;
    for (struct curl_slist *a = c->auth; a; a = a->next) {
        if (!(t = curl_slist_append(h, a->data)))
            goto fail;
        h = t;
    }
    if (ctype) {
        char line[128];
        snprintf(line, sizeof line, "Content-Type: %s", ctype);
        if (!(t = curl_slist_append(h, line)))
            goto fail;
        h = t;
    }
    if (!(t = curl_slist_append(h, "Accept: application/json")))
        goto fail;
    return t;
fail:
    curl_slist_free_all(h);
    *oom = 1;
    return NULL;
}

cp_status client_call(cli_client_t *c, const char *method, const char *path, const char *ctype,
                      const char *body, size_t len, char **resp, cp_error_t *err)
{
    sink_t s = {0};
    int oom;
    buf_init(&s.body, CLIENT_MAX_ANSWER);
    /* Servers without keys refuse state-changing requests that do not say
     * JSON (a cross-site defence, docs/api.md), body-less ones too. */
    int typed = body != NULL || strcmp(method, "GET") != 0;
    struct curl_slist *h = headers(c, typed ? (ctype ? ctype : "application/json") : NULL, &oom);
    cp_status st = oom ? CP_ERR(err, CP_ENOMEM, "out of memory")
                       : perform(c, method, path, h, &s, body, len, err);
    if (st == CP_OK && resp) {
        *resp = strdup(buf_cstr(&s.body) ? buf_cstr(&s.body) : "");
        if (!*resp)
            st = CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    curl_slist_free_all(h);
    buf_free(&s.body);
    return st;
}

cp_status client_call_json(cli_client_t *c, const char *method, const char *path, json_t *body,
                           char **resp, cp_error_t *err)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (body && !text)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status st =
        client_call(c, method, path, "application/json", text, text ? strlen(text) : 0, resp, err);
    free(text);
    return st;
}

cp_status client_stream(cli_client_t *c, const char *method, const char *path, const char *body,
                        size_t len, cp_write_fn write, void *ud, cp_error_t *err)
{
    sink_t s = {0};
    int oom;
    buf_init(&s.body, 1u << 20);
    s.write = write;
    s.ud = ud;
    struct curl_slist *h = headers(c, body ? "application/json" : NULL, &oom);
    cp_status st = oom ? CP_ERR(err, CP_ENOMEM, "out of memory")
                       : perform(c, method, path, h, &s, body, len, err);
    curl_slist_free_all(h);
    buf_free(&s.body);
    return st;
}
