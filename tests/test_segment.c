/* SPDX-License-Identifier: MIT */
/* Segment module (segment.h, FORMAT.md §2 and §5): header codec, file names,
 * and the recovery scan over in-memory images: frames in order, damage in the
 * middle skipped with the right range, torn tails, garbage, resync across the
 * read window's chunk boundary, and I/O errors that must not look like damage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crc32c.h"
#include "hp_test.h"
#include "record.h"
#include "segment.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXRAW hp_frame_max_raw(16u << 20)
#define CHUNK (1u << 20) /* segment.c's read window chunk */

/* ---- in-memory image and window ---------------------------------------- */

typedef struct mem_img {
    const uint8_t *p;
    size_t n;
    long fail_after; /* fail the read call with this index (-1 = never) */
    long calls;
    int err;
} mem_img;

static ssize_t
mem_read(void *ctx, void *buf, size_t n, uint64_t off)
{
    mem_img *m = ctx;
    if (m->fail_after >= 0 && m->calls++ >= m->fail_after) {
        return m->err;
    }
    if (off >= m->n) {
        return 0;
    }
    size_t k = m->n - (size_t)off < n ? m->n - (size_t)off : n;
    memcpy(buf, m->p + off, k);
    return (ssize_t)k;
}

static hp_window
window_over(mem_img *m, const hp_buf *img, size_t size)
{
    m->p = img->data;
    m->n = size;
    m->fail_after = -1;
    m->calls = 0;
    m->err = 0;
    hp_window w = {.read = mem_read, .ctx = m, .size = size};
    return w;
}

/* Image: segment header + `n` frames of one record each (payload i). */
typedef struct img {
    hp_buf b;
    size_t n;
    uint64_t off[64];
    uint64_t len[64]; /* whole frame */
} img;

static void
fill_payload(uint8_t *p, size_t len, uint64_t seed, int random)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        /* Random bytes never contain 'H' (the first byte of every magic), so
         * a resync cannot find a false frame start inside a payload. */
        uint8_t c = random ? (uint8_t)hp_test_rand(&s) : (uint8_t)('a' + (i + seed) % 26);
        p[i] = c == 'H' ? 'h' : c;
    }
}

static void
img_build(img *im, size_t n, const size_t *sizes, int level, int random)
{
    memset(im, 0, sizeof(*im));
    assert_true(n <= 64);
    uint8_t hdr[HP_SEG_HDR];
    hp_seg_header_encode(hdr, 7, 100);
    assert_int_equal(hp_buf_append(&im->b, hdr, sizeof(hdr)), 0);
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, level), 0);
    hp_buf body = {0};
    for (size_t i = 0; i < n; i++) {
        body.len = 0;
        assert_int_equal(hp_buf_reserve(&body, 4 + sizes[i]), 0);
        hp_put_u32(body.data, (uint32_t)sizes[i]);
        fill_payload(body.data + 4, sizes[i], i, random);
        body.len = 4 + sizes[i];
        im->off[i] = im->b.len;
        assert_int_equal(hp_rec_encode(&e, body.data, body.len, 100 + i, 1, 1, &im->b), 0);
        im->len[i] = im->b.len - im->off[i];
    }
    im->n = n;
    hp_enc_free(&e);
    hp_buf_free(&body);
}

typedef struct seen {
    size_t frames;
    uint64_t off[64];
    uint64_t seq[64];
    size_t skips;
    uint64_t skip_off[8];
    uint64_t skip_len[8];
    int stop_at; /* return -42 at this frame index (-1 = never) */
} seen;

static int
on_frame(void *ctx, uint64_t off, const hp_frame_hdr *h)
{
    seen *s = ctx;
    if ((int)s->frames == s->stop_at) {
        return -42;
    }
    assert_true(s->frames < 64);
    s->off[s->frames] = off;
    s->seq[s->frames] = h->first_seq;
    s->frames++;
    return 0;
}

static void
on_skipped(void *ctx, uint64_t off, uint64_t len)
{
    seen *s = ctx;
    assert_true(s->skips < 8);
    s->skip_off[s->skips] = off;
    s->skip_len[s->skips] = len;
    s->skips++;
}

