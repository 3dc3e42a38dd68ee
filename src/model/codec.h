/* codec.h — big-endian key encoding shared by the model's records (keys
 * sort numerically in LMDB). */
#ifndef CP_MODEL_CODEC_H
#define CP_MODEL_CODEC_H

#include <stdint.h>

static inline void be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t be32_get(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#endif /* CP_MODEL_CODEC_H */
