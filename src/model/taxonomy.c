/* taxonomy.c — the tag tree in memory and its records; see taxonomy.h. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "model/codec.h"
#include "model/taxonomy.h"
#include "util/util.h"

static void tag_free(tax_tag_t *g)
{
    if (g == NULL)
        return;
    free(g->path);
    free(g->name);
    free(g->description);
    free(g->children);
    free(g);
}

cp_status tax_init(taxonomy_t *t)
{
    memset(t, 0, sizeof *t);
    strmap_init(&t->by_path);
    t->cap = 64;
    t->tags = calloc(t->cap, sizeof *t->tags);
    if (t->tags == NULL)
        return CP_ENOMEM;
    t->tags[0] = calloc(1, sizeof(tax_tag_t));
    if (t->tags[0] == NULL) {
        free(t->tags);
        t->tags = NULL;
        return CP_ENOMEM;
    }
    t->next_id = 1;
    return CP_OK;
}

void tax_free(taxonomy_t *t)
{
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->cap && t->tags; i++)
        tag_free(t->tags[i]);
    free(t->tags);
    strmap_free(&t->by_path);
    memset(t, 0, sizeof *t);
}

size_t tax_word_char(const char *s, size_t len)
{
    if (len == 0 || (unsigned char)s[0] < 0x80)
        return 0;
    ucs4_t uc = 0;
    int n = u8_mbtouc(&uc, (const uint8_t *)s, len);
    if (n <= 0 || uc == 0xfffd)
        return 0;
    /* Letters of every script except upper- and title-case (slugs have one
     * case, as [a-z] does in ASCII), combining marks (Devanagari, Thai and
     * Hangul need them) and digits; never spaces, punctuation or symbols,
     * which would make a path or name ambiguous to read back. */
    if (uc_is_general_category(uc, UC_CATEGORY_Lu) || uc_is_general_category(uc, UC_CATEGORY_Lt))
        return 0;
    if (uc_is_general_category(uc, UC_CATEGORY_L) || uc_is_general_category(uc, UC_CATEGORY_M) ||
        uc_is_general_category(uc, UC_CATEGORY_N))
        return (size_t)n;
    return 0;
}

int tax_is_nfc(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (unsigned char)s[i] < 0x80)
        i++;
    if (i == len)
        return 1; /* ASCII is always NFC */
    size_t nl = 0;
    uint8_t *n = u8_normalize(UNINORM_NFC, (const uint8_t *)s, len, NULL, &nl);
    int same = n != NULL && nl == len && memcmp(n, s, len) == 0;
    free(n);
    return same;
}

char *tax_nfc(const char *s, size_t len, size_t *outlen)
{
    size_t nl = 0;
    char *out = NULL;
    if (utf8_valid(s, len)) {
        uint8_t *n = u8_normalize(UNINORM_NFC, (const uint8_t *)s, len, NULL, &nl);
        if (n != NULL) {
            out = malloc(nl + 1);
            if (out != NULL) {
                memcpy(out, n, nl);
                out[nl] = '\0';
            }
            free(n);
        }
    } else {
        /* Invalid UTF-8 is left for the validator to name. */
        out = malloc(len + 1);
        if (out != NULL) {
            memcpy(out, s, len);
            out[len] = '\0';
        }
        nl = len;
    }
    if (out != NULL && outlen != NULL)
        *outlen = nl;
    return out;
}

