/*
 * bitmap.h — everything about sets of users (DESIGN.md §2, src/bitmap/).
 *
 * Users are uint32 ordinals. Sets are CRoaring bitmaps. Queries evaluate
 * chunk by chunk: a chunk is the 65,536 users sharing the high 16 bits of
 * their ordinal (one CRoaring container), held densely as 1,024 uint64
 * words. The dense kernels are ours (Debian's CRoaring is built without
 * SIMD) and are compiled per CPU with target_clones.
 *
 * Layering: includes only util/ and CRoaring.
 */
#ifndef CP_BITMAP_H
#define CP_BITMAP_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

#define CP_CHUNK_BITS 65536u
#define CP_CHUNK_WORDS 1024u

/* ------------------------------------------------------- dense kernels
 * All take arrays of exactly CP_CHUNK_WORDS words, 64-byte aligned. */
void dense_zero(uint64_t *dst);
void dense_fill(uint64_t *dst);
void dense_copy(uint64_t *dst, const uint64_t *src);
void dense_and(uint64_t *dst, const uint64_t *src);      /* dst &= src */
void dense_or(uint64_t *dst, const uint64_t *src);       /* dst |= src */
void dense_andnot(uint64_t *dst, const uint64_t *src);   /* dst &= ~src */
void dense_not(uint64_t *dst, const uint64_t *universe); /* dst = universe & ~dst */
uint64_t dense_popcount(const uint64_t *src);
uint64_t dense_or_popcount(const uint64_t *a, const uint64_t *b); /* popcount(a | b) */
int dense_any(const uint64_t *src);                               /* non-zero if any bit set */

/* dst = pos[0] & ... & pos[np-1] & ~(neg[0] | ... | neg[nn-1]), np >= 1,
 * in one pass for up to 4 positive and 2 negative chunks (fused.c). dst
 * may not alias a source. */
void dense_and_fused(uint64_t *dst, const uint64_t *const *pos, int np, const uint64_t *const *neg,
                     int nn);

/* Over n words (any n), for the hardware-floor benchmark and bulk work:
 * returns popcount(((a & b & c) & ~d) | e). */
uint64_t dense_floor5(const uint64_t *a, const uint64_t *b, const uint64_t *c, const uint64_t *d,
                      const uint64_t *e, size_t n);

/* -------------------------------------------------- container access
 * A view of one CRoaring container (shared containers unwrapped), read in
 * place without copying. Valid while the bitmap is not modified. */
typedef struct bm_chunk {
    uint8_t type;  /* BITSET/ARRAY/RUN_CONTAINER_TYPE_CODE; 0 = empty/absent */
    const void *c; /* the container */
} bm_chunk_t;

/*
 * Finds the container of `key` in `bm`. `*cursor` (start at 0) makes a
 * scan over increasing keys O(1) amortised; it is advanced past smaller
 * keys. Returns 1 and fills *out when present, 0 when the chunk is empty.
 */
int bm_chunk_find(const roaring_bitmap_t *bm, uint16_t key, int32_t *cursor, bm_chunk_t *out);

/* Number of containers and the key of the i-th, for walking a bitmap. */
int32_t bm_chunk_count(const roaring_bitmap_t *bm);
uint16_t bm_chunk_key(const roaring_bitmap_t *bm, int32_t i);
/* The i-th container as a view. */
void bm_chunk_at(const roaring_bitmap_t *bm, int32_t i, bm_chunk_t *out);

void chunk_load(const bm_chunk_t *ch, uint64_t *dst);   /* dst = ch (absent = zero) */
void chunk_and(const bm_chunk_t *ch, uint64_t *dst);    /* dst &= ch */
void chunk_or(const bm_chunk_t *ch, uint64_t *dst);     /* dst |= ch */
void chunk_andnot(const bm_chunk_t *ch, uint64_t *dst); /* dst &= ~ch */
uint64_t chunk_cardinality(const bm_chunk_t *ch);
/* Whether the chunk holds the user whose low 16 bits are `low` (absent: 0). */
int chunk_contains(const bm_chunk_t *ch, uint16_t low);
/* The 1,024 words of a bitset container, or NULL for other kinds. */
const uint64_t *chunk_bitset_words(const bm_chunk_t *ch);

/*
 * Appends the dense chunk `words` as the container for `key` to `bm`
 * (choosing array, bitset or run form). `key` must be greater than every
 * key already in `bm`. An empty chunk appends nothing.
 */
cp_status bm_append_dense(roaring_bitmap_t *bm, uint16_t key, const uint64_t *words);

