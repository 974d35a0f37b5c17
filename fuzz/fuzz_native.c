/* SPDX-License-Identifier: MIT */
/* Target functions: hd_proto_frame_len hd_proto_parse hd_proto_records_begin
 *                   hd_proto_next_record, and the encoders hd_proto_put_*
 *                   (src/hopperd/proto.c: the `native` protocol decoder,
 *                   docs/PROTOCOL.md)
 * Property: on an arbitrary byte stream cut into frames the way a connection
 * is, the decoder never reads outside the frame, returns 0 or -1 with a
 * reason, and is deterministic (a second parse gives the same message).
 * Every slice it returns (queue, message, records) lies inside the frame;
 * a parsed send/records frame yields exactly `nrecords` records through
 * hd_proto_next_record and then -1. Round trip: a parsed message encoded
 * again with the matching hd_proto_put_* and parsed again gives the same
 * op, id, numbers, strings and records (strings with a NUL byte cannot be
 * re-encoded through the C-string encoders and are skipped).
 *
 * Input: the stream itself: frames of a 4-byte big-endian length and a
 * msgpack payload, back to back; a length past the end of the input stops
 * the walk (as a connection would wait for more bytes). */
#include "fuzz_common.h"

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_slice(const struct hd_slice *s, const uint8_t *p, size_t n, const char *what)
{
    if (s->n == 0) {
        return;
    }
    FZ_CHECK(s->p != NULL && s->p >= p && s->p + s->n <= p + n, "%s slice outside the frame",
             what);
}

/* The records of a parsed send/records message, all inside the frame. */
static size_t
walk_records(const uint8_t *p, size_t n, const struct hd_msg *m, struct hd_slice *out, size_t cap)
{
    size_t cur;
    struct hd_slice rec;
    size_t k = 0;
    hd_proto_records_begin(m, &cur);
    FZ_CHECK(cur <= n, "records offset %zu past %zu", cur, n);
    while (k < m->nrecords) {
        FZ_CHECK(hd_proto_next_record(p, n, &cur, &rec) == 0, "record %zu of %llu missing", k,
                 (unsigned long long)m->nrecords);
        check_slice(&rec, p, n, "record");
        FZ_CHECK(cur <= n, "cursor %zu past %zu", cur, n);
        if (k < cap) {
            out[k] = rec;
        }
        k++;
    }
    return k;
}

