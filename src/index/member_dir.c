/* member_dir.c — the membership lookup's container directory; see member_dir.h. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "index/member_dir.h"

/* Directories replaced between two commits (index changes applied by the
 * intake writer between its commits) before lookups stop building new
 * ones until the commit reclaims them. */
#define MDIR_MAX_REPLACED 8

typedef struct mdir {
    struct mdir *replaced; /* older directories, freed by member_dir_reclaim */
    int nreplaced;         /* how many */
    uint64_t gen;          /* ix->gen it was built at */
    uint32_t ncrowds, ntags, nchunks;
    bm_chunk_t *ent; /* [nchunks][ncrowds + ntags]: crowds by id, then tags by id */
} mdir_t;

static void mdir_free_chain(mdir_t *d)
{
    while (d) {
        mdir_t *next = d->replaced;
        free(d->ent);
        free(d);
        d = next;
    }
}

/* The highest chunk any set has, plus one. */
static uint32_t chunks_of(const index_t *ix)
{
    uint32_t n = 0;
    int32_t k = bm_chunk_count(ix->universe);
    if (k > 0)
        n = (uint32_t)bm_chunk_key(ix->universe, k - 1) + 1;
    return n;
}

static void fill_row(const roaring_bitmap_t *bm, uint32_t nchunks, size_t stride, bm_chunk_t *col)
{
    for (uint32_t k = 0; k < nchunks; k++)
        col[k * stride].type = 0;
    if (bm == NULL)
        return;
    int32_t n = bm_chunk_count(bm);
    for (int32_t i = 0; i < n; i++) {
        uint16_t key = bm_chunk_key(bm, i);
        if (key < nchunks)
            bm_chunk_at(bm, i, &col[key * stride]);
    }
}

static mdir_t *build(const index_t *ix)
{
    mdir_t *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->gen = ix->gen;
    d->ncrowds = ix->ncrowds;
    d->ntags = ix->ntags;
    d->nchunks = chunks_of(ix);
    size_t stride = (size_t)d->ncrowds + d->ntags;
    if (stride && d->nchunks) {
        d->ent = calloc((size_t)d->nchunks * stride, sizeof *d->ent);
        if (d->ent == NULL) {
            free(d);
            return NULL;
        }
    }
    for (uint32_t c = 0; c < d->ncrowds && d->ent; c++)
        fill_row(ix->crowds[c], d->nchunks, stride, d->ent + c);
    for (uint32_t t = 0; t < d->ntags && d->ent; t++)
        fill_row(ix->tags[t].direct ? ix->tags[t].eff : NULL, d->nchunks, stride,
                 d->ent + d->ncrowds + t);
    return d;
}

/* The current directory, built if missing or stale; NULL when it cannot be. */
static mdir_t *current(index_t *ix)
{
    mdir_t *d = atomic_load(&ix->mdir);
    if (d && d->gen == ix->gen)
        return d;
    /* One builder at a time; the others use the bitmaps meanwhile. */
    if (pthread_mutex_trylock(&ix->mdir_mu) != 0)
        return NULL;
    d = atomic_load(&ix->mdir);
    if (d && d->nreplaced >= MDIR_MAX_REPLACED) {
        d = NULL; /* memory waits for the next commit: use the bitmaps */
    } else if (d == NULL || d->gen != ix->gen) {
        mdir_t *n = build(ix);
        if (n) {
            n->replaced = d;
            n->nreplaced = d ? d->nreplaced + 1 : 0;
            atomic_store(&ix->mdir, n);
        }
        d = n;
    }
    pthread_mutex_unlock(&ix->mdir_mu);
    return d;
}

int member_dir_lookup(index_t *ix, uint32_t ord, int want_crowds, uint32_t *crowds,
                      size_t crowds_cap, size_t *nc, int want_tags, uint32_t *tags, size_t tags_cap,
                      size_t *nt)
{
    mdir_t *d = current(ix);
    if (d == NULL)
        return 0;
    *nc = *nt = 0;
    uint32_t key = ord >> 16;
    if (key >= d->nchunks)
        return 1; /* no set has this chunk */
    uint16_t low = (uint16_t)(ord & 0xFFFF);
    const bm_chunk_t *row = d->ent + (size_t)key * ((size_t)d->ncrowds + d->ntags);
    size_t n = 0;
    for (uint32_t c = 0; want_crowds && c < d->ncrowds; c++)
        if (row[c].type && chunk_contains(&row[c], low)) {
            if (n < crowds_cap)
                crowds[n] = c;
            n++;
        }
    *nc = n;
    n = 0;
    row += d->ncrowds;
    for (uint32_t t = 1; want_tags && t < d->ntags; t++)
        if (row[t].type && chunk_contains(&row[t], low)) {
            if (n < tags_cap)
                tags[n] = t;
            n++;
        }
    *nt = n;
    return 1;
}

void member_dir_reclaim(index_t *ix)
{
    mdir_t *d = atomic_load(&ix->mdir);
    if (d && d->replaced) {
        mdir_free_chain(d->replaced);
        d->replaced = NULL;
        d->nreplaced = 0;
    }
}

void member_dir_free(index_t *ix)
{
    mdir_free_chain(atomic_load(&ix->mdir));
    atomic_store(&ix->mdir, NULL);
}
