/*
 * ortb.c — OpenRTB 2.5/2.6 BidRequest JSON -> ortb_request_t (ortb.h).
 *
 * jansson parses; this file walks only the fields the bidder uses, checks
 * what the specification forbids and copies every string into the
 * request's arena, so the json_t is freed before returning. A refusal
 * names the field by its JSON path ("imp[1].banner.w: must not be
 * negative, got -3"): the path is kept as a stack of (name, index) pairs
 * and formatted only when something is refused.
 *
 * Choices where the specification leaves room (docs/activation.md):
 *  - duplicate keys are refused, as everywhere else in crowdpack: with
 *    them a request means whatever the parser picks;
 *  - sizes of 0 mean "not given" (the specification's own interstitial
 *    example sends banner w = h = 0); negative sizes are refused;
 *  - 2.6 fields win over their 2.5 extensions (regs.gdpr over
 *    regs.ext.gdpr, user.eids over user.ext.eids); what is read from an
 *    `ext` is used when well typed and otherwise ignored, since extensions
 *    belong to the exchange;
 *  - an all-zero device.ifa (limit ad tracking) and empty user ids are
 *    treated as absent: resolving them would merge strangers into one
 *    person;
 *  - crowdpack bids in CNY and knows no exchange rates: an imp is marked
 *    unbiddable (not refused) when `cur` does not list CNY or its floor is
 *    in another currency.
 */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "activate/ortb.h"

/* A floor above a billion currency units per mille is no real floor;
 * refusing it keeps the fen arithmetic far from overflow. */
#define FLOOR_MAX 1e9

typedef struct seg {
    const char *name; /* NULL for an array element */
    int index;        /* -1 for an object member */
} seg_t;

typedef struct ctx {
    arena_t *arena;
    cp_error_t *err;
    seg_t path[16]; /* the walk never goes deeper than this */
    int depth;
    int cny_ok; /* `cur` lists CNY */
} ctx_t;

static void enter(ctx_t *c, const char *name, int index)
{
    if (c->depth < (int)(sizeof c->path / sizeof c->path[0]))
        c->path[c->depth] = (seg_t){name, index};
    c->depth++;
}

static void leave(ctx_t *c)
{
    c->depth--;
}

/* Refuses the request: "<path>.<field>: <why>". field may be NULL. */
__attribute__((format(printf, 4, 5))) static cp_status
refuse(ctx_t *c, cp_status code, const char *field, const char *fmt, ...)
{
    char where[256];
    size_t n = 0;
    where[0] = '\0';
    int depth = c->depth < 16 ? c->depth : 16;
    for (int i = 0; i < depth && n < sizeof where; i++) {
        const seg_t *s = &c->path[i];
        int w = s->name != NULL
                    ? snprintf(where + n, sizeof where - n, "%s%s", n ? "." : "", s->name)
                    : snprintf(where + n, sizeof where - n, "[%d]", s->index);
        n += w > 0 ? (size_t)w : 0;
    }
    if (field != NULL && n < sizeof where)
        snprintf(where + n, sizeof where - n, "%s%s", n ? "." : "", field);
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return CP_ERR(c->err, code, "BidRequest %s: %s", where[0] ? where : "body", why);
}

static cp_status nomem(ctx_t *c)
{
    return CP_ERR(c->err, CP_ENOMEM,
                  "out of memory (or past the arena's limit) parsing a BidRequest");
}

/* The member `key` of obj; JSON null counts as absent. */
static json_t *member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v != NULL && !json_is_null(v) ? v : NULL;
}

static cp_status copy_str(ctx_t *c, json_t *v, const char **out)
{
    *out = arena_strndup(c->arena, json_string_value(v), json_string_length(v));
    return *out != NULL ? CP_OK : nomem(c);
}

/* Optional string member; *out NULL when absent (or, with empty_absent,
 * empty). */
static cp_status get_str(ctx_t *c, json_t *obj, const char *key, int empty_absent, const char **out)
{
    *out = NULL;
    json_t *v = member(obj, key);
    if (v == NULL)
        return CP_OK;
    if (!json_is_string(v))
        return refuse(c, CP_EINVAL, key, "must be a string, got %s", json_kind(v));
    if (empty_absent && json_string_length(v) == 0)
        return CP_OK;
    return copy_str(c, v, out);
}

