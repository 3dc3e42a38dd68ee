/*
 * bid.c — one BidRequest in, one BidResponse (or a no-bid) out (bid.h).
 *
 * Everything a request allocates comes from its arena; the state it reads
 * is one target view (materialised targeting and the campaign snapshot it
 * was built from) and the ledger's in-memory counters. No expression is
 * evaluated and no file is read, except OneID's identifier lookup
 * (cp_user_ordinal: one LMDB read transaction per identifier tried).
 *
 * Who the person is (OneID types of src/model/normalize.h), first known
 * identifier wins, in this fixed order:
 *   user.buyeruid        -> user_id      (the buyer's own id for the user,
 *                                         as synced with the exchange)
 *   user.id              -> anonymous_id (the exchange's id; an id seen in
 *                                         our own events as anonymousId)
 *   user.eids[].uids[]   -> by eids[].source: a source spelled as a OneID
 *                           type ("idfa", "oaid", "phone", "email",
 *                           "member_id", "openid", "unionid", "device_id",
 *                           "user_id", "anonymous_id") is that type;
 *                           "crowdpack.io" is user_id; other sources are
 *                           not ids OneID holds and are skipped
 *   device.ifa           -> idfa when device.os is iOS/iPadOS, else oaid
 *                           (the advertising id of Android phones in
 *                           China; a GAID stored as oaid resolves too), as
 *                           Segment intake stores context.device.advertisingId
 * The person key of the ledger (caps) is LEDGER_PERSON_KNOWN | ordinal for
 * a known person, else hash64("type:value") of the FIRST identifier present
 * (top bit clear), else 0 (then capped lines may not bid).
 *
 * Privacy: regs.coppa = 1 or regs.gdpr = 1 (no consent string is read)
 * make the request anonymous: no OneID lookup, the person key 0, so only
 * lines without crowd targeting and without caps can bid on it.
 * `test` = 1 requests are answered like any other (the exchange does not
 * bill them; their reservations expire after LEDGER_RESERVE_TTL_MS).
 * `at` (first or second price) does not change the bid: a line bids its
 * value, and settlement uses the price the notice reports.
 *
 * Time: the request must be answered within tmax minus a margin of
 * BID_TMAX_MARGIN_PCT percent of tmax (for the network back to the
 * exchange); past it, no bid (204) rather than a late one the exchange
 * would drop. Checked after each imp and before reserving.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <threads.h>

#include "activate/bid.h"
#include "util/util.h"

#define BID_TMAX_MARGIN_PCT 20
#define BID_ARENA_MAX (8u << 20)
/* pCTR prior (bid.h): (clicks + A) / (impressions + A + B) = 0.1 % alone. */
#define CTR_PRIOR_A 1
#define CTR_PRIOR_B 999

const char *bid_reason_name(bid_reason r)
{
    static const char *const names[] = {
        [BID_ELIGIBLE] = "eligible", [BID_PAUSED] = "paused",   [BID_SCHEDULE] = "schedule",
        [BID_DAYPART] = "daypart",   [BID_FORMAT] = "format",   [BID_SIZE] = "size",
        [BID_SITE] = "site",         [BID_DEVICE] = "device",   [BID_GEO] = "geo",
        [BID_DEAL] = "deal",         [BID_BLOCKED] = "blocked", [BID_CROWD] = "crowd",
        [BID_FLOOR] = "floor",       [BID_LEDGER] = "ledger",   [BID_OUTBID] = "outbid",
    };
    return (unsigned)r < CP_ARRAY_LEN(names) && names[r] ? names[r] : "unknown";
}

/* ------------------------------------------------------------ identity */

static const char *const oneid_types[] = {"user_id",   "anonymous_id", "phone", "email",
                                          "device_id", "idfa",         "oaid",  "member_id",
                                          "openid",    "unionid"};

/* The OneID type of an eids[].source, or NULL. */
static const char *eid_type(const char *source)
{
    if (source == NULL)
        return NULL;
    for (size_t i = 0; i < CP_ARRAY_LEN(oneid_types); i++) {
        if (strcmp(source, oneid_types[i]) == 0)
            return oneid_types[i];
    }
    if (strcasecmp(source, "crowdpack.io") == 0)
        return "user_id";
    return NULL;
}

