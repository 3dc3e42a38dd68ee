/*
 * check.c — damaged data directories: `crowdpack check` (cp_db_check) and
 * `crowdpack recover` (cp_db_recover). docs/operations.md "Damaged files".
 *
 * The check runs in two child processes so that nothing it reads can take
 * the caller down: store_verify walks every page and value of data.mdb
 * (a child of its own: liblmdb crashes on some damage), then a second
 * child opens the directory read-only — which decodes every record
 * (tags, attributes, crowds, keys) and every bitmap chunk through the safe
 * CRoaring deserialiser with container validation — and cross-checks what
 * the parts say about each other. Each child reports one line per problem
 * over a pipe; a child killed by a signal is itself a problem line.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "store/wal.h"

/* ---------------------------------------------------------- the child */

typedef struct chk {
    int fd; /* the pipe to the parent */
    uint64_t problems;
    cp_db_t *db;
    store_txn_t *txn;
    const char *dir;
    uint64_t live_ids; /* entries of users by ordinal that are live users */
} chk_t;

static void say(chk_t *c, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(chk_t *c, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fd_line_v(c->fd, kind, fmt, ap);
    va_end(ap);
    if (strcmp(kind, "bad") == 0)
        c->problems++;
}

/* Users: the id -> ordinal and ordinal -> id maps must be each other's
 * inverse. */
static cp_status uid_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                         cp_error_t *err)
{
    chk_t *c = ud;
    (void)err;
    if (vl != 4) {
        say(c, "bad", "users by id: \"%.*s\" has a %zu-byte ordinal (4 expected)",
            (int)(kl > 100 ? 100 : kl), (const char *)k, vl);
        return CP_OK;
    }
    uint32_t ord;
    memcpy(&ord, v, 4);
    const void *id;
    size_t il;
    cp_error_t e = {0};
    cp_status rc = store_get(c->txn, STORE_UORD, &ord, 4, &id, &il, &e);
    if (rc == CP_ENOTFOUND)
        say(c, "bad", "users by id: \"%.*s\" -> ordinal %u, which users by ordinal lacks",
            (int)(kl > 100 ? 100 : kl), (const char *)k, ord);
    else if (rc)
        say(c, "bad", "users by ordinal %u: %s", ord, e.message);
    else if (il != kl || memcmp(id, k, kl) != 0)
        say(c, "bad", "users by id: \"%.*s\" -> ordinal %u, but that ordinal's id is \"%.*s\"",
            (int)(kl > 100 ? 100 : kl), (const char *)k, ord, (int)(il > 100 ? 100 : il),
            (const char *)id);
    return CP_OK;
}

static cp_status uord_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    chk_t *c = ud;
    (void)err;
    if (kl != 4) {
        say(c, "bad", "users by ordinal: a key of %zu bytes (4 expected)", kl);
        return CP_OK;
    }
    uint32_t ord;
    memcpy(&ord, k, 4);
    const void *o;
    size_t ol;
    cp_error_t e = {0};
    cp_status rc = store_get(c->txn, STORE_UID, v, vl, &o, &ol, &e);
    if (rc == CP_ENOTFOUND)
        say(c, "bad", "users by ordinal: %u -> \"%.*s\", which users by id lacks", ord,
            (int)(vl > 100 ? 100 : vl), (const char *)v);
    else if (rc)
        say(c, "bad", "users by id: %s", e.message);
    else if (ord >= c->db->next_ordinal)
        say(c, "bad", "users by ordinal: %u is not below next_ordinal %u", ord,
            c->db->next_ordinal);
    else if (c->db->ix->universe && roaring_bitmap_contains(c->db->ix->universe, ord))
        c->live_ids++;
    else if (c->db->ix->universe) {
        /* Not live: fine only for an ordinal merged into another (its data
         * lives at the group's root; identity row 'c' names it). */
        unsigned char ck[5] = {'c', (unsigned char)(ord >> 24), (unsigned char)(ord >> 16),
                               (unsigned char)(ord >> 8), (unsigned char)ord};
        const void *r;
        size_t rl;
        if (store_get(c->txn, STORE_IDENTITY, ck, 5, &r, &rl, &e) == CP_ENOTFOUND)
            say(c, "bad", "users by ordinal: %u (\"%.*s\") is neither a live user nor merged", ord,
                (int)(vl > 100 ? 100 : vl), (const char *)v);
    }
    return CP_OK;
}

