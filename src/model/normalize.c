/* normalize.c — identifier types, value normalisation and stored keys; see
 * normalize.h and docs/identity.md. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/normalize.h"
#include "util/text.h"
#include "util/util.h"

const char *const ident_builtin_types[IDENT_NBUILTIN] = {
    "user_id", "anonymous_id", "phone",     "email",  "device_id",
    "idfa",    "oaid",         "member_id", "openid", "unionid",
};

#define META_SALT "identity_salt"
#define META_PII "identity_pii"

/* A printable, bounded rendering of an untrusted value for error messages:
 * at most 40 bytes cut at a character boundary, control bytes as '?'. */
static const char *show(char buf[64], const char *s, size_t len)
{
    size_t n = len > 40 ? 40 : len;
    while (n > 0 && n < len && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* do not cut inside a UTF-8 sequence */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = (ch < 0x20 || ch == 0x7f || ch == '"') ? '?' : (char)ch;
    }
    if (n < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    if (!utf8_valid(buf, o))
        return "(invalid UTF-8)";
    return buf;
}

/* ------------------------------------------------------------- config */

void ident_config_init(ident_config_t *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->ic_country, "86");
    c->ic_hash_pii = 1;
    for (int i = 0; i < IDENT_NBUILTIN; i++)
        strcpy(c->ic_types[i], ident_builtin_types[i]);
    c->ic_ntypes = IDENT_NBUILTIN;
    c->ic_pii =
        (1ull << IDENT_PHONE) | (1ull << IDENT_EMAIL) | (1ull << IDENT_IDFA) | (1ull << IDENT_OAID);
}

int ident_type_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > IDENT_MAX_TYPE || name[0] < 'a' || name[0] > 'z')
        return 0;
    for (size_t i = 1; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    return 1;
}

int ident_type_find(const ident_config_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->ic_ntypes; i++)
        if (strlen(c->ic_types[i]) == len && memcmp(c->ic_types[i], name, len) == 0)
            return (int)i;
    return -1;
}

cp_status ident_config_add_type(ident_config_t *c, const char *name, int pii, cp_error_t *err)
{
    char sb[64];
    size_t len = strlen(name);
    if (!ident_type_name_valid(name, len))
        return CP_ERR(err, CP_EINVAL,
                      "identifier type \"%s\": a type name is 1-32 characters [a-z][a-z0-9_]*",
                      show(sb, name, len));
    if (ident_type_find(c, name, len) >= 0)
        return CP_ERR(err, CP_EEXIST, "identifier type \"%s\" already exists", name);
    if (c->ic_ntypes >= IDENT_MAX_TYPES)
        return CP_ERR(err, CP_ELIMIT, "identifier type \"%s\": at most %d types", name,
                      IDENT_MAX_TYPES);
    memcpy(c->ic_types[c->ic_ntypes], name, len + 1);
    if (pii)
        c->ic_pii |= 1ull << c->ic_ntypes;
    c->ic_ntypes++;
    return CP_OK;
}

cp_status ident_config_set_pii(ident_config_t *c, const char *name, int pii, cp_error_t *err)
{
    char sb[64];
    int i = ident_type_find(c, name, strlen(name));
    if (i < 0)
        return CP_ERR(err, CP_ENOTFOUND, "unknown identifier type \"%s\"",
                      show(sb, name, strlen(name)));
    if (pii)
        c->ic_pii |= 1ull << i;
    else
        c->ic_pii &= ~(1ull << i);
    return CP_OK;
}

cp_status ident_config_set_country(ident_config_t *c, const char *cc, cp_error_t *err)
{
    char sb[64];
    const char *p = cc[0] == '+' ? cc + 1 : cc;
    size_t n = strlen(p);
    int ok = n >= 1 && n <= 3 && p[0] != '0';
    for (size_t i = 0; ok && i < n; i++)
        ok = p[i] >= '0' && p[i] <= '9';
    if (!ok)
        return CP_ERR(err, CP_EINVAL,
                      "default country calling code \"%s\": expected 1-3 digits not starting "
                      "with 0 (e.g. 86)",
                      show(sb, cc, strlen(cc)));
    memcpy(c->ic_country, p, n + 1);
    return CP_OK;
}

