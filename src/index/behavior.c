/* behavior.c — the behaviour index: per series, per UTC day, who and how
 * many times; see behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/behavior.h"
#include "util/util.h"

/*
 * A cell has two forms. Small (at most SMALL_MAX users, the common case of
 * an import: Online Retail has ~2.6 records per cell): a sorted array of
 * users and their count - 1, inline for up to SMALL_INLINE users, else in
 * one malloc'ed block of cap users then cap values — a new cell costs no
 * allocation and no roaring bitmap. Roaring (past SMALL_MAX users):
 * `exists` and the count slices. A cell is promoted when a user past
 * SMALL_MAX arrives and demoted when removals bring it back to SMALL_MAX
 * (or when it loads that small); both forms hold the same content, so
 * everything written to disk is the same whichever form a cell has.
 */
#define SMALL_MAX 16
#define SMALL_INLINE 2

struct beh_cell {
    int32_t day;
    /* Roaring: slices of (count - 1). Small: bitlen of the largest
     * count - 1 (so a count is at most 2^nslices in both forms). */
    uint8_t nslices;
    uint8_t dirty; /* queued in b->dirty */
    /* The 65,536-user chunks changed since the last persist: none (0; or
     * all, when the cell is queued to be rewritten whole), the one chunk
     * d1 (1: the common case, no allocation), or those in dchunks (2). */
    uint8_t nd;
    uint8_t disk; /* its form on disk at the last persist: DISK_* */
    uint16_t d1;
    uint8_t small;             /* 1: the small form (n, cap, in / heap) */
    uint8_t n;                 /* small: users */
    uint8_t cap;               /* small: capacity; SMALL_INLINE: in the cell itself */
    roaring_bitmap_t *dchunks; /* nd == 2 */
    union {
        struct { /* roaring form */
            roaring_bitmap_t *exists;
            roaring_bitmap_t **slices; /* [nslices], NULL when 0 */
        };
        uint32_t in[2 * SMALL_INLINE]; /* small, cap SMALL_INLINE: users, values */
        uint32_t *heap;                /* small, larger cap: users[cap], values[cap] */
    };
};

typedef struct series {
    uint8_t *key;
    uint32_t klen;
    beh_cell_t *cells; /* sorted by day */
    uint32_t ncells, cap;
    roaring_bitmap_t *ever; /* users in some cell (a superset is harmless) */
} series_t;

/* A cell to write at the next persist: its dirty chunks, or (wipe) every
 * key of the cell deleted and all of its current chunks written — after
 * the cell was dropped (it may have been created again since), and after
 * loading the single-value layout of version 1. */
typedef struct dirty {
    uint32_t series;
    int32_t day;
    int wipe;
    beh_cell_t *cell; /* beh_persist only: the cell found (cells do not move in it) */
} dirty_t;

/*
 * beh_event_series' previous call: its event, sorted properties and the
 * ids it returned (in subset order). Consecutive events of an import
 * mostly share the event and some values (Online Retail: every row is a
 * "purchase", only stock_code changes), so every subset whose values are
 * all unchanged takes its id from here without a key or a hash lookup.
 * Ids are never reused (series are never removed); a series forgotten with
 * a deleted user (beh_user_forget) invalidates the memo.
 */
typedef struct memo {
    int valid;
    uint8_t elen, n;
    uint8_t nlen[BEH_MAX_PROPS], vlen[BEH_MAX_PROPS];
    char event[BEH_NAME_MAX];
    char name[BEH_MAX_PROPS][BEH_NAME_MAX], value[BEH_MAX_PROPS][BEH_NAME_MAX];
    uint32_t ids[BEH_MAX_EVENT_SERIES];
} memo_t;

struct beh {
    series_t *series;
    uint32_t nseries, capseries;
    uint32_t persisted; /* dictionary ids below this are on disk */
    uint32_t *slots;    /* hash of keys -> id; UINT32_MAX empty */
    size_t nslots;      /* power of two */
    dirty_t *dirty;
    size_t ndirty, capdirty;
    int failed; /* a dirty mark was lost (ENOMEM): persist fails */
    /* beh_record_many's scratch, kept for the next call (grown, never
     * shrunk): sort keys and their double buffer, the sorted users, the
     * users new to a cell, the others and their counts; radix counters. */
    uint64_t *sk0, *sk1, *srest_n;
    uint32_t *susers, *sfresh, *srest;
    size_t scap;
    size_t *shist;
    /* beh_persist's scratch: the packs to rewrite (pack_id values). */
    uint64_t *packs;
    size_t npacks, cappacks;
    memo_t *memo; /* beh_event_series' previous call (NULL until the first) */
};

#define EMPTY_SLOT UINT32_MAX
#define KEY_DICT "beh/s/"
#define KEY_CELL "beh/d/"
#define CELL_MAGIC0 'B'
#define CELL_MAGIC1 'C'
#define CELL_VERSION_WHOLE 1 /* one value per cell (read only: rewritten per chunk) */
#define CELL_VERSION 2       /* one value per 65,536-user chunk of a cell */
#define CELL_VERSION_PACK 3  /* small cells of 16 series x 16 days in one value */
#define ENTRY_VERSION 1
#define KEY_PACK "beh/p/"
/* Cells with at most this many users are persisted in packs (version 3):
 * a put per pack instead of one per cell. Most cells of an import are
 * this small (Online Retail: ~2.6 users per cell). */
#define PACK_MAX_USERS 16
#define PACK_SERIES_BITS 4 /* a pack holds series [16 b, 16 b + 16) ... */
#define PACK_DAY_BITS 4    /* ... and days [16 w, 16 w + 16) */
#define PACK_READ_MAX 255  /* users of one packed cell accepted on load */
enum { DISK_NONE, DISK_CHUNKS, DISK_PACK };
#define VALUE_MAX ((uint64_t)UINT32_MAX) /* count - 1 saturates here */

static inline void bm_free(roaring_bitmap_t *bm)
{
    if (bm) /* CRoaring 0.2.66 does not accept NULL */
        roaring_bitmap_free(bm);
}

static inline uint32_t *sm_users(const beh_cell_t *c)
{
    return c->cap <= SMALL_INLINE ? (uint32_t *)c->in : c->heap;
}

static inline uint32_t *sm_vals(const beh_cell_t *c)
{
    return sm_users(c) + c->cap;
}

/* Frees what the cell's form holds (not dchunks) and leaves it an empty
 * small cell. */
static void cell_form_release(beh_cell_t *c)
{
    if (c->small) {
        if (c->cap > SMALL_INLINE)
            free(c->heap);
    } else {
        bm_free(c->exists);
        for (int j = 0; j < c->nslices; j++)
            bm_free(c->slices[j]);
        free(c->slices);
    }
    memset(c->in, 0, sizeof c->in);
    c->small = 1;
    c->n = 0;
    c->cap = SMALL_INLINE;
    c->nslices = 0;
}

static void cell_release(beh_cell_t *c)
{
    cell_form_release(c);
    bm_free(c->dchunks);
    memset(c, 0, sizeof *c);
}

static void scratch_free(beh_t *b)
{
    free(b->sk0);
    free(b->sk1);
    free(b->srest_n);
    free(b->susers);
    free(b->sfresh);
    free(b->srest);
    free(b->shist);
    b->sk0 = b->sk1 = b->srest_n = NULL;
    b->susers = b->sfresh = b->srest = NULL;
    b->shist = NULL;
    b->scap = 0;
}

cp_status beh_create(beh_t **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? CP_OK : CP_ENOMEM;
}

void beh_free(beh_t *b)
{
    if (b == NULL)
        return;
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        for (uint32_t i = 0; i < se->ncells; i++)
            cell_release(&se->cells[i]);
        free(se->cells);
        free(se->key);
        bm_free(se->ever);
    }
    free(b->series);
    free(b->slots);
    free(b->dirty);
    free(b->packs);
    free(b->memo);
    scratch_free(b);
    free(b);
}

int32_t beh_day_of(int64_t secs)
{
    int64_t d = secs >= 0 ? secs / 86400 : -((-(secs + 1)) / 86400) - 1;
    return d < INT32_MIN ? INT32_MIN : d > INT32_MAX ? INT32_MAX : (int32_t)d;
}

/* ---------------------------------------------------------- dictionary */

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
static int key_valid(const uint8_t *k, size_t len)
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

/* ---------------------------------------------------------------- cells */

static void mark_dirty(beh_t *b, uint32_t series, int32_t day, int wipe)
{
    if (b->ndirty == b->capdirty) {
        size_t cap = b->capdirty ? b->capdirty * 2 : 64;
        dirty_t *v = realloc(b->dirty, cap * sizeof *v);
        if (v == NULL) {
            b->failed = 1;
            return;
        }
        b->dirty = v;
        b->capdirty = cap;
    }
    b->dirty[b->ndirty++] = (dirty_t){series, day, wipe, NULL};
}

/* The chunk of `user` in cell c changed. */
static void mark_cell(beh_t *b, uint32_t series, beh_cell_t *c, uint32_t user)
{
    uint16_t ch = (uint16_t)(user >> 16);
    if (!c->dirty) {
        c->dirty = 1;
        c->nd = 1;
        c->d1 = ch;
        mark_dirty(b, series, c->day, 0);
        return;
    }
    if (c->nd == 0 || (c->nd == 1 && c->d1 == ch))
        return; /* rewritten whole, or that chunk already */
    if (c->nd == 1) {
        if ((c->dchunks = roaring_bitmap_create()) == NULL) {
            b->failed = 1;
            return;
        }
        roaring_bitmap_add(c->dchunks, c->d1);
        c->nd = 2;
    }
    roaring_bitmap_add(c->dchunks, ch);
}

/* Cell c will be rewritten whole (a wipe entry is queued for it). */
static void mark_cell_whole(beh_t *b, uint32_t series, beh_cell_t *c)
{
    bm_free(c->dchunks);
    c->dchunks = NULL;
    c->nd = 0;
    c->dirty = 1;
    mark_dirty(b, series, c->day, 1);
}

