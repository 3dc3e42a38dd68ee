/*
 * member_list.h — per user, the ids of the crowds and tags the user is in,
 * for membership lookups (cp_member_lookup): a lookup reads one user's
 * list, never the other users' sets.
 *
 * Why per user: answering from the sets means a probe per crowd and per
 * tag (1,700 at 1,000 crowds), whose cache misses alone cost p99 ~120 µs at
 * 1M users even over plain bit arrays. A user's list is ~70 bytes.
 *
 * Layout. Each entry is a code: id << 1 | kind (0 crowd, 1 tag), so one
 * ascending list gives both kinds ascending. A list is its codes as LEB128
 * varints of the gaps (the first code itself, then code - previous - 1):
 * a user in 36 of 1,000 crowds and 32 of 700 tags has gaps of ~25, one
 * byte each. Users are grouped in chunks of 4,096 ordinals; a chunk holds
 * one byte arena with every list of its users and one row per user
 * (offset, length, room), so a change rewrites one list in place, or moves
 * it to the arena's end when it outgrows its room (the chunk is repacked
 * when half its arena is abandoned space). Memory at 1M users with ~68
 * entries each: ~75 MiB of lists and 12 MiB of rows (u32 ids in one flat
 * array would be 272 MiB).
 *
 * Truth. The index keeps the lists true as it changes the sets, in the
 * same call (index.c: assign/unassign per user, deletions per user, and
 * for whole-set writes — crowd refresh, crowd or tag drop, recomputed tag
 * members — the difference between the old and the new members), so a
 * lookup always agrees with the sets, committed or not. Lists are built
 * from the sets by member_list_build (at open); until then, and after an
 * edit that ran out of memory, they are not `ready` and the caller answers
 * from the sets (member_list_repair rebuilds them at the next commit).
 *
 * Not thread-safe: edits run under the engine's write lock, lookups under
 * its shared lock.
 */
#ifndef CP_INDEX_MEMBER_LIST_H
#define CP_INDEX_MEMBER_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "index/index.h"

#define MLIST_CROWD 0u
#define MLIST_TAG 1u
#define MLIST_CODE(id, kind) ((uint32_t)(id) << 1 | (kind))

/* Builds every list from the index's sets (replacing any). CP_ENOMEM
 * leaves the lists not ready. */
cp_status member_list_build(index_t *ix);
/* Rebuilds the lists if an edit failed since (write lock held). */
void member_list_repair(index_t *ix);
/* 1 when the lists are built and every change since is in them. */
int member_list_ready(const index_t *ix);

/* Edits (index.c, write lock held; no-ops while not ready; a failure
 * leaves the lists not ready). */
void member_list_set(index_t *ix, uint32_t ord, uint32_t code, int present);
void member_list_clear_user(index_t *ix, uint32_t ord);
/* Every user of `bm` gains (present) or loses code. */
void member_list_set_all(index_t *ix, const roaring_bitmap_t *bm, uint32_t code, int present);
/* A set's members go from `before` to `after` (either NULL = empty). */
void member_list_diff(index_t *ix, const roaring_bitmap_t *before, const roaring_bitmap_t *after,
                      uint32_t code);
/* The same when the caller has the difference already: the users of x
 * (before XOR after) gain code if in `after` (NULL = empty), else lose it. */
void member_list_apply_xor(index_t *ix, const roaring_bitmap_t *x, const roaring_bitmap_t *after,
                           uint32_t code);

/* Lists user ord's crowds (ids ascending) and tags (ids ascending; with
 * `direct`, only tags held directly) into crowds[crowds_cap] /
 * tags[tags_cap] (a list skipped when its want is 0), counting past the
 * caps into *nc / *nt. Lists ready, shared lock held; no allocation. */
void member_list_lookup(const index_t *ix, uint32_t ord, int want_crowds, uint32_t *crowds,
                        size_t crowds_cap, size_t *nc, int want_tags, int direct, uint32_t *tags,
                        size_t tags_cap, size_t *nt);

/* Bytes held (arenas, rows, scratch). */
uint64_t member_list_memory(const index_t *ix);
/* Frees everything (index_free). */
void member_list_free(index_t *ix);

#endif /* CP_INDEX_MEMBER_LIST_H */
