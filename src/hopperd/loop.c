/* SPDX-License-Identifier: MIT */
/* The listener thread (see loop.h).
 *
 * One thread runs an epoll loop over the listening sockets, the client
 * connections (conn.h) and an eventfd (wake-up from main and the relays).
 * For each connection it reads (hd_conn_read), frames what is buffered
 * (conn_process) and hands lines/octet-counted records to the queue in
 * batches (ingest.h) or native frames to native.c, then writes replies
 * (hd_conn_flush). It alone closes connections (close_conn).
 *
 * Back-pressure (when_full = block, and drop_oldest while room is being
 * made): when the queue is full the record stays in the connection's
 * buffer, the connection leaves the epoll set (the kernel's socket buffer
 * fills and TCP pushes back on the client) and the loop retries every
 * RETRY_MS. Nothing is consumed from the buffer before the queue accepted
 * or dropped it.
 *
 * Slots (connlimit.h): a connection beyond max_connections, or beyond
 * max_connections_per_peer for its peer, takes the slot of the
 * longest-idle connection of the source, or of that peer; a connection
 * with no byte within handshake_timeout, or no whole frame or line within
 * idle_timeout, is closed. A connection waiting on hopperd (blocked on a
 * full queue, a subscriber with nothing to receive) is never idle. The
 * epoll_wait timeout is the nearest such deadline, and each expiry costs
 * O(1): the lists are kept in deadline order.
 *
 * Only this thread touches connections and struct hd_loop, so they need
 * no lock.
 */
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "commit.h"
#include "conn.h"
#include "connlimit.h"
#include "daemon.h"
#include "framer.h"
#include "ingest.h"
#include "log.h"
#include "loop_ctx.h"
#include "native.h"
#include "netutil.h"
#include "proto.h"
#include "subscribe.h"

#define RETRY_MS 10
#define EVENTS_MAX 64 /* per epoll_wait */
#define READS_PER_EVENT 8
/* Out of descriptors or memory: a level-triggered listening socket would
 * wake the loop forever, so it leaves epoll for ACCEPT_PAUSE_MS. */
#define ACCEPT_PAUSE_MS 100
/* Eviction looks at most this many connections waiting on hopperd (they
 * are not idle) before it gives up and refuses the new one. */
#define EVICT_SCAN 64

/* A source's listening socket in epoll. */
struct hd_lsock {
    struct hd_item it; /* HD_IT_LISTEN */
    struct hd_source_rt *src;
    int paused; /* out of epoll after EMFILE & co., until lp->resume_ms */
};

int
hd_loop_open(struct hd_daemon *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < d->nsources; i++) {
        struct hd_source_rt *s = &d->sources[i];
        char why[HD_ERR_LEN];
        int fd;
        if (s->conf->type == HD_SRC_TCP) {
            fd = hd_net_listen_tcp(s->conf->listen, why, sizeof(why));
        } else {
            fd = hd_net_listen_unix(s->conf->path, (mode_t)s->conf->mode, why, sizeof(why));
        }
        if (fd < 0) {
            snprintf(err, errlen, "source %s: %s", s->conf->s.name, why);
            return fd;
        }
        s->fd = fd;
        log_info("listener: source %s listening on %s (%s -> queue %s)", s->conf->s.name,
                 s->conf->type == HD_SRC_TCP ? s->conf->listen : s->conf->path,
                 hd_format_name(s->conf->format), s->queue->conf->s.name);
    }
    return 0;
}

static void
close_listeners(struct hd_daemon *d, int epfd)
{
    for (size_t i = 0; i < d->nsources; i++) {
        struct hd_source_rt *s = &d->sources[i];
        if (s->fd >= 0) {
            if (epfd >= 0) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
            }
            close(s->fd);
            s->fd = -1;
            if (s->conf->type == HD_SRC_UNIX) {
                unlink(s->conf->path);
            }
        }
    }
}

/* The only way a connection goes away. */
static void
close_conn(struct hd_loop *lp, struct hd_conn *c)
{
    hd_sub_detach(lp, c);
    hd_slots_leave(hd_slots_of(lp, c->src), c);
    hd_conn_free(lp, c);
}

/* Is c waiting on hopperd rather than on its client? Blocked on a full
 * queue, or a subscriber with nothing to receive (no record held for it:
 * the queue is empty): it is not idle, and neither the timeouts nor
 * eviction apply. A subscriber with records in flight is the client's
 * turn: it acknowledges, or it idles. */
