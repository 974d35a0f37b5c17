/* SPDX-License-Identifier: MIT */
/* Target functions: hp_rec_parse_header hp_rec_check hp_rec_decode hp_rec_next
 *                   (and hp_rec_encode for the re-encoding check)
 * Property: on arbitrary bytes the frame decoder never crashes, returns only
 * 0, HOPPER_ENEEDMORE, HOPPER_ECORRUPT or HOPPER_EVERSION (decode may also
 * return -ENOMEM), and never reserves more than 2 * max_raw + 256 bytes for a
 * body (max_raw = the declared maximum, doubling growth of hp_buf). A decoded
 * frame agrees with its header, every strict prefix of it is
 * HOPPER_ENEEDMORE, its records tile the body exactly (hp_rec_next), and it
 * re-encodes (hp_rec_encode at the same level class: 0 for a stored frame,
 * 1..9 for a deflated one) into a frame that decodes to the same records; a
 * stored frame re-encodes byte for byte. hp_rec_next on arbitrary bytes
 * never reads out of bounds and always makes progress.
 *
 * Input: when it starts with the frame magic "HPFR" the whole input is a
 * frame stream decoded with max_record_bytes = 16 MiB (so raw frames and
 * tests/data/bad files replay as is). Otherwise byte 0 selects
 * max_record_bytes (bits 0-1: 64, 4096, 65536, 16 MiB) and the rest is the
 * frame stream. Frames are decoded back to back; after a failure the decoder
 * is retried one byte further (at most 64 full decodes per input). */
#include "fuzz_common.h"

#include "buf.h"
#include "record.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DECODES 64

static int
decode_rc_ok(int rc)
{
    return rc == 0 || rc == HOPPER_ENEEDMORE || rc == HOPPER_ECORRUPT || rc == HOPPER_EVERSION ||
           rc == -ENOMEM;
}

/* Walk the records of a decoded body; return how many, abort on nonsense. */
static uint64_t
walk_records(const uint8_t *raw, size_t raw_len, int must_tile)
{
    size_t pos = 0;
    uint64_t n = 0;
    for (;;) {
        const uint8_t *rec = NULL;
        size_t len = 0;
        size_t before = pos;
        int rc = hp_rec_next(raw, raw_len, &pos, &rec, &len);
        FZ_CHECK(rc == 0 || rc == 1 || rc == HOPPER_ECORRUPT, "hp_rec_next rc %d", rc);
        if (rc == 1) {
            FZ_CHECK(before >= raw_len && pos == before, "end reported at %zu of %zu", before,
                     raw_len);
            return n;
        }
        if (rc == HOPPER_ECORRUPT) {
            FZ_CHECK(!must_tile, "decoded body does not tile at %zu of %zu", before, raw_len);
            FZ_CHECK(pos == before, "pos moved on error");
            return n;
        }
        FZ_CHECK(pos > before && pos <= raw_len, "pos %zu -> %zu of %zu", before, pos, raw_len);
        FZ_CHECK(rec == raw + before + HP_REC_PREFIX, "record pointer off");
        FZ_CHECK(len == pos - before - HP_REC_PREFIX, "record length %zu", len);
        n++;
    }
}

static void
same_header(const hp_frame_hdr *a, const hp_frame_hdr *b)
{
    FZ_CHECK(a->first_seq == b->first_seq && a->ts_ms == b->ts_ms && a->count == b->count &&
                 a->raw_len == b->raw_len,
             "header fields differ (seq %llu/%llu count %u/%u raw %u/%u)",
             (unsigned long long)a->first_seq, (unsigned long long)b->first_seq, a->count,
             b->count, a->raw_len, b->raw_len);
}

