/* test_model_core.c — taxonomy (slugs, create, rename, move, delete,
 * persistence), schema and dictionaries, crowd records, API keys,
 * user dictionary, string map (against a naive reference). */
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

#include "model/apikey.h"
#include "model/crowd.h"
#include "model/schema.h"
#include "model/strmap.h"
#include "model/taxonomy.h"
#include "model/users.h"
#include "util/util.h"

static char g_dir[256];

static store_t *fresh_store(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "model");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(g_dir, STORE_CREATE, 1u << 26, 1, &st, &err), CP_OK);
    return st;
}

static void drop_store(store_t *st)
{
    store_close(st);
    test_rmtree(g_dir);
}

static void test_strmap(void **state)
{
    (void)state;
    strmap_t m;
    strmap_init(&m);
    enum { N = 5000 };
    static int live[N];
    uint64_t rng = 7;
    char k[32];
    for (int round = 0; round < 20000; round++) {
        int i = (int)(rand_next(&rng) % N);
        int n = snprintf(k, sizeof k, "key-%d", i);
        if (rand_next(&rng) % 3 == 0) {
            strmap_del(&m, k, (size_t)n);
            live[i] = 0;
        } else {
            assert_int_equal(strmap_put(&m, k, (size_t)n, (uint32_t)i * 3), CP_OK);
            live[i] = 1;
        }
    }
    size_t count = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key-%d", i);
        uint32_t v = 0;
        assert_int_equal(strmap_get(&m, k, (size_t)n, &v), live[i]);
        if (live[i])
            assert_int_equal(v, (uint32_t)i * 3);
        count += live[i];
    }
    assert_int_equal(m.used, count);
    strmap_free(&m);
}

static void test_slugs(void **state)
{
    (void)state;
    cp_error_t err = {0};
    const char *good[] = {
        "a", "interest/finance/consulting", "a-b_c/0-9", "x/y", "金融", "兴趣/金融/理财"};
    const char *bad[] = {"",          "/a",    "a/",  "a//b", "A", "a b", "interest/Finance",
                         "金融 理财", "a/./b", "\xff"};
    for (size_t i = 0; i < CP_ARRAY_LEN(good); i++)
        assert_int_equal(tax_validate_path(good[i], strlen(good[i]), &err), CP_OK);
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++)
        assert_int_not_equal(tax_validate_path(bad[i], strlen(bad[i]), &err), CP_OK);
    assert_int_equal(tax_validate_path("a b", 3, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "' '"));
    char deep[200] = "a";
    for (int i = 1; i < 16; i++)
        strcat(deep, "/a");
    assert_int_equal(tax_validate_path(deep, strlen(deep), &err), CP_OK);
    strcat(deep, "/a");
    assert_int_equal(tax_validate_path(deep, strlen(deep), &err), CP_ELIMIT);
    char longp[600];
    memset(longp, 'a', 513);
    longp[513] = '\0';
    assert_int_equal(tax_validate_path(longp, 513, &err), CP_ELIMIT);
}

