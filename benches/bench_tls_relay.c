/* SPDX-License-Identifier: MIT */
/* bench_tls_relay: the two ends of benches/relay-tls, which measures
 * hopperd relaying `lines` with and without TLS on both links, and TLS
 * handshakes per second (issue 12).
 *
 *   bench_tls_relay gen   PORT COUNT SIZE [CERTDIR]
 *   bench_tls_relay sink  PORT COUNT [CERTDIR] [TIMEOUT_S=120]
 *   bench_tls_relay hands PORT SECONDS CERTDIR [CLIENTS=1]
 *
 * With CERTDIR (made by tests/hopperd/tls-certs.sh) the link is TLS: gen
 * and hands are clients presenting client-ok and trusting ca.pem; sink is a
 * server with server.pem that requires a client certificate from ca.pem.
 * Without it, plain TCP. The TLS code is hopperd's own (tls.h), so both
 * ends pay what hopperd's peers would.
 *
 * gen writes COUNT lines of exactly SIZE bytes ("seq=%010llu " + filler +
 * '\n') to 127.0.0.1:PORT and prints gen_msgs_per_s. sink accepts
 * connections one at a time on 127.0.0.1:PORT, counts lines until COUNT
 * arrived (exit 0) or TIMEOUT_S passed (exit 1), checks each line's seq
 * (lost, duplicates, order breaks), and prints sink_msgs_per_s: COUNT over
 * the time from the first byte to the last. hands connects, completes a
 * handshake (and one round trip of nothing: the server's verdict on a TLS
 * 1.3 client certificate comes after the client's handshake) and closes,
 * for SECONDS, from CLIENTS threads at once (each one connection after
 * another), and prints client_handshakes_per_s. gen, sink and hands also
 * print what they cost (*_cpu_ms, *_read_calls), since on a shared
 * machine the CPU spent says more than the rate.
 * Output lines are `name value unit`.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netutil.h"
#include "tls.h"

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static SSL_CTX *
make_ctx(const char *dir, int server)
{
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof(cert), "%s/%s.pem", dir, server ? "server" : "client-ok");
    snprintf(key, sizeof(key), "%s/%s.key", dir, server ? "server" : "client-ok");
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    struct hd_tls_settings s = {
        .is_server = server, .cert = cert, .key = key, .ca = ca, .verify = HD_TLS_VERIFY_REQUIRED};
    int field;
    char err[HD_ERR_LEN];
    SSL_CTX *ctx = hd_tls_ctx_new(&s, &field, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "bench_tls_relay: %s\n", err);
        exit(1);
    }
    return ctx; /* reads run ahead, as hopperd's do (tls.c) */
}

/* A client connection to 127.0.0.1:port, TLS when ctx is not NULL. */
static int
connect_to(int port, SSL_CTX *ctx, struct hd_stream *st)
{
    char addr[32], err[HD_ERR_LEN];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    st->ssl = NULL;
    st->fd = hd_net_connect(addr, 5000, NULL, NULL, err, sizeof(err));
    if (st->fd < 0) {
        fprintf(stderr, "bench_tls_relay: %s\n", err);
        return -1;
    }
    if (ctx != NULL &&
        hd_tls_connect(ctx, st->fd, "127.0.0.1", 0, NULL, NULL, &st->ssl, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_tls_relay: %s\n", err);
        hd_stream_close(st, 1);
        return -1;
    }
    return 0;
}

/* What this process spent: CPU (user + system) and read/write syscalls,
 * which on a shared machine say more than the rates. */
static void
print_cost(const char *who)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    printf("%s_cpu_ms %.0f ms\n", who, cpu);
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        unsigned long long v;
        if (sscanf(line, "syscr: %llu", &v) == 1) {
            printf("%s_read_calls %llu count\n", who, v);
        } else if (sscanf(line, "syscw: %llu", &v) == 1) {
            printf("%s_write_calls %llu count\n", who, v);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
}

static int
gen(int port, unsigned long long count, size_t size, SSL_CTX *ctx)
{
    struct hd_stream st;
    if (connect_to(port, ctx, &st) < 0) {
        return 1;
    }
    size_t per = 256 * 1024 / size + 1;
    char *buf = malloc(per * size);
    if (buf == NULL) {
        return 1;
    }
    uint64_t t0 = now_ns();
    for (unsigned long long seq = 0; seq < count;) {
        size_t n = 0;
        for (; n < per && seq < count; n++, seq++) {
            char *line = buf + n * size;
            int h = snprintf(line, size, "seq=%010llu ", seq);
            for (size_t i = (size_t)h; i < size - 1; i++) {
                line[i] = (char)('a' + (seq + i) % 26);
            }
            line[size - 1] = '\n';
        }
        if (hd_stream_write_all(&st, buf, n * size, 0, NULL, NULL) < 0) {
            fprintf(stderr, "bench_tls_relay: gen: write failed\n");
            return 1;
        }
    }
    double s = (double)(now_ns() - t0) / 1e9;
    hd_stream_close(&st, 0);
    free(buf);
    printf("gen_msgs_per_s %.0f msg/s\n", (double)count / s);
    print_cost("gen");
    return 0;
}

static int
sink(int port, unsigned long long count, SSL_CTX *ctx, int timeout_s)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 16) < 0) {
        perror("bench_tls_relay: sink: bind");
        return 1;
    }
    uint8_t *seen = calloc(count, 1);
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    if (seen == NULL || buf == NULL) {
        return 1;
    }
    unsigned long long unique = 0, dups = 0, breaks = 0, lines = 0;
    long long last = -1;
    uint64_t first_ns = 0, last_ns = 0;
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
    while (unique < count && now_ns() < deadline) {
        struct pollfd lp = {.fd = lfd, .events = POLLIN};
        if (poll(&lp, 1, 200) <= 0) {
            continue;
        }
        struct hd_stream st = {accept4(lfd, NULL, NULL, SOCK_CLOEXEC), NULL};
        if (st.fd < 0) {
            continue;
        }
        if (ctx != NULL) {
            st.ssl = SSL_new(ctx);
            SSL_set_fd(st.ssl, st.fd);
            if (SSL_accept(st.ssl) != 1) {
                fprintf(stderr, "bench_tls_relay: sink: handshake failed\n");
                hd_stream_close(&st, 1);
                continue;
            }
        }
        size_t have = 0;
        last = -1;
        for (;;) {
            short wait;
            ssize_t r = hd_stream_recv(&st, buf + have, cap - have, &wait);
            if (r == -EAGAIN) {
                struct pollfd pfd = {.fd = st.fd, .events = wait};
                poll(&pfd, 1, 200);
                if (now_ns() >= deadline) {
                    break;
                }
                continue;
            }
            if (r <= 0) {
                break;
            }
            if (first_ns == 0) {
                first_ns = now_ns();
            }
            have += (size_t)r;
            size_t off = 0;
            char *nl;
            while ((nl = memchr(buf + off, '\n', have - off)) != NULL) {
                /* "seq=%010llu": parsed by hand, since sscanf() would
                 * measure the whole unterminated buffer first. */
                unsigned long long seq = 0;
                const char *q = buf + off;
                int ok = nl - q >= 14 && memcmp(q, "seq=", 4) == 0;
                for (int d = 4; ok && d < 14; d++) {
                    ok = q[d] >= '0' && q[d] <= '9';
                    seq = seq * 10 + (unsigned long long)(q[d] - '0');
                }
                lines++;
                if (ok && seq < count) {
                    if (seen[seq]) {
                        dups++;
                    } else {
                        seen[seq] = 1;
                        unique++;
                    }
                    if ((long long)seq < last) {
                        breaks++;
                    }
                    last = (long long)seq;
                }
                off = (size_t)(nl - buf) + 1;
            }
            memmove(buf, buf + off, have - off);
            have -= off;
            if (unique == count) {
                last_ns = now_ns();
                break;
            }
        }
        hd_stream_close(&st, 0);
    }
    double s = last_ns > first_ns ? (double)(last_ns - first_ns) / 1e9 : 0;
    printf("sink_msgs_per_s %.0f msg/s\n", s > 0 ? (double)count / s : 0.0);
    print_cost("sink");
    printf("sink_lost %llu records\n", count - unique);
    printf("sink_duplicates %llu records\n", dups);
    printf("sink_order_breaks %llu records\n", breaks);
    free(seen);
    free(buf);
    close(lfd);
    return unique == count ? 0 : 1;
}

