/* SPDX-License-Identifier: MIT */
/* hopperd under hostile and careless clients (issue 11): the real binary on
 * 127.0.0.1 with OS-picked ports, driven by clients that pipeline without
 * reading, connect and say nothing, trickle one byte at a time, or open
 * more connections than a source has slots, next to a well-behaved
 * producer whose records must still be delivered in order.
 *
 * Waits poll a condition against a deadline (e2e_wait_until); the only
 * fixed-length waits are the ones a test asserts nothing happens during
 * (a blocked producer is not timed out). Set HOPPERD_E2E_KEEP=1 to keep
 * the temp directories, HD_TEST_FILTER=PATTERN to run some of the tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hd_e2e_util.h"
#include "proto.h"
#include "wire.h"

/* One hopperd: queue q, a tcp source `in` (127.0.0.1:port), a spare port
 * for a second source, metrics on mport, a file sink by default. */
struct hx {
    char *dir;
    char conf[600];
    char log[600];
    char out[600];
    int port, port2, mport, down_port;
    pid_t pid;
};

static int
hx_setup(void **state)
{
    struct hx *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    h->dir = e2e_tmpdir();
    assert_non_null(h->dir);
    snprintf(h->conf, sizeof(h->conf), "%s/hopperd.conf", h->dir);
    snprintf(h->log, sizeof(h->log), "%s/hopperd.log", h->dir);
    snprintf(h->out, sizeof(h->out), "%s/out.log", h->dir);
    int *ports[] = {&h->port, &h->port2, &h->mport, &h->down_port};
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        int fresh;
        do {
            fresh = e2e_free_port();
            for (size_t k = 0; k < i; k++) {
                fresh = fresh == *ports[k] ? -1 : fresh;
            }
        } while (fresh <= 0);
        *ports[i] = fresh;
    }
    h->pid = -1;
    *state = h;
    return 0;
}

/* The tail is what explains a failure; 300 connections log a lot. */
static void
hx_dump_log(const struct hx *h)
{
    e2e_dump_log(h->log, 16384);
}

static int
hx_teardown(void **state)
{
    struct hx *h = *state;
    e2e_cleanup(h->pid, h->dir);
    free(h);
    return 0;
}

/* queue q with `queue_extra`, source `in` with `source_extra`, then `sink`
 * (NULL: a file sink into h->out) and `extra` (more sections, or ""). */
static void
hx_conf(struct hx *h, const char *queue_extra, const char *source_extra, const char *sink,
        const char *extra)
{
    char file_sink[1024];
    snprintf(file_sink, sizeof(file_sink),
             "[sink out]\ntype = file\npath = %s\nqueue = q\nfsync = never\n", h->out);
    char text[8192];
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = debug\n"
             "metrics_listen = 127.0.0.1:%d\nshutdown_timeout = 5s\n"
             "[queue q]\n%s"
             "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n%s"
             "%s%s",
             h->dir, h->mport, queue_extra, h->port, source_extra,
             sink != NULL ? sink : file_sink, extra);
    e2e_write_file(h->conf, text);
}

/* hopperd accepted the probe of e2e_wait_port() and it is gone (a pred;
 * arg: the metrics port). */
static int
probe_gone(void *arg)
{
    char *text = e2e_http(*(const int *)arg, "GET /metrics HTTP/1.0\r\n\r\n", 30000, NULL);
    int gone = text != NULL &&
               e2e_metric_in(text, "hopperd_source_connections_total{source=\"in\"}") >= 1 &&
               e2e_metric_in(text, "hopperd_source_connections{source=\"in\"}") == 0;
    free(text);
    return gone;
}

/* Start hopperd; returns once the connection that probed the source's
 * port is gone too, so the tests count their own connections only. */
