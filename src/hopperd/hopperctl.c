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
 *
 *   hopperctl verify DIR                        check every frame, report damage
 *   hopperctl dump [--all] DIR                  print records, consume nothing
 *   hopperctl salvage [--all] [--format F] DIR OUT
 *                                               copy readable records elsewhere
 *
 * The offline commands work on a queue directory (state_dir/<queue>) that no
 * process has open, through hopper_inspect() only: read-only, no file is
 * changed. Exit status: 0 no damage, 1 damage found (and skipped), 2 error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hopper.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "netutil.h"
#include "proto.h"
#include "framer.h"

static void
usage(void)
{
    fprintf(stderr, "usage: hopperctl stats [-m HOST:PORT]\n"
                    "       hopperctl send [-a HOST:PORT | -u PATH] [-q QUEUE] [-b N] [-w]\n"
                    "       hopperctl recv [-a HOST:PORT | -u PATH] [-q QUEUE] [-n COUNT] "
                    "[-W WINDOW]\n"
                    "       hopperctl verify DIR\n"
                    "       hopperctl dump [--all] DIR\n"
                    "       hopperctl salvage [--all] [--format lines|octet-counted] DIR OUT\n");
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

/* Connect to a native source and read its HELLO into *m (whose slices point
 * into *buf, which the caller frees). Returns the socket, or -1 after
 * printing why, with *buf freed. */
static int
open_native(const char *addr, const char *upath, uint8_t **buf, size_t *cap, struct hd_msg *m)
{
    int fd = connect_to(addr, upath);
    if (fd < 0) {
        return -1;
    }
    *buf = malloc(*cap);
    const char *why;
    long n = *buf != NULL ? read_frame(fd, buf, cap) : -1;
    if (n < 0 || hd_proto_parse(*buf, (size_t)n, m, &why) < 0 || m->op != HD_OP_HELLO) {
        fprintf(stderr, "hopperctl: %s: not a native hopperd source\n", upath ? upath : addr);
        close(fd);
        free(*buf);
        *buf = NULL;
        return -1;
    }
    return fd;
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
    size_t cap = 1 << 16;
    uint8_t *buf = NULL;
    struct hd_msg m;
    const char *why;
    int fd = open_native(addr, upath, &buf, &cap, &m);
    if (fd < 0) {
        return 1;
    }
    long n;
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
            const char *code = hd_code_name(m.code);
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
    size_t cap = 1 << 16;
    uint8_t *buf = NULL;
    struct hd_msg m;
    const char *why;
    int fd = open_native(addr, upath, &buf, &cap, &m);
    if (fd < 0) {
        return 1;
    }
    long n;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    hd_proto_put_subscribe(&sb, 1, queue, window);
    int wr = write_all(fd, sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    n = wr < 0 ? -1 : read_frame(fd, &buf, &cap);
    if (n < 0 || hd_proto_parse(buf, (size_t)n, &m, &why) < 0 || m.op != HD_OP_OK) {
        if (n >= 0 && m.op == HD_OP_ERROR) {
            fprintf(stderr, "hopperctl: subscribe refused: %s (%.*s)\n",
                    hd_code_name(m.code),
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

/* ---- offline: verify, dump, salvage (hopper_inspect) ---- */

#define EXIT_DAMAGE 1
#define EXIT_ERROR 2

/* Split a queue directory path into its parent and its name (the last
 * component, trailing slashes ignored). Returns 0, or -1 if there is no
 * usable name. */
static int
split_queue_dir(const char *path, char *parent, size_t plen, char *name, size_t nlen)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, path, n + 1);
    while (n > 1 && tmp[n - 1] == '/') {
        tmp[--n] = '\0';
    }
    char *slash = strrchr(tmp, '/');
    const char *base = slash != NULL ? slash + 1 : tmp;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
        (size_t)snprintf(name, nlen, "%s", base) >= nlen) {
        return -1;
    }
    const char *dir = ".";
    if (slash == tmp) {
        dir = "/";
    } else if (slash != NULL) {
        *slash = '\0';
        dir = tmp;
    }
    return (size_t)snprintf(parent, plen, "%s", dir) >= plen ? -1 : 0;
}

/* Does DIR/checkpoint exist (to tell a missing checkpoint from a damaged
 * one: hopper_inspect() reports both as checkpoint_ok == 0)? */
static int
checkpoint_exists(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof(p), "%s/checkpoint", dir);
    return stat(p, &st) == 0;
}

/* Damage is: unreadable segments, corrupt frames, a torn tail, or a
 * checkpoint file that exists but does not validate. */
static int
report_damaged(const hopper_inspect_report *rep, const char *dir)
{
    return rep->unreadable_segments > 0 || rep->corrupt_frames > 0 || rep->torn_bytes > 0 ||
           (!rep->checkpoint_ok && checkpoint_exists(dir));
}

/* Run hopper_inspect() on the queue directory `dir`, printing a clear
 * message on error. Returns 0 or the error code. */
static int
inspect_dir(const char *cmd, const char *dir, unsigned flags, hopper_inspect_fn fn, void *ctx,
            hopper_inspect_report *rep)
{
    char parent[PATH_MAX], name[256];
    memset(rep, 0, sizeof(*rep));
    rep->struct_size = sizeof(*rep);
    if (split_queue_dir(dir, parent, sizeof(parent), name, sizeof(name)) < 0) {
        fprintf(stderr, "hopperctl: %s: %s: not a queue directory path\n", cmd, dir);
        return -EINVAL;
    }
    int rc = hopper_inspect(parent, name, flags, fn, ctx, rep);
    if (rc == HOPPER_ELOCKED) {
        fprintf(stderr,
                "hopperctl: %s: %s: the queue is open by another process (is hopperd "
                "running?); stop it, or copy the directory and inspect the copy\n",
                cmd, dir);
    } else if (rc == -ENOENT) {
        fprintf(stderr, "hopperctl: %s: %s: no such queue directory\n", cmd, dir);
    } else if (rc < 0 && rc != -EPIPE) {
        fprintf(stderr, "hopperctl: %s: %s: %s\n", cmd, dir, hopper_strerror(rc));
    }
    return rc;
}

static void
print_report(FILE *fp, const hopper_inspect_report *rep, const char *dir)
{
    fprintf(fp, "segments            %llu (%llu bytes)\n", (unsigned long long)rep->segments,
            (unsigned long long)rep->segment_bytes);
    fprintf(fp, "unreadable segments %llu\n", (unsigned long long)rep->unreadable_segments);
    fprintf(fp, "frames              %llu\n", (unsigned long long)rep->frames);
    fprintf(fp, "records             %llu\n", (unsigned long long)rep->records);
    fprintf(fp, "corrupt frames      %llu (%llu bytes)\n", (unsigned long long)rep->corrupt_frames,
            (unsigned long long)rep->corrupt_bytes);
    fprintf(fp, "torn bytes          %llu\n", (unsigned long long)rep->torn_bytes);
    fprintf(fp, "ack position        %llu\n", (unsigned long long)rep->ack_next);
    fprintf(fp, "checkpoint          %s\n",
            rep->checkpoint_ok        ? "ok"
            : checkpoint_exists(dir) ? "damaged (every record counts as unacknowledged)"
                                     : "missing (every record counts as unacknowledged)");
}

static int
cmd_verify(int argc, char **argv)
{
    if (argc - optind != 1) {
        usage();
    }
    const char *dir = argv[optind];
    hopper_inspect_report rep;
    if (inspect_dir("verify", dir, 0, NULL, NULL, &rep) < 0) {
        return EXIT_ERROR;
    }
    printf("queue               %s\n", dir);
    print_report(stdout, &rep, dir);
    int damaged = report_damaged(&rep, dir);
    printf("result              %s\n", damaged ? "DAMAGED" : "OK");
    return damaged ? EXIT_DAMAGE : 0;
}

/* Print a payload with \\, \n, \t and \xNN escapes so that one record is
 * one line of printable ASCII. */
static void
put_escaped(FILE *fp, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\\') {
            fputs("\\\\", fp);
        } else if (c == '\n') {
            fputs("\\n", fp);
        } else if (c == '\t') {
            fputs("\\t", fp);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(fp, "\\x%02x", c);
        } else {
            fputc(c, fp);
        }
    }
}

