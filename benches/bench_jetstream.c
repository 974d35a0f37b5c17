/* SPDX-License-Identifier: MIT */
/* bench_jetstream: the engine's own limit for benches/jetstream-drain.
 *
 *   bench_jetstream direct URL STREAM SUBJECT COUNT SIZE [INFLIGHT=1024] [MSGID=1]
 *                   [REPLICAS=1]
 *   bench_jetstream wait URL STREAM COUNT TIMEOUT_S
 *
 * Connects to URL, and publishes COUNT records of SIZE bytes (the payload
 * layout of bench_native_sink gen, without the '\n') to SUBJECT with
 * js_PublishAsync, at most INFLIGHT unacknowledged, with a Nats-Msg-Id per
 * record when MSGID is 1 (as hopperd does), then waits for every publish
 * ack (js_PublishAsyncComplete). STREAM is created for SUBJECT first (file
 * storage, discard new, 2 min duplicate window, REPLICAS) unless it exists.
 * Prints `direct.records_per_s`, `direct.mb_per_s` and `direct.seconds`,
 * the publish-to-ack latency percentiles `direct.publish_latency_pNN_ms`
 * (every record timed), and `direct.errors` (publishes without a positive
 * ack); exit 0 when 0. It also prints `direct.stream_seconds` and
 * `direct.stream_records_per_s`: the same drain timed by the stream itself,
 * from its first message's timestamp to its last one's.
 *
 * wait: connects to URL (retrying until the server is up), polls STREAM's
 * info every 250 ms until it holds COUNT messages or TIMEOUT_S passes, and
 * prints `stream.msgs`, `stream.seconds` and `stream.records_per_s` timed
 * the same way. This is how jetstream-drain times hopperd's drain: by the
 * stream, like the direct publisher's, and without polling hopperd's
 * metrics with a curl process every few ms, whose CPU (about a quarter of a
 * core here) competed with the drain it measured. Exit 0 when the stream
 * holds exactly COUNT messages, 1 otherwise. */
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_long errors;
/* Per record: when it was published (main thread, before the publish) and
 * its publish-to-ack latency (the ack handler, nats.c's thread), in s. */
static double *sent_at, *latency;
static long nrecords;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    long i = -1;
    if (pa == NULL || pae != NULL) {
        atomic_fetch_add(&errors, 1);
    } else if (natsMsg_GetDataLength(msg) >= 14 && sscanf(natsMsg_GetData(msg), "seq=%10ld", &i) == 1 &&
               i >= 0 && i < nrecords) {
        latency[i] = now_s() - sent_at[i];
    }
    natsMsg_Destroy(msg);
}

/* Messages in `stream` and the seconds from its first to its last message
 * (the server's timestamps); -1 seconds when it cannot be read. */
static double
stream_span(jsCtx *js, const char *stream, uint64_t *msgs)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *msgs = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK || si == NULL) {
        return -1;
    }
    *msgs = si->State.Msgs;
    double s = (double)(si->State.LastTime - si->State.FirstTime) / 1e9;
    jsStreamInfo_Destroy(si);
    return s;
}