static void test_taxonomy(void **state)
{
    (void)state;
    store_t *st = fresh_store();
    cp_error_t err = {0};
    taxonomy_t t;
    assert_int_equal(tax_init(&t), CP_OK);
    uint32_t a, ab, abc, ad, x;
    assert_int_equal(tax_add(&t, "a", "兴趣", NULL, 1, &a, &err), CP_OK);
    assert_int_equal(tax_add(&t, "a/b/c", NULL, NULL, 1, &abc, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "\"a/b\""));
    assert_int_equal(tax_add(&t, "a/b", NULL, "desc", 2, &ab, &err), CP_OK);
    assert_int_equal(tax_add(&t, "a/b/c", "金融/商业服务", NULL, 3, &abc, &err), CP_OK);
    assert_int_equal(tax_add(&t, "a/d", NULL, NULL, 4, &ad, &err), CP_OK);
    assert_int_equal(tax_add(&t, "x", NULL, NULL, 5, &x, &err), CP_OK);
    assert_int_equal(tax_add(&t, "a/b", NULL, NULL, 2, &ab, &err), CP_EEXIST);
    assert_int_equal(tax_add(&t, "y", "\xff", NULL, 2, &ab, &err), CP_EINVAL);
    assert_int_equal(t.count, 5);
    assert_string_equal(tax_get(&t, ab)->name, "b");
    assert_int_equal(tax_get(&t, abc)->level, 3);
    assert_true(tax_is_ancestor_or_self(&t, a, abc));
    assert_false(tax_is_ancestor_or_self(&t, x, abc));

    uint32_t *sub;
    size_t n;
    assert_int_equal(tax_subtree(&t, 0, &sub, &n), CP_OK);
    assert_int_equal(n, 5);
    assert_int_equal(sub[0], a);
    assert_int_equal(sub[1], ab);
    assert_int_equal(sub[2], abc);
    assert_int_equal(sub[3], ad);
    assert_int_equal(sub[4], x);
    free(sub);

    /* Rename. */
    assert_int_equal(tax_set_text(&t, ab, "Bee", NULL, &err), CP_OK);
    assert_string_equal(tax_get(&t, ab)->name, "Bee");
    assert_string_equal(tax_get(&t, ab)->description, "desc");

    /* Move a/b under x: subtree paths and levels change. */
    uint32_t *changed;
    size_t nchanged;
    assert_int_equal(tax_move(&t, ab, "a/b/zz", &changed, &nchanged, &err), CP_EINVAL);
    assert_int_equal(tax_move(&t, ab, "nope/b", &changed, &nchanged, &err), CP_ENOTFOUND);
    assert_int_equal(tax_move(&t, ab, "x/y/b", &changed, &nchanged, &err), CP_ENOTFOUND);
    assert_int_equal(tax_move(&t, ab, "x/b", &changed, &nchanged, &err), CP_OK);
    assert_int_equal(nchanged, 2);
    free(changed);
    assert_int_equal(tax_find(&t, "x/b/c", 5), abc);
    assert_int_equal(tax_find(&t, "a/b/c", 5), 0);
    assert_int_equal(tax_get(&t, abc)->level, 3);
    assert_int_equal(tax_get(&t, ab)->parent, x);
    assert_int_equal(tax_get(&t, a)->nchildren, 1);
    /* Move to top level. */
    assert_int_equal(tax_move(&t, ab, "top", &changed, &nchanged, &err), CP_OK);
    free(changed);
    assert_int_equal(tax_get(&t, abc)->level, 2);
    assert_string_equal(tax_get(&t, abc)->path, "top/c");

    /* Delete: leaf only. */
    assert_int_equal(tax_remove(&t, ab, &err), CP_ECONFLICT);
    assert_int_equal(tax_remove(&t, abc, &err), CP_OK);
    assert_int_equal(tax_find(&t, "top/c", 5), 0);
    assert_int_equal(t.count, 4);

    /* Persist and reload. */
    store_txn_t *txn;
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    for (uint32_t id = 1; id < t.next_id; id++)
        if (tax_get(&t, id))
            assert_int_equal(tax_store_put(txn, tax_get(&t, id), &err), CP_OK);
    assert_int_equal(store_meta_put_u64(txn, "next_tag_id", t.next_id, &err), CP_OK);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);
    taxonomy_t t2;
    assert_int_equal(tax_init(&t2), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &txn, &err), CP_OK);
    assert_int_equal(tax_load(&t2, txn, &err), CP_OK);
    store_txn_abort(txn);
    assert_int_equal(t2.count, 4);
    assert_int_equal(t2.next_id, t.next_id);
    assert_int_equal(tax_find(&t2, "a", 1), a);
    assert_string_equal(tax_get(&t2, a)->name, "兴趣");
    assert_int_equal(tax_find(&t2, "top", 3), ab);
    assert_string_equal(tax_get(&t2, ab)->name, "Bee");
    assert_int_equal(tax_get(&t2, ad)->level, 2);
    tax_free(&t2);
    tax_free(&t);
    drop_store(st);
}

