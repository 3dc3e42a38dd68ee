/*
 * target.c — line items' crowd targeting kept materialised (bid.h).
 *
 * The bidder must not evaluate an expression per request: a request only
 * asks "is ordinal X in the set of line L" (a roaring lookup, no I/O, no
 * lock of the handle). So a view holds, per line, the members of its
 * targeting expression, and per premium crowd its members, as results of
 * the public API (cp_eval, cp_crowd_members).
 *
 * Cost of a rebuild: one cp_eval per DISTINCT targeting expression (lines
 * with the same text share one result) and one cp_crowd_members per
 * distinct premium crowd, at every campaign change and at most every
 * refresh_ms while the change feed reports commits. With 100 lines over
 * 1M users that is 100 evaluations of a few ms each per refresh, on the
 * housekeeping thread, never on a request.
 *
 * Per request, a line costs one bit test, not a roaring lookup: a view
 * also holds, per user ordinal, a row of bits, one per distinct result
 * (targeting expression or premium crowd), so the ~100 questions of a
 * request read one or two cache lines instead of ~100 bitmaps (the
 * roaring lookups were a sixth of the bid path's CPU at 100 lines). Rows
 * are ceil(results / 64) words: 40 MB at 1M users and 300 results, while
 * a rebuild overlaps the old view. Past TARGET_MASK_MAX bytes the view
 * keeps only the results and answers with roaring lookups.
 *
 * Publication: views are immutable and reference-counted. The current one
 * is swapped under `vmu`, a mutex held only for a pointer load and an
 * increment (a lock-free load could race with the last release freeing
 * the view); readers keep their view for the whole request, so a rebuild
 * never changes what one request sees. Each view holds a reference to the
 * campaign snapshot it was built from, so line indexes and line pointers
 * agree for its readers (target_view_snapshot).
 *
 * Freshness: the feed callback (feed thread, never holding the handle's
 * lock) only sets `dirty`; the housekeeping thread rebuilds when dirty and
 * refresh_ms have passed since the last build. A change to the campaigns
 * rebuilds at once (registry listener, target_rebuild).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "activate/bid.h"
#include "util/util.h"

#define TARGET_MASK_MAX (512ull << 20)
#define TARGET_BATCH 4096

typedef struct prem_entry {
    const cp_result_t *members; /* NULL: crowd unknown now (matches nobody) */
    uint32_t bit;               /* its bit in a user's row */
    uint32_t crowd_id;
    int32_t pct;
} prem_entry_t;

typedef struct line_target {
    const cp_result_t *members; /* NULL with all = 1: targeting ""; NULL else: nobody */
    int all;
    uint32_t bit;       /* its bit in a user's row */
    prem_entry_t *prem; /* [line->npremiums] */
    size_t nprem;
} line_target_t;

struct target_view {
    atomic_uint refs;
    act_snapshot_t *snap; /* reference held */
    line_target_t *lines; /* [snap->nlines] */
    size_t nlines;
    cp_result_t **owned; /* every distinct result, freed with the view */
    size_t nowned;
    uint64_t *mask; /* [nusers * words] bit k of a row: member of result k; NULL: none */
    size_t words;
    uint64_t nusers; /* ordinals below this have a row */
};

struct target {
    cp_db_t *db; /* borrowed */
    int64_t refresh_ms;
    uint64_t sub_id;
    int subscribed;
    atomic_int dirty;         /* a commit arrived since the last build began */
    pthread_mutex_t build_mu; /* one rebuild at a time; guards last, last_build_ms */
    act_snapshot_t *last;     /* reference held: what target_tick rebuilds from */
    int64_t last_build_ms;
    pthread_mutex_t vmu; /* guards view (pointer load + ref only) */
    target_view_t *view;
};

static void view_free(target_view_t *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nowned; i++)
        cp_result_free(v->owned[i]);
    free(v->owned);
    free(v->mask);
    if (v->lines) {
        for (size_t i = 0; i < v->nlines; i++)
            free(v->lines[i].prem);
        free(v->lines);
    }
    snapshot_release(v->snap);
    free(v);
}

void target_release(target_view_t *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        view_free(v);
}

