/*
 * overlap.c — cp_overlap_json: how 2..10 crowds overlap.
 *
 * One pass over the chunks of the union: each crowd's chunk is loaded once
 * into dense words, then every pairwise intersection is an AND+popcount of
 * two L1-resident chunks, the union an OR, "unique to crowd i" the crowd
 * ANDNOT the union of the others (prefix and suffix ORs), and for 2 or 3
 * crowds every Venn region is counted exactly from the per-word region
 * masks. Chunk ranges are split over threads; counts add.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

#define NPAIRS (ANA_MAX_OVERLAP * (ANA_MAX_OVERLAP - 1) / 2)

typedef struct ojob {
    roaring_bitmap_t *const *sets;
    int n;
    const uint16_t *keys;
    uint32_t k0, k1;
    uint64_t pair[NPAIRS];
    uint64_t uni, unique[ANA_MAX_OVERLAP];
    uint64_t region[8]; /* by membership mask, n <= 3 */
    int started;
    cp_status rc;
} ojob_t;

static void *run_ojob(void *arg)
{
    ojob_t *j = arg;
    int n = j->n;
    /* n crowd chunks, the union, prefix ORs and one scratch. */
    uint64_t *buf = ana_dense_alloc((size_t)n * 2 + 2);
    if (buf == NULL) {
        j->rc = CP_ENOMEM;
        return NULL;
    }
    uint64_t *d[ANA_MAX_OVERLAP], *pre[ANA_MAX_OVERLAP];
    for (int i = 0; i < n; i++) {
        d[i] = buf + (size_t)i * CP_CHUNK_WORDS;
        pre[i] = buf + (size_t)(n + i) * CP_CHUNK_WORDS;
    }
    uint64_t *suf = buf + (size_t)(2 * n) * CP_CHUNK_WORDS;
    uint64_t *tmp = suf + CP_CHUNK_WORDS;
    int32_t cur[ANA_MAX_OVERLAP] = {0};
    for (uint32_t ki = j->k0; ki < j->k1; ki++) {
        uint16_t key = j->keys[ki];
        for (int i = 0; i < n; i++) {
            bm_chunk_t ch;
            bm_chunk_find(j->sets[i], key, &cur[i], &ch);
            chunk_load(&ch, d[i]);
        }
        int p = 0;
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++)
                j->pair[p++] += ana_dense_and_count(d[a], d[b]);
        /* pre[i] = d[0] | ... | d[i] */
        dense_copy(pre[0], d[0]);
        for (int i = 1; i < n; i++) {
            dense_copy(pre[i], pre[i - 1]);
            dense_or(pre[i], d[i]);
        }
        j->uni += dense_popcount(pre[n - 1]);
        /* unique[i] = d[i] & ~(pre[i-1] | suf[i+1]), walking i down. */
        dense_zero(suf);
        for (int i = n - 1; i >= 0; i--) {
            dense_copy(tmp, d[i]);
            dense_andnot(tmp, suf);
            if (i > 0)
                dense_andnot(tmp, pre[i - 1]);
            j->unique[i] += dense_popcount(tmp);
            dense_or(suf, d[i]);
        }
        if (n <= 3) {
            const uint64_t *a = d[0], *b = d[1], *c = n == 3 ? d[2] : NULL;
            for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++) {
                uint64_t x = a[w], y = b[w], z = c ? c[w] : 0;
                j->region[1] += (uint64_t)__builtin_popcountll(x & ~y & ~z);
                j->region[2] += (uint64_t)__builtin_popcountll(~x & y & ~z);
                j->region[3] += (uint64_t)__builtin_popcountll(x & y & ~z);
                j->region[4] += (uint64_t)__builtin_popcountll(~x & ~y & z);
                j->region[5] += (uint64_t)__builtin_popcountll(x & ~y & z);
                j->region[6] += (uint64_t)__builtin_popcountll(~x & y & z);
                j->region[7] += (uint64_t)__builtin_popcountll(x & y & z);
            }
        }
    }
    free(buf);
    return NULL;
}

