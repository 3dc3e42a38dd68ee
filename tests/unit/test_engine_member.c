/*
 * test_engine_member.c — the membership lookup (cp_member_lookup_ord,
 * cp_member_lookup) against a naive check: for random users of a random
 * population (users with tags and ages, event users, merges, deletions),
 * the crowds and tags reported must be exactly those whose members
 * (cp_eval of crowd:NAME and tag:PATH) hold the user; direct tags those
 * cp_user_json lists. Also the contract's errors: arrays too small
 * (CP_ELIMIT with the true counts), unknown and deleted users, a missing
 * size, and the ids' names.
 *
 * And the per-user lists the lookup reads (index/member_list.h) against
 * the sets themselves: after every step of a random sequence of writes
 * (users, tags, tag moves and deletions, crowds created, refreshed and
 * deleted, events, merges, deletions, checkpoints), and after a reopen,
 * every live user's answer equals a probe of every crowd and tag bitmap.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <roaring/roaring.h>

#include "cp_test.h"
#include "crowdpack.h"
#include "engine/engine_int.h"
#include "index/member_list.h"
#include "util/util.h"

/* cp_result_t's layout (src/engine): the test compares ordinals. */
struct cp_result {
    roaring_bitmap_t *bm;
};

#define NTAGS 8
#define NCROWDS 12
#define NUSERS 300

static const char *TAGS[NTAGS] = {"a", "a/b", "a/c", "a/b/d", "e", "e/f", "g", "兴趣"};
static char g_dir[256];

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err ? err->message : "");
}

static cp_db_t *open_db(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "member");
    cp_open_options_t o = {
        .size = sizeof o, .flags = CP_OPEN_CREATE, .map_size = 1ull << 27, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    if (cp_db_open(g_dir, &o, &db, &err))
        fail_msg("open %s: %s", g_dir, err.message);
    return db;
}

static roaring_bitmap_t *members(cp_db_t *db, const char *expr)
{
    cp_result_t *r = NULL;
    cp_error_t err = {0};
    ok(cp_eval(db, expr, &r, &err), &err);
    roaring_bitmap_t *bm = roaring_bitmap_copy(r->bm);
    cp_result_free(r);
    return bm;
}

typedef struct world {
    cp_db_t *db;
    uint32_t tag_id[NTAGS], crowd_id[NCROWDS];
    char crowd_name[NCROWDS][16];
    roaring_bitmap_t *tag_bm[NTAGS], *crowd_bm[NCROWDS];
} world_t;