static int
waits_on_us(const struct hd_conn *c)
{
    return c->blocked || (c->sub != NULL && c->sub->n == 0);
}

/* rc is what hd_conn_flush() or hd_conn_sync_events() returned for c: a
 * connection they found finished is closed. Returns -1 if it was. */
static int
keep_or_close(struct hd_loop *lp, struct hd_conn *c, int rc)
{
    if (rc < 0) {
        close_conn(lp, c);
        return -1;
    }
    return 0;
}

/* Frame and deliver what is buffered. Returns -1 if the connection was
 * closed, 0 otherwise. */
static int
conn_process(struct hd_loop *lp, struct hd_conn *c)
{
    struct hd_queue_rt *qr = c->src->queue;
    size_t off = 0;  /* bytes done with (delivered, dropped or skipped) */
    size_t scan = 0; /* bytes framed; records in [off, scan) wait in `batch` */
    struct hd_pending batch[HD_BATCH_MAX];
    size_t k = 0;
    int rc = HD_FRAME_NEED_MORE;
    int native = c->fr.format == HD_FMT_NATIVE;
    int whole = 0; /* a whole frame or line was framed */
    while (!c->blocked && !c->closing) {
        /* The client is slow to read its replies: hand the kernel what it
         * takes now, and stop only while the limit is still reached. Then
         * EPOLLOUT is registered, and its handler frames the rest once
         * the replies drain. Stopping with room to spare would leave
         * complete frames in the buffer and no event to come back for
         * them: the client, waiting for their replies, sends nothing
         * more (issue 11, fault 1). */
        if (native && hd_conn_unsent(c) >= HD_CONN_OUT_LIMIT) {
            if (keep_or_close(lp, c, hd_conn_flush(lp, c)) < 0) {
                return -1; /* the write failed: closed */
            }
            if (hd_conn_unsent(c) >= HD_CONN_OUT_LIMIT) {
                break;
            }
        }
        size_t consumed;
        const uint8_t *rec;
        size_t reclen;
        struct hd_framer saved = c->fr;
        rc = hd_framer_next(&c->fr, c->buf + scan, c->len - scan, &consumed, &rec, &reclen);
        whole |= rc == HD_FRAME_RECORD || rc == HD_FRAME_OVERSIZE;
        int batched = rc == HD_FRAME_RECORD && !native;
        if (batched) {
            scan += consumed;
            batch[k].p = rec;
            batch[k].len = reclen;
            batch[k].end = scan;
            k++;
        }
        if (batched ? k == HD_BATCH_MAX : k > 0) {
            if (!batched) {
                /* Deliver what is pending before this event: the framer
                 * state it changed is rolled back and the event framed
                 * again. */
                c->fr = saved;
            }
            int blocked = hd_ingest_batch(lp, qr, batch, k, &off);
            k = 0;
            if (blocked) {
                hd_conn_set_blocked(lp, c, 1);
                break;
            }
            continue;
        }
        if (batched) {
            continue;
        }
        if (rc == HD_FRAME_NEED_MORE || rc == HD_FRAME_BAD) {
            break;
        }
        if (rc == HD_FRAME_RECORD && hd_native_request(lp, c, rec, reclen) > 0) {
            hd_conn_set_blocked(lp, c, 1);
            break;
        }
        if (rc == HD_FRAME_OVERSIZE) {
            hd_ingest_count_drop(qr, HD_DROP_OVERSIZE, 1, 0);
            if (hd_loop_warn_ok(lp)) {
                log_warnx("listener: source %s: %s: record longer than %zu bytes dropped",
                          c->src->conf->s.name, c->peer, c->fr.max_record);
            }
        }
        scan += consumed;
        off = scan;
    }
    hd_conn_consume(c, off);
    /* Framing a record again while it waits for queue space is no news
     * from the client: only records done with count. */
    if (whole && off > 0) {
        hd_slots_touch(hd_slots_of(lp, c->src), c, hd_now_ms());
    }
    if (rc == HD_FRAME_BAD && !c->closing) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (hd_loop_warn_ok(lp)) {
            log_warnx("listener: source %s: %s: malformed %s frame, closing connection",
                      c->src->conf->s.name, c->peer, hd_format_name(c->fr.format));
        }
        if (!native) {
            close_conn(lp, c);
            return -1;
        }
        hd_native_reject(c, 0, HD_CODE_BAD_FRAME, "bad frame length");
        c->closing = 1;
    }
    if (c->closing) {
        return keep_or_close(lp, c, hd_conn_flush(lp, c));
    }
    if (c->blocked || !c->eof) {
        if (!c->blocked && c->len == c->cap && c->cap >= c->maxcap &&
            !(native && hd_conn_unsent(c) >= HD_CONN_OUT_LIMIT)) {
            /* Cannot happen: a full buffer always holds one whole frame. */
            log_warnx("listener: source %s: %s: framing stalled, closing", c->src->conf->s.name,
                      c->peer);
            close_conn(lp, c);
            return -1;
        }
        return keep_or_close(lp, c, native ? hd_conn_flush(lp, c) : hd_conn_sync_events(lp, c));
    }
    /* EOF and everything complete is delivered: the rest is a final line
     * without a newline (a record) or a truncated frame (malformed). */
    const uint8_t *rec;
    size_t reclen;
    rc = hd_framer_eof(&c->fr, c->buf, c->len, &rec, &reclen);
    if (rc == HD_FRAME_RECORD) {
        if (hd_ingest_record(lp, qr, rec, reclen) != 0) {
            hd_conn_set_blocked(lp, c, 1);
            return keep_or_close(lp, c, hd_conn_sync_events(lp, c));
        }
    } else if (rc == HD_FRAME_OVERSIZE) {
        hd_ingest_count_drop(qr, HD_DROP_OVERSIZE, 1, 0);
    } else if (rc == HD_FRAME_BAD) {
        atomic_fetch_add(&c->src->bad_frames, 1);
        if (hd_loop_warn_ok(lp)) {
            log_warnx("listener: source %s: %s: connection closed inside a frame",
                      c->src->conf->s.name, c->peer);
        }
    }
    c->len = 0;
    /* Replies still to write (the client may have shut down only its
     * sending side): flush them first. */
    c->closing = 1;
    return keep_or_close(lp, c, hd_conn_flush(lp, c));
}

