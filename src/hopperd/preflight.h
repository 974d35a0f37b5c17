/* SPDX-License-Identifier: MIT */
/* Preflight: what a start would hit that a loaded configuration does not
 * show by itself, found without binding a socket or creating a file, so
 * that `hopperd -n` reports it as well as a start does:
 *   - two listeners on one address: tcp sources and the metrics endpoint
 *     compared by the address each would bind (getaddrinfo's first passive
 *     result; a wildcard such as *:PORT = 0.0.0.0:PORT overlaps every
 *     address of its port), unix sources by their path;
 *   - a unix socket path that is another kind of file, or whose directory
 *     is missing or not writable;
 *   - a state_dir (or a queue's directory in it) that is not a directory or
 *     not writable, or that cannot be created where it is missing;
 *   - a jetstream sink's `creds` file that cannot be opened, or does not
 *     hold a user JWT and an nkey seed;
 *   - every TLS file: it exists and parses, each certificate matches its
 *     key, each CA bundle loads, no key is readable by group or others
 *     (tlsconf.h builds the contexts and frees them).
 * A listener that is not on a loopback address is a warning (anyone who can
 * reach the host may connect) unless it is a TLS source that requires
 * client certificates.
 * Access checks use access(2), so they judge by the real uid of the
 * process that runs them: run `-n` as the user hopperd runs as. */
#ifndef HOPPER_SRC_HOPPERD_PREFLIGHT_H
#define HOPPER_SRC_HOPPERD_PREFLIGHT_H

#include <stddef.h>

struct hd_config;

/* Receives one warning, a complete sentence without a trailing newline. */
typedef void hd_preflight_warn_fn(void *arg, const char *msg);

/* Check cfg against this host. 0, or -1 with "FILE:LINE: message" (LINE
 * omitted when no line applies) in err; stops at the first error. Each
 * warning goes to warn(arg, ...) when warn is not NULL. */
int hd_preflight(const struct hd_config *cfg, char *err, size_t errlen, hd_preflight_warn_fn *warn,
                 void *arg);

#endif
