/*
 * test_index_measure_typed.c — the typed path of the event measures:
 *
 *  - meas_real_fixed (the fast fixed-point rounding of reals) against
 *    meas_real_fixed_slow (format the shortest text, round it) on millions
 *    of doubles: random decimals with 0 to 8 decimals, random bit patterns
 *    (NaN, infinities, subnormals included), exact binary fractions and
 *    decimal halves (0.125, 2.675) and the doubles a few ulps around
 *    them, products of quantities and prices, negative and huge values,
 *    scales 0..6;
 *  - a random event stream recorded through meas_record_event (JSON) into
 *    one index and through meas_record (ev_prop_t built by hand, not by
 *    pv_from_json) into another gives identical values for every user and
 *    measure, identical skip counts and identical dirty sets.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "index/measure.h"
#include "model/propval.h"
#include "util/util.h"

static void same_fixed(double d, int scale)
{
    int64_t a = 0x5a5a, b = 0x5a5a;
    int ra = meas_real_fixed(d, scale, &a), rb = meas_real_fixed_slow(d, scale, &b);
    if (ra != rb || (ra == 0 && a != b))
        fail_msg("%.17g at scale %d: fast %d/%lld, slow %d/%lld", d, scale, ra, (long long)a, rb,
                 (long long)b);
}

static void all_scales(double d)
{
    for (int s = 0; s <= MEAS_MAX_SCALE; s++) {
        same_fixed(d, s);
        same_fixed(-d, s);
    }
}

/* A random decimal of `dec` decimals and up to `ip` integer digits, read
 * the way JSON parsers read it (strtod: the nearest double). */
static double rand_decimal(uint64_t *rs, int ip, int dec)
{
    char buf[64];
    uint64_t lim = 1;
    for (int i = 0; i < ip; i++)
        lim *= 10;
    uint64_t whole = rand_next(rs) % lim;
    int o = snprintf(buf, sizeof buf, "%llu", (unsigned long long)whole);
    if (dec > 0) {
        buf[o++] = '.';
        for (int i = 0; i < dec; i++)
            buf[o++] = (char)('0' + rand_next(rs) % 10);
        buf[o] = 0;
    }
    return strtod(buf, NULL);
}

