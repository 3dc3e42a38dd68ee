/*
 * test_engine_feed.c — the change feed (cp_db_subscribe) against a naive
 * reference: a subscriber applies every commit's entered/left users to
 * its own copy of each tag's and crowd's members, and after random writes
 * (users upserted, tags removed, users deleted, events, identity merges,
 * static crowd refreshes, tag moves) that copy must equal the members
 * counted by the engine (cp_eval of tag:PATH and crowd:NAME). Also: commit
 * order without gaps, events reported with their user, callbacks that read
 * and unsubscribe, and nothing delivered after unsubscribing.
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
#include <roaring/roaring.h>

#include "cp_test.h"
#include "crowdpack.h"
#include "util/util.h"

/* cp_result_t's layout (src/engine): the test compares ordinals. */
struct cp_result {
    roaring_bitmap_t *bm;
};

#define NTAGS 6
#define NCROWDS 4
#define MAXORD 4096

static const char *TAGS[NTAGS] = {"a", "a/b", "a/c", "a/b/d", "e", "e/f"};
static const char *CROWDS[NCROWDS] = {"young", "ab", "st", "nested"};
static const char *CROWD_EXPR[NCROWDS] = {"age < 30", "tag:a/b OR tag:e/f", "tag:a AND age >= 20",
                                          "crowd:young AND NOT tag:e"};
static const cp_crowd_kind CROWD_KIND[NCROWDS] = {CP_CROWD_DYNAMIC, CP_CROWD_DYNAMIC,
                                                  CP_CROWD_STATIC, CP_CROWD_DYNAMIC};

typedef struct model {
    cp_db_t *db;
    uint32_t tag_id[NTAGS], crowd_id[NCROWDS];
    uint8_t tag[NTAGS][MAXORD], crowd[NCROWDS][MAXORD];
    uint64_t last_seq, commits, events, tracks;
    int bad; /* a check failed inside the callback (cmocka asserts there would longjmp
                across the feed thread) */
    char why[256];
} model_t;

static char g_dir[256];

static cp_db_t *open_db(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "feed");
    cp_open_options_t o = {
        .size = sizeof o, .flags = CP_OPEN_CREATE, .map_size = 1ull << 27, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    if (cp_db_open(g_dir, &o, &db, &err))
        fail_msg("open %s: %s", g_dir, err.message);
    return db;
}

static void close_db(cp_db_t *db)
{
    cp_db_close(db, NULL);
    test_rmtree(g_dir);
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err ? err->message : "");
}

static void bad(model_t *m, const char *fmt, ...)
{
    if (m->bad)
        return;
    m->bad = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->why, sizeof m->why, fmt, ap);
    va_end(ap);
}

static uint8_t *set_of(model_t *m, const cp_change_t *c)
{
    for (int i = 0; i < NTAGS; i++)
        if (c->kind == CP_CHANGE_TAG && c->id == m->tag_id[i])
            return m->tag[i];
    for (int i = 0; i < NCROWDS; i++)
        if (c->kind == CP_CHANGE_CROWD && c->id == m->crowd_id[i])
            return m->crowd[i];
    return NULL;
}

