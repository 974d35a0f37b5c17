/* SPDX-License-Identifier: MIT */
/* bench_native_sink: a counting downstream for hopperd's `native` tcp sink,
 * plus the load generator that feeds hopperd's `lines` source. Driven by
 * benches/relay-reset (issue 5: "downstream resets once mid-drain").
 *
 *   bench_native_sink serve PORT COUNT SIZE [RESET_AT=0] [TIMEOUT_S=120] [IDLE_S=15]
 *   bench_native_sink gen   PORT COUNT SIZE [TIMEOUT_S=120]
 *   bench_native_sink push  PORT CONNS COUNT SIZE BATCH INFLIGHT [TIMEOUT_S=120]
 *
 * push (benches/durable-pipeline, issue 14) is CONNS native producers, one
 * thread each, that keep up to INFLIGHT `send` batches of BATCH records
 * unanswered and count a record once the `ok` of its batch arrived.
 *
 * gen connects to 127.0.0.1:PORT and writes COUNT lines of exactly SIZE
 * bytes including the '\n', in the layout of ../shared/peers/tools/gen.c:
 * "seq=%010llu " and then a payload that is a function of seq and offset.
 *
 * serve listens on 127.0.0.1:PORT and speaks docs/PROTOCOL.md as a native
 * source would, as far as a native sink needs: `hello` on accept, then one
 * `ok` per `send` (anything else is answered BAD_FRAME and closed). The
 * codec is hopperd's own (src/hopperd/proto.c), so the bench exercises the
 * same reader and writer as hopperd. Each record must be a gen line without
 * its '\n'; its seq is taken from the prefix and its length and payload are
 * checked.
 *
 * A record counts as delivered only once the `ok` for its batch was
 * written: that is the point where a real downstream would have made it
 * durable, and hopperd acknowledges the records in its queue only after
 * reading that `ok`. So:
 *   received    records read off the wire, in any batch on any connection
 *   acked       records in batches answered `ok` (with repeats)
 *   unique      distinct seqs in 0..COUNT-1 that were acked
 *   lost        COUNT - unique; of those, lost_received_unacked arrived but
 *               were never acked (an unanswered batch hopperd did not resend)
 *   duplicates  acked - unique (allowed: delivery is at least once)
 *
 * RESET_AT > 0 simulates a downstream crash once: the first batch after
 * which `received` reaches RESET_AT is not answered; the connection is
 * closed with SO_LINGER 0 (an RST) instead. hopperd has not acknowledged
 * those records in its queue and must send them again on its next
 * connection; `unacked_redelivered` counts how many of them were acked
 * later, so it must end equal to `unacked_at_reset`. Later connections are
 * served normally.
 *
 * Order, per connection (a reconnect starts a fresh history, so redelivery
 * right after a reconnect is not an order break):
 *   order_breaks  records whose seq is not above every seq received earlier
 *                 on the same connection (hopperd sends in queue order, one
 *                 batch at a time, so every connection is strictly rising)
 *   gaps          records that skip ahead: the first record of a connection
 *                 whose seq is above the lowest seq not yet acked (hopperd
 *                 resumed past an unacknowledged record), or a later one
 *                 above the connection's highest seq + 1
 *   rewound       on connections after the first, how many seqs the first
 *                 record lies below the lowest seq not yet acked (records
 *                 acked before, delivered again)
 *
 * serve ends when every seq in 0..COUNT-1 has been acked (the last `ok` is
 * written first, then the connections are closed normally), after
 * TIMEOUT_S, or IDLE_S after the last record when records were seen. It
 * prints one `name value unit` line per figure on stdout, one line per
 * connection on stderr, and exits 0 only if nothing was lost and every
 * record was well formed.
 *
 * Single thread, poll(2); sockets are blocking for writes, bounded by
 * SO_SNDTIMEO, which is safe because a native sink reads every reply.
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include "proto.h"

/* Announced in hello: a native sink sends batches of at most
 * min(batch_bytes, max_frame / 2) bytes of records. */
#define SERVE_MAX_FRAME (4u * 1024u * 1024u)
#define SERVE_MAX_RECORD (64u * 1024u)
#define SERVE_MAX_CONNS 8
#define SEQ_PREFIX_LEN 15 /* "seq=%010llu " */
#define GEN_BUF_BYTES (256u * 1024u)

