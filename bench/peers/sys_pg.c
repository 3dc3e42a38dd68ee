/*
 * sys_pg.c — PostgreSQL through libpq on loopback, the server started by
 * run.sh with its own data directory (shared_buffers, work_mem and
 * parallel workers set there; fsync off: a bulk load, not a durability
 * test).
 *
 * Two physical designs of the same data, both loaded, the best of the two
 * reported per query (the report names the winner):
 *  - relational: user_tags(user_id, tag_id) of direct tags, B-tree indexes
 *    both ways, tag_closure for descendants (sql.c);
 *  - arrays: users.tags int[] of direct tags with a GIN index; a tag
 *    predicate is `tags && '{descendants}'`.
 * Loaded with COPY FROM STDIN, indexes built after the data, then VACUUM
 * ANALYZE (visibility map for index-only scans, statistics for the
 * planner).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"

#ifdef PEERS_HAVE_PG
#include <libpq-fe.h>

typedef struct pg_ctx {
    PGconn *conn;
    int pid;
    double timeout;
} pg_ctx_t;

static int pg_exec(pg_ctx_t *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgresql: %s (%.160s)", PQresultErrorMessage(r), sql);
        rc = -1;
    }
    PQclear(r);
    return rc;
}

/* COPY `table` FROM STDIN with the rows in b (text format). */
static int pg_copy(pg_ctx_t *c, const char *table, sbuf_t *b, int last, char *err, size_t errlen)
{
    static int open;
    if (!open) {
        char sql[256];
        snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
        PGresult *r = PQexec(c->conn, sql);
        if (PQresultStatus(r) != PGRES_COPY_IN) {
            snprintf(err, errlen, "postgresql: %s", PQresultErrorMessage(r));
            PQclear(r);
            return -1;
        }
        PQclear(r);
        open = 1;
    }
    if (b->len && PQputCopyData(c->conn, b->s, (int)b->len) != 1)
        goto fail;
    b->len = 0;
    if (last) {
        open = 0;
        if (PQputCopyEnd(c->conn, NULL) != 1)
            goto fail;
        PGresult *r = PQgetResult(c->conn);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "postgresql COPY %s: %s", table, PQresultErrorMessage(r));
        PQclear(r);
        while ((r = PQgetResult(c->conn)))
            PQclear(r);
        return ok ? 0 : -1;
    }
    return 0;
fail:
    snprintf(err, errlen, "postgresql COPY %s: %s", table, PQerrorMessage(c->conn));
    return -1;
}

#define FLUSH_AT (4u << 20)

