/* identity.c — the OneID graph in STORE_IDENTITY; see identity.h for the
 * contract and the row layout, docs/identity.md for the rules. */
#include <stdlib.h>
#include <string.h>

#include "model/codec.h"
#include "model/identity.h"
#include "util/util.h"

/* Corrupt data must not make a walk run away: no group or list read back
 * from disk may be longer than this. */
#define WALK_CAP (1u << 20)
#define LINEAGE_VERSION 1
#define LFLAG_UNDONE 1u

static void be64_put(unsigned char *p, uint64_t v)
{
    be32_put(p, (uint32_t)(v >> 32));
    be32_put(p + 4, (uint32_t)v);
}

static uint64_t be64_get(const unsigned char *p)
{
    return ((uint64_t)be32_get(p) << 32) | be32_get(p + 4);
}

static void be16_put(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static uint16_t be16_get(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* ------------------------------------------------------------ row keys */

static size_t rk_ord(unsigned char *b, char prefix, uint32_t ord)
{
    b[0] = (unsigned char)prefix;
    be32_put(b + 1, ord);
    return 5;
}

static size_t rk_key(unsigned char *b, const char *key, size_t klen)
{
    b[0] = 'k';
    memcpy(b + 1, key, klen);
    return 1 + klen;
}

static size_t rk_own(unsigned char *b, uint32_t ord, const char *key, size_t klen)
{
    rk_ord(b, 'i', ord);
    memcpy(b + 5, key, klen);
    return 5 + klen;
}

static size_t rk_member(unsigned char *b, uint32_t root, uint32_t member)
{
    rk_ord(b, 'm', root);
    be32_put(b + 5, member);
    return 9;
}

static size_t rk_lineage(unsigned char *b, uint64_t id)
{
    b[0] = 'l';
    be64_put(b + 1, id);
    return 9;
}

static size_t rk_lindex(unsigned char *b, uint32_t ord, uint64_t id)
{
    rk_ord(b, 'L', ord);
    be64_put(b + 5, id);
    return 13;
}

/* ------------------------------------------------------------- vectors */

typedef struct u32vec {
    uint32_t *v;
    size_t n, cap;
} u32vec;

typedef struct u64vec {
    uint64_t *v;
    size_t n, cap;
} u64vec;

static cp_status grow(void **v, size_t *cap, size_t need, size_t elem, cp_error_t *err)
{
    if (need <= *cap)
        return CP_OK;
    if (need > WALK_CAP)
        return CP_ERR(err, CP_EIO, "identity graph: a list has more than %u entries (corrupt?)",
                      WALK_CAP);
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*v, nc * elem);
    if (p == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory in the identity graph");
    *v = p;
    *cap = nc;
    return CP_OK;
}

static cp_status u32_push(u32vec *a, uint32_t x, cp_error_t *err)
{
    cp_status rc = grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v, err);
    if (rc == CP_OK)
        a->v[a->n++] = x;
    return rc;
}

static cp_status u64_push(u64vec *a, uint64_t x, cp_error_t *err)
{
    cp_status rc = grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v, err);
    if (rc == CP_OK)
        a->v[a->n++] = x;
    return rc;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ row access */

static cp_status get_u32(store_txn_t *t, const unsigned char *k, size_t kl, uint32_t *v,
                         cp_error_t *err)
{
    const void *p;
    size_t n;
    /* Written on every path, so no caller reads an unset value after an error. */
    *v = IDENTITY_NONE;
    cp_status rc = store_get(t, STORE_IDENTITY, k, kl, &p, &n, err);
    if (rc)
        return rc;
    if (n != 4)
        return CP_ERR(err, CP_EIO, "identity graph: row '%c' has %zu bytes, expected 4", k[0], n);
    *v = be32_get(p);
    return CP_OK;
}

static cp_status put_u32(store_txn_t *t, const unsigned char *k, size_t kl, uint32_t v,
                         cp_error_t *err)
{
    unsigned char b[4];
    be32_put(b, v);
    return store_put(t, STORE_IDENTITY, k, kl, b, 4, err);
}

static cp_status root_of(store_txn_t *t, uint32_t ord, uint32_t *root, cp_error_t *err)
{
    unsigned char k[5];
    cp_status rc = get_u32(t, k, rk_ord(k, 'c', ord), root, err);
    if (rc == CP_ENOTFOUND) {
        *root = ord;
        return CP_OK;
    }
    return rc;
}

/* A group's counts, kept on its root: identifiers and members (root excluded). */
static cp_status counts_get(store_txn_t *t, uint32_t root, uint32_t *keys, uint32_t *members,
                            cp_error_t *err)
{
    unsigned char k[5];
    const void *p;
    size_t n;
    *keys = *members = 0;
    cp_status rc = store_get(t, STORE_IDENTITY, k, rk_ord(k, 'n', root), &p, &n, err);
    if (rc == CP_ENOTFOUND)
        return CP_OK;
    if (rc)
        return rc;
    if (n != 8)
        return CP_ERR(err, CP_EIO, "identity graph: counts of ordinal %u have %zu bytes", root, n);
    *keys = be32_get(p);
    *members = be32_get((const unsigned char *)p + 4);
    return CP_OK;
}

static cp_status counts_put(store_txn_t *t, uint32_t root, uint32_t keys, uint32_t members,
                            cp_error_t *err)
{
    unsigned char k[5], v[8];
    rk_ord(k, 'n', root);
    if (keys == 0 && members == 0)
        return store_del(t, STORE_IDENTITY, k, 5, err);
    be32_put(v, keys);
    be32_put(v + 4, members);
    return store_put(t, STORE_IDENTITY, k, 5, v, 8, err);
}

static cp_status count_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)err;
    (*(size_t *)ud)++;
    return CP_OK;
}

