/*
 * peers.h — the side-by-side benchmark harness (bench/peers): crowdpack
 * against Redis bitmaps, PostgreSQL, SQLite and the hardware floor, on the
 * same population, with the same answers.
 *
 * Shape of one run (main.c): open a demo data directory written by
 * `crowdpack demo`, extract the population from it through the public C API
 * (population.c), build the workload (workload.c), then for every system:
 * load, measure each query (warm, p50/p99), check its answer against
 * crowdpack's, and write one JSON result file that report.py turns into
 * docs/benchmarks-peers.md.
 *
 * Ownership: everything hangs off one pop_t and one workload; systems own
 * their contexts and free them in their close function.
 */
#ifndef PEERS_H
#define PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

/* ---------------------------------------------------------- population */

#define POP_MAX_TAGS 4096
#define POP_MAX_VALUES 1024 /* distinct values per enum attribute */

/* Interned strings of one enum attribute (gender, city, member tier). */
typedef struct pop_enum {
    int n;
    char *v[POP_MAX_VALUES];
} pop_enum_t;

/*
 * The population as plain arrays. Users are numbered by their demo id:
 * "uK" is user K (1..n), stored at index K-1 and at bit K-1 of the dense
 * bitmaps. Direct tags are what cp_user_json reports (the data as loaded);
 * effective membership (a tag's members include its descendants') is the
 * dense bitmaps, computed here from direct tags + ancestors and checked
 * against crowdpack's own per-tag counts.
 */
typedef struct pop {
    uint64_t n;
    int ntags;
    char **path;     /* [ntags] slug paths */
    int *parent;     /* [ntags] parent tag id or -1 */
    int *level;      /* [ntags] 1-based */
    uint64_t *count; /* [ntags] effective members (crowdpack's count) */
    int **desc;      /* [ntags] descendant-or-self ids */
    int *ndesc;      /* [ntags] */
    /* per user (index K-1); missing values: age/points INT32_MIN, enums -1,
     * lat NaN */
    int32_t *age;
    int32_t *points;
    int16_t *gender, *city, *tier;
    int8_t *is_member;
    double *lat, *lon;
    uint64_t *toff; /* [n+1] CSR offsets into tagv */
    uint16_t *tagv; /* direct tag ids */
    pop_enum_t genders, cities, tiers;
    /* effective membership: ntags dense bitmaps of words() words each */
    uint64_t **dense;
    uint64_t *all; /* every user */
    double extract_secs;
} pop_t;

static inline uint64_t pop_words(const pop_t *p)
{
    return (p->n + 63) / 64;
}

/* Reads the population from an open data directory (threads > 1 splits
 * the per-user reads). Fills err with a sentence on failure. */
int pop_extract(cp_db_t *db, int threads, pop_t *out, char *err, size_t errlen);
void pop_free(pop_t *p);
int pop_tag_id(const pop_t *p, const char *path); /* -1 if unknown */

/* ------------------------------------------------------------ workload */

typedef enum { N_ALL, N_TAG, N_AND, N_OR, N_NOT, N_AGE, N_NEAR } node_kind;

#define NODE_MAX_KIDS 8

typedef struct node {
    node_kind k;
    int tag;             /* N_TAG */
    int64_t lo, hi;      /* N_AGE: lo <= age <= hi */
    double lat, lon, km; /* N_NEAR */
    int n;
    struct node *kid[NODE_MAX_KIDS];
} node_t;

typedef enum { Q_COUNT, Q_TGI, Q_EXPORT } query_kind;

typedef struct query {
    const char *name; /* "one tag", ... */
    const char *slug; /* "one_tag" */
    query_kind kind;
    node_t *expr;    /* Q_COUNT / Q_EXPORT: the set; Q_TGI: the crowd */
    char text[1024]; /* crowdpack expression text of expr */
} query_t;

#define MAX_QUERIES 12

typedef struct workload {
    int nq;
    query_t q[MAX_QUERIES];
    node_t pool[128];
    int npool;
} workload_t;