static const hp_scan_ops OPS = {.frame = on_frame, .skipped = on_skipped};

static int
scan(hp_window *w, int verify, seen *s, uint64_t *valid_end)
{
    memset(s, 0, sizeof(*s));
    s->stop_at = -1;
    int rc = hp_seg_scan(w, MAXRAW, verify, &OPS, s, valid_end);
    hp_buf_free(&w->buf);
    return rc;
}

/* ---- names and header ---------------------------------------------------- */

static void
test_seg_names(void **state)
{
    (void)state;
    char name[HP_SEG_NAME_MAX];
    uint64_t id = 0;
    hp_seg_name(name, 1);
    assert_string_equal(name, "0000000000000001.hseg");
    hp_seg_name(name, 0xabcdef0123456789ull);
    assert_string_equal(name, "abcdef0123456789.hseg");
    hp_seg_name(name, UINT64_MAX);
    assert_string_equal(name, "ffffffffffffffff.hseg");
    assert_int_equal(hp_seg_parse_name(name, &id), 0);
    assert_true(id == UINT64_MAX);
    uint64_t rng = hp_test_seed("test_seg_names");
    for (int i = 0; i < 1000; i++) {
        uint64_t v = hp_test_rand(&rng) >> (hp_test_rand(&rng) % 64);
        hp_seg_name(name, v);
        assert_int_equal(strlen(name), 21);
        id = ~v;
        assert_int_equal(hp_seg_parse_name(name, &id), 0);
        assert_true(id == v);
    }
    static const char *bad[] = {
        "",
        "0000000000000001",
        "0000000000000001.hse",
        "0000000000000001.hseg.bad",
        "0000000000000001.hseg.bad.why",
        "0000000000000001.hseg.tmp",
        "000000000000001.hseg",
        "00000000000000001.hseg",
        "000000000000000A.hseg", /* upper case is not ours */
        "000000000000000g.hseg",
        "00000000000000 1.hseg",
        "-000000000000001.hseg",
        "0000000000000001.HSEG",
        "0000000000000001xhseg",
        "notes.txt",
        "checkpoint",
        "LOCK",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        id = 12345;
        if (hp_seg_parse_name(bad[i], &id) != -1) {
            print_error("accepted \"%s\"\n", bad[i]);
            fail();
        }
    }
}

static void
recrc_header(uint8_t *h)
{
    hp_put_u32(h + 28, hp_crc32c_extend(0, h, 28));
}

