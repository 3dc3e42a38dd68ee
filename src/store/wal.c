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
#include <sys/statvfs.h>
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
    char *wal_dir; /* DIR/wal */
    int wal_dirfd; /* O_DIRECTORY, flock()ed for the life of the handle */
    wal_options_t wal_opt;
    pthread_mutex_t wal_mu;
    pthread_cond_t wal_cv; /* signalled when a sync round ends or the log fails */

    /* Guarded by wal_mu. */
    uint64_t *wal_segs; /* first LSN of each segment, ascending; the last is active */
    size_t wal_nsegs, wal_segcap;
    int wal_fd;             /* the active segment, positioned at its end */
    uint64_t wal_seg_size;  /* bytes of the active segment already written to the file */
    uint64_t wal_next_lsn;  /* LSN the next append gets */
    uint64_t wal_durable;   /* every record <= this is durable */
    unsigned char *wal_buf; /* encoded records not yet written */
    size_t wal_buf_len;
    int wal_syncing; /* a group-commit leader is in fdatasync */
    int wal_failed;  /* sticky: see wal.h */
    char wal_fail_msg[300];
    wal_stats_t wal_st;
    uint64_t wal_alloc_end; /* active segment: blocks allocated (wal_reserve) up to here */
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

static int sync_enabled(const wal_t *wal)
{
    return wal->wal_opt.sync == WAL_SYNC_FDATASYNC;
}

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

static int is_nospc(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

/* CP_ENOSPC naming the segment and the free space; the log stays usable. */
static cp_status nospc_status(wal_t *wal, cp_error_t *err, const char *what, const char *name)
{
    struct statvfs vfs;
    unsigned long long freeb = 0;
    if (statvfs(wal->wal_dir, &vfs) == 0)
        freeb = (unsigned long long)vfs.f_bavail * (unsigned long long)vfs.f_frsize;
    return CP_ERR(err, CP_ENOSPC,
                  "wal: no space left to %s %s/%s (%llu bytes free on its file system); free "
                  "space and writes resume by themselves",
                  what, wal->wal_dir, name, freeb);
}

/*
 * Writes `iov` at the end of the active segment. On failure the file is cut
 * back to its last whole record (so a reopen finds no garbage in the middle
 * of later data). A full disk (ENOSPC, EDQUOT) is CP_ENOSPC and leaves the
 * log usable: nothing was acknowledged from the cut bytes and the next
 * write starts at the same offset. Any other error fails the log. Caller
 * holds wal_mu.
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
    int cut = ftruncate(wal->wal_fd, (off_t)wal->wal_seg_size) == 0 &&
              lseek(wal->wal_fd, (off_t)wal->wal_seg_size, SEEK_SET) >= 0;
    wal->wal_alloc_end = wal->wal_seg_size; /* the cut may free blocks allocated ahead */
    if (is_nospc(e) && cut)
        return nospc_status(wal, err, "write", name);
    return wal_fail(wal, err, "wal: write %s/%s: %s", wal->wal_dir, name, strerror(e));
}

/* Writes the buffered records. On CP_ENOSPC they stay buffered (their
 * LSNs are taken) and a later flush writes them. */
static cp_status flush_locked(wal_t *wal, cp_error_t *err)
{
    if (wal->wal_buf_len == 0)
        return CP_OK;
    struct iovec iov = {wal->wal_buf, wal->wal_buf_len};
    cp_status st = write_locked(wal, &iov, 1, wal->wal_buf_len, err);
    if (st == CP_OK)
        wal->wal_buf_len = 0;
    return st;
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
    if (f < 0) {
        int e = errno;
        cp_status st =
            CP_ERR(err, CP_EIO, "wal: create %s/%s: %s", wal->wal_dir, name, strerror(e));
        errno = e; /* rotate_locked tells a full disk from a failure */
        return st;
    }
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
        int e = 0;
        st = create_segment(wal, wal->wal_next_lsn, &fd, &e2);
        if (st != CP_OK)
            e = errno;
        if (st != CP_OK)
            wal->wal_nsegs--;
        /* No room for the new file: the active one stays active and
         * whole, so the log goes on when space returns. */
        if (st != CP_OK && is_nospc(e)) {
            char next[32];
            wal_segment_name(wal->wal_next_lsn, next, sizeof next);
            return nospc_status(wal, err, "create", next);
        }
    }
    if (st != CP_OK)
        return wal_fail(wal, err, "%s", e2.message);
    close(wal->wal_fd);
    wal->wal_fd = fd;
    wal->wal_seg_size = 0;
    wal->wal_alloc_end = 0;
    return CP_OK;
}

