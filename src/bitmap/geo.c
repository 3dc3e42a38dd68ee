/*
 * geo.c — geo points per user and exact radius queries (bitmap.h, "geo").
 *
 * Cells. A cell is a geohash of GEO_CELL_BITS = 26 bits: 13 longitude bits
 * and 13 latitude bits, interleaved longitude first as in geohash, so a
 * cell spans 360/8192 = 0.044 deg of longitude by 180/8192 = 0.022 deg of
 * latitude: about 4.9 km x 2.4 km at the equator (the east-west side
 * shrinks with cos(lat): 4.5 km at Guangzhou, 3.4 km at Beijing). A 10 km
 * radius covers some thirty cells wholly and as many partly; a smaller cell
 * would cut the exact checks of small radii but multiply the bitmaps held.
 *
 * Quantisation. geo_hash computes the cell indices arithmetically
 * (floor((lon + 180) / 360 * 2^k)) rather than by repeated halving; it is
 * the same binary expansion, and the bounds of geo_cell_bounds are exact
 * doubles (360 / 2^k is), so a point lies in its cell up to one rounding of
 * lon + 180, far below the safety margin used below.
 *
 * Queries. near() gives every user u with
 * geo_haversine_m(lat, lon, u.lat, u.lon) <= radius_m, exactly that
 * predicate (what a brute-force scan would compute). Cells are classified
 * by the least and greatest distance from the centre to any point of the
 * cell: wholly inside (all users taken without looking), wholly outside
 * (skipped), or boundary (each user checked against its exact stored
 * coordinates). The classification is conservative by GEO_MARGIN_M plus a
 * relative 1e-9, far more than the floating-point error of either
 * formula, so "inside" and "outside" are never wrong; anything unsure is a
 * boundary cell, which is merely slower.
 *
 * The candidate cells come either from enumerating the cells of the
 * circle's latitude/longitude bounding box (wrapping across the
 * antimeridian), or, when that box touches a pole or would hold more cells
 * than the index has, from walking every populated cell.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/bitmap.h"
#include "util/util.h"

#define DEG (M_PI / 180.0)
#define GEO_MARGIN_M 1.0
#define LON_BITS ((GEO_CELL_BITS + 1) / 2)
#define LAT_BITS (GEO_CELL_BITS / 2)

/* ---------------------------------------------------------- geometry */

double geo_haversine_m(double lat1, double lon1, double lat2, double lon2)
{
    double p1 = lat1 * DEG, p2 = lat2 * DEG;
    double sdp = sin((p2 - p1) / 2), sdl = sin((lon2 - lon1) * DEG / 2);
    double a = sdp * sdp + cos(p1) * cos(p2) * sdl * sdl;
    if (a > 1)
        a = 1;
    return 2 * GEO_EARTH_RADIUS_M * asin(sqrt(a));
}

static int clamp_bits(int bits)
{
    return bits < 0 ? 0 : bits > 52 ? 52 : bits;
}

/* Index in [0, 2^k) of x in [lo, lo + span]; the top edge joins the last. */
static uint64_t quantize(double x, double lo, double span, int k)
{
    double q = floor((x - lo) / span * (double)(UINT64_C(1) << k));
    uint64_t max = (UINT64_C(1) << k) - 1;
    if (!(q >= 0)) /* also NaN */
        return 0;
    return q >= (double)max ? max : (uint64_t)q;
}

static uint64_t interleave(uint64_t lonq, uint64_t latq, int bits)
{
    int lonbits = (bits + 1) / 2, latbits = bits / 2;
    uint64_t h = 0;
    for (int k = 0; k < bits; k++) {
        uint64_t b = (k % 2 == 0) ? (lonq >> (lonbits - 1 - k / 2)) & 1
                                  : (latq >> (latbits - 1 - k / 2)) & 1;
        h = (h << 1) | b;
    }
    return h;
}

static void deinterleave(uint64_t h, int bits, uint64_t *lonq, uint64_t *latq)
{
    uint64_t lo = 0, la = 0;
    for (int k = 0; k < bits; k++) {
        uint64_t b = (h >> (bits - 1 - k)) & 1;
        if (k % 2 == 0)
            lo = (lo << 1) | b;
        else
            la = (la << 1) | b;
    }
    *lonq = lo;
    *latq = la;
}

