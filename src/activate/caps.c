/*
 * caps.c — frequency caps: per-person counters per line, per campaign and
 * for the global contact cap, in calendar periods of the campaign's time
 * zone (DESIGN.md §10, docs/activation.md "Frequency caps").
 *
 * A counter is one 16-byte entry of a striped open-addressing table:
 * key = hash64(person, scope, period kind), a = start of the period it
 * counts (minutes since the epoch, local calendar converted back to UTC),
 * b = count << 3 | period kind. A counter whose period has begun anew is
 * simply stale: ledger_check reads it as 0, the next impression starts it
 * over, and ledger_tick's sweep drops it (hour counters after an hour,
 * day after 25 h, week after 8 days; lifetime counters stay). Memory is
 * 16 bytes x counters in use, at most 1/0.7 of that for the table's slack:
 * one person with a daily line cap costs 16-23 bytes.
 *
 * People: the person key comes from the bidder (OneID's ordinal for a
 * known person), so one person seen under several identifiers has one set
 * of counters. Key collisions of the 64-bit hash are ignored (2^-64).
 */
#include <stdlib.h>
#include <string.h>

#include "activate/ledger_int.h"
#include "util/util.h"

/* ------------------------------------------------------------- tables */

void ltab_init(ltab_t *t)
{
    for (size_t i = 0; i < LTAB_STRIPES; i++) {
        pthread_mutex_init(&t->s[i].mu, NULL);
        t->s[i].e = NULL;
        t->s[i].cap = t->s[i].n = 0;
    }
}

void ltab_destroy(ltab_t *t)
{
    for (size_t i = 0; i < LTAB_STRIPES; i++) {
        free(t->s[i].e);
        t->s[i].e = NULL;
        pthread_mutex_destroy(&t->s[i].mu);
    }
}

ltab_stripe_t *ltab_stripe(ltab_t *t, uint64_t key)
{
    return &t->s[key >> 58]; /* the top 6 bits: the slot index uses the low ones */
}

ltab_ent_t *ltab_find(ltab_stripe_t *s, uint64_t key)
{
    if (s->cap == 0)
        return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
        if (s->e[i].key == key)
            return &s->e[i];
        if (s->e[i].key == 0)
            return NULL;
    }
}

static void put(ltab_ent_t *e, size_t cap, const ltab_ent_t *x)
{
    size_t mask = cap - 1;
    size_t i = (size_t)x->key & mask;
    while (e[i].key != 0)
        i = (i + 1) & mask;
    e[i] = *x;
}

static int grow(ltab_stripe_t *s, size_t cap)
{
    ltab_ent_t *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->e[i].key)
            put(e, cap, &s->e[i]);
    free(s->e);
    s->e = e;
    s->cap = cap;
    return 0;
}

ltab_ent_t *ltab_upsert(ltab_stripe_t *s, uint64_t key)
{
    ltab_ent_t *e = ltab_find(s, key);
    if (e)
        return e;
    if ((s->n + 1) * 10 > s->cap * 7 && grow(s, s->cap ? s->cap * 2 : 64) != 0)
        return NULL;
    ltab_ent_t x = {.key = key};
    put(s->e, s->cap, &x);
    s->n++;
    return ltab_find(s, key);
}

size_t ltab_sweep(ltab_t *t, size_t i, int (*keep)(void *ctx, const ltab_ent_t *e), void *ctx)
{
    ltab_stripe_t *s = &t->s[i % LTAB_STRIPES];
    size_t dropped = 0;
    pthread_mutex_lock(&s->mu);
    size_t live = 0;
    for (size_t k = 0; k < s->cap; k++)
        if (s->e[k].key && keep(ctx, &s->e[k]))
            live++;
    if (live == s->n)
        goto out;
    size_t cap = 64;
    while (live * 10 > cap * 7)
        cap *= 2;
    ltab_ent_t *e = calloc(cap, sizeof *e);
    if (e == NULL)
        goto out; /* try again at the next sweep */
    for (size_t k = 0; k < s->cap; k++)
        if (s->e[k].key && keep(ctx, &s->e[k]))
            put(e, cap, &s->e[k]);
    dropped = s->n - live;
    free(s->e);
    s->e = e;
    s->cap = cap;
    s->n = live;
out:
    pthread_mutex_unlock(&s->mu);
    return dropped;
}