void ident_config_set_salt(ident_config_t *c, const unsigned char salt[IDENT_SALT_LEN])
{
    memcpy(c->ic_salt, salt, IDENT_SALT_LEN);
    c->ic_have_salt = 1;
}

int ident_type_hashed(const ident_config_t *c, int type)
{
    return c->ic_hash_pii && type >= 0 && type < IDENT_MAX_TYPES && (c->ic_pii >> type) & 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "clear", or "sha256:" + the sorted PII type names joined by ','. Only
 * what changes the stored keys is in it. */
static void pii_fingerprint(const ident_config_t *c, char *buf, size_t cap)
{
    if (!c->ic_hash_pii) {
        snprintf(buf, cap, "clear");
        return;
    }
    const char *names[IDENT_MAX_TYPES];
    size_t n = 0;
    for (size_t i = 0; i < c->ic_ntypes; i++)
        if ((c->ic_pii >> i) & 1)
            names[n++] = c->ic_types[i];
    qsort(names, n, sizeof names[0], cmp_str);
    size_t o = (size_t)snprintf(buf, cap, "sha256:");
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? "," : "", names[i]);
}

cp_status ident_config_bind(store_txn_t *t, ident_config_t *c, int create, cp_error_t *err)
{
    if (sodium_init() < 0)
        return CP_ERR(err, CP_EINTERNAL, "libsodium failed to initialise");
    const void *v;
    size_t vl;
    cp_status rc = store_get(t, STORE_META, META_SALT, strlen(META_SALT), &v, &vl, err);
    if (rc == CP_ENOTFOUND) {
        if (!create)
            return CP_ENOTFOUND;
        if (!c->ic_have_salt) {
            randombytes_buf(c->ic_salt, IDENT_SALT_LEN);
            c->ic_have_salt = 1;
        }
        if ((rc = store_put(t, STORE_META, META_SALT, strlen(META_SALT), c->ic_salt, IDENT_SALT_LEN,
                            err)))
            return rc;
    } else if (rc) {
        return rc;
    } else {
        if (vl != IDENT_SALT_LEN)
            return CP_ERR(err, CP_EIO, "meta \"%s\" has %zu bytes, expected %d", META_SALT, vl,
                          IDENT_SALT_LEN);
        if (c->ic_have_salt && sodium_memcmp(c->ic_salt, v, IDENT_SALT_LEN) != 0)
            return CP_ERR(err, CP_ECONFLICT,
                          "the identifier salt given differs from the one stored in the data "
                          "directory");
        memcpy(c->ic_salt, v, IDENT_SALT_LEN);
        c->ic_have_salt = 1;
    }

    char want[IDENT_MAX_TYPES * (IDENT_MAX_TYPE + 1) + 16];
    pii_fingerprint(c, want, sizeof want);
    rc = store_get(t, STORE_META, META_PII, strlen(META_PII), &v, &vl, err);
    if (rc == CP_ENOTFOUND)
        return create
                   ? store_put(t, STORE_META, META_PII, strlen(META_PII), want, strlen(want), err)
                   : CP_OK;
    if (rc)
        return rc;
    if (vl != strlen(want) || memcmp(v, want, vl) != 0)
        return CP_ERR(err, CP_ECONFLICT,
                      "identifier hashing is configured as \"%s\" but the data directory was "
                      "written with \"%.*s\"; keys would not match (re-import to change it)",
                      want, (int)(vl > 200 ? 200 : vl), (const char *)v);
    return CP_OK;
}

/* ------------------------------------------------------------- phones */

/* Appends the digits of s to d, skipping the separators people type. A
 * "(0)" right after the country code ("+44 (0)20 ...") is the national
 * trunk prefix written inside an international number: dropped. */
