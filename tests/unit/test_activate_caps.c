/* test_activate_caps.c — frequency caps: per hour, day, week and lifetime
 * across a local midnight and a local Monday in Asia/Shanghai; per line
 * and per campaign; one person under several identifiers counted once (the
 * person key); the global contact cap across campaigns, persisted; no
 * person with a capped line; counters kept across a restart; counters of
 * past periods dropped by the sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"

#include "ledger_test.h"

static unsigned auction_no;

static ledger_t *open_l(const char *dir)
{
    ledger_t *l = NULL;
    cp_error_t err = {0};
    if (ledger_open_ex(dir, NULL, LEDGER_OPEN_NOSYNC, &l, &err) != CP_OK)
        fail_msg("ledger_open %s: %s", dir, err.message);
    return l;
}

/* One shown impression of line li for person at t, with an identifier. */
static void show(ledger_t *l, fx_t *f, int li, uint64_t person, int64_t t, const char *id_type,
                 const char *id_value)
{
    char tok[LEDGER_TOKEN_MAX];
    cp_error_t err = {0};
    ledger_bid_t b = fx_bid(f, li, ++auction_no, person, t, 500);
    b.id_type = id_type;
    b.id_value = id_value;
    if (ledger_reserve(l, &b, 500, tok, &err) != CP_OK)
        fail_msg("reserve: %s", err.message);
    ledger_notice_result_t r;
    if (ledger_notice(l, LEDGER_IMPRESSION, tok, NULL, 0, t + 500, &r, &err) != CP_OK)
        fail_msg("notice: %s", err.message);
    /* the win that follows the pixel counts nothing more */
    if (ledger_notice(l, LEDGER_WIN, tok, "1.00", 0, t + 600, &r, &err) != CP_OK)
        fail_msg("notice: %s", err.message);
}

static ledger_verdict check(ledger_t *l, fx_t *f, int li, uint64_t person, int64_t t)
{
    return ledger_check(l, &f->line[li], person, 100, t, 0);
}

#define P1 (LEDGER_PERSON_KNOWN | 1001)
#define P2 (LEDGER_PERSON_KNOWN | 1002)

static void test_periods_across_midnight(void **state)
{
    (void)state;
    char dir[256];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "lcaps");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    /* l0: 2 a day; l1: 1 an hour and 3 a week; l2: 2 for life */
    f.lcaps[0][0] = (act_cap_t){2, ACT_PER_DAY};
    f.line[0].ncaps = 1;
    f.lcaps[1][0] = (act_cap_t){1, ACT_PER_HOUR};
    f.lcaps[1][1] = (act_cap_t){3, ACT_PER_WEEK};
    f.line[1].ncaps = 2;
    f.lcaps[2][0] = (act_cap_t){2, ACT_PER_LIFETIME};
    f.line[2].ncaps = 1;
    ledger_t *l = open_l(dir);
    /* Sunday 2026-12-13 23:40 local (15:40 UTC): the local day, hour and
     * week end in 20 minutes, the UTC day does not. */
    int64_t t = fx_sh(2026, 12, 13, 23, 40);
    assert_int_equal(check(l, &f, 0, P1, t), LEDGER_OK);
    show(l, &f, 0, P1, t, "idfa", "A");
    show(l, &f, 0, P1, t + 60000, "idfa", "A");
    assert_int_equal(check(l, &f, 0, P1, t + 120000), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 0, P2, t + 120000), LEDGER_OK); /* another person */
    assert_int_equal(check(l, &f, 1, P1, t + 120000), LEDGER_OK); /* another line */
    /* local midnight: a new day (in UTC it is still 16:00 of the same day) */
    int64_t mid = fx_sh(2026, 12, 14, 0, 0);
    assert_int_equal(check(l, &f, 0, P1, mid - 1), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 0, P1, mid), LEDGER_OK);
    show(l, &f, 0, P1, mid + 1000, "idfa", "A");
    assert_int_equal(check(l, &f, 0, P1, mid + 2000), LEDGER_OK);
    show(l, &f, 0, P1, mid + 3000, "idfa", "A");
    assert_int_equal(check(l, &f, 0, P1, mid + 4000), LEDGER_CAP_LINE);

    /* hour and week: 1 an hour, 3 a week (Monday 00:00 local) */
    show(l, &f, 1, P1, t, "idfa", "A"); /* Sunday 23:40 */
    assert_int_equal(check(l, &f, 1, P1, t + 60000), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 1, P1, mid), LEDGER_OK); /* new hour, new week */
    show(l, &f, 1, P1, mid, "idfa", "A");
    show(l, &f, 1, P1, mid + HOUR_MS, "idfa", "A");
    show(l, &f, 1, P1, mid + 2 * HOUR_MS, "idfa", "A");
    assert_int_equal(check(l, &f, 1, P1, mid + 3 * HOUR_MS), LEDGER_CAP_LINE); /* week: 3 */
    assert_int_equal(check(l, &f, 1, P1, mid + 6 * DAY_MS + 23 * HOUR_MS), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 1, P1, mid + 7 * DAY_MS), LEDGER_OK);

    /* lifetime: 2, ever */
    show(l, &f, 2, P1, t, "idfa", "A");
    show(l, &f, 2, P1, t + 30 * DAY_MS, "idfa", "A");
    assert_int_equal(check(l, &f, 2, P1, t + 365 * DAY_MS), LEDGER_CAP_LINE);

    /* the counters survive a restart (journal, then snapshot) */
    ledger_close(l);
    l = open_l(dir);
    assert_int_equal(check(l, &f, 0, P1, mid + 4000), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 1, P1, mid + 3 * HOUR_MS), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 2, P1, t + 365 * DAY_MS), LEDGER_CAP_LINE);
    assert_int_equal(check(l, &f, 0, P2, mid + 4000), LEDGER_OK);

    /* counters of past periods are dropped; lifetime ones stay */
    size_t before = ltab_count(&l->caps);
    for (int i = 0; i < LTAB_STRIPES; i++)
        ledger_tick(l, NULL, mid + 30 * DAY_MS);
    size_t after = ltab_count(&l->caps);
    assert_true(after < before);
    assert_int_equal(after, 1); /* P1's lifetime counter on l2 */
    assert_int_equal(check(l, &f, 2, P1, t + 365 * DAY_MS), LEDGER_CAP_LINE);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

