/* SPDX-License-Identifier: MIT */
/* Frame codec, FORMAT.md §3. Everything here treats its input as hostile:
 * lengths are checked against the caller's maximum before any allocation,
 * the CRC is checked before inflating, and the inflated size must match the
 * header exactly. No I/O, no locks; contexts are owned by one thread at a
 * time (the writer role or the reader). */
#include "record.h"

#include "crc32c.h"

#include <libdeflate.h>
#include <stdlib.h>

int
hp_enc_init(hp_encoder *e, int level)
{
    memset(e, 0, sizeof(*e));
    HP_ENSURE(level >= 0 && level <= 9, -EINVAL);
    e->level = level;
    if (level == 0) {
        return 0;
    }
    /* Raw deflate (no zlib header): the frame CRC already covers the body. */
    e->c = libdeflate_alloc_compressor(level);
    return e->c != NULL ? 0 : -ENOMEM;
}

void
hp_enc_free(hp_encoder *e)
{
    if (e->c != NULL) {
        libdeflate_free_compressor(e->c);
        e->c = NULL;
    }
}

static void
put_header(uint8_t *p, const hp_frame_hdr *h)
{
    hp_put_u32(p + 0, HP_FRAME_MAGIC);
    hp_put_u32(p + 4, h->stored_len);
    hp_put_u64(p + 8, h->first_seq);
    hp_put_u64(p + 16, h->ts_ms);
    hp_put_u32(p + 24, h->count);
    hp_put_u32(p + 28, h->raw_len);
    hp_put_u16(p + 32, h->flags);
    hp_put_u16(p + 34, 0);
}

/* Deflating incompressible data costs as much as compressible data and
 * saves nothing: a large body is first probed with a small sample, and stored
 * raw when the sample does not shrink by at least 1/16. */
#define SAMPLE_BYTES 4096u

static int
sample_compresses(hp_encoder *e, const uint8_t *raw)
{
    uint8_t out[SAMPLE_BYTES - SAMPLE_BYTES / 16];
    return libdeflate_deflate_compress(e->c, raw, SAMPLE_BYTES, out, sizeof(out)) != 0;
}

/* Try to deflate raw into dst (capacity cap). Returns the compressed size, or
 * 0 when it does not fit in cap (not worth it) or libdeflate failed. */
static size_t
try_deflate(hp_encoder *e, const uint8_t *raw, size_t raw_len, uint8_t *dst, size_t cap)
{
    if (e->c == NULL || raw_len < 64 || raw_len > UINT32_MAX) {
        return 0;
    }
    if (raw_len >= 4 * SAMPLE_BYTES && !sample_compresses(e, raw)) {
        return 0;
    }
    /* 0 when the output would not fit in cap (raw_len - 1): store raw. */
    return libdeflate_deflate_compress(e->c, raw, raw_len, dst, cap);
}

int
hp_rec_encode(hp_encoder *e, const uint8_t *raw, size_t raw_len, uint64_t first_seq,
              uint32_t count, uint64_t ts_ms, hp_buf *out)
{
    HP_ENSURE(raw_len <= UINT32_MAX && (uint64_t)count * HP_REC_PREFIX <= raw_len, -EINVAL);
    HP_ENSURE(first_seq <= HP_SEQ_LIMIT - count, -EINVAL);
    HP_GUARD(hp_buf_reserve(out, HP_FRAME_HDR + raw_len));
    uint8_t *hdr = out->data + out->len;
    uint8_t *body = hdr + HP_FRAME_HDR;
    hp_frame_hdr h = {.first_seq = first_seq, .ts_ms = ts_ms, .count = count,
                      .raw_len = (uint32_t)raw_len};
    /* Compressed output is only kept when strictly smaller than raw, so the
     * output buffer never needs more than raw_len bytes (FORMAT.md §3.3). */
    size_t clen = raw_len > 0 ? try_deflate(e, raw, raw_len, body, raw_len - 1) : 0;
    if (clen > 0) {
        h.flags = HP_FRAME_FLAG_DEFLATE;
        h.stored_len = (uint32_t)clen;
    } else {
        if (raw_len > 0) {
            memcpy(body, raw, raw_len);
        }
        h.stored_len = (uint32_t)raw_len;
    }
    put_header(hdr, &h);
    uint32_t crc = hp_crc32c_extend(0, hdr, 36);
    crc = hp_crc32c_extend(crc, body, h.stored_len);
    hp_put_u32(hdr + 36, crc);
    out->len += HP_FRAME_HDR + h.stored_len;
    return 0;
}

