/*
 * cmd_check.c — `crowdpack check` (is this data directory whole?) and
 * `crowdpack recover` (go past a damaged write-ahead log, explicitly).
 * docs/cli.md; the work is cp_db_check / cp_db_recover in the engine.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

static const cli_spec_t check_spec = {
    "check",
    "",
    "Check a data directory: every page, value checksum, record and bitmap, and the counts "
    "that must agree.",
    "Prints one line per problem and exits 1 if there is any, 0 when the directory is whole.\n"
    "Runs in child processes: damage that would crash LMDB is reported, not suffered.\n"
    "Safe while a server has the directory open.\n\n"
    "Example:\n  crowdpack check --data ./dmp",
    NULL,
    CONN_DATA,
    0,
    0};

static const cli_spec_t recover_spec = {
    "recover",
    "",
    "Go past a damaged write-ahead log: keep its valid records, set the damaged bytes aside.",
    "Needed when `serve` (or any writer) refuses to start because of a damaged or missing\n"
    "write-ahead log. Keeps every valid record, writes each dropped stretch with its segment\n"
    "and offset to DIR/wal-dropped-<ms>.bin, then applies the kept records. The server must\n"
    "be stopped. Damage inside data.mdb is not repaired: restore a backup.\n\n"
    "Example:\n  crowdpack recover --data ./dmp",
    NULL,
    CONN_DATA,
    0,
    0};

static const char *data_dir(const cli_args_t *a)
{
    return a->data ? a->data : getenv("CROWDPACK_DATA");
}

static void print_problem(void *ud, const char *line)
{
    (void)ud;
    printf("%s\n", line);
    fflush(stdout);
}

int cmd_check(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&check_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = data_dir(&a);
    if (dir == NULL)
        return cli_usage_error(&check_spec, "no data directory (--data DIR)");
    uint64_t problems = 0;
    cp_error_t err = {0};
    cp_status st = cp_db_check(dir, print_problem, NULL, &problems, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    if (problems > 0) {
        fprintf(stderr, "crowdpack: %s is damaged: %llu problem%s\n", dir,
                (unsigned long long)problems, problems == 1 ? "" : "s");
        return CLI_FAIL;
    }
    fprintf(stderr, "crowdpack: %s is whole\n", dir);
    return CLI_OK;
}

static void print_step(void *ud, const char *line)
{
    (void)ud;
    printf("%s\n", line);
    fflush(stdout);
}

int cmd_recover(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&recover_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = data_dir(&a);
    if (dir == NULL)
        return cli_usage_error(&recover_spec, "no data directory (--data DIR)");
    cp_error_t err = {0};
    cp_status st = cp_db_recover(dir, print_step, NULL, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    return CLI_OK;
}
