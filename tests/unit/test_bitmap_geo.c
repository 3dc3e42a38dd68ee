/*
 * test_bitmap_geo.c — haversine and geohash against known values, and
 * geo_index_near against a brute-force haversine over every user: random
 * points in clusters, near the poles and across the antimeridian, random
 * circles from metres to thousands of kilometres, after overwrites and
 * clears.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bitmap/bitmap.h"
#include "util/util.h"

static void test_haversine(void **state)
{
    (void)state;
    const double R = GEO_EARTH_RADIUS_M;
    assert_true(fabs(geo_haversine_m(0, 0, 0, 1) - R * M_PI / 180) < 1e-6);
    assert_true(fabs(geo_haversine_m(0, 0, 1, 0) - R * M_PI / 180) < 1e-6);
    assert_true(fabs(geo_haversine_m(0, 0, 0, 180) - R * M_PI) < 1e-6);
    assert_true(fabs(geo_haversine_m(90, 0, -90, 0) - R * M_PI) < 1e-6);
    assert_true(geo_haversine_m(12.5, 100, 12.5, 100) == 0);
    /* Across the antimeridian: 0.2 degrees of longitude at the equator. */
    assert_true(fabs(geo_haversine_m(0, 179.9, 0, -179.9) - R * M_PI / 180 * 0.2) < 1e-3);
    /* Guangzhou - Beijing ~ 1,888 km. */
    double d = geo_haversine_m(23.1291, 113.2644, 39.9042, 116.4074);
    assert_true(d > 1.88e6 && d < 1.90e6);
}

/* Decodes geohash base32 text into its integer, 5 bits per character. */
static uint64_t base32_value(const char *s)
{
    static const char *alphabet = "0123456789bcdefghjkmnpqrstuvwxyz";
    uint64_t v = 0;
    for (; *s; s++)
        v = (v << 5) | (uint64_t)(strchr(alphabet, *s) - alphabet);
    return v;
}

static void test_geohash(void **state)
{
    (void)state;
    /* Well-known geohashes (lon bit first). */
    assert_int_equal(geo_hash(57.64911, 10.40744, 55), geo_hash(57.64911, 10.40744, 52));
    assert_int_equal(geo_hash(57.64911, 10.40744, 50), base32_value("u4pruydqqv"));
    assert_int_equal(geo_hash(42.6, -5.6, 25), base32_value("ezs42"));
    assert_int_equal(geo_hash(-25.382708, -49.265506, 40), base32_value("6gkzwgjz"));
    assert_int_equal(geo_hash(0, 0, 0), 0);

    /* A point lies in the bounds of its cell, for any precision. */
    uint64_t rng = 3;
    for (int i = 0; i < 20000; i++) {
        double lat = rand_double(&rng) * 180 - 90, lon = rand_double(&rng) * 360 - 180;
        if (i % 50 == 0)
            lat = (i % 100 == 0) ? 90 : -90;
        if (i % 70 == 0)
            lon = (i % 140 == 0) ? 180 : -180;
        int bits = 1 + (int)(rand_next(&rng) % 52);
        double la0, la1, lo0, lo1;
        geo_cell_bounds(geo_hash(lat, lon, bits), bits, &la0, &la1, &lo0, &lo1);
        assert_true(lat >= la0 && (lat < la1 || (lat == 90 && la1 == 90)));
        assert_true(lon >= lo0 && (lon < lo1 || (lon == 180 && lo1 == 180)));
    }
    /* Cell size as documented in bitmap.h: 4.9 km x 2.4 km at the equator. */
    double la0, la1, lo0, lo1;
    geo_cell_bounds(geo_index_cell_of(0.01, 0.01), GEO_CELL_BITS, &la0, &la1, &lo0, &lo1);
    double ew = geo_haversine_m(la0, lo0, la0, lo1), ns = geo_haversine_m(la0, lo0, la1, lo0);
    assert_true(ew > 4800 && ew < 5000);
    assert_true(ns > 2400 && ns < 2500);
}

#define NUSERS 30000

typedef struct pts {
    uint8_t has[NUSERS];
    double lat[NUSERS], lon[NUSERS];
} pts_t;

/* A point of one of several families: a city, near a pole, near the
 * antimeridian, anywhere. */