static void test_fixed_fast_matches_slow(void **state)
{
    (void)state;
    uint64_t rs = 0xf1cedu;
    /* Known answers: the written decimal is what is rounded. */
    int64_t v;
    assert_int_equal(meas_real_fixed(2.675, 2, &v), 0);
    assert_int_equal(v, 268);
    assert_int_equal(meas_real_fixed(-2.675, 2, &v), 0);
    assert_int_equal(v, -268);
    assert_int_equal(meas_real_fixed(0.125, 2, &v), 0);
    assert_int_equal(v, 13);
    assert_int_equal(meas_real_fixed(15.3, 2, &v), 0);
    assert_int_equal(v, 1530);
    assert_int_equal(meas_real_fixed(1e-7, 6, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(meas_real_fixed(0.00005, 6, &v), 0);
    assert_int_equal(v, 50);
    assert_int_equal(meas_real_fixed(NAN, 2, &v), -1);
    assert_int_equal(meas_real_fixed(INFINITY, 2, &v), -1);
    assert_int_equal(meas_real_fixed(1e300, 0, &v), -1);
    assert_int_equal(meas_real_fixed(1.5, 7, &v), -1);
    assert_int_equal(meas_real_fixed(1.5, -1, &v), -1);

    const double fixed[] = {0.0,
                            -0.0,
                            0.5,
                            1.5,
                            2.5,
                            0.125,
                            0.375,
                            2.675,
                            1.005,
                            1.015,
                            1.025,
                            0.045,
                            1e-4,
                            1e-5,
                            5e-5,
                            1e-6,
                            5e-7,
                            1e-7,
                            0.1,
                            0.2,
                            0.3,
                            1e14,
                            1e15,
                            1e15 - 1,
                            999999999999999.9,
                            9.2e18,
                            9.3e18,
                            1e19,
                            1e22,
                            4503599627370496.5,
                            9007199254740993.0,
                            0.1 + 0.2,
                            123456.7890125,
                            5e-324,
                            2.2250738585072014e-308};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        all_scales(fixed[i]);

    for (int i = 0; i < 100000; i++) {
        /* random decimals, 0..8 decimals, 0..13 integer digits */
        all_scales(rand_decimal(&rs, (int)(rand_next(&rs) % 14), (int)(rand_next(&rs) % 9)));
    }
    for (int i = 0; i < 60000; i++) {
        /* random bit patterns: every exponent, NaN, infinities, subnormals */
        uint64_t bits = rand_next(&rs);
        double d;
        memcpy(&d, &bits, sizeof d);
        all_scales(d);
    }
    for (int i = 0; i < 60000; i++) {
        /* exact binary fractions (k / 2^m): ties at a scale's last digit */
        int m = 1 + (int)(rand_next(&rs) % 12);
        double d = (double)(rand_next(&rs) % 100000000) / (double)(1u << m);
        all_scales(d);
    }
    for (int i = 0; i < 60000; i++) {
        /* decimal halves: digits then a final 5 one place past a scale */
        int dec = 1 + (int)(rand_next(&rs) % 7);
        char buf[64];
        int o = snprintf(buf, sizeof buf, "%llu.", (unsigned long long)(rand_next(&rs) % 100000));
        for (int j = 0; j < dec - 1; j++)
            buf[o++] = (char)('0' + rand_next(&rs) % 10);
        buf[o++] = '5';
        buf[o] = 0;
        all_scales(strtod(buf, NULL));
    }
    for (int i = 0; i < 60000; i++) {
        /* products of a quantity and a price (Online Retail's amount):
         * mostly not the decimal they stand for (6 * 2.55) */
        double q = (double)(1 + rand_next(&rs) % 1000);
        double price = (double)(rand_next(&rs) % 100000) / 100.0;
        all_scales(q * price);
        all_scales(q * price / 7.0);
    }
    for (int i = 0; i < 30000; i++) {
        /* a few ulps around decimal halves: the fast path's margin */
        double h = rand_decimal(&rs, 1 + (int)(rand_next(&rs) % 8), 0) +
                   (double)(2 * (rand_next(&rs) % 500000) + 1) / 1000000.0;
        double lo = h, hi = h;
        all_scales(h);
        for (int k = 0; k < 4; k++) {
            lo = nextafter(lo, -INFINITY);
            hi = nextafter(hi, INFINITY);
            all_scales(lo);
            all_scales(hi);
        }
    }
    for (int i = 0; i < 20000; i++) {
        /* big values near and past the fast path's 10^15 bound */
        double d = ldexp(rand_double(&rs) + 0.5, 40 + (int)(rand_next(&rs) % 26));
        all_scales(d);
        all_scales(floor(d));
        all_scales(nextafter(d, INFINITY));
    }
}

/* ------------------------------------------------ JSON vs typed events */

#define NU 400
#define CONFIG                                                                                     \
    "{\"measures\":["                                                                              \
    "{\"name\":\"net\",\"kind\":\"sum\",\"events\":[\"purchase\",\"refund\"],"                     \
    "\"property\":\"amount\",\"scale\":2},"                                                        \
    "{\"name\":\"net0\",\"kind\":\"sum\",\"events\":[\"purchase\"],\"property\":\"amount\","       \
    "\"scale\":0},"                                                                                \
    "{\"name\":\"net6\",\"kind\":\"sum\",\"events\":[\"refund\",\"purchase\"],"                    \
    "\"property\":\"amount\",\"scale\":6},"                                                        \
    "{\"name\":\"qty\",\"kind\":\"sum\",\"events\":[\"purchase\"],\"property\":\"quantity\","      \
    "\"scale\":0},"                                                                                \
    "{\"name\":\"invoices\",\"kind\":\"distinct\",\"events\":[\"purchase\"],"                      \
    "\"property\":\"invoice\"},"                                                                   \
    "{\"name\":\"amounts\",\"kind\":\"distinct\",\"events\":[\"purchase\",\"view\"],"              \
    "\"property\":\"amount\"},"                                                                    \
    "{\"name\":\"n\",\"kind\":\"count\",\"events\":[\"purchase\",\"view\"]},"                      \
    "{\"name\":\"first\",\"kind\":\"first\",\"events\":[\"purchase\"]},"                           \
    "{\"name\":\"last\",\"kind\":\"last\",\"events\":[\"view\",\"refund\"]}]}"

/* One random value under `name`, as JSON (set into obj) and typed. */
static void rand_value(uint64_t *rs, const char *name, json_t *obj, ev_prop_t *p, char *sbuf)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->nlen = strlen(name);
    int form = (int)(rand_next(rs) % 9);
    json_t *v = NULL;
    switch (form) {
    case 0:
    case 1: { /* a real with 0..4 decimals (the common case) */
        double d = rand_decimal(rs, 1 + (int)(rand_next(rs) % 6), (int)(rand_next(rs) % 5));
        if (rand_next(rs) % 4 == 0)
            d = -d;
        p->kind = PV_REAL;
        p->d = d;
        v = json_real(d);
        break;
    }
    case 2: { /* any real, halves and many decimals included */
        double d = (rand_double(rs) - 0.3) * pow(10.0, (double)(rand_next(rs) % 12));
        p->kind = PV_REAL;
        p->d = d;
        v = json_real(d);
        break;
    }
    case 3: {
        int64_t x = (int64_t)(rand_next(rs) % 2000) - 500;
        if (rand_next(rs) % 50 == 0)
            x = INT64_MAX - (int64_t)(rand_next(rs) % 10); /* overflows at scale > 0 */
        p->kind = PV_INT;
        p->i = x;
        v = json_integer((json_int_t)x);
        break;
    }
    case 4: { /* a numeric string */
        snprintf(sbuf, 40, "%lld.%03d", (long long)(rand_next(rs) % 1000) - 300,
                 (int)(rand_next(rs) % 1000));
        p->kind = PV_STR;
        p->s = sbuf;
        p->slen = strlen(sbuf);
        v = json_string(sbuf);
        break;
    }
    case 5: { /* a string that is no number (sums skip it, distinct counts it) */
        snprintf(sbuf, 40, "inv-%d", (int)(rand_next(rs) % 30));
        p->kind = PV_STR;
        p->s = sbuf;
        p->slen = strlen(sbuf);
        v = json_string(sbuf);
        break;
    }
    case 6:
        p->kind = PV_BOOL;
        p->i = (int64_t)(rand_next(rs) % 2);
        v = json_boolean(p->i);
        break;
    case 7:
        p->kind = PV_NONE; /* null */
        v = json_null();
        break;
    default:
        p->kind = PV_NONE; /* missing */
        break;
    }
    if (v)
        json_object_set_new(obj, name, v);
}

static void test_json_and_typed_agree(void **state)
{
    (void)state;
    meas_t *mj = NULL, *mt = NULL;
    cp_error_t err = {0};
    assert_int_equal(meas_create(&mj), CP_OK);
    assert_int_equal(meas_create(&mt), CP_OK);
    json_t *cfg = json_loads(CONFIG, 0, NULL);
    assert_non_null(cfg);
    assert_int_equal(meas_config_set_json(mj, cfg, &err), CP_OK);
    assert_int_equal(meas_config_set_json(mt, cfg, &err), CP_OK);
    json_decref(cfg);
    static const char *events[] = {"purchase", "refund", "view", "purchases", "purchas", "x"};
    static const char *names[] = {"amount", "quantity", "invoice", "color", "amount2"};
    uint64_t rs = 0x7e57ed;
    for (int i = 0; i < 60000; i++) {
        uint32_t user = (uint32_t)(rand_next(&rs) % NU) * 40503u; /* several chunks */
        if (i % 7 != 0 && i > 0)
            user = (uint32_t)(rand_next(&rs) % 3) * 40503u; /* runs of a few users */
        const char *ev = events[rand_next(&rs) % 6];
        int64_t ts = 1300000000 + (int64_t)(rand_next(&rs) % 100000000) - 50000000;
        json_t *obj = json_object();
        ev_prop_t props[8];
        char sbuf[8][40];
        size_t n = 0;
        int np = (int)(rand_next(&rs) % 6), used = 0;
        for (int k = 0; k < np; k++) {
            int which = (int)(rand_next(&rs) % 5);
            const char *name = names[which];
            if (used & (1 << which))
                continue; /* JSON objects have one value per name */
            used |= 1 << which;
            ev_prop_t p;
            rand_value(&rs, name, obj, &p, sbuf[n]);
            if (p.kind != PV_NONE || rand_next(&rs) % 2)
                props[n++] = p; /* a PV_NONE is the same as absent */
        }
        /* Shuffle: order must not matter. */
        for (size_t k = n; k > 1; k--) {
            size_t j = (size_t)(rand_next(&rs) % k);
            ev_prop_t t = props[k - 1];
            props[k - 1] = props[j];
            props[j] = t;
        }
        const json_t *jp = np == 0 && rand_next(&rs) % 2 ? NULL : obj;
        assert_int_equal(meas_record_event(mj, user, ev, strlen(ev), jp, ts), CP_OK);
        assert_int_equal(meas_record(mt, user, ev, strlen(ev), props, n, ts), CP_OK);
        json_decref(obj);
    }
    assert_int_equal(meas_skipped(mj), meas_skipped(mt));
    assert_true(meas_skipped(mj) > 1000);
    assert_true(roaring_bitmap_equals(meas_users(mj), meas_users(mt)));
    assert_int_equal(meas_dirty_count(mj), meas_dirty_count(mt));
    assert_int_equal(meas_count(mj), 9);
    size_t values = 0;
    for (uint32_t u = 0; u < NU; u++)
        for (int k = 0; k < (int)meas_count(mj); k++) {
            meas_value_t a, b;
            memset(&a, 0, sizeof a);
            memset(&b, 0, sizeof b);
            int ha = meas_get(mj, k, u * 40503u, &a), hb = meas_get(mt, k, u * 40503u, &b);
            assert_int_equal(ha, hb);
            if (!ha)
                continue;
            values++;
            if (a.v != b.v || a.n != b.n || a.flags != b.flags)
                fail_msg("user %u measure %d: json %lld/%llu/%u typed %lld/%llu/%u", u, k,
                         (long long)a.v, (unsigned long long)a.n, a.flags, (long long)b.v,
                         (unsigned long long)b.n, b.flags);
        }
    assert_true(values > 2000);
    /* The listener cache follows configuration changes. */
    cfg = json_loads("{\"measures\":[{\"name\":\"v\",\"kind\":\"count\",\"events\":[\"x\"]}]}", 0,
                     NULL);
    assert_int_equal(meas_config_set_json(mt, cfg, &err), CP_OK);
    json_decref(cfg);
    assert_int_equal(meas_record(mt, 5, "purchase", 8, NULL, 0, 1), CP_OK);
    meas_value_t v;
    assert_int_equal(meas_get(mt, 0, 5, &v), 0);
    assert_int_equal(meas_record(mt, 5, "x", 1, NULL, 0, 1), CP_OK);
    assert_int_equal(meas_get(mt, 0, 5, &v), 1);
    assert_int_equal(v.n, 1);
    meas_free(mj);
    meas_free(mt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_fast_matches_slow),
        cmocka_unit_test(test_json_and_typed_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