static void build(world_t *w, uint64_t *rng)
{
    cp_db_t *db = w->db;
    cp_error_t err = {0};
    char buf[400];
    ok(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err);
    for (int i = 0; i < NTAGS; i++) {
        ok(cp_tag_create(db, TAGS[i], NULL, NULL, &err), &err);
        int32_t h = 0;
        ok(cp_tag_handle(db, TAGS[i], &h, &err), &err);
        w->tag_id[i] = (uint32_t)h;
    }
    for (int i = 0; i < NUSERS; i++) {
        int n = 0;
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      "{\"id\":\"u%d\",\"attrs\":{\"age\":%d},"
                      "\"tags\":[",
                      i, 15 + (int)(rand_next(rng) % 50));
        int nt = (int)(rand_next(rng) % 4);
        for (int k = 0; k < nt; k++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s\"", k ? "," : "",
                          TAGS[rand_next(rng) % NTAGS]);
        snprintf(buf + n, sizeof buf - (size_t)n, "]}");
        ok(cp_user_upsert_json(db, buf, strlen(buf), &err), &err);
    }
    for (int i = 0; i < 40; i++) { /* event users, some merged with anonymous ones */
        snprintf(buf, sizeof buf,
                 "{\"userId\":\"m%d\",\"anonymousId\":\"an%d\",\"traits\":"
                 "{\"age\":%d}}",
                 i, (int)(rand_next(rng) % 25), 18 + i);
        ok(cp_ingest_segment(db, CP_EVENT_IDENTIFY, buf, strlen(buf), NULL, &err), &err);
    }
    for (int i = 0; i < 30; i++) {
        snprintf(buf, sizeof buf, "u%d", (int)(rand_next(rng) % NUSERS));
        cp_status rc = cp_user_delete(db, buf, &err);
        if (rc && rc != CP_ENOTFOUND)
            ok(rc, &err);
    }
    for (int i = 0; i < NCROWDS; i++) {
        char expr[200];
        const char *a = TAGS[rand_next(rng) % NTAGS], *b = TAGS[rand_next(rng) % NTAGS];
        switch (i % 4) {
        case 0:
            snprintf(expr, sizeof expr, "tag:%s", a);
            break;
        case 1:
            snprintf(expr, sizeof expr, "tag:%s OR age < %d", a, 20 + (int)(rand_next(rng) % 30));
            break;
        case 2:
            snprintf(expr, sizeof expr, "tag:%s AND NOT tag:%s", a, b);
            break;
        default:
            snprintf(expr, sizeof expr, "crowd:%s OR tag:%s", w->crowd_name[i - 1], b);
        }
        snprintf(w->crowd_name[i], sizeof w->crowd_name[i], "c%d", i);
        ok(cp_crowd_create(db, w->crowd_name[i], expr, i % 3 ? CP_CROWD_DYNAMIC : CP_CROWD_STATIC,
                           NULL, &err),
           &err);
        ok(cp_crowd_id(db, w->crowd_name[i], &w->crowd_id[i], &err), &err);
    }
    ok(cp_checkpoint(db, &err), &err);
    char expr[200];
    for (int i = 0; i < NTAGS; i++) {
        snprintf(expr, sizeof expr, "tag:%s", TAGS[i]);
        w->tag_bm[i] = members(db, expr);
    }
    for (int i = 0; i < NCROWDS; i++) {
        snprintf(expr, sizeof expr, "crowd:%s", w->crowd_name[i]);
        w->crowd_bm[i] = members(db, expr);
    }
}

static int has(const uint32_t *a, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] == x)
            return 1;
    return 0;
}

/* The lookup of ord equals the naive check over every crowd and tag. */
static void check_user(world_t *w, uint32_t ord, const cp_membership_t *m)
{
    size_t nc = 0, nt = 0;
    for (int i = 0; i < NCROWDS; i++) {
        int in = roaring_bitmap_contains(w->crowd_bm[i], ord);
        nc += (size_t)in;
        if (in != has(m->crowds, m->ncrowds, w->crowd_id[i]))
            fail_msg("user %u: crowd %s: lookup says %d", ord, w->crowd_name[i], !in);
    }
    for (int i = 0; i < NTAGS; i++) {
        int in = roaring_bitmap_contains(w->tag_bm[i], ord);
        nt += (size_t)in;
        if (in != has(m->tags, m->ntags, w->tag_id[i]))
            fail_msg("user %u: tag %s: lookup says %d", ord, TAGS[i], !in);
    }
    assert_int_equal(m->ncrowds, nc);
    assert_int_equal(m->ntags, nt);
    for (size_t i = 1; i < m->ncrowds; i++)
        assert_true(m->crowds[i - 1] < m->crowds[i]);
    for (size_t i = 1; i < m->ntags; i++)
        assert_true(m->tags[i - 1] < m->tags[i]);
}

