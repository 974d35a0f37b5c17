/* SPDX-License-Identifier: MIT */
/* Frame codec (record.h, FORMAT.md §3): round trips at every compression
 * level, raw vs deflated storage, and adversarial frames (bad magic, CRC,
 * truncation, lengths beyond the maximum, reserved bits, unknown flags,
 * garbage deflate bodies, inconsistent counts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crc32c.h"
#include "hp_test.h"
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_REC_DEFAULT (16u << 20)

typedef struct rec {
    const uint8_t *p;
    size_t len;
} rec;

/* Build a body: count x (u32 len, bytes). */
static void
body_build(hp_buf *b, const rec *r, size_t n)
{
    b->len = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t pre[4];
        hp_put_u32(pre, (uint32_t)r[i].len);
        assert_int_equal(hp_buf_append(b, pre, 4), 0);
        assert_int_equal(hp_buf_append(b, r[i].p, r[i].len), 0);
    }
}

/* Write a frame with arbitrary header fields and a correct CRC over the
 * 36 header bytes and `body_len` body bytes. Returns the frame size. */
static size_t
craft(uint8_t *out, uint32_t magic, uint32_t stored_len, uint64_t first_seq, uint32_t count,
      uint32_t raw_len, uint16_t flags, uint16_t reserved, const void *body, size_t body_len)
{
    hp_put_u32(out + 0, magic);
    hp_put_u32(out + 4, stored_len);
    hp_put_u64(out + 8, first_seq);
    hp_put_u64(out + 16, 1700000000000ull);
    hp_put_u32(out + 24, count);
    hp_put_u32(out + 28, raw_len);
    hp_put_u16(out + 32, flags);
    hp_put_u16(out + 34, reserved);
    if (body_len > 0) {
        memcpy(out + HP_FRAME_HDR, body, body_len);
    }
    uint32_t crc = hp_crc32c_extend(0, out, 36);
    crc = hp_crc32c_extend(crc, out + HP_FRAME_HDR, body_len);
    hp_put_u32(out + 36, crc);
    return HP_FRAME_HDR + body_len;
}

/* Independent raw-deflate of `in` (the test's own zlib use). */
static size_t
zdeflate(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t got = cap - zs.avail_out;
    deflateEnd(&zs);
    return got;
}

/* Independent raw-inflate; returns the inflated size or (size_t)-1. */
static size_t
zinflate(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, -15), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int zrc = inflate(&zs, Z_FINISH);
    size_t got = cap - zs.avail_out;
    inflateEnd(&zs);
    return zrc == Z_STREAM_END ? got : (size_t)-1;
}

static void
fill_random(uint8_t *p, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)hp_test_rand(rng);
    }
}

static void
fill_text(uint8_t *p, size_t n, uint64_t salt)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog; hopper queue ";
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)words[(i + salt) % (sizeof(words) - 1)];
    }
}

/* Decode `frame` and compare with the records r[0..n). */
static void
expect_roundtrip(const hp_buf *frame, uint64_t first_seq, const rec *r, size_t n)
{
    hp_decoder d;
    assert_int_equal(hp_dec_init(&d), 0);
    hp_buf raw = {0};
    hp_frame_hdr h;
    size_t used = 0;
    int rc = hp_rec_decode(&d, frame->data, frame->len, hp_frame_max_raw(MAX_REC_DEFAULT), &h,
                           &raw, &used);
    assert_int_equal(rc, 0);
    assert_int_equal(used, frame->len);
    assert_int_equal(h.first_seq, first_seq);
    assert_int_equal(h.count, n);
    assert_int_equal(HP_FRAME_HDR + h.stored_len, frame->len);
    assert_true(h.stored_len <= h.raw_len);
    size_t raw_expect = 0;
    for (size_t i = 0; i < n; i++) {
        raw_expect += 4 + r[i].len;
    }
    assert_int_equal(h.raw_len, raw_expect);
    assert_int_equal(raw.len, raw_expect);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = NULL;
        size_t len = 0;
        assert_int_equal(hp_rec_next(raw.data, raw.len, &pos, &p, &len), 0);
        assert_int_equal(len, r[i].len);
        if (len > 0) {
            assert_memory_equal(p, r[i].p, len);
        }
    }
    assert_int_equal(hp_rec_next(raw.data, raw.len, &pos, &(const uint8_t *){NULL},
                                 &(size_t){0}),
                     1);
    hp_buf_free(&raw);
    hp_dec_free(&d);
}