static int pg_load(peer_sys_t *s, const pop_t *p, char *err, size_t errlen)
{
    pg_ctx_t *c = s->ctx;
    sbuf_t b = {0};
    int rc = -1;
    /* The statement timeout is for queries; a 10M-user COPY or index build
     * legitimately takes minutes. */
    if (pg_exec(c, "SET statement_timeout = 0", err, errlen))
        goto out;
    if (pg_exec(c,
                "DROP TABLE IF EXISTS peers_crowd, user_tags, users, tag_closure, tags;"
                "CREATE TABLE tags(tag_id int PRIMARY KEY, path text NOT NULL, parent int, "
                "level int NOT NULL);"
                "CREATE TABLE tag_closure(ancestor int NOT NULL, descendant int NOT NULL);"
                "CREATE TABLE users(user_id int NOT NULL, age int, gender text, city text, "
                "lat float8, lon float8, member_tier text, points int, is_member bool, "
                "tags int[] NOT NULL);"
                "CREATE TABLE user_tags(user_id int NOT NULL, tag_id int NOT NULL);",
                err, errlen))
        goto out;
    for (int t = 0; t < p->ntags; t++) {
        if (p->parent[t] >= 0)
            sb_printf(&b, "%d\t%s\t%d\t%d\n", t, p->path[t], p->parent[t], p->level[t]);
        else
            sb_printf(&b, "%d\t%s\t\\N\t%d\n", t, p->path[t], p->level[t]);
    }
    if (pg_copy(c, "tags", &b, 1, err, errlen))
        goto out;
    for (int t = 0; t < p->ntags; t++)
        for (int i = 0; i < p->ndesc[t]; i++)
            sb_printf(&b, "%d\t%d\n", t, p->desc[t][i]);
    if (pg_copy(c, "tag_closure", &b, 1, err, errlen))
        goto out;
    for (uint64_t i = 0; i < p->n; i++) {
        sb_printf(&b, "%llu\t", (unsigned long long)(i + 1));
        if (p->age[i] == INT32_MIN)
            sb_printf(&b, "\\N\t");
        else
            sb_printf(&b, "%d\t", p->age[i]);
        sb_printf(&b, "%s\t", p->gender[i] < 0 ? "\\N" : p->genders.v[p->gender[i]]);
        sb_printf(&b, "%s\t", p->city[i] < 0 ? "\\N" : p->cities.v[p->city[i]]);
        if (isnan(p->lat[i]))
            sb_printf(&b, "\\N\t\\N\t");
        else
            sb_printf(&b, "%.17g\t%.17g\t", p->lat[i], p->lon[i]);
        sb_printf(&b, "%s\t", p->tier[i] < 0 ? "\\N" : p->tiers.v[p->tier[i]]);
        if (p->points[i] == INT32_MIN)
            sb_printf(&b, "\\N\t");
        else
            sb_printf(&b, "%d\t", p->points[i]);
        sb_printf(&b, "%s\t{", p->is_member[i] < 0 ? "\\N" : p->is_member[i] ? "t" : "f");
        for (uint64_t j = p->toff[i]; j < p->toff[i + 1]; j++)
            sb_printf(&b, "%s%u", j > p->toff[i] ? "," : "", p->tagv[j]);
        sb_printf(&b, "}\n");
        if (b.len > FLUSH_AT && pg_copy(c, "users", &b, 0, err, errlen))
            goto out;
    }
    if (pg_copy(c, "users", &b, 1, err, errlen))
        goto out;
    for (uint64_t i = 0; i < p->n; i++) {
        for (uint64_t j = p->toff[i]; j < p->toff[i + 1]; j++)
            sb_printf(&b, "%llu\t%u\n", (unsigned long long)(i + 1), p->tagv[j]);
        if (b.len > FLUSH_AT && pg_copy(c, "user_tags", &b, 0, err, errlen))
            goto out;
    }
    if (pg_copy(c, "user_tags", &b, 1, err, errlen))
        goto out;
    if (pg_exec(c,
                "SET maintenance_work_mem = '2GB';"
                "ALTER TABLE tag_closure ADD PRIMARY KEY (ancestor, descendant);"
                "ALTER TABLE users ADD PRIMARY KEY (user_id);"
                "ALTER TABLE user_tags ADD PRIMARY KEY (user_id, tag_id);"
                "CREATE INDEX user_tags_tag ON user_tags(tag_id, user_id);"
                "CREATE INDEX users_age ON users(age);"
                "CREATE INDEX users_lat ON users(lat);"
                "CREATE INDEX users_tags ON users USING gin (tags);",
                err, errlen) ||
        pg_exec(c, "VACUUM ANALYZE", err, errlen))
        goto out;
    char set[64];
    snprintf(set, sizeof set, "SET statement_timeout = %lld", (long long)(c->timeout * 1000));
    if (pg_exec(c, set, err, errlen))
        goto out;
    rc = 0;
out:
    sb_free(&b);
    return rc;
}

static int pg_prepare(peer_sys_t *s, const pop_t *p, const query_t *q, char *err, size_t errlen)
{
    pg_ctx_t *c = s->ctx;
    if (q->kind != Q_TGI)
        return 0;
    sbuf_t b = {0};
    sb_printf(&b, "DROP TABLE IF EXISTS peers_crowd; CREATE TABLE peers_crowd AS "
                  "SELECT u.user_id FROM users u WHERE ");
    sql_pred(p, q->expr, SQL_PG, SQLV_REL, &b);
    sb_printf(&b,
              "; ALTER TABLE peers_crowd ADD PRIMARY KEY (user_id); VACUUM ANALYZE peers_crowd");
    int rc = 0;
    /* VACUUM cannot run inside the implicit transaction of a multi-statement
     * string: split at the last statement. */
    char *v = strstr(b.s, "; VACUUM");
    *v = 0;
    rc = pg_exec(c, b.s, err, errlen) || pg_exec(c, v + 2, err, errlen);
    sb_free(&b);
    return rc ? -1 : 0;
}

