/* SPDX-License-Identifier: MIT */
/* The JetStream sink against a real nats-server started here (issue 13).
 *
 * Each test starts `nats-server -a 127.0.0.1 -p PORT -js -sd TMP` on a free
 * loopback port, creates the stream with libnats, runs hopperd with a tcp
 * source and a jetstream sink, sends records of 200 bytes ("rec-%08d-"
 * padded with a letter), and reads the stream back with an ordered libnats
 * consumer: exactly N messages, message k is record k byte for byte.
 *
 *   test_js_exactly_n      1M records (issue 13): exactly 1M in the stream,
 *                          in order, each byte for byte; its own ctest
 *                          entry, test_hd_jetstream_1m.
 *   test_js_kill9          kill -9 hopperd mid-drain, restart (again, with
 *                          more records, up to 5 times, until a restart
 *                          republished something the stream had): still
 *                          exactly N, in order;
 *                          hopperd_sink_duplicates_total > 0.
 *   test_js_stream_full    max_bytes + discard new: hopperd keeps the rest
 *                          (backlog), reports stream_full; once the limit is
 *                          raised it delivers them: every record exactly
 *                          once (order to within the in-flight window).
 *   test_js_bad_password   server with --user/--pass, hopperd with a wrong
 *                          password: a log line with the server's reason,
 *                          nothing acknowledged (backlog unchanged); the
 *                          right password by SIGHUP: delivered, once each.
 *   test_js_token          server with --auth: delivered; a reload naming a
 *                          missing creds file is refused, delivery goes on.
 *   test_js_creds          server in operator (JWT) mode, hopperd with a
 *                          creds file: delivered; a stranger's creds by
 *                          SIGHUP: refused by the server, nothing acked.
 *   test_js_cluster_leader_kill  3-node cluster, R3 stream: kill -9 the
 *                          stream leader mid-drain, restart it: every
 *                          record exactly once.
 *   test_js_cluster_all_down  stop all three for 30 s while producers keep
 *                          sending (hopperd spools), restart: every
 *                          record once.
 *
 * Skips (exit 77) when nats-server is not installed. HOPPER_TEST_QUICK=1
 * uses a tenth of the records. HOPPERD_E2E_ONLY=PATTERN runs only the
 * tests matching it, HOPPERD_E2E_SKIP=PATTERN all but those. Every wait is a condition polled to a deadline
 * (e2e_wait_until); only PIDs started here are signalled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_e2e_util.h"

#define NATS_SERVER "/usr/sbin/nats-server"
#define SUBJECT "hop.events"
#define STREAM "HOP"
#define REC_LEN 200

struct env {
    char *dir;
    int nats_port;
    pid_t nats;
    char servers[256]; /* hopperd's `servers` and the client's URL list */
    /* test_js_cluster: three servers */
    int cl_port[3], cl_route[3];
    pid_t cl_pid[3];
    int in_port;
    int metrics_port;
    pid_t hopperd;
    char conf[1024];
    char log[1024];
    char nats_log[1024];
    natsConnection *nc;
    jsCtx *js;
};

static long
nrecords(long full)
{
    return getenv("HOPPER_TEST_QUICK") != NULL ? full / 10 : full;
}

static void
record(long i, char *out)
{
    int n = snprintf(out, REC_LEN + 1, "rec-%08ld-", i);
    memset(out + n, 'a' + (int)(i % 26), REC_LEN - (size_t)n);
    out[REC_LEN] = '\0';
}

/* How the test's nats-server authenticates clients, and how a client does
 * (NULL: no authentication). */
struct nats_auth {
    const char *user, *pass; /* --user/--pass; a client's URL user:pass */
    const char *token;       /* --auth; a client's URL token */
    const char *conf;        /* -c: decentralized JWT auth (operator, accounts) */
    const char *creds;       /* a client's credentials file, with conf */
    const char *tls;         /* tls-certs.sh's directory: mutual TLS (--tlsverify) */
};

/* The JWT setup of tests/data/nats (see gen-jwt.js there). */
#define NATS_DATA HD_SOURCE_DIR "/tests/data/nats"
static const struct nats_auth jwt_auth = {
    .conf = NATS_DATA "/operator.conf", .creds = NATS_DATA "/user.creds"};