static void
encode_one(int level, const rec *r, size_t n, uint64_t first_seq, hp_buf *frame)
{
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, level), 0);
    hp_buf body = {0};
    body_build(&body, r, n);
    frame->len = 0;
    assert_int_equal(hp_rec_encode(&e, body.data, body.len, first_seq, (uint32_t)n,
                                   1700000000123ull, frame),
                     0);
    hp_enc_free(&e);
    hp_buf_free(&body);
}

/* ---- happy path -------------------------------------------------------- */

static void
test_roundtrip_all_levels(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_roundtrip_all_levels");
    enum { MANY = 500 };
    uint8_t *store = malloc(MANY * 300);
    assert_non_null(store);
    rec many[MANY];
    for (size_t i = 0; i < MANY; i++) {
        size_t len = (size_t)(hp_test_rand(&rng) % 301);
        uint8_t *p = store + i * 300;
        if (i % 3 == 0) {
            fill_random(p, len, &rng);
        } else {
            fill_text(p, len, i);
        }
        many[i] = (rec){p, len};
    }
    rec empties[10];
    for (size_t i = 0; i < 10; i++) {
        empties[i] = (rec){NULL, 0};
    }
    uint8_t one_buf[1000];
    fill_text(one_buf, sizeof(one_buf), 7);
    rec one = {one_buf, sizeof(one_buf)};
    rec zero = {NULL, 0};
    hp_buf frame = {0};
    for (int level = 0; level <= 9; level++) {
        /* zero records: an empty body */
        encode_one(level, NULL, 0, 42, &frame);
        assert_int_equal(frame.len, HP_FRAME_HDR);
        expect_roundtrip(&frame, 42, NULL, 0);
        /* one record */
        encode_one(level, &one, 1, 7, &frame);
        expect_roundtrip(&frame, 7, &one, 1);
        /* one empty record */
        encode_one(level, &zero, 1, 0, &frame);
        assert_int_equal(frame.len, HP_FRAME_HDR + 4);
        expect_roundtrip(&frame, 0, &zero, 1);
        /* several empty records */
        encode_one(level, empties, 10, 1000, &frame);
        expect_roundtrip(&frame, 1000, empties, 10);
        /* many mixed records */
        /* ... ending exactly at the end of the sequence space */
        encode_one(level, many, MANY, HP_SEQ_LIMIT - MANY, &frame);
        expect_roundtrip(&frame, HP_SEQ_LIMIT - MANY, many, MANY);
    }
    hp_buf_free(&frame);
    free(store);
}

static void
test_incompressible_stored_raw(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_incompressible_stored_raw");
    static uint8_t payload[10000];
    fill_random(payload, sizeof(payload), &rng);
    rec r = {payload, sizeof(payload)};
    hp_buf frame = {0};
    for (int level = 0; level <= 9; level++) {
        encode_one(level, &r, 1, 5, &frame);
        hp_frame_hdr h;
        assert_int_equal(hp_rec_parse_header(frame.data, frame.len, UINT32_MAX, &h), 0);
        assert_int_equal(h.flags, 0);
        assert_int_equal(h.stored_len, h.raw_len);
        assert_int_equal(h.raw_len, 4 + sizeof(payload));
        /* Stored raw: the body on disk is the raw layout itself. */
        assert_int_equal(hp_get_u32(frame.data + HP_FRAME_HDR), sizeof(payload));
        assert_memory_equal(frame.data + HP_FRAME_HDR + 4, payload, sizeof(payload));
        expect_roundtrip(&frame, 5, &r, 1);
    }
    hp_buf_free(&frame);
}

