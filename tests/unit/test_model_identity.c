/* test_model_identity.c — the OneID graph: resolve/attach/merge chains,
 * lineage, unmerge (also of nested merges), delete leaving nothing behind
 * (rows and file bytes), limits and bad input, and a randomised comparison
 * against a naive union-find model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"
#include <lmdb.h>

#include "model/codec.h"
#include "model/identity.h"
#include "util/util.h"

typedef struct env {
    char dir[256];
    store_t *st;
    store_txn_t *t;
} env;

static void env_open(env *e, const char *tag)
{
    test_tmpdir(e->dir, sizeof e->dir, tag);
    cp_error_t err = {0};
    assert_int_equal(store_open(e->dir, STORE_CREATE, 1u << 28, 1, &e->st, &err), CP_OK);
    assert_int_equal(store_txn_begin(e->st, 1, &e->t, &err), CP_OK);
}

static void env_commit(env *e)
{
    cp_error_t err = {0};
    assert_int_equal(store_txn_commit(e->t, &err), CP_OK);
    assert_int_equal(store_txn_begin(e->st, 1, &e->t, &err), CP_OK);
}

static void env_close(env *e)
{
    store_txn_abort(e->t);
    store_close(e->st);
    test_rmtree(e->dir);
}

/* What the engine does with one event, without the data side: resolve,
 * allocate or merge, attach. Returns the canonical ordinal. */
static uint32_t apply_event(store_txn_t *t, const char *const *keys, size_t n, uint32_t *next_ord,
                            const char *msgid)
{
    identity_resolution_t r;
    cp_error_t err = {0};
    cp_status rc = identity_resolve(t, keys, n, &r, &err);
    if (rc)
        print_error("resolve: %s\n", err.message);
    assert_int_equal(rc, CP_OK);
    if (r.ir_new) {
        uint32_t ord = (*next_ord)++;
        assert_int_equal(identity_attach(t, ord, keys, n, &err), CP_OK);
        return ord;
    }
    for (size_t i = 0; i < r.ir_nmerges; i++) {
        const char *cause[IDENTITY_MAX_EVENT_KEYS];
        size_t nc = 0;
        for (size_t j = 0; j < n; j++)
            if (r.ir_merges[i].cause_mask & (1u << j))
                cause[nc++] = keys[j];
        char snap[64];
        snprintf(snap, sizeof snap, "snapshot of %u", r.ir_merges[i].absorbed);
        identity_merge_info_t info = {.time_ms = 1000 + (int64_t)i,
                                      .keys = cause,
                                      .nkeys = nc,
                                      .message_id = msgid,
                                      .source = "track",
                                      .snapshot = snap,
                                      .snapshot_len = strlen(snap)};
        uint64_t id = 0;
        rc = identity_record_merge(t, r.ir_merges[i].survivor, r.ir_merges[i].absorbed, &info, &id,
                                   &err);
        if (rc)
            print_error("merge: %s\n", err.message);
        assert_int_equal(rc, CP_OK);
        assert_true(id > 0);
    }
    assert_int_equal(identity_attach(t, r.ir_attach_to, keys, n, &err), CP_OK);
    return r.ir_ordinal;
}

#define EV(...) ((const char *const[]){__VA_ARGS__})
#define NEV(...) (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define APPLY(t, next, ...) apply_event((t), EV(__VA_ARGS__), NEV(__VA_ARGS__), (next), NULL)

static uint32_t lookup(store_txn_t *t, const char *key)
{
    uint32_t o = IDENTITY_NONE;
    cp_error_t err = {0};
    cp_status rc = identity_lookup(t, key, strlen(key), &o, &err);
    return rc == CP_OK ? o : IDENTITY_NONE;
}

static uint32_t owner(store_txn_t *t, const char *key)
{
    uint32_t o = IDENTITY_NONE;
    cp_error_t err = {0};
    return identity_owner(t, key, strlen(key), &o, &err) == CP_OK ? o : IDENTITY_NONE;
}