static int
same_slice(const struct hd_slice *a, const struct hd_slice *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

/* NUL-terminated copy, or NULL when the slice holds a NUL (not encodable). */
static char *
cstr(const struct hd_slice *s)
{
    if (s->n > 0 && memchr(s->p, 0, s->n) != NULL) {
        return NULL;
    }
    char *c = malloc(s->n + 1);
    FZ_CHECK(c != NULL, "out of memory");
    if (s->n > 0) {
        memcpy(c, s->p, s->n);
    }
    c[s->n] = '\0';
    return c;
}

#define MAX_RECS 4096

static void
roundtrip(const uint8_t *p, size_t n, const struct hd_msg *m)
{
    static struct hd_slice recs[MAX_RECS];
    static struct hd_slice recs2[MAX_RECS];
    size_t nrec = 0;
    if (m->op == HD_OP_SEND || m->op == HD_OP_RECORDS) {
        nrec = walk_records(p, n, m, recs, MAX_RECS);
        if (nrec > MAX_RECS) {
            return;
        }
    }
    char *queue = cstr(&m->queue);
    char *message = cstr(&m->message);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = -2;
    switch (m->op) {
    case HD_OP_HELLO:
        if (queue != NULL) {
            rc = hd_proto_put_hello(&sb, m->max_frame, m->max_record, queue, m->idle_timeout);
        }
        break;
    case HD_OP_SEND:
        if (queue != NULL) {
            rc = hd_proto_put_send(&sb, m->id, m->queue.n > 0 ? queue : NULL, recs, nrec);
        }
        break;
    case HD_OP_OK:
        rc = hd_proto_put_ok(&sb, m->id, m->count, m->dropped);
        break;
    case HD_OP_ERROR:
        if (message != NULL && m->code != HD_CODE_NONE) {
            rc = hd_proto_put_error(&sb, m->id, m->code, message);
        }
        break;
    case HD_OP_SUBSCRIBE:
        if (queue != NULL) {
            rc = hd_proto_put_subscribe(&sb, m->id, m->queue.n > 0 ? queue : NULL, m->window);
        }
        break;
    case HD_OP_RECORDS:
        rc = hd_proto_put_records(&sb, m->first, m->last, recs, nrec);
        break;
    case HD_OP_ACK:
        rc = hd_proto_put_ack(&sb, m->seq);
        break;
    default:
        FZ_CHECK(0, "parse accepted op %d", m->op);
    }
    if (rc == -2) {
        goto out;
    }
    FZ_CHECK(rc == 0, "encoder failed");
    uint32_t len;
    FZ_CHECK(hd_proto_frame_len((const uint8_t *)sb.data, sb.size, &len) == 0,
             "encoded frame has no header");
    FZ_CHECK((size_t)len + HD_PROTO_HDR == sb.size, "encoded length %u, frame %zu", len,
             sb.size);
    const uint8_t *q = (const uint8_t *)sb.data + HD_PROTO_HDR;
    struct hd_msg m2;
    const char *why;
    FZ_CHECK(hd_proto_parse(q, len, &m2, &why) == 0, "re-encoded op %d does not parse: %s", m->op,
             why != NULL ? why : "?");
    FZ_CHECK(m2.op == m->op, "op %d became %d", m->op, m2.op);
    switch (m->op) {
    case HD_OP_HELLO:
        FZ_CHECK(m2.max_frame == m->max_frame && m2.max_record == m->max_record &&
                     m2.idle_timeout == m->idle_timeout && same_slice(&m2.queue, &m->queue),
                 "hello changed");
        break;
    case HD_OP_SEND:
    case HD_OP_RECORDS:
        FZ_CHECK(m2.nrecords == nrec, "records %llu became %llu", (unsigned long long)nrec,
                 (unsigned long long)m2.nrecords);
        FZ_CHECK(walk_records(q, len, &m2, recs2, MAX_RECS) == nrec, "record walk differs");
        for (size_t i = 0; i < nrec; i++) {
            FZ_CHECK(same_slice(&recs[i], &recs2[i]), "record %zu changed", i);
        }
        if (m->op == HD_OP_SEND) {
            FZ_CHECK(m2.id == m->id && same_slice(&m2.queue, &m->queue), "send changed");
        } else {
            FZ_CHECK(m2.first == m->first && m2.last == m->last, "records range changed");
        }
        break;
    case HD_OP_OK:
        FZ_CHECK(m2.id == m->id && m2.count == m->count && m2.dropped == m->dropped,
                 "ok changed");
        break;
    case HD_OP_ERROR:
        FZ_CHECK(m2.id == m->id && m2.code == m->code && same_slice(&m2.message, &m->message),
                 "error changed");
        break;
    case HD_OP_SUBSCRIBE:
        FZ_CHECK(m2.id == m->id && m2.window == m->window && same_slice(&m2.queue, &m->queue),
                 "subscribe changed");
        break;
    case HD_OP_ACK:
        FZ_CHECK(m2.seq == m->seq, "ack changed");
        break;
    default:
        break;
    }
out:
    msgpack_sbuffer_destroy(&sb);
    free(queue);
    free(message);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FZ_MAX_INPUT) {
        return 0;
    }
    size_t off = 0;
    for (;;) {
        uint32_t len;
        if (hd_proto_frame_len(data + off, size - off, &len) < 0) {
            FZ_CHECK(size - off < HD_PROTO_HDR, "no header with %zu bytes left", size - off);
            break;
        }
        if (len > size - off - HD_PROTO_HDR) {
            break;
        }
        /* A copy of exactly the payload, so ASan catches any overread. */
        uint8_t *p = malloc(len ? len : 1);
        FZ_CHECK(p != NULL, "out of memory");
        memcpy(p, data + off + HD_PROTO_HDR, len);
        struct hd_msg m, again;
        const char *why = NULL, *why2 = NULL;
        int rc = hd_proto_parse(p, len, &m, &why);
        int rc2 = hd_proto_parse(p, len, &again, &why2);
        FZ_CHECK(rc == 0 || rc == -1, "parse returned %d", rc);
        FZ_CHECK(rc == rc2 && why == why2, "parse is not deterministic");
        if (rc == 0) {
            FZ_CHECK(why == NULL, "success with a reason");
            FZ_CHECK(memcmp(&m, &again, sizeof(m)) == 0, "parse is not deterministic");
            check_slice(&m.queue, p, len, "queue");
            check_slice(&m.message, p, len, "message");
            roundtrip(p, len, &m);
        } else {
            FZ_CHECK(why != NULL, "failure without a reason");
        }
        free(p);
        off += HD_PROTO_HDR + len;
    }
    return 0;
}
