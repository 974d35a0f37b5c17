/* SPDX-License-Identifier: MIT */
/* hopperd: the spooling relay daemon. This file only sequences startup,
 * reload and shutdown (STYLE.md §16); each concern lives in its own file.
 *
 * Startup: block signals (first of all, so that a SIGHUP or SIGTERM sent
 * while the process starts is held for the signal thread instead of killing
 * it) -> config -> log_init -> preflight (what -n checks: listener clashes,
 * state_dir; warns about listeners off loopback) -> hopper_open every queue (recovery runs here) -> bind sources and the
 * metrics endpoint -> start relays, listener, metrics, signal thread ->
 * READY=1 -> wait for requests.
 * Shutdown: STOPPING=1 -> stop the listener (it reads what clients already
 * sent and hands it to the queues) -> let the relays drain until the
 * deadline -> stop metrics -> hopper_close every queue (writes in-memory
 * records to disk) -> exit 0, or 1 if a step failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "clock.h"
#include "daemon.h"
#include "loop.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "preflight.h"
#include "relay.h"
#include "reload.h"
#include "signals.h"
#include "tlsconf.h"

#ifndef HOPPERD_VERSION
#define HOPPERD_VERSION "0.0.0"
#endif
#ifndef HOPPERD_DEFAULT_CONF
#define HOPPERD_DEFAULT_CONF "/etc/hopperd.conf"
#endif

static void
usage(FILE *fp)
{
    fprintf(fp, "usage: hopperd [-dhnvV] [-f file]\n"
                "  -f file  configuration file (default " HOPPERD_DEFAULT_CONF ")\n"
                "  -n       check the configuration, print 'configuration OK' and exit\n"
                "  -d       debug logging\n"
                "  -v       more logging (repeatable)\n"
                "  -V       print the version and exit\n"
                "  -h       this help\n");
}

/* mkdir -p with mode 0700 for directories it creates. */
static int
mkdir_p(const char *path)
{
    char tmp[HD_PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) < 0 && errno != EEXIST) {
                return -errno;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

static void
queue_opts(const struct hd_queue_conf *qc, hopper_opts *o)
{
    hopper_opts_init(o);
    o->memory_bytes = qc->memory_bytes;
    o->disk_bytes = qc->disk_bytes;
    o->segment_bytes = qc->segment_bytes;
    o->compression = (int)qc->compression;
    o->durability =
        qc->durability == HD_DUR_DISK ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    switch (qc->fsync.mode) {
    case HD_FSYNC_NEVER:
        o->fsync = HOPPER_FSYNC_NEVER;
        break;
    case HD_FSYNC_ALWAYS:
        /* Disk mode: the listener (the only sender) drives the group commit
         * across its connections (commit.h); the library syncs nothing in
         * hopper_send_batch() and hands out nothing not yet committed. */
        o->fsync = qc->durability == HD_DUR_DISK ? HOPPER_FSYNC_COMMIT : HOPPER_FSYNC_ALWAYS;
        break;
    case HD_FSYNC_INTERVAL:
    default:
        o->fsync = HOPPER_FSYNC_INTERVAL;
        o->fsync_interval_ms = (uint32_t)qc->fsync.interval_ms;
        break;
    }
    o->max_record_bytes = (uint32_t)qc->max_record_bytes;
    o->checkpoint_interval_ms = (uint32_t)qc->checkpoint_ms;
}

static int
daemon_setup(struct hd_daemon *d, struct hd_config *cfg)
{
    memset(d, 0, sizeof(*d));
    d->cfg = cfg;
    d->wake_fd = -1;
    d->metrics_fd = -1;
    d->start_ms = hd_now_ms();
    d->queues = calloc(cfg->nqueues ? cfg->nqueues : 1, sizeof(*d->queues));
    d->sources = calloc(cfg->nsources ? cfg->nsources : 1, sizeof(*d->sources));
    d->sinks = calloc(cfg->nsinks ? cfg->nsinks : 1, sizeof(*d->sinks));
    if (d->queues == NULL || d->sources == NULL || d->sinks == NULL) {
        return -ENOMEM;
    }
    d->nqueues = cfg->nqueues;
    d->nsources = cfg->nsources;
    d->nsinks = cfg->nsinks;
    for (size_t i = 0; i < d->nqueues; i++) {
        d->queues[i].conf = &cfg->queues[i];
        d->queues[i].drop_wake_fd = -1;
        d->queues[i].group_commit =
            cfg->queues[i].durability == HD_DUR_DISK && cfg->queues[i].fsync.mode == HD_FSYNC_ALWAYS;
    }
    for (size_t i = 0; i < d->nsources; i++) {
        d->sources[i].conf = &cfg->sources[i];
        d->sources[i].queue = &d->queues[cfg->sources[i].queue_index];
        d->sources[i].fd = -1;
        pthread_mutex_init(&d->sources[i].tls_mu, NULL);
    }
    for (size_t i = 0; i < d->nsinks; i++) {
        struct hd_sink_rt *s = &d->sinks[i];
        const struct hd_sink_conf *sc = &cfg->sinks[i];
        s->conf = sc;
        s->queue = &d->queues[sc->queue_index];
        s->queue->has_sink = 1;
        s->d = d;
        pthread_mutex_init(&s->mu, NULL);
        snprintf(s->connect, sizeof(s->connect), "%s", sc->connect);
        s->connect_timeout_ms = sc->connect_timeout_ms;
        s->reconnect_min_ms = sc->reconnect_min_ms;
        s->reconnect_max_ms = sc->reconnect_max_ms;
        atomic_store(&s->state, HD_SINK_IDLE);
        if (sc->type == HD_SINK_JETSTREAM) {
            s->live = malloc(sizeof(*s->live));
            if (s->live == NULL) {
                return -ENOMEM;
            }
            *s->live = *sc;
        }
    }
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wake_fd < 0) {
        return -errno;
    }
    for (size_t i = 0; i < d->nqueues; i++) {
        struct hd_queue_rt *qr = &d->queues[i];
        if (qr->has_sink && qr->conf->when_full == HD_FULL_DROP_OLDEST) {
            qr->drop_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (qr->drop_wake_fd < 0) {
                return -errno;
            }
        }
    }
    return 0;
}

