/*
 * main.c — the `crowdpack` command: global options and dispatch to the
 * command files (cmd_*.c). Exit status: 0 success, 1 failure, 2 usage.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *args;
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"init", cmd_init, "--data DIR [--schema S.json] [--taxonomy T.json]",
     "create a data directory"},
    {"load", cmd_load, "--data DIR USERS.ndjson|-", "load users from NDJSON (streaming)"},
    {"count", cmd_count, "--data DIR 'EXPR'", "count the users matching an expression"},
    {"eval", cmd_eval, "--data DIR 'EXPR'", "print the ids of the users matching an expression"},
    {"crowd", cmd_crowd, "COMMAND ...", "audience packs: create, list, show, export ..."},
    {"campaign", cmd_campaign, "COMMAND ...",
     "campaigns bidding on crowds: load, list, show, history, delete"},
    {"tags", cmd_tags, "COMMAND ...", "the tag tree: list, show, create, move ..."},
    {"attrs", cmd_attrs, "COMMAND ...", "the attribute schema: list, define, load"},
    {"user", cmd_user, "COMMAND ...", "one user: show, delete, untag"},
    {"import", cmd_import, "--data DIR [--preset P | --mapping M.json | --events] FILE",
     "import events (NDJSON, CSV + mapping; gzip ok), resumable"},
    {"whois", cmd_whois, "--data DIR TYPE:VALUE", "a user by any identifier, with lineage"},
    {"unmerge", cmd_unmerge, "--data DIR MERGE_ID", "undo an identity merge"},
    {"intake", cmd_intake, "config [--set JSON]",
     "the intake configuration: identifiers, indexed properties"},
    {"keys", cmd_keys, "COMMAND ...", "API keys: create, list, revoke"},
    {"expr", cmd_expr, "COMMAND ...", "expressions: parse to JSON, format from JSON"},
    {"insight", cmd_insight, "--data DIR CROWD", "share and TGI of a crowd per tag and attribute"},
    {"overlap", cmd_overlap, "--data DIR SET SET...", "overlap of 2-10 crowds (Jaccard, Venn)"},
    {"cluster", cmd_cluster, "--data DIR --attrs A,B --k K", "k-means clusters stored as tags"},
    {"tiers", cmd_tiers, "COMMAND ...", "member tiers on a points attribute: show, set, nudge"},
    {"analytics", cmd_analytics, "COMMAND ...", "analytics settings (k-anonymity) and bench"},
    {"measures", cmd_measures, "--data DIR [--set M.json]",
     "per-user event measures (sums, distinct, last)"},
    {"rfm", cmd_rfm, "--data DIR [--as-of DATE]",
     "RFM value segments as tags rfm/... and attributes"},
    {"aipl", cmd_aipl, "--data DIR RULES.json", "AIPL stages as exclusive tags aipl/NAME/STAGE"},
    {"funnel", cmd_funnel, "--data DIR STEP STEP...",
     "funnel: users reaching steps in order, conversion"},
    {"stats", cmd_stats, "--data DIR", "sizes and counters of a data directory"},
    {"check", cmd_check, "--data DIR", "check a data directory for damage (exit 1 if damaged)"},
    {"recover", cmd_recover, "--data DIR", "go past a damaged write-ahead log, explicitly"},
    {"backup", cmd_backup, "--data DIR OUT", "back up a data directory (also while serving)"},
    {"restore", cmd_restore, "BACKUP --data DIR [--force]",
     "restore a backup into a data directory"},
    {"compact", cmd_compact, "--data DIR", "rewrite data.mdb with only its live pages"},
    {"serve", cmd_serve, "--data DIR [--listen HOST:PORT]", "serve the HTTP API"},
    {"demo", cmd_demo, "[--data DIR] [--users N]", "generate a demo population"},
    {"rtb", cmd_rtb, "simulate --data DIR [--day]", "OpenRTB bidding: the replay simulator"},
    {"bench", cmd_bench, "[--users N[,N...]] [--synthetic]", "measure count latency and load rate"},
    {NULL, NULL, NULL, NULL},
};

static void help(FILE *f)
{
    fprintf(f,
            "crowdpack %s — audience packs (人群包) with instant counts\n\n"
            "Usage: crowdpack COMMAND [options]\n\nCommands:\n",
            CP_VERSION_STRING);
    for (const command_t *c = commands; c->name; c++) {
        char left[80];
        snprintf(left, sizeof left, "%s %s", c->name, c->args);
        fprintf(f, "  %-50s %s\n", left, c->summary);
    }
    fprintf(f, "\nGlobal:\n"
               "  crowdpack --version                                print the version\n"
               "  crowdpack help [COMMAND]                           this help, or a command's\n"
               "\nMost commands work on a data directory (--data DIR, or $CROWDPACK_DATA) or\n"
               "on a running server (--server URL [--key KEY], or $CROWDPACK_KEY).\n"
               "Run 'crowdpack COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    /* A closed stdout (`crowdpack crowd export x | head`) must end the
     * command quietly, not kill it mid-write: writes then fail with EPIPE,
     * which the commands treat as "stop". */
    signal(SIGPIPE, SIG_IGN);

    if (argc < 2) {
        help(stderr);
        return CLI_USAGE;
    }
    const char *w = argv[1];
    if (strcmp(w, "--version") == 0 || strcmp(w, "-V") == 0 || strcmp(w, "version") == 0) {
        printf("crowdpack %s (data format %u)\n", cp_libversion(), cp_format_version());
        return cli_finish_stdout(CLI_OK);
    }
    if (strcmp(w, "help") == 0 || strcmp(w, "--help") == 0 || strcmp(w, "-h") == 0) {
        if (argc > 2) {
            /* "crowdpack help crowd create" == "crowdpack crowd create --help" */
            for (const command_t *c = commands; c->name; c++)
                if (strcmp(c->name, argv[2]) == 0) {
                    char *sub[4] = {(char *)"--help", NULL, NULL, NULL};
                    int n = 1;
                    if (argc > 3) {
                        sub[0] = argv[3];
                        sub[1] = (char *)"--help";
                        n = 2;
                    }
                    return cli_finish_stdout(c->fn(n, sub));
                }
            fprintf(stderr, "crowdpack: unknown command '%s'\n", argv[2]);
            return CLI_USAGE;
        }
        help(stdout);
        return cli_finish_stdout(CLI_OK);
    }
    for (const command_t *c = commands; c->name; c++)
        if (strcmp(c->name, w) == 0)
            return cli_finish_stdout(c->fn(argc - 2, argv + 2));

    fprintf(stderr, "crowdpack: unknown command '%s'\nTry 'crowdpack help'.\n", w);
    return CLI_USAGE;
}