uint64_t geo_hash(double lat, double lon, int bits)
{
    bits = clamp_bits(bits);
    int lonbits = (bits + 1) / 2, latbits = bits / 2;
    return interleave(quantize(lon, -180, 360, lonbits), quantize(lat, -90, 180, latbits), bits);
}

void geo_cell_bounds(uint64_t cell, int bits, double *lat0, double *lat1, double *lon0,
                     double *lon1)
{
    bits = clamp_bits(bits);
    int lonbits = (bits + 1) / 2, latbits = bits / 2;
    uint64_t lonq, latq;
    deinterleave(cell, bits, &lonq, &latq);
    double w = 360.0 / (double)(UINT64_C(1) << lonbits);
    double h = 180.0 / (double)(UINT64_C(1) << latbits);
    *lon0 = -180 + (double)lonq * w;
    *lon1 = -180 + (double)(lonq + 1) * w;
    *lat0 = -90 + (double)latq * h;
    *lat1 = -90 + (double)(latq + 1) * h;
}

uint64_t geo_index_cell_of(double lat, double lon)
{
    return geo_hash(lat, lon, GEO_CELL_BITS);
}

/* Longitude difference folded into [0, 180]. */
static double lon_gap(double a, double b)
{
    double d = fmod(fabs(a - b), 360.0);
    return d > 180 ? 360 - d : d;
}

/*
 * Least and greatest distance from (plat, plon) to the cell
 * [lat0,lat1] x [lon0,lon1]. The distance from a point has no critical
 * point on the sphere except the point itself (minimum) and its antipode
 * (maximum), so outside those the extremes lie on the cell's edges. Along
 * a parallel, distance grows with the longitude gap (0..180); along a
 * meridian, cos(distance) = a sin(phi) + b cos(phi) is a sinusoid in phi,
 * extreme at atan2(a, b) and opposite it. So the candidates are the
 * corners, the points of the parallel edges at the centre's longitude and
 * its opposite, and those sinusoid extremes on the meridian edges.
 */
static void cell_distance_range(double plat, double plon, double lat0, double lat1, double lon0,
                                double lon1, double *dmin, double *dmax)
{
    double lo = INFINITY, hi = 0;
#define CAND(la, ln)                                                                               \
    do {                                                                                           \
        double d_ = geo_haversine_m(plat, plon, (la), (ln));                                       \
        if (d_ < lo)                                                                               \
            lo = d_;                                                                               \
        if (d_ > hi)                                                                               \
            hi = d_;                                                                               \
    } while (0)
    CAND(lat0, lon0);
    CAND(lat0, lon1);
    CAND(lat1, lon0);
    CAND(lat1, lon1);

    /* The centre's meridian and its opposite, where they cross the cell. */
    double opp = plon > 0 ? plon - 180 : plon + 180;
    double lons[2] = {plon, opp};
    for (int i = 0; i < 2; i++) {
        if (lons[i] >= lon0 && lons[i] <= lon1) {
            CAND(lat0, lons[i]);
            CAND(lat1, lons[i]);
        }
    }

    /* Meridian edges: extremes of a sin(phi) + b cos(phi) inside [lat0,lat1]. */
    double edges[2] = {lon0, lon1};
    for (int i = 0; i < 2; i++) {
        double a = sin(plat * DEG), b = cos(plat * DEG) * cos(lon_gap(plon, edges[i]) * DEG);
        double phi = atan2(a, b) / DEG; /* in (-180, 180] */
        double cands[3] = {phi, phi - 180, phi + 180};
        for (int k = 0; k < 3; k++)
            if (cands[k] > lat0 && cands[k] < lat1)
                CAND(cands[k], edges[i]);
    }
#undef CAND

    /* The centre itself, or its antipode, inside the cell. */
    if (plat >= lat0 && plat <= lat1 && plon >= lon0 && plon <= lon1)
        lo = 0;
    if (-plat >= lat0 && -plat <= lat1 && opp >= lon0 && opp <= lon1)
        hi = M_PI * GEO_EARTH_RADIUS_M;
    *dmin = lo;
    *dmax = hi;
}

enum { CELL_OUTSIDE, CELL_INSIDE, CELL_BOUNDARY };

static int classify(double plat, double plon, double radius, uint64_t cell)
{
    double lat0, lat1, lon0, lon1, dmin, dmax;
    geo_cell_bounds(cell, GEO_CELL_BITS, &lat0, &lat1, &lon0, &lon1);
    cell_distance_range(plat, plon, lat0, lat1, lon0, lon1, &dmin, &dmax);
    double margin = GEO_MARGIN_M + 1e-9 * radius;
    if (dmin > radius + margin)
        return CELL_OUTSIDE;
    if (dmax + margin < radius)
        return CELL_INSIDE;
    return CELL_BOUNDARY;
}

