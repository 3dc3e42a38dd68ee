/*
 * member_dir.h — a directory of the containers of every crowd's and tag's
 * bitmap, chunk by chunk, for membership lookups (cp_member_lookup).
 *
 * A membership test on a roaring bitmap walks the bitmap's struct, its key
 * array, its container array and the container before it reaches the word
 * that answers: about six cache lines, times 1,000 crowds and ~700 tags per
 * lookup. The directory keeps, for each chunk of 65,536 users, the
 * container of every set side by side (type and pointer), so a lookup
 * reads one contiguous row and then one container per set.
 *
 * Lifetime: built from the index by a lookup that finds it missing or out
 * of date (index_t.gen, bumped by every change of a tag's or crowd's
 * bitmaps), under the engine's shared lock: builders serialise on a mutex
 * and publish with an atomic pointer; the directory replaced stays
 * allocated until member_dir_reclaim runs under the write lock (no reader
 * can hold it then). A stale directory is never used: the lookup falls
 * back on the bitmaps.
 */
#ifndef CP_INDEX_MEMBER_DIR_H
#define CP_INDEX_MEMBER_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "index/index.h"

/* Lists the crowds (ids ascending) and effective tags (ids ascending) of
 * user ord into crowds[crowds_cap] / tags[tags_cap] (either list skipped
 * when its `want` is 0), counting past the caps into *nc / *nt. Returns 1
 * when the directory answered, 0 when it could not be used or built (the
 * caller asks the bitmaps). Shared lock held. */
int member_dir_lookup(index_t *ix, uint32_t ord, int want_crowds, uint32_t *crowds,
                      size_t crowds_cap, size_t *nc, int want_tags, uint32_t *tags, size_t tags_cap,
                      size_t *nt);
/* Frees replaced directories (write lock held, or at close). */
void member_dir_reclaim(index_t *ix);
/* Frees everything (index_free). */
void member_dir_free(index_t *ix);

#endif /* CP_INDEX_MEMBER_DIR_H */
