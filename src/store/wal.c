/*
 * wal.c — the write-ahead log: segments, framing, recovery of the end of the
 * log, replay, group commit. The contract and the on-disk format are in
 * wal.h.
 *
 * Locking: one mutex guards everything mutable. write() of buffered records
 * happens under it (page-cache copies, microseconds), so file order is LSN
 * order without further coordination. fdatasync() of the active segment
 * happens outside it, on a dup() of the descriptor, so appenders continue
 * while the leader of a group commit waits for the disk, and a rotation
 * may close the original descriptor meanwhile.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store/wal.h"
#include "util/util.h"

/* Small records are gathered in memory up to this many bytes and written
 * with one write(); larger ones are written directly (no copy). */
#define WAL_BUF_LIMIT (64u << 10)
#define WAL_DIRECT_MIN (16u << 10)
#define WAL_NAME_DIGITS 20
#define WAL_NAME_LEN (WAL_NAME_DIGITS + 4)

struct wal {
    char *wal_dir;       /* DIR/wal */
    int wal_dirfd;       /* O_DIRECTORY, flock()ed for the life of the handle */
    wal_options_t wal_opt;
    pthread_mutex_t wal_mu;
    pthread_cond_t wal_cv; /* signalled when a sync round ends or the log fails */

    /* Guarded by wal_mu. */
    uint64_t *wal_segs; /* first LSN of each segment, ascending; the last is active */
    size_t wal_nsegs, wal_segcap;
    int wal_fd;            /* the active segment, positioned at its end */
    uint64_t wal_seg_size; /* bytes of the active segment already written to the file */
    uint64_t wal_next_lsn; /* LSN the next append gets */
    uint64_t wal_durable;  /* every record <= this is durable */
    unsigned char *wal_buf; /* encoded records not yet written */
    size_t wal_buf_len;
    int wal_syncing;       /* a group-commit leader is in fdatasync */
    int wal_failed;        /* sticky: see wal.h */
    char wal_fail_msg[300];
    wal_stats_t wal_st;
};

/* ------------------------------------------------------------ encoding */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The CRC covers lsn, type and payload: header bytes 8..16, then payload. */
static uint32_t record_crc(const unsigned char *hdr, const void *payload, size_t len)
{
    uint32_t c = wal_crc32c(0, hdr + 8, 9);
    return wal_crc32c(c, payload, len);
}

static void encode_header(unsigned char *hdr, uint64_t lsn, uint8_t type, const void *payload,
                          size_t len)
{
    put_u32(hdr, (uint32_t)len);
    put_u64(hdr + 8, lsn);
    hdr[16] = type;
    put_u32(hdr + 4, record_crc(hdr, payload, len));
}

void wal_segment_name(uint64_t first_lsn, char *buf, size_t cap)
{
    snprintf(buf, cap, "%020" PRIu64 ".wal", first_lsn);
}