target_view_t *target_acquire(target_t *t)
{
    pthread_mutex_lock(&t->vmu);
    target_view_t *v = t->view;
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->vmu);
    return v;
}

const act_snapshot_t *target_view_snapshot(const target_view_t *v)
{
    return v->snap;
}

static void publish(target_t *t, target_view_t *v)
{
    pthread_mutex_lock(&t->vmu);
    target_view_t *old = t->view;
    t->view = v;
    pthread_mutex_unlock(&t->vmu);
    target_release(old);
}

/* Feed thread: only remember that something changed. Every commit counts,
 * not only those listing tag or crowd changes: an attribute written by a
 * user load changes "age BETWEEN 25 AND 40" without a change entry. */
static void on_commit(void *ctx, const cp_commit_info_t *c)
{
    target_t *t = ctx;
    CP_UNUSED(c);
    atomic_store_explicit(&t->dirty, 1, memory_order_release);
}

/* An empty view (no lines, no snapshot): what readers see before the
 * first build. */
static target_view_t *view_empty(void)
{
    target_view_t *v = calloc(1, sizeof *v);
    if (v)
        atomic_init(&v->refs, 1);
    return v;
}

cp_status target_open(cp_db_t *db, int64_t refresh_ms, target_t **out, cp_error_t *err)
{
    cp_status st = CP_OK;
    *out = NULL;
    target_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "target_open: out of memory");
    t->db = db;
    t->refresh_ms = refresh_ms;
    atomic_init(&t->dirty, 0);
    pthread_mutex_init(&t->build_mu, NULL);
    pthread_mutex_init(&t->vmu, NULL);
    if ((t->view = view_empty()) == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "target_open: out of memory");
        goto out;
    }
    /* Every commit is delivered whatever the mask; crowds alone is the mask
     * that costs writers least (no copies of tag members for us). */
    if ((st = cp_db_subscribe(db, on_commit, t, CP_FEED_CROWDS, &t->sub_id, err)))
        goto out;
    t->subscribed = 1;
    *out = t;
    t = NULL;
out:
    target_close(t);
    return st;
}

void target_close(target_t *t)
{
    if (t == NULL)
        return;
    if (t->subscribed) {
        cp_error_t err = {0};
        (void)cp_db_unsubscribe(t->db, t->sub_id, &err);
    }
    target_release(t->view);
    snapshot_release(t->last);
    pthread_mutex_destroy(&t->build_mu);
    pthread_mutex_destroy(&t->vmu);
    free(t);
}

/* Index of `text` among the first n distinct expressions, or n. */
static size_t find_text(const char **texts, size_t n, const char *text)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(texts[i], text) == 0)
            return i;
    }
    return n;
}

/* The per-user rows of bits over results res[0..n) (NULL entries match
 * nobody). Leaves v->mask NULL when the rows would pass TARGET_MASK_MAX. */
static cp_status mask_build(target_view_t *v, const cp_result_t **res, size_t n, cp_error_t *err)
{
    uint64_t nusers = 0;
    for (size_t k = 0; k < n; k++) {
        uint64_t c = cp_result_count(res[k]);
        uint32_t last;
        size_t got = 0;
        if (c == 0)
            continue;
        cp_status st = cp_result_ordinals(res[k], c - 1, &last, 1, &got, err);
        if (st != CP_OK)
            return st;
        if (got == 1 && (uint64_t)last + 1 > nusers)
            nusers = (uint64_t)last + 1;
    }
    size_t words = (n + 63) / 64;
    if (nusers == 0 || words == 0 || nusers * words * 8 > TARGET_MASK_MAX)
        return CP_OK;
    uint64_t *mask = calloc(nusers * words, sizeof *mask);
    uint32_t *batch = malloc(TARGET_BATCH * sizeof *batch);
    if (mask == NULL || batch == NULL) {
        free(mask);
        free(batch);
        return CP_ERR(err, CP_ENOMEM, "target: out of memory for %llu users' rows",
                      (unsigned long long)nusers);
    }
    for (size_t k = 0; k < n; k++) {
        if (res[k] == NULL)
            continue;
        uint64_t bit = 1ull << (k % 64);
        size_t w = k / 64;
        for (uint64_t off = 0;; off += TARGET_BATCH) {
            size_t got = 0;
            cp_status st = cp_result_ordinals(res[k], off, batch, TARGET_BATCH, &got, err);
            if (st != CP_OK) {
                free(mask);
                free(batch);
                return st;
            }
            if (got == 0)
                break;
            for (size_t i = 0; i < got; i++)
                mask[(uint64_t)batch[i] * words + w] |= bit;
        }
    }
    free(batch);
    v->mask = mask;
    v->words = words;
    v->nusers = nusers;
    return CP_OK;
}

