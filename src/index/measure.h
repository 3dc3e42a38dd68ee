/*
 * measure.h — event measures: per user, configurable aggregates over the
 * events intake applies: what the behaviour index (counts per day) cannot
 * give, such as the net amounts, distinct invoices and last purchase times
 * RFM needs.
 *
 * A *measure* has a name, a kind, the events it listens to and (for sum
 * and distinct) one property:
 *
 *   sum       the sum of a numeric property in fixed point: each event's
 *             value is rounded to `scale` decimals (half away from zero)
 *             and kept as an integer (scale 2: cents), so sums are exact
 *             and independent of the order events arrive in; |sum| is
 *             bounded by INT64_MAX (saturates, flagged);
 *   count     the number of events;
 *   distinct  the number of distinct values of a property: a per-user set
 *             of 64-bit xxh3 hashes of the value text (integers rendered
 *             in decimal, so 536365 and "536365" meet). Exact unless two
 *             values collide (probability ~ n^2 / 2^65: 1e-10 at 65,536
 *             values); at MEAS_DISTINCT_MAX values a user's set stops
 *             growing and the value is flagged saturated (a lower bound);
 *   first     the earliest event time (seconds since the epoch, UTC);
 *   last      the latest event time.
 *
 * Events whose property is missing or not a number (sum) are not counted
 * by that measure (meas_skipped() counts them); they never fail intake.
 * Every value also carries n, the number of events it aggregates, so "has
 * a value" is n > 0.
 *
 * Configuration (JSON, meas_config_set_json):
 *   {"measures":[{"name":"net_amount","kind":"sum","events":["purchase",
 *     "refund"],"property":"amount","scale":2}, ...]}
 * Without one the defaults of meas_create() apply (MEAS_DEFAULT_JSON).
 * Measures accumulate from the moment they are configured: the index does
 * not keep raw events, so a new or changed measure starts empty (re-import
 * the events to fill it); an unchanged one (same name, kind, events,
 * property, scale) keeps its values across a configuration change.
 *
 * Identity: meas_user_move() combines two users on a merge (sums and
 * counts add, sets unite, first takes the minimum, last the maximum).
 * An unmerge cannot split aggregates: the values stay with the survivor.
 *
 * Persistence (store.h), under keys starting with "meas/" of the
 * sub-database the caller chooses:
 *   meas/config                       -> the configuration JSON, with ids
 *   meas/u/<ordinal u32 BE>           -> one user: "MU", u8 version 1,
 *       u8 nslots, then per slot: u16 LE measure id, u8 kind, u8 flags,
 *       i64 LE value, u64 LE n, and for distinct u32 LE k + k u64 LE hashes
 * Writes mark their user dirty; meas_persist() rewrites exactly the dirty
 * users (deleting the keys of removed ones). Bytes read back are
 * untrusted: lengths, kinds, counts and hashes are checked and anything
 * malformed is CP_EIO naming the key; slots of measures no longer
 * configured are dropped.
 *
 * Not thread-safe: the engine's rwlock covers it, like the behaviour index.
 */
#ifndef CP_INDEX_MEASURE_H
#define CP_INDEX_MEASURE_H

#include <jansson.h>
#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/propval.h"
#include "store/store.h"

#define MEAS_MAX 32              /* measures in a configuration */
#define MEAS_MAX_EVENTS 16       /* events one measure listens to */
#define MEAS_NAME_MAX 64         /* bytes of a measure name */
#define MEAS_EVENT_MAX 255       /* bytes of an event or property name */
#define MEAS_MAX_SCALE 6         /* decimals of a sum */
#define MEAS_DISTINCT_MAX 65536u /* values of one user's distinct set */

#define MEAS_FLAG_SATURATED 1u /* a distinct set or a sum hit its bound */

/* The default configuration: what RFM and AIPL read. */
#define MEAS_DEFAULT_JSON                                                                          \
    "{\"measures\":["                                                                              \
    "{\"name\":\"net_amount\",\"kind\":\"sum\",\"events\":[\"purchase\",\"refund\"],"              \
    "\"property\":\"amount\",\"scale\":2},"                                                        \
    "{\"name\":\"invoices\",\"kind\":\"distinct\",\"events\":[\"purchase\"],"                      \
    "\"property\":\"invoice\"},"                                                                   \
    "{\"name\":\"purchases\",\"kind\":\"count\",\"events\":[\"purchase\"]},"                       \
    "{\"name\":\"first_purchase\",\"kind\":\"first\",\"events\":[\"purchase\"]},"                  \
    "{\"name\":\"last_purchase\",\"kind\":\"last\",\"events\":[\"purchase\"]}]}"

typedef enum meas_kind {
    MEAS_SUM = 1,
    MEAS_COUNT = 2,
    MEAS_DISTINCT = 3,
    MEAS_FIRST = 4,
    MEAS_LAST = 5,
} meas_kind;

typedef struct meas meas_t;

/* One user's value of one measure (meas_get). */
typedef struct meas_value {
    int64_t v;      /* sum (fixed point), distinct count, first/last time; count: = n */
    uint64_t n;     /* events aggregated; 0 = no value */
    unsigned flags; /* MEAS_FLAG_* */
} meas_value_t;

