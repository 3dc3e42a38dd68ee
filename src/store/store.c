/* store.c — the LMDB environment of a data directory, its writer lock and
 * the transaction helpers of store.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/store.h"
#include "util/util.h"

#define STORE_MAGIC "crowdpack"
#define STORE_PATH_MAX 4096

static const char *const db_names[STORE_NDBS] = {
    "meta", "bitmaps", "uid", "uord", "tags", "attrs", "values", "crowds", "keys", "identity",
    "intake",
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_NDBS];
    int readonly;
    int lock_fd;
    char *dir;
    char *data_path;
    /* data.mdb is allocated (posix_fallocate) up to this byte offset;
     * LMDB's pages past its last used page land there, so a commit
     * finds its blocks already allocated (store_ensure_room). */
    uint64_t room_end;
};

struct store_txn {
    store_t *st;
    MDB_txn *txn;
};

struct store_cursor {
    MDB_cursor *cur;
};

/* Maps an LMDB (or errno) return to a status with mdb_strerror() text. */
static cp_status mdb_status(cp_error_t *err, int rc, const char *what, const char *file,
                            const char *func, int line)
{
    if (rc == MDB_MAP_FULL)
        return cp__error_set(err, CP_ELIMIT, file, func, line,
                             "%s: data directory is full (LMDB map size reached); reopen with a "
                             "larger map_size",
                             what);
    if (rc == ENOMEM)
        return cp__error_set(err, CP_ENOMEM, file, func, line, "%s: out of memory", what);
    if (rc == ENOSPC || rc == EDQUOT)
        return cp__error_set(err, CP_ENOSPC, file, func, line, "%s: no space left on the device",
                             what);
    if (rc == MDB_READERS_FULL)
        return cp__error_set(err, CP_ELIMIT, file, func, line, "%s: too many readers: %s", what,
                             mdb_strerror(rc));
    return cp__error_set(err, CP_EIO, file, func, line, "%s: %s", what, mdb_strerror(rc));
}
#define MDB_ERR(err, rc, what) mdb_status((err), (rc), (what), __FILE__, __func__, __LINE__)

static void room_init(store_t *st);

/* Free bytes for an unprivileged writer on the file system holding path. */
static uint64_t free_bytes(const char *path)
{
    struct statvfs vfs;
    if (statvfs(path, &vfs) != 0)
        return 0;
    return (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
}

/* CP_ENOSPC naming the file, the bytes wanted and the free space. */
static cp_status nospc_error(store_t *st, cp_error_t *err, const char *what, uint64_t want,
                             const char *file, const char *func, int line)
{
    return cp__error_set(err, CP_ENOSPC, file, func, line,
                         "%s: no space left for %s (%llu more bytes wanted, %llu bytes free on "
                         "the file system of %s); free space and writes resume by themselves",
                         st->data_path, what, (unsigned long long)want,
                         (unsigned long long)free_bytes(st->dir), st->dir);
}

/* Takes DIR/LOCK exclusively without waiting and writes our pid into it. */
static cp_status lock_take(store_t *st, cp_error_t *err)
{
    char path[STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", st->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = {0};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        close(fd);
        if (e == EWOULDBLOCK) {
            long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
            return CP_ERR(err, CP_ELOCKED,
                          "data directory %s is locked for writing by another process (pid %ld)",
                          st->dir, pid);
        }
        return CP_ERR(err, CP_EIO, "cannot lock %s: %s", path, strerror(e));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return CP_ERR(err, CP_EIO, "cannot write %s: %s", path, strerror(e));
    }
    st->lock_fd = fd;
    return CP_OK;
}

/* 1 if the directory holds nothing but lock files (ours or LMDB's). */
static int dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "LOCK") ||
            !strcmp(e->d_name, "data.mdb-lock"))
            continue;
        empty = 0;
        break;
    }
    closedir(d);
    return empty;
}

