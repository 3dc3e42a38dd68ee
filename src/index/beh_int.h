/*
 * beh_int.h — the private side of behavior.h, shared by the files of the
 * behaviour index and by nothing else:
 *   beh_cell.c    the index itself and its cells (the small and the roaring
 *                 form), dirty marks, writes of one event, retention, sizes
 *   beh_dict.c    the series dictionary: canonical keys, interning, did()
 *                 resolution, the series of one event (with its memo)
 *   beh_bulk.c    beh_record_many: a batch of records sorted into cells
 *   beh_user.c    one user's behaviour: removal, extraction and re-insertion
 *                 (merge, unmerge), lineage entries, forgetting a deleted user
 *   beh_window.c  queries: sums over a window of days compared with k
 *   beh_disk.c    persistence: chunk keys, packs, the dictionary, loading
 *
 * Functions shared between these files are prefixed beh__; the public
 * prefix beh_ is for the layers above (behavior.h).
 */
#ifndef CP_INDEX_BEH_INT_H
#define CP_INDEX_BEH_INT_H

#include <stdint.h>
#include <string.h>

#include "index/behavior.h"
#include "util/util.h"

/*
 * A cell has two forms. Small (at most SMALL_MAX users, the common case of
 * an import: Online Retail has ~2.6 records per cell): a sorted array of
 * users and their count - 1, inline for up to SMALL_INLINE users, else in
 * one malloc'ed block of cap users then cap values — a new cell costs no
 * allocation and no roaring bitmap. Roaring (past SMALL_MAX users):
 * `exists` and the count slices. A cell is promoted when a user past
 * SMALL_MAX arrives and demoted when removals bring it back to SMALL_MAX
 * (or when it loads that small); both forms hold the same content, so
 * everything written to disk is the same whichever form a cell has.
 */
#define SMALL_MAX 16
#define SMALL_INLINE 2

struct beh_cell {
    int32_t day;
    /* Roaring: slices of (count - 1). Small: bitlen of the largest
     * count - 1 (so a count is at most 2^nslices in both forms). */
    uint8_t nslices;
    uint8_t dirty; /* queued in b->dirty */
    /* The 65,536-user chunks changed since the last persist: none (0; or
     * all, when the cell is queued to be rewritten whole), the one chunk
     * d1 (1: the common case, no allocation), or those in dchunks (2). */
    uint8_t nd;
    uint8_t disk; /* its form on disk at the last persist: DISK_* */
    uint16_t d1;
    uint8_t small;             /* 1: the small form (n, cap, in / heap) */
    uint8_t n;                 /* small: users */
    uint8_t cap;               /* small: capacity; SMALL_INLINE: in the cell itself */
    roaring_bitmap_t *dchunks; /* nd == 2 */
    union {
        struct { /* roaring form */
            roaring_bitmap_t *exists;
            roaring_bitmap_t **slices; /* [nslices], NULL when 0 */
        };
        uint32_t in[2 * SMALL_INLINE]; /* small, cap SMALL_INLINE: users, values */
        uint32_t *heap;                /* small, larger cap: users[cap], values[cap] */
    };
};

typedef struct series {
    uint8_t *key;
    uint32_t klen;
    beh_cell_t *cells; /* sorted by day */
    uint32_t ncells, cap;
    roaring_bitmap_t *ever; /* users in some cell (a superset is harmless) */
} series_t;

/* A cell to write at the next persist: its dirty chunks, or (wipe) every
 * key of the cell deleted and all of its current chunks written — after
 * the cell was dropped (it may have been created again since), and after
 * loading the single-value layout of version 1. */
typedef struct dirty {
    uint32_t series;
    int32_t day;
    int wipe;
    beh_cell_t *cell; /* beh_persist only: the cell found (cells do not move in it) */
} dirty_t;

/*
 * beh_event_series' previous call: its event, sorted properties and the
 * ids it returned (in subset order). Consecutive events of an import
 * mostly share the event and some values (Online Retail: every row is a
 * "purchase", only stock_code changes), so every subset whose values are
 * all unchanged takes its id from here without a key or a hash lookup.
 * Ids are never reused (series are never removed); a series forgotten with
 * a deleted user (beh_user_forget) invalidates the memo.
 */
typedef struct memo {
    int valid;
    uint8_t elen, n;
    uint8_t nlen[BEH_MAX_PROPS], vlen[BEH_MAX_PROPS];
    char event[BEH_NAME_MAX];
    char name[BEH_MAX_PROPS][BEH_NAME_MAX], value[BEH_MAX_PROPS][BEH_NAME_MAX];
    uint32_t ids[BEH_MAX_EVENT_SERIES];
} memo_t;

struct beh {
    series_t *series;
    uint32_t nseries, capseries;
    uint32_t persisted; /* dictionary ids below this are on disk */
    uint32_t *slots;    /* hash of keys -> id; UINT32_MAX empty */
    size_t nslots;      /* power of two */
    dirty_t *dirty;
    size_t ndirty, capdirty;
    int failed; /* a dirty mark was lost (ENOMEM): persist fails */
    /* beh_record_many's scratch, kept for the next call (grown, never
     * shrunk): sort keys and their double buffer, the sorted users, the
     * users new to a cell, the others and their counts; radix counters. */
    uint64_t *sk0, *sk1, *srest_n;
    uint32_t *susers, *sfresh, *srest;
    size_t scap;
    size_t *shist;
    /* beh_persist's scratch: the packs to rewrite (pack_id values). */
    uint64_t *packs;
    size_t npacks, cappacks;
    memo_t *memo; /* beh_event_series' previous call (NULL until the first) */
};