static void
test_header_codec(void **state)
{
    (void)state;
    uint8_t h[HP_SEG_HDR + 8];
    memset(h, 0xee, sizeof(h));
    hp_seg_header_encode(h, 0x1122334455667788ull, 42);
    /* FORMAT.md §2 layout, little-endian */
    static const uint8_t expect_prefix[] = {'H', 'S', 'E', 'G', 1, 0, 32, 0,
                                            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
                                            42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(h, expect_prefix, sizeof(expect_prefix));
    assert_int_equal(hp_get_u32(h + 28), hp_crc32c_extend(0, h, 28));
    assert_int_equal(h[32], 0xee); /* wrote exactly 32 bytes */
    uint64_t id = 0;
    uint64_t first = 0;
    assert_int_equal(hp_seg_header_decode(h, HP_SEG_HDR, &id, &first), 0);
    assert_true(id == 0x1122334455667788ull);
    assert_int_equal(first, 42);
    /* short input */
    for (size_t n = 0; n < HP_SEG_HDR; n++) {
        assert_int_equal(hp_seg_header_decode(h, n, &id, &first), HOPPER_ENEEDMORE);
    }
    uint8_t c[HP_SEG_HDR];
    /* bad magic (CRC made valid again) */
    memcpy(c, h, HP_SEG_HDR);
    c[0] = 'X';
    recrc_header(c);
    assert_int_equal(hp_seg_header_decode(c, HP_SEG_HDR, &id, &first), HOPPER_ECORRUPT);
    /* bad CRC: every single bit flip of the header */
    for (size_t i = 0; i < HP_SEG_HDR * 8; i++) {
        memcpy(c, h, HP_SEG_HDR);
        c[i / 8] ^= (uint8_t)(1u << (i % 8));
        int rc = hp_seg_header_decode(c, HP_SEG_HDR, &id, &first);
        assert_int_equal(rc, HOPPER_ECORRUPT);
    }
    /* other version, valid CRC */
    uint16_t versions[] = {0, 2, 0xffff};
    for (size_t i = 0; i < 3; i++) {
        memcpy(c, h, HP_SEG_HDR);
        hp_put_u16(c + 4, versions[i]);
        recrc_header(c);
        assert_int_equal(hp_seg_header_decode(c, HP_SEG_HDR, &id, &first), HOPPER_EVERSION);
    }
    /* header_len other than 32 */
    memcpy(c, h, HP_SEG_HDR);
    hp_put_u16(c + 6, 40);
    recrc_header(c);
    assert_int_equal(hp_seg_header_decode(c, HP_SEG_HDR, &id, &first), HOPPER_ECORRUPT);
    /* flags nonzero: unsupported version (FORMAT.md §2) */
    memcpy(c, h, HP_SEG_HDR);
    hp_put_u32(c + 24, 1);
    recrc_header(c);
    assert_int_equal(hp_seg_header_decode(c, HP_SEG_HDR, &id, &first), HOPPER_EVERSION);
}

/* ---- scan -------------------------------------------------------------- */

static const size_t SIZES[8] = {10, 0, 300, 77, 1000, 5, 250, 64};

static void
test_scan_valid_frames_in_order(void **state)
{
    (void)state;
    for (int level = 0; level <= 9; level += 9) {
        img im;
        img_build(&im, 8, SIZES, level, 0);
        for (int verify = 0; verify <= 1; verify++) {
            mem_img m;
            hp_window w = window_over(&m, &im.b, im.b.len);
            seen s;
            uint64_t end = 0;
            assert_int_equal(scan(&w, verify, &s, &end), 0);
            assert_int_equal(s.frames, 8);
            assert_int_equal(s.skips, 0);
            for (size_t i = 0; i < 8; i++) {
                assert_int_equal(s.off[i], im.off[i]);
                assert_int_equal(s.seq[i], 100 + i);
            }
            assert_int_equal(end, im.b.len);
        }
        hp_buf_free(&im.b);
    }
}

static void
test_scan_header_only_and_garbage(void **state)
{
    (void)state;
    img im;
    img_build(&im, 0, NULL, 0, 0);
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    seen s;
    uint64_t end = 1;
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 0);
    assert_int_equal(end, HP_SEG_HDR);
    /* header followed by garbage only (no frame magic inside) */
    uint64_t rng = hp_test_seed("test_scan_header_only_and_garbage");
    for (int rep = 0; rep < 20; rep++) {
        im.b.len = HP_SEG_HDR;
        size_t g = 1 + (size_t)(hp_test_rand(&rng) % 5000);
        assert_int_equal(hp_buf_reserve(&im.b, g), 0);
        fill_payload(im.b.data + HP_SEG_HDR, g, hp_test_rand(&rng), 1);
        im.b.len += g;
        for (int verify = 0; verify <= 1; verify++) {
            w = window_over(&m, &im.b, im.b.len);
            assert_int_equal(scan(&w, verify, &s, &end), 0);
            assert_int_equal(s.frames, 0);
            assert_int_equal(s.skips, 0);
            assert_int_equal(end, HP_SEG_HDR);
        }
    }
    /* garbage full of false frame magics with insane headers */
    im.b.len = HP_SEG_HDR;
    for (int i = 0; i < 200; i++) {
        uint8_t fake[12];
        hp_put_u32(fake, HP_FRAME_MAGIC);
        hp_put_u32(fake + 4, 0xffffffffu);
        hp_put_u32(fake + 8, (uint32_t)i);
        assert_int_equal(hp_buf_append(&im.b, fake, sizeof(fake) - (size_t)(i % 5)), 0);
    }
    w = window_over(&m, &im.b, im.b.len);
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 0);
    assert_int_equal(end, HP_SEG_HDR);
    hp_buf_free(&im.b);
}

