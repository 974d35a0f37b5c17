/* SPDX-License-Identifier: MIT */
/* Client connections (see conn.h). */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "netutil.h"

#define INITIAL_BUF (16u * 1024u)
/* A fast sender's buffer grows to this, so that one read, one
 * hopper_send_batch() and (disk mode) one write carry many records. */
#define READ_BUF_MAX (128u * 1024u)

static void
peer_name(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    snprintf(out, outlen, "unix");
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        return;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%u", host, ntohs(sin6->sin6_port));
    }
}

struct hd_conn *
hd_conn_new(struct hd_loop *lp, int fd, struct hd_source_rt *src, size_t max_record)
{
    struct hd_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    hd_framer_init(&c->fr, src->conf->format, max_record);
    c->maxcap = hd_framer_buffer_size(&c->fr);
    c->cap = c->maxcap < INITIAL_BUF ? c->maxcap : INITIAL_BUF;
    c->buf = malloc(c->cap);
    if (c->buf == NULL) {
        free(c);
        return NULL;
    }
    msgpack_sbuffer_init(&c->out);
    c->it.kind = HD_IT_CONN;
    c->fd = fd;
    c->src = src;
    peer_name(fd, c->peer, sizeof(c->peer));
    c->next = lp->conns;
    if (lp->conns != NULL) {
        lp->conns->prev = c;
    }
    lp->conns = c;
    atomic_fetch_add(&src->conns_active, 1);
    atomic_fetch_add(&src->conns_total, 1);
    log_debug("listener: source %s: connection from %s", src->conf->s.name, c->peer);
    return c;
}

int
hd_conn_start_tls(struct hd_conn *c)
{
    struct hd_source_rt *src = c->src;
    pthread_mutex_lock(&src->tls_mu);
    ERR_clear_error();
    c->ssl = SSL_new(src->tls_ctx); /* takes a reference: a reload cannot free it */
    pthread_mutex_unlock(&src->tls_mu);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        ERR_clear_error();
        log_warnx("listener: source %s: %s: out of memory for TLS, closing", src->conf->s.name,
                  c->peer);
        return -1;
    }
    hd_tls_note_set(c->ssl, c->tls_note);
    SSL_set_accept_state(c->ssl);
    return 0;
}

/* Put c on lp->tls_ready (OpenSSL holds bytes for it). */
static void
mark_ready(struct hd_loop *lp, struct hd_conn *c)
{
    if (!c->tls_ready) {
        HD_LIST_APPEND(&lp->tls_ready, c, HD_LINK_READY);
        c->tls_ready = 1;
    }
}

void
hd_conn_unready(struct hd_loop *lp, struct hd_conn *c)
{
    if (c->tls_ready) {
        HD_LIST_REMOVE(&lp->tls_ready, c, HD_LINK_READY);
        c->tls_ready = 0;
    }
}

/* A TLS failure on c: counted by kind, logged with the peer (rate-limited
 * like every warning of this thread); the caller closes c. */
static void
tls_fail(struct hd_loop *lp, struct hd_conn *c, int kind, const char *why)
{
    c->tls_broken = 1;
    atomic_fetch_add(&c->src->tls_failures[kind], 1);
    if (hd_loop_warn_ok(lp)) {
        log_warnx("listener: source %s: %s: TLS %s [%s]: %s", c->src->conf->s.name, c->peer,
                  c->tls_open ? "connection failed" : "handshake refused",
                  hd_tls_fail_names[kind], why);
    }
}

/* One step of the handshake. 0 (c->tls_open says whether it completed),
 * or -1: it failed (counted and logged unless the client left without a
 * byte); close c. */
static int
tls_handshake(struct hd_loop *lp, struct hd_conn *c)
{
    int st = hd_tls_accept_step(c->ssl);
    c->tls_want_out = st == HD_TLS_IO_WANT_WRITE;
    c->tls_read_dry = st == HD_TLS_IO_WANT_READ;
    if (st == HD_TLS_IO_WANT_READ || st == HD_TLS_IO_WANT_WRITE) {
        return 0;
    }
    if (st == HD_TLS_IO_DONE) {
        c->tls_open = 1;
        atomic_fetch_add(&c->src->tls_handshakes, 1);
        if (log_getlevel() >= HD_LOG_DEBUG) {
            char sum[256];
            hd_tls_summary(c->ssl, sum, sizeof(sum));
            log_debug("listener: source %s: %s: TLS %s", c->src->conf->s.name, c->peer, sum);
        }
        return 0;
    }
    if (st == HD_TLS_IO_EOF && BIO_number_read(SSL_get_rbio(c->ssl)) == 0) {
        /* Connected and left without a byte (a port probe): no TLS client. */
        c->tls_broken = 1;
        log_debug("listener: source %s: %s: closed before the TLS handshake",
                  c->src->conf->s.name, c->peer);
        return -1;
    }
    char why[HD_ERR_LEN];
    int kind = HD_TLS_FAIL_HANDSHAKE;
    if (st == HD_TLS_IO_EOF) {
        snprintf(why, sizeof(why), "the client closed the connection during the handshake");
    } else {
        kind = hd_tls_classify(c->ssl, why, sizeof(why));
    }
    tls_fail(lp, c, kind, why);
    return -1;
}

