/* SPDX-License-Identifier: MIT */
/* Target functions: the listener thread of hopperd as it runs (loop.c:
 *                   accept, conn_readable/conn_process, batching, EOF and
 *                   closing; conn.c reads and buffer growth; ingest.c;
 *                   native.c requests, subscribe.c subscriptions and acks),
 *                   fed one client connection's byte stream (issue 15).
 * Linked with hopperd_objs (and so libhopper) only, not hopper_internal:
 * one copy of the library, the daemon's.
 * Setup (once per process): hd_fixture.h, the real listener thread over
 * three unix-socket sources (lines, octet-counted, native with subscribe
 * allowed) and their queues. Per input: connect to one source, write the
 * stream in chunks, half-close, read every reply until the daemon closes.
 * Property:
 *   - the daemon closes the connection within 5 s of the client's EOF (no
 *     hang, no stalled framing) and never crashes;
 *   - lines / octet-counted: the queue receives exactly the records that
 *     hd_framer_next + hd_framer_eof find in the whole stream, in order,
 *     byte for byte, up to a malformed frame; over-long records are counted
 *     as oversize drops, one each; a malformed stream counts one bad frame;
 *   - native: the replies are whole frames that hd_proto_parse accepts, the
 *     first a hello; ok, error, records only; error codes are known; when
 *     no records were delivered to the client (no RECORDS reply), the queue
 *     holds exactly the records the ok replies counted.
 * Input: byte 0: bits 0-1 the source (0 lines, 1 octet-counted, 2-3
 * native); bits 2-7: chunk size 1 + 61 * v bytes (the client's writes).
 * The rest is the stream. */
#include "hd_fixture.h"

#include "framer.h"
#include "proto.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RECORD 4096u /* the queues' max_record_bytes (hd_fixture.h) */
#define CLOSE_WAIT_MS 5000

/* Everything the queue holds, taken out (the listener thread does not
 * consume these queues while no subscriber is attached). */
typedef struct got {
    uint8_t *buf;
    size_t len;
    size_t cap;
    size_t n;
} got;

static void
drain(struct hd_queue_rt *qr, got *g)
{
    for (;;) {
        hopper_record r;
        int rc = hopper_recv_ack(qr->q, &r, 0);
        if (rc == -EAGAIN) {
            return;
        }
        FZ_CHECK(rc == 0, "drain: %s", hopper_err_name(rc));
        if (g == NULL) {
            continue;
        }
        if (g->len + r.len + 4 > g->cap) {
            size_t ncap = (g->len + r.len + 4) * 2;
            uint8_t *nb = realloc(g->buf, ncap);
            FZ_CHECK(nb != NULL, "out of memory");
            g->buf = nb;
            g->cap = ncap;
        }
        uint32_t l = (uint32_t)r.len;
        memcpy(g->buf + g->len, &l, 4);
        if (r.len > 0) {
            memcpy(g->buf + g->len + 4, r.data, r.len);
        }
        g->len += 4 + r.len;
        g->n++;
    }
}

/* Talk to source `si`: write the stream in chunks, half-close, collect the
 * replies until the daemon closes. */
typedef struct bytes {
    uint8_t *data;
    size_t len;
    size_t cap;
} bytes;

static void
bytes_append(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t ncap = (b->len + n) * 2;
        uint8_t *nb = realloc(b->data, ncap);
        FZ_CHECK(nb != NULL, "out of memory");
        b->data = nb;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void
converse(size_t si, const uint8_t *p, size_t n, size_t chunk, bytes *replies)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FZ_CHECK(fd >= 0, "socket");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t pl = strlen(cfg->sources[si].path);
    FZ_CHECK(pl < sizeof(sa.sun_path), "socket path too long");
    memcpy(sa.sun_path, cfg->sources[si].path, pl + 1);
    FZ_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", sa.sun_path,
             strerror(errno));
    FZ_CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "nonblock");
    size_t off = 0;
    int shut = 0;
    uint64_t deadline = 0;
    uint8_t rb[16384];
    for (;;) {
        if (off == n && !shut) {
            FZ_CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown");
            shut = 1;
            deadline = now_ms() + CLOSE_WAIT_MS;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN | (off < n ? POLLOUT : 0)};
        int pr = poll(&pf, 1, 100);
        FZ_CHECK(pr >= 0 || errno == EINTR, "poll");
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(fd, rb, sizeof(rb));
            if (r == 0 || (r < 0 && errno == ECONNRESET)) {
                break; /* the daemon closed */
            }
            if (r > 0) {
                bytes_append(replies, rb, (size_t)r);
            }
        }
        if ((pf.revents & POLLOUT) && off < n) {
            size_t k = n - off < chunk ? n - off : chunk;
            ssize_t w = send(fd, p + off, k, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                sched_yield(); /* let the listener take this chunk alone */
            } else if (w < 0 && errno == EPIPE) {
                off = n; /* it closed on us (malformed input): read the rest */
            }
        }
        FZ_CHECK(!shut || now_ms() < deadline,
                 "source %s: connection still open %d ms after the client's EOF",
                 cfg->sources[si].s.name, CLOSE_WAIT_MS);
    }
    close(fd);
}

