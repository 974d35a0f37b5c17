/* SPDX-License-Identifier: MIT */
/* Authorization of source clients (docs/SECURITY.md): the one place that
 * decides who may use a source and what a connection may do with it.
 *
 * A connection is judged twice:
 *   - at accept, by who the peer is (struct hd_peer, hd_auth_peer()): a
 *     unix source with allowed_uids or allowed_gids admits a peer whose
 *     kernel credentials (SO_PEERCRED, SO_PEERGROUPS) match one of them; a
 *     tcp peer has no identity hopperd can trust (an address is not one),
 *     so every tcp peer the listening address lets in is admitted;
 *   - per native request, by what it asks (hd_auth_queue()): `send` to the
 *     source's queues (`queue`, plus `queues`), `subscribe` only with
 *     allow_subscribe = on and to those same queues.
 *   - at the TLS handshake of a source with tls_allowed_peers, by the names
 *     of the client's verified certificate (hd_auth_tls_names(), called
 *     from inside the handshake through the context's identity check: see
 *     tls.h and tlsconf.c), so a client not on the list is refused before
 *     it takes part in anything;
 * the per-request rules are the same over TLS.
 *
 * Nothing here logs or counts: the listener does (loop.c, native.c). Pure
 * functions of the configuration and the peer, except hd_peer_read(). */
#ifndef HOPPER_SRC_HOPPERD_AUTH_H
#define HOPPER_SRC_HOPPERD_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct hd_source_conf;

enum hd_peer_kind { HD_PEER_TCP = 0, HD_PEER_UNIX = 1 };

#define HD_PEER_GROUPS 256 /* supplementary groups read per peer */

/* Who is at the other end of a connection, as far as hopperd can tell. */
struct hd_peer {
    int kind;          /* enum hd_peer_kind */
    int has_cred;      /* unix: uid, gid, pid were read */
    uint32_t uid, gid; /* unix: the peer's effective ids when it connected */
    int32_t pid;
    size_t ngroups;       /* unix: supplementary groups in groups[] */
    int groups_truncated; /* it has more than HD_PEER_GROUPS: none were read */
    uint32_t groups[HD_PEER_GROUPS];
};

/* Identify the peer of an accepted connection fd of a source whose peers
 * are of `kind`. For unix sockets it reads SO_PEERCRED, and with
 * want_groups also SO_PEERGROUPS. 0, or -errno when the credentials cannot
 * be read (then the peer must be refused). */
int hd_peer_read(int fd, int kind, int want_groups, struct hd_peer *p);
/* "uid 1000 gid 1000 pid 42", or "a tcp peer". */
void hd_peer_describe(const struct hd_peer *p, char *out, size_t outlen);
/* May peer p use the source configured by sc? 1 yes; 0 no, with the reason
 * in why. */
int hd_auth_peer(const struct hd_source_conf *sc, const struct hd_peer *p, char *why, size_t len);

/* tls_allowed_peers: may a client whose verified certificate carries
 * names[0..n) (subject CNs, DNS subjectAltNames) connect? `allowed` is the
 * list as stored ("a,b"; "" = any verified client). A name matches an
 * entry that equals it without regard to ASCII case; there are no
 * wildcards (a certificate name "*.example" matches only the entry
 * "*.example"). 1 yes; 0 no, with the reason in why. */
int hd_auth_tls_names(const char *allowed, const char *const *names, size_t n, char *why,
                      size_t len);

enum hd_auth_op { HD_AUTH_SEND = 0, HD_AUTH_SUBSCRIBE = 1 };

/* May a client of sc perform op (enum hd_auth_op) on queue number
 * queue_index of the configuration? 1 yes; 0 no, with a static reason in
 * *why. */
int hd_auth_queue(const struct hd_source_conf *sc, int queue_index, int op, const char **why);

#endif
