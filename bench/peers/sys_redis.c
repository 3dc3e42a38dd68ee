/*
 * sys_redis.c — Redis bitmaps, the usual home-made DMP: one bitmap per tag
 * (effective members: a tag's bitmap holds its descendants' users, as such
 * a DMP would precompute them) and one per value of the enum/bool
 * attributes and of age. A query is a pipeline of BITOP AND/OR/NOT into
 * temporary keys and one BITCOUNT, all server-side, sent through hiredis
 * over loopback. User K is bit K-1.
 *
 * Loading: the bitmaps are built client-side and sent with SETRANGE in
 * 1 MiB pieces (the bulk equivalent of SETBIT: ~300 million SETBITs at 10M
 * users would measure the network, not Redis). Every key is written to the
 * full length so that BITOP NOT does not flip bits past the shortest key.
 *
 * Skipped: geo radius. Redis GEO stores 52-bit geohashes (coordinates
 * quantised to ~0.6 m) and measures with its own Earth radius (6372797.56
 * m), so its set differs from the exact haversine at the boundary and
 * could not pass the equality check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

#ifdef PEERS_HAVE_REDIS
#include <hiredis/hiredis.h>

typedef struct redis_ctx {
    redisContext *rc;
    int pid;
    int ntmp;
    int age_lo, age_hi; /* ages loaded as a:<age> */
} redis_ctx_t;

static unsigned char rev8(unsigned char b)
{
    b = (unsigned char)((b & 0xF0) >> 4 | (b & 0x0F) << 4);
    b = (unsigned char)((b & 0xCC) >> 2 | (b & 0x33) << 2);
    return (unsigned char)((b & 0xAA) >> 1 | (b & 0x55) << 1);
}

/* Reads n pending replies; the last integer reply into *last (may be NULL). */
static int drain(redis_ctx_t *c, int n, long long *last, redisReply **keep, char *err,
                 size_t errlen)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->rc, (void **)&r) != REDIS_OK || !r) {
            snprintf(err, errlen, "redis: %s", c->rc->errstr);
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "redis: %s", r->str);
            rc = -1;
        } else if (r->type == REDIS_REPLY_INTEGER && last)
            *last = r->integer;
        if (keep && i == n - 1)
            *keep = r;
        else
            freeReplyObject(r);
    }
    return rc;
}

/* Sends one bitmap (Redis bit order) as SETRANGE pieces. */
static int put_bitmap(redis_ctx_t *c, const char *key, const unsigned char *bytes, size_t len,
                      char *err, size_t errlen)
{
    const size_t piece = 1u << 20;
    int n = 0;
    redisAppendCommand(c->rc, "DEL %s", key);
    n++;
    for (size_t off = 0; off < len; off += piece, n++)
        redisAppendCommand(c->rc, "SETRANGE %s %lld %b", key, (long long)off, bytes + off,
                           len - off < piece ? len - off : piece);
    return drain(c, n, NULL, NULL, err, errlen);
}

static void words_to_redis(const uint64_t *w, uint64_t nbits, unsigned char *out)
{
    size_t nbytes = (nbits + 7) / 8;
    for (size_t i = 0; i < nbytes; i++)
        out[i] = rev8((unsigned char)(w[i / 8] >> (8 * (i % 8))));
}

