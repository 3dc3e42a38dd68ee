/*
 * rules.h — the validation rules of intake, private to src/ingest/: one
 * copy for both paths that make events, Segment JSON (segment.c) and CSV
 * rows through a column mapping (mapping_event.c). Each path reads its own
 * input (a JSON value, a converted cell) and asks these functions what the
 * value means for the event: use it, drop it with a warning, or reject the
 * event. docs/intake.md "Lenient with values, strict with structure" is
 * the user-facing statement of the same rules.
 *
 * What is NOT here, because the engine decides it with the schema and the
 * identity configuration at hand (and so does it once for both paths):
 * placeholder and blocklisted identifier values ("n/a", all-zero
 * advertising ids: ident_value_unusable, src/model/normalize.c),
 * normalisation with the locale's phone hint (ident_key_hint), and traits
 * that do not fit their attribute's type (src/engine/events.c, warning
 * "type_mismatch").
 *
 * Messages name the field as the Segment payload spells it ("userId",
 * "traits.email", "event"); the mapping path prefixes them with
 * "line N: ". Every function writes err only when it returns non-CP_OK.
 */
#ifndef CP_INGEST_RULES_H
#define CP_INGEST_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "ingest/event.h"

/*
 * A text field of an event: an event name, a page name, a messageId, an
 * identifier. Faults, in this order: empty (unless `empty_ok`), longer
 * than `max` bytes (CP_ELIMIT), holding a control byte (CP_EINVAL).
 * `known_printable`: the caller already knows s has no control byte.
 */
cp_status rule_text(const char *field, const char *s, size_t len, size_t max, int empty_ok,
                    int known_printable, cp_error_t *err);

/* Where an identifier was found decides what a bad value costs. */
typedef enum rule_id_where {
    RULE_ID_ENVELOPE = 1, /* userId, anonymousId: the event's own id */
    RULE_ID_ELSEWHERE,    /* traits, context.traits, context.device, externalIds */
} rule_id_where;

/*
 * One identifier value: s[0..len) as text (integers already written in
 * decimal), or `not_text` naming what it was instead ("an object", "a
 * boolean"; NULL when it is text). Returns CP_OK with *use = 1 when the
 * value is an identifier, CP_OK with *use = 0 when it is not used and a
 * warning went to b for the event at `index` (an empty string is a
 * "placeholder"; any other fault is "invalid" — only RULE_ID_ELSEWHERE,
 * and the empty string under RULE_ID_ENVELOPE), or the status rejecting
 * the event (RULE_ID_ENVELOPE: not text, too long, control bytes).
 */
cp_status rule_id_value(ingest_batch_t *b, uint32_t index, rule_id_where where, const char *field,
                        const char *s, size_t len, const char *not_text, int known_printable,
                        int *use, cp_error_t *err);

/*
 * Adds identifier (type, value) to ids[0..*n) unless the same pair is
 * there already (one person, named twice). CP_ELIMIT past INGEST_MAX_IDS.
 * value and field are borrowed; `type` is copied (tlen bytes, cut to fit).
 */
cp_status rule_id_add(ingest_ident_t *ids, size_t *n, const char *type, size_t tlen,
                      const char *value, size_t len, const char *field, cp_error_t *err);

/* An event needs a userId or an anonymousId, or with o->allow_other_ids
 * (imports) any identifier. CP_EINVAL otherwise. */
cp_status rule_id_required(int has_user, int has_anon, size_t nids, const segment_opts_t *o,
                           cp_error_t *err);

/* The earliest and latest event times (0001-01-01 .. 9999-12-31 UTC, what
 * time_parse reads and time_format writes). */
#define RULE_TS_MIN (-62135596800ll)
#define RULE_TS_MAX (253402300799ll)

/* A timestamp field whose text (`text`, shown cut to 64 bytes) is not a
 * time: CP_EINVAL. */
cp_status rule_time_bad(const char *field, const char *text, cp_error_t *err);

/*
 * The event time: `ts` when the event has one (has_ts), else the receive
 * time `recv` (seconds; 0 = unknown: then CP_EINVAL, the event has no
 * time). With `sent` (has_sent: the sender's clock when it sent the
 * event) and a receive time, Segment's clock-skew correction applies
 * unless `no_skew`: ts + (recv - sent), never later than recv.
 */
cp_status rule_event_time(int has_ts, int64_t ts, int has_sent, int64_t sent, int64_t recv,
                          int no_skew, int64_t *out, cp_error_t *err);

/* An event of `bytes` bytes (its compact JSON): CP_ELIMIT past
 * INGEST_EVENT_MAX. */
cp_status rule_event_size(size_t bytes, cp_error_t *err);

/* The messageId's dedup key (event.h: message_hash). */
uint64_t rule_message_hash(const char *id, size_t len);

/* Warnings recorded for an event that is then rejected go with it: take a
 * mark before reading the event, drop back to it on rejection. */
typedef struct rule_warn_mark {
    size_t warned, nwarnings;
} rule_warn_mark_t;

static inline rule_warn_mark_t rule_warn_mark(const ingest_batch_t *b)
{
    rule_warn_mark_t m = {b->warned, b->nwarnings};
    return m;
}

static inline void rule_warn_drop(ingest_batch_t *b, rule_warn_mark_t m)
{
    b->warned = m.warned;
    b->nwarnings = m.nwarnings;
}

#endif /* CP_INGEST_RULES_H */
