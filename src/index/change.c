/* change.c — before-images and dirtiness of a write; see change.h. */
#include <stdlib.h>
#include <string.h>

#include "index/change.h"

static int set_room(ixchg_set_t *s, uint32_t id)
{
    if (id >= s->nbefore) {
        uint32_t n = s->nbefore ? s->nbefore : 64;
        while (n <= id)
            n *= 2;
        roaring_bitmap_t **b = realloc(s->before, n * sizeof *b);
        if (b == NULL)
            return -1;
        memset(b + s->nbefore, 0, (n - s->nbefore) * sizeof *b);
        s->before = b;
        s->nbefore = n;
    }
    if (s->nids == s->capids) {
        size_t n = s->capids ? s->capids * 2 : 64;
        uint32_t *ids = realloc(s->ids, n * sizeof *ids);
        if (ids == NULL)
            return -1;
        s->ids = ids;
        s->capids = n;
    }
    return 0;
}

int ixchg_touch(ixchg_t *c, ixchg_set_t *s, uint32_t id, roaring_bitmap_t *cur, int take)
{
    if (!c->record || (id < s->nbefore && s->before[id]))
        return 0;
    if (set_room(s, id)) {
        c->lost = 1;
        return 0;
    }
    roaring_bitmap_t *img = NULL;
    int taken = 0;
    if (cur && take) {
        img = cur;
        taken = 1;
    } else {
        img = cur ? roaring_bitmap_copy(cur) : roaring_bitmap_create();
    }
    if (img == NULL) {
        c->lost = 1;
        return 0;
    }
    s->before[id] = img;
    s->ids[s->nids++] = id;
    return taken;
}

static void set_clear(ixchg_set_t *s)
{
    for (size_t i = 0; i < s->nids; i++) {
        uint32_t id = s->ids[i];
        if (s->before[id]) {
            roaring_bitmap_free(s->before[id]);
            s->before[id] = NULL;
        }
    }
    s->nids = 0;
}

void ixchg_clear(ixchg_t *c)
{
    set_clear(&c->tags);
    set_clear(&c->crowd);
    c->data = c->crowds = c->lost = 0;
}

void ixchg_free(ixchg_t *c)
{
    ixchg_clear(c);
    free(c->tags.before);
    free(c->tags.ids);
    free(c->crowd.before);
    free(c->crowd.ids);
    memset(&c->tags, 0, sizeof c->tags);
    memset(&c->crowd, 0, sizeof c->crowd);
}
