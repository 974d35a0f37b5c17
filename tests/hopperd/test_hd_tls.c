/* SPDX-License-Identifier: MIT */
/* TLS on hopperd's links (issue 12): the real binary on 127.0.0.1 with
 * OS-picked ports, certificates made at test time by tls-certs.sh (the
 * openssl command) in the test's temp dir: a CA, a server certificate, a
 * client on the allow-list (client-ok), one off it (client-other), an
 * expired one and one from another CA.
 *
 * Clients: `openssl s_client`, hopperctl, hopperd's own TLS sink, and a
 * client written here over tls.h (the same code hopperd's sinks use) for
 * what the others cannot do: hold a connection across the test, write raw
 * bytes after the handshake.
 *
 * Waits poll a condition against a deadline (e2e_wait_until). The one wait
 * on the clock is for the listener's log rate limit (one warning a
 * second): refusals are spaced so each one's warning is logged. Set
 * HOPPERD_E2E_KEEP=1 to keep the temp dirs, HD_TEST_FILTER=PATTERN to run
 * some tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_e2e_util.h"
#include "netutil.h"
#include "tls.h"

struct tenv {
    char *dir;
    char certs[600];
    char conf[600], log[600], out[600];
    int port, port2, mport;
    pid_t pid;
    uint64_t last_warn_ms; /* when the test last provoked a warning */
};

static int
fresh_port(const int *taken, size_t n)
{
    for (;;) {
        int p = e2e_free_port();
        int clash = p <= 0;
        for (size_t i = 0; i < n; i++) {
            clash |= taken[i] == p;
        }
        if (!clash) {
            return p;
        }
    }
}

static int
setup(void **state)
{
    struct tenv *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->dir = e2e_tmpdir();
    assert_non_null(t->dir);
    snprintf(t->certs, sizeof(t->certs), "%s/certs", t->dir);
    assert_int_equal(mkdir(t->certs, 0700), 0);
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "%s/tests/hopperd/tls-certs.sh %s", HD_SOURCE_DIR, t->certs);
    if (system(cmd) != 0) {
        fail_msg("tls-certs.sh failed: %s", cmd);
    }
    snprintf(t->conf, sizeof(t->conf), "%s/hopperd.conf", t->dir);
    snprintf(t->log, sizeof(t->log), "%s/hopperd.log", t->dir);
    snprintf(t->out, sizeof(t->out), "%s/out.log", t->dir);
    int taken[3] = {0, 0, 0};
    t->port = taken[0] = fresh_port(taken, 0);
    t->port2 = taken[1] = fresh_port(taken, 1);
    t->mport = fresh_port(taken, 2);
    t->pid = -1;
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    struct tenv *t = *state;
    e2e_cleanup(t->pid, t->dir);
    free(t);
    return 0;
}

/* t->certs/NAME */
static const char *
cert(const struct tenv *t, const char *name)
{
    static char buf[4][700];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", t->certs, name);
    return buf[k];
}

/* The TLS directives of a source that requires client-ok. */
static void
tls_source(const struct tenv *t, char *buf, size_t len, const char *extra)
{
    snprintf(buf, len,
             "tls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s\n"
             "tls_allowed_peers = client-ok, other.example\n%s",
             cert(t, "server.pem"), cert(t, "server.key"), cert(t, "ca.pem"), extra);
}

/* [hopperd], queue q, source `in` (lines unless `source_extra` says) with
 * `source_extra`, `more` sections, and a file sink into t->out. */
static void
write_conf(struct tenv *t, const char *source_extra, const char *more)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = debug\nmetrics_listen = 127.0.0.1:%d\n"
             "shutdown_timeout = 5s\n"
             "[queue q]\n"
             "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n%s"
             "%s"
             "[sink out]\ntype = file\npath = %s\nqueue = q\nfsync = never\n",
             t->dir, t->mport, t->port, source_extra, more, t->out);
    e2e_write_file(t->conf, text);
}

static void
start(struct tenv *t)
{
    t->pid = e2e_start(t->conf, t->log);
    assert_true(t->pid > 0);
    if (e2e_wait_port(t->port, 10000) != 0 || e2e_wait_port(t->mport, 10000) != 0) {
        e2e_dump_log(t->log, 0);
        fail_msg("hopperd did not start listening");
    }
}

static void
stop(struct tenv *t)
{
    int rc = e2e_stop(t->pid, SIGTERM, 10000);
    t->pid = -1;
    if (rc != 0) {
        e2e_dump_log(t->log, 0);
        fail_msg("hopperd exit status %d", rc);
    }
}

struct mwait {
    int port;
    const char *prefix;
    double want, last;
};

static int
metric_at_least(void *arg)
{
    struct mwait *w = arg;
    w->last = e2e_metric(w->port, w->prefix);
    return w->last >= w->want;
}

static int
metric_is(void *arg)
{
    struct mwait *w = arg;
    w->last = e2e_metric(w->port, w->prefix);
    return w->last == w->want;
}

static void
wait_metric(struct tenv *t, int port, const char *prefix, double want, int timeout_ms)
{
    struct mwait w = {port, prefix, want, -1};
    if (e2e_wait_until(metric_at_least, &w, timeout_ms) < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("metric %s is %.0f, wanted at least %.0f", prefix, w.last, want);
    }
}

static void
wait_log(struct tenv *t, const char *path, const char *needle)
{
    struct e2e_grep g = {path, needle};
    if (e2e_wait_until(e2e_file_contains, &g, 10000) < 0) {
        e2e_dump_log(path, 20000);
        if (strcmp(path, t->log) != 0) {
            e2e_dump_log(t->log, 20000);
        }
        fail_msg("%s never logged '%s'", path, needle);
    }
    t->last_warn_ms = e2e_now_ms(); /* for next_warning() */
}

static void
wait_lines(struct tenv *t, const char *path, long want, int timeout_ms)
{
    struct e2e_lines_wait w = {path, want, 0};
    if (e2e_wait_until(e2e_file_has_lines, &w, timeout_ms) < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("%s has %ld lines, wanted %ld", path, w.have, want);
    }
}

/* "rec-%08ld\n" for from..from+n-1 */
static char *
records(long from, long n, size_t *len)
{
    char *buf = malloc((size_t)n * 13 + 1);
    assert_non_null(buf);
    size_t off = 0;
    for (long i = from; i < from + n; i++) {
        off += (size_t)sprintf(buf + off, "rec-%08ld\n", i);
    }
    *len = off;
    return buf;
}

static void
expect_sequence(struct tenv *t, const char *path, long n, int allow_dups)
{
    size_t len = 0;
    char *data = e2e_read_file(path, &len);
    assert_non_null(data);
    long dups = e2e_check_sequence(data, len, n);
    free(data);
    if (dups < 0 || (!allow_dups && dups != 0)) {
        e2e_dump_log(t->log, 20000);
        fail_msg("%s: records lost, reordered or repeated (%ld)", path, dups);
    }
}

