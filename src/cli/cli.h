/*
 * cli.h — internals of the `crowdpack` command shared by its files:
 * option parsing, output helpers, the connection to a data directory or a
 * server, and the entry point of each command.
 *
 * Conventions: a command returns its process exit status — CLI_OK (0),
 * CLI_FAIL (1, a runtime error already printed as "crowdpack: message"),
 * CLI_USAGE (2, bad usage, already printed with a hint).
 */
#ifndef CP_CLI_H
#define CP_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crowdpack.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* ------------------------------------------------------------ options */

enum {
    OPT_FLAG = 0,  /* no value; counted */
    OPT_VALUE = 1, /* takes a value: --name V, --name=V, -x V */
};

typedef struct cli_opt {
    const char *lng;     /* long name without "--" */
    char shrt;           /* short letter or 0 */
    int kind;            /* OPT_FLAG / OPT_VALUE */
    const char *metavar; /* "DIR" for OPT_VALUE */
    const char *help;
} cli_opt_t;

/* Which connection options a command accepts (added to its usage text). */
enum {
    CONN_NONE = 0,
    CONN_DATA = 1u << 0,   /* --data DIR */
    CONN_SERVER = 1u << 1, /* --server URL, --key KEY */
    CONN_JSON = 1u << 2,   /* --json */
};

typedef struct cli_spec {
    const char *name;      /* "crowd create" */
    const char *args;      /* "NAME 'EXPR'" */
    const char *summary;   /* one line */
    const char *details;   /* more text for --help, or NULL */
    const cli_opt_t *opts; /* terminated by an entry with lng == NULL; may be NULL */
    unsigned conn;         /* CONN_* */
    int min_pos, max_pos;  /* positional argument counts; max -1 = any */
} cli_spec_t;

#define CLI_MAX_OPTS 32
#define CLI_MAX_POS 64

typedef struct cli_args {
    const cli_spec_t *spec;
    const char *val[CLI_MAX_OPTS]; /* last value of each spec option */
    int count[CLI_MAX_OPTS];       /* times given */
    const char *pos[CLI_MAX_POS];
    int npos;
    /* connection options */
    const char *data;
    const char *server;
    const char *key;
    int json;
    int help; /* --help / -h given: usage printed, caller returns CLI_OK */
} cli_args_t;

/*
 * Parses argv (argv[0] is the first word after the command words) against
 * `spec`. Returns CLI_OK, or CLI_USAGE after printing the problem and a
 * hint. When --help is present the usage is printed to stdout and
 * a->help is set (return value CLI_OK).
 */