static cp_status check_meta(store_t *st, store_txn_t *t, uint32_t version, int created,
                            cp_error_t *err)
{
    const void *v;
    size_t vl;
    cp_status rc = store_get(t, STORE_META, "magic", 5, &v, &vl, err);
    if (rc == CP_ENOTFOUND) {
        if (!created)
            return CP_ERR(err, CP_EINVAL,
                          "%s is not a crowdpack data directory (data.mdb has no crowdpack "
                          "metadata)",
                          st->dir);
        if ((rc = store_put(t, STORE_META, "magic", 5, STORE_MAGIC, strlen(STORE_MAGIC), err)))
            return rc;
        if ((rc = store_meta_put_u64(t, "format_version", version, err)))
            return rc;
        return store_meta_put_u64(t, "created", (uint64_t)cp_now_ms(), err);
    }
    if (rc)
        return rc;
    if (vl != strlen(STORE_MAGIC) || memcmp(v, STORE_MAGIC, vl) != 0)
        return CP_ERR(err, CP_EINVAL, "%s is not a crowdpack data directory (bad magic)",
                      st->dir);
    uint64_t have = 0;
    rc = store_meta_get_u64(t, "format_version", &have, err);
    if (rc == CP_ENOTFOUND)
        return CP_ERR(err, CP_EINVAL, "data directory %s has no format version", st->dir);
    if (rc)
        return rc;
    if (have != version)
        return CP_ERR(err, CP_EVERSION,
                      "data directory %s has format version %llu; this build reads version %u",
                      st->dir, (unsigned long long)have, version);
    return CP_OK;
}

cp_status store_open(const char *dir, unsigned flags, uint64_t map_size, uint32_t version,
                     store_t **out, cp_error_t *err)
{
    cp_status rc = CP_OK;
    store_t *st = NULL;
    store_txn_t *t = NULL;
    int created = 0;
    *out = NULL;
    if (dir == NULL || dir[0] == '\0')
        return CP_ERR(err, CP_EINVAL, "no data directory given");
    if (strlen(dir) > STORE_PATH_MAX - 32)
        return CP_ERR(err, CP_ELIMIT, "data directory path is longer than %d bytes",
                      STORE_PATH_MAX - 32);
    int readonly = (flags & STORE_READONLY) != 0;

    st = calloc(1, sizeof *st);
    if (st == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory opening %s", dir);
    st->lock_fd = -1;
    st->readonly = readonly;
    st->dir = strdup(dir);
    st->data_path = malloc(strlen(dir) + 16);
    if (st->dir == NULL || st->data_path == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory opening %s", dir);
        goto out;
    }
    sprintf(st->data_path, "%s/data.mdb", dir);

    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT) {
            rc = CP_ERR(err, CP_EIO, "cannot access data directory %s: %s", dir, strerror(errno));
            goto out;
        }
        if (!(flags & STORE_CREATE) || readonly) {
            rc = CP_ERR(err, CP_ENOTFOUND, "data directory %s does not exist", dir);
            goto out;
        }
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            rc = CP_ERR(err, CP_EIO, "cannot create data directory %s: %s", dir,
                        strerror(errno));
            goto out;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        rc = CP_ERR(err, CP_EINVAL, "%s is not a directory", dir);
        goto out;
    }

    if (!readonly && (rc = lock_take(st, err)))
        goto out;

    if (stat(st->data_path, &sb) != 0) {
        if (!(flags & STORE_CREATE) || readonly) {
            rc = dir_is_empty(dir)
                     ? CP_ERR(err, CP_ENOTFOUND, "data directory %s holds no data (data.mdb)",
                              dir)
                     : CP_ERR(err, CP_EINVAL,
                              "%s is not a crowdpack data directory (no data.mdb)", dir);
            goto out;
        }
        if (!dir_is_empty(dir)) {
            rc = CP_ERR(err, CP_EINVAL,
                        "%s is not empty and is not a crowdpack data directory (no data.mdb); "
                        "refusing to create one there",
                        dir);
            goto out;
        }
        created = 1;
    }

    int mrc = mdb_env_create(&st->env);
    if (mrc) {
        st->env = NULL;
        rc = MDB_ERR(err, mrc, "creating the LMDB environment");
        goto out;
    }
    if ((mrc = mdb_env_set_maxdbs(st->env, 16)) ||
        (mrc = mdb_env_set_mapsize(st->env, map_size ? map_size : STORE_DEFAULT_MAP_SIZE)) ||
        (mrc = mdb_env_set_maxreaders(st->env, 1022))) {
        rc = MDB_ERR(err, mrc, "configuring the LMDB environment");
        goto out;
    }
    /* No MDB_WRITEMAP: LMDB then writes pages with pwrite/writev and
     * makes the file only as long as its pages, so a full disk is an
     * ENOSPC from a system call (never a SIGBUS from a store into a hole
     * of a sparse file), the order of writes and syncs is LMDB's own
     * (meta page after the data it points to; docs/operations.md), and
     * the writes can be observed by the crash tests. */
    unsigned eflags = MDB_NOSUBDIR | MDB_NOTLS | (readonly ? MDB_RDONLY : 0);
    if ((mrc = mdb_env_open(st->env, st->data_path, eflags, 0644))) {
        if (mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH)
            rc = CP_ERR(err, CP_EINVAL, "%s is not a crowdpack data directory: %s: %s", dir,
                        st->data_path, mdb_strerror(mrc));
        else
            rc = MDB_ERR(err, mrc, st->data_path);
        goto out;
    }

    /* Open every sub-database once; handles stay valid for the env's life. */
    if ((rc = store_txn_begin(st, !readonly, &t, err)))
        goto out;
    for (int i = 0; i < STORE_NDBS; i++) {
        unsigned dflags = readonly ? 0 : MDB_CREATE;
        if (i == STORE_UORD)
            dflags |= MDB_INTEGERKEY;
        mrc = mdb_dbi_open(t->txn, db_names[i], dflags, &st->dbi[i]);
        if (mrc == MDB_NOTFOUND) {
            rc = CP_ERR(err, CP_EINVAL,
                        "%s is not a crowdpack data directory (sub-database \"%s\" missing)", dir,
                        db_names[i]);
            goto out;
        }
        if (mrc) {
            rc = MDB_ERR(err, mrc, "opening a sub-database");
            goto out;
        }
    }
    if ((rc = check_meta(st, t, version, created, err)))
        goto out;
    rc = store_txn_commit(t, err);
    t = NULL;
    if (rc)
        goto out;
    if (!readonly)
        room_init(st);
    *out = st;
    st = NULL;
