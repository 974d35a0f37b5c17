/* SPDX-License-Identifier: MIT */
/* Target functions: hp_enc_init hp_rec_encode hp_rec_decode hp_rec_next
 * Property (zstd simple_round_trip): records split from the input, encoded
 * into one frame at every compression level 0..9, decode (hp_rec_decode with
 * the queue's max_raw for the largest record) to exactly the same records,
 * first_seq, timestamp and count; stored_len <= raw_len; level 0 never sets
 * the deflate flag; encoding the same records twice with one (reused)
 * encoder gives identical bytes; frames appended back to back into one
 * buffer decode one after the other.
 *
 * Input: bytes 0-7 first_seq and 8-15 timestamp (little-endian; inputs
 * shorter than 16 bytes use 0), then records: one length byte L (L < 0x80:
 * length L; otherwise ((L & 0x7f) << 8 | next byte)), followed by that many
 * payload bytes (fewer at the end of the input). Like the writer, the frame
 * is closed once its body reaches HP_FRAME_TARGET; the rest is ignored.
 * first_seq is clamped so that first_seq + count stays within the sequence
 * space, HP_SEQ_LIMIT (a frame the writer can produce). */
#include "fuzz_common.h"

#include "buf.h"
#include "record.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct rec_ref {
    const uint8_t *p;
    size_t len;
} rec_ref;

