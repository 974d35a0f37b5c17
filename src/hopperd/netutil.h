/* SPDX-License-Identifier: MIT */
/* Socket helpers for the listener, relay and metrics endpoints. Each
 * returns a file descriptor or -errno and, where the failing step matters
 * (resolve, bind, listen), describes it in the caller's err buffer. */
#ifndef HOPPER_SRC_HOPPERD_NETUTIL_H
#define HOPPER_SRC_HOPPERD_NETUTIL_H

#include <stddef.h>
#include <sys/types.h>

int hd_net_nonblock(int fd);
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

#endif