size_t ltab_count(ltab_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < LTAB_STRIPES; i++) {
        pthread_mutex_lock(&t->s[i].mu);
        n += t->s[i].n;
        pthread_mutex_unlock(&t->s[i].mu);
    }
    return n;
}

/* ------------------------------------------------------------ counters */

#define SCOPE_CONTACT 0x636f6e74616374ull /* "contact": one scope for every campaign */

uint64_t caps_scope(const char *campaign, size_t lc, const char *line, size_t ll)
{
    /* "campaign\0line": ids cannot hold a NUL, so no two pairs collide
     * before hashing. A campaign's scope is its id alone. */
    char b[2 * ACT_MAX_ID + 2];
    if (lc > ACT_MAX_ID)
        lc = ACT_MAX_ID;
    if (ll > ACT_MAX_ID)
        ll = ACT_MAX_ID;
    memcpy(b, campaign, lc);
    size_t n = lc;
    if (line) {
        b[n++] = '\0';
        memcpy(b + n, line, ll);
        n += ll;
    }
    return hash64(b, n, 0x6361707363617073ull);
}

static uint64_t counter_key(uint64_t person, uint64_t scope, act_period per)
{
    uint64_t k[3] = {person, scope, (uint64_t)per};
    return ltab_key(hash64(k, sizeof k, 0x636f756e746572ull));
}

