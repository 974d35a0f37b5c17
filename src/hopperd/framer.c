/* SPDX-License-Identifier: MIT */
/* Framing (see framer.h). The framer keeps only resynchronisation state;
 * the caller owns the buffer and removes the consumed bytes. Every length
 * read from the peer is checked against max_record before it is used, and
 * no path indexes past n. */
#include "framer.h"

#include <stdio.h>
#include <string.h>

#define OCTET_MAX_DIGITS 10

void
hd_framer_init(struct hd_framer *f, int format, size_t max_record)
{
    memset(f, 0, sizeof(*f));
    f->format = format;
    f->max_record = max_record;
}

size_t
hd_framer_buffer_size(const struct hd_framer *f)
{
    if (f->format == HD_FMT_OCTET) {
        return f->max_record + OCTET_MAX_DIGITS + 1;
    }
    if (f->format == HD_FMT_NATIVE) {
        return f->max_record + HD_WIRE_HDR;
    }
    return f->max_record + 1;
}

static int
next_line(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed, const uint8_t **rec,
          size_t *reclen)
{
    if (f->skipping_line) {
        const uint8_t *nl = memchr(p, '\n', n);
        if (nl == NULL) {
            *consumed = n;
            return n > 0 ? HD_FRAME_SKIP : HD_FRAME_NEED_MORE;
        }
        f->skipping_line = 0;
        *consumed = (size_t)(nl - p) + 1;
        return HD_FRAME_SKIP;
    }
    size_t window = n < f->max_record + 1 ? n : f->max_record + 1;
    const uint8_t *nl = memchr(p, '\n', window);
    if (nl != NULL) {
        *rec = p;
        *reclen = (size_t)(nl - p);
        *consumed = *reclen + 1;
        return HD_FRAME_RECORD;
    }
    if (n <= f->max_record) {
        return HD_FRAME_NEED_MORE;
    }
    /* Over-long: drop through the next newline, or everything we have and
     * keep dropping until one arrives. */
    nl = memchr(p + window, '\n', n - window);
    if (nl != NULL) {
        *consumed = (size_t)(nl - p) + 1;
    } else {
        *consumed = n;
        f->skipping_line = 1;
    }
    return HD_FRAME_OVERSIZE;
}

static int
next_octet(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed, const uint8_t **rec,
           size_t *reclen)
{
    if (f->skip_left > 0) {
        size_t take = f->skip_left < n ? (size_t)f->skip_left : n;
        f->skip_left -= take;
        *consumed = take;
        return take > 0 ? HD_FRAME_SKIP : HD_FRAME_NEED_MORE;
    }
    if (n == 0) {
        return HD_FRAME_NEED_MORE;
    }
    if (p[0] < '1' || p[0] > '9') {
        return HD_FRAME_BAD;
    }
    uint64_t len = 0;
    size_t i = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        if (i == OCTET_MAX_DIGITS) {
            return HD_FRAME_BAD;
        }
        len = len * 10 + (uint64_t)(p[i] - '0');
        i++;
    }
    if (i == n) {
        return HD_FRAME_NEED_MORE;
    }
    if (p[i] != ' ') {
        return HD_FRAME_BAD;
    }
    size_t hdr = i + 1;
    if (len > f->max_record) {
        size_t have = n - hdr;
        size_t take = len < have ? (size_t)len : have;
        f->skip_left = len - take;
        *consumed = hdr + take;
        return HD_FRAME_OVERSIZE;
    }
    if (n - hdr < len) {
        return HD_FRAME_NEED_MORE;
    }
    *rec = p + hdr;
    *reclen = (size_t)len;
    *consumed = hdr + (size_t)len;
    return HD_FRAME_RECORD;
}

/* native: 4-byte big-endian length, then that many bytes (PROTOCOL.md §2).
 * max_record is the largest frame payload accepted. */
static int
next_native(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed, const uint8_t **rec,
            size_t *reclen)
{
    size_t size;
    if (hd_wire_frame_size(p, n, f->max_record, &size) < 0) {
        return HD_FRAME_BAD;
    }
    if (size == 0 || n < size) {
        return HD_FRAME_NEED_MORE;
    }
    *rec = p + HD_WIRE_HDR;
    *reclen = size - HD_WIRE_HDR;
    *consumed = size;
    return HD_FRAME_RECORD;
}

int
hd_framer_next(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed,
               const uint8_t **rec, size_t *reclen)
{
    *consumed = 0;
    *rec = NULL;
    *reclen = 0;
    if (f->format == HD_FMT_OCTET) {
        return next_octet(f, p, n, consumed, rec, reclen);
    }
    if (f->format == HD_FMT_NATIVE) {
        return next_native(f, p, n, consumed, rec, reclen);
    }
    return next_line(f, p, n, consumed, rec, reclen);
}

int
hd_framer_eof(struct hd_framer *f, const uint8_t *p, size_t n, const uint8_t **rec, size_t *reclen)
{
    *rec = NULL;
    *reclen = 0;
    if (n == 0 || f->skipping_line || f->skip_left > 0) {
        return HD_FRAME_NEED_MORE;
    }
    if (f->format != HD_FMT_LINES) {
        return HD_FRAME_BAD;
    }
    if (n > f->max_record) {
        return HD_FRAME_OVERSIZE;
    }
    *rec = p;
    *reclen = n;
    return HD_FRAME_RECORD;
}

size_t
hd_encode_record(int format, const void *data, size_t len, uint8_t *out, size_t cap)
{
    if (format == HD_FMT_OCTET) {
        char hdr[24];
        int h = snprintf(hdr, sizeof(hdr), "%zu ", len);
        if (h < 0 || (size_t)h + len > cap) {
            return 0;
        }
        memcpy(out, hdr, (size_t)h);
        if (len > 0) {
            memcpy(out + h, data, len);
        }
        return (size_t)h + len;
    }
    if (len + 1 > cap) {
        return 0;
    }
    if (len > 0) {
        memcpy(out, data, len);
    }
    out[len] = '\n';
    return len + 1;
}