static void
test_compressible_deflated(void **state)
{
    (void)state;
    static uint8_t payload[20000];
    static uint8_t check[20000 + 8];
    fill_text(payload, sizeof(payload), 3);
    rec r[2] = {{payload, sizeof(payload) / 2}, {payload + 10000, sizeof(payload) / 2}};
    hp_buf frame = {0};
    for (int level = 0; level <= 9; level++) {
        encode_one(level, r, 2, 9, &frame);
        hp_frame_hdr h;
        assert_int_equal(hp_rec_parse_header(frame.data, frame.len, UINT32_MAX, &h), 0);
        assert_int_equal(h.raw_len, sizeof(payload) + 8);
        if (level == 0) {
            assert_int_equal(h.flags, 0); /* compression off: always raw */
            assert_int_equal(h.stored_len, h.raw_len);
        } else {
            assert_int_equal(h.flags, HP_FRAME_FLAG_DEFLATE);
            assert_true(h.stored_len < h.raw_len / 4);
            /* The body is one raw DEFLATE stream (FORMAT.md §3.3), checked
             * with zlib directly rather than with our decoder. */
            size_t got = zinflate(frame.data + HP_FRAME_HDR, h.stored_len, check,
                                  sizeof(check));
            assert_int_equal(got, h.raw_len);
            assert_memory_equal(check + 4, payload, 10000);
        }
        expect_roundtrip(&frame, 9, r, 2);
    }
    hp_buf_free(&frame);
}

/* One encoder reused for many frames, compressible and not, back to back in
 * one buffer; each decodes, and *used walks from one frame to the next. */
static void
test_encoder_reuse_and_back_to_back(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_encoder_reuse_and_back_to_back");
    enum { FRAMES = 60 };
    static uint8_t payload[FRAMES][3000];
    size_t lens[FRAMES];
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, 1), 0);
    hp_buf all = {0};
    hp_buf body = {0};
    for (size_t i = 0; i < FRAMES; i++) {
        lens[i] = (size_t)(hp_test_rand(&rng) % 3000);
        if (i % 2) {
            fill_random(payload[i], lens[i], &rng);
        } else {
            fill_text(payload[i], lens[i], i);
        }
        rec r = {payload[i], lens[i]};
        body_build(&body, &r, 1);
        assert_int_equal(hp_rec_encode(&e, body.data, body.len, 100 + i, 1, 1, &all), 0);
    }
    hp_enc_free(&e);
    hp_decoder d;
    assert_int_equal(hp_dec_init(&d), 0);
    hp_buf raw = {0};
    size_t off = 0;
    for (size_t i = 0; i < FRAMES; i++) {
        hp_frame_hdr h;
        size_t used = 0;
        assert_int_equal(hp_rec_decode(&d, all.data + off, all.len - off,
                                       hp_frame_max_raw(MAX_REC_DEFAULT), &h, &raw, &used),
                         0);
        assert_int_equal(h.first_seq, 100 + i);
        assert_int_equal(raw.len, 4 + lens[i]);
        assert_memory_equal(raw.data + 4, payload[i], lens[i]);
        off += used;
    }
    assert_int_equal(off, all.len);
    hp_buf_free(&raw);
    hp_buf_free(&body);
    hp_buf_free(&all);
    hp_dec_free(&d);
}

static void
test_encode_rejects_bad_arguments(void **state)
{
    (void)state;
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, -1), -EINVAL);
    assert_int_equal(hp_enc_init(&e, 10), -EINVAL);
    assert_int_equal(hp_enc_init(&e, 0), 0);
    hp_buf out = {0};
    uint8_t raw[8] = {0};
    /* 3 records cannot fit in 8 bytes of body */
    assert_int_equal(hp_rec_encode(&e, raw, sizeof(raw), 0, 3, 0, &out), -EINVAL);
    assert_int_equal(out.len, 0);
    hp_enc_free(&e);
    hp_buf_free(&out);
}

/* ---- adversarial ------------------------------------------------------ */

static const uint64_t MAXRAW = 128u * 1024u + MAX_REC_DEFAULT + 4u;

static int
decode(const uint8_t *p, size_t n, uint64_t max_raw, hp_frame_hdr *h, hp_buf *raw)
{
    hp_decoder d;
    assert_int_equal(hp_dec_init(&d), 0);
    size_t used = 12345;
    int rc = hp_rec_decode(&d, p, n, max_raw, h, raw, &used);
    hp_dec_free(&d);
    if (rc != 0) {
        assert_int_equal(used, 0);
    }
    return rc;
}

