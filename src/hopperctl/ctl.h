/* SPDX-License-Identifier: MIT */
/* hopperctl: operator tool for hopperd, one file per command group:
 *
 *   ctl_main.c     main, usage, connecting to hopperd
 *   ctl_native.c   send, recv: a native producer and pull consumer
 *   ctl_stats.c    stats: the /metrics endpoint as a table
 *   ctl_offline.c  verify, dump, salvage: a stopped queue's files
 *
 * hopperctl links hopperd's codecs and socket helpers (hopperd_wire:
 * framer, proto, netutil) and libhopper, never the daemon itself.
 * Each command parses its options from argv[optind] on (optind = 2) and
 * returns the exit status; ctl_usage() exits 2.
 */
#ifndef HOPPER_SRC_HOPPERCTL_CTL_H
#define HOPPER_SRC_HOPPERCTL_CTL_H

_Noreturn void ctl_usage(void);
/* Connect to "host:port", or to the Unix socket upath when not NULL; a
 * blocking socket. -1 after printing why. */
int ctl_connect(const char *addr, const char *upath);

int ctl_send(int argc, char **argv);
int ctl_recv(int argc, char **argv);
int ctl_stats(int argc, char **argv);
int ctl_verify(int argc, char **argv);
int ctl_dump(int argc, char **argv);
int ctl_salvage(int argc, char **argv);

#endif
