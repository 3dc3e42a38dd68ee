/*
 * cmd_tags.c — `crowdpack tags ...` (the tag tree) and `crowdpack attrs
 * ...` (the attribute schema), embedded or over /v1/tags, /v1/taxonomy
 * and /v1/attributes.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)
#define MAX_JSON_FILE (64u << 20)

/* "/v1/tags/a/b/c" + suffix with each segment escaped. NULL on ENOMEM. */
static char *tag_url(const char *path, const char *suffix)
{
    size_t cap = strlen(path) * 3 + strlen(suffix) + 16;
    char *u = malloc(cap);
    if (!u)
        return NULL;
    size_t n = (size_t)snprintf(u, cap, "/v1/tags");
    const char *p = path;
    while (*p) {
        size_t seg = strcspn(p, "/");
        char *s = strndup(p, seg);
        char *e = s ? client_escape(s) : NULL;
        free(s);
        if (!e) {
            free(u);
            return NULL;
        }
        n += (size_t)snprintf(u + n, cap - n, "/%s", e);
        free(e);
        p += seg;
        if (*p == '/')
            p++;
    }
    snprintf(u + n, cap - n, "%s", suffix);
    return u;
}

/* Takes over the JSON text a library call returned (cp_free) as a free()-able
 * string, so both modes hand the renderers the same kind of string. `lib`
 * is read after the call has returned. */
static cp_status dup_lib(cp_status st, char **lib, char **out)
{
    if (st == CP_OK) {
        *out = strdup(*lib ? *lib : "");
        if (!*out)
            st = CP_ENOMEM;
    }
    cp_free(*lib);
    *lib = NULL;
    return st;
}

/* ---------------------------------------------------------- tags list */

static const cli_spec_t list_spec = {
    "tags list",
    "[ROOT]",
    "List the tag tree (or the subtree under ROOT) with member counts.",
    "Counts include the members of descendant tags.\n\nExamples:\n"
    "  crowdpack tags list --data ./dmp\n  crowdpack tags list --data ./dmp interest/finance",
    NULL,
    CONN_ALL,
    0,
    1};

static int tags_list(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&list_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *root = a.npos ? a.pos[0] : NULL;
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        char *url = NULL;
        if (root) {
            char *e = client_escape(root);
            size_t n = (e ? strlen(e) : 0) + 32;
            if (e && (url = malloc(n)))
                snprintf(url, n, "/v1/tags?root=%s", e);
            free(e);
        }
        st = root && !url
                 ? CP_ENOMEM
                 : client_call(c.http, "GET", url ? url : "/v1/tags", NULL, NULL, 0, &out, &err);
        free(url);
    } else {
        st = dup_lib(cp_tags_json(c.db, root, &lib, &err), &lib, &out);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "tags");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    json_t *tags = json_object_get(j, "tags");
    if (json_array_size(tags) == 0) {
        printf("no tags\n");
    } else {
        const char *hdr[] = {"PATH", "NAME", "LEVEL", "COUNT", "CHILDREN"};
        cli_table_t *t = cli_table_new(5, hdr);
        cli_table_right(t, 2);
        cli_table_right(t, 3);
        cli_table_right(t, 4);
        size_t i;
        json_t *tg;
        json_array_foreach(tags, i, tg)
        {
            char b[5][128];
            json_t *ch = json_object_get(tg, "children");
            const char *row[] = {
                cli_json_text(json_object_get(tg, "path"), b[0], 128),
                cli_json_text(json_object_get(tg, "name"), b[1], 128),
                cli_json_text(json_object_get(tg, "level"), b[2], 128),
                cli_json_count(json_object_get(tg, "count"), b[3]),
                json_is_array(ch) ? (snprintf(b[4], 128, "%zu", json_array_size(ch)), b[4])
                                  : cli_json_text(ch, b[4], 128),
            };
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(j);
out:
    free(out);
    cli_conn_close(&c);
    return rc;
}

/* ---------------------------------------------------------- tags show */

static const cli_spec_t show_spec = {
    "tags show",
    "PATH",
    "Show one tag: name, level, parent, counts and children.",
    "PATH is a slug path or a display path (names joined by '/'; it may start below the\n"
    "top level); a display path naming several tags is an error listing them.\n\n"
    "Examples:\n  crowdpack tags show --data ./dmp interest/finance\n"
    "  crowdpack tags show --data ./dmp 金融",
    NULL,
    CONN_ALL,
    1,
    1};

static int tags_show(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&show_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL, *url = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http)
        st = (url = tag_url(a.pos[0], ""))
                 ? client_call(c.http, "GET", url, NULL, NULL, 0, &out, &err)
                 : CP_ENOMEM;
    else
        st = dup_lib(cp_tag_json(c.db, a.pos[0], &lib, &err), &lib, &out);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "tag");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    const char *keys[] = {"path",  "name",   "display_path", "description",
                          "level", "parent", "count",        "direct_count"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        char b[128];
        if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
            continue;
        printf("%-13s %s\n", keys[i],
               json_is_integer(v) ? cli_json_count(v, b) : cli_json_text(v, b, sizeof b));
    }
    json_t *ch = json_object_get(j, "children");
    if (json_array_size(ch) > 0) {
        size_t i;
        json_t *x;
        char b[128];
        printf("%-13s", "children");
        json_array_foreach(ch, i, x) printf("%s%s", i ? ", " : " ", cli_json_text(x, b, sizeof b));
        printf("\n");
    }
    json_decref(j);
