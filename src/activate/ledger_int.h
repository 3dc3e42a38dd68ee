/*
 * ledger_int.h — the ledger's own structures, shared by ledger.c (journal,
 * snapshot, spend, reservations), caps.c (counter tables, caps), pacing.c
 * (the throttle controller) and notice.c (tokens, notices, events). Not for
 * other files: they use ledger.h.
 *
 * Locks, always taken in this order: ledger_t.mu (one notice, a snapshot,
 * a contact-cap change), lcamp_t.mu (one campaign's spend and pacing),
 * a stripe of an ltab_t (counters). ledger_check takes only stripe locks,
 * for a few nanoseconds each; it reads spend from atomics.
 */
#ifndef CP_ACTIVATE_LEDGER_INT_H
#define CP_ACTIVATE_LEDGER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "activate/ledger.h"
#include "store/wal.h"

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL

/* Dedup entries live this long after their bid: a notice for a bid older
 * than this is refused (CP_EINVAL, "expired"), so no duplicate can be
 * counted twice whatever its delay. 96 x LEDGER_RESERVE_TTL_MS = 24 h. */
#define LEDGER_DEDUP_WINDOW_MS (96LL * LEDGER_RESERVE_TTL_MS)
/* Minutes of spend the pacing controller compares with their plan. */
#ifndef LEDGER_PACE_WINDOW
#define LEDGER_PACE_WINDOW 5
#endif
/* Reservation buckets per campaign: one per minute of the TTL, plus one. */
#define LEDGER_RESV_SLOTS 16
/* Campaign states the ledger can hold (a fixed table: lock-free lookups). */
#define LEDGER_MAX_CAMPAIGNS 16384
/* A journal snapshot after this many records, or this long with any. */
#define LEDGER_SNAP_RECORDS 10000
#define LEDGER_SNAP_MS (5 * MIN_MS)
/* Events waiting for the engine; past this they are dropped and counted. */
#define LEDGER_EVENT_QUEUE 4096

/* ------------------------------------------------------------- tables */

/*
 * One counter table (caps.c): open addressing with linear probing, split
 * into stripes by the key's top bits, each stripe behind its own mutex.
 * An entry is 16 bytes; key 0 marks an empty slot (keys are hashes: a
 * hash of 0 is stored as 1). Stripes double past 70 % full; entries are
 * dropped only by ltab_sweep, which rebuilds a stripe without them.
 */
#define LTAB_STRIPES 64
typedef struct ltab_ent {
    uint64_t key;
    uint32_t a; /* caps: period start, minutes since the epoch; dedup: bid minute */
    uint32_t b; /* caps: count << 3 | period; dedup: NF_* flags */
} ltab_ent_t;

typedef struct ltab_stripe {
    pthread_mutex_t mu;
    ltab_ent_t *e; /* [cap], owned */
    size_t cap;    /* power of two, or 0 */
    size_t n;
} ltab_stripe_t;

typedef struct ltab {
    ltab_stripe_t s[LTAB_STRIPES];
} ltab_t;

void ltab_init(ltab_t *t);
void ltab_destroy(ltab_t *t);
ltab_stripe_t *ltab_stripe(ltab_t *t, uint64_t key);
/* Stripe lock held. NULL when absent. */
ltab_ent_t *ltab_find(ltab_stripe_t *s, uint64_t key);
/* Stripe lock held. The entry (zeroed a, b when new), NULL on ENOMEM. */
ltab_ent_t *ltab_upsert(ltab_stripe_t *s, uint64_t key);
/* Rebuilds stripe i keeping the entries keep(ctx, e) says to (takes the
 * stripe lock). Returns the entries dropped. */
size_t ltab_sweep(ltab_t *t, size_t i, int (*keep)(void *ctx, const ltab_ent_t *e), void *ctx);
size_t ltab_count(ltab_t *t);
static inline uint64_t ltab_key(uint64_t h)
{
    return h ? h : 1;
}

/* Dedup flags (ltab_ent_t.b of the dedup table): bit (1 << kind) for each
 * notice kind seen, and what the first notices did. */
enum {
    NF_SETTLED = 1u << 8,  /* spend settled (first of win/billing) */
    NF_CAPPED = 1u << 9,   /* caps counted (first of win/billing/impression) */
    NF_RELEASED = 1u << 10 /* the reservation given back */
};

/* -------------------------------------------------------------- token */

/* What a notice token carries (notice.c), decoded; strings point into the
 * decoder's buffer. */
