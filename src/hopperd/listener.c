/* SPDX-License-Identifier: MIT */
/* Ingress (see listener.h).
 *
 * One thread runs an epoll loop over the listening sockets, the client
 * connections and an eventfd (wake-up from main). Each connection owns a
 * buffer that grows up to hd_framer_buffer_size() (one maximal frame), so a
 * client can never make hopperd hold more than that per connection, and
 * max_connections bounds the count per source.
 *
 * Back-pressure (when_full = block): when hopper_send() reports EFULL the
 * record stays in the connection's buffer, the connection leaves the epoll
 * set (the kernel's socket buffer fills and TCP pushes back on the client)
 * and the loop retries every RETRY_MS. Nothing is consumed from the buffer
 * before hopper_send() accepted it.
 *
 * Connection states: READING -> BLOCKED (not reading, retried) -> READING;
 * native connections also stop reading while OUT_LIMIT bytes of replies
 * are unwritten, and after a malformed frame they only flush the error
 * reply (CLOSING). Any -> CLOSED at EOF, error, malformed input or
 * shutdown. conn_sync_events() derives the epoll interest from these flags
 * in one place.
 * Only this thread touches connections, so they need no lock.
 */
#include "listener.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "framer.h"
#include "log.h"
#include "netutil.h"
#include "proto.h"

#define RETRY_MS 10
#define INITIAL_BUF (16u * 1024u)
/* A fast sender's buffer grows to this, so that one read, one
 * hopper_send_batch() and (disk mode) one write carry many records. */
#define READ_BUF_MAX (128u * 1024u)
#define READS_PER_EVENT 8
/* native: stop reading a client that does not read its replies */
#define OUT_LIMIT (256u * 1024u)

enum item_kind { IT_WAKE, IT_LISTEN, IT_CONN };

struct item {
    int kind;
};

struct lsock {
    struct item it;
    struct hd_source_rt *src;
    int paused; /* out of epoll after EMFILE & co., until L.resume_ms */
};

struct subq;

struct conn {
    struct item it;
    struct subq *sub; /* native: the queue this connection consumes, or NULL */
    int fd;
    struct hd_source_rt *src;
    struct hd_framer fr;
    uint8_t *buf;
    size_t len, cap, maxcap;
    int read_filled; /* the last read filled the buffer: the peer sends fast */
    int blocked;         /* waiting for queue space (retried every RETRY_MS) */
    int eof;             /* peer closed its side; finish the buffer, then close */
    int closing;         /* native: flush the replies, then close */
    uint32_t events;     /* epoll interest currently registered (0 = none) */
    msgpack_sbuffer out; /* native: replies not yet written */
    size_t outoff;       /* bytes of out already written */
    char peer[64];
    struct conn *prev, *next;
};

/* A record handed to a native subscriber and not yet acknowledged. */
struct inflight {
    uint64_t seq;
    uint8_t *data;
    size_t len;
};

/* Native pull consumption of one queue (PROTOCOL.md §3, subscribe). The
 * listener thread is the queue's single consumer while a subscriber is
 * attached; config validation plus has_sink keep sinks away. Records taken
 * from the queue stay in `items` until acknowledged, so a subscriber that
 * disconnects loses nothing: the next one gets them again first. */
struct subq {
    struct hd_queue_rt *qr;
    int has_sink;
    struct conn *sub;       /* current subscriber or NULL */
    uint64_t window;        /* records in flight allowed */
    struct inflight *items; /* in sequence order */
    size_t n, cap;
    size_t sent;  /* items[0..sent) went to the current subscriber */
    size_t bytes; /* payload bytes in items */
};

#define SUB_DEFAULT_WINDOW 1000u
#define SUB_MAX_WINDOW 100000u
#define SUB_MAX_BYTES (4u * 1024u * 1024u)
#define SUB_FRAME_BYTES (256u * 1024u)

/* Owned by the listener thread after hd_listener_start(). */
static struct {
    struct hd_daemon *d;
    int epfd;
    pthread_t thread;
    int started;
    struct item wake;
    struct lsock *lsocks;
    struct conn *conns;
    size_t nblocked;
    int stopping; /* shutdown: read what is there, then close */
    int give_up;  /* shutdown deadline passed: blocked records are dropped */
    uint64_t last_warn_ms;
    uint64_t suppressed;
    uint64_t resume_ms; /* when paused listening sockets rejoin epoll */
    size_t npaused;
    struct subq *subqs; /* one per queue */
    size_t nsubs;       /* attached subscribers */
} L = {.epfd = -1};

/* Out of descriptors or memory: a level-triggered listening socket would
 * wake the loop forever, so it leaves epoll for ACCEPT_PAUSE_MS. */
#define ACCEPT_PAUSE_MS 100

/* At most one warning per second from the listener; the rest are counted. */
static int
warn_allowed(void)
{
    uint64_t now = hd_now_ms();
    if (now - L.last_warn_ms < 1000) {
        L.suppressed++;
        return 0;
    }
    if (L.suppressed > 0) {
        log_warnx("listener: %llu similar messages suppressed", (unsigned long long)L.suppressed);
        L.suppressed = 0;
    }
    L.last_warn_ms = now;
    return 1;
}