out:
    store_txn_abort(t);
    store_close(st);
    return rc;
}

void store_close(store_t *st)
{
    if (st == NULL)
        return;
    if (st->env)
        mdb_env_close(st->env);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock */
    free(st->dir);
    free(st->data_path);
    free(st);
}

int store_readonly(const store_t *st) { return st->readonly; }
const char *store_dir(const store_t *st) { return st->dir; }

uint64_t store_disk_bytes(const store_t *st)
{
    struct stat sb;
    if (stat(st->data_path, &sb) != 0)
        return 0;
    /* Allocated blocks: the file is sparse, its length is not its size. */
    uint64_t alloc = (uint64_t)sb.st_blocks * 512u;
    return alloc < (uint64_t)sb.st_size ? alloc : (uint64_t)sb.st_size;
}

cp_status store_txn_begin(store_t *st, int write, store_txn_t **out, cp_error_t *err)
{
    *out = NULL;
    if (write && st->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", st->dir);
    store_txn_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory beginning a transaction");
    int rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (rc) {
        free(t);
        return MDB_ERR(err, rc, "beginning a transaction");
    }
    t->st = st;
    *out = t;
    return CP_OK;
}

cp_status store_txn_commit(store_txn_t *t, cp_error_t *err)
{
    store_t *st = t->st;
    int rc = mdb_txn_commit(t->txn);
    free(t);
    if (rc == ENOSPC || rc == EDQUOT)
        return CP_ERR(err, CP_ENOSPC,
                      "%s: no space left to commit a transaction (%llu bytes free on the file "
                      "system of %s)",
                      st->data_path, (unsigned long long)free_bytes(st->dir), st->dir);
    return rc ? MDB_ERR(err, rc, "committing a transaction") : CP_OK;
}

void store_txn_abort(store_txn_t *t)
{
    if (t == NULL)
        return;
    mdb_txn_abort(t->txn);
    free(t);
}

cp_status store_put(store_txn_t *t, store_db db, const void *k, size_t klen, const void *v,
                    size_t vlen, cp_error_t *err)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, 0);
    return rc ? MDB_ERR(err, rc, db_names[db]) : CP_OK;
}