static int put_values(redis_ctx_t *c, const pop_t *p, const char *prefix, int nvals,
                      const char *const *names, int (*value_of)(const pop_t *, uint64_t),
                      unsigned char *scratch, char *err, size_t errlen)
{
    size_t nbytes = (p->n + 7) / 8;
    unsigned char *bufs = calloc((size_t)nvals, nbytes);
    int rc = -1;
    if (!bufs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (uint64_t i = 0; i < p->n; i++) {
        int v = value_of(p, i);
        if (v >= 0 && v < nvals)
            bufs[(size_t)v * nbytes + i / 8] |= (unsigned char)(0x80 >> (i % 8));
    }
    for (int v = 0; v < nvals; v++) {
        char key[256];
        snprintf(key, sizeof key, "%s:%s", prefix, names[v]);
        if (put_bitmap(c, key, bufs + (size_t)v * nbytes, nbytes, err, errlen))
            goto out;
    }
    rc = 0;
out:
    free(bufs);
    (void)scratch;
    return rc;
}

static int v_gender(const pop_t *p, uint64_t i)
{
    return p->gender[i];
}
static int v_city(const pop_t *p, uint64_t i)
{
    return p->city[i];
}
static int v_tier(const pop_t *p, uint64_t i)
{
    return p->tier[i];
}
static int v_member(const pop_t *p, uint64_t i)
{
    return p->is_member[i];
}
static int g_age_lo;
static int v_age(const pop_t *p, uint64_t i)
{
    return p->age[i] == INT32_MIN ? -1 : p->age[i] - g_age_lo;
}

static int redis_load(peer_sys_t *s, const pop_t *p, char *err, size_t errlen)
{
    redis_ctx_t *c = s->ctx;
    size_t nbytes = (p->n + 7) / 8;
    unsigned char *buf = malloc(nbytes + 8);
    int rc = -1;
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    redisReply *r = redisCommand(c->rc, "FLUSHALL");
    freeReplyObject(r);
    for (int t = 0; t < p->ntags; t++) {
        char key[32];
        snprintf(key, sizeof key, "t:%d", t);
        words_to_redis(p->dense[t], p->n, buf);
        if (put_bitmap(c, key, buf, nbytes, err, errlen))
            goto out;
    }
    words_to_redis(p->all, p->n, buf);
    if (put_bitmap(c, "all", buf, nbytes, err, errlen))
        goto out;
    c->age_lo = INT32_MAX;
    c->age_hi = INT32_MIN;
    for (uint64_t i = 0; i < p->n; i++)
        if (p->age[i] != INT32_MIN) {
            if (p->age[i] < c->age_lo)
                c->age_lo = p->age[i];
            if (p->age[i] > c->age_hi)
                c->age_hi = p->age[i];
        }
    if (c->age_lo <= c->age_hi) {
        int nv = c->age_hi - c->age_lo + 1;
        char **names = calloc((size_t)nv, sizeof *names);
        char *store = calloc((size_t)nv, 16);
        if (!names || !store) {
            free(names);
            free(store);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        for (int v = 0; v < nv; v++) {
            names[v] = store + 16 * v;
            snprintf(names[v], 16, "%d", c->age_lo + v);
        }
        g_age_lo = c->age_lo;
        int bad = put_values(c, p, "age", nv, (const char *const *)names, v_age, buf, err, errlen);
        free(names);
        free(store);
        if (bad)
            goto out;
    }
    static const char *const bools[] = {"false", "true"};
    if (put_values(c, p, "gender", p->genders.n, (const char *const *)p->genders.v, v_gender, buf,
                   err, errlen) ||
        put_values(c, p, "city", p->cities.n, (const char *const *)p->cities.v, v_city, buf, err,
                   errlen) ||
        put_values(c, p, "member_tier", p->tiers.n, (const char *const *)p->tiers.v, v_tier, buf,
                   err, errlen) ||
        put_values(c, p, "is_member", 2, bools, v_member, buf, err, errlen))
        goto out;
    rc = 0;
out:
    free(buf);
    return rc;
}

static const char *redis_skip(peer_sys_t *s, const query_t *q)
{
    const node_t *st[64];
    int n = 0;
    st[n++] = q->expr;
    while (n) {
        const node_t *x = st[--n];
        if (x->k == N_NEAR)
            return "GEO is quantised (52-bit geohash, own Earth radius): answers would differ";
        for (int i = 0; i < x->n && n < 64; i++)
            st[n++] = x->kid[i];
    }
    return NULL;
}

/* Appends the commands computing node n; returns its key in out and
 * the number of commands appended. */
static int emit(redis_ctx_t *c, const node_t *n, char *out, size_t len)
{
    char keys[NODE_MAX_KIDS][64];
    const char *argv[NODE_MAX_KIDS + 3];
    int cmds = 0;
    switch (n->k) {
    case N_ALL:
        snprintf(out, len, "all");
        return 0;
    case N_TAG:
        snprintf(out, len, "t:%d", n->tag);
        return 0;
    case N_AGE: {
        snprintf(out, len, "tmp:%d", c->ntmp++);
        int lo = (int)(n->lo > c->age_lo ? n->lo : c->age_lo);
        int hi = (int)(n->hi < c->age_hi ? n->hi : c->age_hi);
        int k = 0;
        const char *av[256];
        char names[256][16];
        av[k++] = "BITOP";
        av[k++] = "OR";
        av[k++] = out;
        for (int a = lo; a <= hi && k < 256; a++) {
            snprintf(names[k], sizeof names[k], "age:%d", a);
            av[k] = names[k];
            k++;
        }
        if (k == 3)
            av[k++] = "no-such-key";
        redisAppendCommandArgv(c->rc, k, av, NULL);
        return 1;
    }
    case N_NEAR:
        return -1;
    case N_NOT: {
        char sub[64], tmp[64];
        cmds += emit(c, n->kid[0], sub, sizeof sub);
        snprintf(tmp, sizeof tmp, "tmp:%d", c->ntmp++);
        redisAppendCommand(c->rc, "BITOP NOT %s %s", tmp, sub);
        snprintf(out, len, "tmp:%d", c->ntmp++);
        redisAppendCommand(c->rc, "BITOP AND %s %s all", out, tmp);
        return cmds + 2;
    }
    case N_AND:
    case N_OR: {
        int k = 0;
        argv[k++] = "BITOP";
        argv[k++] = n->k == N_AND ? "AND" : "OR";
        snprintf(out, len, "tmp:%d", c->ntmp++);
        argv[k++] = out;
        for (int i = 0; i < n->n; i++) {
            const node_t *x = n->kid[i];
            if (n->k == N_AND && x->k == N_NOT) {
                /* ANDed with positive operands: NOT alone is enough. */
                char sub[64];
                cmds += emit(c, x->kid[0], sub, sizeof sub);
                snprintf(keys[i], sizeof keys[i], "tmp:%d", c->ntmp++);
                redisAppendCommand(c->rc, "BITOP NOT %s %s", keys[i], sub);
                cmds++;
            } else
                cmds += emit(c, x, keys[i], sizeof keys[i]);
            argv[k++] = keys[i];
        }
        redisAppendCommandArgv(c->rc, k, argv, NULL);
        return cmds + 1;
    }
    }
    return -1;
}

static int redis_prepare(peer_sys_t *s, const pop_t *p, const query_t *q, char *err, size_t errlen)
{
    redis_ctx_t *c = s->ctx;
    char key[64];
    if (q->kind != Q_TGI)
        return 0;
    c->ntmp = 0;
    int n = emit(c, q->expr, key, sizeof key);
    redisAppendCommand(c->rc, "COPY %s crowd REPLACE", key);
    return drain(c, n + 1, NULL, NULL, err, errlen);
}

static int redis_run(peer_sys_t *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
                     char *err, size_t errlen)
{
    redis_ctx_t *c = s->ctx;
    char key[64];
    long long v = 0;
    memset(out, 0, sizeof *out);
    c->ntmp = 0;
    if (q->kind == Q_TGI) {
        int n = 0;
        for (int t = 0; t < p->ntags; t++) {
            redisAppendCommand(c->rc, "BITOP AND tmp:tgi crowd t:%d", t);
            redisAppendCommand(c->rc, "BITCOUNT tmp:tgi");
            n += 2;
        }
        for (int t = 0; t < p->ntags; t++) {
            redisReply *r = NULL;
            if (drain(c, 2, &v, NULL, err, errlen))
                return -1;
            answer_tgi_add(out, t, (uint64_t)v, p->count[t]);
            (void)r;
        }
        (void)n;
        return 0;
    }
    int n = emit(c, q->expr, key, sizeof key);
    if (n < 0) {
        snprintf(err, errlen, "query not expressible in Redis bitmaps");
        return -1;
    }
    if (q->kind == Q_COUNT) {
        redisAppendCommand(c->rc, "BITCOUNT %s", key);
        if (drain(c, n + 1, &v, NULL, err, errlen))
            return -1;
        out->count = (uint64_t)v;
        return 0;
    }
    redisReply *r = NULL;
    redisAppendCommand(c->rc, "GET %s", key);
    if (drain(c, n + 1, NULL, &r, err, errlen))
        return -1;
    if (r->type == REDIS_REPLY_STRING)
        for (size_t i = 0; i < r->len; i++)
            for (unsigned b = (unsigned char)r->str[i]; b; b &= b - 1) {
                unsigned bit = (unsigned)__builtin_ctz(b); /* bit 7 is the byte's first user */
                answer_id_add(out, (uint64_t)i * 8 + (7 - bit) + 1);
            }
    freeReplyObject(r);
    return 0;
}

static void redis_measure(peer_sys_t *s, const pop_t *p)
{
    redis_ctx_t *c = s->ctx;
    redisReply *r = redisCommand(c->rc, "DEL crowd tmp:tgi");
    freeReplyObject(r);
    for (int i = 0; i < 64; i++) {
        r = redisCommand(c->rc, "DEL tmp:%d", i);
        freeReplyObject(r);
    }
    r = redisCommand(c->rc, "INFO memory");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *m = strstr(r->str, "used_memory:");
        if (m)
            s->mem_bytes = strtoull(m + 12, NULL, 10);
    }
    freeReplyObject(r);
    s->disk_bytes = 0;
    (void)p;
}

static void redis_close(peer_sys_t *s)
{
    redis_ctx_t *c = s->ctx;
    if (!c)
        return;
    if (c->rc)
        redisFree(c->rc);
    free(c);
    s->ctx = NULL;
}

int sys_redis_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->name = "redis";
    redis_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    s->ctx = c;
    c->pid = o->redis_pid;
    char host[256];
    int port = 6379;
    snprintf(host, sizeof host, "%s", o->redis_addr);
    char *colon = strrchr(host, ':');
    if (colon) {
        *colon = 0;
        port = atoi(colon + 1);
    }
    c->rc = redisConnect(host, port);
    if (!c->rc || c->rc->err) {
        snprintf(err, errlen, "redis connect %s: %s", o->redis_addr,
                 c->rc ? c->rc->errstr : "out of memory");
        return -1;
    }
    redisReply *r = redisCommand(c->rc, "INFO server");
    const char *v = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
    if (v) {
        int n = (int)strcspn(v + 14, "\r\n");
        snprintf(s->version, sizeof s->version, "Redis %.*s", n, v + 14);
    }
    freeReplyObject(r);
    snprintf(s->notes, sizeof s->notes,
             "hiredis over loopback, pipelined BITOP + BITCOUNT; no persistence (save '', "
             "appendonly no); bitmaps per tag (effective), per age value and per value of "
             "gender, city, member_tier, is_member; memory = used_memory");
    s->load = redis_load;
    s->skip = redis_skip;
    s->prepare = redis_prepare;
    s->run = redis_run;
    s->measure = redis_measure;
    s->close = redis_close;
    return 0;
}
#else
int sys_redis_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->name = "redis";
    snprintf(err, errlen, "built without hiredis (libhiredis-dev)");
    (void)o;
    return 1;
}
#endif
