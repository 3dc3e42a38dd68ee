/* crowd.c — crowd records; see crowd.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/crowd.h"
#include "model/taxonomy.h"
#include "util/util.h"

cp_status crowd_validate_name(const char *name, cp_error_t *err)
{
    if (name == NULL || name[0] == '\0')
        return CP_ERR(err, CP_EINVAL, "empty crowd name");
    size_t n = strnlen(name, CROWD_MAX_NAME + 1);
    if (n > CROWD_MAX_NAME)
        return CP_ERR(err, CP_ELIMIT, "crowd name is longer than %d bytes", CROWD_MAX_NAME);
    /* Letters of any script too (广州理财): the same rule as tag slugs,
     * plus upper-case ASCII, which crowd names always allowed. */
    int utf8 = utf8_valid(name, n);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        size_t w = utf8 ? tax_word_char(name + i, n - i) : 0;
        if (w > 0) {
            i += w - 1;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return CP_ERR(err, CP_EINVAL,
                          "crowd name \"%s\" is not allowed (names are letters of any script, "
                          "digits, '_' and '-', up to %d bytes)",
                          utf8 ? name : "?", CROWD_MAX_NAME);
    }
    return CP_OK;
}

const char *crowd_kind_name(cp_crowd_kind k)
{
    return k == CP_CROWD_STATIC ? "static" : k == CP_CROWD_DYNAMIC ? "dynamic" : NULL;
}

static void strs_free(char **v, size_t n)
{
    for (size_t i = 0; i < n && v; i++)
        free(v[i]);
    free(v);
}

void crowd_rec_free(crowd_rec_t *c)
{
    if (c == NULL)
        return;
    free(c->name);
    free(c->expr);
    free(c->tree);
    free(c->description);
    strs_free(c->crowd_refs, c->ncrowd_refs);
    strs_free(c->tag_refs, c->ntag_refs);
    free(c->hist);
    free(c->refresh);
    free(c->timezone);
    free(c);
}

cp_status crowd_history_note(crowd_rec_t *c, int64_t now_ms, int merge)
{
    if (merge && c->nhist && now_ms - c->hist[c->nhist - 1].time < CROWD_HISTORY_MERGE_MS &&
        now_ms >= c->hist[c->nhist - 1].time) {
        c->hist[c->nhist - 1] = (crowd_point_t){now_ms, c->size, c->version};
        return CP_OK;
    }
    if (c->hist == NULL) {
        c->hist = malloc(CROWD_HISTORY_MAX * sizeof *c->hist);
        if (c->hist == NULL)
            return CP_ENOMEM;
    }
    if (c->nhist == CROWD_HISTORY_MAX) {
        memmove(c->hist, c->hist + 1, (CROWD_HISTORY_MAX - 1) * sizeof *c->hist);
        c->nhist--;
    }
    c->hist[c->nhist++] = (crowd_point_t){now_ms, c->size, c->version};
    return CP_OK;
}

cp_status crowd_parse_refresh(const char *text, int *minute, cp_error_t *err)
{
    int h = -1, m = -1, used = 0;
    if (text == NULL || sscanf(text, "daily %2d:%2d%n", &h, &m, &used) != 2 || text[used] != '\0' ||
        h < 0 || h > 23 || m < 0 || m > 59)
        return CP_ERR(err, CP_EINVAL,
                      "refresh schedule \"%.64s\" is not understood (expected \"daily HH:MM\", "
                      "e.g. \"daily 02:00\")",
                      text ? text : "");
    *minute = h * 60 + m;
    return CP_OK;
}

void crowd_set_init(crowd_set_t *s)
{
    memset(s, 0, sizeof *s);
    strmap_init(&s->by_name);
    s->next_id = 1;
}

void crowd_set_free(crowd_set_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        crowd_rec_free(s->items[i]);
    free(s->items);
    strmap_free(&s->by_name);
    memset(s, 0, sizeof *s);
}

crowd_rec_t *crowd_set_find(const crowd_set_t *s, const char *name)
{
    uint32_t i;
    if (name == NULL || !strmap_get(&s->by_name, name, strlen(name), &i))
        return NULL;
    return s->items[i];
}

cp_status crowd_set_add(crowd_set_t *s, crowd_rec_t *c)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        crowd_rec_t **it = realloc(s->items, nc * sizeof *it);
        if (it == NULL)
            return CP_ENOMEM;
        s->items = it;
        s->cap = nc;
    }
    if (strmap_put(&s->by_name, c->name, strlen(c->name), (uint32_t)s->n))
        return CP_ENOMEM;
    s->items[s->n++] = c;
    if (c->id >= s->next_id)
        s->next_id = c->id + 1;
    return CP_OK;
}