static void
count_drop(struct hd_source_rt *src, int cause)
{
    atomic_fetch_add(&src->queue->drops[cause], 1);
}

static void
count_drop_bytes(struct hd_queue_rt *qr, int cause, uint64_t records, uint64_t bytes)
{
    atomic_fetch_add(&qr->drops[cause], records);
    atomic_fetch_add(&qr->drop_bytes[cause], bytes);
}

static uint64_t sub_drop_oldest(struct hd_queue_rt *qr, uint64_t need);

/* Sink-less queue under drop_oldest: at most this many rounds of "discard
 * at least the bytes wanted, send again" per record or batch. */
#define LOCAL_DROP_ROUNDS 4096

/* A send to qr succeeded: a pending drop_oldest request is void. */
static void
send_succeeded(struct hd_queue_rt *qr)
{
    if (atomic_load(&qr->drop_need) != 0) {
        atomic_store(&qr->drop_need, 0);
    }
}

/* when_full = drop_oldest, the queue has a sink: the send of `need`
 * payload bytes found qr full. Ask the sink's relay thread (the queue's
 * consumer) to discard the oldest records; the caller keeps the records and
 * retries (every RETRY_MS, and at once when the relay wakes this loop).
 * Queues without a sink are handled by the caller with sub_drop_oldest(). */
static void
request_drop_oldest(struct hd_queue_rt *qr, uint64_t need)
{
    if (need == 0) {
        need = 1;
    }
    uint64_t cur = atomic_load(&qr->drop_need);
    while (cur < need && !atomic_compare_exchange_weak(&qr->drop_need, &cur, need)) {
    }
    uint64_t one = 1;
    ssize_t r = write(qr->drop_wake_fd, &one, sizeof(one));
    (void)r;
}

int
hd_listener_open(struct hd_daemon *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->nsources; i++) {
        struct hd_source_rt *s = &d->sources[i];
        char why[HD_ERR_LEN];
        int fd;
        if (s->conf->type == HD_SRC_TCP) {
            fd = hd_net_listen_tcp(s->conf->listen, why, sizeof(why));
        } else {
            fd = hd_net_listen_unix(s->conf->path, (mode_t)s->conf->mode, why, sizeof(why));
        }
        if (fd < 0) {
            snprintf(err, errlen, "source %s: %s", s->conf->s.name, why);
            return fd;
        }
        s->fd = fd;
        log_info("listener: source %s listening on %s (%s -> queue %s)", s->conf->s.name,
                 s->conf->type == HD_SRC_TCP ? s->conf->listen : s->conf->path,
                 hd_format_name(s->conf->format), s->queue->conf->s.name);
    }
    return 0;
}

static void
close_listeners(void)
{
    for (size_t i = 0; i < L.d->nsources; i++) {
        struct hd_source_rt *s = &L.d->sources[i];
        if (s->fd >= 0) {
            epoll_ctl(L.epfd, EPOLL_CTL_DEL, s->fd, NULL);
            close(s->fd);
            s->fd = -1;
            if (s->conf->type == HD_SRC_UNIX) {
                unlink(s->conf->path);
            }
        }
    }
}

