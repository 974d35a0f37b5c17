/* SPDX-License-Identifier: MIT */
/* Native pull subscriptions (see subscribe.h). */
#include "subscribe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "daemon.h"
#include "log.h"
#include "loop_ctx.h"
#include "proto.h"

#define SUB_DEFAULT_WINDOW 1000u
#define SUB_MAX_WINDOW 100000u
#define SUB_MAX_BYTES (4u * 1024u * 1024u)
#define SUB_FRAME_BYTES (256u * 1024u)

int
hd_sub_init(struct hd_loop *lp)
{
    struct hd_daemon *d = lp->d;
    lp->subqs = calloc(d->nqueues ? d->nqueues : 1, sizeof(*lp->subqs));
    if (lp->subqs == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < d->nqueues; i++) {
        lp->subqs[i].qr = &d->queues[i];
        for (size_t k = 0; k < d->nsinks; k++) {
            lp->subqs[i].has_sink |= d->sinks[k].queue == &d->queues[i];
        }
    }
    return 0;
}

void
hd_sub_free(struct hd_loop *lp)
{
    for (size_t i = 0; lp->subqs != NULL && i < lp->d->nqueues; i++) {
        for (size_t k = 0; k < lp->subqs[i].n; k++) {
            free(lp->subqs[i].items[k].data);
        }
        free(lp->subqs[i].items);
    }
    free(lp->subqs);
    lp->subqs = NULL;
}

static struct hd_subq *
subq_of(struct hd_loop *lp, const struct hd_queue_rt *qr)
{
    return &lp->subqs[qr - lp->d->queues];
}

int
hd_sub_attach(struct hd_loop *lp, struct hd_conn *c, struct hd_queue_rt *qr, uint64_t window,
              const char **why)
{
    struct hd_subq *sq = subq_of(lp, qr);
    if (c->sub != NULL) {
        *why = "this connection is already subscribed";
        return -1;
    }
    if (sq->has_sink) {
        *why = "the queue is consumed by a sink";
        return -1;
    }
    if (sq->sub != NULL) {
        *why = "the queue has a subscriber";
        return -1;
    }
    sq->sub = c;
    sq->sent = 0;
    sq->window = window == 0              ? SUB_DEFAULT_WINDOW
                 : window > SUB_MAX_WINDOW ? SUB_MAX_WINDOW
                                           : window;
    c->sub = sq;
    lp->nsubs++;
    atomic_store(&qr->subscribed, 1);
    log_info("listener: queue %s: subscriber %s attached (window %llu, %zu records to resend)",
             qr->conf->s.name, c->peer, (unsigned long long)sq->window, sq->n);
    return 0;
}

void
hd_sub_detach(struct hd_loop *lp, struct hd_conn *c)
{
    struct hd_subq *sq = c->sub;
    if (sq == NULL) {
        return;
    }
    sq->sub = NULL;
    sq->sent = 0; /* resent to the next subscriber */
    c->sub = NULL;
    atomic_store(&sq->qr->subscribed, 0);
    lp->nsubs--;
    log_info("listener: queue %s: subscriber %s left with %zu records unacknowledged",
             sq->qr->conf->s.name, c->peer, sq->n);
}

/* Forget items[0..k): acknowledged or discarded. */
static void
release_items(struct hd_subq *sq, size_t k)
{
    if (k == 0) {
        return; /* items may still be NULL */
    }
    for (size_t i = 0; i < k; i++) {
        sq->bytes -= sq->items[i].len;
        free(sq->items[i].data);
    }
    memmove(sq->items, sq->items + k, (sq->n - k) * sizeof(*sq->items));
    sq->n -= k;
    sq->sent = sq->sent > k ? sq->sent - k : 0;
}

void
hd_sub_ack(struct hd_loop *lp, struct hd_conn *c, uint64_t seq)
{
    struct hd_subq *sq = c->sub;
    size_t k = 0;
    while (k < sq->sent && sq->items[k].seq <= seq) {
        k++;
    }
    if (k == 0) {
        return;
    }
    int rc = hopper_ack(sq->qr->q, sq->items[k - 1].seq);
    if (rc < 0 && hd_loop_warn_ok(lp)) {
        log_warnx("listener: queue %s: ack: %s", sq->qr->conf->s.name, hopper_strerror(rc));
    }
    release_items(sq, k);
    atomic_fetch_add(&sq->qr->sub_acked, k);
}

struct hd_conn *
hd_sub_pump(struct hd_loop *lp, struct hd_subq *sq)
{
    struct hd_conn *c = sq->sub;
    if (c == NULL || c->closing) {
        return NULL;
    }
    while (sq->n < sq->window && sq->bytes < SUB_MAX_BYTES) {
        hopper_record rec;
        int rc = hopper_recv(sq->qr->q, &rec, 0);
        if (rc != 0) {
            if (rc != -EAGAIN && rc != HOPPER_ECLOSED && hd_loop_warn_ok(lp)) {
                log_warnx("listener: queue %s: recv: %s", sq->qr->conf->s.name,
                          hopper_strerror(rc));
            }
            break;
        }
        if (sq->n == sq->cap) {
            size_t ncap = sq->cap ? sq->cap * 2 : 256;
            struct hd_inflight *ni = realloc(sq->items, ncap * sizeof(*ni));
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
    while (sq->sent < sq->n && hd_conn_unsent(c) < HD_CONN_OUT_LIMIT) {
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
    return c;
}

void
hd_sub_discard_held(struct hd_loop *lp, struct hd_queue_rt *qr, uint64_t need,
                    struct hd_held *held)
{
    struct hd_subq *sq = subq_of(lp, qr);
    size_t k = 0;
    uint64_t bytes = 0;
    while (k < sq->n && (k == 0 || bytes < need)) {
        bytes += sq->items[k].len;
        k++;
    }
    held->n = k;
    held->bytes = bytes;
    held->last_seq = k > 0 ? sq->items[k - 1].seq : 0;
    release_items(sq, k);
}