/* Validates untrusted serialized bytes and deserializes (portable format).
 * NULL on corrupt input. Caller frees with roaring_bitmap_free. */
roaring_bitmap_t *bm_deserialize_safe(const void *buf, size_t len);

/* ---------------------------------------------------- bit-sliced index
 *
 * A signed int64 per user: `exists` (users having a value), `sign`
 * (negative values) and `nslices` bit slices of the two's-complement
 * value (low bits). nslices grows as values need it, so every value fits
 * in nslices signed bits; comparisons are O'Neil's range algorithm:
 * O(nslices) bitmap operations, independent of the number of users.
 */
#define BSI_MAX_SLICES 64
typedef struct bsi {
    roaring_bitmap_t *exists;
    roaring_bitmap_t *sign;
    int nslices;
    roaring_bitmap_t *slices[BSI_MAX_SLICES];
} bsi_t;

bsi_t *bsi_create(void);                                /* NULL on ENOMEM */
void bsi_free(bsi_t *b);                                /* NULL fine */
cp_status bsi_set(bsi_t *b, uint32_t user, int64_t v);  /* overwrites */
int bsi_get(const bsi_t *b, uint32_t user, int64_t *v); /* 1 if the user has a value */
void bsi_clear(bsi_t *b, uint32_t user);
/* Grows the slice count to n (for loading from storage). */
cp_status bsi_ensure_slices(bsi_t *b, int n);

/*
 * dst = users of chunk `key` whose value v has lo <= v <= hi. `scratch` is
 * 3 * CP_CHUNK_WORDS words. No allocation.
 */
void bsi_range_chunk(const bsi_t *b, uint16_t key, int64_t lo, int64_t hi, uint64_t *dst,
                     uint64_t *scratch);
/* Whole-bitmap form (allocates): NULL on ENOMEM. */
roaring_bitmap_t *bsi_range(const bsi_t *b, int64_t lo, int64_t hi);
size_t bsi_size_in_bytes(const bsi_t *b);

/* ------------------------------------------------------------------- geo
 *
 * A geo attribute: per user exact coordinates (a column of doubles by
 * ordinal) plus one bitmap per geohash cell of GEO_CELL_BITS bits. A
 * radius query unions the cells wholly inside the circle and checks the
 * users of boundary cells exactly by great-circle distance.
 */
#define GEO_EARTH_RADIUS_M 6371008.8
#define GEO_CELL_BITS 26 /* 13 lon + 13 lat bits: ~4.9 km x 2.4 km at the equator; see geo.c */

double geo_haversine_m(double lat1, double lon1, double lat2, double lon2);
/* Interleaved geohash of `bits` bits (<= 52), as an integer. */
uint64_t geo_hash(double lat, double lon, int bits);
/* Bounds of a cell: lat in [lat0,lat1), lon in [lon0,lon1). */
void geo_cell_bounds(uint64_t cell, int bits, double *lat0, double *lat1, double *lon0,
                     double *lon1);

typedef struct geo_index geo_index_t;
geo_index_t *geo_index_create(void);
void geo_index_free(geo_index_t *g);
/* Sets (overwrites) a user's point; CP_EINVAL unless -90<=lat<=90, -180<=lon<=180. */
cp_status geo_index_set(geo_index_t *g, uint32_t user, double lat, double lon);
int geo_index_get(const geo_index_t *g, uint32_t user, double *lat, double *lon);
void geo_index_clear(geo_index_t *g, uint32_t user);
const roaring_bitmap_t *geo_index_exists(const geo_index_t *g);
/* out |= users within radius_m metres of (lat, lon), exact: those with
 * geo_haversine_m(lat, lon, user_lat, user_lon) <= radius_m. CP_EINVAL on a
 * bad centre or a negative, infinite or NaN radius. */
cp_status geo_index_near(const geo_index_t *g, double lat, double lon, double radius_m,
                         roaring_bitmap_t *out);
size_t geo_index_size_in_bytes(const geo_index_t *g);

/* For persistence: walk cells; the bitmap is owned by the index. */
size_t geo_index_cell_count(const geo_index_t *g);
/* i in [0, cell_count); order unspecified but stable between writes. */
void geo_index_cell_at(const geo_index_t *g, size_t i, uint64_t *cell, const roaring_bitmap_t **bm);
/* Cell of a point (the key under which the user is stored). */
uint64_t geo_index_cell_of(double lat, double lon);

#endif /* CP_BITMAP_H */
