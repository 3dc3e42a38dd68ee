/*
 * ledger.c — the ledger's journal and state: spend per campaign, line and
 * local day, reservations, the hot-path check, housekeeping and the
 * delivery report (DESIGN.md §10, docs/activation.md "Operations").
 *
 * Journal: DIR/ledger/wal/ is a store/wal.h log. Each notice is one record
 * holding its token and its outcome (what it charged, whether it settled,
 * counted caps, released the reservation), appended under ledger.mu in the
 * order it is applied, and made durable (wal_sync: concurrent notices
 * share one fdatasync) before ledger_notice returns. Replay applies the
 * recorded outcomes, so a restart rebuilds the same state whatever the
 * code would decide today. The contact cap is a record too.
 *
 * Snapshot: DIR/ledger/snapshot holds the whole state (spend, lines, cap
 * counters, dedup entries) with the LSN it covers, written every
 * LEDGER_SNAP_RECORDS records or LEDGER_SNAP_MS with any, and at close:
 * to snapshot.tmp, fsync, rename, fsync of the directory; then the log's
 * segments before it are deleted. Open = load the snapshot, replay what
 * follows. A damaged snapshot or journal is CP_ECORRUPT naming the file
 * and the offset; nothing is skipped silently.
 *
 * Spend is in millifen. A campaign's spend of a day is charged to the
 * local day of the BID (the day whose budget its reservation held), so a
 * late notice never lands on the next day's budget. Reservations live in
 * 16 one-minute buckets per campaign (the bid's minute): a bucket older
 * than LEDGER_RESERVE_TTL_MS no longer counts, which is how unsettled
 * reservations expire without a per-bid entry; a notice gives its bid's
 * amount back to its bucket if the bucket still holds that minute.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activate/ledger_int.h"
#include "util/util.h"

#include <sodium.h>

const char *ledger_verdict_name(ledger_verdict v)
{
    static const char *const names[] = {"ok",        "cap_line",     "cap_campaign", "cap_contact",
                                        "no_person", "budget_daily", "budget_total", "pacing"};
    return (unsigned)v < CP_ARRAY_LEN(names) ? names[v] : "unknown";
}

/* ------------------------------------------------------------- state */

lcamp_t *ledger_camp(ledger_t *l, const char *id, size_t len, int create)
{
    if (len == 0 || len > ACT_MAX_ID)
        return NULL;
    size_t mask = LEDGER_MAX_CAMPAIGNS - 1;
    size_t i = (size_t)hash64(id, len, 0x63616d70ull) & mask;
    lcamp_t *fresh = NULL;
    for (size_t probes = 0; probes < LEDGER_MAX_CAMPAIGNS; probes++, i = (i + 1) & mask) {
        lcamp_t *c = atomic_load_explicit(&l->camps[i], memory_order_acquire);
        if (c == NULL) {
            if (!create)
                return NULL;
            if (fresh == NULL) {
                if ((fresh = calloc(1, sizeof *fresh)) == NULL)
                    return NULL;
                memcpy(fresh->id, id, len);
                pthread_mutex_init(&fresh->mu, NULL);
                atomic_init(&fresh->pass_ppm, 1000000u);
                atomic_init(&fresh->day_min, -1);
                fresh->pace_minute = -1;
                for (size_t k = 0; k < LEDGER_RESV_SLOTS; k++)
                    atomic_init(&fresh->resv[k].minute, -1);
            }
            lcamp_t *expect = NULL;
            if (atomic_compare_exchange_strong(&l->camps[i], &expect, fresh))
                return fresh;
            c = expect; /* another thread took the slot: look at what it put */
        }
        if (strlen(c->id) == len && memcmp(c->id, id, len) == 0) {
            if (fresh) {
                pthread_mutex_destroy(&fresh->mu);
                free(fresh);
            }
            return c;
        }
    }
    if (fresh) {
        pthread_mutex_destroy(&fresh->mu);
        free(fresh);
    }
    return NULL;
}

lline_t *ledger_line(lcamp_t *c, const char *id, size_t len)
{
    if (len == 0 || len > ACT_MAX_ID)
        return NULL;
    for (size_t i = 0; i < c->nlines; i++)
        if (strlen(c->lines[i].id) == len && memcmp(c->lines[i].id, id, len) == 0)
            return &c->lines[i];
    if (c->nlines == c->caplines) {
        size_t cap = c->caplines ? c->caplines * 2 : 4;
        lline_t *n = realloc(c->lines, cap * sizeof *n);
        if (n == NULL)
            return NULL;
        c->lines = n;
        c->caplines = cap;
    }
    lline_t *ln = &c->lines[c->nlines++];
    memset(ln, 0, sizeof *ln);
    memcpy(ln->id, id, len);
    ln->day_start = -1;
    ln->cpd_day = -1;
    return ln;
}

