/*
 * cmd_rtb.c — `crowdpack rtb simulate`: the replay simulator
 * (docs/activation.md "Simulating a day").
 *
 * It drives the real bidder (cp_rtb_bid, cp_rtb_notice, cp_activate_tick:
 * the public API, nothing simulated inside it) on a simulated clock:
 *
 *   - a copy of the data directory (cp_db_backup) and a fresh activation
 *     directory, both under --tmp (default /dev/shm when it exists: the
 *     ledger makes every notice durable, and an fdatasync on tmpfs costs
 *     microseconds instead of milliseconds). The user's data is never
 *     written: impressions become events of the copy's people;
 *   - generated BidRequests (OpenRTB 2.6, cur CNY) for the copy's people
 *     (user.buyeruid = a user id drawn from ALL; a share of strangers),
 *     60 % app (iOS/Android phones with an ifa) and 40 % site (PCs), banner
 *     sizes 300x250, 728x90 and 320x50, a CNY floor on 30 % of them, spread
 *     over the day with a diurnal curve of Chinese mobile traffic;
 *   - a market: the best other bid is log-normal (median --market yuan CPM,
 *     sigma 0.5); we win when our bid is above it and pay it (second
 *     price, at least the floor); win, billing and impression notices for
 *     wins, a loss notice (reason 102) otherwise;
 *   - a click model: CTR per creative between 0.3 % and 0.6 % (a hash of
 *     its id), a click notice per click;
 *   - cp_activate_tick every simulated second (pacing steps each minute).
 *
 * Per hour it reports requests, bids, wins, spend against the plan (the
 * daily budget over the day's active hours), the pacing throttle, the
 * most impressions any person saw of one line today against the line's
 * daily cap, and the share of wins priced with a crowd premium.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/rtb_gen.h"
#include "util/util.h"

#define HOUR_MS 3600000LL
#define MAX_HOURS (24 * 31)
#define MAX_LINES 256
#define MAX_IDS (4u << 20)

/* The campaign of the example: what `rtb simulate` runs without
 * --campaign. Its crowd `high_value` must exist in the data. */
static const char EXAMPLE_CAMPAIGN[] =
    "{\"id\":\"spring-sale\",\"advertiser\":\"acme\",\"budget\":{\"total\":100000,\"daily\":5000,"
    "\"currency\":\"CNY\"},"
    "\"schedule\":{\"start\":\"2026-12-01\",\"end\":\"2026-12-31\",\"timezone\":\"Asia/Shanghai\"},"
    "\"pacing\":\"even\","
    "\"lines\":[{\"id\":\"retarget\",\"billing\":\"cpm\",\"bid\":8.00,"
    "\"targeting\":\"tag:interest/finance AND age BETWEEN 25 AND 40\","
    "\"premiums\":[{\"crowd\":\"high_value\",\"pct\":50}],"
    "\"caps\":[{\"count\":3,\"per\":\"day\"}],"
    "\"creatives\":[{\"id\":\"c1\",\"w\":300,\"h\":250,\"adomain\":[\"acme.com\"],"
    "\"adm\":\"<a href=\\\"${CLICK_URL}\\\"><img "
    "src=\\\"https://cdn.acme.com/c1.png\\\"></a>\"}]}]}";

/* Share of requests per local hour: Chinese mobile traffic, low before
 * dawn, peaks at noon and in the evening (sums to 100). */
static const double DIURNAL[24] = {3.2, 2.2, 1.6, 1.3, 1.2, 1.4, 2.2, 3.3, 4.4, 4.8, 5.0, 5.2,
                                   5.6, 5.2, 4.9, 4.8, 4.8, 5.0, 5.3, 5.6, 6.0, 6.1, 5.6, 4.4};

/* The relative request rate in minute m of the simulation: DIURNAL at
 * each hour's midpoint, linear in between (the day wraps around). */
static double diurnal_rate(int m)
{
    double x = (double)(m % 1440) / 60.0 + 1.0 / 120.0 - 0.5; /* hours past hour 0's midpoint */
    if (x < 0)
        x += 24;
    int a = (int)x % 24;
    double f = x - floor(x);
    return DIURNAL[a] * (1 - f) + DIURNAL[(a + 1) % 24] * f;
}

typedef struct line_info {
    char id[128];
    int64_t bid_fen; /* base bid, CPM fen (0 when not cpm) */
    int cpm;
    uint32_t cap_day; /* smallest per-day cap of the line, 0 = none */
    char **crids;     /* its creatives' ids */
    size_t ncrids;
} line_info_t;

