/* SPDX-License-Identifier: MIT */
/* Ingest: records -> queue. The one place that applies a queue's when_full
 * policy (hd_ingest_offer) and that implements drop_oldest, on both sides:
 * the producer's request (listener thread) and the consumer's discarding
 * (a sink's relay thread, or the listener thread for a queue without a
 * sink). The mechanism is described at the top of ingest.c. */
#ifndef HOPPER_SRC_HOPPERD_INGEST_H
#define HOPPER_SRC_HOPPERD_INGEST_H

#include <hopper.h>
#include <stddef.h>
#include <stdint.h>

struct hd_held;
struct hd_loop;
struct hd_queue_rt;
struct log_limit;

/* What became of records offered to a queue. */
enum hd_offer_outcome {
    HD_OFFER_ACCEPTED = 0, /* in the queue, counted as ingress */
    HD_OFFER_WAIT,         /* block or drop_oldest: keep them, offer them again */
    HD_OFFER_DROPPED,      /* dropped and counted under `cause` */
    HD_OFFER_REFUSED,      /* not taken; the producer holds them and is told why */
};

struct hd_offer {
    int rc;    /* hopper_send_batch()'s last result */
    int cause; /* DROPPED, REFUSED: enum hd_drop_cause that applies */
};

/* Listener thread: offer iov[0..k) (`bytes` of payload) to qr without
 * waiting, applying qr's when_full. `producer_holds`: the producer keeps
 * the records until told (native batches), so a refusal drops nothing;
 * otherwise (lines, octet-counted) what is not taken is dropped and
 * counted. drop_newest drops either way. Returns enum hd_offer_outcome. */
int hd_ingest_offer(struct hd_loop *lp, struct hd_queue_rt *qr, const hopper_iovec *iov, size_t k,
                    uint64_t bytes, int producer_holds, struct hd_offer *res);

/* Records framed from one connection buffer (lines, octet-counted), handed
 * to the queue with one hopper_send_batch() where possible. */
#define HD_BATCH_MAX 1024

struct hd_pending {
    const uint8_t *p;
    size_t len;
    size_t end; /* buffer offset just past this record's frame */
};

/* Deliver batch[0..k) to qr; *off advances past every record done with.
 * Returns 1 if a record must wait for queue space, else 0. If the queue
 * refuses the whole batch, the records go one by one through
 * hd_ingest_record(), which applies when_full to each. */
int hd_ingest_batch(struct hd_loop *lp, struct hd_queue_rt *qr, const struct hd_pending *batch,
                    size_t k, size_t *off);
/* One lines/octet-counted record. 0 when done with (accepted, or dropped,
 * counted and logged), 1 when it must wait for queue space. */
int hd_ingest_record(struct hd_loop *lp, struct hd_queue_rt *qr, const uint8_t *rec, size_t len);

/* Count dropped records under `cause` (enum hd_drop_cause). Any thread. */
void hd_ingest_count_drop(struct hd_queue_rt *qr, int cause, uint64_t records, uint64_t bytes);

/* Relay thread, qr's consumer: serve the sources' drop_oldest requests on
 * qr, discarding `held` first (then held->n is 0), and wake the listener
 * (loop_wake_fd) after each round. Warnings name `sink` and go through
 * `warn`, the relay thread's limiter. */
void hd_drop_oldest_serve(struct hd_queue_rt *qr, int loop_wake_fd, struct hd_held *held,
                          const char *sink, struct log_limit *warn);

#endif
