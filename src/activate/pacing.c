/*
 * pacing.c — `even` budget pacing: a throttle (pass-through probability)
 * per campaign, adjusted once a minute from spend against the plan.
 *
 * The method is the one of D. Agarwal, S. Ghosh, K. Wei, S. You, "Budget
 * pacing for targeted online advertisements at LinkedIn", KDD 2014: the
 * remaining daily budget is spread over the remaining time, and each
 * interval the pass-through rate p moves by a fixed ratio: down 10 % when
 * the last interval spent more than its allocation, up 10 % otherwise
 * (capped at 1). Here the interval is a minute and the remaining time is
 * the campaign's remaining ACTIVE minutes of the local day (its hour-of-
 * week dayparting and its start/end), so no budget is planned for hours
 * in which it may not bid. Spend is measured as what is committed: settled
 * spend plus live reservations of the day, so the controller sees a bid's
 * cost when it is made, not when its notice arrives minutes later.
 *
 * One departure from the paper: the step is decided on the last
 * LEDGER_PACE_WINDOW (5) minutes of spend against their plan, not on the
 * last minute alone. A minute of a small campaign is tens of impressions,
 * so its spend is mostly noise and p random-walks: in the simulated day of
 * test_activate_pacing.c the worst hour was 17 % off plan with one minute
 * and 7 % with five (10 minutes lagged into overshoot: 8 %).
 *
 * `asap` campaigns and campaigns without a daily budget are not throttled.
 * Nothing here reads a clock: every step is driven by ledger_tick's now_ms,
 * so the simulator's clock works as the wall clock does.
 */
#include <string.h>

#include "activate/ledger_int.h"
#include "util/util.h"

#define PACE_UP 1.10
#define PACE_DOWN 0.90
#define PACE_ONE 1000000u  /* ppm */
#define PACE_MIN_PPM 1000u /* 0.1 %: never closed, so spend keeps being measured */

static int hour_active(const act_campaign_t *ac, int64_t t)
{
    int how;
    if (ac->tz) {
        how = tz_hour_of_week(ac->tz, t);
    } else {
        int64_t day = t / DAY_MS;
        how = (int)(((day + 3) % 7) * 24 + (t % DAY_MS) / HOUR_MS);
    }
    if (how < 0 || how >= 168)
        return 0;
    return (ac->hours[how / 8] >> (how % 8)) & 1;
}

int64_t pacing_active_minutes_left(const act_campaign_t *ac, int64_t now_ms)
{
    int64_t day = ledger_period_min(ac, ACT_PER_DAY, now_ms) * MIN_MS;
    /* The next local midnight: a local day is 23 to 25 h long. */
    int64_t next = ledger_period_min(ac, ACT_PER_DAY, day + 25 * HOUR_MS) * MIN_MS;
    if (next <= now_ms)
        next = day + DAY_MS;
    int64_t lo = now_ms, hi = next;
    if (ac->start_ms > lo)
        lo = ac->start_ms;
    if (ac->end_ms > 0 && ac->end_ms < hi)
        hi = ac->end_ms;
    int64_t ms = 0;
    for (int64_t h = ledger_period_min(ac, ACT_PER_HOUR, now_ms) * MIN_MS; h < hi; h += HOUR_MS) {
        int64_t a = h > lo ? h : lo, b = h + HOUR_MS < hi ? h + HOUR_MS : hi;
        if (b > a && hour_active(ac, h))
            ms += b - a;
    }
    return ms / MIN_MS;
}

static void set_pass(lcamp_t *c, double ppm)
{
    if (ppm > PACE_ONE)
        ppm = PACE_ONE;
    if (ppm < PACE_MIN_PPM)
        ppm = PACE_MIN_PPM;
    atomic_store_explicit(&c->pass_ppm, (uint32_t)ppm, memory_order_relaxed);
}

void pacing_step(lcamp_t *c, const act_campaign_t *ac, int64_t now_ms)
{
    int64_t minute = now_ms / MIN_MS;
    pthread_mutex_lock(&c->mu);
    c->paced = ac->pacing == ACT_PACE_EVEN && ac->daily_fen > 0;
    if (!c->paced) {
        set_pass(c, PACE_ONE);
        goto out;
    }
    if (c->pace_minute == minute)
        goto out;
    int64_t day = ledger_period_min(ac, ACT_PER_DAY, now_ms);
    int64_t spent = atomic_load(&c->day_min) == day ? atomic_load(&c->spent_day) : 0;
    int64_t committed = spent + ledger_reserved(c, day, now_ms);
    int64_t left = pacing_active_minutes_left(ac, now_ms);
    int64_t remaining = ac->daily_fen * 1000 - committed;
    int64_t alloc = left > 0 && remaining > 0 ? remaining / left : 0;
    if (c->pace_minute >= 0 && c->pace_day == day) {
        int64_t elapsed = minute - c->pace_minute;
        int64_t delta = committed - c->pace_committed;
        /* Steps only while the campaign may bid: outside its hours the
         * spend is 0 by design and says nothing about the rate. */
        if (elapsed > 0 && elapsed <= 5 && hour_active(ac, now_ms - MIN_MS) &&
            now_ms - MIN_MS >= ac->start_ms) {
            c->win_spent[c->win_i] = delta;
            c->win_plan[c->win_i] = c->pace_alloc * elapsed;
            c->win_i = (c->win_i + 1) % LEDGER_PACE_WINDOW;
            if (c->win_n < LEDGER_PACE_WINDOW)
                c->win_n++;
            int64_t spent_w = 0, plan_w = 0;
            for (size_t i = 0; i < c->win_n; i++) {
                spent_w += c->win_spent[i];
                plan_w += c->win_plan[i];
            }
            double p = (double)atomic_load(&c->pass_ppm);
            p *= spent_w > plan_w ? PACE_DOWN : PACE_UP;
            set_pass(c, p);
        }
        c->pace_last = delta;
    } else {
        c->win_n = c->win_i = 0; /* a new day: its own plan */
    }
    c->pace_day = day;
    c->pace_minute = minute;
    c->pace_committed = committed;
    c->pace_alloc = alloc;
out:
    pthread_mutex_unlock(&c->mu);
}

int pacing_pass(const lcamp_t *c, uint64_t rnd)
{
    uint32_t ppm = atomic_load_explicit(&c->pass_ppm, memory_order_relaxed);
    return ppm >= PACE_ONE || (uint32_t)(rnd % PACE_ONE) < ppm;
}