static void
hx_start(struct hx *h)
{
    h->pid = e2e_start(h->conf, h->log);
    assert_true(h->pid > 0);
    if (e2e_wait_port(h->port, 10000) != 0 || e2e_wait_port(h->mport, 10000) != 0 ||
        e2e_wait_until(probe_gone, &h->mport, 10000) != 0) {
        hx_dump_log(h);
        fail_msg("hopperd did not start listening");
    }
}

static void
hx_stop(struct hx *h)
{
    int rc = e2e_stop(h->pid, SIGTERM, 10000);
    h->pid = -1;
    if (rc != 0) {
        hx_dump_log(h);
        fail_msg("hopperd exit status %d", rc);
    }
}

/* ---- waiting on metrics and on the file sink ---- */

struct mwait {
    int port;
    const char *prefix;
    double want; /* until the sample is at least this */
    double last;
};

static int
metric_at_least(void *arg)
{
    struct mwait *w = arg;
    w->last = e2e_metric(w->port, w->prefix);
    return w->last >= w->want;
}

static void
hx_wait_metric(struct hx *h, const char *prefix, double want, int timeout_ms)
{
    struct mwait w = {h->mport, prefix, want, -1};
    if (e2e_wait_until(metric_at_least, &w, timeout_ms) < 0) {
        hx_dump_log(h);
        fail_msg("metric %s is %.0f, wanted at least %.0f", prefix, w.last, want);
    }
}

static double
hx_metric(struct hx *h, const char *prefix)
{
    return e2e_metric(h->mport, prefix);
}

/* The sample `prefix` is exactly `want` now. */
static void
hx_expect_metric(struct hx *h, const char *prefix, double want)
{
    double v = hx_metric(h, prefix);
    if (v != want) {
        hx_dump_log(h);
        fail_msg("metric %s is %.0f, wanted %.0f", prefix, v, want);
    }
}

/* The file sink holds exactly records rec-0..n-1, in order. */
static void
hx_expect_delivered(struct hx *h, long n)
{
    struct e2e_lines_wait w = {h->out, n, 0};
    if (e2e_wait_until(e2e_file_has_lines, &w, 20000) < 0) {
        hx_dump_log(h);
        fail_msg("the file sink has %ld lines, wanted %ld", w.have, n);
    }
    size_t len;
    char *data = e2e_read_file(h->out, &len);
    assert_int_equal(e2e_check_sequence(data, len, n), 0);
    free(data);
}

/* ---- clients ---- */

/* The well-behaved producer: lines rec-FROM.. rec-(FROM+N-1) on fd. */
static void
send_lines(int fd, long from, long n)
{
    char line[32];
    for (long i = from; i < from + n; i++) {
        int len = snprintf(line, sizeof(line), "rec-%08ld\n", i);
        assert_int_equal(e2e_write_all(fd, line, (size_t)len), 0);
    }
}

static int
fd_closed(void *arg)
{
    return e2e_peer_closed(*(const int *)arg);
}

/* n connections to port; the first `talk` of them send `first` (a partial
 * line or request: nothing complete). */
static int *
open_clients(int port, int n, int talk, const char *first)
{
    int *fds = calloc((size_t)n, sizeof(*fds));
    assert_non_null(fds);
    for (int i = 0; i < n; i++) {
        fds[i] = e2e_connect(port);
        assert_true(fds[i] >= 0);
        if (i < talk) {
            assert_int_equal(e2e_write_all(fds[i], first, strlen(first)), 0);
        }
    }
    return fds;
}

static void
close_clients(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    free(fds);
}

static int
count_closed(const int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        closed += e2e_peer_closed(fds[i]);
    }
    return closed;
}

struct all_closed {
    const int *fds;
    int n;
    int open; /* how many were still open at the last look */
};

static int
clients_all_closed(void *arg)
{
    struct all_closed *w = arg;
    w->open = w->n - count_closed(w->fds, w->n);
    return w->open == 0;
}

/* A native reply stream, read frame by frame within a deadline. */
struct rx {
    int fd;
    uint8_t buf[1 << 16];
    size_t len;
    size_t used; /* bytes of the frame returned last, dropped on the next call */
};

