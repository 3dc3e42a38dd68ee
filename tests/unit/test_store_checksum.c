/* test_store_checksum.c — value checksums in data.mdb: round trips through
 * put, reserve (sealed at the next call and at commit), get, each and
 * cursors; bit rot as CP_ECORRUPT naming the sub-database and key (at open
 * through the damage walk, and on load when the walk is off); directories
 * from before checksums read read-only and upgraded read-write; damage
 * that crashes liblmdb contained by store_verify. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"

#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "util/util.h"

#define MAP (1ull << 26)

static void put_s(store_txn_t *t, store_db db, const char *k, const char *v)
{
    cp_error_t err = {0};
    assert_int_equal(store_put(t, db, k, strlen(k), v, strlen(v), &err), CP_OK);
}

static void expect_s(store_txn_t *t, store_db db, const char *k, const char *v)
{
    const void *p;
    size_t n;
    cp_error_t err = {0};
    cp_status st = store_get(t, db, k, strlen(k), &p, &n, &err);
    if (st != CP_OK)
        fail_msg("get %s: %s", k, err.message);
    assert_int_equal(n, strlen(v));
    assert_memory_equal(p, v, n);
}

static cp_status each_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                         cp_error_t *err)
{
    (void)k;
    (void)kl;
    (void)err;
    size_t *sum = ud;
    *sum += vl;
    assert_true(vl == 0 || ((const char *)v)[0] == 'v' || ((const char *)v)[0] == 'R');
    return CP_OK;
}

/* Offset of the only occurrence of `pat` in the used part of data.mdb
 * (with `all`, of the last one, each earlier one passed to poke_fn). */
static void poke(const char *path, long off, unsigned char x);
static long find_in_file_x(const char *path, const char *pat, int all, unsigned char x);
static long find_in_file(const char *path, const char *pat)
{
    return find_in_file_x(path, pat, 0, 0);
}

static long find_in_file_x(const char *path, const char *pat, int all, unsigned char x)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 8u << 20;
    char *b = malloc(cap);
    size_t n = fread(b, 1, cap, f);
    fclose(f);
    long at = -1;
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= n; i++)
        if (memcmp(b + i, pat, pl) == 0) {
            if (!all)
                assert_int_equal(at, -1);
            else if (at >= 0)
                poke(path, at + 2, x);
            at = (long)i;
        }
    free(b);
    return at;
}

