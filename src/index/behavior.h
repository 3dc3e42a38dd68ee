/*
 * behavior.h — the behaviour index (DESIGN.md §4 "Behaviour"): per series,
 * per UTC day, which users did it and how many times. Implemented by
 * src/index/beh_*.c; beh_int.h says which file holds what.
 *
 * A *series* is an event name alone ("purchase"), or an event name plus one
 * or more indexed property values ("purchase" + stock_code=85123A, or
 * "purchase" + category=x + brand=y). beh_record_event() records one event
 * under the bare event series and under every subset of up to
 * BEH_MAX_FILTERS of the indexed properties it is given, so a did() filter
 * on any such combination is exact (an event with 3 indexed properties
 * feeds 1 + 3 + 3 + 1 = 8 series). Series are identified by a canonical key
 * (beh_series_key: the event and its (name, value) pairs sorted by name)
 * that a dictionary of the index maps to a dense uint32 id; the dictionary
 * is persisted with the index.
 *
 * Property values are text: the caller renders integers in decimal and
 * booleans as "true" / "false" (the planner does the same for did()
 * filters), so {"stock_code": 85123} and stock_code = "85123" meet.
 *
 * A *cell* is one (series, day): `exists` (users who did it that day, count
 * >= 1) and a bit-sliced (count - 1) in up to BEH_MAX_SLICES bitmaps that
 * grow as counts grow; a cell where everyone did it once is one bitmap.
 * In memory a cell of at most 16 users is instead a sorted array of users
 * and counts (inline in the cell for up to 2, else one allocation): most
 * cells of an import are that small, and creating and freeing a roaring
 * bitmap each cost more than the whole array. Cells are kept sparsely (a
 * sorted array of days per series). Counts saturate at 2^32 per (series,
 * day, user).
 *
 * Queries sum counts over a window of days [d0, d1] per user and compare
 * the sum with k (op in = != < <= > >=). Users who never did it have the
 * sum 0 and take part in the comparison: `= 0`, `< 2`, `!= 3`, `<= k`
 * match users without any such event, so callers must clip results to the
 * live universe (the planner's root does). Evaluation is per 65,536-user
 * chunk into dense words: each day's exists bitmap (+1) and count slices
 * (+2^j) are added into a bit-sliced accumulator by a word-level
 * ripple-carry adder, one 1,024-word slice at a time, stopping where no
 * carry is left; the sums are then compared with k by O'Neil's bit-sliced
 * comparison. `>= 1` and `= 0` skip the counts: a plain OR of
 * the days' `exists` chunks.
 *
 * Persistence (store.h), in a sub-database the caller chooses, under keys
 * that start with "beh/" (so the engine may share STORE_META):
 *   beh/s/<series id u32 BE>             -> the series key bytes
 *   beh/d/<series u32 BE><day+2^31 u32 BE><chunk u16 BE> -> one 65,536-user
 *       chunk of a cell: "BC", u8 version 2, u8 nslices, then 1 + nslices
 *       times [u32 LE length][CRoaring portable bytes] (exists, then slices
 *       low bit first, each restricted to the chunk's users; nslices is the
 *       chunk's own: top slices empty in it are left out)
 *   beh/p/<series >> 4 u32 BE><(day >> 4) + 2^31 u32 BE> -> a pack: every
 *       small cell (at most 16 users) of those 16 series and 16 days, "BC",
 *       u8 version 3, u8 0, u32 LE cells, then per cell (in series, day
 *       order) u8 series & 15, u8 day & 15, u8 users n, u8 flags (bit 0:
 *       counts follow), n x u32 LE users ascending [, n x u32 LE count - 1]
 * A cell lies either under its chunk keys or in its pack, never both. A
 * bulk import writes one value per pack it touched rather than one per
 * cell (Online Retail: ~2.6 users per cell, ~28 cells per pack write).
 * Writes mark the chunk of the user they touch dirty (as index.c does for
 * attribute and tag bitmaps); beh_persist() rewrites exactly the dirty
 * chunks (deleting the keys of chunks that became empty, and every key of a
 * cell that went empty or was dropped by retention) and the new dictionary
 * entries, so a commit costs the chunks it touched, not whole cells (a day
 * with 10M active users is 153 chunks). Version 1 (one value per cell under
 * the 14-byte prefix alone) is still read; such cells are rewritten per
 * chunk by the next persist. Bytes read back are untrusted: every bitmap is
 * validated (bm_deserialize_safe), a chunk's bitmaps must lie within the
 * chunk, slices within `exists`, keys in order, and anything malformed is
 * CP_EIO naming its key.
 *
 * Not thread-safe: the engine's rwlock covers it (queries read it shared,
 * writes take it exclusively). Pointers a window borrows stay valid until
 * the next write to the index.
 */