/* nats-server on e->nats_port with JetStream and authentication `a`. */
static pid_t
nats_start(struct env *e, const struct nats_auth *a)
{
    char port[16], store[1100];
    snprintf(port, sizeof(port), "%d", e->nats_port);
    snprintf(store, sizeof(store), "%s/js", e->dir);
    const char *argv[24] = {"nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store};
    int argc = 8;
    if (a != NULL && a->user != NULL) {
        argv[argc++] = "--user";
        argv[argc++] = a->user;
        argv[argc++] = "--pass";
        argv[argc++] = a->pass;
    } else if (a != NULL && a->token != NULL) {
        argv[argc++] = "--auth";
        argv[argc++] = a->token;
    } else if (a != NULL && a->conf != NULL) {
        argv[argc++] = "-c";
        argv[argc++] = a->conf;
    }
    char cert[1100], key[1100], ca[1100];
    if (a != NULL && a->tls != NULL) {
        snprintf(cert, sizeof(cert), "%s/server.pem", a->tls);
        snprintf(key, sizeof(key), "%s/server.key", a->tls);
        snprintf(ca, sizeof(ca), "%s/ca.pem", a->tls);
        argv[argc++] = "--tlsverify";
        argv[argc++] = "--tlscert";
        argv[argc++] = cert;
        argv[argc++] = "--tlskey";
        argv[argc++] = key;
        argv[argc++] = "--tlscacert";
        argv[argc++] = ca;
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(e->nats_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(NATS_SERVER, (char *const *)argv);
        _exit(127);
    }
    assert_true(pid > 0);
    assert_int_equal(e2e_wait_port(e->nats_port, 20000), 0);
    return pid;
}

static void
client_connect(struct env *e, const struct nats_auth *a)
{
    char url[128];
    if (a != NULL && a->user != NULL) {
        snprintf(url, sizeof(url), "nats://%s:%s@127.0.0.1:%d", a->user, a->pass, e->nats_port);
    } else if (a != NULL && a->token != NULL) {
        snprintf(url, sizeof(url), "nats://%s@127.0.0.1:%d", a->token, e->nats_port);
    } else {
        snprintf(url, sizeof(url), "nats://127.0.0.1:%d", e->nats_port);
    }
    natsOptions *o = NULL;
    assert_int_equal(natsOptions_Create(&o), NATS_OK);
    assert_int_equal(natsOptions_SetURL(o, url), NATS_OK);
    if (a != NULL && a->creds != NULL) {
        assert_int_equal(natsOptions_SetUserCredentialsFromFiles(o, a->creds, NULL), NATS_OK);
    }
    if (a != NULL && a->tls != NULL) {
        char f[1100], k[1100];
        assert_int_equal(natsOptions_SetSecure(o, true), NATS_OK);
        snprintf(f, sizeof(f), "%s/ca.pem", a->tls);
        assert_int_equal(natsOptions_LoadCATrustedCertificates(o, f), NATS_OK);
        snprintf(f, sizeof(f), "%s/client-ok.pem", a->tls);
        snprintf(k, sizeof(k), "%s/client-ok.key", a->tls);
        assert_int_equal(natsOptions_LoadCertificatesChain(o, f, k), NATS_OK);
    }
    natsStatus st = natsConnection_Connect(&e->nc, o);
    natsOptions_Destroy(o);
    if (st != NATS_OK) {
        fail_msg("connect %s: %s (nats-server log %s)", url, natsStatus_GetText(st), e->nats_log);
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    assert_int_equal(natsConnection_JetStream(&e->js, e->nc, &jo), NATS_OK);
}

/* Create the stream (update = 0) or change its limit (update = 1): file
 * storage, discard new, a 2-minute duplicate window, `replicas`. */
static natsStatus
stream_try(struct env *e, int64_t max_bytes, int64_t replicas, int update, jsErrCode *jerr)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {SUBJECT};
    sc.Name = STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.MaxBytes = max_bytes;
    sc.Discard = js_DiscardNew;
    sc.Replicas = replicas;
    sc.Duplicates = (int64_t)120 * 1000000000;
    jsStreamInfo *si = NULL;
    natsStatus st = update ? js_UpdateStream(&si, e->js, &sc, NULL, jerr)
                           : js_AddStream(&si, e->js, &sc, NULL, jerr);
    jsStreamInfo_Destroy(si);
    return st;
}

/* The same, single replica, failing the test on an error. */
static void
stream_put(struct env *e, int64_t max_bytes, int update)
{
    jsErrCode jerr = 0;
    natsStatus st = stream_try(e, max_bytes, 1, update, &jerr);
    if (st != NATS_OK) {
        fail_msg("%s stream: %s (%d)", update ? "update" : "add", natsStatus_GetText(st),
                 (int)jerr);
    }
}

static uint64_t
stream_msgs(struct env *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, e->js, STREAM, NULL, &jerr) != NATS_OK) {
        return UINT64_MAX;
    }
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

/* An ordered consumer of the whole stream, from its first message. */
static natsSubscription *
stream_reader(struct env *e)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Ordered = true;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus st = NATS_OK;
    /* Right after a cluster restart the consumer create can time out,
     * find no responders while the meta leader is being elected, or fail
     * (NATS_ERR, no API code) while the new ephemeral consumer's replicas
     * are placed; retry to a deadline rather than fail on the first
     * answer. */
    for (int attempt = 0; attempt < 12; attempt++) {
        st = js_SubscribeSync(&sub, e->js, SUBJECT, NULL, &so, &jerr);
        if (st != NATS_TIMEOUT && st != NATS_NO_RESPONDERS && st != NATS_ERR) {
            break;
        }
        if (st != NATS_TIMEOUT) {
            nats_Sleep(500); /* back off: those answers come at once */
        }
    }
    if (st != NATS_OK) {
        fail_msg("subscribe: %s (%d): %s", natsStatus_GetText(st), (int)jerr,
                 nats_GetLastError(NULL) != NULL ? nats_GetLastError(NULL) : "");
    }
    return sub;
}