typedef struct count_ctx {
    uint64_t n;
} count_ctx_t;

static cp_status count_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (void)err;
    ((count_ctx_t *)ud)->n++;
    return CP_OK;
}

/* Identity rows: the value lengths their layout fixes, and every
 * ordinal's own identifier ('i') has its owner row ('k'). */
static cp_status ident_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    chk_t *c = ud;
    (void)v;
    (void)err;
    const unsigned char *p = k;
    if (kl == 0) {
        say(c, "bad", "identity: an empty key");
        return CP_OK;
    }
    size_t want = SIZE_MAX;
    switch (p[0]) {
    case 'k':
    case 'c':
        want = 4;
        break;
    case 'n':
        want = 8;
        break;
    case 'p':
        want = 12;
        break;
    case 'i':
    case 'm':
    case 'L':
        want = 0;
        break;
    case 'l':
    case 'N':
        break;
    default:
        say(c, "bad", "identity: a row with unknown prefix 0x%02x", p[0]);
        return CP_OK;
    }
    if (want != SIZE_MAX && vl != want)
        say(c, "bad", "identity: a '%c' row holds %zu bytes (%zu expected)", p[0], vl, want);
    if (p[0] == 'i' && kl > 5) {
        char key[1200];
        if (kl - 5 + 1 > sizeof key)
            return CP_OK;
        key[0] = 'k';
        memcpy(key + 1, p + 5, kl - 5);
        const void *o;
        size_t ol;
        cp_error_t e = {0};
        cp_status rc = store_get(c->txn, STORE_IDENTITY, key, kl - 4, &o, &ol, &e);
        if (rc == CP_ENOTFOUND)
            say(c, "bad", "identity: identifier \"%.*s\" of ordinal %u has no owner row",
                (int)(kl - 5 > 100 ? 100 : kl - 5), (const char *)p + 5,
                (unsigned)p[1] << 24 | (unsigned)p[2] << 16 | (unsigned)p[3] << 8 | p[4]);
        else if (rc)
            say(c, "bad", "identity: %s", e.message);
    }
    return CP_OK;
}

/* Members of a set that are not live users. */
static void subset_check(chk_t *c, const roaring_bitmap_t *bm, const char *what)
{
    const roaring_bitmap_t *u = c->db->ix->universe;
    if (bm == NULL || u == NULL)
        return;
    uint64_t out = roaring_bitmap_andnot_cardinality(bm, u);
    if (out > 0)
        say(c, "bad", "%s has %llu members that are not live users", what, (unsigned long long)out);
}

