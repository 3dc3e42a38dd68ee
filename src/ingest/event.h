/*
 * event.h — the normalised event of the intake layer (src/ingest/), and
 * the parser of Segment HTTP Tracking API payloads into it.
 *
 * Every source of events — the Segment-compatible HTTP endpoints, NDJSON
 * event files, CSV files with a column mapping — ends up as an array of
 * ingest_event_t, which the engine validates against the schema and
 * applies under its write lock. Nothing here touches the database:
 * parsing is pure (bytes in, events or per-event reasons out).
 *
 * Segment fields understood (https://segment.com/docs/connections/spec/):
 *   type            identify, track, page, screen, group, alias (batch items;
 *                   the single-event endpoints imply it)
 *   userId          -> identifier user_id (string, or an integer as text)
 *   anonymousId     -> identifier anonymous_id
 *   previousId      (alias) the id being aliased: a user_id if known, else an
 *                   anonymous_id (resolved by the engine)
 *   traits, context.traits  user traits; identifier-typed keys (email, phone,
 *                   member_id, openid, unionid, device_id, idfa, oaid and the
 *                   configured others) become identifiers, the rest traits
 *   context.device.id -> device_id; context.device.advertisingId -> idfa on
 *                   iOS (context.os.name or context.device.type), else oaid
 *   context.externalIds [{id, type}] with a known identifier type
 *   properties      track/page/screen properties
 *   event (track), name (page/screen), groupId (group)
 *   timestamp / originalTimestamp / sentAt / receivedAt  see below
 *   messageId       deduplication key; when absent a stable one is derived
 *                   from a hash of the event's canonical JSON ("derived:..."),
 *                   flagged in message_id_derived
 *
 * Event time: the device time is `timestamp` (else `originalTimestamp`).
 * If `sentAt` (of the event or of the batch) and a receive time are both
 * known, Segment's clock-skew correction applies:
 *   ts = timestamp + (receivedAt - sentAt)
 * and the result is clamped to receivedAt (nothing happens after it is
 * received). Without sentAt the timestamp is used as is (historical
 * imports); without any timestamp the event happened when received.
 *
 * Limits: INGEST_EVENT_MAX bytes per event (its compact JSON), and the
 * callers enforce INGEST_BATCH_MAX per request body.
 */
#ifndef CP_INGEST_EVENT_H
#define CP_INGEST_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/propval.h"
#include "util/util.h"

#define INGEST_EVENT_MAX (32u * 1024)  /* bytes of one event (Segment's limit) */
#define INGEST_BATCH_MAX (500u * 1024) /* bytes of one batch request body */
#define INGEST_MAX_IDS 16              /* identifiers on one event */
#define INGEST_ID_MAX 256              /* bytes of one identifier value */
#define INGEST_TYPE_MAX 32             /* bytes of an identifier type name */
#define INGEST_NAME_MAX 200            /* bytes of an event / page name */
#define INGEST_MSGID_MAX 256           /* bytes of a messageId */
#define INGEST_MAX_REPORTED 1000       /* per-event reasons kept for a reply */

typedef enum ingest_type {
    ING_NONE = 0,
    ING_IDENTIFY = 1,
    ING_TRACK = 2,
    ING_PAGE = 3,
    ING_SCREEN = 4,
    ING_GROUP = 5,
    ING_ALIAS = 6,
} ingest_type;

/* "identify", ... ; NULL for ING_NONE or an unknown value. */
const char *ingest_type_name(ingest_type t);
/* The type of a name ("track" -> ING_TRACK); ING_NONE if unknown. */
ingest_type ingest_type_parse(const char *s, size_t len);

/* One identifier as found on an event, before normalisation. */
typedef struct ingest_ident {
    char type[INGEST_TYPE_MAX]; /* "user_id", "email", ... */
    const char *value;          /* borrowed from the batch */
    size_t len;
    const char *field; /* where it was found ("userId", "traits.email"), static */
} ingest_ident_t;