static void on_commit(void *ctx, const cp_commit_info_t *c)
{
    model_t *m = ctx;
    if (m->last_seq && c->seq != m->last_seq + 1)
        bad(m, "commit %llu after %llu", (unsigned long long)c->seq,
            (unsigned long long)m->last_seq);
    m->last_seq = c->seq;
    m->commits++;
    if (c->incomplete)
        bad(m, "commit %llu incomplete", (unsigned long long)c->seq);
    for (size_t i = 0; i < c->nchanges; i++) {
        const cp_change_t *ch = &c->changes[i];
        if (i && ch->kind < c->changes[i - 1].kind)
            bad(m, "crowds must come before tags");
        uint8_t *s = set_of(m, ch);
        if (s == NULL) {
            bad(m, "change of unknown %s %u", ch->kind == CP_CHANGE_TAG ? "tag" : "crowd", ch->id);
            continue;
        }
        if (ch->name == NULL)
            bad(m, "change of %u without a name", ch->id);
        for (size_t k = 0; k < ch->nentered; k++) {
            uint32_t u = ch->entered[k];
            if (u >= MAXORD || s[u] || (k && u <= ch->entered[k - 1]))
                bad(m, "%s: user %u entered twice or out of order", ch->name, u);
            else
                s[u] = 1;
        }
        for (size_t k = 0; k < ch->nleft; k++) {
            uint32_t u = ch->left[k];
            if (u >= MAXORD || !s[u] || (k && u <= ch->left[k - 1]))
                bad(m, "%s: user %u left without being in it", ch->name, u);
            else
                s[u] = 0;
        }
    }
    for (size_t i = 0; i < c->nevents; i++) {
        m->events++;
        if (c->events[i].type == CP_EVENT_TRACK) {
            m->tracks++;
            if (c->events[i].name == NULL || strcmp(c->events[i].name, "buy") != 0)
                bad(m, "a track event without its name");
        }
        if (c->events[i].time_ms <= 0)
            bad(m, "an event without its time");
    }
    /* Read APIs work from a callback: the handle's lock is not held. */
    uint64_t n = 0;
    cp_error_t e = {0};
    if (cp_count(m->db, "all", &n, &e) != CP_OK)
        bad(m, "cp_count from a callback: %s", e.message);
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

/* The model equals the engine's members of every tag and crowd. */
static void check_model(model_t *m, const char *after)
{
    cp_error_t err = {0};
    ok(cp_checkpoint(m->db, &err), &err); /* dynamic crowds follow events */
    ok(cp_feed_flush(m->db, &err), &err);
    if (m->bad)
        fail_msg("after %s: %s", after, m->why);
    char expr[160];
    for (int k = 0; k < NTAGS + NCROWDS; k++) {
        if (k < NTAGS)
            snprintf(expr, sizeof expr, "tag:%s", TAGS[k]);
        else
            snprintf(expr, sizeof expr, "crowd:%s", CROWDS[k - NTAGS]);
        const uint8_t *s = k < NTAGS ? m->tag[k] : m->crowd[k - NTAGS];
        roaring_bitmap_t *bm = members(m->db, expr);
        for (uint32_t u = 0; u < MAXORD; u++)
            if (s[u] != roaring_bitmap_contains(bm, u))
                fail_msg("after %s: %s: user %u is %s the engine's members but %s the feed's",
                         after, expr, u, s[u] ? "not in" : "in", s[u] ? "in" : "not in");
        roaring_bitmap_free(bm);
    }
}

static void model_init(model_t *m)
{
    for (int k = 0; k < NTAGS + NCROWDS; k++) {
        char expr[160];
        if (k < NTAGS)
            snprintf(expr, sizeof expr, "tag:%s", TAGS[k]);
        else
            snprintf(expr, sizeof expr, "crowd:%s", CROWDS[k - NTAGS]);
        uint8_t *s = k < NTAGS ? m->tag[k] : m->crowd[k - NTAGS];
        roaring_bitmap_t *bm = members(m->db, expr);
        for (uint32_t u = 0; u < MAXORD; u++)
            s[u] = roaring_bitmap_contains(bm, u);
        roaring_bitmap_free(bm);
    }
}

static void setup_world(model_t *m)
{
    cp_db_t *db = m->db;
    cp_error_t err = {0};
    ok(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err);
    for (int i = 0; i < NTAGS; i++) {
        ok(cp_tag_create(db, TAGS[i], NULL, NULL, &err), &err);
        int32_t h = 0;
        ok(cp_tag_handle(db, TAGS[i], &h, &err), &err);
        m->tag_id[i] = (uint32_t)h;
    }
    for (int i = 0; i < 20; i++) {
        char buf[200];
        snprintf(buf, sizeof buf, "{\"id\":\"u%d\",\"attrs\":{\"age\":%d},\"tags\":[\"%s\"]}", i,
                 15 + i * 2, TAGS[i % NTAGS]);
        ok(cp_user_upsert_json(db, buf, strlen(buf), &err), &err);
    }
    for (int i = 0; i < NCROWDS; i++) {
        ok(cp_crowd_create(db, CROWDS[i], CROWD_EXPR[i], CROWD_KIND[i], NULL, &err), &err);
        ok(cp_crowd_id(db, CROWDS[i], &m->crowd_id[i], &err), &err);
    }
}

/* One random write; its name into what. */
static void random_write(model_t *m, uint64_t *rng, char *what, size_t cap)
{
    cp_db_t *db = m->db;
    cp_error_t err = {0};
    char buf[400];
    int k = (int)(rand_next(rng) % 60);
    int op = (int)(rand_next(rng) % 9);
    cp_status rc = CP_OK;
    switch (op) {
    case 0:
    case 1: /* a user with an age and one or two tags */
        snprintf(buf, sizeof buf,
                 "{\"id\":\"u%d\",\"attrs\":{\"age\":%d},\"tags\":[\"%s\",\"%s\"]}", k,
                 15 + (int)(rand_next(rng) % 40), TAGS[rand_next(rng) % NTAGS],
                 TAGS[rand_next(rng) % NTAGS]);
        snprintf(what, cap, "upsert %s", buf);
        rc = cp_user_upsert_json(db, buf, strlen(buf), &err);
        break;
    case 2: { /* tags removed (with the tags below them) */
        const char *p[1] = {TAGS[rand_next(rng) % NTAGS]};
        snprintf(buf, sizeof buf, "u%d", k);
        snprintf(what, cap, "remove tag %s from %s", p[0], buf);
        rc = cp_user_remove_tags(db, buf, p, 1, &err);
        break;
    }
    case 3: /* a user deleted */
        snprintf(buf, sizeof buf, "u%d", k);
        snprintf(what, cap, "delete %s", buf);
        rc = cp_user_delete(db, buf, &err);
        break;
    case 4: /* an event user with traits */
        snprintf(buf, sizeof buf,
                 "{\"userId\":\"m%d\",\"traits\":{\"age\":%d},\"timestamp\":"
                 "\"2026-11-0%dT10:00:00Z\"}",
                 k, 15 + (int)(rand_next(rng) % 40), 1 + (int)(rand_next(rng) % 9));
        snprintf(what, cap, "identify %s", buf);
        rc = cp_ingest_segment(db, CP_EVENT_IDENTIFY, buf, strlen(buf), NULL, &err);
        break;
    case 5: /* a merge: an anonymous id met with a user id */
        snprintf(buf, sizeof buf,
                 "{\"userId\":\"m%d\",\"anonymousId\":\"an%d\",\"traits\":{\"age\":%d}}", k,
                 (int)(rand_next(rng) % 30), 15 + (int)(rand_next(rng) % 40));
        snprintf(what, cap, "merge %s", buf);
        rc = cp_ingest_segment(db, CP_EVENT_IDENTIFY, buf, strlen(buf), NULL, &err);
        break;
    case 6:
        snprintf(buf, sizeof buf, "{\"anonymousId\":\"an%d\",\"event\":\"buy\"}",
                 (int)(rand_next(rng) % 30));
        snprintf(what, cap, "track %s", buf);
        rc = cp_ingest_segment(db, CP_EVENT_TRACK, buf, strlen(buf), NULL, &err);
        break;
    case 7:
        snprintf(what, cap, "refresh st");
        rc = cp_crowd_refresh(db, "st", &err);
        break;
    default: /* a tag moved and back: members follow their tag */
        snprintf(what, cap, "move a/b/d under a/c and back");
        rc = cp_tag_update(db, "a/b/d", "a/c/d", NULL, NULL, &err);
        if (rc == CP_OK)
            rc = cp_tag_update(db, "a/c/d", "a/b/d", NULL, NULL, &err);
        break;
    }
    if (rc != CP_OK && rc != CP_ENOTFOUND)
        fail_msg("%s: %s", what, err.message);
}

static void test_feed_matches_members(void **state)
{
    (void)state;
    model_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->db = open_db();
    setup_world(m);
    cp_error_t err = {0};
    uint64_t id = 0;
    ok(cp_db_subscribe(m->db, on_commit, m, 0, &id, &err), &err);
    model_init(m);
    uint64_t rng = 0x5eed;
    char what[512];
    for (int round = 0; round < 250; round++) {
        random_write(m, &rng, what, sizeof what);
        if (round % 5 == 0 || round > 240)
            check_model(m, what);
    }
    check_model(m, "the last write");
    assert_true(m->commits > 50);
    assert_true(m->events > 20);
    assert_true(m->tracks > 0);
    /* Unsubscribed: nothing more arrives. */
    ok(cp_db_unsubscribe(m->db, id, &err), &err);
    uint64_t before = m->commits;
    const char *late = "{\"id\":\"late\",\"tags\":[\"a\"]}";
    ok(cp_user_upsert_json(m->db, late, strlen(late), &err), &err);
    ok(cp_feed_flush(m->db, &err), &err);
    assert_int_equal(m->commits, before);
    assert_int_equal(cp_db_unsubscribe(m->db, id, NULL), CP_ENOTFOUND);
    close_db(m->db);
    free(m);
}

/* Events: each one reported once, with the ordinal of its user. */
typedef struct evs {
    cp_db_t *db;
    uint32_t users[64];
    size_t n;
    int kinds; /* CP_FEED_* seen */
} evs_t;

static void on_events(void *ctx, const cp_commit_info_t *c)
{
    evs_t *e = ctx;
    for (size_t i = 0; i < c->nevents && e->n < 64; i++)
        e->users[e->n++] = c->events[i].user;
    if (c->nchanges)
        e->kinds |= CP_FEED_TAGS;
}

static void test_events_only(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    cp_error_t err = {0};
    evs_t e = {.db = db};
    ok(cp_tag_create(db, "x", NULL, NULL, &err), &err);
    ok(cp_db_subscribe(db, on_events, &e, CP_FEED_EVENTS, NULL, &err), &err);
    const char *b = "{\"batch\":[{\"type\":\"track\",\"userId\":\"p1\",\"event\":\"view\"},"
                    "{\"type\":\"track\",\"userId\":\"p2\",\"event\":\"view\"},"
                    "{\"type\":\"identify\",\"userId\":\"p1\"}]}";
    ok(cp_ingest_segment(db, CP_EVENT_BATCH, b, strlen(b), NULL, &err), &err);
    const char *q = "{\"id\":\"q\",\"tags\":[\"x\"]}";
    ok(cp_user_upsert_json(db, q, strlen(q), &err), &err);
    ok(cp_feed_flush(db, &err), &err);
    assert_int_equal(e.n, 3);
    uint32_t p1 = 0, p2 = 0;
    ok(cp_user_ordinal(db, "user_id", "p1", &p1, &err), &err);
    ok(cp_user_ordinal(db, "user_id", "p2", &p2, &err), &err);
    assert_int_equal(e.users[0], p1);
    assert_int_equal(e.users[1], p2);
    assert_int_equal(e.users[2], p1);
    assert_int_equal(e.kinds, 0); /* tag changes were not asked for */
    close_db(db);
}

/* A callback may unsubscribe itself and write; writes from it do not wait
 * for the feed (which would be itself). */
typedef struct selfish {
    cp_db_t *db;
    uint64_t id;
    int calls, wrote;
} selfish_t;

static void on_self(void *ctx, const cp_commit_info_t *c)
{
    (void)c;
    selfish_t *s = ctx;
    s->calls++;
    if (!s->wrote) {
        s->wrote = 1;
        (void)cp_user_upsert_json(s->db, "{\"id\":\"from-callback\"}", 22, NULL);
        (void)cp_db_unsubscribe(s->db, s->id, NULL);
    }
    cp_error_t e = {0};
    if (cp_feed_flush(s->db, &e) != CP_ECONFLICT)
        s->calls += 1000;
}

static void test_callback_writes_and_unsubscribes(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    cp_error_t err = {0};
    selfish_t s = {.db = db};
    ok(cp_db_subscribe(db, on_self, &s, 0, &s.id, &err), &err);
    ok(cp_user_upsert_json(db, "{\"id\":\"one\"}", 12, &err), &err);
    ok(cp_feed_flush(db, &err), &err);
    ok(cp_user_upsert_json(db, "{\"id\":\"two\"}", 12, &err), &err);
    ok(cp_feed_flush(db, &err), &err);
    assert_int_equal(s.calls, 1);
    uint32_t o = 0;
    ok(cp_user_ordinal(db, "user_id", "from-callback", &o, &err), &err);
    assert_int_equal(cp_db_subscribe(db, NULL, NULL, 0, NULL, NULL), CP_EINVAL);
    assert_int_equal(cp_db_subscribe(db, on_self, &s, 1u << 9, NULL, NULL), CP_EINVAL);
    close_db(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feed_matches_members),
        cmocka_unit_test(test_events_only),
        cmocka_unit_test(test_callback_writes_and_unsubscribes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