/* ------------------------------------------------------------- index */

#define COL_SHIFT 16
#define COL_USERS (1u << COL_SHIFT)

struct geo_index {
    roaring_bitmap_t *gi_exists;
    double **gi_col;   /* per 65,536 users: lat, lon pairs; NULL until used */
    uint32_t gi_ncol;  /* entries of gi_col */
    uint64_t *gi_cell; /* cell of entry i */
    roaring_bitmap_t **gi_bm;
    size_t gi_n, gi_cap; /* entries */
    uint32_t *gi_slot;   /* open addressing: entry index + 1, 0 = free */
    size_t gi_nslot;     /* power of two, > 2 * gi_n */
};

/* fmix64 of MurmurHash3: cells are structured integers, a full mix keeps
 * linear probing short. */
static size_t hash_cell(uint64_t k)
{
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    return (size_t)k;
}

geo_index_t *geo_index_create(void)
{
    geo_index_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->gi_exists = roaring_bitmap_create();
    if (!g->gi_exists) {
        free(g);
        return NULL;
    }
    return g;
}

void geo_index_free(geo_index_t *g)
{
    if (!g)
        return;
    roaring_bitmap_free(g->gi_exists);
    for (uint32_t i = 0; i < g->gi_ncol; i++)
        free(g->gi_col[i]);
    free(g->gi_col);
    for (size_t i = 0; i < g->gi_n; i++)
        roaring_bitmap_free(g->gi_bm[i]);
    free(g->gi_cell);
    free(g->gi_bm);
    free(g->gi_slot);
    free(g);
}

/* Entry index of `cell`, or -1. */
static ptrdiff_t cell_lookup(const geo_index_t *g, uint64_t cell)
{
    if (g->gi_nslot == 0)
        return -1;
    size_t mask = g->gi_nslot - 1;
    for (size_t s = hash_cell(cell) & mask;; s = (s + 1) & mask) {
        uint32_t e = g->gi_slot[s];
        if (e == 0)
            return -1;
        if (g->gi_cell[e - 1] == cell)
            return (ptrdiff_t)e - 1;
    }
}

static cp_status rehash(geo_index_t *g, size_t nslot)
{
    uint32_t *slot = calloc(nslot, sizeof *slot);
    if (!slot)
        return CP_ENOMEM;
    for (size_t i = 0; i < g->gi_n; i++) {
        size_t s = hash_cell(g->gi_cell[i]) & (nslot - 1);
        while (slot[s])
            s = (s + 1) & (nslot - 1);
        slot[s] = (uint32_t)i + 1;
    }
    free(g->gi_slot);
    g->gi_slot = slot;
    g->gi_nslot = nslot;
    return CP_OK;
}

/* The bitmap of `cell`, created when missing. */
static cp_status cell_get_or_add(geo_index_t *g, uint64_t cell, roaring_bitmap_t **out)
{
    ptrdiff_t e = cell_lookup(g, cell);
    if (e >= 0) {
        *out = g->gi_bm[e];
        return CP_OK;
    }
    if (g->gi_n == g->gi_cap) {
        size_t cap = g->gi_cap ? g->gi_cap * 2 : 64;
        uint64_t *cells = realloc(g->gi_cell, cap * sizeof *cells);
        if (!cells)
            return CP_ENOMEM;
        g->gi_cell = cells;
        roaring_bitmap_t **bms = realloc(g->gi_bm, cap * sizeof *bms);
        if (!bms)
            return CP_ENOMEM;
        g->gi_bm = bms;
        g->gi_cap = cap;
    }
    if (2 * (g->gi_n + 1) >= g->gi_nslot) {
        cp_status st = rehash(g, g->gi_nslot ? g->gi_nslot * 2 : 128);
        if (st != CP_OK)
            return st;
    }
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (!bm)
        return CP_ENOMEM;
    size_t i = g->gi_n++;
    g->gi_cell[i] = cell;
    g->gi_bm[i] = bm;
    size_t mask = g->gi_nslot - 1, s = hash_cell(cell) & mask;
    while (g->gi_slot[s])
        s = (s + 1) & mask;
    g->gi_slot[s] = (uint32_t)i + 1;
    *out = bm;
    return CP_OK;
}

