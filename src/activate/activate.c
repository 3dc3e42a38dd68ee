/*
 * activate.c — the activation handle (include/crowdpack.h, "activation"):
 * the campaign registry, the materialised targeting and the ledger over one
 * cp_db_t, the housekeeping thread, and the public cp_campaign_* and
 * cp_rtb_* functions, which are thin wrappers over registry.c, bid.c and
 * ledger.c.
 *
 * Order of opening: registry (campaigns), ledger (journal replayed),
 * targeting (subscribes to the change feed, then materialises the current
 * campaigns), then the registry's listener, then housekeeping. Closing runs
 * the other way, so no callback ever sees a half-closed handle.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "activate/bid.h"
#include "util/util.h"

#define DEFAULT_NOTICE_BASE "http://127.0.0.1:8080"
#define DEFAULT_SEAT "crowdpack"
#define DEFAULT_REFRESH_MS 1000
#define TICK_MS 1000

struct cp_activate {
    cp_db_t *db; /* borrowed */
    registry_t *reg;
    ledger_t *ledger;
    target_t *target;
    bidder_t bidder;
    char *notice_base;
    char *seat;
    unsigned flags;

    /* Housekeeping (absent with CP_ACTIVATE_MANUAL_TICK). */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop; /* under mu */
};

/* The registry calls this after every put/delete, on the writer's thread:
 * targeting follows the new campaigns before the put returns, so a bid
 * request sent after a 200 from PUT /v1/campaigns/ID sees them. A failed
 * rebuild keeps the previous view (the next change or tick retries). */
static void on_campaigns(void *ctx, act_snapshot_t *s)
{
    cp_activate_t *a = ctx;
    cp_error_t err = {0};
    (void)target_rebuild(a->target, s, &err);
}