int
hp_rec_parse_header(const uint8_t *p, size_t n, uint64_t max_raw, hp_frame_hdr *h)
{
    HP_ENSURE(n >= HP_FRAME_HDR, HOPPER_ENEEDMORE);
    HP_ENSURE(hp_get_u32(p) == HP_FRAME_MAGIC, HOPPER_ECORRUPT);
    h->stored_len = hp_get_u32(p + 4);
    h->first_seq = hp_get_u64(p + 8);
    h->ts_ms = hp_get_u64(p + 16);
    h->count = hp_get_u32(p + 24);
    h->raw_len = hp_get_u32(p + 28);
    h->flags = hp_get_u16(p + 32);
    HP_ENSURE(hp_get_u16(p + 34) == 0, HOPPER_ECORRUPT);
    HP_ENSURE(h->raw_len <= max_raw, HOPPER_ECORRUPT);
    HP_ENSURE(h->stored_len <= h->raw_len, HOPPER_ECORRUPT);
    HP_ENSURE((uint64_t)h->count * HP_REC_PREFIX <= h->raw_len, HOPPER_ECORRUPT);
    /* Inside the sequence space: nothing a writer of ours produces (and no
     * seq arithmetic of the reader can wrap). */
    HP_ENSURE(h->first_seq <= HP_SEQ_LIMIT - h->count, HOPPER_ECORRUPT);
    /* Stored raw means stored_len == raw_len. */
    HP_ENSURE((h->flags & HP_FRAME_FLAG_DEFLATE) || h->stored_len == h->raw_len,
              HOPPER_ECORRUPT);
    return 0;
}

int
hp_rec_check(const uint8_t *p, size_t n, const hp_frame_hdr *h)
{
    HP_ENSURE(n >= HP_FRAME_HDR && n - HP_FRAME_HDR >= h->stored_len, HOPPER_ENEEDMORE);
    uint32_t crc = hp_crc32c_extend(0, p, 36);
    crc = hp_crc32c_extend(crc, p + HP_FRAME_HDR, h->stored_len);
    HP_ENSURE(crc == hp_get_u32(p + 36), HOPPER_ECORRUPT);
    return 0;
}

int
hp_dec_init(hp_decoder *d)
{
    d->d = libdeflate_alloc_decompressor();
    return d->d != NULL ? 0 : -ENOMEM;
}

void
hp_dec_free(hp_decoder *d)
{
    if (d->d != NULL) {
        libdeflate_free_decompressor(d->d);
        d->d = NULL;
    }
}

static int
check_layout(const uint8_t *raw, size_t raw_len, uint32_t count)
{
    size_t pos = 0;
    for (uint32_t i = 0; i < count; i++) {
        HP_ENSURE(raw_len - pos >= HP_REC_PREFIX, HOPPER_ECORRUPT);
        uint32_t len = hp_get_u32(raw + pos);
        pos += HP_REC_PREFIX;
        HP_ENSURE(len <= raw_len - pos, HOPPER_ECORRUPT);
        pos += len;
    }
    HP_ENSURE(pos == raw_len, HOPPER_ECORRUPT);
    return 0;
}

int
hp_rec_decode(hp_decoder *d, const uint8_t *p, size_t n, uint64_t max_raw, hp_frame_hdr *h,
              hp_buf *raw, size_t *used)
{
    *used = 0;
    HP_GUARD(hp_rec_parse_header(p, n, max_raw, h));
    HP_GUARD(hp_rec_check(p, n, h));
    HP_ENSURE((h->flags & ~HP_FRAME_FLAGS_KNOWN) == 0, HOPPER_EVERSION);
    raw->len = 0;
    HP_GUARD(hp_buf_reserve(raw, h->raw_len));
    const uint8_t *body = p + HP_FRAME_HDR;
    if (h->flags & HP_FRAME_FLAG_DEFLATE) {
        HP_ENSURE(d->d != NULL, -EINVAL);
        size_t in_used = 0;
        size_t out_len = 0;
        enum libdeflate_result lr = libdeflate_deflate_decompress_ex(
            d->d, body, h->stored_len, raw->data, h->raw_len, &in_used, &out_len);
        /* The stream must end exactly at raw_len with all input consumed. */
        HP_ENSURE(lr == LIBDEFLATE_SUCCESS, HOPPER_ECORRUPT);
        HP_ENSURE(out_len == h->raw_len && in_used == h->stored_len, HOPPER_ECORRUPT);
    } else if (h->raw_len > 0) {
        memcpy(raw->data, body, h->raw_len);
    }
    raw->len = h->raw_len;
    HP_GUARD(check_layout(raw->data, raw->len, h->count));
    *used = HP_FRAME_HDR + h->stored_len;
    return 0;
}

int
hp_rec_next(const uint8_t *raw, size_t raw_len, size_t *pos, const uint8_t **rec, size_t *len)
{
    if (*pos >= raw_len) {
        return 1;
    }
    HP_ENSURE(raw_len - *pos >= HP_REC_PREFIX, HOPPER_ECORRUPT);
    uint32_t l = hp_get_u32(raw + *pos);
    HP_ENSURE(l <= raw_len - *pos - HP_REC_PREFIX, HOPPER_ECORRUPT);
    *rec = raw + *pos + HP_REC_PREFIX;
    *len = l;
    *pos += HP_REC_PREFIX + l;
    return 0;
}
