/* SPDX-License-Identifier: MIT */
/* Wire formats shared by sources, sinks, hopperctl and the codecs: which
 * framing a byte stream uses, and the native frame header. A leaf: it
 * includes nothing of hopperd, so framer.c, proto.c and the config loader
 * can all name the formats without depending on each other.
 *
 *   lines          each record ends with '\n'
 *   octet-counted  RFC 6587 section 3.4.1: MSG-LEN SP MSG
 *   native         HD_WIRE_HDR bytes of big-endian payload length, then the
 *                  payload: one msgpack message (docs/PROTOCOL.md §2)
 */
#ifndef HOPPER_SRC_HOPPERD_WIRE_H
#define HOPPER_SRC_HOPPERD_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum hd_format { HD_FMT_LINES = 0, HD_FMT_OCTET = 1, HD_FMT_NATIVE = 2 };

/* native: bytes of the frame header (payload length, 32-bit big-endian). */
#define HD_WIRE_HDR 4u

/* The one decoder of the native frame header: p holds HD_WIRE_HDR bytes. */
static inline uint32_t
hd_wire_get_len(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ... and its encoder. */
static inline void
hd_wire_put_len(uint8_t *p, uint32_t len)
{
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
}

/* How far along is the native frame at the start of p[0..n), whose payload
 * may be at most max bytes? Returns -1 when its header announces an empty
 * or longer payload (malformed). Otherwise returns 0 and sets *size to the
 * bytes of the whole frame, header included, or to 0 while fewer than
 * HD_WIRE_HDR bytes are there. The frame is complete once n >= *size > 0.
 * Every reader of native frames (framer, relay, hopperctl, tests) asks
 * this, so the header is checked in one place. */
static inline int
hd_wire_frame_size(const uint8_t *p, size_t n, size_t max, size_t *size)
{
    *size = 0;
    if (n < HD_WIRE_HDR) {
        return 0;
    }
    uint32_t len = hd_wire_get_len(p);
    if (len == 0 || len > max) {
        return -1;
    }
    *size = HD_WIRE_HDR + (size_t)len;
    return 0;
}

#endif
