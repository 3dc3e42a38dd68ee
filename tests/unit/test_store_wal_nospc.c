/* test_store_wal_nospc.c — the write-ahead log on a full disk: a write
 * that meets ENOSPC is CP_ENOSPC, the segment is cut back to its last whole
 * record, the log does not fail, buffered records stay buffered and are
 * written when space returns, wal_reserve reports a full disk before a
 * record is appended, and a reopen replays exactly the records appended.
 * Needs a small tmpfs, so root; skipped with a message otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/wal.h"

static char root[256], mnt[300];

static int setup(void **state)
{
    (void)state;
    test_tmpfs(root, sizeof root, mnt, sizeof mnt, "walnospc", "1m");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_tmpfs_free(root, mnt);
    return 0;
}

static void quiet_log(void *ud, const char *msg)
{
    (void)ud;
    (void)msg;
}

typedef struct {
    uint64_t n, next;
    int bad;
} replay_t;

static cp_status count_rec(void *ud, uint64_t lsn, uint8_t type, const void *p, size_t len,
                           cp_error_t *err)
{
    (void)err;
    replay_t *r = ud;
    const unsigned char *b = p;
    if (lsn != r->next || type != 1 || len == 0 || b[0] != (unsigned char)lsn ||
        b[len - 1] != (unsigned char)lsn)
        r->bad = 1;
    r->next = lsn + 1;
    r->n++;
    return CP_OK;
}

static void full_disk_is_not_a_failure(void **state)
{
    (void)state;
    if (root[0] == '\0') {
        print_message("test_store_wal_nospc: SKIPPED: mounting a small tmpfs needs root\n");
        skip();
    }
    char filler[400];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    FILE *f = fopen(filler, "wb");
    assert_non_null(f);
    static unsigned char buf[40000];
    memset(buf, 7, sizeof buf);
    for (int i = 0; i < 6; i++) /* 240 KB to free later */
        assert_int_equal(fwrite(buf, 1, sizeof buf, f), sizeof buf);
    fclose(f);

    wal_options_t o = {.sync = WAL_SYNC_FDATASYNC, .log = quiet_log};
    wal_t *w = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(mnt, &o, &w, &err), CP_OK);

    /* Large records (written directly) until the disk is full. */
    uint64_t appended = 0, lsn;
    cp_status rc = CP_OK;
    for (int i = 0; i < 100; i++) {
        memset(buf, (unsigned char)(appended + 1), sizeof buf);
        memset(&err, 0, sizeof err);
        if ((rc = wal_append(w, 1, buf, sizeof buf, &lsn, &err)) != CP_OK)
            break;
        appended++;
    }
    assert_int_equal(rc, CP_ENOSPC);
    assert_non_null(strstr(err.message, mnt));
    assert_non_null(strstr(err.message, "free"));
    assert_int_equal(wal_failed(w), 0);
    assert_int_equal(wal_last_lsn(w), appended);
    assert_int_equal(wal_sync(w, UINT64_MAX, &err), CP_OK);

    /* wal_reserve says so before anything is appended. */
    memset(&err, 0, sizeof err);
    assert_int_equal(wal_reserve(w, sizeof buf, &err), CP_ENOSPC);
    assert_int_equal(wal_failed(w), 0);

    /* Small records are buffered; their flush meets the full disk, they
     * stay buffered, and the sync succeeds once space returns. */
    uint64_t small = 0;
    for (int i = 0; i < 200; i++) {
        unsigned char s[300];
        memset(s, (unsigned char)(appended + small + 1), sizeof s);
        memset(&err, 0, sizeof err);
        if (wal_append(w, 1, s, sizeof s, &lsn, &err) != CP_OK)
            break;
        small++;
    }
    assert_true(small > 0);
    memset(&err, 0, sizeof err);
    rc = wal_sync(w, UINT64_MAX, &err);
    assert_true(rc == CP_OK || rc == CP_ENOSPC);
    assert_int_equal(wal_failed(w), 0);

    assert_int_equal(unlink(filler), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(wal_sync(w, UINT64_MAX, &err), CP_OK);
    memset(buf, (unsigned char)(appended + small + 1), sizeof buf);
    assert_int_equal(wal_reserve(w, sizeof buf, &err), CP_OK);
    assert_int_equal(wal_append(w, 1, buf, sizeof buf, &lsn, &err), CP_OK);
    assert_int_equal(wal_sync(w, lsn, &err), CP_OK);
    uint64_t total = appended + small + 1;
    assert_int_equal(lsn, total);
    wal_close(w);

    /* Every record appended is there, whole, in order, and nothing else. */
    w = NULL;
    assert_int_equal(wal_open(mnt, &o, &w, &err), CP_OK);
    replay_t r = {.next = 1};
    assert_int_equal(wal_replay(w, 0, count_rec, &r, &err), CP_OK);
    assert_int_equal(r.n, total);
    assert_int_equal(r.bad, 0);
    wal_stats_t st;
    wal_stats(w, &st);
    assert_int_equal(st.truncated_bytes, 0);
    wal_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(full_disk_is_not_a_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
