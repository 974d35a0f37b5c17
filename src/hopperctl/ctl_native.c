/* SPDX-License-Identifier: MIT */
/* hopperctl send and recv: the native protocol (docs/PROTOCOL.md) over a
 * blocking socket.
 *
 * `send` sends batches of N stdin lines and waits for each reply, so when
 * it exits 0 every line was accepted by hopperd under the queue's
 * durability (3: some were dropped by policy). `recv` subscribes to a
 * queue that has no sink, prints each record as a line and acknowledges
 * what it printed (after fflush), so records are consumed at least once.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "netutil.h"
#include "proto.h"
#include "tls.h"
#include "wire.h"

/* Largest reply frame accepted from hopperd. */
#define CTL_MAX_FRAME (64u << 20)

/* Command-line options of send and recv (each accepts only its own). */
struct native_opts {
    const char *addr;          /* -a HOST:PORT */
    const char *upath;         /* -u PATH: a Unix socket instead */
    const char *queue;         /* -q QUEUE: NULL = the source's */
    long batch;                /* send -b: lines per batch */
    int wait_full;             /* send -w: retry batches refused as FULL */
    long long want;            /* recv -n: records to print, -1 = until EOF */
    unsigned long long window; /* recv -W: records in flight */
    /* TLS (any --tls* option turns it on): verify the source with tls_ca
     * (default: the system's trust store) for tls_server_name (default: the
     * host of -a); present tls_cert/tls_key when given. */
    int tls;
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
};

/* Long options of send and recv, for TLS (the letters are not enough). */
enum { OPT_TLS = 1000, OPT_TLS_CA, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_SERVER_NAME };
static const struct option tls_options[] = {
    {"tls", no_argument, NULL, OPT_TLS},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
    {NULL, 0, NULL, 0},
};

/* Parse the options in `optstring` (exits through ctl_usage() on a bad
 * one). */
static void
parse_opts(int argc, char **argv, const char *optstring, struct native_opts *o)
{
    *o = (struct native_opts){"127.0.0.1:7766", NULL, NULL, 100, 0, -1, 1000, 0, NULL, NULL, NULL,
                              NULL};
    int ch;
    while ((ch = getopt_long(argc, argv, optstring, tls_options, NULL)) != -1) {
        switch (ch) {
        case OPT_TLS:
            o->tls = 1;
            break;
        case OPT_TLS_CA:
            o->tls = 1;
            o->tls_ca = optarg;
            break;
        case OPT_TLS_CERT:
            o->tls = 1;
            o->tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o->tls = 1;
            o->tls_key = optarg;
            break;
        case OPT_TLS_SERVER_NAME:
            o->tls = 1;
            o->tls_server_name = optarg;
            break;
        case 'a':
            o->addr = optarg;
            break;
        case 'u':
            o->upath = optarg;
            break;
        case 'q':
            o->queue = optarg;
            break;
        case 'b':
            o->batch = strtol(optarg, NULL, 10);
            if (o->batch < 1 || o->batch > 100000) {
                ctl_usage();
            }
            break;
        case 'w':
            o->wait_full = 1;
            break;
        case 'n':
            o->want = strtoll(optarg, NULL, 10);
            if (o->want < 0) {
                ctl_usage();
            }
            break;
        case 'W':
            o->window = strtoull(optarg, NULL, 10);
            if (o->window == 0) {
                ctl_usage();
            }
            break;
        default:
            ctl_usage();
        }
    }
    if (o->tls && (o->upath != NULL || (o->tls_cert == NULL) != (o->tls_key == NULL))) {
        fprintf(stderr, "hopperctl: TLS needs -a (not -u), and --tls-cert with --tls-key\n");
        ctl_usage();
    }
}

/* Read some bytes, waiting as long as it takes: the count, 0 at EOF, -1 on
 * an error. */
static ssize_t
stream_read(struct hd_stream *st, void *p, size_t n)
{
    for (;;) {
        short wait;
        ssize_t r = hd_stream_recv(st, p, n, &wait);
        if (r != -EAGAIN && r != -EINTR) {
            return r < 0 ? -1 : r;
        }
        struct pollfd pfd = {.fd = st->fd, .events = wait};
        poll(&pfd, 1, -1);
    }
}

/* Read one frame into *buf (grown as needed) and move its payload to the
 * start. Returns the payload length, or -1. */
