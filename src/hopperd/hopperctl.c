/* SPDX-License-Identifier: MIT */
/* hopperctl: operator tool for hopperd.
 *
 *   hopperctl stats [-m HOST:PORT]              metrics as a readable table
 *   hopperctl send  [-a HOST:PORT | -u PATH] [-q QUEUE] [-b N] [-w]
 *                                               stdin lines -> native records
 *   hopperctl recv  [-a HOST:PORT | -u PATH] [-q QUEUE] [-n COUNT] [-W WINDOW]
 *                                               native subscription -> stdout lines
 *
 * `send` speaks the native protocol (docs/PROTOCOL.md): it sends batches of
 * N lines and waits for each reply, so when it exits 0 every line was
 * accepted by hopperd under the queue's durability. `recv` subscribes to a
 * queue that has no sink, prints each record as a line and acknowledges
 * what it printed (after fflush), so records are consumed at least once.
 * verify/dump/salvage need on-disk access beyond the public libhopper API
 * and are not implemented.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "netutil.h"
#include "proto.h"

static void
usage(void)
{
    fprintf(stderr, "usage: hopperctl stats [-m HOST:PORT]\n"
                    "       hopperctl send [-a HOST:PORT | -u PATH] [-q QUEUE] [-b N] [-w]\n"
                    "       hopperctl recv [-a HOST:PORT | -u PATH] [-q QUEUE] [-n COUNT] "
                    "[-W WINDOW]\n");
    exit(2);
}

static int
connect_to(const char *addr, const char *upath)
{
    char err[HD_ERR_LEN];
    if (upath != NULL) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        if (fd < 0 || strlen(upath) >= sizeof(sun.sun_path)) {
            fprintf(stderr, "hopperctl: %s: bad socket path\n", upath);
            return -1;
        }
        memcpy(sun.sun_path, upath, strlen(upath) + 1);
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            fprintf(stderr, "hopperctl: connect %s: %s\n", upath, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    int fd = hd_net_connect(addr, 5000, NULL, NULL, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "hopperctl: %s\n", err);
        return -1;
    }
    /* The helper returns a non-blocking socket; this tool blocks. */
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one frame; returns payload length or -1. */
static long
read_frame(int fd, uint8_t **buf, size_t *cap)
{
    size_t have = 0;
    size_t want = HD_PROTO_HDR;
    while (have < want) {
        ssize_t r = recv(fd, *buf + have, want - have, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        have += (size_t)r;
        if (have == HD_PROTO_HDR && want == HD_PROTO_HDR) {
            uint32_t len;
            hd_proto_frame_len(*buf, have, &len);
            if (len == 0 || len > (64u << 20)) {
                return -1;
            }
            want = HD_PROTO_HDR + len;
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
    memmove(*buf, *buf + HD_PROTO_HDR, want - HD_PROTO_HDR);
    return (long)(want - HD_PROTO_HDR);
}

static int
cmd_send(int argc, char **argv)
{
    const char *addr = "127.0.0.1:7766";
    const char *upath = NULL;
    const char *queue = NULL;
    long batch = 100;
    int wait_full = 0;
    int ch;
    while ((ch = getopt(argc, argv, "a:u:q:b:w")) != -1) {
        switch (ch) {
        case 'a':
            addr = optarg;
            break;
        case 'u':
            upath = optarg;
            break;
        case 'q':
            queue = optarg;
            break;
        case 'b':
            batch = strtol(optarg, NULL, 10);
            if (batch < 1 || batch > 100000) {
                usage();
            }
            break;
        case 'w':
            wait_full = 1;
            break;
        default:
            usage();
        }
    }
    int fd = connect_to(addr, upath);
    if (fd < 0) {
        return 1;
    }
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    struct hd_msg m;
    const char *why;
    long n = read_frame(fd, &buf, &cap);
    if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_HELLO) {
        fprintf(stderr, "hopperctl: %s: not a native hopperd source\n", upath ? upath : addr);
        return 1;
    }
    uint64_t max_frame = m.max_frame;
    char **lines = calloc((size_t)batch, sizeof(*lines));
    size_t *lens = calloc((size_t)batch, sizeof(*lens));
    struct hd_slice *sl = calloc((size_t)batch, sizeof(*sl));
    unsigned long long accepted = 0, dropped = 0, id = 0;
    int status = 0;
    int eof = 0;
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
            lens[k] = (size_t)got;
            sl[k].p = (const uint8_t *)line;
            sl[k].n = (size_t)got;
            bytes += (size_t)got + 5;
            k++;
        }
        if (k == 0) {
            break;
        }
        for (;;) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            hd_proto_put_send(&sb, ++id, queue, sl, (size_t)k);
            int wr = write_all(fd, sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
            n = wr < 0 ? -1 : read_frame(fd, &buf, &cap);
            if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.id != id) {
                fprintf(stderr, "hopperctl: connection lost or bad reply\n");
                status = 1;
                break;
            }
            if (m.op == HD_OP_OK) {
                accepted += m.count;
                dropped += m.dropped;
                break;
            }
            const char *code = m.code > 0 && m.code < HD_CODE_NCODES ? hd_code_names[m.code] : "?";
            if (m.code == HD_CODE_FULL && wait_full) {
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
            fprintf(stderr, "hopperctl: batch of %ld rejected: %s (%.*s)\n", k, code,
                    (int)m.message.n, m.message.p ? (const char *)m.message.p : "");
            status = 1;
            break;
        }
        for (long i = 0; i < k; i++) {
            free(lines[i]);
        }
    }
    fprintf(stderr, "hopperctl: %llu records accepted, %llu dropped by policy\n", accepted,
            dropped);
    free(lines);
    free(lens);
    free(sl);
    free(buf);
    close(fd);
    return status != 0 ? 1 : dropped > 0 ? 3 : 0;
}

