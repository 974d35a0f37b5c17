/* SPDX-License-Identifier: MIT */
/* hopperd's group commit (src/hopperd/commit.h) with the listener loop run
 * in this process, so the library's fsio hooks (src/lib/fsio.h) see its
 * file system calls:
 *   - no `ok` before its records are durable: the trace hook counts the
 *     records (marked payloads, compression off) written to each segment
 *     fd and moves them to `durable` when that fd is fdatasynced; every
 *     client checks, as each `ok` arrives, that the records acknowledged
 *     so far never exceed `durable` (each fdatasync is slowed by the fault
 *     hook so that an early `ok` could not hide behind a fast disk);
 *   - several connections, each with several batches in flight: every
 *     batch answered `ok` with its count, in request order per connection;
 *     afterwards the queue holds every record once, in each connection's
 *     order; fewer fdatasyncs than batches (one commit covered batches of
 *     several connections);
 *   - a failed fdatasync: the batches of that round are answered FAILED,
 *     never `ok`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../src/lib/fsio.h"
#include "config.h"
#include "daemon.h"
#include "hd_e2e_util.h"
#include "hd_native_client.h"
#include "log.h"
#include "loop.h"
#include "proto.h"
#include "wire.h"

#define MARK "@@rec"
#define MAX_FD 4096

/* ---- the hooks: records written, records durable --------------------------- */

static atomic_long g_pending[MAX_FD]; /* marked records written to fd, not yet synced */
static atomic_long g_durable;         /* marked records fdatasynced */
static atomic_int g_fsync_delay_us;
static atomic_int g_fsync_fail;

static void
trace_hook(const hp_fs_event *ev)
{
    if (ev->fd < 0 || ev->fd >= MAX_FD) {
        return;
    }
    if (strcmp(ev->op, "write") == 0) {
        long n = 0;
        const char *p = ev->data;
        const char *end = p + ev->len;
        while (p < end && (p = memmem(p, (size_t)(end - p), MARK, strlen(MARK))) != NULL) {
            n++;
            p += strlen(MARK);
        }
        atomic_fetch_add(&g_pending[ev->fd], n);
    } else if (strcmp(ev->op, "fsync") == 0) {
        atomic_fetch_add(&g_durable, atomic_exchange(&g_pending[ev->fd], 0));
    } else if (strcmp(ev->op, "open") == 0) {
        atomic_store(&g_pending[ev->fd], 0);
    }
}

static int
fault_hook(const char *op)
{
    if (strcmp(op, "fsync") != 0) {
        return 0;
    }
    int us = atomic_load(&g_fsync_delay_us);
    if (us > 0) {
        struct timespec ts = {0, (long)us * 1000L};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&g_fsync_fail) ? -EIO : 0;
}

/* ---- a listener loop in this process ------------------------------------------ */

struct rig {
    char *dir;
    int port;
    struct hd_config *cfg;
    struct hd_daemon d;
};