/* Rows under prefix p+ord ('i': own identifiers, 'L': lineage index). */
static cp_status count_rows(store_txn_t *t, char prefix, uint32_t ord, size_t *n, cp_error_t *err)
{
    unsigned char k[5];
    *n = 0;
    return store_each(t, STORE_IDENTITY, k, rk_ord(k, prefix, ord), count_cb, n, err);
}

static cp_status member_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    (void)v, (void)vl;
    if (kl != 9)
        return CP_ERR(err, CP_EIO, "identity graph: member row of %zu bytes", kl);
    return u32_push(ud, be32_get((const unsigned char *)k + 5), err);
}

/* Appends the members of root's group (root excluded), ascending. */
static cp_status members_get(store_txn_t *t, uint32_t root, u32vec *out, cp_error_t *err)
{
    unsigned char k[5];
    return store_each(t, STORE_IDENTITY, k, rk_ord(k, 'm', root), member_cb, out, err);
}

/* The root and members of ord's group. */
static cp_status group_get(store_txn_t *t, uint32_t ord, u32vec *out, cp_error_t *err)
{
    uint32_t root;
    cp_status rc = root_of(t, ord, &root, err);
    if (rc || (rc = u32_push(out, root, err)))
        return rc;
    return members_get(t, root, out, err);
}

static cp_status lindex_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    (void)v, (void)vl;
    if (kl != 13)
        return CP_ERR(err, CP_EIO, "identity graph: lineage index row of %zu bytes", kl);
    return u64_push(ud, be64_get((const unsigned char *)k + 5), err);
}

/* -------------------------------------------------------- lineage codec */

static size_t text_len(const char *s)
{
    return s ? strlen(s) : 0;
}

static size_t lineage_size(size_t nkeys, char *const *keys, const char *msg, const char *src,
                           size_t snap)
{
    size_t sz = 1 + 1 + 8 + 8 + 4 + 4 + 2;
    for (size_t i = 0; i < nkeys; i++)
        sz += 2 + strlen(keys[i]);
    return sz + 2 + text_len(msg) + 2 + text_len(src) + 4 + snap;
}

static void put_text(unsigned char **p, const char *s, size_t len)
{
    be16_put(*p, (uint16_t)len);
    if (len)
        memcpy(*p + 2, s, len);
    *p += 2 + len;
}

static void lineage_encode(unsigned char *p, unsigned flags, int64_t time_ms, int64_t undone_ms,
                           uint32_t survivor, uint32_t absorbed, size_t nkeys, char *const *keys,
                           const char *msg, const char *src, const void *snap, size_t snap_len)
{
    *p++ = LINEAGE_VERSION;
    *p++ = (unsigned char)flags;
    be64_put(p, (uint64_t)time_ms);
    be64_put(p + 8, (uint64_t)undone_ms);
    be32_put(p + 16, survivor);
    be32_put(p + 20, absorbed);
    be16_put(p + 24, (uint16_t)nkeys);
    p += 26;
    for (size_t i = 0; i < nkeys; i++)
        put_text(&p, keys[i], strlen(keys[i]));
    put_text(&p, msg, text_len(msg));
    put_text(&p, src, text_len(src));
    be32_put(p, (uint32_t)snap_len);
    if (snap_len)
        memcpy(p + 4, snap, snap_len);
}

void identity_lineage_free(identity_lineage_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; l->il_keys && i < l->il_nkeys; i++)
        free(l->il_keys[i]);
    free(l->il_keys);
    free(l->il_message_id);
    free(l->il_source);
    free(l->il_snapshot);
    free(l);
}

/* Reads a length-prefixed text at *p, bounded by end. NULL-safe on out. */
static int take_text(const unsigned char **p, const unsigned char *end, char **out)
{
    if (end - *p < 2)
        return -1;
    size_t n = be16_get(*p);
    if ((size_t)(end - *p - 2) < n)
        return -1;
    char *s = malloc(n + 1);
    if (s == NULL)
        return -2;
    memcpy(s, *p + 2, n);
    s[n] = '\0';
    *out = s;
    *p += 2 + n;
    return 0;
}

/* Decodes a record read from disk: every length is checked against the
 * value's size (stored bytes are not trusted). */