/* Register exactly the epoll interest the connection's state calls for. */
static int
conn_sync_events(struct conn *c)
{
    uint32_t want = 0;
    size_t pending = c->out.size - c->outoff;
    if (!c->blocked && !c->eof && !c->closing && pending < OUT_LIMIT) {
        want |= EPOLLIN | EPOLLRDHUP;
    }
    if (pending > 0) {
        want |= EPOLLOUT;
    }
    if (want == c->events) {
        return 0;
    }
    struct epoll_event ev = {.events = want, .data.ptr = &c->it};
    int rc;
    if (want == 0) {
        rc = epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    } else if (c->events == 0) {
        rc = epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &ev);
    } else {
        rc = epoll_ctl(L.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (rc < 0) {
        log_warn("listener: epoll_ctl");
        return -1;
    }
    c->events = want;
    return 0;
}

static void
conn_close(struct conn *c)
{
    if (c->sub != NULL) {
        c->sub->sub = NULL;
        c->sub->sent = 0; /* resent to the next subscriber */
        atomic_store(&c->sub->qr->subscribed, 0);
        L.nsubs--;
        log_info("listener: queue %s: subscriber %s left with %zu records unacknowledged",
                 c->sub->qr->conf->s.name, c->peer, c->sub->n);
    }
    if (c->blocked) {
        L.nblocked--;
    }
    if (c->events != 0) {
        epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    }
    close(c->fd);
    atomic_fetch_sub(&c->src->conns_active, 1);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        L.conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    log_debug("listener: source %s: %s closed", c->src->conf->s.name, c->peer);
    msgpack_sbuffer_destroy(&c->out);
    free(c->buf);
    free(c);
}

static void
conn_set_blocked(struct conn *c, int blocked)
{
    if (c->blocked == blocked) {
        return;
    }
    c->blocked = blocked;
    if (blocked) {
        L.nblocked++;
    } else {
        L.nblocked--;
    }
}

/* Write pending replies. Returns -1 if the connection was closed. */
static int
conn_flush(struct conn *c)
{
    while (c->outoff < c->out.size) {
        ssize_t w = send(c->fd, c->out.data + c->outoff, c->out.size - c->outoff, MSG_NOSIGNAL);
        if (w > 0) {
            c->outoff += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        log_debug("listener: source %s: %s: write: %s", c->src->conf->s.name, c->peer,
                  strerror(errno));
        conn_close(c);
        return -1;
    }
    if (c->outoff == c->out.size) {
        msgpack_sbuffer_clear(&c->out);
        c->outoff = 0;
        if (c->closing) {
            conn_close(c);
            return -1;
        }
    }
    if (conn_sync_events(c) < 0) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* hopper_send_batch() without waiting; when the queue is full under
 * drop_oldest, room is made (by the queue's relay, or here when it has no
 * sink) and, here, the send is tried again. Returns its last result. */
static int
send_or_drop_oldest(struct hd_queue_rt *qr, const hopper_iovec *iov, size_t k, uint64_t bytes)
{
    int rc = hopper_send_batch(qr->q, iov, k, 0);
    if (rc == HOPPER_EFULL && qr->conf->when_full == HD_FULL_DROP_OLDEST && !L.give_up) {
        if (qr->has_sink) {
            request_drop_oldest(qr, bytes);
        } else {
            for (int i = 0; rc == HOPPER_EFULL && i < LOCAL_DROP_ROUNDS &&
                            sub_drop_oldest(qr, bytes) > 0;
                 i++) {
                rc = hopper_send_batch(qr->q, iov, k, 0);
            }
        }
    }
    return rc;
}

/* Hand one record to the queue. Returns 0 when the record is done with
 * (accepted or dropped and counted), 1 when it must wait (block policy). */
static int
deliver(struct conn *c, const uint8_t *rec, size_t len)
{
    struct hd_queue_rt *qr = c->src->queue;
    hopper_iovec v = {.data = rec, .len = len};
    int rc = send_or_drop_oldest(qr, &v, 1, len);
    if (rc == 0) {
        atomic_fetch_add(&qr->ingress_records, 1);
        atomic_fetch_add(&qr->ingress_bytes, len);
        send_succeeded(qr);
        return 0;
    }
    if (rc == HOPPER_EFULL) {
        switch (qr->conf->when_full) {
        case HD_FULL_BLOCK:
        case HD_FULL_DROP_OLDEST:
            if (!L.give_up) {
                return 1;
            }
            count_drop_bytes(qr, HD_DROP_SHUTDOWN, 1, len);
            if (warn_allowed()) {
                log_warnx("listener: queue %s: still full at shutdown deadline, record dropped",
                          qr->conf->s.name);
            }
            return 0;
        case HD_FULL_REJECT:
        case HD_FULL_DROP_NEWEST:
        default:
            count_drop_bytes(qr, HD_DROP_FULL, 1, len);
            break;
        }
        if (warn_allowed()) {
            log_warnx("listener: queue %s: %s, record dropped (when_full = %s)", qr->conf->s.name,
                      hopper_strerror(rc), hd_when_full_name(qr->conf->when_full));
        }
        return 0;
    }
    if (rc == HOPPER_ETOOBIG) {
        count_drop_bytes(qr, HD_DROP_OVERSIZE, 1, len);
    } else if (rc == HOPPER_ECLOSED) {
        count_drop_bytes(qr, HD_DROP_SHUTDOWN, 1, len);
    } else {
        count_drop_bytes(qr, HD_DROP_QUEUE_FAILED, 1, len);
    }
    if (warn_allowed()) {
        log_warnx("listener: queue %s: send: %s, record dropped", qr->conf->s.name,
                  hopper_strerror(rc));
    }
    return 0;
}

/* Records framed from one buffer, delivered with one hopper_send_batch()
 * (one lock round trip and, in disk mode, one write instead of one each). */
#define BATCH_MAX 1024

struct pending {
    const uint8_t *p;
    size_t len;
    size_t end; /* buffer offset just past this record's frame */
};

/* Deliver batch[0..k); *off advances past every record done with. Returns 1
 * if a record must wait for queue space (block policy), else 0. If the
 * queue refuses the whole batch, the records go one by one through
 * deliver(), which applies when_full to each. */
static int
flush_batch(struct conn *c, const struct pending *batch, size_t k, size_t *off)
{
    struct hd_queue_rt *qr = c->src->queue;
    hopper_iovec iov[BATCH_MAX];
    uint64_t bytes = 0;
    if (k == 0) {
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        iov[i].data = batch[i].p;
        iov[i].len = batch[i].len;
        bytes += batch[i].len;
    }
    if (hopper_send_batch(qr->q, iov, k, 0) == 0) {
        atomic_fetch_add(&qr->ingress_records, k);
        atomic_fetch_add(&qr->ingress_bytes, bytes);
        send_succeeded(qr);
        *off = batch[k - 1].end;
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        if (deliver(c, batch[i].p, batch[i].len) != 0) {
            return 1;
        }
        *off = batch[i].end;
    }
    return 0;
}

static struct hd_queue_rt *
find_queue(const struct hd_slice *name)
{
    for (size_t i = 0; i < L.d->nqueues; i++) {
        const char *qn = L.d->queues[i].conf->s.name;
        if (strlen(qn) == name->n && memcmp(qn, name->p, name->n) == 0) {
            return &L.d->queues[i];
        }
    }
    return NULL;
}

static void
native_reject(struct conn *c, uint64_t id, int code, const char *msg)
{
    atomic_fetch_add(&c->src->native_rejections[code], 1);
    if (hd_proto_put_error(&c->out, id, code, msg) < 0) {
        c->closing = 1;
    }
}

static int native_subscribe(struct conn *c, const struct hd_msg *m);
static int native_ack(struct conn *c, const struct hd_msg *m);

/* One native request frame. Returns 0 when answered, 1 when it must wait
 * for queue space (block policy; nothing was accepted), -1 when the frame
 * is malformed (the error reply is queued and the connection closes after
 * flushing it). */
static int
native_request(struct conn *c, const uint8_t *p, size_t n)
{
    struct hd_msg m;
    const char *why = NULL;
    int ok = hd_proto_parse(p, n, &m, &why) == 0;
    if (ok && m.op == HD_OP_SUBSCRIBE) {
        return native_subscribe(c, &m);
    }
    if (ok && m.op == HD_OP_ACK && c->sub != NULL) {
        return native_ack(c, &m);
    }
    if (ok && m.op == HD_OP_ACK) {
        why = "ack without subscribe";
    }
    if (!ok || m.op != HD_OP_SEND) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (warn_allowed()) {
            log_warnx("listener: source %s: %s: bad native frame: %s", c->src->conf->s.name,
                      c->peer, why != NULL ? why : "only send, subscribe and ack are accepted");
        }
        native_reject(c, m.has_id ? m.id : 0, HD_CODE_BAD_FRAME,
                      why != NULL ? why : "only send, subscribe and ack are accepted");
        c->closing = 1;
        return -1;
    }
    struct hd_queue_rt *qr = m.queue.n > 0 ? find_queue(&m.queue) : c->src->queue;
    if (qr == NULL) {
        native_reject(c, m.id, HD_CODE_NO_SUCH_QUEUE, "no such queue");
        return 0;
    }
    if (m.nrecords == 0) {
        return hd_proto_put_ok(&c->out, m.id, 0, 0) < 0 ? -1 : 0;
    }
    hopper_iovec *iov = malloc((size_t)m.nrecords * sizeof(*iov));
    if (iov == NULL) {
        native_reject(c, m.id, HD_CODE_FAILED, "out of memory");
        return 0;
    }
    size_t cur;
    uint64_t bytes = 0;
    size_t k = 0;
    struct hd_slice rec;
    hd_proto_records_begin(&m, &cur);
    while (k < m.nrecords && hd_proto_next_record(p, n, &cur, &rec) == 0) {
        if (rec.n > qr->conf->max_record_bytes) {
            free(iov);
            native_reject(c, m.id, HD_CODE_TOO_BIG, "record exceeds max_record_bytes");
            return 0;
        }
        iov[k].data = rec.p;
        iov[k].len = rec.n;
        bytes += rec.n;
        k++;
    }
    int rc = send_or_drop_oldest(qr, iov, k, bytes);
    free(iov);
    if (rc == 0) {
        atomic_fetch_add(&qr->ingress_records, k);
        atomic_fetch_add(&qr->ingress_bytes, bytes);
        send_succeeded(qr);
        return hd_proto_put_ok(&c->out, m.id, k, 0) < 0 ? -1 : 0;
    }
    if (rc == HOPPER_EFULL) {
        switch (qr->conf->when_full) {
        case HD_FULL_BLOCK:
        case HD_FULL_DROP_OLDEST:
            if (!L.give_up) {
                return 1;
            }
            native_reject(c, m.id, HD_CODE_FULL, "queue full at shutdown");
            return 0;
        case HD_FULL_DROP_NEWEST:
            count_drop_bytes(qr, HD_DROP_FULL, k, bytes);
            return hd_proto_put_ok(&c->out, m.id, 0, k) < 0 ? -1 : 0;
        case HD_FULL_REJECT:
        default:
            native_reject(c, m.id, HD_CODE_FULL, hopper_strerror(rc));
            return 0;
        }
    }
    native_reject(c, m.id, rc == HOPPER_ETOOBIG ? HD_CODE_TOO_BIG : HD_CODE_FAILED,
                  hopper_strerror(rc));
    return 0;
}

/* Move records from the queue into the subscriber's window and send what
 * it has not seen. May close the connection (then c->sub is cleared). */
static void
sub_pump(struct subq *sq)
{
    struct conn *c = sq->sub;
    if (c == NULL || c->closing) {
        return;
    }
    while (sq->n < sq->window && sq->bytes < SUB_MAX_BYTES) {
        hopper_record rec;
        int rc = hopper_recv(sq->qr->q, &rec, 0);
        if (rc != 0) {
            if (rc != -EAGAIN && rc != HOPPER_ECLOSED && warn_allowed()) {
                log_warnx("listener: queue %s: recv: %s", sq->qr->conf->s.name,
                          hopper_strerror(rc));
            }
            break;
        }
        if (sq->n == sq->cap) {
            size_t ncap = sq->cap ? sq->cap * 2 : 256;
            struct inflight *ni = realloc(sq->items, ncap * sizeof(*ni));
            if (ni == NULL) {
                fatalx("listener: queue %s: out of memory holding records in flight",
                       sq->qr->conf->s.name);
            }
            sq->items = ni;
            sq->cap = ncap;
        }
        uint8_t *copy = malloc(rec.len ? rec.len : 1);
        if (copy == NULL) {
            fatalx("listener: queue %s: out of memory holding records in flight",
                   sq->qr->conf->s.name);
        }
        memcpy(copy, rec.data, rec.len);
        sq->items[sq->n].seq = rec.seq;
        sq->items[sq->n].data = copy;
        sq->items[sq->n].len = rec.len;
        sq->n++;
        sq->bytes += rec.len;
    }
    while (sq->sent < sq->n && c->out.size - c->outoff < OUT_LIMIT) {
        size_t start = sq->sent, k = start, bytes = 0;
        while (k < sq->n && (k == start || bytes + sq->items[k].len < SUB_FRAME_BYTES)) {
            bytes += sq->items[k].len;
            k++;
        }
        struct hd_slice *sl = malloc((k - start) * sizeof(*sl));
        if (sl == NULL) {
            break;
        }
        for (size_t i = start; i < k; i++) {
            sl[i - start].p = sq->items[i].data;
            sl[i - start].n = sq->items[i].len;
        }
        int rc = hd_proto_put_records(&c->out, sq->items[start].seq, sq->items[k - 1].seq, sl,
                                      k - start);
        free(sl);
        if (rc < 0) {
            break;
        }
        atomic_fetch_add(&sq->qr->sub_delivered, k - start);
        sq->sent = k;
    }
    conn_flush(c);
}

/* when_full = drop_oldest on a queue without a sink: this thread is its
 * consumer, so it discards the oldest records itself: first those held for
 * the subscriber (received, not acknowledged: the oldest), then from the
 * queue, until at least `need` payload bytes (and one record) are gone.
 * Each is acknowledged without delivery and counted (cause drop_oldest).
 * Returns the records discarded (0: nothing left to discard). */
static uint64_t
sub_drop_oldest(struct hd_queue_rt *qr, uint64_t need)
{
    struct subq *sq = &L.subqs[qr - L.d->queues];
    uint64_t n = 0, bytes = 0;
    size_t k = 0;
    while (k < sq->n && (n == 0 || bytes < need)) {
        bytes += sq->items[k].len;
        sq->bytes -= sq->items[k].len;
        free(sq->items[k].data);
        k++;
        n++;
    }
    int rc = 0;
    if (k > 0) {
        rc = hopper_ack(qr->q, sq->items[k - 1].seq);
        memmove(sq->items, sq->items + k, (sq->n - k) * sizeof(*sq->items));
        sq->n -= k;
        sq->sent = sq->sent > k ? sq->sent - k : 0;
    }
    while (rc == 0 && (n == 0 || bytes < need)) {
        hopper_record rec;
        if (hopper_recv(qr->q, &rec, 0) != 0) {
            break;
        }
        rc = hopper_ack(qr->q, rec.seq);
        bytes += rec.len;
        n++;
    }
    if (rc < 0 && warn_allowed()) {
        log_warnx("listener: queue %s: ack: %s", qr->conf->s.name, hopper_strerror(rc));
    }
    count_drop_bytes(qr, HD_DROP_OLDEST, n, bytes);
    return n;
}

static int
native_subscribe(struct conn *c, const struct hd_msg *m)
{
    struct hd_queue_rt *qr = m->queue.n > 0 ? find_queue(&m->queue) : c->src->queue;
    if (qr == NULL) {
        native_reject(c, m->id, HD_CODE_NO_SUCH_QUEUE, "no such queue");
        return 0;
    }
    struct subq *sq = &L.subqs[qr - L.d->queues];
    if (c->sub != NULL) {
        native_reject(c, m->id, HD_CODE_BUSY, "this connection is already subscribed");
        return 0;
    }
    if (sq->has_sink) {
        native_reject(c, m->id, HD_CODE_BUSY, "the queue is consumed by a sink");
        return 0;
    }
    if (sq->sub != NULL) {
        native_reject(c, m->id, HD_CODE_BUSY, "the queue has a subscriber");
        return 0;
    }
    sq->sub = c;
    sq->sent = 0;
    sq->window = m->window == 0               ? SUB_DEFAULT_WINDOW
                 : m->window > SUB_MAX_WINDOW ? SUB_MAX_WINDOW
                                              : m->window;
    c->sub = sq;
    L.nsubs++;
    atomic_store(&qr->subscribed, 1);
    log_info("listener: queue %s: subscriber %s attached (window %llu, %zu records to resend)",
             qr->conf->s.name, c->peer, (unsigned long long)sq->window, sq->n);
    return hd_proto_put_ok(&c->out, m->id, 0, 0) < 0 ? -1 : 0;
}

static int
native_ack(struct conn *c, const struct hd_msg *m)
{
    struct subq *sq = c->sub;
    size_t k = 0;
    while (k < sq->sent && sq->items[k].seq <= m->seq) {
        k++;
    }
    if (k == 0) {
        return 0;
    }
    int rc = hopper_ack(sq->qr->q, sq->items[k - 1].seq);
    if (rc < 0 && warn_allowed()) {
        log_warnx("listener: queue %s: ack: %s", sq->qr->conf->s.name, hopper_strerror(rc));
    }
    for (size_t i = 0; i < k; i++) {
        sq->bytes -= sq->items[i].len;
        free(sq->items[i].data);
    }
    memmove(sq->items, sq->items + k, (sq->n - k) * sizeof(*sq->items));
    sq->n -= k;
    sq->sent -= k;
    atomic_fetch_add(&sq->qr->sub_acked, k);
    return 0;
}

/* Frame and deliver what is buffered. Returns -1 if the connection was
 * closed, 0 otherwise. */
static int
conn_process(struct conn *c)
{
    size_t off = 0;  /* bytes done with (delivered, dropped or skipped) */
    size_t scan = 0; /* bytes framed; records in [off, scan) wait in `batch` */
    struct pending batch[BATCH_MAX];
    size_t k = 0;
    int rc = HD_FRAME_NEED_MORE;
    int native = c->fr.format == HD_FMT_NATIVE;
    while (!c->blocked && !c->closing) {
        if (native && c->out.size - c->outoff >= OUT_LIMIT) {
            break; /* the client is not reading its replies */
        }
        size_t consumed;
        const uint8_t *rec;
        size_t reclen;
        struct hd_framer saved = c->fr;
        rc = hd_framer_next(&c->fr, c->buf + scan, c->len - scan, &consumed, &rec, &reclen);
        if (rc == HD_FRAME_RECORD && !native) {
            scan += consumed;
            batch[k].p = rec;
            batch[k].len = reclen;
            batch[k].end = scan;
            k++;
            if (k == BATCH_MAX) {
                int blocked = flush_batch(c, batch, k, &off);
                k = 0;
                if (blocked) {
                    conn_set_blocked(c, 1);
                    break;
                }
            }
            continue;
        }
        if (k > 0) {
            /* Deliver what is pending before this event: the framer state
             * it changed is rolled back and the event framed again. */
            c->fr = saved;
            int blocked = flush_batch(c, batch, k, &off);
            k = 0;
            if (blocked) {
                conn_set_blocked(c, 1);
                break;
            }
            continue;
        }
        if (rc == HD_FRAME_NEED_MORE || rc == HD_FRAME_BAD) {
            break;
        }
        if (rc == HD_FRAME_RECORD && native_request(c, rec, reclen) > 0) {
            conn_set_blocked(c, 1);
            break;
        }
        if (rc == HD_FRAME_OVERSIZE) {
            count_drop(c->src, HD_DROP_OVERSIZE);
            if (warn_allowed()) {
                log_warnx("listener: source %s: %s: record longer than %zu bytes dropped",
                          c->src->conf->s.name, c->peer, c->fr.max_record);
            }
        }
        scan += consumed;
        off = scan;
    }
    if (off > 0) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    if (rc == HD_FRAME_BAD && !c->closing) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (warn_allowed()) {
            log_warnx("listener: source %s: %s: malformed %s frame, closing connection",
                      c->src->conf->s.name, c->peer, hd_format_name(c->fr.format));
        }
        if (!native) {
            conn_close(c);
            return -1;
        }
        native_reject(c, 0, HD_CODE_BAD_FRAME, "bad frame length");
        c->closing = 1;
    }
    if (c->closing) {
        return conn_flush(c);
    }
    if (c->blocked || !c->eof) {
        if (!c->blocked && c->len == c->cap && c->cap >= c->maxcap &&
            !(native && c->out.size - c->outoff >= OUT_LIMIT)) {
            /* Cannot happen: a full buffer always holds one whole frame. */
            log_warnx("listener: source %s: %s: framing stalled, closing", c->src->conf->s.name,
                      c->peer);
            conn_close(c);
            return -1;
        }
        return native ? conn_flush(c) : conn_sync_events(c) < 0 ? (conn_close(c), -1) : 0;
    }
    /* EOF and everything complete is delivered: the rest is a final line
     * without a newline (a record) or a truncated frame (malformed). */
    const uint8_t *rec;
    size_t reclen;
    rc = hd_framer_eof(&c->fr, c->buf, c->len, &rec, &reclen);
    if (rc == HD_FRAME_RECORD) {
        if (deliver(c, rec, reclen) != 0) {
            conn_set_blocked(c, 1);
            return conn_sync_events(c) < 0 ? (conn_close(c), -1) : 0;
        }
    } else if (rc == HD_FRAME_OVERSIZE) {
        count_drop(c->src, HD_DROP_OVERSIZE);
    } else if (rc == HD_FRAME_BAD) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (warn_allowed()) {
            log_warnx("listener: source %s: %s: connection closed inside a frame",
                      c->src->conf->s.name, c->peer);
        }
    }
    c->len = 0;
    /* Replies still to write (the client may have shut down only its
     * sending side): flush them first. */
    c->closing = 1;
    return conn_flush(c);
}

