/*
 * identity.h — the OneID identity graph (DESIGN.md §4, docs/identity.md).
 *
 * Users are the engine's dense uint32 ordinals. Identifiers are stored keys
 * made by normalize.h ("phone:#<hex>", "user_id:alice"). The graph records:
 *
 *   - which ordinal each identifier was first attached to (its *original*
 *     ordinal; identity_owner), and each ordinal's own identifiers;
 *   - merges as a forest: an absorbed ordinal points at the ordinal that
 *     absorbed it (the merge tree), and every ordinal of a group points at
 *     the group's root, its *canonical* ordinal, where the engine keeps the
 *     user's data (identity_canonical / identity_lookup);
 *   - a lineage record per merge: id, time, survivor, absorbed, the
 *     identifiers that caused it, the event's messageId and source, and an
 *     opaque snapshot blob of the data before the merge (given by the
 *     engine, handed back by identity_unmerge).
 *
 * Everything lives in the STORE_IDENTITY sub-database, inside the caller's
 * transaction: writes need a write transaction, and a write batch sees its
 * own changes. No cache, no global state, nothing to open or close.
 *
 * How the engine uses it for one event (keys already normalised):
 *
 *   identity_resolve(t, keys, n, &r)            plans; writes nothing
 *   if r.ir_new:    ord = <allocate>; identity_attach(t, ord, keys, n)
 *   else:
 *     for each step in r.ir_merges (in order):
 *        move the data of step.absorbed into step.survivor, keeping a
 *        snapshot of both sides' own data;
 *        identity_record_merge(t, step.survivor, step.absorbed, &info, &id)
 *     identity_attach(t, r.ir_attach_to, keys, n)   attaches the unknown ones
 *     the event's data goes to r.ir_ordinal
 *
 * resolve checks every limit the later calls check, so an event that would
 * exceed one is rejected before the engine moves any data.
 *
 * Row layout of STORE_IDENTITY (prefix byte, big-endian numbers):
 *   'k' key            -> u32 original ordinal
 *   'i' ord key        -> ""          the ordinal's own identifiers
 *   'n' root           -> u32 keys in the group, u32 members (roots only)
 *   'c' ord            -> u32 root    (merged ordinals only)
 *   'p' ord            -> u32 parent, u64 merge id (merged ordinals only)
 *   'm' root ord       -> ""          members of a group, root excluded
 *   'l' u64 id         -> lineage record
 *   'L' ord u64 id     -> ""          lineage records touching an ordinal
 *   'N'                -> u64 next merge id
 */
#ifndef CP_MODEL_IDENTITY_H
#define CP_MODEL_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/normalize.h"
#include "store/store.h"

#define IDENTITY_MAX_EVENT_KEYS 32  /* identifiers on one event */
#define IDENTITY_MAX_USER_KEYS 1000 /* identifiers of one (merged) user */
#define IDENTITY_MAX_GROUP 256      /* ordinals merged into one user, root included */
#define IDENTITY_MAX_LINEAGE 1024   /* lineage records touching one ordinal, undone included */
#define IDENTITY_MAX_TEXT 256       /* bytes of a lineage messageId or source */
#define IDENTITY_MAX_SNAPSHOT (64u << 20)
#define IDENTITY_NONE 0xFFFFFFFFu

/* One merge the engine must perform: absorbed's data into survivor. Both
 * are canonical ordinals (group roots) at the time of the step. */
typedef struct identity_merge_step {
    uint32_t survivor;
    uint32_t absorbed;
    uint32_t cause_mask; /* bit i: keys[i] belongs to one of the two groups */
} identity_merge_step_t;

typedef struct identity_resolution {
    /* 1 when no identifier is known: the engine allocates an ordinal and
     * attaches every key to it. ir_ordinal/ir_attach_to are IDENTITY_NONE. */
    int ir_new;
    /* The canonical ordinal the event belongs to once the merges are done:
     * the oldest (smallest) canonical ordinal among the known keys. */
    uint32_t ir_ordinal;
    /* Where identity_attach puts the unknown keys: the original ordinal of
     * the known keys when they all share one (so an unmerge later takes
     * them back with it), else ir_ordinal. */
    uint32_t ir_attach_to;
    uint32_t ir_unknown_mask; /* bit i: keys[i] is unknown (duplicates: first only) */
    size_t ir_nmerges;        /* 0 .. n-1 steps, survivor always ir_ordinal */
    identity_merge_step_t ir_merges[IDENTITY_MAX_EVENT_KEYS];
} identity_resolution_t;

/*
 * Plans the identity of one event from its keys (1..IDENTITY_MAX_EVENT_KEYS
 * NUL-terminated stored keys; duplicates allowed). Writes nothing.
 * Errors: CP_EINVAL (malformed key, naming it), CP_ELIMIT (too many keys on
 * the event, or the user would exceed IDENTITY_MAX_USER_KEYS,
 * IDENTITY_MAX_GROUP or IDENTITY_MAX_LINEAGE), CP_EIO (corrupt rows).
 */
cp_status identity_resolve(store_txn_t *t, const char *const *keys, size_t n,
                           identity_resolution_t *out, cp_error_t *err);

/*
 * Attaches the keys not yet known to ordinal `ord` (a new ordinal, or any
 * ordinal of an existing group: the group's count is kept on its root).
 * Known keys must already resolve to ord's group (no-ops), else
 * CP_ECONFLICT naming the key and both users — merges go through
 * identity_record_merge. Checks everything before writing anything.
 */
cp_status identity_attach(store_txn_t *t, uint32_t ord, const char *const *keys, size_t n,
                          cp_error_t *err);

