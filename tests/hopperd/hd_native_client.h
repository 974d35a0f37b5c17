/* SPDX-License-Identifier: MIT */
/* A blocking native-protocol client for the hopperd tests: connect to a
 * loopback port and read whole frames. Include after <cmocka.h> (failures
 * are cmocka assertions). */
#ifndef HOPPER_TESTS_HOPPERD_HD_NATIVE_CLIENT_H
#define HOPPER_TESTS_HOPPERD_HD_NATIVE_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "wire.h"

/* A connected socket to 127.0.0.1:port whose reads give up after
 * timeout_s seconds (a hung daemon fails the test instead of hanging it). */
static inline int
e2e_native_connect(int port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(0x7f000001);
    sin.sin_port = htons((uint16_t)port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    struct timeval tv = {timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* One whole frame's payload into buf (moved to its start); its length, 0
 * at EOF. */
static inline size_t
e2e_native_read(int fd, uint8_t *buf, size_t cap)
{
    size_t have = 0;
    size_t size = 0;
    for (;;) {
        assert_int_equal(hd_wire_frame_size(buf, have, cap - HD_WIRE_HDR, &size), 0);
        if (size > 0 && have >= size) {
            memmove(buf, buf + HD_WIRE_HDR, size - HD_WIRE_HDR);
            return size - HD_WIRE_HDR;
        }
        ssize_t n = recv(fd, buf + have, (size > 0 ? size : HD_WIRE_HDR) - have, 0);
        if (n == 0) {
            return 0;
        }
        assert_true(n > 0);
        have += (size_t)n;
    }
}

#endif