static void test_lookup_matches_naive(void **state)
{
    (void)state;
    world_t w = {.db = open_db()};
    uint64_t rng = 0xbeef;
    build(&w, &rng);
    cp_error_t err = {0};
    cp_db_stats_t st = CP_DB_STATS_INIT;
    ok(cp_db_stats(w.db, &st, NULL), NULL);
    uint32_t crowds[NCROWDS], tags[NTAGS];
    size_t live = 0;
    for (uint32_t ord = 0; ord < st.ordinals + 5; ord++) {
        cp_membership_t m = {.size = sizeof m,
                             .crowds = crowds,
                             .crowds_cap = NCROWDS,
                             .tags = tags,
                             .tags_cap = NTAGS};
        cp_status rc = cp_member_lookup_ord(w.db, ord, &m, &err);
        if (rc == CP_ENOTFOUND)
            continue;
        ok(rc, &err);
        live++;
        assert_int_equal(m.user, ord);
        assert_true(m.commit > 0);
        check_user(&w, ord, &m);
    }
    assert_int_equal(live, st.users);
    /* By identifier: the same answer as by ordinal; direct tags as cp_user_json. */
    for (int i = 0; i < 60; i++) {
        char id[16];
        snprintf(id, sizeof id, "u%d", (int)(rand_next(&rng) % NUSERS));
        cp_membership_t m = {.size = sizeof m,
                             .crowds = crowds,
                             .crowds_cap = NCROWDS,
                             .tags = tags,
                             .tags_cap = NTAGS,
                             .flags = CP_MEMBER_DIRECT_TAGS};
        cp_status rc = cp_member_lookup(w.db, "user_id", id, &m, &err);
        if (rc == CP_ENOTFOUND)
            continue;
        ok(rc, &err);
        char *js = NULL;
        ok(cp_user_json(w.db, id, &js, &err), &err);
        json_t *j = json_loads(js, 0, NULL);
        cp_free(js);
        json_t *direct = json_object_get(j, "tags");
        assert_int_equal(json_array_size(direct), m.ntags);
        for (size_t k = 0; k < m.ntags; k++) {
            char path[64];
            ok(cp_tag_path(w.db, m.tags[k], path, sizeof path, &err), &err);
            int found = 0;
            for (size_t q = 0; q < json_array_size(direct); q++)
                found |= strcmp(json_string_value(json_array_get(direct, q)), path) == 0;
            assert_true(found);
        }
        json_decref(j);
        /* ... and the crowds are those of the ordinal */
        uint32_t c2[NCROWDS], t2[NTAGS];
        cp_membership_t m2 = {
            .size = sizeof m2, .crowds = c2, .crowds_cap = NCROWDS, .tags = t2, .tags_cap = NTAGS};
        ok(cp_member_lookup_ord(w.db, m.user, &m2, &err), &err);
        assert_int_equal(m2.ncrowds, m.ncrowds);
        assert_memory_equal(c2, crowds, m.ncrowds * sizeof *c2);
        check_user(&w, m.user, &m2);
    }
    for (int i = 0; i < NTAGS; i++)
        roaring_bitmap_free(w.tag_bm[i]);
    for (int i = 0; i < NCROWDS; i++)
        roaring_bitmap_free(w.crowd_bm[i]);
    cp_db_close(w.db, NULL);
    test_rmtree(g_dir);
}

