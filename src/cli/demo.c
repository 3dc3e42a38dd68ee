/*
 * demo.c — the demo population behind `crowdpack demo` and `crowdpack bench`.
 *
 * What a 达摩盘-style user expects to see in a demo: the seed interest tree
 * (18/124/256/313 tags, demo_taxonomy.c), lifecycle and device tags, and
 * users whose demographics and interests look like a Chinese e-commerce
 * audience — ages 16-70 peaking at 25-35, 52% women, 317 real cities with
 * people scattered around their centres (demo_cities.c), a loyalty
 * programme whose tier follows the points, and interests that cluster
 * (young parents buy milk powder and look at school districts; young men
 * play games and read phone reviews).
 *
 * The interest model, per user:
 *  - a persona (student, young professional, young parent, gamer, fashion
 *    and beauty, homeowner, affluent investor, senior, or general), drawn
 *    from weights that depend on age and gender;
 *  - 5-20 interest draws; each picks a level-1 tag from the persona's
 *    weights (75%) or the general weights (25%) — a mixture, so nobody is a
 *    caricature — times per-gender level-1 multipliers; then walks down the
 *    tree, stopping early now and then (users tagged at levels 1-3
 *    directly), choosing the k-th child with Zipf weight 1/k (children are
 *    listed most popular first) times a few per-gender node multipliers.
 *    The user is tagged with the deepest tag reached; the engine makes a
 *    tag's members include its descendants'.
 * The result: several level-1 tags held by 30-60% of users, a long tail of
 * level-4 tags around 0.01-1%.
 *
 * Determinism: user i draws from its own splitmix64 stream seeded by
 * (seed, i), so a population depends only on (seed, users) — not on batch
 * sizes, and the generator could be split over threads. The clock never
 * enters: "now" for registration and activity is REF_NOW (2026-01-01 UTC).
 *
 * Only the public API is used; tags and attributes are declared with the
 * JSON loaders and users are written through cp_batch_* with handles looked
 * up once. All model tables are built once; nothing is allocated per user.
 */
#include "cli/demo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/progress.h"
#include "util/util.h"

#define DEMO_DEFAULT_USERS 1000000ull
#define DEMO_DEFAULT_SEED 42ull
#define DEMO_BATCH_USERS 100000ull
#define DEMO_MAX_INTEREST 20 /* interest draws per user: 5..20 */
#define DEMO_MIN_INTEREST 5
#define DEMO_PERSONA_SHARE 0.75 /* draws from the persona, the rest general */
#define DEMO_ZIPF_S 1.1         /* sibling popularity: k-th child ~ 1/k^s */

#define REF_NOW 1767225600ll   /* 2026-01-01T00:00:00Z: the demo's "now" */
#define REG_START 1514764800ll /* 2018-01-01T00:00:00Z: first registration */
#define DAY 86400ll

#define AGE_MIN 16
#define AGE_MAX 70
#define N_AGES (AGE_MAX - AGE_MIN + 1)

/* Loyalty tiers by points (the demo's programme rules). */
#define TIER_SILVER 2000
#define TIER_GOLD 6000
#define TIER_PLATINUM 20000

/* ------------------------------------------------------------ the model */

enum { G_FEMALE = 0, G_MALE = 1 };

/*
 * Level-1 tags in table order, with their base share of interest draws and
 * per-gender multipliers. demo_model_build checks the order against
 * demo_taxonomy.c, so the two cannot drift apart silently.
 */
enum {
    L1_TRANSPORT,
    L1_NEWS,
    L1_APPAREL,
    L1_EDUCATION,
    L1_LIFE,
    L1_FINANCE,
    L1_BUSINESS,
    L1_ENTERTAINMENT,
    L1_PARENTING,
    L1_TRAVEL,
    L1_REAL_ESTATE,
    L1_GAMES,
    L1_FOOD,
    L1_HEALTH,
    L1_SPORTS,
    L1_BEAUTY,
    L1_HOME,
    L1_ELECTRONICS,
    N_L1
};

/* clang-format off */
static const struct l1_prior {
    const char *path;
    double weight;
    double female;
    double male;
} L1_PRIORS[N_L1] = {
    {"interest/transport", 5.0, 0.6, 1.6},
    {"interest/news", 5.0, 0.8, 1.3},
    {"interest/apparel", 7.0, 1.5, 0.6},
    {"interest/education", 4.0, 1.1, 0.9},
    {"interest/life_services", 5.5, 1.1, 0.9},
    {"interest/finance", 5.5, 0.9, 1.2},
    {"interest/business", 2.0, 0.8, 1.2},
    {"interest/entertainment", 8.0, 1.1, 0.9},
    {"interest/parenting", 3.0, 1.6, 0.5},
    {"interest/travel", 6.0, 1.1, 0.9},
    {"interest/real_estate", 2.5, 0.9, 1.1},
    {"interest/games", 5.0, 0.6, 1.6},
    {"interest/food", 7.5, 1.2, 0.85},
    {"interest/health", 5.0, 1.1, 0.9},
    {"interest/sports", 4.0, 0.7, 1.4},
    {"interest/beauty", 6.0, 2.0, 0.25},
    {"interest/home", 4.5, 1.3, 0.8},
    {"interest/electronics", 7.0, 0.7, 1.4},
};
/* clang-format on */

enum {
    P_GENERAL,
    P_STUDENT,
    P_YOUNG_PRO,
    P_YOUNG_PARENT,
    P_GAMER,
    P_FASHION,
    P_HOMEOWNER,
    P_AFFLUENT,
    P_SENIOR,
    N_PERSONA
};