static void
test_max_raw_formula(void **state)
{
    (void)state;
    /* FORMAT.md §3.4: max_raw = 128 KiB + max_record + 4 */
    assert_int_equal(hp_frame_max_raw(MAX_REC_DEFAULT), MAXRAW);
    assert_int_equal(hp_frame_max_raw(0), 128u * 1024u + 4u);
    assert_int_equal(hp_frame_max_raw(100), 128u * 1024u + 104u);
    assert_true(hp_frame_max_raw(256u << 20) >= (256u << 20) + 4u);
}

/* The writer closes a frame once its body reaches HP_FRAME_TARGET, so the
 * largest body it can write is (HP_FRAME_TARGET - 1) bytes of small records
 * followed by one record of max_record bytes. A reader configured with the
 * same max_record must accept that frame (else it discards good data as
 * corrupt at the next open). */
static void
test_writer_worst_case_frame_accepted(void **state)
{
    (void)state;
    const uint32_t maxes[] = {1000, 128u * 1024u, 200000, 1u << 20};
    for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
        uint32_t max_rec = maxes[m];
        size_t first = HP_FRAME_TARGET - 1 - HP_REC_PREFIX; /* body 1 byte short of target */
        size_t raw_len = first + HP_REC_PREFIX + max_rec + HP_REC_PREFIX;
        uint8_t *body = calloc(1, raw_len);
        assert_non_null(body);
        hp_put_u32(body, (uint32_t)first);
        hp_put_u32(body + HP_REC_PREFIX + first, max_rec);
        hp_encoder e;
        assert_int_equal(hp_enc_init(&e, 0), 0);
        hp_buf frame = {0};
        assert_int_equal(hp_rec_encode(&e, body, raw_len, 0, 2, 0, &frame), 0);
        hp_enc_free(&e);
        hp_frame_hdr h;
        hp_buf raw = {0};
        int rc = decode(frame.data, frame.len, hp_frame_max_raw(max_rec), &h, &raw);
        if (rc != 0) {
            print_error("max_record %u: frame of raw_len %zu refused (max_raw %llu): rc %d\n",
                        max_rec, raw_len, (unsigned long long)hp_frame_max_raw(max_rec), rc);
        }
        assert_int_equal(rc, 0);
        hp_buf_free(&raw);
        hp_buf_free(&frame);
        free(body);
    }
}

static void
test_bad_magic(void **state)
{
    (void)state;
    uint8_t f[64];
    uint8_t body[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
    size_t n = craft(f, HP_FRAME_MAGIC, 8, 0, 1, 8, 0, 0, body, 8);
    hp_frame_hdr h;
    hp_buf raw = {0};
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0); /* control */
    /* Wrong magic with an otherwise valid frame and CRC. */
    n = craft(f, 0x52465049u, 8, 0, 1, 8, 0, 0, body, 8);
    assert_int_equal(hp_rec_parse_header(f, n, MAXRAW, &h), HOPPER_ECORRUPT);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* The segment magic is not a frame magic. */
    n = craft(f, 0x47455348u, 8, 0, 1, 8, 0, 0, body, 8);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    hp_buf_free(&raw);
}

/* Flip every bit of a small raw frame and of a small deflated frame: the
 * decoder must never succeed. With bytes following the frame (as in a
 * segment) every flip is ECORRUPT; when the buffer ends exactly at the frame,
 * a stored_len made larger can only be told apart from a truncated frame by
 * more bytes, so there (and only there) ENEEDMORE is also right. */
static void
flip_all_bits(const hp_buf *frame)
{
    const size_t pad = 4096;
    uint8_t *copy = calloc(1, frame->len + pad);
    assert_non_null(copy);
    hp_buf raw = {0};
    hp_frame_hdr h;
    assert_int_equal(decode(frame->data, frame->len, MAXRAW, &h, &raw), 0);
    for (size_t i = 0; i < frame->len; i++) {
        for (int bit = 0; bit <= 8; bit++) {
            uint8_t mask = bit == 8 ? 0xff : (uint8_t)(1u << bit);
            memcpy(copy, frame->data, frame->len);
            copy[i] ^= mask;
            int rc = decode(copy, frame->len + pad, MAXRAW, &h, &raw);
            if (rc != HOPPER_ECORRUPT) {
                print_error("flip byte %zu mask %02x (padded): rc %d\n", i, mask, rc);
            }
            assert_int_equal(rc, HOPPER_ECORRUPT);
            rc = decode(copy, frame->len, MAXRAW, &h, &raw);
            int in_stored_len = i >= 4 && i < 8;
            if (rc != HOPPER_ECORRUPT && !(in_stored_len && rc == HOPPER_ENEEDMORE)) {
                print_error("flip byte %zu mask %02x (exact): rc %d\n", i, mask, rc);
                fail();
            }
        }
    }
    hp_buf_free(&raw);
    free(copy);
}

