/*
 * notice.c — notice tokens and the notices that settle bids: win (nurl),
 * billing (burl), loss (lurl), the impression pixel and the click
 * redirect (docs/activation.md "Notices").
 *
 * A token is everything a notice needs to settle its bid without a lookup:
 * the bid's ids, person, identifier, time, its local period starts, price,
 * premium factor and crowds, and the reservation. It is binary (varints and
 * length-prefixed strings), followed by the first 16 bytes of its
 * HMAC-SHA512-256 (libsodium crypto_auth) under the key in DIR/notice.key,
 * and written base64url without padding: at most LEDGER_TOKEN_MAX - 1
 * characters, safe in a URL path or query. A 128-bit truncated MAC is what
 * RFC 2104 section 5 allows (at least half the hash): forging one takes
 * 2^128 tries. A token that does not fit (very long ids) first loses its
 * identifier (no user event for that bid), then is refused (CP_ELIMIT).
 *
 * Each (auction id, imp id, kind) is recorded once: the dedup table (one
 * 16-byte entry per auction and imp, with a bit per kind seen) is rebuilt
 * from the journal and its snapshot at open, and keeps entries
 * LEDGER_DEDUP_WINDOW_MS (24 h) after the bid. A notice for an older bid
 * is refused as expired, so no repeat, however late, is counted twice.
 *
 * Impressions and clicks are also sent to the engine as Segment track
 * events of the person (event "impression"/"click", properties campaign,
 * line, creative, price; messageId "AUCTION:IMP:KIND" so intake drops a
 * repeat too) from a queue drained by one thread: the notice never waits
 * for intake, and a refused or dropped event is counted, not retried.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activate/ledger_int.h"
#include "util/util.h"

/* ------------------------------------------------------------------ key */

cp_status notice_key_load(ledger_t *l, cp_error_t *err)
{
    char path[4096];
    cp_status rc = CP_OK;
    int fd = -1;
    if (sodium_init() < 0)
        return CP_ERR(err, CP_EINTERNAL, "libsodium failed to initialise");
    snprintf(path, sizeof path, "%s/notice.key", l->dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, l->key, sizeof l->key);
        if (n != (ssize_t)sizeof l->key)
            rc = CP_ERR(err, CP_ECORRUPT, "notice key %s: expected %zu bytes, read %zd", path,
                        sizeof l->key, n);
        goto out;
    }
    if (errno != ENOENT) {
        rc = CP_ERR(err, CP_EIO, "notice key %s: %s", path, strerror(errno));
        goto out;
    }
    /* A new key, written whole before it is named: tmp, fsync, rename. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    randombytes_buf(l->key, sizeof l->key);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, l->key, sizeof l->key) != (ssize_t)sizeof l->key ||
        (!l->nosync && fsync(fd) != 0)) {
        rc = CP_ERR(err, errno == ENOSPC ? CP_ENOSPC : CP_EIO, "notice key %s: %s", tmp,
                    strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = CP_ERR(err, CP_EIO, "notice key %s: %s", path, strerror(errno));
        goto out;
    }
    int dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (!l->nosync)
            (void)fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* --------------------------------------------------------------- tokens */

typedef struct wr {
    unsigned char *p;
    size_t n, cap;
    int over;
} wr_t;

static void put_u8(wr_t *w, unsigned v)
{
    if (w->n + 1 > w->cap) {
        w->over = 1;
        return;
    }
    w->p[w->n++] = (unsigned char)v;
}

static void put_var(wr_t *w, uint64_t v)
{
    while (v >= 0x80) {
        put_u8(w, (unsigned)(v & 0x7f) | 0x80);
        v >>= 7;
    }
    put_u8(w, (unsigned)v);
}

static void put_str(wr_t *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 255) {
        w->over = 1;
        return;
    }
    put_u8(w, (unsigned)n);
    if (w->n + n > w->cap) {
        w->over = 1;
        return;
    }
    if (n)
        memcpy(w->p + w->n, s, n);
    w->n += n;
}

typedef struct rd {
    const unsigned char *p;
    size_t n, at;
    int bad;
} rd_t;

static unsigned get_u8(rd_t *r)
{
    if (r->at >= r->n) {
        r->bad = 1;
        return 0;
    }
    return r->p[r->at++];
}

