/*
 * ortb.h — OpenRTB 2.5/2.6 bid requests and responses (DESIGN.md §10),
 * typed and bounded.
 *
 *   ortb.c       BidRequest JSON -> ortb_request_t, checked against what the
 *                specification forbids (a 400 with the reason and the field)
 *   ortb_resp.c  BidResponse JSON and the notice macros
 *
 * Parsing keeps only what the bidder uses; unknown fields and `ext`
 * objects are ignored at any depth. Limits: ORTB_MAX_BODY bytes,
 * ORTB_MAX_DEPTH of nesting (checked before parsing), ORTB_MAX_IMPS imps,
 * ORTB_MAX_LIST entries per list (larger lists are cut, not refused,
 * except imp). Every string points into the request's arena.
 */
#ifndef CP_ACTIVATE_ORTB_H
#define CP_ACTIVATE_ORTB_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "util/util.h"

#define ORTB_MAX_BODY (256u << 10)
#define ORTB_MAX_DEPTH 32
#define ORTB_MAX_IMPS 64
#define ORTB_MAX_LIST 256

typedef struct ortb_strs {
    const char **v;
    size_t n;
} ortb_strs_t;

typedef struct ortb_format {
    int32_t w, h;
} ortb_format_t;

typedef struct ortb_deal {
    const char *id;
    int64_t bidfloor_fen; /* CPM in fen (the request's currency) */
    ortb_strs_t wseat;
    int at;                  /* 0 = inherit */
    const char *bidfloorcur; /* "USD" default per spec */
    const char *unbiddable;  /* NULL, or why no bid can meet this deal (see ortb_imp_t) */
} ortb_deal_t;

typedef struct ortb_imp {
    const char *id;
    /* banner: w/h and format[] merged into formats (banner.w/h first) */
    int has_banner;
    ortb_format_t *formats;
    size_t nformats;
    int has_video;
    ortb_strs_t video_mimes;
    int32_t video_w, video_h, video_minduration, video_maxduration;
    int has_native;
    const char *native_request; /* the native request string, NULL if absent */
    int has_audio;
    ortb_strs_t audio_mimes;
    int64_t bidfloor_fen;    /* CPM in hundredths of bidfloorcur (fen when CNY),
                                rounded up so a bid at it is never below it */
    const char *bidfloorcur; /* "USD" default per spec */
    /* NULL when a bid in CNY may be made; else why not, for ?debug: the
     * request's `cur` does not list CNY (absent `cur` means USD only), or a
     * floor > 0 is in another currency. No exchange rates are built in (a
     * hard-coded rate would be wrong), so such an imp gets no bid. */
    const char *unbiddable;
    int private_auction; /* pmp.private_auction */
    ortb_deal_t *deals;
    size_t ndeals;
    const char *tagid;
    int instl, secure;
} ortb_imp_t;

typedef struct ortb_eid {
    const char *source; /* e.g. "crowdpack.io", "adserver.org" */
    ortb_strs_t uids;   /* uids[].id */
} ortb_eid_t;

typedef struct ortb_segment_data {
    const char *id, *name;
    int segtax;           /* ext.segtax, 0 if absent */
    ortb_strs_t segments; /* segment[].id */
} ortb_segment_data_t;

typedef struct ortb_request {
    const char *id;
    ortb_imp_t *imps;
    size_t nimps;
    int is_app; /* app present (site otherwise, or neither) */
    const char *site_id, *domain, *page, *bundle, *publisher_id;
    ortb_strs_t cat; /* site/app cat + sectioncat + pagecat */
    /* device */
    const char *ua, *ip, *ifa, *os, *osv, *make, *model;
    int devicetype; /* 0 = absent */
    const char *country, *region, *city;
    double lat, lon;
    int has_geo_point;
    /* user */
    const char *user_id, *buyeruid, *gender;
    int yob;
    ortb_eid_t *eids;
    size_t neids;
    ortb_segment_data_t *data;
    size_t ndata;
    /* regs and auction */
    int coppa, gdpr; /* regs.coppa, regs.gdpr (2.6) or regs.ext.gdpr (2.5); -1 absent */
    int tmax;        /* ms; 0 = absent */
    int at;          /* 1 first price, 2 second price (default) */
    ortb_strs_t cur, bcat, badv, bapp, wseat, bseat;
    int test;
} ortb_request_t;

/*
 * Parses a BidRequest. Allocates only from `arena` (the caller frees it
 * after the response is written). CP_EINVAL for malformed JSON, a missing
 * or empty `imp`, missing ids, and values the specification forbids
 * (negative sizes, an empty `mimes`, a negative bidfloor, unknown `at`,
 * duplicate imp ids, a wrong JSON type, ...): err names the field by its
 * path ("BidRequest imp[0].banner.w: must not be negative, got -3").
 * Sizes of 0 mean "not given" (the 2.5 interstitial example). CP_ELIMIT
 * past the limits above. The full list: docs/openrtb.md.
 */
cp_status ortb_parse(const char *body, size_t len, arena_t *arena, ortb_request_t *out,
                     cp_error_t *err);

/* One bid of a response (ortb_resp.c). */
typedef struct ortb_bid {
    const char *imp_id;
    int64_t price_fen; /* CPM fen in the response currency */
    const char *adm;   /* markup with the creative's macros expanded; NULL: served on win */
    const char *crid, *cid, *adid, *dealid, *iurl;
    ortb_strs_t adomain, cat;
    int32_t w, h;
    const char *nurl, *burl, *lurl; /* with ${AUCTION_PRICE} etc. left for the exchange */
    int mtype;                      /* 2.6 markup type: 1 banner, 2 video, 3 audio, 4 native */
} ortb_bid_t;

/* Appends a BidResponse with one seatbid holding `bids` to `out`
 * ({"id":..., "bidid":..., "cur":"CNY", "seatbid":[{"seat":..., "bid":[...]}]}). */
cp_status ortb_response_write(buf_t *out, const ortb_request_t *req, const char *bidid,
                              const char *seat, const ortb_bid_t *bids, size_t nbids,
                              cp_error_t *err);

#endif /* CP_ACTIVATE_ORTB_H */