static void
test_bad_crc_every_bit(void **state)
{
    (void)state;
    uint8_t a[5] = {'h', 'e', 'l', 'l', 'o'};
    uint8_t b[70];
    fill_text(b, sizeof(b), 0);
    rec r[3] = {{a, 5}, {NULL, 0}, {b, sizeof(b)}};
    hp_buf frame = {0};
    encode_one(0, r, 3, 77, &frame);
    assert_int_equal(hp_get_u16(frame.data + 32), 0);
    flip_all_bits(&frame);
    encode_one(9, r, 3, 77, &frame);
    assert_int_equal(hp_get_u16(frame.data + 32), HP_FRAME_FLAG_DEFLATE);
    flip_all_bits(&frame);
    hp_buf_free(&frame);
}

static void
test_truncated_needs_more(void **state)
{
    (void)state;
    uint8_t payload[300];
    fill_text(payload, sizeof(payload), 1);
    rec r[2] = {{payload, 100}, {payload + 100, 200}};
    hp_buf frame = {0};
    for (int level = 0; level <= 1; level++) {
        encode_one(level, r, 2, 1, &frame);
        hp_frame_hdr h;
        hp_buf raw = {0};
        for (size_t n = 0; n < frame.len; n++) {
            int rc = decode(frame.data, n, MAXRAW, &h, &raw);
            if (rc != HOPPER_ENEEDMORE) {
                print_error("level %d, %zu of %zu bytes: rc %d\n", level, n, frame.len, rc);
            }
            assert_int_equal(rc, HOPPER_ENEEDMORE);
        }
        for (size_t n = 0; n < HP_FRAME_HDR; n++) {
            assert_int_equal(hp_rec_parse_header(frame.data, n, MAXRAW, &h), HOPPER_ENEEDMORE);
        }
        assert_int_equal(hp_rec_check(frame.data, frame.len - 1, &h), HOPPER_ENEEDMORE);
        assert_int_equal(decode(frame.data, frame.len, MAXRAW, &h, &raw), 0);
        hp_buf_free(&raw);
    }
    hp_buf_free(&frame);
}

/* raw_len beyond the maximum is refused from the header alone, before the
 * body (which is not even there) is looked at or memory reserved for it. */
static void
test_raw_len_above_max(void **state)
{
    (void)state;
    uint8_t f[HP_FRAME_HDR + 16];
    uint8_t body[16] = {0};
    hp_frame_hdr h;
    hp_buf raw = {0};
    const uint64_t max_raw = hp_frame_max_raw(100);
    uint32_t over[] = {(uint32_t)max_raw + 1, (uint32_t)max_raw * 2, UINT32_MAX};
    for (size_t i = 0; i < sizeof(over) / sizeof(over[0]); i++) {
        /* Deflate flag, so stored_len < raw_len is legal; CRC valid. */
        size_t n = craft(f, HP_FRAME_MAGIC, 16, 0, 1, over[i], HP_FRAME_FLAG_DEFLATE, 0, body,
                         16);
        assert_int_equal(hp_rec_parse_header(f, n, max_raw, &h), HOPPER_ECORRUPT);
        assert_int_equal(decode(f, n, max_raw, &h, &raw), HOPPER_ECORRUPT);
        assert_null(raw.data); /* nothing allocated */
        assert_int_equal(raw.cap, 0);
        /* Only the header is present: still ECORRUPT, not "need more". */
        assert_int_equal(decode(f, HP_FRAME_HDR, max_raw, &h, &raw), HOPPER_ECORRUPT);
    }
    /* Exactly at the maximum the header is acceptable. */
    size_t n = craft(f, HP_FRAME_MAGIC, 16, 0, 1, (uint32_t)max_raw, HP_FRAME_FLAG_DEFLATE, 0,
                     body, 16);
    assert_int_equal(hp_rec_parse_header(f, n, max_raw, &h), 0);
    assert_int_equal(h.raw_len, max_raw);
    hp_buf_free(&raw);
}