/* The count of (person, scope, per) in the period starting at start_min. */
static uint32_t counter_get(ltab_t *t, uint64_t person, uint64_t scope, act_period per,
                            int64_t start_min)
{
    uint64_t key = counter_key(person, scope, per);
    ltab_stripe_t *s = ltab_stripe(t, key);
    uint32_t n = 0;
    pthread_mutex_lock(&s->mu);
    const ltab_ent_t *e = ltab_find(s, key);
    if (e && e->a == (uint32_t)start_min)
        n = e->b >> 3;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void counter_add(ltab_t *t, uint64_t person, uint64_t scope, act_period per,
                        int64_t start_min)
{
    uint64_t key = counter_key(person, scope, per);
    ltab_stripe_t *s = ltab_stripe(t, key);
    pthread_mutex_lock(&s->mu);
    ltab_ent_t *e = ltab_upsert(s, key);
    if (e) { /* out of memory: the impression goes uncounted, never a crash */
        if (e->a != (uint32_t)start_min || e->b == 0) {
            /* A new period, or a counter of an older one: start over. An
             * impression of an earlier period arriving late (a < current)
             * must not reset a newer counter. */
            if (e->b != 0 && (int64_t)e->a > start_min)
                goto out;
            e->a = (uint32_t)start_min;
            e->b = (uint32_t)per;
        }
        if ((e->b >> 3) < (UINT32_MAX >> 3))
            e->b += 8;
    }
out:
    pthread_mutex_unlock(&s->mu);
}

int64_t ledger_period_min(const act_campaign_t *c, act_period per, int64_t utc_ms)
{
    if (per == ACT_PER_LIFETIME)
        return 0;
    if (c && c->tz)
        return tz_period_start(c->tz, per, utc_ms) / MIN_MS;
    /* No zone loaded: UTC calendar. */
    int64_t day = utc_ms >= 0 ? utc_ms / DAY_MS : (utc_ms - DAY_MS + 1) / DAY_MS;
    switch (per) {
    case ACT_PER_HOUR:
        return (utc_ms - (utc_ms % HOUR_MS + HOUR_MS) % HOUR_MS) / MIN_MS;
    case ACT_PER_DAY:
        return day * (DAY_MS / MIN_MS);
    case ACT_PER_WEEK:
        return (day - (((day + 3) % 7 + 7) % 7)) * (DAY_MS / MIN_MS);
    default:
        return 0;
    }
}

static int64_t period_of(const ltok_t *t, act_period per)
{
    switch (per) {
    case ACT_PER_HOUR:
        return t->hour_min;
    case ACT_PER_DAY:
        return t->day_min;
    case ACT_PER_WEEK:
        return t->week_min;
    default:
        return 0;
    }
}

/* 1 when some cap of caps[n] is reached by (person, scope) at now_ms. */
static int reached(ledger_t *l, const act_campaign_t *c, const act_cap_t *caps, size_t n,
                   uint64_t person, uint64_t scope, int64_t now_ms)
{
    for (size_t i = 0; i < n; i++) {
        int64_t start = ledger_period_min(c, caps[i].per, now_ms);
        if (counter_get(&l->caps, person, scope, caps[i].per, start) >= caps[i].count)
            return 1;
    }
    return 0;
}

ledger_verdict caps_check(ledger_t *l, const act_line_t *line, uint64_t person, int64_t now_ms)
{
    const act_campaign_t *c = line->campaign;
    uint32_t contact = atomic_load_explicit(&l->contact_count, memory_order_relaxed);
    if (line->ncaps == 0 && (c == NULL || c->ncaps == 0) && contact == 0)
        return LEDGER_OK;
    if (person == 0)
        return LEDGER_NO_PERSON; /* a cap we could not keep */
    if (c == NULL)
        return LEDGER_OK;
    size_t lc = strlen(c->id);
    if (line->ncaps && reached(l, c, line->caps, line->ncaps, person,
                               caps_scope(c->id, lc, line->id, strlen(line->id)), now_ms))
        return LEDGER_CAP_LINE;
    if (c->ncaps &&
        reached(l, c, c->caps, c->ncaps, person, caps_scope(c->id, lc, NULL, 0), now_ms))
        return LEDGER_CAP_CAMPAIGN;
    if (contact) {
        act_cap_t cap = {contact,
                         (act_period)atomic_load_explicit(&l->contact_per, memory_order_relaxed)};
        if (reached(l, c, &cap, 1, person, SCOPE_CONTACT, now_ms))
            return LEDGER_CAP_CONTACT;
    }
    return LEDGER_OK;
}

void caps_count(ledger_t *l, const ltok_t *t)
{
    if (t->person == 0)
        return;
    uint64_t ls = caps_scope(t->campaign, t->lcampaign, t->line, t->lline);
    uint64_t cs = caps_scope(t->campaign, t->lcampaign, NULL, 0);
    for (int per = ACT_PER_HOUR; per <= ACT_PER_LIFETIME; per++) {
        if (t->line_caps & (1u << per))
            counter_add(&l->caps, t->person, ls, (act_period)per, period_of(t, (act_period)per));
        if (t->camp_caps & (1u << per))
            counter_add(&l->caps, t->person, cs, (act_period)per, period_of(t, (act_period)per));
    }
    /* The contact cap counts in the period it has when the impression is
     * recorded (journaled, so replay sees the same setting). */
    if (atomic_load(&l->contact_count)) {
        act_period per = (act_period)atomic_load(&l->contact_per);
        counter_add(&l->caps, t->person, SCOPE_CONTACT, per, period_of(t, per));
    }
}

int caps_keep(void *ctx, const ltab_ent_t *e)
{
    int64_t now_min = *(const int64_t *)ctx;
    int64_t len;
    switch ((act_period)(e->b & 7)) {
    case ACT_PER_HOUR:
        len = 60;
        break;
    case ACT_PER_DAY:
        len = 25 * 60; /* a day is 25 h long when daylight saving ends */
        break;
    case ACT_PER_WEEK:
        len = 8 * 24 * 60;
        break;
    default:
        return 1;
    }
    return (int64_t)e->a + len > now_min;
}