/* One event of any source, parsed and checked: what the engine applies. */
typedef struct ingest_event {
    ingest_type type;
    uint32_t index;         /* position in its request (batch index), for rejects and warnings */
    const char *message_id; /* never NULL after parsing */
    size_t message_id_len;
    int message_id_derived; /* 1 if derived from the payload's hash */
    uint64_t message_hash;  /* xxh3 of the messageId: the dedup key */
    int no_dedup;           /* 1 = not checked against the dedup window */
    char phone_cc[4];       /* calling code of context.locale's region ("1"), "" if none:
                             * a hint for national phone numbers (normalize.h) */
    const char
        *event; /* behaviour name: track's event, "page", "screen", "group"; NULL otherwise */
    size_t event_len;
    const char *name; /* page/screen name; NULL if none */
    size_t name_len;
    const char *group_id; /* group */
    size_t group_id_len;
    const char *previous_id; /* alias */
    size_t previous_id_len;
    int64_t ts;          /* event time, seconds since the epoch, UTC */
    int64_t received_at; /* seconds; 0 if unknown */
    /* Tags for the event's user (CSV rows through a mapping's "tags"): [ntags]
     * tag paths, NUL-terminated, borrowed from the batch's arena or the
     * mapping's dictionary; the engine assigns those in the taxonomy and
     * counts the others as unknown. ntags_unknown: ids of the row that its
     * dictionary does not know. NULL / 0 for every other source. */
    const char *const *tags;
    uint32_t ntags;
    uint32_t ntags_unknown;
    /* [nids] (at most INGEST_MAX_IDS), borrowed from the batch's arena.
     * A pointer, not an inline array: an event is 232 bytes, where inline
     * slots would make it ~1,100 (55 MB of mostly empty slots for a
     * 50,000-row import batch). */
    const ingest_ident_t *ids;
    size_t nids;
    const json_t *traits;       /* user traits, object or NULL; identifier keys are skipped by
                                 * consumers via ingest_trait_is_ident. NULL for group. */
    const json_t *group_traits; /* group: the group's traits (never the user's), or NULL */
    const json_t *ctx_traits;   /* context.traits, object or NULL */
    const json_t *properties;   /* object or NULL */
    const json_t *raw;          /* the event object itself (borrowed); NULL for typed events */
    /* Typed events (CSV rows through a mapping, mapping_row_event): no JSON;
     * properties / traits / ctx_traits are NULL and these are used instead.
     * Borrowed from the batch's arena. */
    const ev_prop_t *tprops; /* properties */
    size_t ntprops;
    const ev_prop_t *ttraits; /* traits (identify) or context.traits (track) */
    size_t nttraits;
} ingest_event_t;

/* Reason one event of a batch was rejected. */
typedef struct ingest_reject {
    size_t index; /* 0-based position in the batch */
    cp_status code;
    char reason[256];
} ingest_reject_t;

/*
 * A value that was not used, on an event that was applied anyway: an
 * identifier that is a placeholder, blocklisted or cannot be normalised,
 * a trait that does not fit its attribute's type (kept unindexed).
 * `reason` is one of INGEST_WARN_* (static strings).
 */
typedef struct ingest_warning {
    size_t index;   /* the event's position in its request */
    char field[64]; /* "traits.email", "context.device.advertisingId", ... */
    const char *reason;
} ingest_warning_t;

#define INGEST_WARN_PLACEHOLDER "placeholder" /* "", "n/a", all-zero ids, ... */
#define INGEST_WARN_BLOCKLISTED "blocklisted" /* the intake config's blocklist */
#define INGEST_WARN_INVALID "invalid"         /* cannot be normalised (or not text) */
#define INGEST_WARN_TYPE "type_mismatch"      /* does not fit the attribute; kept unindexed */

/* Events of one request or file chunk. Owns the parsed JSON they borrow. */
typedef struct ingest_batch {
    json_t *root;
    ingest_event_t *events;
    size_t n, cap;
    arena_t arena;              /* derived strings */
    ingest_reject_t *rejects;   /* the first INGEST_MAX_REPORTED */
    size_t nrejects;            /* stored */
    size_t rejected;            /* total (may exceed nrejects) */
    ingest_warning_t *warnings; /* the first INGEST_MAX_REPORTED */
    size_t nwarnings;           /* stored */
    size_t warned;              /* total (may exceed nwarnings) */
    json_t *keep;               /* JSON built from the request that events borrow
                                 * (merged contexts); an array or NULL */
} ingest_batch_t;

