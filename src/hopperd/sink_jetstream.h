/* SPDX-License-Identifier: MIT */
/* The JetStream sink (type = jetstream): publishes each record of its queue
 * asynchronously with Nats-Msg-Id "<queue id>-<seq>" and acknowledges the
 * queue only up to the highest seq whose publish ack, and those of all
 * before it, arrived. relay.c drives it through struct hd_sink_ops. */
#ifndef HOPPER_SRC_HOPPERD_SINK_JETSTREAM_H
#define HOPPER_SRC_HOPPERD_SINK_JETSTREAM_H

#include "relay.h"

extern const struct hd_sink_ops hd_sink_jetstream_ops;

#endif