static cp_status lineage_decode(uint64_t id, const unsigned char *p, size_t len, int with_snapshot,
                                identity_lineage_t **out, cp_error_t *err)
{
    cp_status rc = CP_OK;
    const unsigned char *end = p + len;
    identity_lineage_t *l = calloc(1, sizeof *l);
    *out = NULL;
    if (l == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading lineage %llu", (unsigned long long)id);
    l->il_id = id;
    if (len < 28 || p[0] != LINEAGE_VERSION)
        goto corrupt;
    unsigned flags = p[1];
    l->il_time_ms = (int64_t)be64_get(p + 2);
    l->il_undone_ms = (flags & LFLAG_UNDONE) ? (int64_t)be64_get(p + 10) : 0;
    if ((flags & LFLAG_UNDONE) && l->il_undone_ms == 0)
        l->il_undone_ms = 1; /* undone must read as undone */
    l->il_survivor = be32_get(p + 18);
    l->il_absorbed = be32_get(p + 22);
    size_t nkeys = be16_get(p + 26);
    p += 28;
    if (nkeys > IDENTITY_MAX_EVENT_KEYS)
        goto corrupt;
    l->il_keys = calloc(nkeys ? nkeys : 1, sizeof *l->il_keys);
    if (l->il_keys == NULL)
        goto nomem;
    for (size_t i = 0; i < nkeys; i++) {
        int r = take_text(&p, end, &l->il_keys[i]);
        if (r == -2)
            goto nomem;
        if (r)
            goto corrupt;
        l->il_nkeys++;
    }
    int r = take_text(&p, end, &l->il_message_id);
    if (r == 0)
        r = take_text(&p, end, &l->il_source);
    if (r == -2)
        goto nomem;
    if (r || end - p < 4)
        goto corrupt;
    size_t sl = be32_get(p);
    if ((size_t)(end - p - 4) != sl)
        goto corrupt;
    l->il_snapshot_len = sl;
    if (with_snapshot && sl) {
        if ((l->il_snapshot = malloc(sl)) == NULL)
            goto nomem;
        memcpy(l->il_snapshot, p + 4, sl);
    }
    *out = l;
    return CP_OK;
corrupt:
    rc = CP_ERR(err, CP_EIO, "identity graph: lineage record %llu is corrupt",
                (unsigned long long)id);
    identity_lineage_free(l);
    return rc;
nomem:
    rc = CP_ERR(err, CP_ENOMEM, "out of memory reading lineage %llu", (unsigned long long)id);
    identity_lineage_free(l);
    return rc;
}

cp_status identity_lineage_get(store_txn_t *t, uint64_t merge_id, int with_snapshot,
                               identity_lineage_t **out, cp_error_t *err)
{
    unsigned char k[9];
    const void *p;
    size_t n;
    *out = NULL;
    cp_status rc = store_get(t, STORE_IDENTITY, k, rk_lineage(k, merge_id), &p, &n, err);
    if (rc == CP_ENOTFOUND)
        return CP_ERR(err, CP_ENOTFOUND, "no merge with id %llu", (unsigned long long)merge_id);
    if (rc)
        return rc;
    return lineage_decode(merge_id, p, n, with_snapshot, out, err);
}

/* ------------------------------------------------------------- checks */

static cp_status check_keys(const char *const *keys, size_t n, const char *what, cp_error_t *err)
{
    if (n > IDENTITY_MAX_EVENT_KEYS)
        return CP_ERR(err, CP_ELIMIT, "%s: %zu identifiers, at most %d", what, n,
                      IDENTITY_MAX_EVENT_KEYS);
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == NULL)
            return CP_ERR(err, CP_EINVAL, "%s: identifier %zu is missing", what, i + 1);
        size_t kl = strnlen(keys[i], IDENT_MAX_KEY + 1);
        if (kl > IDENT_MAX_KEY)
            return CP_ERR(err, CP_ELIMIT, "%s: identifier %zu is longer than %d bytes", what, i + 1,
                          IDENT_MAX_KEY);
        cp_status rc = ident_key_check(keys[i], kl, err);
        if (rc) {
            error_prefix(err, "%s: identifier %zu: ", what, i + 1);
            return rc;
        }
    }
    return CP_OK;
}

static int dup_of(const char *const *keys, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(keys[j], keys[i]) == 0)
            return (int)j;
    return -1;
}

/* Keeps a user within the lineage bound before a merge adds `more` records. */
static cp_status check_lineage_room(store_txn_t *t, uint32_t ord, size_t more, cp_error_t *err)
{
    size_t have = 0;
    cp_status rc = count_rows(t, 'L', ord, &have, err);
    if (rc)
        return rc;
    if (have + more > IDENTITY_MAX_LINEAGE)
        return CP_ERR(err, CP_ELIMIT,
                      "user ordinal %u already has %zu merge lineage records (limit %d); "
                      "delete or clean up the user before merging more",
                      ord, have, IDENTITY_MAX_LINEAGE);
    return CP_OK;
}

/* ------------------------------------------------------------ resolve */