/* What a merge's lineage records. Every pointer is borrowed for the call. */
typedef struct identity_merge_info {
    int64_t time_ms;         /* when; 0 = now */
    const char *const *keys; /* the identifiers that caused it (<= 32, may be 0) */
    size_t nkeys;
    const char *message_id; /* the event's messageId, NULL = none */
    const char *source;     /* "identify", "alias", "import:orders.csv:17", NULL = none */
    const void *snapshot;   /* engine data to restore on unmerge, NULL = none */
    size_t snapshot_len;    /* <= IDENTITY_MAX_SNAPSHOT */
} identity_merge_info_t;

/*
 * Records that the engine merged canonical ordinal `absorbed` (with every
 * ordinal of its group) into canonical ordinal `survivor`. Both must be
 * group roots that hold identifiers (CP_ECONFLICT / CP_ENOTFOUND), and the
 * merged user must stay within the limits (CP_ELIMIT). *merge_id gets the
 * new lineage id (ids start at 1 and are never reused).
 */
cp_status identity_record_merge(store_txn_t *t, uint32_t survivor, uint32_t absorbed,
                                const identity_merge_info_t *info, uint64_t *merge_id,
                                cp_error_t *err);

/* The canonical ordinal of a key. CP_ENOTFOUND (silent) when unknown. */
cp_status identity_lookup(store_txn_t *t, const char *key, size_t klen, uint32_t *ord,
                          cp_error_t *err);
/* The original ordinal of a key: the one it was attached to, whatever
 * merges happened since (to attribute data on unmerge). CP_ENOTFOUND silent. */
cp_status identity_owner(store_txn_t *t, const char *key, size_t klen, uint32_t *ord,
                         cp_error_t *err);
/* The canonical ordinal of `ord` (ord itself unless it was merged away). */
cp_status identity_canonical(store_txn_t *t, uint32_t ord, uint32_t *root, cp_error_t *err);
/* Every ordinal of ord's group, root first, then ascending. *ords: caller
 * frees with free(). */
cp_status identity_group(store_txn_t *t, uint32_t ord, uint32_t **ords, size_t *n, cp_error_t *err);

/*
 * Calls fn for each identifier of `ord` (whole_group: of every ordinal of
 * its group), in key order per ordinal, with the key's original ordinal.
 * Pointers are borrowed for the call. fn returning non-CP_OK stops the walk
 * with that status. fn must not write to STORE_IDENTITY.
 */
typedef cp_status (*identity_key_fn)(void *ud, const char *key, size_t klen, uint32_t original,
                                     cp_error_t *err);
cp_status identity_each_key(store_txn_t *t, uint32_t ord, int whole_group, identity_key_fn fn,
                            void *ud, cp_error_t *err);

/* A lineage record, owned by the caller: identity_lineage_free(). */
typedef struct identity_lineage {
    uint64_t il_id;
    int64_t il_time_ms;
    int64_t il_undone_ms; /* 0 while the merge stands */
    uint32_t il_survivor;
    uint32_t il_absorbed;
    size_t il_nkeys;
    char **il_keys;         /* NUL-terminated stored keys */
    char *il_message_id;    /* "" if none */
    char *il_source;        /* "" if none */
    void *il_snapshot;      /* NULL unless asked for and present */
    size_t il_snapshot_len; /* stored length even when not loaded; 0 after undo */
} identity_lineage_t;
void identity_lineage_free(identity_lineage_t *l); /* NULL fine */

/* One lineage record. CP_ENOTFOUND (with a message) for an unknown id. */
cp_status identity_lineage_get(store_txn_t *t, uint64_t merge_id, int with_snapshot,
                               identity_lineage_t **out, cp_error_t *err);
/* Ids of every lineage record touching any ordinal of ord's group (undone
 * ones included), ascending. *ids: caller frees with free(); may be NULL
 * when *n is 0. */
cp_status identity_lineage_list(store_txn_t *t, uint32_t ord, uint64_t **ids, size_t *n,
                                cp_error_t *err);

/* What an unmerge hands back to the engine; identity_unmerge_free(). */
typedef struct identity_unmerge {
    identity_lineage_t *iu_lineage; /* the record, with its snapshot */
    uint32_t iu_survivor_root;      /* canonical ordinal of the survivor side now */
    uint32_t iu_absorbed;           /* canonical ordinal of the restored side */
    uint32_t *iu_moved;             /* iu_absorbed's group after the split, root first */
    size_t iu_nmoved;
} identity_unmerge_t;
void identity_unmerge_free(identity_unmerge_t *u); /* NULL fine; frees the struct's contents */

/*
 * Reverses merge `merge_id`: the absorbed ordinal becomes a group root again
 * with the ordinals it had absorbed itself before (its subtree), and their
 * identifiers resolve to it again; ordinals that joined the survivor's
 * group otherwise stay there. The lineage record is marked undone (time
 * `now_ms`, 0 = now) and kept; its snapshot is handed back in *out and
 * dropped from the record. Errors: CP_ENOTFOUND (unknown id),
 * CP_ECONFLICT (already undone).
 */
cp_status identity_unmerge(store_txn_t *t, uint64_t merge_id, int64_t now_ms,
                           identity_unmerge_t *out, cp_error_t *err);

/*
 * Deletes ord's whole user: every ordinal of its group, their identifiers,
 * group rows and every lineage record touching any of them (also undone
 * ones, whose other side loses that record from its list). *ords gets the
 * deleted ordinals (root first; caller frees with free()) so the engine can
 * clear their data. An ordinal the graph does not know gives just itself.
 */
cp_status identity_delete(store_txn_t *t, uint32_t ord, uint32_t **ords, size_t *n,
                          cp_error_t *err);

#endif /* CP_MODEL_IDENTITY_H */