/* A record of exactly max_record bytes decodes with the matching max_raw and
 * is refused by a reader configured for one byte less. */
static void
test_max_record_boundary(void **state)
{
    (void)state;
    const uint32_t max_rec = 200000;
    uint8_t *p = malloc(max_rec);
    assert_non_null(p);
    uint64_t rng = 99;
    fill_random(p, max_rec, &rng);
    rec r = {p, max_rec};
    hp_buf frame = {0};
    encode_one(1, &r, 1, 3, &frame);
    hp_frame_hdr h;
    hp_buf raw = {0};
    assert_int_equal(decode(frame.data, frame.len, hp_frame_max_raw(max_rec), &h, &raw), 0);
    assert_int_equal(raw.len, max_rec + 4u);
    assert_memory_equal(raw.data + 4, p, max_rec);
    /* max_raw one below the frame's raw_len */
    assert_int_equal(decode(frame.data, frame.len, max_rec + 3u, &h, &raw), HOPPER_ECORRUPT);
    hp_buf_free(&raw);
    hp_buf_free(&frame);
    free(p);
}

static void
test_stored_len_above_raw_len(void **state)
{
    (void)state;
    uint8_t f[HP_FRAME_HDR + 32];
    uint8_t body[32];
    fill_text(body, sizeof(body), 0);
    hp_put_u32(body, 28);
    hp_frame_hdr h;
    hp_buf raw = {0};
    /* deflate flag: stored 32 > raw 28 */
    size_t n = craft(f, HP_FRAME_MAGIC, 32, 0, 1, 28, HP_FRAME_FLAG_DEFLATE, 0, body, 32);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* raw: stored 32 != raw 28 */
    n = craft(f, HP_FRAME_MAGIC, 32, 0, 1, 28, 0, 0, body, 32);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* raw: stored 28 < raw 32 without the deflate flag */
    n = craft(f, HP_FRAME_MAGIC, 28, 0, 1, 32, 0, 0, body, 28);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* control: a correct raw frame of the same bytes */
    n = craft(f, HP_FRAME_MAGIC, 32, 0, 1, 32, 0, 0, body, 32);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0);
    hp_buf_free(&raw);
}

static void
test_reserved_nonzero(void **state)
{
    (void)state;
    uint8_t f[HP_FRAME_HDR + 8];
    uint8_t body[8] = {4, 0, 0, 0, 1, 2, 3, 4};
    hp_frame_hdr h;
    hp_buf raw = {0};
    uint16_t vals[] = {1, 0x100, 0x8000, 0xffff};
    for (size_t i = 0; i < 4; i++) {
        size_t n = craft(f, HP_FRAME_MAGIC, 8, 0, 1, 8, 0, vals[i], body, 8);
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    }
    size_t n = craft(f, HP_FRAME_MAGIC, 8, 0, 1, 8, 0, 0, body, 8);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0);
    hp_buf_free(&raw);
}

static void
test_unknown_flag_valid_crc_is_version(void **state)
{
    (void)state;
    uint8_t f[HP_FRAME_HDR + 8];
    uint8_t body[8] = {4, 0, 0, 0, 1, 2, 3, 4};
    hp_frame_hdr h;
    hp_buf raw = {0};
    for (int bit = 1; bit < 16; bit++) {
        uint16_t flags = (uint16_t)(1u << bit);
        size_t n = craft(f, HP_FRAME_MAGIC, 8, 5, 1, 8, flags, 0, body, 8);
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_EVERSION);
        /* The header itself is sane: a scanner may skip exactly this frame. */
        assert_int_equal(hp_rec_parse_header(f, n, MAXRAW, &h), 0);
        assert_int_equal(hp_rec_check(f, n, &h), 0);
        /* With a bad CRC it is plain damage, not a newer version. */
        f[HP_FRAME_HDR + 5] ^= 1;
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    }
    hp_buf_free(&raw);
}

