/* SPDX-License-Identifier: MIT */
/* The running hopperd of the runtime harnesses (fuzz_conn.c,
 * fuzz_metrics.c), once per process: a config loaded with
 * hd_config_load_buffer, a daemon built by hand as in
 * tests/hopperd/test_hd_metrics.c with three queues under /dev/shm, three
 * unix-socket sources (lines, octet-counted, native with subscribe allowed)
 * and a metrics listener on 127.0.0.1 (a free port), and the
 * real listener thread (hd_loop_open + hd_loop_start). fz_hd_start(1) also
 * starts the metrics thread; `tag` names the scratch directory. Header-only, like fuzz_common.h. */
#ifndef HOPPER_FUZZ_HD_FIXTURE_H
#define HOPPER_FUZZ_HD_FIXTURE_H

#include "fuzz_common.h"

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#define NQ 3

static struct hd_daemon dmn; /* the running daemon */
static struct hd_config *cfg;
static const char *base;

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
fz_hd_start(const char *tag, int with_metrics)
{
    base = fz_tmpdir(tag);
    /* A free port for the metrics listener: the kernel picks one for a
     * socket that is closed again (the config refuses port 0). */
    unsigned port = 0;
    if (with_metrics) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t slen = sizeof(sin);
        FZ_CHECK(s >= 0 && bind(s, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
                     getsockname(s, (struct sockaddr *)&sin, &slen) == 0,
                 "a free port: %s", strerror(errno));
        port = ntohs(sin.sin_port);
        close(s);
    }
    char mline[64] = "";
    if (with_metrics) {
        snprintf(mline, sizeof(mline), "metrics_listen = 127.0.0.1:%u\n", port);
    }
    static char text[4096];
    int n = snprintf(text, sizeof(text),
                     "[hopperd]\nstate_dir = %s/state\nlog_level = error\n%s"
                     "shutdown_timeout = 1s\n"
                     "[queue ql]\nmax_record_bytes = 4KiB\n"
                     "[queue qo]\nmax_record_bytes = 4KiB\n"
                     "[queue qn]\nmax_record_bytes = 4KiB\n"
                     "[source sl]\ntype = unix\npath = %s/sl.sock\nformat = lines\nqueue = ql\n"
                     "[source so]\ntype = unix\npath = %s/so.sock\nformat = octet-counted\n"
                     "queue = qo\n"
                     "[source sn]\ntype = unix\npath = %s/sn.sock\nformat = native\nqueue = qn\n"
                     "allow_subscribe = on\n",
                     base, mline, base, base, base);
    FZ_CHECK(n > 0 && (size_t)n < sizeof(text), "config text");
    char err[512];
    int rc = hd_config_load_buffer("fuzz.conf", text, (size_t)n, &cfg, err, sizeof(err));
    FZ_CHECK(rc == 0, "config: %s", err);
    log_init(HD_LOG_ERROR, 0);
    FZ_CHECK(cfg->nqueues == NQ && cfg->nsources == NQ, "config shape");
    char state[PATH_MAX];
    fz_join(state, sizeof(state), base, "state");
    FZ_CHECK(mkdir(state, 0700) == 0 || errno == EEXIST, "mkdir state");

    /* The daemon by hand (test_hd_metrics.c): queues, sources, wake fd. */
    static struct hd_queue_rt queues[NQ];
    static struct hd_source_rt sources[NQ];
    memset(&dmn, 0, sizeof(dmn));
    dmn.cfg = cfg;
    dmn.queues = queues;
    dmn.nqueues = NQ;
    dmn.sources = sources;
    dmn.nsources = NQ;
    dmn.metrics_fd = -1;
    dmn.start_ms = now_ms();
    for (size_t i = 0; i < NQ; i++) {
        queues[i].conf = &cfg->queues[i];
        queues[i].drop_wake_fd = -1;
        hopper_opts o;
        hopper_opts_init(&o);
        o.max_record_bytes = (uint32_t)cfg->queues[i].max_record_bytes;
        o.fsync = HOPPER_FSYNC_NEVER;
        o.checkpoint_interval_ms = UINT32_MAX;
        rc = hopper_open(cfg->state_dir, cfg->queues[i].s.name, &o, &queues[i].q);
        FZ_CHECK(rc == 0, "hopper_open: %s", hopper_err_name(rc));
        sources[i].conf = &cfg->sources[i];
        sources[i].queue = &queues[cfg->sources[i].queue_index];
        sources[i].fd = -1;
    }
    dmn.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    FZ_CHECK(dmn.wake_fd >= 0, "eventfd");
    rc = hd_loop_open(&dmn, err, sizeof(err));
    FZ_CHECK(rc == 0, "hd_loop_open: %s", err);
    rc = hd_loop_start(&dmn);
    FZ_CHECK(rc == 0, "hd_loop_start: %d", rc);
    if (with_metrics) {
        rc = hd_metrics_open(&dmn, err, sizeof(err));
        FZ_CHECK(rc == 0, "hd_metrics_open: %s", err);
        rc = hd_metrics_start(&dmn);
        FZ_CHECK(rc == 0, "hd_metrics_start: %d", rc);
    }
}

/* The metrics listener's address (port picked by the kernel). */
static inline struct sockaddr_in
fz_hd_metrics_addr(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    FZ_CHECK(getsockname(dmn.metrics_fd, (struct sockaddr *)&sin, &len) == 0, "getsockname");
    return sin;
}

#endif /* HOPPER_FUZZ_HD_FIXTURE_H */