typedef struct ltok {
    uint32_t epoch; /* the ledger open that reserved: releases only its own */
    int64_t bid_ms;
    uint32_t hour_min, day_min, week_min; /* period starts of bid_ms, local, minutes */
    int64_t price_fen;                    /* CPM bid */
    int64_t reserved;                     /* millifen */
    int32_t factor_bp;
    uint8_t billing; /* act_billing */
    int64_t line_bid_fen;
    uint8_t line_caps, camp_caps; /* masks of 1 << act_period the caps use */
    uint64_t person;
    uint32_t crowds[LEDGER_MAX_CROWDS];
    uint8_t ncrowds;
    const char *auction, *imp, *campaign, *line, *creative, *id_type, *id_value;
    uint8_t lauction, limp, lcampaign, lline, lcreative, lid_type, lid_value;
} ltok_t;

/* Raw token bytes (without MAC) of at most this size. */
#define LTOK_RAW_MAX ((LEDGER_TOKEN_MAX - 1) / 4 * 3 - LTOK_MAC_BYTES)
#define LTOK_MAC_BYTES 16

/* Decodes raw (MAC already checked or journal bytes). CP_EINVAL. */
cp_status ltok_decode(const unsigned char *raw, size_t len, ltok_t *t, cp_error_t *err);

/* ------------------------------------------------------------ campaign */

typedef struct lline {
    char id[ACT_MAX_ID + 1];
    int64_t day_start; /* minutes: the day spent_day counts */
    int64_t spent_day, spent_total;
    int64_t cpd_day; /* CPD: the day (minutes) last charged, -1 none */
    uint64_t wins, billings, losses, impressions, clicks;
} lline_t;

typedef struct lresv {
    _Atomic int64_t minute; /* bid minute of the bucket's reservations */
    _Atomic int64_t amount; /* millifen */
} lresv_t;

typedef struct lcamp {
    char id[ACT_MAX_ID + 1];
    pthread_mutex_t mu;
    _Atomic int64_t day_min; /* the local day spent_day counts (minutes since the epoch) */
    _Atomic int64_t spent_day, spent_total; /* millifen */
    lresv_t resv[LEDGER_RESV_SLOTS];
    lline_t *lines; /* [nlines], under mu */
    size_t nlines, caplines;
    /* pacing (pacing.c), under mu except pass_ppm */
    _Atomic uint32_t pass_ppm; /* pass-through rate, parts per million */
    int64_t pace_minute;       /* the minute of the last step, -1 none */
    int64_t pace_day;          /* its day */
    int64_t pace_committed;    /* spent_day + reserved today at the last step */
    int64_t pace_alloc;        /* the last step's plan for one minute, millifen */
    int64_t pace_last;         /* spend + reservations of the last minute */
    int64_t win_spent[LEDGER_PACE_WINDOW], win_plan[LEDGER_PACE_WINDOW]; /* last minutes */
    size_t win_n, win_i;
    int paced; /* even pacing with a daily budget */
} lcamp_t;

struct ledger {
    char *dir;   /* DIR (owned) */
    char *ldir;  /* DIR/ledger */
    cp_db_t *db; /* borrowed, may be NULL: no events */
    wal_t *wal;
    int nosync;
    unsigned char key[32]; /* notice.key */
    uint32_t epoch;
    pthread_mutex_t mu; /* one notice at a time; snapshots */
    _Atomic(lcamp_t *) camps[LEDGER_MAX_CAMPAIGNS];
    ltab_t caps;
    ltab_t dedup;
    _Atomic uint32_t contact_count;
    _Atomic int contact_per;
    uint64_t snap_lsn;   /* last LSN the snapshot on disk covers */
    uint64_t since_snap; /* records since */
    int64_t snap_ms;     /* now_ms of the last snapshot (0 = none this run) */
    size_t sweep_next;   /* next stripe ledger_tick sweeps */
    /* events (notice.c) */
    pthread_t ev_thread;
    int ev_running, ev_stop;
    pthread_mutex_t ev_mu;
    pthread_cond_t ev_cv, ev_idle;
    char *ev_q[LEDGER_EVENT_QUEUE];
    size_t ev_head, ev_n, ev_busy;
    _Atomic uint64_t ev_sent, ev_failed, ev_dropped;
    _Atomic uint64_t over_bid; /* settlements priced above the bid (charged at the bid) */
};

