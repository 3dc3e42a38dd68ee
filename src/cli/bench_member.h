/* bench_member.h — `crowdpack bench --membership` (bench_member.c). */
#ifndef CP_CLI_BENCH_MEMBER_H
#define CP_CLI_BENCH_MEMBER_H

/* argv as cmd_bench got it (--membership among the options). */
int cmd_bench_membership(int argc, char **argv);

#endif /* CP_CLI_BENCH_MEMBER_H */
