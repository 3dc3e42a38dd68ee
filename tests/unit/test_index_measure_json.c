/*
 * test_index_measure_json.c — the measures configuration as JSON under
 * memory pressure: jansson's allocator fails at the 1st, 2nd, ... call of
 * meas_config_json() until it succeeds. Each failing call must return NULL
 * (never a document missing a field, which would be persisted as another
 * configuration), and the first complete one must equal the document
 * built without failures. Leaks, if any, show under the ASan build.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "index/measure.h"
#include "util/util.h"

/* Allocations jansson may still make; < 0: no limit. */
static long g_budget = -1;

static void *budget_malloc(size_t n)
{
    if (g_budget == 0)
        return NULL;
    if (g_budget > 0)
        g_budget--;
    return malloc(n);
}

static void test_config_json_oom(void **state)
{
    (void)state;
    json_set_alloc_funcs(budget_malloc, free);
    meas_t *m = NULL;
    cp_error_t err = {0};
    assert_int_equal(meas_create(&m), CP_OK);
    json_t *cfg =
        json_loads("{\"measures\":["
                   "{\"name\":\"net_amount\",\"kind\":\"sum\",\"events\":[\"purchase\",\"refund\"],"
                   "\"property\":\"amount\",\"scale\":2},"
                   "{\"name\":\"invoices\",\"kind\":\"distinct\",\"events\":[\"purchase\"],"
                   "\"property\":\"invoice\"},"
                   "{\"name\":\"purchases\",\"kind\":\"count\",\"events\":[\"purchase\",\"购买\"]},"
                   "{\"name\":\"first_seen\",\"kind\":\"first\",\"events\":[\"view\"]}]}",
                   0, NULL);
    assert_non_null(cfg);
    cp_status st = meas_config_set_json(m, cfg, &err);
    if (st != CP_OK)
        fprintf(stderr, "%s\n", err.message);
    assert_int_equal(st, CP_OK);
    json_decref(cfg);

    json_t *want = meas_config_json(m);
    assert_non_null(want);
    char *want_s = json_dumps(want, JSON_COMPACT);
    assert_non_null(want_s);
    assert_non_null(strstr(want_s, "\"scale\":2"));
    assert_non_null(strstr(want_s, "\"property\":\"invoice\""));

    long failures = 0;
    for (long budget = 0;; budget++) {
        assert_true(budget < 10000);
        g_budget = budget;
        json_t *j = meas_config_json(m);
        g_budget = -1;
        if (j == NULL) {
            failures++;
            continue;
        }
        char *s = json_dumps(j, JSON_COMPACT);
        assert_non_null(s);
        assert_string_equal(s, want_s);
        free(s);
        json_decref(j);
        break;
    }
    assert_true(failures > 10); /* one failure per allocation of the document */
    free(want_s);
    json_decref(want);
    meas_free(m);
    json_set_alloc_funcs(malloc, free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_json_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