static uint64_t get_var(rd_t *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        unsigned b = get_u8(r);
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

static const char *get_str(rd_t *r, uint8_t *len)
{
    unsigned n = get_u8(r);
    if (r->bad || r->at + n > r->n) {
        r->bad = 1;
        *len = 0;
        return "";
    }
    const char *s = (const char *)r->p + r->at;
    r->at += n;
    *len = (uint8_t)n;
    return s;
}

static unsigned cap_mask(const act_cap_t *caps, size_t n)
{
    unsigned m = 0;
    for (size_t i = 0; i < n; i++)
        if (caps[i].per >= ACT_PER_HOUR && caps[i].per <= ACT_PER_LIFETIME)
            m |= 1u << caps[i].per;
    return m;
}

#define LTOK_VERSION 1

static void encode(wr_t *w, ledger_t *l, const ledger_bid_t *b, int64_t reserved, int with_id)
{
    const act_campaign_t *c = b->campaign;
    put_u8(w, LTOK_VERSION);
    put_var(w, l->epoch);
    put_var(w, (uint64_t)b->bid_ms);
    put_var(w, (uint64_t)ledger_period_min(c, ACT_PER_HOUR, b->bid_ms));
    put_var(w, (uint64_t)ledger_period_min(c, ACT_PER_DAY, b->bid_ms));
    put_var(w, (uint64_t)ledger_period_min(c, ACT_PER_WEEK, b->bid_ms));
    put_var(w, (uint64_t)b->price_fen);
    put_var(w, (uint64_t)reserved);
    put_var(w, (uint64_t)(uint32_t)b->factor_bp);
    put_u8(w, (unsigned)b->line->billing);
    put_var(w, (uint64_t)b->line->bid_fen);
    put_u8(w, cap_mask(b->line->caps, b->line->ncaps));
    put_u8(w, cap_mask(c->caps, c->ncaps));
    for (int i = 0; i < 8; i++)
        put_u8(w, (unsigned)(b->person >> (8 * i)) & 0xff);
    size_t nc = b->ncrowds < LEDGER_MAX_CROWDS ? b->ncrowds : LEDGER_MAX_CROWDS;
    put_u8(w, (unsigned)nc);
    for (size_t i = 0; i < nc; i++)
        put_var(w, b->crowds[i]);
    put_str(w, b->auction_id);
    put_str(w, b->imp_id);
    put_str(w, c->id);
    put_str(w, b->line->id);
    put_str(w, b->creative ? b->creative->id : "");
    put_str(w, with_id && b->id_value ? b->id_type : NULL);
    put_str(w, with_id ? b->id_value : NULL);
}

cp_status ltok_encode(ledger_t *l, const ledger_bid_t *b, int64_t reserved, char *token,
                      cp_error_t *err)
{
    unsigned char raw[LTOK_RAW_MAX + LTOK_MAC_BYTES];
    unsigned char mac[crypto_auth_BYTES];
    if (b->auction_id == NULL || b->imp_id == NULL || b->campaign == NULL || b->line == NULL)
        return CP_ERR(err, CP_EINVAL, "ledger_reserve: a bid needs auction, imp, campaign, line");
    wr_t w = {raw, 0, LTOK_RAW_MAX, 0};
    encode(&w, l, b, reserved, 1);
    if (w.over) { /* long ids: keep the bid, lose its user event */
        w = (wr_t){raw, 0, LTOK_RAW_MAX, 0};
        encode(&w, l, b, reserved, 0);
    }
    if (w.over)
        return CP_ERR(err, CP_ELIMIT,
                      "notice token for auction \"%.40s\" imp \"%.40s\" would pass %d bytes: ids "
                      "too long",
                      b->auction_id, b->imp_id, LEDGER_TOKEN_MAX);
    crypto_auth(mac, raw, w.n, l->key);
    memcpy(raw + w.n, mac, LTOK_MAC_BYTES);
    sodium_bin2base64(token, LEDGER_TOKEN_MAX, raw, w.n + LTOK_MAC_BYTES,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return CP_OK;
}

cp_status ltok_decode(const unsigned char *raw, size_t len, ltok_t *t, cp_error_t *err)
{
    rd_t r = {raw, len, 0, 0};
    memset(t, 0, sizeof *t);
    if (get_u8(&r) != LTOK_VERSION)
        return CP_ERR(err, CP_EINVAL, "notice token: unknown version");
    t->epoch = (uint32_t)get_var(&r);
    t->bid_ms = (int64_t)get_var(&r);
    t->hour_min = (uint32_t)get_var(&r);
    t->day_min = (uint32_t)get_var(&r);
    t->week_min = (uint32_t)get_var(&r);
    t->price_fen = (int64_t)get_var(&r);
    t->reserved = (int64_t)get_var(&r);
    t->factor_bp = (int32_t)(uint32_t)get_var(&r);
    t->billing = (uint8_t)get_u8(&r);
    t->line_bid_fen = (int64_t)get_var(&r);
    t->line_caps = (uint8_t)get_u8(&r);
    t->camp_caps = (uint8_t)get_u8(&r);
    for (int i = 0; i < 8; i++)
        t->person |= (uint64_t)get_u8(&r) << (8 * i);
    t->ncrowds = (uint8_t)get_u8(&r);
    if (t->ncrowds > LEDGER_MAX_CROWDS)
        r.bad = 1;
    for (size_t i = 0; i < t->ncrowds && !r.bad; i++)
        t->crowds[i] = (uint32_t)get_var(&r);
    t->auction = get_str(&r, &t->lauction);
    t->imp = get_str(&r, &t->limp);
    t->campaign = get_str(&r, &t->lcampaign);
    t->line = get_str(&r, &t->lline);
    t->creative = get_str(&r, &t->lcreative);
    t->id_type = get_str(&r, &t->lid_type);
    t->id_value = get_str(&r, &t->lid_value);
    if (r.bad || r.at != len || t->bid_ms < 0 || t->price_fen < 0 || t->reserved < 0 ||
        t->line_bid_fen < 0 || t->lauction == 0 || t->lcampaign == 0 || t->lline == 0 ||
        t->lcampaign > ACT_MAX_ID || t->lline > ACT_MAX_ID)
        return CP_ERR(err, CP_EINVAL, "notice token: damaged");
    return CP_OK;
}

/* Token text -> verified raw bytes (without MAC) in raw[], *len. */
static cp_status token_open(ledger_t *l, const char *token, unsigned char *raw, size_t *len,
                            cp_error_t *err)
{
    unsigned char mac[crypto_auth_BYTES];
    size_t tl = token ? strnlen(token, LEDGER_TOKEN_MAX) : 0, n = 0;
    if (tl == 0 || tl >= LEDGER_TOKEN_MAX)
        return CP_ERR(err, CP_EINVAL, "notice token: missing or longer than %d characters",
                      LEDGER_TOKEN_MAX - 1);
    if (sodium_base642bin(raw, LEDGER_TOKEN_MAX, token, tl, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n <= LTOK_MAC_BYTES)
        return CP_ERR(err, CP_EINVAL, "notice token: not base64url");
    n -= LTOK_MAC_BYTES;
    crypto_auth(mac, raw, n, l->key);
    if (sodium_memcmp(mac, raw + n, LTOK_MAC_BYTES) != 0)
        return CP_ERR(err, CP_EINVAL, "notice token: forged or damaged (MAC mismatch)");
    *len = n;
    return CP_OK;
}

/*
 * ${AUCTION_PRICE}: a CPM in yuan as decimal text ("5.37"). The cost of one
 * impression at a CPM of Y yuan is Y x 100 millifen (100 fen per yuan,
 * 1,000 millifen per fen, 1,000 impressions per CPM): "5.37" -> 537. Digits
 * past the second decimal are rounded half up ("5.375" -> 538). No sign,
 * no exponent, at most 9 integer digits.
 */
cp_status notice_price_parse(const char *s, int64_t *millifen, cp_error_t *err)
{
    const char *p = s;
    int64_t v = 0;
    int nint = 0, nfrac = 0, up = 0;
    while (*p >= '0' && *p <= '9') {
        if (++nint > 9)
            goto bad;
        v = v * 10 + (*p++ - '0');
    }
    v *= 100;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            nfrac++;
            if (nfrac == 1)
                v += 10 * (*p - '0');
            else if (nfrac == 2)
                v += *p - '0';
            else if (nfrac == 3)
                up = *p >= '5';
            if (nfrac > 18)
                goto bad;
            p++;
        }
        if (nfrac == 0)
            goto bad;
    }
    if (*p != '\0' || nint == 0)
        goto bad;
    *millifen = v + up;
    return CP_OK;
bad:
    return CP_ERR(err, CP_EINVAL, "price \"%.32s\" is not a decimal CPM in yuan (such as \"5.37\")",
                  s);
}

/* --------------------------------------------------------------- events */

static void *event_thread(void *arg)
{
    ledger_t *l = arg;
    pthread_mutex_lock(&l->ev_mu);
    for (;;) {
        while (l->ev_n == 0 && !l->ev_stop)
            pthread_cond_wait(&l->ev_cv, &l->ev_mu);
        if (l->ev_n == 0)
            break;
        char *json = l->ev_q[l->ev_head];
        l->ev_head = (l->ev_head + 1) % LEDGER_EVENT_QUEUE;
        l->ev_n--;
        l->ev_busy = 1;
        pthread_mutex_unlock(&l->ev_mu);
        cp_ingest_result_t res = CP_INGEST_RESULT_INIT;
        cp_error_t e = {0};
        cp_status rc = cp_ingest_segment(l->db, CP_EVENT_TRACK, json, strlen(json), &res, &e);
        if (rc != CP_OK || res.rejected) {
            /* The first failures are worth a line; a flood is not. */
            if (atomic_fetch_add(&l->ev_failed, 1) < 10)
                fprintf(stderr, "crowdpack: ledger: a notice event was refused by intake: %s\n",
                        rc ? e.message : (res.errors_json ? res.errors_json : "rejected"));
        } else {
            atomic_fetch_add(&l->ev_sent, 1);
        }
        cp_ingest_result_clear(&res);
        free(json);
        pthread_mutex_lock(&l->ev_mu);
        l->ev_busy = 0;
        pthread_cond_broadcast(&l->ev_idle);
    }
    pthread_mutex_unlock(&l->ev_mu);
    return NULL;
}

cp_status events_start(ledger_t *l, cp_error_t *err)
{
    pthread_mutex_init(&l->ev_mu, NULL);
    pthread_cond_init(&l->ev_cv, NULL);
    pthread_cond_init(&l->ev_idle, NULL);
    if (l->db == NULL)
        return CP_OK;
    if (pthread_create(&l->ev_thread, NULL, event_thread, l) != 0)
        return CP_ERR(err, CP_ENOMEM, "ledger: cannot start the event thread");
    l->ev_running = 1;
    return CP_OK;
}

void events_stop(ledger_t *l)
{
    if (l->ev_running) {
        pthread_mutex_lock(&l->ev_mu);
        l->ev_stop = 1;
        pthread_cond_broadcast(&l->ev_cv);
        pthread_mutex_unlock(&l->ev_mu);
        pthread_join(l->ev_thread, NULL);
        l->ev_running = 0;
    }
    while (l->ev_n) {
        free(l->ev_q[l->ev_head]);
        l->ev_head = (l->ev_head + 1) % LEDGER_EVENT_QUEUE;
        l->ev_n--;
    }
    pthread_cond_destroy(&l->ev_idle);
    pthread_cond_destroy(&l->ev_cv);
    pthread_mutex_destroy(&l->ev_mu);
}

void ledger_events_flush(ledger_t *l)
{
    if (!l->ev_running)
        return;
    pthread_mutex_lock(&l->ev_mu);
    while (l->ev_n || l->ev_busy)
        pthread_cond_wait(&l->ev_idle, &l->ev_mu);
    pthread_mutex_unlock(&l->ev_mu);
}

/* Places the identifier where a Segment event carries one of its type
 * (src/ingest/segment.c). Segment requires a userId or an anonymousId:
 * other identifiers go with an anonymousId "rtb-" + 16 hex digits of the
 * identifier's hash, a pseudonym that holds no raw value (phones and
 * e-mails stay out of the identity graph in clear). */
static int event_ident(json_t *ev, const ltok_t *t)
{
    char type[256], value[256], anon[24];
    snprintf(type, sizeof type, "%.*s", (int)t->lid_type, t->id_type);
    snprintf(value, sizeof value, "%.*s", (int)t->lid_value, t->id_value);
    if (!strcmp(type, "user_id"))
        return json_object_set_new(ev, "userId", json_string(value));
    if (!strcmp(type, "anonymous_id"))
        return json_object_set_new(ev, "anonymousId", json_string(value));
    char hv[512];
    int hn = snprintf(hv, sizeof hv, "%s:%s", type, value);
    snprintf(anon, sizeof anon, "rtb-%016llx",
             (unsigned long long)hash64(hv, (size_t)hn, 0x72746270u));
    int bad = json_object_set_new(ev, "anonymousId", json_string(anon));
    json_t *ctx = json_object();
    bad |= json_object_set_new(ev, "context", ctx);
    if (bad || ctx == NULL)
        return -1;
    if (!strcmp(type, "idfa") || !strcmp(type, "oaid") || !strcmp(type, "device_id")) {
        json_t *dev = json_object();
        bad |= json_object_set_new(ctx, "device", dev);
        if (dev)
            bad |= json_object_set_new(dev, strcmp(type, "device_id") ? "advertisingId" : "id",
                                       json_string(value));
        if (strcmp(type, "device_id"))
            bad |= json_object_set_new(
                ctx, "os", json_pack("{s:s}", "name", !strcmp(type, "idfa") ? "iOS" : "Android"));
        return bad || dev == NULL ? -1 : 0;
    }
    return json_object_set_new(
        ctx, "externalIds",
        json_pack("[{s:s,s:s,s:s}]", "type", type, "id", value, "encoding", "none"));
}

static void event_send(ledger_t *l, const ltok_t *t, const char *kind, int64_t now_ms,
                       int64_t price_millifen)
{
    if (!l->ev_running || t->lid_type == 0 || t->lid_value == 0)
        return;
    char ts[40], tsf[48], mid[600];
    time_format(now_ms / 1000, ts, sizeof ts);
    /* "2026-12-07T10:20:30Z" -> with milliseconds */
    snprintf(tsf, sizeof tsf, "%.19s.%03dZ", ts, (int)(now_ms % 1000));
    snprintf(mid, sizeof mid, "%.*s:%.*s:%s", (int)t->lauction, t->auction, (int)t->limp, t->imp,
             kind);
    json_t *props =
        json_pack("{s:s#,s:s#,s:s#}", "campaign", t->campaign, (int)t->lcampaign, "line", t->line,
                  (int)t->lline, "creative", t->creative, (int)t->lcreative);
    json_t *ev = json_pack("{s:s,s:s,s:s,s:o*}", "event", kind, "messageId", mid, "timestamp", tsf,
                           "properties", props);
    char *json = NULL;
    int bad = ev == NULL || props == NULL;
    if (!bad && price_millifen >= 0) /* CPM yuan, as the exchange gave it */
        bad |= json_object_set_new(props, "price", json_real((double)price_millifen / 100.0));
    if (!bad)
        bad |= event_ident(ev, t) != 0;
    if (!bad)
        json = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(ev);
    if (json == NULL) {
        atomic_fetch_add(&l->ev_failed, 1);
        return;
    }
    pthread_mutex_lock(&l->ev_mu);
    if (l->ev_n == LEDGER_EVENT_QUEUE) {
        pthread_mutex_unlock(&l->ev_mu);
        atomic_fetch_add(&l->ev_dropped, 1);
        free(json);
        return;
    }
    l->ev_q[(l->ev_head + l->ev_n) % LEDGER_EVENT_QUEUE] = json;
    l->ev_n++;
    pthread_cond_signal(&l->ev_cv);
    pthread_mutex_unlock(&l->ev_mu);
}

/* -------------------------------------------------------------- notices */

static uint64_t dedup_key(const ltok_t *t)
{
    char b[512];
    memcpy(b, t->auction, t->lauction);
    b[t->lauction] = '\0';
    memcpy(b + t->lauction + 1, t->imp, t->limp);
    return ltab_key(hash64(b, (size_t)t->lauction + 1 + t->limp, 0x6465647570ull));
}

uint32_t ledger_dedup_flags(ledger_t *l, const ltok_t *t)
{
    uint64_t key = dedup_key(t);
    ltab_stripe_t *s = ltab_stripe(&l->dedup, key);
    pthread_mutex_lock(&s->mu);
    const ltab_ent_t *e = ltab_find(s, key);
    uint32_t f = e ? e->b : 0;
    pthread_mutex_unlock(&s->mu);
    return f;
}

void ledger_dedup_mark(ledger_t *l, const ltok_t *t, uint32_t flags)
{
    uint64_t key = dedup_key(t);
    ltab_stripe_t *s = ltab_stripe(&l->dedup, key);
    pthread_mutex_lock(&s->mu);
    ltab_ent_t *e = ltab_upsert(s, key);
    if (e) {
        e->a = (uint32_t)(t->bid_ms / MIN_MS);
        e->b |= flags;
    }
    pthread_mutex_unlock(&s->mu);
}

/* What the notice does, decided under ledger.mu before it is journaled,
 * so the journal records outcomes and replay applies them as they were. */
static unsigned decide(ledger_t *l, const ltok_t *t, int kind, uint32_t seen, int64_t price,
                       int64_t *charged)
{
    unsigned outcome = 0;
    *charged = 0;
    int settle_kind = kind == LEDGER_WIN || kind == LEDGER_BILLING;
    if (settle_kind && !(seen & NF_SETTLED)) {
        outcome |= NF_SETTLED;
        switch ((act_billing)t->billing) {
        case ACT_BILL_CPC:
            break; /* charged per click */
        case ACT_BILL_CPD: {
            /* Once per booked day: the first settled impression of the
             * line on a local day pays the day. */
            lcamp_t *c = ledger_camp(l, t->campaign, t->lcampaign, 1);
            if (c) {
                pthread_mutex_lock(&c->mu);
                lline_t *ln = ledger_line(c, t->line, t->lline);
                if (ln && ln->cpd_day != (int64_t)t->day_min)
                    *charged = t->line_bid_fen * 1000;
                pthread_mutex_unlock(&c->mu);
            }
            break;
        }
        default: {
            /* The clearing price, never more than we bid: an exchange
             * cannot bill above the bid in a first- or second-price
             * auction; a price above it is charged at the bid, counted. */
            int64_t p = price >= 0 ? price : t->price_fen;
            if (p > t->price_fen) {
                atomic_fetch_add(&l->over_bid, 1);
                p = t->price_fen;
            }
            *charged = p;
        }
        }
    }
    if (kind == LEDGER_CLICK && t->billing == ACT_BILL_CPC)
        *charged = t->line_bid_fen * 1000;
    if ((settle_kind || kind == LEDGER_IMPRESSION) && !(seen & NF_CAPPED))
        outcome |= NF_CAPPED;
    if ((settle_kind || kind == LEDGER_LOSS) && !(seen & NF_RELEASED))
        outcome |= NF_RELEASED;
    return outcome;
}

/* Gives the bid's reservation back (not journaled: reservations are of
 * this run only, and a token of an earlier run has another epoch). */
static void release(ledger_t *l, const ltok_t *t)
{
    if (t->epoch != l->epoch || t->reserved == 0)
        return;
    lcamp_t *c = ledger_camp(l, t->campaign, t->lcampaign, 0);
    if (c == NULL)
        return;
    int64_t minute = t->bid_ms / MIN_MS;
    lresv_t *r = &c->resv[minute % LEDGER_RESV_SLOTS];
    pthread_mutex_lock(&c->mu);
    if (atomic_load(&r->minute) == minute) {
        int64_t a = atomic_load(&r->amount);
        atomic_store(&r->amount, a > t->reserved ? a - t->reserved : 0);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Journal payload of a notice: u8 kind, u16 outcome, i32 loss reason,
 * i64 now, i64 charged, i64 price (-1 none), u16 token length, token. */
#define NREC_HDR 33

static void le_put(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le_get(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

cp_status ledger_replay_notice(ledger_t *l, const unsigned char *p, size_t len, cp_error_t *err)
{
    ltok_t t;
    if (len < NREC_HDR || le_get(p + 31, 2) != len - NREC_HDR)
        return CP_ERR(err, CP_ECORRUPT, "notice record of %zu bytes is malformed", len);
    cp_status rc = ltok_decode(p + NREC_HDR, len - NREC_HDR, &t, err);
    if (rc)
        return CP_ERR(err, CP_ECORRUPT, "notice record: %s", err ? err->message : "bad token");
    ledger_apply_notice(l, &t, p[0], (unsigned)le_get(p + 1, 2), (int64_t)le_get(p + 15, 8));
    return CP_OK;
}

static const char *kind_event(int kind)
{
    return kind == LEDGER_IMPRESSION ? "impression" : kind == LEDGER_CLICK ? "click" : NULL;
}

cp_status ledger_notice(ledger_t *l, ledger_notice_kind kind, const char *token, const char *price,
                        int loss_reason, int64_t now_ms, ledger_notice_result_t *out,
                        cp_error_t *err)
{
    unsigned char rec[NREC_HDR + LEDGER_TOKEN_MAX];
    size_t rlen = 0;
    int64_t pm = -1, charged = 0;
    uint64_t lsn = 0;
    ltok_t t;
    ledger_notice_result_t dummy;
    cp_status rc;
    if (out == NULL)
        out = &dummy;
    memset(out, 0, sizeof *out);
    if (l == NULL || kind < LEDGER_WIN || kind > LEDGER_CLICK)
        return CP_ERR(err, CP_EINVAL, "ledger_notice: unknown notice kind %d", (int)kind);
    if ((rc = token_open(l, token, rec + NREC_HDR, &rlen, err)) ||
        (rc = ltok_decode(rec + NREC_HDR, rlen, &t, err)))
        return rc;
    if (price && *price && (rc = notice_price_parse(price, &pm, err)))
        return rc;
    if (now_ms - t.bid_ms > LEDGER_DEDUP_WINDOW_MS)
        return CP_ERR(err, CP_EINVAL,
                      "notice token: the bid is older than %lld h: expired (no longer recorded)",
                      (long long)(LEDGER_DEDUP_WINDOW_MS / HOUR_MS));
    snprintf(out->campaign_id, sizeof out->campaign_id, "%.*s", (int)t.lcampaign, t.campaign);
    snprintf(out->line_id, sizeof out->line_id, "%.*s", (int)t.lline, t.line);

    pthread_mutex_lock(&l->mu);
    uint32_t seen = ledger_dedup_flags(l, &t);
    if (seen & (1u << kind)) {
        pthread_mutex_unlock(&l->mu);
        out->duplicate = 1;
        /* Answer a repeat only once the first is durable. */
        return wal_sync(l->wal, UINT64_MAX, err);
    }
    unsigned outcome = decide(l, &t, kind, seen, pm, &charged);
    rec[0] = (unsigned char)kind;
    le_put(rec + 1, outcome, 2);
    le_put(rec + 3, (uint32_t)loss_reason, 4);
    le_put(rec + 7, (uint64_t)now_ms, 8);
    le_put(rec + 15, (uint64_t)charged, 8);
    le_put(rec + 23, (uint64_t)pm, 8);
    le_put(rec + 31, rlen, 2);
    /* A full disk is learnt before anything is applied. */
    if ((rc = wal_reserve(l->wal, NREC_HDR + rlen, err)) ||
        (rc = wal_append(l->wal, LREC_NOTICE, rec, NREC_HDR + rlen, &lsn, err))) {
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    ledger_apply_notice(l, &t, kind, outcome, charged);
    if (outcome & NF_RELEASED)
        release(l, &t);
    l->since_snap++;
    pthread_mutex_unlock(&l->mu);
    if ((rc = wal_sync(l->wal, lsn, err)))
        return rc;
    out->charged_millifen = charged;
    if (l->db && kind_event(kind))
        event_send(l, &t, kind_event(kind), now_ms, pm >= 0 ? pm : t.price_fen);
    return CP_OK;
}

void ledger_event_counts(ledger_t *l, uint64_t *sent, uint64_t *failed, uint64_t *dropped)
{
    *sent = atomic_load(&l->ev_sent);
    *failed = atomic_load(&l->ev_failed);
    *dropped = atomic_load(&l->ev_dropped);
}