#ifndef CP_INDEX_BEHAVIOR_H
#define CP_INDEX_BEHAVIOR_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "bitmap/bitmap.h"
#include "crowdpack.h"
#include "store/store.h"

#define BEH_MAX_FILTERS 3        /* properties in one series (combination) */
#define BEH_MAX_PROPS 8          /* indexed properties one beh_record_event() takes */
#define BEH_NAME_MAX 255         /* bytes of an event name, property name or value */
#define BEH_KEY_MAX 2048         /* bytes of a canonical series key (bound of the above) */
#define BEH_MAX_SLICES 32        /* count - 1 in 32 bits: counts up to 2^32 */
#define BEH_NO_SERIES UINT32_MAX /* a combination that was never recorded */
#define BEH_MAX_SERIES (UINT32_MAX - 1)
/* Series one event feeds at most: 1 + C(8,1) + C(8,2) + C(8,3). */
#define BEH_MAX_EVENT_SERIES 93

typedef struct beh beh_t;
typedef struct beh_cell beh_cell_t;

/* An event property: name and value text (not NUL-terminated). */
typedef struct beh_prop {
    const char *name;
    size_t nlen;
    const char *value;
    size_t vlen;
} beh_prop_t;

/* Comparison of a windowed count with k (the order of expr_op in ast.h). */
typedef enum beh_cmp { BEH_EQ = 1, BEH_NE, BEH_LT, BEH_LE, BEH_GT, BEH_GE } beh_cmp;

/* One user's count of one series on one day (beh_user_extract). */
typedef struct beh_entry {
    uint32_t series;
    int32_t day;
    uint64_t count; /* 1 .. 2^32 */
} beh_entry_t;

/* ---------------------------------------------------------------- life */

cp_status beh_create(beh_t **out); /* CP_ENOMEM */
void beh_free(beh_t *b);           /* NULL fine */

/* Days since 1970-01-01 (UTC) of seconds since the epoch (floor). */
int32_t beh_day_of(int64_t secs);

/* ---------------------------------------------------------- dictionary */

/*
 * The canonical key of event + props into buf (BEH_KEY_MAX bytes): props are
 * sorted by name, so the order they are given in does not matter.
 * CP_EINVAL: empty event or property name, a name or value longer than
 * BEH_NAME_MAX, the same property twice; CP_ELIMIT: more than
 * BEH_MAX_FILTERS props.
 */
cp_status beh_series_key(const char *event, size_t elen, const beh_prop_t *props, size_t n,
                         uint8_t *buf, size_t *len);
/* The id of a key, creating it (CP_ENOMEM, CP_ELIMIT past BEH_MAX_SERIES). */
cp_status beh_series_intern(beh_t *b, const uint8_t *key, size_t klen, uint32_t *id);
/* 1 and *id if the key is known, else 0. */
int beh_series_lookup(const beh_t *b, const uint8_t *key, size_t klen, uint32_t *id);
uint32_t beh_series_count(const beh_t *b);
/* The key of a series (borrowed until the index is freed); NULL if unknown. */
const uint8_t *beh_series_key_of(const beh_t *b, uint32_t id, size_t *klen);

/*
 * did(): the series of event + filters. CP_ENOTFOUND if the event itself
 * was never recorded (an unknown event); CP_OK with *series =
 * BEH_NO_SERIES when the event is known but that combination of values
 * never occurred (nobody did it). Errors of beh_series_key otherwise.
 */
cp_status beh_resolve(const beh_t *b, const char *event, size_t elen, const beh_prop_t *filters,
                      size_t n, uint32_t *series);

/* --------------------------------------------------------------- writes */

/* Adds delta (>= 1) to user's count of `series` on `day` (saturating at
 * 2^32). CP_EINVAL for delta 0 or an unknown series, CP_ENOMEM. */
cp_status beh_record(beh_t *b, uint32_t series, int32_t day, uint32_t user, uint64_t delta);

