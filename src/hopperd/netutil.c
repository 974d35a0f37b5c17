/* SPDX-License-Identifier: MIT */
/* Socket helpers (see netutil.h). Nothing here logs; callers log with
 * context. A non-blocking connect is only called up once the socket is
 * writable and SO_ERROR reads 0: writability alone also signals failure. */
#include "netutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"

int
hd_parse_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen, char *err,
              size_t errlen)
{
#define ADDR_ERR(why)                                                                              \
    do {                                                                                           \
        if (err != NULL && errlen > 0) {                                                           \
            snprintf(err, errlen, "bad address '%s': " why, s);                                    \
        }                                                                                          \
    } while (0)
    const char *h = s;
    size_t hl;
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':') {
            ADDR_ERR("expected [IPv6]:PORT");
            return -1;
        }
        h = s + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL) {
            ADDR_ERR("expected HOST:PORT");
            return -1;
        }
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen) {
        ADDR_ERR("missing or too long host");
        return -1;
    }
    /* One or more decimal digits (leading zeros allowed), 1..65535. */
    const char *p = colon + 1;
    uint32_t v = 0;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9' && v <= 65535) {
        v = v * 10 + (uint32_t)(*p - '0');
        digits++;
        p++;
    }
    if (digits == 0 || *p != '\0' || v < 1 || v > 65535 || strlen(colon + 1) >= portlen) {
        ADDR_ERR("port must be 1..65535");
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    return 0;
#undef ADDR_ERR
}

int
hd_net_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return -errno;
    }
    return 0;
}

static int
resolve(const char *addr, int passive, struct addrinfo **res, char *err, size_t errlen)
{
    char host[HD_ADDR_MAX], port[16];
    if (hd_parse_addr(addr, host, sizeof(host), port, sizeof(port), err, errlen) < 0) {
        return -EINVAL;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    int rc = getaddrinfo(host, port, &hints, res);
    if (rc != 0) {
        snprintf(err, errlen, "resolve %s: %s", addr, gai_strerror(rc));
        return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    }
    return 0;
}

int
hd_net_resolve_listen(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc = resolve(addr, 1, &res, err, errlen);
    if (rc < 0) {
        return rc;
    }
    if (res == NULL || res->ai_addrlen > sizeof(*ss)) {
        snprintf(err, errlen, "%s: no usable address", addr);
        rc = -EADDRNOTAVAIL;
    } else {
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, res->ai_addr, res->ai_addrlen);
    }
    freeaddrinfo(res);
    return rc;
}

int
hd_net_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

void
hd_net_addr_str(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
        getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, outlen, "?");
        return;
    }
    snprintf(out, outlen, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

int
hd_net_listen_tcp(const char *addr, char *err, size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc = resolve(addr, 1, &res, err, errlen);
    if (rc < 0) {
        return rc;
    }
    int fd = -1;
    rc = -EADDRNOTAVAIL;
    snprintf(err, errlen, "%s: no usable address", addr);
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            snprintf(err, errlen, "socket for %s: %s", addr, strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            rc = -errno;
            snprintf(err, errlen, "bind %s: %s", addr, strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        if (listen(fd, 128) < 0) {
            rc = -errno;
            snprintf(err, errlen, "listen %s: %s", addr, strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : rc;
}

int
hd_net_listen_unix(const char *path, mode_t mode, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: path too long for a unix socket", path);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s exists and is not a socket", path);
            return -EEXIST;
        }
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket for %s: %s", path, strerror(e));
        return -e;
    }
    /* bind() creates the file with the umask; tighten first, then chmod to
     * the configured mode, so the socket is never more open than asked. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (rc < 0) {
        snprintf(err, errlen, "bind %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (chmod(path, mode) < 0 || listen(fd, 128) < 0) {
        e = errno;
        snprintf(err, errlen, "chmod/listen %s: %s", path, strerror(e));
        close(fd);
        unlink(path);
        return -e;
    }
    return fd;
}

static int
connect_one(const struct addrinfo *ai, int timeout_ms, int (*abort_fn)(void *), void *arg)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    uint64_t deadline = hd_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (abort_fn != NULL && abort_fn(arg)) {
            close(fd);
            return -ECANCELED;
        }
        uint64_t now = hd_now_ms();
        if (now >= deadline) {
            close(fd);
            return -ETIMEDOUT;
        }
        uint64_t left = deadline - now;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int n = poll(&pfd, 1, left < 100 ? (int)left : 100);
        if (n < 0 && errno != EINTR) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (n > 0) {
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
                soerr = errno;
            }
            if (soerr != 0) {
                close(fd);
                return -soerr;
            }
            return fd;
        }
    }
}

int
hd_net_connect(const char *addr, int timeout_ms, int (*abort_fn)(void *), void *arg, char *err,
               size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc = resolve(addr, 0, &res, err, errlen);
    if (rc < 0) {
        return rc;
    }
    rc = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = connect_one(ai, timeout_ms, abort_fn, arg);
        if (rc >= 0 || rc == -ECANCELED) {
            break;
        }
    }
    freeaddrinfo(res);
    if (rc < 0) {
        snprintf(err, errlen, "connect %s: %s", addr, strerror(-rc));
    }
    return rc;
}

int
hd_net_send_some(int fd, const void *p, size_t n, size_t *off)
{
    while (*off < n) {
        ssize_t w = send(fd, (const char *)p + *off, n - *off, MSG_NOSIGNAL);
        if (w > 0) {
            *off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else if (w == 0 || errno != EINTR) {
            return w == 0 ? -EIO : -errno;
        }
    }
    return 0;
}

int
hd_write_all(int fd, const void *p, size_t n, int is_socket, uint64_t deadline_ms,
             int (*abort_fn)(void *), void *arg)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = is_socket ? send(fd, b, n, MSG_NOSIGNAL) : write(fd, b, n);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            return w < 0 ? -errno : -EIO;
        }
        /* A slow peer is not an error: wait, but give up when told to stop
         * or at the deadline. */
        int rc = hd_net_wait(fd, POLLOUT, deadline_ms, abort_fn, arg);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

int
hd_net_wait(int fd, short events, uint64_t deadline_ms, int (*abort_fn)(void *), void *arg)
{
    if (abort_fn != NULL && abort_fn(arg)) {
        return -ECANCELED;
    }
    int wait_ms = 100;
    if (deadline_ms != 0) {
        uint64_t now = hd_now_ms();
        if (now >= deadline_ms) {
            return -ETIMEDOUT;
        }
        if (deadline_ms - now < 100) {
            wait_ms = (int)(deadline_ms - now);
        }
    }
    struct pollfd pfd = {.fd = fd, .events = events};
    if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) {
        return -errno;
    }
    if ((events & POLLOUT) && (pfd.revents & (POLLERR | POLLHUP))) {
        return -EPIPE;
    }
    return 0;
}
