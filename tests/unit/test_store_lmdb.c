/* test_store_lmdb.c — data directory open/create, version check, writer
 * lock across processes, blob and meta round trips, prefix walks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"

#include "store/store.h"
#include "util/util.h"

static void test_missing_and_create(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "create");
    test_rmtree(dir); /* a directory that does not exist yet */
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, 0, 0, 1, &st, &err), CP_ENOTFOUND);
    assert_null(st);
    assert_non_null(strstr(err.message, "does not exist"));
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 24, 1, &st, &err), CP_OK);
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    uint64_t v = 0;
    assert_int_equal(store_meta_get_u64(t, "format_version", &v, &err), CP_OK);
    assert_int_equal(v, 1);
    assert_int_equal(store_meta_get_u64(t, "created", &v, &err), CP_OK);
    assert_true(v > 0);
    assert_int_equal(store_meta_get_u64(t, "nothing", &v, &err), CP_ENOTFOUND);
    store_txn_abort(t);
    store_close(st);

    /* Version mismatch names both versions. */
    assert_int_equal(store_open(dir, 0, 1u << 24, 2, &st, &err), CP_EVERSION);
    assert_non_null(strstr(err.message, "format version 1"));
    assert_non_null(strstr(err.message, "reads version 2"));
    assert_null(st);
    test_rmtree(dir);
}

static void test_not_crowdpack(void **state)
{
    (void)state;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "foreign");
    snprintf(path, sizeof path, "%s/hello.txt", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("hi", f);
    fclose(f);
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 24, 1, &st, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "not a crowdpack data directory"));
    /* A data.mdb of garbage. */
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 10000; i++)
        fputc('x', f);
    fclose(f);
    assert_int_equal(store_open(dir, 0, 1u << 24, 1, &st, &err), CP_EINVAL);
    assert_null(st);
    test_rmtree(dir);
}

static void test_lock(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "lock");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 24, 1, &st, &err), CP_OK);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store_t *s2 = NULL;
        cp_error_t e2 = {0};
        cp_status rc = store_open(dir, 0, 1u << 24, 1, &s2, &e2);
        char want[64];
        snprintf(want, sizeof want, "(pid %ld)", (long)getppid());
        int ok = rc == CP_ELOCKED && strstr(e2.message, want) && strstr(e2.message, dir);
        /* A read-only open takes no writer lock. */
        rc = store_open(dir, STORE_READONLY, 1u << 24, 1, &s2, &e2);
        ok = ok && rc == CP_OK;
        if (rc == CP_OK) {
            store_txn_t *t = NULL;
            ok = ok && store_txn_begin(s2, 1, &t, &e2) == CP_EREADONLY;
            store_close(s2);
        }
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* After close, another writer gets in. */
    store_close(st);
    assert_int_equal(store_open(dir, 0, 1u << 24, 1, &st, &err), CP_OK);
    store_close(st);
    test_rmtree(dir);
}

static cp_status collect(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                         cp_error_t *err)
{
    (void)v;
    (void)err;
    buf_t *b = ud;
    buf_append(b, k, kl);
    buf_printf(b, "=%zu;", vl);
    return CP_OK;
}

static void test_blobs(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "blobs");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 26, 1, &st, &err), CP_OK);
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    static char big[300000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    assert_int_equal(store_put(t, STORE_BITMAPS, "t/1", 3, "abc", 3, &err), CP_OK);
    assert_int_equal(store_put(t, STORE_BITMAPS, "t/2", 3, big, sizeof big, &err), CP_OK);
    assert_int_equal(store_put(t, STORE_BITMAPS, "u", 1, "", 0, &err), CP_OK);
    void *p = NULL;
    assert_int_equal(store_reserve(t, STORE_BITMAPS, "t/3", 3, 5, &p, &err), CP_OK);
    memcpy(p, "hello", 5);
    uint32_t ord = 42;
    assert_int_equal(store_put(t, STORE_UORD, &ord, 4, "user42", 6, &err), CP_OK);
    assert_int_equal(store_meta_put_u64(t, "next_ordinal", 0x1122334455667788ull, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    store_close(st);

    assert_int_equal(store_open(dir, 0, 1u << 26, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    const void *v;
    size_t vl;
    assert_int_equal(store_get(t, STORE_BITMAPS, "t/2", 3, &v, &vl, &err), CP_OK);
    assert_int_equal(vl, sizeof big);
    assert_memory_equal(v, big, sizeof big);
    assert_int_equal(store_get(t, STORE_BITMAPS, "t/3", 3, &v, &vl, &err), CP_OK);
    assert_int_equal(vl, 5);
    assert_memory_equal(v, "hello", 5);
    assert_int_equal(store_get(t, STORE_UORD, &ord, 4, &v, &vl, &err), CP_OK);
    assert_memory_equal(v, "user42", 6);
    uint64_t x = 0;
    assert_int_equal(store_meta_get_u64(t, "next_ordinal", &x, &err), CP_OK);
    assert_true(x == 0x1122334455667788ull);

    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(store_each(t, STORE_BITMAPS, "t/", 2, collect, &b, &err), CP_OK);
    assert_string_equal(buf_cstr(&b), "t/1=3;t/2=300000;t/3=5;");
    assert_int_equal(store_del_prefix(t, STORE_BITMAPS, "t/", 2, &err), CP_OK);
    buf_reset(&b);
    assert_int_equal(store_each(t, STORE_BITMAPS, NULL, 0, collect, &b, &err), CP_OK);
    assert_string_equal(buf_cstr(&b), "u=0;");
    assert_int_equal(store_del(t, STORE_BITMAPS, "u", 1, &err), CP_OK);
    assert_int_equal(store_del(t, STORE_BITMAPS, "u", 1, &err), CP_OK);
    assert_int_equal(store_get(t, STORE_BITMAPS, "u", 1, &v, &vl, &err), CP_ENOTFOUND);
    buf_free(&b);

    store_cursor_t *c = NULL;
    assert_int_equal(store_cursor_open(t, STORE_UORD, &c, &err), CP_OK);
    assert_int_equal(store_cursor_seek(c, &ord, 4, &v, &vl, &err), CP_OK);
    assert_int_equal(vl, 6);
    uint32_t o2 = 43;
    assert_int_equal(store_cursor_seek(c, &o2, 4, &v, &vl, &err), CP_ENOTFOUND);
    store_cursor_close(c);
    store_txn_abort(t);
    assert_true(store_disk_bytes(st) > 0);
    store_close(st);
    test_rmtree(dir);
}

static void test_map_full(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "full");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 20, 1, &st, &err), CP_OK);
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    static char big[4u << 20];
    cp_status rc = store_put(t, STORE_BITMAPS, "x", 1, big, sizeof big, &err);
    assert_int_equal(rc, CP_ELIMIT);
    assert_non_null(strstr(err.message, "map_size"));
    store_txn_abort(t);
    store_close(st);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_and_create),
        cmocka_unit_test(test_not_crowdpack),
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_map_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
