/* SPDX-License-Identifier: MIT */
/* SIGHUP: what a reload applies to the running daemon once the new config
 * loaded (main.c reload: load, diff, log level, then this). */
#ifndef HOPPER_SRC_HOPPERD_RELOAD_H
#define HOPPER_SRC_HOPPERD_RELOAD_H
#include <stddef.h>

struct hd_config;
struct hd_daemon;

/* Every sink that kept its name and type takes next's reloadable settings
 * (hd_relay_reload: address, timeouts; a reconnect or reopen). Returns how
 * many did. Main thread. */
size_t hd_reload_sinks(struct hd_daemon *d, const struct hd_config *next);

#endif