out:
    free(out);
    free(url);
    cli_conn_close(&c);
    return rc;
}

/* ----------------------------------------- create / rename / move / delete */

static const cli_opt_t create_opts[] = {
    {"name", 0, OPT_VALUE, "NAME", "display name, any language (default: the slug)"},
    {"description", 0, OPT_VALUE, "TEXT", "description"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t create_spec = {
    "tags create",
    "PATH",
    "Create a tag; missing parents are created too.",
    "Slug segments are [a-z0-9_-] and lower-case letters of any script (stored NFC).\n\n"
    "Examples:\n"
    "  crowdpack tags create --data ./dmp interest/finance/consulting --name 融资咨询\n"
    "  crowdpack tags create --data ./dmp 兴趣/金融/理财",
    create_opts,
    CONN_ALL,
    1,
    1};
static const cli_opt_t rename_opts[] = {
    {"name", 0, OPT_VALUE, "NAME", "the new display name"},
    {"description", 0, OPT_VALUE, "TEXT", "the new description"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t rename_spec = {
    "tags rename",
    "PATH",
    "Change a tag's display name and/or description (not its path).",
    "Example:\n  crowdpack tags rename --data ./dmp interest/finance --name 金融",
    rename_opts,
    CONN_ALL,
    1,
    1};
static const cli_spec_t move_spec = {
    "tags move",
    "PATH NEWPATH",
    "Give a tag a new path, moving its subtree and keeping members.",
    "The new parent must exist.\n\nExample:\n"
    "  crowdpack tags move --data ./dmp interest/fin interest/finance",
    NULL,
    CONN_ALL,
    2,
    2};
static const cli_opt_t delete_opts[] = {
    {"recursive", 'r', OPT_FLAG, NULL, "also delete the tag's descendants"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t delete_spec = {
    "tags delete",
    "PATH",
    "Delete a tag (refused while crowds reference it).",
    "A tag with children needs --recursive.\n\nExample:\n"
    "  crowdpack tags delete --data ./dmp interest/finance --recursive",
    delete_opts,
    CONN_ALL,
    1,
    1};

enum { T_CREATE, T_RENAME, T_MOVE, T_DELETE };

static int tags_write(const cli_spec_t *spec, int op, int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *path = a.pos[0], *np = a.npos > 1 ? a.pos[1] : NULL;
    const char *name = cli_get(&a, "name"), *desc = cli_get(&a, "description");
    int rec = cli_has(&a, "recursive");
    if (op == T_RENAME && !name && !desc)
        return cli_usage_error(spec, "give --name and/or --description");
    cli_conn_t c = {0};
    char *url = NULL;
    cp_error_t err = {0};
    cp_status st = CP_OK;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        json_t *b = json_object();
        if (op == T_CREATE) {
            json_object_set_new(b, "path", json_string(path));
            url = strdup("/v1/tags");
        } else {
            url = tag_url(path, op == T_DELETE && rec ? "?recursive=true" : "");
        }
        if (np)
            json_object_set_new(b, "path", json_string(np));
        if (name)
            json_object_set_new(b, "name", json_string(name));
        if (desc)
            json_object_set_new(b, "description", json_string(desc));
        if (!url) {
            json_decref(b);
            st = CP_ERR(&err, CP_ENOMEM, "out of memory");
        } else if (op == T_DELETE) {
            json_decref(b);
            st = client_call(c.http, "DELETE", url, NULL, NULL, 0, NULL, &err);
        } else {
            st = client_call_json(c.http, op == T_CREATE ? "POST" : "PATCH", url, b, NULL, &err);
        }
    } else if (op == T_CREATE) {
        st = cp_tag_create(c.db, path, name, desc, &err);
    } else if (op == T_DELETE) {
        st = cp_tag_delete(c.db, path, rec, &err);
    } else {
        st = cp_tag_update(c.db, path, np, name, desc, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    const char *what = op == T_CREATE   ? "created"
                       : op == T_RENAME ? "updated"
                       : op == T_MOVE   ? "moved"
                                        : "deleted";
    if (a.json)
        cli_emit_json(np ? json_pack("{s:s,s:s}", what, path, "to", np)
                         : json_pack("{s:s}", what, path));
    else if (np)
        printf("moved tag %s to %s\n", path, np);
    else
        printf("%s tag %s\n", what, path);
out:
    free(url);
    cli_conn_close(&c);
    return rc;
}

static int tags_create(int argc, char **argv)
{
    return tags_write(&create_spec, T_CREATE, argc, argv);
}
static int tags_rename(int argc, char **argv)
{
    return tags_write(&rename_spec, T_RENAME, argc, argv);
}
static int tags_move(int argc, char **argv)
{
    return tags_write(&move_spec, T_MOVE, argc, argv);
}
static int tags_delete(int argc, char **argv)
{
    return tags_write(&delete_spec, T_DELETE, argc, argv);
}

/* --------------------------------------------------------- tags search */

static const cli_opt_t search_opts[] = {
    {"limit", 0, OPT_VALUE, "N", "at most N tags (default and maximum 1000)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t search_spec = {
    "tags search",
    "Q",
    "Find tags whose slug path, display name or display path contains Q.",
    "Substring match, ASCII letters in any case.\n\nExamples:\n"
    "  crowdpack tags search --data ./dmp 理财\n  crowdpack tags search --data ./dmp Finance",
    search_opts,
    CONN_ALL,
    1,
    1};

static int tags_search(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&search_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t limit = 0;
    if (cli_get(&a, "limit") &&
        (cli_parse_u64(cli_get(&a, "limit"), &limit) || limit == 0 || limit > CP_TAGS_SEARCH_MAX))
        return cli_usage_error(&search_spec, "--limit: expected 1 to %d", CP_TAGS_SEARCH_MAX);
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL, *url = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        char *e = client_escape(a.pos[0]);
        size_t n = (e ? strlen(e) : 0) + 48;
        if (e && (url = malloc(n)))
            snprintf(url, n, "/v1/tags?q=%s&limit=%llu", e,
                     (unsigned long long)(limit ? limit : CP_TAGS_SEARCH_MAX));
        free(e);
        st = url ? client_call(c.http, "GET", url, NULL, NULL, 0, &out, &err) : CP_ENOMEM;
    } else {
        st = dup_lib(cp_tags_search_json(c.db, a.pos[0], (size_t)limit, &lib, &err), &lib, &out);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "tags");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    json_t *tags = json_object_get(j, "tags");
    if (json_array_size(tags) == 0) {
        printf("no tag matches \"%s\"\n", a.pos[0]);
    } else {
        const char *hdr[] = {"PATH", "NAME", "DISPLAY PATH", "COUNT"};
        cli_table_t *t = cli_table_new(4, hdr);
        cli_table_right(t, 3);
        size_t i;
        json_t *tg;
        json_array_foreach(tags, i, tg)
        {
            char b[4][256];
            const char *row[] = {
                cli_json_text(json_object_get(tg, "path"), b[0], 256),
                cli_json_text(json_object_get(tg, "name"), b[1], 256),
                cli_json_text(json_object_get(tg, "display_path"), b[2], 256),
                cli_json_count(json_object_get(tg, "count"), b[3]),
            };
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
        if (json_is_true(json_object_get(j, "truncated")))
            printf("(%lld matches; showing %zu: use --limit or a longer Q)\n",
                   (long long)json_integer_value(json_object_get(j, "matched")),
                   json_array_size(tags));
    }
    json_decref(j);
out:
    free(out);
    free(url);
    cli_conn_close(&c);
    return rc;
}

/* ---------------------------------------------- tags load / attrs load */

static const cli_spec_t tload_spec = {
    "tags load",
    "T.json",
    "Load a taxonomy: creates missing tags, updates names; all or nothing.",
    "The file is "
    "{\"tags\":[{\"path\":\"interest/finance\",\"name\":\"金融\",\"description\":\"...\"}]}.\n\n"
    "Example:\n  crowdpack tags load --data ./dmp taxonomy.json",
    NULL,
    CONN_ALL,
    1,
    1};
static const cli_spec_t aload_spec = {
    "attrs load",
    "S.json",
    "Load an attribute schema; all or nothing.",
    "The file is {\"attributes\":[{\"name\":\"age\",\"type\":\"int\"}, ...]}.\n\n"
    "Example:\n  crowdpack attrs load --data ./dmp schema.json",
    NULL,
    CONN_ALL,
    1,
    1};

static int json_file_load(const cli_spec_t *spec, int taxonomy, int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *text = NULL;
    size_t len = 0;
    cli_conn_t c = {0};
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_read_file(a.pos[0], MAX_JSON_FILE, &text, &len)) != CLI_OK)
        return rc;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        goto out;
    if (c.http)
        st = client_call(c.http, "POST", taxonomy ? "/v1/taxonomy" : "/v1/attributes",
                         "application/json", text, len, NULL, &err);
    else
        st = taxonomy ? cp_taxonomy_load_json(c.db, text, len, &err)
                      : cp_schema_load_json(c.db, text, len, &err);
    if (st != CP_OK) {
        rc = cli_failf("%s: %s", a.pos[0], err.message[0] ? err.message : cp_strerror(st));
        goto out;
    }
    if (a.json)
        cli_emit_json(json_pack("{s:s}", "loaded", a.pos[0]));
    else
        printf("loaded %s from %s\n", taxonomy ? "taxonomy" : "schema", a.pos[0]);
out:
    free(text);
    cli_conn_close(&c);
    return rc;
}

static int tags_load(int argc, char **argv)
{
    return json_file_load(&tload_spec, 1, argc, argv);
}
static int attrs_load(int argc, char **argv)
{
    return json_file_load(&aload_spec, 0, argc, argv);
}

static const cli_sub_t tag_subs[] = {
    {"list", tags_list, &list_spec},
    {"show", tags_show, &show_spec},
    {"create", tags_create, &create_spec},
    {"rename", tags_rename, &rename_spec},
    {"move", tags_move, &move_spec},
    {"delete", tags_delete, &delete_spec},
    {"load", tags_load, &tload_spec},
    {"search", tags_search, &search_spec},
    {NULL, NULL, NULL},
};

int cmd_tags(int argc, char **argv)
{
    return cli_dispatch("tags",
                        "The tag tree, addressed by slug paths (interest/finance/consulting).",
                        tag_subs, argc, argv);
}

/* --------------------------------------------------------------- attrs */

static const cli_spec_t alist_spec = {"attrs list",
                                      "",
                                      "List attributes with their types and counts.",
                                      "Example:\n  crowdpack attrs list --data ./dmp",
                                      NULL,
                                      CONN_ALL,
                                      0,
                                      0};
static const cli_spec_t define_spec = {
    "attrs define",
    "NAME TYPE",
    "Declare an attribute. TYPE: int enum string bool timestamp geo.",
    "Names are [a-z_][a-z0-9_]*. Declaring again with the same type does nothing.\n\nExample:\n"
    "  crowdpack attrs define --data ./dmp age int\n  crowdpack attrs define --data ./dmp loc geo",
    NULL,
    CONN_ALL,
    2,
    2};

static int attrs_list(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&alist_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http)
        st = client_call(c.http, "GET", "/v1/attributes", NULL, NULL, 0, &out, &err);
    else
        st = dup_lib(cp_schema_json(c.db, &lib, &err), &lib, &out);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "attributes");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    json_t *attrs = json_object_get(j, "attributes");
    if (json_array_size(attrs) == 0) {
        printf("no attributes\n");
    } else {
        const char *hdr[] = {"NAME", "TYPE", "USERS", "VALUES"};
        cli_table_t *t = cli_table_new(4, hdr);
        cli_table_right(t, 2);
        cli_table_right(t, 3);
        size_t i;
        json_t *x;
        json_array_foreach(attrs, i, x)
        {
            char b[4][128];
            json_t *vals = json_object_get(x, "values");
            /* Only dictionary types (enum, string, bool) have a value count. */
            if (json_is_integer(vals) && json_integer_value(vals) == 0)
                vals = NULL;
            const char *row[] = {cli_json_text(json_object_get(x, "name"), b[0], 128),
                                 cli_json_text(json_object_get(x, "type"), b[1], 128),
                                 cli_json_count(json_object_get(x, "count"), b[2]),
                                 vals ? cli_json_count(vals, b[3]) : ""};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(j);
out:
    free(out);
    cli_conn_close(&c);
    return rc;
}

static int attrs_define(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&define_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cp_attr_type type = 0;
    for (int t = 1; t <= 16; t++) {
        const char *n = cp_attr_type_name((cp_attr_type)t);
        if (n && strcmp(n, a.pos[1]) == 0)
            type = (cp_attr_type)t;
    }
    if (!type)
        return cli_usage_error(
            &define_spec, "unknown type '%s' (expected int, enum, string, bool, timestamp or geo)",
            a.pos[1]);
    cli_conn_t c = {0};
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        json_t *b = json_object();
        json_object_set_new(b, "name", json_string(a.pos[0]));
        json_object_set_new(b, "type", json_string(a.pos[1]));
        st = client_call_json(c.http, "POST", "/v1/attributes", b, NULL, &err);
    } else {
        st = cp_attr_define(c.db, a.pos[0], type, &err);
    }
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else if (a.json)
        cli_emit_json(json_pack("{s:s,s:s}", "defined", a.pos[0], "type", a.pos[1]));
    else
        printf("defined attribute %s (%s)\n", a.pos[0], a.pos[1]);
    cli_conn_close(&c);
    return rc;
}

/* --------------------------------------------------- attrs show / alias */

static const cli_opt_t ashow_opts[] = {
    {"limit", 'n', OPT_VALUE, "N", "at most N values, most common first (default 100)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t ashow_spec = {
    "attrs show",
    "NAME",
    "List the values of an enum, string or bool attribute with user counts.",
    "Most common first, with the attribute's aliases.\n\nExample:\n"
    "  crowdpack attrs show --data ./dmp city --limit 20",
    ashow_opts,
    CONN_ALL,
    1,
    1};
static const cli_opt_t alias_opts[] = {
    {"remove", 0, OPT_FLAG, NULL, "remove the alias ALIAS (no VALUE)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t alias_spec = {
    "attrs alias",
    "NAME ALIAS [VALUE]",
    "Make ALIAS another spelling of VALUE (广州 = guangzhou) for intake and expressions.",
    "Users already stored under ALIAS move to VALUE. VALUE must be a value seen before.\n\n"
    "Examples:\n  crowdpack attrs alias --data ./dmp city 广州 guangzhou\n"
    "  crowdpack attrs alias --data ./dmp city 广州 --remove",
    alias_opts,
    CONN_ALL,
    2,
    3};

/* "/v1/attributes/NAME" + suffix. NULL on ENOMEM. */
static char *attr_url(const char *name, const char *suffix)
{
    char *e = client_escape(name);
    size_t n = (e ? strlen(e) : 0) + strlen(suffix) + 32;
    char *u = e ? malloc(n) : NULL;
    if (u)
        snprintf(u, n, "/v1/attributes/%s%s", e, suffix);
    free(e);
    return u;
}

static void print_values(json_t *j)
{
    char b[4][256];
    printf("%s (%s): %s distinct values, %s users with a value\n",
           cli_json_text(json_object_get(j, "attribute"), b[0], 256),
           cli_json_text(json_object_get(j, "type"), b[1], 256),
           cli_json_count(json_object_get(j, "distinct"), b[2]),
           cli_json_count(json_object_get(j, "users"), b[3]));
    json_t *vals = json_object_get(j, "values");
    if (json_array_size(vals) > 0) {
        const char *hdr[] = {"VALUE", "USERS"};
        cli_table_t *t = cli_table_new(2, hdr);
        cli_table_right(t, 1);
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v)
        {
            const char *row[] = {cli_json_text(json_object_get(v, "value"), b[0], 256),
                                 cli_json_count(json_object_get(v, "count"), b[1])};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    if (json_is_true(json_object_get(j, "truncated")))
        printf("(more values: --limit N shows more)\n");
    json_t *al = json_object_get(j, "aliases");
    if (json_array_size(al) > 0) {
        printf("aliases\n");
        size_t i;
        json_t *x;
        json_array_foreach(al, i, x)
            printf("  %s = %s\n", cli_json_text(json_object_get(x, "alias"), b[0], 256),
                   cli_json_text(json_object_get(x, "value"), b[1], 256));
    }
}

static int attrs_show(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&ashow_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t limit = 0;
    if (cli_get(&a, "limit") &&
        (cli_parse_u64(cli_get(&a, "limit"), &limit) || limit == 0 || limit > 100000))
        return cli_usage_error(&ashow_spec, "--limit: expected 1 to 100000");
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL, *url = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        char q[48];
        snprintf(q, sizeof q, "/values?limit=%llu", (unsigned long long)(limit ? limit : 100));
        url = attr_url(a.pos[0], q);
        st = url ? client_call(c.http, "GET", url, NULL, NULL, 0, &out, &err) : CP_ENOMEM;
    } else {
        st = dup_lib(cp_attr_values_json(c.db, a.pos[0], (size_t)limit, &lib, &err), &lib, &out);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "values");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    print_values(j);
    json_decref(j);
out:
    free(out);
    free(url);
    cli_conn_close(&c);
    return rc;
}

static int attrs_alias(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&alias_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    int remove = cli_has(&a, "remove");
    if (remove != (a.npos == 2))
        return cli_usage_error(&alias_spec, remove ? "--remove takes NAME ALIAS, no VALUE"
                                                   : "expected NAME ALIAS VALUE (or --remove)");
    cli_conn_t c = {0};
    char *url = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        json_t *b = json_pack("{s:{s:o}}", "aliases", a.pos[1],
                              remove ? json_null() : json_string(a.pos[2]));
        if (b == NULL || (url = attr_url(a.pos[0], "/aliases")) == NULL) {
            json_decref(b);
            st = CP_ERR(&err, CP_ENOMEM, "out of memory");
        } else {
            st = client_call_json(c.http, "PUT", url, b, NULL, &err); /* takes b */
        }
    } else if (remove) {
        st = cp_attr_alias_remove(c.db, a.pos[0], a.pos[1], &err);
    } else {
        st = cp_attr_alias_set(c.db, a.pos[0], a.pos[1], a.pos[2], &err);
    }
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else if (a.json)
        cli_emit_json(remove ? json_pack("{s:s,s:s}", "attribute", a.pos[0], "removed", a.pos[1])
                             : json_pack("{s:s,s:s,s:s}", "attribute", a.pos[0], "alias", a.pos[1],
                                         "value", a.pos[2]));
    else if (remove)
        printf("%s: removed alias %s\n", a.pos[0], a.pos[1]);
    else
        printf("%s: %s is now an alias of %s\n", a.pos[0], a.pos[1], a.pos[2]);
    free(url);
    cli_conn_close(&c);
    return rc;
}

static const cli_sub_t attr_subs[] = {
    {"list", attrs_list, &alist_spec},      {"show", attrs_show, &ashow_spec},
    {"define", attrs_define, &define_spec}, {"alias", attrs_alias, &alias_spec},
    {"load", attrs_load, &aload_spec},      {NULL, NULL, NULL},
};

int cmd_attrs(int argc, char **argv)
{
    return cli_dispatch("attrs",
                        "The attribute schema: typed per-user values (age, gender, loc ...).",
                        attr_subs, argc, argv);
}