/* Read the whole stream with an ordered consumer and check that it holds
 * exactly records first..last (inclusive), in order, byte for byte. */
static void
stream_check(struct env *e, long first, long last)
{
    uint64_t want = (uint64_t)(last - first + 1);
    assert_int_equal(stream_msgs(e), want);
    natsSubscription *sub = stream_reader(e);
    char exp[REC_LEN + 1];
    for (long i = first; i <= last; i++) {
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, sub, 10000);
        if (st != NATS_OK) {
            fail_msg("stream message for record %ld: %s", i, natsStatus_GetText(st));
        }
        record(i, exp);
        if (natsMsg_GetDataLength(m) != REC_LEN ||
            memcmp(natsMsg_GetData(m), exp, REC_LEN) != 0) {
            fail_msg("stream message %ld: got '%.20s' (%d bytes), want '%.20s'", i - first + 1,
                     natsMsg_GetData(m), natsMsg_GetDataLength(m), exp);
        }
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    assert_int_equal(stream_msgs(e), want); /* nothing arrived meanwhile */
}

/* The stream holds each of records 0..n-1 exactly once, message k being a
 * record within `window` of k. */
static void
stream_check_set(struct env *e, long n, long window)
{
    assert_int_equal(stream_msgs(e), (uint64_t)n);
    unsigned char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    natsSubscription *sub = stream_reader(e);
    char exp[REC_LEN + 1];
    long late = 0;
    for (long k = 0; k < n; k++) {
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, sub, 10000);
        if (st != NATS_OK) {
            fail_msg("stream message %ld: %s", k, natsStatus_GetText(st));
        }
        const char *d = natsMsg_GetData(m);
        long i = -1;
        if (natsMsg_GetDataLength(m) == REC_LEN && sscanf(d, "rec-%08ld-", &i) == 1 && i >= 0 &&
            i < n) {
            record(i, exp);
        }
        if (i < 0 || i >= n || memcmp(d, exp, REC_LEN) != 0) {
            fail_msg("stream message %ld is not one of the records sent", k);
        }
        if (seen[i]) {
            fail_msg("record %ld is in the stream twice", i);
        }
        seen[i] = 1;
        if (i != k) {
            late++;
        }
        if (labs(i - k) > window) {
            fail_msg("stream message %ld is record %ld: out of order by more than %ld", k, i,
                     window);
        }
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    free(seen);
    print_message("%ld records, each once; %ld not at their own position\n", n, late);
}

static void
env_init(struct env *e)
{
    memset(e, 0, sizeof(*e));
    e->dir = e2e_tmpdir();
    assert_non_null(e->dir);
    e->nats_port = e2e_free_port();
    e->in_port = e2e_free_port();
    e->metrics_port = e2e_free_port();
    snprintf(e->conf, sizeof(e->conf), "%s/hopperd.conf", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/hopperd.log", e->dir);
    snprintf(e->nats_log, sizeof(e->nats_log), "%s/nats.log", e->dir);
    snprintf(e->servers, sizeof(e->servers), "nats://127.0.0.1:%d", e->nats_port);
}

static void
env_free(struct env *e)
{
    if (e->hopperd > 0) {
        e2e_stop(e->hopperd, SIGTERM, 20000);
    }
    if (e->js != NULL) {
        jsCtx_Destroy(e->js);
    }
    if (e->nc != NULL) {
        natsConnection_Destroy(e->nc);
    }
    if (e->nats > 0) {
        e2e_stop(e->nats, SIGTERM, 20000);
    }
    for (int i = 0; i < 3; i++) {
        if (e->cl_pid[i] > 0) {
            e2e_stop(e->cl_pid[i], SIGTERM, 20000);
        }
    }
    e2e_rmtree(e->dir);
    free(e->dir);
}

static void
write_conf(struct env *e, const char *sink_extra)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "[hopperd]\nstate_dir = %s/state\nlog_level = info\n"
             "metrics_listen = 127.0.0.1:%d\nshutdown_timeout = 5s\n"
             "[queue q]\ndurability = disk\nfsync = never\ndisk_bytes = 1GiB\n"
             "max_record_bytes = 1KiB\ncheckpoint_interval = 60m\n"
             "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nqueue = q\n"
             "[sink js]\ntype = jetstream\nqueue = q\nservers = %s\n"
             "subject = " SUBJECT "\nstream = " STREAM "\n"
             "reconnect_min = 20ms\nreconnect_max = 300ms\nack_timeout = 2s\n%s",
             e->dir, e->metrics_port, e->in_port, e->servers, sink_extra);
    e2e_write_file(e->conf, text);
}