/* One person seen under three identifiers: the bidder resolves each to
 * the same OneID ordinal, so the person key is the same and the cap of 3
 * a day is reached after three impressions, whatever the identifiers. */
static void test_several_ids_one_person(void **state)
{
    (void)state;
    char dir[256];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "lcapids");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    f.lcaps[0][0] = (act_cap_t){3, ACT_PER_DAY};
    f.line[0].ncaps = 1;
    ledger_t *l = open_l(dir);
    int64_t t = fx_sh(2026, 12, 7, 10, 0);
    uint64_t person = LEDGER_PERSON_KNOWN | 77; /* OneID ordinal 77 */
    show(l, &f, 0, person, t, "idfa", "6D92078A-8246-4BA4-AE5B-76104861E7DC");
    assert_int_equal(check(l, &f, 0, person, t + 1000), LEDGER_OK);
    show(l, &f, 0, person, t + 1000, "oaid", "f8e9d3c2-aaaa-bbbb-cccc-1234567890ab");
    assert_int_equal(check(l, &f, 0, person, t + 2000), LEDGER_OK);
    show(l, &f, 0, person, t + 2000, "user_id", "u-77");
    assert_int_equal(check(l, &f, 0, person, t + 3000), LEDGER_CAP_LINE);
    /* an unknown person keyed by the hash of one identifier is another person */
    char hv[] = "idfa:6D92078A-8246-4BA4-AE5B-76104861E7DC";
    uint64_t anon = hash64(hv, strlen(hv), 0) & ~LEDGER_PERSON_KNOWN;
    assert_int_equal(check(l, &f, 0, anon, t + 3000), LEDGER_OK);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

static void test_campaign_and_contact_caps(void **state)
{
    (void)state;
    char dir[256];
    fx_t f, g;
    test_tmpdir(dir, sizeof dir, "lcapcc");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    fx_init(&g, "summer-sale", 0, 0, ACT_PACE_ASAP);
    f.ccaps[0] = (act_cap_t){2, ACT_PER_DAY}; /* across the campaign's lines */
    f.c.ncaps = 1;
    ledger_t *l = open_l(dir);
    int64_t t = fx_sh(2026, 12, 7, 10, 0);
    show(l, &f, 0, P1, t, "idfa", "A");
    show(l, &f, 1, P1, t + 1000, "idfa", "A");
    assert_int_equal(check(l, &f, 2, P1, t + 2000), LEDGER_CAP_CAMPAIGN);
    assert_int_equal(check(l, &g, 0, P1, t + 2000), LEDGER_OK);
    /* the contact cap: 3 a day across every campaign */
    assert_int_equal(ledger_contact_cap_set(l, 3, ACT_PER_DAY, NULL), CP_OK);
    assert_int_equal(ledger_contact_cap_set(l, 3, (act_period)9, NULL), CP_EINVAL);
    show(l, &g, 0, P2, t, "idfa", "B");
    show(l, &f, 0, P2, t, "idfa", "B");
    assert_int_equal(check(l, &g, 1, P2, t + 1000), LEDGER_OK);
    show(l, &g, 1, P2, t + 1000, "idfa", "B");
    assert_int_equal(check(l, &g, 2, P2, t + 2000), LEDGER_CAP_CONTACT);
    assert_int_equal(check(l, &g, 2, P2, t + DAY_MS), LEDGER_OK);
    /* with any cap, a request without a person cannot be kept to it */
    assert_int_equal(check(l, &g, 0, 0, t), LEDGER_NO_PERSON);
    ledger_close(l);
    l = open_l(dir); /* persisted */
    assert_int_equal(check(l, &g, 2, P2, t + 2000), LEDGER_CAP_CONTACT);
    assert_int_equal(ledger_contact_cap_set(l, 0, ACT_PER_DAY, NULL), CP_OK);
    assert_int_equal(check(l, &g, 2, P2, t + 2000), LEDGER_OK);
    assert_int_equal(check(l, &g, 0, 0, t), LEDGER_OK); /* no cap anywhere: anyone */
    assert_int_equal(check(l, &f, 0, 0, t), LEDGER_NO_PERSON);
    ledger_close(l);
    l = open_l(dir);
    assert_int_equal(check(l, &g, 2, P2, t + 2000), LEDGER_OK);
    ledger_close(l);
    assert_string_equal(ledger_verdict_name(LEDGER_CAP_CONTACT), "cap_contact");
    assert_string_equal(ledger_verdict_name(LEDGER_PACING), "pacing");
    fx_free(&f);
    fx_free(&g);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods_across_midnight),
        cmocka_unit_test(test_several_ids_one_person),
        cmocka_unit_test(test_campaign_and_contact_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
