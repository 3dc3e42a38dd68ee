/*
 * crowd.h — crowd (audience pack) records: name, kind, expression (text and
 * JSON tree), size, version, timestamps, description and the names it
 * references (crowds and tags), which the engine uses for cycle checks and
 * for refusing deletes of referenced crowds and tags.
 *
 * Persistence: STORE_CROWDS name -> JSON record. The members live in the
 * index (bitmap key c/<id>); the id is stable for the crowd's life.
 * Not thread-safe: the engine's lock covers it.
 */
#ifndef CP_MODEL_CROWD_H
#define CP_MODEL_CROWD_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/strmap.h"
#include "store/store.h"

#define CROWD_MAX_NAME 128
#define CROWD_MAX_COUNT 100000u
#define CROWD_MAX_DESCRIPTION 4096

typedef struct crowd_rec {
    uint32_t id;
    char *name;
    cp_crowd_kind kind;
    char *expr;        /* canonical text form */
    char *tree;        /* JSON tree, compact */
    char *description; /* "" when none */
    uint64_t size, version;
    int64_t created, updated; /* ms */
    char **crowd_refs;
    size_t ncrowd_refs;
    char **tag_refs;
    size_t ntag_refs;
} crowd_rec_t;

typedef struct crowd_set {
    crowd_rec_t **items; /* in creation order */
    size_t n, cap;
    strmap_t by_name;    /* name -> index in items */
    uint32_t next_id;
} crowd_set_t;

cp_status crowd_validate_name(const char *name, cp_error_t *err);
const char *crowd_kind_name(cp_crowd_kind k);

void crowd_rec_free(crowd_rec_t *c); /* NULL fine */

void crowd_set_init(crowd_set_t *s);
void crowd_set_free(crowd_set_t *s);
crowd_rec_t *crowd_set_find(const crowd_set_t *s, const char *name);
/* Takes ownership of c on success. */
cp_status crowd_set_add(crowd_set_t *s, crowd_rec_t *c);
/* Removes and frees. */
void crowd_set_remove(crowd_set_t *s, const char *name);

cp_status crowd_store_put(store_txn_t *t, const crowd_rec_t *c, cp_error_t *err);
cp_status crowd_store_del(store_txn_t *t, const char *name, cp_error_t *err);
cp_status crowd_set_load(crowd_set_t *s, store_txn_t *t, cp_error_t *err);

#endif /* CP_MODEL_CROWD_H */
