/* store.c — the LMDB environment of a data directory, its writer lock and
 * the transaction helpers of store.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"
#include "store/wal.h" /* wal_crc32c */
#include "util/util.h"

#define STORE_MAGIC "crowdpack"
#define STORE_PATH_MAX 4096

static const char *const db_names[STORE_NDBS] = {
    "meta",   "bitmaps", "uid",  "uord",     "tags",   "attrs",
    "values", "crowds",  "keys", "identity", "intake",
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
    int crc; /* values carry a CRC32C trailer (meta "value_crc"); see "value checksums" */
    /* store_compact replaces env; store_sync runs outside the engine's
     * lock (the checkpointer), so the two meet here. */
    pthread_mutex_t env_mu;
    int env_mu_init;
    atomic_int ntxn;     /* open transactions: a compaction needs none */
    atomic_int swapping; /* a compaction is replacing env (under env_mu) */
    /* data.mdb-lock held open once a compaction took LMDB's exclusive
     * lock on it: closing it while the environment is open would drop
     * the environment's own POSIX lock (store_compact). -1 until then. */
    int lmdb_lock_fd;
};

struct store_txn {
    store_t *st;
    MDB_txn *txn;
    /* The last store_reserve()d value, sealed (its trailer written) at the
     * next call on the transaction: the caller writes it in between. */
    unsigned char *pend;
    size_t pend_len;
    store_db pend_db;
    size_t pend_klen;
    unsigned char pend_key[512];
};

struct store_cursor {
    MDB_cursor *cur;
    store_txn_t *t;
    store_db db;
};

static void seal_pending(store_txn_t *t);
static cp_status value_check(store_txn_t *t, store_db db, const MDB_val *key, MDB_val *val,
                             cp_error_t *err);
static cp_status values_format_open(store_t *st, store_txn_t *t, int created, cp_error_t *err);
static cp_status values_upgrade(store_t *st, store_txn_t *t, cp_error_t *err);
static cp_status store_preflight(store_t *st, uint64_t map_size, cp_error_t *err);

/* Maps an LMDB (or errno) return to a status with mdb_strerror() text. */
static cp_status mdb_status(cp_error_t *err, int rc, const char *what, const char *file,
                            const char *func, int line)
{
    if (rc == MDB_MAP_FULL)
        return error_set(err, CP_ELIMIT, file, func, line,
                         "%s: data directory is full (LMDB map size reached); reopen with a "
                         "larger map_size",
                         what);
    if (rc == ENOMEM)
        return error_set(err, CP_ENOMEM, file, func, line, "%s: out of memory", what);
    if (rc == ENOSPC || rc == EDQUOT)
        return error_set(err, CP_ENOSPC, file, func, line, "%s: no space left on the device", what);
    if (rc == MDB_READERS_FULL)
        return error_set(err, CP_ELIMIT, file, func, line, "%s: too many readers: %s", what,
                         mdb_strerror(rc));
    return error_set(err, CP_EIO, file, func, line, "%s: %s", what, mdb_strerror(rc));
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
    return error_set(err, CP_ENOSPC, file, func, line,
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
        return store_meta_put_u64(t, "created", (uint64_t)time_now_ms(), err);
    }
    if (rc)
        return rc;
    if (vl != strlen(STORE_MAGIC) || memcmp(v, STORE_MAGIC, vl) != 0)
        return CP_ERR(err, CP_EINVAL, "%s is not a crowdpack data directory (bad magic)", st->dir);
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
    st->lmdb_lock_fd = -1;
    st->env_mu_init = pthread_mutex_init(&st->env_mu, NULL) == 0;
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
            rc = CP_ERR(err, CP_EIO, "cannot create data directory %s: %s", dir, strerror(errno));
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
                     ? CP_ERR(err, CP_ENOTFOUND, "data directory %s holds no data (data.mdb)", dir)
                     : CP_ERR(err, CP_EINVAL, "%s is not a crowdpack data directory (no data.mdb)",
                              dir);
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

    if (!created && (rc = store_preflight(st, map_size, err)))
        goto out;
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
    if ((rc = values_format_open(st, t, created, err)) ||
        (rc = check_meta(st, t, version, created, err)))
        goto out;
    if (!st->crc && !readonly && (rc = values_upgrade(st, t, err)))
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
    /* A data.mdb this call created but could not finish (its first
     * transaction failed: out of memory, a full disk) has no meta record,
     * so every later open would call the directory damaged. The directory
     * was empty and is still locked by us: remove it, leaving it as found. */
    if (rc != CP_OK && created && st != NULL && st->env != NULL)
        unlink(st->data_path);
    store_close(st);
    return rc;
}