/* Required, non-empty string member. */
static cp_status need_str(ctx_t *c, json_t *obj, const char *key, const char **out)
{
    json_t *v = member(obj, key);
    if (v == NULL)
        return refuse(c, CP_EINVAL, key, "required");
    if (!json_is_string(v))
        return refuse(c, CP_EINVAL, key, "must be a string, got %s", json_kind(v));
    if (json_string_length(v) == 0)
        return refuse(c, CP_EINVAL, key, "must not be empty");
    return copy_str(c, v, out);
}

/* Optional integer member in [lo, hi]; *present says whether it was
 * given. A number with a fraction is refused, an integral one (300.0,
 * which some encoders write) taken. */
static cp_status get_int(ctx_t *c, json_t *obj, const char *key, int64_t lo, int64_t hi,
                         int64_t *out, int *present)
{
    *present = 0;
    json_t *v = member(obj, key);
    if (v == NULL)
        return CP_OK;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v);
    } else {
        return refuse(c, CP_EINVAL, key, "must be an integer, got %s", json_kind(v));
    }
    if (x < lo)
        return lo == 0 ? refuse(c, CP_EINVAL, key, "must not be negative, got %lld", (long long)x)
                       : refuse(c, CP_EINVAL, key, "must be at least %lld, got %lld", (long long)lo,
                                (long long)x);
    if (x > hi)
        return refuse(c, CP_EINVAL, key, "must be at most %lld, got %lld", (long long)hi,
                      (long long)x);
    *out = x;
    *present = 1;
    return CP_OK;
}

/* Integer member into an int, `dflt` when absent. */
static cp_status get_i(ctx_t *c, json_t *obj, const char *key, int64_t lo, int64_t hi, int dflt,
                       int *out)
{
    int64_t x = 0;
    int present;
    cp_status st = get_int(c, obj, key, lo, hi, &x, &present);
    *out = present ? (int)x : dflt;
    return st;
}

static cp_status get_num(ctx_t *c, json_t *obj, const char *key, double lo, double hi, double *out,
                         int *present)
{
    *present = 0;
    json_t *v = member(obj, key);
    if (v == NULL)
        return CP_OK;
    if (!json_is_number(v))
        return refuse(c, CP_EINVAL, key, "must be a number, got %s", json_kind(v));
    double x = json_number_value(v);
    if (x < lo)
        return lo == 0 ? refuse(c, CP_EINVAL, key, "must not be negative, got %g", x)
                       : refuse(c, CP_EINVAL, key, "must be at least %g, got %g", lo, x);
    if (x > hi)
        return refuse(c, CP_EINVAL, key, "must be at most %g, got %g", hi, x);
    *out = x;
    *present = 1;
    return CP_OK;
}

/* Optional object member; *out NULL when absent. */
static cp_status get_obj(ctx_t *c, json_t *obj, const char *key, json_t **out)
{
    *out = member(obj, key);
    if (*out != NULL && !json_is_object(*out))
        return refuse(c, CP_EINVAL, key, "must be an object, got %s", json_kind(*out));
    return CP_OK;
}

static cp_status get_arr(ctx_t *c, json_t *obj, const char *key, json_t **out)
{
    *out = member(obj, key);
    if (*out != NULL && !json_is_array(*out))
        return refuse(c, CP_EINVAL, key, "must be an array, got %s", json_kind(*out));
    return CP_OK;
}

/* Appends the strings of the array members keys[0..nkeys) of obj to one
 * list, at most ORTB_MAX_LIST in all (the rest are cut, not refused). */
static cp_status get_strs_n(ctx_t *c, json_t *obj, const char *const *keys, size_t nkeys,
                            ortb_strs_t *out)
{
    out->v = NULL;
    out->n = 0;
    json_t *arr[4];
    size_t total = 0;
    for (size_t k = 0; k < nkeys; k++) {
        cp_status st = get_arr(c, obj, keys[k], &arr[k]);
        if (st != CP_OK)
            return st;
        total += arr[k] != NULL ? json_array_size(arr[k]) : 0;
    }
    if (total == 0)
        return CP_OK;
    if (total > ORTB_MAX_LIST)
        total = ORTB_MAX_LIST;
    out->v = arena_alloc(c->arena, total * sizeof *out->v);
    if (out->v == NULL)
        return nomem(c);
    for (size_t k = 0; k < nkeys && out->n < total; k++) {
        if (arr[k] == NULL)
            continue;
        enter(c, keys[k], -1);
        for (size_t i = 0; i < json_array_size(arr[k]) && out->n < total; i++) {
            json_t *v = json_array_get(arr[k], i);
            if (!json_is_string(v)) {
                enter(c, NULL, (int)i);
                cp_status st = refuse(c, CP_EINVAL, NULL, "must be a string, got %s", json_kind(v));
                leave(c);
                leave(c);
                return st;
            }
            cp_status st = copy_str(c, v, &out->v[out->n]);
            if (st != CP_OK) {
                leave(c);
                return st;
            }
            out->n++;
        }
        leave(c);
    }
    return CP_OK;
}