static int os_is_ios(const char *os)
{
    return os && (strncasecmp(os, "ios", 3) == 0 || strncasecmp(os, "ipados", 6) == 0);
}

typedef struct person {
    uint64_t key;        /* ledger person key */
    uint32_t ord;        /* UINT32_MAX: unknown */
    const char *id_type; /* the identifier that resolved a known person, else NULL */
    const char *id_value;
} person_t;

/* Tries one identifier; returns 1 when it resolved the person. The first
 * identifier present sets an unknown person's key. */
static int try_ident(cp_db_t *db, person_t *p, const char *type, const char *value)
{
    if (type == NULL || value == NULL || value[0] == '\0')
        return 0;
    if (p->key == 0) {
        char kb[512];
        int n = snprintf(kb, sizeof kb, "%s:%s", type, value);
        size_t len = n < 0 ? 0 : (size_t)n < sizeof kb ? (size_t)n : sizeof kb - 1;
        p->key = hash64(kb, len, 0) & ~LEDGER_PERSON_KNOWN;
        if (p->key == 0)
            p->key = 1; /* 0 means "no identifier" */
    }
    uint32_t ord;
    cp_error_t err = {0};
    if (cp_user_ordinal(db, type, value, &ord, &err) != CP_OK)
        return 0;
    p->ord = ord;
    p->key = LEDGER_PERSON_KNOWN | ord;
    p->id_type = type;
    p->id_value = value;
    return 1;
}

static void resolve_person(cp_db_t *db, const ortb_request_t *r, person_t *p)
{
    memset(p, 0, sizeof *p);
    p->ord = UINT32_MAX;
    if (r->coppa == 1 || r->gdpr == 1)
        return;
    if (try_ident(db, p, "user_id", r->buyeruid) || try_ident(db, p, "anonymous_id", r->user_id))
        return;
    for (size_t i = 0; i < r->neids; i++) {
        const char *type = eid_type(r->eids[i].source);
        for (size_t k = 0; type && k < r->eids[i].uids.n; k++) {
            if (try_ident(db, p, type, r->eids[i].uids.v[k]))
                return;
        }
    }
    (void)try_ident(db, p, os_is_ios(r->os) ? "idfa" : "oaid", r->ifa);
}

/* ---------------------------------------------------------- eligibility */

static int str_in(const ortb_strs_t *l, const char *s)
{
    for (size_t i = 0; s && i < l->n; i++) {
        if (strcasecmp(l->v[i], s) == 0)
            return 1;
    }
    return 0;
}

static int cstr_in(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++) {
        if (strcasecmp(v[i], s) == 0)
            return 1;
    }
    return 0;
}

/* IAB category `cat` is `prefix` or one of its subcategories ("IAB2"
 * covers "IAB2-3", not "IAB22"). */
static int cat_covers(const char *prefix, const char *cat)
{
    size_t n = strlen(prefix);
    return strncasecmp(prefix, cat, n) == 0 && (cat[n] == '\0' || cat[n] == '-');
}

/* `dom` is `blocked` or one of its subdomains. */
static int domain_covers(const char *blocked, const char *dom)
{
    size_t nb = strlen(blocked), nd = strlen(dom);
    if (nd < nb || strcasecmp(dom + nd - nb, blocked) != 0)
        return 0;
    return nd == nb || dom[nd - nb - 1] == '.';
}

static int mimes_meet(const ortb_strs_t *want, char *const *have, size_t nhave)
{
    if (want->n == 0 || nhave == 0)
        return 1;
    for (size_t i = 0; i < nhave; i++) {
        if (str_in(want, have[i]))
            return 1;
    }
    return 0;
}

/* Does creative `cr` of `line` fit `imp`: BID_ELIGIBLE, BID_FORMAT (no
 * format the imp takes, or its MIME types/duration) or BID_SIZE. Video is
 * not held to the player's size: players scale. */