/* The next frame: its body in *body, *n bytes; 1, 0 at EOF, -1 on timeout. */
static int
rx_next(struct rx *r, uint64_t deadline, const uint8_t **body, size_t *n)
{
    memmove(r->buf, r->buf + r->used, r->len - r->used);
    r->len -= r->used;
    r->used = 0;
    for (;;) {
        size_t size = 0;
        assert_int_equal(hd_wire_frame_size(r->buf, r->len, sizeof(r->buf) - HD_WIRE_HDR, &size),
                         0);
        if (size > 0 && r->len >= size) {
            *body = r->buf + HD_WIRE_HDR;
            *n = size - HD_WIRE_HDR;
            r->used = size;
            return 1;
        }
        uint64_t now = e2e_now_ms();
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) == 0) {
            return -1;
        }
        ssize_t got = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, MSG_DONTWAIT);
        if (got == 0) {
            return 0;
        }
        if (got < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
            continue;
        }
        r->len += (size_t)got;
    }
}

/* The next frame, parsed; fails the test unless it is op `op`. */
static void
rx_expect(struct rx *r, int op, struct hd_msg *m)
{
    const uint8_t *body;
    size_t n;
    assert_int_equal(rx_next(r, e2e_now_ms() + 10000, &body, &n), 1);
    const char *why;
    assert_int_equal(hd_proto_parse(body, n, m, &why), 0);
    assert_int_equal(m->op, op);
}

/* ---- fault 1: replies withheld from a pipelining client ---- */

/* A one-record `send` of a fixed 33 bytes: the id as a uint32, so frame k
 * of the stream starts at byte 33 * k. */
#define SEND_FRAME 33

static void
put_send(uint8_t *p, uint32_t id)
{
    static const uint8_t tmpl[SEND_FRAME] = {
        0,    0,   0,   29,  0x83, 0xa2, 'o', 'p', 0xa4, 's', 'e',  'n',  'd',  0xa2, 'i', 'd', 0xce,
        0,    0,   0,   0,   0xa7, 'r',  'e', 'c', 'o',  'r', 'd',  's',  0x91, 0xc4, 1,   'r'};
    memcpy(p, tmpl, SEND_FRAME);
    hd_wire_put_len(p + 17, id);
}

/* Write sends until hopperd stops reading (no room for 500 ms: it holds
 * its limit of unwritten replies and the socket buffers are full).
 * *written counts the bytes of the stream written so far. */
static void
pipeline_until_stalled(int fd, uint64_t *written)
{
    static uint8_t chunk[SEND_FRAME * 512];
    for (;;) {
        uint64_t frame = *written / SEND_FRAME;
        size_t skip = (size_t)(*written % SEND_FRAME);
        for (size_t k = 0; k < 512; k++) {
            put_send(chunk + k * SEND_FRAME, (uint32_t)(frame + k + 1));
        }
        ssize_t w = send(fd, chunk + skip, sizeof(chunk) - skip, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            *written += (uint64_t)w;
            continue;
        }
        assert_true(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 500) == 0) {
            return;
        }
    }
}

/* A native client pipelines one-record sends without reading the replies
 * until hopperd stops reading it, then reads: every request it sent whole
 * is answered, in order, without the client sending anything more. Before
 * the fix, frames left in hopperd's buffer when the reply limit stopped
 * the framing loop stayed there once the replies were flushed, until new
 * bytes arrived (issue 11, fault 1). Three rounds on one connection. */
