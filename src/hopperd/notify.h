/* SPDX-License-Identifier: MIT */
/* Minimal sd_notify(3): one datagram to $NOTIFY_SOCKET, no libsystemd. */
#ifndef HOPPER_SRC_HOPPERD_NOTIFY_H
#define HOPPER_SRC_HOPPERD_NOTIFY_H

/* Send `state` (e.g. "READY=1"). 0 when sent, 1 when $NOTIFY_SOCKET is
 * unset (not under systemd), -errno on failure. */
int hd_notify(const char *state);

#endif