int64_t ledger_reserved(const lcamp_t *c, int64_t day_min, int64_t now_ms)
{
    int64_t now_min = now_ms / MIN_MS, sum = 0;
    for (size_t i = 0; i < LEDGER_RESV_SLOTS; i++) {
        int64_t m = atomic_load_explicit(&c->resv[i].minute, memory_order_relaxed);
        if (m < 0 || now_min - m >= LEDGER_RESERVE_TTL_MS / MIN_MS || m < day_min)
            continue;
        sum += atomic_load_explicit(&c->resv[i].amount, memory_order_relaxed);
    }
    return sum;
}

/* Adds spend to a day counter: the current day, a new day (the old one is
 * done), or an earlier day (only the totals). c->mu held. */
static void spend_add(lcamp_t *c, lline_t *ln, int64_t day, int64_t amount)
{
    int64_t cur = atomic_load(&c->day_min);
    if (day > cur) {
        atomic_store(&c->spent_day, 0);
        atomic_store(&c->day_min, day);
        cur = day;
    }
    if (day == cur)
        atomic_fetch_add(&c->spent_day, amount);
    atomic_fetch_add(&c->spent_total, amount);
    if (ln) {
        if (day > ln->day_start) {
            ln->day_start = day;
            ln->spent_day = 0;
        }
        if (day == ln->day_start)
            ln->spent_day += amount;
        ln->spent_total += amount;
    }
}

void ledger_apply_notice(ledger_t *l, const ltok_t *t, int kind, unsigned outcome, int64_t charged)
{
    ledger_dedup_mark(l, t, (1u << kind) | (outcome & (NF_SETTLED | NF_CAPPED | NF_RELEASED)));
    lcamp_t *c = ledger_camp(l, t->campaign, t->lcampaign, 1);
    if (c) { /* a full campaign table loses the counts, never the journal */
        pthread_mutex_lock(&c->mu);
        lline_t *ln = ledger_line(c, t->line, t->lline);
        if (charged > 0)
            spend_add(c, ln, t->day_min, charged);
        if (ln) {
            switch (kind) {
            case LEDGER_WIN:
                ln->wins++;
                break;
            case LEDGER_BILLING:
                ln->billings++;
                break;
            case LEDGER_LOSS:
                ln->losses++;
                break;
            case LEDGER_IMPRESSION:
                ln->impressions++;
                break;
            case LEDGER_CLICK:
                ln->clicks++;
                break;
            }
            if ((outcome & NF_SETTLED) && t->billing == ACT_BILL_CPD && charged > 0)
                ln->cpd_day = t->day_min;
        }
        pthread_mutex_unlock(&c->mu);
    }
    if (outcome & NF_CAPPED)
        caps_count(l, t);
}

/* ----------------------------------------------------------- snapshot */

#define SNAP_MAGIC "CPLEDGR1"

static void u64le(buf_t *b, uint64_t v, int n, int *bad)
{
    unsigned char p[8];
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    *bad |= buf_append(b, p, (size_t)n) != CP_OK;
}

static void str8(buf_t *b, const char *s, int *bad)
{
    size_t n = strlen(s);
    u64le(b, n, 1, bad);
    *bad |= buf_append(b, s, n) != CP_OK;
}

/* A table's live entries, 16 little-endian bytes each, per stripe after
 * its count: one append per stripe rather than three per entry, since
 * the snapshot is built under ledger.mu (notices wait for it). */
static void snap_table(buf_t *b, ltab_t *t, int *bad)
{
    for (size_t i = 0; i < LTAB_STRIPES && !*bad; i++) {
        ltab_stripe_t *s = &t->s[i];
        pthread_mutex_lock(&s->mu);
        unsigned char *out = s->n ? malloc(s->n * 16) : NULL;
        size_t o = 0;
        u64le(b, s->n, 8, bad);
        if (s->n && out == NULL)
            *bad = 1;
        for (size_t k = 0; out && k < s->cap; k++) {
            const ltab_ent_t *e = &s->e[k];
            if (e->key == 0)
                continue;
            for (int j = 0; j < 8; j++)
                out[o + (size_t)j] = (unsigned char)(e->key >> (8 * j));
            for (int j = 0; j < 4; j++) {
                out[o + 8 + (size_t)j] = (unsigned char)(e->a >> (8 * j));
                out[o + 12 + (size_t)j] = (unsigned char)(e->b >> (8 * j));
            }
            o += 16;
        }
        if (out)
            *bad |= buf_append(b, out, o) != CP_OK;
        pthread_mutex_unlock(&s->mu);
        free(out);
    }
}