static void test_contract(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    cp_error_t err = {0};
    ok(cp_tag_create(db, "x", NULL, NULL, &err), &err);
    ok(cp_tag_create(db, "x/y", "某某", NULL, &err), &err);
    const char *u = "{\"id\":\"a\",\"tags\":[\"x/y\"]}";
    ok(cp_user_upsert_json(db, u, strlen(u), &err), &err);
    ok(cp_crowd_create(db, "广州理财", "tag:x", CP_CROWD_DYNAMIC, NULL, &err), &err);
    ok(cp_crowd_create(db, "ys", "tag:x/y", CP_CROWD_STATIC, NULL, &err), &err);
    uint32_t one[1];
    cp_membership_t m = {.size = sizeof m, .crowds = one, .crowds_cap = 1, .tags = NULL};
    /* Too small: the first ids are there and the counts are whole. */
    assert_int_equal(cp_member_lookup(db, "user_id", "a", &m, &err), CP_ELIMIT);
    assert_int_equal(m.ncrowds, 2);
    assert_int_equal(m.ntags, 2);
    char name[64];
    ok(cp_crowd_name(db, one[0], name, sizeof name, &err), &err);
    assert_string_equal(name, "广州理财");
    assert_int_equal(cp_crowd_name(db, one[0], name, 4, NULL), CP_ELIMIT);
    assert_int_equal(cp_crowd_name(db, 999, name, sizeof name, NULL), CP_ENOTFOUND);
    assert_int_equal(cp_tag_path(db, 999, name, sizeof name, NULL), CP_ENOTFOUND);
    /* Only what is asked for. */
    uint32_t two[2];
    m.flags = CP_MEMBER_NO_TAGS;
    m.crowds = two;
    m.crowds_cap = 2;
    ok(cp_member_lookup(db, "user_id", "a", &m, &err), &err);
    assert_int_equal(m.ncrowds, 2);
    assert_int_equal(m.ntags, 0);
    m.flags = CP_MEMBER_NO_CROWDS | CP_MEMBER_NO_TAGS;
    m.crowds_cap = 0;
    ok(cp_member_lookup_ord(db, m.user, &m, &err), &err);
    assert_int_equal(m.ncrowds + m.ntags, 0);
    /* Errors. */
    m.size = 8;
    assert_int_equal(cp_member_lookup_ord(db, 0, &m, NULL), CP_EINVAL);
    m.size = sizeof m;
    m.flags = 0;
    m.tags_cap = 3; /* with tags NULL */
    assert_int_equal(cp_member_lookup_ord(db, 0, &m, NULL), CP_EINVAL);
    m.tags_cap = 0;
    assert_int_equal(cp_member_lookup(db, "user_id", "nobody", &m, &err), CP_ENOTFOUND);
    assert_int_equal(cp_member_lookup_ord(db, 12345, &m, NULL), CP_ENOTFOUND);
    /* A write is seen by the next lookup (the directory follows the index). */
    const char *xy[1] = {"x/y"};
    ok(cp_user_remove_tags(db, "a", xy, 1, &err), &err);
    m.flags = 0;
    m.crowds_cap = 2;
    ok(cp_member_lookup(db, "user_id", "a", &m, &err), &err);
    assert_int_equal(m.ntags, 0);
    assert_int_equal(m.ncrowds, 1); /* the static crowd keeps its members */
    uint32_t ys = 0;
    ok(cp_crowd_id(db, "ys", &ys, &err), &err);
    assert_int_equal(two[0], ys);
    uint32_t ord = 0;
    ok(cp_user_ordinal(db, "user_id", "a", &ord, &err), &err);
    ok(cp_user_delete(db, "a", &err), &err);
    assert_int_equal(cp_member_lookup_ord(db, ord, &m, NULL), CP_ENOTFOUND);
    assert_int_equal(cp_user_ordinal(db, "user_id", "a", &ord, NULL), CP_ENOTFOUND);
    cp_db_close(db, NULL);
    test_rmtree(g_dir);
}

/* ------------------------------------------------ lists follow every write */

#define P_ROOTS 4
#define P_SUBS 5
#define P_USERS 40
#define P_CROWDS 10
#define P_MAX 256

static const char *P_ROOT[P_ROOTS] = {"a", "e", "g", "兴趣"};
static const char *P_SUB[P_SUBS] = {"", "/b", "/c", "/b/d", "/美妆"};

static void rand_path(uint64_t *rng, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s", P_ROOT[rand_next(rng) % P_ROOTS], P_SUB[rand_next(rng) % P_SUBS]);
}

/* The reference: a probe of every crowd and every tag's bitmap, as the
 * lookup answered before it had lists. Read lock held. */
static void naive(const index_t *ix, uint32_t ord, int direct, uint32_t *c, size_t *nc, uint32_t *t,
                  size_t *nt)
{
    *nc = *nt = 0;
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowds[i] && roaring_bitmap_contains(ix->crowds[i], ord) && *nc < P_MAX)
            c[(*nc)++] = i;
    for (uint32_t i = 1; i < ix->ntags; i++) {
        const idx_tag_t *g = &ix->tags[i];
        const roaring_bitmap_t *bm = direct ? g->direct : g->eff;
        if (g->direct && bm && roaring_bitmap_contains(bm, ord) && *nt < P_MAX)
            t[(*nt)++] = i;
    }
}

/* Every live user's lookup equals the reference; returns how many users
 * had at least one crowd or tag (so the test knows it tested something). */