static void
test_pipelined_replies(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "memory_bytes = 64MiB\n", "format = native\n", NULL, "");
    hx_start(h);
    static struct rx rx_;
    struct rx *rx = &rx_;
    rx->fd = e2e_connect(h->port);
    assert_true(rx->fd >= 0);
    struct hd_msg m;
    rx_expect(rx, HD_OP_HELLO, &m);
    uint64_t written = 0, answered = 0;
    for (int round = 0; round < 3; round++) {
        pipeline_until_stalled(rx->fd, &written);
        uint64_t whole = written / SEND_FRAME;
        /* Slow is fine (a sanitizer build answers a few 10 000 a second);
         * 10 s without a reply while requests are outstanding is not. */
        const uint8_t *body;
        size_t n;
        while (answered < whole && rx_next(rx, e2e_now_ms() + 10000, &body, &n) == 1) {
            const char *why;
            assert_int_equal(hd_proto_parse(body, n, &m, &why), 0);
            assert_int_equal(m.op, HD_OP_OK);
            assert_int_equal(m.id, answered + 1);
            assert_int_equal(m.count, 1);
            answered++;
        }
        if (answered != whole) {
            hx_dump_log(h);
            fail_msg("round %d: %llu of %llu requests answered, then no reply for 10 s: the "
                     "rest were withheld",
                     round, (unsigned long long)answered, (unsigned long long)whole);
        }
    }
    close(rx->fd);
    hx_expect_metric(h, "hopperd_ingress_records_total{queue=\"q\"}", (double)answered);
    hx_stop(h);
}

/* ---- fault 3: slots, timeouts, eviction ---- */

#define SRC_METRIC(name) name "{source=\"in\"}"

/* 300 clients from 127.0.0.1, the first 150 of them sending `first` (no
 * whole line), then a well-behaved producer. Checks that `evicted` of the
 * 300 were evicted and `held` connections stay, that the producer gets in
 * by evicting one more and its 1000 records arrive in order, and that no
 * connection was refused. The idlest go first: the first ones in the
 * order hopperd accepted them, which is the order of connect() unless the
 * listen backlog overflowed; the first and last client are where they
 * should be either way. */
static void
crowd_then_producer(struct hx *h, const char *first, int evicted, int held)
{
    /* hx_start() probed the port: that connection counts in the total. */
    int *fds = open_clients(h->port, 300, 150, first);
    hx_wait_metric(h, SRC_METRIC("hopperd_source_connections_total"), 301, 10000);
    hx_wait_metric(h, SRC_METRIC("hopperd_source_connections_evicted_total"), evicted, 10000);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections"), held);
    int fd = e2e_connect(h->port);
    assert_true(fd >= 0);
    send_lines(fd, 0, 1000);
    hx_expect_delivered(h, 1000);
    assert_false(e2e_peer_closed(fd));
    assert_int_equal(count_closed(fds, 300), evicted + 1);
    assert_true(e2e_peer_closed(fds[0]));
    assert_false(e2e_peer_closed(fds[299]));
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections_evicted_total"), evicted + 1);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections"), held);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections_rejected_total"), 0);
    close(fd);
    close_clients(fds, 300);
    hx_stop(h);
}

/* 300 connections, half of them silent and half trickling a partial
 * syslog line, on a source with the default 256 slots and no per-peer
 * cap: each connection beyond 256 evicts the one idle longest, and a
 * well-behaved producer that comes last is served and delivered. Before
 * the fix it was closed at once. */
static void
test_slowloris_evict(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "", "max_connections_per_peer = 0\nhandshake_timeout = 0\nidle_timeout = 0\n",
            NULL, "");
    hx_start(h);
    crowd_then_producer(h, "<13>Jan  1 00:00:00 host slow: ", 44, 256);
}

/* The same 300 from one peer against max_connections_per_peer = 16: the
 * peer never holds more than 16 of the 256 slots (each new connection
 * evicts that peer's longest-idle one), and the producer, from the same
 * address, still gets in and is delivered. */
static void
test_slowloris_per_peer(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "", "max_connections_per_peer = 16\nhandshake_timeout = 0\nidle_timeout = 0\n",
            NULL, "");
    hx_start(h);
    crowd_then_producer(h, "x", 284, 16);
}