cp_status identity_resolve(store_txn_t *t, const char *const *keys, size_t n,
                           identity_resolution_t *out, cp_error_t *err)
{
    memset(out, 0, sizeof *out);
    out->ir_ordinal = out->ir_attach_to = IDENTITY_NONE;
    if (n == 0)
        return CP_ERR(err, CP_EINVAL, "event: no identifier (need at least one)");
    cp_status rc = check_keys(keys, n, "event", err);
    if (rc)
        return rc;

    uint32_t orig[IDENTITY_MAX_EVENT_KEYS] = {0}, root[IDENTITY_MAX_EVENT_KEYS] = {0};
    int known[IDENTITY_MAX_EVENT_KEYS] = {0};
    uint32_t roots[IDENTITY_MAX_EVENT_KEYS];
    size_t nroots = 0, nunknown = 0;
    for (size_t i = 0; i < n; i++) {
        int d = dup_of(keys, i);
        if (d >= 0) {
            known[i] = known[d], orig[i] = orig[d], root[i] = root[d];
            continue;
        }
        unsigned char k[1 + IDENT_MAX_KEY];
        rc = get_u32(t, k, rk_key(k, keys[i], strlen(keys[i])), &orig[i], err);
        if (rc == CP_ENOTFOUND) {
            known[i] = 0;
            out->ir_unknown_mask |= 1u << i;
            nunknown++;
            continue;
        }
        if (rc || (rc = root_of(t, orig[i], &root[i], err)))
            return rc;
        known[i] = 1;
        size_t j = 0;
        while (j < nroots && roots[j] != root[i])
            j++;
        if (j == nroots)
            roots[nroots++] = root[i];
    }
    if (nroots == 0) {
        out->ir_new = 1;
        return CP_OK;
    }
    qsort(roots, nroots, sizeof roots[0], cmp_u32);
    uint32_t survivor = roots[0];

    uint64_t total_keys = nunknown, group = 0;
    for (size_t j = 0; j < nroots; j++) {
        uint32_t kc, mc;
        if ((rc = counts_get(t, roots[j], &kc, &mc, err)))
            return rc;
        total_keys += kc;
        group += (uint64_t)mc + 1;
    }
    if (total_keys > IDENTITY_MAX_USER_KEYS)
        return CP_ERR(err, CP_ELIMIT,
                      "event: user ordinal %u would have %llu identifiers (limit %d)", survivor,
                      (unsigned long long)total_keys, IDENTITY_MAX_USER_KEYS);
    if (group > IDENTITY_MAX_GROUP)
        return CP_ERR(err, CP_ELIMIT,
                      "event: merging would join %llu user ordinals into one (limit %d)",
                      (unsigned long long)group, IDENTITY_MAX_GROUP);
    if (nroots > 1) {
        if ((rc = check_lineage_room(t, survivor, nroots - 1, err)))
            return rc;
        for (size_t j = 1; j < nroots; j++)
            if ((rc = check_lineage_room(t, roots[j], 1, err)))
                return rc;
    }

    out->ir_ordinal = survivor;
    for (size_t j = 1; j < nroots; j++) {
        identity_merge_step_t *s = &out->ir_merges[out->ir_nmerges++];
        s->survivor = survivor;
        s->absorbed = roots[j];
        for (size_t i = 0; i < n; i++)
            if (known[i] && (root[i] == survivor || root[i] == roots[j]))
                s->cause_mask |= 1u << i;
    }
    /* One original ordinal behind every known key: new keys go with it, so
     * that undoing a later merge takes them along. */
    uint32_t one = IDENTITY_NONE;
    int single = 1;
    for (size_t i = 0; i < n && single; i++) {
        if (!known[i])
            continue;
        if (one == IDENTITY_NONE)
            one = orig[i];
        else if (orig[i] != one)
            single = 0;
    }
    out->ir_attach_to = single ? one : survivor;
    return CP_OK;
}

/* ------------------------------------------------------------- attach */

