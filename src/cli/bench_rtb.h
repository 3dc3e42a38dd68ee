/* bench_rtb.h — `crowdpack bench --rtb` (bench_rtb.c). */
#ifndef CP_CLI_BENCH_RTB_H
#define CP_CLI_BENCH_RTB_H

/* argv as cmd_bench got it (--rtb among the options). */
int cmd_bench_rtb(int argc, char **argv);

#endif /* CP_CLI_BENCH_RTB_H */