enum conn_end { END_OPEN = 0, END_EOF, END_RST, END_BAD, END_DONE, END_EXIT };
static const char *const conn_end_names[] = {"open", "eof", "rst", "bad_frame", "done", "exit"};

struct conn {
    int fd;
    unsigned num; /* 1-based, in accept order */
    uint8_t *buf; /* unread bytes of the current frame(s) */
    size_t len, cap;
    uint64_t records;   /* received on this connection */
    uint64_t batches;   /* `send` frames received */
    int has_max;        /* max_seq is valid */
    uint64_t first_seq; /* first record's seq (valid once has_max) */
    uint64_t max_seq;   /* highest seq received on this connection */
    uint64_t order_breaks;
    uint64_t gaps;
    int end; /* enum conn_end */
};

struct serve {
    uint64_t count;     /* expected seqs: 0..count-1 */
    size_t size;        /* gen line size including '\n'; records are size - 1 */
    uint64_t reset_at;  /* 0: never reset */
    uint8_t *rx;        /* [seq] times received, saturating at 255 */
    uint8_t *ack;       /* [seq] times acked, saturating at 255 */
    uint8_t *pending;   /* [seq] 1 while in the batch left unanswered by the reset */
    uint64_t ack_floor; /* every seq below it is acked */
    uint64_t received, acked, unique;
    uint64_t bad_format, bad_length, bad_payload, out_of_range;
    uint64_t order_breaks, gaps, rewound;
    uint64_t batches, connections, resets;
    uint64_t unacked_at_reset, unacked_redelivered;
    uint64_t reset_received;          /* `received` when the reset fired */
    uint64_t reset_first, reset_last; /* seq range of the unanswered batch */
    uint64_t t_start_ns, t_first_ns, t_last_ns, t_done_ns;
    uint64_t max_batch;
};

static int
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return -EINVAL;
    }
    *out = (uint64_t)v;
    return 0;
}

/* gen.c's payload byte at offset i of the record for seq. */
static inline char
payload_byte(uint64_t seq, size_t i)
{
    return (char)('a' + (int)((seq * 31u + (uint64_t)i) % 26u));
}

static void
fill_line(char *p, uint64_t seq, size_t size)
{
    char pre[32];
    int n = snprintf(pre, sizeof(pre), "seq=%010llu ", (unsigned long long)seq);
    assert(n == SEQ_PREFIX_LEN && (size_t)n < size);
    memcpy(p, pre, (size_t)n);
    for (size_t i = (size_t)n; i + 1 < size; i++) {
        p[i] = payload_byte(seq, i);
    }
    p[size - 1] = '\n';
}

static int
send_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return w < 0 ? -errno : -EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
listen_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* ---- serve ---- */

static void
conn_report(const struct conn *c)
{
    fprintf(stderr,
            "native_sink: conn %u: %llu records in %llu batches, seq %llu..%llu, "
            "order_breaks %llu, gaps %llu, end %s\n",
            c->num, (unsigned long long)c->records, (unsigned long long)c->batches,
            c->has_max ? (unsigned long long)c->first_seq : 0ull,
            c->has_max ? (unsigned long long)c->max_seq : 0ull, (unsigned long long)c->order_breaks,
            (unsigned long long)c->gaps, conn_end_names[c->end]);
}

