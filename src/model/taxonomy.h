/*
 * taxonomy.h — the tag tree (DESIGN.md §4): ids, slug paths, names, levels.
 *
 * Tag ids are uint32, allocated in creation order and never reused (bitmap
 * keys t/<id> depend on them). Id 0 is the virtual root whose children are
 * the level-1 tags. Paths are slug segments joined by '/', at most
 * TAX_MAX_DEPTH deep and TAX_MAX_PATH bytes. A segment is [a-z0-9_-] and
 * letters, marks and digits of any script (兴趣/金融/理财), never upper- or
 * title-case letters, spaces, punctuation or symbols; paths are stored in
 * Unicode NFC and lookups normalise what they are given. Names and
 * descriptions are any UTF-8 within their limits (names stored NFC).
 *
 * Persistence: one JSON record per tag in STORE_TAGS, keyed by the
 * big-endian id: {"parent":N,"path":"..","name":"..","description":"..",
 * "created":ms}. Paths are stored whole so a load needs no ordering.
 *
 * Not thread-safe: the engine's lock covers it.
 */
#ifndef CP_MODEL_TAXONOMY_H
#define CP_MODEL_TAXONOMY_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/strmap.h"
#include "store/store.h"

#define TAX_MAX_DEPTH 16
#define TAX_MAX_PATH 512
#define TAX_MAX_NAME 1024
#define TAX_MAX_DESCRIPTION 4096
#define TAX_MAX_TAGS 1000000u

typedef struct tax_tag {
    uint32_t id;
    uint32_t parent; /* 0 = level 1 */
    int level;       /* 1 = top */
    char *path;
    char *name;
    char *description; /* "" when none */
    int64_t created;   /* ms */
    uint32_t *children;
    uint32_t nchildren, capchildren;
} tax_tag_t;

typedef struct taxonomy {
    tax_tag_t **tags; /* by id; NULL = unused or deleted; tags[0] = virtual root */
    uint32_t cap;     /* slots in tags */
    uint32_t next_id; /* next id to allocate (>= 1) */
    uint32_t count;   /* live tags */
    strmap_t by_path;
} taxonomy_t;

cp_status tax_init(taxonomy_t *t);
void tax_free(taxonomy_t *t);

/* Byte length of one non-ASCII letter, mark or digit (not upper- or
 * title-case) at s[0..len), or 0 when s does not start with one. The rule
 * shared by tag slugs and crowd, tier and cluster names. */
size_t tax_word_char(const char *s, size_t len);
/* 1 if s[0..len) is in Unicode NFC (invalid UTF-8 is not). */
int tax_is_nfc(const char *s, size_t len);
/* An NFC copy of s[0..len) (invalid UTF-8 copied unchanged, for the
 * validators to name); caller frees. NULL on ENOMEM. *outlen (may be NULL)
 * gets its length. */
char *tax_nfc(const char *s, size_t len, size_t *outlen);

/* Checks a slug path (must be NFC); the message names the path and what
 * is wrong. */
cp_status tax_validate_path(const char *path, size_t len, cp_error_t *err);
/* Name and description: valid UTF-8 within the limits. */
cp_status tax_validate_text(const char *what, const char *s, size_t max, cp_error_t *err);

/* Id of a path (any normalisation form), or 0. */
uint32_t tax_find(const taxonomy_t *t, const char *path, size_t len);
/*
 * Tags addressed by display path: segments matched, from the last one up,
 * against the tags' names (or slug segments), NFC and ASCII-case-
 * insensitively; the first segment may be at any level ("金融/理财" finds
 * interest/finance/wealth named 兴趣/金融/理财). Up to `cap` ids go to
 * ids[]; *n gets how many matched (may exceed cap). CP_ENOMEM only.
 */
cp_status tax_find_display(const taxonomy_t *t, const char *path, size_t len, uint32_t *ids,
                           size_t cap, size_t *n);
/* The tag of an id, or NULL. */
tax_tag_t *tax_get(const taxonomy_t *t, uint32_t id);

/*
 * Adds one tag whose parent path must already exist (callers create
 * missing parents first). `name` NULL = last slug segment. Validates
 * everything first; CP_EEXIST if present. *id_out gets the new id.
 */
cp_status tax_add(taxonomy_t *t, const char *path, const char *name, const char *description,
                  int64_t created, uint32_t *id_out, cp_error_t *err);

/* Replaces name / description (NULL = keep). Validates first. */
cp_status tax_set_text(taxonomy_t *t, uint32_t id, const char *name, const char *description,
                       cp_error_t *err);

/*
 * Moves tag `id` (and its subtree) to `new_path`, whose parent must exist
 * and must not be inside the subtree. Paths of every descendant change.
 * Collects every tag whose path changed into *changed (caller frees).
 */
cp_status tax_move(taxonomy_t *t, uint32_t id, const char *new_path, uint32_t **changed,
                   size_t *nchanged, cp_error_t *err);

/* Removes a leaf tag from memory. CP_ECONFLICT if it has children. */
cp_status tax_remove(taxonomy_t *t, uint32_t id, cp_error_t *err);

/* The subtree of id (id first, depth-first pre-order) into *out (caller
 * frees). id 0 = whole tree without the virtual root. */
cp_status tax_subtree(const taxonomy_t *t, uint32_t id, uint32_t **out, size_t *n);

/* 1 if `a` is `b` or an ancestor of `b`. */
int tax_is_ancestor_or_self(const taxonomy_t *t, uint32_t a, uint32_t b);

/* Persistence of one tag (record put) and its removal. */
cp_status tax_store_put(store_txn_t *txn, const tax_tag_t *tag, cp_error_t *err);
cp_status tax_store_del(store_txn_t *txn, uint32_t id, cp_error_t *err);
/* Loads every tag record (next_id from meta "next_tag_id"). */
cp_status tax_load(taxonomy_t *t, store_txn_t *txn, cp_error_t *err);

#endif /* CP_MODEL_TAXONOMY_H */