static bid_reason creative_fit(const ortb_imp_t *imp, const act_line_t *line,
                               const act_creative_t *cr)
{
    if (line->req.formats && !(line->req.formats & (1u << cr->format)))
        return BID_FORMAT;
    int sized = 0;
    switch (cr->format) {
    case ACT_FMT_BANNER:
        if (!imp->has_banner)
            return BID_FORMAT;
        if (imp->nformats > 0) {
            int ok = 0;
            for (size_t i = 0; i < imp->nformats && !ok; i++)
                ok = imp->formats[i].w == cr->w && imp->formats[i].h == cr->h;
            if (!ok)
                return BID_SIZE;
        }
        sized = 1;
        break;
    case ACT_FMT_VIDEO:
        if (!imp->has_video || !mimes_meet(&imp->video_mimes, cr->mimes, cr->nmimes))
            return BID_FORMAT;
        if (cr->duration > 0 &&
            ((imp->video_minduration > 0 && cr->duration < imp->video_minduration) ||
             (imp->video_maxduration > 0 && cr->duration > imp->video_maxduration)))
            return BID_FORMAT;
        sized = 1;
        break;
    case ACT_FMT_NATIVE:
        if (!imp->has_native)
            return BID_FORMAT;
        break;
    case ACT_FMT_AUDIO:
        if (!imp->has_audio || !mimes_meet(&imp->audio_mimes, cr->mimes, cr->nmimes))
            return BID_FORMAT;
        break;
    default:
        return BID_FORMAT;
    }
    if (sized && line->req.nsizes > 0) {
        int ok = 0;
        for (size_t i = 0; i < line->req.nsizes && !ok; i++)
            ok = line->req.sizes[i].w == cr->w && line->req.sizes[i].h == cr->h;
        if (!ok)
            return BID_SIZE;
    }
    return BID_ELIGIBLE;
}

/* bcat against the creative's categories, badv and bapp against its
 * advertiser domains (an app advertised is named by its bundle there). */
static int creative_blocked(const ortb_request_t *r, const act_creative_t *cr)
{
    for (size_t i = 0; i < r->bcat.n; i++) {
        for (size_t k = 0; k < cr->ncat; k++) {
            if (cat_covers(r->bcat.v[i], cr->cat[k]))
                return 1;
        }
    }
    for (size_t k = 0; k < cr->nadomain; k++) {
        for (size_t i = 0; i < r->badv.n; i++) {
            if (domain_covers(r->badv.v[i], cr->adomain[k]))
                return 1;
        }
        if (str_in(&r->bapp, cr->adomain[k]))
            return 1;
    }
    return 0;
}

static int site_ok(const ortb_request_t *r, const act_reqtarget_t *t)
{
    if ((t->app_only && !r->is_app) || (t->site_only && r->is_app))
        return 0;
    if (t->nsite_cats == 0)
        return 1;
    for (size_t i = 0; i < t->nsite_cats; i++) {
        for (size_t k = 0; k < r->cat.n; k++) {
            if (cat_covers(t->site_cats[i], r->cat.v[k]))
                return 1;
        }
    }
    return 0;
}

static int device_ok(const ortb_request_t *r, const act_reqtarget_t *t)
{
    if (t->ndevice_types > 0) {
        int ok = 0;
        for (size_t i = 0; i < t->ndevice_types && !ok; i++)
            ok = r->devicetype == t->device_types[i];
        if (!ok)
            return 0;
    }
    return t->nos == 0 || cstr_in(t->os, t->nos, r->os);
}

static int geo_ok(const ortb_request_t *r, const act_reqtarget_t *t)
{
    return (t->ncountries == 0 || cstr_in(t->countries, t->ncountries, r->country)) &&
           (t->nregions == 0 || cstr_in(t->regions, t->nregions, r->region)) &&
           (t->ncities == 0 || cstr_in(t->cities, t->ncities, r->city));
}

static int seat_allowed(const ortb_strs_t *wseat, const char *seat)
{
    return wseat->n == 0 || str_in(wseat, seat);
}

/* Hour of week, Monday 00:00 = 0; UTC when the zone is not loaded (the
 * epoch fell on a Thursday, hour 72 of its week). */
static int hour_of_week(const act_campaign_t *c, int64_t now_ms)
{
    if (c->tz)
        return tz_hour_of_week(c->tz, now_ms);
    int64_t h = now_ms / 3600000 + 72;
    return (int)(((h % 168) + 168) % 168);
}

/* Premium factor in basis points, bounded to [1000, ACT_FACTOR_MAX_BP]. */
static int32_t factor_bp(int32_t pct)
{
    int64_t bp = 10000 + (int64_t)pct * 100;
    if (bp > ACT_FACTOR_MAX_BP)
        bp = ACT_FACTOR_MAX_BP;
    if (bp < 1000)
        bp = 1000;
    return (int32_t)bp;
}