static int check_child(const char *dir, int fd)
{
    chk_t c = {fd, 0, NULL, NULL, dir, 0};
    cp_error_t e = {0};
    /* store_verify has just walked the file: no second walk at open. */
    setenv("CROWDPACK_OPEN_CHECK", "0", 1);
    say(&c, "at", "opening (decoding every record and bitmap)");
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_READONLY;
    o.threads = 1;
    if (cp_db_open(dir, &o, &c.db, &e)) {
        say(&c, "bad", "%s", e.message);
        return 1;
    }
    cp_db_t *db = c.db;
    if (store_txn_begin(db->st, 0, &c.txn, &e)) {
        say(&c, "bad", "%s", e.message);
        cp_db_close(db, NULL);
        return 1;
    }
    say(&c, "at", "users");
    count_ctx_t nu = {0}, no = {0};
    if (store_each(c.txn, STORE_UID, NULL, 0, uid_one, &c, &e) ||
        store_each(c.txn, STORE_UORD, NULL, 0, uord_one, &c, &e) ||
        store_each(c.txn, STORE_UID, NULL, 0, count_one, &nu, &e) ||
        store_each(c.txn, STORE_UORD, NULL, 0, count_one, &no, &e))
        say(&c, "bad", "%s", e.message);
    else if (nu.n != no.n)
        say(&c, "bad", "users by id has %llu entries but users by ordinal %llu",
            (unsigned long long)nu.n, (unsigned long long)no.n);
    uint64_t live = db->ix->universe ? roaring_bitmap_get_cardinality(db->ix->universe) : 0;
    if (c.live_ids != live)
        say(&c, "bad", "the universe has %llu live users but %llu of them have an id",
            (unsigned long long)live, (unsigned long long)c.live_ids);
    say(&c, "at", "identity");
    if (store_each(c.txn, STORE_IDENTITY, NULL, 0, ident_one, &c, &e))
        say(&c, "bad", "%s", e.message);

    say(&c, "at", "crowds");
    for (size_t i = 0; i < db->crowds.n; i++) {
        const crowd_rec_t *cr = db->crowds.items[i];
        const roaring_bitmap_t *m = index_crowd(db->ix, cr->id);
        uint64_t have = m ? roaring_bitmap_get_cardinality(m) : 0;
        if (have != cr->size)
            say(&c, "bad", "crowd \"%s\": size %llu recorded, %llu members stored", cr->name,
                (unsigned long long)cr->size, (unsigned long long)have);
        char what[300];
        snprintf(what, sizeof what, "crowd \"%.200s\"", cr->name);
        subset_check(&c, m, what);
    }
    say(&c, "at", "groups");
    for (size_t i = 0; i < db->groups.n; i++) {
        const group_rec_t *g = &db->groups.items[i];
        char what[300];
        snprintf(what, sizeof what, "group \"%.200s\"", g->id);
        subset_check(&c, g->members, what);
    }
    say(&c, "at", "tags");
    for (uint32_t id = 1; id < db->tax.next_id && id < db->ix->ntags; id++) {
        const tax_tag_t *t = tax_get(&db->tax, id);
        if (t == NULL)
            continue;
        char what[300];
        snprintf(what, sizeof what, "tag \"%.200s\"", t->path);
        subset_check(&c, db->ix->tags[id].direct, what);
    }
    say(&c, "at", "attributes");
    for (uint32_t id = 1; id <= db->sch.n && id < db->ix->nattrs; id++) {
        const schema_attr_t *a = schema_get(&db->sch, id);
        if (a == NULL)
            continue;
        char what[300];
        snprintf(what, sizeof what, "attribute \"%.200s\"", a->name);
        subset_check(&c, index_attr_exists(db->ix, id), what);
    }
    store_txn_abort(c.txn);
    cp_db_close(db, NULL);
    return c.problems ? 1 : 0;
}

/* ---------------------------------------------------------- the parent */

typedef struct relay {
    cp_line_fn fn;
    void *ud;
    uint64_t problems;
} relay_t;

static void relay_line(void *ud, const char *line)
{
    relay_t *r = ud;
    r->problems++;
    if (r->fn)
        r->fn(r->ud, line);
}

/* Runs check_child in a child process and relays its lines. */
static cp_status run_child(const char *dir, relay_t *r, cp_error_t *err)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return CP_ERR(err, CP_EIO, "cannot create a pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return CP_ERR(err, CP_EIO, "cannot fork to check %s: %s", dir, strerror(errno));
    }
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGPIPE, SIG_IGN);
        _exit(check_child(dir, pfd[1]));
    }
    close(pfd[1]);
    char at[200] = "the start";
    FILE *f = fdopen(pfd[0], "r");
    if (f == NULL) {
        close(pfd[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return CP_ERR(err, CP_ENOMEM, "out of memory checking %s", dir);
    }
    char line[1000];
    uint64_t said = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "at ", 3) == 0)
            snprintf(at, sizeof at, "%.*s", (int)sizeof at - 1, line + 3);
        else if (strncmp(line, "bad ", 4) == 0) {
            said++;
            relay_line(r, line + 4);
        }
    }
    fclose(f);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return CP_ERR(err, CP_EIO, "cannot wait for the check of %s: %s", dir, strerror(errno));
    char msg[400];
    if (WIFSIGNALED(status)) {
        snprintf(msg, sizeof msg, "the check crashed (signal %d, %s) while at %s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), at);
        relay_line(r, msg);
    } else if (WEXITSTATUS(status) != 0 && said == 0) {
        snprintf(msg, sizeof msg, "the check ended with status %d while at %s", WEXITSTATUS(status),
                 at);
        relay_line(r, msg);
    }
    return CP_OK;
}

