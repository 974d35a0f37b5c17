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

/* Start one thread per sink. 0 or -errno (threads already started keep
 * running; hd_relay_stop() joins them). */
int hd_relay_start(struct hd_daemon *d);
/* Drain (keep delivering while the sink is up and the queue has records,
 * until deadline_ms on the monotonic clock), then stop and join every
 * relay thread. A batch written but not acknowledged is delivered again
 * after the next start (at-least-once). */
void hd_relay_stop(struct hd_daemon *d, uint64_t deadline_ms);
/* SIGHUP: take the reloadable settings of `nc` (address, timeouts; for
 * jetstream sinks servers, creds, user, password, token) and reconnect (tcp
 * and jetstream, when they changed) or reopen the file (file sinks, for log
 * rotation). */
void hd_relay_reload(struct hd_sink_rt *s, const struct hd_sink_conf *nc);

/* Exposed for tests: the sink state machine's transition table. */
int hd_sink_transition_allowed(int from, int to);
/* Next backoff delay: min(max, min * 2^attempt), then jittered into
 * [delay/2, delay]; `rng` is xorshift state. */
uint64_t hd_backoff_delay(uint64_t min_ms, uint64_t max_ms, unsigned attempt, uint64_t *rng);

#endif