cp_status tax_validate_path(const char *path, size_t len, cp_error_t *err)
{
    if (path == NULL || len == 0)
        return CP_ERR(err, CP_EINVAL, "empty tag path");
    if (len > TAX_MAX_PATH)
        return CP_ERR(err, CP_ELIMIT, "tag path \"%.64s...\" is longer than %d bytes", path,
                      TAX_MAX_PATH);
    int utf8 = utf8_valid(path, len);
    int depth = 1;
    size_t seg = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '/') {
            if (seg == 0)
                return CP_ERR(err, CP_EINVAL, "tag path \"%.*s\" has an empty segment", (int)len,
                              path);
            seg = 0;
            if (++depth > TAX_MAX_DEPTH)
                return CP_ERR(err, CP_ELIMIT, "tag path \"%.*s\" is deeper than %d levels",
                              (int)len, path, TAX_MAX_DEPTH);
            continue;
        }
        if (c >= 0x80) {
            size_t w = utf8 ? tax_word_char(path + i, len - i) : 0;
            if (w == 0) {
                if (utf8)
                    return CP_ERR(err, CP_EINVAL,
                                  "tag path \"%.*s\": the character at byte %zu is not allowed "
                                  "(segments are lower-case letters of any script, digits, "
                                  "'_' and '-')",
                                  (int)len, path, i + 1);
                return CP_ERR(err, CP_EINVAL, "tag path: byte 0x%02x at %zu is not valid UTF-8", c,
                              i + 1);
            }
            i += w - 1;
            seg++;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            if (c >= 0x20 && c < 0x7f)
                return CP_ERR(err, CP_EINVAL,
                              "tag path \"%.*s\": character '%c' at byte %zu is not allowed "
                              "(segments are [a-z0-9_-]+ or letters of any script)",
                              utf8 ? (int)len : 0, path, c, i + 1);
            return CP_ERR(err, CP_EINVAL,
                          "tag path: byte 0x%02x at %zu is not allowed (segments are "
                          "[a-z0-9_-]+ or letters of any script)",
                          c, i + 1);
        }
        seg++;
    }
    if (seg == 0)
        return CP_ERR(err, CP_EINVAL, "tag path \"%.*s\" has an empty segment", (int)len, path);
    if (!tax_is_nfc(path, len))
        return CP_ERR(err, CP_EINVAL, "tag path \"%.*s\" is not in Unicode NFC form", (int)len,
                      path);
    return CP_OK;
}

cp_status tax_validate_text(const char *what, const char *s, size_t max, cp_error_t *err)
{
    if (s == NULL)
        return CP_OK;
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return CP_ERR(err, CP_ELIMIT, "%s is longer than %zu bytes", what, max);
    if (!utf8_valid(s, n))
        return CP_ERR(err, CP_EINVAL, "%s is not valid UTF-8", what);
    return CP_OK;
}

uint32_t tax_find(const taxonomy_t *t, const char *path, size_t len)
{
    uint32_t id = 0;
    if (strmap_get(&t->by_path, path, len, &id))
        return id;
    /* Stored paths are NFC; a decomposed spelling of the same text finds
     * the same tag. */
    if (tax_is_nfc(path, len))
        return 0;
    size_t nl = 0;
    char *n = tax_nfc(path, len, &nl);
    if (n != NULL && !strmap_get(&t->by_path, n, nl, &id))
        id = 0;
    free(n);
    return n != NULL ? id : 0;
}

/* Compares one path segment with a display name: equal after NFC, ASCII
 * letters in any case. `name` is stored NFC; `seg` was normalised by the
 * caller. */
static int seg_is(const char *seg, size_t sl, const char *name)
{
    size_t nl = strlen(name);
    if (nl != sl)
        return 0;
    for (size_t i = 0; i < sl; i++) {
        unsigned char a = (unsigned char)seg[i], b = (unsigned char)name[i];
        if (a == b)
            continue;
        if (a < 0x80 && b < 0x80 && (a | 0x20) == (b | 0x20) && (a | 0x20) >= 'a' &&
            (a | 0x20) <= 'z')
            continue;
        return 0;
    }
    return 1;
}

/* The last slug segment of a tag. */
static const char *last_seg(const tax_tag_t *g)
{
    const char *s = strrchr(g->path, '/');
    return s ? s + 1 : g->path;
}

/* 1 if the segments segs[0..n) match tag `id` and its n-1 ancestors, each
 * segment by display name or by slug. */