static cp_status phone_digits(const char *s, size_t len, char *d, size_t *nd, int *plus,
                              cp_error_t *err)
{
    char sb[64];
    *nd = 0;
    *plus = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            if (*nd >= 32)
                return CP_ERR(err, CP_EINVAL,
                              "phone \"%s\": too long for E.164 (more than 15 digits)",
                              show(sb, s, len));
            d[(*nd)++] = ch;
        } else if (ch == '+' && *nd == 0 && !*plus) {
            *plus = 1;
        } else if (ch == '(' && i + 2 < len && s[i + 1] == '0' && s[i + 2] == ')' &&
                   (*plus || (*nd >= 2 && d[0] == '0' && d[1] == '0'))) {
            i += 2;
        } else if (ch == ' ' || ch == '\t' || ch == '-' || ch == '.' || ch == '(' || ch == ')') {
            continue;
        } else if ((unsigned char)ch >= 0x20 && (unsigned char)ch < 0x7f) {
            return CP_ERR(err, CP_EINVAL, "phone \"%s\": unexpected character '%c' at byte %zu",
                          show(sb, s, len), ch, i + 1);
        } else {
            return CP_ERR(err, CP_EINVAL, "phone \"%s\": unexpected byte 0x%02x at byte %zu",
                          show(sb, s, len), (unsigned char)ch, i + 1);
        }
    }
    if (*nd == 0)
        return CP_ERR(err, CP_EINVAL, "phone \"%s\": no digits", show(sb, s, len));
    return CP_OK;
}

cp_status ident_phone_e164(const char *country, const char *s, size_t len, char *out,
                           size_t *outlen, cp_error_t *err)
{
    char sb[64];
    char d[40];
    char e[64]; /* E.164 digits, without '+' */
    size_t nd = 0, ne = 0;
    int plus = 0;
    text_trim(&s, &len);
    if (len == 0)
        return CP_ERR(err, CP_EINVAL, "phone: empty value");
    cp_status rc = phone_digits(s, len, d, &nd, &plus, err);
    if (rc)
        return rc;
    size_t ccl = strlen(country);
    int cn = strcmp(country, "86") == 0;

    if (plus) {
        memcpy(e, d, nd);
        ne = nd;
    } else if (nd >= 2 && d[0] == '0' && d[1] == '0') {
        memcpy(e, d + 2, nd - 2); /* 00CC: the international call prefix */
        ne = nd - 2;
    } else if (cn && nd == 13 && memcmp(d, "861", 3) == 0) {
        memcpy(e, d, nd); /* a Chinese mobile written with its country code, no '+' */
        ne = nd;
    } else {
        const char *nsn = d;
        size_t nn = nd;
        if (d[0] == '0') { /* the national trunk prefix */
            nsn++;
            nn--;
        } else if (cn && !(nn == 11 && d[0] == '1')) {
            if (ccl + nn < 7)
                return CP_ERR(err, CP_EINVAL, "phone \"%s\": too short for E.164",
                              show(sb, s, len));
            return CP_ERR(err, CP_EINVAL,
                          "phone \"%s\": a national number for +86 must be an 11-digit mobile "
                          "starting with 1, or start with the trunk prefix 0 and an area code",
                          show(sb, s, len));
        }
        memcpy(e, country, ccl);
        memcpy(e + ccl, nsn, nn);
        ne = ccl + nn;
    }
    /* "+86 010 ...": a trunk 0 kept after China's country code. */
    if (ne >= 3 && e[0] == '8' && e[1] == '6' && e[2] == '0') {
        memmove(e + 2, e + 3, ne - 3);
        ne--;
    }
    if (ne == 0 || e[0] == '0')
        return CP_ERR(err, CP_EINVAL, "phone \"%s\": a country calling code cannot start with 0",
                      show(sb, s, len));
    if (ne < 7)
        return CP_ERR(err, CP_EINVAL, "phone \"%s\": too short for E.164", show(sb, s, len));
    if (ne > 15)
        return CP_ERR(err, CP_EINVAL, "phone \"%s\": too long for E.164 (more than 15 digits)",
                      show(sb, s, len));
    if (ne >= 4 && memcmp(e, "861", 3) == 0 && e[3] >= '3' && e[3] <= '9' && ne != 13)
        return CP_ERR(err, CP_EINVAL,
                      "phone \"%s\": a Chinese mobile number has 11 digits after +86, not %zu",
                      show(sb, s, len), ne - 2);
    out[0] = '+';
    memcpy(out + 1, e, ne);
    out[ne + 1] = '\0';
    *outlen = ne + 1;
    return CP_OK;
}

