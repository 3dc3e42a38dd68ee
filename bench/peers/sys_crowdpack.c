/*
 * sys_crowdpack.c — crowdpack through its public C API, in process: every
 * rep is cp_count on the expression text (parse, resolve, plan, evaluate),
 * as an embedding application would call it.
 *
 * Share/TGI: there is no insight API yet, so a rep is what an application
 * would do today: the crowd is created once as a static crowd (outside the
 * timed loop, like every system materialises it), then per tag one
 * cp_count("crowd:C AND tag:T"). Tag sizes |T| (the TGI denominator) come
 * from the catalogue every system keeps (crowdpack's tag counts), as for
 * all peers: a rep computes |C AND T| for every tag T.
 * Export: cp_eval + cp_iter over the ids ("uK" strings, parsed back to K
 * for the answer hash).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

#define TGI_CROWD "peers_tgi"

typedef struct cp_ctx {
    cp_db_t *db;
    char **tgi_in, **tgi_all; /* per tag expression texts */
    int ntags;
} cp_ctx_t;

static int cp_prepare(peer_sys_t *s, const pop_t *p, const query_t *q, char *err, size_t errlen)
{
    cp_ctx_t *c = s->ctx;
    cp_error_t e;
    if (q->kind != Q_TGI)
        return 0;
    (void)cp_crowd_delete(c->db, TGI_CROWD, NULL);
    if (cp_crowd_create(c->db, TGI_CROWD, q->text, CP_CROWD_STATIC, NULL, &e) != CP_OK) {
        snprintf(err, errlen, "cp_crowd_create: %s", e.message);
        return -1;
    }
    c->ntags = p->ntags;
    c->tgi_in = calloc((size_t)p->ntags, sizeof *c->tgi_in);
    c->tgi_all = calloc((size_t)p->ntags, sizeof *c->tgi_all);
    if (!c->tgi_in || !c->tgi_all)
        goto oom;
    for (int t = 0; t < p->ntags; t++) {
        size_t len = strlen(p->path[t]) + 64;
        c->tgi_in[t] = malloc(len);
        c->tgi_all[t] = malloc(len);
        if (!c->tgi_in[t] || !c->tgi_all[t])
            goto oom;
        snprintf(c->tgi_in[t], len, "crowd:%s AND tag:%s", TGI_CROWD, p->path[t]);
        snprintf(c->tgi_all[t], len, "tag:%s", p->path[t]);
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int cp_run(peer_sys_t *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
                  char *err, size_t errlen)
{
    (void)variant; /* one way of answering each query (no nvariants) */
    cp_ctx_t *c = s->ctx;
    cp_error_t e;
    cp_result_t *r = NULL;
    cp_iter_t *it = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (q->kind == Q_COUNT) {
        if (cp_count(c->db, q->text, &out->count, &e) != CP_OK)
            goto fail;
        return 0;
    }
    if (q->kind == Q_TGI) {
        for (int t = 0; t < c->ntags; t++) {
            uint64_t in;
            if (cp_count(c->db, c->tgi_in[t], &in, &e) != CP_OK)
                goto fail;
            answer_tgi_add(out, t, in, p->count[t]);
        }
        return 0;
    }
    if (cp_eval(c->db, q->text, &r, &e) != CP_OK || cp_iter_open(c->db, r, &it, &e) != CP_OK)
        goto fail;
    for (;;) {
        const char *id;
        if (cp_iter_next(it, &id, &e) != CP_OK)
            goto fail;
        if (!id)
            break;
        answer_id_add(out, strtoull(id + 1, NULL, 10));
    }
    rc = 0;
    goto out;
fail:
    snprintf(err, errlen, "%s", e.message);
out:
    cp_iter_close(it);
    cp_result_free(r);
    (void)p;
    return rc;
}

static void cp_measure(peer_sys_t *s, const pop_t *p)
{
    cp_ctx_t *c = s->ctx;
    cp_db_stats_t st = CP_DB_STATS_INIT;
    if (cp_db_stats(c->db, &st, NULL) == CP_OK) {
        s->mem_bytes = st.bitmap_bytes + st.column_bytes;
        s->disk_bytes = st.disk_bytes;
    }
    (void)p;
}

static void cp_close(peer_sys_t *s)
{
    cp_ctx_t *c = s->ctx;
    if (!c)
        return;
    for (int t = 0; t < c->ntags; t++) {
        free(c->tgi_in ? c->tgi_in[t] : NULL);
        free(c->tgi_all ? c->tgi_all[t] : NULL);
    }
    free(c->tgi_in);
    free(c->tgi_all);
    if (c->db)
        (void)cp_crowd_delete(c->db, TGI_CROWD, NULL);
    free(c);
    s->ctx = NULL;
}

int sys_crowdpack_init(peer_sys_t *s, const sys_options_t *o, cp_db_t *db)
{
    memset(s, 0, sizeof *s);
    s->name = "crowdpack";
    cp_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->db = db;
    s->ctx = c;
    snprintf(s->version, sizeof s->version, "crowdpack %s (format %u), %d query thread%s",
             CP_VERSION_STRING, cp_format_version(), o->cp_threads, o->cp_threads == 1 ? "" : "s");
    snprintf(s->notes, sizeof s->notes,
             "in process through include/crowdpack.h; load = `crowdpack demo` (generator + "
             "engine, fsync'd LMDB); memory = bitmaps + columns (cp_db_stats)");
    s->prepare = cp_prepare;
    s->run = cp_run;
    s->measure = cp_measure;
    s->close = cp_close;
    return 0;
}
