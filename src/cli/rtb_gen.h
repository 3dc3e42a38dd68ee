/* rtb_gen.h — generated OpenRTB bid requests for `crowdpack rtb simulate`
 * and `crowdpack bench --rtb` (rtb_gen.c): one shape of traffic, so the
 * simulator and the benchmark bid on the same kind of requests. */
#ifndef CP_CLI_RTB_GEN_H
#define CP_CLI_RTB_GEN_H

#include <stdint.h>

#include "util/util.h"

/*
 * Appends one BidRequest (OpenRTB 2.6, one line of JSON) to b: id
 * "<prefix>-<seq>", cur CNY, at 2, one banner imp (300x250 half the time,
 * else 728x90 or 320x50) with a CNY floor of 1.00-4.99 on 30 % of them
 * (*floor_fen, else 0), 60 % app (a phone, iOS 35 %, with an ifa) and 40 %
 * site (a PC), user.buyeruid = person. Draws from *rng. CP_ELIMIT or
 * CP_ENOMEM from the buffer.
 */
cp_status rtb_gen_request(buf_t *b, uint64_t *rng, const char *prefix, uint64_t seq,
                          const char *person, int64_t *floor_fen);

#endif /* CP_CLI_RTB_GEN_H */
