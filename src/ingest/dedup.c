/* dedup.c — the messageId window of dedup.h: a FIFO ring of (hash, time)
 * in insertion order for forgetting, and an open-addressing table of the
 * same pairs for lookups. */
#include <stdlib.h>
#include <string.h>

#include "ingest/dedup.h"
#include "util/util.h"

typedef struct dd_entry {
    uint64_t h; /* 0 = empty slot (hash 0 is stored as 1) */
    int64_t t;
} dd_entry_t;

struct dedup {
    int64_t window_ms;
    size_t max;
    /* ring, oldest at head */
    dd_entry_t *ring;
    size_t rcap, head, count;
    uint64_t seq_head;      /* sequence number of the entry at head */
    uint64_t persisted_seq; /* entries with seq >= this are not in the store yet */
    int purge_all;          /* dedup_clear: delete every stored key */
    /* table */
    dd_entry_t *tab;
    size_t tcap; /* power of two */
    int64_t last_t;
    dedup_stats_t st;
};

#define PREFIX "dedup/"
#define PLEN 6
#define KEY_LEN (PLEN + 16)

static uint64_t fix(uint64_t h)
{
    return h ? h : 1;
}

static size_t slot_of(const dedup_t *d, uint64_t h)
{
    /* The hash is xxh3 already; mix once more in case callers pass raw ids. */
    uint64_t x = h * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 17) & (d->tcap - 1);
}

static dd_entry_t *tab_find(const dedup_t *d, uint64_t h)
{
    if (d->tcap == 0)
        return NULL;
    for (size_t i = slot_of(d, h);; i = (i + 1) & (d->tcap - 1)) {
        if (d->tab[i].h == 0)
            return NULL;
        if (d->tab[i].h == h)
            return &d->tab[i];
    }
}

static void tab_put(dd_entry_t *tab, size_t tcap, uint64_t h, int64_t t)
{
    uint64_t x = h * 0x9E3779B97F4A7C15ull;
    for (size_t i = (size_t)(x >> 17) & (tcap - 1);; i = (i + 1) & (tcap - 1)) {
        if (tab[i].h == 0 || tab[i].h == h) {
            tab[i].h = h;
            tab[i].t = t;
            return;
        }
    }
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void tab_del(dedup_t *d, dd_entry_t *e)
{
    size_t mask = d->tcap - 1;
    size_t i = (size_t)(e - d->tab);
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (d->tab[j].h == 0)
            break;
        size_t k = slot_of(d, d->tab[j].h);
        /* Move j back to i unless its home k lies cyclically in (i, j]. */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            d->tab[i] = d->tab[j];
            i = j;
        }
    }
    d->tab[i].h = 0;
    d->tab[i].t = 0;
}

static cp_status tab_grow(dedup_t *d, size_t need)
{
    size_t nc = d->tcap ? d->tcap : 1024;
    while (nc < need * 2)
        nc *= 2;
    if (nc == d->tcap)
        return CP_OK;
    dd_entry_t *nt = calloc(nc, sizeof *nt);
    if (nt == NULL)
        return CP_ENOMEM;
    for (size_t i = 0; i < d->tcap; i++)
        if (d->tab[i].h)
            tab_put(nt, nc, d->tab[i].h, d->tab[i].t);
    free(d->tab);
    d->tab = nt;
    d->tcap = nc;
    return CP_OK;
}

static cp_status ring_grow(dedup_t *d)
{
    size_t nc = d->rcap ? d->rcap * 2 : 1024;
    if (nc > d->max)
        nc = d->max;
    if (nc <= d->rcap)
        return CP_OK;
    dd_entry_t *nr = malloc(nc * sizeof *nr);
    if (nr == NULL)
        return CP_ENOMEM;
    for (size_t i = 0; i < d->count; i++)
        nr[i] = d->ring[(d->head + i) % d->rcap];
    free(d->ring);
    d->ring = nr;
    d->rcap = nc;
    d->head = 0;
    return CP_OK;
}

cp_status dedup_create(int64_t window_ms, size_t max_entries, dedup_t **out)
{
    *out = NULL;
    dedup_t *d = calloc(1, sizeof *d);
    if (d == NULL)
        return CP_ENOMEM;
    dedup_configure(d, window_ms, max_entries);
    if (tab_grow(d, 512)) {
        free(d);
        return CP_ENOMEM;
    }
    *out = d;
    return CP_OK;
}

void dedup_free(dedup_t *d)
{
    if (d == NULL)
        return;
    free(d->ring);
    free(d->tab);
    free(d);
}

void dedup_configure(dedup_t *d, int64_t window_ms, size_t max_entries)
{
    d->window_ms = window_ms > 0 ? window_ms : DEDUP_DEFAULT_WINDOW_MS;
    d->max = max_entries ? max_entries : DEDUP_DEFAULT_MAX_ENTRIES;
}

/* Drops the oldest entry. */
static void pop_head(dedup_t *d)
{
    dd_entry_t e = d->ring[d->head];
    dd_entry_t *te = tab_find(d, e.h);
    if (te && te->t == e.t)
        tab_del(d, te);
    d->head = (d->head + 1) % d->rcap;
    d->count--;
    d->seq_head++;
}

static void forget_expired(dedup_t *d, int64_t now)
{
    while (d->count && d->ring[d->head].t <= now - d->window_ms) {
        pop_head(d);
        d->st.expired++;
    }
}