static cp_status get_strs(ctx_t *c, json_t *obj, const char *key, ortb_strs_t *out)
{
    return get_strs_n(c, obj, &key, 1, out);
}

/* ------------------------------------------------------------ the imp */

/* A money amount per mille in hundredths (fen for CNY), rounded up: the
 * bidder compares its price with this, and a floor of 0.035 must not be
 * met by 3. The tolerance absorbs binary fractions (0.07 * 100 is
 * 7.000000000000001). */
static int64_t hundredths_up(double x)
{
    return (int64_t)ceil(x * 100.0 - 1e-6);
}

static int cur_is_cny(const char *cur)
{
    return cur != NULL && strcasecmp(cur, "CNY") == 0;
}

/* Why a floor in `cur` cannot be met by a bid in CNY, or NULL. */
static const char *floor_unbiddable(const ctx_t *c, int64_t floor_fen, const char *cur)
{
    if (!c->cny_ok)
        return "the request's cur does not list CNY (absent cur means USD only); crowdpack "
               "bids in CNY";
    if (floor_fen > 0 && !cur_is_cny(cur))
        return "bidfloorcur is not CNY and crowdpack knows no exchange rates";
    return NULL;
}

/* Sizes: negative is refused, 0 means "not given". */
static cp_status get_size(ctx_t *c, json_t *obj, const char *key, int32_t *out)
{
    int v;
    cp_status st = get_i(c, obj, key, 0, INT32_MAX, 0, &v);
    *out = v;
    return st;
}

static cp_status parse_banner(ctx_t *c, json_t *b, ortb_imp_t *imp)
{
    cp_status st;
    int32_t w, h;
    if ((st = get_size(c, b, "w", &w)) != CP_OK || (st = get_size(c, b, "h", &h)) != CP_OK)
        return st;
    json_t *fmt;
    if ((st = get_arr(c, b, "format", &fmt)) != CP_OK)
        return st;
    size_t nf = fmt != NULL ? json_array_size(fmt) : 0;
    if (nf > ORTB_MAX_LIST)
        nf = ORTB_MAX_LIST;
    imp->formats = arena_alloc(c->arena, (nf + 1) * sizeof *imp->formats);
    if (imp->formats == NULL)
        return nomem(c);
    if (w > 0 && h > 0)
        imp->formats[imp->nformats++] = (ortb_format_t){w, h};
    enter(c, "format", -1);
    for (size_t i = 0; i < nf; i++) {
        json_t *f = json_array_get(fmt, i);
        enter(c, NULL, (int)i);
        if (!json_is_object(f)) {
            st = refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(f));
        } else if ((st = get_size(c, f, "w", &w)) == CP_OK &&
                   (st = get_size(c, f, "h", &h)) == CP_OK) {
            /* Without both w and h the entry is a ratio (wratio/hratio/
             * wmin): no fixed size a creative could match. */
            if (w > 0 && h > 0)
                imp->formats[imp->nformats++] = (ortb_format_t){w, h};
        }
        leave(c);
        if (st != CP_OK)
            break;
    }
    leave(c);
    imp->has_banner = 1;
    return st;
}

/* The mimes of a video or audio object: required, a non-empty array of
 * strings. */
static cp_status get_mimes(ctx_t *c, json_t *obj, ortb_strs_t *out)
{
    json_t *m = member(obj, "mimes");
    if (m == NULL)
        return refuse(c, CP_EINVAL, "mimes", "required");
    if (!json_is_array(m))
        return refuse(c, CP_EINVAL, "mimes", "must be an array, got %s", json_kind(m));
    if (json_array_size(m) == 0)
        return refuse(c, CP_EINVAL, "mimes", "must list at least one MIME type");
    return get_strs(c, obj, "mimes", out);
}

