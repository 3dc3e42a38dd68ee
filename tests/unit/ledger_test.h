/* ledger_test.h — a campaign built by hand for the ledger's unit tests
 * (test_activate_ledger.c, _caps.c, _pacing.c): the ledger needs only the
 * structs of campaign.h, not the document parser. Include after cmocka.h
 * and cp_test.h. */
#ifndef CP_LEDGER_TEST_H
#define CP_LEDGER_TEST_H

#include <stdio.h>
#include <string.h>

#include "activate/ledger.h"
#include "activate/ledger_int.h"
#include "util/util.h"

#define FX_LINES 3

typedef struct fx {
    act_campaign_t c;
    act_line_t line[FX_LINES];
    act_creative_t cr;
    act_cap_t lcaps[FX_LINES][4];
    act_cap_t ccaps[4];
    char auction[64], imp[16];
} fx_t;

/* Campaign `id` in Asia/Shanghai, every hour active, no caps, lines
 * "l0".."l2" billed CPM at 8 yuan. Budgets in fen (0 = none). */
static inline void fx_init(fx_t *f, const char *id, int64_t daily_fen, int64_t total_fen,
                           act_pacing pacing)
{
    static char *lids[FX_LINES] = {"l0", "l1", "l2"};
    cp_error_t err = {0};
    memset(f, 0, sizeof *f);
    f->c.id = (char *)id;
    f->c.advertiser = "acme";
    f->c.daily_fen = daily_fen;
    f->c.total_fen = total_fen;
    memcpy(f->c.currency, "CNY", 4);
    f->c.timezone = "Asia/Shanghai";
    if (tz_load("Asia/Shanghai", &f->c.tz, &err) != CP_OK)
        fail_msg("tz_load: %s", err.message);
    memset(f->c.hours, 0xff, sizeof f->c.hours);
    f->c.pacing = pacing;
    f->c.caps = f->ccaps;
    f->c.lines = f->line;
    f->c.nlines = FX_LINES;
    f->cr.id = "c1";
    for (int i = 0; i < FX_LINES; i++) {
        f->line[i].id = lids[i];
        f->line[i].billing = ACT_BILL_CPM;
        f->line[i].bid_fen = 800;
        f->line[i].targeting = "";
        f->line[i].creatives = &f->cr;
        f->line[i].ncreatives = 1;
        f->line[i].caps = f->lcaps[i];
        f->line[i].campaign = &f->c;
        f->line[i].index = (uint32_t)i;
    }
}

static inline void fx_free(fx_t *f)
{
    tz_free(f->c.tz);
    f->c.tz = NULL;
}

/* A bid of line `li` for `person` at bid_ms, CPM price_fen; the auction
 * id is "a<n>". The returned struct points into f (one bid at a time). */
static inline ledger_bid_t fx_bid(fx_t *f, int li, unsigned n, uint64_t person, int64_t bid_ms,
                                  int64_t price_fen)
{
    snprintf(f->auction, sizeof f->auction, "a%u", n);
    snprintf(f->imp, sizeof f->imp, "1");
    ledger_bid_t b = {0};
    b.auction_id = f->auction;
    b.imp_id = f->imp;
    b.campaign = &f->c;
    b.line = &f->line[li];
    b.creative = &f->cr;
    b.person = person;
    b.bid_ms = bid_ms;
    b.price_fen = price_fen;
    b.factor_bp = 10000;
    return b;
}

/* Reserves a bid and returns its token in tok[LEDGER_TOKEN_MAX]. */
static inline void fx_reserve(ledger_t *l, fx_t *f, int li, unsigned n, uint64_t person,
                              int64_t bid_ms, int64_t price_fen, char *tok)
{
    cp_error_t err = {0};
    ledger_bid_t b = fx_bid(f, li, n, person, bid_ms, price_fen);
    if (ledger_reserve(l, &b, price_fen, tok, &err) != CP_OK)
        fail_msg("ledger_reserve: %s", err.message);
}

/* UTC ms of a local time in Asia/Shanghai (UTC+8, no daylight saving). */
static inline int64_t fx_sh(int y, int mo, int d, int h, int mi)
{
    char s[40];
    int64_t secs = 0;
    snprintf(s, sizeof s, "%04d-%02d-%02dT%02d:%02d:00", y, mo, d, h, mi);
    if (time_parse(s, strlen(s), &secs) != 0)
        fail_msg("time_parse %s", s);
    return secs * 1000 - 8 * HOUR_MS;
}

#endif /* CP_LEDGER_TEST_H */
