/* SPDX-License-Identifier: MIT */
/* The `native` protocol (docs/PROTOCOL.md): frames of a 4-byte big-endian
 * length and one msgpack map. Encoding uses msgpack-c's packer; decoding is
 * our own bounded reader over (const uint8_t *, size_t), because the wire
 * is hostile input and msgpack-c's unpacker allocates a container's whole
 * element array from its declared count before seeing the elements.
 * Nothing here does I/O or touches a queue. */
#ifndef HOPPER_SRC_HOPPERD_PROTO_H
#define HOPPER_SRC_HOPPERD_PROTO_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define HD_PROTO_VERSION 1
#define HD_PROTO_HDR HD_WIRE_HDR
/* Largest frame a peer may send: at least 1 MiB, always room for one
 * maximal record plus the envelope. */
#define HD_PROTO_MIN_FRAME (1024u * 1024u)

enum hd_op {
    HD_OP_UNKNOWN = 0,
    HD_OP_HELLO,
    HD_OP_SEND,
    HD_OP_OK,
    HD_OP_ERROR,
    HD_OP_SUBSCRIBE,
    HD_OP_RECORDS,
    HD_OP_ACK,
};

/* Rejection codes (the `code` of an error reply). hd_code_names is the one
 * list of their names: the codec, the metrics and hopperctl all use it.
 * Append only: peers and dashboards know the names. */
enum hd_code {
    HD_CODE_NONE = 0,
    HD_CODE_FULL,
    HD_CODE_TOO_BIG,
    HD_CODE_BAD_FRAME,
    HD_CODE_NO_SUCH_QUEUE,
    HD_CODE_FAILED,
    HD_CODE_BUSY,
    HD_CODE_FORBIDDEN, /* the source does not allow this operation on this queue */
    HD_CODE_NCODES
};
extern const char *const hd_code_names[HD_CODE_NCODES];
/* The name of a code received from a peer: "?" when out of range. */
const char *hd_code_name(int code);

struct hd_slice {
    const uint8_t *p;
    size_t n;
};

/* A decoded message. Slices point into the frame passed to hd_proto_parse
 * and are valid while it is. Absent keys leave fields zero. */
struct hd_msg {
    int op; /* enum hd_op */
    uint64_t id;
    int has_id;
    struct hd_slice queue;   /* send: target queue (n == 0: the source's); hello: default */
    uint64_t nrecords;       /* send */
    size_t records_off;      /* offset of the first record element in the frame */
    uint64_t count;          /* ok */
    uint64_t dropped;        /* ok */
    int code;                /* error: enum hd_code (HD_CODE_NONE if unknown) */
    struct hd_slice message; /* error */
    uint64_t version;        /* hello */
    uint64_t max_frame;      /* hello */
    uint64_t max_record;     /* hello */
    uint64_t idle_timeout;   /* hello: the server's idle_timeout in ms (0: none or not said) */
    uint64_t window;         /* subscribe: records in flight; 0 = default */
    uint64_t first, last;    /* records: sequence numbers of the first and last record */
    uint64_t seq;            /* ack: everything up to and including seq */
    int has_seq;
};

/* Frame header (hd_wire_get_len): 0 and *len set when 4 bytes are there,
 * else -1. */
int hd_proto_frame_len(const uint8_t *p, size_t n, uint32_t *len);
/* Parse one frame payload. 0, or -1 with a reason in why (malformed). */
int hd_proto_parse(const uint8_t *p, size_t n, struct hd_msg *m, const char **why);
/* After a successful parse of a send: the i-th record, in order; call with
 * *cursor = 0 first. Returns 0, or -1 after the last one. */
int hd_proto_next_record(const uint8_t *p, size_t n, size_t *cursor, struct hd_slice *rec);
void hd_proto_records_begin(const struct hd_msg *m, size_t *cursor);

/* Encoders: append one whole frame to sb. 0 or -1 (out of memory). */
int hd_proto_put_hello(msgpack_sbuffer *sb, uint64_t max_frame, uint64_t max_record,
                       const char *queue, uint64_t idle_timeout_ms);
int hd_proto_put_send(msgpack_sbuffer *sb, uint64_t id, const char *queue,
                      const struct hd_slice *recs, size_t n);
int hd_proto_put_ok(msgpack_sbuffer *sb, uint64_t id, uint64_t count, uint64_t dropped);
int hd_proto_put_error(msgpack_sbuffer *sb, uint64_t id, int code, const char *message);
int hd_proto_put_subscribe(msgpack_sbuffer *sb, uint64_t id, const char *queue, uint64_t window);
int hd_proto_put_records(msgpack_sbuffer *sb, uint64_t first, uint64_t last,
                         const struct hd_slice *recs, size_t n);
int hd_proto_put_ack(msgpack_sbuffer *sb, uint64_t seq);

#endif