static cp_status parse_durations(ctx_t *c, json_t *v, int32_t *mind, int32_t *maxd)
{
    cp_status st;
    int a, b;
    if ((st = get_i(c, v, "minduration", 0, INT32_MAX, 0, &a)) != CP_OK ||
        (st = get_i(c, v, "maxduration", 0, INT32_MAX, 0, &b)) != CP_OK)
        return st;
    if (a > 0 && b > 0 && a > b)
        return refuse(c, CP_EINVAL, "maxduration", "%d is less than minduration %d", b, a);
    *mind = a;
    *maxd = b;
    return CP_OK;
}

static cp_status parse_video(ctx_t *c, json_t *v, ortb_imp_t *imp)
{
    cp_status st;
    if ((st = get_mimes(c, v, &imp->video_mimes)) != CP_OK ||
        (st = get_size(c, v, "w", &imp->video_w)) != CP_OK ||
        (st = get_size(c, v, "h", &imp->video_h)) != CP_OK ||
        (st = parse_durations(c, v, &imp->video_minduration, &imp->video_maxduration)) != CP_OK)
        return st;
    imp->has_video = 1;
    return CP_OK;
}

static cp_status parse_audio(ctx_t *c, json_t *a, ortb_imp_t *imp)
{
    cp_status st = get_mimes(c, a, &imp->audio_mimes);
    if (st == CP_OK) {
        int32_t mind, maxd;
        st = parse_durations(c, a, &mind, &maxd);
    }
    imp->has_audio = st == CP_OK;
    return st;
}

static cp_status parse_native(ctx_t *c, json_t *n, ortb_imp_t *imp)
{
    json_t *r = member(n, "request");
    if (r == NULL)
        return refuse(c, CP_EINVAL, "request", "required (the native request as a string)");
    if (!json_is_string(r))
        return refuse(c, CP_EINVAL, "request",
                      "must be a string (the native request JSON-encoded), got %s", json_kind(r));
    imp->has_native = 1;
    return copy_str(c, r, &imp->native_request);
}

/* at: 1 first price, 2 second price plus, > 500 the exchange's own. */
static cp_status get_at(ctx_t *c, json_t *obj, int dflt, int *out)
{
    cp_status st = get_i(c, obj, "at", 0, INT32_MAX, dflt, out);
    if (st == CP_OK && *out != dflt && *out != 1 && *out != 2 && *out <= 500)
        return refuse(c, CP_EINVAL, "at",
                      "must be 1 (first price), 2 (second price) or above 500 (the exchange's "
                      "own), got %d",
                      *out);
    return st;
}

static cp_status parse_deal(ctx_t *c, json_t *d, ortb_deal_t *deal)
{
    cp_status st;
    double fl = 0;
    int present;
    if ((st = need_str(c, d, "id", &deal->id)) != CP_OK ||
        (st = get_num(c, d, "bidfloor", 0, FLOOR_MAX, &fl, &present)) != CP_OK ||
        (st = get_str(c, d, "bidfloorcur", 1, &deal->bidfloorcur)) != CP_OK ||
        (st = get_strs(c, d, "wseat", &deal->wseat)) != CP_OK ||
        (st = get_at(c, d, 0, &deal->at)) != CP_OK)
        return st;
    if (deal->bidfloorcur == NULL)
        deal->bidfloorcur = "USD";
    deal->bidfloor_fen = hundredths_up(fl);
    deal->unbiddable = floor_unbiddable(c, deal->bidfloor_fen, deal->bidfloorcur);
    return CP_OK;
}

static cp_status parse_pmp(ctx_t *c, json_t *pmp, ortb_imp_t *imp)
{
    cp_status st;
    json_t *deals;
    if ((st = get_i(c, pmp, "private_auction", 0, 1, 0, &imp->private_auction)) != CP_OK ||
        (st = get_arr(c, pmp, "deals", &deals)) != CP_OK || deals == NULL)
        return st;
    size_t n = json_array_size(deals);
    if (n > ORTB_MAX_LIST)
        n = ORTB_MAX_LIST;
    if (n == 0)
        return CP_OK;
    imp->deals = arena_alloc(c->arena, n * sizeof *imp->deals);
    if (imp->deals == NULL)
        return nomem(c);
    enter(c, "deals", -1);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *d = json_array_get(deals, i);
        enter(c, NULL, (int)i);
        st = json_is_object(d)
                 ? parse_deal(c, d, &imp->deals[i])
                 : refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(d));
        leave(c);
    }
    leave(c);
    imp->ndeals = n;
    return st;
}

