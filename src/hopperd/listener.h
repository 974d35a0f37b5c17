/* SPDX-License-Identifier: MIT */
/* Ingress: every source's listening socket and connections in one epoll
 * loop on one thread; records are framed (framer.h) and handed to
 * hopper_send() with timeout 0, applying the queue's when_full policy. */
#ifndef HOPPER_SRC_HOPPERD_LISTENER_H
#define HOPPER_SRC_HOPPERD_LISTENER_H

#include <stddef.h>

struct hd_daemon;

/* Bind every source (main thread, before READY=1). 0 or -errno with err set. */
int hd_listener_open(struct hd_daemon *d, char *err, size_t errlen);
/* Start the listener thread. 0 or -errno. */
int hd_listener_start(struct hd_daemon *d);
/* Stop accepting, read what clients already sent, hand it to the queues
 * (blocked records get until half of shutdown_timeout), close every
 * connection and join the thread. */
void hd_listener_stop(struct hd_daemon *d);

#endif