cp_status cp_activate_tick(cp_activate_t *a, int64_t now_ms, cp_error_t *err)
{
    if (a == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_activate_tick: NULL handle");
    if (now_ms == 0)
        now_ms = time_now_ms();
    act_snapshot_t *s = registry_snapshot(a->reg);
    ledger_tick(a->ledger, s, now_ms);
    snapshot_release(s);
    return target_tick(a->target, now_ms, err);
}

static void *housekeeping(void *arg)
{
    cp_activate_t *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += TICK_MS / 1000;
        while (!a->stop && pthread_cond_timedwait(&a->cv, &a->mu, &ts) != ETIMEDOUT)
            ;
        if (a->stop)
            break;
        pthread_mutex_unlock(&a->mu);
        cp_error_t err = {0};
        (void)cp_activate_tick(a, 0, &err); /* retried at the next tick */
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static cp_status mkdir_private(const char *dir, cp_error_t *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return CP_ERR(err, CP_EIO, "activation directory %s: cannot create: %s", dir,
                      strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return CP_ERR(err, CP_EIO, "activation directory %s: not a directory", dir);
    return CP_OK;
}

cp_status cp_activate_open(cp_db_t *db, const char *dir, const cp_activate_options_t *opts,
                           cp_activate_t **out, cp_error_t *err)
{
    cp_status st = CP_OK;
    cp_activate_t *a = NULL;
    act_snapshot_t *s = NULL;
    cp_activate_options_t o = CP_ACTIVATE_OPTIONS_INIT;
    if (out == NULL || db == NULL || dir == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_activate_open: NULL db, dir or out");
    *out = NULL;
    if (opts &&
        (st = sized_in(&o, sizeof o, opts, CP_SIZE_THROUGH(cp_activate_options_t, refresh_ms),
                       "cp_activate_options_t", err)))
        return st;
    if (o.flags & ~(unsigned)CP_ACTIVATE_MANUAL_TICK)
        return CP_ERR(err, CP_EINVAL, "cp_activate_open: unknown flags 0x%x", o.flags);
    if (o.refresh_ms < 0)
        return CP_ERR(err, CP_EINVAL, "cp_activate_open: refresh_ms must not be negative");
    if ((st = mkdir_private(dir, err)))
        return st;

    a = calloc(1, sizeof *a);
    if (a == NULL)
        return CP_ERR(err, CP_ENOMEM, "cp_activate_open: out of memory");
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    a->db = db;
    a->flags = o.flags;
    a->notice_base = strdup(o.notice_base ? o.notice_base : DEFAULT_NOTICE_BASE);
    a->seat = strdup(o.seat ? o.seat : DEFAULT_SEAT);
    if (a->notice_base == NULL || a->seat == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "cp_activate_open: out of memory");
        goto out;
    }
    /* A trailing slash would double in "BASE/openrtb2/win". */
    size_t nb = strlen(a->notice_base);
    while (nb > 0 && a->notice_base[nb - 1] == '/')
        a->notice_base[--nb] = '\0';

    if ((st = registry_open(dir, &a->reg, err)))
        goto out;
    if ((st = ledger_open(dir, db, &a->ledger, err)))
        goto out;
    if ((st = target_open(db, o.refresh_ms ? o.refresh_ms : DEFAULT_REFRESH_MS, &a->target, err)))
        goto out;
    s = registry_snapshot(a->reg);
    if ((st = target_rebuild(a->target, s, err)))
        goto out;
    registry_listen(a->reg, on_campaigns, a);

    a->bidder = (bidder_t){.db = db,
                           .reg = a->reg,
                           .target = a->target,
                           .ledger = a->ledger,
                           .notice_base = a->notice_base,
                           .seat = a->seat};

    if (!(a->flags & CP_ACTIVATE_MANUAL_TICK)) {
        if (pthread_create(&a->thread, NULL, housekeeping, a) != 0) {
            st = CP_ERR(err, CP_ENOMEM, "cp_activate_open: cannot start the housekeeping thread");
            goto out;
        }
        a->thread_started = 1;
    }
    *out = a;
    a = NULL;
out:
    snapshot_release(s);
    if (a)
        (void)cp_activate_close(a, NULL);
    return st;
}

cp_status cp_activate_close(cp_activate_t *a, cp_error_t *err)
{
    if (a == NULL)
        return CP_OK;
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
    }
    if (a->reg)
        registry_listen(a->reg, NULL, NULL);
    /* Targeting first: it unsubscribes from the feed, so no callback runs
     * while the rest closes. The ledger makes its journal durable. */
    target_close(a->target);
    ledger_close(a->ledger);
    registry_close(a->reg);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a->notice_base);
    free(a->seat);
    free(a);
    CP_UNUSED(err);
    return CP_OK;
}

/* ------------------------------------------------------------ campaigns */

cp_status cp_campaign_put_json(cp_activate_t *a, const char *id, const char *json, size_t len,
                               uint64_t *version, cp_error_t *err)
{
    if (a == NULL || json == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaign_put_json: NULL handle or document");
    return registry_put(a->reg, a->db, id, json, len, time_now_ms(), version, err);
}

cp_status cp_campaign_delete(cp_activate_t *a, const char *id, cp_error_t *err)
{
    if (a == NULL || id == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaign_delete: NULL handle or id");
    return registry_delete(a->reg, id, time_now_ms(), err);
}

cp_status cp_campaign_json(cp_activate_t *a, const char *id, char **out, cp_error_t *err)
{
    if (a == NULL || id == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaign_json: NULL handle, id or out");
    return registry_get_json(a->reg, id, out, err);
}

cp_status cp_campaigns_json(cp_activate_t *a, char **out, cp_error_t *err)
{
    if (a == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaigns_json: NULL handle or out");
    return registry_list_json(a->reg, out, err);
}

cp_status cp_campaign_history_json(cp_activate_t *a, const char *id, char **out, cp_error_t *err)
{
    if (a == NULL || id == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaign_history_json: NULL handle, id or out");
    return registry_history_json(a->reg, id, out, err);
}

cp_status cp_campaign_delivery_json(cp_activate_t *a, const char *id, int64_t now_ms, char **out,
                                    cp_error_t *err)
{
    if (a == NULL || id == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_campaign_delivery_json: NULL handle, id or out");
    *out = NULL;
    if (now_ms == 0)
        now_ms = time_now_ms();
    cp_status st;
    act_snapshot_t *s = registry_snapshot(a->reg);
    const act_campaign_t *c = NULL;
    for (size_t i = 0; i < s->ncampaigns && c == NULL; i++) {
        if (strcmp(s->campaigns[i]->id, id) == 0)
            c = s->campaigns[i];
    }
    if (c == NULL)
        st = CP_ERR(err, CP_ENOTFOUND, "campaign \"%s\" not found", id);
    else
        st = ledger_delivery_json(a->ledger, c, now_ms, out, err);
    snapshot_release(s);
    return st;
}

/* ---------------------------------------------------------- contact cap */

static const char *const period_names[] = {NULL, "hour", "day", "week", "lifetime"};

cp_status cp_contact_cap_json(cp_activate_t *a, char **out, cp_error_t *err)
{
    if (a == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_contact_cap_json: NULL handle or out");
    uint32_t count;
    act_period per;
    ledger_contact_cap_get(a->ledger, &count, &per);
    if (per < ACT_PER_HOUR || per > ACT_PER_LIFETIME)
        per = ACT_PER_DAY;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"count\":%u,\"per\":\"%s\"}", count, period_names[per]);
    if ((*out = malloc((size_t)n + 1)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    memcpy(*out, buf, (size_t)n + 1);
    return CP_OK;
}

cp_status cp_contact_cap_set_json(cp_activate_t *a, const char *json, size_t len, cp_error_t *err)
{
    if (a == NULL || json == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_contact_cap_set_json: NULL handle or document");
    json_error_t je;
    json_t *doc = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    cp_status st = CP_OK;
    if (doc == NULL)
        return CP_ERR(err, CP_EINVAL, "contact cap: not JSON (%s at line %d)", je.text, je.line);
    const char *key;
    json_t *v;
    json_t *count = json_object_get(doc, "count"), *per = json_object_get(doc, "per");
    act_period p = ACT_PER_DAY;
    if (!json_is_object(doc)) {
        st = CP_ERR(err, CP_EINVAL, "contact cap: must be an object {\"count\":N,\"per\":\"day\"}");
        goto out;
    }
    json_object_foreach(doc, key, v)
    {
        if (strcmp(key, "count") != 0 && strcmp(key, "per") != 0) {
            st = CP_ERR(err, CP_EINVAL, "contact cap: unknown field \"%s\" (known: count, per)",
                        key);
            goto out;
        }
    }
    if (!json_is_integer(count) || json_integer_value(count) < 0 ||
        json_integer_value(count) > 1000000) {
        st = CP_ERR(err, CP_EINVAL, "count: must be an integer 0..1000000 (0 = no contact cap)");
        goto out;
    }
    if (per != NULL) {
        const char *name = json_string_value(per);
        p = 0;
        for (int i = ACT_PER_HOUR; name != NULL && i <= ACT_PER_LIFETIME; i++) {
            if (strcmp(name, period_names[i]) == 0)
                p = (act_period)i;
        }
        if (p == 0) {
            st = CP_ERR(err, CP_EINVAL, "per: must be \"hour\", \"day\", \"week\" or \"lifetime\"");
            goto out;
        }
    }
    st = ledger_contact_cap_set(a->ledger, (uint32_t)json_integer_value(count), p, err);
out:
    json_decref(doc);
    return st;
}

/* ------------------------------------------------------------------ rtb */

cp_status cp_rtb_bid(cp_activate_t *a, const char *body, size_t len, int64_t now_ms, unsigned flags,
                     cp_bid_reply_t *out, cp_error_t *err)
{
    cp_status st;
    if (a == NULL || out == NULL || (body == NULL && len > 0))
        return CP_ERR(err, CP_EINVAL, "cp_rtb_bid: NULL handle, body or reply");
    if ((st = sized_out_check(out, CP_SIZE_THROUGH(cp_bid_reply_t, len), "cp_bid_reply_t", err)))
        return st;
    if (flags & ~(unsigned)CP_BID_DEBUG)
        return CP_ERR(err, CP_EINVAL, "cp_rtb_bid: unknown flags 0x%x", flags);
    if (now_ms == 0)
        now_ms = time_now_ms();
    cp_bid_reply_t r = CP_BID_REPLY_INIT;
    buf_t b;
    buf_init(&b, 0);
    int status = 204;
    st = bid_request(&a->bidder, body ? body : "", len, now_ms, (flags & CP_BID_DEBUG) != 0,
                     &status, &b, err);
    if (st == CP_OK) {
        r.status = status;
        if (b.len > 0) {
            /* The buffer's bytes are malloc'd: hand them over (cp_free is free). */
            buf_cstr(&b);
            r.body = b.data;
            r.len = b.len;
            b.data = NULL;
        }
    }
    buf_free(&b);
    sized_out(out, &r, sizeof r);
    return st;
}

cp_status cp_rtb_notice(cp_activate_t *a, cp_notice_kind kind, const char *token, const char *price,
                        int loss_reason, int64_t now_ms, int *duplicate, cp_error_t *err)
{
    if (duplicate)
        *duplicate = 0;
    if (a == NULL || token == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_rtb_notice: NULL handle or token");
    if (kind < CP_NOTICE_WIN || kind > CP_NOTICE_CLICK)
        return CP_ERR(err, CP_EINVAL, "cp_rtb_notice: unknown notice kind %d", (int)kind);
    if (now_ms == 0)
        now_ms = time_now_ms();
    ledger_notice_result_t res;
    memset(&res, 0, sizeof res);
    cp_status st = ledger_notice(a->ledger, (ledger_notice_kind)kind, token, price, loss_reason,
                                 now_ms, &res, err);
    if (st == CP_OK && duplicate)
        *duplicate = res.duplicate;
    return st;
}

/* The host of an http(s) URL, [*host, *host + *n), or 0. */
static int url_host(const char *url, const char **host, size_t *n)
{
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else
        return 0;
    size_t k = strcspn(p, "/?#:@\\");
    if (k == 0 || p[k] == '@' || p[k] == '\\')
        return 0; /* userinfo or a backslash: browsers disagree on the host */
    *host = p;
    *n = k;
    return 1;
}

/* Host [h, h+n) is `dom` or a subdomain of it. */
static int host_in_domain(const char *h, size_t n, const char *dom)
{
    size_t nd = strlen(dom);
    if (n < nd || strncasecmp(h + n - nd, dom, nd) != 0)
        return 0;
    return n == nd || h[n - nd - 1] == '.';
}

cp_status cp_rtb_click(cp_activate_t *a, const char *token, const char *url, int64_t now_ms,
                       int *duplicate, char **location, cp_error_t *err)
{
    if (duplicate)
        *duplicate = 0;
    if (location == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_rtb_click: NULL location");
    *location = NULL;
    if (a == NULL || token == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_rtb_click: NULL handle or token");
    if (now_ms == 0)
        now_ms = time_now_ms();
    ledger_notice_result_t res;
    memset(&res, 0, sizeof res);
    cp_status st = ledger_notice(a->ledger, LEDGER_CLICK, token, NULL, 0, now_ms, &res, err);
    if (st != CP_OK)
        return st;
    if (duplicate)
        *duplicate = res.duplicate;
    act_snapshot_t *s = registry_snapshot(a->reg);
    const act_line_t *line = NULL;
    for (size_t i = 0; i < s->nlines && line == NULL; i++) {
        if (strcmp(s->lines[i]->id, res.line_id) == 0 &&
            strcmp(s->lines[i]->campaign->id, res.campaign_id) == 0)
            line = s->lines[i];
    }
    const char *h;
    size_t hn;
    if (line && url && url_host(url, &h, &hn)) {
        for (size_t c = 0; c < line->ncreatives && *location == NULL; c++) {
            const act_creative_t *cr = &line->creatives[c];
            for (size_t d = 0; d < cr->nadomain && *location == NULL; d++) {
                if (host_in_domain(h, hn, cr->adomain[d]) && (*location = strdup(url)) == NULL)
                    st = CP_ERR(err, CP_ENOMEM, "cp_rtb_click: out of memory");
            }
        }
    }
    if (st == CP_OK && line && *location == NULL && line->ncreatives > 0 &&
        line->creatives[0].nadomain > 0) {
        size_t n = strlen(line->creatives[0].adomain[0]) + 10;
        if ((*location = malloc(n)) == NULL)
            st = CP_ERR(err, CP_ENOMEM, "cp_rtb_click: out of memory");
        else
            snprintf(*location, n, "https://%s/", line->creatives[0].adomain[0]);
    }
    snapshot_release(s);
    return st;
}
