/* listen.c — "HOST:PORT" parsing and loopback checks. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/srv.h"

static cp_status parse_port(const char *s, const char *spec, uint16_t *out, cp_error_t *err)
{
    if (*s == '\0')
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": missing port after ':'", spec);
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return CP_ERR(err, CP_EINVAL, "listen address \"%s\": port \"%s\" is not a number",
                          spec, s);
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return CP_ERR(err, CP_EINVAL, "listen address \"%s\": port %s is out of range 0..65535",
                          spec, s);
    }
    *out = (uint16_t)v;
    return CP_OK;
}

cp_status srv_listen_parse(const char *spec, srv_addr_t *out, cp_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (spec == NULL || *spec == '\0')
        spec = "127.0.0.1:8080";
    const char *host;
    size_t hlen;
    const char *port;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (rb == NULL)
            return CP_ERR(err, CP_EINVAL, "listen address \"%s\": missing ']' after IPv6 host",
                          spec);
        if (rb[1] != ':')
            return CP_ERR(err, CP_EINVAL, "listen address \"%s\": expected \":PORT\" after \"]\"",
                          spec);
        host = spec + 1;
        hlen = (size_t)(rb - host);
        port = rb + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon == NULL)
            return CP_ERR(err, CP_EINVAL,
                          "listen address \"%s\": expected HOST:PORT (e.g. 127.0.0.1:8080)", spec);
        if (memchr(spec, ':', (size_t)(colon - spec)) != NULL)
            return CP_ERR(err, CP_EINVAL,
                          "listen address \"%s\": write IPv6 hosts in brackets, e.g. [::1]:8080",
                          spec);
        host = spec;
        hlen = (size_t)(colon - spec);
        port = colon + 1;
    }
    if (hlen == 0)
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": missing host before the port", spec);
    if (hlen >= sizeof out->host)
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": host is too long", spec);
    cp_status st = parse_port(port, spec, &out->port, err);
    if (st != CP_OK)
        return st;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';

    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, out->host, &a4) == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(out->port);
        sin->sin_addr = a4;
        out->len = sizeof *sin;
        out->family = AF_INET;
        return CP_OK;
    }
    if (inet_pton(AF_INET6, out->host, &a6) == 1) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(out->port);
        sin6->sin6_addr = a6;
        out->len = sizeof *sin6;
        out->family = AF_INET6;
        return CP_OK;
    }
    if (spec[0] == '[')
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": \"%s\" is not an IPv6 address", spec,
                      out->host);
    /* A name such as "localhost": resolve it, first address wins. */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG;
    int rc = getaddrinfo(out->host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": cannot resolve host \"%s\": %s", spec,
                      out->host, rc != 0 ? gai_strerror(rc) : "no address");
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    out->family = res->ai_family;
    freeaddrinfo(res);
    if (out->family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons(out->port);
    else if (out->family == AF_INET6)
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons(out->port);
    else
        return CP_ERR(err, CP_EINVAL, "listen address \"%s\": unsupported address family", spec);
    return CP_OK;
}

int srv_sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            return sin6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

int srv_host_is_loopback(const char *host)
{
    if (host == NULL)
        return 0;
    char h[256];
    size_t n = strlen(host);
    if (n == 0 || n >= sizeof h)
        return 0;
    if (host[0] == '[') {
        const char *rb = strchr(host, ']');
        if (rb == NULL || (rb[1] != '\0' && rb[1] != ':'))
            return 0;
        n = (size_t)(rb - host - 1);
        memcpy(h, host + 1, n);
    } else {
        const char *colon = strchr(host, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return 0; /* a bare IPv6 address must be bracketed */
        n = colon != NULL ? (size_t)(colon - host) : n;
        memcpy(h, host, n);
    }
    h[n] = '\0';
    if (n > 0 && h[n - 1] == '.')
        h[--n] = '\0';
    if (strcasecmp(h, "localhost") == 0)
        return 1;
    if (n > 10 && strcasecmp(h + n - 10, ".localhost") == 0)
        return 1; /* RFC 6761: always loopback */
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}