/* First index of se->cells with day >= day. */
static uint32_t lower_day(const series_t *se, int32_t day)
{
    uint32_t lo = 0, hi = se->ncells;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (se->cells[mid].day < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static beh_cell_t *cell_find(const series_t *se, int32_t day)
{
    uint32_t i =
        se->ncells && se->cells[se->ncells - 1].day < day ? se->ncells : lower_day(se, day);
    return i < se->ncells && se->cells[i].day == day ? &se->cells[i] : NULL;
}

/* The cell of `day`, created (an empty small cell: no allocation) if
 * missing. */
static cp_status cell_get(series_t *se, int32_t day, beh_cell_t **out)
{
    uint32_t i =
        se->ncells && se->cells[se->ncells - 1].day < day ? se->ncells : lower_day(se, day);
    if (i < se->ncells && se->cells[i].day == day) {
        *out = &se->cells[i];
        return CP_OK;
    }
    if (se->ncells == se->cap) {
        uint32_t cap = se->cap ? se->cap * 2 : 4;
        beh_cell_t *v = realloc(se->cells, (size_t)cap * sizeof *v);
        if (v == NULL)
            return CP_ENOMEM;
        se->cells = v;
        se->cap = cap;
    }
    memmove(&se->cells[i + 1], &se->cells[i], (size_t)(se->ncells - i) * sizeof *se->cells);
    se->ncells++;
    beh_cell_t *c = &se->cells[i];
    memset(c, 0, sizeof *c);
    c->day = day;
    c->small = 1;
    c->cap = SMALL_INLINE;
    *out = c;
    return CP_OK;
}

static int bitlen(uint64_t v)
{
    return v ? 64 - __builtin_clzll(v) : 0;
}

/* Users of the cell. */
static uint64_t cell_users(const beh_cell_t *c)
{
    return c->small ? c->n : roaring_bitmap_get_cardinality(c->exists);
}

/* First index of the small cell's users >= user. */
static uint32_t sm_lower(const beh_cell_t *c, uint32_t user)
{
    const uint32_t *u = sm_users(c);
    uint32_t i = 0;
    while (i < c->n && u[i] < user)
        i++;
    return i;
}

/* Room for need (<= SMALL_MAX) users in a small cell (CP_ENOMEM). */
static cp_status sm_reserve(beh_cell_t *c, uint32_t need)
{
    if (need <= c->cap)
        return CP_OK;
    uint32_t cap = need <= 4 ? 4 : need <= 8 ? 8 : SMALL_MAX;
    uint32_t *v = malloc((size_t)cap * 2 * sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    memcpy(v, sm_users(c), c->n * sizeof *v);
    memcpy(v + cap, sm_vals(c), c->n * sizeof *v);
    if (c->cap > SMALL_INLINE)
        free(c->heap);
    c->heap = v;
    c->cap = (uint8_t)cap;
    return CP_OK;
}

/* nslices of a small cell from its values. */
static void sm_retop(beh_cell_t *c)
{
    const uint32_t *v = sm_vals(c);
    uint32_t top = 0;
    for (uint32_t i = 0; i < c->n; i++)
        top |= v[i];
    c->nslices = (uint8_t)bitlen(top);
}

/* A small cell into the roaring form (CP_ENOMEM leaves it small). */
static cp_status cell_promote(beh_cell_t *c)
{
    const uint32_t *u = sm_users(c), *v = sm_vals(c);
    int ns = c->nslices;
    roaring_bitmap_t *ex = roaring_bitmap_create(), **sl = NULL;
    if (ex == NULL)
        return CP_ENOMEM;
    if (ns > 0 && (sl = calloc((size_t)ns, sizeof *sl)) == NULL)
        goto nomem;
    for (int j = 0; j < ns; j++)
        if ((sl[j] = roaring_bitmap_create()) == NULL)
            goto nomem;
    roaring_bitmap_add_many(ex, c->n, u);
    for (uint32_t i = 0; i < c->n; i++)
        for (uint32_t x = v[i], j = 0; x; j++, x >>= 1)
            if (x & 1)
                roaring_bitmap_add(sl[j], u[i]);
    if (c->cap > SMALL_INLINE)
        free(c->heap);
    c->small = 0;
    c->n = 0;
    c->cap = 0;
    c->exists = ex;
    c->slices = sl;
    return CP_OK;
nomem:
    for (int j = 0; sl && j < ns; j++)
        bm_free(sl[j]);
    free(sl);
    bm_free(ex);
    return CP_ENOMEM;
}

/* count - 1 of a user present in a roaring cell. */
static uint64_t cell_value(const beh_cell_t *c, uint32_t user)
{
    uint64_t v = 0;
    for (int j = 0; j < c->nslices; j++)
        if (roaring_bitmap_contains(c->slices[j], user))
            v |= (uint64_t)1 << j;
    return v;
}

/* 1 and *v = count - 1 if the user is in the cell (either form). */
static int cell_lookup(const beh_cell_t *c, uint32_t user, uint64_t *v)
{
    if (c->small) {
        uint32_t i = sm_lower(c, user);
        if (i == c->n || sm_users(c)[i] != user)
            return 0;
        *v = sm_vals(c)[i];
        return 1;
    }
    if (!roaring_bitmap_contains(c->exists, user))
        return 0;
    *v = cell_value(c, user);
    return 1;
}

/* A roaring cell of 1 .. SMALL_MAX users into the small form (for the
 * memory; CP_ENOMEM leaves it as it is, which is harmless). */
static void cell_demote(beh_cell_t *c)
{
    uint64_t n = c->small ? 0 : roaring_bitmap_get_cardinality(c->exists);
    if (n == 0 || n > SMALL_MAX)
        return;
    uint32_t u[SMALL_MAX], v[SMALL_MAX], *heap = NULL;
    roaring_bitmap_to_uint32_array(c->exists, u);
    for (uint64_t i = 0; i < n; i++)
        v[i] = (uint32_t)cell_value(c, u[i]);
    uint32_t cap = n <= SMALL_INLINE ? SMALL_INLINE : n <= 4 ? 4 : n <= 8 ? 8 : SMALL_MAX;
    if (cap > SMALL_INLINE && (heap = malloc((size_t)cap * 2 * sizeof *heap)) == NULL)
        return;
    cell_form_release(c);
    if (heap)
        c->heap = heap;
    c->cap = (uint8_t)cap;
    c->n = (uint8_t)n;
    memcpy(sm_users(c), u, n * sizeof *u);
    memcpy(sm_vals(c), v, n * sizeof *v);
    sm_retop(c);
}

static cp_status cell_grow(beh_cell_t *c, int n)
{
    if (n <= c->nslices)
        return CP_OK;
    roaring_bitmap_t **v = realloc(c->slices, (size_t)n * sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    c->slices = v;
    while (c->nslices < n) {
        if ((v[c->nslices] = roaring_bitmap_create()) == NULL)
            return CP_ENOMEM;
        c->nslices++;
    }
    return CP_OK;
}

/* Drops empty top slices, so the accumulator bound stays tight. */
static void cell_trim(beh_cell_t *c)
{
    while (c->nslices > 0 && roaring_bitmap_is_empty(c->slices[c->nslices - 1]))
        roaring_bitmap_free(c->slices[--c->nslices]);
    if (c->nslices == 0) {
        free(c->slices);
        c->slices = NULL;
    }
}

/* old + delta, saturating at VALUE_MAX. */
static uint64_t value_add(uint64_t old, uint64_t delta)
{
    uint64_t nv = old + delta < old ? VALUE_MAX : old + delta;
    return nv > VALUE_MAX ? VALUE_MAX : nv;
}

/* Adds delta (>= 1) to user's count in cell c. The caller has marked
 * the user's chunk dirty and put the user in the series' `ever`. */
static cp_status cell_add(beh_cell_t *c, uint32_t user, uint64_t delta)
{
    uint64_t old = 0, nv;
    cp_status st;
    if (c->small) {
        uint32_t i = sm_lower(c, user);
        if (i < c->n && sm_users(c)[i] == user) {
            nv = value_add(sm_vals(c)[i], delta);
            sm_vals(c)[i] = (uint32_t)nv;
            if (bitlen(nv) > c->nslices)
                c->nslices = (uint8_t)bitlen(nv);
            return CP_OK;
        }
        if (c->n < SMALL_MAX) {
            if ((st = sm_reserve(c, c->n + 1u)) != CP_OK)
                return st;
            uint32_t *u = sm_users(c), *v = sm_vals(c);
            memmove(u + i + 1, u + i, (c->n - i) * sizeof *u);
            memmove(v + i + 1, v + i, (c->n - i) * sizeof *v);
            nv = value_add(0, delta - 1);
            u[i] = user;
            v[i] = (uint32_t)nv;
            c->n++;
            if (bitlen(nv) > c->nslices)
                c->nslices = (uint8_t)bitlen(nv);
            return CP_OK;
        }
        if ((st = cell_promote(c)) != CP_OK)
            return st;
    }
    if (roaring_bitmap_add_checked(c->exists, user)) {
        if (delta == 1)
            return CP_OK; /* count 1: exists alone */
        nv = value_add(0, delta - 1);
    } else {
        old = cell_value(c, user);
        nv = value_add(old, delta);
    }
    st = cell_grow(c, bitlen(nv));
    if (st != CP_OK) {
        cell_trim(c); /* keep the cell consistent: the user counts its old value */
        return st;
    }
    for (int j = 0; j < c->nslices; j++) {
        uint64_t bit = (uint64_t)1 << j;
        if ((nv & bit) && !(old & bit))
            roaring_bitmap_add(c->slices[j], user);
        else if (!(nv & bit) && (old & bit))
            roaring_bitmap_remove(c->slices[j], user);
    }
    return CP_OK;
}

cp_status beh_record(beh_t *b, uint32_t series, int32_t day, uint32_t user, uint64_t delta)
{
    if (delta == 0 || series >= b->nseries)
        return CP_EINVAL;
    series_t *se = &b->series[series];
    beh_cell_t *c;
    cp_status st;
    if (se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL)
        return CP_ENOMEM;
    if ((st = cell_get(se, day, &c)) != CP_OK)
        return st;
    roaring_bitmap_add(se->ever, user);
    mark_cell(b, series, c, user);
    return cell_add(c, user, delta);
}

/* The subsets of n properties with at most BEH_MAX_FILTERS members, the
 * empty one included. */
/* 1 if mask has at most BEH_MAX_FILTERS (3) bits set: without a popcount
 * instruction (this build has none) __builtin_popcount is a libgcc call. */
static int subset_ok(uint32_t mask)
{
    for (int i = 0; i < BEH_MAX_FILTERS && mask; i++)
        mask &= mask - 1;
    return mask == 0;
}

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

cp_status beh_record_event(beh_t *b, const char *event, size_t elen, const beh_prop_t *props,
                           size_t n, int32_t day, uint32_t user, uint64_t delta)
{
    uint32_t ids[BEH_MAX_EVENT_SERIES];
    size_t nids = 0;
    if (delta == 0)
        return CP_EINVAL;
    cp_status st = beh_event_series(b, event, elen, props, n, ids, BEH_MAX_EVENT_SERIES, &nids);
    for (size_t i = 0; i < nids && st == CP_OK; i++)
        st = beh_record(b, ids[i], day, user, delta);
    return st;
}

/* ---------------------------------------------------------- bulk writes */

#define RADIX_BITS 11
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_PASSES 6 /* 64 bits of key */

static cp_status scratch_reserve(beh_t *b, size_t n)
{
    if (n <= b->scap && b->shist)
        return CP_OK;
    scratch_free(b);
    size_t cap = n < 1024 ? 1024 : n;
    if (cap > SIZE_MAX / sizeof(uint64_t))
        return CP_ENOMEM;
    b->sk0 = malloc(cap * sizeof *b->sk0);
    b->sk1 = malloc(cap * sizeof *b->sk1);
    b->srest_n = malloc(cap * sizeof *b->srest_n);
    b->susers = malloc(cap * sizeof *b->susers);
    b->sfresh = malloc(cap * sizeof *b->sfresh);
    b->srest = malloc(cap * sizeof *b->srest);
    b->shist = malloc((size_t)RADIX_PASSES * RADIX_SIZE * sizeof *b->shist);
    if (!b->sk0 || !b->sk1 || !b->srest_n || !b->susers || !b->sfresh || !b->srest || !b->shist) {
        scratch_free(b);
        return CP_ENOMEM;
    }
    b->scap = cap;
    return CP_OK;
}

/* Sorts a[0..n) by its low `bits` bits (LSD radix, 11 bits a pass, passes
 * where every key has the same digit skipped). Returns a or tmp, whichever
 * holds the result. */
static uint64_t *radix_sort(uint64_t *a, uint64_t *tmp, size_t n, int bits, size_t *hist)
{
    int passes = (bits + RADIX_BITS - 1) / RADIX_BITS;
    memset(hist, 0, (size_t)passes * RADIX_SIZE * sizeof *hist);
    /* One tight loop per digit (a sequential re-read of a[] is cheaper
     * than the inner loop over the digits per key). */
    for (int p = 0; p < passes; p++) {
        size_t *h = hist + (size_t)p * RADIX_SIZE;
        int sh = p * RADIX_BITS;
        for (size_t i = 0; i < n; i++)
            h[(a[i] >> sh) & (RADIX_SIZE - 1)]++;
    }
    uint64_t *src = a, *dst = tmp;
    for (int p = 0; p < passes; p++) {
        size_t *h = hist + (size_t)p * RADIX_SIZE;
        if (h[(src[0] >> (p * RADIX_BITS)) & (RADIX_SIZE - 1)] == n)
            continue; /* one digit: already in order */
        size_t sum = 0;
        for (uint32_t d = 0; d < RADIX_SIZE; d++) {
            size_t c = h[d];
            h[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t x = src[i];
            dst[h[(x >> (p * RADIX_BITS)) & (RADIX_SIZE - 1)]++] = x;
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

static int rec_cmp(const void *x, const void *y)
{
    const beh_rec_t *a = x, *b = y;
    if (a->series != b->series)
        return a->series < b->series ? -1 : 1;
    if (a->day != b->day)
        return a->day < b->day ? -1 : 1;
    return (a->user > b->user) - (a->user < b->user);
}

/* The chunks chunks[0..n) (ascending) of cell c changed: mark_cell for
 * each, with one sorted insert when the cell tracks a set of chunks. */
static void mark_cell_chunks(beh_t *b, uint32_t series, beh_cell_t *c, const uint32_t *chunks,
                             size_t n)
{
    size_t i = 0;
    for (; i < n && c->nd != 2; i++)
        mark_cell(b, series, c, chunks[i] << 16);
    if (i < n && c->nd == 2)
        roaring_bitmap_add_many(c->dchunks, n - i, chunks + i);
}

/*
 * Merges users[0..nu) (ascending, distinct) with counts cnt[] into the
 * small cell c, from the back in place. CP_ELIMIT when the cell would pass
 * SMALL_MAX users (nothing changed: the caller promotes it), CP_ENOMEM.
 */
static cp_status sm_merge(beh_cell_t *c, const uint32_t *users, const uint64_t *cnt, size_t nu)
{
    if (nu > SMALL_MAX)
        return CP_ELIMIT;
    const uint32_t *u = sm_users(c);
    uint32_t n = c->n, total = n + (uint32_t)nu;
    for (uint32_t i = 0, j = 0; i < n && j < nu;) {
        if (u[i] == users[j]) {
            total--;
            i++;
            j++;
        } else if (u[i] < users[j]) {
            i++;
        } else {
            j++;
        }
    }
    if (total > SMALL_MAX)
        return CP_ELIMIT;
    cp_status st = sm_reserve(c, total);
    if (st != CP_OK)
        return st;
    uint32_t *du = sm_users(c), *dv = sm_vals(c), top = 0;
    size_t i = n, j = nu, o = total;
    while (j > 0) {
        o--;
        if (i > 0 && du[i - 1] > users[j - 1]) {
            du[o] = du[i - 1];
            dv[o] = dv[i - 1];
            i--;
        } else if (i > 0 && du[i - 1] == users[j - 1]) {
            du[o] = users[j - 1];
            dv[o] = (uint32_t)value_add(dv[i - 1], cnt[j - 1]);
            i--;
            j--;
        } else {
            du[o] = users[j - 1];
            dv[o] = (uint32_t)value_add(0, cnt[j - 1] - 1);
            j--;
        }
    }
    c->n = (uint8_t)total;
    for (uint32_t k = 0; k < total; k++)
        top |= dv[k];
    c->nslices = (uint8_t)bitlen(top);
    return CP_OK;
}

/*
 * One cell's share of a beh_record_many call: users[0..k) sorted, a user
 * appearing m times adds m. Into a new (empty) cell the users with one
 * event go with one sorted roaring_bitmap_add_many; otherwise each user
 * is one insert-or-find (cell_add), and only users already present or
 * with several events touch the count slices. Every chunk touched is
 * marked dirty once, before anything changes. add_ever: put the users in
 * the series' `ever` (the caller has not done it for the whole batch).
 */
static cp_status apply_cell(beh_t *b, uint32_t s, int32_t day, const uint32_t *users, size_t k,
                            int add_ever)
{
    series_t *se = &b->series[s];
    beh_cell_t *c;
    cp_status st;
    if (se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL)
        return CP_ENOMEM;
    if ((st = cell_get(se, day, &c)) != CP_OK)
        return st;
    /* Runs of equal users: uniq[] with counts; chunks[] the distinct
     * chunks (in the fresh buffer, free until the add below). */
    uint32_t *uniq = b->srest, *chunks = b->sfresh;
    uint64_t *cnt = b->srest_n;
    size_t nu = 0, nch = 0;
    for (size_t i = 0; i < k;) {
        uint32_t u = users[i];
        size_t j = i + 1;
        while (j < k && users[j] == u)
            j++;
        if (nch == 0 || chunks[nch - 1] != u >> 16)
            chunks[nch++] = u >> 16;
        uniq[nu] = u;
        cnt[nu++] = (uint64_t)(j - i);
        i = j;
    }
    mark_cell_chunks(b, s, c, chunks, nch);
    if (add_ever)
        roaring_bitmap_add_many(se->ever, nu, uniq);
    if (c->small) {
        if (sm_merge(c, uniq, cnt, nu) == CP_OK)
            return CP_OK;
        if ((st = cell_promote(c)) != CP_OK)
            return st;
    }
    if (!roaring_bitmap_is_empty(c->exists)) {
        for (size_t i = 0; i < nu; i++)
            if ((st = cell_add(c, uniq[i], cnt[i])) != CP_OK)
                return st;
        return CP_OK;
    }
    uint32_t *fresh = b->sfresh;
    size_t nfresh = 0;
    for (size_t i = 0; i < nu; i++)
        if (cnt[i] == 1)
            fresh[nfresh++] = uniq[i];
    if (nfresh)
        roaring_bitmap_add_many(c->exists, nfresh, fresh);
    for (size_t i = 0; i < nu; i++)
        if (cnt[i] > 1 && (st = cell_add(c, uniq[i], cnt[i])) != CP_OK)
            return st;
    return CP_OK;
}

cp_status beh_record_many(beh_t *b, beh_rec_t *recs, size_t n)
{
    if (n == 0)
        return CP_OK;
    uint32_t smin = UINT32_MAX, smax = 0, umin = UINT32_MAX, umax = 0;
    int32_t dmin = INT32_MAX, dmax = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        const beh_rec_t *r = &recs[i];
        if (r->series >= b->nseries)
            return CP_EINVAL;
        smin = r->series < smin ? r->series : smin;
        smax = r->series > smax ? r->series : smax;
        dmin = r->day < dmin ? r->day : dmin;
        dmax = r->day > dmax ? r->day : dmax;
        umin = r->user < umin ? r->user : umin;
        umax = r->user > umax ? r->user : umax;
    }
    cp_status st = scratch_reserve(b, n);
    if (st != CP_OK)
        return st;
    /* (series, day, user) as one 64-bit key of offsets from the minima
     * when the three ranges fit (they nearly always do: a batch spans a
     * few days and a few thousand series); otherwise a comparison sort of
     * the records themselves. */
    int ub = bitlen(umax - umin), db = bitlen((uint64_t)((int64_t)dmax - dmin)),
        sb = bitlen(smax - smin);
    uint32_t *users = b->susers;
    if (ub + db + sb <= 64) {
        /* First each series' `ever`, once per batch with its users sorted
         * (one container lookup per run of a chunk, not one per cell), and
         * before any cell: a superset is harmless if a cell fails below. */
        uint64_t *k = b->sk0;
        for (size_t i = 0; i < n; i++)
            k[i] = (uint64_t)(recs[i].series - smin) << ub | (uint64_t)(recs[i].user - umin);
        k = radix_sort(k, b->sk1, n, ub + sb, b->shist);
        for (size_t i = 0; i < n;) {
            uint64_t sk = k[i] >> ub;
            size_t nu = 0;
            for (; i < n && k[i] >> ub == sk; i++)
                if (nu == 0 || users[nu - 1] != (uint32_t)(k[i] & ((UINT64_C(1) << ub) - 1)) + umin)
                    users[nu++] = (uint32_t)(k[i] & ((UINT64_C(1) << ub) - 1)) + umin;
            series_t *se = &b->series[(uint32_t)sk + smin];
            if (se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL)
                return CP_ENOMEM;
            roaring_bitmap_add_many(se->ever, nu, users);
        }
        k = b->sk0;
        for (size_t i = 0; i < n; i++) {
            const beh_rec_t *r = &recs[i];
            uint64_t cellk =
                (uint64_t)(r->series - smin) << db | (uint64_t)((int64_t)r->day - dmin);
            k[i] = cellk << ub | (uint64_t)(r->user - umin); /* ub, db <= 32 */
        }
        k = radix_sort(k, b->sk1, n, ub + db + sb, b->shist);
        uint64_t umask = ub == 0 ? 0 : (UINT64_MAX >> (64 - ub));
        uint64_t dmask = db == 0 ? 0 : (UINT64_MAX >> (64 - db));
        for (size_t i = 0; i < n; i++)
            users[i] = (uint32_t)(k[i] & umask) + umin;
        for (size_t i = 0; i < n && st == CP_OK;) {
            uint64_t cellk = k[i] >> ub;
            size_t j = i + 1;
            while (j < n && k[j] >> ub == cellk)
                j++;
            uint32_t s = (uint32_t)(cellk >> db) + smin;
            int32_t day = (int32_t)((int64_t)dmin + (int64_t)(cellk & dmask));
            st = apply_cell(b, s, day, users + i, j - i, 0);
            i = j;
        }
        return st;
    }
    qsort(recs, n, sizeof *recs, rec_cmp);
    for (size_t i = 0; i < n; i++)
        users[i] = recs[i].user;
    for (size_t i = 0; i < n && st == CP_OK;) {
        size_t j = i + 1;
        while (j < n && recs[j].series == recs[i].series && recs[j].day == recs[i].day)
            j++;
        st = apply_cell(b, recs[i].series, recs[i].day, users + i, j - i, 1);
        i = j;
    }
    return st;
}

/* Removes user from cell i of series s; deletes the cell when it empties.
 * Returns 0 if the user was not there, 1 if removed, 2 if the cell went
 * (cell i is then the next one). */
static int cell_remove_user(beh_t *b, uint32_t s, uint32_t i, uint32_t user)
{
    series_t *se = &b->series[s];
    beh_cell_t *c = &se->cells[i];
    if (c->small) {
        uint32_t k = sm_lower(c, user);
        uint32_t *u = sm_users(c), *v = sm_vals(c);
        if (k == c->n || u[k] != user)
            return 0;
        memmove(u + k, u + k + 1, (c->n - k - 1) * sizeof *u);
        memmove(v + k, v + k + 1, (c->n - k - 1) * sizeof *v);
        c->n--;
        sm_retop(c);
    } else {
        if (!roaring_bitmap_remove_checked(c->exists, user))
            return 0;
        for (int j = 0; j < c->nslices; j++)
            roaring_bitmap_remove(c->slices[j], user);
        cell_trim(c);
        cell_demote(c);
    }
    if (cell_users(c) > 0) {
        mark_cell(b, s, c, user);
        return 1;
    }
    int32_t day = c->day;
    cell_release(c);
    memmove(&se->cells[i], &se->cells[i + 1], (size_t)(se->ncells - i - 1) * sizeof *c);
    se->ncells--;
    mark_dirty(b, s, day, 1); /* its keys must go */
    return 2;
}

void beh_user_remove(beh_t *b, uint32_t user)
{
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        if (se->ever == NULL || !roaring_bitmap_remove_checked(se->ever, user))
            continue;
        for (uint32_t i = 0; i < se->ncells;)
            if (cell_remove_user(b, s, i, user) != 2)
                i++;
    }
}

cp_status beh_user_extract(const beh_t *b, uint32_t user, beh_entry_t **out, size_t *n)
{
    beh_entry_t *v = NULL;
    size_t len = 0, cap = 0;
    *out = NULL;
    *n = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        const series_t *se = &b->series[s];
        if (se->ever == NULL || !roaring_bitmap_contains(se->ever, user))
            continue;
        for (uint32_t i = 0; i < se->ncells; i++) {
            const beh_cell_t *c = &se->cells[i];
            uint64_t val;
            if (!cell_lookup(c, user, &val))
                continue;
            if (len == cap) {
                size_t nc = cap ? cap * 2 : 16;
                beh_entry_t *nv = realloc(v, nc * sizeof *nv);
                if (nv == NULL) {
                    free(v);
                    return CP_ENOMEM;
                }
                v = nv;
                cap = nc;
            }
            v[len++] = (beh_entry_t){s, c->day, val + 1};
        }
    }
    *out = v;
    *n = len;
    return CP_OK;
}

cp_status beh_user_insert(beh_t *b, uint32_t user, const beh_entry_t *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].series >= b->nseries || e[i].count == 0)
            return CP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        cp_status st = beh_record(b, e[i].series, e[i].day, user, e[i].count);
        if (st != CP_OK)
            return st;
    }
    return CP_OK;
}

cp_status beh_user_move(beh_t *b, uint32_t from, uint32_t to)
{
    beh_entry_t *e = NULL;
    size_t n = 0;
    if (from == to)
        return CP_OK;
    cp_status st = beh_user_extract(b, from, &e, &n);
    if (st != CP_OK)
        return st;
    beh_user_remove(b, from);
    st = beh_user_insert(b, to, e, n);
    free(e);
    return st;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32be(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* "BE", version, u32 n, then n x [u32 series][i32 day][u64 count], little endian. */
#define ENTRY_HEAD 7
#define ENTRY_SIZE 16

cp_status beh_entries_encode(const beh_entry_t *e, size_t n, uint8_t **out, size_t *len)
{
    if (n > UINT32_MAX || n > (SIZE_MAX - ENTRY_HEAD - *len) / ENTRY_SIZE)
        return CP_ELIMIT;
    size_t add = ENTRY_HEAD + n * ENTRY_SIZE;
    uint8_t *p = realloc(*out, *len + add);
    if (p == NULL)
        return CP_ENOMEM;
    *out = p;
    p += *len;
    p[0] = 'B';
    p[1] = 'E';
    p[2] = ENTRY_VERSION;
    put_u32le(p + 3, (uint32_t)n);
    p += ENTRY_HEAD;
    for (size_t i = 0; i < n; i++, p += ENTRY_SIZE) {
        put_u32le(p, e[i].series);
        put_u32le(p + 4, (uint32_t)e[i].day);
        put_u32le(p + 8, (uint32_t)e[i].count);
        put_u32le(p + 12, (uint32_t)(e[i].count >> 32));
    }
    *len += add;
    return CP_OK;
}

cp_status beh_entries_decode(const void *buf, size_t len, beh_entry_t **out, size_t *n)
{
    const uint8_t *p = buf;
    *out = NULL;
    *n = 0;
    if (len < ENTRY_HEAD || p[0] != 'B' || p[1] != 'E' || p[2] != ENTRY_VERSION)
        return CP_EIO;
    uint32_t cnt = get_u32le(p + 3);
    if ((len - ENTRY_HEAD) / ENTRY_SIZE != cnt || (len - ENTRY_HEAD) % ENTRY_SIZE != 0)
        return CP_EIO;
    if (cnt == 0)
        return CP_OK;
    beh_entry_t *v = malloc((size_t)cnt * sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    p += ENTRY_HEAD;
    for (uint32_t i = 0; i < cnt; i++, p += ENTRY_SIZE) {
        v[i].series = get_u32le(p);
        v[i].day = (int32_t)get_u32le(p + 4);
        v[i].count = (uint64_t)get_u32le(p + 8) | (uint64_t)get_u32le(p + 12) << 32;
        if (v[i].count == 0 || v[i].count > VALUE_MAX + 1) {
            free(v);
            return CP_EIO;
        }
    }
    *out = v;
    *n = cnt;
    return CP_OK;
}

size_t beh_retain(beh_t *b, int32_t cutoff)
{
    size_t dropped = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        uint32_t k = lower_day(se, cutoff);
        if (k == 0)
            continue;
        for (uint32_t i = 0; i < k; i++) {
            mark_dirty(b, s, se->cells[i].day, 1);
            cell_release(&se->cells[i]);
        }
        memmove(se->cells, se->cells + k, (size_t)(se->ncells - k) * sizeof *se->cells);
        se->ncells -= k;
        dropped += k;
        /* `ever` is only a filter for per-user scans; rebuild it tight. */
        roaring_bitmap_t *ever = roaring_bitmap_create();
        if (ever != NULL) {
            for (uint32_t i = 0; i < se->ncells; i++) {
                const beh_cell_t *c = &se->cells[i];
                if (c->small)
                    roaring_bitmap_add_many(ever, c->n, sm_users(c));
                else
                    roaring_bitmap_or_inplace(ever, c->exists);
            }
            bm_free(se->ever);
            se->ever = ever;
        }
    }
    return dropped;
}

uint64_t beh_count(const beh_t *b, uint32_t series, int32_t day, uint32_t user)
{
    if (series >= b->nseries)
        return 0;
    const beh_cell_t *c = cell_find(&b->series[series], day);
    uint64_t v;
    return c != NULL && cell_lookup(c, user, &v) ? v + 1 : 0;
}

int beh_day_range(const beh_t *b, int32_t *first, int32_t *last)
{
    int any = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        const series_t *se = &b->series[s];
        if (se->ncells == 0)
            continue;
        if (!any || se->cells[0].day < *first)
            *first = se->cells[0].day;
        if (!any || se->cells[se->ncells - 1].day > *last)
            *last = se->cells[se->ncells - 1].day;
        any = 1;
    }
    return any;
}

/* ---------------------------------------------------------------- query */

void beh_window_init(const beh_t *b, uint32_t series, int32_t d0, int32_t d1, beh_window_t *w)
{
    memset(w, 0, sizeof *w);
    if (series >= b->nseries || d0 > d1)
        return;
    const series_t *se = &b->series[series];
    uint32_t i0 = lower_day(se, d0);
    uint32_t i1 = d1 == INT32_MAX ? se->ncells : lower_day(se, d1 + 1);
    if (i0 >= i1)
        return;
    w->cells = se->cells + i0;
    w->ncells = i1 - i0;
    /* A cell's count is at most 2^nslices, so the window's sum is at most
     * bound < 2^bitlen(bound) (ncells < 2^32, nslices <= 32: no overflow). */
    uint64_t bound = 0;
    for (uint32_t i = 0; i < w->ncells; i++)
        bound += (uint64_t)1 << w->cells[i].nslices;
    w->slices = bitlen(bound);
}

void beh_window_foreach(const beh_window_t *w, void (*fn)(void *ctx, uint32_t user, uint64_t count),
                        void *ctx)
{
    for (uint32_t i = 0; i < w->ncells; i++) {
        const beh_cell_t *c = &w->cells[i];
        if (c->small) {
            const uint32_t *u = sm_users(c), *v = sm_vals(c);
            for (uint32_t k = 0; k < c->n; k++)
                fn(ctx, u[k], (uint64_t)v[k] + 1);
            continue;
        }
        roaring_uint32_iterator_t it;
        roaring_init_iterator(c->exists, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            fn(ctx, it.current_value, 1);
        for (int j = 0; j < c->nslices; j++) {
            roaring_init_iterator(c->slices[j], &it);
            for (; it.has_value; roaring_advance_uint32_iterator(&it))
                fn(ctx, it.current_value, (uint64_t)1 << j);
        }
    }
}

cp_status beh_sum_series_key(const char *event, size_t elen, const char *prop, size_t plen, int neg,
                             uint8_t *buf, size_t *len)
{
    beh_prop_t p = {neg ? "-sum" : "+sum", 4, prop, plen};
    return beh_series_key(event, elen, &p, 1, buf, len);
}

void beh_window_days(beh_window_t *w)
{
    w->days = 1;
    w->slices = bitlen(w->ncells); /* at most one per day */
}

int beh_cmp_zero(beh_cmp op, uint64_t k)
{
    switch (op) {
    case BEH_EQ:
        return k == 0;
    case BEH_NE:
        return k != 0;
    case BEH_LT:
        return k > 0;
    case BEH_LE:
        return 1;
    case BEH_GT:
        return 0;
    case BEH_GE:
        return k == 0;
    }
    return 0;
}

uint64_t beh_window_estimate(const beh_window_t *w, beh_cmp op, uint64_t k)
{
    if (beh_cmp_zero(op, k))
        return UINT64_MAX;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < w->ncells; i++) {
        uint64_t c = cell_users(&w->cells[i]);
        sum = sum + c < sum ? UINT64_MAX : sum + c;
    }
    return sum;
}

/* Scratch: one chunk of carries, then the accumulator, slice-major
 * (slice i of the chunk's sums at acc + i * CP_CHUNK_WORDS). */
#define SCR_ACC CP_CHUNK_WORDS

size_t beh_window_scratch_words(const beh_window_t *w)
{
    return SCR_ACC + (size_t)CP_CHUNK_WORDS * (size_t)(w->slices > 0 ? w->slices : 1);
}

/* Which comparisons are a plain "did it at all" or "did not". */
static int is_any(beh_cmp op, uint64_t k)
{
    return (op == BEH_GE && k == 1) || (op == BEH_GT && k == 0) || (op == BEH_NE && k == 0);
}

static int is_none(beh_cmp op, uint64_t k)
{
    return (op == BEH_EQ && k == 0) || (op == BEH_LT && k == 1) || (op == BEH_LE && k == 0);
}

/*
 * acc += carry << pos for the 65,536 users of the chunk at once: a
 * word-level ripple-carry adder, one slice of 1,024 words per step (a
 * loop the compiler vectorises), stopping at the first slice where no
 * carry is left. Sparse days stop after a slice or two. Returns the
 * highest slice written. `carry` is consumed.
 */
static int ripple_add(uint64_t *acc, int S, uint64_t *carry, int pos)
{
    int i = pos;
    for (; i < S; i++) {
        uint64_t *a = acc + (size_t)i * CP_CHUNK_WORDS;
        uint64_t any = 0;
        for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++) {
            uint64_t t = a[w] & carry[w];
            a[w] ^= carry[w];
            carry[w] = t;
            any |= t;
        }
        if (any == 0)
            return i;
    }
    return S - 1; /* not reached: S bounds every sum of the window */
}

/* The users [*lo, *hi) of a small cell that lie in chunk `key`; 0 if none. */
static int sm_chunk(const beh_cell_t *c, uint16_t key, uint32_t *lo, uint32_t *hi)
{
    const uint32_t *u = sm_users(c);
    uint32_t i = 0, j;
    while (i < c->n && u[i] >> 16 < key)
        i++;
    for (j = i; j < c->n && u[j] >> 16 == key; j++)
        ;
    *lo = i;
    *hi = j;
    return j > i;
}

/*
 * The sum of one user (bit `low` of the chunk) += count, bit by bit in
 * the slice-major accumulator: a small cell's few users cost a few word
 * updates each instead of a ripple over whole slices. Returns the highest
 * slice written (-1 if none).
 */
static int acc_add_user(uint64_t *acc, int S, uint32_t low, uint64_t count)
{
    size_t w = low >> 6;
    uint64_t m = (uint64_t)1 << (low & 63), carry = 0;
    int top = -1;
    for (int i = 0; i < S && (count || carry); i++, count >>= 1) {
        uint64_t *a = &acc[(size_t)i * CP_CHUNK_WORDS + w];
        uint64_t sum = ((*a & m) != 0) + (count & 1) + carry;
        *a = sum & 1 ? *a | m : *a & ~m;
        carry = sum >> 1;
        top = i;
    }
    return top;
}

int beh_window_chunk(const beh_window_t *w, uint16_t key, beh_cmp op, uint64_t k, uint64_t *dst,
                     uint64_t *scratch)
{
    uint32_t lo, hi;
    bm_chunk_t ch;
    int32_t cur;
    if (is_any(op, k) || is_none(op, k)) {
        int have = 0;
        for (uint32_t i = 0; i < w->ncells; i++) {
            const beh_cell_t *c = &w->cells[i];
            if (c->small) {
                if (!sm_chunk(c, key, &lo, &hi))
                    continue;
                if (!have)
                    dense_zero(dst);
                have = 1;
                for (const uint32_t *u = sm_users(c); lo < hi; lo++)
                    dst[(u[lo] & 0xFFFF) >> 6] |= (uint64_t)1 << (u[lo] & 63);
                continue;
            }
            cur = 0;
            if (!bm_chunk_find(c->exists, key, &cur, &ch))
                continue;
            if (have)
                chunk_or(&ch, dst);
            else
                chunk_load(&ch, dst);
            have = 1;
        }
        if (is_any(op, k)) {
            if (!have)
                dense_zero(dst);
            return have && dense_any(dst);
        }
        if (!have) {
            dense_fill(dst);
            return 1;
        }
        for (uint32_t i = 0; i < CP_CHUNK_WORDS; i++)
            dst[i] = ~dst[i];
        return dense_any(dst);
    }

    const int S = w->slices;
    uint64_t *carry = scratch, *acc = scratch + SCR_ACC;
    int top = -1;
    for (uint32_t i = 0; i < w->ncells; i++) {
        const beh_cell_t *c = &w->cells[i];
        if (c->small) {
            const uint32_t *u = sm_users(c), *v = sm_vals(c);
            if (!sm_chunk(c, key, &lo, &hi))
                continue;
            for (; lo < hi; lo++) {
                int t = acc_add_user(acc, S, u[lo] & 0xFFFF, w->days ? 1 : (uint64_t)v[lo] + 1);
                top = t > top ? t : top;
            }
            continue;
        }
        cur = 0;
        if (!bm_chunk_find(c->exists, key, &cur, &ch))
            continue;
        chunk_load(&ch, carry);
        int t = ripple_add(acc, S, carry, 0);
        top = t > top ? t : top;
        for (int j = 0; j < c->nslices && !w->days; j++) {
            cur = 0;
            if (!bm_chunk_find(c->slices[j], key, &cur, &ch))
                continue;
            chunk_load(&ch, carry);
            t = ripple_add(acc, S, carry, j);
            top = t > top ? t : top;
        }
    }
    if (top < 0) { /* nobody of this chunk: every sum is 0 */
        int zero = beh_cmp_zero(op, k);
        if (zero)
            dense_fill(dst);
        else
            dense_zero(dst);
        return zero;
    }
    /* O'Neil's comparison from the top slice down: gt (in dst) and eq (in
     * carry) per user. Sums are below 2^(top + 1). */
    uint64_t *gt = dst, *eq = carry;
    dense_zero(gt);
    if (top < 63 && (k >> (top + 1)) != 0) {
        dense_zero(eq); /* every sum < k */
    } else {
        dense_fill(eq);
        for (int i = top; i >= 0; i--) {
            const uint64_t *a = acc + (size_t)i * CP_CHUNK_WORDS;
            uint64_t kb = (k >> i) & 1 ? ~(uint64_t)0 : 0;
            for (uint32_t x = 0; x < CP_CHUNK_WORDS; x++) {
                gt[x] |= eq[x] & a[x] & ~kb;
                eq[x] &= ~(a[x] ^ kb);
            }
        }
    }
    uint64_t any = 0;
    for (uint32_t x = 0; x < CP_CHUNK_WORDS; x++) {
        uint64_t g = gt[x], e = eq[x], r = 0;
        switch (op) {
        case BEH_EQ:
            r = e;
            break;
        case BEH_NE:
            r = ~e;
            break;
        case BEH_LT:
            r = ~(g | e);
            break;
        case BEH_LE:
            r = ~g;
            break;
        case BEH_GT:
            r = g;
            break;
        case BEH_GE:
            r = g | e;
            break;
        }
        dst[x] = r;
        any |= r;
    }
    /* leave the scratch zeroed for the next call */
    memset(acc, 0, (size_t)(top + 1) * CP_CHUNK_WORDS * sizeof *acc);
    dense_zero(carry);
    return any != 0;
}

cp_status beh_window_eval(const beh_window_t *w, beh_cmp op, uint64_t k,
                          const roaring_bitmap_t *universe, roaring_bitmap_t *out)
{
    size_t words = beh_window_scratch_words(w) + CP_CHUNK_WORDS;
    uint64_t *scratch = aligned_alloc(64, words * sizeof(uint64_t));
    cp_status st = CP_OK;
    if (scratch == NULL)
        return CP_ENOMEM;
    memset(scratch, 0, words * sizeof(uint64_t));
    uint64_t *dst = scratch + beh_window_scratch_words(w);
    int32_t n = bm_chunk_count(universe);
    for (int32_t i = 0; i < n && st == CP_OK; i++) {
        bm_chunk_t uch;
        uint16_t key = bm_chunk_key(universe, i);
        if (!beh_window_chunk(w, key, op, k, dst, scratch))
            continue;
        bm_chunk_at(universe, i, &uch);
        chunk_and(&uch, dst);
        st = bm_append_dense(out, key, dst);
    }
    free(scratch);
    return st;
}

/* ---------------------------------------------------------- persistence */

#define CELL_KEY_LEN 14  /* "beh/d/" + series + day: the prefix of a cell's keys */
#define CHUNK_KEY_LEN 16 /* + chunk u16 BE */
#define DICT_KEY_LEN 10  /* "beh/s/" + id */

static void cell_key(uint8_t *k, uint32_t series, int32_t day)
{
    memcpy(k, KEY_CELL, 6);
    put_u32be(k + 6, series);
    put_u32be(k + 10, (uint32_t)day ^ 0x80000000u); /* signed order = byte order */
}

/*
 * Writes chunk `chunk` of cell c (its exists and slice bitmaps restricted
 * to the chunk's 65,536 users) under its key, or deletes the key when the
 * chunk is empty. A cell within one chunk is written from its own bitmaps
 * (run-optimised in place, as whole cells were); otherwise from restricted
 * copies.
 */
static cp_status put_chunk(const beh_cell_t *c, uint32_t series, uint32_t chunk, store_txn_t *txn,
                           store_db db, cp_error_t *err)
{
    uint8_t key[CHUNK_KEY_LEN];
    roaring_bitmap_t *part[1 + BEH_MAX_SLICES] = {NULL};
    size_t sizes[1 + BEH_MAX_SLICES];
    cp_status rc = CP_OK;
    cell_key(key, series, c->day);
    key[14] = (uint8_t)(chunk >> 8);
    key[15] = (uint8_t)chunk;
    uint64_t lo = (uint64_t)chunk << 16;
    roaring_bitmap_t *range = NULL;
    int ns = 0, whole = 0;
    size_t total = 4;
    if (roaring_bitmap_is_empty(c->exists))
        return store_del(txn, db, key, sizeof key, err);
    if (roaring_bitmap_minimum(c->exists) >> 16 == chunk &&
        roaring_bitmap_maximum(c->exists) >> 16 == chunk) {
        /* The common small cell lies in one chunk: its bitmaps as they are
         * (slices lie within exists), no copies. */
        whole = 1;
        part[0] = c->exists;
        for (int j = 0; j < c->nslices; j++)
            if (!roaring_bitmap_is_empty(part[j + 1] = c->slices[j]))
                ns = j + 1;
    } else {
        if (roaring_bitmap_range_cardinality(c->exists, lo, lo + 65536) == 0)
            return store_del(txn, db, key, sizeof key, err);
        range = roaring_bitmap_from_range(lo, lo + 65536, 1);
        for (int j = -1; j < c->nslices && range; j++) {
            roaring_bitmap_t *p = roaring_bitmap_and(j < 0 ? c->exists : c->slices[j], range);
            if ((part[j + 1] = p) == NULL)
                break;
            if (j >= 0 && !roaring_bitmap_is_empty(p))
                ns = j + 1; /* the top slices may be empty in this chunk */
        }
        if (range == NULL || part[c->nslices] == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory writing behaviour cell %u/%d", series,
                        c->day);
            goto out;
        }
    }
    for (int j = 0; j <= ns; j++) {
        roaring_bitmap_run_optimize(part[j]);
        sizes[j] = roaring_bitmap_portable_size_in_bytes(part[j]);
        total += 4 + sizes[j];
    }
    void *dst = NULL;
    if ((rc = store_reserve(txn, db, key, sizeof key, total, &dst, err)) != CP_OK)
        goto out;
    uint8_t *p = dst;
    p[0] = CELL_MAGIC0;
    p[1] = CELL_MAGIC1;
    p[2] = CELL_VERSION;
    p[3] = (uint8_t)ns;
    p += 4;
    for (int j = 0; j <= ns; j++) {
        put_u32le(p, (uint32_t)sizes[j]);
        if (roaring_bitmap_portable_serialize(part[j], (char *)p + 4) != sizes[j]) {
            rc = CP_ERR(err, CP_EINTERNAL, "behaviour cell %u/%d: serialized size changed", series,
                        c->day);
            goto out;
        }
        p += 4 + sizes[j];
    }
out:
    bm_free(range);
    for (int j = 0; j <= c->nslices && !whole; j++)
        bm_free(part[j]);
    return rc;
}

/* ---------------------------------------------------------------- packs
 *
 * A pack (version 3) holds every small cell (at most PACK_MAX_USERS users)
 * of 16 consecutive series and 16 consecutive days that is persisted in
 * that form, under "beh/p/" + block (series >> 4, u32 BE) + window
 * (day >> 4 + 2^31, u32 BE): "BC", u8 3, u8 0, u32 LE number of cells,
 * then per cell in (series, day) order: u8 series - 16 block, u8 day - 16
 * window, u8 users n (>= 1), u8 flags (bit 0: counts follow), n x u32 LE
 * users ascending, and with bit 0 n x u32 LE count - 1. A bulk import
 * writes a pack per (block, window) it touched instead of a put per cell.
 * A cell is either in its pack or under its chunk keys, never both:
 * c->disk records which, and a persist moving a cell from one form to the
 * other deletes the old one.
 */

/* 1 if c is persisted in its pack: by its users, whatever its form in
 * memory (SMALL_MAX <= PACK_MAX_USERS: every small form with users). */
static int cell_small(const beh_cell_t *c)
{
    uint64_t n = cell_users(c);
    return n > 0 && n <= PACK_MAX_USERS;
}

/* 1 if c belongs in its pack at the next persist (a small cell already
 * there, or one being written now; a small cell still under chunk keys
 * from an older version stays there until it changes). */
static int cell_in_pack(const beh_cell_t *c)
{
    return (c->disk == DISK_PACK || c->dirty) && cell_small(c);
}

static uint64_t pack_id(uint32_t series, int32_t day)
{
    return (uint64_t)(series >> PACK_SERIES_BITS) << 32 |
           ((uint32_t)(day >> PACK_DAY_BITS) ^ 0x80000000u);
}

/* Queues the pack of (series, day) for rewriting (CP_ENOMEM). */
static cp_status pack_queue(beh_t *b, uint32_t series, int32_t day)
{
    uint64_t id = pack_id(series, day);
    if (b->npacks > 0 && b->packs[b->npacks - 1] == id)
        return CP_OK;
    if (b->npacks == b->cappacks) {
        size_t cap = b->cappacks ? b->cappacks * 2 : 64;
        uint64_t *v = realloc(b->packs, cap * sizeof *v);
        if (v == NULL)
            return CP_ENOMEM;
        b->packs = v;
        b->cappacks = cap;
    }
    b->packs[b->npacks++] = id;
    return CP_OK;
}

static int u64_cmp(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

#define PACK_CELLS (1u << (PACK_SERIES_BITS + PACK_DAY_BITS))

/* The cells that belong in pack `id`, in (series, day) order, into
 * cells[] and their series into ser[] (PACK_CELLS each). */
static size_t pack_cells(const beh_t *b, uint64_t id, const beh_cell_t **cells, uint32_t *ser)
{
    uint32_t s0 = (uint32_t)(id >> 32) << PACK_SERIES_BITS;
    int64_t d0 = (int64_t)(int32_t)((uint32_t)id ^ 0x80000000u) * (1 << PACK_DAY_BITS);
    size_t n = 0;
    for (uint32_t s = s0; s < b->nseries && s - s0 < (1u << PACK_SERIES_BITS); s++) {
        const series_t *se = &b->series[s];
        for (uint32_t i = lower_day(se, (int32_t)d0);
             i < se->ncells && se->cells[i].day < d0 + (1 << PACK_DAY_BITS); i++)
            if (cell_in_pack(&se->cells[i])) {
                cells[n] = &se->cells[i];
                ser[n++] = s;
            }
    }
    return n;
}

/* Rewrites pack `id` from the cells in memory (deletes it when none). */
static cp_status put_pack(const beh_t *b, uint64_t id, store_txn_t *txn, store_db db,
                          cp_error_t *err)
{
    const beh_cell_t *cells[PACK_CELLS];
    uint32_t ser[PACK_CELLS], cnt[PACK_CELLS];
    uint8_t key[CELL_KEY_LEN];
    memcpy(key, KEY_PACK, 6);
    put_u32be(key + 6, (uint32_t)(id >> 32));
    put_u32be(key + 10, (uint32_t)id);
    size_t ncells = pack_cells(b, id, cells, ser), total = 8;
    if (ncells == 0)
        return store_del(txn, db, key, sizeof key, err);
    for (size_t i = 0; i < ncells; i++) {
        cnt[i] = (uint32_t)cell_users(cells[i]);
        total += 4 + (size_t)cnt[i] * 4 * (cells[i]->nslices ? 2 : 1);
    }
    void *dst = NULL;
    cp_status rc = store_reserve(txn, db, key, sizeof key, total, &dst, err);
    if (rc != CP_OK)
        return rc;
    uint8_t *p = dst;
    p[0] = CELL_MAGIC0;
    p[1] = CELL_MAGIC1;
    p[2] = CELL_VERSION_PACK;
    p[3] = 0;
    put_u32le(p + 4, (uint32_t)ncells);
    p += 8;
    for (size_t k = 0; k < ncells; k++) {
        const beh_cell_t *c = cells[k];
        uint32_t buf[PACK_MAX_USERS], n = cnt[k];
        const uint32_t *users = buf;
        if (c->small)
            users = sm_users(c);
        else
            roaring_bitmap_to_uint32_array(c->exists, buf);
        p[0] = (uint8_t)(ser[k] & ((1u << PACK_SERIES_BITS) - 1));
        p[1] = (uint8_t)((uint32_t)c->day & ((1u << PACK_DAY_BITS) - 1));
        p[2] = (uint8_t)n;
        p[3] = c->nslices ? 1 : 0;
        p += 4;
        for (uint32_t i = 0; i < n; i++, p += 4)
            put_u32le(p, users[i]);
        if (c->nslices)
            for (uint32_t i = 0; i < n; i++, p += 4)
                put_u32le(p, c->small ? sm_vals(c)[i] : (uint32_t)cell_value(c, users[i]));
    }
    return CP_OK;
}

/* One dirty entry: the cell's changed chunks, or all of it (wipe, or the
 * cell gone, or its chunk keys not yet on disk); a small cell goes to its
 * pack instead (queued here, written by beh_persist). */
static cp_status persist_entry(beh_t *b, dirty_t *d, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc = CP_OK;
    beh_cell_t *c = d->series < b->nseries ? cell_find(&b->series[d->series], d->day) : NULL;
    d->cell = c;
    if (c != NULL && cell_users(c) == 0)
        c = NULL; /* left empty by a failed write: nothing of it to keep */
    uint8_t prefix[CELL_KEY_LEN];
    int small = c != NULL && cell_small(c);
    /* The pack is rewritten when the cell is gone, wiped, small, or leaves
     * it (wherever it was before). */
    if ((c == NULL || d->wipe || small || c->disk == DISK_PACK) &&
        pack_queue(b, d->series, d->day) != CP_OK)
        return CP_ERR(err, CP_ENOMEM, "out of memory persisting the behaviour index");
    if (c == NULL || d->wipe || (small && c->disk == DISK_CHUNKS)) {
        cell_key(prefix, d->series, d->day);
        if ((rc = store_del_prefix(txn, db, prefix, sizeof prefix, err)) != CP_OK || c == NULL)
            return rc;
    }
    if (small)
        return CP_OK;
    if (d->wipe || c->disk != DISK_CHUNKS) {
        int32_t n = bm_chunk_count(c->exists);
        for (int32_t i = 0; i < n && rc == CP_OK; i++)
            rc = put_chunk(c, d->series, bm_chunk_key(c->exists, i), txn, db, err);
        return rc;
    }
    if (c->nd == 1)
        return put_chunk(c, d->series, c->d1, txn, db, err);
    if (c->nd == 0)
        return CP_OK; /* queued whole: a wipe entry writes it */
    roaring_uint32_iterator_t it;
    roaring_init_iterator(c->dchunks, &it);
    for (; it.has_value && rc == CP_OK; roaring_advance_uint32_iterator(&it))
        rc = put_chunk(c, d->series, it.current_value, txn, db, err);
    return rc;
}

cp_status beh_persist(beh_t *b, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc;
    if (b->failed)
        return CP_ERR(err, CP_ENOMEM,
                      "behaviour index: a change could not be tracked (out of "
                      "memory); reopen the database");
    for (uint32_t id = b->persisted; id < b->nseries; id++) {
        uint8_t key[DICT_KEY_LEN];
        memcpy(key, KEY_DICT, 6);
        put_u32be(key + 6, id);
        if ((rc = store_put(txn, db, key, sizeof key, b->series[id].key, b->series[id].klen, err)))
            return rc;
    }
    /* A cell may be listed twice (dropped, then created again): the later
     * entry writes the current chunks again, which is harmless. */
    b->npacks = 0;
    for (size_t i = 0; i < b->ndirty; i++)
        if ((rc = persist_entry(b, &b->dirty[i], txn, db, err)) != CP_OK)
            return rc;
    /* Each pack once, in key order. */
    if (b->npacks > 1) /* qsort must not get NULL, even for 0 entries */
        qsort(b->packs, b->npacks, sizeof *b->packs, u64_cmp);
    for (size_t i = 0; i < b->npacks; i++)
        if ((i == 0 || b->packs[i] != b->packs[i - 1]) &&
            (rc = put_pack(b, b->packs[i], txn, db, err)) != CP_OK)
            return rc;
    b->npacks = 0;
    /* Everything is in the transaction: clear the marks. */
    for (size_t i = 0; i < b->ndirty; i++) {
        beh_cell_t *c = b->dirty[i].cell;
        if (c != NULL) {
            c->disk = cell_small(c) ? DISK_PACK : DISK_CHUNKS;
            c->dirty = 0;
            c->nd = 0;
            bm_free(c->dchunks);
            c->dchunks = NULL;
        }
    }
    b->ndirty = 0;
    b->persisted = b->nseries;
    return CP_OK;
}

void beh_mark_all_dirty(beh_t *b)
{
    b->persisted = 0;
    for (uint32_t s = 0; s < b->nseries; s++)
        for (uint32_t i = 0; i < b->series[s].ncells; i++)
            mark_cell_whole(b, s, &b->series[s].cells[i]);
}

size_t beh_dirty_count(const beh_t *b)
{
    return b->ndirty;
}

size_t beh_dirty_chunk_count(const beh_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->ndirty; i++) {
        const dirty_t *d = &b->dirty[i];
        const beh_cell_t *c =
            d->series < b->nseries ? cell_find(&b->series[d->series], d->day) : NULL;
        if (c == NULL || cell_users(c) == 0 || cell_small(c))
            n++; /* a deletion, or a small cell's pack (shared by up to 256 cells) */
        else if (d->wipe)
            n += (size_t)bm_chunk_count(c->exists);
        else if (c->nd == 1)
            n++;
        else if (c->nd == 2)
            n += (size_t)roaring_bitmap_get_cardinality(c->dchunks);
    }
    return n;
}

static cp_status load_dict(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    beh_t *b = ud;
    uint32_t id, dup;
    if (kl != DICT_KEY_LEN || (id = get_u32be((const uint8_t *)k + 6)) != b->nseries)
        return CP_ERR(err, CP_EIO,
                      "behaviour dictionary: unexpected key of %zu bytes (series %u "
                      "expected)",
                      kl, b->nseries);
    if (vl > BEH_KEY_MAX || !key_valid(v, vl))
        return CP_ERR(err, CP_EIO, "behaviour dictionary: corrupt key of series %u", id);
    if (series_find(b, v, vl, &dup))
        return CP_ERR(err, CP_EIO, "behaviour dictionary: series %u repeats series %u", id, dup);
    if (beh_series_intern(b, v, vl, &dup) != CP_OK)
        return CP_ERR(err, CP_ENOMEM, "out of memory loading the behaviour dictionary");
    return CP_OK;
}

/*
 * One blob into c (zeroed): a whole cell of version 1 (chunk < 0), or the
 * chunk `chunk` of a cell (version 2: every bitmap within the chunk).
 * Slices must lie within exists. On failure c holds what to release.
 */
static int parse_cell(const uint8_t *p, size_t len, int32_t chunk, beh_cell_t *c)
{
    if (len < 4 || p[0] != CELL_MAGIC0 || p[1] != CELL_MAGIC1 ||
        p[2] != (chunk < 0 ? CELL_VERSION_WHOLE : CELL_VERSION) || p[3] > BEH_MAX_SLICES)
        return 0;
    int ns = p[3];
    size_t o = 4;
    uint64_t lo = chunk < 0 ? 0 : (uint64_t)chunk << 16;
    if (ns > 0 && (c->slices = calloc((size_t)ns, sizeof *c->slices)) == NULL)
        return 0;
    for (int j = -1; j < ns; j++) {
        if (len - o < 4)
            return 0;
        size_t n = get_u32le(p + o);
        o += 4;
        if (n > len - o)
            return 0;
        roaring_bitmap_t *bm = bm_deserialize_safe(p + o, n);
        if (bm == NULL)
            return 0;
        o += n;
        if (j < 0) {
            c->exists = bm;
            if (roaring_bitmap_is_empty(bm))
                return 0;
            if (chunk >= 0 &&
                (roaring_bitmap_minimum(bm) < lo || roaring_bitmap_maximum(bm) >= lo + 65536))
                return 0;
        } else {
            c->slices[j] = bm;
            c->nslices = (uint8_t)(j + 1);
            if (!roaring_bitmap_is_subset(bm, c->exists))
                return 0;
        }
    }
    return o == len;
}

static cp_status load_cell(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    beh_t *b = ud;
    const uint8_t *kp = k;
    if (kl != CELL_KEY_LEN && kl != CHUNK_KEY_LEN)
        return CP_ERR(err, CP_EIO, "behaviour index: unexpected key of %zu bytes", kl);
    uint32_t s = get_u32be(kp + 6);
    int32_t day = (int32_t)(get_u32be(kp + 10) ^ 0x80000000u);
    int32_t chunk = kl == CHUNK_KEY_LEN ? (int32_t)((uint32_t)kp[14] << 8 | kp[15]) : -1;
    if (s >= b->nseries)
        return CP_ERR(err, CP_EIO, "behaviour cell of unknown series %u (day %d)", s, day);
    series_t *se = &b->series[s];
    beh_cell_t *last = se->ncells > 0 ? &se->cells[se->ncells - 1] : NULL;
    /* Keys come in (series, day, chunk) order; the chunks of one cell
     * merge into it. */
    int merge = last && last->day == day && chunk >= 0;
    if (last && (last->day > day || last->small || (last->day == day && !merge) ||
                 (merge && roaring_bitmap_maximum(last->exists) >= (uint32_t)chunk << 16)))
        return CP_ERR(err, CP_EIO, "behaviour cell %u/%d out of order", s, day);
    beh_cell_t c;
    memset(&c, 0, sizeof c);
    if (!parse_cell(v, vl, chunk, &c)) {
        cell_release(&c);
        if (chunk >= 0)
            return CP_ERR(err, CP_EIO, "corrupt behaviour cell %u/%d chunk %d (%zu bytes)", s, day,
                          chunk, vl);
        return CP_ERR(err, CP_EIO, "corrupt behaviour cell %u/%d (%zu bytes)", s, day, vl);
    }
    c.day = day;
    if ((se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL))
        goto nomem;
    roaring_bitmap_or_inplace(se->ever, c.exists);
    if (merge) {
        if (cell_grow(last, c.nslices) != CP_OK)
            goto nomem;
        roaring_bitmap_or_inplace(last->exists, c.exists);
        for (int j = 0; j < c.nslices; j++)
            roaring_bitmap_or_inplace(last->slices[j], c.slices[j]);
        cell_release(&c);
        cell_trim(last);
        return CP_OK;
    }
    cell_trim(&c);
    beh_cell_t *slot;
    if (cell_get(se, day, &slot) != CP_OK)
        goto nomem;
    cell_form_release(slot);
    *slot = c;
    slot->disk = DISK_CHUNKS;
    if (chunk < 0)
        mark_cell_whole(b, s, slot); /* version 1: rewritten per chunk by the next persist */
    return CP_OK;
nomem:
    cell_release(&c);
    return CP_ERR(err, CP_ENOMEM, "out of memory loading behaviour cell %u/%d", s, day);
}

/* One packed cell of n users: creates it (it must not exist yet). */
static cp_status pack_cell_add(beh_t *b, uint32_t s, int32_t day, const uint8_t *users,
                               const uint8_t *vals, uint32_t n)
{
    series_t *se = &b->series[s];
    uint32_t u[PACK_READ_MAX];
    beh_cell_t *c;
    uint32_t top = 0;
    for (uint32_t i = 0; i < n; i++) {
        u[i] = get_u32le(users + 4 * i);
        if (i > 0 && u[i] <= u[i - 1])
            return CP_EIO;
        if (vals)
            top |= get_u32le(vals + 4 * i);
    }
    if (cell_find(se, day) != NULL)
        return CP_EIO; /* also under chunk keys, or twice */
    if ((se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL) ||
        cell_get(se, day, &c) != CP_OK)
        return CP_ENOMEM;
    c->disk = DISK_PACK;
    roaring_bitmap_add_many(se->ever, n, u);
    if (n <= SMALL_MAX) {
        if (sm_reserve(c, n) != CP_OK)
            return CP_ENOMEM;
        memcpy(sm_users(c), u, n * sizeof *u);
        for (uint32_t i = 0; i < n; i++)
            sm_vals(c)[i] = vals ? get_u32le(vals + 4 * i) : 0;
        c->n = (uint8_t)n;
        c->nslices = (uint8_t)bitlen(top);
        return CP_OK;
    }
    if (cell_promote(c) != CP_OK)
        return CP_ENOMEM;
    roaring_bitmap_add_many(c->exists, n, u);
    if (cell_grow(c, bitlen(top)) != CP_OK)
        return CP_ENOMEM;
    for (uint32_t i = 0; vals && i < n; i++) {
        uint32_t v = get_u32le(vals + 4 * i);
        for (int j = 0; v; j++, v >>= 1)
            if (v & 1)
                roaring_bitmap_add(c->slices[j], u[i]);
    }
    return CP_OK;
}

static cp_status load_pack(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    beh_t *b = ud;
    const uint8_t *p = v;
    if (kl != CELL_KEY_LEN)
        return CP_ERR(err, CP_EIO, "behaviour index: unexpected pack key of %zu bytes", kl);
    uint32_t block = get_u32be((const uint8_t *)k + 6);
    int64_t d0 =
        (int64_t)(int32_t)(get_u32be((const uint8_t *)k + 10) ^ 0x80000000u) * (1 << PACK_DAY_BITS);
    uint64_t s0 = (uint64_t)block << PACK_SERIES_BITS;
    if (vl < 8 || p[0] != CELL_MAGIC0 || p[1] != CELL_MAGIC1 || p[2] != CELL_VERSION_PACK ||
        p[3] != 0)
        goto corrupt;
    uint32_t ncells = get_u32le(p + 4);
    size_t o = 8;
    int prev = -1;
    for (uint32_t i = 0; i < ncells; i++) {
        if (vl - o < 4)
            goto corrupt;
        int so = p[o], dof = p[o + 1], at = so << PACK_DAY_BITS | dof;
        uint32_t n = p[o + 2];
        uint8_t flags = p[o + 3];
        o += 4;
        if (so >= (1 << PACK_SERIES_BITS) || dof >= (1 << PACK_DAY_BITS) || at <= prev || n == 0 ||
            flags > 1 || (vl - o) / 4 < (size_t)n * (flags ? 2 : 1))
            goto corrupt;
        prev = at;
        if (s0 + (uint64_t)so >= b->nseries)
            return CP_ERR(err, CP_EIO, "behaviour pack %u/%lld: cell of unknown series %llu", block,
                          (long long)d0, (unsigned long long)(s0 + (uint64_t)so));
        cp_status rc = pack_cell_add(b, (uint32_t)s0 + (uint32_t)so, (int32_t)(d0 + dof), p + o,
                                     flags ? p + o + 4 * (size_t)n : NULL, n);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, CP_ENOMEM, "out of memory loading behaviour pack %u/%lld", block,
                          (long long)d0);
        if (rc != CP_OK)
            goto corrupt;
        o += (size_t)n * 4 * (flags ? 2 : 1);
    }
    if (o == vl)
        return CP_OK;
corrupt:
    return CP_ERR(err, CP_EIO, "corrupt behaviour pack %u/%lld (%zu bytes)", block, (long long)d0,
                  vl);
}

