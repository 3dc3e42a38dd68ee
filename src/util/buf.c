/* buf.c — capped growable buffers, arenas, UTF-8 validation, numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/util.h"

void buf_init(buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_free(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_reset(buf_t *b)
{
    b->len = 0;
}

static cp_status buf_reserve(buf_t *b, size_t n)
{
    /* n may come from a length field on disk: a sum that wraps would pass
     * both checks below and the doubling would never end. */
    if (n >= SIZE_MAX / 2 - b->len)
        return b->max ? CP_ELIMIT : CP_ENOMEM;
    if (b->max && b->len + n > b->max)
        return CP_ELIMIT;
    if (b->len + n + 1 <= b->cap)
        return CP_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL)
        return CP_ENOMEM;
    b->data = d;
    b->cap = cap;
    return CP_OK;
}

cp_status buf_append(buf_t *b, const void *p, size_t n)
{
    cp_status st = buf_reserve(b, n);
    if (st != CP_OK)
        return st;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CP_OK;
}

cp_status buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CP_EINVAL;
    cp_status st = buf_reserve(b, (size_t)n);
    if (st != CP_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CP_OK;
}

const char *buf_cstr(buf_t *b)
{
    if (b->data == NULL && buf_reserve(b, 0) != CP_OK)
        return "";
    b->data[b->len] = '\0';
    return b->data;
}

struct arena_block {
    arena_block_t *next;
    size_t used, size;
    _Alignas(16) unsigned char mem[];
};

void arena_init(arena_t *a, size_t max)
{
    a->head = NULL;
    a->spare = NULL;
    a->total = 0;
    a->max = max;
}

void *arena_alloc(arena_t *a, size_t n)
{
    /* Rounding up or adding the block header must not wrap a huge n into a
     * small allocation. */
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    arena_block_t *b = a->head;
    if (b == NULL || b->size - b->used < n) {
        size_t size = n > 8192 ? n : 8192;
        if (a->spare && a->spare->size >= n)
            size = a->spare->size;
        if (a->max && a->total + size > a->max)
            return NULL;
        if (a->spare && a->spare->size >= n) {
            b = a->spare;
            a->spare = b->next;
        } else if ((b = malloc(sizeof *b + size)) == NULL) {
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->size = size;
        a->head = b;
        a->total += size;
    }
    void *p = b->mem + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    if (n >= SIZE_MAX / 2)
        return NULL;
    char *p = arena_alloc(a, n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_free(arena_t *a)
{
    arena_block_t *lists[2] = {a->head, a->spare};
    for (int i = 0; i < 2; i++)
        for (arena_block_t *b = lists[i], *n; b; b = n) {
            n = b->next;
            free(b);
        }
    a->head = a->spare = NULL;
    a->total = 0;
}

void arena_reset(arena_t *a)
{
    for (arena_block_t *b = a->head, *n; b; b = n) {
        n = b->next;
        b->used = 0;
        b->next = a->spare;
        a->spare = b;
    }
    a->head = NULL;
    a->total = 0;
}

int utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* ASCII, eight bytes at a time (most text is). */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned min;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

void fmt_double(double v, char *buf, size_t cap)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
}

uint64_t hash64(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

void fd_line_v(int fd, const char *kind, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s ", kind);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    for (int o = 0; o < n;) {
        ssize_t r = write(fd, line + o, (size_t)(n - o));
        if (r <= 0)
            break;
        o += (int)r;
    }
}

cp_status arr_grow(void **p, size_t *cap, size_t need, size_t size, size_t first)
{
    if (need <= *cap)
        return CP_OK;
    size_t nc = *cap ? *cap : (first ? first : 1);
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return CP_ENOMEM;
        nc *= 2;
    }
    if (size && nc > SIZE_MAX / size)
        return CP_ENOMEM;
    void *q = realloc(*p, nc * size);
    if (q == NULL)
        return CP_ENOMEM;
    *p = q;
    *cap = nc;
    return CP_OK;
}

cp_status json_buf_str(buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    cp_status rc = buf_append(b, "\"", 1);
    size_t start = 0; /* s[start..i) is copied as it is */
    for (size_t i = 0; rc == CP_OK && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > start && (rc = buf_append(b, s + start, i - start)))
            break;
        char esc[6] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        rc = buf_append(b, esc, n);
        start = i + 1;
    }
    if (rc == CP_OK && len > start)
        rc = buf_append(b, s + start, len - start);
    if (rc == CP_OK)
        rc = buf_append(b, "\"", 1);
    return rc;
}