/* 1 if [d, d+n) is a North American national number: 10 digits whose
 * area code and exchange both start with 2..9. */
static int nanp_national(const char *d, size_t n)
{
    return n == 10 && d[0] >= '2' && d[0] <= '9' && d[3] >= '2' && d[3] <= '9';
}

cp_status ident_phone_e164_hint(const char *country, const char *hint, const char *s, size_t len,
                                char *out, size_t *outlen, cp_error_t *err)
{
    cp_status rc = ident_phone_e164(country, s, len, out, outlen, err);
    if (rc != CP_EINVAL || hint == NULL || hint[0] == '\0' || strcmp(hint, country) == 0)
        return rc;
    /* The default country refused it: try the device's country, but only
     * for a national number (a '+' or 00 number carries its own country,
     * and its error stands). */
    char d[40];
    size_t nd = 0;
    int plus = 0;
    const char *t = s;
    size_t tl = len;
    text_trim(&t, &tl);
    cp_error_t e2 = {0};
    if (tl == 0 || phone_digits(t, tl, d, &nd, &plus, &e2) != CP_OK || plus ||
        (nd >= 2 && d[0] == '0' && d[1] == '0'))
        return rc;
    if (strcmp(hint, "1") == 0) {
        /* North America: 10 digits, or 11 with the trunk prefix 1. */
        const char *nsn = nd == 11 && d[0] == '1' ? d + 1 : d;
        if (!nanp_national(nsn, nd == 11 && d[0] == '1' ? 10 : nd))
            return rc;
        out[0] = '+';
        out[1] = '1';
        memcpy(out + 2, nsn, 10);
        out[12] = '\0';
        *outlen = 12;
        error_clear(err);
        return CP_OK;
    }
    if (ident_phone_e164(hint, s, len, out, outlen, &e2) != CP_OK)
        return rc;
    error_clear(err);
    return CP_OK;
}

/* ---------------------------------------------------- unusable values */

int ident_value_unusable(const char *v, size_t len, const char *const *block, size_t nblock)
{
    static const char *const stand_ins[] = {"n/a",     "na",   "null", "nil",    "undefined",
                                            "unknown", "none", "-",    "(null)", "nan"};
    text_trim(&v, &len);
    if (len == 0)
        return IDENT_PLACEHOLDER;
    for (size_t i = 0; i < CP_ARRAY_LEN(stand_ins); i++)
        if (strlen(stand_ins[i]) == len && strncasecmp(stand_ins[i], v, len) == 0)
            return IDENT_PLACEHOLDER;
    /* All-zero ids: the IDFA/GAID/OAID of limited ad tracking
     * ("00000000-0000-0000-0000-000000000000"), and the same shape
     * elsewhere. Eight zeros at least, so a user id "0" stays usable. */
    size_t zeros = 0;
    int only = 1;
    for (size_t i = 0; i < len && only; i++) {
        only = v[i] == '0' || v[i] == '-';
        zeros += v[i] == '0';
    }
    if (only && zeros >= 8)
        return IDENT_PLACEHOLDER;
    for (size_t i = 0; i < nblock; i++)
        if (block[i] && strlen(block[i]) == len && strncasecmp(block[i], v, len) == 0)
            return IDENT_BLOCKLISTED;
    return IDENT_USABLE;
}

const char *ident_unusable_reason(int why)
{
    return why == IDENT_PLACEHOLDER   ? "placeholder"
           : why == IDENT_BLOCKLISTED ? "blocklisted"
                                      : NULL;
}

