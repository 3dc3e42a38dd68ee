/*
 * lexer.c — tokens of the crowd expression language.
 *
 * The input has been checked to be valid UTF-8 before the lexer sees it, so
 * columns can be counted in code points by skipping continuation bytes.
 * Newlines only occur between tokens (strings reject raw control
 * characters), which keeps line tracking in the blank skipper.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "query/expr_int.h"

void lexer_init(lexer_t *lx, const char *src, size_t len, arena_t *arena)
{
    memset(lx, 0, sizeof *lx);
    lx->src = src;
    lx->len = len;
    lx->line = 1;
    lx->col = 1;
    lx->arena = arena;
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}
static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}
static int is_word_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_word_char(unsigned char c)
{
    return is_word_start(c) || is_digit(c);
}

size_t lexer_skip_blank(const lexer_t *lx, size_t off)
{
    while (off < lx->len && is_blank((unsigned char)lx->src[off]))
        off++;
    return off;
}

void lexer_pos(lexer_t *lx, size_t off, int *line, int *column)
{
    if (off < lx->col_off) { /* not expected; recount from the line start */
        lx->col_off = lx->line_start;
        lx->col = 1;
    }
    for (size_t i = lx->col_off; i < off && i < lx->len; i++)
        if (((unsigned char)lx->src[i] & 0xC0) != 0x80)
            lx->col++;
    lx->col_off = off;
    *line = lx->line;
    *column = lx->col;
}

/* Decodes the UTF-8 sequence at s (valid by contract) into a code point. */
static uint32_t utf8_decode(const unsigned char *s, size_t avail, size_t *n)
{
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    if (k > avail)
        k = avail;
    uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < k; i++)
        cp = (cp << 6) | (s[i] & 0x3F);
    *n = k;
    return cp;
}

/* "'x'", "'，' (U+FF0C)" or "U+0001" for the character at off. */
static void describe_char(const lexer_t *lx, size_t off, char *buf, size_t cap)
{
    const unsigned char *s = (const unsigned char *)lx->src + off;
    size_t n;
    uint32_t cp = utf8_decode(s, lx->len - off, &n);
    if (cp > 0x20 && cp < 0x7F)
        snprintf(buf, cap, "'%c'", (int)cp);
    else if (cp < 0x80)
        snprintf(buf, cap, "U+%04X", (unsigned)cp);
    else
        snprintf(buf, cap, "'%.*s' (U+%04X)", (int)n, (const char *)s, (unsigned)cp);
}

/* Copies at most `max` bytes of [s, s+n) without cutting a UTF-8 sequence. */
static int utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return (int)n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return (int)max;
}

void lexer_describe(const lexer_t *lx, const tok_t *t, char *buf, size_t cap)
{
    if (t->kind == TOK_EOF) {
        snprintf(buf, cap, "end of expression");
        return;
    }
    const char *s = lx->src + t->off;
    int n = utf8_prefix(s, t->len, 32);
    const char *more = (size_t)n < t->len ? "..." : "";
    if (t->kind == TOK_STRING)
        snprintf(buf, cap, "string %.*s%s", n, s, more);
    else
        snprintf(buf, cap, "'%.*s%s'", n, s, more);
}

static cp_status err_at(lexer_t *lx, cp_error_t *err, cp_status code, size_t off, const char *msg)
{
    int line, col;
    lexer_pos(lx, off, &line, &col);
    return CP_ERR_AT(err, code, line, col, "%d:%d: %s", line, col, msg);
}

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return 0;
    }
    *out = v;
    return 1;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Reads a quoted string starting at the quote at `start`; on success lx->pos
 * is past the closing quote and *s / *slen hold the unescaped UTF-8 (arena).
 * The escapes are JSON's plus \' ; every escape that is not one of them is
 * an error rather than a literal, so future escapes stay possible.
 */
