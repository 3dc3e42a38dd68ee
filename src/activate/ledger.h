/*
 * ledger.h — what bidding spends and shows, kept in memory and made
 * durable in DIR/activate/ (DESIGN.md §10): frequency caps per person,
 * spend per campaign/line/day with reservations, the pacing controller,
 * and the notices (win, billing, loss, impression, click) that settle them.
 *
 *   ledger.c   the journal (a store/wal.h log in DIR/activate/ledger/):
 *              every notice is one record, made durable before the notice
 *              is answered; state is rebuilt from it at open (with a
 *              periodic snapshot so a restart does not replay everything)
 *   caps.c     per-person counters per line, per campaign and the global
 *              contact cap, in calendar periods of the campaign's time zone
 *   pacing.c   the `even` pacing controller
 *   notice.c   notice tokens and the notice endpoints' logic; impressions
 *              and clicks are also sent to the engine as track events of
 *              the person ("impression", "click", "win", "conversion"...)
 *
 * Units: spend in millifen (the cost of one impression at a CPM of P fen is
 * P millifen); budgets of act_campaign_t are fen (x1000 to compare).
 *
 * People: a "person key" is (1ull << 63) | ordinal for a person OneID
 * knows, or hash64 of "type:value" of the request's best identifier with
 * the top bit clear for one it does not, or 0 when the request carries no
 * identifier (then no capped line may bid: the cap could not be kept).
 */
#ifndef CP_ACTIVATE_LEDGER_H
#define CP_ACTIVATE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "activate/campaign.h"
#include "crowdpack.h"

#define LEDGER_PERSON_KNOWN (1ull << 63)
#define LEDGER_MAX_CROWDS 8  /* premium crowds remembered per impression */
#define LEDGER_TOKEN_MAX 512 /* bytes of a notice token (URL-safe) */
/* A reservation not settled by a notice within this time is released. */
#define LEDGER_RESERVE_TTL_MS (15 * 60 * 1000)

typedef struct ledger ledger_t;

/* Why a line may not bid now (also the ?debug=1 reasons of bid.c). */
typedef enum ledger_verdict {
    LEDGER_OK = 0,
    LEDGER_CAP_LINE = 1,     /* the person reached a cap of the line */
    LEDGER_CAP_CAMPAIGN = 2, /* ... of the campaign */
    LEDGER_CAP_CONTACT = 3,  /* ... the global contact cap */
    LEDGER_NO_PERSON = 4,    /* capped line, request without identifier */
    LEDGER_BUDGET_DAILY = 5, /* spend + reservations + this bid > daily budget */
    LEDGER_BUDGET_TOTAL = 6,
    LEDGER_PACING = 7, /* throttled by the pacing controller */
} ledger_verdict;

const char *ledger_verdict_name(ledger_verdict v); /* "cap_line", ... */

/* What a bid commits to; carried (MACed) in its notice token. */
typedef struct ledger_bid {
    const char *auction_id; /* BidRequest.id */
    const char *imp_id;
    const act_campaign_t *campaign;
    const act_line_t *line;
    const act_creative_t *creative;
    uint64_t person;      /* person key */
    const char *id_type;  /* identifier that resolved the person ("idfa", "user_id", ...) */
    const char *id_value; /*   or NULL: events are recorded only for known ids */
    int64_t bid_ms;
    int64_t price_fen;                  /* the CPM bid, fen */
    int32_t factor_bp;                  /* premium factor applied, 10000 = none */
    uint32_t crowds[LEDGER_MAX_CROWDS]; /* crowd ids whose premium matched */
    size_t ncrowds;
} ledger_bid_t;

/* Opens DIR/ledger (creating it), replays it, and keeps a notice key in
 * DIR/notice.key (created with 0600); DIR is the activation directory
 * (the server's DATA/activate). `db` receives the notice events (NULL:
 * none); borrowed, must outlive the ledger. CP_ECORRUPT naming the file
 * and offset for a damaged journal or snapshot, CP_ELOCKED when another
 * handle has it open. */
cp_status ledger_open(const char *dir, cp_db_t *db, ledger_t **out, cp_error_t *err);
void ledger_close(ledger_t *l); /* NULL fine */