int dedup_check(dedup_t *d, uint64_t hash, int64_t now_ms)
{
    if (now_ms < d->last_t)
        now_ms = d->last_t;
    const dd_entry_t *e = tab_find(d, fix(hash));
    if (e && e->t > now_ms - d->window_ms) {
        d->st.hits++;
        return 1;
    }
    return 0;
}

cp_status dedup_insert(dedup_t *d, uint64_t hash, int64_t now_ms)
{
    uint64_t h = fix(hash);
    if (now_ms < d->last_t)
        now_ms = d->last_t;
    forget_expired(d, now_ms);
    if (tab_find(d, h))
        return CP_OK;
    while (d->count >= d->max) {
        pop_head(d);
        d->st.evicted++;
    }
    if (d->count == d->rcap && ring_grow(d))
        return CP_ENOMEM;
    if ((d->count + 1) * 2 > d->tcap && tab_grow(d, d->count + 1))
        return CP_ENOMEM;
    d->ring[(d->head + d->count) % d->rcap] = (dd_entry_t){h, now_ms};
    d->count++;
    tab_put(d->tab, d->tcap, h, now_ms);
    d->last_t = now_ms;
    d->st.inserts++;
    return CP_OK;
}

void dedup_stats(const dedup_t *d, dedup_stats_t *out)
{
    *out = d->st;
    out->entries = d->count;
    out->bytes = sizeof *d + (d->rcap + d->tcap) * sizeof(dd_entry_t);
}

void dedup_clear(dedup_t *d)
{
    while (d->count)
        pop_head(d);
    d->persisted_seq = d->seq_head;
    d->purge_all = 1;
}

/* ---------------------------------------------------------- persistence */

static void be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void make_key(unsigned char *k, int64_t t, uint64_t h)
{
    memcpy(k, PREFIX, PLEN);
    /* Times are >= 0 in practice; the offset keeps any int64 in order. */
    be64(k + PLEN, (uint64_t)t ^ (1ull << 63));
    be64(k + PLEN + 8, h);
}

typedef struct collect {
    unsigned char *keys;
    size_t n, cap;
    int all;
    uint64_t below; /* encoded time bound (exclusive) */
} collect_t;

#define STOP_WALK CP_EEXIST

static cp_status collect_old(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                             cp_error_t *err)
{
    collect_t *c = ud;
    if (klen != KEY_LEN)
        return CP_ERR(err, CP_EIO, "corrupt dedup key (%zu bytes)", klen);
    if (!c->all && get_be64((const unsigned char *)k + PLEN) >= c->below)
        return STOP_WALK;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        unsigned char *p = realloc(c->keys, nc * KEY_LEN);
        if (p == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory pruning the dedup window");
        c->keys = p;
        c->cap = nc;
    }
    memcpy(c->keys + c->n * KEY_LEN, k, KEY_LEN);
    c->n++;
    return CP_OK;
}

cp_status dedup_persist(dedup_t *d, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc = CP_OK;
    collect_t c = {0};
    /* Forgotten entries: every stored key older than the oldest held. */
    c.all = d->count == 0;
    if (!c.all)
        c.below = (uint64_t)d->ring[d->head].t ^ (1ull << 63);
    rc = store_each(txn, db, PREFIX, PLEN, collect_old, &c, err);
    if (rc == STOP_WALK)
        rc = CP_OK;
    for (size_t i = 0; rc == CP_OK && i < c.n; i++)
        rc = store_del(txn, db, c.keys + i * KEY_LEN, KEY_LEN, err);
    free(c.keys);
    if (rc)
        return rc;
    uint64_t from = d->persisted_seq > d->seq_head ? d->persisted_seq : d->seq_head;
    uint64_t tail = d->seq_head + d->count;
    for (uint64_t s = from; s < tail; s++) {
        const dd_entry_t *e = &d->ring[(d->head + (size_t)(s - d->seq_head)) % d->rcap];
        unsigned char k[KEY_LEN];
        make_key(k, e->t, e->h);
        if ((rc = store_put(txn, db, k, KEY_LEN, "", 0, err)))
            return rc;
    }
    d->persisted_seq = tail;
    d->purge_all = 0;
    return CP_OK;
}

typedef struct loader {
    dedup_t *d;
    int64_t now;
} loader_t;

static cp_status load_one(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                          cp_error_t *err)
{
    loader_t *l = ud;
    if (klen != KEY_LEN)
        return CP_ERR(err, CP_EIO, "corrupt dedup key (%zu bytes)", klen);
    const unsigned char *p = k;
    int64_t t = (int64_t)(get_be64(p + PLEN) ^ (1ull << 63));
    uint64_t h = get_be64(p + PLEN + 8);
    if (h == 0)
        return CP_ERR(err, CP_EIO, "corrupt dedup key (hash 0)");
    if (t <= l->now - l->d->window_ms || t > l->now + l->d->window_ms)
        return CP_OK; /* outside the window (or from a clock far ahead): pruned later */
    if (dedup_insert(l->d, h, t))
        return CP_ERR(err, CP_ENOMEM, "out of memory loading the dedup window");
    return CP_OK;
}

cp_status dedup_load(dedup_t *d, store_txn_t *txn, store_db db, int64_t now_ms, cp_error_t *err)
{
    loader_t l = {d, now_ms};
    cp_status rc = store_each(txn, db, PREFIX, PLEN, load_one, &l, err);
    if (rc == CP_OK)
        d->persisted_seq = d->seq_head + d->count;
    return rc;
}