static cp_status lex_string(lexer_t *lx, size_t start, const char **s, size_t *slen,
                            cp_error_t *err)
{
    const char *src = lx->src;
    char quote = src[start];
    size_t close = start + 1;
    while (close < lx->len && src[close] != quote)
        close += src[close] == '\\' ? 2 : 1;
    if (close >= lx->len)
        return err_at(lx, err, CP_ESYNTAX, start, "unterminated string");
    /* Escapes only shrink: the raw span bounds the decoded size. */
    char *out = arena_alloc(lx->arena, close - start);
    if (out == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t o = 0;
    char msg[128];
    for (size_t i = start + 1; i < close;) {
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20) {
            const char *hint = c == '\n' ? " (write \\n)" : c == '\t' ? " (write \\t)" : "";
            snprintf(msg, sizeof msg, "control character U+%04X in string%s", c, hint);
            return err_at(lx, err, CP_ESYNTAX, i, msg);
        }
        if (c != '\\') {
            out[o++] = (char)c;
            i++;
            continue;
        }
        unsigned char e = (unsigned char)src[i + 1]; /* i + 1 < close: close is a quote */
        switch (e) {
        case '"':
        case '\'':
        case '\\':
        case '/':
            out[o++] = (char)e;
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (i + 6 > close || !hex4(src + i + 2, &cp))
                return err_at(lx, err, CP_ESYNTAX, i,
                              "invalid \\u escape in string (expected 4 hex digits)");
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                snprintf(msg, sizeof msg, "unpaired surrogate \\u%04X in string", (unsigned)cp);
                return err_at(lx, err, CP_ESYNTAX, i, msg);
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 12 > close || src[i + 6] != '\\' || src[i + 7] != 'u' ||
                    !hex4(src + i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    snprintf(msg, sizeof msg,
                             "unpaired surrogate \\u%04X in string (expected a low surrogate "
                             "\\uDC00-\\uDFFF next)",
                             (unsigned)cp);
                    return err_at(lx, err, CP_ESYNTAX, i, msg);
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            o += utf8_encode(cp, out + o);
            i += 6;
            continue;
        }
        default:
            if (e > 0x20 && e < 0x7F)
                snprintf(msg, sizeof msg, "invalid escape '\\%c' in string", e);
            else
                snprintf(msg, sizeof msg, "invalid escape in string");
            return err_at(lx, err, CP_ESYNTAX, i, msg);
        }
        i += 2;
    }
    out[o] = '\0';
    *s = out;
    *slen = o;
    lx->pos = close + 1;
    return CP_OK;
}

/* Signed decimal digits to int64 with overflow detection (no locale, no
 * strtoll quirks such as leading blanks). */
