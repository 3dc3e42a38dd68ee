/*
 * test_index_measure.c — event measures against a naive per-user model:
 * random purchase/refund/view events over users in three chunks with
 * amounts as JSON reals, integers and strings, invoices as strings and
 * integers (which must meet), missing and non-numeric values (skipped);
 * then every user's sum, distinct count, count, first and last compared;
 * merges (values combine), deletion, a persistence round trip through
 * LMDB, a configuration change that keeps unchanged measures and empties
 * changed ones, decimal rounding, distinct saturation, and corrupt
 * records rejected with CP_EIO.
 */
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

#include "index/measure.h"
#include "util/util.h"

#define NU 300
#define NINV 40

typedef struct naive {
    int64_t sum; /* cents over purchase + refund */
    uint64_t nsum;
    uint8_t inv[NINV]; /* purchase invoices seen */
    uint64_t purchases;
    int64_t first, last;
} naive_t;

static uint32_t ord_of(int u)
{
    return (uint32_t)(u % 3) * 65536u * 7 + (uint32_t)u * 13; /* three chunks */
}

static void check_all(meas_t *m, naive_t *nv, const uint8_t *live)
{
    int isum = meas_find(m, "net_amount", NULL, NULL), iinv = meas_find(m, "invoices", NULL, NULL),
        icnt = meas_find(m, "purchases", NULL, NULL),
        ifst = meas_find(m, "first_purchase", NULL, NULL),
        ilst = meas_find(m, "last_purchase", NULL, NULL);
    assert_true(isum >= 0 && iinv >= 0 && icnt >= 0 && ifst >= 0 && ilst >= 0);
    for (int u = 0; u < NU; u++) {
        meas_value_t v;
        uint32_t o = ord_of(u);
        naive_t *x = &nv[u];
        int has = meas_get(m, isum, o, &v);
        assert_int_equal(has, live[u] && x->nsum > 0);
        if (has) {
            assert_int_equal(v.v, x->sum);
            assert_int_equal(v.n, x->nsum);
        }
        int ninv = 0;
        for (int i = 0; i < NINV; i++)
            ninv += x->inv[i];
        has = meas_get(m, iinv, o, &v);
        assert_int_equal(has, live[u] && ninv > 0);
        if (has)
            assert_int_equal(v.v, ninv);
        has = meas_get(m, icnt, o, &v);
        assert_int_equal(has, live[u] && x->purchases > 0);
        if (has) {
            assert_int_equal(v.v, (int64_t)x->purchases);
            assert_true(meas_get(m, ifst, o, &v));
            assert_int_equal(v.v, x->first);
            assert_true(meas_get(m, ilst, o, &v));
            assert_int_equal(v.v, x->last);
        }
    }
}

static void feed(meas_t *m, naive_t *nv, uint64_t *rs, int events)
{
    for (int i = 0; i < events; i++) {
        int u = (int)(rand_next(rs) % NU);
        int kind = (int)(rand_next(rs) % 10);
        const char *ev = kind < 6 ? "purchase" : kind < 8 ? "refund" : "view";
        int64_t cents = (int64_t)(rand_next(rs) % 100000) - (kind >= 6 && kind < 8 ? 100000 : 0);
        int inv = (int)(rand_next(rs) % NINV);
        int64_t ts = 1300000000 + (int64_t)(rand_next(rs) % 100000000);
        json_t *p = json_object();
        int form = (int)(rand_next(rs) % 5);
        char buf[64];
        int counted = 1;
        if (form == 0) {
            json_object_set_new(p, "amount", json_real((double)cents / 100.0));
        } else if (form == 1 && cents % 100 == 0) {
            json_object_set_new(p, "amount", json_integer(cents / 100));
        } else if (form == 2) {
            snprintf(buf, sizeof buf, "%s%lld.%02lld", cents < 0 ? "-" : "",
                     (long long)(llabs(cents) / 100), (long long)(llabs(cents) % 100));
            json_object_set_new(p, "amount", json_string(buf));
        } else if (form == 3) {
            json_object_set_new(p, "amount", json_string("n/a")); /* skipped */
            counted = 0;
        } else {
            counted = 0; /* missing */
        }
        if (rand_next(rs) % 2)
            json_object_set_new(p, "invoice", json_integer(1000 + inv));
        else {
            snprintf(buf, sizeof buf, "%d", 1000 + inv);
            json_object_set_new(p, "invoice", json_string(buf));
        }
        assert_int_equal(meas_record_event(m, ord_of(u), ev, strlen(ev), p, ts), CP_OK);
        json_decref(p);
        naive_t *x = &nv[u];
        if (kind < 8 && counted) {
            x->sum += cents;
            x->nsum++;
        }
        if (kind < 6) {
            x->inv[inv] = 1;
            if (x->purchases == 0 || ts < x->first)
                x->first = ts;
            if (x->purchases == 0 || ts > x->last)
                x->last = ts;
            x->purchases++;
        }
    }
}

