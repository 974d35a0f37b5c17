/* SPDX-License-Identifier: MIT */
/* The JetStream sink (see sink_jetstream.h), on nats.c's JetStream API.
 *
 * Exactly-once into the stream. Every record is published with the
 * Nats-Msg-Id "<queue id>-<seq>" (hopper_queue_id(), FORMAT.md §1.1): the
 * same id on every retry, after every reconnect, restart and crash, so the
 * stream drops a second copy that arrives inside its duplicate window. The
 * queue is acknowledged only up to the highest seq whose publish ack, and
 * the acks of every seq before it, arrived (a contiguous prefix). An ack
 * that says Duplicate counts as delivered (the stream has the record).
 *
 * The window. Up to max_inflight records taken from the queue are kept in a
 * ring, in seq order (hopper_recv hands them out in order; seqs are
 * consecutive apart from records other consumers never see, so the ring
 * keeps each seq explicitly). Each slot is TOSEND (to publish), INFLIGHT
 * (published, no ack yet), ACKED or FAILED. nats.c calls ack_handler() on
 * its own thread; it finds the slot by seq under `mu` and marks it. The
 * relay thread does everything else: it publishes TOSEND slots (outside
 * `mu`: js_PublishMsgAsync may stall), pops the ACKED prefix and
 * acknowledges its last seq in the queue, and treats a FAILED slot, or an
 * INFLIGHT one older than ack_timeout, as a failure of the connection:
 * relay.c closes (every slot not ACKED goes back to TOSEND), backs off with
 * jitter and reconnects, and the same records are published again with the
 * same ids. A late ack of an earlier attempt still marks its slot ACKED:
 * the stream has that message id.
 *
 * Order: records are published in seq order. After a failure, a record
 * that failed is published again after later records of the same window
 * that the stream did store, so the stream's order can differ from seq
 * order inside one window around a failure (docs/hopperd.md). To keep that
 * rare, after a failure the sink probes: one publish at a time until one
 * is acked, then the full window again.
 *
 * Cost per record. On this path hopperd competes for the CPU with the
 * server it publishes to, so the sink keeps its own work per record small:
 * a slot keeps its payload buffer for the next record (no malloc/free per
 * record), TOSEND slots are claimed and released in batches under `mu`, and
 * ack_handler() wakes the relay thread only when it waits and a batch of
 * acks (wake_batch) can be popped, not once per ack. The ack timeout is the
 * sink's own (js_step); no per-publish MaxWait goes to nats.c, whose 3.4
 * async publish would then allocate a tracker per message and, MaxWait
 * later, post a second (timeout) message per publish to the ack thread even
 * when the ack came long before.
 *
 * Threads: the relay thread, and nats.c's threads in ack_handler() (which
 * takes only `mu` and calls nothing that blocks).
 */
#include "sink_jetstream.h"

#include <assert.h>
#include <errno.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"

enum { SLOT_TOSEND = 0, SLOT_INFLIGHT, SLOT_ACKED, SLOT_FAILED };

struct slot {
    uint64_t seq;
    uint8_t *data;    /* owned; kept for the slot's next record */
    size_t len, room; /* payload length; size of data */
    int st;           /* [mu] */
    uint64_t sent_us; /* [mu] when published, monotonic */
};

/* A slot's buffer larger than this is freed when the slot is popped rather
 * than kept for the next record: a few big records must not pin
 * max_inflight x their size. */
#define SLOT_KEEP_MAX (64u * 1024u)
/* TOSEND slots claimed under one hold of `mu` (publish_pending). */
#define PUBLISH_BATCH 64u

struct js_sink {
    struct hd_sink_rt *s;
    const struct hd_sink_conf *c;
    /* relay thread: *s->live as the current connection was made with
     * (servers and credentials: SIGHUP may change them, see relay.h) */
    struct hd_sink_conf conn;
    char qid[HOPPER_QUEUE_ID_LEN + 1];
    pthread_mutex_t mu;
    pthread_cond_t acked; /* signalled by ack_handler when `waiting` */
    struct slot *w;       /* ring of cap slots */
    size_t cap, head, n;  /* [mu] n slots from head */
    size_t acked_front;   /* [mu] the first acked_front slots are ACKED */
    size_t wake_batch;    /* acked_front that wakes the relay thread (immutable) */
    int waiting;          /* [mu] the relay thread waits on `acked` */
    int fail_cause;       /* [mu] cause of the first FAILED ack, -1 none */
    char fail_text[160];  /* [mu] */
    uint64_t held_bytes;  /* payload bytes in the ring [relay thread] */
    int probe;            /* [mu] after a failure: one publish at a time until one is acked */
    size_t next_send;     /* [mu] slots before this index are not TOSEND */
    size_t inflight;      /* [mu] INFLIGHT slots */
    natsConnection *nc;
    jsCtx *js;
};