/* Parses one media object member (banner, video, audio, native, pmp). */
static cp_status with_obj(ctx_t *c, json_t *obj, const char *key,
                          cp_status (*fn)(ctx_t *, json_t *, ortb_imp_t *), ortb_imp_t *imp)
{
    json_t *o;
    cp_status st = get_obj(c, obj, key, &o);
    if (st != CP_OK || o == NULL)
        return st;
    enter(c, key, -1);
    st = fn(c, o, imp);
    leave(c);
    return st;
}

static cp_status parse_imp(ctx_t *c, json_t *j, ortb_imp_t *imp)
{
    cp_status st;
    double fl = 0;
    int present;
    if ((st = need_str(c, j, "id", &imp->id)) != CP_OK ||
        (st = with_obj(c, j, "banner", parse_banner, imp)) != CP_OK ||
        (st = with_obj(c, j, "video", parse_video, imp)) != CP_OK ||
        (st = with_obj(c, j, "audio", parse_audio, imp)) != CP_OK ||
        (st = with_obj(c, j, "native", parse_native, imp)) != CP_OK ||
        (st = with_obj(c, j, "pmp", parse_pmp, imp)) != CP_OK ||
        (st = get_num(c, j, "bidfloor", 0, FLOOR_MAX, &fl, &present)) != CP_OK ||
        (st = get_str(c, j, "bidfloorcur", 1, &imp->bidfloorcur)) != CP_OK ||
        (st = get_str(c, j, "tagid", 0, &imp->tagid)) != CP_OK ||
        (st = get_i(c, j, "instl", 0, 1, 0, &imp->instl)) != CP_OK ||
        (st = get_i(c, j, "secure", 0, 1, 0, &imp->secure)) != CP_OK)
        return st;
    if (imp->bidfloorcur == NULL)
        imp->bidfloorcur = "USD";
    imp->bidfloor_fen = hundredths_up(fl);
    imp->unbiddable = floor_unbiddable(c, imp->bidfloor_fen, imp->bidfloorcur);
    return CP_OK;
}

static cp_status parse_imps(ctx_t *c, json_t *root, ortb_request_t *r)
{
    json_t *imps = member(root, "imp");
    if (imps == NULL)
        return refuse(c, CP_EINVAL, "imp", "required (at least one imp)");
    if (!json_is_array(imps))
        return refuse(c, CP_EINVAL, "imp", "must be an array, got %s", json_kind(imps));
    size_t n = json_array_size(imps);
    if (n == 0)
        return refuse(c, CP_EINVAL, "imp", "must hold at least one imp");
    if (n > ORTB_MAX_IMPS)
        return refuse(c, CP_ELIMIT, "imp", "%zu imps, more than the limit of %d", n, ORTB_MAX_IMPS);
    r->imps = arena_alloc(c->arena, n * sizeof *r->imps);
    if (r->imps == NULL)
        return nomem(c);
    cp_status st = CP_OK;
    enter(c, "imp", -1);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *j = json_array_get(imps, i);
        enter(c, NULL, (int)i);
        if (!json_is_object(j)) {
            st = refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(j));
        } else if ((st = parse_imp(c, j, &r->imps[i])) == CP_OK) {
            /* Quadratic, but over at most ORTB_MAX_IMPS short ids. */
            for (size_t k = 0; k < i; k++)
                if (strcmp(r->imps[k].id, r->imps[i].id) == 0) {
                    st = refuse(c, CP_EINVAL, "id", "\"%.64s\" repeats the id of imp[%zu]",
                                r->imps[i].id, k);
                    break;
                }
        }
        leave(c);
    }
    leave(c);
    r->nimps = n;
    return st;
}

/* ------------------------------------------------- site, app, device */

static const char *const CAT_KEYS[] = {"cat", "sectioncat", "pagecat"};

static cp_status parse_inventory(ctx_t *c, json_t *o, ortb_request_t *r)
{
    cp_status st;
    json_t *pub;
    if ((st = get_str(c, o, "id", 0, &r->site_id)) != CP_OK ||
        (st = get_str(c, o, "domain", 1, &r->domain)) != CP_OK ||
        (st = get_str(c, o, "page", 1, &r->page)) != CP_OK ||
        (st = get_str(c, o, "bundle", 1, &r->bundle)) != CP_OK ||
        (st = get_strs_n(c, o, CAT_KEYS, 3, &r->cat)) != CP_OK ||
        (st = get_obj(c, o, "publisher", &pub)) != CP_OK || pub == NULL)
        return st;
    enter(c, "publisher", -1);
    st = get_str(c, pub, "id", 0, &r->publisher_id);
    leave(c);
    return st;
}