void store_close(store_t *st)
{
    if (st == NULL)
        return;
    if (st->env)
        mdb_env_close(st->env);
    if (st->lmdb_lock_fd >= 0)
        close(st->lmdb_lock_fd); /* after the environment: see store_compact */
    if (st->env_mu_init)
        pthread_mutex_destroy(&st->env_mu);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock */
    free(st->dir);
    free(st->data_path);
    free(st);
}

int store_readonly(const store_t *st)
{
    return st->readonly;
}
int store_usable(const store_t *st)
{
    return st->env != NULL;
}
const char *store_dir(const store_t *st)
{
    return st->dir;
}

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
    /* Counted before the environment is touched, and the count checked
     * by a compaction after it raised `swapping` (both sequentially
     * consistent): either we see it swapping and wait for it, or it sees
     * our count and leaves the environment alone. A write transaction may
     * wait for LMDB's writer mutex here, so no lock is held across it. */
    for (;;) {
        atomic_fetch_add(&st->ntxn, 1);
        if (!atomic_load(&st->swapping))
            break;
        atomic_fetch_sub(&st->ntxn, 1);
        pthread_mutex_lock(&st->env_mu); /* held for the whole swap */
        pthread_mutex_unlock(&st->env_mu);
    }
    int rc = st->env ? mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &t->txn) : EINVAL;
    if (rc) {
        atomic_fetch_sub(&st->ntxn, 1);
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
    seal_pending(t);
    int rc = mdb_txn_commit(t->txn);
    atomic_fetch_sub(&t->st->ntxn, 1);
    free(t);
    /* LMDB reports a short write as EIO; with the file system (nearly)
     * full that is a full disk, not damage. */
    if (rc == ENOSPC || rc == EDQUOT || (rc == EIO && free_bytes(st->dir) < STORE_ROOM_STEP_MIN))
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
    atomic_fetch_sub(&t->st->ntxn, 1);
    free(t);
}

/* ------------------------------------------------------ value checksums */

/*
 * Every value carries a 4-byte little-endian CRC32C trailer over its key
 * and its bytes, so bit rot in data.mdb is CP_ECORRUPT naming the
 * sub-database and the key instead of a wrong answer or a crash in a
 * decoder. Callers never see the trailer: put/reserve add it, get/each/
 * cursor check and strip it. Directories written before checksums (no
 * meta "value_crc") are upgraded in place by the first read-write open;
 * read-only opens read them unchecked. "value_crc" itself is stored
 * without a trailer: it says how to read the others.
 */
#define STORE_CRC_BYTES 4
#define STORE_CRC_KEY "value_crc"

static int value_raw(const store_t *st, store_db db, const void *k, size_t klen)
{
    return !st->crc || (db == STORE_META && klen == sizeof STORE_CRC_KEY - 1 &&
                        memcmp(k, STORE_CRC_KEY, klen) == 0);
}

static uint32_t value_crc(const void *k, size_t klen, const void *v, size_t vlen)
{
    return wal_crc32c(wal_crc32c(0, k, klen), v, vlen);
}

static void put_trailer(unsigned char *p, uint32_t c)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(c >> (8 * i));
}

