/* auth.c — API keys from the Authorization header (Bearer and Basic). */
#include <string.h>
#include <strings.h>

#include "server/srv.h"

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Accepts padded and unpadded input (some SDKs drop the '='). */
ssize_t srv_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (ssize_t)o;
}

static cp_status copy_key(const char *s, size_t n, char *buf, size_t cap)
{
    if (n == 0 || n >= cap || memchr(s, '\0', n) != NULL)
        return CP_EAUTH;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return CP_OK;
}

cp_status srv_auth_key(const char *header, char *buf, size_t cap)
{
    if (header == NULL)
        return CP_EAUTH;
    while (*header == ' ' || *header == '\t')
        header++;
    size_t hlen = strlen(header);
    while (hlen > 0 && (header[hlen - 1] == ' ' || header[hlen - 1] == '\t'))
        hlen--;
    if (hlen > 7 && strncasecmp(header, "Bearer ", 7) == 0) {
        const char *k = header + 7;
        size_t n = hlen - 7;
        while (n > 0 && *k == ' ') {
            k++;
            n--;
        }
        return copy_key(k, n, buf, cap);
    }
    if (hlen > 6 && strncasecmp(header, "Basic ", 6) == 0) {
        const char *b = header + 6;
        size_t n = hlen - 6;
        while (n > 0 && *b == ' ') {
            b++;
            n--;
        }
        unsigned char dec[1024];
        ssize_t d = srv_base64_decode(b, n, dec, sizeof dec);
        if (d <= 0)
            return CP_EAUTH;
        /* "KEY:" (Segment) or "KEY:anything": the key is the user name.
         * A bare ":KEY" (password only) is accepted too. */
        unsigned char *colon = memchr(dec, ':', (size_t)d);
        if (colon == NULL)
            return copy_key((const char *)dec, (size_t)d, buf, cap);
        if (colon == dec)
            return copy_key((const char *)dec + 1, (size_t)d - 1, buf, cap);
        return copy_key((const char *)dec, (size_t)(colon - dec), buf, cap);
    }
    return CP_EAUTH;
}