static int
dump_one(void *ctx, const hopper_record *rec)
{
    (void)ctx;
    printf("%llu\t", (unsigned long long)rec->seq);
    put_escaped(stdout, rec->data, rec->len);
    putchar('\n');
    return ferror(stdout) ? -EPIPE : 0;
}

/* Options shared by dump and salvage. */
static int
offline_opts(int argc, char **argv, int *all, int *format)
{
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'A'},
        {"format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch == 'A') {
            *all = 1;
        } else if (ch == 'F' && format != NULL && strcmp(optarg, "lines") == 0) {
            *format = HD_FMT_LINES;
        } else if (ch == 'F' && format != NULL && strcmp(optarg, "octet-counted") == 0) {
            *format = HD_FMT_OCTET;
        } else {
            usage();
        }
    }
    return 0;
}

static int
cmd_dump(int argc, char **argv)
{
    int all = 0;
    offline_opts(argc, argv, &all, NULL);
    if (argc - optind != 1) {
        usage();
    }
    const char *dir = argv[optind];
    hopper_inspect_report rep;
    int rc = inspect_dir("dump", dir, all ? HOPPER_INSPECT_ACKED : 0, dump_one, NULL, &rep);
    if (fflush(stdout) != 0 || rc == -EPIPE) {
        fprintf(stderr, "hopperctl: dump: writing stdout: %s\n", strerror(errno));
        return EXIT_ERROR;
    }
    if (rc < 0) {
        return EXIT_ERROR;
    }
    int damaged = report_damaged(&rep, dir);
    fprintf(stderr, "hopperctl: dump: %llu records printed%s\n", (unsigned long long)rep.visited,
            damaged ? "; the queue is damaged (see hopperctl verify)" : "");
    return damaged ? EXIT_DAMAGE : 0;
}