/* Damage one frame in the middle (body byte, header byte, magic) and check
 * that exactly that frame's range is reported skipped and the later frames
 * are found. */
static void
test_scan_skips_middle_damage(void **state)
{
    (void)state;
    for (int level = 0; level <= 1; level++) {
        img im;
        img_build(&im, 8, SIZES, level, level == 0);
        for (size_t victim = 0; victim < 7; victim++) {
            /* positions inside the frame: magic, stored_len, seq, count, crc, body */
            size_t where[] = {0, 3, 5, 9, 25, 37, 40, (size_t)im.len[victim] - 1};
            for (size_t k = 0; k < sizeof(where) / sizeof(where[0]); k++) {
                if (where[k] >= im.len[victim]) {
                    continue;
                }
                hp_buf c = {0};
                assert_int_equal(hp_buf_append(&c, im.b.data, im.b.len), 0);
                c.data[im.off[victim] + where[k]] ^= 0x5a;
                mem_img m;
                hp_window w = window_over(&m, &c, c.len);
                seen s;
                uint64_t end = 0;
                assert_int_equal(scan(&w, 1, &s, &end), 0);
                if (s.frames != 7 || s.skips != 1) {
                    print_error("level %d victim %zu byte %zu: %zu frames, %zu skips\n", level,
                                victim, where[k], s.frames, s.skips);
                }
                assert_int_equal(s.frames, 7);
                assert_int_equal(s.skips, 1);
                assert_int_equal(s.skip_off[0], im.off[victim]);
                assert_int_equal(s.skip_len[0], im.len[victim]);
                for (size_t i = 0, j = 0; i < 8; i++) {
                    if (i == victim) {
                        continue;
                    }
                    assert_int_equal(s.off[j], im.off[i]);
                    assert_int_equal(s.seq[j], 100 + i);
                    j++;
                }
                assert_int_equal(end, c.len);
                hp_buf_free(&c);
            }
        }
        /* Two damaged frames in a row are one skipped range. */
        hp_buf c = {0};
        assert_int_equal(hp_buf_append(&c, im.b.data, im.b.len), 0);
        c.data[im.off[2] + 45] ^= 1;
        c.data[im.off[3] + 45] ^= 1;
        mem_img m;
        hp_window w = window_over(&m, &c, c.len);
        seen s;
        uint64_t end = 0;
        assert_int_equal(scan(&w, 1, &s, &end), 0);
        assert_int_equal(s.frames, 6);
        assert_int_equal(s.skips, 1);
        assert_int_equal(s.skip_off[0], im.off[2]);
        assert_int_equal(s.skip_len[0], im.len[2] + im.len[3]);
        /* Two separate damaged frames are two ranges. */
        c.data[im.off[3] + 45] ^= 1;
        c.data[im.off[5] + 45] ^= 1;
        w = window_over(&m, &c, c.len);
        assert_int_equal(scan(&w, 1, &s, &end), 0);
        assert_int_equal(s.frames, 6);
        assert_int_equal(s.skips, 2);
        assert_int_equal(s.skip_off[0], im.off[2]);
        assert_int_equal(s.skip_len[0], im.len[2]);
        assert_int_equal(s.skip_off[1], im.off[5]);
        assert_int_equal(s.skip_len[1], im.len[5]);
        hp_buf_free(&c);
        hp_buf_free(&im.b);
    }
}

/* Without CRC checks the scan only walks headers: a body flip is not seen
 * (frames are checked when read), but a damaged header still is. */