/* The CPM the line bids in fen (bid.h's price rule), before the floor. */
static int64_t line_price(ledger_t *l, const act_line_t *line, int32_t fbp)
{
    int64_t base;
    switch (line->billing) {
    case ACT_BILL_CPM:
        base = line->bid_fen;
        break;
    case ACT_BILL_CPC: {
        /* bid x pCTR x 1000 with pCTR = (clicks + A) / (impressions + A +
         * B): the prior (0.1 %) until the line's own notices outweigh it.
         * Per line: the ledger counts clicks per line, not per creative. */
        uint64_t clicks, imps;
        ledger_line_counts(l, line, &imps, &clicks);
        if (clicks > imps)
            clicks = imps; /* clicks without their impression pixel */
        /* Integer money: 128 bits hold bid x 1000 x clicks. */
        base = (int64_t)((__int128)line->bid_fen * 1000 * (__int128)(clicks + CTR_PRIOR_A) /
                         (__int128)(imps + CTR_PRIOR_A + CTR_PRIOR_B));
        break;
    }
    default:
        base = line->max_cpm_fen;
        break;
    }
    int64_t p = (base * fbp + 5000) / 10000;
    if (line->billing == ACT_BILL_CPC && line->max_cpm_fen > 0 && p > line->max_cpm_fen)
        p = line->max_cpm_fen;
    return p;
}

/* --------------------------------------------------------------- request */

typedef struct cand {
    const act_line_t *line;
    const act_creative_t *cr;
    const ortb_deal_t *deal;
    int64_t price_fen;
    int32_t factor_bp;
    uint32_t crowds[LEDGER_MAX_CROWDS];
    size_t ncrowds;
} cand_t;

typedef struct dbg_row {
    uint32_t imp, line;
    bid_reason reason;
    ledger_verdict verdict;
    int64_t price_fen; /* 0 when not priced */
} dbg_row_t;

/*
 * Decides line `line` for imp `imp`: BID_ELIGIBLE with *c filled (creative,
 * deal, price), or why not (*verdict for BID_LEDGER). The checks run in
 * bid.h's order; the first failing one is the answer.
 */
static bid_reason line_decide(bidder_t *b, const target_view_t *v, const ortb_request_t *r,
                              const ortb_imp_t *imp, const act_line_t *line, const person_t *p,
                              int64_t now_ms, uint64_t rnd, cand_t *c, ledger_verdict *verdict)
{
    const act_campaign_t *camp = line->campaign;
    *verdict = LEDGER_OK;
    memset(c, 0, sizeof *c);
    if (camp->paused || line->paused)
        return BID_PAUSED;
    if (now_ms < camp->start_ms || (camp->end_ms > 0 && now_ms >= camp->end_ms))
        return BID_SCHEDULE;
    int how = hour_of_week(camp, now_ms);
    if (!(camp->hours[how / 8] & (1u << (how % 8))))
        return BID_DAYPART;

    /* A creative of a format and size the imp takes, not blocked. */
    bid_reason fit = BID_FORMAT;
    const act_creative_t *first_fit = NULL;
    for (size_t i = 0; i < line->ncreatives; i++) {
        bid_reason f = creative_fit(imp, line, &line->creatives[i]);
        if (f == BID_ELIGIBLE) {
            if (first_fit == NULL)
                first_fit = &line->creatives[i];
            if (!creative_blocked(r, &line->creatives[i])) {
                c->cr = &line->creatives[i];
                break;
            }
        } else if (f == BID_SIZE) {
            fit = BID_SIZE;
        }
    }
    if (first_fit == NULL)
        return fit;
    if (!site_ok(r, &line->req))
        return BID_SITE;
    if (!device_ok(r, &line->req))
        return BID_DEVICE;
    if (!geo_ok(r, &line->req))
        return BID_GEO;

    /* Deals: a line with deals bids only through one of them (the one with
     * the lowest floor among those offered to our seat); a line without
     * deals bids only in the open auction. */
    if (line->req.ndeals > 0) {
        for (size_t i = 0; i < imp->ndeals; i++) {
            const ortb_deal_t *d = &imp->deals[i];
            if (d->unbiddable || !seat_allowed(&d->wseat, b->seat) ||
                !cstr_in(line->req.deals, line->req.ndeals, d->id))
                continue;
            if (c->deal == NULL || d->bidfloor_fen < c->deal->bidfloor_fen)
                c->deal = d;
        }
        if (c->deal == NULL)
            return BID_DEAL;
    } else if (imp->private_auction) {
        return BID_DEAL;
    }
    if (c->cr == NULL)
        return BID_BLOCKED;
    if (!target_line_match(v, line->index, p->ord))
        return BID_CROWD;

    int32_t pct = target_premium_pct(v, line, p->ord, c->crowds, &c->ncrowds);
    c->factor_bp = factor_bp(c->ncrowds > 0 ? pct : 0);
    c->price_fen = line_price(b->ledger, line, c->factor_bp);
    int64_t floor = imp->bidfloor_fen;
    if (c->deal && c->deal->bidfloor_fen > floor)
        floor = c->deal->bidfloor_fen;
    if (imp->unbiddable || c->price_fen <= 0 || c->price_fen < floor)
        return BID_FLOOR;
    /* One impression at a CPM of P fen costs P millifen (campaign.h). */
    *verdict = ledger_check(b->ledger, line, p->key, c->price_fen, now_ms, rnd);
    if (*verdict != LEDGER_OK)
        return BID_LEDGER;
    c->line = line;
    return BID_ELIGIBLE;
}

