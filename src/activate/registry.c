/*
 * registry.c — the campaigns of DIR/activate/: every version of every
 * campaign, durable, and the immutable snapshot the bidder reads.
 *
 * Storage is one append-only file, DIR/activate/campaigns.log, rather than
 * an LMDB environment: campaigns change a few times a day, every version is
 * kept anyway, and a log of checksummed records says exactly which byte is
 * damaged. Layout (integers little-endian):
 *
 *   file    "CPCAMP\0\1" (8 bytes), then records
 *   record  header  u32 magic 0x52504d43 | u32 payload length |
 *                   u32 CRC32C(payload) | u32 CRC32C(the 12 bytes before)
 *           payload u8 kind (1 put, 2 delete) | 3 zero bytes | u32 id length |
 *                   u64 version | i64 time (UTC ms) | id | canonical
 *                   document (put only: campaign_to_json with version
 *                   and updated)
 *
 * A put is appended with space reserved first (fallocate), written, and
 * fdatasync'ed before it is applied in memory; when any step fails the file
 * is cut back to where it was, so a put that could not be made durable
 * changes nothing (CP_ENOSPC on a full disk). At open, records are checked
 * one by one: a record cut short at the end of the file (a crash in the
 * middle of an append that was never acknowledged) is dropped; any other
 * damage refuses to open with CP_ECORRUPT naming the file and offset.
 *
 * Snapshots: every change builds a whole new act_snapshot_t by parsing the
 * current document of every campaign again (campaigns and lines carry
 * their position in the snapshot, so one struct cannot serve two). Readers
 * take a reference under a spin lock held for two instructions; the last
 * reference frees.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activate/campaign.h"
#include "store/wal.h"
#include "util/util.h"

#define LOG_NAME "campaigns.log"
#define FILE_MAGIC "CPCAMP\0\1"
#define FILE_MAGIC_LEN 8
#define REC_MAGIC 0x52504d43u
#define REC_HDR 16
#define REC_FIXED 24
#define REC_MAX (REC_FIXED + ACT_MAX_ID + 2 * (size_t)ACT_MAX_DOC) /* escaped text grows */

enum { REC_PUT = 1, REC_DELETE = 2 };

typedef struct hist {
    uint64_t version;
    int64_t time_ms;
    int deleted;
    uint64_t off; /* of the record's header */
    uint32_t len; /* payload bytes */
} hist_t;

typedef struct ent {
    char *id;
    char *doc; /* current canonical document; NULL when deleted */
    size_t ndoc;
    hist_t *hist; /* every version, ascending */
    size_t nhist, caphist;
} ent_t;

struct registry {
    char *path; /* DIR/activate/campaigns.log */
    int fd;
    pthread_mutex_t mu; /* writers, and the views of ents */
    pthread_spinlock_t snap_lock;
    act_snapshot_t *snap; /* current; one reference held by the registry */
    ent_t *ents;          /* sorted by id */
    size_t nents, capents;
    uint64_t version; /* records in the log */
    uint64_t end;     /* where the next record goes */
    int broken;       /* a failed append could not be cut back: refuse writes */
    registry_listener_fn fn;
    void *fn_ctx;
};

/* ------------------------------------------------------------ helpers */

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
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = ENOSPC;
            return -1;
        }
        done += (size_t)k;
    }
    return 0;
}

static cp_status errno_status(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? CP_ENOSPC : CP_EIO;
}

/* Makes a new name in dir durable (the file's own fsync does not). */
static cp_status fsync_dir(const char *dir, cp_error_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return CP_ERR(err, errno_status(e), "fsync of directory %s: %s", dir, strerror(e));
    }
    close(fd);
    return CP_OK;
}

/* The entry of id: its index, or where it would go (*found 0). */
static size_t ent_find(const registry_t *r, const char *id, int *found)
{
    size_t lo = 0, hi = r->nents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->ents[mid].id, id);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

/* Room for one more entry and one more history row of entry `at` (or of a
 * new entry), so that applying a record that is already durable cannot
 * fail. */