/* The listener logs one warning a second: wait until one may be logged
 * again, so the next refusal's warning is not held back. */
static int
warn_slot_free(void *arg)
{
    const struct tenv *t = arg;
    return e2e_now_ms() >= t->last_warn_ms + 1100;
}

static void
next_warning(struct tenv *t)
{
    assert_int_equal(e2e_wait_until(warn_slot_free, t, 5000), 0);
}

/* ---- a TLS client over tls.h ---- */

/* Connect to 127.0.0.1:port and handshake, presenting certs/NAME.pem and
 * .key when name is not NULL, trusting certs/CA. 0 with *st, or -errno
 * (the handshake may succeed on our side and still be refused by hopperd:
 * with TLS 1.3 the client learns it at its first read). */
static int
tls_client(struct tenv *t, int port, const char *name, const char *ca, struct hd_stream *st)
{
    char certp[700], keyp[700];
    snprintf(certp, sizeof(certp), "%s/%s.pem", t->certs, name != NULL ? name : "");
    snprintf(keyp, sizeof(keyp), "%s/%s.key", t->certs, name != NULL ? name : "");
    struct hd_tls_settings s = {.is_server = 0,
                                .cert = name != NULL ? certp : NULL,
                                .key = name != NULL ? keyp : NULL,
                                .ca = cert(t, ca)};
    int field;
    char err[HD_ERR_LEN];
    SSL_CTX *ctx = hd_tls_ctx_new(&s, &field, err, sizeof(err));
    if (ctx == NULL) {
        fail_msg("client context: %s", err);
    }
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    st->ssl = NULL;
    st->fd = hd_net_connect(addr, 5000, NULL, NULL, err, sizeof(err));
    int rc = st->fd;
    if (rc >= 0) {
        rc = hd_tls_connect(ctx, st->fd, "127.0.0.1", e2e_now_ms() + 5000, NULL, NULL, &st->ssl,
                            err, sizeof(err));
        if (rc < 0) {
            close(st->fd);
            st->fd = -1;
        }
    }
    SSL_CTX_free(ctx);
    return rc < 0 ? rc : 0;
}

/* Did hopperd close st (EOF, an alert or an error), within 5 s? */
static int
tls_refused(struct hd_stream *st)
{
    uint64_t until = e2e_now_ms() + 5000;
    char buf[256];
    while (e2e_now_ms() < until) {
        short wait;
        ssize_t r = hd_stream_recv(st, buf, sizeof(buf), &wait);
        if (r == 0 || (r < 0 && r != -EAGAIN)) {
            return 1;
        }
        struct pollfd pfd = {.fd = st->fd, .events = wait};
        poll(&pfd, 1, 50);
    }
    return 0;
}

/* ---- openssl s_client ---- */

/* Run `openssl s_client` against 127.0.0.1:port as NAME (NULL: no
 * certificate), stdin from `input`, output into dir/s_client.out; it exits
 * at the end of its input. Its exit status, or -1 on a timeout. */
static int
s_client(struct tenv *t, int port, const char *name, const char *input)
{
    char connect[64], out[700], certp[700], keyp[700];
    snprintf(connect, sizeof(connect), "127.0.0.1:%d", port);
    snprintf(out, sizeof(out), "%s/s_client.out", t->dir);
    snprintf(certp, sizeof(certp), "%s/%s.pem", t->certs, name != NULL ? name : "");
    snprintf(keyp, sizeof(keyp), "%s/%s.key", t->certs, name != NULL ? name : "");
    const char *argv[] = {"openssl",
                          "s_client",
                          "-connect",
                          connect,
                          "-CAfile",
                          cert(t, "ca.pem"),
                          "-verify_return_error",
                          "-quiet",
                          "-no_ign_eof",
                          name != NULL ? "-cert" : NULL,
                          certp,
                          "-key",
                          keyp,
                          NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int in = open(input, O_RDONLY);
        int o = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (in < 0 || o < 0) {
            _exit(126);
        }
        dup2(in, 0);
        dup2(o, 1);
        dup2(o, 2);
        execvp("openssl", (char *const *)argv);
        _exit(127);
    }
    assert_true(pid > 0);
    int rc = e2e_wait_exit(pid, 30000);
    if (rc < 0) {
        e2e_stop(pid, SIGKILL, 5000);
    }
    return rc;
}

/* ---- tests ---- */

