/* SPDX-License-Identifier: MIT */
/* hopperd_hostile_soak SECS: issue 11's hostile-client soak. Not a ctest
 * test (it runs for as long as it is told); `scripts/hopper-dev
 * hostile-soak SECS` builds and runs it.
 *
 * It starts the real hopperd on 127.0.0.1 (OS-picked ports, a temp state
 * dir) with a lines source, a native source and a tcp sink into a counting
 * downstream run here, and for SECS seconds runs at once:
 *   - two well-behaved producers from 127.0.0.2 with sequence numbers: a
 *     native one (batches, each acknowledged before the next; a batch whose
 *     reply did not come is sent again on a new connection) and a lines one;
 *   - background hostiles from 127.0.0.3..9: slowloris connections (a byte
 *     of an unfinished line every second) and silent connections, each
 *     reopened when hopperd closes it;
 *   - hostile acts in rotation, about 2 s each: garbage bytes, oversized
 *     lines and frames (and a 100k-deep msgpack nesting), connection storms,
 *     pipelined sends never read, a subscriber that never acknowledges,
 *     metrics requests that never finish;
 *   - SIGHUP every 5 s;
 *   - once a second: a metrics scrape (timed), hopperd's RSS and open fds.
 * Then the producers stop, the downstream gets until everything they had
 * acknowledged (native) or written (lines) arrived, and it checks: 0 lost,
 * 0 duplicated, 0 out of order for both producers; hopperd alive and then
 * exiting 0 on SIGTERM; peak RSS within the bound printed; every scrape
 * answered within 1 s. It prints the figures and exits 0 only if all hold.
 *
 * Loopback only, bounded in time; it signals only the hopperd it started.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "hd_e2e_util.h"
#include "proto.h"
#include "wire.h"

#define GOOD_ADDR "127.0.0.2"
#define NHOSTILE_ADDRS 7 /* 127.0.0.3 .. 127.0.0.9 */
#define NSLOW 100
#define NIDLE 100
#define NATIVE_BATCH 50
#define NATIVE_RATE 2000 /* records per second, native producer */
#define LINES_RATE 1000  /* records per second, lines producer */
#define SCRAPE_LIMIT_MS 1000

static atomic_int stop_hostiles;  /* hostile threads and SIGHUP end */
static atomic_int stop_producers; /* producers end */
static atomic_int stop_monitor;

static int lines_port, native_port, metrics_port, down_port;
static pid_t hopperd_pid = -1;
static char state_dir[700];

static void
nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* xorshift; only the hostile thread and main use it, never at once. */
static uint64_t
rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static const char *
hostile_addr(void)
{
    static char buf[NHOSTILE_ADDRS][16];
    static int init;
    if (!init) {
        for (int i = 0; i < NHOSTILE_ADDRS; i++) {
            snprintf(buf[i], sizeof(buf[i]), "127.0.0.%d", 3 + i);
        }
        init = 1;
    }
    return buf[rnd() % NHOSTILE_ADDRS];
}