/* ISO 3166-1 alpha-2 regions of common locales and their calling codes. */
static const struct {
    char region[3];
    char cc[4];
} regions[] = {
    {"AE", "971"}, {"AR", "54"},  {"AT", "43"},  {"AU", "61"},  {"BE", "32"}, {"BR", "55"},
    {"CA", "1"},   {"CH", "41"},  {"CN", "86"},  {"DE", "49"},  {"DK", "45"}, {"ES", "34"},
    {"FI", "358"}, {"FR", "33"},  {"GB", "44"},  {"HK", "852"}, {"ID", "62"}, {"IE", "353"},
    {"IL", "972"}, {"IN", "91"},  {"IT", "39"},  {"JP", "81"},  {"KR", "82"}, {"MO", "853"},
    {"MX", "52"},  {"MY", "60"},  {"NL", "31"},  {"NO", "47"},  {"NZ", "64"}, {"PH", "63"},
    {"PL", "48"},  {"PT", "351"}, {"RU", "7"},   {"SA", "966"}, {"SE", "46"}, {"SG", "65"},
    {"TH", "66"},  {"TR", "90"},  {"TW", "886"}, {"UK", "44"},  {"US", "1"},  {"VN", "84"},
    {"ZA", "27"},
};

int ident_locale_calling_code(const char *locale, size_t len, char out[4])
{
    out[0] = '\0';
    if (locale == NULL)
        return 0;
    /* "en-US", "en_US", "zh-Hans-CN", "zh_CN.UTF-8", "en-US@posix": the
     * first two-letter subtag after the language is the region. */
    size_t i = 0, part = 0;
    while (i < len && locale[i] != '.' && locale[i] != '@') {
        size_t start = i;
        while (i < len && locale[i] != '-' && locale[i] != '_' && locale[i] != '.' &&
               locale[i] != '@')
            i++;
        if (part > 0 && i - start == 2) {
            char r[3] = {(char)(locale[start] & ~0x20), (char)(locale[start + 1] & ~0x20), 0};
            for (size_t k = 0; k < CP_ARRAY_LEN(regions); k++)
                if (memcmp(regions[k].region, r, 2) == 0) {
                    memcpy(out, regions[k].cc, 4);
                    return 1;
                }
            return 0;
        }
        part++;
        if (i < len && (locale[i] == '-' || locale[i] == '_'))
            i++;
    }
    return 0;
}

/* ------------------------------------------------------------- emails */

cp_status ident_email_normalize(const char *s, size_t len, char *out, size_t *outlen,
                                cp_error_t *err)
{
    char sb[64];
    text_trim(&s, &len);
    if (len == 0)
        return CP_ERR(err, CP_EINVAL, "email: empty value");
    if (len > IDENT_MAX_EMAIL)
        return CP_ERR(err, CP_ELIMIT, "email \"%s\": longer than %d bytes", show(sb, s, len),
                      IDENT_MAX_EMAIL);
    size_t at = len, nat = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f)
            return CP_ERR(err, CP_EINVAL, "email \"%s\": %s at byte %zu", show(sb, s, len),
                          ch == ' ' || ch == '\t' ? "contains a space"
                                                  : "contains a control character",
                          i + 1);
        if (ch == '@') {
            at = i;
            nat++;
        }
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : (char)ch;
    }
    if (nat != 1)
        return CP_ERR(err, CP_EINVAL, "email \"%s\": must contain exactly one '@' (found %zu)",
                      show(sb, s, len), nat);
    if (at == 0)
        return CP_ERR(err, CP_EINVAL, "email \"%s\": empty local part before '@'",
                      show(sb, s, len));
    if (at == len - 1)
        return CP_ERR(err, CP_EINVAL, "email \"%s\": empty domain after '@'", show(sb, s, len));
    const char *dom = out + at + 1;
    size_t dl = len - at - 1;
    if (dom[0] == '.' || dom[dl - 1] == '.' || memmem(dom, dl, "..", 2) != NULL)
        return CP_ERR(err, CP_EINVAL, "email \"%s\": malformed domain", show(sb, s, len));
    out[len] = '\0';
    *outlen = len;
    return CP_OK;
}

/* ---------------------------------------------------------- device ids */

static int is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int uuid_shaped(const char *s, size_t len)
{
    if (len != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!is_hex(s[i])) {
            return 0;
        }
    }
    return 1;
}

