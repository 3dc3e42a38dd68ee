/*
 * crashlog.c — a test-only LD_PRELOAD library that records every write the
 * process issues to files under one directory, with offsets and bytes, and
 * every sync, truncation, creation, rename and deletion there, in the order
 * they happened. tests/integration/test_crash.py builds possible post-crash
 * disk images from the record (the approach of SQLite's crash tests and of
 * ALICE: writes not yet synced may be lost, reordered or torn).
 *
 * Environment:
 *   CP_CRASH_DIR  absolute directory whose files are recorded (required)
 *   CP_CRASH_LOG  file the record is appended to (required)
 *
 * The record is a sequence of lines, each optionally followed by raw bytes:
 *   W <path> <offset> <len> <dsync>\n<len bytes>   a write that completed
 *   F <path>\n                 fsync/fdatasync of a file (covers its writes)
 *   D <path>\n                 fsync of a directory (covers its entries)
 *   T <path> <len>\n           ftruncate, or a size set by posix_fallocate
 *   C <path>\n                 a file or directory created
 *   U <path>\n                 unlink
 *   R <old> <new>\n            rename
 * Paths have no spaces (the test's directories have none). Another process
 * may append its own lines (the test appends "A <n>" after each
 * acknowledgement); every record is one write() with O_APPEND.
 *
 * A global mutex is held across each recorded call and its record, so the
 * order of the record is the order the kernel saw (a sync covers exactly
 * the writes recorded before it). Memory-mapped writes cannot be seen:
 * the store must not write through a map (store.c opens LMDB without
 * MDB_WRITEMAP).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 65536

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];
static size_t dirlen;
static int logfd = -1;
static char *paths[MAXFD]; /* recorded path of each tracked descriptor */
static unsigned char dsync[MAXFD];
/* The file each was opened on: glibc closes some descriptors without
 * calling close() (fclose), so a number may be reused by a file we must
 * not record; the inode tells. */
static dev_t devs[MAXFD];
static ino_t inos[MAXFD];

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

#define REAL(name)                                                                                 \
    static __typeof__(&name) real_##name;                                                          \
    if (real_##name == NULL)                                                                       \
    real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

static void init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    const char *d = getenv("CP_CRASH_DIR"), *l = getenv("CP_CRASH_LOG");
    if (!d || !l || strlen(d) >= sizeof dir)
        return;
    strcpy(dir, d);
    dirlen = strlen(dir);
    while (dirlen > 1 && dir[dirlen - 1] == '/')
        dir[--dirlen] = '\0';
    int (*ro)(const char *, int, ...) = (open_fn)dlsym(RTLD_NEXT, "open");
    logfd = ro(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static int tracked(const char *p)
{
    return logfd >= 0 && strncmp(p, dir, dirlen) == 0 && (p[dirlen] == '/' || p[dirlen] == 0);
}

/* Absolute form of path p relative to dirfd (AT_FDCWD or a descriptor). */
static void absolute(int dirfd, const char *p, char *out, size_t cap)
{
    if (p[0] == '/') {
        snprintf(out, cap, "%s", p);
        return;
    }
    char base[PATH_MAX] = "";
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base))
            base[0] = 0;
    } else if (dirfd >= 0 && dirfd < MAXFD && paths[dirfd]) {
        snprintf(base, sizeof base, "%s", paths[dirfd]);
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        base[n > 0 ? n : 0] = 0;
    }
    snprintf(out, cap, "%s/%s", base, p);
}