void crowd_set_remove(crowd_set_t *s, const char *name)
{
    uint32_t idx;
    if (!strmap_get(&s->by_name, name, strlen(name), &idx))
        return;
    crowd_rec_t *c = s->items[idx];
    strmap_del(&s->by_name, c->name, strlen(c->name));
    memmove(s->items + idx, s->items + idx + 1, (s->n - idx - 1) * sizeof *s->items);
    s->n--;
    /* Indexes after idx moved down by one. Re-putting cannot allocate: the
     * keys exist already, so only values change. */
    for (size_t i = idx; i < s->n; i++)
        strmap_put(&s->by_name, s->items[i]->name, strlen(s->items[i]->name), (uint32_t)i);
    crowd_rec_free(c);
}

static json_t *strs_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* The optional fields of keeping a crowd true, added to its record only
 * when set, so records without them read as before. */
static int put_extra(json_t *j, const crowd_rec_t *c)
{
    int bad = 0;
    if (c->nhist) {
        json_t *h = json_array();
        for (size_t i = 0; h && i < c->nhist; i++)
            bad |= json_array_append_new(h, json_pack("[I,I,I]", (json_int_t)c->hist[i].time,
                                                      (json_int_t)c->hist[i].size,
                                                      (json_int_t)c->hist[i].version));
        bad |= h == NULL || json_object_set_new(j, "history", h);
    }
    if (c->refresh)
        bad |= json_object_set_new(j, "refresh", json_string(c->refresh));
    if (c->timezone)
        bad |= json_object_set_new(j, "timezone", json_string(c->timezone));
    if (c->last_run)
        bad |= json_object_set_new(j, "last_run", json_integer(c->last_run));
    if (c->expire_after_days)
        bad |= json_object_set_new(j, "expire_after_days", json_integer(c->expire_after_days));
    if (c->last_used)
        bad |= json_object_set_new(j, "last_used", json_integer(c->last_used));
    if (c->frozen)
        bad |= json_object_set_new(j, "frozen", json_true());
    if (c->as_of_day)
        bad |= json_object_set_new(j, "as_of_day", json_integer(c->as_of_day));
    return bad;
}

cp_status crowd_store_put(store_txn_t *t, const crowd_rec_t *c, cp_error_t *err)
{
    /* The reference lists are built first: given to json_pack as "o*", a
     * list lost to a failed allocation would silently drop its key, and the
     * record would read back as corrupt. */
    json_t *j = NULL, *crefs = strs_json(c->crowd_refs, c->ncrowd_refs),
           *trefs = strs_json(c->tag_refs, c->ntag_refs);
    if (crefs != NULL && trefs != NULL)
        j = json_pack("{s:I,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:o,s:o}", "id", (json_int_t)c->id,
                      "kind", crowd_kind_name(c->kind), "expression", c->expr, "tree", c->tree,
                      "description", c->description, "size", (json_int_t)c->size, "version",
                      (json_int_t)c->version, "created", (json_int_t)c->created, "updated",
                      (json_int_t)c->updated, "crowd_refs", crefs, "tag_refs", trefs);
    else {
        json_decref(crefs);
        json_decref(trefs);
    }
    char *text = j && !put_extra(j, c) ? json_dumps_checked(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory encoding crowd \"%s\"", c->name);
    cp_status rc = store_put(t, STORE_CROWDS, c->name, strlen(c->name), text, strlen(text), err);
    free(text);
    return rc;
}

/* Reads the optional fields (put_extra); CP_EIO when one is malformed. */
static cp_status load_extra(json_t *j, crowd_rec_t *c)
{
    json_t *h = json_object_get(j, "history"), *v;
    if (h && !json_is_array(h))
        return CP_EIO;
    size_t n = json_array_size(h);
    if (n > CROWD_HISTORY_MAX)
        n = CROWD_HISTORY_MAX; /* keep the newest */
    if (n && (c->hist = malloc(CROWD_HISTORY_MAX * sizeof *c->hist)) == NULL)
        return CP_ENOMEM;
    size_t skip = json_array_size(h) - n;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(h, skip + i);
        json_int_t t = 0, sz = 0, ver = 0;
        if (json_unpack(p, "[I,I,I]", &t, &sz, &ver) || sz < 0 || ver < 0)
            return CP_EIO;
        c->hist[c->nhist++] = (crowd_point_t){t, (uint64_t)sz, (uint64_t)ver};
    }
    if ((v = json_object_get(j, "refresh")) != NULL) {
        if (!json_is_string(v) || crowd_parse_refresh(json_string_value(v), &c->refresh_min, NULL))
            return CP_EIO;
        if ((c->refresh = strdup(json_string_value(v))) == NULL)
            return CP_ENOMEM;
    }
    if ((v = json_object_get(j, "timezone")) != NULL) {
        if (!json_is_string(v))
            return CP_EIO;
        if ((c->timezone = strdup(json_string_value(v))) == NULL)
            return CP_ENOMEM;
    }
    c->last_run = json_integer_value(json_object_get(j, "last_run"));
    c->expire_after_days = (int)json_integer_value(json_object_get(j, "expire_after_days"));
    c->last_used = json_integer_value(json_object_get(j, "last_used"));
    c->frozen = json_is_true(json_object_get(j, "frozen"));
    c->last_used_saved = c->last_used;
    if ((v = json_object_get(j, "as_of_day")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) == 0 ||
            json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
            return CP_EIO;
        c->as_of_day = (int32_t)json_integer_value(v);
    }
    return CP_OK;
}