/* hopperd -n: every TLS file is checked, errors as FILE:LINE:. */
static void
test_tls_check_config(void **state)
{
    struct tenv *t = *state;
    char src[2048], out[4096];
    const char *args[] = {"hopperd", "-n", "-f", t->conf, NULL};
    tls_source(t, src, sizeof(src), "");
    write_conf(t, src, "");
    if (e2e_run(args, out, sizeof(out)) != 0 || strstr(out, "configuration OK") == NULL) {
        fail_msg("hopperd -n: %s", out);
    }
    /* The key readable by others: line 13 is tls_key. */
    assert_int_equal(chmod(cert(t, "server.key"), 0644), 0);
    assert_int_equal(e2e_run(args, out, sizeof(out)), 1);
    char want[1000];
    snprintf(want, sizeof(want), "%s:13: [source in]: tls_key: ", t->conf);
    if (strstr(out, want) == NULL || strstr(out, "accessible by group or others") == NULL) {
        fail_msg("want '%s... accessible by group or others', got: %s", want, out);
    }
    assert_int_equal(chmod(cert(t, "server.key"), 0600), 0);
    /* A key that does not match the certificate. */
    char bad[2048];
    snprintf(bad, sizeof(bad), "tls = on\ntls_cert = %s\ntls_key = %s\n", cert(t, "server.pem"),
             cert(t, "client-ok.key"));
    write_conf(t, bad, "");
    assert_int_equal(e2e_run(args, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:13: [source in]: tls_key: ", t->conf);
    if (strstr(out, want) == NULL || strstr(out, "does not match") == NULL) {
        fail_msg("want a key mismatch at line 13, got: %s", out);
    }
    /* A CA file that is not there. */
    snprintf(bad, sizeof(bad), "tls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s/nope.pem\n",
             cert(t, "server.pem"), cert(t, "server.key"), t->certs);
    write_conf(t, bad, "");
    assert_int_equal(e2e_run(args, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:14: [source in]: tls_ca: ", t->conf);
    if (strstr(out, want) == NULL) {
        fail_msg("want '%s', got: %s", want, out);
    }
    /* Not a certificate at all. */
    snprintf(bad, sizeof(bad), "tls = on\ntls_cert = %s\ntls_key = %s\n", t->conf,
             cert(t, "server.key"));
    write_conf(t, bad, "");
    assert_int_equal(e2e_run(args, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:12: [source in]: tls_cert: ", t->conf);
    if (strstr(out, want) == NULL) {
        fail_msg("want '%s', got: %s", want, out);
    }
    /* A sink: its key too. */
    char sink[2048];
    snprintf(sink, sizeof(sink),
             "[queue q2]\n[sink up]\ntype = tcp\nconnect = 127.0.0.1:%d\nqueue = q2\ntls = on\n"
             "tls_ca = %s\ntls_cert = %s\ntls_key = %s\n",
             t->port2, cert(t, "ca.pem"), cert(t, "client-ok.pem"), cert(t, "client-ok.key"));
    write_conf(t, "", sink);
    assert_int_equal(e2e_run(args, out, sizeof(out)), 0);
    assert_int_equal(chmod(cert(t, "client-ok.key"), 0640), 0);
    assert_int_equal(e2e_run(args, out, sizeof(out)), 1);
    if (strstr(out, "[sink up]: tls_key: ") == NULL) {
        fail_msg("want the sink's tls_key refused, got: %s", out);
    }
    assert_int_equal(chmod(cert(t, "client-ok.key"), 0600), 0);
}

/* openssl s_client as a client of a TLS lines source: records intact, in
 * order; the handshake is counted. */
static void
test_tls_s_client_lines(void **state)
{
    struct tenv *t = *state;
    char src[2048];
    tls_source(t, src, sizeof(src), "");
    write_conf(t, src, "");
    start(t);
    const long n = 5000;
    size_t len;
    char *data = records(0, n, &len);
    char input[700];
    snprintf(input, sizeof(input), "%s/input", t->dir);
    e2e_write_file(input, data);
    free(data);
    int rc = s_client(t, t->port, "client-ok", input);
    if (rc != 0) {
        char out[700];
        snprintf(out, sizeof(out), "%s/s_client.out", t->dir);
        e2e_dump_log(out, 0);
        fail_msg("s_client exit %d", rc);
    }
    wait_lines(t, t->out, n, 20000);
    expect_sequence(t, t->out, n, 0);
    wait_metric(t, t->mport, "hopperd_source_tls_handshakes_total{source=\"in\"}", 1, 5000);
    stop(t);
}

/* Refusals: wrong CA, expired, not on the allow-list, no certificate,
 * plaintext to the TLS port, TLS to a plaintext port, a handshake that
 * never finishes, garbage after the handshake. Each is counted and logged
 * with the client's address; a client connected before them all still
 * delivers afterwards, and hopperd exits cleanly. */
static void
test_tls_refusals(void **state)
{
    struct tenv *t = *state;
    char src[2048], more[1024];
    tls_source(t, src, sizeof(src), "handshake_timeout = 1s\n");
    snprintf(more, sizeof(more),
             "[source plain]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\nformat = native\n",
             t->port2);
    write_conf(t, src, more);
    start(t);
    assert_int_equal(e2e_wait_port(t->port2, 10000), 0);

    struct hd_stream good;
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &good), 0);
    size_t len;
    char *data = records(0, 100, &len);
    assert_int_equal(hd_stream_write_all(&good, data, len, 0, NULL, NULL), 0);
    free(data);
    wait_lines(t, t->out, 100, 10000);

    static const struct {
        const char *cert;
        const char *reason;
        const char *log;
    } bad[] = {
        {"client-rogue", "verify", "certificate verification failed: unable to get local issuer"},
        {"client-expired", "verify", "certificate verification failed: certificate has expired"},
        {"client-other", "not_allowed",
         "certificate name client-other is not in tls_allowed_peers"},
        {NULL, "no_certificate", "no client certificate"},
    };
    double count[HD_TLS_FAIL_NKINDS] = {0};
    char prefix[200];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        next_warning(t);
        struct hd_stream st;
        if (tls_client(t, t->port, bad[i].cert, "ca.pem", &st) == 0) {
            assert_true(tls_refused(&st));
            hd_stream_close(&st, 1);
        }
        int k = 0;
        while (strcmp(hd_tls_fail_names[k], bad[i].reason) != 0) {
            k++;
        }
        count[k]++;
        snprintf(prefix, sizeof(prefix),
                 "hopperd_source_tls_failures_total{source=\"in\",reason=\"%s\"}", bad[i].reason);
        wait_metric(t, t->mport, prefix, count[k], 10000);
        wait_log(t, t->log, bad[i].log);
    }

    /* Plaintext to the TLS port. */
    next_warning(t);
    assert_int_equal(e2e_send(t->port, "hello in plaintext\n", 19), 0);
    wait_metric(t, t->mport,
                "hopperd_source_tls_failures_total{source=\"in\",reason=\"handshake\"}", 1, 10000);
    wait_log(t, t->log, "(not TLS: plaintext to a TLS port?)");

    /* TLS to the plaintext (native) port: refused as a bad frame. */
    next_warning(t);
    struct hd_stream st;
    if (tls_client(t, t->port2, "client-ok", "ca.pem", &st) == 0) {
        hd_stream_close(&st, 1);
    }
    wait_metric(t, t->mport, "hopperd_source_bad_frames_total{source=\"plain\"}", 1, 10000);
    wait_log(t, t->log, "a TLS handshake on a plaintext source");

    /* A handshake that never finishes: the start of a ClientHello, then
     * silence, until handshake_timeout. */
    next_warning(t);
    int slow = e2e_connect(t->port);
    assert_true(slow >= 0);
    static const unsigned char hello_start[] = {0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00};
    assert_int_equal(e2e_write_all(slow, hello_start, sizeof(hello_start)), 0);
    wait_metric(t, t->mport,
                "hopperd_source_connection_timeouts_total{source=\"in\",timeout=\"handshake\"}", 1,
                10000);
    wait_log(t, t->log, "TLS handshake not finished");
    close(slow);

    /* Garbage after the handshake: raw bytes where TLS records belong. */
    next_warning(t);
    struct hd_stream g;
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &g), 0);
    data = records(100, 1, &len);
    assert_int_equal(hd_stream_write_all(&g, data, len, 0, NULL, NULL), 0);
    free(data);
    wait_lines(t, t->out, 101, 10000);
    static const char junk[] = "\x17\x03\x03\x00\x20 this is not a TLS record at all ....";
    assert_int_equal(e2e_write_all(g.fd, junk, sizeof(junk) - 1), 0);
    wait_metric(t, t->mport, "hopperd_source_tls_failures_total{source=\"in\",reason=\"record\"}",
                1, 10000);
    wait_log(t, t->log, "TLS connection failed [record]");
    assert_true(tls_refused(&g));
    hd_stream_close(&g, 1);

    /* The first client was not affected. */
    data = records(101, 900, &len);
    assert_int_equal(hd_stream_write_all(&good, data, len, 0, NULL, NULL), 0);
    free(data);
    hd_stream_close(&good, 0);
    wait_lines(t, t->out, 1001, 10000);
    expect_sequence(t, t->out, 1001, 0);
    assert_true(e2e_metric(t->mport, "hopperd_source_tls_handshakes_total{source=\"in\"}") >= 2);
    stop(t);
}

/* Handshakes hold slots: max_connections of silent handshakes do not keep
 * a real client out (the longest-idle one is evicted for it). */
static void
test_tls_handshake_limits(void **state)
{
    struct tenv *t = *state;
    char src[2048];
    tls_source(t, src, sizeof(src), "max_connections = 4\nhandshake_timeout = 30s\n");
    write_conf(t, src, "");
    start(t);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = e2e_connect(t->port);
        assert_true(fds[i] >= 0);
    }
    wait_metric(t, t->mport, "hopperd_source_connections{source=\"in\"}", 4, 10000);
    struct hd_stream st;
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &st), 0);
    size_t len;
    char *data = records(0, 10, &len);
    assert_int_equal(hd_stream_write_all(&st, data, len, 0, NULL, NULL), 0);
    free(data);
    hd_stream_close(&st, 0);
    wait_lines(t, t->out, 10, 10000);
    assert_true(e2e_metric(t->mport, "hopperd_source_connections_evicted_total{source=\"in\"}") >=
                1);
    for (int i = 0; i < 4; i++) {
        close(fds[i]);
    }
    stop(t);
}

