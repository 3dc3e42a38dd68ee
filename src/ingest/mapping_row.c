/* mapping_row.c — one CSV row through a mapping (mapping.h): each cell
 * converted to its field's type (numbers, integers, booleans, times in the
 * mapping's format, the identifier transforms), the row's event name,
 * time and messageId, and mapping_row's Segment-shaped JSON document of
 * the result. The typed event is mapping_event.c's. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/ingest_int.h"
#include "ingest/mapping.h"
#include "util/text.h"
#include "util/util.h"

/* ---------------------------------------------------------------- cells */

int mapping_strftime_parse(const char *fmt, const char *s, size_t len, int64_t *secs)
{
    static const char *const mon[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                      "jul", "aug", "sep", "oct", "nov", "dec"};
    int Y = -1, M = 1, D = 1, h = 0, mi = 0, se = 0;
    size_t p = 0;
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            if (p >= len || s[p] != *f)
                return -1;
            p++;
            continue;
        }
        f++;
        if (*f == '%') {
            if (p >= len || s[p] != '%')
                return -1;
            p++;
            continue;
        }
        if (*f == 'b') {
            if (p + 3 > len)
                return -1;
            int found = -1;
            for (int i = 0; i < 12; i++)
                if (strncasecmp(s + p, mon[i], 3) == 0)
                    found = i;
            if (found < 0)
                return -1;
            M = found + 1;
            p += 3;
            continue;
        }
        int maxd = *f == 'Y' ? 4 : 2, v = 0, nd = 0;
        while (p < len && nd < maxd && s[p] >= '0' && s[p] <= '9') {
            v = v * 10 + (s[p++] - '0');
            nd++;
        }
        if (nd == 0)
            return -1;
        switch (*f) {
        case 'Y':
            Y = v;
            break;
        case 'y':
            Y = v < 70 ? 2000 + v : 1900 + v;
            break;
        case 'm':
            M = v;
            break;
        case 'd':
            D = v;
            break;
        case 'H':
            h = v;
            break;
        case 'M':
            mi = v;
            break;
        case 'S':
            se = v;
            break;
        default:
            return -1;
        }
    }
    if (p != len || Y < 0)
        return -1;
    char iso[40];
    int n = snprintf(iso, sizeof iso, "%04d-%02d-%02dT%02d:%02d:%02dZ", Y, M, D, h, mi, se);
    return time_parse(iso, (size_t)n, secs);
}