/* The first bytes of a connection to a plaintext tcp source look like a
 * TLS handshake record (0x16, version 3.x): a TLS client at the wrong port.
 * Its ClientHello would otherwise become a record of binary garbage (lines)
 * or a bad frame: refuse it as such, counted as a bad frame and logged
 * with why. Returns 1 when c was closed. */
static int
tls_on_plaintext(struct hd_loop *lp, struct hd_conn *c)
{
    if (c->ssl != NULL || c->src->conf->type != HD_SRC_TCP || c->len < 3 || c->buf[0] != 0x16 ||
        c->buf[1] != 0x03 || c->buf[2] > 0x04) {
        return 0;
    }
    atomic_fetch_add(&c->src->bad_frames, 1);
    if (hd_loop_warn_ok(lp)) {
        log_warnx("listener: source %s: %s: a TLS handshake on a plaintext source (tls = off), "
                  "closing",
                  c->src->conf->s.name, c->peer);
    }
    close_conn(lp, c);
    return 1;
}

/* Read until EAGAIN (or `rounds` reads; 0 = no limit), processing as we go. */
static void
conn_readable(struct hd_loop *lp, struct hd_conn *c, int rounds)
{
    for (int i = 0; rounds == 0 || i < rounds; i++) {
        if (c->blocked || c->closing || c->eof) {
            return;
        }
        if (c->fr.format == HD_FMT_NATIVE && hd_conn_unsent(c) >= HD_CONN_OUT_LIMIT) {
            return;
        }
        ssize_t r = hd_conn_read(lp, c);
        if (r > 0 && c->silent && tls_on_plaintext(lp, c)) {
            return;
        }
        if (r > 0) {
            hd_slots_heard(hd_slots_of(lp, c->src), c);
            if (conn_process(lp, c) < 0) {
                return;
            }
            continue;
        }
        if (r == -EAGAIN) {
            if (lp->stopping) {
                /* Shutdown: what the client sent is read; a partial line
                 * left over is lost, and counted. */
                if (c->len > 0 && !c->fr.skipping_line && c->fr.skip_left == 0) {
                    hd_ingest_count_drop(c->src->queue, HD_DROP_SHUTDOWN, 1, 0);
                }
                c->len = 0;
                c->closing = 1;
                keep_or_close(lp, c, hd_conn_flush(lp, c));
            }
            return;
        }
        if (r == -ENOMEM || r == -EPROTO) {
            close_conn(lp, c);
            return;
        }
        c->eof = 1;
        /* conn_process() sees eof: it delivers the rest and closes, or
         * blocks on the last record and closes once it is accepted. */
        conn_process(lp, c);
        return;
    }
}