static double *coords_of(const geo_index_t *g, uint32_t user)
{
    uint32_t c = user >> COL_SHIFT;
    if (c >= g->gi_ncol || !g->gi_col[c])
        return NULL;
    return g->gi_col[c] + 2 * (size_t)(user & (COL_USERS - 1));
}

cp_status geo_index_set(geo_index_t *g, uint32_t user, double lat, double lon)
{
    if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180))
        return CP_EINVAL;
    uint32_t c = user >> COL_SHIFT;
    if (c >= g->gi_ncol) {
        uint32_t n = c + 1;
        double **col = realloc(g->gi_col, n * sizeof *col);
        if (!col)
            return CP_ENOMEM;
        memset(col + g->gi_ncol, 0, (n - g->gi_ncol) * sizeof *col);
        g->gi_col = col;
        g->gi_ncol = n;
    }
    if (!g->gi_col[c]) {
        g->gi_col[c] = malloc(2 * (size_t)COL_USERS * sizeof(double));
        if (!g->gi_col[c])
            return CP_ENOMEM;
    }
    roaring_bitmap_t *bm;
    uint64_t cell = geo_index_cell_of(lat, lon);
    cp_status st = cell_get_or_add(g, cell, &bm);
    if (st != CP_OK)
        return st;
    double *p = coords_of(g, user);
    if (roaring_bitmap_contains(g->gi_exists, user)) {
        uint64_t old = geo_index_cell_of(p[0], p[1]);
        if (old != cell)
            roaring_bitmap_remove(g->gi_bm[cell_lookup(g, old)], user);
    }
    p[0] = lat;
    p[1] = lon;
    roaring_bitmap_add(bm, user);
    roaring_bitmap_add(g->gi_exists, user);
    return CP_OK;
}

int geo_index_get(const geo_index_t *g, uint32_t user, double *lat, double *lon)
{
    if (!roaring_bitmap_contains(g->gi_exists, user))
        return 0;
    const double *p = coords_of(g, user);
    *lat = p[0];
    *lon = p[1];
    return 1;
}

/* An emptied cell keeps its (empty) bitmap: entries are never removed, so
 * cell indices stay stable for geo_index_cell_at between writes. */
void geo_index_clear(geo_index_t *g, uint32_t user)
{
    if (!roaring_bitmap_contains(g->gi_exists, user))
        return;
    const double *p = coords_of(g, user);
    ptrdiff_t e = cell_lookup(g, geo_index_cell_of(p[0], p[1]));
    if (e >= 0)
        roaring_bitmap_remove(g->gi_bm[e], user);
    roaring_bitmap_remove(g->gi_exists, user);
}

const roaring_bitmap_t *geo_index_exists(const geo_index_t *g)
{
    return g->gi_exists;
}

size_t geo_index_cell_count(const geo_index_t *g)
{
    return g->gi_n;
}

void geo_index_cell_at(const geo_index_t *g, size_t i, uint64_t *cell, const roaring_bitmap_t **bm)
{
    *cell = g->gi_cell[i];
    *bm = g->gi_bm[i];
}

size_t geo_index_size_in_bytes(const geo_index_t *g)
{
    size_t n = sizeof *g + g->gi_ncol * sizeof(double *) +
               g->gi_cap * (sizeof(uint64_t) + sizeof(roaring_bitmap_t *)) +
               g->gi_nslot * sizeof(uint32_t) + roaring_bitmap_size_in_bytes(g->gi_exists);
    for (uint32_t i = 0; i < g->gi_ncol; i++)
        if (g->gi_col[i])
            n += 2 * (size_t)COL_USERS * sizeof(double);
    for (size_t i = 0; i < g->gi_n; i++)
        n += roaring_bitmap_size_in_bytes(g->gi_bm[i]);
    return n;
}

/* -------------------------------------------------------------- near */

typedef struct near_ctx {
    const geo_index_t *g;
    double lat, lon, radius;
    roaring_bitmap_t *out;
    roaring_bitmap_t *inside; /* cells wholly inside, OR'ed lazily (see below) */
    uint32_t buf[256];        /* boundary users that passed, added in batches */
    size_t nbuf;
} near_ctx_t;

static void flush(near_ctx_t *q)
{
    roaring_bitmap_add_many(q->out, q->nbuf, q->buf);
    q->nbuf = 0;
}