static long
read_frame(struct hd_stream *st, uint8_t **buf, size_t *cap)
{
    size_t have = 0;
    size_t want = HD_WIRE_HDR;
    while (have < want) {
        ssize_t r = stream_read(st, *buf + have, want - have);
        if (r <= 0) {
            return -1;
        }
        have += (size_t)r;
        size_t size;
        if (hd_wire_frame_size(*buf, have, CTL_MAX_FRAME, &size) < 0) {
            return -1;
        }
        if (size > want) {
            want = size;
            if (want > *cap) {
                uint8_t *nb = realloc(*buf, want);
                if (nb == NULL) {
                    return -1;
                }
                *buf = nb;
                *cap = want;
            }
        }
    }
    memmove(*buf, *buf + HD_WIRE_HDR, want - HD_WIRE_HDR);
    return (long)(want - HD_WIRE_HDR);
}

/* A command's connection to a native source. */
struct session {
    struct native_opts o;
    struct hd_stream st; /* fd, and over TLS the SSL object */
    uint8_t *buf; /* the last frame read (payload at the start) */
    size_t cap;
    uint64_t max_frame; /* from the source's hello */
};

/* Write the request frames in sb (then empty it) and read the reply frame
 * into ss->buf. Returns its length, or -1 when the connection failed. */
static long
exchange(struct session *ss, msgpack_sbuffer *sb)
{
    int wr = hd_stream_write_all(&ss->st, sb->data, sb->size, 0, NULL, NULL);
    msgpack_sbuffer_clear(sb);
    return wr < 0 ? -1 : read_frame(&ss->st, &ss->buf, &ss->cap);
}

/* Parse the command's options (`optstring`), connect to the native source
 * and read its hello. 0, or -1 after printing why (nothing to close). */
/* The TLS handshake over st->fd (a blocking socket), per the --tls*
 * options. 0, or -1 after printing why. */
static int
ctl_tls(const struct native_opts *o, struct hd_stream *st)
{
    signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(2) */
    struct hd_tls_settings ts = {
        .is_server = 0, .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca};
    int field;
    char err[HD_ERR_LEN];
    SSL_CTX *ctx = hd_tls_ctx_new(&ts, &field, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "hopperctl: %s\n", err);
        return -1;
    }
    char host[HD_ADDR_MAX], port[16];
    const char *name = o->tls_server_name;
    if (name == NULL) {
        if (hd_parse_addr(o->addr, host, sizeof(host), port, sizeof(port), err, sizeof(err)) < 0) {
            fprintf(stderr, "hopperctl: %s\n", err);
            SSL_CTX_free(ctx);
            return -1;
        }
        name = host;
    }
    int rc = hd_tls_connect(ctx, st->fd, name, 0, NULL, NULL, &st->ssl, err, sizeof(err));
    SSL_CTX_free(ctx);
    if (rc < 0) {
        fprintf(stderr, "hopperctl: %s: %s\n", o->addr, err);
        return -1;
    }
    return 0;
}

static int
open_native(int argc, char **argv, const char *optstring, struct session *ss)
{
    parse_opts(argc, argv, optstring, &ss->o);
    ss->cap = 1 << 16;
    ss->buf = NULL;
    ss->st.ssl = NULL;
    ss->st.fd = ctl_connect(ss->o.addr, ss->o.upath);
    if (ss->st.fd < 0) {
        return -1;
    }
    if (ss->o.tls && ctl_tls(&ss->o, &ss->st) < 0) {
        hd_stream_close(&ss->st, 1);
        return -1;
    }
    ss->buf = malloc(ss->cap);
    struct hd_msg hello;
    const char *why;
    long n = ss->buf != NULL ? read_frame(&ss->st, &ss->buf, &ss->cap) : -1;
    if (n < 0 || hd_proto_parse(ss->buf, (size_t)n, &hello, &why) < 0 ||
        hello.op != HD_OP_HELLO) {
        fprintf(stderr, "hopperctl: %s: not a native hopperd source%s\n",
                ss->o.upath ? ss->o.upath : ss->o.addr,
                ss->o.tls ? " (or it refused our certificate)" : "");
        hd_stream_close(&ss->st, 1);
        free(ss->buf);
        ss->buf = NULL;
        return -1;
    }
    ss->max_frame = hello.max_frame;
    return 0;
}

static void
close_native(struct session *ss)
{
    free(ss->buf);
    hd_stream_close(&ss->st, 0);
}

