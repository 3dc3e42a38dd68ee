/* test_model_taxonomy_utf8.c — tag paths in any script: the slug rule for
 * non-ASCII letters, NFC storage and lookup, display-path resolution and
 * its ambiguity; crowd names in any script; value aliases of the schema
 * (set, lookup, retarget, remove, persistence). */
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

#include "model/crowd.h"
#include "model/schema.h"
#include "model/taxonomy.h"
#include "util/util.h"

/* "café" precomposed (NFC) and as e + U+0301 (NFD). */
#define CAFE_NFC "caf\xc3\xa9"
#define CAFE_NFD "cafe\xcc\x81"

static void test_path_rule(void **state)
{
    (void)state;
    cp_error_t err = {0};
    const char *good[] = {"兴趣/金融/理财", "interest/金融", CAFE_NFC, "ไทย", "한국어", "٣٤"};
    for (size_t i = 0; i < CP_ARRAY_LEN(good); i++)
        assert_int_equal(tax_validate_path(good[i], strlen(good[i]), &err), CP_OK);
    /* Upper case (É), a full-width comma, an ideographic space, NFD. */
    const char *bad[] = {"caf\xc3\x89", "金融，理财", "金融\xe3\x80\x80理财",
                         CAFE_NFD,      "金融/",      "a\xe9"};
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++)
        assert_int_equal(tax_validate_path(bad[i], strlen(bad[i]), &err), CP_EINVAL);
    assert_int_equal(tax_validate_path(CAFE_NFD, strlen(CAFE_NFD), &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "NFC"));
    assert_true(tax_is_nfc("abc", 3));
    assert_false(tax_is_nfc(CAFE_NFD, strlen(CAFE_NFD)));
    size_t n = 0;
    char *c = tax_nfc(CAFE_NFD, strlen(CAFE_NFD), &n);
    assert_non_null(c);
    assert_string_equal(c, CAFE_NFC);
    assert_int_equal(n, strlen(CAFE_NFC));
    free(c);
    assert_int_equal(tax_word_char("理", 3), 3);
    assert_int_equal(tax_word_char("，", 3), 0);
    assert_int_equal(tax_word_char("a", 1), 0); /* ASCII is the caller's rule */
}

static void test_nfc_and_display(void **state)
{
    (void)state;
    taxonomy_t t;
    cp_error_t err = {0};
    assert_int_equal(tax_init(&t), CP_OK);
    uint32_t id, xq, jr, lc, hy, hj, cafe;
    assert_int_equal(tax_add(&t, "interest", "兴趣", NULL, 0, &xq, &err), CP_OK);
    assert_int_equal(tax_add(&t, "interest/finance", "金融", NULL, 0, &jr, &err), CP_OK);
    assert_int_equal(tax_add(&t, "interest/finance/wealth", "理财", NULL, 0, &lc, &err), CP_OK);
    assert_int_equal(tax_add(&t, "industry", "行业", NULL, 0, &hy, &err), CP_OK);
    assert_int_equal(tax_add(&t, "industry/finance", "金融", NULL, 0, &hj, &err), CP_OK);
    /* Added in NFD, stored NFC, found in either form. */
    assert_int_equal(tax_add(&t, "interest/" CAFE_NFD,
                             "Caf"
                             "\xc3\xa9"
                             " Lovers",
                             NULL, 0, &cafe, &err),
                     CP_OK);
    assert_string_equal(tax_get(&t, cafe)->path, "interest/" CAFE_NFC);
    assert_int_equal(tax_find(&t, "interest/" CAFE_NFD, strlen("interest/" CAFE_NFD)), cafe);
    assert_int_equal(tax_find(&t, "interest/" CAFE_NFC, strlen("interest/" CAFE_NFC)), cafe);
    assert_int_equal(tax_add(&t, "interest/" CAFE_NFC, NULL, NULL, 0, &id, &err), CP_EEXIST);

    uint32_t ids[4];
    size_t n = 0;
    /* Full display path, a suffix starting below the top, mixed slug and
     * name segments, ASCII case. */
    const char *one[] = {"兴趣/金融/理财", "金融/理财", "理财", "interest/金融/wealth",
                         "INTEREST/finance/Wealth"};
    for (size_t i = 0; i < CP_ARRAY_LEN(one); i++) {
        assert_int_equal(tax_find_display(&t, one[i], strlen(one[i]), ids, 4, &n), CP_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], lc);
    }
    assert_int_equal(tax_find_display(&t, "金融", strlen("金融"), ids, 4, &n), CP_OK);
    assert_int_equal(n, 2); /* interest/finance and industry/finance */
    assert_true((ids[0] == jr && ids[1] == hj) || (ids[0] == hj && ids[1] == jr));
    assert_int_equal(tax_find_display(&t, "行业/金融", strlen("行业/金融"), ids, 4, &n), CP_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], hj);
    assert_int_equal(tax_find_display(&t, "兴趣/行业", strlen("兴趣/行业"), ids, 4, &n), CP_OK);
    assert_int_equal(n, 0);
    assert_int_equal(tax_find_display(&t, "兴趣//理财", strlen("兴趣//理财"), ids, 4, &n), CP_OK);
    assert_int_equal(n, 0);
    /* A display name given in NFD matches the NFC name. */
    assert_int_equal(
        tax_find_display(&t, "cafe\xcc\x81 lovers", strlen("cafe\xcc\x81 lovers"), ids, 4, &n),
        CP_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], cafe);
    /* Moving to a Chinese slug path keeps it findable. */
    uint32_t *changed = NULL;
    size_t nchanged = 0;
    assert_int_equal(tax_move(&t, lc, "interest/finance/理财", &changed, &nchanged, &err), CP_OK);
    free(changed);
    assert_int_equal(tax_find(&t, "interest/finance/理财", strlen("interest/finance/理财")), lc);
    assert_int_equal(tax_move(&t, lc, "interest/finance/A", &changed, &nchanged, &err), CP_EINVAL);
    tax_free(&t);
}

