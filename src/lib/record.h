/* SPDX-License-Identifier: MIT */
/* Frame codec (FORMAT.md §3): pure functions over byte ranges, no I/O.
 * A frame carries `count` records with consecutive sequence numbers starting
 * at `first_seq`; its body, once inflated, is `count` times (u32 len, bytes). */
#ifndef HOPPER_SRC_LIB_RECORD_H
#define HOPPER_SRC_LIB_RECORD_H
#include "buf.h"
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

#define HP_FRAME_MAGIC 0x52465048u /* "HPFR" */
#define HP_FRAME_HDR 40u
#define HP_FRAME_FLAG_DEFLATE 0x0001u
#define HP_FRAME_FLAGS_KNOWN HP_FRAME_FLAG_DEFLATE
#define HP_REC_PREFIX 4u
/* The writer closes a frame once its raw body reaches this size; a single
 * larger record gets a frame of its own. */
#define HP_FRAME_TARGET (128u * 1024u)

typedef struct hp_frame_hdr {
    uint32_t stored_len; /* body bytes on disk */
    uint64_t first_seq;
    uint64_t ts_ms;
    uint32_t count;
    uint32_t raw_len; /* body bytes after inflating */
    uint16_t flags;
} hp_frame_hdr;

/* The sequence space (FORMAT.md §1): every record's seq is below this, so a
 * position (one past a seq) is at most this and no arithmetic on seqs can
 * wrap. A writer refuses to go past it (HOPPER_EEXHAUSTED); a reader treats a
 * frame, an index run or a checkpoint position beyond it as damaged. */
#define HP_SEQ_LIMIT (UINT64_C(1) << 63)

/* The format-wide record limit (FORMAT.md §3.4): no record is larger, whatever
 * max_record_bytes a queue was opened with (that option only limits what
 * hopper_send accepts). */
#define HP_RECORD_MAX (256u << 20)

/* Largest raw body a reader must accept for records of at most max_record:
 * the writer adds records while the body is below its target (at most
 * HP_FRAME_TARGET), so the last one may bring it to target - 1 + one record. */
static inline uint64_t
hp_frame_max_raw(uint32_t max_record)
{
    return (uint64_t)HP_FRAME_TARGET + max_record + HP_REC_PREFIX;
}

/* What every reader of stored frames accepts: the bound for records of the
 * format-wide limit, so that data written under a larger max_record_bytes is
 * never judged damaged by a queue reopened with a smaller one. */
#define HP_FRAME_MAX_RAW ((uint64_t)HP_FRAME_TARGET + HP_RECORD_MAX + HP_REC_PREFIX)

struct libdeflate_compressor;
struct libdeflate_decompressor;

/* Compressor context, reused across frames (never one per record). Raw
 * DEFLATE (RFC 1951) through libdeflate: same format as zlib's, about twice
 * as fast to decode. */
typedef struct hp_encoder {
    struct libdeflate_compressor *c; /* NULL when level is 0 */
    int level;                       /* 0 = store only */
} hp_encoder;

HP_MUST_USE int hp_enc_init(hp_encoder *e, int level);
void hp_enc_free(hp_encoder *e);

/* Append one frame (header + body) holding the `count` records laid out in
 * raw[0..raw_len) to `out`. The body is deflated when that makes it smaller,
 * stored raw otherwise, so stored_len <= raw_len always.
 * Returns 0, -ENOMEM or -EINVAL (count/raw_len out of range, or seqs past
 * HP_SEQ_LIMIT). */
HP_MUST_USE int hp_rec_encode(hp_encoder *e, const uint8_t *raw, size_t raw_len,
                              uint64_t first_seq, uint32_t count, uint64_t ts_ms, hp_buf *out);

/* Parse and sanity-check a frame header (no CRC: the body is not needed).
 * Returns 0, HOPPER_ENEEDMORE (n < HP_FRAME_HDR) or HOPPER_ECORRUPT. */
HP_MUST_USE int hp_rec_parse_header(const uint8_t *p, size_t n, uint64_t max_raw,
                                    hp_frame_hdr *h);

/* Check the CRC of a whole frame p[0 .. HP_FRAME_HDR + h->stored_len).
 * Returns 0, HOPPER_ENEEDMORE or HOPPER_ECORRUPT. */
HP_MUST_USE int hp_rec_check(const uint8_t *p, size_t n, const hp_frame_hdr *h);

/* Inflater context for the reader. */
typedef struct hp_decoder {
    struct libdeflate_decompressor *d;
} hp_decoder;

HP_MUST_USE int hp_dec_init(hp_decoder *d);
void hp_dec_free(hp_decoder *d);

/* Decode a whole frame from p[0..n): header check, CRC, inflate into `raw`
 * (replacing its content), record layout check. *used is set to the frame's
 * size on success. Never allocates more than max_raw for the body.
 * Returns 0, HOPPER_ENEEDMORE, HOPPER_ECORRUPT, HOPPER_EVERSION (unknown
 * flags on a frame whose CRC is valid) or -ENOMEM. */
HP_MUST_USE int hp_rec_decode(hp_decoder *d, const uint8_t *p, size_t n, uint64_t max_raw,
                              hp_frame_hdr *h, hp_buf *raw, size_t *used);

/* Walk the records of a decoded body: on success *rec and *len describe the
 * record at *pos and *pos moves past it. Returns 0, HOPPER_ECORRUPT at a bad
 * length, or 1 at the end. */
HP_MUST_USE int hp_rec_next(const uint8_t *raw, size_t raw_len, size_t *pos,
                            const uint8_t **rec, size_t *len);

#endif
