/*
 * demo.h — the demo population generator behind `crowdpack demo` and
 * `crowdpack bench`: the seed taxonomy (18/124/256/313 tags at levels
 * 1-4), Zipf-like correlated interests, ages, gender, 300+ Chinese cities
 * with real coordinates, member tier and points. Deterministic for a seed.
 * Uses only the public API.
 */
#ifndef CP_CLI_DEMO_H
#define CP_CLI_DEMO_H

#include <stdint.h>

#include "crowdpack.h"

typedef struct demo_options {
    uint64_t users;   /* 0 = 1,000,000 */
    uint64_t seed;    /* 0 = 42 */
    int progress;     /* draw a progress bar on stderr */
} demo_options_t;

/* Declares the demo schema and taxonomy in `db` (idempotent). */
cp_status demo_schema(cp_db_t *db, cp_error_t *err);
/* demo_schema + `users` users (ids "u1".."uN"), committed in batches. */
cp_status demo_generate(cp_db_t *db, const demo_options_t *o, cp_error_t *err);

#endif /* CP_CLI_DEMO_H */
