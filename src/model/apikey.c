/* apikey.c — API keys; see apikey.h. */
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "model/apikey.h"
#include "util/util.h"

const char *cp_role_name(cp_role r)
{
    switch (r) {
    case CP_ROLE_READ:
        return "read";
    case CP_ROLE_WRITE:
        return "write";
    case CP_ROLE_ADMIN:
        return "admin";
    }
    return NULL;
}

static cp_role role_parse(const char *s)
{
    for (int r = CP_ROLE_READ; r <= CP_ROLE_ADMIN; r++)
        if (s && strcmp(s, cp_role_name((cp_role)r)) == 0)
            return (cp_role)r;
    return (cp_role)0;
}

void apikey_set_init(apikey_set_t *s)
{
    memset(s, 0, sizeof *s);
}

void apikey_set_free(apikey_set_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i].label);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static void secret_hash(const unsigned char *salt, const unsigned char *secret,
                        unsigned char out[32])
{
    crypto_generichash(out, 32, secret, APIKEY_SECRET_BYTES, salt, 16);
}

static cp_status push(apikey_set_t *s, const apikey_t *k)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        apikey_t *it = realloc(s->items, nc * sizeof *it);
        if (it == NULL)
            return CP_ENOMEM;
        s->items = it;
        s->cap = nc;
    }
    s->items[s->n++] = *k;
    return CP_OK;
}

static cp_status key_put(store_txn_t *t, const apikey_t *k, cp_error_t *err)
{
    char salt[33], hash[65];
    sodium_bin2hex(salt, sizeof salt, k->salt, sizeof k->salt);
    sodium_bin2hex(hash, sizeof hash, k->hash, sizeof k->hash);
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:s}", "role", cp_role_name(k->role), "label", k->label,
                          "created", (json_int_t)k->created, "salt", salt, "hash", hash);
    char *text = j ? json_dumps_checked(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory storing an API key");
    cp_status rc = store_put(t, STORE_KEYS, k->id, APIKEY_ID_HEX, text, strlen(text), err);
    free(text);
    return rc;
}

cp_status apikey_create(apikey_set_t *s, store_txn_t *t, cp_role role, const char *label,
                        char **key_out, cp_error_t *err)
{
    *key_out = NULL;
    if (cp_role_name(role) == NULL)
        return CP_ERR(err, CP_EINVAL, "unknown role %d", (int)role);
    if (label && (strnlen(label, APIKEY_MAX_LABEL + 1) > APIKEY_MAX_LABEL ||
                  !utf8_valid(label, strlen(label))))
        return CP_ERR(err, CP_EINVAL, "key label must be valid UTF-8 of at most %d bytes",
                      APIKEY_MAX_LABEL);
    if (s->n >= APIKEY_MAX_KEYS)
        return CP_ERR(err, CP_ELIMIT, "too many API keys (limit %u)", APIKEY_MAX_KEYS);
    if (sodium_init() < 0)
        return CP_ERR(err, CP_EINTERNAL, "libsodium failed to initialise");
    apikey_t k = {0};
    unsigned char idb[APIKEY_ID_HEX / 2], secret[APIKEY_SECRET_BYTES];
    randombytes_buf(idb, sizeof idb);
    randombytes_buf(secret, sizeof secret);
    randombytes_buf(k.salt, sizeof k.salt);
    sodium_bin2hex(k.id, sizeof k.id, idb, sizeof idb);
    secret_hash(k.salt, secret, k.hash);
    k.role = role;
    k.created = time_now_ms();
    k.label = strdup(label ? label : "");
    size_t klen = 4 + APIKEY_ID_HEX + 1 + 2 * APIKEY_SECRET_BYTES;
    char *text = malloc(klen + 1);
    if (k.label == NULL || text == NULL) {
        free(k.label);
        free(text);
        return CP_ERR(err, CP_ENOMEM, "out of memory creating an API key");
    }
    memcpy(text, "cpk_", 4);
    memcpy(text + 4, k.id, APIKEY_ID_HEX);
    text[4 + APIKEY_ID_HEX] = '_';
    sodium_bin2hex(text + 5 + APIKEY_ID_HEX, 2 * APIKEY_SECRET_BYTES + 1, secret, sizeof secret);
    sodium_memzero(secret, sizeof secret);
    cp_status rc = key_put(t, &k, err);
    if (rc == CP_OK && push(s, &k) != CP_OK)
        rc = CP_ERR(err, CP_ENOMEM, "out of memory creating an API key");
    if (rc) {
        free(k.label);
        sodium_memzero(text, klen);
        free(text);
        return rc;
    }
    *key_out = text;
    return CP_OK;
}