static cp_status device_normalize(const ident_config_t *c, int type, const char *s, size_t len,
                                  char *out, size_t *outlen, cp_error_t *err)
{
    char sb[64];
    const char *tn = c->ic_types[type];
    text_trim(&s, &len);
    if (len == 0)
        return CP_ERR(err, CP_EINVAL, "%s: empty value", tn);
    if (text_has_control(s, len))
        return CP_ERR(err, CP_EINVAL, "%s \"%s\": contains a control character", tn,
                      show(sb, s, len));
    if (type == IDENT_IDFA || type == IDENT_OAID) {
        int zero = 1, anyzero = 0;
        for (size_t i = 0; i < len && zero; i++) {
            zero = s[i] == '0' || s[i] == '-';
            anyzero |= s[i] == '0';
        }
        if (zero && anyzero)
            return CP_ERR(err, CP_EINVAL,
                          "%s \"%s\": all zeros (the SDK sends this when ad tracking is "
                          "limited); not an identifier",
                          tn, show(sb, s, len));
    }
    memcpy(out, s, len);
    out[len] = '\0';
    if (type == IDENT_IDFA && uuid_shaped(out, len)) {
        for (size_t i = 0; i < len; i++)
            if (out[i] >= 'a' && out[i] <= 'f')
                out[i] = (char)(out[i] - 32);
    } else if (type == IDENT_OAID) {
        int hexish = 1;
        for (size_t i = 0; i < len && hexish; i++)
            hexish = is_hex(out[i]) || out[i] == '-';
        for (size_t i = 0; hexish && i < len; i++)
            if (out[i] >= 'A' && out[i] <= 'F')
                out[i] = (char)(out[i] + 32);
    }
    *outlen = len;
    return CP_OK;
}

/* ------------------------------------------------------------ generic */

/* ident_normalize with a second country calling code for national phone
 * numbers that the default country refuses (NULL or "" = none). */
static cp_status normalize_hint(const ident_config_t *c, int type, const char *value, size_t vlen,
                                const char *hint, char *out, size_t *outlen, cp_error_t *err);

cp_status ident_normalize(const ident_config_t *c, int type, const char *value, size_t vlen,
                          char *out, size_t *outlen, cp_error_t *err)
{
    return normalize_hint(c, type, value, vlen, NULL, out, outlen, err);
}

static cp_status normalize_hint(const ident_config_t *c, int type, const char *value, size_t vlen,
                                const char *hint, char *out, size_t *outlen, cp_error_t *err)
{
    char sb[64];
    if (type < 0 || (size_t)type >= c->ic_ntypes)
        return CP_ERR(err, CP_EINVAL, "identifier type index %d out of range", type);
    const char *tn = c->ic_types[type];
    if (vlen == 0)
        return CP_ERR(err, CP_EINVAL, "%s: empty value", tn);
    if (vlen > IDENT_MAX_VALUE)
        return CP_ERR(err, CP_ELIMIT, "%s \"%s\": longer than %d bytes", tn, show(sb, value, vlen),
                      IDENT_MAX_VALUE);
    if (!utf8_valid(value, vlen))
        return CP_ERR(err, CP_EINVAL, "%s: value is not valid UTF-8", tn);
    switch (type) {
    case IDENT_PHONE:
        return ident_phone_e164_hint(c->ic_country, hint, value, vlen, out, outlen, err);
    case IDENT_EMAIL:
        return ident_email_normalize(value, vlen, out, outlen, err);
    case IDENT_DEVICE_ID:
    case IDENT_IDFA:
    case IDENT_OAID:
        return device_normalize(c, type, value, vlen, out, outlen, err);
    default:
        break;
    }
    /* Exact types: user_id must stay byte-identical to the API's user id. */
    if (text_has_control(value, vlen))
        return CP_ERR(err, CP_EINVAL, "%s \"%s\": contains a control character", tn,
                      show(sb, value, vlen));
    memcpy(out, value, vlen);
    out[vlen] = '\0';
    *outlen = vlen;
    return CP_OK;
}

cp_status ident_key(const ident_config_t *c, const char *type, size_t tlen, const char *value,
                    size_t vlen, char *out, size_t *outlen, cp_error_t *err)
{
    return ident_key_hint(c, type, tlen, value, vlen, NULL, out, outlen, err);
}