static const double pow10_tab[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/*
 * Plain decimals ([+-]digits[.digits], at least one integer digit, at most
 * 15 digits) by Clinger's fast path: an exact integer divided by an exact
 * power of ten rounds correctly, so the result is strtod's. Returns 1 with
 * *out set, 0 for anything else (then strtod decides). Accepts only
 * digits, a sign and a dot: never a text with a NUL byte.
 */
static inline int number_fast(const char *s, size_t len, double *out)
{
    size_t i = 0;
    int neg = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    uint64_t mant = 0;
    size_t i0 = i;
    for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
        mant = mant * 10 + (uint64_t)(s[i] - '0');
    size_t intd = i - i0, frac = 0;
    if (i < len && s[i] == '.') {
        size_t f0 = ++i;
        for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
            mant = mant * 10 + (uint64_t)(s[i] - '0');
        frac = i - f0;
    }
    if (i != len || intd == 0 || intd + frac > 15)
        return 0;
    double v = (double)mant / pow10_tab[frac];
    *out = neg ? -v : v;
    return 1;
}

/* strtod over the whole text (number_fast first). */
static int parse_number(const char *s, size_t len, double *out)
{
    if (number_fast(s, len, out))
        return 0;
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/*
 * Plain integers: [+-] then 1..18 digits, or 1..15 digits followed by a
 * dot and only zeros ("17850.0"). Returns 1 with *out (and, if `digits`
 * is not NULL, where the digits start and how many there are), 0 for
 * anything else (then parse_int decides). Never accepts a NUL byte.
 */
static inline int int_fast(const char *s, size_t len, long long *out, const char **digits,
                           size_t *ndigits)
{
    size_t i = 0;
    int neg = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    uint64_t v0 = 0;
    size_t i0 = i;
    for (; i < len && (unsigned char)(s[i] - '0') <= 9; i++)
        v0 = v0 * 10 + (uint64_t)(s[i] - '0');
    size_t nd = i - i0;
    if (nd == 0 || nd > 18)
        return 0;
    if (i < len) {
        if (nd > 15 || s[i] != '.')
            return 0;
        for (size_t k = i + 1; k < len; k++)
            if (s[k] != '0')
                return 0;
    }
    *out = neg ? -(long long)v0 : (long long)v0;
    if (digits) {
        *digits = s + i0;
        *ndigits = nd;
    }
    return 1;
}

/* strtoll over the whole text; an integral decimal ("6.0", up to 9e15) is
 * an int too. Plain forms are parsed inline, the rest by the libc. */
static int parse_int(const char *s, size_t len, long long *out)
{
    if (int_fast(s, len, out, NULL, NULL))
        return 0;
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end == '.') {
        double d;
        if (parse_number(s, len, &d) || d != floor(d) || fabs(d) > 9.0e15)
            return -1;
        *out = (long long)d;
        return 0;
    }
    if (*end != '\0' || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static double round_to(double v, int r)
{
    if (r < 0)
        return v;
    double p = pow10_tab[r]; /* r is 0..9 (mapping_parse) */
    return round(v * p) / p;
}

/* Decimal text of v into buf (>= 21 bytes); returns the length. Written
 * from the end, two digits at a time, once the length is known. */
size_t maprow_fmt_i64(int64_t v, char *buf)
{
    static const char pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    static const uint64_t p10[] = {1ull,
                                   10ull,
                                   100ull,
                                   1000ull,
                                   10000ull,
                                   100000ull,
                                   1000000ull,
                                   10000000ull,
                                   100000000ull,
                                   1000000000ull,
                                   10000000000ull,
                                   100000000000ull,
                                   1000000000000ull,
                                   10000000000000ull,
                                   100000000000000ull,
                                   1000000000000000ull,
                                   10000000000000000ull,
                                   100000000000000000ull,
                                   1000000000000000000ull,
                                   10000000000000000000ull};
    size_t nd = 1;
    while (nd < 20 && u >= p10[nd])
        nd++;
    size_t k = v < 0;
    buf[0] = '-';
    size_t end = k + nd;
    buf[end] = '\0';
    char *q = buf + end;
    while (u >= 100) {
        unsigned x = (unsigned)(u % 100) * 2;
        u /= 100;
        *--q = pairs[x + 1];
        *--q = pairs[x];
    }
    if (u >= 10) {
        *--q = pairs[u * 2 + 1];
        *--q = pairs[u * 2];
    } else {
        *--q = (char)('0' + u);
    }
    return end;
}

/* "column "Quantity"" or "column 4": how errors name a column. */
static const char *col_text(const map_col_t *c, char *buf, size_t cap)
{
    if (c->name)
        snprintf(buf, cap, "\"%.64s\"", c->name);
    else
        snprintf(buf, cap, "%d", c->pos + 1);
    return buf;
}

static cp_status bad_value(cp_error_t *err, uint64_t line, const map_field_t *d,
                           const map_col_t *col, const csv_field_t *c, const char *expects)
{
    char cb[80];
    return CP_ERR(err, CP_ETYPE, "line %llu: column %s (%s): \"%.64s\" is not %s",
                  (unsigned long long)line, col_text(col, cb, sizeof cb),
                  d->name ? d->name : "value", c->p, expects);
}

static cp_status bad_utf8(cp_error_t *err, uint64_t line, const map_col_t *c)
{
    return CP_ERR(err, CP_EINVAL, "line %llu: column %d: invalid UTF-8", (unsigned long long)line,
                  c->pos + 1);
}

static cp_status nul_byte(cp_error_t *err, uint64_t line, const map_col_t *c)
{
    return CP_ERR(err, CP_EINVAL, "line %llu: column %d contains a NUL byte",
                  (unsigned long long)line, c->pos + 1);
}

/*
 * time_parse for the layout of most files, "YYYY-MM-DD HH:MM:SS" (or a
 * T between, or a final Z), without its general scanner: 1 with *secs
 * when s is exactly such a text and a valid time (the same checks and the
 * same value as time_parse), 0 for anything else, which time_parse
 * then decides. Only digits and separators pass: never a NUL byte.
 */
static int iso_fast(const char *s, size_t len, int64_t *secs)
{
    static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len != 19 && !(len == 20 && (s[19] == 'Z' || s[19] == 'z')))
        return 0;
    if (s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return 0;
    /* The digits, 8 bytes at a time: "YYYY-MM-", "DD HH:MM", "HH:MM:SS"
     * (the last overlaps the second). A byte is a digit iff its high
     * nibble is 3 and stays 3 when 6 is added (no carry leaves a byte). */
    const uint64_t m1 = 0x00ffff00ffffffffull, m2 = 0xffff00ffff00ffffull;
    const uint64_t zeros = 0x3030303030303030ull, nib = 0xf0f0f0f0f0f0f0f0ull;
    const uint64_t six = 0x0606060606060606ull;
    uint64_t w1 = text_load8(s) & m1, w2 = text_load8(s + 8) & m2, w3 = text_load8(s + 11) & m2;
    if ((w1 & nib) != (zeros & m1) || (((w1 + (six & m1)) & nib) != (zeros & m1)) ||
        (w2 & nib) != (zeros & m2) || (((w2 + (six & m2)) & nib) != (zeros & m2)) ||
        (w3 & nib) != (zeros & m2) || (((w3 + (six & m2)) & nib) != (zeros & m2)))
        return 0;
    w1 -= zeros & m1;
    w2 -= zeros & m2;
    w3 -= zeros & m2;
#define B(w, i) ((int)(((w) >> (8 * (i))) & 0xff))
    int y = B(w1, 0) * 1000 + B(w1, 1) * 100 + B(w1, 2) * 10 + B(w1, 3);
    int mo = B(w1, 5) * 10 + B(w1, 6), d = B(w2, 0) * 10 + B(w2, 1);
    int h = B(w2, 3) * 10 + B(w2, 4), mi = B(w2, 6) * 10 + B(w2, 7);
    int se = B(w3, 6) * 10 + B(w3, 7);
#undef B
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60)
        return 0;
    unsigned uy = (unsigned)y, py = uy - 1;
    int leap = (uy % 4 == 0 && uy % 100 != 0) || uy % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return 0;
    /* days since 1970-01-01: whole years, their leap days (477 before
     * 1970), then the year's days so far */
    int64_t days = 365 * ((int64_t)y - 1970) + (int64_t)(py / 4 - py / 100 + py / 400) - 477 +
                   before[mo - 1] + (mo > 2 && leap) + d - 1;
    *secs = days * 86400 + h * 3600 + mi * 60 + se;
    return 1;
}

/* A timestamp cell (trimmed, non-empty) in the field's format. */
static int cell_time(const map_field_t *d, const char *s, size_t len, int64_t *secs)
{
    if (d->tsfmt == TF_ISO)
        return time_parse(s, len, secs);
    if (d->tsfmt == TF_STRF)
        return mapping_strftime_parse(d->strf, s, len, secs);
    long long v;
    if (parse_int(s, len, &v))
        return -1;
    *secs = d->tsfmt == TF_EPOCH_MS ? v / 1000 : v;
    return 0;
}

/* ---------------------------------------------------------------- rows */

void maprow_free(row_t *r)
{
    free(r->heap);
}

cp_status maprow_init(row_t *r, const mapping_t *m, cp_error_t *err)
{
    size_t nv = m->ntkeys + m->npkeys;
    r->heap = NULL;
    r->uid.kind = r->anon.kind = PV_NONE;
    r->uid_first = 0;
    r->ntv = r->npv = 0;
    r->ev = NULL;
    r->evlen = 0;
    r->ev_printable = 0;
    r->has_ts = 0;
    r->ts = 0;
    r->msgid = NULL;
    r->msgid_len = 0;
    r->msgid_printable = 0;
    if (nv <= ROW_LOCAL) {
        r->tv = r->local;
        r->tslot = r->slots;
    } else {
        /* Only mappings with more than ROW_LOCAL output keys get here. */
        r->heap = malloc(nv * (sizeof(rval_t) + sizeof(int)));
        if (r->heap == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        r->tv = r->heap;
        r->tslot = (int *)(r->tv + nv);
    }
    r->pv = r->tv + m->ntkeys;
    r->pslot = r->tslot + m->ntkeys;
    if (!m->uniq_keys) /* else values are appended and slots go unused */
        for (size_t i = 0; i < nv; i++)
            r->tslot[i] = -1;
    return CP_OK;
}

/* Sets key v->d->key of an object (a later field of the same name replaces
 * the value in place, as json_object_set does). */
static void row_set(rval_t *arr, size_t *n, int *slot, const rval_t *v)
{
    int k = v->d->key;
    if (slot[k] < 0)
        slot[k] = (int)(*n)++;
    arr[slot[k]] = *v;
}

/* The value of one field (v->kind PV_NONE for an empty cell). */
static inline __attribute__((always_inline)) cp_status field_value(const map_field_t *d,
                                                                   const csv_field_t *f, size_t n,
                                                                   uint64_t line, rval_t *v,
                                                                   cp_error_t *err)
{
    v->d = d;
    v->kind = PV_NONE;
    v->gen = G_COPY;
    v->whole = 0;
    v->print = 0;
    if (d->product) {
        const csv_field_t *a = maprow_cell(&d->col, f, n), *b = maprow_cell(&d->col2, f, n);
        double x, y;
        if (a->len == 0 || b->len == 0)
            return CP_OK;
        if (!number_fast(a->p, a->len, &x) && parse_number(a->p, a->len, &x))
            return bad_value(err, line, d, &d->col, a, "a number");
        if (!number_fast(b->p, b->len, &y) && parse_number(b->p, b->len, &y))
            return bad_value(err, line, d, &d->col2, b, "a number");
        double p = round_to(x * y, d->round);
        if (d->type == MV_INT) {
            /* beyond int64, llround has no answer */
            if (!(p > -9.2e18 && p < 9.2e18))
                return bad_value(err, line, d, &d->col, a, "a factor of a product in range");
            v->kind = PV_INT;
            v->i = llround(p);
        } else {
            if (!isfinite(p))
                return bad_value(err, line, d, &d->col, a, "a factor of a product in range");
            v->kind = PV_REAL;
            v->x = p;
        }
        return CP_OK;
    }
    const csv_field_t *c = maprow_cell(&d->col, f, n);
    const char *s;
    size_t len;
    maprow_trimmed(c, &s, &len);
    if (len == 0)
        return CP_OK;
    /*
     * A cell with a NUL byte is refused before any conversion. The fast
     * paths below accept only texts that cannot hold one (digits, plain
     * ASCII), so the NUL scan runs only where they decline.
     */
    switch (d->type) {
    case MV_STRING:
        if (d->xform == MX_INTEGER) {
            long long iv;
            const char *dg;
            size_t nd;
            if (int_fast(s, len, &iv, &dg, &nd)) {
                /* The decimal text of iv is its digits without leading
                 * zeros, signed if negative: point at them. */
                while (nd > 1 && *dg == '0') {
                    dg++;
                    nd--;
                }
                v->print = 1; /* digits and a sign */
                if (iv < 0) {
                    v->gen = G_TEXT;
                    v->txt[0] = '-';
                    memcpy(v->txt + 1, dg, nd);
                    v->txt[nd + 1] = '\0';
                    v->slen = nd + 1;
                } else {
                    v->s = dg;
                    v->slen = nd;
                }
            } else {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &d->col);
                if (parse_int(s, len, &iv))
                    return bad_value(err, line, d, &d->col, c, "an integer");
                v->gen = G_TEXT;
                v->slen = maprow_fmt_i64(iv, v->txt);
            }
        } else {
            /* a plain cell (csv.h) is ASCII without NUL bytes */
            v->print = c->plain;
            if (!c->plain && !text_plain_ascii(c->p, c->len)) {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &d->col);
                /* jansson takes only UTF-8; say so instead of losing the value */
                if (!utf8_valid(c->p, c->len))
                    return bad_utf8(err, line, &d->col);
            }
            if (d->xform == MX_LOWER) {
                v->gen = G_LOWER;
                v->s = s;
                v->slen = len;
            } else if (d->xform == MX_TRIM) {
                v->s = s;
                v->slen = len;
            } else {
                /* Untransformed text keeps its spaces (descriptions do). */
                v->s = c->p;
                v->slen = c->len;
                v->whole = 1;
            }
        }
        v->kind = PV_STR;
        break;
    case MV_INT: {
        long long iv;
        if (!int_fast(s, len, &iv, NULL, NULL)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (parse_int(s, len, &iv))
                return bad_value(err, line, d, &d->col, c, "an integer");
        }
        v->kind = PV_INT;
        v->i = iv;
        break;
    }
    case MV_NUMBER: {
        double x;
        if (!number_fast(s, len, &x)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (parse_number(s, len, &x))
                return bad_value(err, line, d, &d->col, c, "a number");
        }
        x = round_to(x, d->round);
        if (!isfinite(x))
            return bad_value(err, line, d, &d->col, c, "a number in range once rounded");
        v->kind = PV_REAL;
        v->x = x;
        break;
    }
    case MV_BOOL: {
        if (memchr(c->p, '\0', c->len))
            return nul_byte(err, line, &d->col);
        int t = len == 4 ? !strncasecmp(s, "true", 4) : len == 3 ? !strncasecmp(s, "yes", 3) : 0;
        int fl = len == 5 ? !strncasecmp(s, "false", 5) : len == 2 ? !strncasecmp(s, "no", 2) : 0;
        if (len == 1 && (*s == '1' || *s == '0')) {
            t = *s == '1';
            fl = !t;
        }
        if (!t && !fl)
            return bad_value(err, line, d, &d->col, c, "a bool (true/false, yes/no, 1/0)");
        v->kind = PV_BOOL;
        v->i = t;
        break;
    }
    case MV_TIMESTAMP: {
        int64_t secs;
        if (d->tsfmt != TF_ISO || !iso_fast(s, len, &secs)) {
            if (memchr(c->p, '\0', c->len))
                return nul_byte(err, line, &d->col);
            if (cell_time(d, s, len, &secs))
                return bad_value(err, line, d, &d->col, c,
                                 d->tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                     : "a timestamp");
        }
        time_format(secs, v->txt, sizeof v->txt);
        v->kind = PV_STR;
        v->gen = G_TEXT;
        v->slen = strlen(v->txt);
        break;
    }
    }
    return CP_OK;
}

/* One trait or property into its object: converted in place when the key
 * is new (the slot past the end is free), else over the earlier value.
 * With distinct names (uniq) every key is new: no slot to look at. */
static inline __attribute__((always_inline)) cp_status
row_field(const map_field_t *d, const csv_field_t *f, size_t n, uint64_t line, rval_t *arr,
          size_t *na, int *slot, int uniq, cp_error_t *err)
{
    if (uniq) {
        cp_status rc = field_value(d, f, n, line, &arr[*na], err);
        if (rc == CP_OK && arr[*na].kind != PV_NONE)
            (*na)++;
        return rc;
    }
    int k = slot[d->key];
    if (k < 0) {
        cp_status rc = field_value(d, f, n, line, &arr[*na], err);
        if (rc == CP_OK && arr[*na].kind != PV_NONE)
            slot[d->key] = (int)(*na)++;
        return rc;
    }
    rval_t v;
    cp_status rc = field_value(d, f, n, line, &v, err);
    if (rc == CP_OK && v.kind != PV_NONE)
        arr[k] = v;
    return rc;
}

/* The mapping half of a row: every conversion and check mapping_row makes. */
cp_status maprow_build(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                       const char *msgid_prefix, row_t *r, map_result *res, cp_error_t *err)
{
    cp_status rc;
    *res = MAP_EVENT;
    for (size_t i = 0; i < m->nskip; i++) {
        const char *s;
        size_t len;
        maprow_trimmed(maprow_cell(&m->skip[i], f, n), &s, &len);
        if (len == 0) {
            *res = MAP_SKIP;
            return CP_OK;
        }
    }
    rval_t v;
    int nid = 0;
    const int uniq = m->uniq_keys;
    for (size_t i = 0; i < m->nids; i++) {
        const map_field_t *d = &m->ids[i];
        if ((rc = field_value(d, f, n, line, &v, err)))
            return rc;
        if (v.kind == PV_NONE)
            continue;
        if (d->id_kind == 1 && r->uid.kind == PV_NONE) {
            r->uid = v;
            r->uid_first = r->anon.kind == PV_NONE;
        } else if (d->id_kind == 2 && r->anon.kind == PV_NONE) {
            r->anon = v;
        } else if (m->uniq_keys) {
            r->tv[r->ntv++] = v;
        } else {
            row_set(r->tv, &r->ntv, r->tslot, &v);
        }
        nid++;
    }
    if (nid == 0)
        return CP_ERR(err, CP_EINVAL, "line %llu: no identifier (every identifier column is empty)",
                      (unsigned long long)line);
    for (size_t i = 0; i < m->ntraits; i++)
        if ((rc = row_field(&m->traits[i], f, n, line, r->tv, &r->ntv, r->tslot, uniq, err)))
            return rc;
    if (m->has_event) {
        const char *name = m->event_name;
        size_t namelen = m->event_name_len;
        int name_print = m->event_name_print;
        const csv_field_t *nc = NULL;
        if (name == NULL) {
            nc = maprow_cell(&m->event_col, f, n);
            if (nc->len == 0)
                return CP_ERR(err, CP_EINVAL, "line %llu: the event name column is empty",
                              (unsigned long long)line);
        }
        for (size_t i = 0; i < m->nwhen; i++) {
            const csv_field_t *c = maprow_cell(&m->when[i].col, f, n);
            size_t pl = m->when[i].prefix_len;
            if (c->len >= pl && memcmp(c->p, m->when[i].prefix, pl) == 0) {
                name = m->when[i].name;
                namelen = m->when[i].name_len;
                name_print = m->when[i].name_print;
                nc = NULL;
                break;
            }
        }
        if (nc) {
            if (!nc->plain && !utf8_valid(nc->p, nc->len))
                return bad_utf8(err, line, &m->event_col);
            r->ev = nc->p;
            r->evlen = nc->len;
            r->ev_printable = nc->plain;
        } else {
            r->ev = name;
            r->evlen = namelen;
            r->ev_printable = name_print;
        }
        if (m->has_ts) {
            const csv_field_t *c = maprow_cell(&m->ts.col, f, n);
            const char *s;
            size_t len;
            maprow_trimmed(c, &s, &len);
            if (len == 0)
                return CP_ERR(err, CP_EINVAL, "line %llu: the timestamp column is empty",
                              (unsigned long long)line);
            if (m->ts.tsfmt != TF_ISO || !iso_fast(s, len, &r->ts)) {
                if (memchr(c->p, '\0', c->len))
                    return nul_byte(err, line, &m->ts.col);
                if (cell_time(&m->ts, s, len, &r->ts))
                    return bad_value(err, line, &m->ts, &m->ts.col, c,
                                     m->ts.tsfmt == TF_STRF ? "a timestamp in the mapping's format"
                                                            : "a timestamp");
            }
            r->has_ts = 1;
        }
        for (size_t i = 0; i < m->nprops; i++)
            if ((rc = row_field(&m->props[i], f, n, line, r->pv, &r->npv, r->pslot, uniq, err)))
                return rc;
    }
    /* An empty message id cell is an absent message id, as Segment treats
     * "messageId":"": the row gets the id of a mapping without the column. */
    const csv_field_t *c = m->has_msgid ? maprow_cell(&m->msgid_col, f, n) : NULL;
    if (c != NULL && c->len > 0) {
        if (!c->plain && !utf8_valid(c->p, c->len))
            return bad_utf8(err, line, &m->msgid_col);
        r->msgid = c->p;
        r->msgid_len = c->len;
        r->msgid_printable = c->plain;
    } else {
        /* "<prefix>:<line>", the prefix cut to 120 bytes at a character */
        const char *p = msgid_prefix ? msgid_prefix : "import";
        /* the usual prefix, printable ASCII shorter than 120 bytes, in one
         * pass; any other the general way */
        size_t pl = 0;
        while (pl < 120 && (unsigned char)p[pl] - 0x20u < 0x5fu)
            pl++;
        if (pl < 120 && p[pl] == '\0') {
            r->msgid_printable = 1;
        } else {
            pl = strnlen(p, 120);
            if (pl == 120)
                while (pl && ((unsigned char)p[pl] & 0xC0) == 0x80)
                    pl--;
            if (!utf8_valid(p, pl))
                return CP_ERR(err, CP_EINVAL, "line %llu: the message id prefix is not UTF-8",
                              (unsigned long long)line);
            /* "<prefix>:<digits>": only the prefix can hold a control byte */
            r->msgid_printable = !text_has_control(p, pl);
        }
        memcpy(r->msgbuf, p, pl);
        r->msgbuf[pl] = ':';
        r->msgid_len = pl + 1 + maprow_fmt_i64((int64_t)line, r->msgbuf + pl + 1);
        r->msgid = r->msgbuf;
    }
    return CP_OK;
}

/* ---------------------------------------------------------------- JSON */

static json_t *rv_json(const rval_t *v)
{
    switch (v->kind) {
    case PV_STR:
        if (v->gen == G_LOWER) {
            char *low = malloc(v->slen + 1);
            if (low == NULL)
                return NULL;
            for (size_t i = 0; i < v->slen; i++)
                low[i] = (char)text_lower((unsigned char)v->s[i]);
            json_t *j = json_stringn(low, v->slen);
            free(low);
            return j;
        }
        return json_stringn(maprow_str(v), v->slen);
    case PV_INT:
        return json_integer((json_int_t)v->i);
    case PV_REAL:
        return json_real(v->x);
    case PV_BOOL:
        return json_boolean(v->i);
    case PV_NONE:
        break;
    }
    return NULL;
}

static int obj_put(json_t *o, const char *k, json_t *v)
{
    return v == NULL || json_object_set_new(o, k, v) != 0;
}

/* The Segment-shaped document of a built row (NULL: no memory). */
json_t *maprow_json(const mapping_t *m, const row_t *r)
{
    json_t *ev = json_object(), *traits = json_object(), *props = NULL;
    int bad = ev == NULL || traits == NULL;
    const rval_t *first = r->uid_first ? &r->uid : &r->anon;
    const rval_t *second = r->uid_first ? &r->anon : &r->uid;
    const char *k1 = r->uid_first ? "userId" : "anonymousId";
    const char *k2 = r->uid_first ? "anonymousId" : "userId";
    if (!bad && first->kind != PV_NONE)
        bad |= obj_put(ev, k1, rv_json(first));
    if (!bad && second->kind != PV_NONE)
        bad |= obj_put(ev, k2, rv_json(second));
    for (size_t i = 0; !bad && i < r->ntv; i++)
        bad |= obj_put(traits, r->tv[i].d->name, rv_json(&r->tv[i]));
    if (!bad && !m->has_event) {
        bad |= obj_put(ev, "type", json_string("identify"));
        bad |= !bad && json_object_set(ev, "traits", traits) != 0;
    } else if (!bad) {
        char iso[40];
        bad |= obj_put(ev, "type", json_string("track"));
        bad |= !bad && obj_put(ev, "event", json_stringn(r->ev, r->evlen));
        if (!bad && r->has_ts) {
            time_format(r->ts, iso, sizeof iso);
            bad |= obj_put(ev, "timestamp", json_string(iso));
        }
        props = json_object();
        bad |= !bad && obj_put(ev, "properties", json_incref(props));
        for (size_t i = 0; !bad && i < r->npv; i++)
            bad |= obj_put(props, r->pv[i].d->name, rv_json(&r->pv[i]));
        if (!bad && json_object_size(traits))
            bad |= obj_put(ev, "context", json_pack("{s:O}", "traits", traits));
    }
    if (!bad)
        bad |= obj_put(ev, "messageId", json_stringn(r->msgid, r->msgid_len));
    json_decref(traits);
    json_decref(props);
    if (bad) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

cp_status mapping_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                      const char *msgid_prefix, json_t **out, map_result *res, cp_error_t *err)
{
    *out = NULL;
    row_t r;
    cp_status rc = maprow_init(&r, m, err);
    if (rc)
        return rc;
    if ((rc = maprow_build(m, f, n, line, msgid_prefix, &r, res, err)) == CP_OK &&
        *res == MAP_EVENT) {
        *out = maprow_json(m, &r);
        if (*out == NULL)
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    maprow_free(&r);
    return rc;
}