/* Read until EAGAIN (or `rounds` reads; 0 = no limit), processing as we go. */
static void
conn_readable(struct conn *c, int rounds)
{
    for (int i = 0; rounds == 0 || i < rounds; i++) {
        if (c->blocked || c->closing || c->eof) {
            return;
        }
        if (c->fr.format == HD_FMT_NATIVE && c->out.size - c->outoff >= OUT_LIMIT) {
            return;
        }
        size_t limit = c->maxcap;
        if (c->read_filled && limit < READ_BUF_MAX) {
            limit = READ_BUF_MAX;
        }
        if ((c->len == c->cap || c->read_filled) && c->cap < limit) {
            size_t ncap = c->cap * 2 < limit ? c->cap * 2 : limit;
            uint8_t *nb = realloc(c->buf, ncap);
            if (nb == NULL) {
                log_warnx("listener: source %s: %s: out of memory, closing", c->src->conf->s.name,
                          c->peer);
                conn_close(c);
                return;
            }
            c->buf = nb;
            c->cap = ncap;
        }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r > 0) {
            c->read_filled = (size_t)r == c->cap - c->len;
            c->len += (size_t)r;
            if (conn_process(c) < 0) {
                return;
            }
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (L.stopping) {
                /* Shutdown: what the client sent is read; a partial line
                 * left over is lost, and counted. */
                if (c->len > 0 && !c->fr.skipping_line && c->fr.skip_left == 0) {
                    count_drop(c->src, HD_DROP_SHUTDOWN);
                }
                c->len = 0;
                c->closing = 1;
                conn_flush(c);
            }
            return;
        }
        if (r < 0) {
            log_debug("listener: source %s: %s: read: %s", c->src->conf->s.name, c->peer,
                      strerror(errno));
        }
        c->eof = 1;
        /* conn_process() sees eof: it delivers the rest and closes, or
         * blocks on the last record and closes once it is accepted. */
        conn_process(c);
        return;
    }
}