static uint64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct slot *
slot_at(struct js_sink *j, size_t i)
{
    return &j->w[(j->head + i) % j->cap];
}

/* Whether the relay thread, waiting for acks, has work again: a batch of
 * slots (or all of them) can be popped, a publish failed, or there are
 * slots to publish and no probe in flight. [mu] */
static int
relay_wanted(const struct js_sink *j)
{
    return j->acked_front >= j->wake_batch || (j->n > 0 && j->acked_front == j->n) ||
           j->fail_cause >= 0 || (j->next_send < j->n && !(j->probe && j->inflight > 0));
}

/* The seq in "<qid>-<seq>", or UINT64_MAX. */
static uint64_t
msg_seq(natsMsg *m)
{
    const char *id = NULL;
    if (m == NULL || natsMsgHeader_Get(m, "Nats-Msg-Id", &id) != NATS_OK || id == NULL) {
        return UINT64_MAX;
    }
    const char *dash = strrchr(id, '-');
    if (dash == NULL) {
        return UINT64_MAX;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(dash + 1, &end, 10);
    return errno != 0 || *end != '\0' ? UINT64_MAX : (uint64_t)v;
}

static int
cause_of(natsStatus st, jsErrCode code, const char *text)
{
    if (st == NATS_TIMEOUT) {
        return HD_PUB_TIMEOUT;
    }
    if (st == NATS_NO_RESPONDERS) {
        return HD_PUB_NO_RESPONDERS;
    }
    if (st == NATS_CONNECTION_AUTH_FAILED || st == NATS_NOT_PERMITTED) {
        return HD_PUB_AUTH;
    }
    if (st == NATS_NO_SERVER || st == NATS_CONNECTION_CLOSED || st == NATS_CONNECTION_DISCONNECTED ||
        st == NATS_IO_ERROR || st == NATS_STALE_CONNECTION) {
        return HD_PUB_CONNECT;
    }
    if (code == JSStreamStoreFailedErr || code == JSInsufficientResourcesErr ||
        code == JSAccountResourcesExceededErr ||
        (text != NULL && strstr(text, "maximum") != NULL)) {
        return HD_PUB_STREAM_FULL;
    }
    if (text != NULL && (strstr(text, "uthorization") != NULL || strstr(text, "ermission") != NULL)) {
        return HD_PUB_AUTH;
    }
    return HD_PUB_OTHER;
}

/* nats.c thread: a publish ack (pa) or a publish error (pae) for msg. */
static void
ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct js_sink *j = closure;
    struct hd_publish_stats *ps = &j->s->pub;
    uint64_t seq = msg_seq(msg);
    uint64_t t = now_us();
    pthread_mutex_lock(&j->mu);
    struct slot *sl = NULL;
    size_t at = 0;
    if (j->n > 0 && seq != UINT64_MAX) {
        uint64_t first = slot_at(j, 0)->seq;
        /* Seqs in the ring are increasing; usually consecutive. */
        if (seq >= first) {
            size_t i = seq - first < j->n ? (size_t)(seq - first) : j->n - 1;
            for (;; i--) {
                if (slot_at(j, i)->seq == seq) {
                    sl = slot_at(j, i);
                    at = i;
                    break;
                }
                if (i == 0 || slot_at(j, i)->seq < seq) {
                    break;
                }
            }
        }
    }
    if (sl != NULL && sl->st != SLOT_ACKED) {
        if (sl->st == SLOT_INFLIGHT && j->inflight > 0) {
            j->inflight--;
        }
        if (pa != NULL) {
            if (sl->st == SLOT_INFLIGHT && t >= sl->sent_us) {
                uint64_t us = t - sl->sent_us;
                size_t b = 0;
                while (b < HD_PUB_NBUCKETS && us > hd_pub_bucket_ms[b] * 1000u) {
                    b++;
                }
                atomic_fetch_add(&ps->lat_bucket[b], 1);
                atomic_fetch_add(&ps->lat_count, 1);
                atomic_fetch_add(&ps->lat_sum_us, us);
            }
            sl->st = SLOT_ACKED;
            if (at == j->acked_front) {
                while (j->acked_front < j->n && slot_at(j, j->acked_front)->st == SLOT_ACKED) {
                    j->acked_front++;
                }
            }
            j->probe = 0;
            atomic_fetch_add(&ps->acks, 1);
            if (pa->Duplicate) {
                atomic_fetch_add(&ps->duplicates, 1);
            }
        } else if (pae != NULL && sl->st == SLOT_INFLIGHT) {
            int cause = cause_of(pae->Err, pae->ErrCode, pae->ErrText);
            atomic_fetch_add(&ps->errors[cause], 1);
            sl->st = SLOT_FAILED;
            if (j->fail_cause < 0) {
                j->fail_cause = cause;
                snprintf(j->fail_text, sizeof(j->fail_text), "%s (%s, code %d)",
                         pae->ErrText != NULL ? pae->ErrText : natsStatus_GetText(pae->Err),
                         natsStatus_GetText(pae->Err), (int)pae->ErrCode);
            }
        }
    }
    if (j->waiting && relay_wanted(j)) {
        pthread_cond_signal(&j->acked);
    }
    pthread_mutex_unlock(&j->mu);
    natsMsg_Destroy(msg);
}