static uint64_t request_rand(void)
{
    static thread_local uint64_t state;
    if (state == 0)
        state = time_mono_ns() ^ (uint64_t)(uintptr_t)&state;
    return rand_next(&state);
}

/* Appends s as a JSON string literal (ids from the request may hold
 * anything). */
static cp_status json_str(buf_t *o, const char *s)
{
    return json_buf_str(o, s, strlen(s));
}

static cp_status debug_write(buf_t *o, const ortb_request_t *r, const act_snapshot_t *s,
                             const dbg_row_t *rows, size_t n)
{
    cp_status st = buf_append(o, "\"debug\":[", 9);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        const dbg_row_t *d = &rows[i];
        const act_line_t *line = s->lines[d->line];
        st = buf_append(o, i ? ",{\"imp\":" : "{\"imp\":", i ? 8 : 7);
        if (st == CP_OK)
            st = json_str(o, r->imps[d->imp].id);
        if (st == CP_OK)
            st = buf_append(o, ",\"campaign\":", 12);
        if (st == CP_OK)
            st = json_str(o, line->campaign->id);
        if (st == CP_OK)
            st = buf_append(o, ",\"line\":", 8);
        if (st == CP_OK)
            st = json_str(o, line->id);
        if (st == CP_OK)
            st = buf_printf(o, ",\"reason\":\"%s\"", bid_reason_name(d->reason));
        if (st == CP_OK && d->reason == BID_LEDGER)
            st = buf_printf(o, ",\"ledger\":\"%s\"", ledger_verdict_name(d->verdict));
        if (st == CP_OK && d->reason == BID_FLOOR && r->imps[d->imp].unbiddable)
            st = buf_printf(o, ",\"detail\":\"%s\"", r->imps[d->imp].unbiddable);
        if (st == CP_OK && d->price_fen > 0)
            st = buf_printf(o, ",\"price\":%lld.%02lld", (long long)(d->price_fen / 100),
                            (long long)(d->price_fen % 100));
        if (st == CP_OK)
            st = buf_append(o, "}", 1);
    }
    return st ? st : buf_append(o, "]", 1);
}

/* One macro of a creative's markup and its value. */
typedef struct macro {
    const char *name; /* "${CLICK_URL}" */
    size_t len;
    const char *value;
} macro_t;

/*
 * Expands the macros of docs/activation.md in a creative's markup:
 * ${CLICK_URL}, ${IMP_URL} (our trackers), ${AUCTION_ID},
 * ${AUCTION_IMP_ID}, ${AUCTION_BID_ID}, ${AUCTION_SEAT_ID},
 * ${AUCTION_CURRENCY} (known at bid time, so expanded here for exchanges
 * that do not). ${AUCTION_PRICE} and any other ${...} are left for the
 * exchange. A banner also gets the impression pixel appended, so an
 * impression is counted where the markup is rendered.
 */
