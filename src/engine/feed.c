/*
 * feed.c — the change feed: after each commit, which users entered or left
 * which crowds and tags, and which events were applied (cp_db_subscribe).
 *
 * Where the truth comes from: the index records what a write changed
 * (index/change.h): the members of each tag and crowd as they were before
 * the write first changed them. At the commit (feed_commit, write lock
 * held) the difference with the members now is exact whatever path made
 * it — user writes, events, merges, deletions, tag moves, crowd
 * refreshes — so no write path reports its own changes. Events are noted
 * as they are applied.
 *
 * Why a thread: callbacks must be able to call the API (a journey reads a
 * user, a bidder updates its view), so they cannot run under the handle's
 * lock, and commits happen on several threads (callers, the intake
 * writer, the checkpointer) that must not deliver out of order or be held
 * by a slow subscriber while holding the lock. So the commit queues its
 * record under the lock (queue order = commit order) and one feed thread
 * delivers the queue in order, without the lock. Back-pressure is applied
 * where no lock is held: before a write takes the lock (feed_wait_room).
 *
 * Nobody subscribed: the index records nothing (ixchg.record = 0), no
 * record is built, no thread runs.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "engine/feed.h"

#define FEED_MAX_SUBS 64
#define FEED_MAX_RECORDS 1024
#define FEED_MAX_BYTES (256ull << 20)

typedef struct sub {
    uint64_t id; /* 0 = free slot */
    cp_commit_fn fn;
    void *ctx;
    unsigned what;
    uint64_t from_seq; /* first commit it sees */
} sub_t;

typedef struct rec {
    struct rec *next;
    cp_commit_info_t info;
    cp_change_t *changes; /* crowds first, then tags */
    size_t ncrowd;        /* changes[0..ncrowd) are crowds */
    size_t nchanges;
    cp_feed_event_t *events;
    size_t nevents;
    char *names; /* event names, NUL-separated */
    uint64_t bytes;
} rec_t;

struct feed {
    pthread_mutex_t mu;
    pthread_cond_t work; /* records queued, or stop */
    pthread_cond_t room; /* a record delivered or a callback returned */
    sub_t subs[FEED_MAX_SUBS];
    uint64_t next_id;
    unsigned want; /* union of the subscribers' masks (under mu and the write lock) */
    rec_t *head, *tail;
    size_t queued;
    uint64_t bytes;
    size_t max_records; /* writers wait past these (FEED_MAX_*; tests lower them) */
    uint64_t max_bytes;
    size_t peak_queued; /* the most ever waiting, for feed_backlog */
    uint64_t peak_bytes;
    uint64_t enq_seq, done_seq; /* last queued / last delivered */
    uint64_t running;           /* id of the subscription whose callback runs; 0 = none */
    pthread_t th;
    int started, stop;
    rec_t *spare; /* so a commit always has a record, if only an incomplete one */
    /* noted by the current write (write lock held) */
    cp_feed_event_t *ev;
    size_t nev, capev;
    char *nb; /* names; ev[i].name holds offset + 1 until the commit */
    size_t nblen, nbcap;
    int ev_lost;
};

static void rec_free(rec_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nchanges; i++) {
        free((void *)r->changes[i].entered);
        free((void *)r->changes[i].left);
        free((void *)r->changes[i].name);
    }
    free(r->changes);
    free(r->events);
    free(r->names);
    free(r);
}

static struct feed *feed_of(cp_db_t *db)
{
    return atomic_load(&db->feed);
}

static int on_feed_thread(const struct feed *f)
{
    return f->started && pthread_equal(pthread_self(), f->th);
}

/* ------------------------------------------------------ building records */