cp_status identity_attach(store_txn_t *t, uint32_t ord, const char *const *keys, size_t n,
                          cp_error_t *err)
{
    if (ord == IDENTITY_NONE)
        return CP_ERR(err, CP_EINVAL, "attach: no ordinal");
    cp_status rc = check_keys(keys, n, "attach", err);
    if (rc)
        return rc;
    uint32_t root, kc, mc;
    if ((rc = root_of(t, ord, &root, err)) || (rc = counts_get(t, root, &kc, &mc, err)))
        return rc;
    int fresh[IDENTITY_MAX_EVENT_KEYS] = {0};
    uint32_t nfresh = 0;
    for (size_t i = 0; i < n; i++) {
        if (dup_of(keys, i) >= 0)
            continue;
        unsigned char k[1 + IDENT_MAX_KEY];
        uint32_t o, r;
        rc = get_u32(t, k, rk_key(k, keys[i], strlen(keys[i])), &o, err);
        if (rc == CP_ENOTFOUND) {
            fresh[i] = 1;
            nfresh++;
            continue;
        }
        if (rc || (rc = root_of(t, o, &r, err)))
            return rc;
        if (r != root)
            return CP_ERR(err, CP_ECONFLICT,
                          "identifier \"%s\" belongs to user ordinal %u, not %u (merge them "
                          "first)",
                          keys[i], r, root);
    }
    if ((uint64_t)kc + nfresh > IDENTITY_MAX_USER_KEYS)
        return CP_ERR(err, CP_ELIMIT, "user ordinal %u would have %llu identifiers (limit %d)",
                      root, (unsigned long long)kc + nfresh, IDENTITY_MAX_USER_KEYS);
    if (nfresh == 0)
        return CP_OK;
    for (size_t i = 0; i < n; i++) {
        if (!fresh[i])
            continue;
        size_t kl = strlen(keys[i]);
        unsigned char k[5 + IDENT_MAX_KEY];
        if ((rc = put_u32(t, k, rk_key(k, keys[i], kl), ord, err)) ||
            (rc = store_put(t, STORE_IDENTITY, k, rk_own(k, ord, keys[i], kl), "", 0, err)))
            return rc;
    }
    return counts_put(t, root, kc + nfresh, mc, err);
}

/* -------------------------------------------------------------- merge */

static cp_status next_merge_id(store_txn_t *t, uint64_t *id, cp_error_t *err)
{
    const void *p;
    size_t n;
    uint64_t next = 1;
    cp_status rc = store_get(t, STORE_IDENTITY, "N", 1, &p, &n, err);
    if (rc == CP_OK) {
        if (n != 8)
            return CP_ERR(err, CP_EIO, "identity graph: merge counter has %zu bytes", n);
        next = be64_get(p);
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    }
    unsigned char b[8];
    be64_put(b, next + 1);
    if ((rc = store_put(t, STORE_IDENTITY, "N", 1, b, 8, err)))
        return rc;
    *id = next;
    return CP_OK;
}

cp_status identity_record_merge(store_txn_t *t, uint32_t survivor, uint32_t absorbed,
                                const identity_merge_info_t *info, uint64_t *merge_id,
                                cp_error_t *err)
{
    static const identity_merge_info_t none = {0};
    u32vec mem = {0};
    cp_status rc = CP_OK;
    if (info == NULL)
        info = &none;
    if (survivor == absorbed || survivor == IDENTITY_NONE || absorbed == IDENTITY_NONE)
        return CP_ERR(err, CP_EINVAL, "merge: survivor %u and absorbed %u must be two users",
                      survivor, absorbed);
    if ((rc = check_keys(info->keys, info->nkeys, "merge", err)))
        return rc;
    if (text_len(info->message_id) > IDENTITY_MAX_TEXT ||
        text_len(info->source) > IDENTITY_MAX_TEXT)
        return CP_ERR(err, CP_ELIMIT, "merge: messageId or source longer than %d bytes",
                      IDENTITY_MAX_TEXT);
    if (info->snapshot_len > IDENTITY_MAX_SNAPSHOT || (info->snapshot_len && !info->snapshot))
        return CP_ERR(err, CP_ELIMIT, "merge: snapshot of %zu bytes (limit %u)", info->snapshot_len,
                      IDENTITY_MAX_SNAPSHOT);
    uint32_t r, kcs, mcs, kca, mca;
    const uint32_t sides[2] = {survivor, absorbed};
    for (int i = 0; i < 2; i++) {
        if ((rc = root_of(t, sides[i], &r, err)))
            return rc;
        if (r != sides[i])
            return CP_ERR(err, CP_ECONFLICT,
                          "merge: user ordinal %u was merged into %u; only canonical users merge",
                          sides[i], r);
    }
    if ((rc = counts_get(t, survivor, &kcs, &mcs, err)) ||
        (rc = counts_get(t, absorbed, &kca, &mca, err)))
        return rc;
    if (kcs == 0 || kca == 0)
        return CP_ERR(err, CP_ENOTFOUND, "merge: user ordinal %u has no identifiers",
                      kcs == 0 ? survivor : absorbed);
    if ((uint64_t)kcs + kca > IDENTITY_MAX_USER_KEYS)
        return CP_ERR(err, CP_ELIMIT,
                      "merge: user ordinal %u would have %llu identifiers (limit %d)", survivor,
                      (unsigned long long)kcs + kca, IDENTITY_MAX_USER_KEYS);
    if ((uint64_t)mcs + mca + 2 > IDENTITY_MAX_GROUP)
        return CP_ERR(err, CP_ELIMIT, "merge: user ordinal %u would join %llu ordinals (limit %d)",
                      survivor, (unsigned long long)mcs + mca + 2, IDENTITY_MAX_GROUP);
    if ((rc = check_lineage_room(t, survivor, 1, err)) ||
        (rc = check_lineage_room(t, absorbed, 1, err)))
        return rc;
    if ((rc = members_get(t, absorbed, &mem, err)))
        goto out;

    uint64_t id = 0;
    if ((rc = next_merge_id(t, &id, err)))
        goto out;
    int64_t when = info->time_ms ? info->time_ms : time_now_ms();
    char *const *ks = (char *const *)info->keys;
    size_t sz = lineage_size(info->nkeys, ks, info->message_id, info->source, info->snapshot_len);
    unsigned char k[13];
    void *dst;
    if ((rc = store_reserve(t, STORE_IDENTITY, k, rk_lineage(k, id), sz, &dst, err)))
        goto out;
    lineage_encode(dst, 0, when, 0, survivor, absorbed, info->nkeys, ks, info->message_id,
                   info->source, info->snapshot, info->snapshot_len);
    if ((rc = store_put(t, STORE_IDENTITY, k, rk_lindex(k, survivor, id), "", 0, err)) ||
        (rc = store_put(t, STORE_IDENTITY, k, rk_lindex(k, absorbed, id), "", 0, err)))
        goto out;

    /* The absorbed group joins the survivor's: every member's root moves. */
    for (size_t i = 0; i < mem.n; i++) {
        if ((rc = put_u32(t, k, rk_ord(k, 'c', mem.v[i]), survivor, err)) ||
            (rc = store_put(t, STORE_IDENTITY, k, rk_member(k, survivor, mem.v[i]), "", 0, err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_member(k, absorbed, mem.v[i]), err)))
            goto out;
    }
    unsigned char pv[12];
    be32_put(pv, survivor);
    be64_put(pv + 4, id);
    if ((rc = put_u32(t, k, rk_ord(k, 'c', absorbed), survivor, err)) ||
        (rc = store_put(t, STORE_IDENTITY, k, rk_member(k, survivor, absorbed), "", 0, err)) ||
        (rc = store_put(t, STORE_IDENTITY, k, rk_ord(k, 'p', absorbed), pv, 12, err)) ||
        (rc = counts_put(t, survivor, kcs + kca, mcs + mca + 1, err)) ||
        (rc = counts_put(t, absorbed, 0, 0, err)))
        goto out;
    *merge_id = id;
out:
    free(mem.v);
    return rc;
}

