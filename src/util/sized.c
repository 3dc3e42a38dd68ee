/*
 * sized.c — the extensible structs of crowdpack.h (those beginning with
 * `size_t size`): reading a caller's input struct and writing a caller's
 * output struct of whatever size its header had, and the library's
 * version string.
 *
 * Why sizes and not version numbers: the caller's compiler already knows
 * sizeof the struct it was built with, so old and new callers need no
 * code to say which version they speak, and a library can serve every
 * caller built since the field was introduced (the sizes only grow).
 */
#include <string.h>

#include "util/util.h"

const char *cp_libversion(void)
{
    return CP_VERSION_STRING;
}

static size_t size_of(const void *s)
{
    size_t n;
    memcpy(&n, s, sizeof n);
    return n;
}

cp_status sized_in(void *dst, size_t known, const void *src, size_t min, const char *what,
                   cp_error_t *err)
{
    memset(dst, 0, known);
    size_t n = size_of(src);
    if (n < min)
        return CP_ERR(err, CP_EINVAL,
                      "%s: .size is %zu, not the sizeof of the struct (at least %zu); "
                      "initialise it with its CP_..._INIT macro",
                      what, n, min);
    /* A newer caller's fields this library does not know: harmless only
     * when they are left at zero (their default). */
    for (size_t i = known; i < n; i++)
        if (((const unsigned char *)src)[i] != 0)
            return CP_ERR(err, CP_EINVAL,
                          "%s: byte %zu is set, past the %zu bytes this library (%s) knows; "
                          "it cannot honour fields of a newer crowdpack.h",
                          what, i, known, CP_VERSION_STRING);
    memcpy(dst, src, n < known ? n : known);
    memcpy(dst, &n, sizeof n); /* .size as the caller gave it */
    return CP_OK;
}

cp_status sized_out_check(const void *dst, size_t min, const char *what, cp_error_t *err)
{
    size_t n = size_of(dst);
    if (n < min)
        return CP_ERR(err, CP_EINVAL,
                      "%s: .size is %zu, not the sizeof of the struct (at least %zu); "
                      "initialise it with its CP_..._INIT macro",
                      what, n, min);
    return CP_OK;
}

void sized_out(void *dst, const void *full, size_t known)
{
    size_t n = size_of(dst);
    if (n > known)
        memset((unsigned char *)dst + known, 0, n - known);
    memcpy(dst, full, n < known ? n : known);
    memcpy(dst, &n, sizeof n); /* keeps the caller's size */
}
