/*
 * group.h — Segment groups (accounts, companies, households): entities with
 * their own traits and a set of member users. A `group` event makes its
 * user a member of groupId and merges its traits into the group's, never
 * into the user's (docs/intake.md). Expressions select members through
 * `group:ID` and `group.TRAIT = value` (docs/expressions.md).
 *
 * Persistence, in STORE_INTAKE, written in the caller's transaction:
 *   "grp/" + id                      -> the group's traits, compact JSON object
 *   "grm/" + id + "\0" + ordinal BE4 -> "" (one row per member)
 * A group id is 1..GROUP_MAX_ID bytes without NUL (the parser refuses
 * control characters), so the NUL ends it in member keys. One row per
 * member keeps a join O(1) however big the group.
 *
 * In memory: every group with its traits (owned) and members (an owned
 * CRoaring bitmap), loaded whole at open. Not thread-safe: the engine's
 * lock covers it. Memory changes with the transaction; if the transaction
 * fails the engine fails the handle and a reopen reloads (engine.h).
 */
#ifndef CP_MODEL_GROUP_H
#define CP_MODEL_GROUP_H

#include <jansson.h>
#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/strmap.h"
#include "store/store.h"

#define GROUP_MAX_ID 256             /* bytes of a group id */
#define GROUP_MAX_TRAITS_BYTES 16384 /* compact JSON of one group's traits */
#define GROUP_MAX_GROUPS 1000000u    /* groups in one database */

typedef struct group_rec {
    char *id; /* owned, NUL-terminated */
    size_t idlen;
    json_t *traits;            /* owned object, never NULL */
    roaring_bitmap_t *members; /* owned, never NULL */
} group_rec_t;

typedef struct group_set {
    group_rec_t *items; /* [n], in creation order */
    size_t n, cap;
    strmap_t by_id; /* id -> index in items */
} group_set_t;

void group_set_init(group_set_t *s);
void group_set_free(group_set_t *s); /* frees every group */

/* Reads every group and membership row of txn into s (empty on entry).
 * CP_ECORRUPT naming the key for a row that does not decode. */
cp_status group_set_load(group_set_t *s, store_txn_t *txn, cp_error_t *err);

/* The group `id` (len bytes) or NULL; borrowed until the set changes. */
group_rec_t *group_find(const group_set_t *s, const char *id, size_t len);

/*
 * Makes user `ord` a member of group `id` (created with no traits when new)
 * and merges `traits` (an object or NULL) into the group's: each key set,
 * a JSON null removes it. Rows are written into txn. CP_ELIMIT when the
 * traits would exceed GROUP_MAX_TRAITS_BYTES or the set GROUP_MAX_GROUPS
 * (nothing changed then).
 */
cp_status group_join(group_set_t *s, store_txn_t *txn, const char *id, size_t len, uint32_t ord,
                     const json_t *traits, cp_error_t *err);

/* Moves every membership of user `from` to user `to` (identity merges). */
cp_status group_move_member(group_set_t *s, store_txn_t *txn, uint32_t from, uint32_t to,
                            cp_error_t *err);

/* Removes user `ord` from every group (deletion). Groups stay, even empty:
 * their traits are the account's, not the user's. */
cp_status group_remove_member(group_set_t *s, store_txn_t *txn, uint32_t ord, cp_error_t *err);

/*
 * The text a trait value is compared as in expressions: a string as is,
 * an integer in decimal, a real as fmt_double prints it, true / false.
 * 0 for other values (objects, arrays, null), which match nothing.
 * buf holds at least 64 bytes; *out may point into the value itself.
 */
int group_trait_text(const json_t *v, char *buf, size_t cap, const char **out, size_t *len);

#endif /* CP_MODEL_GROUP_H */