static char *adm_expand(arena_t *ar, const char *adm, const macro_t *m, size_t nm, const char *imp,
                        int pixel)
{
    static const char pix_a[] = "<img src=\"";
    static const char pix_b[] = "\" width=\"1\" height=\"1\" alt=\"\" "
                                "style=\"position:absolute;left:-9999px\">";
    size_t nimp = strlen(imp), n = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *o = NULL;
        if (pass == 1 && (o = arena_alloc(ar, n + 1)) == NULL)
            return NULL;
        size_t k = 0;
#define PUT(p, len)                                                                                \
    do {                                                                                           \
        if (o)                                                                                     \
            memcpy(o + k, (p), (len));                                                             \
        k += (len);                                                                                \
    } while (0)
        for (const char *q = adm; *q;) {
            size_t i = nm;
            if (q[0] == '$' && q[1] == '{') {
                for (i = 0; i < nm && strncmp(q, m[i].name, m[i].len) != 0; i++)
                    ;
            }
            if (i < nm) {
                PUT(m[i].value, strlen(m[i].value));
                q += m[i].len;
            } else {
                PUT(q, 1);
                q++;
            }
        }
        if (pixel) {
            PUT(pix_a, sizeof pix_a - 1);
            PUT(imp, nimp);
            PUT(pix_b, sizeof pix_b - 1);
        }
#undef PUT
        if (o) {
            o[k] = '\0';
            return o;
        }
        n = k;
    }
    return NULL;
}

static const char *url_make(arena_t *ar, const char *base, const char *kind, const char *token,
                            const char *tail)
{
    size_t n = strlen(base) + strlen(kind) + strlen(token) + strlen(tail) + 32;
    char *u = arena_alloc(ar, n);
    if (u)
        snprintf(u, n, "%s/openrtb2/%s?t=%s%s", base, kind, token, tail);
    return u;
}

static int mtype_of(act_format f)
{
    switch (f) {
    case ACT_FMT_BANNER:
        return 1;
    case ACT_FMT_VIDEO:
        return 2;
    case ACT_FMT_AUDIO:
        return 3;
    case ACT_FMT_NATIVE:
        return 4;
    }
    return 0;
}

/* LEDGER_CAP_LINE / LEDGER_CAP_CAMPAIGN when a capped `line` (or a line of
 * its capped campaign) already has one of the request's bids, else
 * LEDGER_OK. Bids are few (one per imp): a scan. */
static ledger_verdict won_capped(const act_line_t *const *lines, size_t nbids,
                                 const act_line_t *line)
{
    for (size_t w = 0; w < nbids; w++) {
        const act_line_t *won = lines[w];
        if (won == line && line->ncaps > 0)
            return LEDGER_CAP_LINE;
        if (won->campaign == line->campaign && line->campaign->ncaps > 0)
            return LEDGER_CAP_CAMPAIGN;
    }
    return LEDGER_OK;
}

static int cand_better(const cand_t *a, const cand_t *b)
{
    return a->price_fen > b->price_fen ||
           (a->price_fen == b->price_fen && a->line->index < b->line->index);
}