/* 1 and the LSN if `name` is a segment name (20 digits + ".wal"). */
static int parse_segment_name(const char *name, uint64_t *lsn)
{
    if (strlen(name) != WAL_NAME_LEN || strcmp(name + WAL_NAME_DIGITS, ".wal") != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < WAL_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *lsn = v;
    return v > 0;
}

/* ------------------------------------------------------------- helpers */

static void wal_log(wal_t *wal, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wal_log(wal_t *wal, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (wal->wal_opt.log != NULL)
        wal->wal_opt.log(wal->wal_opt.log_ud, msg);
    else
        fprintf(stderr, "crowdpack: %s\n", msg);
}

/* Marks the log failed (first failure wins) and reports it in err. */
static cp_status wal_fail(wal_t *wal, cp_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cp_status wal_fail(wal_t *wal, cp_error_t *err, const char *fmt, ...)
{
    char msg[sizeof wal->wal_fail_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!wal->wal_failed) {
        wal->wal_failed = 1;
        memcpy(wal->wal_fail_msg, msg, sizeof msg);
    }
    pthread_cond_broadcast(&wal->wal_cv);
    return CP_ERR(err, CP_EIO, "%s", msg);
}

static cp_status failed_status(wal_t *wal, cp_error_t *err)
{
    return CP_ERR(err, CP_EIO, "write-ahead log failed earlier (reopen to recover): %s",
                  wal->wal_fail_msg);
}

static int sync_enabled(const wal_t *wal) { return wal->wal_opt.sync == WAL_SYNC_FDATASYNC; }

/* write() all of iov, retrying short writes and EINTR. 0 or an errno. */
static int write_all(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return EIO;
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static void active_name(const wal_t *wal, char *buf, size_t cap)
{
    wal_segment_name(wal->wal_segs[wal->wal_nsegs - 1], buf, cap);
}

/*
 * Writes `iov` at the end of the active segment. On failure the file is cut
 * back to its last whole record (so a reopen finds no garbage in the middle
 * of later data) and the log fails. Caller holds wal_mu.
 */
static cp_status write_locked(wal_t *wal, struct iovec *iov, int iovcnt, size_t total,
                              cp_error_t *err)
{
    int e = write_all(wal->wal_fd, iov, iovcnt);
    if (e == 0) {
        wal->wal_seg_size += total;
        return CP_OK;
    }
    char name[32];
    active_name(wal, name, sizeof name);
    if (ftruncate(wal->wal_fd, (off_t)wal->wal_seg_size) == 0)
        (void)lseek(wal->wal_fd, (off_t)wal->wal_seg_size, SEEK_SET);
    return wal_fail(wal, err, "wal: write %s/%s: %s", wal->wal_dir, name, strerror(e));
}

static cp_status flush_locked(wal_t *wal, cp_error_t *err)
{
    if (wal->wal_buf_len == 0)
        return CP_OK;
    struct iovec iov = {wal->wal_buf, wal->wal_buf_len};
    size_t n = wal->wal_buf_len;
    wal->wal_buf_len = 0;
    return write_locked(wal, &iov, 1, n, err);
}

static cp_status fsync_dir(wal_t *wal, cp_error_t *err)
{
    if (!sync_enabled(wal) || fsync(wal->wal_dirfd) == 0)
        return CP_OK;
    return CP_ERR(err, CP_EIO, "wal: fsync directory %s: %s", wal->wal_dir, strerror(errno));
}

static cp_status push_segment(wal_t *wal, uint64_t first, cp_error_t *err)
{
    if (wal->wal_nsegs == wal->wal_segcap) {
        size_t cap = wal->wal_segcap ? wal->wal_segcap * 2 : 16;
        uint64_t *s = realloc(wal->wal_segs, cap * sizeof *s);
        if (s == NULL)
            return CP_ERR(err, CP_ENOMEM, "wal: out of memory for the segment list");
        wal->wal_segs = s;
        wal->wal_segcap = cap;
    }
    wal->wal_segs[wal->wal_nsegs++] = first;
    return CP_OK;
}

/* Creates the (empty) segment file for first LSN `first` and fsyncs the
 * directory. *fd is its descriptor. */
static cp_status create_segment(wal_t *wal, uint64_t first, int *fd, cp_error_t *err)
{
    char name[32];
    wal_segment_name(first, name, sizeof name);
    int f = openat(wal->wal_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f < 0)
        return CP_ERR(err, CP_EIO, "wal: create %s/%s: %s", wal->wal_dir, name, strerror(errno));
    cp_status st = fsync_dir(wal, err);
    if (st != CP_OK) {
        close(f);
        return st;
    }
    *fd = f;
    return CP_OK;
}

/*
 * Ends the active segment: writes out the buffer, fdatasyncs it (which also
 * makes everything before durable: older segments were synced when they
 * ended), then creates the next one. Under wal_mu; the fdatasync here is one
 * per segment, so holding the lock through it is cheap on average.
 */
static cp_status rotate_locked(wal_t *wal, cp_error_t *err)
{
    cp_status st = flush_locked(wal, err);
    if (st != CP_OK)
        return st;
    char name[32];
    active_name(wal, name, sizeof name);
    if (sync_enabled(wal) && fdatasync(wal->wal_fd) != 0)
        return wal_fail(wal, err, "wal: fdatasync %s/%s: %s", wal->wal_dir, name, strerror(errno));
    if (wal->wal_durable < wal->wal_next_lsn - 1) {
        wal->wal_durable = wal->wal_next_lsn - 1;
        pthread_cond_broadcast(&wal->wal_cv);
    }
    int fd = -1;
    cp_error_t e2 = {0};
    st = push_segment(wal, wal->wal_next_lsn, &e2);
    if (st == CP_OK) {
        st = create_segment(wal, wal->wal_next_lsn, &fd, &e2);
        if (st != CP_OK)
            wal->wal_nsegs--;
    }
    if (st != CP_OK)
        return wal_fail(wal, err, "%s", e2.message);
    close(wal->wal_fd);
    wal->wal_fd = fd;
    wal->wal_seg_size = 0;
    return CP_OK;
}

/* ------------------------------------------------------------- reading */

typedef struct seg_scan {
    uint64_t end;      /* byte offset after the last valid record */
    uint64_t count;    /* valid records read */
    uint64_t size;     /* file size seen */
    char why[160];     /* empty: the file ended at `end` (or stop reached); else what ended it */
} seg_scan_t;

/*
 * Reads segment `first` from the start, validating each record: length <=
 * WAL_MAX_RECORD, whole header and payload present, CRC, LSN = first +
 * index. Calls fn for records with after < lsn <= upto (fn may be NULL),
 * stops after record `stop` or at the first invalid record (described in
 * out->why). Only I/O errors and fn's status are returned as errors.
 */
static cp_status scan_segment(wal_t *wal, uint64_t first, uint64_t after, uint64_t upto,
                              uint64_t stop, wal_replay_fn fn, void *ud, seg_scan_t *out,
                              cp_error_t *err)
{
    cp_status st = CP_OK;
    FILE *f = NULL;
    unsigned char *payload = NULL;
    size_t pcap = 0;
    char name[32];
    wal_segment_name(first, name, sizeof name);
    memset(out, 0, sizeof *out);

    int fd = openat(wal->wal_dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = CP_ERR(err, CP_EIO, "wal: open %s/%s: %s", wal->wal_dir, name, strerror(errno));
        goto out;
    }
    f = fdopen(fd, "rb");
    if (f == NULL) {
        close(fd);
        st = CP_ERR(err, CP_ENOMEM, "wal: fdopen %s/%s: %s", wal->wal_dir, name, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        st = CP_ERR(err, CP_EIO, "wal: stat %s/%s: %s", wal->wal_dir, name, strerror(errno));
        goto out;
    }
    out->size = (uint64_t)sb.st_size;

    for (uint64_t expect = first;; expect++) {
        if (expect > stop)
            break;
        unsigned char hdr[WAL_HEADER_BYTES];
        size_t got = fread(hdr, 1, sizeof hdr, f);
        if (got < sizeof hdr) {
            if (ferror(f)) {
                st = CP_ERR(err, CP_EIO, "wal: read %s/%s: %s", wal->wal_dir, name,
                            strerror(errno));
                goto out;
            }
            if (got > 0)
                snprintf(out->why, sizeof out->why, "partial record header (%zu of %u bytes)",
                         got, WAL_HEADER_BYTES);
            break;
        }
        uint32_t len = get_u32(hdr);
        uint64_t lsn = get_u64(hdr + 8);
        if (len > WAL_MAX_RECORD) {
            snprintf(out->why, sizeof out->why, "record length %" PRIu32 " over the limit %u",
                     len, WAL_MAX_RECORD);
            break;
        }
        uint64_t avail = out->size >= out->end + WAL_HEADER_BYTES
                             ? out->size - out->end - WAL_HEADER_BYTES
                             : 0;
        if ((uint64_t)len > avail) {
            snprintf(out->why, sizeof out->why,
                     "partial record payload (%" PRIu64 " of %" PRIu32 " bytes)", avail, len);
            break;
        }
        if (len > pcap) {
            size_t cap = pcap ? pcap : 4096;
            while (cap < len)
                cap *= 2;
            unsigned char *p = realloc(payload, cap);
            if (p == NULL) {
                st = CP_ERR(err, CP_ENOMEM, "wal: out of memory reading %s", name);
                goto out;
            }
            payload = p;
            pcap = cap;
        }
        if (len > 0 && fread(payload, 1, len, f) != len) {
            if (ferror(f)) {
                st = CP_ERR(err, CP_EIO, "wal: read %s/%s: %s", wal->wal_dir, name,
                            strerror(errno));
                goto out;
            }
            snprintf(out->why, sizeof out->why, "partial record payload (file shrank)");
            break;
        }
        if (record_crc(hdr, payload, len) != get_u32(hdr + 4)) {
            snprintf(out->why, sizeof out->why, "CRC mismatch (record claims LSN %" PRIu64 ")",
                     lsn);
            break;
        }
        if (lsn != expect) {
            snprintf(out->why, sizeof out->why, "LSN %" PRIu64 " where %" PRIu64 " was expected",
                     lsn, expect);
            break;
        }
        if (fn != NULL && lsn > after && lsn <= upto) {
            st = fn(ud, lsn, hdr[16], payload, len, err);
            if (st != CP_OK)
                goto out;
        }
        out->end += WAL_HEADER_BYTES + (uint64_t)len;
        out->count++;
    }
out:
    if (f != NULL)
        fclose(f);
    free(payload);
    return st;
}

/* ---------------------------------------------------------------- open */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Fills wal_segs with the segment files of the directory, sorted. */
static cp_status list_segments(wal_t *wal, cp_error_t *err)
{
    cp_status st = CP_OK;
    int fd = dup(wal->wal_dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        st = CP_ERR(err, CP_EIO, "wal: read directory %s: %s", wal->wal_dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return st;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".wal") != 0)
            continue; /* not ours (editor backups, lock files) */
        uint64_t lsn;
        if (!parse_segment_name(de->d_name, &lsn)) {
            st = CP_ERR(err, CP_EIO,
                        "wal: unexpected file %s/%s (segments are named by their first LSN, "
                        "20 digits, e.g. 00000000000000000001.wal)",
                        wal->wal_dir, de->d_name);
            break;
        }
        st = push_segment(wal, lsn, err);
        if (st != CP_OK)
            break;
    }
    closedir(d);
    if (st == CP_OK && wal->wal_nsegs > 1)
        qsort(wal->wal_segs, wal->wal_nsegs, sizeof *wal->wal_segs, cmp_u64);
    return st;
}

/* Reads the last segment, cuts its invalid tail and opens it for appending. */
static cp_status recover_tail(wal_t *wal, cp_error_t *err)
{
    uint64_t first = wal->wal_segs[wal->wal_nsegs - 1];
    char name[32];
    wal_segment_name(first, name, sizeof name);
    seg_scan_t sc;
    cp_status st = scan_segment(wal, first, 0, 0, UINT64_MAX, NULL, NULL, &sc, err);
    if (st != CP_OK)
        return st;
    int fd = openat(wal->wal_dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "wal: open %s/%s: %s", wal->wal_dir, name, strerror(errno));
    if (sc.end < sc.size) {
        if (ftruncate(fd, (off_t)sc.end) != 0) {
            st = CP_ERR(err, CP_EIO, "wal: truncate %s/%s: %s", wal->wal_dir, name,
                        strerror(errno));
            close(fd);
            return st;
        }
        wal->wal_st.truncated_bytes = sc.size - sc.end;
        wal_log(wal,
                "wal: cut %" PRIu64 " bytes of torn or corrupt tail from %s/%s at offset %" PRIu64
                " (%s); the log ends at LSN %" PRIu64,
                sc.size - sc.end, wal->wal_dir, name, sc.end, sc.why[0] ? sc.why : "garbage",
                first + sc.count - 1);
    }
    /* Make what is recovered durable, so wal_durable_lsn() starts truthful. */
    if (sync_enabled(wal) && fdatasync(fd) != 0) {
        st = CP_ERR(err, CP_EIO, "wal: fdatasync %s/%s: %s", wal->wal_dir, name, strerror(errno));
        close(fd);
        return st;
    }
    if (lseek(fd, (off_t)sc.end, SEEK_SET) < 0) {
        st = CP_ERR(err, CP_EIO, "wal: seek %s/%s: %s", wal->wal_dir, name, strerror(errno));
        close(fd);
        return st;
    }
    wal->wal_fd = fd;
    wal->wal_seg_size = sc.end;
    wal->wal_next_lsn = first + sc.count;
    return CP_OK;
}

cp_status wal_open(const char *dir, const wal_options_t *opts, wal_t **out, cp_error_t *err)
{
    cp_status st = CP_OK;
    wal_t *wal = NULL;
    *out = NULL;
    wal_options_t o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.segment_bytes == 0)
        o.segment_bytes = WAL_DEFAULT_SEGMENT_BYTES;
    if (o.segment_bytes < WAL_MIN_SEGMENT_BYTES)
        return CP_ERR(err, CP_EINVAL, "wal: segment_bytes %" PRIu64 " is below the minimum %llu",
                      o.segment_bytes, WAL_MIN_SEGMENT_BYTES);
    if (o.sync != WAL_SYNC_FDATASYNC && o.sync != WAL_SYNC_NONE)
        return CP_ERR(err, CP_EINVAL, "wal: unknown sync mode %d", (int)o.sync);
    if (o.initial_lsn == 0)
        o.initial_lsn = 1;
    if (o.initial_lsn >= UINT64_MAX / 2)
        return CP_ERR(err, CP_EINVAL, "wal: initial_lsn %" PRIu64 " out of range", o.initial_lsn);

    wal = calloc(1, sizeof *wal);
    if (wal == NULL)
        return CP_ERR(err, CP_ENOMEM, "wal: out of memory");
    wal->wal_opt = o;
    wal->wal_fd = -1;
    wal->wal_dirfd = -1;
    pthread_mutex_init(&wal->wal_mu, NULL);
    pthread_cond_init(&wal->wal_cv, NULL);
    size_t dl = strlen(dir);
    wal->wal_dir = malloc(dl + 5);
    wal->wal_buf = malloc(WAL_BUF_LIMIT);
    if (wal->wal_dir == NULL || wal->wal_buf == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "wal: out of memory");
        goto out;
    }
    memcpy(wal->wal_dir, dir, dl);
    memcpy(wal->wal_dir + dl, "/wal", 5);

    if (mkdir(wal->wal_dir, 0755) == 0) {
        /* Make the new directory entry itself durable. */
        int pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd < 0 || (sync_enabled(wal) && fsync(pfd) != 0)) {
            st = CP_ERR(err, CP_EIO, "wal: fsync directory %s: %s", dir, strerror(errno));
            if (pfd >= 0)
                close(pfd);
            goto out;
        }
        close(pfd);
    } else if (errno != EEXIST) {
        st = CP_ERR(err, CP_EIO, "wal: create directory %s: %s", wal->wal_dir, strerror(errno));
        goto out;
    }
    wal->wal_dirfd = open(wal->wal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (wal->wal_dirfd < 0) {
        st = CP_ERR(err, CP_EIO, "wal: open directory %s: %s", wal->wal_dir, strerror(errno));
        goto out;
    }
    if (flock(wal->wal_dirfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            st = CP_ERR(err, CP_ELOCKED, "wal: %s is open in another handle or process",
                        wal->wal_dir);
        else
            st = CP_ERR(err, CP_EIO, "wal: lock %s: %s", wal->wal_dir, strerror(errno));
        goto out;
    }
    st = list_segments(wal, err);
    if (st != CP_OK)
        goto out;
    if (wal->wal_nsegs == 0) {
        st = push_segment(wal, o.initial_lsn, err);
        if (st == CP_OK)
            st = create_segment(wal, o.initial_lsn, &wal->wal_fd, err);
        if (st != CP_OK)
            goto out;
        wal->wal_next_lsn = o.initial_lsn;
    } else {
        st = recover_tail(wal, err);
        if (st != CP_OK)
            goto out;
    }
    wal->wal_durable = wal->wal_next_lsn - 1;
    *out = wal;
    wal = NULL;
out:
    wal_close(wal);
    return st;
}

void wal_close(wal_t *wal)
{
    if (wal == NULL)
        return;
    if (wal->wal_fd >= 0) {
        if (!wal->wal_failed && flush_locked(wal, NULL) == CP_OK && sync_enabled(wal))
            (void)fdatasync(wal->wal_fd);
        close(wal->wal_fd);
    }
    if (wal->wal_dirfd >= 0)
        close(wal->wal_dirfd); /* releases the flock */
    pthread_cond_destroy(&wal->wal_cv);
    pthread_mutex_destroy(&wal->wal_mu);
    free(wal->wal_segs);
    free(wal->wal_buf);
    free(wal->wal_dir);
    free(wal);
}

/* -------------------------------------------------------------- append */

cp_status wal_append(wal_t *wal, uint8_t type, const void *payload, size_t len, uint64_t *lsn,
                     cp_error_t *err)
{
    if (len > WAL_MAX_RECORD)
        return CP_ERR(err, CP_ELIMIT, "wal: record of %zu bytes is over the limit of %u", len,
                      WAL_MAX_RECORD);
    if (payload == NULL && len > 0)
        return CP_ERR(err, CP_EINVAL, "wal: NULL payload of %zu bytes", len);
    cp_status st = CP_OK;
    size_t framed = WAL_HEADER_BYTES + len;
    pthread_mutex_lock(&wal->wal_mu);
    if (wal->wal_failed) {
        st = failed_status(wal, err);
        goto out;
    }
    int has_records = wal->wal_next_lsn > wal->wal_segs[wal->wal_nsegs - 1];
    if (has_records &&
        wal->wal_seg_size + wal->wal_buf_len + framed > wal->wal_opt.segment_bytes) {
        st = rotate_locked(wal, err);
        if (st != CP_OK)
            goto out;
    }
    uint64_t l = wal->wal_next_lsn;
    if (framed < WAL_DIRECT_MIN) {
        if (wal->wal_buf_len + framed > WAL_BUF_LIMIT) {
            st = flush_locked(wal, err);
            if (st != CP_OK)
                goto out;
        }
        unsigned char *p = wal->wal_buf + wal->wal_buf_len;
        if (len > 0)
            memcpy(p + WAL_HEADER_BYTES, payload, len);
        encode_header(p, l, type, p + WAL_HEADER_BYTES, len);
        wal->wal_buf_len += framed;
    } else {
        st = flush_locked(wal, err);
        if (st != CP_OK)
            goto out;
        unsigned char hdr[WAL_HEADER_BYTES];
        encode_header(hdr, l, type, payload, len);
        struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, len}};
        st = write_locked(wal, iov, 2, framed, err);
        if (st != CP_OK)
            goto out;
    }
    wal->wal_next_lsn = l + 1;
    wal->wal_st.appends++;
    wal->wal_st.bytes_appended += framed;
    if (lsn != NULL)
        *lsn = l;
out:
    pthread_mutex_unlock(&wal->wal_mu);
    return st;
}

/* ---------------------------------------------------------------- sync */

cp_status wal_sync(wal_t *wal, uint64_t lsn, cp_error_t *err)
{
    cp_status st = CP_OK;
    pthread_mutex_lock(&wal->wal_mu);
    if (lsn >= wal->wal_next_lsn)
        lsn = wal->wal_next_lsn - 1;
    if (wal->wal_durable < lsn)
        wal->wal_st.sync_calls++;
    while (wal->wal_durable < lsn) {
        if (wal->wal_failed) {
            st = failed_status(wal, err);
            break;
        }
        if (wal->wal_syncing) {
            /* A leader is at the disk; its round may cover us. */
            pthread_cond_wait(&wal->wal_cv, &wal->wal_mu);
            continue;
        }
        /* Lead a round: everything appended so far rides along. */
        st = flush_locked(wal, err);
        if (st != CP_OK)
            break;
        uint64_t target = wal->wal_next_lsn - 1;
        char name[32];
        active_name(wal, name, sizeof name);
        int fd = -1;
        if (sync_enabled(wal)) {
            fd = dup(wal->wal_fd);
            if (fd < 0) {
                st = wal_fail(wal, err, "wal: dup %s/%s: %s", wal->wal_dir, name,
                              strerror(errno));
                break;
            }
        }
        wal->wal_syncing = 1;
        pthread_mutex_unlock(&wal->wal_mu);
        int e = 0;
        if (fd >= 0) {
            if (fdatasync(fd) != 0)
                e = errno;
            close(fd);
        }
        if (wal->wal_opt.on_fsync != NULL)
            wal->wal_opt.on_fsync(wal->wal_opt.on_fsync_ud);
        pthread_mutex_lock(&wal->wal_mu);
        wal->wal_syncing = 0;
        wal->wal_st.fsyncs++;
        if (e != 0) {
            st = wal_fail(wal, err, "wal: fdatasync %s/%s: %s", wal->wal_dir, name, strerror(e));
            break;
        }
        if (target > wal->wal_durable)
            wal->wal_durable = target;
        pthread_cond_broadcast(&wal->wal_cv);
    }
    pthread_mutex_unlock(&wal->wal_mu);
    return st;
}

uint64_t wal_durable_lsn(wal_t *wal)
{
    pthread_mutex_lock(&wal->wal_mu);
    uint64_t v = wal->wal_durable;
    pthread_mutex_unlock(&wal->wal_mu);
    return v;
}

uint64_t wal_last_lsn(wal_t *wal)
{
    pthread_mutex_lock(&wal->wal_mu);
    uint64_t v = wal->wal_next_lsn - 1;
    pthread_mutex_unlock(&wal->wal_mu);
    return v;
}

/* ------------------------------------------------- rotation, truncation */

cp_status wal_rotate(wal_t *wal, uint64_t *next_lsn, cp_error_t *err)
{
    cp_status st = CP_OK;
    pthread_mutex_lock(&wal->wal_mu);
    if (wal->wal_failed)
        st = failed_status(wal, err);
    else if (wal->wal_next_lsn > wal->wal_segs[wal->wal_nsegs - 1])
        st = rotate_locked(wal, err);
    if (st == CP_OK && next_lsn != NULL)
        *next_lsn = wal->wal_next_lsn;
    pthread_mutex_unlock(&wal->wal_mu);
    return st;
}

cp_status wal_truncate_before(wal_t *wal, uint64_t lsn, unsigned *deleted, cp_error_t *err)
{
    cp_status st = CP_OK;
    uint64_t *doomed = NULL;
    size_t n = 0;
    if (deleted != NULL)
        *deleted = 0;
    /* Take the segments off the list under the lock; unlink them after it,
     * so appenders do not wait for the directory fsync. */
    pthread_mutex_lock(&wal->wal_mu);
    while (n + 1 < wal->wal_nsegs && wal->wal_segs[n + 1] - 1 <= lsn)
        n++;
    if (n > 0) {
        doomed = malloc(n * sizeof *doomed);
        if (doomed == NULL) {
            pthread_mutex_unlock(&wal->wal_mu);
            return CP_ERR(err, CP_ENOMEM, "wal: out of memory");
        }
        memcpy(doomed, wal->wal_segs, n * sizeof *doomed);
        memmove(wal->wal_segs, wal->wal_segs + n, (wal->wal_nsegs - n) * sizeof *doomed);
        wal->wal_nsegs -= n;
    }
    pthread_mutex_unlock(&wal->wal_mu);

    /* Oldest first, each deletion made durable before the next, so a crash
     * leaves a contiguous suffix of the log. */
    for (size_t i = 0; i < n; i++) {
        char name[32];
        wal_segment_name(doomed[i], name, sizeof name);
        if (unlinkat(wal->wal_dirfd, name, 0) != 0 && errno != ENOENT) {
            st = CP_ERR(err, CP_EIO, "wal: delete %s/%s: %s", wal->wal_dir, name,
                        strerror(errno));
            goto out;
        }
        st = fsync_dir(wal, err);
        if (st != CP_OK)
            goto out;
        if (deleted != NULL)
            (*deleted)++;
    }
out:
    free(doomed);
    return st;
}

/* -------------------------------------------------------------- replay */

cp_status wal_replay(wal_t *wal, uint64_t after_lsn, wal_replay_fn fn, void *ud,
                     cp_error_t *err)
{
    cp_status st = CP_OK;
    uint64_t *segs = NULL;
    size_t nsegs = 0;

    /* Snapshot: what is appended from here on is not visited. The buffer
     * is written out so the files hold every record up to `last`. */
    pthread_mutex_lock(&wal->wal_mu);
    uint64_t last = wal->wal_next_lsn - 1;
    if (wal->wal_failed)
        st = failed_status(wal, err);
    else
        st = flush_locked(wal, err);
    if (st == CP_OK && after_lsn < last) {
        nsegs = wal->wal_nsegs;
        segs = malloc(nsegs * sizeof *segs);
        if (segs == NULL)
            st = CP_ERR(err, CP_ENOMEM, "wal: out of memory");
        else
            memcpy(segs, wal->wal_segs, nsegs * sizeof *segs);
    }
    pthread_mutex_unlock(&wal->wal_mu);
    if (st != CP_OK || after_lsn >= last)
        goto out;

    if (after_lsn + 1 < segs[0]) {
        st = CP_ERR(err, CP_EIO,
                    "wal: replay needs the records after LSN %" PRIu64
                    " but %s starts at LSN %" PRIu64 " (older segments were deleted)",
                    after_lsn, wal->wal_dir, segs[0]);
        goto out;
    }
    size_t i = nsegs - 1;
    while (i > 0 && segs[i] > after_lsn + 1)
        i--;
    uint64_t expect = segs[i];
    char prev[32] = "";
    for (; i < nsegs && expect <= last; i++) {
        char name[32];
        wal_segment_name(segs[i], name, sizeof name);
        if (segs[i] != expect) {
            st = CP_ERR(err, CP_EIO,
                        "wal: LSN gap: %s/%s ends at LSN %" PRIu64 " but the next segment is %s",
                        wal->wal_dir, prev, expect - 1, name);
            goto out;
        }
        /* Older segments are read to their end (to check they end exactly
         * where the next one starts); the active one only up to `last`. */
        int active = i == nsegs - 1;
        seg_scan_t sc;
        st = scan_segment(wal, segs[i], after_lsn, last, active ? last : UINT64_MAX, fn, ud, &sc,
                          err);
        if (st != CP_OK)
            goto out;
        if (sc.why[0] != '\0') {
            st = CP_ERR(err, CP_EIO, "wal: corrupt segment %s/%s at offset %" PRIu64 ": %s",
                        wal->wal_dir, name, sc.end, sc.why);
            goto out;
        }
        expect = segs[i] + sc.count;
        memcpy(prev, name, sizeof name);
    }
    if (expect <= last)
        st = CP_ERR(err, CP_EIO,
                    "wal: %s/%s ends at LSN %" PRIu64 " but the log holds records up to %" PRIu64,
                    wal->wal_dir, prev, expect - 1, last);
out:
    free(segs);
    return st;
}

void wal_stats(wal_t *wal, wal_stats_t *out)
{
    pthread_mutex_lock(&wal->wal_mu);
    *out = wal->wal_st;
    out->segments = wal->wal_nsegs;
    out->first_lsn = wal->wal_segs[0];
    pthread_mutex_unlock(&wal->wal_mu);
}

int wal_failed(wal_t *wal)
{
    pthread_mutex_lock(&wal->wal_mu);
    int f = wal->wal_failed;
    pthread_mutex_unlock(&wal->wal_mu);
    return f;
}

/* -------------------------------------------------------------- peeking */

/*
 * For read-only openers beside a writer (the CLI's --data while a server
 * runs): counts the records with an LSN after `after_lsn` by walking the
 * record headers of every segment, without the lock, without checking
 * CRCs and without changing anything. A torn or growing tail just ends a
 * segment's walk. Approximate by nature (the writer moves on meanwhile),
 * so it is meant for a note, never for a decision.
 */
cp_status wal_peek_count(const char *dir, uint64_t after_lsn, uint64_t *n)
{
    *n = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/wal", dir);
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? CP_OK : CP_EIO;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t first;
        if (!parse_segment_name(e->d_name, &first))
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        uint64_t off = 0;
        unsigned char h[WAL_HEADER_BYTES];
        while (pread(fd, h, sizeof h, (off_t)off) == (ssize_t)sizeof h) {
            uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                           (uint32_t)h[3] << 24;
            uint64_t lsn = 0;
            for (int i = 7; i >= 0; i--)
                lsn = lsn << 8 | h[8 + i];
            if (len > WAL_MAX_RECORD || lsn == 0)
                break;
            if (lsn > after_lsn)
                (*n)++;
            off += WAL_HEADER_BYTES + len;
        }
        close(fd);
    }
    closedir(d);
    return CP_OK;
}
