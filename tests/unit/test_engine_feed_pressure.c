/*
 * test_engine_feed_pressure.c — the change feed under load:
 * - back-pressure on bulk imports: with a slow subscriber, cp_import_file's
 *   batch commits wait like every other write, so the commits held by the
 *   feed stay within its limit (lowered here with feed_set_limits, as 1,024
 *   commits would take too long) instead of growing with every batch;
 * - concurrent writers (user upserts, Segment events, crowd refreshes on
 *   three threads) and two subscribers: each subscriber sees every commit
 *   exactly once and in order (seq 1, 2, ... without gaps), and replaying
 *   the entered/left users gives the engine's final members of every tag
 *   and crowd.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <roaring/roaring.h>

#include "cp_test.h"
#include "engine/feed.h"

/* cp_result_t's layout (src/engine): the test compares ordinals. */
struct cp_result {
    roaring_bitmap_t *bm;
};

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err ? err->message : "");
}

static cp_db_t *open_in(const char *dir)
{
    cp_open_options_t o = {
        .size = sizeof o, .flags = CP_OPEN_CREATE, .map_size = 1ull << 27, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    ok(cp_db_open(dir, &o, &db, &err), &err);
    return db;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* ------------------------------------------------ import back-pressure */

typedef struct slow {
    uint64_t commits;
    long ms;
} slow_t;

static void on_slow(void *ctx, const cp_commit_info_t *c)
{
    (void)c;
    slow_t *s = ctx;
    s->commits++;
    sleep_ms(s->ms);
}

#define IMPORT_LINES 240
#define IMPORT_BATCH 6 /* 40 batches, 40 commits */
#define FEED_LIMIT 3

static void test_import_waits_for_a_slow_feed(void **state)
{
    (void)state;
    char dir[512], path[600];
    test_tmpdir(dir, sizeof dir, "pressure");
    snprintf(path, sizeof path, "%s/events.ndjson", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < IMPORT_LINES; i++)
        fprintf(fp,
                "{\"type\":\"track\",\"userId\":\"u%d\",\"event\":\"buy\",\"messageId\":\"m%d\","
                "\"timestamp\":\"2024-03-01T00:00:00Z\"}\n",
                i % 50, i);
    fclose(fp);
    char dbdir[600];
    snprintf(dbdir, sizeof dbdir, "%s/db", dir);
    cp_db_t *db = open_in(dbdir);
    cp_error_t err = {0};
    slow_t s = {.ms = 25};
    ok(cp_db_subscribe(db, on_slow, &s, CP_FEED_ALL, NULL, &err), &err);
    feed_set_limits(db, FEED_LIMIT, 0);
    cp_import_options_t o = CP_IMPORT_OPTIONS_INIT;
    o.format = CP_IMPORT_NDJSON;
    o.batch_lines = IMPORT_BATCH;
    cp_import_stats_t st = CP_IMPORT_STATS_INIT;
    ok(cp_import_file(db, path, &o, &st, &err), &err);
    assert_int_equal(st.events, IMPORT_LINES);
    feed_backlog_t b;
    feed_backlog(db, &b);
    /* A writer waits while more than the limit waits, so at most the limit
     * plus its own commit is ever queued. Without the wait the queue grows
     * by a batch every fsync, far faster than 25 ms a commit. */
    if (b.peak_queued > FEED_LIMIT + 1)
        fail_msg("the feed held %zu commits (limit %d): the import did not wait", b.peak_queued,
                 FEED_LIMIT);
    ok(cp_feed_flush(db, &err), &err);
    feed_backlog(db, &b);
    assert_int_equal(b.queued, 0);
    assert_true(s.commits >= IMPORT_LINES / IMPORT_BATCH);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

/* ------------------------------------------ concurrent writers, two feeds */

#define NTAGS 3
#define NCROWDS 3
#define MAXORD 2048
#define ROUNDS 60

static const char *TAGS[NTAGS] = {"t", "t/x", "s"};
static const char *CROWDS[NCROWDS] = {"young", "tx", "snap"};
static const char *CROWD_EXPR[NCROWDS] = {"age < 30", "tag:t/x OR age >= 60", "tag:s"};
static const cp_crowd_kind CROWD_KIND[NCROWDS] = {CP_CROWD_DYNAMIC, CP_CROWD_DYNAMIC,
                                                  CP_CROWD_STATIC};

typedef struct replay {
    uint32_t tag_id[NTAGS], crowd_id[NCROWDS];
    uint8_t tag[NTAGS][MAXORD], crowd[NCROWDS][MAXORD];
    uint64_t first_seq, last_seq, commits;
    int bad; /* cmocka cannot fail on the feed thread */
    char why[200];
} replay_t;

static void replay_bad(replay_t *r, const char *fmt, ...)
{
    if (r->bad++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

static void on_replay(void *ctx, const cp_commit_info_t *c)
{
    replay_t *r = ctx;
    if (r->first_seq == 0)
        r->first_seq = c->seq;
    else if (c->seq != r->last_seq + 1)
        replay_bad(r, "commit %llu after %llu", (unsigned long long)c->seq,
                   (unsigned long long)r->last_seq);
    r->last_seq = c->seq;
    r->commits++;
    if (c->incomplete)
        replay_bad(r, "commit %llu incomplete", (unsigned long long)c->seq);
    for (size_t i = 0; i < c->nchanges; i++) {
        const cp_change_t *ch = &c->changes[i];
        uint8_t *s = NULL;
        for (int k = 0; k < NTAGS; k++)
            if (ch->kind == CP_CHANGE_TAG && ch->id == r->tag_id[k])
                s = r->tag[k];
        for (int k = 0; k < NCROWDS; k++)
            if (ch->kind == CP_CHANGE_CROWD && ch->id == r->crowd_id[k])
                s = r->crowd[k];
        if (s == NULL)
            continue; /* made before the ids were known: checked at the end */
        for (size_t k = 0; k < ch->nentered; k++)
            if (ch->entered[k] >= MAXORD || s[ch->entered[k]]++)
                replay_bad(r, "user %u entered %u twice", ch->entered[k], ch->id);
        for (size_t k = 0; k < ch->nleft; k++)
            if (ch->left[k] >= MAXORD || s[ch->left[k]]-- != 1)
                replay_bad(r, "user %u left %u without being in it", ch->left[k], ch->id);
    }
}

typedef struct writer {
    cp_db_t *db;
    int kind; /* 0 upserts, 1 Segment events, 2 crowd refreshes */
    uint64_t rng;
    cp_status rc;
    char why[700];
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    cp_error_t err = {0};
    char buf[400];
    for (int i = 0; i < ROUNDS && w->rc == CP_OK; i++) {
        unsigned u = (unsigned)(rand_next(&w->rng) % 300);
        int age = 10 + (int)(rand_next(&w->rng) % 70);
        if (w->kind == 0) {
            snprintf(buf, sizeof buf, "{\"id\":\"u%u\",\"attrs\":{\"age\":%d},\"tags\":[\"%s\"]}",
                     u, age, TAGS[rand_next(&w->rng) % NTAGS]);
            w->rc = cp_user_upsert_json(w->db, buf, strlen(buf), &err);
        } else if (w->kind == 1) {
            snprintf(buf, sizeof buf,
                     "{\"type\":\"identify\",\"userId\":\"u%u\",\"messageId\":\"w%d\","
                     "\"timestamp\":\"2024-03-01T00:00:00Z\",\"traits\":{\"age\":%d}}",
                     u, i, age);
            cp_ingest_result_t res = CP_INGEST_RESULT_INIT;
            w->rc = cp_ingest_segment(w->db, CP_EVENT_IDENTIFY, buf, strlen(buf), &res, &err);
            cp_ingest_result_clear(&res);
        } else {
            w->rc = cp_crowd_refresh(w->db, CROWDS[rand_next(&w->rng) % NCROWDS], &err);
            sleep_ms(2);
        }
    }
    if (w->rc)
        snprintf(w->why, sizeof w->why, "writer %d: %s: %s", w->kind, cp_strerror(w->rc),
                 err.message);
    return NULL;
}

static void check_replay(cp_db_t *db, const replay_t *r, const char *who)
{
    if (r->bad)
        fail_msg("%s: %s", who, r->why);
    char expr[64];
    cp_error_t err = {0};
    for (int k = 0; k < NTAGS + NCROWDS; k++) {
        if (k < NTAGS)
            snprintf(expr, sizeof expr, "tag:%s", TAGS[k]);
        else
            snprintf(expr, sizeof expr, "crowd:%s", CROWDS[k - NTAGS]);
        const uint8_t *s = k < NTAGS ? r->tag[k] : r->crowd[k - NTAGS];
        cp_result_t *res = NULL;
        ok(cp_eval(db, expr, &res, &err), &err);
        for (uint32_t u = 0; u < MAXORD; u++)
            if ((s[u] != 0) != roaring_bitmap_contains(res->bm, u))
                fail_msg("%s: %s: user %u is %s the engine's members but %s the replay", who, expr,
                         u, s[u] ? "not in" : "in", s[u] ? "in" : "not in");
        cp_result_free(res);
    }
}

static void test_concurrent_writers_two_subscribers(void **state)
{
    (void)state;
    char dir[512];
    test_tmpdir(dir, sizeof dir, "concurrent");
    cp_db_t *db = open_in(dir);
    cp_error_t err = {0};
    static replay_t r[2];
    memset(r, 0, sizeof r);
    ok(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err);
    for (int i = 0; i < NTAGS; i++) {
        int32_t h = 0;
        ok(cp_tag_create(db, TAGS[i], NULL, NULL, &err), &err);
        ok(cp_tag_handle(db, TAGS[i], &h, &err), &err);
        r[0].tag_id[i] = r[1].tag_id[i] = (uint32_t)h;
    }
    for (int i = 0; i < NCROWDS; i++) {
        ok(cp_crowd_create(db, CROWDS[i], CROWD_EXPR[i], CROWD_KIND[i], NULL, &err), &err);
        ok(cp_crowd_id(db, CROWDS[i], &r[0].crowd_id[i], &err), &err);
        r[1].crowd_id[i] = r[0].crowd_id[i];
    }
    /* Every set is empty so far (no users): the replays start empty. */
    ok(cp_db_subscribe(db, on_replay, &r[0], CP_FEED_ALL, NULL, &err), &err);
    ok(cp_db_subscribe(db, on_replay, &r[1], CP_FEED_CROWDS | CP_FEED_TAGS, NULL, &err), &err);
    feed_set_limits(db, 4, 0); /* writers also meet back-pressure */
    writer_t w[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (writer_t){.db = db, .kind = i, .rng = 0x5eed + (uint64_t)i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 3; i++)
        if (w[i].rc)
            fail_msg("%s", w[i].why);
    ok(cp_checkpoint(db, &err), &err); /* events applied, dynamic crowds follow */
    ok(cp_feed_flush(db, &err), &err);
    assert_true(r[0].commits > ROUNDS);
    assert_int_equal(r[0].commits, r[1].commits);
    assert_int_equal(r[0].first_seq, r[1].first_seq);
    assert_int_equal(r[0].last_seq, r[1].last_seq);
    assert_int_equal(r[0].last_seq - r[0].first_seq + 1, r[0].commits);
    check_replay(db, &r[0], "subscriber 1");
    check_replay(db, &r[1], "subscriber 2");
    feed_backlog_t b;
    feed_backlog(db, &b);
    /* The limit plus one commit of each thread that may commit at once:
     * the three writers, the intake writer and the checkpointer. */
    assert_true(b.peak_queued <= 4 + 5);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_waits_for_a_slow_feed),
        cmocka_unit_test(test_concurrent_writers_two_subscribers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