/* The state as bytes (ledger.mu held). */
static cp_status snap_build(ledger_t *l, uint64_t lsn, buf_t *b, cp_error_t *err)
{
    int bad = 0;
    bad |= buf_append(b, SNAP_MAGIC, 8) != CP_OK;
    u64le(b, lsn, 8, &bad);
    u64le(b, atomic_load(&l->contact_count), 4, &bad);
    u64le(b, (uint64_t)atomic_load(&l->contact_per), 4, &bad);
    uint32_t n = 0;
    for (size_t i = 0; i < LEDGER_MAX_CAMPAIGNS; i++)
        n += atomic_load(&l->camps[i]) != NULL;
    u64le(b, n, 4, &bad);
    for (size_t i = 0; i < LEDGER_MAX_CAMPAIGNS; i++) {
        lcamp_t *c = atomic_load(&l->camps[i]);
        if (c == NULL)
            continue;
        pthread_mutex_lock(&c->mu);
        str8(b, c->id, &bad);
        u64le(b, (uint64_t)atomic_load(&c->day_min), 8, &bad);
        u64le(b, (uint64_t)atomic_load(&c->spent_day), 8, &bad);
        u64le(b, (uint64_t)atomic_load(&c->spent_total), 8, &bad);
        u64le(b, c->nlines, 4, &bad);
        for (size_t k = 0; k < c->nlines; k++) {
            lline_t *ln = &c->lines[k];
            str8(b, ln->id, &bad);
            u64le(b, (uint64_t)ln->day_start, 8, &bad);
            u64le(b, (uint64_t)ln->spent_day, 8, &bad);
            u64le(b, (uint64_t)ln->spent_total, 8, &bad);
            u64le(b, (uint64_t)ln->cpd_day, 8, &bad);
            u64le(b, ln->wins, 8, &bad);
            u64le(b, ln->billings, 8, &bad);
            u64le(b, ln->losses, 8, &bad);
            u64le(b, ln->impressions, 8, &bad);
            u64le(b, ln->clicks, 8, &bad);
        }
        pthread_mutex_unlock(&c->mu);
    }
    snap_table(b, &l->caps, &bad);
    snap_table(b, &l->dedup, &bad);
    u64le(b, wal_crc32c(0, b->data, b->len), 4, &bad);
    return bad ? CP_ERR(err, CP_ENOMEM, "ledger snapshot: out of memory") : CP_OK;
}

