/*
 * args.c — option parsing for every command: long options (--name V,
 * --name=V), short ones (-n V, -nV), flags, "--" to end options, options
 * anywhere among positionals, and --help/-h. Each command declares its
 * options in a cli_spec_t so usage text and parsing cannot drift apart.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const cli_opt_t conn_data = {"data", 'd', OPT_VALUE, "DIR",
                                    "data directory (default: $CROWDPACK_DATA)"};
static const cli_opt_t conn_server = {
    "server", 0, OPT_VALUE, "URL", "talk to a running server instead (e.g. http://127.0.0.1:8080)"};
static const cli_opt_t conn_key = {"key", 0, OPT_VALUE, "KEY",
                                   "API key for --server (default: $CROWDPACK_KEY)"};
static const cli_opt_t conn_json = {"json", 0, OPT_FLAG, NULL, "machine-readable JSON output"};
static const cli_opt_t opt_help = {"help", 'h', OPT_FLAG, NULL, "show this help"};

static int nopts(const cli_spec_t *s)
{
    int n = 0;
    while (s->opts && s->opts[n].lng)
        n++;
    return n;
}

static void print_opt(FILE *f, const cli_opt_t *o)
{
    char left[80], sh[8] = "    ";
    if (o->shrt)
        snprintf(sh, sizeof sh, "-%c, ", o->shrt);
    if (o->kind == OPT_VALUE)
        snprintf(left, sizeof left, "%s--%s %s", sh, o->lng, o->metavar ? o->metavar : "VALUE");
    else
        snprintf(left, sizeof left, "%s--%s", sh, o->lng);
    fprintf(f, "  %-28s %s\n", left, o->help);
}

void cli_usage(const cli_spec_t *s, FILE *f)
{
    fprintf(f, "Usage: crowdpack %s [options]%s%s\n\n%s\n", s->name, s->args && *s->args ? " " : "",
            s->args ? s->args : "", s->summary);
    if (s->details)
        fprintf(f, "\n%s\n", s->details);
    fprintf(f, "\nOptions:\n");
    for (int i = 0; i < nopts(s); i++)
        print_opt(f, &s->opts[i]);
    if (s->conn & CONN_JSON)
        print_opt(f, &conn_json);
    if (s->conn & CONN_DATA)
        print_opt(f, &conn_data);
    if (s->conn & CONN_SERVER) {
        print_opt(f, &conn_server);
        print_opt(f, &conn_key);
    }
    print_opt(f, &opt_help);
}

int cli_usage_error(const cli_spec_t *s, const char *fmt, ...)
{
    va_list ap;
    fputs("crowdpack: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'crowdpack %s --help'.\n", s->name);
    return CLI_USAGE;
}

/* Finds an option by long name; index into the spec, or a negative code
 * for the connection options. */
enum {
    FOUND_NONE = -100,
    FOUND_DATA = -1,
    FOUND_SERVER = -2,
    FOUND_KEY = -3,
    FOUND_JSON = -4,
    FOUND_HELP = -5
};

static int find_long(const cli_spec_t *s, const char *name, size_t len)
{
    for (int i = 0; i < nopts(s); i++)
        if (strlen(s->opts[i].lng) == len && memcmp(s->opts[i].lng, name, len) == 0)
            return i;
#define IS(lit) (len == sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
    if ((s->conn & CONN_DATA) && IS("data"))
        return FOUND_DATA;
    if ((s->conn & CONN_SERVER) && IS("server"))
        return FOUND_SERVER;
    if ((s->conn & CONN_SERVER) && IS("key"))
        return FOUND_KEY;
    if ((s->conn & CONN_JSON) && IS("json"))
        return FOUND_JSON;
    if (IS("help"))
        return FOUND_HELP;
#undef IS
    return FOUND_NONE;
}

static int find_short(const cli_spec_t *s, char c)
{
    for (int i = 0; i < nopts(s); i++)
        if (s->opts[i].shrt == c)
            return i;
    if ((s->conn & CONN_DATA) && c == 'd')
        return FOUND_DATA;
    if (c == 'h')
        return FOUND_HELP;
    return FOUND_NONE;
}

static int takes_value(const cli_spec_t *s, int idx)
{
    if (idx >= 0)
        return s->opts[idx].kind == OPT_VALUE;
    return idx == FOUND_DATA || idx == FOUND_SERVER || idx == FOUND_KEY;
}

static void store(cli_args_t *a, int idx, const char *v)
{
    switch (idx) {
    case FOUND_DATA:
        a->data = v;
        break;
    case FOUND_SERVER:
        a->server = v;
        break;
    case FOUND_KEY:
        a->key = v;
        break;
    case FOUND_JSON:
        a->json = 1;
        break;
    case FOUND_HELP:
        a->help = 1;
        break;
    default:
        a->val[idx] = v;
        a->count[idx]++;
        break;
    }
}