/* Internal opening with options: LEDGER_OPEN_NOSYNC skips fdatasync (tests
 * that record many notices; the data survive a kill but not a power cut). */
enum { LEDGER_OPEN_NOSYNC = 1u << 0 };
cp_status ledger_open_ex(const char *dir, cp_db_t *db, unsigned flags, ledger_t **out,
                         cp_error_t *err);

/* The campaign state of `id`, created when `create` (NULL when absent or
 * when the table is full). Lock-free. */
lcamp_t *ledger_camp(ledger_t *l, const char *id, size_t len, int create);
/* Under c->mu: the line state of `id`, created (NULL on ENOMEM). */
lline_t *ledger_line(lcamp_t *c, const char *id, size_t len);
/* Millifen reserved in c's live buckets: those of local day `day_min`
 * (or every live one when day_min < 0) at now_ms. */
int64_t ledger_reserved(const lcamp_t *c, int64_t day_min, int64_t now_ms);
/* Period start (minutes since the epoch) of utc_ms in c's zone (NULL tz: UTC). */
int64_t ledger_period_min(const act_campaign_t *c, act_period per, int64_t utc_ms);

/* Writes a snapshot of the whole state now and deletes the journal
 * segments it covers (ledger_tick does it every LEDGER_SNAP_RECORDS
 * records or LEDGER_SNAP_MS; ledger_close at the end). */
cp_status ledger_snapshot(ledger_t *l, int64_t now_ms, cp_error_t *err);

/* Journal record types. */
enum { LREC_NOTICE = 1, LREC_CONTACT = 2 };

/* Applies one notice's outcome to memory (ledger.mu held; also replay). */
void ledger_apply_notice(ledger_t *l, const ltok_t *t, int kind, unsigned outcome, int64_t charged);

/* ---------------------------------------------------------------- caps.c */

/* Caps of `line` (and its campaign and the contact cap) for `person` at
 * now_ms: LEDGER_OK or the first cap reached. */
ledger_verdict caps_check(ledger_t *l, const act_line_t *line, uint64_t person, int64_t now_ms);
/* Counts one impression of token t for its person (ledger.mu held). */
void caps_count(ledger_t *l, const ltok_t *t);
/* Keeps a cap counter still in or after its period at now (sweeps). */
int caps_keep(void *now_min, const ltab_ent_t *e);
/* Scope hashes of a line and a campaign. */
uint64_t caps_scope(const char *campaign, size_t lc, const char *line, size_t ll);

/* -------------------------------------------------------------- pacing.c */

/* One controller step for campaign c at now_ms (once a minute). */
void pacing_step(lcamp_t *c, const act_campaign_t *ac, int64_t now_ms);
/* 1 when the throttle lets this request through. */
int pacing_pass(const lcamp_t *c, uint64_t rnd);
/* Active minutes of the local day of now_ms left from now_ms on. */
int64_t pacing_active_minutes_left(const act_campaign_t *ac, int64_t now_ms);

/* -------------------------------------------------------------- notice.c */

cp_status notice_key_load(ledger_t *l, cp_error_t *err);
/* Writes the notice token of bid b (reserving `reserved` millifen) into
 * token[LEDGER_TOKEN_MAX]. CP_ELIMIT when its ids do not fit. */
cp_status ltok_encode(ledger_t *l, const ledger_bid_t *b, int64_t reserved, char *token,
                      cp_error_t *err);
/* ${AUCTION_PRICE} text (CPM yuan) -> millifen per impression. CP_EINVAL. */
cp_status notice_price_parse(const char *s, int64_t *millifen, cp_error_t *err);
/* The dedup flags of t's (auction, imp) / adds flags to them. */
uint32_t ledger_dedup_flags(ledger_t *l, const ltok_t *t);
void ledger_dedup_mark(ledger_t *l, const ltok_t *t, uint32_t flags);
/* Replays one LREC_NOTICE payload. CP_ECORRUPT. */
cp_status ledger_replay_notice(ledger_t *l, const unsigned char *p, size_t len, cp_error_t *err);
/* Waits until every queued event went to the engine (tests). */
void ledger_events_flush(ledger_t *l);
/* Events sent / refused by intake / dropped on a full queue. */
void ledger_event_counts(ledger_t *l, uint64_t *sent, uint64_t *failed, uint64_t *dropped);
cp_status events_start(ledger_t *l, cp_error_t *err);
void events_stop(ledger_t *l); /* drains the queue first */

#endif /* CP_ACTIVATE_LEDGER_INT_H */