static int pg_nvariants(peer_sys_t *s, const query_t *q)
{
    return q->kind == Q_TGI || sql_has_tag(q->expr) ? 2 : 1;
}

static const char *pg_variant_name(peer_sys_t *s, const query_t *q, int v)
{
    if (pg_nvariants(s, q) == 1)
        return "relational";
    return v == SQLV_ARRAY ? "int[] + GIN" : "user_tags";
}

static int pg_run(peer_sys_t *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
                  char *err, size_t errlen)
{
    pg_ctx_t *c = s->ctx;
    sbuf_t b = {0};
    uint64_t *in = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    sql_query(p, q, SQL_PG, variant, &b);
    PGresult *r = PQexec(c->conn, b.s);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (code && !strcmp(code, "57014"))
            snprintf(err, errlen, "timeout: one run took longer than %.0f s", c->timeout);
        else
            snprintf(err, errlen, "postgresql: %s", PQresultErrorMessage(r));
        goto out;
    }
    int rows = PQntuples(r);
    if (q->kind == Q_COUNT) {
        out->count = rows ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    } else if (q->kind == Q_EXPORT) {
        for (int i = 0; i < rows; i++)
            answer_id_add(out, strtoull(PQgetvalue(r, i, 0), NULL, 10));
    } else {
        if (!(in = calloc((size_t)p->ntags, sizeof *in))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        for (int i = 0; i < rows; i++) {
            int t = atoi(PQgetvalue(r, i, 0));
            if (t >= 0 && t < p->ntags)
                in[t] = strtoull(PQgetvalue(r, i, 1), NULL, 10);
        }
        for (int t = 0; t < p->ntags; t++)
            answer_tgi_add(out, t, in[t], p->count[t]);
    }
    rc = 0;
out:
    PQclear(r);
    sb_free(&b);
    free(in);
    return rc;
}

static void pg_measure(peer_sys_t *s, const pop_t *p)
{
    pg_ctx_t *c = s->ctx;
    PGresult *r = PQexec(c->conn, "SELECT pg_database_size(current_database())");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r))
        s->disk_bytes = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    s->mem_bytes = peers_pss_tree(c->pid);
    (void)p;
}

static void pg_close(peer_sys_t *s)
{
    pg_ctx_t *c = s->ctx;
    if (!c)
        return;
    if (c->conn) {
        PQclear(PQexec(c->conn, "DROP TABLE IF EXISTS peers_crowd"));
        PQfinish(c->conn);
    }
    free(c);
    s->ctx = NULL;
}

int sys_pg_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->name = "postgresql";
    pg_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    s->ctx = c;
    c->pid = o->pg_pid;
    c->timeout = o->timeout_secs;
    c->conn = PQconnectdb(o->pg_conninfo);
    if (PQstatus(c->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "postgresql connect (%s): %s", o->pg_conninfo,
                 PQerrorMessage(c->conn));
        return -1;
    }
    char set[256];
    snprintf(set, sizeof set, "SET statement_timeout = %lld; SET client_min_messages = warning",
             (long long)(o->timeout_secs * 1000));
    if (pg_exec(c, set, err, errlen))
        return -1;
    PGresult *r = PQexec(c->conn, "SELECT current_setting('server_version'), "
                                  "current_setting('shared_buffers'), current_setting('work_mem'), "
                                  "current_setting('max_parallel_workers_per_gather'), "
                                  "current_setting('jit')");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r)) {
        snprintf(s->version, sizeof s->version, "PostgreSQL %s", PQgetvalue(r, 0, 0));
        snprintf(s->notes, sizeof s->notes,
                 "libpq on loopback; shared_buffers %s, work_mem %s, %s parallel workers per "
                 "gather, jit %s; best of user_tags (B-tree) and int[] + GIN per query; "
                 "memory = PSS of the server processes",
                 PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
                 PQgetvalue(r, 0, 4));
    }
    PQclear(r);
    s->load = pg_load;
    s->prepare = pg_prepare;
    s->nvariants = pg_nvariants;
    s->variant_name = pg_variant_name;
    s->run = pg_run;
    s->measure = pg_measure;
    s->close = pg_close;
    return 0;
}
#else
int sys_pg_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->name = "postgresql";
    snprintf(err, errlen, "built without libpq (libpq-dev)");
    (void)o;
    return 1;
}
#endif