static void
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Send what the socket takes now; errors are the hostile's problem. */
static void
spray(int fd, const void *p, size_t n)
{
    (void)send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- the counting downstream ---- */

struct stream {
    char tag; /* 'N' or 'L' */
    uint8_t *seen;
    size_t cap;
    uint64_t distinct, dups, out_of_order;
    int64_t max_seen; /* -1: none */
};

static struct {
    pthread_mutex_t mu;
    struct stream s[2]; /* [0] native, [1] lines */
    uint64_t other;     /* records of the hostiles (pipelined sends) */
    uint64_t connections;
    int lfd;
    pthread_t thread;
} down = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void
count_line(const char *p, size_t n)
{
    int k = n > 2 && p[1] == '-' ? (p[0] == 'N' ? 0 : p[0] == 'L' ? 1 : -1) : -1;
    if (k < 0) {
        down.other++;
        return;
    }
    uint64_t seq = strtoull(p + 2, NULL, 10);
    struct stream *s = &down.s[k];
    if (seq >= s->cap) {
        size_t ncap = s->cap ? s->cap : 1 << 20;
        while (ncap <= seq) {
            ncap *= 2;
        }
        s->seen = realloc(s->seen, ncap);
        if (s->seen == NULL) {
            abort();
        }
        memset(s->seen + s->cap, 0, ncap - s->cap);
        s->cap = ncap;
    }
    if (s->seen[seq]) {
        s->dups++;
        return;
    }
    s->seen[seq] = 1;
    s->distinct++;
    if ((int64_t)seq != s->max_seen + 1) {
        s->out_of_order++;
    }
    if ((int64_t)seq > s->max_seen) {
        s->max_seen = (int64_t)seq;
    }
}

static void *
down_main(void *arg)
{
    (void)arg;
    static char buf[1 << 16];
    while (!atomic_load(&stop_monitor)) {
        struct pollfd p = {.fd = down.lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        int fd = accept(down.lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        pthread_mutex_lock(&down.mu);
        down.connections++;
        pthread_mutex_unlock(&down.mu);
        size_t len = 0;
        for (;;) {
            struct pollfd q = {.fd = fd, .events = POLLIN};
            if (atomic_load(&stop_monitor)) {
                break;
            }
            if (poll(&q, 1, 100) <= 0) {
                continue;
            }
            ssize_t r = read(fd, buf + len, sizeof(buf) - len);
            if (r <= 0) {
                break;
            }
            len += (size_t)r;
            size_t start = 0;
            pthread_mutex_lock(&down.mu);
            for (size_t i = 0; i < len; i++) {
                if (buf[i] == '\n') {
                    count_line(buf + start, i - start);
                    start = i + 1;
                }
            }
            pthread_mutex_unlock(&down.mu);
            memmove(buf, buf + start, len - start);
            len -= start;
            if (len == sizeof(buf)) {
                len = 0; /* a hostile's giant record: not ours to count */
            }
        }
        close(fd);
    }
    return NULL;
}

/* ---- the well-behaved producers ---- */

static struct {
    atomic_uint_fast64_t native_acked; /* records N-0 .. N-(acked-1) acknowledged */
    atomic_uint_fast64_t native_retries;
    atomic_uint_fast64_t native_reconnects;
    atomic_uint_fast64_t native_full;
    atomic_uint_fast64_t lines_written;
    atomic_uint_fast64_t lines_disconnects;
} prod;

/* Read one frame (blocking, within timeout_ms) into buf; its body length,
 * or -1. */
static long
read_frame(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    size_t len = 0;
    uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        size_t size = 0;
        if (hd_wire_frame_size(buf, len, cap - HD_WIRE_HDR, &size) < 0) {
            return -1;
        }
        if (size > 0 && len >= size) {
            return (long)(size - HD_WIRE_HDR);
        }
        uint64_t now = e2e_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) {
            return -1;
        }
        /* Read only up to the end of this frame (replies are one at a time). */
        size_t want = size > 0 ? size - len : HD_WIRE_HDR - len;
        ssize_t r = read(fd, buf + len, want);
        if (r <= 0) {
            return -1;
        }
        len += (size_t)r;
    }
}

static int
native_open(uint8_t *buf, size_t cap)
{
    int fd = e2e_connect_from(GOOD_ADDR, native_port);
    if (fd < 0) {
        return -1;
    }
    long n = read_frame(fd, buf, cap, 5000);
    struct hd_msg m;
    const char *why;
    if (n < 0 || hd_proto_parse(buf + HD_WIRE_HDR, (size_t)n, &m, &why) < 0 ||
        m.op != HD_OP_HELLO) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *
native_producer(void *arg)
{
    (void)arg;
    static uint8_t buf[1 << 16];
    char recs[NATIVE_BATCH][24];
    struct hd_slice sl[NATIVE_BATCH];
    uint64_t next = 0, id = 0;
    int fd = -1;
    uint64_t t0 = e2e_now_ms();
    while (!atomic_load(&stop_producers)) {
        /* pace: NATIVE_RATE records per second */
        uint64_t due = t0 + next * 1000 / NATIVE_RATE;
        uint64_t now = e2e_now_ms();
        if (due > now) {
            nap_ms((int)(due - now));
        }
        for (int i = 0; i < NATIVE_BATCH; i++) {
            int len = snprintf(recs[i], sizeof(recs[i]), "N-%010" PRIu64, next + (uint64_t)i);
            sl[i].p = (const uint8_t *)recs[i];
            sl[i].n = (size_t)len;
        }
        /* Until this batch is acknowledged: a batch whose reply did not come
         * may have been accepted, so sending it again may duplicate it; the
         * downstream counts that. */
        for (int tries = 0;; tries++) {
            if (tries > 0) {
                atomic_fetch_add(&prod.native_retries, 1);
            }
            if (fd < 0) {
                fd = native_open(buf, sizeof(buf));
                if (fd < 0) {
                    nap_ms(50);
                    continue;
                }
                if (tries > 0 || next > 0) {
                    atomic_fetch_add(&prod.native_reconnects, 1);
                }
            }
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            int rc = hd_proto_put_send(&sb, ++id, NULL, sl, NATIVE_BATCH);
            if (rc == 0) {
                rc = e2e_write_all(fd, sb.data, sb.size);
            }
            msgpack_sbuffer_destroy(&sb);
            struct hd_msg m;
            const char *why;
            long n = rc == 0 ? read_frame(fd, buf, sizeof(buf), 30000) : -1;
            if (n < 0 || hd_proto_parse(buf + HD_WIRE_HDR, (size_t)n, &m, &why) < 0 ||
                m.id != id) {
                close(fd);
                fd = -1;
                continue;
            }
            if (m.op == HD_OP_OK) {
                break;
            }
            atomic_fetch_add(&prod.native_full, 1);
            nap_ms(20); /* FULL / FAILED: the same batch again */
        }
        next += NATIVE_BATCH;
        atomic_store(&prod.native_acked, next);
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

static void *
lines_producer(void *arg)
{
    (void)arg;
    int fd = -1;
    uint64_t next = 0;
    uint64_t t0 = e2e_now_ms();
    char chunk[64 * 24];
    while (!atomic_load(&stop_producers)) {
        uint64_t due = t0 + next * 1000 / LINES_RATE;
        uint64_t now = e2e_now_ms();
        if (due > now) {
            nap_ms((int)(due - now));
        }
        if (fd < 0) {
            fd = e2e_connect_from(GOOD_ADDR, lines_port);
            if (fd < 0) {
                nap_ms(50);
                continue;
            }
        }
        size_t off = 0;
        for (int i = 0; i < 64; i++) {
            off += (size_t)snprintf(chunk + off, sizeof(chunk) - off, "L-%010" PRIu64 "\n",
                                    next + (uint64_t)i);
        }
        if (e2e_peer_closed(fd) || e2e_write_all(fd, chunk, off) < 0) {
            /* hopperd closed a busy producer: what it had in flight may be
             * lost (lines have no acknowledgement), and the check will say
             * so. Counted; the next lines go on a new connection. */
            atomic_fetch_add(&prod.lines_disconnects, 1);
            close(fd);
            fd = -1;
        }
        next += 64;
        atomic_store(&prod.lines_written, next);
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

/* ---- hostiles ---- */

static struct {
    atomic_uint_fast64_t acts, connects, reopened;
} hx;

/* A pool of connections kept open: reopened when hopperd closes them;
 * `trickle` sends one byte of an unfinished line on each round. */
static void
pool_round(int *fds, int n, int port, int trickle)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0 && e2e_peer_closed(fds[i])) {
            close(fds[i]);
            fds[i] = -1;
            atomic_fetch_add(&hx.reopened, 1);
        }
        if (fds[i] < 0) {
            fds[i] = e2e_connect_from(hostile_addr(), port);
            if (fds[i] >= 0) {
                set_nonblock(fds[i]);
                atomic_fetch_add(&hx.connects, 1);
            }
            continue;
        }
        if (trickle) {
            spray(fds[i], "s", 1);
        }
    }
}

static void
close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
}

/* Hold `fds` open for ms, serving the pools meanwhile. */
struct pools {
    int slow[NSLOW];
    int idle[NIDLE];
    uint64_t last_round;
};

static void
hold(struct pools *p, int ms)
{
    uint64_t end = e2e_now_ms() + (uint64_t)ms;
    while (e2e_now_ms() < end && !atomic_load(&stop_hostiles)) {
        if (e2e_now_ms() - p->last_round >= 1000) {
            pool_round(p->slow, NSLOW, lines_port, 1);
            pool_round(p->idle, NIDLE, (rnd() & 1) ? lines_port : native_port, 0);
            p->last_round = e2e_now_ms();
        }
        nap_ms(50);
    }
}

static int
hostile_connect(int port)
{
    int fd = e2e_connect_from(hostile_addr(), port);
    if (fd >= 0) {
        set_nonblock(fd);
        atomic_fetch_add(&hx.connects, 1);
    }
    return fd;
}

static void
act_garbage(struct pools *p)
{
    static uint8_t junk[65536];
    int fds[20];
    for (int i = 0; i < 20; i++) {
        size_t n = 1 + rnd() % sizeof(junk);
        for (size_t k = 0; k < n; k++) {
            junk[k] = (uint8_t)rnd();
        }
        fds[i] = hostile_connect(i & 1 ? native_port : lines_port);
        if (fds[i] >= 0) {
            spray(fds[i], junk, n);
        }
    }
    hold(p, 1500);
    close_all(fds, 20);
}

static void
act_oversized(struct pools *p)
{
    static uint8_t big[1 << 20];
    memset(big, 'x', sizeof(big));
    int fds[4];
    /* a 1 MiB line without its end; then an absurd native length; a frame
     * just over any max_frame; a 100k-deep msgpack nesting */
    fds[0] = hostile_connect(lines_port);
    if (fds[0] >= 0) {
        spray(fds[0], big, sizeof(big));
    }
    fds[1] = hostile_connect(native_port);
    if (fds[1] >= 0) {
        spray(fds[1], "\xff\xff\xff\xff", 4);
    }
    fds[2] = hostile_connect(native_port);
    if (fds[2] >= 0) {
        uint8_t hdr[4];
        hd_wire_put_len(hdr, (uint32_t)(sizeof(big) + 1));
        spray(fds[2], hdr, 4);
        spray(fds[2], big, sizeof(big));
    }
    fds[3] = hostile_connect(native_port);
    if (fds[3] >= 0) {
        size_t depth = 100000;
        uint8_t *deep = malloc(depth + 4);
        if (deep != NULL) {
            hd_wire_put_len(deep, (uint32_t)depth);
            memset(deep + 4, 0x91, depth);
            spray(fds[3], deep, depth + 4);
            free(deep);
        }
    }
    hold(p, 1500);
    close_all(fds, 4);
}

static void
act_storm(struct pools *p)
{
    for (int i = 0; i < 500 && !atomic_load(&stop_hostiles); i++) {
        int fd = hostile_connect(i & 1 ? native_port : lines_port);
        if (fd >= 0) {
            close(fd);
        }
    }
    hold(p, 500);
}

/* Pipelined one-record sends into queue `side`, never reading a reply. */
static void
act_pipeline(struct pools *p)
{
    int fd = hostile_connect(native_port);
    if (fd < 0) {
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct hd_slice r = {(const uint8_t *)"hostile-pipelined", 17};
    for (uint64_t id = 1; id <= 5000; id++) {
        if (hd_proto_put_send(&sb, id, "side", &r, 1) < 0) {
            break;
        }
    }
    spray(fd, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    hold(p, 2000);
    close(fd);
}

/* Subscribe to `side` and never read nor acknowledge. */
static void
act_subscribe_never_ack(struct pools *p)
{
    int fd = hostile_connect(native_port);
    if (fd < 0) {
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (hd_proto_put_subscribe(&sb, 1, "side", 1000) == 0) {
        spray(fd, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    hold(p, 3000);
    close(fd);
}

/* Metrics requests that never finish. */
static void
act_metrics_hang(struct pools *p)
{
    int fds[20];
    for (int i = 0; i < 20; i++) {
        fds[i] = hostile_connect(metrics_port);
        if (fds[i] >= 0) {
            spray(fds[i], "GET /metr", 9);
        }
    }
    hold(p, 2000);
    close_all(fds, 20);
}

static void *
hostile_main(void *arg)
{
    (void)arg;
    static struct pools p;
    for (int i = 0; i < NSLOW; i++) {
        p.slow[i] = -1;
    }
    for (int i = 0; i < NIDLE; i++) {
        p.idle[i] = -1;
    }
    void (*acts[])(struct pools *) = {act_garbage,  act_oversized,           act_storm,
                                      act_pipeline, act_subscribe_never_ack, act_metrics_hang};
    size_t nacts = sizeof(acts) / sizeof(acts[0]);
    for (uint64_t k = 0; !atomic_load(&stop_hostiles); k++) {
        acts[k % nacts](&p);
        atomic_fetch_add(&hx.acts, 1);
    }
    close_all(p.slow, NSLOW);
    close_all(p.idle, NIDLE);
    return NULL;
}

static atomic_uint_fast64_t sighups;

static void *
sighup_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_hostiles)) {
        for (int i = 0; i < 50 && !atomic_load(&stop_hostiles); i++) {
            nap_ms(100);
        }
        if (!atomic_load(&stop_hostiles) && kill(hopperd_pid, SIGHUP) == 0) {
            atomic_fetch_add(&sighups, 1);
        }
    }
    return NULL;
}

/* ---- monitor ---- */

static struct {
    uint64_t samples;
    uint64_t rss_kib_max, rss_kib_first, rss_kib_last, hwm_kib;
    uint64_t fds_max, fds_min;
    uint64_t scrapes, scrape_fail, scrape_slow;
    uint64_t scrape_ms_max, scrape_ms_sum;
    double conns_max;
} mon = {.fds_min = UINT64_MAX};

static uint64_t
proc_status_kib(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0) {
            v = strtoull(line + klen, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

static uint64_t
proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    uint64_t n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void *
monitor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_monitor)) {
        uint64_t t0 = e2e_now_ms();
        size_t len = 0;
        char *text = e2e_http(metrics_port, "GET /metrics HTTP/1.0\r\n\r\n", 5000, &len);
        uint64_t ms = e2e_now_ms() - t0;
        uint64_t rss = proc_status_kib(hopperd_pid, "VmRSS:");
        uint64_t fds = proc_fds(hopperd_pid);
        mon.samples++;
        mon.scrapes++;
        if (text == NULL) {
            mon.scrape_fail++;
        } else {
            double c = e2e_metric_in(text, "hopperd_source_connections{source=\"lines\"}") +
                       e2e_metric_in(text, "hopperd_source_connections{source=\"nat\"}");
            mon.conns_max = c > mon.conns_max ? c : mon.conns_max;
        }
        free(text);
        mon.scrape_ms_sum += ms;
        mon.scrape_ms_max = ms > mon.scrape_ms_max ? ms : mon.scrape_ms_max;
        mon.scrape_slow += ms >= SCRAPE_LIMIT_MS;
        if (mon.rss_kib_first == 0) {
            mon.rss_kib_first = rss;
        }
        mon.rss_kib_last = rss;
        mon.rss_kib_max = rss > mon.rss_kib_max ? rss : mon.rss_kib_max;
        mon.fds_max = fds > mon.fds_max ? fds : mon.fds_max;
        mon.fds_min = fds < mon.fds_min ? fds : mon.fds_min;
        uint64_t spent = e2e_now_ms() - t0;
        if (spent < 1000) {
            nap_ms((int)(1000 - spent));
        }
    }
    return NULL;
}

/* ---- main ---- */

static int
all_arrived(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&down.mu);
    int done = down.s[0].distinct >= atomic_load(&prod.native_acked) &&
               down.s[1].distinct >= atomic_load(&prod.lines_written);
    pthread_mutex_unlock(&down.mu);
    return done;
}

static int
listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 64) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Four distinct free ports. */
static void
pick_ports(void)
{
    int *ports[] = {&lines_port, &native_port, &metrics_port, &down_port};
    for (size_t i = 0; i < 4; i++) {
        int fresh;
        do {
            fresh = e2e_free_port();
            for (size_t k = 0; k < i; k++) {
                fresh = fresh == *ports[k] ? -1 : fresh;
            }
        } while (fresh <= 0);
        *ports[i] = fresh;
    }
}

int
main(int argc, char **argv)
{
    long secs = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (secs <= 0) {
        fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* per-connection limits: one frame (max_record_bytes + 64 KiB, 1 MiB at
     * least) or 128 KiB of read buffer, plus 256 KiB of unwritten replies;
     * 2 sources x 256 slots; queues' memory_bytes; 4 MiB held for a
     * subscriber; 64 MiB for the process itself. */
    const uint64_t bound_mib = 64 + 8 + 4 + 4 + 2 * 256 * (1024 + 256) / 1024;
    char *dir = e2e_tmpdir();
    if (dir == NULL) {
        perror("tmpdir");
        return 1;
    }
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    pick_ports();
    down.lfd = listen_on(down_port);
    if (down.lfd < 0) {
        perror("downstream listen");
        return 1;
    }
    down.s[0].max_seen = down.s[1].max_seen = -1;
    down.s[0].tag = 'N';
    down.s[1].tag = 'L';
    char conf[800], logp[800], text[4096];
    snprintf(conf, sizeof(conf), "%s/hopperd.conf", dir);
    snprintf(logp, sizeof(logp), "%s/hopperd.log", dir);
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s\nlog_level = info\nmetrics_listen = 127.0.0.1:%d\n"
             "shutdown_timeout = 10s\n"
             "[queue q]\nmemory_bytes = 8MiB\ndisk_bytes = 256MiB\nsegment_bytes = 8MiB\n"
             "when_full = block\n"
             "[queue side]\nmemory_bytes = 4MiB\ndisk_bytes = 16MiB\nsegment_bytes = 4MiB\n"
             "when_full = reject\n"
             "[source lines]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n"
             "handshake_timeout = 2s\nidle_timeout = 5s\n"
             "[source nat]\ntype = tcp\nlisten = 127.0.0.1:%d\nformat = native\nqueue = q\n"
             "queues = side\nallow_subscribe = on\nhandshake_timeout = 2s\nidle_timeout = 5s\n"
             "[sink down]\ntype = tcp\nconnect = 127.0.0.1:%d\nqueue = q\n"
             "reconnect_min = 20ms\nreconnect_max = 500ms\n",
             state_dir, metrics_port, lines_port, native_port, down_port);
    e2e_write_file(conf, text);
    hopperd_pid = e2e_start(conf, logp);
    if (hopperd_pid <= 0 || e2e_wait_port(native_port, 10000) < 0 ||
        e2e_wait_port(metrics_port, 10000) < 0) {
        fprintf(stderr, "hostile-soak: hopperd did not start\n");
        e2e_dump_log(logp, 4096);
        e2e_cleanup(hopperd_pid, dir);
        return 1;
    }
    printf("hostile-soak: %ld s against hopperd pid %d (log %s)\n", secs, (int)hopperd_pid, logp);
    fflush(stdout);
    pthread_t t_down, t_mon, t_nat, t_lines, t_hx, t_hup;
    pthread_create(&t_down, NULL, down_main, NULL);
    pthread_create(&t_mon, NULL, monitor_main, NULL);
    pthread_create(&t_nat, NULL, native_producer, NULL);
    pthread_create(&t_lines, NULL, lines_producer, NULL);
    pthread_create(&t_hx, NULL, hostile_main, NULL);
    pthread_create(&t_hup, NULL, sighup_main, NULL);
    uint64_t end = e2e_now_ms() + (uint64_t)secs * 1000;
    uint64_t next_report = e2e_now_ms() + 60000;
    while (e2e_now_ms() < end) {
        nap_ms(200);
        if (waitpid(hopperd_pid, NULL, WNOHANG) != 0) {
            break;
        }
        if (e2e_now_ms() >= next_report) {
            next_report += 60000;
            printf("  t+%3" PRIu64 "s native acked %" PRIu64 ", lines %" PRIu64
                   ", rss %" PRIu64 " KiB, fds %" PRIu64 "..%" PRIu64 ", scrape max %" PRIu64
                   " ms\n",
                   (e2e_now_ms() - (end - (uint64_t)secs * 1000)) / 1000,
                   (uint64_t)atomic_load(&prod.native_acked),
                   (uint64_t)atomic_load(&prod.lines_written), mon.rss_kib_last, mon.fds_min,
                   mon.fds_max, mon.scrape_ms_max);
            fflush(stdout);
        }
    }
    atomic_store(&stop_hostiles, 1);
    pthread_join(t_hx, NULL);
    pthread_join(t_hup, NULL);
    atomic_store(&stop_producers, 1);
    pthread_join(t_nat, NULL);
    pthread_join(t_lines, NULL);
    int alive = waitpid(hopperd_pid, NULL, WNOHANG) == 0;
    int arrived = alive && e2e_wait_until(all_arrived, NULL, 60000) == 0;
    uint64_t hwm = alive ? proc_status_kib(hopperd_pid, "VmHWM:") : 0;
    atomic_store(&stop_monitor, 1);
    pthread_join(t_mon, NULL);
    pthread_join(t_down, NULL);
    int status = alive ? e2e_stop(hopperd_pid, SIGTERM, 20000) : -1;

    uint64_t acked = atomic_load(&prod.native_acked), written = atomic_load(&prod.lines_written);
    struct stream *n = &down.s[0], *l = &down.s[1];
    uint64_t n_lost = acked > n->distinct ? acked - n->distinct : 0;
    uint64_t l_lost = written > l->distinct ? written - l->distinct : 0;
    printf("hostile-soak: %ld s, %" PRIu64 " hostile acts, %" PRIu64 " hostile connects (%" PRIu64
           " reopened after hopperd closed them), %" PRIu64 " SIGHUPs\n",
           secs, (uint64_t)atomic_load(&hx.acts), (uint64_t)atomic_load(&hx.connects),
           (uint64_t)atomic_load(&hx.reopened), (uint64_t)atomic_load(&sighups));
    printf("  native producer: acked %" PRIu64 ", delivered %" PRIu64 ", lost %" PRIu64
           ", duplicated %" PRIu64 ", out of order %" PRIu64 " (resends %" PRIu64
           ", reconnects %" PRIu64 ", FULL/FAILED replies %" PRIu64 ")\n",
           acked, n->distinct, n_lost, n->dups, n->out_of_order,
           (uint64_t)atomic_load(&prod.native_retries),
           (uint64_t)atomic_load(&prod.native_reconnects), (uint64_t)atomic_load(&prod.native_full));
    printf("  lines producer:  written %" PRIu64 ", delivered %" PRIu64 ", lost %" PRIu64
           ", duplicated %" PRIu64 ", out of order %" PRIu64 " (disconnects %" PRIu64 ")\n",
           written, l->distinct, l_lost, l->dups, l->out_of_order,
           (uint64_t)atomic_load(&prod.lines_disconnects));
    printf("  other records delivered (hostile lines): %" PRIu64 "; downstream connections: %" PRIu64 "\n",
           down.other, down.connections);
    printf("  hopperd: rss first %" PRIu64 " KiB, last %" PRIu64 " KiB, max sampled %" PRIu64
           " KiB, peak (VmHWM) %" PRIu64 " KiB, bound %" PRIu64 " MiB; open fds %" PRIu64
           "..%" PRIu64 "; client connections max %.0f\n",
           mon.rss_kib_first, mon.rss_kib_last, mon.rss_kib_max, hwm, bound_mib, mon.fds_min,
           mon.fds_max, mon.conns_max);
    printf("  scrapes: %" PRIu64 ", failed %" PRIu64 ", >= %d ms: %" PRIu64 ", max %" PRIu64
           " ms, mean %.1f ms\n",
           mon.scrapes, mon.scrape_fail, SCRAPE_LIMIT_MS, mon.scrape_slow, mon.scrape_ms_max,
           mon.scrapes ? (double)mon.scrape_ms_sum / (double)mon.scrapes : 0.0);
    printf("  hopperd alive at the end: %s; SIGTERM exit status %d\n", alive ? "yes" : "NO",
           status);
    int ok = alive && arrived && status == 0 && n_lost == 0 && l_lost == 0 && n->dups == 0 &&
             l->dups == 0 && n->out_of_order == 0 && l->out_of_order == 0 &&
             hwm <= bound_mib * 1024 && mon.scrape_fail == 0 && mon.scrape_slow == 0;
    printf("hostile-soak: %s\n", ok ? "PASS" : "FAIL");
    if (!ok) {
        e2e_dump_log(logp, 8192);
    }
    hopperd_pid = -1;
    e2e_cleanup(-1, dir);
    free(n->seen);
    free(l->seen);
    close(down.lfd);
    return ok ? 0 : 1;
}