/* salvage: records are copied in batches of up to SALV_BATCH records or
 * SALV_BATCH_BYTES bytes (hopper_send_batch into a queue, write(2) into a
 * file). */
#define SALV_BATCH 1024
#define SALV_BATCH_BYTES (4u << 20)

struct salvage {
    hopper_queue *q; /* queue mode, else NULL */
    int fd;          /* file mode, else -1 */
    int format;      /* file mode: HD_FMT_LINES or HD_FMT_OCTET */
    uint8_t *buf;    /* copies of the batch's payloads (queue) or encoded bytes (file) */
    size_t len, cap;
    size_t off[SALV_BATCH]; /* queue mode: payload offsets in buf */
    size_t lens[SALV_BATCH];
    size_t n;
    uint64_t copied;
    uint64_t first_seq, last_seq;
    int err; /* first error, for the message */
};

static int
salvage_flush(struct salvage *sv)
{
    if (sv->n == 0) {
        return 0;
    }
    if (sv->q != NULL) {
        hopper_iovec iov[SALV_BATCH];
        for (size_t i = 0; i < sv->n; i++) {
            iov[i].data = sv->buf + sv->off[i];
            iov[i].len = sv->lens[i];
        }
        int rc = hopper_send_batch(sv->q, iov, sv->n, -1);
        if (rc < 0) {
            sv->err = rc;
            return -ECANCELED;
        }
    } else {
        const uint8_t *p = sv->buf;
        size_t left = sv->len;
        while (left > 0) {
            ssize_t w = write(sv->fd, p, left);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                sv->err = w < 0 ? -errno : -EIO;
                return -ECANCELED;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    sv->copied += sv->n;
    sv->n = 0;
    sv->len = 0;
    return 0;
}

static int
salvage_one(void *ctx, const hopper_record *rec)
{
    struct salvage *sv = ctx;
    size_t need = rec->len + 24; /* room for an octet-counted header or '\n' */
    if (sv->n == SALV_BATCH || (sv->n > 0 && sv->len + need > SALV_BATCH_BYTES)) {
        int rc = salvage_flush(sv);
        if (rc < 0) {
            return rc;
        }
    }
    if (sv->len + need > sv->cap) {
        size_t ncap = sv->len + need > 2 * sv->cap ? sv->len + need : 2 * sv->cap;
        uint8_t *nb = realloc(sv->buf, ncap);
        if (nb == NULL) {
            sv->err = -ENOMEM;
            return -ECANCELED;
        }
        sv->buf = nb;
        sv->cap = ncap;
    }
    if (sv->q != NULL) {
        if (rec->len > 0) {
            memcpy(sv->buf + sv->len, rec->data, rec->len);
        }
        sv->off[sv->n] = sv->len;
        sv->lens[sv->n] = rec->len;
        sv->len += rec->len;
    } else {
        sv->len += hd_encode_record(sv->format, rec->data, rec->len, sv->buf + sv->len,
                                    sv->cap - sv->len);
    }
    if (sv->copied == 0 && sv->n == 0) {
        sv->first_seq = rec->seq;
    }
    sv->last_seq = rec->seq;
    sv->n++;
    return 0;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int
cmd_salvage(int argc, char **argv)
{
    int all = 0;
    struct salvage sv;
    memset(&sv, 0, sizeof(sv));
    sv.fd = -1;
    sv.format = HD_FMT_LINES;
    offline_opts(argc, argv, &all, &sv.format);
    if (argc - optind != 2) {
        usage();
    }
    const char *dir = argv[optind];
    const char *out = argv[optind + 1];
    struct stat st;
    int exists = stat(out, &st) == 0;
    int to_file = ends_with(out, ".log") || (exists && S_ISREG(st.st_mode));
    char parent[PATH_MAX], name[256];
    if (to_file) {
        sv.fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (sv.fd < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: %s\n", out, strerror(errno));
            return EXIT_ERROR;
        }
    } else {
        if (exists) {
            fprintf(stderr,
                    "hopperctl: salvage: %s exists; OUT must be a new queue directory, or a "
                    "file (an existing regular file or a name ending in .log)\n",
                    out);
            return EXIT_ERROR;
        }
        if (split_queue_dir(out, parent, sizeof(parent), name, sizeof(name)) < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: not a queue directory path\n", out);
            return EXIT_ERROR;
        }
        hopper_opts o;
        hopper_opts_init(&o);
        /* Everything goes to disk; budgets only bound admission, so make
         * them large enough for any source queue. */
        o.durability = HOPPER_DURABILITY_DISK;
        o.fsync = HOPPER_FSYNC_NEVER; /* hopper_close() fsyncs */
        o.disk_bytes = UINT64_C(1) << 50;
        o.max_record_bytes = 256u << 20;
        int rc = hopper_open(parent, name, &o, &sv.q);
        if (rc < 0) {
            fprintf(stderr, "hopperctl: salvage: open %s: %s\n", out, hopper_strerror(rc));
            return EXIT_ERROR;
        }
    }
    hopper_inspect_report rep;
    int rc = inspect_dir("salvage", dir, all ? HOPPER_INSPECT_ACKED : 0, salvage_one, &sv, &rep);
    if (rc == 0) {
        rc = salvage_flush(&sv) < 0 ? sv.err : 0;
    } else if (rc == -ECANCELED && sv.err != 0) {
        rc = sv.err;
    }
    int status = 0;
    if (rc < 0) {
        if (sv.err != 0) {
            fprintf(stderr, "hopperctl: salvage: writing %s: %s\n", out, hopper_strerror(sv.err));
        }
        status = EXIT_ERROR;
    }
    if (sv.q != NULL) {
        int crc = hopper_close(sv.q);
        if (crc < 0) {
            fprintf(stderr, "hopperctl: salvage: close %s: %s\n", out, hopper_strerror(crc));
            status = EXIT_ERROR;
        }
    } else {
        if (fdatasync(sv.fd) < 0 || close(sv.fd) < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: %s\n", out, strerror(errno));
            status = EXIT_ERROR;
        }
    }
    free(sv.buf);
    if (status != 0) {
        return status;
    }
    int damaged = report_damaged(&rep, dir);
    printf("copied %llu records", (unsigned long long)sv.copied);
    if (sv.copied > 0) {
        printf(" (seq %llu..%llu)", (unsigned long long)sv.first_seq,
               (unsigned long long)sv.last_seq);
    }
    printf(" into %s %s\n", to_file ? "file" : "queue", out);
    printf("skipped: %llu corrupt frames (%llu bytes), %llu unreadable segments, %llu torn "
           "bytes\n",
           (unsigned long long)rep.corrupt_frames, (unsigned long long)rep.corrupt_bytes,
           (unsigned long long)rep.unreadable_segments, (unsigned long long)rep.torn_bytes);
    return damaged ? EXIT_DAMAGE : 0;
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
    if (strcmp(cmd, "verify") == 0) {
        return cmd_verify(argc, argv);
    }
    if (strcmp(cmd, "dump") == 0) {
        return cmd_dump(argc, argv);
    }
    if (strcmp(cmd, "salvage") == 0) {
        return cmd_salvage(argc, argv);
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage();
    }
    fprintf(stderr, "hopperctl: unknown command '%s'\n", cmd);
    usage();
}