static bool check_user(uint32_t user, void *arg)
{
    near_ctx_t *q = arg;
    const double *p = coords_of(q->g, user);
    if (geo_haversine_m(q->lat, q->lon, p[0], p[1]) <= q->radius) {
        q->buf[q->nbuf++] = user;
        if (q->nbuf == CP_ARRAY_LEN(q->buf))
            flush(q);
    }
    return true;
}

static void visit_cell(near_ctx_t *q, size_t entry)
{
    const roaring_bitmap_t *bm = q->g->gi_bm[entry];
    if (roaring_bitmap_is_empty(bm))
        return;
    switch (classify(q->lat, q->lon, q->radius, q->g->gi_cell[entry])) {
    case CELL_INSIDE:
        /* Cell bitmaps are sparse arrays spread over every chunk: merging
         * them one by one into the result is quadratic in the result's
         * arrays (perf: 56% in union_uint16 at 1M users, 50 km). A lazy OR
         * turns busy chunks into bitsets and defers the cardinalities. */
        roaring_bitmap_lazy_or_inplace(q->inside, bm, true);
        break;
    case CELL_BOUNDARY:
        roaring_iterate(bm, check_user, q);
        flush(q);
        break;
    default:
        break;
    }
}

cp_status geo_index_near(const geo_index_t *g, double lat, double lon, double radius_m,
                         roaring_bitmap_t *out)
{
    if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180))
        return CP_EINVAL;
    if (!(radius_m >= 0) || isinf(radius_m))
        return CP_EINVAL;
    near_ctx_t q = {.g = g, .lat = lat, .lon = lon, .radius = radius_m, .out = out, .nbuf = 0};
    if (g->gi_n == 0)
        return CP_OK;
    if ((q.inside = roaring_bitmap_create()) == NULL)
        return CP_ENOMEM;

    /* The bounding box of the spherical cap, padded by the margin. */
    double ang = (radius_m + GEO_MARGIN_M + 1e-9 * radius_m) / GEO_EARTH_RADIUS_M; /* radians */
    double dlat = ang / DEG;
    int scan = 0;
    double dlon = 0;
    if (ang >= M_PI / 2 || lat + dlat >= 90 || lat - dlat <= -90) {
        scan = 1; /* the cap holds a pole, or is huge */
    } else {
        /* Widest longitude reached by a cap not holding a pole. */
        double s = sin(ang) / cos(lat * DEG);
        dlon = s >= 1 ? 180 : asin(s) / DEG * (1 + 1e-9) + 1e-9;
        if (dlon >= 180)
            scan = 1;
    }
    if (!scan) {
        const double cw = 360.0 / (double)(1u << LON_BITS), chh = 180.0 / (double)(1u << LAT_BITS);
        int64_t la0 = (int64_t)floor((lat - dlat + 90) / chh);
        int64_t la1 = (int64_t)floor((lat + dlat + 90) / chh);
        int64_t lo0 = (int64_t)floor((lon - dlon + 180) / cw);
        int64_t lo1 = (int64_t)floor((lon + dlon + 180) / cw);
        int64_t nlon_all = (int64_t)1 << LON_BITS, nlat_all = (int64_t)1 << LAT_BITS;
        if (la0 < 0)
            la0 = 0;
        if (la1 >= nlat_all)
            la1 = nlat_all - 1;
        uint64_t ncells = (uint64_t)(la1 - la0 + 1) * (uint64_t)(lo1 - lo0 + 1);
        if (lo1 - lo0 + 1 >= nlon_all || ncells > g->gi_n) {
            scan = 1;
        } else {
            for (int64_t la = la0; la <= la1; la++) {
                for (int64_t lo = lo0; lo <= lo1; lo++) {
                    /* Wrap across the antimeridian. */
                    uint64_t lq = (uint64_t)(((lo % nlon_all) + nlon_all) % nlon_all);
                    ptrdiff_t e = cell_lookup(g, interleave(lq, (uint64_t)la, GEO_CELL_BITS));
                    if (e >= 0)
                        visit_cell(&q, (size_t)e);
                }
            }
        }
    }
    if (scan)
        for (size_t e = 0; e < g->gi_n; e++)
            visit_cell(&q, e);
    roaring_bitmap_repair_after_lazy(q.inside);
    roaring_bitmap_or_inplace(out, q.inside);
    roaring_bitmap_free(q.inside);
    return CP_OK;
}