static int
js_create(struct hd_sink_rt *s, void **out)
{
    struct js_sink *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        return -ENOMEM;
    }
    j->s = s;
    j->c = s->conf;
    j->cap = (size_t)j->c->max_inflight;
    /* 1/16 of the window: the relay thread wakes a few times per window's
     * worth of acks, and refills while most of it is still in flight. */
    j->wake_batch = j->cap / 16 > 64 ? 64 : j->cap / 16 > 0 ? j->cap / 16 : 1;
    j->w = calloc(j->cap, sizeof(*j->w));
    if (j->w == NULL) {
        free(j);
        return -ENOMEM;
    }
    int rc = hopper_queue_id(s->queue->q, j->qid);
    if (rc < 0) {
        free(j->w);
        free(j);
        return rc;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->acked, NULL);
    j->fail_cause = -1;
    *out = j;
    return 0;
}

/* Text for a failed nats.c call: the library's last error, or the status. */
static void
nats_err(char *err, size_t errlen, const char *what, natsStatus st)
{
    natsStatus last;
    const char *text = nats_GetLastError(&last);
    snprintf(err, errlen, "%s: %s", what,
             text != NULL && text[0] != '\0' ? text : natsStatus_GetText(st));
}

static void
js_disconnect(void *impl)
{
    struct js_sink *j = impl;
    if (j->js != NULL) {
        jsCtx_Destroy(j->js);
        j->js = NULL;
    }
    if (j->nc != NULL) {
        natsConnection_Close(j->nc);
        natsConnection_Destroy(j->nc);
        j->nc = NULL;
    }
    /* Acks still queued inside nats.c were dropped with the context; every
     * record not acknowledged is published again after reconnecting. */
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->n; i++) {
        struct slot *sl = slot_at(j, i);
        if (sl->st != SLOT_ACKED) {
            sl->st = SLOT_TOSEND;
        }
    }
    j->next_send = 0;
    j->inflight = 0;
    j->fail_cause = -1;
    pthread_mutex_unlock(&j->mu);
    atomic_store(&j->s->pub.inflight, 0);
}

/* Make sure the stream exists (creating it with create_stream = on) and
 * log its duplicate window: exactly-once holds for outages shorter. */