cp_status cp_db_check(const char *dir, cp_line_fn problem, void *ud, uint64_t *problems,
                      cp_error_t *err)
{
    if (dir == NULL || problems == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_check: no directory or no count");
    *problems = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (access(path, F_OK) != 0)
        return CP_ERR(err, CP_ENOTFOUND, "%s holds no data.mdb", dir);
    relay_t r = {problem, ud, 0};
    uint64_t n = 0;
    cp_error_t e = {0};
    cp_status rc = store_verify(dir, 0, relay_line, &r, &n, &e);
    if (rc != CP_OK && rc != CP_ECORRUPT && rc != CP_EINVAL) {
        *problems = r.problems;
        return CP_ERR(err, rc, "%s", e.message);
    }
    /* Pages and checksums clean: decode and cross-check. (With damage
     * found already, opening would only stop at the first of it.) */
    if (n == 0 && (rc = run_child(dir, &r, err)))
        return rc;
    *problems = r.problems;
    return CP_OK;
}

/* ------------------------------------------------------------- recover */

/* The no-op record of recovery (open.c): fills an LSN whose record is lost. */
#define WAL_REC_NOOP 2

cp_status cp_db_recover(const char *dir, cp_line_fn say_fn, void *ud, cp_error_t *err)
{
    cp_status rc;
    store_t *st = NULL;
    store_txn_t *t = NULL;
    char line[4600];
    if (dir == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_recover: no directory");
    /* The writer lock, held through the salvage: nothing else may open. */
    if ((rc = store_open(dir, 0, 0, CP_FORMAT_VERSION, &st, err)))
        return rc;
    uint64_t applied = 0;
    if ((rc = store_txn_begin(st, 0, &t, err)))
        goto out;
    rc = store_meta_get_u64(t, "wal_lsn", &applied, err);
    store_txn_abort(t);
    t = NULL;
    if (rc == CP_ENOTFOUND)
        rc = CP_OK;
    if (rc)
        goto out;
    char side[4200];
    snprintf(side, sizeof side, "%s/wal-dropped-%lld.bin", dir, (long long)time_now_ms());
    wal_salvage_report_t rep;
    if ((rc = wal_salvage(dir, applied, WAL_REC_NOOP, side, &rep, err)))
        goto out;
    if (say_fn) {
        snprintf(line, sizeof line,
                 "data.mdb has applied the write-ahead log up to LSN %llu; the log now ends at "
                 "LSN %llu",
                 (unsigned long long)applied, (unsigned long long)rep.last_lsn);
        say_fn(ud, line);
        if (rep.created) {
            snprintf(line, sizeof line,
                     "%s/wal was missing: a new log starts after LSN %llu; records logged "
                     "after that are lost",
                     dir, (unsigned long long)applied);
            say_fn(ud, line);
        }
        if (rep.ranges + rep.lsns_lost == 0 && !rep.created) {
            say_fn(ud, "the write-ahead log is whole: nothing was dropped");
        } else {
            snprintf(line, sizeof line,
                     "kept %llu valid records; dropped %llu damaged stretches (%llu bytes); "
                     "%llu LSNs had no valid record and are now no-ops",
                     (unsigned long long)rep.records_kept, (unsigned long long)rep.ranges,
                     (unsigned long long)rep.bytes_dropped, (unsigned long long)rep.lsns_lost);
            say_fn(ud, line);
        }
        if ((rep.ranges + rep.lsns_lost > 0 || rep.created) && rep.last_lsn <= applied) {
            snprintf(line, sizeof line,
                     "nothing past LSN %llu survived in the log: records logged after it, if "
                     "any, are lost",
                     (unsigned long long)applied);
            say_fn(ud, line);
        }
        if (rep.bytes_dropped > 0) {
            snprintf(line, sizeof line,
                     "the dropped bytes, with their segment and offset, are in %s", side);
            say_fn(ud, line);
        }
    }
    store_close(st);
    st = NULL;
    /* Open normally once: replays the kept records into data.mdb. */
    cp_db_t *db = NULL;
    if ((rc = cp_db_open(dir, NULL, &db, err)))
        goto out;
    cp_db_close(db, NULL);
    if (say_fn)
        say_fn(ud, "the data directory opens again; the kept records are applied");
out:
    store_txn_abort(t);
    store_close(st);
    return rc;
}