static const char *crowd_name_of(const cp_db_t *db, uint32_t id)
{
    for (size_t i = 0; i < db->crowds.n; i++)
        if (db->crowds.items[i]->id == id)
            return db->crowds.items[i]->name;
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The change of one set from `before` to `now` (NULL = gone) into ch;
 * 0 when nothing changed, 1 when ch was filled, -1 on ENOMEM. */
static int diff_one(const roaring_bitmap_t *before, const roaring_bitmap_t *now, cp_change_t *ch,
                    uint64_t *bytes)
{
    roaring_bitmap_t *in = NULL, *out = NULL;
    uint32_t *a = NULL, *b = NULL;
    int rc = -1;
    if (now) {
        in = roaring_bitmap_andnot(now, before);
        out = roaring_bitmap_andnot(before, now);
    } else {
        in = roaring_bitmap_create();
        out = roaring_bitmap_copy(before);
    }
    if (in == NULL || out == NULL)
        goto out;
    uint64_t ni = roaring_bitmap_get_cardinality(in), no = roaring_bitmap_get_cardinality(out);
    if (ni == 0 && no == 0) {
        rc = 0;
        goto out;
    }
    if ((ni && (a = malloc(ni * sizeof *a)) == NULL) ||
        (no && (b = malloc(no * sizeof *b)) == NULL))
        goto out;
    if (ni)
        roaring_bitmap_to_uint32_array(in, a);
    if (no)
        roaring_bitmap_to_uint32_array(out, b);
    ch->entered = a;
    ch->nentered = ni;
    ch->left = b;
    ch->nleft = no;
    *bytes += (ni + no) * sizeof(uint32_t) + sizeof *ch;
    a = b = NULL;
    rc = 1;
out:
    free(a);
    free(b);
    index_bm_free(in);
    index_bm_free(out);
    return rc;
}

/* Appends the changes of one kind (ids sorted ascending) to r. */
static void diff_set(cp_db_t *db, rec_t *r, ixchg_set_t *s, cp_change_kind kind)
{
    if (s->nids == 0)
        return;
    qsort(s->ids, s->nids, sizeof *s->ids, cmp_u32);
    cp_change_t *grown = realloc(r->changes, (r->nchanges + s->nids) * sizeof *grown);
    if (grown == NULL) {
        r->info.incomplete = 1;
        return;
    }
    r->changes = grown;
    for (size_t i = 0; i < s->nids; i++) {
        uint32_t id = s->ids[i];
        const roaring_bitmap_t *now = NULL;
        const char *name = NULL;
        if (kind == CP_CHANGE_CROWD) {
            now = index_crowd(db->ix, id);
            name = now ? crowd_name_of(db, id) : NULL;
        } else {
            const idx_tag_t *t = index_tag(db->ix, id);
            const tax_tag_t *g = t ? tax_get(&db->tax, id) : NULL;
            now = t ? t->eff : NULL;
            name = g ? g->path : NULL;
        }
        cp_change_t *ch = &r->changes[r->nchanges];
        memset(ch, 0, sizeof *ch);
        ch->kind = kind;
        ch->id = id;
        int d = diff_one(s->before[id], now, ch, &r->bytes);
        if (d < 0 || (d > 0 && name && (ch->name = strdup(name)) == NULL)) {
            free((void *)ch->entered);
            free((void *)ch->left);
            r->info.incomplete = 1;
            continue;
        }
        if (d > 0)
            r->nchanges++;
    }
}

static void events_take(struct feed *f, rec_t *r)
{
    if (f->ev_lost)
        r->info.incomplete = 1;
    if (f->nev == 0)
        return;
    for (size_t i = 0; i < f->nev; i++) {
        uintptr_t off = (uintptr_t)f->ev[i].name;
        f->ev[i].name = off ? f->nb + off - 1 : NULL;
    }
    r->events = f->ev;
    r->nevents = f->nev;
    r->names = f->nb;
    r->bytes += f->nev * sizeof *f->ev + f->nblen;
    f->ev = NULL;
    f->nev = f->capev = 0;
    f->nb = NULL;
    f->nblen = f->nbcap = 0;
}

static void events_drop(struct feed *f)
{
    f->nev = 0;
    f->nblen = 0;
    f->ev_lost = 0;
}

void feed_commit(cp_db_t *db, uint64_t seq)
{
    struct feed *f = feed_of(db);
    ixchg_t *c = &db->ix->chg;
    if (f == NULL || f->want == 0) {
        ixchg_clear(c);
        return;
    }
    rec_t *r = calloc(1, sizeof *r);
    if (r == NULL) {
        r = f->spare; /* the commit is delivered, marked incomplete */
        f->spare = NULL;
    }
    if (r != NULL) {
        r->info.size = sizeof r->info;
        r->info.seq = seq;
        r->info.time_ms = time_now_ms();
        r->info.incomplete = c->lost;
        r->bytes = sizeof *r;
        if (f->want & CP_FEED_CROWDS)
            diff_set(db, r, &c->crowd, CP_CHANGE_CROWD);
        r->ncrowd = r->nchanges;
        if (f->want & CP_FEED_TAGS)
            diff_set(db, r, &c->tags, CP_CHANGE_TAG);
        events_take(f, r);
        r->info.changes = r->changes;
        r->info.nchanges = r->nchanges;
        r->info.events = r->events;
        r->info.nevents = r->nevents;
    }
    ixchg_clear(c);
    events_drop(f);
    if (f->spare == NULL)
        f->spare = calloc(1, sizeof *f->spare);
    if (r == NULL)
        return; /* no memory even for an empty record */
    pthread_mutex_lock(&f->mu);
    if (f->tail)
        f->tail->next = r;
    else
        f->head = r;
    f->tail = r;
    f->queued++;
    f->bytes += r->bytes;
    if (f->queued > f->peak_queued)
        f->peak_queued = f->queued;
    if (f->bytes > f->peak_bytes)
        f->peak_bytes = f->bytes;
    f->enq_seq = seq;
    pthread_cond_signal(&f->work);
    pthread_mutex_unlock(&f->mu);
}

void feed_discard(cp_db_t *db)
{
    struct feed *f = feed_of(db);
    ixchg_clear(&db->ix->chg);
    if (f)
        events_drop(f);
}

void feed_note_event(cp_db_t *db, const ingest_event_t *e, uint32_t ord)
{
    struct feed *f = feed_of(db);
    if (f == NULL || !(f->want & CP_FEED_EVENTS))
        return;
    if (arr_grow((void **)&f->ev, &f->capev, f->nev + 1, sizeof *f->ev, 256)) {
        f->ev_lost = 1;
        return;
    }
    uintptr_t off = 0;
    if (e->event && e->event_len) {
        if (f->nblen + e->event_len + 1 > f->nbcap) {
            size_t n = f->nbcap ? f->nbcap : 4096;
            while (n < f->nblen + e->event_len + 1)
                n *= 2;
            char *nb = realloc(f->nb, n);
            if (nb == NULL) {
                f->ev_lost = 1;
                return;
            }
            f->nb = nb;
            f->nbcap = n;
        }
        memcpy(f->nb + f->nblen, e->event, e->event_len);
        f->nb[f->nblen + e->event_len] = '\0';
        off = f->nblen + 1;
        f->nblen += e->event_len + 1;
    }
    cp_feed_event_t *x = &f->ev[f->nev++];
    x->type = (cp_event_type)e->type;
    x->user = ord;
    x->time_ms = e->ts * 1000;
    x->name = (const char *)off;
}

/* ------------------------------------------------------------- delivery */

/* The part of r subscription s asked for. */
static void view_for(const rec_t *r, const sub_t *s, cp_commit_info_t *v)
{
    *v = r->info;
    size_t from = s->what & CP_FEED_CROWDS ? 0 : r->ncrowd;
    size_t to = s->what & CP_FEED_TAGS ? r->nchanges : r->ncrowd;
    v->changes = to > from ? r->changes + from : NULL;
    v->nchanges = to > from ? to - from : 0;
    if (!(s->what & CP_FEED_EVENTS)) {
        v->events = NULL;
        v->nevents = 0;
    }
}

static void *feed_main(void *arg)
{
    struct feed *f = arg;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (f->head == NULL && !f->stop)
            pthread_cond_wait(&f->work, &f->mu);
        rec_t *r = f->head;
        if (r == NULL)
            break; /* stopping, and nothing left */
        /* Subscriptions by slot; one callback at a time, mu released
         * around it so callbacks may subscribe, unsubscribe or write. */
        for (size_t i = 0; i < FEED_MAX_SUBS; i++) {
            sub_t s = f->subs[i];
            if (s.id == 0 || r->info.seq < s.from_seq)
                continue;
            f->running = s.id;
            pthread_mutex_unlock(&f->mu);
            cp_commit_info_t v;
            view_for(r, &s, &v);
            s.fn(s.ctx, &v);
            pthread_mutex_lock(&f->mu);
            f->running = 0;
            pthread_cond_broadcast(&f->room);
        }
        f->head = r->next;
        if (f->head == NULL)
            f->tail = NULL;
        f->queued--;
        f->bytes -= r->bytes;
        f->done_seq = r->info.seq;
        pthread_cond_broadcast(&f->room);
        pthread_mutex_unlock(&f->mu);
        rec_free(r);
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

void feed_wait_room(cp_db_t *db)
{
    struct feed *f = db ? feed_of(db) : NULL;
    if (f == NULL || on_feed_thread(f))
        return;
    pthread_mutex_lock(&f->mu);
    while (!f->stop && (f->queued > f->max_records || f->bytes > f->max_bytes))
        pthread_cond_wait(&f->room, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

void feed_backlog(cp_db_t *db, feed_backlog_t *out)
{
    struct feed *f = feed_of(db);
    memset(out, 0, sizeof *out);
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    out->queued = f->queued;
    out->bytes = f->bytes;
    out->peak_queued = f->peak_queued;
    out->peak_bytes = f->peak_bytes;
    out->max_records = f->max_records;
    out->max_bytes = f->max_bytes;
    pthread_mutex_unlock(&f->mu);
}

void feed_set_limits(cp_db_t *db, size_t max_records, uint64_t max_bytes)
{
    struct feed *f = feed_of(db);
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    f->max_records = max_records ? max_records : FEED_MAX_RECORDS;
    f->max_bytes = max_bytes ? max_bytes : FEED_MAX_BYTES;
    f->peak_queued = f->queued;
    f->peak_bytes = f->bytes;
    pthread_cond_broadcast(&f->room);
    pthread_mutex_unlock(&f->mu);
}

static void feed_free(struct feed *f)
{
    while (f->head) {
        rec_t *r = f->head;
        f->head = r->next;
        rec_free(r);
    }
    rec_free(f->spare);
    free(f->ev);
    free(f->nb);
    pthread_cond_destroy(&f->work);
    pthread_cond_destroy(&f->room);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void feed_close(cp_db_t *db)
{
    struct feed *f = feed_of(db);
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->work);
    pthread_cond_broadcast(&f->room);
    pthread_mutex_unlock(&f->mu);
    if (f->started)
        pthread_join(f->th, NULL);
    atomic_store(&db->feed, NULL);
    feed_free(f);
}

/* --------------------------------------------------------------- public */

static unsigned want_of(const struct feed *f)
{
    unsigned w = 0;
    for (size_t i = 0; i < FEED_MAX_SUBS; i++)
        if (f->subs[i].id)
            w |= f->subs[i].what;
    return w;
}

/* The feed, created with its thread on first use. Write lock held. */
static cp_status feed_get(cp_db_t *db, struct feed **out, cp_error_t *err)
{
    struct feed *f = feed_of(db);
    if (f == NULL) {
        if ((f = calloc(1, sizeof *f)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory starting the change feed");
        pthread_mutex_init(&f->mu, NULL);
        pthread_cond_init(&f->work, NULL);
        pthread_cond_init(&f->room, NULL);
        f->next_id = 1;
        f->max_records = FEED_MAX_RECORDS;
        f->max_bytes = FEED_MAX_BYTES;
        f->spare = calloc(1, sizeof *f->spare);
        if (f->spare == NULL || pthread_create(&f->th, NULL, feed_main, f) != 0) {
            feed_free(f);
            return CP_ERR(err, CP_ENOMEM, "cannot start the change feed's thread");
        }
        f->started = 1;
        atomic_store(&db->feed, f);
    }
    *out = f;
    return CP_OK;
}

cp_status cp_db_subscribe(cp_db_t *db, cp_commit_fn fn, void *ctx, unsigned what, uint64_t *id,
                          cp_error_t *err)
{
    if (db == NULL || fn == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_subscribe: %s is NULL", db ? "fn" : "db");
    if (what & ~(unsigned)CP_FEED_ALL)
        return CP_ERR(err, CP_EINVAL, "cp_db_subscribe: unknown bits 0x%x in what",
                      what & ~(unsigned)CP_FEED_ALL);
    if (what == 0)
        what = CP_FEED_ALL;
    /* The write lock: the subscription starts at a commit boundary (the
     * intake writer commits first) and the recorder switches on between
     * writes. */
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    struct feed *f = NULL;
    if (rc == CP_OK)
        rc = feed_get(db, &f, err);
    if (rc == CP_OK) {
        pthread_mutex_lock(&f->mu);
        size_t i = 0;
        while (i < FEED_MAX_SUBS && f->subs[i].id)
            i++;
        if (i == FEED_MAX_SUBS) {
            rc = CP_ERR(err, CP_ELIMIT, "the handle has %d subscriptions already", FEED_MAX_SUBS);
        } else {
            sub_t *s = &f->subs[i];
            s->id = f->next_id++;
            s->fn = fn;
            s->ctx = ctx;
            s->what = what;
            s->from_seq = atomic_load(&db->writes) + 1;
            f->want = want_of(f);
            if (id)
                *id = s->id;
        }
        pthread_mutex_unlock(&f->mu);
        db->ix->chg.record = (f->want & (CP_FEED_CROWDS | CP_FEED_TAGS)) != 0;
    }
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

cp_status cp_db_unsubscribe(cp_db_t *db, uint64_t id, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_unsubscribe: db is NULL");
    struct feed *f = feed_of(db);
    cp_status rc = CP_OK;
    db_lock_wr(db);
    if (f == NULL) {
        rc = CP_ERR(err, CP_ENOTFOUND, "no subscription %llu", (unsigned long long)id);
        goto out;
    }
    pthread_mutex_lock(&f->mu);
    size_t i = 0;
    while (i < FEED_MAX_SUBS && (id == 0 || f->subs[i].id != id))
        i++;
    if (i == FEED_MAX_SUBS) {
        rc = CP_ERR(err, CP_ENOTFOUND, "no subscription %llu", (unsigned long long)id);
    } else {
        memset(&f->subs[i], 0, sizeof f->subs[i]);
        f->want = want_of(f);
    }
    pthread_mutex_unlock(&f->mu);
    db->ix->chg.record = (f->want & (CP_FEED_CROWDS | CP_FEED_TAGS)) != 0;
out:
    pthread_rwlock_unlock(&db->lock);
    /* Outside the handle's lock: the callback may be waiting for it. */
    if (rc == CP_OK && !on_feed_thread(f)) {
        pthread_mutex_lock(&f->mu);
        while (f->running == id)
            pthread_cond_wait(&f->room, &f->mu);
        pthread_mutex_unlock(&f->mu);
    }
    return rc;
}

cp_status cp_feed_flush(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_feed_flush: db is NULL");
    struct feed *f = feed_of(db);
    if (f == NULL)
        return CP_OK;
    if (on_feed_thread(f))
        return CP_ERR(err, CP_ECONFLICT,
                      "cp_feed_flush called from a feed callback would wait for itself");
    /* The lock makes the intake writer commit what it applied. */
    db_lock_rd(db);
    pthread_mutex_lock(&f->mu);
    uint64_t target = f->enq_seq;
    pthread_rwlock_unlock(&db->lock);
    while (f->done_seq < target && !f->stop)
        pthread_cond_wait(&f->room, &f->mu);
    pthread_mutex_unlock(&f->mu);
    return CP_OK;
}
