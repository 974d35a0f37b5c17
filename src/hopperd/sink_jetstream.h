/* SPDX-License-Identifier: MIT */
/* The JetStream sink (type = jetstream): publishes each record of its queue
 * asynchronously with Nats-Msg-Id "<queue id>-<seq>" and acknowledges the
 * queue only up to the highest seq whose publish ack, and those of all
 * before it, arrived. relay.c drives it through struct hd_sink_ops. */
#ifndef HOPPER_SRC_HOPPERD_SINK_JETSTREAM_H
#define HOPPER_SRC_HOPPERD_SINK_JETSTREAM_H

#include "sink_ops.h"

extern const struct hd_sink_ops hd_sink_jetstream_ops;

/* Release nats.c's global state once every jetstream sink is destroyed
 * (hd_relay_stop, after joining the relay threads); waits up to 2 s for
 * its threads to end. */
void hd_sink_jetstream_cleanup(void);

#endif
