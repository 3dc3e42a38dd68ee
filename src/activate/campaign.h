/*
 * campaign.h — the campaign model (DESIGN.md §10): advertiser → campaign →
 * line items → creatives, parsed and validated from the JSON document of
 * docs/activation.md, and the versioned registry of campaigns with the
 * immutable snapshot the bidder reads.
 *
 *   campaign.c   document <-> struct: parse, validate (400 naming the
 *                field), serialise back to canonical JSON
 *   registry.c   the campaigns of a data directory: put/delete atomically,
 *                every version kept (history), persisted under
 *                DIR/activate/, and the current snapshot
 *   tz.c         time zones from the system's TZif files (/usr/share/zoneinfo)
 *
 * Money is integer, never float: budgets in fen (1/100 CNY). A bid is a
 * price per thousand impressions (CPM) in fen, so the cost of ONE
 * impression at a CPM of P fen is exactly P millifen (1/1000 fen): the
 * ledger counts millifen. The document's decimal yuan ("bid": 8.00) become
 * fen exactly: a number is accepted only when it is the double nearest to
 * some k/100 (k = llround(v * 100), checked by k / 100.0 == v), so no
 * amount is ever rounded; more than 2 decimals is a 400 (campaign.c).
 */
#ifndef CP_ACTIVATE_CAMPAIGN_H
#define CP_ACTIVATE_CAMPAIGN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

#define ACT_MAX_ID 64            /* bytes of a campaign, line or creative id: [A-Za-z0-9_.-] */
#define ACT_MAX_LINES 256        /* per campaign */
#define ACT_MAX_CREATIVES 64     /* per line */
#define ACT_MAX_PREMIUMS 64      /* per line */
#define ACT_MAX_LIST 256         /* entries of any list (categories, deals, sizes, ...) */
#define ACT_MAX_ADM (64u << 10)  /* bytes of one creative's markup */
#define ACT_MAX_DOC (4u << 20)   /* bytes of one campaign document */
#define ACT_PREMIUM_MAX_PCT 900  /* one premium: -90 .. +900 percent */
#define ACT_FACTOR_MAX_BP 100000 /* combined premium factor capped at 10.0000x (basis points) */

typedef enum act_billing {
    ACT_BILL_CPM = 1, /* bid = CPM fen; billed per impression at the clearing price */
    ACT_BILL_CPC = 2, /* bid = fen per click; priced as bid x pCTR x 1000 */
    ACT_BILL_CPD = 3, /* bid = fen per booked day (per placement); bids at max_cpm */
    ACT_BILL_CPA = 4, /* goal = fen per action; bids at most max_cpm */
    ACT_BILL_CPS = 5, /* goal = commission in basis points of GMV; bids at most max_cpm */
} act_billing;

typedef enum act_period {
    ACT_PER_HOUR = 1,
    ACT_PER_DAY = 2,
    ACT_PER_WEEK = 3, /* calendar week, Monday 00:00 local */
    ACT_PER_LIFETIME = 4,
} act_period;

typedef enum act_pacing { ACT_PACE_EVEN = 1, ACT_PACE_ASAP = 2 } act_pacing;

/* Creative formats, also used as a bit mask (1u << format). */
typedef enum act_format {
    ACT_FMT_BANNER = 1,
    ACT_FMT_VIDEO = 2,
    ACT_FMT_NATIVE = 3,
    ACT_FMT_AUDIO = 4,
} act_format;

typedef struct act_cap {
    uint32_t count; /* at most `count` impressions per person per period (>= 1) */
    act_period per;
} act_cap_t;

typedef struct act_premium {
    char *crowd; /* crowd name */
    int32_t pct; /* -90 .. ACT_PREMIUM_MAX_PCT */
} act_premium_t;

typedef struct act_size {
    int32_t w, h;
} act_size_t;

