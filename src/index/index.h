/*
 * index.h — the in-memory index over the model (DESIGN.md §2, src/index/).
 * Authoritative while a database is open; persisted as bitmaps in
 * STORE_BITMAPS and reloaded at open.
 *
 *  - universe: live users;
 *  - per tag: `direct` (users given the tag itself; persisted t/<id>) and
 *    `eff` (direct ∪ children's eff: the tag's members; derived, rebuilt
 *    at open, maintained on writes);
 *  - per attribute: INT/TIMESTAMP a bsi_t (a/<id>/e, a/<id>/sign,
 *    a/<id>/s/<i>); ENUM/STRING/BOOL an exists bitmap (a/<id>/e), one
 *    bitmap per value id (a/<id>/v/<vid>) and an in-memory column of value
 *    ids by ordinal (0 = none) so an overwrite finds the old value in O(1);
 *    GEO a geo_index_t rebuilt at open from the exists bitmap (a/<id>/e)
 *    and coordinate chunks col/<id>/<chunk> (the lat,lon doubles of the
 *    chunk's present users in ordinal order, 65,536 users per chunk);
 *  - per crowd: its members (c/<crowd id>).
 *
 * Every bitmap is stored as one value per 65,536-user chunk, under its key
 * plus "#" and the chunk number in 4 hex digits ("t/12#0003"); an empty
 * chunk has no value. Writes mark the chunks they touch dirty and
 * index_persist() rewrites exactly those, so a single-user write costs a
 * few small values instead of whole bitmaps. INT/TIMESTAMP attributes also
 * store their slice count (a/<id>/ns, one byte): a slice may be empty in
 * every chunk and must still keep its position. Bytes read back are
 * untrusted: every bitmap is validated (bm_deserialize_safe) and a corrupt
 * one is CP_EIO naming its key.
 *
 * Not thread-safe: the engine's rwlock covers it (queries read it shared).
 */
#ifndef CP_INDEX_H
#define CP_INDEX_H

#include <pthread.h>
#include <roaring/roaring.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bitmap/bitmap.h"
#include "crowdpack.h"
#include "index/change.h"
#include "model/schema.h"
#include "model/taxonomy.h"
#include "store/store.h"

/* roaring_bitmap_free() of CRoaring 0.2.66 does not accept NULL. */
static inline void index_bm_free(roaring_bitmap_t *bm)
{
    if (bm)
        roaring_bitmap_free(bm);
}

typedef struct idx_tag {
    roaring_bitmap_t *direct;
    roaring_bitmap_t *eff;
    roaring_bitmap_t *dirty; /* chunks of direct that changed; NULL = none */
} idx_tag_t;

typedef struct idx_attr {
    cp_attr_type type;        /* 0 = slot unused */
    roaring_bitmap_t *dirty;  /* changed chunks (bsi, exists, geo coordinates) */
    bsi_t *bsi;               /* INT, TIMESTAMP */
    roaring_bitmap_t *exists; /* ENUM, STRING, BOOL (GEO uses the geo index's) */
    roaring_bitmap_t **vals;  /* by value id; NULL = nobody */
    uint8_t *vdirty;          /* values changed (in some of the dirty chunks) */
    uint32_t capvals;
    uint32_t *col; /* value id by ordinal */
    uint32_t capcol;
    geo_index_t *geo; /* GEO */
} idx_attr_t;

typedef struct index {
    roaring_bitmap_t *universe;
    roaring_bitmap_t *universe_dirty;
    idx_tag_t *tags;   /* by tag id */
    uint32_t ntags;    /* slots */
    idx_attr_t *attrs; /* by attr id */
    uint32_t nattrs;
    roaring_bitmap_t **crowds; /* by crowd id */
    roaring_bitmap_t **crowd_dirty;
    uint32_t ncrowds;
    int mark_failed;  /* a dirty set could not be allocated: persist fails */
    ixchg_t chg;      /* what the current write changed (index/change.h) */
    struct mlist *ml; /* each user's crowds and tags (index/member_list.h) */
} index_t;