int cli_parse(const cli_spec_t *spec, int argc, char **argv, cli_args_t *a);
/* The value of option `lng` (NULL if not given) / how often it was given. */
const char *cli_get(const cli_args_t *a, const char *lng);
int cli_has(const cli_args_t *a, const char *lng);
/* Prints the usage of `spec` to `f`. */
void cli_usage(const cli_spec_t *spec, FILE *f);
/* Prints "crowdpack: msg" plus "Try 'crowdpack NAME --help'." to stderr; returns CLI_USAGE. */
int cli_usage_error(const cli_spec_t *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses an unsigned decimal with optional _ or , separators and k/M/G
 * suffixes (10M = 10,000,000). Returns 0 on success. */
int cli_parse_u64(const char *s, uint64_t *out);

/* ------------------------------------------------------------ output */

/* Prints "crowdpack: <message>" for a failed status (with "L:C: " for an
 * expression position when the message lacks it); returns CLI_FAIL. */
int cli_fail(cp_status st, const cp_error_t *err);
/* Same, then shows `expr` with a caret under err->column when known. */
int cli_fail_expr(cp_status st, const cp_error_t *err, const char *expr);
/* Prints "crowdpack: <printf message>" and returns CLI_FAIL. */
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 1234567 -> "1,234,567" into buf (>= 32 bytes); returns buf. */
const char *cli_group(uint64_t v, char *buf);
/* 1536 -> "1.5 KiB" into buf (>= 32 bytes); returns buf. */
const char *cli_bytes(double v, char *buf);
/* Seconds -> "1.23 s" / "12 ms" / "2m03s" into buf (>= 32); returns buf. */
const char *cli_duration(double secs, char *buf);

/* A simple text table: add rows of cells, then print with aligned columns. */
typedef struct cli_table cli_table_t;
cli_table_t *cli_table_new(int ncols, const char *const *headers);
/* Appends a row of ncols cells (copied). Right-aligns the columns whose bit is set. */
void cli_table_row(cli_table_t *t, const char *const *cells);
void cli_table_right(cli_table_t *t, int col);
void cli_table_print(cli_table_t *t, FILE *f);
void cli_table_free(cli_table_t *t);

/* Re-prints JSON text `json` pretty (2-space indent) to stdout with a
 * newline. Falls back to the raw text when it does not parse. */
void cli_print_json(const char *json);

/* JSON helpers for rendering answers (jansson values). */
struct json_t;
/* Any scalar as text (strings borrowed, others formatted into buf). */
const char *cli_json_text(const struct json_t *v, char *buf, size_t cap);
/* A non-negative integer grouped ("1,234"), else as cli_json_text; buf >= 32. */
const char *cli_json_count(const struct json_t *v, char *buf);
/* Seconds or milliseconds since the epoch as ISO 8601; strings as they are. */
const char *cli_json_time(const struct json_t *v, char *buf, size_t cap);
/* Parses an answer; prints "crowdpack: WHAT: invalid JSON" and returns NULL on failure. */
struct json_t *cli_json_parse(const char *text, const char *what);

/* Prints a JSON value compactly on one line of stdout and releases it
 * (names from the command line are escaped properly this way). */
void cli_emit_json(struct json_t *j);

/* Reads a whole file ("-" = stdin) up to `max` bytes. Caller frees *out
 * (NUL-terminated). Returns CLI_OK or CLI_FAIL (printed). */
int cli_read_file(const char *path, size_t max, char **out, size_t *len);

/* Flushes stdout and reports a write error (EPIPE is quiet). Returns the
 * status to exit with, given the command's own status `rc`. */
int cli_finish_stdout(int rc);

/* --------------------------------------------------------- connection */

/* A connection: an open embedded database or a server client. */
typedef struct cli_client cli_client_t; /* client.c */

typedef struct cli_conn {
    cp_db_t *db;        /* embedded, or NULL */
    cli_client_t *http; /* server, or NULL */
    const char *data_dir;
} cli_conn_t;

enum {
    OPEN_READ = 0, /* read-only: no writer lock, so it works beside a running writer */
    OPEN_WRITE = 1,
};

/*
 * Opens what the arguments say: --server URL (with --key or
 * CROWDPACK_KEY), else --data DIR (or CROWDPACK_DATA). Commands that
 * accept only a data directory pass `server_ok` = 0. Prints errors.
 */
int cli_conn_open(const cli_args_t *a, int mode, int server_ok, cli_conn_t *c);
void cli_conn_close(cli_conn_t *c);

/* The embedded form of a JSON request: a public-API function taking the
 * request body (NULL, 0 for none) and returning the answer text. */
typedef cp_status (*cli_lib_fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *);

/*
 * Runs one JSON request (`req` stolen; NULL = no body) against the server
 * (`method` `path`) or, on a data directory, through `fn`. *out is the
 * answer text (free()). Prints failures; returns CLI_OK or CLI_FAIL.
 */
int cli_request(const cli_args_t *a, int mode, cli_lib_fn fn, const char *method, const char *path,
                struct json_t *req, char **out);
/* cli_request for a command that shows the answer: under --json it is
 * printed as it came and *view stays NULL (the command is done: return the
 * result); otherwise *view is the parsed answer (json_decref it). */
int cli_request_view(const cli_args_t *a, int mode, cli_lib_fn fn, const char *method,
                     const char *path, struct json_t *req, const char *what, struct json_t **view);

/* ------------------------------------------------------------- client */

/* The server side of a connection (libcurl). */
cp_status client_open(const char *url, const char *key, cli_client_t **out, cp_error_t *err);
void client_close(cli_client_t *c);

/*
 * One request: `method` on `path` (starting "/v1/..."; already escaped),
 * with an optional body. On a 2xx answer *resp (caller frees with free())
 * holds the body. A non-2xx answer becomes a cp_status (from the error
 * body's code, else from the HTTP status) with the server's message.
 */
cp_status client_call(cli_client_t *c, const char *method, const char *path, const char *ctype,
                      const char *body, size_t len, char **resp, cp_error_t *err);
/* Like client_call with a JSON body built from a jansson object (stolen). */
cp_status client_call_json(cli_client_t *c, const char *method, const char *path,
                           struct json_t *body, char **resp, cp_error_t *err);
/* `method` on `path` with an optional JSON body, the answer streamed into
 * `write` (exports, eval). */
cp_status client_stream(cli_client_t *c, const char *method, const char *path, const char *body,
                        size_t len, cp_write_fn write, void *ud, cp_error_t *err);
/* URL-escapes one path segment (caller frees with free()). NULL on ENOMEM. */
char *client_escape(const char *s);

/* ------------------------------------------------------------ commands */

int cmd_init(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_count(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_expr(int argc, char **argv);
int cmd_crowd(int argc, char **argv);
int cmd_campaign(int argc, char **argv); /* cmd_campaign.c */
int cmd_tags(int argc, char **argv);
int cmd_attrs(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* cmd_analytics.c */
int cmd_insight(int argc, char **argv);
int cmd_overlap(int argc, char **argv);
int cmd_cluster(int argc, char **argv);
int cmd_tiers(int argc, char **argv);
int cmd_analytics(int argc, char **argv);

/* cmd_value.c */
int cmd_measures(int argc, char **argv);
int cmd_rfm(int argc, char **argv);
int cmd_aipl(int argc, char **argv);
int cmd_funnel(int argc, char **argv);

int cmd_import(int argc, char **argv);  /* cmd_import.c */
int cmd_whois(int argc, char **argv);   /* cmd_identity.c */
int cmd_unmerge(int argc, char **argv); /* cmd_identity.c */
int cmd_check(int argc, char **argv);   /* cmd_check.c */
int cmd_recover(int argc, char **argv); /* cmd_check.c */
int cmd_intake(int argc, char **argv);  /* cmd_intake.c */
int cmd_rtb(int argc, char **argv);     /* cmd_rtb.c */

/* `user delete ID` on a data directory (cmd_identity.c): an ID of the form
 * TYPE:VALUE with a known identifier type deletes by identifier. */
cp_status cli_user_delete_embedded(cp_db_t *db, const char *id, cp_error_t *err);

/* A group of subcommands ("crowd create", "crowd list" ...). */
typedef struct cli_sub {
    const char *name;
    int (*fn)(int argc, char **argv);
    const cli_spec_t *spec;
} cli_sub_t;

/* Dispatches argv[0] among `subs` (NULL-terminated by name); prints the
 * group's help for "help", "-h", "--help" or no word. */
int cli_dispatch(const char *group, const char *summary, const cli_sub_t *subs, int argc,
                 char **argv);

/* qsort comparator of doubles, ascending. */
int cli_cmp_double(const void *a, const void *b);
/* Removes dir and everything below it (no links followed); nftw's result:
 * 0, or -1 with errno set. */
int cli_rmtree(const char *dir);

#endif /* CP_CLI_H */