static void
rig_start(struct rig *r)
{
    memset(r, 0, sizeof(*r));
    r->dir = e2e_tmpdir();
    assert_non_null(r->dir);
    r->port = e2e_free_port();
    char text[2048];
    int n = snprintf(text, sizeof(text),
                     "[hopperd]\nstate_dir = %s/state\nshutdown_timeout = 5s\n"
                     "[queue q]\ndurability = disk\nfsync = always\ncompression = 0\n"
                     "memory_bytes = 64KiB\nsegment_bytes = 256KiB\n"
                     "[source in]\ntype = tcp\nlisten = 127.0.0.1:%d\nformat = native\nqueue = q\n",
                     r->dir, r->port);
    char err[512];
    assert_int_equal(hd_config_load_buffer("commit.conf", text, (size_t)n, &r->cfg, err,
                                           sizeof(err)),
                     0);
    char state[1024];
    snprintf(state, sizeof(state), "%s/state", r->dir);
    assert_int_equal(mkdir(state, 0700), 0);
    struct hd_daemon *d = &r->d;
    d->cfg = r->cfg;
    d->nqueues = 1;
    d->nsources = 1;
    d->queues = calloc(1, sizeof(*d->queues));
    d->sources = calloc(1, sizeof(*d->sources));
    d->queues[0].conf = &r->cfg->queues[0];
    d->queues[0].drop_wake_fd = -1;
    d->queues[0].group_commit = 1; /* as main.c sets it for disk + always */
    d->sources[0].conf = &r->cfg->sources[0];
    d->sources[0].queue = &d->queues[0];
    d->sources[0].fd = -1;
    pthread_mutex_init(&d->sources[0].tls_mu, NULL);
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(d->wake_fd >= 0);
    hopper_opts o;
    hopper_opts_init(&o);
    o.durability = HOPPER_DURABILITY_DISK;
    o.fsync = HOPPER_FSYNC_COMMIT; /* as main.c opens it for disk + always */
    o.compression = 0;
    o.memory_bytes = 64u * 1024u;
    o.segment_bytes = 256u * 1024u;
    assert_int_equal(hopper_open(state, "q", &o, &d->queues[0].q), 0);
    assert_int_equal(hd_loop_open(d, err, sizeof(err)), 0);
    assert_int_equal(hd_loop_start(d), 0);
}

static void
rig_stop_loop(struct rig *r)
{
    hd_loop_stop(&r->d);
}

static void
rig_free(struct rig *r)
{
    assert_int_equal(hopper_close(r->d.queues[0].q), 0);
    close(r->d.wake_fd);
    pthread_mutex_destroy(&r->d.sources[0].tls_mu);
    free(r->d.queues);
    free(r->d.sources);
    hd_config_free(r->cfg);
    e2e_cleanup(0, r->dir);
}

/* ---- a native client --------------------------------------------------------- */