static size_t check_all_as(cp_db_t *db, const char *when, int want_ready)
{
    cp_error_t err = {0};
    size_t busy = 0;
    /* The checkpointer may re-evaluate crowds: hold the lock across the
     * reference and the lookups (a shared lock taken twice by one thread
     * is fine with the default, reader-preferring rwlock). */
    ok(db_read_begin_mem(db, &err), &err);
    const index_t *ix = db->ix;
    if (member_list_ready(ix) != want_ready)
        fail_msg("%s: the membership lists are %sready", when, want_ready ? "not " : "");
    roaring_uint32_iterator_t it;
    roaring_init_iterator(ix->universe, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        uint32_t ord = it.current_value;
        for (int direct = 0; direct < 2; direct++) {
            uint32_t rc_[P_MAX], rt[P_MAX], lc[P_MAX], lt[P_MAX];
            size_t nc = 0, nt = 0;
            naive(ix, ord, direct, rc_, &nc, rt, &nt);
            cp_membership_t m = {.size = sizeof m,
                                 .flags = direct ? CP_MEMBER_DIRECT_TAGS : 0,
                                 .crowds = lc,
                                 .crowds_cap = P_MAX,
                                 .tags = lt,
                                 .tags_cap = P_MAX};
            cp_status rc = cp_member_lookup_ord(db, ord, &m, &err);
            if (rc)
                fail_msg("%s: user %u: %s: %s", when, ord, cp_strerror(rc), err.message);
            if (m.ncrowds != nc || m.ntags != nt || memcmp(lc, rc_, nc * sizeof *lc) ||
                memcmp(lt, rt, nt * sizeof *lt))
                fail_msg("%s: user %u (direct %d): lookup %zu crowds %zu tags, the sets say %zu "
                         "and %zu (or the ids differ)",
                         when, ord, direct, m.ncrowds, m.ntags, nc, nt);
            busy += direct == 0 && nc + nt > 0;
        }
    }
    db_read_end(db);
    return busy;
}

static size_t check_all(cp_db_t *db, const char *when)
{
    return check_all_as(db, when, 1);
}

static void expr_of(uint64_t *rng, char *buf, size_t cap)
{
    char a[64], b[64];
    rand_path(rng, a, sizeof a);
    rand_path(rng, b, sizeof b);
    switch (rand_next(rng) % 5) {
    case 0:
        snprintf(buf, cap, "tag:%s", a);
        break;
    case 1:
        snprintf(buf, cap, "tag:%s OR age < %d", a, 20 + (int)(rand_next(rng) % 30));
        break;
    case 2:
        snprintf(buf, cap, "tag:%s AND NOT tag:%s", a, b);
        break;
    case 3:
        snprintf(buf, cap, "did(purchase) OR tag:%s", a);
        break;
    default:
        snprintf(buf, cap, "crowd:p%d OR tag:%s", (int)(rand_next(rng) % P_CROWDS), b);
    }
}

/* One random write. Refusals (an unknown tag or user, a tag a crowd still
 * references, a move into its own subtree ...) are part of the game:
 * only a failed handle is an error. */