void ingest_batch_init(ingest_batch_t *b);
void ingest_batch_free(ingest_batch_t *b); /* NULL fine; frees what the events borrow */
/* Empties b for the next batch, keeping its event array: an import reuses
 * one batch instead of faulting ~1 KiB per event of fresh pages each time. */
void ingest_batch_reset(ingest_batch_t *b);
/* Records a rejected event (kept up to INGEST_MAX_REPORTED, counted always). */
void ingest_batch_reject(ingest_batch_t *b, size_t index, cp_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records a warning for the event at request position `index` (kept up
 * to INGEST_MAX_REPORTED, counted always). `reason`: an INGEST_WARN_*. */
void ingest_batch_warn(ingest_batch_t *b, size_t index, const char *field, const char *reason);

/* Identifier types that keys of traits are matched against. */
typedef struct ingest_id_types {
    const char *const *names; /* NULL = the built-in list (ident_builtin_types, normalize.h) */
    size_t n;
} ingest_id_types_t;

typedef struct segment_opts {
    int64_t received_at_ms; /* receive time; 0 = unknown (no skew correction, no default time) */
    int no_skew_correction; /* 1 = use timestamps as sent */
    int allow_other_ids;    /* 1 = any identifier will do, not only userId/anonymousId (imports) */
    int no_dedup;           /* 1 = mark events no_dedup (file imports: resume handles retries) */
    int strict;             /* 1 = a batch with any rejected event is refused whole */
    ingest_id_types_t id_types;
} segment_opts_t;

/*
 * Parses a Segment request body into b (initialised by the caller).
 * `endpoint` is the type of a single-event endpoint (/v1/track ...) or
 * ING_NONE for /v1/batch (a {"batch":[...]} envelope whose top-level
 * `context`, `sentAt` and `integrations` apply to every event; the batch's
 * `context` is merged with each event's, the event's keys winning, one
 * level deep: context.traits, context.device ... merge key by key).
 *
 * Lenient with values, strict with structure: an event is rejected only
 * for a structural fault (not an object, unknown type, no userId /
 * anonymousId, wrong envelope types, oversized, a missing required field);
 * a bad identifier value (empty, not text, too long) is a warning in
 * b->warnings and the value is not used. Whole-body problems (malformed
 * JSON or invalid UTF-8 with its position, not an object, no batch array,
 * oversized body) return CP_EINVAL / CP_ELIMIT with err filled and no
 * events. Rejected events are recorded in b->rejects (index + reason) and
 * left out of b->events; the call returns CP_OK while any event remains,
 * CP_EINVAL (with a summary in err, and no events) when none does, for a
 * rejected single event, or, with o->strict, when any event was rejected.
 */
cp_status segment_parse(ingest_type endpoint, const char *body, size_t len, const segment_opts_t *o,
                        ingest_batch_t *b, cp_error_t *err);

/*
 * Parses one already-decoded Segment event object (NDJSON import lines,
 * batch items) and appends it to b. `ctx_default` / `sent_at` come from a
 * batch envelope (NULL / -1 if none). j is borrowed: it must stay alive as
 * long as b (b->root or the caller owns it). On a bad event returns
 * CP_EINVAL with the reason in err and b unchanged.
 */
cp_status segment_parse_event(json_t *j, ingest_type endpoint, const json_t *ctx_default,
                              int64_t sent_at, const segment_opts_t *o, ingest_batch_t *b,
                              cp_error_t *err);

/* 1 if a trait key names an identifier type of `t` (then it is an
 * identifier, not a trait). */
int ingest_trait_is_ident(const ingest_id_types_t *t, const char *key);

/* "2015-07-10T23:00:00Z" etc. -> seconds; -1 if unparseable (time_parse). */
int ingest_time_parse(const json_t *v, int64_t *secs);

#endif /* CP_INGEST_EVENT_H */
