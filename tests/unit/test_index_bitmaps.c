/* test_index_bitmaps.c — the in-memory index: effective tag membership
 * maintained on assign/unassign equals the union over the subtree;
 * attribute overwrites; persistence round trip over several chunks; a
 * corrupt bitmap on disk is CP_EIO naming its key. */
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

#include "index/index.h"
#include "util/util.h"

#define NT 30

static char g_dir[256];

static store_t *fresh_store(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "index");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(g_dir, STORE_CREATE, 1u << 28, 1, &st, &err), CP_OK);
    return st;
}

static void drop_store(store_t *st)
{
    store_close(st);
    test_rmtree(g_dir);
}

static void build_tree(taxonomy_t *t, index_t *ix, uint64_t *rng, uint32_t *ids)
{
    cp_error_t err = {0};
    for (int i = 0; i < NT; i++) {
        char path[256];
        if (i == 0 || rand_next(rng) % 4 == 0) {
            snprintf(path, sizeof path, "t%d", i);
        } else {
            const tax_tag_t *p = tax_get(t, ids[rand_next(rng) % (uint64_t)i]);
            if (p->level >= 6)
                snprintf(path, sizeof path, "t%d", i);
            else
                snprintf(path, sizeof path, "%s/t%d", p->path, i);
        }
        assert_int_equal(tax_add(t, path, NULL, NULL, 0, &ids[i], &err), CP_OK);
        assert_int_equal(index_tag_add(ix, ids[i]), CP_OK);
    }
}

/* eff(t) must equal the union of direct over t's subtree. */
static void check_effective(const taxonomy_t *t, const index_t *ix)
{
    for (uint32_t id = 1; id < t->next_id; id++) {
        if (!tax_get(t, id))
            continue;
        uint32_t *sub;
        size_t n;
        assert_int_equal(tax_subtree(t, id, &sub, &n), CP_OK);
        roaring_bitmap_t *u = roaring_bitmap_create();
        for (size_t i = 0; i < n; i++)
            roaring_bitmap_or_inplace(u, index_tag(ix, sub[i])->direct);
        assert_true(roaring_bitmap_equals(u, index_tag(ix, id)->eff));
        roaring_bitmap_free(u);
        free(sub);
    }
}

static void test_effective(void **state)
{
    (void)state;
    uint64_t rng = 99;
    taxonomy_t t;
    assert_int_equal(tax_init(&t), CP_OK);
    index_t *ix = NULL;
    assert_int_equal(index_create(&ix), CP_OK);
    uint32_t ids[NT];
    build_tree(&t, ix, &rng, ids);
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 400; k++) {
            uint32_t user = (uint32_t)(rand_next(&rng) % 300);
            uint32_t tag = ids[rand_next(&rng) % NT];
            int had = roaring_bitmap_contains(index_tag(ix, tag)->direct, user);
            if (rand_next(&rng) % 3 == 0)
                assert_int_equal(index_tag_unassign(ix, &t, user, tag), had);
            else
                assert_int_equal(index_tag_assign(ix, &t, user, tag), !had);
        }
        check_effective(&t, ix);
    }
    /* Deleting a user clears it everywhere. */
    index_user_add(ix, 7);
    index_user_delete(ix, &t, 7);
    for (int i = 0; i < NT; i++) {
        assert_false(roaring_bitmap_contains(index_tag(ix, ids[i])->direct, 7));
        assert_false(roaring_bitmap_contains(index_tag(ix, ids[i])->eff, 7));
    }
    assert_int_equal(index_recompute_effective(ix, &t), CP_OK);
    check_effective(&t, ix);
    index_free(ix);
    tax_free(&t);
}

static void test_values(void **state)
{
    (void)state;
    index_t *ix = NULL;
    assert_int_equal(index_create(&ix), CP_OK);
    assert_int_equal(index_attr_add(ix, 1, CP_ATTR_ENUM), CP_OK);
    assert_int_equal(index_attr_add(ix, 2, CP_ATTR_INT), CP_OK);
    assert_int_equal(index_set_value(ix, 1, 5, 3), CP_OK);
    assert_int_equal(index_set_value(ix, 1, 5, 1), CP_OK);
    assert_int_equal(index_get_value(ix, 1, 5), 1);
    assert_false(roaring_bitmap_contains(index_value_bitmap(ix, 1, 3), 5));
    assert_true(roaring_bitmap_contains(index_value_bitmap(ix, 1, 1), 5));
    assert_true(roaring_bitmap_contains(index_attr_exists(ix, 1), 5));
    index_clear(ix, 1, 5);
    assert_int_equal(index_get_value(ix, 1, 5), 0);
    assert_false(roaring_bitmap_contains(index_attr_exists(ix, 1), 5));
    assert_false(roaring_bitmap_contains(index_value_bitmap(ix, 1, 1), 5));
    assert_int_equal(index_set_int(ix, 2, 9, -77), CP_OK);
    int64_t v;
    assert_true(index_get_int(ix, 2, 9, &v));
    assert_int_equal(v, -77);
    index_clear(ix, 2, 9);
    assert_false(index_get_int(ix, 2, 9, &v));
    index_free(ix);
}

