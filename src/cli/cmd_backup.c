/* cmd_backup.c — crowdpack backup, restore and compact (docs/operations.md
 * "Backups" and "Deleting users"). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

static const char *data_dir(const cli_args_t *a)
{
    return a->data ? a->data : getenv("CROWDPACK_DATA");
}

static const cli_spec_t backup_spec = {
    "backup",
    "OUT",
    "Back up a data directory into OUT (a new or empty directory), also while a server writes "
    "it.",
    "OUT gets a consistent copy of data.mdb (live pages only) and the write-ahead log segments\n"
    "holding every write acknowledged before the backup began; it is itself a data directory.\n"
    "Example:\n  crowdpack backup --data ./dmp /backups/dmp-2024-06-01",
    NULL,
    CONN_DATA | CONN_JSON,
    1,
    1};

int cmd_backup(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&backup_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = data_dir(&a);
    if (dir == NULL)
        return cli_usage_error(&backup_spec, "no data directory: give --data DIR");
    cp_error_t err = {0};
    cp_backup_info_t info = CP_BACKUP_INFO_INIT;
    cp_status st = cp_db_backup(dir, a.pos[0], &info, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    if (a.json)
        printf("{\"out\":\"%s\",\"data_bytes\":%llu,\"wal_segments\":%llu,\"wal_bytes\":%llu,"
               "\"wal_lsn\":%llu}\n",
               a.pos[0], (unsigned long long)info.data_bytes, (unsigned long long)info.wal_segments,
               (unsigned long long)info.wal_bytes, (unsigned long long)info.wal_lsn);
    else
        printf("backed up %s into %s: data.mdb %llu bytes, %llu WAL segments (%llu bytes)\n", dir,
               a.pos[0], (unsigned long long)info.data_bytes, (unsigned long long)info.wal_segments,
               (unsigned long long)info.wal_bytes);
    return CLI_OK;
}

static const cli_opt_t restore_opts[] = {
    {"force", 0, OPT_FLAG, NULL, "replace the data directory already in --data"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t restore_spec = {
    "restore",
    "BACKUP",
    "Restore a backup made by 'crowdpack backup' into the data directory --data.",
    "The target must be empty (or hold a data directory and --force be given) and no server\n"
    "may run on it. The restored directory is opened once, replaying the backed-up log.\n"
    "Example:\n  crowdpack restore /backups/dmp-2024-06-01 --data ./dmp-restored",
    restore_opts,
    CONN_DATA,
    1,
    1};

int cmd_restore(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&restore_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = data_dir(&a);
    if (dir == NULL)
        return cli_usage_error(&restore_spec, "no data directory: give --data DIR");
    cp_error_t err = {0};
    cp_status st = cp_db_restore(a.pos[0], dir, cli_has(&a, "force"), &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    printf("restored %s into %s\n", a.pos[0], dir);
    return CLI_OK;
}

static const cli_spec_t compact_spec = {
    "compact",
    "",
    "Rewrite data.mdb with only its live pages now (what deletions leave to the background).",
    "Needs the directory for writing (no server running on it).\n"
    "Example:\n  crowdpack compact --data ./dmp",
    NULL,
    CONN_DATA,
    0,
    0};

int cmd_compact(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&compact_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = data_dir(&a);
    if (dir == NULL)
        return cli_usage_error(&compact_spec, "no data directory: give --data DIR");
    cp_error_t err = {0};
    cp_db_t *db = NULL;
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    cp_status st = cp_db_open(dir, &o, &db, &err);
    if (st == CP_OK)
        st = cp_db_compact(db, &err);
    cp_db_close(db, NULL);
    if (st != CP_OK)
        return cli_fail(st, &err);
    printf("compacted %s\n", dir);
    return CLI_OK;
}