static void
peer_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    snprintf(out, outlen, "unix");
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%u", host, ntohs(sin6->sin6_port));
    }
}

/* Largest native frame a source accepts (announced in its hello). */
static size_t
native_max_frame(const struct hd_source_rt *src)
{
    uint64_t m = src->queue->conf->max_record_bytes + 64u * 1024u;
    return m < HD_PROTO_MIN_FRAME ? HD_PROTO_MIN_FRAME : (size_t)m;
}

static void
accept_all(struct lsock *ls)
{
    struct hd_source_rt *src = ls->src;
    for (;;) {
        int fd = accept4(src->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (warn_allowed()) {
                    log_warn("listener: source %s: accept (pausing %d ms)", src->conf->s.name,
                             ACCEPT_PAUSE_MS);
                }
                epoll_ctl(L.epfd, EPOLL_CTL_DEL, src->fd, NULL);
                ls->paused = 1;
                L.npaused++;
                L.resume_ms = hd_now_ms() + ACCEPT_PAUSE_MS;
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && warn_allowed()) {
                log_warn("listener: source %s: accept", src->conf->s.name);
            }
            return;
        }
        if (atomic_load(&src->conns_active) >= src->conf->max_connections) {
            atomic_fetch_add(&src->conns_rejected, 1);
            if (warn_allowed()) {
                log_warnx("listener: source %s: max_connections (%llu) reached, refusing",
                          src->conf->s.name, (unsigned long long)src->conf->max_connections);
            }
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (c != NULL) {
            int native = src->conf->format == HD_FMT_NATIVE;
            hd_framer_init(&c->fr, src->conf->format,
                           native ? native_max_frame(src)
                                  : (size_t)src->queue->conf->max_record_bytes);
            c->maxcap = hd_framer_buffer_size(&c->fr);
            c->cap = c->maxcap < INITIAL_BUF ? c->maxcap : INITIAL_BUF;
            c->buf = malloc(c->cap);
            msgpack_sbuffer_init(&c->out);
        }
        if (c == NULL || c->buf == NULL) {
            log_warnx("listener: source %s: out of memory, refusing connection", src->conf->s.name);
            if (c != NULL) {
                free(c);
            }
            close(fd);
            continue;
        }
        c->it.kind = IT_CONN;
        c->fd = fd;
        c->src = src;
        peer_name(fd, c->peer, sizeof(c->peer));
        c->next = L.conns;
        if (L.conns != NULL) {
            L.conns->prev = c;
        }
        L.conns = c;
        atomic_fetch_add(&src->conns_active, 1);
        atomic_fetch_add(&src->conns_total, 1);
        log_debug("listener: source %s: connection from %s", src->conf->s.name, c->peer);
        if (src->conf->format == HD_FMT_NATIVE &&
            hd_proto_put_hello(&c->out, native_max_frame(src), src->queue->conf->max_record_bytes,
                               src->queue->conf->s.name) < 0) {
            conn_close(c);
            continue;
        }
        if (src->conf->format == HD_FMT_NATIVE) {
            conn_flush(c);
        } else if (conn_sync_events(c) < 0) {
            conn_close(c);
        }
    }
}