/* ------------------------------------------------------------- reading */

typedef struct seg_scan {
    uint64_t end;   /* byte offset after the last valid record */
    uint64_t count; /* valid records read */
    uint64_t size;  /* file size seen */
    char why[160];  /* empty: the file ended at `end` (or stop reached); else what ended it */
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
                st =
                    CP_ERR(err, CP_EIO, "wal: read %s/%s: %s", wal->wal_dir, name, strerror(errno));
                goto out;
            }
            if (got > 0)
                snprintf(out->why, sizeof out->why, "partial record header (%zu of %u bytes)", got,
                         WAL_HEADER_BYTES);
            break;
        }
        uint32_t len = get_u32(hdr);
        uint64_t lsn = get_u64(hdr + 8);
        if (len > WAL_MAX_RECORD) {
            snprintf(out->why, sizeof out->why, "record length %" PRIu32 " over the limit %u", len,
                     WAL_MAX_RECORD);
            break;
        }
        uint64_t avail =
            out->size >= out->end + WAL_HEADER_BYTES ? out->size - out->end - WAL_HEADER_BYTES : 0;
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
                st =
                    CP_ERR(err, CP_EIO, "wal: read %s/%s: %s", wal->wal_dir, name, strerror(errno));
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

/* ------------------------------------------------------------- damage */

/*
 * Telling a torn tail from damage. A crash can only tear the end of the
 * newest segment: the records after the tear were never made durable, so
 * never acknowledged. Damage anywhere else (a flipped bit, a zeroed page,
 * a truncated older segment) is followed by records that were. So after
 * the first invalid record the rest of the file is searched byte by byte
 * for a well-formed record (length in bounds, CRC right, LSN not below the
 * one expected): finding one means the log goes on past the damage, and
 * dropping it would lose acknowledged records silently.
 */

/* Reads the whole of segment `first` into *buf (caller frees). */
static cp_status read_segment(wal_t *wal, uint64_t first, unsigned char **buf, size_t *len,
                              cp_error_t *err)
{
    char name[32];
    wal_segment_name(first, name, sizeof name);
    *buf = NULL;
    *len = 0;
    int fd = openat(wal->wal_dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "wal: open %s/%s: %s", wal->wal_dir, name, strerror(errno));
    cp_status st = CP_OK;
    struct stat sb;
    unsigned char *b = NULL;
    size_t n = 0;
    if (fstat(fd, &sb) != 0) {
        st = CP_ERR(err, CP_EIO, "wal: stat %s/%s: %s", wal->wal_dir, name, strerror(errno));
        goto out;
    }
    n = (size_t)sb.st_size;
    b = malloc(n ? n : 1);
    if (b == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "wal: out of memory reading %s/%s", wal->wal_dir, name);
        goto out;
    }
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, b + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            st = CP_ERR(err, CP_EIO, "wal: read %s/%s: %s", wal->wal_dir, name,
                        r < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)r;
    }
    *buf = b;
    *len = n;
    b = NULL;
out:
    free(b);
    close(fd);
    return st;
}

/* 1 if a whole record with a right CRC and an LSN >= expect starts at
 * b[off] (LSN and payload length in *lsn, *plen). The cheap tests come
 * first: the search calls this at every byte of a damaged stretch, and an
 * LSN can be at most one per 17 bytes past the one expected. */
static int record_at(const unsigned char *b, size_t n, size_t off, uint64_t expect, uint64_t *lsn,
                     uint32_t *plen)
{
    if (off > n || n - off < WAL_HEADER_BYTES)
        return 0;
    uint32_t len = get_u32(b + off);
    if (len > WAL_MAX_RECORD || n - off - WAL_HEADER_BYTES < len)
        return 0;
    uint64_t l = get_u64(b + off + 8);
    if (l < expect || l - expect > (uint64_t)n / WAL_HEADER_BYTES + 1)
        return 0;
    if (record_crc(b + off, b + off + WAL_HEADER_BYTES, len) != get_u32(b + off + 4))
        return 0;
    *lsn = l;
    *plen = len;
    return 1;
}

/*
 * Walks b[from, n) and reports each stretch: a valid record (valid = 1,
 * lsn set) or a run of bytes that holds none (valid = 0). A record counts
 * when its CRC is right and its LSN is at least `expect` (the LSN owed
 * next), which then moves past it. Stops early when fn returns non-zero.
 */
