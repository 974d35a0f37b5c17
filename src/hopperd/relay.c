/* SPDX-License-Identifier: MIT */
/* Egress (see relay.h).
 *
 * Each sink is driven by an explicit state machine; `transitions` below is
 * the only place that says which moves are legal, and set_state() enforces
 * it. What each state may do:
 *   IDLE         nothing yet; goes to CONNECTING.
 *   CONNECTING   resolves and connects (non-blocking connect, wait for
 *                writability, read SO_ERROR) or opens the file.
 *   ESTABLISHED  the only state that writes to the sink and acknowledges.
 *   DRAINING     native sinks: a batch was sent, waiting for the
 *                downstream's reply; only then is it acknowledged in the
 *                queue (lines/octet-counted sinks never enter it).
 *   CLOSING      closes the connection; the unacknowledged batch is kept.
 *   BACKOFF      waits min(max, min * 2^n), jittered, before reconnecting.
 *   STOPPED      terminal.
 * A jetstream sink (sink_jetstream.c, through struct hd_sink_ops) goes
 * through the same states: CONNECTING connects to NATS and checks the
 * stream, ESTABLISHED publishes and acknowledges the acked prefix, a failed
 * publish or an ack timeout goes to CLOSING and then BACKOFF with the
 * doubling, jittered delay (not only reconnect_min), and it never enters
 * DRAINING (its acks are asynchronous; in-flight records stay in its
 * window).
 *
 * Ordering and loss: a batch is built from hopper_recv() and kept until it
 * has been written completely; only then is the last sequence number
 * acknowledged. If the write fails, the same batch is written again after
 * reconnecting, so records are delivered in order and at least once (the
 * downstream may see a batch twice, or the start of a batch twice, after a
 * failure). Acknowledged "written" means handed to the kernel: for tcp, in
 * the socket buffer; for files, written (and fdatasynced per `fsync`).
 *
 * when_full = drop_oldest: this thread is its queue's only consumer, so a
 * source that finds the queue full asks it to make room (ingest.c has the
 * whole mechanism). serve_drops() answers through hd_drop_oldest_serve(),
 * handing over a batch held for a retry (received, not acknowledged) as the
 * oldest records to discard. Requests are served at the top of the loop in
 * every state and while backing off, connecting or pausing (the waits poll
 * the queue's drop_wake_fd), but not in the middle of writing a batch or
 * while a native sink waits for its reply.
 *
 * Threads: one per sink; it alone uses its queue as the consumer.
 * Settings that SIGHUP may change are read under sink->mu (daemon.h).
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "framer.h"
#include "ingest.h"
#include "log.h"
#include "netutil.h"
#include "proto.h"
#include "sink_jetstream.h"

static const unsigned char transitions[HD_SINK_NSTATES][HD_SINK_NSTATES] = {
    [HD_SINK_IDLE] = {[HD_SINK_CONNECTING] = 1, [HD_SINK_STOPPED] = 1},
    [HD_SINK_CONNECTING] =
        {[HD_SINK_ESTABLISHED] = 1, [HD_SINK_BACKOFF] = 1, [HD_SINK_STOPPED] = 1},
    [HD_SINK_ESTABLISHED] = {[HD_SINK_DRAINING] = 1, [HD_SINK_CLOSING] = 1},
    [HD_SINK_DRAINING] = {[HD_SINK_ESTABLISHED] = 1, [HD_SINK_CLOSING] = 1},
    [HD_SINK_CLOSING] = {[HD_SINK_BACKOFF] = 1, [HD_SINK_CONNECTING] = 1, [HD_SINK_STOPPED] = 1},
    [HD_SINK_BACKOFF] = {[HD_SINK_CONNECTING] = 1, [HD_SINK_STOPPED] = 1},
    [HD_SINK_STOPPED] = {0},
};

int
hd_sink_transition_allowed(int from, int to)
{
    if (from < 0 || from >= HD_SINK_NSTATES || to < 0 || to >= HD_SINK_NSTATES) {
        return 0;
    }
    return transitions[from][to];
}

uint64_t
hd_backoff_delay(uint64_t min_ms, uint64_t max_ms, unsigned attempt, uint64_t *rng)
{
    uint64_t d = min_ms;
    for (unsigned i = 0; i < attempt && d < max_ms; i++) {
        d *= 2;
    }
    if (d > max_ms) {
        d = max_ms;
    }
    uint64_t x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    uint64_t r = x * UINT64_C(2685821657736338717);
    uint64_t half = d / 2;
    return half + (d - half > 0 ? r % (d - half + 1) : 0);
}

struct relay {
    struct hd_sink_rt *s;
    int fd;
    SSL *ssl;       /* tls = on: over fd, from sink_open() to sink_close() */
    int tls_broken; /* a TLS operation failed: close without close_notify */
    uint8_t *batch;
    size_t blen, bcap;
    uint64_t last_seq;
    uint64_t nrec;
    uint64_t payload;
    int have_batch;
    unsigned attempt;
    uint64_t backoff_until;
    unsigned gen; /* generation of the settings in use */
    int reconnect_now;
    uint64_t last_sync_ms;
    int dirty; /* file sink: written since the last fdatasync */
    uint64_t rng;
    char addr[HD_ADDR_MAX];
    uint64_t connect_timeout_ms;
    struct log_limit warn; /* this thread's warnings */
    /* native sinks */
    uint64_t next_id;      /* id of the next send */
    uint64_t max_frame;    /* from the downstream's hello */
    unsigned full_attempt; /* consecutive FULL replies, for the retry delay */
    uint8_t *rbuf;         /* reply frame being read */
    size_t rlen, rcap;
    uint64_t keepalive_ms; /* native: an empty `send` after this long without a reply */
    uint64_t last_reply_ms; /* when the downstream last answered (0: not yet) */
    /* Quiet connections (tcp): the downstream closed the connection while
     * nothing was outstanding, so reconnect only when a record is there. */
    int lazy;
    int idle_close_logged; /* the first such close is logged, later ones not */
    int quiet_connect;     /* this connect follows a quiet close: log it at debug level */
    /* sinks with their own module (relay.h struct hd_sink_ops) */
    const struct hd_sink_ops *ops; /* NULL: tcp and file, handled here */
    void *impl;
    int ops_connected;
    int ops_failed;       /* the last step failed: back off exponentially */
    unsigned err_attempt; /* consecutive failed steps, for that backoff */
    uint64_t egress_at_fail; /* egress_records when the sink last connected */
};

