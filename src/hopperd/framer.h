/* SPDX-License-Identifier: MIT */
/* Framing: split a connection's byte stream into records, and its inverse,
 * encode a record for a lines or octet-counted stream (sinks, hopperctl
 * salvage). Pure functions over (const uint8_t *, size_t); no I/O, no
 * allocation. Formats are enum hd_format (wire.h).
 *
 *   lines          each '\n'-terminated line is a record; the '\n' is
 *                  stripped, a '\r' before it is kept as data.
 *   octet-counted  RFC 6587 section 3.4.1: MSG-LEN SP MSG, where MSG-LEN
 *                  is a decimal without leading zeros (at most 10 digits).
 *
 *   native         a 4-byte big-endian length and that many bytes of one
 *                  msgpack message (docs/PROTOCOL.md); max_record is then
 *                  the largest frame; a longer or empty one is malformed.
 *
 * A record longer than max_record is dropped (HD_FRAME_OVERSIZE, reported
 * once) and the stream resynchronises after it: at the next '\n' for lines,
 * after MSG-LEN bytes for octet-counted. The connection stays usable.
 */
#ifndef HOPPER_SRC_HOPPERD_FRAMER_H
#define HOPPER_SRC_HOPPERD_FRAMER_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

enum hd_frame_rc {
    HD_FRAME_NEED_MORE = 0, /* no complete record; *consumed == 0 */
    HD_FRAME_RECORD = 1,    /* rec and reclen set; the consumed bytes belong to it */
    HD_FRAME_OVERSIZE = 2,  /* one over-long record dropped (count it); *consumed > 0 */
    HD_FRAME_SKIP = 3,      /* *consumed bytes of an over-long record discarded */
    HD_FRAME_BAD = 4,       /* malformed stream; close the connection */
};

struct hd_framer {
    int format; /* enum hd_format */
    size_t max_record;
    int skipping_line;  /* lines: inside an over-long line, discard to '\n' */
    uint64_t skip_left; /* octet: bytes of an over-long message still to discard */
};

void hd_framer_init(struct hd_framer *f, int format, size_t max_record);
/* Bytes of buffer that always suffice to hold one complete frame. */
size_t hd_framer_buffer_size(const struct hd_framer *f);
/* Look for the next record at the start of p[0..n). */
int hd_framer_next(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed,
                   const uint8_t **rec, size_t *reclen);
/* The peer closed with p[0..n) left over: a final unterminated line is a
 * record (HD_FRAME_RECORD); a partial octet-counted frame is HD_FRAME_BAD;
 * nothing left (or only the tail of an over-long record) is HD_FRAME_NEED_MORE. */
int hd_framer_eof(struct hd_framer *f, const uint8_t *p, size_t n, const uint8_t **rec,
                  size_t *reclen);

/* Encode one record for a stream in `format` into out[0..cap): lines:
 * data '\n'; octet-counted: "LEN " data (any other format: as lines).
 * Returns the bytes written, or 0 if cap is too short. */
size_t hd_encode_record(int format, const void *data, size_t len, uint8_t *out, size_t cap);

#endif