/* ------------------------------------------------------------- lookups */

cp_status identity_owner(store_txn_t *t, const char *key, size_t klen, uint32_t *ord,
                         cp_error_t *err)
{
    unsigned char k[1 + IDENT_MAX_KEY];
    if (klen == 0 || klen > IDENT_MAX_KEY)
        return CP_ENOTFOUND;
    return get_u32(t, k, rk_key(k, key, klen), ord, err);
}

cp_status identity_lookup(store_txn_t *t, const char *key, size_t klen, uint32_t *ord,
                          cp_error_t *err)
{
    uint32_t o;
    cp_status rc = identity_owner(t, key, klen, &o, err);
    if (rc)
        return rc;
    return root_of(t, o, ord, err);
}

cp_status identity_canonical(store_txn_t *t, uint32_t ord, uint32_t *root, cp_error_t *err)
{
    return root_of(t, ord, root, err);
}

cp_status identity_group(store_txn_t *t, uint32_t ord, uint32_t **ords, size_t *n, cp_error_t *err)
{
    u32vec g = {0};
    *ords = NULL;
    *n = 0;
    cp_status rc = group_get(t, ord, &g, err);
    if (rc) {
        free(g.v);
        return rc;
    }
    *ords = g.v;
    *n = g.n;
    return CP_OK;
}

typedef struct key_walk {
    identity_key_fn fn;
    void *ud;
    uint32_t ord;
} key_walk;

static cp_status key_walk_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                             cp_error_t *err)
{
    (void)v, (void)vl;
    key_walk *w = ud;
    char key[IDENT_MAX_KEY + 1];
    if (kl <= 5 || kl - 5 > IDENT_MAX_KEY)
        return CP_ERR(err, CP_EIO, "identity graph: identifier row of %zu bytes", kl);
    memcpy(key, (const char *)k + 5, kl - 5);
    key[kl - 5] = '\0';
    return w->fn(w->ud, key, kl - 5, w->ord, err);
}

cp_status identity_each_key(store_txn_t *t, uint32_t ord, int whole_group, identity_key_fn fn,
                            void *ud, cp_error_t *err)
{
    u32vec g = {0};
    cp_status rc = whole_group ? group_get(t, ord, &g, err) : u32_push(&g, ord, err);
    for (size_t i = 0; rc == CP_OK && i < g.n; i++) {
        key_walk w = {fn, ud, g.v[i]};
        unsigned char k[5];
        rc = store_each(t, STORE_IDENTITY, k, rk_ord(k, 'i', g.v[i]), key_walk_cb, &w, err);
    }
    free(g.v);
    return rc;
}