typedef struct act_creative {
    char *id; /* crid */
    act_format format;
    int32_t w, h;   /* banner/video size; 0 for native/audio */
    char **adomain; /* advertiser domains, >= 1 */
    size_t nadomain;
    char **cat; /* IAB content categories of the ad (may be empty) */
    size_t ncat;
    char *iurl;   /* preview image URL or NULL */
    char *adm;    /* markup with macros (${CLICK_URL}, ${AUCTION_PRICE}, ...) */
    char **mimes; /* video/audio: the creative's MIME types; else empty */
    size_t nmimes;
    int32_t duration; /* video/audio seconds; 0 otherwise */
} act_creative_t;

/* Request-side targeting of a line; an empty list means "any". */
typedef struct act_reqtarget {
    char **site_cats; /* IAB categories, matched against site/app cat, sectioncat, pagecat
                         (prefix match: "IAB2" matches "IAB2-3") */
    size_t nsite_cats;
    int32_t *device_types; /* OpenRTB device.devicetype values */
    size_t ndevice_types;
    char **os; /* device.os, case-insensitive: "iOS", "Android" */
    size_t nos;
    char **countries; /* device.geo.country, ISO-3166-1 alpha-3 ("CHN") */
    size_t ncountries;
    char **regions; /* device.geo.region */
    size_t nregions;
    char **cities; /* device.geo.city */
    size_t ncities;
    unsigned formats;  /* mask of 1u << act_format; 0 = any */
    act_size_t *sizes; /* banner/video sizes accepted; empty = the creatives' sizes */
    size_t nsizes;
    char **deals; /* deal ids: when non-empty, the line bids only on these deals */
    size_t ndeals;
    int app_only, site_only; /* at most one set */
} act_reqtarget_t;

typedef struct act_line {
    char *id;
    act_billing billing;
    int64_t bid_fen;     /* CPM: CPM fen; CPC: fen per click; CPD: fen per day */
    int64_t max_cpm_fen; /* CPD/CPA/CPS: the CPM it bids at; CPC: the cap of
                            bid x pCTR x 1000 (0 = none) */
    int64_t goal_fen;    /* CPA: fen per action; CPS: commission basis points */
    char *targeting;     /* crowd expression; "" = every known person */
    act_reqtarget_t req;
    act_premium_t *premiums;
    size_t npremiums;
    act_cap_t *caps; /* per person, this line */
    size_t ncaps;
    act_creative_t *creatives; /* >= 1 */
    size_t ncreatives;
    int paused;
    /* Set by the registry when a snapshot is built. */
    uint32_t index;                /* position in act_snapshot_t.lines */
    struct act_campaign *campaign; /* owner */
} act_line_t;

typedef struct act_campaign {
    char *id;
    char *advertiser;
    int64_t total_fen; /* 0 = no total budget */
    int64_t daily_fen; /* 0 = no daily budget */
    char currency[4];  /* "CNY" (default); bids and budgets are in its 1/100 unit */
    int64_t start_ms;  /* local midnight of "start" in `timezone`, as UTC ms */
    int64_t end_ms;    /* end of the local day "end" (exclusive), 0 = open-ended */
    char *timezone;    /* IANA name, default "Asia/Shanghai" */
    uint8_t hours[21]; /* hour-of-week mask, bit (dow*24+hour), dow 0 = Monday, local;
                          all ones when the document has no "dayparting" */
    act_pacing pacing;
    act_cap_t *caps; /* per person, across the campaign's lines */
    size_t ncaps;
    act_line_t *lines; /* >= 1 */
    size_t nlines;
    int paused;
    uint64_t version;   /* 1, 2, ... per campaign id (set by the registry) */
    int64_t updated_ms; /* when this version was put */
    /* Set by the registry when a snapshot is built. */
    uint32_t index; /* position in act_snapshot_t.campaigns */
    struct tz *tz;  /* loaded `timezone` */
} act_campaign_t;

/* ------------------------------------------------------------ campaign.c */

/*
 * Parses and validates one campaign document. `id` (may be NULL) is the id
 * from the URL: when given, the document's "id" must be absent or equal.
 * On error *out is NULL and err names the field by its JSON path
 * ("lines[0].creatives[1].w: must be a positive integer"): CP_EINVAL, or
 * CP_ELIMIT past a limit above. Every string is copied; caller frees with
 * campaign_free. Targeting expressions are checked for syntax here; names
 * (tags, crowds, attributes) are checked against the data by the registry.
 */