/* max_connections_per_peer is per peer address: 127.0.0.1 at its cap of 4
 * (a fifth connection from it evicts its own longest-idle one) does not
 * keep 127.0.0.2 out. A producer from 127.0.0.2 gets in without evicting
 * anyone and is delivered; 127.0.0.2's own cap then evicts only its own
 * connections, and 127.0.0.1's stay. */
static int *
open_clients_from(const char *from, int port, int n)
{
    int *fds = calloc((size_t)n, sizeof(*fds));
    assert_non_null(fds);
    for (int i = 0; i < n; i++) {
        fds[i] = e2e_connect_from(from, port);
        assert_true(fds[i] >= 0);
    }
    return fds;
}

static void
test_per_peer_cap_other_peer(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "", "max_connections_per_peer = 4\nhandshake_timeout = 0\nidle_timeout = 0\n",
            NULL, "");
    hx_start(h);
    const char *evicted = SRC_METRIC("hopperd_source_connections_evicted_total");
    int *one = open_clients_from("127.0.0.1", h->port, 5);
    hx_wait_metric(h, SRC_METRIC("hopperd_source_connections_total"), 6, 10000);
    hx_wait_metric(h, evicted, 1, 10000);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections"), 4);
    int fd = e2e_connect_from("127.0.0.2", h->port);
    assert_true(fd >= 0);
    send_lines(fd, 0, 1000);
    hx_expect_delivered(h, 1000);
    assert_false(e2e_peer_closed(fd));
    hx_expect_metric(h, evicted, 1);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections"), 5);
    /* Four more from 127.0.0.2: its fifth connection evicts its idlest,
     * the producer; 127.0.0.1 keeps its four. */
    int *two = open_clients_from("127.0.0.2", h->port, 4);
    hx_wait_metric(h, evicted, 2, 10000);
    assert_int_equal(e2e_wait_until(fd_closed, &fd, 10000), 0);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections"), 8);
    assert_true(e2e_peer_closed(one[0]));
    assert_int_equal(count_closed(one, 5), 1);
    assert_int_equal(count_closed(two, 4), 0);
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections_rejected_total"), 0);
    close(fd);
    close_clients(one, 5);
    close_clients(two, 4);
    hx_stop(h);
}

/* Slowloris against the timeouts: 100 silent connections, 100 that send a
 * byte of a line and then keep sending one byte at a time, and a producer
 * that sends a line every round. The silent ones go after
 * handshake_timeout, the tricklers after idle_timeout although bytes keep
 * coming (no complete line), and the producer stays connected and
 * delivered. */
struct trickle {
    int *silent; /* 100 */
    int *slow;   /* 100 */
    int producer;
    long sent; /* lines the producer sent */
    int open;  /* silent and slow connections still open */
};

static int
trickle_round(void *arg)
{
    struct trickle *t = arg;
    t->open = 0;
    for (int i = 0; i < 100; i++) {
        t->open += !e2e_peer_closed(t->silent[i]);
        if (t->slow[i] < 0) {
            continue;
        }
        if (e2e_peer_closed(t->slow[i]) ||
            send(t->slow[i], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            close(t->slow[i]);
            t->slow[i] = -1;
            continue;
        }
        t->open++;
    }
    if (t->sent < 1000) {
        send_lines(t->producer, t->sent, 1);
        t->sent++;
    }
    return t->open == 0 && t->sent == 1000;
}

static void
test_slowloris_timeouts(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "", "handshake_timeout = 300ms\nidle_timeout = 1s\nmax_connections_per_peer = 0\n",
            NULL, "");
    hx_start(h);
    struct trickle t = {NULL, NULL, -1, 0, 0};
    /* The producer comes last: connecting 200 clients may take a SYN
     * retransmission (a second) when they overflow the listen backlog,
     * and it would idle meanwhile. */
    t.silent = open_clients(h->port, 100, 0, "");
    t.slow = open_clients(h->port, 100, 100, "x");
    t.producer = e2e_connect(h->port);
    assert_true(t.producer >= 0);
    if (e2e_wait_until(trickle_round, &t, 20000) < 0) {
        hx_dump_log(h);
        fail_msg("%d silent or trickling connections still open, %ld lines sent", t.open, t.sent);
    }
    assert_false(e2e_peer_closed(t.producer));
    hx_expect_delivered(h, 1000);
    /* The silent ones ran out of handshake time, the tricklers of idle
     * time; each counted once. */
    double hs = hx_metric(h, "hopperd_source_connection_timeouts_total{source=\"in\","
                             "timeout=\"handshake\"}");
    double idle =
        hx_metric(h, "hopperd_source_connection_timeouts_total{source=\"in\",timeout=\"idle\"}");
    if (hs != 100 || idle != 100) {
        hx_dump_log(h);
        fail_msg("%.0f handshake and %.0f idle timeouts, wanted 100 and 100", hs, idle);
    }
    close(t.producer);
    free(t.slow);
    close_clients(t.silent, 100);
    hx_stop(h);
}

