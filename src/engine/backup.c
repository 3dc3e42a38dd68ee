/*
 * backup.c — cp_db_backup and cp_db_restore (docs/operations.md
 * "Backups").
 *
 * A backup runs beside a server writing the directory (a second, read-only
 * LMDB handle: the server holds only the writer lock). It copies the WAL
 * segments FIRST and data.mdb SECOND. The log is trimmed only up to what a
 * durable data.mdb holds, so the copy of data.mdb, taken later, holds at
 * least every record older than the copied segments: together they leave
 * no gap, and every write acknowledged before the backup began (its record
 * synced into a segment that was copied) is in one or the other. Records
 * that are in both are skipped by the replay (it starts after the copy's
 * "wal_lsn"). A segment being appended to may be copied with a torn tail,
 * which the restore's open cuts like after a crash; segments that are all
 * older than the copy of data.mdb are dropped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine_int.h"

#define BK_PATH_MAX 4096
#define BK_MAX_SEGMENTS 100000

/* 1 if path is a directory with no entries (missing: 1 too, *exists 0). */
static int dir_empty(const char *path, int *exists)
{
    DIR *d = opendir(path);
    *exists = d != NULL || errno != ENOENT;
    if (d == NULL)
        return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/*
 * Copies src to dst (created, must not exist) and fsyncs it. CP_ENOTFOUND
 * silently when src is gone (a WAL segment trimmed meanwhile).
 */
static cp_status copy_file(const char *src, const char *dst, uint64_t *bytes, cp_error_t *err)
{
    cp_status rc = CP_OK;
    char *buf = NULL;
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
    if (in < 0) {
        if (errno == ENOENT)
            return CP_ENOTFOUND;
        return CP_ERR(err, CP_EIO, "cannot read %s: %s", src, strerror(errno));
    }
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = CP_ERR(err, CP_EIO, "cannot create %s: %s", dst, strerror(errno));
        goto out;
    }
    buf = malloc(1 << 20);
    if (buf == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory copying %s", src);
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = CP_ERR(err, CP_EIO, "cannot read %s: %s", src, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = CP_ERR(err, errno == ENOSPC ? CP_ENOSPC : CP_EIO, "cannot write %s: %s", dst,
                            strerror(errno));
                goto out;
            }
            off += w;
        }
        if (bytes)
            *bytes += (uint64_t)n;
    }
    if (fsync(out) != 0)
        rc = CP_ERR(err, CP_EIO, "cannot sync %s: %s", dst, strerror(errno));
out:
    free(buf);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the segment files in dir/wal, in LSN order (the names are
 * zero-padded LSNs). *names freed by names_free. */
static cp_status wal_names(const char *dir, char ***names, size_t *n, cp_error_t *err)
{
    char path[BK_PATH_MAX];
    snprintf(path, sizeof path, "%s/wal", dir);
    *names = NULL;
    *n = 0;
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? CP_OK
                               : CP_ERR(err, CP_EIO, "cannot list %s: %s", path, strerror(errno));
    size_t cap = 0;
    cp_status rc = CP_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len != 24 || strcmp(e->d_name + 20, ".wal") != 0 ||
            strspn(e->d_name, "0123456789") != 20)
            continue;
        if (*n == BK_MAX_SEGMENTS) {
            rc = CP_ERR(err, CP_ELIMIT, "%s holds more than %d segments", path, BK_MAX_SEGMENTS);
            break;
        }
        if (arr_grow((void **)names, &cap, *n + 1, sizeof **names, 16)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory listing %s", path);
            break;
        }
        if (((*names)[*n] = strdup(e->d_name)) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory listing %s", path);
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_names);
    return rc;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Removes the segment files of dir/wal. */