static cp_status reserve(registry_t *r, int found, size_t at, cp_error_t *err)
{
    if (!found && r->nents == r->capents) {
        size_t cap = r->capents ? r->capents * 2 : 16;
        ent_t *e = realloc(r->ents, cap * sizeof *e);
        if (e == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory adding a campaign");
        r->ents = e;
        r->capents = cap;
    }
    if (found && r->ents[at].nhist == r->ents[at].caphist) {
        ent_t *e = &r->ents[at];
        size_t cap = e->caphist ? e->caphist * 2 : 4;
        hist_t *h = realloc(e->hist, cap * sizeof *h);
        if (h == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory adding a version");
        e->hist = h;
        e->caphist = cap;
    }
    return CP_OK;
}

/* Inserts a new entry for id at `at` (room reserved). */
static cp_status ent_insert(registry_t *r, size_t at, const char *id, size_t idlen, cp_error_t *err)
{
    ent_t e = {0};
    e.id = strndup(id, idlen);
    e.hist = malloc(4 * sizeof *e.hist);
    if (e.id == NULL || e.hist == NULL) {
        free(e.id);
        free(e.hist);
        return CP_ERR(err, CP_ENOMEM, "out of memory adding a campaign");
    }
    e.caphist = 4;
    memmove(&r->ents[at + 1], &r->ents[at], (r->nents - at) * sizeof *r->ents);
    r->ents[at] = e;
    r->nents++;
    return CP_OK;
}

/* ----------------------------------------------------------- snapshots */

static void snapshot_free(act_snapshot_t *s)
{
    for (size_t i = 0; s->campaigns != NULL && i < s->ncampaigns; i++)
        campaign_free(s->campaigns[i]);
    free(s->campaigns);
    free(s->lines);
    free(s);
}

void snapshot_release(act_snapshot_t *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(s);
}

act_snapshot_t *registry_snapshot(registry_t *r)
{
    pthread_spin_lock(&r->snap_lock);
    act_snapshot_t *s = r->snap;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_spin_unlock(&r->snap_lock);
    return s;
}

/*
 * A snapshot of the campaigns whose documents are docs[0..n) (NULL entries
 * skipped), in that order. A stored document that no longer parses is
 * reported with the campaign's id.
 */
static cp_status snapshot_build(const char *const *ids, char *const *docs, const size_t *ndocs,
                                size_t n, uint64_t version, act_snapshot_t **out, cp_error_t *err)
{
    *out = NULL;
    act_snapshot_t *s = calloc(1, sizeof *s);
    cp_status st = CP_OK;
    if (s == NULL || (n > 0 && (s->campaigns = calloc(n, sizeof *s->campaigns)) == NULL)) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory building the campaign snapshot");
        goto out;
    }
    atomic_init(&s->refs, 1);
    s->version = version;
    size_t nlines = 0;
    for (size_t i = 0; i < n; i++) {
        if (docs[i] == NULL)
            continue;
        act_campaign_t *c = NULL;
        if ((st = campaign_parse(docs[i], ndocs[i], NULL, &c, err)) != CP_OK) {
            error_prefix(err, "campaign \"%s\": ", ids[i]);
            goto out;
        }
        c->index = (uint32_t)s->ncampaigns;
        s->campaigns[s->ncampaigns++] = c;
        nlines += c->nlines;
    }
    if (nlines > 0 && (s->lines = calloc(nlines, sizeof *s->lines)) == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory building the campaign snapshot");
        goto out;
    }
    for (size_t i = 0; i < s->ncampaigns; i++)
        for (size_t j = 0; j < s->campaigns[i]->nlines; j++) {
            act_line_t *l = &s->campaigns[i]->lines[j];
            l->campaign = s->campaigns[i];
            l->index = (uint32_t)s->nlines;
            s->lines[s->nlines++] = l;
        }
    *out = s;
    s = NULL;
out:
    if (s != NULL)
        snapshot_free(s);
    return st;
}

/* The snapshot of the current entries with entry `at` (found or to be
 * inserted) given document `doc` (NULL: deleted). */
static cp_status snapshot_with(registry_t *r, const char *id, size_t at, int found, char *doc,
                               size_t ndoc, act_snapshot_t **out, cp_error_t *err)
{
    size_t n = r->nents + !found;
    char **docs = calloc(n ? n : 1, sizeof *docs);
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    size_t *ndocs = calloc(n ? n : 1, sizeof *ndocs);
    cp_status st;
    if (docs == NULL || ids == NULL || ndocs == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory building the campaign snapshot");
        goto out;
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        if (i == at) {
            ids[i] = id;
            docs[i] = doc;
            ndocs[i] = ndoc;
            if (found)
                k++;
            continue;
        }
        ids[i] = r->ents[k].id;
        docs[i] = r->ents[k].doc;
        ndocs[i] = r->ents[k].ndoc;
        k++;
    }
    st = snapshot_build(ids, docs, ndocs, n, r->version + 1, out, err);
out:
    free(docs);
    free((void *)ids);
    free(ndocs);
    return st;
}

/* Publishes s (taking over the caller's reference) and tells the listener. */
static void publish(registry_t *r, act_snapshot_t *s)
{
    pthread_spin_lock(&r->snap_lock);
    act_snapshot_t *old = r->snap;
    r->snap = s;
    pthread_spin_unlock(&r->snap_lock);
    snapshot_release(old);
    if (r->fn != NULL)
        r->fn(r->fn_ctx, s);
}

void registry_listen(registry_t *r, registry_listener_fn fn, void *ctx)
{
    pthread_mutex_lock(&r->mu);
    r->fn = fn;
    r->fn_ctx = ctx;
    pthread_mutex_unlock(&r->mu);
}

/* ----------------------------------------------------------------- log */

/* Appends one record durably at r->end; on failure the file is cut back. */
static cp_status log_append(registry_t *r, int kind, const char *id, uint64_t version,
                            int64_t time_ms, const char *doc, size_t ndoc, uint32_t *len_out,
                            cp_error_t *err)
{
    size_t idlen = strlen(id);
    size_t plen = REC_FIXED + idlen + ndoc, total = REC_HDR + plen;
    unsigned char *rec = calloc(1, total);
    cp_status st = CP_OK;
    if (rec == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory writing to %s", r->path);
    unsigned char *p = rec + REC_HDR;
    p[0] = (unsigned char)kind;
    put_u32(p + 4, (uint32_t)idlen);
    put_u64(p + 8, version);
    put_u64(p + 16, (uint64_t)time_ms);
    memcpy(p + REC_FIXED, id, idlen);
    if (ndoc > 0)
        memcpy(p + REC_FIXED + idlen, doc, ndoc);
    put_u32(rec, REC_MAGIC);
    put_u32(rec + 4, (uint32_t)plen);
    put_u32(rec + 8, wal_crc32c(0, p, plen));
    put_u32(rec + 12, wal_crc32c(0, rec, 12));
    /* Reserve the blocks first: on a full disk nothing is written at all.
     * File systems without fallocate still fail the write below. */
    int rc = posix_fallocate(r->fd, (off_t)r->end, (off_t)total);
    if (rc != 0 && rc != EOPNOTSUPP && rc != ENOSYS && rc != EINVAL) {
        st = CP_ERR(err, errno_status(rc), "%s: no room for campaign \"%s\" version %llu: %s",
                    r->path, id, (unsigned long long)version, strerror(rc));
        goto cut;
    }
    if (write_full(r->fd, rec, total, r->end) != 0 || fdatasync(r->fd) != 0) {
        int e = errno;
        st = CP_ERR(err, errno_status(e), "%s: campaign \"%s\" version %llu not stored: %s",
                    r->path, id, (unsigned long long)version, strerror(e));
        goto cut;
    }
    *len_out = (uint32_t)plen;
    free(rec);
    return CP_OK;
cut:
    /* posix_fallocate without KEEP_SIZE may have grown the file: cut it
     * back to the last record so the log stays a sequence of records. */
    if (ftruncate(r->fd, (off_t)r->end) != 0 || fdatasync(r->fd) != 0)
        r->broken = 1;
    free(rec);
    return st;
}

/* Reads and checks the record at off: header and payload CRCs. *torn = 1
 * (CP_OK, nothing read) when it is cut short by the end of the file. */
static cp_status rec_read(registry_t *r, uint64_t off, uint64_t size, unsigned char **payload,
                          uint32_t *plen, int *torn, cp_error_t *err)
{
    unsigned char h[REC_HDR];
    *payload = NULL;
    *torn = 0;
    if (size - off < REC_HDR) {
        *torn = 1;
        return CP_OK;
    }
    if (read_full(r->fd, h, REC_HDR, off) != 0)
        return CP_ERR(err, CP_EIO, "%s: read at offset %llu: %s", r->path, (unsigned long long)off,
                      strerror(errno));
    static const unsigned char zero[REC_HDR];
    if (memcmp(h, zero, REC_HDR) == 0) {
        /* Zeros to the end: space reserved by an append that never
         * finished. Zeros followed by data: damage. */
        unsigned char chunk[4096];
        for (uint64_t at = off; at < size;) {
            size_t n = size - at < sizeof chunk ? (size_t)(size - at) : sizeof chunk;
            if (read_full(r->fd, chunk, n, at) != 0)
                return CP_ERR(err, CP_EIO, "%s: read at offset %llu: %s", r->path,
                              (unsigned long long)at, strerror(errno));
            for (size_t i = 0; i < n; i++)
                if (chunk[i] != 0)
                    return CP_ERR(err, CP_ECORRUPT,
                                  "%s: damaged: zeros at offset %llu followed by data at %llu",
                                  r->path, (unsigned long long)off, (unsigned long long)(at + i));
            at += n;
        }
        *torn = 1;
        return CP_OK;
    }
    if (get_u32(h) != REC_MAGIC || get_u32(h + 12) != wal_crc32c(0, h, 12) ||
        get_u32(h + 4) < REC_FIXED || get_u32(h + 4) > REC_MAX)
        return CP_ERR(err, CP_ECORRUPT, "%s: damaged record header at offset %llu", r->path,
                      (unsigned long long)off);
    uint32_t len = get_u32(h + 4);
    if (size - off - REC_HDR < len) {
        *torn = 1;
        return CP_OK;
    }
    unsigned char *p = malloc(len + 1);
    if (p == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", r->path);
    if (read_full(r->fd, p, len, off + REC_HDR) != 0) {
        free(p);
        return CP_ERR(err, CP_EIO, "%s: read at offset %llu: %s", r->path, (unsigned long long)off,
                      strerror(errno));
    }
    if (wal_crc32c(0, p, len) != get_u32(h + 8)) {
        free(p);
        return CP_ERR(err, CP_ECORRUPT, "%s: damaged record at offset %llu (checksum mismatch)",
                      r->path, (unsigned long long)off);
    }
    p[len] = '\0';
    *payload = p;
    *plen = len;
    return CP_OK;
}

/* Applies a checked record (at open, or after its append) to the entries;
 * room was reserved. `doc` is taken over (NULL for a delete). */
static void apply(registry_t *r, size_t at, int kind, uint64_t version, int64_t time_ms,
                  uint64_t off, uint32_t len, char *doc, size_t ndoc)
{
    ent_t *e = &r->ents[at];
    free(e->doc);
    e->doc = kind == REC_PUT ? doc : NULL;
    e->ndoc = kind == REC_PUT ? ndoc : 0;
    e->hist[e->nhist++] = (hist_t){.version = version,
                                   .time_ms = time_ms,
                                   .deleted = kind == REC_DELETE,
                                   .off = off,
                                   .len = len};
    r->version++;
    r->end = off + REC_HDR + len;
}

static cp_status replay(registry_t *r, cp_error_t *err)
{
    struct stat sb;
    unsigned char magic[FILE_MAGIC_LEN];
    if (fstat(r->fd, &sb) != 0)
        return CP_ERR(err, CP_EIO, "%s: %s", r->path, strerror(errno));
    uint64_t size = (uint64_t)sb.st_size, off = FILE_MAGIC_LEN;
    if (size < FILE_MAGIC_LEN || read_full(r->fd, magic, FILE_MAGIC_LEN, 0) != 0 ||
        memcmp(magic, FILE_MAGIC, FILE_MAGIC_LEN) != 0)
        return CP_ERR(err, CP_ECORRUPT, "%s: damaged: not a campaign log (bad file header)",
                      r->path);
    r->end = off;
    while (off < size) {
        unsigned char *p = NULL;
        uint32_t len = 0;
        int torn = 0;
        cp_status st = rec_read(r, off, size, &p, &len, &torn, err);
        if (st != CP_OK)
            return st;
        if (torn) {
            /* Never acknowledged: drop it so the next append follows the
             * last whole record. */
            if (ftruncate(r->fd, (off_t)off) != 0 || fdatasync(r->fd) != 0)
                return CP_ERR(err, CP_EIO, "%s: cutting an unfinished record at offset %llu: %s",
                              r->path, (unsigned long long)off, strerror(errno));
            break;
        }
        int kind = p[0];
        uint32_t idlen = get_u32(p + 4);
        uint64_t version = get_u64(p + 8);
        int64_t time_ms = (int64_t)get_u64(p + 16);
        int found = 0;
        size_t at = 0;
        if ((kind != REC_PUT && kind != REC_DELETE) || idlen == 0 || idlen > ACT_MAX_ID ||
            idlen > len - REC_FIXED || memchr(p + REC_FIXED, '\0', idlen) != NULL ||
            (kind == REC_DELETE && idlen != len - REC_FIXED)) {
            free(p);
            return CP_ERR(err, CP_ECORRUPT, "%s: damaged record at offset %llu (bad fields)",
                          r->path, (unsigned long long)off);
        }
        char id[ACT_MAX_ID + 1];
        memcpy(id, p + REC_FIXED, idlen);
        id[idlen] = '\0';
        at = ent_find(r, id, &found);
        uint64_t last = found ? r->ents[at].hist[r->ents[at].nhist - 1].version : 0;
        if (version <= last) {
            free(p);
            return CP_ERR(err, CP_ECORRUPT,
                          "%s: damaged record at offset %llu (campaign \"%s\" version %llu after "
                          "%llu)",
                          r->path, (unsigned long long)off, id, (unsigned long long)version,
                          (unsigned long long)last);
        }
        if ((st = reserve(r, found, at, err)) != CP_OK ||
            (!found && (st = ent_insert(r, at, id, idlen, err)) != CP_OK)) {
            free(p);
            return st;
        }
        char *doc = NULL;
        size_t ndoc = len - REC_FIXED - idlen;
        if (kind == REC_PUT) {
            doc = malloc(ndoc + 1);
            if (doc == NULL) {
                free(p);
                return CP_ERR(err, CP_ENOMEM, "out of memory reading %s", r->path);
            }
            memcpy(doc, p + REC_FIXED + idlen, ndoc);
            doc[ndoc] = '\0';
        }
        free(p);
        apply(r, at, kind, version, time_ms, off, len, doc, ndoc);
        off = r->end;
    }
    return CP_OK;
}

/* Creates an empty log atomically: header written to a temporary name,
 * synced, renamed, and the directory synced. */
static cp_status log_create(const char *dir, const char *path, cp_error_t *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return CP_ERR(err, errno_status(errno), "%s: %s", tmp, strerror(errno));
    if (write_full(fd, FILE_MAGIC, FILE_MAGIC_LEN, 0) != 0 || fdatasync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return CP_ERR(err, errno_status(e), "%s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return CP_ERR(err, errno_status(e), "rename %s: %s", tmp, strerror(e));
    }
    return fsync_dir(dir, err);
}

cp_status registry_open(const char *dir, registry_t **out, cp_error_t *err)
{
    *out = NULL;
    registry_t *r = calloc(1, sizeof *r);
    cp_status st = CP_OK;
    if (r == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory opening the campaigns");
    r->fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_spin_init(&r->snap_lock, PTHREAD_PROCESS_PRIVATE);
    size_t n = strlen(dir) + sizeof LOG_NAME + 2;
    if ((r->path = malloc(n)) == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory opening the campaigns");
        goto out;
    }
    snprintf(r->path, n, "%s/%s", dir, LOG_NAME);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        st = CP_ERR(err, errno_status(errno), "cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    r->fd = open(r->path, O_RDWR | O_CLOEXEC);
    if (r->fd < 0 && errno == ENOENT) {
        if ((st = log_create(dir, r->path, err)) != CP_OK)
            goto out;
        r->fd = open(r->path, O_RDWR | O_CLOEXEC);
    }
    if (r->fd < 0) {
        st = CP_ERR(err, CP_EIO, "%s: %s", r->path, strerror(errno));
        goto out;
    }
    if (flock(r->fd, LOCK_EX | LOCK_NB) != 0) {
        st = CP_ERR(err, errno == EWOULDBLOCK ? CP_ELOCKED : CP_EIO,
                    "%s: held by another process (%s)", r->path, strerror(errno));
        goto out;
    }
    if ((st = replay(r, err)) != CP_OK)
        goto out;
    char **docs = calloc(r->nents ? r->nents : 1, sizeof *docs);
    const char **ids = calloc(r->nents ? r->nents : 1, sizeof *ids);
    size_t *ndocs = calloc(r->nents ? r->nents : 1, sizeof *ndocs);
    if (docs == NULL || ids == NULL || ndocs == NULL) {
        free(docs);
        free((void *)ids);
        free(ndocs);
        st = CP_ERR(err, CP_ENOMEM, "out of memory opening the campaigns");
        goto out;
    }
    for (size_t i = 0; i < r->nents; i++) {
        ids[i] = r->ents[i].id;
        docs[i] = r->ents[i].doc;
        ndocs[i] = r->ents[i].ndoc;
    }
    st = snapshot_build(ids, docs, ndocs, r->nents, r->version, &r->snap, err);
    free(docs);
    free((void *)ids);
    free(ndocs);
    if (st != CP_OK) {
        error_prefix(err, "%s: ", r->path);
        goto out;
    }
    *out = r;
    r = NULL;
out:
    registry_close(r);
    return st;
}

void registry_close(registry_t *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->nents; i++) {
        free(r->ents[i].id);
        free(r->ents[i].doc);
        free(r->ents[i].hist);
    }
    free(r->ents);
    snapshot_release(r->snap);
    pthread_spin_destroy(&r->snap_lock);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    free(r);
}

/* ------------------------------------------------------------- writes */

/* Names of the campaign checked against the data: every tag, attribute
 * and crowd of each line's targeting, and every premium crowd, must exist
 * (a 400 naming the field otherwise). */
static cp_status check_names(cp_db_t *db, const act_campaign_t *c, cp_error_t *err)
{
    for (size_t i = 0; i < c->nlines; i++) {
        const act_line_t *l = &c->lines[i];
        cp_error_t e = {0};
        cp_status st;
        if (l->targeting[strspn(l->targeting, " \t\r\n")] != '\0') {
            uint64_t n;
            if ((st = cp_count(db, l->targeting, &n, &e)) != CP_OK) {
                cp_status code = (st == CP_ENOMEM || st == CP_EIO || st == CP_ENOSPC ||
                                  st == CP_EINTERNAL || st == CP_ECORRUPT)
                                     ? st
                                     : CP_EINVAL;
                if (e.line > 0 && !(e.message[0] >= '0' && e.message[0] <= '9'))
                    return CP_ERR(err, code, "lines[%zu].targeting: %d:%d: %s", i, e.line, e.column,
                                  e.message);
                return CP_ERR(err, code, "lines[%zu].targeting: %s", i, e.message);
            }
        }
        for (size_t j = 0; j < l->npremiums; j++) {
            uint32_t id;
            if ((st = cp_crowd_id(db, l->premiums[j].crowd, &id, &e)) == CP_ENOTFOUND)
                return CP_ERR(err, CP_EINVAL,
                              "lines[%zu].premiums[%zu].crowd: unknown crowd \"%s\"", i, j,
                              l->premiums[j].crowd);
            if (st != CP_OK)
                return CP_ERR(err, st, "lines[%zu].premiums[%zu].crowd: %s", i, j, e.message);
        }
    }
    return CP_OK;
}

/* One change under r->mu: a new document for id (NULL: delete), built
 * into a snapshot, appended durably, then applied and published. */
static cp_status change(registry_t *r, const char *id, act_campaign_t *c, int64_t now_ms,
                        uint64_t *version, cp_error_t *err)
{
    int found;
    size_t at = ent_find(r, id, &found);
    char *doc = NULL;
    act_snapshot_t *s = NULL;
    cp_status st = CP_OK;
    if (r->broken) {
        st = CP_ERR(err, CP_EIO,
                    "%s: a failed write could not be undone; reopen the data "
                    "directory",
                    r->path);
        goto out;
    }
    if (c == NULL && (!found || r->ents[at].doc == NULL)) {
        st = CP_ERR(err, CP_ENOTFOUND, "campaign \"%s\" not found", id);
        goto out;
    }
    uint64_t v = found ? r->ents[at].hist[r->ents[at].nhist - 1].version + 1 : 1;
    size_t ndoc = 0;
    if (c != NULL) {
        c->version = v;
        c->updated_ms = now_ms;
        if ((st = campaign_to_json(c, &doc, err)) != CP_OK)
            goto out;
        ndoc = strlen(doc);
    }
    if ((st = snapshot_with(r, id, at, found, doc, ndoc, &s, err)) != CP_OK ||
        (st = reserve(r, found, at, err)) != CP_OK ||
        (!found && (st = ent_insert(r, at, id, strlen(id), err)) != CP_OK))
        goto out;
    uint32_t len = 0;
    /* A new entry that does not become durable is removed again below. */
    if ((st = log_append(r, c ? REC_PUT : REC_DELETE, id, v, now_ms, doc, ndoc, &len, err)) !=
        CP_OK) {
        if (!found) {
            free(r->ents[at].id);
            free(r->ents[at].hist);
            memmove(&r->ents[at], &r->ents[at + 1], (r->nents - at - 1) * sizeof *r->ents);
            r->nents--;
        }
        goto out;
    }
    apply(r, at, c ? REC_PUT : REC_DELETE, v, now_ms, r->end, len, doc, ndoc);
    doc = NULL;
    publish(r, s);
    s = NULL;
    if (version != NULL)
        *version = v;
out:
    free(doc);
    if (s != NULL)
        snapshot_release(s);
    return st;
}

cp_status registry_put(registry_t *r, cp_db_t *db, const char *id, const char *json, size_t len,
                       int64_t now_ms, uint64_t *version, cp_error_t *err)
{
    act_campaign_t *c = NULL;
    cp_status st = campaign_parse(json, len, id, &c, err);
    if (st != CP_OK)
        return st;
    /* Names are checked before the lock: an evaluation may take a while
     * and must not hold up readers of the views. */
    if (db != NULL && (st = check_names(db, c, err)) != CP_OK)
        goto out;
    pthread_mutex_lock(&r->mu);
    st = change(r, c->id, c, now_ms ? now_ms : time_now_ms(), version, err);
    pthread_mutex_unlock(&r->mu);
out:
    campaign_free(c);
    return st;
}

cp_status registry_delete(registry_t *r, const char *id, int64_t now_ms, cp_error_t *err)
{
    if (id == NULL)
        return CP_ERR(err, CP_EINVAL, "campaign id missing");
    pthread_mutex_lock(&r->mu);
    cp_status st = change(r, id, NULL, now_ms ? now_ms : time_now_ms(), NULL, err);
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* -------------------------------------------------------------- views */

cp_status registry_get_json(registry_t *r, const char *id, char **out, cp_error_t *err)
{
    *out = NULL;
    int found = 0;
    cp_status st = CP_OK;
    pthread_mutex_lock(&r->mu);
    size_t at = id != NULL ? ent_find(r, id, &found) : 0;
    if (!found || r->ents[at].doc == NULL)
        st = CP_ERR(err, CP_ENOTFOUND, "campaign \"%s\" not found", id ? id : "");
    else if ((*out = strdup(r->ents[at].doc)) == NULL)
        st = CP_ERR(err, CP_ENOMEM, "out of memory");
    pthread_mutex_unlock(&r->mu);
    return st;
}

cp_status registry_list_json(registry_t *r, char **out, cp_error_t *err)
{
    *out = NULL;
    buf_t b;
    buf_init(&b, 0);
    pthread_mutex_lock(&r->mu);
    cp_status st =
        buf_printf(&b, "{\"version\":%llu,\"campaigns\":[", (unsigned long long)r->version);
    for (size_t i = 0, n = 0; st == CP_OK && i < r->nents; i++) {
        if (r->ents[i].doc == NULL)
            continue;
        if (n++ > 0)
            st = buf_append(&b, ",", 1);
        if (st == CP_OK)
            st = buf_append(&b, r->ents[i].doc, r->ents[i].ndoc);
    }
    pthread_mutex_unlock(&r->mu);
    if (st == CP_OK)
        st = buf_append(&b, "]}", 2);
    if (st != CP_OK) {
        buf_free(&b);
        return CP_ERR(err, CP_ENOMEM, "out of memory listing campaigns");
    }
    buf_cstr(&b);
    *out = b.data;
    return CP_OK;
}

/* Every version of a campaign, the documents read back from the log (and
 * checked again: the log may have been damaged since it was opened). */
cp_status registry_history_json(registry_t *r, const char *id, char **out, cp_error_t *err)
{
    *out = NULL;
    buf_t b;
    buf_init(&b, 0);
    int found = 0;
    cp_status st = CP_OK;
    pthread_mutex_lock(&r->mu);
    size_t at = id != NULL ? ent_find(r, id, &found) : 0;
    if (!found) {
        st = CP_ERR(err, CP_ENOTFOUND, "campaign \"%s\" not found", id ? id : "");
        goto out;
    }
    const ent_t *e = &r->ents[at];
    if (buf_printf(&b, "{\"id\":\"%s\",\"versions\":[", e->id) != CP_OK)
        goto nomem;
    for (size_t i = 0; i < e->nhist; i++) {
        const hist_t *h = &e->hist[i];
        char when[32];
        time_format(h->time_ms >= 0 ? h->time_ms / 1000 : 0, when, sizeof when);
        if (buf_printf(&b, "%s{\"version\":%llu,\"updated\":\"%s\",\"deleted\":%s,\"campaign\":",
                       i ? "," : "", (unsigned long long)h->version, when,
                       h->deleted ? "true" : "false") != CP_OK)
            goto nomem;
        if (h->deleted) {
            if (buf_append(&b, "null}", 5) != CP_OK)
                goto nomem;
            continue;
        }
        unsigned char *p = NULL;
        uint32_t len = 0;
        int torn = 0;
        if ((st = rec_read(r, h->off, r->end, &p, &len, &torn, err)) != CP_OK)
            goto out;
        if (torn || len != h->len) {
            free(p);
            st = CP_ERR(err, CP_ECORRUPT, "%s: damaged record at offset %llu", r->path,
                        (unsigned long long)h->off);
            goto out;
        }
        size_t idlen = get_u32(p + 4);
        st = buf_append(&b, p + REC_FIXED + idlen, len - REC_FIXED - idlen);
        free(p);
        if (st != CP_OK || buf_append(&b, "}", 1) != CP_OK)
            goto nomem;
    }
    if (buf_append(&b, "]}", 2) != CP_OK)
        goto nomem;
    buf_cstr(&b);
    *out = b.data;
    b.data = NULL;
    goto out;
nomem:
    st = CP_ERR(err, CP_ENOMEM, "out of memory reading the history of \"%s\"", id);
out:
    pthread_mutex_unlock(&r->mu);
    buf_free(&b);
    return st;
}
