/* SPDX-License-Identifier: MIT */
/* Target functions: hd_framer_init hd_framer_buffer_size hd_framer_next
 *                   hd_framer_eof (src/hopperd/framer.c: lines and RFC 6587
 *                   octet-counted framing)
 * Property: on an arbitrary byte stream the framers never read outside the
 * bytes given, return only the documented codes, consume nothing on
 * NEED_MORE and something on RECORD/OVERSIZE/SKIP, and return records inside
 * the consumed bytes and no longer than max_record. A connection buffer of
 * hd_framer_buffer_size() bytes never fills up without a frame (no
 * deadlock), and feeding the stream in arbitrary chunks through that buffer
 * gives exactly the same records, the same number of over-long records and
 * the same BAD verdict as feeding it all at once.
 *
 * Input: byte 0: bit 0 format (0 lines, 1 octet-counted), bits 1-2
 * max_record (1, 16, 256, 65536); byte 1 seeds the chunk sizes (1..64
 * bytes, deterministic); the rest is the stream. */
#include "fuzz_common.h"

#include "config.h"
#include "framer.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a connection saw: records (concatenated, with lengths), counts. */
typedef struct events {
    uint8_t *bytes;
    size_t nbytes;
    size_t *lens;
    size_t nrec;
    size_t cap_rec;
    size_t oversize;
    int bad;
} events;

static void
ev_record(events *e, const uint8_t *p, size_t len)
{
    if (e->nrec == e->cap_rec) {
        e->cap_rec = e->cap_rec ? e->cap_rec * 2 : 64;
        size_t *nl = realloc(e->lens, e->cap_rec * sizeof(*nl));
        FZ_CHECK(nl != NULL, "out of memory");
        e->lens = nl;
    }
    /* Record bytes never exceed the stream: bytes was sized for it. */
    if (len > 0) {
        memcpy(e->bytes + e->nbytes, p, len);
    }
    e->nbytes += len;
    e->lens[e->nrec++] = len;
}

/* One call of hd_framer_next on p[0..n) with its invariants. */
static int
step(struct hd_framer *f, const uint8_t *p, size_t n, size_t *consumed, events *e)
{
    const uint8_t *rec = NULL;
    size_t reclen = 0;
    int rc = hd_framer_next(f, p, n, consumed, &rec, &reclen);
    FZ_CHECK(rc >= HD_FRAME_NEED_MORE && rc <= HD_FRAME_BAD, "rc %d", rc);
    FZ_CHECK(*consumed <= n, "consumed %zu of %zu", *consumed, n);
    switch (rc) {
    case HD_FRAME_NEED_MORE:
        FZ_CHECK(*consumed == 0, "NEED_MORE consumed %zu", *consumed);
        break;
    case HD_FRAME_RECORD:
        FZ_CHECK(*consumed > 0, "RECORD consumed nothing");
        FZ_CHECK(reclen <= f->max_record, "record of %zu > max %zu", reclen, f->max_record);
        FZ_CHECK(reclen == 0 || (rec >= p && rec + reclen <= p + *consumed),
                 "record outside the consumed bytes");
        ev_record(e, rec, reclen);
        break;
    case HD_FRAME_OVERSIZE:
        FZ_CHECK(*consumed > 0, "OVERSIZE consumed nothing");
        e->oversize++;
        break;
    case HD_FRAME_SKIP:
        FZ_CHECK(*consumed > 0, "SKIP consumed nothing");
        break;
    default:
        e->bad = 1;
        break;
    }
    return rc;
}

static void
at_eof(struct hd_framer *f, const uint8_t *p, size_t n, events *e)
{
    const uint8_t *rec = NULL;
    size_t reclen = 0;
    int rc = hd_framer_eof(f, p, n, &rec, &reclen);
    FZ_CHECK(rc == HD_FRAME_NEED_MORE || rc == HD_FRAME_RECORD || rc == HD_FRAME_OVERSIZE ||
                 rc == HD_FRAME_BAD,
             "eof rc %d", rc);
    if (rc == HD_FRAME_RECORD) {
        FZ_CHECK(reclen <= f->max_record && (reclen == 0 || (rec >= p && rec + reclen <= p + n)),
                 "eof record outside the buffer or too long");
        ev_record(e, rec, reclen);
    } else if (rc == HD_FRAME_OVERSIZE) {
        e->oversize++;
    } else if (rc == HD_FRAME_BAD) {
        e->bad = 1;
    }
}