typedef int (*stretch_fn)(void *ud, int valid, size_t off, size_t len, uint64_t lsn);
static void walk_stretches(const unsigned char *b, size_t n, size_t from, uint64_t expect,
                           stretch_fn fn, void *ud)
{
    size_t off = from, bad = SIZE_MAX;
    while (off < n) {
        uint64_t lsn;
        uint32_t len;
        if (record_at(b, n, off, expect, &lsn, &len)) {
            if (bad != SIZE_MAX && fn(ud, 0, bad, off - bad, 0))
                return;
            bad = SIZE_MAX;
            if (fn(ud, 1, off, WAL_HEADER_BYTES + (size_t)len, lsn))
                return;
            expect = lsn + 1;
            off += WAL_HEADER_BYTES + (size_t)len;
            continue;
        }
        if (bad == SIZE_MAX)
            bad = off;
        off++;
    }
    if (bad != SIZE_MAX)
        (void)fn(ud, 0, bad, n - bad, 0);
}

typedef struct survey {
    uint64_t records;             /* valid records found */
    uint64_t first_lsn, last_lsn; /* the LSNs of the first and last of them */
} survey_t;

static int survey_cb(void *ud, int valid, size_t off, size_t len, uint64_t lsn)
{
    (void)off;
    (void)len;
    survey_t *s = ud;
    if (valid) {
        if (s->records++ == 0)
            s->first_lsn = lsn;
        s->last_lsn = lsn;
    }
    return 0;
}

/*
 * Counts the valid records of the log after damage found in segment
 * segs[i] at byte `off` (the invalid record there itself excluded; `expect`
 * is the LSN it should have had): the rest of that segment and every
 * segment after it. Adds to *s.
 */
static cp_status survey_after_damage(wal_t *wal, const uint64_t *segs, size_t nsegs, size_t i,
                                     uint64_t off, uint64_t expect, survey_t *s, cp_error_t *err)
{
    for (; i < nsegs; i++) {
        unsigned char *b = NULL;
        size_t n = 0;
        cp_status st = read_segment(wal, segs[i], &b, &n, err);
        if (st != CP_OK)
            return st;
        if (off == 0 && segs[i] > expect)
            expect = segs[i]; /* a later segment: its name is its first LSN */
        walk_stretches(b, n, (size_t)off, expect, survey_cb, s);
        free(b);
        if (s->records > 0)
            expect = s->last_lsn + 1;
        off = 0;
    }
    return CP_OK;
}

