/* SPDX-License-Identifier: MIT */
/* Small shared pieces of the daemon runtime (see daemon.h). */
#include "daemon.h"

const char *const hd_drop_cause_names[HD_DROP_NCAUSES] = {
    "full", "drop_oldest", "oversize", "queue_failed", "shutdown", "rejected_downstream",
};

const char *const hd_timeout_names[HD_TIMEOUT_NKINDS] = {
    [HD_TIMEOUT_HANDSHAKE] = "handshake",
    [HD_TIMEOUT_IDLE] = "idle",
};

const char *const hd_sink_state_names[HD_SINK_NSTATES] = {
    "idle", "connecting", "established", "draining", "closing", "backoff", "stopped",
};

const char *const hd_pub_cause_names[HD_PUB_NCAUSES] = {
    "timeout", "no_responders", "stream_full", "auth", "connect", "other",
};

const uint64_t hd_pub_bucket_ms[HD_PUB_NBUCKETS] = {1,   2,   5,    10,   25,   50,
                                                     100, 250, 500, 1000, 2500, 5000};
