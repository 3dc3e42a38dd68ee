/*
 * campaign.c — the campaign document (docs/activation.md) <-> act_campaign_t.
 *
 * Parsing is strict on purpose: an unknown field anywhere is a 400, because
 * a misspelt "targting" that is silently dropped turns a targeted line into
 * one that bids on everybody. Every error names the field by its JSON path
 * ("lines[0].creatives[1].w: must be a positive integer").
 *
 * Output is written by hand rather than through jansson so that money comes
 * back as yuan with exactly two decimals ("8.00"), which jansson's reals
 * cannot express; the field order is fixed (the canonical form), so
 * parse -> to_json -> parse -> to_json gives the same text.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "activate/campaign.h"
#include "util/util.h"

/* Money: at most 10^11 yuan (10^13 fen) per amount, far below 2^53, so a
 * yuan amount and its fen are exact integers in a double. */
#define MONEY_MAX_FEN 10000000000000LL
#define MAX_NAME 128      /* advertiser, crowd, OS, region, city, deal ... */
#define MAX_CAP 1000000   /* cap counts */
#define MAX_SIZE 10000    /* creative and request sizes, pixels */
#define MAX_DURATION 3600 /* video/audio seconds */
#define DAY_MS 86400000LL

static const char *const DAYS[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

/* ------------------------------------------------------------ errors */

/* CP_ERR with the message "PATH: reason". */
#define FIELD_ERR(err, code, path, ...)                                                            \
    field_err((err), (code), __FILE__, __func__, __LINE__, (path), __VA_ARGS__)

static cp_status field_err(cp_error_t *err, cp_status code, const char *file, const char *func,
                           int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static cp_status field_err(cp_error_t *err, cp_status code, const char *file, const char *func,
                           int line, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_set(err, code, file, func, line, "%s: %s", path, msg);
}

/* "path.key" (or "key" at the top). Paths are short: ids are bounded, so a
 * cut path still names the field well enough. */
static void join(char *out, size_t cap, const char *path, const char *key)
{
    if (snprintf(out, cap, "%s%s%s", path, path[0] ? "." : "", key) >= (int)cap)
        out[cap - 1] = '\0';
}

static void join_index(char *out, size_t cap, const char *path, size_t i)
{
    if (snprintf(out, cap, "%s[%zu]", path, i) >= (int)cap)
        out[cap - 1] = '\0';
}

#define PATH_CAP 160

/* ------------------------------------------------------------ getters */

/* Refuses any key of obj not in `known` (NULL-terminated), listing them. */
static cp_status check_keys(const json_t *obj, const char *path, const char *const *known,
                            cp_error_t *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        int ok = 0;
        for (size_t i = 0; known[i] != NULL && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok) {
            char p[PATH_CAP], list[300] = "";
            size_t n = 0;
            for (size_t i = 0; known[i] != NULL; i++)
                n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
                                      i ? ", " : "", known[i]);
            join(p, sizeof p, path, key);
            return FIELD_ERR(err, CP_EINVAL, p, "unknown field (known here: %s)", list);
        }
    }
    return CP_OK;
}

/* The member `key` of obj, NULL when absent or null (null = absent, so the
 * canonical output's nulls read back). */
static json_t *member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static cp_status need(const json_t *v, const char *path, cp_error_t *err)
{
    return v != NULL ? CP_OK : FIELD_ERR(err, CP_EINVAL, path, "required");
}

static int printable_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* A copy of a non-empty string of at most `max` bytes without control
 * characters (jansson has already checked UTF-8). */
static cp_status take_text(const json_t *v, const char *path, size_t max, char **out,
                           cp_error_t *err)
{
    if (!json_is_string(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be a string, not %s", json_kind(v));
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0)
        return FIELD_ERR(err, CP_EINVAL, path, "must not be empty");
    if (n > max)
        return FIELD_ERR(err, CP_ELIMIT, path, "longer than %zu bytes", max);
    if (memchr(s, '\0', n) != NULL || !printable_text(s, n))
        return FIELD_ERR(err, CP_EINVAL, path, "must not contain control characters");
    *out = strndup(s, n);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory copying %s", path);
}

static int id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Ids are [A-Za-z0-9_.-], 1..ACT_MAX_ID bytes: they appear in URLs and
 * notice tokens unescaped. */
static cp_status check_id(const char *s, size_t n, const char *path, cp_error_t *err)
{
    if (n == 0)
        return FIELD_ERR(err, CP_EINVAL, path, "must not be empty");
    if (n > ACT_MAX_ID)
        return FIELD_ERR(err, CP_ELIMIT, path, "longer than %d bytes", ACT_MAX_ID);
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i]))
            return FIELD_ERR(err, CP_EINVAL, path,
                             "\"%.*s\" is not an id (letters, digits, '_', '.', '-')", (int)n, s);
    return CP_OK;
}

