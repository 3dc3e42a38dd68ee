/* json.c — JSON output helpers shared by every view of the engine (and
 * analytics): string literals into a buffer, a tree into a string. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "engine/engine_int.h"

/* ------------------------------------------------------------------ JSON */

cp_status json_buf_str(buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    cp_status rc = buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; rc == CP_OK && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > start && (rc = buf_append(b, s + start, i - start)))
            break;
        char esc[8];
        size_t n = 2;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        rc = buf_append(b, esc, n);
        start = i + 1;
    }
    if (rc == CP_OK && len > start)
        rc = buf_append(b, s + start, len - start);
    if (rc == CP_OK)
        rc = buf_append(b, "\"", 1);
    return rc;
}

cp_status db_json_out(json_t *j, char **out, cp_error_t *err)
{
    *out = NULL;
    if (j == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory building JSON");
    /* 15 significant digits: reports say 0.201672, not 0.20167199999999999
     * (jansson's default of 17 shows the binary rounding). */
    char *s = json_dumps_checked(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory building JSON");
    *out = s;
    return CP_OK;
}