static uint32_t get_trailer(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void seal_pending(store_txn_t *t)
{
    if (t->pend == NULL)
        return;
    put_trailer(t->pend + t->pend_len, value_crc(t->pend_key, t->pend_klen, t->pend, t->pend_len));
    t->pend = NULL;
}

/* A key as text for messages: printable bytes as they are, else hex. */
static void key_text(char *buf, size_t cap, store_db db, const void *k, size_t klen)
{
    const unsigned char *p = k;
    int printable = klen > 0;
    for (size_t i = 0; i < klen && printable; i++)
        printable = p[i] >= 0x20 && p[i] < 0x7f;
    if (db == STORE_UORD && klen == 4) {
        uint32_t o;
        memcpy(&o, k, 4);
        snprintf(buf, cap, "%u", o);
    } else if (printable) {
        snprintf(buf, cap, "\"%.*s\"", (int)(klen > 200 ? 200 : klen), (const char *)k);
    } else {
        size_t o = 0;
        buf[0] = '\0';
        o += (size_t)snprintf(buf, cap, "0x");
        for (size_t i = 0; i < klen && i < 64 && o + 3 < cap; i++)
            o += (size_t)snprintf(buf + o, cap - o, "%02x", p[i]);
    }
}

static cp_status value_check(store_txn_t *t, store_db db, const MDB_val *key, MDB_val *val,
                             cp_error_t *err)
{
    if (value_raw(t->st, db, key->mv_data, key->mv_size))
        return CP_OK;
    char kt[160];
    if (val->mv_size < STORE_CRC_BYTES) {
        key_text(kt, sizeof kt, db, key->mv_data, key->mv_size);
        return CP_ERR(err, CP_ECORRUPT,
                      "data.mdb in %s is damaged: sub-database \"%s\", key %s: value of %zu "
                      "bytes has no checksum",
                      t->st->dir, db_names[db], kt, val->mv_size);
    }
    size_t n = val->mv_size - STORE_CRC_BYTES;
    const unsigned char *v = val->mv_data;
    if (value_crc(key->mv_data, key->mv_size, v, n) != get_trailer(v + n)) {
        key_text(kt, sizeof kt, db, key->mv_data, key->mv_size);
        return CP_ERR(err, CP_ECORRUPT,
                      "data.mdb in %s is damaged: sub-database \"%s\", key %s: checksum "
                      "mismatch in its %zu-byte value",
                      t->st->dir, db_names[db], kt, n);
    }
    val->mv_size = n;
    return CP_OK;
}

cp_status store_put(store_txn_t *t, store_db db, const void *k, size_t klen, const void *v,
                    size_t vlen, cp_error_t *err)
{
    seal_pending(t);
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    if (!value_raw(t->st, db, k, klen)) {
        /* Through a copy: v may point into the map (a value read in this
         * transaction), which the reservation could move. */
        unsigned char small[1024];
        unsigned char *buf =
            vlen + STORE_CRC_BYTES <= sizeof small ? small : malloc(vlen + STORE_CRC_BYTES);
        if (buf == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory writing to %s", db_names[db]);
        if (vlen > 0)
            memcpy(buf, v, vlen);
        put_trailer(buf + vlen, value_crc(k, klen, buf, vlen));
        val.mv_size = vlen + STORE_CRC_BYTES;
        val.mv_data = buf;
        int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, 0);
        if (buf != small)
            free(buf);
        return rc ? MDB_ERR(err, rc, db_names[db]) : CP_OK;
    }
    int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, 0);
    return rc ? MDB_ERR(err, rc, db_names[db]) : CP_OK;
}

cp_status store_reserve(store_txn_t *t, store_db db, const void *k, size_t klen, size_t vlen,
                        void **out, cp_error_t *err)
{
    seal_pending(t);
    int raw = value_raw(t->st, db, k, klen);
    if (!raw && klen > sizeof t->pend_key)
        return CP_ERR(err, CP_ELIMIT, "%s: key of %zu bytes is too long", db_names[db], klen);
    MDB_val key = {klen, (void *)k}, val = {vlen + (raw ? 0 : STORE_CRC_BYTES), NULL};
    int rc = mdb_put(t->txn, t->st->dbi[db], &key, &val, MDB_RESERVE);
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    if (!raw) {
        t->pend = val.mv_data;
        t->pend_len = vlen;
        t->pend_db = db;
        t->pend_klen = klen;
        memcpy(t->pend_key, k, klen);
    }
    *out = val.mv_data;
    return CP_OK;
}