cp_status apikey_check(const apikey_set_t *s, const char *key, cp_role *role_out)
{
    if (key == NULL)
        return CP_EAUTH;
    size_t klen = strnlen(key, 200);
    if (klen != 4 + APIKEY_ID_HEX + 1 + 2 * APIKEY_SECRET_BYTES || memcmp(key, "cpk_", 4) != 0 ||
        key[4 + APIKEY_ID_HEX] != '_')
        return CP_EAUTH;
    unsigned char secret[APIKEY_SECRET_BYTES];
    size_t bin = 0;
    if (sodium_hex2bin(secret, sizeof secret, key + 5 + APIKEY_ID_HEX, 2 * APIKEY_SECRET_BYTES,
                       NULL, &bin, NULL) != 0 ||
        bin != sizeof secret)
        return CP_EAUTH;
    const apikey_t *found = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->items[i].id, key + 4, APIKEY_ID_HEX) == 0)
            found = &s->items[i];
    /* Hash either way: an unknown id costs as much as a wrong secret. */
    static const unsigned char zero_salt[16];
    unsigned char h[32];
    secret_hash(found ? found->salt : zero_salt, secret, h);
    sodium_memzero(secret, sizeof secret);
    if (found == NULL || sodium_memcmp(h, found->hash, sizeof h) != 0)
        return CP_EAUTH;
    if (role_out)
        *role_out = found->role;
    return CP_OK;
}

cp_status apikey_revoke(apikey_set_t *s, store_txn_t *t, const char *id, cp_error_t *err)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].id, id) != 0)
            continue;
        cp_status rc = store_del(t, STORE_KEYS, id, APIKEY_ID_HEX, err);
        if (rc)
            return rc;
        free(s->items[i].label);
        memmove(s->items + i, s->items + i + 1, (s->n - i - 1) * sizeof *s->items);
        s->n--;
        return CP_OK;
    }
    return CP_ERR(err, CP_ENOTFOUND, "API key \"%.32s\" not found", id);
}

static cp_status load_one(void *ud, const void *kp, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    apikey_set_t *s = ud;
    apikey_t k = {0};
    json_error_t je;
    json_t *j = json_loadb_checked(v, vl, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading API key records");
    const char *role = NULL, *label = NULL, *salt = NULL, *hash = NULL;
    json_int_t created = 0;
    size_t sb = 0, hb = 0;
    cp_status rc = CP_OK;
    if (kl != APIKEY_ID_HEX || j == NULL ||
        json_unpack(j, "{s:s,s:s,s:I,s:s,s:s}", "role", &role, "label", &label, "created", &created,
                    "salt", &salt, "hash", &hash) ||
        !role_parse(role) ||
        sodium_hex2bin(k.salt, sizeof k.salt, salt, strlen(salt), NULL, &sb, NULL) ||
        sb != sizeof k.salt ||
        sodium_hex2bin(k.hash, sizeof k.hash, hash, strlen(hash), NULL, &hb, NULL) ||
        hb != sizeof k.hash) {
        rc = CP_ERR(err, CP_EIO, "corrupt API key record");
        goto out;
    }
    memcpy(k.id, kp, APIKEY_ID_HEX);
    k.role = role_parse(role);
    k.created = created;
    k.label = strdup(label);
    if (k.label == NULL || push(s, &k)) {
        free(k.label);
        rc = CP_ERR(err, CP_ENOMEM, "out of memory loading API keys");
    }
out:
    json_decref(j);
    return rc;
}

cp_status apikey_load(apikey_set_t *s, store_txn_t *t, cp_error_t *err)
{
    if (sodium_init() < 0)
        return CP_ERR(err, CP_EINTERNAL, "libsodium failed to initialise");
    return store_each(t, STORE_KEYS, NULL, 0, load_one, s, err);
}