/* Creates an index with the default configuration. CP_ENOMEM. */
cp_status meas_create(meas_t **out);
void meas_free(meas_t *m); /* NULL fine */

/* ------------------------------------------------------- configuration */

/*
 * Validates and applies a configuration (see the header comment).
 * CP_EINVAL naming the field; nothing changes on failure. Measures that
 * did not change keep their values; the others start empty.
 */
cp_status meas_config_set_json(meas_t *m, const json_t *cfg, cp_error_t *err);
/* The configuration as JSON (new reference; NULL on ENOMEM), with each
 * measure's "scale" for sums and "users" (users with a value). */
json_t *meas_config_json(const meas_t *m);

/* The index of the measure `name` (0..count-1) or -1; *kind and *scale
 * (NULL fine) describe it. */
int meas_find(const meas_t *m, const char *name, meas_kind *kind, int *scale);
size_t meas_count(const meas_t *m);
const char *meas_kind_name(meas_kind k);

/* --------------------------------------------------------------- writes */

/*
 * Feeds one event (name, properties object or NULL, time in seconds) of
 * `user` to every measure that listens to it. CP_ENOMEM only (bad values
 * are skipped and counted).
 */
cp_status meas_record_event(meas_t *m, uint32_t user, const char *event, size_t elen,
                            const json_t *props, int64_t ts);
/*
 * The typed form of meas_record_event, with the same meaning: props[0..n)
 * (borrowed for the call; the first of a name counts) as PV_INT for a
 * JSON integer, PV_REAL for a JSON real, PV_STR for a string, PV_BOOL,
 * and PV_NONE (or absent) for a missing value. Sums take integers, reals
 * and numeric strings; distinct sets take any value but PV_NONE, as text
 * (pv_text). CP_ENOMEM only. The bulk-import path: no JSON per event.
 */
cp_status meas_record(meas_t *m, uint32_t user, const char *event, size_t elen,
                      const ev_prop_t *props, size_t n, int64_t ts);
/* Removes the user's values (deletion). */
void meas_user_remove(meas_t *m, uint32_t user);

/* One property value of an event in fixed point (meas_event_sums). */
typedef struct meas_sum_value {
    const char *prop; /* borrowed from the configuration */
    size_t plen;
    int scale;
    int64_t v;
} meas_sum_value_t;

/*
 * The values the sum measures listening to `event` take from props[0..n)
 * (the typed event of meas_record), one per distinct property (the first
 * sum measure of a property sets its scale), into out[0..cap): did()
 * sum() keeps them per user and day in the behaviour index. Properties
 * missing or not numeric are left out. Returns the number written.
 */
size_t meas_event_sums(const meas_t *m, const char *event, size_t elen, const ev_prop_t *props,
                       size_t n, meas_sum_value_t *out, size_t cap);
/* 1 and *scale if a sum measure listening to `event` sums `prop`. */
int meas_sum_scale(const meas_t *m, const char *event, size_t elen, const char *prop, size_t plen,
                   int *scale);
/* The fixed-point form of a number with `scale` decimals, as sums keep
 * it (integers exactly, reals by meas_real_fixed). 0 on success, -1 out
 * of range. */
int meas_number_fixed(const ev_prop_t *p, int scale, int64_t *out);
/* Identity merge: combines `from` into `to` and removes `from`. CP_ENOMEM. */
cp_status meas_user_move(meas_t *m, uint32_t from, uint32_t to);

/* ---------------------------------------------------------------- reads */

/* 1 and *out if the user has a value of measure `idx`, else 0. */
int meas_get(const meas_t *m, int idx, uint32_t user, meas_value_t *out);
/* Users with any value (borrowed until the next write). */
const roaring_bitmap_t *meas_users(const meas_t *m);
/* Events skipped because a property was missing or not numeric. */
uint64_t meas_skipped(const meas_t *m);
/* Approximate heap bytes. */
uint64_t meas_memory(const meas_t *m);

/* ---------------------------------------------------------- persistence */

/* Writes the configuration if it changed and the dirty users; clears the
 * marks only when everything was written. */
cp_status meas_persist(meas_t *m, store_txn_t *txn, store_db db, cp_error_t *err);
/* Loads everything under "meas/" of `db` into an index fresh from
 * meas_create(). CP_EIO naming the key for corrupt data. */
cp_status meas_load(meas_t *m, store_txn_t *txn, store_db db, cp_error_t *err);
/* Number of users waiting for meas_persist (tests). */
size_t meas_dirty_count(const meas_t *m);

/* ------------------------------------------------------------ rounding */

/*
 * A real in fixed point with `scale` (0..MEAS_MAX_SCALE) decimals, rounded
 * half away from zero from the shortest decimal text that reads back as d
 * (what a sum adds for a PV_REAL). 0 on success, -1 for NaN, infinities,
 * out-of-range values or a bad scale. meas_real_fixed answers values with
 * at most `scale` decimals without formatting text; meas_real_fixed_slow
 * always formats (fmt_double) — the reference the fast one is tested
 * against. Both give the same answer for every double.
 */
int meas_real_fixed(double d, int scale, int64_t *out);
int meas_real_fixed_slow(double d, int scale, int64_t *out);

#endif /* CP_INDEX_MEASURE_H */
