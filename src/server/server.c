/* server.c — placeholder until the HTTP server lands. */
#include "server/server.h"
#include "util/util.h"

cp_status cp_server_run(cp_db_t *db, const cp_server_options_t *opts, cp_error_t *err)
{
    CP_UNUSED(db);
    CP_UNUSED(opts);
    return CP_ERR(err, CP_EINTERNAL, "the HTTP server is not built yet");
}