int workload_build(const pop_t *p, workload_t *w, char *err, size_t errlen);
/* Prints the crowdpack text form of a node. */
void node_text(const pop_t *p, const node_t *n, char *buf, size_t len);
/* Great-circle distance in metres, the same formula and radius as
 * crowdpack's geo_haversine_m (src/bitmap/geo.c). */
double peers_haversine_m(double lat1, double lon1, double lat2, double lon2);
#define PEERS_EARTH_RADIUS_M 6371008.8

/* ------------------------------------------------------------- answers */

/*
 * What a query returns, reduced to a comparable value: a count; for TGI a
 * hash over (tag, |crowd AND tag|, |tag|) of every tag; for an export a
 * count and an order-independent hash of the ids.
 */
typedef struct answer {
    uint64_t count;
    uint64_t hash;
} answer_t;

static inline uint64_t peers_mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}
/* TGI answers: fold one tag's pair into the hash. */
static inline void answer_tgi_add(answer_t *a, int tag, uint64_t in_crowd, uint64_t total)
{
    a->count += in_crowd;
    a->hash += peers_mix(((uint64_t)tag << 48) ^ (in_crowd << 24) ^ total ^ (total << 40));
}
/* Export answers: one id (K of "uK"). */
static inline void answer_id_add(answer_t *a, uint64_t k)
{
    a->count++;
    a->hash += peers_mix(k);
}

/* -------------------------------------------------------------- systems */

/*
 * One system under test. `load` builds its copy of the population (timed
 * by the caller); `prepare` materialises what a query needs outside the
 * timed loop (the TGI crowd); `run` answers one query once. Any function
 * may be NULL. `skip` returns a reason when the system does not run a
 * query (NULL = runs it).
 */
typedef struct peer_sys {
    const char *name;
    void *ctx;
    char version[128];
    char notes[512];
    double load_secs;
    uint64_t mem_bytes;
    uint64_t disk_bytes;
    int (*load)(struct peer_sys *s, const pop_t *p, char *err, size_t errlen);
    const char *(*skip)(struct peer_sys *s, const query_t *q);
    int (*prepare)(struct peer_sys *s, const pop_t *p, const query_t *q, char *err, size_t errlen);
    /* variant: several ways of answering (PostgreSQL: relational, arrays);
     * nvariants() <= 1 means one. */
    int (*nvariants)(struct peer_sys *s, const query_t *q);
    const char *(*variant_name)(struct peer_sys *s, const query_t *q, int v);
    int (*run)(struct peer_sys *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
               char *err, size_t errlen);
    void (*measure)(struct peer_sys *s, const pop_t *p); /* fills mem/disk */
    void (*close)(struct peer_sys *s);
} peer_sys_t;

typedef struct sys_options {
    const char *data_dir; /* crowdpack */
    int cp_threads;
    const char *redis_addr; /* host:port or NULL */
    int redis_pid;
    const char *pg_conninfo; /* or NULL */
    int pg_pid;
    const char *sqlite_path; /* database file */
    double timeout_secs;     /* per single run of a SQL query */
} sys_options_t;

int sys_crowdpack_init(peer_sys_t *s, const sys_options_t *o, cp_db_t *db);
int sys_floor_init(peer_sys_t *s, const sys_options_t *o);
int sys_sqlite_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen);
/* Return 1 when built without the client library ("not built"), 0 on
 * success, -1 on a connection error (message in err). */
int sys_redis_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen);
int sys_pg_init(peer_sys_t *s, const sys_options_t *o, char *err, size_t errlen);

/* ---------------------------------------------------------------- util */

double peers_now(void);
uint64_t peers_pss_tree(int pid); /* PSS of a process and its children, bytes */
uint64_t peers_dir_bytes(const char *dir);
uint64_t peers_file_bytes(const char *path);
/* Descendant-or-self tag ids of `tag` as "1,2,3" into buf. */
void peers_desc_list(const pop_t *p, int tag, char *buf, size_t len);
/* Appends formatted text to a growing heap string; aborts on ENOMEM (a
 * benchmark harness, not the library). */
typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf_t;
void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(sbuf_t *b);

#endif /* PEERS_H */
