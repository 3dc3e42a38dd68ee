/*
 * bench_intake.h — `crowdpack bench --intake`: bulk import rates (Online
 * Retail, a synthetic CSV and the same events as NDJSON) and HTTP batch
 * intake with fsync before the acknowledgement, measured against an
 * in-process server by a loopback load generator (bench_intake.c, with
 * bench_gen.c and bench_http.c).
 */
#ifndef CP_CLI_BENCH_INTAKE_H
#define CP_CLI_BENCH_INTAKE_H

/* Entry point; argv as given to cmd_bench (the words after "bench"),
 * including "--intake". Returns CLI_OK, CLI_FAIL or CLI_USAGE. */
int cmd_bench_intake(int argc, char **argv);

#endif /* CP_CLI_BENCH_INTAKE_H */