int cli_parse(const cli_spec_t *s, int argc, char **argv, cli_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->spec = s;
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        if (only_pos || w[0] != '-' || w[1] == 0) { /* "-" alone is a positional (stdin) */
            if (a->npos >= CLI_MAX_POS)
                return cli_usage_error(s, "too many arguments");
            a->pos[a->npos++] = w;
            continue;
        }
        if (strcmp(w, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (w[1] == '-') {
            const char *name = w + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            int idx = find_long(s, name, len);
            if (idx == FOUND_NONE)
                return cli_usage_error(s, "unknown option '--%.*s'", (int)len, name);
            if (takes_value(s, idx)) {
                const char *v = eq ? eq + 1 : NULL;
                if (!v) {
                    if (i + 1 >= argc)
                        return cli_usage_error(s, "option '--%.*s' needs a value", (int)len, name);
                    v = argv[++i];
                }
                store(a, idx, v);
            } else {
                if (eq)
                    return cli_usage_error(s, "option '--%.*s' takes no value", (int)len, name);
                store(a, idx, "1");
            }
            continue;
        }
        /* Short options; a negative number is a positional, not an option. */
        if (w[1] >= '0' && w[1] <= '9') {
            if (a->npos >= CLI_MAX_POS)
                return cli_usage_error(s, "too many arguments");
            a->pos[a->npos++] = w;
            continue;
        }
        for (const char *p = w + 1; *p; p++) {
            int idx = find_short(s, *p);
            if (idx == FOUND_NONE)
                return cli_usage_error(s, "unknown option '-%c'", *p);
            if (takes_value(s, idx)) {
                const char *v = p[1] ? p + 1 : NULL;
                if (!v) {
                    if (i + 1 >= argc)
                        return cli_usage_error(s, "option '-%c' needs a value", *p);
                    v = argv[++i];
                }
                store(a, idx, v);
                break;
            }
            store(a, idx, "1");
        }
    }
    if (a->help) {
        cli_usage(s, stdout);
        return CLI_OK;
    }
    if (a->npos < s->min_pos)
        return cli_usage_error(s, "missing argument%s: expected %s",
                               s->min_pos - a->npos > 1 ? "s" : "",
                               s->args ? s->args : "more arguments");
    if (s->max_pos >= 0 && a->npos > s->max_pos)
        return cli_usage_error(s, "unexpected argument '%s'", a->pos[s->max_pos]);
    if (a->server && a->data)
        return cli_usage_error(s, "give either --data or --server, not both");
    return CLI_OK;
}

static int find_idx(const cli_args_t *a, const char *lng)
{
    for (int i = 0; i < nopts(a->spec); i++)
        if (strcmp(a->spec->opts[i].lng, lng) == 0)
            return i;
    return -1;
}

const char *cli_get(const cli_args_t *a, const char *lng)
{
    int i = find_idx(a, lng);
    return i >= 0 ? a->val[i] : NULL;
}

int cli_has(const cli_args_t *a, const char *lng)
{
    int i = find_idx(a, lng);
    return i >= 0 ? a->count[i] : 0;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    int digits = 0;
    const char *p = s;
    for (; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            uint64_t d = (uint64_t)(*p - '0');
            if (v > (UINT64_MAX - d) / 10)
                return -1;
            v = v * 10 + d;
            digits++;
        } else if ((*p == '_' || *p == ',') && digits > 0 && p[1] >= '0' && p[1] <= '9') {
            continue;
        } else {
            break;
        }
    }
    if (!digits)
        return -1;
    uint64_t mul = 1;
    if (*p == 'k' || *p == 'K')
        mul = 1000;
    else if (*p == 'm' || *p == 'M')
        mul = 1000000;
    else if (*p == 'g' || *p == 'G')
        mul = 1000000000;
    if (mul != 1)
        p++;
    if (*p)
        return -1;
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

int cli_dispatch(const char *group, const char *summary, const cli_sub_t *subs, int argc,
                 char **argv)
{
    const char *w = argc > 0 ? argv[0] : NULL;
    int help = !w || strcmp(w, "help") == 0 || strcmp(w, "--help") == 0 || strcmp(w, "-h") == 0;
    if (!help) {
        for (const cli_sub_t *s = subs; s->name; s++)
            if (strcmp(s->name, w) == 0)
                return s->fn(argc - 1, argv + 1);
    }
    /* "crowdpack crowd help create" shows the subcommand's help. */
    if (help && w && argc > 1) {
        for (const cli_sub_t *s = subs; s->name; s++)
            if (strcmp(s->name, argv[1]) == 0) {
                cli_usage(s->spec, stdout);
                return CLI_OK;
            }
    }
    FILE *f = help && w ? stdout : stderr;
    if (!w)
        fprintf(stderr, "crowdpack: '%s' needs a command\n\n", group);
    else if (!help)
        fprintf(stderr, "crowdpack: unknown command '%s %s'\n\n", group, w);
    fprintf(f, "Usage: crowdpack %s COMMAND [options]\n\n%s\n\nCommands:\n", group, summary);
    for (const cli_sub_t *s = subs; s->name; s++) {
        char left[64];
        snprintf(left, sizeof left, "%s %s", s->name, s->spec->args ? s->spec->args : "");
        fprintf(f, "  %-30s %s\n", left, s->spec->summary);
    }
    fprintf(f, "\nRun 'crowdpack %s COMMAND --help' for the options of a command.\n", group);
    /* No word at all is a usage error; asking for help is not. */
    return help && w ? CLI_OK : CLI_USAGE;
}