static void random_point(uint64_t *rng, double *lat, double *lon)
{
    double u = rand_double(rng), v = rand_double(rng);
    switch (rand_next(rng) % 6) {
    case 0: /* Guangzhou-ish, within ~30 km */
        *lat = 23.02 + (u - 0.5) * 0.5;
        *lon = 113.12 + (v - 0.5) * 0.5;
        break;
    case 1: /* north pole */
        *lat = 90 - u * u * 0.5;
        *lon = v * 360 - 180;
        break;
    case 2: /* south pole */
        *lat = -90 + u * 0.3;
        *lon = v * 360 - 180;
        break;
    case 3: /* antimeridian, Fiji-ish */
        *lat = -17 + (u - 0.5) * 0.6;
        *lon = v < 0.5 ? 180 - v * 0.4 : -180 + (v - 0.5) * 0.4;
        break;
    case 4: /* exact edges */
        *lat = (u < 0.5) ? 90 : -90;
        *lon = (v < 0.5) ? 180 : -180;
        if (u > 0.9)
            *lat = 0;
        break;
    default:
        *lat = u * 180 - 90;
        *lon = v * 360 - 180;
        break;
    }
}

static void check_query(const geo_index_t *g, const pts_t *p, double lat, double lon, double r)
{
    roaring_bitmap_t *got = roaring_bitmap_create();
    roaring_bitmap_add(got, NUSERS + 5); /* near() ORs into out */
    assert_int_equal(geo_index_near(g, lat, lon, r, got), CP_OK);
    roaring_bitmap_t *want = roaring_bitmap_create();
    roaring_bitmap_add(want, NUSERS + 5);
    for (uint32_t u = 0; u < NUSERS; u++)
        if (p->has[u] && geo_haversine_m(lat, lon, p->lat[u], p->lon[u]) <= r)
            roaring_bitmap_add(want, u);
    if (!roaring_bitmap_equals(got, want))
        fail_msg("near(%.9g, %.9g, %.9g m): got %llu, want %llu", lat, lon, r,
                 (unsigned long long)roaring_bitmap_get_cardinality(got),
                 (unsigned long long)roaring_bitmap_get_cardinality(want));
    roaring_bitmap_free(got);
    roaring_bitmap_free(want);
}

static void random_queries(const geo_index_t *g, const pts_t *p, uint64_t *rng, int n)
{
    static const double radii[] = {0, 1, 50, 800, 2500, 10000, 30000, 120000, 900000, 5e6, 2.1e7};
    for (int i = 0; i < n; i++) {
        double lat, lon;
        if (i % 4 == 0) { /* centred exactly on a user */
            uint32_t u;
            do
                u = (uint32_t)(rand_next(rng) % NUSERS);
            while (!p->has[u]);
            lat = p->lat[u];
            lon = p->lon[u];
        } else {
            random_point(rng, &lat, &lon);
        }
        double r = radii[rand_next(rng) % CP_ARRAY_LEN(radii)] * (0.5 + rand_double(rng));
        check_query(g, p, lat, lon, r);
    }
}