static int parse_int64(const char *s, size_t n, int64_t *out)
{
    int neg = 0;
    size_t i = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

static cp_status lex_number(lexer_t *lx, cp_error_t *err)
{
    const char *src = lx->src;
    size_t start = lx->pos, p = lx->pos;
    int real = 0;
    if (src[p] == '-')
        p++;
    while (p < lx->len && is_digit((unsigned char)src[p]))
        p++;
    if (p < lx->len && src[p] == '.') {
        if (p + 1 >= lx->len || !is_digit((unsigned char)src[p + 1]))
            return err_at(lx, err, CP_ESYNTAX, p + 1, "expected a digit after '.' in number");
        p++;
        while (p < lx->len && is_digit((unsigned char)src[p]))
            p++;
        real = 1;
    }
    /* An exponent only when digits follow, so "10em" lexes as 10 and "em". */
    if (p < lx->len && (src[p] == 'e' || src[p] == 'E')) {
        size_t q = p + 1;
        if (q < lx->len && (src[q] == '+' || src[q] == '-'))
            q++;
        if (q < lx->len && is_digit((unsigned char)src[q])) {
            p = q;
            while (p < lx->len && is_digit((unsigned char)src[p]))
                p++;
            real = 1;
        }
    }
    tok_t *t = &lx->tok;
    t->kind = real ? TOK_REAL : TOK_INT;
    t->len = p - start;
    /* strtod needs a terminated copy: the next byte could continue a number
     * in its own syntax ("0x1p3"). */
    char small[64];
    char *copy = small;
    if (t->len >= sizeof small) {
        copy = arena_strndup(lx->arena, src + start, t->len);
        if (copy == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    } else {
        memcpy(small, src + start, t->len);
        small[t->len] = '\0';
    }
    t->r = strtod(copy, NULL);
    if (!real)
        t->overflow = !parse_int64(src + start, t->len, &t->i);
    /* Letters right after a number are legal only as a near() unit; the
     * parser decides, the lexer measures. */
    for (size_t q = p; q < lx->len && is_word_char((unsigned char)src[q]); q++)
        t->glued++;
    lx->pos = p;
    return CP_OK;
}

/* tag:PATH or crowd:NAME; lx->pos is just past the ':'. */
static cp_status lex_prefixed(lexer_t *lx, tok_kind kind, cp_error_t *err)
{
    tok_t *t = &lx->tok;
    const char *what = kind == TOK_TAG ? "tag path" : kind == TOK_GROUP ? "group id" : "crowd name";
    /* group ids are written like tag paths: bare when they can be, else quoted */
    int pathlike = kind == TOK_TAG || kind == TOK_GROUP;
    size_t p = lx->pos;
    char msg[160];
    t->kind = kind;
    if (p < lx->len && (lx->src[p] == '"' || lx->src[p] == '\'')) {
        cp_status st = lex_string(lx, p, &t->s, &t->slen, err);
        if (st != CP_OK)
            return st;
        if (t->slen == 0) {
            snprintf(msg, sizeof msg, "empty %s", what);
            return err_at(lx, err, CP_ESYNTAX, p, msg);
        }
        if (memchr(t->s, '\0', t->slen) != NULL) {
            snprintf(msg, sizeof msg, "%s contains \\u0000", what);
            return err_at(lx, err, CP_ESYNTAX, p, msg);
        }
    } else {
        while (p < lx->len && (pathlike ? expr__path_char((unsigned char)lx->src[p])
                                        : expr__name_char((unsigned char)lx->src[p])))
            p++;
        if (p == lx->pos) {
            char found[64];
            if (p >= lx->len)
                snprintf(found, sizeof found, "end of expression");
            else
                describe_char(lx, p, found, sizeof found);
            snprintf(msg, sizeof msg, "expected a %s after '%s:', found %s", what,
                     kind == TOK_TAG     ? "tag"
                     : kind == TOK_GROUP ? "group"
                                         : "crowd",
                     found);
            return err_at(lx, err, CP_ESYNTAX, p, msg);
        }
        t->s = arena_strndup(lx->arena, lx->src + lx->pos, p - lx->pos);
        if (t->s == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        t->slen = p - lx->pos;
        lx->pos = p;
    }
    t->len = lx->pos - t->off;
    return CP_OK;
}

/* group.TRAIT; `p` is just past the '.'. The trait is an identifier. */
static cp_status lex_group_trait(lexer_t *lx, size_t p, cp_error_t *err)
{
    tok_t *t = &lx->tok;
    size_t start = p;
    while (p < lx->len && is_word_char((unsigned char)lx->src[p]))
        p++;
    if (p == start || !expr__is_ident(lx->src + start, p - start))
        return err_at(lx, err, CP_ESYNTAX, start,
                      "expected a trait name after 'group.' (letters, digits and '_', not "
                      "starting with a digit)");
    t->kind = TOK_GROUP_TRAIT;
    t->s = arena_strndup(lx->arena, lx->src + start, p - start);
    if (t->s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    t->slen = p - start;
    lx->pos = p;
    t->len = p - t->off;
    return CP_OK;
}

cp_status lexer_next(lexer_t *lx, cp_error_t *err)
{
    const char *src = lx->src;
    while (lx->pos < lx->len && is_blank((unsigned char)src[lx->pos])) {
        if (src[lx->pos] == '\n') {
            lx->line++;
            lx->line_start = lx->col_off = lx->pos + 1;
            lx->col = 1;
        }
        lx->pos++;
    }
    tok_t *t = &lx->tok;
    memset(t, 0, sizeof *t);
    t->off = lx->pos;
    lexer_pos(lx, lx->pos, &t->line, &t->column);
    if (lx->pos >= lx->len) {
        t->kind = TOK_EOF;
        return CP_OK;
    }
    unsigned char c = (unsigned char)src[lx->pos];
    unsigned char c1 = lx->pos + 1 < lx->len ? (unsigned char)src[lx->pos + 1] : 0;
    t->len = 1;
    switch (c) {
    case '(':
        t->kind = TOK_LPAREN;
        break;
    case ')':
        t->kind = TOK_RPAREN;
        break;
    case ',':
        t->kind = TOK_COMMA;
        break;
    case '=':
        t->kind = TOK_OP, t->op = OP_EQ;
        t->len = c1 == '=' ? 2 : 1;
        break;
    case '!':
        if (c1 != '=')
            return err_at(lx, err, CP_ESYNTAX, lx->pos,
                          "unexpected character '!' (did you mean '!='?)");
        t->kind = TOK_OP, t->op = OP_NE, t->len = 2;
        break;
    case '<':
        t->kind = TOK_OP;
        if (c1 == '=')
            t->op = OP_LE, t->len = 2;
        else if (c1 == '>')
            t->op = OP_NE, t->len = 2;
        else
            t->op = OP_LT;
        break;
    case '>':
        t->kind = TOK_OP;
        if (c1 == '=')
            t->op = OP_GE, t->len = 2;
        else
            t->op = OP_GT;
        break;
    case '"':
    case '\'': {
        t->kind = TOK_STRING;
        cp_status st = lex_string(lx, lx->pos, &t->s, &t->slen, err);
        if (st != CP_OK)
            return st;
        t->len = lx->pos - t->off;
        return CP_OK;
    }
    default:
        if (is_digit(c) || (c == '-' && is_digit(c1)))
            return lex_number(lx, err);
        if (is_word_start(c)) {
            size_t p = lx->pos + 1;
            while (p < lx->len && is_word_char((unsigned char)src[p]))
                p++;
            t->kind = TOK_WORD;
            t->len = p - lx->pos;
            if (p < lx->len && src[p] == ':') {
                if (t->len == 3 && strncasecmp(src + lx->pos, "tag", 3) == 0) {
                    lx->pos = p + 1;
                    return lex_prefixed(lx, TOK_TAG, err);
                }
                if (t->len == 5 && strncasecmp(src + lx->pos, "crowd", 5) == 0) {
                    lx->pos = p + 1;
                    return lex_prefixed(lx, TOK_CROWD, err);
                }
                if (t->len == 5 && strncasecmp(src + lx->pos, "group", 5) == 0) {
                    lx->pos = p + 1;
                    return lex_prefixed(lx, TOK_GROUP, err);
                }
                char msg[160];
                int n = utf8_prefix(src + lx->pos, t->len, 32);
                snprintf(msg, sizeof msg,
                         "unknown prefix '%.*s:', expected tag:, crowd: or group:", n,
                         src + lx->pos);
                return err_at(lx, err, CP_ESYNTAX, lx->pos, msg);
            }
            if (p < lx->len && src[p] == '.' && t->len == 5 &&
                strncasecmp(src + lx->pos, "group", 5) == 0)
                return lex_group_trait(lx, p + 1, err);
            lx->pos = p;
            return CP_OK;
        } else {
            char found[64], msg[128];
            describe_char(lx, lx->pos, found, sizeof found);
            snprintf(msg, sizeof msg, "unexpected character %s%s", found,
                     c == '/' ? " (tag paths are written tag:PATH)" : "");
            return err_at(lx, err, CP_ESYNTAX, lx->pos, msg);
        }
    }
    lx->pos += t->len;
    return CP_OK;
}

int expr__parse_day(const char *s, size_t len, int32_t *day)
{
    int64_t secs;
    if (len != 10 || s[4] != '-' || s[7] != '-' || time_parse(s, len, &secs) != 0)
        return -1;
    *day = (int32_t)(secs / 86400); /* midnight: exact for negative days too */
    return 0;
}

cp_status lexer_take_date(lexer_t *lx, int *found, int32_t *day, cp_error_t *err)
{
    const tok_t *t = &lx->tok;
    const char *s = lx->src + t->off;
    size_t avail = lx->len - t->off;
    *found = 0;
    if (t->kind != TOK_INT || t->len != 4 || avail < 10)
        return CP_OK;
    for (size_t i = 0; i < 10; i++) {
        int want_dash = i == 4 || i == 7;
        if (want_dash ? s[i] != '-' : !is_digit((unsigned char)s[i]))
            return CP_OK;
    }
    if (avail > 10 && (is_word_char((unsigned char)s[10]) || s[10] == '.' || s[10] == ':'))
        return CP_OK;
    if (expr__parse_day(s, 10, day) != 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "invalid date '%.10s'", s);
        return err_at(lx, err, CP_EINVAL, t->off, msg);
    }
    *found = 1;
    lx->pos = t->off + 10;
    return lexer_next(lx, err);
}