/* The whole stream in one buffer. */
static void
run_whole(int format, size_t max_record, const uint8_t *s, size_t n, events *e)
{
    struct hd_framer f;
    hd_framer_init(&f, format, max_record);
    size_t off = 0;
    for (;;) {
        size_t consumed = 0;
        int rc = step(&f, s + off, n - off, &consumed, e);
        if (rc == HD_FRAME_BAD) {
            return;
        }
        if (rc == HD_FRAME_NEED_MORE) {
            break;
        }
        off += consumed;
    }
    at_eof(&f, s + off, n - off, e);
}

/* The stream through a connection buffer of hd_framer_buffer_size() bytes,
 * arriving in chunks of 1..64 bytes. */
static void
run_chunked(int format, size_t max_record, uint8_t seed, const uint8_t *s, size_t n, events *e)
{
    struct hd_framer f;
    hd_framer_init(&f, format, max_record);
    size_t cap = hd_framer_buffer_size(&f);
    FZ_CHECK(cap > max_record, "buffer size %zu for max_record %zu", cap, max_record);
    /* Exactly cap bytes, so that ASan sees any read past the buffer. */
    uint8_t *buf = malloc(cap);
    FZ_CHECK(buf != NULL, "out of memory");
    size_t len = 0;
    size_t in = 0;
    uint32_t x = 0x9e3779b9u ^ seed;
    for (;;) {
        /* Frame what the buffer holds. */
        for (;;) {
            size_t consumed = 0;
            int rc = step(&f, buf, len, &consumed, e);
            if (rc == HD_FRAME_BAD) {
                free(buf);
                return;
            }
            if (rc == HD_FRAME_NEED_MORE) {
                break;
            }
            memmove(buf, buf + consumed, len - consumed);
            len -= consumed;
        }
        if (in == n) {
            break;
        }
        FZ_CHECK(len < cap, "buffer of %zu bytes full without a frame (deadlock)", cap);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t chunk = 1 + (x % 64);
        if (chunk > n - in) {
            chunk = n - in;
        }
        if (chunk > cap - len) {
            chunk = cap - len;
        }
        memcpy(buf + len, s + in, chunk);
        len += chunk;
        in += chunk;
    }
    at_eof(&f, buf, len, e);
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static const size_t max_records[4] = {1, 16, 256, 65536};
    int format = (data[0] & 1) ? HD_FMT_OCTET : HD_FMT_LINES;
    size_t max_record = max_records[(data[0] >> 1) & 3];
    const uint8_t *s = data + 2;
    size_t n = size - 2;

    events a = {0};
    events b = {0};
    a.bytes = malloc(n + 1);
    b.bytes = malloc(n + 1);
    FZ_CHECK(a.bytes != NULL && b.bytes != NULL, "out of memory");
    run_whole(format, max_record, s, n, &a);
    run_chunked(format, max_record, data[1], s, n, &b);

    /* Same verdict, same records (also those before a malformed frame). */
    FZ_CHECK(a.bad == b.bad, "BAD whole %d, chunked %d", a.bad, b.bad);
    FZ_CHECK(a.nrec == b.nrec, "records whole %zu, chunked %zu", a.nrec, b.nrec);
    FZ_CHECK(a.oversize == b.oversize, "over-long whole %zu, chunked %zu", a.oversize,
             b.oversize);
    FZ_CHECK(a.nbytes == b.nbytes && (a.nbytes == 0 || memcmp(a.bytes, b.bytes, a.nbytes) == 0),
             "record bytes differ between whole and chunked feeding");
    for (size_t i = 0; i < a.nrec; i++) {
        FZ_CHECK(a.lens[i] == b.lens[i], "record %zu: %zu vs %zu bytes", i, a.lens[i], b.lens[i]);
    }
    free(a.bytes);
    free(b.bytes);
    free(a.lens);
    free(b.lens);
    return 0;
}