static void step(cp_db_t *db, uint64_t *rng, int *kinds)
{
    char buf[600], p[64], q[64];
    cp_error_t err = {0};
    cp_status rc = CP_OK;
    int u = (int)(rand_next(rng) % P_USERS), kind = (int)(rand_next(rng) % 12);
    switch (kind) {
    case 0:
    case 1: { /* a user with tags and an age */
        int n = snprintf(buf, sizeof buf, "{\"id\":\"u%d\",\"attrs\":{\"age\":%d},\"tags\":[", u,
                         15 + (int)(rand_next(rng) % 50));
        for (int k = 0, nt = (int)(rand_next(rng) % 3) + 1; k < nt; k++) {
            rand_path(rng, p, sizeof p);
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s\"", k ? "," : "", p);
        }
        snprintf(buf + n, sizeof buf - (size_t)n, "]}");
        rc = cp_user_upsert_json(db, buf, strlen(buf), &err);
        break;
    }
    case 2: { /* tags taken away */
        rand_path(rng, p, sizeof p);
        const char *paths[1] = {p};
        snprintf(buf, sizeof buf, "u%d", u);
        rc = cp_user_remove_tags(db, buf, paths, 1, &err);
        break;
    }
    case 3: /* a deletion */
        snprintf(buf, sizeof buf, "u%d", u);
        rc = cp_user_delete(db, buf, &err);
        break;
    case 4: /* a tag (and its missing parents) */
        rand_path(rng, p, sizeof p);
        rc = cp_tag_create(db, p, NULL, NULL, &err);
        break;
    case 5: { /* a move: the subtree and its members go under another root */
        rand_path(rng, p, sizeof p);
        const char *leaf = strrchr(p, '/');
        snprintf(q, sizeof q, "%s%s", P_ROOT[rand_next(rng) % P_ROOTS], leaf ? leaf : "/b");
        rc = cp_tag_update(db, p, q, NULL, NULL, &err);
        break;
    }
    case 6: /* a tag deleted, with its subtree */
        rand_path(rng, p, sizeof p);
        rc = cp_tag_delete(db, p, 1, &err);
        break;
    case 7: { /* a crowd, dynamic or static */
        snprintf(q, sizeof q, "p%d", (int)(rand_next(rng) % P_CROWDS));
        expr_of(rng, buf, sizeof buf);
        rc = cp_crowd_create(db, q, buf, rand_next(rng) % 2 ? CP_CROWD_DYNAMIC : CP_CROWD_STATIC,
                             NULL, &err);
        break;
    }
    case 8: /* a refresh */
        snprintf(q, sizeof q, "p%d", (int)(rand_next(rng) % P_CROWDS));
        rc = cp_crowd_refresh(db, q, &err);
        break;
    case 9: /* a crowd deleted */
        snprintf(q, sizeof q, "p%d", (int)(rand_next(rng) % P_CROWDS));
        rc = cp_crowd_delete(db, q, &err);
        break;
    case 10: /* events: an identify merging an anonymous user into u, a purchase */
        snprintf(buf, sizeof buf,
                 "{\"userId\":\"u%d\",\"anonymousId\":\"an%d\",\"traits\":{\"age\":%d}}", u,
                 (int)(rand_next(rng) % 8), 18 + (int)(rand_next(rng) % 40));
        rc = cp_ingest_segment(db, CP_EVENT_IDENTIFY, buf, strlen(buf), NULL, &err);
        if (rc == CP_OK) {
            snprintf(buf, sizeof buf, "{\"anonymousId\":\"an%d\",\"event\":\"purchase\"}",
                     (int)(rand_next(rng) % 8));
            rc = cp_ingest_segment(db, CP_EVENT_TRACK, buf, strlen(buf), NULL, &err);
        }
        break;
    default: /* dynamic crowds catch up with the events */
        rc = cp_checkpoint(db, &err);
    }
    if (rc == CP_EIO || rc == CP_ENOMEM || rc == CP_EINTERNAL)
        fail_msg("write kind %d: %s: %s", kind, cp_strerror(rc), err.message);
    kinds[kind] += rc == CP_OK;
}

static void test_lists_follow_writes(void **state)
{
    (void)state;
    char dir[512];
    test_tmpdir(dir, sizeof dir, "lists");
    cp_open_options_t o = {
        .size = sizeof o, .flags = CP_OPEN_CREATE, .map_size = 1ull << 27, .threads = 1};
    cp_db_t *db = test_open_db(dir, &o);
    cp_error_t err = {0};
    ok(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err);
    uint64_t rng = 0x5eed;
    int kinds[12] = {0};
    char when[64];
    size_t busy = 0;
    for (int i = 0; i < 400; i++) {
        step(db, &rng, kinds);
        snprintf(when, sizeof when, "after step %d", i);
        busy = check_all(db, when);
    }
    /* Every kind of write really happened, and users are in things. */
    for (int k = 0; k < 12; k++)
        if (kinds[k] == 0)
            fail_msg("write kind %d never succeeded: the sequence tests less than it says", k);
    assert_true(busy > 0);
    /* Rebuilt at open: the same answers. */
    ok(cp_db_close(db, &err), &err);
    db = test_open_db(dir, &o);
    assert_int_equal(check_all(db, "after reopening"), busy);
    for (int i = 0; i < 60; i++) {
        step(db, &rng, kinds);
        snprintf(when, sizeof when, "after reopening, step %d", i);
        check_all(db, when);
    }
    /* Lists lost (as when an edit runs out of memory): lookups probe the
     * sets, and the next commit rebuilds the lists. */
    db_lock_wr(db);
    member_list_free(db->ix);
    pthread_rwlock_unlock(&db->lock);
    check_all_as(db, "without lists", 0);
    ok(cp_tag_create(db, "after/repair", NULL, NULL, &err), &err);
    check_all(db, "after the repairing commit");
    ok(cp_db_close(db, &err), &err);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_matches_naive),
        cmocka_unit_test(test_contract),
        cmocka_unit_test(test_lists_follow_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