static void
test_scan_without_crc(void **state)
{
    (void)state;
    img im;
    img_build(&im, 8, SIZES, 0, 0);
    im.b.data[im.off[4] + HP_FRAME_HDR + 10] ^= 0x20;
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    seen s;
    uint64_t end = 0;
    assert_int_equal(scan(&w, 0, &s, &end), 0);
    assert_int_equal(s.frames, 8);
    assert_int_equal(s.skips, 0);
    w = window_over(&m, &im.b, im.b.len);
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 7);
    assert_int_equal(s.skips, 1);
    im.b.data[im.off[4] + HP_FRAME_HDR + 10] ^= 0x20;
    im.b.data[im.off[4]] ^= 0x01; /* magic */
    w = window_over(&m, &im.b, im.b.len);
    assert_int_equal(scan(&w, 0, &s, &end), 0);
    assert_int_equal(s.frames, 7);
    assert_int_equal(s.skips, 1);
    assert_int_equal(s.skip_off[0], im.off[4]);
    assert_int_equal(s.skip_len[0], im.len[4]);
    hp_buf_free(&im.b);
}

/* A torn tail: the image ends inside the last frame (or has trailing
 * garbage): valid_end is the end of the last whole frame, nothing skipped. */
static void
test_scan_torn_tail(void **state)
{
    (void)state;
    img im;
    img_build(&im, 8, SIZES, 0, 0);
    uint64_t last = im.off[7];
    for (uint64_t cut = last + 1; cut < im.b.len; cut++) {
        for (int verify = 0; verify <= 1; verify++) {
            mem_img m;
            hp_window w = window_over(&m, &im.b, (size_t)cut);
            seen s;
            uint64_t end = 0;
            assert_int_equal(scan(&w, verify, &s, &end), 0);
            assert_int_equal(s.frames, 7);
            assert_int_equal(s.skips, 0);
            assert_int_equal(end, last);
        }
    }
    /* exactly at a frame boundary: not torn */
    mem_img m;
    hp_window w = window_over(&m, &im.b, (size_t)last);
    seen s;
    uint64_t end = 0;
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 7);
    assert_int_equal(end, last);
    /* zeros appended after the last frame (preallocated, never written) */
    size_t full = im.b.len;
    uint8_t zeros[300] = {0};
    assert_int_equal(hp_buf_append(&im.b, zeros, sizeof(zeros)), 0);
    w = window_over(&m, &im.b, im.b.len);
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 8);
    assert_int_equal(s.skips, 0);
    assert_int_equal(end, full);
    /* the last frame's body damaged: torn, not skipped */
    im.b.len = full;
    im.b.data[full - 1] ^= 0xff;
    w = window_over(&m, &im.b, im.b.len);
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, 7);
    assert_int_equal(s.skips, 0);
    assert_int_equal(end, last);
    hp_buf_free(&im.b);
}

/* Errors from the read callback and from the frame callback stop the scan
 * with that error; they are never treated as damage. */
static void
test_scan_errors_propagate(void **state)
{
    (void)state;
    img im;
    img_build(&im, 8, SIZES, 0, 0);
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    m.fail_after = 0;
    m.err = -EIO;
    seen s;
    uint64_t end = 0;
    assert_int_equal(scan(&w, 1, &s, &end), -EIO);
    assert_int_equal(s.skips, 0);
    w = window_over(&m, &im.b, im.b.len);
    memset(&s, 0, sizeof(s));
    s.stop_at = 3;
    assert_int_equal(hp_seg_scan(&w, MAXRAW, 1, &OPS, &s, &end), -42);
    assert_int_equal(s.frames, 3);
    hp_buf_free(&w.buf);
    /* resync must report a read error too, not "not found" */
    im.b.data[im.off[1]] ^= 1;
    w = window_over(&m, &im.b, im.b.len);
    m.fail_after = 1; /* first read (the window fill) works, the next fails */
    m.err = -EMFILE;
    uint64_t found = 0;
    hp_frame_hdr h;
    int rc = hp_seg_resync(&w, im.off[1] + 1, MAXRAW, &found, &h);
    /* The first chunk covers the whole image, so resync may not need a
     * second read; if it did, it must have failed with the read error. */
    assert_true(rc == 0 || rc == -EMFILE);
    if (rc == 0) {
        assert_int_equal(found, im.off[2]);
    }
    hp_buf_free(&w.buf);
    hp_buf_free(&im.b);
}