/* A frame decoded at p[0..used): check it, and re-encode it. */
static void
check_decoded(hp_decoder *dec, const uint8_t *p, size_t used, uint64_t max_raw,
              const hp_frame_hdr *h, const hp_buf *raw)
{
    FZ_CHECK(used == HP_FRAME_HDR + (size_t)h->stored_len, "used %zu stored %u", used,
             h->stored_len);
    FZ_CHECK(raw->len == h->raw_len, "raw len %zu != %u", raw->len, h->raw_len);
    FZ_CHECK(h->stored_len <= h->raw_len && h->raw_len <= max_raw, "sizes");
    FZ_CHECK((h->flags & ~HP_FRAME_FLAGS_KNOWN) == 0, "unknown flags accepted");
    FZ_CHECK((uint64_t)raw->cap <= 2 * max_raw + 256, "body buffer %zu for max_raw %llu",
             raw->cap, (unsigned long long)max_raw);
    FZ_CHECK(walk_records(raw->data, raw->len, 1) == h->count, "record count != header");

    /* Every strict prefix needs more bytes (spot checks: header, body). */
    hp_buf scratch = {0};
    hp_frame_hdr h2;
    size_t used2;
    size_t cuts[3] = {used - 1, used > HP_FRAME_HDR ? HP_FRAME_HDR : 0, HP_FRAME_HDR - 1};
    for (int i = 0; i < 3; i++) {
        if (cuts[i] >= used) {
            continue;
        }
        int rc = hp_rec_decode(dec, p, cuts[i], max_raw, &h2, &scratch, &used2);
        FZ_CHECK(rc == HOPPER_ENEEDMORE, "prefix %zu of %zu: rc %d", cuts[i], used, rc);
        FZ_CHECK(used2 == 0, "used set on failure");
    }

    /* Re-encode at the same level class and decode again. */
    int deflated = (h->flags & HP_FRAME_FLAG_DEFLATE) != 0;
    int level = deflated ? 1 + (int)(h->first_seq % 9) : 0;
    hp_encoder enc;
    int rc = hp_enc_init(&enc, level);
    if (rc == -ENOMEM) {
        hp_buf_free(&scratch);
        return;
    }
    FZ_CHECK(rc == 0, "hp_enc_init(%d) rc %d", level, rc);
    hp_buf out = {0};
    rc = hp_rec_encode(&enc, raw->data, raw->len, h->first_seq, h->count, h->ts_ms, &out);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "re-encode rc %d", rc);
    if (rc == 0) {
        if (!deflated) {
            FZ_CHECK(out.len == used && memcmp(out.data, p, used) == 0,
                     "stored frame does not re-encode byte for byte");
        }
        rc = hp_rec_decode(dec, out.data, out.len, max_raw, &h2, &scratch, &used2);
        FZ_CHECK(rc == 0 || rc == -ENOMEM, "re-encoded frame does not decode: rc %d", rc);
        if (rc == 0) {
            FZ_CHECK(used2 == out.len, "re-encoded frame size");
            same_header(h, &h2);
            FZ_CHECK(level != 0 || h2.flags == 0, "level 0 produced flags %u", h2.flags);
            FZ_CHECK(scratch.len == raw->len &&
                         (raw->len == 0 || memcmp(scratch.data, raw->data, raw->len) == 0),
                     "re-encoded frame decodes to different records");
        }
    }
    hp_buf_free(&out);
    hp_enc_free(&enc);
    hp_buf_free(&scratch);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static const uint32_t max_records[4] = {64u, 4096u, 65536u, 16u << 20};
    uint32_t max_record;
    const uint8_t *p;
    size_t n;
    if (size >= 4 && hp_get_u32(data) == HP_FRAME_MAGIC) {
        max_record = 16u << 20;
        p = data;
        n = size;
    } else {
        max_record = max_records[data[0] & 3u];
        p = data + 1;
        n = size - 1;
    }
    uint64_t max_raw = hp_frame_max_raw(max_record);

    /* hp_rec_next over the raw bytes, as if they were a decoded body. */
    (void)walk_records(p, n, 0);

    hp_decoder dec;
    int rc = hp_dec_init(&dec);
    if (rc == -ENOMEM) {
        return 0;
    }
    FZ_CHECK(rc == 0, "hp_dec_init rc %d", rc);
    hp_buf raw = {0};
    size_t off = 0;
    int decodes = 0;
    while (off < n && decodes < MAX_DECODES) {
        const uint8_t *f = p + off;
        size_t left = n - off;
        hp_frame_hdr h;
        rc = hp_rec_parse_header(f, left, max_raw, &h);
        FZ_CHECK(rc == 0 || rc == HOPPER_ENEEDMORE || rc == HOPPER_ECORRUPT,
                 "parse_header rc %d", rc);
        FZ_CHECK(rc != HOPPER_ENEEDMORE || left < HP_FRAME_HDR, "ENEEDMORE with %zu bytes",
                 left);
        if (rc == HOPPER_ENEEDMORE) {
            break;
        }
        if (rc != 0) {
            off++;
            continue;
        }
        decodes++;
        int crc_rc = hp_rec_check(f, left, &h);
        FZ_CHECK(crc_rc == 0 || crc_rc == HOPPER_ENEEDMORE || crc_rc == HOPPER_ECORRUPT,
                 "hp_rec_check rc %d", crc_rc);
        FZ_CHECK((crc_rc == HOPPER_ENEEDMORE) == (left - HP_FRAME_HDR < h.stored_len),
                 "hp_rec_check ENEEDMORE disagrees with stored_len");
        hp_frame_hdr h2;
        size_t used = 1234;
        rc = hp_rec_decode(&dec, f, left, max_raw, &h2, &raw, &used);
        FZ_CHECK(decode_rc_ok(rc), "hp_rec_decode rc %d", rc);
        FZ_CHECK(rc == 0 || used == 0, "used %zu set on failure", used);
        FZ_CHECK((uint64_t)raw.cap <= 2 * max_raw + 256, "body buffer %zu for max_raw %llu",
                 raw.cap, (unsigned long long)max_raw);
        if (crc_rc != 0) {
            FZ_CHECK(rc == crc_rc, "decode rc %d but CRC check rc %d", rc, crc_rc);
        }
        if (rc == HOPPER_EVERSION) {
            FZ_CHECK(crc_rc == 0 && (h.flags & ~HP_FRAME_FLAGS_KNOWN) != 0,
                     "EVERSION without unknown flags on a CRC-valid frame");
        }
        if (rc == 0) {
            same_header(&h, &h2);
            FZ_CHECK(h.flags == h2.flags && h.stored_len == h2.stored_len, "flags/stored differ");
            FZ_CHECK(used <= left, "used %zu > %zu", used, left);
            check_decoded(&dec, f, used, max_raw, &h2, &raw);
            off += used;
        } else {
            off++;
        }
    }
    hp_buf_free(&raw);
    hp_dec_free(&dec);
    return 0;
}
