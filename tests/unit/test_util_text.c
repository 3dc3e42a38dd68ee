/* test_util_text.c — UTF-8 validation against a naive reference written
 * from the Unicode table of well-formed byte sequences (exhaustive over all
 * one-, two- and three-byte strings, random over longer ones); error records
 * and their truncation; fmt_double's shortest round trip; hash64, mem_eq and
 * the splitmix64 generator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <xxhash.h>

#include "util/util.h"

/* The Unicode Standard, Table 3-7 "Well-Formed UTF-8 Byte Sequences",
 * row by row: deliberately a different shape from utf8_valid's decoder. */
static int naive_utf8(const unsigned char *s, size_t len)
{
    static const struct {
        unsigned char lead_lo, lead_hi, lo2, hi2;
        int n;
    } rows[] = {
        {0x00, 0x7F, 0, 0, 1},       {0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4}, {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4},
    };
    size_t i = 0;
    while (i < len) {
        int row = -1;
        for (size_t r = 0; r < CP_ARRAY_LEN(rows); r++)
            if (s[i] >= rows[r].lead_lo && s[i] <= rows[r].lead_hi)
                row = (int)r;
        if (row < 0)
            return 0;
        int n = rows[row].n;
        if (len - i < (size_t)n)
            return 0;
        if (n >= 2 && (s[i + 1] < rows[row].lo2 || s[i + 1] > rows[row].hi2))
            return 0;
        for (int k = 2; k < n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += (size_t)n;
    }
    return 1;
}

static void check_utf8(const unsigned char *s, size_t len)
{
    /* From an exact-size copy, so ASan sees any read past len. */
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    int got = utf8_valid((const char *)copy, len), want = naive_utf8(copy, len);
    free(copy);
    if (got != want) {
        char hex[400] = "";
        for (size_t i = 0; i < len && i < 64; i++)
            snprintf(hex + strlen(hex), sizeof hex - strlen(hex), "%02x ", s[i]);
        fail_msg("utf8_valid says %d, the reference %d, for %s", got, want, hex);
    }
}

static void test_utf8_exhaustive_short(void **state)
{
    (void)state;
    unsigned char s[3];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        assert_int_equal(utf8_valid((const char *)s, 1), naive_utf8(s, 1));
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            assert_int_equal(utf8_valid((const char *)s, 2), naive_utf8(s, 2));
            if (a < 0xE0 || a > 0xEF) /* three-byte leads; others are covered above */
                continue;
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (unsigned char)c;
                assert_int_equal(utf8_valid((const char *)s, 3), naive_utf8(s, 3));
            }
        }
    }
    assert_int_equal(utf8_valid("", 0), 1);
}

/* Strings built from pieces that straddle the eight-byte ASCII fast path:
 * ASCII runs, valid sequences of every length, and each kind of mistake. */
static void test_utf8_random(void **state)
{
    (void)state;
    static const char *pieces[] = {
        "a",
        "abcdefgh",
        "0123456789abcdef",
        "\xc2\x80",
        "\xdf\xbf",
        "\xe0\xa0\x80",
        "中",
        "\xed\x9f\xbf",
        "\xef\xbf\xbf",
        "\xf0\x90\x80\x80",
        "\xf4\x8f\xbf\xbf",
        "\xc0\x80",
        /* overlong */ "\xc1\xbf",
        "\xe0\x9f\xbf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xf5\x80\x80\x80",
        "\xff",
        "\x80",
        "\xbf",
        "\xc2",
        "\xe4\xb8",
        "\xf0\x90\x80",
    };
    uint64_t rng = 99;
    unsigned char s[96];
    for (int i = 0; i < 300000; i++) {
        size_t len = 0;
        int np = (int)(rand_next(&rng) % 8);
        for (int k = 0; k < np; k++) {
            const char *p = pieces[rand_next(&rng) % CP_ARRAY_LEN(pieces)];
            size_t pl = strlen(p);
            if (len + pl > sizeof s)
                break;
            memcpy(s + len, p, pl);
            len += pl;
        }
        if (len > 0 && rand_next(&rng) % 4 == 0) /* cut anywhere */
            len = (size_t)(rand_next(&rng) % len);
        check_utf8(s, len);
        for (size_t k = 0; k < len && k < 4; k++) /* and from every offset */
            check_utf8(s + k, len - k);
    }
    for (int i = 0; i < 100000; i++) { /* plain random bytes, mostly high */
        size_t len = (size_t)(rand_next(&rng) % 24);
        for (size_t k = 0; k < len; k++) {
            uint64_t r = rand_next(&rng);
            s[k] = (unsigned char)(r % 3 == 0 ? 'a' : (0x80 | (r >> 8)));
        }
        check_utf8(s, len);
    }
}