static cp_status wal_clear(const char *dir, cp_error_t *err)
{
    char **names;
    size_t n;
    cp_status rc = wal_names(dir, &names, &n, err);
    for (size_t i = 0; rc == CP_OK && i < n; i++) {
        char path[BK_PATH_MAX];
        snprintf(path, sizeof path, "%s/wal/%s", dir, names[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = CP_ERR(err, CP_EIO, "cannot remove %s: %s", path, strerror(errno));
    }
    names_free(names, n);
    return rc;
}

/* Copies dir/wal's segments into out/wal (created). */
static cp_status wal_copy(const char *dir, const char *out, uint64_t *segments, uint64_t *bytes,
                          cp_error_t *err)
{
    char **names;
    size_t n;
    char src[BK_PATH_MAX], dst[BK_PATH_MAX];
    cp_status rc = wal_names(dir, &names, &n, err);
    if (rc)
        return rc;
    snprintf(dst, sizeof dst, "%s/wal", out);
    if (mkdir(dst, 0755) != 0 && errno != EEXIST)
        rc = CP_ERR(err, CP_EIO, "cannot create %s: %s", dst, strerror(errno));
    for (size_t i = 0; rc == CP_OK && i < n; i++) {
        snprintf(src, sizeof src, "%s/wal/%s", dir, names[i]);
        snprintf(dst, sizeof dst, "%s/wal/%s", out, names[i]);
        rc = copy_file(src, dst, bytes, err);
        if (rc == CP_ENOTFOUND) {
            rc = CP_OK; /* trimmed meanwhile: data.mdb, copied later, holds it */
            continue;
        }
        if (rc == CP_OK)
            (*segments)++;
    }
    names_free(names, n);
    if (rc == CP_OK) {
        snprintf(dst, sizeof dst, "%s/wal", out);
        (void)fsync_dir(dst);
    }
    return rc;
}

/*
 * An empty active segment for the record after `lsn`: a log whose records
 * are all in data.mdb, as a live log is right after a checkpoint. Without
 * one, a directory whose data.mdb has applied records looks like one whose
 * log was deleted, and opening it is refused.
 */
static cp_status wal_start_empty(const char *out, uint64_t lsn, cp_error_t *err)
{
    char name[32], path[4200];
    wal_segment_name(lsn + 1, name, sizeof name);
    snprintf(path, sizeof path, "%s/wal", out);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return CP_ERR(err, CP_EIO, "cannot create %s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/wal/%s", out, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "cannot create %s: %s", path, strerror(errno));
    int bad = fsync(fd) != 0;
    close(fd);
    snprintf(path, sizeof path, "%s/wal", out);
    if (bad || fsync_dir(path) != 0)
        return CP_ERR(err, CP_EIO, "cannot sync %s: %s", path, strerror(errno));
    return CP_OK;
}

/*
 * After both copies: the copy of data.mdb holds every record up to its
 * "wal_lsn"; the copied segments must continue right after it (no gap),
 * and are dropped when they hold nothing newer.
 */
static cp_status wal_settle(const char *out, cp_backup_info_t *info, cp_error_t *err)
{
    store_t *st = NULL;
    store_txn_t *t = NULL;
    wal_t *w = NULL;
    uint64_t lsn = 0;
    cp_status rc = store_open(out, STORE_READONLY, 0, CP_FORMAT_VERSION, &st, err);
    if (rc == CP_OK)
        rc = store_txn_begin(st, 0, &t, err);
    if (rc == CP_OK) {
        rc = store_meta_get_u64(t, "wal_lsn", &lsn, err);
        if (rc == CP_ENOTFOUND)
            rc = CP_OK;
    }
    store_txn_abort(t);
    store_close(st);
    if (rc)
        return rc;
    info->wal_lsn = lsn;
    char **names;
    size_t n;
    if ((rc = wal_names(out, &names, &n, err)))
        return rc;
    uint64_t first = n ? strtoull(names[0], NULL, 10) : 0;
    names_free(names, n);
    if (n == 0)
        return lsn ? wal_start_empty(out, lsn, err) : CP_OK;
    wal_options_t wo = {0};
    wo.sync = WAL_SYNC_FDATASYNC;
    if ((rc = wal_open(out, &wo, &w, err)))
        return rc;
    uint64_t last = wal_last_lsn(w);
    wal_close(w);
    if (last <= lsn) {
        info->wal_segments = info->wal_bytes = 0;
        if ((rc = wal_clear(out, err)))
            return rc;
        return lsn ? wal_start_empty(out, lsn, err) : CP_OK;
    }
    if (first > lsn + 1)
        return CP_ERR(err, CP_EIO,
                      "backup: the copied log starts at record %llu but the copy of data.mdb "
                      "ends at %llu; run the backup again",
                      (unsigned long long)first, (unsigned long long)lsn);
    return CP_OK;
}

static cp_status backup_run(const char *dir, const char *out, cp_backup_info_t *info,
                            cp_error_t *err)
{
    if (dir == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "backup: no data directory or no output directory given");
    if (strlen(dir) > BK_PATH_MAX - 64 || strlen(out) > BK_PATH_MAX - 64)
        return CP_ERR(err, CP_ELIMIT, "backup: path longer than %d bytes", BK_PATH_MAX - 64);
    int exists;
    if (!dir_empty(out, &exists))
        return CP_ERR(err, CP_EEXIST, "backup: %s exists and is not empty", out);
    if (!exists && mkdir(out, 0755) != 0)
        return CP_ERR(err, CP_EIO, "backup: cannot create %s: %s", out, strerror(errno));
    store_t *st = NULL;
    char path[BK_PATH_MAX];
    /* Opened before the log is copied: a directory that is not one fails
     * here, before anything is written. */
    cp_status rc = store_open(dir, STORE_READONLY, 0, CP_FORMAT_VERSION, &st, err);
    if (rc)
        return rc;
    if ((rc = wal_copy(dir, out, &info->wal_segments, &info->wal_bytes, err)))
        goto out;
    snprintf(path, sizeof path, "%s/data.mdb", out);
    if ((rc = store_backup(st, path, err)))
        goto out;
    store_close(st);
    st = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0)
        info->data_bytes = (uint64_t)sb.st_size;
    if ((rc = wal_settle(out, info, err)))
        goto out;
    (void)fsync_dir(out);
out:
    store_close(st);
    return rc;
}

cp_status cp_db_backup(const char *dir, const char *out, cp_backup_info_t *info, cp_error_t *err)
{
    cp_status rc;
    if (info && (rc = sized_out_check(info, CP_SIZE_THROUGH(cp_backup_info_t, wal_lsn),
                                      "cp_backup_info_t", err)))
        return rc;
    cp_backup_info_t full = {0};
    rc = backup_run(dir, out, &full, err);
    if (info)
        sized_out(info, &full, sizeof full);
    return rc;
}

/* ------------------------------------------------------------- restore */

cp_status cp_db_restore(const char *backup, const char *dir, int force, cp_error_t *err)
{
    if (backup == NULL || dir == NULL)
        return CP_ERR(err, CP_EINVAL, "restore: no backup or no data directory given");
    if (strlen(dir) > BK_PATH_MAX - 64 || strlen(backup) > BK_PATH_MAX - 64)
        return CP_ERR(err, CP_ELIMIT, "restore: path longer than %d bytes", BK_PATH_MAX - 64);
    char src[BK_PATH_MAX], dst[BK_PATH_MAX];
    int lock = -1;
    cp_status rc = CP_OK;
    /* The backup must be a data directory this build reads. */
    store_t *st = NULL;
    if ((rc = store_open(backup, STORE_READONLY, 0, CP_FORMAT_VERSION, &st, err)))
        return rc;
    store_close(st);
    int exists;
    if (!dir_empty(dir, &exists)) {
        if (!force)
            return CP_ERR(err, CP_EEXIST,
                          "restore: %s is not empty; give --force to replace the data directory "
                          "there",
                          dir);
        snprintf(dst, sizeof dst, "%s/data.mdb", dir);
        struct stat sb;
        if (stat(dst, &sb) != 0)
            return CP_ERR(err, CP_EINVAL,
                          "restore: %s is not empty and holds no data directory (no data.mdb); "
                          "refusing to write there",
                          dir);
    } else if (!exists && mkdir(dir, 0755) != 0) {
        return CP_ERR(err, CP_EIO, "restore: cannot create %s: %s", dir, strerror(errno));
    }
    /* The writer lock of store.c: no server may run on dir meanwhile. */
    snprintf(dst, sizeof dst, "%s/LOCK", dir);
    lock = open(dst, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0)
        return CP_ERR(err, CP_EIO, "restore: cannot open %s: %s", dst, strerror(errno));
    if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
        rc = CP_ERR(err, CP_ELOCKED,
                    "restore: data directory %s is open for writing by another process; stop it "
                    "first",
                    dir);
        goto out;
    }
    const char *old[] = {"data.mdb", "data.mdb-lock", "data.mdb.compact", "data.mdb.restore"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        snprintf(dst, sizeof dst, "%s/%s", dir, old[i]);
        if (unlink(dst) != 0 && errno != ENOENT) {
            rc = CP_ERR(err, CP_EIO, "restore: cannot remove %s: %s", dst, strerror(errno));
            goto out;
        }
    }
    if ((rc = wal_clear(dir, err)))
        goto out;
    uint64_t segs = 0, bytes = 0;
    if ((rc = wal_copy(backup, dir, &segs, &bytes, err)))
        goto out;
    /* data.mdb last and by rename: a crash before leaves no data.mdb, so
     * the directory cannot be opened half restored. */
    snprintf(src, sizeof src, "%s/data.mdb", backup);
    snprintf(dst, sizeof dst, "%s/data.mdb.restore", dir);
    if ((rc = copy_file(src, dst, NULL, err))) {
        if (rc == CP_ENOTFOUND)
            rc = CP_ERR(err, CP_EINVAL, "restore: %s holds no data.mdb", backup);
        goto out;
    }
    snprintf(src, sizeof src, "%s/data.mdb", dir);
    if (rename(dst, src) != 0) {
        rc = CP_ERR(err, CP_EIO, "restore: cannot rename %s: %s", dst, strerror(errno));
        goto out;
    }
    (void)fsync_dir(dir);
    close(lock);
    lock = -1;
    /* Open once: replays the copied log and proves the result opens. */
    cp_db_t *db = NULL;
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    if ((rc = cp_db_open(dir, &o, &db, err)) == CP_OK)
        rc = cp_checkpoint(db, err);
    cp_db_close(db, NULL);
out:
    if (lock >= 0)
        close(lock);
    return rc;
}