/* Decode the frame at p[0..n) and compare it with the records. Returns its size. */
static size_t
check_frame(hp_decoder *dec, const uint8_t *p, size_t n, uint64_t max_raw, int level,
            uint64_t first_seq, uint64_t ts, const rec_ref *recs, uint32_t count,
            const hp_buf *raw_in)
{
    hp_frame_hdr h;
    hp_buf raw = {0};
    size_t used = 0;
    int rc = hp_rec_decode(dec, p, n, max_raw, &h, &raw, &used);
    if (rc == -ENOMEM) {
        hp_buf_free(&raw);
        return 0;
    }
    FZ_CHECK(rc == 0, "level %d: decode rc %d", level, rc);
    FZ_CHECK(used >= HP_FRAME_HDR && used <= n, "level %d: used %zu of %zu", level, used, n);
    FZ_CHECK(h.first_seq == first_seq && h.ts_ms == ts && h.count == count,
             "level %d: header fields", level);
    FZ_CHECK(h.raw_len == raw_in->len && h.stored_len <= h.raw_len, "level %d: sizes %u/%u",
             level, h.stored_len, h.raw_len);
    FZ_CHECK(level != 0 || h.flags == 0, "level 0 set flags %u", h.flags);
    FZ_CHECK(h.flags != 0 || h.stored_len == h.raw_len, "stored frame with stored != raw");
    FZ_CHECK(raw.len == raw_in->len &&
                 (raw.len == 0 || memcmp(raw.data, raw_in->data, raw.len) == 0),
             "level %d: body differs", level);
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *rp = NULL;
        size_t len = 0;
        rc = hp_rec_next(raw.data, raw.len, &pos, &rp, &len);
        FZ_CHECK(rc == 0, "level %d: record %u: rc %d", level, i, rc);
        FZ_CHECK(len == recs[i].len && (len == 0 || memcmp(rp, recs[i].p, len) == 0),
                 "level %d: record %u differs", level, i);
    }
    const uint8_t *rp = NULL;
    size_t len = 0;
    FZ_CHECK(hp_rec_next(raw.data, raw.len, &pos, &rp, &len) == 1, "level %d: extra records",
             level);
    hp_buf_free(&raw);
    return used;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FZ_MAX_INPUT) {
        return 0;
    }
    uint64_t first_seq = size >= 16 ? hp_get_u64(data) : 0;
    uint64_t ts = size >= 16 ? hp_get_u64(data + 8) : 0;
    size_t pos = size >= 16 ? 16 : 0;

    rec_ref *recs = NULL;
    uint32_t count = 0;
    size_t cap = 0;
    hp_buf raw = {0};
    size_t max_len = 0;
    int rc = 0;
    while (pos < size && raw.len < HP_FRAME_TARGET) {
        size_t len = data[pos++];
        if (len >= 0x80) {
            len = (len & 0x7fu) << 8;
            if (pos < size) {
                len |= data[pos++];
            }
        }
        if (len > size - pos) {
            len = size - pos;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            rec_ref *nv = realloc(recs, ncap * sizeof(*recs));
            if (nv == NULL) {
                goto out;
            }
            recs = nv;
            cap = ncap;
        }
        recs[count].p = data + pos;
        recs[count].len = len;
        count++;
        uint8_t pre[HP_REC_PREFIX];
        hp_put_u32(pre, (uint32_t)len);
        if (hp_buf_append(&raw, pre, sizeof(pre)) < 0 || hp_buf_append(&raw, data + pos, len) < 0) {
            goto out;
        }
        if (len > max_len) {
            max_len = len;
        }
        pos += len;
    }
    if (first_seq > HP_SEQ_LIMIT - count) {
        first_seq = HP_SEQ_LIMIT - count;
    }
    uint64_t max_raw = hp_frame_max_raw((uint32_t)max_len);

    hp_decoder dec;
    rc = hp_dec_init(&dec);
    if (rc == -ENOMEM) {
        goto out;
    }
    FZ_CHECK(rc == 0, "hp_dec_init rc %d", rc);
    hp_buf all = {0};
    size_t starts[10];
    for (int level = 0; level <= 9; level++) {
        hp_encoder enc;
        rc = hp_enc_init(&enc, level);
        if (rc == -ENOMEM) {
            break;
        }
        FZ_CHECK(rc == 0, "hp_enc_init(%d) rc %d", level, rc);
        hp_buf a = {0};
        hp_buf b = {0};
        rc = hp_rec_encode(&enc, raw.data, raw.len, first_seq, count, ts, &a);
        FZ_CHECK(rc == 0 || rc == -ENOMEM, "level %d: encode rc %d", level, rc);
        int rc2 = rc == 0 ? hp_rec_encode(&enc, raw.data, raw.len, first_seq, count, ts, &b) : rc;
        FZ_CHECK(rc2 == 0 || rc2 == -ENOMEM, "level %d: second encode rc %d", level, rc2);
        if (rc == 0 && rc2 == 0) {
            FZ_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0,
                     "level %d: encoding is not deterministic", level);
            FZ_CHECK(a.len <= HP_FRAME_HDR + raw.len, "level %d: frame larger than 40 + raw",
                     level);
            size_t used = check_frame(&dec, a.data, a.len, max_raw, level, first_seq, ts, recs,
                                      count, &raw);
            FZ_CHECK(used == 0 || used == a.len, "level %d: used %zu of %zu", level, used, a.len);
            /* Append to the shared buffer (encode appends after existing bytes). */
            starts[level] = all.len;
            rc = hp_rec_encode(&enc, raw.data, raw.len, first_seq, count, ts, &all);
            FZ_CHECK(rc == 0 || rc == -ENOMEM, "level %d: append encode rc %d", level, rc);
            if (rc == 0) {
                FZ_CHECK(all.len - starts[level] == a.len &&
                             memcmp(all.data + starts[level], a.data, a.len) == 0,
                         "level %d: appended frame differs", level);
            }
        }
        hp_buf_free(&a);
        hp_buf_free(&b);
        hp_enc_free(&enc);
        if (rc < 0) {
            break;
        }
        if (level == 9) {
            /* Decode the ten frames back to back. */
            size_t off = 0;
            for (int l = 0; l <= 9 && off < all.len; l++) {
                FZ_CHECK(off == starts[l], "frame %d starts at %zu, expected %zu", l, off,
                         starts[l]);
                size_t used = check_frame(&dec, all.data + off, all.len - off, max_raw, l,
                                          first_seq, ts, recs, count, &raw);
                if (used == 0) {
                    break;
                }
                off += used;
            }
        }
    }
    hp_buf_free(&all);
    hp_dec_free(&dec);
out:
    hp_buf_free(&raw);
    free(recs);
    return 0;
}