/* Sorted, duplicate-free lineage ids touching any ordinal of g. */
static cp_status lineage_ids(store_txn_t *t, const u32vec *g, u64vec *ids, cp_error_t *err)
{
    cp_status rc = CP_OK;
    for (size_t i = 0; rc == CP_OK && i < g->n; i++) {
        unsigned char k[5];
        rc = store_each(t, STORE_IDENTITY, k, rk_ord(k, 'L', g->v[i]), lindex_cb, ids, err);
    }
    if (rc || ids->n == 0)
        return rc;
    qsort(ids->v, ids->n, sizeof ids->v[0], cmp_u64);
    size_t o = 1;
    for (size_t i = 1; i < ids->n; i++)
        if (ids->v[i] != ids->v[o - 1])
            ids->v[o++] = ids->v[i];
    ids->n = o;
    return CP_OK;
}

cp_status identity_lineage_list(store_txn_t *t, uint32_t ord, uint64_t **ids, size_t *n,
                                cp_error_t *err)
{
    u32vec g = {0};
    u64vec v = {0};
    *ids = NULL;
    *n = 0;
    cp_status rc = group_get(t, ord, &g, err);
    if (rc == CP_OK)
        rc = lineage_ids(t, &g, &v, err);
    free(g.v);
    if (rc) {
        free(v.v);
        return rc;
    }
    *ids = v.v;
    *n = v.n;
    return CP_OK;
}

/* ------------------------------------------------------------- unmerge */

void identity_unmerge_free(identity_unmerge_t *u)
{
    if (u == NULL)
        return;
    identity_lineage_free(u->iu_lineage);
    free(u->iu_moved);
    memset(u, 0, sizeof *u);
}

/* Identifiers of the ordinals of g whose flag in[] equals want. */
static cp_status sum_keys(store_txn_t *t, const u32vec *g, const unsigned char *in, int want,
                          uint32_t *total, cp_error_t *err)
{
    *total = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (in[i] != want)
            continue;
        size_t c;
        cp_status rc = count_rows(t, 'i', g->v[i], &c, err);
        if (rc)
            return rc;
        *total += (uint32_t)c;
    }
    return CP_OK;
}

cp_status identity_unmerge(store_txn_t *t, uint64_t merge_id, int64_t now_ms,
                           identity_unmerge_t *out, cp_error_t *err)
{
    identity_lineage_t *l = NULL;
    u32vec g = {0};
    unsigned char *in = NULL;
    memset(out, 0, sizeof *out);
    cp_status rc = identity_lineage_get(t, merge_id, 1, &l, err);
    if (rc)
        return rc;
    if (l->il_undone_ms) {
        rc = CP_ERR(err, CP_ECONFLICT, "merge %llu was already undone",
                    (unsigned long long)merge_id);
        goto out;
    }
    uint32_t s = l->il_survivor, a = l->il_absorbed, root;
    unsigned char k[13];
    const void *p;
    size_t n;
    rc = store_get(t, STORE_IDENTITY, k, rk_ord(k, 'p', a), &p, &n, err);
    if (rc == CP_ENOTFOUND ||
        (rc == CP_OK &&
         (n != 12 || be32_get(p) != s || be64_get((const unsigned char *)p + 4) != merge_id))) {
        rc = CP_ERR(err, CP_EIO,
                    "identity graph: merge %llu is live but ordinal %u does not point at %u "
                    "through it (corrupt)",
                    (unsigned long long)merge_id, a, s);
        goto out;
    }
    if (rc || (rc = root_of(t, s, &root, err)) || (rc = group_get(t, root, &g, err)))
        goto out;

    /* Which members hang below `a` in the merge tree: they leave with it.
     * g.v[0] is the root, never below a. Walks are bounded by the group. */
    if ((in = calloc(g.n, 1)) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory undoing merge %llu",
                    (unsigned long long)merge_id);
        goto out;
    }
    size_t nin = 0;
    for (size_t i = 1; i < g.n; i++) {
        uint32_t y = g.v[i];
        for (size_t step = 0; step <= g.n; step++) {
            if (y == a) {
                in[i] = 1;
                nin++;
                break;
            }
            rc = store_get(t, STORE_IDENTITY, k, rk_ord(k, 'p', y), &p, &n, err);
            if (rc == CP_ENOTFOUND) {
                rc = CP_OK;
                break;
            }
            if (rc)
                goto out;
            if (n != 12) {
                rc = CP_ERR(err, CP_EIO, "identity graph: parent row of %u is corrupt", y);
                goto out;
            }
            y = be32_get(p);
        }
    }

    if ((rc = store_del(t, STORE_IDENTITY, k, rk_ord(k, 'p', a), err)) ||
        (rc = store_del(t, STORE_IDENTITY, k, rk_ord(k, 'c', a), err)) ||
        (rc = store_del(t, STORE_IDENTITY, k, rk_member(k, root, a), err)))
        goto out;
    for (size_t i = 1; i < g.n; i++) {
        if (!in[i] || g.v[i] == a)
            continue;
        if ((rc = put_u32(t, k, rk_ord(k, 'c', g.v[i]), a, err)) ||
            (rc = store_put(t, STORE_IDENTITY, k, rk_member(k, a, g.v[i]), "", 0, err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_member(k, root, g.v[i]), err)))
            goto out;
    }
    uint32_t keys_root, keys_a;
    if ((rc = sum_keys(t, &g, in, 0, &keys_root, err)) ||
        (rc = sum_keys(t, &g, in, 1, &keys_a, err)) ||
        (rc = counts_put(t, root, keys_root, (uint32_t)(g.n - nin - 1), err)) ||
        (rc = counts_put(t, a, keys_a, (uint32_t)(nin - 1), err)))
        goto out;

    /* Mark the record undone, without its snapshot (handed back below). */
    int64_t when = now_ms ? now_ms : time_now_ms();
    size_t sz = lineage_size(l->il_nkeys, l->il_keys, l->il_message_id, l->il_source, 0);
    void *dst;
    if ((rc = store_reserve(t, STORE_IDENTITY, k, rk_lineage(k, merge_id), sz, &dst, err)))
        goto out;
    lineage_encode(dst, LFLAG_UNDONE, l->il_time_ms, when, s, a, l->il_nkeys, l->il_keys,
                   l->il_message_id, l->il_source, NULL, 0);
    l->il_undone_ms = when;

    out->iu_moved = malloc(nin * sizeof *out->iu_moved);
    if (out->iu_moved == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory undoing merge %llu",
                    (unsigned long long)merge_id);
        goto out;
    }
    out->iu_moved[out->iu_nmoved++] = a;
    for (size_t i = 1; i < g.n; i++)
        if (in[i] && g.v[i] != a)
            out->iu_moved[out->iu_nmoved++] = g.v[i];
    out->iu_lineage = l;
    out->iu_survivor_root = root;
    out->iu_absorbed = a;
    l = NULL;