cp_status store_get(store_txn_t *t, store_db db, const void *k, size_t klen, const void **v,
                    size_t *vlen, cp_error_t *err)
{
    seal_pending(t);
    MDB_val key = {klen, (void *)k}, val = {0, NULL};
    int rc = mdb_get(t->txn, t->st->dbi[db], &key, &val);
    if (rc == MDB_NOTFOUND)
        return CP_ENOTFOUND;
    if (rc)
        return MDB_ERR(err, rc, db_names[db]);
    cp_status st = value_check(t, db, &key, &val, err);
    if (st)
        return st;
    *v = val.mv_data;
    *vlen = val.mv_size;
    return CP_OK;
}

cp_status store_del(store_txn_t *t, store_db db, const void *k, size_t klen, cp_error_t *err)
{
    seal_pending(t);
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(t->txn, t->st->dbi[db], &key, NULL);
    if (rc == MDB_NOTFOUND)
        return CP_OK;
    return rc ? MDB_ERR(err, rc, db_names[db]) : CP_OK;
}

cp_status store_each(store_txn_t *t, store_db db, const void *prefix, size_t plen, store_each_fn fn,
                     void *ud, cp_error_t *err)
{
    seal_pending(t);
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
        if ((st = value_check(t, db, &key, &val, err)) ||
            (st = fn(ud, key.mv_data, key.mv_size, val.mv_data, val.mv_size, err)))
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
    seal_pending(t);
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
    seal_pending(t);
    int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &c->cur);
    if (rc) {
        free(c);
        return MDB_ERR(err, rc, db_names[db]);
    }
    c->t = t;
    c->db = db;
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
    seal_pending(c->t);
    cp_status st = value_check(c->t, c->db, &key, &val, err);
    if (st)
        return st;
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

/* Opens the environment of st->data_path again after a compaction, with
 * the settings and flags it had. */
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

/* fsyncs a file or a directory. */
static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/*
 * Puts the compacted copy tmp in place of data.mdb (env_mu held, the
 * environment open). LMDB keeps the state of an environment shared by all
 * its processes in data.mdb-lock (the last transaction id, which picks
 * the meta page readers and the writer start from), and only the first
 * process to open it initialises that from data.mdb. A copy's meta pages
 * start again at transaction 1, so if any other process (a read-only
 * `crowdpack count`, a backup) has the environment open while the file is
 * swapped, its state no longer matches the file and it, or we after
 * reopening, could pick the copy's empty meta page. So the swap happens
 * only while this process holds LMDB's own exclusive lock (byte 0 of the
 * lock file, which every opener holds shared and waits on): then no one
 * else has it open, openers wait, and our reopen is the first opener and
 * initialises the lock file from the new file. The lock file descriptor
 * stays open until store_close: closing it would drop the reopened
 * environment's POSIX lock too (those locks are per process and file).
 */