typedef struct hour_stat {
    uint64_t requests, bids, wins, losses, clicks, premium_wins, errors;
    int64_t spend_millifen;
    double factor_sum; /* premium factors of wins */
    double throttle;   /* at the end of the hour; -1 unknown */
    uint32_t max_per_person;
} hour_stat_t;

/* Impressions per (person, line, local day): open addressing on a hash. */
typedef struct cap_slot {
    uint64_t key;
    uint32_t count;
} cap_slot_t;

typedef struct sim {
    cp_db_t *db;
    cp_activate_t *act;
    char **ids;
    size_t nids;
    uint64_t rng;
    double market_mu, market_sigma;
    double known_share;
    /* the campaign */
    char campaign_id[128];
    int64_t daily_fen, total_fen;
    line_info_t lines[MAX_LINES];
    size_t nlines;
    /* state */
    int64_t day0_ms; /* local midnight of the first simulated day */
    char date[16], tz[64];
    int nhours;
    hour_stat_t hours[MAX_HOURS];
    cap_slot_t *caps;
    size_t caps_cap, caps_n;
    uint64_t cap_violations;
    uint32_t max_per_person;
    uint64_t seq;
    buf_t body;
    cp_error_t first_error;
    uint64_t nerrors;
} sim_t;

/* -------------------------------------------------------------- setup */

static int64_t money_fen(json_t *v)
{
    return json_is_number(v) ? (int64_t)llround(json_number_value(v) * 100.0) : 0;
}

/* Reads what the simulator needs from the campaign document (the
 * registry validates it; here only what is missing is a problem). With
 * scale != 1, budgets are multiplied (rounded to fen) and the document
 * rewritten into *doc. */
static int campaign_read(sim_t *s, char **doc, double scale)
{
    json_error_t jerr;
    json_t *c = json_loads(*doc, 0, &jerr);
    if (c == NULL)
        return cli_failf("campaign: line %d: %s", jerr.line, jerr.text);
    int rc = CLI_FAIL;
    const char *id = json_string_value(json_object_get(c, "id"));
    json_t *budget = json_object_get(c, "budget");
    json_t *lines = json_object_get(c, "lines");
    if (id == NULL || !json_is_array(lines)) {
        cli_failf("campaign: needs an \"id\" and \"lines\"");
        goto out;
    }
    snprintf(s->campaign_id, sizeof s->campaign_id, "%s", id);
    if (scale != 1.0 && json_is_object(budget)) {
        const char *keys[] = {"daily", "total"};
        for (int k = 0; k < 2; k++) {
            json_t *v = json_object_get(budget, keys[k]);
            if (json_is_number(v) &&
                json_object_set_new(
                    budget, keys[k],
                    json_real(round(json_number_value(v) * scale * 100.0) / 100.0)) != 0) {
                cli_failf("out of memory");
                goto out;
            }
        }
        char *text = json_dumps(c, JSON_COMPACT);
        if (text == NULL) {
            cli_failf("out of memory");
            goto out;
        }
        free(*doc);
        *doc = text;
    }
    s->daily_fen = money_fen(json_object_get(budget, "daily"));
    s->total_fen = money_fen(json_object_get(budget, "total"));
    size_t i;
    json_t *ln;
    json_array_foreach(lines, i, ln)
    {
        if (s->nlines == MAX_LINES)
            break;
        line_info_t *li = &s->lines[s->nlines++];
        snprintf(li->id, sizeof li->id, "%s", json_string_value(json_object_get(ln, "id")));
        const char *billing = json_string_value(json_object_get(ln, "billing"));
        li->cpm = billing == NULL || strcmp(billing, "cpm") == 0;
        li->bid_fen = li->cpm ? money_fen(json_object_get(ln, "bid")) : 0;
        size_t k;
        json_t *cap;
        json_array_foreach(json_object_get(ln, "caps"), k, cap)
        {
            const char *per = json_string_value(json_object_get(cap, "per"));
            json_int_t n = json_integer_value(json_object_get(cap, "count"));
            if (per && strcmp(per, "day") == 0 && n > 0 && (li->cap_day == 0 || n < li->cap_day))
                li->cap_day = (uint32_t)n;
        }
        json_t *crs = json_object_get(ln, "creatives");
        li->crids = calloc(json_array_size(crs) + 1, sizeof *li->crids);
        if (li->crids == NULL) {
            cli_failf("out of memory");
            goto out;
        }
        json_t *cr;
        json_array_foreach(crs, k, cr)
        {
            const char *crid = json_string_value(json_object_get(cr, "id"));
            if (crid && (li->crids[li->ncrids] = strdup(crid)) != NULL)
                li->ncrids++;
        }
    }
    rc = CLI_OK;
out:
    json_decref(c);
    return rc;
}

