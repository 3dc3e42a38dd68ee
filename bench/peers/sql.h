/*
 * sql.h — the workload in SQL, shared by the PostgreSQL and SQLite peers.
 *
 * Schema (both): users(user_id, age, gender, city, lat, lon, member_tier,
 * points, is_member[, tags int[] in PostgreSQL]); user_tags(user_id,
 * tag_id) holding the DIRECT tags, exactly what crowdpack was loaded with;
 * tags(tag_id, path, parent, level); tag_closure(ancestor, descendant),
 * descendant-or-self pairs. A tag predicate expands to the tag's
 * descendants (inlined as a literal list from the closure, as a query
 * builder would do) so that SQL gets crowdpack's meaning: a tag's members
 * include its descendants'.
 */
#ifndef PEERS_SQL_H
#define PEERS_SQL_H

#include "peers.h"

enum { SQL_PG = 1, SQL_SQLITE = 2 };
enum { SQLV_REL = 0, SQLV_ARRAY = 1 };

/* WHERE-clause predicate over `users u` for a node. */
void sql_pred(const pop_t *p, const node_t *n, int dialect, int variant, sbuf_t *b);
/* Full statement for a query: one row, one count (Q_COUNT); rows of
 * (tag, in_crowd) (Q_TGI, needs table peers_crowd); user ids (Q_EXPORT). */
void sql_query(const pop_t *p, const query_t *q, int dialect, int variant, sbuf_t *b);
/* Does the node contain a tag (so that the array variant differs)? */
int sql_has_tag(const node_t *n);

#endif