cp_status beh_load(beh_t *b, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc;
    if (b->nseries != 0)
        return CP_ERR(err, CP_EINVAL, "beh_load: the behaviour index is not empty");
    if ((rc = store_each(txn, db, KEY_DICT, 6, load_dict, b, err)) != CP_OK ||
        (rc = store_each(txn, db, KEY_CELL, 6, load_cell, b, err)) != CP_OK ||
        (rc = store_each(txn, db, KEY_PACK, 6, load_pack, b, err)) != CP_OK)
        return rc;
    /* Cells under chunk keys that are small take the small form (their
     * chunks merged first, so not while loading them). */
    for (uint32_t s = 0; s < b->nseries; s++)
        for (uint32_t i = 0; i < b->series[s].ncells; i++)
            cell_demote(&b->series[s].cells[i]);
    b->persisted = b->nseries;
    return CP_OK;
}

void beh_memory(const beh_t *b, uint64_t *bitmap_bytes, uint64_t *cells)
{
    uint64_t bytes = 0, n = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        const series_t *se = &b->series[s];
        n += se->ncells;
        if (se->ever)
            bytes += roaring_bitmap_portable_size_in_bytes(se->ever);
        for (uint32_t i = 0; i < se->ncells; i++) {
            const beh_cell_t *c = &se->cells[i];
            if (c->small) { /* inline ones are in sizeof(beh_cell_t) below */
                bytes += c->cap > SMALL_INLINE ? (uint64_t)c->cap * 2 * sizeof(uint32_t) : 0;
                continue;
            }
            bytes += roaring_bitmap_portable_size_in_bytes(c->exists);
            for (int j = 0; j < c->nslices; j++)
                bytes += roaring_bitmap_portable_size_in_bytes(c->slices[j]);
        }
        bytes += sizeof *se + (uint64_t)se->cap * sizeof(beh_cell_t) + se->klen;
    }
    *bitmap_bytes = bytes;
    *cells = n;
}

