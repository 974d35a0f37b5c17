/* SPDX-License-Identifier: MIT */
/* Prometheus metrics (see metrics.h). Values come from hopper_stats_get()
 * (any thread may call it) and the daemon's atomic counters; nothing here
 * takes a lock other than the sink's mu (not needed: state is atomic). */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "netutil.h"
#include "proto.h"

static pthread_t metrics_thread;
static int metrics_started;

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom) {
        return;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, ncap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static void
head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int
hd_metrics_render(struct hd_daemon *d, char **out, size_t *len)
{
    struct sbuf b = {NULL, 0, 0, 0};
    b.cap = 8192;
    b.p = malloc(b.cap);
    if (b.p == NULL) {
        return -ENOMEM;
    }
    b.p[0] = '\0';
    size_t nq = d->nqueues;
    hopper_stats *st = calloc(nq ? nq : 1, sizeof(*st));
    if (st == NULL) {
        free(b.p);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nq; i++) {
        st[i].struct_size = sizeof(st[i]);
        if (d->queues[i].q == NULL || hopper_stats_get(d->queues[i].q, &st[i]) < 0) {
            memset(&st[i], 0, sizeof(st[i]));
        }
    }
    head(&b, "hopperd_up", "gauge", "1 while hopperd runs");
    sb_printf(&b, "hopperd_up 1\n");
    head(&b, "hopperd_uptime_seconds", "gauge", "seconds since start");
    sb_printf(&b, "hopperd_uptime_seconds %.3f\n", (double)(hd_now_ms() - d->start_ms) / 1000.0);
    head(&b, "hopperd_metrics_timeouts_total", "counter",
         "metrics connections closed 5 s after they were accepted, their reply not written");
    sb_printf(&b, "hopperd_metrics_timeouts_total %" PRIu64 "\n",
              (uint64_t)atomic_load(&d->metrics_timeouts));
    head(&b, "hopperd_metrics_evictions_total", "counter",
         "metrics connections closed unanswered to make room for a new one (64 at most)");
    sb_printf(&b, "hopperd_metrics_evictions_total %" PRIu64 "\n",
              (uint64_t)atomic_load(&d->metrics_evictions));

#define QGAUGE(MN, MT, MH, MX)                                                                     \
    do {                                                                                           \
        head(&b, MN, MT, MH);                                                                      \
        for (size_t i = 0; i < nq; i++) {                                                          \
            sb_printf(&b, MN "{queue=\"%s\"} %" PRIu64 "\n", d->queues[i].conf->s.name,            \
                      (uint64_t)(MX));                                                             \
        }                                                                                          \
    } while (0)
    QGAUGE("hopperd_queue_memory_records", "gauge", "records held in memory", st[i].mem_records);
    QGAUGE("hopperd_queue_memory_bytes", "gauge", "bytes of memory held by records in memory (payload + 48 each)", st[i].mem_bytes);
    QGAUGE("hopperd_queue_disk_records", "gauge", "records in segment files", st[i].disk_records);
    QGAUGE("hopperd_queue_disk_bytes", "gauge", "bytes of segment and checkpoint files",
           st[i].disk_bytes);
    QGAUGE("hopperd_queue_segments", "gauge", "segment files", st[i].segments);
    QGAUGE("hopperd_queue_backlog_records", "gauge", "records accepted and not acknowledged",
           st[i].backlog_records);
    QGAUGE("hopperd_queue_oldest_age_milliseconds", "gauge",
           "age of the oldest unacknowledged record", st[i].oldest_age_ms);
    QGAUGE("hopperd_queue_failed", "gauge", "1 if the queue failed after an I/O error",
           st[i].failed != 0);
    QGAUGE("hopperd_queue_full_rejections_total", "counter", "sends refused because full",
           st[i].full_rejections);
    QGAUGE("hopperd_queue_corrupt_frames_total", "counter", "damaged frames skipped",
           st[i].corrupt_frames);
    QGAUGE("hopperd_queue_corrupt_bytes_total", "counter", "bytes skipped with damaged frames",
           st[i].corrupt_bytes);
    QGAUGE("hopperd_queue_redelivered_total", "counter",
           "deliveries of records delivered before a restart", st[i].redelivered);
    QGAUGE("hopperd_queue_lost_records_total", "counter", "records known lost", st[i].lost_records);
    QGAUGE("hopperd_queue_missing_records_total", "counter",
           "sequence numbers found missing from the spool at open (deleted or truncated "
           "segment files, damage)",
           st[i].missing_records);
    QGAUGE("hopperd_queue_checkpoint_clamped_total", "counter",
           "sequence numbers the checkpoint's read position was beyond the spool at open",
           st[i].checkpoint_clamped);
    QGAUGE("hopperd_queue_fsyncs_total", "counter", "fdatasync calls on segment files",
           st[i].fsyncs);
    head(&b, "hopperd_queue_fsync_seconds_total", "counter", "time spent in fdatasync");
    for (size_t i = 0; i < nq; i++) {
        sb_printf(&b, "hopperd_queue_fsync_seconds_total{queue=\"%s\"} %.6f\n",
                  d->queues[i].conf->s.name, (double)st[i].fsync_ns_total / 1e9);
    }
    QGAUGE("hopperd_ingress_records_total", "counter", "records accepted into the queue",
           atomic_load(&d->queues[i].ingress_records));
    QGAUGE("hopperd_ingress_bytes_total", "counter", "payload bytes accepted into the queue",
           atomic_load(&d->queues[i].ingress_bytes));
    QGAUGE("hopperd_subscriber_connected", "gauge",
           "1 while a native subscriber consumes the queue", atomic_load(&d->queues[i].subscribed));
    QGAUGE("hopperd_subscriber_delivered_records_total", "counter",
           "records sent to native subscribers (resends included)",
           atomic_load(&d->queues[i].sub_delivered));
    QGAUGE("hopperd_subscriber_acked_records_total", "counter",
           "records native subscribers acknowledged", atomic_load(&d->queues[i].sub_acked));
#undef QGAUGE
    head(&b, "hopperd_dropped_records_total", "counter", "records dropped, by cause");
    for (size_t i = 0; i < nq; i++) {
        for (int c = 0; c < HD_DROP_NCAUSES; c++) {
            sb_printf(&b, "hopperd_dropped_records_total{queue=\"%s\",cause=\"%s\"} %" PRIu64 "\n",
                      d->queues[i].conf->s.name, hd_drop_cause_names[c],
                      (uint64_t)atomic_load(&d->queues[i].drops[c]));
        }
    }
    head(&b, "hopperd_dropped_bytes_total", "counter",
         "payload bytes of dropped records, by cause (oversize: not counted)");
    for (size_t i = 0; i < nq; i++) {
        for (int c = 0; c < HD_DROP_NCAUSES; c++) {
            sb_printf(&b, "hopperd_dropped_bytes_total{queue=\"%s\",cause=\"%s\"} %" PRIu64 "\n",
                      d->queues[i].conf->s.name, hd_drop_cause_names[c],
                      (uint64_t)atomic_load(&d->queues[i].drop_bytes[c]));
        }
    }

#define SRC(MN, MT, MH, MX)                                                                        \
    do {                                                                                           \
        head(&b, MN, MT, MH);                                                                      \
        for (size_t i = 0; i < d->nsources; i++) {                                                 \
            sb_printf(&b, MN "{source=\"%s\"} %" PRIu64 "\n", d->sources[i].conf->s.name,          \
                      (uint64_t)atomic_load(&d->sources[i].MX));                                   \
        }                                                                                          \
    } while (0)
    SRC("hopperd_source_connections", "gauge", "open client connections", conns_active);
    SRC("hopperd_source_connections_total", "counter", "accepted connections", conns_total);
    SRC("hopperd_source_connections_rejected_total", "counter",
        "connections refused: a limit was reached and every connection waits on the queue",
        conns_rejected);
    SRC("hopperd_source_connections_forbidden_total", "counter",
        "unix peers refused by allowed_uids and allowed_gids", conns_forbidden);
    SRC("hopperd_source_connections_evicted_total", "counter",
        "connections closed to make room for a new one (max_connections, "
        "max_connections_per_peer)",
        conns_evicted);
    SRC("hopperd_source_bad_frames_total", "counter", "connections closed for malformed input",
        bad_frames);
#undef SRC
    head(&b, "hopperd_source_connection_timeouts_total", "counter",
         "connections closed by handshake_timeout or idle_timeout");
    for (size_t i = 0; i < d->nsources; i++) {
        for (int k = 0; k < HD_TIMEOUT_NKINDS; k++) {
            sb_printf(&b,
                      "hopperd_source_connection_timeouts_total{source=\"%s\",timeout=\"%s\"} "
                      "%" PRIu64 "\n",
                      d->sources[i].conf->s.name, hd_timeout_names[k],
                      (uint64_t)atomic_load(&d->sources[i].conn_timeouts[k]));
        }
    }
    head(&b, "hopperd_source_tls_handshakes_total", "counter",
         "TLS handshakes completed (tls = on sources)");
    for (size_t i = 0; i < d->nsources; i++) {
        if (d->sources[i].conf->tls.enabled) {
            sb_printf(&b, "hopperd_source_tls_handshakes_total{source=\"%s\"} %" PRIu64 "\n",
                      d->sources[i].conf->s.name,
                      (uint64_t)atomic_load(&d->sources[i].tls_handshakes));
        }
    }
    head(&b, "hopperd_source_tls_failures_total", "counter",
         "TLS connections refused or failed, by reason (tls = on sources)");
    for (size_t i = 0; i < d->nsources; i++) {
        for (int k = 0; d->sources[i].conf->tls.enabled && k < HD_TLS_FAIL_NKINDS; k++) {
            sb_printf(&b,
                      "hopperd_source_tls_failures_total{source=\"%s\",reason=\"%s\"} %" PRIu64
                      "\n",
                      d->sources[i].conf->s.name, hd_tls_fail_names[k],
                      (uint64_t)atomic_load(&d->sources[i].tls_failures[k]));
        }
    }
    head(&b, "hopperd_source_native_rejections_total", "counter",
         "native batches refused, by code");
    for (size_t i = 0; i < d->nsources; i++) {
        if (d->sources[i].conf->format != HD_FMT_NATIVE) {
            continue;
        }
        for (int c = HD_CODE_NONE + 1; c < HD_CODE_NCODES; c++) {
            sb_printf(&b,
                      "hopperd_source_native_rejections_total{source=\"%s\",code=\"%s\"} %" PRIu64
                      "\n",
                      d->sources[i].conf->s.name, hd_code_names[c],
                      (uint64_t)atomic_load(&d->sources[i].native_rejections[c]));
        }
    }

#define SINK(MN, MT, MH, MX)                                                                       \
    do {                                                                                           \
        head(&b, MN, MT, MH);                                                                      \
        for (size_t i = 0; i < d->nsinks; i++) {                                                   \
            sb_printf(&b, MN "{sink=\"%s\",queue=\"%s\"} %" PRIu64 "\n", d->sinks[i].conf->s.name, \
                      d->sinks[i].queue->conf->s.name, (uint64_t)(MX));                            \
        }                                                                                          \
    } while (0)
    SINK("hopperd_sink_connected", "gauge", "1 while the sink is established",
         atomic_load(&d->sinks[i].state) == HD_SINK_ESTABLISHED);
    SINK("hopperd_egress_records_total", "counter", "records written and acknowledged",
         atomic_load(&d->sinks[i].egress_records));
    SINK("hopperd_egress_bytes_total", "counter", "payload bytes written and acknowledged",
         atomic_load(&d->sinks[i].egress_bytes));
    SINK("hopperd_sink_connects_total", "counter", "successful connects (or file opens)",
         atomic_load(&d->sinks[i].connects));
    SINK("hopperd_sink_reconnects_total", "counter", "connects after the first",
         atomic_load(&d->sinks[i].connects) > 0 ? atomic_load(&d->sinks[i].connects) - 1 : 0);
    SINK("hopperd_sink_connect_failures_total", "counter", "failed connect attempts",
         atomic_load(&d->sinks[i].connect_failures));
    SINK("hopperd_sink_write_errors_total", "counter", "failed writes (batch retried)",
         atomic_load(&d->sinks[i].write_errors));
    SINK("hopperd_sink_keepalives_total", "counter", "native keep-alives answered",
         atomic_load(&d->sinks[i].keepalives));
    SINK("hopperd_sink_quiet_closes_total", "counter",
         "connections the downstream closed while nothing was outstanding",
         atomic_load(&d->sinks[i].quiet_closes));
#undef SINK
    head(&b, "hopperd_sink_state", "gauge", "1 for the sink's current state");
    for (size_t i = 0; i < d->nsinks; i++) {
        int s = atomic_load(&d->sinks[i].state);
        for (int k = 0; k < HD_SINK_NSTATES; k++) {
            sb_printf(&b, "hopperd_sink_state{sink=\"%s\",state=\"%s\"} %d\n",
                      d->sinks[i].conf->s.name, hd_sink_state_names[k], s == k);
        }
    }
    /* type = jetstream: publish acks, duplicates, errors by cause, latency. */
    size_t njs = 0;
    for (size_t i = 0; i < d->nsinks; i++) {
        njs += d->sinks[i].conf->type == HD_SINK_JETSTREAM;
    }
    if (njs > 0) {
#define JS(MN, MT, MH, MX)                                                                         \
    do {                                                                                           \
        head(&b, MN, MT, MH);                                                                      \
        for (size_t i = 0; i < d->nsinks; i++) {                                                   \
            if (d->sinks[i].conf->type == HD_SINK_JETSTREAM) {                                     \
                sb_printf(&b, MN "{sink=\"%s\"} %" PRIu64 "\n", d->sinks[i].conf->s.name,          \
                          (uint64_t)(MX));                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)
        JS("hopperd_sink_inflight", "gauge", "records published and waiting for their ack",
           atomic_load(&d->sinks[i].pub.inflight));
        JS("hopperd_sink_publish_acks_total", "counter", "positive publish acks",
           atomic_load(&d->sinks[i].pub.acks));
        JS("hopperd_sink_duplicates_total", "counter",
           "publish acks marked duplicate (already in the stream; counted as delivered)",
           atomic_load(&d->sinks[i].pub.duplicates));
#undef JS
        head(&b, "hopperd_sink_publish_errors_total", "counter", "failed publishes by cause");
        for (size_t i = 0; i < d->nsinks; i++) {
            if (d->sinks[i].conf->type != HD_SINK_JETSTREAM) {
                continue;
            }
            for (int c = 0; c < HD_PUB_NCAUSES; c++) {
                sb_printf(&b, "hopperd_sink_publish_errors_total{sink=\"%s\",cause=\"%s\"} %" PRIu64
                              "\n",
                          d->sinks[i].conf->s.name, hd_pub_cause_names[c],
                          (uint64_t)atomic_load(&d->sinks[i].pub.errors[c]));
            }
        }
        head(&b, "hopperd_sink_publish_latency_seconds", "histogram",
             "time from publish to publish ack");
        for (size_t i = 0; i < d->nsinks; i++) {
            const struct hd_publish_stats *ps = &d->sinks[i].pub;
            if (d->sinks[i].conf->type != HD_SINK_JETSTREAM) {
                continue;
            }
            uint64_t cum = 0;
            for (int k = 0; k <= HD_PUB_NBUCKETS; k++) {
                cum += atomic_load(&ps->lat_bucket[k]);
                if (k < HD_PUB_NBUCKETS) {
                    sb_printf(&b,
                              "hopperd_sink_publish_latency_seconds_bucket{sink=\"%s\",le=\"%g\"} "
                              "%" PRIu64 "\n",
                              d->sinks[i].conf->s.name, (double)hd_pub_bucket_ms[k] / 1000.0, cum);
                } else {
                    sb_printf(&b,
                              "hopperd_sink_publish_latency_seconds_bucket{sink=\"%s\",le=\"+Inf\"} "
                              "%" PRIu64 "\n",
                              d->sinks[i].conf->s.name, cum);
                }
            }
            sb_printf(&b, "hopperd_sink_publish_latency_seconds_sum{sink=\"%s\"} %.6f\n",
                      d->sinks[i].conf->s.name, (double)atomic_load(&ps->lat_sum_us) / 1e6);
            sb_printf(&b, "hopperd_sink_publish_latency_seconds_count{sink=\"%s\"} %" PRIu64 "\n",
                      d->sinks[i].conf->s.name, (uint64_t)atomic_load(&ps->lat_count));
        }
    }
    free(st);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

int
hd_metrics_open(struct hd_daemon *d, char *err, size_t errlen)
{
    d->metrics_fd = -1;
    if (d->cfg->metrics_listen[0] == '\0') {
        return 0;
    }
    char why[HD_ERR_LEN];
    int fd = hd_net_listen_tcp(d->cfg->metrics_listen, why, sizeof(why));
    if (fd < 0) {
        snprintf(err, errlen, "metrics: %s", why);
        return fd;
    }
    d->metrics_fd = fd;
    log_info("metrics: serving /metrics on %s", d->cfg->metrics_listen);
    return 0;
}

/* ---- the endpoint ----
 *
 * One thread, one epoll set over the listening socket and at most
 * MX_CLIENTS connections, all non-blocking, so a client that is slow or
 * silent delays nobody. A connection reads its request head (at most
 * MX_HEAD_MAX bytes, else 431), gets its whole reply rendered at once and
 * writes it as fast as the client takes it, then shuts down its side and
 * reads until the client closes (so unread request bytes never turn the
 * close into a reset that could destroy the reply). It is closed at the
 * latest MX_TIMEOUT_MS after it was accepted (counted unless its reply
 * was written), or when a new connection needs its slot: the oldest goes
 * (counted). Only this thread touches struct mx_server. */
#define MX_CLIENTS 64
#define MX_HEAD_MAX 8192
#define MX_TIMEOUT_MS 5000
/* epoll_wait wakes at least this often to see metrics_stop. */
#define MX_STOP_POLL_MS 200
/* Out of descriptors: the listening socket leaves epoll this long. */
#define MX_ACCEPT_PAUSE_MS 100
#define MX_LISTENER UINT32_MAX /* epoll data of the listening socket */

enum mx_state { MX_FREE = 0, MX_READING, MX_WRITING, MX_DRAINING };

struct mx_client {
    int state; /* enum mx_state */
    int fd;
    uint64_t start_ms; /* accepted */
    size_t hlen;       /* bytes of head */
    char *out;         /* the reply, from MX_WRITING on */
    size_t olen, ooff;
    char head[MX_HEAD_MAX + 1];
};

struct mx_server {
    struct hd_daemon *d;
    int epfd;
    uint64_t resume_ms; /* != 0: the listening socket is out of epoll until then */
    struct mx_client cl[MX_CLIENTS];
};

static struct mx_server *mx_server;

static void
mx_close(struct mx_server *sv, struct mx_client *c)
{
    epoll_ctl(sv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    c->out = NULL;
    c->state = MX_FREE;
}

static int
mx_watch(struct mx_server *sv, struct mx_client *c, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - sv->cl)};
    return epoll_ctl(sv->epfd, op, c->fd, &ev);
}

/* The reply to the request in c->head, as one malloc'd string. */
static char *
mx_reply(struct mx_server *sv, const struct mx_client *c, size_t *len)
{
    static const char nf[] = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
    static const char big[] = "HTTP/1.0 431 Request Header Fields Too Large\r\n"
                              "Content-Type: text/plain\r\nContent-Length: 24\r\n"
                              "Connection: close\r\n\r\nrequest head over 8 KiB\n";
    static const char e500[] = "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    const char *req = c->head;
    const char *fixed = NULL;
    /* A full buffer is too large a head only without its blank line: a
     * client that sent more after a complete head (one read took it all)
     * gets its answer. */
    if (c->hlen >= MX_HEAD_MAX && strstr(req, "\r\n\r\n") == NULL &&
        strstr(req, "\n\n") == NULL) {
        fixed = big;
    } else if (strncmp(req, "GET /metrics ", 13) != 0 && strncmp(req, "GET /metrics\r", 13) != 0 &&
               strncmp(req, "GET / ", 6) != 0) {
        fixed = nf;
    }
    char *body = NULL;
    size_t blen = 0;
    if (fixed == NULL && hd_metrics_render(sv->d, &body, &blen) < 0) {
        fixed = e500;
    }
    if (fixed != NULL) {
        *len = strlen(fixed);
        return strdup(fixed);
    }
    char hdr[256];
    int h = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     blen);
    char *out = malloc((size_t)h + blen);
    if (out != NULL) {
        memcpy(out, hdr, (size_t)h);
        memcpy(out + h, body, blen);
        *len = (size_t)h + blen;
    }
    free(body);
    return out;
}

/* Write what the client takes; once all is written, shut down our side
 * and drain. */
static void
mx_write(struct mx_server *sv, struct mx_client *c)
{
    if (hd_net_send_some(c->fd, c->out, c->olen, &c->ooff) < 0) {
        mx_close(sv, c);
        return;
    }
    if (c->ooff < c->olen) {
        return;
    }
    shutdown(c->fd, SHUT_WR);
    free(c->out);
    c->out = NULL;
    c->state = MX_DRAINING;
    if (mx_watch(sv, c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD) < 0) {
        mx_close(sv, c);
    }
}

/* The request head is complete (or over the limit, or the client stopped
 * sending): answer it. */
static void
mx_answer(struct mx_server *sv, struct mx_client *c)
{
    c->out = mx_reply(sv, c, &c->olen);
    c->ooff = 0;
    if (c->out == NULL || mx_watch(sv, c, EPOLLOUT, EPOLL_CTL_MOD) < 0) {
        mx_close(sv, c);
        return;
    }
    c->state = MX_WRITING;
    mx_write(sv, c);
}

static void
mx_read(struct mx_server *sv, struct mx_client *c)
{
    for (;;) {
        char sink[1024];
        char *at = c->state == MX_READING ? c->head + c->hlen : sink;
        size_t room = c->state == MX_READING ? MX_HEAD_MAX - c->hlen : sizeof(sink);
        ssize_t r = recv(c->fd, at, room, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (r <= 0) {
            /* Closed: drained, or the client sent its request and shut
             * down its side without the blank line (answered), or sent
             * nothing. */
            if (c->state == MX_READING && c->hlen > 0) {
                mx_answer(sv, c);
            } else {
                mx_close(sv, c);
            }
            return;
        }
        if (c->state != MX_READING) {
            continue;
        }
        c->hlen += (size_t)r;
        c->head[c->hlen] = '\0';
        if (c->hlen == MX_HEAD_MAX || strstr(c->head, "\r\n\r\n") != NULL ||
            strstr(c->head, "\n\n") != NULL) {
            mx_answer(sv, c);
            return;
        }
    }
}

/* A slot for a new connection: a free one, else the oldest one whose
 * reply is written (nothing is lost), else the oldest one, which is
 * counted as evicted. */
static struct mx_client *
mx_slot(struct mx_server *sv)
{
    struct mx_client *oldest = NULL, *oldest_done = NULL;
    for (size_t i = 0; i < MX_CLIENTS; i++) {
        struct mx_client *c = &sv->cl[i];
        if (c->state == MX_FREE) {
            return c;
        }
        if (oldest == NULL || c->start_ms < oldest->start_ms) {
            oldest = c;
        }
        if (c->state == MX_DRAINING && (oldest_done == NULL || c->start_ms < oldest_done->start_ms)) {
            oldest_done = c;
        }
    }
    struct mx_client *c = oldest_done != NULL ? oldest_done : oldest;
    if (c->state != MX_DRAINING) {
        atomic_fetch_add(&sv->d->metrics_evictions, 1);
    }
    mx_close(sv, c);
    return c;
}

static void
mx_accept(struct mx_server *sv)
{
    for (;;) {
        int fd = accept4(sv->d->metrics_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) {
            continue;
        }
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            /* Level-triggered: without a pause the loop would spin. */
            log_warn("metrics: accept (pausing %d ms)", MX_ACCEPT_PAUSE_MS);
            epoll_ctl(sv->epfd, EPOLL_CTL_DEL, sv->d->metrics_fd, NULL);
            sv->resume_ms = hd_now_ms() + MX_ACCEPT_PAUSE_MS;
            return;
        }
        if (fd < 0) {
            return;
        }
        struct mx_client *c = mx_slot(sv);
        c->fd = fd;
        c->start_ms = hd_now_ms();
        c->hlen = 0;
        c->head[0] = '\0';
        c->state = MX_READING;
        if (mx_watch(sv, c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD) < 0) {
            mx_close(sv, c);
        }
    }
}

/* Close connections past their time; returns the epoll_wait timeout. */
static int
mx_expire(struct mx_server *sv)
{
    uint64_t now = hd_now_ms();
    uint64_t next = now + MX_STOP_POLL_MS;
    for (size_t i = 0; i < MX_CLIENTS; i++) {
        struct mx_client *c = &sv->cl[i];
        if (c->state == MX_FREE) {
            continue;
        }
        uint64_t due = c->start_ms + MX_TIMEOUT_MS;
        if (due <= now) {
            if (c->state != MX_DRAINING) {
                atomic_fetch_add(&sv->d->metrics_timeouts, 1);
            }
            mx_close(sv, c);
        } else if (due < next) {
            next = due;
        }
    }
    if (sv->resume_ms != 0 && sv->resume_ms <= now) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MX_LISTENER};
        if (epoll_ctl(sv->epfd, EPOLL_CTL_ADD, sv->d->metrics_fd, &ev) == 0) {
            sv->resume_ms = 0;
        }
    }
    if (sv->resume_ms != 0 && sv->resume_ms < next) {
        next = sv->resume_ms;
    }
    return (int)(next - now);
}

