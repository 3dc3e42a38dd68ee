/*
 * ledger_counts.c — what the bidder reads back from the ledger to price
 * CPC line items (bid.h): a line's impressions and clicks so far.
 */
#include <pthread.h>
#include <string.h>

#include "activate/ledger.h"
#include "activate/ledger_int.h"

void ledger_line_counts(ledger_t *l, const act_line_t *line, uint64_t *impressions,
                        uint64_t *clicks)
{
    *impressions = 0;
    *clicks = 0;
    const char *cid = line->campaign->id;
    lcamp_t *c = ledger_camp(l, cid, strlen(cid), 0);
    if (c == NULL)
        return; /* nothing recorded for the campaign yet */
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nlines; i++) {
        if (strcmp(c->lines[i].id, line->id) == 0) {
            *impressions = c->lines[i].impressions;
            *clicks = c->lines[i].clicks;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
}