/* The line of a bid, from its creative id. */
static line_info_t *line_of(sim_t *s, const char *crid)
{
    for (size_t i = 0; crid && i < s->nlines; i++)
        for (size_t k = 0; k < s->lines[i].ncrids; k++)
            if (strcmp(s->lines[i].crids[k], crid) == 0)
                return &s->lines[i];
    return NULL;
}

/* Local midnight of `date` (YYYY-MM-DD) in time zone `tz`, as UTC ms.
 * Uses the C library's zone files through TZ, before any thread exists. */
static int local_midnight(const char *date, const char *tz, int64_t *out)
{
    int y, m, d;
    if (sscanf(date, "%4d-%2d-%2d", &y, &m, &d) != 3)
        return cli_failf("--date %s: expected YYYY-MM-DD", date);
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    setenv("TZ", tz ? tz : "UTC", 1);
    tzset();
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d, .tm_isdst = -1};
    time_t t = mktime(&tm);
    if (old) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    if (t == (time_t)-1)
        return cli_failf("--date %s: not a date in %s", date, tz ? tz : "UTC");
    *out = (int64_t)t * 1000;
    return CLI_OK;
}

static int load_ids(sim_t *s)
{
    cp_result_t *r = NULL;
    cp_iter_t *it = NULL;
    cp_error_t err = {0};
    cp_status st = cp_eval(s->db, "ALL", &r, &err);
    if (st == CP_OK)
        st = cp_iter_open(s->db, r, &it, &err);
    size_t cap = 0;
    while (st == CP_OK && s->nids < MAX_IDS) {
        const char *id;
        if ((st = cp_iter_next(it, &id, &err)) != CP_OK || id == NULL)
            break;
        if (s->nids == cap) {
            cap = cap ? cap * 2 : 4096;
            char **n = realloc(s->ids, cap * sizeof *n);
            if (n == NULL) {
                st = CP_ERR(&err, CP_ENOMEM, "out of memory listing users");
                break;
            }
            s->ids = n;
        }
        if ((s->ids[s->nids] = strdup(id)) == NULL) {
            st = CP_ERR(&err, CP_ENOMEM, "out of memory listing users");
            break;
        }
        s->nids++;
    }
    cp_iter_close(it);
    cp_result_free(r);
    if (st != CP_OK)
        return cli_fail(st, &err);
    if (s->nids == 0)
        return cli_failf("the data directory has no users to simulate");
    return CLI_OK;
}

/* ---------------------------------------------------------- the market */

static double gauss(uint64_t *rng)
{
    double u = rand_double(rng), v = rand_double(rng);
    if (u < 1e-12)
        u = 1e-12;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static double creative_ctr(const char *crid)
{
    uint64_t h = hash64(crid, strlen(crid), 7);
    return 0.003 * (1.0 + (double)(h % 101) / 100.0);
}

/* Counts one impression of `line` for `person` on local day `day`;
 * returns the person's count so far. */
static uint32_t cap_count(sim_t *s, const char *person, const line_info_t *line, int64_t day)
{
    if (s->caps_n * 2 >= s->caps_cap) {
        size_t ncap = s->caps_cap ? s->caps_cap * 2 : 1u << 14;
        cap_slot_t *n = calloc(ncap, sizeof *n);
        if (n == NULL)
            return 0;
        for (size_t i = 0; i < s->caps_cap; i++) {
            if (s->caps[i].key == 0)
                continue;
            size_t j = s->caps[i].key & (ncap - 1);
            while (n[j].key != 0)
                j = (j + 1) & (ncap - 1);
            n[j] = s->caps[i];
        }
        free(s->caps);
        s->caps = n;
        s->caps_cap = ncap;
    }
    uint64_t key =
        hash64(person, strlen(person), hash64(line->id, strlen(line->id), (uint64_t)day));
    key |= 1;
    size_t j = key & (s->caps_cap - 1);
    while (s->caps[j].key != 0 && s->caps[j].key != key)
        j = (j + 1) & (s->caps_cap - 1);
    if (s->caps[j].key == 0) {
        s->caps[j].key = key;
        s->caps_n++;
    }
    return ++s->caps[j].count;
}

/* The t=TOKEN argument of a notice URL (…/openrtb2/win?t=TOKEN&p=…). */
static int url_token(const char *url, char *out, size_t cap)
{
    const char *t = url ? strstr(url, "?t=") : NULL;
    if (t == NULL)
        return -1;
    t += 3;
    size_t n = strcspn(t, "&");
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, t, n);
    out[n] = '\0';
    return 0;
}

static void note_error(sim_t *s, const cp_error_t *err)
{
    if (s->nerrors++ == 0)
        s->first_error = *err;
}

