/* SPDX-License-Identifier: MIT */
/* Target functions: hopperd's relay thread with a native tcp sink as it
 *                   runs (relay.c: connect, native_handshake,
 *                   native_read_frame, native_exchange, backoff and
 *                   reconnect, hopper_recv/hopper_ack of its queue), facing
 *                   a downstream that the input scripts (issue 15).
 * Setup (once per process): a config (hd_config_load_buffer) with one queue
 * under /dev/shm and a native tcp sink to 127.0.0.1 (a free port the
 * harness listens on), reconnect 1..10 ms; the sink runtime built as
 * main.c's daemon_setup does; hd_relay_start: the real relay thread.
 * Per input: send 1..8 records into the queue, accept the relay's
 * connection and play the downstream: the ops below write hellos, replies
 * to the batches the relay sent (by their real ids, or off by a delta: out
 * of order), garbage, partial frames; then close.
 * Property: every frame the relay writes parses as a send of >= 1 records
 * with ids strictly increasing; the records it acknowledged in the queue
 * (egress) are at most those of the batches that got an ok with their id;
 * records dropped as rejected downstream at most those of batches refused
 * TOO_BIG; and, once the relay settles (within 3 s), none is lost:
 * backlog + egress + rejected drops == every record sent.
 * Input: byte 0: bits 0-2 records to send - 1. Then ops, one byte each (low
 * 3 bits op, high 5 bits a):
 *   0 hello (max_frame 1 KiB << (a & 15))     1 ok to the last batch seen
 *   2 error, code a % 8, to the last batch    3 ok to the last batch + (int8)
 *                                               next byte (out of order)
 *   4 raw: next byte n, n input bytes          5 the first a bytes of an ok
 *                                               to the last batch (partial)
 *   6 wait (<= 200 ms) for the next batch      7 stop: close the connection */
#include "fuzz_common.h"

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "proto.h"
#include "relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hd_daemon dmn;
static struct hd_config *cfg;
static struct hd_queue_rt qrt;
static struct hd_sink_rt sink;
static int lfd = -1;

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
setup(void)
{
    const char *base = fz_tmpdir("relay");
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    FZ_CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
                 getsockname(lfd, (struct sockaddr *)&sin, &slen) == 0 && listen(lfd, 4) == 0,
             "listen: %s", strerror(errno));
    static char text[2048];
    int n = snprintf(text, sizeof(text),
                     "[hopperd]\nstate_dir = %s/state\nlog_level = error\n"
                     "[queue q]\nmax_record_bytes = 4KiB\n"
                     "[sink out]\ntype = tcp\nconnect = 127.0.0.1:%u\nformat = native\n"
                     "queue = q\nconnect_timeout = 200ms\nreconnect_min = 1ms\n"
                     "reconnect_max = 10ms\nbatch_bytes = 1KiB\n",
                     base, (unsigned)ntohs(sin.sin_port));
    char err[512];
    FZ_CHECK(hd_config_load_buffer("fuzz.conf", text, (size_t)n, &cfg, err, sizeof(err)) == 0,
             "config: %s", err);
    log_init(HD_LOG_ERROR, 0);
    char state[PATH_MAX];
    fz_join(state, sizeof(state), base, "state");
    FZ_CHECK(mkdir(state, 0700) == 0 || errno == EEXIST, "mkdir");
    hopper_opts o;
    hopper_opts_init(&o);
    o.fsync = HOPPER_FSYNC_NEVER;
    o.checkpoint_interval_ms = UINT32_MAX;
    qrt.conf = &cfg->queues[0];
    qrt.drop_wake_fd = -1;
    qrt.has_sink = 1;
    int rc = hopper_open(cfg->state_dir, "q", &o, &qrt.q);
    FZ_CHECK(rc == 0, "hopper_open: %s", hopper_err_name(rc));
    /* main.c daemon_setup, for the one sink. */
    sink.conf = &cfg->sinks[0];
    sink.queue = &qrt;
    sink.d = &dmn;
    pthread_mutex_init(&sink.mu, NULL);
    snprintf(sink.connect, sizeof(sink.connect), "%s", cfg->sinks[0].connect);
    sink.connect_timeout_ms = cfg->sinks[0].connect_timeout_ms;
    sink.reconnect_min_ms = cfg->sinks[0].reconnect_min_ms;
    sink.reconnect_max_ms = cfg->sinks[0].reconnect_max_ms;
    atomic_store(&sink.state, HD_SINK_IDLE);
    dmn.cfg = cfg;
    dmn.queues = &qrt;
    dmn.nqueues = 1;
    dmn.sinks = &sink;
    dmn.nsinks = 1;
    dmn.wake_fd = -1;
    dmn.metrics_fd = -1;
    FZ_CHECK(hd_relay_start(&dmn) == 0, "hd_relay_start");
}

/* What the relay wrote: its batches, parsed as they complete. */
typedef struct seen {
    uint8_t buf[1u << 16];
    size_t len;
    uint64_t last_id;
    int have_id;
    uint64_t nrec[64]; /* records of the batches of this connection, by order */
    uint64_t ids[64];
    size_t n;
} seen;