/* CPU time (user + system) of process pid so far, in ms; -1 if unknown. */
static long
cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command may hold blanks */
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) != 2) {
        return -1;
    }
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

static int
elapsed_1s(void *arg)
{
    return e2e_now_ms() >= *(const uint64_t *)arg + 1000;
}

/* The opening two tests share: a TLS lines source, hopperd started, a
 * verified client `st` that sent records 0..n-1, all of them delivered. */
static void
start_and_send(struct tenv *t, struct hd_stream *st, long n)
{
    char src[2048];
    tls_source(t, src, sizeof(src), "");
    write_conf(t, src, "");
    start(t);
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", st), 0);
    size_t len;
    char *data = records(0, n, &len);
    assert_int_equal(hd_stream_write_all(st, data, len, 0, NULL, NULL), 0);
    free(data);
    wait_lines(t, t->out, n, 10000);
}

/* A client that leaves part of a TLS record in flight (after the
 * handshake, and during it) costs hopperd no CPU while it waits: OpenSSL
 * holds the partial record, and the loop must not spin on it. */
static void
test_tls_partial_record_idle(void **state)
{
    struct tenv *t = *state;
    struct hd_stream st;
    start_and_send(t, &st, 10);
    /* An application-data record header announcing 200 bytes, and 20. */
    static const unsigned char part[25] = {0x17, 0x03, 0x03, 0x00, 0xc8};
    assert_int_equal(e2e_write_all(st.fd, part, sizeof(part)), 0);
    /* And a handshake left half way (the start of a ClientHello). */
    int slow = e2e_connect(t->port);
    static const unsigned char hello_start[] = {0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00};
    assert_int_equal(e2e_write_all(slow, hello_start, sizeof(hello_start)), 0);
    long c0 = cpu_ms(t->pid);
    uint64_t t0 = e2e_now_ms();
    assert_int_equal(e2e_wait_until(elapsed_1s, &t0, 5000), 0); /* nothing may happen */
    long c1 = cpu_ms(t->pid);
    assert_true(c0 >= 0 && c1 >= 0);
    if (c1 - c0 > 300) {
        e2e_dump_log(t->log, 4000);
        fail_msg("hopperd used %ld ms of CPU in 1 s with two idle partial TLS records", c1 - c0);
    }
    close(slow);
    hd_stream_close(&st, 1);
    stop(t);
}

struct lines_wait {
    struct e2e_downstream *ds;
    size_t want;
};

static int
downstream_has(void *arg)
{
    struct lines_wait *w = arg;
    return e2e_downstream_lines(w->ds) >= w->want;
}

/* Where the bytes of a loopback TCP connection are, from /proc/net/tcp:
 * the client's unacknowledged send queue and the server's unread receive
 * queue. */
struct tcp_queues {
    int server_port, client_port;
    long client_tx, server_rx; /* -1: the socket was not found */
};

static void
read_tcp_queues(struct tcp_queues *q)
{
    q->client_tx = q->server_rx = -1;
    FILE *fp = fopen("/proc/net/tcp", "r");
    if (fp == NULL) {
        return;
    }
    char line[512];
    while (fgets(line, sizeof(line), fp) != NULL) {
        unsigned lport, rport, st;
        unsigned long tx, rx;
        if (sscanf(line, " %*u: %*x:%x %*x:%x %x %lx:%lx", &lport, &rport, &st, &tx, &rx) != 5 ||
            st != 1 /* TCP_ESTABLISHED */) {
            continue;
        }
        if ((int)lport == q->client_port && (int)rport == q->server_port) {
            q->client_tx = (long)tx;
        } else if ((int)lport == q->server_port && (int)rport == q->client_port) {
            q->server_rx = (long)rx;
        }
    }
    fclose(fp);
}

/* Everything the client wrote is past the kernel: delivered (acknowledged)
 * and read by the server process. */
static int
tcp_all_read(void *arg)
{
    struct tcp_queues *q = arg;
    read_tcp_queues(q);
    return q->client_tx == 0 && q->server_rx == 0;
}

/* Lines "PREFIX%08ld ..." in data: -1 (printed) on a gap or reorder, else
 * how many of 0, 1, 2, ... arrived (a duplicate, from a resend, is
 * allowed). Other lines are skipped. */
static long
prefix_sequence(const char *data, size_t len, const char *prefix)
{
    long next = 0;
    size_t plen = strlen(prefix);
    for (const char *p = data, *end = data + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            break;
        }
        long v = -1;
        if ((size_t)(nl - p) > plen && strncmp(p, prefix, plen) == 0 &&
            sscanf(p + plen, "%ld", &v) == 1 && v > next) {
            fprintf(stderr, "gap or reorder: got %s%ld, expected %s%ld\n", prefix, v, prefix,
                    next);
            return -1;
        }
        next += v == next;
        p = nl + 1;
    }
    return next;
}

/* A client that fills the queue from a thread: its write stays blocked
 * while hopperd pushes back, until the sink drains the queue. */
struct filler {
    struct hd_stream st;
    char *data;
    size_t len;
    int rc;
};

