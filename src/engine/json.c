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
