/*
 * strmap.h — a string -> uint32 hash map (open addressing, linear probing,
 * xxh3). Used for tag paths, attribute names, value dictionaries and crowd
 * names. The map owns copies of its keys; values are plain numbers.
 * Not thread-safe: callers hold the database lock.
 */
#ifndef CP_MODEL_STRMAP_H
#define CP_MODEL_STRMAP_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

typedef struct strmap_slot {
    char *key; /* NULL = empty; STRMAP_TOMB = deleted */
    uint32_t klen;
    uint32_t val;
    uint64_t hash;
} strmap_slot_t;

typedef struct strmap {
    strmap_slot_t *slots;
    size_t cap;  /* power of two or 0 */
    size_t used; /* live keys */
    size_t tombs;
} strmap_t;

void strmap_init(strmap_t *m);
void strmap_free(strmap_t *m); /* frees the key copies */
/* 1 and *val if present, else 0. */
int strmap_get(const strmap_t *m, const char *k, size_t klen, uint32_t *val);
/* Inserts or overwrites. CP_ENOMEM on allocation failure (map unchanged). */
cp_status strmap_put(strmap_t *m, const char *k, size_t klen, uint32_t val);
/* Removes k if present. */
void strmap_del(strmap_t *m, const char *k, size_t klen);
size_t strmap_size_in_bytes(const strmap_t *m);

#endif /* CP_MODEL_STRMAP_H */