enum { DISK_NONE, DISK_CHUNKS, DISK_PACK };
#define VALUE_MAX ((uint64_t)UINT32_MAX) /* count - 1 saturates here */
#define KEY_DICT "beh/s/"
#define DICT_KEY_LEN 10 /* "beh/s/" + id */

static inline void bm_free(roaring_bitmap_t *bm)
{
    if (bm) /* CRoaring 0.2.66 does not accept NULL */
        roaring_bitmap_free(bm);
}

static inline uint32_t *sm_users(const beh_cell_t *c)
{
    return c->cap <= SMALL_INLINE ? (uint32_t *)c->in : c->heap;
}

static inline uint32_t *sm_vals(const beh_cell_t *c)
{
    return sm_users(c) + c->cap;
}

static inline int bitlen(uint64_t v)
{
    return v ? 64 - __builtin_clzll(v) : 0;
}

/* Users of the cell. */
static inline uint64_t cell_users(const beh_cell_t *c)
{
    return c->small ? c->n : roaring_bitmap_get_cardinality(c->exists);
}

/* First index of the small cell's users >= user. */
static inline uint32_t sm_lower(const beh_cell_t *c, uint32_t user)
{
    const uint32_t *u = sm_users(c);
    uint32_t i = 0;
    while (i < c->n && u[i] < user)
        i++;
    return i;
}

/* old + delta, saturating at VALUE_MAX. */
static inline uint64_t value_add(uint64_t old, uint64_t delta)
{
    uint64_t nv = old + delta < old ? VALUE_MAX : old + delta;
    return nv > VALUE_MAX ? VALUE_MAX : nv;
}

static inline void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_u32be(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static inline uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ----------------------------------------------------------- beh_cell.c */

/* Frees what the cell's form holds (not dchunks): an empty small cell. */
void beh__cell_form_release(beh_cell_t *c);
/* Frees everything of the cell and zeroes it. */
void beh__cell_release(beh_cell_t *c);
/* Queues (series, day) for the next persist; wipe: every key of the cell
 * is deleted and its chunks rewritten. ENOMEM sets b->failed. */
void beh__mark_dirty(beh_t *b, uint32_t series, int32_t day, int wipe);
/* The chunk of `user` in cell c changed. */
void beh__mark_cell(beh_t *b, uint32_t series, beh_cell_t *c, uint32_t user);
/* Cell c will be rewritten whole. */
void beh__mark_cell_whole(beh_t *b, uint32_t series, beh_cell_t *c);
/* First index of se->cells with day >= day. */
uint32_t beh__lower_day(const series_t *se, int32_t day);
/* The cell of `day`, or NULL. */
beh_cell_t *beh__cell_find(const series_t *se, int32_t day);
/* The cell of `day`, created empty and small if missing (CP_ENOMEM).
 * Cells move when one is created: earlier pointers into se go stale. */
cp_status beh__cell_get(series_t *se, int32_t day, beh_cell_t **out);
/* Room for need (<= SMALL_MAX) users in a small cell (CP_ENOMEM). */
cp_status beh__sm_reserve(beh_cell_t *c, uint32_t need);
/* nslices of a small cell from its values. */
void beh__sm_retop(beh_cell_t *c);
/* A small cell into the roaring form (CP_ENOMEM leaves it small). */
cp_status beh__cell_promote(beh_cell_t *c);
/* count - 1 of a user present in a roaring cell. */
uint64_t beh__cell_value(const beh_cell_t *c, uint32_t user);
/* 1 and *v = count - 1 if the user is in the cell (either form). */
int beh__cell_lookup(const beh_cell_t *c, uint32_t user, uint64_t *v);
/* A roaring cell of 1 .. SMALL_MAX users into the small form. */
void beh__cell_demote(beh_cell_t *c);
/* At least n count slices in a roaring cell (CP_ENOMEM). */
cp_status beh__cell_grow(beh_cell_t *c, int n);
/* Drops the empty top slices of a roaring cell. */
void beh__cell_trim(beh_cell_t *c);
/* Adds delta (>= 1) to user's count in cell c (the caller marks dirty and
 * keeps `ever`). */
cp_status beh__cell_add(beh_cell_t *c, uint32_t user, uint64_t delta);

/* ----------------------------------------------------------- beh_dict.c */

/* 1 if k is a canonical series key (for keys read from disk). */
int beh__key_valid(const uint8_t *k, size_t len);
/* Rebuilds the hash of keys after keys changed in place (linear probing
 * has no delete) and forgets the memo of beh_event_series. */
void beh__dict_rehash(beh_t *b);

/* ----------------------------------------------------------- beh_bulk.c */

/* Frees beh_record_many's scratch. */
void beh__scratch_free(beh_t *b);

#endif /* CP_INDEX_BEH_INT_H */
