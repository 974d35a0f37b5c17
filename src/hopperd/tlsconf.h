/* SPDX-License-Identifier: MIT */
/* The TLS contexts of a configuration: one per source and sink with
 * tls = on, built from its tls_* directives with tls.h's policy, errors
 * reported as "FILE:LINE: message" at the directive at fault. The one way
 * contexts are made: `hopperd -n` (preflight.c) builds and frees them,
 * startup keeps them (main.c), SIGHUP builds a new set and swaps it in only
 * when every one of them built (a bad new certificate keeps the old ones). */
#ifndef HOPPER_SRC_HOPPERD_TLSCONF_H
#define HOPPER_SRC_HOPPERD_TLSCONF_H

#include <openssl/types.h>
#include <stddef.h>

struct hd_config;

/* src[i] for cfg->sources[i], sink[j] for cfg->sinks[j]: the context, or
 * NULL where tls = off. All or nothing: 0, or -1 with err set and every
 * entry NULL. */
int hd_tls_contexts_new(const struct hd_config *cfg, SSL_CTX **src, SSL_CTX **sink, char *err,
                        size_t errlen);
/* SSL_CTX_free() each of v[0..n) and set it to NULL. */
void hd_tls_contexts_free(SSL_CTX **v, size_t n);

#endif