static cp_status parse_geo(ctx_t *c, json_t *g, ortb_request_t *r)
{
    cp_status st;
    int has_lat, has_lon;
    if ((st = get_str(c, g, "country", 1, &r->country)) != CP_OK ||
        (st = get_str(c, g, "region", 1, &r->region)) != CP_OK ||
        (st = get_str(c, g, "city", 1, &r->city)) != CP_OK ||
        (st = get_num(c, g, "lat", -90, 90, &r->lat, &has_lat)) != CP_OK ||
        (st = get_num(c, g, "lon", -180, 180, &r->lon, &has_lon)) != CP_OK)
        return st;
    r->has_geo_point = has_lat && has_lon;
    return CP_OK;
}

/* An IFA of zeros (and dashes) is what devices send when the user limits
 * ad tracking: one value shared by millions, never a person. */
static int ifa_is_zero(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s != '0' && *s != '-')
            return 0;
    return 1;
}

static cp_status parse_device(ctx_t *c, json_t *d, ortb_request_t *r)
{
    cp_status st;
    json_t *geo;
    const char *ipv6;
    if ((st = get_str(c, d, "ua", 1, &r->ua)) != CP_OK ||
        (st = get_str(c, d, "ip", 1, &r->ip)) != CP_OK ||
        (st = get_str(c, d, "ipv6", 1, &ipv6)) != CP_OK ||
        (st = get_str(c, d, "ifa", 1, &r->ifa)) != CP_OK ||
        (st = get_str(c, d, "os", 1, &r->os)) != CP_OK ||
        (st = get_str(c, d, "osv", 1, &r->osv)) != CP_OK ||
        (st = get_str(c, d, "make", 1, &r->make)) != CP_OK ||
        (st = get_str(c, d, "model", 1, &r->model)) != CP_OK ||
        (st = get_i(c, d, "devicetype", 0, INT32_MAX, 0, &r->devicetype)) != CP_OK ||
        (st = get_obj(c, d, "geo", &geo)) != CP_OK)
        return st;
    if (r->ip == NULL)
        r->ip = ipv6;
    if (r->ifa != NULL && ifa_is_zero(r->ifa))
        r->ifa = NULL;
    if (geo != NULL) {
        enter(c, "geo", -1);
        st = parse_geo(c, geo, r);
        leave(c);
    }
    return st;
}

/* ------------------------------------------------------------- user */

static cp_status parse_eid(ctx_t *c, json_t *e, ortb_eid_t *eid)
{
    cp_status st;
    json_t *uids;
    if ((st = get_str(c, e, "source", 0, &eid->source)) != CP_OK ||
        (st = get_arr(c, e, "uids", &uids)) != CP_OK || uids == NULL)
        return st;
    size_t n = json_array_size(uids);
    if (n > ORTB_MAX_LIST)
        n = ORTB_MAX_LIST;
    if (n == 0)
        return CP_OK;
    eid->uids.v = arena_alloc(c->arena, n * sizeof *eid->uids.v);
    if (eid->uids.v == NULL)
        return nomem(c);
    enter(c, "uids", -1);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *u = json_array_get(uids, i);
        const char *id = NULL;
        enter(c, NULL, (int)i);
        st = json_is_object(u)
                 ? get_str(c, u, "id", 1, &id)
                 : refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(u));
        leave(c);
        if (id != NULL)
            eid->uids.v[eid->uids.n++] = id;
    }
    leave(c);
    return st;
}

static cp_status parse_eids(ctx_t *c, json_t *eids, ortb_request_t *r)
{
    size_t n = json_array_size(eids);
    if (n > ORTB_MAX_LIST)
        n = ORTB_MAX_LIST;
    if (n == 0)
        return CP_OK;
    r->eids = arena_alloc(c->arena, n * sizeof *r->eids);
    if (r->eids == NULL)
        return nomem(c);
    cp_status st = CP_OK;
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *e = json_array_get(eids, i);
        enter(c, NULL, (int)i);
        st = json_is_object(e)
                 ? parse_eid(c, e, &r->eids[i])
                 : refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(e));
        leave(c);
    }
    r->neids = n;
    return st;
}