static void put(const char *head, const void *data, size_t len)
{
    size_t hl = strlen(head);
    char *buf = malloc(hl + len);
    if (!buf)
        abort(); /* a test tool: a lost record would make the test lie */
    memcpy(buf, head, hl);
    if (len)
        memcpy(buf + hl, data, len);
    size_t off = 0;
    while (off < hl + len) {
        ssize_t n = write(logfd, buf + off, hl + len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort();
        off += (size_t)n;
    }
    free(buf);
}

static void rec(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void rec(const char *fmt, ...)
{
    char line[2 * PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    put(line, NULL, 0);
}

static void track(int fd, const char *abs, int flags)
{
    if (fd < 0 || fd >= MAXFD)
        return;
    free(paths[fd]);
    paths[fd] = strdup(abs);
    dsync[fd] = (flags & (O_DSYNC | O_SYNC)) != 0;
    struct stat sb;
    if (fstat(fd, &sb) == 0) {
        devs[fd] = sb.st_dev;
        inos[fd] = sb.st_ino;
    }
}

static int do_open(int dirfd, const char *p, int flags, mode_t mode)
{
    REAL(open);
    REAL(openat);
    init();
    char abs[PATH_MAX];
    absolute(dirfd, p, abs, sizeof abs);
    if (!tracked(abs))
        return dirfd == AT_FDCWD ? real_open(p, flags, mode) : real_openat(dirfd, p, flags, mode);
    pthread_mutex_lock(&mu);
    struct stat sb;
    int existed = stat(abs, &sb) == 0;
    int fd = dirfd == AT_FDCWD ? real_open(p, flags, mode) : real_openat(dirfd, p, flags, mode);
    int e = errno;
    if (fd >= 0) {
        track(fd, abs, flags);
        if (!existed && (flags & O_CREAT))
            rec("C %s\n", abs);
        else if (existed && (flags & O_TRUNC) && S_ISREG(sb.st_mode))
            rec("T %s 0\n", abs);
    }
    pthread_mutex_unlock(&mu);
    errno = e;
    return fd;
}

static mode_t va_mode(int flags, va_list ap)
{
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *p, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, p, flags, m);
}
int open64(const char *p, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, p, flags, m);
}
int openat(int d, const char *p, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(d, p, flags, m);
}
int openat64(int d, const char *p, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(d, p, flags, m);
}
int __open_2(const char *p, int flags)
{
    return do_open(AT_FDCWD, p, flags, 0);
}
int __open64_2(const char *p, int flags)
{
    return do_open(AT_FDCWD, p, flags, 0);
}
int __openat_2(int d, const char *p, int flags)
{
    return do_open(d, p, flags, 0);
}
int __openat64_2(int d, const char *p, int flags)
{
    return do_open(d, p, flags, 0);
}

int close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < MAXFD && paths[fd]) {
        pthread_mutex_lock(&mu);
        free(paths[fd]);
        paths[fd] = NULL;
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}

int dup(int fd)
{
    REAL(dup);
    int n = real_dup(fd);
    if (n >= 0 && fd >= 0 && fd < MAXFD && paths[fd]) {
        pthread_mutex_lock(&mu);
        track(n, paths[fd], dsync[fd] ? O_DSYNC : 0); /* fstat gives the same inode */
        pthread_mutex_unlock(&mu);
    }
    return n;
}

static int is_tracked_fd(int fd)
{
    if (fd < 0 || fd >= MAXFD || paths[fd] == NULL)
        return 0;
    struct stat sb;
    if (fstat(fd, &sb) == 0 && sb.st_dev == devs[fd] && sb.st_ino == inos[fd])
        return 1;
    pthread_mutex_lock(&mu);
    free(paths[fd]);
    paths[fd] = NULL;
    pthread_mutex_unlock(&mu);
    return 0;
}

/* One record of header and data (a single write). */
static void rec_write(int fd, off_t off, const struct iovec *iov, int cnt, ssize_t n)
{
    if (n <= 0)
        return;
    char head[PATH_MAX + 96];
    snprintf(head, sizeof head, "W %s %lld %lld %d\n", paths[fd], (long long)off, (long long)n,
             dsync[fd]);
    char *buf = malloc((size_t)n);
    if (!buf)
        abort();
    size_t got = 0;
    for (int i = 0; i < cnt && got < (size_t)n; i++) {
        size_t k = iov[i].iov_len;
        if (k > (size_t)n - got)
            k = (size_t)n - got;
        memcpy(buf + got, iov[i].iov_base, k);
        got += k;
    }
    put(head, buf, (size_t)n);
    free(buf);
}