static void test_schema(void **state)
{
    (void)state;
    store_t *st = fresh_store();
    cp_error_t err = {0};
    schema_t s;
    schema_init(&s);
    store_txn_t *txn;
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    uint32_t id;
    int created;
    assert_int_equal(schema_define(&s, txn, "age", CP_ATTR_INT, &id, &created, &err), CP_OK);
    assert_int_equal(id, 1);
    assert_true(created);
    assert_int_equal(schema_define(&s, txn, "age", CP_ATTR_INT, &id, &created, &err), CP_OK);
    assert_false(created);
    assert_int_equal(schema_define(&s, txn, "age", CP_ATTR_ENUM, &id, &created, &err),
                     CP_ECONFLICT);
    assert_non_null(strstr(err.message, "already defined as int"));
    assert_int_equal(schema_define(&s, txn, "Age", CP_ATTR_INT, &id, &created, &err), CP_EINVAL);
    assert_int_equal(schema_define(&s, txn, "1x", CP_ATTR_INT, &id, &created, &err), CP_EINVAL);
    assert_int_equal(schema_define(&s, txn, "gender", CP_ATTR_ENUM, &id, &created, &err), CP_OK);
    schema_attr_t *g = schema_find(&s, "gender", 6);
    assert_non_null(g);
    uint32_t f, m, f2;
    assert_int_equal(schema_value_intern(g, txn, "female", 6, &f, &err), CP_OK);
    assert_int_equal(schema_value_intern(g, txn, "男", strlen("男"), &m, &err), CP_OK);
    assert_int_equal(schema_value_intern(g, txn, "female", 6, &f2, &err), CP_OK);
    assert_int_equal(f, f2);
    assert_int_not_equal(f, m);
    assert_int_equal(schema_value_find(g, "x", 1), 0);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);

    schema_t s2;
    schema_init(&s2);
    assert_int_equal(store_txn_begin(st, 0, &txn, &err), CP_OK);
    assert_int_equal(schema_load(&s2, txn, &err), CP_OK);
    store_txn_abort(txn);
    assert_int_equal(s2.n, 2);
    schema_attr_t *g2 = schema_find(&s2, "gender", 6);
    assert_non_null(g2);
    assert_int_equal(g2->type, CP_ATTR_ENUM);
    assert_int_equal(schema_value_find(g2, "男", strlen("男")), m);
    assert_int_equal(schema_value_find(g2, "female", 6), f);
    assert_int_equal(schema_find(&s2, "age", 3)->type, CP_ATTR_INT);
    assert_int_equal(schema_type_parse("timestamp"), CP_ATTR_TIMESTAMP);
    assert_int_equal(schema_type_parse("float"), 0);
    schema_free(&s2);
    schema_free(&s);
    drop_store(st);
}