/* How long a native sink waits for the downstream's reply to a batch. */
#define NATIVE_REPLY_TIMEOUT_MS 30000
/* Native keep-alive period when the downstream's hello has no
 * idle_timeout, and the shortest period used whatever it says. */
#define KEEPALIVE_DEFAULT_MS 60000
#define KEEPALIVE_MIN_MS 100

static int
state_of(const struct relay *r)
{
    return atomic_load(&r->s->state);
}

static void
set_state(struct relay *r, int to)
{
    int from = state_of(r);
    if (!hd_sink_transition_allowed(from, to)) {
        /* A bug in this file, not a runtime condition. */
        fatalx("relay: sink %s: illegal transition %s -> %s", r->s->conf->s.name,
               hd_sink_state_names[from], hd_sink_state_names[to]);
    }
    atomic_store(&r->s->state, to);
    log_debug("relay: sink %s: %s -> %s", r->s->conf->s.name, hd_sink_state_names[from],
              hd_sink_state_names[to]);
}

static int
mode_of(const struct relay *r)
{
    return atomic_load(&r->s->d->relay_mode);
}

/* True when the relay should give up what it is waiting for. */
static int
should_abort(const struct relay *r)
{
    int mode = mode_of(r);
    if (mode == HD_STOP) {
        return 1;
    }
    return mode == HD_DRAIN && hd_now_ms() >= r->s->d->drain_deadline_ms;
}

static void
sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int
warn_ok(struct relay *r)
{
    return log_limit_ok(&r->warn, hd_now_ms(), NULL);
}

static void
batch_clear(struct relay *r)
{
    r->blen = 0;
    r->nrec = 0;
    r->payload = 0;
    r->have_batch = 0;
}

/* Serve the sources' drop_oldest requests (see the top of this file). */
static void
serve_drops(struct relay *r)
{
    struct hd_held held = {0, 0, 0};
    if (r->ops != NULL) {
        r->ops->held(r->impl, &held);
        uint64_t had = held.n;
        hd_drop_oldest_serve(r->s->queue, r->s->d->wake_fd, &held, r->s->conf->s.name, &r->warn);
        if (had > 0 && held.n == 0) {
            r->ops->discard_held(r->impl);
        }
        return;
    }
    if (r->have_batch) {
        held.n = r->nrec;
        held.bytes = r->payload;
        held.last_seq = r->last_seq;
    }
    hd_drop_oldest_serve(r->s->queue, r->s->d->wake_fd, &held, r->s->conf->s.name, &r->warn);
    if (r->have_batch && held.n == 0) {
        batch_clear(r); /* discarded */
    }
}