static int
pump(int fd, seen *s, int wait_ms)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, wait_ms) <= 0) {
        return 0;
    }
    ssize_t r = recv(fd, s->buf + s->len, sizeof(s->buf) - s->len, MSG_DONTWAIT);
    if (r <= 0) {
        return r == 0 ? -1 : 0;
    }
    s->len += (size_t)r;
    int got = 0;
    for (;;) {
        uint32_t len;
        if (hd_proto_frame_len(s->buf, s->len, &len) < 0 || s->len - HD_PROTO_HDR < len) {
            FZ_CHECK(s->len < sizeof(s->buf), "a relay frame over 64 KiB");
            break;
        }
        struct hd_msg m;
        const char *why = NULL;
        FZ_CHECK(hd_proto_parse(s->buf + HD_PROTO_HDR, len, &m, &why) == 0,
                 "the relay wrote a frame that does not parse: %s", why ? why : "?");
        FZ_CHECK(m.op == HD_OP_SEND && m.nrecords >= 1, "relay frame op %d, %llu records", m.op,
                 (unsigned long long)m.nrecords);
        FZ_CHECK(!s->have_id || m.id > s->last_id, "batch id %llu after %llu",
                 (unsigned long long)m.id, (unsigned long long)s->last_id);
        s->last_id = m.id;
        s->have_id = 1;
        if (s->n < 64) {
            s->ids[s->n] = m.id;
            s->nrec[s->n] = m.nrecords;
            s->n++;
        }
        memmove(s->buf, s->buf + HD_PROTO_HDR + len, s->len - HD_PROTO_HDR - len);
        s->len -= HD_PROTO_HDR + len;
        got = 1;
    }
    return got;
}

static uint64_t
records_of(const seen *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->ids[i] == id) {
            return s->nrec[i];
        }
    }
    return 0;
}

static uint64_t
backlog(void)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(qrt.q, &st) == 0, "stats");
    return st.backlog_records;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    if (cfg == NULL) {
        setup();
    }
    static uint64_t total; /* records sent over every input */
    static seen s;
    s.len = 0;
    s.n = 0;
    uint64_t egress0 = atomic_load(&sink.egress_records);
    uint64_t rej0 = atomic_load(&qrt.drops[HD_DROP_REJECTED]);
    int k = 1 + (data[0] & 7);
    for (int i = 0; i < k; i++) {
        char rec[32];
        int len = snprintf(rec, sizeof(rec), "record %llu", (unsigned long long)total);
        int rc = hopper_send(qrt.q, rec, (size_t)len, 0);
        FZ_CHECK(rc == 0, "send: %s", hopper_err_name(rc));
        total++;
    }
    struct pollfd lp = {.fd = lfd, .events = POLLIN};
    FZ_CHECK(poll(&lp, 1, 3000) == 1, "the relay did not connect within 3 s");
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    FZ_CHECK(fd >= 0, "accept");
    uint64_t oked = 0;    /* records of batches answered ok */
    uint64_t too_big = 0; /* records of batches refused TOO_BIG */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int open = 1;
    for (size_t pos = 1; open && pos < size;) {
        uint8_t b = data[pos++];
        int a = b >> 3;
        msgpack_sbuffer_clear(&sb);
        const uint8_t *raw = NULL;
        size_t rawn = 0;
        switch (b & 7) {
        case 0:
            (void)hd_proto_put_hello(&sb, 1024u << (a & 15), 4096, "q", (a & 16) ? 3000 : 0);
            break;
        case 1:
        case 3: {
            uint64_t id = s.last_id;
            if ((b & 7) == 3 && pos < size) {
                id += (uint64_t)(int64_t)(int8_t)data[pos++];
            }
            (void)hd_proto_put_ok(&sb, id, records_of(&s, id), 0);
            if (s.have_id) {
                oked += records_of(&s, id);
            }
            break;
        }
        case 2: {
            int code = a % HD_CODE_NCODES;
            (void)hd_proto_put_error(&sb, s.last_id, code, "fuzz");
            if (s.have_id && code == HD_CODE_TOO_BIG) {
                too_big += records_of(&s, s.last_id);
            }
            break;
        }
        case 4: {
            size_t n = pos < size ? data[pos++] : 0;
            n = n < size - pos ? n : size - pos;
            raw = data + pos;
            rawn = n;
            pos += n;
            break;
        }
        case 5:
            (void)hd_proto_put_ok(&sb, s.last_id, records_of(&s, s.last_id), 0);
            if (sb.size > (size_t)a) {
                sb.size = (size_t)a; /* the rest never comes */
            }
            break;
        case 6:
            for (uint64_t until = now_ms() + 200; now_ms() < until;) {
                int r = pump(fd, &s, 20);
                if (r != 0) {
                    open = r > 0;
                    break;
                }
            }
            break;
        default:
            open = 0;
            break;
        }
        if (raw == NULL) {
            raw = (const uint8_t *)sb.data;
            rawn = sb.size;
        }
        if (open && rawn > 0 && send(fd, raw, rawn, MSG_NOSIGNAL) < 0) {
            open = 0;
        }
        if (open && pump(fd, &s, 0) < 0) {
            open = 0;
        }
    }
    close(fd);
    msgpack_sbuffer_destroy(&sb);
    /* The relay settles: every record sent is in the queue, delivered, or
     * dropped as refused. */
    uint64_t deadline = now_ms() + 3000;
    for (;;) {
        uint64_t egress = atomic_load(&sink.egress_records) - egress0;
        uint64_t rej = atomic_load(&qrt.drops[HD_DROP_REJECTED]) - rej0;
        FZ_CHECK(egress <= oked, "the relay acknowledged %llu records, %llu were answered ok",
                 (unsigned long long)egress, (unsigned long long)oked);
        FZ_CHECK(rej <= too_big, "%llu records dropped as rejected, %llu refused TOO_BIG",
                 (unsigned long long)rej, (unsigned long long)too_big);
        uint64_t bl = backlog();
        static uint64_t gone; /* egress and rejected drops of earlier inputs */
        if (bl + gone + egress + rej == total) {
            gone += egress + rej;
            break;
        }
        FZ_CHECK(now_ms() < deadline,
                 "records lost: backlog %llu + delivered %llu + rejected %llu != sent %llu",
                 (unsigned long long)bl, (unsigned long long)(gone + egress),
                 (unsigned long long)rej, (unsigned long long)total);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}
