/*
 * apikey.h — API keys with roles. A key is shown once at creation as
 *   cpk_<id: 16 hex>_<secret: 64 hex (32 random bytes)>
 * and only a salted BLAKE2b-256 of the secret is stored (keys are
 * high-entropy, so a fast salted hash is right; no password hashing).
 * Checks compare in constant time (sodium_memcmp) and hash even for an
 * unknown id so the timing does not say which ids exist.
 *
 * Persistence: STORE_KEYS id -> {"role","label","created","salt","hash"}.
 * Not thread-safe for writes: the engine's lock covers it; checks only read.
 */
#ifndef CP_MODEL_APIKEY_H
#define CP_MODEL_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "store/store.h"

#define APIKEY_ID_HEX 16
#define APIKEY_SECRET_BYTES 32
#define APIKEY_MAX_LABEL 256
#define APIKEY_MAX_KEYS 10000u

typedef struct apikey {
    char id[APIKEY_ID_HEX + 1];
    cp_role role;
    char *label; /* "" when none */
    int64_t created;
    unsigned char salt[16];
    unsigned char hash[32];
} apikey_t;

typedef struct apikey_set {
    apikey_t *items;
    size_t n, cap;
} apikey_set_t;

void apikey_set_init(apikey_set_t *s);
void apikey_set_free(apikey_set_t *s);
/* Creates a key and persists it; *key_out (malloc) is the full key text. */
cp_status apikey_create(apikey_set_t *s, store_txn_t *t, cp_role role, const char *label,
                        char **key_out, cp_error_t *err);
/* CP_EAUTH for anything that is not a live key. */
cp_status apikey_check(const apikey_set_t *s, const char *key, cp_role *role_out);
cp_status apikey_revoke(apikey_set_t *s, store_txn_t *t, const char *id, cp_error_t *err);
cp_status apikey_load(apikey_set_t *s, store_txn_t *t, cp_error_t *err);

#endif /* CP_MODEL_APIKEY_H */
