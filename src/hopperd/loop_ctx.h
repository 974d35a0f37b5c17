/* SPDX-License-Identifier: MIT */
/* The listener thread's state: one per daemon, created by hd_loop_start()
 * (loop.c) and passed by pointer to every module of the ingress loop, each
 * of which uses only the ones listed before it:
 *
 *   conn.c       one client connection: its buffers, its socket reads and
 *                writes, its epoll interest, its release
 *   connlimit.c  who holds a source's slots: per-peer counts, the order
 *                of last activity, the deadlines of the timeouts
 *   subscribe.c  native pull subscriptions: this thread consumes the queue
 *   commit.c     group commit (fsync = always, disk): replies held until
 *                the round's hopper_commit()
 *   ingest.c     records -> queue: the when_full policy and drop_oldest
 *   native.c     one native request frame -> its reply
 *   loop.c       the epoll loop, accept, framing a connection's input,
 *                closing connections, shutdown
 *
 * This header holds data only, so every one of them can include it without
 * depending on loop.c. Only the listener thread touches the state (main
 * creates it before the thread starts and frees it after the join), so
 * nothing here needs a lock.
 */
#ifndef HOPPER_SRC_HOPPERD_LOOP_CTX_H
#define HOPPER_SRC_HOPPERD_LOOP_CTX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "log.h"

struct hd_daemon;
struct hd_conn;
struct hd_lsock;
struct hd_slots;
struct hd_subq;

/* What an epoll event's data.ptr points at: the first member of each
 * registered object. */
enum hd_item_kind { HD_IT_WAKE, HD_IT_LISTEN, HD_IT_CONN };

struct hd_item {
    int kind; /* enum hd_item_kind */
};

/* Lists of connections threaded through the connections themselves
 * (connlimit.h; HD_LINK_READY: conn.c): a connection is on up to HD_NLINKS
 * of them at once, one hd_link each. */
enum hd_link_kind {
    HD_LINK_SOURCE = 0,
    HD_LINK_PEER,
    HD_LINK_SILENT,
    HD_LINK_READY,
    HD_LINK_COMMIT, /* lp->commit_conns (commit.h) */
    HD_NLINKS
};

struct hd_link {
    struct hd_conn *prev, *next;
};

struct hd_list {
    struct hd_conn *head, *tail;
};

struct hd_loop {
    struct hd_daemon *d;
    int epfd;
    pthread_t thread;
    int started;
    struct hd_item wake;     /* d->wake_fd: main and the relays wake the loop */
    struct hd_lsock *lsocks; /* one per source (loop.c) */
    uint64_t resume_ms;      /* when paused listening sockets rejoin epoll (loop.c) */
    size_t npaused;
    struct hd_conn *conns; /* every open connection (conn.c links and unlinks) */
    struct hd_slots *slots; /* one per source, d->sources order (connlimit.c) */
    size_t nblocked;       /* connections waiting for queue space (conn.c) */
    int stopping;          /* shutdown: read what is there, then close */
    int give_up;           /* shutdown deadline passed: waiting records are dropped */
    struct log_limit warn; /* one warning per second from this thread */
    struct hd_subq *subqs; /* one per queue (subscribe.c) */
    size_t nsubs;          /* attached subscribers */
    /* TLS connections that want reading while OpenSSL holds bytes it
     * decrypted (epoll cannot see those): loop.c reads them without
     * waiting (conn.c keeps the list, HD_LINK_READY). */
    struct hd_list tls_ready;
    /* Group commit (commit.c): connections holding replies for the next
     * commit, or whose replies a commit released and that still need a
     * flush (HD_LINK_COMMIT); the queues sent to since the last commit
     * (one flag per queue, d->queues order) and the last commit's results
     * (same order); payload bytes sent since. */
    struct hd_list commit_conns;
    unsigned char *commit_touched;
    int *commit_rc;
    size_t ncommit_touched;
    uint64_t commit_bytes;
};

/* The list operations: append c to l, remove c from l (it is on it). The
 * links are in struct hd_conn (conn.h), so these need it complete: they
 * are macros over any type with `links[]`. */
#define HD_LIST_APPEND(l, c, kind)                                                                 \
    do {                                                                                           \
        struct hd_link *k_ = &(c)->links[kind];                                                    \
        k_->prev = (l)->tail;                                                                      \
        k_->next = NULL;                                                                           \
        if ((l)->tail != NULL) {                                                                   \
            (l)->tail->links[kind].next = (c);                                                     \
        } else {                                                                                   \
            (l)->head = (c);                                                                       \
        }                                                                                          \
        (l)->tail = (c);                                                                           \
    } while (0)
#define HD_LIST_REMOVE(l, c, kind)                                                                 \
    do {                                                                                           \
        struct hd_link *k_ = &(c)->links[kind];                                                    \
        if (k_->prev != NULL) {                                                                    \
            k_->prev->links[kind].next = k_->next;                                                 \
        } else {                                                                                   \
            (l)->head = k_->next;                                                                  \
        }                                                                                          \
        if (k_->next != NULL) {                                                                    \
            k_->next->links[kind].prev = k_->prev;                                                 \
        } else {                                                                                   \
            (l)->tail = k_->prev;                                                                  \
        }                                                                                          \
        k_->prev = k_->next = NULL;                                                                \
    } while (0)

/* May the listener thread log a warning now? (log_limit_ok) */
static inline int
hd_loop_warn_ok(struct hd_loop *lp)
{
    return log_limit_ok(&lp->warn, hd_now_ms(), "listener");
}

#endif
