/* SPDX-License-Identifier: MIT */
/* Who holds a source's connection slots: the bookkeeping behind
 * max_connections, max_connections_per_peer, handshake_timeout and
 * idle_timeout. Listener thread only.
 *
 * A peer is the client's address for a tcp source (an IPv4-mapped IPv6
 * address counts as the IPv4 one) and its uid (SO_PEERCRED) for a unix
 * source. Every admitted connection is on three lists of its source,
 * linked through hd_conn.links:
 *   HD_LINK_SOURCE  all of the source's connections, least recently
 *                   active first (active: accepted, or a whole frame or
 *                   line read, or found waiting on hopperd);
 *   HD_LINK_PEER    the same for its peer's connections;
 *   HD_LINK_SILENT  until its first byte: in order of arrival.
 * So the longest-idle connection of a source or of a peer, the next idle
 * expiry and the next handshake expiry are each the head of a list: every
 * operation here is O(1) but the peer lookup (one hash chain; the hash is
 * seeded per process so a client cannot pick colliding addresses ahead).
 *
 * What may be evicted or timed out (a connection waiting on hopperd is
 * not idle) is loop.c's decision; this module only keeps the order.
 */
#ifndef HOPPER_SRC_HOPPERD_CONNLIMIT_H
#define HOPPER_SRC_HOPPERD_CONNLIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop_ctx.h"

struct hd_conn;
struct hd_source_rt;

struct hd_peer_key {
    uint32_t family;  /* AF_INET, AF_INET6, or AF_UNIX (addr holds the uid) */
    uint8_t addr[16]; /* unused bytes are zero, so keys compare with memcmp */
};

struct hd_peer_conns {
    struct hd_peer_key key;
    size_t count;         /* connections it holds; freed at 0 */
    struct hd_list lru;   /* its connections, HD_LINK_PEER */
    struct hd_peer_conns *next; /* hash chain */
};

struct hd_slots {
    struct hd_source_rt *src;
    size_t count;          /* connections admitted */
    struct hd_list lru;    /* HD_LINK_SOURCE */
    struct hd_list silent; /* HD_LINK_SILENT */
    struct hd_peer_conns **buckets;
    size_t nbuckets; /* a power of two */
    uint64_t seed;
};

/* lp->slots: one hd_slots per source. 0 or -ENOMEM. */
int hd_slots_init(struct hd_loop *lp);
/* Free lp->slots; every connection has left before. */
void hd_slots_free(struct hd_loop *lp);
/* The slots of source src. */
struct hd_slots *hd_slots_of(struct hd_loop *lp, const struct hd_source_rt *src);

/* The peer of a connection accepted on fd from sa[0..len). */
void hd_peer_key_of(int fd, const struct sockaddr *sa, socklen_t len, struct hd_peer_key *key);
/* The peer `key` of s, or NULL when it holds no connection. */
struct hd_peer_conns *hd_slots_find(const struct hd_slots *s, const struct hd_peer_key *key);

/* c, just accepted at `now`, takes a slot: last on the LRU lists and on
 * the silent list. 0, or -ENOMEM (c is then on no list). */
int hd_slots_admit(struct hd_slots *s, struct hd_conn *c, const struct hd_peer_key *key,
                   uint64_t now);
/* c gives its slot back (a no-op when it was never admitted). */
void hd_slots_leave(struct hd_slots *s, struct hd_conn *c);
/* c was active at `now`: it goes last on its LRU lists. */
void hd_slots_touch(struct hd_slots *s, struct hd_conn *c, uint64_t now);
/* c sent its first byte: it leaves the silent list. */
void hd_slots_heard(struct hd_slots *s, struct hd_conn *c);
/* When the head of s's silent list runs out of handshake_timeout, or the
 * head of its LRU out of idle_timeout, whichever comes first; UINT64_MAX
 * when neither is due (empty lists, or the timeout is 0). */
uint64_t hd_slots_deadline(const struct hd_slots *s);

#endif
