/* SPDX-License-Identifier: MIT */
/* Target functions: hopperd's metrics endpoint as it runs (metrics.c: the
 *                   metrics thread's accept, mx_read (the HTTP request
 *                   reader), mx_reply, mx_write, hd_metrics_render), fed one
 *                   client's request bytes (issue 15).
 * Setup (once per process): hd_fixture.h with the metrics thread on
 * 127.0.0.1 (a port the kernel picks). Per input: connect, write the
 * request in chunks, half-close, read the reply until the server shuts its
 * side down.
 * Property: the reply comes within 5 s and is exactly one of: nothing (the
 * client sent nothing), or an HTTP/1.0 response whose status the request
 * head decides: 431 when 8 KiB arrive without a blank line ("\r\n\r\n" or
 * "\n\n", searched up to the first NUL as the server does), else 200 for a
 * head starting "GET /metrics " / "GET /metrics\r" / "GET / ", else 404
 * (500 never: rendering has memory); its Content-Length is the length of
 * the body that follows; a 200 body is Prometheus text whose every line is
 * a comment or "name{labels} value" with a known prefix.
 * Input: byte 0: chunk size 1 + 31 * v bytes (the client's writes); the
 * rest is the request. */
#include "hd_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD_MAX 8192 /* MX_HEAD_MAX */
#define WAIT_MS 5000

/* What the server must answer: 0 nothing, else the status. */
static int
expected_status(const uint8_t *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    static char head[HEAD_MAX + 1];
    size_t h = n < HEAD_MAX ? n : HEAD_MAX;
    memcpy(head, p, h);
    head[h] = '\0';
    int done = strstr(head, "\r\n\r\n") != NULL || strstr(head, "\n\n") != NULL;
    if (!done && n >= HEAD_MAX) {
        return 431;
    }
    if (strncmp(head, "GET /metrics ", 13) == 0 || strncmp(head, "GET /metrics\r", 13) == 0 ||
        strncmp(head, "GET / ", 6) == 0) {
        return 200;
    }
    return 404;
}

static void
check_body(const char *b, size_t n)
{
    size_t at = 0;
    size_t line = 0;
    while (at < n) {
        const char *nl = memchr(b + at, '\n', n - at);
        FZ_CHECK(nl != NULL, "body line %zu has no newline", line);
        size_t len = (size_t)(nl - (b + at));
        const char *l = b + at;
        if (len > 0 && l[0] != '#') {
            FZ_CHECK(len > 8 && strncmp(l, "hopper", 6) == 0, "body line %zu: '%.*s'", line,
                     (int)(len < 80 ? len : 80), l);
            const char *sp = memchr(l, ' ', len);
            FZ_CHECK(sp != NULL && sp + 1 < l + len, "body line %zu has no value", line);
        }
        at += len + 1;
        line++;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    if (cfg == NULL) {
        fz_hd_start("metrics", 1);
    }
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    size_t chunk = 1 + 31u * (size_t)data[0];
    struct sockaddr_in sin = fz_hd_metrics_addr();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(fd >= 0, "socket");
    FZ_CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect: %s",
             strerror(errno));
    FZ_CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "nonblock");
    static char rep[1u << 20];
    size_t rlen = 0;
    size_t off = 0;
    int shut = 0;
    uint64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        if (off == n && !shut) {
            shutdown(fd, SHUT_WR);
            shut = 1;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN | (off < n ? POLLOUT : 0)};
        (void)poll(&pf, 1, 100);
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(fd, rep + rlen, sizeof(rep) - 1 - rlen);
            if (r == 0 || (r < 0 && errno == ECONNRESET)) {
                break;
            }
            if (r > 0) {
                rlen += (size_t)r;
                FZ_CHECK(rlen < sizeof(rep) - 1, "reply over 1 MiB");
            }
        }
        if ((pf.revents & POLLOUT) && off < n) {
            size_t k = n - off < chunk ? n - off : chunk;
            ssize_t w = send(fd, p + off, k, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                sched_yield();
            } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
                off = n; /* answered already (431): the rest is not read */
            }
        }
        FZ_CHECK(now_ms() < deadline, "no end of reply within %d ms", WAIT_MS);
    }
    close(fd);
    rep[rlen] = '\0';
    int want = expected_status(p, n);
    if (want == 0) {
        FZ_CHECK(rlen == 0, "a reply to nothing: %.40s", rep);
        return 0;
    }
    int status = 0;
    FZ_CHECK(sscanf(rep, "HTTP/1.0 %d ", &status) == 1, "not a status line: %.60s", rep);
    FZ_CHECK(status == want, "status %d, the request head calls for %d", status, want);
    const char *cl = strstr(rep, "Content-Length: ");
    const char *end = strstr(rep, "\r\n\r\n");
    FZ_CHECK(cl != NULL && end != NULL && cl < end, "no Content-Length in the head");
    size_t blen = (size_t)strtoull(cl + 16, NULL, 10);
    size_t body = (size_t)(end + 4 - rep);
    FZ_CHECK(rlen - body == blen, "Content-Length %zu, body %zu bytes", blen, rlen - body);
    if (status == 200) {
        check_body(rep + body, blen);
    }
    return 0;
}
