/* SPDX-License-Identifier: MIT */
/* Socket helpers for the listener, relay, metrics endpoint and hopperctl,
 * and the "host:port" syntax they all accept. Each returns a file
 * descriptor or 0, or -errno, and where the failing step matters (resolve,
 * bind, listen) describes it in the caller's err buffer (STYLE.md §16, as
 * Redis anet.c). A leaf: it includes nothing of hopperd but the clock. */
#ifndef HOPPER_SRC_HOPPERD_NETUTIL_H
#define HOPPER_SRC_HOPPERD_NETUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define HD_ADDR_MAX 256 /* "host:port" */
#define HD_ERR_LEN 512  /* caller buffers for error messages */

/* Split "host:port" or "[v6]:port"; port 1..65535. 0, or -1 with a reason
 * in err (which may be NULL). */
int hd_parse_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen, char *err,
                  size_t errlen);

int hd_net_nonblock(int fd);
/* The address hd_net_listen_tcp(addr) binds first (getaddrinfo's first
 * passive result: "*:PORT" is 0.0.0.0:PORT), without binding. 0, or -errno
 * with the reason in err. */
int hd_net_resolve_listen(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen);
/* 1 for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104, else 0. */
int hd_net_is_loopback(const struct sockaddr *sa);
/* "1.2.3.4:80" or "[::1]:80" (numeric), "?" when it cannot be shown. */
void hd_net_addr_str(const struct sockaddr *sa, char *out, size_t outlen);
/* Listening TCP socket on "host:port" (non-blocking, CLOEXEC, SO_REUSEADDR). */
int hd_net_listen_tcp(const char *addr, char *err, size_t errlen);
/* Listening Unix stream socket at path with permissions mode; a stale
 * socket file is replaced, any other file is an error. */
int hd_net_listen_unix(const char *path, mode_t mode, char *err, size_t errlen);
/* Connect to "host:port" within timeout_ms: non-blocking connect, wait for
 * writability, then SO_ERROR, for each resolved address in turn. `abort_fn`
 * is polled about every 100 ms and aborts with -ECANCELED when it returns
 * non-zero. Returns a connected non-blocking fd or -errno. */
int hd_net_connect(const char *addr, int timeout_ms, int (*abort_fn)(void *), void *arg, char *err,
                   size_t errlen);
/* Write what the non-blocking socket fd takes of p[*off..n) now, advancing
 * *off (MSG_NOSIGNAL, EINTR retried). 0 when all is written or the socket
 * is full, or -errno. */
int hd_net_send_some(int fd, const void *p, size_t n, size_t *off);
/* Write all of p[0..n) to fd: send(MSG_NOSIGNAL) when is_socket, else
 * write(2); short writes and EINTR are retried. On a non-blocking fd that
 * is full it waits for POLLOUT, at most 100 ms at a time, and gives up
 * with -ECANCELED when `abort_fn` (may be NULL) returns non-zero or with
 * -ETIMEDOUT once deadline_ms (monotonic, hd_now_ms(); 0 = none) passed.
 * Returns 0, or -errno (-EPIPE when poll reports an error or hang-up, -EIO
 * when a write makes no progress). */
int hd_write_all(int fd, const void *p, size_t n, int is_socket, uint64_t deadline_ms,
                 int (*abort_fn)(void *), void *arg);
/* One wait of a writer or reader that found fd not ready: poll for
 * `events` at most 100 ms (less when deadline_ms, monotonic, 0 = none, is
 * nearer). 0 to try again, -ECANCELED when abort_fn (may be NULL) returns
 * non-zero, -ETIMEDOUT once the deadline passed, -EPIPE when poll reports
 * an error or hang-up while waiting to write, or -errno. */
int hd_net_wait(int fd, short events, uint64_t deadline_ms, int (*abort_fn)(void *), void *arg);

#endif
