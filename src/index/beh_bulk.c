/* beh_bulk.c — bulk writes of the behaviour index (beh_record_many): a batch
 * of records radix-sorted into (series, day, user) order and applied one
 * cell at a time; see behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

#define RADIX_BITS 11
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_PASSES 6 /* 64 bits of key */

void beh__scratch_free(beh_t *b)
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

static cp_status scratch_reserve(beh_t *b, size_t n)
{
    if (n <= b->scap && b->shist)
        return CP_OK;
    beh__scratch_free(b);
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
        beh__scratch_free(b);
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

/* The chunks chunks[0..n) (ascending) of cell c changed: beh__mark_cell for
 * each, with one sorted insert when the cell tracks a set of chunks. */
static void mark_cell_chunks(beh_t *b, uint32_t series, beh_cell_t *c, const uint32_t *chunks,
                             size_t n)
{
    size_t i = 0;
    for (; i < n && c->nd != 2; i++)
        beh__mark_cell(b, series, c, chunks[i] << 16);
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
    cp_status st = beh__sm_reserve(c, total);
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
 * is one insert-or-find (beh__cell_add), and only users already present or
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
    if ((st = beh__cell_get(se, day, &c)) != CP_OK)
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
        if ((st = beh__cell_promote(c)) != CP_OK)
            return st;
    }
    if (!roaring_bitmap_is_empty(c->exists)) {
        for (size_t i = 0; i < nu; i++)
            if ((st = beh__cell_add(c, uniq[i], cnt[i])) != CP_OK)
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
        if (cnt[i] > 1 && (st = beh__cell_add(c, uniq[i], cnt[i])) != CP_OK)
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