static void test_error_set(void **state)
{
    (void)state;
    cp_error_t err = {0};
    int line = __LINE__ + 1;
    assert_int_equal(CP_ERR(&err, CP_EINVAL, "bad %s at %d", "标签", 3), CP_EINVAL);
    assert_int_equal(err.code, CP_EINVAL);
    assert_string_equal(err.message, "bad 标签 at 3");
    assert_non_null(strstr(err.src_file, "test_util_text.c"));
    assert_string_equal(err.src_func, "test_error_set");
    assert_int_equal(err.src_line, line);
    assert_int_equal(CP_ERR(NULL, CP_ENOMEM, "no record"), CP_ENOMEM);

    assert_int_equal(CP_ERR_AT(&err, CP_ESYNTAX, 4, 9, "unexpected %c", ')'), CP_ESYNTAX);
    assert_int_equal(err.line, 4);
    assert_int_equal(err.column, 9);
    assert_int_equal(CP_ERR(&err, CP_EIO, "again"), CP_EIO);
    assert_int_equal(err.line, 0); /* a plain error clears the position */
    assert_int_equal(err.column, 0);

    /* A message longer than the record is cut, NUL-terminated, start kept. */
    char big[3 * sizeof err.message];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof big - 1] = '\0';
    CP_ERR(&err, CP_ELIMIT, "%s", big);
    assert_int_equal(strlen(err.message), sizeof err.message - 1);
    assert_memory_equal(err.message, big, sizeof err.message - 1);

    /* A prefix on a full message: the prefix first, the total still cut. */
    error_prefix(&err, "line %d: ", 7);
    assert_int_equal(strlen(err.message), sizeof err.message - 1);
    assert_memory_equal(err.message, "line 7: abc", 11);
    /* A prefix longer than the record: cut, the message kept after it. */
    CP_ERR(&err, CP_EINVAL, "short");
    error_prefix(&err, "%s", big);
    size_t ml = strnlen(err.message, sizeof err.message);
    assert_true(ml < sizeof err.message);
    assert_memory_equal(err.message, big, 200);
    assert_string_equal(err.message + ml - 5, "short");
    CP_ERR(&err, CP_EINVAL, "short");
    error_prefix(&err, "row %s: ", "二");
    assert_string_equal(err.message, "row 二: short");
    error_prefix(NULL, "x");
    error_clear(&err);
    assert_int_equal(err.code, CP_OK);
    assert_string_equal(err.message, "");
    error_clear(NULL);
    for (int st = CP_OK; st <= CP_ECORRUPT; st++)
        assert_non_null(cp_strerror((cp_status)st));
    assert_string_equal(cp_strerror((cp_status)9999), "unknown status");
}

static void check_double(double v)
{
    char buf[64];
    fmt_double(v, buf, sizeof buf);
    double back = strtod(buf, NULL);
    if (isnan(v)) {
        assert_true(isnan(back));
        return;
    }
    if (back != v || signbit(back) != signbit(v))
        fail_msg("fmt_double(%.17g) = %s", v, buf);
    /* The fewest of 15, 16 or 17 significant digits that read back. */
    char want[400];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(want, sizeof want, "%.*g", prec, v);
        if (strtod(want, NULL) == v)
            break;
    }
    assert_string_equal(buf, want);
}