/* Sleep up to ms, returning early when a source asks for a drop. */
static void
relay_nap(struct relay *r, uint64_t ms)
{
    int fd = r->s->queue->drop_wake_fd;
    if (fd < 0) {
        sleep_ms(ms);
        return;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    poll(&pfd, 1, (int)ms);
}

static int
connect_abort(void *arg)
{
    struct relay *r = arg;
    serve_drops(r);
    if (mode_of(r) != HD_RUN) {
        return 1;
    }
    pthread_mutex_lock(&r->s->mu);
    unsigned gen = r->s->generation;
    pthread_mutex_unlock(&r->s->mu);
    return gen != r->gen;
}

/* native: read one frame from the downstream into r->rbuf within
 * timeout_ms. Returns the payload length, or -errno (-ETIMEDOUT,
 * -ECONNRESET on EOF, -EPROTO on a bad length, -ECANCELED). */
static long
native_read_frame(struct relay *r, uint64_t timeout_ms)
{
    uint64_t deadline = hd_now_ms() + timeout_ms;
    for (;;) {
        size_t size;
        if (hd_wire_frame_size(r->rbuf, r->rlen, r->rcap - HD_PROTO_HDR, &size) < 0) {
            return -EPROTO;
        }
        if (size > 0 && r->rlen >= size) {
            return (long)(size - HD_PROTO_HDR);
        }
        if (should_abort(r)) {
            return -ECANCELED;
        }
        uint64_t now = hd_now_ms();
        if (now >= deadline) {
            return -ETIMEDOUT;
        }
        /* Read first: over TLS, OpenSSL may hold bytes poll cannot see. */
        struct hd_stream st = {r->fd, r->ssl};
        short wait;
        ssize_t got = hd_stream_recv(&st, r->rbuf + r->rlen, r->rcap - r->rlen, &wait);
        if (got > 0) {
            r->rlen += (size_t)got;
            continue;
        }
        if (got == 0) {
            return -ECONNRESET;
        }
        if (got != -EAGAIN) {
            r->tls_broken = r->ssl != NULL;
            return (long)got;
        }
        struct pollfd pfd = {.fd = r->fd, .events = wait};
        uint64_t left = deadline - now;
        if (poll(&pfd, 1, left < 100 ? (int)left : 100) < 0 && errno != EINTR) {
            return -errno;
        }
    }
}

/* Drop the frame just handled from r->rbuf. */
static void
native_consume(struct relay *r, size_t payload_len)
{
    size_t used = HD_PROTO_HDR + payload_len;
    memmove(r->rbuf, r->rbuf + used, r->rlen - used);
    r->rlen -= used;
}

/* native: the downstream speaks first; learn its frame limit. */
static int
native_handshake(struct relay *r, char *err, size_t errlen)
{
    r->rlen = 0;
    long n = native_read_frame(r, r->connect_timeout_ms);
    if (n < 0) {
        snprintf(err, errlen, "%s: no hello: %s", r->addr, strerror((int)-n));
        return (int)n;
    }
    struct hd_msg m;
    const char *why;
    if (hd_proto_parse(r->rbuf + HD_PROTO_HDR, (size_t)n, &m, &why) < 0 || m.op != HD_OP_HELLO ||
        m.version != HD_PROTO_VERSION || m.max_frame < 1024) {
        snprintf(err, errlen, "%s: not a hopperd native peer (bad hello)", r->addr);
        return -EPROTO;
    }
    r->max_frame = m.max_frame;
    /* Keep the connection alive well inside the downstream's idle_timeout
     * (a third of it); one that does not announce it (an older hopperd)
     * gets 60 s, a fifth of the default 5 min. The first keep-alive goes at
     * once when there is nothing to send, which also answers the
     * downstream's handshake_timeout. */
    r->keepalive_ms = m.idle_timeout > 0 ? m.idle_timeout / 3 : KEEPALIVE_DEFAULT_MS;
    if (r->keepalive_ms < KEEPALIVE_MIN_MS) {
        r->keepalive_ms = KEEPALIVE_MIN_MS;
    }
    r->last_reply_ms = 0;
    native_consume(r, (size_t)n);
    return 0;
}

static void sink_close(struct relay *r);

/* tls = on: the handshake over the connected r->fd, with the context the
 * sink has now (SIGHUP may have replaced it), checking the server's
 * certificate against tls_server_name or else the host of connect. */
static int
tls_open(struct relay *r, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->s->mu);
    SSL_CTX *ctx = r->s->tls_ctx;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&r->s->mu);
    char host[HD_ADDR_MAX], port[16];
    const char *name = r->s->conf->tls.server_name;
    if (name[0] == '\0') {
        if (hd_parse_addr(r->addr, host, sizeof(host), port, sizeof(port), err, errlen) < 0) {
            SSL_CTX_free(ctx);
            return -EINVAL;
        }
        name = host;
    }
    int rc = hd_tls_connect(ctx, r->fd, name, hd_now_ms() + r->connect_timeout_ms, connect_abort,
                            r, &r->ssl, err, errlen);
    SSL_CTX_free(ctx);
    if (rc == 0 && log_getlevel() >= HD_LOG_DEBUG) {
        char sum[256];
        hd_tls_summary(r->ssl, sum, sizeof(sum));
        log_debug("relay: sink %s: %s: TLS %s", r->s->conf->s.name, r->addr, sum);
    }
    return rc;
}

static int
sink_open(struct relay *r, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->s->mu);
    snprintf(r->addr, sizeof(r->addr), "%s", r->s->connect);
    r->connect_timeout_ms = r->s->connect_timeout_ms;
    r->gen = r->s->generation;
    pthread_mutex_unlock(&r->s->mu);
    if (r->ops != NULL) {
        pthread_mutex_lock(&r->s->mu);
        snprintf(r->addr, sizeof(r->addr), "%s", r->s->live->servers);
        pthread_mutex_unlock(&r->s->mu);
        int cause = HD_PUB_OTHER;
        int rc = r->ops->connect(r->impl, err, errlen, &cause);
        if (rc < 0) {
            atomic_fetch_add(&r->s->pub.errors[cause], 1);
            return rc;
        }
        r->ops_connected = 1;
        return 0;
    }
    if (r->s->conf->type == HD_SINK_FILE) {
        int fd = open(r->s->conf->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0) {
            int e = errno;
            snprintf(err, errlen, "open %.200s: %s", r->s->conf->path, strerror(e));
            return -e;
        }
        r->fd = fd;
        r->last_sync_ms = hd_now_ms();
        return 0;
    }
    int fd = hd_net_connect(r->addr, (int)r->connect_timeout_ms, connect_abort, r, err, errlen);
    if (fd < 0) {
        return fd;
    }
    r->fd = fd;
    int rc = 0;
    if (r->s->conf->tls.enabled) {
        rc = tls_open(r, err, errlen);
    }
    if (rc == 0 && r->s->conf->format == HD_FMT_NATIVE) {
        rc = native_handshake(r, err, errlen);
    }
    if (rc < 0) {
        r->tls_broken = 1;
        sink_close(r);
    }
    return rc;
}

static int
file_sync(struct relay *r)
{
    if (!r->dirty || r->fd < 0) {
        return 0;
    }
    if (fdatasync(r->fd) < 0) {
        return -errno;
    }
    r->dirty = 0;
    r->last_sync_ms = hd_now_ms();
    return 0;
}

