/* test_engine_nospc.c — a full disk through the C API: event requests get
 * CP_ENOSPC naming the path and the free space, cp_db_health says
 * storage_full (and clears when a write succeeds again), reads keep
 * answering, and the handle is not failed. Needs a small tmpfs, so root;
 * skipped with a message otherwise. */
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

#define NOTE_BYTES 30000

static char root[256], mnt[300], data[320];

static int setup(void **state)
{
    (void)state;
    test_tmpfs(root, sizeof root, mnt, sizeof mnt, "nospc", "16m");
    if (root[0] != '\0') {
        snprintf(data, sizeof data, "%s/data", mnt);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_tmpfs_free(root, mnt);
    return 0;
}

/* One identify with a NOTE_BYTES trait; returns its status. */
static cp_status identify(cp_db_t *db, int i, cp_error_t *err)
{
    static char body[NOTE_BYTES + 200];
    int n = snprintf(body, sizeof body,
                     "{\"userId\":\"u%d\",\"messageId\":\"m%d\",\"traits\":"
                     "{\"k\":%d,\"note\":\"",
                     i, i, i);
    for (int j = 0; j < NOTE_BYTES; j++)
        body[n++] = (char)('a' + (i * 7 + j * 13) % 26);
    n += snprintf(body + n, sizeof body - (size_t)n, "\"}}");
    return cp_ingest_segment(db, CP_EVENT_IDENTIFY, body, (size_t)n, NULL, err);
}

static void full_disk_refuses_and_recovers(void **state)
{
    (void)state;
    if (root[0] == '\0') {
        print_message("test_engine_nospc: SKIPPED: mounting a small tmpfs needs root\n");
        skip();
    }
    /* Space to free later. */
    char filler[400];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    FILE *f = fopen(filler, "wb");
    assert_non_null(f);
    static char mb[1 << 20];
    memset(mb, 1, sizeof mb);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fwrite(mb, 1, sizeof mb, f), sizeof mb);
    fclose(f);

    cp_open_options_t o = {
        .size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    assert_int_equal(cp_db_open(data, &o, &db, &err), CP_OK);
    assert_int_equal(cp_attr_define(db, "k", CP_ATTR_INT, &err), CP_OK);

    cp_health_t h = CP_HEALTH_INIT;
    int acked = 0, i = 0;
    cp_status rc = CP_OK;
    for (; i < 2000; i++) {
        memset(&err, 0, sizeof err);
        if ((rc = identify(db, i, &err)) != CP_OK)
            break;
        acked++;
    }
    assert_int_equal(rc, CP_ENOSPC);
    assert_non_null(strstr(err.message, mnt));
    assert_non_null(strstr(err.message, "free"));
    assert_int_equal(cp_db_health(db, &h, NULL), CP_OK);
    assert_int_equal(h.writable, 0);
    assert_int_equal(h.readable, 1);
    assert_string_equal(h.reason, "storage_full");
    assert_non_null(strstr(h.detail, mnt));

    /* Reads answer, with every acknowledged user. */
    uint64_t n = 0;
    assert_int_equal(cp_count(db, "k >= 0", &n, &err), CP_OK);
    assert_int_equal(n, (uint64_t)acked);

    /* Still full: still refused, the handle not failed. */
    memset(&err, 0, sizeof err);
    assert_int_equal(identify(db, ++i, &err), CP_ENOSPC);

    /* Space returns: the next write succeeds by itself and health clears. */
    assert_int_equal(unlink(filler), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(identify(db, ++i, &err), CP_OK);
    acked++;
    assert_int_equal(cp_db_health(db, &h, NULL), CP_OK);
    assert_int_equal(h.writable, 1);
    assert_int_equal(cp_count(db, "k >= 0", &n, &err), CP_OK);
    assert_int_equal(n, (uint64_t)acked);
    cp_db_close(db, NULL);

    /* Reopened, everything acknowledged is there. */
    o.flags = 0;
    assert_int_equal(cp_db_open(data, &o, &db, &err), CP_OK);
    assert_int_equal(cp_count(db, "k >= 0", &n, &err), CP_OK);
    assert_int_equal(n, (uint64_t)acked);
    cp_db_close(db, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(full_disk_refuses_and_recovers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
