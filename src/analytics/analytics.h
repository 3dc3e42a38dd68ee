/*
 * analytics.h — the private side of the analytics layer (DESIGN.md §2,
 * src/analytics/): insight (share and TGI per tag and attribute value),
 * overlap of crowds, k-means clustering and member tiers. The public
 * entry points are the cp_insight_json, cp_overlap_json, cp_cluster_json
 * and cp_tiers_* functions of crowdpack.h ("analytics" section); this
 * header holds what their files share and what the benchmark calls
 * directly (the counting core over plain bitmaps).
 *
 * Every report applies a minimum count (k-anonymity): a cell counting
 * fewer users than `min_count` shows no count, share or ratio. The
 * database setting (STORE_META "analytics/min_count", default 50) is the
 * floor; a request may raise it, never lower it, so a read-only API key
 * cannot undo the data owner's choice.
 *
 * Locking: functions taking a cp_db_t * and named ana_*_locked expect the
 * caller to hold the engine's read lock (db_read_begin); bitmaps they
 * return borrowed stay valid until db_read_end.
 */
#ifndef CP_ANALYTICS_H
#define CP_ANALYTICS_H

#include <jansson.h>
#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "bitmap/bitmap.h"
#include "crowdpack.h"
#include "engine/engine.h"

#define ANA_DEFAULT_MIN_COUNT 50u
#define ANA_MAX_MIN_COUNT 1000000000u
#define ANA_MAX_OVERLAP 10    /* crowds in one overlap report */
#define ANA_MAX_CELLS 200000u /* cells of one insight report */
#define ANA_MAX_BUCKETS 256u  /* buckets of one int/timestamp attribute */
/* String attributes with more values than this are skipped by default. */
#define ANA_MAX_STRING_VALUES 1000u
#define ANA_REQUEST_MAX (1u << 20) /* bytes of a JSON request */
#define ANA_MAX_THREADS 16

/* ----------------------------------------------------------- kernels */

/* popcount(a & b) over CP_CHUNK_WORDS words. */
uint64_t ana_dense_and_count(const uint64_t *a, const uint64_t *b);
/* |ch & d| without materialising: bitsets by the kernel, arrays by bit
 * tests, runs by range popcounts. Absent chunk: 0. */
uint64_t ana_chunk_and_count(const bm_chunk_t *ch, const uint64_t *d);

/* 64-byte aligned CP_CHUNK_WORDS * n words; free() it. NULL on ENOMEM. */
uint64_t *ana_dense_alloc(size_t n);

/* ---------------------------------------------------- counting core */

/*
 * What one insight cell counts: the users of a bitmap (tag, attribute
 * value), or those whose BSI value lies in [lo, hi]. Results land in
 * n_crowd (|crowd ∩ cell|) and n_base (|baseline ∩ cell|).
 */
typedef struct ana_cell {
    const roaring_bitmap_t *bm; /* or NULL for a BSI range */
    const bsi_t *bsi;
    int64_t lo, hi;
    uint64_t n_crowd, n_base;
} ana_cell_t;

/*
 * Counts every cell against `crowd` and `baseline` chunk by chunk: each
 * chunk of the crowd (and baseline) is loaded once into dense words, then
 * each cell's container of that chunk is intersected and counted in
 * place. `baseline` NULL means "all users": `universe` is then the
 * baseline, and bitmap cells (which hold only live users) take their
 * baseline count from their cardinality. Chunks are split over `threads`
 * threads (<= 1: the caller's). Bitmaps are only read.
 */
cp_status ana_count_cells(const roaring_bitmap_t *crowd, const roaring_bitmap_t *baseline,
                          const roaring_bitmap_t *universe, ana_cell_t *cells, size_t n,
                          int threads);

/* Threads to use for a job over `chunks` chunks (1 for small jobs). */
int ana_threads_for(uint32_t chunks);

/* ---------------------------------------------------------- helpers */

/* Parses a JSON request object (NULL/empty = {}), with limits. */
cp_status ana_parse_request(const char *json, size_t len, json_t **out, cp_error_t *err);

/*
 * A set of users named in a request: a JSON string (a crowd name) or an
 * object {"crowd": NAME} / {"expression": TEXT} / {"tree": {...}}. `what`
 * names it in messages ("crowd", "baseline", "crowds[3]"). Evaluates under
 * the read lock the caller holds: *out is a new bitmap (caller frees),
 * restricted to live users. *label gets a short JSON description of the
 * set (new reference) for the report.
 */
cp_status ana_set_eval_locked(cp_db_t *db, const json_t *spec, const char *what,
                              roaring_bitmap_t **out, json_t **label, cp_error_t *err);
/* The same with expressions evaluated as of `as_of_day` (days since
 * 1970-01-01 UTC; 0 = today) unless the spec gives its own "as_of": a
 * report over a historical window evaluates its crowd on that window's
 * last day. */
cp_status ana_set_eval_locked_as_of(cp_db_t *db, const json_t *spec, const char *what,
                                    int32_t as_of_day, roaring_bitmap_t **out, json_t **label,
                                    cp_error_t *err);

/* The database's minimum count (setting, default 50): read lock held. */
cp_status ana_min_count_locked(cp_db_t *db, uint64_t *out, cp_error_t *err);
/* The minimum for a request: max(setting, request "min_count"). */
cp_status ana_min_count_request(cp_db_t *db, const json_t *req, uint64_t *out, cp_error_t *err);

/* Reads an optional non-negative integer member (absent: *out untouched). */
cp_status ana_get_uint(const json_t *obj, const char *field, uint64_t max, uint64_t *out,
                       cp_error_t *err);
/* Checks that obj has only members named in `allowed` (NULL-terminated). */
cp_status ana_check_fields(const json_t *obj, const char *what, const char *const *allowed,
                           cp_error_t *err);

/* Smallest and largest value of a BSI among `among` (NULL = all): 0 when
 * nobody there has a value. Allocates temporaries: CP_ENOMEM. */
cp_status ana_bsi_minmax(const bsi_t *b, const roaring_bitmap_t *among, int *found, int64_t *min,
                         int64_t *max);

/* A share rounded for reports (6 significant digits). */
double ana_round(double v);

/* Settings kept in STORE_META (text keys). */
#define ANA_META_MIN_COUNT "analytics/min_count"
#define ANA_META_TIERS "analytics/tiers"

/* Reads a meta value into a malloc'ed NUL-terminated string (*out NULL
 * when absent). Read lock held (any lock: it uses its own read txn). */
cp_status ana_meta_get(cp_db_t *db, const char *key, char **out, cp_error_t *err);

/* The insight of `crowd` against the population of `base` (tags only),
 * top `top` over-indexed tags under `min_count`: a JSON array (new
 * reference) for cluster summaries. Read lock held. */
cp_status ana_top_tags_locked(cp_db_t *db, const roaring_bitmap_t *crowd,
                              const roaring_bitmap_t *base, uint64_t min_count, size_t top,
                              json_t **out, cp_error_t *err);

/* The JSON text of an int/timestamp value for expressions: "42" or
 * "2024-01-01T00:00:00Z" (quoted) for timestamps. buf >= 48. */
const char *ana_value_text(cp_attr_type t, int64_t v, char *buf, size_t cap);

#endif /* CP_ANALYTICS_H */
