/* SPDX-License-Identifier: MIT */
/* Ingress: every source's listening socket and connections in one epoll
 * loop on one thread (the listener thread); records are framed (framer.h)
 * and handed to the queues (ingest.h), native requests answered
 * (native.h), native subscribers fed (subscribe.h). The thread's state is
 * struct hd_loop (loop_ctx.h), hung off the daemon. */
#ifndef HOPPER_SRC_HOPPERD_LOOP_H
#define HOPPER_SRC_HOPPERD_LOOP_H

#include <stddef.h>

struct hd_daemon;

/* Bind every source (main thread, before READY=1). 0 or -errno with err set. */
int hd_loop_open(struct hd_daemon *d, char *err, size_t errlen);
/* Create the loop state (d->loop) and start the listener thread. 0 or -errno. */
int hd_loop_start(struct hd_daemon *d);
/* Stop accepting, read what clients already sent, hand it to the queues
 * (blocked records get until half of shutdown_timeout), close every
 * connection, join the thread and free d->loop. Also closes the sources
 * when the thread never started. */
void hd_loop_stop(struct hd_daemon *d);

#endif
