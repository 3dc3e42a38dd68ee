/*
 * text.h — byte scans over untrusted text, shared by identifier
 * normalisation (src/model/normalize.c), Segment parsing and CSV mappings
 * (src/ingest/): one definition of "control byte", "white space" and
 * "plain ASCII" for every layer that checks values. UTF-8 validity is
 * utf8_valid (util.h), which has its own ASCII fast path.
 *
 * Inline: these run per cell of an import (hundreds of millions of calls
 * for a large file), where a call costs as much as the scan.
 */
#ifndef CP_UTIL_TEXT_H
#define CP_UTIL_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* White space of the C locale's isspace: ' ', \t \n \v \f \r. */
static inline int text_is_space(unsigned char c)
{
    return c <= ' ' && ((1ull << c) & 0x100003e00ull);
}

/* *s, *len without leading and trailing white space. Most values have
 * none: their first and last bytes say so without a loop. */
static inline void text_trim(const char **s, size_t *len)
{
    const char *p = *s;
    size_t l = *len;
    if (l && !text_is_space((unsigned char)p[0]) && !text_is_space((unsigned char)p[l - 1]))
        return;
    while (l && text_is_space((unsigned char)*p)) {
        p++;
        l--;
    }
    while (l && text_is_space((unsigned char)p[l - 1]))
        l--;
    *s = p;
    *len = l;
}

/* ASCII lower case (tolower of the C locale: UTF-8 bytes stay as they are). */
static inline int text_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Word-at-a-time scans: 8 bytes at a time, the last word overlapping the
 * one before it instead of a byte loop. */
#define TEXT_ONES 0x0101010101010101ull
#define TEXT_HIGHS 0x8080808080808080ull
#define TEXT_LOW7 0x7f7f7f7f7f7f7f7full

static inline uint64_t text_load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The high bit of every zero byte of w, exactly (no borrow crosses bytes:
 * (b & 7f) + 7f sets b's high bit iff its low 7 bits are not all zero). */
static inline uint64_t text_zero_bytes(uint64_t w)
{
    return ~(((w & TEXT_LOW7) + TEXT_LOW7) | w | TEXT_LOW7);
}

/* Non-zero if some byte of w is a control byte (< 0x20 or 0x7f). Exact as a
 * yes/no: (b - 0x20) & ~b & 0x80 flags every byte below 0x20, and with none
 * there is no borrow to flag another; bytes >= 0x80 have ~b's bit clear. */
static inline uint64_t text_control_word(uint64_t w)
{
    return (((w - TEXT_ONES * 0x20) & ~w) | text_zero_bytes(w ^ (TEXT_ONES * 0x7f))) & TEXT_HIGHS;
}

/* 1 if s[0..n) holds a control byte (< 0x20, which includes NUL, or 0x7f):
 * what identifiers, event names and messageIds may not contain. */
static inline int text_has_control(const char *s, size_t n)
{
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return 1;
        return 0;
    }
    uint64_t bad = 0;
    for (size_t i = 0; i + 8 <= n; i += 8)
        bad |= text_control_word(text_load8(s + i));
    return (bad | text_control_word(text_load8(s + n - 8))) != 0;
}

/* 1 if s[0..n) is ASCII without NUL bytes: text that needs neither a NUL
 * nor a UTF-8 check. */
static inline int text_plain_ascii(const char *s, size_t n)
{
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] - 1u >= 0x7fu)
                return 0;
        return 1;
    }
    uint64_t bad = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t w = text_load8(s + i);
        bad |= (w & TEXT_HIGHS) | text_zero_bytes(w);
    }
    uint64_t w = text_load8(s + n - 8);
    return (bad | (w & TEXT_HIGHS) | text_zero_bytes(w)) == 0;
}

#endif /* CP_UTIL_TEXT_H */
