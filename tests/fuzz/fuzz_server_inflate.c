/*
 * fuzz_server_inflate.c — libFuzzer target for the server's bounded
 * inflate of compressed request bodies (srv_inflate, src/server/body.c).
 * The first byte picks the coding (gzip or deflate) and the bound; the rest
 * is the compressed body. Checks the contract: only CP_OK, CP_EINVAL,
 * CP_ELIMIT or CP_ENOMEM; on success at most `max` bytes, NUL-terminated;
 * on failure no output and a message. Corpus: tests/fuzz/server_inflate/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_server_inflate: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *enc = (data[0] & 1) ? "deflate" : "gzip";
    size_t max = (size_t)1 << (4 + (data[0] >> 1) % 17); /* 16 B .. 1 MiB */
    char *out = NULL;
    size_t n = 12345;
    cp_error_t err = {0};
    cp_status st = srv_inflate(enc, (const char *)data + 1, size - 1, max, &out, &n, &err);
    if (st == CP_OK) {
        if (out == NULL || n > max || out[n] != '\0')
            die("success without a bounded, terminated body");
    } else {
        if (st != CP_EINVAL && st != CP_ELIMIT && st != CP_ENOMEM)
            die("unexpected status");
        if (out != NULL || n != 0 || err.message[0] == '\0')
            die("failure with output or without a message");
    }
    free(out);
    return 0;
}
