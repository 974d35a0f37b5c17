/* SPDX-License-Identifier: MIT */
/* Native request dispatch (see native.h). */
#include "native.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "commit.h"
#include "conn.h"
#include "daemon.h"
#include "ingest.h"
#include "log.h"
#include "loop_ctx.h"
#include "proto.h"
#include "subscribe.h"

size_t
hd_native_max_frame(const struct hd_source_rt *src)
{
    uint64_t m = src->queue->conf->max_record_bytes + 64u * 1024u;
    return m < HD_PROTO_MIN_FRAME ? HD_PROTO_MIN_FRAME : (size_t)m;
}

int
hd_native_hello(struct hd_conn *c)
{
    const struct hd_source_rt *src = c->src;
    return hd_proto_put_hello(&c->out, hd_native_max_frame(src), src->queue->conf->max_record_bytes,
                              src->queue->conf->s.name, src->conf->idle_timeout_ms);
}

void
hd_native_reject(struct hd_conn *c, uint64_t id, int code, const char *msg)
{
    atomic_fetch_add(&c->src->native_rejections[code], 1);
    if (hd_proto_put_error(&c->out, id, code, msg) < 0) {
        c->closing = 1;
    }
}

/* The queue a request names, or the source's when it names none; NULL when
 * there is no such queue. */
static struct hd_queue_rt *
find_queue(struct hd_loop *lp, const struct hd_conn *c, const struct hd_slice *name)
{
    if (name->n == 0) {
        return c->src->queue;
    }
    for (size_t i = 0; i < lp->d->nqueues; i++) {
        const char *qn = lp->d->queues[i].conf->s.name;
        if (strlen(qn) == name->n && memcmp(qn, name->p, name->n) == 0) {
            return &lp->d->queues[i];
        }
    }
    return NULL;
}

/* May c perform op (enum hd_auth_op) on qr? If not, reply FORBIDDEN
 * (counted by hd_native_reject) and log it, once per connection. */
static int
allowed(struct hd_loop *lp, struct hd_conn *c, const struct hd_msg *m, struct hd_queue_rt *qr,
        int op)
{
    const char *why;
    if (hd_auth_queue(c->src->conf, (int)(qr - lp->d->queues), op, &why)) {
        return 1;
    }
    if (!c->refusal_logged && hd_loop_warn_ok(lp)) {
        c->refusal_logged = 1;
        log_warnx("listener: source %s: %s: %s of queue %s refused: %s (further refusals on this "
                  "connection are counted, not logged)",
                  c->src->conf->s.name, c->peer, op == HD_AUTH_SUBSCRIBE ? "subscribe" : "send",
                  qr->conf->s.name, why);
    }
    hd_native_reject(c, m->id, HD_CODE_FORBIDDEN, why);
    return 0;
}

static int
native_subscribe(struct hd_loop *lp, struct hd_conn *c, const struct hd_msg *m)
{
    struct hd_queue_rt *qr = find_queue(lp, c, &m->queue);
    if (qr == NULL) {
        hd_native_reject(c, m->id, HD_CODE_NO_SUCH_QUEUE, "no such queue");
        return 0;
    }
    if (!allowed(lp, c, m, qr, HD_AUTH_SUBSCRIBE)) {
        return 0;
    }
    const char *why;
    if (hd_sub_attach(lp, c, qr, m->window, &why) < 0) {
        hd_native_reject(c, m->id, HD_CODE_BUSY, why);
        return 0;
    }
    return hd_proto_put_ok(&c->out, m->id, 0, 0) < 0 ? -1 : 0;
}

/* `send`: all records of the batch or none go into the queue. */
static int
native_send(struct hd_loop *lp, struct hd_conn *c, const struct hd_msg *m, const uint8_t *p,
            size_t n)
{
    struct hd_queue_rt *qr = find_queue(lp, c, &m->queue);
    if (qr == NULL) {
        hd_native_reject(c, m->id, HD_CODE_NO_SUCH_QUEUE, "no such queue");
        return 0;
    }
    if (!allowed(lp, c, m, qr, HD_AUTH_SEND)) {
        return 0;
    }
    if (m->nrecords == 0) {
        return hd_proto_put_ok(&c->out, m->id, 0, 0) < 0 ? -1 : 0;
    }
    hopper_iovec *iov = malloc((size_t)m->nrecords * sizeof(*iov));
    if (iov == NULL) {
        hd_native_reject(c, m->id, HD_CODE_FAILED, "out of memory");
        return 0;
    }
    size_t cur;
    uint64_t bytes = 0;
    size_t k = 0;
    struct hd_slice rec;
    hd_proto_records_begin(m, &cur);
    while (k < m->nrecords && hd_proto_next_record(p, n, &cur, &rec) == 0) {
        if (rec.n > qr->conf->max_record_bytes) {
            free(iov);
            hd_native_reject(c, m->id, HD_CODE_TOO_BIG, "record exceeds max_record_bytes");
            return 0;
        }
        iov[k].data = rec.p;
        iov[k].len = rec.n;
        bytes += rec.n;
        k++;
    }
    struct hd_offer res;
    int outcome = hd_ingest_offer(lp, qr, iov, k, bytes, 1, &res);
    free(iov);
    switch (outcome) {
    case HD_OFFER_ACCEPTED: {
        /* A group-commit queue: the `ok` waits for the round's commit. */
        size_t at = c->out.size;
        if (hd_proto_put_ok(&c->out, m->id, k, 0) < 0) {
            return -1;
        }
        hd_commit_hold(lp, c, qr, m->id, at);
        return 0;
    }
    case HD_OFFER_WAIT:
        return 1;
    case HD_OFFER_DROPPED: /* drop_newest: the batch is dropped, and said so */
        return hd_proto_put_ok(&c->out, m->id, 0, k) < 0 ? -1 : 0;
    case HD_OFFER_REFUSED:
    default:
        break;
    }
    if (res.rc == HOPPER_EFULL) {
        hd_native_reject(c, m->id, HD_CODE_FULL,
                         res.cause == HD_DROP_SHUTDOWN ? "queue full at shutdown"
                                                       : hopper_strerror(res.rc));
    } else {
        hd_native_reject(c, m->id, res.rc == HOPPER_ETOOBIG ? HD_CODE_TOO_BIG : HD_CODE_FAILED,
                         hopper_strerror(res.rc));
    }
    return 0;
}

int
hd_native_request(struct hd_loop *lp, struct hd_conn *c, const uint8_t *p, size_t n)
{
    struct hd_msg m;
    const char *why = NULL;
    int ok = hd_proto_parse(p, n, &m, &why) == 0;
    if (ok && m.op == HD_OP_SUBSCRIBE) {
        return native_subscribe(lp, c, &m);
    }
    if (ok && m.op == HD_OP_ACK && c->sub != NULL) {
        hd_sub_ack(lp, c, m.seq);
        return 0;
    }
    if (ok && m.op == HD_OP_ACK) {
        why = "ack without subscribe";
    }
    if (!ok || m.op != HD_OP_SEND) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (hd_loop_warn_ok(lp)) {
            log_warnx("listener: source %s: %s: bad native frame: %s", c->src->conf->s.name,
                      c->peer, why != NULL ? why : "only send, subscribe and ack are accepted");
        }
        hd_native_reject(c, m.has_id ? m.id : 0, HD_CODE_BAD_FRAME,
                         why != NULL ? why : "only send, subscribe and ack are accepted");
        c->closing = 1;
        return -1;
    }
    return native_send(lp, c, &m, p, n);
}
