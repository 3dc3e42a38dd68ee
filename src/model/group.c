/* group.c — Segment groups: traits and members, in memory and in
 * STORE_INTAKE rows (group.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/codec.h"
#include "model/group.h"
#include "util/util.h"

#define GRP_PREFIX "grp/"
#define GRM_PREFIX "grm/"
#define PREFIX_LEN 4

void group_set_init(group_set_t *s)
{
    memset(s, 0, sizeof *s);
    strmap_init(&s->by_id);
}

void group_set_free(group_set_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].id);
        json_decref(s->items[i].traits);
        roaring_bitmap_free(s->items[i].members);
    }
    free(s->items);
    strmap_free(&s->by_id);
    memset(s, 0, sizeof *s);
}

group_rec_t *group_find(const group_set_t *s, const char *id, size_t len)
{
    uint32_t i;
    return strmap_get(&s->by_id, id, len, &i) ? &s->items[i] : NULL;
}

/* A new group with no traits and no members; NULL on ENOMEM or past the
 * limit (err says which). */
static group_rec_t *group_add(group_set_t *s, const char *id, size_t len, cp_error_t *err)
{
    if (s->n >= GROUP_MAX_GROUPS) {
        CP_ERR(err, CP_ELIMIT, "more than %u groups", GROUP_MAX_GROUPS);
        return NULL;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        group_rec_t *p = realloc(s->items, nc * sizeof *p);
        if (p == NULL)
            goto nomem;
        s->items = p;
        s->cap = nc;
    }
    group_rec_t *g = &s->items[s->n];
    memset(g, 0, sizeof *g);
    g->id = malloc(len + 1);
    g->traits = json_object();
    g->members = roaring_bitmap_create();
    if (g->id == NULL || g->traits == NULL || g->members == NULL ||
        strmap_put(&s->by_id, id, len, (uint32_t)s->n) != CP_OK) {
        free(g->id);
        json_decref(g->traits);
        roaring_bitmap_free(g->members);
        goto nomem;
    }
    memcpy(g->id, id, len);
    g->id[len] = '\0';
    g->idlen = len;
    s->n++;
    return g;
nomem:
    CP_ERR(err, CP_ENOMEM, "out of memory adding group");
    return NULL;
}

/* "grm/" + id + "\0" + ord: into k (PREFIX_LEN + GROUP_MAX_ID + 5 bytes). */
static size_t member_key(unsigned char *k, const char *id, size_t len, uint32_t ord)
{
    memcpy(k, GRM_PREFIX, PREFIX_LEN);
    memcpy(k + PREFIX_LEN, id, len);
    k[PREFIX_LEN + len] = 0;
    be32_put(k + PREFIX_LEN + len + 1, ord);
    return PREFIX_LEN + len + 5;
}