static int chain_matches(const taxonomy_t *t, uint32_t id, const char *const *segs,
                         const size_t *lens, size_t n)
{
    for (size_t k = n; k > 0; k--) {
        const tax_tag_t *g = tax_get(t, id);
        if (g == NULL)
            return 0;
        if (!seg_is(segs[k - 1], lens[k - 1], g->name) &&
            !seg_is(segs[k - 1], lens[k - 1], last_seg(g)))
            return 0;
        id = g->parent;
    }
    return 1;
}

cp_status tax_find_display(const taxonomy_t *t, const char *path, size_t len, uint32_t *ids,
                           size_t cap, size_t *n)
{
    *n = 0;
    cp_status rc = CP_OK;
    size_t nl = 0;
    char *norm = tax_nfc(path, len, &nl);
    if (norm == NULL)
        return CP_ENOMEM;
    const char *segs[TAX_MAX_DEPTH];
    size_t lens[TAX_MAX_DEPTH], nseg = 0, start = 0;
    for (size_t i = 0; i <= nl; i++) {
        if (i < nl && norm[i] != '/')
            continue;
        if (i == start || nseg == TAX_MAX_DEPTH) {
            free(norm);
            return CP_OK; /* an empty segment or too deep: no tag has it */
        }
        segs[nseg] = norm + start;
        lens[nseg++] = i - start;
        start = i + 1;
    }
    /* Every tag whose own name (or slug) is the last segment, checked
     * upwards; a display path may start at any level ("金融/理财" finds
     * 兴趣/金融/理财), so a short one can match several tags. */
    for (uint32_t id = 1; id < t->cap; id++) {
        const tax_tag_t *g = t->tags[id];
        if (g == NULL || g->level < (int)nseg)
            continue;
        if (!chain_matches(t, id, segs, lens, nseg))
            continue;
        if (*n < cap)
            ids[*n] = id;
        (*n)++;
    }
    free(norm);
    return rc;
}

tax_tag_t *tax_get(const taxonomy_t *t, uint32_t id)
{
    return id > 0 && id < t->cap ? t->tags[id] : NULL;
}

static cp_status child_add(tax_tag_t *p, uint32_t id)
{
    if (p->nchildren == p->capchildren) {
        uint32_t nc = p->capchildren ? p->capchildren * 2 : 4;
        uint32_t *c = realloc(p->children, nc * sizeof *c);
        if (c == NULL)
            return CP_ENOMEM;
        p->children = c;
        p->capchildren = nc;
    }
    p->children[p->nchildren++] = id;
    return CP_OK;
}

static void child_del(tax_tag_t *p, uint32_t id)
{
    for (uint32_t i = 0; i < p->nchildren; i++)
        if (p->children[i] == id) {
            memmove(p->children + i, p->children + i + 1,
                    (p->nchildren - i - 1) * sizeof *p->children);
            p->nchildren--;
            return;
        }
}

static cp_status ensure_cap(taxonomy_t *t, uint32_t id)
{
    if (id < t->cap)
        return CP_OK;
    uint32_t nc = t->cap;
    while (nc <= id)
        nc *= 2;
    tax_tag_t **n = realloc(t->tags, nc * sizeof *n);
    if (n == NULL)
        return CP_ENOMEM;
    memset(n + t->cap, 0, (nc - t->cap) * sizeof *n);
    t->tags = n;
    t->cap = nc;
    return CP_OK;
}

/* Length of the parent part of a path ("a/b/c" -> 3), 0 for a top tag. */
static size_t parent_len(const char *path, size_t len)
{
    for (size_t i = len; i > 0; i--)
        if (path[i - 1] == '/')
            return i - 1;
    return 0;
}