ssize_t pwrite(int fd, const void *b, size_t n, off_t off)
{
    REAL(pwrite);
    if (!is_tracked_fd(fd))
        return real_pwrite(fd, b, n, off);
    pthread_mutex_lock(&mu);
    ssize_t r = real_pwrite(fd, b, n, off);
    int e = errno;
    struct iovec v = {(void *)b, n};
    rec_write(fd, off, &v, 1, r);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t off)
{
    return pwrite(fd, b, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REAL(pwritev);
    if (!is_tracked_fd(fd))
        return real_pwritev(fd, iov, cnt, off);
    pthread_mutex_lock(&mu);
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    int e = errno;
    rec_write(fd, off, iov, cnt, r);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return pwritev(fd, iov, cnt, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(writev);
    if (!is_tracked_fd(fd))
        return real_writev(fd, iov, cnt);
    pthread_mutex_lock(&mu);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_writev(fd, iov, cnt);
    int e = errno;
    rec_write(fd, off, iov, cnt, r);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

ssize_t write(int fd, const void *b, size_t n)
{
    REAL(write);
    if (!is_tracked_fd(fd))
        return real_write(fd, b, n);
    pthread_mutex_lock(&mu);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, b, n);
    int e = errno;
    struct iovec v = {(void *)b, n};
    rec_write(fd, off, &v, 1, r);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

static int do_sync(int fd, int (*real)(int))
{
    if (!is_tracked_fd(fd))
        return real(fd);
    pthread_mutex_lock(&mu);
    int r = real(fd);
    int e = errno;
    struct stat sb;
    if (r == 0 && fstat(fd, &sb) == 0)
        rec("%c %s\n", S_ISDIR(sb.st_mode) ? 'D' : 'F', paths[fd]);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

int fsync(int fd)
{
    REAL(fsync);
    return do_sync(fd, real_fsync);
}

int fdatasync(int fd)
{
    REAL(fdatasync);
    return do_sync(fd, real_fdatasync);
}

int msync(void *addr, size_t len, int flags)
{
    REAL(msync);
    /* Writes through a map are invisible here; say so loudly in the record. */
    if (logfd >= 0 && (flags & MS_SYNC))
        rec("M %zu\n", len);
    return real_msync(addr, len, flags);
}

int ftruncate(int fd, off_t len)
{
    REAL(ftruncate);
    if (!is_tracked_fd(fd))
        return real_ftruncate(fd, len);
    pthread_mutex_lock(&mu);
    int r = real_ftruncate(fd, len);
    int e = errno;
    if (r == 0)
        rec("T %s %lld\n", paths[fd], (long long)len);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}
int ftruncate64(int fd, off_t len)
{
    return ftruncate(fd, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    REAL(posix_fallocate);
    if (!is_tracked_fd(fd))
        return real_posix_fallocate(fd, off, len);
    pthread_mutex_lock(&mu);
    struct stat sb;
    int had = fstat(fd, &sb) == 0;
    int r = real_posix_fallocate(fd, off, len);
    if (r == 0 && had && off + len > sb.st_size)
        rec("T %s %lld\n", paths[fd], (long long)(off + len));
    pthread_mutex_unlock(&mu);
    return r;
}
int posix_fallocate64(int fd, off_t off, off_t len)
{
    return posix_fallocate(fd, off, len);
}

static void rec_path(char op, int dirfd, const char *p)
{
    char abs[PATH_MAX];
    absolute(dirfd, p, abs, sizeof abs);
    if (tracked(abs))
        rec("%c %s\n", op, abs);
}

int unlink(const char *p)
{
    REAL(unlink);
    init();
    pthread_mutex_lock(&mu);
    int r = real_unlink(p);
    int e = errno;
    if (r == 0)
        rec_path('U', AT_FDCWD, p);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

int unlinkat(int d, const char *p, int flags)
{
    REAL(unlinkat);
    init();
    pthread_mutex_lock(&mu);
    int r = real_unlinkat(d, p, flags);
    int e = errno;
    if (r == 0)
        rec_path('U', d, p);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

int mkdir(const char *p, mode_t m)
{
    REAL(mkdir);
    init();
    pthread_mutex_lock(&mu);
    int r = real_mkdir(p, m);
    int e = errno;
    if (r == 0)
        rec_path('C', AT_FDCWD, p);
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

int rename(const char *a, const char *b)
{
    REAL(rename);
    init();
    pthread_mutex_lock(&mu);
    int r = real_rename(a, b);
    int e = errno;
    if (r == 0) {
        char x[PATH_MAX], y[PATH_MAX];
        absolute(AT_FDCWD, a, x, sizeof x);
        absolute(AT_FDCWD, b, y, sizeof y);
        if (tracked(x) || tracked(y))
            rec("R %s %s\n", x, y);
    }
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}