static void *
metrics_main(void *arg)
{
    struct mx_server *sv = arg;
    struct epoll_event evs[MX_CLIENTS + 1];
    while (!atomic_load(&sv->d->metrics_stop)) {
        int n = epoll_wait(sv->epfd, evs, MX_CLIENTS + 1, mx_expire(sv));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == MX_LISTENER) {
                mx_accept(sv);
                continue;
            }
            struct mx_client *c = &sv->cl[evs[i].data.u32];
            /* A connection closed for a slot earlier in this batch may be
             * a new one now; its event is stale, and harmless: reads and
             * writes are non-blocking and state-driven. */
            if (c->state == MX_WRITING) {
                mx_write(sv, c);
            } else if (c->state != MX_FREE) {
                mx_read(sv, c);
            }
        }
    }
    for (size_t i = 0; i < MX_CLIENTS; i++) {
        if (sv->cl[i].state != MX_FREE) {
            mx_close(sv, &sv->cl[i]);
        }
    }
    return NULL;
}

int
hd_metrics_start(struct hd_daemon *d)
{
    if (d->metrics_fd < 0) {
        return 0;
    }
    struct mx_server *sv = calloc(1, sizeof(*sv));
    if (sv == NULL) {
        return -ENOMEM;
    }
    sv->d = d;
    sv->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MX_LISTENER};
    int rc = sv->epfd < 0 || epoll_ctl(sv->epfd, EPOLL_CTL_ADD, d->metrics_fd, &ev) < 0 ? -errno : 0;
    if (rc == 0) {
        rc = -pthread_create(&metrics_thread, NULL, metrics_main, sv);
    }
    if (rc < 0) {
        if (sv->epfd >= 0) {
            close(sv->epfd);
        }
        free(sv);
        return rc;
    }
    mx_server = sv;
    metrics_started = 1;
    return 0;
}

void
hd_metrics_stop(struct hd_daemon *d)
{
    atomic_store(&d->metrics_stop, 1);
    if (metrics_started) {
        pthread_join(metrics_thread, NULL);
        metrics_started = 0;
        close(mx_server->epfd);
        free(mx_server);
        mx_server = NULL;
    }
    if (d->metrics_fd >= 0) {
        close(d->metrics_fd);
        d->metrics_fd = -1;
    }
}