/* The refusal: names the segment, the byte offset and what follows. */
static cp_status damage_refusal(wal_t *wal, const char *name, uint64_t off, const char *why,
                                const survey_t *s, cp_error_t *err)
{
    if (s->records == 0)
        return CP_ERR(err, CP_ECORRUPT,
                      "wal: damaged record in %s/%s at byte offset %" PRIu64
                      " (%s) in a segment before the newest, so it is not a torn tail",
                      wal->wal_dir, name, off, why);
    return CP_ERR(err, CP_ECORRUPT,
                  "wal: damaged record in %s/%s at byte offset %" PRIu64 " (%s); %" PRIu64
                  " acknowledged records follow it (LSN %" PRIu64 "-%" PRIu64
                  "), so it is not a torn tail",
                  wal->wal_dir, name, off, why, s->records, s->first_lsn, s->last_lsn);
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
    if (sc.end < sc.size) {
        /* Torn tail or damage? Valid records after it say damage. */
        survey_t sv = {0};
        st = survey_after_damage(wal, &first, 1, 0, sc.end + 1, first + sc.count, &sv, err);
        if (st != CP_OK)
            return st;
        if (sv.records > 0)
            return damage_refusal(wal, name, sc.end, sc.why[0] ? sc.why : "garbage", &sv, err);
    }
    int fd = openat(wal->wal_dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "wal: open %s/%s: %s", wal->wal_dir, name, strerror(errno));
    if (sc.end < sc.size) {
        if (ftruncate(fd, (off_t)sc.end) != 0) {
            st =
                CP_ERR(err, CP_EIO, "wal: truncate %s/%s: %s", wal->wal_dir, name, strerror(errno));
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
    if (has_records && wal->wal_seg_size + wal->wal_buf_len + framed > wal->wal_opt.segment_bytes) {
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

/* Allocation ahead of the writes: segments grow in steps of this many bytes. */
#define WAL_RESERVE_STEP (1u << 20)

cp_status wal_reserve(wal_t *wal, size_t len, cp_error_t *err)
{
    cp_status st = CP_OK;
    size_t framed = WAL_HEADER_BYTES + len;
    pthread_mutex_lock(&wal->wal_mu);
    if (wal->wal_failed) {
        st = failed_status(wal, err);
        goto out;
    }
    /* The segment the record will go to: rotate now if wal_append would. */
    int has_records = wal->wal_next_lsn > wal->wal_segs[wal->wal_nsegs - 1];
    if (has_records && wal->wal_seg_size + wal->wal_buf_len + framed > wal->wal_opt.segment_bytes) {
        st = rotate_locked(wal, err);
        if (st != CP_OK)
            goto out;
    }
    uint64_t end = wal->wal_seg_size + wal->wal_buf_len;
    if (wal->wal_alloc_end < end)
        wal->wal_alloc_end = end;
    if (end + framed <= wal->wal_alloc_end)
        goto out;
    /* FALLOC_FL_KEEP_SIZE: the blocks are the file's, its length stays the
     * end of its last record, so recovery reads exactly what was written. */
    uint64_t want = end + framed - wal->wal_alloc_end;
    uint64_t step = want > WAL_RESERVE_STEP ? want : WAL_RESERVE_STEP;
    char name[32];
    active_name(wal, name, sizeof name);
    int rc = fallocate(wal->wal_fd, FALLOC_FL_KEEP_SIZE, (off_t)wal->wal_alloc_end, (off_t)step);
    if (rc != 0 && is_nospc(errno) && step > want) {
        step = want;
        rc = fallocate(wal->wal_fd, FALLOC_FL_KEEP_SIZE, (off_t)wal->wal_alloc_end, (off_t)step);
    }
    if (rc == 0)
        wal->wal_alloc_end += step;
    else if (is_nospc(errno))
        st = nospc_status(wal, err, "extend", name);
    else if (errno != EOPNOTSUPP && errno != ENOSYS)
        st = CP_ERR(err, CP_EIO, "wal: allocate %s/%s: %s", wal->wal_dir, name, strerror(errno));
    /* else: a file system without fallocate; a full disk shows at write(). */
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
                st = wal_fail(wal, err, "wal: dup %s/%s: %s", wal->wal_dir, name, strerror(errno));
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
            st = CP_ERR(err, CP_EIO, "wal: delete %s/%s: %s", wal->wal_dir, name, strerror(errno));
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

cp_status wal_replay(wal_t *wal, uint64_t after_lsn, wal_replay_fn fn, void *ud, cp_error_t *err)
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
        st = CP_ERR(err, CP_ECORRUPT,
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
            st = CP_ERR(err, CP_ECORRUPT,
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
            survey_t sv = {0};
            st = survey_after_damage(wal, segs, nsegs, i, sc.end + 1, segs[i] + sc.count, &sv, err);
            if (st == CP_OK)
                st = damage_refusal(wal, name, sc.end, sc.why, &sv, err);
            goto out;
        }
        expect = segs[i] + sc.count;
        memcpy(prev, name, sizeof name);
    }
    /* The records ran out before the segments did: only an empty active
     * segment, named for the next LSN, may be left. Any other (a stray or
     * overlapping segment that wal_open, reading only the last one, did
     * not see) is damage, and an append would give its LSNs a second
     * record. */
    if (expect > last && i < nsegs && !(i == nsegs - 1 && segs[i] == expect)) {
        char name[32];
        wal_segment_name(segs[i], name, sizeof name);
        st = CP_ERR(err, CP_ECORRUPT,
                    "wal: LSN gap: %s/%s ends at LSN %" PRIu64 " but the next segment is %s",
                    wal->wal_dir, prev, expect - 1, name);
        goto out;
    }
    if (expect <= last)
        st = CP_ERR(err, CP_ECORRUPT,
                    "wal: %s/%s ends at LSN %" PRIu64 " but the log holds records up to %" PRIu64,
                    wal->wal_dir, prev, expect - 1, last);
out:
    free(segs);
    return st;
}

/* ------------------------------------------------------------- salvage */

typedef struct salvage {
    wal_t *wal;
    const char *name;       /* the segment being read */
    const unsigned char *b; /* its bytes */
    unsigned char *outb;    /* its rewritten bytes */
    size_t outn, outcap;
    uint64_t next; /* LSN owed next */
    const char *side_path;
    FILE *side;
    uint8_t noop_type;
    wal_salvage_report_t *rep;
    int changed;
    cp_status st;
    cp_error_t *err;
} salvage_t;

static int out_bytes(salvage_t *s, const void *p, size_t n)
{
    if (s->outn + n > s->outcap) {
        size_t cap = s->outcap ? s->outcap : 4096;
        while (cap < s->outn + n)
            cap *= 2;
        unsigned char *q = realloc(s->outb, cap);
        if (q == NULL) {
            s->st = CP_ERR(s->err, CP_ENOMEM, "wal: out of memory salvaging %s", s->name);
            return 1;
        }
        s->outb = q;
        s->outcap = cap;
    }
    memcpy(s->outb + s->outn, p, n);
    s->outn += n;
    return 0;
}

/* No-op records for the LSNs up to `upto` the log lacks. */
static int fill_noops(salvage_t *s, uint64_t upto)
{
    for (; s->next <= upto; s->next++) {
        unsigned char hdr[WAL_HEADER_BYTES];
        encode_header(hdr, s->next, s->noop_type, NULL, 0);
        if (out_bytes(s, hdr, sizeof hdr))
            return 1;
        s->rep->lsns_lost++;
        s->changed = 1;
    }
    return 0;
}

static int salvage_cb(void *ud, int valid, size_t off, size_t len, uint64_t lsn)
{
    salvage_t *s = ud;
    if (valid) {
        if (fill_noops(s, lsn - 1) || out_bytes(s, s->b + off, len))
            return 1;
        s->next = lsn + 1;
        s->rep->records_kept++;
        return 0;
    }
    /* Set the stretch aside, raw, with where it was. */
    s->changed = 1;
    s->rep->ranges++;
    s->rep->bytes_dropped += len;
    if (s->side == NULL) {
        s->side = fopen(s->side_path, "ab");
        if (s->side == NULL) {
            s->st = CP_ERR(s->err, CP_EIO, "wal: create %s: %s", s->side_path, strerror(errno));
            return 1;
        }
    }
    fprintf(s->side,
            "crowdpack-wal-dropped segment %s/%s offset %zu length %zu next-lsn %" PRIu64 "\n",
            s->wal->wal_dir, s->name, off, len, s->next);
    if (fwrite(s->b + off, 1, len, s->side) != len || fputc('\n', s->side) == EOF) {
        s->st = CP_ERR(s->err, CP_EIO, "wal: write %s: %s", s->side_path, strerror(errno));
        return 1;
    }
    return 0;
}

/* Replaces segment `name` by s->outb: a temporary file, synced, renamed. */
static cp_status rewrite_segment(salvage_t *s, const char *name)
{
    char tmp[48];
    snprintf(tmp, sizeof tmp, "%s.salvage", name);
    wal_t *wal = s->wal;
    int fd = openat(wal->wal_dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return CP_ERR(s->err, CP_EIO, "wal: create %s/%s: %s", wal->wal_dir, tmp, strerror(errno));
    struct iovec iov = {s->outb, s->outn};
    int e = s->outn ? write_all(fd, &iov, 1) : 0;
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    close(fd);
    if (e == 0 && renameat(wal->wal_dirfd, tmp, wal->wal_dirfd, name) != 0)
        e = errno;
    if (e != 0) {
        (void)unlinkat(wal->wal_dirfd, tmp, 0);
        return CP_ERR(s->err, CP_EIO, "wal: rewrite %s/%s: %s", wal->wal_dir, name, strerror(e));
    }
    if (fsync(wal->wal_dirfd) != 0)
        return CP_ERR(s->err, CP_EIO, "wal: fsync directory %s: %s", wal->wal_dir, strerror(errno));
    return CP_OK;
}

cp_status wal_salvage(const char *dir, uint64_t applied, uint8_t noop_type, const char *side_path,
                      wal_salvage_report_t *rep, cp_error_t *err)
{
    cp_status st = CP_OK;
    wal_t *wal = NULL;
    unsigned char *b = NULL;
    salvage_t s = {0};
    memset(rep, 0, sizeof *rep);
    wal_options_t o = {0};
    o.sync = WAL_SYNC_FDATASYNC;
    /* wal_open refuses a damaged log, so the files are read here directly,
     * under the same directory lock. */
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
    if (wal->wal_dir == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "wal: out of memory");
        goto out;
    }
    memcpy(wal->wal_dir, dir, dl);
    memcpy(wal->wal_dir + dl, "/wal", 5);
    if (mkdir(wal->wal_dir, 0755) == 0)
        rep->created = 1;
    else if (errno != EEXIST) {
        st = CP_ERR(err, CP_EIO, "wal: create directory %s: %s", wal->wal_dir, strerror(errno));
        goto out;
    }
    wal->wal_dirfd = open(wal->wal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (wal->wal_dirfd < 0) {
        st = CP_ERR(err, CP_EIO, "wal: open directory %s: %s", wal->wal_dir, strerror(errno));
        goto out;
    }
    if (flock(wal->wal_dirfd, LOCK_EX | LOCK_NB) != 0) {
        st = CP_ERR(err, CP_ELOCKED, "wal: %s is open in another handle or process", wal->wal_dir);
        goto out;
    }
    if ((st = list_segments(wal, err)) != CP_OK)
        goto out;
    s.wal = wal;
    s.side_path = side_path;
    s.noop_type = noop_type;
    s.rep = rep;
    s.err = err;
    if (wal->wal_nsegs == 0 || wal->wal_segs[0] > applied + 1) {
        /* Missing or deleted segments: a segment at applied + 1, with
         * no-ops up to the first surviving one. */
        uint64_t upto = wal->wal_nsegs ? wal->wal_segs[0] - 1 : applied;
        char name[32];
        wal_segment_name(applied + 1, name, sizeof name);
        s.name = name;
        s.next = applied + 1;
        if (fill_noops(&s, upto)) {
            st = s.st;
            goto out;
        }
        if ((st = rewrite_segment(&s, name)) != CP_OK)
            goto out;
        rep->segments_rewritten++;
        s.outn = 0;
        if ((st = push_segment(wal, applied + 1, err)) != CP_OK)
            goto out;
        qsort(wal->wal_segs, wal->wal_nsegs, sizeof *wal->wal_segs, cmp_u64);
    }
    for (size_t i = 0; i < wal->wal_nsegs; i++) {
        uint64_t first = wal->wal_segs[i];
        char name[32];
        wal_segment_name(first, name, sizeof name);
        size_t n = 0;
        free(b);
        b = NULL;
        if ((st = read_segment(wal, first, &b, &n, err)) != CP_OK)
            goto out;
        rep->segments++;
        if (i > 0 && first < s.next) {
            st = CP_ERR(err, CP_ECORRUPT,
                        "wal: segment %s/%s starts at LSN %" PRIu64
                        " but the one before it holds records up to %" PRIu64
                        ": overlapping segments need a person to decide",
                        wal->wal_dir, name, first, s.next - 1);
            goto out;
        }
        s.name = name;
        s.b = b;
        s.outn = 0;
        s.changed = 0;
        if (i == 0 || first > s.next)
            s.next = first;
        walk_stretches(b, n, 0, first, salvage_cb, &s);
        if (s.st != CP_OK) {
            st = s.st;
            goto out;
        }
        /* An older segment ends where the next begins; the newest at least
         * at what data.mdb has applied. */
        uint64_t upto = i + 1 < wal->wal_nsegs ? wal->wal_segs[i + 1] - 1 : applied;
        if (s.next <= upto && fill_noops(&s, upto)) {
            st = s.st;
            goto out;
        }
        if (s.changed) {
            if ((st = rewrite_segment(&s, name)) != CP_OK)
                goto out;
            rep->segments_rewritten++;
        }
    }
    rep->last_lsn = s.next - 1;
out:
    if (s.side != NULL && fclose(s.side) != 0 && st == CP_OK)
        st = CP_ERR(err, CP_EIO, "wal: write %s: %s", side_path, strerror(errno));
    free(s.outb);
    free(b);
    wal_close(wal);
    return st;
}

void wal_stats(wal_t *wal, wal_stats_t *out)
{
    pthread_mutex_lock(&wal->wal_mu);
    *out = wal->wal_st;
    out->segments = wal->wal_nsegs;
    out->first_lsn = wal->wal_segs[0];
    out->active_first_lsn = wal->wal_segs[wal->wal_nsegs - 1];
    pthread_mutex_unlock(&wal->wal_mu);
}

int wal_failed(wal_t *wal)
{
    pthread_mutex_lock(&wal->wal_mu);
    int f = wal->wal_failed;
    pthread_mutex_unlock(&wal->wal_mu);
    return f;
}

cp_status wal_write_out(wal_t *wal, cp_error_t *err)
{
    pthread_mutex_lock(&wal->wal_mu);
    cp_status rc = CP_OK;
    if (wal->wal_failed)
        rc = CP_ERR(err, CP_EIO, "%s", wal->wal_fail_msg);
    else
        rc = flush_locked(wal, err);
    pthread_mutex_unlock(&wal->wal_mu);
    return rc;
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
            uint32_t len =
                (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
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