/* Batch `b` of connection `conn`: records "@@rec <conn> <b> <i>" padded. */
static void
client_send(int fd, int conn, long b, int nrec)
{
    static _Thread_local char bufs[64][128];
    struct hd_slice recs[64];
    assert_true(nrec <= 64);
    for (int i = 0; i < nrec; i++) {
        int len = snprintf(bufs[i], sizeof(bufs[i]), MARK " %d %ld %d ", conn, b, i);
        memset(bufs[i] + len, 'p', 100 - (size_t)len);
        recs[i].p = (const uint8_t *)bufs[i];
        recs[i].n = 100;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(hd_proto_put_send(&sb, (uint64_t)b + 1, NULL, recs, (size_t)nrec), 0);
    assert_int_equal(e2e_write_all(fd, sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
}

#define CONNS 6
#define BATCHES 150
#define BATCH 16
#define INFLIGHT 4

static atomic_long g_acked;
static atomic_long g_early; /* oks that arrived before their records were durable */

struct client {
    int port;
    int id;
    long oks;
    long failed;
    int expect_fail; /* the fdatasync fails: every reply after the hello is FAILED */
};

static void *
client_main(void *arg)
{
    struct client *c = arg;
    static _Thread_local uint8_t buf[1 << 16];
    int fd = e2e_native_connect(c->port, 20);
    struct hd_msg m;
    const char *why;
    size_t n = e2e_native_read(fd, buf, sizeof(buf));
    assert_int_equal(hd_proto_parse(buf, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_HELLO);
    long sent = 0;
    long answered = 0;
    long batches = c->expect_fail ? 8 : BATCHES;
    while (answered < batches) {
        while (sent < batches && sent - answered < INFLIGHT) {
            client_send(fd, c->id, sent, BATCH);
            sent++;
        }
        n = e2e_native_read(fd, buf, sizeof(buf));
        assert_true(n > 0);
        assert_int_equal(hd_proto_parse(buf, n, &m, &why), 0);
        /* Replies come in request order. */
        assert_int_equal(m.id, (uint64_t)answered + 1);
        if (m.op == HD_OP_OK) {
            assert_int_equal(m.count, BATCH);
            long acked = atomic_fetch_add(&g_acked, BATCH) + BATCH;
            if (acked > atomic_load(&g_durable)) {
                atomic_fetch_add(&g_early, 1);
            }
            c->oks++;
        } else {
            assert_int_equal(m.op, HD_OP_ERROR);
            assert_int_equal(m.code, HD_CODE_FAILED);
            c->failed++;
        }
        answered++;
    }
    close(fd);
    return NULL;
}

static void
reset_hooks(void)
{
    for (int i = 0; i < MAX_FD; i++) {
        atomic_store(&g_pending[i], 0);
    }
    atomic_store(&g_durable, 0);
    atomic_store(&g_acked, 0);
    atomic_store(&g_early, 0);
    atomic_store(&g_fsync_fail, 0);
    atomic_store(&g_fsync_delay_us, 3000);
    hp_fs_trace_hook = trace_hook;
    hp_fault_hook = fault_hook;
}

static void
test_ok_after_sync(void **state)
{
    (void)state;
    reset_hooks();
    struct rig r;
    rig_start(&r);
    pthread_t th[CONNS];
    struct client cl[CONNS];
    for (int i = 0; i < CONNS; i++) {
        cl[i] = (struct client){.port = r.port, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    for (int i = 0; i < CONNS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(cl[i].oks, BATCHES);
    }
    assert_int_equal(atomic_load(&g_early), 0);
    rig_stop_loop(&r);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(r.d.queues[0].q, &st), 0);
    fprintf(stderr, "test_hd_commit: %d batches of %d, %llu fdatasyncs\n", CONNS * BATCHES, BATCH,
            (unsigned long long)st.fsyncs);
    assert_true(st.fsyncs > 0);
    assert_true(st.fsyncs < (uint64_t)CONNS * BATCHES); /* batches shared fdatasyncs */
    /* Every record once, in each connection's order. */
    long next[CONNS] = {0};
    for (long k = 0; k < (long)CONNS * BATCHES * BATCH; k++) {
        hopper_record rec;
        assert_int_equal(hopper_recv(r.d.queues[0].q, &rec, 5000), 0);
        char tmp[128];
        memcpy(tmp, rec.data, rec.len < 127 ? rec.len : 127);
        tmp[rec.len < 127 ? rec.len : 127] = '\0';
        int conn;
        long b;
        int i;
        assert_int_equal(sscanf(tmp, MARK " %d %ld %d ", &conn, &b, &i), 3);
        assert_true(conn >= 0 && conn < CONNS);
        assert_int_equal(b * BATCH + i, next[conn]);
        next[conn]++;
        assert_int_equal(hopper_ack(r.d.queues[0].q, rec.seq), 0);
    }
    hopper_record rec;
    assert_int_equal(hopper_recv(r.d.queues[0].q, &rec, 0), -EAGAIN);
    hp_fault_hook = NULL;
    hp_fs_trace_hook = NULL;
    rig_free(&r);
}

/* The fdatasync fails: no `ok`, the batches are answered FAILED. */
static void
test_failed_sync(void **state)
{
    (void)state;
    reset_hooks();
    log_init(HD_LOG_INFO, 0);
    struct rig r;
    rig_start(&r);
    atomic_store(&g_fsync_fail, 1);
    struct client cl = {.port = r.port, .id = 0, .expect_fail = 1};
    client_main(&cl);
    assert_int_equal(cl.oks, 0);
    assert_int_equal(cl.failed, 8);
    rig_stop_loop(&r);
    hp_fault_hook = NULL;
    hp_fs_trace_hook = NULL;
    (void)hopper_close(r.d.queues[0].q); /* failed: reports it */
    r.d.queues[0].q = NULL;
    close(r.d.wake_fd);
    pthread_mutex_destroy(&r.d.sources[0].tls_mu);
    free(r.d.queues);
    free(r.d.sources);
    hd_config_free(r.cfg);
    e2e_cleanup(0, r.dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_after_sync),
        cmocka_unit_test(test_failed_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