/* Authorization at accept (auth.h): a refused peer is closed before it
 * takes a slot, counted, and logged (rate-limited) with who and why. */
static int
peer_admitted(struct hd_loop *lp, struct hd_source_rt *src, int fd)
{
    const struct hd_source_conf *sc = src->conf;
    struct hd_peer peer;
    char why[HD_ERR_LEN];
    int rc = hd_peer_read(fd, sc->type == HD_SRC_UNIX ? HD_PEER_UNIX : HD_PEER_TCP,
                          sc->allowed_gids.n > 0, &peer);
    if (rc == 0 && hd_auth_peer(sc, &peer, why, sizeof(why))) {
        return 1;
    }
    if (rc < 0) {
        snprintf(why, sizeof(why), "its credentials could not be read: %s", strerror(-rc));
    }
    atomic_fetch_add(&src->conns_forbidden, 1);
    if (hd_loop_warn_ok(lp)) {
        char who[96];
        hd_peer_describe(&peer, who, sizeof(who));
        log_warnx("listener: source %s: refused %s: %s", sc->s.name, who, why);
    }
    return 0;
}

/* The longest-idle connection of `list` (n connections linked by `kind`:
 * a source's or a peer's) that may be evicted, or NULL. Those waiting on
 * hopperd that it meets on the way are active, and go last. */
static struct hd_conn *
evictable(struct hd_slots *s, const struct hd_list *list, size_t n, uint64_t now)
{
    for (size_t i = 0; i < n && i < EVICT_SCAN && list->head != NULL; i++) {
        struct hd_conn *c = list->head;
        if (!waits_on_us(c)) {
            return c;
        }
        hd_slots_touch(s, c, now);
    }
    return NULL;
}

/* Room for one more connection of peer `key`: at max_connections_per_peer
 * that peer's longest-idle connection goes, else at max_connections the
 * source's. 0, or -1 when every candidate waits on hopperd (refuse). */
static int
make_room(struct hd_loop *lp, struct hd_slots *s, const struct hd_peer_key *key, uint64_t now)
{
    const struct hd_source_conf *sc = s->src->conf;
    struct hd_peer_conns *p = hd_slots_find(s, key);
    struct hd_conn *victim;
    const char *limit;
    if (sc->max_conns_per_peer > 0 && p != NULL && p->count >= sc->max_conns_per_peer) {
        victim = evictable(s, &p->lru, p->count, now);
        limit = "max_connections_per_peer";
    } else if (s->count >= sc->max_connections) {
        victim = evictable(s, &s->lru, s->count, now);
        limit = "max_connections";
    } else {
        return 0;
    }
    if (victim == NULL) {
        atomic_fetch_add(&s->src->conns_rejected, 1);
        if (hd_loop_warn_ok(lp)) {
            log_warnx("listener: source %s: %s reached and every connection waits on the "
                      "queue, refusing",
                      sc->s.name, limit);
        }
        return -1;
    }
    atomic_fetch_add(&s->src->conns_evicted, 1);
    if (hd_loop_warn_ok(lp)) {
        log_warnx("listener: source %s: %s reached: closing %s, idle for %llu ms", sc->s.name,
                  limit, victim->peer, (unsigned long long)(now - victim->active_ms));
    }
    close_conn(lp, victim);
    return 0;
}