static void *
filler_main(void *arg)
{
    struct filler *f = arg;
    f->rc = hd_stream_write_all(&f->st, f->data, f->len, e2e_now_ms() + 60000, NULL, NULL);
    return NULL;
}

/* Records that OpenSSL read ahead wait inside it, where epoll cannot see
 * them (tls.h); conn.c lists such a connection as ready when its reads
 * stop while SSL_has_pending() says whole records are held. This puts a
 * connection in exactly that state and checks its records still come out:
 *
 *   1. The sink is down; a filler client F fills queue q2 until the queue
 *      refuses a record (hopperd_queue_full_rejections_total > 0): full,
 *      and it stays full until the sink drains it.
 *   2. Client T, connected and idle, sends T_RECORDS lines of 1 KiB, each
 *      its own TLS record (1046 bytes with the AEAD overhead), in one
 *      write(2) of ~25 KiB: one segment on loopback (under half the
 *      window, so TCP does not push part of it early), so it is all in the
 *      socket when hopperd reads. OpenSSL's read-ahead takes the lot in
 *      one read(2) (64 KiB buffer); T's read buffer is 16 KiB (its initial
 *      size: the queue's max_record_bytes is left at 64 KiB, so 16 KiB is
 *      below the buffer's limit) and takes exactly 16 whole records, with
 *      nothing of a record left decrypted (SSL_pending() == 0). The first
 *      record is refused: T is blocked with 16 records in its buffer, the
 *      other T_RECORDS - 16 in OpenSSL, and the socket empty. The test
 *      checks the last two: /proc/net/tcp shows nothing unread or
 *      unacknowledged, and q2 took nothing more.
 *   3. The sink comes up; the queue drains; T's 16 records go in on a
 *      retry and T wants reading again. Nothing will arrive on its socket
 *      (T waits, connection open), so only the SSL_has_pending() rule gets
 *      the other records read. Every record of T (and of F) must reach the
 *      sink within the deadline, in order.
 *
 * Without the rule (conn.c hd_conn_sync_events() checking SSL_pending()
 * alone), T's last records stay in OpenSSL and this fails. */
#define T_RECORDS 24
#define F_RECORDS 400

static void
test_tls_read_ahead_burst(void **state)
{
    struct tenv *t = *state;
    char src[2048], more[1024];
    tls_source(t, src, sizeof(src), "");
    /* 4 KiB of memory and 128 KiB of disk (the least max_record_bytes'
     * default allows), uncompressed: ~130 of F's records fill it. */
    snprintf(more, sizeof(more),
             "[sink down]\ntype = tcp\nconnect = 127.0.0.1:%d\nqueue = q2\n"
             "reconnect_min = 10ms\nreconnect_max = 50ms\n"
             "[queue q2]\nmemory_bytes = 4KiB\ndisk_bytes = 128KiB\nsegment_bytes = 64KiB\n"
             "compression = 0\n",
             t->port2);
    write_conf(t, src, more);
    /* The source feeds q2 (write_conf's file sink keeps q, now unused). */
    size_t clen;
    char *text = e2e_read_file(t->conf, &clen);
    assert_non_null(text);
    char *q = strstr(text, "queue = q\n");
    assert_non_null(q);
    char *edited = malloc(clen + 2);
    assert_non_null(edited);
    snprintf(edited, clen + 2, "%.*squeue = q2\n%s", (int)(q - text), text,
             q + strlen("queue = q\n"));
    e2e_write_file(t->conf, edited);
    free(edited);
    free(text);
    start(t);

    struct hd_stream st;
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &st), 0);
    struct filler f = {.len = (size_t)F_RECORDS * 1024};
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &f.st), 0);
    f.data = malloc(f.len);
    assert_non_null(f.data);
    uint32_t x = 12345; /* letters that compress poorly, should compression be on */
    for (long i = 0; i < F_RECORDS; i++) {
        char *l = f.data + i * 1024;
        int h = snprintf(l, 16, "fill-%08ld ", i);
        for (int j = h; j < 1023; j++) {
            x = x * 1103515245u + 12345u;
            l[j] = (char)('a' + (x >> 16) % 26);
        }
        l[1023] = '\n';
    }
    pthread_t ft;
    assert_int_equal(pthread_create(&ft, NULL, filler_main, &f), 0);
    struct mwait full = {t->mport, "hopperd_queue_full_rejections_total{queue=\"q2\"}", 1, -1};
    if (e2e_wait_until(metric_at_least, &full, 20000) < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("q2 never refused a record (rejections %.0f)", full.last);
    }
    double taken = e2e_metric(t->mport, "hopperd_ingress_records_total{queue=\"q2\"}");

    char line[1024];
    memset(line, 'x', sizeof(line));
    line[sizeof(line) - 1] = '\n';
    for (long i = 0; i < T_RECORDS; i++) {
        char head[16];
        int h = snprintf(head, sizeof(head), "rec-%08ld ", i);
        memcpy(line, head, (size_t)h);
        assert_int_equal(SSL_write(st.ssl, line, (int)sizeof(line)), (int)sizeof(line));
    }
    assert_int_equal(hd_stream_write_all(&st, "", 0, 0, NULL, NULL), 0); /* one write(2) */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    assert_int_equal(getsockname(st.fd, (struct sockaddr *)&ss, &sl), 0);
    struct tcp_queues tq = {t->port, ntohs(((struct sockaddr_in *)&ss)->sin_port), -1, -1};
    if (e2e_wait_until(tcp_all_read, &tq, 10000) < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("setup: T's bytes not all read by hopperd (client tx %ld, server rx %ld)",
                 tq.client_tx, tq.server_rx);
    }
    double taken_after = e2e_metric(t->mport, "hopperd_ingress_records_total{queue=\"q2\"}");
    if (taken_after != taken) {
        e2e_dump_log(t->log, 20000);
        fail_msg("setup: q2 was not full: it took %.0f records after refusing one",
                 taken_after - taken);
    }

    struct e2e_downstream ds;
    memset(&ds, 0, sizeof(ds));
    pthread_mutex_init(&ds.mu, NULL);
    assert_int_equal(e2e_downstream_start(&ds, t->port2), 0);
    struct lines_wait w = {&ds, (size_t)(T_RECORDS + F_RECORDS)};
    int rc = e2e_wait_until(downstream_has, &w, 20000);
    e2e_downstream_stop(&ds);
    pthread_join(ft, NULL);
    long got_t = prefix_sequence(ds.data, ds.len, "rec-");
    long got_f = prefix_sequence(ds.data, ds.len, "fill-");
    hd_stream_close(&st, 1);
    hd_stream_close(&f.st, 1);
    free(f.data);
    free(ds.data);
    pthread_mutex_destroy(&ds.mu);
    if (rc < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("%ld of T's %d records and %ld of F's %d came out within 20 s "
                 "(T's client waits with the connection open)",
                 got_t, T_RECORDS, got_f, F_RECORDS);
    }
    assert_int_equal(f.rc, 0);
    assert_int_equal(got_t, T_RECORDS);
    assert_int_equal(got_f, F_RECORDS);
    stop(t);
}