int
ctl_send(int argc, char **argv)
{
    struct session ss;
    if (open_native(argc, argv, "a:u:q:b:w", &ss) < 0) {
        return 1;
    }
    long batch = ss.o.batch;
    uint64_t max_frame = ss.max_frame;
    struct hd_msg m;
    const char *why;
    char **lines = calloc((size_t)batch, sizeof(*lines));
    struct hd_slice *sl = calloc((size_t)batch, sizeof(*sl));
    if (lines == NULL || sl == NULL) {
        fprintf(stderr, "hopperctl: out of memory\n");
        free(lines);
        free(sl);
        close_native(&ss);
        return 1;
    }
    unsigned long long accepted = 0, dropped = 0, id = 0;
    int status = 0;
    int eof = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    while (!eof && status == 0) {
        long k = 0;
        size_t bytes = 0;
        while (k < batch && bytes < max_frame / 2) {
            size_t lcap = 0;
            char *line = NULL;
            ssize_t got = getline(&line, &lcap, stdin);
            if (got < 0) {
                free(line);
                eof = 1;
                break;
            }
            if (got > 0 && line[got - 1] == '\n') {
                got--;
            }
            lines[k] = line;
            sl[k].p = (const uint8_t *)line;
            sl[k].n = (size_t)got;
            bytes += (size_t)got + 5;
            k++;
        }
        if (k == 0) {
            break;
        }
        for (;;) {
            hd_proto_put_send(&sb, ++id, ss.o.queue, sl, (size_t)k);
            long n = exchange(&ss, &sb);
            if (n < 0 || hd_proto_parse(ss.buf, (size_t)n, &m, &why) < 0 || m.id != id) {
                fprintf(stderr, "hopperctl: connection lost or bad reply\n");
                status = 1;
                break;
            }
            if (m.op == HD_OP_OK) {
                accepted += m.count;
                dropped += m.dropped;
                break;
            }
            if (m.code == HD_CODE_FULL && ss.o.wait_full) {
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            fprintf(stderr, "hopperctl: batch of %ld rejected: %s (%.*s)\n", k,
                    hd_code_name(m.code), (int)m.message.n,
                    m.message.p ? (const char *)m.message.p : "");
            status = 1;
            break;
        }
        for (long i = 0; i < k; i++) {
            free(lines[i]);
        }
    }
    fprintf(stderr, "hopperctl: %llu records accepted, %llu dropped by policy\n", accepted,
            dropped);
    msgpack_sbuffer_destroy(&sb);
    free(lines);
    free(sl);
    close_native(&ss);
    return status != 0 ? 1 : dropped > 0 ? 3 : 0;
}

int
ctl_recv(int argc, char **argv)
{
    struct session ss;
    if (open_native(argc, argv, "a:u:q:n:W:", &ss) < 0) {
        return 1;
    }
    long long want = ss.o.want;
    struct hd_msg m;
    const char *why;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    hd_proto_put_subscribe(&sb, 1, ss.o.queue, ss.o.window);
    long n = exchange(&ss, &sb);
    if (n < 0 || hd_proto_parse(ss.buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_OK) {
        if (n >= 0 && m.op == HD_OP_ERROR) {
            fprintf(stderr, "hopperctl: subscribe refused: %s (%.*s)\n", hd_code_name(m.code),
                    (int)m.message.n, m.message.p ? (const char *)m.message.p : "");
        } else {
            fprintf(stderr, "hopperctl: subscribe failed\n");
        }
        return 1;
    }
    long long got = 0;
    int status = 0;
    while (want < 0 || got < want) {
        n = read_frame(&ss.st, &ss.buf, &ss.cap);
        if (n < 0 || hd_proto_parse(ss.buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_RECORDS) {
            if (n >= 0 && m.op == HD_OP_ERROR) {
                fprintf(stderr, "hopperctl: error: %.*s\n", (int)m.message.n,
                        m.message.p ? (const char *)m.message.p : "");
            }
            status = n < 0 && want < 0 ? 0 : 1;
            break;
        }
        /* Sequence numbers within a frame are consecutive unless the queue
         * skipped damaged records; then only whole frames are acknowledged. */
        int consecutive = m.last - m.first + 1 == m.nrecords;
        size_t cur;
        struct hd_slice rec;
        uint64_t i = 0;
        hd_proto_records_begin(&m, &cur);
        while (i < m.nrecords && (want < 0 || got < want) &&
               hd_proto_next_record(ss.buf, (size_t)n, &cur, &rec) == 0) {
            fwrite(rec.p, 1, rec.n, stdout);
            fputc('\n', stdout);
            i++;
            got++;
        }
        if (fflush(stdout) != 0) {
            status = 1;
            break;
        }
        uint64_t ack = i == m.nrecords ? m.last : m.first + i - 1;
        if (i > 0 && (i == m.nrecords || consecutive) &&
            (hd_proto_put_ack(&sb, ack) < 0 ||
             hd_stream_write_all(&ss.st, sb.data, sb.size, 0, NULL, NULL) < 0)) {
            status = 1;
            break;
        }
        msgpack_sbuffer_clear(&sb);
    }
    /* Let the server process the last ack before the connection goes:
     * close our side (close_notify over TLS), read until it closes. */
    hd_stream_shutdown(&ss.st);
    while (read_frame(&ss.st, &ss.buf, &ss.cap) >= 0) {
    }
    msgpack_sbuffer_destroy(&sb);
    close_native(&ss);
    return status;
}
