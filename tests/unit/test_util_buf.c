/* test_util_buf.c — the capped buffer and the arena: appends and printf
 * against a plain copy, the hard cap leaving the contents untouched, sizes
 * near SIZE_MAX refused instead of wrapping, arena alignment, zeroing, the
 * limit and block reuse after a reset; fd_line_v's one-line contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unistd.h>

#include "util/util.h"

static void test_buf_append_printf(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_string_equal(buf_cstr(&b), "");
    char want[20000];
    size_t wl = 0;
    uint64_t rng = 1;
    for (int i = 0; i < 2000; i++) {
        if (rand_next(&rng) & 1) {
            char piece[8];
            size_t n = rand_next(&rng) % sizeof piece;
            for (size_t k = 0; k < n; k++)
                piece[k] = (char)('a' + rand_next(&rng) % 26);
            assert_int_equal(buf_append(&b, piece, n), CP_OK);
            memcpy(want + wl, piece, n);
            wl += n;
        } else {
            assert_int_equal(buf_printf(&b, "%d,", i), CP_OK);
            wl += (size_t)sprintf(want + wl, "%d,", i);
        }
        assert_int_equal(b.len, wl);
        assert_true(b.cap > b.len);
        assert_memory_equal(b.data, want, wl);
        assert_int_equal(b.data[b.len], '\0'); /* always NUL-terminated */
    }
    want[wl] = '\0';
    assert_string_equal(buf_cstr(&b), want);
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap); /* the memory is kept */
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(buf_append(&b, NULL, 0), CP_OK);
    buf_free(&b);
    assert_null(b.data);
    buf_free(&b); /* twice is harmless */
}

static void test_buf_cap(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789", 10), CP_OK);
    assert_int_equal(buf_append(&b, "x", 1), CP_ELIMIT);
    assert_int_equal(buf_printf(&b, "%s", "y"), CP_ELIMIT);
    assert_int_equal(b.len, 10);
    assert_string_equal(buf_cstr(&b), "0123456789");
    buf_reset(&b);
    assert_int_equal(buf_printf(&b, "%s", "01234567890"), CP_ELIMIT);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_printf(&b, "%05d", 42), CP_OK);
    assert_string_equal(buf_cstr(&b), "00042");
    buf_free(&b);
}

/* A length near SIZE_MAX (a corrupt length field read from disk) must be
 * refused, not wrapped into a small allocation or an endless doubling. */
static void test_buf_huge_lengths(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "abc", 3), CP_OK);
    size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 3, SIZE_MAX / 2 + 1};
    for (size_t i = 0; i < CP_ARRAY_LEN(huge); i++) {
        cp_status st = buf_append(&b, "x", huge[i]);
        assert_true(st == CP_ENOMEM || st == CP_ELIMIT);
        assert_int_equal(b.len, 3);
        assert_string_equal(buf_cstr(&b), "abc");
    }
    buf_t c;
    buf_init(&c, 100);
    assert_int_equal(buf_append(&c, "ab", 2), CP_OK);
    assert_int_equal(buf_append(&c, "x", SIZE_MAX - 1), CP_ELIMIT);
    assert_int_equal(c.len, 2);
    buf_free(&c);
    buf_free(&b);
}

static void test_arena(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    void *first = NULL;
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(i * 7919) % 3000;
        unsigned char *p = arena_alloc(&a, n);
        assert_non_null(p);
        if (i == 0)
            first = p;
        assert_int_equal((uintptr_t)p % 16, 0);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(p[k], 0);
        memset(p, 0xAB, n); /* dirty it: the reused blocks must come back zeroed */
    }
    unsigned char *big = arena_alloc(&a, 100000); /* larger than a block */
    assert_non_null(big);
    memset(big, 1, 100000);
    char *s = arena_strndup(&a, "中文标签xyz", strlen("中文标签"));
    assert_string_equal(s, "中文标签");
    size_t total = a.total;
    assert_true(total >= 3000 * 1500 / 2);

    arena_reset(&a);
    assert_int_equal(a.total, 0);
    assert_null(a.head);
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(i * 7919) % 3000;
        unsigned char *p = arena_alloc(&a, n);
        assert_non_null(p);
        for (size_t k = 0; k < n; k++)
            assert_int_equal(p[k], 0);
    }
    (void)first;
    arena_free(&a);
    assert_null(a.head);
    assert_null(a.spare);
    arena_free(&a); /* twice is harmless */
}

static void test_arena_limit(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 20000);
    assert_non_null(arena_alloc(&a, 8000));
    assert_non_null(arena_alloc(&a, 8000)); /* a second block: 16 KiB */
    assert_null(arena_alloc(&a, 8000));     /* a third would pass 20000 */
    assert_null(arena_alloc(&a, SIZE_MAX));
    assert_null(arena_alloc(&a, SIZE_MAX - 8));
    assert_null(arena_strndup(&a, "x", SIZE_MAX));
    arena_free(&a);

    arena_init(&a, 0); /* unlimited: huge sizes still fail cleanly */
    assert_null(arena_alloc(&a, SIZE_MAX));
    assert_null(arena_alloc(&a, SIZE_MAX - 15));
    assert_null(arena_alloc(&a, SIZE_MAX / 2 + 1));
    assert_non_null(arena_alloc(&a, 0));
    arena_free(&a);
}

static void fd_line(int fd, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fd_line(int fd, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fd_line_v(fd, kind, fmt, ap);
    va_end(ap);
}

static void test_fd_line(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fd_line(p[1], "ERR", "bad %s\nat %d", "page", 7);
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fd_line(p[1], "W", "%s", big);
    close(p[1]);
    char got[4096];
    size_t n = 0;
    for (ssize_t r; (r = read(p[0], got + n, sizeof got - 1 - n)) > 0;)
        n += (size_t)r;
    close(p[0]);
    got[n] = '\0';
    char *nl = strchr(got, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_string_equal(got, "ERR bad page at 7");
    char *second = nl + 1;
    size_t l2 = strlen(second);
    assert_true(l2 <= 1024);
    assert_true(l2 > 1000);
    assert_int_equal(second[l2 - 1], '\n');
    assert_null(memchr(second, '\n', l2 - 1)); /* one line, cut */
    assert_memory_equal(second, "W xxx", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_printf), cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_huge_lengths),  cmocka_unit_test(test_arena),
        cmocka_unit_test(test_arena_limit),       cmocka_unit_test(test_fd_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
