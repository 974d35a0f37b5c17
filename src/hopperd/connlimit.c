/* SPDX-License-Identifier: MIT */
/* Connection slots of the sources (see connlimit.h). */
#include "connlimit.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "daemon.h"

/* Hash buckets per source: max_connections / 4, within these bounds. */
#define MIN_BUCKETS 16u
#define MAX_BUCKETS 16384u

/* ---- lists ---- */

static void
list_append(struct hd_list *l, struct hd_conn *c, int kind)
{
    HD_LIST_APPEND(l, c, kind);
}

static void
list_remove(struct hd_list *l, struct hd_conn *c, int kind)
{
    HD_LIST_REMOVE(l, c, kind);
}

/* ---- peers ---- */

static uint64_t
mix64(uint64_t x)
{
    /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static size_t
bucket_of(const struct hd_slots *s, const struct hd_peer_key *key)
{
    uint64_t w[2];
    memcpy(w, key->addr, sizeof(w));
    uint64_t h = mix64(s->seed ^ key->family);
    h = mix64(h ^ w[0]);
    h = mix64(h ^ w[1]);
    return (size_t)h & (s->nbuckets - 1);
}

void
hd_peer_key_of(int fd, const struct sockaddr *sa, socklen_t len, struct hd_peer_key *key)
{
    memset(key, 0, sizeof(*key));
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        key->family = AF_INET;
        memcpy(key->addr, &sin->sin_addr, 4);
        return;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            key->family = AF_INET;
            memcpy(key->addr, sin6->sin6_addr.s6_addr + 12, 4);
        } else {
            key->family = AF_INET6;
            memcpy(key->addr, &sin6->sin6_addr, 16);
        }
        return;
    }
    /* A unix socket: the peer is the uid that connected. Without
     * credentials every such client shares one key (uid -1). */
    struct ucred cr;
    socklen_t crlen = sizeof(cr);
    uint32_t uid = UINT32_MAX;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0 && crlen == sizeof(cr)) {
        uid = (uint32_t)cr.uid;
    }
    key->family = AF_UNIX;
    memcpy(key->addr, &uid, sizeof(uid));
}

struct hd_peer_conns *
hd_slots_find(const struct hd_slots *s, const struct hd_peer_key *key)
{
    for (struct hd_peer_conns *p = s->buckets[bucket_of(s, key)]; p != NULL; p = p->next) {
        if (memcmp(&p->key, key, sizeof(*key)) == 0) {
            return p;
        }
    }
    return NULL;
}

/* ---- slots ---- */

int
hd_slots_init(struct hd_loop *lp)
{
    struct hd_daemon *d = lp->d;
    lp->slots = calloc(d->nsources ? d->nsources : 1, sizeof(*lp->slots));
    if (lp->slots == NULL) {
        return -ENOMEM;
    }
    /* Not a secret, only unknown to clients beforehand. */
    uint64_t seed = mix64(hd_now_ms() ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)lp);
    for (size_t i = 0; i < d->nsources; i++) {
        struct hd_slots *s = &lp->slots[i];
        s->src = &d->sources[i];
        s->seed = mix64(seed + i);
        s->nbuckets = MIN_BUCKETS;
        while (s->nbuckets < MAX_BUCKETS && s->nbuckets < s->src->conf->max_connections / 4) {
            s->nbuckets *= 2;
        }
        s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
        if (s->buckets == NULL) {
            return -ENOMEM;
        }
    }
    return 0;
}

void
hd_slots_free(struct hd_loop *lp)
{
    for (size_t i = 0; lp->slots != NULL && i < lp->d->nsources; i++) {
        assert(lp->slots[i].count == 0);
        free(lp->slots[i].buckets);
    }
    free(lp->slots);
    lp->slots = NULL;
}

struct hd_slots *
hd_slots_of(struct hd_loop *lp, const struct hd_source_rt *src)
{
    return &lp->slots[src - lp->d->sources];
}

int
hd_slots_admit(struct hd_slots *s, struct hd_conn *c, const struct hd_peer_key *key, uint64_t now)
{
    struct hd_peer_conns *p = hd_slots_find(s, key);
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL) {
            return -ENOMEM;
        }
        p->key = *key;
        size_t b = bucket_of(s, key);
        p->next = s->buckets[b];
        s->buckets[b] = p;
    }
    c->owner = p;
    c->accept_ms = now;
    c->active_ms = now;
    c->silent = 1;
    p->count++;
    s->count++;
    list_append(&s->lru, c, HD_LINK_SOURCE);
    list_append(&p->lru, c, HD_LINK_PEER);
    list_append(&s->silent, c, HD_LINK_SILENT);
    return 0;
}

void
hd_slots_leave(struct hd_slots *s, struct hd_conn *c)
{
    struct hd_peer_conns *p = c->owner;
    if (p == NULL) {
        return;
    }
    hd_slots_heard(s, c);
    list_remove(&s->lru, c, HD_LINK_SOURCE);
    list_remove(&p->lru, c, HD_LINK_PEER);
    c->owner = NULL;
    s->count--;
    if (--p->count > 0) {
        return;
    }
    struct hd_peer_conns **pp = &s->buckets[bucket_of(s, &p->key)];
    while (*pp != p) {
        pp = &(*pp)->next;
    }
    *pp = p->next;
    free(p);
}

void
hd_slots_touch(struct hd_slots *s, struct hd_conn *c, uint64_t now)
{
    c->active_ms = now;
    if (s->lru.tail != c) {
        list_remove(&s->lru, c, HD_LINK_SOURCE);
        list_append(&s->lru, c, HD_LINK_SOURCE);
    }
    if (c->owner->lru.tail != c) {
        list_remove(&c->owner->lru, c, HD_LINK_PEER);
        list_append(&c->owner->lru, c, HD_LINK_PEER);
    }
}

void
hd_slots_heard(struct hd_slots *s, struct hd_conn *c)
{
    if (c->silent) {
        list_remove(&s->silent, c, HD_LINK_SILENT);
        c->silent = 0;
    }
}

uint64_t
hd_slots_deadline(const struct hd_slots *s)
{
    const struct hd_source_conf *sc = s->src->conf;
    uint64_t due = UINT64_MAX;
    if (sc->handshake_timeout_ms > 0 && s->silent.head != NULL) {
        due = s->silent.head->accept_ms + sc->handshake_timeout_ms;
    }
    if (sc->idle_timeout_ms > 0 && s->lru.head != NULL &&
        s->lru.head->active_ms + sc->idle_timeout_ms < due) {
        due = s->lru.head->active_ms + sc->idle_timeout_ms;
    }
    return due;
}