cp_status crowd_store_del(store_txn_t *t, const char *name, cp_error_t *err)
{
    return store_del(t, STORE_CROWDS, name, strlen(name), err);
}

static cp_status strs_load(json_t *a, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!json_is_array(a))
        return CP_EIO;
    size_t len = json_array_size(a);
    if (len == 0)
        return CP_OK;
    char **v = calloc(len, sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (s == NULL || (v[i] = strdup(s)) == NULL) {
            strs_free(v, len);
            return s ? CP_ENOMEM : CP_EIO;
        }
    }
    *out = v;
    *n = len;
    return CP_OK;
}

static cp_status load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    crowd_set_t *s = ud;
    crowd_rec_t *c = NULL;
    json_error_t je;
    json_t *j = json_loadb_checked(v, vl, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading crowd records");
    json_int_t id = 0, size = 0, version = 0, created = 0, updated = 0;
    const char *kind = NULL, *expr = NULL, *desc = NULL;
    json_t *tree = NULL, *crefs = NULL, *trefs = NULL;
    cp_status rc = CP_OK;
    char name[CROWD_MAX_NAME + 1];
    if (kl > CROWD_MAX_NAME)
        return CP_ERR(err, CP_EIO, "corrupt crowd record key");
    memcpy(name, k, kl);
    name[kl] = '\0';
    if (j == NULL ||
        json_unpack(j, "{s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:o}", "id", &id, "kind", &kind,
                    "expression", &expr, "description", &desc, "size", &size, "version", &version,
                    "created", &created, "updated", &updated, "tree", &tree, "crowd_refs", &crefs,
                    "tag_refs", &trefs) ||
        !json_is_string(tree) || id <= 0 || id > UINT32_MAX || crowd_validate_name(name, NULL) ||
        crowd_set_find(s, name)) {
        rc = CP_ERR(err, CP_EIO, "corrupt record of crowd \"%s\"", name);
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto nomem;
    c->id = (uint32_t)id;
    c->kind = strcmp(kind, "dynamic") == 0 ? CP_CROWD_DYNAMIC : CP_CROWD_STATIC;
    c->size = (uint64_t)size;
    c->version = (uint64_t)version;
    c->created = created;
    c->updated = updated;
    c->name = strdup(name);
    c->expr = strdup(expr);
    c->tree = strdup(json_string_value(tree));
    c->description = strdup(desc);
    if (!c->name || !c->expr || !c->tree || !c->description)
        goto nomem;
    if ((rc = strs_load(crefs, &c->crowd_refs, &c->ncrowd_refs)) ||
        (rc = strs_load(trefs, &c->tag_refs, &c->ntag_refs)) || (rc = load_extra(j, c))) {
        rc = CP_ERR(err, rc, "cannot load crowd \"%s\"", name);
        goto out;
    }
    if (crowd_set_add(s, c))
        goto nomem;
    c = NULL;
    goto out;
nomem:
    rc = CP_ERR(err, CP_ENOMEM, "out of memory loading crowds");
out:
    crowd_rec_free(c);
    json_decref(j);
    return rc;
}

static int by_id(const void *a, const void *b)
{
    uint32_t x = (*(crowd_rec_t *const *)a)->id, y = (*(crowd_rec_t *const *)b)->id;
    return x < y ? -1 : x > y;
}

cp_status crowd_set_load(crowd_set_t *s, store_txn_t *t, cp_error_t *err)
{
    cp_status rc = store_each(t, STORE_CROWDS, NULL, 0, load_one, s, err);
    if (rc)
        return rc;
    /* Records come in name order; ids are given in creation order, which
     * is the order views list crowds in (the same before and after a
     * restart). Re-putting existing keys cannot allocate. */
    if (s->n > 1) {
        qsort(s->items, s->n, sizeof *s->items, by_id);
        for (size_t i = 0; i < s->n; i++)
            strmap_put(&s->by_name, s->items[i]->name, strlen(s->items[i]->name), (uint32_t)i);
    }
    uint64_t next = 0;
    rc = store_meta_get_u64(t, "next_crowd_id", &next, err);
    if (rc == CP_ENOTFOUND)
        return CP_OK;
    if (rc == CP_OK && next > s->next_id && next < UINT32_MAX)
        s->next_id = (uint32_t)next;
    return rc;
}
