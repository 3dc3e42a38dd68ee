/* beh_dict.c — the behaviour index's series dictionary: canonical keys of
 * an event and its property values, the hash from key to dense id, did()
 * resolution, and the series one event feeds; see behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

#define EMPTY_SLOT UINT32_MAX

/* Bytes compare, shorter first on a common prefix. */
static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

static int prop_cmp(const void *x, const void *y)
{
    const beh_prop_t *a = x, *b = y;
    return name_cmp(a->name, a->nlen, b->name, b->nlen);
}

/* Checks props (names non-empty, lengths, distinct) into sorted[] (n <= max). */
static cp_status props_sorted(const beh_prop_t *props, size_t n, size_t max, beh_prop_t *sorted)
{
    if (n > max)
        return CP_ELIMIT;
    for (size_t i = 0; i < n; i++) {
        if (props[i].nlen == 0 || props[i].nlen > BEH_NAME_MAX || props[i].vlen > BEH_NAME_MAX ||
            props[i].name == NULL || (props[i].vlen > 0 && props[i].value == NULL))
            return CP_EINVAL;
        sorted[i] = props[i];
    }
    for (size_t i = 1; i < n; i++) { /* n <= BEH_MAX_PROPS: insertion sort */
        beh_prop_t x = sorted[i];
        size_t j = i;
        for (; j > 0 && prop_cmp(&sorted[j - 1], &x) > 0; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = x;
    }
    for (size_t i = 1; i < n; i++)
        if (prop_cmp(&sorted[i - 1], &sorted[i]) == 0)
            return CP_EINVAL;
    return CP_OK;
}

/* memcpy(dst, src, n) without a libc call for short names and values
 * (overlapping moves within [0, n) of both). */
static inline void bytes_copy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *x = src;
    if (n >= 8 && n <= 16) {
        uint64_t p, r;
        memcpy(&p, x, 8);
        memcpy(&r, x + n - 8, 8);
        memcpy(d, &p, 8);
        memcpy(d + n - 8, &r, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t p, r;
        memcpy(&p, x, 4);
        memcpy(&r, x + n - 4, 4);
        memcpy(d, &p, 4);
        memcpy(d + n - 4, &r, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            d[i] = x[i];
    } else {
        memcpy(d, x, n);
    }
}

/* The key of an event and props already sorted and checked. */
static size_t key_encode(const char *event, size_t elen, const beh_prop_t *p, size_t n,
                         uint8_t *buf)
{
    size_t o = 0;
    buf[o++] = (uint8_t)elen;
    bytes_copy(buf + o, event, elen);
    o += elen;
    for (size_t i = 0; i < n; i++) {
        buf[o++] = (uint8_t)p[i].nlen;
        bytes_copy(buf + o, p[i].name, p[i].nlen);
        o += p[i].nlen;
        buf[o++] = (uint8_t)p[i].vlen;
        bytes_copy(buf + o, p[i].value, p[i].vlen);
        o += p[i].vlen;
    }
    return o;
}

cp_status beh_series_key(const char *event, size_t elen, const beh_prop_t *props, size_t n,
                         uint8_t *buf, size_t *len)
{
    beh_prop_t sorted[BEH_MAX_FILTERS];
    if (event == NULL || elen == 0 || elen > BEH_NAME_MAX)
        return CP_EINVAL;
    cp_status st = props_sorted(props, n, BEH_MAX_FILTERS, sorted);
    if (st != CP_OK)
        return st;
    *len = key_encode(event, elen, sorted, n, buf);
    return CP_OK;
}

/* 1 if key is a canonical series key (for keys read from disk). */
int beh__key_valid(const uint8_t *k, size_t len)
{
    size_t o = 0;
    if (len < 2 || k[0] == 0)
        return 0;
    o = 1 + (size_t)k[0];
    const uint8_t *prev = NULL;
    size_t prevlen = 0, n = 0;
    while (o < len) {
        if (++n > BEH_MAX_FILTERS)
            return 0;
        size_t nl = k[o++];
        if (nl == 0 || o + nl + 1 > len)
            return 0;
        const uint8_t *name = k + o;
        if (prev && name_cmp((const char *)prev, prevlen, (const char *)name, nl) >= 0)
            return 0;
        prev = name;
        prevlen = nl;
        o += nl;
        size_t vl = k[o++];
        if (o + vl > len)
            return 0;
        o += vl;
    }
    return o == len;
}

static uint64_t key_hash(const uint8_t *k, size_t len)
{
    return hash64(k, len, 0x6265687669);
}

static int series_find(const beh_t *b, const uint8_t *key, size_t klen, uint32_t *id)
{
    if (b->nslots == 0)
        return 0;
    size_t mask = b->nslots - 1;
    for (size_t i = (size_t)key_hash(key, klen) & mask;; i = (i + 1) & mask) {
        uint32_t v = b->slots[i];
        if (v == EMPTY_SLOT)
            return 0;
        const series_t *se = &b->series[v];
        if (se->klen == klen && memcmp(se->key, key, klen) == 0) {
            *id = v;
            return 1;
        }
    }
}

static void slot_put(uint32_t *slots, size_t nslots, const series_t *se, uint32_t id)
{
    size_t mask = nslots - 1;
    size_t i = (size_t)key_hash(se->key, se->klen) & mask;
    while (slots[i] != EMPTY_SLOT)
        i = (i + 1) & mask;
    slots[i] = id;
}

cp_status beh_series_intern(beh_t *b, const uint8_t *key, size_t klen, uint32_t *id)
{
    if (series_find(b, key, klen, id))
        return CP_OK;
    if (klen == 0 || klen > BEH_KEY_MAX)
        return CP_EINVAL;
    if (b->nseries >= BEH_MAX_SERIES)
        return CP_ELIMIT;
    /* Load factor <= 1/2. */
    if ((size_t)(b->nseries + 1) * 2 > b->nslots) {
        size_t ns = b->nslots ? b->nslots * 2 : 64;
        uint32_t *slots = malloc(ns * sizeof *slots);
        if (slots == NULL)
            return CP_ENOMEM;
        memset(slots, 0xFF, ns * sizeof *slots);
        for (uint32_t s = 0; s < b->nseries; s++)
            slot_put(slots, ns, &b->series[s], s);
        free(b->slots);
        b->slots = slots;
        b->nslots = ns;
    }
    if (b->nseries == b->capseries) {
        uint32_t cap = b->capseries ? b->capseries * 2 : 16;
        series_t *v = realloc(b->series, (size_t)cap * sizeof *v);
        if (v == NULL)
            return CP_ENOMEM;
        b->series = v;
        b->capseries = cap;
    }
    series_t *se = &b->series[b->nseries];
    memset(se, 0, sizeof *se);
    if ((se->key = malloc(klen)) == NULL)
        return CP_ENOMEM;
    memcpy(se->key, key, klen);
    se->klen = (uint32_t)klen;
    slot_put(b->slots, b->nslots, se, b->nseries);
    *id = b->nseries++;
    return CP_OK;
}

int beh_series_lookup(const beh_t *b, const uint8_t *key, size_t klen, uint32_t *id)
{
    return series_find(b, key, klen, id);
}

uint32_t beh_series_count(const beh_t *b)
{
    return b->nseries;
}

const uint8_t *beh_series_key_of(const beh_t *b, uint32_t id, size_t *klen)
{
    if (id >= b->nseries)
        return NULL;
    *klen = b->series[id].klen;
    return b->series[id].key;
}

cp_status beh_resolve(const beh_t *b, const char *event, size_t elen, const beh_prop_t *filters,
                      size_t n, uint32_t *series)
{
    uint8_t key[BEH_KEY_MAX];
    size_t klen;
    uint32_t id;
    *series = BEH_NO_SERIES;
    cp_status st = beh_series_key(event, elen, NULL, 0, key, &klen);
    if (st != CP_OK)
        return st;
    if (!series_find(b, key, klen, &id))
        return CP_ENOTFOUND;
    if (n == 0) {
        *series = id;
        return CP_OK;
    }
    if ((st = beh_series_key(event, elen, filters, n, key, &klen)) != CP_OK)
        return st;
    if (series_find(b, key, klen, &id))
        *series = id;
    return CP_OK;
}

/* 1 if mask has at most BEH_MAX_FILTERS (3) bits set: without a popcount
 * instruction (this build has none) __builtin_popcount is a libgcc call. */
static int subset_ok(uint32_t mask)
{
    for (int i = 0; i < BEH_MAX_FILTERS && mask; i++)
        mask &= mask - 1;
    return mask == 0;
}

/* The subsets of n properties with at most BEH_MAX_FILTERS members, the
 * empty one included. */
static size_t subset_count(size_t n)
{
    size_t k = 0;
    for (uint32_t mask = 0; mask < (1u << n); mask++)
        k += subset_ok(mask);
    return k;
}

/* Bits i of the properties (sorted) whose name and value equal those of
 * the memo, or 0 with *same = 0 when the event or the property names
 * differ (then nothing is reused). */
static uint32_t memo_unchanged(const memo_t *m, const char *event, size_t elen, const beh_prop_t *p,
                               size_t n, int *same)
{
    uint32_t keep = 0;
    *same = 0;
    if (m == NULL || !m->valid || m->elen != elen || m->n != n || !mem_eq(m->event, event, elen))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m->nlen[i] != p[i].nlen || !mem_eq(m->name[i], p[i].name, p[i].nlen))
            return 0;
    for (size_t i = 0; i < n; i++)
        if (m->vlen[i] == p[i].vlen && mem_eq(m->value[i], p[i].value, p[i].vlen))
            keep |= 1u << i;
    *same = 1;
    return keep;
}

cp_status beh_event_series(beh_t *b, const char *event, size_t elen, const beh_prop_t *props,
                           size_t n, uint32_t *ids, size_t cap, size_t *nids)
{
    beh_prop_t sorted[BEH_MAX_PROPS], sub[BEH_MAX_FILTERS];
    uint8_t key[BEH_KEY_MAX];
    cp_status st;
    *nids = 0;
    if (event == NULL || elen == 0 || elen > BEH_NAME_MAX)
        return CP_EINVAL;
    if ((st = props_sorted(props, n, BEH_MAX_PROPS, sorted)) != CP_OK)
        return st;
    if (cap < subset_count(n))
        return CP_EINVAL;
    if (b->memo == NULL && (b->memo = calloc(1, sizeof *b->memo)) == NULL)
        return CP_ENOMEM;
    memo_t *m = b->memo;
    int same;
    uint32_t keep = memo_unchanged(m, event, elen, sorted, n, &same);
    m->valid = 0; /* until every id below is known */
    for (uint32_t mask = 0; mask < (1u << n); mask++) {
        if (!subset_ok(mask))
            continue;
        if (same && (mask & ~keep) == 0) {
            ids[*nids] = m->ids[*nids];
            (*nids)++;
            continue;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (mask & (1u << i))
                sub[k++] = sorted[i];
        size_t klen = key_encode(event, elen, sub, k, key);
        if ((st = beh_series_intern(b, key, klen, &ids[*nids])) != CP_OK)
            return st;
        (*nids)++;
    }
    if (!same) {
        m->elen = (uint8_t)elen;
        m->n = (uint8_t)n;
        bytes_copy(m->event, event, elen);
        for (size_t i = 0; i < n; i++) {
            m->nlen[i] = (uint8_t)sorted[i].nlen;
            bytes_copy(m->name[i], sorted[i].name, sorted[i].nlen);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!(keep & (1u << i))) {
            m->vlen[i] = (uint8_t)sorted[i].vlen;
            bytes_copy(m->value[i], sorted[i].value, sorted[i].vlen);
        }
    for (size_t i = 0; i < *nids; i++)
        m->ids[i] = ids[i];
    m->valid = 1;
    return CP_OK;
}

cp_status beh_sum_series_key(const char *event, size_t elen, const char *prop, size_t plen, int neg,
                             uint8_t *buf, size_t *len)
{
    beh_prop_t p = {neg ? "-sum" : "+sum", 4, prop, plen};
    return beh_series_key(event, elen, &p, 1, buf, len);
}

void beh__dict_rehash(beh_t *b)
{
    memset(b->slots, 0xFF, b->nslots * sizeof *b->slots);
    for (uint32_t s = 0; s < b->nseries; s++)
        slot_put(b->slots, b->nslots, &b->series[s], s);
    if (b->memo)
        b->memo->valid = 0; /* it may hold a forgotten id */
}
