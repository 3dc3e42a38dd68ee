/*
 * bench_intake_int.h — shared by the files of `crowdpack bench --intake`:
 *   bench_intake.c  the command, the imports and their floors, the report
 *   bench_gen.c     the synthetic events (files to import, HTTP bodies)
 *   bench_http.c    the HTTP load generator against an in-process server
 */
#ifndef CP_CLI_BENCH_INTAKE_INT_H
#define CP_CLI_BENCH_INTAKE_INT_H

#include <stdint.h>

#include "crowdpack.h"
#include "util/util.h"

/* ----------------------------------------------------------- bench_gen.c */

#define NNAMES 20 /* event names */
#define NCATS 200 /* values of the indexed `category` */
#define DAYS 90   /* days the timestamps span */

/*
 * One synthetic event. Users: id = floor(U x^2) for uniform x, so the
 * lowest 1% of ids send 10% of the events (a zipf-ish head and a long
 * tail of users seen once). Names and categories are skewed the same way.
 */
typedef struct gen_event {
    uint64_t user; /* 0..U-1; written as "u<user+1>" */
    int name;
    int cat;
    uint32_t cents;
    int64_t ts;
} gen_event_t;

/* The next event of the stream seeded in *rng, over `users` users. */
void bench_gen_next(uint64_t *rng, uint64_t users, gen_event_t *e);
/* Appends the Segment track event of `e` (one JSON object) to b, with
 * messageId msg_prefix + seq. CP_ENOMEM. */
cp_status bench_gen_segment(buf_t *b, const gen_event_t *e, const char *msg_prefix, uint64_t seq);
/* The mapping of the CSV bench_gen_files writes (category indexed). */
extern const char bench_synth_mapping[];
/* Writes the same n events as CSV and as NDJSON; *distinct = users that
 * appear. CLI_OK or CLI_FAIL (printed). */
int bench_gen_files(const char *csv_path, const char *nd_path, uint64_t n, uint64_t users,
                    uint64_t seed, uint64_t *distinct);

/* ---------------------------------------------------------- bench_http.c */

/* One HTTP run: the settings on entry (conns .. auth), the figures after. */
typedef struct http_run {
    int skipped;
    const char *skip_why;
    int conns, batch, seconds, server_threads, auth;
    uint16_t port;
    uint64_t requests, events, applied, errors, unknown;
    int first_status;
    char first_error[300];
    double elapsed;
    double p50, p99, max, mean; /* ms */
    double client_cpu, process_cpu;
    double writer_cpu; /* the intake writer thread's, -1 if not found */
    uint64_t server_events;
    int verified;
    int fsync_n;
    double fsync_secs, fsync_p50, fsync_max; /* total s; ms */
} http_run_t;

/*
 * The HTTP run into h (settings filled by the caller): a data directory
 * under tmp, the server on a thread, load for h->seconds, the check that
 * the server holds exactly the acknowledged events (h->verified), `fsyncs`
 * fdatasync calls for the disk floor. CLI_OK or CLI_FAIL (printed).
 */
int bench_http_run(http_run_t *h, const char *tmp, uint64_t users, uint64_t seed, int fsyncs);

/* -------------------------------------------------------- bench_intake.c */

/* CPU seconds (user + sys) of the process (RUSAGE_SELF) or of the calling
 * thread (RUSAGE_THREAD). */
double bench_cpu_secs(int who);
/* Removes dir and everything under it (errors ignored). */
void bench_rm_tree(const char *dir);

#endif /* CP_CLI_BENCH_INTAKE_INT_H */