static void
check_framed(size_t si, const uint8_t *p, size_t n, const got *g, uint64_t oversize,
             uint64_t bad)
{
    struct hd_framer fr;
    hd_framer_init(&fr, cfg->sources[si].format, MAX_RECORD);
    size_t off = 0;
    size_t at = 0; /* in g->buf */
    size_t nrec = 0;
    uint64_t want_oversize = 0;
    uint64_t want_bad = 0;
    for (;;) {
        size_t consumed = 0;
        const uint8_t *rec = NULL;
        size_t reclen = 0;
        int rc = hd_framer_next(&fr, p + off, n - off, &consumed, &rec, &reclen);
        if (rc == HD_FRAME_NEED_MORE) {
            rc = hd_framer_eof(&fr, p + off, n - off, &rec, &reclen);
            consumed = n - off;
            if (rc == HD_FRAME_NEED_MORE) {
                break;
            }
        }
        if (rc == HD_FRAME_BAD) {
            want_bad = 1;
            break;
        }
        if (rc == HD_FRAME_OVERSIZE) {
            want_oversize++;
        } else if (rc == HD_FRAME_RECORD) {
            FZ_CHECK(nrec < g->n, "record %zu (%zu bytes) framed, not in the queue", nrec, reclen);
            uint32_t l;
            memcpy(&l, g->buf + at, 4);
            FZ_CHECK(l == reclen && memcmp(g->buf + at + 4, rec, reclen) == 0,
                     "record %zu: queue holds %u bytes, framed %zu (or other bytes)", nrec, l,
                     reclen);
            at += 4 + reclen;
            nrec++;
        }
        off += consumed;
        if (off >= n && rc != HD_FRAME_RECORD && rc != HD_FRAME_OVERSIZE) {
            break;
        }
        if (consumed == 0) {
            break;
        }
    }
    FZ_CHECK(nrec == g->n, "%zu records framed, the queue got %zu", nrec, g->n);
    FZ_CHECK(oversize == want_oversize, "oversize drops %llu, framed %llu",
             (unsigned long long)oversize, (unsigned long long)want_oversize);
    FZ_CHECK(bad == want_bad, "bad frames %llu, framed %llu", (unsigned long long)bad,
             (unsigned long long)want_bad);
}

static void
check_native(const bytes *rep, const got *g)
{
    size_t off = 0;
    size_t nframes = 0;
    uint64_t ok_count = 0;
    int saw_records = 0;
    while (off < rep->len) {
        uint32_t len;
        FZ_CHECK(hd_proto_frame_len(rep->data + off, rep->len - off, &len) == 0,
                 "reply %zu: a partial frame header", nframes);
        FZ_CHECK(len <= rep->len - off - HD_PROTO_HDR, "reply %zu: a partial frame", nframes);
        struct hd_msg m;
        const char *why = NULL;
        FZ_CHECK(hd_proto_parse(rep->data + off + HD_PROTO_HDR, len, &m, &why) == 0,
                 "reply %zu does not parse: %s", nframes, why ? why : "?");
        if (nframes == 0) {
            FZ_CHECK(m.op == HD_OP_HELLO, "first reply is op %d, not hello", m.op);
        } else {
            FZ_CHECK(m.op == HD_OP_OK || m.op == HD_OP_ERROR || m.op == HD_OP_RECORDS,
                     "reply %zu: op %d", nframes, m.op);
        }
        if (m.op == HD_OP_ERROR) {
            FZ_CHECK(m.code > HD_CODE_NONE && m.code < HD_CODE_NCODES, "reply %zu: code %d",
                     nframes, m.code);
        }
        if (m.op == HD_OP_OK) {
            ok_count += m.count;
        }
        saw_records |= m.op == HD_OP_RECORDS;
        off += HD_PROTO_HDR + len;
        nframes++;
    }
    FZ_CHECK(nframes > 0, "no hello");
    if (!saw_records) {
        FZ_CHECK(g->n == ok_count, "ok replies counted %llu records, the queue holds %zu",
                 (unsigned long long)ok_count, g->n);
    } else {
        FZ_CHECK(g->n <= ok_count, "the queue holds %zu records, ok replies counted %llu", g->n,
                 (unsigned long long)ok_count);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    if (cfg == NULL) {
        fz_hd_start("conn", 0);
    }
    size_t si = (data[0] & 3) > 2 ? 2 : (size_t)(data[0] & 3);
    size_t chunk = 1 + 61u * (size_t)(data[0] >> 2);
    struct hd_source_rt *src = &dmn.sources[si];
    struct hd_queue_rt *qr = src->queue;
    uint64_t oversize0 = atomic_load(&qr->drops[HD_DROP_OVERSIZE]);
    uint64_t bad0 = atomic_load(&src->bad_frames);
    bytes replies = {0};
    converse(si, data + 1, size - 1, chunk, &replies);
    got g = {0};
    drain(qr, &g);
    uint64_t oversize = atomic_load(&qr->drops[HD_DROP_OVERSIZE]) - oversize0;
    uint64_t bad = atomic_load(&src->bad_frames) - bad0;
    if (cfg->sources[si].format == HD_FMT_NATIVE) {
        check_native(&replies, &g);
    } else {
        FZ_CHECK(replies.len == 0, "%zu reply bytes on a %s source", replies.len,
                 hd_format_name(cfg->sources[si].format));
        check_framed(si, data + 1, size - 1, &g, oversize, bad);
    }
    free(g.buf);
    free(replies.data);
    return 0;
}