/* Bit `bit` of user ord's row: 1 member, 0 not, -1 no rows (ask the result). */
static int mask_test(const target_view_t *v, uint32_t ord, uint32_t bit)
{
    if (v->mask == NULL)
        return -1;
    if (ord >= v->nusers)
        return 0;
    return (int)(v->mask[(uint64_t)ord * v->words + bit / 64] >> (bit % 64) & 1);
}

static cp_status view_build(target_t *t, act_snapshot_t *s, target_view_t **out, cp_error_t *err)
{
    cp_status st = CP_OK;
    const char **texts = NULL; /* distinct expressions, then crowd names (prefixed) */
    const cp_result_t **res = NULL;
    size_t ntexts = 0;
    char **names = NULL; /* "crowd\x01NAME" keys, owned here */
    size_t nnames = 0;
    target_view_t *v = calloc(1, sizeof *v);
    if (v == NULL)
        return CP_ERR(err, CP_ENOMEM, "target: out of memory");
    atomic_init(&v->refs, 1);
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    v->snap = s;
    v->nlines = s->nlines;
    size_t nprem_total = 0;
    for (size_t i = 0; i < s->nlines; i++)
        nprem_total += s->lines[i]->npremiums;
    size_t cap = s->nlines + nprem_total;
    v->lines = calloc(s->nlines ? s->nlines : 1, sizeof *v->lines);
    v->owned = calloc(cap ? cap : 1, sizeof *v->owned);
    texts = calloc(cap ? cap : 1, sizeof *texts);
    res = calloc(cap ? cap : 1, sizeof *res);
    names = calloc(nprem_total ? nprem_total : 1, sizeof *names);
    if (v->lines == NULL || v->owned == NULL || texts == NULL || res == NULL || names == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "target: out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->nlines; i++) {
        const act_line_t *line = s->lines[i];
        line_target_t *lt = &v->lines[i];
        if (line->targeting == NULL || line->targeting[0] == '\0') {
            lt->all = 1;
        } else {
            size_t k = find_text(texts, ntexts, line->targeting);
            if (k == ntexts) {
                cp_result_t *r = NULL;
                cp_error_t e = {0};
                /* A line whose expression no longer evaluates (a tag or
                 * crowd deleted since the put) matches nobody until it is
                 * fixed; the other lines keep bidding. */
                if (cp_eval(t->db, line->targeting, &r, &e) == CP_OK)
                    v->owned[v->nowned++] = r;
                texts[ntexts] = line->targeting;
                res[ntexts++] = r;
            }
            lt->members = res[k];
            lt->bit = (uint32_t)k;
        }
        if (line->npremiums == 0)
            continue;
        lt->prem = calloc(line->npremiums, sizeof *lt->prem);
        if (lt->prem == NULL) {
            st = CP_ERR(err, CP_ENOMEM, "target: out of memory");
            goto out;
        }
        lt->nprem = line->npremiums;
        for (size_t p = 0; p < line->npremiums; p++) {
            const act_premium_t *pr = &line->premiums[p];
            prem_entry_t *pe = &lt->prem[p];
            pe->pct = pr->pct;
            pe->crowd_id = UINT32_MAX;
            /* Crowd names share the texts table under a prefix no
             * expression can start with. */
            size_t nl = strlen(pr->crowd);
            char *key = malloc(nl + 2);
            if (key == NULL) {
                st = CP_ERR(err, CP_ENOMEM, "target: out of memory");
                goto out;
            }
            key[0] = '\x01';
            memcpy(key + 1, pr->crowd, nl + 1);
            size_t k = find_text(texts, ntexts, key);
            if (k == ntexts) {
                names[nnames++] = key;
                cp_result_t *r = NULL;
                cp_error_t e = {0};
                if (cp_crowd_members(t->db, pr->crowd, &r, &e) == CP_OK)
                    v->owned[v->nowned++] = r;
                texts[ntexts] = key;
                res[ntexts++] = r;
            } else {
                free(key);
            }
            pe->members = res[k];
            pe->bit = (uint32_t)k;
            cp_error_t e = {0};
            uint32_t id;
            if (cp_crowd_id(t->db, pr->crowd, &id, &e) == CP_OK)
                pe->crowd_id = id;
        }
    }
    if ((st = mask_build(v, res, ntexts, err)) != CP_OK)
        goto out;
    *out = v;
    v = NULL;
out:
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    free(texts);
    free(res);
    view_free(v);
    return st;
}