static void assert_group(store_txn_t *t, uint32_t ord, const uint32_t *want, size_t n)
{
    uint32_t *g = NULL;
    size_t gn = 0;
    cp_error_t err = {0};
    assert_int_equal(identity_group(t, ord, &g, &gn, &err), CP_OK);
    assert_int_equal(gn, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(g[i], want[i]);
    free(g);
}

static void test_resolve_chain(void **state)
{
    (void)state;
    env e;
    env_open(&e, "chain");
    uint32_t next = 0;
    cp_error_t err = {0};

    assert_int_equal(APPLY(e.t, &next, "user_id:a", "device_id:b"), 0);
    assert_int_equal(APPLY(e.t, &next, "user_id:c", "device_id:d"), 1);
    /* Known alone: same user, nothing to do. */
    identity_resolution_t r;
    assert_int_equal(identity_resolve(e.t, EV("device_id:b", "user_id:a"), 2, &r, &err), CP_OK);
    assert_false(r.ir_new);
    assert_int_equal(r.ir_ordinal, 0);
    assert_int_equal(r.ir_nmerges, 0);
    assert_int_equal(r.ir_unknown_mask, 0);

    /* b and c meet: the two groups merge into the older one. */
    assert_int_equal(identity_resolve(e.t, EV("device_id:b", "user_id:c", "email:#x"), 3, &r, &err),
                     CP_OK);
    assert_int_equal(r.ir_ordinal, 0);
    assert_int_equal(r.ir_nmerges, 1);
    assert_int_equal(r.ir_merges[0].survivor, 0);
    assert_int_equal(r.ir_merges[0].absorbed, 1);
    assert_int_equal(r.ir_merges[0].cause_mask, 3);
    assert_int_equal(r.ir_unknown_mask, 4);
    assert_int_equal(r.ir_attach_to, 0); /* two originals: the survivor */
    assert_int_equal(APPLY(e.t, &next, "device_id:b", "user_id:c", "email:#x"), 0);
    assert_int_equal(lookup(e.t, "user_id:a"), 0);
    assert_int_equal(lookup(e.t, "device_id:d"), 0);
    assert_int_equal(owner(e.t, "device_id:d"), 1);
    assert_int_equal(owner(e.t, "email:#x"), 0);
    assert_group(e.t, 1, (uint32_t[]){0, 1}, 2);

    /* Three groups at once: survivor is the oldest, steps in order. */
    assert_int_equal(APPLY(e.t, &next, "user_id:e", "device_id:f"), 2);
    assert_int_equal(APPLY(e.t, &next, "user_id:g"), 3);
    assert_int_equal(identity_resolve(e.t,
                                      EV("user_id:g", "device_id:f", "device_id:d", "user_id:h"), 4,
                                      &r, &err),
                     CP_OK);
    assert_int_equal(r.ir_ordinal, 0);
    assert_int_equal(r.ir_nmerges, 2);
    assert_int_equal(r.ir_merges[0].absorbed, 2);
    assert_int_equal(r.ir_merges[1].absorbed, 3);
    assert_int_equal(r.ir_merges[0].cause_mask, 2 | 4);
    assert_int_equal(r.ir_merges[1].cause_mask, 1 | 4);
    assert_int_equal(r.ir_unknown_mask, 8);
    assert_int_equal(APPLY(e.t, &next, "user_id:g", "device_id:f", "device_id:d", "user_id:h"), 0);
    assert_group(e.t, 3, (uint32_t[]){0, 1, 2, 3}, 4);
    assert_int_equal(lookup(e.t, "user_id:h"), 0);
    for (uint32_t o = 0; o < 4; o++) {
        uint32_t c;
        assert_int_equal(identity_canonical(e.t, o, &c, &err), CP_OK);
        assert_int_equal(c, 0);
    }
    /* A new key next to keys of one absorbed original goes with it. */
    assert_int_equal(identity_resolve(e.t, EV("user_id:e", "device_id:z"), 2, &r, &err), CP_OK);
    assert_int_equal(r.ir_ordinal, 0);
    assert_int_equal(r.ir_attach_to, 2);
    assert_int_equal(APPLY(e.t, &next, "user_id:e", "device_id:z"), 0);
    assert_int_equal(owner(e.t, "device_id:z"), 2);

    /* Duplicates on one event count once. */
    assert_int_equal(identity_resolve(e.t, EV("user_id:n", "user_id:n"), 2, &r, &err), CP_OK);
    assert_true(r.ir_new);
    assert_int_equal(r.ir_unknown_mask, 1);
    assert_int_equal(APPLY(e.t, &next, "user_id:n", "user_id:n"), 4);

    /* attach refuses keys of another user. */
    assert_int_equal(identity_attach(e.t, 4, EV("user_id:a"), 1, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "\"user_id:a\" belongs to user ordinal 0, not 4"));

    /* The merged user's identifiers, with their originals. */
    env_commit(&e);
    store_txn_t *rt = NULL;
    assert_int_equal(store_txn_begin(e.st, 0, &rt, &err), CP_OK);
    assert_int_equal(lookup(rt, "user_id:g"), 0); /* committed and readable */
    store_txn_abort(rt);
    env_close(&e);
}

typedef struct collected {
    char keys[64][IDENT_MAX_KEY + 1];
    uint32_t orig[64];
    size_t n;
} collected;

static cp_status collect_cb(void *ud, const char *key, size_t klen, uint32_t original,
                            cp_error_t *err)
{
    (void)err;
    collected *c = ud;
    assert_true(c->n < 64);
    assert_int_equal(strlen(key), klen);
    strcpy(c->keys[c->n], key);
    c->orig[c->n++] = original;
    return CP_OK;
}

static void test_lineage_and_unmerge(void **state)
{
    (void)state;
    env e;
    env_open(&e, "unmerge");
    uint32_t next = 0;
    cp_error_t err = {0};
    assert_int_equal(APPLY(e.t, &next, "user_id:a", "device_id:a1"), 0);
    assert_int_equal(APPLY(e.t, &next, "user_id:b", "device_id:b1"), 1);
    assert_int_equal(APPLY(e.t, &next, "user_id:c"), 2);
    /* 1 absorbs 2 first (M1), then 0 absorbs 1 (M2). */
    assert_int_equal(apply_event(e.t, EV("user_id:b", "user_id:c"), 2, &next, "msg-1"), 1);
    assert_int_equal(apply_event(e.t, EV("device_id:a1", "device_id:b1"), 2, &next, "msg-2"), 0);
    assert_group(e.t, 2, (uint32_t[]){0, 1, 2}, 3);

    uint64_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(identity_lineage_list(e.t, 2, &ids, &n, &err), CP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    free(ids);
    identity_lineage_t *l = NULL;
    assert_int_equal(identity_lineage_get(e.t, 2, 0, &l, &err), CP_OK);
    assert_int_equal(l->il_survivor, 0);
    assert_int_equal(l->il_absorbed, 1);
    assert_int_equal(l->il_time_ms, 1000);
    assert_int_equal(l->il_undone_ms, 0);
    assert_string_equal(l->il_message_id, "msg-2");
    assert_string_equal(l->il_source, "track");
    assert_int_equal(l->il_nkeys, 2);
    assert_string_equal(l->il_keys[0], "device_id:a1");
    assert_string_equal(l->il_keys[1], "device_id:b1");
    assert_null(l->il_snapshot);
    assert_int_equal(l->il_snapshot_len, strlen("snapshot of 1"));
    identity_lineage_free(l);
    assert_int_equal(identity_lineage_get(e.t, 99, 0, &l, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "no merge with id 99"));

    /* Keys that arrived after M2 through b's identifiers stay with b. */
    assert_int_equal(APPLY(e.t, &next, "user_id:b", "device_id:late"), 0);
    assert_int_equal(owner(e.t, "device_id:late"), 1);

    /* Undo M2: 1 comes back with 2 (its own earlier merge), a stays. */
    identity_unmerge_t u;
    assert_int_equal(identity_unmerge(e.t, 2, 5000, &u, &err), CP_OK);
    assert_int_equal(u.iu_survivor_root, 0);
    assert_int_equal(u.iu_absorbed, 1);
    assert_int_equal(u.iu_nmoved, 2);
    assert_int_equal(u.iu_moved[0], 1);
    assert_int_equal(u.iu_moved[1], 2);
    assert_int_equal(u.iu_lineage->il_snapshot_len, strlen("snapshot of 1"));
    assert_memory_equal(u.iu_lineage->il_snapshot, "snapshot of 1", strlen("snapshot of 1"));
    assert_int_equal(u.iu_lineage->il_undone_ms, 5000);
    identity_unmerge_free(&u);
    assert_int_equal(lookup(e.t, "user_id:a"), 0);
    assert_int_equal(lookup(e.t, "device_id:a1"), 0);
    assert_int_equal(lookup(e.t, "user_id:b"), 1);
    assert_int_equal(lookup(e.t, "user_id:c"), 1);
    assert_int_equal(lookup(e.t, "device_id:late"), 1);
    assert_group(e.t, 0, (uint32_t[]){0}, 1);
    assert_group(e.t, 2, (uint32_t[]){1, 2}, 2);

    /* The record stays, marked undone, without its snapshot. */
    assert_int_equal(identity_lineage_get(e.t, 2, 1, &l, &err), CP_OK);
    assert_int_equal(l->il_undone_ms, 5000);
    assert_int_equal(l->il_snapshot_len, 0);
    assert_null(l->il_snapshot);
    assert_string_equal(l->il_message_id, "msg-2");
    identity_lineage_free(l);
    assert_int_equal(identity_unmerge(e.t, 2, 0, &u, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "already undone"));
    assert_int_equal(identity_unmerge(e.t, 77, 0, &u, &err), CP_ENOTFOUND);
    assert_int_equal(identity_lineage_list(e.t, 0, &ids, &n, &err), CP_OK);
    assert_int_equal(n, 1); /* 0 still lists the undone merge */
    free(ids);

    /* Counts follow: the split groups' identifiers per side. */
    collected c = {0};
    assert_int_equal(identity_each_key(e.t, 2, 1, collect_cb, &c, &err), CP_OK);
    assert_int_equal(c.n, 4); /* b, b1, late (1) + c (2) */
    memset(&c, 0, sizeof c);
    assert_int_equal(identity_each_key(e.t, 2, 0, collect_cb, &c, &err), CP_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "user_id:c");
    assert_int_equal(c.orig[0], 2);

    /* Undo the inner merge M1 too; then a new event merges again (new id). */
    assert_int_equal(identity_unmerge(e.t, 1, 0, &u, &err), CP_OK);
    assert_int_equal(u.iu_survivor_root, 1);
    assert_int_equal(u.iu_nmoved, 1);
    identity_unmerge_free(&u);
    assert_int_equal(lookup(e.t, "user_id:c"), 2);
    assert_int_equal(APPLY(e.t, &next, "user_id:a", "user_id:c"), 0);
    assert_int_equal(identity_lineage_list(e.t, 2, &ids, &n, &err), CP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[2], 3);
    free(ids);

    /* Undo an inner merge while its tree hangs below another root. */
    assert_int_equal(APPLY(e.t, &next, "user_id:b", "user_id:a"), 0); /* 0 absorbs 1: id 4 */
    assert_group(e.t, 0, (uint32_t[]){0, 1, 2}, 3);
    assert_int_equal(identity_unmerge(e.t, 3, 0, &u, &err), CP_OK); /* 2 leaves 0's group */
    assert_int_equal(u.iu_survivor_root, 0);
    identity_unmerge_free(&u);
    assert_group(e.t, 0, (uint32_t[]){0, 1}, 2);
    assert_int_equal(lookup(e.t, "user_id:c"), 2);
    assert_int_equal(lookup(e.t, "device_id:late"), 0);
    env_close(&e);
}

static void test_bad_input_and_limits(void **state)
{
    (void)state;
    env e;
    env_open(&e, "limits");
    uint32_t next = 0;
    cp_error_t err = {0};
    identity_resolution_t r;
    assert_int_equal(identity_resolve(e.t, NULL, 0, &r, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "no identifier"));
    assert_int_equal(identity_resolve(e.t, EV("nocolon"), 1, &r, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "identifier 1"));
    assert_int_equal(identity_resolve(e.t, EV("user_id:a", "Phone:1"), 2, &r, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "identifier 2"));
    assert_int_equal(identity_resolve(e.t, EV("user_id:a", NULL), 2, &r, &err), CP_EINVAL);
    char big[IDENT_MAX_KEY + 10];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "user_id:", 8);
    assert_int_equal(identity_resolve(e.t, EV(big), 1, &r, &err), CP_ELIMIT);

    /* 33 identifiers on one event. */
    char kb[40][32];
    const char *ks[40];
    for (int i = 0; i < 40; i++) {
        snprintf(kb[i], sizeof kb[i], "device_id:d%d", i);
        ks[i] = kb[i];
    }
    assert_int_equal(identity_resolve(e.t, ks, 33, &r, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "33 identifiers, at most 32"));
    assert_int_equal(identity_attach(e.t, 0, ks, 33, &err), CP_ELIMIT);

    /* 1,000 identifiers per user, then an error (not a silent drop). */
    assert_int_equal(APPLY(e.t, &next, "user_id:big"), 0);
    static char many[1100][32];
    for (int i = 0; i < 1100; i++)
        snprintf(many[i], sizeof many[i], "anonymous_id:%d", i);
    int added = 1;
    while (added + 31 <= IDENTITY_MAX_USER_KEYS) {
        const char *ev[32] = {"user_id:big"};
        for (int j = 0; j < 31; j++)
            ev[1 + j] = many[added - 1 + j];
        assert_int_equal(apply_event(e.t, ev, 32, &next, NULL), 0);
        added += 31;
    }
    while (added < IDENTITY_MAX_USER_KEYS) {
        const char *ev[2] = {"user_id:big", many[added - 1]};
        assert_int_equal(apply_event(e.t, ev, 2, &next, NULL), 0);
        added++;
    }
    const char *ev[2] = {"user_id:big", "anonymous_id:one-too-many"};
    assert_int_equal(identity_resolve(e.t, ev, 2, &r, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "1001 identifiers (limit 1000)"));
    assert_int_equal(identity_attach(e.t, 0, ev, 2, &err), CP_ELIMIT);
    /* Merging into a full user is refused before any data moves. */
    assert_int_equal(APPLY(e.t, &next, "user_id:small"), 1);
    assert_int_equal(identity_resolve(e.t, EV("user_id:big", "user_id:small"), 2, &r, &err),
                     CP_ELIMIT);
    assert_int_equal(identity_record_merge(e.t, 0, 1, NULL, &(uint64_t){0}, &err), CP_ELIMIT);

    /* record_merge checks its arguments. */
    assert_int_equal(APPLY(e.t, &next, "user_id:x"), 2);
    assert_int_equal(identity_record_merge(e.t, 2, 2, NULL, &(uint64_t){0}, &err), CP_EINVAL);
    assert_int_equal(identity_record_merge(e.t, 1, 99, NULL, &(uint64_t){0}, &err), CP_ENOTFOUND);
    uint64_t id = 0;
    assert_int_equal(identity_record_merge(e.t, 1, 2, NULL, &id, &err), CP_OK);
    assert_int_equal(identity_record_merge(e.t, 2, 1, NULL, &id, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "merged into 1"));
    char longtext[IDENTITY_MAX_TEXT + 2];
    memset(longtext, 'm', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    assert_int_equal(APPLY(e.t, &next, "user_id:y"), 3);
    identity_merge_info_t info = {.message_id = longtext};
    assert_int_equal(identity_record_merge(e.t, 1, 3, &info, &id, &err), CP_ELIMIT);
    env_close(&e);
}

static void test_group_and_lineage_limits(void **state)
{
    (void)state;
    env e;
    env_open(&e, "glimits");
    uint32_t next = 0;
    cp_error_t err = {0};
    identity_resolution_t r;
    char k0[] = "user_id:root";
    assert_int_equal(APPLY(e.t, &next, k0), 0);
    /* Lineage: merge and undo the same pair until the list is full. */
    assert_int_equal(APPLY(e.t, &next, "user_id:flip"), 1);
    for (int i = 0; i < IDENTITY_MAX_LINEAGE; i++) {
        uint64_t id = 0;
        identity_unmerge_t u;
        assert_int_equal(identity_record_merge(e.t, 0, 1, NULL, &id, &err), CP_OK);
        assert_int_equal(identity_unmerge(e.t, id, 0, &u, &err), CP_OK);
        identity_unmerge_free(&u);
    }
    assert_int_equal(identity_resolve(e.t, EV(k0, "user_id:flip"), 2, &r, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "merge lineage records (limit 1024)"));
    assert_int_equal(identity_record_merge(e.t, 0, 1, NULL, &(uint64_t){0}, &err), CP_ELIMIT);

    /* Group: at most IDENTITY_MAX_GROUP ordinals in one user. */
    assert_int_equal(APPLY(e.t, &next, "user_id:g0"), 2);
    for (int i = 1; i < IDENTITY_MAX_GROUP; i++) {
        char k[32];
        snprintf(k, sizeof k, "user_id:g%d", i);
        assert_int_equal(APPLY(e.t, &next, k), (uint32_t)(2 + i));
        assert_int_equal(APPLY(e.t, &next, "user_id:g0", k), 2);
    }
    assert_int_equal(APPLY(e.t, &next, "user_id:extra"), 2 + IDENTITY_MAX_GROUP);
    assert_int_equal(identity_resolve(e.t, EV("user_id:g0", "user_id:extra"), 2, &r, &err),
                     CP_ELIMIT);
    assert_non_null(strstr(err.message, "257 user ordinals into one (limit 256)"));
    env_close(&e);
}

/* ----------------------------------------------------- delete leaves nothing */

static int file_contains(const char *path, const void *needle, size_t n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    int found = memmem(buf, (size_t)sz, needle, n) != NULL;
    free(buf);
    return found;
}

/* Copies the environment with LMDB's compacting copy: only live pages. */
static void compact_copy(const char *dir, char *out, size_t cap)
{
    char src[300];
    snprintf(src, sizeof src, "%s/data.mdb", dir);
    snprintf(out, cap, "%s/compact.mdb", dir);
    unlink(out);
    MDB_env *env = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_open(env, src, MDB_NOSUBDIR | MDB_RDONLY, 0644), 0);
    assert_int_equal(mdb_env_copy2(env, out, MDB_CP_COMPACT), 0);
    mdb_env_close(env);
}

typedef struct scan {
    const uint32_t *gone;
    size_t ngone;
    const char *const *needles;
    size_t nneedles;
    size_t rows;
} scan;

static int is_gone(const scan *s, uint32_t o)
{
    for (size_t i = 0; i < s->ngone; i++)
        if (s->gone[i] == o)
            return 1;
    return 0;
}

/* Every row of the identity sub-database: none may reference a deleted
 * ordinal or hold a deleted identifier's bytes. */
static cp_status scan_cb(void *ud, const void *kp, size_t kl, const void *vp, size_t vl,
                         cp_error_t *err)
{
    (void)err;
    scan *s = ud;
    const unsigned char *k = kp, *v = vp;
    s->rows++;
    for (size_t i = 0; i < s->nneedles; i++) {
        assert_null(memmem(k, kl, s->needles[i], strlen(s->needles[i])));
        assert_null(memmem(v, vl, s->needles[i], strlen(s->needles[i])));
    }
    switch (k[0]) {
    case 'k':
        assert_false(is_gone(s, be32_get(v)));
        break;
    case 'i':
    case 'n':
    case 'c':
    case 'p':
    case 'L':
        assert_false(is_gone(s, be32_get(k + 1)));
        if (k[0] == 'c' || k[0] == 'p')
            assert_false(is_gone(s, be32_get(v)));
        break;
    case 'm':
        assert_false(is_gone(s, be32_get(k + 1)));
        assert_false(is_gone(s, be32_get(k + 5)));
        break;
    case 'l':
        assert_false(is_gone(s, be32_get(v + 18)));
        assert_false(is_gone(s, be32_get(v + 22)));
        break;
    case 'N':
        break;
    default:
        fail_msg("unexpected identity row prefix %c", k[0]);
    }
    return CP_OK;
}

static void test_delete_leaves_nothing(void **state)
{
    (void)state;
    env e;
    env_open(&e, "delete");
    cp_error_t err = {0};
    ident_config_t c;
    ident_config_init(&c);
    assert_int_equal(ident_config_bind(e.t, &c, 1, &err), CP_OK);
    char kphone[IDENT_MAX_KEY + 1], kemail[IDENT_MAX_KEY + 1], kbob[IDENT_MAX_KEY + 1];
    size_t kl;
    assert_int_equal(ident_key(&c, "phone", 5, "+86 138 0013 8000", 17, kphone, &kl, &err), CP_OK);
    assert_int_equal(ident_key(&c, "email", 5, " Alice@Example.com", 18, kemail, &kl, &err), CP_OK);
    assert_int_equal(ident_key(&c, "phone", 5, "13900139000", 11, kbob, &kl, &err), CP_OK);

    uint32_t next = 0;
    /* alice (0) absorbs carol (1); bob (2) merged with alice then undone;
     * dave (3) is unrelated. */
    assert_int_equal(APPLY(e.t, &next, "user_id:alice-secret-id-7f3a", kphone), 0);
    assert_int_equal(APPLY(e.t, &next, "device_id:carol-dev-93ab", kemail), 1);
    assert_int_equal(APPLY(e.t, &next, "user_id:bob-keeps-id", kbob), 2);
    assert_int_equal(APPLY(e.t, &next, "user_id:dave"), 3);
    assert_int_equal(APPLY(e.t, &next, kphone, kemail), 0);
    assert_int_equal(APPLY(e.t, &next, kphone, "user_id:bob-keeps-id"), 0);
    uint64_t *ids;
    size_t n;
    assert_int_equal(identity_lineage_list(e.t, 2, &ids, &n, &err), CP_OK);
    assert_int_equal(n, 2); /* the group's: carol's and bob's merges */
    identity_unmerge_t u;
    assert_int_equal(identity_unmerge(e.t, ids[1], 0, &u, &err), CP_OK);
    assert_int_equal(u.iu_absorbed, 2);
    identity_unmerge_free(&u);
    free(ids);
    env_commit(&e);

    /* Raw PII never reaches the file, in any spelling. */
    char path[300];
    snprintf(path, sizeof path, "%s/data.mdb", e.dir);
    const char *raw[] = {"+8613800138000", "13800138000", "alice@example.com", "Alice@Example",
                         "13900139000"};
    for (size_t i = 0; i < CP_ARRAY_LEN(raw); i++)
        assert_false(file_contains(path, raw[i], strlen(raw[i])));
    assert_true(file_contains(path, "alice-secret-id-7f3a", 20)); /* the scan can see */
    assert_true(file_contains(path, kphone + 7, 64));

    /* Delete alice by any identifier: her group goes, bob and dave stay. */
    uint32_t who = lookup(e.t, kemail);
    assert_int_equal(who, 0);
    uint32_t *gone = NULL;
    size_t ngone = 0;
    assert_int_equal(identity_delete(e.t, who, &gone, &ngone, &err), CP_OK);
    assert_int_equal(ngone, 2);
    assert_int_equal(gone[0], 0);
    assert_int_equal(gone[1], 1);
    env_commit(&e);
    assert_int_equal(lookup(e.t, kphone), IDENTITY_NONE);
    assert_int_equal(lookup(e.t, kemail), IDENTITY_NONE);
    assert_int_equal(lookup(e.t, "user_id:alice-secret-id-7f3a"), IDENTITY_NONE);
    assert_int_equal(lookup(e.t, "user_id:bob-keeps-id"), 2);
    assert_int_equal(lookup(e.t, kbob), 2);
    assert_int_equal(lookup(e.t, "user_id:dave"), 3);
    assert_int_equal(identity_lineage_list(e.t, 2, &ids, &n, &err), CP_OK);
    assert_int_equal(n, 0); /* the undone merge touched alice: gone too */
    free(ids);
    const char *needles[] = {"alice-secret-id-7f3a", "carol-dev-93ab", kphone + 7, kemail + 7};
    scan s = {gone, ngone, needles, CP_ARRAY_LEN(needles), 0};
    assert_int_equal(store_each(e.t, STORE_IDENTITY, NULL, 0, scan_cb, &s, &err), CP_OK);
    assert_true(s.rows >= 6); /* bob and dave's rows were walked */
    free(gone);
    /* Deleting it again, or an ordinal never seen, is harmless. */
    assert_int_equal(identity_delete(e.t, 0, &gone, &ngone, &err), CP_OK);
    assert_int_equal(ngone, 1);
    free(gone);
    env_commit(&e);

    /* A compacting copy of the file (live pages only) holds none of it. */
    store_txn_abort(e.t);
    e.t = NULL;
    store_close(e.st);
    e.st = NULL;
    char copy[300];
    compact_copy(e.dir, copy, sizeof copy);
    for (size_t i = 0; i < CP_ARRAY_LEN(needles); i++) {
        if (file_contains(copy, needles[i], strlen(needles[i])))
            fail_msg("compacted copy still holds \"%s\"", needles[i]);
    }
    assert_true(file_contains(copy, "bob-keeps-id", 12));
    env_close(&e);
}

/* ------------------------------------------- against a naive union-find */

#define NK 36
#define NORD 256

typedef struct model {
    int orig[NK]; /* -1 unknown */
    struct {
        uint32_t s, a;
        int live, gone;
    } m[4096];
    size_t nm;
    uint32_t next;
} model;

static uint32_t m_root(const model *md, uint32_t x)
{
    for (int guard = 0; guard < NORD * 2; guard++) {
        int moved = 0;
        for (size_t i = 0; i < md->nm; i++)
            if (md->m[i].live && !md->m[i].gone && md->m[i].a == x) {
                x = md->m[i].s;
                moved = 1;
                break;
            }
        if (!moved)
            return x;
    }
    fail_msg("model cycle");
    return x;
}

static void check_against(store_txn_t *t, const model *md, char keys[NK][24])
{
    cp_error_t err = {0};
    static uint32_t root[NORD];
    for (uint32_t o = 0; o < md->next; o++)
        root[o] = m_root(md, o);
    for (int k = 0; k < NK; k++) {
        uint32_t want = md->orig[k] < 0 ? IDENTITY_NONE : root[md->orig[k]];
        assert_int_equal(lookup(t, keys[k]), want);
        assert_int_equal(owner(t, keys[k]),
                         md->orig[k] < 0 ? IDENTITY_NONE : (uint32_t)md->orig[k]);
    }
    for (uint32_t o = 0; o < md->next; o++) {
        uint32_t c;
        assert_int_equal(identity_canonical(t, o, &c, &err), CP_OK);
        assert_int_equal(c, root[o]);
        if (root[o] != o)
            continue; /* groups and lineage are checked once, from the root */
        uint32_t want[NORD];
        size_t nw = 0;
        want[nw++] = o;
        for (uint32_t x = 0; x < md->next; x++)
            if (x != o && root[x] == o)
                want[nw++] = x;
        assert_group(t, o, want, nw);
        if (nw > 1)
            assert_group(t, want[nw - 1], want, nw);
        /* Lineage of the group: every non-deleted merge touching it. */
        uint64_t *ids;
        size_t n, nl = 0;
        assert_int_equal(identity_lineage_list(t, o, &ids, &n, &err), CP_OK);
        for (size_t i = 0; i < md->nm; i++) {
            if (md->m[i].gone)
                continue;
            if (root[md->m[i].s] == o || root[md->m[i].a] == o) {
                assert_true(nl < n);
                assert_int_equal(ids[nl], i + 1);
                nl++;
            }
        }
        assert_int_equal(nl, n);
        free(ids);
        /* Identifier counts per group (the limit's bookkeeping). */
        collected cl = {0};
        size_t nk = 0;
        for (int k = 0; k < NK; k++)
            if (md->orig[k] >= 0 && root[md->orig[k]] == o)
                nk++;
        assert_int_equal(identity_each_key(t, o, 1, collect_cb, &cl, &err), CP_OK);
        assert_int_equal(cl.n, nk);
    }
}

static void test_random_vs_naive(void **state)
{
    (void)state;
    env e;
    env_open(&e, "random");
    cp_error_t err = {0};
    static model md;
    memset(&md, 0, sizeof md);
    char keys[NK][24];
    for (int k = 0; k < NK; k++) {
        snprintf(keys[k], sizeof keys[k], "%s:k%d", k % 3 ? "device_id" : "user_id", k);
        md.orig[k] = -1;
    }
    uint64_t rng = 20240611;
    for (int step = 0; step < 400; step++) {
        uint64_t what = rand_next(&rng) % 100;
        if (what < 75) {
            /* An event with 1..4 keys: predict, then apply. */
            size_t n = 1 + rand_next(&rng) % 4;
            const char *ev[4];
            int ki[4];
            for (size_t i = 0; i < n; i++) {
                ki[i] = (int)(rand_next(&rng) % NK);
                ev[i] = keys[ki[i]];
            }
            uint32_t roots[4], origs[4];
            size_t nr = 0, no = 0;
            for (size_t i = 0; i < n; i++) {
                if (md.orig[ki[i]] < 0)
                    continue;
                uint32_t o = (uint32_t)md.orig[ki[i]], r = m_root(&md, o);
                size_t j = 0;
                while (j < nr && roots[j] != r)
                    j++;
                if (j == nr)
                    roots[nr++] = r;
                j = 0;
                while (j < no && origs[j] != o)
                    j++;
                if (j == no)
                    origs[no++] = o;
            }
            for (size_t a = 0; a < nr; a++) /* sort (tiny) */
                for (size_t b = a + 1; b < nr; b++)
                    if (roots[b] < roots[a]) {
                        uint32_t x = roots[a];
                        roots[a] = roots[b];
                        roots[b] = x;
                    }
            identity_resolution_t r;
            assert_int_equal(identity_resolve(e.t, ev, n, &r, &err), CP_OK);
            uint32_t target;
            if (nr == 0) {
                assert_true(r.ir_new);
                target = md.next;
            } else {
                assert_false(r.ir_new);
                assert_int_equal(r.ir_ordinal, roots[0]);
                assert_int_equal(r.ir_nmerges, nr - 1);
                for (size_t j = 1; j < nr; j++) {
                    assert_int_equal(r.ir_merges[j - 1].survivor, roots[0]);
                    assert_int_equal(r.ir_merges[j - 1].absorbed, roots[j]);
                    md.m[md.nm].s = roots[0];
                    md.m[md.nm].a = roots[j];
                    md.m[md.nm].live = 1;
                    md.nm++;
                }
                target = no == 1 ? origs[0] : roots[0];
                assert_int_equal(r.ir_attach_to, target);
            }
            uint32_t got = apply_event(e.t, ev, n, &md.next, NULL);
            assert_int_equal(got, nr ? roots[0] : md.next - 1);
            for (size_t i = 0; i < n; i++)
                if (md.orig[ki[i]] < 0)
                    md.orig[ki[i]] = (int)target;
        } else if (what < 90) {
            /* Undo a random live merge. */
            size_t live[4096], nl = 0;
            for (size_t i = 0; i < md.nm; i++)
                if (md.m[i].live && !md.m[i].gone)
                    live[nl++] = i;
            if (nl == 0)
                continue;
            size_t i = live[rand_next(&rng) % nl];
            identity_unmerge_t u;
            assert_int_equal(identity_unmerge(e.t, i + 1, 0, &u, &err), CP_OK);
            assert_int_equal(u.iu_absorbed, md.m[i].a);
            assert_int_equal(u.iu_survivor_root, m_root(&md, md.m[i].s));
            identity_unmerge_free(&u);
            md.m[i].live = 0;
        } else if (what < 95) {
            /* Delete the user of a random known key. */
            int k = (int)(rand_next(&rng) % NK);
            if (md.orig[k] < 0)
                continue;
            uint32_t root = m_root(&md, (uint32_t)md.orig[k]);
            uint32_t *gone;
            size_t ng;
            assert_int_equal(identity_delete(e.t, lookup(e.t, keys[k]), &gone, &ng, &err), CP_OK);
            assert_int_equal(gone[0], root);
            size_t want = 0;
            int ingroup[NORD] = {0};
            for (uint32_t x = 0; x < md.next; x++)
                if (m_root(&md, x) == root) {
                    ingroup[x] = 1;
                    want++;
                }
            assert_int_equal(ng, want);
            free(gone);
            for (size_t i = 0; i < md.nm; i++)
                if (ingroup[md.m[i].s] || ingroup[md.m[i].a])
                    md.m[i].gone = 1;
            for (int x = 0; x < NK; x++)
                if (md.orig[x] >= 0 && ingroup[md.orig[x]])
                    md.orig[x] = -1;
        } else {
            env_commit(&e); /* what was written reads back the same */
        }
        assert_true(md.next < NORD);
        check_against(e.t, &md, keys);
    }
    assert_true(md.nm > 10);
    env_close(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_chain),
        cmocka_unit_test(test_lineage_and_unmerge),
        cmocka_unit_test(test_bad_input_and_limits),
        cmocka_unit_test(test_group_and_lineage_limits),
        cmocka_unit_test(test_delete_leaves_nothing),
        cmocka_unit_test(test_random_vs_naive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