static void
retry_blocked(void)
{
    struct conn *next;
    for (struct conn *c = L.conns; c != NULL; c = next) {
        next = c->next;
        if (!c->blocked) {
            continue;
        }
        conn_set_blocked(c, 0);
        conn_process(c);
    }
}

static void
shutdown_phase(void)
{
    close_listeners();
    L.stopping = 1;
    uint64_t deadline = hd_now_ms() + L.d->cfg->shutdown_timeout_ms / 2;
    while (L.conns != NULL) {
        struct conn *next;
        for (struct conn *c = L.conns; c != NULL; c = next) {
            next = c->next;
            if (c->closing || c->eof) {
                conn_flush(c);
            } else if (!c->blocked) {
                conn_readable(c, 64);
            }
        }
        if (L.conns == NULL) {
            break;
        }
        if (hd_now_ms() >= deadline) {
            L.give_up = 1;
        }
        retry_blocked();
        if (L.give_up) {
            while (L.conns != NULL) {
                struct conn *c = L.conns;
                if (c->len > 0) {
                    count_drop(c->src, HD_DROP_SHUTDOWN);
                }
                conn_close(c);
            }
            break;
        }
        struct timespec ts = {0, RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void *
listener_main(void *arg)
{
    (void)arg;
    struct epoll_event evs[64];
    for (;;) {
        int timeout = L.nblocked > 0 || L.nsubs > 0 ? RETRY_MS : -1;
        if (L.npaused > 0) {
            uint64_t now = hd_now_ms();
            int left = L.resume_ms > now ? (int)(L.resume_ms - now) : 0;
            timeout = timeout < 0 || left < timeout ? left : timeout;
        }
        int n = epoll_wait(L.epfd, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            fatal("listener: epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct item *it = evs[i].data.ptr;
            if (it->kind == IT_WAKE) {
                uint64_t v;
                ssize_t r = read(L.d->wake_fd, &v, sizeof(v));
                (void)r;
            } else if (it->kind == IT_LISTEN) {
                accept_all((struct lsock *)it);
            } else {
                /* Connections are closed only by their own events within a
                 * batch, so `c` is alive here; each fd appears once. */
                struct conn *c = (struct conn *)it;
                if (evs[i].events & EPOLLOUT) {
                    if (conn_flush(c) < 0) {
                        continue;
                    }
                    if (c->len > 0 && !c->blocked) {
                        if (conn_process(c) < 0) {
                            continue;
                        }
                    }
                }
                if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                    conn_readable(c, READS_PER_EVENT);
                }
            }
        }
        if (L.nblocked > 0) {
            retry_blocked();
        }
        for (size_t i = 0; L.nsubs > 0 && i < L.d->nqueues; i++) {
            sub_pump(&L.subqs[i]);
        }
        if (L.npaused > 0 && hd_now_ms() >= L.resume_ms) {
            for (size_t i = 0; i < L.d->nsources; i++) {
                struct lsock *ls = &L.lsocks[i];
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ls->it};
                if (ls->paused && ls->src->fd >= 0 &&
                    epoll_ctl(L.epfd, EPOLL_CTL_ADD, ls->src->fd, &ev) == 0) {
                    ls->paused = 0;
                    L.npaused--;
                }
            }
        }
        if (atomic_load(&L.d->listener_stop)) {
            shutdown_phase();
            return NULL;
        }
    }
}

int
hd_listener_start(struct hd_daemon *d)
{
    L.d = d;
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (L.epfd < 0) {
        return -errno;
    }
    L.wake.kind = IT_WAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &L.wake};
    if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, d->wake_fd, &ev) < 0) {
        return -errno;
    }
    L.lsocks = calloc(d->nsources ? d->nsources : 1, sizeof(*L.lsocks));
    L.subqs = calloc(d->nqueues ? d->nqueues : 1, sizeof(*L.subqs));
    if (L.lsocks == NULL || L.subqs == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < d->nqueues; i++) {
        L.subqs[i].qr = &d->queues[i];
        for (size_t k = 0; k < d->nsinks; k++) {
            L.subqs[i].has_sink |= d->sinks[k].queue == &d->queues[i];
        }
    }
    for (size_t i = 0; i < d->nsources; i++) {
        L.lsocks[i].it.kind = IT_LISTEN;
        L.lsocks[i].src = &d->sources[i];
        struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &L.lsocks[i].it};
        if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, d->sources[i].fd, &lev) < 0) {
            return -errno;
        }
    }
    int rc = pthread_create(&L.thread, NULL, listener_main, NULL);
    if (rc != 0) {
        return -rc;
    }
    L.started = 1;
    return 0;
}

void
hd_listener_stop(struct hd_daemon *d)
{
    if (!L.started) {
        L.d = d; /* stop without start (bind failure): close_listeners needs it */
    }
    atomic_store(&d->listener_stop, 1);
    uint64_t one = 1;
    ssize_t r = write(d->wake_fd, &one, sizeof(one));
    (void)r;
    if (L.started) {
        pthread_join(L.thread, NULL);
        L.started = 0;
    } else {
        close_listeners();
    }
    if (L.epfd >= 0) {
        close(L.epfd);
        L.epfd = -1;
    }
    free(L.lsocks);
    L.lsocks = NULL;
    /* Records still in flight were received but never acknowledged: the
     * queue delivers them again after the next open. */
    for (size_t i = 0; L.subqs != NULL && i < d->nqueues; i++) {
        for (size_t k = 0; k < L.subqs[i].n; k++) {
            free(L.subqs[i].items[k].data);
        }
        free(L.subqs[i].items);
    }
    free(L.subqs);
    L.subqs = NULL;
}