static void
test_resync_basic(void **state)
{
    (void)state;
    img im;
    img_build(&im, 8, SIZES, 0, 0);
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    uint64_t found = 0;
    hp_frame_hdr h;
    for (size_t i = 0; i < 8; i++) {
        /* from exactly a frame start: that frame */
        assert_int_equal(hp_seg_resync(&w, im.off[i], MAXRAW, &found, &h), 0);
        assert_int_equal(found, im.off[i]);
        assert_int_equal(h.first_seq, 100 + i);
        /* from one byte in: the next frame, or none after the last */
        int rc = hp_seg_resync(&w, im.off[i] + 1, MAXRAW, &found, &h);
        if (i < 7) {
            assert_int_equal(rc, 0);
            assert_int_equal(found, im.off[i + 1]);
        } else {
            assert_int_equal(rc, 1);
        }
    }
    assert_int_equal(hp_seg_resync(&w, im.b.len, MAXRAW, &found, &h), 1);
    assert_int_equal(hp_seg_resync(&w, im.b.len + 100, MAXRAW, &found, &h), 1);
    hp_buf_free(&w.buf);
    hp_buf_free(&im.b);
}

/* The scan reads through a 1 MiB window: put frames and damage across the
 * chunk boundary and a valid frame at every offset around it after garbage. */
static void
test_resync_across_window_chunks(void **state)
{
    (void)state;
    hp_encoder e;
    assert_int_equal(hp_enc_init(&e, 0), 0);
    uint8_t body[4 + 100];
    hp_put_u32(body, 100);
    fill_payload(body + 4, 100, 3, 0);
    hp_buf frame = {0};
    assert_int_equal(hp_rec_encode(&e, body, sizeof(body), 555, 1, 1, &frame), 0);
    hp_enc_free(&e);
    hp_buf b = {0};
    assert_int_equal(hp_buf_reserve(&b, CHUNK + 4096), 0);
    long offsets[] = {-200, -44, -41, -40, -39, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 100};
    for (size_t k = 0; k < sizeof(offsets) / sizeof(offsets[0]); k++) {
        /* [header][garbage up to P][frame], P = 32 + CHUNK + offsets[k] */
        size_t pos = HP_SEG_HDR + CHUNK + (size_t)offsets[k];
        b.len = 0;
        uint8_t hdr[HP_SEG_HDR];
        hp_seg_header_encode(hdr, 1, 0);
        assert_int_equal(hp_buf_append(&b, hdr, sizeof(hdr)), 0);
        fill_payload(b.data + b.len, pos - b.len, k, 1);
        b.len = pos;
        assert_int_equal(hp_buf_append(&b, frame.data, frame.len), 0);
        mem_img m;
        hp_window w = window_over(&m, &b, b.len);
        uint64_t found = 0;
        hp_frame_hdr h;
        int rc = hp_seg_resync(&w, HP_SEG_HDR, MAXRAW, &found, &h);
        if (rc != 0 || found != pos) {
            print_error("frame at chunk%+ld: rc %d found %" PRIu64 "\n", offsets[k], rc, found);
        }
        assert_int_equal(rc, 0);
        assert_int_equal(found, pos);
        assert_int_equal(h.first_seq, 555);
        hp_buf_free(&w.buf);
        /* and the scan reports the garbage as one skipped range */
        w = window_over(&m, &b, b.len);
        seen s;
        uint64_t end = 0;
        assert_int_equal(scan(&w, 1, &s, &end), 0);
        assert_int_equal(s.frames, 1);
        assert_int_equal(s.skips, 1);
        assert_int_equal(s.skip_off[0], HP_SEG_HDR);
        assert_int_equal(s.skip_len[0], pos - HP_SEG_HDR);
        assert_int_equal(end, b.len);
    }
    hp_buf_free(&b);
    hp_buf_free(&frame);
}

/* A 2.5 MiB image of 100 KiB incompressible frames: frames straddle the
 * window chunk boundaries; damage the straddling ones. */