static void
hopperd_start(struct env *e)
{
    e->hopperd = e2e_start(e->conf, e->log);
    assert_true(e->hopperd > 0);
    assert_int_equal(e2e_wait_port(e->in_port, 20000), 0);
    assert_int_equal(e2e_wait_port(e->metrics_port, 20000), 0);
}

/* Send records first..last as lines over one connection, SEND_CHUNK
 * records per write (1M records at once would be a 201 MB buffer). */
#define SEND_CHUNK 4096
static void
send_records(struct env *e, long first, long last)
{
    char *buf = malloc((size_t)SEND_CHUNK * (REC_LEN + 1));
    assert_non_null(buf);
    int fd = e2e_connect(e->in_port);
    long i = first;
    int rc = fd < 0 ? -1 : 0;
    while (rc == 0 && i <= last) {
        size_t len = 0;
        for (long k = 0; k < SEND_CHUNK && i <= last; k++, i++) {
            record(i, buf + len);
            buf[len + REC_LEN] = '\n';
            len += REC_LEN + 1;
        }
        rc = e2e_write_all(fd, buf, len);
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    if (rc != 0) {
        fail_msg("send to hopperd on port %d failed before record %ld", e->in_port, i);
    }
}

struct metric_at_least {
    int port;
    const char *name;
    double min;
};

static int
metric_at_least(void *arg)
{
    struct metric_at_least *m = arg;
    return e2e_metric(m->port, m->name) >= m->min;
}

static int
backlog_empty(void *arg)
{
    struct env *e = arg;
    return e2e_metric(e->metrics_port, "hopperd_queue_backlog_records{queue=\"q\"}") == 0;
}

struct msgs_at_least {
    struct env *e;
    uint64_t n;
};

static int
msgs_at_least(void *arg)
{
    struct msgs_at_least *m = arg;
    uint64_t have = stream_msgs(m->e);
    return have != UINT64_MAX && have >= m->n;
}

#define EGRESS "hopperd_egress_records_total{sink=\"js\",queue=\"q\"}"
#define BACKLOG "hopperd_queue_backlog_records{queue=\"q\"}"
#define DUPS "hopperd_sink_duplicates_total{sink=\"js\"}"

static void
wait_egress(struct env *e, long n, int timeout_ms)
{
    struct metric_at_least m = {e->metrics_port, EGRESS, (double)n};
    if (e2e_wait_until(metric_at_least, &m, timeout_ms) != 0) {
        fail_msg("egress stayed at %.0f of %ld (log %s)", e2e_metric(e->metrics_port, EGRESS), n,
                 e->log);
    }
}

/* Every test gets a fresh env; teardown stops what it started even when
 * the test failed. */
static int
setup(void **state)
{
    struct env *e = malloc(sizeof(*e));
    if (e == NULL) {
        return -1;
    }
    env_init(e);
    *state = e;
    return 0;
}

static int
teardown(void **state)
{
    struct env *e = *state;
    env_free(e);
    free(e);
    return 0;
}

/* nats-server (with authentication `a`, or none), the stream (max_bytes,
 * -1 = none), then hopperd with `sink_extra` in its jetstream sink. */
static void
js_up(struct env *e, const struct nats_auth *a, int64_t max_bytes, const char *sink_extra)
{
    e->nats = nats_start(e, a);
    client_connect(e, a);
    stream_put(e, max_bytes, 0);
    write_conf(e, sink_extra);
    hopperd_start(e);
}

static void
test_js_exactly_n(void **state)
{
    struct env *e = *state;
    js_up(e, NULL, -1, "");
    long n = nrecords(1000000);
    uint64_t t0 = e2e_now_ms();
    send_records(e, 0, n - 1);
    wait_egress(e, n, 240000);
    uint64_t t1 = e2e_now_ms();
    print_message("%ld records of %d B through hopperd into the stream in %llu ms\n", n, REC_LEN,
                  (unsigned long long)(t1 - t0));
    assert_int_equal(e2e_metric(e->metrics_port, BACKLOG), 0);
    stream_check(e, 0, n - 1);
    print_message("read back and checked in %llu ms\n",
                  (unsigned long long)(e2e_now_ms() - t1));
    assert_true(e2e_metric(e->metrics_port, "hopperd_sink_publish_latency_seconds_count{sink=\"js\"}") >= (double)n);
    /* A graceful stop exits 0 (nats.c released, no leak reports under ASan). */
    assert_int_equal(e2e_stop(e->hopperd, SIGTERM, 20000), 0);
    e->hopperd = 0;
}

static void
test_js_kill9(void **state)
{
    struct env *e = *state;
    /* A small window slows the drain so the kill lands in the middle. */
    js_up(e, NULL, -1, "max_inflight = 8\n");
    long n = nrecords(50000);
    /* Kill -9 mid-drain and restart, up to 5 times, until the dedup was
     * exercised: a kill right after the queue marked its position, with
     * nothing in flight, leaves nothing to publish twice. Each round sends
     * a fifth of the records first, so a drain is always in progress. */
    long chunk = n / 5, sent = 0;
    for (int kill = 1;; kill++) {
        long upto = kill == 5 ? n : sent + chunk;
        send_records(e, sent, upto - 1);
        struct msgs_at_least some = {e, (uint64_t)(sent + chunk / 5)};
        sent = upto;
        assert_int_equal(e2e_wait_until(msgs_at_least, &some, 60000), 0);
        assert_int_equal(e2e_stop(e->hopperd, SIGKILL, 10000), 128 + SIGKILL);
        e->hopperd = 0;
        print_message("kill %d with %llu of %ld sent in the stream\n", kill,
                      (unsigned long long)stream_msgs(e), sent);
        hopperd_start(e);
        struct metric_at_least dups = {e->metrics_port, DUPS, 1};
        if (e2e_wait_until(metric_at_least, &dups, 3000) == 0 || kill == 5) {
            break;
        }
    }
    if (sent < n) {
        send_records(e, sent, n - 1);
    }
    /* After the restart hopperd publishes again what it had not
     * acknowledged durably; the stream drops what it already has. */
    struct msgs_at_least all = {e, (uint64_t)n};
    assert_int_equal(e2e_wait_until(msgs_at_least, &all, 120000), 0);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 60000), 0);
    if (e2e_metric(e->metrics_port, DUPS) < 1) {
        fail_msg("no duplicate publish acks after 5 kills (log %s)", e->log);
    }
    print_message("duplicates dropped by the stream: %.0f\n", e2e_metric(e->metrics_port, DUPS));
    stream_check(e, 0, n - 1);
}