cp_status store_reserve(store_txn_t *t, store_db db, const void *k, size_t klen, size_t vlen,
                        void **out, cp_error_t *err)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, NULL};
    int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, MDB_RESERVE);
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    *out = val.mv_data;
    return CP_OK;
}

cp_status store_get(store_txn_t *t, store_db db, const void *k, size_t klen, const void **v,
                    size_t *vlen, cp_error_t *err)
{
    MDB_val key = {klen, (void *)k}, val = {0, NULL};
    int rc = mdb_get(t->txn, t->st->dbi[db], &key, &val);
    if (rc == MDB_NOTFOUND)
        return CP_ENOTFOUND;
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    *v = val.mv_data;
    *vlen = val.mv_size;
    return CP_OK;
}

cp_status store_del(store_txn_t *t, store_db db, const void *k, size_t klen, cp_error_t *err)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(t->txn, t->st->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return CP_OK;
    return rc ? MDB_ERR(err, rc, db_names[db]) : CP_OK;
}

cp_status store_each(store_txn_t *t, store_db db, const void *prefix, size_t plen,
                     store_each_fn fn, void *ud, cp_error_t *err)
{
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &c);
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    MDB_val key = {plen, (void *)prefix}, val;
    cp_status st = CP_OK;
    rc = mdb_cursor_get(c, &key, &val, plen ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        if (plen && (key.mv_size < plen || memcmp(key.mv_data, prefix, plen) != 0))
            break;
        if ((st = fn(ud, key.mv_data, key.mv_size, val.mv_data, val.mv_size, err)))
            break;
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    if (st == CP_OK && rc != 0 && rc != MDB_NOTFOUND)
        st = MDB_ERR(err, rc, db_names[db]);
    mdb_cursor_close(c);
    return st;
}

cp_status store_del_prefix(store_txn_t *t, store_db db, const void *prefix, size_t plen,
                           cp_error_t *err)
{
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &c);
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    cp_status st = CP_OK;
    for (;;) {
        /* Re-seek after each delete: simple and independent of where LMDB
         * leaves a cursor after mdb_cursor_del. */
        MDB_val key = {plen, (void *)prefix}, val;
        rc = mdb_cursor_get(c, &key, &val, plen ? MDB_SET_RANGE : MDB_FIRST);
        if (rc)
            break;
        if (plen && (key.mv_size < plen || memcmp(key.mv_data, prefix, plen) != 0))
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        st = MDB_ERR(err, rc, db_names[db]);
    mdb_cursor_close(c);
    return st;
}

cp_status store_meta_get_u64(store_txn_t *t, const char *key, uint64_t *v, cp_error_t *err)
{
    const void *p;
    size_t n;
    cp_status rc = store_get(t, STORE_META, key, strlen(key), &p, &n, err);
    if (rc)
        return rc;
    if (n != 8)
        return CP_ERR(err, CP_EIO, "meta key \"%s\" has %zu bytes, expected 8", key, n);
    const unsigned char *b = p;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | b[i];
    *v = x;
    return CP_OK;
}

cp_status store_meta_put_u64(store_txn_t *t, const char *key, uint64_t v, cp_error_t *err)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return store_put(t, STORE_META, key, strlen(key), b, 8, err);
}

cp_status store_cursor_open(store_txn_t *t, store_db db, store_cursor_t **out, cp_error_t *err)
{
    *out = NULL;
    store_cursor_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory opening a cursor");
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &c->cur);
    if (rc) {
        free(c);
        return MDB_ERR(err, rc, db_names[db]);
    }
    *out = c;
    return CP_OK;
}