/*
 * Records one event: under the bare event series and under every subset of
 * 1..BEH_MAX_FILTERS of `props` (the event's indexed properties only, at
 * most BEH_MAX_PROPS, distinct names), creating series as needed.
 * Validates everything before changing anything (CP_EINVAL, CP_ELIMIT);
 * CP_ENOMEM may leave some of the series recorded.
 */
cp_status beh_record_event(beh_t *b, const char *event, size_t elen, const beh_prop_t *props,
                           size_t n, int32_t day, uint32_t user, uint64_t delta);

/*
 * The series beh_record_event(b, event, elen, props, n, ...) records:
 * their ids (interned, created as needed) into ids[0..*nids), the bare
 * event first. The same validation, before anything is created:
 * CP_EINVAL (event, names, values, a name twice, or cap below the number
 * of series, which BEH_MAX_EVENT_SERIES always covers), CP_ELIMIT (more
 * than BEH_MAX_PROPS props); CP_ENOMEM or CP_ELIMIT (dictionary full)
 * may leave some series created. Bulk intake resolves an event's series
 * once and records them with beh_record_many.
 */
cp_status beh_event_series(beh_t *b, const char *event, size_t elen, const beh_prop_t *props,
                           size_t n, uint32_t *ids, size_t cap, size_t *nids);

/* One event of one user in one series on one day (beh_record_many). */
typedef struct beh_rec {
    uint32_t series;
    int32_t day;
    uint32_t user;
} beh_rec_t;

/*
 * The same as beh_record(b, r.series, r.day, r.user, 1) for every record
 * (so a record repeated k times adds k), in one pass per cell: the records
 * are sorted by (series, day, user) (a radix sort; recs itself may be
 * reordered), each cell is found once, users new to it go in with one
 * sorted insert, and each chunk is marked dirty once. Scratch of about 40
 * bytes per record is kept in b for the next call. CP_EINVAL (an unknown
 * series; nothing changes), CP_ENOMEM (some records may be applied).
 */
cp_status beh_record_many(beh_t *b, beh_rec_t *recs, size_t n);

/* Removes the user from every cell (deletion). */
void beh_user_remove(beh_t *b, uint32_t user);
/*
 * beh_user_remove for a deleted user, which also forgets the property
 * values the user sent: every series carrying property values that the
 * user leaves without any cell gets a key naming no value (its event, and
 * a NUL-named property holding the series id, which no did() filter can
 * match), in memory and, for series already persisted, as its dictionary
 * row in `db` within txn. Series ids stay (never reused).
 */
cp_status beh_user_forget(beh_t *b, uint32_t user, store_txn_t *txn, store_db db, cp_error_t *err);

/*
 * The user's behaviour as (series, day, count) entries ordered by series
 * then day: for lineage snapshots before a merge, and for unmerge.
 * *out is malloc'ed (NULL when *n is 0): the caller frees it with free().
 */
cp_status beh_user_extract(const beh_t *b, uint32_t user, beh_entry_t **out, size_t *n);
/* Adds the entries' counts to `user` (re-insert after an unmerge, or the
 * other side of a merge). CP_EINVAL on an unknown series or a count of 0
 * (checked before anything changes). */
cp_status beh_user_insert(beh_t *b, uint32_t user, const beh_entry_t *e, size_t n);
/* Identity merge: adds `from`'s counts to `to` and removes `from`. */
cp_status beh_user_move(beh_t *b, uint32_t from, uint32_t to);

/* A compact, versioned byte form of entries (for lineage records):
 * appended to *out (malloc'ed buffer grown with realloc; *len updated). */
cp_status beh_entries_encode(const beh_entry_t *e, size_t n, uint8_t **out, size_t *len);
/* Decodes untrusted bytes: CP_EIO if malformed. *out freed with free(). */
cp_status beh_entries_decode(const void *buf, size_t len, beh_entry_t **out, size_t *n);

/* Retention: drops every cell of a day < cutoff (their keys are deleted by
 * the next beh_persist). Returns the number of cells dropped. */
size_t beh_retain(beh_t *b, int32_t cutoff);

/* A user's count of one series on one day (0 if none). */
uint64_t beh_count(const beh_t *b, uint32_t series, int32_t day, uint32_t user);
/* Oldest and newest day with data (0 if the index is empty). */
int beh_day_range(const beh_t *b, int32_t *first, int32_t *last);

/* ---------------------------------------------------------------- query */

/* The cells of one series within [d0, d1]: borrowed from the index, valid
 * until the next write. Plain data, copyable; no allocation. */