cp_status ident_key_hint(const ident_config_t *c, const char *type, size_t tlen, const char *value,
                         size_t vlen, const char *hint, char *out, size_t *outlen, cp_error_t *err)
{
    char sb[64];
    char norm[IDENT_MAX_VALUE + 1];
    size_t nl = 0;
    int ti = ident_type_find(c, type, tlen);
    if (ti < 0)
        return CP_ERR(err, CP_ENOTFOUND, "unknown identifier type \"%s\"", show(sb, type, tlen));
    cp_status rc = normalize_hint(c, ti, value, vlen, hint, norm, &nl, err);
    if (rc)
        goto out;
    memcpy(out, type, tlen);
    out[tlen] = ':';
    if (ident_type_hashed(c, ti)) {
        if (!c->ic_have_salt) {
            rc = CP_ERR(err, CP_EINVAL, "%s: no identifier salt loaded (ident_config_bind)",
                        c->ic_types[ti]);
            goto out;
        }
        unsigned char h[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_state st;
        crypto_hash_sha256_init(&st);
        crypto_hash_sha256_update(&st, c->ic_salt, IDENT_SALT_LEN);
        crypto_hash_sha256_update(&st, (const unsigned char *)norm, nl);
        crypto_hash_sha256_final(&st, h);
        out[tlen + 1] = '#';
        sodium_bin2hex(out + tlen + 2, IDENT_HASH_HEX + 1, h, sizeof h);
        *outlen = tlen + 2 + IDENT_HASH_HEX;
        sodium_memzero(&st, sizeof st);
    } else {
        memcpy(out + tlen + 1, norm, nl);
        out[tlen + 1 + nl] = '\0';
        *outlen = tlen + 1 + nl;
    }
out:
    sodium_memzero(norm, sizeof norm); /* raw PII does not linger on the stack */
    return rc;
}

cp_status ident_key_from_spec(const ident_config_t *c, const char *spec, size_t len, char *out,
                              size_t *outlen, cp_error_t *err)
{
    char sb[64];
    const char *colon = memchr(spec, ':', len);
    if (colon == NULL)
        return CP_ERR(err, CP_EINVAL,
                      "identifier \"%s\": expected TYPE:VALUE (e.g. phone:+8613800138000)",
                      show(sb, spec, len));
    return ident_key(c, spec, (size_t)(colon - spec), colon + 1, len - (size_t)(colon - spec) - 1,
                     out, outlen, err);
}

cp_status ident_key_check(const char *key, size_t len, cp_error_t *err)
{
    char sb[64];
    const char *colon = memchr(key, ':', len);
    if (colon == NULL || !ident_type_name_valid(key, (size_t)(colon - key)))
        return CP_ERR(err, CP_EINVAL, "identifier key \"%s\": expected type:value",
                      show(sb, key, len));
    size_t vl = len - (size_t)(colon - key) - 1;
    if (vl == 0)
        return CP_ERR(err, CP_EINVAL, "identifier key \"%s\": empty value", show(sb, key, len));
    if (vl > IDENT_MAX_VALUE)
        return CP_ERR(err, CP_ELIMIT, "identifier key \"%s\": value longer than %d bytes",
                      show(sb, key, len), IDENT_MAX_VALUE);
    if (!utf8_valid(colon + 1, vl) || text_has_control(colon + 1, vl))
        return CP_ERR(err, CP_EINVAL,
                      "identifier key \"%s\": value is not UTF-8 without control characters",
                      show(sb, key, len));
    return CP_OK;
}

int ident_key_is_hashed(const char *key, size_t len)
{
    const char *colon = memchr(key, ':', len);
    if (colon == NULL)
        return 0;
    size_t vl = len - (size_t)(colon - key) - 1;
    if (vl != 1 + IDENT_HASH_HEX || colon[1] != '#')
        return 0;
    for (size_t i = 0; i < IDENT_HASH_HEX; i++) {
        char ch = colon[2 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return 0;
    }
    return 1;
}