cp_status store_cursor_seek(store_cursor_t *c, const void *k, size_t klen, const void **v,
                            size_t *vlen, cp_error_t *err)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_cursor_get(c->cur, &key, &val, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND)
        return CP_ENOTFOUND;
    if (rc)
        return MDB_ERR(err, rc, "cursor");
    *v = val.mv_data;
    *vlen = val.mv_size;
    return CP_OK;
}

void store_cursor_close(store_cursor_t *c)
{
    if (c == NULL)
        return;
    mdb_cursor_close(c->cur);
    free(c);
}

/* ------------------------------------------------------------- compact */

/* Opens the environment of st->data_path again after a compaction. */
static cp_status env_reopen(store_t *st, size_t mapsize, unsigned eflags, cp_error_t *err)
{
    int mrc = mdb_env_create(&st->env);
    if (mrc) {
        st->env = NULL;
        return MDB_ERR(err, mrc, "creating the LMDB environment");
    }
    if ((mrc = mdb_env_set_maxdbs(st->env, 16)) || (mrc = mdb_env_set_mapsize(st->env, mapsize)) ||
        (mrc = mdb_env_set_maxreaders(st->env, 1022)) ||
        (mrc = mdb_env_open(st->env, st->data_path, eflags, 0644))) {
        mdb_env_close(st->env);
        st->env = NULL;
        return MDB_ERR(err, mrc, "reopening the compacted data directory");
    }
    MDB_txn *txn;
    if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)))
        return MDB_ERR(err, mrc, "beginning a transaction");
    for (int i = 0; i < STORE_NDBS; i++) {
        unsigned dflags = MDB_CREATE | (i == STORE_UORD ? MDB_INTEGERKEY : 0);
        if ((mrc = mdb_dbi_open(txn, db_names[i], dflags, &st->dbi[i]))) {
            mdb_txn_abort(txn);
            return MDB_ERR(err, mrc, "opening a sub-database");
        }
    }
    if ((mrc = mdb_txn_commit(txn)))
        return MDB_ERR(err, mrc, "committing a transaction");
    return CP_OK;
}