static void
accept_all(struct hd_loop *lp, struct hd_lsock *ls)
{
    struct hd_source_rt *src = ls->src;
    struct hd_slots *slots = hd_slots_of(lp, src);
    int native = src->conf->format == HD_FMT_NATIVE;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        int fd = accept4(src->fd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (hd_loop_warn_ok(lp)) {
                    log_warn("listener: source %s: accept (pausing %d ms)", src->conf->s.name,
                             ACCEPT_PAUSE_MS);
                }
                epoll_ctl(lp->epfd, EPOLL_CTL_DEL, src->fd, NULL);
                ls->paused = 1;
                lp->npaused++;
                lp->resume_ms = hd_now_ms() + ACCEPT_PAUSE_MS;
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && hd_loop_warn_ok(lp)) {
                log_warn("listener: source %s: accept", src->conf->s.name);
            }
            return;
        }
        if (!peer_admitted(lp, src, fd)) {
            close(fd);
            continue;
        }
        struct hd_peer_key key;
        hd_peer_key_of(fd, (struct sockaddr *)&ss, sslen, &key);
        uint64_t now = hd_now_ms();
        if (make_room(lp, slots, &key, now) < 0) {
            close(fd);
            continue;
        }
        struct hd_conn *c =
            hd_conn_new(lp, fd, src,
                        native ? hd_native_max_frame(src)
                               : (size_t)src->queue->conf->max_record_bytes);
        if (c == NULL) {
            log_warnx("listener: source %s: out of memory, refusing connection", src->conf->s.name);
            close(fd);
            continue;
        }
        if (hd_slots_admit(slots, c, &key, now) < 0) {
            log_warnx("listener: source %s: out of memory, refusing connection", src->conf->s.name);
            close_conn(lp, c);
            continue;
        }
        /* TLS: the handshake runs in the connection's events, holding the
         * slot just taken (handshake_timeout applies). */
        if (src->conf->tls.enabled && hd_conn_start_tls(c) < 0) {
            close_conn(lp, c);
            continue;
        }
        if (native && hd_native_hello(c) < 0) {
            close_conn(lp, c);
            continue;
        }
        keep_or_close(lp, c, native ? hd_conn_flush(lp, c) : hd_conn_sync_events(lp, c));
    }
}

/* End of a round: commit the group-commit queues sent to (commit.h) and
 * write the replies that waited for it. A connection that stopped framing
 * because its held replies reached HD_CONN_OUT_LIMIT frames the rest now
 * (nothing else would come back for it); what that sends is committed at
 * the end of the next round, which then does not wait in epoll_wait
 * (hd_commit_pending). */
static void
commit_round(struct hd_loop *lp)
{
    if (!hd_commit_pending(lp)) {
        return;
    }
    hd_commit_now(lp);
    struct hd_conn *c;
    while ((c = hd_commit_pop(lp)) != NULL) {
        if (keep_or_close(lp, c, hd_conn_flush(lp, c)) < 0) {
            continue;
        }
        if (c->len > 0 && !c->blocked && !c->closing && c->fr.format == HD_FMT_NATIVE &&
            hd_conn_unsent(c) < HD_CONN_OUT_LIMIT) {
            conn_process(lp, c);
        }
    }
}

static void
retry_blocked(struct hd_loop *lp)
{
    struct hd_conn *next;
    for (struct hd_conn *c = lp->conns; c != NULL; c = next) {
        next = c->next;
        if (!c->blocked) {
            continue;
        }
        hd_conn_set_blocked(lp, c, 0);
        conn_process(lp, c);
    }
}