static cp_status take_id(const json_t *v, const char *path, char **out, cp_error_t *err)
{
    if (!json_is_string(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be a string, not %s", json_kind(v));
    cp_status st = check_id(json_string_value(v), json_string_length(v), path, err);
    if (st != CP_OK)
        return st;
    *out = strdup(json_string_value(v));
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory copying %s", path);
}

static cp_status take_int(const json_t *v, const char *path, int64_t min, int64_t max, int64_t *out,
                          cp_error_t *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        if (min == 1 && max >= MAX_SIZE)
            return FIELD_ERR(err, CP_EINVAL, path, "must be a positive integer (at most %lld)",
                             (long long)max);
        return FIELD_ERR(err, CP_EINVAL, path, "must be an integer from %lld to %lld",
                         (long long)min, (long long)max);
    }
    *out = json_integer_value(v);
    return CP_OK;
}

static cp_status take_bool(const json_t *v, const char *path, int *out, cp_error_t *err)
{
    if (!json_is_boolean(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be true or false, not %s", json_kind(v));
    *out = json_is_true(v);
    return CP_OK;
}

/*
 * A decimal amount with at most two decimals, in hundredths: yuan -> fen,
 * percent -> basis points. jansson gives the number as a double; the JSON
 * text had at most two decimals exactly when the double is the one nearest
 * to some k/100, and then k = llround(v * 100): both strtod (jansson) and
 * the division k / 100.0 are correctly rounded, so the text "8.00" and
 * k = 800 give the same double, while 0.005 (nearest k = 1 gives 0.01) does
 * not. |v| is bounded far below 2^53 / 100, so v * 100 is within 0.5 of k
 * and llround finds it. Refusing the rest is what "no floats" means: no
 * amount is ever silently rounded.
 */
static cp_status take_money(const json_t *v, const char *path, int64_t max, int64_t *out,
                            cp_error_t *err)
{
    if (json_is_integer(v)) {
        json_int_t y = json_integer_value(v);
        if (y <= 0 || y > max / 100)
            return FIELD_ERR(err, CP_EINVAL, path, "must be more than 0 and at most %lld.%02lld",
                             (long long)(max / 100), (long long)(max % 100));
        *out = (int64_t)y * 100;
        return CP_OK;
    }
    if (!json_is_real(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be a number, not %s", json_kind(v));
    double d = json_real_value(v);
    if (!(d > 0) || d > (double)max / 100)
        return FIELD_ERR(err, CP_EINVAL, path, "must be more than 0 and at most %lld.%02lld",
                         (long long)(max / 100), (long long)(max % 100));
    long long k = llround(d * 100);
    if (k <= 0 || (double)k / 100.0 != d)
        return FIELD_ERR(err, CP_EINVAL, path, "%.15g has more than 2 decimals", d);
    *out = k;
    return CP_OK;
}

/* The array member `key` (absent = empty): *arr and *n. Past ACT_MAX_LIST
 * (or `max`) CP_ELIMIT. */
static cp_status get_array(const json_t *obj, const char *key, const char *path, size_t max,
                           json_t **arr, cp_error_t *err)
{
    char p[PATH_CAP];
    json_t *v = member(obj, key);
    *arr = NULL;
    if (v == NULL)
        return CP_OK;
    join(p, sizeof p, path, key);
    if (!json_is_array(v))
        return FIELD_ERR(err, CP_EINVAL, p, "must be an array, not %s", json_kind(v));
    if (json_array_size(v) > max)
        return FIELD_ERR(err, CP_ELIMIT, p, "more than %zu entries", max);
    *arr = v;
    return CP_OK;
}

typedef cp_status (*str_check_fn)(char *s, const char *path, cp_error_t *err);

/* A list of strings (absent = empty), each checked and normalised by
 * `check` (may be NULL), duplicates refused. */
static cp_status get_strlist(const json_t *obj, const char *key, const char *path, size_t maxlen,
                             str_check_fn check, char ***out, size_t *nout, cp_error_t *err)
{
    json_t *a;
    cp_status st = get_array(obj, key, path, ACT_MAX_LIST, &a, err);
    if (st != CP_OK || a == NULL)
        return st;
    size_t n = json_array_size(a);
    if (n == 0)
        return CP_OK;
    char lp[PATH_CAP], p[PATH_CAP];
    join(lp, sizeof lp, path, key);
    *out = calloc(n, sizeof(char *));
    if (*out == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", lp);
    for (size_t i = 0; i < n; i++) {
        join_index(p, sizeof p, lp, i);
        st = take_text(json_array_get(a, i), p, maxlen, &(*out)[i], err);
        if (st != CP_OK)
            return st;
        *nout = i + 1;
        if (check != NULL && (st = check((*out)[i], p, err)) != CP_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp((*out)[j], (*out)[i]) == 0)
                return FIELD_ERR(err, CP_EINVAL, p, "\"%s\" is listed twice", (*out)[i]);
    }
    return CP_OK;
}

/* ------------------------------------------------------- value checks */

/* IAB category codes ("IAB2", "IAB2-3") or Content Taxonomy ids ("483"):
 * letters, digits and '-' only. */
static cp_status check_cat(char *s, const char *path, cp_error_t *err)
{
    for (char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            return FIELD_ERR(err, CP_EINVAL, path,
                             "\"%s\" is not a category code (such as \"IAB2\" or \"IAB2-3\")", s);
    return CP_OK;
}

/* Advertiser domains as OpenRTB's adomain: "acme.com", lower-cased; no
 * scheme or path. */
static cp_status check_domain(char *s, const char *path, cp_error_t *err)
{
    size_t n = strlen(s);
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || strchr(s, '.') == NULL)
        goto bad;
    for (char *p = s; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-')
            goto bad;
    }
    return CP_OK;
bad:
    return FIELD_ERR(err, CP_EINVAL, path,
                     "\"%s\" is not a domain (such as \"acme.com\", without scheme or path)", s);
}

/* ISO 3166-1 alpha-3, as OpenRTB's geo.country: "CHN"; upper-cased. */
static cp_status check_country(char *s, const char *path, cp_error_t *err)
{
    if (strlen(s) != 3)
        goto bad;
    for (char *p = s; *p; p++) {
        if (!isalpha((unsigned char)*p))
            goto bad;
        *p = (char)toupper((unsigned char)*p);
    }
    return CP_OK;
bad:
    return FIELD_ERR(err, CP_EINVAL, path,
                     "\"%s\" is not an ISO 3166-1 alpha-3 country code (such as \"CHN\")", s);
}

static cp_status check_mime(char *s, const char *path, cp_error_t *err)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL || slash == s || slash[1] == '\0' || strchr(s, ' ') != NULL)
        return FIELD_ERR(err, CP_EINVAL, path, "\"%s\" is not a MIME type (such as \"video/mp4\")",
                         s);
    return CP_OK;
}

static cp_status check_url(const char *s, const char *path, cp_error_t *err)
{
    if ((strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) || strchr(s, ' ') != NULL)
        return FIELD_ERR(err, CP_EINVAL, path, "\"%s\" is not an http(s) URL", s);
    return CP_OK;
}

/* ------------------------------------------------------------- dates */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil) and back. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)((int64_t)yoe + era * 400 + (*m <= 2));
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* "YYYY-MM-DD" (2000..2099 is plenty for campaigns, but any 4-digit year
 * from 1970 reads) -> days since the epoch. */
static cp_status take_date(const json_t *v, const char *path, int64_t *days, cp_error_t *err)
{
    if (!json_is_string(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be a date \"YYYY-MM-DD\", not %s",
                         json_kind(v));
    const char *s = json_string_value(v);
    unsigned y, m, d;
    int used = 0;
    if (json_string_length(v) != 10 || sscanf(s, "%4u-%2u-%2u%n", &y, &m, &d, &used) != 3 ||
        used != 10 || s[4] != '-' || s[7] != '-' || !isdigit((unsigned char)s[5]) ||
        !isdigit((unsigned char)s[8]) || y < 1970 || m < 1 || m > 12 || d < 1)
        return FIELD_ERR(err, CP_EINVAL, path, "\"%s\" is not a date \"YYYY-MM-DD\"", s);
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned dim = mdays[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    if (d > dim)
        return FIELD_ERR(err, CP_EINVAL, path, "\"%s\" is not a date (the month has %u days)", s,
                         dim);
    *days = days_from_civil(y, m, d);
    return CP_OK;
}

/* UTC instant of local midnight starting day `days` in tz: the offset in
 * force at that local time (looked up twice: the first guess may sit on the
 * other side of a daylight-saving change). */
static int64_t local_midnight_utc(const tz_t *tz, int64_t days)
{
    int64_t local = days * DAY_MS;
    int64_t guess = local - tz_offset_ms(tz, local);
    return local - tz_offset_ms(tz, guess);
}

static int64_t local_day_of(const tz_t *tz, int64_t utc_ms)
{
    return floor_div(utc_ms + tz_offset_ms(tz, utc_ms), DAY_MS);
}

/* --------------------------------------------------------------- free */

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

static void creative_clear(act_creative_t *k)
{
    free(k->id);
    free_strs(k->adomain, k->nadomain);
    free_strs(k->cat, k->ncat);
    free(k->iurl);
    free(k->adm);
    free_strs(k->mimes, k->nmimes);
}

static void line_clear(act_line_t *l)
{
    free(l->id);
    free(l->targeting);
    act_reqtarget_t *q = &l->req;
    free_strs(q->site_cats, q->nsite_cats);
    free(q->device_types);
    free_strs(q->os, q->nos);
    free_strs(q->countries, q->ncountries);
    free_strs(q->regions, q->nregions);
    free_strs(q->cities, q->ncities);
    free(q->sizes);
    free_strs(q->deals, q->ndeals);
    for (size_t i = 0; l->premiums != NULL && i < l->npremiums; i++)
        free(l->premiums[i].crowd);
    free(l->premiums);
    free(l->caps);
    for (size_t i = 0; l->creatives != NULL && i < l->ncreatives; i++)
        creative_clear(&l->creatives[i]);
    free(l->creatives);
}

void campaign_free(act_campaign_t *c)
{
    if (c == NULL)
        return;
    free(c->id);
    free(c->advertiser);
    free(c->timezone);
    free(c->caps);
    for (size_t i = 0; c->lines != NULL && i < c->nlines; i++)
        line_clear(&c->lines[i]);
    free(c->lines);
    tz_free(c->tz);
    free(c);
}

/* ------------------------------------------------------------- parse */

static const char *const FORMAT_NAMES[] = {NULL, "banner", "video", "native", "audio"};
static const char *const BILLING_NAMES[] = {NULL, "cpm", "cpc", "cpd", "cpa", "cps"};
static const char *const PERIOD_NAMES[] = {NULL, "hour", "day", "week", "lifetime"};
static const char *const PACING_NAMES[] = {NULL, "even", "asap"};

/* The index (>= 1) of a string in names[1..n], or 0. */
static int name_index(const json_t *v, const char *const *names, int n)
{
    if (!json_is_string(v))
        return 0;
    for (int i = 1; i <= n; i++)
        if (strcmp(json_string_value(v), names[i]) == 0)
            return i;
    return 0;
}

static cp_status take_enum(const json_t *v, const char *path, const char *const *names, int n,
                           int *out, cp_error_t *err)
{
    int i = name_index(v, names, n);
    if (i == 0) {
        char list[120] = "";
        size_t len = 0;
        for (int k = 1; k <= n; k++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%s\"", k > 1 ? ", " : "",
                                    names[k]);
        if (json_is_string(v))
            return FIELD_ERR(err, CP_EINVAL, path, "\"%s\" is not one of %s", json_string_value(v),
                             list);
        return FIELD_ERR(err, CP_EINVAL, path, "must be one of %s, not %s", list, json_kind(v));
    }
    *out = i;
    return CP_OK;
}

static cp_status parse_caps(const json_t *obj, const char *path, act_cap_t **out, size_t *nout,
                            cp_error_t *err)
{
    static const char *const known[] = {"count", "per", NULL};
    json_t *a;
    cp_status st = get_array(obj, "caps", path, ACT_MAX_LIST, &a, err);
    if (st != CP_OK || a == NULL || json_array_size(a) == 0)
        return st;
    char lp[PATH_CAP], p[PATH_CAP], fp[PATH_CAP];
    join(lp, sizeof lp, path, "caps");
    size_t n = json_array_size(a);
    *out = calloc(n, sizeof **out);
    if (*out == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", lp);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(a, i);
        join_index(p, sizeof p, lp, i);
        if (!json_is_object(e))
            return FIELD_ERR(err, CP_EINVAL, p,
                             "must be an object {\"count\":3,\"per\":\"day\"}, "
                             "not %s",
                             json_kind(e));
        if ((st = check_keys(e, p, known, err)) != CP_OK)
            return st;
        int64_t count;
        int per;
        join(fp, sizeof fp, p, "count");
        if ((st = need(member(e, "count"), fp, err)) != CP_OK ||
            (st = take_int(member(e, "count"), fp, 1, MAX_CAP, &count, err)) != CP_OK)
            return st;
        join(fp, sizeof fp, p, "per");
        if ((st = need(member(e, "per"), fp, err)) != CP_OK ||
            (st = take_enum(member(e, "per"), fp, PERIOD_NAMES, 4, &per, err)) != CP_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if ((int)(*out)[j].per == per)
                return FIELD_ERR(err, CP_EINVAL, fp, "a cap per %s is already given at %s[%zu]",
                                 PERIOD_NAMES[per], lp, j);
        (*out)[i].count = (uint32_t)count;
        (*out)[i].per = (act_period)per;
        *nout = i + 1;
    }
    return CP_OK;
}

/* {"mon":[[9,18]], ...}: local hour ranges [from, to) per day; days not
 * given are off. */
static cp_status parse_dayparting(const json_t *v, const char *path, uint8_t hours[21],
                                  cp_error_t *err)
{
    static const char *const known[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun", NULL};
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, path,
                         "must be an object of days {\"mon\":[[9,18]],...}, not %s", json_kind(v));
    cp_status st = check_keys(v, path, known, err);
    if (st != CP_OK)
        return st;
    memset(hours, 0, 21);
    int any = 0;
    char dp[PATH_CAP], rp[PATH_CAP], hp[PATH_CAP];
    for (int day = 0; day < 7; day++) {
        json_t *ranges = member(v, DAYS[day]);
        if (ranges == NULL)
            continue;
        join(dp, sizeof dp, path, DAYS[day]);
        if (!json_is_array(ranges) || json_array_size(ranges) > 24)
            return FIELD_ERR(err, CP_EINVAL, dp,
                             "must be a list of at most 24 hour ranges [[9,18],[20,22]]");
        for (size_t i = 0; i < json_array_size(ranges); i++) {
            json_t *r = json_array_get(ranges, i);
            join_index(rp, sizeof rp, dp, i);
            if (!json_is_array(r) || json_array_size(r) != 2)
                return FIELD_ERR(err, CP_EINVAL, rp,
                                 "must be an hour range [from, to) such as [9,18]");
            int64_t from, to;
            join_index(hp, sizeof hp, rp, 0);
            if ((st = take_int(json_array_get(r, 0), hp, 0, 23, &from, err)) != CP_OK)
                return st;
            join_index(hp, sizeof hp, rp, 1);
            if ((st = take_int(json_array_get(r, 1), hp, 1, 24, &to, err)) != CP_OK)
                return st;
            if (to <= from)
                return FIELD_ERR(err, CP_EINVAL, rp,
                                 "[%lld,%lld] ends before it starts (split a range past "
                                 "midnight over two days)",
                                 (long long)from, (long long)to);
            for (int64_t h = from; h < to; h++) {
                int bit = day * 24 + (int)h;
                hours[bit / 8] |= (uint8_t)(1u << (bit % 8));
                any = 1;
            }
        }
    }
    if (!any)
        return FIELD_ERR(err, CP_EINVAL, path,
                         "no hour is on: the campaign would never bid (leave \"dayparting\" out "
                         "for every hour)");
    return CP_OK;
}

static cp_status parse_schedule(const json_t *v, act_campaign_t *c, cp_error_t *err)
{
    static const char *const known[] = {"start", "end", "timezone", "dayparting", NULL};
    cp_status st;
    memset(c->hours, 0xff, sizeof c->hours);
    if (v == NULL)
        return FIELD_ERR(err, CP_EINVAL, "schedule",
                         "required (at least {\"start\":\"YYYY-MM-DD\"})");
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, "schedule", "must be an object, not %s", json_kind(v));
    if ((st = check_keys(v, "schedule", known, err)) != CP_OK)
        return st;
    json_t *tzv = member(v, "timezone");
    if (tzv != NULL) {
        if ((st = take_text(tzv, "schedule.timezone", 64, &c->timezone, err)) != CP_OK)
            return st;
    } else if ((c->timezone = strdup("Asia/Shanghai")) == NULL) {
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    st = tz_load(c->timezone, &c->tz, err);
    if (st == CP_ENOMEM)
        return st;
    if (st != CP_OK)
        return FIELD_ERR(err, CP_EINVAL, "schedule.timezone", "%s", err->message);
    int64_t start, end;
    if ((st = need(member(v, "start"), "schedule.start", err)) != CP_OK ||
        (st = take_date(member(v, "start"), "schedule.start", &start, err)) != CP_OK)
        return st;
    c->start_ms = local_midnight_utc(c->tz, start);
    if (member(v, "end") != NULL) {
        if ((st = take_date(member(v, "end"), "schedule.end", &end, err)) != CP_OK)
            return st;
        if (end < start)
            return FIELD_ERR(
                err, CP_EINVAL, "schedule.end", "\"%s\" is before schedule.start \"%s\"",
                json_string_value(member(v, "end")), json_string_value(member(v, "start")));
        c->end_ms = local_midnight_utc(c->tz, end + 1);
    }
    if (member(v, "dayparting") != NULL &&
        (st = parse_dayparting(member(v, "dayparting"), "schedule.dayparting", c->hours, err)) !=
            CP_OK)
        return st;
    return CP_OK;
}

static cp_status parse_budget(const json_t *v, act_campaign_t *c, cp_error_t *err)
{
    static const char *const known[] = {"total", "daily", "currency", NULL};
    cp_status st;
    strcpy(c->currency, "CNY");
    if (v == NULL)
        return CP_OK;
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, "budget", "must be an object, not %s", json_kind(v));
    if ((st = check_keys(v, "budget", known, err)) != CP_OK)
        return st;
    if (member(v, "total") != NULL && (st = take_money(member(v, "total"), "budget.total",
                                                       MONEY_MAX_FEN, &c->total_fen, err)) != CP_OK)
        return st;
    if (member(v, "daily") != NULL && (st = take_money(member(v, "daily"), "budget.daily",
                                                       MONEY_MAX_FEN, &c->daily_fen, err)) != CP_OK)
        return st;
    if (c->total_fen > 0 && c->daily_fen > c->total_fen)
        return FIELD_ERR(err, CP_EINVAL, "budget.daily", "more than budget.total");
    json_t *cur = member(v, "currency");
    if (cur != NULL) {
        const char *s = json_string_value(cur);
        if (s == NULL || strlen(s) != 3 || !isupper((unsigned char)s[0]) ||
            !isupper((unsigned char)s[1]) || !isupper((unsigned char)s[2]))
            return FIELD_ERR(err, CP_EINVAL, "budget.currency",
                             "must be an ISO 4217 code such as \"CNY\"");
        memcpy(c->currency, s, 4);
    }
    return CP_OK;
}

static cp_status parse_request(const json_t *v, const char *path, act_reqtarget_t *q,
                               cp_error_t *err)
{
    static const char *const known[] = {"site_cats", "device_types", "os",        "countries",
                                        "regions",   "cities",       "formats",   "sizes",
                                        "deals",     "app_only",     "site_only", NULL};
    cp_status st;
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be an object, not %s", json_kind(v));
    if ((st = check_keys(v, path, known, err)) != CP_OK ||
        (st = get_strlist(v, "site_cats", path, 32, check_cat, &q->site_cats, &q->nsite_cats,
                          err)) != CP_OK ||
        (st = get_strlist(v, "os", path, MAX_NAME, NULL, &q->os, &q->nos, err)) != CP_OK ||
        (st = get_strlist(v, "countries", path, 3, check_country, &q->countries, &q->ncountries,
                          err)) != CP_OK ||
        (st = get_strlist(v, "regions", path, MAX_NAME, NULL, &q->regions, &q->nregions, err)) !=
            CP_OK ||
        (st = get_strlist(v, "cities", path, MAX_NAME, NULL, &q->cities, &q->ncities, err)) !=
            CP_OK ||
        (st = get_strlist(v, "deals", path, MAX_NAME, NULL, &q->deals, &q->ndeals, err)) != CP_OK)
        return st;
    char lp[PATH_CAP], p[PATH_CAP];
    json_t *a;
    /* device_types: OpenRTB / AdCOM DeviceType 1..8. */
    if ((st = get_array(v, "device_types", path, ACT_MAX_LIST, &a, err)) != CP_OK)
        return st;
    if (a != NULL && json_array_size(a) > 0) {
        join(lp, sizeof lp, path, "device_types");
        if ((q->device_types = calloc(json_array_size(a), sizeof(int32_t))) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", lp);
        for (size_t i = 0; i < json_array_size(a); i++) {
            int64_t t;
            join_index(p, sizeof p, lp, i);
            if ((st = take_int(json_array_get(a, i), p, 1, 8, &t, err)) != CP_OK)
                return st;
            for (size_t j = 0; j < i; j++)
                if (q->device_types[j] == t)
                    return FIELD_ERR(err, CP_EINVAL, p, "%lld is listed twice", (long long)t);
            q->device_types[i] = (int32_t)t;
            q->ndevice_types = i + 1;
        }
    }
    if ((st = get_array(v, "formats", path, 4, &a, err)) != CP_OK)
        return st;
    for (size_t i = 0; a != NULL && i < json_array_size(a); i++) {
        int f;
        join(lp, sizeof lp, path, "formats");
        join_index(p, sizeof p, lp, i);
        if ((st = take_enum(json_array_get(a, i), p, FORMAT_NAMES, 4, &f, err)) != CP_OK)
            return st;
        if (q->formats & (1u << f))
            return FIELD_ERR(err, CP_EINVAL, p, "\"%s\" is listed twice", FORMAT_NAMES[f]);
        q->formats |= 1u << f;
    }
    if ((st = get_array(v, "sizes", path, ACT_MAX_LIST, &a, err)) != CP_OK)
        return st;
    if (a != NULL && json_array_size(a) > 0) {
        join(lp, sizeof lp, path, "sizes");
        if ((q->sizes = calloc(json_array_size(a), sizeof *q->sizes)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", lp);
        for (size_t i = 0; i < json_array_size(a); i++) {
            json_t *e = json_array_get(a, i);
            int64_t w, h;
            join_index(p, sizeof p, lp, i);
            if (!json_is_array(e) || json_array_size(e) != 2 ||
                !json_is_integer(json_array_get(e, 0)) || !json_is_integer(json_array_get(e, 1)))
                return FIELD_ERR(err, CP_EINVAL, p, "must be a size [w, h] such as [300,250]");
            char sp[PATH_CAP];
            join_index(sp, sizeof sp, p, 0);
            if ((st = take_int(json_array_get(e, 0), sp, 1, MAX_SIZE, &w, err)) != CP_OK)
                return st;
            join_index(sp, sizeof sp, p, 1);
            if ((st = take_int(json_array_get(e, 1), sp, 1, MAX_SIZE, &h, err)) != CP_OK)
                return st;
            for (size_t j = 0; j < i; j++)
                if (q->sizes[j].w == w && q->sizes[j].h == h)
                    return FIELD_ERR(err, CP_EINVAL, p, "[%lld,%lld] is listed twice", (long long)w,
                                     (long long)h);
            q->sizes[i].w = (int32_t)w;
            q->sizes[i].h = (int32_t)h;
            q->nsizes = i + 1;
        }
    }
    char bp[PATH_CAP];
    if (member(v, "app_only") != NULL) {
        join(bp, sizeof bp, path, "app_only");
        if ((st = take_bool(member(v, "app_only"), bp, &q->app_only, err)) != CP_OK)
            return st;
    }
    if (member(v, "site_only") != NULL) {
        join(bp, sizeof bp, path, "site_only");
        if ((st = take_bool(member(v, "site_only"), bp, &q->site_only, err)) != CP_OK)
            return st;
    }
    if (q->app_only && q->site_only) {
        join(bp, sizeof bp, path, "site_only");
        return FIELD_ERR(err, CP_EINVAL, bp, "app_only and site_only cannot both be true");
    }
    return CP_OK;
}

static cp_status parse_creative(const json_t *v, const char *path, act_creative_t *k,
                                cp_error_t *err)
{
    static const char *const known[] = {"id",   "format", "w",     "h",        "adomain", "cat",
                                        "iurl", "adm",    "mimes", "duration", NULL};
    char p[PATH_CAP];
    cp_status st;
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be an object, not %s", json_kind(v));
    if ((st = check_keys(v, path, known, err)) != CP_OK)
        return st;
    join(p, sizeof p, path, "id");
    if ((st = need(member(v, "id"), p, err)) != CP_OK ||
        (st = take_id(member(v, "id"), p, &k->id, err)) != CP_OK)
        return st;
    json_t *w = member(v, "w"), *h = member(v, "h");
    int f = 0;
    join(p, sizeof p, path, "format");
    if (member(v, "format") != NULL) {
        if ((st = take_enum(member(v, "format"), p, FORMAT_NAMES, 4, &f, err)) != CP_OK)
            return st;
    } else if (w != NULL || h != NULL) {
        f = ACT_FMT_BANNER;
    } else {
        return FIELD_ERR(err, CP_EINVAL, p,
                         "required when w and h are not given (\"banner\", \"video\", \"native\" "
                         "or \"audio\")");
    }
    k->format = (act_format)f;
    if (f == ACT_FMT_BANNER || f == ACT_FMT_VIDEO) {
        int64_t x;
        join(p, sizeof p, path, "w");
        if ((st = need(w, p, err)) != CP_OK || (st = take_int(w, p, 1, MAX_SIZE, &x, err)) != CP_OK)
            return st;
        k->w = (int32_t)x;
        join(p, sizeof p, path, "h");
        if ((st = need(h, p, err)) != CP_OK || (st = take_int(h, p, 1, MAX_SIZE, &x, err)) != CP_OK)
            return st;
        k->h = (int32_t)x;
    } else if (w != NULL || h != NULL) {
        join(p, sizeof p, path, w != NULL ? "w" : "h");
        return FIELD_ERR(err, CP_EINVAL, p, "only for banner and video creatives");
    }
    if ((st = get_strlist(v, "adomain", path, 253, check_domain, &k->adomain, &k->nadomain, err)) !=
            CP_OK ||
        (st = get_strlist(v, "cat", path, 32, check_cat, &k->cat, &k->ncat, err)) != CP_OK)
        return st;
    if (k->nadomain == 0) {
        join(p, sizeof p, path, "adomain");
        return FIELD_ERR(err, CP_EINVAL, p,
                         "required: at least one advertiser domain such as [\"acme.com\"]");
    }
    join(p, sizeof p, path, "iurl");
    if (member(v, "iurl") != NULL &&
        ((st = take_text(member(v, "iurl"), p, 2048, &k->iurl, err)) != CP_OK ||
         (st = check_url(k->iurl, p, err)) != CP_OK))
        return st;
    /* The markup is kept as given: its macros are the bidder's to expand. */
    json_t *adm = member(v, "adm");
    join(p, sizeof p, path, "adm");
    if ((st = need(adm, p, err)) != CP_OK)
        return st;
    if (!json_is_string(adm))
        return FIELD_ERR(err, CP_EINVAL, p, "must be a string, not %s", json_kind(adm));
    if (json_string_length(adm) == 0)
        return FIELD_ERR(err, CP_EINVAL, p, "must not be empty");
    if (json_string_length(adm) > ACT_MAX_ADM)
        return FIELD_ERR(err, CP_ELIMIT, p, "longer than %u bytes", ACT_MAX_ADM);
    if (memchr(json_string_value(adm), '\0', json_string_length(adm)) != NULL)
        return FIELD_ERR(err, CP_EINVAL, p, "must not contain NUL");
    if ((k->adm = strdup(json_string_value(adm))) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory copying %s", p);
    int timed = f == ACT_FMT_VIDEO || f == ACT_FMT_AUDIO;
    if (timed) {
        if ((st = get_strlist(v, "mimes", path, 64, check_mime, &k->mimes, &k->nmimes, err)) !=
            CP_OK)
            return st;
        join(p, sizeof p, path, "mimes");
        if (k->nmimes == 0)
            return FIELD_ERR(err, CP_EINVAL, p, "required for %s: such as [\"video/mp4\"]",
                             FORMAT_NAMES[f]);
        int64_t d;
        join(p, sizeof p, path, "duration");
        if ((st = need(member(v, "duration"), p, err)) != CP_OK ||
            (st = take_int(member(v, "duration"), p, 1, MAX_DURATION, &d, err)) != CP_OK)
            return st;
        k->duration = (int32_t)d;
    } else if (member(v, "mimes") != NULL || member(v, "duration") != NULL) {
        join(p, sizeof p, path, member(v, "mimes") != NULL ? "mimes" : "duration");
        return FIELD_ERR(err, CP_EINVAL, p, "only for video and audio creatives");
    }
    return CP_OK;
}

static cp_status parse_premiums(const json_t *v, const char *path, act_line_t *l, cp_error_t *err)
{
    static const char *const known[] = {"crowd", "pct", NULL};
    json_t *a;
    cp_status st = get_array(v, "premiums", path, ACT_MAX_PREMIUMS, &a, err);
    if (st != CP_OK || a == NULL || json_array_size(a) == 0)
        return st;
    char lp[PATH_CAP], p[PATH_CAP], fp[PATH_CAP];
    join(lp, sizeof lp, path, "premiums");
    if ((l->premiums = calloc(json_array_size(a), sizeof *l->premiums)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", lp);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        act_premium_t *pr = &l->premiums[i];
        join_index(p, sizeof p, lp, i);
        if (!json_is_object(e))
            return FIELD_ERR(err, CP_EINVAL, p,
                             "must be an object {\"crowd\":\"high_value\",\"pct\":50}, not %s",
                             json_kind(e));
        if ((st = check_keys(e, p, known, err)) != CP_OK)
            return st;
        join(fp, sizeof fp, p, "crowd");
        if ((st = need(member(e, "crowd"), fp, err)) != CP_OK ||
            (st = take_text(member(e, "crowd"), fp, MAX_NAME, &pr->crowd, err)) != CP_OK)
            return st;
        l->npremiums = i + 1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(l->premiums[j].crowd, pr->crowd) == 0)
                return FIELD_ERR(err, CP_EINVAL, fp, "crowd \"%s\" has a premium at %s[%zu]",
                                 pr->crowd, lp, j);
        int64_t pct;
        join(fp, sizeof fp, p, "pct");
        if ((st = need(member(e, "pct"), fp, err)) != CP_OK ||
            (st = take_int(member(e, "pct"), fp, -90, ACT_PREMIUM_MAX_PCT, &pct, err)) != CP_OK)
            return st;
        pr->pct = (int32_t)pct;
    }
    return CP_OK;
}

/* Money of a line: which of bid / max_cpm / goal each billing model takes. */
static cp_status parse_line_money(const json_t *v, const char *path, act_line_t *l, cp_error_t *err)
{
    char p[PATH_CAP];
    cp_status st;
    const char *bill = BILLING_NAMES[l->billing];
    json_t *bid = member(v, "bid"), *max = member(v, "max_cpm"), *goal = member(v, "goal");
    int wants_bid =
        l->billing == ACT_BILL_CPM || l->billing == ACT_BILL_CPC || l->billing == ACT_BILL_CPD;
    int needs_max =
        l->billing == ACT_BILL_CPD || l->billing == ACT_BILL_CPA || l->billing == ACT_BILL_CPS;
    join(p, sizeof p, path, "bid");
    if (wants_bid) {
        if ((st = need(bid, p, err)) != CP_OK ||
            (st = take_money(bid, p, MONEY_MAX_FEN, &l->bid_fen, err)) != CP_OK)
            return st;
    } else if (bid != NULL) {
        return FIELD_ERR(err, CP_EINVAL, p,
                         "%s lines bid at max_cpm toward their goal: give "
                         "\"goal\" and \"max_cpm\" instead",
                         bill);
    }
    join(p, sizeof p, path, "max_cpm");
    if (max != NULL) {
        if (l->billing == ACT_BILL_CPM)
            return FIELD_ERR(err, CP_EINVAL, p, "not for cpm lines (the bid is the CPM)");
        if ((st = take_money(max, p, MONEY_MAX_FEN, &l->max_cpm_fen, err)) != CP_OK)
            return st;
    } else if (needs_max) {
        return FIELD_ERR(err, CP_EINVAL, p, "required for %s lines: the CPM they bid", bill);
    }
    join(p, sizeof p, path, "goal");
    if (l->billing == ACT_BILL_CPA || l->billing == ACT_BILL_CPS) {
        /* CPS goals are a commission in percent of GMV, 2 decimals: basis points. */
        int64_t max_goal = l->billing == ACT_BILL_CPS ? 10000 : MONEY_MAX_FEN;
        if ((st = need(goal, p, err)) != CP_OK ||
            (st = take_money(goal, p, max_goal, &l->goal_fen, err)) != CP_OK)
            return st;
    } else if (goal != NULL) {
        return FIELD_ERR(err, CP_EINVAL, p, "only for cpa and cps lines");
    }
    return CP_OK;
}

static cp_status parse_line(const json_t *v, const char *path, act_line_t *l, cp_error_t *err)
{
    static const char *const known[] = {"id",       "paused", "billing",   "bid",
                                        "max_cpm",  "goal",   "targeting", "request",
                                        "premiums", "caps",   "creatives", NULL};
    char p[PATH_CAP];
    cp_status st;
    if (!json_is_object(v))
        return FIELD_ERR(err, CP_EINVAL, path, "must be an object, not %s", json_kind(v));
    if ((st = check_keys(v, path, known, err)) != CP_OK)
        return st;
    join(p, sizeof p, path, "id");
    if ((st = need(member(v, "id"), p, err)) != CP_OK ||
        (st = take_id(member(v, "id"), p, &l->id, err)) != CP_OK)
        return st;
    join(p, sizeof p, path, "paused");
    if (member(v, "paused") != NULL &&
        (st = take_bool(member(v, "paused"), p, &l->paused, err)) != CP_OK)
        return st;
    int billing = ACT_BILL_CPM;
    join(p, sizeof p, path, "billing");
    if (member(v, "billing") != NULL &&
        (st = take_enum(member(v, "billing"), p, BILLING_NAMES, 5, &billing, err)) != CP_OK)
        return st;
    l->billing = (act_billing)billing;
    if ((st = parse_line_money(v, path, l, err)) != CP_OK)
        return st;
    /* Targeting: syntax here, names against the data in the registry. */
    json_t *t = member(v, "targeting");
    join(p, sizeof p, path, "targeting");
    if (t != NULL && !json_is_string(t))
        return FIELD_ERR(err, CP_EINVAL, p, "must be a crowd expression (a string), not %s",
                         json_kind(t));
    const char *expr = t != NULL ? json_string_value(t) : "";
    if (t != NULL && json_string_length(t) > CP_EXPR_MAX_LEN)
        return FIELD_ERR(err, CP_ELIMIT, p, "longer than %d bytes", CP_EXPR_MAX_LEN);
    if ((l->targeting = strdup(expr)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory copying %s", p);
    if (expr[strspn(expr, " \t\r\n")] != '\0') {
        char *tree = NULL;
        cp_error_t e = {0};
        st = cp_expr_to_json(expr, &tree, &e);
        cp_free(tree);
        if (st == CP_ENOMEM)
            return CP_ERR(err, CP_ENOMEM, "out of memory checking %s", p);
        /* The position stays in the message ("L:C: ..."), not in
         * err->line: the message must start with the field's path. */
        if (st != CP_OK)
            return FIELD_ERR(err, st == CP_ELIMIT ? CP_ELIMIT : CP_EINVAL, p, "%s", e.message);
    }
    json_t *req = member(v, "request");
    join(p, sizeof p, path, "request");
    if (req != NULL && (st = parse_request(req, p, &l->req, err)) != CP_OK)
        return st;
    if ((st = parse_premiums(v, path, l, err)) != CP_OK ||
        (st = parse_caps(v, path, &l->caps, &l->ncaps, err)) != CP_OK)
        return st;
    json_t *a;
    join(p, sizeof p, path, "creatives");
    if ((st = get_array(v, "creatives", path, ACT_MAX_CREATIVES, &a, err)) != CP_OK)
        return st;
    if (a == NULL || json_array_size(a) == 0)
        return FIELD_ERR(err, CP_EINVAL, p, "required: at least one creative");
    if ((l->creatives = calloc(json_array_size(a), sizeof *l->creatives)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", p);
    unsigned formats = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        char kp[PATH_CAP];
        join_index(kp, sizeof kp, p, i);
        st = parse_creative(json_array_get(a, i), kp, &l->creatives[i], err);
        l->ncreatives = i + 1;
        if (st != CP_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp(l->creatives[j].id, l->creatives[i].id) == 0) {
                char ip[PATH_CAP];
                join(ip, sizeof ip, kp, "id");
                return FIELD_ERR(err, CP_EINVAL, ip, "\"%s\" is also the id of %s[%zu]",
                                 l->creatives[i].id, p, j);
            }
        formats |= 1u << l->creatives[i].format;
    }
    /* A format the line asks for but cannot fill would never bid. */
    for (int f = 1; f <= 4; f++)
        if ((l->req.formats & (1u << f)) && !(formats & (1u << f))) {
            join(p, sizeof p, path, "request.formats");
            return FIELD_ERR(err, CP_EINVAL, p, "\"%s\" is listed but the line has no %s creative",
                             FORMAT_NAMES[f], FORMAT_NAMES[f]);
        }
    return CP_OK;
}

static cp_status parse_doc(const json_t *doc, const char *url_id, act_campaign_t *c,
                           cp_error_t *err)
{
    static const char *const known[] = {"id",     "advertiser", "version",  "updated",
                                        "paused", "budget",     "schedule", "pacing",
                                        "caps",   "lines",      NULL};
    cp_status st;
    if (!json_is_object(doc))
        return CP_ERR(err, CP_EINVAL, "campaign document: must be a JSON object, not %s",
                      json_kind(doc));
    if ((st = check_keys(doc, "", known, err)) != CP_OK)
        return st;
    json_t *id = member(doc, "id");
    if (id != NULL) {
        if ((st = take_id(id, "id", &c->id, err)) != CP_OK)
            return st;
        if (url_id != NULL && strcmp(url_id, c->id) != 0)
            return FIELD_ERR(err, CP_EINVAL, "id", "\"%s\" is not the id in the URL (\"%s\")",
                             c->id, url_id);
    } else if (url_id != NULL) {
        if ((st = check_id(url_id, strlen(url_id), "id", err)) != CP_OK)
            return st;
        if ((c->id = strdup(url_id)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    } else {
        return FIELD_ERR(err, CP_EINVAL, "id", "required");
    }
    if ((st = need(member(doc, "advertiser"), "advertiser", err)) != CP_OK ||
        (st = take_text(member(doc, "advertiser"), "advertiser", MAX_NAME, &c->advertiser, err)) !=
            CP_OK)
        return st;
    /* version and updated are the registry's: read back so that the
     * canonical form round-trips; registry_put replaces them. */
    int64_t x;
    if (member(doc, "version") != NULL) {
        if ((st = take_int(member(doc, "version"), "version", 0, INT64_MAX, &x, err)) != CP_OK)
            return st;
        c->version = (uint64_t)x;
    }
    json_t *upd = member(doc, "updated");
    if (upd != NULL) {
        int64_t secs;
        if (!json_is_string(upd) ||
            time_parse(json_string_value(upd), json_string_length(upd), &secs) != 0)
            return FIELD_ERR(err, CP_EINVAL, "updated", "must be an ISO 8601 time");
        c->updated_ms = secs * 1000;
    }
    if (member(doc, "paused") != NULL &&
        (st = take_bool(member(doc, "paused"), "paused", &c->paused, err)) != CP_OK)
        return st;
    if ((st = parse_budget(member(doc, "budget"), c, err)) != CP_OK ||
        (st = parse_schedule(member(doc, "schedule"), c, err)) != CP_OK)
        return st;
    int pacing = ACT_PACE_EVEN;
    if (member(doc, "pacing") != NULL &&
        (st = take_enum(member(doc, "pacing"), "pacing", PACING_NAMES, 2, &pacing, err)) != CP_OK)
        return st;
    c->pacing = (act_pacing)pacing;
    if ((st = parse_caps(doc, "", &c->caps, &c->ncaps, err)) != CP_OK)
        return st;
    json_t *a;
    if ((st = get_array(doc, "lines", "", ACT_MAX_LINES, &a, err)) != CP_OK)
        return st;
    if (a == NULL || json_array_size(a) == 0)
        return FIELD_ERR(err, CP_EINVAL, "lines", "required: at least one line item");
    if ((c->lines = calloc(json_array_size(a), sizeof *c->lines)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading lines");
    for (size_t i = 0; i < json_array_size(a); i++) {
        char p[PATH_CAP];
        join_index(p, sizeof p, "lines", i);
        st = parse_line(json_array_get(a, i), p, &c->lines[i], err);
        c->nlines = i + 1;
        if (st != CP_OK)
            return st;
        c->lines[i].campaign = c;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->lines[j].id, c->lines[i].id) == 0) {
                char ip[PATH_CAP];
                join(ip, sizeof ip, p, "id");
                return FIELD_ERR(err, CP_EINVAL, ip, "\"%s\" is also the id of lines[%zu]",
                                 c->lines[i].id, j);
            }
    }
    return CP_OK;
}

cp_status campaign_parse(const char *json, size_t len, const char *id, act_campaign_t **out,
                         cp_error_t *err)
{
    *out = NULL;
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "campaign document: missing");
    if (len > ACT_MAX_DOC)
        return CP_ERR(err, CP_ELIMIT, "campaign document: larger than %u bytes", ACT_MAX_DOC);
    json_error_t je;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL)
        return CP_ERR(err, CP_EINVAL, "campaign document: invalid JSON at line %d, column %d: %s",
                      je.line, je.column, je.text);
    act_campaign_t *c = calloc(1, sizeof *c);
    cp_status st = c != NULL ? parse_doc(doc, id, c, err)
                             : CP_ERR(err, CP_ENOMEM, "out of memory reading a campaign");
    json_decref(doc);
    if (st != CP_OK) {
        campaign_free(c);
        return st;
    }
    *out = c;
    return CP_OK;
}

/* ------------------------------------------------------------ output */

/* A JSON string: quotes, backslashes and control characters escaped,
 * everything else (UTF-8 included) as is, as jansson writes it. */
static cp_status w_str(buf_t *b, const char *s)
{
    return json_buf_str(b, s, strlen(s));
}

/* Hundredths as a decimal with two places ("8.00"); 0 -> null. */
static cp_status w_money(buf_t *b, int64_t v)
{
    if (v == 0)
        return buf_append(b, "null", 4);
    return buf_printf(b, "%lld.%02lld", (long long)(v / 100), (long long)(v % 100));
}

static cp_status w_strs(buf_t *b, char **v, size_t n)
{
    cp_status st = buf_append(b, "[", 1);
    for (size_t i = 0; st == CP_OK && i < n; i++) {
        if (i > 0)
            st = buf_append(b, ",", 1);
        if (st == CP_OK)
            st = w_str(b, v[i]);
    }
    return st == CP_OK ? buf_append(b, "]", 1) : st;
}

static cp_status w_caps(buf_t *b, const act_cap_t *caps, size_t n)
{
    cp_status st = buf_append(b, "[", 1);
    for (size_t i = 0; st == CP_OK && i < n; i++)
        st = buf_printf(b, "%s{\"count\":%u,\"per\":\"%s\"}", i ? "," : "", caps[i].count,
                        PERIOD_NAMES[caps[i].per]);
    return st == CP_OK ? buf_append(b, "]", 1) : st;
}

static cp_status w_date(buf_t *b, int64_t days)
{
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    return buf_printf(b, "\"%04d-%02u-%02u\"", y, m, d);
}

static cp_status w_dayparting(buf_t *b, const uint8_t hours[21])
{
    cp_status st = buf_append(b, "{", 1);
    for (int day = 0; st == CP_OK && day < 7; day++) {
        st = buf_printf(b, "%s\"%s\":[", day ? "," : "", DAYS[day]);
        int n = 0;
        for (int h = 0; st == CP_OK && h < 24;) {
            int bit = day * 24 + h;
            if (!(hours[bit / 8] & (1u << (bit % 8)))) {
                h++;
                continue;
            }
            int from = h;
            while (h < 24 && (hours[(day * 24 + h) / 8] & (1u << ((day * 24 + h) % 8))))
                h++;
            st = buf_printf(b, "%s[%d,%d]", n++ ? "," : "", from, h);
        }
        if (st == CP_OK)
            st = buf_append(b, "]", 1);
    }
    return st == CP_OK ? buf_append(b, "}", 1) : st;
}

static cp_status w_request(buf_t *b, const act_reqtarget_t *q)
{
    cp_status st = buf_append(b, "{\"site_cats\":", 13);
    if (st == CP_OK)
        st = w_strs(b, q->site_cats, q->nsite_cats);
    if (st == CP_OK)
        st = buf_append(b, ",\"device_types\":[", 17);
    for (size_t i = 0; st == CP_OK && i < q->ndevice_types; i++)
        st = buf_printf(b, "%s%d", i ? "," : "", q->device_types[i]);
    if (st == CP_OK)
        st = buf_append(b, "],\"os\":", 7);
    if (st == CP_OK)
        st = w_strs(b, q->os, q->nos);
    if (st == CP_OK)
        st = buf_append(b, ",\"countries\":", 13);
    if (st == CP_OK)
        st = w_strs(b, q->countries, q->ncountries);
    if (st == CP_OK)
        st = buf_append(b, ",\"regions\":", 11);
    if (st == CP_OK)
        st = w_strs(b, q->regions, q->nregions);
    if (st == CP_OK)
        st = buf_append(b, ",\"cities\":", 10);
    if (st == CP_OK)
        st = w_strs(b, q->cities, q->ncities);
    if (st == CP_OK)
        st = buf_append(b, ",\"formats\":[", 12);
    for (int f = 1, n = 0; st == CP_OK && f <= 4; f++)
        if (q->formats & (1u << f))
            st = buf_printf(b, "%s\"%s\"", n++ ? "," : "", FORMAT_NAMES[f]);
    if (st == CP_OK)
        st = buf_append(b, "],\"sizes\":[", 11);
    for (size_t i = 0; st == CP_OK && i < q->nsizes; i++)
        st = buf_printf(b, "%s[%d,%d]", i ? "," : "", q->sizes[i].w, q->sizes[i].h);
    if (st == CP_OK)
        st = buf_append(b, "],\"deals\":", 10);
    if (st == CP_OK)
        st = w_strs(b, q->deals, q->ndeals);
    if (st == CP_OK)
        st = buf_printf(b, ",\"app_only\":%s,\"site_only\":%s}", q->app_only ? "true" : "false",
                        q->site_only ? "true" : "false");
    return st;
}

static cp_status w_creative(buf_t *b, const act_creative_t *k)
{
    cp_status st = buf_append(b, "{\"id\":", 6);
    if (st == CP_OK)
        st = w_str(b, k->id);
    if (st == CP_OK)
        st = buf_printf(b, ",\"format\":\"%s\"", FORMAT_NAMES[k->format]);
    if (st == CP_OK && (k->format == ACT_FMT_BANNER || k->format == ACT_FMT_VIDEO))
        st = buf_printf(b, ",\"w\":%d,\"h\":%d", k->w, k->h);
    if (st == CP_OK)
        st = buf_append(b, ",\"adomain\":", 11);
    if (st == CP_OK)
        st = w_strs(b, k->adomain, k->nadomain);
    if (st == CP_OK)
        st = buf_append(b, ",\"cat\":", 7);
    if (st == CP_OK)
        st = w_strs(b, k->cat, k->ncat);
    if (st == CP_OK)
        st = buf_append(b, ",\"iurl\":", 8);
    if (st == CP_OK)
        st = k->iurl ? w_str(b, k->iurl) : buf_append(b, "null", 4);
    if (st == CP_OK && (k->format == ACT_FMT_VIDEO || k->format == ACT_FMT_AUDIO)) {
        st = buf_append(b, ",\"mimes\":", 9);
        if (st == CP_OK)
            st = w_strs(b, k->mimes, k->nmimes);
        if (st == CP_OK)
            st = buf_printf(b, ",\"duration\":%d", k->duration);
    }
    if (st == CP_OK)
        st = buf_append(b, ",\"adm\":", 7);
    if (st == CP_OK)
        st = w_str(b, k->adm);
    return st == CP_OK ? buf_append(b, "}", 1) : st;
}

static cp_status w_line(buf_t *b, const act_line_t *l)
{
    cp_status st = buf_append(b, "{\"id\":", 6);
    if (st == CP_OK)
        st = w_str(b, l->id);
    if (st == CP_OK)
        st = buf_printf(b,
                        ",\"paused\":%s,\"billing\":\"%s\",\"bid\":", l->paused ? "true" : "false",
                        BILLING_NAMES[l->billing]);
    if (st == CP_OK)
        st = w_money(b, l->bid_fen);
    if (st == CP_OK)
        st = buf_append(b, ",\"max_cpm\":", 11);
    if (st == CP_OK)
        st = w_money(b, l->max_cpm_fen);
    if (st == CP_OK)
        st = buf_append(b, ",\"goal\":", 8);
    if (st == CP_OK)
        st = w_money(b, l->goal_fen);
    if (st == CP_OK)
        st = buf_append(b, ",\"targeting\":", 13);
    if (st == CP_OK)
        st = w_str(b, l->targeting);
    if (st == CP_OK)
        st = buf_append(b, ",\"request\":", 11);
    if (st == CP_OK)
        st = w_request(b, &l->req);
    if (st == CP_OK)
        st = buf_append(b, ",\"premiums\":[", 13);
    for (size_t i = 0; st == CP_OK && i < l->npremiums; i++) {
        st = buf_append(b, i ? ",{\"crowd\":" : "{\"crowd\":", i ? 10 : 9);
        if (st == CP_OK)
            st = w_str(b, l->premiums[i].crowd);
        if (st == CP_OK)
            st = buf_printf(b, ",\"pct\":%d}", l->premiums[i].pct);
    }
    if (st == CP_OK)
        st = buf_append(b, "],\"caps\":", 9);
    if (st == CP_OK)
        st = w_caps(b, l->caps, l->ncaps);
    if (st == CP_OK)
        st = buf_append(b, ",\"creatives\":[", 14);
    for (size_t i = 0; st == CP_OK && i < l->ncreatives; i++) {
        if (i > 0)
            st = buf_append(b, ",", 1);
        if (st == CP_OK)
            st = w_creative(b, &l->creatives[i]);
    }
    return st == CP_OK ? buf_append(b, "]}", 2) : st;
}

cp_status campaign_to_json(const act_campaign_t *c, char **out, cp_error_t *err)
{
    *out = NULL;
    buf_t b;
    buf_init(&b, 0);
    char updated[32] = "";
    if (c->updated_ms != 0)
        time_format(floor_div(c->updated_ms, 1000), updated, sizeof updated);
    cp_status st = buf_append(&b, "{\"id\":", 6);
    if (st == CP_OK)
        st = w_str(&b, c->id);
    if (st == CP_OK)
        st = buf_append(&b, ",\"advertiser\":", 14);
    if (st == CP_OK)
        st = w_str(&b, c->advertiser);
    if (st == CP_OK)
        st = buf_printf(&b, ",\"version\":%llu,\"updated\":%s%s%s,\"paused\":%s",
                        (unsigned long long)c->version, updated[0] ? "\"" : "",
                        updated[0] ? updated : "null", updated[0] ? "\"" : "",
                        c->paused ? "true" : "false");
    if (st == CP_OK)
        st = buf_append(&b, ",\"budget\":{\"total\":", 19);
    if (st == CP_OK)
        st = w_money(&b, c->total_fen);
    if (st == CP_OK)
        st = buf_append(&b, ",\"daily\":", 9);
    if (st == CP_OK)
        st = w_money(&b, c->daily_fen);
    if (st == CP_OK)
        st = buf_printf(&b, ",\"currency\":\"%s\"},\"schedule\":{\"start\":", c->currency);
    if (st == CP_OK)
        st = w_date(&b, local_day_of(c->tz, c->start_ms));
    if (st == CP_OK)
        st = buf_append(&b, ",\"end\":", 7);
    if (st == CP_OK)
        st = c->end_ms != 0 ? w_date(&b, local_day_of(c->tz, c->end_ms - 1))
                            : buf_append(&b, "null", 4);
    if (st == CP_OK)
        st = buf_append(&b, ",\"timezone\":", 12);
    if (st == CP_OK)
        st = w_str(&b, c->timezone);
    if (st == CP_OK)
        st = buf_append(&b, ",\"dayparting\":", 14);
    if (st == CP_OK)
        st = w_dayparting(&b, c->hours);
    if (st == CP_OK)
        st = buf_printf(&b, "},\"pacing\":\"%s\",\"caps\":", PACING_NAMES[c->pacing]);
    if (st == CP_OK)
        st = w_caps(&b, c->caps, c->ncaps);
    if (st == CP_OK)
        st = buf_append(&b, ",\"lines\":[", 10);
    for (size_t i = 0; st == CP_OK && i < c->nlines; i++) {
        if (i > 0)
            st = buf_append(&b, ",", 1);
        if (st == CP_OK)
            st = w_line(&b, &c->lines[i]);
    }
    if (st == CP_OK)
        st = buf_append(&b, "]}", 2);
    if (st != CP_OK) {
        buf_free(&b);
        return CP_ERR(err, CP_ENOMEM, "out of memory writing campaign \"%s\"", c->id);
    }
    buf_cstr(&b);
    *out = b.data;
    return CP_OK;
}