/* ---- stats ---- */

struct sample {
    char name[96];
    char labels[256];
    double value;
};

static const char *
label(const char *labels, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "%s=\"", key);
    const char *p = strstr(labels, pat);
    out[0] = '\0';
    if (p != NULL) {
        p += strlen(pat);
        const char *e = strchr(p, '"');
        if (e != NULL) {
            snprintf(out, outlen, "%.*s", (int)(e - p), p);
        }
    }
    return out;
}

static double
find(const struct sample *s, size_t n, const char *name, const char *key, const char *val,
     const char *key2, const char *val2)
{
    double sum = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        char v[128];
        if (strcmp(s[i].name, name) != 0) {
            continue;
        }
        if (key != NULL && strcmp(label(s[i].labels, key, v, sizeof(v)), val) != 0) {
            continue;
        }
        if (key2 != NULL && strcmp(label(s[i].labels, key2, v, sizeof(v)), val2) != 0) {
            continue;
        }
        sum += s[i].value;
        found = 1;
    }
    return found ? sum : -1;
}

static int
cmd_stats(int argc, char **argv)
{
    const char *addr = "127.0.0.1:9466";
    int ch;
    while ((ch = getopt(argc, argv, "m:")) != -1) {
        if (ch == 'm') {
            addr = optarg;
        } else {
            usage();
        }
    }
    int fd = connect_to(addr, NULL);
    if (fd < 0) {
        return 1;
    }
    static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    write_all(fd, req, sizeof(req) - 1);
    size_t cap = 1 << 16, len = 0;
    char *body = malloc(cap);
    ssize_t r;
    while ((r = recv(fd, body + len, cap - len - 1, 0)) > 0) {
        len += (size_t)r;
        if (cap - len < 2) {
            cap *= 2;
            body = realloc(body, cap);
        }
    }
    close(fd);
    body[len] = '\0';
    char *p = strstr(body, "\r\n\r\n");
    if (p == NULL || strncmp(body, "HTTP/1.0 200", 12) != 0) {
        fprintf(stderr, "hopperctl: %s: bad metrics response\n", addr);
        return 1;
    }
    size_t ns = 0, scap = 256;
    struct sample *s = malloc(scap * sizeof(*s));
    for (char *line = strtok(p + 4, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            continue;
        }
        if (ns == scap) {
            scap *= 2;
            s = realloc(s, scap * sizeof(*s));
        }
        char *sp = strrchr(line, ' ');
        if (sp == NULL) {
            continue;
        }
        s[ns].value = strtod(sp + 1, NULL);
        *sp = '\0';
        char *brace = strchr(line, '{');
        if (brace != NULL) {
            snprintf(s[ns].labels, sizeof(s[ns].labels), "%s", brace);
            *brace = '\0';
        } else {
            s[ns].labels[0] = '\0';
        }
        snprintf(s[ns].name, sizeof(s[ns].name), "%s", line);
        ns++;
    }
    printf("%-16s %12s %12s %12s %14s %12s %12s %10s\n", "QUEUE", "MEM_REC", "DISK_REC", "BACKLOG",
           "DISK_BYTES", "INGRESS", "DROPPED", "FAILED");
    for (size_t i = 0; i < ns; i++) {
        char q[128];
        if (strcmp(s[i].name, "hopperd_queue_backlog_records") != 0) {
            continue;
        }
        label(s[i].labels, "queue", q, sizeof(q));
        printf("%-16s %12.0f %12.0f %12.0f %14.0f %12.0f %12.0f %10.0f\n", q,
               find(s, ns, "hopperd_queue_memory_records", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_queue_disk_records", "queue", q, NULL, NULL), s[i].value,
               find(s, ns, "hopperd_queue_disk_bytes", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_ingress_records_total", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_dropped_records_total", "queue", q, NULL, NULL),
               find(s, ns, "hopperd_queue_failed", "queue", q, NULL, NULL));
    }
    printf("\n%-16s %-16s %-12s %12s %14s %10s %10s\n", "SINK", "QUEUE", "STATE", "EGRESS",
           "EGRESS_BYTES", "RECONNECTS", "FAILURES");
    for (size_t i = 0; i < ns; i++) {
        char k[128], q[128], st[32] = "?";
        if (strcmp(s[i].name, "hopperd_sink_connected") != 0) {
            continue;
        }
        label(s[i].labels, "sink", k, sizeof(k));
        label(s[i].labels, "queue", q, sizeof(q));
        for (size_t j = 0; j < ns; j++) {
            char k2[128];
            if (strcmp(s[j].name, "hopperd_sink_state") == 0 && s[j].value == 1 &&
                strcmp(label(s[j].labels, "sink", k2, sizeof(k2)), k) == 0) {
                label(s[j].labels, "state", st, sizeof(st));
            }
        }
        printf("%-16s %-16s %-12s %12.0f %14.0f %10.0f %10.0f\n", k, q, st,
               find(s, ns, "hopperd_egress_records_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_egress_bytes_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_sink_reconnects_total", "sink", k, NULL, NULL),
               find(s, ns, "hopperd_sink_connect_failures_total", "sink", k, NULL, NULL));
    }
    free(s);
    free(body);
    return 0;
}

static int
cmd_recv(int argc, char **argv)
{
    const char *addr = "127.0.0.1:7766";
    const char *upath = NULL;
    const char *queue = NULL;
    long long want = -1;
    unsigned long long window = 1000;
    int ch;
    while ((ch = getopt(argc, argv, "a:u:q:n:W:")) != -1) {
        switch (ch) {
        case 'a':
            addr = optarg;
            break;
        case 'u':
            upath = optarg;
            break;
        case 'q':
            queue = optarg;
            break;
        case 'n':
            want = strtoll(optarg, NULL, 10);
            if (want < 0) {
                usage();
            }
            break;
        case 'W':
            window = strtoull(optarg, NULL, 10);
            if (window == 0) {
                usage();
            }
            break;
        default:
            usage();
        }
    }
    int fd = connect_to(addr, upath);
    if (fd < 0) {
        return 1;
    }
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    struct hd_msg m;
    const char *why;
    long n = read_frame(fd, &buf, &cap);
    if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_HELLO) {
        fprintf(stderr, "hopperctl: %s: not a native hopperd source\n", upath ? upath : addr);
        return 1;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    hd_proto_put_subscribe(&sb, 1, queue, window);
    int wr = write_all(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    n = wr < 0 ? -1 : read_frame(fd, &buf, &cap);
    if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_OK) {
        if (n >= 0 && m.op == HD_OP_ERROR) {
            fprintf(stderr, "hopperctl: subscribe refused: %s (%.*s)\n",
                    m.code > 0 && m.code < HD_CODE_NCODES ? hd_code_names[m.code] : "?",
                    (int)m.message.n, m.message.p ? (const char *)m.message.p : "");
        } else {
            fprintf(stderr, "hopperctl: subscribe failed\n");
        }
        return 1;
    }
    long long got = 0;
    int status = 0;
    while (want < 0 || got < want) {
        n = read_frame(fd, &buf, &cap);
        if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_RECORDS) {
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
               hd_proto_next_record(buf, (size_t)n, &cur, &rec) == 0) {
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
            (hd_proto_put_ack(&sb, ack) < 0 || write_all(fd, sb.data, sb.size) < 0)) {
            status = 1;
            break;
        }
        msgpack_sbuffer_clear(&sb);
    }
    /* Let the server process the last ack before the connection goes. */
    shutdown(fd, SHUT_WR);
    while (read_frame(fd, &buf, &cap) >= 0) {
    }
    msgpack_sbuffer_destroy(&sb);
    free(buf);
    close(fd);
    return status;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    const char *cmd = argv[1];
    optind = 2;
    if (strcmp(cmd, "send") == 0) {
        return cmd_send(argc, argv);
    }
    if (strcmp(cmd, "stats") == 0) {
        return cmd_stats(argc, argv);
    }
    if (strcmp(cmd, "recv") == 0) {
        return cmd_recv(argc, argv);
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage();
    }
    fprintf(stderr, "hopperctl: '%s' is not implemented (stats, send and recv are)\n", cmd);
    return 2;
}