static void
shutdown_phase(struct hd_loop *lp)
{
    close_listeners(lp->d, lp->epfd);
    lp->stopping = 1;
    uint64_t deadline = hd_now_ms() + lp->d->cfg->shutdown_timeout_ms / 2;
    while (lp->conns != NULL) {
        struct hd_conn *next;
        for (struct hd_conn *c = lp->conns; c != NULL; c = next) {
            next = c->next;
            if (c->closing || c->eof) {
                keep_or_close(lp, c, hd_conn_flush(lp, c));
            } else if (!c->blocked) {
                conn_readable(lp, c, 64);
            }
        }
        if (lp->conns == NULL) {
            break;
        }
        if (hd_now_ms() >= deadline) {
            lp->give_up = 1;
        }
        retry_blocked(lp);
        commit_round(lp);
        if (lp->give_up) {
            while (lp->conns != NULL) {
                struct hd_conn *c = lp->conns;
                if (c->len > 0) {
                    hd_ingest_count_drop(c->src->queue, HD_DROP_SHUTDOWN, 1, 0);
                }
                close_conn(lp, c);
            }
            break;
        }
        struct timespec ts = {0, RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* What the last pass sent (the connections are gone): durable, and
     * visible to the sinks that drain next. */
    commit_round(lp);
}

/* Paused listening sockets rejoin epoll once ACCEPT_PAUSE_MS passed. */
static void
resume_listeners(struct hd_loop *lp)
{
    for (size_t i = 0; i < lp->d->nsources; i++) {
        struct hd_lsock *ls = &lp->lsocks[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ls->it};
        if (ls->paused && ls->src->fd >= 0 &&
            epoll_ctl(lp->epfd, EPOLL_CTL_ADD, ls->src->fd, &ev) == 0) {
            ls->paused = 0;
            lp->npaused--;
        }
    }
}

static void
time_out(struct hd_loop *lp, struct hd_conn *c, int kind, uint64_t quiet_ms)
{
    atomic_fetch_add(&c->src->conn_timeouts[kind], 1);
    if (hd_loop_warn_ok(lp)) {
        log_warnx("listener: source %s: %s: %s for %llu ms, closing", c->src->conf->s.name, c->peer,
                  kind != HD_TIMEOUT_HANDSHAKE ? "no whole frame or line"
                  : c->ssl != NULL && !c->tls_open ? "TLS handshake not finished"
                                                   : "nothing received",
                  (unsigned long long)quiet_ms);
    }
    close_conn(lp, c);
}

/* Close the connections of every source whose handshake_timeout or
 * idle_timeout ran out by `now`; returns the next deadline (UINT64_MAX:
 * none). Each list is in deadline order, so this stops at the first
 * connection not due; one waiting on hopperd is touched instead (at most
 * once per idle_timeout). */
static uint64_t
expire_conns(struct hd_loop *lp, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < lp->d->nsources; i++) {
        struct hd_slots *s = &lp->slots[i];
        const struct hd_source_conf *sc = s->src->conf;
        struct hd_conn *c;
        while (sc->handshake_timeout_ms > 0 && (c = s->silent.head) != NULL &&
               c->accept_ms + sc->handshake_timeout_ms <= now) {
            time_out(lp, c, HD_TIMEOUT_HANDSHAKE, now - c->accept_ms);
        }
        for (size_t n = s->count; n > 0 && sc->idle_timeout_ms > 0 && (c = s->lru.head) != NULL &&
                                  c->active_ms + sc->idle_timeout_ms <= now;
             n--) {
            if (waits_on_us(c)) {
                hd_slots_touch(s, c, now);
            } else {
                time_out(lp, c, HD_TIMEOUT_IDLE, now - c->active_ms);
            }
        }
        uint64_t due = hd_slots_deadline(s);
        next = due < next ? due : next;
    }
    return next;
}

/* TLS connections whose decrypted bytes wait inside OpenSSL, where epoll
 * cannot see them: read each of those listed now once (one read round may
 * list it again, for the next pass). */
static void
read_tls_ready(struct hd_loop *lp)
{
    size_t k = 0;
    for (struct hd_conn *c = lp->tls_ready.head; c != NULL; c = c->links[HD_LINK_READY].next) {
        k++;
    }
    struct hd_conn *c;
    while (k-- > 0 && (c = lp->tls_ready.head) != NULL) {
        hd_conn_unready(lp, c);
        conn_readable(lp, c, READS_PER_EVENT);
    }
}

static void *
loop_main(void *arg)
{
    struct hd_loop *lp = arg;
    struct epoll_event evs[EVENTS_MAX];
    uint64_t due = UINT64_MAX; /* the next timeout of a connection */
    for (;;) {
        int timeout = lp->nblocked > 0 || lp->nsubs > 0 ? RETRY_MS : -1;
        if (lp->tls_ready.head != NULL || hd_commit_pending(lp)) {
            timeout = 0;
        }
        uint64_t now = hd_now_ms();
        if (lp->npaused > 0) {
            int left = lp->resume_ms > now ? (int)(lp->resume_ms - now) : 0;
            timeout = timeout < 0 || left < timeout ? left : timeout;
        }
        if (due != UINT64_MAX) {
            int left = due <= now ? 0 : due - now > INT_MAX ? INT_MAX : (int)(due - now);
            timeout = timeout < 0 || left < timeout ? left : timeout;
        }
        int n = epoll_wait(lp->epfd, evs, EVENTS_MAX, timeout);
        if (n < 0 && errno != EINTR) {
            fatal("listener: epoll_wait");
        }
        /* Connection events first, listening sockets after: accepting may
         * evict a connection, which must not have an event further on in
         * this batch (and a connection closed here must not be looked at
         * again, so the listening sockets are noted on the way). */
        struct hd_lsock *ready[EVENTS_MAX];
        size_t nready = 0;
        for (int i = 0; i < n; i++) {
            struct hd_item *it = evs[i].data.ptr;
            if (it->kind == HD_IT_LISTEN) {
                ready[nready++] = (struct hd_lsock *)it;
            } else if (it->kind == HD_IT_WAKE) {
                uint64_t v;
                ssize_t r = read(lp->d->wake_fd, &v, sizeof(v));
                (void)r;
            } else if (it->kind == HD_IT_CONN) {
                /* Connections are closed only by their own events within
                 * this pass, so `c` is alive here; each fd appears once. */
                struct hd_conn *c = (struct hd_conn *)it;
                if (evs[i].events & EPOLLOUT) {
                    if (keep_or_close(lp, c, hd_conn_flush(lp, c)) < 0) {
                        continue;
                    }
                    if (c->len > 0 && !c->blocked) {
                        if (conn_process(lp, c) < 0) {
                            continue;
                        }
                    }
                }
                /* TLS: OpenSSL may have waited for writability to read (a
                 * handshake step, an alert to send): read again too. */
                if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
                    c->ssl != NULL) {
                    conn_readable(lp, c, READS_PER_EVENT);
                }
            }
        }
        read_tls_ready(lp);
        for (size_t i = 0; i < nready; i++) {
            accept_all(lp, ready[i]);
        }
        due = expire_conns(lp, hd_now_ms());
        if (lp->nblocked > 0) {
            retry_blocked(lp);
        }
        /* Before the subscribers: they get what this round committed. */
        commit_round(lp);
        for (size_t i = 0; lp->nsubs > 0 && i < lp->d->nqueues; i++) {
            struct hd_conn *c = hd_sub_pump(lp, &lp->subqs[i]);
            if (c != NULL) {
                keep_or_close(lp, c, hd_conn_flush(lp, c));
            }
        }
        if (lp->npaused > 0 && hd_now_ms() >= lp->resume_ms) {
            resume_listeners(lp);
        }
        if (atomic_load(&lp->d->listener_stop)) {
            shutdown_phase(lp);
            return NULL;
        }
    }
}