static cp_status parse_data(ctx_t *c, json_t *d, ortb_segment_data_t *sd)
{
    cp_status st;
    json_t *segs, *ext;
    if ((st = get_str(c, d, "id", 0, &sd->id)) != CP_OK ||
        (st = get_str(c, d, "name", 0, &sd->name)) != CP_OK ||
        (st = get_arr(c, d, "segment", &segs)) != CP_OK)
        return st;
    /* segtax is an extension (the IAB's taxonomy ids): used when an
     * integer, ignored otherwise. */
    ext = member(d, "ext");
    if (ext != NULL && json_is_object(ext) && json_is_integer(json_object_get(ext, "segtax")))
        sd->segtax = (int)json_integer_value(json_object_get(ext, "segtax"));
    if (segs == NULL)
        return CP_OK;
    size_t n = json_array_size(segs);
    if (n > ORTB_MAX_LIST)
        n = ORTB_MAX_LIST;
    if (n == 0)
        return CP_OK;
    sd->segments.v = arena_alloc(c->arena, n * sizeof *sd->segments.v);
    if (sd->segments.v == NULL)
        return nomem(c);
    enter(c, "segment", -1);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *s = json_array_get(segs, i);
        const char *id = NULL;
        enter(c, NULL, (int)i);
        /* A segment may carry only a value (the 2.6 example): no id, kept
         * out of the list. */
        st = json_is_object(s)
                 ? get_str(c, s, "id", 1, &id)
                 : refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(s));
        leave(c);
        if (id != NULL)
            sd->segments.v[sd->segments.n++] = id;
    }
    leave(c);
    return st;
}

static cp_status parse_user(ctx_t *c, json_t *u, ortb_request_t *r, json_t **geo)
{
    cp_status st;
    json_t *eids, *data, *ext;
    int yob;
    if ((st = get_str(c, u, "id", 1, &r->user_id)) != CP_OK ||
        (st = get_str(c, u, "buyeruid", 1, &r->buyeruid)) != CP_OK ||
        (st = get_str(c, u, "gender", 1, &r->gender)) != CP_OK ||
        (st = get_i(c, u, "yob", 0, 9999, 0, &yob)) != CP_OK ||
        (st = get_arr(c, u, "eids", &eids)) != CP_OK ||
        (st = get_arr(c, u, "data", &data)) != CP_OK || (st = get_obj(c, u, "geo", geo)) != CP_OK)
        return st;
    r->yob = yob;
    if (eids != NULL) {
        enter(c, "eids", -1);
        st = parse_eids(c, eids, r);
        leave(c);
    } else if ((ext = member(u, "ext")) != NULL && json_is_object(ext) &&
               json_is_array(json_object_get(ext, "eids"))) {
        /* 2.5 carried eids as an extension: taken when it is an array (and
         * then checked like the 2.6 field, since it is the same object). */
        enter(c, "ext", -1);
        enter(c, "eids", -1);
        st = parse_eids(c, json_object_get(ext, "eids"), r);
        leave(c);
        leave(c);
    }
    if (st != CP_OK || data == NULL)
        return st;
    size_t n = json_array_size(data);
    if (n > ORTB_MAX_LIST)
        n = ORTB_MAX_LIST;
    if (n == 0)
        return CP_OK;
    r->data = arena_alloc(c->arena, n * sizeof *r->data);
    if (r->data == NULL)
        return nomem(c);
    enter(c, "data", -1);
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        json_t *d = json_array_get(data, i);
        enter(c, NULL, (int)i);
        st = json_is_object(d)
                 ? parse_data(c, d, &r->data[i])
                 : refuse(c, CP_EINVAL, NULL, "must be an object, got %s", json_kind(d));
        leave(c);
    }
    leave(c);
    r->ndata = n;
    return st;
}

static cp_status parse_regs(ctx_t *c, json_t *g, ortb_request_t *r)
{
    cp_status st;
    if ((st = get_i(c, g, "coppa", 0, 1, -1, &r->coppa)) != CP_OK ||
        (st = get_i(c, g, "gdpr", 0, 1, -1, &r->gdpr)) != CP_OK)
        return st;
    json_t *ext = member(g, "ext");
    if (r->gdpr < 0 && ext != NULL && json_is_object(ext)) {
        json_t *v = json_object_get(ext, "gdpr");
        if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            r->gdpr = (int)json_integer_value(v);
    }
    return CP_OK;
}

/* ----------------------------------------------------------- request */

/*
 * jansson has no depth option (its compile-time limit is 2048 and it
 * recurses before we could object), so nesting is bounded on the raw
 * bytes first. The same scan as the server's body pre-scan
 * (srv_json_too_deep), repeated here because activate sits below server.
 * Brackets inside strings do not count; a backslash skips the next byte.
 */