static cp_status swap_in(store_t *st, const char *tmp, size_t mapsize, unsigned eflags,
                         cp_error_t *err)
{
    char lpath[STORE_PATH_MAX];
    snprintf(lpath, sizeof lpath, "%s-lock", st->data_path);
    atomic_store(&st->swapping, 1);
    if (atomic_load(&st->ntxn) > 0) {
        atomic_store(&st->swapping, 0);
        unlink(tmp);
        return CP_ERR(err, CP_ECONFLICT,
                      "data.mdb of %s has %d open transactions; it is compacted when they end",
                      st->dir, atomic_load(&st->ntxn));
    }
    mdb_env_close(st->env);
    st->env = NULL;
    cp_status rc = CP_OK;
    if (st->lmdb_lock_fd < 0)
        st->lmdb_lock_fd = open(lpath, O_RDWR | O_CLOEXEC);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (st->lmdb_lock_fd < 0) {
        rc = CP_ERR(err, CP_EIO, "cannot open %s: %s", lpath, strerror(errno));
    } else if (fcntl(st->lmdb_lock_fd, F_SETLK, &fl) != 0) {
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        long pid = fcntl(st->lmdb_lock_fd, F_GETLK, &q) == 0 && q.l_type != F_UNLCK ? q.l_pid : 0;
        rc = CP_ERR(err, CP_ELOCKED,
                    "data.mdb of %s is open in another process (pid %ld); it is compacted when "
                    "that process closes it",
                    st->dir, pid);
    } else if (rename(tmp, st->data_path) != 0) {
        rc = CP_ERR(err, CP_EIO, "cannot replace %s with its compacted copy: %s", st->data_path,
                    strerror(errno));
    } else {
        (void)fsync_path(st->dir, 1); /* the rename itself: a crash keeps either file whole */
    }
    if (rc)
        unlink(tmp);
    cp_status rc2 = env_reopen(st, mapsize, eflags, err);
    if (rc2 == CP_OK)
        room_init(st); /* the compacted file is allocated only to its length */
    /* Our reopen holds the lock shared now (LMDB downgraded it). */
    atomic_store(&st->swapping, 0);
    return rc ? rc : rc2;
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
    if (fsync_path(tmp, 0) != 0) {
        int e = errno;
        unlink(tmp);
        return CP_ERR(err, CP_EIO, "cannot sync %s: %s", tmp, strerror(e));
    }
    pthread_mutex_lock(&st->env_mu);
    cp_status rc = swap_in(st, tmp, info.me_mapsize, eflags, err);
    pthread_mutex_unlock(&st->env_mu);
    return rc;
}

