/* SPDX-License-Identifier: MIT */
/* Signals: blocked in every thread, received by one sigwait thread and
 * turned into requests that main picks up from a pipe. */
#ifndef HOPPER_SRC_HOPPERD_SIGNALS_H
#define HOPPER_SRC_HOPPERD_SIGNALS_H

enum hd_request { HD_REQ_NONE = 0, HD_REQ_SHUTDOWN = 'T', HD_REQ_RELOAD = 'H' };

/* Block SIGTERM, SIGINT, SIGHUP, SIGUSR1 in the calling thread (so in every
 * thread created afterwards) and ignore SIGPIPE. main calls it first of
 * all, before reading the configuration. 0 or -errno. */
int hd_signals_block(void);
/* Start the sigwait thread (signals that arrived since hd_signals_block()
 * are pending and taken then). 0 or -errno. */
int hd_signals_start(void);
/* Wait for the next request (main thread). */
int hd_signals_next_request(void);

#endif