/* Inserts a tag with a known id and parent (shared by add and load). */
static cp_status insert(taxonomy_t *t, uint32_t id, uint32_t parent, const char *path,
                        const char *name, const char *description, int64_t created, cp_error_t *err)
{
    tax_tag_t *g = NULL;
    tax_tag_t *p = parent ? tax_get(t, parent) : t->tags[0];
    if (p == NULL)
        return CP_ERR(err, CP_EINTERNAL, "tag %u: parent %u missing", id, parent);
    if (ensure_cap(t, id))
        goto nomem;
    g = calloc(1, sizeof *g);
    if (g == NULL)
        goto nomem;
    g->id = id;
    g->parent = parent;
    g->level = p->level + 1;
    g->created = created;
    size_t plen = strlen(path);
    size_t off = parent_len(path, plen);
    g->path = strdup(path);
    g->name = strdup(name ? name : path + (off ? off + 1 : 0));
    g->description = strdup(description ? description : "");
    if (!g->path || !g->name || !g->description)
        goto nomem;
    if (child_add(p, id))
        goto nomem;
    if (strmap_put(&t->by_path, path, plen, id)) {
        child_del(p, id);
        goto nomem;
    }
    t->tags[id] = g;
    t->count++;
    if (id >= t->next_id)
        t->next_id = id + 1;
    return CP_OK;
nomem:
    tag_free(g);
    return CP_ERR(err, CP_ENOMEM, "out of memory adding tag \"%s\"", path);
}

cp_status tax_add(taxonomy_t *t, const char *path, const char *name, const char *description,
                  int64_t created, uint32_t *id_out, cp_error_t *err)
{
    cp_status rc;
    char *npath = NULL, *nname = NULL;
    size_t len = 0;
    /* Paths and names are kept NFC so that every spelling of the same
     * text finds the same tag. */
    npath = tax_nfc(path, strlen(path), &len);
    nname = name ? tax_nfc(name, strlen(name), NULL) : NULL;
    if (npath == NULL || (name && nname == NULL)) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory adding tag \"%s\"", path);
        goto out;
    }
    path = npath;
    name = nname;
    if ((rc = tax_validate_path(path, len, err)))
        goto out;
    if ((rc = tax_validate_text("tag name", name, TAX_MAX_NAME, err)))
        goto out;
    if ((rc = tax_validate_text("tag description", description, TAX_MAX_DESCRIPTION, err)))
        goto out;
    if (name && name[0] == '\0') {
        rc = CP_ERR(err, CP_EINVAL, "tag \"%s\": empty name", path);
        goto out;
    }
    if (tax_find(t, path, len)) {
        rc = CP_ERR(err, CP_EEXIST, "tag \"%s\" already exists", path);
        goto out;
    }
    size_t pl = parent_len(path, len);
    uint32_t parent = 0;
    if (pl) {
        parent = tax_find(t, path, pl);
        if (parent == 0) {
            rc = CP_ERR(err, CP_ENOTFOUND, "parent \"%.*s\" of tag \"%s\" does not exist", (int)pl,
                        path, path);
            goto out;
        }
    }
    if (t->count >= TAX_MAX_TAGS || t->next_id == UINT32_MAX) {
        rc = CP_ERR(err, CP_ELIMIT, "too many tags (limit %u)", TAX_MAX_TAGS);
        goto out;
    }
    uint32_t id = t->next_id;
    if ((rc = insert(t, id, parent, path, name, description, created, err)))
        goto out;
    *id_out = id;
out:
    free(npath);
    free(nname);
    return rc;
}

