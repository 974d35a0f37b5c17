/* SPDX-License-Identifier: MIT */
/* One client connection of a source, owned by the listener thread.
 *
 * All socket I/O of a connection happens in conn.c (hd_conn_read,
 * hd_conn_flush, accept's peer name, the final close), TLS included.
 *
 * TLS (a source with tls = on, hd_conn_start_tls()): the connection first
 * handshakes, driven by whichever of hd_conn_read() and hd_conn_flush()
 * the loop calls, waiting for what OpenSSL asks (readable, or writable:
 * tls_want_out); it stays on its source's silent list, so
 * handshake_timeout covers the handshake and the first record, and it
 * holds its slot, so handshakes count against max_connections. A failed
 * handshake or a bad record later is counted by reason and logged with the
 * peer's address (tls_fail(): once, as the connection closes at once).
 * After the handshake hd_conn_read() returns decrypted bytes and
 * hd_conn_flush() encrypts the replies (partial writes continue where they
 * stopped). OpenSSL may hold bytes that epoll cannot see (the rest of a
 * decrypted record, or whole records read ahead, tls.h): such a
 * connection goes on lp->tls_ready when it wants reading, and the loop
 * reads it without waiting. Closing sends close_notify unless the
 * connection failed.
 *
 * Each connection owns a read buffer that grows up to maxcap =
 * hd_framer_buffer_size() (one maximal frame; 128 KiB for a fast sender),
 * so a client can never make hopperd hold more than that, and max_connections
 * bounds the count per source (connlimit.h, which also times out silent and
 * idle connections). Native connections also stop reading while
 * HD_CONN_OUT_LIMIT bytes of replies are unwritten.
 *
 * States: READING -> BLOCKED (not reading, retried) -> READING; native
 * connections only flush after a malformed frame (CLOSING). Any -> closed at
 * EOF, error, malformed input or shutdown. hd_conn_sync_events() derives the
 * epoll interest from these flags in one place.
 *
 * Closing is the listener loop's (loop.c): functions here that find a
 * connection finished return -1 and leave the close to their caller.
 */
#ifndef HOPPER_SRC_HOPPERD_CONN_H
#define HOPPER_SRC_HOPPERD_CONN_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "framer.h"
#include "loop_ctx.h"
#include "tls.h"

struct hd_peer_conns;
struct hd_source_rt;

/* An `ok` reply in c->out held until the queue's next commit (commit.h):
 * out[off .. off+len) answers request `id`, records sent to queue `queue`
 * (index in d->queues). */
struct hd_defer {
    size_t off;
    size_t len;
    uint64_t id;
    uint32_t queue;
};

/* native: stop reading a client that does not read its replies */
#define HD_CONN_OUT_LIMIT (256u * 1024u)

struct hd_conn {
    struct hd_item it;   /* HD_IT_CONN */
    struct hd_subq *sub; /* native: the queue this connection consumes (subscribe.c), or NULL */
    int fd;
    struct hd_source_rt *src;
    struct hd_framer fr;
    uint8_t *buf; /* bytes read and not yet done with: buf[0..len) */
    size_t len, cap, maxcap;
    int read_filled;     /* the last read filled the buffer: the peer sends fast */
    int blocked;         /* waiting for queue space (retried by the loop) */
    int eof;             /* peer closed its side; finish the buffer, then close */
    int closing;         /* native: flush the replies, then close */
    int refusal_logged;  /* native: a FORBIDDEN reply was logged (once per connection) */
    uint32_t events;     /* epoll interest currently registered (0 = none) */
    msgpack_sbuffer out; /* native: replies not yet written */
    size_t outoff;       /* bytes of out already written */
    /* Group commit (commit.c): while ndefer > 0, out[held_from ..) waits for
     * the commit (held_from is defer[0].off; every reply after the first
     * held one waits too, so replies keep their order). */
    struct hd_defer *defer;
    size_t ndefer, defer_cap;
    size_t held_from;
    int on_commit; /* on lp->commit_conns */
    char peer[64];
    struct hd_conn *prev, *next; /* lp->conns */
    /* The slot it holds in its source (connlimit.h). */
    struct hd_peer_conns *owner;              /* its peer; NULL until admitted */
    uint64_t accept_ms;                 /* monotonic */
    uint64_t active_ms;                 /* accepted, or last active */
    int silent;                         /* no byte yet: on the silent list */
    struct hd_link links[HD_NLINKS];    /* enum hd_link_kind */
    /* TLS (NULL ssl: plaintext) */
    SSL *ssl;
    int tls_open;     /* the handshake completed */
    int tls_broken;   /* a TLS operation failed: no close_notify */
    int tls_eof;      /* the peer closed (close_notify or not): reads return 0 */
    int tls_want_out; /* the handshake or a read waits for writability */
    int tls_want_in;  /* a write waits for readability */
    int tls_read_dry; /* the last read wanted the socket: OpenSSL holds no whole record */
    int tls_ready;    /* on lp->tls_ready */
    char tls_note[HD_TLS_NOTE_LEN]; /* why the identity check refused it */
};

/* A connection accepted on fd for src, framing frames of up to max_record
 * bytes: linked into lp->conns and counted, not yet in epoll. NULL when out
 * of memory (the fd is then still the caller's). */
struct hd_conn *hd_conn_new(struct hd_loop *lp, int fd, struct hd_source_rt *src,
                            size_t max_record);
/* A source with tls = on: c handshakes first, with a TLS object made from
 * the source's current context. 0, or -1 (logged): close the connection. */
int hd_conn_start_tls(struct hd_conn *c);
/* Release c: leave epoll, close the socket (close_notify first over TLS), unlink, uncount, free. A
 * subscription must have been detached (hd_sub_detach) before. */
void hd_conn_free(struct hd_loop *lp, struct hd_conn *c);
/* Take c off lp->tls_ready (a no-op when it is not on it). */
void hd_conn_unready(struct hd_loop *lp, struct hd_conn *c);
/* Register exactly the epoll interest the connection's state calls for.
 * 0, or -1 (logged): close the connection. */
int hd_conn_sync_events(struct hd_loop *lp, struct hd_conn *c);
void hd_conn_set_blocked(struct hd_loop *lp, struct hd_conn *c, int blocked);
/* Write pending replies, then sync the epoll interest. 0, or -1 when the
 * connection is finished (a write failed, or it was closing and everything
 * is written): close it. */
int hd_conn_flush(struct hd_loop *lp, struct hd_conn *c);
/* One read into the buffer, after growing it as far as allowed (over TLS:
 * a step of the handshake first, while it lasts). Returns the bytes read
 * (> 0), 0 at EOF or on a read error (logged at debug level), -EAGAIN when
 * nothing is there, -ENOMEM (logged) or -EPROTO (a TLS failure, counted
 * and logged): close the connection. */
ssize_t hd_conn_read(struct hd_loop *lp, struct hd_conn *c);
/* The first n bytes of the buffer are done with. */
void hd_conn_consume(struct hd_conn *c, size_t n);

/* Reply bytes not yet written (held ones included). */
static inline size_t
hd_conn_unsent(const struct hd_conn *c)
{
    return c->out.size - c->outoff;
}

/* End of the reply bytes that may be written now: the held ones wait. */
static inline size_t
hd_conn_out_end(const struct hd_conn *c)
{
    return c->ndefer > 0 ? c->held_from : c->out.size;
}

#endif