/* Sorted keys of the union of the sets' chunks. */
static uint16_t *all_keys(roaring_bitmap_t *const *sets, int n, uint32_t *nk)
{
    uint8_t *seen = calloc(65536, 1);
    uint16_t *k = seen ? malloc(65536 * sizeof *k) : NULL;
    if (k == NULL) {
        free(seen);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        for (int32_t c = 0; c < bm_chunk_count(sets[i]); c++)
            seen[bm_chunk_key(sets[i], c)] = 1;
    uint32_t o = 0;
    for (uint32_t x = 0; x < 65536; x++)
        if (seen[x])
            k[o++] = (uint16_t)x;
    free(seen);
    *nk = o;
    return k;
}

/* A count under the minimum shows as suppressed. Non-zero when the field
 * could not be added (out of memory). */
static int put_count(json_t *o, const char *key, uint64_t v, uint64_t min_count)
{
    if (v < min_count)
        return json_object_set_new(o, key, json_null());
    return json_object_set_new(o, key, json_integer((json_int_t)v));
}

static json_t *ratio(uint64_t num, uint64_t den)
{
    return den ? json_real(ana_round((double)num / (double)den)) : json_null();
}

cp_status cp_overlap_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    static const char *const fields[] = {"crowds", "min_count", NULL};
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    json_t *req = NULL, *labels[ANA_MAX_OVERLAP] = {0}, *res = NULL;
    roaring_bitmap_t *sets[ANA_MAX_OVERLAP] = {0};
    uint16_t *keys = NULL;
    ojob_t *jobs = NULL;
    pthread_t tids[ANA_MAX_THREADS];
    int n = 0, locked = 0, threads = 1;
    int bad = 0; /* a report field could not be added: out of memory */
    uint64_t min_count = 0;
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc)
        return rc;
    if ((rc = ana_check_fields(req, "overlap", fields, err)))
        goto out;
    const json_t *cr = json_object_get(req, "crowds");
    if (!json_is_array(cr)) {
        rc = CP_ERR(err, CP_EINVAL,
                    "overlap: field \"crowds\" (an array of 2 to %d crowds) is "
                    "required",
                    ANA_MAX_OVERLAP);
        goto out;
    }
    if (json_array_size(cr) < 2 || json_array_size(cr) > ANA_MAX_OVERLAP) {
        rc = CP_ERR(err, json_array_size(cr) > ANA_MAX_OVERLAP ? CP_ELIMIT : CP_EINVAL,
                    "overlap: \"crowds\" has %zu entries; give 2 to %d", json_array_size(cr),
                    ANA_MAX_OVERLAP);
        goto out;
    }
    if ((rc = db_read_begin(db, err)))
        goto out;
    locked = 1;
    if ((rc = ana_min_count_request(db, req, &min_count, err)))
        goto out;
    for (n = 0; n < (int)json_array_size(cr); n++) {
        char what[32];
        snprintf(what, sizeof what, "crowds[%d]", n);
        if ((rc = ana_set_eval_locked(db, json_array_get(cr, (size_t)n), what, &sets[n], &labels[n],
                                      err)))
            goto out;
    }
    uint32_t nk = 0;
    keys = all_keys(sets, n, &nk);
    threads = ana_threads_for(nk);
    jobs = calloc((size_t)threads, sizeof *jobs);
    if (keys == NULL || jobs == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (int t = 0; t < threads; t++) {
        jobs[t].sets = sets;
        jobs[t].n = n;
        jobs[t].keys = keys;
        jobs[t].k0 = (uint32_t)((uint64_t)nk * (uint64_t)t / (uint64_t)threads);
        jobs[t].k1 = (uint32_t)((uint64_t)nk * (uint64_t)(t + 1) / (uint64_t)threads);
    }
    for (int t = 1; t < threads; t++) {
        jobs[t].started = pthread_create(&tids[t], NULL, run_ojob, &jobs[t]) == 0;
        if (!jobs[t].started)
            run_ojob(&jobs[t]);
    }
    run_ojob(&jobs[0]);
    for (int t = 1; t < threads; t++)
        if (jobs[t].started)
            pthread_join(tids[t], NULL);
    ojob_t sum = {0};
    for (int t = 0; t < threads; t++) {
        if (jobs[t].rc)
            rc = CP_ERR(err, jobs[t].rc, "out of memory counting the overlap");
        for (int p = 0; p < NPAIRS; p++)
            sum.pair[p] += jobs[t].pair[p];
        sum.uni += jobs[t].uni;
        for (int i = 0; i < ANA_MAX_OVERLAP; i++)
            sum.unique[i] += jobs[t].unique[i];
        for (int r = 0; r < 8; r++)
            sum.region[r] += jobs[t].region[r];
    }
    if (rc)
        goto out;
    atomic_fetch_add(&db->queries, 1);
    uint64_t size[ANA_MAX_OVERLAP];
    for (int i = 0; i < n; i++)
        size[i] = roaring_bitmap_get_cardinality(sets[i]);
    db_read_end(db);
    locked = 0;

    res = json_object();
    json_t *cj = json_array(), *pj = json_array();
    if (!res || !cj || !pj) {
        json_decref(cj);
        json_decref(pj);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        json_t *o = labels[i];
        labels[i] = NULL;
        bad |= json_object_set_new(o, "index", json_integer(i));
        bad |= json_object_set_new(o, "size", json_integer((json_int_t)size[i]));
        bad |= put_count(o, "unique", sum.unique[i], min_count);
        bad |= json_object_set_new(o, "unique_share",
                                   sum.unique[i] >= min_count ? ratio(sum.unique[i], size[i])
                                                              : json_null());
        bad |= json_array_append_new(cj, o);
    }
    int p = 0;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++, p++) {
            uint64_t x = sum.pair[p];
            uint64_t u = size[a] + size[b] - x;
            json_t *o = json_pack("{s:i,s:i}", "a", a, "b", b);
            if (x < min_count) {
                bad |= json_object_set_new(o, "suppressed", json_true());
            } else {
                bad |= json_object_set_new(o, "intersection", json_integer((json_int_t)x));
                bad |= json_object_set_new(o, "union", json_integer((json_int_t)u));
                bad |= json_object_set_new(o, "jaccard", ratio(x, u));
                /* containment: share of a that is also in b, and back */
                bad |= json_object_set_new(o, "a_in_b", ratio(x, size[a]));
                bad |= json_object_set_new(o, "b_in_a", ratio(x, size[b]));
            }
            bad |= json_array_append_new(pj, o);
        }
    bad |= json_object_set_new(res, "crowds", cj);
    bad |= json_object_set_new(res, "pairs", pj);
    bad |= put_count(res, "union", sum.uni, min_count);
    if (n <= 3) {
        json_t *vj = json_array();
        for (int m = 1; m < (1 << n); m++) {
            json_t *in = json_array();
            for (int i = 0; i < n; i++)
                if (m & (1 << i))
                    bad |= json_array_append_new(in, json_integer(i));
            json_t *o = json_pack("{s:o}", "in", in);
            if (sum.region[m] < min_count)
                bad |= json_object_set_new(o, "suppressed", json_true());
            else
                bad |= json_object_set_new(o, "count", json_integer((json_int_t)sum.region[m]));
            bad |= json_array_append_new(vj, o);
        }
        bad |= json_object_set_new(res, "venn", vj);
    }
    bad |= json_object_set_new(res, "min_count", json_integer((json_int_t)min_count));
    bad |= json_object_set_new(res, "took_ms",
                               json_real(ana_round((double)(time_mono_ns() - t0) / 1e6)));
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "overlap: out of memory building the report");
        goto out;
    }
    rc = db_json_out(res, out, err);
    res = NULL;
out:
    if (locked)
        db_read_end(db);
    for (int i = 0; i < ANA_MAX_OVERLAP; i++) {
        index_bm_free(sets[i]);
        json_decref(labels[i]);
    }
    free(keys);
    free(jobs);
    json_decref(res);
    json_decref(req);
    return rc;
}