static void
test_scan_large_image(void **state)
{
    (void)state;
    enum { N = 25 };
    size_t sizes[N];
    for (size_t i = 0; i < N; i++) {
        sizes[i] = 100 * 1024 + i * 7;
    }
    img im;
    img_build(&im, N, sizes, 1, 1);
    /* frames containing a chunk boundary relative to the scan start */
    size_t victims[N];
    size_t nv = 0;
    for (size_t i = 1; i + 1 < N; i++) {
        uint64_t a = im.off[i];
        uint64_t z = im.off[i] + im.len[i];
        if (a / CHUNK != z / CHUNK) {
            victims[nv++] = i;
        }
    }
    assert_true(nv >= 2);
    for (size_t v = 0; v < nv; v++) {
        size_t i = victims[v];
        im.b.data[im.off[i] + HP_FRAME_HDR + 1000] ^= 0x77;
    }
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    seen s;
    uint64_t end = 0;
    assert_int_equal(scan(&w, 1, &s, &end), 0);
    assert_int_equal(s.frames, N - nv);
    assert_int_equal(s.skips, nv);
    for (size_t v = 0; v < nv; v++) {
        assert_int_equal(s.skip_off[v], im.off[victims[v]]);
        assert_int_equal(s.skip_len[v], im.len[victims[v]]);
    }
    assert_int_equal(end, im.b.len);
    hp_buf_free(&im.b);
}

/* hp_win_get: bounds and refetch. */
static void
test_window_get(void **state)
{
    (void)state;
    img im;
    img_build(&im, 3, SIZES, 0, 0);
    mem_img m;
    hp_window w = window_over(&m, &im.b, im.b.len);
    const uint8_t *p = NULL;
    assert_int_equal(hp_win_get(&w, 0, HP_SEG_HDR, &p), 0);
    assert_memory_equal(p, im.b.data, HP_SEG_HDR);
    assert_int_equal(hp_win_get(&w, im.off[2], 10, &p), 0);
    assert_memory_equal(p, im.b.data + im.off[2], 10);
    assert_int_equal(hp_win_get(&w, im.b.len, 0, &p), 0);
    assert_int_equal(hp_win_get(&w, im.b.len - 4, 5, &p), HOPPER_ENEEDMORE);
    assert_int_equal(hp_win_get(&w, im.b.len + 1, 0, &p), HOPPER_ENEEDMORE);
    assert_int_equal(hp_win_get(&w, UINT64_MAX, 2, &p), HOPPER_ENEEDMORE);
    /* the file shrank below the size the window believes */
    w.size = im.b.len + 100;
    w.buf.len = 0;
    assert_int_equal(hp_win_get(&w, im.b.len - 10, 50, &p), HOPPER_ENEEDMORE);
    hp_buf_free(&w.buf);
    hp_buf_free(&im.b);
}

/* ---- index cross-check (FORMAT.md §2.1) ----------------------------------- */

/* The index the writer would write for im's frames (seqs 100.., ts 1). */
static void
idx_of(const img *im, hp_segidx *x)
{
    memset(x, 0, sizeof(*x));
    x->id = 7;
    x->size = HP_SEG_HDR;
    for (size_t i = 0; i < im->n; i++) {
        hp_frame_hdr h;
        assert_int_equal(hp_rec_parse_header(im->b.data + im->off[i], HP_FRAME_HDR, MAXRAW, &h), 0);
        assert_int_equal(hp_idx_add(x, im->off[i], im->len[i], h.first_seq, h.count,
                                    h.raw_len - 4u * h.count, h.ts_ms),
                         0);
    }
    assert_int_equal(x->size, im->b.len);
}

static int
verify_counting(const img *im, const hp_segidx *x, long *reads)
{
    mem_img m = {.p = im->b.data, .n = im->b.len, .fail_after = 1L << 30};
    int rc = hp_idx_verify(mem_read, &m, x, MAXRAW);
    if (reads != NULL) {
        *reads = m.calls;
    }
    return rc;
}