static void test_fmt_double(void **state)
{
    (void)state;
    char buf[64];
    fmt_double(0.1, buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    fmt_double(1.0 / 3, buf, sizeof buf);
    assert_string_equal(buf, "0.3333333333333333");
    fmt_double(-0.0, buf, sizeof buf);
    assert_string_equal(buf, "-0");
    fmt_double(1e300, buf, sizeof buf);
    assert_string_equal(buf, "1e+300");
    fmt_double(123456789012345678.0, buf, sizeof buf);
    assert_string_equal(buf, "1.2345678901234568e+17");
    fmt_double(INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "inf");
    double specials[] = {
        0.0,       -0.0,  1.0,  -1.5, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
        0.1 + 0.2, 100.0, 1e15, 1e16, 1e17,   9007199254740993.0,      NAN,
        -INFINITY};
    for (size_t i = 0; i < CP_ARRAY_LEN(specials); i++)
        check_double(specials[i]);
    uint64_t rng = 5;
    for (int i = 0; i < 100000; i++) {
        uint64_t bits = rand_next(&rng);
        double v;
        memcpy(&v, &bits, sizeof v);
        if (isinf(v))
            continue;
        check_double(v);
        check_double((double)(int64_t)(bits % 100000000) / 100.0); /* money */
    }
    /* A small buffer is cut, still NUL-terminated. */
    char tiny[4];
    fmt_double(1.0 / 3, tiny, sizeof tiny);
    assert_string_equal(tiny, "0.3");
}

static void test_hash_and_rand(void **state)
{
    (void)state;
    unsigned char data[256];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 31 + 7);
    uint64_t seen[257];
    for (size_t n = 0; n <= sizeof data; n++) {
        assert_int_equal(hash64(data, n, 0), XXH3_64bits_withSeed(data, n, 0));
        assert_true(hash64(data, n, 1) != hash64(data, n, 2));
        seen[n] = hash64(data, n, 0);
        for (size_t k = 0; k < n; k++)
            assert_true(seen[k] != seen[n]); /* every prefix differs */
    }
    assert_int_equal(hash64("中文", strlen("中文"), 9), hash64("中文", strlen("中文"), 9));

    /* splitmix64 from state 0: the published first outputs. */
    uint64_t st = 0;
    assert_int_equal(rand_next(&st), 0xe220a8397b1dcdafull);
    assert_int_equal(rand_next(&st), 0x6e789e6aa1b965f4ull);
    uint64_t a = 12345, b = 12345;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rand_next(&a), rand_next(&b));
    double sum = 0;
    int bits[64] = {0};
    for (int i = 0; i < 100000; i++) {
        double d = rand_double(&a);
        assert_true(d >= 0.0 && d < 1.0);
        sum += d;
        uint64_t r = rand_next(&b);
        for (int k = 0; k < 64; k++)
            bits[k] += (int)(r >> k & 1);
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
    for (int k = 0; k < 64; k++)
        assert_true(bits[k] > 49000 && bits[k] < 51000);
}

static void test_mem_eq(void **state)
{
    (void)state;
    unsigned char x[48], y[48];
    uint64_t rng = 3;
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = y[i] = (unsigned char)rand_next(&rng);
    for (size_t n = 0; n <= sizeof x; n++) {
        assert_true(mem_eq(x, y, n));
        for (size_t k = 0; k < n; k++) { /* a difference at every position */
            y[k] ^= 0x10;
            assert_false(mem_eq(x, y, n));
            y[k] ^= 0x10;
        }
        if (n < sizeof x) { /* a difference just past n is not seen */
            y[n] ^= 1;
            assert_true(mem_eq(x, y, n));
            y[n] ^= 1;
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_exhaustive_short),
        cmocka_unit_test(test_utf8_random),
        cmocka_unit_test(test_error_set),
        cmocka_unit_test(test_fmt_double),
        cmocka_unit_test(test_hash_and_rand),
        cmocka_unit_test(test_mem_eq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
