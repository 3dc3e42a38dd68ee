/* beh_disk.c — persistence of the behaviour index: cells per 65,536-user
 * chunk, small cells in packs, the dictionary, and loading all of it back
 * from untrusted bytes; the layout is in behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

#define CELL_KEY_LEN 14  /* "beh/d/" + series + day: the prefix of a cell's keys */
#define CHUNK_KEY_LEN 16 /* + chunk u16 BE */

#define KEY_CELL "beh/d/"
#define CELL_MAGIC0 'B'
#define CELL_MAGIC1 'C'
#define CELL_VERSION_WHOLE 1 /* one value per cell (read only: rewritten per chunk) */
#define CELL_VERSION 2       /* one value per 65,536-user chunk of a cell */
#define CELL_VERSION_PACK 3  /* small cells of 16 series x 16 days in one value */
#define KEY_PACK "beh/p/"
/* Cells with at most this many users are persisted in packs (version 3):
 * a put per pack instead of one per cell. Most cells of an import are
 * this small (Online Retail: ~2.6 users per cell). */
#define PACK_MAX_USERS 16
#define PACK_SERIES_BITS 4 /* a pack holds series [16 b, 16 b + 16) ... */
#define PACK_DAY_BITS 4    /* ... and days [16 w, 16 w + 16) */
#define PACK_READ_MAX 255  /* users of one packed cell accepted on load */

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
        for (uint32_t i = beh__lower_day(se, (int32_t)d0);
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
                put_u32le(p, c->small ? sm_vals(c)[i] : (uint32_t)beh__cell_value(c, users[i]));
    }
    return CP_OK;
}

/* One dirty entry: the cell's changed chunks, or all of it (wipe, or the
 * cell gone, or its chunk keys not yet on disk); a small cell goes to its
 * pack instead (queued here, written by beh_persist). */
static cp_status persist_entry(beh_t *b, dirty_t *d, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc = CP_OK;
    beh_cell_t *c = d->series < b->nseries ? beh__cell_find(&b->series[d->series], d->day) : NULL;
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
            beh__mark_cell_whole(b, s, &b->series[s].cells[i]);
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
            d->series < b->nseries ? beh__cell_find(&b->series[d->series], d->day) : NULL;
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
    if (vl > BEH_KEY_MAX || !beh__key_valid(v, vl))
        return CP_ERR(err, CP_EIO, "behaviour dictionary: corrupt key of series %u", id);
    if (beh_series_lookup(b, v, vl, &dup))
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
        beh__cell_release(&c);
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
        if (beh__cell_grow(last, c.nslices) != CP_OK)
            goto nomem;
        roaring_bitmap_or_inplace(last->exists, c.exists);
        for (int j = 0; j < c.nslices; j++)
            roaring_bitmap_or_inplace(last->slices[j], c.slices[j]);
        beh__cell_release(&c);
        beh__cell_trim(last);
        return CP_OK;
    }
    beh__cell_trim(&c);
    beh_cell_t *slot;
    if (beh__cell_get(se, day, &slot) != CP_OK)
        goto nomem;
    beh__cell_form_release(slot);
    *slot = c;
    slot->disk = DISK_CHUNKS;
    if (chunk < 0)
        beh__mark_cell_whole(b, s, slot); /* version 1: rewritten per chunk by the next persist */
    return CP_OK;
nomem:
    beh__cell_release(&c);
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
    if (beh__cell_find(se, day) != NULL)
        return CP_EIO; /* also under chunk keys, or twice */
    if ((se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL) ||
        beh__cell_get(se, day, &c) != CP_OK)
        return CP_ENOMEM;
    c->disk = DISK_PACK;
    roaring_bitmap_add_many(se->ever, n, u);
    if (n <= SMALL_MAX) {
        if (beh__sm_reserve(c, n) != CP_OK)
            return CP_ENOMEM;
        memcpy(sm_users(c), u, n * sizeof *u);
        for (uint32_t i = 0; i < n; i++)
            sm_vals(c)[i] = vals ? get_u32le(vals + 4 * i) : 0;
        c->n = (uint8_t)n;
        c->nslices = (uint8_t)bitlen(top);
        return CP_OK;
    }
    if (beh__cell_promote(c) != CP_OK)
        return CP_ENOMEM;
    roaring_bitmap_add_many(c->exists, n, u);
    if (beh__cell_grow(c, bitlen(top)) != CP_OK)
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
            beh__cell_demote(&b->series[s].cells[i]);
    b->persisted = b->nseries;
    return CP_OK;
}
