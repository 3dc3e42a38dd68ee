/*
 * fuzz_wal.c — libFuzzer target for write-ahead log recovery
 * (src/store/wal.c): arbitrary bytes as the segment files of DIR/wal, then
 * what a restart does with them. The first byte picks how many segments
 * (1..3) the rest is cut into and their first LSNs; each segment but the
 * last is preceded by a two-byte length. Contract: wal_open either fails
 * with a status (CP_ECORRUPT, CP_EIO, ...) and a message, or opens a log
 * whose replay visits LSNs in order, one apart, each payload within
 * WAL_MAX_RECORD, and which takes a new record with the next LSN that a
 * second replay sees. Whatever happened, wal_salvage makes the directory
 * open and replay cleanly. Nothing may crash. Corpus: tests/fuzz/wal/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/wal.h"

static char g_dir[256], g_wal[300], g_side[300];

static void die(const char *what, const cp_error_t *err)
{
    fprintf(stderr, "fuzz_wal: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    abort();
}

static void quiet(void *ud, const char *msg)
{
    (void)ud;
    (void)msg;
}

/* Empties DIR/wal (and the side file) for the next input. */
static void clear(void)
{
    DIR *d = opendir(g_wal);
    if (d != NULL) {
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.')
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    unlink(g_side);
}

static void put(uint64_t first_lsn, const uint8_t *p, size_t n)
{
    char name[32], path[400];
    wal_segment_name(first_lsn, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", g_wal, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("cannot write a segment", NULL);
    if (n > 0 && write(fd, p, n) != (ssize_t)n)
        die("short write of a segment", NULL);
    close(fd);
}

typedef struct seen {
    uint64_t first, last, n;
} seen_t;

static cp_status visit(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                       cp_error_t *err)
{
    (void)type;
    (void)err;
    seen_t *s = ud;
    if (s->n > 0 && lsn != s->last + 1)
        die("replay LSNs not one apart", NULL);
    if (len > WAL_MAX_RECORD || (len > 0 && payload == NULL))
        die("replay payload", NULL);
    if (len > 0) /* touch every byte: ASan checks the bounds */
        (void)((volatile const uint8_t *)payload)[len - 1];
    if (s->n == 0)
        s->first = lsn;
    s->last = lsn;
    s->n++;
    return CP_OK;
}

/* Opens, replays, appends one record and replays again; returns the status
 * of the open (CP_OK when everything held). */
static cp_status exercise(void)
{
    wal_options_t o = {.segment_bytes = WAL_MIN_SEGMENT_BYTES, .sync = WAL_SYNC_NONE, .log = quiet};
    wal_t *wal = NULL;
    cp_error_t err = {0};
    cp_status rc = wal_open(g_dir, &o, &wal, &err);
    if (rc != CP_OK) {
        if (wal != NULL || err.message[0] == '\0')
            die("failed open without a message or with a handle", NULL);
        return rc;
    }
    seen_t s = {0};
    rc = wal_replay(wal, 0, visit, &s, &err);
    if (rc == CP_OK && s.n > 0 && s.last != wal_last_lsn(wal))
        die("replay did not reach the last LSN", NULL);
    if (rc != CP_OK && err.message[0] == '\0')
        die("failed replay without a message", NULL);
    uint64_t lsn = 0, before = wal_last_lsn(wal);
    cp_status arc = wal_append(wal, 7, "fuzz", 4, &lsn, &err);
    if (arc == CP_OK) {
        if (lsn != before + 1)
            die("appended LSN is not the next", NULL);
        if (wal_sync(wal, lsn, &err) != CP_OK)
            die("sync", &err);
        if (rc == CP_OK) {
            seen_t t = {0};
            if (wal_replay(wal, 0, visit, &t, &err) != CP_OK || t.last != lsn)
                die("second replay misses the new record", &err);
        }
    }
    wal_close(wal);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_dir[0] == '\0') {
        const char *root = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/fuzz_wal-XXXXXX", root && *root ? root : "/tmp");
        if (mkdtemp(g_dir) == NULL)
            die("mkdtemp", NULL);
        snprintf(g_wal, sizeof g_wal, "%s/wal", g_dir);
        snprintf(g_side, sizeof g_side, "%s/dropped", g_dir);
        if (mkdir(g_wal, 0755) != 0 && errno != EEXIST)
            die("mkdir", NULL);
    }
    if (size < 1)
        return 0;
    clear();
    unsigned nseg = 1 + data[0] % 3;
    uint64_t first = 1 + (data[0] >> 2 & 3) * 3; /* 1, 4, 7 or 10 */
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    for (unsigned i = 0; i < nseg; i++) {
        size_t n = left;
        if (i + 1 < nseg) {
            if (left < 2)
                break;
            n = (size_t)p[0] | (size_t)p[1] << 8;
            p += 2;
            left -= 2;
            if (n > left)
                n = left;
        }
        put(first, p, n);
        /* The next segment's name: as if this one held n/20 records, or,
         * from the top bit of the data byte, an overlapping name. */
        first += data[0] & 0x80 ? 1 : 1 + n / 20;
        p += n;
        left -= n;
    }
    (void)exercise();

    /* Salvage (what `crowdpack recover` does) always leaves a log that
     * opens and replays. */
    wal_salvage_report_t rep;
    cp_error_t err = {0};
    cp_status rc = wal_salvage(g_dir, 0, 0xFE, g_side, &rep, &err);
    if (rc == CP_OK) {
        if (exercise() != CP_OK)
            die("a salvaged log does not open", NULL);
    } else if (rc != CP_ECORRUPT && rc != CP_EIO) {
        die("salvage status", &err);
    }
    return 0;
}