cp_status bid_request(bidder_t *b, const char *body, size_t len, int64_t now_ms, int debug,
                      int *status, buf_t *out, cp_error_t *err)
{
    uint64_t t0 = time_mono_ns();
    cp_status st = CP_OK;
    arena_t ar;
    arena_init(&ar, BID_ARENA_MAX);
    target_view_t *v = NULL;
    ortb_request_t req;
    memset(&req, 0, sizeof req);
    *status = 204;
    buf_reset(out);

    if ((st = ortb_parse(body, len, &ar, &req, err)))
        goto out;
    v = target_acquire(b->target);
    const act_snapshot_t *s = target_view_snapshot(v);
    size_t nlines = s ? s->nlines : 0;
    if (nlines == 0 && !debug)
        goto out; /* nothing to bid with: the fast 204 */

    /* No imp can be bid in CNY (the request's currencies, a floor in
     * another one): answered before any identity lookup. */
    size_t biddable = 0;
    for (size_t i = 0; i < req.nimps; i++)
        biddable += req.imps[i].unbiddable == NULL;
    if (biddable == 0 && !debug)
        goto out;

    uint64_t budget_ns = req.tmax > 0
                             ? (uint64_t)req.tmax * 1000000u * (100 - BID_TMAX_MARGIN_PCT) / 100
                             : UINT64_MAX;
    person_t p;
    resolve_person(b->db, &req, &p);

    dbg_row_t *rows = NULL;
    size_t nrows = 0;
    if (debug && nlines > 0 &&
        (rows = arena_alloc(&ar, req.nimps * nlines * sizeof *rows)) == NULL) {
        st = CP_ERR(err, CP_ELIMIT, "BidRequest: too many imps x line items for ?debug=1");
        goto out;
    }
    cand_t *cands = arena_alloc(&ar, (nlines ? nlines : 1) * sizeof *cands);
    ortb_bid_t *bids = arena_alloc(&ar, req.nimps * sizeof *bids);
    const act_line_t **won = arena_alloc(&ar, req.nimps * sizeof *won); /* line of bids[i] */
    if (cands == NULL || bids == NULL || won == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "bid: out of memory");
        goto out;
    }
    size_t nbids = 0;
    char *bidid = arena_alloc(&ar, 17);
    if (bidid == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "bid: out of memory");
        goto out;
    }
    snprintf(bidid, 17, "%016llx", (unsigned long long)request_rand());

    int late = 0;
    for (size_t i = 0; i < req.nimps && !late; i++) {
        const ortb_imp_t *imp = &req.imps[i];
        size_t ncands = 0;
        size_t row0 = nrows;
        int64_t winner = -1; /* line index of this imp's bid */
        for (size_t l = 0; l < nlines; l++) {
            ledger_verdict verdict;
            bid_reason why = line_decide(b, v, &req, imp, s->lines[l], &p, now_ms, request_rand(),
                                         &cands[ncands], &verdict);
            if (rows)
                rows[nrows++] =
                    (dbg_row_t){(uint32_t)i, (uint32_t)l, why, verdict,
                                why == BID_ELIGIBLE || why == BID_LEDGER || why == BID_FLOOR
                                    ? cands[ncands].price_fen
                                    : 0};
            if (why == BID_ELIGIBLE)
                ncands++;
        }
        if (time_mono_ns() - t0 > budget_ns) {
            late = 1;
            break;
        }
        /* Best first; a reservation the budget no longer has room for (a
         * concurrent bid took it) passes to the next. */
        while (ncands > 0) {
            size_t best = 0;
            for (size_t k = 1; k < ncands; k++) {
                if (cand_better(&cands[k], &cands[best]))
                    best = k;
            }
            cand_t c = cands[best];
            cands[best] = cands[--ncands];
            /* Caps count at impressions, which come after the answer: one
             * request shows a capped line (or campaign) at most once, so
             * several imps of a page cannot overshoot a cap together. */
            ledger_verdict capped = won_capped(won, nbids, c.line);
            if (capped != LEDGER_OK) {
                for (size_t k = row0; rows && k < nrows; k++) {
                    if (rows[k].line == c.line->index) {
                        rows[k].reason = BID_LEDGER;
                        rows[k].verdict = capped;
                    }
                }
                continue;
            }
            ledger_bid_t lb = {.auction_id = req.id,
                               .imp_id = imp->id,
                               .campaign = c.line->campaign,
                               .line = c.line,
                               .creative = c.cr,
                               .person = p.key,
                               .id_type = p.id_type,
                               .id_value = p.id_value,
                               .bid_ms = now_ms,
                               .price_fen = c.price_fen,
                               .factor_bp = c.factor_bp,
                               .ncrowds = c.ncrowds};
            memcpy(lb.crowds, c.crowds, sizeof lb.crowds);
            char token[LEDGER_TOKEN_MAX];
            cp_error_t rerr = {0};
            cp_status rs = ledger_reserve(b->ledger, &lb, c.price_fen, token, &rerr);
            if (rs != CP_OK) {
                for (size_t k = row0; rows && k < nrows; k++) {
                    if (rows[k].line == c.line->index) {
                        rows[k].reason = BID_LEDGER;
                        rows[k].verdict = LEDGER_BUDGET_DAILY;
                    }
                }
                continue;
            }
            const char *click = url_make(&ar, b->notice_base, "click", token, "");
            const char *impu = url_make(&ar, b->notice_base, "imp", token, "");
            ortb_bid_t *bd = &bids[nbids];
            memset(bd, 0, sizeof *bd);
            bd->imp_id = imp->id;
            bd->price_fen = c.price_fen;
            bd->nurl = url_make(&ar, b->notice_base, "win", token, "&p=${AUCTION_PRICE}");
            bd->burl = url_make(&ar, b->notice_base, "bill", token, "&p=${AUCTION_PRICE}");
            bd->lurl = url_make(&ar, b->notice_base, "loss", token,
                                "&p=${AUCTION_PRICE}&r=${AUCTION_LOSS}");
            char bid_id[24];
            snprintf(bid_id, sizeof bid_id, "%zu", nbids + 1); /* ortb_response_write's ids */
#define M(name, value)                                                                             \
    {                                                                                              \
        name, sizeof name - 1, value                                                               \
    }
            const macro_t macros[] = {
                M("${CLICK_URL}", click ? click : ""),
                M("${IMP_URL}", impu ? impu : ""),
                M("${AUCTION_ID}", req.id),
                M("${AUCTION_IMP_ID}", imp->id),
                M("${AUCTION_BID_ID}", bid_id),
                M("${AUCTION_SEAT_ID}", b->seat),
                M("${AUCTION_CURRENCY}", "CNY"),
            };
#undef M
            bd->adm = click && impu && c.cr->adm
                          ? adm_expand(&ar, c.cr->adm, macros, CP_ARRAY_LEN(macros), impu,
                                       c.cr->format == ACT_FMT_BANNER)
                          : NULL;
            if (bd->nurl == NULL || bd->burl == NULL || bd->lurl == NULL || click == NULL ||
                impu == NULL || (c.cr->adm && bd->adm == NULL)) {
                st = CP_ERR(err, CP_ENOMEM, "bid: out of memory");
                goto out;
            }
            bd->crid = c.cr->id;
            bd->adid = c.cr->id;
            bd->cid = c.line->campaign->id;
            bd->dealid = c.deal ? c.deal->id : NULL;
            bd->iurl = c.cr->iurl;
            bd->adomain = (ortb_strs_t){(const char **)c.cr->adomain, c.cr->nadomain};
            bd->cat = (ortb_strs_t){(const char **)c.cr->cat, c.cr->ncat};
            bd->w = c.cr->w;
            bd->h = c.cr->h;
            bd->mtype = mtype_of(c.cr->format);
            won[nbids++] = c.line;
            winner = c.line->index;
            break;
        }
        /* The other eligible lines of this imp were outbid. */
        for (size_t k = row0; rows && k < nrows; k++) {
            if (rows[k].reason == BID_ELIGIBLE && (int64_t)rows[k].line != winner)
                rows[k].reason = BID_OUTBID;
        }
    }
    if (late || time_mono_ns() - t0 > budget_ns) {
        /* Too late to be used: the reservations made expire unused. */
        nbids = 0;
    }

    if (nbids > 0) {
        if ((st = ortb_response_write(out, &req, bidid, b->seat, bids, nbids, err)))
            goto out;
        if (rows && out->len > 0 && out->data[out->len - 1] == '}') {
            out->len--;
            if ((st = buf_append(out, ",\"ext\":{", 8)) ||
                (st = debug_write(out, &req, s, rows, nrows)) || (st = buf_append(out, "}}", 2)))
                goto out;
        }
        *status = 200;
    } else if (debug) {
        /* No bid, explained: a BidResponse with nbr 0 ("unknown error" is
         * the only code that fits every cause) and the reasons. */
        if ((st = buf_append(out, "{\"id\":", 6)) || (st = json_str(out, req.id)) ||
            (st = buf_printf(out, ",\"nbr\":0,\"ext\":{%s", late ? "\"late\":true," : "")) ||
            (st = rows ? debug_write(out, &req, s, rows, nrows)
                       : buf_append(out, "\"debug\":[]", 10)) ||
            (st = buf_append(out, "}}", 2)))
            goto out;
        *status = 200;
    }
out:
    if (st != CP_OK) {
        buf_reset(out);
        if (st != CP_EINVAL && st != CP_ELIMIT)
            *status = 500;
    }
    target_release(v);
    arena_free(&ar);
    return st;
}