cp_status index_create(index_t **out);
void index_free(index_t *ix); /* NULL fine */

/* Makes room for a new tag / attribute (empty structures). */
cp_status index_tag_add(index_t *ix, uint32_t tag);
cp_status index_attr_add(index_t *ix, uint32_t attr, cp_attr_type type);
/* Forgets a tag's bitmaps and deletes its key (txn). */
cp_status index_tag_drop(index_t *ix, store_txn_t *txn, uint32_t tag, cp_error_t *err);

const idx_tag_t *index_tag(const index_t *ix, uint32_t tag);
const idx_attr_t *index_attr(const index_t *ix, uint32_t attr);
/* Users having a value of an attribute (NULL if the attr is unknown). */
const roaring_bitmap_t *index_attr_exists(const index_t *ix, uint32_t attr);

/* Adds a live user. */
void index_user_add(index_t *ix, uint32_t ord);
/* Removes the user from every bitmap and column. */
void index_user_delete(index_t *ix, const taxonomy_t *tax, uint32_t ord);

/* Gives a user a tag (direct) and updates the effective chain. Returns 1
 * if the user did not have the tag directly before. */
int index_tag_assign(index_t *ix, const taxonomy_t *tax, uint32_t ord, uint32_t tag);
/* Takes a tag away; returns 1 if the user had it directly. */
int index_tag_unassign(index_t *ix, const taxonomy_t *tax, uint32_t ord, uint32_t tag);
/* Rebuilds every effective bitmap from the direct ones (open, moves). */
cp_status index_recompute_effective(index_t *ix, const taxonomy_t *tax);

/* Attribute values (overwrite). Types must match the attribute. */
cp_status index_set_int(index_t *ix, uint32_t attr, uint32_t ord, int64_t v);
cp_status index_set_value(index_t *ix, uint32_t attr, uint32_t ord, uint32_t vid);
cp_status index_set_geo(index_t *ix, uint32_t attr, uint32_t ord, double lat, double lon);
void index_clear(index_t *ix, uint32_t attr, uint32_t ord);
/* Reads a user's value: 1 if present. *vid for dictionary types. */
int index_get_int(const index_t *ix, uint32_t attr, uint32_t ord, int64_t *v);
uint32_t index_get_value(const index_t *ix, uint32_t attr, uint32_t ord);
int index_get_geo(const index_t *ix, uint32_t attr, uint32_t ord, double *lat, double *lon);
/* Users having value vid (NULL = nobody). */
const roaring_bitmap_t *index_value_bitmap(const index_t *ix, uint32_t attr, uint32_t vid);
/* Gives every user holding value `from` the value `to` instead (value
 * aliases merging two spellings); *moved gets how many. CP_ENOMEM midway
 * leaves some moved: the caller fails its write. */
cp_status index_value_move(index_t *ix, uint32_t attr, uint32_t from, uint32_t to, uint64_t *moved);

/* Crowd members: takes ownership of bm. */
cp_status index_crowd_set(index_t *ix, uint32_t crowd, roaring_bitmap_t *bm);
const roaring_bitmap_t *index_crowd(const index_t *ix, uint32_t crowd);
cp_status index_crowd_drop(index_t *ix, store_txn_t *txn, uint32_t crowd, cp_error_t *err);

/* Writes every dirty bitmap/chunk into txn and clears the dirty marks. */
cp_status index_persist(index_t *ix, store_txn_t *txn, cp_error_t *err);
/* Marks everything dirty (used after wholesale rewrites). */
void index_mark_all_dirty(index_t *ix);

/* Loads all persisted structures (the model must be loaded first so tag
 * and attribute ids are known), then rebuilds effective bitmaps. */
cp_status index_load(index_t *ix, const taxonomy_t *tax, const schema_t *sch, store_txn_t *txn,
                     cp_error_t *err);

/* Memory of bitmaps and of per-user columns. */
void index_memory(const index_t *ix, uint64_t *bitmap_bytes, uint64_t *column_bytes);

#endif /* CP_INDEX_H */