static int
open_queues(struct hd_daemon *d)
{
    int rc = mkdir_p(d->cfg->state_dir);
    if (rc < 0) {
        log_errorx("main: state_dir %s: %s", d->cfg->state_dir, strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < d->nqueues; i++) {
        struct hd_queue_rt *qr = &d->queues[i];
        hopper_opts o;
        queue_opts(qr->conf, &o);
        uint64_t t0 = hd_now_ms();
        rc = hopper_open(d->cfg->state_dir, qr->conf->s.name, &o, &qr->q);
        if (rc < 0) {
            log_errorx("main: queue %s: open %s/%s: %s", qr->conf->s.name, d->cfg->state_dir,
                       qr->conf->s.name, hopper_strerror(rc));
            return rc;
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        hopper_stats_get(qr->q, &st);
        log_info("main: queue %s: opened in %" PRIu64 " ms, backlog %" PRIu64 " records (%" PRIu64
                 " on disk), %" PRIu64 " corrupt frames skipped, %" PRIu64 " torn bytes cut, %" PRIu64
                 " records missing",
                 qr->conf->s.name, hd_now_ms() - t0, st.backlog_records, st.disk_records,
                 st.corrupt_frames, st.torn_bytes, st.missing_records);
        if (st.missing_records > 0) {
            log_warnx("main: queue %s: %" PRIu64 " records missing from %s/%s: sequence numbers "
                      "after the acknowledged position that no segment holds (segment files "
                      "deleted or truncated, or damaged); hopperctl verify names them",
                      qr->conf->s.name, st.missing_records, d->cfg->state_dir,
                      qr->conf->s.name);
        }
        if (st.checkpoint_clamped > 0) {
            log_warnx("main: queue %s: the checkpoint's read position was %" PRIu64
                      " records beyond the spool; clamped",
                      qr->conf->s.name, st.checkpoint_clamped);
        }
    }
    return 0;
}

static int
close_queues(struct hd_daemon *d)
{
    int status = 0;
    for (size_t i = 0; i < d->nqueues; i++) {
        struct hd_queue_rt *qr = &d->queues[i];
        if (qr->q == NULL) {
            continue;
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        hopper_stats_get(qr->q, &st);
        int rc = hopper_close(qr->q);
        qr->q = NULL;
        if (rc < 0) {
            log_errorx("main: queue %s: close: %s", qr->conf->s.name, hopper_strerror(rc));
            status = 1;
        } else {
            log_info("main: queue %s: closed with %" PRIu64 " records spooled", qr->conf->s.name,
                     st.backlog_records);
        }
    }
    return status;
}

/* The TLS contexts of cfg (tlsconf.h), built into arrays indexed like its
 * sources and sinks; NULL entries where tls = off. 0, or -1 with err set. */
static int
tls_build(const struct hd_config *cfg, SSL_CTX ***src, SSL_CTX ***sink, char *err, size_t errlen)
{
    *src = calloc(cfg->nsources + 1, sizeof(**src));
    *sink = calloc(cfg->nsinks + 1, sizeof(**sink));
    if (*src == NULL || *sink == NULL) {
        snprintf(err, errlen, "out of memory");
    } else if (hd_tls_contexts_new(cfg, *src, *sink, err, errlen) == 0) {
        return 0;
    }
    free(*src);
    free(*sink);
    *src = *sink = NULL;
    return -1;
}

/* Startup: every source and sink with tls = on gets its context (the
 * files are read here, before any thread starts). 0 or -1 (logged). */
static int
tls_start(struct hd_daemon *d)
{
    char err[HD_ERR_LEN];
    SSL_CTX **src, **sink;
    if (tls_build(d->cfg, &src, &sink, err, sizeof(err)) < 0) {
        log_errorx("main: %s", err);
        return -1;
    }
    for (size_t i = 0; i < d->nsources; i++) {
        d->sources[i].tls_ctx = src[i];
    }
    for (size_t i = 0; i < d->nsinks; i++) {
        d->sinks[i].tls_ctx = sink[i];
    }
    free(src);
    free(sink);
    return 0;
}

/* SIGHUP: new contexts from `next` for the sources and sinks (by name)
 * that have tls = on in both; connections already made keep theirs. All
 * or nothing: -1 (logged) when one does not build, and nothing changed. */
static int
tls_reload(struct hd_daemon *d, const struct hd_config *next)
{
    char err[HD_ERR_LEN];
    SSL_CTX **src, **sink;
    if (tls_build(next, &src, &sink, err, sizeof(err)) < 0) {
        log_errorx("reload: %s", err);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < d->nsources; i++) {
        struct hd_source_rt *s = &d->sources[i];
        for (size_t j = 0; j < next->nsources && s->tls_ctx != NULL; j++) {
            if (src[j] != NULL && strcmp(s->conf->s.name, next->sources[j].s.name) == 0) {
                pthread_mutex_lock(&s->tls_mu);
                SSL_CTX *old = s->tls_ctx;
                s->tls_ctx = src[j];
                pthread_mutex_unlock(&s->tls_mu);
                src[j] = old; /* freed below */
                n++;
            }
        }
    }
    for (size_t i = 0; i < d->nsinks; i++) {
        struct hd_sink_rt *s = &d->sinks[i];
        for (size_t j = 0; j < next->nsinks && s->tls_ctx != NULL; j++) {
            if (sink[j] != NULL && strcmp(s->conf->s.name, next->sinks[j].s.name) == 0) {
                pthread_mutex_lock(&s->mu);
                SSL_CTX *old = s->tls_ctx;
                s->tls_ctx = sink[j];
                pthread_mutex_unlock(&s->mu);
                sink[j] = old;
                n++;
            }
        }
    }
    hd_tls_contexts_free(src, next->nsources);
    hd_tls_contexts_free(sink, next->nsinks);
    free(src);
    free(sink);
    if (n > 0) {
        log_info("reload: TLS certificates, keys and CAs reloaded for %zu sources and sinks; "
                 "established connections keep theirs",
                 n);
    }
    return 0;
}

static void
daemon_free(struct hd_daemon *d)
{
    for (size_t i = 0; i < d->nsinks; i++) {
        if (d->sinks[i].d != NULL) {
            pthread_mutex_destroy(&d->sinks[i].mu);
            SSL_CTX_free(d->sinks[i].tls_ctx);
        }
        free(d->sinks[i].live);
    }
    for (size_t i = 0; d->sources != NULL && i < d->nsources; i++) {
        if (d->sources[i].conf != NULL) {
            pthread_mutex_destroy(&d->sources[i].tls_mu);
            SSL_CTX_free(d->sources[i].tls_ctx);
        }
    }
    for (size_t i = 0; d->queues != NULL && i < d->nqueues; i++) {
        if (d->queues[i].drop_wake_fd >= 0) {
            close(d->queues[i].drop_wake_fd);
        }
    }
    free(d->queues);
    free(d->sources);
    free(d->sinks);
    if (d->wake_fd >= 0) {
        close(d->wake_fd);
    }
}

static void
print_warning(void *arg, const char *msg)
{
    (void)arg;
    fprintf(stderr, "warning: %s\n", msg);
}

static void
log_warning(void *arg, const char *msg)
{
    (void)arg;
    log_warnx("main: %s", msg);
}

static int
effective_level(int config_level, int debug, int verbose)
{
    if (debug) {
        return HD_LOG_DEBUG;
    }
    int lv = config_level + verbose;
    return lv > HD_LOG_DEBUG ? HD_LOG_DEBUG : lv;
}

/* SIGHUP: reload the reloadable settings; a config that does not load is
 * rejected as a whole and the running one stays. */
static void
reload(struct hd_daemon *d, const char *path, int debug, int verbose)
{
    char err[HD_ERR_LEN];
    struct hd_config *next = NULL;
    if (hd_config_load_file(path, &next, err, sizeof(err)) < 0) {
        log_errorx("reload: %s", err);
        log_errorx("reload: rejected; the running configuration stays in effect");
        return;
    }
    /* What -n and a start check (a creds file that cannot be read, TLS
     * files...). */
    if (hd_preflight(next, err, sizeof(err), NULL, NULL) < 0) {
        log_errorx("reload: %s", err);
        log_errorx("reload: rejected; the running configuration stays in effect");
        hd_config_free(next);
        return;
    }
    /* Then the certificates: a context that cannot be built rejects the
     * whole reload. */
    if (tls_reload(d, next) < 0) {
        log_errorx("reload: rejected; the running configuration stays in effect");
        hd_config_free(next);
        return;
    }
    char what[HD_ERR_LEN];
    int n = hd_config_diff(d->cfg, next, what, sizeof(what));
    if (n > 0) {
        log_warnx("reload: %d change(s) need a restart and are not applied (first: %s)", n, what);
    }
    log_setlevel(effective_level(next->log_level, debug, verbose));
    (void)hd_reload_sinks(d, next);
    log_info("reload: done");
    hd_config_free(next);
}

int
main(int argc, char **argv)
{
    /* Before anything else: until the sigwait thread runs, a blocked signal
     * stays pending; with the default action a SIGHUP would kill us. */
    int rc = hd_signals_block();
    if (rc < 0) {
        fprintf(stderr, "hopperd: blocking signals: %s\n", strerror(-rc));
        return 1;
    }
    const char *file = HOPPERD_DEFAULT_CONF;
    int check = 0, debug = 0, verbose = 0;
    int ch;
    while ((ch = getopt(argc, argv, "df:hnvV")) != -1) {
        switch (ch) {
        case 'd':
            debug = 1;
            break;
        case 'f':
            file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'n':
            check = 1;
            break;
        case 'v':
            verbose++;
            break;
        case 'V':
            printf("hopperd %s (libhopper %s)\n", HOPPERD_VERSION, hopper_version_string());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    char err[HD_ERR_LEN];
    struct hd_config *cfg = NULL;
    if (hd_config_load_file(file, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        /* -n finds what a start would hit, short of binding and creating. */
        rc = hd_preflight(cfg, err, sizeof(err), print_warning, NULL);
        if (rc < 0) {
            fprintf(stderr, "%s\n", err);
        } else {
            printf("configuration OK\n");
        }
        hd_config_free(cfg);
        return rc < 0 ? 1 : 0;
    }

    log_init(effective_level(cfg->log_level, debug, verbose), getenv("JOURNAL_STREAM") == NULL);
    if (hd_preflight(cfg, err, sizeof(err), log_warning, NULL) < 0) {
        log_errorx("main: %s", err);
        hd_config_free(cfg);
        return 1;
    }

    struct hd_daemon d;
    rc = daemon_setup(&d, cfg);
    if (rc < 0) {
        fatalx("main: setup: %s", strerror(-rc));
    }
    int status = 0;
    if (tls_start(&d) < 0 || open_queues(&d) < 0) {
        close_queues(&d);
        daemon_free(&d);
        hd_config_free(cfg);
        return 1;
    }
    if (hd_loop_open(&d, err, sizeof(err)) < 0 || hd_metrics_open(&d, err, sizeof(err)) < 0) {
        log_errorx("main: %s", err);
        hd_loop_stop(&d);
        close_queues(&d);
        daemon_free(&d);
        hd_config_free(cfg);
        return 1;
    }
    /* The loop starts accepting last: every descriptor the daemon needs for
     * itself is open before clients can take the rest of the table. */
    if ((rc = hd_relay_start(&d)) < 0 || (rc = hd_metrics_start(&d)) < 0 ||
        (rc = hd_signals_start()) < 0 || (rc = hd_loop_start(&d)) < 0) {
        fatalx("main: starting threads: %s", strerror(-rc));
    }
    hd_notify("READY=1\nSTATUS=relaying");
    log_info("main: hopperd %s ready (%zu queues, %zu sources, %zu sinks)", HOPPERD_VERSION,
             d.nqueues, d.nsources, d.nsinks);

    for (;;) {
        int req = hd_signals_next_request();
        if (req == HD_REQ_RELOAD) {
            reload(&d, file, debug, verbose);
            continue;
        }
        break;
    }

    hd_notify("STOPPING=1\nSTATUS=stopping");
    uint64_t t0 = hd_now_ms();
    uint64_t deadline = t0 + cfg->shutdown_timeout_ms;
    hd_loop_stop(&d);
    /* Leave a quarter of the budget for hopper_close (spooling memory). */
    uint64_t drain_until = t0 + cfg->shutdown_timeout_ms * 3 / 4;
    hd_relay_stop(&d, drain_until < deadline ? drain_until : deadline);
    hd_metrics_stop(&d);
    status |= close_queues(&d);
    log_info("main: stopped in %" PRIu64 " ms", hd_now_ms() - t0);
    daemon_free(&d);
    hd_config_free(cfg);
    return status;
}