static void test_index_near(void **state)
{
    (void)state;
    uint64_t rng = 11;
    pts_t *p = calloc(1, sizeof *p);
    geo_index_t *g = geo_index_create();
    assert_non_null(g);

    for (uint32_t u = 0; u < NUSERS; u++) {
        if (rand_next(&rng) % 5 == 0)
            continue; /* gaps in ordinals */
        random_point(&rng, &p->lat[u], &p->lon[u]);
        assert_int_equal(geo_index_set(g, u, p->lat[u], p->lon[u]), CP_OK);
        p->has[u] = 1;
    }
    /* Users far apart in ordinal space: several coordinate chunks. */
    random_queries(g, p, &rng, 250);

    /* Overwrites (often to another cell) and clears. */
    for (int i = 0; i < 5000; i++) {
        uint32_t u = (uint32_t)(rand_next(&rng) % NUSERS);
        if (i % 4 == 0) {
            geo_index_clear(g, u);
            p->has[u] = 0;
        } else {
            random_point(&rng, &p->lat[u], &p->lon[u]);
            assert_int_equal(geo_index_set(g, u, p->lat[u], p->lon[u]), CP_OK);
            p->has[u] = 1;
        }
    }
    for (uint32_t u = 0; u < NUSERS; u++) {
        double la, lo;
        assert_int_equal(geo_index_get(g, u, &la, &lo), p->has[u]);
        if (p->has[u])
            assert_true(la == p->lat[u] && lo == p->lon[u]);
    }
    random_queries(g, p, &rng, 250);

    /* Fixed awkward circles. */
    check_query(g, p, 90, 0, 60000);
    check_query(g, p, -90, 123, 40000);
    check_query(g, p, 89.99, -179.99, 5000);
    check_query(g, p, -17, 180, 25000);
    check_query(g, p, -17, -180, 25000);
    check_query(g, p, -16.9, 179.95, 3000);
    check_query(g, p, 23.02, 113.12, 10000);
    check_query(g, p, 0, 0, M_PI * GEO_EARTH_RADIUS_M);
    check_query(g, p, 17, 0.0, 2.0e7);

    /* Cells: every user in exactly the cell of its coordinates, and the
     * cells together are the whole population. */
    roaring_bitmap_t *all = roaring_bitmap_create();
    for (size_t i = 0; i < geo_index_cell_count(g); i++) {
        uint64_t cell;
        const roaring_bitmap_t *bm;
        geo_index_cell_at(g, i, &cell, &bm);
        roaring_uint32_iterator_t *it = roaring_create_iterator(bm);
        while (it->has_value) {
            assert_int_equal(
                geo_index_cell_of(p->lat[it->current_value], p->lon[it->current_value]), cell);
            roaring_advance_uint32_iterator(it);
        }
        roaring_free_uint32_iterator(it);
        assert_false(roaring_bitmap_intersect(all, bm));
        roaring_bitmap_or_inplace(all, bm);
    }
    assert_true(roaring_bitmap_equals(all, geo_index_exists(g)));
    roaring_bitmap_free(all);
    assert_true(geo_index_size_in_bytes(g) > 0);

    /* Bad input. */
    roaring_bitmap_t *out = roaring_bitmap_create();
    assert_int_equal(geo_index_set(g, 1, 90.5, 0), CP_EINVAL);
    assert_int_equal(geo_index_set(g, 1, 0, -180.1), CP_EINVAL);
    assert_int_equal(geo_index_set(g, 1, NAN, 0), CP_EINVAL);
    assert_int_equal(geo_index_near(g, 0, 0, -1, out), CP_EINVAL);
    assert_int_equal(geo_index_near(g, 0, 0, NAN, out), CP_EINVAL);
    assert_int_equal(geo_index_near(g, 0, 0, INFINITY, out), CP_EINVAL);
    assert_int_equal(geo_index_near(g, 91, 0, 10, out), CP_EINVAL);
    assert_true(roaring_bitmap_is_empty(out));
    roaring_bitmap_free(out);

    geo_index_free(g);
    geo_index_free(NULL);
    free(p);
}

/* A high ordinal alone, and an empty index. */
static void test_index_edges(void **state)
{
    (void)state;
    geo_index_t *g = geo_index_create();
    roaring_bitmap_t *out = roaring_bitmap_create();
    assert_int_equal(geo_index_near(g, 10, 10, 1e6, out), CP_OK);
    assert_true(roaring_bitmap_is_empty(out));
    assert_int_equal(geo_index_set(g, UINT32_MAX, 10, 10), CP_OK);
    assert_int_equal(geo_index_near(g, 10, 10.001, 200, out), CP_OK);
    assert_true(roaring_bitmap_contains(out, UINT32_MAX));
    assert_int_equal(roaring_bitmap_get_cardinality(out), 1);
    double la, lo;
    assert_int_equal(geo_index_get(g, 5, &la, &lo), 0);
    geo_index_clear(g, 5); /* absent: no-op */
    geo_index_clear(g, UINT32_MAX);
    assert_int_equal(geo_index_get(g, UINT32_MAX, &la, &lo), 0);
    roaring_bitmap_free(out);
    geo_index_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_haversine),
        cmocka_unit_test(test_geohash),
        cmocka_unit_test(test_index_near),
        cmocka_unit_test(test_index_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
