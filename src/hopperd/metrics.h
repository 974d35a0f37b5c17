/* SPDX-License-Identifier: MIT */
/* Prometheus text exposition (format 0.0.4) on metrics_listen: GET /metrics
 * is served by one small thread with its own epoll loop over at most 64
 * non-blocking connections, each with a 5 s deadline and an 8 KiB request
 * limit, so a slow or silent client delays no scrape, and never ingress
 * or egress. */
#ifndef HOPPER_SRC_HOPPERD_METRICS_H
#define HOPPER_SRC_HOPPERD_METRICS_H

#include <stddef.h>

struct hd_daemon;

/* Bind metrics_listen if configured (main thread). 0 or -errno with err. */
int hd_metrics_open(struct hd_daemon *d, char *err, size_t errlen);
int hd_metrics_start(struct hd_daemon *d);
void hd_metrics_stop(struct hd_daemon *d);
/* Render every metric into a malloc'd string (caller frees). 0 or -ENOMEM. */
int hd_metrics_render(struct hd_daemon *d, char **out, size_t *len);

#endif
