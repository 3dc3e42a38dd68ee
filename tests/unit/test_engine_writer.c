/* test_engine_writer.c — the intake writer (src/engine/writer.c) keeps an
 * LMDB transaction open across groups of requests. These tests run senders,
 * readers, checkpoints and other writers at once and check that nothing
 * deadlocks, that a sender reads its own acknowledged write (whois reads
 * LMDB, so the writer must have committed for it), that counts agree with
 * what was sent, and that all of it is there after close and reopen. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"

#include "crowdpack.h"

#define SENDERS 4
#define BATCHES 60
#define PER_BATCH 24 /* even: each user gets two events in one batch */

static char g_dir[256];

static cp_db_t *open_db(void)
{
    return test_open_db(g_dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                    .flags = CP_OPEN_CREATE,
                                                    .map_size = 1ull << 28,
                                                    .threads = 1});
}

typedef struct sender {
    cp_db_t *db;
    int id;
    int failures; /* cmocka's asserts are not thread-safe: count, check later */
    char why[1024];
} sender_t;

static void note(sender_t *s, const char *what, const cp_error_t *err)
{
    if (s->failures++ == 0)
        snprintf(s->why, sizeof s->why, "sender %d: %s: %s", s->id, what, err ? err->message : "");
}

/* Batch b of sender s: users s-(b*PER_BATCH/2 + i/2), so each user gets
 * two events in its first batch and half the users are new per batch. */
static void *send_main(void *arg)
{
    sender_t *s = arg;
    char body[16384];
    for (int b = 0; b < BATCHES; b++) {
        size_t n = (size_t)snprintf(body, sizeof body, "{\"batch\":[");
        for (int i = 0; i < PER_BATCH; i++)
            n += (size_t)snprintf(
                body + n, sizeof body - n,
                "%s{\"type\":\"track\",\"event\":\"buy\",\"userId\":\"s%d-%d\","
                "\"messageId\":\"m%d-%d-%d\",\"timestamp\":\"2024-01-0%dT10:00:00Z\"}",
                i ? "," : "", s->id, b * PER_BATCH / 2 + i / 2, s->id, b, i, 1 + b % 5);
        n += (size_t)snprintf(body + n, sizeof body - n, "]}");
        cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
        cp_error_t err = {0};
        if (cp_ingest_segment(s->db, CP_EVENT_BATCH, body, n, &r, &err) != CP_OK) {
            note(s, "ingest", &err);
            return NULL;
        }
        if (r.applied != PER_BATCH)
            note(s, "applied count", NULL);
        cp_ingest_result_clear(&r);
        /* Read your own write: the user of the last event of this batch. */
        char uid[64], *json = NULL;
        snprintf(uid, sizeof uid, "s%d-%d", s->id, b * PER_BATCH / 2 + (PER_BATCH - 1) / 2);
        if (cp_whois_json(s->db, "user_id", uid, &json, &err) != CP_OK)
            note(s, "whois after ack", &err);
        free(json);
    }
    return NULL;
}

typedef struct side {
    cp_db_t *db;
    volatile int stop;
    int failures, rounds;
    char why[1024];
} side_t;

/* Counts, checkpoints and a tag write (another LMDB writer) meanwhile. */
static void *side_main(void *arg)
{
    side_t *s = arg;
    uint64_t last = 0;
    while (!s->stop) {
        cp_error_t err = {0};
        uint64_t c = 0;
        if (cp_count(s->db, "did(buy) >= 1", &c, &err) != CP_OK) {
            if (s->failures++ == 0)
                snprintf(s->why, sizeof s->why, "count: %s", err.message);
        } else if (c < last) {
            if (s->failures++ == 0)
                snprintf(s->why, sizeof s->why, "count went back from %llu to %llu",
                         (unsigned long long)last, (unsigned long long)c);
        } else {
            last = c;
        }
        if (cp_checkpoint(s->db, &err) != CP_OK && s->failures++ == 0)
            snprintf(s->why, sizeof s->why, "checkpoint: %s", err.message);
        char path[64];
        snprintf(path, sizeof path, "side/t%d", s->rounds);
        if (cp_tag_create(s->db, path, NULL, NULL, &err) != CP_OK && s->failures++ == 0)
            snprintf(s->why, sizeof s->why, "tag create: %s", err.message);
        s->rounds++;
        usleep(2000);
    }
    return NULL;
}

static uint64_t count(cp_db_t *db, const char *expr)
{
    uint64_t c = 0;
    cp_error_t err = {0};
    if (cp_count(db, expr, &c, &err))
        fail_msg("count %s: %s", expr, err.message);
    return c;
}

static void test_senders_readers_checkpoints(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    sender_t s[SENDERS];
    pthread_t t[SENDERS], st;
    side_t side = {.db = db};
    /* One event first, so "buy" is a known event for the side's counts. */
    const char *seed = "{\"type\":\"track\",\"event\":\"buy\",\"userId\":\"seed\","
                       "\"timestamp\":\"2024-01-01T00:00:00Z\"}";
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    cp_error_t e0 = {0};
    if (cp_ingest_segment(db, CP_EVENT_TRACK, seed, strlen(seed), &r, &e0))
        fail_msg("seed: %s", e0.message);
    cp_ingest_result_clear(&r);
    assert_int_equal(pthread_create(&st, NULL, side_main, &side), 0);
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (sender_t){.db = db, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, send_main, &s[i]), 0);
    }
    for (int i = 0; i < SENDERS; i++) {
        pthread_join(t[i], NULL);
        if (s[i].failures)
            fail_msg("%s (%d failures)", s[i].why, s[i].failures);
    }
    side.stop = 1;
    pthread_join(st, NULL);
    if (side.failures)
        fail_msg("%s", side.why);
    assert_true(side.rounds > 0);
    /* Each sender: BATCHES * PER_BATCH / 2 users, two events each. */
    uint64_t users = (uint64_t)SENDERS * BATCHES * PER_BATCH / 2;
    assert_int_equal(count(db, "did(buy) >= 1"), users + 1);
    assert_int_equal(count(db, "did(buy) = 2"), users);
    cp_db_close(db, NULL);
    db = open_db();
    assert_int_equal(count(db, "did(buy) = 2"), users);
    char *json = NULL;
    cp_error_t err = {0};
    assert_int_equal(cp_whois_json(db, "user_id", "s3-0", &json, &err), CP_OK);
    free(json);
    cp_db_close(db, NULL);
}

/* Close right after acknowledged writes (the writer holds an open
 * transaction): close commits it; nothing is replayed or lost. */
static void test_close_with_open_transaction(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    const char *body = "{\"batch\":[{\"type\":\"track\",\"event\":\"open\",\"userId\":\"close-1\","
                       "\"timestamp\":\"2024-02-01T00:00:00Z\"}]}";
    for (int i = 0; i < 3; i++) {
        cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
        cp_error_t err = {0};
        char b[512];
        snprintf(b, sizeof b, "%.*s,\"messageId\":\"c%d\"}]}", (int)(strlen(body) - 3), body, i);
        if (cp_ingest_segment(db, CP_EVENT_BATCH, b, strlen(b), &r, &err))
            fail_msg("ingest: %s", err.message);
        cp_ingest_result_clear(&r);
    }
    cp_db_close(db, NULL);
    db = open_db();
    assert_int_equal(count(db, "did(open) = 3"), 1);
    cp_db_close(db, NULL);
}

static int setup(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "writer");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_rmtree(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_senders_readers_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_open_transaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