/* hopper B: a TLS native source requiring client-ok, into a file sink. */
static pid_t
start_b(struct tenv *t, int b_port, int b_mport, const char *b_out, const char *b_log,
        const char *extra)
{
    char conf[700], text[4096];
    snprintf(conf, sizeof(conf), "%s/b.conf", t->dir);
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/bstate\nlog_level = debug\nmetrics_listen = 127.0.0.1:%d\n"
             "[queue q]\n%s"
             "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nformat = native\nqueue = q\n"
             "tls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s\ntls_allowed_peers = client-ok\n"
             "[sink out]\ntype = file\npath = %s\nqueue = q\nfsync = never\n",
             t->dir, b_mport, extra, b_port, cert(t, "server.pem"), cert(t, "server.key"),
             cert(t, "ca.pem"), b_out);
    e2e_write_file(conf, text);
    pid_t b = e2e_start(conf, b_log);
    assert_true(b > 0);
    if (e2e_wait_port(b_port, 10000) != 0) {
        e2e_dump_log(b_log, 0);
        fail_msg("B did not start");
    }
    return b;
}

/* A's TLS native sink into B, presenting client-ok (mutual TLS). */
static void
write_conf_a(struct tenv *t, int b_port, const char *queue_extra)
{
    char more[2048];
    snprintf(more, sizeof(more),
             "[sink down]\ntype = tcp\nconnect = 127.0.0.1:%d\nformat = native\nqueue = q\n"
             "reconnect_min = 20ms\nreconnect_max = 200ms\nbatch_bytes = 16KiB\n"
             "tls = on\ntls_ca = %s\ntls_cert = %s\ntls_key = %s\n",
             b_port, cert(t, "ca.pem"), cert(t, "client-ok.pem"), cert(t, "client-ok.key"));
    char text[8192];
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = debug\nmetrics_listen = 127.0.0.1:%d\n"
             "shutdown_timeout = 5s\n[queue q]\n%s"
             "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n%s",
             t->dir, t->mport, queue_extra, t->port, more);
    e2e_write_file(t->conf, text);
}

/* hopperd A -> TLS native sink (mutual TLS) -> hopperd B: intact, in
 * order; B counts A's handshake. */
static void
test_tls_mutual_chain(void **state)
{
    struct tenv *t = *state;
    int taken[3] = {t->port, t->port2, t->mport};
    int b_mport = fresh_port(taken, 3);
    char b_out[700], b_log[700];
    snprintf(b_out, sizeof(b_out), "%s/b-out.log", t->dir);
    snprintf(b_log, sizeof(b_log), "%s/b.log", t->dir);
    pid_t b = start_b(t, t->port2, b_mport, b_out, b_log, "");
    write_conf_a(t, t->port2, "");
    start(t);
    const long n = 20000;
    size_t len;
    char *data = records(0, n, &len);
    assert_int_equal(e2e_send(t->port, data, len), 0);
    free(data);
    wait_lines(t, b_out, n, 30000);
    expect_sequence(t, b_out, n, 0);
    wait_metric(t, b_mport, "hopperd_source_tls_handshakes_total{source=\"in\"}", 1, 5000);
    wait_log(t, t->log, "relay: sink down: connected to 127.0.0.1");
    stop(t);
    assert_int_equal(e2e_stop(b, SIGTERM, 10000), 0);
}

/* The same chain under kill -9 of A mid-drain, then of B (the downstream
 * resets A's TLS connection): nothing lost, first deliveries in order. */
static void
test_tls_kill9_and_reset(void **state)
{
    struct tenv *t = *state;
    int taken[3] = {t->port, t->port2, t->mport};
    int b_mport = fresh_port(taken, 3);
    char b_out[700], b_log[700];
    snprintf(b_out, sizeof(b_out), "%s/b-out.log", t->dir);
    snprintf(b_log, sizeof(b_log), "%s/b.log", t->dir);
    write_conf_a(t, t->port2, "durability = disk\nfsync = never\n");
    start(t);
    const long n = 100000;
    size_t len;
    char *data = records(0, n, &len);
    assert_int_equal(e2e_send(t->port, data, len), 0);
    free(data);
    wait_metric(t, t->mport, "hopperd_ingress_records_total{queue=\"q\"}", (double)n, 30000);

    /* B comes up; kill -9 A once B holds some of the records. B's queue
     * is on disk: a kill -9 of B must not lose what B acknowledged either. */
    const char *b_queue = "durability = disk\nfsync = never\n";
    pid_t b = start_b(t, t->port2, b_mport, b_out, b_log, b_queue);
    wait_lines(t, b_out, n / 10, 30000);
    assert_int_equal(e2e_stop(t->pid, SIGKILL, 5000), 128 + SIGKILL);
    t->pid = -1;
    start(t);
    /* Then B resets the connection: kill -9 B mid-drain, start it again. */
    wait_lines(t, b_out, n / 2, 30000);
    assert_int_equal(e2e_stop(b, SIGKILL, 5000), 128 + SIGKILL);
    b = start_b(t, t->port2, b_mport, b_out, b_log, b_queue);
    struct mwait w = {t->mport, "hopperd_queue_backlog_records{queue=\"q\"}", 0, -1};
    if (e2e_wait_until(metric_is, &w, 60000) < 0) {
        e2e_dump_log(t->log, 20000);
        fail_msg("A's backlog is %.0f, never 0", w.last);
    }
    wait_lines(t, b_out, n, 30000);
    stop(t);
    assert_int_equal(e2e_stop(b, SIGTERM, 10000), 0);
    expect_sequence(t, b_out, n, 1);
}

/* SIGHUP: a bad new key keeps the old context; a new certificate is used
 * by new connections while an established one carries on. */