void beh_cell_forms(const beh_t *b, uint64_t *small, uint64_t *roaring)
{
    uint64_t ns = 0, nr = 0;
    for (uint32_t s = 0; s < b->nseries; s++)
        for (uint32_t i = 0; i < b->series[s].ncells; i++) {
            if (b->series[s].cells[i].small)
                ns++;
            else
                nr++;
        }
    *small = ns;
    *roaring = nr;
}

/* ------------------------------------------------------ deleted users */

/*
 * The key a forgotten series takes: its event with one property whose name
 * is a NUL byte (no event can carry one: JSON object keys cannot hold NUL)
 * and whose value is the series id, so it is unique, valid on load, and
 * matches no did() filter.
 */
static size_t forgotten_key(const series_t *se, uint32_t id, uint8_t *buf)
{
    size_t elen = se->key[0], o = 0;
    buf[o++] = (uint8_t)elen;
    memcpy(buf + o, se->key + 1, elen);
    o += elen;
    buf[o++] = 1;
    buf[o++] = 0;
    char digits[16];
    int n = snprintf(digits, sizeof digits, "%u", (unsigned)id);
    buf[o++] = (uint8_t)n;
    memcpy(buf + o, digits, (size_t)n);
    return o + (size_t)n;
}

cp_status beh_user_forget(beh_t *b, uint32_t user, store_txn_t *txn, store_db db, cp_error_t *err)
{
    int renamed = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        if (se->ever == NULL || !roaring_bitmap_remove_checked(se->ever, user))
            continue;
        for (uint32_t i = 0; i < se->ncells;)
            if (cell_remove_user(b, s, i, user) != 2)
                i++;
        /* Only series naming property values (a bare event name is not
         * something a user sent about themselves), and not forgotten yet. */
        size_t p = 1u + se->key[0];
        int forgotten = se->klen > p + 1 && se->key[p] == 1 && se->key[p + 1] == 0;
        if (se->ncells != 0 || se->klen <= p || forgotten)
            continue;
        uint8_t nk[1 + BEH_NAME_MAX + 3 + 16];
        size_t nl = forgotten_key(se, s, nk);
        uint8_t *copy = malloc(nl);
        if (copy == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory forgetting a behaviour series");
        memcpy(copy, nk, nl);
        if (s < b->persisted) { /* else the next persist writes the new key */
            uint8_t dk[DICT_KEY_LEN];
            memcpy(dk, KEY_DICT, 6);
            put_u32be(dk + 6, s);
            cp_status rc = store_put(txn, db, dk, sizeof dk, copy, nl, err);
            if (rc) {
                free(copy);
                return rc;
            }
        }
        free(se->key);
        se->key = copy;
        se->klen = (uint32_t)nl;
        renamed = 1;
    }
    if (renamed) {
        /* Keys moved: rebuild the hash (linear probing has no delete). */
        memset(b->slots, 0xFF, b->nslots * sizeof *b->slots);
        for (uint32_t s = 0; s < b->nseries; s++)
            slot_put(b->slots, b->nslots, &b->series[s], s);
        if (b->memo)
            b->memo->valid = 0; /* it may hold a forgotten id */
    }
    return CP_OK;
}