static void
test_js_stream_full(void **state)
{
    struct env *e = *state;
    js_up(e, NULL, 64 * 1024, "max_inflight = 64\n");
    long n = 2000; /* 400 KB: far more than the stream takes */
    send_records(e, 0, n - 1);
    struct metric_at_least in = {e->metrics_port, "hopperd_ingress_records_total{queue=\"q\"}",
                                 (double)n};
    assert_int_equal(e2e_wait_until(metric_at_least, &in, 10000), 0);
    struct metric_at_least full = {e->metrics_port,
                                   "hopperd_sink_publish_errors_total{sink=\"js\",cause=\"stream_full\"}",
                                   1};
    if (e2e_wait_until(metric_at_least, &full, 30000) != 0) {
        fail_msg("no stream_full error reported (log %s)", e->log);
    }
    struct e2e_grep g = {e->log, "[stream_full]"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &g, 10000), 0);
    uint64_t stored = stream_msgs(e);
    assert_true(stored > 0 && stored < (uint64_t)n);
    /* hopperd keeps what the stream refused: nothing beyond it is acked. */
    double backlog = e2e_metric(e->metrics_port, BACKLOG);
    assert_true(backlog >= (double)n - (double)stored);
    assert_true(e2e_metric(e->metrics_port, EGRESS) <= (double)stored);
    /* The stream's content so far is exactly records 0..stored-1. */
    stream_check(e, 0, (long)stored - 1);
    /* Make room (raise the stream's limit): hopperd delivers the rest once
     * its backoff retries, each record exactly once. Records retried after
     * a failure may land after later ones of the same window (documented),
     * so order is checked to within max_inflight. */
    stream_put(e, -1, 1);
    wait_egress(e, n, 60000);
    assert_int_equal(e2e_metric(e->metrics_port, BACKLOG), 0);
    stream_check_set(e, n, 64);
}

static void
test_js_bad_password(void **state)
{
    struct env *e = *state;
    const struct nats_auth auth = {.user = "hop", .pass = "right"};
    js_up(e, &auth, -1, "user = hop\npassword = wrong\n");
    send_records(e, 0, 99);
    struct metric_at_least in = {e->metrics_port, BACKLOG, 100};
    assert_int_equal(e2e_wait_until(metric_at_least, &in, 10000), 0);
    struct e2e_grep g = {e->log, "Authorization Violation"};
    if (e2e_wait_until(e2e_file_contains, &g, 20000) != 0) {
        char *log = e2e_read_file(e->log, NULL);
        fail_msg("no authorization error in the log:\n%s", log != NULL ? log : "");
    }
    struct metric_at_least fails = {e->metrics_port,
                                    "hopperd_sink_connect_failures_total{sink=\"js\",queue=\"q\"}", 2};
    assert_int_equal(e2e_wait_until(metric_at_least, &fails, 20000), 0);
    assert_int_equal(e2e_metric(e->metrics_port, BACKLOG), 100);
    assert_int_equal(e2e_metric(e->metrics_port, EGRESS), 0);
    assert_int_equal(stream_msgs(e), 0);
    /* The password is fixed and SIGHUP applies it: the sink reconnects
     * with it and delivers, each record once. */
    write_conf(e, "user = hop\npassword = right\n");
    assert_int_equal(kill(e->hopperd, SIGHUP), 0);
    struct e2e_grep changed = {e->log, "servers or credentials changed, reconnecting"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &changed, 10000), 0);
    wait_egress(e, 100, 30000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 10000), 0);
    stream_check(e, 0, 99);
}