static void
conn_close(struct conn *c, int end, int is_abort)
{
    if (is_abort) {
        /* SO_LINGER 0: close() sends an RST and drops anything unsent. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(c->fd);
    c->fd = -1;
    c->end = end;
    conn_report(c);
    free(c->buf);
    c->buf = NULL;
}

/* The seq of one record, or -1 if it does not start like a gen line. */
static int
record_seq(const struct hd_slice *rec, uint64_t *seq)
{
    if (rec->n < SEQ_PREFIX_LEN || memcmp(rec->p, "seq=", 4) != 0 ||
        rec->p[SEQ_PREFIX_LEN - 1] != ' ') {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 4; i < SEQ_PREFIX_LEN - 1; i++) {
        uint8_t d = rec->p[i];
        if (d < '0' || d > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(d - '0');
    }
    *seq = v;
    return 0;
}

/* Count one received record: validity, order on its connection. */
static void
note_received(struct serve *s, struct conn *c, const struct hd_slice *rec)
{
    uint64_t seq;
    s->received++;
    c->records++;
    if (record_seq(rec, &seq) < 0) {
        s->bad_format++;
        return;
    }
    if (rec->n != s->size - 1) {
        s->bad_length++;
    } else {
        for (size_t i = SEQ_PREFIX_LEN; i < rec->n; i++) {
            if ((char)rec->p[i] != payload_byte(seq, i)) {
                s->bad_payload++;
                break;
            }
        }
    }
    if (seq >= s->count) {
        s->out_of_range++;
        return;
    }
    if (!c->has_max) {
        c->has_max = 1;
        c->first_seq = seq;
        c->max_seq = seq;
        if (seq > s->ack_floor) {
            c->gaps++;
            s->gaps++;
        } else if (c->num > 1) {
            s->rewound += s->ack_floor - seq;
        }
    } else if (seq <= c->max_seq) {
        c->order_breaks++;
        s->order_breaks++;
    } else {
        if (seq > c->max_seq + 1) {
            c->gaps++;
            s->gaps++;
        }
        c->max_seq = seq;
    }
    if (s->rx[seq] < UINT8_MAX) {
        s->rx[seq]++;
    }
}

/* Count one record of a batch just answered `ok`. */
static void
note_acked(struct serve *s, const struct hd_slice *rec)
{
    uint64_t seq;
    /* Malformed records were counted once, in note_received. */
    if (record_seq(rec, &seq) < 0 || seq >= s->count) {
        return;
    }
    s->acked++;
    if (s->ack[seq] == 0) {
        s->unique++;
    }
    if (s->ack[seq] < UINT8_MAX) {
        s->ack[seq]++;
    }
    if (s->pending[seq]) {
        s->pending[seq] = 0;
        s->unacked_redelivered++;
    }
    while (s->ack_floor < s->count && s->ack[s->ack_floor] != 0) {
        s->ack_floor++;
    }
}

/* Remember the unanswered batch, so its redelivery can be checked. */
static void
note_pending(struct serve *s, const uint8_t *frame, size_t n, const struct hd_msg *m)
{
    size_t cur;
    struct hd_slice rec;
    int is_first = 1;
    hd_proto_records_begin(m, &cur);
    while (hd_proto_next_record(frame, n, &cur, &rec) == 0) {
        uint64_t seq;
        if (record_seq(&rec, &seq) < 0 || seq >= s->count) {
            continue;
        }
        if (is_first) {
            s->reset_first = seq;
            is_first = 0;
        }
        s->reset_last = seq;
        /* Only records not acked before must come back for lost == 0. */
        if (s->ack[seq] == 0 && !s->pending[seq]) {
            s->pending[seq] = 1;
            s->unacked_at_reset++;
        }
    }
}

/* Handle one frame. 0: keep the connection; > 0: it was closed (end). */
static int
serve_frame(struct serve *s, struct conn *c, const uint8_t *frame, size_t n)
{
    struct hd_msg m;
    const char *why;
    msgpack_sbuffer sb;
    if (hd_proto_parse(frame, n, &m, &why) < 0 || m.op != HD_OP_SEND) {
        fprintf(stderr, "native_sink: conn %u: unexpected frame (%s)\n", c->num,
                why != NULL ? why : "not a send");
        msgpack_sbuffer_init(&sb);
        if (hd_proto_put_error(&sb, m.id, HD_CODE_BAD_FRAME, "bench: only send is served") == 0) {
            (void)send_all(c->fd, sb.data, sb.size);
        }
        msgpack_sbuffer_destroy(&sb);
        conn_close(c, END_BAD, 0);
        return END_BAD;
    }
    uint64_t now = bn_now_ns();
    if (s->t_first_ns == 0) {
        s->t_first_ns = now;
    }
    s->t_last_ns = now;
    s->batches++;
    c->batches++;
    if (m.nrecords > s->max_batch) {
        s->max_batch = m.nrecords;
    }
    size_t cur;
    struct hd_slice rec;
    hd_proto_records_begin(&m, &cur);
    while (hd_proto_next_record(frame, n, &cur, &rec) == 0) {
        note_received(s, c, &rec);
    }
    if (s->reset_at > 0 && s->resets == 0 && s->received >= s->reset_at) {
        s->resets++;
        s->reset_received = s->received;
        note_pending(s, frame, n, &m);
        fprintf(stderr,
                "native_sink: conn %u: RST after %llu records received; batch %llu of %llu "
                "records (seq %llu..%llu) left unanswered\n",
                c->num, (unsigned long long)s->received, (unsigned long long)m.id,
                (unsigned long long)m.nrecords, (unsigned long long)s->reset_first,
                (unsigned long long)s->reset_last);
        conn_close(c, END_RST, 1);
        return END_RST;
    }
    msgpack_sbuffer_init(&sb);
    int rc = hd_proto_put_ok(&sb, m.id, m.nrecords, 0);
    if (rc == 0) {
        rc = send_all(c->fd, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0) {
        /* The `ok` may not have arrived: hopperd will send the batch again,
         * so these records are not acked here either. */
        fprintf(stderr, "native_sink: conn %u: writing ok: %s\n", c->num, strerror(-rc));
        conn_close(c, END_EOF, 0);
        return END_EOF;
    }
    hd_proto_records_begin(&m, &cur);
    while (hd_proto_next_record(frame, n, &cur, &rec) == 0) {
        note_acked(s, &rec);
    }
    if (s->unique == s->count && s->t_done_ns == 0) {
        s->t_done_ns = bn_now_ns();
    }
    return 0;
}

/* Read what is there and handle every whole frame. 0, or > 0 if closed. */
static int
serve_readable(struct serve *s, struct conn *c)
{
    if (c->cap - c->len < 64 * 1024) {
        size_t ncap = c->cap * 2;
        if (ncap > HD_PROTO_HDR + SERVE_MAX_FRAME + 64 * 1024) {
            ncap = HD_PROTO_HDR + SERVE_MAX_FRAME + 64 * 1024;
        }
        if (ncap > c->cap) {
            uint8_t *nb = realloc(c->buf, ncap);
            if (nb == NULL) {
                fprintf(stderr, "native_sink: out of memory\n");
                exit(1);
            }
            c->buf = nb;
            c->cap = ncap;
        }
    }
    ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    if (got <= 0) {
        conn_close(c, END_EOF, 0);
        return END_EOF;
    }
    c->len += (size_t)got;
    size_t off = 0;
    for (;;) {
        uint32_t flen;
        if (hd_proto_frame_len(c->buf + off, c->len - off, &flen) < 0) {
            break;
        }
        if (flen == 0 || flen > SERVE_MAX_FRAME) {
            fprintf(stderr, "native_sink: conn %u: frame length %u out of range\n", c->num, flen);
            conn_close(c, END_BAD, 0);
            return END_BAD;
        }
        if (c->len - off < HD_PROTO_HDR + (size_t)flen) {
            break;
        }
        int rc = serve_frame(s, c, c->buf + off + HD_PROTO_HDR, flen);
        if (rc != 0) {
            return rc;
        }
        off += HD_PROTO_HDR + (size_t)flen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static int
serve_accept(struct serve *s, int lfd, struct conn *conns, size_t *nconns)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    }
    if (*nconns == SERVE_MAX_CONNS) {
        close(fd);
        return 0;
    }
    struct timeval tv = {.tv_sec = 5};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = &conns[*nconns];
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->num = (unsigned)++s->connections;
    c->cap = 256 * 1024;
    c->buf = malloc(c->cap);
    if (c->buf == NULL) {
        close(fd);
        return -ENOMEM;
    }
    (*nconns)++;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = hd_proto_put_hello(&sb, SERVE_MAX_FRAME, SERVE_MAX_RECORD, "bench", 0);
    if (rc == 0) {
        rc = send_all(fd, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0) {
        /* c is the last slot: closing it and shrinking the set is enough. */
        conn_close(c, END_EOF, 0);
        (*nconns)--;
    }
    return 0;
}

static void
serve_print(const struct serve *s, const char *result)
{
    const char *b = "native_sink";
    uint64_t lost_unacked = 0;
    for (uint64_t i = 0; i < s->count; i++) {
        lost_unacked += s->rx[i] != 0 && s->ack[i] == 0;
    }
    double drain = s->t_first_ns != 0
                       ? bn_secs((s->t_done_ns != 0 ? s->t_done_ns : s->t_last_ns) - s->t_first_ns)
                       : 0.0;
    printf("%s.result %s -\n", b, result);
    printf("%s.expected %llu records\n", b, (unsigned long long)s->count);
    printf("%s.received %llu records\n", b, (unsigned long long)s->received);
    printf("%s.acked %llu records\n", b, (unsigned long long)s->acked);
    printf("%s.unique %llu records\n", b, (unsigned long long)s->unique);
    printf("%s.lost %llu records\n", b, (unsigned long long)(s->count - s->unique));
    printf("%s.lost_received_unacked %llu records\n", b, (unsigned long long)lost_unacked);
    printf("%s.duplicates %llu records\n", b, (unsigned long long)(s->acked - s->unique));
    printf("%s.order_breaks %llu records\n", b, (unsigned long long)s->order_breaks);
    printf("%s.gaps %llu records\n", b, (unsigned long long)s->gaps);
    printf("%s.rewound %llu records\n", b, (unsigned long long)s->rewound);
    printf("%s.resets %llu -\n", b, (unsigned long long)s->resets);
    printf("%s.reset_at_received %llu records\n", b, (unsigned long long)s->reset_received);
    printf("%s.unacked_at_reset %llu records\n", b, (unsigned long long)s->unacked_at_reset);
    printf("%s.unacked_redelivered %llu records\n", b, (unsigned long long)s->unacked_redelivered);
    printf("%s.bad_records %llu records\n", b,
           (unsigned long long)(s->bad_format + s->bad_length + s->bad_payload));
    printf("%s.out_of_range %llu records\n", b, (unsigned long long)s->out_of_range);
    printf("%s.connections %llu -\n", b, (unsigned long long)s->connections);
    printf("%s.batches %llu -\n", b, (unsigned long long)s->batches);
    printf("%s.max_batch %llu records\n", b, (unsigned long long)s->max_batch);
    printf("%s.drain_secs %.3f s\n", b, drain);
    printf("%s.drain_rate %.0f records/s\n", b, drain > 0 ? (double)s->unique / drain : 0.0);
    fflush(stdout);
}

static volatile sig_atomic_t got_signal;

static void
on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

static int
cmd_serve(int argc, char **argv)
{
    uint64_t port, timeout_s, idle_s, size;
    struct serve s = {0};
    if (argc < 5 || parse_u64(argv[2], &port) < 0 || port == 0 || port > 65535 ||
        parse_u64(argv[3], &s.count) < 0 || s.count == 0 || parse_u64(argv[4], &size) < 0 ||
        size <= SEQ_PREFIX_LEN || size > SERVE_MAX_RECORD ||
        parse_u64(bn_arg(argc, argv, 5, "0"), &s.reset_at) < 0 ||
        parse_u64(bn_arg(argc, argv, 6, "120"), &timeout_s) < 0 ||
        parse_u64(bn_arg(argc, argv, 7, "15"), &idle_s) < 0) {
        fprintf(stderr,
                "usage: %s serve PORT COUNT SIZE [RESET_AT=0] [TIMEOUT_S=120] "
                "[IDLE_S=15]\n",
                argv[0]);
        return 2;
    }
    s.size = (size_t)size;
    s.rx = calloc((size_t)s.count, 1);
    s.ack = calloc((size_t)s.count, 1);
    s.pending = calloc((size_t)s.count, 1);
    struct conn conns[SERVE_MAX_CONNS];
    size_t nconns = 0;
    int lfd = -1, status = 1;
    if (s.rx == NULL || s.ack == NULL || s.pending == NULL) {
        fprintf(stderr, "native_sink: out of memory for %llu seqs\n", (unsigned long long)s.count);
        goto out;
    }
    lfd = listen_loopback((uint16_t)port);
    if (lfd < 0) {
        fprintf(stderr, "native_sink: listen 127.0.0.1:%llu: %s\n", (unsigned long long)port,
                strerror(-lfd));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "native_sink: listening on 127.0.0.1:%llu, expecting %llu records\n",
            (unsigned long long)port, (unsigned long long)s.count);
    s.t_start_ns = bn_now_ns();
    uint64_t deadline = s.t_start_ns + timeout_s * 1000000000ull;
    const char *result = "timeout";
    for (;;) {
        uint64_t now = bn_now_ns();
        if (s.t_done_ns != 0) {
            result = "complete";
            break;
        }
        if (got_signal) {
            result = "signal";
            break;
        }
        if (now >= deadline) {
            break;
        }
        if (s.t_last_ns != 0 && now - s.t_last_ns >= idle_s * 1000000000ull) {
            result = "idle";
            break;
        }
        struct pollfd pfd[SERVE_MAX_CONNS + 1];
        pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (size_t i = 0; i < nconns; i++) {
            pfd[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        }
        int n = poll(pfd, (nfds_t)nconns + 1, 100);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "native_sink: poll: %s\n", strerror(errno));
            break;
        }
        if (n <= 0) {
            continue;
        }
        /* Connections first, highest index first, so removing one (the
         * last slot moves into its place) does not skip another. */
        for (size_t i = nconns; i-- > 0;) {
            if ((pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                continue;
            }
            if (serve_readable(&s, &conns[i]) != 0) {
                conns[i] = conns[nconns - 1];
                nconns--;
            }
        }
        if (pfd[0].revents & POLLIN) {
            int rc = serve_accept(&s, lfd, conns, &nconns);
            if (rc < 0) {
                fprintf(stderr, "native_sink: accept: %s\n", strerror(-rc));
            }
        }
    }
    for (size_t i = 0; i < nconns; i++) {
        conn_close(&conns[i], s.t_done_ns != 0 ? END_DONE : END_EXIT, 0);
    }
    nconns = 0;
    serve_print(&s, result);
    status = s.unique == s.count && s.bad_format + s.bad_length + s.bad_payload == 0 ? 0 : 1;
out:
    if (lfd >= 0) {
        close(lfd);
    }
    free(s.rx);
    free(s.ack);
    free(s.pending);
    return status;
}

/* ---- gen ---- */

static int
cmd_gen(int argc, char **argv)
{
    uint64_t port, count, size, timeout_s;
    if (argc < 5 || parse_u64(argv[2], &port) < 0 || port == 0 || port > 65535 ||
        parse_u64(argv[3], &count) < 0 || parse_u64(argv[4], &size) < 0 || size <= SEQ_PREFIX_LEN ||
        size > GEN_BUF_BYTES || parse_u64(bn_arg(argc, argv, 5, "120"), &timeout_s) < 0 ||
        timeout_s == 0) {
        fprintf(stderr, "usage: %s gen PORT COUNT SIZE [TIMEOUT_S=120]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "gen: socket: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "gen: connect 127.0.0.1:%llu: %s\n", (unsigned long long)port,
                strerror(errno));
        close(fd);
        return 1;
    }
    /* A relay that stops reading must not hang the run: each send gives up
     * after 1 s, and the whole run after TIMEOUT_S. */
    struct timeval tv = {.tv_sec = 1};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char *buf = malloc(GEN_BUF_BYTES);
    if (buf == NULL) {
        close(fd);
        return 1;
    }
    uint64_t t0 = bn_now_ns();
    uint64_t deadline = t0 + timeout_s * 1000000000ull;
    uint64_t seq = 0, written = 0;
    int err = 0;
    while (seq < count && err == 0) {
        size_t len = 0;
        while (seq < count && len + size <= GEN_BUF_BYTES) {
            fill_line(buf + len, seq, (size_t)size);
            len += (size_t)size;
            seq++;
        }
        size_t off = 0;
        while (off < len) {
            ssize_t w = send(fd, buf + off, len - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                written += (uint64_t)w;
                continue;
            }
            if (w < 0 && (errno == EINTR ||
                          ((errno == EAGAIN || errno == EWOULDBLOCK) && bn_now_ns() < deadline))) {
                continue;
            }
            err = w < 0 ? errno : EIO;
            break;
        }
    }
    double secs = bn_secs(bn_now_ns() - t0);
    shutdown(fd, SHUT_WR);
    /* The relay closes after reading the end of the stream; wait for that,
     * at most 2 s, so the last records are in before the count is checked. */
    tv.tv_sec = 2;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char scratch[256];
    while (recv(fd, scratch, sizeof(scratch), 0) > 0) {
    }
    close(fd);
    free(buf);
    uint64_t whole = written / size;
    printf("gen.sent %llu records\n", (unsigned long long)whole);
    printf("gen.bytes %llu B\n", (unsigned long long)written);
    printf("gen.secs %.3f s\n", secs);
    printf("gen.rate %.0f records/s\n", secs > 0 ? (double)whole / secs : 0.0);
    if (err != 0) {
        fprintf(stderr, "gen: send: %s after %llu records\n", strerror(err),
                (unsigned long long)whole);
        return 1;
    }
    return 0;
}


/* ---- push ---- */

/* One producer connection of `push`. */
struct pusher {
    uint16_t port;
    uint64_t count;    /* records this connection sends */
    uint64_t seq0;     /* seq of its first record */
    size_t size;
    uint32_t batch;
    uint32_t inflight; /* batches sent and not yet answered, at most */
    uint64_t deadline_ns;
    uint64_t acked;    /* records in batches answered `ok` */
    uint64_t refused;  /* records in batches answered with an error */
    uint64_t batches;
    int err;           /* 0, or an errno / EPROTO */
};

/* Read exactly n bytes (blocking, bounded by SO_RCVTIMEO and deadline). */
static int
recv_full(int fd, uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n > 0) {
        ssize_t got = recv(fd, p, n, 0);
        if (got > 0) {
            p += got;
            n -= (size_t)got;
            continue;
        }
        if (got < 0 && (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) &&
                                           bn_now_ns() < deadline_ns))) {
            continue;
        }
        return got < 0 ? errno : EPIPE;
    }
    return 0;
}

/* Read one frame into *buf (grown as needed) and parse it. */
static int
recv_msg(int fd, uint8_t **buf, size_t *cap, struct hd_msg *m, uint64_t deadline_ns)
{
    uint8_t hdr[HD_PROTO_HDR];
    int rc = recv_full(fd, hdr, sizeof(hdr), deadline_ns);
    uint32_t flen;
    if (rc != 0) {
        return rc;
    }
    if (hd_proto_frame_len(hdr, sizeof(hdr), &flen) < 0 || flen == 0 ||
        flen > SERVE_MAX_FRAME) {
        return EPROTO;
    }
    if (flen > *cap) {
        uint8_t *nb = realloc(*buf, flen);
        if (nb == NULL) {
            return ENOMEM;
        }
        *buf = nb;
        *cap = flen;
    }
    rc = recv_full(fd, *buf, flen, deadline_ns);
    if (rc != 0) {
        return rc;
    }
    const char *why;
    return hd_proto_parse(*buf, flen, m, &why) == 0 ? 0 : EPROTO;
}

static void *
push_main(void *arg)
{
    struct pusher *p = arg;
    uint8_t *rbuf = NULL;
    size_t rcap = 0;
    char *recs = malloc((size_t)p->batch * (p->size + 1));
    struct hd_slice *sl = calloc(p->batch, sizeof(*sl));
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (recs == NULL || sl == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        p->err = recs == NULL || sl == NULL ? ENOMEM : errno;
        goto out;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 1};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct hd_msg m;
    p->err = recv_msg(fd, &rbuf, &rcap, &m, p->deadline_ns); /* the source's hello */
    if (p->err == 0 && m.op != HD_OP_HELLO) {
        p->err = EPROTO;
    }
    uint64_t next = 0, id = 0, outstanding = 0;
    while (p->err == 0 && p->acked + p->refused < p->count) {
        while (outstanding < p->inflight && next < p->count) {
            uint32_t k = p->count - next < p->batch ? (uint32_t)(p->count - next) : p->batch;
            for (uint32_t i = 0; i < k; i++) {
                char *r = recs + (size_t)i * (p->size + 1);
                fill_line(r, p->seq0 + next + i, p->size + 1); /* the record without '\n' */
                sl[i] = (struct hd_slice){.p = (const uint8_t *)r, .n = p->size};
            }
            sb.size = 0;
            if (hd_proto_put_send(&sb, ++id, NULL, sl, k) < 0) {
                p->err = ENOMEM;
                break;
            }
            int rc = send_all(fd, sb.data, sb.size);
            if (rc < 0) {
                p->err = -rc;
                break;
            }
            next += k;
            outstanding++;
            p->batches++;
        }
        if (p->err != 0) {
            break;
        }
        p->err = recv_msg(fd, &rbuf, &rcap, &m, p->deadline_ns);
        if (p->err != 0) {
            break;
        }
        if (m.op == HD_OP_OK) {
            p->acked += m.count;
        } else {
            fprintf(stderr, "push: batch %llu answered %s (%s)\n", (unsigned long long)m.id,
                    m.op == HD_OP_ERROR ? "error" : "?", hd_code_name(m.code));
            p->err = EPROTO;
            break;
        }
        outstanding--;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    msgpack_sbuffer_destroy(&sb);
    free(rbuf);
    free(recs);
    free(sl);
    return NULL;
}

/* push PORT CONNS COUNT SIZE BATCH INFLIGHT [TIMEOUT_S=120]: CONNS native
 * producers, COUNT records of SIZE bytes in all, each connection keeping up
 * to INFLIGHT batches of BATCH records unanswered. A record counts once the
 * `ok` of its batch arrived (with durability = disk and fsync = always,
 * after its fdatasync). */
static int
cmd_push(int argc, char **argv)
{
    uint64_t port, conns, count, size, batch, inflight, timeout_s;
    if (argc < 8 || parse_u64(argv[2], &port) < 0 || port == 0 || port > 65535 ||
        parse_u64(argv[3], &conns) < 0 || conns == 0 || conns > 256 ||
        parse_u64(argv[4], &count) < 0 || count < conns || parse_u64(argv[5], &size) < 0 ||
        size < SEQ_PREFIX_LEN || size > SERVE_MAX_RECORD || parse_u64(argv[6], &batch) < 0 ||
        batch == 0 || batch > 65536 || parse_u64(argv[7], &inflight) < 0 || inflight == 0 ||
        inflight > 1024 || parse_u64(bn_arg(argc, argv, 8, "120"), &timeout_s) < 0 ||
        timeout_s == 0) {
        fprintf(stderr, "usage: %s push PORT CONNS COUNT SIZE BATCH INFLIGHT [TIMEOUT_S=120]\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct pusher *ps = calloc(conns, sizeof(*ps));
    pthread_t *th = calloc(conns, sizeof(*th));
    if (ps == NULL || th == NULL) {
        return 1;
    }
    uint64_t t0 = bn_now_ns();
    uint64_t per = count / conns;
    for (uint64_t i = 0; i < conns; i++) {
        ps[i] = (struct pusher){.port = (uint16_t)port,
                                .count = i + 1 == conns ? count - per * i : per,
                                .seq0 = per * i,
                                .size = (size_t)size,
                                .batch = (uint32_t)batch,
                                .inflight = (uint32_t)inflight,
                                .deadline_ns = t0 + timeout_s * 1000000000ull};
        if (pthread_create(&th[i], NULL, push_main, &ps[i]) != 0) {
            return 1;
        }
    }
    uint64_t acked = 0, refused = 0, batches = 0;
    int bad = 0;
    for (uint64_t i = 0; i < conns; i++) {
        pthread_join(th[i], NULL);
        acked += ps[i].acked;
        refused += ps[i].refused;
        batches += ps[i].batches;
        if (ps[i].err != 0) {
            fprintf(stderr, "push: connection %llu: %s\n", (unsigned long long)i,
                    strerror(ps[i].err));
            bad = 1;
        }
    }
    double secs = bn_secs(bn_now_ns() - t0);
    printf("push.connections %llu -\n", (unsigned long long)conns);
    printf("push.batch %llu records\n", (unsigned long long)batch);
    printf("push.inflight %llu batches\n", (unsigned long long)inflight);
    printf("push.acked %llu records\n", (unsigned long long)acked);
    printf("push.batches %llu -\n", (unsigned long long)batches);
    printf("push.secs %.3f s\n", secs);
    printf("push.rate %.0f records/s\n", secs > 0 ? (double)acked / secs : 0.0);
    free(ps);
    free(th);
    return bad || acked != count ? 1 : 0;
}

int
main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        return cmd_serve(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "gen") == 0) {
        return cmd_gen(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "push") == 0) {
        return cmd_push(argc, argv);
    }
    fprintf(stderr,
            "usage: %s serve PORT COUNT SIZE [RESET_AT=0] [TIMEOUT_S=120] [IDLE_S=15]\n"
            "       %s gen PORT COUNT SIZE [TIMEOUT_S=120]\n"
            "       %s push PORT CONNS COUNT SIZE BATCH INFLIGHT [TIMEOUT_S=120]\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
