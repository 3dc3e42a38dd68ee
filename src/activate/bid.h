/*
 * bid.h — the bidder (DESIGN.md §10): the activation handle, targeting
 * kept materialised from the change feed, and the per-request decision.
 *
 *   activate.c  cp_activate_t: opens registry, targeting and ledger over a
 *               cp_db_t, the housekeeping thread (or manual ticks for the
 *               simulator), and the public cp_campaign_* / cp_rtb_* API
 *   target.c    per line item its targeting expression's members, per
 *               premium crowd its members, as bitmaps of user ordinals;
 *               rebuilt when campaigns change and, when the change feed
 *               reports a commit, at most every refresh_ms
 *   bid.c       resolve the person, choose per imp the best eligible line,
 *               price it, reserve, write the BidResponse (or 204)
 *
 * Request path (bid.c), allocation only from the request's arena:
 *   ortb_parse -> resolve person (OneID: user.buyeruid, user.id,
 *   user.eids[].uids[], device.ifa, in that order; the first identifier
 *   OneID knows wins) -> one snapshot + one target view taken -> for each
 *   imp, for each line: campaign live (schedule, dayparting, paused),
 *   request targeting (format, size, site/app category, device, OS, geo,
 *   deals), blocks (bcat, badv, bapp), crowd targeting (target_line_match),
 *   price >= floor, ledger_check (caps, budget, pacing) -> best price wins,
 *   ties to the lower line index -> ledger_reserve -> response.
 *
 * Price (fen CPM): CPM lines bid_fen x factor; CPC lines bid_fen x pCTR x
 * 1000 x factor (pCTR smoothed per line, the ledger counting clicks per
 * line: (clicks + a) / (impressions + a + b) with a prior of 0.1 %, a = 1,
 * b = 999), capped at
 * max_cpm_fen when set; CPD/CPA/CPS lines max_cpm_fen x factor.
 * Premium factor: of the line's premium crowds the person is in, the
 * HIGHEST pct wins (as 直通车/达摩盘 apply 人群溢价): factor = 1 + pct/100,
 * never compounding, so it is bounded by 1 + ACT_PREMIUM_MAX_PCT/100.
 */
#ifndef CP_ACTIVATE_BID_H
#define CP_ACTIVATE_BID_H

#include <stddef.h>
#include <stdint.h>

#include "activate/campaign.h"
#include "activate/ledger.h"
#include "activate/ortb.h"
#include "crowdpack.h"

/* ------------------------------------------------------------- target.c */

typedef struct target target_t;
typedef struct target_view target_view_t; /* immutable, reference-counted */

/* Subscribes to db's change feed (every commit marks the targeting dirty;
 * the mask is CP_FEED_CROWDS, the cheapest for writers). `db` borrowed. */
cp_status target_open(cp_db_t *db, int64_t refresh_ms, target_t **out, cp_error_t *err);
void target_close(target_t *t); /* NULL fine; unsubscribes first */

/* Materialises every line's targeting and premium crowd of `s` into a new
 * view and publishes it (readers holding the old view keep it). Costs one
 * cp_eval per distinct expression. */
cp_status target_rebuild(target_t *t, const act_snapshot_t *s, cp_error_t *err);
/* Rebuilds from the last snapshot when a commit arrived since the last
 * build and refresh_ms passed (housekeeping). */
cp_status target_tick(target_t *t, int64_t now_ms, cp_error_t *err);

target_view_t *target_acquire(target_t *t); /* never NULL after open */
void target_release(target_view_t *v);      /* NULL fine */
/* The campaign snapshot the view was built from (borrowed for the view's
 * life; NULL before the first build): read lines through it so that line
 * indexes and targeting agree. */
const act_snapshot_t *target_view_snapshot(const target_view_t *v);
/* 1 when user ordinal `ord` matches line `line_index`'s targeting (a line
 * with targeting "" matches every known person; unknown people, ord ==
 * UINT32_MAX, match only lines without targeting). */
int target_line_match(const target_view_t *v, uint32_t line_index, uint32_t ord);
/* The premium pct (the highest of the line's crowds `ord` is in) or 0;
 * the matching crowds' ids into crowds[LEDGER_MAX_CROWDS], *ncrowds. */
int32_t target_premium_pct(const target_view_t *v, const act_line_t *line, uint32_t ord,
                           uint32_t *crowds, size_t *ncrowds);

/* ---------------------------------------------------------------- bid.c */

/* Why a line did not bid on an imp, for ?debug=1 (also ledger verdicts). */
typedef enum bid_reason {
    BID_ELIGIBLE = 0,
    BID_PAUSED,
    BID_SCHEDULE, /* outside start/end */
    BID_DAYPART,  /* hour of week off */
    BID_FORMAT,   /* no creative of a format the imp takes */
    BID_SIZE,     /* no creative of a size the imp takes */
    BID_SITE,     /* site/app category, app/site only */
    BID_DEVICE,   /* device type or OS */
    BID_GEO,
    BID_DEAL,    /* line needs a deal the imp lacks, or private auction */
    BID_BLOCKED, /* bcat/badv/bapp */
    BID_CROWD,   /* the person is not in the line's targeting */
    BID_FLOOR,   /* price below bidfloor */
    BID_LEDGER,  /* see the ledger verdict */
    BID_OUTBID,  /* another line bid more */
} bid_reason;
const char *bid_reason_name(bid_reason r);

typedef struct bidder {
    cp_db_t *db;             /* borrowed */
    registry_t *reg;         /* borrowed */
    target_t *target;        /* borrowed */
    ledger_t *ledger;        /* borrowed */
    const char *notice_base; /* "http://127.0.0.1:8080": base of nurl/burl/lurl/trackers */
    const char *seat;
} bidder_t;

/*
 * Answers one BidRequest: *status 200 with a BidResponse in `out`, 204 with
 * `out` empty (no bid; with debug, 200 and {"id":...,"nbr":0,"ext":{"debug":
 * [...]}}), or
 * CP_EINVAL / CP_ELIMIT for a request to refuse with 400 (err says why).
 * `debug` adds "ext":{"debug":[{imp, line, reason, ...}]}.
 */
cp_status bid_request(bidder_t *b, const char *body, size_t len, int64_t now_ms, int debug,
                      int *status, buf_t *out, cp_error_t *err);

#endif /* CP_ACTIVATE_BID_H */