typedef struct beh_window {
    const beh_cell_t *cells;
    uint32_t ncells;
    int slices; /* accumulator slices: every windowed sum fits */
    int days;   /* 1: each day counts 1 however many events it had (beh_window_days) */
} beh_window_t;

/* Fills w (an empty window if series is BEH_NO_SERIES or unknown, or d0 > d1). */
void beh_window_init(const beh_t *b, uint32_t series, int32_t d0, int32_t d1, beh_window_t *w);
/* Turns w into a count of active days: the per-user sum is the number of
 * the window's days with at least one event (did(...) days >= k). */
void beh_window_days(beh_window_t *w);
/*
 * Calls fn(ctx, user, count) for every user of every cell of the window,
 * in pieces: a user's count on one day may come in several calls (the
 * cell's exists bit, then one call per count slice), which add up to it.
 * For windows read user by user (did() sum(), whose values live in count
 * series: index/measure.h, beh_sum_series_key). Allocates nothing.
 */
void beh_window_foreach(const beh_window_t *w, void (*fn)(void *ctx, uint32_t user, uint64_t count),
                        void *ctx);
/*
 * The series keeping the day sums of a numeric property of an event: the
 * positive parts (neg = 0) or the magnitudes of the negative parts (neg =
 * 1), in fixed point, as counts of a series keyed by the event and a
 * property name that no filter can spell ("+sum" / "-sum") whose value is
 * the property's name. Errors of beh_series_key.
 */
cp_status beh_sum_series_key(const char *event, size_t elen, const char *prop, size_t plen, int neg,
                             uint8_t *buf, size_t *len);

/* 1 if a sum of 0 satisfies `op k` (users who never did it match). */
int beh_cmp_zero(beh_cmp op, uint64_t k);
/* Upper bound of the number of users matching (ignores the universe for
 * comparisons that include 0: the caller bounds those by the universe). */
uint64_t beh_window_estimate(const beh_window_t *w, beh_cmp op, uint64_t k);
/* Scratch words beh_window_chunk needs (64-byte aligned, ZEROED before the
 * first call; every call leaves it zeroed again). */
size_t beh_window_scratch_words(const beh_window_t *w);
/*
 * dst (CP_CHUNK_WORDS) = users u of chunk `key` whose sum of counts over the
 * window satisfies `sum op k`; bits of users who never did it are set when
 * 0 op k holds (callers clip to the universe). Returns 0 if dst is all
 * zeros. Allocates nothing.
 */
int beh_window_chunk(const beh_window_t *w, uint16_t key, beh_cmp op, uint64_t k, uint64_t *dst,
                     uint64_t *scratch);
/* Whole-bitmap form, clipped to `universe`: out (empty on entry) receives
 * the members. CP_ENOMEM. */
cp_status beh_window_eval(const beh_window_t *w, beh_cmp op, uint64_t k,
                          const roaring_bitmap_t *universe, roaring_bitmap_t *out);

/* ---------------------------------------------------------- persistence */

/* Writes the dirty cells and the new dictionary entries into `db` of txn
 * and clears the dirty marks (only when everything was written). */
cp_status beh_persist(beh_t *b, store_txn_t *txn, store_db db, cp_error_t *err);
/* Loads everything under "beh/" of `db` into an empty index. CP_EIO naming
 * the key for corrupt data; CP_EINVAL if b is not empty. */
cp_status beh_load(beh_t *b, store_txn_t *txn, store_db db, cp_error_t *err);
/* Marks every cell and dictionary entry dirty (after a wholesale rewrite). */
void beh_mark_all_dirty(beh_t *b);
/* Number of cells waiting for beh_persist (tests, metrics). */
size_t beh_dirty_count(const beh_t *b);
/* Number of chunk values the next beh_persist writes or deletes (a cell
 * that went counts 1). */
size_t beh_dirty_chunk_count(const beh_t *b);

/* Bitmap bytes (and the small cells' arrays) and the number of cells. */
void beh_memory(const beh_t *b, uint64_t *bitmap_bytes, uint64_t *cells);
/* Cells in each in-memory form: small (a sorted array of at most 16 users
 * and their counts) and roaring (exists + count slices). Tests, metrics. */
void beh_cell_forms(const beh_t *b, uint64_t *small, uint64_t *roaring);

#endif /* CP_INDEX_BEHAVIOR_H */
