/* test_util_time.c — ISO 8601 parsing and formatting against the C
 * library's own calendar (timegm/gmtime_r): round trips over the whole range
 * 0001..9999, every accepted form, offsets, and bad input of every kind,
 * including lengths that end inside the text (the parser must read no byte
 * past len). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <time.h>

#include "util/util.h"

static int64_t parse(const char *s)
{
    int64_t v = 0;
    if (time_parse(s, strlen(s), &v) != 0)
        fail_msg("time_parse rejected \"%s\"", s);
    return v;
}

/* Parses s from an exact-size heap copy, so ASan sees any read past len. */
static int parse_exact(const char *s, size_t len, int64_t *v)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    int rc = time_parse(copy, len, v);
    free(copy);
    return rc;
}

static void test_known_values(void **state)
{
    (void)state;
    assert_int_equal(parse("1970-01-01"), 0);
    assert_int_equal(parse("1970-01-01T00:00:01Z"), 1);
    assert_int_equal(parse("2024-01-01"), 1704067200);
    assert_int_equal(parse("2024-01-01T10:20:30"), 1704067200 + 37230);
    assert_int_equal(parse("2024-01-01T10:20:30Z"), 1704067200 + 37230);
    assert_int_equal(parse("2024-01-01t10:20:30z"), 1704067200 + 37230);
    assert_int_equal(parse("2024-01-01 10:20:30"), 1704067200 + 37230);
    assert_int_equal(parse("2024-01-01T10:20"), 1704067200 + 37200);
    assert_int_equal(parse("2024-01-01T10:20:30.999"), 1704067200 + 37230); /* truncated */
    assert_int_equal(parse("2024-01-01T10:20:30,5Z"), 1704067200 + 37230);
    assert_int_equal(parse("2024-01-01T10:20:30.123+08:00"), 1704067200 + 37230 - 8 * 3600);
    assert_int_equal(parse("2024-01-01T10:20:30+0800"), 1704067200 + 37230 - 8 * 3600);
    assert_int_equal(parse("2024-01-01T10:20:30-05:30"), 1704067200 + 37230 + 5 * 3600 + 1800);
    assert_int_equal(parse("1969-12-31T23:59:59Z"), -1);
    assert_int_equal(parse("2024-02-29"), 1709164800);
    assert_int_equal(parse("2000-02-29"), 951782400);
    assert_int_equal(parse("0001-01-01"), -62135596800ll);
    assert_int_equal(parse("9999-12-31T23:59:59Z"), 253402300799ll);
    /* A length shorter than the string: only the date is read. */
    int64_t v = 0;
    assert_int_equal(time_parse("2024-01-01T10:20:30Z", 10, &v), 0);
    assert_int_equal(v, 1704067200);
}

static void test_bad_input(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "2024",
        "2024-01",
        "2024-1-01",
        "2024-01-1",
        "24-01-01",
        "2024/01/01",
        "2024-00-10",
        "2024-13-01",
        "2024-01-00",
        "2024-01-32",
        "2023-02-29",
        "1900-02-29",
        "2024-04-31",
        "0000-01-01",
        "-001-01-01",
        "２０２４-01-01",
        "2024-01-01T",
        "2024-01-01X10:20:30",
        "2024-01-01T1",
        "2024-01-01T10",
        "2024-01-01T10:",
        "2024-01-01T10:2",
        "2024-01-01T24:00:00",
        "2024-01-01T10:60:00",
        "2024-01-01T10:20:61",
        "2024-01-01T10:20:3",
        "2024-01-01T10:20:30.",
        "2024-01-01T10:20:30.Z",
        "2024-01-01T10:20:30ZZ",
        "2024-01-01T10:20:30Zx",
        "2024-01-01T10:20:30+",
        "2024-01-01T10:20:30+8",
        "2024-01-01T10:20:30+08:",
        "2024-01-01T10:20:30+08:0",
        "2024-01-01T10:20:30+24:00",
        "2024-01-01T10:20:30+08:60",
        "2024-01-01T10:20:30+08:00Z",
        "2024-01-01T10:20:30 ",
        "2024-01-01 ",
        " 2024-01-01",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        int64_t v = 12345;
        if (parse_exact(bad[i], strlen(bad[i]), &v) != -1)
            fail_msg("time_parse accepted \"%s\" as %lld", bad[i], (long long)v);
        assert_int_equal(v, 12345); /* untouched on failure */
    }
    /* Every prefix of a full timestamp, from an exact-size buffer. */
    const char *full = "2024-01-01T10:20:30.123+08:00";
    for (size_t n = 0; n <= strlen(full); n++) {
        int64_t v;
        (void)parse_exact(full, n, &v);
    }
    /* Random bytes over a valid skeleton: no crash, no read past len. */
    uint64_t rng = 7;
    for (int i = 0; i < 200000; i++) {
        char s[40];
        size_t n = (size_t)(rand_next(&rng) % sizeof s);
        memcpy(s, full, n < strlen(full) ? n : strlen(full));
        for (size_t k = strlen(full); k < n; k++)
            s[k] = '0';
        int flips = (int)(rand_next(&rng) % 3);
        for (int f = 0; f < flips && n > 0; f++)
            s[rand_next(&rng) % n] = (char)(rand_next(&rng) & 0xFF);
        int64_t v;
        (void)parse_exact(s, n, &v);
    }
}

/* time_format, then time_parse, gives back the same second; both agree with
 * gmtime_r/timegm, which implement the same proleptic Gregorian calendar. */
static void test_round_trip(void **state)
{
    (void)state;
    const int64_t lo = -62135596800ll, hi = 253402300799ll; /* 0001..9999 */
    uint64_t rng = 42;
    for (int i = 0; i < 200000; i++) {
        int64_t s;
        if (i < 1000)
            s = lo + i;
        else if (i < 2000)
            s = hi - (i - 1000);
        else if (i < 3000)
            s = (int64_t)(i - 2500) * 86399; /* around the epoch */
        else
            s = lo + (int64_t)(rand_next(&rng) % (uint64_t)(hi - lo + 1));
        char buf[32];
        time_format(s, buf, sizeof buf);
        assert_int_equal(strlen(buf), 20);
        int64_t back = 0;
        if (time_parse(buf, strlen(buf), &back) != 0 || back != s)
            fail_msg("%lld -> %s -> %lld", (long long)s, buf, (long long)back);
        time_t t = (time_t)s;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        char ref[64];
        snprintf(ref, sizeof ref, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        assert_string_equal(buf, ref);
    }
}

/* Every valid calendar day 1900..2100 parses to timegm's answer; every
 * invalid day number of each month is refused. */
static void test_every_day(void **state)
{
    (void)state;
    for (int y = 1900; y <= 2100; y++)
        for (int m = 1; m <= 12; m++)
            for (int d = 1; d <= 32; d++) {
                struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
                time_t want = timegm(&tm);
                int real = tm.tm_mday == d; /* timegm normalised an invalid day */
                char s[16];
                snprintf(s, sizeof s, "%04d-%02d-%02d", y, m, d);
                int64_t v = 0;
                int rc = time_parse(s, strlen(s), &v);
                if (real) {
                    assert_int_equal(rc, 0);
                    assert_int_equal(v, (int64_t)want);
                } else if (rc != -1) {
                    fail_msg("time_parse accepted %s", s);
                }
            }
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    assert_true(now > 1700000000000ll);
    uint64_t a = time_mono_ns(), b = time_mono_ns();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_values), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_every_day),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