static cp_status load_group(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                            cp_error_t *err)
{
    group_set_t *s = ud;
    const char *id = (const char *)k + PREFIX_LEN;
    size_t len = klen - PREFIX_LEN;
    json_error_t je;
    json_t *t = json_loadb_checked(v, vlen, 0, &je);
    if (t == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading a group record");
    if (len == 0 || len > GROUP_MAX_ID || !json_is_object(t)) {
        json_decref(t);
        return CP_ERR(err, CP_ECORRUPT, "group record \"%.*s\" does not decode",
                      (int)(len > 64 ? 64 : len), id);
    }
    group_rec_t *g = group_find(s, id, len);
    if (g == NULL && (g = group_add(s, id, len, err)) == NULL) {
        json_decref(t);
        return err ? err->code : CP_ENOMEM;
    }
    json_decref(g->traits);
    g->traits = t;
    return CP_OK;
}

static cp_status load_member(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                             cp_error_t *err)
{
    (void)v;
    (void)vlen;
    group_set_t *s = ud;
    const unsigned char *p = k;
    if (klen < PREFIX_LEN + 6 || p[klen - 5] != 0)
        return CP_ERR(err, CP_ECORRUPT, "group member key of %zu bytes does not decode", klen);
    const char *id = (const char *)p + PREFIX_LEN;
    size_t len = klen - PREFIX_LEN - 5;
    group_rec_t *g = group_find(s, id, len);
    if (g == NULL && (g = group_add(s, id, len, err)) == NULL)
        return err ? err->code : CP_ENOMEM;
    roaring_bitmap_add(g->members, be32_get(p + klen - 4));
    return CP_OK;
}

cp_status group_set_load(group_set_t *s, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = store_each(txn, STORE_INTAKE, GRP_PREFIX, PREFIX_LEN, load_group, s, err);
    if (rc == CP_OK)
        rc = store_each(txn, STORE_INTAKE, GRM_PREFIX, PREFIX_LEN, load_member, s, err);
    for (size_t i = 0; rc == CP_OK && i < s->n; i++)
        roaring_bitmap_run_optimize(s->items[i].members);
    return rc;
}

static cp_status traits_put(store_txn_t *txn, const group_rec_t *g, cp_error_t *err)
{
    unsigned char k[PREFIX_LEN + GROUP_MAX_ID];
    memcpy(k, GRP_PREFIX, PREFIX_LEN);
    memcpy(k + PREFIX_LEN, g->id, g->idlen);
    char *js = json_dumps_checked(g->traits, JSON_COMPACT | JSON_SORT_KEYS);
    if (js == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory writing group \"%s\"", g->id);
    cp_status rc = store_put(txn, STORE_INTAKE, k, PREFIX_LEN + g->idlen, js, strlen(js), err);
    free(js);
    return rc;
}

cp_status group_join(group_set_t *s, store_txn_t *txn, const char *id, size_t len, uint32_t ord,
                     const json_t *traits, cp_error_t *err)
{
    cp_status rc;
    json_t *merged = NULL;
    if (len == 0 || len > GROUP_MAX_ID || memchr(id, 0, len))
        return CP_ERR(err, CP_EINVAL, "group id of %zu bytes: expected 1..%d bytes without NUL",
                      len, GROUP_MAX_ID);
    group_rec_t *g = group_find(s, id, len);
    int is_new = g == NULL;
    if (is_new && (g = group_add(s, id, len, err)) == NULL)
        return err ? err->code : CP_ENOMEM;
    if (json_object_size(traits) > 0) {
        /* Merged on a copy first, so a group past its limit keeps its traits. */
        if ((merged = json_copy(g->traits)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory merging traits of group \"%s\"", g->id);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)traits, k, v)
        {
            if (json_is_null(v)) {
                json_object_del(merged, k); /* absent already is fine */
                continue;
            }
            if (json_object_set(merged, k, v) != 0) {
                json_decref(merged);
                return CP_ERR(err, CP_ENOMEM, "out of memory merging traits of group \"%s\"",
                              g->id);
            }
        }
        size_t bytes = json_dumpb_checked(merged, NULL, 0, JSON_COMPACT);
        if (bytes > GROUP_MAX_TRAITS_BYTES) {
            json_decref(merged);
            return CP_ERR(err, CP_ELIMIT,
                          "traits of group \"%s\" would take %zu bytes; the "
                          "limit is %d",
                          g->id, bytes, GROUP_MAX_TRAITS_BYTES);
        }
        if (!json_equal(merged, g->traits)) {
            json_decref(g->traits);
            g->traits = merged;
            merged = NULL;
            if ((rc = traits_put(txn, g, err)))
                return rc;
        }
        json_decref(merged);
    } else if (is_new && (rc = traits_put(txn, g, err))) {
        return rc;
    }
    if (roaring_bitmap_contains(g->members, ord))
        return CP_OK;
    unsigned char k[PREFIX_LEN + GROUP_MAX_ID + 5];
    size_t kl = member_key(k, g->id, g->idlen, ord);
    if ((rc = store_put(txn, STORE_INTAKE, k, kl, "", 0, err)))
        return rc;
    roaring_bitmap_add(g->members, ord);
    return CP_OK;
}

cp_status group_move_member(group_set_t *s, store_txn_t *txn, uint32_t from, uint32_t to,
                            cp_error_t *err)
{
    unsigned char k[PREFIX_LEN + GROUP_MAX_ID + 5];
    cp_status rc;
    for (size_t i = 0; i < s->n; i++) {
        group_rec_t *g = &s->items[i];
        if (!roaring_bitmap_contains(g->members, from))
            continue;
        size_t kl = member_key(k, g->id, g->idlen, from);
        if ((rc = store_del(txn, STORE_INTAKE, k, kl, err)))
            return rc;
        kl = member_key(k, g->id, g->idlen, to);
        if ((rc = store_put(txn, STORE_INTAKE, k, kl, "", 0, err)))
            return rc;
        roaring_bitmap_remove(g->members, from);
        roaring_bitmap_add(g->members, to);
    }
    return CP_OK;
}

cp_status group_remove_member(group_set_t *s, store_txn_t *txn, uint32_t ord, cp_error_t *err)
{
    unsigned char k[PREFIX_LEN + GROUP_MAX_ID + 5];
    cp_status rc;
    for (size_t i = 0; i < s->n; i++) {
        group_rec_t *g = &s->items[i];
        if (!roaring_bitmap_contains(g->members, ord))
            continue;
        size_t kl = member_key(k, g->id, g->idlen, ord);
        if ((rc = store_del(txn, STORE_INTAKE, k, kl, err)))
            return rc;
        roaring_bitmap_remove(g->members, ord);
    }
    return CP_OK;
}

int group_trait_text(const json_t *v, char *buf, size_t cap, const char **out, size_t *len)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        *out = json_string_value(v);
        *len = json_string_length(v);
        return 1;
    case JSON_INTEGER:
        *len = (size_t)snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        *out = buf;
        return 1;
    case JSON_REAL:
        fmt_double(json_real_value(v), buf, cap);
        *out = buf;
        *len = strlen(buf);
        return 1;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = json_is_true(v) ? "true" : "false";
        *len = strlen(*out);
        return 1;
    default:
        return 0;
    }
}