/* Waiting on hopperd is not idling: a producer blocked on a full queue
 * (when_full = block, the sink down) and a native subscriber of an empty
 * queue send nothing for several idle_timeouts and stay connected, and a
 * newcomer is refused rather than evict the blocked producer from the
 * source's only slot; once the downstream is back every record arrives. */
static void
test_waiting_is_not_idle(void **state)
{
    struct hx *h = *state;
    char sink[512], extra[512];
    snprintf(sink, sizeof(sink),
             "[sink down]\ntype = tcp\nconnect = 127.0.0.1:%d\nqueue = q\n"
             "reconnect_min = 20ms\nreconnect_max = 100ms\n",
             h->down_port);
    snprintf(extra, sizeof(extra),
             "[queue s]\n[source nat]\ntype = tcp\nlisten = 127.0.0.1:%d\nformat = native\n"
             "queue = s\nallow_subscribe = on\nhandshake_timeout = 300ms\nidle_timeout = 300ms\n",
             h->port2);
    hx_conf(h, "memory_bytes = 4KiB\ndisk_bytes = 64KiB\nsegment_bytes = 64KiB\ncompression = 0\n"
               "max_record_bytes = 1KiB\n",
            "handshake_timeout = 300ms\nidle_timeout = 300ms\nmax_connections = 1\n", sink,
            extra);
    hx_start(h);
    static struct rx rx_;
    struct rx *rx = &rx_;
    rx->fd = e2e_connect(h->port2);
    struct hd_msg m;
    rx_expect(rx, HD_OP_HELLO, &m);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(hd_proto_put_subscribe(&sb, 1, NULL, 0), 0);
    assert_int_equal(e2e_write_all(rx->fd, sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
    rx_expect(rx, HD_OP_OK, &m);

    /* 5000 lines of 14 bytes overflow 64 KiB of disk: the producer blocks. */
    int fd = e2e_connect(h->port);
    assert_true(fd >= 0);
    send_lines(fd, 0, 5000);
    hx_wait_metric(h, "hopperd_queue_full_rejections_total{queue=\"q\"}", 10, 10000);
    /* Both stay for 2 s, more than 6 idle_timeouts. */
    assert_int_equal(e2e_wait_until(fd_closed, &fd, 2000), -1);
    assert_false(e2e_peer_closed(rx->fd));
    /* The producer holds the only slot of `in` and is not idle, so a
     * newcomer is refused rather than take its slot. */
    int late = e2e_connect(h->port);
    assert_true(late >= 0);
    hx_wait_metric(h, SRC_METRIC("hopperd_source_connections_rejected_total"), 1, 5000);
    assert_int_equal(e2e_wait_until(fd_closed, &late, 5000), 0);
    close(late);
    assert_false(e2e_peer_closed(fd));
    hx_expect_metric(h, SRC_METRIC("hopperd_source_connections_evicted_total"), 0);
    hx_expect_metric(h, "hopperd_source_connection_timeouts_total{source=\"in\",timeout=\"idle\"}",
                     0);

    /* The downstream comes back: all 5000, in order, once. */
    static struct e2e_downstream ds = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(e2e_downstream_start(&ds, h->down_port), 0);
    hx_wait_metric(h, "hopperd_egress_records_total{sink=\"down\",queue=\"q\"}", 5000, 20000);
    e2e_downstream_stop(&ds);
    long dups = e2e_check_sequence(ds.data, ds.len, 5000);
    free(ds.data);
    assert_int_equal(dups, 0);
    close(fd);
    close(rx->fd);
    hx_stop(h);
}

/* ---- fault 4: the metrics endpoint behind idle and slow clients ---- */

/* 100 connections to the metrics port that send nothing and 10 that send
 * half a request: a scrape still answers within a second. Each of them is
 * closed within the request timeout (5 s) or evicted when the endpoint's
 * connection table is full, and counted; a request head over 8 KiB gets
 * 431. Before the fix the endpoint served one client at a time with a 2 s
 * timeout each, and the scrape got no answer. */
static void
test_metrics_behind_idle_clients(void **state)
{
    struct hx *h = *state;
    hx_conf(h, "", "", NULL, "");
    hx_start(h);
    /* One scrape first: by its answer the probe of hx_start() is gone,
     * so the counts below are the 110's alone. */
    assert_true(hx_metric(h, "hopperd_up") == 1);
    int *idle = open_clients(h->mport, 110, 10, "GET /metr");
    uint64_t t0 = e2e_now_ms();
    char *resp = e2e_http(h->mport, "GET /metrics HTTP/1.0\r\n\r\n", 5000, NULL);
    uint64_t elapsed = e2e_now_ms() - t0;
    if (resp == NULL) {
        hx_dump_log(h);
        fail_msg("no answer to a scrape within 5 s behind 110 idle connections");
    }
    if (elapsed >= 1000) {
        fail_msg("the scrape took %llu ms behind 110 idle connections",
                 (unsigned long long)elapsed);
    }
    assert_non_null(strstr(resp, "HTTP/1.0 200 OK\r\n"));
    assert_true(e2e_metric_in(resp, "hopperd_up") == 1);
    free(resp);

    /* A request head of 8 KiB without its end. */
    char *big = malloc(8193);
    assert_non_null(big);
    memset(big, 'a', 8192);
    memcpy(big, "GET /metrics HTTP/1.0\r\nX-big: ", 30);
    big[8192] = '\0';
    resp = e2e_http(h->mport, big, 5000, NULL);
    free(big);
    assert_non_null(resp);
    assert_non_null(strstr(resp, "HTTP/1.0 431 "));
    free(resp);

    struct all_closed ac = {idle, 110, 0};
    if (e2e_wait_until(clients_all_closed, &ac, 10000) < 0) {
        hx_dump_log(h);
        fail_msg("%d idle metrics connections still open after 10 s", ac.open);
    }
    double timeouts = hx_metric(h, "hopperd_metrics_timeouts_total");
    double evicted = hx_metric(h, "hopperd_metrics_evictions_total");
    assert_true(timeouts > 0 && evicted > 0);
    if (timeouts + evicted != 110) {
        fail_msg("%.0f timeouts + %.0f evictions, wanted 110 in all", timeouts, evicted);
    }
    close_clients(idle, 110);
    hx_stop(h);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipelined_replies, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_slowloris_evict, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_slowloris_per_peer, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_per_peer_cap_other_peer, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_slowloris_timeouts, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_waiting_is_not_idle, hx_setup, hx_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_behind_idle_clients, hx_setup, hx_teardown),
    };
    /* HD_TEST_FILTER=test_slowloris_* runs a subset (cmocka's pattern). */
    if (getenv("HD_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("HD_TEST_FILTER"));
    }
    return cmocka_run_group_tests_name("hopperd_hostile", tests, NULL, NULL);
}