static void test_crowd_names(void **state)
{
    (void)state;
    cp_error_t err = {0};
    assert_int_equal(crowd_validate_name("广州理财", &err), CP_OK);
    assert_int_equal(crowd_validate_name("VIP_白银-2024", &err), CP_OK);
    assert_int_equal(crowd_validate_name("广州 理财", &err), CP_EINVAL);
    assert_int_equal(crowd_validate_name("理财!", &err), CP_EINVAL);
    assert_int_equal(crowd_validate_name("\xe5\xb9", &err), CP_EINVAL); /* cut UTF-8 */
}

static char g_dir[256];

static void test_value_aliases(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "utf8");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(g_dir, STORE_CREATE, 1u << 26, 1, &st, &err), CP_OK);
    schema_t s;
    schema_init(&s);
    store_txn_t *txn;
    uint32_t id, gz, sz, v;
    int created;
    assert_int_equal(store_txn_begin(st, 1, &txn, &err), CP_OK);
    assert_int_equal(schema_define(&s, txn, "city", CP_ATTR_ENUM, &id, &created, &err), CP_OK);
    schema_attr_t *a = schema_find(&s, "city", 4);
    assert_int_equal(schema_value_intern(a, txn, "guangzhou", 9, &gz, &err), CP_OK);
    assert_int_equal(schema_value_intern(a, txn, "shenzhen", 8, &sz, &err), CP_OK);
    assert_int_equal(schema_alias_set(a, txn, "广州", strlen("广州"), gz, &err), CP_OK);
    assert_int_equal(schema_alias_set(a, txn, "穗", strlen("穗"), gz, &err), CP_OK);
    assert_int_equal(schema_alias_set(a, txn, "", 0, gz, &err), CP_EINVAL);
    /* Aliases resolve in lookups and at intake: no new value is made. */
    assert_int_equal(schema_value_find(a, "广州", strlen("广州")), gz);
    assert_int_equal(schema_value_intern(a, txn, "广州", strlen("广州"), &v, &err), CP_OK);
    assert_int_equal(v, gz);
    assert_int_equal(a->nvalues, 2);
    /* Retarget, then remove one: the other keeps its index right. */
    assert_int_equal(schema_alias_set(a, txn, "广州", strlen("广州"), sz, &err), CP_OK);
    assert_int_equal(schema_alias_find(a, "广州", strlen("广州")), sz);
    assert_int_equal(schema_alias_set(a, txn, "广州", strlen("广州"), gz, &err), CP_OK);
    assert_int_equal(schema_alias_remove(a, txn, "广州", strlen("广州"), &err), CP_OK);
    assert_int_equal(schema_alias_remove(a, txn, "广州", strlen("广州"), &err), CP_ENOTFOUND);
    assert_int_equal(schema_alias_find(a, "穗", strlen("穗")), gz);
    assert_int_equal(schema_alias_set(a, txn, "深圳", strlen("深圳"), sz, &err), CP_OK);
    assert_int_equal(store_txn_commit(txn, &err), CP_OK);

    schema_t s2;
    schema_init(&s2);
    assert_int_equal(store_txn_begin(st, 0, &txn, &err), CP_OK);
    assert_int_equal(schema_load(&s2, txn, &err), CP_OK);
    store_txn_abort(txn);
    schema_attr_t *b = schema_find(&s2, "city", 4);
    assert_int_equal(b->nalias, 2);
    assert_int_equal(schema_value_find(b, "穗", strlen("穗")), gz);
    assert_int_equal(schema_value_find(b, "深圳", strlen("深圳")), sz);
    assert_int_equal(schema_value_find(b, "广州", strlen("广州")), 0);
    schema_free(&s2);
    schema_free(&s);
    store_close(st);
    test_rmtree(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_rule),
        cmocka_unit_test(test_nfc_and_display),
        cmocka_unit_test(test_crowd_names),
        cmocka_unit_test(test_value_aliases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