/* TLS: decrypt into p[0..n). As hd_conn_read() returns. */
static ssize_t
tls_read(struct hd_loop *lp, struct hd_conn *c, uint8_t *p, size_t n)
{
    if (c->tls_broken) {
        return -EPROTO; /* counted when it broke */
    }
    if (c->tls_eof) {
        return 0; /* OpenSSL would call a second read after an unclean end an error */
    }
    if (!c->tls_open) {
        if (tls_handshake(lp, c) < 0) {
            return -EPROTO;
        }
        if (!c->tls_open) {
            return hd_conn_sync_events(lp, c) < 0 ? -EPROTO : -EAGAIN;
        }
        /* native: the hello waits in c->out for the handshake. */
        if (hd_conn_unsent(c) > 0 && hd_conn_flush(lp, c) < 0) {
            return -EPROTO;
        }
    }
    if (c->tls_want_in) {
        c->tls_want_in = 0;
        if (hd_conn_flush(lp, c) < 0) {
            return -EPROTO;
        }
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    int st = hd_tls_io_status(c->ssl, r);
    c->tls_read_dry = st == HD_TLS_IO_WANT_READ;
    int want_out = st == HD_TLS_IO_WANT_WRITE;
    if (want_out != c->tls_want_out) {
        c->tls_want_out = want_out;
        if (hd_conn_sync_events(lp, c) < 0) {
            return -EPROTO;
        }
    }
    switch (st) {
    case HD_TLS_IO_DONE:
        return r;
    case HD_TLS_IO_WANT_READ:
    case HD_TLS_IO_WANT_WRITE:
        return -EAGAIN;
    case HD_TLS_IO_EOF:
        c->tls_eof = 1;
        return 0;
    default: {
        char why[HD_ERR_LEN];
        hd_tls_describe(c->ssl, why, sizeof(why));
        tls_fail(lp, c, HD_TLS_FAIL_RECORD, why);
        return -EPROTO;
    }
    }
}

/* TLS: encrypt what the replies buffer holds from c->outoff to `end`. 0
 * (all written, or the socket is full), or -EPIPE when the connection
 * failed. */
static int
tls_send_some(struct hd_conn *c, size_t end)
{
    while (c->outoff < end) {
        size_t n = end - c->outoff;
        ERR_clear_error();
        errno = 0;
        int w = SSL_write(c->ssl, c->out.data + c->outoff, n > INT_MAX ? INT_MAX : (int)n);
        int st = hd_tls_io_status(c->ssl, w);
        if (st == HD_TLS_IO_DONE) {
            c->outoff += (size_t)w;
            continue;
        }
        if (st == HD_TLS_IO_WANT_WRITE) {
            return 0; /* EPOLLOUT: replies are pending */
        }
        if (st == HD_TLS_IO_WANT_READ) {
            c->tls_want_in = 1;
            return 0;
        }
        c->tls_broken = 1;
        ERR_clear_error();
        return -EPIPE;
    }
    return 0;
}

void
hd_conn_free(struct hd_loop *lp, struct hd_conn *c)
{
    if (c->blocked) {
        lp->nblocked--;
    }
    hd_conn_unready(lp, c);
    if (c->on_commit) {
        /* Held replies die with the connection; the commit still runs for
         * the queue (its records were sent). */
        HD_LIST_REMOVE(&lp->commit_conns, c, HD_LINK_COMMIT);
        c->on_commit = 0;
    }
    free(c->defer);
    if (c->events != 0) {
        epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    }
    struct hd_stream st = {c->fd, c->ssl};
    hd_stream_close(&st, !c->tls_open || c->tls_broken);
    atomic_fetch_sub(&c->src->conns_active, 1);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        lp->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    log_debug("listener: source %s: %s closed", c->src->conf->s.name, c->peer);
    msgpack_sbuffer_destroy(&c->out);
    free(c->buf);
    free(c);
}

int
hd_conn_sync_events(struct hd_loop *lp, struct hd_conn *c)
{
    uint32_t want = 0;
    size_t pending = hd_conn_unsent(c);
    if (c->ssl != NULL && !c->tls_open) {
        /* Handshaking: nothing to write of ours yet, only OpenSSL's. */
        want = EPOLLIN | EPOLLRDHUP | (c->tls_want_out ? EPOLLOUT : 0);
    } else {
        if (!c->blocked && !c->eof && !c->closing && pending < HD_CONN_OUT_LIMIT) {
            want |= EPOLLIN | EPOLLRDHUP;
        }
        /* Replies held for a commit are not writable yet: the commit
         * flushes them (commit.h). */
        if (hd_conn_out_end(c) > c->outoff || c->tls_want_out) {
            want |= EPOLLOUT;
        }
        if (c->tls_want_in) {
            want |= EPOLLIN | EPOLLRDHUP;
        }
        /* OpenSSL holds the rest of a decrypted record (SSL_pending), or
         * records it read ahead (SSL_has_pending) that no read since has
         * found incomplete: epoll will not report those. A partial record
         * alone (the last read wanted the socket) needs more from the
         * socket, which epoll does report: listing it would spin. */
        if (c->ssl != NULL && (want & EPOLLIN) &&
            (SSL_pending(c->ssl) > 0 || (!c->tls_read_dry && SSL_has_pending(c->ssl)))) {
            mark_ready(lp, c);
        }
    }
    if (want == c->events) {
        return 0;
    }
    struct epoll_event ev = {.events = want, .data.ptr = &c->it};
    int rc;
    if (want == 0) {
        rc = epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    } else if (c->events == 0) {
        rc = epoll_ctl(lp->epfd, EPOLL_CTL_ADD, c->fd, &ev);
    } else {
        rc = epoll_ctl(lp->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (rc < 0) {
        log_warn("listener: epoll_ctl");
        return -1;
    }
    c->events = want;
    return 0;
}

void
hd_conn_set_blocked(struct hd_loop *lp, struct hd_conn *c, int blocked)
{
    if (c->blocked == blocked) {
        return;
    }
    c->blocked = blocked;
    if (blocked) {
        lp->nblocked++;
    } else {
        lp->nblocked--;
    }
}

int
hd_conn_flush(struct hd_loop *lp, struct hd_conn *c)
{
    if (c->ssl != NULL && !c->tls_open) {
        if (tls_handshake(lp, c) < 0) {
            return -1;
        }
        if (!c->tls_open) {
            return c->closing ? -1 : hd_conn_sync_events(lp, c);
        }
    }
    size_t end = hd_conn_out_end(c);
    int rc = c->ssl != NULL ? tls_send_some(c, end)
                            : hd_net_send_some(c->fd, c->out.data, end, &c->outoff);
    if (rc < 0) {
        log_debug("listener: source %s: %s: write: %s", c->src->conf->s.name, c->peer,
                  strerror(-rc));
        return -1;
    }
    if (c->outoff == c->out.size) {
        msgpack_sbuffer_clear(&c->out);
        c->outoff = 0;
        if (c->closing) {
            return -1;
        }
    }
    return hd_conn_sync_events(lp, c);
}

/* A TCP client that has been read dry gets its ACK now, not after the
 * delayed-ACK timer. A client that leaves Nagle on (most syslog senders
 * do) holds each small write until the previous one is acknowledged; when
 * its writes are all about the same size, the kernel's heuristic sees no
 * "pushed" segment and delays the ACK by up to 40 ms, so records waited
 * that long before hopperd even saw them (the peers harness's latency
 * scenario: p50 13 ms at 10k records/s). TCP_QUICKACK is not sticky, so
 * it is set after every read that did not fill the buffer (a sender
 * fast enough to fill it keeps full segments in flight and needs no
 * help). */
static void
quick_ack(struct hd_conn *c)
{
    if (c->read_filled || c->src->conf->type != HD_SRC_TCP) {
        return;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

ssize_t
hd_conn_read(struct hd_loop *lp, struct hd_conn *c)
{
    size_t limit = c->maxcap;
    if (c->read_filled && limit < READ_BUF_MAX) {
        limit = READ_BUF_MAX;
    }
    if ((c->len == c->cap || c->read_filled) && c->cap < limit) {
        size_t ncap = c->cap * 2 < limit ? c->cap * 2 : limit;
        uint8_t *nb = realloc(c->buf, ncap);
        if (nb == NULL) {
            log_warnx("listener: source %s: %s: out of memory, closing", c->src->conf->s.name,
                      c->peer);
            return -ENOMEM;
        }
        c->buf = nb;
        c->cap = ncap;
    }
    if (c->ssl != NULL) {
        /* One TLS record at most per SSL_read(): fill the buffer as one
         * read(2) would. */
        size_t got = 0;
        ssize_t r = -EAGAIN;
        while (c->len + got < c->cap &&
               (r = tls_read(lp, c, c->buf + c->len + got, c->cap - c->len - got)) > 0) {
            got += (size_t)r;
        }
        if (got == 0) {
            return r;
        }
        c->read_filled = c->len + got == c->cap;
        c->len += got;
        quick_ack(c);
        return (ssize_t)got;
    }
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r > 0) {
            c->read_filled = (size_t)r == c->cap - c->len;
            c->len += (size_t)r;
            quick_ack(c);
            return r;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return -EAGAIN;
        }
        if (r < 0) {
            log_debug("listener: source %s: %s: read: %s", c->src->conf->s.name, c->peer,
                      strerror(errno));
        }
        return 0;
    }
}

void
hd_conn_consume(struct hd_conn *c, size_t n)
{
    if (n > 0) {
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
    }
}