/* Token authentication (nats-server --auth): records delivered. A reload
 * to a creds file that does not exist is refused as a whole, FILE:LINE,
 * and the running sink goes on with its token. */
static void
test_js_token(void **state)
{
    struct env *e = *state;
    const struct nats_auth auth = {.token = "s3cr3t-token"};
    js_up(e, &auth, -1, "token = s3cr3t-token\n");
    long n = 1000;
    send_records(e, 0, n / 2 - 1);
    wait_egress(e, n / 2, 30000);
    char bad[1200];
    snprintf(bad, sizeof(bad), "creds = %s/missing.creds\n", e->dir);
    write_conf(e, bad);
    assert_int_equal(kill(e->hopperd, SIGHUP), 0);
    struct e2e_grep refused = {e->log, "missing.creds: No such file or directory"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &refused, 10000), 0);
    struct e2e_grep kept = {e->log, "reload: rejected; the running configuration stays in effect"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &kept, 10000), 0);
    send_records(e, n / 2, n - 1);
    wait_egress(e, n, 30000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 10000), 0);
    stream_check(e, 0, n - 1);
}

/* creds = FILE: a nats-server in operator mode (JWT: operator, system
 * account, account HOPPER with JetStream; tests/data/nats) and hopperd with
 * the user's credentials file: delivered, each record once. Then the same
 * hopperd with a creds file of a user no account of this server signed:
 * the server's reason in the log, nothing acknowledged. */
static void
test_js_creds(void **state)
{
    struct env *e = *state;
    char extra[1200];
    snprintf(extra, sizeof(extra), "creds = %s\n", jwt_auth.creds);
    js_up(e, &jwt_auth, -1, extra);
    long n = 1000;
    send_records(e, 0, n - 1);
    wait_egress(e, n, 30000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 10000), 0);
    stream_check(e, 0, n - 1);
    /* A stranger's credentials: well formed, refused by the server. */
    snprintf(extra, sizeof(extra), "creds = %s/stranger.creds\n", NATS_DATA);
    write_conf(e, extra);
    assert_int_equal(kill(e->hopperd, SIGHUP), 0);
    struct e2e_grep changed = {e->log, "servers or credentials changed, reconnecting"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &changed, 10000), 0);
    /* The relay has left the old connection once a connect failed. */
    struct metric_at_least refused = {e->metrics_port,
                                      "hopperd_sink_connect_failures_total{sink=\"js\",queue=\"q\"}", 1};
    assert_int_equal(e2e_wait_until(metric_at_least, &refused, 20000), 0);
    send_records(e, n, n + 99);
    struct metric_at_least in = {e->metrics_port, BACKLOG, 100};
    assert_int_equal(e2e_wait_until(metric_at_least, &in, 10000), 0);
    struct e2e_grep g = {e->log, "Authorization Violation"};
    if (e2e_wait_until(e2e_file_contains, &g, 20000) != 0) {
        char *log = e2e_read_file(e->log, NULL);
        fail_msg("no authorization error in the log:\n%s", log != NULL ? log : "");
        free(log);
    }
    assert_int_equal(e2e_metric(e->metrics_port, EGRESS), n);
    assert_int_equal(stream_msgs(e), (uint64_t)n);
}

/* TLS to the servers: nats-server requires client certificates
 * (--tlsverify) signed by the test CA (tls-certs.sh, made here with the
 * openssl command). hopperd's sink with tls_ca, tls_cert and tls_key:
 * every record once, the server's name checked (localhost, the default
 * would be 127.0.0.1, which the certificate also names). Then, by SIGHUP,
 * a client certificate from another CA: refused by the server, nothing more
 * acknowledged, and back to the good one: the rest delivered once. */
static void
test_js_tls(void **state)
{
    struct env *e = *state;
    char certs[1100], cmd[2400];
    snprintf(certs, sizeof(certs), "%s/certs", e->dir);
    assert_int_equal(mkdir(certs, 0700), 0);
    snprintf(cmd, sizeof(cmd), "%s/tests/hopperd/tls-certs.sh %s", HD_SOURCE_DIR, certs);
    if (system(cmd) != 0) {
        fail_msg("tls-certs.sh failed: %s", cmd);
    }
    const struct nats_auth auth = {.tls = certs};
    char good[3600], bad[3600];
    snprintf(good, sizeof(good),
             "tls = on\ntls_ca = %s/ca.pem\ntls_cert = %s/client-ok.pem\n"
             "tls_key = %s/client-ok.key\ntls_server_name = localhost\n",
             certs, certs, certs);
    snprintf(bad, sizeof(bad),
             "tls = on\ntls_ca = %s/ca.pem\ntls_cert = %s/client-rogue.pem\n"
             "tls_key = %s/client-rogue.key\ntls_server_name = localhost\n",
             certs, certs, certs);
    js_up(e, &auth, -1, good);
    long n = 1000;
    send_records(e, 0, n / 2 - 1);
    wait_egress(e, n / 2, 30000);
    write_conf(e, bad);
    assert_int_equal(kill(e->hopperd, SIGHUP), 0);
    struct e2e_grep changed = {e->log, "servers or credentials changed, reconnecting"};
    assert_int_equal(e2e_wait_until(e2e_file_contains, &changed, 10000), 0);
    struct metric_at_least refused = {e->metrics_port,
                                      "hopperd_sink_connect_failures_total{sink=\"js\",queue=\"q\"}", 1};
    assert_int_equal(e2e_wait_until(metric_at_least, &refused, 20000), 0);
    send_records(e, n / 2, n - 1);
    struct metric_at_least in = {e->metrics_port, BACKLOG, (double)(n / 2)};
    assert_int_equal(e2e_wait_until(metric_at_least, &in, 10000), 0);
    assert_int_equal(stream_msgs(e), (uint64_t)(n / 2));
    write_conf(e, good);
    assert_int_equal(kill(e->hopperd, SIGHUP), 0);
    wait_egress(e, n, 30000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 10000), 0);
    stream_check(e, 0, n - 1);
}