int store_compact_cleanup(store_t *st)
{
    if (st->readonly)
        return 0;
    char tmp[STORE_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.compact", st->data_path);
    return unlink(tmp) == 0;
}

/* ------------------------------------------------------------- backup */

cp_status store_backup(store_t *st, const char *path, cp_error_t *err)
{
    pthread_mutex_lock(&st->env_mu);
    int mrc = st->env ? mdb_env_copy2(st->env, path, MDB_CP_COMPACT) : EINVAL;
    pthread_mutex_unlock(&st->env_mu);
    if (mrc) {
        unlink(path);
        return MDB_ERR(err, mrc, "writing a copy of data.mdb");
    }
    if (fsync_path(path, 0) != 0)
        return CP_ERR(err, CP_EIO, "cannot sync %s: %s", path, strerror(errno));
    return CP_OK;
}

cp_status store_set_lazy_commit(store_t *st, int on, cp_error_t *err)
{
    int mrc = mdb_env_set_flags(st->env, MDB_NOMETASYNC, on ? 1 : 0);
    return mrc ? MDB_ERR(err, mrc, "setting MDB_NOMETASYNC") : CP_OK;
}

cp_status store_sync(store_t *st, cp_error_t *err)
{
    pthread_mutex_lock(&st->env_mu);
    int mrc = st->env ? mdb_env_sync(st->env, 1) : EINVAL;
    pthread_mutex_unlock(&st->env_mu);
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
/* ------------------------------------------- value format, damage walk */

/* Reads (or, for a new file, writes) the checksum flag. Before check_meta,
 * which reads meta values and must know whether they carry trailers. */
static cp_status values_format_open(store_t *st, store_txn_t *t, int created, cp_error_t *err)
{
    MDB_val key = {sizeof STORE_CRC_KEY - 1, (void *)STORE_CRC_KEY}, val = {0, NULL};
    int rc = mdb_get(t->txn, st->dbi[STORE_META], &key, &val);
    if (rc == 0) {
        uint64_t v = 0;
        if (val.mv_size == 8)
            for (int i = 7; i >= 0; i--)
                v = v << 8 | ((const unsigned char *)val.mv_data)[i];
        if (v != 1)
            return CP_ERR(err, v == 0 ? CP_ECORRUPT : CP_EVERSION,
                          "data directory %s: meta \"%s\" holds %zu bytes (%llu); this build "
                          "knows value checksums version 1",
                          st->dir, STORE_CRC_KEY, val.mv_size, (unsigned long long)v);
        st->crc = 1;
        return CP_OK;
    }
    if (rc != MDB_NOTFOUND)
        return MDB_ERR(err, rc, "meta");
    if (!created)
        return CP_OK; /* an older directory: upgraded after check_meta if writable */
    unsigned char one[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    val.mv_size = 8;
    val.mv_data = one;
    if ((rc = mdb_put(t->txn, st->dbi[STORE_META], &key, &val, 0)))
        return MDB_ERR(err, rc, "meta");
    st->crc = 1;
    return CP_OK;
}

/*
 * Gives every value of a directory written before checksums its trailer,
 * in the opening transaction (all or nothing), then sets the flag. One
 * pass over the file; the copy-on-write pages may grow it until LMDB
 * reuses the old ones.
 */
static cp_status values_upgrade(store_t *st, store_txn_t *t, cp_error_t *err)
{
    cp_status rs = CP_OK;
    unsigned char *buf = NULL;
    size_t cap = 0;
    unsigned char kbuf[512];
    MDB_cursor *c = NULL;
    for (int db = 0; db < STORE_NDBS && rs == CP_OK; db++) {
        int rc = mdb_cursor_open(t->txn, st->dbi[db], &c);
        if (rc) {
            rs = MDB_ERR(err, rc, db_names[db]);
            break;
        }
        MDB_val key, val;
        rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
        while (rc == 0) {
            if (key.mv_size > sizeof kbuf) {
                rs = CP_ERR(err, CP_ECORRUPT, "data.mdb in %s: a key of %zu bytes in \"%s\"",
                            st->dir, key.mv_size, db_names[db]);
                break;
            }
            if (val.mv_size + STORE_CRC_BYTES > cap) {
                size_t nc = (val.mv_size + STORE_CRC_BYTES) * 2;
                unsigned char *nb = realloc(buf, nc);
                if (nb == NULL) {
                    rs = CP_ERR(err, CP_ENOMEM, "out of memory adding checksums to %s", st->dir);
                    break;
                }
                buf = nb;
                cap = nc;
            }
            memcpy(kbuf, key.mv_data, key.mv_size);
            if (val.mv_size)
                memcpy(buf, val.mv_data, val.mv_size);
            put_trailer(buf + val.mv_size, value_crc(kbuf, key.mv_size, buf, val.mv_size));
            MDB_val k2 = {key.mv_size, kbuf}, v2 = {val.mv_size + STORE_CRC_BYTES, buf};
            if ((rc = mdb_cursor_put(c, &k2, &v2, MDB_CURRENT)))
                break;
            rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
        }
        if (rs == CP_OK && rc != 0 && rc != MDB_NOTFOUND)
            rs = MDB_ERR(err, rc, "adding checksums to the values of data.mdb");
        mdb_cursor_close(c);
        c = NULL;
    }
    free(buf);
    if (rs != CP_OK)
        return rs;
    MDB_val key = {sizeof STORE_CRC_KEY - 1, (void *)STORE_CRC_KEY};
    unsigned char one[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    MDB_val val = {8, one};
    int rc = mdb_put(t->txn, st->dbi[STORE_META], &key, &val, 0);
    if (rc)
        return MDB_ERR(err, rc, "meta");
    st->crc = 1;
    return CP_OK;
}

/*
 * The damage walk. liblmdb trusts its file: a damaged meta page, a branch
 * page pointing at garbage or a zeroed leaf can make it read wild
 * pointers (SIGSEGV), fail an assertion (SIGABRT) or touch an overflow
 * page past the end of the file (SIGBUS). So a child process opens the
 * file on its own and reads every page a reader or writer can reach: the
 * free list, the main tree, every sub-database and every value byte
 * (checking the value checksums). The parent only opens what the child
 * read without dying; a child killed by a signal is a clean CP_ECORRUPT.
 * The child reports over a pipe, one line at a time: "at NAME" before
 * each tree, "bad MESSAGE" for each problem.
 */
#define WALK_TIMEOUT_S 600
#define WALK_UNOPENABLE 3 /* the child's exit status when LMDB refused the file */

typedef struct walk_out {
    int fd;
    uint64_t problems;
    uint32_t touched; /* CRC of values read without a trailer: makes the walk read every byte */
} walk_out_t;

static void walk_say(walk_out_t *w, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void walk_say(walk_out_t *w, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fd_line_v(w->fd, kind, fmt, ap);
    va_end(ap);
}

/* Walks one tree; `crc` 1 checks value trailers (sub-databases only). */
static void walk_tree(walk_out_t *w, MDB_txn *txn, MDB_dbi dbi, const char *name, int crc,
                      int is_meta, const char *dir)
{
    walk_say(w, "at", "%s", name);
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) {
        w->problems++;
        walk_say(w, "bad", "data.mdb in %s: cannot read %s: %s", dir, name, mdb_strerror(rc));
        return;
    }
    MDB_val key, val;
    uint64_t n = 0;
    rc = mdb_cursor_get(c, &key, &val, MDB_FIRST);
    while (rc == 0) {
        n++;
        int raw = !crc || (is_meta && key.mv_size == sizeof STORE_CRC_KEY - 1 &&
                           memcmp(key.mv_data, STORE_CRC_KEY, key.mv_size) == 0);
        if (raw) {
            w->touched ^= wal_crc32c(0, val.mv_data, val.mv_size); /* touch every byte */
        } else if (val.mv_size < STORE_CRC_BYTES ||
                   value_crc(key.mv_data, key.mv_size, val.mv_data,
                             val.mv_size - STORE_CRC_BYTES) !=
                       get_trailer((const unsigned char *)val.mv_data + val.mv_size -
                                   STORE_CRC_BYTES)) {
            char kt[160];
            int which = 0;
            for (int i = 0; i < STORE_NDBS; i++)
                if (strcmp(db_names[i], name) == 0)
                    which = i;
            key_text(kt, sizeof kt, (store_db)which, key.mv_data, key.mv_size);
            w->problems++;
            walk_say(w, "bad",
                     "data.mdb in %s is damaged: sub-database \"%s\", key %s: checksum "
                     "mismatch in its value",
                     dir, name, kt);
        }
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    if (rc != MDB_NOTFOUND) {
        w->problems++;
        walk_say(w, "bad", "data.mdb in %s is damaged: reading %s after %llu entries: %s", dir,
                 name, (unsigned long long)n, mdb_strerror(rc));
    }
    mdb_cursor_close(c);
}

/* The child's whole job; returns its exit status. */
static int walk_child(const char *dir, const char *path, uint64_t map_size, int fd)
{
    walk_out_t w = {.fd = fd};
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    walk_say(&w, "at", "the meta pages");
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 16);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, map_size ? map_size : STORE_DEFAULT_MAP_SIZE);
    if (rc == 0)
        rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOTLS, 0644);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        walk_say(&w, "bad",
                 "%s is not a crowdpack data directory, or its data.mdb is damaged: "
                 "LMDB cannot open it: %s",
                 dir, mdb_strerror(rc));
        return WALK_UNOPENABLE;
    }
    walk_tree(&w, txn, 0, "the free list", 0, 0, dir);
    walk_tree(&w, txn, 1, "the main tree", 0, 0, dir);
    MDB_dbi dbi[STORE_NDBS];
    int crc = 0;
    for (int i = 0; i < STORE_NDBS; i++) {
        walk_say(&w, "at", "%s", db_names[i]);
        rc = mdb_dbi_open(txn, db_names[i], i == STORE_UORD ? MDB_INTEGERKEY : 0, &dbi[i]);
        if (rc) {
            w.problems++;
            walk_say(&w, "bad", "data.mdb in %s: sub-database \"%s\": %s", dir, db_names[i],
                     mdb_strerror(rc));
            return 1;
        }
        if (i == STORE_META) {
            MDB_val key = {sizeof STORE_CRC_KEY - 1, (void *)STORE_CRC_KEY}, val;
            crc = mdb_get(txn, dbi[i], &key, &val) == 0;
        }
        walk_tree(&w, txn, dbi[i], db_names[i], crc, i == STORE_META, dir);
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return w.problems ? 1 : 0;
}

cp_status store_verify(const char *dir, uint64_t map_size, store_verify_fn fn, void *ud,
                       uint64_t *problems, cp_error_t *err)
{
    char path[STORE_PATH_MAX];
    if (strlen(dir) > STORE_PATH_MAX - 32)
        return CP_ERR(err, CP_ELIMIT, "data directory path is too long");
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (problems)
        *problems = 0;
    int pfd[2];
    if (pipe(pfd) != 0)
        return CP_ERR(err, CP_EIO, "cannot create a pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return CP_ERR(err, CP_EIO, "cannot fork to check %s: %s", path, strerror(errno));
    }
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGPIPE, SIG_IGN);
        alarm(WALK_TIMEOUT_S);
        _exit(walk_child(dir, path, map_size, pfd[1]));
    }
    close(pfd[1]);
    /* Read the child's lines; remember where it was. */
    char at[200] = "the start";
    char first_bad[600] = "";
    uint64_t bad = 0;
    FILE *f = fdopen(pfd[0], "r");
    if (f == NULL) {
        close(pfd[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return CP_ERR(err, CP_ENOMEM, "out of memory checking %s", path);
    }
    char line[800];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "at ", 3) == 0) {
            snprintf(at, sizeof at, "%.*s", (int)sizeof at - 1, line + 3);
        } else if (strncmp(line, "bad ", 4) == 0) {
            if (bad++ == 0)
                snprintf(first_bad, sizeof first_bad, "%.*s", (int)sizeof first_bad - 1, line + 4);
            if (fn)
                fn(ud, line + 4);
        }
    }
    fclose(f);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return CP_ERR(err, CP_EIO, "cannot wait for the check of %s: %s", path,
                          strerror(errno));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        char msg[700];
        if (sig == SIGALRM)
            snprintf(msg, sizeof msg,
                     "data.mdb in %s is damaged: reading %s did not finish in %d s "
                     "(a loop in its pages?)",
                     dir, at, WALK_TIMEOUT_S);
        else
            snprintf(msg, sizeof msg,
                     "data.mdb in %s is damaged: liblmdb crashed (signal %d, %s) reading %s", dir,
                     sig, strsignal(sig), at);
        bad++;
        if (first_bad[0] == '\0')
            snprintf(first_bad, sizeof first_bad, "%.*s", (int)sizeof first_bad - 1, msg);
        if (fn)
            fn(ud, msg);
    } else if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && bad == 0)) {
        bad++;
        snprintf(first_bad, sizeof first_bad, "data.mdb in %s: the check ended with status %d", dir,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        if (fn)
            fn(ud, first_bad);
    }
    if (problems)
        *problems = bad;
    if (WIFEXITED(status) && WEXITSTATUS(status) == WALK_UNOPENABLE)
        return CP_ERR(err, CP_EINVAL, "%s", first_bad);
    if (bad)
        return CP_ERR(err, CP_ECORRUPT, "%s%s", first_bad,
                      bad > 1 ? " (and more: run `crowdpack check`)" : "");
    return CP_OK;
}

/* Before the environment is opened: the walk above, unless turned off. */
static cp_status store_preflight(store_t *st, uint64_t map_size, cp_error_t *err)
{
    const char *e = getenv("CROWDPACK_OPEN_CHECK");
    if (e != NULL && strcmp(e, "0") == 0)
        return CP_OK;
    return store_verify(st->dir, map_size, NULL, NULL, NULL, err);
}
