/* SPDX-License-Identifier: MIT */
/* Prometheus metrics (see metrics.h). Values come from hopper_stats_get()
 * (any thread may call it) and the daemon's atomic counters; nothing here
 * takes a lock other than the sink's mu (not needed: state is atomic). */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "netutil.h"
#include "proto.h"

#define IO_TIMEOUT_MS 2000

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
        "connections refused over max_connections", conns_rejected);
    SRC("hopperd_source_connections_forbidden_total", "counter",
        "unix peers refused by allowed_uids and allowed_gids", conns_forbidden);
    SRC("hopperd_source_bad_frames_total", "counter", "connections closed for malformed input",
        bad_frames);
#undef SRC
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

/* Write a reply within IO_TIMEOUT_MS. 0 or -errno. */
static int
write_full(int fd, const char *p, size_t n)
{
    return hd_write_all(fd, p, n, 1, hd_now_ms() + IO_TIMEOUT_MS, NULL, NULL);
}

static void
serve_one(struct hd_daemon *d, int fd)
{
    char req[4096];
    size_t n = 0;
    uint64_t deadline = hd_now_ms() + IO_TIMEOUT_MS;
    while (n < sizeof(req) - 1) {
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL) {
            break;
        }
        uint64_t now = hd_now_ms();
        if (now >= deadline) {
            return;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0) {
            return;
        }
        ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, MSG_DONTWAIT);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            break;
        }
        n += (size_t)r;
    }
    req[n] = '\0';
    char hdr[256];
    if (strncmp(req, "GET /metrics ", 13) != 0 && strncmp(req, "GET /metrics\r", 13) != 0 &&
        strncmp(req, "GET / ", 6) != 0) {
        static const char nf[] = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
        write_full(fd, nf, sizeof(nf) - 1);
        return;
    }
    char *body = NULL;
    size_t blen = 0;
    if (hd_metrics_render(d, &body, &blen) < 0) {
        static const char e500[] = "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        write_full(fd, e500, sizeof(e500) - 1);
        return;
    }
    int h = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     blen);
    if (write_full(fd, hdr, (size_t)h) == 0) {
        write_full(fd, body, blen);
    }
    free(body);
}

static void *
metrics_main(void *arg)
{
    struct hd_daemon *d = arg;
    while (!atomic_load(&d->metrics_stop)) {
        struct pollfd pfd = {.fd = d->metrics_fd, .events = POLLIN};
        int n = poll(&pfd, 1, 200);
        if (n <= 0) {
            continue;
        }
        int fd = accept(d->metrics_fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        hd_net_nonblock(fd);
        serve_one(d, fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

int
hd_metrics_start(struct hd_daemon *d)
{
    if (d->metrics_fd < 0) {
        return 0;
    }
    int rc = pthread_create(&metrics_thread, NULL, metrics_main, d);
    if (rc != 0) {
        return -rc;
    }
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
    }
    if (d->metrics_fd >= 0) {
        close(d->metrics_fd);
        d->metrics_fd = -1;
    }
}