static void test_persist(void **state)
{
    (void)state;
    store_t *st = fresh_store();
    cp_error_t err = {0};
    uint64_t rng = 5;
    taxonomy_t t;
    schema_t s;
    assert_int_equal(tax_init(&t), CP_OK);
    schema_init(&s);
    index_t *ix = NULL;
    assert_int_equal(index_create(&ix), CP_OK);
    uint32_t ids[NT];
    build_tree(&t, ix, &rng, ids);
    store_txn_t *txn;
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    uint32_t a_int, a_enum, a_geo, vid[3];
    int created;
    assert_int_equal(schema_define(&s, txn, "n", CP_ATTR_INT, &a_int, &created, &err), CP_OK);
    assert_int_equal(schema_define(&s, txn, "e", CP_ATTR_ENUM, &a_enum, &created, &err), CP_OK);
    assert_int_equal(schema_define(&s, txn, "g", CP_ATTR_GEO, &a_geo, &created, &err), CP_OK);
    const char *vals[3] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            schema_value_intern(schema_get(&s, a_enum), txn, vals[i], 1, &vid[i], &err), CP_OK);
    assert_int_equal(index_attr_add(ix, a_int, CP_ATTR_INT), CP_OK);
    assert_int_equal(index_attr_add(ix, a_enum, CP_ATTR_ENUM), CP_OK);
    assert_int_equal(index_attr_add(ix, a_geo, CP_ATTR_GEO), CP_OK);
    /* Users over three chunks. */
    for (uint32_t u = 0; u < 200000; u += 1 + (uint32_t)(rand_next(&rng) % 40)) {
        index_user_add(ix, u);
        index_tag_assign(ix, &t, u, ids[rand_next(&rng) % NT]);
        if (u % 3)
            assert_int_equal(index_set_int(ix, a_int, u, (int64_t)(rand_next(&rng) % 2000) - 1000),
                             CP_OK);
        if (u % 5)
            assert_int_equal(index_set_value(ix, a_enum, u, vid[u % 3]), CP_OK);
        if (u % 7 == 0)
            assert_int_equal(index_set_geo(ix, a_geo, u, 20 + (u % 100) * 0.01, 110), CP_OK);
    }
    for (uint32_t id = 1; id < t.next_id; id++)
        assert_int_equal(tax_store_put(txn, tax_get(&t, id), &err), CP_OK);
    roaring_bitmap_t *cr = roaring_bitmap_of(3, 1u, 70000u, 150000u);
    assert_int_equal(index_crowd_set(ix, 4, cr), CP_OK);
    assert_int_equal(index_persist(ix, txn, &err), CP_OK);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);

    index_t *ix2 = NULL;
    assert_int_equal(index_create(&ix2), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &txn, &err), CP_OK);
    assert_int_equal(index_load(ix2, &t, &s, txn, &err), CP_OK);
    store_txn_abort(txn);
    assert_true(roaring_bitmap_equals(ix->universe, ix2->universe));
    for (int i = 0; i < NT; i++) {
        assert_true(
            roaring_bitmap_equals(index_tag(ix, ids[i])->direct, index_tag(ix2, ids[i])->direct));
        assert_true(roaring_bitmap_equals(index_tag(ix, ids[i])->eff, index_tag(ix2, ids[i])->eff));
    }
    roaring_uint32_iterator_t it;
    roaring_init_iterator(ix->universe, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        uint32_t u = it.current_value;
        int64_t v1 = 0, v2 = 0;
        assert_int_equal(index_get_int(ix, a_int, u, &v1), index_get_int(ix2, a_int, u, &v2));
        assert_true(v1 == v2);
        assert_int_equal(index_get_value(ix, a_enum, u), index_get_value(ix2, a_enum, u));
        double la1 = 0, lo1 = 0, la2 = 0, lo2 = 0;
        assert_int_equal(index_get_geo(ix, a_geo, u, &la1, &lo1),
                         index_get_geo(ix2, a_geo, u, &la2, &lo2));
        assert_true(la1 == la2 && lo1 == lo2);
    }
    assert_true(roaring_bitmap_equals(index_crowd(ix2, 4), cr));
    index_free(ix2);

    /* Corrupt one tag bitmap on disk: the load names the key. */
    char key[32];
    snprintf(key, sizeof key, "t/%u#0000", ids[0]);
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    assert_int_equal(
        store_put(txn, STORE_BITMAPS, key, strlen(key), "\x3b\x30\x00\x00garbage", 11, &err),
        CP_OK);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);
    assert_int_equal(index_create(&ix2), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &txn, &err), CP_OK);
    assert_int_equal(index_load(ix2, &t, &s, txn, &err), CP_EIO);
    assert_non_null(strstr(err.message, key));
    store_txn_abort(txn);
    index_free(ix2);

    index_free(ix);
    schema_free(&s);
    tax_free(&t);
    drop_store(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effective),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_persist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
