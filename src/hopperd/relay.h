/* SPDX-License-Identifier: MIT */
/* Egress: one relay thread per sink takes records from its queue
 * (hopper_recv), writes them to the sink and acknowledges them in the queue
 * (hopper_ack) only after the write succeeded. */
#ifndef HOPPER_SRC_HOPPERD_RELAY_H
#define HOPPER_SRC_HOPPERD_RELAY_H

#include <stddef.h>
#include <stdint.h>

struct hd_daemon;
struct hd_sink_rt;
struct hd_sink_conf;
struct hd_held;

/* A sink driven by its own module (sink_jetstream.c) rather than by
 * relay.c's socket/file code. relay.c keeps the state machine: it calls
 * connect in CONNECTING, step in ESTABLISHED, disconnect in CLOSING, and
 * backs off between attempts. The sink keeps the records it received and
 * has not acknowledged across reconnects (they are sent again). All calls
 * come from the sink's relay thread. */
struct hd_sink_ops {
    /* Allocate the sink's state. 0 or -errno. */
    int (*create)(struct hd_sink_rt *s, void **out);
    /* Connect. 0, or -errno / a negative code with `err` filled and *cause
     * set to an enum hd_pub_cause. */
    int (*connect)(void *impl, char *err, size_t errlen, int *cause);
    /* One round: take records from the queue (waiting up to wait_ms for the
     * first when nothing is in flight), publish, acknowledge the acked
     * prefix. HD_STEP_BUSY (records in flight or sent), HD_STEP_IDLE
     * (nothing in flight and the queue gave nothing), or < 0 on failure
     * (err, *cause filled): the relay closes and backs off. */
    int (*step)(void *impl, int wait_ms, char *err, size_t errlen, int *cause);
    /* Drop the connection; records in flight are kept to be sent again. */
    void (*disconnect)(void *impl);
    /* Records received and not acknowledged (for drop_oldest and logs). */
    void (*held)(void *impl, struct hd_held *h);
    /* drop_oldest discarded what held() reported. */
    void (*discard_held)(void *impl);
    void (*destroy)(void *impl);
};
#define HD_STEP_BUSY 1
#define HD_STEP_IDLE 0

/* Start one thread per sink. 0 or -errno (threads already started keep
 * running; hd_relay_stop() joins them). */
int hd_relay_start(struct hd_daemon *d);
/* Drain (keep delivering while the sink is up and the queue has records,
 * until deadline_ms on the monotonic clock), then stop and join every
 * relay thread. A batch written but not acknowledged is delivered again
 * after the next start (at-least-once). */
void hd_relay_stop(struct hd_daemon *d, uint64_t deadline_ms);
/* SIGHUP: take the reloadable settings of `nc` (address, timeouts) and
 * reconnect (tcp) or reopen the file (file sinks, for log rotation). */
void hd_relay_reload(struct hd_sink_rt *s, const struct hd_sink_conf *nc);

/* Exposed for tests: the sink state machine's transition table. */
int hd_sink_transition_allowed(int from, int to);
/* Next backoff delay: min(max, min * 2^attempt), then jittered into
 * [delay/2, delay]; `rng` is xorshift state. */
uint64_t hd_backoff_delay(uint64_t min_ms, uint64_t max_ms, unsigned attempt, uint64_t *rng);

#endif