static void test_crowds_keys_users(void **state)
{
    (void)state;
    store_t *st = fresh_store();
    cp_error_t err = {0};
    assert_int_equal(crowd_validate_name("Vip_2024-a", &err), CP_OK);
    assert_int_equal(crowd_validate_name("a b", &err), CP_EINVAL);
    assert_int_equal(crowd_validate_name("广州理财", &err), CP_OK);
    assert_int_equal(crowd_validate_name("广州 理财", &err), CP_EINVAL);
    assert_int_equal(crowd_validate_name("广州，理财", &err), CP_EINVAL);
    assert_int_equal(crowd_validate_name("", &err), CP_EINVAL);

    crowd_set_t cs;
    crowd_set_init(&cs);
    for (int i = 0; i < 3; i++) {
        crowd_rec_t *c = calloc(1, sizeof *c);
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        c->id = cs.next_id;
        c->name = strdup(name);
        c->kind = i ? CP_CROWD_DYNAMIC : CP_CROWD_STATIC;
        c->expr = strdup("tag:a");
        c->tree = strdup("{\"tag\":\"a\"}");
        c->description = strdup("d");
        c->size = (uint64_t)i * 10;
        c->version = 1;
        c->tag_refs = calloc(1, sizeof(char *));
        c->tag_refs[0] = strdup("a");
        c->ntag_refs = 1;
        if (i == 2) {
            c->crowd_refs = calloc(1, sizeof(char *));
            c->crowd_refs[0] = strdup("c1");
            c->ncrowd_refs = 1;
        }
        assert_int_equal(crowd_set_add(&cs, c), CP_OK);
    }
    crowd_set_remove(&cs, "c0");
    assert_null(crowd_set_find(&cs, "c0"));
    assert_string_equal(crowd_set_find(&cs, "c2")->name, "c2");
    store_txn_t *txn;
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    for (size_t i = 0; i < cs.n; i++)
        assert_int_equal(crowd_store_put(txn, cs.items[i], &err), CP_OK);
    assert_int_equal(store_meta_put_u64(txn, "next_crowd_id", cs.next_id, &err), CP_OK);

    /* Users. */
    assert_int_equal(users_validate_id("u1", 2, &err), CP_OK);
    assert_int_equal(users_validate_id("", 0, &err), CP_EINVAL);
    assert_int_equal(users_validate_id("a\nb", 3, &err), CP_EINVAL);
    assert_int_equal(users_validate_id("\xc3", 1, &err), CP_EINVAL);
    char big[300];
    memset(big, 'x', sizeof big);
    assert_int_equal(users_validate_id(big, 257, &err), CP_ELIMIT);
    assert_int_equal(users_add(txn, "u1", 2, 7, &err), CP_OK);
    uint32_t ord = 0;
    assert_int_equal(users_lookup(txn, "u1", 2, &ord, &err), CP_OK);
    assert_int_equal(ord, 7);
    const char *id;
    size_t idl;
    assert_int_equal(users_id_of(txn, 7, &id, &idl, &err), CP_OK);
    assert_int_equal(idl, 2);
    assert_memory_equal(id, "u1", 2);
    assert_int_equal(users_remove(txn, "u1", 2, 7, &err), CP_OK);
    assert_int_equal(users_lookup(txn, "u1", 2, &ord, &err), CP_ENOTFOUND);
    assert_int_equal(users_id_of(txn, 7, &id, &idl, &err), CP_ENOTFOUND);

    /* Keys. */
    apikey_set_t ks;
    apikey_set_init(&ks);
    char *k1 = NULL, *k2 = NULL;
    assert_int_equal(apikey_create(&ks, txn, CP_ROLE_ADMIN, "ops", &k1, &err), CP_OK);
    assert_int_equal(apikey_create(&ks, txn, CP_ROLE_READ, NULL, &k2, &err), CP_OK);
    assert_int_equal(strncmp(k1, "cpk_", 4), 0);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);
    cp_role role = 0;
    assert_int_equal(apikey_check(&ks, k1, &role), CP_OK);
    assert_int_equal(role, CP_ROLE_ADMIN);
    char wrong[128];
    strcpy(wrong, k1);
    wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
    assert_int_equal(apikey_check(&ks, wrong, &role), CP_EAUTH);
    assert_int_equal(apikey_check(&ks, "cpk_", &role), CP_EAUTH);
    assert_int_equal(apikey_check(&ks, NULL, &role), CP_EAUTH);

    crowd_set_t cs2;
    crowd_set_init(&cs2);
    apikey_set_t ks2;
    apikey_set_init(&ks2);
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    assert_int_equal(crowd_set_load(&cs2, txn, &err), CP_OK);
    assert_int_equal(apikey_load(&ks2, txn, &err), CP_OK);
    assert_int_equal(cs2.n, 2);
    assert_int_equal(cs2.next_id, 4);
    crowd_rec_t *c2 = crowd_set_find(&cs2, "c2");
    assert_non_null(c2);
    assert_int_equal(c2->kind, CP_CROWD_DYNAMIC);
    assert_int_equal(c2->size, 20);
    assert_int_equal(c2->ncrowd_refs, 1);
    assert_string_equal(c2->crowd_refs[0], "c1");
    assert_string_equal(c2->tree, "{\"tag\":\"a\"}");
    assert_int_equal(ks2.n, 2);
    assert_int_equal(apikey_check(&ks2, k2, &role), CP_OK);
    assert_int_equal(role, CP_ROLE_READ);
    assert_int_equal(apikey_revoke(&ks2, txn, ks2.items[0].id, &err), CP_OK);
    assert_int_equal(apikey_revoke(&ks2, txn, "nope", &err), CP_ENOTFOUND);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);
    assert_int_equal(ks2.n, 1);
    free(k1);
    free(k2);
    apikey_set_free(&ks2);
    apikey_set_free(&ks);
    crowd_set_free(&cs2);
    crowd_set_free(&cs);
    drop_store(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strmap),
        cmocka_unit_test(test_slugs),
        cmocka_unit_test(test_taxonomy),
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_crowds_keys_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