static cp_status write_atomic(ledger_t *l, const char *path, const void *p, size_t n,
                              cp_error_t *err)
{
    char tmp[4400];
    cp_status rc = CP_OK;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = CP_ERR(err, errno == ENOSPC ? CP_ENOSPC : CP_EIO, "ledger snapshot %s: %s", tmp,
                    strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, (const char *)p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = CP_ERR(err, errno == ENOSPC || errno == EDQUOT ? CP_ENOSPC : CP_EIO,
                        "ledger snapshot %s: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    if (!l->nosync && fsync(fd) != 0) {
        rc = CP_ERR(err, CP_EIO, "ledger snapshot %s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = CP_ERR(err, CP_EIO, "ledger snapshot %s: rename: %s", path, strerror(errno));
        goto out;
    }
    int dfd = open(l->ldir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (!l->nosync && fsync(dfd) != 0)
            rc = CP_ERR(err, CP_EIO, "ledger snapshot: fsync %s: %s", l->ldir, strerror(errno));
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    if (rc != CP_OK)
        unlink(tmp);
    return rc;
}

/* Writes a snapshot of the state at the last LSN and deletes the log
 * segments it covers. */
cp_status ledger_snapshot(ledger_t *l, int64_t now_ms, cp_error_t *err)
{
    buf_t b;
    char path[4200];
    buf_init(&b, 0);
    pthread_mutex_lock(&l->mu);
    uint64_t lsn = wal_last_lsn(l->wal);
    cp_status rc = snap_build(l, lsn, &b, err);
    /* The next records start a new segment, so the old ones hold only
     * what the snapshot covers and can go whole. */
    if (rc == CP_OK)
        rc = wal_rotate(l->wal, NULL, err);
    uint64_t since = l->since_snap;
    l->since_snap = 0;
    pthread_mutex_unlock(&l->mu);
    if (rc == CP_OK) {
        snprintf(path, sizeof path, "%s/snapshot", l->ldir);
        rc = write_atomic(l, path, b.data, b.len, err);
    }
    if (rc == CP_OK) {
        l->snap_lsn = lsn;
        l->snap_ms = now_ms;
        rc = wal_truncate_before(l->wal, lsn, NULL, err);
    } else {
        pthread_mutex_lock(&l->mu);
        l->since_snap += since; /* try again at the next tick */
        pthread_mutex_unlock(&l->mu);
    }
    buf_free(&b);
    return rc;
}

typedef struct srd {
    const unsigned char *p;
    size_t n, at;
    int bad;
} srd_t;

static uint64_t sget(srd_t *r, int n)
{
    if (r->bad || r->at + (size_t)n > r->n) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | r->p[r->at + (size_t)i];
    r->at += (size_t)n;
    return v;
}

static void sstr(srd_t *r, char *out)
{
    size_t n = (size_t)sget(r, 1);
    if (r->bad || n == 0 || n > ACT_MAX_ID || r->at + n > r->n) {
        r->bad = 1;
        return;
    }
    memcpy(out, r->p + r->at, n);
    out[n] = '\0';
    r->at += n;
}

static void sload_table(srd_t *r, ltab_t *t)
{
    for (size_t i = 0; i < LTAB_STRIPES && !r->bad; i++) {
        uint64_t n = sget(r, 8);
        if (n > (r->n - r->at) / 16) {
            r->bad = 1;
            return;
        }
        ltab_stripe_t *s = &t->s[i];
        for (uint64_t k = 0; k < n && !r->bad; k++) {
            ltab_ent_t x;
            x.key = sget(r, 8);
            x.a = (uint32_t)sget(r, 4);
            x.b = (uint32_t)sget(r, 4);
            ltab_ent_t *e = x.key ? ltab_upsert(s, x.key) : NULL;
            if (e == NULL) {
                r->bad = 1;
                return;
            }
            *e = x;
        }
    }
}

static cp_status snap_load(ledger_t *l, cp_error_t *err)
{
    char path[4200];
    unsigned char *p = NULL;
    cp_status rc = CP_OK;
    snprintf(path, sizeof path, "%s/snapshot", l->ldir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        if (errno == ENOENT)
            return CP_OK;
        return CP_ERR(err, CP_EIO, "ledger snapshot %s: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0 || (p = malloc((size_t)st.st_size + 1)) == NULL) {
        rc = CP_ERR(err, CP_EIO, "ledger snapshot %s: %s", path, strerror(errno));
        goto out;
    }
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t k = read(fd, p + n, (size_t)st.st_size - n);
        if (k <= 0) {
            rc = CP_ERR(err, CP_EIO, "ledger snapshot %s: short read", path);
            goto out;
        }
        n += (size_t)k;
    }
    if (n < 32 || memcmp(p, SNAP_MAGIC, 8) != 0) {
        rc = CP_ERR(err, CP_ECORRUPT, "ledger snapshot %s is damaged at byte 0 (not a snapshot)",
                    path);
        goto out;
    }
    uint32_t crc = (uint32_t)p[n - 4] | (uint32_t)p[n - 3] << 8 | (uint32_t)p[n - 2] << 16 |
                   (uint32_t)p[n - 1] << 24;
    if (wal_crc32c(0, p, n - 4) != crc) {
        rc = CP_ERR(err, CP_ECORRUPT,
                    "ledger snapshot %s is damaged: checksum at byte %zu does not match", path,
                    n - 4);
        goto out;
    }
    srd_t r = {p, n - 4, 8, 0};
    l->snap_lsn = sget(&r, 8);
    atomic_store(&l->contact_count, (uint32_t)sget(&r, 4));
    atomic_store(&l->contact_per, (int)sget(&r, 4));
    uint32_t nc = (uint32_t)sget(&r, 4);
    for (uint32_t i = 0; i < nc && !r.bad; i++) {
        char id[ACT_MAX_ID + 1];
        sstr(&r, id);
        if (r.bad)
            break;
        lcamp_t *c = ledger_camp(l, id, strlen(id), 1);
        if (c == NULL) {
            r.bad = 1;
            break;
        }
        atomic_store(&c->day_min, (int64_t)sget(&r, 8));
        atomic_store(&c->spent_day, (int64_t)sget(&r, 8));
        atomic_store(&c->spent_total, (int64_t)sget(&r, 8));
        uint32_t nl = (uint32_t)sget(&r, 4);
        for (uint32_t k = 0; k < nl && !r.bad; k++) {
            char lid[ACT_MAX_ID + 1];
            sstr(&r, lid);
            lline_t *ln = r.bad ? NULL : ledger_line(c, lid, strlen(lid));
            if (ln == NULL) {
                r.bad = 1;
                break;
            }
            ln->day_start = (int64_t)sget(&r, 8);
            ln->spent_day = (int64_t)sget(&r, 8);
            ln->spent_total = (int64_t)sget(&r, 8);
            ln->cpd_day = (int64_t)sget(&r, 8);
            ln->wins = sget(&r, 8);
            ln->billings = sget(&r, 8);
            ln->losses = sget(&r, 8);
            ln->impressions = sget(&r, 8);
            ln->clicks = sget(&r, 8);
        }
    }
    if (!r.bad)
        sload_table(&r, &l->caps);
    if (!r.bad)
        sload_table(&r, &l->dedup);
    if (r.bad || r.at != r.n)
        rc = CP_ERR(err, CP_ECORRUPT, "ledger snapshot %s is damaged at byte %zu", path, r.at);
out:
    free(p);
    close(fd);
    return rc;
}

/* ------------------------------------------------------------- journal */

static cp_status replay_one(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                            cp_error_t *err)
{
    ledger_t *l = ud;
    const unsigned char *p = payload;
    cp_status rc = CP_OK;
    if (type == LREC_NOTICE) {
        rc = ledger_replay_notice(l, p, len, err);
    } else if (type == LREC_CONTACT && len == 5 && p[4] >= ACT_PER_HOUR &&
               p[4] <= ACT_PER_LIFETIME) {
        atomic_store(&l->contact_count, (uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                            (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        atomic_store(&l->contact_per, (int)p[4]);
    } else {
        rc = CP_ERR(err, CP_ECORRUPT, "unknown record type %u of %zu bytes", type, len);
    }
    if (rc != CP_OK) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        return CP_ERR(err, CP_ECORRUPT, "ledger journal %s/wal: record %llu is damaged: %s",
                      l->ldir, (unsigned long long)lsn, msg);
    }
    l->since_snap++;
    return CP_OK;
}

static int mkdir_one(const char *path)
{
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

void ledger_close(ledger_t *l)
{
    if (l == NULL)
        return;
    if (l->wal && l->since_snap > 0 && !wal_failed(l->wal)) {
        cp_error_t e = {0};
        /* A restart then replays nothing. The snapshot's time is the last
         * tick's: the ledger never reads the clock. */
        if (ledger_snapshot(l, l->snap_ms, &e) != CP_OK)
            fprintf(stderr, "crowdpack: ledger: snapshot at close failed: %s\n", e.message);
    }
    events_stop(l);
    wal_close(l->wal);
    for (size_t i = 0; i < LEDGER_MAX_CAMPAIGNS; i++) {
        lcamp_t *c = atomic_load(&l->camps[i]);
        if (c) {
            free(c->lines);
            pthread_mutex_destroy(&c->mu);
            free(c);
        }
    }
    ltab_destroy(&l->caps);
    ltab_destroy(&l->dedup);
    pthread_mutex_destroy(&l->mu);
    sodium_memzero(l->key, sizeof l->key);
    free(l->dir);
    free(l->ldir);
    free(l);
}

cp_status ledger_open_ex(const char *dir, cp_db_t *db, unsigned flags, ledger_t **out,
                         cp_error_t *err)
{
    ledger_t *l = NULL;
    cp_status rc = CP_OK;
    *out = NULL;
    if (dir == NULL || *dir == '\0')
        return CP_ERR(err, CP_EINVAL, "ledger_open: no directory");
    if ((l = calloc(1, sizeof *l)) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    l->db = db;
    l->nosync = (flags & LEDGER_OPEN_NOSYNC) != 0;
    pthread_mutex_init(&l->mu, NULL);
    ltab_init(&l->caps);
    ltab_init(&l->dedup);
    atomic_init(&l->contact_per, ACT_PER_DAY);
    size_t n = strlen(dir);
    if ((l->dir = strdup(dir)) == NULL || (l->ldir = malloc(n + 8)) == NULL) {
        free(l->dir);
        pthread_mutex_destroy(&l->mu);
        ltab_destroy(&l->caps);
        ltab_destroy(&l->dedup);
        free(l);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    snprintf(l->ldir, n + 8, "%s/ledger", dir);
    if (events_start(l, err) != CP_OK) { /* before any exit through ledger_close */
        rc = CP_ENOMEM;
        l->db = NULL;
        goto out;
    }
    if (mkdir_one(dir) != 0 || mkdir_one(l->ldir) != 0) {
        rc = CP_ERR(err, errno == ENOSPC ? CP_ENOSPC : CP_EIO, "ledger directory %s: %s", l->ldir,
                    strerror(errno));
        goto out;
    }
    if ((rc = notice_key_load(l, err)) || (rc = snap_load(l, err)))
        goto out;
    wal_options_t wo = {0};
    wo.sync = l->nosync ? WAL_SYNC_NONE : WAL_SYNC_FDATASYNC;
    wo.initial_lsn = l->snap_lsn + 1;
    wo.segment_bytes = 16ull << 20;
    if ((rc = wal_open(l->ldir, &wo, &l->wal, err)))
        goto out;
    if ((rc = wal_replay(l->wal, l->snap_lsn, replay_one, l, err)))
        goto out;
    l->epoch = randombytes_random();
out:
    if (rc != CP_OK) {
        l->since_snap = 0; /* never snapshot a half-loaded state */
        ledger_close(l);
        return rc;
    }
    *out = l;
    return CP_OK;
}

cp_status ledger_open(const char *dir, cp_db_t *db, ledger_t **out, cp_error_t *err)
{
    return ledger_open_ex(dir, db, 0, out, err);
}

/* ------------------------------------------------------------ bidding */

ledger_verdict ledger_check(ledger_t *l, const act_line_t *line, uint64_t person,
                            int64_t cost_millifen, int64_t now_ms, uint64_t rnd)
{
    ledger_verdict v = caps_check(l, line, person, now_ms);
    if (v != LEDGER_OK)
        return v;
    const act_campaign_t *ac = line->campaign;
    if (ac == NULL)
        return LEDGER_OK;
    lcamp_t *c = ledger_camp(l, ac->id, strlen(ac->id), 0);
    int64_t day = ledger_period_min(ac, ACT_PER_DAY, now_ms);
    int64_t spent_day = 0, spent_total = 0, resv_day = 0, resv_all = 0;
    if (c) {
        spent_day = atomic_load(&c->day_min) == day ? atomic_load(&c->spent_day) : 0;
        spent_total = atomic_load(&c->spent_total);
        resv_day = ledger_reserved(c, day, now_ms);
        resv_all = ledger_reserved(c, -1, now_ms);
    }
    if (ac->daily_fen > 0 && spent_day + resv_day + cost_millifen > ac->daily_fen * 1000)
        return LEDGER_BUDGET_DAILY;
    if (ac->total_fen > 0 && spent_total + resv_all + cost_millifen > ac->total_fen * 1000)
        return LEDGER_BUDGET_TOTAL;
    if (c && ac->pacing == ACT_PACE_EVEN && ac->daily_fen > 0 && !pacing_pass(c, rnd))
        return LEDGER_PACING;
    return LEDGER_OK;
}

cp_status ledger_reserve(ledger_t *l, const ledger_bid_t *b, int64_t cost_millifen, char *token,
                         cp_error_t *err)
{
    if (l == NULL || b == NULL || b->campaign == NULL || b->line == NULL || token == NULL ||
        cost_millifen < 0)
        return CP_ERR(err, CP_EINVAL, "ledger_reserve: missing bid, campaign, line or token");
    const act_campaign_t *ac = b->campaign;
    cp_status rc = ltok_encode(l, b, cost_millifen, token, err);
    if (rc)
        return rc;
    lcamp_t *c = ledger_camp(l, ac->id, strlen(ac->id), 1);
    if (c == NULL)
        return CP_ERR(err, CP_ELIMIT, "ledger: no room for campaign \"%s\" (%d campaigns)", ac->id,
                      LEDGER_MAX_CAMPAIGNS);
    int64_t day = ledger_period_min(ac, ACT_PER_DAY, b->bid_ms);
    int64_t minute = b->bid_ms / MIN_MS;
    pthread_mutex_lock(&c->mu);
    int64_t spent_day = atomic_load(&c->day_min) == day ? atomic_load(&c->spent_day) : 0;
    if (ac->daily_fen > 0 &&
        spent_day + ledger_reserved(c, day, b->bid_ms) + cost_millifen > ac->daily_fen * 1000) {
        rc = CP_ERR(err, CP_ELIMIT, "campaign \"%s\": the daily budget has no room left", ac->id);
        goto out;
    }
    if (ac->total_fen > 0 &&
        atomic_load(&c->spent_total) + ledger_reserved(c, -1, b->bid_ms) + cost_millifen >
            ac->total_fen * 1000) {
        rc = CP_ERR(err, CP_ELIMIT, "campaign \"%s\": the total budget has no room left", ac->id);
        goto out;
    }
    lresv_t *r = &c->resv[minute % LEDGER_RESV_SLOTS];
    int64_t m = atomic_load(&r->minute);
    if (m > minute)
        goto out; /* a bid 16+ minutes older than the newest: its reservation is already
                     expired */
    if (m != minute) {
        atomic_store(&r->amount, 0);
        atomic_store(&r->minute, minute);
    }
    atomic_fetch_add(&r->amount, cost_millifen);
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------- housekeeping */

static int dedup_keep(void *ctx, const ltab_ent_t *e)
{
    int64_t now_min = *(const int64_t *)ctx;
    return (int64_t)e->a + LEDGER_DEDUP_WINDOW_MS / MIN_MS > now_min;
}

void ledger_tick(ledger_t *l, const act_snapshot_t *s, int64_t now_ms)
{
    if (l == NULL)
        return;
    for (size_t i = 0; s && i < s->ncampaigns; i++) {
        const act_campaign_t *ac = s->campaigns[i];
        lcamp_t *c = ledger_camp(l, ac->id, strlen(ac->id), 1);
        if (c)
            pacing_step(c, ac, now_ms);
    }
    /* Two stripes of each table per tick: every counter is looked at
     * about every 32 ticks, and no tick holds a lock for long. */
    int64_t now_min = now_ms / MIN_MS;
    for (int k = 0; k < 2; k++) {
        ltab_sweep(&l->caps, l->sweep_next, caps_keep, &now_min);
        ltab_sweep(&l->dedup, l->sweep_next, dedup_keep, &now_min);
        l->sweep_next = (l->sweep_next + 1) % LTAB_STRIPES;
    }
    if (l->snap_ms == 0)
        l->snap_ms = now_ms;
    pthread_mutex_lock(&l->mu);
    uint64_t since = l->since_snap;
    pthread_mutex_unlock(&l->mu);
    if (since >= LEDGER_SNAP_RECORDS || (since > 0 && now_ms - l->snap_ms >= LEDGER_SNAP_MS)) {
        cp_error_t e = {0};
        if (ledger_snapshot(l, now_ms, &e) != CP_OK)
            fprintf(stderr, "crowdpack: ledger: snapshot failed (tried again later): %s\n",
                    e.message);
    }
}

cp_status ledger_contact_cap_set(ledger_t *l, uint32_t count, act_period per, cp_error_t *err)
{
    unsigned char rec[5];
    uint64_t lsn = 0;
    if (l == NULL || (count > 0 && (per < ACT_PER_HOUR || per > ACT_PER_LIFETIME)))
        return CP_ERR(err, CP_EINVAL,
                      "contact cap: the period must be hour, day, week or "
                      "lifetime");
    if (count == 0)
        per = ACT_PER_DAY;
    for (int i = 0; i < 4; i++)
        rec[i] = (unsigned char)(count >> (8 * i));
    rec[4] = (unsigned char)per;
    pthread_mutex_lock(&l->mu);
    cp_status rc = wal_reserve(l->wal, sizeof rec, err);
    if (rc == CP_OK)
        rc = wal_append(l->wal, LREC_CONTACT, rec, sizeof rec, &lsn, err);
    if (rc == CP_OK) {
        atomic_store(&l->contact_count, count);
        atomic_store(&l->contact_per, (int)per);
        l->since_snap++;
    }
    pthread_mutex_unlock(&l->mu);
    return rc ? rc : wal_sync(l->wal, lsn, err);
}

void ledger_contact_cap_get(ledger_t *l, uint32_t *count, act_period *per)
{
    *count = atomic_load(&l->contact_count);
    *per = (act_period)atomic_load(&l->contact_per);
}

/* ------------------------------------------------------------ report */

/* Millifen as exact yuan text: 537 -> "0.00537", 123450000 -> "1234.5". */
static void yuan(buf_t *b, int64_t m, int *bad)
{
    int neg = m < 0;
    uint64_t u = neg ? (uint64_t)(-(m + 1)) + 1 : (uint64_t)m;
    char frac[8];
    snprintf(frac, sizeof frac, "%05llu", (unsigned long long)(u % 100000));
    int k = 5;
    while (k > 2 && frac[k - 1] == '0')
        k--;
    frac[k] = '\0';
    *bad |=
        buf_printf(b, "%s%llu.%s", neg ? "-" : "", (unsigned long long)(u / 100000), frac) != CP_OK;
}

static void money(buf_t *b, const char *name, int64_t m, int *bad)
{
    *bad |= buf_printf(b, "\"%s\":", name) != CP_OK;
    yuan(b, m, bad);
    *bad |= buf_printf(b, ",\"%s_millifen\":%lld", name, (long long)m) != CP_OK;
}

cp_status ledger_delivery_json(ledger_t *l, const act_campaign_t *ac, int64_t now_ms, char **out,
                               cp_error_t *err)
{
    buf_t b;
    int bad = 0;
    char date[40] = "";
    *out = NULL;
    if (l == NULL || ac == NULL)
        return CP_ERR(err, CP_EINVAL, "ledger_delivery_json: no ledger or campaign");
    buf_init(&b, 0);
    lcamp_t *c = ledger_camp(l, ac->id, strlen(ac->id), 0);
    int64_t day = ledger_period_min(ac, ACT_PER_DAY, now_ms);
    int64_t off = ac->tz ? tz_offset_ms(ac->tz, day * MIN_MS) : 0;
    time_format((day * MIN_MS + off) / 1000, date, sizeof date);
    date[10] = '\0';
    if (c)
        pthread_mutex_lock(&c->mu);
    int64_t spent_day = c && atomic_load(&c->day_min) == day ? atomic_load(&c->spent_day) : 0;
    int64_t spent_total = c ? atomic_load(&c->spent_total) : 0;
    int64_t resv_day = c ? ledger_reserved(c, day, now_ms) : 0;
    int64_t resv_all = c ? ledger_reserved(c, -1, now_ms) : 0;
    bad |= buf_printf(&b, "{\"campaign\":\"%s\",\"day\":\"%s\",\"today\":{", ac->id, date);
    money(&b, "spent", spent_day, &bad);
    bad |= buf_printf(&b, ",") != CP_OK;
    money(&b, "reserved", resv_day, &bad);
    bad |= buf_printf(&b, ",") != CP_OK;
    money(&b, "budget", ac->daily_fen * 1000, &bad);
    bad |= buf_printf(&b, "},\"total\":{") != CP_OK;
    money(&b, "spent", spent_total, &bad);
    bad |= buf_printf(&b, ",") != CP_OK;
    money(&b, "reserved", resv_all, &bad);
    bad |= buf_printf(&b, ",") != CP_OK;
    money(&b, "budget", ac->total_fen * 1000, &bad);
    uint32_t ppm = c ? atomic_load(&c->pass_ppm) : 1000000u;
    int even = ac->pacing == ACT_PACE_EVEN && ac->daily_fen > 0;
    bad |= buf_printf(&b,
                      "},\"pacing\":{\"mode\":\"%s\",\"throttle\":%u.%06u,\"active_minutes_left\":"
                      "%lld,\"plan_per_minute_millifen\":%lld,\"last_minute_millifen\":%lld},"
                      "\"lines\":[",
                      ac->pacing == ACT_PACE_ASAP ? "asap" : "even", even ? ppm / 1000000u : 1u,
                      even ? ppm % 1000000u : 0u, (long long)pacing_active_minutes_left(ac, now_ms),
                      (long long)(c && even ? c->pace_alloc : 0),
                      (long long)(c && even ? c->pace_last : 0)) != CP_OK;
    for (size_t i = 0; i < ac->nlines; i++) {
        const act_line_t *al = &ac->lines[i];
        lline_t *ln = NULL;
        for (size_t k = 0; c && k < c->nlines; k++)
            if (!strcmp(c->lines[k].id, al->id))
                ln = &c->lines[k];
        bad |= buf_printf(&b, "%s{\"id\":\"%s\",\"today\":{", i ? "," : "", al->id) != CP_OK;
        money(&b, "spent", ln && ln->day_start == day ? ln->spent_day : 0, &bad);
        bad |= buf_printf(&b, "},\"total\":{") != CP_OK;
        money(&b, "spent", ln ? ln->spent_total : 0, &bad);
        bad |= buf_printf(&b,
                          "},\"wins\":%llu,\"billings\":%llu,\"losses\":%llu,\"impressions\":%llu,"
                          "\"clicks\":%llu}",
                          (unsigned long long)(ln ? ln->wins : 0),
                          (unsigned long long)(ln ? ln->billings : 0),
                          (unsigned long long)(ln ? ln->losses : 0),
                          (unsigned long long)(ln ? ln->impressions : 0),
                          (unsigned long long)(ln ? ln->clicks : 0)) != CP_OK;
    }
    bad |= buf_printf(&b, "]}") != CP_OK;
    if (c)
        pthread_mutex_unlock(&c->mu);
    if (bad) {
        buf_free(&b);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    *out = (char *)buf_cstr(&b);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}