static void
test_tls_reload(void **state)
{
    struct tenv *t = *state;
    struct hd_stream old;
    start_and_send(t, &old, 10);

    /* A key readable by others: rejected, the old context stays. */
    assert_int_equal(chmod(cert(t, "server.key"), 0644), 0);
    kill(t->pid, SIGHUP);
    wait_log(t, t->log, "reload: rejected");
    assert_int_equal(chmod(cert(t, "server.key"), 0600), 0);
    struct hd_stream st;
    assert_int_equal(tls_client(t, t->port, "client-ok", "ca.pem", &st), 0);
    hd_stream_close(&st, 0);

    /* A new server certificate, from the other CA: new connections get it
     * (a client trusting only ca.pem fails, one trusting rogue-ca.pem
     * succeeds). */
    char cmd[2000];
    snprintf(cmd, sizeof(cmd), "cp %s %s && cp %s %s", cert(t, "server2.pem"),
             cert(t, "server.pem"), cert(t, "server2.key"), cert(t, "server.key"));
    assert_int_equal(system(cmd), 0);
    kill(t->pid, SIGHUP);
    wait_log(t, t->log, "reload: TLS certificates, keys and CAs reloaded");
    wait_log(t, t->log, "reload: done");
    assert_true(tls_client(t, t->port, "client-ok", "ca.pem", &st) < 0);
    assert_int_equal(tls_client(t, t->port, "client-ok", "rogue-ca.pem", &st), 0);
    size_t len;
    char *data = records(10, 5, &len);
    assert_int_equal(hd_stream_write_all(&st, data, len, 0, NULL, NULL), 0);
    free(data);
    hd_stream_close(&st, 0);
    wait_lines(t, t->out, 15, 10000);
    /* The old connection still works, on the old certificate. */
    data = records(15, 10, &len);
    assert_int_equal(hd_stream_write_all(&old, data, len, 0, NULL, NULL), 0);
    free(data);
    hd_stream_close(&old, 0);
    wait_lines(t, t->out, 25, 10000);
    expect_sequence(t, t->out, 25, 0);
    stop(t);
}

/* hopperctl send and recv over TLS to a native source. */
static void
test_tls_hopperctl(void **state)
{
    struct tenv *t = *state;
    char src[2048];
    tls_source(t, src, sizeof(src), "format = native\nallow_subscribe = on\n");
    char text[8192];
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = debug\nmetrics_listen = 127.0.0.1:%d\n"
             "[queue q]\n[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n%s",
             t->dir, t->mport, t->port, src);
    e2e_write_file(t->conf, text);
    start(t);
    size_t len;
    char *data = records(0, 1000, &len);
    char input[700], got[700], cmd[4000];
    snprintf(input, sizeof(input), "%s/input", t->dir);
    snprintf(got, sizeof(got), "%s/got", t->dir);
    e2e_write_file(input, data);
    free(data);
    snprintf(cmd, sizeof(cmd),
             "%s send -a 127.0.0.1:%d --tls-ca %s --tls-cert %s --tls-key %s < %s 2>>%s",
             HOPPERCTL_BIN, t->port, cert(t, "ca.pem"), cert(t, "client-ok.pem"),
             cert(t, "client-ok.key"), input, t->log);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd),
             "%s recv -a 127.0.0.1:%d -n 1000 --tls-ca %s --tls-cert %s --tls-key %s "
             "--tls-server-name localhost > %s 2>>%s",
             HOPPERCTL_BIN, t->port, cert(t, "ca.pem"), cert(t, "client-ok.pem"),
             cert(t, "client-ok.key"), got, t->log);
    assert_int_equal(system(cmd), 0);
    expect_sequence(t, got, 1000, 0);
    /* Without a certificate: refused. */
    snprintf(cmd, sizeof(cmd), "%s send -a 127.0.0.1:%d --tls-ca %s < %s 2>>%s", HOPPERCTL_BIN,
             t->port, cert(t, "ca.pem"), input, t->log);
    assert_int_not_equal(system(cmd), 0);
    stop(t);
}

/* ---- syslog-ng (test_hd_tls_syslogng: this binary with --syslog-ng) ---- */

#define SYSLOG_NG "/usr/sbin/syslog-ng"

/* Start syslog-ng in the foreground on dir/NAME.conf holding `body`; its
 * log in dir/NAME.log. */