static void notice(sim_t *s, cp_notice_kind kind, const char *token, const char *price, int reason,
                   int64_t now_ms)
{
    cp_error_t err = {0};
    int dup = 0;
    if (cp_rtb_notice(s->act, kind, token, price, reason, now_ms, &dup, &err) != CP_OK)
        note_error(s, &err);
}

/* One request at now_ms: generate, bid, run the auction, send notices. */
static void one_request(sim_t *s, int64_t now_ms, hour_stat_t *h, int64_t day)
{
    uint64_t *rng = &s->rng;
    buf_t *b = &s->body;
    buf_reset(b);
    char person[160];
    if (rand_double(rng) < s->known_share)
        snprintf(person, sizeof person, "%s", s->ids[rand_next(rng) % s->nids]);
    else
        snprintf(person, sizeof person, "sim-stranger-%llu",
                 (unsigned long long)(rand_next(rng) % 100000));
    int64_t floor_fen;
    cp_status st = rtb_gen_request(b, rng, "sim", ++s->seq, person, &floor_fen);
    cp_error_t err = {0};
    if (st != CP_OK) {
        CP_ERR(&err, st, "out of memory building a request");
        note_error(s, &err);
        return;
    }
    h->requests++;
    cp_bid_reply_t reply = CP_BID_REPLY_INIT;
    st = cp_rtb_bid(s->act, b->data, b->len, now_ms, 0, &reply, &err);
    if (st != CP_OK) {
        h->errors++;
        note_error(s, &err);
        return;
    }
    if (reply.status != 200 || reply.body == NULL) {
        cp_free(reply.body);
        return;
    }
    json_t *resp = json_loadb(reply.body, reply.len, 0, NULL);
    cp_free(reply.body);
    json_t *bids = json_object_get(json_array_get(json_object_get(resp, "seatbid"), 0), "bid");
    size_t i;
    json_t *bid;
    json_array_foreach(bids, i, bid)
    {
        h->bids++;
        int64_t price_fen = money_fen(json_object_get(bid, "price"));
        char token[1024];
        if (url_token(json_string_value(json_object_get(bid, "nurl")), token, sizeof token) != 0)
            continue;
        /* The best other bid; second price: we pay it (at least the floor). */
        double m = exp(s->market_mu + s->market_sigma * gauss(rng));
        int64_t market_fen = (int64_t)llround(m);
        int64_t clear_fen = market_fen > floor_fen ? market_fen : floor_fen;
        char price[32];
        if (price_fen > market_fen) {
            snprintf(price, sizeof price, "%lld.%02lld", (long long)(clear_fen / 100),
                     (long long)(clear_fen % 100));
            h->wins++;
            h->spend_millifen += clear_fen; /* a CPM of P fen costs P millifen */
            notice(s, CP_NOTICE_WIN, token, price, 0, now_ms + 50);
            notice(s, CP_NOTICE_BILLING, token, price, 0, now_ms + 300);
            notice(s, CP_NOTICE_IMPRESSION, token, NULL, 0, now_ms + 300);
            const char *crid = json_string_value(json_object_get(bid, "crid"));
            line_info_t *line = line_of(s, crid);
            if (line != NULL) {
                uint32_t n = cap_count(s, person, line, day);
                if (n > h->max_per_person)
                    h->max_per_person = n;
                if (n > s->max_per_person)
                    s->max_per_person = n;
                if (line->cap_day > 0 && n > line->cap_day)
                    s->cap_violations++;
                if (line->cpm && line->bid_fen > 0) {
                    double f = (double)price_fen / (double)line->bid_fen;
                    h->factor_sum += f;
                    if (price_fen > line->bid_fen)
                        h->premium_wins++;
                }
            }
            if (crid && rand_double(rng) < creative_ctr(crid)) {
                h->clicks++;
                notice(s, CP_NOTICE_CLICK, token, NULL, 0, now_ms + 5000);
            }
        } else {
            snprintf(price, sizeof price, "%lld.%02lld", (long long)(market_fen / 100),
                     (long long)(market_fen % 100));
            h->losses++;
            notice(s, CP_NOTICE_LOSS, token, price, 102, now_ms + 50);
        }
    }
    json_decref(resp);
}

/* Pacing throttle and the day's plan from the ledger's delivery view. */
static void delivery(sim_t *s, int64_t now_ms, double *throttle, int64_t *minutes_left,
                     json_t **keep)
{
    char *out = NULL;
    cp_error_t err = {0};
    *throttle = -1;
    if (minutes_left)
        *minutes_left = -1;
    if (cp_campaign_delivery_json(s->act, s->campaign_id, now_ms, &out, &err) != CP_OK)
        return;
    json_t *j = json_loads(out, 0, NULL);
    cp_free(out);
    json_t *p = json_object_get(j, "pacing");
    if (json_is_number(json_object_get(p, "throttle")))
        *throttle = json_number_value(json_object_get(p, "throttle"));
    if (minutes_left && json_is_integer(json_object_get(p, "active_minutes_left")))
        *minutes_left = json_integer_value(json_object_get(p, "active_minutes_left"));
    if (keep)
        *keep = j;
    else
        json_decref(j);
}