/*
 * Hot path (bid.c), lock-free or under short locks, no allocation, no I/O:
 * may `person` be shown one more impression of `line` at now_ms, and may
 * its campaign spend `cost_millifen` more? The checks run in the order of
 * ledger_verdict; the first failing one is the answer. `rnd` is a uniform
 * random number for the pacing throttle.
 */
ledger_verdict ledger_check(ledger_t *l, const act_line_t *line, uint64_t person,
                            int64_t cost_millifen, int64_t now_ms, uint64_t rnd);

/* Reserves `cost_millifen` of the campaign's daily and total budget for a
 * bid and writes its notice token into token[LEDGER_TOKEN_MAX]. Not
 * durable (reservations live in memory; a restart forgets them, and the
 * notices that arrive later still settle). CP_ELIMIT when the budget no
 * longer has room (a concurrent bid took it). */
cp_status ledger_reserve(ledger_t *l, const ledger_bid_t *b, int64_t cost_millifen, char *token,
                         cp_error_t *err);

typedef enum ledger_notice_kind {
    LEDGER_WIN = 1,        /* nurl: the bid won (price = clearing price) */
    LEDGER_BILLING = 2,    /* burl: billable; spend is settled here (or at
                              LEDGER_WIN when the exchange sends no burl:
                              ledger settles at the first of the two, once) */
    LEDGER_LOSS = 3,       /* lurl: lost, with the loss reason code */
    LEDGER_IMPRESSION = 4, /* our impression pixel: counts caps */
    LEDGER_CLICK = 5,      /* click redirect */
} ledger_notice_kind;

typedef struct ledger_notice_result {
    int duplicate; /* this (auction, imp, kind) was recorded before: nothing changed */
    int64_t charged_millifen;
    char campaign_id[ACT_MAX_ID + 1];
    char line_id[ACT_MAX_ID + 1];
} ledger_notice_result_t;

/*
 * Records one notice: checks the token's MAC (CP_EINVAL for a forged or
 * damaged token, CP_EINVAL for a price that is not a decimal number),
 * writes it durably to the journal (CP_ENOSPC / CP_EIO: not recorded, the
 * caller answers 5xx so the exchange retries), then applies it to spend
 * and caps and sends the user event. `price` is the ${AUCTION_PRICE}
 * text (CPM in yuan, e.g. "5.37"), NULL when the kind has none;
 * `loss_reason` the lurl's ${AUCTION_LOSS} code (else 0).
 */
cp_status ledger_notice(ledger_t *l, ledger_notice_kind kind, const char *token, const char *price,
                        int loss_reason, int64_t now_ms, ledger_notice_result_t *out,
                        cp_error_t *err);

/* Once a second or so (the bidder's housekeeping thread): pacing steps each
 * minute, reservations past their TTL released, a journal snapshot now and
 * then. `s` is the current campaign snapshot (borrowed). */
void ledger_tick(ledger_t *l, const act_snapshot_t *s, int64_t now_ms);

/* Spend, caps and pacing as JSON for /v1/campaigns/ID/delivery and the
 * simulator: {"campaign":..., "today":{"spent":..,"reserved":..},
 * "total":{...}, "pacing":{"throttle":0.83,...}, "lines":[...]}. */
cp_status ledger_delivery_json(ledger_t *l, const act_campaign_t *c, int64_t now_ms, char **out,
                               cp_error_t *err);

/* Impressions and clicks recorded for `line` so far (every day), for the
 * bidder's CPC click-through estimate (ledger_counts.c). Takes the
 * campaign's lock briefly; 0 and 0 for a line with no notice yet. */
void ledger_line_counts(ledger_t *l, const act_line_t *line, uint64_t *impressions,
                        uint64_t *clicks);

/* Global contact cap shared by bidding and journeys: at most `count` per
 * person per `per` across every campaign (0 = none). Persisted. */
cp_status ledger_contact_cap_set(ledger_t *l, uint32_t count, act_period per, cp_error_t *err);
/* The contact cap in force (count 0 = none). */
void ledger_contact_cap_get(ledger_t *l, uint32_t *count, act_period *per);

#endif /* CP_ACTIVATE_LEDGER_H */