cp_status target_rebuild(target_t *t, const act_snapshot_t *s, cp_error_t *err)
{
    if (t == NULL || s == NULL)
        return CP_ERR(err, CP_EINVAL, "target_rebuild: NULL target or snapshot");
    act_snapshot_t *snap = (act_snapshot_t *)s; /* references are counted, content is not changed */
    pthread_mutex_lock(&t->build_mu);
    if (t->last != NULL && snap->version < t->last->version) {
        /* A tick that took the previous snapshot lost the race with a
         * campaign change: the newer view stays. */
        pthread_mutex_unlock(&t->build_mu);
        return CP_OK;
    }
    /* Cleared before evaluating: a commit during the build marks it again. */
    atomic_store_explicit(&t->dirty, 0, memory_order_release);
    int64_t now = time_now_ms();
    target_view_t *v = NULL;
    cp_status st = view_build(t, snap, &v, err);
    if (st == CP_OK) {
        if (t->last != snap) {
            atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
            snapshot_release(t->last);
            t->last = snap;
        }
        t->last_build_ms = now;
        publish(t, v);
    } else {
        atomic_store_explicit(&t->dirty, 1, memory_order_release);
    }
    pthread_mutex_unlock(&t->build_mu);
    return st;
}

cp_status target_tick(target_t *t, int64_t now_ms, cp_error_t *err)
{
    if (t == NULL)
        return CP_ERR(err, CP_EINVAL, "target_tick: NULL target");
    if (!atomic_load_explicit(&t->dirty, memory_order_acquire))
        return CP_OK;
    pthread_mutex_lock(&t->build_mu);
    act_snapshot_t *s = t->last;
    /* A clock behind the last build (a simulator's, while campaign puts
     * stamp the wall clock) counts as due: dirty is what matters then. */
    int due =
        s != NULL && (now_ms - t->last_build_ms >= t->refresh_ms || now_ms < t->last_build_ms);
    if (due)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->build_mu);
    if (!due)
        return CP_OK;
    cp_status st = target_rebuild(t, s, err);
    snapshot_release(s);
    return st;
}

int target_line_match(const target_view_t *v, uint32_t line_index, uint32_t ord)
{
    if (line_index >= v->nlines)
        return 0;
    const line_target_t *lt = &v->lines[line_index];
    if (lt->all)
        return 1;
    if (ord == UINT32_MAX || lt->members == NULL)
        return 0;
    int m = mask_test(v, ord, lt->bit);
    return m >= 0 ? m : cp_result_contains(lt->members, ord);
}

int32_t target_premium_pct(const target_view_t *v, const act_line_t *line, uint32_t ord,
                           uint32_t *crowds, size_t *ncrowds)
{
    *ncrowds = 0;
    if (line->index >= v->nlines || ord == UINT32_MAX)
        return 0;
    const line_target_t *lt = &v->lines[line->index];
    int32_t best = 0;
    int any = 0;
    for (size_t p = 0; p < lt->nprem; p++) {
        const prem_entry_t *pe = &lt->prem[p];
        if (pe->members == NULL)
            continue;
        int m = mask_test(v, ord, pe->bit);
        if (m == 0 || (m < 0 && !cp_result_contains(pe->members, ord)))
            continue;
        if (!any || pe->pct > best)
            best = pe->pct;
        any = 1;
        if (*ncrowds < LEDGER_MAX_CROWDS)
            crowds[(*ncrowds)++] = pe->crowd_id;
    }
    return best;
}