static void poke(const char *path, long off, unsigned char x)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ x, f);
    fclose(f);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "rt");
    store_t *st = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, MAP, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    put_s(t, STORE_BITMAPS, "t/1#0000", "value-one");
    put_s(t, STORE_BITMAPS, "t/2#0000", "");
    assert_int_equal(store_meta_put_u64(t, "n", 42, &err), CP_OK);
    /* A value as big as several pages (overflow pages). */
    size_t big = 50000;
    char *bv = malloc(big + 1);
    memset(bv, 'v', big);
    bv[big] = '\0';
    put_s(t, STORE_BITMAPS, "t/3#0000", bv);
    /* A reservation read back in the same transaction before any update:
     * sealed by the get. */
    void *dst = NULL;
    assert_int_equal(store_reserve(t, STORE_BITMAPS, "t/4#0000", 8, 7, &dst, &err), CP_OK);
    memcpy(dst, "RESERVE", 7);
    expect_s(t, STORE_BITMAPS, "t/4#0000", "RESERVE");
    /* One sealed by the next put, one by the commit. */
    assert_int_equal(store_reserve(t, STORE_BITMAPS, "t/5#0000", 8, 3, &dst, &err), CP_OK);
    memcpy(dst, "R55", 3);
    put_s(t, STORE_TAGS, "x", "v-tag");
    assert_int_equal(store_reserve(t, STORE_BITMAPS, "t/6#0000", 8, 3, &dst, &err), CP_OK);
    memcpy(dst, "R66", 3);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    store_close(st);

    /* Reopen (the damage walk checks every value) and read back. */
    assert_int_equal(store_open(dir, 0, MAP, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    expect_s(t, STORE_BITMAPS, "t/1#0000", "value-one");
    expect_s(t, STORE_BITMAPS, "t/2#0000", "");
    expect_s(t, STORE_BITMAPS, "t/3#0000", bv);
    expect_s(t, STORE_BITMAPS, "t/4#0000", "RESERVE");
    expect_s(t, STORE_BITMAPS, "t/5#0000", "R55");
    expect_s(t, STORE_BITMAPS, "t/6#0000", "R66");
    expect_s(t, STORE_TAGS, "x", "v-tag");
    uint64_t n = 0;
    assert_int_equal(store_meta_get_u64(t, "n", &n, &err), CP_OK);
    assert_int_equal(n, 42);
    size_t sum = 0;
    assert_int_equal(store_each(t, STORE_BITMAPS, "t/", 2, each_cb, &sum, &err), CP_OK);
    assert_int_equal(sum, 9 + 0 + big + 7 + 3 + 3);
    store_cursor_t *c = NULL;
    assert_int_equal(store_cursor_open(t, STORE_BITMAPS, &c, &err), CP_OK);
    const void *v;
    size_t vl;
    assert_int_equal(store_cursor_seek(c, "t/1#0000", 8, &v, &vl, &err), CP_OK);
    assert_int_equal(vl, 9);
    store_cursor_close(c);
    store_txn_abort(t);
    store_close(st);
    uint64_t problems = 9;
    assert_int_equal(store_verify(dir, MAP, NULL, NULL, &problems, &err), CP_OK);
    assert_int_equal(problems, 0);
    free(bv);
    test_rmtree(dir);
}

typedef struct lines {
    int n;
    char first[600];
} lines_t;

static void line_cb(void *ud, const char *line)
{
    lines_t *l = ud;
    if (l->n++ == 0)
        snprintf(l->first, sizeof l->first, "%s", line);
}

static void test_bit_rot(void **state)
{
    (void)state;
    char dir[256], path[300];
    test_tmpdir(dir, sizeof dir, "rot");
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    store_t *st = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, MAP, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    put_s(t, STORE_BITMAPS, "t/7#0001", "UNIQUE-PAYLOAD-abcdefgh");
    put_s(t, STORE_CROWDS, "人群包", "UNIQUE-CROWD-12345");
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    store_close(st);
    long off = find_in_file(path, "UNIQUE-PAYLOAD");
    assert_true(off > 0);
    poke(path, off + 3, 0x04);

    /* At open: the damage walk names the sub-database and the key. */
    assert_int_equal(store_open(dir, STORE_READONLY, MAP, 1, &st, &err), CP_ECORRUPT);
    assert_null(st);
    assert_non_null(strstr(err.message, "\"bitmaps\""));
    assert_non_null(strstr(err.message, "t/7#0001"));
    assert_non_null(strstr(err.message, "checksum"));
    lines_t l = {0};
    uint64_t problems = 0;
    assert_int_equal(store_verify(dir, MAP, line_cb, &l, &problems, &err), CP_ECORRUPT);
    assert_int_equal(problems, 1);
    assert_int_equal(l.n, 1);
    assert_non_null(strstr(l.first, "t/7#0001"));

    /* With the walk off, on load. */
    setenv("CROWDPACK_OPEN_CHECK", "0", 1);
    assert_int_equal(store_open(dir, STORE_READONLY, MAP, 1, &st, &err), CP_OK);
    unsetenv("CROWDPACK_OPEN_CHECK");
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    const void *v;
    size_t vl;
    assert_int_equal(store_get(t, STORE_BITMAPS, "t/7#0001", 8, &v, &vl, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "t/7#0001"));
    assert_non_null(strstr(err.message, "\"bitmaps\""));
    size_t sum = 0;
    assert_int_equal(store_each(t, STORE_BITMAPS, NULL, 0, each_cb, &sum, &err), CP_ECORRUPT);
    expect_s(t, STORE_CROWDS, "人群包", "UNIQUE-CROWD-12345");
    store_txn_abort(t);
    store_close(st);

    /* A zeroed page or random bytes: a clean error from the walk, whatever
     * liblmdb does with them. */
    poke(path, off + 3, 0x04); /* healed */
    assert_int_equal(store_verify(dir, MAP, NULL, NULL, &problems, &err), CP_OK);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    static unsigned char zero[4096];
    for (int pg = 0; pg < 2; pg++) { /* both meta pages */
        fseek(f, pg * 4096L, SEEK_SET);
        fwrite(zero, 1, sizeof zero, f);
    }
    fclose(f);
    cp_status rc = store_open(dir, STORE_READONLY, MAP, 1, &st, &err);
    assert_true(rc == CP_EINVAL || rc == CP_ECORRUPT);
    assert_null(st);
    test_rmtree(dir);
}

/* A directory as builds before checksums wrote it: raw LMDB values. */
static void make_legacy(const char *dir)
{
    /* dir: made empty by test_tmpdir */
    char path[300];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, MAP), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    const char *names[] = {"meta",   "bitmaps", "uid",  "uord",     "tags",  "attrs",
                           "values", "crowds",  "keys", "identity", "intake"};
    for (int i = 0; i < 11; i++) {
        assert_int_equal(
            mdb_dbi_open(txn, names[i], MDB_CREATE | (i == 3 ? MDB_INTEGERKEY : 0), &dbi), 0);
        if (i == 0) {
            unsigned char ver[8] = {1, 0, 0, 0, 0, 0, 0, 0};
            MDB_val k = {5, "magic"}, v = {9, "crowdpack"};
            assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
            MDB_val k2 = {14, "format_version"}, v2 = {8, ver};
            assert_int_equal(mdb_put(txn, dbi, &k2, &v2, 0), 0);
        }
        if (i == 1)
            for (int j = 0; j < 300; j++) {
                char kb[32], vb[64];
                snprintf(kb, sizeof kb, "t/%d#0000", j);
                snprintf(vb, sizeof vb, "v-legacy-%d", j);
                MDB_val k = {strlen(kb), kb}, v = {strlen(vb), vb};
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
            }
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_legacy_upgrade(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "legacy");
    make_legacy(dir);
    store_t *st = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    /* Read-only: read as it is. */
    assert_int_equal(store_open(dir, STORE_READONLY, MAP, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    expect_s(t, STORE_BITMAPS, "t/17#0000", "v-legacy-17");
    store_txn_abort(t);
    store_close(st);
    /* Read-write: upgraded. */
    if (store_open(dir, 0, MAP, 1, &st, &err) != CP_OK)
        fail_msg("upgrade: %s", err.message);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    for (int j = 0; j < 300; j += 7) {
        char kb[32], vb[64];
        snprintf(kb, sizeof kb, "t/%d#0000", j);
        snprintf(vb, sizeof vb, "v-legacy-%d", j);
        expect_s(t, STORE_BITMAPS, kb, vb);
    }
    size_t sum = 0;
    assert_int_equal(store_each(t, STORE_BITMAPS, NULL, 0, each_cb, &sum, &err), CP_OK);
    store_txn_abort(t);
    store_close(st);
    /* The flag is set: the next opens check every value. */
    char path[300];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    /* Old copies of the value may sit in free pages: damage every copy. */
    long off = find_in_file_x(path, "v-legacy-123", 1, 0x01);
    assert_true(off > 0);
    poke(path, off + 2, 0x01);
    assert_int_equal(store_open(dir, STORE_READONLY, MAP, 1, &st, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "t/123#0000"));
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bit_rot),
        cmocka_unit_test(test_legacy_upgrade),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