/* Persona multipliers on the level-1 weights (columns in L1_* order). */
/* clang-format off */
static const double PERSONA_MULT[N_PERSONA][N_L1] = {
    /*                 tra  new  app  edu  lif  fin  bus  ent  par  tvl  rea  gam  foo  hea  spo  bea  hom  ele */
    [P_GENERAL] =      {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
    [P_STUDENT] =      {0.5, 0.6, 1.5, 3.5, 0.6, 0.3, 0.5, 2.2, 0.1, 1.0, 0.15, 2.5, 1.4, 0.5, 1.5, 1.3, 0.3, 1.8},
    [P_YOUNG_PRO] =    {1.2, 1.0, 1.3, 1.2, 1.2, 1.4, 1.6, 1.3, 0.4, 1.6, 0.8, 1.0, 1.5, 0.9, 1.3, 1.3, 1.0, 1.4},
    [P_YOUNG_PARENT] = {1.1, 0.8, 1.1, 2.5, 1.4, 1.0, 0.7, 0.7, 7.0, 1.0, 1.5, 0.5, 1.1, 1.4, 0.7, 1.0, 2.2, 0.8},
    [P_GAMER] =        {1.2, 0.8, 0.7, 0.7, 0.6, 0.6, 0.5, 1.6, 0.2, 0.6, 0.3, 5.0, 1.0, 0.4, 1.8, 0.3, 0.4, 3.0},
    [P_FASHION] =      {0.5, 0.5, 3.0, 0.8, 1.0, 0.7, 0.6, 1.6, 0.8, 1.5, 0.5, 0.6, 1.4, 1.0, 0.9, 4.0, 1.0, 0.8},
    [P_HOMEOWNER] =    {2.0, 1.4, 0.8, 1.6, 1.3, 2.0, 1.2, 0.7, 0.8, 1.1, 3.0, 0.4, 1.0, 1.3, 0.8, 0.8, 2.5, 0.9},
    [P_AFFLUENT] =     {2.2, 1.3, 1.3, 1.3, 1.0, 4.0, 2.0, 0.8, 0.6, 2.2, 2.2, 0.4, 1.2, 1.3, 1.3, 1.1, 1.3, 1.2},
    [P_SENIOR] =       {0.5, 3.0, 0.6, 0.4, 1.6, 1.4, 0.4, 0.8, 0.6, 1.4, 0.6, 0.3, 1.6, 4.0, 0.8, 0.5, 1.1, 0.5},
};
/* clang-format on */

/* Per-gender multipliers on a tag's weight among its siblings. */
static const struct node_bias {
    const char *path;
    double female;
    double male;
} NODE_BIAS[] = {
    {"interest/apparel/womens_wear", 3.0, 0.15},
    {"interest/apparel/mens_wear", 0.3, 3.0},
    {"interest/apparel/underwear", 1.5, 0.4},
    {"interest/apparel/shoes/womens_shoes", 3.0, 0.1},
    {"interest/apparel/shoes/mens_shoes", 0.2, 3.0},
    {"interest/apparel/bags/handbags", 3.0, 0.2},
    {"interest/apparel/accessories/jewelry", 2.5, 0.4},
    {"interest/apparel/sportswear/yoga_wear", 3.0, 0.2},
    {"interest/beauty/makeup", 2.5, 0.15},
    {"interest/beauty/personal_care", 0.6, 3.0},
    {"interest/beauty/personal_care/shaving", 0.05, 4.0},
    {"interest/beauty/medical_aesthetics", 2.0, 0.3},
    {"interest/games/otome", 6.0, 0.05},
    {"interest/games/pc_games", 0.5, 1.6},
    {"interest/games/console_games", 0.5, 1.5},
    {"interest/games/esports", 0.5, 1.6},
    {"interest/parenting/pregnancy", 2.0, 0.3},
    {"interest/parenting/maternity_wear", 3.0, 0.1},
    {"interest/sports/yoga", 3.0, 0.2},
    {"interest/sports/fitness/gym/pilates", 3.0, 0.2},
    {"interest/sports/ball_games/basketball", 0.4, 2.0},
    {"interest/sports/ball_games/football", 0.3, 2.0},
    {"interest/sports/outdoor/fishing", 0.3, 2.5},
    {"interest/sports/golf", 0.6, 1.5},
    {"interest/entertainment/tv_series", 1.6, 0.7},
    {"interest/news/sports_news", 0.3, 2.0},
    {"interest/news/entertainment_news", 2.0, 0.5},
    {"interest/transport/car_brands", 0.7, 1.5},
    {"interest/food/beverages/liquor", 0.4, 2.2},
    {"interest/food/beverages/milk_tea", 1.8, 0.7},
    {"interest/food/cooking/baking", 2.0, 0.5},
    {"interest/electronics/computers", 0.7, 1.4},
    {"interest/education/arts_edu/dance", 2.5, 0.3},
    {"interest/life_services/pets/cats", 1.5, 0.8},
};

/*
 * Chance of stopping at a tag of level 1..3 that has children, before the
 * few-children term: a tag with one or two children keeps a good share of
 * its own (people interested in 连衣裙 are not all into 碎花裙), one with
 * eight passes nearly everyone on.
 */
static const double STOP_AT_LEVEL[4] = {0.0, 0.06, 0.10, 0.22};
#define STOP_FEW_KIDS 0.8 /* stop += (1 - stop) * c / (nkids + c) */

/* The non-interest trees: declared with the taxonomy, outside its counts. */
static const struct extra_tag {
    const char *path;
    const char *name;
    const char *description;
} EXTRA_TAGS[] = {
    {"interest", "兴趣",
     "Interest tree: 18 level-1, 124 level-2, 256 level-3 and 313 level-4 tags"},
    {"lifecycle", "生命周期", "Customer lifecycle stage; exactly one per user"},
    {"lifecycle/new", "新客", "Registered in the last 90 days"},
    {"lifecycle/active", "活跃", "Active in the last 30 days"},
    {"lifecycle/dormant", "沉睡", "Last active 31-180 days ago"},
    {"lifecycle/churned", "流失", "Last active more than 180 days ago"},
    {"device", "设备", "Devices seen for the user"},
    {"device/ios", "iOS", "iPhone"},
    {"device/harmonyos", "鸿蒙", "Huawei HarmonyOS phone"},
    {"device/android", "安卓", "Android phone"},
    {"device/android/xiaomi", "小米", NULL},
    {"device/android/oppo", "OPPO", NULL},
    {"device/android/vivo", "vivo", NULL},
    {"device/android/honor", "荣耀", NULL},
    {"device/android/samsung", "三星", NULL},
    {"device/android/other", "其他安卓", NULL},
    {"device/pc", "PC", "Seen on a desktop or laptop browser"},
};

enum { LC_NEW, LC_ACTIVE, LC_DORMANT, LC_CHURNED, N_LC };
static const char *const LIFECYCLE_PATHS[N_LC] = {"lifecycle/new", "lifecycle/active",
                                                  "lifecycle/dormant", "lifecycle/churned"};
enum {
    DEV_IOS,
    DEV_HARMONY,
    DEV_XIAOMI,
    DEV_OPPO,
    DEV_VIVO,
    DEV_HONOR,
    DEV_SAMSUNG,
    DEV_OTHER,
    DEV_PC,
    N_DEV
};
static const char *const DEVICE_PATHS[N_DEV] = {"device/ios",
                                                "device/harmonyos",
                                                "device/android/xiaomi",
                                                "device/android/oppo",
                                                "device/android/vivo",
                                                "device/android/honor",
                                                "device/android/samsung",
                                                "device/android/other",
                                                "device/pc"};
/* Android brand shares, in DEV_XIAOMI..DEV_OTHER order. */
static const double ANDROID_BRANDS[] = {0.30, 0.22, 0.22, 0.14, 0.04, 0.08};

static const char SCHEMA_JSON[] = "{\"attributes\":["
                                  "{\"name\":\"age\",\"type\":\"int\"},"
                                  "{\"name\":\"gender\",\"type\":\"enum\"},"
                                  "{\"name\":\"city\",\"type\":\"enum\"},"
                                  "{\"name\":\"province\",\"type\":\"enum\"},"
                                  "{\"name\":\"loc\",\"type\":\"geo\"},"
                                  "{\"name\":\"member_tier\",\"type\":\"enum\"},"
                                  "{\"name\":\"points\",\"type\":\"int\"},"
                                  "{\"name\":\"registered\",\"type\":\"timestamp\"},"
                                  "{\"name\":\"is_member\",\"type\":\"bool\"},"
                                  "{\"name\":\"last_active\",\"type\":\"timestamp\"}"
                                  "]}";

enum {
    A_AGE,
    A_GENDER,
    A_CITY,
    A_PROVINCE,
    A_LOC,
    A_TIER,
    A_POINTS,
    A_REGISTERED,
    A_IS_MEMBER,
    A_LAST_ACTIVE,
    N_ATTR
};
static const char *const ATTR_NAMES[N_ATTR] = {"age",       "gender",      "city",   "province",
                                               "loc",       "member_tier", "points", "registered",
                                               "is_member", "last_active"};

/* One interest tag of the tree, as the walk sees it. */
typedef struct demo_node {
    int32_t handle;    /* engine tag handle */
    int32_t first_kid; /* index into model kids[] / kid_prob[] / kid_alias[] */
    int32_t nkids;
    int32_t level;  /* 1..4 */
    int32_t parent; /* node index; -1 for level 1 */
} demo_node_t;

typedef struct demo_model {
    demo_node_t *nodes; /* demo_interest_tags_len */
    int32_t *kids;      /* node indices, grouped per parent */
    /* Alias tables (Vose) for O(1) weighted draws: per gender, aligned
     * with kids[], alias indices relative to the parent's first_kid. */
    double *kid_prob[2];
    int32_t *kid_alias[2];
    double *stop;     /* per node: chance the walk stops there */
    int32_t l1[N_L1]; /* node index of each level-1 tag */
    double l1_prob[N_PERSONA][2][N_L1];
    int32_t l1_alias[N_PERSONA][2][N_L1];
    double age_prob[N_AGES];
    int32_t age_alias[N_AGES];
    double *city_prob; /* demo_cities_len */
    int32_t *city_alias;
    double *city_sigma_km; /* scatter around the centre */
    uint8_t *city_tier;    /* 1 = tier-1, 2 = large, 3 = other */
    int32_t lifecycle[N_LC];
    int32_t device[N_DEV];
    int32_t attr[N_ATTR];
    int ts_as_text; /* timestamps as ISO text (see put_ts) */
} demo_model_t;

/* -------------------------------------------------------------- helpers */

/* Index of the first cumulative weight > u*total (cdf strictly increasing
 * where weights are positive). For the few tables built per user. */
static size_t cdf_pick(const double *cdf, size_t n, double u)
{
    double x = u * cdf[n - 1];
    size_t k = 0;
    while (k + 1 < n && cdf[k] <= x)
        k++;
    return k;
}

/*
 * Vose's alias method: after this, a draw is one uniform u in [0,1):
 * k = floor(u*n), keep k with probability prob[k], else take alias[k].
 * Binary searches over CDFs were the generator's hot spot (branchy, ~10
 * per user); this is branch-light and O(1). `w` are non-negative weights
 * with a positive sum; `scratch` holds 2*n ints.
 */
static void alias_build(const double *w, size_t n, double *prob, int32_t *alias, int32_t *scratch)
{
    int32_t *small = scratch, *large = scratch + n;
    size_t ns = 0, nl = 0;
    double sum = 0;
    for (size_t k = 0; k < n; k++)
        sum += w[k];
    for (size_t k = 0; k < n; k++) {
        prob[k] = w[k] * (double)n / sum;
        alias[k] = (int32_t)k;
        if (prob[k] < 1.0)
            small[ns++] = (int32_t)k;
        else
            large[nl++] = (int32_t)k;
    }
    while (ns && nl) {
        int32_t s = small[--ns], l = large[nl - 1];
        alias[s] = l;
        prob[l] -= 1.0 - prob[s];
        if (prob[l] < 1.0) {
            nl--;
            small[ns++] = l;
        }
    }
    /* Leftovers are 1 up to rounding. */
    while (nl)
        prob[large[--nl]] = 1.0;
    while (ns)
        prob[small[--ns]] = 1.0;
}

static size_t alias_pick(const double *prob, const int32_t *alias, size_t n, double u)
{
    double x = u * (double)n;
    size_t k = (size_t)x;
    if (k >= n)
        k = n - 1;
    return x - (double)k < prob[k] ? k : (size_t)alias[k];
}

static double gauss(uint64_t *rng)
{
    double u1 = 1.0 - rand_double(rng); /* (0, 1] */
    double u2 = rand_double(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static uint64_t user_stream(uint64_t seed, uint64_t i)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull ^ (i + 1) * 0xD1B54A32D192ED03ull;
    (void)rand_next(&s);
    return s;
}

/* Appends s as a JSON string literal (quotes included). */
static cp_status json_str(buf_t *b, const char *s)
{
    cp_status st = buf_append(b, "\"", 1);
    for (const char *p = s; st == CP_OK && *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            st = buf_append(b, esc, 2);
        } else if (c < 0x20) {
            st = buf_printf(b, "\\u%04x", c);
        } else {
            st = buf_append(b, p, 1);
        }
    }
    return st == CP_OK ? buf_append(b, "\"", 1) : st;
}

static cp_status tag_row_json(buf_t *b, int first, const char *path, const char *name,
                              const char *description)
{
    cp_status st = buf_append(b, first ? "{\"path\":" : ",{\"path\":", first ? 8 : 9);
    if (st == CP_OK)
        st = json_str(b, path);
    if (st == CP_OK)
        st = buf_append(b, ",\"name\":", 8);
    if (st == CP_OK)
        st = json_str(b, name);
    if (st == CP_OK && description) {
        st = buf_append(b, ",\"description\":", 15);
        if (st == CP_OK)
            st = json_str(b, description);
    }
    return st == CP_OK ? buf_append(b, "}", 1) : st;
}

/* ------------------------------------------------------------ schema */

cp_status demo_schema(cp_db_t *db, cp_error_t *err)
{
    buf_t b;
    cp_status st;

    buf_init(&b, 0);
    st = cp_schema_load_json(db, SCHEMA_JSON, sizeof(SCHEMA_JSON) - 1, err);
    if (st != CP_OK) {
        error_prefix(err, "demo schema: ");
        goto out;
    }
    st = buf_append(&b, "{\"tags\":[", 9);
    for (size_t i = 0; st == CP_OK && i < CP_ARRAY_LEN(EXTRA_TAGS); i++)
        st = tag_row_json(&b, i == 0, EXTRA_TAGS[i].path, EXTRA_TAGS[i].name,
                          EXTRA_TAGS[i].description);
    for (size_t i = 0; st == CP_OK && i < demo_interest_tags_len; i++)
        st = tag_row_json(&b, 0, demo_interest_tags[i].path, demo_interest_tags[i].name, NULL);
    if (st == CP_OK)
        st = buf_append(&b, "]}", 2);
    if (st != CP_OK) {
        st = CP_ERR(err, st, "demo taxonomy: cannot build the JSON: %s", cp_strerror(st));
        goto out;
    }
    st = cp_taxonomy_load_json(db, b.data, b.len, err);
    if (st != CP_OK)
        error_prefix(err, "demo taxonomy: ");
out:
    buf_free(&b);
    return st;
}

/* ------------------------------------------------------------ model build */

static void model_free(demo_model_t *m)
{
    free(m->nodes);
    free(m->kids);
    for (int g = 0; g < 2; g++) {
        free(m->kid_prob[g]);
        free(m->kid_alias[g]);
    }
    free(m->stop);
    free(m->city_prob);
    free(m->city_alias);
    free(m->city_sigma_km);
    free(m->city_tier);
    memset(m, 0, sizeof(*m));
}

static int path_level(const char *path)
{
    int level = 0; /* "interest" is 0, "interest/x" is 1 */
    for (const char *p = path; *p; p++)
        level += *p == '/';
    return level;
}

/* The age density: a skewed bump peaking at 25-35 (sd 6 below the peak,
 * 14 above) over a floor, so 16-year-olds and 70-year-olds both exist. */
static double age_weight(int age)
{
    double peak = 29.0, sd = age < peak ? 6.0 : 14.0, z = (age - peak) / sd;
    return 0.06 + exp(-0.5 * z * z);
}

static cp_status model_build(cp_db_t *db, demo_model_t *m, cp_error_t *err)
{
    size_t n = demo_interest_tags_len, nc = demo_cities_len;
    int32_t stack[8];
    int32_t *parent = NULL, *fill = NULL, *scratch = NULL;
    double *kid_w[2] = {NULL, NULL}, *city_w = NULL;
    cp_status st = CP_OK;

    memset(m, 0, sizeof(*m));
    m->nodes = calloc(n, sizeof(*m->nodes));
    m->kids = calloc(n, sizeof(*m->kids));
    for (int g = 0; g < 2; g++) {
        m->kid_prob[g] = calloc(n, sizeof(double));
        m->kid_alias[g] = calloc(n, sizeof(int32_t));
    }
    kid_w[0] = calloc(n, sizeof(double));
    kid_w[1] = calloc(n, sizeof(double));
    scratch = calloc(2 * (n > nc ? n : nc), sizeof(int32_t));
    m->stop = calloc(n, sizeof(double));
    m->city_prob = calloc(nc, sizeof(double));
    m->city_alias = calloc(nc, sizeof(int32_t));
    city_w = calloc(nc, sizeof(double));
    m->city_sigma_km = calloc(nc, sizeof(double));
    m->city_tier = calloc(nc, 1);
    parent = calloc(n, sizeof(*parent));
    fill = calloc(n, sizeof(*fill));
    if (!m->nodes || !m->kids || !m->kid_prob[0] || !m->kid_prob[1] || !m->kid_alias[0] ||
        !m->kid_alias[1] || !kid_w[0] || !kid_w[1] || !scratch || !m->stop || !m->city_prob ||
        !m->city_alias || !city_w || !m->city_sigma_km || !m->city_tier || !parent || !fill) {
        st = CP_ERR(err, CP_ENOMEM, "demo: out of memory building the model");
        goto out;
    }

    /* Tree shape from the depth-first rows: the parent of a level-L row is
     * the last row seen at level L-1. */
    int nl1 = 0;
    for (size_t i = 0; i < n; i++) {
        const char *path = demo_interest_tags[i].path;
        int level = path_level(path);
        if (strncmp(path, "interest/", 9) != 0 || level < 1 || level > 4 ||
            (level > 1 && strncmp(path, demo_interest_tags[stack[level - 1]].path,
                                  strlen(demo_interest_tags[stack[level - 1]].path)) != 0)) {
            st = CP_ERR(err, CP_EINTERNAL, "demo: taxonomy row %zu (\"%s\") is out of order", i,
                        path);
            goto out;
        }
        stack[level] = (int32_t)i;
        m->nodes[i].level = level;
        parent[i] = level > 1 ? stack[level - 1] : -1;
        m->nodes[i].parent = parent[i];
        if (level > 1)
            m->nodes[parent[i]].nkids++;
        if (level == 1) {
            if (nl1 >= N_L1 || strcmp(path, L1_PRIORS[nl1].path) != 0) {
                st = CP_ERR(err, CP_EINTERNAL, "demo: level-1 tag %d is \"%s\", expected \"%s\"",
                            nl1 + 1, path, nl1 < N_L1 ? L1_PRIORS[nl1].path : "(none)");
                goto out;
            }
            m->l1[nl1++] = (int32_t)i;
        }
        st = cp_tag_handle(db, path, &m->nodes[i].handle, err);
        if (st != CP_OK)
            goto out;
    }
    if (nl1 != N_L1) {
        st = CP_ERR(err, CP_EINTERNAL, "demo: %d level-1 tags, expected %d", nl1, N_L1);
        goto out;
    }
    int32_t next = 0;
    for (size_t i = 0; i < n; i++) {
        demo_node_t *d = &m->nodes[i];
        double s = STOP_AT_LEVEL[d->level < 4 ? d->level : 3];
        d->first_kid = next;
        next += d->nkids;
        m->stop[i] = d->nkids ? s + (1.0 - s) * STOP_FEW_KIDS / (d->nkids + STOP_FEW_KIDS) : 1.0;
    }
    /* Children in table order = popularity order; weight 1/k^s by rank,
     * times the per-gender bias of the child. */
    for (size_t i = 0; i < n; i++) {
        if (parent[i] < 0)
            continue;
        demo_node_t *p = &m->nodes[parent[i]];
        int32_t rank = fill[parent[i]]++;
        int32_t slot = p->first_kid + rank;
        double w = 1.0 / pow(rank + 1, DEMO_ZIPF_S), bias[2] = {1.0, 1.0};
        for (size_t k = 0; k < CP_ARRAY_LEN(NODE_BIAS); k++)
            if (strcmp(NODE_BIAS[k].path, demo_interest_tags[i].path) == 0) {
                bias[G_FEMALE] = NODE_BIAS[k].female;
                bias[G_MALE] = NODE_BIAS[k].male;
            }
        m->kids[slot] = (int32_t)i;
        for (int g = 0; g < 2; g++)
            kid_w[g][slot] = w * bias[g];
    }
    for (size_t i = 0; i < n; i++) {
        const demo_node_t *d = &m->nodes[i];
        if (d->nkids == 0)
            continue;
        for (int g = 0; g < 2; g++)
            alias_build(kid_w[g] + d->first_kid, (size_t)d->nkids, m->kid_prob[g] + d->first_kid,
                        m->kid_alias[g] + d->first_kid, scratch);
    }

    for (int p = 0; p < N_PERSONA; p++)
        for (int g = 0; g < 2; g++) {
            double w[N_L1];
            for (int k = 0; k < N_L1; k++)
                w[k] = L1_PRIORS[k].weight * PERSONA_MULT[p][k] *
                       (g == G_FEMALE ? L1_PRIORS[k].female : L1_PRIORS[k].male);
            alias_build(w, N_L1, m->l1_prob[p][g], m->l1_alias[p][g], scratch);
        }
    double aw[N_AGES];
    for (int a = 0; a < N_AGES; a++)
        aw[a] = age_weight(AGE_MIN + a);
    alias_build(aw, N_AGES, m->age_prob, m->age_alias, scratch);

    uint32_t wmax = 1;
    for (size_t c = 0; c < nc; c++)
        if (demo_cities[c].weight > wmax)
            wmax = demo_cities[c].weight;
    for (size_t c = 0; c < nc; c++) {
        uint32_t w = demo_cities[c].weight;
        city_w[c] = w;
        /* 5 km for a county town, 15 km for Shanghai. */
        m->city_sigma_km[c] = 5.0 + 10.0 * sqrt((double)w / wmax);
        m->city_tier[c] = w >= 2000 ? 1 : w >= 800 ? 2 : 3;
    }
    alias_build(city_w, nc, m->city_prob, m->city_alias, scratch);

    for (int k = 0; k < N_LC; k++)
        if ((st = cp_tag_handle(db, LIFECYCLE_PATHS[k], &m->lifecycle[k], err)) != CP_OK)
            goto out;
    for (int k = 0; k < N_DEV; k++)
        if ((st = cp_tag_handle(db, DEVICE_PATHS[k], &m->device[k], err)) != CP_OK)
            goto out;
    for (int k = 0; k < N_ATTR; k++)
        if ((st = cp_attr_handle(db, ATTR_NAMES[k], &m->attr[k], err)) != CP_OK)
            goto out;
out:
    free(parent);
    free(fill);
    free(scratch);
    free(kid_w[0]);
    free(kid_w[1]);
    free(city_w);
    if (st != CP_OK)
        model_free(m);
    return st;
}

/* ------------------------------------------------------------ one user */

static int pick_persona(int age, int g, uint64_t *rng)
{
    double w[N_PERSONA] = {0};
    int female = g == G_FEMALE;
    w[P_GENERAL] = 1.5;
    w[P_STUDENT] = age <= 22 ? 5.0 : age <= 25 ? 1.0 : 0.0;
    w[P_YOUNG_PRO] = age >= 22 && age <= 35 ? 4.0 : age <= 45 ? 1.5 : 0.2;
    w[P_YOUNG_PARENT] = age >= 25 && age <= 40 ? (female ? 4.0 : 2.5) : age <= 45 ? 0.8 : 0.0;
    w[P_GAMER] = age <= 35 ? (female ? 0.6 : 3.0) : age <= 45 ? (female ? 0.1 : 0.8) : 0.05;
    w[P_FASHION] = (age >= 18 && age <= 40) ? (female ? 3.0 : 0.2)
                   : (age <= 55 && female)  ? 1.0
                                            : 0.1;
    w[P_HOMEOWNER] = age >= 35 && age <= 55 ? 3.0 : age >= 30 ? 1.0 : 0.0;
    w[P_AFFLUENT] = age >= 30 && age <= 60 ? 1.2 : 0.1;
    w[P_SENIOR] = age >= 55 ? 5.0 : age >= 50 ? 1.0 : 0.0;
    double cdf[N_PERSONA], acc = 0;
    for (int p = 0; p < N_PERSONA; p++)
        cdf[p] = acc += w[p];
    return (int)cdf_pick(cdf, N_PERSONA, rand_double(rng));
}

/* One interest draw: a level-1 tag, then down the tree. Returns a node. */
static int32_t draw_interest(const demo_model_t *m, int persona, int g, uint64_t *rng)
{
    int p = rand_double(rng) < DEMO_PERSONA_SHARE ? persona : P_GENERAL;
    int32_t node = m->l1[alias_pick(m->l1_prob[p][g], m->l1_alias[p][g], N_L1, rand_double(rng))];
    for (;;) {
        const demo_node_t *d = &m->nodes[node];
        if (d->nkids == 0 || rand_double(rng) < m->stop[node])
            return node;
        size_t k = alias_pick(m->kid_prob[g] + d->first_kid, m->kid_alias[g] + d->first_kid,
                              (size_t)d->nkids, rand_double(rng));
        node = m->kids[d->first_kid + k];
    }
}

/*
 * A user's direct interest tags form an antichain: no tag next to one of
 * its ancestors (the engine already counts a user under every ancestor of
 * a tag, so both would only clutter the user's tag list). Returns 1 if
 * `b` is a strict descendant of `a` (b replaces a), -1 if b equals a or is
 * an ancestor of it (b is dropped), 0 if unrelated.
 */
static int related(const demo_model_t *m, int32_t a, int32_t b)
{
    int32_t la = m->nodes[a].level, lb = m->nodes[b].level;
    int32_t x = a, y = b;
    while (lb > la) {
        y = m->nodes[y].parent;
        lb--;
    }
    while (la > lb) {
        x = m->nodes[x].parent;
        la--;
    }
    if (x != y)
        return 0;
    return m->nodes[b].level > m->nodes[a].level ? 1 : -1;
}

static const char *tier_of(int64_t points)
{
    return points >= TIER_PLATINUM ? "platinum"
           : points >= TIER_GOLD   ? "gold"
           : points >= TIER_SILVER ? "silver"
                                   : "none";
}

/*
 * Timestamps go through the batch as epoch seconds (cp_batch_int: the
 * binary form of a timestamp attribute). The header does not say so in as
 * many words, so demo_generate probes once, in a batch it aborts, and falls
 * back to ISO 8601 text (cp_batch_str) if the engine answers CP_ETYPE.
 */
static cp_status put_ts(const demo_model_t *m, cp_batch_t *b, int32_t h, int64_t secs,
                        cp_error_t *err)
{
    char iso[32];
    if (!m->ts_as_text)
        return cp_batch_int(b, h, secs, err);
    time_format(secs, iso, sizeof iso);
    return cp_batch_str(b, h, iso, err);
}

static cp_status probe_timestamps(cp_db_t *db, demo_model_t *m, cp_error_t *err)
{
    cp_batch_t *b = NULL;
    cp_error_t perr;
    cp_status st = cp_batch_begin(db, &b, err);
    if (st != CP_OK)
        return st;
    if ((st = cp_batch_user(b, "u1", err)) == CP_OK) {
        memset(&perr, 0, sizeof perr);
        m->ts_as_text = cp_batch_int(b, m->attr[A_REGISTERED], REG_START, &perr) == CP_ETYPE;
    }
    cp_batch_abort(b);
    return st;
}

static cp_status gen_user(const demo_model_t *m, cp_batch_t *b, uint64_t seed, uint64_t i,
                          cp_error_t *err)
{
    uint64_t rng = user_stream(seed, i);
    char id[24];
    cp_status st;

    /* "u" + decimal i+1 without printf: this runs a million times. */
    {
        char tmp[21];
        int len = 0;
        uint64_t v = i + 1;
        do {
            tmp[len++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        id[0] = 'u';
        for (int k = 0; k < len; k++)
            id[1 + k] = tmp[len - 1 - k];
        id[1 + len] = '\0';
    }
    if ((st = cp_batch_user(b, id, err)) != CP_OK)
        return st;

    int g = rand_double(&rng) < 0.52 ? G_FEMALE : G_MALE;
    int age = AGE_MIN + (int)alias_pick(m->age_prob, m->age_alias, N_AGES, rand_double(&rng));
    size_t c = alias_pick(m->city_prob, m->city_alias, demo_cities_len, rand_double(&rng));
    const demo_city_t *city = &demo_cities[c];

    /* Scattered around the centre: a 2-D Gaussian, clamped at 3 sigma. */
    double sigma = m->city_sigma_km[c];
    double dx = gauss(&rng) * sigma, dy = gauss(&rng) * sigma;
    double r = sqrt(dx * dx + dy * dy);
    if (r > 3.0 * sigma) {
        dx *= 3.0 * sigma / r;
        dy *= 3.0 * sigma / r;
    }
    double lat = city->lat + dy / 111.32;
    double lon = city->lon + dx / (111.32 * cos(city->lat * (3.141592653589793 / 180.0)));

    int persona = pick_persona(age, g, &rng);

    /* Registration over 2018-2025, more of it recent (the user base grows). */
    int64_t span = REF_NOW - REG_START;
    int64_t registered = REG_START + (int64_t)((double)span * pow(rand_double(&rng), 0.7));
    double years = (double)(REF_NOW - registered) / (365.25 * DAY);

    /* Loyalty: members have log-normal points growing with tenure; the tier
     * is a function of points, so `member_tier` and `points` agree. */
    double p_member = 0.40 + (persona == P_AFFLUENT ? 0.2 : 0.0) +
                      (persona == P_STUDENT ? -0.15 : 0.0) + (years > 3 ? 0.1 : 0.0);
    int member = rand_double(&rng) < p_member;
    int64_t points = 0;
    if (member) {
        double median = 700.0 * (1.0 + 0.25 * years) * (age >= 35 ? 1.3 : 1.0) *
                        (persona == P_AFFLUENT ? 2.5 : 1.0);
        double v = median * exp(1.3 * gauss(&rng));
        points = v > 5e6 ? 5000000 : (int64_t)v;
    }

    /* Activity: members come back more often. */
    double u = rand_double(&rng), pa = member ? 0.70 : 0.50, pd = member ? 0.20 : 0.28;
    double days;
    if (u < pa)
        days = 30.0 * pow(rand_double(&rng), 2.0);
    else if (u < pa + pd)
        days = 30.0 + 150.0 * rand_double(&rng);
    else
        days = 180.0 + (years * 365.25 - 180.0) * rand_double(&rng);
    int64_t last_active = REF_NOW - (int64_t)(days * DAY) - (int64_t)(rand_next(&rng) % DAY);
    if (last_active < registered)
        last_active = registered + (int64_t)(rand_next(&rng) % DAY);
    if (last_active >= REF_NOW)
        last_active = REF_NOW - 1;
    int64_t idle = REF_NOW - last_active;
    int lc = REF_NOW - registered < 90 * DAY ? LC_NEW
             : idle <= 30 * DAY              ? LC_ACTIVE
             : idle <= 180 * DAY             ? LC_DORMANT
                                             : LC_CHURNED;

    if ((st = cp_batch_int(b, m->attr[A_AGE], age, err)) != CP_OK ||
        (st = cp_batch_str(b, m->attr[A_GENDER], g == G_FEMALE ? "female" : "male", err)) !=
            CP_OK ||
        (st = cp_batch_str(b, m->attr[A_CITY], city->slug, err)) != CP_OK ||
        (st = cp_batch_str(b, m->attr[A_PROVINCE], city->province, err)) != CP_OK ||
        (st = cp_batch_geo(b, m->attr[A_LOC], lat, lon, err)) != CP_OK ||
        (st = cp_batch_str(b, m->attr[A_TIER], tier_of(points), err)) != CP_OK ||
        (st = cp_batch_int(b, m->attr[A_POINTS], points, err)) != CP_OK ||
        (st = put_ts(m, b, m->attr[A_REGISTERED], registered, err)) != CP_OK ||
        (st = cp_batch_bool(b, m->attr[A_IS_MEMBER], member, err)) != CP_OK ||
        (st = put_ts(m, b, m->attr[A_LAST_ACTIVE], last_active, err)) != CP_OK)
        return st;

    /* Devices: a phone (iOS heavier in big cities and among the young),
     * and sometimes a PC. */
    double p_ios = 0.22 +
                   (m->city_tier[c] == 1   ? 0.18
                    : m->city_tier[c] == 2 ? 0.08
                                           : 0.0) +
                   (age < 30   ? 0.08
                    : age > 55 ? -0.10
                               : 0.0);
    double p_harmony = 0.17;
    double ud = rand_double(&rng);
    int dev;
    if (ud < p_ios)
        dev = DEV_IOS;
    else if (ud < p_ios + p_harmony)
        dev = DEV_HARMONY;
    else {
        double ub = rand_double(&rng), accb = 0;
        dev = DEV_OTHER;
        for (int k = 0; k < (int)CP_ARRAY_LEN(ANDROID_BRANDS); k++)
            if (ub < (accb += ANDROID_BRANDS[k])) {
                dev = DEV_XIAOMI + k;
                break;
            }
    }
    if ((st = cp_batch_tag(b, m->device[dev], err)) != CP_OK)
        return st;
    double p_pc =
        persona == P_YOUNG_PRO || persona == P_GAMER || persona == P_STUDENT ? 0.55 : 0.25;
    if (rand_double(&rng) < p_pc && (st = cp_batch_tag(b, m->device[DEV_PC], err)) != CP_OK)
        return st;
    if ((st = cp_batch_tag(b, m->lifecycle[lc], err)) != CP_OK)
        return st;

    /* Interests: 5-20 distinct tags, most users near the low end. */
    int want = DEMO_MIN_INTEREST +
               (int)((DEMO_MAX_INTEREST - DEMO_MIN_INTEREST + 1) * pow(rand_double(&rng), 1.7));
    if (want > DEMO_MAX_INTEREST)
        want = DEMO_MAX_INTEREST;
    int32_t have[DEMO_MAX_INTEREST];
    int nhave = 0;
    for (int tries = 0; nhave < want && tries < 4 * DEMO_MAX_INTEREST; tries++) {
        int32_t node = draw_interest(m, persona, g, &rng);
        int k = 0, rel = 0;
        for (; k < nhave && !rel; k++)
            rel = related(m, have[k], node);
        if (rel > 0)
            have[k - 1] = node; /* more specific than what we had */
        else if (rel == 0)
            have[nhave++] = node;
    }
    for (int k = 0; k < nhave; k++)
        if ((st = cp_batch_tag(b, m->nodes[have[k]].handle, err)) != CP_OK)
            return st;
    return CP_OK;
}

/* ------------------------------------------------------------ generate */

cp_status demo_generate(cp_db_t *db, const demo_options_t *o, cp_error_t *err)
{
    demo_options_t opts = {0};
    demo_model_t m;
    cp_batch_t *b = NULL;
    progress_t pg;
    cp_status st;
    int have_model = 0;

    if (o)
        opts = *o;
    uint64_t total = opts.users ? opts.users : DEMO_DEFAULT_USERS;
    uint64_t seed = opts.seed ? opts.seed : DEMO_DEFAULT_SEED;
    if (total > UINT32_MAX) {
        return CP_ERR(err, CP_ELIMIT, "demo: %llu users is more than one shard holds (%u)",
                      (unsigned long long)total, UINT32_MAX);
    }

    if ((st = demo_schema(db, err)) != CP_OK)
        goto out;
    if ((st = model_build(db, &m, err)) != CP_OK)
        goto out;
    have_model = 1;
    progress_start(&pg, "demo", PROGRESS_ITEMS, total, opts.progress ? -1 : 0);
    if ((st = probe_timestamps(db, &m, err)) != CP_OK)
        goto out;

    /*
     * The bar counts users, but a user costs little to stage and more to
     * commit, and a bar that races to the batch end and then stalls lies
     * about the ETA. So staging advances it by `stage_share` of a user, the
     * commit by the rest, with the share measured on the batches so far.
     */
    double stage_secs = 0, commit_secs = 0, stage_share = 0.25;
    for (uint64_t i = 0; i < total; i += DEMO_BATCH_USERS) {
        uint64_t end = i + DEMO_BATCH_USERS < total ? i + DEMO_BATCH_USERS : total;
        double t0 = progress_now();
        if ((st = cp_batch_begin(db, &b, err)) != CP_OK)
            goto out;
        for (uint64_t u = i; u < end; u++) {
            if ((st = gen_user(&m, b, seed, u, err)) != CP_OK) {
                error_prefix(err, "demo: user u%llu: ", (unsigned long long)(u + 1));
                goto out;
            }
            if ((u & 4095) == 4095)
                progress_update(&pg, i + (uint64_t)((double)(u + 1 - i) * stage_share), u + 1);
        }
        double t1 = progress_now();
        st = cp_batch_commit(b, err);
        b = NULL; /* commit frees it, whatever the outcome */
        if (st != CP_OK) {
            error_prefix(err, "demo: committing users %llu-%llu: ", (unsigned long long)i + 1,
                         (unsigned long long)end);
            goto out;
        }
        stage_secs += t1 - t0;
        commit_secs += progress_now() - t1;
        if (stage_secs + commit_secs > 0)
            stage_share = stage_secs / (stage_secs + commit_secs);
        progress_update(&pg, end, end);
    }
out:
    if (have_model) {
        progress_finish(&pg);
        model_free(&m);
    }
    cp_batch_abort(b);
    return st;
}