static pid_t
start_syslog_ng(struct tenv *t, const char *name, const char *body)
{
    char conf[700], logp[700], persist[700], pidf[700], ctl[700], text[8192];
    snprintf(conf, sizeof(conf), "%s/%s.conf", t->dir, name);
    snprintf(logp, sizeof(logp), "%s/%s.log", t->dir, name);
    snprintf(persist, sizeof(persist), "%s/%s.persist", t->dir, name);
    snprintf(pidf, sizeof(pidf), "%s/%s.pid", t->dir, name);
    snprintf(ctl, sizeof(ctl), "%s/%s.ctl", t->dir, name);
    snprintf(text, sizeof(text), "@version: 3.38\noptions { stats-freq(0); };\n%s", body);
    e2e_write_file(conf, text);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(SYSLOG_NG, "syslog-ng", "-F", "-e", "-f", conf, "-R", persist, "-p", pidf, "-c", ctl,
              (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

/* A real TLS client (pid, listening on t->port2 with its log at logp)
 * forwards 5000 lines into hopperd's TLS source: every one arrives, in
 * order, over a completed handshake; then both stop. */
static void
relay_through_client(struct tenv *t, pid_t client, const char *what, const char *logp)
{
    if (e2e_wait_port(t->port2, 10000) != 0) {
        e2e_dump_log(logp, 0);
        fail_msg("%s did not start", what);
    }
    const long n = 5000;
    size_t len;
    char *data = records(0, n, &len);
    assert_int_equal(e2e_send(t->port2, data, len), 0);
    free(data);
    wait_lines(t, t->out, n, 30000);
    expect_sequence(t, t->out, n, 0);
    wait_metric(t, t->mport, "hopperd_source_tls_handshakes_total{source=\"in\"}", 1, 5000);
    assert_int_equal(e2e_stop(client, SIGTERM, 10000), 0);
    stop(t);
}

/* syslog-ng as a TLS client (network(transport("tls")), client-ok's
 * certificate) forwarding what it receives in plaintext into a hopperd TLS
 * lines source that requires client-ok: intact and in order. */
static void
test_syslog_ng_client(void **state)
{
    struct tenv *t = *state;
    char src[2048], body[4096], slog[700];
    tls_source(t, src, sizeof(src), "");
    write_conf(t, src, "");
    start(t);
    snprintf(body, sizeof(body),
             "source s_in { network(ip(\"127.0.0.1\") port(%d) transport(\"tcp\") "
             "flags(no-parse)); };\n"
             "destination d_tls { network(\"127.0.0.1\" port(%d) transport(\"tls\")\n"
             "  tls(ca-file(\"%s\") cert-file(\"%s\") key-file(\"%s\") "
             "peer-verify(required-trusted))\n"
             "  template(\"${MSG}\\n\")); };\n"
             "log { source(s_in); destination(d_tls); };\n",
             t->port2, t->port, cert(t, "ca.pem"), cert(t, "client-ok.pem"),
             cert(t, "client-ok.key"));
    pid_t sng = start_syslog_ng(t, "sng-client", body);
    snprintf(slog, sizeof(slog), "%s/sng-client.log", t->dir);
    relay_through_client(t, sng, "syslog-ng", slog);
}

/* hopperd's TLS sink (client-ok's certificate) into a syslog-ng TLS source
 * that requires a trusted client certificate: intact and in order. */
static void
test_syslog_ng_server(void **state)
{
    struct tenv *t = *state;
    char body[4096], sout[700], slog[700], more[2048];
    snprintf(sout, sizeof(sout), "%s/sng-out", t->dir);
    snprintf(slog, sizeof(slog), "%s/sng-server.log", t->dir);
    snprintf(body, sizeof(body),
             "source s_tls { network(ip(\"127.0.0.1\") port(%d) transport(\"tls\") "
             "flags(no-parse)\n"
             "  tls(ca-file(\"%s\") cert-file(\"%s\") key-file(\"%s\") "
             "peer-verify(required-trusted))); };\n"
             "destination d_file { file(\"%s\" template(\"${MSG}\\n\")); };\n"
             "log { source(s_tls); destination(d_file); };\n",
             t->port2, cert(t, "ca.pem"), cert(t, "server.pem"), cert(t, "server.key"), sout);
    pid_t sng = start_syslog_ng(t, "sng-server", body);
    if (e2e_wait_port(t->port2, 10000) != 0) {
        e2e_dump_log(slog, 0);
        fail_msg("syslog-ng did not start");
    }
    /* A plaintext lines source in, the TLS sink out (instead of the file). */
    char text[8192];
    snprintf(more, sizeof(more),
             "[sink down]\ntype = tcp\nconnect = 127.0.0.1:%d\nqueue = q\n"
             "reconnect_min = 20ms\nreconnect_max = 200ms\n"
             "tls = on\ntls_ca = %s\ntls_cert = %s\ntls_key = %s\n",
             t->port2, cert(t, "ca.pem"), cert(t, "client-ok.pem"), cert(t, "client-ok.key"));
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = debug\nmetrics_listen = 127.0.0.1:%d\n"
             "[queue q]\n[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n%s",
             t->dir, t->mport, t->port, more);
    e2e_write_file(t->conf, text);
    start(t);
    const long n = 5000;
    size_t len;
    char *data = records(0, n, &len);
    assert_int_equal(e2e_send(t->port, data, len), 0);
    free(data);
    wait_lines(t, sout, n, 30000);
    stop(t);
    assert_int_equal(e2e_stop(sng, SIGTERM, 10000), 0);
    expect_sequence(t, sout, n, 0);
}

/* ---- rsyslog (test_hd_tls_rsyslog: this binary with --rsyslog) ---- */

static char rsyslog_root[600]; /* from rsyslog-private.sh */

/* rsyslog (omfwd with the openssl stream driver, x509/name, client-ok's
 * certificate) forwarding what it receives in plaintext into a hopperd TLS
 * lines source that requires client-ok: intact and in order. */
static void
test_rsyslog_client(void **state)
{
    struct tenv *t = *state;
    char src[2048], conf[700], logp[700], text[8192];
    tls_source(t, src, sizeof(src), "");
    write_conf(t, src, "");
    start(t);
    snprintf(conf, sizeof(conf), "%s/rsyslog.conf", t->dir);
    snprintf(logp, sizeof(logp), "%s/rsyslog.log", t->dir);
    snprintf(text, sizeof(text),
             "global(workDirectory=\"%s\" DefaultNetstreamDriver=\"ossl\"\n"
             "  DefaultNetstreamDriverCAFile=\"%s\" DefaultNetstreamDriverCertFile=\"%s\"\n"
             "  DefaultNetstreamDriverKeyFile=\"%s\")\n"
             "module(load=\"imtcp\")\n"
             "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\")\n"
             "template(name=\"raw\" type=\"string\" string=\"%%rawmsg%%\\n\")\n"
             "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"%d\" protocol=\"tcp\" "
             "template=\"raw\"\n"
             "  StreamDriver=\"ossl\" StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\"\n"
             "  StreamDriverPermittedPeers=\"localhost\")\n",
             t->dir, cert(t, "ca.pem"), cert(t, "client-ok.pem"), cert(t, "client-ok.key"),
             t->port2, t->port);
    e2e_write_file(conf, text);
    char bin[700], libdir[700], moddir[800], pidf[700];
    snprintf(bin, sizeof(bin), "%s/usr/sbin/rsyslogd", rsyslog_root);
    snprintf(libdir, sizeof(libdir), "%s/usr/lib/x86_64-linux-gnu", rsyslog_root);
    snprintf(moddir, sizeof(moddir), "%s/rsyslog", libdir);
    snprintf(pidf, sizeof(pidf), "%s/rsyslog.pid", t->dir);
    pid_t rs = fork();
    if (rs == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("LD_LIBRARY_PATH", libdir, 1);
        execl(bin, "rsyslogd", "-n", "-f", conf, "-i", pidf, "-M", moddir, (char *)NULL);
        _exit(127);
    }
    assert_true(rs > 0);
    relay_through_client(t, rs, "rsyslogd", logp);
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("HD_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("HD_TEST_FILTER"));
    }
    if (argc > 1 && strcmp(argv[1], "--syslog-ng") == 0) {
        if (access(SYSLOG_NG, X_OK) != 0) {
            printf("SKIP: %s is not installed (apt-get install syslog-ng-core)\n", SYSLOG_NG);
            return 77;
        }
        const struct CMUnitTest peers[] = {
            cmocka_unit_test_setup_teardown(test_syslog_ng_client, setup, teardown),
            cmocka_unit_test_setup_teardown(test_syslog_ng_server, setup, teardown),
        };
        return cmocka_run_group_tests_name("hopperd_tls_syslog_ng", peers, NULL, NULL);
    }
    if (argc > 1 && strcmp(argv[1], "--rsyslog") == 0) {
        FILE *p = popen(HD_SOURCE_DIR "/tests/hopperd/rsyslog-private.sh", "r");
        int got = p != NULL && fgets(rsyslog_root, sizeof(rsyslog_root), p) != NULL;
        int rc = p != NULL ? pclose(p) : -1;
        if (!got || rc != 0) {
            printf("SKIP: no private rsyslog with its openssl driver "
                   "(tests/hopperd/rsyslog-private.sh said why)\n");
            return 77;
        }
        rsyslog_root[strcspn(rsyslog_root, "\n")] = '\0';
        const struct CMUnitTest peers[] = {
            cmocka_unit_test_setup_teardown(test_rsyslog_client, setup, teardown),
        };
        return cmocka_run_group_tests_name("hopperd_tls_rsyslog", peers, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_check_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_s_client_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshake_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_partial_record_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_read_ahead_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_mutual_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_kill9_and_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_hopperctl, setup, teardown),
    };
    return cmocka_run_group_tests_name("hopperd_tls", tests, NULL, NULL);
}
