/*
 * cmd_demo.c — `crowdpack demo`: a fresh data directory holding the demo
 * population (src/cli/demo.h), and a summary of what it made.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/demo.h"
#include "cli/progress.h"

static const cli_opt_t demo_opts[] = {
    {"users", 'n', OPT_VALUE, "N", "how many users (default 1,000,000; suffixes k M)"},
    {"seed", 0, OPT_VALUE, "S", "random seed (default 42); the same seed makes the same data"},
    {"force", 'f', OPT_FLAG, NULL, "replace DIR if it exists and is not empty"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t demo_spec = {
    "demo",
    "",
    "Generate a demo population into a fresh data directory (default ./demo-data).",
    "The seed taxonomy (18/124/256/313 tags at levels 1-4), correlated interests, ages,\n"
    "gender, 300+ Chinese cities with real coordinates, member tier and points.\n"
    "A non-empty DIR is refused unless --force, which deletes it first.\n\nExamples:\n"
    "  crowdpack demo\n  crowdpack demo --data /tmp/dmp --users 100k --seed 7 --force",
    demo_opts,
    CONN_DATA | CONN_JSON,
    0,
    0};

/* 1 = missing, 0 = empty directory, -1 = not empty (or not a directory). */
static int dir_state(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 1 : -1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty ? 0 : -1;
}

/* rm -rf, refusing paths whose loss would surely be a mistake. */
static int remove_tree(const char *dir)
{
    char real[PATH_MAX], cwd[PATH_MAX];
    if (!realpath(dir, real))
        return cli_failf("%s: %s", dir, strerror(errno));
    const char *home = getenv("HOME");
    if (strcmp(real, "/") == 0 || (getcwd(cwd, sizeof cwd) && strcmp(real, cwd) == 0) ||
        (home && strcmp(real, home) == 0))
        return cli_failf("refusing to delete %s with --force; choose another --data", real);
    if (cli_rmtree(dir) != 0)
        return cli_failf("cannot delete %s: %s", dir, strerror(errno));
    return CLI_OK;
}

/* Size of the files under dir (what `du` would add up, roughly). */
static uint64_t du_total;
static int du_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)p;
    (void)ftw;
    if (flag == FTW_F)
        du_total += (uint64_t)sb->st_blocks * 512u;
    return 0;
}

static uint64_t dir_bytes(const char *dir)
{
    du_total = 0;
    nftw(dir, du_entry, 16, FTW_PHYS);
    return du_total;
}

int cmd_demo(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&demo_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = a.data ? a.data : "demo-data";
    demo_options_t o = {.users = 1000000, .seed = 42};
    if (cli_get(&a, "users") && (cli_parse_u64(cli_get(&a, "users"), &o.users) != 0 ||
                                 o.users == 0 || o.users > 4000000000ull))
        return cli_usage_error(&demo_spec, "--users: expected a number from 1 to 4G, got '%s'",
                               cli_get(&a, "users"));
    if (cli_get(&a, "seed") && cli_parse_u64(cli_get(&a, "seed"), &o.seed) != 0)
        return cli_usage_error(&demo_spec, "--seed: expected a number, got '%s'",
                               cli_get(&a, "seed"));

    int state = dir_state(dir);
    if (state < 0) {
        if (!cli_has(&a, "force"))
            return cli_failf(
                "%s exists and is not empty; use --force to replace it, or another --data", dir);
        if ((rc = remove_tree(dir)) != CLI_OK)
            return rc;
    }
    cp_open_options_t oo = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_status st = cp_db_open(dir, &oo, &db, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    o.progress = isatty(STDERR_FILENO) && !a.json;
    double t0 = progress_now();
    st = demo_generate(db, &o, &err);
    double secs = progress_now() - t0;
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        cp_db_close(db, NULL);
        return rc;
    }
    cp_db_stats_t s = CP_DB_STATS_INIT;
    cp_db_stats(db, &s, NULL);
    cp_db_close(db, NULL); /* everything on disk before measuring it */
    uint64_t disk = dir_bytes(dir);
    double rate = secs > 0 ? (double)s.users / secs : 0;
    if (a.json) {
        json_t *j = json_pack(
            "{s:s,s:I,s:I,s:I,s:f,s:f,s:I,s:I,s:I}", "data", dir, "users", (json_int_t)s.users,
            "tags", (json_int_t)s.tags, "attributes", (json_int_t)s.attributes, "seconds", secs,
            "users_per_second", rate, "disk_bytes", (json_int_t)disk, "bitmap_bytes",
            (json_int_t)s.bitmap_bytes, "column_bytes", (json_int_t)s.column_bytes);
        char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
        puts(txt ? txt : "{}");
        free(txt);
        json_decref(j);
        return CLI_OK;
    }
    char u[32], t[32], at[32], d[32], r[32], dk[32], mem[32];
    printf("demo population in %s: %s users, %s tags, %s attributes in %s (%s users/s)\n", dir,
           cli_group(s.users, u), cli_group(s.tags, t), cli_group(s.attributes, at),
           cli_duration(secs, d), cli_group((uint64_t)rate, r));
    printf("disk %s, index memory %s (bitmaps + columns)\n", cli_bytes((double)disk, dk),
           cli_bytes((double)(s.bitmap_bytes + s.column_bytes), mem));
    printf("try:  crowdpack tags list --data %s\n"
           "      crowdpack count --data %s 'age BETWEEN 25 AND 40 AND near(23.13, 113.26, 50km)'\n"
           "      crowdpack serve --data %s\n",
           dir, dir, dir);
    return CLI_OK;
}
