/* SPDX-License-Identifier: MIT */
/* Ingest (see ingest.h).
 *
 * when_full, the one table (hd_ingest_offer): records are offered with
 * hopper_send_batch(..., timeout 0). When the queue is full:
 *   block        wait: the connection keeps the records and stops reading
 *                (TCP pushes back), the loop offers them again;
 *   drop_oldest  make room (below), then wait like block;
 *   reject       lines: drop (cause full); native: refuse (FULL);
 *   drop_newest  drop (cause full); native: `ok` with `dropped` set.
 * Once the shutdown deadline passed (lp->give_up), block and drop_oldest
 * stop waiting: lines drop (cause shutdown), native refuses (FULL). Other
 * failures drop (oversize, shutdown, queue_failed) or refuse (TOO_BIG,
 * FAILED).
 *
 * when_full = drop_oldest. libhopper allows one consumer per queue, so only
 * the consumer can discard:
 *   - With a sink, the producer side (send_or_drop_oldest, listener
 *     thread) posts the payload bytes it waits to send in qr->drop_need and
 *     writes qr->drop_wake_fd; the sink's relay thread serves the request in
 *     hd_drop_oldest_serve() and wakes the listener, which offers the
 *     records again at once (and every retry period anyway) and asks again
 *     if the queue is still full. A send that succeeds voids the request.
 *   - Without a sink, the listener thread is the consumer (of native
 *     subscriptions) and discards itself, then sends again, up to
 *     LOCAL_DROP_ROUNDS times.
 * Either way discard_oldest() does the discarding: first the records the
 * consumer holds (received, not acknowledged: the oldest ones), then records
 * taken with hopper_recv(); each is acknowledged without being delivered
 * and counted (cause drop_oldest), until at least the bytes asked for and
 * one record are gone. A relay also keeps going until the queue's files or
 * memory actually shrank (space_freed()), at most DROP_ROUND_MAX records a
 * round and DROP_ROUNDS rounds a call.
 */
#include "ingest.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "clock.h"
#include "commit.h"
#include "daemon.h"
#include "log.h"
#include "loop_ctx.h"
#include "subscribe.h"

/* Queue without a sink: at most this many rounds of "discard at least the
 * bytes wanted, send again" per record or batch. */
#define LOCAL_DROP_ROUNDS 4096
/* Relay: records discarded per round at most, and rounds per
 * hd_drop_oldest_serve() call; a call waits at most DROP_FOLLOWUP_MS for
 * the listener to ask again. */
#define DROP_ROUND_MAX 65536
#define DROP_ROUNDS 64
#define DROP_FOLLOWUP_MS 20

void
hd_ingest_count_drop(struct hd_queue_rt *qr, int cause, uint64_t records, uint64_t bytes)
{
    atomic_fetch_add(&qr->drops[cause], records);
    atomic_fetch_add(&qr->drop_bytes[cause], bytes);
}

/* k records of `bytes` payload are in the queue: count them; a pending
 * drop_oldest request is void; a group-commit queue owes a commit (they
 * are written, not yet durable, commit.h). */
static void
count_accepted(struct hd_loop *lp, struct hd_queue_rt *qr, size_t k, uint64_t bytes)
{
    hd_commit_note(lp, qr, bytes);
    atomic_fetch_add(&qr->ingress_records, k);
    atomic_fetch_add(&qr->ingress_bytes, bytes);
    if (atomic_load(&qr->drop_need) != 0) {
        atomic_store(&qr->drop_need, 0);
    }
}

/* Has the queue given space back since `st0`? Disk space returns when a
 * segment file is reclaimed; in memory mode, records leaving memory also
 * release the disk room reserved for them. */
static int
space_freed(hopper_queue *q, const hopper_stats *st0, int memory_mode, uint64_t need)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    if (hopper_stats_get(q, &st) < 0) {
        return 1;
    }
    return st.disk_bytes < st0->disk_bytes ||
           (memory_mode && st0->mem_bytes >= st.mem_bytes + need);
}

/* The consumer of qr discards its oldest records: `held` first, then
 * records taken from the queue, until at least `need` payload bytes and one
 * record are gone and, when st0 is not NULL, space_freed(); at most max
 * records. Counts them (drop_oldest). Returns the count; *bytes_out their
 * payload bytes, *ack_rc 0 or the failed hopper_ack()'s error. */