/* Server i of the 3-node cluster "hop" (store dir cN, name nN). */
static pid_t
cluster_start(struct env *e, int i)
{
    char port[16], route[64], routes[256], store[1100], name[16], logp[1100];
    snprintf(port, sizeof(port), "%d", e->cl_port[i]);
    snprintf(route, sizeof(route), "nats://127.0.0.1:%d", e->cl_route[i]);
    snprintf(routes, sizeof(routes), "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
             e->cl_route[0], e->cl_route[1], e->cl_route[2]);
    snprintf(store, sizeof(store), "%s/c%d", e->dir, i + 1);
    snprintf(name, sizeof(name), "n%d", i + 1);
    snprintf(logp, sizeof(logp), "%s/nats%d.log", e->dir, i + 1);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(NATS_SERVER, "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store, "-n",
              name, "--cluster_name", "hop", "--cluster", route, "--routes", routes, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

/* The R3 stream exists (a pred: the meta leader must be elected first). */
static int
stream_created(void *arg)
{
    jsErrCode jerr = 0;
    return stream_try(arg, -1, 3, 0, &jerr) == NATS_OK;
}

/* Index of the server leading the stream, or -1 (none right now). */
static int
stream_leader(struct env *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    int who = -1;
    if (js_GetStreamInfo(&si, e->js, STREAM, NULL, &jerr) == NATS_OK && si->Cluster != NULL &&
        si->Cluster->Leader != NULL && sscanf(si->Cluster->Leader, "n%d", &who) == 1) {
        who--;
    }
    jsStreamInfo_Destroy(si);
    return who >= 0 && who < 3 ? who : -1;
}

/* A 3-node cluster, stream with 3 replicas: kill -9 the stream leader
 * mid-drain, restart it: every record exactly once (order to within the
 * in-flight window: publishes fail over the election and are retried). */
static void
cluster_up(struct env *e)
{
    int len = 0;
    for (int i = 0; i < 3; i++) {
        e->cl_port[i] = e2e_free_port();
        e->cl_route[i] = e2e_free_port();
    }
    for (int i = 0; i < 3; i++) {
        e->cl_pid[i] = cluster_start(e, i);
        len += snprintf(e->servers + len, sizeof(e->servers) - (size_t)len, "%snats://127.0.0.1:%d",
                        i > 0 ? "," : "", e->cl_port[i]);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(e2e_wait_port(e->cl_port[i], 20000), 0);
    }
    assert_int_equal(natsConnection_ConnectTo(&e->nc, e->servers), NATS_OK);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    assert_int_equal(natsConnection_JetStream(&e->js, e->nc, &jo), NATS_OK);
    /* The meta leader is elected first; retry until the stream exists. */
    assert_int_equal(e2e_wait_until(stream_created, e, 30000), 0);
    write_conf(e, "max_inflight = 64\n");
    hopperd_start(e);
}

static void
test_js_cluster_leader_kill(void **state)
{
    struct env *e = *state;
    cluster_up(e);
    long n = nrecords(50000);
    send_records(e, 0, n - 1);
    struct msgs_at_least some = {e, (uint64_t)n / 5};
    assert_int_equal(e2e_wait_until(msgs_at_least, &some, 60000), 0);
    int leader = stream_leader(e);
    assert_true(leader >= 0);
    uint64_t before = stream_msgs(e);
    assert_int_equal(e2e_stop(e->cl_pid[leader], SIGKILL, 10000), 128 + SIGKILL);
    e->cl_pid[leader] = 0;
    print_message("killed stream leader n%d with about %llu of %ld in the stream\n", leader + 1,
                  (unsigned long long)before, n);
    /* The two others elect a new leader and hopperd goes on. */
    struct msgs_at_least more = {e, (uint64_t)n / 2};
    assert_int_equal(e2e_wait_until(msgs_at_least, &more, 120000), 0);
    e->cl_pid[leader] = cluster_start(e, leader);
    assert_int_equal(e2e_wait_port(e->cl_port[leader], 20000), 0);
    wait_egress(e, n, 180000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 60000), 0);
    print_message("errors: timeout %.0f, no_responders %.0f, other %.0f; duplicates %.0f\n",
                  e2e_metric(e->metrics_port, "hopperd_sink_publish_errors_total{sink=\"js\",cause=\"timeout\"}"),
                  e2e_metric(e->metrics_port, "hopperd_sink_publish_errors_total{sink=\"js\",cause=\"no_responders\"}"),
                  e2e_metric(e->metrics_port, "hopperd_sink_publish_errors_total{sink=\"js\",cause=\"other\"}"),
                  e2e_metric(e->metrics_port, DUPS));
    stream_check_set(e, n, 64);
}

/* Has the outage lasted until *(uint64_t *)arg (monotonic ms)? A pred:
 * the outage's length is what test_js_cluster_all_down asserts about. */
static int
time_reached(void *arg)
{
    return e2e_now_ms() >= *(const uint64_t *)arg;
}

/* Lines of hopperd's log that contain `needle`. */
static long
log_lines_with(struct env *e, const char *needle)
{
    char *text = e2e_read_file(e->log, NULL);
    long n = 0;
    for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
        n++;
    }
    free(text);
    return n;
}

