/*
 * sql.c — translation of workload trees into SQL (see sql.h).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sql.h"

#define DEG 0.017453292519943295 /* M_PI / 180, as crowdpack's geo.c */

int sql_has_tag(const node_t *n)
{
    if (n->k == N_TAG)
        return 1;
    for (int i = 0; i < n->n; i++)
        if (sql_has_tag(n->kid[i]))
            return 1;
    return 0;
}

static void desc_list(const pop_t *p, int tag, sbuf_t *b)
{
    for (int i = 0; i < p->ndesc[tag]; i++)
        sb_printf(b, "%s%d", i ? "," : "", p->desc[tag][i]);
}

void sql_pred(const pop_t *p, const node_t *n, int dialect, int variant, sbuf_t *b)
{
    switch (n->k) {
    case N_ALL:
        sb_printf(b, "1=1");
        return;
    case N_TAG:
        if (variant == SQLV_ARRAY) {
            sb_printf(b, "u.tags && '{");
            desc_list(p, n->tag, b);
            sb_printf(b, "}'::int[]");
        } else if (p->ndesc[n->tag] == 1) {
            sb_printf(b, "u.user_id IN (SELECT user_id FROM user_tags WHERE tag_id = %d)", n->tag);
        } else {
            sb_printf(b, "u.user_id IN (SELECT user_id FROM user_tags WHERE tag_id IN (");
            desc_list(p, n->tag, b);
            sb_printf(b, "))");
        }
        return;
    case N_AGE:
        sb_printf(b, "u.age BETWEEN %lld AND %lld", (long long)n->lo, (long long)n->hi);
        return;
    case N_NEAR: {
        /* Bounding box (index on lat) with margin, then the exact test with
         * crowdpack's formula and Earth radius. */
        double r = n->km * 1000.0;
        double dlat = r / 110000.0 * 1.01 + 1e-6;
        double clat = fabs(n->lat) + dlat;
        double dlon = clat >= 89.0 ? 180.0 : dlat / cos(clat * DEG) + 1e-6;
        sb_printf(b, "u.lat BETWEEN %.17g AND %.17g AND u.lon BETWEEN %.17g AND %.17g AND ",
                  n->lat - dlat, n->lat + dlat, n->lon - dlon, n->lon + dlon);
        if (dialect == SQL_SQLITE) {
            sb_printf(b, "hav_m(%.17g, %.17g, u.lat, u.lon) <= %.17g", n->lat, n->lon, r);
        } else {
            double p1 = n->lat * DEG;
            sb_printf(b,
                      "2 * %.17g * asin(sqrt(least(1.0::float8, "
                      "sin((u.lat * %.17g - %.17g) / 2) * sin((u.lat * %.17g - %.17g) / 2) + "
                      "cos(%.17g::float8) * cos(u.lat * %.17g) * "
                      "sin((u.lon - %.17g) * %.17g / 2) * sin((u.lon - %.17g) * %.17g / 2)))) "
                      "<= %.17g",
                      PEERS_EARTH_RADIUS_M, DEG, p1, DEG, p1, p1, DEG, n->lon, DEG, n->lon, DEG, r);
        }
        return;
    }
    case N_NOT:
        sb_printf(b, "NOT (");
        sql_pred(p, n->kid[0], dialect, variant, b);
        sb_printf(b, ")");
        return;
    case N_AND:
    case N_OR:
        for (int i = 0; i < n->n; i++) {
            sb_printf(b, "%s(", i ? (n->k == N_AND ? " AND " : " OR ") : "");
            sql_pred(p, n->kid[i], dialect, variant, b);
            sb_printf(b, ")");
        }
        return;
    }
}

void sql_query(const pop_t *p, const query_t *q, int dialect, int variant, sbuf_t *b)
{
    if (q->kind == Q_TGI) {
        /* |crowd AND T| for every tag T: the crowd's (user, ancestor-or-self
         * tag) pairs, deduplicated (a user's direct tags may include a tag
         * and its ancestor), counted per tag. */
        if (variant == SQLV_ARRAY)
            sb_printf(b, "SELECT cl.ancestor, count(DISTINCT c.user_id) FROM peers_crowd c "
                         "JOIN users u ON u.user_id = c.user_id "
                         "CROSS JOIN LATERAL unnest(u.tags) AS t(tag_id) "
                         "JOIN tag_closure cl ON cl.descendant = t.tag_id GROUP BY cl.ancestor");
        else
            sb_printf(b, "SELECT a, count(*) FROM (SELECT DISTINCT c.user_id, cl.ancestor AS a "
                         "FROM peers_crowd c JOIN user_tags ut ON ut.user_id = c.user_id "
                         "JOIN tag_closure cl ON cl.descendant = ut.tag_id) x GROUP BY a");
        return;
    }
    sb_printf(b, q->kind == Q_EXPORT ? "SELECT u.user_id FROM users u WHERE "
                                     : "SELECT count(*) FROM users u WHERE ");
    sql_pred(p, q->expr, dialect, variant, b);
}