/* The writer's indexes pass, with a few reads per run; every kind of lie
 * is caught; a read error is passed on. */
static void
test_idx_verify(void **state)
{
    (void)state;
    static const size_t sizes[] = {10, 300, 77, 1000, 5, 250};
    img im;
    img_build(&im, 6, sizes, 0, 0);
    hp_segidx x;
    idx_of(&im, &x);
    assert_int_equal(x.n, 1);
    long reads = 0;
    assert_int_equal(verify_counting(&im, &x, &reads), 0);
    assert_true(reads <= 2); /* the first header, then the tail */

    /* Lies, each with a valid CRC once encoded: all caught. */
    for (int lie = 0; lie < 8; lie++) {
        hp_segidx y = x;
        hp_idx_run run = x.runs[0];
        y.runs = &run;
        /* shifted; another first frame; one record more; one less; not
         * tiling; wrong total; starting late; one record before */
        static const int64_t d_first[8] = {1, 0, 0, 0, 0, 0, 0, -1};
        static const int64_t d_last[8] = {1, 0, 1, -1, 0, 0, 0, 0};
        static const int64_t d_records[8] = {0, 0, 1, -1, 0, 1, 0, 0};
        run.first_seq += (uint64_t)d_first[lie];
        run.last_seq += (uint64_t)d_last[lie];
        y.records += (uint64_t)d_records[lie];
        if (lie == 1) {
            run.ts_ms++;
        } else if (lie == 4) {
            run.end = im.off[5];
        } else if (lie == 6) {
            run.off = im.off[1];
        }
        if (verify_counting(&im, &y, NULL) != HOPPER_ECORRUPT) {
            fail_msg("lie %d accepted", lie);
        }
    }

    /* A damaged header in the middle is not read: the index passes (the
     * frame is checked when read); a damaged last header fails it. */
    uint8_t keep = im.b.data[im.off[2]];
    im.b.data[im.off[2]] ^= 0x20;
    assert_int_equal(verify_counting(&im, &x, NULL), 0);
    im.b.data[im.off[2]] = keep;
    im.b.data[im.off[5] + 1] ^= 0x20;
    assert_int_equal(verify_counting(&im, &x, NULL), HOPPER_ECORRUPT);
    im.b.data[im.off[5] + 1] ^= 0x20;

    /* A read error is not damage. */
    mem_img m = {.p = im.b.data, .n = im.b.len, .fail_after = 0, .err = -EIO};
    assert_int_equal(hp_idx_verify(mem_read, &m, &x, MAXRAW), -EIO);
    hp_idx_free(&x);
    hp_buf_free(&im.b);

    /* A last frame larger than the tail windows: the run's headers are
     * walked (a handful of frames), and the index still passes. */
    static const size_t big[] = {10, 20, 30, (3u << 20) / 2};
    img_build(&im, 4, big, 0, 1);
    idx_of(&im, &x);
    assert_int_equal(verify_counting(&im, &x, &reads), 0);
    assert_true(reads > 2);
    hp_segidx y = x;
    hp_idx_run run = x.runs[0];
    y.runs = &run;
    run.last_seq++;
    y.records++;
    assert_int_equal(verify_counting(&im, &y, NULL), HOPPER_ECORRUPT);
    hp_idx_free(&x);
    hp_buf_free(&im.b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seg_names),
        cmocka_unit_test(test_header_codec),
        cmocka_unit_test(test_scan_valid_frames_in_order),
        cmocka_unit_test(test_scan_header_only_and_garbage),
        cmocka_unit_test(test_scan_skips_middle_damage),
        cmocka_unit_test(test_scan_without_crc),
        cmocka_unit_test(test_scan_torn_tail),
        cmocka_unit_test(test_scan_errors_propagate),
        cmocka_unit_test(test_resync_basic),
        cmocka_unit_test(test_resync_across_window_chunks),
        cmocka_unit_test(test_scan_large_image),
        cmocka_unit_test(test_window_get),
        cmocka_unit_test(test_idx_verify),
    };
    return cmocka_run_group_tests_name("segment", tests, NULL, NULL);
}