cp_status tax_set_text(taxonomy_t *t, uint32_t id, const char *name, const char *description,
                       cp_error_t *err)
{
    tax_tag_t *g = tax_get(t, id);
    cp_status rc;
    if (g == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "tag %u not found", id);
    if ((rc = tax_validate_text("tag name", name, TAX_MAX_NAME, err)))
        return rc;
    if ((rc = tax_validate_text("tag description", description, TAX_MAX_DESCRIPTION, err)))
        return rc;
    if (name && name[0] == '\0')
        return CP_ERR(err, CP_EINVAL, "tag \"%s\": empty name", g->path);
    char *n = name ? tax_nfc(name, strlen(name), NULL) : NULL;
    char *d = description ? strdup(description) : NULL;
    if ((name && !n) || (description && !d)) {
        free(n);
        free(d);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (n) {
        free(g->name);
        g->name = n;
    }
    if (d) {
        free(g->description);
        g->description = d;
    }
    return CP_OK;
}

int tax_is_ancestor_or_self(const taxonomy_t *t, uint32_t a, uint32_t b)
{
    for (int guard = 0; b != 0 && guard <= TAX_MAX_DEPTH + 1; guard++) {
        if (a == b)
            return 1;
        const tax_tag_t *g = tax_get(t, b);
        if (g == NULL)
            return 0;
        b = g->parent;
    }
    return 0;
}

cp_status tax_subtree(const taxonomy_t *t, uint32_t id, uint32_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = id ? 16 : t->count + 1, len = 0, sp = 0;
    uint32_t *res = malloc(cap * sizeof *res);
    /* Explicit stack: depth is bounded but width is not. */
    uint32_t *stack = malloc((t->count + 2) * sizeof *stack);
    if (res == NULL || stack == NULL) {
        free(res);
        free(stack);
        return CP_ENOMEM;
    }
    const tax_tag_t *root = id ? tax_get(t, id) : t->tags[0];
    if (root == NULL) {
        free(stack);
        *out = res;
        return CP_OK;
    }
    if (id) {
        stack[sp++] = id;
    } else {
        for (uint32_t i = root->nchildren; i > 0; i--)
            stack[sp++] = root->children[i - 1];
    }
    while (sp) {
        uint32_t cur = stack[--sp];
        const tax_tag_t *g = tax_get(t, cur);
        if (g == NULL)
            continue;
        if (len == cap) {
            cap *= 2;
            uint32_t *r = realloc(res, cap * sizeof *r);
            if (r == NULL) {
                free(res);
                free(stack);
                return CP_ENOMEM;
            }
            res = r;
        }
        res[len++] = cur;
        for (uint32_t i = g->nchildren; i > 0 && sp < t->count + 2; i--)
            stack[sp++] = g->children[i - 1];
    }
    free(stack);
    *out = res;
    *n = len;
    return CP_OK;
}

cp_status tax_move(taxonomy_t *t, uint32_t id, const char *new_path, uint32_t **changed,
                   size_t *nchanged, cp_error_t *err)
{
    cp_status rc = CP_OK;
    uint32_t *sub = NULL;
    size_t nsub = 0;
    char **newp = NULL;
    *changed = NULL;
    *nchanged = 0;
    tax_tag_t *g = tax_get(t, id);
    if (g == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "tag %u not found", id);
    size_t len = 0;
    char *nfc = tax_nfc(new_path, strlen(new_path), &len);
    if (nfc == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    new_path = nfc;
    if ((rc = tax_validate_path(new_path, len, err)))
        goto out;
    if (strcmp(new_path, g->path) == 0)
        goto out;
    if (tax_find(t, new_path, len)) {
        rc = CP_ERR(err, CP_EEXIST, "tag \"%s\" already exists", new_path);
        goto out;
    }
    size_t pl = parent_len(new_path, len);
    uint32_t parent = 0;
    if (pl) {
        parent = tax_find(t, new_path, pl);
        if (parent == 0) {
            rc = CP_ERR(err, CP_ENOTFOUND, "new parent \"%.*s\" does not exist", (int)pl, new_path);
            goto out;
        }
        if (tax_is_ancestor_or_self(t, id, parent)) {
            rc = CP_ERR(err, CP_EINVAL, "cannot move tag \"%s\" under itself (\"%s\")", g->path,
                        new_path);
            goto out;
        }
    }
    if ((rc = tax_subtree(t, id, &sub, &nsub))) {
        rc = CP_ERR(err, rc, "out of memory");
        goto out;
    }
    const tax_tag_t *np = parent ? tax_get(t, parent) : t->tags[0];
    int shift = np->level + 1 - g->level;
    /* Check limits and build all new paths before changing anything. */
    newp = calloc(nsub, sizeof *newp);
    if (newp == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    size_t oldlen = strlen(g->path);
    for (size_t i = 0; i < nsub; i++) {
        tax_tag_t *d = tax_get(t, sub[i]);
        size_t dl = strlen(d->path) - oldlen + len;
        if (dl > TAX_MAX_PATH) {
            rc = CP_ERR(err, CP_ELIMIT, "moving would make path of \"%s\" longer than %d bytes",
                        d->path, TAX_MAX_PATH);
            goto out;
        }
        if (d->level + shift > TAX_MAX_DEPTH) {
            rc = CP_ERR(err, CP_ELIMIT, "moving would make \"%s\" deeper than %d levels", d->path,
                        TAX_MAX_DEPTH);
            goto out;
        }
        newp[i] = malloc(dl + 1);
        if (newp[i] == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(newp[i], new_path, len);
        memcpy(newp[i] + len, d->path + oldlen, strlen(d->path) - oldlen + 1);
    }
    /* Reserve the parent's child slot first: the only step that can fail
     * after this point is the map insert, which we make room for below. */
    tax_tag_t *oldp = g->parent ? tax_get(t, g->parent) : t->tags[0];
    tax_tag_t *newpar = parent ? tax_get(t, parent) : t->tags[0];
    if ((rc = child_add(newpar, id))) {
        rc = CP_ERR(err, rc, "out of memory");
        goto out;
    }
    child_del(oldp, id);
    g->parent = parent;
    for (size_t i = 0; i < nsub; i++) {
        tax_tag_t *d = tax_get(t, sub[i]);
        strmap_del(&t->by_path, d->path, strlen(d->path));
    }
    for (size_t i = 0; i < nsub; i++) {
        tax_tag_t *d = tax_get(t, sub[i]);
        free(d->path);
        d->path = newp[i];
        newp[i] = NULL;
        d->level += shift;
        if (strmap_put(&t->by_path, d->path, strlen(d->path), d->id) != CP_OK)
            rc = CP_ERR(err, CP_ENOMEM, "out of memory moving tags");
    }
    *changed = sub;
    *nchanged = nsub;
    sub = NULL;
out:
    if (newp)
        for (size_t i = 0; i < nsub; i++)
            free(newp[i]);
    free(newp);
    free(sub);
    free(nfc);
    return rc;
}

cp_status tax_remove(taxonomy_t *t, uint32_t id, cp_error_t *err)
{
    tax_tag_t *g = tax_get(t, id);
    if (g == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "tag %u not found", id);
    if (g->nchildren)
        return CP_ERR(err, CP_ECONFLICT, "tag \"%s\" has %u children", g->path, g->nchildren);
    tax_tag_t *p = g->parent ? tax_get(t, g->parent) : t->tags[0];
    if (p)
        child_del(p, id);
    strmap_del(&t->by_path, g->path, strlen(g->path));
    tag_free(g);
    t->tags[id] = NULL;
    t->count--;
    return CP_OK;
}

cp_status tax_store_put(store_txn_t *txn, const tax_tag_t *g, cp_error_t *err)
{
    json_t *j =
        json_pack("{s:I,s:s,s:s,s:s,s:I}", "parent", (json_int_t)g->parent, "path", g->path, "name",
                  g->name, "description", g->description, "created", (json_int_t)g->created);
    if (j == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory encoding tag \"%s\"", g->path);
    char *s = json_dumps_checked(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory encoding tag \"%s\"", g->path);
    unsigned char k[4];
    be32_put(k, g->id);
    cp_status rc = store_put(txn, STORE_TAGS, k, 4, s, strlen(s), err);
    free(s);
    return rc;
}

cp_status tax_store_del(store_txn_t *txn, uint32_t id, cp_error_t *err)
{
    unsigned char k[4];
    be32_put(k, id);
    return store_del(txn, STORE_TAGS, k, 4, err);
}

typedef struct loaded {
    uint32_t id, parent;
    json_t *j;
} loaded_t;

typedef struct load_ctx {
    loaded_t *items;
    size_t n, cap;
} load_ctx_t;

static cp_status collect_tag(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                             cp_error_t *err)
{
    load_ctx_t *c = ud;
    if (kl != 4)
        return CP_ERR(err, CP_EIO, "corrupt tag record key (%zu bytes)", kl);
    uint32_t id = be32_get(k);
    json_error_t je;
    json_t *j = json_loadb_checked(v, vl, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading tag records");
    json_int_t parent = -1;
    if (j == NULL || json_unpack(j, "{s:I}", "parent", &parent) != 0 || parent < 0 ||
        parent > UINT32_MAX || !json_is_string(json_object_get(j, "path")) ||
        !json_is_string(json_object_get(j, "name"))) {
        json_decref(j);
        return CP_ERR(err, CP_EIO, "corrupt record of tag %u", id);
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        loaded_t *it = realloc(c->items, nc * sizeof *it);
        if (it == NULL) {
            json_decref(j);
            return CP_ERR(err, CP_ENOMEM, "out of memory loading tags");
        }
        c->items = it;
        c->cap = nc;
    }
    c->items[c->n++] = (loaded_t){id, (uint32_t)parent, j};
    return CP_OK;
}

static int by_level(const void *a, const void *b)
{
    /* Parents before children: a path's depth is its number of '/'. */
    const loaded_t *x = a, *y = b;
    const char *px = json_string_value(json_object_get(x->j, "path"));
    const char *py = json_string_value(json_object_get(y->j, "path"));
    int dx = 0, dy = 0;
    for (; *px; px++)
        dx += *px == '/';
    for (; *py; py++)
        dy += *py == '/';
    if (dx != dy)
        return dx - dy;
    return x->id < y->id ? -1 : x->id > y->id;
}

cp_status tax_load(taxonomy_t *t, store_txn_t *txn, cp_error_t *err)
{
    load_ctx_t c = {0};
    cp_status rc = store_each(txn, STORE_TAGS, NULL, 0, collect_tag, &c, err);
    if (rc)
        goto out;
    if (c.n)
        qsort(c.items, c.n, sizeof *c.items, by_level);
    for (size_t i = 0; i < c.n; i++) {
        json_t *j = c.items[i].j;
        const char *path = json_string_value(json_object_get(j, "path"));
        const char *name = json_string_value(json_object_get(j, "name"));
        const char *desc = json_string_value(json_object_get(j, "description"));
        json_int_t created = json_integer_value(json_object_get(j, "created"));
        if (c.items[i].id == 0 || tax_get(t, c.items[i].id) ||
            (c.items[i].parent && !tax_get(t, c.items[i].parent)) ||
            tax_validate_path(path, strlen(path), NULL) != CP_OK ||
            tax_find(t, path, strlen(path))) {
            rc = CP_ERR(err, CP_EIO, "corrupt record of tag %u (\"%s\")", c.items[i].id, path);
            goto out;
        }
        if ((rc = insert(t, c.items[i].id, c.items[i].parent, path, name, desc, created, err)))
            goto out;
    }
    uint64_t next = 0;
    rc = store_meta_get_u64(txn, "next_tag_id", &next, err);
    if (rc == CP_ENOTFOUND)
        rc = CP_OK;
    else if (rc)
        goto out;
    if (next > t->next_id && next < UINT32_MAX)
        t->next_id = (uint32_t)next;
out:
    for (size_t i = 0; i < c.n; i++)
        json_decref(c.items[i].j);
    free(c.items);
    return rc;
}