static int too_deep(const char *s, size_t len, int max, size_t *offset)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max) {
                *offset = i;
                return 1;
            }
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

static cp_status parse_root(ctx_t *c, json_t *root, ortb_request_t *r)
{
    cp_status st;
    json_t *site, *app, *device, *user, *regs, *ugeo = NULL;
    /* cur first: whether an imp can be bid on depends on it. */
    if ((st = need_str(c, root, "id", &r->id)) != CP_OK ||
        (st = get_strs(c, root, "cur", &r->cur)) != CP_OK)
        return st;
    for (size_t i = 0; i < r->cur.n; i++)
        c->cny_ok |= cur_is_cny(r->cur.v[i]);
    if ((st = get_i(c, root, "tmax", 0, INT32_MAX, 0, &r->tmax)) != CP_OK ||
        (st = get_at(c, root, 2, &r->at)) != CP_OK ||
        (st = get_i(c, root, "test", 0, 1, 0, &r->test)) != CP_OK ||
        (st = get_strs(c, root, "bcat", &r->bcat)) != CP_OK ||
        (st = get_strs(c, root, "badv", &r->badv)) != CP_OK ||
        (st = get_strs(c, root, "bapp", &r->bapp)) != CP_OK ||
        (st = get_strs(c, root, "wseat", &r->wseat)) != CP_OK ||
        (st = get_strs(c, root, "bseat", &r->bseat)) != CP_OK ||
        (st = parse_imps(c, root, r)) != CP_OK || (st = get_obj(c, root, "site", &site)) != CP_OK ||
        (st = get_obj(c, root, "app", &app)) != CP_OK ||
        (st = get_obj(c, root, "device", &device)) != CP_OK ||
        (st = get_obj(c, root, "user", &user)) != CP_OK ||
        (st = get_obj(c, root, "regs", &regs)) != CP_OK)
        return st;
    if (site != NULL && app != NULL)
        return refuse(c, CP_EINVAL, "app", "a request must not hold both site and app");
    r->is_app = app != NULL;
    if (site != NULL || app != NULL) {
        enter(c, app != NULL ? "app" : "site", -1);
        st = parse_inventory(c, app != NULL ? app : site, r);
        leave(c);
    }
    if (st == CP_OK && device != NULL) {
        enter(c, "device", -1);
        st = parse_device(c, device, r);
        leave(c);
    }
    if (st == CP_OK && user != NULL) {
        enter(c, "user", -1);
        st = parse_user(c, user, r, &ugeo);
        /* The device's geo is where the ad shows; the user's home region
         * stands in only when the device has none. */
        if (st == CP_OK && ugeo != NULL && r->country == NULL && r->region == NULL &&
            r->city == NULL && !r->has_geo_point) {
            enter(c, "geo", -1);
            st = parse_geo(c, ugeo, r);
            leave(c);
        }
        leave(c);
    }
    if (st == CP_OK && regs != NULL) {
        enter(c, "regs", -1);
        st = parse_regs(c, regs, r);
        leave(c);
    }
    return st;
}

cp_status ortb_parse(const char *body, size_t len, arena_t *arena, ortb_request_t *out,
                     cp_error_t *err)
{
    memset(out, 0, sizeof *out);
    out->coppa = out->gdpr = -1;
    out->at = 2;
    if (len > ORTB_MAX_BODY)
        return CP_ERR(err, CP_ELIMIT, "BidRequest: %zu bytes, more than the limit of %u", len,
                      ORTB_MAX_BODY);
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len)
        return CP_ERR(err, CP_EINVAL, "BidRequest: empty body");
    size_t off = 0;
    if (too_deep(body, len, ORTB_MAX_DEPTH, &off))
        return CP_ERR(err, CP_ELIMIT, "BidRequest: nested deeper than %d levels at byte %zu",
                      ORTB_MAX_DEPTH, off);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return CP_ERR(err, CP_EINVAL, "BidRequest: malformed JSON at line %d, column %d: %s",
                      jerr.line, jerr.column, jerr.text);
    cp_status st;
    ctx_t c = {.arena = arena, .err = err};
    if (!json_is_object(root))
        st = CP_ERR(err, CP_EINVAL, "BidRequest: expected a JSON object, got %s", json_kind(root));
    else
        st = parse_root(&c, root, out);
    json_decref(root);
    if (st != CP_OK) {
        memset(out, 0, sizeof *out);
        out->coppa = out->gdpr = -1;
        out->at = 2;
    }
    return st;
}