static void
sink_close(struct relay *r)
{
    if (r->ops != NULL && r->ops_connected) {
        r->ops->disconnect(r->impl);
        r->ops_connected = 0;
        return;
    }
    if (r->fd < 0) {
        return;
    }
    if (r->s->conf->type == HD_SINK_FILE && r->s->conf->fsync.mode != HD_FSYNC_NEVER &&
        file_sync(r) < 0) {
        log_warn("relay: sink %s: fdatasync %s", r->s->conf->s.name, r->s->conf->path);
    }
    struct hd_stream st = {r->fd, r->ssl};
    hd_stream_close(&st, r->tls_broken);
    r->fd = -1;
    r->ssl = NULL;
    r->tls_broken = 0;
}

/* tcp: has the downstream closed or reset the connection? Anything it
 * sends us (lines/octet-counted have no replies) is read and discarded. */
static int
peer_alive(struct relay *r)
{
    if (r->s->conf->type != HD_SINK_TCP) {
        return 1;
    }
    while (r->ssl != NULL) {
        /* TLS: what is there is read through OpenSSL (session tickets,
         * close_notify, an alert); a peer gone shows as EOF or an error. */
        char scratch[4096];
        short wait;
        struct hd_stream st = {r->fd, r->ssl};
        ssize_t got = hd_stream_recv(&st, scratch, sizeof(scratch), &wait);
        if (got == -EAGAIN) {
            return 1;
        }
        if (got <= 0) {
            r->tls_broken = got < 0;
            return 0;
        }
    }
    for (;;) {
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN | POLLRDHUP};
        int n = poll(&pfd, 1, 0);
        if (n <= 0) {
            return 1;
        }
        if (pfd.revents & (POLLERR | POLLHUP | POLLRDHUP)) {
            return 0;
        }
        char scratch[4096];
        ssize_t got = recv(r->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
        if (got == 0) {
            return 0;
        }
        if (got < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
    }
}

static int
relay_should_abort(void *arg)
{
    return should_abort(arg);
}

/* Write the whole of p[0..n) to the sink. A slow downstream is not an
 * error: hd_write_all() waits, but gives up when told to stop (the batch
 * stays unacknowledged). */
static int
write_all(struct relay *r, const uint8_t *p, size_t n)
{
    if (state_of(r) != HD_SINK_ESTABLISHED) {
        return -EINVAL;
    }
    if (r->ssl != NULL) {
        struct hd_stream st = {r->fd, r->ssl};
        int rc = hd_stream_write_all(&st, p, n, 0, relay_should_abort, r);
        r->tls_broken = rc < 0; /* a record may be half written */
        return rc;
    }
    return hd_write_all(r->fd, p, n, r->s->conf->type == HD_SINK_TCP, 0, relay_should_abort, r);
}

static int
batch_append(struct relay *r, const hopper_record *rec)
{
    size_t need = rec->len + 24;
    if (r->blen + need > r->bcap) {
        size_t ncap = r->bcap * 2 > r->blen + need ? r->bcap * 2 : r->blen + need;
        uint8_t *nb = realloc(r->batch, ncap);
        if (nb == NULL) {
            return -ENOMEM;
        }
        r->batch = nb;
        r->bcap = ncap;
    }
    size_t w;
    if (r->s->conf->format == HD_FMT_NATIVE) {
        /* Raw layout [u32 len][bytes]; encoded into a send frame on write. */
        uint32_t len32 = (uint32_t)rec->len;
        memcpy(r->batch + r->blen, &len32, sizeof(len32));
        if (rec->len > 0) {
            memcpy(r->batch + r->blen + sizeof(len32), rec->data, rec->len);
        }
        w = sizeof(len32) + rec->len;
    } else {
        w = hd_encode_record(r->s->conf->format, rec->data, rec->len, r->batch + r->blen,
                             r->bcap - r->blen);
    }
    if (w == 0) {
        return -ENOMEM;
    }
    r->blen += w;
    r->last_seq = rec->seq;
    r->nrec++;
    r->payload += rec->len;
    r->have_batch = 1;
    return 0;
}

/* Fill the batch from the queue: wait up to timeout_ms for the first
 * record, then take what is there without waiting up to batch_bytes. */
static void
fill_batch(struct relay *r, int timeout_ms)
{
    hopper_queue *q = r->s->queue->q;
    hopper_record rec;
    int rc = hopper_recv(q, &rec, timeout_ms);
    while (rc == 0) {
        if (batch_append(r, &rec) < 0) {
            /* Out of memory: the record was received but not kept, so it
             * must not be skipped. Restarting delivery from the queue is not
             * possible without a reopen; fail loudly instead of losing it. */
            fatalx("relay: sink %s: out of memory building a batch", r->s->conf->s.name);
        }
        uint64_t limit = r->s->conf->batch_bytes;
        if (r->s->conf->format == HD_FMT_NATIVE && limit > r->max_frame / 2) {
            limit = r->max_frame / 2;
        }
        if (r->blen >= limit) {
            return;
        }
        rc = hopper_recv(q, &rec, 0);
    }
    if (rc != -EAGAIN && rc != -ETIMEDOUT && rc != HOPPER_ECLOSED && warn_ok(r)) {
        log_warnx("relay: sink %s: queue %s: recv: %s", r->s->conf->s.name,
                  r->s->queue->conf->s.name, hopper_strerror(rc));
        sleep_ms(100);
    }
}

#define NATIVE_RETRY 1
#define NATIVE_DROP 2

/* Wait up to ms, returning early when told to stop. */
static void
pause_unless_stopping(struct relay *r, uint64_t ms)
{
    uint64_t until = hd_now_ms() + ms;
    while (!should_abort(r) && mode_of(r) == HD_RUN) {
        uint64_t now = hd_now_ms();
        if (now >= until) {
            break;
        }
        relay_nap(r, until - now < 50 ? until - now : 50);
        serve_drops(r);
    }
}

/* native: send recs[0..n) as one `send` and wait up to timeout_ms for its
 * reply (DRAINING). Returns the reply's payload length, with the reply in
 * *m (an ok or error for this send; its slices point into r->rbuf until
 * the caller's native_consume()), or -errno / -EPROTO. */
static long
native_request(struct relay *r, const struct hd_slice *recs, size_t n, uint64_t timeout_ms,
               struct hd_msg *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t id = r->next_id++;
    int rc = hd_proto_put_send(&sb, id, NULL, recs, n);
    if (rc == 0) {
        rc = write_all(r, (const uint8_t *)sb.data, sb.size);
    } else {
        rc = -ENOMEM;
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0) {
        return rc;
    }
    set_state(r, HD_SINK_DRAINING);
    long len = native_read_frame(r, timeout_ms);
    if (len < 0) {
        return len;
    }
    const char *why;
    if (hd_proto_parse(r->rbuf + HD_PROTO_HDR, (size_t)len, m, &why) < 0 || m->id != id ||
        (m->op != HD_OP_OK && m->op != HD_OP_ERROR)) {
        log_warnx("relay: sink %s: %s: unexpected reply to batch %llu", r->s->conf->s.name,
                  r->addr, (unsigned long long)id);
        return -EPROTO;
    }
    set_state(r, HD_SINK_ESTABLISHED);
    r->last_reply_ms = hd_now_ms();
    return len;
}

/* native: send the batch as one `send` and wait for its reply (DRAINING).
 * Returns 0 (accepted: acknowledge), NATIVE_RETRY (downstream full or
 * failing: keep the batch, try again), NATIVE_DROP (downstream can never
 * take it: count and acknowledge), or -errno (connection problem). */
static int
native_exchange(struct relay *r)
{
    struct hd_sink_rt *s = r->s;
    struct hd_slice *sl = malloc((size_t)r->nrec * sizeof(*sl));
    if (sl == NULL) {
        return -ENOMEM;
    }
    size_t off = 0;
    for (uint64_t i = 0; i < r->nrec; i++) {
        uint32_t len32;
        memcpy(&len32, r->batch + off, sizeof(len32));
        sl[i].p = r->batch + off + sizeof(len32);
        sl[i].n = len32;
        off += sizeof(len32) + len32;
    }
    struct hd_msg m;
    long n = native_request(r, sl, (size_t)r->nrec, NATIVE_REPLY_TIMEOUT_MS, &m);
    free(sl);
    if (n < 0) {
        return (int)n;
    }
    if (m.op == HD_OP_OK) {
        native_consume(r, (size_t)n);
        r->full_attempt = 0;
        return 0;
    }
    const char *code = hd_code_name(m.code);
    if (m.code == HD_CODE_TOO_BIG) {
        log_errorx("relay: sink %s: %s refused a batch of %llu records as TOO_BIG (%.*s); "
                   "dropped",
                   s->conf->s.name, r->addr, (unsigned long long)r->nrec, (int)m.message.n,
                   m.message.p != NULL ? (const char *)m.message.p : "");
        native_consume(r, (size_t)n);
        return NATIVE_DROP;
    }
    if (m.code == HD_CODE_BAD_FRAME) {
        log_errorx("relay: sink %s: %s: BAD_FRAME (%.*s)", s->conf->s.name, r->addr,
                   (int)m.message.n, m.message.p != NULL ? (const char *)m.message.p : "");
        return -EPROTO;
    }
    native_consume(r, (size_t)n);
    pthread_mutex_lock(&s->mu);
    uint64_t mn = s->reconnect_min_ms, mx = s->reconnect_max_ms;
    pthread_mutex_unlock(&s->mu);
    uint64_t delay = hd_backoff_delay(mn, mx, r->full_attempt, &r->rng);
    if (r->full_attempt < 64) {
        r->full_attempt++;
    }
    if (warn_ok(r)) {
        log_warnx("relay: sink %s: %s answered %s; retrying the batch in %llu ms", s->conf->s.name,
                  r->addr, code, (unsigned long long)delay);
    }
    pause_unless_stopping(r, delay);
    return NATIVE_RETRY;
}

/* native, nothing to send: once keepalive_ms passed since the last reply,
 * an empty `send` (PROTOCOL.md §7), so that the downstream's
 * handshake_timeout and idle_timeout do not close a quiet link. Its reply
 * (ok, or an error code: the request was still answered) shows the link
 * works. 0, or -errno when the connection failed. */
static int
native_keepalive(struct relay *r)
{
    if (r->last_reply_ms != 0 && hd_now_ms() - r->last_reply_ms < r->keepalive_ms) {
        return 0;
    }
    struct hd_msg m;
    long n = native_request(r, NULL, 0, NATIVE_REPLY_TIMEOUT_MS, &m);
    if (n < 0) {
        return (int)n;
    }
    native_consume(r, (size_t)n);
    atomic_fetch_add(&r->s->keepalives, 1);
    return 0;
}

/* The downstream closed a connection with nothing outstanding on it (no
 * batch written and unanswered): most likely its idle timeout (a hopperd
 * source's idle_timeout, a syslog relay's). Nothing was lost and it is not
 * an error: reconnect when the next record is there (BACKOFF with `lazy`),
 * and say so once rather than at every quiet period. */
static void
peer_closed_quiet(struct relay *r)
{
    struct hd_sink_rt *s = r->s;
    if (!r->idle_close_logged) {
        r->idle_close_logged = 1;
        log_info("relay: sink %s: %s closed the connection while it was quiet; reconnecting when "
                 "there are records (further such closes are logged at debug level)",
                 s->conf->s.name, r->addr);
    } else {
        log_debug("relay: sink %s: %s closed the quiet connection", s->conf->s.name, r->addr);
    }
    atomic_fetch_add(&s->quiet_closes, 1);
    r->lazy = 1;
    set_state(r, HD_SINK_CLOSING);
}

/* ESTABLISHED for a sink with its own module: one step. Returns the
 * step's HD_STEP_* (HD_STEP_BUSY after a failure, which moved to CLOSING). */
static int
ops_step(struct relay *r, int wait_ms)
{
    struct hd_sink_rt *s = r->s;
    char why[HD_ERR_LEN];
    int cause = HD_PUB_OTHER;
    int rc = r->ops->step(r->impl, wait_ms, why, sizeof(why), &cause);
    if (rc >= 0) {
        /* Records acknowledged since the last failure: the sink works
         * again, so the next failure starts the backoff afresh. */
        if (r->err_attempt > 0 && atomic_load(&s->egress_records) != r->egress_at_fail) {
            log_info("relay: sink %s: publishing again", s->conf->s.name);
            r->err_attempt = 0;
        }
        return rc;
    }
    atomic_fetch_add(&s->write_errors, 1);
    if (r->err_attempt == 0) {
        log_warnx("relay: sink %s: %s: %s [%s]; retrying with backoff", s->conf->s.name, r->addr,
                  why, hd_pub_cause_names[cause]);
    } else {
        log_debug("relay: sink %s: %s: %s [%s]", s->conf->s.name, r->addr, why,
                  hd_pub_cause_names[cause]);
    }
    r->ops_failed = 1;
    set_state(r, HD_SINK_CLOSING);
    return HD_STEP_BUSY;
}

static void
established_step(struct relay *r)
{
    struct hd_sink_rt *s = r->s;
    pthread_mutex_lock(&s->mu);
    unsigned gen = s->generation;
    pthread_mutex_unlock(&s->mu);
    if (gen != r->gen) {
        log_info("relay: sink %s: settings changed, reconnecting", s->conf->s.name);
        r->reconnect_now = 1;
        set_state(r, HD_SINK_CLOSING);
        return;
    }
    if (r->ops != NULL) {
        (void)ops_step(r, mode_of(r) == HD_RUN ? 100 : 0);
        return;
    }
    int is_file = s->conf->type == HD_SINK_FILE;
    if (!r->have_batch) {
        fill_batch(r, mode_of(r) == HD_RUN ? 100 : 0);
    }
    int is_native = s->conf->type == HD_SINK_TCP && s->conf->format == HD_FMT_NATIVE;
    if (!r->have_batch) {
        int rc;
        if (!peer_alive(r)) {
            peer_closed_quiet(r);
        } else if (is_native && (rc = native_keepalive(r)) < 0) {
            if (rc == -ECONNRESET || rc == -EPIPE) {
                peer_closed_quiet(r);
            } else {
                if (rc != -ECANCELED) {
                    log_warnx("relay: sink %s: %s: keep-alive: %s", s->conf->s.name, r->addr,
                              strerror(-rc));
                }
                set_state(r, HD_SINK_CLOSING);
            }
        } else if (is_file && s->conf->fsync.mode == HD_FSYNC_INTERVAL &&
                   hd_now_ms() - r->last_sync_ms >= s->conf->fsync.interval_ms &&
                   file_sync(r) < 0) {
            log_warn("relay: sink %s: fdatasync %s", s->conf->s.name, s->conf->path);
        }
        return;
    }
    if (!peer_alive(r)) {
        /* Found before writing: the batch is intact, reconnect at once. */
        peer_closed_quiet(r);
        return;
    }
    int rc;
    int dropped = 0; /* refused as TOO_BIG: acknowledged, but not egress */
    if (s->conf->format == HD_FMT_NATIVE) {
        rc = native_exchange(r);
        if (rc == NATIVE_RETRY) {
            return;
        }
        if (rc == NATIVE_DROP) {
            hd_ingest_count_drop(s->queue, HD_DROP_REJECTED, r->nrec, r->payload);
            dropped = 1;
            rc = 0;
        }
    } else {
        rc = write_all(r, r->batch, r->blen);
    }
    if (rc == 0 && is_file) {
        r->dirty = 1;
        if (s->conf->fsync.mode == HD_FSYNC_ALWAYS ||
            (s->conf->fsync.mode == HD_FSYNC_INTERVAL &&
             hd_now_ms() - r->last_sync_ms >= s->conf->fsync.interval_ms)) {
            rc = file_sync(r);
        }
    }
    if (rc < 0) {
        atomic_fetch_add(&s->write_errors, 1);
        if (rc != -ECANCELED) {
            log_warnx("relay: sink %s: write to %s: %s", s->conf->s.name,
                      is_file ? s->conf->path : r->addr, strerror(-rc));
        }
        set_state(r, HD_SINK_CLOSING);
        return;
    }
    rc = hopper_ack(s->queue->q, r->last_seq);
    if (rc < 0 && warn_ok(r)) {
        log_warnx("relay: sink %s: queue %s: ack: %s", s->conf->s.name, s->queue->conf->s.name,
                  hopper_strerror(rc));
    }
    if (!dropped) {
        atomic_fetch_add(&s->egress_records, r->nrec);
        atomic_fetch_add(&s->egress_bytes, r->payload);
    }
    batch_clear(r);
}

static void *
relay_main(void *arg)
{
    struct relay *r = arg;
    struct hd_sink_rt *s = r->s;
    char why[HD_ERR_LEN];
    for (;;) {
        int mode = mode_of(r);
        int st = state_of(r);
        if (mode == HD_STOP) {
            break;
        }
        if (st != HD_SINK_DRAINING) {
            serve_drops(r);
        }
        if (mode == HD_DRAIN && r->ops != NULL) {
            /* Draining ends when the sink is not up, time is up, or nothing
             * is in flight and the queue has nothing more right now. */
            if (st != HD_SINK_ESTABLISHED || should_abort(r) || ops_step(r, 0) == HD_STEP_IDLE) {
                break;
            }
            continue;
        }
        if (mode == HD_DRAIN) {
            /* Draining ends when the sink is not up, time is up, or the
             * queue has nothing more to give right now. */
            if (st != HD_SINK_ESTABLISHED || should_abort(r)) {
                break;
            }
            if (!r->have_batch) {
                fill_batch(r, 0);
                if (!r->have_batch) {
                    break;
                }
            }
        }
        switch (st) {
        case HD_SINK_IDLE:
            set_state(r, HD_SINK_CONNECTING);
            break;
        case HD_SINK_CONNECTING:
            if (sink_open(r, why, sizeof(why)) == 0) {
                atomic_fetch_add(&s->connects, 1);
                if (r->quiet_connect) {
                    log_debug("relay: sink %s: reconnected to %s", s->conf->s.name, r->addr);
                } else if (r->attempt > 0) {
                    log_info("relay: sink %s: connected to %s after %u failed attempts",
                             s->conf->s.name,
                             s->conf->type == HD_SINK_FILE ? s->conf->path : r->addr, r->attempt);
                } else {
                    log_info("relay: sink %s: connected to %s", s->conf->s.name,
                             s->conf->type == HD_SINK_FILE ? s->conf->path : r->addr);
                }
                r->attempt = 0;
                r->quiet_connect = 0;
                /* Acks that arrive from here on are for publishes made on
                 * this connection: they show the sink works again. */
                r->egress_at_fail = atomic_load(&s->egress_records);
                set_state(r, HD_SINK_ESTABLISHED);
            } else {
                atomic_fetch_add(&s->connect_failures, 1);
                pthread_mutex_lock(&s->mu);
                uint64_t mn = s->reconnect_min_ms, mx = s->reconnect_max_ms;
                pthread_mutex_unlock(&s->mu);
                uint64_t delay = hd_backoff_delay(mn, mx, r->attempt, &r->rng);
                if (r->attempt == 0) {
                    log_warnx("relay: sink %s: %s; retrying with backoff", s->conf->s.name, why);
                } else {
                    log_debug("relay: sink %s: %s; retry in %llu ms", s->conf->s.name, why,
                              (unsigned long long)delay);
                }
                if (r->attempt < 64) {
                    r->attempt++;
                }
                r->quiet_connect = 0;
                r->backoff_until = hd_now_ms() + delay;
                set_state(r, HD_SINK_BACKOFF);
            }
            break;
        case HD_SINK_ESTABLISHED:
            established_step(r);
            break;
        case HD_SINK_CLOSING:
            sink_close(r);
            if (r->reconnect_now) {
                r->reconnect_now = 0;
                set_state(r, HD_SINK_CONNECTING);
            } else if (r->lazy) {
                r->backoff_until = 0;
                set_state(r, HD_SINK_BACKOFF);
            } else if (r->ops_failed) {
                /* A failed publish (timeout, stream full, no responders...):
                 * back off exponentially, with jitter, until one succeeds. */
                r->ops_failed = 0;
                pthread_mutex_lock(&s->mu);
                uint64_t mn = s->reconnect_min_ms, mx = s->reconnect_max_ms;
                pthread_mutex_unlock(&s->mu);
                r->backoff_until = hd_now_ms() + hd_backoff_delay(mn, mx, r->err_attempt, &r->rng);
                if (r->err_attempt < 64) {
                    r->err_attempt++;
                }
                set_state(r, HD_SINK_BACKOFF);
            } else {
                pthread_mutex_lock(&s->mu);
                uint64_t mn = s->reconnect_min_ms;
                pthread_mutex_unlock(&s->mu);
                r->backoff_until = hd_now_ms() + hd_backoff_delay(mn, mn, 0, &r->rng);
                set_state(r, HD_SINK_BACKOFF);
            }
            break;
        case HD_SINK_BACKOFF: {
            uint64_t now = hd_now_ms();
            pthread_mutex_lock(&s->mu);
            unsigned gen = s->generation;
            pthread_mutex_unlock(&s->mu);
            if (r->lazy && gen == r->gen) {
                /* Quietly disconnected (peer_closed_quiet): connect when a
                 * record is there to be sent. */
                if (!r->have_batch) {
                    fill_batch(r, 50);
                }
                if (r->have_batch) {
                    r->lazy = 0;
                    r->quiet_connect = 1;
                    set_state(r, HD_SINK_CONNECTING);
                }
            } else if (now >= r->backoff_until || gen != r->gen) {
                r->lazy = 0;
                set_state(r, HD_SINK_CONNECTING);
            } else {
                uint64_t left = r->backoff_until - now;
                relay_nap(r, left < 50 ? left : 50);
            }
            break;
        }
        default:
            fatalx("relay: sink %s: unexpected state %d", s->conf->s.name, st);
        }
    }
    int st = state_of(r);
    if (st == HD_SINK_ESTABLISHED || st == HD_SINK_DRAINING) {
        set_state(r, HD_SINK_CLOSING);
    }
    sink_close(r);
    set_state(r, HD_SINK_STOPPED);
    if (r->have_batch) {
        log_info("relay: sink %s: %llu records written but not acknowledged; they are delivered "
                 "again after restart",
                 s->conf->s.name, (unsigned long long)r->nrec);
    }
    if (r->ops != NULL) {
        struct hd_held h;
        r->ops->held(r->impl, &h);
        if (h.n > 0) {
            log_info("relay: sink %s: %llu records published or waiting without a publish ack; "
                     "they are published again after restart (same message ids)",
                     s->conf->s.name, (unsigned long long)h.n);
        }
        r->ops->destroy(r->impl);
    }
    free(r->batch);
    free(r->rbuf);
    free(r);
    return NULL;
}

int
hd_relay_start(struct hd_daemon *d)
{
    for (size_t i = 0; i < d->nsinks; i++) {
        struct hd_sink_rt *s = &d->sinks[i];
        struct relay *r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return -ENOMEM;
        }
        r->s = s;
        r->fd = -1;
        r->rcap = 64 * 1024;
        r->rbuf = malloc(r->rcap);
        if (r->rbuf == NULL) {
            free(r);
            return -ENOMEM;
        }
        r->rng =
            (hd_now_ms() << 16) ^ (uint64_t)getpid() ^ ((uint64_t)i << 40) ^ 0x9e3779b97f4a7c15u;
        if (s->conf->type == HD_SINK_JETSTREAM) {
            r->ops = &hd_sink_jetstream_ops;
            int rc = r->ops->create(s, &r->impl);
            if (rc < 0) {
                free(r->rbuf);
                free(r);
                return rc;
            }
        }
        int rc = pthread_create(&s->thread, NULL, relay_main, r);
        if (rc != 0) {
            if (r->ops != NULL) {
                r->ops->destroy(r->impl);
            }
            free(r->rbuf);
            free(r);
            return -rc;
        }
        s->thread_started = 1;
    }
    return 0;
}