cp_status store_compact(store_t *st, cp_error_t *err)
{
    if (st->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", st->dir);
    char tmp[STORE_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.compact", st->data_path);
    unlink(tmp);
    MDB_envinfo info;
    unsigned eflags = 0;
    int mrc = mdb_env_info(st->env, &info);
    if (mrc == 0)
        mrc = mdb_env_get_flags(st->env, &eflags);
    if (mrc)
        return MDB_ERR(err, mrc, "reading the environment's settings");
    /* NOSUBDIR environment: the copy's path is the file itself. */
    if ((mrc = mdb_env_copy2(st->env, tmp, MDB_CP_COMPACT))) {
        unlink(tmp);
        return MDB_ERR(err, mrc, "writing a compacted copy of data.mdb");
    }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return CP_ERR(err, CP_EIO, "cannot sync %s: %s", tmp, strerror(e));
    }
    close(fd);
    mdb_env_close(st->env);
    st->env = NULL;
    cp_status rc = CP_OK;
    if (rename(tmp, st->data_path) != 0) {
        rc = CP_ERR(err, CP_EIO, "cannot replace %s with its compacted copy: %s", st->data_path,
                    strerror(errno));
        unlink(tmp);
    } else {
        int dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    unsigned keep = eflags & (MDB_NOSUBDIR | MDB_NOTLS | MDB_NOSYNC | MDB_NOMETASYNC);
    cp_status rc2 = env_reopen(st, info.me_mapsize, keep | MDB_NOSUBDIR | MDB_NOTLS, err);
    if (rc2 == CP_OK)
        room_init(st); /* the new file has no space allocated ahead */
    return rc ? rc : rc2;
}

cp_status store_set_lazy_commit(store_t *st, int on, cp_error_t *err)
{
    int mrc = mdb_env_set_flags(st->env, MDB_NOMETASYNC, on ? 1 : 0);
    return mrc ? MDB_ERR(err, mrc, "setting MDB_NOMETASYNC") : CP_OK;
}

cp_status store_sync(store_t *st, cp_error_t *err)
{
    int mrc = mdb_env_sync(st->env, 1);
    return mrc ? MDB_ERR(err, mrc, "syncing data.mdb") : CP_OK;
}

/* ---------------------------------------------------------------- room */

/* Bytes LMDB uses in data.mdb: its pages up to the last committed one. */
static int used_bytes(store_t *st, uint64_t *used)
{
    MDB_envinfo info;
    MDB_stat ms;
    if (mdb_env_info(st->env, &info) || mdb_env_stat(st->env, &ms))
        return -1;
    *used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
    return 0;
}

/*
 * After a read-write open: how far data.mdb is allocated, and the lock
 * file's blocks. A file that is not sparse is allocated to its length; one
 * that is (written through a map by older builds) only where LMDB has
 * pages, so the holes are allocated before they are used. The lock file
 * is written through LMDB's map of it (reader slots): its blocks are
 * allocated now, so a reader starting on a full disk cannot SIGBUS.
 */
static void room_init(store_t *st)
{
    int fd;
    struct stat sb;
    uint64_t used = 0;
    if (mdb_env_get_fd(st->env, &fd) || fstat(fd, &sb) != 0 || used_bytes(st, &used) != 0)
        return;
    uint64_t alloc = (uint64_t)sb.st_blocks * 512u;
    st->room_end = alloc >= (uint64_t)sb.st_size ? (uint64_t)sb.st_size : used;
    if (st->room_end < used)
        st->room_end = used;

    char path[STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s-lock", st->data_path);
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    if (lfd < 0)
        return;
    if (fstat(lfd, &sb) == 0 && sb.st_size > 0 &&
        (uint64_t)sb.st_blocks * 512u < (uint64_t)sb.st_size) {
        int e = posix_fallocate(lfd, 0, sb.st_size);
        if (e != 0 && e != EOPNOTSUPP && e != EINVAL)
            fprintf(stderr,
                    "crowdpack: cannot allocate the blocks of %s (%s); a reader starting "
                    "while the disk is full may crash\n",
                    path, strerror(e));
    }
    close(lfd);
}

cp_status store_ensure_room(store_t *st, uint64_t bytes, cp_error_t *err)
{
    int fd;
    uint64_t used = 0;
    if (st->readonly)
        return CP_OK;
    if (mdb_env_get_fd(st->env, &fd) || used_bytes(st, &used) != 0)
        return CP_ERR(err, CP_EIO, "%s: cannot read the environment's size", st->data_path);
    uint64_t want = used + bytes;
    if (want <= st->room_end)
        return CP_OK;
    /* Grow in steps (an eighth of the file, within bounds), so a busy
     * writer calls posix_fallocate rarely; fall back to exactly what is
     * wanted when the step does not fit. */
    uint64_t step = used / 8;
    if (step < STORE_ROOM_STEP_MIN)
        step = STORE_ROOM_STEP_MIN;
    if (step > STORE_ROOM_STEP_MAX)
        step = STORE_ROOM_STEP_MAX;
    uint64_t from = st->room_end > used ? st->room_end : used;
    uint64_t to = (want + step + 4095) & ~(uint64_t)4095;
    int e = posix_fallocate(fd, (off_t)from, (off_t)(to - from));
    if (e == ENOSPC || e == EDQUOT) {
        to = (want + 4095) & ~(uint64_t)4095;
        e = posix_fallocate(fd, (off_t)from, (off_t)(to - from));
    }
    if (e == EOPNOTSUPP) {
        /* A file system without allocation: LMDB's own writes will
         * report a full disk as ENOSPC at commit. */
        st->room_end = want;
        return CP_OK;
    }
    if (e == ENOSPC || e == EDQUOT)
        return nospc_error(st, err, "data.mdb to grow", want - from, __FILE__, __func__, __LINE__);
    if (e != 0)
        return CP_ERR(err, CP_EIO, "%s: cannot allocate %llu bytes: %s", st->data_path,
                      (unsigned long long)(to - from), strerror(e));
    st->room_end = to;
    return CP_OK;
}
