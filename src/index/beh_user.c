/* beh_user.c — one user's behaviour: removal (deletion, merge), extraction
 * and re-insertion (lineage, unmerge), the byte form of lineage entries,
 * and forgetting the property values of a deleted user; see behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

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
        beh__sm_retop(c);
    } else {
        if (!roaring_bitmap_remove_checked(c->exists, user))
            return 0;
        for (int j = 0; j < c->nslices; j++)
            roaring_bitmap_remove(c->slices[j], user);
        beh__cell_trim(c);
        beh__cell_demote(c);
    }
    if (cell_users(c) > 0) {
        beh__mark_cell(b, s, c, user);
        return 1;
    }
    int32_t day = c->day;
    beh__cell_release(c);
    memmove(&se->cells[i], &se->cells[i + 1], (size_t)(se->ncells - i - 1) * sizeof *c);
    se->ncells--;
    beh__mark_dirty(b, s, day, 1); /* its keys must go */
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
            if (!beh__cell_lookup(c, user, &val))
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

#define ENTRY_VERSION 1
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
    if (renamed) /* keys moved: the hash of keys is rebuilt */
        beh__dict_rehash(b);
    return CP_OK;
}