static uint64_t
discard_oldest(struct hd_queue_rt *qr, const struct hd_held *held, uint64_t need, uint64_t max,
               const hopper_stats *st0, uint64_t *bytes_out, int *ack_rc)
{
    int memory_mode = qr->conf->durability != HD_DUR_DISK;
    uint64_t n = held->n, bytes = held->bytes;
    int rc = 0;
    if (held->n > 0) {
        rc = hopper_ack(qr->q, held->last_seq);
    }
    while (rc == 0 && n < max &&
           (bytes < need || n == 0 ||
            (st0 != NULL && !space_freed(qr->q, st0, memory_mode, need)))) {
        hopper_record rec;
        if (hopper_recv(qr->q, &rec, 0) != 0) {
            break;
        }
        rc = hopper_ack(qr->q, rec.seq);
        bytes += rec.len;
        n++;
    }
    hd_ingest_count_drop(qr, HD_DROP_OLDEST, n, bytes);
    *bytes_out = bytes;
    *ack_rc = rc;
    return n;
}

/* A queue without a sink: this thread is its consumer. Returns the records
 * discarded (0: nothing left to discard). */
static uint64_t
discard_local(struct hd_loop *lp, struct hd_queue_rt *qr, uint64_t need)
{
    struct hd_held held;
    hd_sub_discard_held(lp, qr, need, &held);
    uint64_t bytes;
    int rc;
    uint64_t n = discard_oldest(qr, &held, need, UINT64_MAX, NULL, &bytes, &rc);
    if (rc < 0 && hd_loop_warn_ok(lp)) {
        log_warnx("listener: queue %s: ack: %s", qr->conf->s.name, hopper_strerror(rc));
    }
    return n;
}

/* A queue with a sink: post `need` bytes to its relay thread. The caller
 * keeps the records and offers them again. */
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

/* hopper_send_batch() without waiting; when the queue is full under
 * drop_oldest, room is made (by the queue's relay, or here when it has no
 * sink) and, here, the send is tried again. Returns its last result. */
static int
send_or_drop_oldest(struct hd_loop *lp, struct hd_queue_rt *qr, const hopper_iovec *iov, size_t k,
                    uint64_t bytes)
{
    int rc = hopper_send_batch(qr->q, iov, k, 0);
    if (rc == HOPPER_EFULL && qr->conf->when_full == HD_FULL_DROP_OLDEST && !lp->give_up) {
        if (qr->has_sink) {
            request_drop_oldest(qr, bytes);
        } else {
            for (int i = 0;
                 rc == HOPPER_EFULL && i < LOCAL_DROP_ROUNDS && discard_local(lp, qr, bytes) > 0;
                 i++) {
                rc = hopper_send_batch(qr->q, iov, k, 0);
            }
        }
    }
    return rc;
}

int
hd_ingest_offer(struct hd_loop *lp, struct hd_queue_rt *qr, const hopper_iovec *iov, size_t k,
                uint64_t bytes, int producer_holds, struct hd_offer *res)
{
    int rc = send_or_drop_oldest(lp, qr, iov, k, bytes);
    res->rc = rc;
    res->cause = HD_DROP_FULL;
    if (rc == 0) {
        count_accepted(lp, qr, k, bytes);
        return HD_OFFER_ACCEPTED;
    }
    if (rc == HOPPER_EFULL) {
        switch (qr->conf->when_full) {
        case HD_FULL_BLOCK:
        case HD_FULL_DROP_OLDEST:
            if (!lp->give_up) {
                return HD_OFFER_WAIT;
            }
            res->cause = HD_DROP_SHUTDOWN;
            break;
        case HD_FULL_DROP_NEWEST:
            hd_ingest_count_drop(qr, HD_DROP_FULL, k, bytes);
            return HD_OFFER_DROPPED;
        case HD_FULL_REJECT:
        default:
            break;
        }
    } else if (rc == HOPPER_ETOOBIG) {
        res->cause = HD_DROP_OVERSIZE;
    } else if (rc == HOPPER_ECLOSED) {
        res->cause = HD_DROP_SHUTDOWN;
    } else {
        res->cause = HD_DROP_QUEUE_FAILED;
    }
    if (producer_holds) {
        return HD_OFFER_REFUSED;
    }
    hd_ingest_count_drop(qr, res->cause, k, bytes);
    return HD_OFFER_DROPPED;
}

