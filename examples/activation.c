/*
 * activation.c — what an activation layer (a bidder, webhooks, journeys)
 * uses of crowdpack's C API: the change feed and the membership lookup
 * (docs/embedding.md).
 *
 *   ./activation /tmp/act
 *
 * Creates a data directory under argv[1], a tag and a dynamic crowd,
 * subscribes to the feed, writes a user, and prints who entered which
 * crowd and tag; then asks which crowds and tags the user is in. Checks
 * what it prints, so it is also a test (exit 1 on a difference).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "crowdpack.h"

static void check(cp_status st, const cp_error_t *err, const char *what)
{
    if (st == CP_OK)
        return;
    fprintf(stderr, "activation: %s: %s (%s)\n", what, err->message, cp_strerror(st));
    exit(1);
}

/* Runs on the handle's feed thread after each commit, without the
 * handle's lock: it may call the API. Everything in c is borrowed. */
static void on_commit(void *ctx, const cp_commit_info_t *c)
{
    int *entries = ctx;
    for (size_t i = 0; i < c->nchanges; i++) {
        const cp_change_t *ch = &c->changes[i];
        for (size_t k = 0; k < ch->nentered; k++)
            printf("commit %llu: user %u entered %s %s\n", (unsigned long long)c->seq,
                   ch->entered[k], ch->kind == CP_CHANGE_CROWD ? "crowd" : "tag",
                   ch->name ? ch->name : "(deleted)");
        *entries += (int)ch->nentered;
    }
}

int main(int argc, char **argv)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%ld", argc > 1 ? argv[1] : "/tmp/crowdpack-activation",
             (long)time(NULL));
    mkdir(argc > 1 ? argv[1] : "/tmp/crowdpack-activation", 0755);
    cp_error_t err = {0};
    cp_db_t *db = NULL;
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    check(cp_db_open(dir, &o, &db, &err), &err, "open");
    check(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err, "attribute");
    check(cp_tag_create(db, "interest/finance", "金融", NULL, &err), &err, "tag");
    check(cp_crowd_create(db, "young_finance", "tag:interest/finance AND age < 35",
                          CP_CROWD_DYNAMIC, NULL, &err),
          &err, "crowd");

    int entries = 0;
    uint64_t sub = 0;
    check(cp_db_subscribe(db, on_commit, &entries, CP_FEED_CROWDS | CP_FEED_TAGS, &sub, &err), &err,
          "subscribe");
    const char *u = "{\"id\":\"u1\",\"attrs\":{\"age\":29},\"tags\":[\"interest/finance\"]}";
    check(cp_user_upsert_json(db, u, strlen(u), &err), &err, "upsert");
    check(cp_feed_flush(db, &err), &err, "flush"); /* the callback has seen the commit */

    /* The hot path: caller-owned arrays, no allocation. */
    uint32_t crowds[16], tags[16];
    cp_membership_t m = {
        .size = sizeof m, .crowds = crowds, .crowds_cap = 16, .tags = tags, .tags_cap = 16};
    check(cp_member_lookup(db, "user_id", "u1", &m, &err), &err, "lookup");
    for (size_t i = 0; i < m.ncrowds; i++) {
        char name[160];
        check(cp_crowd_name(db, crowds[i], name, sizeof name, &err), &err, "crowd name");
        printf("user %u is in crowd %s (as of commit %llu)\n", m.user, name,
               (unsigned long long)m.commit);
    }
    check(cp_db_unsubscribe(db, sub, &err), &err, "unsubscribe");
    cp_db_close(db, NULL);
    /* interest, interest/finance and the crowd */
    if (entries != 3 || m.ncrowds != 1 || m.ntags != 2) {
        fprintf(stderr, "activation: expected 3 entries, 1 crowd, 2 tags; got %d, %zu, %zu\n",
                entries, m.ncrowds, m.ntags);
        return 1;
    }
    return 0;
}
