/* SPDX-License-Identifier: MIT */
/* Client connections (see conn.h). */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

void
hd_conn_free(struct hd_loop *lp, struct hd_conn *c)
{
    if (c->blocked) {
        lp->nblocked--;
    }
    if (c->events != 0) {
        epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    }
    close(c->fd);
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
    if (!c->blocked && !c->eof && !c->closing && pending < HD_CONN_OUT_LIMIT) {
        want |= EPOLLIN | EPOLLRDHUP;
    }
    if (pending > 0) {
        want |= EPOLLOUT;
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
    int rc = hd_net_send_some(c->fd, c->out.data, c->out.size, &c->outoff);
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

ssize_t
hd_conn_read(struct hd_conn *c)
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
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r > 0) {
            c->read_filled = (size_t)r == c->cap - c->len;
            c->len += (size_t)r;
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