void
hd_relay_stop(struct hd_daemon *d, uint64_t deadline_ms)
{
    d->drain_deadline_ms = deadline_ms;
    atomic_store(&d->relay_mode, HD_DRAIN);
    for (size_t i = 0; i < d->nsinks; i++) {
        if (d->sinks[i].thread_started) {
            pthread_join(d->sinks[i].thread, NULL);
            d->sinks[i].thread_started = 0;
        }
    }
    for (size_t i = 0; i < d->nsinks; i++) {
        if (d->sinks[i].conf->type == HD_SINK_JETSTREAM) {
            hd_sink_jetstream_cleanup();
            break;
        }
    }
    atomic_store(&d->relay_mode, HD_STOP);
}

void
hd_relay_reload(struct hd_sink_rt *s, const struct hd_sink_conf *nc)
{
    pthread_mutex_lock(&s->mu);
    if (strcmp(s->connect, nc->connect) != 0) {
        log_info("relay: sink %s: address %s -> %s", s->conf->s.name, s->connect, nc->connect);
    }
    /* File sinks reopen on every reload (log rotation); tcp sinks
     * reconnect only when the address changed. */
    if (s->conf->type == HD_SINK_FILE || strcmp(s->connect, nc->connect) != 0) {
        s->generation++;
    }
    snprintf(s->connect, sizeof(s->connect), "%s", nc->connect);
    s->connect_timeout_ms = nc->connect_timeout_ms;
    s->reconnect_min_ms = nc->reconnect_min_ms;
    s->reconnect_max_ms = nc->reconnect_max_ms;
    if (s->live != NULL) {
        /* jetstream: servers, credentials and TLS; a change reconnects (records
         * in flight are published again, under the same message ids). */
        struct hd_sink_conf *l = s->live;
        struct hd_tls_conf nt = nc->tls;
        nt.enabled = l->tls.enabled; /* `tls` itself needs a restart */
        if (strcmp(l->servers, nc->servers) != 0 || strcmp(l->creds, nc->creds) != 0 ||
            strcmp(l->user, nc->user) != 0 || strcmp(l->password, nc->password) != 0 ||
            strcmp(l->token, nc->token) != 0 || memcmp(&l->tls, &nt, sizeof(nt)) != 0) {
            log_info("relay: sink %s: servers or credentials changed, reconnecting",
                     s->conf->s.name);
            memcpy(l->servers, nc->servers, sizeof(l->servers));
            memcpy(l->creds, nc->creds, sizeof(l->creds));
            memcpy(l->user, nc->user, sizeof(l->user));
            memcpy(l->password, nc->password, sizeof(l->password));
            memcpy(l->token, nc->token, sizeof(l->token));
            l->tls = nt;
            s->generation++;
        }
    }
    pthread_mutex_unlock(&s->mu);
}