static char g_dir[256];

static store_t *fresh_store(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "measure");
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

static void persist(store_t *st, meas_t *m)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    if (meas_persist(m, t, STORE_INTAKE, &err) != CP_OK)
        fail_msg("persist: %s", err.message);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    assert_int_equal(meas_dirty_count(m), 0);
}

static meas_t *reload(store_t *st, cp_status want, const char *msg)
{
    meas_t *m = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(meas_create(&m), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    cp_status rc = meas_load(m, t, STORE_INTAKE, &err);
    store_txn_abort(t);
    assert_int_equal(rc, want);
    if (msg && strstr(err.message, msg) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", msg, err.message);
    if (rc) {
        meas_free(m);
        return NULL;
    }
    return m;
}

static void test_against_naive(void **state)
{
    (void)state;
    meas_t *m = NULL;
    assert_int_equal(meas_create(&m), CP_OK);
    naive_t *nv = calloc(NU, sizeof *nv);
    uint8_t live[NU];
    memset(live, 1, sizeof live);
    uint64_t rs = 7;
    feed(m, nv, &rs, 20000);
    check_all(m, nv, live);
    assert_true(meas_skipped(m) > 0);

    /* merges: user a into user b */
    for (int i = 0; i < 20; i++) {
        int a = 2 * i + 1, b = 2 * i + 100;
        assert_int_equal(meas_user_move(m, ord_of(a), ord_of(b)), CP_OK);
        naive_t *x = &nv[a], *y = &nv[b];
        y->sum += x->sum;
        y->nsum += x->nsum;
        for (int k = 0; k < NINV; k++)
            y->inv[k] |= x->inv[k];
        if (x->purchases) {
            if (!y->purchases || x->first < y->first)
                y->first = x->first;
            if (!y->purchases || x->last > y->last)
                y->last = x->last;
        }
        y->purchases += x->purchases;
        memset(x, 0, sizeof *x);
    }
    /* deletions */
    for (int u = 250; u < 260; u++) {
        meas_user_remove(m, ord_of(u));
        memset(&nv[u], 0, sizeof nv[u]);
    }
    check_all(m, nv, live);

    /* persistence round trip */
    store_t *st = fresh_store();
    persist(st, m);
    meas_t *m2 = reload(st, CP_OK, NULL);
    check_all(m2, nv, live);
    /* more events after reload, persisted incrementally */
    feed(m2, nv, &rs, 3000);
    check_all(m2, nv, live);
    persist(st, m2);
    meas_t *m3 = reload(st, CP_OK, NULL);
    check_all(m3, nv, live);

    /* configuration change: net_amount unchanged, invoices changed */
    json_t *cfg = json_loads(
        "{\"measures\":[{\"name\":\"net_amount\",\"kind\":\"sum\",\"events\":[\"purchase\","
        "\"refund\"],\"property\":\"amount\",\"scale\":2},{\"name\":\"invoices\",\"kind\":"
        "\"distinct\",\"events\":[\"purchase\",\"refund\"],\"property\":\"invoice\"}]}",
        0, NULL);
    cp_error_t err = {0};
    assert_int_equal(meas_config_set_json(m3, cfg, &err), CP_OK);
    json_decref(cfg);
    assert_int_equal(meas_count(m3), 2);
    assert_int_equal(meas_find(m3, "purchases", NULL, NULL), -1);
    int is = meas_find(m3, "net_amount", NULL, NULL), ii = meas_find(m3, "invoices", NULL, NULL);
    for (int u = 0; u < NU; u++) {
        meas_value_t v;
        int has = meas_get(m3, is, ord_of(u), &v);
        assert_int_equal(has, nv[u].nsum > 0);
        if (has)
            assert_int_equal(v.v, nv[u].sum);
        assert_false(meas_get(m3, ii, ord_of(u), &v));
    }
    persist(st, m3);
    meas_t *m4 = reload(st, CP_OK, NULL);
    assert_int_equal(meas_count(m4), 2);
    for (int u = 0; u < NU; u++) {
        meas_value_t v;
        int has = meas_get(m4, is, ord_of(u), &v);
        assert_int_equal(has, nv[u].nsum > 0);
        if (has)
            assert_int_equal(v.v, nv[u].sum);
    }
    /* bad configurations are rejected, naming the field */
    const char *bad[] = {
        "{\"measures\":[{\"name\":\"x\",\"kind\":\"avg\",\"events\":[\"a\"]}]}",
        "{\"measures\":[{\"name\":\"x\",\"kind\":\"sum\",\"events\":[\"a\"]}]}",
        "{\"measures\":[{\"name\":\"X\",\"kind\":\"count\",\"events\":[\"a\"]}]}",
        "{\"measures\":[{\"name\":\"x\",\"kind\":\"count\",\"events\":[]}]}",
        "{\"measures\":[{\"name\":\"x\",\"kind\":\"count\",\"events\":[\"a\"],\"scale\":2}]}",
        ("{\"measures\":[{\"name\":\"x\",\"kind\":\"count\",\"events\":[\"a\"]},"
         "{\"name\":\"x\",\"kind\":\"last\",\"events\":[\"a\"]}]}"), /* duplicate name */
        "{\"other\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        assert_int_equal(meas_config_set_json(m4, j, &err), CP_EINVAL);
        json_decref(j);
    }
    assert_int_equal(meas_count(m4), 2);

    meas_free(m);
    meas_free(m2);
    meas_free(m3);
    meas_free(m4);
    drop_store(st);
    free(nv);
}

static void test_rounding_and_saturation(void **state)
{
    (void)state;
    meas_t *m = NULL;
    assert_int_equal(meas_create(&m), CP_OK);
    struct {
        const char *json;
        int64_t cents;
    } cases[] = {
        {"{\"amount\":15.3}", 1530},     {"{\"amount\":2.675}", 268}, /* text 2.675: half up */
        {"{\"amount\":\"-0.005\"}", -1}, {"{\"amount\":1e-07}", 0},   {"{\"amount\":12}", 1200},
        {"{\"amount\":\"7\"}", 700},     {"{\"amount\":0.1}", 10},
    };
    int64_t want = 0;
    int is = meas_find(m, "net_amount", NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *p = json_loads(cases[i].json, 0, NULL);
        assert_int_equal(meas_record_event(m, 5, "purchase", 8, p, 100), CP_OK);
        json_decref(p);
        want += cases[i].cents;
        meas_value_t v;
        assert_true(meas_get(m, is, 5, &v));
        if (v.v != want)
            fail_msg("case %zu (%s): sum %lld, want %lld", i, cases[i].json, (long long)v.v,
                     (long long)want);
    }
    /* distinct saturation: the set stops at MEAS_DISTINCT_MAX */
    int ii = meas_find(m, "invoices", NULL, NULL);
    for (uint32_t i = 0; i < MEAS_DISTINCT_MAX + 10; i++) {
        json_t *p = json_pack("{s:I}", "invoice", (json_int_t)i);
        assert_int_equal(meas_record_event(m, 9, "purchase", 8, p, 100), CP_OK);
        json_decref(p);
    }
    meas_value_t v;
    assert_true(meas_get(m, ii, 9, &v));
    assert_int_equal(v.v, MEAS_DISTINCT_MAX);
    assert_true(v.flags & MEAS_FLAG_SATURATED);
    meas_free(m);
}

static void put_raw(store_t *st, const void *k, size_t kl, const void *v, size_t vl)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(store_put(t, STORE_INTAKE, k, kl, v, vl, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

static void test_corrupt(void **state)
{
    (void)state;
    store_t *st = fresh_store();
    meas_t *m = NULL;
    assert_int_equal(meas_create(&m), CP_OK);
    json_t *p = json_loads("{\"amount\":1.5,\"invoice\":\"A1\"}", 0, NULL);
    assert_int_equal(meas_record_event(m, 3, "purchase", 8, p, 100), CP_OK);
    json_decref(p);
    persist(st, m);
    meas_free(m);
    uint8_t key[11] = {'m', 'e', 'a', 's', '/', 'u', '/', 0, 0, 0, 3};
    put_raw(st, key, sizeof key, "MU\x01", 3);
    assert_null(reload(st, CP_EIO, "corrupt record header"));
    put_raw(st, key, sizeof key, "MU\x01\x01\x01\x00\x09\x00", 8);
    assert_null(reload(st, CP_EIO, "truncated slot"));
    uint8_t slot[4 + 20] = {'M', 'U', 1, 1, 1, 0, 1 /* sum */, 0x80 /* bad flag */};
    slot[16] = 1;
    put_raw(st, key, sizeof key, slot, sizeof slot);
    assert_null(reload(st, CP_EIO, "corrupt slot"));
    uint8_t dist[4 + 20 + 4 + 8] = {'M', 'U', 1, 1, 2, 0, 3 /* distinct */, 0};
    dist[8] = 2;  /* value 2 */
    dist[16] = 1; /* n 1 */
    dist[24] = 2; /* two hashes announced, one given */
    put_raw(st, key, sizeof key, dist, sizeof dist);
    assert_null(reload(st, CP_EIO, "corrupt distinct set"));
    put_raw(st, "meas/config", 11, "{\"measures\":[{\"name\":\"x\"}]}", 27);
    assert_null(reload(st, CP_EIO, "corrupt configuration"));
    drop_store(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_naive),
        cmocka_unit_test(test_rounding_and_saturation),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
