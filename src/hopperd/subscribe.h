/* SPDX-License-Identifier: MIT */
/* Native pull consumption of queues (PROTOCOL.md §3, subscribe). While a
 * subscriber is attached, the listener thread is the queue's single
 * consumer; config validation plus has_sink keep sinks away. Records taken
 * from the queue stay held (in flight) until acknowledged, so a subscriber
 * that disconnects loses nothing: the next one gets them again first.
 * Listener thread only. */
#ifndef HOPPER_SRC_HOPPERD_SUBSCRIBE_H
#define HOPPER_SRC_HOPPERD_SUBSCRIBE_H

#include <stddef.h>
#include <stdint.h>

struct hd_conn;
struct hd_held;
struct hd_loop;
struct hd_queue_rt;

/* A record handed to a subscriber and not yet acknowledged. */
struct hd_inflight {
    uint64_t seq;
    uint8_t *data;
    size_t len;
};

/* One per queue: lp->subqs[i] consumes lp->d->queues[i]. */
struct hd_subq {
    struct hd_queue_rt *qr;
    int has_sink;
    struct hd_conn *sub;       /* current subscriber or NULL */
    uint64_t window;           /* records in flight allowed */
    struct hd_inflight *items; /* in sequence order */
    size_t n, cap;
    size_t sent;  /* items[0..sent) went to the current subscriber */
    size_t bytes; /* payload bytes in items */
};

/* One hd_subq per queue in lp->subqs. 0 or -ENOMEM. */
int hd_sub_init(struct hd_loop *lp);
/* Free lp->subqs. Records still held were received but never
 * acknowledged: the queue delivers them again after the next open. */
void hd_sub_free(struct hd_loop *lp);
/* Make c the subscriber of qr with `window` records in flight (0: the
 * default). 0, or -1 with the reason for a BUSY reply in *why. */
int hd_sub_attach(struct hd_loop *lp, struct hd_conn *c, struct hd_queue_rt *qr, uint64_t window,
                  const char **why);
/* c is going away: its unacknowledged records go to the next subscriber. */
void hd_sub_detach(struct hd_loop *lp, struct hd_conn *c);
/* c acknowledges every record it was sent up to and including seq. */
void hd_sub_ack(struct hd_loop *lp, struct hd_conn *c, uint64_t seq);
/* Fill sq's window from the queue and queue what its subscriber has not
 * seen as records frames. Returns the subscriber, whose replies the caller
 * flushes, or NULL. */
struct hd_conn *hd_sub_pump(struct hd_loop *lp, struct hd_subq *sq);
/* when_full = drop_oldest on a queue without a sink: discard the oldest
 * held records of qr (received, not acknowledged) until at least `need`
 * payload bytes and one record are gone, or none is left. They are freed
 * and described in *held; the caller acknowledges them in the queue. */
void hd_sub_discard_held(struct hd_loop *lp, struct hd_queue_rt *qr, uint64_t need,
                         struct hd_held *held);

#endif
