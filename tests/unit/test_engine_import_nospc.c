/* test_engine_import_nospc.c — a bulk import on a full disk through the C
 * API: cp_import_file stops with CP_ENOSPC naming the path and the free
 * space, the batches committed before stay, the handle is not failed (reads
 * answer, `check`-style reopen works), and once space returns the same
 * handle resumes the import where it stopped, ending with exactly the
 * events of a reference import. Needs a small tmpfs, so root; skipped with
 * a message otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"

#include "crowdpack.h"

#define EVENTS 40000
#define USERS 15000

static char root[256], mnt[300], data[320], events[320], ref[320];

static int setup(void **state)
{
    (void)state;
    test_tmpfs(root, sizeof root, mnt, sizeof mnt, "import-nospc", "24m");
    if (root[0] != '\0') {
        snprintf(data, sizeof data, "%s/data", mnt);
        snprintf(events, sizeof events, "%s/events.ndjson", root);
        snprintf(ref, sizeof ref, "%s/ref", root);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_tmpfs_free(root, mnt);
    return 0;
}

/* Segment track events with padding, so the import needs ~10 MiB. */
static void write_events(void)
{
    FILE *f = fopen(events, "w");
    assert_non_null(f);
    uint64_t x = 42;
    for (int i = 0; i < EVENTS; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        unsigned u = (unsigned)(x >> 33) % USERS, pad = (unsigned)(x >> 20) % 300;
        fprintf(f,
                "{\"type\":\"track\",\"userId\":\"u%u\",\"event\":\"buy\",\"messageId\":\"m%d\","
                "\"timestamp\":\"2024-06-%02dT10:00:00Z\",\"properties\":{\"sku\":\"s%u\","
                "\"pad\":\"%.*s\"}}\n",
                u, i, 1 + i % 28, (unsigned)(x >> 40) % 4000, (int)pad,
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    }
    assert_int_equal(fclose(f), 0);
}

static void count3(cp_db_t *db, uint64_t *users, uint64_t *thrice)
{
    cp_error_t err = {0};
    assert_int_equal(cp_count(db, "did(buy) >= 1", users, &err), CP_OK);
    assert_int_equal(cp_count(db, "did(buy) >= 3", thrice, &err), CP_OK);
}

static void import_resumes_after_full_disk(void **state)
{
    (void)state;
    if (root[0] == '\0') {
        print_message("test_engine_import_nospc: SKIPPED: mounting a small tmpfs needs root\n");
        skip();
    }
    write_events();
    cp_open_options_t o = {
        .size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE, .threads = 1};
    cp_import_options_t io = {
        .size = sizeof(cp_import_options_t), .format = CP_IMPORT_NDJSON, .batch_lines = 5000};
    cp_import_stats_t s = CP_IMPORT_STATS_INIT;
    cp_error_t err = {0};
    cp_db_t *db = NULL;

    /* The reference, on the roomy disk. */
    uint64_t want_users = 0, want_thrice = 0;
    assert_int_equal(cp_db_open(ref, &o, &db, &err), CP_OK);
    assert_int_equal(cp_import_file(db, events, &io, &s, &err), CP_OK);
    assert_int_equal(s.events, EVENTS);
    count3(db, &want_users, &want_thrice);
    cp_db_close(db, NULL);

    /* Leave ~9 MiB free on the small disk: not enough for the import. */
    assert_int_equal(cp_db_open(data, &o, &db, &err), CP_OK);
    char filler[400];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    FILE *f = fopen(filler, "wb");
    assert_non_null(f);
    static char mb[1 << 20];
    memset(mb, 1, sizeof mb);
    for (int i = 0; i < 14; i++)
        assert_int_equal(fwrite(mb, 1, sizeof mb, f), sizeof mb);
    assert_int_equal(fclose(f), 0);

    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    cp_status rc = cp_import_file(db, events, &io, &s, &err);
    assert_int_equal(rc, CP_ENOSPC);
    assert_non_null(strstr(err.message, mnt));
    assert_non_null(strstr(err.message, "free"));
    uint64_t committed = s.events;
    assert_true(committed > 0 && committed < EVENTS);

    /* The handle is not failed: reads answer with the committed batches. */
    uint64_t users = 0, thrice = 0;
    count3(db, &users, &thrice);
    assert_true(users > 0 && users <= want_users);
    cp_health_t h = CP_HEALTH_INIT;
    assert_int_equal(cp_db_health(db, &h, NULL), CP_OK);
    assert_int_equal(h.readable, 1);

    /* Space returns: the same handle resumes after the committed lines. */
    assert_int_equal(unlink(filler), 0);
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    memset(&err, 0, sizeof err);
    assert_int_equal(cp_import_file(db, events, &io, &s, &err), CP_OK);
    assert_true(s.resumed_at_line > 0);
    assert_int_equal(committed + s.events, EVENTS);
    count3(db, &users, &thrice);
    assert_int_equal(users, want_users);
    assert_int_equal(thrice, want_thrice);
    cp_db_close(db, NULL);

    /* Reopened: the same answers. */
    o.flags = 0;
    assert_int_equal(cp_db_open(data, &o, &db, &err), CP_OK);
    count3(db, &users, &thrice);
    assert_int_equal(users, want_users);
    assert_int_equal(thrice, want_thrice);
    cp_db_close(db, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(import_resumes_after_full_disk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
