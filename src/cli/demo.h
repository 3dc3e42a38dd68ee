/*
 * demo.h — the demo population generator behind `crowdpack demo` and
 * `crowdpack bench`: the seed taxonomy (18/124/256/313 tags at levels
 * 1-4), Zipf-like correlated interests, ages, gender, 300+ Chinese cities
 * with real coordinates, member tier and points. Deterministic for a seed.
 * Uses only the public API.
 */
#ifndef CP_CLI_DEMO_H
#define CP_CLI_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

typedef struct demo_options {
    uint64_t users; /* 0 = 1,000,000 */
    uint64_t seed;  /* 0 = 42 */
    int progress;   /* draw a progress bar on stderr */
} demo_options_t;

/* Declares the demo schema and taxonomy in `db` (idempotent). */
cp_status demo_schema(cp_db_t *db, cp_error_t *err);
/* demo_schema + `users` users (ids "u1".."uN"), committed in batches. */
cp_status demo_generate(cp_db_t *db, const demo_options_t *o, cp_error_t *err);

/* ------------------------------------------------------------ demo data */
/*
 * The static tables behind the generator (demo_taxonomy.c, demo_cities.c),
 * exposed so that the CLI's banner/docs and tests can list them.
 */

/* One interest tag: slug path under "interest/" and Chinese display name.
 * Rows are depth-first, parents first, children most popular first. */
typedef struct demo_tag_row {
    const char *path;
    const char *name;
} demo_tag_row_t;

extern const demo_tag_row_t demo_interest_tags[]; /* 18 + 124 + 256 + 313 rows */
extern const size_t demo_interest_tags_len;

/* One city: pinyin slug (the `city` enum value), Chinese name, province
 * slug (the `province` enum value), centre coordinates, population weight
 * (roughly 10,000s of online users). */
typedef struct demo_city {
    const char *slug;
    const char *name;
    const char *province;
    double lat;
    double lon;
    uint32_t weight;
} demo_city_t;

extern const demo_city_t demo_cities[];
extern const size_t demo_cities_len;

#endif /* CP_CLI_DEMO_H */
