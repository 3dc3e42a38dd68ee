/*
 * sys_sqlite.c — SQLite, the embedded baseline, in process, with the
 * relational schema of sql.h. Loaded with prepared inserts in one
 * transaction (journal off, synchronous off: a bulk load, not a
 * durability test), indexes built after the data, then ANALYZE. Queries
 * run with a 2 GB page cache; a run longer than the timeout is
 * interrupted and reported as such. Geo: the exact test is a registered C
 * function, hav_m(), with crowdpack's formula — SQLite has no built-in
 * trigonometry we can rely on across builds.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"

typedef struct lite_ctx {
    sqlite3 *db;
    const char *path;
    double deadline;
    double timeout;
} lite_ctx_t;

static void hav_fn(sqlite3_context *ctx, int argc, sqlite3_value **v)
{
    for (int i = 0; i < 4; i++)
        if (sqlite3_value_type(v[i]) == SQLITE_NULL) {
            sqlite3_result_null(ctx);
            return;
        }
    sqlite3_result_double(
        ctx, peers_haversine_m(sqlite3_value_double(v[0]), sqlite3_value_double(v[1]),
                               sqlite3_value_double(v[2]), sqlite3_value_double(v[3])));
    (void)argc;
}

static int on_progress(void *ud)
{
    lite_ctx_t *c = ud;
    return c->deadline > 0 && peers_now() > c->deadline;
}

static int exec(lite_ctx_t *c, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %.200s", msg ? msg : "?", sql);
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int lite_load(peer_sys_t *s, const pop_t *p, char *err, size_t errlen)
{
    lite_ctx_t *c = s->ctx;
    sqlite3_stmt *ins = NULL;
    int rc = -1;
    if (exec(c,
             "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-2000000;"
             "PRAGMA temp_store=MEMORY; PRAGMA mmap_size=0;"
             "CREATE TABLE tags(tag_id INTEGER PRIMARY KEY, path TEXT NOT NULL, parent INTEGER, "
             "level INTEGER NOT NULL);"
             "CREATE TABLE tag_closure(ancestor INTEGER NOT NULL, descendant INTEGER NOT NULL, "
             "PRIMARY KEY(ancestor, descendant)) WITHOUT ROWID;"
             "CREATE TABLE users(user_id INTEGER PRIMARY KEY, age INTEGER, gender TEXT, city TEXT, "
             "lat REAL, lon REAL, member_tier TEXT, points INTEGER, is_member INTEGER);"
             "CREATE TABLE user_tags(user_id INTEGER NOT NULL, tag_id INTEGER NOT NULL, "
             "PRIMARY KEY(user_id, tag_id)) WITHOUT ROWID;"
             "BEGIN;",
             err, errlen))
        goto out;
    if (sqlite3_prepare_v2(c->db, "INSERT INTO tags VALUES(?,?,?,?)", -1, &ins, NULL))
        goto sqlerr;
    for (int t = 0; t < p->ntags; t++) {
        sqlite3_bind_int(ins, 1, t);
        sqlite3_bind_text(ins, 2, p->path[t], -1, SQLITE_STATIC);
        if (p->parent[t] >= 0)
            sqlite3_bind_int(ins, 3, p->parent[t]);
        else
            sqlite3_bind_null(ins, 3);
        sqlite3_bind_int(ins, 4, p->level[t]);
        if (sqlite3_step(ins) != SQLITE_DONE)
            goto sqlerr;
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    if (sqlite3_prepare_v2(c->db, "INSERT INTO tag_closure VALUES(?,?)", -1, &ins, NULL))
        goto sqlerr;
    for (int t = 0; t < p->ntags; t++)
        for (int i = 0; i < p->ndesc[t]; i++) {
            sqlite3_bind_int(ins, 1, t);
            sqlite3_bind_int(ins, 2, p->desc[t][i]);
            if (sqlite3_step(ins) != SQLITE_DONE)
                goto sqlerr;
            sqlite3_reset(ins);
        }
    sqlite3_finalize(ins);
    if (sqlite3_prepare_v2(c->db, "INSERT INTO users VALUES(?,?,?,?,?,?,?,?,?)", -1, &ins, NULL))
        goto sqlerr;
    for (uint64_t i = 0; i < p->n; i++) {
        sqlite3_bind_int64(ins, 1, (sqlite3_int64)(i + 1));
#define BIND_INT(col, v, missing)                                                                  \
    if ((v) == (missing))                                                                          \
        sqlite3_bind_null(ins, col);                                                               \
    else                                                                                           \
        sqlite3_bind_int64(ins, col, v)
#define BIND_ENUM(col, e, x)                                                                       \
    if ((x) < 0)                                                                                   \
        sqlite3_bind_null(ins, col);                                                               \
    else                                                                                           \
        sqlite3_bind_text(ins, col, (e).v[x], -1, SQLITE_STATIC)
        BIND_INT(2, p->age[i], INT32_MIN);
        BIND_ENUM(3, p->genders, p->gender[i]);
        BIND_ENUM(4, p->cities, p->city[i]);
        if (isnan(p->lat[i])) {
            sqlite3_bind_null(ins, 5);
            sqlite3_bind_null(ins, 6);
        } else {
            sqlite3_bind_double(ins, 5, p->lat[i]);
            sqlite3_bind_double(ins, 6, p->lon[i]);
        }
        BIND_ENUM(7, p->tiers, p->tier[i]);
        BIND_INT(8, p->points[i], INT32_MIN);
        BIND_INT(9, p->is_member[i], -1);
        if (sqlite3_step(ins) != SQLITE_DONE)
            goto sqlerr;
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    if (sqlite3_prepare_v2(c->db, "INSERT INTO user_tags VALUES(?,?)", -1, &ins, NULL))
        goto sqlerr;
    for (uint64_t i = 0; i < p->n; i++)
        for (uint64_t j = p->toff[i]; j < p->toff[i + 1]; j++) {
            sqlite3_bind_int64(ins, 1, (sqlite3_int64)(i + 1));
            sqlite3_bind_int(ins, 2, p->tagv[j]);
            if (sqlite3_step(ins) != SQLITE_DONE)
                goto sqlerr;
            sqlite3_reset(ins);
        }
    sqlite3_finalize(ins);
    ins = NULL;
    if (exec(c,
             "COMMIT; CREATE INDEX user_tags_tag ON user_tags(tag_id, user_id);"
             "CREATE INDEX users_age ON users(age); CREATE INDEX users_lat ON users(lat);"
             "ANALYZE;",
             err, errlen))
        goto out;
    rc = 0;
    goto out;
sqlerr:
    snprintf(err, errlen, "sqlite load: %s", sqlite3_errmsg(c->db));
out:
    sqlite3_finalize(ins);
    return rc;
}

static int lite_prepare(peer_sys_t *s, const pop_t *p, const query_t *q, char *err, size_t errlen)
{
    lite_ctx_t *c = s->ctx;
    if (q->kind != Q_TGI)
        return 0;
    sbuf_t b = {0};
    sb_printf(&b, "DROP TABLE IF EXISTS peers_crowd; CREATE TABLE peers_crowd(user_id INTEGER "
                  "PRIMARY KEY); INSERT INTO peers_crowd SELECT u.user_id FROM users u WHERE ");
    sql_pred(p, q->expr, SQL_SQLITE, SQLV_REL, &b);
    int rc = exec(c, b.s, err, errlen);
    sb_free(&b);
    return rc;
}

static int lite_run(peer_sys_t *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
                    char *err, size_t errlen)
{
    lite_ctx_t *c = s->ctx;
    sqlite3_stmt *st = NULL;
    sbuf_t b = {0};
    uint64_t *in = NULL;
    int rc = -1, r;
    memset(out, 0, sizeof *out);
    sql_query(p, q, SQL_SQLITE, SQLV_REL, &b);
    c->deadline = c->timeout > 0 ? peers_now() + c->timeout : 0;
    if (sqlite3_prepare_v2(c->db, b.s, -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    if (q->kind == Q_TGI && !(in = calloc((size_t)p->ntags, sizeof *in))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (q->kind == Q_COUNT)
            out->count = (uint64_t)sqlite3_column_int64(st, 0);
        else if (q->kind == Q_EXPORT)
            answer_id_add(out, (uint64_t)sqlite3_column_int64(st, 0));
        else {
            int t = sqlite3_column_int(st, 0);
            if (t >= 0 && t < p->ntags)
                in[t] = (uint64_t)sqlite3_column_int64(st, 1);
        }
    }
    if (r != SQLITE_DONE)
        goto sqlerr;
    for (int t = 0; in && t < p->ntags; t++)
        answer_tgi_add(out, t, in[t], p->count[t]);
    rc = 0;
    goto out;
sqlerr:
    if (sqlite3_errcode(c->db) == SQLITE_INTERRUPT)
        snprintf(err, errlen, "timeout: one run took longer than %.0f s", c->timeout);
    else
        snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(c->db));
out:
    c->deadline = 0;
    sqlite3_finalize(st);
    sb_free(&b);
    free(in);
    (void)variant;
    return rc;
}

static void lite_measure(peer_sys_t *s, const pop_t *p)
{
    lite_ctx_t *c = s->ctx;
    s->mem_bytes = (uint64_t)sqlite3_memory_used();
    s->disk_bytes = peers_file_bytes(c->path);
    (void)p;
}

static void lite_close(peer_sys_t *s)
{
    lite_ctx_t *c = s->ctx;
    if (!c)
        return;
    sqlite3_close(c->db);
    free(c);
    s->ctx = NULL;
}

int sys_sqlite_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->name = "sqlite";
    lite_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    s->ctx = c;
    c->path = o->sqlite_path;
    c->timeout = o->timeout_secs;
    remove(o->sqlite_path);
    if (sqlite3_open(o->sqlite_path, &c->db) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite3_open %s: %s", o->sqlite_path, sqlite3_errmsg(c->db));
        return -1;
    }
    sqlite3_create_function(c->db, "hav_m", 4, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, hav_fn,
                            NULL, NULL);
    sqlite3_progress_handler(c->db, 100000, on_progress, c);
    snprintf(s->version, sizeof s->version, "SQLite %s", sqlite3_libversion());
    snprintf(s->notes, sizeof s->notes,
             "in process; relational schema (users + user_tags(direct) + tag_closure), indexes "
             "on user_tags(tag_id,user_id), users(age), users(lat); ANALYZE; 2 GB page cache; "
             "memory = sqlite3_memory_used()");
    s->load = lite_load;
    s->prepare = lite_prepare;
    s->run = lite_run;
    s->measure = lite_measure;
    s->close = lite_close;
    return 0;
}