int
hd_ingest_record(struct hd_loop *lp, struct hd_queue_rt *qr, const uint8_t *rec, size_t len)
{
    hopper_iovec v = {.data = rec, .len = len};
    struct hd_offer res;
    int outcome = hd_ingest_offer(lp, qr, &v, 1, len, 0, &res);
    if (outcome == HD_OFFER_WAIT) {
        return 1;
    }
    if (outcome != HD_OFFER_DROPPED || !hd_loop_warn_ok(lp)) {
        return 0;
    }
    if (res.rc == HOPPER_EFULL && res.cause == HD_DROP_SHUTDOWN) {
        log_warnx("listener: queue %s: still full at shutdown deadline, record dropped",
                  qr->conf->s.name);
    } else if (res.rc == HOPPER_EFULL) {
        log_warnx("listener: queue %s: %s, record dropped (when_full = %s)", qr->conf->s.name,
                  hopper_strerror(res.rc), hd_when_full_name(qr->conf->when_full));
    } else {
        log_warnx("listener: queue %s: send: %s, record dropped", qr->conf->s.name,
                  hopper_strerror(res.rc));
    }
    return 0;
}

int
hd_ingest_batch(struct hd_loop *lp, struct hd_queue_rt *qr, const struct hd_pending *batch,
                size_t k, size_t *off)
{
    hopper_iovec iov[HD_BATCH_MAX];
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
        count_accepted(lp, qr, k, bytes);
        *off = batch[k - 1].end;
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        if (hd_ingest_record(lp, qr, batch[i].p, batch[i].len) != 0) {
            return 1;
        }
        *off = batch[i].end;
    }
    return 0;
}

/* ---- drop_oldest, relay side ---- */

static void
drain_eventfd(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
}

/* One round: discard `held`, then the oldest records of the queue. */
static void
drop_round(struct hd_queue_rt *qr, uint64_t need, struct hd_held *held, const char *sink,
           struct log_limit *warn)
{
    hopper_stats st0 = {.struct_size = sizeof(st0)};
    hopper_stats_get(qr->q, &st0);
    uint64_t bytes;
    int rc;
    uint64_t n = discard_oldest(qr, held, need, DROP_ROUND_MAX, &st0, &bytes, &rc);
    held->n = 0;
    held->bytes = 0;
    if (rc < 0 && log_limit_ok(warn, hd_now_ms(), NULL)) {
        log_warnx("relay: sink %s: queue %s: ack: %s", sink, qr->conf->s.name,
                  hopper_strerror(rc));
    }
    if (n > 0 && log_limit_ok(warn, hd_now_ms(), NULL)) {
        log_warnx("relay: sink %s: queue %s full (when_full = drop_oldest): discarded the %llu "
                  "oldest records (%llu bytes)",
                  sink, qr->conf->s.name, (unsigned long long)n, (unsigned long long)bytes);
    }
}

void
hd_drop_oldest_serve(struct hd_queue_rt *qr, int loop_wake_fd, struct hd_held *held,
                     const char *sink, struct log_limit *warn)
{
    if (qr->drop_wake_fd < 0 || atomic_load(&qr->drop_need) == 0) {
        return;
    }
    for (int round = 0; round < DROP_ROUNDS; round++) {
        drain_eventfd(qr->drop_wake_fd);
        uint64_t need = atomic_exchange(&qr->drop_need, 0);
        if (need == 0) {
            /* Did the retry fail? The listener asks again at once. */
            struct pollfd pfd = {.fd = qr->drop_wake_fd, .events = POLLIN};
            if (poll(&pfd, 1, DROP_FOLLOWUP_MS) <= 0) {
                return;
            }
            drain_eventfd(qr->drop_wake_fd);
            need = atomic_exchange(&qr->drop_need, 0);
            if (need == 0) {
                return;
            }
        }
        drop_round(qr, need, held, sink, warn);
        uint64_t one = 1;
        ssize_t w = write(loop_wake_fd, &one, sizeof(one));
        (void)w;
    }
}