struct hands_arg {
    int port;
    uint64_t end_ns;
    SSL_CTX *ctx;
    unsigned long long done, failed;
};

static void *
hands_one(void *p)
{
    struct hands_arg *a = p;
    while (now_ns() < a->end_ns) {
        struct hd_stream st;
        if (connect_to(a->port, a->ctx, &st) < 0) {
            a->failed++;
            continue;
        }
        /* One write: the server has judged our certificate once it takes
         * data (a refusal shows as a failed write or EOF later). */
        if (hd_stream_write_all(&st, "h\n", 2, 0, NULL, NULL) == 0) {
            a->done++;
        } else {
            a->failed++;
        }
        hd_stream_close(&st, 0);
    }
    return NULL;
}

/* `clients` threads, each connecting one connection after another. */
static int
hands(int port, int seconds, SSL_CTX *ctx, int clients)
{
    struct hands_arg a[64];
    pthread_t th[64];
    clients = clients < 1 ? 1 : clients > 64 ? 64 : clients;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)seconds * 1000000000u;
    for (int i = 0; i < clients; i++) {
        a[i] = (struct hands_arg){.port = port, .end_ns = end, .ctx = ctx};
        if (pthread_create(&th[i], NULL, hands_one, &a[i]) != 0) {
            fprintf(stderr, "bench_tls_relay: hands: cannot start a thread\n");
            return 1;
        }
    }
    unsigned long long n = 0, failed = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        n += a[i].done;
        failed += a[i].failed;
    }
    double s = (double)(now_ns() - t0) / 1e9;
    printf("client_handshakes_per_s %.0f 1/s\n", (double)n / s);
    printf("client_handshake_failures %llu count\n", failed);
    print_cost("client");
    return 0;
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 5 && strcmp(argv[1], "gen") == 0) {
        SSL_CTX *ctx = argc > 5 ? make_ctx(argv[5], 0) : NULL;
        return gen(atoi(argv[2]), strtoull(argv[3], NULL, 10), (size_t)atoi(argv[4]), ctx);
    }
    if (argc >= 4 && strcmp(argv[1], "sink") == 0) {
        SSL_CTX *ctx = argc > 4 && argv[4][0] != '\0' ? make_ctx(argv[4], 1) : NULL;
        return sink(atoi(argv[2]), strtoull(argv[3], NULL, 10), ctx,
                    argc > 5 ? atoi(argv[5]) : 120);
    }
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "hands") == 0) {
        return hands(atoi(argv[2]), atoi(argv[3]), make_ctx(argv[4], 0),
                     argc == 6 ? atoi(argv[5]) : 1);
    }
    fprintf(stderr, "usage: bench_tls_relay gen PORT COUNT SIZE [CERTDIR]\n"
                    "       bench_tls_relay sink PORT COUNT [CERTDIR] [TIMEOUT_S]\n"
                    "       bench_tls_relay hands PORT SECONDS CERTDIR [CLIENTS=1]\n");
    return 2;
}
