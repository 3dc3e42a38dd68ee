/*
 * change.h — what a write changed in the index, recorded by the index
 * itself rather than by its callers.
 *
 * Two things are kept, both reset by ixchg_clear at the end of a write
 * (commit or failure):
 *
 *  - dirtiness: `data` is set by every mutation of users, tag members or
 *    attribute values, `crowds` by every change of a crowd's members. The
 *    engine re-evaluates dynamic crowds when either is set, so no write
 *    path has to remember to say that it changed something;
 *  - before-images, only while `record` is on (a change feed listens): the
 *    first time a write changes a tag's members (its effective bitmap) or a
 *    crowd's, the members as they were are kept, so at the commit the
 *    entries and exits of the write are `after ANDNOT before` and
 *    `before ANDNOT after`, exactly, whatever path changed them. A crowd
 *    whose bitmap is replaced hands its old bitmap over instead of freeing
 *    it (no copy); a tag's effective bitmap is copied once per write.
 *
 * Off (the default), recording costs one flag test per mutation. Not
 * thread-safe: the engine's write lock covers it, as for the index.
 */
#ifndef CP_INDEX_CHANGE_H
#define CP_INDEX_CHANGE_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

/* One kind of member set (tags or crowds): ids touched in this write, in
 * first-touch order, and each one's members before (owned; an empty
 * bitmap for a set that had none). before[id] != NULL <=> id was touched. */
typedef struct ixchg_set {
    roaring_bitmap_t **before; /* by id */
    uint32_t nbefore;          /* slots */
    uint32_t *ids;             /* touched ids */
    size_t nids, capids;
} ixchg_set_t;

typedef struct ixchg {
    int data;   /* users, tag members or attribute values changed */
    int crowds; /* members of an existing crowd replaced (a refresh): the
                 * crowds built on it are stale */
    int record; /* keep before-images (a change feed listens) */
    int lost;   /* an image could not be kept (out of memory): the diff of
                 * this write is incomplete, and says so */
    ixchg_set_t tags, crowd;
} ixchg_t;

/* Keeps `cur` (members now, NULL = none) as the before-image of set id if
 * recording and id is untouched in this write. With `take`, cur is owned
 * by the recorder afterwards when the function returns 1 (it was kept);
 * otherwise it is copied. Returns 1 if kept by ownership, else 0. */
int ixchg_touch(ixchg_t *c, ixchg_set_t *s, uint32_t id, roaring_bitmap_t *cur, int take);
/* Forgets the before-images and the dirtiness of the write (keeps `record`). */
void ixchg_clear(ixchg_t *c);
/* ixchg_clear and frees the arrays. */
void ixchg_free(ixchg_t *c);

#endif /* CP_INDEX_CHANGE_H */