static void
test_deflate_garbage_valid_crc(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_deflate_garbage_valid_crc");
    uint8_t f[HP_FRAME_HDR + 512];
    uint8_t body[512];
    hp_frame_hdr h;
    hp_buf raw = {0};
    for (int rep = 0; rep < 200; rep++) {
        size_t slen = 1 + (size_t)(hp_test_rand(&rng) % 200);
        fill_random(body, slen, &rng);
        size_t n = craft(f, HP_FRAME_MAGIC, (uint32_t)slen, 0, 1, 400, HP_FRAME_FLAG_DEFLATE, 0,
                         body, slen);
        int rc = decode(f, n, MAXRAW, &h, &raw);
        if (rc != HOPPER_ECORRUPT) {
            print_error("rep %d slen %zu rc %d\n", rep, slen, rc);
        }
        assert_int_equal(rc, HOPPER_ECORRUPT);
    }
    /* Valid deflate streams whose size or end disagree with the header. */
    uint8_t rawb[404];
    hp_put_u32(rawb, 400);
    fill_text(rawb + 4, 400, 5);
    uint8_t z[512];
    size_t zl = zdeflate(rawb, sizeof(rawb), z, sizeof(z));
    assert_true(zl < 404);
    size_t n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl, 0, 1, 404, HP_FRAME_FLAG_DEFLATE, 0, z,
                     zl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0); /* control */
    assert_memory_equal(raw.data, rawb, sizeof(rawb));
    /* inflates to more than raw_len (raw_len claims 403: count 1 still fits) */
    n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl, 0, 1, 403, HP_FRAME_FLAG_DEFLATE, 0, z, zl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* inflates to fewer than raw_len */
    n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl, 0, 1, 405 + 40, HP_FRAME_FLAG_DEFLATE, 0, z, zl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* trailing bytes after the end of the stream */
    memcpy(body, z, zl);
    body[zl] = 0xAA;
    body[zl + 1] = 0x55;
    n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl + 2, 0, 1, 404, HP_FRAME_FLAG_DEFLATE, 0, body,
              zl + 2);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* stream cut short */
    n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl - 3, 0, 1, 404, HP_FRAME_FLAG_DEFLATE, 0, z,
              zl - 3);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    hp_buf_free(&raw);
}

static void
test_count_inconsistent_with_body(void **state)
{
    (void)state;
    /* body: 3 records of 2, 0, 3 bytes */
    uint8_t body[4 + 2 + 4 + 4 + 3] = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z'};
    const uint32_t bl = sizeof(body);
    uint8_t f[HP_FRAME_HDR + 64];
    hp_frame_hdr h;
    hp_buf raw = {0};
    size_t n = craft(f, HP_FRAME_MAGIC, bl, 10, 3, bl, 0, 0, body, bl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0); /* control */
    assert_int_equal(h.count, 3);
    uint32_t bad_counts[] = {0, 1, 2, 4};
    for (size_t i = 0; i < 4; i++) {
        n = craft(f, HP_FRAME_MAGIC, bl, 10, bad_counts[i], bl, 0, 0, body, bl);
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    }
    /* count * 4 > raw_len: refused from the header */
    n = craft(f, HP_FRAME_MAGIC, bl, 10, 5, bl, 0, 0, body, bl);
    assert_int_equal(hp_rec_parse_header(f, n, MAXRAW, &h), HOPPER_ECORRUPT);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* a length prefix running past the body */
    uint8_t b2[sizeof(body)];
    memcpy(b2, body, sizeof(body));
    b2[10] = 4;
    n = craft(f, HP_FRAME_MAGIC, bl, 10, 3, bl, 0, 0, b2, bl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* a huge length prefix (would overflow a naive pos + len) */
    hp_put_u32(b2 + 10, UINT32_MAX);
    n = craft(f, HP_FRAME_MAGIC, bl, 10, 3, bl, 0, 0, b2, bl);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    /* the same inconsistency hidden inside a valid deflate stream */
    uint8_t z[128];
    size_t zl = zdeflate(body, bl, z, sizeof(z));
    if (zl < bl) {
        n = craft(f, HP_FRAME_MAGIC, (uint32_t)zl, 10, 2, bl, HP_FRAME_FLAG_DEFLATE, 0, z, zl);
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    }
    hp_buf_free(&raw);
}

/* Seqs end at HP_SEQ_LIMIT (2^63, FORMAT.md §1): a frame whose records
 * would pass it is damaged (with a valid CRC too), however close to the top
 * of the 64-bit range; the encoder refuses to write one. */
static void
test_first_seq_overflow(void **state)
{
    (void)state;
    uint8_t body[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t f[HP_FRAME_HDR + 8];
    hp_frame_hdr h;
    hp_buf raw = {0};
    static const uint64_t bad[] = {UINT64_MAX - 1, UINT64_MAX - 2, HP_SEQ_LIMIT - 1,
                                   HP_SEQ_LIMIT, HP_SEQ_LIMIT + 5};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = craft(f, HP_FRAME_MAGIC, 8, bad[i], 2, 8, 0, 0, body, 8);
        assert_int_equal(decode(f, n, MAXRAW, &h, &raw), HOPPER_ECORRUPT);
    }
    size_t n = craft(f, HP_FRAME_MAGIC, 8, HP_SEQ_LIMIT - 2, 2, 8, 0, 0, body, 8);
    assert_int_equal(decode(f, n, MAXRAW, &h, &raw), 0);
    assert_int_equal(h.first_seq, HP_SEQ_LIMIT - 2);
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, 0), 0);
    hp_buf out = {0};
    assert_int_equal(hp_rec_encode(&e, body, 8, HP_SEQ_LIMIT - 1, 2, 0, &out), -EINVAL);
    assert_int_equal(out.len, 0);
    assert_int_equal(hp_rec_encode(&e, body, 8, HP_SEQ_LIMIT - 2, 2, 0, &out), 0);
    hp_enc_free(&e);
    hp_buf_free(&out);
    hp_buf_free(&raw);
}