cp_status campaign_parse(const char *json, size_t len, const char *id, act_campaign_t **out,
                         cp_error_t *err);
/* Canonical JSON of a campaign (every field, defaults filled in, money back
 * in yuan with 2 decimals, "version" and "updated"). Caller frees. */
cp_status campaign_to_json(const act_campaign_t *c, char **out, cp_error_t *err);
void campaign_free(act_campaign_t *c); /* NULL fine */

/* Local calendar arithmetic in the campaign's time zone (tz.c). */
typedef struct tz tz_t;
cp_status tz_load(const char *name, tz_t **out, cp_error_t *err); /* CP_EINVAL unknown zone */
void tz_free(tz_t *tz);
int64_t tz_offset_ms(const tz_t *tz, int64_t utc_ms); /* local = utc + offset */
/* Start (UTC ms) of the period containing utc_ms, in local calendar units
 * (ACT_PER_LIFETIME: 0). */
int64_t tz_period_start(const tz_t *tz, act_period per, int64_t utc_ms);
/* Hour of week in local time, 0 .. 167, Monday 00:00 = 0. */
int tz_hour_of_week(const tz_t *tz, int64_t utc_ms);

/* ------------------------------------------------------------ registry.c */

/*
 * What the bidder reads: every campaign of one registry version, immutable,
 * reference-counted. The lines of every campaign are also listed flat, in
 * campaign order, with line->index their position.
 */
typedef struct act_snapshot {
    atomic_uint refs;
    uint64_t version; /* registry version: bumped by every put/delete */
    act_campaign_t **campaigns;
    size_t ncampaigns;
    act_line_t **lines;
    size_t nlines;
} act_snapshot_t;

typedef struct registry registry_t;

/* Opens (creating) the campaigns of DIR/activate/ (the directory of
 * cp_activate_open). */
cp_status registry_open(const char *dir, registry_t **out, cp_error_t *err);
void registry_close(registry_t *r); /* NULL fine; snapshots held stay valid */

/* Validates (campaign_parse, and every targeting expression and premium
 * crowd against db: unknown names are 400s) and stores a new version of a
 * campaign durably (fsync) before returning; atomic: a failed put changes
 * nothing (CP_ENOSPC on a full disk). *version (may be NULL) gets the
 * campaign's new version. db may be NULL: names are then not checked
 * (tests). now_ms 0 = the wall clock. A listener must not call
 * registry_put or registry_delete (it runs under the writers' lock). */
cp_status registry_put(registry_t *r, cp_db_t *db, const char *id, const char *json, size_t len,
                       int64_t now_ms, uint64_t *version, cp_error_t *err);
/* CP_ENOTFOUND for an unknown id. The history keeps the deleted versions. */
cp_status registry_delete(registry_t *r, const char *id, int64_t now_ms, cp_error_t *err);
cp_status registry_get_json(registry_t *r, const char *id, char **out, cp_error_t *err);
cp_status registry_list_json(registry_t *r, char **out, cp_error_t *err);
cp_status registry_history_json(registry_t *r, const char *id, char **out, cp_error_t *err);

/* The current snapshot with a reference taken (never NULL once open);
 * drop it with snapshot_release. Never waits for a put: the reference is
 * taken under a spin lock held for one load and one increment (writers
 * hold it only to swap the pointer), no allocation. */
act_snapshot_t *registry_snapshot(registry_t *r);
void snapshot_release(act_snapshot_t *s); /* NULL fine */

/* Called after every change with the new snapshot (borrowed for the call);
 * the bidder re-materialises targeting from it. One listener. */
typedef void (*registry_listener_fn)(void *ctx, act_snapshot_t *s);
void registry_listen(registry_t *r, registry_listener_fn fn, void *ctx);

#endif /* CP_ACTIVATE_CAMPAIGN_H */