int
hd_loop_start(struct hd_daemon *d)
{
    struct hd_loop *lp = calloc(1, sizeof(*lp));
    if (lp == NULL) {
        return -ENOMEM;
    }
    lp->d = d;
    lp->epfd = -1;
    d->loop = lp;
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lp->epfd < 0) {
        return -errno;
    }
    lp->wake.kind = HD_IT_WAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lp->wake};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, d->wake_fd, &ev) < 0) {
        return -errno;
    }
    lp->lsocks = calloc(d->nsources ? d->nsources : 1, sizeof(*lp->lsocks));
    if (lp->lsocks == NULL || hd_sub_init(lp) < 0 || hd_slots_init(lp) < 0 ||
        hd_commit_init(lp) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < d->nsources; i++) {
        lp->lsocks[i].it.kind = HD_IT_LISTEN;
        lp->lsocks[i].src = &d->sources[i];
        struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &lp->lsocks[i].it};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, d->sources[i].fd, &lev) < 0) {
            return -errno;
        }
    }
    int rc = pthread_create(&lp->thread, NULL, loop_main, lp);
    if (rc != 0) {
        return -rc;
    }
    lp->started = 1;
    return 0;
}

void
hd_loop_stop(struct hd_daemon *d)
{
    struct hd_loop *lp = d->loop;
    atomic_store(&d->listener_stop, 1);
    uint64_t one = 1;
    ssize_t r = write(d->wake_fd, &one, sizeof(one));
    (void)r;
    if (lp != NULL && lp->started) {
        pthread_join(lp->thread, NULL);
        lp->started = 0;
    } else {
        close_listeners(d, lp != NULL ? lp->epfd : -1);
    }
    if (lp == NULL) {
        return;
    }
    if (lp->epfd >= 0) {
        close(lp->epfd);
    }
    free(lp->lsocks);
    hd_sub_free(lp);
    hd_slots_free(lp);
    hd_commit_free(lp);
    free(lp);
    d->loop = NULL;
}
