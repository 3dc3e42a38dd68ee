/* member_list.c — each user's crowds and tags as one list; see member_list.h. */
#include <stdlib.h>
#include <string.h>

#include "index/member_list.h"

#define ML_SHIFT 12
#define ML_USERS (1u << ML_SHIFT)
#define ML_MASK (ML_USERS - 1)
#define ML_VARINT_MAX 5

typedef struct ml_row {
    uint32_t off;  /* of the list in the chunk's arena */
    uint32_t len;  /* bytes of the list */
    uint32_t room; /* bytes it may grow to in place */
} ml_row_t;

typedef struct ml_chunk {
    uint8_t *bytes; /* arena: every list of the chunk's users */
    uint32_t used;  /* bytes handed out to rows */
    uint32_t cap;   /* bytes allocated */
    uint32_t waste; /* bytes of lists that moved away */
    ml_row_t row[ML_USERS];
} ml_chunk_t;

struct mlist {
    ml_chunk_t **chunk; /* by ord >> ML_SHIFT; NULL = no user of it is in anything */
    uint32_t nchunks;
    int ready;        /* built, and every change since is in the lists */
    uint8_t *scratch; /* an edited list before it is stored */
    size_t scap;
};

/* ------------------------------------------------------------- varints */

static inline size_t var_put(uint8_t *p, uint32_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static inline size_t var_len(uint32_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Lists are written by this file only, so they are well formed. */
static inline const uint8_t *var_get(const uint8_t *p, uint32_t *v)
{
    uint32_t x = 0;
    unsigned s = 0;
    while (*p & 0x80) {
        x |= (uint32_t)(*p++ & 0x7f) << s;
        s += 7;
    }
    *v = x | (uint32_t)*p++ << s;
    return p;
}

/* The gap stored for code after prev (first: no prev). */
static inline uint32_t gap_of(int first, uint32_t prev, uint32_t code)
{
    return first ? code : code - prev - 1;
}

/* -------------------------------------------------------------- chunks */

static void chunks_free(struct mlist *ml)
{
    for (uint32_t k = 0; k < ml->nchunks; k++)
        if (ml->chunk[k]) {
            free(ml->chunk[k]->bytes);
            free(ml->chunk[k]);
        }
    free(ml->chunk);
    ml->chunk = NULL;
    ml->nchunks = 0;
}

/* Everything is dropped: lists that cannot be kept true are not kept. */
static void broken(struct mlist *ml)
{
    chunks_free(ml);
    ml->ready = 0;
}

static ml_chunk_t *chunk_get(struct mlist *ml, uint32_t k)
{
    if (k >= ml->nchunks) {
        uint32_t n = ml->nchunks ? ml->nchunks : 16;
        while (n <= k)
            n *= 2;
        ml_chunk_t **c = realloc(ml->chunk, (size_t)n * sizeof *c);
        if (c == NULL)
            return NULL;
        memset(c + ml->nchunks, 0, (size_t)(n - ml->nchunks) * sizeof *c);
        ml->chunk = c;
        ml->nchunks = n;
    }
    if (ml->chunk[k] == NULL)
        ml->chunk[k] = calloc(1, sizeof *ml->chunk[k]);
    return ml->chunk[k];
}

/* Rewrites the arena with every list packed (room = length), leaving
 * `extra` bytes free at the end. -1 on ENOMEM (the chunk unchanged). */
static int chunk_repack(ml_chunk_t *ch, uint32_t extra)
{
    uint64_t live = 0;
    for (uint32_t u = 0; u < ML_USERS; u++)
        live += ch->row[u].len;
    uint64_t cap = live + extra + live / 16 + 64;
    if (cap > UINT32_MAX)
        return -1;
    uint8_t *b = malloc((size_t)cap);
    if (b == NULL)
        return -1;
    uint32_t at = 0;
    for (uint32_t u = 0; u < ML_USERS; u++) {
        ml_row_t *r = &ch->row[u];
        if (r->len)
            memcpy(b + at, ch->bytes + r->off, r->len);
        r->off = at;
        r->room = r->len;
        at += r->len;
    }
    free(ch->bytes);
    ch->bytes = b;
    ch->used = at;
    ch->cap = (uint32_t)cap;
    ch->waste = 0;
    return 0;
}

/* Stores list buf[len] as row r's. -1 on ENOMEM. */
static int row_store(ml_chunk_t *ch, ml_row_t *r, const uint8_t *buf, uint32_t len)
{
    if (len == 0 || len <= r->room) {
        if (len)
            memcpy(ch->bytes + r->off, buf, len);
        r->len = len;
        return 0;
    }
    /* Moves to the arena's end, with room to grow: a user who gained an
     * entry tends to gain more (intake adds tags one event at a time). */
    uint64_t room = (uint64_t)len + len / 8 + 4;
    if ((uint64_t)ch->used + room > ch->cap) {
        if (ch->waste > ch->used / 2) {
            r->len = 0; /* its old bytes are abandoned either way */
            if (chunk_repack(ch, (uint32_t)room))
                return -1;
        }
        if ((uint64_t)ch->used + room > ch->cap) {
            uint64_t cap = (uint64_t)ch->cap + ch->cap / 2;
            if (cap < (uint64_t)ch->used + room)
                cap = (uint64_t)ch->used + room;
            if (cap > UINT32_MAX)
                return -1;
            uint8_t *b = realloc(ch->bytes, (size_t)cap);
            if (b == NULL)
                return -1;
            ch->bytes = b;
            ch->cap = (uint32_t)cap;
        }
    }
    ch->waste += r->room;
    r->off = ch->used;
    r->room = (uint32_t)room;
    ch->used += (uint32_t)room;
    memcpy(ch->bytes + r->off, buf, len);
    r->len = len;
    return 0;
}

static int scratch_room(struct mlist *ml, size_t need)
{
    if (need <= ml->scap)
        return 0;
    size_t n = ml->scap ? ml->scap : 256;
    while (n < need)
        n *= 2;
    uint8_t *s = realloc(ml->scratch, n);
    if (s == NULL)
        return -1;
    ml->scratch = s;
    ml->scap = n;
    return 0;
}

/* --------------------------------------------------------------- edits */

static int list_set(struct mlist *ml, uint32_t ord, uint32_t code, int present)
{
    uint32_t k = ord >> ML_SHIFT;
    ml_chunk_t *ch = k < ml->nchunks ? ml->chunk[k] : NULL;
    if (ch == NULL) {
        if (!present)
            return 0;
        if ((ch = chunk_get(ml, k)) == NULL)
            return -1;
    }
    ml_row_t *r = &ch->row[ord & ML_MASK];
    /* An empty list may have no arena behind it (no NULL + 0). */
    static const uint8_t none[1];
    const uint8_t *p = r->len ? ch->bytes + r->off : none, *end = p + r->len, *at = p, *next = p;
    uint32_t prev = 0, c = 0;
    int first = 1, found = 0;
    /* at: the first code >= code ([at, next) holds it), prev before it */
    while (at < end) {
        uint32_t g;
        next = var_get(at, &g);
        c = first ? g : prev + 1 + g;
        if (c >= code) {
            found = 1;
            break;
        }
        prev = c;
        first = 0;
        at = next;
    }
    int has = found && c == code;
    if (has == !!present)
        return 0;
    /* [at, rest) is replaced by mid: the new code's gap and the next
     * code's gap from it (an insertion), or the next code's gap from the
     * one before (a removal); what precedes and follows stays. */
    uint8_t mid[2 * ML_VARINT_MAX];
    size_t m = 0;
    const uint8_t *rest = next;
    if (present) {
        m += var_put(mid + m, gap_of(first, prev, code));
        if (found) /* c > code: its gap is now from code */
            m += var_put(mid + m, c - code - 1);
        else
            rest = at; /* at == end */
    } else if (next < end) {
        uint32_t g;
        rest = var_get(next, &g);
        m += var_put(mid + m, gap_of(first, prev, c + 1 + g));
    }
    size_t head = (size_t)(at - p), tail = (size_t)(end - rest);
    uint32_t n = (uint32_t)(head + m + tail);
    if (n <= r->room) { /* in place (room > 0: the arena has the row) */
        uint8_t *w = ch->bytes + r->off + head;
        memmove(w + m, rest, tail);
        memcpy(w, mid, m);
        r->len = n;
        return 0;
    }
    if (scratch_room(ml, n))
        return -1;
    uint8_t *s = ml->scratch;
    memcpy(s, p, head);
    memcpy(s + head, mid, m);
    memcpy(s + head + m, rest, tail);
    return row_store(ch, r, s, n);
}

void member_list_set(index_t *ix, uint32_t ord, uint32_t code, int present)
{
    struct mlist *ml = ix->ml;
    if (ml && ml->ready && list_set(ml, ord, code, present))
        broken(ml);
}

void member_list_clear_user(index_t *ix, uint32_t ord)
{
    struct mlist *ml = ix->ml;
    uint32_t k = ord >> ML_SHIFT;
    if (ml && ml->ready && k < ml->nchunks && ml->chunk[k])
        ml->chunk[k]->row[ord & ML_MASK].len = 0;
}

/* Bulk edits: many users, one code. The time goes to cache misses on
 * each user's row and list (a crowd's members are ~30 ordinals apart), so
 * the users are read in batches and the rows and lists a few users ahead
 * are prefetched. `after` NULL: every user gets `present`; else each user
 * gets "in after". */
#define ML_BATCH 256
#define ML_AHEAD 8

static void prefetch_row(const struct mlist *ml, uint32_t ord, int list)
{
    uint32_t k = ord >> ML_SHIFT;
    const ml_chunk_t *ch = k < ml->nchunks ? ml->chunk[k] : NULL;
    if (ch == NULL)
        return;
    const ml_row_t *r = &ch->row[ord & ML_MASK];
    if (!list)
        __builtin_prefetch(r);
    else if (r->len)
        __builtin_prefetch(ch->bytes + r->off);
}

static void set_many(struct mlist *ml, const roaring_bitmap_t *users, uint32_t code, int present,
                     const roaring_bitmap_t *after)
{
    uint32_t buf[ML_BATCH];
    roaring_uint32_iterator_t it;
    roaring_init_iterator(users, &it);
    while (it.has_value) {
        uint32_t n = roaring_read_uint32_iterator(&it, buf, ML_BATCH);
        for (uint32_t i = 0; i < n; i++) {
            if (i + 2 * ML_AHEAD < n)
                prefetch_row(ml, buf[i + 2 * ML_AHEAD], 0);
            if (i + ML_AHEAD < n)
                prefetch_row(ml, buf[i + ML_AHEAD], 1);
            int in = after ? roaring_bitmap_contains(after, buf[i]) : present;
            if (list_set(ml, buf[i], code, in)) {
                broken(ml);
                return;
            }
        }
    }
}

void member_list_set_all(index_t *ix, const roaring_bitmap_t *bm, uint32_t code, int present)
{
    struct mlist *ml = ix->ml;
    if (ml && ml->ready && bm)
        set_many(ml, bm, code, present, NULL);
}

void member_list_apply_xor(index_t *ix, const roaring_bitmap_t *x, const roaring_bitmap_t *after,
                           uint32_t code)
{
    struct mlist *ml = ix->ml;
    if (ml == NULL || !ml->ready || x == NULL)
        return;
    if (after == NULL)
        set_many(ml, x, code, 0, NULL);
    else
        set_many(ml, x, code, 0, after);
}

void member_list_diff(index_t *ix, const roaring_bitmap_t *before, const roaring_bitmap_t *after,
                      uint32_t code)
{
    struct mlist *ml = ix->ml;
    if (ml == NULL || !ml->ready)
        return;
    if (before == NULL || after == NULL) {
        member_list_set_all(ix, before, code, 0);
        member_list_set_all(ix, after, code, 1);
        return;
    }
    roaring_bitmap_t *x = roaring_bitmap_xor(before, after);
    if (x == NULL)
        broken(ml);
    member_list_apply_xor(ix, x, after, code);
    index_bm_free(x);
}

/* --------------------------------------------------------------- build */

typedef struct ml_set {
    roaring_uint32_iterator_t it;
    uint32_t code;
} ml_set_t;

typedef struct ml_build {
    ml_set_t *set;
    size_t nset;
    uint16_t *pu; /* pairs of the chunk: user (low bits), code; in code order */
    uint32_t *pc;
    size_t np, capp;
    uint32_t *sorted; /* codes grouped by user */
    uint32_t start[ML_USERS + 1];
} ml_build_t;

static int pairs_room(ml_build_t *b)
{
    if (b->np < b->capp)
        return 0;
    size_t n = b->capp ? b->capp * 2 : 65536;
    uint16_t *pu = realloc(b->pu, n * sizeof *pu);
    if (pu)
        b->pu = pu;
    uint32_t *pc = realloc(b->pc, n * sizeof *pc);
    if (pc)
        b->pc = pc;
    uint32_t *so = realloc(b->sorted, n * sizeof *so);
    if (so)
        b->sorted = so;
    if (!pu || !pc || !so)
        return -1;
    b->capp = n;
    return 0;
}

/* The sets in code order: crowd id, then tag id, id ascending. */
static int build_sets(const index_t *ix, ml_build_t *b, uint32_t *nchunks)
{
    uint32_t maxid = ix->ncrowds > ix->ntags ? ix->ncrowds : ix->ntags;
    b->set = calloc((size_t)maxid * 2 + 1, sizeof *b->set);
    if (b->set == NULL)
        return -1;
    uint64_t top = 0;
    for (uint32_t id = 0; id < maxid; id++) {
        const roaring_bitmap_t *bm[2] = {
            id < ix->ncrowds ? ix->crowds[id] : NULL,
            id && id < ix->ntags && ix->tags[id].direct ? ix->tags[id].eff : NULL};
        for (uint32_t kind = 0; kind < 2; kind++) {
            if (bm[kind] == NULL || roaring_bitmap_is_empty(bm[kind]))
                continue;
            ml_set_t *s = &b->set[b->nset++];
            roaring_init_iterator(bm[kind], &s->it);
            s->code = MLIST_CODE(id, kind);
            uint64_t mx = roaring_bitmap_maximum(bm[kind]);
            if (mx + 1 > top)
                top = mx + 1;
        }
    }
    *nchunks = (uint32_t)((top + ML_USERS - 1) >> ML_SHIFT);
    return 0;
}

/* The lists of chunk k from the sets' iterators (positioned at the chunk). */
static int build_chunk(struct mlist *ml, ml_build_t *b, uint32_t k)
{
    uint64_t hi = ((uint64_t)k + 1) << ML_SHIFT;
    b->np = 0;
    for (size_t i = 0; i < b->nset; i++) {
        roaring_uint32_iterator_t *it = &b->set[i].it;
        for (; it->has_value && it->current_value < hi; roaring_advance_uint32_iterator(it)) {
            if (pairs_room(b))
                return -1;
            b->pu[b->np] = (uint16_t)(it->current_value & ML_MASK);
            b->pc[b->np++] = b->set[i].code;
        }
    }
    if (b->np == 0)
        return 0;
    /* Counting sort by user, stable: each user's codes stay ascending. */
    memset(b->start, 0, sizeof b->start);
    for (size_t i = 0; i < b->np; i++)
        b->start[b->pu[i] + 1]++;
    for (uint32_t u = 0; u < ML_USERS; u++)
        b->start[u + 1] += b->start[u];
    for (size_t i = 0; i < b->np; i++)
        b->sorted[b->start[b->pu[i]]++] = b->pc[i];
    /* start[u] is now the end of user u's codes. */
    ml_chunk_t *ch = chunk_get(ml, k);
    if (ch == NULL)
        return -1;
    uint64_t bytes = 0;
    for (uint32_t u = 0, from = 0; u < ML_USERS; u++) {
        for (uint32_t i = from; i < b->start[u]; i++)
            bytes += var_len(gap_of(i == from, i > from ? b->sorted[i - 1] : 0, b->sorted[i]));
        from = b->start[u];
    }
    uint64_t cap = bytes + bytes / 16 + 64;
    if (cap > UINT32_MAX || (ch->bytes = malloc((size_t)cap)) == NULL)
        return -1;
    ch->cap = (uint32_t)cap;
    uint32_t at = 0;
    for (uint32_t u = 0, from = 0; u < ML_USERS; u++) {
        ml_row_t *r = &ch->row[u];
        r->off = at;
        for (uint32_t i = from; i < b->start[u]; i++)
            at += (uint32_t)var_put(
                ch->bytes + at, gap_of(i == from, i > from ? b->sorted[i - 1] : 0, b->sorted[i]));
        r->len = r->room = at - r->off;
        from = b->start[u];
    }
    ch->used = at;
    return 0;
}

cp_status member_list_build(index_t *ix)
{
    struct mlist *ml = ix->ml;
    if (ml == NULL && (ml = ix->ml = calloc(1, sizeof *ml)) == NULL)
        return CP_ENOMEM;
    broken(ml);
    ml_build_t *b = calloc(1, sizeof *b);
    uint32_t nchunks = 0;
    int rc = b == NULL || build_sets(ix, b, &nchunks);
    for (uint32_t k = 0; rc == 0 && k < nchunks; k++)
        rc = build_chunk(ml, b, k);
    if (b) {
        free(b->set);
        free(b->pu);
        free(b->pc);
        free(b->sorted);
        free(b);
    }
    if (rc) {
        broken(ml);
        return CP_ENOMEM;
    }
    ml->ready = 1;
    return CP_OK;
}

void member_list_repair(index_t *ix)
{
    if (!member_list_ready(ix))
        (void)member_list_build(ix);
}

int member_list_ready(const index_t *ix)
{
    return ix->ml && ix->ml->ready;
}

/* -------------------------------------------------------------- lookup */

void member_list_lookup(const index_t *ix, uint32_t ord, int want_crowds, uint32_t *crowds,
                        size_t crowds_cap, size_t *nc, int want_tags, int direct, uint32_t *tags,
                        size_t tags_cap, size_t *nt)
{
    const struct mlist *ml = ix->ml;
    size_t a = 0, b = 0;
    uint32_t k = ord >> ML_SHIFT;
    const ml_chunk_t *ch = k < ml->nchunks ? ml->chunk[k] : NULL;
    if (ch && ch->row[ord & ML_MASK].len) {
        const ml_row_t *r = &ch->row[ord & ML_MASK];
        const uint8_t *p = ch->bytes + r->off, *end = p + r->len;
        uint32_t code = 0;
        for (int first = 1; p < end; first = 0) {
            uint32_t g;
            p = var_get(p, &g);
            code = first ? g : code + 1 + g;
            uint32_t id = code >> 1;
            if ((code & 1) == MLIST_CROWD) {
                if (want_crowds) {
                    if (a < crowds_cap)
                        crowds[a] = id;
                    a++;
                }
            } else if (want_tags) {
                /* Direct tags are a subset of the user's tags: one probe
                 * per tag the user holds, not per tag. */
                if (direct && !(id < ix->ntags && ix->tags[id].direct &&
                                roaring_bitmap_contains(ix->tags[id].direct, ord)))
                    continue;
                if (b < tags_cap)
                    tags[b] = id;
                b++;
            }
        }
    }
    *nc = a;
    *nt = b;
}

/* ------------------------------------------------------------ the rest */

uint64_t member_list_memory(const index_t *ix)
{
    const struct mlist *ml = ix->ml;
    if (ml == NULL)
        return 0;
    uint64_t n = sizeof *ml + ml->scap + (uint64_t)ml->nchunks * sizeof *ml->chunk;
    for (uint32_t k = 0; k < ml->nchunks; k++)
        if (ml->chunk[k])
            n += sizeof *ml->chunk[k] + ml->chunk[k]->cap;
    return n;
}

void member_list_free(index_t *ix)
{
    struct mlist *ml = ix->ml;
    if (ml == NULL)
        return;
    chunks_free(ml);
    free(ml->scratch);
    free(ml);
    ix->ml = NULL;
}
