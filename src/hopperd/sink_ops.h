/* SPDX-License-Identifier: MIT */
/* The interface between relay.c and a sink in a module of its own. */
#ifndef HOPPER_SRC_HOPPERD_SINK_OPS_H
#define HOPPER_SRC_HOPPERD_SINK_OPS_H

#include <stddef.h>

struct hd_sink_rt;
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

#endif