static void
test_rec_next_walk(void **state)
{
    (void)state;
    uint8_t body[] = {0, 0, 0, 0, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 1, 0, 0, 0, '!'};
    size_t pos = 0;
    const uint8_t *p = NULL;
    size_t len = 99;
    assert_int_equal(hp_rec_next(body, sizeof(body), &pos, &p, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(pos, 4);
    assert_int_equal(hp_rec_next(body, sizeof(body), &pos, &p, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(hp_rec_next(body, sizeof(body), &pos, &p, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(*p, '!');
    assert_int_equal(pos, sizeof(body));
    assert_int_equal(hp_rec_next(body, sizeof(body), &pos, &p, &len), 1);
    assert_int_equal(hp_rec_next(body, sizeof(body), &pos, &p, &len), 1); /* stays at end */
    /* empty body */
    pos = 0;
    assert_int_equal(hp_rec_next(body, 0, &pos, &p, &len), 1);
    /* a partial length prefix */
    for (size_t cut = 1; cut < 4; cut++) {
        pos = 0;
        assert_int_equal(hp_rec_next(body, cut, &pos, &p, &len), HOPPER_ECORRUPT);
    }
    /* a length running past the end, and a huge one */
    pos = 4;
    assert_int_equal(hp_rec_next(body, 12, &pos, &p, &len), HOPPER_ECORRUPT);
    uint8_t huge[8] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    pos = 0;
    assert_int_equal(hp_rec_next(huge, sizeof(huge), &pos, &p, &len), HOPPER_ECORRUPT);
    assert_int_equal(pos, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_levels),
        cmocka_unit_test(test_incompressible_stored_raw),
        cmocka_unit_test(test_compressible_deflated),
        cmocka_unit_test(test_encoder_reuse_and_back_to_back),
        cmocka_unit_test(test_encode_rejects_bad_arguments),
        cmocka_unit_test(test_max_raw_formula),
        cmocka_unit_test(test_writer_worst_case_frame_accepted),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_crc_every_bit),
        cmocka_unit_test(test_truncated_needs_more),
        cmocka_unit_test(test_raw_len_above_max),
        cmocka_unit_test(test_max_record_boundary),
        cmocka_unit_test(test_stored_len_above_raw_len),
        cmocka_unit_test(test_reserved_nonzero),
        cmocka_unit_test(test_unknown_flag_valid_crc_is_version),
        cmocka_unit_test(test_deflate_garbage_valid_crc),
        cmocka_unit_test(test_count_inconsistent_with_body),
        cmocka_unit_test(test_first_seq_overflow),
        cmocka_unit_test(test_rec_next_walk),
    };
    return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}
