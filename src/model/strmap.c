/* strmap.c — open-addressing string map; see strmap.h. */
#include <stdlib.h>
#include <string.h>

#include "model/strmap.h"
#include "util/util.h"

/* The same function as hash64 (XXH3 64, seed 0), inlined: names and
 * values are short, and the call into the shared library and its dispatch
 * cost more than hashing them. */
#define XXH_INLINE_ALL
#include <xxhash.h>

static inline uint64_t key_hash(const char *k, size_t klen)
{
    return XXH3_64bits(k, klen);
}

static char tomb_marker;
#define STRMAP_TOMB (&tomb_marker)

void strmap_init(strmap_t *m)
{
    memset(m, 0, sizeof *m);
}

void strmap_free(strmap_t *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != STRMAP_TOMB)
            free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* Slot holding k, or -1. */
static long find(const strmap_t *m, const char *k, size_t klen, uint64_t h)
{
    if (m->cap == 0)
        return -1;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
        const strmap_slot_t *s = &m->slots[i];
        if (s->key == NULL)
            return -1;
        if (s->key != STRMAP_TOMB && s->hash == h && s->klen == klen &&
            memcmp(s->key, k, klen) == 0)
            return (long)i;
    }
    return -1;
}

int strmap_get(const strmap_t *m, const char *k, size_t klen, uint32_t *val)
{
    long i = find(m, k, klen, key_hash(k, klen));
    if (i < 0)
        return 0;
    if (val)
        *val = m->slots[i].val;
    return 1;
}

static cp_status grow(strmap_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    /* Rehash in place of the same size when tombstones are the problem. */
    if (m->used * 2 < m->cap)
        ncap = m->cap;
    strmap_slot_t *ns = calloc(ncap, sizeof *ns);
    if (ns == NULL)
        return CP_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        strmap_slot_t *s = &m->slots[i];
        if (s->key == NULL || s->key == STRMAP_TOMB)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->tombs = 0;
    return CP_OK;
}

cp_status strmap_put(strmap_t *m, const char *k, size_t klen, uint32_t val)
{
    uint64_t h = key_hash(k, klen);
    long i = find(m, k, klen, h);
    if (i >= 0) {
        m->slots[i].val = val;
        return CP_OK;
    }
    if (klen > UINT32_MAX)
        return CP_ELIMIT;
    if ((m->used + m->tombs + 1) * 4 > m->cap * 3) {
        cp_status rc = grow(m);
        if (rc)
            return rc;
    }
    char *copy = malloc(klen + 1);
    if (copy == NULL)
        return CP_ENOMEM;
    memcpy(copy, k, klen);
    copy[klen] = '\0';
    size_t mask = m->cap - 1, j = h & mask;
    while (m->slots[j].key && m->slots[j].key != STRMAP_TOMB)
        j = (j + 1) & mask;
    if (m->slots[j].key == STRMAP_TOMB)
        m->tombs--;
    m->slots[j] = (strmap_slot_t){copy, (uint32_t)klen, val, h};
    m->used++;
    return CP_OK;
}

void strmap_del(strmap_t *m, const char *k, size_t klen)
{
    long i = find(m, k, klen, key_hash(k, klen));
    if (i < 0)
        return;
    free(m->slots[i].key);
    m->slots[i].key = STRMAP_TOMB;
    m->used--;
    m->tombs++;
}

size_t strmap_size_in_bytes(const strmap_t *m)
{
    size_t n = m->cap * sizeof(strmap_slot_t);
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != STRMAP_TOMB)
            n += m->slots[i].klen + 1;
    return n;
}