static int
ensure_stream(struct js_sink *j, char *err, size_t errlen, int *cause)
{
    const struct hd_sink_conf *c = j->c;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, j->js, c->stream, NULL, &jerr);
    if (st == NATS_NOT_FOUND && c->create_stream) {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        const char *subjects[1] = {c->subject};
        sc.Name = c->stream;
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_FileStorage;
        sc.Replicas = (int64_t)c->replicas;
        sc.MaxBytes = c->max_bytes > 0 ? (int64_t)c->max_bytes : -1;
        sc.Discard = js_DiscardNew;
        sc.Duplicates = (int64_t)c->duplicate_window_ms * 1000000;
        st = js_AddStream(&si, j->js, &sc, NULL, &jerr);
        if (st == NATS_OK) {
            log_info("relay: sink %s: created stream %s (subject %s, %llu replicas)", c->s.name,
                     c->stream, c->subject, (unsigned long long)c->replicas);
        }
    } else if (st == NATS_NOT_FOUND) {
        snprintf(err, errlen, "stream %s does not exist (create_stream = off)", c->stream);
        *cause = HD_PUB_OTHER;
        return -ENOENT;
    }
    if (st != NATS_OK) {
        nats_err(err, errlen, "stream info", st);
        *cause = cause_of(st, jerr, NULL);
        return -EIO;
    }
    if (si != NULL && si->Config != NULL) {
        log_info("relay: sink %s: stream %s: duplicate window %llds: exactly-once while outages "
                 "stay shorter",
                 c->s.name, c->stream, (long long)(si->Config->Duplicates / 1000000000));
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

/* TLS of the NATS connection, from the sink's tls_* keys (config.c checked
 * them and tlsconf.c loaded the same files, so -n and reload find a bad
 * one). nats.c verifies the server against the system's trust store unless
 * tls_ca names a bundle, requires TLS 1.2, and checks the server's name
 * only when told one: tls_server_name, or the host of the first server.
 * A `tls://` server makes nats.c use TLS without tls = on. */
static natsStatus
tls_options(natsOptions *o, const struct hd_sink_conf *c)
{
    const struct hd_tls_conf *t = &c->tls;
    int tls_url = strstr(c->servers, "tls://") != NULL;
    if (!t->enabled && !tls_url) {
        return NATS_OK;
    }
    natsStatus st = natsOptions_SetSecure(o, true);
    if (st == NATS_OK && t->ca[0] != '\0') {
        st = natsOptions_LoadCATrustedCertificates(o, t->ca);
    }
    if (st == NATS_OK && t->cert[0] != '\0') {
        st = natsOptions_LoadCertificatesChain(o, t->cert, t->key);
    }
    if (st == NATS_OK && t->ciphers[0] != '\0') {
        st = natsOptions_SetCiphers(o, t->ciphers);
    }
    if (st == NATS_OK && t->ciphersuites[0] != '\0') {
        st = natsOptions_SetCipherSuites(o, t->ciphersuites);
    }
    char host[HD_ADDR_MAX];
    if (t->server_name[0] != '\0') {
        snprintf(host, sizeof(host), "%s", t->server_name);
    } else {
        /* "nats://user:pw@host:port, ...": the first server's host. */
        const char *u = c->servers;
        const char *p = strstr(u, "://");
        p = p != NULL ? p + 3 : u;
        const char *at = strchr(p, '@');
        const char *comma = strchr(p, ',');
        if (at != NULL && (comma == NULL || at < comma)) {
            p = at + 1;
        }
        size_t n = 0;
        if (*p == '[') { /* [v6]:port */
            p++;
            while (p[n] != '\0' && p[n] != ']' && n + 1 < sizeof(host)) {
                n++;
            }
        } else {
            while (p[n] != '\0' && p[n] != ':' && p[n] != ',' && p[n] != '/' && p[n] != ' ' &&
                   n + 1 < sizeof(host)) {
                n++;
            }
        }
        memcpy(host, p, n);
        host[n] = '\0';
    }
    if (st == NATS_OK && host[0] != '\0') {
        st = natsOptions_SetExpectedHostname(o, host);
    }
    return st;
}

static int
js_connect(void *impl, char *err, size_t errlen, int *cause)
{
    struct js_sink *j = impl;
    const struct hd_sink_conf *c = &j->conn;
    *cause = HD_PUB_CONNECT;
    pthread_mutex_lock(&j->s->mu);
    uint64_t timeout_ms = j->s->connect_timeout_ms;
    uint64_t rmin = j->s->reconnect_min_ms;
    j->conn = *j->s->live;
    pthread_mutex_unlock(&j->s->mu);
    char list[sizeof(c->servers)];
    snprintf(list, sizeof(list), "%s", c->servers);
    const char *urls[32];
    int nurls = 0;
    for (char *save = NULL, *u = strtok_r(list, ",", &save); u != NULL && nurls < 32;
         u = strtok_r(NULL, ",", &save)) {
        urls[nurls++] = u;
    }
    natsOptions *o = NULL;
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK) {
        st = natsOptions_SetServers(o, urls, nurls);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetTimeout(o, (int64_t)timeout_ms);
    }
    if (st == NATS_OK) {
        /* nats.c reconnects by itself for short blips; a failure it cannot
         * hide shows as a publish error or ack timeout and relay.c
         * reconnects with its own backoff. */
        st = natsOptions_SetMaxReconnect(o, -1);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetReconnectWait(o, (int64_t)rmin);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetReconnectJitter(o, 100, 1000);
    }
    if (st == NATS_OK && c->creds[0] != '\0') {
        st = natsOptions_SetUserCredentialsFromFiles(o, c->creds, NULL);
    }
    if (st == NATS_OK && c->user[0] != '\0') {
        st = natsOptions_SetUserInfo(o, c->user, c->password);
    }
    if (st == NATS_OK && c->token[0] != '\0') {
        st = natsOptions_SetToken(o, c->token);
    }
    if (st == NATS_OK) {
        st = tls_options(o, c);
    }
    if (st != NATS_OK) {
        nats_err(err, errlen, "nats options", st);
        natsOptions_Destroy(o);
        *cause = HD_PUB_OTHER;
        return -EINVAL;
    }
    st = natsConnection_Connect(&j->nc, o);
    natsOptions_Destroy(o);
    if (st != NATS_OK) {
        char what[HD_LIST_TEXT + 16];
        snprintf(what, sizeof(what), "connect %s", c->servers);
        nats_err(err, errlen, what, st);
        *cause = cause_of(st, 0, err);
        if (*cause == HD_PUB_OTHER) {
            *cause = HD_PUB_CONNECT;
        }
        j->nc = NULL;
        return -ECONNREFUSED;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = (int64_t)c->ack_timeout_ms;
    jo.PublishAsync.MaxPending = (int64_t)(2 * j->cap);
    jo.PublishAsync.AckHandler = ack_handler;
    jo.PublishAsync.AckHandlerClosure = j;
    st = natsConnection_JetStream(&j->js, j->nc, &jo);
    if (st != NATS_OK) {
        nats_err(err, errlen, "jetstream context", st);
        js_disconnect(j);
        *cause = HD_PUB_OTHER;
        return -EIO;
    }
    int rc = ensure_stream(j, err, errlen, cause);
    if (rc < 0) {
        js_disconnect(j);
        return rc;
    }
    return 0;
}

/* Publish every TOSEND slot, in order. A publish nats.c refuses now (its
 * pending limit, a reconnect in progress) stays TOSEND for the next round.
 * Slots are claimed (TOSEND -> INFLIGHT) PUBLISH_BATCH at a time under one
 * hold of `mu` and published outside it (js_PublishMsgAsync may stall);
 * claimed slots not published go back to TOSEND. Only this thread moves the
 * head or claims, so a claimed index stays its slot meanwhile. */
static int
publish_pending(struct js_sink *j, int *sent)
{
    const struct hd_sink_conf *c = j->c;
    char id[HOPPER_QUEUE_ID_LEN + 24];
    size_t claim[PUBLISH_BATCH];
    for (;;) {
        size_t nc = 0;
        pthread_mutex_lock(&j->mu);
        if (j->probe && j->inflight > 0) {
            /* Probing: the one publish in flight must be acked first. */
            pthread_mutex_unlock(&j->mu);
            return 0;
        }
        /* One timestamp per batch: publishing a batch takes well under the
         * latency histogram's 1 ms resolution. */
        uint64_t t = now_us();
        size_t i = j->next_send;
        for (; i < j->n && nc < PUBLISH_BATCH; i++) {
            struct slot *sl = slot_at(j, i);
            if (sl->st != SLOT_TOSEND) {
                continue;
            }
            sl->st = SLOT_INFLIGHT;
            sl->sent_us = t;
            j->inflight++;
            claim[nc++] = i;
            if (j->probe) {
                i++;
                break; /* one at a time until one is acked */
            }
        }
        j->next_send = i;
        int more = !j->probe && i < j->n;
        pthread_mutex_unlock(&j->mu);
        if (nc == 0) {
            return 0;
        }
        size_t k = 0;
        natsStatus st = NATS_OK;
        for (; k < nc; k++) {
            /* Slots are freed only by this thread, so data stays valid. */
            const struct slot *sl = slot_at(j, claim[k]);
            snprintf(id, sizeof(id), "%s-%llu", j->qid, (unsigned long long)sl->seq);
            natsMsg *m = NULL;
            st = natsMsg_Create(&m, c->subject, NULL, (const char *)sl->data, (int)sl->len);
            if (st == NATS_OK) {
                jsPubOptions po;
                jsPubOptions_Init(&po);
                po.MsgId = id;
                st = js_PublishMsgAsync(j->js, &m, &po);
            }
            natsMsg_Destroy(m); /* no-op when nats.c took it */
            if (st != NATS_OK) {
                break;
            }
            (*sent)++;
        }
        if (k < nc) {
            /* claim[k..] were not published: no ack can come for them. */
            pthread_mutex_lock(&j->mu);
            for (size_t u = k; u < nc; u++) {
                struct slot *sl = slot_at(j, claim[u]);
                if (sl->st == SLOT_INFLIGHT) {
                    sl->st = SLOT_TOSEND;
                    j->inflight--;
                }
            }
            j->next_send = claim[k];
            pthread_mutex_unlock(&j->mu);
            if (st == NATS_TIMEOUT) {
                return 0; /* stalled at MaxPending: retry next round */
            }
            return -(int)st;
        }
        if (!more) {
            return 0;
        }
    }
}

static int
js_step(void *impl, int wait_ms, char *err, size_t errlen, int *cause)
{
    struct js_sink *j = impl;
    struct hd_sink_rt *s = j->s;
    hopper_queue *q = s->queue->q;
    /* 1. Acknowledge the acked prefix. */
    uint64_t last = 0, nrec = 0, bytes = 0, oldest_us = 0;
    int failed = -1;
    pthread_mutex_lock(&j->mu);
    while (j->acked_front > 0) {
        struct slot *sl = slot_at(j, 0);
        assert(j->n > 0 && sl->st == SLOT_ACKED);
        last = sl->seq;
        nrec++;
        bytes += sl->len;
        if (sl->room > SLOT_KEEP_MAX) {
            free(sl->data);
            sl->data = NULL;
            sl->room = 0;
        }
        j->head = (j->head + 1) % j->cap;
        j->n--;
        j->acked_front--;
        j->next_send = j->next_send > 0 ? j->next_send - 1 : 0;
    }
    uint64_t inflight = j->inflight;
    /* Publishes go out in ring order on one connection, so the first
     * INFLIGHT slot is the oldest; usually the head. */
    for (size_t i = 0; inflight > 0 && i < j->n; i++) {
        if (slot_at(j, i)->st == SLOT_INFLIGHT) {
            oldest_us = slot_at(j, i)->sent_us;
            break;
        }
    }
    if (j->fail_cause >= 0) {
        j->probe = 1;
        failed = j->fail_cause;
        snprintf(err, errlen, "publish failed: %s", j->fail_text);
    }
    pthread_mutex_unlock(&j->mu);
    atomic_store(&s->pub.inflight, inflight);
    if (nrec > 0) {
        j->held_bytes -= bytes;
        int rc = hopper_ack(q, last);
        if (rc < 0) {
            log_warnx("relay: sink %s: queue %s: ack: %s", j->c->s.name, s->queue->conf->s.name,
                      hopper_strerror(rc));
        }
        atomic_fetch_add(&s->egress_records, nrec);
        atomic_fetch_add(&s->egress_bytes, bytes);
    }
    if (failed >= 0) {
        *cause = failed;
        return -EIO;
    }
    if (oldest_us != 0 && now_us() - oldest_us > j->c->ack_timeout_ms * 1000u) {
        atomic_fetch_add(&s->pub.errors[HD_PUB_TIMEOUT], 1);
        pthread_mutex_lock(&j->mu);
        j->probe = 1;
        pthread_mutex_unlock(&j->mu);
        snprintf(err, errlen, "no publish ack within ack_timeout (%llu ms)",
                 (unsigned long long)j->c->ack_timeout_ms);
        *cause = HD_PUB_TIMEOUT;
        return -ETIMEDOUT;
    }
    /* 2. Take new records while the window has room. */
    int got = 0;
    while (j->n < j->cap) {
        hopper_record rec;
        int rc = hopper_recv(q, &rec, j->n == 0 && got == 0 ? wait_ms : 0);
        if (rc < 0) {
            if (rc != -EAGAIN && rc != -ETIMEDOUT && rc != HOPPER_ECLOSED) {
                snprintf(err, errlen, "queue %s: recv: %s", s->queue->conf->s.name,
                         hopper_strerror(rc));
                *cause = HD_PUB_OTHER;
                return rc;
            }
            break;
        }
        /* Slots past n are this thread's alone: fill it before taking mu. */
        struct slot *sl = slot_at(j, j->n);
        if (sl->room < rec.len || sl->data == NULL) {
            size_t room = rec.len > 256 ? rec.len : 256;
            uint8_t *p = realloc(sl->data, room);
            if (p == NULL) {
                /* Received but not kept: it must not be skipped (relay.c's rule). */
                fatalx("relay: sink %s: out of memory holding a record", j->c->s.name);
            }
            sl->data = p;
            sl->room = room;
        }
        memcpy(sl->data, rec.data, rec.len);
        sl->seq = rec.seq;
        sl->len = rec.len;
        pthread_mutex_lock(&j->mu);
        sl->st = SLOT_TOSEND;
        j->n++;
        pthread_mutex_unlock(&j->mu);
        j->held_bytes += rec.len;
        got++;
    }
    /* 3. Publish. */
    int sent = 0;
    int rc = publish_pending(j, &sent);
    if (rc < 0) {
        natsStatus st = (natsStatus)-rc;
        nats_err(err, errlen, "publish", st);
        *cause = cause_of(st, 0, NULL);
        atomic_fetch_add(&s->pub.errors[*cause], 1);
        return -EIO;
    }
    pthread_mutex_lock(&j->mu);
    size_t n = j->n;
    if (n > 0 && sent == 0 && got == 0) {
        /* Everything is in flight: wait a little for a batch of acks (or
         * all of them, a failure, or a probe's ack). The caller steps again
         * after at most 20 ms either way, for the ack timeout. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        j->waiting = 1;
        int wrc = 0;
        while (wrc != ETIMEDOUT && !relay_wanted(j)) {
            wrc = pthread_cond_timedwait(&j->acked, &j->mu, &ts);
        }
        j->waiting = 0;
    }
    pthread_mutex_unlock(&j->mu);
    return n > 0 ? HD_STEP_BUSY : HD_STEP_IDLE;
}

static void
js_held(void *impl, struct hd_held *h)
{
    struct js_sink *j = impl;
    pthread_mutex_lock(&j->mu);
    h->n = j->n;
    h->bytes = j->held_bytes;
    h->last_seq = j->n > 0 ? slot_at(j, j->n - 1)->seq : 0;
    pthread_mutex_unlock(&j->mu);
}

static void
ring_clear(struct js_sink *j)
{
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->cap; i++) {
        free(j->w[i].data);
        j->w[i].data = NULL;
        j->w[i].room = 0;
    }
    j->n = 0;
    j->head = 0;
    j->acked_front = 0;
    j->next_send = 0;
    j->inflight = 0;
    pthread_mutex_unlock(&j->mu);
    j->held_bytes = 0;
}

static void
js_discard_held(void *impl)
{
    /* Publishes already in flight may still land; their acks find no slot. */
    ring_clear(impl);
}

static void
js_destroy(void *impl)
{
    struct js_sink *j = impl;
    if (j == NULL) {
        return;
    }
    js_disconnect(j);
    ring_clear(j);
    pthread_cond_destroy(&j->acked);
    pthread_mutex_destroy(&j->mu);
    free(j->w);
    free(j);
}

void
hd_sink_jetstream_cleanup(void)
{
    natsStatus st = nats_CloseAndWait(2000);
    if (st != NATS_OK) {
        log_debug("relay: nats.c cleanup: %s", natsStatus_GetText(st));
    }
}

const struct hd_sink_ops hd_sink_jetstream_ops = {
    .create = js_create,
    .connect = js_connect,
    .step = js_step,
    .disconnect = js_disconnect,
    .held = js_held,
    .discard_held = js_discard_held,
    .destroy = js_destroy,
};