static int
wait_stream(const char *url, const char *stream, long count, long timeout_s)
{
    double deadline = now_s() + (double)timeout_s;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    while (natsConnection_ConnectTo(&nc, url) != NATS_OK) {
        if (now_s() > deadline) {
            fprintf(stderr, "bench_jetstream: wait: cannot connect to %s\n", url);
            return 1;
        }
        nats_Sleep(100);
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
        fprintf(stderr, "bench_jetstream: wait: no JetStream context\n");
        return 1;
    }
    uint64_t msgs = 0;
    double span = -1;
    for (;;) {
        span = stream_span(js, stream, &msgs);
        if (msgs >= (uint64_t)count || now_s() > deadline) {
            break;
        }
        nats_Sleep(250);
    }
    printf("stream.msgs %llu\n", (unsigned long long)msgs);
    if (msgs >= (uint64_t)count && span > 0) {
        printf("stream.seconds %.3f s\n", span);
        printf("stream.records_per_s %.0f rec/s\n", (double)(msgs - 1) / span);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return msgs == (uint64_t)count ? 0 : 1;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "wait") == 0) {
        long n = atol(argv[4]), t = atol(argv[5]);
        if (n <= 0 || t <= 0) {
            fprintf(stderr, "bench_jetstream: bad COUNT or TIMEOUT_S\n");
            return 2;
        }
        return wait_stream(argv[2], argv[3], n, t);
    }
    if (argc < 7 || strcmp(argv[1], "direct") != 0) {
        fprintf(stderr, "usage: bench_jetstream direct URL STREAM SUBJECT COUNT SIZE "
                        "[INFLIGHT=1024] [MSGID=1] [REPLICAS=1]\n"
                        "       bench_jetstream wait URL STREAM COUNT TIMEOUT_S\n");
        return 2;
    }
    const char *url = argv[2], *stream = argv[3], *subject = argv[4];
    long count = atol(argv[5]);
    int size = atoi(argv[6]);
    long inflight = argc > 7 ? atol(argv[7]) : 1024;
    int msgid = argc > 8 ? atoi(argv[8]) : 1;
    long replicas = argc > 9 ? atol(argv[9]) : 1;
    if (count <= 0 || size < 16 || size > 1 << 20 || inflight <= 0 || replicas < 1 ||
        replicas > 5) {
        fprintf(stderr, "bench_jetstream: bad COUNT, SIZE, INFLIGHT or REPLICAS\n");
        return 2;
    }
    nrecords = count;
    sent_at = calloc((size_t)count, sizeof(*sent_at));
    latency = calloc((size_t)count, sizeof(*latency));
    if (sent_at == NULL || latency == NULL) {
        fprintf(stderr, "bench_jetstream: out of memory\n");
        return 1;
    }
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = inflight;
    jo.PublishAsync.AckHandler = on_ack;
    natsStatus st = natsConnection_ConnectTo(&nc, url);
    if (st == NATS_OK) {
        st = natsConnection_JetStream(&js, nc, &jo);
    }
    if (st != NATS_OK) {
        fprintf(stderr, "bench_jetstream: %s: %s\n", url, natsStatus_GetText(st));
        return 1;
    }
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {subject};
    sc.Name = stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Discard = js_DiscardNew;
    sc.Duplicates = (int64_t)120 * 1000000000;
    sc.Replicas = replicas;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_NOT_FOUND) {
        st = js_AddStream(&si, js, &sc, NULL, &jerr);
        if (st != NATS_OK) {
            fprintf(stderr, "bench_jetstream: add stream %s: %s\n", stream, natsStatus_GetText(st));
            return 1;
        }
    }
    jsStreamInfo_Destroy(si);
    char *rec = malloc((size_t)size);
    char id[64];
    double t0 = now_s();
    for (long i = 0; i < count && st == NATS_OK; i++) {
        int n = snprintf(rec, (size_t)size, "seq=%010ld ", i);
        memset(rec + n, 'a' + (int)(i % 26), (size_t)(size - n));
        jsPubOptions po;
        jsPubOptions_Init(&po);
        snprintf(id, sizeof(id), "bench-%ld", i);
        if (msgid) {
            po.MsgId = id;
        }
        sent_at[i] = now_s();
        do {
            st = js_PublishAsync(js, subject, rec, size, &po);
        } while (st == NATS_TIMEOUT); /* stalled at MaxPending: try again */
    }
    if (st == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 120000;
        st = js_PublishAsyncComplete(js, &po);
    }
    double dt = now_s() - t0;
    if (st != NATS_OK) {
        fprintf(stderr, "bench_jetstream: publish: %s\n", natsStatus_GetText(st));
    }
    printf("direct.seconds %.3f s\n", dt);
    printf("direct.records_per_s %.0f rec/s\n", (double)count / dt);
    printf("direct.mb_per_s %.1f MB/s\n", (double)count * size / dt / 1e6);
    uint64_t msgs = 0;
    double span = stream_span(js, stream, &msgs);
    if (span > 0 && msgs > 1) {
        printf("direct.stream_seconds %.3f s\n", span);
        printf("direct.stream_records_per_s %.0f rec/s\n", (double)(msgs - 1) / span);
    }
    /* Percentiles over the records acked (an unacked one has latency 0 and
     * is counted in errors instead). */
    long timed = 0;
    for (long i = 0; i < count; i++) {
        if (latency[i] > 0) {
            latency[timed++] = latency[i];
        }
    }
    if (timed > 0) {
        qsort(latency, (size_t)timed, sizeof(*latency), cmp_double);
        const int pct[] = {50, 90, 99};
        for (size_t k = 0; k < sizeof(pct) / sizeof(pct[0]); k++) {
            long at = (long)((double)pct[k] / 100.0 * (double)(timed - 1));
            printf("direct.publish_latency_p%d_ms %.2f ms\n", pct[k], latency[at] * 1000.0);
        }
        printf("direct.publish_latency_max_ms %.2f ms\n", latency[timed - 1] * 1000.0);
    }
    printf("direct.errors %ld\n", (long)atomic_load(&errors));
    free(sent_at);
    free(latency);
    free(rec);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return st == NATS_OK && atomic_load(&errors) == 0 ? 0 : 1;
}