/* ------------------------------------------------------------ command */

static const cli_opt_t sim_opts[] = {
    {"campaign", 0, OPT_VALUE, "FILE", "campaign JSON (default: the spring-sale example)"},
    {"requests", 'n', OPT_VALUE, "N", "bid requests in all (default 100k; suffixes k M)"},
    {"day", 0, OPT_FLAG, NULL, "simulate a whole local day (24 hours)"},
    {"hours", 0, OPT_VALUE, "H", "simulate H hours (default 1, or 24 with --day)"},
    {"date", 0, OPT_VALUE, "YYYY-MM-DD", "the day (default: the campaign's start)"},
    {"seed", 0, OPT_VALUE, "S", "random seed (default 1)"},
    {"budget-scale", 0, OPT_VALUE, "F", "multiply the campaign's budgets by F (e.g. 0.002)"},
    {"market", 0, OPT_VALUE, "YUAN", "median of the best other bid, CPM (default 6.00)"},
    {"known", 0, OPT_VALUE, "SHARE", "share of requests from known people (default 0.8)"},
    {"tmp", 0, OPT_VALUE, "DIR", "where the copy lives (default /dev/shm, else $TMPDIR)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t sim_spec = {
    "rtb simulate",
    "",
    "Replay a simulated day of bidding through the real bidder, on a copy of the data.",
    "Generated OpenRTB requests for the data's people, a log-normal market, a click model\n"
    "and notices run through cp_rtb_bid / cp_rtb_notice on a simulated clock. Prints per\n"
    "hour: requests, bids, wins, spend against the plan, the pacing throttle, the most\n"
    "impressions one person saw of a line today (against its daily cap) and the share of\n"
    "wins with a crowd premium. The data directory is copied first and never written.\n\n"
    "Example:\n"
    "  crowdpack crowd create --data ./dmp high_value 'points > 5000'\n"
    "  crowdpack rtb simulate --data ./dmp --day --requests 200k --budget-scale 0.002",
    sim_opts,
    CONN_DATA | CONN_JSON,
    0,
    0};

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static void print_hours(const sim_t *s, int64_t plan_hour, uint32_t cap)
{
    static const char *const hdr[] = {"hour",   "requests", "bids",       "wins",
                                      "spend",  "plan",     "spend/plan", "throttle",
                                      "clicks", "premium",  "max/person"};
    cli_table_t *t = cli_table_new(11, hdr);
    for (int c = 1; c < 11; c++)
        cli_table_right(t, c);
    for (int i = 0; i < s->nhours; i++) {
        const hour_stat_t *h = &s->hours[i];
        char c[11][48];
        snprintf(c[0], 48, "%02d:00", i % 24);
        cli_group(h->requests, c[1]);
        cli_group(h->bids, c[2]);
        cli_group(h->wins, c[3]);
        snprintf(c[4], 48, "%.2f", (double)h->spend_millifen / 100000.0);
        snprintf(c[5], 48, "%.2f", (double)plan_hour / 100000.0);
        snprintf(c[6], 48, "%.1f %%",
                 plan_hour > 0 ? 100.0 * (double)h->spend_millifen / (double)plan_hour : 0.0);
        if (h->throttle >= 0)
            snprintf(c[7], 48, "%.3f", h->throttle);
        else
            snprintf(c[7], 48, "-");
        cli_group(h->clicks, c[8]);
        snprintf(c[9], 48, "%.0f %%", h->wins ? 100.0 * (double)h->premium_wins / h->wins : 0.0);
        if (cap > 0)
            snprintf(c[10], 48, "%u/%u", h->max_per_person, cap);
        else
            snprintf(c[10], 48, "%u", h->max_per_person);
        const char *cells[11];
        for (int k = 0; k < 11; k++)
            cells[k] = c[k];
        cli_table_row(t, cells);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
}

static int simulate(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&sim_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *data = a.data ? a.data : getenv("CROWDPACK_DATA");
    if (data == NULL)
        return cli_usage_error(&sim_spec, "no data directory: give --data DIR");
    uint64_t nreq = 100000, seed = 1;
    double scale = 1.0, market = 6.0, known = 0.8, hours_d = cli_has(&a, "day") ? 24 : 1;
    if (cli_get(&a, "requests") && (cli_parse_u64(cli_get(&a, "requests"), &nreq) || nreq == 0))
        return cli_usage_error(&sim_spec, "--requests: expected a positive count");
    if (cli_get(&a, "seed") && cli_parse_u64(cli_get(&a, "seed"), &seed))
        return cli_usage_error(&sim_spec, "--seed: expected a number");
    if (cli_get(&a, "budget-scale") &&
        parse_double(cli_get(&a, "budget-scale"), 1e-6, 1e6, &scale) != 0)
        return cli_usage_error(&sim_spec, "--budget-scale: expected a positive number");
    if (cli_get(&a, "market") && parse_double(cli_get(&a, "market"), 0.01, 10000, &market) != 0)
        return cli_usage_error(&sim_spec, "--market: expected yuan, e.g. 6.00");
    if (cli_get(&a, "known") && parse_double(cli_get(&a, "known"), 0, 1, &known) != 0)
        return cli_usage_error(&sim_spec, "--known: expected a share between 0 and 1");
    if (cli_get(&a, "hours") && (parse_double(cli_get(&a, "hours"), 1, MAX_HOURS, &hours_d) != 0 ||
                                 hours_d != floor(hours_d)))
        return cli_usage_error(&sim_spec, "--hours: expected 1 to %d", MAX_HOURS);

    sim_t *s = calloc(1, sizeof *s);
    char *doc = NULL, root[4096] = "", path[4200];
    json_t *final = NULL, *out = NULL;
    cp_error_t err = {0};
    cp_status st;
    if (s == NULL)
        return cli_failf("out of memory");
    buf_init(&s->body, 64u << 10);
    s->rng = seed * 0x9E3779B97F4A7C15ull + 1;
    s->market_mu = log(market * 100.0);
    s->market_sigma = 0.5;
    s->known_share = known;
    s->nhours = (int)hours_d;
    rc = CLI_FAIL;

    if (cli_get(&a, "campaign")) {
        size_t len;
        if (cli_read_file(cli_get(&a, "campaign"), 1u << 20, &doc, &len) != CLI_OK)
            goto out;
    } else if ((doc = strdup(EXAMPLE_CAMPAIGN)) == NULL) {
        cli_failf("out of memory");
        goto out;
    }
    if (campaign_read(s, &doc, scale) != CLI_OK)
        goto out;
    /* The day: --date, else the campaign's start, in its time zone. */
    {
        json_t *c = json_loads(doc, 0, NULL);
        json_t *sch = json_object_get(c, "schedule");
        const char *tz = json_string_value(json_object_get(sch, "timezone"));
        const char *date = cli_get(&a, "date");
        char start[16] = "";
        if (date == NULL && json_string_value(json_object_get(sch, "start")))
            snprintf(start, sizeof start, "%.10s",
                     json_string_value(json_object_get(sch, "start")));
        if (date == NULL && start[0] == '\0') {
            time_t now = time(NULL);
            strftime(start, sizeof start, "%Y-%m-%d", gmtime(&now));
        }
        snprintf(s->date, sizeof s->date, "%s", date ? date : start);
        snprintf(s->tz, sizeof s->tz, "%s", tz ? tz : "Asia/Shanghai");
        int r = local_midnight(s->date, s->tz, &s->day0_ms);
        json_decref(c);
        if (r != CLI_OK)
            goto out;
    }

    /* The copy. */
    const char *tmp = cli_get(&a, "tmp");
    if (tmp == NULL)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
              : getenv("TMPDIR")            ? getenv("TMPDIR")
                                            : "/tmp";
    snprintf(root, sizeof root, "%s/crowdpack-sim-XXXXXX", tmp);
    if (mkdtemp(root) == NULL) {
        cli_failf("%s: %s", root, strerror(errno));
        root[0] = '\0';
        goto out;
    }
    snprintf(path, sizeof path, "%s/data", root);
    cp_backup_info_t info = CP_BACKUP_INFO_INIT;
    if ((st = cp_db_backup(data, path, &info, &err)) != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    cp_open_options_t oo = CP_OPEN_OPTIONS_INIT;
    if ((st = cp_db_open(path, &oo, &s->db, &err)) != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (load_ids(s) != CLI_OK)
        goto out;
    snprintf(path, sizeof path, "%s/activate", root);
    cp_activate_options_t ao = CP_ACTIVATE_OPTIONS_INIT;
    ao.flags = CP_ACTIVATE_MANUAL_TICK;
    ao.notice_base = "http://sim.invalid";
    /* Targeting is refreshed once a simulated minute: the simulation's own
     * impressions are the only writes, and no line here targets them. */
    ao.refresh_ms = 60000;
    if ((st = cp_activate_open(s->db, path, &ao, &s->act, &err)) != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    uint64_t version = 0;
    if ((st = cp_campaign_put_json(s->act, s->campaign_id, doc, strlen(doc), &version, &err)) !=
        CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }

    /* The day's active hours, from the ledger (schedule and dayparting). */
    double th;
    int64_t minutes_left = -1;
    cp_activate_tick(s->act, s->day0_ms, &err);
    delivery(s, s->day0_ms, &th, &minutes_left, NULL);
    double active_hours = minutes_left > 0 ? (double)minutes_left / 60.0 : 24.0;
    if (active_hours > 24)
        active_hours = 24;
    int64_t plan_hour =
        active_hours > 0 ? (int64_t)((double)s->daily_fen * 1000.0 / active_hours) : 0;

    /* The requests: a rate that follows the diurnal curve smoothly
     * (linear between the hours' midpoints, so traffic does not jump at
     * the hour), counted per minute with the rounding carried over, and
     * spread evenly inside each minute. */
    int nmin = s->nhours * 60;
    double wsum = 0;
    for (int m = 0; m < nmin; m++)
        wsum += diurnal_rate(m);
    int64_t next_tick = s->day0_ms;
    uint64_t sent = 0;
    double want = 0;
    for (int i = 0; i < s->nhours; i++) {
        hour_stat_t *h = &s->hours[i];
        int64_t h0 = s->day0_ms + i * HOUR_MS;
        for (int m = i * 60; m < (i + 1) * 60; m++) {
            want += (double)nreq * diurnal_rate(m) / wsum;
            uint64_t n = m == nmin - 1 ? nreq - sent : (uint64_t)llround(want) - sent;
            if (n > nreq - sent)
                n = nreq - sent;
            sent += n;
            int64_t m0 = s->day0_ms + (int64_t)m * 60000;
            for (uint64_t k = 0; k < n; k++) {
                int64_t t = m0 + (int64_t)((double)k * 60000.0 / (double)n);
                while (next_tick <= t) {
                    cp_activate_tick(s->act, next_tick, &err);
                    next_tick += 1000;
                }
                one_request(s, t, h, (h0 - s->day0_ms) / (24 * HOUR_MS));
            }
        }
        while (next_tick < h0 + HOUR_MS) {
            cp_activate_tick(s->act, next_tick, &err);
            next_tick += 1000;
        }
        delivery(s, h0 + HOUR_MS - 1, &h->throttle, NULL, NULL);
        if (!a.json)
            fprintf(stderr, "\rsimulated %02d:00 (%d of %d hours)", (i + 1) % 24, i + 1, s->nhours);
    }
    if (!a.json)
        fprintf(stderr, "\r%60s\r", "");
    delivery(s, s->day0_ms + s->nhours * HOUR_MS - 1, &th, NULL, &final);

    /* Totals. */
    hour_stat_t tot = {0};
    uint32_t cap = 0;
    for (size_t i = 0; i < s->nlines; i++)
        if (s->lines[i].cap_day > 0 && (cap == 0 || s->lines[i].cap_day < cap))
            cap = s->lines[i].cap_day;
    for (int i = 0; i < s->nhours; i++) {
        tot.requests += s->hours[i].requests;
        tot.bids += s->hours[i].bids;
        tot.wins += s->hours[i].wins;
        tot.losses += s->hours[i].losses;
        tot.clicks += s->hours[i].clicks;
        tot.premium_wins += s->hours[i].premium_wins;
        tot.spend_millifen += s->hours[i].spend_millifen;
        tot.factor_sum += s->hours[i].factor_sum;
        tot.errors += s->hours[i].errors;
    }
    if (a.json) {
        out = json_object();
        json_t *hrs = json_array();
        int bad = out == NULL || hrs == NULL;
        for (int i = 0; i < s->nhours && !bad; i++) {
            const hour_stat_t *h = &s->hours[i];
            json_t *o = json_pack(
                "{s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:I,s:f,s:i}", "hour", i, "requests",
                (json_int_t)h->requests, "bids", (json_int_t)h->bids, "wins", (json_int_t)h->wins,
                "losses", (json_int_t)h->losses, "spend_millifen", (json_int_t)h->spend_millifen,
                "plan_millifen", (json_int_t)plan_hour, "spend_over_plan",
                plan_hour > 0 ? (double)h->spend_millifen / (double)plan_hour : 0.0, "throttle",
                h->throttle, "premium_share",
                h->wins ? (double)h->premium_wins / (double)h->wins : 0.0, "clicks",
                (json_int_t)h->clicks, "mean_factor",
                h->wins ? h->factor_sum / (double)h->wins : 0.0, "max_per_person",
                (int)h->max_per_person);
            bad |= json_array_append_new(hrs, o) != 0;
        }
        json_t *day = json_pack(
            "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:i,s:i,s:I,s:I,s:f}", "requests",
            (json_int_t)tot.requests, "bids", (json_int_t)tot.bids, "wins", (json_int_t)tot.wins,
            "clicks", (json_int_t)tot.clicks, "premium_wins", (json_int_t)tot.premium_wins,
            "spend_millifen", (json_int_t)tot.spend_millifen, "daily_budget_millifen",
            (json_int_t)(s->daily_fen * 1000), "spend_over_daily_budget",
            s->daily_fen > 0 ? (double)tot.spend_millifen / (double)(s->daily_fen * 1000) : 0.0,
            "max_per_person", (int)s->max_per_person, "cap_day", (int)cap, "cap_violations",
            (json_int_t)s->cap_violations, "errors", (json_int_t)s->nerrors, "active_hours",
            active_hours);
        bad |= day == NULL;
        bad |= json_object_set_new(out, "campaign", json_string(s->campaign_id)) != 0;
        bad |= json_object_set_new(out, "day_start_ms", json_integer(s->day0_ms)) != 0;
        bad |= json_object_set_new(out, "date", json_string(s->date)) != 0;
        bad |= json_object_set_new(out, "timezone", json_string(s->tz)) != 0;
        bad |= json_object_set_new(out, "hours", hrs) != 0;
        bad |= json_object_set_new(out, "day", day) != 0;
        bad |= json_object_set_new(out, "ledger", final ? json_incref(final) : json_null()) != 0;
        if (s->nerrors > 0)
            bad |=
                json_object_set_new(out, "first_error", json_string(s->first_error.message)) != 0;
        if (bad) {
            cli_failf("out of memory");
            goto out;
        }
        cli_emit_json(out);
        out = NULL;
    } else {
        printf("campaign %s, %s %s, %d hours from midnight; daily budget %.2f CNY over %.1f "
               "active hours\n\n",
               s->campaign_id, s->date, s->tz, s->nhours, (double)s->daily_fen / 100.0,
               active_hours);
        print_hours(s, plan_hour, cap);
        char g1[32], g2[32], g3[32];
        printf("\n%s requests, %s bids, %s wins (%.1f %% of bids), %llu clicks\n",
               cli_group(tot.requests, g1), cli_group(tot.bids, g2), cli_group(tot.wins, g3),
               tot.bids ? 100.0 * (double)tot.wins / (double)tot.bids : 0.0,
               (unsigned long long)tot.clicks);
        printf("spend %.2f CNY = %.1f %% of the daily budget %.2f CNY\n",
               (double)tot.spend_millifen / 100000.0,
               s->daily_fen > 0 ? 100.0 * (double)tot.spend_millifen / (double)(s->daily_fen * 1000)
                                : 0.0,
               (double)s->daily_fen / 100.0);
        printf("premiums: %.1f %% of wins, mean factor %.3f\n",
               tot.wins ? 100.0 * (double)tot.premium_wins / (double)tot.wins : 0.0,
               tot.wins ? tot.factor_sum / (double)tot.wins : 0.0);
        printf("caps: at most %u impressions of a line per person per day (cap %u): %s\n",
               s->max_per_person, cap, s->cap_violations ? "VIOLATED" : "respected");
        if (s->nerrors > 0)
            printf("errors: %llu, the first: %s\n", (unsigned long long)s->nerrors,
                   s->first_error.message);
    }
    rc = CLI_OK;
out:
    json_decref(out);
    json_decref(final);
    if (s->act != NULL && cp_activate_close(s->act, &err) != CP_OK && rc == CLI_OK)
        rc = cli_fail(err.code, &err);
    if (s->db != NULL && cp_db_close(s->db, &err) != CP_OK && rc == CLI_OK)
        rc = cli_fail(err.code, &err);
    if (root[0] != '\0' && cli_rmtree(root) != 0)
        fprintf(stderr, "crowdpack: could not remove %s: %s\n", root, strerror(errno));
    for (size_t i = 0; i < s->nids; i++)
        free(s->ids[i]);
    free(s->ids);
    for (size_t i = 0; i < s->nlines; i++) {
        for (size_t k = 0; k < s->lines[i].ncrids; k++)
            free(s->lines[i].crids[k]);
        free(s->lines[i].crids);
    }
    free(s->caps);
    buf_free(&s->body);
    free(s);
    free(doc);
    return rc;
}

int cmd_rtb(int argc, char **argv)
{
    static const cli_sub_t subs[] = {
        {"simulate", simulate, &sim_spec},
        {NULL, NULL, NULL},
    };
    return cli_dispatch("rtb", "OpenRTB bidding: the replay simulator", subs, argc, argv);
}