/* Stop all three servers for 30 s (3 s with HOPPER_TEST_QUICK) while a
 * producer keeps sending, a slice every second: hopperd spools to disk and
 * keeps retrying with its capped backoff, without a warning per attempt;
 * restart them: every record exactly once. */
static void
test_js_cluster_all_down(void **state)
{
    struct env *e = *state;
    cluster_up(e);
    long n = nrecords(50000);
    send_records(e, 0, n / 2 - 1);
    struct msgs_at_least some = {e, (uint64_t)n / 10};
    assert_int_equal(e2e_wait_until(msgs_at_least, &some, 60000), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_not_equal(e2e_stop(e->cl_pid[i], SIGTERM, 20000), -1);
        e->cl_pid[i] = 0;
    }
    const char *fails = "hopperd_sink_connect_failures_total{sink=\"js\",queue=\"q\"}";
    double failures0 = e2e_metric(e->metrics_port, fails);
    long warnings0 = log_lines_with(e, "warning: relay: sink js");
    /* Producers keep sending through the outage; hopperd spools. */
    long outage_s = getenv("HOPPER_TEST_QUICK") != NULL ? 3 : 30;
    uint64_t t0 = e2e_now_ms();
    long sent = n / 2, slice = (n - n / 2 + outage_s - 1) / outage_s;
    for (long s = 1; s <= outage_s; s++) {
        long upto = sent + slice < n ? sent + slice : n;
        if (upto > sent) {
            send_records(e, sent, upto - 1);
            sent = upto;
        }
        struct metric_at_least in = {e->metrics_port,
                                     "hopperd_ingress_records_total{queue=\"q\"}", (double)sent};
        assert_int_equal(e2e_wait_until(metric_at_least, &in, 20000), 0);
        uint64_t tick = t0 + (uint64_t)s * 1000;
        assert_int_equal(e2e_wait_until(time_reached, &tick, 2000), 0);
    }
    uint64_t held_ms = e2e_now_ms() - t0;
    double failures = e2e_metric(e->metrics_port, fails) - failures0;
    long warnings = log_lines_with(e, "warning: relay: sink js") - warnings0;
    double backlog = e2e_metric(e->metrics_port, BACKLOG);
    print_message("all down for %llu ms: backlog %.0f of %ld, %.0f failed connects, %ld warnings\n",
                  (unsigned long long)held_ms, backlog, n, failures, warnings);
    assert_true(held_ms >= (uint64_t)outage_s * 1000);
    assert_true(backlog >= (double)(n - n / 2));
    /* It kept trying (reconnect_max = 300ms) and said so once, not per
     * attempt. */
    assert_true(failures >= (double)outage_s);
    assert_true(warnings <= 2);
    for (int i = 0; i < 3; i++) {
        e->cl_pid[i] = cluster_start(e, i);
    }
    wait_egress(e, n, 180000);
    assert_int_equal(e2e_wait_until(backlog_empty, e, 60000), 0);
    stream_check_set(e, n, 64);
}

int
main(void)
{
    if (access(NATS_SERVER, X_OK) != 0) {
        printf("SKIP: %s not installed\n", NATS_SERVER);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_js_exactly_n, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_stream_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_bad_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_creds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_cluster_leader_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_js_cluster_all_down, setup, teardown),
    };
    if (getenv("HOPPERD_E2E_ONLY") != NULL) {
        cmocka_set_test_filter(getenv("HOPPERD_E2E_ONLY"));
    }
    if (getenv("HOPPERD_E2E_SKIP") != NULL) {
        cmocka_set_skip_filter(getenv("HOPPERD_E2E_SKIP"));
    }
    int rc = cmocka_run_group_tests_name("hopperd jetstream", tests, NULL, NULL);
    nats_Close();
    return rc;
}