out:
    identity_lineage_free(l);
    free(g.v);
    free(in);
    if (rc)
        identity_unmerge_free(out);
    return rc;
}

/* -------------------------------------------------------------- delete */

static cp_status own_key_cb(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                            cp_error_t *err)
{
    (void)v, (void)vl;
    if (kl <= 5 || kl - 5 > IDENT_MAX_KEY)
        return CP_ERR(err, CP_EIO, "identity graph: identifier row of %zu bytes", kl);
    unsigned char len[2];
    be16_put(len, (uint16_t)(kl - 5));
    buf_t *b = ud;
    if (buf_append(b, len, 2) || buf_append(b, (const char *)k + 5, kl - 5))
        return CP_ERR(err, CP_ENOMEM, "out of memory deleting a user's identifiers");
    return CP_OK;
}

cp_status identity_delete(store_txn_t *t, uint32_t ord, uint32_t **ords, size_t *n, cp_error_t *err)
{
    u32vec g = {0};
    u64vec ids = {0};
    buf_t keys;
    buf_init(&keys, 0);
    identity_lineage_t *l = NULL;
    unsigned char k[5 + IDENT_MAX_KEY];
    *ords = NULL;
    *n = 0;
    cp_status rc = group_get(t, ord, &g, err);
    if (rc || (rc = lineage_ids(t, &g, &ids, err)))
        goto out;

    /* Lineage first: a record also sits in its other side's index. */
    for (size_t i = 0; i < ids.n; i++) {
        rc = identity_lineage_get(t, ids.v[i], 0, &l, err);
        if (rc == CP_ENOTFOUND) {
            rc = CP_OK; /* index without record: drop the index rows below */
            continue;
        }
        if (rc)
            goto out;
        if ((rc = store_del(t, STORE_IDENTITY, k, rk_lindex(k, l->il_survivor, ids.v[i]), err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_lindex(k, l->il_absorbed, ids.v[i]), err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_lineage(k, ids.v[i]), err)))
            goto out;
        identity_lineage_free(l);
        l = NULL;
    }
    for (size_t i = 0; i < g.n; i++) {
        uint32_t x = g.v[i];
        buf_reset(&keys);
        if ((rc = store_each(t, STORE_IDENTITY, k, rk_ord(k, 'i', x), own_key_cb, &keys, err)))
            goto out;
        for (size_t o = 0; o + 2 <= keys.len;) {
            size_t kl = be16_get((const unsigned char *)keys.data + o);
            if ((rc = store_del(t, STORE_IDENTITY, k, rk_key(k, keys.data + o + 2, kl), err)))
                goto out;
            o += 2 + kl;
        }
        if ((rc = store_del_prefix(t, STORE_IDENTITY, k, rk_ord(k, 'i', x), err)) ||
            (rc = store_del_prefix(t, STORE_IDENTITY, k, rk_ord(k, 'L', x), err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_ord(k, 'c', x), err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_ord(k, 'p', x), err)) ||
            (rc = store_del(t, STORE_IDENTITY, k, rk_ord(k, 'n', x), err)))
            goto out;
    }
    if ((rc = store_del_prefix(t, STORE_IDENTITY, k, rk_ord(k, 'm', g.v[0]), err)))
        goto out;
    *ords = g.v;
    *n = g.n;
    g.v = NULL;
out:
    identity_lineage_free(l);
    buf_free(&keys);
    free(g.v);
    free(ids.v);
    return rc;
}
